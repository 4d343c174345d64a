/* cuda.cu: the CUDA backend. Same architecture and weight formats as model.c:
 * weights are uploaded once in their file format; decode reads them directly in a matvec
 * kernel (one warp per row); prefill expands one matrix at a time to f32 and multiplies
 * with cuBLAS. Norms, RoPE, attention over the device KV cache and SwiGLU are own kernels. */
#include <cublas_v2.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "cuda.h"

#define BATCH 32

#define CK(x)                                 \
	do {                                  \
		if ((x) != cudaSuccess)       \
			return -EIO;          \
	} while (0)
#define CB(x)                                         \
	do {                                          \
		if ((x) != CUBLAS_STATUS_SUCCESS)     \
			return -EIO;                  \
	} while (0)

struct dmat {
	int type, rows, cols;
	size_t row_bytes;
	const uint8_t *p;
};

struct dlayer {
	dmat wq, wk, wv, wo, wg, wu, wd;
	float *an, *fn;
};

struct phi_cuda {
	phi_hparams hp;
	uint32_t n_ctx;
	dmat emb, out;
	bool tied;
	float *onorm;
	double *inv;
	dlayer *L;
	float *x, *xb, *q, *k, *v, *ao, *hb, *hb2, *att, *kc, *vc, *logits, *scratch;
	size_t n_x, n_q, n_kv, n_ff, n_att, n_cache, n_scratch;
	int32_t *toks;
	cublasHandle_t blas;
	bool has_blas;
};

__device__ __forceinline__ float h2f(const uint8_t *b)
{
	return __half2float(__ushort_as_half((unsigned short)(b[0] | (b[1] << 8))));
}

/* element i of a row stored in a ggml type (layouts as in quant.c) */
__device__ float wval(int type, const uint8_t *row, int i)
{
	switch (type) {
	case 0: return ((const float *)row)[i];
	case 1: return h2f(row + 2 * i);
	case 30: return __uint_as_float((uint32_t)(row[2 * i] | (row[2 * i + 1] << 8)) << 16);
	case 8: {
		const uint8_t *b = row + (i / 32) * 34;
		return h2f(b) * (float)(int8_t)b[2 + i % 32];
	}
	case 12: {
		const uint8_t *b = row + (i / 256) * 144, *s = b + 4;
		int j = i % 256, c = j / 64, l = j % 32, hi = (j % 64) >= 32, sub = 2 * c + hi, sc, m;
		if (sub < 4) {
			sc = s[sub] & 63;
			m = s[sub + 4] & 63;
		} else {
			sc = (s[sub + 4] & 0xF) | ((s[sub - 4] >> 6) << 4);
			m = (s[sub + 4] >> 4) | ((s[sub] >> 6) << 4);
		}
		int q = b[16 + 32 * c + l];
		q = hi ? q >> 4 : q & 15;
		return h2f(b) * sc * q - h2f(b + 2) * m;
	}
	case 14: {
		const uint8_t *b = row + (i / 256) * 210;
		int j = i % 256, h = j / 128, r = j % 128, l = r % 32, qu = r / 32;
		const uint8_t *ql = b + 64 * h, *qh = b + 128 + 32 * h;
		const int8_t *sc = (const int8_t *)(b + 192) + 8 * h;
		int lo = (qu & 1) ? ql[l + 32] : ql[l];
		lo = (qu & 2) ? lo >> 4 : lo & 15;
		int q = lo | (((qh[l] >> (2 * qu)) & 3) << 4);
		return h2f(b + 208) * sc[l / 16 + 2 * qu] * (q - 32);
	}
	}
	return 0;
}

__device__ float block_sum(float v, float *red)
{
	for (int o = 16; o > 0; o /= 2)
		v += __shfl_xor_sync(0xffffffff, v, o);
	__syncthreads();
	if (threadIdx.x % 32 == 0)
		red[threadIdx.x / 32] = v;
	__syncthreads();
	float s = 0;
	for (int i = 0; i < (int)(blockDim.x + 31) / 32; i++)
		s += red[i];
	return s;
}

