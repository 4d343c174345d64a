/* model.c: Llama hyperparameters and tensors from GGUF; the CPU forward pass.
 *
 * Per layer: x += Wo·Attn(RoPE(Wq·rms(x)), RoPE(Wk·rms(x)), Wv·rms(x));
 *            x += Wdown·(silu(Wgate·rms(x)) ⊙ Wup·rms(x)).
 * A batch of tokens goes through each weight matrix row by row, all tokens per row, so a
 * row is read from memory once per batch. */
#include "model.h"

#include <math.h>
#include <string.h>

#include "quant.h"
#include "util.h"

#define FAIL(code, msg)                  \
	do {                             \
		if (ret_err)             \
			*ret_err = (msg); \
		return (code);           \
	} while (0)

#define BATCH 32

static void free_layers(struct phi_model *m)
{
	if (!m->layers)
		return;
	for (uint32_t i = 0; i < m->hp.n_layer; i++) {
		free(m->layers[i].attn_norm);
		free(m->layers[i].ffn_norm);
	}
	free(m->layers);
}

void phi_model_free(struct phi_model *m)
{
	if (!m)
		return;
	free_layers(m);
	free(m->output_norm);
	free(m->rope_inv_freq);
	phi_gguf_free(m->g);
	free(m);
}

static int get_u32(const struct phi_gguf *g, const char *key, uint32_t def, uint32_t *ret)
{
	uint64_t v;
	int r = phi_gguf_get_u64(g, key, &v);
	if (r == -ENOENT && def != UINT32_MAX) {
		*ret = def;
		return 0;
	}
	if (r < 0)
		return r;
	if (v == 0 || v > (1u << 24))
		return -EINVAL;
	*ret = (uint32_t)v;
	return 0;
}

/* A matrix of n_out rows of n_in values. */
static const struct phi_gguf_tensor *mat(const struct phi_gguf *g, const char *name, uint64_t n_in,
					 uint64_t n_out)
{
	const struct phi_gguf_tensor *t = phi_gguf_tensor(g, name);
	if (!t || t->n_dims != 2 || t->ne[0] != n_in || t->ne[1] != n_out)
		return NULL;
	return t;
}

/* A 1-D vector of n values, expanded to f32. */
static float *vec(const struct phi_gguf *g, const char *name, uint64_t n)
{
	const struct phi_gguf_tensor *t = phi_gguf_tensor(g, name);
	if (!t || t->n_dims != 1 || t->ne[0] != n)
		return NULL;
	float *v = malloc(n * sizeof(float));
	if (v)
		phi_dequant(t->type, t->data, v, n);
	return v;
}

