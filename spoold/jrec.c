/* jrec.c: job journal / result record <-> JSON (cJSON). */
#include "jrec.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "job.h"
#include "phifs/util.h"

static const char *const state_names[JS__N] = { "received", "queued", "starting",
						 "running",  "done",   "failed" };
static const char *const tier_names[] = { "small", "medium", "large" };

const char *jstate_name(enum jstate s)
{
	return (unsigned)s < JS__N ? state_names[s] : "?";
}

uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

void fmt_time_ms(uint64_t ms, char out[64])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
		 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
}

void jrec_init(struct jrec *r, const char *id)
{
	*r = (struct jrec){ .version = JREC_VERSION, .tier = -1, .exit_status = -1, .priority = 5 };
	snprintf(r->id, sizeof r->id, "%s", id);
}

void jrec_event(struct jrec *r, const char *what, uint64_t at_ms)
{
	size_t i = r->nhist < JREC_HIST_MAX ? r->nhist++ : JREC_HIST_MAX - 1;
	snprintf(r->hist[i].what, sizeof r->hist[i].what, "%s", what);
	r->hist[i].at_ms = at_ms;
}

void jrec_set_state(struct jrec *r, enum jstate s, uint64_t at_ms)
{
	r->state = s;
	jrec_event(r, jstate_name(s), at_ms);
}

static int add_num(cJSON *o, const char *k, double v)
{
	return cJSON_AddNumberToObject(o, k, v) ? 0 : -ENOMEM;
}
static int add_str(cJSON *o, const char *k, const char *v)
{
	return cJSON_AddStringToObject(o, k, v) ? 0 : -ENOMEM;
}
static int add_time(cJSON *o, const char *k, uint64_t ms)
{
	char t[64];
	if (!ms)
		return cJSON_AddNullToObject(o, k) ? 0 : -ENOMEM;
	fmt_time_ms(ms, t);
	return add_str(o, k, t);
}

int jrec_format(const struct jrec *r, bool result, char **ret)
{
	cJSON *o = cJSON_CreateObject();
	if (!o)
		return -ENOMEM;
	int e = 0;
	char usd[32];
	e |= add_num(o, "version", r->version);
	e |= add_str(o, "id", r->id);
	e |= add_str(o, "state", jstate_name(r->state));
	e |= add_num(o, "attempt", r->attempt);
	e |= add_num(o, "failures", r->failures);
	e |= add_num(o, "priority", r->priority);
	e |= add_num(o, "submitter_uid", r->submitter_uid);
	e |= add_str(o, "tier", r->tier >= 0 && r->tier < 3 ? tier_names[r->tier] : "");
	e |= add_num(o, "gpus", r->gpus);
	e |= add_num(o, "estimated_tokens", (double)r->est_tokens);
	e |= add_str(o, "backend", r->backend);
	e |= add_str(o, "backend_id", r->backend_id);
	e |= add_str(o, "slurm_id", r->slurm_id);
	e |= add_num(o, "pid", (double)r->pid);
	e |= add_num(o, "starttime", (double)r->starttime);
	e |= add_str(o, "slots", r->slots);
	e |= add_str(o, "grant", r->grant);
	e |= cJSON_AddBoolToObject(o, "cancel_requested", r->cancel_requested) ? 0 : -ENOMEM;
	e |= cJSON_AddBoolToObject(o, "lifetime_exceeded", r->lifetime_exceeded) ? 0 : -ENOMEM;
	e |= cJSON_AddBoolToObject(o, "deferred", r->deferred) ? 0 : -ENOMEM;
	e |= add_num(o, "received_ms", (double)r->received_ms);
	e |= add_num(o, "started_ms", (double)r->started_ms);
	e |= add_num(o, "ended_ms", (double)r->ended_ms);
	e |= add_num(o, "next_try_ms", (double)r->next_try_ms);
	e |= add_num(o, "deadline_ms", (double)r->deadline_ms);
	e |= add_num(o, "exit_status", r->exit_status);
	e |= add_num(o, "signal", r->term_signal);
	e |= add_num(o, "tokens_in", (double)r->tokens_in);
	e |= add_num(o, "tokens_out", (double)r->tokens_out);
	e |= add_num(o, "cost_micro_usd", (double)r->cost_micro);
	e |= add_str(o, "reason", r->reason);
	if (result) {
		snprintf(usd, sizeof usd, "%llu.%06llu", (unsigned long long)(r->cost_micro / 1000000),
			 (unsigned long long)(r->cost_micro % 1000000));
		e |= add_str(o, "cost_usd", usd);
		e |= add_time(o, "received", r->received_ms);
		e |= add_time(o, "started", r->started_ms);
		e |= add_time(o, "ended", r->ended_ms);
		e |= add_num(o, "duration_sec",
			     r->started_ms && r->ended_ms > r->started_ms
				     ? (double)(r->ended_ms - r->started_ms) / 1000.0
				     : 0);
	}
	cJSON *h = cJSON_AddArrayToObject(o, "history");
	if (!h)
		e = -ENOMEM;
	for (size_t i = 0; h && i < r->nhist; i++) {
		cJSON *ev = cJSON_CreateObject();
		if (!ev || !cJSON_AddItemToArray(h, ev)) {
			cJSON_Delete(ev);
			e = -ENOMEM;
			break;
		}
		e |= add_str(ev, "what", r->hist[i].what);
		e |= add_num(ev, "at_ms", (double)r->hist[i].at_ms);
		if (result)
			e |= add_time(ev, "at", r->hist[i].at_ms);
	}
	char *s = NULL;
	if (!e)
		s = result ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
	cJSON_Delete(o);
	if (!s)
		return -ENOMEM;
	*ret = s;
	return 0;
}

