/* fs.c: phifs's low-level FUSE operations.
 *
 * Nodes. A FUSE node id is the address of a struct node. Nodes are shared by backing
 * inode number (so hard links are one node) and remember the store names they are known
 * by (aliases: parent node + encrypted entry name), from which a store path is rebuilt on
 * demand. Renames update aliases, so open files and cached dentries stay valid.
 *
 * Locking. fs->lock guards the node table, aliases, refcounts and the patient cache; it is
 * never held across store I/O except for path building. node->io serialises the content
 * of one file (the cfile and its store object), shared by every handle of that inode.
 */
#include "fs.h"

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include <sodium.h>

#include "audit-client.h"
#include "audit.h"
#include "cfile.h"
#include "names.h"
#include "policy.h"
#include "thread.h"
#include "workq.h"
#include "util.h"

#define NBUCKETS (1u << 16)
/* Kernel entry and attribute caching (seconds). Under access control a dentry cached for one
 * caller would answer another caller's walk without asking the policy, so the entries of
 * patient directories (and negative entries at the root) are never cached: every walk from
 * the root is gated at its patient, for each caller. Below a patient, lookup and getattr
 * decisions depend only on the caller and the patient (policy.c, role_allows), so a walk
 * that passed its patient's gate may use the cache there. Attributes are cached everywhere,
 * the patient's too: its mode is a constant 0777 under access control (patient_mode), so
 * the kernel's permission check (default_permissions) decides the same for every caller;
 * without it every walk through a patient cost a GETATTR right after the gated LOOKUP (5
 * requests per open, now 4). What this leaves (docs/access-policy.md): a walk that starts at
 * or below a patient (a cwd or a directory fd kept after a revocation) is answered from the
 * cache, for CACHE_S if nobody else walks there, for as long as granted callers keep the
 * same entries cached otherwise; metadata only, as open, opendir and readlink are gated. */
#define CACHE_S 1.0
#define ENTRY_TIMEOUT_FOR(fs, n) ((fs)->opts.grants && (n)->kind == K_PATIENT ? 0.0 : CACHE_S)
#define KEY_RECHECK_S 1 /* key file changes (rotate, shred) are seen within a second */

enum kind { K_ROOT, K_PATIENT, K_DIR, K_REG, K_LNK };

struct patient {
	struct patient *next;
	char tag[PHI_TAG_LEN + 1];
	struct phi_pkeys *pk;   /* current keys */
	struct phi_pkeys **old; /* replaced key sets, kept until unmount (still referenced) */
	size_t nold;
	struct timespec kmtime;
	time_t checked;
	struct node *node;
	/* Made once and kept, under fs->lock: each is an AES-SIV encryption, and an audited
	 * open needed all three (the policy's scope, the record's patient and path). */
	const struct phi_pkeys *results_pk; /* the keys results is encrypted under; NULL: none */
	char results[PHI_STORE_NAME_MAX + 1]; /* the store name of "results" (scope_of) */
	char pseudonym[PHI_AUDIT_PSEUDO_PATIENT_MAX]; /* of the patient id; "" until made */
};

struct alias {
	struct node *parent;
	char name[PHI_STORE_NAME_MAX + 1];
};

struct node {
	struct node *hnext;
	bool hashed;
	uint64_t bino;
	uint64_t refs, nlookup;
	enum kind kind;
	struct patient *pat;
	struct alias *al;
	size_t nal;
	bool dirid_ok;
	uint8_t dirid[PHI_DIRID_LEN];
	pthread_mutex_t io;
	struct phi_store_obj *obj;
	struct phi_cfile *cf;
	unsigned opens;
	unsigned writers; /* open write-only handles; guarded by io */
	struct phi_store_stat last;
	/* the store object as it was when the kernel's cached pages were last known to match
	 * it (pages_valid); guarded by io */
	bool pages_ok;
	struct phi_store_stat pages;
	/* attached after its last close ("lingering store objects"); guarded by io */
	bool lingering;
	/* "store path\0pseudonym" of this node's last audit record (struct patient says
	 * why); NULL until one; guarded by fs->lock */
	char *pseudo_path;
	/* on the linger list, which holds one ref; guarded by fs->lg_mu */
	bool on_lg;
	struct node *lg_prev, *lg_next;
	int64_t lg_since;
};

struct handle {
	struct node *n;
	int flags;
};

#define EXPIRED_SEEN_MAX 256

struct phifs {
	struct phi_store *s;
	struct phi_keyring *kr;
	struct phifs_opts opts;
	pthread_mutex_t lock;
	struct node root;
	struct node *table[NBUCKETS];
	struct patient *patients;
	struct timespec mounted;
	time_t grants_checked; /* monotonic second of the last grants refresh (atomic) */
	/* grants this mount has recorded as expired (grant-expire, once per grant and mount);
	 * a ring: past EXPIRED_SEEN_MAX grants an old one may be recorded again (under lock) */
	char expired_seen[EXPIRED_SEEN_MAX][PHI_GRANT_ID_LEN + 1];
	size_t expired_next;
	/* caller identities (policy.h): an open gates three or four requests of one thread */
	struct phi_identity_cache *ids;
	/* with audit: runs the held requests whose records are durable ("held requests") */
	struct phi_workq *held_q;
	/* for notifications to the kernel; NULL until phifs_set_session */
	struct fuse_session *se;
	/* files kept attached after their last close, oldest first ("lingering store objects") */
	pthread_mutex_t lg_mu;
	pthread_cond_t lg_cv;
	struct node *lg_head, *lg_tail;
	size_t lg_n;
	bool lg_started, lg_stop;
	pthread_t lg_thread;
};

/* ---- small helpers ---- */

static struct phifs *FS(fuse_req_t req)
{
	return fuse_req_userdata(req);
}

static struct node *N(struct phifs *fs, fuse_ino_t ino)
{
	return ino == FUSE_ROOT_ID ? &fs->root : (struct node *)(uintptr_t)ino;
}

static fuse_ino_t INO(const struct phifs *fs, const struct node *n)
{
	return n == &fs->root ? FUSE_ROOT_ID : (fuse_ino_t)(uintptr_t)n;
}

/* reply a 0 / -errno status */
static void reply_err(fuse_req_t req, int r)
{
	fuse_reply_err(req, r < 0 ? -r : 0);
}

static time_t mono_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

static int64_t mono_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static size_t bucket(uint64_t bino)
{
	return (size_t)((bino * UINT64_C(0x9E3779B97F4A7C15)) >> 48) & (NBUCKETS - 1);
}

static void unhash(struct phifs *fs, struct node *n)
{
	if (!n->hashed)
		return;
	struct node **pp = &fs->table[bucket(n->bino)];
	while (*pp && *pp != n)
		pp = &(*pp)->hnext;
	if (*pp)
		*pp = n->hnext;
	n->hashed = false;
}

/* drop refs; frees the node (and its parent refs) at zero. Caller holds fs->lock. */
static void node_unref(struct phifs *fs, struct node *n, uint64_t count)
{
	while (n && n != &fs->root && n->kind != K_PATIENT) {
		n->refs -= count;
		if (n->refs > 0)
			return;
		unhash(fs, n);
		struct node *parent = NULL;
		for (size_t i = 0; i < n->nal; i++) {
			/* each alias holds one ref on its parent; release all but the first iteratively */
			if (i == 0)
				parent = n->al[i].parent;
			else
				node_unref(fs, n->al[i].parent, 1);
		}
		free(n->al);
		free(n->pseudo_path);
		pthread_mutex_destroy(&n->io);
		free(n);
		n = parent;
		count = 1;
	}
}

static void alias_add(struct node *n, struct node *parent, const char *name)
{
	for (size_t i = 0; i < n->nal; i++)
		if (n->al[i].parent == parent && !strcmp(n->al[i].name, name))
			return;
	struct alias *a = realloc(n->al, (n->nal + 1) * sizeof(*a));
	if (!a)
		return; /* the node just stays reachable by its older names */
	n->al = a;
	a[n->nal].parent = parent;
	snprintf(a[n->nal].name, sizeof(a[n->nal].name), "%s", name);
	n->nal++;
	parent->refs++;
}

/* remove an alias; caller holds lock. Returns true if it was present. gone: the name was
 * removed from the store (not moved), so a node left without names leaves the table. */
static bool alias_del(struct phifs *fs, struct node *n, struct node *parent, const char *name,
		      bool gone)
{
	for (size_t i = 0; i < n->nal; i++) {
		if (n->al[i].parent == parent && !strcmp(n->al[i].name, name)) {
			n->al[i] = n->al[n->nal - 1];
			n->nal--;
			if (gone && n->nal == 0)
				unhash(fs, n); /* its inode number may be reused by the store */
			node_unref(fs, parent, 1);
			return true;
		}
	}
	return false;
}

static struct node *node_find(struct phifs *fs, uint64_t bino)
{
	for (struct node *n = fs->table[bucket(bino)]; n; n = n->hnext)
		if (n->bino == bino)
			return n;
	return NULL;
}

static enum kind kind_of(uint32_t mode)
{
	return S_ISDIR(mode) ? K_DIR : S_ISLNK(mode) ? K_LNK : K_REG;
}

/* find or create the node of a store entry and count one kernel lookup. Caller holds lock. */
static struct node *node_get(struct phifs *fs, const struct phi_store_stat *ss,
			     struct patient *pat, struct node *parent, const char *name)
{
	struct node *n = node_find(fs, ss->ino);
	if (n && n->kind != kind_of(ss->mode)) {
		unhash(fs, n); /* stale: the inode number was reused */
		n = NULL;
	}
	if (!n) {
		n = calloc(1, sizeof(*n));
		if (!n)
			return NULL;
		n->bino = ss->ino;
		n->kind = kind_of(ss->mode);
		n->pat = pat;
		pthread_mutex_init(&n->io, NULL);
		n->hnext = fs->table[bucket(ss->ino)];
		fs->table[bucket(ss->ino)] = n;
		n->hashed = true;
	}
	n->nlookup++;
	n->refs++;
	n->last = *ss;
	if (parent)
		alias_add(n, parent, name);
	return n;
}

/* Store path of a node. Caller holds fs->lock. */
static int node_path_locked(struct phifs *fs, struct node *n, char *buf, size_t size)
{
	struct alias *chain[512];
	size_t depth = 0;
	while (n->kind != K_PATIENT) {
		if (n == &fs->root) {
			buf[0] = 0;
			return size ? 0 : -ENAMETOOLONG;
		}
		if (n->nal == 0)
			return -ENOENT; /* unlinked */
		if (depth == ARRAY_SIZE(chain))
			return -ENAMETOOLONG;
		chain[depth++] = &n->al[0];
		n = n->al[0].parent;
	}
	size_t o = (size_t)snprintf(buf, size, "data/%s", n->pat->tag);
	while (depth > 0 && o < size) {
		struct alias *a = chain[--depth];
		o += (size_t)snprintf(buf + o, size - o, "/%s", a->name);
	}
	return o < size ? 0 : -ENAMETOOLONG;
}

static int node_path(struct phifs *fs, struct node *n, char *buf, size_t size)
{
	pthread_mutex_lock(&fs->lock);
	int r = node_path_locked(fs, n, buf, size);
	pthread_mutex_unlock(&fs->lock);
	return r;
}

static int join(char *out, size_t size, const char *dir, const char *name)
{
	return (size_t)snprintf(out, size, "%s/%s", dir, name) < size ? 0 : -ENAMETOOLONG;
}

/* ---- patients and keys ---- */

static int patient_reload(struct phifs *fs, struct patient *p)
{
	struct phi_pkeys *pk;
	int r = phi_patient_load_tag(fs->kr, p->tag, &pk);
	if (r < 0)
		return r;
	if (p->pk) {
		struct phi_pkeys **o = realloc(p->old, (p->nold + 1) * sizeof(*o));
		if (!o) {
			phi_pkeys_free(pk);
			return -ENOMEM;
		}
		p->old = o;
		p->old[p->nold++] = p->pk;
	}
	p->pk = pk;
	p->kmtime = pk->mtime;
	return 0;
}

/* The keys of a patient, rechecking the key file at most once a second. Caller holds lock. */
static int patient_keys(struct phifs *fs, struct patient *p, const struct phi_pkeys **ret)
{
	time_t now = mono_s();
	if (now - p->checked >= KEY_RECHECK_S) {
		char path[64];
		struct phi_store_stat ss;
		snprintf(path, sizeof(path), "keys/%s", p->tag);
		int r = fs->s->ops->getattr(fs->s, path, &ss);
		if (r < 0)
			return r == -ENOENT ? -EKEYREVOKED : r;
		if (ss.mtime.tv_sec != p->kmtime.tv_sec || ss.mtime.tv_nsec != p->kmtime.tv_nsec) {
			r = patient_reload(fs, p);
			if (r < 0)
				return r;
		}
		p->checked = now;
	}
	if (p->pk->shredded)
		return -EKEYREVOKED;
	*ret = p->pk;
	return 0;
}

