/* quant.c: CPU kernels for the tensor formats. The loops are written so that gcc vectorizes
 * them (fixed-width inner loops, independent partial sums); on x86-64 the hot functions are
 * also cloned for AVX2/FMA/F16C and picked at load time by the dynamic linker. */
#include "quant.h"

#include <math.h>
#include <string.h>

#include "gguf.h"

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(__SANITIZE_ADDRESS__)
#define HOT __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define HOT
#endif

float phi_fp16_to_f32(uint16_t h)
{
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, u;
	if (exp == 0x1f) {
		u = sign | 0x7f800000 | (man << 13);
	} else if (exp) {
		u = sign | ((exp + 112) << 23) | (man << 13);
	} else if (man) { /* subnormal: value = man * 2^-24 */
		float f = (float)man * 0x1p-24f;
		memcpy(&u, &f, 4);
		u |= sign;
	} else {
		u = sign;
	}
	float f;
	memcpy(&f, &u, 4);
	return f;
}

/* round to nearest even, as ggml's reference (and numpy) do */
uint16_t phi_f32_to_fp16(float f)
{
	uint32_t x;
	memcpy(&x, &f, 4);
	uint32_t sign = (x >> 16) & 0x8000;
	uint32_t ax = x & 0x7fffffff;
	if (ax >= 0x7f800000)
		return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000 ? 0x200 : 0));
	if (ax >= 0x477ff000) /* rounds to >= 65520: infinity */
		return (uint16_t)(sign | 0x7c00);
	if (ax < 0x38800000) { /* subnormal or zero in half */
		float a;
		memcpy(&a, &ax, 4);
		float q = nearbyintf(a * 0x1p24f); /* default rounding mode: ties to even */
		return (uint16_t)(sign | (uint32_t)q);
	}
	uint32_t r = ax + 0xfff + ((ax >> 13) & 1);
	return (uint16_t)(sign | ((r - 0x38000000) >> 13));
}

/* In the kernels: a hardware conversion where the clone has F16C. */
static inline float f16(uint16_t h)
{
#ifdef __FLT16_MAX__
	_Float16 x;
	memcpy(&x, &h, 2);
	return (float)x;
#else
	return phi_fp16_to_f32(h);
#endif
}

static inline float bf16_to_f32(uint16_t h)
{
	uint32_t u = (uint32_t)h << 16;
	float f;
	memcpy(&f, &u, 4);
	return f;
}

enum phi_act_kind phi_act_kind(uint32_t wtype)
{
	switch (wtype) {
	case PHI_T_Q8_0: return PHI_ACT_Q8_0;
	case PHI_T_Q4_K:
	case PHI_T_Q6_K: return PHI_ACT_Q8_K;
	default: return PHI_ACT_F32;
	}
}

size_t phi_act_bytes(enum phi_act_kind k, size_t n)
{
	switch (k) {
	case PHI_ACT_Q8_0: return (n + 31) / 32 * sizeof(struct phi_aq8_0);
	case PHI_ACT_Q8_K: return (n + 255) / 256 * sizeof(struct phi_aq8_k);
	default: return n * sizeof(float);
	}
}

static inline int8_t round_i8(float v)
{
	return (int8_t)lrintf(v); /* |v| <= 127 */
}

HOT void phi_act_prepare(enum phi_act_kind k, const float *x, void *out, size_t n)
{
	if (k == PHI_ACT_F32) {
		memcpy(out, x, n * sizeof(float));
		return;
	}
	if (k == PHI_ACT_Q8_0) {
		struct phi_aq8_0 *b = out;
		for (size_t i = 0; i < n / 32; i++, x += 32) {
			float amax = 0;
			for (int j = 0; j < 32; j++)
				amax = fmaxf(amax, fabsf(x[j]));
			float d = amax / 127, id = d ? 1 / d : 0;
			b[i].d = d;
			for (int j = 0; j < 32; j++)
				b[i].qs[j] = round_i8(x[j] * id);
		}
		return;
	}
	struct phi_aq8_k *b = out;
	for (size_t i = 0; i < n / 256; i++, x += 256) {
		float amax = 0;
		for (int j = 0; j < 256; j++)
			amax = fmaxf(amax, fabsf(x[j]));
		float d = amax / 127, id = d ? 1 / d : 0;
		b[i].d = d;
		for (int j = 0; j < 256; j++)
			b[i].qs[j] = round_i8(x[j] * id);
		for (int g = 0; g < 16; g++) {
			int s = 0;
			for (int j = 0; j < 16; j++)
				s += b[i].qs[16 * g + j];
			b[i].bsums[g] = (int16_t)s;
		}
	}
}

