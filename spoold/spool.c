/* spool.c: directory handling for the spool. */
#include "spool.h"

#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>

const char *const spool_dir_names[SD__N] = { "incoming", "tmp",     "queue", "active",
					     "done",     "failed",  "journal", "ctl",
					     "failed/rejected" };

int spool_fsync_dir(int dfd)
{
	return RET_NERRNO(fsync(dfd));
}

int spool_sync_dirs(struct spool *s, unsigned mask)
{
	int r = 0;
	for (int i = 0; i < SD__N; i++) {
		if (!(mask & SPOOL_DIR_BIT(i)))
			continue;
		int e = spool_fsync_dir(s->d[i]);
		if (e < 0 && r == 0)
			r = e;
	}
	return r;
}

int spool_open(struct spool *s, const char *path, bool create, bool lock)
{
	struct spool t = { .root = -1, .lockfd = -1 };
	for (int i = 0; i < SD__N; i++)
		t.d[i] = -1;
	int r;
	if (create)
		(void)mkdir(path, 0750);
	t.root = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (t.root < 0)
		return phi_neg_errno();
	for (int i = 0; i < SD__N; i++) {
		if (create && mkdirat(t.root, spool_dir_names[i], i == SD_INCOMING ? 0770 : 0750) < 0 &&
		    errno != EEXIST) {
			r = phi_neg_errno();
			goto fail;
		}
		t.d[i] = openat(t.root, spool_dir_names[i], O_RDONLY | O_DIRECTORY | O_CLOEXEC | O_NOFOLLOW);
		if (t.d[i] < 0) {
			r = phi_neg_errno();
			goto fail;
		}
	}
	if (lock) {
		t.lockfd = openat(t.root, ".lock", O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (t.lockfd < 0 || flock(t.lockfd, LOCK_EX | LOCK_NB) < 0) {
			r = errno == EWOULDBLOCK ? -EBUSY : phi_neg_errno();
			goto fail;
		}
	}
	*s = t;
	return 0;
fail:
	spool_close(&t);
	return r;
}

void spool_close(struct spool *s)
{
	for (int i = 0; i < SD__N; i++)
		phi_closep(&s->d[i]);
	phi_closep(&s->root);
	phi_closep(&s->lockfd);
}

int spool_move(struct spool *s, enum spool_dir from, const char *fname, enum spool_dir to,
	       const char *tname, bool sync)
{
	if (renameat2(s->d[from], fname, s->d[to], tname, RENAME_NOREPLACE) < 0)
		return phi_neg_errno();
	if (sync) {
		int r = spool_fsync_dir(s->d[to]);
		if (r == 0 && from != to)
			r = spool_fsync_dir(s->d[from]);
		return r;
	}
	return 0;
}

int spool_write_atomic(int dfd, const char *name, const void *data, size_t len, unsigned sync)
{
	char tmp[300];
	if (snprintf(tmp, sizeof tmp, ".%s.tmp", name) >= (int)sizeof tmp)
		return -ENAMETOOLONG;
	_cleanup_close_ int fd = openat(dfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		return phi_neg_errno();
	const char *p = data;
	while (len > 0) {
		ssize_t n = write(fd, p, len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			int r = phi_neg_errno();
			(void)unlinkat(dfd, tmp, 0);
			return r;
		}
		p += n;
		len -= (size_t)n;
	}
	if (((sync & SPOOL_SYNC_FILE) && fsync(fd) < 0) || renameat(dfd, tmp, dfd, name) < 0) {
		int r = phi_neg_errno();
		(void)unlinkat(dfd, tmp, 0);
		return r;
	}
	return (sync & SPOOL_SYNC_DIR) ? spool_fsync_dir(dfd) : 0;
}

int spool_read_file(int dfd, const char *name, size_t max, struct phi_buf *b, struct stat *st,
		    bool no_writers)
{
	_cleanup_close_ int fd = openat(dfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY);
	if (fd < 0)
		return phi_neg_errno();
	struct stat s;
	if (fstat(fd, &s) < 0)
		return phi_neg_errno();
	if (st)
		*st = s;
	if (!S_ISREG(s.st_mode))
		return -EISDIR;
	if ((uint64_t)s.st_size > max)
		return -EFBIG;
	if (no_writers) {
		/* a read lease is refused (EAGAIN) while anyone holds the file open for writing;
		 * filesystems without leases (EINVAL) fall back to the inotify events alone */
		if (fcntl(fd, F_SETLEASE, F_RDLCK) < 0) {
			if (errno == EAGAIN || errno == EBUSY)
				return -EBUSY;
		} else
			(void)fcntl(fd, F_SETLEASE, F_UNLCK);
	}
	phi_buf_init(b, max + 1);
	for (;;) {
		int r = phi_buf_reserve(b, 4096 < b->max - b->len ? 4096 : b->max - b->len);
		if (r < 0 || b->len == b->max) {
			phi_buf_done(b);
			return -EFBIG;
		}
		ssize_t n = read(fd, b->p + b->len, b->cap - b->len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			r = phi_neg_errno();
			phi_buf_done(b);
			return r;
		}
		if (n == 0)
			break;
		b->len += (size_t)n;
	}
	if (b->len > max) {
		phi_buf_done(b);
		return -EFBIG;
	}
	return 0;
}

int spool_journal_save(struct spool *s, const struct jrec *r, unsigned sync)
{
	_cleanup_free_ char *txt = NULL;
	char name[JOB_ID_MAX_NAME];
	int e = jrec_format(r, false, &txt);
	if (e < 0)
		return e;
	snprintf(name, sizeof name, "%s.json", r->id);
	return spool_write_atomic(s->d[SD_JOURNAL], name, txt, strlen(txt), sync);
}

int spool_journal_load(struct spool *s, const char *id, struct jrec *r)
{
	char name[JOB_ID_MAX_NAME];
	snprintf(name, sizeof name, "%s.json", id);
	_cleanup_buf_ struct phi_buf b = { 0 };
	int e = spool_read_file(s->d[SD_JOURNAL], name, JREC_MAX_BYTES, &b, NULL, false);
	if (e < 0)
		return e;
	return jrec_parse(b.p, b.len, r);
}

int spool_result_save(struct spool *s, enum spool_dir d, const struct jrec *r, unsigned sync)
{
	_cleanup_free_ char *txt = NULL;
	char name[JOB_ID_MAX_NAME];
	int e = jrec_format(r, true, &txt);
	if (e < 0)
		return e;
	snprintf(name, sizeof name, "%s.result.json", r->id);
	return spool_write_atomic(s->d[d], name, txt, strlen(txt), sync);
}

int spool_reject(struct spool *s, const char *name, unsigned long ino, const char *reason)
{
	char dst[300], rn[320];
	if (snprintf(dst, sizeof dst, "%lu-%s", ino, name) >= (int)sizeof dst)
		snprintf(dst, sizeof dst, "%lu-long-name", ino);
	snprintf(rn, sizeof rn, "%s.reason", dst);
	char line[512];
	int n = snprintf(line, sizeof line, "%s\n", reason);
	/* the reason first: a crash between the two leaves a reason without its file, never a
	 * refused file without its reason */
	int r = spool_write_atomic(s->d[SD_REJECTED], rn, line, (size_t)n, SPOOL_SYNC_FILE);
	if (r < 0)
		return r;
	return spool_move(s, SD_INCOMING, name, SD_REJECTED, dst, true);
}

int uid_in_group(uid_t uid, gid_t gid)
{
	char buf[16384];
	struct passwd pw, *pr = NULL;
	if (getpwuid_r(uid, &pw, buf, sizeof buf, &pr) != 0 || !pr)
		return 0; /* an unknown uid is in no group */
	if (pr->pw_gid == gid)
		return 1;
	char gbuf[16384];
	struct group gr, *grr = NULL;
	if (getgrgid_r(gid, &gr, gbuf, sizeof gbuf, &grr) != 0 || !grr)
		return 0;
	for (char **m = grr->gr_mem; m && *m; m++)
		if (strcmp(*m, pr->pw_name) == 0)
			return 1;
	return 0;
}
