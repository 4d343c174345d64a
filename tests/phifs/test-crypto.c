/* test-crypto: golden vectors for the primitives (NIST GCM, RFC 5297 SIV, RFC 4648 base64url). */
#include <errno.h>
#include <string.h>

#include "phifs/crypto.h"
#include "test.h"

static void unhex(const char *h, uint8_t *out)
{
	for (size_t i = 0; h[2 * i]; i++) {
		unsigned v;
		sscanf(h + 2 * i, "%2x", &v);
		out[i] = (uint8_t)v;
	}
}

static void test_gcm(void)
{
	/* NIST GCM test case 2 with a 256-bit key (McGrew & Viega, test case 14) */
	uint8_t key[32] = { 0 }, nonce[12] = { 0 }, pt[16] = { 0 }, out[16 + 28], back[16];
	uint8_t want_ct[16], want_tag[16];
	unhex("cea7403d4d606b6e074ec5d3baf39d18", want_ct);
	unhex("d0d1c8a799996bf0265b98b5d48ab919", want_tag);
	_cleanup_key_ struct phi_key *k = NULL;
	CHECK_OK(phi_key_from(key, 32, &k));
	CHECK_OK(phi_seal_nonce(k, nonce, NULL, 0, pt, 16, out));
	CHECK_MEM(out + 12, want_ct, 16);
	CHECK_MEM(out + 28, want_tag, 16);
	CHECK_OK(phi_open(k, NULL, 0, out, sizeof(out), back));
	CHECK_MEM(back, pt, 16);
	/* every bit flip and a wrong AAD fail */
	for (size_t i = 0; i < sizeof(out) * 8; i += 7) {
		out[i / 8] ^= (uint8_t)(1u << (i % 8));
		CHECK_EQ(phi_open(k, NULL, 0, out, sizeof(out), back), -EBADMSG);
		out[i / 8] ^= (uint8_t)(1u << (i % 8));
	}
	CHECK_EQ(phi_open(k, "x", 1, out, sizeof(out), back), -EBADMSG);
	CHECK_EQ(phi_open(k, NULL, 0, out, 27, back), -EBADMSG);
	/* random nonces differ */
	uint8_t a[44], b[44];
	CHECK_OK(phi_seal(k, "ad", 2, pt, 16, a));
	CHECK_OK(phi_seal(k, "ad", 2, pt, 16, b));
	CHECK(memcmp(a, b, 12) != 0);
	CHECK_OK(phi_open(k, "ad", 2, a, 44, back));
}

static void test_siv(void)
{
	/* RFC 5297 appendix A.1 (AES-SIV with a 256-bit key = AES-128-SIV) */
	uint8_t key[32], ad[24], pt[14], want[30], out[30], back[14];
	unhex("fffefdfcfbfaf9f8f7f6f5f4f3f2f1f0f0f1f2f3f4f5f6f7f8f9fafbfcfdfeff", key);
	unhex("101112131415161718191a1b1c1d1e1f2021222324252627", ad);
	unhex("112233445566778899aabbccddee", pt);
	unhex("85632d07c6e8f37f950acd320a2ecc9340c02b9690c4dc04daef7f6afe5c", want);
	_cleanup_key_ struct phi_key *k = NULL;
	CHECK_OK(phi_key_from(key, 32, &k));
	CHECK_OK(phi_siv_seal(k, ad, sizeof(ad), pt, sizeof(pt), out));
	CHECK_MEM(out, want, 30);
	CHECK_OK(phi_siv_open(k, ad, sizeof(ad), out, 30, back));
	CHECK_MEM(back, pt, 14);
	out[20] ^= 1;
	CHECK_EQ(phi_siv_open(k, ad, sizeof(ad), out, 30, back), -EBADMSG);
	out[20] ^= 1;
	ad[0] ^= 1;
	CHECK_EQ(phi_siv_open(k, ad, sizeof(ad), out, 30, back), -EBADMSG);
	/* AES-256-SIV: deterministic, AD-bound */
	_cleanup_key_ struct phi_key *k2 = NULL;
	CHECK_OK(phi_key_random(64, &k2));
	uint8_t o1[21], o2[21], o3[21];
	CHECK_OK(phi_siv_seal(k2, "d1", 2, "hello", 5, o1));
	CHECK_OK(phi_siv_seal(k2, "d1", 2, "hello", 5, o2));
	CHECK_OK(phi_siv_seal(k2, "d2", 2, "hello", 5, o3));
	CHECK_MEM(o1, o2, 21);
	CHECK(memcmp(o1, o3, 21) != 0);
}

static void test_b64(void)
{
	/* RFC 4648 §10 vectors, without padding, url alphabet */
	const char *in[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	const char *want[] = { "", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE", "Zm9vYmFy" };
	for (size_t i = 0; i < 7; i++) {
		char enc[16];
		uint8_t dec[16];
		size_t n;
		phi_b64_enc((const uint8_t *)in[i], strlen(in[i]), enc);
		CHECK(strcmp(enc, want[i]) == 0);
		CHECK_EQ(strlen(enc), phi_b64_len(strlen(in[i])));
		CHECK_OK(phi_b64_dec(enc, strlen(enc), dec, sizeof(dec), &n));
		CHECK_EQ(n, strlen(in[i]));
		CHECK_MEM(dec, in[i], n);
	}
	uint8_t all[3] = { 0xfb, 0xff, 0xfe }, dec[8];
	char enc[8];
	size_t n;
	phi_b64_enc(all, 3, enc);
	CHECK(strcmp(enc, "-__-") == 0);
	CHECK_EQ(phi_b64_dec("Zh", 2, dec, 8, &n), -EINVAL); /* non-canonical tail */
	CHECK_EQ(phi_b64_dec("Z", 1, dec, 8, &n), -EINVAL);
	CHECK_EQ(phi_b64_dec("Zm9+", 4, dec, 8, &n), -EINVAL);
	CHECK_EQ(phi_b64_dec("Zm9vYmFy", 8, dec, 5, &n), -ENAMETOOLONG);
}

static void test_kdf(void)
{
	_cleanup_key_ struct phi_key *k = NULL, *a = NULL, *b = NULL, *c = NULL;
	CHECK_OK(phi_key_random(32, &k));
	CHECK_OK(phi_kdf(k, "content", "id", 2, 32, &a));
	CHECK_OK(phi_kdf(k, "content", "id", 2, 32, &b));
	CHECK_OK(phi_kdf(k, "names", "id", 2, 64, &c));
	CHECK_MEM(a->k, b->k, 32);
	CHECK(memcmp(a->k, c->k, 32) != 0);
	CHECK_EQ(c->len, 64);
}

int main(void)
{
	CHECK_OK(phi_crypto_init());
	test_gcm();
	test_siv();
	test_b64();
	test_kdf();
	return 0;
}