static inline void q4k_scale_min(const uint8_t *s, int j, int *sc, int *m)
{
	if (j < 4) {
		*sc = s[j] & 63;
		*m = s[j + 4] & 63;
	} else {
		*sc = (s[j + 4] & 0xF) | ((s[j - 4] >> 6) << 4);
		*m = (s[j + 4] >> 4) | ((s[j] >> 6) << 4);
	}
}

/* 16 partial sums so that the float loops vectorize without reassociation */
#define FSUM(expr)                                                \
	float acc[16] = { 0 };                                    \
	size_t i = 0;                                             \
	for (; i + 16 <= n; i += 16)                              \
		for (int j = 0; j < 16; j++)                      \
			acc[j] += (expr(i + j)) * x[i + j];       \
	float s = 0;                                              \
	for (; i < n; i++)                                        \
		s += (expr(i)) * x[i];                            \
	for (int j = 0; j < 16; j++)                              \
		s += acc[j];                                      \
	return s

HOT static float dot_f32(const float *w, const float *x, size_t n)
{
#define E(k) w[k]
	FSUM(E);
#undef E
}

HOT static float dot_f16(const uint16_t *w, const float *x, size_t n)
{
#ifdef __FLT16_MAX__
	const _Float16 *h = (const _Float16 *)w;
#define E(k) (float)h[k]
#else
#define E(k) phi_fp16_to_f32(w[k])
#endif
	FSUM(E);
#undef E
}

HOT static float dot_bf16(const uint16_t *w, const float *x, size_t n)
{
#define E(k) bf16_to_f32(w[k])
	FSUM(E);
#undef E
}

HOT static float dot_q8_0(const struct phi_bq8_0 *w, const struct phi_aq8_0 *a, size_t n)
{
	float s = 0;
	for (size_t b = 0; b < n / 32; b++) {
		int si = 0;
		for (int j = 0; j < 32; j++)
			si += w[b].qs[j] * a[b].qs[j];
		s += f16(w[b].d) * a[b].d * (float)si;
	}
	return s;
}

HOT static float dot_q4_k(const struct phi_bq4_k *w, const struct phi_aq8_k *a, size_t n)
{
	float s = 0;
	for (size_t b = 0; b < n / 256; b++) {
		const uint8_t *q = w[b].qs;
		const int8_t *y = a[b].qs;
		/* per-lane sums scaled by the sub-block scale: one horizontal sum per block */
		int32_t acc[16] = { 0 };
		int summ = 0;
		for (int c = 0; c < 4; c++, q += 32, y += 64) {
			int sc0, m0, sc1, m1;
			q4k_scale_min(w[b].scales, 2 * c, &sc0, &m0);
			q4k_scale_min(w[b].scales, 2 * c + 1, &sc1, &m1);
			for (int h = 0; h < 32; h += 16)
				for (int j = 0; j < 16; j++)
					acc[j] += sc0 * ((q[h + j] & 0xF) * y[h + j]) +
						  sc1 * ((q[h + j] >> 4) * y[h + j + 32]);
			summ += m0 * (a[b].bsums[4 * c] + a[b].bsums[4 * c + 1]) +
				m1 * (a[b].bsums[4 * c + 2] + a[b].bsums[4 * c + 3]);
		}
		int sumi = 0;
		for (int j = 0; j < 16; j++)
			sumi += acc[j];
		s += a[b].d * (f16(w[b].d) * (float)sumi - f16(w[b].dmin) * (float)summ);
	}
	return s;
}

