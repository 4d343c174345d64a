/* Unit test for the local directory store backend (phifs/store_local.c): every op,
 * its error cases, and that no path or planted symlink reaches outside the root.
 * The suite runs twice: with openat2, and under a seccomp filter that hides it. */
#include <dirent.h>
#include <ftw.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <stddef.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "phifs/store.h"
#include "phifs/util.h"
#include "test.h"

static char base[64];
static char root[128];
static char outside[128];

static int rm_one(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type == FTW_DP)
		return rmdir(p);
	return unlink(p);
}

static void setup(void)
{
	const char *t = getenv("TMPDIR");
	CHECK(snprintf(base, sizeof base, "%s/phi-store-XXXXXX", t && strlen(t) < 40 ? t : "/tmp") <
	      (int)sizeof base);
	CHECK(mkdtemp(base));
	snprintf(root, sizeof root, "%s/root", base);
	snprintf(outside, sizeof outside, "%s/outside", base);
	CHECK_OK(mkdir(root, 0700));
	CHECK_OK(mkdir(outside, 0700));
	char p[256];
	snprintf(p, sizeof p, "%s/secret", outside);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "secret", 6), 6);
	CHECK_OK(close(fd));
}

/* ---- readdir collection ---- */

struct names {
	char n[16][64];
	uint32_t type[16];
	int count;
	int stop_after; /* >0: return 1 after that many entries */
	int fail_with;  /* <0: return it on the first entry */
};

static int collect(void *ctx, const char *name, uint32_t type)
{
	struct names *ns = ctx;
	if (ns->fail_with < 0)
		return ns->fail_with;
	CHECK(ns->count < 16);
	CHECK(strlen(name) < 64);
	strcpy(ns->n[ns->count], name);
	ns->type[ns->count] = type;
	ns->count++;
	return ns->stop_after > 0 && ns->count >= ns->stop_after ? 1 : 0;
}

static int find(const struct names *ns, const char *name)
{
	for (int i = 0; i < ns->count; i++)
		if (!strcmp(ns->n[i], name))
			return i;
	return -1;
}

/* ---- tests ---- */

static void test_open_url(void)
{
	struct phi_store *s = NULL;
	char url[256];

	CHECK_OK(phi_store_open(root, NULL, &s));
	CHECK(s && s->ops && !strcmp(s->ops->scheme, "file"));
	phi_store_close(s);

	snprintf(url, sizeof url, "file://%s", root);
	CHECK_OK(phi_store_open(url, "", &s));
	phi_store_close(s);

	snprintf(url, sizeof url, "file://localhost%s", root);
	CHECK_OK(phi_store_open(url, NULL, &s));
	phi_store_close(s);

	s = NULL;
	CHECK_EQ(phi_store_open("az://account/container", "endpoint=http://127.0.0.1:10000", &s),
		 -EPROTONOSUPPORT);
	CHECK_EQ(phi_store_open("s3://bucket/x", NULL, &s), -EPROTONOSUPPORT);
	CHECK_EQ(phi_store_open("file://host/tmp", NULL, &s), -EINVAL);
	CHECK_EQ(phi_store_open("file://relative", NULL, &s), -EINVAL);
	CHECK_EQ(phi_store_open(root, "bogus=1", &s), -EINVAL);
	CHECK_EQ(phi_store_open("", NULL, &s), -EINVAL);
	CHECK(s == NULL); /* not written on failure */

	snprintf(url, sizeof url, "%s/missing", base);
	CHECK_EQ(phi_store_open(url, NULL, &s), -ENOENT);
	snprintf(url, sizeof url, "%s/secret", outside);
	CHECK_EQ(phi_store_open(url, NULL, &s), -ENOTDIR);
	CHECK(s == NULL);
}

