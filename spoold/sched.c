/* sched.c: see sched.h. */
#include "sched.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int sched_tier(uint64_t tokens)
{
	if (tokens < TIER_SMALL_MAX)
		return TIER_SMALL;
	if (tokens < TIER_MEDIUM_MAX)
		return TIER_MEDIUM;
	if (tokens <= TIER_LARGE_MAX)
		return TIER_LARGE;
	return -E2BIG;
}

uint32_t sched_tier_gpus(int tier)
{
	return tier == TIER_LARGE ? 4 : tier == TIER_MEDIUM ? 2 : 1;
}

const char *sched_tier_name(int tier)
{
	return tier == TIER_LARGE ? "large" : tier == TIER_MEDIUM ? "medium" : "small";
}

uint64_t sched_cost(uint64_t rate_per_min, uint64_t dur_ms)
{
	return (rate_per_min * dur_ms + 59999) / 60000;
}

uint64_t sched_reserve(const struct config *c, int tier)
{
	return sched_cost(c->cost_per_min_micro[tier], c->lifetime_sec * 1000);
}

bool sched_budget_ok(uint64_t spent, uint64_t reserved, uint64_t cost, uint64_t budget)
{
	return spent + reserved + cost <= budget;
}

int sched_budget_level(uint64_t spent, uint64_t budget)
{
	if (budget == 0)
		return 100;
	/* spent/budget >= p/100  <=>  spent*100 >= p*budget (exact in integers) */
	if (spent * 100 >= budget * 100)
		return 100;
	if (spent * 100 >= budget * 90)
		return 90;
	if (spent * 100 >= budget * 80)
		return 80;
	return 0;
}

bool sched_lifetime_expired(uint64_t started_ms, uint64_t now, uint64_t lifetime_sec)
{
	return now >= started_ms && now - started_ms >= lifetime_sec * 1000;
}

uint64_t sched_backoff_ms(const struct config *c, uint32_t attempt)
{
	uint64_t d = c->retry_backoff_sec * 1000;
	for (uint32_t i = 1; i < attempt && d < c->retry_backoff_max_sec * 1000; i++)
		d *= 2;
	if (d > c->retry_backoff_max_sec * 1000)
		d = c->retry_backoff_max_sec * 1000;
	return d;
}

void sched_fail_add(struct sched_fails *f, uint64_t now)
{
	f->at[f->head] = now;
	f->head = (f->head + 1) % SCHED_FAIL_RING;
	if (f->n < SCHED_FAIL_RING)
		f->n++;
}

size_t sched_fail_count(const struct sched_fails *f, uint64_t now, uint64_t window_sec)
{
	size_t c = 0;
	for (size_t i = 0; i < f->n; i++)
		if (f->at[i] <= now && now - f->at[i] < window_sec * 1000)
			c++;
	return c;
}

bool sched_fail_alert(const struct sched_fails *f, uint64_t now, const struct config *c)
{
	return sched_fail_count(f, now, c->prov_fail_window_sec) > c->prov_fail_alert;
}

bool sched_queue_alert(uint64_t queued, const struct config *c)
{
	return queued > c->queue_alert;
}

int sched_cmp(int pa, uint64_t ra, const char *ia, int pb, uint64_t rb, const char *ib)
{
	if (pa != pb)
		return pa > pb ? -1 : 1;
	if (ra != rb)
		return ra < rb ? -1 : 1;
	return strcmp(ia, ib);
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
	return x < y ? -1 : x > y;
}

uint64_t sched_percentile(uint64_t *v, size_t n, unsigned pct)
{
	if (n == 0)
		return 0;
	qsort(v, n, sizeof *v, cmp_u64);
	/* nearest rank */
	size_t rank = (pct * n + 99) / 100;
	if (rank == 0)
		rank = 1;
	return v[rank - 1];
}
