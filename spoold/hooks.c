/* hooks.c: the phifs hooks (grants + audit log, below) and the default hooks: log to stderr (the journal under systemd), no PHI: the job id,
 * the submitter's uid, the purpose, never the patient or the documents. */
#include "hooks.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "admin.h"
#include "audit-client.h"
#include "audit.h"
#include "grants.h"
#include "keys.h"

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

/* ---- the real hooks: phifs grants and the audit log ---- */

struct phifs_hooks {
	char store[1024], key_file[1024];
	uint32_t job_uid;
	char job_name[PHI_GRANT_NAME_MAX + 1];
	struct phi_key *lookup_key;
	struct phi_audit_client *audit; /* NULL: no audit socket */
};

static uint64_t wall_s(void)
{
	return (uint64_t)time(NULL);
}

static int submit(struct phifs_hooks *h, struct phi_audit_event *ev)
{
	if (!h->audit)
		return 0;
	ev->actor.uid = (uint32_t)getuid();
	ev->actor.gid = (uint32_t)getgid();
	ev->actor.pid = (uint32_t)getpid();
	snprintf(ev->actor.comm, sizeof ev->actor.comm, "spoold");
	snprintf(ev->actor.role, sizeof ev->actor.role, "spoold");
	return phi_audit_submit(h->audit, ev, NULL);
}

static void set_patient(struct phifs_hooks *h, const struct job *j, struct phi_audit_event *ev)
{
	if (j && j->patient[0])
		(void)phi_audit_pseudonym(h->lookup_key, PHI_AUDIT_PATIENT, j->patient,
					  ev->obj.patient, sizeof ev->obj.patient);
}

static int find_by_reason(struct phi_admin *ad, const char *patient, const char *reason,
			  char *ret_id, size_t id_len)
{
	struct phi_grant *g = NULL;
	size_t n = 0;
	int r = phi_grants_list(ad->kr, ad->s, patient, &g, &n);
	if (r < 0)
		return r;
	r = -ENOENT;
	for (size_t i = 0; i < n; i++)
		if (!g[i].revoked && g[i].role == PHI_ROLE_JOB && !strcmp(g[i].reason, reason)) {
			snprintf(ret_id, id_len, "%s", g[i].id);
			r = 0;
			break;
		}
	free(g);
	return r;
}

static int phifs_grant_issue(void *ud, const struct job *job, const char *name, uint64_t nb,
			     uint64_t exp, char *ret_id, size_t id_len)
{
	struct phifs_hooks *h = ud;
	if (!job)
		return -EINVAL;
	char msg[512];
	struct phi_admin ad;
	int r = phi_admin_open(h->store, h->key_file, false, &ad, msg, sizeof msg);
	if (r < 0) {
		fprintf(stderr, "spoold: grant: %s\n", msg);
		return r;
	}
	r = phi_admin_lock_dir(&ad, h->store, "grants", msg, sizeof msg);
	if (r < 0) {
		fprintf(stderr, "spoold: grant: %s\n", msg);
		phi_admin_done(&ad);
		return r;
	}
	char reason[PHI_GRANT_REASON_MAX + 1];
	snprintf(reason, sizeof reason, "spoold attempt %s", name);
	char id[PHI_GRANT_ID_LEN + 1];
	r = find_by_reason(&ad, job->patient, reason, id, sizeof id);
	bool fresh = r == -ENOENT;
	struct phi_grant g = { .principal_kind = PHI_PRINCIPAL_USER, .principal_id = h->job_uid,
			       .role = PHI_ROLE_JOB, .purpose = PHI_PURPOSE_JOB,
			       .not_before = nb / 1000, .expiry = (exp + 999) / 1000,
			       .granted_by_uid = (uint32_t)getuid() };
	if (fresh) {
		snprintf(g.principal_name, sizeof g.principal_name, "%s", h->job_name);
		snprintf(g.patient, sizeof g.patient, "%s", job->patient);
		snprintf(g.granted_by_name, sizeof g.granted_by_name, "spoold");
		snprintf(g.reason, sizeof g.reason, "%s", reason);
		const char *why = NULL;
		r = phi_grants_add(ad.kr, ad.s, &g, &why);
		if (r < 0)
			fprintf(stderr, "spoold: grant: job=%s: %s\n", job->id, why ? why : strerror(-r));
		else
			snprintf(id, sizeof id, "%s", g.id);
	}
	phi_admin_done(&ad);
	if (r < 0)
		return r;
	if (fresh) {
		struct phi_audit_event ev = { .event = PHI_AE_GRANT_CREATE, .action = 'C' };
		set_patient(h, job, &ev);
		snprintf(ev.actor.principal, sizeof ev.actor.principal, "user:%s", h->job_name);
		snprintf(ev.why.purpose, sizeof ev.why.purpose, "job");
		snprintf(ev.why.grant, sizeof ev.why.grant, "%s", id);
		ev.why.grant_exp_ns = (int64_t)g.expiry * 1000000000LL;
		snprintf(ev.detail, sizeof ev.detail, "job grant for %s (uid %u)", name, (unsigned)h->job_uid);
		int e = submit(h, &ev);
		if (e < 0)
			fprintf(stderr, "spoold: audit: grant-create not recorded: %s\n", strerror(-e));
	}
	fprintf(stderr, "spoold: grant issue job=%s name=%s grant=%s%s\n", job->id, name, id,
		fresh ? "" : " (existing)");
	snprintf(ret_id, id_len, "%s", id);
	return 0;
}

