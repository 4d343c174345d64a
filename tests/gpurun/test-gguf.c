/* test-gguf: golden values of the stories260K files, and hostile variants of them. */
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <string.h>

#include "gpurun/gguf.h"
#include "test.h"

static char dir[4096];

static struct phi_gguf *open_model(const char *name)
{
	char p[4200];
	struct phi_gguf *g = NULL;
	const char *err = NULL;
	snprintf(p, sizeof p, "%s/%s", dir, name);
	int r = phi_gguf_open(p, &g, &err);
	if (r < 0)
		fprintf(stderr, "%s: %s\n", p, err);
	CHECK_OK(r);
	return g;
}

static void check_u64(const struct phi_gguf *g, const char *key, uint64_t want)
{
	uint64_t v = 0;
	CHECK_OK(phi_gguf_get_u64(g, key, &v));
	CHECK_EQ(v, want);
}

static void golden(const char *name, uint32_t wtype, uint32_t down_type)
{
	struct phi_gguf *g = open_model(name);
	struct phi_gguf_str s;
	float f;
	CHECK_EQ(g->version, 3);
	CHECK_EQ(g->n_tensors, 48);
	CHECK_EQ(g->alignment, 32);
	CHECK_OK(phi_gguf_get_str(g, "general.architecture", &s));
	CHECK(phi_gguf_str_eq(s, "llama"));
	check_u64(g, "llama.embedding_length", 64);
	check_u64(g, "llama.block_count", 5);
	check_u64(g, "llama.attention.head_count", 8);
	check_u64(g, "llama.attention.head_count_kv", 4);
	check_u64(g, "llama.feed_forward_length", 172);
	check_u64(g, "llama.context_length", 512);
	check_u64(g, "llama.rope.dimension_count", 8);
	CHECK_EQ(phi_gguf_get_f32(g, "llama.rope.freq_base", &f), -ENOENT);
	CHECK_OK(phi_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &f));
	CHECK(f == 1e-5f);
	CHECK_OK(phi_gguf_get_str(g, "tokenizer.ggml.model", &s));
	CHECK(phi_gguf_str_eq(s, "llama"));
	struct phi_gguf_str *toks;
	uint64_t n;
	CHECK_OK(phi_gguf_get_strs(g, "tokenizer.ggml.tokens", &toks, &n));
	CHECK_EQ(n, 512);
	CHECK(phi_gguf_str_eq(toks[0], "<unk>") && phi_gguf_str_eq(toks[1], "<s>"));
	CHECK(phi_gguf_str_eq(toks[3], "<0x00>") && phi_gguf_str_eq(toks[258], "<0xFF>"));
	free(toks);
	check_u64(g, "tokenizer.ggml.seperator_token_id", 0xFFFFFFFFu);
	CHECK_EQ(phi_gguf_get_u64(g, "tokenizer.ggml.model", &n), -EINVAL);

	const struct phi_gguf_tensor *t = phi_gguf_tensor(g, "token_embd.weight");
	CHECK(t && t->n_dims == 2 && t->ne[0] == 64 && t->ne[1] == 512 && t->type == wtype);
	t = phi_gguf_tensor(g, "blk.4.ffn_down.weight");
	CHECK(t && t->ne[0] == 172 && t->ne[1] == 64 && t->type == down_type);
	t = phi_gguf_tensor(g, "blk.2.attn_k.weight");
	CHECK(t && t->ne[0] == 64 && t->ne[1] == 32 && t->type == wtype);
	t = phi_gguf_tensor(g, "output_norm.weight");
	CHECK(t && t->n_dims == 1 && t->ne[0] == 64 && t->type == PHI_T_F32);
	CHECK(!phi_gguf_tensor(g, "blk.5.attn_q.weight"));
	if (wtype == PHI_T_F32) {
		CHECK_EQ(g->data_off, 14176);
		t = phi_gguf_tensor(g, "token_embd.weight");
		CHECK_EQ((const uint8_t *)t->data - g->base, 14176 + t->offset);
	}
	phi_gguf_free(g);
}

static int parse(const uint8_t *b, size_t n)
{
	struct phi_gguf *g = NULL;
	const char *err = NULL;
	int r = phi_gguf_parse(b, n, &g, &err);
	if (r == 0) {
		phi_gguf_free(g);
		return 0;
	}
	CHECK(err != NULL && strncmp(err, "gguf: ", 6) == 0);
	CHECK(r == -EBADMSG || r == -EINVAL);
	return r;
}

static void put64(uint8_t *p, uint64_t v)
{
	memcpy(p, &v, 8);
}

