/* audit-load SOCKET THREADS PER_THREAD [DEADLINE_MS [TAG]]: THREADS threads each submit PER_THREAD
 * events through one shared client. audit-load SOCKET async N [DEADLINE_MS [TAG]]: one thread
 * submits N events asynchronously (pipelined, as phifs's opens are) and waits for every
 * answer. Every success prints "ok SEQ TAG" (TAG = the event's
 * detail: TAG<thread>-<i>, unique per run), every failure "fail ERRNO TAG", one line each. Used by the
 * integration tests (concurrency, kill -9, full volume). Exit 0 unless setup failed. */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>

#include "phifs/audit-client.h"

struct job {
	struct phi_audit_client *c;
	unsigned t, n;
	pthread_mutex_t *out;
	const char *tag;
};

static void print_result(pthread_mutex_t *out, int r, uint64_t seq, const char *tag)
{
	pthread_mutex_lock(out);
	if (r == 0)
		printf("ok %" PRIu64 " %s\n", seq, tag);
	else
		printf("fail %d %s\n", -r, tag);
	fflush(stdout);
	pthread_mutex_unlock(out);
}

static void *run(void *arg)
{
	struct job *j = arg;
	for (unsigned i = 0; i < j->n; i++) {
		struct phi_audit_event ev = { .event = PHI_AE_OPEN, .action = 'R' };
		uint64_t seq = 0;
		ev.actor.uid = 1000 + j->t;
		ev.actor.gid = 1000;
		ev.actor.pid = (uint32_t)getpid();
		snprintf(ev.actor.principal, sizeof(ev.actor.principal), "u:load%u", j->t);
		snprintf(ev.actor.role, sizeof(ev.actor.role), "provider");
		snprintf(ev.detail, sizeof(ev.detail), "%s%u-%u", j->tag, j->t, i);
		int r = phi_audit_submit(j->c, &ev, &seq);
		print_result(j->out, r, seq, ev.detail);
	}
	return NULL;
}

/* "audit-load SOCKET -": one client object; each stdin line is submitted with that tag.
 * Shows how one client behaves across writer stops and restarts. */
static int interactive(const char *sock)
{
	struct phi_audit_client_opts o = { .pool = 2, .deadline_ms = 2000 };
	struct phi_audit_client *c;
	pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;
	char line[128];
	if (phi_audit_client_open_opts(sock, &o, &c) < 0)
		return 1;
	while (fgets(line, sizeof(line), stdin)) {
		struct phi_audit_event ev = { .event = PHI_AE_OPEN, .action = 'R' };
		uint64_t seq = 0;
		line[strcspn(line, "\n")] = 0;
		ev.actor.pid = (uint32_t)getpid();
		snprintf(ev.detail, sizeof(ev.detail), "%s", line);
		int r = phi_audit_submit(c, &ev, &seq);
		print_result(&out, r, seq, line);
	}
	phi_audit_client_free(c);
	return 0;
}

struct adone {
	pthread_mutex_t *out;
	char tag[64];
};

static void on_done(void *arg, int status, uint64_t seq)
{
	struct adone *d = arg;
	print_result(d->out, status, seq, d->tag);
}

static int async_load(const char *sock, uint64_t n, uint64_t dl, const char *tag)
{
	struct phi_audit_client_opts o = { .deadline_ms = (unsigned)dl };
	struct phi_audit_client *c;
	pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;
	struct adone *d = calloc(n, sizeof(*d));
	if (!d || phi_audit_client_open_opts(sock, &o, &c) < 0)
		return 1;
	for (uint64_t i = 0; i < n; i++) {
		struct phi_audit_event ev = { .event = PHI_AE_OPEN, .action = 'R' };
		ev.actor.uid = 1000;
		ev.actor.gid = 1000;
		ev.actor.pid = (uint32_t)getpid();
		snprintf(ev.actor.principal, sizeof(ev.actor.principal), "u:async");
		snprintf(ev.actor.role, sizeof(ev.actor.role), "provider");
		snprintf(d[i].tag, sizeof(d[i].tag), "%s-%" PRIu64, tag, i);
		snprintf(ev.detail, sizeof(ev.detail), "%s", d[i].tag);
		d[i].out = &out;
		int r = phi_audit_submit_async(c, &ev, on_done, &d[i]);
		if (r < 0)
			print_result(&out, r, 0, d[i].tag);
	}
	phi_audit_drain(c);
	phi_audit_client_free(c);
	free(d);
	return 0;
}

int main(int argc, char **argv)
{
	uint64_t threads, per, dl = 2000;
	if (argc == 3 && !strcmp(argv[2], "-"))
		return interactive(argv[1]);
	if (argc >= 4 && !strcmp(argv[2], "async")) {
		if (phi_parse_u64(argv[3], 1000000, &per) < 0 ||
		    (argc > 4 && phi_parse_u64(argv[4], 60000, &dl) < 0))
			return 2;
		return async_load(argv[1], per, dl, argc > 5 ? argv[5] : "a");
	}
	if (argc < 4 || phi_parse_u64(argv[2], 1024, &threads) < 0 ||
	    phi_parse_u64(argv[3], 1000000, &per) < 0 || (argc > 4 && phi_parse_u64(argv[4], 60000, &dl) < 0)) {
		fprintf(stderr, "usage: audit-load SOCKET THREADS PER_THREAD [DEADLINE_MS [TAG]]\n");
		return 2;
	}
	struct phi_audit_client_opts o = { .pool = (unsigned)threads, .deadline_ms = (unsigned)dl };
	struct phi_audit_client *c;
	if (phi_audit_client_open_opts(argv[1], &o, &c) < 0)
		return 1;
	pthread_mutex_t out = PTHREAD_MUTEX_INITIALIZER;
	pthread_t *tid = calloc(threads, sizeof(*tid));
	struct job *jobs = calloc(threads, sizeof(*jobs));
	if (!tid || !jobs)
		return 1;
	for (unsigned t = 0; t < threads; t++) {
		jobs[t] = (struct job){ .c = c, .t = t, .n = (unsigned)per, .out = &out,
				     .tag = argc > 5 ? argv[5] : "t" };
		if (pthread_create(&tid[t], NULL, run, &jobs[t]) != 0)
			return 1;
	}
	for (unsigned t = 0; t < threads; t++)
		pthread_join(tid[t], NULL);
	phi_audit_client_free(c);
	free(tid);
	free(jobs);
	return 0;
}
