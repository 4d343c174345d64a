/* pool.c: workers sleep on a condition variable between jobs; the caller takes chunk 0. */
#include "pool.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>

struct phi_pool {
	pthread_mutex_t mu;
	pthread_cond_t go, done;
	phi_pool_fn fn;
	void *ctx;
	size_t n;
	unsigned long gen;
	int pending, n_threads, n_started;
	int quit;
	pthread_t th[];
};

struct arg {
	struct phi_pool *p;
	int tid;
};

static void chunk(struct phi_pool *p, int tid, size_t *b, size_t *e)
{
	size_t n = p->n, t = (size_t)p->n_threads;
	*b = n * (size_t)tid / t;
	*e = n * (size_t)(tid + 1) / t;
}

static void *worker(void *a)
{
	struct phi_pool *p = ((struct arg *)a)->p;
	int tid = ((struct arg *)a)->tid;
	free(a);
	unsigned long seen = 0;
	pthread_mutex_lock(&p->mu);
	for (;;) {
		while (p->gen == seen && !p->quit)
			pthread_cond_wait(&p->go, &p->mu);
		if (p->quit)
			break;
		seen = p->gen;
		pthread_mutex_unlock(&p->mu);
		size_t b, e;
		chunk(p, tid, &b, &e);
		if (b < e)
			p->fn(p->ctx, b, e, tid);
		pthread_mutex_lock(&p->mu);
		if (--p->pending == 0)
			pthread_cond_signal(&p->done);
	}
	pthread_mutex_unlock(&p->mu);
	return NULL;
}

int phi_pool_new(int n_threads, struct phi_pool **ret)
{
	if (n_threads < 1 || n_threads > 256)
		return -EINVAL;
	struct phi_pool *p = calloc(1, sizeof(*p) + (size_t)n_threads * sizeof(pthread_t));
	if (!p)
		return -ENOMEM;
	pthread_mutex_init(&p->mu, NULL);
	pthread_cond_init(&p->go, NULL);
	pthread_cond_init(&p->done, NULL);
	p->n_threads = n_threads;
	for (int i = 1; i < n_threads; i++) {
		struct arg *a = malloc(sizeof(*a));
		if (!a) {
			phi_pool_free(p);
			return -ENOMEM;
		}
		*a = (struct arg){ p, i };
		int r = pthread_create(&p->th[i], NULL, worker, a);
		if (r) {
			free(a);
			phi_pool_free(p);
			return -r;
		}
		p->n_started = i;
	}
	*ret = p;
	return 0;
}

int phi_pool_threads(const struct phi_pool *p)
{
	return p->n_threads;
}

void phi_pool_run(struct phi_pool *p, phi_pool_fn fn, void *ctx, size_t n)
{
	if (p->n_threads == 1 || n < 2) {
		if (n)
			fn(ctx, 0, n, 0);
		return;
	}
	pthread_mutex_lock(&p->mu);
	p->fn = fn;
	p->ctx = ctx;
	p->n = n;
	p->pending = p->n_threads - 1;
	p->gen++;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	size_t b, e;
	chunk(p, 0, &b, &e);
	if (b < e)
		fn(ctx, b, e, 0);
	pthread_mutex_lock(&p->mu);
	while (p->pending)
		pthread_cond_wait(&p->done, &p->mu);
	pthread_mutex_unlock(&p->mu);
}

void phi_pool_free(struct phi_pool *p)
{
	if (!p)
		return;
	pthread_mutex_lock(&p->mu);
	p->quit = 1;
	pthread_cond_broadcast(&p->go);
	pthread_mutex_unlock(&p->mu);
	for (int i = 1; i <= p->n_started; i++)
		pthread_join(p->th[i], NULL);
	pthread_mutex_destroy(&p->mu);
	pthread_cond_destroy(&p->go);
	pthread_cond_destroy(&p->done);
	free(p);
}
