/* runner.c: one attempt of one job (runner.h, docs/runner.md). */
#include "runner.h"

#include <cjson/cJSON.h>
#include <stdarg.h>
#include <dirent.h>
#include <glob.h>
#include <grp.h>
#include <limits.h>
#include <linux/sched.h> /* CLONE_NEWNS; <sched.h> is shadowed by spoold/sched.h */
#include <poll.h>
#include <sys/syscall.h>
#include <signal.h>
#include <sodium.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>

#include "doc.h"
#include "engine.h"
#include "secbuf.h"
#include "util.h"

#define RUN_MAX_DOCS 256
#define RUN_MAX_PASSES 64

enum phase { PH_PROVISIONING, PH_READY, PH_EXECUTING, PH_DEPROVISIONING, PH_N };
static const char *const phase_names[PH_N] = { "provisioning", "ready", "executing", "deprovisioning" };

enum { MSG_PHASE = 1, MSG_FINAL = 2 };

/* worker -> parent, over a pipe; never carries plaintext */
struct wmsg {
	uint32_t kind, phase;
	uint64_t at_ms;
	int32_t exit_code;
	uint32_t backend; /* enum phi_backend */
	uint64_t tokens_in, tokens_out;
	uint64_t prefill_ns, decode_ns;
	uint32_t docs_used, docs_refused, passes;
	uint32_t files_dropped;
	uint32_t engine_freed, stack_burned;
	struct phi_scrub_tally tally;
	char device_note[96];
	char error[160];
};

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void rfc3339(uint64_t ms, char buf[32])
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;
	gmtime_r(&t, &tm);
	size_t n = strftime(buf, 32, "%Y-%m-%dT%H:%M:%S", &tm);
	snprintf(buf + n, 32 - n, ".%03uZ", (unsigned)(ms % 1000));
}

static int write_full(int fd, const void *p, size_t n)
{
	const char *s = p;
	while (n) {
		ssize_t w = write(fd, s, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0)
			return -errno;
		if (w == 0)
			return -EIO;
		s += w;
		n -= (size_t)w;
	}
	return 0;
}

static bool term_pending(void)
{
	sigset_t s;
	return sigpending(&s) == 0 &&
	       (sigismember(&s, SIGTERM) || sigismember(&s, SIGINT) || sigismember(&s, SIGHUP));
}

/* ------------------------------------------------------------------ worker */

struct worker {
	const struct runner_opts *o;
	const char *mnt;
	int msg_fd;
	uint64_t t_prov, t_ready, t_exec;
	struct wmsg fin;
	struct phi_engine *e;
	char model_sha[65];
	struct phi_secbuf docs, raw, out, prompt_a, prompt_b, toks, partial;
	uint64_t prefill_tokens, decode_tokens;
	bool stopped_once, capped;
	uint32_t max_out;
};

static void send_phase(struct worker *w, enum phase p, uint64_t at)
{
	struct wmsg m = { .kind = MSG_PHASE, .phase = p, .at_ms = at };
	(void)write_full(w->msg_fd, &m, sizeof m);
}

static int sha256_file(const char *path, char hex[65])
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	crypto_hash_sha256_state st;
	crypto_hash_sha256_init(&st);
	unsigned char buf[65536];
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		crypto_hash_sha256_update(&st, buf, (unsigned long long)n);
	}
	unsigned char h[32];
	crypto_hash_sha256_final(&st, h);
	sodium_bin2hex(hex, 65, h, sizeof h);
	return 0;
}

/* Read one document through the mount into w->raw, render it into w->docs. */
static int read_doc(struct worker *w, const char *path, size_t index, cJSON *refused)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK);
	if (fd < 0)
		return -errno;
	struct stat st;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!S_ISREG(st.st_mode))
		return -EISDIR; /* directories matched by a glob are skipped */
	if ((uint64_t)st.st_size > w->o->cfg->max_input_bytes - w->docs.len)
		return -EFBIG;
	phi_secbuf_clear(&w->raw);
	int r = phi_secbuf_reserve(&w->raw, (size_t)st.st_size + 1);
	if (r < 0)
		return r;
	for (;;) {
		r = phi_secbuf_reserve(&w->raw, 4096);
		if (r < 0)
			return r;
		ssize_t n = read(fd, w->raw.p + w->raw.len, w->raw.cap - w->raw.len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		if (n == 0)
			break;
		w->raw.len += (size_t)n;
	}
	/* direct_io keeps these pages out of the cache; drop whatever a kernel kept anyway */
	if (posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0)
		w->fin.files_dropped++;
	enum doc_kind kind = DOC_TEXT;
	const char *why = NULL;
	size_t mark = w->docs.len;
	r = phi_secbuf_printf(&w->docs, "--- document %zu ---\n", index + 1);
	if (r >= 0)
		r = doc_render(path, (const uint8_t *)w->raw.p, w->raw.len, &w->docs, &kind, &why);
	phi_secbuf_clear(&w->raw);
	if (r < 0 && why) {
		/* the document is left out; the record says which one (by index) and why */
		sodium_memzero(w->docs.p + mark, w->docs.len - mark);
		w->docs.len = mark;
		cJSON *x = cJSON_CreateObject();
		cJSON_AddNumberToObject(x, "index", (double)(index + 1));
		cJSON_AddStringToObject(x, "kind", doc_kind_name(doc_detect(path, (const uint8_t *)"", 0)));
		cJSON_AddStringToObject(x, "reason", why);
		cJSON_AddItemToArray(refused, x);
		w->fin.docs_refused++;
		return 0;
	}
	if (r >= 0)
		w->fin.docs_used++;
	return r;
}

