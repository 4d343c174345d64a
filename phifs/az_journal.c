/* az_journal.c: the Azure backend's local write journal (see az_journal.h). It holds
 * ciphertext only: the store is given encrypted blocks and encrypted names. */
#include "az_journal.h"

#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "util.h"

#define HDR_LEN 40
#define REC_LEN 40
#define REC_MAGIC 0x504a5231u
static const char MAGIC[8] = { 'P', 'H', 'I', 'A', 'Z', 'J', 'N', 'L' };

struct phi_ajd {
	int root_fd;
	char id[128];
	int store_fd; /* root/<store id> */
	int mount_fd; /* root/<store id>/m-<random>: this mount's journals */
	int lock_fd;  /* its lock file, flocked while we live */
	char mname[40];
	uint64_t max, bytes; /* bytes: atomic */
	/* Emptied journal files kept for the next object: a create and an unlink per
	 * committed object cost a small file's write about 0.35 ms (tests/azure/bench.sh,
	 * 1,000 small files), a truncate to zero less. An empty file is nothing to replay. */
	pthread_mutex_t pool_lock;
	struct {
		int fd;
		char fname[40];
	} pool[16];
	size_t npool;
};

struct phi_aj {
	struct phi_ajd *d;
	int fd;
	char fname[40];
	uint64_t len, seq;
};

static void put32(uint8_t *p, uint32_t v)
{
	for (int i = 0; i < 4; i++)
		p[i] = (uint8_t)(v >> (24 - 8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
	put32(p, (uint32_t)(v >> 32));
	put32(p + 4, (uint32_t)v);
}

static uint32_t fnv1a32(const uint8_t *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ p[i]) * 16777619u;
	return h;
}

static void rand_name(const char *pfx, char *out, size_t size)
{
	uint8_t r[12];
	char hex[sizeof r * 2 + 1];
	randombytes_buf(r, sizeof r);
	sodium_bin2hex(hex, sizeof hex, r, sizeof r);
	(void)snprintf(out, size, "%s%s", pfx, hex);
}

/* ---- parser ---- */

void phi_aj_parsed_free(struct phi_aj_parsed *p)
{
	if (!p)
		return;
	free(p->recs);
	p->recs = NULL;
	p->nrecs = 0;
}

int phi_aj_parse(const uint8_t *buf, size_t len, struct phi_aj_parsed *ret)
{
	struct phi_cur c = phi_cur_init(buf, len);
	uint8_t magic[8];
	uint32_t version = 0, nl = 0, el = 0, zero = 0;
	uint64_t gen = 0, size = 0;
	if (phi_cur_bytes(&c, magic, sizeof magic) < 0 || memcmp(magic, MAGIC, sizeof magic) ||
	    phi_cur_u32be(&c, &version) < 0 || version != PHI_AJ_VERSION ||
	    phi_cur_u32be(&c, &nl) < 0 || phi_cur_u32be(&c, &el) < 0 ||
	    phi_cur_u32be(&c, &zero) < 0 || phi_cur_u64be(&c, &gen) < 0 ||
	    phi_cur_u64be(&c, &size) < 0)
		return -EBADMSG;
	if (!nl || nl > PHI_AJ_NAME_MAX || el > PHI_AJ_ETAG_MAX || zero)
		return -EBADMSG;
	const uint8_t *name, *etag;
	if (phi_cur_ref(&c, &name, nl) < 0 || phi_cur_ref(&c, &etag, el) < 0 ||
	    memchr(name, 0, nl) || memchr(etag, 0, el))
		return -EBADMSG;

	/* records: count first (bounded by the buffer), then fill */
	struct phi_aj_rec *recs = NULL;
	size_t n = 0, cap = 0;
	bool torn = false;
	for (uint64_t seq = 0;; seq++) {
		if (phi_cur_left(&c) == 0)
			break;
		size_t at = c.off;
		uint32_t m = 0, check = 0, pad = 0;
		uint8_t type = 0, z[3];
		uint64_t rs = 0, off = 0, rl = 0;
		const uint8_t *data = NULL;
		if (phi_cur_u32be(&c, &m) < 0 || phi_cur_u8(&c, &type) < 0 ||
		    phi_cur_bytes(&c, z, sizeof z) < 0 || phi_cur_u64be(&c, &rs) < 0 ||
		    phi_cur_u64be(&c, &off) < 0 || phi_cur_u64be(&c, &rl) < 0 ||
		    phi_cur_u32be(&c, &check) < 0 || phi_cur_u32be(&c, &pad) < 0 || m != REC_MAGIC ||
		    z[0] || z[1] || z[2] || pad ||
		    check != fnv1a32(buf + at, REC_LEN - 8) || rs != seq ||
		    (type != PHI_AJ_WRITE && type != PHI_AJ_TRUNCATE && type != PHI_AJ_GEN) ||
		    (type != PHI_AJ_WRITE && rl) || rl > phi_cur_left(&c) ||
		    (type == PHI_AJ_WRITE && (!rl || off > INT64_MAX || rl > INT64_MAX - off)) ||
		    (type == PHI_AJ_TRUNCATE && off > INT64_MAX) ||
		    phi_cur_ref(&c, &data, (size_t)rl) < 0) {
			torn = true;
			break;
		}
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			struct phi_aj_rec *t = realloc(recs, nc * sizeof *t);
			if (!t) {
				free(recs);
				return -ENOMEM;
			}
			recs = t;
			cap = nc;
		}
		recs[n++] = (struct phi_aj_rec){ .type = (enum phi_aj_type)type, .off = off, .len = rl,
						 .data = type == PHI_AJ_WRITE ? data : NULL };
	}
	memcpy(ret->name, name, nl);
	ret->name[nl] = 0;
	memcpy(ret->etag, etag, el);
	ret->etag[el] = 0;
	ret->base_gen = gen;
	ret->base_size = size;
	ret->recs = recs;
	ret->nrecs = n;
	ret->torn = torn;
	return 0;
}

