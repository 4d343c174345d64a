/* Unit test for the local directory store backend (phifs/store_local.c): every op,
 * its error cases, and that no path or planted symlink reaches outside the root.
 * The suite runs twice: with openat2, and under a seccomp filter that hides it. */
#include <dirent.h>
#include <ftw.h>
#include <pthread.h>
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
/* the shared contract suite is compiled in here: the executable's source list in the
 * union-merged meson.build is not edited */
#include "store-contract.c"

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
	/* az:// reaches the Azure backend, which wants a key before any request */
	unsetenv("CREDENTIALS_DIRECTORY");
	CHECK_EQ(phi_store_open("az://account/container", "endpoint=http://127.0.0.1:10000", &s),
		 -ENOKEY);
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
	int r = o->readdir(s, "esc", contract_collect, &ns);
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
	CHECK(o->readdir(s, "rel", contract_collect, &ns) < 0);
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

/* the local backend reports the kernel's own inode and times */
static void local_stat_hook(void *ctx, const char *path, const struct phi_store_stat *st)
{
	(void)ctx;
	struct stat ks;
	char p[256];
	snprintf(p, sizeof p, "%s/%s", root, path);
	CHECK_OK(lstat(p, &ks));
	CHECK_EQ(st->ino, ks.st_ino);
	CHECK_EQ(st->gid, ks.st_gid);
	CHECK_EQ(st->mtime.tv_sec, ks.st_mtim.tv_sec);
	CHECK_EQ(st->mtime.tv_nsec, ks.st_mtim.tv_nsec);
}

/* Patient directories ("data/<tag>") are reached through kept descriptors: contents read
 * right under concurrency and slot reuse, a planted link is not followed, and a directory
 * replaced by hand is seen within the cache's second. */
struct pd_worker {
	struct phi_store *s;
	unsigned seed;
	int bad;
};

#define PD_DIRS 150

static void *pd_hammer(void *arg)
{
	struct pd_worker *w = arg;
	for (int i = 0; i < 3000; i++) {
		unsigned k = (unsigned)rand_r(&w->seed) % PD_DIRS;
		char p[64], want[16], buf[16];
		size_t n = 0;
		snprintf(p, sizeof p, "data/p%03u/f", k);
		int len = snprintf(want, sizeof want, "content %03u", k);
		struct phi_store_stat st;
		if (w->s->ops->getattr(w->s, p, &st) < 0 || st.size != (uint64_t)len ||
		    w->s->ops->get(w->s, p, buf, sizeof buf, &n) < 0 || n != (size_t)len ||
		    memcmp(buf, want, n) != 0)
			w->bad++;
	}
	return NULL;
}

static void test_patient_dirs(void)
{
	char r2[160], p[256];
	snprintf(r2, sizeof r2, "%s/root2", base);
	CHECK_OK(mkdir(r2, 0700));
	snprintf(p, sizeof p, "%s/data", r2);
	CHECK_OK(mkdir(p, 0700)); /* before open: the store keeps data/ */
	_cleanup_store_ struct phi_store *s = NULL;
	CHECK_OK(phi_store_local_open(r2, &s));
	const struct phi_store_ops *o = s->ops;
	for (unsigned k = 0; k < PD_DIRS; k++) {
		char d[64], f[64], c[16];
		snprintf(d, sizeof d, "data/p%03u", k);
		snprintf(f, sizeof f, "data/p%03u/f", k);
		int len = snprintf(c, sizeof c, "content %03u", k);
		CHECK_OK(o->mkdir(s, d, 0700));
		CHECK_OK(o->put(s, f, c, (size_t)len));
	}
	struct pd_worker w[3];
	pthread_t th[3];
	for (int i = 0; i < 3; i++) {
		w[i] = (struct pd_worker){ .s = s, .seed = 17u + (unsigned)i };
		CHECK_OK(pthread_create(&th[i], NULL, pd_hammer, &w[i]));
	}
	for (int i = 0; i < 3; i++) {
		CHECK_OK(pthread_join(th[i], NULL));
		CHECK_EQ(w[i].bad, 0);
	}

	struct phi_store_stat st;
	char buf[16];
	size_t n = 0;
	CHECK_EQ(o->getattr(s, "data/nope/f", &st), -ENOENT);
	snprintf(p, sizeof p, "%s/data/esc", r2);
	CHECK_OK(symlink(outside, p)); /* planted behind the store's back */
	CHECK(o->getattr(s, "data/esc/secret", &st) < 0);
	CHECK(o->get(s, "data/esc/secret", buf, sizeof buf, &n) < 0);
	CHECK_EQ(n, 0);

	/* p000 replaced by hand (phifs never does this): a stat sees the new one within 1 s;
	 * what reads or changes the store resolves the path afresh at once */
	CHECK_OK(o->getattr(s, "data/p000/f", &st));
	CHECK_EQ(st.size, 11);
	char from[256], to[256];
	snprintf(from, sizeof from, "%s/data/p000", r2);
	snprintf(to, sizeof to, "%s/data/old", r2);
	CHECK_OK(rename(from, to));
	CHECK_OK(o->mkdir(s, "data/p000", 0700));
	CHECK_OK(o->put(s, "data/p000/f", "new", 3));
	n = 0;
	CHECK_OK(o->get(s, "data/p000/f", buf, sizeof buf, &n));
	CHECK(n == 3 && !memcmp(buf, "new", 3));
	struct phi_store_obj *obj = NULL;
	CHECK_OK(o->create(s, "data/p000/g", 0600, (uint32_t)getuid(), (uint32_t)getgid(), "g", 1,
			   &obj));
	CHECK_OK(o->release(obj));
	snprintf(p, sizeof p, "%s/data/p000/g", r2);
	CHECK_OK(access(p, F_OK));
	bool seen = false;
	for (int i = 0; i < 40 && !seen; i++) {
		seen = o->getattr(s, "data/p000/f", &st) == 0 && st.size == 3;
		if (!seen)
			usleep(50000);
	}
	CHECK(seen);
	phi_store_closep(&s);
}

static void run_suite(void)
{
	setup();
	test_open_url();

	_cleanup_store_ struct phi_store *s = NULL;
	CHECK_OK(phi_store_local_open(root, &s));
	CHECK_EQ(phi_store_local_open(NULL, &s), -EINVAL);
	CHECK(s != NULL);

	store_contract_run(s, &(struct store_caps){ .hardlinks = true, .stat_hook = local_stat_hook });
	test_no_escape(s);
	phi_store_closep(&s);
	test_patient_dirs();

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