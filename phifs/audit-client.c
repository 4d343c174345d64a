/* audit-client.c: a pool of SOCK_SEQPACKET connections to phifs-auditd. */
#include "audit-client.h"

#include <poll.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "auditd.h"
#include "thread.h"

struct slot {
	int fd;
	bool busy;
};

/* Requests in flight on one asynchronous connection. The writer answers each batch with one
 * message per connection, so requests packed onto few connections cost the writer one send
 * (and this client one wakeup and one recv) per batch instead of one per record. The bound
 * keeps a connection's queued requests (and their answers) well inside the socket buffers:
 * the writer answers with MSG_DONTWAIT and drops a connection whose queue is full. */
#define ACONN_DEPTH 32

struct inflight {
	uint32_t id;
	bool late; /* failed at its deadline (done() called); kept until its answer comes */
	int64_t deadline; /* mono_ms */
	phi_audit_done_fn *done;
	void *arg;
};

/* An asynchronous connection and what is in flight on it (under c->lock). A request
 * that missed its deadline keeps its place until the writer answers it (or the connection
 * goes): the writer still holds it, so a connection never has more than ACONN_DEPTH
 * requests at the writer, nor an answer message with more entries. */
struct aconn {
	int fd;
	bool broken; /* a send failed: shut down, the completion thread fails what is in flight */
	unsigned n;
	struct inflight f[ACONN_DEPTH];
};

struct completion {
	phi_audit_done_fn *done;
	void *arg;
	int status;
	uint64_t seq;
};

struct phi_audit_client {
	struct sockaddr_un sa;
	unsigned deadline_ms;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t next_id;
	size_t n, n_cap; /* n: pooled slots in use (preconnect may lower it), of n_cap */
	struct slot *slots;
	/* asynchronous submissions: one completion thread waits on every async connection
	 * (epoll) and calls each submitter's done(), so no submitting thread sleeps */
	struct aconn *aconns;
	size_t na, na_cap, inflight; /* na: connections in use (preconnect may lower it), of na_cap */
	int ep, wake; /* epoll, eventfd */
	bool started, stopping;
	pthread_t thread;
	pthread_cond_t acond; /* a slot freed, or nothing in flight any more */
	struct completion *done; /* the completion thread's buffer, na_cap * ACONN_DEPTH entries */
};

int phi_audit_client_open_opts(const char *socket_path, const struct phi_audit_client_opts *o,
			       struct phi_audit_client **ret)
{
	if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	struct phi_audit_client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->n = c->n_cap = o && o->pool ? o->pool : 64;
	c->deadline_ms = o && o->deadline_ms ? o->deadline_ms : 500;
	c->slots = calloc(c->n, sizeof(*c->slots));
	if (!c->slots) {
		free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->n; i++)
		c->slots[i].fd = -1;
	c->na = c->na_cap = c->n;
	c->aconns = calloc(c->na, sizeof(*c->aconns));
	if (!c->aconns) {
		free(c->slots);
		free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->na; i++)
		c->aconns[i].fd = -1;
	c->ep = c->wake = -1;
	c->sa.sun_family = AF_UNIX;
	memcpy(c->sa.sun_path, socket_path, strlen(socket_path));
	pthread_mutex_init(&c->lock, NULL);
	phi_cond_init_mono(&c->cond);
	phi_cond_init_mono(&c->acond);
	*ret = c;
	return 0;
}

int phi_audit_client_open(const char *socket_path, struct phi_audit_client **ret)
{
	return phi_audit_client_open_opts(socket_path, NULL, ret);
}

static void async_stop(struct phi_audit_client *c);

void phi_audit_client_free(struct phi_audit_client *c)
{
	if (!c)
		return;
	async_stop(c);
	for (size_t i = 0; i < c->n_cap; i++)
		phi_closep(&c->slots[i].fd);
	for (size_t i = 0; i < c->na_cap; i++)
		phi_closep(&c->aconns[i].fd);
	phi_closep(&c->ep);
	phi_closep(&c->wake);
	free(c->aconns);
	free(c->done);
	pthread_cond_destroy(&c->acond);
	pthread_cond_destroy(&c->cond);
	pthread_mutex_destroy(&c->lock);
	free(c->slots);
	free(c);
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int connect_slot(struct phi_audit_client *c, struct slot *s)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return phi_neg_errno();
	if (connect(fd, (struct sockaddr *)&c->sa, sizeof(c->sa)) < 0) {
		int r = phi_neg_errno();
		(void)close(fd);
		return r;
	}
	s->fd = fd;
	return 0;
}

