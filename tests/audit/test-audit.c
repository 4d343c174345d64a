/* Unit test of phifs/audit.c: golden vectors (computed independently with Python hashlib and
 * cryptography's Ed25519) for the record, leaf and chain hashes, key texts and a checkpoint
 * note; strict parser rejections; framing; pseudonyms. */
#include <openssl/evp.h>
#include <sodium.h>

#include "phifs/audit.h"
#include "test.h"

/* The leaf and chain hashes go through OpenSSL and fall back to libsodium when OpenSSL
 * cannot allocate a digest context. The link wraps EVP_MD_CTX_new (-Wl,--wrap, see
 * meson.build) so that test_sha256_fallback can make it fail; a static flag because the
 * wrapper is called from inside the library and takes no argument. */
EVP_MD_CTX *__real_EVP_MD_CTX_new(void);
EVP_MD_CTX *__wrap_EVP_MD_CTX_new(void);
static int md_ctx_new_fails;
static unsigned md_ctx_new_calls;

EVP_MD_CTX *__wrap_EVP_MD_CTX_new(void)
{
	md_ctx_new_calls++;
	return md_ctx_new_fails ? NULL : __real_EVP_MD_CTX_new();
}

static const char GOLDEN_REC[] =
	"{\"v\":1,\"seq\":7,\"ts\":1700000000123456789,\"mono_ns\":42,"
	"\"boot\":\"01234567-89ab-cdef-0123-456789abcdef\",\"src\":{\"uid\":0,\"pid\":100},"
	"\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,"
	"\"actor\":{\"uid\":1203,\"gid\":1203,\"pid\":4412,\"comm\":\"cat\",\"role\":\"provider\","
	"\"principal\":\"u:alice\"},\"obj\":{\"patient\":\"pt:AAAA\",\"path\":\"p:BBBB\"},"
	"\"why\":{\"purpose\":\"TREAT\",\"grant\":\"g-1\",\"grant_exp\":1700003600000000000},"
	"\"detail\":\"a\\\"b\\\\c\\n\\u0001\",\"prev\":\"ERERERERERERERERERERERERERERERERERERERERERE=\"}";
static const char GOLDEN_LEAF[] = "97f7c210dc95196bbc33ba81562a13051800a90560057d40f5f37dcdb77e674e";
static const char GOLDEN_HEAD[] = "6657302873ec9502d148b66c490036888b059bae7c398e396fa5467507e9b04f";
static const char GOLDEN_VKEY[] = "phi-audit/test+086799f1+AQOhB7/zzhC+HXDdGOdLwJln5NYwm6UNXx3chmQSVTG4\n";
static const char GOLDEN_SKEY[] =
	"PRIVATE+KEY+phi-audit/test+086799f1+AQABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4f\n";
static const char GOLDEN_NOTE[] =
	"phi-audit/test\n12\nIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiIiI=\nphi-audit 1\nckpt 3\n"
	"ts 1700000001000000000\nprev MzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzMzM=\nseg 1\n"
	"kind batch\n\n\xe2\x80\x94 phi-audit/test "
	"CGeZ8esSnZFrsEYP6xzFnf3CbQwLufuJZspmrqNV0l4sGnyc1FGBkAMmH20eJoq8/mQLPOeZ7EPJA/Oz2zFGHEnmUws=\n";

static void hex(const uint8_t *p, size_t n, char *out)
{
	sodium_bin2hex(out, 2 * n + 1, p, n);
}