__device__ float block_max(float v, float *red)
{
	for (int o = 16; o > 0; o /= 2)
		v = fmaxf(v, __shfl_xor_sync(0xffffffff, v, o));
	__syncthreads();
	if (threadIdx.x % 32 == 0)
		red[threadIdx.x / 32] = v;
	__syncthreads();
	float s = -INFINITY;
	for (int i = 0; i < (int)(blockDim.x + 31) / 32; i++)
		s = fmaxf(s, red[i]);
	return s;
}

__global__ void k_embed(dmat e, const int32_t *toks, float *x)
{
	int t = blockIdx.x;
	const uint8_t *row = e.p + (size_t)toks[t] * e.row_bytes;
	for (int i = threadIdx.x; i < e.cols; i += blockDim.x)
		x[(size_t)t * e.cols + i] = wval(e.type, row, i);
}

__global__ void k_matvec(dmat w, const float *x, float *y)
{
	int row = (int)((blockIdx.x * (size_t)blockDim.x + threadIdx.x) / 32), lane = threadIdx.x % 32;
	if (row >= w.rows)
		return;
	const uint8_t *r = w.p + (size_t)row * w.row_bytes;
	float s = 0;
	for (int i = lane; i < w.cols; i += 32)
		s += wval(w.type, r, i) * x[i];
	for (int o = 16; o > 0; o /= 2)
		s += __shfl_xor_sync(0xffffffff, s, o);
	if (lane == 0)
		y[row] = s;
}

__global__ void k_dequant(dmat w, float *out)
{
	size_t n = (size_t)w.rows * w.cols;
	for (size_t idx = blockIdx.x * (size_t)blockDim.x + threadIdx.x; idx < n;
	     idx += (size_t)gridDim.x * blockDim.x)
		out[idx] = wval(w.type, w.p + (idx / w.cols) * w.row_bytes, (int)(idx % w.cols));
}

__global__ void k_rmsnorm(const float *x, const float *w, float *o, int d, float eps)
{
	__shared__ float red[32];
	const float *xr = x + (size_t)blockIdx.x * d;
	float s = 0;
	for (int i = threadIdx.x; i < d; i += blockDim.x)
		s += xr[i] * xr[i];
	s = block_sum(s, red);
	float sc = rsqrtf(s / d + eps);
	for (int i = threadIdx.x; i < d; i += blockDim.x)
		o[(size_t)blockIdx.x * d + i] = xr[i] * sc * w[i];
}

/* one thread per (token, head, pair) */
__global__ void k_rope(float *v, int n_tok, int heads, int hd, int n_rot, const double *inv, int pos0)
{
	int idx = blockIdx.x * blockDim.x + threadIdx.x, half = n_rot / 2;
	if (idx >= n_tok * heads * half)
		return;
	int i = idx % half, h = (idx / half) % heads, t = idx / (half * heads);
	double th = (double)(pos0 + t) * inv[i];
	float c = (float)cos(th), s = (float)sin(th);
	float *p = v + ((size_t)t * heads + h) * hd + 2 * i;
	float a = p[0], b = p[1];
	p[0] = a * c - b * s;
	p[1] = a * s + b * c;
}

/* one block per (token, head) */
__global__ void k_attn(const float *q, const float *kc, const float *vc, float *att, float *out,
		       int n_head, int n_kv, int hd, int n_ctx, int pos0)
{
	__shared__ float red[32];
	int t = blockIdx.x / n_head, h = blockIdx.x % n_head, kh = h / (n_head / n_kv), kvd = n_kv * hd;
	int n = pos0 + t + 1;
	const float *qv = q + ((size_t)t * n_head + h) * hd;
	float *a = att + (size_t)blockIdx.x * n_ctx, scale = rsqrtf((float)hd), mx = -INFINITY;
	for (int p = threadIdx.x; p < n; p += blockDim.x) {
		const float *kv = kc + (size_t)p * kvd + kh * hd;
		float s = 0;
		for (int i = 0; i < hd; i++)
			s += qv[i] * kv[i];
		a[p] = s * scale;
		mx = fmaxf(mx, a[p]);
	}
	mx = block_max(mx, red);
	float sum = 0;
	for (int p = threadIdx.x; p < n; p += blockDim.x) {
		a[p] = expf(a[p] - mx);
		sum += a[p];
	}
	sum = block_sum(sum, red);
	__syncthreads();
	for (int i = threadIdx.x; i < hd; i += blockDim.x) {
		float o = 0;
		for (int p = 0; p < n; p++)
			o += a[p] * vc[(size_t)p * kvd + kh * hd + i];
		out[((size_t)t * n_head + h) * hd + i] = o / sum;
	}
}

