/* tokenizer.h: tokenizers from GGUF metadata.
 *   - "llama": SentencePiece-style, merges the adjacent pair of highest score, byte fallback;
 *   - "gpt2":  byte-level BPE with the Llama 3 pre-tokenizer (split by hand, no regex
 *              library), merges of lowest rank, ignore_merges.
 * Special tokens (control and user-defined) are matched by their exact text when asked. */
#ifndef PHI_TOKENIZER_H
#define PHI_TOKENIZER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"

struct phi_tok;

enum phi_tok_kind { PHI_TOK_SPM, PHI_TOK_BPE };

int phi_tok_load(const struct phi_gguf *g, struct phi_tok **ret, const char **ret_err);
void phi_tok_free(struct phi_tok *t);

enum phi_tok_kind phi_tok_kind(const struct phi_tok *t);
uint32_t phi_tok_n_vocab(const struct phi_tok *t);
int32_t phi_tok_bos(const struct phi_tok *t);   /* -1 if none */
int32_t phi_tok_eos(const struct phi_tok *t);   /* -1 if none */
bool phi_tok_add_bos(const struct phi_tok *t);  /* tokenizer.ggml.add_bos_token */
/* end of generation: eos, eot, eom and the usual end-of-turn texts */
bool phi_tok_is_eog(const struct phi_tok *t, int32_t id);

/* Encode text[0..len). -E2BIG if more than max tokens; *ret_n tokens written to out. */
int phi_tok_encode(const struct phi_tok *t, const char *text, size_t len, bool add_bos,
		   bool parse_special, int32_t *out, size_t max, size_t *ret_n);

/* The bytes of token id (byte tokens become their byte; control tokens are empty unless
 * special). With strip_space, a leading space is dropped (the first piece after BOS in SPM).
 * -ENOBUFS if buf is too small, -EINVAL for a bad id. */
int phi_tok_piece(const struct phi_tok *t, int32_t id, bool special, bool strip_space, char *buf,
		  size_t len, size_t *ret_n);

/* The Llama 3 instruct prompt for one system and one user message (system may be NULL),
 * ending with the assistant header. Returns malloc'd text. */
int phi_tok_chat_llama3(const char *system, const char *user, char **ret);

#endif
