/* auditd.c: the audit writer. One thread polls for requests, appends every ready request
 * as one batch (one write, one fdatasync) and acks. The open segment's appends land on
 * zeros written ahead of them (zerofill.h). Scheduled checkpoints (batch, heartbeat) are
 * signed and written by a signer thread, so that their two flushes never stall a batch;
 * the others (start, rotate, degraded, stop) by the writer itself, at their place. */
#include "auditd.h"
#include "audit-export.h"
#include "notify.h"
#include "zerofill.h"
#include "thread.h"

#include <inttypes.h>
#include <pthread.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>

#include <sodium.h>

#define NS 1000000000LL
#define DAY_NS (86400LL * NS)

struct conn {
	int fd;
	uint32_t gen;
	uint32_t uid, pid;
};

struct pending {
	size_t slot;
	uint32_t gen, id;
	int status;
	struct phi_audit_record rec;
};

/* What a checkpoint covers: the chain after its last record. */
struct ck_at {
	uint64_t size, seg;
	uint8_t head[PHI_AUDIT_HASH_LEN];
};

struct w {
	const struct phi_auditd_opts *o;
	const struct phi_audit_signer *signer;
	int dfd, efd, lock_fd, seg_fd, ck_fd, res_fd, lfd;
	char boot[37];
	/* chain */
	uint64_t next_seq;
	uint8_t head[PHI_AUDIT_HASH_LEN];
	uint64_t seg, seg_size;
	int64_t seg_day;
	bool need_trunc;
	/* checkpoints: the file and the note chain, under ck_io (whoever writes a note) */
	pthread_mutex_t ck_io;
	uint64_t ck_idx, ck_good;
	uint8_t ck_prev[PHI_AUDIT_HASH_LEN];
	bool ck_need_trunc;
	/* the schedule, under ck_mu (short sections; the writer's loop reads it): the last
	 * note's size and time, the chain state the last batch made durable (what the signer
	 * signs), and the signer's request */
	pthread_mutex_t ck_mu;
	pthread_cond_t ck_cv;
	uint64_t ck_size;
	int64_t ck_last; /* CLOCK_MONOTONIC ns */
	struct ck_at pub;
	int ck_want;     /* kind the signer is asked for; -1: none */
	bool ck_busy, ck_stop, ck_started;
	pthread_t ck_thread;
	int64_t wd_last; /* CLOCK_MONOTONIC ns of the last WATCHDOG=1 */
	bool degraded;
	/* checkpoint export to Azure: a thread of its own, so that the network never delays a
	 * batch; exp_fd (eventfd) wakes the loop when its state changes, exp_state is the
	 * state last recorded in the log */
	struct phi_audit_export *exp;
	int exp_fd, exp_state;
	struct phi_zerofill *zf; /* NULL: appends extend the file */
	struct phi_buf out;
	struct conn *conns;
	size_t nconns;
	struct pending *pend;
	size_t npend;
};

static int64_t now_ns(clockid_t c)
{
	struct timespec ts;
	clock_gettime(c, &ts);
	return (int64_t)ts.tv_sec * NS + ts.tv_nsec;
}

static void logmsg(const char *what, int err)
{
	if (err)
		fprintf(stderr, "phifs-auditd: %s: %s\n", what, strerror(err < 0 ? -err : err));
	else
		fprintf(stderr, "phifs-auditd: %s\n", what);
}

#define ZF_PAGE 4096u /* the page, and ext4's block */

