/* runconf.c: gpurun's configuration (runconf.h). */
#include "runconf.h"

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "util.h"

void runconf_defaults(struct runconf *c)
{
	*c = (struct runconf){ .threads = 1, .map_max_tokens = 96, .max_input_bytes = 8 << 20 };
	snprintf(c->store, sizeof c->store, "/srv/phi");
	snprintf(c->key_file, sizeof c->key_file, "/etc/phifs/master.key");
	snprintf(c->audit_socket, sizeof c->audit_socket, "/run/phifs-auditd/audit.sock");
	snprintf(c->phifs, sizeof c->phifs, "/usr/local/bin/phifs");
	snprintf(c->models_dir, sizeof c->models_dir, "/var/lib/phifs/models");
	snprintf(c->mount_dir, sizeof c->mount_dir, "/run/gpurun");
	snprintf(c->job_user, sizeof c->job_user, "nobody");
	snprintf(c->template_[0], RUNCONF_TEMPLATE_MAX,
		 "Summarize the following clinical documents for a clinician.\n\n{documents}\nSummary:");
	snprintf(c->template_[1], RUNCONF_TEMPLATE_MAX,
		 "Extract the diagnoses, medications, allergies and lab values from these documents. "
		 "{prompt}\n\n{documents}\nExtracted:");
	snprintf(c->template_[2], RUNCONF_TEMPLATE_MAX,
		 "Answer the question from these clinical documents.\n\n{documents}\nQuestion: {prompt}\nAnswer:");
	snprintf(c->template_reduce, RUNCONF_TEMPLATE_MAX,
		 "Combine these partial summaries into one.\n\n{documents}\nCombined:");
}

static int unescape(const char *v, char *out, size_t cap)
{
	size_t o = 0;
	for (const char *s = v; *s; s++) {
		char ch = *s;
		if (ch == '\\' && s[1] == 'n') {
			ch = '\n';
			s++;
		} else if (ch == '\\' && s[1] == '\\') {
			s++;
		}
		if (o + 1 >= cap)
			return -E2BIG;
		out[o++] = ch;
	}
	out[o] = 0;
	return 0;
}

static int parse_u64(const char *v, uint64_t max, uint64_t *ret)
{
	char *end;
	errno = 0;
	unsigned long long x = strtoull(v, &end, 10);
	if (errno || end == v || *end || *v == '-' || x > max)
		return -EINVAL;
	*ret = x;
	return 0;
}

/* "1.5" -> 1500000 micro-dollars */
static int parse_usd(const char *v, uint64_t *ret)
{
	uint64_t whole = 0, frac = 0;
	int digits = 0;
	const char *s = v;
	if (!*s)
		return -EINVAL;
	for (; *s >= '0' && *s <= '9'; s++) {
		if (whole > 1000000000ULL)
			return -EINVAL;
		whole = whole * 10 + (uint64_t)(*s - '0');
	}
	if (*s == '.')
		for (s++; *s >= '0' && *s <= '9'; s++) {
			if (++digits > 6)
				return -EINVAL;
			frac = frac * 10 + (uint64_t)(*s - '0');
		}
	if (*s)
		return -EINVAL;
	for (; digits < 6; digits++)
		frac *= 10;
	*ret = whole * 1000000 + frac;
	return 0;
}

