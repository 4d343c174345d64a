/* daemon.h: spoold's event loop: intake from incoming/, operator requests from ctl/, the
 * state machine queue -> active -> done | failed, recovery after a crash. */
#ifndef SPOOLD_DAEMON_H
#define SPOOLD_DAEMON_H

#include "config.h"
#include "hooks.h"

struct daemon_opts {
	const char *notify_socket; /* $NOTIFY_SOCKET or NULL */
	uint64_t watchdog_usec;    /* 0: no watchdog */
};

/* Runs until SIGTERM/SIGINT. Running instances are left running; the next start adopts them. */
int daemon_run(const struct config *cfg, struct hooks hooks, const struct daemon_opts *o);

#endif