static int patient_get(struct phifs *fs, const char *id, struct patient **ret)
{
	char tag[PHI_TAG_LEN + 1];
	int r = phi_patient_valid(id);
	if (r < 0)
		return -ENOENT;
	/* a known patient by its id: the tag (a keyed hash, every lookup of a patient
	 * directory) is a function of it */
	for (struct patient *p = fs->patients; p; p = p->next)
		if (p->pk && !strcmp(p->pk->id, id)) {
			*ret = p;
			return 0;
		}
	r = phi_patient_tag(fs->kr, id, tag);
	if (r < 0)
		return r;
	for (struct patient *p = fs->patients; p; p = p->next)
		if (!strcmp(p->tag, tag)) {
			*ret = p;
			return 0;
		}
	struct patient *p = calloc(1, sizeof(*p));
	if (!p)
		return -ENOMEM;
	memcpy(p->tag, tag, sizeof(tag));
	r = patient_reload(fs, p);
	if (r < 0) {
		free(p);
		return r;
	}
	p->checked = mono_s();
	p->next = fs->patients;
	fs->patients = p;
	*ret = p;
	return 0;
}

static int keys_of(struct phifs *fs, struct node *n, const struct phi_pkeys **ret)
{
	if (!n->pat)
		return -EPERM;
	pthread_mutex_lock(&fs->lock);
	int r = patient_keys(fs, n->pat, ret);
	pthread_mutex_unlock(&fs->lock);
	return r;
}

static int dirid_of(struct phifs *fs, struct node *d, uint8_t id[PHI_DIRID_LEN])
{
	char path[PHI_STORE_PATH_MAX];
	pthread_mutex_lock(&fs->lock);
	if (d->dirid_ok) {
		memcpy(id, d->dirid, PHI_DIRID_LEN);
		pthread_mutex_unlock(&fs->lock);
		return 0;
	}
	int r = node_path_locked(fs, d, path, sizeof(path));
	pthread_mutex_unlock(&fs->lock);
	if (r < 0)
		return r;
	r = phi_dir_id(fs->s, path, id);
	if (r == -EBADMSG) {
		fprintf(stderr, "phifs: integrity failure: directory id missing or corrupt\n");
		return -EIO;
	}
	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->lock);
	memcpy(d->dirid, id, PHI_DIRID_LEN);
	d->dirid_ok = true;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

/* Resolve (dir node, plaintext name) to its encrypted entry and full store path. */
struct target {
	struct phi_ename e;
	char dir[PHI_STORE_PATH_MAX];
	char path[PHI_STORE_PATH_MAX];
	char side[PHI_STORE_PATH_MAX]; /* sidecar path when e.is_long */
	const struct phi_pkeys *pk;
};

static int resolve(struct phifs *fs, struct node *d, const char *name, struct target *t)
{
	uint8_t id[PHI_DIRID_LEN];
	if (d == &fs->root)
		return -EPERM; /* the root holds patient directories only */
	if (d->kind != K_DIR && d->kind != K_PATIENT)
		return -ENOTDIR;
	int r = keys_of(fs, d, &t->pk);
	if (r < 0)
		return r;
	r = dirid_of(fs, d, id);
	if (r < 0)
		return r;
	r = phi_name_encrypt(t->pk->name_key, id, name, &t->e);
	if (r < 0)
		return r;
	r = node_path(fs, d, t->dir, sizeof(t->dir));
	if (r < 0)
		return r;
	r = join(t->path, sizeof(t->path), t->dir, t->e.store);
	if (r < 0)
		return r;
	if (t->e.is_long) {
		char sc[PHI_STORE_NAME_MAX + 1];
		phi_name_sidecar(t->e.store, sc);
		r = join(t->side, sizeof(t->side), t->dir, sc);
	}
	return r;
}

static int put_sidecar(struct phifs *fs, const struct target *t)
{
	if (!t->e.is_long)
		return 0;
	return fs->s->ops->put(fs->s, t->side, t->e.full, strlen(t->e.full));
}

/* ---- access control and audit ---- */

/* One gated request: what is done, to which node (or to the entry name in it). */
struct access {
	enum phi_op op;
	enum phi_audit_ev ev; /* recorded when allowed; PHI_AE_NONE records denials only */
	char action;          /* C R U D E */
	struct node *n;       /* the node, or the directory holding name */
	const char *name;     /* entry name in n, or NULL */
};

/* The patient id of a node ("" for the root). */
static void patient_of(struct phifs *fs, struct node *n, char *id, size_t size)
{
	id[0] = 0;
	pthread_mutex_lock(&fs->lock);
	if (n->pat && n->pat->pk)
		snprintf(id, size, "%s", n->pat->pk->id);
	pthread_mutex_unlock(&fs->lock);
}

/* The store name of "results" in patient directory pn, made once per key set. */
static int results_name(struct phifs *fs, struct node *pn, char out[PHI_STORE_NAME_MAX + 1])
{
	const struct phi_pkeys *pk;
	struct patient *p = pn->pat;
	int r = keys_of(fs, pn, &pk);
	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->lock);
	bool hit = p->results_pk == pk; /* replaced key sets stay allocated: no reuse */
	if (hit)
		memcpy(out, p->results, sizeof(p->results));
	pthread_mutex_unlock(&fs->lock);
	if (hit)
		return 0;
	struct target t;
	r = resolve(fs, pn, "results", &t);
	if (r < 0)
		return r;
	snprintf(out, PHI_STORE_NAME_MAX + 1, "%s", t.e.store);
	pthread_mutex_lock(&fs->lock);
	memcpy(p->results, out, sizeof(p->results));
	p->results_pk = t.pk;
	pthread_mutex_unlock(&fs->lock);
	return 0;
}

/* The policy looks only at the first component of the path inside the patient (a job
 * writes only below results/): "" for the patient directory itself, "results" for that
 * folder, "results/-" for everything below it, "-" for anything else. Plaintext names are not kept,
 * so the top-level store name is compared with the encrypted name of "results". */
static const char *scope_of(struct phifs *fs, struct node *n, const char *name)
{
	if (n->kind == K_PATIENT)
		return !name ? "" : strcmp(name, "results") ? "-" : "results";
	char top[PHI_STORE_NAME_MAX + 1] = "";
	struct node *pn = NULL;
	bool is_top = false;
	pthread_mutex_lock(&fs->lock);
	for (struct node *c = n; c->nal; c = c->al[0].parent) {
		if (c->al[0].parent->kind == K_PATIENT) {
			pn = c->al[0].parent;
			is_top = c == n;
			snprintf(top, sizeof(top), "%s", c->al[0].name);
			break;
		}
	}
	pthread_mutex_unlock(&fs->lock);
	char results[PHI_STORE_NAME_MAX + 1];
	if (!pn || results_name(fs, pn, results) < 0 || strcmp(results, top))
		return "-";
	/* the folder itself, or something below it (the job's write scope, policy.c) */
	return is_top && !name ? "results" : "results/-";
}

/* The pseudonym of store path path; n: the node at that path, whose last one is kept
 * (renames change the path, so it is kept with the path it was made of). */
static void path_pseudonym(struct phifs *fs, struct node *n, const char *path,
			   char out[PHI_AUDIT_PSEUDO_PATH_MAX])
{
	size_t len = strlen(path);
	out[0] = 0;
	if (n) {
		pthread_mutex_lock(&fs->lock);
		if (n->pseudo_path && !strcmp(n->pseudo_path, path))
			snprintf(out, PHI_AUDIT_PSEUDO_PATH_MAX, "%s", n->pseudo_path + len + 1);
		pthread_mutex_unlock(&fs->lock);
		if (out[0])
			return;
	}
	if (phi_audit_pseudonym(fs->opts.lookup_key, PHI_AUDIT_PATH, path, out,
				PHI_AUDIT_PSEUDO_PATH_MAX) < 0 || !n)
		return;
	size_t olen = strlen(out);
	char *c = malloc(len + 1 + olen + 1);
	if (!c)
		return; /* made again next time */
	memcpy(c, path, len + 1);
	memcpy(c + len + 1, out, olen + 1);
	pthread_mutex_lock(&fs->lock);
	free(n->pseudo_path);
	n->pseudo_path = c;
	pthread_mutex_unlock(&fs->lock);
}

static void audit_fill(struct phifs *fs, const struct access *a, const struct fuse_ctx *ctx,
		       const struct phi_identity *id, const char *patient,
		       const struct phi_decision *d, struct phi_audit_event *ev)
{
	char path[PHI_STORE_PATH_MAX];
	struct target t;
	memset(ev, 0, sizeof(*ev));
	ev->event = d->allowed ? a->ev : PHI_AE_DENY;
	ev->action = a->action;
	ev->outcome = d->allowed ? 0 : 4;
	ev->err = d->allowed ? 0 : EACCES;
	ev->actor.uid = ctx->uid;
	ev->actor.gid = ctx->gid;
	ev->actor.pid = (uint32_t)ctx->pid;
	if (id) {
		snprintf(ev->actor.comm, sizeof(ev->actor.comm), "%s", id->comm);
		snprintf(ev->actor.exe, sizeof(ev->actor.exe), "%s", id->exe);
		snprintf(ev->actor.unit, sizeof(ev->actor.unit), "%s", id->unit);
	}
	snprintf(ev->actor.role, sizeof(ev->actor.role), "%s", phi_role_name(d->role));
	snprintf(ev->actor.principal, sizeof(ev->actor.principal), "%s", d->principal);
	/* the patient's pseudonym is kept by its node's patient (patient is that patient's
	 * id when the request is about a node), made once */
	struct patient *p = a->n != &fs->root ? a->n->pat : NULL;
	if (patient[0] && fs->opts.lookup_key) {
		pthread_mutex_lock(&fs->lock);
		if (p)
			memcpy(ev->obj.patient, p->pseudonym, sizeof(p->pseudonym));
		pthread_mutex_unlock(&fs->lock);
		if (!ev->obj.patient[0] &&
		    phi_audit_pseudonym(fs->opts.lookup_key, PHI_AUDIT_PATIENT, patient,
					ev->obj.patient, sizeof(ev->obj.patient)) == 0 && p) {
			pthread_mutex_lock(&fs->lock);
			memcpy(p->pseudonym, ev->obj.patient, sizeof(p->pseudonym));
			pthread_mutex_unlock(&fs->lock);
		}
	}
	/* the path as store names (never plaintext), pseudonymised as well */
	int r = -ENOENT;
	if (a->n != &fs->root && a->name) {
		r = resolve(fs, a->n, a->name, &t);
		if (r >= 0)
			snprintf(path, sizeof(path), "%s", t.path);
	} else if (a->n != &fs->root) {
		r = node_path(fs, a->n, path, sizeof(path));
	}
	if (r >= 0 && fs->opts.lookup_key)
		path_pseudonym(fs, a->name ? NULL : a->n, path, ev->obj.path);
	snprintf(ev->why.purpose, sizeof(ev->why.purpose), "%s", phi_purpose_name(d->purpose));
	snprintf(ev->why.grant, sizeof(ev->why.grant), "%s", d->grant_id);
	ev->why.grant_exp_ns = (int64_t)d->grant_expiry * 1000000000;
	snprintf(ev->detail, sizeof(ev->detail), "%s%s%s%s", phi_op_name(a->op),
		 d->allowed ? "" : " denied: ", d->allowed ? "" : phi_deny_name(d->reason),
		 d->emergency ? " emergency" : "");
}

/* Whether grant id is not yet recorded as expired by this mount. */
static bool expiry_unrecorded(struct phifs *fs, const char *id)
{
	bool found = false;
	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < EXPIRED_SEEN_MAX && !found; i++)
		found = !strcmp(fs->expired_seen[i], id);
	pthread_mutex_unlock(&fs->lock);
	return !found;
}

static void expiry_recorded(struct phifs *fs, const char *id)
{
	pthread_mutex_lock(&fs->lock);
	snprintf(fs->expired_seen[fs->expired_next], sizeof(fs->expired_seen[0]), "%s", id);
	fs->expired_next = (fs->expired_next + 1) % EXPIRED_SEEN_MAX;
	pthread_mutex_unlock(&fs->lock);
}

/* The first time this mount finds a caller's grant expired (an attempt under it), the
 * expiry itself is recorded: grant-expire, before the denial's own record. Concurrent
 * first attempts may both write one; a remount records it again. */
static void audit_expiry(struct phifs *fs, const struct access *a, const struct fuse_ctx *ctx,
			 const struct phi_identity *id, const char *patient,
			 const struct phi_decision *d)
{
	if (!d->grant_id[0] || !expiry_unrecorded(fs, d->grant_id))
		return;
	struct phi_audit_event ev;
	audit_fill(fs, a, ctx, id, patient, d, &ev);
	ev.event = PHI_AE_GRANT_EXPIRE;
	ev.action = 'E';
	ev.outcome = 0;
	ev.err = 0;
	ev.obj.path[0] = 0;
	snprintf(ev.detail, sizeof(ev.detail), "expired grant found by the mount (%s attempt)",
		 phi_op_name(a->op));
	if (phi_audit_submit(fs->opts.audit, &ev, NULL) == 0)
		expiry_recorded(fs, d->grant_id);
}

/* Why a request is denied although the policy allowed it (no names, no PHI). */
static void log_not_durable(int err, enum phi_op op)
{
	fprintf(stderr, "phifs: audit record not durable (%s): denying %s\n", strerror(-err),
		phi_op_name(op));
}