HOT static float dot_q6_k(const struct phi_bq6_k *w, const struct phi_aq8_k *a, size_t n)
{
	float s = 0;
	for (size_t b = 0; b < n / 256; b++) {
		int8_t q[256];
		for (int h = 0; h < 2; h++) {
			const uint8_t *ql = w[b].ql + 64 * h, *qh = w[b].qh + 32 * h;
			int8_t *o = q + 128 * h;
			for (int l = 0; l < 32; l++) {
				o[l] = (int8_t)(((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
				o[l + 32] = (int8_t)(((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
				o[l + 64] = (int8_t)(((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
				o[l + 96] = (int8_t)(((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
			}
		}
		int32_t acc[16] = { 0 };
		for (int g = 0; g < 16; g++)
			for (int l = 0; l < 16; l++)
				acc[l] += w[b].scales[g] * (q[16 * g + l] * a[b].qs[16 * g + l]);
		int sumi = 0;
		for (int l = 0; l < 16; l++)
			sumi += acc[l];
		s += f16(w[b].d) * a[b].d * (float)sumi;
	}
	return s;
}

float phi_vec_dot(uint32_t wtype, const void *row, const void *act, size_t n)
{
	switch (wtype) {
	case PHI_T_F32: return dot_f32(row, act, n);
	case PHI_T_F16: return dot_f16(row, act, n);
	case PHI_T_BF16: return dot_bf16(row, act, n);
	case PHI_T_Q8_0: return dot_q8_0(row, act, n);
	case PHI_T_Q4_K: return dot_q4_k(row, act, n);
	case PHI_T_Q6_K: return dot_q6_k(row, act, n);
	default: return 0;
	}
}

void phi_dequant(uint32_t wtype, const void *src, float *dst, size_t n)
{
	switch (wtype) {
	case PHI_T_F32:
		memcpy(dst, src, n * 4);
		break;
	case PHI_T_F16: {
		const uint16_t *h = src;
		for (size_t i = 0; i < n; i++)
			dst[i] = phi_fp16_to_f32(h[i]);
		break;
	}
	case PHI_T_BF16: {
		const uint16_t *h = src;
		for (size_t i = 0; i < n; i++)
			dst[i] = bf16_to_f32(h[i]);
		break;
	}
	case PHI_T_Q8_0: {
		const struct phi_bq8_0 *b = src;
		for (size_t i = 0; i < n / 32; i++) {
			float d = phi_fp16_to_f32(b[i].d);
			for (int j = 0; j < 32; j++)
				dst[32 * i + j] = d * b[i].qs[j];
		}
		break;
	}
	case PHI_T_Q4_K: {
		const struct phi_bq4_k *b = src;
		for (size_t i = 0; i < n / 256; i++, dst += 256) {
			float d = phi_fp16_to_f32(b[i].d), dmin = phi_fp16_to_f32(b[i].dmin);
			for (int c = 0; c < 4; c++) {
				int sc0, m0, sc1, m1;
				const uint8_t *q = b[i].qs + 32 * c;
				q4k_scale_min(b[i].scales, 2 * c, &sc0, &m0);
				q4k_scale_min(b[i].scales, 2 * c + 1, &sc1, &m1);
				for (int l = 0; l < 32; l++) {
					dst[64 * c + l] = d * sc0 * (q[l] & 0xF) - dmin * m0;
					dst[64 * c + 32 + l] = d * sc1 * (q[l] >> 4) - dmin * m1;
				}
			}
		}
		break;
	}
	case PHI_T_Q6_K: {
		const struct phi_bq6_k *b = src;
		for (size_t i = 0; i < n / 256; i++, dst += 256) {
			float d = phi_fp16_to_f32(b[i].d);
			for (int h = 0; h < 2; h++) {
				const uint8_t *ql = b[i].ql + 64 * h, *qh = b[i].qh + 32 * h;
				const int8_t *sc = b[i].scales + 8 * h;
				float *y = dst + 128 * h;
				for (int l = 0; l < 32; l++) {
					int is = l / 16;
					y[l] = d * sc[is] * (((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32);
					y[l + 32] = d * sc[is + 2] * (((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32);
					y[l + 64] = d * sc[is + 4] * (((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32);
					y[l + 96] = d * sc[is + 6] * (((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32);
				}
			}
		}
		break;
	}
	}
}
