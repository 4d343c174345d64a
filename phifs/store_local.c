/* store_local.c: the local directory store backend.
 *
 * Every operation is relative to one O_PATH directory fd opened at
 * phi_store_local_open() and never changed afterwards, so the backend has no
 * shared mutable state. Paths are validated before they reach the kernel, and
 * no symbolic link is followed at any component: intermediate directories are
 * resolved with openat2(RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS) where the kernel
 * has it, otherwise one component at a time with O_NOFOLLOW; the last
 * component is handled by an *at() call that does not follow it either.
 * The one exception to "no shared mutable state" is the prefetch queue (struct
 * prefetch), which has its own lock and touches nothing else.
 */
#include <dirent.h>
#include <fcntl.h>
#include <limits.h>
#include <linux/openat2.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/syscall.h>

#include "store.h"
#include "util.h"

/* requests at least this large are streaming I/O (FUSE sends up to 1 MiB per request) */
#define STREAM_MIN (512u << 10)

/* Prefetch (local_prefetch_dir): hints wait in a bounded ring, and are dropped when it is
 * full, for a few threads started with the first hint; each hint costs a bounded amount of
 * reading (PREFETCH_ENTRIES entries of the listing). Threads, not one thread with readahead:
 * a directory's blocks can only be read by reading the directory (getdents blocks), so
 * the only way to have several directories' cold reads in flight is several readers. */
#define PREFETCH_THREADS 4
#define PREFETCH_QUEUE 256
#define PREFETCH_ENTRIES 4096

struct prefetch {
	pthread_mutex_t lock;
	pthread_cond_t more;
	char *q[PREFETCH_QUEUE]; /* "dir\0obj\0" (obj "" for none), owned; under lock */
	size_t head, len;        /* under lock */
	bool started, stop;      /* under lock */
	size_t nth;              /* threads running; written under lock before stop is set */
	pthread_t th[PREFETCH_THREADS];
};

/* O_PATH descriptors of patient directories ("data/<tag>"), direct-mapped on the tag, for
 * stats only. A reading open asks whether the kernel may keep its pages (a stat of the
 * object by path); through a kept descriptor that is one fstatat instead of openat2,
 * fstatat and close (64 threads of audited opens: 8% more opens/s). phifs never renames or
 * removes a patient directory; one an operator replaced by hand is seen within
 * PDIR_TTL_NS, the kernel's own attribute timeout. A slot in use (refs) is never
 * replaced: its descriptor cannot be closed under a caller. */
#define PDIR_CACHE 64
#define PDIR_TTL_NS 1000000000LL

struct pdir {
	char tag[PHI_STORE_NAME_MAX + 1]; /* "" unused */
	int fd;
	unsigned refs;
	int64_t until_ns;                 /* CLOCK_MONOTONIC_COARSE */
};

struct local_store {
	struct phi_store base; /* first: a struct phi_store * is a struct local_store * */
	int dirfd;             /* O_PATH|O_DIRECTORY, immutable after open */
	/* O_PATH|O_DIRECTORY of "data" when it existed at open, else -1; immutable after open.
	 * "data" is made once (phifs-key init) and never renamed (docs/format.md), so a stat
	 * of a patient's directory (every lookup of it) is one fstatat beneath it instead of
	 * openat2, fstatat and close. */
	int datafd;
	bool have_openat2;     /* immutable after open */
	struct prefetch pf;
	pthread_mutex_t pd_lock; /* guards pd */
	struct pdir pd[PDIR_CACHE];
};

struct phi_store_obj {
	int fd;
	int err; /* first write error, reported again by release; set atomically */
};

static struct local_store *to_local(struct phi_store *s)
{
	return (struct local_store *)s;
}

/* ---- path validation and resolution ---- */

static bool name_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/* 0 if path is a valid store path (or "" with allow_root), else -EINVAL. */
static int path_check(const char *path, bool allow_root)
{
	if (!path)
		return -EINVAL;
	size_t len = strnlen(path, PHI_STORE_PATH_MAX);
	if (len >= PHI_STORE_PATH_MAX)
		return -EINVAL;
	if (len == 0)
		return allow_root ? 0 : -EINVAL;

	const char *p = path;
	for (;;) {
		const char *e = p;
		while (*e && *e != '/') {
			if (!name_char_ok(*e))
				return -EINVAL;
			e++;
		}
		size_t n = (size_t)(e - p);
		if (n == 0 || n > PHI_STORE_NAME_MAX)
			return -EINVAL;
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return -EINVAL;
		if (!*e)
			return 0;
		p = e + 1;
	}
}

