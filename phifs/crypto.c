/* crypto.c: AES-GCM / AES-SIV through OpenSSL EVP, keys and KDF through libsodium. */
#include "crypto.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

#include <openssl/evp.h>
#include <sodium.h>

#include "util.h"

/* Cipher implementations fetched once: OpenSSL 3 otherwise repeats a provider lookup
 * (locks, a hash table) on every context init, which dominated per-open and per-name
 * costs. Written once under pthread_once, read-only afterwards. */
static EVP_CIPHER *cipher_gcm, *cipher_siv128, *cipher_siv256;
static pthread_once_t cipher_once = PTHREAD_ONCE_INIT;

static void fetch_ciphers(void)
{
	cipher_gcm = EVP_CIPHER_fetch(NULL, "AES-256-GCM", NULL);
	cipher_siv128 = EVP_CIPHER_fetch(NULL, "AES-128-SIV", NULL);
	cipher_siv256 = EVP_CIPHER_fetch(NULL, "AES-256-SIV", NULL);
}

static int ciphers(void)
{
	pthread_once(&cipher_once, fetch_ciphers);
	return cipher_gcm && cipher_siv128 && cipher_siv256 ? 0 : -EIO;
}

int phi_crypto_init(void)
{
	if (sodium_init() < 0)
		return -EIO;
	return ciphers();
}

int phi_key_new(size_t len, struct phi_key **ret)
{
	if (len == 0 || len > 64)
		return -EINVAL;
	struct phi_key *k = calloc(1, sizeof(*k));
	if (!k)
		return -ENOMEM;
	/* sodium_malloc: guard pages, mlock'd, MADV_DONTDUMP; freed with sodium_free which wipes */
	k->k = sodium_malloc(len);
	if (!k->k) {
		free(k);
		return -ENOMEM;
	}
	sodium_memzero(k->k, len);
	k->len = len;
	*ret = k;
	return 0;
}

int phi_key_random(size_t len, struct phi_key **ret)
{
	struct phi_key *k;
	int r = phi_key_new(len, &k);
	if (r < 0)
		return r;
	randombytes_buf(k->k, len);
	*ret = k;
	return 0;
}

int phi_key_from(const void *bytes, size_t len, struct phi_key **ret)
{
	struct phi_key *k;
	int r = phi_key_new(len, &k);
	if (r < 0)
		return r;
	memcpy(k->k, bytes, len);
	*ret = k;
	return 0;
}

int phi_key_dup(const struct phi_key *k, struct phi_key **ret)
{
	return phi_key_from(k->k, k->len, ret);
}

void phi_key_free(struct phi_key *k)
{
	if (!k)
		return;
	EVP_CIPHER_CTX_free(atomic_load(&k->siv)); /* its key schedule is wiped by the free */
	sodium_free(k->k);
	free(k);
}

int phi_kdf(const struct phi_key *k, const char *label, const void *ctx, size_t ctx_len,
	    size_t out_len, struct phi_key **ret)
{
	if (out_len < crypto_generichash_BYTES_MIN || out_len > crypto_generichash_BYTES_MAX ||
	    k->len < crypto_generichash_KEYBYTES_MIN)
		return -EINVAL;
	struct phi_key *o;
	int r = phi_key_new(out_len, &o);
	if (r < 0)
		return r;
	crypto_generichash_state st;
	static const uint8_t zero = 0;
	crypto_generichash_init(&st, k->k, k->len, out_len);
	crypto_generichash_update(&st, (const uint8_t *)"phifs/", 6);
	crypto_generichash_update(&st, (const uint8_t *)label, strlen(label));
	crypto_generichash_update(&st, &zero, 1);
	if (ctx_len)
		crypto_generichash_update(&st, ctx, ctx_len);
	crypto_generichash_final(&st, o->k, out_len);
	sodium_memzero(&st, sizeof(st));
	*ret = o;
	return 0;
}