static int collect_docs(struct worker *w, cJSON *refused)
{
	const struct job *j = w->o->job;
	char base[PATH_MAX];
	snprintf(base, sizeof base, "%s/%s", w->mnt, j->patient);
	/* matched paths, deduplicated, in pattern order then sorted within a pattern */
	char **seen = calloc(RUN_MAX_DOCS, sizeof *seen);
	size_t nseen = 0;
	int r = seen ? 0 : -ENOMEM;
	for (size_t i = 0; r >= 0 && i < j->ndocuments; i++) {
		char pat[PATH_MAX];
		if ((size_t)snprintf(pat, sizeof pat, "%s/%s", base, j->documents[i]) >= sizeof pat) {
			r = -ENAMETOOLONG;
			break;
		}
		glob_t g;
		int gr = glob(pat, 0, NULL, &g);
		if (gr == GLOB_NOMATCH)
			continue;
		if (gr != 0) {
			r = gr == GLOB_NOSPACE ? -ENOMEM : -EACCES;
			break;
		}
		for (size_t k = 0; r >= 0 && k < g.gl_pathc; k++) {
			bool dup = false;
			for (size_t s = 0; s < nseen && !dup; s++)
				dup = !strcmp(seen[s], g.gl_pathv[k]);
			if (dup)
				continue;
			if (nseen == RUN_MAX_DOCS) {
				r = -E2BIG;
				break;
			}
			seen[nseen] = strdup(g.gl_pathv[k]);
			if (!seen[nseen]) {
				r = -ENOMEM;
				break;
			}
			int rr = read_doc(w, seen[nseen], nseen, refused);
			nseen++;
			if (rr == -EISDIR)
				nseen--, phi_erase_free(seen[nseen]), seen[nseen] = NULL;
			else if (rr < 0)
				r = rr;
			if (term_pending())
				r = -EINTR;
		}
		globfree(&g);
	}
	for (size_t s = 0; seen && s < nseen; s++)
		phi_erase_free(seen[s]);
	free(seen);
	return r;
}

/* template with {prompt} replaced, split at {documents} into out_pre / out_suf */
static int split_template(const char *tpl, const char *prompt, struct phi_secbuf *pre,
			  struct phi_secbuf *suf)
{
	const char *d = strstr(tpl, "{documents}");
	if (!d)
		return -EINVAL;
	struct phi_secbuf *cur = pre;
	for (const char *s = tpl; *s;) {
		if (s == d) {
			cur = suf;
			s += strlen("{documents}");
			continue;
		}
		if (!strncmp(s, "{prompt}", 8)) {
			int r = phi_secbuf_puts(cur, prompt ? prompt : "");
			if (r < 0)
				return r;
			s += 8;
			continue;
		}
		int r = phi_secbuf_append(cur, s, 1);
		if (r < 0)
			return r;
		s++;
	}
	return 0;
}

/* tokens of text appended to toks (an int32 array in a secbuf); *ret_n: how many */
static int tokenize(struct worker *w, const char *text, size_t len, bool bos, struct phi_secbuf *toks,
		    size_t *ret_n)
{
	size_t max = len + 8;
	int r = phi_secbuf_reserve(toks, max * sizeof(int32_t) + sizeof(int32_t));
	if (r < 0)
		return r;
	size_t off = (toks->len + sizeof(int32_t) - 1) / sizeof(int32_t);
	size_t n = 0;
	r = phi_engine_tokenize(w->e, text, len, bos, false, (int32_t *)(void *)toks->p + off, max, &n);
	if (r < 0)
		return r;
	toks->len = (off + n) * sizeof(int32_t);
	*ret_n = n;
	return 0;
}

struct gen_ud {
	struct worker *w;
	struct phi_secbuf *out;
	int err;
};

static int on_token(void *ud, int32_t tok, const char *piece, size_t len)
{
	(void)tok;
	struct gen_ud *g = ud;
	struct worker *w = g->w;
	if (w->o->stop_in_inference && !w->stopped_once) {
		w->stopped_once = true;
		(void)raise(SIGSTOP); /* test hook: a kill -9 lands mid-inference */
	}
	int r = phi_secbuf_append(g->out, piece, len);
	if (r < 0) {
		g->err = r;
		return 1;
	}
	if (term_pending()) {
		g->err = -EINTR;
		return 1;
	}
	return 0;
}

/* one pass: prefix, document tokens, suffix; generation appended to out */
static int pass(struct worker *w, const int32_t *pre, size_t npre, const int32_t *docs, size_t nd,
		const int32_t *suf, size_t nsuf, uint32_t max_out, struct phi_secbuf *out)
{
	phi_engine_reset(w->e);
	uint64_t t0 = mono_ns();
	int r = phi_engine_prefill(w->e, pre, npre);
	if (r >= 0 && nd)
		r = phi_engine_prefill(w->e, docs, nd);
	if (r >= 0 && nsuf)
		r = phi_engine_prefill(w->e, suf, nsuf);
	uint64_t t1 = mono_ns();
	if (r < 0)
		return r;
	w->fin.prefill_ns += t1 - t0;
	w->fin.tokens_in += npre + nd + nsuf;
	struct phi_sample_opts so = { .temperature = 0, .top_p = 1, .seed = 1 };
	struct gen_ud g = { .w = w, .out = out };
	size_t n = 0;
	r = phi_engine_generate(w->e, &so, max_out, on_token, &g, &n);
	w->fin.decode_ns += mono_ns() - t1;
	w->fin.tokens_out += n;
	w->fin.passes++;
	if (g.err)
		return g.err;
	return r;
}