static int sys_openat2(int dfd, const char *path, int flags, mode_t mode)
{
	struct open_how how = {
		.flags = (uint64_t)(unsigned)flags,
		.mode = (flags & (O_CREAT | __O_TMPFILE)) ? (uint64_t)(mode & 07777) : 0,
		.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
	};
	long r;
	/* RESOLVE_BENEATH asks for a retry (EAGAIN) when a rename races the lookup;
	 * bounded, so a busy renamer cannot make us spin. */
	for (int tries = 0;; tries++) {
		r = syscall(SYS_openat2, dfd, path, &how, sizeof how);
		if (r >= 0 || errno != EAGAIN || tries >= 16)
			break;
	}
	return r < 0 ? phi_neg_errno() : (int)r;
}

/* Fallback walk for kernels (or sandboxes) without openat2. */
static int walk_openat(int root, const char *path, int flags, mode_t mode)
{
	_cleanup_close_ int cur = -1;
	int dfd = root;
	const char *p = path;
	char comp[PHI_STORE_NAME_MAX + 1];

	for (;;) {
		const char *slash = strchr(p, '/');
		if (!slash)
			break;
		size_t n = (size_t)(slash - p);
		if (n > PHI_STORE_NAME_MAX)
			return -EINVAL;
		memcpy(comp, p, n);
		comp[n] = 0;
		int fd = openat(dfd, comp, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0)
			return phi_neg_errno();
		phi_closep(&cur);
		cur = dfd = fd;
		p = slash + 1;
	}
	int fd = openat(dfd, p, flags, mode & 07777);
	return fd < 0 ? phi_neg_errno() : fd;
}

/* Open a validated path (or ".") beneath the root without following any symlink.
 * Returns an fd or -errno. */
static int open_beneath(const struct local_store *ls, const char *path, int flags, mode_t mode)
{
	flags |= O_CLOEXEC | O_NOFOLLOW;
	if (ls->have_openat2) {
		int fd = sys_openat2(ls->dirfd, path, flags, mode);
		/* ENOSYS: a seccomp filter installed after the store was opened */
		if (fd != -ENOSYS)
			return fd;
	}
	return walk_openat(ls->dirfd, path, flags, mode);
}

/* A path split into a parent directory fd and a last component. */
struct at_path {
	int dfd;          /* borrowed root fd or == owned */
	int owned;        /* closed by at_path_done() */
	const char *leaf; /* points into the caller's path (or ".") */
	struct local_store *ls; /* with pd: a reference on a cached patient directory */
	struct pdir *pd;
};

static void at_path_done(struct at_path *a)
{
	phi_closep(&a->owned);
	if (a->pd) {
		pthread_mutex_lock(&a->ls->pd_lock);
		a->pd->refs--;
		pthread_mutex_unlock(&a->ls->pd_lock);
		a->pd = NULL;
	}
}
#define _cleanup_at_path_ _cleanup_(at_path_done)

static int64_t coarse_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* The parent "data/<tag>" of path through the cache: 0 with *ret set (the parent's fd is
 * borrowed, a reference held until at_path_done), or -errno from opening it. */
static int pdir_get(struct local_store *ls, const char *tag, size_t n, const char *leaf,
		    struct at_path *ret)
{
	uint32_t h = 2166136261u; /* FNV-1a: a slot index, not a secret */
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)tag[i]) * 16777619u;
	struct pdir *d = &ls->pd[h % PDIR_CACHE];
	int64_t now = coarse_ns();
	pthread_mutex_lock(&ls->pd_lock);
	if (d->fd >= 0 && now < d->until_ns && !strncmp(d->tag, tag, n) && !d->tag[n]) {
		d->refs++;
		pthread_mutex_unlock(&ls->pd_lock);
		*ret = (struct at_path){ .dfd = d->fd, .owned = -1, .leaf = leaf, .ls = ls, .pd = d };
		return 0;
	}
	pthread_mutex_unlock(&ls->pd_lock);
	char name[PHI_STORE_NAME_MAX + 1];
	memcpy(name, tag, n); /* n <= PHI_STORE_NAME_MAX: path_check */
	name[n] = 0;
	int fd = openat(ls->datafd, name, O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return phi_neg_errno();
	pthread_mutex_lock(&ls->pd_lock);
	if (d->refs == 0) {
		phi_closep(&d->fd);
		memcpy(d->tag, name, n + 1);
		d->fd = fd;
		d->until_ns = now + PDIR_TTL_NS;
		d->refs = 1;
		pthread_mutex_unlock(&ls->pd_lock);
		*ret = (struct at_path){ .dfd = fd, .owned = -1, .leaf = leaf, .ls = ls, .pd = d };
		return 0;
	}
	pthread_mutex_unlock(&ls->pd_lock);
	*ret = (struct at_path){ .dfd = fd, .owned = fd, .leaf = leaf }; /* slot busy: uncached */
	return 0;
}

