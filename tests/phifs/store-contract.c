/* store-contract.c: the store.h contract, run by every backend's unit test
 * (test-store-local.c, tests/azure/test-store-azure.c). */
#include <dirent.h>
#include <sys/stat.h>

#include "store-contract.h"
#include "phifs/util.h"
#include "test.h"

/* ---- readdir collection ---- */

int contract_collect(void *ctx, const char *name, uint32_t type)
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

int contract_find(const struct names *ns, const char *name)
{
	for (int i = 0; i < ns->count; i++)
		if (!strcmp(ns->n[i], name))
			return i;
	return -1;
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
		CHECK_EQ(o->readdir(s, p, contract_collect, &(struct names){ 0 }), -EINVAL);
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
	CHECK_OK(o->readdir(s, "", contract_collect, &ns));
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

static void test_objects(struct phi_store *s, const struct store_caps *caps)
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
	CHECK(st.ino != 0);
	CHECK(S_ISREG(st.mode));
	CHECK_EQ(st.mode & 07777, 0600);
	CHECK_EQ(st.size, 5);
	CHECK_EQ(st.nlink, 1);
	CHECK_EQ(st.uid, getuid());
	if (caps->stat_hook)
		caps->stat_hook(caps->ctx, "d/f", &st);
	struct phi_store_stat st2;
	CHECK_OK(o->getattr(s, "d", &st2));
	CHECK(st2.ino != st.ino); /* distinct entries, distinct inode numbers */
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

static void test_namespace(struct phi_store *s, const struct store_caps *caps)
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
	if (caps->hardlinks) {
		CHECK_OK(o->link(s, "d/b", "d/b2"));
		CHECK_OK(o->getattr(s, "d/b", &st));
		CHECK_EQ(st.nlink, 2);
		CHECK_EQ(o->link(s, "d/b", "d/b2"), -EEXIST);
		CHECK_EQ(o->link(s, "missing", "d/b3"), -ENOENT);
		CHECK_OK(o->unlink(s, "d/b2"));
	} else {
		CHECK_EQ(o->link(s, "d/b", "d/b2"), -EPERM);
		CHECK_EQ(o->getattr(s, "d/b2", &st), -ENOENT);
	}
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
	if (caps->hardlinks) {
		CHECK_OK(o->link(s, "d/l", "d/l3")); /* links the symlink itself */
		CHECK_OK(o->getattr(s, "d/l3", &st));
		CHECK(S_ISLNK(st.mode));
		CHECK_OK(o->unlink(s, "d/l3"));
	}
	CHECK_OK(o->utimens(s, "d/l", NULL));
	CHECK_OK(o->chown(s, "d/l", getuid(), getgid()));

	/* readdir */
	CHECK_OK(o->mkdir(s, "d/sub", 0700));
	struct names ns = { 0 };
	CHECK_OK(o->readdir(s, "d", contract_collect, &ns));
	CHECK_EQ(ns.count, 4); /* f, b, l, sub; no . or .. */
	CHECK(contract_find(&ns, "f") >= 0 && ns.type[contract_find(&ns, "f")] == DT_REG);
	CHECK(contract_find(&ns, "b") >= 0 && ns.type[contract_find(&ns, "b")] == DT_REG);
	CHECK(contract_find(&ns, "l") >= 0 && ns.type[contract_find(&ns, "l")] == DT_LNK);
	CHECK(contract_find(&ns, "sub") >= 0 && ns.type[contract_find(&ns, "sub")] == DT_DIR);
	ns = (struct names){ .stop_after = 2 };
	CHECK_OK(o->readdir(s, "d", contract_collect, &ns));
	CHECK_EQ(ns.count, 2);
	ns = (struct names){ .fail_with = -EIO };
	CHECK_EQ(o->readdir(s, "d", contract_collect, &ns), -EIO);
	ns = (struct names){ 0 };
	CHECK_OK(o->readdir(s, "d/sub", contract_collect, &ns));
	CHECK_EQ(ns.count, 0);
	CHECK_EQ(o->readdir(s, "d/f", contract_collect, &ns), -ENOTDIR);
	CHECK_EQ(o->readdir(s, "d/missing", contract_collect, &ns), -ENOENT);
	int r = o->readdir(s, "d/l", contract_collect, &ns); /* a symlink is not a directory here */
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
	CHECK_OK(o->readdir(s, "", contract_collect, &ns));
	for (int i = 0; i < ns.count; i++)
		CHECK(strncmp(ns.n[i], ".tmp", 4) != 0);
	CHECK_EQ(ns.count, 3); /* d, k, empty */
	ns = (struct names){ 0 };
	CHECK_OK(o->readdir(s, "d", contract_collect, &ns));
	for (int i = 0; i < ns.count; i++)
		CHECK(strncmp(ns.n[i], ".tmp", 4) != 0);
	for (int i = 0; ns.count != 4 && i < ns.count; i++)
		fprintf(stderr, "d/ has %s\n", ns.n[i]);
	CHECK_EQ(ns.count, 4); /* f, b, l, k */

	struct phi_store_stat st;
	CHECK_OK(o->getattr(s, "k", &st));
	CHECK_EQ(st.mode & 07777, 0600);
}


/* unlink_held (optional): unlink with the attributes of what went, and the storage held
 * until release */
