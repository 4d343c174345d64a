/* gpurun: run one job over a private phifs mount (docs/runner.md).
 *
 *   gpurun [--config FILE] [--status FILE] [--key-file FILE] [--runtime-file FILE] JOBFILE
 *          (spoold's backends, gpurun@)
 *   gpurun [--config FILE] [--status FILE] --patient P --documents GLOB [--documents GLOB...]
 *          --task summarize|extract|question --model M [--prompt TEXT] [--max-tokens N]
 *          [--id ID] [--purpose P]
 *
 * The configuration is --config, else $GPURUN_CONFIG, else /etc/phifs/gpurun.conf. The
 * status file is --status, else $SPOOLD_STATUS_FILE. --key-file overrides key_file: gpurun@.service
 * names its credential there (%d/phifs-master-key), a path known only at start.
 * --runtime-file is the attempt's GPU slots and name (runfile.h), which gpurun@ gets as its
 * credential "run" because spoold's environment does not cross `systemctl start`. Exit
 * codes: runner.h. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <sodium.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <time.h>

#include "job.h"
#include "runfile.h"
#include "runconf.h"
#include "runner.h"
#include "util.h"

static void *wipe_malloc(size_t n)
{
	return malloc(n);
}

/* cJSON holds rendered FHIR strings: wipe everything it frees */
static void wipe_free(void *p)
{
	phi_erase_free(p);
}

static int usage(void)
{
	fprintf(stderr,
		"usage: gpurun [--config FILE] [--status FILE] [--key-file FILE] [--runtime-file FILE] JOBFILE\n"
		"       gpurun [--config FILE] [--status FILE] [--key-file FILE] [--runtime-file FILE]\n"
		"              --patient P --documents GLOB...\n"
		"              --task summarize|extract|question --model M [--prompt TEXT]\n"
		"              [--max-tokens N] [--id ID] [--purpose P]\n");
	return RUN_USAGE;
}

static int read_job(const char *path, struct job **ret, char *err, size_t errlen)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	if (fd < 0) {
		snprintf(err, errlen, "job file: %s", strerror(errno));
		return -errno;
	}
	_cleanup_erase_ char *buf = malloc(JOB_MAX_BYTES + 1);
	if (!buf)
		return -ENOMEM;
	size_t n = 0;
	for (;;) {
		ssize_t k = read(fd, buf + n, JOB_MAX_BYTES + 1 - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			snprintf(err, errlen, "job file: %s", strerror(errno));
			return -errno;
		}
		if (k == 0)
			break;
		n += (size_t)k;
		if (n > JOB_MAX_BYTES) {
			snprintf(err, errlen, "job file: larger than %d bytes", JOB_MAX_BYTES);
			return -EFBIG;
		}
	}
	return job_parse(buf, n, ret, err, errlen);
}