__global__ void k_swiglu(float *g, const float *u, size_t n)
{
	size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	if (i < n)
		g[i] = g[i] / (1.0f + expf(-g[i])) * u[i];
}

__global__ void k_add(float *x, const float *y, size_t n)
{
	size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x;
	if (i < n)
		x[i] += y[i];
}

static unsigned blocks(size_t n, unsigned per)
{
	return (unsigned)((n + per - 1) / per);
}

extern "C" int phi_cuda_probe(const char **ret_why)
{
	int n = 0;
	if (cudaGetDeviceCount(&n) != cudaSuccess || n < 1) {
		(void)cudaGetLastError();
		if (ret_why)
			*ret_why = "no CUDA device (or no driver) found";
		return -ENODEV;
	}
	return 0;
}

static int upload(const struct phi_gguf_tensor *t, dmat *d)
{
	void *p;
	CK(cudaMalloc(&p, t->size));
	CK(cudaMemcpy(p, t->data, t->size, cudaMemcpyHostToDevice));
	d->type = (int)t->type;
	d->cols = (int)t->ne[0];
	d->rows = (int)t->ne[1];
	d->row_bytes = t->size / t->ne[1];
	d->p = (const uint8_t *)p;
	return 0;
}

static int upload_vec(const float *v, size_t n, float **ret)
{
	CK(cudaMalloc((void **)ret, n * sizeof(float)));
	CK(cudaMemcpy(*ret, v, n * sizeof(float), cudaMemcpyHostToDevice));
	return 0;
}

static void mat_max(const dmat *m, size_t *mx)
{
	size_t n = (size_t)m->rows * m->cols;
	if (n > *mx)
		*mx = n;
}

static int cuda_init(struct phi_cuda *c, const phi_model *m, uint32_t n_ctx)
{
	const phi_hparams *hp = &m->hp;
	size_t hd = hp->head_dim;
	CB(cublasCreate(&c->blas));
	c->has_blas = true;
	if (upload(m->tok_embd, &c->emb) < 0)
		return -EIO;
	if (m->output == m->tok_embd) {
		c->out = c->emb;
		c->tied = true;
	} else if (upload(m->output, &c->out) < 0) {
		return -EIO;
	}
	if (upload_vec(m->output_norm, hp->n_embd, &c->onorm) < 0)
		return -EIO;
	CK(cudaMalloc((void **)&c->inv, (hp->n_rot / 2 + 1) * sizeof(double)));
	CK(cudaMemcpy(c->inv, m->rope_inv_freq, hp->n_rot / 2 * sizeof(double), cudaMemcpyHostToDevice));
	size_t mx = 0;
	mat_max(&c->out, &mx);
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		const phi_layer *s = &m->layers[l];
		dlayer *d = &c->L[l];
		if (upload(s->wq, &d->wq) < 0 || upload(s->wk, &d->wk) < 0 || upload(s->wv, &d->wv) < 0 ||
		    upload(s->wo, &d->wo) < 0 || upload(s->w_gate, &d->wg) < 0 ||
		    upload(s->w_up, &d->wu) < 0 || upload(s->w_down, &d->wd) < 0 ||
		    upload_vec(s->attn_norm, hp->n_embd, &d->an) < 0 ||
		    upload_vec(s->ffn_norm, hp->n_embd, &d->fn) < 0)
			return -EIO;
		const dmat *all[] = { &d->wq, &d->wk, &d->wv, &d->wo, &d->wg, &d->wu, &d->wd };
		for (int i = 0; i < 7; i++)
			mat_max(all[i], &mx);
	}
	c->n_x = (size_t)BATCH * hp->n_embd;
	c->n_q = (size_t)BATCH * hp->n_head * hd;
	c->n_kv = (size_t)BATCH * hp->n_head_kv * hd;
	c->n_ff = (size_t)BATCH * hp->n_ff;
	c->n_att = (size_t)BATCH * hp->n_head * n_ctx;
	c->n_cache = (size_t)hp->n_layer * n_ctx * hp->n_head_kv * hd;
	c->n_scratch = mx;
	struct {
		float **p;
		size_t n;
	} b[] = { { &c->x, c->n_x }, { &c->xb, c->n_x }, { &c->q, c->n_q }, { &c->k, c->n_kv },
		  { &c->v, c->n_kv }, { &c->ao, c->n_q }, { &c->hb, c->n_ff }, { &c->hb2, c->n_ff },
		  { &c->att, c->n_att }, { &c->kc, c->n_cache }, { &c->vc, c->n_cache },
		  { &c->logits, hp->n_vocab }, { &c->scratch, c->n_scratch } };
	for (size_t i = 0; i < sizeof b / sizeof b[0]; i++) {
		CK(cudaMalloc((void **)b[i].p, b[i].n * sizeof(float)));
		CK(cudaMemset(*b[i].p, 0, b[i].n * sizeof(float)));
	}
	CK(cudaMalloc((void **)&c->toks, BATCH * sizeof(int32_t)));
	return 0;
}

