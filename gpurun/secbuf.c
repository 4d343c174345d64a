/* secbuf.c: locked, capped, wiped plaintext buffers (secbuf.h). */
#include "secbuf.h"

#include <errno.h>
#include <sodium.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

void phi_secbuf_init(struct phi_secbuf *b, size_t max, struct phi_scrub_tally *tally)
{
	*b = (struct phi_secbuf){ .max = max, .tally = tally };
}

static size_t page_round(size_t n)
{
	size_t pg = (size_t)sysconf(_SC_PAGESIZE);
	return (n + pg - 1) / pg * pg;
}

static void unmap(struct phi_secbuf *b, char *p, size_t cap, bool locked)
{
	if (!p)
		return;
	sodium_memzero(p, cap);
	if (locked)
		(void)munlock(p, cap);
	(void)munmap(p, cap);
	if (b->tally) {
		b->tally->buffers++;
		b->tally->bytes += cap;
		if (locked)
			b->tally->locked++;
		else
			b->tally->unlocked++;
	}
}

int phi_secbuf_reserve(struct phi_secbuf *b, size_t extra)
{
	if (extra > b->max || b->len > b->max - extra)
		return -E2BIG;
	size_t need = b->len + extra + 1;
	if (need <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 4096;
	while (cap < need)
		cap *= 2;
	cap = page_round(cap);
	char *p = mmap(NULL, cap, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (p == MAP_FAILED)
		return -ENOMEM;
	(void)madvise(p, cap, MADV_DONTDUMP);
	bool locked = mlock(p, cap) == 0;
	if (b->len)
		memcpy(p, b->p, b->len);
	p[b->len] = 0;
	unmap(b, b->p, b->cap, b->locked);
	b->p = p;
	b->cap = cap;
	b->locked = locked;
	return 0;
}

int phi_secbuf_append(struct phi_secbuf *b, const void *p, size_t n)
{
	int r = phi_secbuf_reserve(b, n);
	if (r < 0)
		return r;
	if (n)
		memcpy(b->p + b->len, p, n);
	b->len += n;
	b->p[b->len] = 0;
	return 0;
}

int phi_secbuf_puts(struct phi_secbuf *b, const char *s)
{
	return phi_secbuf_append(b, s, strlen(s));
}

int phi_secbuf_printf(struct phi_secbuf *b, const char *fmt, ...)
{
	size_t want = 128;
	for (int i = 0; i < 2; i++) {
		int r = phi_secbuf_reserve(b, want);
		if (r < 0)
			return r;
		va_list ap;
		va_start(ap, fmt);
		/* straight into the locked buffer: no plaintext in a temporary */
		int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
		va_end(ap);
		if (n < 0)
			return -EINVAL;
		if ((size_t)n < b->cap - b->len) {
			b->len += (size_t)n;
			return 0;
		}
		want = (size_t)n;
	}
	return -E2BIG;
}

void phi_secbuf_clear(struct phi_secbuf *b)
{
	if (b->p)
		sodium_memzero(b->p, b->cap);
	b->len = 0;
}

void phi_secbuf_done(struct phi_secbuf *b)
{
	unmap(b, b->p, b->cap, b->locked);
	b->p = NULL;
	b->len = b->cap = 0;
	b->locked = false;
}

__attribute__((noinline)) void phi_stack_burn(size_t size)
{
	unsigned char buf[4096];
	sodium_memzero(buf, sizeof buf);
	if (size > sizeof buf)
		phi_stack_burn(size - sizeof buf);
	__asm__ __volatile__("" : : "r"(buf) : "memory");
}
