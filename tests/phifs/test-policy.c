/* test-policy: each role's allowed and denied operations, grant windows to the second,
 * revocation and emergency flags in decisions, the /proc parsers (golden vectors) and
 * identities of this process, a thread, a child, a dead pid and pid 0. */
#include <dirent.h>
#include <errno.h>
#include <ftw.h>
#include <grp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <sys/resource.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "phifs/crypto.h"
#include "phifs/grants.h"
#include "phifs/keys.h"
#include "phifs/policy.h"
#include "phifs/store.h"
#include "phifs/util.h"
#include "test.h"

static char root[] = "/tmp/test-policy.XXXXXX";

#define T0 1800000000ull
#define DAY 86400ull

static struct phi_store *st;
static struct phi_keyring *kr;
static struct phi_grants *gs;

enum { U_SERVICE = 3001, U_PROVIDER, U_EMERG, U_JOB, U_ADMIN, U_AUDITOR, U_NONE, U_REVOKED };

static struct phi_grant grant(uint32_t uid, enum phi_role role, const char *patient)
{
	struct phi_grant g = {
		.principal_kind = PHI_PRINCIPAL_USER,
		.principal_id = uid,
		.role = (uint8_t)role,
		.purpose = PHI_PURPOSE_OPERATIONS,
		.not_before = T0,
		.expiry = T0 + DAY,
		.granted_by_name = "root",
	};
	snprintf(g.principal_name, sizeof(g.principal_name), "u%u", (unsigned)uid);
	snprintf(g.patient, sizeof(g.patient), "%s", patient);
	if (role == PHI_ROLE_PROVIDER) {
		g.purpose = PHI_PURPOSE_TREATMENT;
		snprintf(g.consent, sizeof(g.consent), "C-1");
	}
	if (role == PHI_ROLE_JOB)
		g.purpose = PHI_PURPOSE_JOB;
	const char *why = NULL;
	int r = phi_grants_add(kr, st, &g, &why);
	if (r < 0)
		fprintf(stderr, "add: %s\n", why ? why : strerror(-r));
	CHECK_OK(r);
	return g;
}

static struct phi_identity ident(uint32_t uid)
{
	return (struct phi_identity){ .uid = uid, .gid = uid, .pid = 1, .tgid = 1 };
}

static struct phi_decision decide(uint32_t uid, const char *patient, const char *rel,
				  enum phi_op op, uint64_t now)
{
	struct phi_identity id = ident(uid);
	struct phi_decision d;
	CHECK_OK(phi_policy_check(gs, &id, patient, rel, op, now, &d));
	CHECK(d.allowed == (d.reason == PHI_DENY_NONE));
	return d;
}

static bool allowed(uint32_t uid, const char *patient, const char *rel, enum phi_op op)
{
	return decide(uid, patient, rel, op, T0 + 100).allowed;
}

static const enum phi_op all_ops[] = { PHI_OP_LOOKUP,    PHI_OP_GETATTR, PHI_OP_READDIR,
				       PHI_OP_OPEN_READ, PHI_OP_OPEN_WRITE, PHI_OP_CREATE,
				       PHI_OP_UNLINK,    PHI_OP_RENAME,  PHI_OP_SETATTR };

static bool is_read(enum phi_op op)
{
	return op <= PHI_OP_OPEN_READ;
}