extern "C" int phi_cuda_new(const phi_model *m, uint32_t n_ctx, struct phi_cuda **ret)
{
	struct phi_cuda *c = (struct phi_cuda *)calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->hp = m->hp;
	c->n_ctx = n_ctx;
	c->L = (dlayer *)calloc(m->hp.n_layer, sizeof(dlayer));
	int r = c->L ? cuda_init(c, m, n_ctx) : -ENOMEM;
	if (r < 0) {
		phi_cuda_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

/* y[n][rows] = x[n][cols] · Wᵀ */
static int matmul(struct phi_cuda *c, const dmat *w, const float *x, int n, float *y)
{
	if (n == 1) {
		k_matvec<<<blocks((size_t)w->rows * 32, 256), 256>>>(*w, x, y);
		CK(cudaGetLastError());
		return 0;
	}
	k_dequant<<<4096, 256>>>(*w, c->scratch);
	CK(cudaGetLastError());
	const float one = 1, zero = 0;
	CB(cublasSgemm(c->blas, CUBLAS_OP_T, CUBLAS_OP_N, w->rows, n, w->cols, &one, c->scratch,
		       w->cols, x, w->cols, &zero, y, w->rows));
	return 0;
}

static int forward_batch(struct phi_cuda *c, const int32_t *toks, int n, uint32_t pos, float *logits)
{
	const phi_hparams *hp = &c->hp;
	int d = (int)hp->n_embd, hd = (int)hp->head_dim, kvd = (int)(hp->n_head_kv * hd);
	CK(cudaMemcpy(c->toks, toks, (size_t)n * sizeof(int32_t), cudaMemcpyHostToDevice));
	k_embed<<<n, 256>>>(c->emb, c->toks, c->x);
	CK(cudaGetLastError());
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		dlayer *L = &c->L[l];
		float *kc = c->kc + (size_t)l * c->n_ctx * kvd, *vc = c->vc + (size_t)l * c->n_ctx * kvd;
		k_rmsnorm<<<n, 256>>>(c->x, L->an, c->xb, d, hp->eps);
		if (matmul(c, &L->wq, c->xb, n, c->q) < 0 || matmul(c, &L->wk, c->xb, n, c->k) < 0 ||
		    matmul(c, &L->wv, c->xb, n, c->v) < 0)
			return -EIO;
		int rq = n * (int)hp->n_head * (int)hp->n_rot / 2, rk = n * (int)hp->n_head_kv * (int)hp->n_rot / 2;
		k_rope<<<blocks(rq, 256), 256>>>(c->q, n, hp->n_head, hd, hp->n_rot, c->inv, (int)pos);
		k_rope<<<blocks(rk, 256), 256>>>(c->k, n, hp->n_head_kv, hd, hp->n_rot, c->inv, (int)pos);
		CK(cudaMemcpyAsync(kc + (size_t)pos * kvd, c->k, (size_t)n * kvd * sizeof(float),
				   cudaMemcpyDeviceToDevice));
		CK(cudaMemcpyAsync(vc + (size_t)pos * kvd, c->v, (size_t)n * kvd * sizeof(float),
				   cudaMemcpyDeviceToDevice));
		k_attn<<<n * hp->n_head, 128>>>(c->q, kc, vc, c->att, c->ao, hp->n_head, hp->n_head_kv, hd,
						c->n_ctx, (int)pos);
		if (matmul(c, &L->wo, c->ao, n, c->xb) < 0)
			return -EIO;
		k_add<<<blocks((size_t)n * d, 256), 256>>>(c->x, c->xb, (size_t)n * d);
		k_rmsnorm<<<n, 256>>>(c->x, L->fn, c->xb, d, hp->eps);
		if (matmul(c, &L->wg, c->xb, n, c->hb) < 0 || matmul(c, &L->wu, c->xb, n, c->hb2) < 0)
			return -EIO;
		size_t nf = (size_t)n * hp->n_ff;
		k_swiglu<<<blocks(nf, 256), 256>>>(c->hb, c->hb2, nf);
		if (matmul(c, &L->wd, c->hb, n, c->xb) < 0)
			return -EIO;
		k_add<<<blocks((size_t)n * d, 256), 256>>>(c->x, c->xb, (size_t)n * d);
		CK(cudaGetLastError());
	}
	k_rmsnorm<<<1, 256>>>(c->x + (size_t)(n - 1) * d, c->onorm, c->xb, d, hp->eps);
	if (matmul(c, &c->out, c->xb, 1, c->logits) < 0)
		return -EIO;
	CK(cudaMemcpy(logits, c->logits, hp->n_vocab * sizeof(float), cudaMemcpyDeviceToHost));
	return 0;
}

extern "C" int phi_cuda_forward(struct phi_cuda *c, const int32_t *toks, size_t n, uint32_t pos,
				float *logits)
{
	if (n == 0 || pos + n > c->n_ctx)
		return -EINVAL;
	for (size_t i = 0; i < n; i += BATCH) {
		int k = (int)(n - i < BATCH ? n - i : BATCH);
		int r = forward_batch(c, toks + i, k, pos + (uint32_t)i, logits);
		if (r < 0)
			return r;
	}
	return 0;
}

static void dfree(const void *p, size_t n)
{
	if (!p)
		return;
	if (n)
		(void)cudaMemset((void *)p, 0, n * sizeof(float));
	(void)cudaFree((void *)p);
}

extern "C" void phi_cuda_free(struct phi_cuda *c)
{
	if (!c)
		return;
	float *b[] = { c->x, c->xb, c->q, c->k, c->v, c->ao, c->hb, c->hb2, c->att, c->kc, c->vc,
		       c->logits, c->scratch };
	size_t n[] = { c->n_x, c->n_x, c->n_q, c->n_kv, c->n_kv, c->n_q, c->n_ff, c->n_ff, c->n_att,
		       c->n_cache, c->n_cache, c->hp.n_vocab, c->n_scratch };
	for (size_t i = 0; i < sizeof b / sizeof b[0]; i++)
		dfree(b[i], n[i]);
	dfree(c->toks, BATCH);
	if (c->L) {
		for (uint32_t l = 0; l < c->hp.n_layer; l++) {
			dlayer *d = &c->L[l];
			const void *w[] = { d->wq.p, d->wk.p, d->wv.p, d->wo.p, d->wg.p, d->wu.p, d->wd.p,
					    d->an, d->fn };
			for (int i = 0; i < 9; i++)
				dfree(w[i], 0);
		}
		free(c->L);
	}
	dfree(c->emb.p, 0);
	if (!c->tied)
		dfree(c->out.p, 0);
	dfree(c->onorm, 0);
	dfree(c->inv, 0);
	if (c->has_blas)
		cublasDestroy(c->blas);
	free(c);
}