/* Decide a gated request: 0, or -EACCES when the policy denies (or the denial's record
 * cannot be made durable; a denial is recorded here, before the caller answers). When the
 * allowed request must be recorded too, *ret_record is set and *ev holds the record, which
 * the caller makes durable before it answers (gate_record, or asynchronously). Without
 * grants and audit configured this costs nothing. */
static int gate_decide(fuse_req_t req, struct phifs *fs, const struct access *a,
		       struct phi_audit_event *ev, bool *ret_record)
{
	*ret_record = false;
	if (!fs->opts.grants && !fs->opts.audit)
		return 0;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct phi_identity id;
	bool have_id = phi_identity_cached(fs->ids, ctx->uid, ctx->gid, ctx->pid, &id) >= 0;
	char patient[PHI_PATIENT_MAX + 1];
	const char *scope = "";
	if (a->n == &fs->root && a->name) {
		snprintf(patient, sizeof(patient), "%s", a->name); /* a lookup of a patient */
	} else {
		patient_of(fs, a->n, patient, sizeof(patient));
		if (patient[0])
			scope = scope_of(fs, a->n, a->name);
	}
	struct phi_decision d = { .allowed = have_id,
				  .reason = have_id ? PHI_DENY_NONE : PHI_DENY_NO_IDENTITY };
	snprintf(d.principal, sizeof(d.principal), "uid:%u", (unsigned)ctx->uid);
	if (fs->opts.grants) {
		time_t now = mono_s();
		/* the first gate of each second refreshes (not fs->lock: every request takes it) */
		bool refresh = __atomic_load_n(&fs->grants_checked, __ATOMIC_RELAXED) != now &&
			       __atomic_exchange_n(&fs->grants_checked, now, __ATOMIC_RELAXED) != now;
		/* grant changes reach a running mount within a second */
		if (refresh)
			(void)phi_grants_refresh(fs->opts.grants);
		if (phi_policy_check(fs->opts.grants, have_id ? &id : NULL,
				     patient[0] ? patient : NULL, scope, a->op, (uint64_t)time(NULL),
				     &d) < 0)
			d.allowed = false;
	}
	if (fs->opts.audit && !d.allowed && d.reason == PHI_DENY_EXPIRED)
		audit_expiry(fs, a, ctx, have_id ? &id : NULL, patient, &d);
	if (fs->opts.audit && (!d.allowed || a->ev != PHI_AE_NONE || d.emergency)) {
		audit_fill(fs, a, ctx, have_id ? &id : NULL, patient, &d, ev);
		if (d.allowed && a->ev == PHI_AE_NONE)
			ev->event = PHI_AE_EMERGENCY; /* break-glass is never silent */
		if (d.allowed) {
			*ret_record = true;
			return 0;
		}
		int r = phi_audit_submit(fs->opts.audit, ev, NULL);
		if (r < 0)
			log_not_durable(r, a->op);
	}
	return d.allowed ? 0 : -EACCES;
}

/* Make the record of an allowed request durable: 0, or -EACCES (nothing is served
 * unaudited). */
static int gate_record(struct phifs *fs, enum phi_op op, const struct phi_audit_event *ev)
{
	int r = phi_audit_submit(fs->opts.audit, ev, NULL);
	if (r < 0) {
		log_not_durable(r, op);
		return -EACCES;
	}
	return 0;
}

/* Decide and record before answering: 0, or -EACCES when the policy denies or when the
 * record (of an allowed operation or of a denial) cannot be made durable. */
static int gate(fuse_req_t req, struct phifs *fs, const struct access *a)
{
	struct phi_audit_event ev;
	bool record;
	int r = gate_decide(req, fs, a, &ev, &record);
	if (r < 0 || !record)
		return r;
	return gate_record(fs, a->op, &ev);
}

/* Gate a request; on denial answer it and leave the handler. */
#define GATE_OR_RETURN(req, ...)                                                      \
	do {                                                                          \
		int g_ = gate((req), FS(req), &(struct access){ __VA_ARGS__ });       \
		if (g_ < 0) {                                                         \
			reply_err((req), g_);                                         \
			return;                                                       \
		}                                                                     \
	} while (0)

/* ---- held requests ----
 * An audited request that changes something (create, mkdir, symlink, mknod, link, unlink,
 * rmdir, rename, setattr, a truncating open) is recorded before it is done, as before, but no FUSE thread
 * waits for that: the request is copied, its record submitted, and once the audit client's
 * completion thread has the writer's answer, a held_q thread does the request and answers
 * it (or it is denied, EACCES, when the record could not be made durable: nothing was
 * done). So an audited mount needs only the FUSE threads that decide, not one per group
 * commit in flight (main.c: 2). Unaudited requests, and requests whose decision records
 * nothing, run at once on the FUSE thread. */
struct held;
typedef void held_fn(fuse_req_t req, struct held *h);

struct held {
	struct phi_work work; /* queued on fs->held_q once every record is durable */
	struct phifs *fs;
	fuse_req_t req;
	held_fn *run;
	enum phi_op op;
	int waiting; /* records not yet answered (atomic) */
	int status;  /* the first failure among them (atomic) */
	/* the request's arguments; names point into strs once held */
	fuse_ino_t ino, ino2;
	const char *name, *name2;
	struct stat attr;
	int to_set;
	mode_t mode;
	unsigned flags;
	struct fuse_file_info fi;
	char strs[];
};

static void held_run(struct phi_work *w)
{
	struct held *h = (struct held *)w; /* work is the first member */
	h->run(h->req, h);
	free(h);
}

/* One of h's records is durable (status 0) or is not (status < 0); after the last, the
 * request is queued to be done, or denied. From the completion thread, or the submitter. */
static void held_done(struct held *h, int status)
{
	int zero = 0;
	if (status < 0)
		(void)__atomic_compare_exchange_n(&h->status, &zero, status, false, __ATOMIC_ACQ_REL,
						  __ATOMIC_ACQUIRE);
	if (__atomic_sub_fetch(&h->waiting, 1, __ATOMIC_ACQ_REL) > 0)
		return;
	int st = __atomic_load_n(&h->status, __ATOMIC_ACQUIRE);
	if (st < 0) {
		log_not_durable(st, h->op);
		reply_err(h->req, -EACCES);
		free(h);
		return;
	}
	h->work.fn = held_run;
	phi_workq_push(h->fs->held_q, &h->work);
}

static void held_recorded(void *arg, int status, uint64_t seq)
{
	(void)seq;
	held_done(arg, status);
}

/* A heap copy of the arguments in a (names included), for a request answered later. */
static struct held *held_copy(const struct held *a)
{
	size_t l1 = a->name ? strlen(a->name) + 1 : 0, l2 = a->name2 ? strlen(a->name2) + 1 : 0;
	struct held *h = malloc(sizeof(*h) + l1 + l2);
	if (!h)
		return NULL;
	*h = *a;
	if (a->name)
		h->name = memcpy(h->strs, a->name, l1);
	if (a->name2)
		h->name2 = memcpy(h->strs + l1, a->name2, l2);
	return h;
}

/* The held queue, started on first use: threads made before phifs daemonizes (fork)
 * would not exist in the daemon. 4: held requests doing store work at once; more would
 * only wait on the same disk. NULL when the threads cannot be made. */
static struct phi_workq *held_queue(struct phifs *fs)
{
	pthread_mutex_lock(&fs->lock);
	if (!fs->held_q && phi_workq_start(4, &fs->held_q) < 0)
		fs->held_q = NULL;
	struct phi_workq *q = fs->held_q;
	pthread_mutex_unlock(&fs->lock);
	return q;
}

/* Hold request req (arguments a) until the records ev[i] with rec[i] set are durable,
 * then do it (a->run) on held_q; or now, when nothing is to be recorded. */
static void hold(fuse_req_t req, struct held *a, enum phi_op op, const struct phi_audit_event *ev,
		 const bool *rec, int nrec)
{
	struct phifs *fs = FS(req);
	int n = 0, failed = 0;
	for (int i = 0; i < nrec; i++)
		n += rec[i];
	if (n == 0) {
		a->run(req, a);
		return;
	}
	struct held *h = held_queue(fs) ? held_copy(a) : NULL;
	if (!h) {
		reply_err(req, -ENOMEM); /* nothing recorded, nothing done */
		return;
	}
	h->fs = fs;
	h->req = req;
	h->op = op;
	h->waiting = n;
	h->status = 0;
	/* after a failed submission the others are not sent: the request is denied anyway */
	for (int i = 0; i < nrec; i++) {
		if (!rec[i])
			continue;
		int r = failed ? failed : phi_audit_submit_async(fs->opts.audit, &ev[i], held_recorded, h);
		if (r < 0) {
			failed = r;
			held_done(h, r);
		}
	}
}

/* Decide req's accesses (a2 may be NULL; a rename has two: source and target), then do
 * it (a->run) now, or once its records are durable. */
static void gated(fuse_req_t req, struct held *a, const struct access *a1, const struct access *a2)
{
	struct phifs *fs = FS(req);
	struct phi_audit_event ev[2];
	bool rec[2] = { false, false };
	int r = gate_decide(req, fs, a1, &ev[0], &rec[0]);
	if (r >= 0 && a2)
		r = gate_decide(req, fs, a2, &ev[1], &rec[1]);
	if (r < 0)
		reply_err(req, r);
	else
		hold(req, a, a1->op, ev, rec, 2);
}

typedef void handle_drop_fn(struct phifs *fs, uint64_t fh);

/* Answer an open (or opendir) with handle fi; an open whose caller is gone (interrupted)
 * gets the kernel's ENOENT, and then no release will ever come for the handle. */
static void reply_open(struct phifs *fs, fuse_req_t req, const struct fuse_file_info *fi,
		       handle_drop_fn *drop)
{
	if (fuse_reply_open(req, fi) == -ENOENT)
		drop(fs, fi->fh);
}

/* An open waiting for its record to be durable. */
struct open_wait {
	struct phifs *fs;
	fuse_req_t req;
	struct fuse_file_info fi;
	enum phi_op op;
	handle_drop_fn *drop;
};

/* From the audit client's completion thread: answer the open whose record is durable, or
 * deny it (and drop its handle) when the record could not be made so. */
static void open_recorded(void *arg, int status, uint64_t seq)
{
	(void)seq;
	struct open_wait *w = arg;
	if (status < 0) {
		log_not_durable(status, w->op);
		w->drop(w->fs, w->fi.fh);
		reply_err(w->req, -EACCES);
	} else {
		reply_open(w->fs, w->req, &w->fi, w->drop);
	}
	free(w);
}

/* Answer open request req (handle fi, already made) once record ev is durable, without
 * waiting for it here: the audit client's completion thread answers. */
static void reply_open_recorded(struct phifs *fs, fuse_req_t req, const struct fuse_file_info *fi,
				enum phi_op op, const struct phi_audit_event *ev,
				handle_drop_fn *drop)
{
	struct open_wait *w = malloc(sizeof(*w));
	int r = -ENOMEM;
	if (w) {
		*w = (struct open_wait){ fs, req, *fi, op, drop };
		r = phi_audit_submit_async(fs->opts.audit, ev, open_recorded, w);
	}
	if (r < 0) {
		free(w);
		log_not_durable(r, op);
		drop(fs, fi->fh);
		reply_err(req, -EACCES);
	}
}

/* An allowed open (or opendir) that failed with r: its attempt goes on record with that
 * outcome when it was to be recorded (ev), then the error is the answer. */
static void reply_open_failed(struct phifs *fs, fuse_req_t req, enum phi_op op,
			      struct phi_audit_event *ev, int r)
{
	if (ev) {
		ev->outcome = 4;
		ev->err = -r;
		(void)gate_record(fs, op, ev);
	}
	reply_err(req, r);
}

/* Whether the root listing shows a patient to this caller. */
static bool may_see_patient(struct phifs *fs, const struct phi_identity *id, const char *patient)
{
	struct phi_decision d;
	return id && phi_policy_check(fs->opts.grants, id, patient, "", PHI_OP_LOOKUP,
				      (uint64_t)time(NULL), &d) >= 0 &&
	       d.allowed;
}

/* ---- attributes ---- */

static void to_stat(const struct phi_store_stat *ss, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_ino = ss->ino;
	st->st_mode = ss->mode;
	st->st_nlink = ss->nlink;
	st->st_uid = ss->uid;
	st->st_gid = ss->gid;
	st->st_atim = ss->atime;
	st->st_mtim = ss->mtime;
	st->st_ctim = ss->ctime;
	st->st_blksize = 1 << PHI_CF_SHIFT;
	uint64_t size = ss->size;
	if (S_ISREG(ss->mode)) {
		if (phi_cfile_plain_size(ss->size, PHI_CF_SHIFT, &size) < 0)
			size = 0; /* damaged; reads will say EIO */
	} else if (S_ISLNK(ss->mode)) {
		uint64_t L = ss->size, bytes = L / 4 * 3 + (L % 4 ? L % 4 - 1 : 0);
		size = bytes > PHI_SIV_TAG ? bytes - PHI_SIV_TAG : 0;
	}
	st->st_size = (off_t)size;
	st->st_blocks = (blkcnt_t)((size + 511) / 512);
}