static void hostile(void)
{
	char p[4200];
	snprintf(p, sizeof p, "%s/stories260K-q8_0.gguf", dir);
	FILE *f = fopen(p, "rbe");
	CHECK(f);
	static uint8_t buf[400000], m[400000];
	size_t n = fread(buf, 1, sizeof buf, f);
	fclose(f);
	CHECK_EQ(parse(buf, n), 0);
	/* every truncation inside the metadata, and a spread over the data */
	struct phi_gguf *g;
	CHECK_OK(phi_gguf_parse(buf, n, &g, NULL));
	size_t ds = g->data_off;
	for (size_t k = 0; k < ds; k++)
		CHECK(parse(buf, k) < 0);
	for (size_t k = ds; k < n; k += 997)
		CHECK_EQ(parse(buf, k), -EBADMSG);
	/* huge kv and tensor counts */
	memcpy(m, buf, n);
	put64(m + 8, UINT64_MAX);
	CHECK_EQ(parse(m, n), -EBADMSG);
	memcpy(m, buf, n);
	put64(m + 16, 1ULL << 62);
	CHECK_EQ(parse(m, n), -EBADMSG);
	/* the first key's length */
	memcpy(m, buf, n);
	put64(m + 24, 1ULL << 63);
	CHECK_EQ(parse(m, n), -EBADMSG);
	/* bad magic, version 1, big-endian */
	memcpy(m, buf, n);
	m[0] = 'X';
	CHECK_EQ(parse(m, n), -EBADMSG);
	memcpy(m, buf, n);
	m[4] = 1;
	CHECK_EQ(parse(m, n), -EINVAL);
	memcpy(m, buf, n);
	m[4] = 0;
	m[7] = 3;
	CHECK_EQ(parse(m, n), -EINVAL);
	/* per tensor: bad offset, wrong type, too many dims, huge dim */
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct phi_gguf_tensor *t = &g->tensors[i];
		size_t info = (size_t)((const uint8_t *)t->name.p - buf) + t->name.len;
		size_t toff = info + 4 + 8 * t->n_dims; /* type, then offset */
		memcpy(m, buf, n);
		put64(m + toff + 4, t->offset + 32 * 1000000);
		CHECK_EQ(parse(m, n), -EBADMSG);
		memcpy(m, buf, n);
		put64(m + toff + 4, t->offset + 1);
		CHECK_EQ(parse(m, n), -EBADMSG);
		memcpy(m, buf, n);
		put64(m + toff + 4, UINT64_MAX - 31);
		CHECK_EQ(parse(m, n), -EBADMSG);
		memcpy(m, buf, n);
		m[toff] = 2; /* Q4_0: unsupported */
		CHECK_EQ(parse(m, n), -EINVAL);
		memcpy(m, buf, n);
		m[toff] = 200;
		CHECK_EQ(parse(m, n), -EINVAL);
		memcpy(m, buf, n);
		m[info] = 5;
		CHECK_EQ(parse(m, n), -EBADMSG);
		memcpy(m, buf, n);
		put64(m + info + 4, 1ULL << 40);
		CHECK_EQ(parse(m, n), -EBADMSG);
	}
	/* a metadata value type out of range, and a string array count past the end */
	for (uint64_t i = 0; i < g->n_kv; i++) {
		const struct phi_gguf_kv *kv = &g->kv[i];
		size_t tpos = (size_t)((const uint8_t *)kv->key.p - buf) + kv->key.len;
		memcpy(m, buf, n);
		m[tpos] = 13;
		CHECK_EQ(parse(m, n), -EBADMSG);
		if (kv->type == PHI_GV_ARRAY) {
			memcpy(m, buf, n);
			put64(m + tpos + 8, kv->arr_n + (1ULL << 50));
			CHECK_EQ(parse(m, n), -EBADMSG);
			memcpy(m, buf, n);
			put64(m + tpos + 8, kv->arr_n + 1);
			CHECK(parse(m, n) < 0);
		}
	}
	phi_gguf_free(g);
	/* not a regular file / missing */
	const char *err = NULL;
	CHECK(phi_gguf_open("/", &g, &err) < 0 && err);
	CHECK(phi_gguf_open("/nonexistent/x.gguf", &g, &err) == -ENOENT);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		return 2;
	snprintf(dir, sizeof dir, "%s", argv[1]);
	char p[4200];
	snprintf(p, sizeof p, "%s/stories260K-f32.gguf", dir);
	if (access(p, R_OK) < 0) {
		fprintf(stderr, "no model at %s: skip\n", p);
		return 77;
	}
	golden("stories260K-f32.gguf", PHI_T_F32, PHI_T_F32);
	golden("stories260K-f16.gguf", PHI_T_F16, PHI_T_F16);
	golden("stories260K-q8_0.gguf", PHI_T_Q8_0, PHI_T_F16);
	hostile();
	printf("ok\n");
	return 0;
}
