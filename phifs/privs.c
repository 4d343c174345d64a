/* privs.c: drop to an unprivileged user with no capabilities. No libcap: the capability
 * syscalls are used directly. */
#include "privs.h"

#include <grp.h>
#include <linux/capability.h>
#include <pwd.h>
#include <sys/prctl.h>
#include <sys/syscall.h>

#include "util.h"

#define PWBUF_MAX (64 * 1024)
#define GROUPS_MAX 256

static int lookup_user(const char *user, uid_t *ret_uid, gid_t *ret_gid)
{
	struct passwd pw, *res = NULL;
	_cleanup_free_ char *buf = malloc(PWBUF_MAX);
	if (!buf)
		return -ENOMEM;
	int e = getpwnam_r(user, &pw, buf, PWBUF_MAX, &res);
	if (e)
		return -e;
	if (!res)
		return -ENOENT;
	*ret_uid = res->pw_uid;
	*ret_gid = res->pw_gid;
	return 0;
}

int phi_privs_drop(const char *user)
{
	if (!user || !*user)
		return -EINVAL;
	uid_t uid = 0; /* 0 is refused below, so a failed lookup cannot slip through */
	gid_t gid = 0;
	int r = lookup_user(user, &uid, &gid);
	if (r < 0)
		return r;
	if (uid == 0 || gid == 0)
		return -EINVAL;
	gid_t groups[GROUPS_MAX];
	int ng = GROUPS_MAX;
	if (getgrouplist(user, gid, groups, &ng) < 0)
		return -E2BIG;
	/* the bounding set first: dropping from it needs CAP_SETPCAP, gone after setresuid */
	for (unsigned long c = 0; c < 64; c++) {
		if (prctl(PR_CAPBSET_DROP, c, 0, 0, 0) == 0)
			continue;
		if (errno == EINVAL)
			break; /* past the running kernel's last capability */
		return phi_neg_errno();
	}
	if (setgroups((size_t)ng, groups) < 0 || setresgid(gid, gid, gid) < 0 || setresuid(uid, uid, uid) < 0)
		return phi_neg_errno();
	struct __user_cap_header_struct h = { .version = _LINUX_CAPABILITY_VERSION_3, .pid = 0 };
	struct __user_cap_data_struct d[2] = { { 0 } };
	if (syscall(SYS_capset, &h, d) < 0)
		return phi_neg_errno();
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) < 0 && errno != EINVAL)
		return phi_neg_errno();
	if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
		return phi_neg_errno();
	/* a change of uid resets it to the system default */
	if (prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) < 0)
		return phi_neg_errno();
	/* no way back */
	uid_t ru, eu, su;
	if (getresuid(&ru, &eu, &su) < 0 || ru != uid || eu != uid || su != uid || setuid(0) == 0)
		return -EPERM;
	return 0;
}