static void root_stat(const struct phifs *fs, struct stat *st)
{
	memset(st, 0, sizeof(*st));
	st->st_atim = st->st_mtim = st->st_ctim = fs->mounted;
	st->st_ino = FUSE_ROOT_ID;
	st->st_mode = S_IFDIR | 0755;
	st->st_nlink = 2;
}

/* Under access control a patient directory is open to every uid as far as Unix
 * permissions go: the grants decide who gets in (its store mode is phifs-key's 0700). */
static void patient_mode(const struct phifs *fs, const struct node *n, struct stat *st)
{
	if (fs->opts.grants && n->kind == K_PATIENT)
		st->st_mode = S_IFDIR | 0777;
}

static int node_stat(struct phifs *fs, struct node *n, struct stat *st)
{
	char path[PHI_STORE_PATH_MAX];
	struct phi_store_stat ss;
	if (n == &fs->root) {
		root_stat(fs, st);
		return 0;
	}
	int r = node_path(fs, n, path, sizeof(path));
	if (r == -ENOENT) {
		/* unlinked but open: last known attributes with the live size */
		pthread_mutex_lock(&n->io);
		pthread_mutex_lock(&fs->lock);
		ss = n->last;
		ss.nlink = 0;
		pthread_mutex_unlock(&fs->lock);
		to_stat(&ss, st);
		if (n->cf)
			st->st_size = (off_t)phi_cfile_size(n->cf);
		pthread_mutex_unlock(&n->io);
		return 0;
	}
	if (r < 0)
		return r;
	r = fs->s->ops->getattr(fs->s, path, &ss);
	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->lock);
	n->last = ss;
	pthread_mutex_unlock(&fs->lock);
	to_stat(&ss, st);
	patient_mode(fs, n, st);
	return 0;
}

static void fill_entry(struct phifs *fs, struct node *n, const struct phi_store_stat *ss,
		       struct fuse_entry_param *e)
{
	memset(e, 0, sizeof(*e));
	e->ino = INO(fs, n);
	e->attr_timeout = CACHE_S;
	e->entry_timeout = ENTRY_TIMEOUT_FOR(fs, n);
	to_stat(ss, &e->attr);
	patient_mode(fs, n, &e->attr);
}

/* stat a freshly made/looked-up store path and hand its node to the kernel */
static int entry_for(struct phifs *fs, struct node *parent, const struct target *t,
		     struct fuse_entry_param *e, struct node **ret)
{
	struct phi_store_stat ss;
	int r = fs->s->ops->getattr(fs->s, t->path, &ss);
	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->lock);
	struct node *n = node_get(fs, &ss, parent->pat, parent, t->e.store);
	pthread_mutex_unlock(&fs->lock);
	if (!n)
		return -ENOMEM;
	fill_entry(fs, n, &ss, e);
	if (ret)
		*ret = n;
	return 0;
}

/* ---- lookup / forget ---- */

static int lookup_patient(struct phifs *fs, const char *name, struct fuse_entry_param *e)
{
	struct patient *p;
	const struct phi_pkeys *pk;
	char path[64];
	struct phi_store_stat ss;
	pthread_mutex_lock(&fs->lock);
	int r = patient_get(fs, name, &p);
	if (r >= 0)
		r = patient_keys(fs, p, &pk);
	pthread_mutex_unlock(&fs->lock);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "data/%s", p->tag);
	r = fs->s->ops->getattr(fs->s, path, &ss);
	if (r < 0)
		return r;
	pthread_mutex_lock(&fs->lock);
	if (!p->node) {
		struct node *n = calloc(1, sizeof(*n));
		if (!n) {
			pthread_mutex_unlock(&fs->lock);
			return -ENOMEM;
		}
		n->kind = K_PATIENT;
		n->pat = p;
		n->bino = ss.ino;
		pthread_mutex_init(&n->io, NULL);
		p->node = n;
	}
	p->node->nlookup++;
	p->node->last = ss;
	pthread_mutex_unlock(&fs->lock);
	fill_entry(fs, p->node, &ss, e);
	return 0;
}

static void op_lookup(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	GATE_OR_RETURN(req, PHI_OP_LOOKUP, PHI_AE_NONE, 'R', N(FS(req), parent), name);
	struct phifs *fs = FS(req);
	struct node *d = N(fs, parent);
	struct fuse_entry_param e;
	struct target t;
	int r;
	if (d == &fs->root) {
		r = lookup_patient(fs, name, &e);
	} else {
		r = resolve(fs, d, name, &t);
		if (r >= 0)
			r = entry_for(fs, d, &t, &e, NULL);
	}
	if (r == -ENOENT) {
		/* negative entry: nothing else writes this store while we are mounted */
		memset(&e, 0, sizeof(e));
		e.entry_timeout = fs->opts.grants && d == &fs->root ? 0.0 : CACHE_S;
		fuse_reply_entry(req, &e);
		return;
	}
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_entry(req, &e);
}

static void forget_one(struct phifs *fs, fuse_ino_t ino, uint64_t nlookup)
{
	struct node *n = N(fs, ino);
	if (n == &fs->root)
		return;
	if (n->kind == K_PATIENT) {
		n->nlookup -= nlookup < n->nlookup ? nlookup : n->nlookup;
		return;
	}
	n->nlookup -= nlookup;
	node_unref(fs, n, nlookup);
}

static void op_forget(fuse_req_t req, fuse_ino_t ino, uint64_t nlookup)
{
	struct phifs *fs = FS(req);
	pthread_mutex_lock(&fs->lock);
	forget_one(fs, ino, nlookup);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_none(req);
}

static void op_forget_multi(fuse_req_t req, size_t count, struct fuse_forget_data *f)
{
	struct phifs *fs = FS(req);
	pthread_mutex_lock(&fs->lock);
	for (size_t i = 0; i < count; i++)
		forget_one(fs, f[i].ino, f[i].nlookup);
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_none(req);
}

/* ---- attributes ---- */

static void op_getattr(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	if (ino != FUSE_ROOT_ID)
		GATE_OR_RETURN(req, PHI_OP_GETATTR, PHI_AE_NONE, 'R', N(FS(req), ino), NULL);
	(void)fi;
	struct phifs *fs = FS(req);
	struct stat st;
	struct node *n = N(fs, ino);
	int r = node_stat(fs, n, &st);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_attr(req, &st, CACHE_S);
}

static int content_key(void *ctx, uint32_t version, const struct phi_key **ret)
{
	return phi_pkeys_content(ctx, version, ret);
}

/* Attach the node's store object and cfile (caller holds n->io). */
static int attach(struct phifs *fs, struct node *n, const char *path, bool trunc)
{
	const struct phi_pkeys *pk;
	int r = keys_of(fs, n, &pk);
	if (r < 0)
		return r;
	if (!n->obj) {
		r = fs->s->ops->open(fs->s, path, fs->opts.ro ? O_RDONLY : O_RDWR, 0, &n->obj);
		if (r < 0)
			return r;
	}
	if (n->cf && !trunc)
		return 0;
	struct phi_cfile *cf = NULL;
	if (trunc) {
		/* a truncated file starts over: new file id, current key version */
		const struct phi_key *ck;
		r = phi_pkeys_content(pk, pk->current, &ck);
		if (r >= 0)
			r = phi_cfile_create(fs->s, n->obj, ck, pk->current, &cf);
	} else {
		r = phi_cfile_open(fs->s, n->obj, content_key, (void *)pk, &cf);
	}
	if (r < 0) {
		if (!n->cf && !n->opens) {
			(void)fs->s->ops->release(n->obj);
			n->obj = NULL;
		}
		return r;
	}
	phi_cfile_free(n->cf);
	n->cf = cf;
	return 0;
}

static void detach(struct phifs *fs, struct node *n)
{
	n->lingering = false;
	phi_cfile_free(n->cf);
	n->cf = NULL;
	if (n->obj)
		(void)fs->s->ops->release(n->obj);
	n->obj = NULL;
}

static int do_truncate(struct phifs *fs, struct node *n, uint64_t size)
{
	char path[PHI_STORE_PATH_MAX];
	if (n->kind != K_REG)
		return -EINVAL;
	if (fs->opts.ro)
		return -EROFS;
	int r = node_path(fs, n, path, sizeof(path));
	if (r < 0 && !n->cf)
		return r;
	pthread_mutex_lock(&n->io);
	if (n->lingering)
		detach(fs, n); /* not checked against the store: opened afresh */
	r = attach(fs, n, path, size == 0);
	if (r >= 0 && size != 0)
		r = phi_cfile_truncate(n->cf, size);
	if (!n->opens)
		detach(fs, n);
	pthread_mutex_unlock(&n->io);
	return r;
}

static void do_setattr(fuse_req_t req, fuse_ino_t ino, const struct stat *attr, int to_set)
{
	struct phifs *fs = FS(req);
	struct node *n = N(fs, ino);
	char path[PHI_STORE_PATH_MAX];
	struct stat st;
	int r = 0;
	if (n == &fs->root || n->kind == K_PATIENT) {
		/* patient directories belong to phifs-key (and the access policy) */
		reply_err(req, -EPERM);
		return;
	}
	if (fs->opts.ro) {
		reply_err(req, -EROFS);
		return;
	}
	if (to_set & FUSE_SET_ATTR_SIZE)
		r = do_truncate(fs, n, (uint64_t)attr->st_size);
	if (r >= 0 && (to_set & (FUSE_SET_ATTR_MODE | FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID |
				 FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME)))
		r = node_path(fs, n, path, sizeof(path));
	if (r >= 0 && (to_set & FUSE_SET_ATTR_MODE))
		r = fs->s->ops->chmod(fs->s, path, attr->st_mode & 07777);
	if (r >= 0 && (to_set & (FUSE_SET_ATTR_UID | FUSE_SET_ATTR_GID)))
		r = fs->s->ops->chown(fs->s, path,
				      to_set & FUSE_SET_ATTR_UID ? attr->st_uid : (uint32_t)-1,
				      to_set & FUSE_SET_ATTR_GID ? attr->st_gid : (uint32_t)-1);
	if (r >= 0 && (to_set & (FUSE_SET_ATTR_ATIME | FUSE_SET_ATTR_MTIME))) {
		struct timespec tv[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_nsec = UTIME_OMIT } };
		if (to_set & FUSE_SET_ATTR_ATIME_NOW)
			tv[0].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_ATIME)
			tv[0] = attr->st_atim;
		if (to_set & FUSE_SET_ATTR_MTIME_NOW)
			tv[1].tv_nsec = UTIME_NOW;
		else if (to_set & FUSE_SET_ATTR_MTIME)
			tv[1] = attr->st_mtim;
		r = fs->s->ops->utimens(fs->s, path, tv);
	}
	if (r >= 0)
		r = node_stat(fs, n, &st);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_attr(req, &st, CACHE_S);
}

static void run_setattr(fuse_req_t req, struct held *h)
{
	do_setattr(req, h->ino, &h->attr, h->to_set);
}

static void op_setattr(fuse_req_t req, fuse_ino_t ino, struct stat *attr, int to_set,
		       struct fuse_file_info *fi)
{
	(void)fi;
	struct held a = { .run = run_setattr, .ino = ino, .attr = *attr, .to_set = to_set };
	gated(req, &a, &(struct access){ PHI_OP_SETATTR, PHI_AE_SETATTR, 'U', N(FS(req), ino), NULL }, NULL);
}

/* ---- symlinks ---- */

static void op_readlink(fuse_req_t req, fuse_ino_t ino)
{
	/* a target is decrypted like a name: asked like the node's attributes, so that a
	 * walk served from the kernel's cache (a cwd or fd kept inside a patient) still
	 * needs the policy for it */
	GATE_OR_RETURN(req, PHI_OP_GETATTR, PHI_AE_NONE, 'R', N(FS(req), ino), NULL);
	struct phifs *fs = FS(req);
	struct node *n = N(fs, ino);
	char path[PHI_STORE_PATH_MAX], enc[PHI_STORE_PATH_MAX], out[PHI_STORE_PATH_MAX];
	const struct phi_pkeys *pk;
	size_t len;
	int r = keys_of(fs, n, &pk);
	if (r >= 0)
		r = node_path(fs, n, path, sizeof(path));
	if (r >= 0)
		r = fs->s->ops->readlink(fs->s, path, enc, sizeof(enc) - 1, &len);
	if (r >= 0) {
		enc[len] = 0;
		r = phi_link_decrypt(pk->name_key, enc, out, sizeof(out));
		if (r == -EBADMSG) {
			fprintf(stderr, "phifs: integrity failure: symlink target does not authenticate\n");
			r = -EIO;
		}
	}
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_readlink(req, out);
}

static void do_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct phifs *fs = FS(req);
	struct node *d = N(fs, parent);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e;
	struct target t;
	char enc[PHI_STORE_PATH_MAX];
	int r = fs->opts.ro ? -EROFS : resolve(fs, d, name, &t);
	if (r >= 0)
		r = phi_link_encrypt(t.pk->name_key, link, enc, sizeof(enc));
	if (r >= 0)
		r = put_sidecar(fs, &t);
	if (r >= 0)
		r = fs->s->ops->symlink(fs->s, enc, t.path);
	if (r >= 0) {
		(void)fs->s->ops->chown(fs->s, t.path, ctx->uid, ctx->gid);
		r = entry_for(fs, d, &t, &e, NULL);
	}
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_entry(req, &e);
}

