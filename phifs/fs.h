/* fs.h: the FUSE low-level filesystem of phifs: a plaintext view of a patient-keyed store.
 *
 * The mount root lists patients; MOUNT/<patient>/... maps to data/<tag>/... on the store
 * with names encrypted by names.h and contents by cfile.h. Everything below the FUSE
 * layer goes through store.h, so any store backend works unchanged.
 */
#ifndef PHI_FS_H
#define PHI_FS_H

#include <stdbool.h>

#include <fuse_lowlevel.h>

#include "keys.h"
#include "store.h"

struct phi_grants;
struct phi_audit_client;
struct phi_key;

struct phifs_opts {
	bool ro;
	/* Every open file bypasses the kernel page cache (FOPEN_DIRECT_IO), so no plaintext
	 * page of this mount outlives the reads and writes that moved it (gpurun's mounts). */
	bool direct_io;
	/* A file's store object and content state stay attached this long after its last
	 * close, for the next reading open to take over if the object is unchanged (local
	 * store only; fs.c, "lingering store objects"). 0: closed at the last close. */
	unsigned linger_ms;
	const char *mountpoint; /* absolute; used to raise the kernel's readahead for the mount */
	/* Access control (docs/grants-format.md): NULL leaves it to Unix permissions alone. */
	struct phi_grants *grants;
	/* Audit (docs/audit-format.md): with a client, every gated operation and every denial
	 * is durable in the audit log before it is answered, and a record that cannot be made
	 * durable denies the operation (EACCES). lookup_key makes the pseudonyms. */
	struct phi_audit_client *audit;
	const struct phi_key *lookup_key;
};

struct phifs;

/* The filesystem borrows s and kr; both must outlive it. */
int phifs_new(struct phi_store *s, struct phi_keyring *kr, const struct phifs_opts *opts,
	      struct phifs **ret);
void phifs_free(struct phifs *fs);
/* Answer every request still waiting for its audit record (opens, and held requests:
 * fs.c), while the session they belong to exists. */
void phifs_drain(struct phifs *fs);
const struct fuse_lowlevel_ops *phifs_ll_ops(void);
/* The session serving fs, for invalidation notices to the kernel; before it serves. */
void phifs_set_session(struct phifs *fs, struct fuse_session *se);

#endif
