/* prov_local.c: the local backend. Each attempt runs under a small supervisor: a fork of
 * spoold in its own session that waits for a "go" byte (sent only once the journal holds its
 * pid and start time), starts the runner in the runner's own process group with
 * CUDA_VISIBLE_DEVICES, enforces the lifetime (SIGTERM, then SIGKILL after the grace time)
 * and writes the outcome to journal/<name>.exit. The supervisor outlives a killed spoold, so
 * a restarted spoold finds it by pid + start time and reads its outcome; nothing runs twice. */
#include <cjson/cJSON.h>
#include <signal.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "prov.h"
#include "spool.h"

struct local {
	bool busy[CONFIG_MAX_SLOTS];
};

static struct local *L(struct prov *p)
{
	return p->priv;
}

static uint64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void slots_mark(struct prov *p, const char *slots, bool busy)
{
	const struct config *c = p->cfg;
	for (const char *s = slots; *s;) {
		int v = 0;
		for (; *s >= '0' && *s <= '9'; s++)
			v = v * 10 + (*s - '0');
		for (size_t i = 0; i < c->ngpu_slots; i++)
			if (c->gpu_slots[i] == v)
				L(p)->busy[i] = busy;
		if (*s == ',')
			s++;
		else
			break;
	}
}

static size_t slots_free(struct prov *p)
{
	size_t n = 0;
	for (size_t i = 0; i < p->cfg->ngpu_slots; i++)
		n += !L(p)->busy[i];
	return n;
}

static bool local_capacity(struct prov *p, uint32_t gpus)
{
	return slots_free(p) >= gpus;
}

static void local_adopt(struct prov *p, const struct jrec *rec)
{
	slots_mark(p, rec->slots, true);
}

struct shim {
	char exit_path[CONFIG_PATH_MAX + 128];
	char log_path[CONFIG_PATH_MAX + 128];
	char status_path[CONFIG_PATH_MAX + 128];
	const char *runner, *job_path, *slots, *name, *grant;
	uint64_t lifetime_ms, grace_ms;
	int go_fd;
};

static void write_all(int fd, const char *s)
{
	size_t n = strlen(s);
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			return;
		s += w;
		n -= (size_t)w;
	}
}

static void shim_write_exit(const struct shim *s, const char *json)
{
	char tmp[CONFIG_PATH_MAX + 140];
	snprintf(tmp, sizeof tmp, "%s.tmp", s->exit_path);
	int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (fd < 0)
		return;
	write_all(fd, json);
	(void)fsync(fd);
	close(fd);
	(void)rename(tmp, s->exit_path);
	char dir[CONFIG_PATH_MAX + 128];
	snprintf(dir, sizeof dir, "%s", s->exit_path);
	char *sl = strrchr(dir, '/');
	if (sl) {
		*sl = 0;
		int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
		if (dfd >= 0) {
			(void)fsync(dfd);
			close(dfd);
		}
	}
}