int phi_gcm_new_derived(const struct phi_key *k, const char *label, const void *ctx,
			size_t ctx_len, struct phi_gcm **ret)
{
	uint8_t sub[PHI_KEY_LEN];
	crypto_generichash_state st;
	static const uint8_t zero = 0;
	if (k->len < crypto_generichash_KEYBYTES_MIN)
		return -EINVAL;
	crypto_generichash_init(&st, k->k, k->len, sizeof(sub));
	crypto_generichash_update(&st, (const uint8_t *)"phifs/", 6);
	crypto_generichash_update(&st, (const uint8_t *)label, strlen(label));
	crypto_generichash_update(&st, &zero, 1);
	if (ctx_len)
		crypto_generichash_update(&st, ctx, ctx_len);
	crypto_generichash_final(&st, sub, sizeof(sub));
	/* the subkey lives only on this stack frame, only until the key schedule holds it */
	int r = phi_gcm_new_raw(sub, ret);
	sodium_memzero(sub, sizeof(sub));
	sodium_memzero(&st, sizeof(st));
	return r;
}

int phi_mac(const struct phi_key *k, const void *msg, size_t len, uint8_t out[32])
{
	if (k->len < crypto_generichash_KEYBYTES_MIN)
		return -EINVAL;
	return crypto_generichash(out, 32, msg, len, k->k, k->len) == 0 ? 0 : -EIO;
}

void phi_random(void *buf, size_t len)
{
	randombytes_buf(buf, len);
}

void phi_wipe_free(void *p, size_t len)
{
	if (!p)
		return;
	sodium_memzero(p, len);
	free(p);
}

/* ---- AES-256-GCM ---- */

struct phi_gcm {
	EVP_CIPHER_CTX *enc, *dec;
};

void phi_gcm_free(struct phi_gcm *g)
{
	if (!g)
		return;
	EVP_CIPHER_CTX_free(g->enc); /* EVP_CIPHER_CTX_free cleanses the key schedule */
	EVP_CIPHER_CTX_free(g->dec);
	free(g);
}

int phi_gcm_new(const struct phi_key *k, struct phi_gcm **ret)
{
	if (k->len != PHI_KEY_LEN)
		return -EINVAL;
	return phi_gcm_new_raw(k->k, ret);
}

int phi_gcm_new_raw(const uint8_t key[PHI_KEY_LEN], struct phi_gcm **ret)
{
	if (ciphers() < 0)
		return -EIO;
	struct phi_gcm *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->enc = EVP_CIPHER_CTX_new();
	g->dec = EVP_CIPHER_CTX_new();
	if (!g->enc || !g->dec || EVP_EncryptInit_ex2(g->enc, cipher_gcm, key, NULL, NULL) != 1 ||
	    EVP_DecryptInit_ex2(g->dec, cipher_gcm, key, NULL, NULL) != 1) {
		phi_gcm_free(g);
		return -ENOMEM;
	}
	*ret = g;
	return 0;
}

int phi_gcm_seal(struct phi_gcm *g, const uint8_t nonce[PHI_GCM_NONCE], const void *aad,
		 size_t aad_len, const void *pt, size_t len, uint8_t *out)
{
	int n;
	if (len > INT32_MAX || aad_len > INT32_MAX)
		return -EINVAL;
	memcpy(out, nonce, PHI_GCM_NONCE);
	if (EVP_EncryptInit_ex(g->enc, NULL, NULL, NULL, nonce) != 1)
		return -EIO;
	if (aad_len && EVP_EncryptUpdate(g->enc, NULL, &n, aad, (int)aad_len) != 1)
		return -EIO;
	if (len && EVP_EncryptUpdate(g->enc, out + PHI_GCM_NONCE, &n, pt, (int)len) != 1)
		return -EIO;
	if (EVP_EncryptFinal_ex(g->enc, out + PHI_GCM_NONCE + len, &n) != 1)
		return -EIO;
	if (EVP_CIPHER_CTX_ctrl(g->enc, EVP_CTRL_GCM_GET_TAG, PHI_GCM_TAG,
				out + PHI_GCM_NONCE + len) != 1)
		return -EIO;
	return 0;
}

