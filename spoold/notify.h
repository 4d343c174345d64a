/* notify.h: the sd_notify datagram (no libsystemd): one AF_UNIX datagram to $NOTIFY_SOCKET,
 * a path or an abstract ("@...") address. */
#ifndef SPOOLD_NOTIFY_H
#define SPOOLD_NOTIFY_H

/* Returns 0 when socket_path is NULL or empty, 1 when sent, -errno on failure. */
int notify_send(const char *socket_path, const char *msg);

#endif
