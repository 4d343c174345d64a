/* bench-blocksize: the cfile layer alone over a local store, for one block size (the
 * executable is built once per PHI_CF_SHIFT). Prints one table row:
 *   shift  seq-write MB/s  seq-read MB/s  4k-randwrite ops/s  4k-randread ops/s  overhead %
 * Run by tests/phifs/bench-blocksize.sh, which prints the rows side by side. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "phifs/cfile.h"
#include "phifs/store.h"

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

static int keyfn(void *ctx, uint32_t v, const struct phi_key **ret)
{
	(void)v;
	*ret = ctx;
	return 0;
}

int main(int argc, char **argv)
{
	const char *dir = argc > 1 ? argv[1] : "/var/tmp";
	uint64_t mb = argc > 2 ? strtoull(argv[2], NULL, 10) : 256;
	struct phi_store *s;
	struct phi_store_obj *o;
	struct phi_cfile *cf;
	struct phi_key *k;
	if (phi_crypto_init() < 0 || phi_store_local_open(dir, &s) < 0 || phi_key_random(32, &k) < 0)
		return 1;
	if (s->ops->open(s, "bench-blocksize.tmp", O_RDWR | O_CREAT | O_TRUNC, 0600, &o) < 0 ||
	    phi_cfile_create(s, o, k, 1, &cf) < 0)
		return 1;
	size_t chunk = 1 << 20;
	uint8_t *buf = malloc(chunk);
	memset(buf, 'x', chunk);
	double t = now();
	for (uint64_t i = 0; i < mb; i++)
		if (phi_cfile_write(cf, buf, chunk, i * chunk) < 0)
			return 1;
	s->ops->fsync(o, false);
	double wr = mb / (now() - t);
	uint64_t ct;
	s->ops->size(o, &ct);
	phi_cfile_free(cf);
	phi_cfile_open(s, o, keyfn, k, &cf);
	t = now();
	size_t n;
	for (uint64_t i = 0; i < mb; i++)
		if (phi_cfile_read(cf, buf, chunk, i * chunk, &n) < 0)
			return 1;
	double rd = mb / (now() - t);
	srand(1);
	int ops = 20000;
	t = now();
	for (int i = 0; i < ops; i++)
		if (phi_cfile_write(cf, buf, 4096, ((uint64_t)rand() % (mb * 256)) * 4096) < 0)
			return 1;
	double rw = ops / (now() - t);
	t = now();
	for (int i = 0; i < ops; i++)
		if (phi_cfile_read(cf, buf, 4096, ((uint64_t)rand() % (mb * 256)) * 4096, &n) < 0)
			return 1;
	double rr = ops / (now() - t);
	printf("| %2d KiB | %8.0f | %8.0f | %9.0f | %9.0f | %5.2f |\n", (1 << PHI_CF_SHIFT) / 1024, wr, rd,
	       rw, rr, 100.0 * ((double)ct - (double)(mb << 20)) / (double)(mb << 20));
	phi_cfile_free(cf);
	s->ops->release(o);
	s->ops->unlink(s, "bench-blocksize.tmp");
	phi_store_close(s);
	phi_key_free(k);
	free(buf);
	return 0;
}
