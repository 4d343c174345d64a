/* az_rcache.c: the Azure backend's local read cache (see az_rcache.h). It holds the
 * ciphertext the service returned, never plaintext. */
#include "az_rcache.h"

#include <dirent.h>
#include <limits.h>
#include <pthread.h>
#include <sodium.h>
#include <sys/stat.h>
#include <sys/uio.h>

#include "util.h"

#define HDR_LEN 48
static const char MAGIC[8] = { 'P', 'H', 'I', 'A', 'Z', 'R', 'C', '1' };

struct phi_rc {
	int dfd;
	uint64_t max;
	pthread_mutex_t lock; /* bytes and eviction */
	uint64_t bytes;
};

static void key_name(const char *name, const char *etag, uint64_t idx, char out[33])
{
	uint8_t h[16], ib[8];
	for (int i = 0; i < 8; i++)
		ib[i] = (uint8_t)(idx >> (56 - 8 * i));
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, sizeof h);
	crypto_generichash_update(&st, (const uint8_t *)name, strlen(name) + 1);
	crypto_generichash_update(&st, (const uint8_t *)etag, strlen(etag) + 1);
	crypto_generichash_update(&st, ib, sizeof ib);
	crypto_generichash_final(&st, h, sizeof h);
	sodium_bin2hex(out, 33, h, sizeof h);
}

static bool is_entry(const char *n)
{
	if (strlen(n) != 32)
		return false;
	for (const char *p = n; *p; p++)
		if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'f')))
			return false;
	return true;
}

/* Entries (and leftover temp files) of the directory with their sizes and times. */
struct ent {
	char name[40];
	uint64_t size;
	struct timespec mtime;
};

static int list(int dfd, struct ent **ret, size_t *ret_n)
{
	int fd = openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return -errno;
	DIR *d = fdopendir(fd);
	if (!d) {
		int r = -errno;
		close(fd);
		return r;
	}
	struct ent *v = NULL;
	size_t n = 0, cap = 0;
	for (struct dirent *e; (e = readdir(d));) {
		struct stat st;
		if (!is_entry(e->d_name) && strncmp(e->d_name, "t-", 2))
			continue;
		if (strlen(e->d_name) >= sizeof v->name ||
		    fstatat(dfd, e->d_name, &st, AT_SYMLINK_NOFOLLOW) < 0 || !S_ISREG(st.st_mode))
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 64;
			struct ent *t = realloc(v, nc * sizeof *t);
			if (!t) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = t;
			cap = nc;
		}
		(void)snprintf(v[n].name, sizeof v[n].name, "%s", e->d_name);
		v[n].size = (uint64_t)st.st_size;
		v[n++].mtime = st.st_mtim;
	}
	closedir(d);
	*ret = v;
	*ret_n = n;
	return 0;
}

