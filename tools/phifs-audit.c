/* phifs-audit: verify, query and manage the phifs audit log (docs/audit-format.md).
 *
 *   phifs-audit keygen --out DIR [--name NAME]
 *   phifs-audit lookup-key [--key-file MASTER] --out FILE
 *   phifs-audit verify --dir LOGDIR --export-dir DIR --pubkey FILE [--pubkey FILE...] [--max-gap S]
 *                      [--json]   (several keys: the log's keys over time, oldest first)
 *   phifs-audit fetch-checkpoints --export-url az://ACCOUNT/CONTAINER[/PREFIX] [--export-opts OPTS]
 *                      --out DIR   (the notes of the append blobs, as files verify reads)
 *   phifs-audit query --dir LOGDIR [--patient ID|pt:..] [--principal P] [--role R] [--event E]
 *                     [--outcome N] [--from T] [--to T] [--format table|json|csv]
 *                     [--lookup-key FILE]
 *   phifs-audit report --dir LOGDIR [--from T] [--to T] [--out-md FILE] [--out-html FILE]
 *   phifs-audit watch --dir LOGDIR [--socket PATH] [--work-hours A-B] [--deny-max N]
 *                     [--spike-max N] [--once]
 *   phifs-audit pseudonym --lookup-key FILE (--patient ID | --path PATH)
 *   phifs-audit resolve --lookup-key FILE PSEUDONYM
 *   phifs-audit submit --socket PATH --event E [--action A] [--outcome N] [--principal P]
 *                      [--role R] [--patient pt:PSEUDONYM] [--purpose P] [--grant-exp T]
 *                      [--detail TEXT]
 *
 * Times (T): seconds since the epoch, or YYYY-MM-DDTHH:MM:SSZ.
 * verify exits 0 ok, 1 tampered, 2 unverifiable; other commands 0 ok, 1 error, 2 usage.
 */
#include <getopt.h>
#include <inttypes.h>
#include <sys/prctl.h>
#include <time.h>

#include "phifs/audit-client.h"
#include "phifs/audit-export.h"
#include "phifs/audit.h"
#include "phifs/keys.h"
#include "tools/audit-report.h"

struct args {
	const char *out, *name, *key_file, *dir, *export_dir, *pubkey, *patient, *path, *principal,
		*role, *event, *format, *lookup_key, *socket, *action, *detail, *out_md, *out_html, *purpose,
		*export_url, *export_opts;
	int64_t grant_exp_ns;
	const char *pubkeys[PHI_AUDIT_VKEYS_MAX];
	size_t npubkeys;
	bool too_many_keys;
	unsigned work_from, work_to, deny_max, spike_max;
	bool once;
	int outcome;
	int64_t from_ns, to_ns;
	uint64_t max_gap;
	bool json;
};

static int err(const char *what, int r)
{
	fprintf(stderr, "phifs-audit: %s: %s\n", what, strerror(r < 0 ? -r : r));
	return 1;
}

