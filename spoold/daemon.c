/* daemon.c: see daemon.h and docs/job-schema.md ("State machine"). Single-threaded: one poll
 * loop over inotify and a signalfd; every transition is journaled before its side effect. */
#include "daemon.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <glob.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/inotify.h>
#include <sys/signalfd.h>
#include <sys/wait.h>
#include <time.h>

#include "job.h"
#include "metrics.h"
#include "phifs/notify.h"
#include "prov.h"
#include "sched.h"
#include "spool.h"

#define SAMPLES 1024

struct daemon {
	const struct config *cfg;
	const struct daemon_opts *opts;
	struct spool sp;
	struct prov *prov;
	struct hooks hooks;
	struct jrec **jobs;
	size_t njobs, cap;
	int ifd, wd_in, wd_ctl, sfd;
	struct sched_fails fails;
	uint64_t prov_failures, done, failed, refused;
	uint64_t samples[SAMPLES];
	size_t nsamples, shead;
	uint64_t cost_day, cost_month;
	long day_key, month_key;
	int day_level, month_level;
	bool alert_fail, alert_queue;
	uint64_t last_wd_ms;
	bool stop;
	/* Group commit. While lazy, moves and records are written in order but not fsynced
	 * (dirty says some are pending); flush() then makes all of them durable with one
	 * syncfs(2) of the spool's filesystem. Each fsync costs a filesystem journal commit
	 * (5 ms here), so per-job fsyncs bound the spool to ~30 jobs/s. A flush always comes
	 * before the side effect that depends on it: the claims before any submit, the
	 * intake batch before its jobs can start. A kill -9 loses nothing either way (the page
	 * cache survives it); a power loss may undo the unflushed part, which recovery handles
	 * as it handles a crash just before it. */
	bool lazy, dirty;
	/* the intake batch: submissions are audited once the batch is durable */
	struct {
		bool on;
		struct job **jobs;
		size_t n, cap;
	} batch;
};

