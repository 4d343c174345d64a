/* engine.c: ties the GGUF file, the model, one sequence context and the tokenizer. */
#include "engine.h"

#ifdef PHI_HAVE_CUDA
#include "cuda.h"
#endif

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
	const char *note; /* why this backend (static) */
	int32_t last;     /* the last token forwarded, -1 at the start */
#ifdef PHI_HAVE_CUDA
	struct phi_cuda *cuda;
	float *logits; /* host copy of the device logits */
	uint32_t pos, n_ctx;
#endif
};

void phi_engine_free(struct phi_engine *e)
{
	if (!e)
		return;
	phi_ctx_free(e->c);
#ifdef PHI_HAVE_CUDA
	phi_cuda_free(e->cuda);
	if (e->logits)
		explicit_bzero(e->logits, e->m->hp.n_vocab * sizeof(float));
	free(e->logits);
#endif
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
	e->backend = PHI_BACKEND_CPU;
#ifdef PHI_HAVE_CUDA
	e->note = "CUDA backend not used (--no-gpu)";
	if (!o->no_gpu && phi_cuda_probe(&e->note) == 0) {
		uint32_t tr = e->m->hp.n_ctx_train;
		uint32_t n_ctx = o->n_ctx ? (o->n_ctx < tr ? o->n_ctx : tr) : (tr < 4096 ? tr : 4096);
		e->logits = calloc(e->m->hp.n_vocab, sizeof(float));
		if (!e->logits)
			return -ENOMEM;
		if (phi_cuda_new(e->m, n_ctx, &e->cuda) == 0) {
			e->backend = PHI_BACKEND_CUDA;
			e->n_ctx = n_ctx;
			e->note = "CUDA device found";
			*ret = TAKE_PTR(e);
			return 0;
		}
		e->note = "CUDA setup failed (device memory?)";
	}
#else
	e->note = "built without CUDA";
#endif
	r = phi_ctx_new(e->m, o->n_ctx, o->n_threads, &e->c);
	if (r < 0)
		FAIL(r, "engine: cannot allocate the context (KV cache)");
	*ret = TAKE_PTR(e);
	return 0;
}

enum phi_backend phi_engine_backend(const struct phi_engine *e) { return e->backend; }
const char *phi_engine_backend_note(const struct phi_engine *e) { return e->note; }
uint32_t phi_engine_n_vocab(const struct phi_engine *e) { return e->m->hp.n_vocab; }

uint32_t phi_engine_n_ctx(const struct phi_engine *e)
{
#ifdef PHI_HAVE_CUDA
	if (e->cuda)
		return e->n_ctx;
#endif
	return phi_ctx_n_ctx(e->c);
}

uint32_t phi_engine_pos(const struct phi_engine *e)
{
#ifdef PHI_HAVE_CUDA
	if (e->cuda)
		return e->pos;
#endif
	return phi_ctx_pos(e->c);
}

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
	int r;
#ifdef PHI_HAVE_CUDA
	if (e->cuda) {
		if (n == 0)
			return -EINVAL;
		if (n > e->n_ctx - e->pos)
			return -ENOSPC;
		for (size_t i = 0; i < n; i++)
			if (toks[i] < 0 || (uint32_t)toks[i] >= e->m->hp.n_vocab)
				return -EINVAL;
		r = phi_cuda_forward(e->cuda, toks, n, e->pos, e->logits);
		if (r < 0)
			return r;
		e->pos += (uint32_t)n;
		e->last = toks[n - 1];
		return 0;
	}
#endif
	r = phi_ctx_forward(e->c, toks, n);
	if (r < 0)
		return r;
	e->last = toks[n - 1];
	return 0;
}

const float *phi_engine_logits(const struct phi_engine *e)
{
#ifdef PHI_HAVE_CUDA
	if (e->cuda)
		return e->logits;
#endif
	return phi_ctx_logits(e->c);
}

void phi_engine_reset(struct phi_engine *e)
{
#ifdef PHI_HAVE_CUDA
	e->pos = 0;
	if (e->cuda) {
		e->last = -1;
		return;
	}
#endif
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
		int32_t tok = phi_sample(s, phi_engine_logits(e));
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
		if (phi_engine_pos(e) >= phi_engine_n_ctx(e))
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