static int get_u64(const cJSON *o, const char *k, uint64_t max, uint64_t *v)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
	if (!cJSON_IsNumber(it) || !(it->valuedouble >= 0 && it->valuedouble <= (double)max))
		return -EBADMSG;
	*v = (uint64_t)it->valuedouble;
	return 0;
}
static int get_i(const cJSON *o, const char *k, int min, int max, int *v)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
	if (!cJSON_IsNumber(it) || !(it->valuedouble >= min && it->valuedouble <= max))
		return -EBADMSG;
	*v = (int)it->valuedouble;
	return 0;
}
static int get_s(const cJSON *o, const char *k, char *dst, size_t cap)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
	if (!cJSON_IsString(it) || !it->valuestring || strlen(it->valuestring) >= cap)
		return -EBADMSG;
	strcpy(dst, it->valuestring);
	return 0;
}
static int get_b(const cJSON *o, const char *k, bool *v)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
	if (!cJSON_IsBool(it))
		return -EBADMSG;
	*v = cJSON_IsTrue(it);
	return 0;
}

int jrec_parse(const void *buf, size_t len, struct jrec *ret)
{
	if (len > JREC_MAX_BYTES)
		return -EFBIG;
	cJSON *o = cJSON_ParseWithLength(buf, len);
	if (!o)
		return -EBADMSG;
	struct jrec r;
	jrec_init(&r, "");
	uint64_t v = 0, ms = 1ULL << 52;
	char st[16], tier[16];
	int e = 0, sig = 0;
	e |= get_u64(o, "version", UINT32_MAX, &v);
	if (!e && v != JREC_VERSION)
		e = -EPROTONOSUPPORT;
	e |= get_s(o, "id", r.id, sizeof r.id);
	e |= get_s(o, "state", st, sizeof st);
	e |= get_u64(o, "attempt", 1000, &v), r.attempt = (uint32_t)v;
	e |= get_u64(o, "failures", 1000, &v), r.failures = (uint32_t)v;
	e |= get_i(o, "priority", 0, 9, &r.priority);
	e |= get_u64(o, "submitter_uid", UINT32_MAX, &v), r.submitter_uid = (uint32_t)v;
	e |= get_s(o, "tier", tier, sizeof tier);
	e |= get_u64(o, "gpus", 64, &v), r.gpus = (uint32_t)v;
	e |= get_u64(o, "estimated_tokens", ms, &r.est_tokens);
	e |= get_s(o, "backend", r.backend, sizeof r.backend);
	e |= get_s(o, "backend_id", r.backend_id, sizeof r.backend_id);
	e |= get_s(o, "slurm_id", r.slurm_id, sizeof r.slurm_id);
	e |= get_u64(o, "pid", INT32_MAX, &v), r.pid = (int64_t)v;
	e |= get_u64(o, "starttime", ms, &r.starttime);
	e |= get_s(o, "slots", r.slots, sizeof r.slots);
	e |= get_s(o, "grant", r.grant, sizeof r.grant);
	e |= get_b(o, "cancel_requested", &r.cancel_requested);
	e |= get_b(o, "lifetime_exceeded", &r.lifetime_exceeded);
	e |= get_b(o, "deferred", &r.deferred);
	e |= get_u64(o, "received_ms", ms, &r.received_ms);
	e |= get_u64(o, "started_ms", ms, &r.started_ms);
	e |= get_u64(o, "ended_ms", ms, &r.ended_ms);
	e |= get_u64(o, "next_try_ms", ms, &r.next_try_ms);
	e |= get_u64(o, "deadline_ms", ms, &r.deadline_ms);
	e |= get_i(o, "exit_status", -1, 255, &r.exit_status);
	e |= get_i(o, "signal", 0, 128, &sig), r.term_signal = sig;
	e |= get_u64(o, "tokens_in", ms, &r.tokens_in);
	e |= get_u64(o, "tokens_out", ms, &r.tokens_out);
	e |= get_u64(o, "cost_micro_usd", ms, &r.cost_micro);
	e |= get_s(o, "reason", r.reason, sizeof r.reason);
	if (!e) {
		r.state = JS__N;
		for (int i = 0; i < JS__N; i++)
			if (!strcmp(st, state_names[i]))
				r.state = (enum jstate)i;
		if (r.state == JS__N || job_id_valid(r.id) < 0)
			e = -EBADMSG;
		r.tier = -1;
		for (int i = 0; i < 3; i++)
			if (!strcmp(tier, tier_names[i]))
				r.tier = i;
		if (tier[0] && r.tier < 0)
			e = -EBADMSG;
	}
	const cJSON *h = cJSON_GetObjectItemCaseSensitive(o, "history");
	if (!e && !cJSON_IsArray(h))
		e = -EBADMSG;
	for (const cJSON *ev = h ? h->child : NULL; !e && ev; ev = ev->next) {
		if (r.nhist >= JREC_HIST_MAX) {
			e = -EBADMSG;
			break;
		}
		struct jrec_ev *x = &r.hist[r.nhist++];
		e |= get_s(ev, "what", x->what, sizeof x->what);
		e |= get_u64(ev, "at_ms", ms, &x->at_ms);
	}
	cJSON_Delete(o);
	if (e)
		return -EBADMSG;
	*ret = r;
	return 0;
}