static void test_roles(void)
{
	grant(U_SERVICE, PHI_ROLE_SERVICE, "p-a");
	grant(U_PROVIDER, PHI_ROLE_PROVIDER, "p-a");
	struct phi_grant e = {
		.principal_kind = PHI_PRINCIPAL_USER, .principal_id = U_EMERG, .principal_name = "bob",
		.patient = "p-a", .role = PHI_ROLE_PROVIDER, .purpose = PHI_PURPOSE_EMERGENCY,
		.emergency = true, .not_before = T0, .expiry = T0 + 3600, .reason = "cardiac arrest",
	};
	CHECK_OK(phi_grants_add(kr, st, &e, NULL));
	struct phi_grant job = grant(U_JOB, PHI_ROLE_JOB, "p-a");
	grant(U_ADMIN, PHI_ROLE_ADMIN, "*");
	grant(U_AUDITOR, PHI_ROLE_AUDITOR, "p-a");
	struct phi_grant rv = grant(U_REVOKED, PHI_ROLE_PROVIDER, "p-a");
	CHECK_OK(phi_grants_revoke(kr, st, rv.id, T0 + 50, 0, NULL));
	CHECK_OK(phi_grants_refresh(gs));

	const char *paths[] = { "", "notes.txt", "dir/x", "results", "results/out.json",
				"results/sub/y", "resultsx/z" };
	for (size_t i = 0; i < ARRAY_SIZE(all_ops); i++) {
		enum phi_op op = all_ops[i];
		for (size_t j = 0; j < ARRAY_SIZE(paths); j++) {
			const char *p = paths[j];
			/* service and provider (emergency included): everything in their patient */
			CHECK(allowed(U_SERVICE, "p-a", p, op));
			CHECK(allowed(U_PROVIDER, "p-a", p, op));
			CHECK(allowed(U_EMERG, "p-a", p, op));
			/* job: reads anywhere, changes only below results/ (and creating it) */
			bool in_res = !strncmp(p, "results/", 8) ||
				      (op == PHI_OP_CREATE && !strcmp(p, "results"));
			CHECK_EQ(allowed(U_JOB, "p-a", p, op), is_read(op) || in_res);
			/* admin, auditor, no grant, revoked: nothing inside a patient */
			struct phi_decision d = decide(U_ADMIN, "p-a", p, op, T0 + 100);
			CHECK(!d.allowed && d.reason == PHI_DENY_ROLE_FORBIDS && d.role == PHI_ROLE_ADMIN);
			d = decide(U_AUDITOR, "p-a", p, op, T0 + 100);
			CHECK(!d.allowed && d.reason == PHI_DENY_ROLE_FORBIDS && d.role == PHI_ROLE_AUDITOR);
			d = decide(U_NONE, "p-a", p, op, T0 + 100);
			CHECK(!d.allowed && d.reason == PHI_DENY_NO_GRANT && d.role == PHI_ROLE_NONE);
			CHECK(!strcmp(d.principal, "uid:3007") && d.grant_id[0] == 0);
			d = decide(U_REVOKED, "p-a", p, op, T0 + 100);
			CHECK(!d.allowed && d.reason == PHI_DENY_REVOKED && !strcmp(d.grant_id, rv.id));
			/* root is not special */
			d = decide(0, "p-a", p, op, T0 + 100);
			CHECK(!d.allowed && d.reason == PHI_DENY_NO_GRANT);
			/* nobody reaches a patient they hold no grant for */
			CHECK(!allowed(U_SERVICE, "p-b", p, op));
			CHECK(!allowed(U_PROVIDER, "p-b", p, op));
			CHECK(!allowed(U_JOB, "p-b", p, op));
		}
		/* the root: everyone may look; nobody may change it */
		bool look = op == PHI_OP_LOOKUP || op == PHI_OP_GETATTR || op == PHI_OP_READDIR;
		for (uint32_t u = U_SERVICE; u <= U_REVOKED; u++) {
			struct phi_decision d = decide(u, NULL, NULL, op, T0 + 100);
			CHECK_EQ(d.allowed, look);
			CHECK(d.allowed || d.reason == PHI_DENY_ROLE_FORBIDS);
		}
		CHECK_EQ(decide(0, NULL, NULL, op, T0 + 100).allowed, look);
	}
	/* the root listing filter: lookup per patient; admin/auditor and root see nothing */
	CHECK(allowed(U_JOB, "p-a", "", PHI_OP_LOOKUP) && !allowed(U_JOB, "p-b", "", PHI_OP_LOOKUP));
	CHECK(!allowed(U_ADMIN, "p-a", "", PHI_OP_LOOKUP) && !allowed(U_AUDITOR, "p-a", "", PHI_OP_LOOKUP));
	CHECK(!allowed(0, "p-a", "", PHI_OP_LOOKUP));

	/* what a decision carries */
	struct phi_decision d = decide(U_EMERG, "p-a", "x", PHI_OP_OPEN_READ, T0 + 100);
	CHECK(d.allowed && d.emergency && d.role == PHI_ROLE_PROVIDER &&
	      d.purpose == PHI_PURPOSE_EMERGENCY && d.grant_expiry == T0 + 3600);
	CHECK(!strcmp(d.principal, "user:bob") && !strcmp(d.grant_id, e.id));
	d = decide(U_JOB, "p-a", "x", PHI_OP_OPEN_WRITE, T0 + 100);
	CHECK(!d.allowed && d.reason == PHI_DENY_ROLE_FORBIDS && !strcmp(d.grant_id, job.id) &&
	      d.purpose == PHI_PURPOSE_JOB && !d.emergency);
	d = decide(U_PROVIDER, "p-a", "x", PHI_OP_OPEN_READ, T0 + 100);
	CHECK(d.allowed && !d.emergency && d.purpose == PHI_PURPOSE_TREATMENT);

	/* grant windows to the second: allowed at not_before and at expiry - 1 only */
	CHECK_EQ(decide(U_PROVIDER, "p-a", "x", PHI_OP_OPEN_READ, T0 - 1).reason, PHI_DENY_NOT_YET_VALID);
	CHECK(decide(U_PROVIDER, "p-a", "x", PHI_OP_OPEN_READ, T0).allowed);
	CHECK(decide(U_PROVIDER, "p-a", "x", PHI_OP_OPEN_READ, T0 + DAY - 1).allowed);
	d = decide(U_PROVIDER, "p-a", "x", PHI_OP_OPEN_READ, T0 + DAY);
	CHECK(!d.allowed && d.reason == PHI_DENY_EXPIRED && d.grant_expiry == T0 + DAY);
	CHECK(decide(U_EMERG, "p-a", "x", PHI_OP_OPEN_READ, T0 + 3599).allowed);
	CHECK_EQ(decide(U_EMERG, "p-a", "x", PHI_OP_OPEN_READ, T0 + 3600).reason, PHI_DENY_EXPIRED);
	/* revoked at T0 + 50: denied from then on (revocation is immediate) */
	CHECK_EQ(decide(U_REVOKED, "p-a", "x", PHI_OP_OPEN_READ, T0 + 10).reason, PHI_DENY_REVOKED);

	/* group grants through supplementary groups */
	struct phi_grant g2 = {
		.principal_kind = PHI_PRINCIPAL_GROUP, .principal_id = 7777, .principal_name = "ward7",
		.patient = "p-c", .role = PHI_ROLE_PROVIDER, .purpose = PHI_PURPOSE_TREATMENT,
		.not_before = T0, .expiry = T0 + DAY, .consent = "C-2",
	};
	CHECK_OK(phi_grants_add(kr, st, &g2, NULL));
	CHECK_OK(phi_grants_refresh(gs));
	struct phi_identity id = ident(4000);
	CHECK_OK(phi_policy_check(gs, &id, "p-c", "a", PHI_OP_OPEN_READ, T0 + 1, &d));
	CHECK(!d.allowed);
	id.groups[0] = 12;
	id.groups[1] = 7777;
	id.ngroups = 2;
	CHECK_OK(phi_policy_check(gs, &id, "p-c", "a", PHI_OP_OPEN_READ, T0 + 1, &d));
	CHECK(d.allowed && !strcmp(d.principal, "group:ward7"));
	id.ngroups = 1;
	CHECK_OK(phi_policy_check(gs, &id, "p-c", "a", PHI_OP_OPEN_READ, T0 + 1, &d));
	CHECK(!d.allowed);

	/* no identity; malformed input */
	CHECK_OK(phi_policy_check(gs, NULL, "p-a", "", PHI_OP_LOOKUP, T0 + 1, &d));
	CHECK(!d.allowed && d.reason == PHI_DENY_NO_IDENTITY);
	CHECK_OK(phi_policy_check(gs, NULL, NULL, NULL, PHI_OP_READDIR, T0 + 1, &d));
	CHECK(!d.allowed && d.reason == PHI_DENY_NO_IDENTITY);
	id = ident(U_SERVICE);
	const char *badpaths[] = { "/x", "a//b", "a/", "..", "a/../b", "./a", "results/.." };
	for (size_t i = 0; i < ARRAY_SIZE(badpaths); i++)
		CHECK_EQ(phi_policy_check(gs, &id, "p-a", badpaths[i], PHI_OP_LOOKUP, T0 + 1, &d), -EINVAL);
	CHECK_EQ(phi_policy_check(gs, &id, "p-a", NULL, PHI_OP_LOOKUP, T0 + 1, &d), -EINVAL);
	CHECK_EQ(phi_policy_check(gs, &id, "../p", "", PHI_OP_LOOKUP, T0 + 1, &d), -EINVAL);
	CHECK_EQ(phi_policy_check(gs, &id, "p-a", "", (enum phi_op)42, T0 + 1, &d), -EINVAL);
	CHECK(!strcmp(phi_op_name(PHI_OP_OPEN_WRITE), "open-write"));
}