/* Summarise text[0..len) under template tpl into out: one pass if it fits the context,
 * otherwise map (chunks under the summarize template) then reduce, repeated while the
 * partial summaries do not fit. */
static int infer(struct worker *w, const char *tpl, const char *prompt, struct phi_secbuf *out)
{
	uint32_t n_ctx = phi_engine_n_ctx(w->e);
	const struct runconf *c = w->o->cfg;
	struct phi_secbuf *pre = &w->prompt_a, *suf = &w->prompt_b;
	const char *src = w->docs.p;
	size_t src_len = w->docs.len;
	for (int round = 0; round < 8; round++) {
		phi_secbuf_clear(pre);
		phi_secbuf_clear(suf);
		phi_secbuf_clear(&w->toks);
		int r = split_template(round ? c->template_reduce : tpl, prompt, pre, suf);
		size_t npre = 0, nsuf = 0, nd = 0;
		if (r >= 0)
			r = tokenize(w, pre->p ? pre->p : "", pre->len, true, &w->toks, &npre);
		size_t off_suf = w->toks.len / sizeof(int32_t);
		if (r >= 0)
			r = tokenize(w, suf->p ? suf->p : "", suf->len, false, &w->toks, &nsuf);
		size_t off_doc = w->toks.len / sizeof(int32_t);
		if (r >= 0)
			r = tokenize(w, src ? src : "", src_len, false, &w->toks, &nd);
		if (r < 0)
			return r;
		const int32_t *T = (const int32_t *)(const void *)w->toks.p;
		if (npre + nsuf + w->max_out + 1 < n_ctx && nd <= n_ctx - npre - nsuf - w->max_out - 1) {
			phi_secbuf_clear(out);
			return pass(w, T, npre, T + off_doc, nd, T + off_suf, nsuf, w->max_out, out);
		}
		/* map: chunks under the summarize template */
		phi_secbuf_clear(pre);
		phi_secbuf_clear(suf);
		struct phi_secbuf mtoks;
		phi_secbuf_init(&mtoks, w->toks.max, &w->fin.tally);
		size_t mpre = 0, msuf = 0;
		r = split_template(c->template_[JOB_SUMMARIZE], NULL, pre, suf);
		if (r >= 0)
			r = tokenize(w, pre->p ? pre->p : "", pre->len, true, &mtoks, &mpre);
		size_t moff_suf = mtoks.len / sizeof(int32_t);
		if (r >= 0)
			r = tokenize(w, suf->p ? suf->p : "", suf->len, false, &mtoks, &msuf);
		uint32_t mout = c->map_max_tokens < w->max_out ? c->map_max_tokens : w->max_out;
		if (r >= 0 && mpre + msuf + mout + 16 >= n_ctx)
			r = -E2BIG; /* the templates alone do not fit the context */
		if (r < 0) {
			phi_secbuf_done(&mtoks);
			return r;
		}
		size_t chunk = n_ctx - mpre - msuf - mout - 1;
		const int32_t *M = (const int32_t *)(const void *)mtoks.p;
		T = (const int32_t *)(const void *)w->toks.p;
		phi_secbuf_clear(&w->partial);
		for (size_t at = 0; r >= 0 && at < nd; at += chunk) {
			size_t k = nd - at < chunk ? nd - at : chunk;
			if (w->fin.passes >= RUN_MAX_PASSES) {
				r = -E2BIG;
				break;
			}
			r = phi_secbuf_printf(&w->partial, "Part %zu: ", at / chunk + 1);
			if (r >= 0)
				r = pass(w, M, mpre, T + off_doc + at, k, M + moff_suf, msuf, mout, &w->partial);
			if (r >= 0)
				r = phi_secbuf_puts(&w->partial, "\n");
		}
		phi_secbuf_done(&mtoks);
		if (r < 0)
			return r;
		/* reduce over the partial summaries: they become the next round's documents */
		phi_secbuf_clear(out);
		r = phi_secbuf_append(out, w->partial.p ? w->partial.p : "", w->partial.len);
		if (r < 0)
			return r;
		phi_secbuf_clear(&w->docs);
		r = phi_secbuf_append(&w->docs, out->p ? out->p : "", out->len);
		if (r < 0)
			return r;
		phi_secbuf_clear(out);
		src = w->docs.p;
		src_len = w->docs.len;
	}
	return -E2BIG;
}

/* stop: the test hook "results" (SIGSTOP with the file written and synced, its fd open) */
static int write_atomic(const char *dir, const char *name, const char *p, size_t n, bool stop)
{
	char tmp[PATH_MAX], dst[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s/.%s.tmp", dir, name);
	snprintf(dst, sizeof dst, "%s/%s", dir, name);
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return -errno;
	int r = write_full(fd, p, n);
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (r >= 0 && stop)
		(void)raise(SIGSTOP);
	if (r >= 0)
		(void)posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED);
	if (r >= 0 && close(fd) < 0)
		r = -errno;
	fd = -1;
	if (r >= 0 && rename(tmp, dst) < 0)
		r = -errno;
	if (r < 0)
		(void)unlink(tmp);
	return r;
}