int phi_rc_open(const char *dir, uint64_t max_bytes, struct phi_rc **ret)
{
	if (mkdir(dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	_cleanup_close_ int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
	if (dfd < 0)
		return -errno;
	struct phi_rc *c = calloc(1, sizeof *c);
	if (!c)
		return -ENOMEM;
	c->max = max_bytes;
	pthread_mutex_init(&c->lock, NULL);
	/* what earlier mounts left: counted; their unfinished temp files removed */
	struct ent *v = NULL;
	size_t n = 0;
	if (list(dfd, &v, &n) == 0) {
		for (size_t i = 0; i < n; i++) {
			if (!strncmp(v[i].name, "t-", 2))
				(void)unlinkat(dfd, v[i].name, 0);
			else
				c->bytes += v[i].size;
		}
		free(v);
	}
	c->dfd = TAKE_FD(dfd);
	*ret = c;
	return 0;
}

void phi_rc_close(struct phi_rc *c)
{
	if (!c)
		return;
	close(c->dfd);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

uint64_t phi_rc_bytes(struct phi_rc *c)
{
	pthread_mutex_lock(&c->lock);
	uint64_t b = c->bytes;
	pthread_mutex_unlock(&c->lock);
	return b;
}

static int read_all_at(int fd, void *buf, size_t len, off_t off)
{
	size_t got = 0;
	while (got < len) {
		ssize_t k = pread(fd, (uint8_t *)buf + got, len - got, off + (off_t)got);
		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return k < 0 ? -errno : -EIO;
		got += (size_t)k;
	}
	return 0;
}

static void drop(struct phi_rc *c, const char *key, uint64_t size)
{
	if (unlinkat(c->dfd, key, 0) == 0) {
		pthread_mutex_lock(&c->lock);
		c->bytes = c->bytes > size ? c->bytes - size : 0;
		pthread_mutex_unlock(&c->lock);
	}
}

int phi_rc_get(struct phi_rc *c, const char *name, const char *etag, uint64_t idx, void *buf,
	       size_t len)
{
	char key[33];
	key_name(name, etag, idx, key);
	_cleanup_close_ int fd = openat(c->dfd, key, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0)
		return -ENOENT;
	struct stat st;
	uint8_t h[HDR_LEN], sum[32];
	if (fstat(fd, &st) < 0 || (uint64_t)st.st_size != HDR_LEN + (uint64_t)len)
		return -ENOENT; /* another length: not the block asked for */
	uint64_t l = 0;
	int r = read_all_at(fd, h, sizeof h, 0);
	for (int i = 0; r == 0 && i < 8; i++)
		l = (l << 8) | h[8 + i];
	r = r < 0 ? r : read_all_at(fd, buf, len, HDR_LEN);
	if (r == 0)
		crypto_generichash(sum, sizeof sum, buf, len, NULL, 0);
	if (r < 0 || memcmp(h, MAGIC, sizeof MAGIC) || l != len || sodium_memcmp(sum, h + 16, 32)) {
		/* damaged (a bad disk, a crash while it was renamed in): refetch it */
		fprintf(stderr, "phifs: azure: read cache entry %s is damaged; removed\n", key);
		drop(c, key, (uint64_t)st.st_size);
		return -ENOENT;
	}
	/* least recently used goes first: a hit is a use */
	(void)futimens(fd, NULL);
	return 0;
}

static int ent_cmp(const void *a, const void *b)
{
	const struct ent *x = a, *y = b;
	if (x->mtime.tv_sec != y->mtime.tv_sec)
		return x->mtime.tv_sec < y->mtime.tv_sec ? -1 : 1;
	return x->mtime.tv_nsec < y->mtime.tv_nsec ? -1 : x->mtime.tv_nsec > y->mtime.tv_nsec;
}

/* Make room for need bytes: remove the least recently used entries until the cache holds
 * at most 90% of its limit minus need. Called with c->lock held. */
static void evict_locked(struct phi_rc *c, uint64_t need)
{
	uint64_t target = c->max / 10 * 9;
	target = target > need ? target - need : 0;
	struct ent *v = NULL;
	size_t n = 0;
	if (list(c->dfd, &v, &n) < 0)
		return;
	qsort(v, n, sizeof *v, ent_cmp);
	uint64_t total = 0;
	for (size_t i = 0; i < n; i++)
		total += is_entry(v[i].name) ? v[i].size : 0;
	for (size_t i = 0; i < n && total > target; i++) {
		if (!is_entry(v[i].name))
			continue;
		if (unlinkat(c->dfd, v[i].name, 0) == 0)
			total -= v[i].size;
	}
	c->bytes = total;
	free(v);
}

void phi_rc_put(struct phi_rc *c, const char *name, const char *etag, uint64_t idx,
		const void *buf, size_t len)
{
	uint64_t size = HDR_LEN + (uint64_t)len;
	if (size > c->max)
		return;
	pthread_mutex_lock(&c->lock);
	if (c->bytes + size > c->max)
		evict_locked(c, size);
	c->bytes += size; /* reserved; given back if the entry is not made */
	pthread_mutex_unlock(&c->lock);

	char key[33], tmp[40];
	uint8_t rnd[8];
	key_name(name, etag, idx, key);
	/* an entry already there is replaced, not kept: it may be the damaged one that made
	 * this block a miss; its bytes are given back once the rename has replaced it */
	struct stat old;
	uint64_t old_size = fstatat(c->dfd, key, &old, AT_SYMLINK_NOFOLLOW) == 0 ? (uint64_t)old.st_size : 0;
	randombytes_buf(rnd, sizeof rnd);
	memcpy(tmp, "t-", 2);
	sodium_bin2hex(tmp + 2, sizeof tmp - 2, rnd, sizeof rnd);
	uint8_t h[HDR_LEN] = { 0 };
	memcpy(h, MAGIC, sizeof MAGIC);
	for (int i = 0; i < 8; i++)
		h[8 + i] = (uint8_t)((uint64_t)len >> (56 - 8 * i));
	crypto_generichash(h + 16, 32, buf, len, NULL, 0);
	bool made = false;
	int fd = openat(c->dfd, tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd >= 0) {
		struct iovec iov[2] = { { h, sizeof h }, { (void *)buf, len } };
		ssize_t k = pwritev(fd, iov, 2, 0);
		close(fd);
		/* no fsync: a torn entry after a power loss fails its hash and is refetched */
		made = k == (ssize_t)size && renameat(c->dfd, tmp, c->dfd, key) == 0;
		if (!made)
			(void)unlinkat(c->dfd, tmp, 0);
	}
	uint64_t give = made ? old_size : size;
	if (give) {
		pthread_mutex_lock(&c->lock);
		c->bytes = c->bytes > give ? c->bytes - give : 0;
		pthread_mutex_unlock(&c->lock);
	}
}
