/* prov.h: the provisioner interface. Every call is idempotent by the attempt's name,
 * spoold-<id>.<attempt> (prov_name()), which is also the Slurm --job-name; the backend's
 * handle (pid + start time, Slurm job id) lives in the job's journal record. */
#ifndef SPOOLD_PROV_H
#define SPOOLD_PROV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "config.h"
#include "jrec.h"
#include "phifs/util.h"

struct prov;

struct prov_job {
	const char *name;     /* spoold-<id>.<attempt> */
	const char *job_path; /* absolute path of the job file (active/<id>.json) */
	uint32_t gpus;
	uint64_t lifetime_sec;
	const char *grant;
};

enum prov_state {
	PS_NONE,     /* the backend knows nothing of this name: never submitted, or lost before start */
	PS_PENDING,  /* submitted, waiting for resources */
	PS_RUNNING,
	PS_EXITED,   /* ended; exit_status / term_signal say how */
	PS_LOST,     /* started, but ended without a recorded outcome */
	PS_PROVFAIL, /* the instance could not be provisioned (exec failed, boot/node failure) */
};

struct prov_result {
	enum prov_state st;
	int exit_status; /* -1 unknown */
	int term_signal;
	bool cancelled, lifetime;
	uint64_t started_ms, ended_ms;
	char slurm_id[24]; /* Slurm: the job id, found by name (a record without one adopts it) */
};

/* record(ud, rec): journal rec durably; called by submit once the handle is known and before
 * the instance may run (local) or right after the submission (Slurm). */
typedef int (*prov_record_fn)(void *ud, struct jrec *rec);

struct prov_ops {
	const char *name;
	int (*submit)(struct prov *p, const struct prov_job *j, struct jrec *rec,
		      prov_record_fn record, void *ud);
	int (*poll)(struct prov *p, const struct jrec *rec, struct prov_result *ret);
	int (*cancel)(struct prov *p, const struct jrec *rec);
	int (*cleanup)(struct prov *p, const struct jrec *rec);
	/* Could an instance of gpus GPUs start now? */
	bool (*capacity)(struct prov *p, uint32_t gpus);
	/* A restarted spoold re-registers a live attempt (its GPU slots). */
	void (*adopt)(struct prov *p, const struct jrec *rec);
	/* Refresh cached backend state once per tick (may be NULL). */
	int (*refresh)(struct prov *p);
	void (*free)(struct prov *p);
};

struct prov {
	const struct prov_ops *ops;
	const struct config *cfg;
	char spool[CONFIG_PATH_MAX];
	void *priv;
};

void prov_name(const char *id, uint32_t attempt, char out[96]);
int prov_local_new(const struct config *c, const char *spool, struct prov **ret);
int prov_slurm_new(const struct config *c, const char *spool, struct prov **ret);
void prov_free(struct prov *p);

/* Run argv (no shell), stdout captured into out (at most max bytes, NUL-terminated).
 * Returns the exit status (0..255), or -errno; a signal death is -EINTR. */
int prov_run_cmd(char *const argv[], char **ret_out, size_t max);
/* The same, with env ("NAME=value" strings, NULL-terminated) added to the command's
 * environment (in the child only). */
int prov_run_cmd_env(char *const argv[], char *const env[], char **ret_out, size_t max);

/* /proc/<pid>/stat: start time (field 22) and whether it is a zombie. */
int proc_starttime(int64_t pid, uint64_t *ret_start, bool *ret_zombie);

#endif