/* results/<id>/ exists, and no temp file of an earlier (killed) attempt is left in it */
static int results_dir(struct worker *w, char *dir, size_t len)
{
	const struct job *j = w->o->job;
	/* With phifs_user, phifs cannot chown what the worker creates: the directories are
	 * phifs_user's, and the kernel's default_permissions check would refuse the worker
	 * (another user) its own results directory. They are made 0777 (and the files 0644),
	 * whatever the umask: who may do what is decided by phifs' grants, and the store
	 * behind them is phifs_user's alone (/var/lib/phifs 0700). */
	bool open_modes = *w->o->cfg->phifs_user;
	mode_t dmode = open_modes ? 0777 : 0755;
	mode_t old = open_modes ? umask(0) : 0;
	int r = 0;
	snprintf(dir, len, "%s/%s/results", w->mnt, j->patient);
	if (mkdir(dir, dmode) < 0 && errno != EEXIST)
		r = -errno;
	snprintf(dir, len, "%s/%s/results/%s", w->mnt, j->patient, j->id);
	if (r >= 0 && mkdir(dir, dmode) < 0 && errno != EEXIST)
		r = -errno;
	if (open_modes)
		umask(r >= 0 ? 022 : old); /* write_atomic's 0644 files; on failure, as it was */
	if (r < 0)
		return r;
	DIR *d = opendir(dir);
	if (!d)
		return -errno;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t l = strlen(de->d_name);
		if (de->d_name[0] == '.' && l > 5 && !strcmp(de->d_name + l - 4, ".tmp"))
			(void)unlinkat(dirfd(d), de->d_name, 0);
	}
	closedir(d);
	return 0;
}

static cJSON *phase_obj(uint64_t start, uint64_t end)
{
	char a[32], b[32];
	rfc3339(start, a);
	rfc3339(end, b);
	cJSON *o = cJSON_CreateObject();
	cJSON_AddStringToObject(o, "start", a);
	cJSON_AddStringToObject(o, "end", b);
	cJSON_AddNumberToObject(o, "duration_ms", (double)(end - start));
	return o;
}

static int write_results(struct worker *w, cJSON *refused, uint64_t t_end)
{
	const struct job *j = w->o->job;
	const struct runconf *c = w->o->cfg;
	char dir[PATH_MAX];
	int r = results_dir(w, dir, sizeof dir);
	if (r < 0)
		return r;
	double pf = w->fin.prefill_ns ? (double)w->fin.tokens_in * 1e9 / (double)w->fin.prefill_ns : 0;
	double dc = w->fin.decode_ns ? (double)w->fin.tokens_out * 1e9 / (double)w->fin.decode_ns : 0;
	cJSON *rec = cJSON_CreateObject();
	cJSON_AddNumberToObject(rec, "version", 1);
	cJSON_AddStringToObject(rec, "job_id", j->id);
	cJSON_AddStringToObject(rec, "attempt", w->o->attempt_name ? w->o->attempt_name : "");
	cJSON_AddStringToObject(rec, "task", job_task_name(j->task));
	cJSON_AddStringToObject(rec, "output", "output.txt");
	cJSON *m = cJSON_AddObjectToObject(rec, "model");
	cJSON_AddStringToObject(m, "name", j->model);
	cJSON_AddStringToObject(m, "sha256", w->model_sha);
	cJSON_AddNumberToObject(m, "n_ctx", phi_engine_n_ctx(w->e));
	cJSON *dv = cJSON_AddObjectToObject(rec, "device");
	cJSON_AddStringToObject(dv, "backend", phi_engine_backend(w->e) == PHI_BACKEND_CUDA ? "cuda" : "cpu");
	cJSON_AddStringToObject(dv, "note", phi_engine_backend_note(w->e));
	cJSON *tk = cJSON_AddObjectToObject(rec, "tokens");
	cJSON_AddNumberToObject(tk, "in", (double)w->fin.tokens_in);
	cJSON_AddNumberToObject(tk, "out", (double)w->fin.tokens_out);
	cJSON_AddNumberToObject(tk, "max_out", w->max_out);
	cJSON_AddBoolToObject(tk, "max_out_capped", w->capped);
	cJSON *sp = cJSON_AddObjectToObject(rec, "speed");
	cJSON_AddNumberToObject(sp, "prefill_tokens_per_s", pf);
	cJSON_AddNumberToObject(sp, "decode_tokens_per_s", dc);
	cJSON_AddNumberToObject(rec, "passes", w->fin.passes);
	cJSON *ph = cJSON_AddObjectToObject(rec, "phases");
	cJSON_AddItemToObject(ph, "provisioning", phase_obj(w->t_prov, w->t_ready));
	cJSON_AddItemToObject(ph, "ready", phase_obj(w->t_ready, w->t_exec));
	cJSON_AddItemToObject(ph, "executing", phase_obj(w->t_exec, t_end));
	cJSON *dc_ = cJSON_AddObjectToObject(rec, "documents");
	cJSON_AddNumberToObject(dc_, "used", w->fin.docs_used);
	cJSON_AddNumberToObject(dc_, "refused", w->fin.docs_refused);
	cJSON_AddItemReferenceToObject(dc_, "refusals", refused);
	uint64_t ms = t_end - w->t_prov;
	uint64_t micro = (c->cost_micro_usd_per_hour * ms + 3599999) / 3600000;
	cJSON *co = cJSON_AddObjectToObject(rec, "cost");
	cJSON_AddNumberToObject(co, "usd_per_hour", (double)c->cost_micro_usd_per_hour / 1e6);
	cJSON_AddNumberToObject(co, "estimated_usd", (double)micro / 1e6);
	cJSON_AddNumberToObject(co, "estimated_micro_usd", (double)micro);
	char created[32];
	rfc3339(t_end, created);
	cJSON_AddStringToObject(rec, "created", created);
	char *txt = cJSON_Print(rec);
	cJSON_Delete(rec);
	if (!txt)
		return -ENOMEM;
	/* output first, then the record: a record names an output that is already complete */
	r = write_atomic(dir, "output.txt", w->out.p ? w->out.p : "", w->out.len, w->o->stop_in_results);
	if (r >= 0)
		r = write_atomic(dir, "record.json", txt, strlen(txt), false);
	phi_erase_free(txt);
	return r;
}

