/* phifs-key: store and key management for phifs.
 *
 *   phifs-key --store STORE [--key-file FILE] [--audit-socket PATH|none] COMMAND [ARGS]
 *
 * Without --key-file the master key comes from $CREDENTIALS_DIRECTORY/phifs-master-key.
 * add, rotate, rewrap, shred and rekey-master are recorded in the audit log (phifs-auditd,
 * --audit-socket or $PHIFS_AUDIT_SOCKET) before they change anything, and refused when the
 * record cannot be made durable (admin.h).
 * Errors are one line on stderr, never with key material or patient ids.
 * Exit codes: 0 ok, 1 error, 2 usage.
 */
#include <dirent.h>
#include <getopt.h>
#include <stdarg.h>
#include <inttypes.h>
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <sodium.h>

#include "phifs/admin.h"
#include "phifs/audit.h"
#include "phifs/cfile.h"
#include "phifs/crypto.h"
#include "phifs/keys.h"
#include "phifs/names.h"
#include "phifs/store.h"
#include "phifs/util.h"

#define CHUNK (1u << 20)
#define WALK_DEPTH_MAX 256

struct ctx {
	const char *store_url;
	const char *key_file;
	const char *new_key_file;
	const char *audit_socket;
	bool yes;
	struct phi_admin_audit audit;
	struct phi_key *master;
	struct phi_store *s;
	struct phi_keyring *kr;
	int lock_fd;
	int keys_fd; /* flock on STORE/keys: serialises read-modify-write of key files */
};

static void ctx_done(struct ctx *c)
{
	phi_admin_audit_done(&c->audit);
	phi_keyring_free(c->kr);
	phi_store_close(c->s);
	phi_key_free(c->master);
	if (c->lock_fd >= 0)
		(void)close(c->lock_fd);
	if (c->keys_fd >= 0)
		(void)close(c->keys_fd);
}