static void logf_(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void logf_(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("spoold: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
}

static void keys_of(uint64_t ms, long *day, long *month)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	*month = (tm.tm_year + 1900) * 100L + tm.tm_mon + 1;
	*day = *month * 100 + tm.tm_mday;
}

static void audit(struct daemon *d, enum hook_event ev, const struct jrec *r, const struct job *j,
		  const char *outcome, const char *reason)
{
	struct hook_audit a = {
		.event = ev, .job_id = r ? r->id : NULL, .job = j,
		.submitter_uid = r ? r->submitter_uid : (uid_t)-1, .outcome = outcome,
		.reason = reason ? reason : "", .backend_id = r ? r->backend_id : "",
		.attempt = r ? r->attempt : 0,
	};
	int e = d->hooks.ops->audit(d->hooks.ud, &a);
	if (e < 0)
		logf_("audit hook failed for event %s: %s", hook_event_name(ev), strerror(-e));
}

/* Sync now, or (lazy) note that flush() has work to do. */
static bool sync_now(struct daemon *d)
{
	if (d->lazy) {
		d->dirty = true;
		return false;
	}
	return true;
}

static int flush(struct daemon *d)
{
	if (!d->dirty)
		return 0;
	d->dirty = false;
	int e = RET_NERRNO(syncfs(d->sp.root));
	if (e < 0)
		logf_("cannot sync the spool: %s", strerror(-e));
	return e;
}

static int save(struct daemon *d, struct jrec *r)
{
	int e = spool_journal_save(&d->sp, r, sync_now(d) ? SPOOL_SYNC_FILE | SPOOL_SYNC_DIR : SPOOL_SYNC_NONE);
	if (e < 0)
		logf_("job %s: cannot write journal: %s", r->id, strerror(-e));
	return e;
}

static void job_name(const char *id, char out[JOB_ID_MAX_NAME])
{
	snprintf(out, JOB_ID_MAX_NAME, "%s.json", id);
}

/* ---------- jobs in memory (queued and active only) ---------- */

static int jobs_add(struct daemon *d, const struct jrec *r)
{
	if (d->njobs == d->cap) {
		size_t nc = d->cap ? d->cap * 2 : 64;
		struct jrec **n = realloc(d->jobs, nc * sizeof *n);
		if (!n)
			return -ENOMEM;
		d->jobs = n;
		d->cap = nc;
	}
	struct jrec *c = malloc(sizeof *c);
	if (!c)
		return -ENOMEM;
	*c = *r;
	d->jobs[d->njobs++] = c;
	return 0;
}

static void jobs_del(struct daemon *d, struct jrec *r)
{
	for (size_t i = 0; i < d->njobs; i++)
		if (d->jobs[i] == r) {
			d->jobs[i] = d->jobs[--d->njobs];
			free(r);
			return;
		}
}

static struct jrec *jobs_find(struct daemon *d, const char *id)
{
	for (size_t i = 0; i < d->njobs; i++)
		if (!strcmp(d->jobs[i]->id, id))
			return d->jobs[i];
	return NULL;
}

static enum spool_dir dir_of(const struct jrec *r)
{
	return r->state == JS_QUEUED ? SD_QUEUE : SD_ACTIVE;
}

/* Parse the job file where it lies now (for the hooks). */
static int load_job(struct daemon *d, enum spool_dir dir, const char *id, struct job **ret)
{
	char name[JOB_ID_MAX_NAME], err[JOB_ERR_MAX];
	job_name(id, name);
	_cleanup_buf_ struct phi_buf b = { 0 };
	int e = spool_read_file(d->sp.d[dir], name, d->cfg->max_job_bytes, &b, NULL, false);
	if (e < 0)
		return e;
	return job_parse(b.p, b.len, ret, err, sizeof err);
}

static void read_tokens(struct daemon *d, struct jrec *r)
{
	char name[160];
	snprintf(name, sizeof name, "%s.status.json", r->backend_id);
	_cleanup_buf_ struct phi_buf b = { 0 };
	if (spool_read_file(d->sp.d[SD_JOURNAL], name, 65536, &b, NULL, false) < 0)
		return;
	cJSON *o = cJSON_ParseWithLength((const char *)b.p, b.len);
	if (!o)
		return;
	const cJSON *it;
	if (cJSON_IsNumber(it = cJSON_GetObjectItem(o, "tokens_in")) && it->valuedouble >= 0)
		r->tokens_in = (uint64_t)it->valuedouble;
	if (cJSON_IsNumber(it = cJSON_GetObjectItem(o, "tokens_out")) && it->valuedouble >= 0)
		r->tokens_out = (uint64_t)it->valuedouble;
	cJSON_Delete(o);
}

static void budget_alerts(struct daemon *d)
{
	int l = sched_budget_level(d->cost_day, d->cfg->budget_day_micro);
	if (l > d->day_level)
		logf_("alert: daily budget %d%% used", l);
	d->day_level = l;
	l = sched_budget_level(d->cost_month, d->cfg->budget_month_micro);
	if (l > d->month_level)
		logf_("alert: monthly budget %d%% used", l);
	d->month_level = l;
}

/* The end of a job: result record, journal, then the move into done/ or failed/. */
static void finalize(struct daemon *d, struct jrec *r, bool ok, const char *reason,
		     const struct prov_result *res)
{
	uint64_t now = now_ms();
	enum spool_dir from = r->state == JS_RECEIVED ? SD_INCOMING : dir_of(r);
	if (res && res->started_ms)
		r->started_ms = res->started_ms;
	r->ended_ms = res && res->ended_ms ? res->ended_ms : now;
	if (res) {
		r->exit_status = res->exit_status;
		r->term_signal = res->term_signal;
	}
	if (r->backend_id[0])
		read_tokens(d, r);
	if (r->started_ms && r->tier >= 0 && r->ended_ms > r->started_ms)
		r->cost_micro = sched_cost(d->cfg->cost_per_min_micro[r->tier], r->ended_ms - r->started_ms);
	snprintf(r->reason, sizeof r->reason, "%s", reason ? reason : "");
	jrec_set_state(r, ok ? JS_DONE : JS_FAILED, now);
	enum spool_dir to = ok ? SD_DONE : SD_FAILED;
	int e = spool_result_save(&d->sp, to, r, sync_now(d) ? SPOOL_SYNC_FILE : SPOOL_SYNC_NONE);
	if (e == 0)
		e = save(d, r);
	if (e == 0 && from != SD_INCOMING) {
		char name[JOB_ID_MAX_NAME];
		job_name(r->id, name);
		e = spool_move(&d->sp, from, name, to, name, sync_now(d));
	}
	if (e < 0)
		logf_("job %s: cannot finish: %s", r->id, strerror(-e));
	if (r->grant[0]) {
		int g = d->hooks.ops->grant_revoke(d->hooks.ud, r->id, r->grant);
		if (g < 0)
			logf_("job %s: grant revoke failed: %s", r->id, strerror(-g));
	}
	if (from == SD_ACTIVE)
		(void)d->prov->ops->cleanup(d->prov, r);
	audit(d, HOOK_END, r, NULL, ok ? "done" : "failed", r->reason);
	logf_("job %s %s%s%s", r->id, ok ? "done" : "failed", r->reason[0] ? ": " : "", r->reason);
	d->cost_day += r->cost_micro;
	d->cost_month += r->cost_micro;
	budget_alerts(d);
	if (ok)
		d->done++;
	else
		d->failed++;
	jobs_del(d, r);
}

static void prov_failure(struct daemon *d)
{
	uint64_t now = now_ms();
	d->prov_failures++;
	sched_fail_add(&d->fails, now);
	bool a = sched_fail_alert(&d->fails, now, d->cfg);
	if (a && !d->alert_fail)
		logf_("alert: more than %llu provisioning failures in %llu s",
		      (unsigned long long)d->cfg->prov_fail_alert,
		      (unsigned long long)d->cfg->prov_fail_window_sec);
	d->alert_fail = a;
}

/* Back to the queue after a failed attempt (count) or one that never started (!count). */
static void requeue(struct daemon *d, struct jrec *r, bool count, const char *why)
{
	uint64_t now = now_ms();
	if (r->grant[0]) {
		(void)d->hooks.ops->grant_revoke(d->hooks.ud, r->id, r->grant);
		r->grant[0] = 0;
	}
	(void)d->prov->ops->cleanup(d->prov, r);
	if (count) {
		prov_failure(d);
		r->failures++;
		if (r->failures >= d->cfg->max_attempts) {
			char reason[200];
			snprintf(reason, sizeof reason, "%s (gave up after %u attempts)", why, r->failures);
			finalize(d, r, false, reason, NULL);
			return;
		}
		r->next_try_ms = now + sched_backoff_ms(d->cfg, r->failures);
		logf_("job %s attempt %u: %s; retry in %llu ms", r->id, r->attempt, why,
		      (unsigned long long)(r->next_try_ms - now));
	} else {
		r->attempt--; /* the same attempt again: it never ran */
		r->next_try_ms = 0;
	}
	char name[JOB_ID_MAX_NAME];
	job_name(r->id, name);
	if (r->state != JS_QUEUED) {
		int e = spool_move(&d->sp, SD_ACTIVE, name, SD_QUEUE, name, sync_now(d));
		if (e < 0)
			logf_("job %s: cannot requeue: %s", r->id, strerror(-e));
	}
	r->pid = 0;
	r->starttime = 0;
	r->slots[0] = 0;
	r->backend_id[0] = 0;
	r->slurm_id[0] = 0;
	jrec_set_state(r, JS_QUEUED, now);
	jrec_event(r, count ? "retry-wait" : "resubmit", now);
	(void)save(d, r);
}

static int record_cb(void *ud, struct jrec *r)
{
	struct daemon *d = ud;
	uint64_t now = now_ms();
	r->started_ms = now;
	jrec_set_state(r, JS_RUNNING, now);
	return save(d, r);
}

/* The first half of a start: move the job to active/ and journal the new attempt. The
 * caller flushes before launch(), so the attempt is durable before anything is provisioned
 * under its name. */
static int claim(struct daemon *d, struct jrec *r)
{
	uint64_t now = now_ms();
	char name[JOB_ID_MAX_NAME], pname[96];
	job_name(r->id, name);
	int e = spool_move(&d->sp, SD_QUEUE, name, SD_ACTIVE, name, sync_now(d));
	if (e < 0) {
		logf_("job %s: cannot claim: %s", r->id, strerror(-e));
		return e;
	}
	r->attempt++;
	r->deferred = false;
	r->next_try_ms = 0;
	prov_name(r->id, r->attempt, pname);
	snprintf(r->backend_id, sizeof r->backend_id, "%s", pname);
	snprintf(r->backend, sizeof r->backend, "%s", d->prov->ops->name);
	jrec_set_state(r, JS_STARTING, now);
	return save(d, r);
}

/* The second half: grant, submit, record. */
static void launch(struct daemon *d, struct jrec *r)
{
	uint64_t now = now_ms();
	char name[JOB_ID_MAX_NAME], pname[96], path[CONFIG_PATH_MAX + 128];
	prov_name(r->id, r->attempt, pname);
	job_name(r->id, name);
	_cleanup_job_ struct job *j = NULL;
	int e = load_job(d, SD_ACTIVE, r->id, &j);
	if (e < 0) {
		finalize(d, r, false, "(file): the job file could not be read again", NULL);
		return;
	}
	e = d->hooks.ops->grant_issue(d->hooks.ud, j, pname, now,
				      now + (d->cfg->lifetime_sec + d->cfg->kill_grace_sec) * 1000,
				      r->grant, sizeof r->grant);
	if (e < 0) {
		r->grant[0] = 0;
		requeue(d, r, true, "grant: could not be issued");
		return;
	}
	snprintf(path, sizeof path, "%s/active/%s", d->cfg->spool_dir, name);
	struct prov_job pj = { .name = pname, .job_path = path, .gpus = r->gpus,
			       .lifetime_sec = d->cfg->lifetime_sec, .grant = r->grant };
	e = d->prov->ops->submit(d->prov, &pj, r, record_cb, d);
	if (e < 0) {
		char why[128];
		snprintf(why, sizeof why, "provisioning: submit failed (%s)", strerror(-e));
		requeue(d, r, true, why);
		return;
	}
	if (r->state != JS_RUNNING) {
		r->started_ms = now;
		jrec_set_state(r, JS_RUNNING, now);
		(void)save(d, r);
	}
	d->samples[d->shead] = now > r->received_ms ? now - r->received_ms : 0;
	d->shead = (d->shead + 1) % SAMPLES;
	if (d->nsamples < SAMPLES)
		d->nsamples++;
	audit(d, HOOK_START, r, j, "ok", "");
}

/* ---------- intake ---------- */

static int estimate(struct daemon *d, const struct job *j, uint64_t *tokens, char *err, size_t n)
{
	if (!d->cfg->documents_root[0]) {
		if (!j->estimated_tokens) {
			snprintf(err, n, "documents: size unknown (no documents_root configured and no estimated_tokens)");
			return -EINVAL;
		}
		*tokens = j->estimated_tokens;
		return 0;
	}
	uint64_t bytes = 0;
	for (size_t i = 0; i < j->ndocuments; i++) {
		char pat[CONFIG_PATH_MAX + 512];
		snprintf(pat, sizeof pat, "%s/%s/%s", d->cfg->documents_root, j->patient, j->documents[i]);
		glob_t g;
		int r = glob(pat, GLOB_NOSORT | GLOB_ERR, NULL, &g);
		if (r != 0) {
			if (r != GLOB_NOMATCH)
				globfree(&g);
			snprintf(err, n, "documents[%zu]: matches no file", i);
			return -ENOENT;
		}
		size_t regular = 0;
		for (size_t k = 0; k < g.gl_pathc; k++) {
			struct stat st;
			/* lstat: a symlink is not followed out of the patient's directory */
			if (lstat(g.gl_pathv[k], &st) == 0 && S_ISREG(st.st_mode)) {
				bytes += (uint64_t)st.st_size;
				regular++;
			}
		}
		globfree(&g);
		if (!regular) {
			snprintf(err, n, "documents[%zu]: matches no regular file", i);
			return -ENOENT;
		}
	}
	*tokens = (bytes + d->cfg->bytes_per_token - 1) / d->cfg->bytes_per_token;
	return 0;
}

static void reject(struct daemon *d, const char *name, unsigned long ino, const char *reason)
{
	int e = spool_reject(&d->sp, name, ino, reason);
	if (e < 0 && e != -ENOENT) {
		logf_("file (inode %lu): cannot move aside: %s", ino, strerror(-e));
		return;
	}
	d->refused++;
	/* no file name in the log: admins name files after patients */
	logf_("file (inode %lu) refused: %s", ino, reason);
	audit(d, HOOK_REFUSE, NULL, NULL, "refused", reason);
}

static void intake(struct daemon *d, const char *name)
{
	if (name[0] == '.' || (strlen(name) > 4 && !strcmp(name + strlen(name) - 4, ".tmp")))
		return; /* temp files of writers that finish with a rename */
	_cleanup_buf_ struct phi_buf b = { 0 };
	struct stat st = { 0 };
	char err[JOB_ERR_MAX + 64];
	int e = spool_read_file(d->sp.d[SD_INCOMING], name, d->cfg->max_job_bytes, &b, &st, true);
	if (e == -ENOENT || e == -EBUSY)
		return; /* already taken, or still being written: its close will bring it back */
	if (e == -ELOOP) {
		struct stat ls;
		if (fstatat(d->sp.d[SD_INCOMING], name, &ls, AT_SYMLINK_NOFOLLOW) < 0)
			return;
		reject(d, name, (unsigned long)ls.st_ino, "(file): symbolic link refused");
		return;
	}
	if (e == -EISDIR || e == -ENXIO || e == -EWOULDBLOCK) {
		reject(d, name, (unsigned long)st.st_ino, "(file): not a regular file");
		return;
	}
	if (e == -EFBIG) {
		snprintf(err, sizeof err, "(file): larger than %llu bytes", (unsigned long long)d->cfg->max_job_bytes);
		reject(d, name, (unsigned long)st.st_ino, err);
		return;
	}
	if (e < 0) {
		logf_("incoming file: read failed: %s", strerror(-e));
		return;
	}
	if (uid_in_group(st.st_uid, d->cfg->admin_gid) != 1) {
		snprintf(err, sizeof err, "(owner): uid %u is not a member of the admin group", (unsigned)st.st_uid);
		reject(d, name, (unsigned long)st.st_ino, err);
		return;
	}
	if (st.st_nlink > 1) {
		reject(d, name, (unsigned long)st.st_ino, "(file): has more than one hard link");
		return;
	}
	_cleanup_job_ struct job *j = NULL;
	e = job_parse(b.p, b.len, &j, err, sizeof err);
	if (e < 0) {
		if (e == -ENOMEM)
			return;
		reject(d, name, (unsigned long)st.st_ino, err);
		return;
	}
	struct jrec r;
	char jn[JOB_ID_MAX_NAME];
	job_name(j->id, jn);
	e = spool_journal_load(&d->sp, j->id, &r);
	if (e == 0 && (r.state != JS_RECEIVED || faccessat(d->sp.d[SD_QUEUE], jn, F_OK, 0) == 0)) {
		reject(d, name, (unsigned long)st.st_ino, "id: a job with this id already exists");
		return;
	}
	if (e < 0) {
		uint64_t now = now_ms();
		jrec_init(&r, j->id);
		r.priority = j->priority;
		r.submitter_uid = st.st_uid;
		r.received_ms = now;
		r.deadline_ms = j->deadline_ms;
		snprintf(r.backend, sizeof r.backend, "%s", d->prov->ops->name);
		jrec_set_state(&r, JS_RECEIVED, now);
	}
	uint64_t tokens = 0;
	char why[200] = "";
	e = estimate(d, j, &tokens, why, sizeof why);
	if (e == 0) {
		r.est_tokens = tokens;
		int t = sched_tier(tokens);
		if (t < 0) {
			snprintf(why, sizeof why, "documents: about %llu tokens, more than the largest tier (%d)",
				 (unsigned long long)tokens, TIER_LARGE_MAX);
		} else {
			r.tier = t;
			r.gpus = sched_tier_gpus(t);
			if (d->cfg->backend == BACKEND_LOCAL && r.gpus > d->cfg->ngpu_slots)
				snprintf(why, sizeof why, "tier: %s needs %u GPUs, %zu slots configured",
					 sched_tier_name(t), r.gpus, d->cfg->ngpu_slots);
		}
	}
	if (why[0]) {
		/* the journal first, then the move */
		if (save(d, &r) < 0)
			return;
		/* a valid job we will not run: failed/ with a result record that says why */
		e = spool_move(&d->sp, SD_INCOMING, name, SD_FAILED, jn, true);
		if (e < 0) {
			logf_("job %s: cannot move to failed/: %s", r.id, strerror(-e));
			return;
		}
		audit(d, HOOK_REFUSE, &r, j, "refused", why);
		/* state still JS_RECEIVED: finalize does not move the file (done above) */
		finalize(d, &r, false, why, NULL);
		return;
	}
	/* the journal first, then the move */
	if (save(d, &r) < 0)
		return;
	e = spool_move(&d->sp, SD_INCOMING, name, SD_QUEUE, jn, sync_now(d));
	if (e < 0) {
		logf_("job %s: cannot queue: %s", r.id, strerror(-e));
		return;
	}
	jrec_set_state(&r, JS_QUEUED, now_ms());
	if (save(d, &r) < 0 || jobs_add(d, &r) < 0)
		return;
	if (d->batch.on) {
		if (d->batch.n == d->batch.cap) {
			size_t nc = d->batch.cap ? d->batch.cap * 2 : 64;
			struct job **nj = realloc(d->batch.jobs, nc * sizeof *nj);
			if (!nj) {
				logf_("job %s: out of memory for its audit record", r.id);
				return;
			}
			d->batch.jobs = nj;
			d->batch.cap = nc;
		}
		d->batch.jobs[d->batch.n++] = TAKE_PTR(j);
		return;
	}
	audit(d, HOOK_SUBMIT, &r, j, "ok", "");
}

static void batch_begin(struct daemon *d)
{
	d->batch.on = true;
	d->lazy = true;
}

/* The batch's group commit, then its submissions are audited. */
static void batch_end(struct daemon *d)
{
	d->batch.on = false;
	d->lazy = false;
	(void)flush(d);
	for (size_t i = 0; i < d->batch.n; i++) {
		struct job *j = d->batch.jobs[i];
		struct jrec *r = NULL;
		/* newest first: the batch's jobs were appended last */
		for (size_t k = d->njobs; k-- > 0 && !r;)
			if (!strcmp(d->jobs[k]->id, j->id))
				r = d->jobs[k];
		if (r)
			audit(d, HOOK_SUBMIT, r, j, "ok", "");
		job_free(j);
	}
	d->batch.n = 0;
}

static void rescan(struct daemon *d, enum spool_dir which, void (*fn)(struct daemon *, const char *))
{
	int fd = openat(d->sp.d[which], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return;
	DIR *dir = fdopendir(fd);
	if (!dir) {
		close(fd);
		return;
	}
	/* collect first: fn renames entries out of this directory */
	char **names = NULL;
	size_t n = 0, cap = 0;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.')
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 256;
			char **nn = realloc(names, cap * sizeof *nn);
			if (!nn)
				break;
			names = nn;
		}
		if (!(names[n] = strdup(de->d_name)))
			break;
		n++;
	}
	closedir(dir);
	for (size_t i = 0; i < n; i++) {
		fn(d, names[i]);
		free(names[i]);
	}
	free(names);
}