static void test_paths(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	static char longname[PHI_STORE_NAME_MAX + 2];
	static char longpath[PHI_STORE_PATH_MAX + 256];
	memset(longname, 'a', PHI_STORE_NAME_MAX + 1);
	longname[PHI_STORE_NAME_MAX + 1] = 0;
	/* components of 200 bytes, 4096 bytes or more in all */
	size_t n = 0;
	while (n < PHI_STORE_PATH_MAX) {
		memset(longpath + n, 'b', 200);
		n += 200;
		longpath[n++] = '/';
	}
	longpath[n - 1] = 0;

	const char *bad[] = {
		"..", ".", "../x", "x/..", "a/../b", "a/./b", "/abs", "/", "a//b", "a/", "//",
		"a b", "a\\b", "a:b", "\xc3\xa9", "a\nb", "*", longname, longpath,
	};
	struct phi_store_stat st = { .ino = 42 };
	struct phi_store_obj *obj = NULL;
	char buf[8];
	size_t len = 7;
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		const char *p = bad[i];
		CHECK_EQ(o->getattr(s, p, &st), -EINVAL);
		CHECK_EQ(o->mkdir(s, p, 0700), -EINVAL);
		CHECK_EQ(o->rmdir(s, p), -EINVAL);
		CHECK_EQ(o->unlink(s, p), -EINVAL);
		CHECK_EQ(o->rename(s, p, "x", 0), -EINVAL);
		CHECK_EQ(o->rename(s, "x", p, 0), -EINVAL);
		CHECK_EQ(o->link(s, p, "x"), -EINVAL);
		CHECK_EQ(o->link(s, "x", p), -EINVAL);
		CHECK_EQ(o->symlink(s, "t", p), -EINVAL);
		CHECK_EQ(o->readlink(s, p, buf, sizeof buf, &len), -EINVAL);
		CHECK_EQ(o->chmod(s, p, 0600), -EINVAL);
		CHECK_EQ(o->chown(s, p, getuid(), getgid()), -EINVAL);
		CHECK_EQ(o->utimens(s, p, NULL), -EINVAL);
		CHECK_EQ(o->readdir(s, p, collect, &(struct names){ 0 }), -EINVAL);
		CHECK_EQ(o->open(s, p, O_RDWR | O_CREAT, 0600, &obj), -EINVAL);
		CHECK_EQ(o->get(s, p, buf, sizeof buf, &len), -EINVAL);
		CHECK_EQ(o->put(s, p, "x", 1), -EINVAL);
		CHECK_EQ(o->fsync_dir(s, p), -EINVAL);
	}
	/* the root "" only where it makes sense */
	CHECK_EQ(o->mkdir(s, "", 0700), -EINVAL);
	CHECK_EQ(o->rmdir(s, ""), -EINVAL);
	CHECK_EQ(o->unlink(s, ""), -EINVAL);
	CHECK_EQ(o->open(s, "", O_RDONLY, 0, &obj), -EINVAL);
	CHECK_EQ(o->put(s, "", "x", 1), -EINVAL);
	CHECK_EQ(o->getattr(s, NULL, &st), -EINVAL);
	CHECK_EQ(st.ino, 42); /* not written on failure */
	CHECK_EQ(len, 7);
	CHECK(obj == NULL);

	/* nothing was created by any of the above */
	struct names ns = { 0 };
	CHECK_OK(o->readdir(s, "", collect, &ns));
	CHECK_EQ(ns.count, 0);

	/* the limits themselves are fine */
	longname[PHI_STORE_NAME_MAX] = 0;
	CHECK_OK(o->put(s, longname, "L", 1));
	CHECK_OK(o->getattr(s, longname, &st));
	CHECK_EQ(st.size, 1);
	CHECK_OK(o->unlink(s, longname));
	CHECK_OK(o->put(s, "Az09_.-x", "v", 1));
	CHECK_OK(o->unlink(s, "Az09_.-x"));
	CHECK_OK(o->put(s, "..x", "v", 1));
	CHECK_OK(o->unlink(s, "..x"));
}

static int count_one(void *ctx, const char *name, uint32_t type)
{
	(void)name;
	(void)type;
	(*(int *)ctx)++;
	return 0;
}

/* entries of a store directory, hidden ones included */
static int count_entries(struct phi_store *s, const char *path)
{
	int n = 0;
	CHECK_OK(s->ops->readdir(s, path, count_one, &n));
	return n;
}