static int err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int err(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("phifs-key: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	return 1;
}

static int usage(FILE *f)
{
	if (f == stderr) {
		fputs("usage: phifs-key --store STORE [--key-file FILE] [--audit-socket PATH|none] COMMAND [ARGS] (see --help)\n", f);
		return 2;
	}
	fputs("usage: phifs-key --store STORE [--key-file FILE] [--audit-socket PATH|none] COMMAND [ARGS]\n"
	      "commands:\n"
	      "  init                      create a new master key file and a new store\n"
	      "  add PATIENT               add a patient (random keys, version 1)\n"
	      "  list                      id, tag, current version, live versions, state\n"
	      "  rotate PATIENT            new key version for new writes; old ones stay readable\n"
	      "  rewrap PATIENT            re-encrypt the patient's files under the newest version,\n"
	      "                            then retire the older versions (store must be unmounted)\n"
	      "  shred PATIENT --yes       destroy every key of the patient (crypto-erase)\n"
	      "  rekey-master --new-key-file FILE\n"
	      "                            wrap every key under a new master key (store unmounted)\n"
	      "  check [PATIENT]           confirm that every file decrypts\n"
	      "Without --key-file the key is read from $CREDENTIALS_DIRECTORY/" PHI_CRED_NAME ".\n"
	      "add, rotate, rewrap, shred and rekey-master write an audit record to phifs-auditd\n"
	      "(--audit-socket PATH, else $" PHI_AUDIT_SOCKET_ENV ") before changing anything and are\n"
	      "refused if it cannot be made durable; --audit-socket none runs them unaudited.\n",
	      f);
	return 2;
}

/* ---- audit (write-ahead: admin.h) ---- */

static void audit_event(struct phi_audit_event *ev, enum phi_audit_ev e, char action,
			const char *what)
{
	*ev = (struct phi_audit_event){ .event = e, .action = action };
	snprintf(ev->detail, sizeof(ev->detail), "phifs-key %s", what);
}

/* Record the change about to be made; refuse (nonzero exit) if the record is not durable. */
static int audit_begin(struct ctx *c, enum phi_audit_ev e, char action, const char *what,
		       const char *patient)
{
	char msg[512];
	if (phi_admin_audit_open(c->audit_socket, c->master, &c->audit, msg, sizeof(msg)) < 0)
		return err("%s; nothing changed", msg);
	struct phi_audit_event ev;
	audit_event(&ev, e, action, what);
	int r = phi_admin_audit_record(&c->audit, &ev, patient);
	if (r < 0)
		return err("the audit log did not record %s (%s); nothing changed", what, strerror(-r));
	return 0;
}

/* The change recorded by audit_begin failed with r (-errno): say so in the log too. */
static void audit_failed(struct ctx *c, enum phi_audit_ev e, char action, const char *what,
			 const char *patient, int r)
{
	struct phi_audit_event ev;
	audit_event(&ev, e, action, what);
	ev.outcome = 8;
	ev.err = r < 0 && r > -4096 ? -r : EIO;
	snprintf(ev.detail, sizeof(ev.detail), "phifs-key %s failed", what);
	if (phi_admin_audit_record(&c->audit, &ev, patient) < 0)
		fprintf(stderr, "phifs-key: warning: the audit log did not record that %s failed\n", what);
}

static int key_err(const char *file, int r)
{
	char msg[512];
	phi_admin_key_error(file, r, msg, sizeof(msg));
	return err("%s", msg);
}

static int patient_err(int r)
{
	switch (r) {
	case -EEXIST:
		return err("patient already exists");
	case -ENOENT:
		return err("no such patient");
	case -EINVAL:
		return err("invalid patient id (allowed: [A-Za-z0-9_.-]{1,64}, not starting with '.')");
	case -EKEYREVOKED:
		return err("patient was shredded");
	case -EBADMSG:
		return err("a key file on the store is corrupt");
	case -E2BIG:
		return err("too many live key versions; run rewrap first");
	default:
		return err("key operation failed: %s", strerror(-r));
	}
}

/* Load the master key, open the store, take the lock, open the keyring (admin.h). */
static int open_all(struct ctx *c, bool exclusive)
{
	char msg[512];
	struct phi_admin a;
	if (phi_admin_open(c->store_url, c->key_file, exclusive, &a, msg, sizeof(msg)) < 0)
		return err("%s", msg);
	c->master = a.master;
	c->s = a.s;
	c->kr = a.kr;
	c->lock_fd = a.lock_fd;
	return 0;
}

/* Key commands that rewrite key files (add, rotate, shred, rewrap, rekey-master) wait for
 * each other on an exclusive flock of the local store's keys/ directory; mounts only read
 * key files and do not take it. */
static int lock_keys(struct ctx *c)
{
	char msg[512];
	struct phi_admin a = { .s = c->s, .lock_fd = -1, .dir_fd = -1 };
	if (phi_admin_lock_dir(&a, c->store_url, "keys", msg, sizeof(msg)) < 0)
		return err("%s", msg);
	c->keys_fd = a.dir_fd;
	return 0;
}

static int open_rw(struct ctx *c, bool exclusive)
{
	int r = open_all(c, exclusive);
	return r ? r : lock_keys(c);
}

/* ---- commands ---- */

static int cmd_init(struct ctx *c)
{
	if (!c->key_file)
		return err("init needs --key-file FILE (the new master key file)"), 2;
	struct stat st;
	if (lstat(c->key_file, &st) == 0)
		return err("key file %s already exists; refusing to overwrite it", c->key_file);
	const char *root = phi_admin_local_root(c->store_url);
	if (root) {
		if (mkdir(root, 0700) < 0 && errno != EEXIST)
			return err("cannot create store directory %s: %m", root);
	}
	int r = phi_store_open(c->store_url, NULL, &c->s);
	if (r < 0)
		return err("cannot open store %s: %s", c->store_url, strerror(-r));
	r = phi_store_lock(c->store_url, true, &c->lock_fd);
	if (r < 0)
		return err("cannot lock store %s: %s", c->store_url, strerror(-r));
	struct phi_store_stat ss;
	if (c->s->ops->getattr(c->s, "phifs.hdr", &ss) == 0)
		return err("%s is already a phifs store", c->store_url);
	r = phi_master_create(c->key_file, &c->master);
	if (r == -EEXIST)
		return err("key file %s already exists; refusing to overwrite it", c->key_file);
	if (r < 0)
		return err("cannot create key file %s: %s", c->key_file, strerror(-r));
	r = phi_store_init(c->s, c->master);
	if (r < 0) {
		(void)unlink(c->key_file);
		return err("cannot initialise store %s: %s", c->store_url, strerror(-r));
	}
	printf("initialised store %s; master key in %s (keep it safe: without it the store is unreadable)\n",
	       c->store_url, c->key_file);
	return 0;
}

static int cmd_add(struct ctx *c, const char *patient)
{
	int r = open_rw(c, false);
	if (r)
		return r;
	if (phi_patient_valid(patient) < 0)
		return patient_err(-EINVAL);
	r = audit_begin(c, PHI_AE_KEY_ADD, 'C', "add", patient);
	if (r)
		return r;
	r = phi_patient_add(c->kr, patient);
	if (r < 0) {
		audit_failed(c, PHI_AE_KEY_ADD, 'C', "add", patient, r);
		return patient_err(r);
	}
	char tag[PHI_TAG_LEN + 1];
	(void)phi_patient_tag(c->kr, patient, tag);
	printf("added patient as %s\n", tag);
	return 0;
}

struct list_line {
	char *text;
	char key[PHI_PATIENT_MAX + PHI_TAG_LEN + 2];
};
struct list_ctx {
	struct phi_keyring *kr;
	struct list_line *l;
	size_t n, cap;
	size_t corrupt;
};

static int list_add(struct list_ctx *lc, const char *tag, const struct phi_pkeys *pk)
{
	if (lc->n == lc->cap) {
		size_t nc = lc->cap ? lc->cap * 2 : 64;
		void *np = realloc(lc->l, nc * sizeof(*lc->l));
		if (!np)
			return -ENOMEM;
		lc->l = np;
		lc->cap = nc;
	}
	struct list_line *ln = &lc->l[lc->n];
	if (!pk) {
		/* a key file that does not parse or authenticate: listed, not fatal */
		if (asprintf(&ln->text, "-\t%s\t-\t-\tcorrupt", tag) < 0)
			return -ENOMEM;
		snprintf(ln->key, sizeof(ln->key), "\x7f\x7f%s", tag);
		lc->n++;
		lc->corrupt++;
		return 0;
	}
	struct phi_buf b;
	phi_buf_init(&b, 1u << 16);
	char tmp[64];
	int r = 0;
	const char *id = pk->shredded ? "-" : pk->id;
	r = phi_buf_append(&b, id, strlen(id));
	r = r ?: phi_buf_append(&b, "\t", 1);
	r = r ?: phi_buf_append(&b, pk->tag, strlen(pk->tag));
	if (pk->shredded) {
		r = r ?: phi_buf_append(&b, "\t-\t-\tshredded", 13);
	} else {
		snprintf(tmp, sizeof(tmp), "\t%" PRIu32 "\t", pk->current);
		r = r ?: phi_buf_append(&b, tmp, strlen(tmp));
		for (uint32_t i = 0; i < pk->n; i++) {
			snprintf(tmp, sizeof(tmp), "%s%" PRIu32, i ? "," : "", pk->version[i]);
			r = r ?: phi_buf_append(&b, tmp, strlen(tmp));
		}
		r = r ?: phi_buf_append(&b, "\tactive", 7);
	}
	r = r ?: phi_buf_append(&b, "", 1);
	if (r < 0) {
		phi_buf_done(&b);
		return r;
	}
	/* shredded patients (id unknown) sort last, by tag */
	snprintf(ln->key, sizeof(ln->key), "%c%s\t%s", pk->shredded ? '\x7f' : ' ', id, pk->tag);
	ln->text = (char *)b.p;
	lc->n++;
	return 0;
}

static int list_fn(void *ctx, const char *tag)
{
	struct list_ctx *lc = ctx;
	struct phi_pkeys *pk;
	int r = phi_patient_load_tag(lc->kr, tag, &pk);
	if (r == -ENOENT)
		return 0;
	if (r == -EBADMSG)
		return list_add(lc, tag, NULL);
	if (r < 0)
		return r;
	r = list_add(lc, tag, pk);
	phi_pkeys_free(pk);
	return r;
}

static int line_cmp(const void *a, const void *b)
{
	return strcmp(((const struct list_line *)a)->key, ((const struct list_line *)b)->key);
}

static int cmd_list(struct ctx *c)
{
	int r = open_all(c, false);
	if (r)
		return r;
	struct list_ctx lc = { .kr = c->kr };
	r = phi_patient_foreach_tag(c->kr, list_fn, &lc);
	if (r >= 0) {
		if (lc.n)
			qsort(lc.l, lc.n, sizeof(*lc.l), line_cmp);
		for (size_t i = 0; i < lc.n; i++)
			puts(lc.l[i].text);
	}
	for (size_t i = 0; i < lc.n; i++)
		free(lc.l[i].text);
	free(lc.l);
	if (r < 0)
		return patient_err(r);
	if (lc.corrupt)
		return err("%zu key file%s on the store %s corrupt", lc.corrupt,
			   lc.corrupt == 1 ? "" : "s", lc.corrupt == 1 ? "is" : "are");
	return 0;
}

static int cmd_rotate(struct ctx *c, const char *patient)
{
	int r = open_rw(c, false);
	if (r)
		return r;
	if (phi_patient_valid(patient) < 0)
		return patient_err(-EINVAL);
	r = audit_begin(c, PHI_AE_KEY_ROTATE, 'U', "rotate", patient);
	if (r)
		return r;
	uint32_t v;
	r = phi_patient_rotate(c->kr, patient, &v);
	if (r < 0) {
		audit_failed(c, PHI_AE_KEY_ROTATE, 'U', "rotate", patient, r);
		return patient_err(r);
	}
	printf("%" PRIu32 "\n", v);
	return 0;
}

static int cmd_shred(struct ctx *c, const char *patient)
{
	if (!c->yes) {
		err("shred destroys every key of the patient and makes the data unrecoverable; "
		    "repeat with --yes to confirm");
		return 2;
	}
	int r = open_rw(c, false);
	if (r)
		return r;
	if (phi_patient_valid(patient) < 0)
		return patient_err(-EINVAL);
	r = audit_begin(c, PHI_AE_KEY_SHRED, 'D', "shred", patient);
	if (r)
		return r;
	r = phi_patient_shred(c->kr, patient);
	if (r < 0) {
		audit_failed(c, PHI_AE_KEY_SHRED, 'D', "shred", patient, r);
		return patient_err(r);
	}
	puts("patient shredded: every key version destroyed. The old key file must also be gone "
	     "from every backup and snapshot of the store for the data to be unrecoverable.");
	return 0;
}

static int cmd_rekey(struct ctx *c)
{
	if (!c->new_key_file)
		return err("rekey-master needs --new-key-file FILE"), 2;
	int r = open_rw(c, true);
	if (r)
		return r;
	_cleanup_key_ struct phi_key *nk = NULL;
	bool resumed = false;
	r = phi_master_create(c->new_key_file, &nk);
	if (r == -EEXIST) {
		/* an interrupted rekey-master: finish it with the same new key */
		r = phi_master_load(c->new_key_file, &nk);
		if (r < 0)
			return key_err(c->new_key_file, r);
		resumed = true;
	} else if (r < 0)
		return err("cannot create key file %s: %s", c->new_key_file, strerror(-r));
	if (sodium_memcmp(nk->k, c->master->k, PHI_KEY_LEN) == 0)
		return err("the new key file holds the current master key; give a new file name");
	r = audit_begin(c, PHI_AE_KEY_REKEY, 'U', "rekey-master", NULL);
	if (r)
		return r;
	r = phi_keyring_rekey(c->kr, nk);
	if (r < 0)
		audit_failed(c, PHI_AE_KEY_REKEY, 'U', "rekey-master", NULL, r);
	if (r < 0)
		return err("rekey-master failed (the old master key still opens the store; rerun "
			   "with the same --new-key-file to finish): %s", strerror(-r));
	printf("%smaster key replaced: switch phifs and its credential to %s now; the old key "
	       "no longer opens this store\n", resumed ? "(resumed with the existing new key file) " : "",
	       c->new_key_file);
	return 0;
}

/* ---- walking a patient tree (store paths only: ciphertext names) ---- */

/* A complete new ciphertext of a hard-linked file X, waiting to be copied over X in place
 * (rewrap). Left behind only by a crash; the next rewrap finishes the copy. */
#define PENDING_PREFIX ".rewrap."
#define REWRAP_TMP ".rewrap.tmp"

struct ent {
	char name[PHI_STORE_NAME_MAX + 1];
	uint32_t type;
	bool pending;
};
struct entlist {
	struct ent *e;
	size_t n, cap;
};

static int entlist_fn(void *ctx, const char *name, uint32_t type)
{
	struct entlist *el = ctx;
	bool pending = !strncmp(name, PENDING_PREFIX, strlen(PENDING_PREFIX)) &&
		       strcmp(name, REWRAP_TMP) != 0 && name[strlen(PENDING_PREFIX)];
	if (name[0] == '.' && !pending)
		return 0;
	size_t len = strlen(name);
	if (len > PHI_STORE_NAME_MAX)
		return 0;
	if (len >= 2 && !strcmp(name + len - 2, ".n"))
		return 0;
	if (el->n == el->cap) {
		size_t nc = el->cap ? el->cap * 2 : 32;
		if (nc > (1u << 24))
			return -E2BIG;
		void *np = realloc(el->e, nc * sizeof(*el->e));
		if (!np)
			return -ENOMEM;
		el->e = np;
		el->cap = nc;
	}
	memcpy(el->e[el->n].name, name, len + 1);
	el->e[el->n].type = type;
	el->e[el->n].pending = pending;
	el->n++;
	return 0;
}

typedef int (*file_fn)(void *ctx, const char *dir, const char *path, const struct phi_store_stat *st);
struct walker {
	file_fn file;    /* every content file */
	file_fn pending; /* PENDING_PREFIX entries, before the files of their directory; or NULL */
};

static int walk(struct phi_store *s, const char *dir, unsigned depth, const struct walker *w,
		void *ctx)
{
	if (depth > WALK_DEPTH_MAX)
		return -ELOOP;
	struct entlist el = { 0 };
	int r = s->ops->readdir(s, dir, entlist_fn, &el);
	for (int pass = 0; pass < 2; pass++)
		for (size_t i = 0; r >= 0 && i < el.n; i++) {
			if (el.e[i].pending != (pass == 0))
				continue;
			_cleanup_free_ char *path = NULL;
			if (asprintf(&path, "%s/%s", dir, el.e[i].name) < 0) {
				r = -ENOMEM;
				break;
			}
			struct phi_store_stat st;
			r = s->ops->getattr(s, path, &st);
			if (r == -ENOENT) {
				r = 0;
				continue;
			}
			if (r < 0)
				break;
			if (el.e[i].pending) {
				if (w->pending && S_ISREG(st.mode))
					r = w->pending(ctx, dir, path, &st);
			} else if (S_ISDIR(st.mode))
				r = walk(s, path, depth + 1, w, ctx);
			else if (S_ISREG(st.mode))
				r = w->file(ctx, dir, path, &st);
		}
	free(el.e);
	return r;
}

static int keyfn(void *ctx, uint32_t version, const struct phi_key **ret)
{
	return phi_pkeys_content(ctx, version, ret);
}

/* an opened store object together with its store, released on scope exit */
struct sobj {
	struct phi_store *s;
	struct phi_store_obj *o;
};
static void sobj_done(struct sobj *so)
{
	if (so->o)
		(void)so->s->ops->release(so->o);
	so->o = NULL;
}
#define _cleanup_sobj_ _cleanup_(sobj_done)

static void cfile_freep(struct phi_cfile **cf)
{
	phi_cfile_free(*cf);
	*cf = NULL;
}
#define _cleanup_cfile_ _cleanup_(cfile_freep)

static void sodium_freep(void *p)
{
	sodium_free(*(void **)p);
	*(void **)p = NULL;
}
#define _cleanup_sodium_ _cleanup_(sodium_freep)

static void pkeys_freep(struct phi_pkeys **p)
{
	phi_pkeys_free(*p);
	*p = NULL;
}
#define _cleanup_pkeys_free_ _cleanup_(pkeys_freep)

struct rewrap_ctx {
	struct phi_store *s;
	const struct phi_pkeys *pk;
	uint8_t *buf; /* CHUNK bytes, sodium_malloc'd */
	size_t done, skipped;
};

/* Copy the plaintext of src into dst (both open cfiles). */
static int copy_plain(struct phi_cfile *src, struct phi_cfile *dst, uint8_t *buf)
{
	uint64_t size = phi_cfile_size(src), off = 0;
	int r = 0;
	while (off < size) {
		size_t n;
		r = phi_cfile_read(src, buf, CHUNK, off, &n);
		if (r < 0)
			break;
		if (n == 0) {
			r = -EIO;
			break;
		}
		r = phi_cfile_write(dst, buf, n, off);
		if (r < 0)
			break;
		off += n;
	}
	sodium_memzero(buf, CHUNK);
	return r;
}

/* Copy the raw bytes of object src over dst (same store) and cut dst to the same size. */
static int copy_raw(struct phi_store *s, struct phi_store_obj *src, struct phi_store_obj *dst,
		    uint8_t *buf)
{
	uint64_t size, off = 0;
	int r = s->ops->size(src, &size);
	while (r >= 0 && off < size) {
		size_t n;
		r = s->ops->pread(src, buf, CHUNK, off, &n);
		if (r < 0)
			break;
		if (n == 0) {
			r = -EIO;
			break;
		}
		r = s->ops->pwrite(dst, buf, n, off);
		off += n;
	}
	if (r >= 0)
		r = s->ops->truncate(dst, size);
	if (r >= 0)
		r = s->ops->fsync(dst, false);
	return r;
}

/* Copy a complete pending ciphertext dir/.rewrap.X over dir/X in place, then drop it. */
static int rewrap_pending(void *ctx, const char *dir, const char *path, const struct phi_store_stat *st)
{
	struct rewrap_ctx *rc = ctx;
	struct phi_store *s = rc->s;
	(void)st;
	_cleanup_free_ char *target = NULL;
	const char *base = strrchr(path, '/') + 1 + strlen(PENDING_PREFIX);
	if (asprintf(&target, "%s/%s", dir, base) < 0)
		return -ENOMEM;
	struct phi_store_stat tst;
	int r = s->ops->getattr(s, target, &tst);
	if (r == 0) {
		_cleanup_sobj_ struct sobj src = { .s = s }, dst = { .s = s };
		r = s->ops->open(s, path, O_RDONLY, 0, &src.o);
		if (r >= 0)
			r = s->ops->open(s, target, O_RDWR, 0, &dst.o);
		if (r >= 0)
			r = copy_raw(s, src.o, dst.o, rc->buf);
		if (r >= 0)
			r = s->ops->release(TAKE_PTR(dst.o));
		if (r >= 0)
			r = s->ops->utimens(s, target, (const struct timespec[2]){ tst.atime, tst.mtime });
		if (r < 0)
			return r;
		rc->done++;
	} else if (r != -ENOENT)
		return r;
	r = s->ops->unlink(s, path);
	if (r >= 0)
		r = s->ops->fsync_dir(s, dir);
	return r;
}

static int rewrap_file(void *ctx, const char *dir, const char *path, const struct phi_store_stat *st)
{
	struct rewrap_ctx *rc = ctx;
	struct phi_store *s = rc->s;
	_cleanup_sobj_ struct sobj src = { .s = s }, tmpo = { .s = s };
	int r = s->ops->open(s, path, O_RDONLY, 0, &src.o);
	if (r < 0)
		return r;
	_cleanup_cfile_ struct phi_cfile *old = NULL, *nw = NULL;
	r = phi_cfile_open(s, src.o, keyfn, (void *)rc->pk, &old);
	if (r < 0)
		return r;
	if (phi_cfile_key_version(old) == rc->pk->current) {
		rc->skipped++;
		return 0;
	}
	const struct phi_key *ck;
	r = phi_pkeys_content(rc->pk, rc->pk->current, &ck);
	if (r < 0)
		return r;
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s/" REWRAP_TMP, dir) < 0)
		return -ENOMEM;
	r = s->ops->open(s, tmp, O_RDWR | O_CREAT | O_TRUNC, st->mode & 07777, &tmpo.o);
	if (r < 0)
		return r;
	r = phi_cfile_create(s, tmpo.o, ck, rc->pk->current, &nw);
	if (r >= 0)
		r = copy_plain(old, nw, rc->buf);
	if (r >= 0)
		r = s->ops->fsync(tmpo.o, false);
	if (r >= 0 && st->nlink > 1) {
		/* hard-linked: a rename would split the links, so the new ciphertext is copied
		 * over the original in place. That copy is not crash-atomic; the complete new
		 * ciphertext is kept as .rewrap.<name> until it is done, and a rerun finishes it
		 * (docs/format.md). */
		_cleanup_free_ char *pend = NULL;
		if (asprintf(&pend, "%s/" PENDING_PREFIX "%s", dir, strrchr(path, '/') + 1) < 0)
			return -ENOMEM;
		r = s->ops->release(TAKE_PTR(tmpo.o));
		if (r >= 0)
			r = s->ops->rename(s, tmp, pend, 0);
		if (r >= 0)
			r = s->ops->fsync_dir(s, dir);
		if (r < 0) {
			(void)s->ops->unlink(s, tmp);
			return r;
		}
		phi_cfile_free(TAKE_PTR(old));
		sodium_memzero(rc->buf, CHUNK);
		return rewrap_pending(rc, dir, pend, st);
	} else if (r >= 0) {
		(void)s->ops->chown(s, tmp, st->uid, st->gid);
		r = s->ops->release(TAKE_PTR(tmpo.o));
		if (r >= 0)
			r = s->ops->utimens(s, tmp, (const struct timespec[2]){ st->atime, st->mtime });
		if (r >= 0)
			r = s->ops->rename(s, tmp, path, 0);
		if (r < 0)
			(void)s->ops->unlink(s, tmp);
	} else
		(void)s->ops->unlink(s, tmp);
	if (r >= 0)
		r = s->ops->fsync_dir(s, dir);
	if (r >= 0)
		rc->done++;
	return r;
}

static int cmd_rewrap(struct ctx *c, const char *patient)
{
	int r = open_rw(c, true);
	if (r)
		return r;
	_cleanup_pkeys_free_ struct phi_pkeys *pk = NULL;
	if (phi_patient_valid(patient) < 0)
		return patient_err(-EINVAL);
	r = audit_begin(c, PHI_AE_KEY_REWRAP, 'U', "rewrap", patient);
	if (r)
		return r;
	r = phi_patient_load(c->kr, patient, &pk);
	if (r >= 0 && pk->shredded)
		r = -EKEYREVOKED;
	if (r < 0) {
		audit_failed(c, PHI_AE_KEY_REWRAP, 'U', "rewrap", patient, r);
		return patient_err(r);
	}
	_cleanup_sodium_ uint8_t *buf = sodium_malloc(CHUNK);
	if (!buf) {
		audit_failed(c, PHI_AE_KEY_REWRAP, 'U', "rewrap", patient, -ENOMEM);
		return err("out of memory");
	}
	struct rewrap_ctx rc = { .s = c->s, .pk = pk, .buf = buf };
	char root[8 + PHI_TAG_LEN];
	snprintf(root, sizeof(root), "data/%s", pk->tag);
	r = walk(c->s, root, 0, &(const struct walker){ rewrap_file, rewrap_pending }, &rc);
	if (r < 0) {
		audit_failed(c, PHI_AE_KEY_REWRAP, 'U', "rewrap", patient, r);
		return err("rewrap failed after %zu files (older key versions kept; rerun to finish): %s",
			   rc.done, strerror(-r));
	}
	r = phi_patient_retire_old(c->kr, patient);
	if (r < 0) {
		audit_failed(c, PHI_AE_KEY_REWRAP, 'U', "rewrap", patient, r);
		return patient_err(r);
	}
	printf("rewrapped %zu files to version %" PRIu32 " (%zu already current); older versions retired\n",
	       rc.done, pk->current, rc.skipped);
	return 0;
}

/* ---- check ---- */

struct check_ctx {
	struct phi_keyring *kr;
	struct phi_store *s;
	const struct phi_pkeys *pk;
	uint8_t *buf;
	size_t ok, damaged, shredded;
};

static void hex16(const uint8_t *id, char out[33])
{
	for (size_t i = 0; i < 16; i++)
		snprintf(out + 2 * i, 3, "%02x", id[i]);
}

static int check_file(void *ctx, const char *dir, const char *path, const struct phi_store_stat *st)
{
	struct check_ctx *cc = ctx;
	struct phi_store *s = cc->s;
	(void)dir;
	(void)st;
	if (cc->pk->shredded) {
		printf("%s\tshredded\n", path);
		cc->shredded++;
		return 0;
	}
	_cleanup_sobj_ struct sobj so = { .s = s };
	int r = s->ops->open(s, path, O_RDONLY, 0, &so.o);
	if (r < 0)
		return r;
	uint8_t hdr[PHI_CF_HDR], fid[PHI_CF_FILE_ID];
	size_t n;
	unsigned shift;
	uint32_t kv;
	char hex[33] = "-";
	r = s->ops->pread(so.o, hdr, sizeof(hdr), 0, &n);
	if (r < 0)
		return r;
	if (phi_cfile_parse_header(hdr, n, &shift, &kv, fid) < 0) {
		printf("%s\tdamaged\tfile -\theader\n", path);
		cc->damaged++;
		return 0;
	}
	hex16(fid, hex);
	_cleanup_cfile_ struct phi_cfile *cf = NULL;
	r = phi_cfile_open(s, so.o, keyfn, (void *)cc->pk, &cf);
	if (r == -ENOKEY) {
		printf("%s\tdamaged\tfile %s\tkey version %" PRIu32 " unknown or retired\n", path, hex, kv);
		cc->damaged++;
		return 0;
	}
	if (r < 0) {
		printf("%s\tdamaged\tfile %s\theader\n", path, hex);
		cc->damaged++;
		return 0;
	}
	uint64_t block;
	r = phi_cfile_verify(cf, &block);
	if (r == -EIO) {
		printf("%s\tdamaged\tfile %s\tblock %" PRIu64 "\n", path, hex, block);
		cc->damaged++;
		return 0;
	}
	if (r < 0)
		return r;
	cc->ok++;
	return 0;
}

static int check_one(struct check_ctx *cc, const struct phi_pkeys *pk)
{
	char root[8 + PHI_TAG_LEN];
	snprintf(root, sizeof(root), "data/%s", pk->tag);
	cc->pk = pk;
	size_t before = cc->shredded;
	int r = walk(cc->s, root, 0, &(const struct walker){ check_file, NULL }, cc);
	if (r == -ENOENT)
		r = 0;
	if (pk->shredded && cc->shredded == before)
		printf("%s\tshredded\n", root);
	cc->pk = NULL;
	return r;
}

static int check_tag(void *ctx, const char *tag)
{
	struct check_ctx *cc = ctx;
	struct phi_pkeys *pk;
	int r = phi_patient_load_tag(cc->kr, tag, &pk);
	if (r == -ENOENT)
		return 0;
	if (r == -EBADMSG) {
		printf("keys/%s\tdamaged\tkey file\n", tag);
		cc->damaged++;
		return 0;
	}
	if (r < 0)
		return r;
	r = check_one(cc, pk);
	phi_pkeys_free(pk);
	return r;
}

static int cmd_check(struct ctx *c, const char *patient)
{
	int r = open_all(c, false);
	if (r)
		return r;
	_cleanup_sodium_ uint8_t *buf = sodium_malloc(CHUNK);
	if (!buf)
		return err("out of memory");
	struct check_ctx cc = { .kr = c->kr, .s = c->s, .buf = buf };
	if (patient) {
		_cleanup_pkeys_free_ struct phi_pkeys *pk = NULL;
		r = phi_patient_load(c->kr, patient, &pk);
		if (r < 0)
			return patient_err(r);
		r = check_one(&cc, pk);
	} else
		r = phi_patient_foreach_tag(c->kr, check_tag, &cc);
	if (r < 0)
		return err("check failed: %s", strerror(-r));
	printf("%zu files ok, %zu damaged", cc.ok, cc.damaged);
	if (cc.shredded)
		printf(", %zu shredded", cc.shredded);
	putchar('\n');
	return cc.damaged ? 1 : 0;
}

/* ---- main ---- */

int main(int argc, char *argv[])
{
	(void)prctl(PR_SET_DUMPABLE, 0);
	(void)setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 });

	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "key-file", required_argument, NULL, 'k' },
		{ "new-key-file", required_argument, NULL, 'n' },
		{ "yes", no_argument, NULL, 'y' },
		{ "audit-socket", required_argument, NULL, 'a' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	_cleanup_(ctx_done) struct ctx c = { .lock_fd = -1, .keys_fd = -1 };
	int o;
	while ((o = getopt_long(argc, argv, "s:k:n:yh", opts, NULL)) != -1) {
		switch (o) {
		case 's':
			c.store_url = optarg;
			break;
		case 'k':
			c.key_file = optarg;
			break;
		case 'n':
			c.new_key_file = optarg;
			break;
		case 'y':
			c.yes = true;
			break;
		case 'a':
			c.audit_socket = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			return usage(stderr);
		}
	}
	if (!c.store_url || optind >= argc)
		return usage(stderr);
	const char *cmd = argv[optind];
	int nargs = argc - optind - 1;
	const char *arg = nargs > 0 ? argv[optind + 1] : NULL;
	struct {
		const char *name;
		int min, max;
	} const cmds[] = {
		{ "init", 0, 0 },   { "add", 1, 1 },    { "list", 0, 0 },  { "rotate", 1, 1 },
		{ "shred", 1, 1 },  { "rewrap", 1, 1 }, { "check", 0, 1 }, { "rekey-master", 0, 0 },
	};
	bool found = false;
	for (size_t i = 0; i < ARRAY_SIZE(cmds); i++)
		if (!strcmp(cmd, cmds[i].name)) {
			found = true;
			if (nargs < cmds[i].min || nargs > cmds[i].max)
				return usage(stderr);
		}
	if (!found) {
		err("unknown command (see --help)");
		return 2;
	}
	if (phi_crypto_init() < 0)
		return err("cannot initialise the crypto library");

	if (!strcmp(cmd, "init"))
		return cmd_init(&c);
	if (!strcmp(cmd, "add"))
		return cmd_add(&c, arg);
	if (!strcmp(cmd, "list"))
		return cmd_list(&c);
	if (!strcmp(cmd, "rotate"))
		return cmd_rotate(&c, arg);
	if (!strcmp(cmd, "shred"))
		return cmd_shred(&c, arg);
	if (!strcmp(cmd, "rewrap"))
		return cmd_rewrap(&c, arg);
	if (!strcmp(cmd, "check"))
		return cmd_check(&c, arg);
	return cmd_rekey(&c);
}
