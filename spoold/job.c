/* job.c: the job file parser. cJSON parses the bounded buffer; then every field is checked
 * by a table of known keys, so unknown and duplicate keys are refused too. */
#include "job.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "phifs/util.h"

static const char *const purposes[] = { "treatment", "payment", "operations", "research" };

int job_id_valid(const char *id)
{
	if (!id || !*id || id[0] == '.')
		return -EINVAL;
	size_t n = 0;
	for (const char *p = id; *p; p++, n++) {
		char c = *p;
		if (n >= JOB_ID_MAX)
			return -EINVAL;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return -EINVAL;
	}
	return 0;
}

int job_doc_valid(const char *doc, const char **problem)
{
	size_t n = strlen(doc);
	const char *pr = NULL;
	if (n == 0)
		pr = "empty path";
	else if (n > JOB_DOC_MAX)
		pr = "path longer than 255 bytes";
	else if (doc[0] == '/')
		pr = "absolute path not allowed";
	if (!pr) {
		for (const char *p = doc; *p; p++) {
			unsigned char c = (unsigned char)*p;
			if (c < 0x20 || c == 0x7f) {
				pr = "control character in path";
				break;
			}
			if (c == '\\') {
				pr = "backslash in path";
				break;
			}
		}
	}
	/* components: no '..', no '.', no empty one (a//b, trailing /) */
	for (const char *s = doc; !pr && *s;) {
		const char *e = strchr(s, '/');
		size_t l = e ? (size_t)(e - s) : strlen(s);
		if (l == 0)
			pr = "empty path component";
		else if (l == 2 && s[0] == '.' && s[1] == '.')
			pr = "'..' not allowed";
		else if (l == 1 && s[0] == '.')
			pr = "'.' component not allowed";
		if (!e)
			break;
		s = e + 1;
		if (!*s)
			pr = "empty path component";
	}
	if (pr) {
		if (problem)
			*problem = pr;
		return -EINVAL;
	}
	return 0;
}

const char *job_task_name(enum job_task t)
{
	switch (t) {
	case JOB_SUMMARIZE:
		return "summarize";
	case JOB_EXTRACT:
		return "extract";
	case JOB_QUESTION:
		return "question";
	}
	return "?";
}

static int digits(const char *s, int n, int *v)
{
	int x = 0;
	for (int i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		x = x * 10 + (s[i] - '0');
	}
	*v = x;
	return 0;
}

int job_parse_time(const char *s, uint64_t *ret_ms)
{
	int Y, M, D, h, m, sec, ms = 0;
	size_t n = strlen(s);
	if (n < 20 || s[4] != '-' || s[7] != '-' || s[10] != 'T' || s[13] != ':' || s[16] != ':')
		return -EINVAL;
	if (digits(s, 4, &Y) < 0 || digits(s + 5, 2, &M) < 0 || digits(s + 8, 2, &D) < 0 ||
	    digits(s + 11, 2, &h) < 0 || digits(s + 14, 2, &m) < 0 || digits(s + 17, 2, &sec) < 0)
		return -EINVAL;
	const char *p = s + 19;
	if (*p == '.') {
		if (n != 24 || digits(p + 1, 3, &ms) < 0)
			return -EINVAL;
		p += 4;
	}
	if (p[0] != 'Z' || p[1] != 0)
		return -EINVAL;
	if (Y < 1970 || M < 1 || M > 12 || D < 1 || D > 31 || h > 23 || m > 59 || sec > 60)
		return -EINVAL;
	struct tm tm = { .tm_year = Y - 1900, .tm_mon = M - 1, .tm_mday = D,
			 .tm_hour = h, .tm_min = m, .tm_sec = sec };
	time_t t = timegm(&tm);
	if (t < 0 || tm.tm_mday != D) /* timegm normalises 31 Feb to 3 Mar */
		return -EINVAL;
	*ret_ms = (uint64_t)t * 1000 + (uint64_t)ms;
	return 0;
}

struct job *job_free(struct job *j)
{
	if (!j)
		return NULL;
	for (size_t i = 0; i < j->ndocuments; i++)
		free(j->documents[i]);
	free(j->prompt);
	free(j);
	return NULL;
}

static int get_uint(const cJSON *it, uint64_t min, uint64_t max, uint64_t *ret)
{
	if (!cJSON_IsNumber(it))
		return -EINVAL;
	double d = it->valuedouble;
	if (!(d >= (double)min && d <= (double)max))
		return -ERANGE;
	uint64_t v = (uint64_t)d;
	if ((double)v != d)
		return -ERANGE; /* not an integer */
	*ret = v;
	return 0;
}

/* A string field of at most max bytes, printable (no control characters). */
static int get_str(const cJSON *it, size_t max, const char **ret, const char **problem)
{
	if (!cJSON_IsString(it) || !it->valuestring) {
		*problem = "must be a string";
		return -EINVAL;
	}
	size_t n = strlen(it->valuestring);
	if (n == 0) {
		*problem = "must not be empty";
		return -EINVAL;
	}
	if (n > max) {
		*problem = "too long";
		return -EINVAL;
	}
	*ret = it->valuestring;
	return 0;
}

