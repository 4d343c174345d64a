/* policy.c: caller identity from /proc, and the access decision (docs/grants-format.md). */
#include <poll.h>
#include <pthread.h>
#include <sys/syscall.h>
#include <sys/stat.h>
#include <time.h>

#include <sodium.h>

#include "policy.h"
#include "util.h"

#define STATUS_MAX 16384
#define CGROUP_MAX 8192

/* ---- /proc parsers ---- */

/* The next line (without its '\n'); false at the end. */
static bool cur_line(struct phi_cur *c, const char **ret, size_t *ret_len)
{
	size_t left = phi_cur_left(c);
	if (left == 0)
		return false;
	const char *p = (const char *)c->p + c->off;
	const char *nl = memchr(p, '\n', left);
	size_t n = nl ? (size_t)(nl - p) : left;
	*ret = p;
	*ret_len = n;
	c->off += nl ? n + 1 : n;
	return true;
}

/* Numbers separated by blanks: up to max of them into v (more are counted, not stored). */
static int parse_u32_list(const char *p, size_t len, uint32_t *v, size_t max, size_t *ret_n)
{
	size_t n = 0, i = 0;
	for (;;) {
		while (i < len && (p[i] == ' ' || p[i] == '\t'))
			i++;
		if (i == len)
			break;
		uint64_t x = 0;
		size_t start = i;
		while (i < len && p[i] >= '0' && p[i] <= '9') {
			x = x * 10 + (uint64_t)(p[i] - '0');
			if (x > UINT32_MAX)
				return -EBADMSG;
			i++;
		}
		if (i == start || (i < len && p[i] != ' ' && p[i] != '\t'))
			return -EBADMSG;
		if (n < max)
			v[n] = (uint32_t)x;
		n++;
	}
	*ret_n = n;
	return 0;
}

static bool line_key(const char *line, size_t len, const char *key, const char **val,
		     size_t *val_len)
{
	size_t k = strlen(key);
	if (len < k + 1 || memcmp(line, key, k) != 0 || line[k] != ':')
		return false;
	*val = line + k + 1;
	*val_len = len - k - 1;
	return true;
}

int phi_proc_parse_status(const char *p, size_t len, struct phi_proc_status *ret)
{
	struct phi_cur c = phi_cur_init(p, len);
	struct phi_proc_status st = { 0 };
	bool have_tgid = false, have_uid = false, have_gid = false, have_groups = false;
	const char *line, *v;
	size_t n, vn, cnt;
	while (cur_line(&c, &line, &n)) {
		if (line_key(line, n, "Tgid", &v, &vn)) {
			uint32_t t;
			if (have_tgid || parse_u32_list(v, vn, &t, 1, &cnt) < 0 || cnt != 1 || t == 0 ||
			    t > INT32_MAX)
				return -EBADMSG;
			st.tgid = (pid_t)t;
			have_tgid = true;
		} else if (line_key(line, n, "Uid", &v, &vn)) {
			if (have_uid || parse_u32_list(v, vn, st.uid, 4, &cnt) < 0 || cnt != 4)
				return -EBADMSG;
			have_uid = true;
		} else if (line_key(line, n, "Gid", &v, &vn)) {
			if (have_gid || parse_u32_list(v, vn, st.gid, 4, &cnt) < 0 || cnt != 4)
				return -EBADMSG;
			have_gid = true;
		} else if (line_key(line, n, "Groups", &v, &vn)) {
			if (have_groups || parse_u32_list(v, vn, st.groups, PHI_ID_GROUPS_MAX, &cnt) < 0)
				return -EBADMSG;
			st.ngroups = cnt < PHI_ID_GROUPS_MAX ? cnt : PHI_ID_GROUPS_MAX;
			have_groups = true;
		}
	}
	if (!have_tgid || !have_uid || !have_gid || !have_groups)
		return -EBADMSG;
	*ret = st;
	return 0;
}

static bool ends_with(const char *p, size_t n, const char *suffix)
{
	size_t k = strlen(suffix);
	return n > k && memcmp(p + n - k, suffix, k) == 0;
}