static int phifs_grant_revoke(void *ud, const char *job_id, const char *grant_id)
{
	struct phifs_hooks *h = ud;
	if (!grant_id || !*grant_id)
		return 0;
	char msg[512];
	struct phi_admin ad;
	int r = phi_admin_open(h->store, h->key_file, false, &ad, msg, sizeof msg);
	if (r < 0) {
		fprintf(stderr, "spoold: grant: %s\n", msg);
		return r;
	}
	r = phi_admin_lock_dir(&ad, h->store, "grants", msg, sizeof msg);
	struct phi_grant g;
	if (r >= 0)
		r = phi_grants_revoke(ad.kr, ad.s, grant_id, wall_s(), (uint32_t)getuid(), &g);
	phi_admin_done(&ad);
	if (r == -EALREADY || r == -ENOENT)
		return 0; /* idempotent */
	if (r < 0) {
		fprintf(stderr, "spoold: grant revoke job=%s grant=%s: %s\n", job_id, grant_id, strerror(-r));
		return r;
	}
	struct phi_audit_event ev = { .event = PHI_AE_GRANT_REVOKE, .action = 'U' };
	(void)phi_audit_pseudonym(h->lookup_key, PHI_AUDIT_PATIENT, g.patient, ev.obj.patient,
				  sizeof ev.obj.patient);
	snprintf(ev.actor.principal, sizeof ev.actor.principal, "user:%s", h->job_name);
	snprintf(ev.why.purpose, sizeof ev.why.purpose, "job");
	snprintf(ev.why.grant, sizeof ev.why.grant, "%s", grant_id);
	snprintf(ev.detail, sizeof ev.detail, "job %s ended", job_id);
	int e = submit(h, &ev);
	if (e < 0)
		fprintf(stderr, "spoold: audit: grant-revoke not recorded: %s\n", strerror(-e));
	fprintf(stderr, "spoold: grant revoke job=%s grant=%s\n", job_id, grant_id);
	return 0;
}