int main(int argc, char **argv)
{
	const char *config = NULL, *status = NULL, *patient = NULL, *task = NULL, *model = NULL;
	const char *prompt = NULL, *id = NULL, *purpose = "treatment", *key_file = NULL;
	const char *runtime_file = NULL;
	const char *docs[JOB_MAX_DOCS];
	size_t ndocs = 0;
	long max_tokens = 256;
	static const struct option lo[] = {
		{ "config", required_argument, NULL, 'c' },   { "status", required_argument, NULL, 's' },
		{ "patient", required_argument, NULL, 'p' },  { "documents", required_argument, NULL, 'd' },
		{ "task", required_argument, NULL, 't' },     { "model", required_argument, NULL, 'm' },
		{ "prompt", required_argument, NULL, 'q' },   { "max-tokens", required_argument, NULL, 'n' },
		{ "id", required_argument, NULL, 'i' },       { "purpose", required_argument, NULL, 'u' },
		{ "key-file", required_argument, NULL, 'k' }, { "help", no_argument, NULL, 'h' },
		{ "runtime-file", required_argument, NULL, 'r' },
		{ 0 } };
	int ch;
	while ((ch = getopt_long(argc, argv, "h", lo, NULL)) != -1) {
		switch (ch) {
		case 'c': config = optarg; break;
		case 's': status = optarg; break;
		case 'p': patient = optarg; break;
		case 'd':
			if (ndocs == JOB_MAX_DOCS)
				return usage();
			docs[ndocs++] = optarg;
			break;
		case 't': task = optarg; break;
		case 'm': model = optarg; break;
		case 'q': prompt = optarg; break;
		case 'n': max_tokens = strtol(optarg, NULL, 10); break;
		case 'i': id = optarg; break;
		case 'u': purpose = optarg; break;
		case 'k': key_file = optarg; break;
		case 'r': runtime_file = optarg; break;
		default: return usage();
		}
	}
	bool manual = patient || ndocs || task || model;
	if (manual ? (optind != argc || !patient || !ndocs || !task || !model) : optind != argc - 1)
		return usage();
	if (sodium_init() < 0)
		return RUN_USAGE;
	cJSON_InitHooks(&(cJSON_Hooks){ .malloc_fn = wipe_malloc, .free_fn = wipe_free });
	/* plaintext passes through this process: no core dumps, no ptrace by other users */
	(void)setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 });
	(void)prctl(PR_SET_DUMPABLE, 0);

	char err[256] = "";
	/* The attempt's slots, before anything could initialise CUDA (the engine does, in the
	 * worker): the driver reads CUDA_VISIBLE_DEVICES once, at cuInit. Only this checked
	 * value is set; the file is never turned into environment as it is. */
	struct runfile rf = { 0 };
	if (runtime_file) {
		if (runfile_load(runtime_file, &rf, err, sizeof err) < 0) {
			fprintf(stderr, "gpurun: runtime file: %s\n", err);
			return RUN_USAGE;
		}
		if (rf.has_slots && setenv("CUDA_VISIBLE_DEVICES", rf.slots, 1) < 0) {
			fprintf(stderr, "gpurun: runtime file: CUDA_VISIBLE_DEVICES: %s\n", strerror(errno));
			return RUN_USAGE;
		}
	}
	struct runconf cfg;
	runconf_defaults(&cfg);
	if (!config)
		config = secure_getenv("GPURUN_CONFIG");
	if (!config)
		config = RUNCONF_DEFAULT_PATH;
	if (runconf_load(&cfg, config, err, sizeof err) < 0 || runconf_resolve(&cfg, err, sizeof err) < 0) {
		fprintf(stderr, "gpurun: config: %s\n", err);
		return RUN_USAGE;
	}
	if (key_file) {
		if (*key_file != '/' || strlen(key_file) >= sizeof cfg.key_file) {
			fprintf(stderr, "gpurun: --key-file: must be an absolute path\n");
			return RUN_USAGE;
		}
		snprintf(cfg.key_file, sizeof cfg.key_file, "%s", key_file);
	}
	_cleanup_job_ struct job *job = NULL;
	int r;
	if (manual) {
		char gen_id[40];
		if (!id) {
			snprintf(gen_id, sizeof gen_id, "manual-%llx-%d",
				 (unsigned long long)time(NULL), (int)getpid());
			id = gen_id;
		}
		cJSON *j = cJSON_CreateObject();
		cJSON_AddNumberToObject(j, "version", 1);
		cJSON_AddStringToObject(j, "id", id);
		cJSON_AddStringToObject(j, "patient", patient);
		cJSON *d = cJSON_AddArrayToObject(j, "documents");
		for (size_t i = 0; i < ndocs; i++)
			cJSON_AddItemToArray(d, cJSON_CreateString(docs[i]));
		cJSON_AddStringToObject(j, "task", task);
		if (prompt)
			cJSON_AddStringToObject(j, "prompt", prompt);
		cJSON_AddStringToObject(j, "model", model);
		cJSON_AddNumberToObject(j, "max_tokens", (double)max_tokens);
		char who[64];
		snprintf(who, sizeof who, "uid:%u (gpurun command line)", (unsigned)getuid());
		cJSON_AddStringToObject(j, "requested_by", who);
		cJSON_AddStringToObject(j, "purpose", purpose);
		char *txt = cJSON_PrintUnformatted(j);
		cJSON_Delete(j);
		if (!txt)
			return RUN_USAGE;
		r = job_parse(txt, strlen(txt), &job, err, sizeof err);
		phi_erase_free(txt);
	} else {
		r = read_job(argv[optind], &job, err, sizeof err);
	}
	if (r < 0) {
		/* job_parse's messages name the field and the problem, never the value */
		fprintf(stderr, "gpurun: job: %s\n", err);
		return RUN_USAGE;
	}
	if (!status)
		status = secure_getenv("SPOOLD_STATUS_FILE");
	const char *hook = secure_getenv("GPURUN_TEST_STOP");
	struct runner_opts o = {
		.cfg = &cfg,
		.job = job,
		.status_path = status && *status ? status : NULL,
		/* the runtime file's attempt name (gpurun@), else spoold's variable (local, Slurm) */
		.attempt_name = rf.has_attempt ? rf.attempt : secure_getenv("SPOOLD_NAME"),
		.stop_in_inference = hook && strstr(hook, "inference"),
		.stop_before_scrub = hook && strstr(hook, "before-scrub"),
		.stop_after_scrub = hook && strstr(hook, "after-scrub"),
		.stop_in_results = hook && strstr(hook, "results"),
	};
	const char *once = secure_getenv("GPURUN_TEST_STOP_ONCE");
	if (hook && once && *once) {
		/* the hook fires for the first attempt only: the file is its token */
		if (unlink(once) < 0)
			o.stop_in_inference = o.stop_before_scrub = o.stop_after_scrub = o.stop_in_results = false;
	}
	return runner_run(&o);
}