int phi_gcm_open(struct phi_gcm *g, const void *aad, size_t aad_len, const uint8_t *in,
		 size_t in_len, uint8_t *out)
{
	int n;
	if (in_len < PHI_GCM_OVERHEAD || in_len > INT32_MAX || aad_len > INT32_MAX)
		return -EBADMSG;
	size_t len = in_len - PHI_GCM_OVERHEAD;
	uint8_t tag[PHI_GCM_TAG];
	memcpy(tag, in + PHI_GCM_NONCE + len, PHI_GCM_TAG);
	if (EVP_DecryptInit_ex(g->dec, NULL, NULL, NULL, in) != 1)
		return -EIO;
	if (aad_len && EVP_DecryptUpdate(g->dec, NULL, &n, aad, (int)aad_len) != 1)
		return -EIO;
	if (len && EVP_DecryptUpdate(g->dec, out, &n, in + PHI_GCM_NONCE, (int)len) != 1)
		return -EIO;
	if (EVP_CIPHER_CTX_ctrl(g->dec, EVP_CTRL_GCM_SET_TAG, PHI_GCM_TAG, tag) != 1)
		return -EIO;
	if (EVP_DecryptFinal_ex(g->dec, out + len, &n) != 1) {
		/* never hand back unauthenticated plaintext */
		sodium_memzero(out, len);
		return -EBADMSG;
	}
	return 0;
}

int phi_seal_nonce(const struct phi_key *k, const uint8_t nonce[PHI_GCM_NONCE], const void *aad,
		   size_t aad_len, const void *pt, size_t len, uint8_t *out)
{
	struct phi_gcm *g;
	int r = phi_gcm_new(k, &g);
	if (r < 0)
		return r;
	r = phi_gcm_seal(g, nonce, aad, aad_len, pt, len, out);
	phi_gcm_free(g);
	return r;
}

int phi_seal(const struct phi_key *k, const void *aad, size_t aad_len, const void *pt, size_t len,
	     uint8_t *out)
{
	uint8_t nonce[PHI_GCM_NONCE];
	randombytes_buf(nonce, sizeof(nonce));
	return phi_seal_nonce(k, nonce, aad, aad_len, pt, len, out);
}

int phi_open(const struct phi_key *k, const void *aad, size_t aad_len, const uint8_t *in,
	     size_t in_len, uint8_t *out)
{
	struct phi_gcm *g;
	int r = phi_gcm_new(k, &g);
	if (r < 0)
		return r;
	r = phi_gcm_open(g, aad, aad_len, in, in_len, out);
	phi_gcm_free(g);
	return r;
}

/* ---- AES-SIV ---- */


/* The key's SIV context, keyed and never used, made on first use. Setting up an SIV key in
 * OpenSSL 3 fetches CMAC, CBC and CTR implementations by name (locks, string compares) and
 * derives the first S2V block: about 6 us, per name of a listing. A copy of a ready context
 * skips all of that. Racing first users each make one; one is kept, the others freed. */
static EVP_CIPHER_CTX *siv_template(const struct phi_key *k)
{
	struct phi_key *mk = (struct phi_key *)k; /* the cache only; the key bytes stay const */
	void *t = atomic_load(&mk->siv); /* void *: the header keeps OpenSSL's types out */
	if (t)
		return t;
	/* 32-byte key: AES-128-SIV (RFC 5297 test vectors); 64-byte: AES-256-SIV (phifs names) */
	const EVP_CIPHER *c = k->len == 64 ? cipher_siv256 : cipher_siv128;
	EVP_CIPHER_CTX *mine = EVP_CIPHER_CTX_new();
	if (!mine)
		return NULL;
	if (EVP_CipherInit_ex2(mine, c, k->k, NULL, 1, NULL) != 1) {
		EVP_CIPHER_CTX_free(mine);
		return NULL;
	}
	if (atomic_compare_exchange_strong(&mk->siv, &t, mine))
		return mine;
	EVP_CIPHER_CTX_free(mine); /* another thread's is in place: t */
	return t;
}