/* ---- /proc ---- */

static void test_parsers(void)
{
	static const char status[] = "Name:\tcat\nUmask:\t0022\nState:\tR (running)\nTgid:\t4711\n"
				     "Ngid:\t0\nPid:\t4712\nPPid:\t1\nTracerPid:\t0\n"
				     "Uid:\t1000\t1001\t1002\t1003\nGid:\t100\t101\t102\t103\n"
				     "FDSize:\t64\nGroups:\t4 24 27 \nNStgid:\t4711\n";
	struct phi_proc_status ps;
	CHECK_OK(phi_proc_parse_status(status, sizeof(status) - 1, &ps));
	CHECK_EQ(ps.tgid, 4711);
	CHECK(ps.uid[0] == 1000 && ps.uid[3] == 1003 && ps.gid[1] == 101 && ps.gid[3] == 103);
	CHECK(ps.ngroups == 3 && ps.groups[0] == 4 && ps.groups[2] == 27);
	static const char nogroups[] = "Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n";
	CHECK_OK(phi_proc_parse_status(nogroups, sizeof(nogroups) - 1, &ps));
	CHECK_EQ(ps.ngroups, 0);
	static const char *const bad[] = {
		"Tgid:\t1\nUid:\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n",        /* 3 uids */
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\n",                /* no Groups */
		"Tgid:\tx\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n",     /* bad tgid */
		"Tgid:\t1\nUid:\t0\t0\t0\t99999999999\nGid:\t0\t0\t0\t0\nGroups:\t\n", /* range */
		"Tgid:\t1\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t1x\n",   /* junk */
		"Tgid:\t1\nTgid:\t2\nUid:\t0\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\t\n", /* twice */
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		CHECK_EQ(phi_proc_parse_status(bad[i], strlen(bad[i]), &ps), -EBADMSG);
	/* truncation anywhere before the end of Groups fails */
	for (size_t cut = 0; cut < sizeof(nogroups) - 3; cut++)
		CHECK_EQ(phi_proc_parse_status(nogroups, cut, &ps), -EBADMSG);

	struct {
		const char *in, *unit;
	} const units[] = {
		{ "0::/system.slice/phifs.service\n", "phifs.service" },
		{ "0::/user.slice/user-0.slice/session-3.scope\n", "session-3.scope" },
		{ "0::/system.slice/spoold.service/job-7\n", "spoold.service" },
		{ "0::/system.slice/a.service/b.scope/c\n", "b.scope" },
		{ "0::/\n", "" },
		{ "0::/.service\n", "" },
		{ "12:pids:/x.service\n1:name=systemd:/system.slice/cron.service\n", "cron.service" },
		{ "1:name=systemd:/v1.service\n0::/system.slice/v2.service\n", "v2.service" },
		{ "0::/init.scope", "init.scope" },
	};
	char unit[PHI_ID_UNIT_MAX];
	for (size_t i = 0; i < ARRAY_SIZE(units); i++) {
		CHECK_OK(phi_proc_parse_unit(units[i].in, strlen(units[i].in), unit, sizeof(unit)));
		CHECK(!strcmp(unit, units[i].unit));
	}
	CHECK_EQ(phi_proc_parse_unit("3:cpu:/x.service\n", 17, unit, sizeof(unit)), -EBADMSG);
	CHECK_EQ(phi_proc_parse_unit("", 0, unit, sizeof(unit)), -EBADMSG);
	CHECK_EQ(phi_proc_parse_unit("0::/abcdefgh.service\n", 21, unit, 8), -EBADMSG);
}

static void read_proc(const char *p, char *buf, size_t max)
{
	FILE *f = fopen(p, "re");
	CHECK(f);
	size_t n = fread(buf, 1, max - 1, f);
	fclose(f);
	buf[n] = 0;
}

static bool has_group(const struct phi_identity *id, uint32_t g)
{
	for (size_t i = 0; i < id->ngroups; i++)
		if (id->groups[i] == g)
			return true;
	return false;
}

static pid_t thread_tid;
static int thread_pipe[2], thread_back[2];
static void *thread_fn(void *p)
{
	(void)p;
	thread_tid = (pid_t)syscall(SYS_gettid);
	char c;
	CHECK_EQ(write(thread_pipe[1], "x", 1), 1);
	CHECK_EQ(read(thread_back[0], &c, 1), 1); /* until the parent is done */
	return NULL;
}

static void test_identity(void)
{
	struct phi_identity id;
	/* this process */
	CHECK_OK(phi_identity_from_pid(geteuid(), getegid(), getpid(), &id));
	CHECK_EQ(id.tgid, getpid());
	char buf[4096], exe[4096];
	read_proc("/proc/self/comm", buf, sizeof(buf));
	buf[strcspn(buf, "\n")] = 0;
	CHECK(!strcmp(id.comm, buf));
	ssize_t l = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
	CHECK(l > 0);
	exe[l] = 0;
	CHECK(!strcmp(id.exe, exe));
	gid_t gl[PHI_ID_GROUPS_MAX];
	int ng = getgroups(PHI_ID_GROUPS_MAX, gl);
	CHECK(ng >= 0);
	CHECK_EQ(id.ngroups, (size_t)ng);
	for (int i = 0; i < ng; i++)
		CHECK(has_group(&id, gl[i]));
	read_proc("/proc/self/cgroup", buf, sizeof(buf));
	if (id.unit[0]) {
		char needle[PHI_ID_UNIT_MAX + 2];
		snprintf(needle, sizeof(needle), "/%s", id.unit);
		CHECK(strstr(buf, needle));
	}
	printf("identity: comm=%s unit=%s groups=%zu\n", id.comm, id.unit[0] ? id.unit : "-",
	       id.ngroups);

	/* a FUSE pid is a thread id: the identity names its process */
	CHECK_OK(pipe2(thread_pipe, O_CLOEXEC));
	CHECK_OK(pipe2(thread_back, O_CLOEXEC));
	pthread_t t;
	CHECK_OK(pthread_create(&t, NULL, thread_fn, NULL));
	char c;
	CHECK_EQ(read(thread_pipe[0], &c, 1), 1);
	CHECK(thread_tid != getpid());
	CHECK_OK(phi_identity_from_pid(geteuid(), getegid(), thread_tid, &id));
	CHECK_EQ(id.pid, thread_tid);
	CHECK_EQ(id.tgid, getpid());
	CHECK_EQ(write(thread_back[1], "x", 1), 1);
	CHECK_OK(pthread_join(t, NULL));

	/* a child with its own name, groups and credentials */
	int p[2];
	CHECK_OK(pipe2(p, O_CLOEXEC));
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		gid_t groups[] = { 4242, 4343 };
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || prctl(PR_SET_NAME, "phi-child") < 0 || setgroups(2, groups) < 0 ||
		    setresgid(555, 555, 555) < 0 || setresuid(0, 666, 0) < 0)
			_exit(1);
		/* fsuid follows the effective uid */
		if (write(p[1], "r", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	CHECK_EQ(read(p[0], &c, 1), 1);
	CHECK_OK(phi_identity_from_pid(666, 555, child, &id));
	CHECK(!strcmp(id.comm, "phi-child"));
	CHECK(!strcmp(id.exe, exe));
	CHECK(id.ngroups == 2 && has_group(&id, 4242) && has_group(&id, 4343));
	struct phi_identity self;
	CHECK_OK(phi_identity_from_pid(geteuid(), getegid(), getpid(), &self));
	CHECK(!strcmp(id.unit, self.unit));
	/* a request that claims other credentials than the thread has: no identity */
	CHECK_EQ(phi_identity_from_pid(0, 555, child, &id), -EPERM);
	CHECK_EQ(phi_identity_from_pid(666, 0, child, &id), -EPERM);
	/* a dead (reaped) pid */
	CHECK_OK(kill(child, SIGKILL));
	CHECK_EQ(waitpid(child, NULL, 0), child);
	CHECK_EQ(phi_identity_from_pid(666, 555, child, &id), -ESRCH);
	/* pid 0 (the kernel gives it across pid namespaces) and nonsense */
	CHECK_EQ(phi_identity_from_pid(0, 0, 0, &id), -EINVAL);
	CHECK_EQ(phi_identity_from_pid(0, 0, -5, &id), -EINVAL);
	close(p[0]);
	close(p[1]);
	close(thread_pipe[0]);
	close(thread_pipe[1]);
	close(thread_back[0]);
	close(thread_back[1]);
}

static void test_starttime_parser(void)
{
	/* comm may hold spaces and ')': fields count from the last ')' */
	const char *l = "4242 (a) b) c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 "
			"987654 5000 300\n";
	uint64_t v = 0;
	CHECK_OK(phi_proc_parse_starttime(l, strlen(l), &v));
	CHECK_EQ(v, 987654u);
	const char *end = "1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 77";
	CHECK_OK(phi_proc_parse_starttime(end, strlen(end), &v));
	CHECK_EQ(v, 77u);
	const char *bad[] = { "", "1 (x", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 7x7 1",
			      "1 (x) S 1 1 1 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 99999999999999999999999 1" };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++)
		CHECK_EQ(phi_proc_parse_starttime(bad[i], strlen(bad[i]), &v), -EBADMSG);
}

static void test_identity_cache(void)
{
	struct phi_identity_cache *c;
	struct phi_identity id;
	CHECK_EQ(phi_identity_cache_new(0, 1, &c), -EINVAL);
	CHECK_OK(phi_identity_cache_new(64, 60ull * 1000000000, &c));
	int p[2], q[2];
	CHECK_OK(pipe2(p, O_CLOEXEC));
	CHECK_OK(pipe2(q, O_CLOEXEC));
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		char ch;
		if (prctl(PR_SET_PDEATHSIG, SIGKILL) < 0 || prctl(PR_SET_NAME, "phi-before") < 0 ||
		    write(p[1], "r", 1) != 1 || read(q[0], &ch, 1) != 1 ||
		    prctl(PR_SET_NAME, "phi-after") < 0 || write(p[1], "r", 1) != 1)
			_exit(1);
		pause();
		_exit(0);
	}
	char ch;
	CHECK_EQ(read(p[0], &ch, 1), 1);
	CHECK_OK(phi_identity_cached(c, geteuid(), getegid(), child, &id));
	CHECK(!strcmp(id.comm, "phi-before"));
	CHECK_EQ(id.tgid, child);
	/* a short-lived cache: entries live at most ttl (a random part of it, so that threads
	 * cached together do not all expire together) */
	struct phi_identity_cache *c2;
	CHECK_OK(phi_identity_cache_new(64, 300000000ull, &c2));
	struct timespec t0;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	CHECK_OK(phi_identity_cached(c2, geteuid(), getegid(), child, &id));
	CHECK(!strcmp(id.comm, "phi-before"));
	/* the child renames itself: the live thread with the same start time is answered from
	 * the cache within the ttl, a fresh lookup sees the change */
	CHECK_EQ(write(q[1], "x", 1), 1);
	CHECK_EQ(read(p[0], &ch, 1), 1);
	CHECK_OK(phi_identity_cached(c, geteuid(), getegid(), child, &id));
	CHECK(!strcmp(id.comm, "phi-before"));
	CHECK_OK(phi_identity_cached(NULL, geteuid(), getegid(), child, &id));
	CHECK(!strcmp(id.comm, "phi-after"));
	struct timespec until = { .tv_sec = t0.tv_sec, .tv_nsec = t0.tv_nsec + 310000000 };
	if (until.tv_nsec >= 1000000000) {
		until.tv_sec++;
		until.tv_nsec -= 1000000000;
	}
	while (clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &until, NULL) == EINTR)
		;
	CHECK_OK(phi_identity_cached(c2, geteuid(), getegid(), child, &id));
	CHECK(!strcmp(id.comm, "phi-after")); /* past ttl: read again */
	phi_identity_cache_free(c2);
	/* other credentials than the entry's: not from the cache (and /proc says no) */
	CHECK_EQ(phi_identity_cached(c, geteuid() + 1, getegid(), child, &id), -EPERM);
	/* the thread is gone: its cached entry answers nothing */
	CHECK_OK(kill(child, SIGKILL));
	CHECK_EQ(waitpid(child, NULL, 0), child);
	CHECK_EQ(phi_identity_cached(c, geteuid(), getegid(), child, &id), -ESRCH);
	CHECK_EQ(phi_identity_cached(c, 0, 0, 0, &id), -EINVAL);
	phi_identity_cache_free(c);
	close(p[0]);
	close(p[1]);
	close(q[0]);
	close(q[1]);
}

