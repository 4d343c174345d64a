/* secbuf.h: growable buffers for plaintext (documents, prompts, tokens, outputs) in their
 * own anonymous mappings: locked in RAM where RLIMIT_MEMLOCK allows (never swapped), left
 * out of core dumps (MADV_DONTDUMP), capped by a hard max, and wiped before every unmap,
 * growth included. A scrub tally counts what was wiped, for gpurun's status JSON. */
#ifndef PHI_SECBUF_H
#define PHI_SECBUF_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct phi_scrub_tally {
	uint64_t buffers;  /* buffers wiped and unmapped */
	uint64_t bytes;    /* bytes wiped (whole mappings) */
	uint64_t locked;   /* of those, buffers whose pages were locked */
	uint64_t unlocked; /* buffers that could not be locked (RLIMIT_MEMLOCK) */
};

struct phi_secbuf {
	char *p;
	size_t len, cap, max;
	bool locked;
	struct phi_scrub_tally *tally; /* borrowed, may be NULL */
};

/* An empty buffer (no mapping yet) of at most max bytes. */
void phi_secbuf_init(struct phi_secbuf *b, size_t max, struct phi_scrub_tally *tally);
/* Room for extra more bytes (+1 for a NUL). -E2BIG past max, -ENOMEM. */
int phi_secbuf_reserve(struct phi_secbuf *b, size_t extra);
int phi_secbuf_append(struct phi_secbuf *b, const void *p, size_t n);
int phi_secbuf_puts(struct phi_secbuf *b, const char *s);
int phi_secbuf_printf(struct phi_secbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Forget the contents (wiped) but keep the mapping. */
void phi_secbuf_clear(struct phi_secbuf *b);
/* Wipe, unlock and unmap; the buffer is empty and reusable afterwards. */
void phi_secbuf_done(struct phi_secbuf *b);
#define _cleanup_secbuf_ __attribute__((cleanup(phi_secbuf_done)))

/* Overwrite size bytes of this thread's stack below the caller's frame (what deeper calls
 * left there: vsnprintf, the tokenizer, the JSON parser). */
void phi_stack_burn(size_t size);

#endif