/* Resolve path's parent. The root ("" with allow_root) becomes (root, ".").
 * dir_flags: O_PATH for *at() calls, O_RDONLY where the parent is fsynced. */
static int at_path_get(const struct local_store *ls, const char *path, bool allow_root,
		       int dir_flags, struct at_path *ret)
{
	int r = path_check(path, allow_root);
	if (r < 0)
		return r;

	const char *slash = strrchr(path, '/');
	if (!slash && dir_flags == O_PATH) {
		*ret = (struct at_path){ .dfd = ls->dirfd, .owned = -1, .leaf = *path ? path : "." };
		return 0;
	}

	char parent[PHI_STORE_PATH_MAX];
	size_t n = slash ? (size_t)(slash - path) : 0;
	if (n == 4 && !memcmp(path, "data", 4) && ls->datafd >= 0 && dir_flags == O_PATH) {
		*ret = (struct at_path){ .dfd = ls->datafd, .owned = -1, .leaf = slash + 1 };
		return 0;
	}
	if (n) {
		memcpy(parent, path, n);
		parent[n] = 0;
	} else {
		parent[0] = '.';
		parent[1] = 0;
	}
	int fd = open_beneath(ls, parent, dir_flags | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	*ret = (struct at_path){ .dfd = fd, .owned = fd,
				 .leaf = slash ? slash + 1 : (*path ? path : ".") };
	return 0;
}

/* ---- namespace operations ---- */

static void stat_to_store(const struct stat *st, struct phi_store_stat *ret)
{
	*ret = (struct phi_store_stat){
		.ino = (uint64_t)st->st_ino,
		.mode = (uint32_t)st->st_mode,
		.uid = (uint32_t)st->st_uid,
		.gid = (uint32_t)st->st_gid,
		.nlink = (uint32_t)st->st_nlink,
		.size = st->st_size > 0 ? (uint64_t)st->st_size : 0,
		.atime = st->st_atim,
		.mtime = st->st_mtim,
		.ctime = st->st_ctim,
	};
}

/* at_path_get for a stat only: the parent "data/<tag>" is the kept descriptor (pdir_get).
 * Whatever changes the store or reads content resolves its path afresh, so a directory
 * replaced by hand can at most show old attributes for PDIR_TTL_NS. */
static int at_path_stat(struct local_store *ls, const char *path, struct at_path *ret)
{
	int r = path_check(path, true);
	if (r < 0)
		return r;
	const char *slash = strrchr(path, '/');
	size_t n = slash ? (size_t)(slash - path) : 0;
	if (n > 5 && !memcmp(path, "data/", 5) && !memchr(path + 5, '/', n - 5) && ls->datafd >= 0)
		return pdir_get(ls, path + 5, n - 5, slash + 1, ret);
	return at_path_get(ls, path, true, O_PATH, ret);
}

static int local_getattr(struct phi_store *s, const char *path, struct phi_store_stat *ret)
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_stat(to_local(s), path, &a);
	if (r < 0)
		return r;
	struct stat st;
	if (fstatat(a.dfd, a.leaf, &st, AT_SYMLINK_NOFOLLOW) < 0)
		return phi_neg_errno();
	stat_to_store(&st, ret);
	return 0;
}

static int local_mkdir(struct phi_store *s, const char *path, uint32_t mode)
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, false, O_PATH, &a);
	if (r < 0)
		return r;
	return RET_NERRNO(mkdirat(a.dfd, a.leaf, (mode_t)(mode & 07777)));
}

static int local_rmdir(struct phi_store *s, const char *path)
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, false, O_PATH, &a);
	if (r < 0)
		return r;
	return RET_NERRNO(unlinkat(a.dfd, a.leaf, AT_REMOVEDIR));
}

static int local_unlink(struct phi_store *s, const char *path)
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, false, O_PATH, &a);
	if (r < 0)
		return r;
	return RET_NERRNO(unlinkat(a.dfd, a.leaf, 0));
}

static int local_unlink_held(struct phi_store *s, const char *path, struct phi_store_stat *ret,
			     struct phi_store_obj **ret_held)
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, false, O_PATH, &a);
	if (r < 0)
		return r;
	/* an O_PATH reference keeps the inode, and so its blocks, past the unlinkat: the
	 * truncation (and, under -o discard, the device's discard) runs at its close */
	_cleanup_close_ int fd = openat(a.dfd, a.leaf, O_PATH | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0)
		return phi_neg_errno();
	struct stat st;
	if (fstat(fd, &st) < 0)
		return phi_neg_errno();
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	_cleanup_free_ struct phi_store_obj *o = calloc(1, sizeof(*o));
	if (!o)
		return -ENOMEM;
	if (unlinkat(a.dfd, a.leaf, 0) < 0)
		return phi_neg_errno();
	stat_to_store(&st, ret);
	o->fd = TAKE_FD(fd);
	*ret_held = TAKE_PTR(o);
	return 0;
}

