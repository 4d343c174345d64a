/* keys.h: the master key, the store header and the per-patient versioned data keys.
 *
 * Store layout (docs/format.md):
 *   phifs.hdr        store header: magic, version, store id, the index key wrapped by the master key
 *   keys/<tag>       one key file per patient: its id and key versions, sealed by the master key
 *   data/<tag>/...   the patient's encrypted tree (cfile.h, names.h)
 * <tag> is a keyed pseudonym of the patient id (22 chars of base64url), so no patient id
 * appears on the store.
 *
 * All keys are struct phi_key (locked memory). Every function returns 0 or -errno:
 *   -EKEYREJECTED  the master key does not open this store (wrong key)
 *   -EBADMSG       a header or key file is corrupt (fails to parse or authenticate)
 *   -EKEYREVOKED   the patient was shredded
 *   -ENOKEY        the requested key version is retired or unknown
 *   -EPERM/-EACCES a key file with bad owner or mode
 */
#ifndef PHI_KEYS_H
#define PHI_KEYS_H

#include <stdbool.h>
#include <stdint.h>

#include "crypto.h"
#include "store.h"

#define PHI_TAG_LEN 22        /* base64url of 16 bytes */
#define PHI_PATIENT_MAX 64    /* patient ids: [A-Za-z0-9_.-]{1,64}, not starting with '.' */
#define PHI_MAX_VERSIONS 256
#define PHI_CRED_NAME "phifs-master-key"

/* Patient id syntax check: 0 or -EINVAL. */
int phi_patient_valid(const char *id);

/* Load the 256-bit master key: from key_file, or when key_file is NULL from
 * $CREDENTIALS_DIRECTORY/phifs-master-key (systemd credentials). The file is opened
 * O_NOFOLLOW; it must be a regular file owned by the effective uid with no group/other
 * permission bits (-EPERM otherwise; the systemd credential dir is exempt from the owner
 * check only in that it is owned by us anyway). Content: 64 hex digits (optional
 * trailing newline) or exactly 32 raw bytes; anything else -EINVAL. */
int phi_master_load(const char *key_file, struct phi_key **ret);
/* Create a new random master key file (O_CREAT|O_EXCL, 0600, 64 hex + '\n', fsync'd). */
int phi_master_create(const char *key_file, struct phi_key **ret);

struct phi_keyring;

/* Initialise an empty store: write phifs.hdr (fresh store id and index key), keys/, data/.
 * -EEXIST if the store already has a header. */
int phi_store_init(struct phi_store *s, const struct phi_key *master);
/* Open the keyring of an initialised store. Verifies the header with the master key. */
int phi_keyring_open(struct phi_store *s, const struct phi_key *master, struct phi_keyring **ret);
void phi_keyring_free(struct phi_keyring *kr);
const uint8_t *phi_keyring_store_id(const struct phi_keyring *kr); /* 16 bytes */

/* tag = pseudonym of the patient id (NUL-terminated, PHI_TAG_LEN chars). */
int phi_patient_tag(const struct phi_keyring *kr, const char *patient, char tag[PHI_TAG_LEN + 1]);

/* One patient's keys, unwrapped. */
struct phi_pkeys {
	char id[PHI_PATIENT_MAX + 1];
	char tag[PHI_TAG_LEN + 1];
	bool shredded;            /* no keys below when set */
	uint32_t current;         /* version new files are written with */
	uint32_t n;               /* number of live versions */
	uint32_t version[PHI_MAX_VERSIONS];
	struct phi_key *content[PHI_MAX_VERSIONS]; /* 32-byte content keys, by index */
	struct phi_key *name_key; /* 64-byte AES-SIV key for names and link targets */
	struct timespec mtime;    /* of the key file when loaded (reload detection) */
};
void phi_pkeys_free(struct phi_pkeys *pk);
/* The content key of a version: -ENOKEY if retired/unknown. */
int phi_pkeys_content(const struct phi_pkeys *pk, uint32_t version, const struct phi_key **ret);

/* Create keys/<tag> with version 1 and data/<tag>/ (with its directory id, names.h).
 * -EEXIST if the patient exists (also if shredded). */
int phi_patient_add(struct phi_keyring *kr, const char *patient);
/* Load a patient's keys by tag (the mount path) or by id. Shredded: returns the pkeys
 * with shredded=true and no keys (so `list` can show it); the mount maps that to -EKEYREVOKED. */