static int parse_time(const char *s, int64_t *ret)
{
	uint64_t v;
	struct tm tm = { 0 };
	if (phi_parse_u64(s, INT64_MAX / 1000000000, &v) == 0) {
		*ret = (int64_t)v * 1000000000;
		return 0;
	}
	const char *e = strptime(s, "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (!e || *e)
		return -EINVAL;
	*ret = (int64_t)timegm(&tm) * 1000000000;
	return 0;
}

static void fmt_time(int64_t ns, char out[32])
{
	time_t t = (time_t)(ns / 1000000000);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(out, 32, "%Y-%m-%dT%H:%M:%SZ", &tm);
}

/* ---- verify ---- */

static void json_str(FILE *f, const char *s)
{
	fputc('"', f);
	for (; *s; s++) {
		if (*s == '"' || *s == '\\')
			fprintf(f, "\\%c", *s);
		else if ((unsigned char)*s < 0x20)
			fprintf(f, "\\u%04x", (unsigned char)*s);
		else
			fputc(*s, f);
	}
	fputc('"', f);
}

static int cmd_verify(const struct args *a)
{
	struct phi_audit_vkey vk[PHI_AUDIT_VKEYS_MAX];
	struct phi_audit_verify_result res;
	struct phi_audit_verify_opts o = { .max_gap_s = a->max_gap };
	static const char *const st[] = { "ok", "tampered", "unverifiable" };
	if (!a->dir || !a->export_dir || !a->npubkeys || a->too_many_keys)
		return 2;
	for (size_t k = 0; k < a->npubkeys; k++) {
		int r = phi_audit_vkey_load(a->pubkeys[k], &vk[k]);
		if (r < 0) {
			err("cannot load the public key", r);
			return 2;
		}
	}
	phi_audit_verify_keys(a->dir, a->export_dir, vk, a->npubkeys, &o, &res);
	if (a->json) {
		printf("{\"status\":\"%s\",\"exit\":%d,\"segments\":%" PRIu64 ",\"records\":%" PRIu64
		       ",\"checkpoints_local\":%" PRIu64 ",\"checkpoints_exported\":%" PRIu64
		       ",\"checkpoints_not_exported\":%" PRIu64 ",\"verified_size\":%" PRIu64
		       ",\"unverified_tail\":%" PRIu64 ",\"torn_tail\":%s,\"warnings\":%" PRIu64
		       ",\"reason\":",
		       st[res.status], res.status, res.segments, res.records, res.ckpt_local,
		       res.ckpt_exported, res.ckpt_exported_missing, res.verified_size,
		       res.unverified_tail, res.torn_tail ? "true" : "false", res.warnings);
		json_str(stdout, res.reason);
		fputs(",\"warning\":", stdout);
		json_str(stdout, res.warning);
		fputs("}\n", stdout);
	} else {
		printf("%s: %" PRIu64 " records in %" PRIu64 " segments, %" PRIu64
		       " checkpoints (%" PRIu64 " exported); verified through seq %" PRIu64
		       ", unverified tail %" PRIu64 "\n",
		       st[res.status], res.records, res.segments, res.ckpt_local, res.ckpt_exported,
		       res.verified_size, res.unverified_tail);
		if (res.reason[0])
			printf("reason: %s\n", res.reason);
		if (res.warnings)
			printf("warnings: %" PRIu64 " (first: %s)\n", res.warnings, res.warning);
	}
	return res.status;
}

/* ---- fetch-checkpoints ---- */

/* Download the checkpoint notes exported to Azure append blobs into a directory, so that
 * verify checks the log against them exactly as against an export directory. Exit codes
 * as verify's: 0 ok, 1 the blobs are damaged or hold a duplicated or missing note, 2 they
 * could not be read. */
static int cmd_fetch(const struct args *a)
{
	char why[512];
	uint64_t n = 0;
	if (!a->export_url || !a->out) {
		fputs("phifs-audit: fetch-checkpoints needs --export-url and --out\n", stderr);
		return 2;
	}
	int r = phi_audit_export_fetch(a->export_url, a->export_opts, a->out, &n, why, sizeof(why));
	if (r == -EBADMSG && why[0]) {
		printf("tampered: %s\n", why);
		return 1;
	}
	if (r < 0) {
		err("cannot fetch the exported checkpoints", r);
		return 2;
	}
	printf("fetched %" PRIu64 " checkpoints\n", n);
	return 0;
}

/* ---- query ---- */

struct qctx {
	const struct args *a;
	struct phi_key *lk;
	char patient[PHI_AUDIT_PSEUDO_PATIENT_MAX];
	enum phi_audit_ev ev;
	int fmt; /* 0 table, 1 json, 2 csv */
	uint64_t n;
};

static void csv_str(const char *s)
{
	putchar('"');
	for (; *s; s++) {
		if (*s == '"')
			putchar('"');
		putchar(*s);
	}
	putchar('"');
}

static int q_one(void *ctx, const struct phi_audit_record *rec)
{
	struct qctx *q = ctx;
	const struct args *a = q->a;
	const struct phi_audit_event *e = &rec->ev;
	if ((q->patient[0] && strcmp(e->obj.patient, q->patient) != 0) ||
	    (a->principal && strcmp(e->actor.principal, a->principal) != 0) ||
	    (a->role && strcmp(e->actor.role, a->role) != 0) || (a->event && e->event != q->ev) ||
	    (a->outcome >= 0 && e->outcome != a->outcome) || (a->from_ns && rec->ts_ns < a->from_ns) ||
	    (a->to_ns && rec->ts_ns >= a->to_ns))
		return 0;
	char patient[PHI_AUDIT_PSEUDO_PATH_MAX + 1], path[PHI_AUDIT_PSEUDO_PATH_MAX + 1], t[32];
	snprintf(patient, sizeof(patient), "%s", e->obj.patient);
	snprintf(path, sizeof(path), "%s", e->obj.path);
	if (q->lk && e->obj.patient[0] &&
	    phi_audit_resolve(q->lk, e->obj.patient, patient, sizeof(patient)) < 0)
		snprintf(patient, sizeof(patient), "?%s", e->obj.patient);
	if (q->lk && e->obj.path[0] && phi_audit_resolve(q->lk, e->obj.path, path, sizeof(path)) < 0)
		snprintf(path, sizeof(path), "?%s", e->obj.path);
	fmt_time(rec->ts_ns, t);
	q->n++;
	if (q->fmt == 1) {
		struct phi_buf b _cleanup_buf_;
		phi_buf_init(&b, PHI_AUDIT_RECORD_MAX);
		if (phi_audit_encode_record(rec, &b) < 0)
			return -EINVAL;
		if (q->lk) {
			fputs("{\"record\":", stdout);
			fwrite(b.p, 1, b.len, stdout);
			fputs(",\"patient_id\":", stdout);
			json_str(stdout, patient);
			fputs(",\"path_plain\":", stdout);
			json_str(stdout, path);
			fputs("}\n", stdout);
		} else {
			fwrite(b.p, 1, b.len, stdout);
			putchar('\n');
		}
		return 0;
	}
	const char *cols[] = { t, phi_audit_ev_name(e->event), e->actor.principal, e->actor.role,
			       patient, path, e->why.purpose, e->why.grant, e->detail };
	if (q->fmt == 2) {
		printf("%" PRIu64 ",", rec->seq);
		for (size_t i = 0; i < ARRAY_SIZE(cols); i++) {
			csv_str(cols[i]);
			putchar(',');
		}
		printf("%c,%u,%d,%" PRIu32 "\n", e->action, e->outcome, e->err, e->actor.uid);
		return 0;
	}
	printf("%-8" PRIu64 " %-20s %-14s %c %2u %-6" PRIu32 " %-16s %-9s %-24.24s %-8s %s\n", rec->seq,
	       t, cols[1], e->action, e->outcome, e->actor.uid, e->actor.principal, e->actor.role,
	       patient, e->why.purpose, e->detail);
	return 0;
}

static int cmd_query(const struct args *a)
{
	struct qctx q = { .a = a };
	if (!a->dir)
		return 2;
	q.fmt = !a->format || !strcmp(a->format, "table") ? 0 : !strcmp(a->format, "json") ? 1
		: !strcmp(a->format, "csv") ? 2 : -1;
	if (q.fmt < 0 || (a->event && phi_audit_ev_from_name(a->event, &q.ev) < 0))
		return 2;
	int r;
	if (a->lookup_key && (r = phi_audit_lookup_key_load(a->lookup_key, &q.lk)) < 0)
		return err("cannot load the lookup key", r);
	if (a->patient) {
		if (!strncmp(a->patient, "pt:", 3))
			snprintf(q.patient, sizeof(q.patient), "%s", a->patient);
		else if (!q.lk) {
			fputs("phifs-audit: --patient ID needs --lookup-key (or give the pt: pseudonym)\n", stderr);
			return 2;
		} else if ((r = phi_audit_pseudonym(q.lk, PHI_AUDIT_PATIENT, a->patient, q.patient,
						    sizeof(q.patient))) < 0) {
			phi_key_free(q.lk);
			return err("bad patient id", r);
		}
	}
	if (q.fmt == 2)
		puts("seq,time,event,principal,role,patient,path,purpose,grant,detail,action,outcome,errno,uid");
	else if (q.fmt == 0)
		printf("%-8s %-20s %-14s %s %2s %-6s %-16s %-9s %-24s %-8s %s\n", "SEQ", "TIME", "EVENT",
		       "A", "OC", "UID", "PRINCIPAL", "ROLE", "PATIENT", "PURPOSE", "DETAIL");
	r = phi_audit_foreach(a->dir, q_one, &q);
	phi_key_free(q.lk);
	if (r < 0)
		return err("reading the log", r);
	return 0;
}

/* ---- keys and pseudonyms ---- */

static int cmd_keygen(const struct args *a)
{
	char host[64] = "localhost", name[PHI_AUDIT_NAME_MAX];
	if (!a->out)
		return 2;
	(void)gethostname(host, sizeof(host) - 1);
	snprintf(name, sizeof(name), "phi-audit/%s", host);
	int r = phi_audit_keygen(a->out, a->name ? a->name : name);
	if (r < 0)
		return err("keygen", r);
	printf("%s/%s (secret, 0600) and %s/%s written\n", a->out, PHI_AUDIT_CRED_NAME, a->out,
	       PHI_AUDIT_PUB_NAME);
	return 0;
}

static int cmd_lookup_key(const struct args *a)
{
	struct phi_key *m = NULL, *lk = NULL;
	if (!a->out)
		return 2;
	int r = phi_master_load(a->key_file, &m);
	if (r < 0)
		return err("cannot load the master key", r);
	r = phi_audit_lookup_key(m, &lk);
	phi_key_free(m);
	if (r == 0)
		r = phi_audit_lookup_key_write(a->out, lk);
	phi_key_free(lk);
	return r < 0 ? err("writing the lookup key", r) : 0;
}

static int cmd_pseudonym(const struct args *a, int argc, char **argv)
{
	struct phi_key *lk = NULL;
	char out[PHI_AUDIT_PSEUDO_PATH_MAX];
	bool resolve = !strcmp(argv[0], "resolve");
	if (!a->lookup_key || (resolve ? argc != 2 : !a->patient == !a->path))
		return 2;
	int r = phi_audit_lookup_key_load(a->lookup_key, &lk);
	if (r < 0)
		return err("cannot load the lookup key", r);
	if (resolve)
		r = phi_audit_resolve(lk, argv[1], out, sizeof(out));
	else
		r = phi_audit_pseudonym(lk, a->patient ? PHI_AUDIT_PATIENT : PHI_AUDIT_PATH,
					a->patient ? a->patient : a->path, out, sizeof(out));
	phi_key_free(lk);
	if (r < 0)
		return err(resolve ? "resolve" : "pseudonym", r);
	puts(out);
	return 0;
}

static int cmd_submit(const struct args *a)
{
	struct phi_audit_event ev = { .action = a->action ? a->action[0] : 'E' };
	struct phi_audit_client *c;
	uint64_t seq;
	if (!a->socket || !a->event || phi_audit_ev_from_name(a->event, &ev.event) < 0)
		return 2;
	ev.outcome = a->outcome >= 0 ? (uint8_t)a->outcome : 0;
	ev.actor.uid = (uint32_t)getuid();
	ev.actor.gid = (uint32_t)getgid();
	ev.actor.pid = (uint32_t)getpid();
	snprintf(ev.actor.comm, sizeof(ev.actor.comm), "phifs-audit");
	snprintf(ev.actor.principal, sizeof(ev.actor.principal), "%s", a->principal ? a->principal : "");
	snprintf(ev.actor.role, sizeof(ev.actor.role), "%s", a->role ? a->role : "");
	snprintf(ev.detail, sizeof(ev.detail), "%s", a->detail ? a->detail : "");
	snprintf(ev.obj.patient, sizeof(ev.obj.patient), "%s", a->patient ? a->patient : "");
	snprintf(ev.why.purpose, sizeof(ev.why.purpose), "%s", a->purpose ? a->purpose : "");
	ev.why.grant_exp_ns = a->grant_exp_ns;
	int r = phi_audit_client_open(a->socket, &c);
	if (r == 0) {
		r = phi_audit_submit(c, &ev, &seq);
		phi_audit_client_free(c);
	}
	if (r < 0)
		return err("submit", r);
	printf("%" PRIu64 "\n", seq);
	return 0;
}

static int cmd_report(const struct args *a)
{
	if (!a->dir)
		return 2;
	_cleanup_fclose_ FILE *md = a->out_md ? fopen(a->out_md, "we") : NULL;
	_cleanup_fclose_ FILE *html = a->out_html ? fopen(a->out_html, "we") : NULL;
	if ((a->out_md && !md) || (a->out_html && !html))
		return err("cannot create the report", errno);
	int r = phi_audit_report(a->dir, a->from_ns, a->to_ns, md ? md : a->out_html ? NULL : stdout,
				 html);
	return r < 0 ? err("report", r) : 0;
}

static int cmd_watch(const struct args *a)
{
	struct phi_audit_watch_opts o = { .log_dir = a->dir, .work_from = a->work_from,
					  .work_to = a->work_to, .deny_max = a->deny_max,
					  .spike_max = a->spike_max, .once = a->once };
	uint64_t hits = 0;
	if (!a->dir)
		return 2;
	if (a->socket) {
		int r = phi_audit_client_open(a->socket, &o.client);
		if (r < 0)
			return err("cannot open the audit socket", r);
	}
	int r = phi_audit_watch(&o, &hits);
	phi_audit_client_free(o.client);
	if (r < 0)
		return err("watch", r);
	if (a->once)
		fprintf(stderr, "phifs-audit: watch: %" PRIu64 " alerts\n", hits);
	return 0;
}

static int usage(void)
{
	fputs("usage: phifs-audit COMMAND [OPTIONS]\n"
	      "  keygen --out DIR [--name NAME]\n"
	      "  lookup-key [--key-file MASTER] --out FILE\n"
	      "  verify --dir LOGDIR --export-dir DIR --pubkey FILE [--pubkey FILE...] [--max-gap S] [--json]\n"
	      "  fetch-checkpoints --export-url az://ACCOUNT/CONTAINER[/PREFIX] [--export-opts OPTS] --out DIR\n"
	      "  query --dir LOGDIR [--patient ID|pt:..] [--principal P] [--role R] [--event E]\n"
	      "        [--outcome N] [--from T] [--to T] [--format table|json|csv] [--lookup-key FILE]\n"
	      "  report --dir LOGDIR [--from T] [--to T] [--out-md FILE] [--out-html FILE]\n"
	      "  watch --dir LOGDIR [--socket PATH] [--work-hours A-B] [--deny-max N] [--spike-max N] [--once]\n"
	      "  pseudonym --lookup-key FILE (--patient ID | --path PATH)\n"
	      "  resolve --lookup-key FILE PSEUDONYM\n"
	      "  submit --socket PATH --event E [--action A] [--outcome N] [--principal P] [--role R]\n"
	      "         [--patient pt:PSEUDONYM] [--purpose P] [--grant-exp T] [--detail T]\n",
	      stderr);
	return 2;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "out", required_argument, NULL, 'o' },     { "name", required_argument, NULL, 'N' },
		{ "key-file", required_argument, NULL, 'K' }, { "dir", required_argument, NULL, 'd' },
		{ "export-dir", required_argument, NULL, 'e' }, { "pubkey", required_argument, NULL, 'p' },
		{ "patient", required_argument, NULL, 'P' }, { "path", required_argument, NULL, 'F' },
		{ "principal", required_argument, NULL, 'u' }, { "role", required_argument, NULL, 'r' },
		{ "event", required_argument, NULL, 'E' },   { "outcome", required_argument, NULL, 'O' },
		{ "from", required_argument, NULL, 'f' },    { "to", required_argument, NULL, 't' },
		{ "format", required_argument, NULL, 'm' },  { "lookup-key", required_argument, NULL, 'L' },
		{ "max-gap", required_argument, NULL, 'g' }, { "json", no_argument, NULL, 'j' },
		{ "socket", required_argument, NULL, 's' },  { "action", required_argument, NULL, 'a' },
		{ "detail", required_argument, NULL, 'D' },  { "out-md", required_argument, NULL, 'M' },
		{ "out-html", required_argument, NULL, 'H' }, { "work-hours", required_argument, NULL, 'W' },
		{ "deny-max", required_argument, NULL, 'x' }, { "spike-max", required_argument, NULL, 'y' },
		{ "once", no_argument, NULL, '1' },          { "purpose", required_argument, NULL, 'U' },
		{ "grant-exp", required_argument, NULL, 'X' }, { "export-url", required_argument, NULL, 'R' },
		{ "export-opts", required_argument, NULL, 'Q' }, { 0 },
	};
	struct args a = { .outcome = -1, .work_from = 6, .work_to = 22 };
	uint64_t v;
	int c;
	(void)prctl(PR_SET_DUMPABLE, 0); /* may hold the master or lookup key */
	if (argc < 2)
		return usage();
	/* COMMAND first; getopt then sees it as its argv[0] */
	const char *cmd = argv[1];
	argc--;
	argv++;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'o': a.out = optarg; break;
		case 'N': a.name = optarg; break;
		case 'K': a.key_file = optarg; break;
		case 'd': a.dir = optarg; break;
		case 'e': a.export_dir = optarg; break;
		case 'p':
			a.pubkey = optarg;
			if (a.npubkeys < PHI_AUDIT_VKEYS_MAX)
				a.pubkeys[a.npubkeys++] = optarg;
			else
				a.too_many_keys = true;
			break;
		case 'P': a.patient = optarg; break;
		case 'F': a.path = optarg; break;
		case 'u': a.principal = optarg; break;
		case 'r': a.role = optarg; break;
		case 'E': a.event = optarg; break;
		case 'm': a.format = optarg; break;
		case 'L': a.lookup_key = optarg; break;
		case 's': a.socket = optarg; break;
		case 'a': a.action = optarg; break;
		case 'D': a.detail = optarg; break;
		case 'j': a.json = true; break;
		case 'M': a.out_md = optarg; break;
		case 'U': a.purpose = optarg; break;
		case 'X':
			if (parse_time(optarg, &a.grant_exp_ns) < 0)
				return usage();
			break;
		case 'H': a.out_html = optarg; break;
		case 'R': a.export_url = optarg; break;
		case 'Q': a.export_opts = optarg; break;
		case '1': a.once = true; break;
		case 'W':
			if (sscanf(optarg, "%u-%u", &a.work_from, &a.work_to) != 2 || a.work_from > 24 ||
			    a.work_to > 24)
				return usage();
			break;
		case 'x':
		case 'y':
			if (phi_parse_u64(optarg, 100000, &v) < 0 || v == 0)
				return usage();
			*(c == 'x' ? &a.deny_max : &a.spike_max) = (unsigned)v;
			break;
		case 'O':
			if (phi_parse_u64(optarg, 12, &v) < 0)
				return usage();
			a.outcome = (int)v;
			break;
		case 'g':
			if (phi_parse_u64(optarg, 86400 * 366, &a.max_gap) < 0)
				return usage();
			break;
		case 'f':
		case 't':
			if (parse_time(optarg, c == 'f' ? &a.from_ns : &a.to_ns) < 0)
				return usage();
			break;
		default:
			return usage();
		}
	}
	if (phi_crypto_init() < 0)
		return 1;
	int rest = argc - optind;
	int r = 2;
	if (!strcmp(cmd, "verify") && rest == 0)
		r = cmd_verify(&a);
	else if (!strcmp(cmd, "fetch-checkpoints") && rest == 0)
		r = cmd_fetch(&a);
	else if (!strcmp(cmd, "query") && rest == 0)
		r = cmd_query(&a);
	else if (!strcmp(cmd, "keygen") && rest == 0)
		r = cmd_keygen(&a);
	else if (!strcmp(cmd, "lookup-key") && rest == 0)
		r = cmd_lookup_key(&a);
	else if (!strcmp(cmd, "pseudonym") && rest == 0)
		r = cmd_pseudonym(&a, 1, (char *[]){ "pseudonym" });
	else if (!strcmp(cmd, "resolve") && rest == 1)
		r = cmd_pseudonym(&a, 2, (char *[]){ "resolve", argv[optind] });
	else if (!strcmp(cmd, "report") && rest == 0)
		r = cmd_report(&a);
	else if (!strcmp(cmd, "watch") && rest == 0)
		r = cmd_watch(&a);
	else if (!strcmp(cmd, "submit") && rest == 0)
		r = cmd_submit(&a);
	else
		return usage();
	if (r == 2 && strcmp(cmd, "verify") != 0 && strcmp(cmd, "fetch-checkpoints") != 0)
		return usage();
	return r;
}