static int siv_run(const struct phi_key *k, int enc, const void *ad, size_t ad_len,
		   const uint8_t *in, size_t len, uint8_t *out, uint8_t tag[PHI_SIV_TAG])
{
	int n, r = -EIO;
	if ((k->len != 32 && k->len != 64) || len > INT32_MAX || ad_len > INT32_MAX)
		return -EINVAL;
	if (ciphers() < 0)
		return -EIO;
	const EVP_CIPHER_CTX *t = siv_template(k);
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	if (!t || !ctx)
		goto out;
	/* the copy is a fresh keyed context; only the direction is set here */
	if (EVP_CIPHER_CTX_copy(ctx, t) != 1 || EVP_CipherInit_ex2(ctx, NULL, NULL, NULL, enc, NULL) != 1)
		goto out;
	if (!enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_SET_TAG, PHI_SIV_TAG, tag) != 1)
		goto out;
	if (EVP_CipherUpdate(ctx, NULL, &n, ad, (int)ad_len) != 1)
		goto out;
	if (EVP_CipherUpdate(ctx, out, &n, in, (int)len) != 1) {
		r = enc ? -EIO : -EBADMSG;
		goto out;
	}
	if (EVP_CipherFinal_ex(ctx, out + len, &n) != 1) {
		r = enc ? -EIO : -EBADMSG;
		goto out;
	}
	if (enc && EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_AEAD_GET_TAG, PHI_SIV_TAG, tag) != 1)
		goto out;
	r = 0;
out:
	if (r < 0 && !enc)
		sodium_memzero(out, len);
	EVP_CIPHER_CTX_free(ctx);
	return r;
}

int phi_siv_seal(const struct phi_key *k, const void *ad, size_t ad_len, const void *pt,
		 size_t len, uint8_t *out)
{
	if (len == 0)
		return -EINVAL; /* names and link targets are never empty */
	return siv_run(k, 1, ad, ad_len, pt, len, out + PHI_SIV_TAG, out);
}

int phi_siv_open(const struct phi_key *k, const void *ad, size_t ad_len, const uint8_t *in,
		 size_t in_len, uint8_t *out)
{
	if (in_len <= PHI_SIV_TAG)
		return -EBADMSG;
	uint8_t tag[PHI_SIV_TAG];
	memcpy(tag, in, PHI_SIV_TAG);
	return siv_run(k, 0, ad, ad_len, in + PHI_SIV_TAG, in_len - PHI_SIV_TAG, out, tag);
}

/* ---- base64url ---- */

static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

void phi_b64_enc(const uint8_t *in, size_t n, char *out)
{
	size_t i = 0, o = 0;
	for (; i + 3 <= n; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
		out[o++] = b64[v & 63];
	}
	if (n - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
	} else if (n - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
		out[o++] = b64[v >> 18];
		out[o++] = b64[(v >> 12) & 63];
		out[o++] = b64[(v >> 6) & 63];
	}
	out[o] = 0;
}

static int b64_val(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

int phi_b64_dec(const char *in, size_t in_len, uint8_t *out, size_t out_max, size_t *ret_len)
{
	if (in_len % 4 == 1)
		return -EINVAL;
	size_t need = in_len / 4 * 3 + (in_len % 4 ? in_len % 4 - 1 : 0);
	if (need > out_max)
		return -ENAMETOOLONG;
	uint32_t acc = 0;
	size_t o = 0;
	for (size_t i = 0; i < in_len; i++) {
		int v = b64_val(in[i]);
		if (v < 0)
			return -EINVAL;
		acc = acc << 6 | (uint32_t)v;
		if (i % 4 == 3) {
			out[o++] = (uint8_t)(acc >> 16);
			out[o++] = (uint8_t)(acc >> 8);
			out[o++] = (uint8_t)acc;
			acc = 0;
		}
	}
	size_t tail = in_len % 4;
	if (tail == 2) {
		if (acc & 0xf)
			return -EINVAL; /* non-canonical: unused bits set */
		out[o++] = (uint8_t)(acc >> 4);
	} else if (tail == 3) {
		if (acc & 0x3)
			return -EINVAL;
		out[o++] = (uint8_t)(acc >> 10);
		out[o++] = (uint8_t)(acc >> 2);
	}
	*ret_len = o;
	return 0;
}
