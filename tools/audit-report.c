/* audit-report.c: report and watch over the records of a log directory. */
#include "audit-report.h"

#include <inttypes.h>
#include <time.h>

#define NS 1000000000LL
#define TOP_MAX 512 /* distinct keys kept per counter (bounded memory) */

struct counter {
	char key[128];
	uint64_t n;
};

struct tally {
	struct counter c[TOP_MAX];
	size_t n;
	uint64_t other; /* hits past TOP_MAX distinct keys */
};

static void bump(struct tally *t, const char *key)
{
	const char *k = key[0] ? key : "(none)";
	for (size_t i = 0; i < t->n; i++)
		if (!strcmp(t->c[i].key, k)) {
			t->c[i].n++;
			return;
		}
	if (t->n == TOP_MAX) {
		t->other++;
		return;
	}
	snprintf(t->c[t->n].key, sizeof(t->c[t->n].key), "%.127s", k); /* long keys are cut */
	t->c[t->n++].n = 1;
}

static int cmp_counter(const void *a, const void *b)
{
	const struct counter *x = a, *y = b;
	return x->n < y->n ? 1 : x->n > y->n ? -1 : strcmp(x->key, y->key);
}

static bool is_access(const struct phi_audit_event *e)
{
	return e->event >= PHI_AE_OPEN && e->event <= PHI_AE_READDIR;
}

static bool is_emergency(const struct phi_audit_event *e)
{
	return e->event == PHI_AE_EMERGENCY || !strcmp(e->why.purpose, "ETREAT") ||
	       !strcmp(e->why.purpose, "emergency");
}

static bool expired_attempt(const struct phi_audit_record *r)
{
	return (r->ev.event == PHI_AE_DENY || r->ev.outcome == 4 || is_access(&r->ev)) &&
	       r->ev.why.grant_exp_ns && r->ts_ns >= r->ev.why.grant_exp_ns;
}

static bool after_hours(int64_t ts, unsigned from, unsigned to)
{
	if (from == to)
		return true;
	time_t t = (time_t)(ts / NS);
	struct tm tm;
	gmtime_r(&t, &tm);
	unsigned h = (unsigned)tm.tm_hour;
	return from < to ? (h < from || h >= to) : (h < from && h >= to);
}

/* ---- report ---- */

struct rep {
	int64_t from, to;
	uint64_t records, accesses, denials, emergencies, expired, after_hours, alerts, audit_events;
	struct tally by_role, by_purpose, top, denied_by, alert_rules;
};

static int rep_one(void *ctx, const struct phi_audit_record *r)
{
	struct rep *p = ctx;
	const struct phi_audit_event *e = &r->ev;
	if (r->ts_ns < p->from || (p->to && r->ts_ns >= p->to))
		return 0;
	p->records++;
	if (is_access(e) && e->outcome == 0) {
		p->accesses++;
		bump(&p->by_role, e->actor.role);
		bump(&p->by_purpose, e->why.purpose);
		bump(&p->top, e->actor.principal);
		if (after_hours(r->ts_ns, 6, 22))
			p->after_hours++;
	}
	if (e->event == PHI_AE_DENY || (is_access(e) && e->outcome == 4)) {
		p->denials++;
		bump(&p->denied_by, e->actor.principal);
	}
	if (is_emergency(e))
		p->emergencies++;
	if (expired_attempt(r))
		p->expired++;
	if (e->event == PHI_AE_ALERT) {
		char rule[sizeof(e->detail)];
		const char *s = strstr(e->detail, "rule=");
		snprintf(rule, sizeof(rule), "%s", s ? s + 5 : e->detail);
		rule[strcspn(rule, " ")] = 0;
		p->alerts++;
		bump(&p->alert_rules, rule);
	}
	if (e->event >= PHI_AE_AUDIT_START && e->event <= PHI_AE_AUDIT_DEGRADED && e->outcome != 0)
		p->audit_events++;
	return 0;
}

static void md_table(FILE *f, const char *title, const char *col, struct tally *t, size_t max)
{
	qsort(t->c, t->n, sizeof(t->c[0]), cmp_counter);
	fprintf(f, "\n## %s\n\n| %s | count |\n| --- | ---: |\n", title, col);
	for (size_t i = 0; i < t->n && i < max; i++)
		fprintf(f, "| %s | %" PRIu64 " |\n", t->c[i].key, t->c[i].n);
	if (t->n == 0)
		fputs("| (none) | 0 |\n", f);
}

static void html_esc(FILE *f, const char *s)
{
	for (; *s; s++) {
		switch (*s) {
		case '<': fputs("&lt;", f); break;
		case '>': fputs("&gt;", f); break;
		case '&': fputs("&amp;", f); break;
		case '"': fputs("&quot;", f); break;
		default: fputc(*s, f);
		}
	}
}

