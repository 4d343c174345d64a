/* zerofill.c: written zeros kept ahead of an append-only file's end (zerofill.h). */
#include "zerofill.h"

#include <pthread.h>
#include <sys/stat.h>
#include <time.h>

#include "thread.h"
#include "util.h"

#define ALIGN 4096u          /* O_DIRECT offsets and lengths */
#define CHUNK_MIN (64u << 10)
#define RETRY_NS 1000000000 /* after a failed fill: a full volume is not polled in a loop */

struct phi_zerofill {
	pthread_mutex_t lock;
	pthread_cond_t cond; /* the filler: work or stop; the writer and attach: a fill ended */
	pthread_t thread;
	uint64_t chunk;
	void *zeros;         /* chunk bytes, ALIGN-aligned */
	int fd;              /* the filler's own descriptor; -1: nothing followed */
	bool direct;         /* fd is O_DIRECT */
	uint64_t filled;     /* bytes written (data or zeros): the next fill starts here */
	uint64_t want;       /* the writer's end: keep filled >= want + chunk */
	bool busy, stop;
	struct timespec retry; /* no fill before this (CLOCK_MONOTONIC), after a failed one */
};

static struct timespec mono_after(int64_t ns)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	int64_t v = (int64_t)t.tv_nsec + ns;
	t.tv_sec += v / 1000000000;
	t.tv_nsec = v % 1000000000;
	return t;
}

static bool mono_passed(const struct timespec *t)
{
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	return now.tv_sec > t->tv_sec || (now.tv_sec == t->tv_sec && now.tv_nsec >= t->tv_nsec);
}

static void *filler(void *arg)
{
	struct phi_zerofill *z = arg;
	pthread_mutex_lock(&z->lock);
	for (;;) {
		if (z->stop)
			break;
		if (z->fd < 0 || z->filled >= z->want + z->chunk) {
			pthread_cond_wait(&z->cond, &z->lock);
			continue;
		}
		if (!mono_passed(&z->retry)) {
			(void)pthread_cond_timedwait(&z->cond, &z->lock, &z->retry);
			continue;
		}
		/* O_DIRECT starts at a block boundary; the few bytes before it stay a hole, which
		 * an append fills as it would without zeros */
		uint64_t from = z->direct ? (z->filled + ALIGN - 1) / ALIGN * ALIGN : z->filled;
		int fd = z->fd; /* attach and detach wait until the fill is done */
		z->busy = true;
		pthread_mutex_unlock(&z->lock);
		ssize_t n = pwrite(fd, z->zeros, z->chunk, (off_t)from);
		/* durable size and block map: the writer's next fdatasync need not write them */
		bool ok = n == (ssize_t)z->chunk && fdatasync(fd) == 0;
		pthread_mutex_lock(&z->lock);
		z->busy = false;
		if (n > 0)
			z->filled = from + (uint64_t)n; /* a short write still wrote zeros */
		if (!ok)
			z->retry = mono_after(RETRY_NS);
		pthread_cond_broadcast(&z->cond);
	}
	pthread_mutex_unlock(&z->lock);
	return NULL;
}

int phi_zerofill_start(uint64_t chunk, struct phi_zerofill **ret)
{
	if (chunk == 0 || chunk > (1ull << 30))
		return -EINVAL;
	struct phi_zerofill *z = calloc(1, sizeof(*z));
	if (!z)
		return -ENOMEM;
	z->chunk = (chunk + CHUNK_MIN - 1) / CHUNK_MIN * CHUNK_MIN;
	z->fd = -1;
	if (posix_memalign(&z->zeros, ALIGN, z->chunk) != 0) {
		free(z);
		return -ENOMEM;
	}
	memset(z->zeros, 0, z->chunk);
	pthread_mutex_init(&z->lock, NULL);
	phi_cond_init_mono(&z->cond);
	int r = phi_thread_start(&z->thread, filler, z);
	if (r < 0) {
		pthread_cond_destroy(&z->cond);
		pthread_mutex_destroy(&z->lock);
		free(z->zeros);
		free(z);
		return r;
	}
	*ret = z;
	return 0;
}

/* Wait for a fill in progress, then close the followed file (z->lock held). */
static void detach_locked(struct phi_zerofill *z)
{
	while (z->busy)
		pthread_cond_wait(&z->cond, &z->lock);
	phi_closep(&z->fd);
}

int phi_zerofill_attach(struct phi_zerofill *z, int dirfd, const char *name, uint64_t end)
{
	struct stat st;
	pthread_mutex_lock(&z->lock);
	detach_locked(z);
	bool direct = true;
	int fd = openat(dirfd, name, O_WRONLY | O_DIRECT | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0 && errno == EINVAL) { /* no O_DIRECT here (an old tmpfs): zeros go through the cache */
		direct = false;
		fd = openat(dirfd, name, O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
	}
	int r = fd < 0 || fstat(fd, &st) < 0 ? phi_neg_errno() : 0;
	if (r == 0) {
		z->fd = fd;
		z->direct = direct;
		/* zeros a previous run left (recovery keeps them) are not written again */
		z->filled = (uint64_t)st.st_size > end ? (uint64_t)st.st_size : end;
		z->want = end;
		z->retry = (struct timespec){ 0 };
		pthread_cond_broadcast(&z->cond);
	} else if (fd >= 0) {
		(void)close(fd);
	}
	pthread_mutex_unlock(&z->lock);
	return r;
}

void phi_zerofill_detach(struct phi_zerofill *z)
{
	if (!z)
		return;
	pthread_mutex_lock(&z->lock);
	detach_locked(z);
	pthread_mutex_unlock(&z->lock);
}

void phi_zerofill_claim(struct phi_zerofill *z, uint64_t end)
{
	if (!z)
		return;
	pthread_mutex_lock(&z->lock);
	/* a fill writes from z->filled on: the writer must not write there at the same time */
	while (z->busy && end > z->filled)
		pthread_cond_wait(&z->cond, &z->lock);
	if (end > z->filled)
		z->filled = end; /* past the zeros: the next fill starts after this data */
	z->want = end;
	if (z->fd >= 0 && z->filled < end + z->chunk)
		pthread_cond_broadcast(&z->cond);
	pthread_mutex_unlock(&z->lock);
}

void phi_zerofill_stop(struct phi_zerofill *z)
{
	if (!z)
		return;
	pthread_mutex_lock(&z->lock);
	z->stop = true;
	pthread_cond_broadcast(&z->cond);
	pthread_mutex_unlock(&z->lock);
	pthread_join(z->thread, NULL);
	phi_closep(&z->fd);
	pthread_cond_destroy(&z->cond);
	pthread_mutex_destroy(&z->lock);
	free(z->zeros);
	free(z);
}
