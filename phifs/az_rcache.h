/* az_rcache.h: the Azure backend's local read cache (docs/azure-store.md, "The read
 * cache").
 *
 * Committed blocks of ciphertext, as downloaded, kept in files on local disk so that a
 * later open of an unchanged blob reads them without a download. An entry is keyed by the
 * blob's name, its ETag and the block index: a blob that changed has a new ETag, and the
 * open that learns it (every open fetches the blob's properties) simply finds no entry.
 * Entries are immutable; the cache is bounded by a size and evicts the least recently
 * used entries.
 *
 * Entry file (name: hex BLAKE2b-128 of name, ETag and index; nothing in clear):
 *   "PHIAZRC1" u64 len (big-endian) 32-byte BLAKE2b-256 of the data, then len bytes.
 * A file that is short, or whose hash does not match, is a miss and is removed.
 */
#ifndef PHI_AZ_RCACHE_H
#define PHI_AZ_RCACHE_H

#include <stddef.h>
#include <stdint.h>

struct phi_rc;

/* Open (creating it 0700) the cache directory dir, bounded to max_bytes. */
int phi_rc_open(const char *dir, uint64_t max_bytes, struct phi_rc **ret);
void phi_rc_close(struct phi_rc *c);

/* Read the entry (name, etag, idx) of exactly len bytes into buf: 0, or -ENOENT (a miss:
 * absent, another length, damaged). buf is unspecified on a miss. */
int phi_rc_get(struct phi_rc *c, const char *name, const char *etag, uint64_t idx, void *buf,
	       size_t len);
/* Store an entry; best effort (a full disk or a race loses nothing but the entry). */
void phi_rc_put(struct phi_rc *c, const char *name, const char *etag, uint64_t idx,
		const void *buf, size_t len);
/* Bytes held, for tests. */
uint64_t phi_rc_bytes(struct phi_rc *c);

#endif