/* A horizontal bar chart as inline SVG (no scripts, no external resources). */
static void html_chart(FILE *f, const char *title, const struct tally *t, size_t max)
{
	size_t n = t->n < max ? t->n : max;
	uint64_t top = n ? t->c[0].n : 1;
	fprintf(f, "<h2>");
	html_esc(f, title);
	fprintf(f, "</h2>\n<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"640\" height=\"%zu\" role=\"img\">\n",
		n * 24 + 8);
	for (size_t i = 0; i < n; i++) {
		unsigned w = (unsigned)(t->c[i].n * 400 / (top ? top : 1));
		fprintf(f, "<text x=\"0\" y=\"%zu\" font-size=\"12\">", i * 24 + 18);
		html_esc(f, t->c[i].key);
		fprintf(f, "</text><rect x=\"180\" y=\"%zu\" width=\"%u\" height=\"18\" fill=\"#3b6ea5\"/>"
			   "<text x=\"%u\" y=\"%zu\" font-size=\"12\">%" PRIu64 "</text>\n",
			i * 24 + 4, w ? w : 1, 186 + w, i * 24 + 18, t->c[i].n);
	}
	fputs("</svg>\n", f);
	if (!n)
		fputs("<p>(none)</p>\n", f);
}

int phi_audit_report(const char *log_dir, int64_t from_ns, int64_t to_ns, FILE *md, FILE *html)
{
	struct rep *p = calloc(1, sizeof(*p));
	char a[32], b[32];
	if (!p)
		return -ENOMEM;
	p->from = from_ns;
	p->to = to_ns;
	int r = phi_audit_foreach(log_dir, rep_one, p);
	if (r < 0) {
		free(p);
		return r;
	}
	time_t t1 = (time_t)(from_ns / NS), t2 = (time_t)(to_ns / NS);
	struct tm tm;
	strftime(a, sizeof(a), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t1, &tm));
	if (to_ns)
		strftime(b, sizeof(b), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&t2, &tm));
	else
		snprintf(b, sizeof(b), "now");
	qsort(p->by_role.c, p->by_role.n, sizeof(p->by_role.c[0]), cmp_counter);
	qsort(p->by_purpose.c, p->by_purpose.n, sizeof(p->by_purpose.c[0]), cmp_counter);
	qsort(p->top.c, p->top.n, sizeof(p->top.c[0]), cmp_counter);
	qsort(p->denied_by.c, p->denied_by.n, sizeof(p->denied_by.c[0]), cmp_counter);
	qsort(p->alert_rules.c, p->alert_rules.n, sizeof(p->alert_rules.c[0]), cmp_counter);
	const struct {
		const char *name;
		uint64_t v;
	} sum[] = {
		{ "records", p->records },
		{ "successful accesses", p->accesses },
		{ "denials", p->denials },
		{ "emergency accesses", p->emergencies },
		{ "attempts under expired grants", p->expired },
		{ "accesses outside 06:00-22:00 UTC", p->after_hours },
		{ "alerts", p->alerts },
		{ "audit-system failures (recovery, degraded)", p->audit_events },
	};
	if (md) {
		fprintf(md, "# phifs audit report %s to %s\n\n| measure | count |\n| --- | ---: |\n", a, b);
		for (size_t i = 0; i < ARRAY_SIZE(sum); i++)
			fprintf(md, "| %s | %" PRIu64 " |\n", sum[i].name, sum[i].v);
		md_table(md, "Accesses by role", "role", &p->by_role, 50);
		md_table(md, "Accesses by purpose", "purpose", &p->by_purpose, 50);
		md_table(md, "Top accessors", "principal", &p->top, 10);
		md_table(md, "Denials by principal", "principal", &p->denied_by, 10);
		md_table(md, "Anomalies (alerts by rule)", "rule", &p->alert_rules, 50);
	}
	if (html) {
		fprintf(html, "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>phifs audit report</title>"
			      "<style>body{font-family:sans-serif;max-width:760px;margin:2em auto}"
			      "td,th{border-bottom:1px solid #ccc;padding:2px 8px}</style></head><body>\n"
			      "<h1>phifs audit report %s to %s</h1>\n<table>\n", a, b);
		for (size_t i = 0; i < ARRAY_SIZE(sum); i++)
			fprintf(html, "<tr><td>%s</td><td>%" PRIu64 "</td></tr>\n", sum[i].name, sum[i].v);
		fputs("</table>\n", html);
		html_chart(html, "Accesses by role", &p->by_role, 20);
		html_chart(html, "Accesses by purpose", &p->by_purpose, 20);
		html_chart(html, "Top accessors", &p->top, 10);
		html_chart(html, "Denials by principal", &p->denied_by, 10);
		html_chart(html, "Anomalies (alerts by rule)", &p->alert_rules, 20);
		fputs("</body></html>\n", html);
	}
	free(p);
	return 0;
}

/* ---- watch ---- */

#define WATCH_PRINCIPALS 1024

struct pstate {
	char principal[128];
	int64_t deny_ts[64]; /* ring of the last deny_max denial times */
	unsigned deny_n;
	int64_t minute;
	unsigned minute_n;
};