/* ---------- operator requests: ctl/cancel.<id>, ctl/retry.<id> ---------- */

static void retry_failed(struct daemon *d, const char *id)
{
	struct jrec r;
	char jn[JOB_ID_MAX_NAME], rn[128], kn[160];
	job_name(id, jn);
	if (spool_journal_load(&d->sp, id, &r) < 0 || r.state != JS_FAILED ||
	    faccessat(d->sp.d[SD_FAILED], jn, F_OK, 0) < 0) {
		logf_("retry %s: not a failed job", id);
		return;
	}
	uint64_t now = now_ms();
	/* keep the old result record in the journal: nothing is deleted */
	snprintf(rn, sizeof rn, "%s.result.json", id);
	snprintf(kn, sizeof kn, "%s.result.attempt%u.json", id, r.attempt);
	(void)renameat(d->sp.d[SD_FAILED], rn, d->sp.d[SD_JOURNAL], kn);
	r.failures = 0;
	r.cancel_requested = r.lifetime_exceeded = false;
	r.reason[0] = 0;
	r.exit_status = -1;
	r.term_signal = 0;
	r.backend_id[0] = r.grant[0] = 0;
	r.pid = 0;
	r.ended_ms = r.next_try_ms = r.cost_micro = 0;
	jrec_event(&r, "operator-retry", now);
	jrec_set_state(&r, JS_QUEUED, now);
	if (save(d, &r) < 0)
		return;
	if (spool_move(&d->sp, SD_FAILED, jn, SD_QUEUE, jn, true) < 0)
		return;
	d->failed--;
	(void)jobs_add(d, &r);
	logf_("job %s: requeued by operator", id);
}

