/* model.h: the Llama architecture over a parsed GGUF, and its CPU forward pass.
 *
 * phi_model_load() reads the llama.* hyperparameters and checks every tensor's type and
 * shape against them. A struct phi_ctx holds the KV cache and activations of one
 * sequence; phi_ctx_forward() appends a batch of tokens and computes the logits of the
 * last one. Results do not depend on the thread count. */
#ifndef PHI_MODEL_H
#define PHI_MODEL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "pool.h"

struct phi_hparams {
	uint32_t n_vocab, n_embd, n_layer, n_ff, n_head, n_head_kv, head_dim, n_rot, n_ctx_train;
	float eps, rope_base, rope_scale; /* rope_scale: linear scaling, 1/factor */
};

struct phi_layer {
	const struct phi_gguf_tensor *wq, *wk, *wv, *wo, *w_gate, *w_up, *w_down;
	float *attn_norm, *ffn_norm;
};

struct phi_model {
	struct phi_gguf *g;
	struct phi_hparams hp;
	const struct phi_gguf_tensor *tok_embd, *output; /* output == tok_embd when tied */
	float *output_norm;
	double *rope_inv_freq; /* n_rot/2 angles per position, rope_freqs and scaling applied */
	struct phi_layer *layers;
};

int phi_model_load(struct phi_gguf *g, struct phi_model **ret, const char **ret_err);
/* Frees the model and the GGUF it owns. */
void phi_model_free(struct phi_model *m);

struct phi_ctx;

int phi_ctx_new(const struct phi_model *m, uint32_t n_ctx, int n_threads, struct phi_ctx **ret);
/* Wipes the KV cache and every activation buffer, then frees. */
void phi_ctx_free(struct phi_ctx *c);
uint32_t phi_ctx_pos(const struct phi_ctx *c);
uint32_t phi_ctx_n_ctx(const struct phi_ctx *c);
/* Forget the sequence (the cache is overwritten from position 0). */
void phi_ctx_reset(struct phi_ctx *c);
/* Append n tokens; -ENOSPC past the context, -EINVAL for a bad token id. */
int phi_ctx_forward(struct phi_ctx *c, const int32_t *toks, size_t n);
/* Logits of the last token forwarded (n_vocab floats). */
const float *phi_ctx_logits(const struct phi_ctx *c);

#endif