/* The last *.service / *.scope component of a cgroup path. */
static int unit_of_path(const char *p, size_t len, char *unit, size_t unit_max)
{
	const char *best = NULL;
	size_t best_n = 0, i = 0;
	while (i < len) {
		while (i < len && p[i] == '/')
			i++;
		size_t start = i;
		while (i < len && p[i] != '/')
			i++;
		size_t n = i - start;
		if (ends_with(p + start, n, ".service") || ends_with(p + start, n, ".scope")) {
			best = p + start;
			best_n = n;
		}
	}
	if (best_n >= unit_max || (best && memchr(best, 0, best_n)))
		return -EBADMSG;
	if (best_n)
		memcpy(unit, best, best_n);
	unit[best_n] = 0;
	return 0;
}

int phi_proc_parse_unit(const char *p, size_t len, char *unit, size_t unit_max)
{
	if (!unit || unit_max == 0)
		return -EINVAL;
	struct phi_cur c = phi_cur_init(p, len);
	const char *line, *v2 = NULL, *v1 = NULL;
	size_t n, v2n = 0, v1n = 0;
	while (cur_line(&c, &line, &n)) {
		/* ID:CONTROLLERS:PATH */
		const char *a = memchr(line, ':', n);
		const char *b = a ? memchr(a + 1, ':', n - (size_t)(a + 1 - line)) : NULL;
		if (!b)
			continue;
		const char *path = b + 1;
		size_t pn = n - (size_t)(path - line);
		if (a == line + 1 && line[0] == '0' && b == a + 1) {
			v2 = path;
			v2n = pn;
		} else if ((size_t)(b - a - 1) == 12 && !memcmp(a + 1, "name=systemd", 12)) {
			v1 = path;
			v1n = pn;
		}
	}
	if (!v2 && !v1)
		return -EBADMSG;
	return v2 ? unit_of_path(v2, v2n, unit, unit_max) : unit_of_path(v1, v1n, unit, unit_max);
}

/* ---- identity ---- */