static int pwrite_all(int fd, const void *p, size_t len, uint64_t off)
{
	const uint8_t *b = p;
	while (len) {
		ssize_t n = pwrite(fd, b, len, (off_t)off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return phi_neg_errno();
		if (n == 0)
			return -EIO;
		b += n;
		off += (uint64_t)n;
		len -= (size_t)n;
	}
	return 0;
}

static int write_all(int fd, const void *p, size_t len)
{
	size_t off = 0;
	while (off < len) {
		ssize_t n = write(fd, (const uint8_t *)p + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return phi_neg_errno();
		off += (size_t)n;
	}
	return 0;
}

/* A record the writer makes about itself. */
static void self_event(struct phi_audit_record *rec, enum phi_audit_ev e, uint8_t outcome,
		       const char *detail)
{
	memset(rec, 0, sizeof(*rec));
	rec->ev.event = e;
	rec->ev.action = 'E';
	rec->ev.outcome = outcome;
	rec->ev.actor.uid = (uint32_t)geteuid();
	rec->ev.actor.gid = (uint32_t)getegid();
	rec->ev.actor.pid = (uint32_t)getpid();
	snprintf(rec->ev.actor.comm, sizeof(rec->ev.actor.comm), "phifs-auditd");
	snprintf(rec->ev.actor.role, sizeof(rec->ev.actor.role), "audit");
	snprintf(rec->ev.detail, sizeof(rec->ev.detail), "%s", detail);
	rec->src_uid = (uint32_t)geteuid();
	rec->src_pid = (uint32_t)getpid();
}

/* ---- checkpoints ---- */

/* Sign and write a checkpoint of at (w->ck_io held). */
static int checkpoint_at(struct w *w, int kind, const struct ck_at *at)
{
	struct phi_audit_ckpt ck = { 0 };
	struct phi_buf note _cleanup_buf_, fr _cleanup_buf_;
	phi_buf_init(&note, PHI_AUDIT_NOTE_MAX);
	phi_buf_init(&fr, PHI_AUDIT_NOTE_MAX + 5);
	snprintf(ck.origin, sizeof(ck.origin), "%s", w->signer->vk.name);
	ck.size = at->size;
	memcpy(ck.head, at->head, sizeof(ck.head));
	ck.idx = w->ck_idx + 1;
	ck.ts_ns = now_ns(CLOCK_REALTIME);
	memcpy(ck.prev, w->ck_prev, sizeof(ck.prev));
	ck.seg = at->seg;
	ck.kind = kind;
	int r = phi_audit_ckpt_sign(&ck, w->signer, &note);
	if (r == 0 && kind == PHI_CK_START && w->o->prev_signer)
		r = phi_audit_ckpt_cosign(w->o->prev_signer, &note);
	if (r == 0)
		r = phi_audit_frame_put(&fr, note.p, note.len);
	if (r < 0)
		return r;
	if (w->ck_need_trunc) {
		if (ftruncate(w->ck_fd, (off_t)w->ck_good) < 0)
			return phi_neg_errno();
		w->ck_need_trunc = false;
	}
	r = write_all(w->ck_fd, fr.p, fr.len);
	if (r == 0 && fdatasync(w->ck_fd) < 0)
		r = phi_neg_errno();
	if (r < 0) {
		w->ck_need_trunc = ftruncate(w->ck_fd, (off_t)w->ck_good) < 0;
		return r;
	}
	w->ck_good += fr.len;
	w->ck_idx = ck.idx;
	pthread_mutex_lock(&w->ck_mu);
	w->ck_size = ck.size;
	w->ck_last = now_ns(CLOCK_MONOTONIC);
	pthread_mutex_unlock(&w->ck_mu);
	phi_audit_note_hash(note.p, note.len, w->ck_prev);
	if (w->exp)
		phi_audit_export_notify(w->exp, w->ck_good, w->ck_idx);
	if (w->efd < 0)
		return 0;

	char name[64];
	snprintf(name, sizeof(name), "ckpt-%012" PRIu64 ".note", ck.idx);
	r = phi_audit_write_file(w->efd, name, note.p, note.len, 0644, true);
	if (r < 0)
		logmsg("exporting a checkpoint failed", r); /* the note stays in checkpoints.log */
	return 0;
}

/* A checkpoint of the writer's own chain state, written now (the writer's thread: start,
 * rotate, degraded, stop). It waits for a note the signer is writing. */
static int checkpoint(struct w *w, int kind)
{
	struct ck_at at = { .size = w->next_seq - 1, .seg = w->seg };
	memcpy(at.head, w->head, sizeof(at.head));
	pthread_mutex_lock(&w->ck_io);
	int r = checkpoint_at(w, kind, &at);
	pthread_mutex_unlock(&w->ck_io);
	return r;
}

/* After a durable batch: the chain state the signer may sign. */
static void ck_publish(struct w *w)
{
	pthread_mutex_lock(&w->ck_mu);
	w->pub.size = w->next_seq - 1;
	w->pub.seg = w->seg;
	memcpy(w->pub.head, w->head, sizeof(w->pub.head));
	pthread_mutex_unlock(&w->ck_mu);
}

/* The signer: writes the scheduled checkpoints the writer's loop asks for. */
static void *signer_thread(void *arg)
{
	struct w *w = arg;
	pthread_mutex_lock(&w->ck_mu);
	for (;;) {
		while (w->ck_want < 0 && !w->ck_stop)
			pthread_cond_wait(&w->ck_cv, &w->ck_mu);
		if (w->ck_stop)
			break;
		int kind = w->ck_want;
		w->ck_want = -1;
		pthread_mutex_unlock(&w->ck_mu);
		/* the state is taken once the note's turn has come: a note the writer wrote
		 * meanwhile (rotate, degraded) covers at most that much, so sizes never go back */
		pthread_mutex_lock(&w->ck_io);
		pthread_mutex_lock(&w->ck_mu);
		struct ck_at at = w->pub;
		pthread_mutex_unlock(&w->ck_mu);
		int r = checkpoint_at(w, kind, &at);
		pthread_mutex_unlock(&w->ck_io);
		if (r < 0)
			logmsg("writing a checkpoint failed", r);
		pthread_mutex_lock(&w->ck_mu);
		if (r < 0)
			w->ck_last = now_ns(CLOCK_MONOTONIC); /* retry on the next period, not in a loop */
		w->ck_busy = false;
	}
	pthread_mutex_unlock(&w->ck_mu);
	return NULL;
}

static int signer_start(struct w *w)
{
	int r = phi_thread_start(&w->ck_thread, signer_thread, w);
	w->ck_started = r == 0;
	return r;
}

/* Stop the signer after the note it is writing. */
static void signer_stop(struct w *w)
{
	if (!w->ck_started)
		return;
	pthread_mutex_lock(&w->ck_mu);
	w->ck_stop = true;
	pthread_cond_signal(&w->ck_cv);
	pthread_mutex_unlock(&w->ck_mu);
	pthread_join(w->ck_thread, NULL);
	w->ck_started = false;
}

/* ---- segments ---- */

/* Have zeros written ahead of the open segment's end. Without them appends are only
 * slower, so a failure is logged, not returned. */
static void zf_follow(struct w *w, const char *name)
{
	if (!w->zf)
		return;
	int r = phi_zerofill_attach(w->zf, w->dfd, name, w->seg_size);
	if (r < 0)
		logmsg("cannot write zeros ahead of the segment; appends extend it", r);
}

/* Cut the open segment back to its data (durably when sync): after a failed batch, and
 * before it is sealed (a sealed segment, and a stopped log, ends with its last record). */
static int seg_cut(struct w *w, bool sync)
{
	char name[64];
	phi_zerofill_detach(w->zf);
	int r = ftruncate(w->seg_fd, (off_t)w->seg_size) < 0 || (sync && fsync(w->seg_fd) < 0)
			? phi_neg_errno()
			: 0;
	if (r == 0 && !sync && phi_audit_seg_name(w->seg, name, sizeof(name)) == 0)
		zf_follow(w, name);
	return r;
}

static int seg_create(struct w *w, uint64_t segno)
{
	struct phi_audit_seghdr h = { .v = 1, .seg = segno, .first_seq = w->next_seq };
	struct phi_buf js _cleanup_buf_, fr _cleanup_buf_;
	char name[64];
	phi_buf_init(&js, 1024);
	phi_buf_init(&fr, 1100);
	snprintf(h.origin, sizeof(h.origin), "%s", w->signer->vk.name);
	memcpy(h.prev_head, w->head, sizeof(h.prev_head));
	h.created_ns = now_ns(CLOCK_REALTIME);
	int r = phi_audit_seghdr_encode(&h, &js);
	if (r == 0)
		r = phi_audit_frame_put(&fr, js.p, js.len);
	if (r == 0)
		r = phi_audit_seg_name(segno, name, sizeof(name));
	if (r == 0)
		r = phi_audit_write_file(w->dfd, name, fr.p, fr.len, 0640, false);
	if (r < 0)
		return r;
	/* writes go to seg_size (pwrite): past it lie the zeros written ahead */
	int fd = openat(w->dfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return phi_neg_errno();
	phi_closep(&w->seg_fd);
	w->seg_fd = fd;
	w->seg = segno;
	w->seg_size = fr.len;
	w->seg_day = h.created_ns / DAY_NS;
	zf_follow(w, name);
	return 0;
}

static int rotate(struct w *w)
{
	/* before the next segment exists: only the last one may end in zeros */
	int r = seg_cut(w, true);
	if (r == 0)
		r = checkpoint(w, PHI_CK_ROTATE);
	if (r < 0)
		return r;
	(void)fchmod(w->seg_fd, 0440);
	return seg_create(w, w->seg + 1);
}

/* ---- appending ---- */

/* Append recs as one batch: one write, one fdatasync. On failure the segment is cut back and
 * the chain state is unchanged. */
static int append(struct w *w, struct phi_audit_record **recs, size_t n)
{
	uint8_t head[PHI_AUDIT_HASH_LEN], leaf[PHI_AUDIT_HASH_LEN];
	struct phi_buf js _cleanup_buf_ = { 0 };
	int r;
	if (n == 0)
		return 0;
	if (w->need_trunc) {
		r = seg_cut(w, false);
		if (r < 0)
			return r;
		w->need_trunc = false;
	}
	int64_t ts = now_ns(CLOCK_REALTIME);
	bool has_records = w->next_seq > 1; /* a fresh segment after a fresh log never rotates */
	if (has_records && w->seg_day != ts / DAY_NS && w->seg_size > 0) {
		r = rotate(w);
		if (r < 0)
			return r;
	}
	phi_buf_init(&js, PHI_AUDIT_RECORD_MAX);
	w->out.len = 0;
	memcpy(head, w->head, sizeof(head));
	for (size_t i = 0; i < n; i++) {
		struct phi_audit_record *rec = recs[i];
		rec->v = 1;
		rec->seq = w->next_seq + i;
		rec->ts_ns = ts;
		rec->mono_ns = (uint64_t)now_ns(CLOCK_MONOTONIC);
		memcpy(rec->boot, w->boot, sizeof(rec->boot));
		memcpy(rec->prev, head, sizeof(head));
		js.len = 0;
		r = phi_audit_encode_record(rec, &js);
		if (r == 0)
			r = phi_audit_frame_put(&w->out, js.p, js.len);
		if (r < 0)
			return r;
		phi_audit_leaf(js.p, js.len, leaf);
		phi_audit_chain(head, rec->seq, leaf, head);
	}
	uint64_t max = w->o->segment_max ? w->o->segment_max : 64ull << 20;
	if (w->seg_size + w->out.len > max && w->next_seq > 1) {
		/* the header encodes prev_head, so rotate before the batch is placed */
		r = rotate(w);
		if (r < 0)
			return r;
		/* seq and prev do not change: the chain continues across segments */
	}
	/* The zeros ahead are written with O_DIRECT, so the page cache never holds them, and an
	 * append that ends inside such a page makes ext4 read that block from the disk first
	 * (ext4_block_write_begin), synchronously, inside the batch: every page or two under
	 * load. Padding the write with the zeros the file already holds, to the page's end,
	 * covers the block whole and nothing is read. Only while zeros are kept ahead, where the
	 * padding changes no byte of the file. */
	uint64_t end = w->seg_size + w->out.len;
	size_t pad = w->zf ? (size_t)(-end & (ZF_PAGE - 1)) : 0;
	if (pad && phi_buf_reserve(&w->out, pad) < 0)
		pad = 0;
	if (pad)
		memset(w->out.p + w->out.len, 0, pad);
	phi_zerofill_claim(w->zf, end + pad);
	r = pwrite_all(w->seg_fd, w->out.p, w->out.len + pad, w->seg_size);
	if (r == 0 && fdatasync(w->seg_fd) < 0)
		r = phi_neg_errno();
	if (r < 0) {
		w->need_trunc = seg_cut(w, false) < 0;
		return r;
	}
	w->seg_size += w->out.len;
	w->next_seq += n;
	memcpy(w->head, head, sizeof(head));
	ck_publish(w);
	return 0;
}

static int append_self(struct w *w, enum phi_audit_ev e, uint8_t outcome, const char *detail)
{
	_cleanup_free_ struct phi_audit_record *rec = malloc(sizeof(*rec));
	if (!rec)
		return -ENOMEM;
	self_event(rec, e, outcome, detail);
	return append(w, &rec, 1);
}

static void enter_degraded(struct w *w, int err)
{
	char d[128];
	if (w->degraded)
		return;
	w->degraded = true;
	logmsg("log write failed, degraded: every submission fails until space returns", err);
	/* give the reserved space back so that this very record can be written */
	(void)ftruncate(w->res_fd, 0);
	snprintf(d, sizeof(d), "log write failed (%s); submissions are refused", strerror(-err));
	int r = append_self(w, PHI_AE_AUDIT_DEGRADED, 12, d);
	if (r == 0)
		r = checkpoint(w, PHI_CK_DEGRADED);
	if (r < 0)
		logmsg("recording the degraded state failed", r);
}

/* Service resumes only when the reserve can be allocated again. */
static int try_resume(struct w *w)
{
	uint64_t res = w->o->reserve_bytes ? w->o->reserve_bytes : 1u << 20;
	int r = posix_fallocate(w->res_fd, 0, (off_t)res);
	if (r != 0)
		return -r;
	r = append_self(w, PHI_AE_AUDIT_DEGRADED, 0, "space returned; service resumed");
	if (r < 0) {
		(void)ftruncate(w->res_fd, 0);
		return r;
	}
	w->degraded = false;
	logmsg("service resumed", 0);
	return 0;
}

static int commit(struct w *w, struct phi_audit_record **recs, size_t n)
{
	int r = 0;
	if (w->degraded)
		r = try_resume(w);
	if (r == 0)
		r = append(w, recs, n);
	if (r == -ENOSPC || r == -EIO || r == -EDQUOT || r == -EROFS || r == -EFBIG) {
		enter_degraded(w, r);
		return r;
	}
	return r;
}

/* ---- recovery ---- */

/* Save the bytes [off, end) to NAME.torn-OFF, then cut the file at off (the zeros after end
 * were written ahead, zerofill.h). Returns a detail line. */
static int cut_tail(struct w *w, int fd, const char *name, const struct phi_buf *b, size_t off,
		    size_t end, char *detail, size_t dmax)
{
	char side[128], hb[PHI_AUDIT_HASH_LEN * 2 + 1];
	uint8_t h[PHI_AUDIT_HASH_LEN];
	size_t len = end - off;
	crypto_hash_sha256(h, b->p + off, len);
	sodium_bin2hex(hb, sizeof(hb), h, sizeof(h));
	snprintf(side, sizeof(side), "%s.torn-%zu", name, off);
	int r = phi_audit_write_file(w->dfd, side, b->p + off, len, 0440, false);
	if (r < 0 && r != -EEXIST)
		return r;
	if (ftruncate(fd, (off_t)off) < 0 || fsync(fd) < 0)
		return phi_neg_errno();
	snprintf(detail, dmax, "%s: cut %zu bytes at offset %zu, sha256 %s", name, len, off, hb);
	return 0;
}

static int recover_segment(struct w *w, uint64_t segno, char *detail, size_t dmax)
{
	char name[64];
	struct phi_buf b _cleanup_buf_ = { 0 };
	struct phi_audit_seghdr h;
	const uint8_t *p;
	size_t len;
	(void)phi_audit_seg_name(segno, name, sizeof(name));
	int r = phi_audit_read_file(w->dfd, name, 1ull << 30, &b);
	if (r < 0)
		return r;
	struct phi_cur c = phi_cur_init(b.p, b.len);
	/* segments are created complete with their header: a bad one is damage, not a crash */
	if (phi_audit_frame_next(&c, PHI_AUDIT_RECORD_MAX, &p, &len) < 0 ||
	    phi_audit_seghdr_parse(p, len, &h) < 0 || h.seg != segno)
		return -EBADMSG;
	w->next_seq = h.first_seq;
	memcpy(w->head, h.prev_head, sizeof(w->head));
	_cleanup_free_ struct phi_audit_record *rec = malloc(sizeof(*rec));
	if (!rec)
		return -ENOMEM;
	while (phi_audit_frame_next(&c, PHI_AUDIT_RECORD_MAX, &p, &len) == 0) {
		uint8_t leaf[PHI_AUDIT_HASH_LEN];
		if (phi_audit_parse_record(p, len, rec) < 0 || rec->seq != w->next_seq ||
		    memcmp(rec->prev, w->head, sizeof(w->head)) != 0) {
			c.off = (size_t)(p - b.p) - 4;
			break;
		}
		phi_audit_leaf(p, len, leaf);
		phi_audit_chain(w->head, rec->seq, leaf, w->head);
		w->next_seq++;
	}
	int fd = openat(w->dfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return phi_neg_errno();
	w->seg_fd = fd;
	/* zeros to the end were written ahead and are kept; anything else is a torn batch */
	size_t end = b.len;
	while (end > c.off && b.p[end - 1] == 0)
		end--;
	if (end > c.off) {
		r = cut_tail(w, fd, name, &b, c.off, end, detail, dmax);
		if (r < 0)
			return r;
	}
	w->seg = segno;
	w->seg_size = c.off;
	w->seg_day = h.created_ns / DAY_NS;
	zf_follow(w, name);
	return 0;
}

static int recover_checkpoints(struct w *w, char *detail, size_t dmax)
{
	struct phi_buf b _cleanup_buf_ = { 0 };
	const uint8_t *p;
	size_t len;
	w->ck_fd = openat(w->dfd, "checkpoints.log",
			  O_RDWR | O_APPEND | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0640);
	if (w->ck_fd < 0)
		return phi_neg_errno();
	int r = phi_audit_read_file(w->dfd, "checkpoints.log", 1ull << 34, &b);
	if (r < 0)
		return r;
	struct phi_cur c = phi_cur_init(b.p, b.len);
	const uint8_t *last = NULL;
	size_t last_len = 0;
	/* older notes need only their shape and order here (their signatures may be by keys
	 * since rotated away; phifs-audit verify checks them); the newest note must be signed
	 * by this key or the previous one */
	while (phi_audit_frame_next(&c, PHI_AUDIT_NOTE_MAX, &p, &len) == 0) {
		struct phi_audit_ckpt ck;
		if (phi_audit_ckpt_parse(p, len, &ck) < 0 || ck.idx != w->ck_idx + 1) {
			c.off = (size_t)(p - b.p) - 4;
			break;
		}
		w->ck_idx = ck.idx;
		w->ck_size = ck.size;
		phi_audit_note_hash(p, len, w->ck_prev);
		last = p;
		last_len = len;
	}
	if (last) {
		struct phi_audit_ckpt ck;
		int v = phi_audit_ckpt_verify(last, last_len, &w->signer->vk, &ck);
		if (v == -ENOKEY && w->o->prev_signer)
			v = phi_audit_ckpt_verify(last, last_len, &w->o->prev_signer->vk, &ck);
		/* a whole note signed by another key is no torn tail: a key mix-up (or a
		 * rotation without --previous-signing-key) must not cut the chain */
		if (v == -ENOKEY)
			return -EKEYREJECTED;
		if (v < 0) {
			/* a damaged newest note: cut it like a torn one; the one before is kept */
			c.off = (size_t)(last - b.p) - 4;
			w->ck_idx--;
			struct phi_cur c2 = phi_cur_init(b.p, c.off);
			const uint8_t *q;
			size_t ql;
			memset(w->ck_prev, 0, sizeof(w->ck_prev));
			w->ck_size = 0;
			while (phi_audit_frame_next(&c2, PHI_AUDIT_NOTE_MAX, &q, &ql) == 0 &&
			       phi_audit_ckpt_parse(q, ql, &ck) == 0) {
				w->ck_size = ck.size;
				phi_audit_note_hash(q, ql, w->ck_prev);
			}
		}
	}
	if (c.off < b.len) {
		r = cut_tail(w, w->ck_fd, "checkpoints.log", &b, c.off, b.len, detail, dmax);
		if (r < 0)
			return r;
	}
	w->ck_good = c.off;
	return 0;
}

static int open_log(struct w *w)
{
	const struct phi_auditd_opts *o = w->o;
	char d1[400] = "", d2[400] = "";
	if (mkdir(o->dir, 0750) < 0 && errno != EEXIST)
		return phi_neg_errno();
	w->dfd = open(o->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (o->export_dir)
		w->efd = open(o->export_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (w->dfd < 0 || (o->export_dir && w->efd < 0))
		return phi_neg_errno();
	w->lock_fd = openat(w->dfd, ".lock", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (w->lock_fd < 0)
		return phi_neg_errno();
	if (flock(w->lock_fd, LOCK_EX | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? -EBUSY : phi_neg_errno();
	int r = phi_audit_boot_id(w->boot);
	if (r < 0)
		return r;

	_cleanup_free_ uint64_t *segs = NULL;
	size_t nseg;
	r = phi_audit_list(w->dfd, "seg-", ".log", &segs, &nseg);
	if (r < 0)
		return r;
	r = recover_checkpoints(w, d2, sizeof(d2));
	if (r < 0)
		return r;
	if (nseg == 0) {
		w->next_seq = 1;
		memset(w->head, 0, sizeof(w->head));
		r = seg_create(w, 0);
	} else
		r = recover_segment(w, segs[nseg - 1], d1, sizeof(d1));
	if (r < 0)
		return r;
	if (w->ck_size > w->next_seq - 1)
		snprintf(d2, sizeof(d2), "checkpoints cover %" PRIu64 " records, the log holds %" PRIu64,
			 w->ck_size, w->next_seq - 1);

	w->res_fd = openat(w->dfd, "reserve", O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC, 0600);
	if (w->res_fd < 0)
		return phi_neg_errno();
	uint64_t res = o->reserve_bytes ? o->reserve_bytes : 1u << 20;
	r = posix_fallocate(w->res_fd, 0, (off_t)res);
	if (r != 0) {
		logmsg("cannot allocate the reserve; starting degraded", -r);
		w->degraded = true;
		(void)ftruncate(w->res_fd, 0);
	}

	if (d1[0] || d2[0]) {
		char d[256];
		logmsg("recovered a torn tail", 0);
		snprintf(d, sizeof(d), "%.127s%s%.120s", d1, d1[0] && d2[0] ? "; " : "", d2);
		r = append_self(w, PHI_AE_AUDIT_RECOVERY, 8, d);
		if (r < 0)
			logmsg("writing the recovery record failed", r);
	}
	return 0;
}

/* ---- the socket side ---- */

static int listen_socket(const char *path)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	struct stat st;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path));
	/* a stale socket of a previous run; never remove anything that is not a socket */
	if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode))
		(void)unlink(path);
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0)
		return phi_neg_errno();
	if (bind(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || chmod(path, 0660) < 0 ||
	    listen(fd, 512) < 0)
		return phi_neg_errno();
	return TAKE_FD(fd);
}

static void conn_close(struct w *w, size_t i)
{
	phi_closep(&w->conns[i].fd);
	w->conns[i].gen++;
}

static void rep_entry(uint8_t *m, uint32_t id, int status, uint64_t seq)
{
	memcpy(m, PHI_AUDIT_REP_MAGIC, 4);
	phi_put_u32be(m + 4, id);
	phi_put_u32be(m + 8, (uint32_t)status);
	phi_put_u64be(m + 12, seq);
}

/* Send one reply message of n entries to a connection; one that cannot take it loses the
 * connection (its client then fails what it has in flight there: not recorded). */
static void reply_send(struct w *w, size_t slot, uint32_t gen, const uint8_t *m, size_t n)
{
	struct conn *c = &w->conns[slot];
	if (c->fd < 0 || c->gen != gen)
		return; /* the client went away */
	size_t len = n * PHI_AUDIT_REP_LEN;
	if (send(c->fd, m, len, MSG_DONTWAIT | MSG_NOSIGNAL) != (ssize_t)len)
		conn_close(w, slot);
}

static void reply(struct w *w, size_t slot, uint32_t gen, uint32_t id, int status, uint64_t seq)
{
	uint8_t m[PHI_AUDIT_REP_LEN];
	rep_entry(m, id, status, seq);
	reply_send(w, slot, gen, m, 1);
}

static void accept_all(struct w *w)
{
	size_t max = w->o->max_clients ? w->o->max_clients : 1024;
	for (;;) {
		int fd = accept4(w->lfd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
		if (fd < 0)
			return;
		struct ucred cr;
		socklen_t cl = sizeof(cr);
		size_t i;
		if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cr, &cl) < 0) {
			(void)close(fd);
			continue;
		}
		for (i = 0; i < w->nconns && w->conns[i].fd >= 0; i++)
			;
		if (i == w->nconns) {
			if (w->nconns == max) {
				(void)close(fd);
				continue;
			}
			w->conns[w->nconns++] = (struct conn){ .fd = -1 };
		}
		w->conns[i].fd = fd;
		w->conns[i].uid = (uint32_t)cr.uid;
		w->conns[i].pid = (uint32_t)cr.pid;
	}
}

/* Read every ready request of one connection into the batch (bounded by batch_max). */
static void read_conn(struct w *w, size_t slot, size_t batch_max)
{
	uint8_t buf[PHI_AUDIT_REQ_HDR + PHI_AUDIT_RECORD_MAX + 1];
	struct conn *c = &w->conns[slot];
	while (c->fd >= 0 && w->npend < batch_max) {
		ssize_t n = recv(c->fd, buf, sizeof(buf), MSG_DONTWAIT);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return;
		if (n <= 0) {
			conn_close(w, slot);
			return;
		}
		if ((size_t)n < PHI_AUDIT_REQ_HDR || memcmp(buf, PHI_AUDIT_REQ_MAGIC, 4) != 0) {
			conn_close(w, slot); /* not our protocol */
			return;
		}
		struct pending *pe = &w->pend[w->npend];
		pe->slot = slot;
		pe->gen = c->gen;
		pe->id = (uint32_t)buf[4] << 24 | (uint32_t)buf[5] << 16 | (uint32_t)buf[6] << 8 | buf[7];
		memset(&pe->rec, 0, sizeof(pe->rec));
		if ((size_t)n > PHI_AUDIT_REQ_HDR + PHI_AUDIT_RECORD_MAX ||
		    phi_audit_parse_event(buf + PHI_AUDIT_REQ_HDR, (size_t)n - PHI_AUDIT_REQ_HDR,
					  &pe->rec.ev) < 0) {
			reply(w, slot, c->gen, pe->id, -EINVAL, 0);
			continue;
		}
		/* writer-assigned provenance: who really sent this */
		pe->rec.src_uid = c->uid;
		pe->rec.src_pid = c->pid;
		w->npend++;
	}
}

/* Commit the batch, then answer it: one message per connection, holding an entry for
 * each of its requests in the batch (a client pipelines several on one connection), so a
 * batch costs a send and a wakeup per client connection, not per record. */
static void flush_batch(struct w *w)
{
	struct phi_audit_record *recs[PHI_AUDITD_BATCH_MAX];
	uint8_t m[PHI_AUDITD_BATCH_MAX * PHI_AUDIT_REP_LEN];
	bool sent[PHI_AUDITD_BATCH_MAX] = { false };
	size_t n = w->npend;
	for (size_t i = 0; i < n; i++)
		recs[i] = &w->pend[i].rec;
	uint64_t first = w->next_seq;
	int r = commit(w, recs, n);
	if (r == 0)
		first = w->next_seq - n; /* a "resumed" record may have come first */
	for (size_t i = 0; i < n; i++) {
		if (sent[i])
			continue;
		const struct pending *pi = &w->pend[i];
		size_t k = 0;
		for (size_t j = i; j < n; j++) {
			const struct pending *pj = &w->pend[j];
			if (sent[j] || pj->slot != pi->slot || pj->gen != pi->gen)
				continue;
			rep_entry(m + k++ * PHI_AUDIT_REP_LEN, pj->id, r, r == 0 ? first + j : 0);
			sent[j] = true;
		}
		reply_send(w, pi->slot, pi->gen, m, k);
	}
	w->npend = 0;
}

static int poll_timeout(struct w *w, int64_t now)
{
	const struct phi_auditd_opts *o = w->o;
	int64_t ck_ms = o->ckpt_ms ? o->ckpt_ms : 1000, hb = o->heartbeat_s ? o->heartbeat_s : 60;
	pthread_mutex_lock(&w->ck_mu);
	int64_t due = w->ck_last + hb * NS;
	if (w->next_seq - 1 > w->ck_size && w->ck_last + ck_ms * 1000000 < due)
		due = w->ck_last + ck_ms * 1000000;
	if (w->ck_busy)
		due = now + 5000000; /* a note in the works: look again soon, neither spin nor sleep */
	pthread_mutex_unlock(&w->ck_mu);
	if (w->degraded && now + NS < due)
		due = now + NS;
	if (o->watchdog_usec && w->wd_last + (int64_t)(o->watchdog_usec / 2) * 1000 < due)
		due = w->wd_last + (int64_t)(o->watchdog_usec / 2) * 1000;
	if (due <= now)
		return 0;
	int64_t ms = (due - now + 999999) / 1000000;
	return ms > 60000 ? 60000 : (int)ms;
}

static void maybe_checkpoint(struct w *w)
{
	const struct phi_auditd_opts *o = w->o;
	int64_t now = now_ns(CLOCK_MONOTONIC);
	int64_t ck_ms = o->ckpt_ms ? o->ckpt_ms : 1000, hb = o->heartbeat_s ? o->heartbeat_s : 60;
	uint64_t nrec = o->ckpt_records ? o->ckpt_records : 1024;
	uint64_t size = w->next_seq - 1;
	int kind = -1;
	pthread_mutex_lock(&w->ck_mu);
	if (size > w->ck_size && (size - w->ck_size >= nrec || now >= w->ck_last + ck_ms * 1000000))
		kind = PHI_CK_BATCH;
	else if (now >= w->ck_last + hb * NS)
		kind = PHI_CK_HEARTBEAT;
	if (kind >= 0 && !w->ck_busy) {
		w->ck_want = kind;
		w->ck_busy = true;
		pthread_cond_signal(&w->ck_cv);
	}
	pthread_mutex_unlock(&w->ck_mu);
}

/* Record a change of the Azure export's state in the log itself (the exporter thread never
 * writes the log): outcome 4 when exports fail (the notes stay in checkpoints.log and are
 * appended later), 8 when the blobs hold notes this log does not (export stopped), 0 when
 * it works again. */
static void export_event(struct w *w)
{
	int err, st;
	char d[160];
	if (!w->exp || w->degraded)
		return; /* while the log cannot be written, the next loop tries again */
	st = phi_audit_export_state(w->exp, &err);
	if (st == w->exp_state)
		return; /* one record per change, not one per failed retry */
	uint8_t outcome = 0;
	if (st == PHI_AEX_OK)
		snprintf(d, sizeof(d), "checkpoint export to Azure resumed");
	else if (st == PHI_AEX_FAILING) {
		outcome = 4;
		snprintf(d, sizeof(d), "checkpoint export to Azure failed (%s); the notes are kept and appended later",
			 strerror(-err));
	} else {
		outcome = 8;
		snprintf(d, sizeof(d), "the exported checkpoints differ from the local ones; export to Azure stopped");
	}
	if (append_self(w, PHI_AE_AUDIT_DEGRADED, outcome, d) < 0)
		return;
	w->exp_state = st;
}

static void serve(struct w *w)
{
	const struct phi_auditd_opts *o = w->o;
	size_t batch_max = o->batch_max ? o->batch_max : 64;
	size_t max = o->max_clients ? o->max_clients : 1024;
	_cleanup_free_ struct pollfd *pfd = calloc(max + 3, sizeof(*pfd));
	if (!pfd)
		return;
	for (;;) {
		size_t np = 0;
		pfd[np++] = (struct pollfd){ .fd = o->stop_fd, .events = POLLIN };
		pfd[np++] = (struct pollfd){ .fd = w->lfd, .events = POLLIN };
		for (size_t i = 0; i < w->nconns; i++)
			pfd[np++] = (struct pollfd){ .fd = w->conns[i].fd, .events = POLLIN };
		size_t ei = np;
		pfd[np++] = (struct pollfd){ .fd = w->exp_fd, .events = POLLIN };
		int t = poll_timeout(w, now_ns(CLOCK_MONOTONIC));
		if (poll(pfd, np, t) < 0 && errno != EINTR)
			return;
		if (pfd[0].revents)
			return;
		if (pfd[1].revents)
			accept_all(w);
		if (pfd[ei].revents) {
			uint64_t cnt;
			if (read(w->exp_fd, &cnt, sizeof(cnt)) < 0) {
				/* EAGAIN: nothing to drain */
			}
		}
		int64_t deadline = 0;
		for (;;) {
			for (size_t i = 0; i < w->nconns && w->npend < batch_max; i++)
				if (pfd[i + 2].revents && w->conns[i].fd >= 0)
					read_conn(w, i, batch_max);
			/* optional short wait so that more concurrent submitters share the fsync */
			if (w->npend == 0 || w->npend >= batch_max || o->batch_wait_us == 0)
				break;
			int64_t now = now_ns(CLOCK_MONOTONIC);
			if (!deadline)
				deadline = now + (int64_t)(o->batch_wait_us > 2000 ? 2000 : o->batch_wait_us) * 1000;
			if (now >= deadline)
				break;
			for (size_t i = 0; i < w->nconns; i++)
				pfd[i + 2] = (struct pollfd){ .fd = w->conns[i].fd, .events = POLLIN };
			/* ppoll: the wait is microseconds; poll's milliseconds made 200 us a whole 1 ms */
			struct timespec left = { .tv_sec = (deadline - now) / 1000000000,
						 .tv_nsec = (deadline - now) % 1000000000 };
			if (ppoll(pfd + 2, w->nconns, &left, NULL) <= 0)
				break;
		}
		if (w->npend)
			flush_batch(w);
		export_event(w);
		maybe_checkpoint(w);
		/* from the loop, after the batch is committed: a hung writer stops pinging */
		int64_t now = now_ns(CLOCK_MONOTONIC);
		if (o->watchdog_usec && now - w->wd_last >= (int64_t)(o->watchdog_usec / 2) * 1000) {
			(void)phi_notify_send(o->notify_socket, "WATCHDOG=1");
			w->wd_last = now;
		}
	}
}

int phi_auditd_run(const struct phi_auditd_opts *o, const struct phi_audit_signer *signer)
{
	struct w w = { .o = o, .signer = signer, .dfd = -1, .efd = -1, .lock_fd = -1, .seg_fd = -1,
		       .ck_fd = -1, .res_fd = -1, .lfd = -1, .exp_fd = -1, .ck_want = -1 };
	pthread_mutex_init(&w.ck_io, NULL);
	pthread_mutex_init(&w.ck_mu, NULL);
	pthread_cond_init(&w.ck_cv, NULL);
	size_t max = o->max_clients ? o->max_clients : 1024;
	size_t bmax = o->batch_max ? o->batch_max : 64;
	int r;
	if (bmax > PHI_AUDITD_BATCH_MAX || !o->dir || (!o->export_dir && !o->export_url) || !o->socket_path)
		return -EINVAL;
	if (o->prev_signer && (strcmp(o->prev_signer->vk.name, signer->vk.name) != 0 ||
			       !memcmp(o->prev_signer->vk.pk, signer->vk.pk, sizeof(signer->vk.pk))))
		return -EINVAL; /* a rotation keeps the log's name and changes the key */
	phi_buf_init(&w.out, bmax * (PHI_AUDIT_RECORD_MAX + 5) + ZF_PAGE);
	w.conns = calloc(max, sizeof(*w.conns));
	w.pend = calloc(bmax, sizeof(*w.pend));
	if (!w.conns || !w.pend) {
		r = -ENOMEM;
		goto out;
	}
	if (!o->prealloc_off) {
		r = phi_zerofill_start(o->prealloc ? o->prealloc : 1u << 20, &w.zf);
		if (r < 0)
			goto out;
	}
	r = open_log(&w);
	if (r < 0)
		goto out;
	if (o->export_url) {
		w.exp_fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
		if (w.exp_fd < 0) {
			r = phi_neg_errno();
			goto out;
		}
		r = phi_audit_export_start(o->export_url, o->export_opts, w.dfd, o->export_blob_notes,
					   w.ck_good, w.ck_idx, w.exp_fd, &w.exp);
		if (r < 0)
			goto out;
	}
	if (append_self(&w, PHI_AE_AUDIT_START, 0, "") < 0 || checkpoint(&w, PHI_CK_START) < 0)
		logmsg("writing the start record failed", 0);
	w.ck_last = now_ns(CLOCK_MONOTONIC);
	ck_publish(&w);
	r = signer_start(&w);
	if (r < 0)
		goto out;
	r = listen_socket(o->socket_path);
	if (r < 0)
		goto out;
	w.lfd = r;
	logmsg("ready", 0);
	w.wd_last = now_ns(CLOCK_MONOTONIC);
	(void)phi_notify_send(o->notify_socket, "READY=1\nSTATUS=writing the audit log");
	serve(&w);
	(void)phi_notify_send(o->notify_socket, "STOPPING=1\nSTATUS=stopping");
	if (w.npend)
		flush_batch(&w);
	signer_stop(&w);
	if (append_self(&w, PHI_AE_AUDIT_STOP, 0, "") < 0 || checkpoint(&w, PHI_CK_STOP) < 0)
		logmsg("writing the stop record failed", 0);
	if (seg_cut(&w, true) < 0) /* a stopped log ends with its last record */
		logmsg("cutting the zeros after the last record failed", 0);
	(void)unlink(o->socket_path);
	r = 0;
out:
	signer_stop(&w); /* an error path: no stop checkpoint */
	/* after the stop checkpoint: the exporter tries once more to append it */
	phi_audit_export_stop(w.exp);
	phi_zerofill_stop(w.zf);
	phi_closep(&w.exp_fd);
	for (size_t i = 0; i < w.nconns; i++)
		phi_closep(&w.conns[i].fd);
	free(w.conns);
	free(w.pend);
	phi_buf_done(&w.out);
	phi_closep(&w.lfd);
	phi_closep(&w.seg_fd);
	phi_closep(&w.ck_fd);
	phi_closep(&w.res_fd);
	phi_closep(&w.efd);
	phi_closep(&w.lock_fd);
	phi_closep(&w.dfd);
	pthread_cond_destroy(&w.ck_cv);
	pthread_mutex_destroy(&w.ck_mu);
	pthread_mutex_destroy(&w.ck_io);
	return r;
}
