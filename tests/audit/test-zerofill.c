/* Unit test of phifs/zerofill.c: a writer appends records of random sizes (claim, pwrite,
 * sometimes fdatasync) while the filler writes zeros ahead; the file must then hold exactly
 * the records followed by zeros only (no zero ever lands on data), the zeros must be kept
 * ahead (the writer rarely finds itself past them), and a detach, truncate and re-attach
 * (what the writer does after a failed batch and before sealing a segment) must work. */
#include <sys/stat.h>
#include <time.h>

#include "phifs/util.h"
#include "phifs/zerofill.h"
#include "test.h"

static void pwrite_full(int fd, const uint8_t *p, size_t n, uint64_t off)
{
	while (n) {
		ssize_t k = pwrite(fd, p, n, (off_t)off);
		CHECK(k > 0);
		p += k;
		n -= (size_t)k;
		off += (uint64_t)k;
	}
}

static uint8_t *read_all(int dfd, const char *name, size_t *ret_len)
{
	int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC);
	struct stat st;
	CHECK(fd >= 0 && fstat(fd, &st) == 0);
	uint8_t *b = malloc((size_t)st.st_size + 1);
	CHECK(b);
	CHECK(pread(fd, b, (size_t)st.st_size, 0) == st.st_size);
	close(fd);
	*ret_len = (size_t)st.st_size;
	return b;
}

int main(void)
{
	char dir[] = "/var/tmp/zerofill-XXXXXX";
	CHECK(mkdtemp(dir));
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	CHECK(dfd >= 0);
	int fd = openat(dfd, "seg", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	struct phi_zerofill *z;
	CHECK_EQ(phi_zerofill_start(0, &z), -EINVAL);
	CHECK_OK(phi_zerofill_start(1000, &z)); /* rounded up to 64 KiB */
	CHECK_OK(phi_zerofill_attach(z, dfd, "seg", 0));

	enum { N = 6000, MAXREC = 3000 };
	size_t cap = (size_t)N * MAXREC;
	uint8_t *want = malloc(cap), rec[MAXREC];
	CHECK(want);
	uint64_t end = 0;
	unsigned past = 0, seed = 12345;
	for (int i = 0; i < N; i++) {
		size_t n = 1 + (size_t)(rand_r(&seed) % MAXREC);
		for (size_t k = 0; k < n; k++)
			rec[k] = (uint8_t)(1 + (i + k) % 255); /* never zero: a zero in data is a fill */
		phi_zerofill_claim(z, end + n);
		struct stat st;
		CHECK(fstat(fd, &st) == 0);
		past += (uint64_t)st.st_size < end + n;
		pwrite_full(fd, rec, n, end);
		memcpy(want + end, rec, n);
		end += n;
		if (i % 16 == 0)
			CHECK(fdatasync(fd) == 0);
		if (i == N / 2) {
			/* what the writer does after a failed batch: cut back to the data, go on */
			phi_zerofill_detach(z);
			CHECK(ftruncate(fd, (off_t)end) == 0);
			CHECK_OK(phi_zerofill_attach(z, dfd, "seg", end));
		}
	}
	/* the filler runs beside the writer; a writer that found no zeros ahead more than
	 * rarely means the zeros are not kept ahead (6000 appends, ~9 MB, 64 KiB chunks) */
	fprintf(stderr, "appends past the zeros: %u of %d\n", past, N);
	CHECK(past < N / 10);
	phi_zerofill_claim(z, end);
	struct timespec pause = { 0, 20 * 1000000 };
	nanosleep(&pause, NULL);
	phi_zerofill_detach(z);
	size_t len;
	uint8_t *got = read_all(dfd, "seg", &len);
	CHECK(len >= end + 65536); /* at least one chunk of zeros ahead when it stopped */
	CHECK_MEM(got, want, end);
	for (size_t k = end; k < len; k++)
		CHECK(got[k] == 0);
	free(got);

	/* attach to a file that already ends in zeros (after recovery): they are not
	 * written again, and the writer's end is honoured */
	CHECK_OK(phi_zerofill_attach(z, dfd, "seg", end));
	phi_zerofill_claim(z, end + 10);
	pwrite_full(fd, (const uint8_t *)"0123456789", 10, end);
	phi_zerofill_stop(z);
	got = read_all(dfd, "seg", &len);
	CHECK_MEM(got + end, "0123456789", 10);
	for (size_t k = end + 10; k < len; k++)
		CHECK(got[k] == 0);
	free(got);
	free(want);
	close(fd);
	unlinkat(dfd, "seg", 0);
	close(dfd);
	rmdir(dir);
	phi_zerofill_stop(NULL);
	return 0;
}
