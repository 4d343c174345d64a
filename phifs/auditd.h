/* auditd.h: the audit writer (phifs-auditd): recovery, group commit, checkpoints, rotation,
 * fail-closed degraded mode. docs/audit-format.md describes what it writes. */
#ifndef PHI_AUDITD_H
#define PHI_AUDITD_H

#include <stdint.h>

#include "audit.h"

struct phi_auditd_opts {
	const char *dir;          /* log directory (created 0750 if missing) */
	const char *export_dir;   /* second location for checkpoint notes; NULL: none */
	/* and/or Azure append blobs az://ACCOUNT/CONTAINER[/PREFIX] (audit-export.h), with the
	 * store options (endpoint=, key_file=, credential=, timeout=); NULL: none */
	const char *export_url;
	const char *export_opts;
	uint64_t export_blob_notes; /* notes per blob; 0: PHI_AUDIT_BLOB_NOTES (tests change it) */
	const char *socket_path;  /* AF_UNIX SOCK_SEQPACKET, mode 0660 */
	uint64_t segment_max;     /* bytes; 0: 64 MiB */
	uint64_t reserve_bytes;   /* preallocated reserve; 0: 1 MiB */
	uint64_t prealloc;        /* zeros kept written ahead of the open segment's end
				   * (zerofill.h); 0: 1 MiB */
	bool prealloc_off;        /* none: every append extends the file */
	uint32_t batch_max;       /* records per batch; 0: 64, at most PHI_AUDITD_BATCH_MAX */
	uint32_t batch_wait_us;   /* extra wait for more records once one is pending (<= 2000) */
	uint32_t ckpt_ms;         /* checkpoint at most this long after a record; 0: 1000 */
	uint32_t ckpt_records;    /* ... or after this many records; 0: 1024 */
	uint32_t heartbeat_s;     /* idle checkpoint; 0: 60 */
	uint32_t max_clients;     /* 0: 1024 */
	int stop_fd;              /* readable: clean stop (a signalfd); -1: none */
	const char *notify_socket; /* $NOTIFY_SOCKET: READY=1 once listening, STOPPING=1; NULL: none */
	uint64_t watchdog_usec;   /* WATCHDOG=1 from the loop every half of this; 0: none */
	/* signing key rotation: the key signer replaces (same name); it co-signs every start
	 * checkpoint, which hands the log over to the new key. NULL: none. */
	const struct phi_audit_signer *prev_signer;
};

/* Recover, serve until stop_fd is readable, then write audit-stop and a final checkpoint.
 * Returns 0 after a clean stop, -errno if the log could not be opened or recovered. */
int phi_auditd_run(const struct phi_auditd_opts *o, const struct phi_audit_signer *signer);

/* Wire format (docs/audit-format.md) */
#define PHI_AUDIT_REQ_MAGIC "PAQ1"
#define PHI_AUDIT_REP_MAGIC "PAR1"
#define PHI_AUDIT_REQ_HDR 8
#define PHI_AUDIT_REP_LEN 20 /* one reply entry; a reply message holds one or more */
#define PHI_AUDITD_BATCH_MAX 256

#endif
