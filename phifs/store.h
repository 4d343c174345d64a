/* store.h: the small interface between phifs and whatever holds its ciphertext.
 *
 * A store is a tree of objects addressed by '/'-separated relative paths whose
 * components are already-encrypted names (ASCII [A-Za-z0-9_.-], at most
 * PHI_STORE_NAME_MAX bytes). A backend therefore never sees a plaintext name
 * or plaintext data: it moves opaque bytes. The FUSE layer, the key manager and
 * the tools reach the store only through this interface, so a new backend
 * (the local directory today, Azure Blob next) plugs in below them unchanged.
 *
 * Every function returns 0 or -errno. Backends are thread-safe: the FUSE layer
 * calls them from many threads at once.
 *
 * The empty path "" names the store root. It is accepted only where acting on
 * the root makes sense: getattr, chmod, chown, utimens, readdir and fsync_dir.
 * Every other path must be a valid non-empty relative path, or -EINVAL.
 * Symbolic links in the store are never followed, at any component.
 *
 * Namespace operations (mkdir, rmdir, unlink, rename, link, symlink) are not
 * durable on return; a caller that needs that calls fsync_dir on the parent.
 */
#ifndef PHI_STORE_H
#define PHI_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#define PHI_STORE_NAME_MAX 255
#define PHI_STORE_PATH_MAX 4096

struct phi_store;     /* one opened store (backend instance) */
struct phi_store_obj; /* one opened object (a file's ciphertext) */

/* Metadata of one store entry. size is the ciphertext size in bytes. */
struct phi_store_stat {
	uint64_t ino; /* stable per entry while mounted; 0 if the backend has none */
	uint32_t mode; /* S_IFMT bits + permissions */
	uint32_t uid, gid;
	uint32_t nlink;
	uint64_t size;
	struct timespec atime, mtime, ctime;
};

/* readdir callback: return 0 to continue, >0 to stop early, <0 to abort with that error. */
typedef int (*phi_store_dirent_fn)(void *ctx, const char *name, uint32_t type /* DT_* */);

struct phi_store_ops {
	const char *scheme; /* "file", "az" */
	/* getattr's ino, size, mtime and ctime change with every change of an object's bytes,
	 * whoever makes it (a local filesystem; not Azure, whose Last-Modified has whole
	 * seconds): phifs may then keep a file's page cache across opens (fs.c, pages_valid) */
	bool stat_tracks_content;

	void (*close)(struct phi_store *s);

	int (*getattr)(struct phi_store *s, const char *path, struct phi_store_stat *ret);
	int (*mkdir)(struct phi_store *s, const char *path, uint32_t mode);
	int (*rmdir)(struct phi_store *s, const char *path);
	int (*unlink)(struct phi_store *s, const char *path);
	/* Optional (NULL: getattr, then unlink). Removes the non-directory at path (-EISDIR
	 * for a directory), fills *ret with its attributes as they were, and sets *ret_held
	 * to what still references its storage (NULL: nothing), for the caller to pass to
	 * release() once it has answered whoever waits on the removal. The storage is freed
	 * at that release: the removal itself is complete, and not durable, on return, like
	 * unlink. (The local store holds the file open: ext4 frees a file's blocks when its
	 * last reference goes, and on a filesystem mounted -o discard that waits for the
	 * device, a wait the caller need not make before it answers.) */
	int (*unlink_held)(struct phi_store *s, const char *path, struct phi_store_stat *ret,
			   struct phi_store_obj **ret_held);
	/* flags: 0, RENAME_NOREPLACE or RENAME_EXCHANGE */
	int (*rename)(struct phi_store *s, const char *from, const char *to, unsigned flags);
	int (*link)(struct phi_store *s, const char *from, const char *to);
	/* target is opaque (encrypted, encoded) bytes */
	int (*symlink)(struct phi_store *s, const char *target, const char *path);
	/* Writes the target and a terminating NUL into buf; *ret_len excludes the NUL.
	 * -ENAMETOOLONG if the target and its NUL do not fit in size bytes. */
	int (*readlink)(struct phi_store *s, const char *path, char *buf, size_t size, size_t *ret_len);
	int (*chmod)(struct phi_store *s, const char *path, uint32_t mode);
	int (*chown)(struct phi_store *s, const char *path, uint32_t uid, uint32_t gid);
	/* UTIME_NOW / UTIME_OMIT honoured as in utimensat(2) */
	int (*utimens)(struct phi_store *s, const char *path, const struct timespec tv[2]);
	int (*readdir)(struct phi_store *s, const char *path, phi_store_dirent_fn fn, void *ctx);
	/* Optional (NULL: getattr per entry). The attributes of n entries of directory dir,
	 * given by name (one component each): ret[i] when err[i] is 0, else err[i] is -errno
	 * for that entry. Returns 0, or -errno when dir itself cannot be read (err unset). A
	 * listing with attributes (readdirplus) then costs the local store one directory
	 * open per run of entries instead of one per entry. */
	int (*getattr_in)(struct phi_store *s, const char *dir, const char *const *names, size_t n,
			  struct phi_store_stat *ret, int *err);
	/* Optional (NULL: no hints taken). A hint that directory dir is about to be listed and
	 * its small object dir/obj (if obj is not NULL) read with get: a listing with
	 * attributes (readdirplus) just returned dir, as find, ls -R and du walk. The store may
	 * warm its own caches of that ciphertext off the caller's path; it returns at once,
	 * never fails, and may drop the hint. Nothing it does is visible to a caller but in
	 * timing. (The local store reads them into the kernel's caches from a few background
	 * threads, so a walk's cold reads are in flight together instead of one at a time.) */
	void (*prefetch_dir)(struct phi_store *s, const char *dir, const char *obj);
	int (*statfs)(struct phi_store *s, struct statvfs *ret);