static void worker_scrub(struct worker *w)
{
	if (w->e) {
		phi_engine_free(w->e); /* wipes KV cache, activations, logits; zeroes device buffers */
		w->e = NULL;
		w->fin.engine_freed = 1;
	}
	struct phi_secbuf *bufs[] = { &w->docs, &w->raw, &w->out, &w->prompt_a, &w->prompt_b,
				      &w->toks, &w->partial };
	for (size_t i = 0; i < ARRAY_SIZE(bufs); i++)
		phi_secbuf_done(bufs[i]);
	phi_stack_burn(256 * 1024);
	w->fin.stack_burned = 1;
}

static int worker_run(struct worker *w)
{
	const struct runner_opts *o = w->o;
	const struct runconf *c = o->cfg;
	const struct job *j = o->job;
	char model[PATH_MAX];
	snprintf(model, sizeof model, "%s/%s", c->models_dir, j->model);
	if (sha256_file(model, w->model_sha) < 0) {
		snprintf(w->fin.error, sizeof w->fin.error, "model: cannot read the model file");
		return RUN_MODEL;
	}
	const char *why = NULL;
	struct phi_engine_opts eo = { .n_threads = (int)c->threads, .n_ctx = c->n_ctx, .no_gpu = c->no_gpu };
	if (phi_engine_load(model, &eo, &w->e, &why) < 0) {
		snprintf(w->fin.error, sizeof w->fin.error, "model: %s", why ? why : "load failed");
		return RUN_MODEL;
	}
	w->fin.backend = phi_engine_backend(w->e);
	snprintf(w->fin.device_note, sizeof w->fin.device_note, "%s", phi_engine_backend_note(w->e));
	w->t_ready = now_ms();
	send_phase(w, PH_READY, w->t_ready);
	w->t_exec = now_ms();
	send_phase(w, PH_EXECUTING, w->t_exec);

	cJSON *refused = cJSON_CreateArray();
	int r = collect_docs(w, refused);
	if (r == -EINTR) {
		cJSON_Delete(refused);
		return RUN_TERMINATED;
	}
	if (r < 0 || w->fin.docs_used == 0) {
		snprintf(w->fin.error, sizeof w->fin.error, "documents: %s (%u used, %u refused)",
			 r < 0 ? strerror(-r) : "none usable", w->fin.docs_used, w->fin.docs_refused);
		cJSON_Delete(refused);
		return r == -EACCES ? RUN_PROVISION : RUN_NO_DOCUMENTS;
	}
	w->max_out = j->max_tokens;
	uint32_t n_ctx = phi_engine_n_ctx(w->e);
	if (w->max_out > n_ctx / 2) {
		w->max_out = n_ctx / 2;
		w->capped = true;
	}
	r = infer(w, c->template_[j->task], j->prompt, &w->out);
	if (r < 0) {
		cJSON_Delete(refused);
		if (r == -EINTR)
			return RUN_TERMINATED;
		snprintf(w->fin.error, sizeof w->fin.error, "inference: %s", strerror(-r));
		return RUN_INFERENCE;
	}
	r = write_results(w, refused, now_ms());
	cJSON_Delete(refused);
	if (r < 0) {
		snprintf(w->fin.error, sizeof w->fin.error, "results: %s", strerror(-r));
		return RUN_RESULTS;
	}
	return RUN_OK;
}

static _Noreturn void worker_main(const struct runner_opts *o, const char *mnt, int msg_fd,
				  uint64_t t_prov)
{
	struct worker w = { .o = o, .mnt = mnt, .msg_fd = msg_fd, .t_prov = t_prov };
	const struct runconf *c = o->cfg;
	phi_secbuf_init(&w.docs, c->max_input_bytes * 2 + 65536, &w.fin.tally);
	phi_secbuf_init(&w.raw, c->max_input_bytes + 4096, &w.fin.tally);
	phi_secbuf_init(&w.out, 16 << 20, &w.fin.tally);
	phi_secbuf_init(&w.prompt_a, 64 << 10, &w.fin.tally);
	phi_secbuf_init(&w.prompt_b, 64 << 10, &w.fin.tally);
	phi_secbuf_init(&w.toks, (c->max_input_bytes * 2 + (256 << 10)) * sizeof(int32_t), &w.fin.tally);
	phi_secbuf_init(&w.partial, 16 << 20, &w.fin.tally);
	w.fin.kind = MSG_FINAL;
	w.fin.exit_code = worker_run(&w);
	if (o->stop_before_scrub)
		(void)raise(SIGSTOP);
	worker_scrub(&w);
	(void)write_full(msg_fd, &w.fin, sizeof w.fin);
	if (o->stop_after_scrub)
		(void)raise(SIGSTOP);
	_exit(w.fin.exit_code);
}

/* ------------------------------------------------------------------ parent */

static bool mounted(const char *mnt)
{
	_cleanup_fclose_ FILE *f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return false;
	char line[4096];
	size_t l = strlen(mnt);
	while (fgets(line, sizeof line, f)) {
		/* id parent major:minor root mountpoint ... */
		char *s = line;
		for (int i = 0; i < 4 && s; i++) {
			s = strchr(s, ' ');
			if (s)
				s++;
		}
		if (s && !strncmp(s, mnt, l) && s[l] == ' ')
			return true;
	}
	return false;
}

