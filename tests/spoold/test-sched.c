/* test-sched: every scheduling threshold at its boundary (tiers, budgets and their alert
 * levels, lifetime, provisioning-failure and queue alerts, backoff, order, percentiles),
 * the metrics text, and the sd_notify datagram on a path and an abstract socket. */
#include <errno.h>
#include <stddef.h>
#include <unistd.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "spoold/config.h"
#include "spoold/metrics.h"
#include "phifs/notify.h"
#include "spoold/sched.h"
#include "test.h"

static void notify_roundtrip(const char *addr)
{
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(addr);
	memcpy(sa.sun_path, addr, n);
	if (addr[0] == '@')
		sa.sun_path[0] = 0;
	else
		unlink(addr);
	CHECK_OK(bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)));
	CHECK_EQ(phi_notify_send(addr, "READY=1\nSTATUS=queued 3"), 1);
	char buf[64] = { 0 };
	CHECK_EQ(recv(fd, buf, sizeof buf - 1, 0), 23);
	CHECK(!strcmp(buf, "READY=1\nSTATUS=queued 3"));
	close(fd);
	if (addr[0] == '/')
		unlink(addr);
}

int main(void)
{
	struct config c;
	config_defaults(&c);

	/* tiers: <10k small, 10k..<50k medium, 50k..200k large, above refused */
	CHECK_EQ(sched_tier(0), TIER_SMALL);
	CHECK_EQ(sched_tier(9999), TIER_SMALL);
	CHECK_EQ(sched_tier(10000), TIER_MEDIUM);
	CHECK_EQ(sched_tier(49999), TIER_MEDIUM);
	CHECK_EQ(sched_tier(50000), TIER_LARGE);
	CHECK_EQ(sched_tier(200000), TIER_LARGE);
	CHECK_EQ(sched_tier(200001), -E2BIG);
	CHECK_EQ(sched_tier_gpus(TIER_SMALL), 1);
	CHECK_EQ(sched_tier_gpus(TIER_MEDIUM), 2);
	CHECK_EQ(sched_tier_gpus(TIER_LARGE), 4);

	/* cost: $0.015/min for 1 min = 15000 micro; rounds up */
	CHECK_EQ(sched_cost(15000, 60000), 15000);
	CHECK_EQ(sched_cost(15000, 1), 1);
	CHECK_EQ(sched_cost(60000, 30 * 60000), 1800000);
	CHECK_EQ(sched_reserve(&c, TIER_SMALL), 450000); /* 30 min x $0.015 */

	/* budget: exactly at the budget is allowed, one micro-dollar over is deferred */
	CHECK(sched_budget_ok(999000000, 550000, 450000, 1000000000));
	CHECK(!sched_budget_ok(999000000, 550001, 450000, 1000000000));
	CHECK(sched_budget_ok(0, 0, 0, 0));
	/* alert levels at 80/90/100 % */
	CHECK_EQ(sched_budget_level(799999999, 1000000000), 0);
	CHECK_EQ(sched_budget_level(800000000, 1000000000), 80);
	CHECK_EQ(sched_budget_level(899999999, 1000000000), 80);
	CHECK_EQ(sched_budget_level(900000000, 1000000000), 90);
	CHECK_EQ(sched_budget_level(999999999, 1000000000), 90);
	CHECK_EQ(sched_budget_level(1000000000, 1000000000), 100);
	CHECK_EQ(sched_budget_level(20000000000ULL, 25000000000ULL), 80);

	/* lifetime: expired at exactly the limit, not a millisecond before */
	CHECK(!sched_lifetime_expired(1000, 1000 + 1800 * 1000 - 1, 1800));
	CHECK(sched_lifetime_expired(1000, 1000 + 1800 * 1000, 1800));
	CHECK(!sched_lifetime_expired(5000, 4000, 1)); /* clock stepped back */

	/* provisioning failures: more than 3 in 10 minutes */
	struct sched_fails f = { 0 };
	uint64_t t0 = 10000000;
	for (int i = 0; i < 3; i++)
		sched_fail_add(&f, t0 + (uint64_t)i);
	CHECK(!sched_fail_alert(&f, t0 + 10, &c));
	sched_fail_add(&f, t0 + 600000 - 1);
	CHECK(sched_fail_alert(&f, t0 + 600000 - 1, &c));
	/* once the first one is 10 minutes old it leaves the window */
	CHECK(!sched_fail_alert(&f, t0 + 600000, &c));
	CHECK_EQ(sched_fail_count(&f, t0 + 600000, 600), 3);

	/* queue: longer than 50 */
	CHECK(!sched_queue_alert(50, &c));
	CHECK(sched_queue_alert(51, &c));

	/* backoff doubles and is capped */
	c.retry_backoff_sec = 30;
	c.retry_backoff_max_sec = 100;
	CHECK_EQ(sched_backoff_ms(&c, 1), 30000);
	CHECK_EQ(sched_backoff_ms(&c, 2), 60000);
	CHECK_EQ(sched_backoff_ms(&c, 3), 100000);
	CHECK_EQ(sched_backoff_ms(&c, 50), 100000);

	/* order: priority, then age, then id */
	CHECK(sched_cmp(9, 500, "b", 1, 100, "a") < 0);
	CHECK(sched_cmp(5, 100, "b", 5, 200, "a") < 0);
	CHECK(sched_cmp(5, 100, "a", 5, 100, "b") < 0);

	uint64_t v[] = { 50, 10, 40, 20, 30, 60, 70, 80, 90, 100 };
	CHECK_EQ(sched_percentile(v, 10, 50), 50);
	CHECK_EQ(sched_percentile(v, 10, 95), 100);
	CHECK_EQ(sched_percentile(v, 0, 50), 0);

	/* metrics text */
	struct metrics m = { .queued = 51, .running = 2, .done = 7, .budget_day_micro = 1000000000,
			     .cost_day_micro = 800000000, .budget_day_level = 80, .alert_queue = true };
	char *txt = NULL;
	CHECK_OK(metrics_format(&m, &txt));
	CHECK(strstr(txt, "\nspoold_queue_length 51\n"));
	CHECK(strstr(txt, "\nspoold_budget_used_ratio{period=\"day\"} 0.800000\n"));
	CHECK(strstr(txt, "\nspoold_budget_alert_level{period=\"day\"} 80\n"));
	CHECK(strstr(txt, "\nspoold_alert{alert=\"queue_length\"} 1\n"));
	free(txt);

	/* sd_notify */
	CHECK_EQ(phi_notify_send(NULL, "READY=1"), 0);
	CHECK(phi_notify_send("relative", "READY=1") < 0);
	char path[64];
	snprintf(path, sizeof path, "/tmp/test-spoold-notify.%d", (int)getpid());
	notify_roundtrip(path);
	snprintf(path, sizeof path, "@test-spoold-notify.%d", (int)getpid());
	notify_roundtrip(path);
	printf("ok\n");
	return 0;
}
