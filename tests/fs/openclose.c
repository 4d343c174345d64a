/* openclose FILE [N]: N (default 10000) open(O_RDONLY)+close of FILE,
 * prints the median latency in microseconds. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return (x > y) - (x < y);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		fprintf(stderr, "usage: %s FILE [N]\n", argv[0]);
		return 2;
	}
	long n = argc > 2 ? atol(argv[2]) : 10000;
	if (n < 1)
		n = 1;
	double *t = malloc(sizeof(*t) * (size_t)n);
	if (!t)
		return 1;
	for (long i = 0; i < n; i++) {
		struct timespec a, b;
		clock_gettime(CLOCK_MONOTONIC, &a);
		int fd = open(argv[1], O_RDONLY);
		if (fd < 0) {
			perror("open");
			return 1;
		}
		close(fd);
		clock_gettime(CLOCK_MONOTONIC, &b);
		t[i] = (double)(b.tv_sec - a.tv_sec) * 1e6 + (double)(b.tv_nsec - a.tv_nsec) / 1e3;
	}
	qsort(t, (size_t)n, sizeof(*t), cmp);
	printf("%.1f\n", n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2);
	free(t);
	return 0;
}
