/* sched.h: scheduling rules as pure functions (tiers, cost, budgets, alerts, lifetime,
 * backoff, order), so each threshold is unit-tested at its boundary. Money: micro-dollars. */
#ifndef SPOOLD_SCHED_H
#define SPOOLD_SCHED_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"

enum { TIER_SMALL, TIER_MEDIUM, TIER_LARGE };
#define TIER_SMALL_MAX 10000   /* tokens below this: small */
#define TIER_MEDIUM_MAX 50000  /* below this: medium */
#define TIER_LARGE_MAX 200000  /* up to and including this: large; above: refused */

/* 0..2, or -E2BIG when larger than the largest tier. */
int sched_tier(uint64_t tokens);
uint32_t sched_tier_gpus(int tier);
const char *sched_tier_name(int tier);
/* Cost of dur_ms at rate micro-dollars per minute, rounded up to a micro-dollar. */
uint64_t sched_cost(uint64_t rate_per_min, uint64_t dur_ms);
/* Worst case of one instance: the rate for the whole lifetime. */
uint64_t sched_reserve(const struct config *c, int tier);
/* May a job costing at most cost start with spent + reserved already counted? At exactly the
 * budget: yes; one micro-dollar over: no. */
bool sched_budget_ok(uint64_t spent, uint64_t reserved, uint64_t cost, uint64_t budget);
/* Highest alert level reached: 0, 80, 90 or 100 (percent of budget). */
int sched_budget_level(uint64_t spent, uint64_t budget);
/* True once now - started >= lifetime. */
bool sched_lifetime_expired(uint64_t started_ms, uint64_t now_ms, uint64_t lifetime_sec);
/* Delay before retry number `attempt` (1 = first retry): base * 2^(attempt-1), capped. */
uint64_t sched_backoff_ms(const struct config *c, uint32_t attempt);

#define SCHED_FAIL_RING 256
struct sched_fails {
	uint64_t at[SCHED_FAIL_RING];
	size_t n, head;
};
void sched_fail_add(struct sched_fails *f, uint64_t now_ms);
/* Failures in (now - window, now]. */
size_t sched_fail_count(const struct sched_fails *f, uint64_t now_ms, uint64_t window_sec);
/* Alert when more than `threshold` failures fall in the window. */
bool sched_fail_alert(const struct sched_fails *f, uint64_t now_ms, const struct config *c);
bool sched_queue_alert(uint64_t queued, const struct config *c);

/* Order: priority (higher first), then age (older first), then id. */
int sched_cmp(int pa, uint64_t ra, const char *ia, int pb, uint64_t rb, const char *ib);

/* Percentile (0..100) of n samples (sorted in place); 0 when n == 0. */
uint64_t sched_percentile(uint64_t *v, size_t n, unsigned pct);

#endif