	/* Objects. flags are O_* (O_CREAT, O_EXCL, O_TRUNC, O_RDONLY/O_RDWR). */
	int (*open)(struct phi_store *s, const char *path, int flags, uint32_t mode,
		    struct phi_store_obj **ret);
	/* Creates a new object holding exactly init[0..len) and opens it read-write, atomically
	 * (the path never names the object without that content, even across a crash) and
	 * exclusively (-EEXIST if path exists). uid or gid (uint32_t)-1 keeps the caller's.
	 * Not durable on return, like the namespace operations. */
	int (*create)(struct phi_store *s, const char *path, uint32_t mode, uint32_t uid,
		      uint32_t gid, const void *init, size_t len, struct phi_store_obj **ret);
	/* Short reads happen only at end of object; *ret_n tells how many bytes came. */
	int (*pread)(struct phi_store_obj *o, void *buf, size_t len, uint64_t off, size_t *ret_n);
	int (*pwrite)(struct phi_store_obj *o, const void *buf, size_t len, uint64_t off);
	int (*truncate)(struct phi_store_obj *o, uint64_t size);
	int (*size)(struct phi_store_obj *o, uint64_t *ret);
	/* Returns only when the object's data is durable in the store. */
	int (*fsync)(struct phi_store_obj *o, bool datasync);
	/* Releases the object; returns the deferred write error, if any. */
	int (*release)(struct phi_store_obj *o);
	/* Optional (NULL: ignored). on while the caller has a write-only handle on the
	 * object: small reads are then the read halves of read-modify-writes, which a store
	 * that uploads in larger units may serve by fetching those units (store_azure: pieces). */
	void (*write_intent)(struct phi_store_obj *o, bool on);
	/* Optional (NULL: nothing to do). Called once by a mount when the process has its
	 * final identity (after -o run_as) and before it serves anything: a store sets up
	 * local state there (store_azure: its write journal, replaying dead mounts' ones). */
	int (*start)(struct phi_store *s);

	/* Small whole objects (headers, wrapped keys, grants): read up to max bytes,
	 * and replace atomically and durably (temp + fsync + rename + dir fsync). */
	/* get: -EFBIG if the object is larger than max; buf's contents are unspecified on failure. */
	int (*get)(struct phi_store *s, const char *path, void *buf, size_t max, size_t *ret_len);
	int (*put)(struct phi_store *s, const char *path, const void *buf, size_t len);

	/* Makes the directory's entries (creations, renames, removals) durable. */
	int (*fsync_dir)(struct phi_store *s, const char *path);
};

struct phi_store {
	const struct phi_store_ops *ops;
};

/* Open a store by URL: a plain path or file:///path selects the local directory
 * backend; az://ACCOUNT/CONTAINER[/PREFIX] selects Azure Blob (options come from
 * the opts string, comma-separated key=value, e.g. "endpoint=http://127.0.0.1:10000").
 * Returns -EPROTONOSUPPORT for an unknown scheme. */
int phi_store_open(const char *url, const char *opts, struct phi_store **ret);

static inline void phi_store_close(struct phi_store *s)
{
	if (s)
		s->ops->close(s);
}

static inline void phi_store_closep(struct phi_store **s)
{
	phi_store_close(*s);
	*s = NULL;
}
#define _cleanup_store_ __attribute__((cleanup(phi_store_closep)))

/* The local directory backend (store_local.c). */
int phi_store_local_open(const char *root, struct phi_store **ret);

#endif
