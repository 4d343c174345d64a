/* zerofill.h: written zeros kept ahead of the end of an append-only file, as PostgreSQL
 * keeps its WAL segments. phifs-auditd's open segment uses it: an append into zeros that are
 * already written changes neither the file's size nor its block map, so the append's
 * fdatasync is a data write and a cache flush. Appending past the end costs a third
 * synchronous round trip, the inode write (ext4: ext4_write_inode from
 * generic_buffers_fsync_noflush). On this machine's log volume, under 64 threads of
 * audited opens, fdatasync took 144-187 us with the zeros and 277-347 us without.
 *
 * One thread writes the zeros, through its own O_DIRECT descriptor where the filesystem
 * allows it, so they never sit in the page cache for the writer's fdatasync to carry.
 * Only the writer's claim decides which bytes are data: the filler never writes below
 * the highest end the writer has claimed. A failed fill (a full volume) is retried after
 * a second; the writer then simply appends past the zeros, as without this module. */
#ifndef PHI_ZEROFILL_H
#define PHI_ZEROFILL_H

#include <stdint.h>

struct phi_zerofill;

/* Start the filler: it keeps between chunk and 2 * chunk bytes of zeros written ahead of
 * the writer's end (chunk is rounded up to 64 KiB). 0 or -errno. */
int phi_zerofill_start(uint64_t chunk, struct phi_zerofill **ret);

/* Follow file name in dirfd, whose data ends at end (anything after it is zeros this
 * module wrote, or nothing). Detaches from the previous file first. 0 or -errno (then
 * nothing is followed). */
int phi_zerofill_attach(struct phi_zerofill *z, int dirfd, const char *name, uint64_t end);

/* Stop following the file, after any fill in progress: the caller may then truncate it. */
void phi_zerofill_detach(struct phi_zerofill *z);

/* The writer is about to write up to end. Waits while the filler is writing where the
 * writer will, then wakes the filler when less than a chunk of zeros is left. */
void phi_zerofill_claim(struct phi_zerofill *z, uint64_t end);

/* Stop and free. NULL is allowed. */
void phi_zerofill_stop(struct phi_zerofill *z);

#endif
