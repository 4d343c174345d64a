/* admin.h: what every operator tool (phifs-key, phifs-grant) does before it touches a
 * store: load the master key, open and lock the store, open the keyring; and the
 * exclusive lock of a store directory that serialises read-modify-write of its files.
 *
 * Failures come back as -errno plus a one-line message for the tool to print. Messages
 * name the store URL and the key file, never a patient id or key material.
 */
#ifndef PHI_ADMIN_H
#define PHI_ADMIN_H

#include <stdbool.h>
#include <stddef.h>

#include "audit-client.h"
#include "audit.h"
#include "crypto.h"
#include "keys.h"
#include "store.h"

struct phi_admin {
	struct phi_key *master;
	struct phi_store *s;
	struct phi_keyring *kr;
	int lock_fd; /* flock of STORE/.lock (shared or exclusive); -1 for a remote store */
	int dir_fd;  /* flock taken by phi_admin_lock_dir; -1 when none */
};

/* Load the master key (key_file, or the systemd credential when NULL), open the store,
 * take STORE/.lock (exclusive: refuse while mounted) and open the keyring. On failure
 * nothing is held and msg holds the reason. */
int phi_admin_open(const char *url, const char *key_file, bool exclusive, struct phi_admin *ret,
		   char *msg, size_t msg_len);
/* Exclusive flock of STORE/<dir> (created 0700 if missing) for the life of a: writers of
 * that directory's files (keys/, grants/) wait for each other. Remote stores: no-op. */
int phi_admin_lock_dir(struct phi_admin *a, const char *url, const char *dir, char *msg,
		       size_t msg_len);
void phi_admin_done(struct phi_admin *a);

/* The message for a phi_master_load() failure of key_file (NULL: the credential). */
void phi_admin_key_error(const char *key_file, int r, char *msg, size_t msg_len);
/* The directory of a local store URL (plain path or file://), or NULL for a remote one. */
const char *phi_admin_local_root(const char *url);

/* ---- audit records of the tools (docs/audit-format.md, "Operator events") ----
 *
 * Key and grant changes are recorded write-ahead: the record goes to phifs-auditd and must
 * be durable before the change is made; if the change then fails, a second record of the
 * same event with outcome 8 follows. A tool that cannot write the first record refuses. */
#define PHI_AUDIT_SOCKET_ENV "PHIFS_AUDIT_SOCKET"
#define PHI_AUDIT_SOCKET_NONE "none"

struct phi_admin_audit {
	struct phi_audit_client *client; /* NULL: explicitly unaudited ("none") */
	struct phi_key *lookup_key;      /* for patient pseudonyms */
};

/* spec: a socket path, "none" (explicitly unaudited), or NULL: then $PHIFS_AUDIT_SOCKET
 * (same values). Neither: -ENOTCONN with a message (the tool refuses). Nothing is
 * connected yet: an unreachable writer shows at the first record. */
int phi_admin_audit_open(const char *spec, const struct phi_key *master, struct phi_admin_audit *ret,
			 char *msg, size_t msg_len);
void phi_admin_audit_done(struct phi_admin_audit *a);
/* Complete ev with this process as the actor (uid, gid, pid, comm, exe, unit; role
 * "operator", principal "user:NAME") and, when patient is a patient id, its pseudonym;
 * then make it durable. 0 (also when unaudited) or the client's -errno. */
int phi_admin_audit_record(struct phi_admin_audit *a, struct phi_audit_event *ev,
			   const char *patient);

#endif