static int phifs_audit(void *ud, const struct hook_audit *a)
{
	struct phifs_hooks *h = ud;
	(void)log_audit(NULL, a);
	struct phi_audit_event ev = { 0 };
	switch (a->event) {
	case HOOK_SUBMIT:
		ev.event = PHI_AE_JOB_SUBMIT, ev.action = 'C';
		break;
	case HOOK_REFUSE:
		ev.event = PHI_AE_JOB_SUBMIT, ev.action = 'C', ev.outcome = 4;
		break;
	case HOOK_START:
		ev.event = PHI_AE_JOB_START, ev.action = 'E';
		break;
	case HOOK_END:
	case HOOK_CANCEL:
		ev.event = PHI_AE_JOB_END, ev.action = 'E';
		ev.outcome = a->outcome && strcmp(a->outcome, "done") && strcmp(a->outcome, "ok") ? 4 : 0;
		break;
	}
	set_patient(h, a->job, &ev);
	snprintf(ev.actor.principal, sizeof ev.actor.principal, "uid:%u", (unsigned)a->submitter_uid);
	if (a->job)
		snprintf(ev.why.purpose, sizeof ev.why.purpose, "%s", a->job->purpose);
	/* ids, counts and field names only: reasons never carry values (job.h) */
	snprintf(ev.detail, sizeof ev.detail, "%s job=%s attempt=%u outcome=%s%s%.120s",
		 hook_event_name(a->event), a->job_id ? a->job_id : "-", a->attempt,
		 a->outcome ? a->outcome : "", a->reason && *a->reason ? " reason=" : "",
		 a->reason ? a->reason : "");
	int e = submit(h, &ev);
	if (e < 0)
		fprintf(stderr, "spoold: audit: %s not recorded: %s\n", hook_event_name(a->event), strerror(-e));
	return e;
}

static const struct hooks_ops phifs_ops = {
	.grant_issue = phifs_grant_issue,
	.grant_revoke = phifs_grant_revoke,
	.audit = phifs_audit,
};

int hooks_phifs_new(const struct hooks_phifs_cfg *c, struct hooks *ret, char *err, size_t errlen)
{
	if (sodium_init() < 0) {
		snprintf(err, errlen, "libsodium: cannot initialise");
		return -EIO;
	}
	struct phifs_hooks *h = calloc(1, sizeof *h);
	if (!h)
		return -ENOMEM;
	snprintf(h->store, sizeof h->store, "%s", c->store);
	snprintf(h->key_file, sizeof h->key_file, "%s", c->key_file);
	uint8_t kind;
	int r = phi_principal_parse(c->job_user, &kind, &h->job_uid, h->job_name);
	if (r < 0) {
		/* a bare name or number: try it as a user */
		char p[96];
		snprintf(p, sizeof p, "user:%s", c->job_user);
		r = phi_principal_parse(p, &kind, &h->job_uid, h->job_name);
	}
	if (r < 0 || kind != PHI_PRINCIPAL_USER) {
		snprintf(err, errlen, "job_user: no such user");
		free(h);
		return r < 0 ? r : -EINVAL;
	}
	struct phi_key *master = NULL;
	r = phi_master_load(c->key_file, &master);
	if (r < 0) {
		phi_admin_key_error(c->key_file, r, err, errlen);
		free(h);
		return r;
	}
	r = phi_audit_lookup_key(master, &h->lookup_key);
	phi_key_free(master);
	if (r < 0) {
		snprintf(err, errlen, "audit lookup key: %s", strerror(-r));
		free(h);
		return r;
	}
	if (c->audit_socket && *c->audit_socket) {
		r = phi_audit_client_open(c->audit_socket, &h->audit);
		if (r < 0) {
			snprintf(err, errlen, "audit socket %s: %s", c->audit_socket, strerror(-r));
			phi_key_free(h->lookup_key);
			free(h);
			return r;
		}
	}
	*ret = (struct hooks){ .ops = &phifs_ops, .ud = h };
	return 0;
}

void hooks_phifs_free(struct hooks *h)
{
	if (!h || h->ops != &phifs_ops)
		return;
	struct phifs_hooks *p = h->ud;
	phi_audit_client_free(p->audit);
	phi_key_free(p->lookup_key);
	free(p);
	*h = hooks_default();
}
