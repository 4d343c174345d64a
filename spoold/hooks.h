/* hooks.h: the one seam between spoold and phifs's access layer. Job grants and audit
 * events go through these three calls. hooks_phifs_new() is the real implementation:
 * job grants on the store (phifs/grants.h) and durable audit records (phifs/audit-client.h);
 * spoold uses it when its config names phifs_store and phifs_key_file. hooks_default()
 * only logs them to stderr (the journal) without PHI.
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
/* Log only: lines "spoold: audit ..." / "spoold: grant ..." (no phifs store configured). */
struct hooks hooks_default(void);

struct hooks_phifs_cfg {
	const char *store;        /* store URL */
	const char *key_file;     /* master key file */
	const char *audit_socket; /* NULL or "": grant and job events are only logged */
	const char *job_user;     /* the principal of job grants: the runner's job user */
};
/* Real hooks: grant_issue adds a job grant (role job, purpose job, the job's patient,
 * principal job_user, reason "spoold attempt <name>", which makes it idempotent by name);
 * grant_revoke revokes it; audit submits job-submit/-start/-end records (patient as a
 * pseudonym, never in clear) and grant-create/-revoke records. The master key is loaded
 * here only to check it and derive the audit lookup key; the store is opened per call.
 * Failures: -errno with a message in err. */
int hooks_phifs_new(const struct hooks_phifs_cfg *c, struct hooks *ret, char *err, size_t errlen);
void hooks_phifs_free(struct hooks *h);

#endif