static int drop_to(uid_t uid, gid_t gid)
{
	if (setgroups(0, NULL) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
		return -errno;
	if (getuid() != uid || geteuid() != uid)
		return -EPERM;
	(void)prctl(PR_SET_DUMPABLE, 0);
	return 0;
}

int runner_phifs_options(const struct runconf *c, char *buf, size_t len)
{
	char o[RUNCONF_PATH_MAX + 192];
	/* FUSE splits -o at commas: a path with one would add options of its own */
	if (strchr(c->audit_socket, ',') || strchr(c->phifs_user, ','))
		return -EINVAL;
	int n;
	if (*c->audit_socket)
		n = snprintf(o, sizeof o, "grants,audit_socket=%s,allow_other,direct_io", c->audit_socket);
	else
		n = snprintf(o, sizeof o, "grants,allow_other,direct_io");
	/* under gpurun@.service gpurun is root without CAP_DAC_OVERRIDE: the store (0700
	 * phifs) is reachable only as its owner, so phifs mounts as root and then serves as it.
	 * A list cut short would lose run_as and leave phifs root: refused instead. */
	if (n >= 0 && (size_t)n < sizeof o && *c->phifs_user)
		n += snprintf(o + n, sizeof o - (size_t)n, ",run_as=%s", c->phifs_user);
	if (n < 0 || (size_t)n >= sizeof o || (size_t)n >= len)
		return -ENAMETOOLONG;
	memcpy(buf, o, (size_t)n + 1);
	return 0;
}

/* opts: runner_phifs_options()'s, built before the fork so that a failure is the parent's */
static pid_t spawn_phifs(const struct runconf *c, const char *mnt, const char *opts)
{
	pid_t pid = fork();
	if (pid != 0)
		return pid;
	(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
	/* stdout is spoold's log: phifs speaks on stderr only */
	(void)dup2(STDERR_FILENO, STDOUT_FILENO);
	execl(c->phifs, c->phifs, "--key-file", c->key_file, "-o", opts, "-f", c->store, mnt, (char *)NULL);
	_exit(127);
}

struct parent_state {
	uint64_t ph_start[PH_N], ph_end[PH_N];
	bool ph_seen[PH_N];
	struct wmsg fin;
	bool have_fin;
	bool termed;
	int worker_status;
	bool unmounted, gone;
	int exit_code;
	char error[192];
};

static void phase(struct parent_state *ps, const struct runner_opts *o, enum phase p, uint64_t at)
{
	for (int i = 0; i < PH_N; i++)
		if (ps->ph_seen[i] && !ps->ph_end[i] && i != (int)p)
			ps->ph_end[i] = at;
	ps->ph_seen[p] = true;
	ps->ph_start[p] = at;
	char ts[32];
	rfc3339(at, ts);
	printf("gpurun: job=%s phase=%s at=%s\n", o->job->id, phase_names[p], ts);
	fflush(stdout);
}

static int write_status(const struct runner_opts *o, const struct parent_state *ps)
{
	if (!o->status_path)
		return 0;
	cJSON *s = cJSON_CreateObject();
	cJSON_AddNumberToObject(s, "version", 1);
	cJSON_AddStringToObject(s, "job", o->job->id);
	cJSON_AddStringToObject(s, "attempt", o->attempt_name ? o->attempt_name : "");
	/* the GPU slots the worker ran with (set by spoold, or from the runtime file under
	 * gpurun@): null when unset, i.e. every GPU in reach; ids only */
	const char *cvd = getenv("CUDA_VISIBLE_DEVICES");
	if (cvd)
		cJSON_AddStringToObject(s, "cuda_visible_devices", cvd);
	else
		cJSON_AddNullToObject(s, "cuda_visible_devices");
	cJSON_AddNumberToObject(s, "exit", ps->exit_code);
	cJSON_AddStringToObject(s, "error", ps->error);
	cJSON_AddNumberToObject(s, "tokens_in", (double)ps->fin.tokens_in);
	cJSON_AddNumberToObject(s, "tokens_out", (double)ps->fin.tokens_out);
	cJSON *ph = cJSON_AddArrayToObject(s, "phases");
	for (int i = 0; i < PH_N; i++) {
		if (!ps->ph_seen[i])
			continue;
		cJSON *p = phase_obj(ps->ph_start[i], ps->ph_end[i] ? ps->ph_end[i] : ps->ph_start[i]);
		cJSON_AddStringToObject(p, "phase", phase_names[i]);
		cJSON_AddItemToArray(ph, p);
	}
	cJSON *sc = cJSON_AddObjectToObject(s, "scrub");
	cJSON *h = cJSON_AddObjectToObject(sc, "host");
	cJSON_AddBoolToObject(h, "reported", ps->have_fin);
	cJSON_AddNumberToObject(h, "buffers_wiped", (double)ps->fin.tally.buffers);
	cJSON_AddNumberToObject(h, "bytes_wiped", (double)ps->fin.tally.bytes);
	cJSON_AddNumberToObject(h, "buffers_locked", (double)ps->fin.tally.locked);
	cJSON_AddNumberToObject(h, "buffers_unlocked", (double)ps->fin.tally.unlocked);
	cJSON_AddBoolToObject(h, "engine_freed", ps->fin.engine_freed);
	cJSON_AddBoolToObject(h, "stack_burned", ps->fin.stack_burned);
	cJSON_AddStringToObject(h, "worker", !ps->have_fin ? "killed before its scrub: its memory went back to the kernel"
							   : "exited after its scrub");
	cJSON *d = cJSON_AddObjectToObject(sc, "device");
	bool cuda = ps->have_fin && ps->fin.backend == PHI_BACKEND_CUDA;
	cJSON_AddStringToObject(d, "backend", !ps->have_fin ? "unknown" : cuda ? "cuda" : "cpu");
	cJSON_AddBoolToObject(d, "zeroed", cuda && ps->fin.engine_freed);
	cJSON_AddStringToObject(d, "note", cuda ? "KV cache, activations and weights zeroed by phi_engine_free"
					   : "no device buffers (CPU backend)");
	cJSON *pc = cJSON_AddObjectToObject(sc, "page_cache");
	cJSON_AddBoolToObject(pc, "direct_io", true);
	cJSON_AddNumberToObject(pc, "files_dropped", ps->fin.files_dropped);
	cJSON *m = cJSON_AddObjectToObject(sc, "mount");
	cJSON_AddBoolToObject(m, "unmounted", ps->unmounted);
	cJSON_AddBoolToObject(m, "gone", ps->gone);
	char *txt = cJSON_Print(s);
	cJSON_Delete(s);
	if (!txt)
		return -ENOMEM;
	char tmp[PATH_MAX];
	snprintf(tmp, sizeof tmp, "%s.tmp", o->status_path);
	int r = 0;
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		r = -errno;
	/* 0640 whatever the umask (gpurun@.service has UMask=0077): the status holds ids and
	 * counts only, and spoold reads it through the group of its directory */
	if (r >= 0 && fchmod(fd, 0640) < 0)
		r = -errno;
	if (r >= 0)
		r = write_full(fd, txt, strlen(txt));
	if (r >= 0)
		r = write_full(fd, "\n", 1);
	if (r >= 0 && fsync(fd) < 0)
		r = -errno;
	if (r >= 0 && rename(tmp, o->status_path) < 0)
		r = -errno;
	free(txt);
	return r;
}

__attribute__((format(printf, 3, 4))) static void set_error(struct parent_state *ps, int code, const char *fmt, ...)
{
	if (!ps->exit_code)
		ps->exit_code = code;
	if (!ps->error[0]) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(ps->error, sizeof ps->error, fmt, ap);
		va_end(ap);
	}
}

/* wait for the worker's messages and its end; forward a termination request */
static void supervise(const struct runner_opts *o, struct parent_state *ps, pid_t worker, int rfd,
		      int sfd)
{
	struct pollfd pf[2] = { { .fd = rfd, .events = POLLIN }, { .fd = sfd, .events = POLLIN } };
	bool eof = false;
	while (!eof) {
		if (poll(pf, 2, -1) < 0) {
			if (errno == EINTR)
				continue;
			break;
		}
		if (pf[1].revents & POLLIN) {
			struct signalfd_siginfo si;
			if (read(sfd, &si, sizeof si) == (ssize_t)sizeof si && !ps->termed) {
				ps->termed = true;
				(void)kill(worker, SIGTERM);
			}
		}
		if (pf[0].revents & (POLLIN | POLLHUP)) {
			struct wmsg m;
			ssize_t n = read(rfd, &m, sizeof m);
			if (n < 0 && errno == EINTR)
				continue;
			if (n != (ssize_t)sizeof m) {
				eof = true;
				break;
			}
			if (m.kind == MSG_PHASE && m.phase < PH_N)
				phase(ps, o, (enum phase)m.phase, m.at_ms);
			else if (m.kind == MSG_FINAL) {
				m.error[sizeof m.error - 1] = 0;
				m.device_note[sizeof m.device_note - 1] = 0;
				ps->fin = m;
				ps->have_fin = true;
			}
		}
	}
	while (waitpid(worker, &ps->worker_status, 0) < 0 && errno == EINTR)
		;
}

/* Empty mount points of this job's earlier attempts that were killed (kill -9 leaves the
 * directory; the mount itself went with the namespace). rmdir fails on anything else. */
static void remove_stale(const char *dir, const char *id)
{
	DIR *d = opendir(dir);
	if (!d)
		return;
	size_t l = strlen(id);
	struct dirent *de;
	while ((de = readdir(d)))
		if (!strncmp(de->d_name, id, l) && de->d_name[l] == '.' && strlen(de->d_name + l) == 7)
			(void)unlinkat(dirfd(d), de->d_name, AT_REMOVEDIR);
	closedir(d);
}

int runner_run(const struct runner_opts *o)
{
	const struct runconf *c = o->cfg;
	struct parent_state ps = { 0 };
	uint64_t t_prov = now_ms();
	phase(&ps, o, PH_PROVISIONING, t_prov);

	sigset_t term;
	sigemptyset(&term);
	sigaddset(&term, SIGTERM);
	sigaddset(&term, SIGINT);
	sigaddset(&term, SIGHUP);
	/* blocked here and in both children: phifs must outlive a group SIGTERM so that we
	 * unmount it; the worker polls for it (sigpending) between tokens and documents */
	sigprocmask(SIG_BLOCK, &term, NULL);
	_cleanup_close_ int sfd = signalfd(-1, &term, SFD_CLOEXEC | SFD_NONBLOCK);

	char mnt[PATH_MAX] = "", opts[RUNCONF_PATH_MAX + 192]; /* "": not mounted(), for out: */
	bool made_mnt = false;
	pid_t fs_pid = -1, worker = -1;
	int e = runner_phifs_options(c, opts, sizeof opts);
	if (e < 0) {
		set_error(&ps, RUN_PROVISION, "phifs options: %s", strerror(-e));
		goto out;
	}
	if (mkdir(c->mount_dir, 0711) < 0 && errno != EEXIST) {
		set_error(&ps, RUN_PROVISION, "mount_dir: %s", strerror(errno));
		goto out;
	}
	remove_stale(c->mount_dir, o->job->id);
	snprintf(mnt, sizeof mnt, "%s/%s.XXXXXX", c->mount_dir, o->job->id);
	if (!mkdtemp(mnt)) {
		set_error(&ps, RUN_PROVISION, "mount point: %s", strerror(errno));
		goto out;
	}
	made_mnt = true;
	(void)chmod(mnt, 0711);
	/* the plaintext view exists only in this namespace; nothing propagates back */
	if (syscall(SYS_unshare, CLONE_NEWNS) < 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0) {
		set_error(&ps, RUN_PROVISION, "private mount namespace: %s", strerror(errno));
		goto out;
	}
	fs_pid = spawn_phifs(c, mnt, opts);
	if (fs_pid < 0) {
		set_error(&ps, RUN_PROVISION, "fork: %s", strerror(errno));
		goto out;
	}
	for (int i = 0; !mounted(mnt); i++) {
		int st;
		if (waitpid(fs_pid, &st, WNOHANG) == fs_pid) {
			fs_pid = -1;
			set_error(&ps, RUN_PROVISION, "%s", "phifs exited before the mount appeared");
			goto out;
		}
		if (i > 1500 || term_pending()) {
			set_error(&ps, RUN_PROVISION, "%s", "the mount did not appear");
			goto out;
		}
		(void)usleep(20000); /* a guard against a hung phifs, not a timing assumption */
	}
	int mp[2];
	if (pipe2(mp, O_CLOEXEC) < 0) {
		set_error(&ps, RUN_PROVISION, "pipe: %s", strerror(errno));
		goto out;
	}
	fflush(stdout);
	worker = fork();
	if (worker == 0) {
		close(mp[0]);
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		int r = drop_to(c->job_uid, c->job_gid);
		if (r < 0 || chdir("/") < 0) {
			struct wmsg m = { .kind = MSG_FINAL, .exit_code = RUN_PROVISION };
			snprintf(m.error, sizeof m.error, "job user: cannot switch (%s)", strerror(-r));
			(void)write_full(mp[1], &m, sizeof m);
			_exit(RUN_PROVISION);
		}
		worker_main(o, mnt, mp[1], t_prov);
	}
	close(mp[1]);
	if (worker < 0) {
		close(mp[0]);
		set_error(&ps, RUN_PROVISION, "fork: %s", strerror(errno));
		goto out;
	}
	printf("gpurun: job=%s worker_pid=%d\n", o->job->id, (int)worker);
	fflush(stdout);
	supervise(o, &ps, worker, mp[0], sfd);
	close(mp[0]);
	if (ps.have_fin) {
		if (ps.fin.exit_code)
			set_error(&ps, ps.fin.exit_code, "%s", ps.fin.error);
	} else if (WIFSIGNALED(ps.worker_status)) {
		char sig[16];
		snprintf(sig, sizeof sig, "%d", WTERMSIG(ps.worker_status));
		set_error(&ps, RUN_WORKER_DIED, "worker: killed by signal %s", sig);
	} else {
		set_error(&ps, RUN_WORKER_DIED, "%s", "worker: ended without a report");
	}
	if (ps.termed && (!ps.have_fin || ps.fin.exit_code))
		ps.exit_code = RUN_TERMINATED;

out:
	phase(&ps, o, PH_DEPROVISIONING, now_ms());
	if (worker > 0 && !ps.worker_status && !ps.have_fin) {
		(void)kill(worker, SIGKILL);
		while (waitpid(worker, NULL, 0) < 0 && errno == EINTR)
			;
	}
	if (fs_pid > 0) {
		if (mounted(mnt)) {
			if (umount2(mnt, UMOUNT_NOFOLLOW) < 0)
				(void)umount2(mnt, MNT_DETACH | UMOUNT_NOFOLLOW);
		}
		ps.unmounted = !mounted(mnt);
		if (!ps.unmounted)
			(void)kill(fs_pid, SIGKILL);
		while (waitpid(fs_pid, NULL, 0) < 0 && errno == EINTR)
			;
	}
	ps.gone = !mounted(mnt);
	if (!ps.gone)
		set_error(&ps, RUN_SCRUB, "%s", "the mount is still there after unmount");
	if (made_mnt)
		(void)rmdir(mnt);
	ps.ph_end[PH_DEPROVISIONING] = now_ms();
	for (int i = 0; i < PH_N; i++)
		if (ps.ph_seen[i] && !ps.ph_end[i])
			ps.ph_end[i] = ps.ph_end[PH_DEPROVISIONING];
	int r = write_status(o, &ps);
	printf("gpurun: job=%s exit=%d tokens_in=%llu tokens_out=%llu documents=%u refused=%u "
	       "wiped_buffers=%llu wiped_bytes=%llu unmounted=%s%s%s\n",
	       o->job->id, ps.exit_code, (unsigned long long)ps.fin.tokens_in,
	       (unsigned long long)ps.fin.tokens_out, ps.fin.docs_used, ps.fin.docs_refused,
	       (unsigned long long)ps.fin.tally.buffers, (unsigned long long)ps.fin.tally.bytes,
	       ps.gone ? "yes" : "no", ps.error[0] ? " error=" : "", ps.error);
	if (r < 0)
		fprintf(stderr, "gpurun: status file: %s\n", strerror(-r));
	fflush(stdout);
	return ps.exit_code;
}