static int local_rename(struct phi_store *s, const char *from, const char *to, unsigned flags)
{
	if (flags != 0 && flags != RENAME_NOREPLACE && flags != RENAME_EXCHANGE)
		return -EINVAL;
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	_cleanup_at_path_ struct at_path b = { .owned = -1 };
	int r = at_path_get(to_local(s), from, false, O_PATH, &a);
	if (r < 0)
		return r;
	r = at_path_get(to_local(s), to, false, O_PATH, &b);
	if (r < 0)
		return r;
	return RET_NERRNO(renameat2(a.dfd, a.leaf, b.dfd, b.leaf, flags));
}

static int local_link(struct phi_store *s, const char *from, const char *to)
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	_cleanup_at_path_ struct at_path b = { .owned = -1 };
	int r = at_path_get(to_local(s), from, false, O_PATH, &a);
	if (r < 0)
		return r;
	r = at_path_get(to_local(s), to, false, O_PATH, &b);
	if (r < 0)
		return r;
	/* flags 0: a symlink at from is linked itself, never followed */
	return RET_NERRNO(linkat(a.dfd, a.leaf, b.dfd, b.leaf, 0));
}

static int local_symlink(struct phi_store *s, const char *target, const char *path)
{
	if (!target || !*target)
		return -EINVAL;
	if (strnlen(target, PHI_STORE_PATH_MAX) >= PHI_STORE_PATH_MAX)
		return -ENAMETOOLONG;
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, false, O_PATH, &a);
	if (r < 0)
		return r;
	return RET_NERRNO(symlinkat(target, a.dfd, a.leaf));
}

static int local_readlink(struct phi_store *s, const char *path, char *buf, size_t size,
			  size_t *ret_len)
{
	if (!buf || size == 0)
		return -EINVAL;
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, false, O_PATH, &a);
	if (r < 0)
		return r;
	ssize_t n = readlinkat(a.dfd, a.leaf, buf, size);
	if (n < 0)
		return phi_neg_errno();
	if ((size_t)n >= size)
		return -ENAMETOOLONG;
	buf[n] = 0;
	*ret_len = (size_t)n;
	return 0;
}

static int local_chmod(struct phi_store *s, const char *path, uint32_t mode)
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, true, O_PATH, &a);
	if (r < 0)
		return r;
	/* glibc implements AT_SYMLINK_NOFOLLOW (fchmodat2 on glibc >= 2.39, before
	 * that O_PATH + /proc/self/fd, so /proc must be mounted); a symlink gives
	 * -EOPNOTSUPP, which is what Linux does for symlinks. */
	return RET_NERRNO(fchmodat(a.dfd, a.leaf, (mode_t)(mode & 07777), AT_SYMLINK_NOFOLLOW));
}

static int local_chown(struct phi_store *s, const char *path, uint32_t uid, uint32_t gid)
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, true, O_PATH, &a);
	if (r < 0)
		return r;
	return RET_NERRNO(fchownat(a.dfd, a.leaf, (uid_t)uid, (gid_t)gid, AT_SYMLINK_NOFOLLOW));
}

static int local_utimens(struct phi_store *s, const char *path, const struct timespec tv[2])
{
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, true, O_PATH, &a);
	if (r < 0)
		return r;
	return RET_NERRNO(utimensat(a.dfd, a.leaf, tv, AT_SYMLINK_NOFOLLOW));
}

static void closedirp(DIR **d)
{
	if (*d)
		(void)closedir(*d);
	*d = NULL;
}

