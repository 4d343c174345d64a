/* audit-export.h: the audit writer's checkpoint export to Azure append blobs, and the reader
 * that fetches them back for phifs-audit verify. docs/audit-format.md, "Export to Azure append blobs". */
#ifndef PHI_AUDIT_EXPORT_H
#define PHI_AUDIT_EXPORT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PHI_AUDIT_BLOB_NOTES 10000 /* notes per append blob (Azure: 50,000 blocks per blob) */

struct phi_audit_export;

/* Start the exporter thread for url (az://ACCOUNT/CONTAINER[/PREFIX]) with the store options
 * opts (endpoint=, key_file=, credential=, timeout=). It appends the frames of
 * LOGDIR/checkpoints.log (log_dfd), byte for byte, to the append blobs
 * PREFIX/ckpt-<first idx, 12 digits>.log of blob_notes notes each (0: PHI_AUDIT_BLOB_NOTES),
 * resuming after what the blobs already hold. durable_end/durable_n: the bytes and notes of
 * checkpoints.log already durable. wake_fd (an eventfd) is written when the export's state
 * changes. Checks only the URL here: the network is reached from the thread, so an
 * unreachable service never delays the writer. -EINVAL for a bad URL. */
int phi_audit_export_start(const char *url, const char *opts, int log_dfd, uint64_t blob_notes,
			   uint64_t durable_end, uint64_t durable_n, int wake_fd,
			   struct phi_audit_export **ret);
/* checkpoints.log is durable up to end bytes, n notes: export them (never blocks on I/O). */
void phi_audit_export_notify(struct phi_audit_export *e, uint64_t end, uint64_t n);
enum { PHI_AEX_OK, PHI_AEX_FAILING, PHI_AEX_DIVERGED };
/* The export's state and, when failing, the error (-errno). */
int phi_audit_export_state(struct phi_audit_export *e, int *ret_err);
/* One last try for what is not exported yet (unless the export is failing), stop, free. */
void phi_audit_export_stop(struct phi_audit_export *e);

/* Download every checkpoint blob below url into out_dir as ckpt-<IDX 12 digits>.note (the
 * layout phifs-audit verify reads). Returns the number of notes, or -EBADMSG with a reason
 * in why when a blob is not a gap-free run of well-formed notes (tampered or damaged), or
 * another -errno. */
int phi_audit_export_fetch(const char *url, const char *opts, const char *out_dir,
			   uint64_t *ret_n, char *why, size_t why_size);

#endif