/* Many threads at once: past the cache's pidfd budget (policy.c, 256) slots fall back to
 * the start-time check, and every thread still gets its own identity; a thread that has
 * exited, on either kind of slot, gets none. */
struct waiter {
	pthread_t t;
	pid_t tid;
	int ready, gate; /* pipes: the thread reports its tid, then waits for the gate */
};

static void *waiter_main(void *arg)
{
	struct waiter *w = arg;
	w->tid = gettid();
	char ch = 'r';
	if (write(w->ready, &ch, 1) != 1 || read(w->gate, &ch, 1) < 0)
		return NULL;
	return NULL;
}

static size_t open_fds(void)
{
	size_t n = 0;
	DIR *d = opendir("/proc/self/fd");
	CHECK(d != NULL);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static void test_identity_cache_many(void)
{
	enum { N = 300 };
	struct phi_identity_cache *c;
	CHECK_OK(phi_identity_cache_new(1024, 60ull * 1000000000, &c));
	int ready[2], gate[2];
	CHECK_OK(pipe2(ready, O_CLOEXEC));
	CHECK_OK(pipe2(gate, O_CLOEXEC));
	static struct waiter w[N];
	for (int i = 0; i < N; i++) {
		w[i] = (struct waiter){ .ready = ready[1], .gate = gate[0] };
		CHECK_OK(pthread_create(&w[i].t, NULL, waiter_main, &w[i]));
	}
	char ch;
	for (int i = 0; i < N; i++)
		CHECK_EQ(read(ready[0], &ch, 1), 1);
	size_t before = open_fds();
	struct phi_identity id;
	for (int round = 0; round < 2; round++) /* the second round is answered by the cache */
		for (int i = 0; i < N; i++) {
			CHECK_OK(phi_identity_cached(c, geteuid(), getegid(), w[i].tid, &id));
			CHECK_EQ(id.pid, w[i].tid);
			CHECK_EQ(id.tgid, getpid());
		}
	size_t held = open_fds() - before;
	CHECK(held >= 1 && held <= 256);
	close(gate[1]); /* every thread returns */
	for (int i = 0; i < N; i++)
		CHECK_OK(pthread_join(w[i].t, NULL));
	CHECK_EQ(phi_identity_cached(c, geteuid(), getegid(), w[0].tid, &id), -ESRCH);
	CHECK_EQ(phi_identity_cached(c, geteuid(), getegid(), w[N - 1].tid, &id), -ESRCH);
	phi_identity_cache_free(c);
	CHECK_EQ(open_fds(), before - 1); /* every pidfd closed (the gate too) */
	close(ready[0]);
	close(ready[1]);
	close(gate[0]);
}

/* Out of descriptors: no identity (EMFILE, so the request is denied), nothing leaked, and
 * the same lookup works once descriptors are free again. In a child: it lowers its limit. */
static void test_identity_cache_emfile(void)
{
	pid_t child = fork();
	CHECK(child >= 0);
	if (child == 0) {
		struct phi_identity_cache *c;
		CHECK_OK(phi_identity_cache_new(64, 60ull * 1000000000, &c));
		struct rlimit old, tight;
		CHECK_OK(getrlimit(RLIMIT_NOFILE, &old));
		int fd = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the lowest free number */
		CHECK(fd >= 0);
		close(fd);
		tight = (struct rlimit){ .rlim_cur = (rlim_t)fd, .rlim_max = old.rlim_max };
		CHECK_OK(setrlimit(RLIMIT_NOFILE, &tight)); /* no descriptor left */
		struct phi_identity id;
		CHECK_EQ(phi_identity_cached(c, geteuid(), getegid(), getpid(), &id), -EMFILE);
		tight.rlim_cur = (rlim_t)fd + 1; /* one: /proc reads, but no pidfd beside them */
		CHECK_OK(setrlimit(RLIMIT_NOFILE, &tight));
		CHECK_EQ(phi_identity_cached(c, geteuid(), getegid(), getpid(), &id), -EMFILE);
		fd = open("/dev/null", O_RDONLY | O_CLOEXEC);
		CHECK(fd >= 0); /* nothing leaked: the one descriptor is still free */
		close(fd);
		CHECK_OK(setrlimit(RLIMIT_NOFILE, &old));
		CHECK_OK(phi_identity_cached(c, geteuid(), getegid(), getpid(), &id));
		CHECK_EQ(id.pid, getpid());
		phi_identity_cache_free(c);
		_exit(0);
	}
	int status;
	CHECK_EQ(waitpid(child, &status, 0), child);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
}

static int rm_fn(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return type == FTW_DP ? rmdir(p) : unlink(p);
}

int main(void)
{
	CHECK_OK(phi_crypto_init());
	CHECK(mkdtemp(root));
	char sroot[600];
	snprintf(sroot, sizeof(sroot), "%s/store", root);
	CHECK_OK(mkdir(sroot, 0700));
	CHECK_OK(phi_store_local_open(sroot, &st));
	_cleanup_key_ struct phi_key *master = NULL;
	CHECK_OK(phi_key_random(PHI_KEY_LEN, &master));
	CHECK_OK(phi_store_init(st, master));
	CHECK_OK(phi_keyring_open(st, master, &kr));
	CHECK_OK(phi_grants_open(st, kr, &gs));
	test_roles();
	test_parsers();
	test_starttime_parser();
	if (geteuid() == 0) {
		test_identity();
		test_identity_cache();
		test_identity_cache_many();
		test_identity_cache_emfile();
	}
	else
		puts("identity: needs root (setgroups in a child); skipped");
	phi_grants_free(gs);
	phi_keyring_free(kr);
	phi_store_close(st);
	CHECK_OK(nftw(root, rm_fn, 16, FTW_DEPTH | FTW_PHYS));
	puts("ok");
	return 0;
}