/* Take a free slot, waiting until the deadline. */
static int take_slot(struct phi_audit_client *c, int64_t deadline, struct slot **ret,
		     uint32_t *ret_id)
{
	struct timespec ts = { .tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000 };
	int r = 0;
	pthread_mutex_lock(&c->lock);
	for (;;) {
		/* prefer a connected slot */
		struct slot *best = NULL;
		for (size_t i = 0; i < c->n; i++)
			if (!c->slots[i].busy && (!best || (best->fd < 0 && c->slots[i].fd >= 0)))
				best = &c->slots[i];
		if (best) {
			best->busy = true;
			*ret = best;
			*ret_id = ++c->next_id;
			break;
		}
		if (pthread_cond_timedwait(&c->cond, &c->lock, &ts) == ETIMEDOUT) {
			r = -ETIMEDOUT;
			break;
		}
	}
	pthread_mutex_unlock(&c->lock);
	return r;
}

static void put_slot(struct phi_audit_client *c, struct slot *s)
{
	pthread_mutex_lock(&c->lock);
	s->busy = false;
	pthread_cond_signal(&c->cond);
	pthread_mutex_unlock(&c->lock);
}

/* An idle pooled connection has nothing to read: anything there (end of file, an error, a
 * hangup) means the writer closed it (it restarted). Dropping it before the request is
 * sent makes the reconnect transparent, where a send into it could not be retried. */
static bool slot_stale(const struct slot *s)
{
	struct pollfd p = { .fd = s->fd, .events = POLLIN | POLLRDHUP };
	int n;
	while ((n = poll(&p, 1, 0)) < 0 && errno == EINTR)
		;
	return n != 0;
}

/* One entry of a reply message: its request id, status and *ret_seq on success. */
static int parse_entry(const uint8_t *rep, uint32_t *ret_id, uint64_t *ret_seq)
{
	if (memcmp(rep, PHI_AUDIT_REP_MAGIC, 4) != 0)
		return -EPROTO;
	struct phi_cur cur = phi_cur_init(rep + 4, PHI_AUDIT_REP_LEN - 4);
	uint32_t rid, st;
	uint64_t seq;
	(void)phi_cur_u32be(&cur, &rid);
	(void)phi_cur_u32be(&cur, &st);
	(void)phi_cur_u64be(&cur, &seq);
	int status = (int)st;
	if (status > 0 || status < -4095)
		return -EPROTO;
	*ret_id = rid;
	*ret_seq = status == 0 ? seq : 0;
	return status;
}

/* The writer's answer to request id, the only one in flight on its connection: its
 * status, and *ret_seq on success. */
static int parse_reply(const uint8_t *rep, size_t m, uint32_t id, uint64_t *ret_seq)
{
	uint32_t rid;
	uint64_t seq;
	if (m != PHI_AUDIT_REP_LEN)
		return -EPROTO;
	int r = parse_entry(rep, &rid, &seq);
	if (r == -EPROTO || rid != id)
		return -EPROTO; /* one request in flight per connection: cannot happen */
	if (r == 0)
		*ret_seq = seq;
	return r;
}

/* Whether status is the writer's own answer, after which the connection stays good. */
static bool writer_answer(int r)
{
	return r == 0 || r == -ENOSPC || r == -EIO || r == -EINVAL || r == -EBUSY || r == -EROFS ||
	       r == -EDQUOT;
}

/* One exchange on a connected slot: 0 or -errno; *sent tells whether the writer may have
 * received the request. */