static void golden_record(struct phi_audit_record *r)
{
	memset(r, 0, sizeof(*r));
	r->v = 1;
	r->seq = 7;
	r->ts_ns = 1700000000123456789;
	r->mono_ns = 42;
	strcpy(r->boot, "01234567-89ab-cdef-0123-456789abcdef");
	r->src_pid = 100;
	memset(r->prev, 0x11, sizeof(r->prev));
	r->ev.event = PHI_AE_OPEN;
	r->ev.action = 'R';
	r->ev.actor.uid = r->ev.actor.gid = 1203;
	r->ev.actor.pid = 4412;
	strcpy(r->ev.actor.comm, "cat");
	strcpy(r->ev.actor.role, "provider");
	strcpy(r->ev.actor.principal, "u:alice");
	strcpy(r->ev.obj.patient, "pt:AAAA");
	strcpy(r->ev.obj.path, "p:BBBB");
	strcpy(r->ev.why.purpose, "TREAT");
	strcpy(r->ev.why.grant, "g-1");
	r->ev.why.grant_exp_ns = 1700003600000000000;
	strcpy(r->ev.detail, "a\"b\\c\n\x01");
}

static void test_record(void)
{
	static struct phi_audit_record r, p;
	struct phi_buf b _cleanup_buf_;
	uint8_t leaf[32], head[32], prev[32];
	char h[65];
	golden_record(&r);
	phi_buf_init(&b, PHI_AUDIT_RECORD_MAX);
	CHECK_OK(phi_audit_encode_record(&r, &b));
	CHECK_EQ(b.len, strlen(GOLDEN_REC));
	CHECK_MEM(b.p, GOLDEN_REC, b.len);
	phi_audit_leaf(b.p, b.len, leaf);
	hex(leaf, 32, h);
	CHECK(strcmp(h, GOLDEN_LEAF) == 0);
	memset(prev, 0x11, 32);
	phi_audit_chain(prev, 7, leaf, head);
	hex(head, 32, h);
	CHECK(strcmp(h, GOLDEN_HEAD) == 0);

	/* parse and re-encode gives the same bytes */
	CHECK_OK(phi_audit_parse_record((const uint8_t *)GOLDEN_REC, strlen(GOLDEN_REC), &p));
	CHECK_EQ(p.seq, 7);
	CHECK_EQ(p.ev.why.grant_exp_ns, 1700003600000000000);
	CHECK(strcmp(p.ev.detail, "a\"b\\c\n\x01") == 0);
	b.len = 0;
	CHECK_OK(phi_audit_encode_record(&p, &b));
	CHECK_MEM(b.p, GOLDEN_REC, b.len);

	/* the client form has no writer fields, and each parser accepts only its own form */
	b.len = 0;
	CHECK_OK(phi_audit_encode_event(&r.ev, &b));
	CHECK(memmem(b.p, b.len, "\"seq\"", 5) == NULL);
	struct phi_audit_event e;
	CHECK_OK(phi_audit_parse_event(b.p, b.len, &e));
	CHECK(strcmp(e.actor.principal, "u:alice") == 0);
	CHECK_EQ(phi_audit_parse_record(b.p, b.len, &p), -EBADMSG);
	CHECK_EQ(phi_audit_parse_event((const uint8_t *)GOLDEN_REC, strlen(GOLDEN_REC), &e), -EBADMSG);

	/* invalid events are not encoded */
	r.ev.outcome = 5;
	CHECK_EQ(phi_audit_encode_event(&r.ev, &b), -EINVAL);
	r.ev.outcome = 0;
	strcpy(r.ev.obj.patient, "p-0042"); /* a plain id is not a pseudonym */
	CHECK_EQ(phi_audit_encode_event(&r.ev, &b), -EINVAL);
}

/* The encoder's integers and string runs at their edges: a nonzero errno, the largest ids,
 * grant_exp alone in "why", bytes that stay as they are (0x7f, UTF-8) between escaped
 * ones, and a round trip through the parser. */