static _Noreturn void shim_main(const struct shim *s)
{
	char buf[512];
	sigset_t blk;
	sigemptyset(&blk);
	sigaddset(&blk, SIGCHLD);
	sigaddset(&blk, SIGUSR1);
	sigaddset(&blk, SIGTERM);
	sigaddset(&blk, SIGINT);
	sigaddset(&blk, SIGHUP);
	sigprocmask(SIG_BLOCK, &blk, NULL); /* taken with sigtimedwait below */
	(void)setsid();
	if (s->go_fd != 3) {
		dup2(s->go_fd, 3);
	}
	close_range(4, ~0U, 0); /* drop spoold's fds: the spool lock above all */
	char go = 0;
	ssize_t n;
	do
		n = read(3, &go, 1);
	while (n < 0 && errno == EINTR);
	close(3);
	if (n != 1) {
		/* spoold died before journaling this attempt: never start it */
		shim_write_exit(s, "{\"never_started\":true}\n");
		_exit(0);
	}
	uint64_t started = 0;
	{
		struct timespec ts;
		clock_gettime(CLOCK_REALTIME, &ts);
		started = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	}
	int errp[2];
	if (pipe2(errp, O_CLOEXEC) < 0) {
		snprintf(buf, sizeof buf, "{\"exec_errno\":%d}\n", errno);
		shim_write_exit(s, buf);
		_exit(0);
	}
	setenv("CUDA_VISIBLE_DEVICES", s->slots, 1);
	setenv("SPOOLD_JOB_FILE", s->job_path, 1);
	setenv("SPOOLD_NAME", s->name, 1);
	setenv("SPOOLD_STATUS_FILE", s->status_path, 1);
	setenv("SPOOLD_GRANT", s->grant, 1);
	pid_t r = fork();
	if (r == 0) {
		setpgid(0, 0);
		sigset_t none;
		sigemptyset(&none);
		sigprocmask(SIG_SETMASK, &none, NULL);
		signal(SIGPIPE, SIG_DFL);
		int nul = open("/dev/null", O_RDONLY);
		int log = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND, 0640);
		if (nul >= 0)
			dup2(nul, 0);
		if (log >= 0) {
			dup2(log, 1);
			dup2(log, 2);
		}
		int ep = errp[1];
		if (ep != 3) {
			dup2(ep, 3);
			fcntl(3, F_SETFD, FD_CLOEXEC);
		}
		close_range(4, ~0U, 0);
		execl(s->runner, s->runner, s->job_path, (char *)NULL);
		int e = errno;
		(void)!write(3, &e, sizeof e);
		_exit(127);
	}
	if (r < 0) {
		snprintf(buf, sizeof buf, "{\"exec_errno\":%d}\n", errno);
		shim_write_exit(s, buf);
		_exit(0);
	}
	setpgid(r, r);
	close(errp[1]);
	int eno = 0;
	do
		n = read(errp[0], &eno, sizeof eno);
	while (n < 0 && errno == EINTR);
	close(errp[0]);
	int st = 0;
	if (n == (ssize_t)sizeof eno) {
		while (waitpid(r, &st, 0) < 0 && errno == EINTR)
			;
		snprintf(buf, sizeof buf, "{\"exec_errno\":%d}\n", eno);
		shim_write_exit(s, buf);
		_exit(0);
	}
	sigset_t set;
	sigemptyset(&set);
	sigaddset(&set, SIGCHLD);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGHUP);
	uint64_t t0 = mono_ms(), kill_at = 0;
	bool cancelled = false, lifetime = false, termed = false, exited = false;
	while (!exited) {
		if (waitpid(r, &st, WNOHANG) == r)
			break;
		uint64_t now = mono_ms();
		uint64_t until = termed ? kill_at : t0 + s->lifetime_ms;
		if (now >= until) {
			if (!termed) {
				lifetime = true;
				termed = true;
				kill(-r, SIGTERM);
				kill_at = now + s->grace_ms;
			} else {
				kill(-r, SIGKILL);
				kill_at = now + 1000;
			}
			continue;
		}
		uint64_t wait = until - now;
		struct timespec to = { .tv_sec = (time_t)(wait / 1000), .tv_nsec = (long)(wait % 1000) * 1000000 };
		int sig = sigtimedwait(&set, NULL, &to);
		if (sig == SIGUSR1 || sig == SIGTERM || sig == SIGINT || sig == SIGHUP) {
			if (!termed) {
				cancelled = sig == SIGUSR1 || !lifetime;
				termed = true;
				kill(-r, SIGTERM);
				kill_at = mono_ms() + s->grace_ms;
			}
		}
	}
	kill(-r, SIGKILL); /* whatever the runner left in its group */
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	uint64_t ended = (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
	snprintf(buf, sizeof buf,
		 "{\"exit\":%d,\"signal\":%d,\"cancelled\":%s,\"lifetime\":%s,\"started_ms\":%llu,\"ended_ms\":%llu}\n",
		 WIFEXITED(st) ? WEXITSTATUS(st) : -1, WIFSIGNALED(st) ? WTERMSIG(st) : 0,
		 cancelled ? "true" : "false", lifetime ? "true" : "false",
		 (unsigned long long)started, (unsigned long long)ended);
	shim_write_exit(s, buf);
	_exit(0);
}

static void paths(struct prov *p, const char *name, struct shim *s)
{
	snprintf(s->exit_path, sizeof s->exit_path, "%s/journal/%s.exit", p->spool, name);
	snprintf(s->log_path, sizeof s->log_path, "%s/journal/%s.log", p->spool, name);
	snprintf(s->status_path, sizeof s->status_path, "%s/journal/%s.status.json", p->spool, name);
}

static int local_submit(struct prov *p, const struct prov_job *j, struct jrec *rec,
			prov_record_fn record, void *ud)
{
	const struct config *c = p->cfg;
	if (slots_free(p) < j->gpus)
		return -EBUSY;
	char slots[64] = "";
	size_t got = 0, o = 0;
	for (size_t i = 0; i < c->ngpu_slots && got < j->gpus; i++) {
		if (L(p)->busy[i])
			continue;
		int w = snprintf(slots + o, sizeof slots - o, "%s%d", got ? "," : "", c->gpu_slots[i]);
		if (w < 0 || (size_t)w >= sizeof slots - o)
			return -E2BIG;
		o += (size_t)w;
		got++;
	}
	struct shim s = { .runner = c->runner, .job_path = j->job_path, .slots = slots,
			  .name = j->name, .grant = j->grant ? j->grant : "",
			  .lifetime_ms = j->lifetime_sec * 1000, .grace_ms = c->kill_grace_sec * 1000 };
	paths(p, j->name, &s);
	(void)unlink(s.exit_path); /* only when resubmitting an attempt that never started */
	int go[2];
	if (pipe2(go, O_CLOEXEC) < 0)
		return phi_neg_errno();
	s.go_fd = go[0];
	pid_t pid = fork();
	if (pid < 0) {
		int r = phi_neg_errno();
		close(go[0]);
		close(go[1]);
		return r;
	}
	if (pid == 0)
		shim_main(&s);
	close(go[0]);
	uint64_t st = 0;
	bool z;
	int r = proc_starttime(pid, &st, &z);
	if (r < 0) {
		close(go[1]); /* the supervisor sees EOF and exits without starting anything */
		return r;
	}
	rec->pid = pid;
	rec->starttime = st;
	snprintf(rec->slots, sizeof rec->slots, "%s", slots);
	snprintf(rec->backend_id, sizeof rec->backend_id, "%s", j->name);
	r = record(ud, rec);
	if (r < 0) {
		close(go[1]);
		return r;
	}
	slots_mark(p, slots, true);
	char g = 'g';
	if (write(go[1], &g, 1) != 1)
		r = phi_neg_errno();
	close(go[1]);
	return r;
}