static void test_objects(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	struct phi_store_obj *obj = NULL, *obj2 = NULL;
	struct phi_store_stat st;
	uint8_t buf[64];
	size_t n;
	uint64_t sz;

	CHECK_OK(o->mkdir(s, "d", 0700));
	CHECK_EQ(o->mkdir(s, "d", 0700), -EEXIST);
	CHECK_EQ(o->mkdir(s, "nope/d", 0700), -ENOENT);
	CHECK_OK(o->getattr(s, "d", &st));
	CHECK(S_ISDIR(st.mode));
	CHECK_EQ(st.mode & 07777, 0700);

	CHECK_EQ(o->open(s, "d/f", O_RDWR, 0, &obj), -ENOENT);
	CHECK_OK(o->open(s, "d/f", O_RDWR | O_CREAT | O_EXCL, 0600, &obj));
	CHECK(obj);
	CHECK_EQ(o->open(s, "d/f", O_RDWR | O_CREAT | O_EXCL, 0600, &obj2), -EEXIST);
	CHECK(obj2 == NULL);
	CHECK_EQ(o->open(s, "d", O_RDONLY, 0, &obj2), -EISDIR);

	CHECK_OK(o->pwrite(obj, "0123456789", 10, 0));
	CHECK_OK(o->pwrite(obj, "abc", 3, 20)); /* leaves a hole */
	CHECK_OK(o->size(obj, &sz));
	CHECK_EQ(sz, 23);
	CHECK_OK(o->pread(obj, buf, 4, 2, &n));
	CHECK_EQ(n, 4);
	CHECK_MEM(buf, "2345", 4);
	CHECK_OK(o->pread(obj, buf, sizeof buf, 18, &n)); /* short only at the end */
	CHECK_EQ(n, 5);
	CHECK_MEM(buf, "\0\0abc", 5);
	CHECK_OK(o->pread(obj, buf, sizeof buf, 100, &n));
	CHECK_EQ(n, 0);
	CHECK_EQ(o->pread(obj, buf, 1, (uint64_t)INT64_MAX + 1, &n), -EINVAL);
	CHECK_EQ(o->pwrite(obj, buf, 1, (uint64_t)INT64_MAX + 1), -EINVAL);
	CHECK_OK(o->truncate(obj, 5));
	CHECK_OK(o->size(obj, &sz));
	CHECK_EQ(sz, 5);
	CHECK_EQ(o->truncate(obj, (uint64_t)INT64_MAX + 1), -EINVAL);
	CHECK_OK(o->fsync(obj, false));
	CHECK_OK(o->fsync(obj, true));
	CHECK_OK(o->release(obj));

	/* create: exclusive, with its content from the first moment, and no temp left behind */
	CHECK_OK(o->create(s, "d/c", 0640, (uint32_t)-1, (uint32_t)-1, "hdr", 3, &obj2));
	CHECK_OK(o->getattr(s, "d/c", &st));
	CHECK(S_ISREG(st.mode));
	CHECK_EQ(st.mode & 07777, 0640);
	CHECK_EQ(st.size, 3);
	CHECK_OK(o->pwrite(obj2, "!", 1, 3));
	CHECK_OK(o->pread(obj2, buf, sizeof buf, 0, &n));
	CHECK_EQ(n, 4);
	CHECK_MEM(buf, "hdr!", 4);
	CHECK_OK(o->release(obj2));
	obj2 = NULL;
	CHECK_EQ(o->create(s, "d/c", 0600, (uint32_t)-1, (uint32_t)-1, "x", 1, &obj2), -EEXIST);
	CHECK(obj2 == NULL);
	CHECK_EQ(o->create(s, "d/f", 0600, (uint32_t)-1, (uint32_t)-1, "x", 1, &obj2), -EEXIST);
	CHECK_EQ(o->create(s, "nope/c", 0600, (uint32_t)-1, (uint32_t)-1, "x", 1, &obj2), -ENOENT);
	CHECK_EQ(o->create(s, "d/../c", 0600, (uint32_t)-1, (uint32_t)-1, "x", 1, &obj2), -EINVAL);
	CHECK_OK(o->getattr(s, "d/c", &st));
	CHECK_EQ(st.size, 4); /* the failed create did not touch it */
	CHECK_EQ(count_entries(s, "d"), 2);
	CHECK_OK(o->unlink(s, "d/c"));

	/* O_TRUNC and read-only opens */
	CHECK_OK(o->open(s, "d/f", O_RDONLY, 0, &obj));
	CHECK_OK(o->pread(obj, buf, sizeof buf, 0, &n));
	CHECK_EQ(n, 5);
	CHECK_MEM(buf, "01234", 5);
	CHECK(o->pwrite(obj, "x", 1, 0) < 0); /* read-only fd */
	CHECK(o->release(obj) < 0);          /* the write error is reported again */
	CHECK_OK(o->open(s, "d/f", O_WRONLY | O_TRUNC, 0, &obj));
	CHECK_OK(o->size(obj, &sz));
	CHECK_EQ(sz, 0);
	CHECK_OK(o->pwrite(obj, "hello", 5, 0));
	CHECK_OK(o->release(obj));

	/* getattr */
	CHECK_OK(o->getattr(s, "d/f", &st));
	struct stat ks;
	char p[256];
	snprintf(p, sizeof p, "%s/d/f", root);
	CHECK_OK(lstat(p, &ks));
	CHECK_EQ(st.ino, ks.st_ino);
	CHECK(S_ISREG(st.mode));
	CHECK_EQ(st.mode & 07777, 0600);
	CHECK_EQ(st.size, 5);
	CHECK_EQ(st.nlink, 1);
	CHECK_EQ(st.uid, getuid());
	CHECK_EQ(st.gid, ks.st_gid);
	CHECK_EQ(st.mtime.tv_sec, ks.st_mtim.tv_sec);
	CHECK_EQ(st.mtime.tv_nsec, ks.st_mtim.tv_nsec);
	CHECK_EQ(o->getattr(s, "d/missing", &st), -ENOENT);
	CHECK_EQ(o->getattr(s, "d/f/x", &st), -ENOTDIR);
	CHECK_OK(o->getattr(s, "", &st));
	CHECK(S_ISDIR(st.mode));

	/* chmod, chown, utimens */
	CHECK_OK(o->chmod(s, "d/f", 0640));
	CHECK_OK(o->getattr(s, "d/f", &st));
	CHECK_EQ(st.mode & 07777, 0640);
	CHECK_EQ(o->chmod(s, "d/missing", 0600), -ENOENT);
	CHECK_OK(o->chown(s, "d/f", getuid(), getgid()));
	CHECK_OK(o->chown(s, "d/f", (uint32_t)-1, (uint32_t)-1));
	CHECK_EQ(o->chown(s, "d/missing", getuid(), getgid()), -ENOENT);
	struct timespec tv[2] = { { .tv_sec = 1000000000, .tv_nsec = 5 },
				  { .tv_sec = 1200000000, .tv_nsec = 7 } };
	CHECK_OK(o->utimens(s, "d/f", tv));
	CHECK_OK(o->getattr(s, "d/f", &st));
	CHECK_EQ(st.atime.tv_sec, 1000000000);
	CHECK_EQ(st.atime.tv_nsec, 5);
	CHECK_EQ(st.mtime.tv_sec, 1200000000);
	CHECK_EQ(st.mtime.tv_nsec, 7);
	struct timespec tv2[2] = { { .tv_nsec = UTIME_OMIT }, { .tv_sec = 1300000000 } };
	CHECK_OK(o->utimens(s, "d/f", tv2));
	CHECK_OK(o->getattr(s, "d/f", &st));
	CHECK_EQ(st.atime.tv_sec, 1000000000);
	CHECK_EQ(st.mtime.tv_sec, 1300000000);
	CHECK_OK(o->utimens(s, "", NULL));
	CHECK_OK(o->chmod(s, "", 0700));
	CHECK_EQ(o->utimens(s, "d/missing", NULL), -ENOENT);

	/* statfs, fsync_dir */
	struct statvfs sv;
	CHECK_OK(o->statfs(s, &sv));
	CHECK(sv.f_bsize > 0);
	CHECK_OK(o->fsync_dir(s, ""));
	CHECK_OK(o->fsync_dir(s, "d"));
	CHECK_EQ(o->fsync_dir(s, "d/f"), -ENOTDIR);
	CHECK_EQ(o->fsync_dir(s, "d/missing"), -ENOENT);
}

