/* audit-export.c: checkpoint notes to Azure append blobs, from a thread of the audit writer.
 *
 * The blobs hold checkpoints.log's frames byte for byte: blob PREFIX/ckpt-<I>.log holds the
 * notes I, I+1, ... (blob_notes of them, I = k * blob_notes + 1), so they hold exactly a
 * prefix of the local file and the exporter resumes from their lengths after any outage or
 * restart. Every Append Block is conditional on the blob's length (phi_az_append), so a
 * retry never appends a note twice. docs/audit-format.md, "Export to Azure append blobs". */
#include "audit-export.h"

#include <inttypes.h>
#include <pthread.h>
#include <time.h>

#include "audit.h"
#include "store_azure.h"

struct phi_audit_export {
	pthread_t th;
	pthread_mutex_t mu;
	pthread_cond_t cv;
	char store_url[160];
	char *opts;
	char container[64];
	char prefix[512];
	int ck_fd; /* checkpoints.log, read only */
	int wake_fd;
	uint64_t blob_notes;
	/* shared, under mu */
	uint64_t durable_end, durable_n;
	bool stop;
	int state, err;
	/* the thread's own */
	struct phi_store *st;
	bool synced;
	uint64_t off, n;       /* exported: bytes and notes of checkpoints.log */
	uint64_t cur_k, cur_len; /* the blob being appended to and its length */
	bool cur_exists;
	uint64_t *bstart; /* local offset of the first note of blob k */
	size_t nbstart, capbstart;
	uint64_t scan_off, scan_n; /* how far checkpoints.log has been walked */
};

