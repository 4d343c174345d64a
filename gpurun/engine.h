/* engine.h: gpurun's inference API: load a Llama GGUF, tokenize, prefill, generate with a
 * callback, free. phi_engine_free() wipes every buffer that held text or activations
 * (KV cache, activations, logits, token buffers) before releasing it. */
#ifndef PHI_ENGINE_H
#define PHI_ENGINE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "sample.h"

struct phi_engine;

struct phi_engine_opts {
	int n_threads;  /* >= 1 */
	uint32_t n_ctx; /* capped at the model's context length; 0: the model's, at most 4096 */
	bool no_gpu;    /* use the CPU even where a GPU is present */
};

enum phi_backend { PHI_BACKEND_CPU, PHI_BACKEND_CUDA };

/* On failure, *ret_err (if given) is a static message naming what was wrong. */
int phi_engine_load(const char *path, const struct phi_engine_opts *o, struct phi_engine **ret,
		    const char **ret_err);
void phi_engine_free(struct phi_engine *e);

enum phi_backend phi_engine_backend(const struct phi_engine *e);
/* Why that backend, e.g. "built without CUDA" or "no CUDA device (or no driver) found". */
const char *phi_engine_backend_note(const struct phi_engine *e);
uint32_t phi_engine_n_vocab(const struct phi_engine *e);
uint32_t phi_engine_n_ctx(const struct phi_engine *e);
uint32_t phi_engine_pos(const struct phi_engine *e);

/* Tokens of text; BOS first when the model asks for it and add_bos is set. Specials (e.g.
 * <|eot_id|>) are recognised in the text only with parse_special. */
int phi_engine_tokenize(struct phi_engine *e, const char *text, size_t len, bool add_bos,
			bool parse_special, int32_t *out, size_t max, size_t *ret_n);
/* Bytes of one token (see phi_tok_piece). */
int phi_engine_piece(struct phi_engine *e, int32_t tok, int32_t prev, char *buf, size_t len,
		     size_t *ret_n);
/* The Llama 3 instruct prompt (malloc'd) for a system (or NULL) and a user message. */
int phi_engine_chat_prompt(const char *system, const char *user, char **ret);

/* Append tokens to the sequence; the logits of the last one become available. */
int phi_engine_prefill(struct phi_engine *e, const int32_t *toks, size_t n);
const float *phi_engine_logits(const struct phi_engine *e);
/* Start a new sequence (the cache is overwritten). */
void phi_engine_reset(struct phi_engine *e);

/* Called with each generated token and its bytes; a nonzero return stops generation. */
typedef int (*phi_token_cb)(void *ud, int32_t tok, const char *piece, size_t len);

/* Sample up to max_tokens after the prefilled sequence, stopping at an end-of-generation
 * token (EOS, EOT, EOM; for SentencePiece models also BOS, which starts a new document) or
 * at the end of the context. *ret_n: tokens generated (the end token not counted). */
int phi_engine_generate(struct phi_engine *e, const struct phi_sample_opts *s, size_t max_tokens,
			phi_token_cb cb, void *ud, size_t *ret_n);

#endif
