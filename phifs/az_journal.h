/* az_journal.h: the Azure backend's local write journal (docs/azure-store.md, "Crash
 * safety: the write journal").
 *
 * Writes to an Azure object stay in memory (and in uncommitted blocks) until fsync or close
 * commits them. So that a crash of phifs does not lose them, every write is also appended,
 * as the ciphertext the store was given, to a journal file of that object in a local cache
 * directory; a successful commit empties the journal (truncated and kept for reuse). A
 * later mount replays the journals that a dead mount left behind.
 *
 * Layout: CACHE_ROOT/<store id>/m-<random>/ is one mount's directory, held by an flock on
 * its "lock" file for the mount's lifetime; j-<random> in it are journals; a mount finds
 * the directories of dead mounts (their lock is free) and replays them. A journal that
 * cannot be applied (the object changed since) is moved to CACHE_ROOT/<store id>/conflict/.
 *
 * File format (big-endian, version 1):
 *   header:  "PHIAZJNL" u32 version u32 name_len u32 etag_len u32 0 u64 base_gen
 *            u64 base_size (40 bytes), then name_len bytes of blob name, etag_len bytes
 *            of ETag
 *   records: u32 0x504a5231 ("PJR1") u8 type u8[3] 0 u64 seq u64 off u64 len
 *            u32 check (FNV-1a of the 32 bytes before it) u32 0 (40 bytes), then len
 *            data bytes (W only). seq counts from 0 without gaps.
 *   types:   'W' write len bytes at off; 'T' truncate to off; 'G' a commit was sent that
 *            sets the content generation off (phigen).
 * A record that is cut short or fails its check ends the journal (a torn tail).
 */
#ifndef PHI_AZ_JOURNAL_H
#define PHI_AZ_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PHI_AJ_VERSION 1
#define PHI_AJ_NAME_MAX 4096
#define PHI_AJ_ETAG_MAX 95

enum phi_aj_type { PHI_AJ_WRITE = 'W', PHI_AJ_TRUNCATE = 'T', PHI_AJ_GEN = 'G' };

struct phi_aj_base {
	const char *name; /* blob name */
	const char *etag; /* the committed version the writes apply to */
	uint64_t gen;     /* its phigen */
	uint64_t size;    /* its size */
};

struct phi_aj_rec {
	enum phi_aj_type type;
	uint64_t off, len;
	const uint8_t *data; /* W: len bytes inside the parsed buffer */
};

struct phi_aj_parsed {
	char name[PHI_AJ_NAME_MAX + 1];
	char etag[PHI_AJ_ETAG_MAX + 1];
	uint64_t base_gen, base_size;
	struct phi_aj_rec *recs; /* malloc'd; phi_aj_parsed_free */
	size_t nrecs;
	bool torn; /* bytes after the last whole record were dropped */
};

/* Parse a journal held in buf (not copied: records point into it). 0, or -EBADMSG for a
 * bad header, -ENOMEM. */
int phi_aj_parse(const uint8_t *buf, size_t len, struct phi_aj_parsed *ret);
void phi_aj_parsed_free(struct phi_aj_parsed *p);

struct phi_ajd; /* this mount's journal directory */
struct phi_aj;  /* one object's journal */

/* Create this mount's directory under root/<store_id> (made 0700 if missing) and lock it.
 * max_bytes bounds the journals' total size (phi_ajd_full). */
int phi_ajd_open(const char *root, const char *store_id, uint64_t max_bytes, struct phi_ajd **ret);
/* Remove this mount's directory if it holds no journal, unlock, free. */
void phi_ajd_close(struct phi_ajd *d);
/* Would len more bytes pass the limit? */
bool phi_ajd_full(struct phi_ajd *d, uint64_t len);

/* A new journal for one object. */
int phi_aj_create(struct phi_ajd *d, const struct phi_aj_base *base, struct phi_aj **ret);
/* Append a record: 0, or -errno (ENOSPC, EIO): then the journal is unusable, drop it. */
int phi_aj_append(struct phi_aj *j, enum phi_aj_type type, uint64_t off, const void *data,
		  uint64_t len);
/* The object's writes are committed: empty the journal (its file is truncated and pooled
 * for the next phi_aj_create, or deleted). NULL is a no-op. */
void phi_aj_drop(struct phi_aj *j);
/* The writes could not be committed: close the journal and leave it for the next mount. */
void phi_aj_keep(struct phi_aj *j);

/* What to do with a dead mount's journal, returned by the replay callback: */
enum phi_aj_verdict {
	PHI_AJ_DONE,     /* applied (or already in the store): delete it */
	PHI_AJ_CONFLICT, /* cannot be applied: move it to conflict/ */
	PHI_AJ_RETRY,    /* not now (store unreachable): leave it for a later mount */
};
typedef enum phi_aj_verdict (*phi_aj_replay_fn)(void *ctx, const struct phi_aj_parsed *p,
						 const char *file);

/* Replay every journal left by dead mounts of this store, oldest directory first; returns
 * how many were applied, conflicted and left in ret_counts[3] (may be NULL). */
int phi_ajd_recover(struct phi_ajd *d, phi_aj_replay_fn fn, void *ctx, unsigned ret_counts[3]);

#endif