static void test_namespace(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	struct phi_store_stat st;
	char buf[64];
	size_t n;

	CHECK_OK(o->put(s, "d/a", "AAA", 3));
	CHECK_OK(o->put(s, "d/b", "BB", 2));

	/* rename: flags */
	CHECK_EQ(o->rename(s, "d/a", "d/b", RENAME_NOREPLACE), -EEXIST);
	CHECK_EQ(o->rename(s, "d/a", "d/b", RENAME_NOREPLACE | RENAME_EXCHANGE), -EINVAL);
	CHECK_EQ(o->rename(s, "d/a", "d/b", 0x80), -EINVAL);
	CHECK_OK(o->rename(s, "d/a", "d/b", RENAME_EXCHANGE));
	CHECK_OK(o->get(s, "d/a", buf, sizeof buf, &n));
	CHECK_EQ(n, 2);
	CHECK_MEM(buf, "BB", 2);
	CHECK_OK(o->get(s, "d/b", buf, sizeof buf, &n));
	CHECK_EQ(n, 3);
	CHECK_MEM(buf, "AAA", 3);
	CHECK_EQ(o->rename(s, "d/a", "d/none", RENAME_EXCHANGE), -ENOENT);
	CHECK_OK(o->rename(s, "d/a", "c", RENAME_NOREPLACE)); /* across directories */
	CHECK_EQ(o->getattr(s, "d/a", &st), -ENOENT);
	CHECK_OK(o->rename(s, "c", "d/b", 0)); /* replaces */
	CHECK_OK(o->get(s, "d/b", buf, sizeof buf, &n));
	CHECK_MEM(buf, "BB", 2);
	CHECK_EQ(o->rename(s, "missing", "x", 0), -ENOENT);

	/* link */
	CHECK_OK(o->link(s, "d/b", "d/b2"));
	CHECK_OK(o->getattr(s, "d/b", &st));
	CHECK_EQ(st.nlink, 2);
	CHECK_EQ(o->link(s, "d/b", "d/b2"), -EEXIST);
	CHECK_EQ(o->link(s, "missing", "d/b3"), -ENOENT);
	CHECK_OK(o->unlink(s, "d/b2"));
	CHECK_OK(o->getattr(s, "d/b", &st));
	CHECK_EQ(st.nlink, 1);

	/* symlink: the target is opaque bytes, never resolved */
	const char *target = "ZW5jcnlwdGVk../../../etc/passwd";
	CHECK_OK(o->symlink(s, target, "d/l"));
	CHECK_EQ(o->symlink(s, target, "d/l"), -EEXIST);
	CHECK_EQ(o->symlink(s, "", "d/l2"), -EINVAL);
	CHECK_OK(o->readlink(s, "d/l", buf, sizeof buf, &n));
	CHECK_EQ(n, strlen(target));
	CHECK(!strcmp(buf, target));
	CHECK_EQ(o->readlink(s, "d/l", buf, strlen(target), &n), -ENAMETOOLONG);
	CHECK_EQ(o->readlink(s, "d/b", buf, sizeof buf, &n), -EINVAL);
	CHECK_EQ(o->readlink(s, "d/missing", buf, sizeof buf, &n), -ENOENT);
	CHECK_OK(o->getattr(s, "d/l", &st));
	CHECK(S_ISLNK(st.mode));
	CHECK_EQ(st.size, strlen(target));
	CHECK_OK(o->link(s, "d/l", "d/l3")); /* links the symlink itself */
	CHECK_OK(o->getattr(s, "d/l3", &st));
	CHECK(S_ISLNK(st.mode));
	CHECK_OK(o->unlink(s, "d/l3"));
	CHECK_OK(o->utimens(s, "d/l", NULL));
	CHECK_OK(o->chown(s, "d/l", getuid(), getgid()));

	/* readdir */
	CHECK_OK(o->mkdir(s, "d/sub", 0700));
	struct names ns = { 0 };
	CHECK_OK(o->readdir(s, "d", collect, &ns));
	CHECK_EQ(ns.count, 4); /* f, b, l, sub; no . or .. */
	CHECK(find(&ns, "f") >= 0 && ns.type[find(&ns, "f")] == DT_REG);
	CHECK(find(&ns, "b") >= 0 && ns.type[find(&ns, "b")] == DT_REG);
	CHECK(find(&ns, "l") >= 0 && ns.type[find(&ns, "l")] == DT_LNK);
	CHECK(find(&ns, "sub") >= 0 && ns.type[find(&ns, "sub")] == DT_DIR);
	ns = (struct names){ .stop_after = 2 };
	CHECK_OK(o->readdir(s, "d", collect, &ns));
	CHECK_EQ(ns.count, 2);
	ns = (struct names){ .fail_with = -EIO };
	CHECK_EQ(o->readdir(s, "d", collect, &ns), -EIO);
	ns = (struct names){ 0 };
	CHECK_OK(o->readdir(s, "d/sub", collect, &ns));
	CHECK_EQ(ns.count, 0);
	CHECK_EQ(o->readdir(s, "d/f", collect, &ns), -ENOTDIR);
	CHECK_EQ(o->readdir(s, "d/missing", collect, &ns), -ENOENT);
	int r = o->readdir(s, "d/l", collect, &ns); /* a symlink is not a directory here */
	CHECK(r == -ELOOP || r == -ENOTDIR);

	/* rmdir, unlink */
	CHECK_EQ(o->rmdir(s, "d"), -ENOTEMPTY);
	CHECK_EQ(o->rmdir(s, "d/f"), -ENOTDIR);
	CHECK_EQ(o->unlink(s, "d/sub"), -EISDIR);
	CHECK_OK(o->rmdir(s, "d/sub"));
	CHECK_EQ(o->rmdir(s, "d/sub"), -ENOENT);
	CHECK_EQ(o->unlink(s, "d/missing"), -ENOENT);
}

