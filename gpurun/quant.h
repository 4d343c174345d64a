/* quant.h: tensor element formats (F32, F16, BF16, Q8_0, Q4_K, Q6_K) on the CPU:
 * conversion, dequantization, activation quantization and dot products.
 *
 * Like llama.cpp, quantized weights are never expanded for a matrix-vector product: the
 * activation vector is rounded to 8-bit blocks (Q8_0 for Q8_0 weights, Q8_K for the
 * K-quants) and the dot product is taken in integers, one f32 scale per block. */
#ifndef PHI_QUANT_H
#define PHI_QUANT_H

#include <stddef.h>
#include <stdint.h>

#define PHI_QK8_0 32
#define PHI_QK_K 256

struct phi_bq8_0 { uint16_t d; int8_t qs[32]; };
struct phi_bq4_k { uint16_t d, dmin; uint8_t scales[12]; uint8_t qs[128]; };
struct phi_bq6_k { uint8_t ql[128]; uint8_t qh[64]; int8_t scales[16]; uint16_t d; };

/* activation blocks (in memory only) */
struct phi_aq8_0 { float d; int8_t qs[32]; };
struct phi_aq8_k { float d; int16_t bsums[16]; int8_t qs[256]; };

/* How an activation must be prepared for a weight type. */
enum phi_act_kind { PHI_ACT_F32, PHI_ACT_Q8_0, PHI_ACT_Q8_K };

float phi_fp16_to_f32(uint16_t h);
uint16_t phi_f32_to_fp16(float f);

enum phi_act_kind phi_act_kind(uint32_t wtype);
/* Bytes of a prepared activation of n values (n a multiple of the weight's block). */
size_t phi_act_bytes(enum phi_act_kind k, size_t n);
void phi_act_prepare(enum phi_act_kind k, const float *x, void *out, size_t n);

/* dot(row of n weights of type wtype, prepared activation) */
float phi_vec_dot(uint32_t wtype, const void *row, const void *act, size_t n);

/* Expand n weights (n a multiple of the block size) to f32. */
void phi_dequant(uint32_t wtype, const void *src, float *dst, size_t n);

#endif
