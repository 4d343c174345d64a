/* test-api: the engine API on stories260K (load, tokenize, prefill, generate, limits,
 * free) and the sampler on fixed logits. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "gpurun/engine.h"
#include "test.h"

struct gen {
	char text[4096];
	size_t len;
	int calls, stop_after;
};

static int on_token(void *ud, int32_t tok, const char *p, size_t n)
{
	struct gen *g = ud;
	(void)tok;
	CHECK(g->len + n < sizeof g->text);
	memcpy(g->text + g->len, p, n);
	g->len += n;
	g->text[g->len] = 0;
	return ++g->calls == g->stop_after;
}

static void sampler(void)
{
	float lg[8] = { 0.5f, 2.0f, -1.0f, 1.9f, 0.0f, 2.0f, -3.0f, 1.0f };
	struct phi_sampler *s;
	/* greedy: the first of equal maxima */
	struct phi_sample_opts o = { .temperature = 0, .top_p = 1 };
	CHECK_OK(phi_sampler_new(8, &o, &s));
	CHECK_EQ(phi_sample(s, lg), 1);
	phi_sampler_free(s);
	/* top-k 1 and a tiny top-p are greedy too */
	o = (struct phi_sample_opts){ .temperature = 1, .top_k = 1, .top_p = 1, .seed = 3 };
	CHECK_OK(phi_sampler_new(8, &o, &s));
	for (int i = 0; i < 50; i++)
		CHECK_EQ(phi_sample(s, lg), 1);
	phi_sampler_free(s);
	o = (struct phi_sample_opts){ .temperature = 1, .top_p = 1e-6f, .seed = 3 };
	CHECK_OK(phi_sampler_new(8, &o, &s));
	for (int i = 0; i < 50; i++)
		CHECK_EQ(phi_sample(s, lg), 1);
	phi_sampler_free(s);
	/* top-k 3 only draws from {1, 5, 3}; frequencies follow the softmax; seeds repeat */
	o = (struct phi_sample_opts){ .temperature = 1, .top_k = 3, .top_p = 1, .seed = 42 };
	int cnt[8] = { 0 }, seq[100];
	CHECK_OK(phi_sampler_new(8, &o, &s));
	for (int i = 0; i < 20000; i++) {
		int32_t t = phi_sample(s, lg);
		CHECK(t == 1 || t == 3 || t == 5);
		cnt[t]++;
		if (i < 100)
			seq[i] = t;
	}
	phi_sampler_free(s);
	double z = 2 * exp(2.0) + exp(1.9);
	CHECK(fabs(cnt[3] / 20000.0 - exp(1.9) / z) < 0.02);
	CHECK(fabs(cnt[1] / 20000.0 - exp(2.0) / z) < 0.02);
	CHECK_OK(phi_sampler_new(8, &o, &s));
	for (int i = 0; i < 100; i++)
		CHECK_EQ(phi_sample(s, lg), seq[i]);
	phi_sampler_free(s);
	o.top_p = 0;
	CHECK_EQ(phi_sampler_new(8, &o, &s), -EINVAL);
}

int main(int argc, char **argv)
{
	char p[4200];
	if (argc < 2)
		return 2;
	sampler();
	snprintf(p, sizeof p, "%s/stories260K-f32.gguf", argv[1]);
	if (access(p, R_OK) < 0)
		return 77;
	struct phi_engine *e;
	const char *err = NULL;
	struct phi_engine_opts eo = { .n_threads = 2, .n_ctx = 64, .no_gpu = true };
	CHECK_OK(phi_engine_load(p, &eo, &e, &err));
	CHECK_EQ(phi_engine_backend(e), PHI_BACKEND_CPU);
	CHECK_EQ(phi_engine_n_ctx(e), 64);
	CHECK_EQ(phi_engine_n_vocab(e), 512);

	int32_t ids[80];
	size_t n;
	const char *prompt = "Once upon a time";
	CHECK_OK(phi_engine_tokenize(e, prompt, strlen(prompt), true, false, ids, 80, &n));
	int32_t want[] = { 1, 403, 407, 261, 378 };
	CHECK_EQ(n, 5);
	CHECK_MEM(ids, want, sizeof want);
	CHECK_EQ(phi_engine_tokenize(e, prompt, strlen(prompt), true, false, ids, 3, &n), -E2BIG);
	CHECK_OK(phi_engine_tokenize(e, prompt, strlen(prompt), false, false, ids, 80, &n));
	CHECK_EQ(n, 4);

	/* nothing prefilled: nothing to sample from */
	struct phi_sample_opts so = { .temperature = 0, .top_p = 1 };
	struct gen g = { .stop_after = -1 };
	CHECK_EQ(phi_engine_generate(e, &so, 10, on_token, &g, &n), -EINVAL);

	CHECK_OK(phi_engine_prefill(e, want, 5));
	CHECK_EQ(phi_engine_pos(e), 5);
	/* greedy, a token limit */
	CHECK_OK(phi_engine_generate(e, &so, 12, on_token, &g, &n));
	CHECK_EQ(n, 12);
	CHECK_EQ(g.calls, 12);
	CHECK(strncmp(g.text, ", there was a little girl named Lily.", 37) == 0);
	/* the callback stops it */
	phi_engine_reset(e);
	CHECK_OK(phi_engine_prefill(e, want, 5));
	struct gen g2 = { .stop_after = 3 };
	CHECK_OK(phi_engine_generate(e, &so, 100, on_token, &g2, &n));
	CHECK_EQ(n, 3);
	CHECK(strncmp(g.text, g2.text, g2.len) == 0);
	/* the context ends generation; prefill past it is refused */
	phi_engine_reset(e);
	CHECK_OK(phi_engine_prefill(e, want, 5));
	struct gen g3 = { .stop_after = -1 };
	CHECK_OK(phi_engine_generate(e, &so, 1000, on_token, &g3, &n));
	CHECK(n <= 60);
	CHECK(phi_engine_pos(e) <= 64);
	phi_engine_reset(e);
	int32_t many[65];
	for (int i = 0; i < 65; i++)
		many[i] = 300 + i % 100;
	CHECK_EQ(phi_engine_prefill(e, many, 65), -ENOSPC);
	int32_t bad = 512;
	CHECK_EQ(phi_engine_prefill(e, &bad, 1), -EINVAL);
	phi_engine_free(e);

	CHECK(phi_engine_load("/nonexistent.gguf", &eo, &e, &err) == -ENOENT && err);
	printf("ok\n");
	return 0;
}
