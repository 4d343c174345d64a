/* spoold: the job spool daemon. Thin main: options, config, then daemon_run(). */
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "daemon.h"
#include "hooks.h"
#include "phifs/notify.h"
#include "phifs/util.h"

#define DEFAULT_CONFIG "/etc/phifs/spoold.conf"

static void usage(FILE *f)
{
	fprintf(f, "usage: spoold [--config FILE] [--spool DIR] [--check-config]\n"
		   "  --config FILE    key = value configuration (default " DEFAULT_CONFIG ", optional)\n"
		   "  --spool DIR      override spool_dir\n"
		   "  --check-config   parse the configuration, print it resolved, and exit\n");
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "spool", required_argument, NULL, 's' },
		{ "check-config", no_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *cfg_path = NULL, *spool = NULL;
	bool check = false;
	int c;
	while ((c = getopt_long(argc, argv, "c:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			cfg_path = optarg;
			break;
		case 's':
			spool = optarg;
			break;
		case 'k':
			check = true;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind != argc) {
		usage(stderr);
		return 2;
	}
	struct config cfg;
	char err[256];
	config_defaults(&cfg);
	if (cfg_path || access(DEFAULT_CONFIG, F_OK) == 0) {
		if (config_load(&cfg, cfg_path ? cfg_path : DEFAULT_CONFIG, err, sizeof err) < 0) {
			fprintf(stderr, "spoold: %s: %s\n", cfg_path ? cfg_path : DEFAULT_CONFIG, err);
			return 2;
		}
	}
	if (spool) {
		if (spool[0] != '/' || strlen(spool) >= sizeof cfg.spool_dir) {
			fprintf(stderr, "spoold: --spool needs an absolute path\n");
			return 2;
		}
		strcpy(cfg.spool_dir, spool);
	}
	if (config_resolve(&cfg, err, sizeof err) < 0) {
		fprintf(stderr, "spoold: %s\n", err);
		return 2;
	}
	if (check) {
		printf("spool_dir = %s\nadmin_gid = %u\nbackend = %s\nrunner = %s\nmax_instances = %u\n"
		       "lifetime_sec = %llu\ngpu_slots = %zu\n",
		       cfg.spool_dir, (unsigned)cfg.admin_gid, cfg.backend == BACKEND_SLURM ? "slurm" : "local",
		       cfg.runner, cfg.max_instances, (unsigned long long)cfg.lifetime_sec, cfg.ngpu_slots);
		return 0;
	}
	struct daemon_opts o = { .notify_socket = getenv("NOTIFY_SOCKET") };
	if (phi_notify_watchdog_usec(getenv("WATCHDOG_USEC"), getenv("WATCHDOG_PID"), getpid(),
				     &o.watchdog_usec) < 0)
		fprintf(stderr, "spoold: ignoring a malformed WATCHDOG_USEC/WATCHDOG_PID\n");
	setvbuf(stderr, NULL, _IOLBF, 0);
	struct hooks hooks = hooks_default();
	if (cfg.phifs_store[0] || cfg.phifs_key_file[0]) {
		if (!cfg.phifs_store[0] || !cfg.phifs_key_file[0]) {
			fprintf(stderr, "spoold: phifs_store and phifs_key_file go together\n");
			return 2;
		}
		int r = hooks_phifs_new(&(struct hooks_phifs_cfg){ .store = cfg.phifs_store,
								  .key_file = cfg.phifs_key_file,
								  .audit_socket = cfg.audit_socket,
								  .job_user = cfg.job_user },
					&hooks, err, sizeof err);
		if (r < 0) {
			fprintf(stderr, "spoold: hooks: %s\n", err);
			return 2;
		}
	}
	int rc = daemon_run(&cfg, hooks, &o) < 0 ? 1 : 0;
	hooks_phifs_free(&hooks);
	return rc;
}
