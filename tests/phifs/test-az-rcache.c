/* test-az-rcache: the Azure backend's read cache (phifs/az_rcache.c): the entry format and
 * file name (golden vectors, computed independently with Python's hashlib.blake2b), hits
 * and misses by ETag, index and length, damaged and short entries, LRU eviction under the
 * limit, and the count of bytes held across a reopen. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "phifs/az_rcache.h"
#include "test.h"

static int nfiles(const char *dir)
{
	DIR *d = opendir(dir);
	CHECK(d != NULL);
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += e->d_name[0] != '.';
	closedir(d);
	return n;
}

int main(void)
{
	char root[] = "/tmp/test-az-rcache.XXXXXX";
	CHECK(mkdtemp(root) != NULL);
	char dir[300];
	snprintf(dir, sizeof dir, "%s/blocks", root);
	struct phi_rc *c = NULL;
	CHECK_OK(phi_rc_open(dir, 1000, &c));
	phi_rc_put(c, "pfx/blob", "\"0x1\"", 3, "0123456789", 10);
	/* golden: name = hex BLAKE2b-128("pfx/blob\0" "\"0x1\"\0" be64(3)); content = magic,
	 * be64 length, BLAKE2b-256(data), data */
	char path[400];
	snprintf(path, sizeof path, "%s/e07bc3bd4cf24fa6f3cb7c9f9da75d42", dir);
	FILE *f = fopen(path, "rb");
	CHECK(f != NULL);
	uint8_t b[100];
	size_t n = fread(b, 1, sizeof b, f);
	fclose(f);
	CHECK_EQ(n, (size_t)58);
	static const uint8_t golden[48] = {
		'P', 'H', 'I', 'A', 'Z', 'R', 'C', '1', 0, 0, 0, 0, 0, 0, 0, 10,
		0x7b, 0x6c, 0xb8, 0xd3, 0x74, 0x48, 0x4e, 0x22, 0x17, 0x85, 0x28, 0x8b, 0x03, 0x5d, 0xc5, 0x3f,
		0xc9, 0xdd, 0xf0, 0x00, 0x60, 0x7f, 0x47, 0x3f, 0xc2, 0xa3, 0x25, 0x8d, 0x89, 0xa7, 0x03, 0x98 };
	CHECK(memcmp(b, golden, sizeof golden) == 0);
	CHECK(memcmp(b + 48, "0123456789", 10) == 0);
	struct stat st;
	CHECK_OK(stat(path, &st));
	CHECK_EQ(st.st_mode & 0777, 0600u);
	CHECK_EQ(phi_rc_bytes(c), 58u);

	/* hits and misses */
	char out[16];
	CHECK_OK(phi_rc_get(c, "pfx/blob", "\"0x1\"", 3, out, 10));
	CHECK(memcmp(out, "0123456789", 10) == 0);
	CHECK_EQ(phi_rc_get(c, "pfx/blob", "\"0x2\"", 3, out, 10), -ENOENT); /* new ETag */
	CHECK_EQ(phi_rc_get(c, "pfx/blob", "\"0x1\"", 4, out, 10), -ENOENT);
	CHECK_EQ(phi_rc_get(c, "pfx/blobx", "\"0x1\"", 3, out, 10), -ENOENT);
	CHECK_EQ(phi_rc_get(c, "pfx/blob", "\"0x1\"", 3, out, 9), -ENOENT); /* another length */

	/* a damaged entry is a miss and is removed; a put makes it again */
	f = fopen(path, "r+b");
	CHECK(f != NULL);
	fseek(f, 50, SEEK_SET);
	fputc('X', f);
	fclose(f);
	CHECK_EQ(phi_rc_get(c, "pfx/blob", "\"0x1\"", 3, out, 10), -ENOENT);
	CHECK(stat(path, &st) < 0 && errno == ENOENT);
	CHECK_EQ(phi_rc_bytes(c), 0u);
	phi_rc_put(c, "pfx/blob", "\"0x1\"", 3, "0123456789", 10);
	CHECK_OK(phi_rc_get(c, "pfx/blob", "\"0x1\"", 3, out, 10));
	/* a damaged header, and a put over a damaged entry replaces it */
	f = fopen(path, "r+b");
	CHECK(f != NULL);
	fputc('Q', f);
	fclose(f);
	phi_rc_put(c, "pfx/blob", "\"0x1\"", 3, "0123456789", 10);
	CHECK_OK(phi_rc_get(c, "pfx/blob", "\"0x1\"", 3, out, 10));
	CHECK_EQ(phi_rc_bytes(c), 58u);

	/* eviction: a limit of 1000 bytes holds 8 entries of 108; the least recently used go */
	uint8_t data[60];
	memset(data, 7, sizeof data);
	for (uint64_t i = 0; i < 30; i++) {
		phi_rc_put(c, "pfx/other", "\"e\"", i, data, sizeof data);
		struct timespec ts = { 0, 2000000 }; /* distinct mtimes */
		nanosleep(&ts, NULL);
		/* keep touching the golden entry: it is used, so it stays */
		CHECK_OK(phi_rc_get(c, "pfx/blob", "\"0x1\"", 3, out, 10));
	}
	CHECK(phi_rc_bytes(c) <= 1000);
	CHECK(nfiles(dir) * 100 <= 1100);
	CHECK_OK(phi_rc_get(c, "pfx/blob", "\"0x1\"", 3, out, 10));
	uint8_t big[60];
	CHECK_OK(phi_rc_get(c, "pfx/other", "\"e\"", 29, big, sizeof big));
	CHECK_EQ(phi_rc_get(c, "pfx/other", "\"e\"", 0, big, sizeof big), -ENOENT);
	/* an entry larger than the whole cache is not kept */
	static uint8_t huge[2000];
	phi_rc_put(c, "pfx/huge", "\"e\"", 0, huge, sizeof huge);
	CHECK_EQ(phi_rc_get(c, "pfx/huge", "\"e\"", 0, huge, sizeof huge), -ENOENT);
	uint64_t held = phi_rc_bytes(c);
	phi_rc_close(c);

	/* a reopen counts what is there and removes unfinished temporary files */
	snprintf(path, sizeof path, "%s/t-0011223344556677", dir);
	f = fopen(path, "wb");
	CHECK(f != NULL);
	fputs("partial", f);
	fclose(f);
	CHECK_OK(phi_rc_open(dir, 1000, &c));
	CHECK_EQ(phi_rc_bytes(c), held);
	CHECK(stat(path, &st) < 0 && errno == ENOENT);
	phi_rc_close(c);

	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf %s", root);
	CHECK_OK(system(cmd));
	puts("PASS");
	return 0;
}