static void test_get_put(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	char buf[64];
	size_t n = 99;
	struct names ns;

	CHECK_OK(o->put(s, "k", "hello", 5));
	CHECK_OK(o->get(s, "k", buf, sizeof buf, &n));
	CHECK_EQ(n, 5);
	CHECK_MEM(buf, "hello", 5);
	CHECK_OK(o->put(s, "k", "a longer value", 14)); /* replaced whole */
	CHECK_OK(o->get(s, "k", buf, sizeof buf, &n));
	CHECK_EQ(n, 14);
	CHECK_MEM(buf, "a longer value", 14);
	CHECK_OK(o->put(s, "k", "ab", 2)); /* shorter: no stale tail */
	CHECK_OK(o->get(s, "k", buf, sizeof buf, &n));
	CHECK_EQ(n, 2);
	CHECK_OK(o->put(s, "empty", NULL, 0));
	CHECK_OK(o->get(s, "empty", buf, sizeof buf, &n));
	CHECK_EQ(n, 0);

	/* exact fit, then one byte too few */
	CHECK_OK(o->get(s, "k", buf, 2, &n));
	CHECK_EQ(n, 2);
	n = 99;
	CHECK_EQ(o->get(s, "k", buf, 1, &n), -EFBIG);
	CHECK_EQ(n, 99);
	CHECK_EQ(o->get(s, "missing", buf, sizeof buf, &n), -ENOENT);
	CHECK_EQ(o->get(s, "d", buf, sizeof buf, &n), -EISDIR);
	CHECK_EQ(o->put(s, "nodir/k", "x", 1), -ENOENT);
	CHECK_EQ(o->put(s, "d/f/k", "x", 1), -ENOTDIR);

	/* nested, and no temp file is left behind anywhere */
	CHECK_OK(o->put(s, "d/k", "nested", 6));
	CHECK_OK(o->get(s, "d/k", buf, sizeof buf, &n));
	CHECK_MEM(buf, "nested", 6);
	CHECK_EQ(o->put(s, "d", "x", 1), -EISDIR); /* failed put leaves no temp either */
	ns = (struct names){ 0 };
	CHECK_OK(o->readdir(s, "", collect, &ns));
	for (int i = 0; i < ns.count; i++)
		CHECK(strncmp(ns.n[i], ".tmp", 4) != 0);
	CHECK_EQ(ns.count, 3); /* d, k, empty */
	ns = (struct names){ 0 };
	CHECK_OK(o->readdir(s, "d", collect, &ns));
	for (int i = 0; i < ns.count; i++)
		CHECK(strncmp(ns.n[i], ".tmp", 4) != 0);
	CHECK_EQ(ns.count, 4); /* f, b, l, k */

	struct phi_store_stat st;
	CHECK_OK(o->getattr(s, "k", &st));
	CHECK_EQ(st.mode & 07777, 0600);
}

