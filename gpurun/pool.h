/* pool.h: a fixed set of worker threads that split a range of tasks into contiguous chunks.
 * The split never changes results: each task is computed by exactly one thread. */
#ifndef PHI_POOL_H
#define PHI_POOL_H

#include <stddef.h>

/* fn(ctx, begin, end, thread index) */
typedef void (*phi_pool_fn)(void *ctx, size_t begin, size_t end, int tid);

struct phi_pool;

int phi_pool_new(int n_threads, struct phi_pool **ret);
int phi_pool_threads(const struct phi_pool *p);
/* Run fn over [0, n) on all threads; returns when every chunk is done. */
void phi_pool_run(struct phi_pool *p, phi_pool_fn fn, void *ctx, size_t n);
void phi_pool_free(struct phi_pool *p);

#endif