static int exchange(struct slot *s, const struct phi_buf *req, uint32_t id, int64_t deadline,
		    bool *sent, uint64_t *ret_seq)
{
	uint8_t rep[PHI_AUDIT_REP_LEN + 1];
	*sent = false;
	if (send(s->fd, req->p, req->len, MSG_NOSIGNAL) != (ssize_t)req->len)
		return errno == EMSGSIZE ? -EINVAL : -ECONNRESET;
	*sent = true;
	for (;;) {
		int64_t left = deadline - mono_ms();
		struct pollfd p = { .fd = s->fd, .events = POLLIN };
		if (left <= 0)
			return -ETIMEDOUT;
		int n = poll(&p, 1, (int)left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return phi_neg_errno();
		if (n == 0)
			return -ETIMEDOUT;
		ssize_t m = recv(s->fd, rep, sizeof(rep), MSG_DONTWAIT);
		if (m < 0 && (errno == EINTR || errno == EAGAIN))
			continue;
		if (m <= 0)
			return -ECONNRESET;
		return parse_reply(rep, (size_t)m, id, ret_seq);
	}
}

/* The request for ev, its id left to fill in. */
static int encode_request(const struct phi_audit_event *ev, struct phi_buf *req)
{
	uint8_t hdr[PHI_AUDIT_REQ_HDR] = { 0 };
	phi_buf_init(req, PHI_AUDIT_REQ_HDR + PHI_AUDIT_RECORD_MAX);
	int r = phi_buf_append(req, hdr, sizeof(hdr));
	if (r == 0)
		r = phi_audit_encode_event(ev, req);
	if (r < 0)
		return r == -E2BIG ? -EINVAL : r;
	memcpy(req->p, PHI_AUDIT_REQ_MAGIC, 4);
	return 0;
}

int phi_audit_submit(struct phi_audit_client *c, const struct phi_audit_event *ev,
		     uint64_t *ret_seq)
{
	int64_t deadline = mono_ms() + c->deadline_ms;
	struct phi_buf req _cleanup_buf_;
	struct slot *s;
	uint32_t id;
	uint64_t seq = 0;
	int r = encode_request(ev, &req);
	if (r < 0)
		return r;
	r = take_slot(c, deadline, &s, &id);
	if (r < 0)
		return r;
	phi_put_u32be(req.p + 4, id);
	/* a pooled connection may be stale (the writer restarted): one fresh retry is safe
	 * only when the request cannot have reached the writer */
	if (s->fd >= 0 && slot_stale(s))
		phi_closep(&s->fd);
	for (int attempt = 0; attempt < 2; attempt++) {
		bool sent;
		bool fresh = s->fd < 0;
		if (fresh && (r = connect_slot(c, s)) < 0)
			break;
		r = exchange(s, &req, id, deadline, &sent, &seq);
		if (writer_answer(r))
			break; /* the connection stays good */
		phi_closep(&s->fd);
		if (sent || fresh)
			break;
	}
	put_slot(c, s);
	if (r == 0 && ret_seq)
		*ret_seq = seq;
	return r;
}

/* ---- asynchronous submissions ---- */

/* Entry i of connection a is answered (or lost with it): queue its completion unless it
 * had one at its deadline, and free its place (c->lock held). */
static void async_finish(struct phi_audit_client *c, struct aconn *a, unsigned i, int status,
			 uint64_t seq, struct completion *out, size_t *nout)
{
	if (!a->f[i].late) {
		out[(*nout)++] = (struct completion){ a->f[i].done, a->f[i].arg, status, seq };
		c->inflight--;
	}
	a->f[i] = a->f[--a->n];
	pthread_cond_broadcast(&c->acond);
}

/* Entry i missed its deadline: its submitter hears -ETIMEDOUT now; its place stays taken
 * until the writer's answer (c->lock held). */
static void async_late(struct phi_audit_client *c, struct aconn *a, unsigned i,
		       struct completion *out, size_t *nout)
{
	out[(*nout)++] = (struct completion){ a->f[i].done, a->f[i].arg, -ETIMEDOUT, 0 };
	a->f[i].late = true;
	c->inflight--;
	pthread_cond_broadcast(&c->acond);
}

/* Connection a is lost (c->lock held): everything in flight on it fails with status. */
static void async_lose(struct phi_audit_client *c, struct aconn *a, int status,
		       struct completion *out, size_t *nout)
{
	phi_closep(&a->fd);
	a->broken = false;
	while (a->n)
		async_finish(c, a, a->n - 1, status, 0, out, nout);
}

/* Connection a is readable (c->lock held): answers, or the writer closing it. An answer
 * matching no request in flight is ignored. */
static void async_read(struct phi_audit_client *c, struct aconn *a, struct completion *out,
		       size_t *nout)
{
	uint8_t rep[(PHI_AUDITD_BATCH_MAX + 1) * PHI_AUDIT_REP_LEN];
	while (a->fd >= 0) {
		ssize_t m = recv(a->fd, rep, sizeof(rep), MSG_DONTWAIT);
		if (m < 0 && errno == EINTR)
			continue;
		if (m < 0 && errno == EAGAIN)
			return;
		if (m <= 0 || (size_t)m % PHI_AUDIT_REP_LEN != 0 || (size_t)m == sizeof(rep)) {
			async_lose(c, a, m <= 0 ? -ECONNRESET : -EPROTO, out, nout);
			return;
		}
		for (size_t off = 0; off < (size_t)m; off += PHI_AUDIT_REP_LEN) {
			uint32_t id;
			uint64_t seq;
			int r = parse_entry(rep + off, &id, &seq);
			if (r == -EPROTO) {
				async_lose(c, a, r, out, nout);
				return;
			}
			for (unsigned i = 0; i < a->n; i++)
				if (a->f[i].id == id) {
					async_finish(c, a, i, r, seq, out, nout);
					break;
				}
		}
	}
}

static void *async_thread(void *arg)
{
	struct phi_audit_client *c = arg;
	struct epoll_event ev[64];
	struct completion *done = c->done;
	for (;;) {
		int64_t now = mono_ms(), first = -1;
		pthread_mutex_lock(&c->lock);
		bool stop = c->stopping;
		for (size_t k = 0; k < c->na; k++)
			for (unsigned i = 0; i < c->aconns[k].n; i++)
				if (!c->aconns[k].f[i].late &&
				    (first < 0 || c->aconns[k].f[i].deadline < first))
					first = c->aconns[k].f[i].deadline;
		pthread_mutex_unlock(&c->lock);
		if (stop)
			return NULL;
		int timeout = first < 0 ? -1 : first <= now ? 0 : (int)(first - now);
		int n = epoll_wait(c->ep, ev, 64, timeout);
		if (n < 0 && errno != EINTR)
			return NULL;
		size_t nd = 0;
		pthread_mutex_lock(&c->lock);
		for (int i = 0; i < n; i++) {
			if (ev[i].data.u64 == UINT64_MAX) {
				uint64_t cnt;
				if (read(c->wake, &cnt, sizeof(cnt)) < 0) {
					/* EAGAIN: another wake already drained it */
				}
				continue;
			}
			struct aconn *a = &c->aconns[ev[i].data.u64];
			if (a->n == 0 && a->fd >= 0) {
				phi_closep(&a->fd); /* idle: the writer closed it */
				a->broken = false;
			} else
				async_read(c, a, done, &nd);
		}
		now = mono_ms();
		for (size_t k = 0; k < c->na; k++) {
			struct aconn *a = &c->aconns[k];
			for (unsigned i = 0; i < a->n; i++)
				if (!a->f[i].late && a->f[i].deadline <= now)
					async_late(c, a, i, done, &nd);
		}
		pthread_mutex_unlock(&c->lock);
		/* outside the lock: done() answers the kernel, which may take a while */
		for (size_t i = 0; i < nd; i++)
			done[i].done(done[i].arg, done[i].status, done[i].seq);
	}
}

/* Start the completion thread on first use (c->lock held): the tools that only submit
 * synchronously never pay for it. */
static int async_start(struct phi_audit_client *c)
{
	if (c->started)
		return 0;
	/* one completion per request in flight at most per round; made here, where failing
	 * is an answer */
	if (!c->done && !(c->done = calloc(c->na_cap * ACONN_DEPTH, sizeof(*c->done))))
		return -ENOMEM;
	c->ep = epoll_create1(EPOLL_CLOEXEC);
	c->wake = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (c->ep < 0 || c->wake < 0)
		goto fail;
	struct epoll_event e = { .events = EPOLLIN, .data.u64 = UINT64_MAX };
	if (epoll_ctl(c->ep, EPOLL_CTL_ADD, c->wake, &e) < 0)
		goto fail;
	int r = phi_thread_start(&c->thread, async_thread, c);
	if (r < 0) {
		errno = -r;
		goto fail;
	}
	c->started = true;
	return 0;
fail:;
	int err = phi_neg_errno();
	phi_closep(&c->ep);
	phi_closep(&c->wake);
	return err;
}

static void async_wake(struct phi_audit_client *c)
{
	uint64_t one = 1;
	if (write(c->wake, &one, sizeof(one)) < 0) {
		/* EAGAIN: the counter is already nonzero, the thread will wake */
	}
}

/* Connect a (c->lock held) and let the completion thread watch it. */
static int async_connect(struct phi_audit_client *c, struct aconn *a)
{
	int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return phi_neg_errno();
	struct epoll_event e = { .events = EPOLLIN, .data.u64 = (uint64_t)(a - c->aconns) };
	if (connect(fd, (struct sockaddr *)&c->sa, sizeof(c->sa)) < 0 ||
	    epoll_ctl(c->ep, EPOLL_CTL_ADD, fd, &e) < 0) {
		int r = phi_neg_errno();
		(void)close(fd);
		return r;
	}
	a->fd = fd;
	return 0;
}

/* The connection for the next request (c->lock held): the first connected one with room,
 * so that requests pack onto few connections, else one not connected yet. skip: one that
 * just could not take a request. NULL: all full. */
static struct aconn *async_pick(struct phi_audit_client *c, const struct aconn *skip)
{
	struct aconn *spare = NULL;
	for (size_t k = 0; k < c->na; k++) {
		struct aconn *a = &c->aconns[k];
		if (a == skip || a->n == ACONN_DEPTH || a->broken)
			continue;
		if (a->fd >= 0)
			return a;
		if (!spare && a->n == 0)
			spare = a;
	}
	return spare;
}

int phi_audit_submit_async(struct phi_audit_client *c, const struct phi_audit_event *ev,
			   phi_audit_done_fn *done, void *arg)
{
	int64_t deadline = mono_ms() + c->deadline_ms;
	struct timespec ts = { .tv_sec = deadline / 1000, .tv_nsec = (deadline % 1000) * 1000000 };
	struct phi_buf req _cleanup_buf_;
	int r = encode_request(ev, &req);
	if (r < 0)
		return r;
	pthread_mutex_lock(&c->lock);
	r = c->stopping ? -ESHUTDOWN : async_start(c);
	struct aconn *a = NULL, *skip = NULL;
	bool sent = false;
	/* Sent under the lock, so the completion thread sees the request in flight before its
	 * answer can arrive. A connection the writer closed (it restarted) fails the send with
	 * EPIPE before anything reached it, so one fresh retry is safe; the connection is shut
	 * down, and the completion thread fails what was in flight on it (done() is only ever
	 * called there). One whose buffer is full (EAGAIN) is skipped for this request. */
	for (int attempt = 0; r == 0 && attempt < 3;) {
		while (r == 0 && !(a = async_pick(c, skip)))
			if (pthread_cond_timedwait(&c->acond, &c->lock, &ts) == ETIMEDOUT)
				r = -ETIMEDOUT;
		if (r < 0)
			break;
		bool fresh = a->fd < 0;
		if (fresh && (r = async_connect(c, a)) < 0)
			break;
		uint32_t id = ++c->next_id;
		phi_put_u32be(req.p + 4, id);
		if (send(a->fd, req.p, req.len, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)req.len) {
			a->f[a->n++] = (struct inflight){ .id = id, .deadline = deadline, .done = done,
							  .arg = arg };
			if (c->inflight++ == 0)
				async_wake(c); /* the thread may be waiting without a deadline */
			sent = true;
			break;
		}
		if (errno == EAGAIN && !fresh) {
			skip = a;
			attempt++;
			continue;
		}
		r = errno == EMSGSIZE ? -EINVAL : -ECONNRESET;
		if (r == -EINVAL)
			break; /* too big for any connection; this one is fine */
		if (a->n) {
			a->broken = true;
			(void)shutdown(a->fd, SHUT_RDWR);
		} else {
			phi_closep(&a->fd);
		}
		if (fresh)
			break;
		r = 0;
		attempt++;
	}
	if (r == 0 && !sent)
		r = -EAGAIN;
	pthread_mutex_unlock(&c->lock);
	return r;
}

void phi_audit_drain(struct phi_audit_client *c)
{
	if (!c)
		return;
	pthread_mutex_lock(&c->lock);
	while (c->inflight)
		pthread_cond_wait(&c->acond, &c->lock);
	pthread_mutex_unlock(&c->lock);
}

/* Stop the completion thread after every submission has its answer or its deadline. */
static void async_stop(struct phi_audit_client *c)
{
	pthread_mutex_lock(&c->lock);
	while (c->inflight)
		pthread_cond_wait(&c->acond, &c->lock);
	bool started = c->started;
	c->stopping = true;
	if (started)
		async_wake(c);
	pthread_mutex_unlock(&c->lock);
	if (started)
		pthread_join(c->thread, NULL);
}

int phi_audit_client_preconnect(struct phi_audit_client *c, unsigned n_sync, unsigned n_async)
{
	int r = 0;
	pthread_mutex_lock(&c->lock);
	if (n_sync && n_sync < c->n)
		c->n = n_sync;
	if (n_async && n_async < c->na)
		c->na = n_async;
	for (size_t i = 0; r == 0 && i < c->n; i++)
		if (c->slots[i].fd < 0 && !c->slots[i].busy)
			r = connect_slot(c, &c->slots[i]);
	if (r == 0)
		r = async_start(c);
	for (size_t i = 0; r == 0 && i < c->na; i++)
		if (c->aconns[i].fd < 0)
			r = async_connect(c, &c->aconns[i]);
	pthread_mutex_unlock(&c->lock);
	return r;
}