static void test_event_edges(void)
{
	static const char want[] =
		"{\"v\":1,\"event\":\"deny\",\"action\":\"R\",\"outcome\":4,\"errno\":13,"
		"\"actor\":{\"uid\":4294967295,\"gid\":0,\"pid\":2147483647,\"exe\":\"/usr/bin/x\"},"
		"\"why\":{\"grant_exp\":9223372036854775807},"
		"\"detail\":\"\\u001f\x7f\xc3\xa9\\\\\\\"z\\t\"}";
	struct phi_audit_event e = { .event = PHI_AE_DENY, .action = 'R', .outcome = 4, .err = 13 };
	e.actor.uid = 4294967295u;
	e.actor.pid = 2147483647;
	strcpy(e.actor.exe, "/usr/bin/x");
	e.why.grant_exp_ns = INT64_MAX;
	strcpy(e.detail, "\x1f\x7f\xc3\xa9\\\"z\t");
	struct phi_buf b _cleanup_buf_;
	phi_buf_init(&b, PHI_AUDIT_RECORD_MAX);
	CHECK_OK(phi_audit_encode_event(&e, &b));
	CHECK_EQ(b.len, strlen(want));
	CHECK_MEM(b.p, want, b.len);
	struct phi_audit_event back;
	CHECK_OK(phi_audit_parse_event(b.p, b.len, &back));
	CHECK_EQ(back.err, 13);
	CHECK_EQ(back.actor.uid, 4294967295u);
	CHECK_EQ(back.why.grant_exp_ns, INT64_MAX);
	CHECK(!strcmp(back.detail, e.detail));
}

static void test_reject(void)
{
	static const char *const bad[] = {
		"",
		"{}",
		"{\"v\":1,\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}}",
		"{\"v\":2,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}}",
		"{\"v\":1,\"event\":\"opne\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"X\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":5,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":00,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0.0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":4294967296,\"gid\":1,\"pid\":1}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}} ",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1},\"x\":1}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1},\"detail\":\"\\u0000\"}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1},\"detail\":\"\\q\"}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1},\"detail\":\"a\nb\"}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1,\"comm\":\"123456789012345678\"}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1},\"obj\":{\"patient\":\"p-0042\"}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1},\"why\":{\"grant_exp\":-1}}",
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1},\"detail\":\"x",
	};
	static const char good[] =
		"{\"v\":1,\"event\":\"open\",\"action\":\"R\",\"outcome\":0,\"errno\":0,\"actor\":{\"uid\":1,\"gid\":1,\"pid\":1}}";
	struct phi_audit_event e;
	CHECK_OK(phi_audit_parse_event((const uint8_t *)good, strlen(good), &e));
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		if (phi_audit_parse_event((const uint8_t *)bad[i], strlen(bad[i]), &e) != -EBADMSG) {
			fprintf(stderr, "accepted bad input %zu\n", i);
			CHECK(0);
		}
	}
	/* a stored record with a short prev hash */
	char rec[sizeof(GOLDEN_REC)];
	strcpy(rec, GOLDEN_REC);
	char *p = strstr(rec, "RE=\"}");
	memcpy(p, "\"}\0", 3);
	struct phi_audit_record r;
	CHECK_EQ(phi_audit_parse_record((const uint8_t *)rec, strlen(rec), &r), -EBADMSG);
}

