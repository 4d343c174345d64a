/* audit-client.h: submit audit events to phifs-auditd and wait until they are durable.
 *
 * Thread-safe: a pool of connections with one request in flight each, so concurrent callers
 * land in the same group commit. Asynchronous submissions are pipelined, up to 32 in flight
 * on a connection, packed onto as few connections as hold them (the writer answers a batch
 * with one message per connection), and one completion thread watches them. Every failure
 * means "not recorded": the caller must deny.
 *   0              the record is durable; *ret_seq is its sequence number
 *   -ENOSPC, -EIO  the writer could not make it durable (log volume full / I/O error)
 *   -EINVAL        the writer (or the local encoder) rejected the event
 *   -ETIMEDOUT     no answer within the deadline
 *   -ECONNREFUSED, -ENOENT   no writer listening
 *   -ECONNRESET    the writer went away with the request in flight (it may or may not be
 *                  in the log)
 *   -EPROTO        a malformed reply
 *   -EAGAIN        (asynchronous) no connection could take the request
 */
#ifndef PHI_AUDIT_CLIENT_H
#define PHI_AUDIT_CLIENT_H

#include <stdint.h>

#include "audit.h"

struct phi_audit_client;

struct phi_audit_client_opts {
	unsigned pool;        /* connections of each kind; 0: 64 (an asynchronous one takes 32) */
	unsigned deadline_ms; /* per submission; 0: 500 */
};

int phi_audit_client_open(const char *socket_path, struct phi_audit_client **ret);
int phi_audit_client_open_opts(const char *socket_path, const struct phi_audit_client_opts *o,
			       struct phi_audit_client **ret);
void phi_audit_client_free(struct phi_audit_client *c);
int phi_audit_submit(struct phi_audit_client *c, const struct phi_audit_event *ev,
		     uint64_t *ret_seq);

/* The outcome of an asynchronous submission: status as phi_audit_submit returns it, and
 * the record's sequence number when status is 0. */
typedef void phi_audit_done_fn(void *arg, int status, uint64_t seq);

/* Submit without waiting, for callers that can answer later (a FUSE open): 0 when the
 * request is on its way, and then done(arg, ...) is called exactly once, from the client's
 * completion thread, within the deadline; or -errno when it could not be sent, and done is
 * never called. done must not submit synchronously (it would wait on its own thread). */
int phi_audit_submit_async(struct phi_audit_client *c, const struct phi_audit_event *ev,
			   phi_audit_done_fn *done, void *arg);

/* Connect n_sync pooled and n_async asynchronous connections now and keep the pools to
 * those sizes: for a process about to lose the right to connect to the writer's socket
 * (phifs -o run_as). A connection lost later (the writer restarted) cannot be replaced
 * then, and submissions on it fail: fail closed. 0 or -errno. */
int phi_audit_client_preconnect(struct phi_audit_client *c, unsigned n_sync, unsigned n_async);

/* Wait until every asynchronous submission has had its done() call. */
void phi_audit_drain(struct phi_audit_client *c);

#endif
