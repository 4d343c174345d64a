/* pagecache: how many pages of a file sit in the kernel's page cache, counted on the very
 * file description that read or wrote it (tests/gpurun/test-pagecache.sh).
 *
 *   pagecache read FILE        read FILE to its end, then count
 *   pagecache write FILE SIZE  create FILE, write SIZE bytes (a fixed pattern), fsync, count,
 *                              remove FILE
 *   pagecache fd PID SUFFIX    count on PID's open file whose path ends in SUFFIX, taken
 *                              with pidfd_getfd (the same description, not a reopen)
 *
 * Prints "pages=P resident=R via=cachestat|mincore" (P: the file's size in pages), or
 * "pages=P resident=? via=mmap-refused" where only mmap+mincore is available and the kernel
 * refuses a shared mapping (a FUSE FOPEN_DIRECT_IO file). Exit 0 when it printed, 1 on an
 * error.
 *
 * Why on the same description: FUSE drops an inode's cached pages on every open without
 * FOPEN_KEEP_CACHE, and mmap of a FOPEN_DIRECT_IO file drops them too, so opening the file
 * again, fincore(1) or a private mapping would count zero whatever the read or write left.
 * cachestat(2) (Linux 6.5) counts without mapping; older kernels fall back to a shared
 * mapping and mincore(2) (not for "fd": its size would need an fstat, which can drop the
 * pages). Only counts are printed, never contents. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifndef SYS_cachestat
#define SYS_cachestat 451 /* the same number on every architecture */
#endif
#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_getfd
#define SYS_pidfd_getfd 438
#endif

struct cs_range {
	uint64_t off, len;
};
struct cs {
	uint64_t nr_cache, nr_dirty, nr_writeback, nr_evicted, nr_recently_evicted;
};

/* size: the file's, where the caller knows it (it read or wrote it all), else -1.
 * *ret_resident: pages cached, or -1 where the kernel refused the mapping (ENODEV). */
static int count(int fd, int64_t size, uint64_t *ret_pages, int64_t *ret_resident, const char **ret_via)
{
	/* count before any fstat: that may fetch new attributes from the FUSE server, and a
	 * changed mtime makes the kernel drop the inode's pages (auto_inval_data) */
	struct cs_range r = { 0, 0 }; /* len 0: to the end */
	struct cs c = { 0 };
	long cr = syscall(SYS_cachestat, fd, &r, &c, 0);
	if (cr < 0 && errno != ENOSYS)
		return -errno;
	if (size < 0 && cr < 0)
		return -ENOSYS; /* mincore needs the size first, and fstat could drop the pages */
	if (size < 0) {
		struct stat st;
		if (fstat(fd, &st) < 0)
			return -errno;
		size = st.st_size;
	}
	uint64_t ps = (uint64_t)sysconf(_SC_PAGESIZE);
	uint64_t pages = ((uint64_t)size + ps - 1) / ps;
	if (cr == 0) {
		*ret_pages = pages;
		*ret_resident = (int64_t)c.nr_cache;
		*ret_via = "cachestat";
		return 0;
	}
	if (!pages) {
		*ret_pages = 0;
		*ret_resident = 0;
		*ret_via = "mincore";
		return 0;
	}
	void *m = mmap(NULL, (size_t)size, PROT_READ, MAP_SHARED, fd, 0);
	if (m == MAP_FAILED && errno == ENODEV) {
		*ret_pages = pages;
		*ret_resident = -1;
		*ret_via = "mmap-refused";
		return 0;
	}
	if (m == MAP_FAILED)
		return -errno;
	unsigned char *v = malloc((size_t)pages);
	int ret = 0;
	if (!v)
		ret = -ENOMEM;
	else if (mincore(m, (size_t)size, v) < 0)
		ret = -errno;
	int64_t n = 0;
	for (uint64_t i = 0; ret == 0 && i < pages; i++)
		n += v[i] & 1;
	free(v);
	(void)munmap(m, (size_t)size);
	if (ret < 0)
		return ret;
	*ret_pages = pages;
	*ret_resident = n;
	*ret_via = "mincore";
	return 0;
}

static int report(int fd, int64_t size)
{
	uint64_t pages = 0;
	int64_t res = 0;
	const char *via = NULL;
	int r = count(fd, size, &pages, &res, &via);
	if (r < 0) {
		fprintf(stderr, "pagecache: count: %s\n", strerror(-r));
		return 1;
	}
	if (res < 0)
		printf("pages=%llu resident=? via=%s\n", (unsigned long long)pages, via);
	else
		printf("pages=%llu resident=%lld via=%s\n", (unsigned long long)pages, (long long)res, via);
	return 0;
}