static int read_exit(const char *path, struct prov_result *res)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return phi_neg_errno();
	char buf[1024];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	if (n <= 0)
		return -EBADMSG;
	cJSON *o = cJSON_ParseWithLength(buf, (size_t)n);
	if (!o)
		return -EBADMSG;
	struct prov_result r = { .exit_status = -1 };
	const cJSON *it;
	if (cJSON_IsTrue(cJSON_GetObjectItem(o, "never_started")))
		r.st = PS_NONE;
	else if ((it = cJSON_GetObjectItem(o, "exec_errno")) && cJSON_IsNumber(it))
		r.st = PS_PROVFAIL;
	else {
		r.st = PS_EXITED;
		if (cJSON_IsNumber(it = cJSON_GetObjectItem(o, "exit")))
			r.exit_status = it->valueint;
		if (cJSON_IsNumber(it = cJSON_GetObjectItem(o, "signal")))
			r.term_signal = it->valueint;
		r.cancelled = cJSON_IsTrue(cJSON_GetObjectItem(o, "cancelled"));
		r.lifetime = cJSON_IsTrue(cJSON_GetObjectItem(o, "lifetime"));
		if (cJSON_IsNumber(it = cJSON_GetObjectItem(o, "started_ms")))
			r.started_ms = (uint64_t)it->valuedouble;
		if (cJSON_IsNumber(it = cJSON_GetObjectItem(o, "ended_ms")))
			r.ended_ms = (uint64_t)it->valuedouble;
	}
	cJSON_Delete(o);
	*res = r;
	return 0;
}

static bool alive(const struct jrec *rec)
{
	uint64_t st;
	bool z;
	return rec->pid > 0 && proc_starttime(rec->pid, &st, &z) == 0 && st == rec->starttime && !z;
}

static int local_poll(struct prov *p, const struct jrec *rec, struct prov_result *ret)
{
	struct shim s;
	paths(p, rec->backend_id, &s);
	if (!rec->backend_id[0] || rec->pid <= 0) {
		*ret = (struct prov_result){ .st = PS_NONE, .exit_status = -1 };
		return 0;
	}
	if (read_exit(s.exit_path, ret) == 0)
		return 0;
	if (alive(rec)) {
		*ret = (struct prov_result){ .st = PS_RUNNING, .exit_status = -1 };
		return 0;
	}
	/* it may have written its outcome just before it ended */
	if (read_exit(s.exit_path, ret) == 0)
		return 0;
	*ret = (struct prov_result){ .st = PS_LOST, .exit_status = -1 };
	return 0;
}

static int local_cancel(struct prov *p, const struct jrec *rec)
{
	(void)p;
	if (!alive(rec))
		return -ESRCH;
	return RET_NERRNO(kill((pid_t)rec->pid, SIGUSR1));
}

static int local_cleanup(struct prov *p, const struct jrec *rec)
{
	slots_mark(p, rec->slots, false);
	return 0;
}

static void local_free(struct prov *p)
{
	free(p->priv);
	free(p);
}

static const struct prov_ops local_ops = {
	.name = "local",
	.submit = local_submit,
	.poll = local_poll,
	.cancel = local_cancel,
	.cleanup = local_cleanup,
	.capacity = local_capacity,
	.adopt = local_adopt,
	.free = local_free,
};

int prov_local_new(const struct config *c, const char *spool, struct prov **ret)
{
	struct prov *p = calloc(1, sizeof *p);
	struct local *l = calloc(1, sizeof *l);
	if (!p || !l) {
		free(p);
		free(l);
		return -ENOMEM;
	}
	p->ops = &local_ops;
	p->cfg = c;
	p->priv = l;
	snprintf(p->spool, sizeof p->spool, "%s", spool);
	*ret = p;
	return 0;
}