enum {
	F_VERSION, F_ID, F_PATIENT, F_DOCUMENTS, F_TASK, F_PROMPT, F_MODEL, F_MAX_TOKENS,
	F_PRIORITY, F_REQUESTED_BY, F_PURPOSE, F_DEADLINE, F_ESTIMATED_TOKENS, F__N
};
static const char *const field_names[F__N] = {
	"version", "id", "patient", "documents", "task", "prompt", "model", "max_tokens",
	"priority", "requested_by", "purpose", "deadline", "estimated_tokens",
};
static const bool field_required[F__N] = {
	[F_VERSION] = true, [F_ID] = true, [F_PATIENT] = true, [F_DOCUMENTS] = true,
	[F_TASK] = true, [F_MODEL] = true, [F_MAX_TOKENS] = true, [F_REQUESTED_BY] = true,
	[F_PURPOSE] = true,
};

/* Copy a key for an error message: printable ASCII only, at most 32 bytes. */
static void safe_key(const char *k, char out[40])
{
	size_t o = 0;
	for (; k && *k && o < 32; k++)
		out[o++] = (*k >= 0x21 && *k < 0x7f) ? *k : '?';
	out[o] = 0;
	if (k && *k)
		strcpy(out + o, "...");
}

static int parse_fields(const cJSON *root, struct job *j, char *err, size_t errlen)
{
	const cJSON *f[F__N] = { 0 };
	const char *pr;
	uint64_t v;
	int r;

	if (!cJSON_IsObject(root))
		return phi_errf(err, errlen, -EINVAL, "(top level): must be a JSON object");
	for (const cJSON *it = root->child; it; it = it->next) {
		size_t k;
		for (k = 0; k < F__N; k++)
			if (it->string && strcmp(it->string, field_names[k]) == 0)
				break;
		char kk[40];
		safe_key(it->string, kk);
		if (k == F__N)
			return phi_errf(err, errlen, -EINVAL, "%s: unknown field", kk);
		if (f[k])
			return phi_errf(err, errlen, -EINVAL, "%s: duplicate field", kk);
		f[k] = it;
	}
	for (size_t k = 0; k < F__N; k++)
		if (field_required[k] && !f[k])
			return phi_errf(err, errlen, -EINVAL, "%s: missing", field_names[k]);

	if (get_uint(f[F_VERSION], 0, UINT32_MAX, &v) < 0)
		return phi_errf(err, errlen, -EINVAL, "version: must be an integer");
	if (v != JOB_VERSION)
		return phi_errf(err, errlen, -EINVAL, "version: unsupported (this spoold reads %d)",
			    JOB_VERSION);
	j->version = (uint32_t)v;

	const char *s;
	if (get_str(f[F_ID], JOB_ID_MAX, &s, &pr) < 0)
		return phi_errf(err, errlen, -EINVAL, "id: %s", pr);
	if (job_id_valid(s) < 0)
		return phi_errf(err, errlen, -EINVAL,
			    "id: only A-Z a-z 0-9 _ . - allowed, not starting with '.'");
	strcpy(j->id, s);
	if (get_str(f[F_PATIENT], JOB_ID_MAX, &s, &pr) < 0)
		return phi_errf(err, errlen, -EINVAL, "patient: %s", pr);
	if (job_id_valid(s) < 0)
		return phi_errf(err, errlen, -EINVAL,
			    "patient: only A-Z a-z 0-9 _ . - allowed, not starting with '.'");
	strcpy(j->patient, s);

	const cJSON *docs = f[F_DOCUMENTS];
	if (!cJSON_IsArray(docs))
		return phi_errf(err, errlen, -EINVAL, "documents: must be an array of strings");
	size_t nd = 0;
	for (const cJSON *d = docs->child; d; d = d->next, nd++) {
		if (nd >= JOB_MAX_DOCS)
			return phi_errf(err, errlen, -EINVAL, "documents: more than %d entries",
				    JOB_MAX_DOCS);
		if (!cJSON_IsString(d) || !d->valuestring)
			return phi_errf(err, errlen, -EINVAL, "documents[%zu]: must be a string", nd);
		if (job_doc_valid(d->valuestring, &pr) < 0)
			return phi_errf(err, errlen, -EINVAL, "documents[%zu]: %s", nd, pr);
		j->documents[nd] = strdup(d->valuestring);
		if (!j->documents[nd])
			return -ENOMEM;
		j->ndocuments = nd + 1;
	}
	if (nd == 0)
		return phi_errf(err, errlen, -EINVAL, "documents: must not be empty");

	if (get_str(f[F_TASK], 16, &s, &pr) < 0)
		return phi_errf(err, errlen, -EINVAL, "task: %s", pr);
	if (strcmp(s, "summarize") == 0)
		j->task = JOB_SUMMARIZE;
	else if (strcmp(s, "extract") == 0)
		j->task = JOB_EXTRACT;
	else if (strcmp(s, "question") == 0)
		j->task = JOB_QUESTION;
	else
		return phi_errf(err, errlen, -EINVAL, "task: must be summarize, extract or question");
	if (f[F_PROMPT]) {
		if (j->task == JOB_SUMMARIZE)
			return phi_errf(err, errlen, -EINVAL, "prompt: not allowed with task summarize");
		if (get_str(f[F_PROMPT], JOB_PROMPT_MAX, &s, &pr) < 0)
			return phi_errf(err, errlen, -EINVAL, "prompt: %s", pr);
		j->prompt = strdup(s);
		if (!j->prompt)
			return -ENOMEM;
	} else if (j->task == JOB_QUESTION)
		return phi_errf(err, errlen, -EINVAL, "prompt: missing (required with task question)");

	if (get_str(f[F_MODEL], JOB_MODEL_MAX, &s, &pr) < 0)
		return phi_errf(err, errlen, -EINVAL, "model: %s", pr);
	if (job_doc_valid(s, &pr) < 0)
		return phi_errf(err, errlen, -EINVAL, "model: %s", pr);
	strcpy(j->model, s);

	r = get_uint(f[F_MAX_TOKENS], 1, JOB_MAX_TOKENS, &v);
	if (r < 0)
		return phi_errf(err, errlen, -EINVAL, "max_tokens: %s",
			    r == -ERANGE ? "must be an integer from 1 to 32768" : "must be a number");
	j->max_tokens = (uint32_t)v;

	j->priority = 5;
	if (f[F_PRIORITY]) {
		r = get_uint(f[F_PRIORITY], 0, 9, &v);
		if (r < 0)
			return phi_errf(err, errlen, -EINVAL, "priority: %s",
				    r == -ERANGE ? "must be an integer from 0 to 9" : "must be a number");
		j->priority = (int)v;
	}
	if (get_str(f[F_REQUESTED_BY], JOB_WHO_MAX, &s, &pr) < 0)
		return phi_errf(err, errlen, -EINVAL, "requested_by: %s", pr);
	for (const char *p = s; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return phi_errf(err, errlen, -EINVAL, "requested_by: control character");
	strcpy(j->requested_by, s);

	if (get_str(f[F_PURPOSE], 15, &s, &pr) < 0)
		return phi_errf(err, errlen, -EINVAL, "purpose: %s", pr);
	size_t k;
	for (k = 0; k < ARRAY_SIZE(purposes); k++)
		if (strcmp(s, purposes[k]) == 0)
			break;
	if (k == ARRAY_SIZE(purposes))
		return phi_errf(err, errlen, -EINVAL,
			    "purpose: must be treatment, payment, operations or research");
	strcpy(j->purpose, s);

	if (f[F_DEADLINE]) {
		if (get_str(f[F_DEADLINE], 32, &s, &pr) < 0)
			return phi_errf(err, errlen, -EINVAL, "deadline: %s", pr);
		if (job_parse_time(s, &j->deadline_ms) < 0)
			return phi_errf(err, errlen, -EINVAL,
				    "deadline: must be RFC 3339 UTC, e.g. 2026-01-31T18:00:00Z");
	}
	if (f[F_ESTIMATED_TOKENS]) {
		r = get_uint(f[F_ESTIMATED_TOKENS], 1, UINT32_MAX, &v);
		if (r < 0)
			return phi_errf(err, errlen, -EINVAL, "estimated_tokens: %s",
				    r == -ERANGE ? "must be a positive integer" : "must be a number");
		j->estimated_tokens = v;
	}
	return 0;
}

int job_parse(const void *buf, size_t len, struct job **ret, char *err, size_t errlen)
{
	if (err && errlen)
		err[0] = 0;
	if (len > JOB_MAX_BYTES)
		return phi_errf(err, errlen, -EFBIG, "(file): larger than %d bytes", JOB_MAX_BYTES);
	const char *end = NULL;
	cJSON *root = cJSON_ParseWithLengthOpts(buf, len, &end, false);
	if (!root)
		return phi_errf(err, errlen, -EBADMSG, "(file): not valid JSON (at byte %zu)",
			    end ? (size_t)(end - (const char *)buf) : (size_t)0);
	/* only whitespace may follow the object */
	for (const char *p = end; p && p < (const char *)buf + len; p++)
		if (*p != ' ' && *p != '\n' && *p != '\r' && *p != '\t') {
			cJSON_Delete(root);
			return phi_errf(err, errlen, -EBADMSG, "(file): trailing data after the JSON object");
		}
	struct job *j = calloc(1, sizeof(*j));
	if (!j) {
		cJSON_Delete(root);
		return -ENOMEM;
	}
	int r = parse_fields(root, j, err, errlen);
	cJSON_Delete(root);
	if (r < 0) {
		job_free(j);
		return r;
	}
	*ret = j;
	return 0;
}