static int do_read(const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		fprintf(stderr, "pagecache: open: %s\n", strerror(errno));
		return 1;
	}
	static char buf[1 << 16];
	int64_t size = 0;
	for (;;) {
		ssize_t n = read(fd, buf, sizeof buf);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			fprintf(stderr, "pagecache: read: %s\n", strerror(errno));
			close(fd);
			return 1;
		}
		if (n == 0)
			break;
		size += n;
	}
	memset(buf, 0, sizeof buf);
	int ret = report(fd, size);
	close(fd);
	return ret;
}

static int do_write(const char *path, const char *size)
{
	char *end;
	errno = 0;
	unsigned long long want = strtoull(size, &end, 10);
	if (errno || *end || !want || want > (1ULL << 30)) {
		fprintf(stderr, "pagecache: bad size\n");
		return 1;
	}
	/* O_RDWR: the mincore fallback maps it for reading */
	int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0) {
		fprintf(stderr, "pagecache: create: %s\n", strerror(errno));
		return 1;
	}
	static char buf[1 << 16];
	memset(buf, 'p', sizeof buf);
	int ret = 0;
	for (unsigned long long done = 0; done < want && !ret;) {
		size_t n = want - done < sizeof buf ? (size_t)(want - done) : sizeof buf;
		ssize_t w = write(fd, buf, n);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			fprintf(stderr, "pagecache: write: %s\n", w < 0 ? strerror(errno) : "short");
			ret = 1;
		} else {
			done += (unsigned long long)w;
		}
	}
	if (!ret && fsync(fd) < 0) {
		fprintf(stderr, "pagecache: fsync: %s\n", strerror(errno));
		ret = 1;
	}
	if (!ret)
		ret = report(fd, (int64_t)want);
	close(fd);
	if (unlink(path) < 0) {
		fprintf(stderr, "pagecache: unlink: %s\n", strerror(errno));
		ret = 1;
	}
	return ret;
}

static int do_fd(const char *pid_s, const char *suffix)
{
	char *end;
	errno = 0;
	long pid = strtol(pid_s, &end, 10);
	if (errno || *end || pid <= 0 || pid > INT_MAX) {
		fprintf(stderr, "pagecache: bad pid\n");
		return 1;
	}
	char dir[64];
	snprintf(dir, sizeof dir, "/proc/%ld/fd", pid);
	int pfd = (int)syscall(SYS_pidfd_open, (pid_t)pid, 0);
	if (pfd < 0) {
		fprintf(stderr, "pagecache: pidfd_open: %s\n", strerror(errno));
		return 1;
	}
	DIR *d = opendir(dir);
	if (!d) {
		fprintf(stderr, "pagecache: %s: %s\n", dir, strerror(errno));
		close(pfd);
		return 1;
	}
	size_t sl = strlen(suffix);
	int target = -1, found = 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		char link[PATH_MAX];
		ssize_t l = readlinkat(dirfd(d), de->d_name, link, sizeof link - 1);
		if (l < 0)
			continue;
		link[l] = 0;
		if ((size_t)l >= sl && !strcmp(link + l - sl, suffix)) {
			target = atoi(de->d_name);
			found++;
		}
	}
	closedir(d);
	if (found != 1) {
		fprintf(stderr, "pagecache: %d open files of pid %ld end in the suffix, not 1\n", found, pid);
		close(pfd);
		return 1;
	}
	int fd = (int)syscall(SYS_pidfd_getfd, pfd, target, 0);
	close(pfd);
	if (fd < 0) {
		fprintf(stderr, "pagecache: pidfd_getfd: %s\n", strerror(errno));
		return 1;
	}
	int ret = report(fd, -1);
	close(fd);
	return ret;
}

int main(int argc, char **argv)
{
	if (argc == 3 && !strcmp(argv[1], "read"))
		return do_read(argv[2]);
	if (argc == 4 && !strcmp(argv[1], "write"))
		return do_write(argv[2], argv[3]);
	if (argc == 4 && !strcmp(argv[1], "fd"))
		return do_fd(argv[2], argv[3]);
	fprintf(stderr, "usage: pagecache read FILE | write FILE SIZE | fd PID SUFFIX\n");
	return 2;
}
