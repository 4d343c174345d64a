/* phifs-grant: create, list and revoke access grants of a phifs store.
 *
 *   phifs-grant --store STORE [--key-file FILE] [--audit-socket PATH|none] COMMAND [OPTIONS]
 *
 * The master key is loaded exactly as phifs-key does (admin.h); grants are sealed under a
 * key derived from it (docs/grants-format.md). add, emergency and revoke are recorded in
 * the audit log before the grant file changes, and refused when the record cannot be made
 * durable (admin.h). Errors are one line on stderr, without
 * patient ids or key material. Exit codes: 0 ok, 1 failure, 2 usage.
 */
#include <getopt.h>
#include <inttypes.h>
#include <pwd.h>
#include <stdarg.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>

#include <cjson/cJSON.h>

#include "phifs/admin.h"
#include "phifs/audit.h"
#include "phifs/crypto.h"
#include "phifs/grants.h"
#include "phifs/keys.h"
#include "phifs/util.h"

#define TIME_MAX 253402300799ull /* 9999-12-31T23:59:59Z */

struct args {
	const char *store, *key_file, *audit_socket;
	const char *principal, *patient, *role, *purpose, *consent, *reason;
	const char *not_before, *for_, *until;
	bool json;
};

static int err(int rc, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int err(int rc, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("phifs-grant: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return rc;
}

static int usage(FILE *f)
{
	if (f == stderr) {
		fputs("usage: phifs-grant --store STORE [--key-file FILE] [--audit-socket PATH|none] COMMAND [OPTIONS] (see --help)\n", f);
		return 2;
	}
	fputs("usage: phifs-grant --store STORE [--key-file FILE] [--audit-socket PATH|none] COMMAND [OPTIONS]\n"
	      "commands:\n"
	      "  add --principal user:NAME|UID|group:NAME|GID --patient P|'*' --role ROLE\n"
	      "      [--purpose PURPOSE] [--consent REF] [--not-before T] (--for D | --until T)\n"
	      "                      roles: service provider job admin auditor; purposes: treatment\n"
	      "                      payment operations research job. provider grants need --consent\n"
	      "                      and last at most 72h; '*' (every patient) only for service,\n"
	      "                      admin and auditor. Prints the new grant id.\n"
	      "  emergency --principal user:NAME --patient P --reason TEXT [--for D]\n"
	      "                      break-glass provider access (default 1h, at most 4h), flagged\n"
	      "  list [--patient P] [--json]\n"
	      "  revoke GRANT_ID\n"
	      "Times: 2026-12-05T10:00:00Z (UTC) or epoch seconds. Durations: N, Ns, Nm, Nh.\n"
	      "Without --key-file the key is read from $CREDENTIALS_DIRECTORY/" PHI_CRED_NAME ".\n"
	      "add, emergency and revoke write an audit record to phifs-auditd (--audit-socket PATH,\n"
	      "else $" PHI_AUDIT_SOCKET_ENV ") before changing anything and are refused if it cannot\n"
	      "be made durable; --audit-socket none runs them unaudited.\n",
	      f);
	return 2;
}

/* ---- audit (write-ahead: admin.h) ----
 * One record per change, made durable before the grant file is written: grant-create,
 * emergency (a break-glass grant) or grant-revoke, with the grant id, purpose, expiry and
 * patient pseudonym; the grantee, role and window in detail (staff names, no PHI; the
 * emergency reason is free text and stays out of the log). If the change then fails, a
 * second record with outcome 8 says so. */
static void grant_event(struct phi_audit_event *ev, enum phi_audit_ev e, const struct phi_grant *g)
{
	char p[PHI_GRANT_NAME_MAX + 8];
	*ev = (struct phi_audit_event){ .event = e, .action = e == PHI_AE_GRANT_REVOKE ? 'D' : 'C' };
	phi_principal_format(g, p, sizeof(p));
	snprintf(ev->why.purpose, sizeof(ev->why.purpose), "%s", phi_purpose_name(g->purpose));
	snprintf(ev->why.grant, sizeof(ev->why.grant), "%s", g->id);
	ev->why.grant_exp_ns = g->expiry <= INT64_MAX / 1000000000 ? (int64_t)g->expiry * 1000000000 : 0;
	snprintf(ev->detail, sizeof(ev->detail), "phifs-grant grantee=%s role=%s%s nb=%" PRIu64
		 " exp=%" PRIu64, p, phi_role_name(g->role), !strcmp(g->patient, PHI_GRANT_ALL) ?
		 " patient=*" : "", g->not_before, g->expiry);
}

static int audit_begin(const struct args *a, struct phi_admin *ad, struct phi_admin_audit *au,
		       enum phi_audit_ev e, const struct phi_grant *g)
{
	char msg[512];
	if (phi_admin_audit_open(a->audit_socket, ad->master, au, msg, sizeof(msg)) < 0)
		return err(1, "%s; nothing changed", msg);
	struct phi_audit_event ev;
	grant_event(&ev, e, g);
	int r = phi_admin_audit_record(au, &ev, g->patient);
	if (r < 0)
		return err(1, "the audit log did not record the %s (%s); nothing changed",
			   phi_audit_ev_name(e), strerror(-r));
	return 0;
}

static void audit_failed(struct phi_admin_audit *au, enum phi_audit_ev e, const struct phi_grant *g,
			 int r)
{
	struct phi_audit_event ev;
	grant_event(&ev, e, g);
	ev.outcome = 8;
	ev.err = r < 0 && r > -4096 ? -r : EIO;
	if (phi_admin_audit_record(au, &ev, g->patient) < 0)
		fprintf(stderr, "phifs-grant: warning: the audit log did not record that the %s failed\n",
			phi_audit_ev_name(e));
}

/* ---- times ---- */

static int digits(const char *s, size_t n, unsigned *ret)
{
	unsigned v = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	*ret = v;
	return 0;
}

/* "YYYY-MM-DDTHH:MM:SSZ" or epoch seconds */
static int parse_time(const char *s, uint64_t *ret)
{
	if (phi_parse_u64(s, TIME_MAX, ret) == 0)
		return 0;
	unsigned y, mo, d, h, mi, se;
	if (strlen(s) != 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' ||
	    s[16] != ':' || s[19] != 'Z' || digits(s, 4, &y) || digits(s + 5, 2, &mo) ||
	    digits(s + 8, 2, &d) || digits(s + 11, 2, &h) || digits(s + 14, 2, &mi) ||
	    digits(s + 17, 2, &se) || y < 1970)
		return -EINVAL;
	struct tm tm = { .tm_year = (int)y - 1900, .tm_mon = (int)mo - 1, .tm_mday = (int)d,
			 .tm_hour = (int)h, .tm_min = (int)mi, .tm_sec = (int)se };
	time_t t = timegm(&tm);
	struct tm back;
	/* timegm normalises 02-30 into 03-02: refuse what does not come back unchanged */
	if (t < 0 || !gmtime_r(&t, &back) || back.tm_year != (int)y - 1900 ||
	    back.tm_mon != (int)mo - 1 || back.tm_mday != (int)d || back.tm_hour != (int)h ||
	    back.tm_min != (int)mi || back.tm_sec != (int)se)
		return -EINVAL;
	*ret = (uint64_t)t;
	return 0;
}

/* "N", "Ns", "Nm", "Nh" */
static int parse_duration(const char *s, uint64_t *ret)
{
	size_t n = strlen(s);
	uint64_t mul = 1;
	char num[32];
	if (n == 0 || n >= sizeof(num))
		return -EINVAL;
	memcpy(num, s, n + 1);
	switch (num[n - 1]) {
	case 'h':
		mul = 3600;
		num[--n] = 0;
		break;
	case 'm':
		mul = 60;
		num[--n] = 0;
		break;
	case 's':
		num[--n] = 0;
		break;
	}
	uint64_t v;
	if (phi_parse_u64(num, TIME_MAX / 3600, &v) < 0 || v == 0)
		return -EINVAL;
	*ret = v * mul;
	return 0;
}

static void fmt_time(uint64_t t, char buf[32])
{
	time_t tt = (time_t)t;
	struct tm tm;
	if (t > TIME_MAX || !gmtime_r(&tt, &tm) || !strftime(buf, 32, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(buf, 32, "%" PRIu64, t);
}

/* ---- opening ---- */

static int open_store(const struct args *a, bool write, struct phi_admin *ad)
{
	char msg[512];
	if (phi_admin_open(a->store, a->key_file, false, ad, msg, sizeof(msg)) < 0)
		return err(1, "%s", msg);
	if (write && phi_admin_lock_dir(ad, a->store, "grants", msg, sizeof(msg)) < 0)
		return err(1, "%s", msg);
	return 0;
}

static void granted_by(struct phi_grant *g)
{
	uid_t uid = getuid();
	struct passwd pw, *res = NULL;
	char buf[4096];
	g->granted_by_uid = (uint32_t)uid;
	g->granted_by_name[0] = 0;
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 && res &&
	    strlen(pw.pw_name) <= PHI_GRANT_NAME_MAX)
		memcpy(g->granted_by_name, pw.pw_name, strlen(pw.pw_name) + 1);
}

/* The fields common to add and emergency: principal and patient (which must exist). */
static int fill_who(const struct args *a, struct phi_admin *ad, struct phi_grant *g)
{
	int r = phi_principal_parse(a->principal, &g->principal_kind, &g->principal_id,
				    g->principal_name);
	if (r == -ENOENT)
		return err(1, "unknown %s: %s",
			   !strncmp(a->principal, "group:", 6) ? "group" : "user", a->principal);
	if (r < 0)
		return err(2, "--principal must be user:NAME, user:UID, group:NAME or group:GID");
	if (strcmp(a->patient, PHI_GRANT_ALL) != 0) {
		struct phi_pkeys *pk;
		r = phi_patient_load(ad->kr, a->patient, &pk);
		if (r == -EINVAL)
			return err(2, "invalid patient id (allowed: [A-Za-z0-9_.-]{1,64}, not starting with '.')");
		if (r == -ENOENT)
			return err(1, "no such patient");
		if (r == -EBADMSG)
			return err(1, "the patient's key file on the store is corrupt");
		if (r < 0)
			return err(1, "cannot look up the patient: %s", strerror(-r));
		bool shredded = pk->shredded;
		phi_pkeys_free(pk);
		if (shredded)
			return err(1, "patient was shredded");
	}
	memcpy(g->patient, a->patient, strlen(a->patient) + 1);
	granted_by(g);
	return 0;
}

static int write_grant(const struct args *a, struct phi_admin *ad, struct phi_grant *g,
		       enum phi_audit_ev event)
{
	const char *why = NULL;
	/* the rules first: a grant that breaks one is refused without a record */
	phi_grant_new_id(g->id);
	g->created = (uint64_t)time(NULL);
	int r = phi_grant_validate(g, &why);
	if (r == -EINVAL && why)
		return err(1, "refused: %s", why);
	_cleanup_(phi_admin_audit_done) struct phi_admin_audit au = { 0 };
	r = audit_begin(a, ad, &au, event, g);
	if (r)
		return r;
	r = phi_grants_add_as(ad->kr, ad->s, g, &why);
	if (r < 0)
		audit_failed(&au, event, g, r);
	if (r == -EINVAL && why)
		return err(1, "refused: %s", why);
	if (r == -E2BIG)
		return err(1, "too many grants for this patient (%d); revoke and clean up first",
			   PHI_GRANTS_PER_FILE_MAX);
	if (r == -EBADMSG)
		return err(1, "the patient's grant file on the store is corrupt or tampered with");
	if (r < 0)
		return err(1, "cannot write the grant: %s", strerror(-r));
	puts(g->id);
	return 0;
}

/* ---- commands ---- */

static int cmd_add(const struct args *a)
{
	if (!a->principal || !a->patient || !a->role)
		return err(2, "add needs --principal, --patient and --role");
	if (!!a->for_ == !!a->until)
		return err(2, "add needs one of --for DURATION or --until TIME");
	if (a->reason)
		return err(2, "--reason is for the emergency command");
	struct phi_grant g = { 0 };
	enum phi_role role;
	enum phi_purpose purpose;
	if (phi_role_parse(a->role, &role) < 0)
		return err(2, "unknown role (service, provider, job, admin, auditor)");
	if (a->purpose) {
		if (phi_purpose_parse(a->purpose, &purpose) < 0)
			return err(2, "unknown purpose (treatment, payment, operations, research, job)");
	} else
		purpose = role == PHI_ROLE_PROVIDER ? PHI_PURPOSE_TREATMENT
			  : role == PHI_ROLE_JOB    ? PHI_PURPOSE_JOB
						    : PHI_PURPOSE_OPERATIONS;
	if (purpose == PHI_PURPOSE_EMERGENCY)
		return err(2, "emergency access is granted by the emergency command");
	uint64_t now = (uint64_t)time(NULL), nb = now, span = 0, until = 0;
	if (a->not_before && parse_time(a->not_before, &nb) < 0)
		return err(2, "--not-before: not a time (2026-12-05T10:00:00Z or epoch seconds)");
	if (a->until && parse_time(a->until, &until) < 0)
		return err(2, "--until: not a time (2026-12-05T10:00:00Z or epoch seconds)");
	if (a->for_ && parse_duration(a->for_, &span) < 0)
		return err(2, "--for: not a duration (N, Ns, Nm or Nh)");
	g.role = (uint8_t)role;
	g.purpose = (uint8_t)purpose;
	g.not_before = nb;
	g.expiry = a->for_ ? nb + span : until;
	if (g.expiry <= now)
		return err(1, "refused: the grant would already be expired");
	if (a->consent) {
		if (strlen(a->consent) > PHI_GRANT_CONSENT_MAX)
			return err(2, "--consent: at most %d bytes", PHI_GRANT_CONSENT_MAX);
		memcpy(g.consent, a->consent, strlen(a->consent) + 1);
	}
	struct phi_admin ad = { .lock_fd = -1, .dir_fd = -1 };
	int r = open_store(a, true, &ad);
	if (r == 0)
		r = fill_who(a, &ad, &g);
	if (r == 0)
		r = write_grant(a, &ad, &g, PHI_AE_GRANT_CREATE);
	phi_admin_done(&ad);
	return r;
}

static int cmd_emergency(const struct args *a)
{
	if (!a->principal || !a->patient || !a->reason)
		return err(2, "emergency needs --principal, --patient and --reason");
	if (a->until || a->not_before || a->role || a->purpose || a->consent)
		return err(2, "emergency takes only --principal, --patient, --reason and --for");
	if (!a->reason[0])
		return err(1, "refused: an emergency grant needs a reason");
	if (strlen(a->reason) > PHI_GRANT_REASON_MAX)
		return err(1, "refused: the reason must be at most %d bytes", PHI_GRANT_REASON_MAX);
	uint64_t span = 3600;
	if (a->for_ && parse_duration(a->for_, &span) < 0)
		return err(2, "--for: not a duration (N, Ns, Nm or Nh)");
	if (!strcmp(a->patient, PHI_GRANT_ALL))
		return err(1, "refused: emergency access is for one patient");
	uint64_t now = (uint64_t)time(NULL);
	struct phi_grant g = {
		.role = PHI_ROLE_PROVIDER,
		.purpose = PHI_PURPOSE_EMERGENCY,
		.emergency = true,
		.not_before = now,
		.expiry = now + span,
	};
	memcpy(g.reason, a->reason, strlen(a->reason) + 1);
	struct phi_admin ad = { .lock_fd = -1, .dir_fd = -1 };
	int r = open_store(a, true, &ad);
	if (r == 0)
		r = fill_who(a, &ad, &g);
	if (r == 0)
		r = write_grant(a, &ad, &g, PHI_AE_EMERGENCY);
	phi_admin_done(&ad);
	if (r == 0) {
		char ex[32];
		fmt_time(g.expiry, ex);
		fprintf(stderr, "phifs-grant: EMERGENCY access granted until %s; every use is "
				"flagged and alerted\n", ex);
	}
	return r;
}

/* The grant named id (for its audit record before the revocation); -ENOENT when no
 * readable grant file has it. */
static int find_grant(struct phi_admin *ad, const char *id, struct phi_grant *ret)
{
	struct phi_grant *g = NULL;
	size_t n = 0;
	int r = phi_grants_list(ad->kr, ad->s, NULL, &g, &n);
	if (r < 0)
		return r;
	r = -ENOENT;
	for (size_t i = 0; i < n; i++)
		if (!strcmp(g[i].id, id)) {
			*ret = g[i];
			r = 0;
			break;
		}
	phi_wipe_free(g, n * sizeof(*g));
	return r;
}

static int cmd_revoke(const struct args *a, const char *id)
{
	struct phi_admin ad = { .lock_fd = -1, .dir_fd = -1 };
	_cleanup_(phi_admin_audit_done) struct phi_admin_audit au = { 0 };
	int r = open_store(a, true, &ad);
	struct phi_grant g, old = { 0 };
	/* a malformed id is refused by phi_grants_revoke without a change or a record */
	bool record = strlen(id) == PHI_GRANT_ID_LEN;
	if (r == 0 && record) {
		/* name the grant in the record; one that cannot be read now (a corrupt grant
		 * file elsewhere) is recorded by its id alone */
		if (find_grant(&ad, id, &old) < 0) {
			old = (struct phi_grant){ .principal_kind = PHI_PRINCIPAL_USER,
						    .principal_name = "unknown" };
			memcpy(old.id, id, PHI_GRANT_ID_LEN + 1);
		}
		r = audit_begin(a, &ad, &au, PHI_AE_GRANT_REVOKE, &old);
	}
	if (r == 0) {
		r = phi_grants_revoke(ad.kr, ad.s, id, (uint64_t)time(NULL), (uint32_t)getuid(), &g);
		if (r < 0 && record)
			audit_failed(&au, PHI_AE_GRANT_REVOKE, &old, r);
		if (r == -EINVAL)
			r = err(2, "malformed grant id (g- and 16 hex digits)");
		else if (r == -ENOENT)
			r = err(1, "no such grant");
		else if (r == -EALREADY)
			r = err(1, "grant already revoked");
		else if (r == -EBADMSG)
			r = err(1, "no such grant among the readable grant files; some are corrupt");
		else if (r < 0)
			r = err(1, "cannot revoke: %s", strerror(-r));
		else
			printf("revoked %s\n", id);
	}
	phi_admin_done(&ad);
	return r;
}

static const char *state_name(const struct phi_grant *g, uint64_t now)
{
	switch (phi_grant_state(g, now)) {
	case PHI_DENY_NONE:
		return "active";
	case PHI_DENY_REVOKED:
		return "revoked";
	case PHI_DENY_NOT_YET_VALID:
		return "not-yet-valid";
	default:
		return "expired";
	}
}

static int print_json(const struct phi_grant *g, size_t n, uint64_t now)
{
	cJSON *arr = cJSON_CreateArray();
	if (!arr)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		char p[PHI_GRANT_NAME_MAX + 8], nb[32], ex[32], cr[32], rv[32];
		phi_principal_format(&g[i], p, sizeof(p));
		fmt_time(g[i].not_before, nb);
		fmt_time(g[i].expiry, ex);
		fmt_time(g[i].created, cr);
		fmt_time(g[i].revoked_at, rv);
		cJSON *o = cJSON_CreateObject();
		if (!o || !cJSON_AddItemToArray(arr, o)) {
			cJSON_Delete(o);
			cJSON_Delete(arr);
			return -ENOMEM;
		}
		bool ok = cJSON_AddStringToObject(o, "id", g[i].id) &&
			  cJSON_AddStringToObject(o, "principal", p) &&
			  cJSON_AddNumberToObject(o, "principal_id", g[i].principal_id) &&
			  cJSON_AddStringToObject(o, "patient", g[i].patient) &&
			  cJSON_AddStringToObject(o, "role", phi_role_name(g[i].role)) &&
			  cJSON_AddStringToObject(o, "purpose", phi_purpose_name(g[i].purpose)) &&
			  cJSON_AddStringToObject(o, "not_before", nb) &&
			  cJSON_AddStringToObject(o, "expiry", ex) &&
			  cJSON_AddStringToObject(o, "state", state_name(&g[i], now)) &&
			  cJSON_AddBoolToObject(o, "emergency", g[i].emergency) &&
			  cJSON_AddStringToObject(o, "consent", g[i].consent) &&
			  cJSON_AddStringToObject(o, "reason", g[i].reason) &&
			  cJSON_AddStringToObject(o, "created", cr) &&
			  cJSON_AddNumberToObject(o, "granted_by_uid", g[i].granted_by_uid) &&
			  cJSON_AddStringToObject(o, "granted_by", g[i].granted_by_name) &&
			  (!g[i].revoked ||
			   (cJSON_AddStringToObject(o, "revoked_at", rv) &&
			    cJSON_AddNumberToObject(o, "revoked_by_uid", g[i].revoked_by_uid)));
		if (!ok) {
			cJSON_Delete(arr);
			return -ENOMEM;
		}
	}
	char *s = cJSON_Print(arr);
	cJSON_Delete(arr);
	if (!s)
		return -ENOMEM;
	puts(s);
	cJSON_free(s);
	return 0;
}

static int cmd_list(const struct args *a)
{
	struct phi_admin ad = { .lock_fd = -1, .dir_fd = -1 };
	int r = open_store(a, false, &ad);
	if (r) {
		phi_admin_done(&ad);
		return r;
	}
	struct phi_grant *g = NULL;
	size_t n = 0;
	r = phi_grants_list(ad.kr, ad.s, a->patient, &g, &n);
	phi_admin_done(&ad);
	if (r == -EINVAL)
		return err(2, "invalid patient id (allowed: [A-Za-z0-9_.-]{1,64}, not starting with '.')");
	if (r == -EBADMSG)
		return err(1, "a grant file on the store is corrupt or tampered with");
	if (r < 0)
		return err(1, "cannot list grants: %s", strerror(-r));
	uint64_t now = (uint64_t)time(NULL);
	if (a->json) {
		r = print_json(g, n, now);
		if (r < 0)
			r = err(1, "out of memory");
	} else
		for (size_t i = 0; i < n; i++) {
			char p[PHI_GRANT_NAME_MAX + 8], nb[32], ex[32];
			phi_principal_format(&g[i], p, sizeof(p));
			fmt_time(g[i].not_before, nb);
			fmt_time(g[i].expiry, ex);
			printf("%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", g[i].id, p, g[i].patient,
			       phi_role_name(g[i].role), phi_purpose_name(g[i].purpose), nb, ex,
			       state_name(&g[i], now), g[i].emergency ? "emergency" : "-",
			       g[i].consent[0] ? g[i].consent : "-");
		}
	phi_wipe_free(g, n * sizeof(*g));
	return r;
}

int main(int argc, char *argv[])
{
	(void)prctl(PR_SET_DUMPABLE, 0);
	(void)setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 });

	enum { O_PRINCIPAL = 256, O_PATIENT, O_ROLE, O_PURPOSE, O_CONSENT, O_REASON, O_NB, O_FOR,
	       O_UNTIL, O_JSON };
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "audit-socket", required_argument, NULL, 'a' },
		{ "principal", required_argument, NULL, O_PRINCIPAL },
		{ "patient", required_argument, NULL, O_PATIENT },
		{ "role", required_argument, NULL, O_ROLE },
		{ "purpose", required_argument, NULL, O_PURPOSE },
		{ "consent", required_argument, NULL, O_CONSENT },
		{ "reason", required_argument, NULL, O_REASON },
		{ "not-before", required_argument, NULL, O_NB },
		{ "for", required_argument, NULL, O_FOR },
		{ "until", required_argument, NULL, O_UNTIL },
		{ "json", no_argument, NULL, O_JSON },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	struct args a = { 0 };
	int o;
	while ((o = getopt_long(argc, argv, "s:k:h", opts, NULL)) != -1) {
		switch (o) {
		case 's': a.store = optarg; break;
		case 'k': a.key_file = optarg; break;
		case 'a': a.audit_socket = optarg; break;
		case O_PRINCIPAL: a.principal = optarg; break;
		case O_PATIENT: a.patient = optarg; break;
		case O_ROLE: a.role = optarg; break;
		case O_PURPOSE: a.purpose = optarg; break;
		case O_CONSENT: a.consent = optarg; break;
		case O_REASON: a.reason = optarg; break;
		case O_NB: a.not_before = optarg; break;
		case O_FOR: a.for_ = optarg; break;
		case O_UNTIL: a.until = optarg; break;
		case O_JSON: a.json = true; break;
		case 'h': usage(stdout); return 0;
		default: return usage(stderr);
		}
	}
	if (!a.store || optind >= argc)
		return usage(stderr);
	const char *cmd = argv[optind];
	int nargs = argc - optind - 1;
	bool known = !strcmp(cmd, "add") || !strcmp(cmd, "emergency") || !strcmp(cmd, "list") ||
		     !strcmp(cmd, "revoke");
	if (!known)
		return err(2, "unknown command (see --help)");
	if (nargs != (!strcmp(cmd, "revoke") ? 1 : 0))
		return usage(stderr);
	if (strcmp(cmd, "list") != 0 && a.json)
		return err(2, "--json is for list");
	if (phi_crypto_init() < 0)
		return err(1, "cannot initialise the crypto library");
	if (!strcmp(cmd, "add"))
		return cmd_add(&a);
	if (!strcmp(cmd, "emergency"))
		return cmd_emergency(&a);
	if (!strcmp(cmd, "list")) {
		if (a.principal || a.role || a.purpose || a.consent || a.reason || a.not_before ||
		    a.for_ || a.until)
			return err(2, "list takes only --patient and --json");
		return cmd_list(&a);
	}
	return cmd_revoke(&a, argv[optind + 1]);
}