/* Read a small /proc file relative to dfd; -ESRCH once the process is gone. */
static int read_at(int dfd, const char *name, char *buf, size_t max, size_t *ret_len)
{
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : phi_neg_errno();
	size_t len = 0;
	while (len < max) {
		ssize_t n = read(fd, buf + len, max - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return errno == ENOENT ? -ESRCH : phi_neg_errno();
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	*ret_len = len;
	return 0;
}

static int open_pid_dir(pid_t pid, int *ret)
{
	char path[32];
	snprintf(path, sizeof(path), "/proc/%d", (int)pid);
	int fd = open(path, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : phi_neg_errno();
	*ret = fd;
	return 0;
}

static int read_status(int dfd, struct phi_proc_status *st)
{
	_cleanup_free_ char *buf = malloc(STATUS_MAX);
	if (!buf)
		return -ENOMEM;
	size_t len;
	int r = read_at(dfd, "status", buf, STATUS_MAX, &len);
	if (r < 0)
		return r;
	return phi_proc_parse_status(buf, len, st);
}

int phi_identity_from_pid(uint32_t uid, uint32_t gid, pid_t pid, struct phi_identity *ret)
{
	if (pid <= 0 || !ret)
		return -EINVAL;
	/* The thread's directory is held open throughout: if the thread dies and its id is
	 * reused, reads through this fd fail instead of describing the newcomer. */
	_cleanup_close_ int tfd = -1;
	int r = open_pid_dir(pid, &tfd);
	if (r < 0)
		return r;
	struct phi_proc_status st;
	r = read_status(tfd, &st);
	if (r < 0)
		return r;
	/* the request's credentials are the thread's fsuid/fsgid */
	if (st.uid[3] != uid || st.gid[3] != gid)
		return -EPERM;
	_cleanup_close_ int pfd = -1;
	r = open_pid_dir(st.tgid, &pfd);
	if (r < 0)
		return r;
	struct phi_identity *id = calloc(1, sizeof(*id));
	if (!id)
		return -ENOMEM;
	id->uid = uid;
	id->gid = gid;
	id->pid = pid;
	id->tgid = st.tgid;
	memcpy(id->groups, st.groups, st.ngroups * sizeof(st.groups[0]));
	id->ngroups = st.ngroups;
	size_t n;
	r = read_at(pfd, "comm", id->comm, sizeof(id->comm) - 1, &n);
	if (r >= 0) {
		while (n > 0 && id->comm[n - 1] == '\n')
			n--;
		id->comm[n] = 0;
		ssize_t l = readlinkat(pfd, "exe", id->exe, sizeof(id->exe));
		/* kernel threads and zombies have no exe; a path that does not fit is dropped */
		if (l < 0 || (size_t)l >= sizeof(id->exe))
			l = 0;
		id->exe[l] = 0;
		char *cg = malloc(CGROUP_MAX);
		if (!cg)
			r = -ENOMEM;
		if (r >= 0 && read_at(pfd, "cgroup", cg, CGROUP_MAX, &n) >= 0 &&
		    phi_proc_parse_unit(cg, n, id->unit, sizeof(id->unit)) < 0)
			id->unit[0] = 0;
		free(cg);
	}
	/* The thread still exists (so its process, and st.tgid, were not recycled meanwhile)
	 * and still runs with the same credentials. */
	struct phi_proc_status again;
	if (r >= 0)
		r = read_status(tfd, &again);
	if (r >= 0 && (again.uid[3] != uid || again.gid[3] != gid || again.tgid != st.tgid))
		r = -EPERM;
	if (r >= 0)
		*ret = *id;
	free(id);
	return r;
}

/* ---- decision ---- */

static const char *const op_names[] = { "lookup",    "getattr", "readdir", "open-read", "open-write",
					"create",    "unlink",  "rename",  "setattr" };

const char *phi_op_name(enum phi_op op)
{
	return (unsigned)op < ARRAY_SIZE(op_names) ? op_names[op] : "unknown";
}

static bool op_reads(enum phi_op op)
{
	return op == PHI_OP_LOOKUP || op == PHI_OP_GETATTR || op == PHI_OP_READDIR ||
	       op == PHI_OP_OPEN_READ;
}

/* relpath: "" or components joined by single '/', none empty, "." or ".." */
static bool relpath_valid(const char *p)
{
	if (!p)
		return false;
	if (!*p)
		return true;
	const char *s = p;
	for (;;) {
		const char *e = strchr(s, '/');
		size_t n = e ? (size_t)(e - s) : strlen(s);
		if (n == 0 || (n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
			return false;
		if (!e)
			return true;
		s = e + 1;
	}
}

/* The job's write scope: anything below the top-level "results" folder, and creating
 * that folder itself; never replacing or removing the folder. */
static bool in_results(const char *relpath, enum phi_op op)
{
	if (!strncmp(relpath, "results/", 8))
		return true;
	return op == PHI_OP_CREATE && !strcmp(relpath, "results");
}

static bool role_allows(enum phi_role role, enum phi_op op, const char *relpath)
{
	switch (role) {
	case PHI_ROLE_SERVICE:
	case PHI_ROLE_PROVIDER:
		return true;
	case PHI_ROLE_JOB:
		return op_reads(op) || in_results(relpath, op);
	default: /* admin, auditor: never PHI */
		return false;
	}
}

int phi_policy_check(struct phi_grants *g, const struct phi_identity *id, const char *patient,
		     const char *relpath, enum phi_op op, uint64_t now, struct phi_decision *ret)
{
	if (!g || !ret || (unsigned)op >= ARRAY_SIZE(op_names))
		return -EINVAL;
	struct phi_decision d = { .reason = PHI_DENY_NO_IDENTITY };
	if (!id) {
		*ret = d;
		return 0;
	}
	snprintf(d.principal, sizeof(d.principal), "uid:%u", (unsigned)id->uid);
	if (!patient) {
		/* the root: anyone may look; the listing is filtered per patient */
		d.allowed = op == PHI_OP_LOOKUP || op == PHI_OP_GETATTR || op == PHI_OP_READDIR;
		d.reason = d.allowed ? PHI_DENY_NONE : PHI_DENY_ROLE_FORBIDS;
		*ret = d;
		return 0;
	}
	if (!relpath_valid(relpath))
		return -EINVAL;
	uint32_t gids[PHI_ID_GROUPS_MAX + 1];
	size_t ngids = 0;
	gids[ngids++] = id->gid;
	for (size_t i = 0; i < id->ngroups && i < PHI_ID_GROUPS_MAX; i++)
		gids[ngids++] = id->groups[i];
	struct phi_grant_match m;
	int r = phi_grants_lookup(g, id->uid, gids, ngids, patient, now, &m);
	if (r < 0)
		return r;
	if (m.found) {
		phi_principal_format(&m.grant, d.principal, sizeof(d.principal));
		memcpy(d.grant_id, m.grant.id, sizeof(d.grant_id));
		d.role = m.grant.role;
		d.purpose = m.grant.purpose;
		d.emergency = m.grant.emergency;
		d.grant_expiry = m.grant.expiry;
	}
	if (m.reason != PHI_DENY_NONE)
		d.reason = m.reason;
	else if (role_allows(d.role, op, relpath)) {
		d.allowed = true;
		d.reason = PHI_DENY_NONE;
	} else
		d.reason = PHI_DENY_ROLE_FORBIDS;
	*ret = d;
	return 0;
}

/* ---- identity cache ---- */

int phi_proc_parse_starttime(const char *p, size_t len, uint64_t *ret)
{
	/* "PID (COMM) S F2 ... F22 ...": comm may hold ')' and spaces, so fields start after the
	 * last ')'; the state is field 3 */
	size_t i = len;
	while (i > 0 && p[i - 1] != ')')
		i--;
	if (i == 0)
		return -EBADMSG;
	unsigned field = 2;
	uint64_t v = 0;
	bool in = false;
	for (; i < len; i++) {
		char ch = p[i];
		if (ch == ' ' || ch == '\n') {
			if (in && field == 22) {
				*ret = v;
				return 0;
			}
			in = false;
			continue;
		}
		if (!in) {
			in = true;
			field++;
			v = 0;
		}
		if (field == 22) {
			if (ch < '0' || ch > '9' || v > (UINT64_MAX - 9) / 10)
				return -EBADMSG;
			v = v * 10 + (uint64_t)(ch - '0');
		}
	}
	if (in && field == 22) {
		*ret = v;
		return 0;
	}
	return -EBADMSG;
}

static int read_starttime(pid_t pid, uint64_t *ret)
{
	char path[48], buf[1024]; /* comm is at most 64 bytes: the line fits */
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return errno == ENOENT ? -ESRCH : phi_neg_errno();
	ssize_t m;
	while ((m = read(fd, buf, sizeof(buf))) < 0 && errno == EINTR)
		;
	if (m < 0)
		return errno == ENOENT || errno == ESRCH ? -ESRCH : phi_neg_errno();
	return phi_proc_parse_starttime(buf, (size_t)m, ret);
}

/* Is a cached entry still about the thread that sent the request? Thread ids are reused,
 * so the id alone does not say. Where the kernel has thread pidfds (PIDFD_THREAD, Linux
 * 6.9), each entry holds one, opened while the thread was verified: a thread id cannot be
 * reused while its thread lives, and the pidfd polls readable once that thread has
 * exited, so one poll() answers. Elsewhere (or when no fd can be had) the entry keeps the
 * thread's start time, and every use reads /proc/TID/stat again: open, read and close, and
 * the kernel formats 52 fields (do_task_stat), which under 64 threads of opens was about
 * a fifth of phifs's CPU, twice per open. */
#ifndef PIDFD_THREAD
#define PIDFD_THREAD O_EXCL
#endif

struct id_slot {
	bool used;
	pid_t pid;
	uint32_t uid, gid;
	uint64_t start;
	int pidfd; /* -1: none; check by start time */
	int64_t until_ns;
	struct phi_identity id;
};

struct phi_identity_cache {
	pthread_rwlock_t lock; /* readers poll a slot's pidfd; a writer replaces (closes) it */
	uint64_t ttl_ns;
	size_t cap;
	bool pidfds; /* the kernel gives thread pidfds */
	size_t npidfds; /* held by slots; under lock (write) */
	struct id_slot *slot;
};

/* Slots beyond this many check by start time: the fds a mount has (a shell's soft limit is
 * 1024) are for the store's files first. 64 client threads need 64. */
#define IDENTITY_PIDFDS_MAX 256

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static int pidfd_thread_open(pid_t tid)
{
	return (int)syscall(SYS_pidfd_open, tid, PIDFD_THREAD);
}

/* the thread behind pidfd has not exited */
static bool pidfd_alive(int pidfd)
{
	struct pollfd p = { .fd = pidfd, .events = POLLIN };
	int n;
	while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
		;
	return n == 0;
}

/* An entry lives between ttl/2 and ttl, at random. With one fixed ttl, threads that started
 * together (a client's thread pool) all expired in the same instant every ttl, and their
 * rebuilds (about 120 us each, 64 threads) stalled the mount's opens once a second: in the
 * benchmark, up to 89 opens over 5 ms within 10 ms of each whole second of the run. */
static uint64_t lifetime(uint64_t ttl_ns)
{
	uint64_t half = ttl_ns / 2;
	if (half < 1000)
		return ttl_ns;
	return ttl_ns - (uint64_t)randombytes_uniform((uint32_t)(half / 1000)) * 1000;
}

int phi_identity_cache_new(size_t cap, uint64_t ttl_ns, struct phi_identity_cache **ret)
{
	if (!ret || cap == 0 || cap > 65536 || ttl_ns > 60ull * 1000000000)
		return -EINVAL;
	struct phi_identity_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->slot = calloc(cap, sizeof(*c->slot));
	if (!c->slot) {
		free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < cap; i++)
		c->slot[i].pidfd = -1;
	c->cap = cap;
	c->ttl_ns = ttl_ns;
	int fd = pidfd_thread_open(gettid());
	c->pidfds = fd >= 0;
	if (fd >= 0)
		close(fd);
	pthread_rwlock_init(&c->lock, NULL);
	*ret = c;
	return 0;
}

void phi_identity_cache_free(struct phi_identity_cache *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->cap; i++)
		if (c->slot[i].pidfd >= 0)
			close(c->slot[i].pidfd);
	pthread_rwlock_destroy(&c->lock);
	free(c->slot);
	free(c);
}

/* A hit when the slot is the caller's, fresh, and its thread is the one verified: by the
 * slot's pidfd (start == NULL) or by the start time just read. Under c->lock. */
static bool slot_hit(const struct id_slot *s, uint32_t uid, uint32_t gid, pid_t pid,
		     int64_t now, const uint64_t *start)
{
	if (!s->used || s->pid != pid || s->uid != uid || s->gid != gid || now >= s->until_ns)
		return false;
	if (!start)
		return s->pidfd >= 0 && pidfd_alive(s->pidfd);
	return s->pidfd < 0 && s->start == *start;
}

int phi_identity_cached(struct phi_identity_cache *c, uint32_t uid, uint32_t gid, pid_t pid,
			struct phi_identity *ret)
{
	if (!c)
		return phi_identity_from_pid(uid, gid, pid, ret);
	if (pid <= 0 || !ret)
		return -EINVAL;
	struct id_slot *s = &c->slot[(size_t)pid % c->cap];
	int64_t now = mono_ns();
	bool hit = false;
	if (c->pidfds) {
		pthread_rwlock_rdlock(&c->lock);
		if ((hit = slot_hit(s, uid, gid, pid, now, NULL)))
			*ret = s->id;
		pthread_rwlock_unlock(&c->lock);
		if (hit)
			return 0;
	}
	uint64_t start;
	int r = read_starttime(pid, &start);
	if (r < 0)
		return r;
	pthread_rwlock_rdlock(&c->lock);
	if ((hit = slot_hit(s, uid, gid, pid, now, &start)))
		*ret = s->id;
	pthread_rwlock_unlock(&c->lock);
	if (hit)
		return 0;
	struct phi_identity *id = malloc(sizeof(*id));
	if (!id)
		return -ENOMEM;
	r = phi_identity_from_pid(uid, gid, pid, id);
	/* opened before the second start-time read, so that it names the thread verified;
	 * none (EMFILE, an old kernel) leaves the slot to the start-time check */
	int pidfd = -1;
	if (r >= 0 && c->pidfds) {
		pthread_rwlock_rdlock(&c->lock);
		bool room = c->npidfds < IDENTITY_PIDFDS_MAX || s->pidfd >= 0;
		pthread_rwlock_unlock(&c->lock);
		if (room)
			pidfd = pidfd_thread_open(pid);
	}
	uint64_t start2;
	/* the same thread throughout: its start time did not change while we read it */
	if (r >= 0) {
		int r2 = read_starttime(pid, &start2);
		r = r2 < 0 ? r2 : start2 != start ? -ESRCH : r;
	}
	if (r >= 0) {
		pthread_rwlock_wrlock(&c->lock);
		if (s->pidfd >= 0) {
			close(s->pidfd);
			c->npidfds--;
		}
		if (pidfd >= 0 && c->npidfds >= IDENTITY_PIDFDS_MAX) {
			close(pidfd); /* another thread took the room meanwhile */
			pidfd = -1;
		}
		if (pidfd >= 0)
			c->npidfds++;
		*s = (struct id_slot){ .used = true, .pid = pid, .uid = uid, .gid = gid, .start = start,
				       .pidfd = pidfd, .until_ns = now + (int64_t)lifetime(c->ttl_ns), .id = *id };
		pthread_rwlock_unlock(&c->lock);
		*ret = *id;
	} else if (pidfd >= 0) {
		close(pidfd);
	}
	free(id);
	return r;
}