int phi_model_load(struct phi_gguf *g, struct phi_model **ret, const char **ret_err)
{
	struct phi_gguf_str s;
	struct phi_hparams hp = { 0 };
	uint64_t u;

	if (phi_gguf_get_str(g, "general.architecture", &s) < 0 || !phi_gguf_str_eq(s, "llama"))
		FAIL(-EINVAL, "model: general.architecture is not llama");
	if (phi_gguf_get_u64(g, "llama.expert_count", &u) == 0 && u > 0)
		FAIL(-EINVAL, "model: mixture-of-experts models are not supported");
	if (get_u32(g, "llama.embedding_length", UINT32_MAX, &hp.n_embd) < 0 ||
	    get_u32(g, "llama.block_count", UINT32_MAX, &hp.n_layer) < 0 ||
	    get_u32(g, "llama.feed_forward_length", UINT32_MAX, &hp.n_ff) < 0 ||
	    get_u32(g, "llama.attention.head_count", UINT32_MAX, &hp.n_head) < 0 ||
	    get_u32(g, "llama.context_length", UINT32_MAX, &hp.n_ctx_train) < 0)
		FAIL(-EINVAL, "model: a required llama.* hyperparameter is missing or out of range");
	if (hp.n_layer > 4096 || hp.n_head > 4096 || hp.n_embd % hp.n_head)
		FAIL(-EINVAL, "model: layer or head count out of range");
	uint32_t vlen;
	if (get_u32(g, "llama.attention.head_count_kv", hp.n_head, &hp.n_head_kv) < 0 ||
	    get_u32(g, "llama.attention.key_length", hp.n_embd / hp.n_head, &hp.head_dim) < 0 ||
	    get_u32(g, "llama.attention.value_length", hp.head_dim, &vlen) < 0 ||
	    get_u32(g, "llama.rope.dimension_count", hp.head_dim, &hp.n_rot) < 0)
		FAIL(-EINVAL, "model: a llama.attention or llama.rope key is out of range");
	if (hp.n_head % hp.n_head_kv || vlen != hp.head_dim || hp.n_rot > hp.head_dim ||
	    hp.n_rot % 2 || hp.head_dim > 1024)
		FAIL(-EINVAL, "model: unsupported head layout (GQA ratio, head or rope dims)");
	if (phi_gguf_get_f32(g, "llama.attention.layer_norm_rms_epsilon", &hp.eps) < 0 ||
	    !(hp.eps > 0 && hp.eps < 1))
		FAIL(-EINVAL, "model: llama.attention.layer_norm_rms_epsilon missing or out of range");
	hp.rope_base = 10000.0f;
	int r = phi_gguf_get_f32(g, "llama.rope.freq_base", &hp.rope_base);
	if ((r < 0 && r != -ENOENT) || !(hp.rope_base > 1))
		FAIL(-EINVAL, "model: llama.rope.freq_base out of range");
	hp.rope_scale = 1.0f;
	if (phi_gguf_get_str(g, "llama.rope.scaling.type", &s) == 0 && !phi_gguf_str_eq(s, "none")) {
		float f;
		if (!phi_gguf_str_eq(s, "linear"))
			FAIL(-EINVAL, "model: only linear rope scaling is supported");
		if (phi_gguf_get_f32(g, "llama.rope.scaling.factor", &f) < 0 || !(f >= 1 && f <= 1024))
			FAIL(-EINVAL, "model: llama.rope.scaling.factor missing or out of range");
		hp.rope_scale = 1.0f / f;
	}

	_cleanup_free_ struct phi_model *m = calloc(1, sizeof(*m));
	if (!m)
		return -ENOMEM;
	m->tok_embd = phi_gguf_tensor(g, "token_embd.weight");
	if (!m->tok_embd || m->tok_embd->n_dims != 2 || m->tok_embd->ne[0] != hp.n_embd ||
	    m->tok_embd->ne[1] > (1u << 24))
		FAIL(-EINVAL, "model: token_embd.weight missing or of the wrong shape");
	hp.n_vocab = (uint32_t)m->tok_embd->ne[1];
	if (phi_gguf_get_u64(g, "llama.vocab_size", &u) == 0 && u != hp.n_vocab)
		FAIL(-EINVAL, "model: llama.vocab_size disagrees with token_embd.weight");
	m->output = phi_gguf_tensor(g, "output.weight") ? mat(g, "output.weight", hp.n_embd, hp.n_vocab)
							 : m->tok_embd;
	if (!m->output)
		FAIL(-EINVAL, "model: output.weight of the wrong shape");
	m->hp = hp;
	m->layers = calloc(hp.n_layer, sizeof(*m->layers));
	m->output_norm = vec(g, "output_norm.weight", hp.n_embd);
	m->rope_inv_freq = calloc(hp.n_rot / 2 + 1, sizeof(double));
	if (!m->layers || !m->output_norm || !m->rope_inv_freq) {
		free_layers(m);
		free(m->output_norm);
		free(m->rope_inv_freq);
		FAIL(-EINVAL, "model: output_norm.weight missing or out of memory");
	}
	/* NORM rope on adjacent pairs; rope_freqs (Llama 3.1 scaling) divides pair i's angle */
	const struct phi_gguf_tensor *rf = phi_gguf_tensor(g, "rope_freqs.weight");
	_cleanup_free_ float *rff = NULL;
	bool bad = rf && (rf->n_dims != 1 || rf->ne[0] < hp.n_rot / 2 ||
			  !(rff = vec(g, "rope_freqs.weight", rf->ne[0])));
	for (uint32_t i = 0; i < hp.n_rot / 2 && !bad; i++) {
		m->rope_inv_freq[i] = pow(hp.rope_base, -2.0 * i / hp.n_rot) * hp.rope_scale;
		if (rff) {
			bad = !(rff[i] > 0);
			m->rope_inv_freq[i] /= rff[i];
		}
	}
	if (bad) {
		free_layers(m);
		free(m->output_norm);
		free(m->rope_inv_freq);
		FAIL(-EINVAL, "model: rope_freqs.weight of the wrong shape or not positive");
	}
	uint32_t qd = hp.n_head * hp.head_dim, kvd = hp.n_head_kv * hp.head_dim;
	for (uint32_t i = 0; i < hp.n_layer; i++) {
		struct phi_layer *L = &m->layers[i];
		char n[96];
#define T(field, suffix, nin, nout)                                        \
	snprintf(n, sizeof n, "blk.%u." suffix ".weight", i);              \
	L->field = mat(g, n, nin, nout);
		T(wq, "attn_q", hp.n_embd, qd);
		T(wk, "attn_k", hp.n_embd, kvd);
		T(wv, "attn_v", hp.n_embd, kvd);
		T(wo, "attn_output", qd, hp.n_embd);
		T(w_gate, "ffn_gate", hp.n_embd, hp.n_ff);
		T(w_up, "ffn_up", hp.n_embd, hp.n_ff);
		T(w_down, "ffn_down", hp.n_ff, hp.n_embd);
#undef T
		snprintf(n, sizeof n, "blk.%u.attn_norm.weight", i);
		L->attn_norm = vec(g, n, hp.n_embd);
		snprintf(n, sizeof n, "blk.%u.ffn_norm.weight", i);
		L->ffn_norm = vec(g, n, hp.n_embd);
		if (!L->wq || !L->wk || !L->wv || !L->wo || !L->w_gate || !L->w_up || !L->w_down ||
		    !L->attn_norm || !L->ffn_norm) {
			free_layers(m);
			free(m->output_norm);
			free(m->rope_inv_freq);
			FAIL(-EINVAL, "model: a block tensor is missing or of the wrong shape");
		}
	}
	m->g = g;
	*ret = TAKE_PTR(m);
	return 0;
}

