/* spool.h: the spool directory (docs/job-schema.md, "Spool layout"). Every move is a
 * rename(2) within one filesystem followed by an fsync of both directories; every record is
 * written to a dot-temp file, fsync'ed and renamed into place. Intake batches its moves and
 * syncs the directories once per batch (group commit), before any job of the batch can start. */
#ifndef SPOOLD_SPOOL_H
#define SPOOLD_SPOOL_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/stat.h>
#include <sys/types.h>

#include "job.h"
#include "jrec.h"
#include "phifs/util.h"

enum spool_dir { SD_INCOMING, SD_TMP, SD_QUEUE, SD_ACTIVE, SD_DONE, SD_FAILED, SD_JOURNAL,
		 SD_CTL, SD_REJECTED, SD__N };

struct spool {
	int root;
	int d[SD__N];
	int lockfd;
};

extern const char *const spool_dir_names[SD__N];

/* Open (creating when create) every directory; lock: take the spool lock (one spoold). */
int spool_open(struct spool *s, const char *path, bool create, bool lock);
void spool_close(struct spool *s);

int spool_fsync_dir(int dfd);
/* fsync every directory whose bit (1u << enum spool_dir) is set in mask. */
int spool_sync_dirs(struct spool *s, unsigned mask);
#define SPOOL_DIR_BIT(d) (1u << (d))

/* What spool_write_atomic makes durable before it returns. */
enum { SPOOL_SYNC_NONE = 0, SPOOL_SYNC_FILE = 1, SPOOL_SYNC_DIR = 2 };
/* rename from/fname -> to/tname without replacing; fsync both directories when sync. */
int spool_move(struct spool *s, enum spool_dir from, const char *fname, enum spool_dir to,
	       const char *tname, bool sync);
/* Write name in dir atomically (dot-temp file, rename); sync: SPOOL_SYNC_FILE fsyncs the
 * file before the rename, SPOOL_SYNC_DIR the directory after it. */
int spool_write_atomic(int dfd, const char *name, const void *data, size_t len, unsigned sync);
/* Read a regular file (O_NOFOLLOW) of at most max bytes; st gets its fstat (also on
 * -EFBIG, -EISDIR, -EBUSY). no_writers: -EBUSY while any process has it open for writing
 * (a read lease cannot be had then), so a half-written file is never taken. */
int spool_read_file(int dfd, const char *name, size_t max, struct phi_buf *b, struct stat *st,
		    bool no_writers);

int spool_journal_save(struct spool *s, const struct jrec *r, unsigned sync);
int spool_journal_load(struct spool *s, const char *id, struct jrec *r);
/* done/<id>.result.json or failed/<id>.result.json */
int spool_result_save(struct spool *s, enum spool_dir d, const struct jrec *r, unsigned sync);
/* Move incoming/name aside to failed/rejected/<ino>-<name> with a .reason file. */
int spool_reject(struct spool *s, const char *name, unsigned long ino, const char *reason);

/* Is uid a member of gid (primary group or supplementary list)? 1 yes, 0 no, <0 error. */
int uid_in_group(uid_t uid, gid_t gid);

#endif
