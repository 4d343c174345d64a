/* openbench: open-to-first-byte benchmark helper for bench-open.sh (not a test).
 *
 *   openbench open DIR NFILES THREADS SECONDS
 *       THREADS threads, each in a loop: open(DIR/fNNN, O_RDONLY), read 1 byte, close, over
 *       NFILES files round robin. Prints "OPS_PER_S P50_US P99_US FAILS" where the latency
 *       is from the open call to the first byte read.
 *   openbench fdatasync DIR N
 *       N times: pwrite 512 bytes at the end of DIR/.fsync-probe, fdatasync. Prints
 *       "P50_US P99_US": the flush latency of DIR's volume, the floor of a durable commit.
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct job {
	const char *dir;
	unsigned nfiles, k, nthreads;
	int64_t end;
	uint64_t *lat;
	size_t n, cap, fails;
};

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int cmp(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

static void *run(void *arg)
{
	struct job *j = arg;
	char path[4096];
	for (unsigned i = j->k; now_ns() < j->end; i += j->nthreads) {
		snprintf(path, sizeof(path), "%s/f%03u", j->dir, i % j->nfiles);
		int64_t t0 = now_ns();
		int fd = open(path, O_RDONLY | O_CLOEXEC);
		char c;
		if (fd < 0 || read(fd, &c, 1) != 1) {
			j->fails++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		int64_t t1 = now_ns();
		close(fd);
		if (j->n == j->cap) {
			size_t nc = j->cap ? j->cap * 2 : 4096;
			uint64_t *p = realloc(j->lat, nc * sizeof(*p));
			if (!p)
				break;
			j->lat = p;
			j->cap = nc;
		}
		j->lat[j->n++] = (uint64_t)(t1 - t0);
	}
	return NULL;
}

static int bench_open(const char *dir, unsigned nfiles, unsigned nthreads, unsigned seconds)
{
	struct job *jobs = calloc(nthreads, sizeof(*jobs));
	pthread_t *th = calloc(nthreads, sizeof(*th));
	if (!jobs || !th)
		return 1;
	int64_t start = now_ns(), end = start + (int64_t)seconds * 1000000000;
	for (unsigned k = 0; k < nthreads; k++) {
		jobs[k] = (struct job){ .dir = dir, .nfiles = nfiles, .k = k, .nthreads = nthreads,
					.end = end };
		if (pthread_create(&th[k], NULL, run, &jobs[k]) != 0)
			return 1;
	}
	size_t total = 0, fails = 0;
	for (unsigned k = 0; k < nthreads; k++) {
		pthread_join(th[k], NULL);
		total += jobs[k].n;
		fails += jobs[k].fails;
	}
	double secs = (double)(now_ns() - start) / 1e9;
	uint64_t *all = malloc((total ? total : 1) * sizeof(*all));
	if (!all)
		return 1;
	size_t m = 0;
	for (unsigned k = 0; k < nthreads; k++) {
		memcpy(all + m, jobs[k].lat, jobs[k].n * sizeof(*all));
		m += jobs[k].n;
		free(jobs[k].lat);
	}
	qsort(all, total, sizeof(*all), cmp);
	double p50 = total ? (double)all[total / 2] / 1e3 : 0;
	double p99 = total ? (double)all[total * 99 / 100] / 1e3 : 0;
	printf("%.0f %.0f %.0f %zu\n", (double)total / secs, p50, p99, fails);
	free(all);
	free(jobs);
	free(th);
	return 0;
}

static int bench_fdatasync(const char *dir, unsigned n)
{
	char path[4096], buf[512];
	snprintf(path, sizeof(path), "%s/.fsync-probe", dir);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (fd < 0) {
		perror("open");
		return 1;
	}
	uint64_t *lat = calloc(n, sizeof(*lat));
	if (!lat)
		return 1;
	memset(buf, 'a', sizeof(buf));
	for (unsigned i = 0; i < n; i++) {
		int64_t t0 = now_ns();
		if (pwrite(fd, buf, sizeof(buf), (off_t)i * sizeof(buf)) != (ssize_t)sizeof(buf) ||
		    fdatasync(fd) < 0) {
			perror("write");
			return 1;
		}
		lat[i] = (uint64_t)(now_ns() - t0);
	}
	close(fd);
	unlink(path);
	qsort(lat, n, sizeof(*lat), cmp);
	printf("%.0f %.0f\n", (double)lat[n / 2] / 1e3, (double)lat[(size_t)n * 99 / 100] / 1e3);
	free(lat);
	return 0;
}

int main(int argc, char **argv)
{
	if (argc == 6 && !strcmp(argv[1], "open"))
		return bench_open(argv[2], (unsigned)atoi(argv[3]), (unsigned)atoi(argv[4]),
				  (unsigned)atoi(argv[5]));
	if (argc == 4 && !strcmp(argv[1], "fdatasync"))
		return bench_fdatasync(argv[2], (unsigned)atoi(argv[3]));
	fprintf(stderr, "usage: openbench open DIR NFILES THREADS SECONDS | fdatasync DIR N\n");
	return 2;
}