static void test_frames(void)
{
	struct phi_buf b _cleanup_buf_;
	const uint8_t *p;
	size_t len;
	phi_buf_init(&b, 1024);
	CHECK_OK(phi_audit_frame_put(&b, "abc", 3));
	CHECK_OK(phi_audit_frame_put(&b, "de", 2));
	CHECK_EQ(b.len, 8 + 7);
	CHECK_MEM(b.p, "\0\0\0\3abc\n", 8);
	struct phi_cur c = phi_cur_init(b.p, b.len);
	CHECK_OK(phi_audit_frame_next(&c, 100, &p, &len));
	CHECK_EQ(len, 3);
	CHECK_OK(phi_audit_frame_next(&c, 100, &p, &len));
	CHECK_EQ(len, 2);
	CHECK_EQ(phi_audit_frame_next(&c, 100, &p, &len), -ENODATA);
	/* every strict prefix that cuts the second frame is torn */
	for (size_t cut = 9; cut < b.len; cut++) {
		c = phi_cur_init(b.p, cut);
		CHECK_OK(phi_audit_frame_next(&c, 100, &p, &len));
		CHECK_EQ(phi_audit_frame_next(&c, 100, &p, &len), -EBADMSG);
		CHECK_EQ(c.off, 8);
	}
	b.p[7] = 'x'; /* missing newline */
	c = phi_cur_init(b.p, b.len);
	CHECK_EQ(phi_audit_frame_next(&c, 100, &p, &len), -EBADMSG);
	c = phi_cur_init(b.p + 8, b.len - 8);
	CHECK_EQ(phi_audit_frame_next(&c, 1, &p, &len), -EBADMSG); /* over the max */

	struct phi_audit_seghdr h = { .v = 1, .seg = 3, .first_seq = 99, .created_ns = 5 }, h2;
	strcpy(h.origin, "phi-audit/test");
	memset(h.prev_head, 0xab, 32);
	b.len = 0;
	CHECK_OK(phi_audit_seghdr_encode(&h, &b));
	CHECK_OK(phi_audit_seghdr_parse(b.p, b.len, &h2));
	CHECK_EQ(h2.seg, 3);
	CHECK_EQ(h2.first_seq, 99);
	CHECK_MEM(h2.prev_head, h.prev_head, 32);
	char name[32];
	CHECK_OK(phi_audit_seg_name(3, name, sizeof(name)));
	CHECK(strcmp(name, "seg-00000003.log") == 0);
}

static void test_keys_and_notes(void)
{
	uint8_t seed[32];
	struct phi_audit_signer *s, *s2;
	struct phi_audit_vkey vk, other;
	char text[256];
	for (int i = 0; i < 32; i++)
		seed[i] = (uint8_t)i;
	CHECK_OK(phi_audit_signer_from_seed("phi-audit/test", seed, &s));
	CHECK_OK(phi_audit_vkey_format(&s->vk, text, sizeof(text)));
	CHECK(strcmp(text, GOLDEN_VKEY) == 0);
	CHECK_OK(phi_audit_vkey_parse(GOLDEN_VKEY, strlen(GOLDEN_VKEY), &vk));
	CHECK_MEM(vk.pk, s->vk.pk, 32);
	CHECK_OK(phi_audit_signer_parse((const uint8_t *)GOLDEN_SKEY, strlen(GOLDEN_SKEY), &s2));
	CHECK_MEM(s2->vk.pk, s->vk.pk, 32);
	phi_audit_signer_free(s2);
	/* a key text whose hash does not match */
	char badv[sizeof(GOLDEN_VKEY)];
	strcpy(badv, GOLDEN_VKEY);
	badv[15] = '1';
	CHECK(phi_audit_vkey_parse(badv, strlen(badv), &other) < 0);

	struct phi_audit_ckpt ck = { .size = 12, .idx = 3, .ts_ns = 1700000001000000000, .seg = 1,
				     .kind = PHI_CK_BATCH }, p;
	strcpy(ck.origin, "phi-audit/test");
	memset(ck.head, 0x22, 32);
	memset(ck.prev, 0x33, 32);
	struct phi_buf b _cleanup_buf_;
	phi_buf_init(&b, PHI_AUDIT_NOTE_MAX);
	CHECK_OK(phi_audit_ckpt_sign(&ck, s, &b));
	CHECK_EQ(b.len, strlen(GOLDEN_NOTE));
	CHECK_MEM(b.p, GOLDEN_NOTE, b.len);
	CHECK_OK(phi_audit_ckpt_verify(b.p, b.len, &vk, &p));
	CHECK_EQ(p.size, 12);
	CHECK_EQ(p.idx, 3);
	CHECK_EQ(p.kind, PHI_CK_BATCH);
	CHECK_MEM(p.head, ck.head, 32);

	/* a changed body byte: the known key's signature fails */
	uint8_t note[sizeof(GOLDEN_NOTE)];
	memcpy(note, GOLDEN_NOTE, sizeof(note));
	note[16] = '3'; /* size 12 -> 32 */
	CHECK_EQ(phi_audit_ckpt_verify(note, strlen(GOLDEN_NOTE), &vk, &p), -EKEYREJECTED);
	/* another key with the same name: no known signature */
	seed[0] = 0xff;
	CHECK_OK(phi_audit_signer_from_seed("phi-audit/test", seed, &s2));
	CHECK_EQ(phi_audit_ckpt_verify(b.p, b.len, &s2->vk, &p), -ENOKEY);
	/* an extra signature line by an unknown key is ignored */
	struct phi_buf b2 _cleanup_buf_;
	phi_buf_init(&b2, PHI_AUDIT_NOTE_MAX);
	CHECK_OK(phi_audit_ckpt_sign(&ck, s2, &b2));
	const char *sig2 = strstr((const char *)b2.p, "\n\n") + 2;
	CHECK_OK(phi_buf_append(&b, sig2, b2.len - (size_t)(sig2 - (const char *)b2.p)));
	CHECK_OK(phi_audit_ckpt_verify(b.p, b.len, &vk, &p));
	CHECK_OK(phi_audit_ckpt_parse(b.p, b.len, &p));
	/* no signature at all */
	CHECK_EQ(phi_audit_ckpt_parse((const uint8_t *)GOLDEN_NOTE, strlen(GOLDEN_NOTE) - 100, &p), -EBADMSG);
	size_t body = (size_t)(strstr(GOLDEN_NOTE, "\n\n") - GOLDEN_NOTE) + 2;
	CHECK_EQ(phi_audit_ckpt_parse((const uint8_t *)GOLDEN_NOTE, body, &p), -EBADMSG);
	/* the origin must be the key name */
	strcpy(ck.origin, "phi-audit/other");
	CHECK_EQ(phi_audit_ckpt_sign(&ck, s, &b2), -EINVAL);
	phi_audit_signer_free(s2);
	phi_audit_signer_free(s);
}