struct watch {
	const struct phi_audit_watch_opts *o;
	uint64_t last_seq, hits;
	struct pstate *ps;
	size_t nps;
	int err;
};

static struct pstate *pstate(struct watch *w, const char *principal)
{
	for (size_t i = 0; i < w->nps; i++)
		if (!strcmp(w->ps[i].principal, principal))
			return &w->ps[i];
	size_t i = w->nps < WATCH_PRINCIPALS ? w->nps++ : (size_t)(principal[0]) % WATCH_PRINCIPALS;
	memset(&w->ps[i], 0, sizeof(w->ps[i])); /* full: reuse a slot (bounded memory) */
	snprintf(w->ps[i].principal, sizeof(w->ps[i].principal), "%s", principal);
	return &w->ps[i];
}

static void hit(struct watch *w, const struct phi_audit_record *r, const char *rule)
{
	struct phi_audit_event ev = r->ev;
	char t[32];
	time_t tt = (time_t)(r->ts_ns / NS);
	struct tm tm;
	strftime(t, sizeof(t), "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&tt, &tm));
	printf("ALERT rule=%s seq=%" PRIu64 " time=%s principal=%s role=%s event=%s patient=%s\n", rule,
	       r->seq, t, ev.actor.principal, ev.actor.role, phi_audit_ev_name(ev.event),
	       ev.obj.patient[0] ? ev.obj.patient : "-");
	fflush(stdout);
	w->hits++;
	if (!w->o->client)
		return;
	/* the alert names the offending actor and object; "why" is the rule */
	ev.event = PHI_AE_ALERT;
	ev.action = 'E';
	ev.outcome = 0;
	ev.err = 0;
	memset(&ev.why, 0, sizeof(ev.why));
	snprintf(ev.detail, sizeof(ev.detail), "rule=%s seq=%" PRIu64, rule, r->seq);
	uint64_t seq;
	int e = phi_audit_submit(w->o->client, &ev, &seq);
	if (e < 0)
		fprintf(stderr, "phifs-audit: watch: writing an alert record failed: %s\n", strerror(-e));
}

static int watch_one(void *ctx, const struct phi_audit_record *r)
{
	struct watch *w = ctx;
	const struct phi_audit_watch_opts *o = w->o;
	const struct phi_audit_event *e = &r->ev;
	if (r->seq <= w->last_seq)
		return 0;
	w->last_seq = r->seq;
	if (e->event == PHI_AE_ALERT || e->event >= PHI_AE_AUDIT_START)
		return 0;
	bool access = is_access(e), denied = e->event == PHI_AE_DENY || e->outcome == 4;
	if ((access || denied) && expired_attempt(r))
		hit(w, r, "grant-window");
	if ((!strcmp(e->actor.role, "admin") || !strcmp(e->actor.role, "auditor")) && e->obj.patient[0])
		hit(w, r, "non-phi-role");
	if (is_emergency(e))
		hit(w, r, "emergency");
	if (access && e->outcome == 0 && after_hours(r->ts_ns, o->work_from, o->work_to))
		hit(w, r, "after-hours");
	struct pstate *p = pstate(w, e->actor.principal);
	unsigned dmax = o->deny_max ? o->deny_max : 5;
	if (dmax > ARRAY_SIZE(p->deny_ts))
		dmax = ARRAY_SIZE(p->deny_ts);
	if (denied) {
		int64_t win = (int64_t)(o->deny_window_s ? o->deny_window_s : 600) * NS;
		p->deny_ts[p->deny_n++ % dmax] = r->ts_ns;
		/* the oldest of the last dmax denials is within the window */
		if (p->deny_n >= dmax && r->ts_ns - p->deny_ts[p->deny_n % dmax] <= win) {
			hit(w, r, "repeated-denials");
			p->deny_n = 0;
		}
	}
	if (access) {
		int64_t m = r->ts_ns / (60 * NS);
		if (m != p->minute) {
			p->minute = m;
			p->minute_n = 0;
		}
		if (++p->minute_n == (o->spike_max ? o->spike_max : 100))
			hit(w, r, "volume-spike");
	}
	return 0;
}

int phi_audit_watch(const struct phi_audit_watch_opts *o, uint64_t *ret_hits)
{
	struct watch w = { .o = o, .last_seq = o->from_seq };
	w.ps = calloc(WATCH_PRINCIPALS, sizeof(*w.ps));
	if (!w.ps)
		return -ENOMEM;
	int r;
	for (;;) {
		/* v1 rescans the directory each pass (simple; cost grows with the log) */
		r = phi_audit_foreach(o->log_dir, watch_one, &w);
		if (r < 0 || o->once)
			break;
		struct timespec ts = { .tv_sec = (o->interval_ms ? o->interval_ms : 1000) / 1000,
				       .tv_nsec = (long)((o->interval_ms ? o->interval_ms : 1000) % 1000) * 1000000 };
		nanosleep(&ts, NULL);
	}
	free(w.ps);
	if (r == 0 && ret_hits)
		*ret_hits = w.hits;
	return r;
}
