/* config.h: spoold's configuration, a key = value file (docs/job-schema.md, "Configuration").
 * Money is held in micro-dollars (uint64) so budgets compare exactly. */
#ifndef SPOOLD_CONFIG_H
#define SPOOLD_CONFIG_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define CONFIG_MAX_BYTES 65536
#define CONFIG_MAX_SLOTS 64
#define CONFIG_PATH_MAX 1024

enum backend { BACKEND_LOCAL, BACKEND_SLURM };

struct config {
	char spool_dir[CONFIG_PATH_MAX];
	char admin_group[64];
	gid_t admin_gid; /* resolved by config_resolve() */
	enum backend backend;
	char runner[CONFIG_PATH_MAX];
	char documents_root[CONFIG_PATH_MAX]; /* "" = not set */
	char metrics_file[CONFIG_PATH_MAX];   /* "" = no metrics file */
	int gpu_slots[CONFIG_MAX_SLOTS];
	size_t ngpu_slots;
	uint32_t max_instances;
	uint64_t lifetime_sec;
	uint64_t kill_grace_sec;
	uint32_t max_attempts;
	uint64_t retry_backoff_sec;     /* first retry; doubles per attempt */
	uint64_t retry_backoff_max_sec; /* cap */
	uint64_t budget_day_micro;
	uint64_t budget_month_micro;
	uint64_t cost_per_min_micro[3]; /* small, medium, large */
	uint64_t bytes_per_token;
	uint64_t max_job_bytes;
	uint64_t queue_alert;          /* alert when the queue is longer than this */
	uint64_t prov_fail_alert;      /* alert on more than this many failures ... */
	uint64_t prov_fail_window_sec; /* ... within this window */
	uint64_t tick_ms;
	/* grants and audit (hooks.h): with phifs_store and phifs_key_file set, every attempt
	 * gets a real job grant for job_user, and audit_socket (if set) gets the job events */
	char phifs_store[CONFIG_PATH_MAX];    /* "" = not set: hooks only log */
	char phifs_key_file[CONFIG_PATH_MAX];
	char audit_socket[CONFIG_PATH_MAX];
	char job_user[64]; /* the runner's job user (gpurun.conf job_user); default nobody */
	char slurm_partition[64];
	char slurm_bin_dir[CONFIG_PATH_MAX]; /* "" = PATH */
};

void config_defaults(struct config *c);
/* Parse key = value lines from buf[0..len) over the defaults already in *c. Unknown keys and
 * bad values are errors; err gets "line N: key: problem". */
int config_parse(struct config *c, const void *buf, size_t len, char *err, size_t errlen);
int config_load(struct config *c, const char *path, char *err, size_t errlen);
/* Resolve admin_group to a gid (NSS). */
int config_resolve(struct config *c, char *err, size_t errlen);
/* "0.015" -> 15000 micro-dollars; at most 6 decimals. */
int config_parse_usd(const char *s, uint64_t *ret_micro);

#endif