#define PATHKEY(name)                                                                  \
	if (!strcmp(k, #name)) {                                                           \
		if (strlen(v) >= sizeof c->name || (*v != '/' && strcmp(#name, "audit_socket"))) \
			return "must be an absolute path";                                         \
		snprintf(c->name, sizeof c->name, "%s", v);                                    \
		return NULL;                                                               \
	}

static const char *set(struct runconf *c, const char *k, const char *v)
{
	uint64_t x;
	PATHKEY(store)
	PATHKEY(key_file)
	PATHKEY(audit_socket)
	PATHKEY(phifs)
	PATHKEY(models_dir)
	PATHKEY(mount_dir)
	if (!strcmp(k, "job_user")) {
		if (!*v || strlen(v) >= sizeof c->job_user)
			return "bad user";
		snprintf(c->job_user, sizeof c->job_user, "%s", v);
		return NULL;
	}
	if (!strcmp(k, "phifs_user")) {
		/* a name (phifs resolves it with NSS); it goes into phifs' -o list unquoted */
		if (strlen(v) >= sizeof c->phifs_user || strpbrk(v, ",= \t\\") || !strcmp(v, "root"))
			return "bad user";
		snprintf(c->phifs_user, sizeof c->phifs_user, "%s", v);
		return NULL;
	}
	if (!strcmp(k, "threads") || !strcmp(k, "n_ctx") || !strcmp(k, "map_max_tokens")) {
		if (parse_u64(v, 1 << 20, &x) < 0)
			return "not a number in range";
		if (!strcmp(k, "threads"))
			c->threads = x ? (uint32_t)x : 1;
		else if (!strcmp(k, "n_ctx"))
			c->n_ctx = (uint32_t)x;
		else
			c->map_max_tokens = x ? (uint32_t)x : 1;
		return NULL;
	}
	if (!strcmp(k, "max_input_bytes"))
		return parse_u64(v, 1ULL << 32, &c->max_input_bytes) < 0 ? "not a number in range" : NULL;
	if (!strcmp(k, "cost_usd_per_hour"))
		return parse_usd(v, &c->cost_micro_usd_per_hour) < 0 ? "not an amount (up to 6 decimals)" : NULL;
	if (!strcmp(k, "no_gpu")) {
		if (strcmp(v, "true") && strcmp(v, "false"))
			return "true or false";
		c->no_gpu = !strcmp(v, "true");
		return NULL;
	}
	char *dst = !strcmp(k, "template_summarize") ? c->template_[0]
		    : !strcmp(k, "template_extract") ? c->template_[1]
		    : !strcmp(k, "template_question") ? c->template_[2]
		    : !strcmp(k, "template_reduce")   ? c->template_reduce
						      : NULL;
	if (dst) {
		if (unescape(v, dst, RUNCONF_TEMPLATE_MAX) < 0)
			return "too long";
		if (!strstr(dst, "{documents}"))
			return "needs the {documents} placeholder";
		return NULL;
	}
	return "unknown key";
}

int runconf_parse(struct runconf *c, const char *buf, size_t len, char *err, size_t errlen)
{
	size_t line = 0;
	const char *p = buf, *end = buf + len;
	while (p < end) {
		line++;
		const char *nl = memchr(p, '\n', (size_t)(end - p));
		const char *le = nl ? nl : end;
		char l[RUNCONF_TEMPLATE_MAX + 64];
		if ((size_t)(le - p) >= sizeof l) {
			snprintf(err, errlen, "line %zu: too long", line);
			return -EINVAL;
		}
		memcpy(l, p, (size_t)(le - p));
		l[le - p] = 0;
		p = nl ? nl + 1 : end;
		char *s = l;
		while (*s == ' ' || *s == '\t')
			s++;
		if (!*s || *s == '#')
			continue;
		char *eq = strchr(s, '=');
		if (!eq) {
			snprintf(err, errlen, "line %zu: expected key = value", line);
			return -EINVAL;
		}
		char *ke = eq;
		while (ke > s && (ke[-1] == ' ' || ke[-1] == '\t'))
			ke--;
		*ke = 0;
		char *v = eq + 1;
		while (*v == ' ' || *v == '\t')
			v++;
		size_t vl = strlen(v);
		while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t' || v[vl - 1] == '\r'))
			v[--vl] = 0;
		const char *why = set(c, s, v);
		if (why) {
			snprintf(err, errlen, "line %zu: %.40s: %s", line, s, why);
			return -EINVAL;
		}
	}
	return 0;
}

int runconf_load(struct runconf *c, const char *path, char *err, size_t errlen)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		int r = -errno;
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	char buf[65536];
	size_t n = 0;
	int r = phi_read_small(fd, buf, sizeof buf, &n);
	if (r == -EFBIG) {
		snprintf(err, errlen, "%s: larger than %zu bytes", path, sizeof buf - 1);
		return r;
	}
	if (r < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(-r));
		return r;
	}
	return runconf_parse(c, buf, n, err, errlen);
}

int runconf_resolve(struct runconf *c, char *err, size_t errlen)
{
	struct passwd pw, *res = NULL;
	char buf[4096];
	char *end;
	unsigned long n = strtoul(c->job_user, &end, 10);
	int e;
	if (*c->job_user && !*end)
		e = getpwuid_r((uid_t)n, &pw, buf, sizeof buf, &res);
	else
		e = getpwnam_r(c->job_user, &pw, buf, sizeof buf, &res);
	if (e || !res) {
		snprintf(err, errlen, "job_user: no such user");
		return -ENOENT;
	}
	if (res->pw_uid == 0) {
		snprintf(err, errlen, "job_user: must not be root");
		return -EINVAL;
	}
	c->job_uid = res->pw_uid;
	c->job_gid = res->pw_gid;
	return 0;
}