static int blob_name(const char *prefix, uint64_t first_idx, char *out, size_t size)
{
	int n = snprintf(out, size, "%s%sckpt-%012" PRIu64 ".log", prefix, *prefix ? "/" : "",
			 first_idx);
	return n > 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* az://ACCOUNT/CONTAINER[/PREFIX] -> the store URL of the container, container, prefix */
static int parse_url(const char *url, char *store_url, size_t su_size, char *container,
		     char *prefix, size_t pf_size)
{
	if (!url || strncmp(url, "az://", 5) != 0)
		return -EINVAL;
	const char *a = url + 5, *s1 = strchr(a, '/');
	if (!s1 || s1 == a || s1 - a >= 64)
		return -EINVAL;
	const char *c = s1 + 1, *s2 = strchr(c, '/');
	size_t cl = s2 ? (size_t)(s2 - c) : strlen(c);
	if (cl < 3 || cl > 63)
		return -EINVAL;
	for (const char *p = a; p < s1; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			return -EINVAL;
	for (size_t i = 0; i < cl; i++)
		if (!((c[i] >= 'a' && c[i] <= 'z') || (c[i] >= '0' && c[i] <= '9') || c[i] == '-'))
			return -EINVAL;
	const char *pf = s2 ? s2 + 1 : "";
	size_t pl = strlen(pf);
	while (pl && pf[pl - 1] == '/')
		pl--;
	if (pl >= pf_size)
		return -EINVAL;
	for (size_t i = 0; i < pl; i++)
		if (!((pf[i] >= 'A' && pf[i] <= 'Z') || (pf[i] >= 'a' && pf[i] <= 'z') ||
		      (pf[i] >= '0' && pf[i] <= '9') || strchr("_.-/", pf[i])) ||
		    (pf[i] == '/' && (i == 0 || pf[i - 1] == '/')))
			return -EINVAL;
	int n = snprintf(store_url, su_size, "az://%.*s/%.*s", (int)(s1 - a), a, (int)cl, c);
	if (n < 0 || (size_t)n >= su_size)
		return -EINVAL;
	memcpy(container, c, cl);
	container[cl] = 0;
	memcpy(prefix, pf, pl);
	prefix[pl] = 0;
	return 0;
}

static int pread_all(int fd, void *buf, size_t len, uint64_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t k = pread(fd, (uint8_t *)buf + got, len - got, (off_t)(off + got));
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return phi_neg_errno();
		if (k == 0)
			return -EIO; /* the file is shorter than what was declared durable */
		got += (size_t)k;
	}
	return 0;
}

/* Walk the frames of checkpoints.log up to end, remembering where each blob's notes start. */
static int scan(struct phi_audit_export *e, uint64_t end)
{
	uint8_t hdr[4];
	while (e->scan_off < end) {
		if (e->scan_n % e->blob_notes == 0) {
			if (e->nbstart == e->capbstart) {
				size_t cap = e->capbstart ? 2 * e->capbstart : 16;
				uint64_t *v = realloc(e->bstart, cap * sizeof(*v));
				if (!v)
					return -ENOMEM;
				e->bstart = v;
				e->capbstart = cap;
			}
			e->bstart[e->nbstart++] = e->scan_off;
		}
		int r = pread_all(e->ck_fd, hdr, sizeof(hdr), e->scan_off);
		if (r < 0)
			return r;
		uint32_t len = (uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3];
		if (len == 0 || len > PHI_AUDIT_NOTE_MAX || e->scan_off + 5 + len > end)
			return -EBADMSG; /* the writer verified this file at start: damage since */
		e->scan_off += 5 + len;
		e->scan_n++;
	}
	return 0;
}

/* Local offset after note m (0 < m <= scan_n), walking from the start of m's blob. */
static int note_end(struct phi_audit_export *e, uint64_t k, uint64_t len, uint64_t *ret_off,
		    uint64_t *ret_n)
{
	uint64_t o = e->bstart[k], m = k * e->blob_notes, end = o + len;
	uint8_t hdr[4];
	while (o < end && m < e->scan_n && m < (k + 1) * e->blob_notes) {
		int r = pread_all(e->ck_fd, hdr, sizeof(hdr), o);
		if (r < 0)
			return r;
		o += 5 + ((uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3]);
		m++;
	}
	if (o != end)
		return -EBADMSG;
	*ret_off = o;
	*ret_n = m;
	return 0;
}

/* Find what the blobs already hold: the newest blob that exists, its length, and that its
 * last note is byte-identical to the local one. -EBADMSG: the blobs are not a prefix of
 * checkpoints.log (another log's export, or the local file was cut or replaced). */
static int sync_blobs(struct phi_audit_export *e, uint64_t durable_end)
{
	char name[600];
	int r = scan(e, durable_end);
	if (r < 0)
		return r;
	uint64_t k = e->nbstart ? e->nbstart - 1 : 0, len = 0;
	bool found = false;
	for (;;) {
		r = blob_name(e->prefix, k * e->blob_notes + 1, name, sizeof(name));
		r = r < 0 ? r : phi_az_blob_size(e->st, e->container, name, &len);
		if (r == 0) {
			found = true;
			break;
		}
		if (r != -ENOENT)
			return r;
		if (k == 0)
			break;
		k--;
	}
	e->off = 0;
	e->n = 0;
	e->cur_k = k;
	e->cur_len = 0;
	e->cur_exists = found;
	if (!found || len == 0) {
		if (found && k < e->nbstart) {
			e->off = e->bstart[k];
			e->n = k * e->blob_notes;
		}
		e->synced = true;
		return 0;
	}
	if (k >= e->nbstart)
		return -EBADMSG; /* a blob of notes this log does not have */
	uint64_t o, m;
	r = note_end(e, k, len, &o, &m);
	if (r < 0)
		return r;
	/* the last note the blob holds must be ours, byte for byte */
	uint8_t hdr[4];
	uint64_t lo = e->bstart[k];
	for (uint64_t q = lo; q < o;) {
		r = pread_all(e->ck_fd, hdr, sizeof(hdr), q);
		if (r < 0)
			return r;
		uint64_t fl = 5 + ((uint32_t)hdr[0] << 24 | (uint32_t)hdr[1] << 16 | (uint32_t)hdr[2] << 8 | hdr[3]);
		if (q + fl == o)
			lo = q;
		q += fl;
	}
	struct phi_buf remote _cleanup_buf_, local _cleanup_buf_;
	phi_buf_init(&remote, o - lo);
	phi_buf_init(&local, o - lo);
	r = phi_buf_reserve(&local, o - lo);
	r = r < 0 ? r : pread_all(e->ck_fd, local.p, o - lo, lo);
	r = r < 0 ? r : phi_az_blob_get(e->st, e->container, name, lo - e->bstart[k], o - lo, &remote);
	if (r < 0)
		return r;
	if (remote.len != o - lo || memcmp(remote.p, local.p, o - lo) != 0)
		return -EBADMSG;
	e->off = o;
	e->n = m;
	e->cur_len = len;
	e->synced = true;
	return 0;
}

/* Append everything durable that the blobs do not hold yet. */
static int export_some(struct phi_audit_export *e)
{
	char name[600];
	pthread_mutex_lock(&e->mu);
	uint64_t end = e->durable_end, dn = e->durable_n;
	pthread_mutex_unlock(&e->mu);
	int r;
	if (!e->st) {
		/* create=1: the first export makes its container */
		size_t ol = strlen(e->opts) + 16;
		_cleanup_free_ char *o = malloc(ol);
		if (!o)
			return -ENOMEM;
		snprintf(o, ol, "%s%screate=1", e->opts, *e->opts ? "," : "");
		r = phi_store_azure_open(e->store_url, o, &e->st);
		if (r < 0)
			return r;
	}
	if (!e->synced && (r = sync_blobs(e, end)) < 0)
		return r;
	r = scan(e, end);
	if (r < 0)
		return r;
	if (e->scan_n != dn)
		return -EBADMSG;
	struct phi_buf buf _cleanup_buf_;
	size_t bmax = (size_t)(end - e->off < PHI_AZ_APPEND_MAX ? end - e->off : PHI_AZ_APPEND_MAX);
	phi_buf_init(&buf, bmax);
	if (e->n < dn && (r = phi_buf_reserve(&buf, bmax)) < 0)
		return r;
	while (e->n < dn) {
		uint64_t k = e->n / e->blob_notes;
		r = blob_name(e->prefix, k * e->blob_notes + 1, name, sizeof(name));
		if (r < 0)
			return r;
		if (k != e->cur_k || !e->cur_exists) {
			r = phi_az_append_create(e->st, e->container, name);
			if (r == -EEXIST) {
				/* made by an attempt whose answer was lost: go on only if it is
				 * empty (sync_blobs started from the blob of our newest note) */
				uint64_t len;
				r = phi_az_blob_size(e->st, e->container, name, &len);
				if (r == 0 && len != 0)
					return -EBADMSG; /* notes after all of ours: not this log's */
			}
			if (r < 0)
				return r;
			e->cur_k = k;
			e->cur_len = 0;
			e->cur_exists = true;
		}
		/* as many whole notes as fit one Append Block, within this blob */
		uint64_t lim = (k + 1) * e->blob_notes < dn ? (k + 1) * e->blob_notes : dn;
		size_t len = (size_t)(end - e->off < bmax ? end - e->off : bmax);
		r = pread_all(e->ck_fd, buf.p, len, e->off);
		if (r < 0)
			return r;
		struct phi_cur c = phi_cur_init(buf.p, len);
		const uint8_t *p;
		size_t pl;
		uint64_t m = e->n;
		size_t take = 0;
		while (m < lim && phi_audit_frame_next(&c, PHI_AUDIT_NOTE_MAX, &p, &pl) == 0) {
			take = c.off;
			m++;
		}
		if (take == 0)
			return -EBADMSG;
		r = phi_az_append(e->st, e->container, name, e->cur_len, buf.p, take);
		if (r == -ESTALE)
			e->synced = false; /* look at the blobs again next time */
		if (r < 0)
			return r;
		e->cur_len += take;
		e->off += take;
		e->n = m;
	}
	return 0;
}

static void set_state(struct phi_audit_export *e, int state, int err)
{
	pthread_mutex_lock(&e->mu);
	bool changed = e->state != state || e->err != err;
	e->state = state;
	e->err = err;
	pthread_mutex_unlock(&e->mu);
	if (changed) {
		uint64_t one = 1;
		if (write(e->wake_fd, &one, sizeof(one)) < 0) {
			/* the counter is full: the writer has a wake-up pending anyway */
		}
	}
}

static void *run(void *arg)
{
	struct phi_audit_export *e = arg;
	unsigned backoff = 1;
	bool failing = false;
	pthread_mutex_lock(&e->mu);
	for (;;) {
		/* wait for new notes, or the retry time after a failure */
		if (failing) {
			struct timespec ts;
			clock_gettime(CLOCK_REALTIME, &ts);
			ts.tv_sec += backoff;
			while (!e->stop && pthread_cond_timedwait(&e->cv, &e->mu, &ts) == 0)
				;
			backoff = backoff * 2 > 30 ? 30 : backoff * 2;
		} else {
			while (!e->stop && e->durable_n <= e->n)
				pthread_cond_wait(&e->cv, &e->mu);
		}
		bool stop = e->stop;
		int state = e->state;
		pthread_mutex_unlock(&e->mu);
		if (state == PHI_AEX_DIVERGED || (stop && failing))
			break; /* a failing export is retried at the next start, not at every stop */
		int r = export_some(e);
		if (r == -ESTALE && !e->synced)
			r = export_some(e); /* the blobs moved under us: look again once */
		if (r == 0) {
			failing = false;
			backoff = 1;
			set_state(e, PHI_AEX_OK, 0);
		} else {
			failing = true;
			fprintf(stderr, "phifs-auditd: exporting checkpoints to Azure failed: %s\n",
				strerror(-r));
			/* the blobs hold notes this log does not: never append after them */
			set_state(e, r == -EBADMSG ? PHI_AEX_DIVERGED : PHI_AEX_FAILING, r);
		}
		if (stop)
			break;
		pthread_mutex_lock(&e->mu);
	}
	return NULL;
}

int phi_audit_export_start(const char *url, const char *opts, int log_dfd, uint64_t blob_notes,
			   uint64_t durable_end, uint64_t durable_n, int wake_fd,
			   struct phi_audit_export **ret)
{
	struct phi_audit_export *e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->ck_fd = -1;
	int r = parse_url(url, e->store_url, sizeof(e->store_url), e->container, e->prefix,
			  sizeof(e->prefix));
	if (r == 0 && !(e->opts = strdup(opts ? opts : "")))
		r = -ENOMEM;
	if (r == 0) {
		e->ck_fd = openat(log_dfd, "checkpoints.log", O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (e->ck_fd < 0)
			r = phi_neg_errno();
	}
	if (r < 0) {
		phi_closep(&e->ck_fd);
		free(e->opts);
		free(e);
		return r;
	}
	e->blob_notes = blob_notes ? blob_notes : PHI_AUDIT_BLOB_NOTES;
	e->durable_end = durable_end;
	e->durable_n = durable_n;
	e->wake_fd = wake_fd;
	pthread_mutex_init(&e->mu, NULL);
	pthread_cond_init(&e->cv, NULL);
	r = -pthread_create(&e->th, NULL, run, e);
	if (r < 0) {
		pthread_cond_destroy(&e->cv);
		pthread_mutex_destroy(&e->mu);
		phi_closep(&e->ck_fd);
		free(e->opts);
		free(e);
		return r;
	}
	*ret = e;
	return 0;
}

void phi_audit_export_notify(struct phi_audit_export *e, uint64_t end, uint64_t n)
{
	pthread_mutex_lock(&e->mu);
	e->durable_end = end;
	e->durable_n = n;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
}

int phi_audit_export_state(struct phi_audit_export *e, int *ret_err)
{
	pthread_mutex_lock(&e->mu);
	int s = e->state;
	*ret_err = e->err;
	pthread_mutex_unlock(&e->mu);
	return s;
}

void phi_audit_export_stop(struct phi_audit_export *e)
{
	if (!e)
		return;
	pthread_mutex_lock(&e->mu);
	e->stop = true;
	pthread_cond_signal(&e->cv);
	pthread_mutex_unlock(&e->mu);
	pthread_join(e->th, NULL);
	pthread_cond_destroy(&e->cv);
	pthread_mutex_destroy(&e->mu);
	if (e->st)
		phi_store_close(e->st);
	phi_closep(&e->ck_fd);
	free(e->bstart);
	free(e->opts);
	free(e);
}

/* ---- reading back (phifs-audit fetch-checkpoints) ---- */

int phi_audit_export_fetch(const char *url, const char *opts, const char *out_dir,
			   uint64_t *ret_n, char *why, size_t why_size)
{
	char store_url[160], container[64], prefix[512], name[600], file[64];
	struct phi_store *st _cleanup_store_ = NULL;
	snprintf(why, why_size, "%s", "");
	int r = parse_url(url, store_url, sizeof(store_url), container, prefix, sizeof(prefix));
	if (r < 0)
		return r;
	_cleanup_close_ int dfd = open(out_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd < 0)
		return phi_neg_errno();
	r = phi_store_azure_open(store_url, opts, &st);
	if (r < 0)
		return r;
	uint64_t next = 1; /* idx of the next note expected */
	for (;;) {
		struct phi_buf b _cleanup_buf_;
		/* a blob holds at most 50,000 notes of at most 4 KiB each */
		phi_buf_init(&b, 50000ull * (PHI_AUDIT_NOTE_MAX + 5));
		uint64_t first = next;
		r = blob_name(prefix, first, name, sizeof(name));
		r = r < 0 ? r : phi_az_blob_get(st, container, name, 0, 0, &b);
		if (r == -ENOENT)
			break; /* the newest blob was the one before */
		if (r < 0)
			return r;
		if (b.len == 0)
			break; /* created, nothing appended yet */
		struct phi_cur c = phi_cur_init(b.p, b.len);
		const uint8_t *p;
		size_t len;
		while ((r = phi_audit_frame_next(&c, PHI_AUDIT_NOTE_MAX, &p, &len)) == 0) {
			struct phi_audit_ckpt ck;
			if (phi_audit_ckpt_parse(p, len, &ck) < 0 || ck.idx != next) {
				snprintf(why, why_size,
					 "blob %s offset %zu: checkpoint %" PRIu64 " expected (duplicated, missing or damaged note)",
					 name, (size_t)(p - b.p) - 4, next);
				return -EBADMSG;
			}
			snprintf(file, sizeof(file), "ckpt-%012" PRIu64 ".note", ck.idx);
			r = phi_audit_write_file(dfd, file, p, len, 0644, true);
			if (r < 0)
				return r;
			next++;
		}
		if (r != -ENODATA) {
			snprintf(why, why_size, "blob %s: malformed frame at offset %zu", name, c.off);
			return -EBADMSG;
		}
	}
	*ret_n = next - 1;
	return 0;
}
