/* sample.c: candidates are ordered by logit (ties: lower id first), cut to top-k, turned into
 * probabilities at the temperature, cut to the smallest prefix whose mass reaches top-p,
 * and drawn with a xoshiro-style generator seeded by splitmix64. */
#include "sample.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

struct cand {
	float logit;
	int32_t id;
};

struct phi_sampler {
	struct phi_sample_opts o;
	uint32_t n;
	uint64_t s;
	struct cand *c;
};

static uint64_t splitmix64(uint64_t *x)
{
	uint64_t z = (*x += 0x9e3779b97f4a7c15ULL);
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

int phi_sampler_new(uint32_t n_vocab, const struct phi_sample_opts *o, struct phi_sampler **ret)
{
	if (n_vocab == 0 || !(o->top_p > 0) || isnan(o->temperature))
		return -EINVAL;
	struct phi_sampler *s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->c = calloc(n_vocab, sizeof(*s->c));
	if (!s->c) {
		free(s);
		return -ENOMEM;
	}
	s->o = *o;
	s->n = n_vocab;
	s->s = o->seed;
	*ret = s;
	return 0;
}

void phi_sampler_free(struct phi_sampler *s)
{
	if (!s)
		return;
	explicit_bzero(s->c, s->n * sizeof(*s->c));
	free(s->c);
	free(s);
}

static int cmp_cand(const void *a, const void *b)
{
	const struct cand *x = a, *y = b;
	if (x->logit != y->logit)
		return x->logit > y->logit ? -1 : 1;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* min-heap on (logit, -id) of the k best candidates */
static int worse(const struct cand *a, const struct cand *b)
{
	return cmp_cand(a, b) > 0;
}

static void sift_down(struct cand *h, uint32_t k, uint32_t i)
{
	for (;;) {
		uint32_t l = 2 * i + 1, r = l + 1, m = i;
		if (l < k && worse(&h[l], &h[m]))
			m = l;
		if (r < k && worse(&h[r], &h[m]))
			m = r;
		if (m == i)
			return;
		struct cand t = h[i];
		h[i] = h[m];
		h[m] = t;
		i = m;
	}
}

int32_t phi_sample(struct phi_sampler *s, const float *logits)
{
	uint32_t n = s->n;
	if (s->o.temperature <= 0) {
		uint32_t best = 0;
		for (uint32_t i = 1; i < n; i++)
			if (logits[i] > logits[best])
				best = i;
		return (int32_t)best;
	}
	uint32_t k = s->o.top_k && s->o.top_k < n ? s->o.top_k : n;
	struct cand *c = s->c;
	for (uint32_t i = 0; i < k; i++)
		c[i] = (struct cand){ logits[i], (int32_t)i };
	if (k < n) {
		for (uint32_t i = k / 2; i-- > 0;)
			sift_down(c, k, i);
		for (uint32_t i = k; i < n; i++) {
			struct cand x = { logits[i], (int32_t)i };
			if (worse(&c[0], &x)) {
				c[0] = x;
				sift_down(c, k, 0);
			}
		}
	}
	qsort(c, k, sizeof(*c), cmp_cand);
	double sum = 0, mx = c[0].logit;
	for (uint32_t i = 0; i < k; i++) {
		c[i].logit = (float)exp((c[i].logit - mx) / s->o.temperature);
		sum += c[i].logit;
	}
	uint32_t m = k;
	if (s->o.top_p < 1) {
		double acc = 0;
		for (uint32_t i = 0; i < k; i++) {
			acc += c[i].logit / sum;
			if (acc >= s->o.top_p) {
				m = i + 1;
				break;
			}
		}
		sum = 0;
		for (uint32_t i = 0; i < m; i++)
			sum += c[i].logit;
	}
	double u = (double)(splitmix64(&s->s) >> 11) * 0x1p-53 * sum, acc = 0;
	for (uint32_t i = 0; i < m; i++) {
		acc += c[i].logit;
		if (u < acc)
			return c[i].id;
	}
	return c[m - 1].id;
}
