/* bench-audit SOCKET LOGDIR [SECONDS]: submit latency (p50/p99) and submits/s at 1, 16 and 64
 * threads against a running phifs-auditd, and the raw write+fdatasync latency of LOGDIR's
 * volume (the floor for any durable design). Not a test: prints a table. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <time.h>

#include "phifs/audit-client.h"

struct job {
	struct phi_audit_client *c;
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
	struct phi_audit_event ev = { .event = PHI_AE_OPEN, .action = 'R' };
	ev.actor.uid = 1000;
	ev.actor.pid = (uint32_t)getpid();
	snprintf(ev.actor.principal, sizeof(ev.actor.principal), "u:bench");
	snprintf(ev.actor.role, sizeof(ev.actor.role), "provider");
	snprintf(ev.obj.patient, sizeof(ev.obj.patient), "pt:bench0123456789abcdefghij");
	snprintf(ev.why.purpose, sizeof(ev.why.purpose), "TREAT");
	while (now_ns() < j->end && j->n < j->cap) {
		uint64_t seq;
		int64_t t0 = now_ns();
		if (phi_audit_submit(j->c, &ev, &seq) < 0) {
			j->fails++;
			continue;
		}
		j->lat[j->n++] = (uint64_t)(now_ns() - t0);
	}
	return NULL;
}

static void pct(uint64_t *v, size_t n, double *p50, double *p99)
{
	qsort(v, n, sizeof(*v), cmp);
	*p50 = n ? (double)v[n / 2] / 1e6 : 0;
	*p99 = n ? (double)v[n * 99 / 100] / 1e6 : 0;
}

int main(int argc, char **argv)
{
	uint64_t secs = 3;
	if (argc < 3 || (argc > 3 && phi_parse_u64(argv[3], 3600, &secs) < 0)) {
		fprintf(stderr, "usage: bench-audit SOCKET LOGDIR [SECONDS]\n");
		return 2;
	}
	static const unsigned nthreads[] = { 1, 16, 64 };
	printf("%-8s %12s %10s %10s %8s\n", "threads", "submits/s", "p50 ms", "p99 ms", "fails");
	for (size_t k = 0; k < ARRAY_SIZE(nthreads); k++) {
		unsigned nt = nthreads[k];
		struct phi_audit_client_opts o = { .pool = nt, .deadline_ms = 5000 };
		struct phi_audit_client *c;
		if (phi_audit_client_open_opts(argv[1], &o, &c) < 0)
			return 1;
		pthread_t tid[64];
		struct job jobs[64];
		int64_t t0 = now_ns();
		for (unsigned t = 0; t < nt; t++) {
			jobs[t] = (struct job){ .c = c, .end = t0 + (int64_t)secs * 1000000000, .cap = 1u << 20 };
			jobs[t].lat = malloc(jobs[t].cap * sizeof(uint64_t));
			if (!jobs[t].lat || pthread_create(&tid[t], NULL, run, &jobs[t]) != 0)
				return 1;
		}
		size_t total = 0, fails = 0;
		for (unsigned t = 0; t < nt; t++) {
			pthread_join(tid[t], NULL);
			total += jobs[t].n;
			fails += jobs[t].fails;
		}
		double el = (double)(now_ns() - t0) / 1e9;
		uint64_t *all = malloc((total ? total : 1) * sizeof(uint64_t));
		size_t off = 0;
		for (unsigned t = 0; t < nt; t++) {
			memcpy(all + off, jobs[t].lat, jobs[t].n * sizeof(uint64_t));
			off += jobs[t].n;
			free(jobs[t].lat);
		}
		double p50, p99;
		pct(all, total, &p50, &p99);
		printf("%-8u %12.0f %10.3f %10.3f %8zu\n", nt, (double)total / el, p50, p99, fails);
		free(all);
		phi_audit_client_free(c);
	}

	/* the raw flush latency of the log volume: 256-byte append + fdatasync */
	char path[4096];
	snprintf(path, sizeof(path), "%s/.bench-fdatasync", argv[2]);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600);
	if (fd < 0)
		return 1;
	uint64_t lat[500];
	char buf[256];
	memset(buf, 'x', sizeof(buf));
	for (size_t i = 0; i < ARRAY_SIZE(lat); i++) {
		int64_t t0 = now_ns();
		if (write(fd, buf, sizeof(buf)) != (ssize_t)sizeof(buf) || fdatasync(fd) < 0)
			return 1;
		lat[i] = (uint64_t)(now_ns() - t0);
	}
	close(fd);
	unlink(path);
	double p50, p99;
	pct(lat, ARRAY_SIZE(lat), &p50, &p99);
	printf("fdatasync (256 B append) on the log volume: p50 %.3f ms, p99 %.3f ms\n", p50, p99);
	return 0;
}