/* ------------------------------------------------------------------ context */

struct phi_ctx {
	const struct phi_model *m;
	struct phi_pool *pool;
	uint32_t n_ctx, pos, hw; /* hw: positions ever written (what free must wipe) */
	float *x, *xb, *q, *k, *v, *ao, *hb, *hb2, *logits, *att, *kc, *vc;
	uint8_t *act;
	size_t act_stride;
	/* what act holds now (so Wq, Wk, Wv share one quantization) */
	const float *act_src;
	int act_kind;
	size_t sizes[13];
};

#define NBUF 12

static float **bufs(struct phi_ctx *c, int i)
{
	float **b[NBUF] = { &c->x, &c->xb, &c->q, &c->k, &c->v, &c->ao, &c->hb, &c->hb2,
			    &c->logits, &c->att, &c->kc, &c->vc };
	return b[i];
}

void phi_ctx_free(struct phi_ctx *c)
{
	if (!c)
		return;
	/* the KV cache is wiped where it was written: a large, barely used cache is not
	 * faulted in just to be cleared */
	size_t kvd = (size_t)c->m->hp.n_head_kv * c->m->hp.head_dim;
	for (uint32_t l = 0; l < c->m->hp.n_layer && c->kc && c->vc; l++) {
		explicit_bzero(c->kc + (size_t)l * c->n_ctx * kvd, (size_t)c->hw * kvd * sizeof(float));
		explicit_bzero(c->vc + (size_t)l * c->n_ctx * kvd, (size_t)c->hw * kvd * sizeof(float));
	}
	for (int i = 0; i < NBUF; i++) {
		float **b = bufs(c, i);
		if (*b && *b != c->kc && *b != c->vc)
			explicit_bzero(*b, c->sizes[i]);
		free(*b);
	}
	if (c->act)
		explicit_bzero(c->act, c->sizes[NBUF]);
	free(c->act);
	phi_pool_free(c->pool);
	free(c);
}

