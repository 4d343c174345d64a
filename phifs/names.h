/* names.h: encrypted file names and directory ids (docs/format.md).
 *
 * Every store directory of a patient tree holds ".d": "PHFD" | u16 version=1 | u16 0 |
 * dir_id[16]. A name is stored as base64url(AES-256-SIV(name_key, AD = dir_id, name)),
 * so equal names in different directories differ and a name moved to another directory
 * does not decrypt. Encoded names longer than PHI_NAME_SHORT_MAX are stored as
 * "<base64url(sha256(encoded))>.l", with the full encoded name in a sidecar "<same>.n".
 * Store entries starting with '.' or ending in ".n" are never user entries.
 */
#ifndef PHI_NAMES_H
#define PHI_NAMES_H

#include <stdbool.h>
#include <stdint.h>

#include "crypto.h"
#include "store.h"

#define PHI_DIRID_LEN 16
#define PHI_DIRID_FILE ".d"
#define PHI_NAME_SHORT_MAX 200
#define PHI_NAME_PLAIN_MAX 255
/* SIV output of a 255-byte name, base64url-encoded, plus NUL */
#define PHI_NAME_ENC_MAX (((PHI_NAME_PLAIN_MAX + 16) / 3 + 1) * 4 + 1)

/* Create directory path on the store with a fresh random dir id, atomically (a temp
 * directory gets its .d, then is renamed into place with RENAME_NOREPLACE). */
int phi_dir_create(struct phi_store *s, const char *path, uint32_t mode);
int phi_dir_id(struct phi_store *s, const char *path, uint8_t id[PHI_DIRID_LEN]);
/* Parse the contents of a .d file. */
int phi_dir_id_parse(const uint8_t *p, size_t len, uint8_t id[PHI_DIRID_LEN]);

struct phi_ename {
	char store[PHI_STORE_NAME_MAX + 1]; /* the directory entry on the store */
	bool is_long;                       /* store is "<hash>.l"; full is in the sidecar */
	char full[PHI_NAME_ENC_MAX];        /* the full encoded name */
};
/* Encrypt a plaintext name (1..255 bytes, no '/', not "." or ".."). */
int phi_name_encrypt(const struct phi_key *name_key, const uint8_t dir_id[PHI_DIRID_LEN],
		     const char *name, struct phi_ename *ret);
/* Decrypt a full encoded name into out (NUL-terminated, out has 256 bytes). */
int phi_name_decrypt(const struct phi_key *name_key, const uint8_t dir_id[PHI_DIRID_LEN],
		     const char *full, char out[PHI_NAME_PLAIN_MAX + 1]);
/* Sidecar path for a long entry: replaces the trailing ".l" by ".n". */
void phi_name_sidecar(const char *store_name, char out[PHI_STORE_NAME_MAX + 1]);
/* Whether a store entry is a user entry (short encoded name or "<hash>.l"). */
bool phi_name_is_entry(const char *store_name);

/* Symlink targets: base64url(SIV(name_key, AD = "phifs-link-v1", target)). Not bound to
 * the directory, so a symlink can be renamed or hard-linked anywhere in the patient tree. */
int phi_link_encrypt(const struct phi_key *name_key, const char *target, char *out,
		     size_t out_max);
int phi_link_decrypt(const struct phi_key *name_key, const char *enc, char *out, size_t out_max);

#endif
