/* audit-client.c: a pool of SOCK_SEQPACKET connections to phifs-auditd. */
#include "audit-client.h"

#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>

#include "auditd.h"

struct slot {
	int fd;
	bool busy;
};

struct phi_audit_client {
	struct sockaddr_un sa;
	unsigned deadline_ms;
	pthread_mutex_t lock;
	pthread_cond_t cond;
	uint32_t next_id;
	size_t n;
	struct slot *slots;
};

int phi_audit_client_open_opts(const char *socket_path, const struct phi_audit_client_opts *o,
			       struct phi_audit_client **ret)
{
	if (strlen(socket_path) >= sizeof(((struct sockaddr_un *)0)->sun_path))
		return -ENAMETOOLONG;
	struct phi_audit_client *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->n = o && o->pool ? o->pool : 64;
	c->deadline_ms = o && o->deadline_ms ? o->deadline_ms : 500;
	c->slots = calloc(c->n, sizeof(*c->slots));
	if (!c->slots) {
		free(c);
		return -ENOMEM;
	}
	for (size_t i = 0; i < c->n; i++)
		c->slots[i].fd = -1;
	c->sa.sun_family = AF_UNIX;
	memcpy(c->sa.sun_path, socket_path, strlen(socket_path));
	pthread_mutex_init(&c->lock, NULL);
	pthread_condattr_t ca;
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&c->cond, &ca);
	pthread_condattr_destroy(&ca);
	*ret = c;
	return 0;
}

int phi_audit_client_open(const char *socket_path, struct phi_audit_client **ret)
{
	return phi_audit_client_open_opts(socket_path, NULL, ret);
}

void phi_audit_client_free(struct phi_audit_client *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n; i++)
		phi_closep(&c->slots[i].fd);
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
		if (m != PHI_AUDIT_REP_LEN || memcmp(rep, PHI_AUDIT_REP_MAGIC, 4) != 0)
			return -EPROTO;
		struct phi_cur cur = phi_cur_init(rep + 4, PHI_AUDIT_REP_LEN - 4);
		uint32_t rid, st;
		uint64_t seq;
		(void)phi_cur_u32be(&cur, &rid);
		(void)phi_cur_u32be(&cur, &st);
		(void)phi_cur_u64be(&cur, &seq);
		if (rid != id)
			return -EPROTO; /* one request in flight per connection: cannot happen */
		int status = (int)st;
		if (status > 0 || status < -4095)
			return -EPROTO;
		if (status == 0)
			*ret_seq = seq;
		return status;
	}
}

int phi_audit_submit(struct phi_audit_client *c, const struct phi_audit_event *ev,
		     uint64_t *ret_seq)
{
	int64_t deadline = mono_ms() + c->deadline_ms;
	struct phi_buf req _cleanup_buf_;
	uint8_t hdr[PHI_AUDIT_REQ_HDR] = { 0 };
	struct slot *s;
	uint32_t id;
	uint64_t seq = 0;
	phi_buf_init(&req, PHI_AUDIT_REQ_HDR + PHI_AUDIT_RECORD_MAX);
	int r = phi_buf_append(&req, hdr, sizeof(hdr));
	if (r == 0)
		r = phi_audit_encode_event(ev, &req);
	if (r < 0)
		return r == -E2BIG ? -EINVAL : r;
	r = take_slot(c, deadline, &s, &id);
	if (r < 0)
		return r;
	memcpy(req.p, PHI_AUDIT_REQ_MAGIC, 4);
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
		if (r == 0 || r == -ENOSPC || r == -EIO || r == -EINVAL || r == -EBUSY || r == -EROFS ||
		    r == -EDQUOT)
			break; /* a writer answer: the connection stays good */
		phi_closep(&s->fd);
		if (sent || fresh)
			break;
	}
	put_slot(c, s);
	if (r == 0 && ret_seq)
		*ret_seq = seq;
	return r;
}
