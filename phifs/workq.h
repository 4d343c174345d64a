/* workq.h: a fixed pool of threads that run queued work items in order of arrival.
 *
 * phifs runs the audited requests that change something (create, mkdir, unlink, rename,
 * setattr...) here once their records are durable, so that no FUSE thread waits for a
 * group commit and an audited mount can serve with few FUSE threads (fs.c, "held
 * requests"). Items are intrusive: pushing never allocates and never fails. */
#ifndef PHI_WORKQ_H
#define PHI_WORKQ_H

struct phi_work;
typedef void phi_work_fn(struct phi_work *w);

struct phi_work {
	struct phi_work *next;
	phi_work_fn *fn;
};

struct phi_workq;

/* Start nthreads (1..64) threads. 0 or -errno. */
int phi_workq_start(unsigned nthreads, struct phi_workq **ret);

/* Queue w; one of the threads calls w->fn(w), which owns w from then on. */
void phi_workq_push(struct phi_workq *q, struct phi_work *w);

/* Wait until the queue is empty and no item is running. */
void phi_workq_drain(struct phi_workq *q);

/* Drain, stop the threads and free. NULL is allowed. */
void phi_workq_stop(struct phi_workq *q);

#endif