static void test_no_escape(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	char p[256];
	char buf[64];
	size_t n = 99;
	struct phi_store_obj *obj = NULL;
	struct phi_store_stat st = { .ino = 42 };
	struct names ns = { 0 };
	struct stat before, after;

	/* symlinks planted inside the root, behind the store's back */
	snprintf(p, sizeof p, "%s/esc", root);
	CHECK_OK(symlink(outside, p));
	snprintf(p, sizeof p, "%s/rel", root);
	CHECK_OK(symlink("../outside", p));
	snprintf(p, sizeof p, "%s/file", root);
	char secret[256];
	snprintf(secret, sizeof secret, "%s/secret", outside);
	CHECK_OK(symlink(secret, p));
	CHECK_OK(stat(outside, &before));

	/* the last component is never followed */
	CHECK_EQ(o->open(s, "file", O_RDONLY, 0, &obj), -ELOOP);
	CHECK_EQ(o->open(s, "file", O_RDWR | O_TRUNC, 0, &obj), -ELOOP);
	CHECK_EQ(o->open(s, "file", O_RDWR | O_CREAT, 0600, &obj), -ELOOP);
	CHECK_EQ(o->open(s, "esc", O_RDONLY, 0, &obj), -ELOOP);
	CHECK_EQ(o->get(s, "file", buf, sizeof buf, &n), -ELOOP);
	int r = o->readdir(s, "esc", collect, &ns);
	CHECK(r == -ELOOP || r == -ENOTDIR);
	r = o->fsync_dir(s, "esc");
	CHECK(r == -ELOOP || r == -ENOTDIR);
	CHECK(obj == NULL);
	CHECK_EQ(n, 99);
	CHECK_OK(o->getattr(s, "esc", &st));
	CHECK(S_ISLNK(st.mode)); /* lstat semantics */
	CHECK(o->chmod(s, "esc", 0777) < 0);
	CHECK(o->chmod(s, "file", 0777) < 0);

	/* nor is any intermediate one */
	st.ino = 42;
	const char *via[] = { "esc/secret", "rel/secret", "file/x" };
	for (size_t i = 0; i < ARRAY_SIZE(via); i++) {
		CHECK(o->open(s, via[i], O_RDONLY, 0, &obj) < 0);
		CHECK(o->get(s, via[i], buf, sizeof buf, &n) < 0);
		CHECK(o->getattr(s, via[i], &st) < 0);
		CHECK(o->chmod(s, via[i], 0777) < 0);
		CHECK(o->utimens(s, via[i], NULL) < 0);
		CHECK(o->unlink(s, via[i]) < 0);
		CHECK(o->rename(s, via[i], "stolen", 0) < 0);
		CHECK(o->link(s, via[i], "stolen") < 0);
		CHECK(o->readlink(s, via[i], buf, sizeof buf, &n) < 0);
	}
	CHECK(o->open(s, "esc/new", O_RDWR | O_CREAT, 0600, &obj) < 0);
	CHECK(o->put(s, "esc/new", "x", 1) < 0);
	CHECK(o->put(s, "rel/new", "x", 1) < 0);
	CHECK(o->mkdir(s, "esc/newdir", 0700) < 0);
	CHECK(o->symlink(s, "t", "esc/newlink") < 0);
	CHECK(o->readdir(s, "rel", collect, &ns) < 0);
	CHECK(obj == NULL);
	CHECK_EQ(ns.count, 0);
	CHECK_EQ(n, 99);
	CHECK_EQ(st.ino, 42);

	/* outside is untouched: same entries, same mode, same content */
	DIR *d = opendir(outside);
	CHECK(d);
	int entries = 0;
	for (struct dirent *de; (de = readdir(d));)
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			entries++;
	closedir(d);
	CHECK_EQ(entries, 1);
	CHECK_OK(stat(outside, &after));
	CHECK_EQ(after.st_mode, before.st_mode);
	CHECK_OK(stat(secret, &after));
	CHECK_EQ(after.st_mode & 07777, 0600);
	CHECK_EQ(after.st_size, 6);
	CHECK_EQ(o->getattr(s, "stolen", &st), -ENOENT);

	/* the planted links can still be removed through the store */
	CHECK_OK(o->unlink(s, "esc"));
	CHECK_OK(o->unlink(s, "rel"));
	CHECK_OK(o->unlink(s, "file"));
}