static void test_unlink_held(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	struct phi_store_stat st0, st;
	struct phi_store_obj *h = NULL;
	char buf[16];
	size_t n;

	if (!o->unlink_held)
		return;
	CHECK_OK(o->mkdir(s, "u", 0700));
	CHECK_OK(o->put(s, "u/a", "AAA", 3));
	CHECK_OK(o->getattr(s, "u/a", &st0));
	CHECK_OK(o->unlink_held(s, "u/a", &st, &h));
	CHECK(S_ISREG(st.mode));
	CHECK_EQ(st.size, 3);
	CHECK_EQ(st.ino, st0.ino);
	CHECK_EQ(o->getattr(s, "u/a", &st), -ENOENT);
	/* the name is free at once, while the old object is still held */
	CHECK_OK(o->put(s, "u/a", "B", 1));
	CHECK_OK(o->get(s, "u/a", buf, sizeof buf, &n));
	CHECK_EQ(n, 1);
	CHECK_OK(o->release(h));

	/* a symbolic link goes itself, unfollowed */
	CHECK_OK(o->symlink(s, "a", "u/l"));
	h = NULL;
	CHECK_OK(o->unlink_held(s, "u/l", &st, &h));
	CHECK(S_ISLNK(st.mode));
	CHECK_OK(o->release(h));
	CHECK_OK(o->get(s, "u/a", buf, sizeof buf, &n));

	/* refusals change nothing and hold nothing */
	CHECK_OK(o->mkdir(s, "u/sub", 0700));
	h = NULL;
	CHECK_EQ(o->unlink_held(s, "u/sub", &st, &h), -EISDIR);
	CHECK(h == NULL);
	CHECK_OK(o->getattr(s, "u/sub", &st));
	CHECK_EQ(o->unlink_held(s, "u/missing", &st, &h), -ENOENT);
	CHECK_EQ(o->unlink_held(s, "", &st, &h), -EINVAL);
	CHECK_EQ(o->unlink_held(s, "u/../u/a", &st, &h), -EINVAL);
	CHECK(h == NULL);
	CHECK_OK(o->unlink(s, "u/a"));
	CHECK_OK(o->rmdir(s, "u/sub"));
	CHECK_OK(o->rmdir(s, "u"));
}

/* getattr_in (optional): the attributes of named entries of one directory, each entry
 * with its own error, and nothing outside the directory */
static void test_getattr_in(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	struct phi_store_stat one, st[6];
	int err[6];

	if (!o->getattr_in)
		return;
	CHECK_OK(o->mkdir(s, "g", 0700));
	CHECK_OK(o->mkdir(s, "g/sub", 0700));
	CHECK_OK(o->put(s, "g/a", "AAAA", 4));
	CHECK_OK(o->symlink(s, "a", "g/l"));
	const char *names[6] = { "a", "sub", "l", "missing", "..", "sub/x" };
	CHECK_OK(o->getattr_in(s, "g", names, 6, st, err));
	CHECK_OK(err[0]);
	CHECK(S_ISREG(st[0].mode));
	CHECK_EQ(st[0].size, 4);
	CHECK_OK(o->getattr(s, "g/a", &one));
	CHECK_EQ(st[0].ino, one.ino);
	CHECK_OK(err[1]);
	CHECK(S_ISDIR(st[1].mode));
	CHECK_OK(err[2]);
	CHECK(S_ISLNK(st[2].mode)); /* not followed */
	CHECK_EQ(err[3], -ENOENT);
	CHECK_EQ(err[4], -EINVAL);
	CHECK_EQ(err[5], -EINVAL);
	CHECK_EQ(o->getattr_in(s, "g/missing", names, 1, st, err), -ENOENT);
	CHECK_EQ(o->getattr_in(s, "g/../g", names, 1, st, err), -EINVAL);
	CHECK_OK(o->unlink(s, "g/l"));
	CHECK_OK(o->unlink(s, "g/a"));
	CHECK_OK(o->rmdir(s, "g/sub"));
	CHECK_OK(o->rmdir(s, "g"));
}

/* prefetch_dir (optional): a hint only. Hints for missing, invalid or escaping paths are
 * taken without harm, many hints at once are dropped rather than queued without bound, and
 * nothing changes in the store; the caller closing the store (test end) stops the work. */
static void test_prefetch_dir(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	struct phi_store_stat st;
	uint8_t buf[8];
	size_t n;

	if (!o->prefetch_dir)
		return;
	CHECK_OK(o->mkdir(s, "pf", 0700));
	CHECK_OK(o->mkdir(s, "pf/sub", 0700));
	CHECK_OK(o->put(s, "pf/sub/.d", "DDDD", 4));
	o->prefetch_dir(s, "pf/sub", ".d");
	o->prefetch_dir(s, "pf/sub", NULL);
	o->prefetch_dir(s, "pf/missing", ".d");
	o->prefetch_dir(s, "pf/../pf", ".d");
	o->prefetch_dir(s, "/pf", "../x");
	o->prefetch_dir(s, "", ".d");
	o->prefetch_dir(s, "pf/sub", "x/../../y");
	for (int i = 0; i < 2000; i++)
		o->prefetch_dir(s, "pf", "sub");
	CHECK_OK(o->get(s, "pf/sub/.d", buf, sizeof(buf), &n));
	CHECK_EQ(n, 4);
	CHECK_OK(o->getattr(s, "pf/sub", &st));
	CHECK(S_ISDIR(st.mode));
	CHECK_OK(o->unlink(s, "pf/sub/.d"));
	CHECK_OK(o->rmdir(s, "pf/sub"));
	CHECK_OK(o->rmdir(s, "pf"));
	o->prefetch_dir(s, "pf/sub", ".d"); /* gone meanwhile: still harmless */
}

void store_contract_run(struct phi_store *s, const struct store_caps *caps)
{
	test_paths(s);
	test_objects(s, caps);
	test_namespace(s, caps);
	test_get_put(s);
	test_unlink_held(s);
	test_getattr_in(s);
	test_prefetch_dir(s);
}
