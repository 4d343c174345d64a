/* util.h: ownership, error and bounded-buffer helpers shared by every module.
 *
 * Conventions (see docs/style.md):
 *   - functions return 0 or -errno; outputs (ret_*) are written only on success;
 *   - ownership is expressed with _cleanup_ attributes and handed over with TAKE_PTR/TAKE_FD;
 *   - every parser reads through a struct phi_cur, which never reads past its end.
 */
#ifndef PHI_UTIL_H
#define PHI_UTIL_H

#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define _cleanup_(f) __attribute__((cleanup(f)))
#define _unused_ __attribute__((unused))
#define _must_check_ __attribute__((warn_unused_result))

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

static inline void phi_freep(void *p)
{
	free(*(void **)p);
	*(void **)p = NULL;
}
#define _cleanup_free_ _cleanup_(phi_freep)

/* free() after wiping the whole allocation: for buffers that held plaintext or secrets */
static inline void phi_erase_free(void *q)
{
	if (q) {
		explicit_bzero(q, malloc_usable_size(q));
		free(q);
	}
}
static inline void phi_erase_freep(void *p)
{
	phi_erase_free(*(void **)p);
	*(void **)p = NULL;
}
#define _cleanup_erase_ _cleanup_(phi_erase_freep)

static inline void phi_closep(int *fd)
{
	if (*fd >= 0) {
		int saved = errno; /* close() in cleanup must not clobber the caller's errno */
		(void)close(*fd);
		errno = saved;
	}
	*fd = -1;
}
#define _cleanup_close_ _cleanup_(phi_closep)

static inline void phi_fclosep(FILE **f)
{
	if (*f)
		(void)fclose(*f);
	*f = NULL;
}
#define _cleanup_fclose_ _cleanup_(phi_fclosep)

/* Hand ownership out of a _cleanup_ variable. */
#define TAKE_PTR(p)                            \
	({                                     \
		__typeof__(p) _tp_ = (p);      \
		(p) = NULL;                    \
		_tp_;                          \
	})
#define TAKE_FD(fd)                \
	({                         \
		int _tf_ = (fd);   \
		(fd) = -1;         \
		_tf_;              \
	})

/* Convert a libc-style "-1 and errno" result into 0 / -errno. */
/* Formats a message into err (when given) and returns r: the parsers' error exit. */
static inline int phi_errf(char *err, size_t errlen, int r, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static inline int phi_errf(char *err, size_t errlen, int r, const char *fmt, ...)
{
	if (err && errlen) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(err, errlen, fmt, ap);
		va_end(ap);
	}
	return r;
}

/* Reads fd to its end into buf: 0 with *ret_n, or -EFBIG when it fills buf (so a file of
 * size bytes or more is refused: callers pass one byte more than they accept), -errno. */
static inline int phi_read_small(int fd, void *buf, size_t size, size_t *ret_n)
{
	size_t n = 0;
	for (;;) {
		ssize_t k = read(fd, (char *)buf + n, size - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0)
			return -errno;
		if (k == 0)
			break;
		n += (size_t)k;
		if (n == size)
			return -EFBIG;
	}
	*ret_n = n;
	return 0;
}

static inline int phi_neg_errno(void)
{
	return errno > 0 ? -errno : -EIO;
}
#define RET_NERRNO(expr)                                  \
	({                                                \
		long _r_ = (long)(expr);                  \
		_r_ < 0 ? phi_neg_errno() : (int)0;       \
	})

/* ---- cursor-based reader: every on-store / on-wire parser uses this ---- */

struct phi_cur {
	const uint8_t *p;
	size_t len;
	size_t off;
};

static inline struct phi_cur phi_cur_init(const void *p, size_t len)
{
	return (struct phi_cur){ .p = p, .len = len, .off = 0 };
}

static inline size_t phi_cur_left(const struct phi_cur *c)
{
	return c->len - c->off;
}

static inline int phi_cur_bytes(struct phi_cur *c, void *out, size_t n)
{
	if (phi_cur_left(c) < n)
		return -EBADMSG;
	if (n)
		memcpy(out, c->p + c->off, n);
	c->off += n;
	return 0;
}

