/* runner.h: gpurun's job runner (docs/runner.md). One attempt of one job:
 *
 *   provisioning   a private mount namespace (unshare + MS_PRIVATE|MS_REC on /), phifs
 *                  mounted there with grants, audit and direct I/O; a worker process that
 *                  drops to the job user and loads the model
 *   ready          mount up, model loaded
 *   executing      the patient's documents read through the mount and rendered, prompts
 *                  from the task's template, map-reduce over the context window, the
 *                  output and a JSON record written to <patient>/results/<job-id>/
 *   deprovisioning the worker wipes its buffers and frees the engine (device buffers
 *                  zeroed), the mount is unmounted and checked gone, the status JSON says
 *                  what was scrubbed
 *
 * The parent never reads plaintext; the worker holds it in secbufs (locked, wiped). */
#ifndef PHI_RUNNER_H
#define PHI_RUNNER_H

#include <stdbool.h>
#include <stddef.h>

#include "job.h"
#include "runconf.h"

/* Exit codes (docs/runner.md). */
enum runner_exit {
	RUN_OK = 0,
	RUN_USAGE = 2,        /* bad arguments, job file or configuration */
	RUN_PROVISION = 3,    /* namespace, mount, job user */
	RUN_MODEL = 4,        /* the model did not load */
	RUN_NO_DOCUMENTS = 5, /* nothing matched, or every document was refused */
	RUN_INFERENCE = 6,
	RUN_RESULTS = 7,      /* the results could not be written through the mount */
	RUN_SCRUB = 8,        /* the mount could not be confirmed gone */
	RUN_TERMINATED = 9,   /* SIGTERM/SIGINT/SIGHUP (spoold's lifetime, a cancel) */
	RUN_WORKER_DIED = 10, /* the worker was killed or crashed */
};

struct runner_opts {
	const struct runconf *cfg;
	const struct job *job;
	const char *status_path;  /* NULL: no status file */
	const char *attempt_name; /* spoold's attempt name, or NULL */
	/* test hooks (docs/runner.md, "Test hooks"): stop the worker with SIGSTOP */
	bool stop_in_inference, stop_before_scrub, stop_after_scrub;
	bool stop_in_results; /* output.txt written and synced, before fadvise and close */
};

/* The -o list gpurun mounts phifs with (grants, the audit socket, allow_other, direct_io,
 * run_as=phifs_user) into buf. -ENAMETOOLONG where it does not fit in buf (never a list
 * cut short: one without run_as would leave phifs root), -EINVAL where a value holds a
 * comma; buf is written only on success. */
int runner_phifs_options(const struct runconf *c, char *buf, size_t len);

/* Runs the attempt; returns its exit code (enum runner_exit). Progress lines on stdout carry
 * ids, phases and counts only. */
int runner_run(const struct runner_opts *o);

#endif