static void test_pseudonyms(void)
{
	uint8_t m[32];
	struct phi_key *master, *lk, *lk2;
	char ps[PHI_AUDIT_PSEUDO_PATIENT_MAX], ps2[PHI_AUDIT_PSEUDO_PATIENT_MAX], out[300];
	char pp[PHI_AUDIT_PSEUDO_PATH_MAX];
	memset(m, 0x42, 32);
	CHECK_OK(phi_key_from(m, 32, &master));
	CHECK_OK(phi_audit_lookup_key(master, &lk));
	CHECK_EQ(lk->len, 64);
	CHECK_OK(phi_audit_pseudonym(lk, PHI_AUDIT_PATIENT, "p-0042", ps, sizeof(ps)));
	CHECK(strncmp(ps, "pt:", 3) == 0);
	CHECK(strstr(ps, "0042") == NULL);
	CHECK_OK(phi_audit_pseudonym(lk, PHI_AUDIT_PATIENT, "p-0042", ps2, sizeof(ps2)));
	CHECK(strcmp(ps, ps2) == 0); /* deterministic: queries match without the key */
	CHECK_OK(phi_audit_resolve(lk, ps, out, sizeof(out)));
	CHECK(strcmp(out, "p-0042") == 0);
	CHECK_OK(phi_audit_pseudonym(lk, PHI_AUDIT_PATH, "visits/2026/note.txt", pp, sizeof(pp)));
	CHECK(strncmp(pp, "p:", 2) == 0);
	CHECK_OK(phi_audit_resolve(lk, pp, out, sizeof(out)));
	CHECK(strcmp(out, "visits/2026/note.txt") == 0);
	/* a patient pseudonym relabelled as a path does not decrypt (separate AD) */
	char swapped[PHI_AUDIT_PSEUDO_PATIENT_MAX];
	snprintf(swapped, sizeof(swapped), "p:%s", ps + 3);
	CHECK_EQ(phi_audit_resolve(lk, swapped, out, sizeof(out)), -EBADMSG);
	m[0] ^= 1;
	phi_key_free(master);
	CHECK_OK(phi_key_from(m, 32, &master));
	CHECK_OK(phi_audit_lookup_key(master, &lk2));
	CHECK_EQ(phi_audit_resolve(lk2, ps, out, sizeof(out)), -EBADMSG);
	CHECK_EQ(phi_audit_resolve(lk, "xx:abc", out, sizeof(out)), -EINVAL);
	CHECK_EQ(phi_audit_pseudonym(lk, PHI_AUDIT_PATIENT, "", ps, sizeof(ps)), -EINVAL);
	phi_key_free(lk2);
	phi_key_free(lk);
	phi_key_free(master);
}

