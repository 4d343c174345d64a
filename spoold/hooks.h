/* hooks.h: the one seam between spoold and phifs's access layer. Job grants and audit
 * events go through these three calls. hooks_default() logs them to stderr (the journal)
 * without PHI; the lead wires phifs/grants.* and phifs/audit-client.* here later.
 *
 * Contract:
 *   grant_issue: idempotent by `name` (spoold-<id>.<attempt>); grants the job role on
 *     job->patient (documents read, results/ write) from not_before_ms to expires_ms; writes
 *     an id (<= 63 bytes) for grant_revoke. A failure keeps the job from starting (it is
 *     retried with backoff, like a provisioning failure).
 *   grant_revoke: idempotent; called when the attempt ends, whatever the outcome.
 *   audit: one event; spoold does not stop on a failed audit call, it logs it.
 * The job pointer may be NULL for refused files that never parsed. */
#ifndef SPOOLD_HOOKS_H
#define SPOOLD_HOOKS_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "job.h"

enum hook_event {
	HOOK_SUBMIT,  /* a job file was accepted into the queue */
	HOOK_REFUSE,  /* a file or job was refused (reason says why) */
	HOOK_START,   /* an attempt was handed to the backend */
	HOOK_END,     /* the job reached done/ or failed/ */
	HOOK_CANCEL,  /* an operator cancelled it */
};

struct hook_audit {
	enum hook_event event;
	const char *job_id;     /* may be NULL for a refused file */
	const struct job *job;  /* may be NULL */
	uid_t submitter_uid;
	const char *outcome;    /* "ok", "refused", "done", "failed", ... */
	const char *reason;     /* field + problem, no PHI; may be "" */
	const char *backend_id; /* may be "" */
	uint32_t attempt;
};

struct hooks_ops {
	int (*grant_issue)(void *ud, const struct job *job, const char *name, uint64_t not_before_ms,
			   uint64_t expires_ms, char *ret_id, size_t id_len);
	int (*grant_revoke)(void *ud, const char *job_id, const char *grant_id);
	int (*audit)(void *ud, const struct hook_audit *ev);
};

struct hooks {
	const struct hooks_ops *ops;
	void *ud;
};

const char *hook_event_name(enum hook_event e);
/* Stand-in until the lead wires phifs: log lines "spoold: audit ..." / "spoold: grant ...". */
struct hooks hooks_default(void);

#endif
