/* jrec.h: the per-job journal record, spool/journal/<id>.json (docs/job-schema.md). It is
 * written (temp file, fsync, rename, fsync of the directory) before every side effect, so a
 * restarted spoold knows what it did. The same structure, with outcome fields, is the
 * result record written to done/ or failed/. */
#ifndef SPOOLD_JREC_H
#define SPOOLD_JREC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define JREC_VERSION 1
#define JREC_HIST_MAX 48
#define JREC_MAX_BYTES 65536

enum jstate {
	JS_RECEIVED, /* journal written, file still in incoming/ */
	JS_QUEUED,   /* in queue/ (waiting, deferred or backing off) */
	JS_STARTING, /* in active/, about to submit attempt N (nothing known to run yet) */
	JS_RUNNING,  /* submitted; backend handle recorded */
	JS_DONE,
	JS_FAILED,
	JS__N
};

struct jrec_ev {
	char what[24];
	uint64_t at_ms;
};

struct jrec {
	uint32_t version;
	char id[65];
	enum jstate state;
	uint32_t attempt; /* 1-based number of the current or last attempt; 0 before the first */
	uint32_t failures; /* retryable failures since acceptance or the last operator retry */
	int priority;
	uint32_t submitter_uid;
	uint64_t received_ms, started_ms, ended_ms, next_try_ms, deadline_ms;
	int tier; /* -1 unknown */
	uint32_t gpus;
	uint64_t est_tokens;
	/* backend handle of the current attempt */
	char backend[8];
	char backend_id[96]; /* idempotency name spoold-<id>.<attempt>, or the Slurm job id */
	char slurm_id[24];
	int64_t pid;        /* local: the supervisor's pid */
	uint64_t starttime; /* local: its start time, /proc/<pid>/stat field 22 */
	char slots[64];     /* local: CUDA_VISIBLE_DEVICES */
	char grant[64];
	bool cancel_requested, lifetime_exceeded, deferred;
	/* outcome */
	int exit_status; /* -1 unknown */
	int term_signal;
	uint64_t tokens_in, tokens_out;
	uint64_t cost_micro;
	char reason[200];
	struct jrec_ev hist[JREC_HIST_MAX];
	size_t nhist;
};

const char *jstate_name(enum jstate s);
void jrec_init(struct jrec *r, const char *id);
/* Append a history event (state name or event); once full, the last slot is overwritten so
 * the final state is always there. */
void jrec_event(struct jrec *r, const char *what, uint64_t at_ms);
void jrec_set_state(struct jrec *r, enum jstate s, uint64_t at_ms);
/* Serialize (pretty when pretty) into a malloc'ed NUL-terminated string. */
int jrec_format(const struct jrec *r, bool result, char **ret);
int jrec_parse(const void *buf, size_t len, struct jrec *ret);
/* "2026-12-05T13:00:00.123Z" */
void fmt_time_ms(uint64_t ms, char out[64]);
uint64_t now_ms(void);

#endif
