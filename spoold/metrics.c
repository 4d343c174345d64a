/* metrics.c: see metrics.h. */
#include "metrics.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "phifs/util.h"

static double usd(uint64_t micro)
{
	return (double)micro / 1e6;
}

static double ratio(uint64_t a, uint64_t b)
{
	return b ? (double)a / (double)b : 0;
}

int metrics_format(const struct metrics *m, char **ret)
{
	char *s = NULL;
	int n = asprintf(&s,
		"# HELP spoold_queue_length Jobs waiting in queue/ (deferred included).\n"
		"# TYPE spoold_queue_length gauge\nspoold_queue_length %llu\n"
		"# HELP spoold_deferred Queued jobs held back by a budget.\n"
		"# TYPE spoold_deferred gauge\nspoold_deferred %llu\n"
		"# HELP spoold_running Jobs with a live instance.\n"
		"# TYPE spoold_running gauge\nspoold_running %llu\n"
		"# HELP spoold_jobs_done Jobs in done/.\n"
		"# TYPE spoold_jobs_done gauge\nspoold_jobs_done %llu\n"
		"# HELP spoold_jobs_failed Jobs in failed/ (refused jobs with an id included).\n"
		"# TYPE spoold_jobs_failed gauge\nspoold_jobs_failed %llu\n"
		"# HELP spoold_files_refused_total Files moved to failed/rejected/ since start.\n"
		"# TYPE spoold_files_refused_total counter\nspoold_files_refused_total %llu\n"
		"# HELP spoold_provisioning_failures_total Provisioning failures since start.\n"
		"# TYPE spoold_provisioning_failures_total counter\nspoold_provisioning_failures_total %llu\n"
		"# HELP spoold_time_to_start_seconds From acceptance to a started instance (last 1024 jobs).\n"
		"# TYPE spoold_time_to_start_seconds summary\n"
		"spoold_time_to_start_seconds{quantile=\"0.5\"} %.3f\n"
		"spoold_time_to_start_seconds{quantile=\"0.95\"} %.3f\n"
		"# HELP spoold_cost_usd Cost of ended jobs in the current period.\n"
		"# TYPE spoold_cost_usd gauge\n"
		"spoold_cost_usd{period=\"day\"} %.6f\nspoold_cost_usd{period=\"month\"} %.6f\n"
		"# HELP spoold_budget_usd Configured budget.\n"
		"# TYPE spoold_budget_usd gauge\n"
		"spoold_budget_usd{period=\"day\"} %.6f\nspoold_budget_usd{period=\"month\"} %.6f\n"
		"# HELP spoold_budget_used_ratio Cost over budget.\n"
		"# TYPE spoold_budget_used_ratio gauge\n"
		"spoold_budget_used_ratio{period=\"day\"} %.6f\nspoold_budget_used_ratio{period=\"month\"} %.6f\n"
		"# HELP spoold_budget_alert_level Highest alert level reached: 0, 80, 90 or 100 percent.\n"
		"# TYPE spoold_budget_alert_level gauge\n"
		"spoold_budget_alert_level{period=\"day\"} %d\nspoold_budget_alert_level{period=\"month\"} %d\n"
		"# HELP spoold_alert 1 while an alert condition holds.\n"
		"# TYPE spoold_alert gauge\n"
		"spoold_alert{alert=\"provisioning_failures\"} %d\nspoold_alert{alert=\"queue_length\"} %d\n",
		(unsigned long long)m->queued, (unsigned long long)m->deferred,
		(unsigned long long)m->running, (unsigned long long)m->done,
		(unsigned long long)m->failed, (unsigned long long)m->refused,
		(unsigned long long)m->prov_failures, (double)m->start_p50_ms / 1000.0,
		(double)m->start_p95_ms / 1000.0, usd(m->cost_day_micro), usd(m->cost_month_micro),
		usd(m->budget_day_micro), usd(m->budget_month_micro),
		ratio(m->cost_day_micro, m->budget_day_micro),
		ratio(m->cost_month_micro, m->budget_month_micro), m->budget_day_level,
		m->budget_month_level, m->alert_prov_failures, m->alert_queue);
	if (n < 0)
		return -ENOMEM;
	*ret = s;
	return 0;
}

int metrics_write(const struct metrics *m, const char *path)
{
	_cleanup_free_ char *txt = NULL;
	int r = metrics_format(m, &txt);
	if (r < 0)
		return r;
	_cleanup_free_ char *tmp = NULL;
	if (asprintf(&tmp, "%s.tmp", path) < 0)
		return -ENOMEM;
	_cleanup_close_ int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644);
	if (fd < 0)
		return phi_neg_errno();
	size_t len = strlen(txt);
	if (write(fd, txt, len) != (ssize_t)len || rename(tmp, path) < 0) {
		r = phi_neg_errno();
		(void)unlink(tmp);
		return r;
	}
	return 0;
}
