/* grants.h: access grants: who may reach which patient, in which role, for what purpose
 * and when. Format and rules: docs/grants-format.md.
 *
 * Grants live on the store, sealed (AES-256-GCM) under a key derived from the store's
 * index key (phi_keyring_derive(kr, "grants")), so only a holder of the master key can
 * create or change them:
 *   grants/<tag>   the grants of one patient (tag = the patient's pseudonym, keys.h)
 *   grants/all     grants for every patient (patient "*": service, admin, auditor)
 * A file that is copied, edited, swapped or rolled back is rejected as a whole and
 * contributes no grant (fail closed).
 *
 * Writers (phifs-grant) use phi_grants_add/revoke/list. The mount uses phi_grants_open,
 * phi_grants_lookup (from many threads) and phi_grants_refresh (at most once a second).
 */
#ifndef PHI_GRANTS_H
#define PHI_GRANTS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "keys.h"
#include "store.h"

struct phi_buf;

enum phi_role {
	PHI_ROLE_NONE = 0,
	PHI_ROLE_SERVICE,
	PHI_ROLE_PROVIDER,
	PHI_ROLE_JOB,
	PHI_ROLE_ADMIN,
	PHI_ROLE_AUDITOR,
};

enum phi_purpose {
	PHI_PURPOSE_NONE = 0,
	PHI_PURPOSE_TREATMENT,
	PHI_PURPOSE_PAYMENT,
	PHI_PURPOSE_OPERATIONS,
	PHI_PURPOSE_RESEARCH,
	PHI_PURPOSE_EMERGENCY,
	PHI_PURPOSE_JOB,
};

enum phi_principal_kind {
	PHI_PRINCIPAL_USER = 1,
	PHI_PRINCIPAL_GROUP = 2,
};

/* Why an access is denied (PHI_DENY_NONE: allowed). The grant lookup yields the first
 * five; the policy adds ROLE_FORBIDS and NO_IDENTITY. */
enum phi_deny {
	PHI_DENY_NONE = 0,
	PHI_DENY_NO_GRANT,
	PHI_DENY_NOT_YET_VALID,
	PHI_DENY_EXPIRED,
	PHI_DENY_REVOKED,
	PHI_DENY_GRANTS_INVALID, /* a grant file that should apply failed to load */
	PHI_DENY_ROLE_FORBIDS,
	PHI_DENY_NO_IDENTITY,
};

#define PHI_GRANT_ID_LEN 18 /* "g-" + 16 lowercase hex digits */
#define PHI_GRANT_NAME_MAX 64
#define PHI_GRANT_CONSENT_MAX 128
#define PHI_GRANT_REASON_MAX 256
#define PHI_GRANT_ALL "*"
#define PHI_GRANT_PROVIDER_MAX_S (72 * 3600)
#define PHI_GRANT_EMERGENCY_MAX_S (4 * 3600)
#define PHI_GRANTS_PER_FILE_MAX 1024

/* One grant. Valid at time t when !revoked && not_before <= t < expiry. */
struct phi_grant {
	char id[PHI_GRANT_ID_LEN + 1];
	uint8_t principal_kind;                      /* enum phi_principal_kind */
	uint32_t principal_id;                       /* uid or gid: what is matched */
	char principal_name[PHI_GRANT_NAME_MAX + 1]; /* name at grant time, for display */
	char patient[PHI_PATIENT_MAX + 1];           /* a patient id, or "*" */
	uint8_t role;                                /* enum phi_role */
	uint8_t purpose;                             /* enum phi_purpose */
	bool emergency;                              /* break-glass: flagged in every decision */
	bool revoked;
	uint64_t not_before, expiry;                 /* seconds since the epoch, UTC */
	uint64_t created, revoked_at;                /* revoked_at: 0 unless revoked */
	uint32_t granted_by_uid, revoked_by_uid;
	char granted_by_name[PHI_GRANT_NAME_MAX + 1];
	char consent[PHI_GRANT_CONSENT_MAX + 1];     /* consent reference (provider grants) */
	char reason[PHI_GRANT_REASON_MAX + 1];       /* why (emergency grants) */
};

const char *phi_role_name(enum phi_role r);       /* "service", ...; "none" */
const char *phi_purpose_name(enum phi_purpose p); /* "treatment", ...; "none" */
const char *phi_deny_name(enum phi_deny d);       /* "no-grant", ...; "allowed" */
int phi_role_parse(const char *s, enum phi_role *ret);
int phi_purpose_parse(const char *s, enum phi_purpose *ret);

/* "user:NAME|UID" or "group:NAME|GID", resolved through NSS: kind, numeric id and name.
 * -EINVAL bad syntax, -ENOENT no such user or group. */
int phi_principal_parse(const char *s, uint8_t *ret_kind, uint32_t *ret_id,
			char ret_name[PHI_GRANT_NAME_MAX + 1]);
/* "user:alice" / "group:staff" (or the number when the name is empty) into buf. */
void phi_principal_format(const struct phi_grant *g, char *buf, size_t len);

/* Check a grant against the rules (docs/grants-format.md, "Rules"): 0, or -EINVAL with a
 * static one-line reason in *ret_why (optional). Used by writers and by the loader. */
