/* thread.h: helper threads and their condition variables. A helper thread is one no signal
 * is ever delivered to. phifs's signals
 * belong to the threads that handle them (FUSE's and main's, phifs-auditd's writer with its
 * stop signalfd); a helper that took one would leave it unhandled. */
#ifndef PHI_THREAD_H
#define PHI_THREAD_H

#include <pthread.h>

/* pthread_create with every signal blocked in the new thread: 0 or -errno. */
int phi_thread_start(pthread_t *t, void *(*fn)(void *), void *arg);

/* A condition variable whose timed waits take CLOCK_MONOTONIC deadlines (a wall-clock
 * step must not shorten or stretch a deadline). */
void phi_cond_init_mono(pthread_cond_t *c);

#endif
