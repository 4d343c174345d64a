/* workq.c: a fixed pool of threads running queued items (workq.h). */
#include "workq.h"

#include <pthread.h>

#include "thread.h"
#include "util.h"

#define WORKQ_MAX 64

struct phi_workq {
	pthread_mutex_t lock;
	pthread_cond_t work; /* an item was queued, or stop */
	pthread_cond_t idle; /* the queue emptied and nothing runs */
	struct phi_work *head, **tail;
	unsigned running, nth;
	bool stop;
	pthread_t th[WORKQ_MAX];
};

static void *worker(void *arg)
{
	struct phi_workq *q = arg;
	pthread_mutex_lock(&q->lock);
	for (;;) {
		while (!q->head && !q->stop)
			pthread_cond_wait(&q->work, &q->lock);
		if (!q->head)
			break; /* stop, and nothing left */
		struct phi_work *w = q->head;
		q->head = w->next;
		if (!q->head)
			q->tail = &q->head;
		q->running++;
		pthread_mutex_unlock(&q->lock);
		w->fn(w);
		pthread_mutex_lock(&q->lock);
		if (--q->running == 0 && !q->head)
			pthread_cond_broadcast(&q->idle);
	}
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static void stop_threads(struct phi_workq *q)
{
	pthread_mutex_lock(&q->lock);
	q->stop = true;
	pthread_cond_broadcast(&q->work);
	pthread_mutex_unlock(&q->lock);
	for (unsigned i = 0; i < q->nth; i++)
		pthread_join(q->th[i], NULL);
}

int phi_workq_start(unsigned nthreads, struct phi_workq **ret)
{
	if (nthreads == 0 || nthreads > WORKQ_MAX)
		return -EINVAL;
	struct phi_workq *q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	pthread_mutex_init(&q->lock, NULL);
	pthread_cond_init(&q->work, NULL);
	pthread_cond_init(&q->idle, NULL);
	q->tail = &q->head;
	int r = 0;
	for (; q->nth < nthreads && r == 0; q->nth++)
		r = phi_thread_start(&q->th[q->nth], worker, q);
	if (r < 0) {
		q->nth--; /* the failed one */
		stop_threads(q);
		pthread_cond_destroy(&q->idle);
		pthread_cond_destroy(&q->work);
		pthread_mutex_destroy(&q->lock);
		free(q);
		return r;
	}
	*ret = q;
	return 0;
}

void phi_workq_push(struct phi_workq *q, struct phi_work *w)
{
	w->next = NULL;
	pthread_mutex_lock(&q->lock);
	*q->tail = w;
	q->tail = &w->next;
	pthread_cond_signal(&q->work);
	pthread_mutex_unlock(&q->lock);
}

void phi_workq_drain(struct phi_workq *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	while (q->head || q->running)
		pthread_cond_wait(&q->idle, &q->lock);
	pthread_mutex_unlock(&q->lock);
}

void phi_workq_stop(struct phi_workq *q)
{
	if (!q)
		return;
	phi_workq_drain(q);
	stop_threads(q);
	pthread_cond_destroy(&q->idle);
	pthread_cond_destroy(&q->work);
	pthread_mutex_destroy(&q->lock);
	free(q);
}
