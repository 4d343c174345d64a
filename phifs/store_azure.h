/* store_azure.h: the Azure Blob Storage backend of the store interface (store_azure.c),
 * and its two response parsers, exposed for unit tests and fuzzing.
 * Design and blob layout: docs/azure-store.md. */
#ifndef PHI_STORE_AZURE_H
#define PHI_STORE_AZURE_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "store.h"

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

#endif
