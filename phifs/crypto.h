/* crypto.h: the primitives every phifs on-store format is built from.
 *
 * Bulk AEAD (AES-256-GCM) and deterministic name encryption (AES-256-SIV) go
 * through OpenSSL EVP; randomness, key derivation and secure memory come from
 * libsodium. Keys live in struct phi_key: sodium_malloc'd (guard pages, mlock'd,
 * excluded from core dumps) and wiped on free.
 */
#ifndef PHI_CRYPTO_H
#define PHI_CRYPTO_H

#include <stddef.h>
#include <stdint.h>

#define PHI_KEY_LEN 32      /* AES-256 / BLAKE2b keys */
#define PHI_SIV_KEY_LEN 64  /* AES-256-SIV takes two 256-bit keys */
#define PHI_GCM_NONCE 12
#define PHI_GCM_TAG 16
#define PHI_GCM_OVERHEAD (PHI_GCM_NONCE + PHI_GCM_TAG)
#define PHI_SIV_TAG 16

/* Process-wide initialisation (sodium_init); idempotent. */
int phi_crypto_init(void);

/* A key held in locked, guarded memory. len is PHI_KEY_LEN or PHI_SIV_KEY_LEN. */
struct phi_key {
	size_t len;
	uint8_t *k; /* sodium_malloc'd */
	/* the key's AES-SIV context, made on first SIV use and copied per message (crypto.c):
	 * a cache derived from k, not part of its value (k must not change after that use),
	 * freed with the key */
	void *_Atomic siv;
};

int phi_key_new(size_t len, struct phi_key **ret);           /* zero-filled */
int phi_key_random(size_t len, struct phi_key **ret);        /* from randombytes */
int phi_key_from(const void *bytes, size_t len, struct phi_key **ret);
int phi_key_dup(const struct phi_key *k, struct phi_key **ret);
void phi_key_free(struct phi_key *k);
static inline void phi_key_freep(struct phi_key **k)
{
	phi_key_free(*k);
	*k = NULL;
}
#define _cleanup_key_ __attribute__((cleanup(phi_key_freep)))

/* Derive a subkey of out_len bytes (32 or 64): BLAKE2b keyed with k over
 * "phifs/" || label || 0x00 || ctx. Distinct labels give independent keys. */
int phi_kdf(const struct phi_key *k, const char *label, const void *ctx, size_t ctx_len,
	    size_t out_len, struct phi_key **ret);

/* HMAC-like keyed hash (BLAKE2b-256 keyed): out has 32 bytes. */
int phi_mac(const struct phi_key *k, const void *msg, size_t len, uint8_t out[32]);

void phi_random(void *buf, size_t len);

/* AES-256-GCM. out = nonce(12) || ciphertext(len) || tag(16). out must hold len + 28.
 * The nonce is random (phi_seal) or given (phi_seal_nonce, for golden vectors). */
int phi_seal(const struct phi_key *k, const void *aad, size_t aad_len, const void *pt, size_t len,
	     uint8_t *out);
int phi_seal_nonce(const struct phi_key *k, const uint8_t nonce[PHI_GCM_NONCE], const void *aad,
		   size_t aad_len, const void *pt, size_t len, uint8_t *out);
/* in holds in_len >= 28 bytes; out receives in_len - 28 bytes only if the tag verifies.
 * Returns -EBADMSG when authentication fails. */
int phi_open(const struct phi_key *k, const void *aad, size_t aad_len, const uint8_t *in,
	     size_t in_len, uint8_t *out);

/* A reusable GCM context for the bulk path (one per thread or per open file):
 * avoids re-running the AES key schedule for every 4 KiB block. */
struct phi_gcm;
int phi_gcm_new(const struct phi_key *k, struct phi_gcm **ret);
/* Same as phi_gcm_new(phi_kdf(k, label, ctx)) without holding the subkey in a phi_key. */
int phi_gcm_new_derived(const struct phi_key *k, const char *label, const void *ctx,
			size_t ctx_len, struct phi_gcm **ret);
int phi_gcm_new_raw(const uint8_t key[PHI_KEY_LEN], struct phi_gcm **ret);
void phi_gcm_free(struct phi_gcm *g);
int phi_gcm_seal(struct phi_gcm *g, const uint8_t nonce[PHI_GCM_NONCE], const void *aad,
		 size_t aad_len, const void *pt, size_t len, uint8_t *out);
int phi_gcm_open(struct phi_gcm *g, const void *aad, size_t aad_len, const uint8_t *in,
		 size_t in_len, uint8_t *out);

/* AES-256-SIV (RFC 5297) with one associated-data item. out = tag(16) || ciphertext(len). */
int phi_siv_seal(const struct phi_key *k, const void *ad, size_t ad_len, const void *pt,
		 size_t len, uint8_t *out);
int phi_siv_open(const struct phi_key *k, const void *ad, size_t ad_len, const uint8_t *in,
		 size_t in_len, uint8_t *out);

/* base64url without padding (RFC 4648 §5). enc writes a NUL-terminated string of
 * phi_b64_len(n) chars; dec rejects any non-alphabet byte or non-canonical tail. */
static inline size_t phi_b64_len(size_t n)
{
	return (n / 3) * 4 + (n % 3 ? n % 3 + 1 : 0);
}
void phi_b64_enc(const uint8_t *in, size_t n, char *out);
int phi_b64_dec(const char *in, size_t in_len, uint8_t *out, size_t out_max, size_t *ret_len);

/* Wipe a buffer (sodium_memzero) and free it. */
void phi_wipe_free(void *p, size_t len);

#endif