/* Borrow n bytes in place (no copy). */
static inline int phi_cur_ref(struct phi_cur *c, const uint8_t **out, size_t n)
{
	if (phi_cur_left(c) < n)
		return -EBADMSG;
	*out = c->p + c->off;
	c->off += n;
	return 0;
}

static inline int phi_cur_u8(struct phi_cur *c, uint8_t *v)
{
	return phi_cur_bytes(c, v, 1);
}

static inline int phi_cur_u16be(struct phi_cur *c, uint16_t *v)
{
	uint8_t b[2];
	int r = phi_cur_bytes(c, b, 2);
	if (r < 0)
		return r;
	*v = (uint16_t)((b[0] << 8) | b[1]);
	return 0;
}

static inline int phi_cur_u32be(struct phi_cur *c, uint32_t *v)
{
	uint8_t b[4];
	int r = phi_cur_bytes(c, b, 4);
	if (r < 0)
		return r;
	*v = ((uint32_t)b[0] << 24) | ((uint32_t)b[1] << 16) | ((uint32_t)b[2] << 8) | b[3];
	return 0;
}

/* A failed read leaves the cursor where it was. */
static inline int phi_cur_u64be(struct phi_cur *c, uint64_t *v)
{
	uint32_t hi = 0, lo = 0;
	if (phi_cur_left(c) < 8)
		return -EBADMSG;
	(void)phi_cur_u32be(c, &hi);
	(void)phi_cur_u32be(c, &lo);
	*v = ((uint64_t)hi << 32) | lo;
	return 0;
}

/* ---- big-endian stores into a caller-sized buffer ---- */

static inline void phi_put_u16be(uint8_t *p, uint16_t v)
{
	p[0] = (uint8_t)(v >> 8);
	p[1] = (uint8_t)v;
}

static inline void phi_put_u32be(uint8_t *p, uint32_t v)
{
	p[0] = (uint8_t)(v >> 24);
	p[1] = (uint8_t)(v >> 16);
	p[2] = (uint8_t)(v >> 8);
	p[3] = (uint8_t)v;
}

static inline void phi_put_u64be(uint8_t *p, uint64_t v)
{
	phi_put_u32be(p, (uint32_t)(v >> 32));
	phi_put_u32be(p + 4, (uint32_t)v);
}

/* ---- bounded growable buffer: every growable buffer has a hard max ---- */

struct phi_buf {
	uint8_t *p;
	size_t len;
	size_t cap;
	size_t max; /* hard limit; appends beyond it fail with -E2BIG */
};

static inline void phi_buf_init(struct phi_buf *b, size_t max)
{
	*b = (struct phi_buf){ .max = max };
}

static inline int phi_buf_reserve(struct phi_buf *b, size_t extra)
{
	if (extra > b->max || b->len > b->max - extra)
		return -E2BIG;
	size_t need = b->len + extra;
	if (need <= b->cap)
		return 0;
	size_t ncap = b->cap ? b->cap : 64;
	while (ncap < need)
		ncap = ncap > b->max / 2 ? b->max : ncap * 2;
	uint8_t *np = realloc(b->p, ncap);
	if (!np)
		return -ENOMEM;
	b->p = np;
	b->cap = ncap;
	return 0;
}

static inline int phi_buf_append(struct phi_buf *b, const void *d, size_t n)
{
	int r = phi_buf_reserve(b, n);
	if (r < 0)
		return r;
	if (n)
		memcpy(b->p + b->len, d, n);
	b->len += n;
	return 0;
}

static inline void phi_buf_done(struct phi_buf *b)
{
	free(b->p);
	*b = (struct phi_buf){ .max = b->max };
}
#define _cleanup_buf_ _cleanup_(phi_buf_done)

/* Parse a decimal unsigned integer in [0, max]; the whole string must be consumed. */
static inline int phi_parse_u64(const char *s, uint64_t max, uint64_t *ret)
{
	if (!s || !*s)
		return -EINVAL;
	uint64_t v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		unsigned d = (unsigned)(*p - '0');
		if (v > (max - d) / 10)
			return -ERANGE;
		v = v * 10 + d;
	}
	*ret = v;
	return 0;
}

#endif
