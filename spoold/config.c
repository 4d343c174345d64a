/* config.c: key = value configuration ('#' comments, blank lines, one key per line). */
#include "config.h"

#include <errno.h>
#include <grp.h>
#include <stdio.h>
#include <string.h>

#include "phifs/util.h"

void config_defaults(struct config *c)
{
	*c = (struct config){
		.spool_dir = "/var/spool/phifs",
		.admin_group = "phi-admins",
		.admin_gid = (gid_t)-1,
		.backend = BACKEND_LOCAL,
		.runner = "/usr/local/bin/gpurun",
		.job_user = "nobody",
		.gpu_slots = { 0 },
		.ngpu_slots = 1,
		.max_instances = 20,
		.lifetime_sec = 1800,
		.kill_grace_sec = 10,
		.max_attempts = 3,
		.retry_backoff_sec = 30,
		.retry_backoff_max_sec = 3600,
		.budget_day_micro = 1000ULL * 1000000,
		.budget_month_micro = 25000ULL * 1000000,
		.cost_per_min_micro = { 15000, 30000, 60000 },
		.bytes_per_token = 4,
		.max_job_bytes = 65536,
		.queue_alert = 50,
		.prov_fail_alert = 3,
		.prov_fail_window_sec = 600,
		.tick_ms = 1000,
	};
}

int config_parse_usd(const char *s, uint64_t *ret)
{
	uint64_t whole = 0, frac = 0;
	int nfrac = 0;
	const char *p = s;
	if (!*p)
		return -EINVAL;
	for (; *p >= '0' && *p <= '9'; p++) {
		if (whole > 100000000000ULL)
			return -ERANGE;
		whole = whole * 10 + (uint64_t)(*p - '0');
	}
	if (p == s)
		return -EINVAL;
	if (*p == '.') {
		p++;
		if (!(*p >= '0' && *p <= '9'))
			return -EINVAL;
		for (; *p >= '0' && *p <= '9'; p++) {
			if (++nfrac > 6)
				return -ERANGE;
			frac = frac * 10 + (uint64_t)(*p - '0');
		}
	}
	if (*p)
		return -EINVAL;
	for (; nfrac < 6; nfrac++)
		frac *= 10;
	*ret = whole * 1000000 + frac;
	return 0;
}

static int set_str(char *dst, size_t cap, const char *v)
{
	size_t n = strlen(v);
	if (n >= cap)
		return -ENAMETOOLONG;
	memcpy(dst, v, n + 1);
	return 0;
}

static int set_u64(uint64_t *dst, const char *v, uint64_t min, uint64_t max)
{
	uint64_t x;
	int r = phi_parse_u64(v, max, &x);
	if (r < 0)
		return r;
	if (x < min)
		return -ERANGE;
	*dst = x;
	return 0;
}

static int set_slots(struct config *c, const char *v)
{
	size_t n = 0;
	int slots[CONFIG_MAX_SLOTS];
	const char *p = v;
	if (!*p)
		return -EINVAL;
	for (;;) {
		uint64_t x = 0;
		const char *s = p;
		for (; *p >= '0' && *p <= '9'; p++)
			if ((x = x * 10 + (uint64_t)(*p - '0')) > 1023)
				return -ERANGE;
		if (p == s || n >= CONFIG_MAX_SLOTS)
			return -EINVAL;
		for (size_t i = 0; i < n; i++)
			if (slots[i] == (int)x)
				return -EINVAL; /* a slot listed twice would be handed out twice */
		slots[n++] = (int)x;
		if (!*p)
			break;
		if (*p != ',')
			return -EINVAL;
		p++;
	}
	memcpy(c->gpu_slots, slots, n * sizeof(int));
	c->ngpu_slots = n;
	return 0;
}

