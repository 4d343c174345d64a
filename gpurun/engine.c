/* engine.c: ties the GGUF file, the model, one sequence context and the tokenizer. */
#include "engine.h"

#include "gguf.h"
#include "model.h"
#include "tokenizer.h"
#include "util.h"

#define FAIL(code, msg)                  \
	do {                             \
		if (ret_err)             \
			*ret_err = (msg); \
		return (code);           \
	} while (0)

struct phi_engine {
	struct phi_model *m;
	struct phi_ctx *c;
	struct phi_tok *t;
	enum phi_backend backend;
	int32_t last; /* the last token forwarded, -1 at the start */
};

void phi_engine_free(struct phi_engine *e)
{
	if (!e)
		return;
	phi_ctx_free(e->c);
	phi_tok_free(e->t);
	phi_model_free(e->m);
	explicit_bzero(e, sizeof(*e));
	free(e);
}

static void engine_freep(struct phi_engine **e)
{
	phi_engine_free(*e);
	*e = NULL;
}

int phi_engine_load(const char *path, const struct phi_engine_opts *o, struct phi_engine **ret,
		    const char **ret_err)
{
	struct phi_gguf *g;
	int r = phi_gguf_open(path, &g, ret_err);
	if (r < 0)
		return r;
	_cleanup_(engine_freep) struct phi_engine *e = calloc(1, sizeof(*e));
	if (!e) {
		phi_gguf_free(g);
		return -ENOMEM;
	}
	e->last = -1;
	r = phi_model_load(g, &e->m, ret_err);
	if (r < 0) {
		phi_gguf_free(g);
		return r;
	}
	r = phi_tok_load(g, &e->t, ret_err);
	if (r < 0)
		return r;
	if (phi_tok_n_vocab(e->t) != e->m->hp.n_vocab)
		FAIL(-EINVAL, "engine: the vocabulary and token_embd.weight differ in size");
	r = phi_ctx_new(e->m, o->n_ctx, o->n_threads, &e->c);
	if (r < 0)
		FAIL(r, "engine: cannot allocate the context (KV cache)");
	e->backend = PHI_BACKEND_CPU;
	*ret = TAKE_PTR(e);
	return 0;
}

enum phi_backend phi_engine_backend(const struct phi_engine *e) { return e->backend; }
uint32_t phi_engine_n_vocab(const struct phi_engine *e) { return e->m->hp.n_vocab; }
uint32_t phi_engine_n_ctx(const struct phi_engine *e) { return phi_ctx_n_ctx(e->c); }
uint32_t phi_engine_pos(const struct phi_engine *e) { return phi_ctx_pos(e->c); }

int phi_engine_tokenize(struct phi_engine *e, const char *text, size_t len, bool add_bos,
			bool parse_special, int32_t *out, size_t max, size_t *ret_n)
{
	return phi_tok_encode(e->t, text, len, add_bos && phi_tok_add_bos(e->t), parse_special, out,
			      max, ret_n);
}

int phi_engine_piece(struct phi_engine *e, int32_t tok, int32_t prev, char *buf, size_t len,
		     size_t *ret_n)
{
	bool strip = phi_tok_kind(e->t) == PHI_TOK_SPM && (prev < 0 || prev == phi_tok_bos(e->t));
	return phi_tok_piece(e->t, tok, false, strip, buf, len, ret_n);
}

int phi_engine_chat_prompt(const char *system, const char *user, char **ret)
{
	return phi_tok_chat_llama3(system, user, ret);
}

int phi_engine_prefill(struct phi_engine *e, const int32_t *toks, size_t n)
{
	int r = phi_ctx_forward(e->c, toks, n);
	if (r < 0)
		return r;
	e->last = toks[n - 1];
	return 0;
}

const float *phi_engine_logits(const struct phi_engine *e)
{
	return phi_ctx_logits(e->c);
}

void phi_engine_reset(struct phi_engine *e)
{
	phi_ctx_reset(e->c);
	e->last = -1;
}

int phi_engine_generate(struct phi_engine *e, const struct phi_sample_opts *so, size_t max_tokens,
			phi_token_cb cb, void *ud, size_t *ret_n)
{
	struct phi_sampler *s;
	size_t n = 0;
	char piece[4096];
	if (e->last < 0)
		return -EINVAL; /* nothing prefilled: no logits to sample from */
	int r = phi_sampler_new(e->m->hp.n_vocab, so, &s);
	if (r < 0)
		return r;
	while (n < max_tokens) {
		int32_t tok = phi_sample(s, phi_ctx_logits(e->c));
		if (phi_tok_is_eog(e->t, tok) ||
		    (phi_tok_kind(e->t) == PHI_TOK_SPM && tok == phi_tok_bos(e->t)))
			break;
		size_t pl;
		r = phi_engine_piece(e, tok, e->last, piece, sizeof piece, &pl);
		if (r < 0)
			break;
		n++;
		if (cb && cb(ud, tok, piece, pl))
			break;
		if (phi_ctx_pos(e->c) >= phi_ctx_n_ctx(e->c))
			break;
		r = phi_engine_prefill(e, &tok, 1);
		if (r < 0)
			break;
	}
	explicit_bzero(piece, sizeof piece);
	phi_sampler_free(s);
	if (r < 0)
		return r;
	*ret_n = n;
	return 0;
}