static void run_symlink(fuse_req_t req, struct held *h)
{
	do_symlink(req, h->name2, h->ino, h->name);
}

static void op_symlink(fuse_req_t req, const char *link, fuse_ino_t parent, const char *name)
{
	struct held a = { .run = run_symlink, .ino = parent, .name = name, .name2 = link };
	gated(req, &a, &(struct access){ PHI_OP_CREATE, PHI_AE_CREATE, 'C', N(FS(req), parent), name }, NULL);
}

/* ---- directories ---- */

static void do_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct phifs *fs = FS(req);
	struct node *d = N(fs, parent);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e;
	struct target t;
	int r;
	if (d == &fs->root) {
		/* patients are created with phifs-key add; an existing one is just there */
		r = lookup_patient(fs, name, &e);
		if (r >= 0) {
			pthread_mutex_lock(&fs->lock);
			forget_one(fs, e.ino, 1);
			pthread_mutex_unlock(&fs->lock);
		}
		reply_err(req, r >= 0 ? -EEXIST : -EPERM);
		return;
	}
	r = fs->opts.ro ? -EROFS : resolve(fs, d, name, &t);
	if (r >= 0)
		r = put_sidecar(fs, &t);
	if (r >= 0)
		r = phi_dir_create(fs->s, t.path, mode & 07777 & ~ctx->umask);
	if (r >= 0) {
		(void)fs->s->ops->chown(fs->s, t.path, ctx->uid, ctx->gid);
		r = entry_for(fs, d, &t, &e, NULL);
	}
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_entry(req, &e);
}

static void run_mkdir(fuse_req_t req, struct held *h)
{
	do_mkdir(req, h->ino, h->name, h->mode);
}

static void op_mkdir(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode)
{
	struct held a = { .run = run_mkdir, .ino = parent, .name = name, .mode = mode };
	gated(req, &a, &(struct access){ PHI_OP_CREATE, PHI_AE_CREATE, 'C', N(FS(req), parent), name }, NULL);
}

/* forget the alias of the entry at path (unlink, rmdir, rename over). */
static void drop_alias(struct phifs *fs, struct node *d, const char *sname, uint64_t bino)
{
	pthread_mutex_lock(&fs->lock);
	struct node *n = node_find(fs, bino);
	if (n)
		alias_del(fs, n, d, sname, true);
	pthread_mutex_unlock(&fs->lock);
}

/* Unlink a store file. Where the store can, its storage stays held in *held, for
 * release_held() after the reply. */
static int store_unlink(struct phifs *fs, const char *path, struct phi_store_obj **held)
{
	struct phi_store_stat ss;
	if (fs->s->ops->unlink_held)
		return fs->s->ops->unlink_held(fs->s, path, &ss, held);
	return fs->s->ops->unlink(fs->s, path);
}

/* A long name's sidecar: a missing one is no error (it was an orphan's). */
static void unlink_side(struct phifs *fs, const char *side, struct phi_store_obj **held)
{
	(void)store_unlink(fs, side, held);
}

static void release_held(struct phifs *fs, struct phi_store_obj *held)
{
	if (held)
		(void)fs->s->ops->release(held);
}

static void do_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct phifs *fs = FS(req);
	struct node *d = N(fs, parent);
	struct target t;
	struct phi_store_stat ss;
	struct phi_store_obj *held = NULL, *held_side = NULL;
	int r = fs->opts.ro ? -EROFS : resolve(fs, d, name, &t);
	if (r >= 0 && fs->s->ops->unlink_held) {
		r = fs->s->ops->unlink_held(fs->s, t.path, &ss, &held);
	} else if (r >= 0) {
		r = fs->s->ops->getattr(fs->s, t.path, &ss);
		if (r >= 0 && S_ISDIR(ss.mode))
			r = -EISDIR;
		if (r >= 0)
			r = fs->s->ops->unlink(fs->s, t.path);
	}
	if (r >= 0) {
		if (t.e.is_long)
			unlink_side(fs, t.side, &held_side);
		drop_alias(fs, d, t.e.store, ss.ino);
	}
	reply_err(req, r >= 0 ? 0 : r);
	/* after the reply: freeing the storage may wait for the device (see unlink_held) */
	release_held(fs, held);
	release_held(fs, held_side);
}

static void run_unlink(fuse_req_t req, struct held *h)
{
	do_unlink(req, h->ino, h->name);
}

static void op_unlink(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct held a = { .run = run_unlink, .ino = parent, .name = name };
	gated(req, &a, &(struct access){ PHI_OP_UNLINK, PHI_AE_UNLINK, 'D', N(FS(req), parent), name }, NULL);
}

struct rmdir_scan {
	struct phi_store *s;
	const char *path;
	bool has_entries;
};

static int rmdir_scan_fn(void *ctx, const char *name, uint32_t type)
{
	(void)type;
	struct rmdir_scan *sc = ctx;
	if (phi_name_is_entry(name)) {
		sc->has_entries = true;
		return 1;
	}
	return 0;
}

static int rmdir_clean_fn(void *ctx, const char *name, uint32_t type)
{
	struct rmdir_scan *sc = ctx;
	char p[PHI_STORE_PATH_MAX];
	/* leftovers: orphaned long-name sidecars and temp files of interrupted operations */
	if (type != DT_DIR && strcmp(name, PHI_DIRID_FILE) && join(p, sizeof(p), sc->path, name) >= 0)
		(void)sc->s->ops->unlink(sc->s, p);
	return 0;
}

static void do_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct phifs *fs = FS(req);
	struct node *d = N(fs, parent);
	struct target t;
	struct phi_store_stat ss;
	char idp[PHI_STORE_PATH_MAX];
	uint8_t idbuf[64];
	size_t idlen = 0;
	struct phi_store_obj *held_id = NULL, *held_side = NULL;
	int r = d == &fs->root ? -EPERM : fs->opts.ro ? -EROFS : resolve(fs, d, name, &t);
	if (r >= 0)
		r = fs->s->ops->getattr(fs->s, t.path, &ss);
	if (r >= 0 && !S_ISDIR(ss.mode))
		r = -ENOTDIR;
	struct rmdir_scan sc = { .s = fs->s, .path = t.path };
	if (r >= 0)
		r = fs->s->ops->readdir(fs->s, t.path, rmdir_scan_fn, &sc);
	if (r >= 0 && sc.has_entries)
		r = -ENOTEMPTY;
	if (r >= 0)
		r = join(idp, sizeof(idp), t.path, PHI_DIRID_FILE);
	if (r >= 0)
		r = fs->s->ops->get(fs->s, idp, idbuf, sizeof(idbuf), &idlen);
	if (r >= 0)
		r = fs->s->ops->readdir(fs->s, t.path, rmdir_clean_fn, &sc);
	if (r >= 0)
		r = store_unlink(fs, idp, &held_id);
	if (r >= 0) {
		r = fs->s->ops->rmdir(fs->s, t.path);
		if (r < 0) /* something appeared meanwhile: the directory keeps its id */
			(void)fs->s->ops->put(fs->s, idp, idbuf, idlen);
	}
	if (r >= 0) {
		if (t.e.is_long)
			unlink_side(fs, t.side, &held_side);
		drop_alias(fs, d, t.e.store, ss.ino);
	}
	reply_err(req, r >= 0 ? 0 : r);
	release_held(fs, held_id);
	release_held(fs, held_side);
}

static void run_rmdir(fuse_req_t req, struct held *h)
{
	do_rmdir(req, h->ino, h->name);
}

static void op_rmdir(fuse_req_t req, fuse_ino_t parent, const char *name)
{
	struct held a = { .run = run_rmdir, .ino = parent, .name = name };
	gated(req, &a, &(struct access){ PHI_OP_UNLINK, PHI_AE_UNLINK, 'D', N(FS(req), parent), name }, NULL);
}

struct dirent_buf {
	struct phi_buf b; /* records: u32 type | name NUL | store name NUL ("" if none) */
	size_t count;
	size_t next_i, next_pos; /* where the last reply stopped: a listing is not rescanned */
	struct node *dir;        /* for readdirplus; the open directory keeps it alive */
	char *path;              /* its store path; NULL at the root */
};

struct listing {
	struct phifs *fs;
	struct dirent_buf *out;
	const struct phi_pkeys *pk;
	const uint8_t *dirid;
	const char *path;
};

static int add_dirent(struct dirent_buf *db, const char *name, const char *store, uint32_t type)
{
	uint8_t t[4];
	memcpy(t, &type, 4);
	int r = phi_buf_append(&db->b, t, 4);
	if (r >= 0)
		r = phi_buf_append(&db->b, name, strlen(name) + 1);
	if (r >= 0)
		r = phi_buf_append(&db->b, store, strlen(store) + 1);
	if (r >= 0)
		db->count++;
	return r;
}

/* One record of a listing: its type, plaintext name and store name; returns the next pos. */
static size_t dirent_at(const struct dirent_buf *db, size_t pos, uint32_t *type, const char **name,
			const char **store)
{
	memcpy(type, db->b.p + pos, 4);
	*name = (const char *)db->b.p + pos + 4;
	*store = *name + strlen(*name) + 1;
	return (size_t)(*store + strlen(*store) + 1 - (const char *)db->b.p);
}

/* The byte position of record i (i <= count): from the last reply's end when it continues
 * there, as it does for a sequential listing, else by a scan from the start. */
static size_t dirent_seek(const struct dirent_buf *db, size_t i)
{
	size_t pos = 0, k = 0;
	if (db->next_i <= i) {
		pos = db->next_pos;
		k = db->next_i;
	}
	for (uint32_t type; k < i; k++) {
		const char *name, *store;
		pos = dirent_at(db, pos, &type, &name, &store);
	}
	return pos;
}

static int list_fn(void *ctx, const char *name, uint32_t type)
{
	struct listing *l = ctx;
	char full[PHI_NAME_ENC_MAX], plain[PHI_NAME_PLAIN_MAX + 1];
	if (!phi_name_is_entry(name))
		return 0;
	const char *enc = name;
	size_t nl = strlen(name);
	if (nl > 2 && name[nl - 2] == '.' && name[nl - 1] == 'l') {
		char sc[PHI_STORE_NAME_MAX + 1], p[PHI_STORE_PATH_MAX];
		size_t len;
		phi_name_sidecar(name, sc);
		if (join(p, sizeof(p), l->path, sc) < 0 ||
		    l->fs->s->ops->get(l->fs->s, p, full, sizeof(full) - 1, &len) < 0) {
			fprintf(stderr, "phifs: integrity failure: long-name sidecar missing\n");
			return 0;
		}
		full[len] = 0;
		enc = full;
	}
	if (phi_name_decrypt(l->pk->name_key, l->dirid, enc, plain) < 0) {
		/* not ours, or tampered: hidden and logged without the name */
		fprintf(stderr, "phifs: integrity failure: an entry name does not authenticate\n");
		return 0;
	}
	return add_dirent(l->out, plain, name, type);
}

struct root_listing {
	struct phifs *fs;
	struct dirent_buf *out;
	const struct phi_identity *id; /* under access control: list only what it may see */
};

/* one unreadable key file must not hide every other patient */
static int root_list_fn(void *ctx, const char *tag)
{
	struct root_listing *l = ctx;
	struct phi_pkeys *pk;
	int r = phi_patient_load_tag(l->fs->kr, tag, &pk);
	if (r < 0) {
		fprintf(stderr, "phifs: key file of patient tag %s unreadable: %s\n", tag, strerror(-r));
		return 0;
	}
	if (!pk->shredded && (!l->fs->opts.grants || may_see_patient(l->fs, l->id, pk->id)))
		r = add_dirent(l->out, pk->id, "", DT_DIR);
	phi_pkeys_free(pk);
	return r;
}

static void dir_drop(struct phifs *fs, uint64_t fh)
{
	(void)fs;
	struct dirent_buf *db = (struct dirent_buf *)(uintptr_t)fh;
	if (db) {
		sodium_memzero(db->b.p, db->b.len); /* plaintext names */
		phi_buf_done(&db->b);
		free(db->path);
		free(db);
	}
}

