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

struct phifs_opts {
	bool ro;
	const char *mountpoint; /* absolute; used to raise the kernel's readahead for the mount */
};

struct phifs;

/* The filesystem borrows s and kr; both must outlive it. */
int phifs_new(struct phi_store *s, struct phi_keyring *kr, const struct phifs_opts *opts,
	      struct phifs **ret);
void phifs_free(struct phifs *fs);
const struct fuse_lowlevel_ops *phifs_ll_ops(void);

#endif