static int local_readdir(struct phi_store *s, const char *path, phi_store_dirent_fn fn, void *ctx)
{
	struct local_store *ls = to_local(s);
	if (!fn)
		return -EINVAL;
	int r = path_check(path, true);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open_beneath(ls, *path ? path : ".", O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	_cleanup_(closedirp) DIR *d = fdopendir(fd);
	if (!d)
		return phi_neg_errno();
	int dfd = TAKE_FD(fd); /* owned by d now */

	for (;;) {
		errno = 0;
		struct dirent *de = readdir(d);
		if (!de)
			return errno ? -errno : 0;
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		uint32_t type = de->d_type;
		if (type == DT_UNKNOWN) {
			struct stat st;
			if (fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0)
				type = IFTODT(st.st_mode);
		}
		r = fn(ctx, de->d_name, type);
		if (r < 0)
			return r;
		if (r > 0)
			return 0;
	}
}

static int local_getattr_in(struct phi_store *s, const char *dir, const char *const *names,
			    size_t n, struct phi_store_stat *ret, int *err)
{
	int r = path_check(dir, true);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open_beneath(to_local(s), *dir ? dir : ".", O_PATH | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	for (size_t i = 0; i < n; i++) {
		struct stat st;
		const char *nm = names[i];
		/* one component beneath dir: never a path, never the directory or its parent */
		if (!*nm || strchr(nm, '/') || !strcmp(nm, ".") || !strcmp(nm, "..") ||
		    strnlen(nm, PHI_STORE_NAME_MAX + 1) > PHI_STORE_NAME_MAX)
			err[i] = -EINVAL;
		else if (fstatat(fd, nm, &st, AT_SYMLINK_NOFOLLOW) < 0)
			err[i] = phi_neg_errno();
		else
			err[i] = 0;
		if (!err[i])
			stat_to_store(&st, &ret[i]);
	}
	return 0;
}

/* ---- prefetch ---- */

/* Warm the kernel's caches for one hint: the directory's listing (its blocks and those of
 * the inodes of its first entries, through the lookups the listing makes) and the content
 * of obj. Errors are ignored: a hint that cannot be served costs its caller nothing. */
static void prefetch_one(const struct local_store *ls, const char *dir, const char *obj)
{
	if (path_check(dir, false) < 0)
		return;
	_cleanup_close_ int fd = open_beneath(ls, dir, O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return;
	if (*obj && !strchr(obj, '/') && path_check(obj, false) == 0) {
		_cleanup_close_ int ofd =
			openat(fd, obj, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC);
		/* asynchronous: its read is in flight while the listing is read below */
		if (ofd >= 0)
			(void)posix_fadvise(ofd, 0, 0, POSIX_FADV_WILLNEED);
	}
	_cleanup_(closedirp) DIR *d = fdopendir(fd);
	if (!d)
		return;
	(void)TAKE_FD(fd); /* owned by d now */
	for (size_t i = 0; i < PREFETCH_ENTRIES && readdir(d); i++)
		;
}

static void *prefetch_run(void *arg)
{
	struct local_store *ls = arg;
	struct prefetch *pf = &ls->pf;
	pthread_mutex_lock(&pf->lock);
	for (;;) {
		while (!pf->stop && !pf->len)
			pthread_cond_wait(&pf->more, &pf->lock);
		if (pf->stop)
			break;
		_cleanup_free_ char *h = pf->q[pf->head];
		pf->q[pf->head] = NULL;
		pf->head = (pf->head + 1) % PREFETCH_QUEUE;
		pf->len--;
		pthread_mutex_unlock(&pf->lock);
		prefetch_one(ls, h, h + strlen(h) + 1);
		pthread_mutex_lock(&pf->lock);
	}
	pthread_mutex_unlock(&pf->lock);
	return NULL;
}

static void local_prefetch_dir(struct phi_store *s, const char *dir, const char *obj)
{
	struct local_store *ls = to_local(s);
	struct prefetch *pf = &ls->pf;
	size_t dl = strnlen(dir, PHI_STORE_PATH_MAX), ol = obj ? strnlen(obj, PHI_STORE_NAME_MAX + 1) : 0;
	if (dl >= PHI_STORE_PATH_MAX || ol > PHI_STORE_NAME_MAX)
		return;
	char *h = malloc(dl + ol + 2);
	if (!h)
		return;
	memcpy(h, dir, dl + 1);
	memcpy(h + dl + 1, obj ? obj : "", ol + 1);
	pthread_mutex_lock(&pf->lock);
	if (!pf->started) {
		/* started with the first hint: a mount that never walks a tree never has them,
		 * and they start under the mount's final identity (after -o run_as) */
		pf->started = true;
		while (pf->nth < PREFETCH_THREADS &&
		       pthread_create(&pf->th[pf->nth], NULL, prefetch_run, ls) == 0)
			pf->nth++;
	}
	if (pf->nth && pf->len < PREFETCH_QUEUE) {
		pf->q[(pf->head + pf->len) % PREFETCH_QUEUE] = TAKE_PTR(h);
		pf->len++;
		pthread_cond_signal(&pf->more);
	}
	pthread_mutex_unlock(&pf->lock);
	free(h); /* dropped: no thread, or the queue is full */
}

/* Stop the prefetch threads (each finishes the hint it has) and drop waiting hints. */
static void prefetch_stop(struct prefetch *pf)
{
	pthread_mutex_lock(&pf->lock);
	pf->stop = true;
	pthread_cond_broadcast(&pf->more);
	pthread_mutex_unlock(&pf->lock);
	for (size_t i = 0; i < pf->nth; i++)
		pthread_join(pf->th[i], NULL);
	for (; pf->len; pf->len--, pf->head = (pf->head + 1) % PREFETCH_QUEUE)
		free(pf->q[pf->head]);
	pthread_cond_destroy(&pf->more);
	pthread_mutex_destroy(&pf->lock);
}

static int local_statfs(struct phi_store *s, struct statvfs *ret)
{
	struct statvfs sv;
	if (fstatvfs(to_local(s)->dirfd, &sv) < 0)
		return phi_neg_errno();
	*ret = sv;
	return 0;
}

static int local_fsync_dir(struct phi_store *s, const char *path)
{
	int r = path_check(path, true);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open_beneath(to_local(s), *path ? path : ".",
					      O_RDONLY | O_DIRECTORY, 0);
	if (fd < 0)
		return fd;
	return RET_NERRNO(fsync(fd));
}

/* ---- objects ---- */

static int read_full(int fd, void *buf, size_t len, uint64_t off, size_t *ret_n)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pread(fd, (uint8_t *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return phi_neg_errno();
		}
		if (n == 0)
			break;
		done += (size_t)n;
	}
	*ret_n = done;
	return 0;
}

static int write_full(int fd, const void *buf, size_t len, uint64_t off)
{
	size_t done = 0;
	while (done < len) {
		ssize_t n = pwrite(fd, (const uint8_t *)buf + done, len - done, (off_t)(off + done));
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return phi_neg_errno();
		}
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return 0;
}

/* Objects are regular files; anything else in the store is not opened as one. */
static int check_regular(int fd, struct stat *ret)
{
	struct stat st;
	if (fstat(fd, &st) < 0)
		return phi_neg_errno();
	if (S_ISDIR(st.st_mode))
		return -EISDIR;
	if (!S_ISREG(st.st_mode))
		return -EINVAL;
	if (ret)
		*ret = st;
	return 0;
}

static int local_open(struct phi_store *s, const char *path, int flags, uint32_t mode,
		      struct phi_store_obj **ret)
{
	int r = path_check(path, false);
	if (r < 0)
		return r;
	int acc = flags & O_ACCMODE;
	if (acc != O_RDONLY && acc != O_WRONLY && acc != O_RDWR)
		return -EINVAL;
	/* O_NONBLOCK: a FIFO planted in the store must not hang the caller. */
	int oflags = acc | (flags & (O_CREAT | O_EXCL | O_TRUNC)) | O_NONBLOCK;

	_cleanup_close_ int fd = open_beneath(to_local(s), path, oflags, (mode_t)mode);
	if (fd < 0)
		return fd;
	r = check_regular(fd, NULL);
	if (r < 0)
		return r;
	struct phi_store_obj *o = malloc(sizeof *o);
	if (!o)
		return -ENOMEM;
	*o = (struct phi_store_obj){ .fd = TAKE_FD(fd), .err = 0 };
	*ret = o;
	return 0;
}

static void obj_set_err(struct phi_store_obj *o, int r)
{
	int expected = 0;
	(void)__atomic_compare_exchange_n(&o->err, &expected, r, false, __ATOMIC_RELAXED,
					  __ATOMIC_RELAXED);
}

static int local_pread(struct phi_store_obj *o, void *buf, size_t len, uint64_t off,
		       size_t *ret_n)
{
	if (off > INT64_MAX || len > (size_t)SSIZE_MAX)
		return -EINVAL;
	if (len > INT64_MAX - off)
		len = (size_t)(INT64_MAX - off);
	int r = read_full(o->fd, buf, len, off, ret_n);
	if (r >= 0 && len >= STREAM_MIN && *ret_n == len)
		/* streaming reads: ask for the next two chunks now, so the disk reads them while
		 * this one is decrypted and handed to the kernel. Advisory and asynchronous. */
		(void)posix_fadvise(o->fd, (off_t)(off + len), (off_t)(2 * len), POSIX_FADV_WILLNEED);
	return r;
}

static int local_pwrite(struct phi_store_obj *o, const void *buf, size_t len, uint64_t off)
{
	if (off > INT64_MAX || len > (size_t)SSIZE_MAX)
		return -EINVAL;
	if (len > INT64_MAX - off)
		return -EFBIG;
	int r = write_full(o->fd, buf, len, off);
	if (r < 0)
		obj_set_err(o, r);
	else if (len >= STREAM_MIN)
		/* streaming writes: start writeback of this range now, so the disk works while
		 * the next blocks are encrypted and a later fsync has little left to wait for.
		 * Asynchronous and advisory: an error here changes nothing. */
		(void)sync_file_range(o->fd, (off_t)off, (off_t)len, SYNC_FILE_RANGE_WRITE);
	return r;
}

static int local_truncate(struct phi_store_obj *o, uint64_t size)
{
	if (size > INT64_MAX)
		return -EINVAL;
	return RET_NERRNO(ftruncate(o->fd, (off_t)size));
}

static int local_size(struct phi_store_obj *o, uint64_t *ret)
{
	struct stat st;
	if (fstat(o->fd, &st) < 0)
		return phi_neg_errno();
	*ret = st.st_size > 0 ? (uint64_t)st.st_size : 0;
	return 0;
}

static int local_fsync(struct phi_store_obj *o, bool datasync)
{
	int r = RET_NERRNO(datasync ? fdatasync(o->fd) : fsync(o->fd));
	if (r < 0)
		obj_set_err(o, r);
	return r;
}

static int local_release(struct phi_store_obj *o)
{
	if (!o)
		return 0;
	/* close() may report a deferred write error; EINTR still closed the fd on Linux. */
	int r = close(o->fd) < 0 && errno != EINTR ? phi_neg_errno() : 0;
	int err = __atomic_load_n(&o->err, __ATOMIC_RELAXED);
	free(o);
	return err < 0 ? err : r;
}

/* ---- small whole objects ---- */

static int local_get(struct phi_store *s, const char *path, void *buf, size_t max,
		     size_t *ret_len)
{
	if (!buf && max)
		return -EINVAL;
	int r = path_check(path, false);
	if (r < 0)
		return r;
	_cleanup_close_ int fd = open_beneath(to_local(s), path, O_RDONLY | O_NONBLOCK, 0);
	if (fd < 0)
		return fd;
	struct stat st;
	r = check_regular(fd, &st);
	if (r < 0)
		return r;
	if ((uint64_t)st.st_size > max)
		return -EFBIG;

	size_t n;
	r = read_full(fd, buf, max, 0, &n);
	if (r < 0)
		return r;
	if (n == max) {
		/* the object may have grown since fstat() */
		uint8_t extra;
		size_t m;
		r = read_full(fd, &extra, 1, max, &m);
		if (r < 0)
			return r;
		if (m)
			return -EFBIG;
	}
	*ret_len = n;
	return 0;
}

static int tmp_name(char *buf, size_t size)
{
	uint8_t rnd[8];
	size_t got = 0;
	while (got < sizeof rnd) {
		ssize_t n = getrandom(rnd + got, sizeof rnd - got, 0);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return phi_neg_errno();
		}
		got += (size_t)n;
	}
	int n = snprintf(buf, size, ".tmp.%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
			 rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	return n > 0 && (size_t)n < size ? 0 : -EINVAL;
}

/* Temp file in the same directory, written and fsynced, renamed over the target,
 * then the directory fsynced: readers see the old or the new object, whole. */
static int local_put(struct phi_store *s, const char *path, const void *buf, size_t len)
{
	if (!buf && len)
		return -EINVAL;
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, false, O_RDONLY, &a);
	if (r < 0)
		return r;

	char tmp[32];
	_cleanup_close_ int fd = -1;
	for (int tries = 0; fd < 0; tries++) {
		r = tmp_name(tmp, sizeof tmp);
		if (r < 0)
			return r;
		fd = openat(a.dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
		if (fd < 0 && (errno != EEXIST || tries >= 16))
			return phi_neg_errno();
	}

	r = write_full(fd, buf, len, 0);
	if (r >= 0)
		r = RET_NERRNO(fsync(fd));
	if (r >= 0) {
		int fdc = TAKE_FD(fd);
		r = RET_NERRNO(close(fdc));
	}
	if (r >= 0)
		r = RET_NERRNO(renameat(a.dfd, tmp, a.dfd, a.leaf));
	if (r < 0) {
		(void)unlinkat(a.dfd, tmp, 0);
		return r;
	}
	return RET_NERRNO(fsync(a.dfd));
}

/* Name a new object only once it holds its initial content: an O_TMPFILE inode is written,
 * then linked in (linkat fails with EEXIST, which gives O_EXCL). Without O_TMPFILE (some
 * filesystems), a hidden temp name is renamed with RENAME_NOREPLACE; a crash can then leave
 * a ".tmp.*" entry, which is never a user entry. Either way a kill -9 cannot leave an empty
 * or half-written object under the user-visible name. */
static int local_create(struct phi_store *s, const char *path, uint32_t mode, uint32_t uid,
			uint32_t gid, const void *init, size_t len, struct phi_store_obj **ret)
{
	if (!init && len)
		return -EINVAL;
	_cleanup_at_path_ struct at_path a = { .owned = -1 };
	int r = at_path_get(to_local(s), path, false, O_PATH, &a);
	if (r < 0)
		return r;
	mode &= 07777;
	char tmp[32] = "";
	_cleanup_close_ int fd = openat(a.dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, (mode_t)mode);
	if (fd < 0) {
		if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
			return phi_neg_errno();
		for (int tries = 0; fd < 0; tries++) {
			r = tmp_name(tmp, sizeof tmp);
			if (r < 0)
				return r;
			fd = openat(a.dfd, tmp, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
				    (mode_t)mode);
			if (fd < 0 && (errno != EEXIST || tries >= 16))
				return phi_neg_errno();
		}
	}
	r = write_full(fd, init, len, 0);
	if (r >= 0 && (uid != (uint32_t)-1 || gid != (uint32_t)-1) &&
	    fchown(fd, (uid_t)uid, (gid_t)gid) < 0 && errno != EPERM)
		r = phi_neg_errno(); /* EPERM: an unprivileged daemon cannot give files away; the file stays its own */
	if (r >= 0 && tmp[0]) {
		r = RET_NERRNO(renameat2(a.dfd, tmp, a.dfd, a.leaf, RENAME_NOREPLACE));
	} else if (r >= 0) {
		char proc[64];
		(void)snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
		r = RET_NERRNO(linkat(AT_FDCWD, proc, a.dfd, a.leaf, AT_SYMLINK_FOLLOW));
		if (r == -ENOENT) { /* no /proc? AT_EMPTY_PATH needs CAP_DAC_READ_SEARCH */
			int r2 = RET_NERRNO(linkat(fd, "", a.dfd, a.leaf, AT_EMPTY_PATH));
			if (r2 != -EPERM)
				r = r2;
		}
	}
	if (r < 0) {
		if (tmp[0])
			(void)unlinkat(a.dfd, tmp, 0);
		return r;
	}
	struct phi_store_obj *o = malloc(sizeof *o);
	if (!o)
		return -ENOMEM; /* the object exists, with its content: as after a crash */
	*o = (struct phi_store_obj){ .fd = TAKE_FD(fd), .err = 0 };
	*ret = o;
	return 0;
}

/* ---- open / close ---- */

static void local_close(struct phi_store *s)
{
	struct local_store *ls = to_local(s);
	if (!ls)
		return;
	prefetch_stop(&ls->pf);
	phi_closep(&ls->dirfd);
	phi_closep(&ls->datafd);
	for (size_t i = 0; i < PDIR_CACHE; i++)
		phi_closep(&ls->pd[i].fd);
	pthread_mutex_destroy(&ls->pd_lock);
	free(ls);
}

static const struct phi_store_ops local_ops = {
	.scheme = "file",
	.stat_tracks_content = true,
	.close = local_close,
	.getattr = local_getattr,
	.mkdir = local_mkdir,
	.rmdir = local_rmdir,
	.unlink = local_unlink,
	.unlink_held = local_unlink_held,
	.rename = local_rename,
	.link = local_link,
	.symlink = local_symlink,
	.readlink = local_readlink,
	.chmod = local_chmod,
	.chown = local_chown,
	.utimens = local_utimens,
	.readdir = local_readdir,
	.getattr_in = local_getattr_in,
	.prefetch_dir = local_prefetch_dir,
	.statfs = local_statfs,
	.open = local_open,
	.create = local_create,
	.pread = local_pread,
	.pwrite = local_pwrite,
	.truncate = local_truncate,
	.size = local_size,
	.fsync = local_fsync,
	.release = local_release,
	.get = local_get,
	.put = local_put,
	.fsync_dir = local_fsync_dir,
};

int phi_store_local_open(const char *root, struct phi_store **ret)
{
	if (!root || !*root || !ret)
		return -EINVAL;
	_cleanup_close_ int dirfd = open(root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (dirfd < 0)
		return phi_neg_errno();

	/* Probe once; the answer never changes for this store. */
	bool have_openat2 = false;
	struct open_how how = { .flags = O_PATH | O_DIRECTORY | O_CLOEXEC,
				.resolve = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS };
	long pfd = syscall(SYS_openat2, dirfd, ".", &how, sizeof how);
	if (pfd >= 0) {
		have_openat2 = true;
		(void)close((int)pfd);
	}

	struct local_store *ls = malloc(sizeof *ls);
	if (!ls)
		return -ENOMEM;
	*ls = (struct local_store){
		.base = { .ops = &local_ops },
		.dirfd = TAKE_FD(dirfd),
		.datafd = -1,
		.have_openat2 = have_openat2,
	};
	int dfd = open_beneath(ls, "data", O_PATH | O_DIRECTORY, 0);
	ls->datafd = dfd >= 0 ? dfd : -1; /* none yet (a store before init): paths as usual */
	pthread_mutex_init(&ls->pf.lock, NULL);
	pthread_cond_init(&ls->pf.more, NULL);
	pthread_mutex_init(&ls->pd_lock, NULL);
	for (size_t i = 0; i < PDIR_CACHE; i++)
		ls->pd[i].fd = -1;
	*ret = &ls->base;
	return 0;
}