static void cancel(struct daemon *d, const char *id)
{
	struct jrec *r = jobs_find(d, id);
	if (!r) {
		logf_("cancel %s: no queued or running job", id);
		return;
	}
	audit(d, HOOK_CANCEL, r, NULL, "ok", "");
	if (r->state == JS_QUEUED) {
		finalize(d, r, false, "cancelled by operator", NULL);
		return;
	}
	r->cancel_requested = true;
	jrec_event(r, "cancel-requested", now_ms());
	(void)save(d, r);
	(void)d->prov->ops->cancel(d->prov, r);
}

static void ctl(struct daemon *d, const char *name)
{
	struct stat st;
	if (fstatat(d->sp.d[SD_CTL], name, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return;
	bool ok = S_ISREG(st.st_mode) && uid_in_group(st.st_uid, d->cfg->admin_gid) == 1;
	(void)unlinkat(d->sp.d[SD_CTL], name, 0);
	if (!ok) {
		logf_("control request from uid %u refused (not a regular file of an admin)", (unsigned)st.st_uid);
		return;
	}
	if (!strncmp(name, "cancel.", 7) && job_id_valid(name + 7) == 0)
		cancel(d, name + 7);
	else if (!strncmp(name, "retry.", 6) && job_id_valid(name + 6) == 0)
		retry_failed(d, name + 6);
}

/* ---------- progress of active jobs ---------- */

static void check_active(struct daemon *d, struct jrec *r)
{
	struct prov_result res;
	if (d->prov->ops->poll(d->prov, r, &res) < 0)
		return;
	uint64_t now = now_ms();
	char why[200];
	if (!r->slurm_id[0] && res.slurm_id[0] && res.st != PS_NONE) {
		/* submitted by a spoold killed before it journalled the id: adopt it (scancel and
		 * the result need the id; the lifetime counts from now) */
		snprintf(r->slurm_id, sizeof r->slurm_id, "%s", res.slurm_id);
		logf_("job %s: adopted Slurm job %s (%s)", r->id, r->slurm_id, r->backend_id);
		if (r->state == JS_STARTING) {
			r->started_ms = now;
			jrec_set_state(r, JS_RUNNING, now);
		}
		(void)save(d, r);
	}
	switch (res.st) {
	case PS_PENDING:
	case PS_RUNNING:
		if (!r->lifetime_exceeded && r->started_ms &&
		    sched_lifetime_expired(r->started_ms, now, d->cfg->lifetime_sec)) {
			r->lifetime_exceeded = true;
			jrec_event(r, "lifetime-exceeded", now);
			(void)save(d, r);
			(void)d->prov->ops->cancel(d->prov, r);
		}
		return;
	case PS_NONE:
		requeue(d, r, false, "never started");
		return;
	case PS_PROVFAIL:
		requeue(d, r, true, "provisioning: the instance could not be started");
		return;
	case PS_LOST:
		requeue(d, r, true, "lost: the instance ended without an outcome");
		return;
	case PS_EXITED:
		break;
	}
	if (res.lifetime || r->lifetime_exceeded) {
		snprintf(why, sizeof why, "lifetime: exceeded %llu s, terminated",
			 (unsigned long long)d->cfg->lifetime_sec);
		finalize(d, r, false, why, &res);
	} else if (res.cancelled || r->cancel_requested)
		finalize(d, r, false, "cancelled by operator", &res);
	else if (res.exit_status == 0)
		finalize(d, r, true, "", &res);
	else if (res.term_signal) {
		snprintf(why, sizeof why, "runner: killed by signal %d", res.term_signal);
		requeue(d, r, true, why);
	} else {
		snprintf(why, sizeof why, "runner: exit status %d", res.exit_status);
		finalize(d, r, false, why, &res);
	}
}

static int cmp_jobs(const void *a, const void *b)
{
	const struct jrec *x = *(struct jrec *const *)a, *y = *(struct jrec *const *)b;
	return sched_cmp(x->priority, x->received_ms, x->id, y->priority, y->received_ms, y->id);
}

static void schedule(struct daemon *d)
{
	_cleanup_free_ struct jrec **claimed = NULL;
	size_t nclaimed = 0, cap = 0;
	uint64_t now = now_ms();
	size_t running = 0;
	uint64_t reserved = 0;
	for (size_t i = 0; i < d->njobs; i++)
		if (d->jobs[i]->state != JS_QUEUED) {
			running++;
			if (d->jobs[i]->tier >= 0)
				reserved += sched_reserve(d->cfg, d->jobs[i]->tier);
		}
	if (d->njobs) /* qsort(NULL, 0) is undefined */
		qsort(d->jobs, d->njobs, sizeof *d->jobs, cmp_jobs);
	for (size_t i = 0; i < d->njobs && running < d->cfg->max_instances; i++) {
		struct jrec *r = d->jobs[i];
		if (r->state != JS_QUEUED || r->next_try_ms > now)
			continue;
		if (r->deadline_ms && now > r->deadline_ms) {
			finalize(d, r, false, "deadline: passed before the job could start", NULL);
			i--; /* finalize removed jobs[i] (swapped in the last one) */
			continue;
		}
		uint64_t cost = sched_reserve(d->cfg, r->tier);
		if (!sched_budget_ok(d->cost_day, reserved, cost, d->cfg->budget_day_micro) ||
		    !sched_budget_ok(d->cost_month, reserved, cost, d->cfg->budget_month_micro)) {
			if (!r->deferred) {
				r->deferred = true;
				jrec_event(r, "deferred-budget", now);
				(void)save(d, r);
			}
			continue;
		}
		if (!d->prov->ops->capacity(d->prov, r->gpus))
			continue;
		reserved += cost;
		running++;
		if (nclaimed == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct jrec **n = realloc(claimed, nc * sizeof *n);
			if (!n)
				break;
			claimed = n;
			cap = nc;
		}
		if (claim(d, r) == 0)
			claimed[nclaimed++] = r;
	}
	/* every claim durable before the first submit */
	bool was_lazy = d->lazy;
	d->lazy = false;
	(void)flush(d);
	d->lazy = was_lazy;
	for (size_t i = 0; i < nclaimed; i++)
		launch(d, claimed[i]);
}

static void counts(struct daemon *d, struct metrics *m)
{
	*m = (struct metrics){ 0 };
	for (size_t i = 0; i < d->njobs; i++) {
		if (d->jobs[i]->state == JS_QUEUED) {
			m->queued++;
			m->deferred += d->jobs[i]->deferred;
		} else
			m->running++;
	}
	m->done = d->done;
	m->failed = d->failed;
	m->refused = d->refused;
	m->prov_failures = d->prov_failures;
	uint64_t tmp[SAMPLES];
	memcpy(tmp, d->samples, d->nsamples * sizeof *tmp);
	m->start_p50_ms = sched_percentile(tmp, d->nsamples, 50);
	m->start_p95_ms = sched_percentile(tmp, d->nsamples, 95);
	m->cost_day_micro = d->cost_day;
	m->cost_month_micro = d->cost_month;
	m->budget_day_micro = d->cfg->budget_day_micro;
	m->budget_month_micro = d->cfg->budget_month_micro;
	m->budget_day_level = d->day_level;
	m->budget_month_level = d->month_level;
	m->alert_prov_failures = sched_fail_alert(&d->fails, now_ms(), d->cfg);
	m->alert_queue = sched_queue_alert(m->queued, d->cfg);
}

static void tick(struct daemon *d)
{
	uint64_t now = now_ms();
	long day, month;
	keys_of(now, &day, &month);
	if (day != d->day_key) {
		d->day_key = day;
		d->cost_day = 0;
		d->day_level = 0;
	}
	if (month != d->month_key) {
		d->month_key = month;
		d->cost_month = 0;
		d->month_level = 0;
	}
	d->lazy = true;
	if (d->prov->ops->refresh)
		(void)d->prov->ops->refresh(d->prov);
	for (size_t i = 0; i < d->njobs;) {
		struct jrec *r = d->jobs[i];
		size_t before = d->njobs;
		if (r->state == JS_STARTING || r->state == JS_RUNNING)
			check_active(d, r);
		if (d->njobs == before && d->jobs[i] == r)
			i++;
	}
	schedule(d);
	d->lazy = false;
	(void)flush(d);
	struct metrics m;
	counts(d, &m);
	d->alert_fail = m.alert_prov_failures;
	if (m.alert_queue && !d->alert_queue)
		logf_("alert: queue length %llu is over %llu", (unsigned long long)m.queued,
		      (unsigned long long)d->cfg->queue_alert);
	d->alert_queue = m.alert_queue;
	if (d->cfg->metrics_file[0]) {
		int e = metrics_write(&m, d->cfg->metrics_file);
		if (e < 0)
			logf_("cannot write metrics: %s", strerror(-e));
	}
	char st[160];
	snprintf(st, sizeof st, "STATUS=queued %llu, running %llu, done %llu, failed %llu",
		 (unsigned long long)m.queued, (unsigned long long)m.running,
		 (unsigned long long)m.done, (unsigned long long)m.failed);
	(void)phi_notify_send(d->opts->notify_socket, st);
}

/* ---------- start-up ---------- */

static bool has_suffix(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a > b && !strcmp(s + a - b, suf);
}

static void load_results(struct daemon *d, enum spool_dir which)
{
	DIR *dir = fdopendir(openat(d->sp.d[which], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	if (!dir)
		return;
	struct dirent *de;
	while ((de = readdir(dir))) {
		if (de->d_name[0] == '.' || !has_suffix(de->d_name, ".result.json"))
			continue;
		which == SD_DONE ? d->done++ : d->failed++;
		_cleanup_buf_ struct phi_buf b = { 0 };
		struct jrec r;
		if (spool_read_file(d->sp.d[which], de->d_name, JREC_MAX_BYTES, &b, NULL, false) < 0 ||
		    jrec_parse(b.p, b.len, &r) < 0)
			continue;
		long day, month;
		keys_of(r.ended_ms, &day, &month);
		if (month == d->month_key)
			d->cost_month += r.cost_micro;
		if (day == d->day_key)
			d->cost_day += r.cost_micro;
	}
	closedir(dir);
}

static void recover_one(struct daemon *d, enum spool_dir which, const char *name)
{
	if (!has_suffix(name, ".json"))
		return;
	char id[JOB_ID_MAX + 8];
	size_t n = strlen(name) - 5;
	if (n > JOB_ID_MAX)
		return;
	memcpy(id, name, n);
	id[n] = 0;
	if (job_id_valid(id) < 0)
		return;
	struct jrec r;
	if (spool_journal_load(&d->sp, id, &r) < 0) {
		/* no journal (lost with the disk?): rebuild one from the job file */
		_cleanup_job_ struct job *j = NULL;
		if (load_job(d, which, id, &j) < 0) {
			logf_("job %s: no journal and an unreadable job file; left in place", id);
			return;
		}
		jrec_init(&r, id);
		r.priority = j->priority;
		r.received_ms = now_ms();
		r.tier = sched_tier(j->estimated_tokens ? j->estimated_tokens : 1);
		r.gpus = sched_tier_gpus(r.tier);
		jrec_set_state(&r, JS_QUEUED, r.received_ms);
	}
	if (r.state == JS_DONE || r.state == JS_FAILED) {
		/* crashed between the journal and the move */
		enum spool_dir to = r.state == JS_DONE ? SD_DONE : SD_FAILED;
		(void)spool_result_save(&d->sp, to, &r, SPOOL_SYNC_FILE);
		if (spool_move(&d->sp, which, name, to, name, true) == 0)
			r.state == JS_DONE ? d->done++ : d->failed++;
		return;
	}
	if (which == SD_QUEUE)
		r.state = JS_QUEUED;
	else if (r.state == JS_QUEUED || r.state == JS_RECEIVED)
		r.state = JS_STARTING; /* claimed, nothing submitted under a recorded handle */
	if (r.state == JS_RUNNING)
		d->prov->ops->adopt(d->prov, &r);
	if (jobs_add(d, &r) < 0)
		logf_("job %s: out of memory", id);
}

static void recover_active(struct daemon *d, const char *name)
{
	recover_one(d, SD_ACTIVE, name);
}
static void recover_queue(struct daemon *d, const char *name)
{
	recover_one(d, SD_QUEUE, name);
}

static void read_inotify(struct daemon *d, bool *rescan_needed)
{
	char buf[65536] __attribute__((aligned(__alignof__(struct inotify_event))));
	for (;;) {
		ssize_t n = read(d->ifd, buf, sizeof buf);
		if (n <= 0)
			return;
		for (char *p = buf; p < buf + n;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			if (ev->mask & IN_Q_OVERFLOW)
				*rescan_needed = true;
			else if (ev->len && ev->wd == d->wd_in)
				intake(d, ev->name);
			else if (ev->len && ev->wd == d->wd_ctl)
				ctl(d, ev->name);
			p += sizeof *ev + ev->len;
		}
	}
}

int daemon_run(const struct config *cfg, struct hooks hooks, const struct daemon_opts *o)
{
	struct daemon d = { .cfg = cfg, .opts = o, .hooks = hooks, .ifd = -1, .sfd = -1 };
	int e = spool_open(&d.sp, cfg->spool_dir, true, true);
	if (e < 0) {
		logf_("cannot open the spool: %s", e == -EBUSY ? "another spoold holds its lock" : strerror(-e));
		return e;
	}
	e = cfg->backend == BACKEND_SLURM ? prov_slurm_new(cfg, cfg->spool_dir, &d.prov)
					  : prov_local_new(cfg, cfg->spool_dir, &d.prov);
	if (e < 0) {
		logf_("cannot set up the %s backend: %s", cfg->backend == BACKEND_SLURM ? "slurm" : "local", strerror(-e));
		spool_close(&d.sp);
		return e;
	}
	sigset_t mask;
	sigemptyset(&mask);
	sigaddset(&mask, SIGCHLD);
	sigaddset(&mask, SIGTERM);
	sigaddset(&mask, SIGINT);
	sigaddset(&mask, SIGHUP);
	sigaddset(&mask, SIGUSR1);
	sigprocmask(SIG_BLOCK, &mask, NULL);
	signal(SIGPIPE, SIG_IGN);
	d.sfd = signalfd(-1, &mask, SFD_CLOEXEC | SFD_NONBLOCK);
	d.ifd = inotify_init1(IN_CLOEXEC | IN_NONBLOCK);
	if (d.sfd < 0 || d.ifd < 0) {
		e = phi_neg_errno();
		goto out;
	}
	/* watch first, then rescan: a file dropped in between is seen by one or the other */
	char p[CONFIG_PATH_MAX + 16];
	snprintf(p, sizeof p, "%s/incoming", cfg->spool_dir);
	d.wd_in = inotify_add_watch(d.ifd, p, IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR);
	snprintf(p, sizeof p, "%s/ctl", cfg->spool_dir);
	d.wd_ctl = inotify_add_watch(d.ifd, p, IN_CLOSE_WRITE | IN_MOVED_TO | IN_ONLYDIR);
	if (d.wd_in < 0 || d.wd_ctl < 0) {
		e = phi_neg_errno();
		logf_("inotify: %s", strerror(-e));
		goto out;
	}
	uint64_t now = now_ms();
	keys_of(now, &d.day_key, &d.month_key);
	load_results(&d, SD_DONE);
	load_results(&d, SD_FAILED);
	budget_alerts(&d);
	rescan(&d, SD_ACTIVE, recover_active);
	rescan(&d, SD_QUEUE, recover_queue);
	batch_begin(&d);
	rescan(&d, SD_INCOMING, intake);
	batch_end(&d);
	rescan(&d, SD_CTL, ctl);
	logf_("watching %s (backend %s, %zu queued or active)", cfg->spool_dir, d.prov->ops->name, d.njobs);
	(void)phi_notify_send(o->notify_socket, "READY=1");
	tick(&d);
	uint64_t last_tick = now_ms();
	while (!d.stop) {
		uint64_t t = now_ms();
		long timeout = (long)cfg->tick_ms - (long)(t - last_tick);
		if (timeout < 0)
			timeout = 0;
		if (o->watchdog_usec) {
			long w = (long)(o->watchdog_usec / 2000) - (long)(t - d.last_wd_ms);
			if (w < timeout)
				timeout = w < 0 ? 0 : w;
		}
		struct pollfd pf[2] = { { .fd = d.ifd, .events = POLLIN }, { .fd = d.sfd, .events = POLLIN } };
		int n = poll(pf, 2, (int)timeout);
		bool need_tick = false, rescan_needed = false;
		if (n < 0 && errno != EINTR) {
			e = phi_neg_errno();
			break;
		}
		if (n > 0 && (pf[1].revents & POLLIN)) {
			struct signalfd_siginfo si;
			while (read(d.sfd, &si, sizeof si) == (ssize_t)sizeof si) {
				if (si.ssi_signo == SIGTERM || si.ssi_signo == SIGINT)
					d.stop = true;
				else if (si.ssi_signo == SIGCHLD) {
					/* only a supervisor's end is news; the backend's own commands
					 * (squeue, sbatch) are reaped where they run */
					while (waitpid(-1, NULL, WNOHANG) > 0)
						need_tick = true;
				}
			}
		}
		if (n > 0 && (pf[0].revents & POLLIN)) {
			batch_begin(&d);
			read_inotify(&d, &rescan_needed);
			batch_end(&d);
			need_tick = true;
		}
		if (rescan_needed) {
			logf_("inotify queue overflow: rescanning");
			batch_begin(&d);
			rescan(&d, SD_INCOMING, intake);
			batch_end(&d);
			rescan(&d, SD_CTL, ctl);
		}
		t = now_ms();
		if (need_tick || t - last_tick >= cfg->tick_ms) {
			tick(&d);
			last_tick = t;
		}
		if (o->watchdog_usec && (t - d.last_wd_ms) * 1000 >= o->watchdog_usec / 2) {
			(void)phi_notify_send(o->notify_socket, "WATCHDOG=1");
			d.last_wd_ms = t;
		}
	}
	(void)phi_notify_send(o->notify_socket, "STOPPING=1");
	logf_("stopping; %zu jobs queued or active (running instances keep running)", d.njobs);
	e = 0;
out:
	for (size_t i = 0; i < d.njobs; i++)
		free(d.jobs[i]);
	free(d.jobs);
	free(d.batch.jobs);
	phi_closep(&d.ifd);
	phi_closep(&d.sfd);
	prov_free(d.prov);
	spool_close(&d.sp);
	return e;
}