int phi_ctx_new(const struct phi_model *m, uint32_t n_ctx, int n_threads, struct phi_ctx **ret)
{
	const struct phi_hparams *hp = &m->hp;
	/* the job's size, capped by the model's; unasked, the model's up to 4096 */
	if (n_ctx == 0)
		n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
	if (n_ctx > hp->n_ctx_train)
		n_ctx = hp->n_ctx_train;
	if (n_threads < 1 || n_threads > 256)
		return -EINVAL;
	struct phi_ctx *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->m = m;
	c->n_ctx = n_ctx;
	size_t qd = (size_t)hp->n_head * hp->head_dim, kvd = (size_t)hp->n_head_kv * hp->head_dim;
	size_t widest = hp->n_embd > hp->n_ff ? hp->n_embd : hp->n_ff;
	if (qd > widest)
		widest = qd;
	size_t n[NBUF] = { BATCH * hp->n_embd, BATCH * hp->n_embd, BATCH * qd, BATCH * kvd,
			   BATCH * kvd, BATCH * qd, BATCH * (size_t)hp->n_ff, BATCH * (size_t)hp->n_ff,
			   hp->n_vocab, (size_t)n_threads * n_ctx,
			   (size_t)hp->n_layer * n_ctx * kvd, (size_t)hp->n_layer * n_ctx * kvd };
	for (int i = 0; i < NBUF; i++) {
		c->sizes[i] = n[i] * sizeof(float);
		*bufs(c, i) = calloc(n[i], sizeof(float));
		if (!*bufs(c, i)) {
			phi_ctx_free(c);
			return -ENOMEM;
		}
	}
	size_t a = 0;
	for (int k = PHI_ACT_F32; k <= PHI_ACT_Q8_K; k++) {
		size_t b = phi_act_bytes(k, widest);
		a = b > a ? b : a;
	}
	c->act_stride = (a + 63) & ~(size_t)63;
	c->sizes[NBUF] = BATCH * c->act_stride;
	c->act = aligned_alloc(64, c->sizes[NBUF]);
	int r = c->act ? phi_pool_new(n_threads, &c->pool) : -ENOMEM;
	if (r < 0) {
		phi_ctx_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

uint32_t phi_ctx_pos(const struct phi_ctx *c)
{
	return c->pos;
}

uint32_t phi_ctx_n_ctx(const struct phi_ctx *c)
{
	return c->n_ctx;
}

void phi_ctx_reset(struct phi_ctx *c)
{
	c->pos = 0;
}

const float *phi_ctx_logits(const struct phi_ctx *c)
{
	return c->logits;
}

static void rmsnorm(float *o, const float *x, const float *w, size_t n, float eps)
{
	double ss = 0;
	for (size_t i = 0; i < n; i++)
		ss += (double)x[i] * x[i];
	float s = (float)(1.0 / sqrt(ss / (double)n + eps));
	for (size_t i = 0; i < n; i++)
		o[i] = x[i] * s * w[i];
}

struct mm {
	const struct phi_gguf_tensor *w;
	const uint8_t *act;
	size_t act_stride, n_tok, out_stride, row_bytes;
	float *out;
};

static void mm_rows(void *ctx, size_t rb, size_t re, int tid)
{
	(void)tid;
	const struct mm *a = ctx;
	const uint8_t *base = a->w->data;
	size_t cols = a->w->ne[0];
	for (size_t r = rb; r < re; r++) {
		const void *row = base + r * a->row_bytes;
		for (size_t t = 0; t < a->n_tok; t++)
			a->out[t * a->out_stride + r] =
				phi_vec_dot(a->w->type, row, a->act + t * a->act_stride, cols);
	}
}

/* out[t][0..rows) = W · src[t] for t < n_tok (src rows of w->ne[0] floats, stride cols) */
static void matmul(struct phi_ctx *c, const struct phi_gguf_tensor *w, const float *src, size_t n_tok,
		   float *out)
{
	size_t cols = w->ne[0], rows = w->ne[1];
	int kind = phi_act_kind(w->type);
	if (c->act_src != src || c->act_kind != kind) {
		for (size_t t = 0; t < n_tok; t++)
			phi_act_prepare(kind, src + t * cols, c->act + t * c->act_stride, cols);
		c->act_src = src;
		c->act_kind = kind;
	}
	struct mm a = { .w = w, .act = c->act, .act_stride = c->act_stride, .n_tok = n_tok,
			.out_stride = rows, .row_bytes = w->size / rows, .out = out };
	/* small products are not worth waking the workers */
	if (rows * cols * n_tok < 32768)
		mm_rows(&a, 0, rows, 0);
	else
		phi_pool_run(c->pool, mm_rows, &a, rows);
}

static void rope(float *v, size_t n_heads, size_t hd, size_t n_rot, const float *cs)
{
	for (size_t h = 0; h < n_heads; h++, v += hd)
		for (size_t i = 0; i < n_rot / 2; i++) {
			float a = v[2 * i], b = v[2 * i + 1], co = cs[2 * i], si = cs[2 * i + 1];
			v[2 * i] = a * co - b * si;
			v[2 * i + 1] = a * si + b * co;
		}
}

struct attn {
	struct phi_ctx *c;
	uint32_t layer, p0;
};

/* task = token * n_head + head */
static void attn_tasks(void *ctx, size_t tb, size_t te, int tid)
{
	const struct attn *a = ctx;
	struct phi_ctx *c = a->c;
	const struct phi_hparams *hp = &c->m->hp;
	size_t hd = hp->head_dim, kvd = (size_t)hp->n_head_kv * hd, grp = hp->n_head / hp->n_head_kv;
	const float *kc = c->kc + (size_t)a->layer * c->n_ctx * kvd;
	const float *vc = c->vc + (size_t)a->layer * c->n_ctx * kvd;
	float *att = c->att + (size_t)tid * c->n_ctx;
	float scale = 1.0f / sqrtf((float)hd);
	for (size_t task = tb; task < te; task++) {
		size_t t = task / hp->n_head, h = task % hp->n_head, kh = h / grp;
		size_t n = a->p0 + t + 1;
		const float *q = c->q + t * hp->n_head * hd + h * hd;
		float mx = -INFINITY;
		for (size_t p = 0; p < n; p++) {
			const float *k = kc + p * kvd + kh * hd;
			float s = 0;
			for (size_t i = 0; i < hd; i++)
				s += q[i] * k[i];
			att[p] = s * scale;
			mx = att[p] > mx ? att[p] : mx;
		}
		float sum = 0;
		for (size_t p = 0; p < n; p++) {
			att[p] = expf(att[p] - mx);
			sum += att[p];
		}
		float *o = c->ao + t * hp->n_head * hd + h * hd;
		memset(o, 0, hd * sizeof(float));
		for (size_t p = 0; p < n; p++) {
			const float *v = vc + p * kvd + kh * hd;
			float w = att[p] / sum;
			for (size_t i = 0; i < hd; i++)
				o[i] += w * v[i];
		}
	}
}

static void forward_batch(struct phi_ctx *c, const int32_t *toks, size_t n)
{
	const struct phi_model *m = c->m;
	const struct phi_hparams *hp = &m->hp;
	size_t d = hp->n_embd, hd = hp->head_dim, qd = hp->n_head * hd, kvd = hp->n_head_kv * hd;
	size_t ff = hp->n_ff, row_bytes = m->tok_embd->size / hp->n_vocab;
	float cs[BATCH][2 * 512];
	const double *inv = m->rope_inv_freq;

	for (size_t t = 0; t < n; t++) {
		phi_dequant(m->tok_embd->type, (const uint8_t *)m->tok_embd->data + (size_t)toks[t] * row_bytes,
			    c->x + t * d, d);
		for (size_t i = 0; i < hp->n_rot / 2; i++) {
			double th = (double)(c->pos + t) * inv[i];
			cs[t][2 * i] = (float)cos(th);
			cs[t][2 * i + 1] = (float)sin(th);
		}
	}
	for (uint32_t l = 0; l < hp->n_layer; l++) {
		const struct phi_layer *L = &m->layers[l];
		for (size_t t = 0; t < n; t++)
			rmsnorm(c->xb + t * d, c->x + t * d, L->attn_norm, d, hp->eps);
		c->act_src = NULL;
		matmul(c, L->wq, c->xb, n, c->q);
		matmul(c, L->wk, c->xb, n, c->k);
		matmul(c, L->wv, c->xb, n, c->v);
		float *kc = c->kc + (size_t)l * c->n_ctx * kvd, *vc = c->vc + (size_t)l * c->n_ctx * kvd;
		for (size_t t = 0; t < n; t++) {
			rope(c->q + t * qd, hp->n_head, hd, hp->n_rot, cs[t]);
			rope(c->k + t * kvd, hp->n_head_kv, hd, hp->n_rot, cs[t]);
			memcpy(kc + (c->pos + t) * kvd, c->k + t * kvd, kvd * sizeof(float));
			memcpy(vc + (c->pos + t) * kvd, c->v + t * kvd, kvd * sizeof(float));
		}
		struct attn a = { c, l, c->pos };
		size_t tasks = n * hp->n_head;
		if ((c->pos + n) * hd * tasks < 32768)
			attn_tasks(&a, 0, tasks, 0);
		else
			phi_pool_run(c->pool, attn_tasks, &a, tasks);
		c->act_src = NULL;
		matmul(c, L->wo, c->ao, n, c->xb);
		for (size_t i = 0; i < n * d; i++)
			c->x[i] += c->xb[i];
		for (size_t t = 0; t < n; t++)
			rmsnorm(c->xb + t * d, c->x + t * d, L->ffn_norm, d, hp->eps);
		c->act_src = NULL;
		matmul(c, L->w_gate, c->xb, n, c->hb);
		matmul(c, L->w_up, c->xb, n, c->hb2);
		for (size_t i = 0; i < n * ff; i++) {
			float g = c->hb[i];
			c->hb[i] = g / (1.0f + expf(-g)) * c->hb2[i];
		}
		c->act_src = NULL;
		matmul(c, L->w_down, c->hb, n, c->xb);
		for (size_t i = 0; i < n * d; i++)
			c->x[i] += c->xb[i];
	}
	rmsnorm(c->xb, c->x + (n - 1) * d, m->output_norm, d, hp->eps);
	c->act_src = NULL;
	matmul(c, m->output, c->xb, 1, c->logits);
	c->act_src = NULL;
	c->pos += (uint32_t)n;
	if (c->pos > c->hw)
		c->hw = c->pos;
}

int phi_ctx_forward(struct phi_ctx *c, const int32_t *toks, size_t n)
{
	if (n == 0)
		return -EINVAL;
	if (n > c->n_ctx - c->pos)
		return -ENOSPC;
	for (size_t i = 0; i < n; i++)
		if (toks[i] < 0 || (uint32_t)toks[i] >= c->m->hp.n_vocab)
			return -EINVAL;
	for (size_t i = 0; i < n; i += BATCH)
		forward_batch(c, toks + i, n - i < BATCH ? n - i : BATCH);
	return 0;
}
