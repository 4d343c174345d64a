/* metrics.h: the Prometheus text file for node_exporter's textfile collector, written
 * atomically (temp file + rename in the same directory). */
#ifndef SPOOLD_METRICS_H
#define SPOOLD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct metrics {
	uint64_t queued, deferred, running, done, failed, refused;
	uint64_t prov_failures;
	uint64_t start_p50_ms, start_p95_ms;
	uint64_t cost_day_micro, cost_month_micro;
	uint64_t budget_day_micro, budget_month_micro;
	int budget_day_level, budget_month_level;
	bool alert_prov_failures, alert_queue;
};

/* Render into a malloc'ed string. */
int metrics_format(const struct metrics *m, char **ret);
int metrics_write(const struct metrics *m, const char *path);

#endif
