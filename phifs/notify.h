/* notify.h: the sd_notify protocol without libsystemd: one AF_UNIX datagram of
 * newline-separated KEY=VALUE lines to $NOTIFY_SOCKET, a path ("/...") or an abstract
 * ("@...") address. Used by phifs, phifs-auditd and spoold (READY=1, STATUS=...,
 * WATCHDOG=1, STOPPING=1). */
#ifndef PHI_NOTIFY_H
#define PHI_NOTIFY_H

#include <stdint.h>
#include <sys/types.h>

/* Sends msg. Returns 0 when socket_path is NULL or empty (not under systemd), 1 when sent,
 * -errno on failure (-EINVAL for an address that is neither "/..." nor "@..."). */
int phi_notify_send(const char *socket_path, const char *msg);

/* The watchdog period from $WATCHDOG_USEC / $WATCHDOG_PID (pass their values, or NULL):
 * *ret_usec is the period when it is set, a number, and meant for pid self (WATCHDOG_PID
 * unset or equal); otherwise 0. Ping every half of it. Returns 0 or -EINVAL (bad number;
 * *ret_usec is then untouched). */
int phi_notify_watchdog_usec(const char *usec, const char *pid, pid_t self, uint64_t *ret_usec);

#endif