/* ---- writer ---- */

static int mkdir_at(int dfd, const char *name)
{
	if (mkdirat(dfd, name, 0700) < 0 && errno != EEXIST)
		return -errno;
	return 0;
}

int phi_ajd_open(const char *root, const char *store_id, uint64_t max_bytes, struct phi_ajd **ret)
{
	if (!root || !*root || !store_id || !*store_id || strchr(store_id, '/'))
		return -EINVAL;
	/* the root and its missing parents (mkdir -p); ours below it are 0700 */
	char tmp[PATH_MAX];
	if (snprintf(tmp, sizeof tmp, "%s", root) >= (int)sizeof tmp)
		return -ENAMETOOLONG;
	for (char *q = tmp + 1;; q++) {
		if (*q && *q != '/')
			continue;
		char c = *q;
		*q = 0;
		if (mkdir(tmp, 0700) < 0 && errno != EEXIST)
			return -errno;
		if (!c)
			break;
		*q = c;
	}
	_cleanup_close_ int rfd = open(root, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rfd < 0)
		return -errno;
	int r = mkdir_at(rfd, store_id);
	if (r < 0)
		return r;
	_cleanup_close_ int sfd = openat(rfd, store_id, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (sfd < 0)
		return -errno;
	struct phi_ajd *d = calloc(1, sizeof *d);
	if (!d)
		return -ENOMEM;
	d->store_fd = d->mount_fd = d->lock_fd = -1;
	d->max = max_bytes;
	pthread_mutex_init(&d->pool_lock, NULL);
	if (snprintf(d->id, sizeof d->id, "%s", store_id) >= (int)sizeof d->id) {
		free(d);
		return -ENAMETOOLONG;
	}
	rand_name("m-", d->mname, sizeof d->mname);
	if (mkdirat(sfd, d->mname, 0700) < 0) {
		r = -errno;
		free(d);
		return r;
	}
	d->mount_fd = openat(sfd, d->mname, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (d->mount_fd >= 0)
		d->lock_fd = openat(d->mount_fd, "lock", O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW,
				    0600);
	if (d->lock_fd < 0 || flock(d->lock_fd, LOCK_EX | LOCK_NB) < 0) {
		r = -errno;
		if (d->lock_fd >= 0) {
			close(d->lock_fd);
			(void)unlinkat(d->mount_fd, "lock", 0);
		}
		if (d->mount_fd >= 0)
			close(d->mount_fd);
		(void)unlinkat(sfd, d->mname, AT_REMOVEDIR);
		free(d);
		return r;
	}
	d->store_fd = TAKE_FD(sfd);
	d->root_fd = TAKE_FD(rfd);
	*ret = d;
	return 0;
}

/* Does directory fd hold a journal? */
static bool has_journal(int fd)
{
	int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dup_fd < 0)
		return true; /* cannot tell: keep it */
	DIR *dir = fdopendir(dup_fd);
	if (!dir) {
		close(dup_fd);
		return true;
	}
	bool any = false;
	for (struct dirent *e; !any && (e = readdir(dir));)
		any = !strncmp(e->d_name, "j-", 2);
	closedir(dir);
	return any;
}

void phi_ajd_close(struct phi_ajd *d)
{
	if (!d)
		return;
	for (size_t i = 0; i < d->npool; i++) {
		(void)unlinkat(d->mount_fd, d->pool[i].fname, 0);
		close(d->pool[i].fd);
	}
	pthread_mutex_destroy(&d->pool_lock);
	if (!has_journal(d->mount_fd)) {
		(void)unlinkat(d->mount_fd, "lock", 0);
		(void)unlinkat(d->store_fd, d->mname, AT_REMOVEDIR);
	}
	close(d->lock_fd); /* releases the flock: a later mount may replay what is left */
	close(d->mount_fd);
	close(d->store_fd);
	(void)unlinkat(d->root_fd, d->id, AT_REMOVEDIR); /* fails unless empty, as meant */
	close(d->root_fd);
	free(d);
}

bool phi_ajd_full(struct phi_ajd *d, uint64_t len)
{
	return __atomic_load_n(&d->bytes, __ATOMIC_RELAXED) + len > d->max;
}

static int write_all_at(int fd, struct iovec *iov, int n, uint64_t off)
{
	while (n > 0) {
		ssize_t k = pwritev(fd, iov, n, (off_t)off);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			return -EIO;
		off += (uint64_t)k;
		while (n > 0 && (size_t)k >= iov->iov_len) {
			k -= (ssize_t)iov->iov_len;
			iov++;
			n--;
		}
		if (n > 0) {
			iov->iov_base = (uint8_t *)iov->iov_base + k;
			iov->iov_len -= (size_t)k;
		}
	}
	return 0;
}

int phi_aj_create(struct phi_ajd *d, const struct phi_aj_base *base, struct phi_aj **ret)
{
	size_t nl = strlen(base->name), el = strlen(base->etag);
	if (!nl || nl > PHI_AJ_NAME_MAX || el > PHI_AJ_ETAG_MAX)
		return -EINVAL;
	struct phi_aj *j = calloc(1, sizeof *j);
	if (!j)
		return -ENOMEM;
	j->d = d;
	j->fd = -1;
	pthread_mutex_lock(&d->pool_lock);
	if (d->npool) {
		d->npool--;
		j->fd = d->pool[d->npool].fd;
		memcpy(j->fname, d->pool[d->npool].fname, sizeof j->fname);
	}
	pthread_mutex_unlock(&d->pool_lock);
	if (j->fd < 0) {
		rand_name("j-", j->fname, sizeof j->fname);
		j->fd = openat(d->mount_fd, j->fname,
			       O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	}
	if (j->fd < 0) {
		int r = -errno;
		free(j);
		return r;
	}
	uint8_t h[HDR_LEN];
	memcpy(h, MAGIC, sizeof MAGIC);
	put32(h + 8, PHI_AJ_VERSION);
	put32(h + 12, (uint32_t)nl);
	put32(h + 16, (uint32_t)el);
	put32(h + 20, 0);
	put64(h + 24, base->gen);
	put64(h + 32, base->size);
	struct iovec iov[3] = { { h, sizeof h }, { (void *)base->name, nl }, { (void *)base->etag, el } };
	int r = write_all_at(j->fd, iov, 3, 0);
	if (r < 0) {
		close(j->fd);
		(void)unlinkat(d->mount_fd, j->fname, 0);
		free(j);
		return r;
	}
	j->len = HDR_LEN + nl + el;
	__atomic_add_fetch(&d->bytes, j->len, __ATOMIC_RELAXED);
	*ret = j;
	return 0;
}

int phi_aj_append(struct phi_aj *j, enum phi_aj_type type, uint64_t off, const void *data,
		  uint64_t len)
{
	if ((type == PHI_AJ_WRITE) != (len > 0) || len > SSIZE_MAX)
		return -EINVAL;
	uint8_t h[REC_LEN] = { 0 };
	put32(h, REC_MAGIC);
	h[4] = (uint8_t)type;
	put64(h + 8, j->seq);
	put64(h + 16, off);
	put64(h + 24, len);
	put32(h + 32, fnv1a32(h, REC_LEN - 8));
	struct iovec iov[2] = { { h, sizeof h }, { (void *)data, (size_t)len } };
	int r = write_all_at(j->fd, iov, len ? 2 : 1, j->len);
	if (r < 0)
		return r;
	j->len += REC_LEN + len;
	j->seq++;
	__atomic_add_fetch(&j->d->bytes, REC_LEN + len, __ATOMIC_RELAXED);
	return 0;
}

static void aj_close(struct phi_aj *j, bool drop)
{
	if (!j)
		return;
	struct phi_ajd *d = j->d;
	bool pooled = false;
	if (drop && ftruncate(j->fd, 0) == 0) {
		pthread_mutex_lock(&d->pool_lock);
		if (d->npool < ARRAY_SIZE(d->pool)) {
			d->pool[d->npool].fd = j->fd;
			memcpy(d->pool[d->npool].fname, j->fname, sizeof j->fname);
			d->npool++;
			pooled = true;
		}
		pthread_mutex_unlock(&d->pool_lock);
	}
	if (drop && !pooled)
		(void)unlinkat(d->mount_fd, j->fname, 0);
	if (!pooled)
		close(j->fd);
	__atomic_sub_fetch(&j->d->bytes, j->len, __ATOMIC_RELAXED);
	free(j);
}

void phi_aj_drop(struct phi_aj *j)
{
	aj_close(j, true);
}

void phi_aj_keep(struct phi_aj *j)
{
	aj_close(j, false);
}

/* ---- recovery ---- */

struct mdir {
	char name[256];
	struct timespec mtime;
};

static int mdir_cmp(const void *a, const void *b)
{
	const struct mdir *x = a, *y = b;
	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	if (x->mtime.tv_nsec != y->mtime.tv_nsec)
		return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : 1;
	return strcmp(x->name, y->name);
}

/* Names in directory fd starting with pfx; *ret malloc'd. */
static int list_names(int fd, const char *pfx, struct mdir **ret, size_t *ret_n)
{
	int dup_fd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dup_fd < 0)
		return -errno;
	DIR *dir = fdopendir(dup_fd);
	if (!dir) {
		int r = -errno;
		close(dup_fd);
		return r;
	}
	struct mdir *v = NULL;
	size_t n = 0, cap = 0;
	for (struct dirent *e; (e = readdir(dir));) {
		if (strncmp(e->d_name, pfx, strlen(pfx)) || strlen(e->d_name) >= sizeof v->name)
			continue;
		struct stat st;
		if (fstatat(fd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0)
			continue;
		if (n == cap) {
			size_t nc = cap ? 2 * cap : 16;
			struct mdir *t = realloc(v, nc * sizeof *t);
			if (!t) {
				free(v);
				closedir(dir);
				return -ENOMEM;
			}
			v = t;
			cap = nc;
		}
		(void)snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
		v[n++].mtime = st.st_mtim;
	}
	closedir(dir);
	if (n)
		qsort(v, n, sizeof *v, mdir_cmp);
	*ret = v;
	*ret_n = n;
	return 0;
}

static void move_conflict(struct phi_ajd *d, int mfd, const char *mname, const char *jname)
{
	char to[600];
	(void)mkdir_at(d->store_fd, "conflict");
	(void)snprintf(to, sizeof to, "conflict/%s.%s", mname, jname);
	if (renameat(mfd, jname, d->store_fd, to) < 0)
		fprintf(stderr, "phifs: azure: journal %s/%s: cannot move it to conflict/: %s\n", mname,
			jname, strerror(errno));
}

/* One journal of a dead mount: 0 done or conflicted, 1 left. */
static int recover_one(struct phi_ajd *d, int mfd, const char *mname, const char *jname,
		       phi_aj_replay_fn fn, void *ctx, unsigned counts[3])
{
	_cleanup_close_ int fd = openat(mfd, jname, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	struct stat st;
	if (fd < 0 || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		counts[PHI_AJ_RETRY]++;
		return 1;
	}
	if (st.st_size < HDR_LEN) {
		/* created, header not written yet: nothing was accepted into it */
		(void)unlinkat(mfd, jname, 0);
		counts[PHI_AJ_DONE]++;
		return 0;
	}
	void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
	if (map == MAP_FAILED) {
		counts[PHI_AJ_RETRY]++;
		return 1;
	}
	struct phi_aj_parsed *p = calloc(1, sizeof *p);
	int r = p ? phi_aj_parse(map, (size_t)st.st_size, p) : -ENOMEM;
	enum phi_aj_verdict v;
	if (r == -EBADMSG) {
		fprintf(stderr, "phifs: azure: journal %s/%s: bad header; moved to conflict/\n", mname,
			jname);
		v = PHI_AJ_CONFLICT;
	} else if (r < 0) {
		v = PHI_AJ_RETRY;
	} else {
		if (p->torn)
			fprintf(stderr, "phifs: azure: journal %s/%s: a torn last record was dropped\n",
				mname, jname);
		v = fn(ctx, p, jname);
	}
	if (p)
		phi_aj_parsed_free(p);
	free(p);
	munmap(map, (size_t)st.st_size);
	counts[v]++;
	if (v == PHI_AJ_DONE)
		(void)unlinkat(mfd, jname, 0);
	else if (v == PHI_AJ_CONFLICT)
		move_conflict(d, mfd, mname, jname);
	return v == PHI_AJ_RETRY;
}

int phi_ajd_recover(struct phi_ajd *d, phi_aj_replay_fn fn, void *ctx, unsigned ret_counts[3])
{
	unsigned counts[3] = { 0, 0, 0 };
	_cleanup_free_ struct mdir *dirs = NULL;
	size_t nd = 0;
	int r = list_names(d->store_fd, "m-", &dirs, &nd);
	if (r < 0)
		return r;
	for (size_t i = 0; i < nd; i++) {
		if (!strcmp(dirs[i].name, d->mname))
			continue;
		_cleanup_close_ int mfd =
			openat(d->store_fd, dirs[i].name, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (mfd < 0)
			continue;
		_cleanup_close_ int lfd = openat(mfd, "lock", O_RDWR | O_CLOEXEC | O_NOFOLLOW);
		/* a live mount holds its lock; a directory without one is a mount that died
		 * before taking it, or one being removed */
		if (lfd < 0 || flock(lfd, LOCK_EX | LOCK_NB) < 0)
			continue;
		_cleanup_free_ struct mdir *js = NULL;
		size_t nj = 0;
		if (list_names(mfd, "j-", &js, &nj) < 0)
			continue;
		unsigned left = 0;
		for (size_t k = 0; k < nj; k++)
			left += (unsigned)recover_one(d, mfd, dirs[i].name, js[k].name, fn, ctx, counts);
		if (!left) {
			(void)unlinkat(mfd, "lock", 0);
			(void)unlinkat(d->store_fd, dirs[i].name, AT_REMOVEDIR);
		}
	}
	if (ret_counts)
		memcpy(ret_counts, counts, sizeof counts);
	return 0;
}