int phi_grant_validate(const struct phi_grant *g, const char **ret_why);
/* Valid at now? PHI_DENY_NONE, or REVOKED / NOT_YET_VALID / EXPIRED. */
enum phi_deny phi_grant_state(const struct phi_grant *g, uint64_t now);
void phi_grant_new_id(char id[PHI_GRANT_ID_LEN + 1]);

/* ---- writers (the tool; serialise them with phi_admin_lock_dir(..., "grants")) ---- */

/* Add g (id and created are filled in here; everything else by the caller) to its file.
 * -EINVAL (with *ret_why) when it breaks a rule, -E2BIG when the file is full. The
 * patient's existence is the caller's check (keys.h). */
int phi_grants_add(struct phi_keyring *kr, struct phi_store *s, struct phi_grant *g,
		   const char **ret_why);
/* The same, keeping the caller's g->id (phi_grant_new_id; named in an audit record
 * before the grant is written): -EEXIST when the file already has that id. */
int phi_grants_add_as(struct phi_keyring *kr, struct phi_store *s, struct phi_grant *g,
		      const char **ret_why);
/* Mark grant id revoked at now by by_uid; ret (optional) gets the revoked grant.
 * -ENOENT no such grant, -EALREADY already revoked. */
int phi_grants_revoke(struct phi_keyring *kr, struct phi_store *s, const char *id, uint64_t now,
		      uint32_t by_uid, struct phi_grant *ret);
/* Every grant (patient NULL), or those of one patient plus the "*" grants, in file order.
 * *ret is malloc'd (free()). A file that fails to load aborts with its error
 * (-EBADMSG corrupt, tampered or misplaced). */
int phi_grants_list(struct phi_keyring *kr, struct phi_store *s, const char *patient,
		    struct phi_grant **ret, size_t *ret_n);

/* ---- the loaded grant set of a mount ---- */

struct phi_grants;

/* Load every grant file. s and kr are borrowed and must outlive the set. A file that
 * fails to load is kept as "invalid" (its patient's own grants deny with GRANTS_INVALID),
 * not as an error; store errors (listing grants/) are. No grants/ means no grants. */
int phi_grants_open(struct phi_store *s, struct phi_keyring *kr, struct phi_grants **ret);
void phi_grants_free(struct phi_grants *g);
/* Re-read what changed: one readdir of grants/ and one getattr per file; a file is read
 * again only when its inode, size, mtime or ctime changed. If the listing fails, every
 * lookup denies (GRANTS_INVALID) until a refresh succeeds, and the error is returned.
 * A file whose generation goes backwards (an old copy put back) is rejected. */
int phi_grants_refresh(struct phi_grants *g);

struct phi_grant_match {
	enum phi_deny reason; /* NONE: grant is valid at now */
	bool found;           /* grant is set: the valid one, or the one that explains reason */
	struct phi_grant grant;
};
/* The best grant of (uid, gids) for patient at now: among valid grants the highest role
 * (service, provider, emergency provider, job, auditor, admin), then the latest expiry.
 * Without a valid one, the reason of the closest: expired, then not-yet-valid, then
 * revoked, then grants-invalid, then no-grant. Thread-safe. -EINVAL bad patient id. */
int phi_grants_lookup(struct phi_grants *g, uint32_t uid, const uint32_t *gids, size_t ngids,
		      const char *patient, uint64_t now, struct phi_grant_match *ret);

/* ---- on-store format (docs/grants-format.md) and its pure parsers ---- */
#define PHI_GRANTS_MAGIC "PHFG"
#define PHI_GRANTS_VERSION 1
#define PHI_GRANTS_FIXED 8 /* magic | u16 version | u16 flags */
/* the largest encoded grant, and the largest payload: u64 generation | u32 n | grants */
#define PHI_GRANT_ENC_MAX                                                                  \
	(PHI_GRANT_ID_LEN + 5 + 1 + PHI_GRANT_NAME_MAX + 1 + PHI_PATIENT_MAX + 3 + 32 + 4 + 1 + \
	 PHI_GRANT_NAME_MAX + 4 + 1 + PHI_GRANT_CONSENT_MAX + 2 + PHI_GRANT_REASON_MAX)
#define PHI_GRANTS_PAYLOAD_MAX (12 + PHI_GRANTS_PER_FILE_MAX * PHI_GRANT_ENC_MAX)
#define PHI_GRANTS_FILE_MAX (PHI_GRANTS_FIXED + PHI_GCM_OVERHEAD + PHI_GRANTS_PAYLOAD_MAX)

/* The fixed part: -EBADMSG on bad magic, version, flags or size; the sealed rest is
 * borrowed from p. */
int phi_grants_parse_file(const uint8_t *p, size_t len, const uint8_t **ret_sealed,
			  size_t *ret_sealed_len);
/* A decrypted payload: generation and n grants (malloc'd array, NULL when n = 0). Every
 * grant passes phi_grant_validate, ids are unique and all grants name the same patient.
 * -EBADMSG otherwise. */
int phi_grants_parse_payload(const uint8_t *p, size_t len, uint64_t *ret_generation,
			     struct phi_grant **ret, size_t *ret_n);
/* Encode a payload into out (phi_buf with max >= PHI_GRANTS_PAYLOAD_MAX). */
int phi_grants_encode_payload(uint64_t generation, const struct phi_grant *g, size_t n,
			      struct phi_buf *out);

#endif