static int set_key(struct config *c, const char *k, const char *v, const char **problem)
{
	uint64_t x;
	int r;
	*problem = "bad value";
	if (!strcmp(k, "spool_dir")) {
		if (v[0] != '/') {
			*problem = "must be an absolute path";
			return -EINVAL;
		}
		return set_str(c->spool_dir, sizeof c->spool_dir, v);
	}
	if (!strcmp(k, "admin_group"))
		return set_str(c->admin_group, sizeof c->admin_group, v);
	if (!strcmp(k, "backend")) {
		if (!strcmp(v, "local"))
			c->backend = BACKEND_LOCAL;
		else if (!strcmp(v, "slurm"))
			c->backend = BACKEND_SLURM;
		else {
			*problem = "must be local or slurm";
			return -EINVAL;
		}
		return 0;
	}
	if (!strcmp(k, "runner") || !strcmp(k, "documents_root") || !strcmp(k, "metrics_file") ||
	    !strcmp(k, "slurm_bin_dir") || !strcmp(k, "phifs_store") ||
	    !strcmp(k, "phifs_key_file") || !strcmp(k, "audit_socket")) {
		if (*v && v[0] != '/') {
			*problem = "must be an absolute path";
			return -EINVAL;
		}
		char *dst = !strcmp(k, "runner")         ? c->runner
			    : !strcmp(k, "documents_root") ? c->documents_root
			    : !strcmp(k, "metrics_file")   ? c->metrics_file
			    : !strcmp(k, "phifs_store")    ? c->phifs_store
			    : !strcmp(k, "phifs_key_file") ? c->phifs_key_file
			    : !strcmp(k, "audit_socket")   ? c->audit_socket
							   : c->slurm_bin_dir;
		return set_str(dst, CONFIG_PATH_MAX, v);
	}
	if (!strcmp(k, "job_user")) {
		if (!*v) {
			*problem = "must not be empty";
			return -EINVAL;
		}
		return set_str(c->job_user, sizeof c->job_user, v);
	}
	if (!strcmp(k, "slurm_partition"))
		return set_str(c->slurm_partition, sizeof c->slurm_partition, v);
	if (!strcmp(k, "gpu_slots")) {
		*problem = "must be a comma-separated list of distinct numbers 0-1023";
		return set_slots(c, v);
	}
	if (!strcmp(k, "max_instances")) {
		r = set_u64(&x, v, 1, 10000);
		if (r == 0)
			c->max_instances = (uint32_t)x;
		return r;
	}
	if (!strcmp(k, "max_attempts")) {
		r = set_u64(&x, v, 1, 100);
		if (r == 0)
			c->max_attempts = (uint32_t)x;
		return r;
	}
	static const struct {
		const char *k;
		size_t off;
		uint64_t min, max;
	} nums[] = {
		{ "lifetime_sec", offsetof(struct config, lifetime_sec), 1, 7 * 86400 },
		{ "kill_grace_sec", offsetof(struct config, kill_grace_sec), 0, 3600 },
		{ "retry_backoff_sec", offsetof(struct config, retry_backoff_sec), 0, 86400 },
		{ "retry_backoff_max_sec", offsetof(struct config, retry_backoff_max_sec), 0, 7 * 86400 },
		{ "bytes_per_token", offsetof(struct config, bytes_per_token), 1, 1000 },
		{ "max_job_bytes", offsetof(struct config, max_job_bytes), 256, 65536 },
		{ "queue_alert", offsetof(struct config, queue_alert), 0, 100000000 },
		{ "prov_fail_alert", offsetof(struct config, prov_fail_alert), 0, 1000000 },
		{ "prov_fail_window_sec", offsetof(struct config, prov_fail_window_sec), 1, 86400 },
		{ "tick_ms", offsetof(struct config, tick_ms), 10, 60000 },
	};
	for (size_t i = 0; i < ARRAY_SIZE(nums); i++)
		if (!strcmp(k, nums[i].k)) {
			*problem = "must be an integer in range";
			return set_u64((uint64_t *)((char *)c + nums[i].off), v, nums[i].min,
				       nums[i].max);
		}
	static const struct {
		const char *k;
		size_t off;
	} usd[] = {
		{ "budget_day_usd", offsetof(struct config, budget_day_micro) },
		{ "budget_month_usd", offsetof(struct config, budget_month_micro) },
		{ "cost_small_usd_per_min", offsetof(struct config, cost_per_min_micro[0]) },
		{ "cost_medium_usd_per_min", offsetof(struct config, cost_per_min_micro[1]) },
		{ "cost_large_usd_per_min", offsetof(struct config, cost_per_min_micro[2]) },
	};
	for (size_t i = 0; i < ARRAY_SIZE(usd); i++)
		if (!strcmp(k, usd[i].k)) {
			*problem = "must be a dollar amount like 0.015 (at most 6 decimals)";
			return config_parse_usd(v, (uint64_t *)((char *)c + usd[i].off));
		}
	*problem = "unknown key";
	return -ENOENT;
}

