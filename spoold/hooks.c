/* hooks.c: the default hooks: log to stderr (the journal under systemd), no PHI: the job id,
 * the submitter's uid, the purpose, never the patient or the documents. */
#include "hooks.h"

#include <stdio.h>
#include <string.h>

const char *hook_event_name(enum hook_event e)
{
	switch (e) {
	case HOOK_SUBMIT:
		return "job-submit";
	case HOOK_REFUSE:
		return "job-refuse";
	case HOOK_START:
		return "job-start";
	case HOOK_END:
		return "job-end";
	case HOOK_CANCEL:
		return "job-cancel";
	}
	return "?";
}

static int log_grant_issue(void *ud, const struct job *job, const char *name, uint64_t nb,
			   uint64_t exp, char *ret_id, size_t id_len)
{
	(void)ud;
	fprintf(stderr, "spoold: grant issue name=%s role=job purpose=%s lifetime_sec=%llu (not wired: log only)\n",
		name, job ? job->purpose : "-", (unsigned long long)((exp - nb) / 1000));
	snprintf(ret_id, id_len, "%s", name);
	return 0;
}

static int log_grant_revoke(void *ud, const char *job_id, const char *grant_id)
{
	(void)ud;
	fprintf(stderr, "spoold: grant revoke job=%s grant=%s (not wired: log only)\n", job_id, grant_id);
	return 0;
}

static int log_audit(void *ud, const struct hook_audit *ev)
{
	(void)ud;
	fprintf(stderr, "spoold: audit event=%s job=%s uid=%u attempt=%u outcome=%s backend_id=%s%s%s\n",
		hook_event_name(ev->event), ev->job_id ? ev->job_id : "-", (unsigned)ev->submitter_uid,
		ev->attempt, ev->outcome, ev->backend_id ? ev->backend_id : "",
		ev->reason && *ev->reason ? " reason=" : "", ev->reason ? ev->reason : "");
	return 0;
}

static const struct hooks_ops log_ops = {
	.grant_issue = log_grant_issue,
	.grant_revoke = log_grant_revoke,
	.audit = log_audit,
};

struct hooks hooks_default(void)
{
	return (struct hooks){ .ops = &log_ops, .ud = NULL };
}
