/* runconf.h: gpurun's configuration (docs/runner.md), `key = value` lines like spoold's:
 * where the store, the master key, the audit socket and the models are, which user the job
 * runs as, limits, the cost rate and the prompt template of each task. Templates use
 * "\n" for a newline and the placeholders {documents} and {prompt}. */
#ifndef PHI_RUNCONF_H
#define PHI_RUNCONF_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RUNCONF_PATH_MAX 1024
#define RUNCONF_TEMPLATE_MAX 2048
#define RUNCONF_DEFAULT_PATH "/etc/phifs/gpurun.conf"

struct runconf {
	char store[RUNCONF_PATH_MAX];
	char key_file[RUNCONF_PATH_MAX];
	char audit_socket[RUNCONF_PATH_MAX]; /* "" = no audit (refused unless allow_unaudited) */
	char phifs[RUNCONF_PATH_MAX];        /* the phifs binary */
	char models_dir[RUNCONF_PATH_MAX];
	char mount_dir[RUNCONF_PATH_MAX]; /* private mount points are made below it */
	char job_user[64];
	/* "" = phifs keeps gpurun's identity; else phifs -o run_as=USER: once mounted it
	 * becomes USER (the store's owner) with no capabilities (gpurun@.service) */
	char phifs_user[64];
	uid_t job_uid; /* resolved */
	gid_t job_gid;
	uint32_t threads;
	uint32_t n_ctx;          /* 0: the model's, capped by the engine */
	uint32_t map_max_tokens; /* output tokens of each map (partial summary) pass */
	uint64_t max_input_bytes;
	uint64_t cost_micro_usd_per_hour;
	int no_gpu;
	char template_[3][RUNCONF_TEMPLATE_MAX]; /* by enum job_task */
	char template_reduce[RUNCONF_TEMPLATE_MAX];
};

void runconf_defaults(struct runconf *c);
/* Parse over the defaults; unknown keys and bad values fail with "line N: key: problem". */
int runconf_parse(struct runconf *c, const char *buf, size_t len, char *err, size_t errlen);
int runconf_load(struct runconf *c, const char *path, char *err, size_t errlen);
/* Resolve job_user (name or number) through NSS. */
int runconf_resolve(struct runconf *c, char *err, size_t errlen);

#endif
