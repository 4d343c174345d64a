/* audit-client.h: submit audit events to phifs-auditd and wait until they are durable.
 *
 * Thread-safe: a pool of connections with one request in flight each, so concurrent callers
 * land in the same group commit. Every failure means "not recorded": the caller must deny.
 *   0              the record is durable; *ret_seq is its sequence number
 *   -ENOSPC, -EIO  the writer could not make it durable (log volume full / I/O error)
 *   -EINVAL        the writer (or the local encoder) rejected the event
 *   -ETIMEDOUT     no answer within the deadline
 *   -ECONNREFUSED, -ENOENT   no writer listening
 *   -ECONNRESET    the writer went away with the request in flight (it may or may not be
 *                  in the log)
 *   -EPROTO        a malformed reply
 */
#ifndef PHI_AUDIT_CLIENT_H
#define PHI_AUDIT_CLIENT_H

#include <stdint.h>

#include "audit.h"

struct phi_audit_client;

struct phi_audit_client_opts {
	unsigned pool;        /* connections; 0: 64 */
	unsigned deadline_ms; /* per submission; 0: 500 */
};

int phi_audit_client_open(const char *socket_path, struct phi_audit_client **ret);
int phi_audit_client_open_opts(const char *socket_path, const struct phi_audit_client_opts *o,
			       struct phi_audit_client **ret);
void phi_audit_client_free(struct phi_audit_client *c);
int phi_audit_submit(struct phi_audit_client *c, const struct phi_audit_event *ev,
		     uint64_t *ret_seq);

#endif