/* Like an open, an audited opendir is answered when its record is durable (op_open). */
static void op_opendir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct phifs *fs = FS(req);
	struct node *n = N(fs, ino);
	struct access a = { PHI_OP_READDIR, PHI_AE_READDIR, 'R', n, NULL };
	struct phi_audit_event ev;
	bool record;
	int gr = gate_decide(req, fs, &a, &ev, &record);
	if (gr < 0) {
		reply_err(req, gr);
		return;
	}
	struct dirent_buf *db = calloc(1, sizeof(*db));
	uint8_t id[PHI_DIRID_LEN];
	char path[PHI_STORE_PATH_MAX];
	int r = db ? 0 : -ENOMEM;
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	phi_buf_init(&db->b, 64u << 20);
	if (r >= 0)
		r = add_dirent(db, ".", "", DT_DIR);
	if (r >= 0)
		r = add_dirent(db, "..", "", DT_DIR);
	if (r >= 0 && n == &fs->root) {
		const struct fuse_ctx *ctx = fuse_req_ctx(req);
		struct phi_identity who;
		bool have_id = phi_identity_cached(fs->ids, ctx->uid, ctx->gid, ctx->pid, &who) >= 0;
		struct root_listing rl = { .fs = fs, .out = db, .id = have_id ? &who : NULL };
		r = phi_patient_foreach_tag(fs->kr, root_list_fn, &rl);
	} else if (r >= 0) {
		struct listing l = { .fs = fs, .out = db, .dirid = id, .path = path };
		r = keys_of(fs, n, &l.pk);
		if (r >= 0)
			r = dirid_of(fs, n, id);
		if (r >= 0)
			r = node_path(fs, n, path, sizeof(path));
		if (r >= 0)
			r = fs->s->ops->readdir(fs->s, path, list_fn, &l);
		if (r >= 0 && !(db->path = strdup(path)))
			r = -ENOMEM;
		db->dir = n;
	}
	if (r < 0) {
		dir_drop(fs, (uint64_t)(uintptr_t)db);
		reply_open_failed(fs, req, a.op, record ? &ev : NULL, r);
		return;
	}
	fi->fh = (uint64_t)(uintptr_t)db;
	if (record)
		reply_open_recorded(fs, req, fi, a.op, &ev, dir_drop);
	else
		reply_open(fs, req, fi, dir_drop);
}

static void op_readdir(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		       struct fuse_file_info *fi)
{
	(void)ino;
	struct dirent_buf *db = (struct dirent_buf *)(uintptr_t)fi->fh;
	_cleanup_free_ char *buf = malloc(size);
	size_t used = 0, i = off > 0 ? (size_t)off : 0;
	if (!buf) {
		reply_err(req, -ENOMEM);
		return;
	}
	/* off is the index of the next record */
	size_t pos = i <= db->count ? dirent_seek(db, i) : 0;
	for (; i < db->count; i++) {
		uint32_t type;
		const char *name, *store;
		size_t next = dirent_at(db, pos, &type, &name, &store);
		/* a zero d_ino hides the entry from readdir(3); the kernel looks up real inodes anyway */
		struct stat st = { .st_ino = (ino_t)i + 2, .st_mode = type << 12 };
		size_t need = fuse_add_direntry(req, buf + used, size - used, name, &st, (off_t)i + 1);
		if (need > size - used)
			break;
		used += need;
		pos = next;
	}
	db->next_i = i;
	db->next_pos = pos;
	fuse_reply_buf(req, buf, used);
}

/* readdirplus: an entry with its attributes and a lookup reference, so a listing followed
 * by a stat of every entry (find, ls -l, rm -r) costs one request per buffer instead of a
 * LOOKUP per entry. Entries without a store object of their own (".", "..", patients at
 * the root) go out with node id 0, which makes the kernel look them up as usual. */
static void op_readdirplus(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
			   struct fuse_file_info *fi)
{
	(void)ino;
	struct phifs *fs = FS(req);
	struct dirent_buf *db = (struct dirent_buf *)(uintptr_t)fi->fh;
	_cleanup_free_ char *buf = malloc(size);
	size_t used = 0, i = off > 0 ? (size_t)off : 0;
	char path[PHI_STORE_PATH_MAX];
	if (!buf) {
		reply_err(req, -ENOMEM);
		return;
	}
	size_t pos = i <= db->count ? dirent_seek(db, i) : 0;
	bool full = false;
	/* in runs of up to 64 entries: those that fit, then their attributes, which a local
	 * store reads with one directory open per run instead of one per entry */
	while (!full && i < db->count) {
		enum { RUN = 64 };
		uint32_t type[RUN];
		const char *name[RUN], *store[RUN];
		struct phi_store_stat ss[RUN];
		int err[RUN];
		size_t k = 0, room = size - used;
		for (; k < RUN && i + k < db->count; k++) {
			size_t next = dirent_at(db, pos, &type[k], &name[k], &store[k]);
			size_t need = fuse_add_direntry_plus(req, NULL, 0, name[k], NULL, 0);
			if (need > room) {
				full = true;
				break;
			}
			room -= need;
			pos = next;
		}
		if (db->path && fs->s->ops->getattr_in) {
			if (fs->s->ops->getattr_in(fs->s, db->path, store, k, ss, err) < 0)
				for (size_t j = 0; j < k; j++)
					err[j] = -EIO;
		} else {
			for (size_t j = 0; j < k; j++)
				err[j] = db->path && join(path, sizeof(path), db->path, store[j]) >= 0
						 ? fs->s->ops->getattr(fs->s, path, &ss[j])
						 : -ENOENT;
		}
		for (size_t j = 0; j < k; j++, i++) {
			struct fuse_entry_param e = { .attr = { .st_ino = (ino_t)i + 2,
								.st_mode = type[j] << 12 } };
			/* "." and ".." have no store name: no attributes, no entry */
			if (*store[j] && err[j] >= 0) {
				pthread_mutex_lock(&fs->lock);
				struct node *n = node_get(fs, &ss[j], db->dir->pat, db->dir, store[j]);
				pthread_mutex_unlock(&fs->lock);
				if (n)
					fill_entry(fs, n, &ss[j], &e);
				/* a walk lists it next: its listing and dir id in flight now */
				if (S_ISDIR(ss[j].mode) && fs->s->ops->prefetch_dir &&
				    join(path, sizeof(path), db->path, store[j]) >= 0)
					fs->s->ops->prefetch_dir(fs->s, path, PHI_DIRID_FILE);
			}
			size_t need = fuse_add_direntry_plus(req, NULL, 0, name[j], NULL, 0);
			(void)fuse_add_direntry_plus(req, buf + used, size - used, name[j], &e, (off_t)i + 1);
			used += need;
		}
	}
	db->next_i = i;
	db->next_pos = pos;
	fuse_reply_buf(req, buf, used);
}

static void op_releasedir(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	dir_drop(FS(req), fi->fh);
	fuse_reply_err(req, 0);
}

static void op_fsyncdir(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)datasync;
	(void)fi;
	struct phifs *fs = FS(req);
	char path[PHI_STORE_PATH_MAX];
	int r = node_path(fs, N(fs, ino), path, sizeof(path));
	if (r >= 0)
		r = fs->s->ops->fsync_dir(fs->s, path);
	reply_err(req, r >= 0 ? 0 : r);
}

/* ---- rename / link ---- */

static void do_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct phifs *fs = FS(req);
	struct node *d = N(fs, parent), *nd = N(fs, newparent);
	struct target a, b;
	struct phi_store_stat sa, sb;
	bool have_b = false;
	int r = 0;
	if (d == &fs->root || nd == &fs->root)
		r = -EPERM;
	else if (d->pat != nd->pat)
		r = -EXDEV; /* another patient's tree has another key */
	else if (fs->opts.ro)
		r = -EROFS;
	if (flags & ~(unsigned)(RENAME_NOREPLACE | RENAME_EXCHANGE))
		r = -EINVAL;
	if (r >= 0)
		r = resolve(fs, d, name, &a);
	if (r >= 0)
		r = resolve(fs, nd, newname, &b);
	if (r >= 0)
		r = fs->s->ops->getattr(fs->s, a.path, &sa);
	if (r >= 0) {
		int rb = fs->s->ops->getattr(fs->s, b.path, &sb);
		if (rb >= 0)
			have_b = true;
		else if (rb != -ENOENT)
			r = rb;
	}
	if (r >= 0 && have_b && sa.ino == sb.ino) {
		fuse_reply_err(req, 0); /* same file: POSIX says do nothing */
		return;
	}
	if (r >= 0)
		r = put_sidecar(fs, &b);
	if (r >= 0 && (flags & RENAME_EXCHANGE))
		r = put_sidecar(fs, &a);
	char idp[PHI_STORE_PATH_MAX];
	uint8_t idbuf[64];
	size_t idlen = 0;
	bool dir_over = r >= 0 && have_b && !(flags & RENAME_EXCHANGE) && S_ISDIR(sb.mode);
	if (dir_over) {
		/* POSIX lets a directory replace an empty one; on the store "empty" means only .d */
		if (!S_ISDIR(sa.mode))
			r = -EISDIR;
		struct rmdir_scan sc = { .s = fs->s, .path = b.path };
		if (r >= 0)
			r = fs->s->ops->readdir(fs->s, b.path, rmdir_scan_fn, &sc);
		if (r >= 0 && sc.has_entries)
			r = -ENOTEMPTY;
		if (r >= 0)
			r = join(idp, sizeof(idp), b.path, PHI_DIRID_FILE);
		if (r >= 0)
			r = fs->s->ops->get(fs->s, idp, idbuf, sizeof(idbuf), &idlen);
		if (r >= 0)
			r = fs->s->ops->readdir(fs->s, b.path, rmdir_clean_fn, &sc);
		if (r >= 0)
			r = fs->s->ops->unlink(fs->s, idp);
	} else if (r >= 0 && have_b && !(flags & RENAME_EXCHANGE) && S_ISDIR(sa.mode)) {
		r = -ENOTDIR;
	}
	if (r >= 0) {
		r = fs->s->ops->rename(fs->s, a.path, b.path, flags);
		if (r < 0 && dir_over)
			(void)fs->s->ops->put(fs->s, idp, idbuf, idlen);
	}
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	if (a.e.is_long && !(flags & RENAME_EXCHANGE))
		(void)fs->s->ops->unlink(fs->s, a.side);
	pthread_mutex_lock(&fs->lock);
	struct node *na = node_find(fs, sa.ino), *nb = have_b ? node_find(fs, sb.ino) : NULL;
	if (flags & RENAME_EXCHANGE) {
		if (na && alias_del(fs, na, d, a.e.store, false))
			alias_add(na, nd, b.e.store);
		if (nb && alias_del(fs, nb, nd, b.e.store, false))
			alias_add(nb, d, a.e.store);
	} else {
		if (nb)
			alias_del(fs, nb, nd, b.e.store, true);
		if (na && alias_del(fs, na, d, a.e.store, false))
			alias_add(na, nd, b.e.store);
	}
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_err(req, 0);
}

static void run_rename(fuse_req_t req, struct held *h)
{
	do_rename(req, h->ino, h->name, h->ino2, h->name2, h->flags);
}

static void op_rename(fuse_req_t req, fuse_ino_t parent, const char *name, fuse_ino_t newparent,
		      const char *newname, unsigned int flags)
{
	struct held a = { .run = run_rename, .ino = parent, .name = name, .ino2 = newparent,
			  .name2 = newname, .flags = flags };
	gated(req, &a, &(struct access){ PHI_OP_RENAME, PHI_AE_RENAME, 'U', N(FS(req), parent), name },
	      &(struct access){ PHI_OP_RENAME, PHI_AE_RENAME, 'U', N(FS(req), newparent), newname });
}

static void do_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct phifs *fs = FS(req);
	struct node *n = N(fs, ino), *nd = N(fs, newparent);
	struct fuse_entry_param e;
	struct target t;
	char path[PHI_STORE_PATH_MAX];
	int r = 0;
	if (n == &fs->root || n->kind == K_PATIENT || n->kind == K_DIR)
		r = -EPERM;
	else if (nd == &fs->root)
		r = -EPERM;
	else if (n->pat != nd->pat)
		r = -EXDEV;
	else if (fs->opts.ro)
		r = -EROFS;
	if (r >= 0)
		r = resolve(fs, nd, newname, &t);
	if (r >= 0)
		r = node_path(fs, n, path, sizeof(path));
	if (r >= 0)
		r = put_sidecar(fs, &t);
	if (r >= 0)
		r = fs->s->ops->link(fs->s, path, t.path);
	if (r >= 0)
		r = entry_for(fs, nd, &t, &e, NULL);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_entry(req, &e);
}

static void run_link(fuse_req_t req, struct held *h)
{
	do_link(req, h->ino, h->ino2, h->name);
}

static void op_link(fuse_req_t req, fuse_ino_t ino, fuse_ino_t newparent, const char *newname)
{
	struct held a = { .run = run_link, .ino = ino, .ino2 = newparent, .name = newname };
	gated(req, &a, &(struct access){ PHI_OP_CREATE, PHI_AE_CREATE, 'C', N(FS(req), newparent), newname }, NULL);
}

/* ---- files ---- */

/* A change of the store object behind this mount's back (another mount of the same store,
 * such as a gpurun job's, writing the file) that the stat below could miss: one in the
 * same timestamp tick as the stat (ext4 stamps coarse times, a jiffy apart). A stat whose
 * ctime is this recent vouches for nothing; git's "racily clean" index entries are the
 * same problem. */
#define PAGES_RACY_NS 50000000LL

/* May an opening reader keep the kernel's cached pages of n (FOPEN_KEEP_CACHE), instead
 * of having them dropped and every byte read, decrypted and answered again? Yes when the
 * store object is the one, unchanged, that they were last known to match: same inode,
 * size, mtime and ctime as at an earlier open that dropped them, so every page cached
 * since came from, or went to, these very bytes (writes through this mount reach the
 * store at once: no writeback cache). An open that cannot say so drops them and records
 * the object as it is now. Under n->io. Only on stores whose stat tracks content. */