int phi_patient_load_tag(struct phi_keyring *kr, const char *tag, struct phi_pkeys **ret);
int phi_patient_load(struct phi_keyring *kr, const char *patient, struct phi_pkeys **ret);
/* Add a new random version and make it current. */
int phi_patient_rotate(struct phi_keyring *kr, const char *patient, uint32_t *ret_version);
/* Drop every version other than the current one (after rewrap re-encrypted all files). */
int phi_patient_retire_old(struct phi_keyring *kr, const char *patient);
/* Destroy every key version: the key file becomes a tombstone; data stays unreadable. */
int phi_patient_shred(struct phi_keyring *kr, const char *patient);
/* Iterate patients (by key file, in tag order): fn gets each loaded pkeys; return >0 to
 * stop early, <0 to abort with that error. A key file that fails to load aborts too. */
int phi_patient_foreach(struct phi_keyring *kr,
			int (*fn)(void *ctx, const struct phi_pkeys *pk), void *ctx);
/* Iterate the tags of all key files (sorted), without loading them: lets a caller handle a
 * corrupt key file per patient. fn returns 0 to go on, >0 to stop, <0 to abort. */
int phi_patient_foreach_tag(struct phi_keyring *kr, int (*fn)(void *ctx, const char *tag), void *ctx);
/* Re-seal the header and every key file under new_master. File data is untouched.
 * Writes every new key file before replacing any (a crash leaves the old master working). */
int phi_keyring_rekey(struct phi_keyring *kr, const struct phi_key *new_master);

/* A 32-byte key for label ("grants", ...) derived from the store's index key:
 * phi_kdf(index_key, label). Only a holder of the master key can derive it (the index key
 * is sealed under the KEK), and it survives rekey-master (the index key is not rotated). */
int phi_keyring_derive(const struct phi_keyring *kr, const char *label, struct phi_key **ret);

/* Exclusive/shared advisory lock of a local store (a mount holds it shared; rewrap and
 * rekey-master need it exclusive). Non-local stores: returns 0 with *ret_fd = -1.
 * -EBUSY when the lock is held in a conflicting mode. */
int phi_store_lock(const char *url, bool exclusive, int *ret_fd);

/* ---- on-store formats (docs/format.md, "## Keys") and their pure parsers ---- */
#define PHI_STORE_ID_LEN 16
#define PHI_HDR_MAGIC "PHFS"
#define PHI_HDR_VERSION 1
/* magic(4) | u16 version | u16 flags | store_id(16) | sealed index key (12 + 32 + 16) */
#define PHI_HDR_LEN (8 + PHI_STORE_ID_LEN + PHI_KEY_LEN + PHI_GCM_OVERHEAD)
#define PHI_KF_MAGIC "PHFK"
#define PHI_KF_VERSION 1
#define PHI_KF_ACTIVE 0
#define PHI_KF_SHREDDED 1
#define PHI_KEYFILE_FIXED 8 /* magic | u16 version | u8 state | u8 0 */
#define PHI_KEYFILE_PAYLOAD_MAX \
	(1 + PHI_PATIENT_MAX + PHI_SIV_KEY_LEN + 8 + PHI_MAX_VERSIONS * (4 + PHI_KEY_LEN))

/* Parse a master key file's content (64 hex [+ '\n'] or 32 raw bytes): 0 or -EINVAL. */
int phi_master_parse(const uint8_t *p, size_t len, struct phi_key **ret);
/* Parse the fixed part of phifs.hdr (-EBADMSG on bad size/magic/version/flags);
 * ret_sealed (optional) points at the 60-byte sealed index key inside p. */
int phi_keys_parse_header(const uint8_t *p, size_t len, uint8_t ret_store_id[PHI_STORE_ID_LEN],
			  const uint8_t **ret_sealed);
/* Parse the fixed part of a key file: state, and the rest (sealed payload, or the tag of
 * a tombstone), borrowed from p. -EBADMSG when malformed. */
int phi_keys_parse_keyfile(const uint8_t *p, size_t len, uint8_t *ret_state,
			   const uint8_t **ret_rest, size_t *ret_rest_len);
/* Parse a decrypted key-file payload into pk (id, name key, versions, content keys).
 * pk must be zeroed; on failure it is left untouched. */
int phi_keys_parse_payload(const uint8_t *p, size_t len, struct phi_pkeys *pk);

#endif
