/* store_azure.h: the Azure Blob Storage backend of the store interface (store_azure.c),
 * and its two response parsers, exposed for unit tests and fuzzing.
 * Design and blob layout: docs/azure-store.md. */
#ifndef PHI_STORE_AZURE_H
#define PHI_STORE_AZURE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store.h"
#include "util.h"

/* Open az://ACCOUNT/CONTAINER[/PREFIX] with comma-separated key=value options:
 *   endpoint=URL      service endpoint (e.g. http://127.0.0.1:10000 for Azurite, path-style);
 *                     default https://ACCOUNT.blob.core.windows.net
 *   key_file=PATH     file holding the base64 account key (Shared Key)
 *   credential=NAME   the key is $CREDENTIALS_DIRECTORY/NAME (systemd LoadCredential=);
 *                     without key_file or credential, $CREDENTIALS_DIRECTORY/phifs-azure-key
 *   timeout=SECONDS   deadline for one operation including retries (default 30)
 *   create=1          create the container if it does not exist
 * The key never comes from the URL, the command line or the environment. */
int phi_store_azure_open(const char *url, const char *opts, struct phi_store **ret);

/* What an Azure store has sent so far: HTTP requests (every attempt, retries included) and
 * the body bytes uploaded and downloaded. For tests and benchmarks; -EINVAL if s is not an
 * Azure store. */
struct phi_az_stats {
	uint64_t requests, bytes_up, bytes_down;
};
int phi_az_stats(struct phi_store *s, struct phi_az_stats *ret);

/* One entry of a List Blobs response. is_prefix: a <BlobPrefix> (virtual directory);
 * otherwise a <Blob> with its Content-Length and the x-ms-meta "phimode" value (0 if none). */
struct phi_az_entry {
	const char *name; /* NUL-terminated, entities decoded */
	bool is_prefix;
	uint64_t size;
	uint32_t mode;
	/* the rest of the phi* metadata; full_meta: mode, uid, gid, ino and the times were all
	 * present */
	bool full_meta;
	uint32_t uid, gid;
	uint64_t ino, gen;
	struct timespec atime, mtime, ctime;
};
/* return 0 to continue, <0 to abort with that error */
typedef int (*phi_az_entry_fn)(void *ctx, const struct phi_az_entry *e);

/* Parse a List Blobs (EnumerationResults) body. Calls fn per entry in document order and
 * copies <NextMarker> (empty if none) into next (size bytes). -EBADMSG on malformed XML,
 * -ENAMETOOLONG for a name or marker that does not fit. */
int phi_az_parse_list(const char *xml, size_t len, phi_az_entry_fn fn, void *ctx, char *next,
		      size_t size);

/* One committed block of a Get Block List response. */
struct phi_az_block {
	char id[64]; /* base64 block id as listed */
	uint64_t size;
};
/* Parse the <CommittedBlocks> of a Get Block List body into a malloc'd array. */
int phi_az_parse_blocklist(const char *xml, size_t len, struct phi_az_block **ret,
			   size_t *ret_n);

/* Append blobs in any container of the store's account (not under the store's prefix): the
 * audit writer exports its signed checkpoints there (docs/audit-format.md). container is an
 * Azure container name, blob a store-style path. */
#define PHI_AZ_APPEND_MAX (4u << 20) /* largest Append Block (x-ms-version 2021-12-02) */

/* HEAD: the blob's length; -ENOENT if it (or its container) does not exist. */
int phi_az_blob_size(struct phi_store *ps, const char *container, const char *blob,
		     uint64_t *ret_size);
/* GET bytes [off, off + len) (len 0: from off to the end) into out, replacing its content;
 * out->max bounds the size (-EFBIG beyond). -ENOENT if missing, -EIO if shorter than asked. */
int phi_az_blob_get(struct phi_store *ps, const char *container, const char *blob, uint64_t off,
		    uint64_t len, struct phi_buf *out);
/* Create an empty append blob, and its container if missing. -EEXIST if the blob exists
 * (it is never replaced). */
int phi_az_append_create(struct phi_store *ps, const char *container, const char *blob);
/* Append data (1..PHI_AZ_APPEND_MAX bytes, one Append Block) at exactly offset pos, which
 * must be the blob's length. Idempotent: if the blob already holds these bytes at pos (an
 * earlier attempt whose answer was lost), 0 without appending again. -ESTALE if the blob
 * ends elsewhere or holds other bytes at pos (the caller must re-read its length). */
int phi_az_append(struct phi_store *ps, const char *container, const char *blob, uint64_t pos,
		  const void *data, size_t len);

#endif
