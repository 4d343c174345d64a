/* cuda.h: the CUDA backend (cuda.cu, built only when meson finds a working nvcc).
 * Weights are uploaded once; the KV cache and activations live on the device. Prefill
 * multiplies with cuBLAS (weights expanded to f32 one matrix at a time); decode uses own
 * matvec kernels that read the quantized weights directly. */
#ifndef PHI_CUDA_H
#define PHI_CUDA_H

#include <stddef.h>
#include <stdint.h>

#include "model.h"

#ifdef __cplusplus
extern "C" {
#endif

struct phi_cuda;

/* 0 if a CUDA device can be used; otherwise -ENODEV and a static reason. */
int phi_cuda_probe(const char **ret_why);
int phi_cuda_new(const struct phi_model *m, uint32_t n_ctx, struct phi_cuda **ret);
/* Forward n tokens at positions pos..pos+n-1; the last token's logits go to logits. */
int phi_cuda_forward(struct phi_cuda *c, const int32_t *toks, size_t n, uint32_t pos, float *logits);
/* Zeroes the device KV cache and activations, then frees everything. */
void phi_cuda_free(struct phi_cuda *c);

#ifdef __cplusplus
}
#endif

#endif