static bool pages_valid(const struct phifs *fs, struct node *n, const char *path)
{
	struct phi_store_stat ss;
	if (fs->s->ops->getattr(fs->s, path, &ss) < 0) {
		n->pages_ok = false;
		return false;
	}
	const struct phi_store_stat *o = &n->pages;
	bool same = n->pages_ok && ss.ino == o->ino && ss.size == o->size &&
		    ss.mtime.tv_sec == o->mtime.tv_sec && ss.mtime.tv_nsec == o->mtime.tv_nsec &&
		    ss.ctime.tv_sec == o->ctime.tv_sec && ss.ctime.tv_nsec == o->ctime.tv_nsec;
	struct timespec now;
	clock_gettime(CLOCK_REALTIME, &now);
	int64_t age = ((int64_t)now.tv_sec - ss.ctime.tv_sec) * 1000000000LL +
		      (now.tv_nsec - ss.ctime.tv_nsec);
	n->pages = ss;
	n->pages_ok = age >= PAGES_RACY_NS;
	return same;
}

/* valid: pages_valid's answer when the caller asked it already (open_node, taking over a
 * lingering file), else -1 */
static int handle_new(const struct phifs *fs, struct node *n, int flags, struct fuse_file_info *fi,
		      const char *path, int valid)
{
	struct handle *h = calloc(1, sizeof(*h));
	if (!h)
		return -ENOMEM;
	h->n = n;
	h->flags = flags;
	fi->fh = (uint64_t)(uintptr_t)h;
	if (fs->opts.direct_io) {
		fi->direct_io = 1;
		fi->keep_cache = 0;
	} else if (path && (flags & O_ACCMODE) != O_WRONLY && !(flags & O_TRUNC) &&
		   fs->s->ops->stat_tracks_content) {
		fi->keep_cache = valid >= 0 ? valid : pages_valid(fs, n, path);
		/* The pages go, and so must the size the kernel caches for CACHE_S: after a
		 * change through another mount it would cut the new content at the old size
		 * (reads check it only past the end, and refetch it only once stale).
		 * Attributes only (offset -1): no page is waited for, so this cannot deadlock. */
		if (!fi->keep_cache && fs->se)
			(void)fuse_lowlevel_notify_inval_inode(fs->se, INO(fs, n), -1, 0);
	} else if ((flags & O_ACCMODE) == O_WRONLY && !(flags & O_TRUNC)) {
		/* Without keep_cache the kernel drops the file's cached pages at every open. A
		 * write-only handle reads nothing through them (its writes update the pages they
		 * cover), and every open that can read still drops them unless pages_valid
		 * vouches for them, so keeping them costs no freshness and spares the
		 * invalidation: 35-65 ms at the open of a 512 MiB file read just before
		 * (tests/azure/bench.sh, the 4 KiB overwrite row). */
		fi->keep_cache = 1;
	}
	return 0;
}

/* A write-only handle came (d = 1) or went (d = -1); with n->io held and n->obj attached.
 * The store hears when the first comes and the last goes (write_intent): small reads are
 * then the read halves of its read-modify-writes. Not O_RDWR handles: theirs may be a
 * program's own random reads (a database file), for which fetching a whole store piece
 * (store_azure: 1 MiB) instead of the bytes would cost 256 times the download. */
static void writers_add(struct phifs *fs, struct node *n, int flags, int d)
{
	if ((flags & O_ACCMODE) != O_WRONLY)
		return;
	if (d > 0 ? n->writers++ != 0 : --n->writers != 0)
		return;
	if (n->obj && fs->s->ops->write_intent)
		fs->s->ops->write_intent(n->obj, d > 0);
}

/* ---- lingering store objects ----
 * An open of a file nobody has open costs the store's open (openat2 and fstat), the
 * content header's read and check, and at its last close the close: at 1 thread, phifs
 * made 24 syscalls per audited open without this and 19 with it. So a regular file stays
 * attached (store object and content state) for -o linger_ms after its last close,
 * LINGER_MAX files at most, and a reading open within that time takes it over when the
 * store object is the one it was opened from, unchanged: the check (pages_valid) that lets
 * the kernel keep its cached pages, with the stat it makes anyway. Any other open, and a
 * truncate, drops the attachment first and opens afresh. Only on stores whose stat tracks
 * content (the local store). A shredded key fails every open (keys_of, or the patient's
 * lookup) and what lingers is closed by the timer: linger_ms is at most 1000, the time a
 * running mount takes to see the shred. */
#define LINGER_MAX 128

/* May n stay attached after its last close? Under n->io. */
static bool linger_ok(const struct phifs *fs, const struct node *n)
{
	return fs->opts.linger_ms && n->kind == K_REG && n->obj && n->cf && !fs->opts.direct_io &&
	       fs->s->ops->stat_tracks_content;
}

/* An open may take over an attachment only if it reads through the kernel's cache: the
 * opens handle_new asks pages_valid about. */
static bool reads_cached(const struct phifs *fs, int flags)
{
	return !fs->opts.direct_io && (flags & O_ACCMODE) != O_WRONLY && !(flags & O_TRUNC) &&
	       fs->s->ops->stat_tracks_content;
}

/* Take n off the list (fs->lg_mu held); the list's ref passes to the caller. */
static void lg_unlink(struct phifs *fs, struct node *n)
{
	*(n->lg_prev ? &n->lg_prev->lg_next : &fs->lg_head) = n->lg_next;
	*(n->lg_next ? &n->lg_next->lg_prev : &fs->lg_tail) = n->lg_prev;
	n->lg_prev = n->lg_next = NULL;
	n->on_lg = false;
	fs->lg_n--;
}

/* n came off the list: detach it unless it was opened again, then drop the list's ref. */
static void lg_evict(struct phifs *fs, struct node *n)
{
	pthread_mutex_lock(&n->io);
	if (n->lingering && n->opens == 0)
		detach(fs, n);
	pthread_mutex_unlock(&n->io);
	pthread_mutex_lock(&fs->lock);
	node_unref(fs, n, 1);
	pthread_mutex_unlock(&fs->lock);
}

static void *lg_thread(void *arg)
{
	struct phifs *fs = arg;
	pthread_mutex_lock(&fs->lg_mu);
	while (!fs->lg_stop) {
		struct node *n = fs->lg_head;
		if (!n) {
			pthread_cond_wait(&fs->lg_cv, &fs->lg_mu);
			continue;
		}
		int64_t due = n->lg_since + (int64_t)fs->opts.linger_ms * 1000000;
		if (mono_ns() < due) {
			struct timespec ts = { .tv_sec = due / 1000000000, .tv_nsec = due % 1000000000 };
			(void)pthread_cond_timedwait(&fs->lg_cv, &fs->lg_mu, &ts);
			continue;
		}
		lg_unlink(fs, n);
		pthread_mutex_unlock(&fs->lg_mu);
		lg_evict(fs, n);
		pthread_mutex_lock(&fs->lg_mu);
	}
	pthread_mutex_unlock(&fs->lg_mu);
	return NULL;
}

/* n (lingering) had its last close: put it at the list's tail. 1: the list took the
 * caller's ref to n; 0: n was listed already (moved to the tail); -1: no list (its thread
 * cannot start). *victim: the oldest, pushed off a full list, for lg_evict. */
static int lg_add(struct phifs *fs, struct node *n, struct node **victim)
{
	int r = 1;
	*victim = NULL;
	pthread_mutex_lock(&fs->lg_mu);
	if (!fs->lg_started) {
		/* started on first use: a thread made before phifs daemonizes (fork) would not
		 * exist in the daemon */
		fs->lg_started = !fs->lg_stop && phi_thread_start(&fs->lg_thread, lg_thread, fs) == 0;
		if (!fs->lg_started) {
			pthread_mutex_unlock(&fs->lg_mu);
			return -1;
		}
	}
	if (n->on_lg) {
		lg_unlink(fs, n);
		r = 0; /* the list keeps its ref; the caller drops its own */
	} else if (fs->lg_n == LINGER_MAX) {
		*victim = fs->lg_head;
		lg_unlink(fs, *victim);
	}
	n->lg_since = mono_ns();
	n->lg_prev = fs->lg_tail;
	*(fs->lg_tail ? &fs->lg_tail->lg_next : &fs->lg_head) = n;
	fs->lg_tail = n;
	n->on_lg = true;
	if (fs->lg_n++ == 0)
		pthread_cond_signal(&fs->lg_cv); /* the thread may wait without a deadline */
	pthread_mutex_unlock(&fs->lg_mu);
	return r;
}

/* Stop the thread and detach every listed file (at unmount, before the nodes go). */
static void lg_stop(struct phifs *fs)
{
	pthread_mutex_lock(&fs->lg_mu);
	fs->lg_stop = true;
	bool started = fs->lg_started;
	pthread_cond_signal(&fs->lg_cv);
	pthread_mutex_unlock(&fs->lg_mu);
	if (started)
		pthread_join(fs->lg_thread, NULL);
	for (;;) {
		pthread_mutex_lock(&fs->lg_mu);
		struct node *n = fs->lg_head;
		if (n)
			lg_unlink(fs, n);
		pthread_mutex_unlock(&fs->lg_mu);
		if (!n)
			break;
		lg_evict(fs, n);
	}
}

/* open node n for handle fi (shared by open and create-of-existing) */
static int open_node(struct phifs *fs, struct node *n, struct fuse_file_info *fi)
{
	char path[PHI_STORE_PATH_MAX];
	int r = 0;
	if (n->kind != K_REG)
		r = n->kind == K_LNK ? -ELOOP : -EISDIR;
	else if (fs->opts.ro && (fi->flags & O_ACCMODE) != O_RDONLY)
		r = -EROFS;
	if (r >= 0)
		r = node_path(fs, n, path, sizeof(path));
	if (r < 0)
		return r;
	pthread_mutex_lock(&n->io);
	int valid = -1;
	if (n->lingering) {
		/* taken over only by a reading open, and only if the store object is unchanged */
		if (n->opens == 0 && reads_cached(fs, fi->flags))
			valid = pages_valid(fs, n, path);
		if (valid != 1)
			detach(fs, n);
		n->lingering = false;
	}
	r = attach(fs, n, path, (fi->flags & O_TRUNC) && (fi->flags & O_ACCMODE) != O_RDONLY);
	if (r >= 0)
		r = handle_new(fs, n, fi->flags, fi, path, valid);
	if (r >= 0) {
		n->opens++;
		writers_add(fs, n, fi->flags, 1);
	} else if (!n->opens) {
		detach(fs, n);
	}
	pthread_mutex_unlock(&n->io);
	if (r >= 0) {
		pthread_mutex_lock(&fs->lock);
		n->refs++;
		pthread_mutex_unlock(&fs->lock);
	}
	return r;
}

/* Drop handle h of node n (a release, or an open that is not answered after all). */
static void handle_drop(struct phifs *fs, struct handle *h)
{
	struct node *n = h->n, *victim = NULL;
	bool linger = false;
	pthread_mutex_lock(&n->io);
	writers_add(fs, n, h->flags, -1);
	if (--n->opens == 0) {
		linger = linger_ok(fs, n);
		if (linger)
			n->lingering = true;
		else
			detach(fs, n);
	}
	pthread_mutex_unlock(&n->io);
	free(h);
	int took = linger ? lg_add(fs, n, &victim) : 0;
	if (took < 0) {
		pthread_mutex_lock(&n->io);
		if (n->lingering && n->opens == 0)
			detach(fs, n);
		pthread_mutex_unlock(&n->io);
	}
	if (victim)
		lg_evict(fs, victim);
	if (took <= 0) {
		pthread_mutex_lock(&fs->lock);
		node_unref(fs, n, 1);
		pthread_mutex_unlock(&fs->lock);
	}
}

static void file_drop(struct phifs *fs, uint64_t fh)
{
	handle_drop(fs, (struct handle *)(uintptr_t)fh);
}

/* A truncating open whose record is durable. */
static void run_open_trunc(fuse_req_t req, struct held *h)
{
	struct phifs *fs = FS(req);
	int r = open_node(fs, N(fs, h->ino), &h->fi);
	if (r < 0)
		reply_err(req, r);
	else
		reply_open(fs, req, &h->fi, file_drop);
}

/* An audited open does not hold a FUSE thread while its record is made durable: the file
 * is opened (nothing is read or changed yet), the record is submitted, and the audit
 * client's completion thread answers when the group commit that holds it is done. Under
 * load that takes a wakeup and 3 syscalls per open off the path, and FUSE needs only a
 * few threads instead of one per waiting open. A truncating open changes the file, so it
 * is a held request: recorded first, then opened (run_open_trunc). */
static void op_open(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	struct phifs *fs = FS(req);
	bool w_ = (fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC);
	struct access a = { w_ ? PHI_OP_OPEN_WRITE : PHI_OP_OPEN_READ, PHI_AE_OPEN, w_ ? 'U' : 'R',
			    N(fs, ino), NULL };
	struct phi_audit_event ev;
	bool record;
	int r = gate_decide(req, fs, &a, &ev, &record);
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	if (record && (fi->flags & O_TRUNC)) {
		/* it changes the file: recorded before anything is done, as a held request */
		struct held h = { .run = run_open_trunc, .ino = ino, .fi = *fi };
		hold(req, &h, a.op, &ev, &record, 1);
		return;
	}
	r = open_node(fs, N(fs, ino), fi);
	if (r < 0) {
		reply_open_failed(fs, req, a.op, record ? &ev : NULL, r);
		return;
	}
	if (record)
		reply_open_recorded(fs, req, fi, a.op, &ev, file_drop);
	else
		reply_open(fs, req, fi, file_drop);
}

