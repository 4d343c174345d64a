/* cfile.h: the encrypted content format of one regular file (docs/format.md).
 *
 *   header (32 bytes): "PHFF" | u16 version=1 | u8 block_shift | u8 flags=0 |
 *                      u32 key_version | file_id[16] | 4 reserved zero bytes
 *   blocks: nonce(12) | AES-256-GCM(ciphertext) | tag(16), each holding B = 1<<block_shift
 *           plaintext bytes, except the last, the "final" block, which holds 0..B-1 bytes
 *           and is always present.
 *   AAD of block i: file_id | u64be i | u8 final | u8 block_shift | u32be key_version
 *   block key: phi_kdf(content key of key_version, "content", file_id)
 * The plaintext size follows from the ciphertext size alone, and truncation at any
 * point, block swaps, reorders and moves between files all fail authentication (-EIO).
 * Holes are stored as encrypted zero blocks, so a zeroed block never reads as plaintext.
 *
 * A cfile borrows its store object; it is not thread-safe (the caller locks).
 */
#ifndef PHI_CFILE_H
#define PHI_CFILE_H

#include <stdbool.h>
#include <stdint.h>

#include "crypto.h"
#include "store.h"

#define PHI_CF_MAGIC "PHFF"
#define PHI_CF_VERSION 1
#define PHI_CF_HDR 32
#ifndef PHI_CF_SHIFT
#define PHI_CF_SHIFT 12 /* 4 KiB blocks; docs/format.md has the measurement (bench-blocksize) */
#endif
#define PHI_CF_FILE_ID 16
#define PHI_CF_EMPTY (PHI_CF_HDR + PHI_GCM_OVERHEAD) /* an empty file: header + final block */

struct phi_cfile;

/* Looks up the content key of a version for phi_cfile_open; returns 0 or -ENOKEY/-EKEYREVOKED. */
typedef int (*phi_cf_keyfn)(void *ctx, uint32_t version, const struct phi_key **ret);

/* Start a fresh file in an existing object: writes a new header with a random file id and
 * the empty final block over its start, then cuts the rest. */
int phi_cfile_create(struct phi_store *s, struct phi_store_obj *o, const struct phi_key *content_key,
		     uint32_t key_version, struct phi_cfile **ret);
/* A fresh empty file not yet in the store: its bytes (for the store's atomic create) and a
 * cfile to bind to the object once created. */
int phi_cfile_prepare(struct phi_store *s, const struct phi_key *content_key, uint32_t key_version,
		      uint8_t ret_bytes[PHI_CF_EMPTY], struct phi_cfile **ret);
void phi_cfile_bind(struct phi_cfile *cf, struct phi_store_obj *o);
/* Open existing content: parse the header (-EIO on a bad one) and derive the block key. */
int phi_cfile_open(struct phi_store *s, struct phi_store_obj *o, phi_cf_keyfn keyfn, void *ctx,
		   struct phi_cfile **ret);
void phi_cfile_free(struct phi_cfile *cf);

uint64_t phi_cfile_size(const struct phi_cfile *cf);
uint32_t phi_cfile_key_version(const struct phi_cfile *cf);
const uint8_t *phi_cfile_id(const struct phi_cfile *cf); /* 16 bytes */

/* Read up to len bytes at off; short only at EOF. -EIO if any needed block fails to
 * authenticate (logged with file id and block number, never with data). */
int phi_cfile_read(struct phi_cfile *cf, void *buf, size_t len, uint64_t off, size_t *ret_n);
/* Write len bytes at off (beyond EOF: the gap becomes authenticated zeros).
 * Only the touched blocks (and the old final block when extending) are re-encrypted. */
int phi_cfile_write(struct phi_cfile *cf, const void *buf, size_t len, uint64_t off);
int phi_cfile_truncate(struct phi_cfile *cf, uint64_t size);
/* Whether the ciphertext size is impossible (torn or truncated final block): reads and
 * writes then fail with -EIO; truncate to 0 recovers the file. */
bool phi_cfile_damaged(const struct phi_cfile *cf);
/* Verify every block (phifs-key check): 0, or -EIO with *ret_block the first bad block. */
int phi_cfile_verify(struct phi_cfile *cf, uint64_t *ret_block);

/* Plaintext size for a ciphertext size; -EIO if no valid file has that size. */
int phi_cfile_plain_size(uint64_t ct_size, unsigned block_shift, uint64_t *ret);
/* Parse just a header (for check/fuzzing): fills version, shift, key version, file id. */
int phi_cfile_parse_header(const uint8_t *p, size_t len, unsigned *ret_shift,
			   uint32_t *ret_key_version, uint8_t ret_file_id[PHI_CF_FILE_ID]);

#endif