static bool is_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\r';
}

int config_parse(struct config *c, const void *buf, size_t len, char *err, size_t errlen)
{
	if (len > CONFIG_MAX_BYTES)
		return phi_errf(err, errlen, -EFBIG, "config larger than %d bytes", CONFIG_MAX_BYTES);
	struct config tmp = *c; /* outputs written only on success */
	struct phi_cur cur = phi_cur_init(buf, len);
	unsigned line = 0;
	while (phi_cur_left(&cur) > 0) {
		line++;
		const uint8_t *start = cur.p + cur.off;
		size_t n = 0;
		while (n < phi_cur_left(&cur) && start[n] != '\n')
			n++;
		const uint8_t *dummy;
		(void)phi_cur_ref(&cur, &dummy, n < phi_cur_left(&cur) ? n + 1 : n);
		char l[CONFIG_PATH_MAX + 128];
		if (n >= sizeof l)
			return phi_errf(err, errlen, -EINVAL, "line %u: too long", line);
		memcpy(l, start, n);
		l[n] = 0;
		if (memchr(l, 0, n))
			return phi_errf(err, errlen, -EINVAL, "line %u: NUL byte", line);
		char *p = l;
		while (is_space(*p))
			p++;
		if (*p == '#' || *p == 0)
			continue;
		char *eq = strchr(p, '=');
		if (!eq)
			return phi_errf(err, errlen, -EINVAL, "line %u: expected key = value", line);
		char *ke = eq;
		while (ke > p && is_space(ke[-1]))
			ke--;
		*ke = 0;
		char *v = eq + 1;
		while (is_space(*v))
			v++;
		char *ve = v + strlen(v);
		while (ve > v && is_space(ve[-1]))
			ve--;
		*ve = 0;
		const char *problem;
		if (set_key(&tmp, p, v, &problem) < 0) {
			char kk[33];
			size_t i;
			for (i = 0; p[i] && i < 32; i++)
				kk[i] = (p[i] > 0x20 && p[i] < 0x7f) ? p[i] : '?';
			kk[i] = 0;
			return phi_errf(err, errlen, -EINVAL, "line %u: %s: %s", line, kk, problem);
		}
	}
	*c = tmp;
	return 0;
}

int config_load(struct config *c, const char *path, char *err, size_t errlen)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return phi_errf(err, errlen, phi_neg_errno(), "cannot open config: %s", strerror(errno));
	_cleanup_buf_ struct phi_buf b;
	phi_buf_init(&b, CONFIG_MAX_BYTES + 1);
	for (;;) {
		int r = phi_buf_reserve(&b, 4096 < b.max - b.len ? 4096 : b.max - b.len);
		if (r < 0 || b.len == b.max)
			return phi_errf(err, errlen, -EFBIG, "config larger than %d bytes", CONFIG_MAX_BYTES);
		ssize_t n = read(fd, b.p + b.len, b.cap - b.len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return phi_errf(err, errlen, phi_neg_errno(), "cannot read config");
		}
		if (n == 0)
			break;
		b.len += (size_t)n;
	}
	return config_parse(c, b.p, b.len, err, errlen);
}

int config_resolve(struct config *c, char *err, size_t errlen)
{
	char buf[16384];
	struct group gr, *res = NULL;
	int r = getgrnam_r(c->admin_group, &gr, buf, sizeof buf, &res);
	if (r != 0 || !res) {
		/* a number is accepted too */
		uint64_t g;
		if (phi_parse_u64(c->admin_group, UINT32_MAX - 1, &g) == 0) {
			c->admin_gid = (gid_t)g;
			return 0;
		}
		return phi_errf(err, errlen, -ENOENT, "admin_group: no such group");
	}
	c->admin_gid = res->gr_gid;
	return 0;
}
