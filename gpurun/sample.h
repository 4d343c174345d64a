/* sample.h: next-token choice from logits: greedy, or temperature with top-k and top-p,
 * from a seeded generator (the same seed and logits give the same tokens). */
#ifndef PHI_SAMPLE_H
#define PHI_SAMPLE_H

#include <stddef.h>
#include <stdint.h>

struct phi_sample_opts {
	float temperature; /* <= 0: greedy */
	uint32_t top_k;    /* 0: all */
	float top_p;       /* >= 1: off */
	uint64_t seed;
};

struct phi_sampler;

int phi_sampler_new(uint32_t n_vocab, const struct phi_sample_opts *o, struct phi_sampler **ret);
void phi_sampler_free(struct phi_sampler *s);
int32_t phi_sample(struct phi_sampler *s, const float *logits);

#endif