/* A new regular file: its object appears in the store only with a valid empty content
 * header (store create is atomic), so a crash never leaves a header-less file. */
static int new_object(struct phifs *fs, const struct target *t, mode_t mode,
		      const struct fuse_ctx *ctx, const struct phi_key *ck,
		      struct phi_store_obj **ret_obj, struct phi_cfile **ret_cf)
{
	uint8_t empty[PHI_CF_EMPTY];
	struct phi_cfile *cf = NULL;
	struct phi_store_obj *obj = NULL;
	int r = phi_cfile_prepare(fs->s, ck, t->pk->current, empty, &cf);
	if (r >= 0)
		r = fs->s->ops->create(fs->s, t->path, mode, ctx->uid, ctx->gid, empty,
				       sizeof(empty), &obj);
	if (r < 0) {
		phi_cfile_free(cf);
		return r;
	}
	phi_cfile_bind(cf, obj);
	*ret_obj = obj;
	*ret_cf = cf;
	return 0;
}

static void do_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct phifs *fs = FS(req);
	struct node *d = N(fs, parent), *n = NULL;
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e;
	struct target t;
	struct phi_store_obj *obj = NULL;
	const struct phi_key *ck;
	int r = fs->opts.ro ? -EROFS : resolve(fs, d, name, &t);
	if (r >= 0)
		r = phi_pkeys_content(t.pk, t.pk->current, &ck);
	if (r >= 0)
		r = put_sidecar(fs, &t);
	struct phi_cfile *cf = NULL;
	if (r >= 0)
		r = new_object(fs, &t, mode & 07777 & ~ctx->umask, ctx, ck, &obj, &cf);
	if (r == -EEXIST && !(fi->flags & O_EXCL)) {
		/* lost a race with another creator: open the existing file */
		r = entry_for(fs, d, &t, &e, &n);
		if (r >= 0)
			r = open_node(fs, n, fi);
		if (r >= 0)
			fuse_reply_create(req, &e, fi);
		else
			reply_err(req, r);
		return;
	}
	if (r >= 0)
		r = entry_for(fs, d, &t, &e, &n);
	if (r >= 0)
		r = handle_new(fs, n, fi->flags, fi, NULL, -1);
	if (r < 0) {
		phi_cfile_free(cf);
		if (obj)
			(void)fs->s->ops->release(obj);
		reply_err(req, r);
		return;
	}
	pthread_mutex_lock(&n->io);
	if (n->lingering)
		detach(fs, n); /* the new object replaces what lingered */
	if (n->cf) {
		/* an unlikely reuse of a node already open: keep its state */
		phi_cfile_free(cf);
		(void)fs->s->ops->release(obj);
	} else {
		n->obj = obj;
		n->cf = cf;
	}
	n->opens++;
	writers_add(fs, n, fi->flags, 1);
	pthread_mutex_unlock(&n->io);
	pthread_mutex_lock(&fs->lock);
	n->refs++;
	pthread_mutex_unlock(&fs->lock);
	fuse_reply_create(req, &e, fi);
}

static void run_create(fuse_req_t req, struct held *h)
{
	do_create(req, h->ino, h->name, h->mode, &h->fi);
}

static void op_create(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode,
		      struct fuse_file_info *fi)
{
	struct held a = { .run = run_create, .ino = parent, .name = name, .mode = mode, .fi = *fi };
	gated(req, &a, &(struct access){ PHI_OP_CREATE, PHI_AE_CREATE, 'C', N(FS(req), parent), name }, NULL);
}

static void do_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev;
	struct phifs *fs = FS(req);
	if (!S_ISREG(mode)) {
		/* device nodes, FIFOs and sockets carry no PHI and are not supported */
		reply_err(req, -EPERM);
		return;
	}
	struct node *d = N(fs, parent);
	const struct fuse_ctx *ctx = fuse_req_ctx(req);
	struct fuse_entry_param e;
	struct target t;
	struct phi_store_obj *obj = NULL;
	struct phi_cfile *cf = NULL;
	const struct phi_key *ck;
	int r = fs->opts.ro ? -EROFS : resolve(fs, d, name, &t);
	if (r >= 0)
		r = phi_pkeys_content(t.pk, t.pk->current, &ck);
	if (r >= 0)
		r = put_sidecar(fs, &t);
	if (r >= 0)
		r = new_object(fs, &t, mode & 07777 & ~ctx->umask, ctx, ck, &obj, &cf);
	if (r >= 0) {
		phi_cfile_free(cf);
		r = fs->s->ops->release(obj);
	}
	if (r >= 0)
		r = entry_for(fs, d, &t, &e, NULL);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_entry(req, &e);
}

static void run_mknod(fuse_req_t req, struct held *h)
{
	do_mknod(req, h->ino, h->name, h->mode, 0);
}

static void op_mknod(fuse_req_t req, fuse_ino_t parent, const char *name, mode_t mode, dev_t rdev)
{
	(void)rdev; /* only regular files are made */
	struct held a = { .run = run_mknod, .ino = parent, .name = name, .mode = mode };
	gated(req, &a, &(struct access){ PHI_OP_CREATE, PHI_AE_CREATE, 'C', N(FS(req), parent), name }, NULL);
}

static void op_read(fuse_req_t req, fuse_ino_t ino, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)ino;
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct node *n = h->n;
	uint8_t *buf = malloc(size ? size : 1);
	size_t got = 0;
	int r = buf ? 0 : -ENOMEM;
	if (r >= 0) {
		pthread_mutex_lock(&n->io);
		r = phi_cfile_read(n->cf, buf, size, (uint64_t)off, &got);
		pthread_mutex_unlock(&n->io);
	}
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_buf(req, (const char *)buf, got);
	if (buf)
		phi_wipe_free(buf, size);
}

static void op_write(fuse_req_t req, fuse_ino_t ino, const char *buf, size_t size, off_t off,
		     struct fuse_file_info *fi)
{
	(void)ino;
	struct phifs *fs = FS(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	struct node *n = h->n;
	if (fs->opts.ro) {
		reply_err(req, -EROFS);
		return;
	}
	pthread_mutex_lock(&n->io);
	/* without writeback caching the filesystem implements O_APPEND itself */
	uint64_t o = (h->flags & O_APPEND) ? phi_cfile_size(n->cf) : (uint64_t)off;
	int r = phi_cfile_write(n->cf, buf, size, o);
	pthread_mutex_unlock(&n->io);
	if (r < 0)
		reply_err(req, r);
	else
		fuse_reply_write(req, size);
}

/* No flush: writes go straight to the store and durability is fsync's job, so close(2)
 * need not wait for a round trip (the kernel stops sending FLUSH after ENOSYS). */

static void op_fsync(fuse_req_t req, fuse_ino_t ino, int datasync, struct fuse_file_info *fi)
{
	(void)ino;
	struct phifs *fs = FS(req);
	struct handle *h = (struct handle *)(uintptr_t)fi->fh;
	pthread_mutex_lock(&h->n->io);
	int r = fs->s->ops->fsync(h->n->obj, datasync != 0);
	pthread_mutex_unlock(&h->n->io);
	reply_err(req, r >= 0 ? 0 : r);
}

static void op_release(fuse_req_t req, fuse_ino_t ino, struct fuse_file_info *fi)
{
	(void)ino;
	handle_drop(FS(req), (struct handle *)(uintptr_t)fi->fh);
	fuse_reply_err(req, 0);
}

static void op_statfs(fuse_req_t req, fuse_ino_t ino)
{
	(void)ino;
	struct phifs *fs = FS(req);
	struct statvfs sv;
	int r = fs->s->ops->statfs(fs->s, &sv);
	if (r < 0) {
		reply_err(req, r);
		return;
	}
	sv.f_namemax = PHI_NAME_PLAIN_MAX;
	fuse_reply_statfs(req, &sv);
}

/* The kernel caps FUSE readahead at min(bdi read_ahead_kb, max_readahead) when it
 * processes our INIT reply, and the bdi starts at 128 KiB. Raising the bdi first (it
 * exists once mount(2) returned) lets sequential reads arrive as 1 MiB requests. */
static void raise_readahead(const char *mountpoint)
{
	char line[4096], dev[32], mp[PATH_MAX], path[96];
	_cleanup_fclose_ FILE *f = mountpoint ? fopen("/proc/self/mountinfo", "re") : NULL;
	if (!f)
		return;
	while (fgets(line, sizeof(line), f)) {
		/* id parent major:minor root mountpoint ... (mountpoint octal-escaped) */
		if (sscanf(line, "%*s %*s %31s %*s %4095s", dev, mp) != 2 || strcmp(mp, mountpoint))
			continue;
		snprintf(path, sizeof(path), "/sys/class/bdi/%s/read_ahead_kb", dev);
		_cleanup_close_ int fd = open(path, O_WRONLY | O_CLOEXEC);
		if (fd >= 0)
			(void)!write(fd, "1024", 4);
	}
}

static void op_init(void *userdata, struct fuse_conn_info *conn)
{
	struct phifs *fs = userdata;
	raise_readahead(fs->opts.mountpoint);
	/* large requests: one store write per MiB instead of per 128 KiB */
	conn->max_write = 1u << 20;
	conn->max_readahead = 1u << 20;
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want &= ~FUSE_CAP_SPLICE_READ;
	conn->want &= ~FUSE_CAP_WRITEBACK_CACHE; /* every write is encrypted and stored at once */
	/* under access control every entry must be looked up through the policy */
	if (fs->opts.grants)
		conn->want &= ~(FUSE_CAP_READDIRPLUS | FUSE_CAP_READDIRPLUS_AUTO);
}

static const struct fuse_lowlevel_ops ops = {
	.init = op_init,
	.lookup = op_lookup,
	.forget = op_forget,
	.forget_multi = op_forget_multi,
	.getattr = op_getattr,
	.setattr = op_setattr,
	.readlink = op_readlink,
	.mknod = op_mknod,
	.mkdir = op_mkdir,
	.unlink = op_unlink,
	.rmdir = op_rmdir,
	.symlink = op_symlink,
	.rename = op_rename,
	.link = op_link,
	.open = op_open,
	.read = op_read,
	.write = op_write,
	.release = op_release,
	.fsync = op_fsync,
	.opendir = op_opendir,
	.readdir = op_readdir,
	.readdirplus = op_readdirplus,
	.releasedir = op_releasedir,
	.fsyncdir = op_fsyncdir,
	.statfs = op_statfs,
	.create = op_create,
};

const struct fuse_lowlevel_ops *phifs_ll_ops(void)
{
	return &ops;
}

int phifs_new(struct phi_store *s, struct phi_keyring *kr, const struct phifs_opts *opts,
	      struct phifs **ret)
{
	struct phifs *fs = calloc(1, sizeof(*fs));
	if (!fs)
		return -ENOMEM;
	fs->s = s;
	fs->kr = kr;
	fs->opts = *opts;
	if (opts->grants || opts->audit) {
		/* a second: as long as a grant change takes to reach the mount */
		int r = phi_identity_cache_new(1024, 1000000000ull, &fs->ids);
		if (r < 0) {
			free(fs);
			return r;
		}
	}
	fs->root.kind = K_ROOT;
	clock_gettime(CLOCK_REALTIME, &fs->mounted);
	fs->root.refs = 1;
	pthread_mutex_init(&fs->lock, NULL);
	pthread_mutex_init(&fs->root.io, NULL);
	pthread_mutex_init(&fs->lg_mu, NULL);
	phi_cond_init_mono(&fs->lg_cv);
	*ret = fs;
	return 0;
}

static void free_nodes(struct phifs *fs)
{
	for (size_t b = 0; b < NBUCKETS; b++) {
		struct node *n = fs->table[b];
		while (n) {
			struct node *next = n->hnext;
			if (n->kind != K_PATIENT) {
				detach(fs, n);
				free(n->al);
				free(n->pseudo_path);
				pthread_mutex_destroy(&n->io);
				free(n);
			}
			n = next;
		}
	}
}

void phifs_free(struct phifs *fs)
{
	if (!fs)
		return;
	phi_workq_stop(fs->held_q); /* before the nodes: a held request may still use them */
	lg_stop(fs);
	free_nodes(fs);
	while (fs->patients) {
		struct patient *p = fs->patients;
		fs->patients = p->next;
		phi_pkeys_free(p->pk);
		for (size_t i = 0; i < p->nold; i++)
			phi_pkeys_free(p->old[i]);
		free(p->old);
		if (p->node) {
			free(p->node->pseudo_path);
			pthread_mutex_destroy(&p->node->io);
			free(p->node);
		}
		free(p);
	}
	pthread_mutex_destroy(&fs->lock);
	pthread_cond_destroy(&fs->lg_cv);
	pthread_mutex_destroy(&fs->lg_mu);
	phi_identity_cache_free(fs->ids);
	free(fs);
}

void phifs_set_session(struct phifs *fs, struct fuse_session *se)
{
	fs->se = se;
}

void phifs_drain(struct phifs *fs)
{
	phi_audit_drain(fs->opts.audit);
	phi_workq_drain(fs->held_q);
}
