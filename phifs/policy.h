/* policy.h: who is calling (identity from the FUSE request and /proc) and whether the
 * grants let them do an operation (docs/grants-format.md, "Policy").
 *
 * Root (uid 0) is not special: without a grant it sees an empty mount. admin and auditor
 * grants never reach PHI; they exist so that their attempts are recorded as such.
 */
#ifndef PHI_POLICY_H
#define PHI_POLICY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "grants.h"

#define PHI_ID_GROUPS_MAX 256 /* more supplementary groups are ignored (fail closed) */
#define PHI_ID_COMM_MAX 16
#define PHI_ID_EXE_MAX 1024
#define PHI_ID_UNIT_MAX 256

struct phi_identity {
	uint32_t uid, gid;   /* from the FUSE request (the caller's fsuid/fsgid) */
	pid_t pid;           /* from the FUSE request: a thread id */
	pid_t tgid;          /* its process */
	uint32_t groups[PHI_ID_GROUPS_MAX]; /* supplementary groups of the calling thread */
	size_t ngroups;
	char comm[PHI_ID_COMM_MAX];  /* process name (a hint, never evidence) */
	char exe[PHI_ID_EXE_MAX];    /* readlink /proc/PID/exe; "" if unreadable */
	char unit[PHI_ID_UNIT_MAX];  /* last *.service or *.scope cgroup component; "" if none */
};

/* Build the identity of a FUSE caller. -EINVAL for pid <= 0; -ESRCH when the thread is
 * gone; -EPERM when /proc says the thread runs with another fsuid/fsgid than the request
 * (a recycled pid). Any failure means: deny with PHI_DENY_NO_IDENTITY. */
int phi_identity_from_pid(uint32_t uid, uint32_t gid, pid_t pid, struct phi_identity *ret);

/* A cache of identities for the FUSE layer: building one reads five /proc files (about
 * 120 us); a hit costs one read of /proc/PID/stat. An entry answers a request of the same
 * thread id, uid and gid whose thread still has the same start time (so a recycled id
 * misses), for at most ttl. Within ttl a change the start time does not show (setgroups,
 * execve) is not seen: the same bound as a grant change (docs/grants-format.md).
 * Thread-safe; direct-mapped on the thread id, cap entries. */
struct phi_identity_cache;
int phi_identity_cache_new(size_t cap, uint64_t ttl_ns, struct phi_identity_cache **ret);
void phi_identity_cache_free(struct phi_identity_cache *c);
/* phi_identity_from_pid() through the cache (c NULL: no cache). */
int phi_identity_cached(struct phi_identity_cache *c, uint32_t uid, uint32_t gid, pid_t pid,
			struct phi_identity *ret);
/* The start time (field 22, clock ticks since boot) from /proc/PID/stat text: -EBADMSG
 * unless well formed. */
int phi_proc_parse_starttime(const char *p, size_t len, uint64_t *ret);

/* The parts of /proc/PID/status the identity needs. */
struct phi_proc_status {
	pid_t tgid;
	uint32_t uid[4], gid[4]; /* real, effective, saved, filesystem */
	uint32_t groups[PHI_ID_GROUPS_MAX];
	size_t ngroups;
};
/* Parse /proc/PID/status text: -EBADMSG unless Tgid, Uid, Gid and Groups are all there
 * and well formed. */
int phi_proc_parse_status(const char *p, size_t len, struct phi_proc_status *ret);
/* The systemd unit from /proc/PID/cgroup text: the last path component ending in
 * ".service" or ".scope" of the cgroup v2 line ("0::") or else of the name=systemd v1
 * line; "" when none. -EBADMSG when neither line is there or the unit does not fit. */
int phi_proc_parse_unit(const char *p, size_t len, char *unit, size_t unit_max);

enum phi_op {
	PHI_OP_LOOKUP,
	PHI_OP_GETATTR,
	PHI_OP_READDIR,
	PHI_OP_OPEN_READ,
	PHI_OP_OPEN_WRITE,
	PHI_OP_CREATE,
	PHI_OP_UNLINK,
	PHI_OP_RENAME,
	PHI_OP_SETATTR,
};
const char *phi_op_name(enum phi_op op); /* "lookup", "open-read", ... */

#define PHI_PRINCIPAL_STR_MAX (6 + PHI_GRANT_NAME_MAX + 1)

struct phi_decision {
	bool allowed;
	enum phi_deny reason;   /* PHI_DENY_NONE when allowed */
	enum phi_role role;     /* of the grant used; PHI_ROLE_NONE without one */
	enum phi_purpose purpose;
	bool emergency;         /* break-glass grant: flag and alert */
	char principal[PHI_PRINCIPAL_STR_MAX]; /* "user:alice", "group:staff"; "uid:N" without a grant */
	char grant_id[PHI_GRANT_ID_LEN + 1];   /* "" without a grant */
	uint64_t grant_expiry;                 /* 0 without a grant */
};

/* Decide whether id may do op. patient NULL: the mount root (lookup, getattr and readdir
 * are allowed to everyone with an identity: the listing shows only patients that
 * phi_policy_check(..., patient, "", PHI_OP_LOOKUP, ...) allows). Otherwise relpath is the
 * path inside the patient directory ("" for the directory itself), '/'-separated; only its
 * first component is interpreted (the job's results/ scope). id NULL means no identity.
 * Returns 0 with *ret filled, allowed or not; -EINVAL for a malformed patient id, op or
 * relpath (deny). */
int phi_policy_check(struct phi_grants *g, const struct phi_identity *id, const char *patient,
		     const char *relpath, enum phi_op op, uint64_t now, struct phi_decision *ret);

#endif