static void run_suite(void)
{
	setup();
	test_open_url();

	_cleanup_store_ struct phi_store *s = NULL;
	CHECK_OK(phi_store_local_open(root, &s));
	CHECK_EQ(phi_store_local_open(NULL, &s), -EINVAL);
	CHECK(s != NULL);

	test_paths(s);
	test_objects(s);
	test_namespace(s);
	test_get_put(s);
	test_no_escape(s);

	phi_store_closep(&s);
	CHECK_OK(nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS));
}

/* Make openat2 fail with ENOSYS, as on an old kernel or in a sandbox that does not know it. */
static int deny_openat2(void)
{
	struct sock_filter f[] = {
		BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
		BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, SYS_openat2, 0, 1),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ENOSYS),
		BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
	};
	struct sock_fprog prog = { .len = ARRAY_SIZE(f), .filter = f };
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return -errno;
	if (prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) < 0)
		return -errno;
	return 0;
}

int main(void)
{
	/* 1. as the kernel allows (openat2) */
	run_suite();

	/* 2. openat2 hidden by a filter installed after the store was opened
	 *    (a worker that sandboxes itself): each call falls back */
	pid_t pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		setup();
		_cleanup_store_ struct phi_store *s = NULL;
		CHECK_OK(phi_store_local_open(root, &s));
		if (deny_openat2() < 0) {
			phi_store_closep(&s);
			CHECK_OK(nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS));
			exit(0);
		}
		CHECK_OK(s->ops->mkdir(s, "x", 0700));
		CHECK_OK(s->ops->put(s, "x/y", "z", 1));
		struct phi_store_stat st;
		CHECK_OK(s->ops->getattr(s, "x/y", &st));
		CHECK_EQ(st.size, 1);
		test_no_escape(s);
		phi_store_closep(&s);
		CHECK_OK(nftw(base, rm_one, 16, FTW_DEPTH | FTW_PHYS));
		exit(0);
	}
	int status;
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status));
	CHECK_EQ(WEXITSTATUS(status), 0);

	/* 3. openat2 hidden from the start: the whole suite on the component walk */
	pid = fork();
	CHECK(pid >= 0);
	if (pid == 0) {
		int r = deny_openat2();
		if (r < 0) {
			fprintf(stderr, "seccomp unavailable (%s), fallback walk not tested\n",
				strerror(-r));
			exit(0);
		}
		CHECK(syscall(SYS_openat2, AT_FDCWD, ".", NULL, 0) < 0 && errno == ENOSYS);
		run_suite();
		exit(0);
	}
	CHECK_EQ(waitpid(pid, &status, 0), pid);
	CHECK(WIFEXITED(status));
	CHECK_EQ(WEXITSTATUS(status), 0);
	return 0;
}