/* Without an OpenSSL digest context the same leaf and head come out (libsodium's SHA-256);
 * the call count shows that both hashes asked the wrapped allocator, so the fallback ran. */
static void test_sha256_fallback(void)
{
	uint8_t leaf[32] = { 0 }, head[32] = { 0 }, prev[32];
	char h[65];
	memset(prev, 0x11, 32);
	md_ctx_new_fails = 1;
	md_ctx_new_calls = 0;
	phi_audit_leaf((const uint8_t *)GOLDEN_REC, strlen(GOLDEN_REC), leaf);
	phi_audit_chain(prev, 7, leaf, head);
	md_ctx_new_fails = 0;
	CHECK_EQ(md_ctx_new_calls, 2);
	hex(leaf, 32, h);
	CHECK(strcmp(h, GOLDEN_LEAF) == 0);
	hex(head, 32, h);
	CHECK(strcmp(h, GOLDEN_HEAD) == 0);
}

/* A buffer that runs out at any byte of the record: the encoders fail with E2BIG and leave
 * what was in the buffer before as it was (the writer's first failed append sticks);
 * with room for exactly the record, the golden bytes. */
static void test_encode_full(void)
{
	static struct phi_audit_record r;
	golden_record(&r);
	size_t n = strlen(GOLDEN_REC), n_ev;
	{
		struct phi_buf e _cleanup_buf_;
		phi_buf_init(&e, PHI_AUDIT_RECORD_MAX);
		CHECK_OK(phi_audit_encode_event(&r.ev, &e));
		n_ev = e.len;
		CHECK(n_ev < n);
	}
	for (size_t room = 0; room <= n; room++) {
		struct phi_buf b _cleanup_buf_;
		phi_buf_init(&b, 3 + room);
		CHECK_OK(phi_buf_append(&b, "pre", 3));
		int r1 = phi_audit_encode_record(&r, &b);
		if (room < n) {
			CHECK_EQ(r1, -E2BIG);
			CHECK_EQ(b.len, 3);
		} else {
			CHECK_OK(r1);
			CHECK_EQ(b.len, 3 + n);
			CHECK_MEM(b.p + 3, GOLDEN_REC, n);
			b.len = 3;
		}
		/* the client form, shorter, fits from room n_ev on */
		int r2 = phi_audit_encode_event(&r.ev, &b);
		CHECK_EQ(r2, room < n_ev ? -E2BIG : 0);
		CHECK_EQ(b.len, room < n_ev ? 3 : 3 + n_ev);
		CHECK_MEM(b.p, "pre", 3);
	}
}

int main(void)
{
	CHECK_OK(phi_crypto_init());
	test_record();
	test_sha256_fallback();
	test_encode_full();
	test_event_edges();
	test_reject();
	test_frames();
	test_keys_and_notes();
	test_pseudonyms();
	return 0;
}
