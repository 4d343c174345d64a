/* spoolctl: submit, list, show, cancel, retry and status of spoold jobs. It talks to spoold
 * only through the spool: job files go tmp/ -> incoming/ by rename, operator requests are
 * files in ctl/ (cancel.<id>, retry.<id>). */
#include <dirent.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "spoold/config.h"
#include "spoold/job.h"
#include "spoold/jrec.h"
#include "spoold/spool.h"

static void usage(FILE *f)
{
	fprintf(f, "usage: spoolctl [--config FILE] [--spool DIR] COMMAND\n"
		   "  submit FILE...   validate and drop job files into incoming/\n"
		   "  list             one line per job: id, state, priority, tier, attempt, reason\n"
		   "  show ID          the job's journal record (and result record when it ended)\n"
		   "  cancel ID        cancel a queued or running job\n"
		   "  retry ID         queue a failed job again\n"
		   "  status           counts per directory and the metrics file\n");
}

/* Write data into tmp/, fsync, then rename into dir/name without replacing. */
static int drop(struct spool *s, enum spool_dir dir, const char *name, const void *data, size_t len)
{
	char tmp[160];
	snprintf(tmp, sizeof tmp, "spoolctl.%d.%s", (int)getpid(), name);
	_cleanup_close_ int fd = openat(s->d[SD_TMP], tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0640);
	if (fd < 0)
		return phi_neg_errno();
	if (write(fd, data, len) != (ssize_t)len || fsync(fd) < 0) {
		int r = phi_neg_errno();
		(void)unlinkat(s->d[SD_TMP], tmp, 0);
		return r;
	}
	if (renameat2(s->d[SD_TMP], tmp, s->d[dir], name, RENAME_NOREPLACE) < 0) {
		int r = phi_neg_errno();
		(void)unlinkat(s->d[SD_TMP], tmp, 0);
		return r;
	}
	return spool_fsync_dir(s->d[dir]);
}

static int cmd_submit(struct spool *s, const struct config *c, int argc, char **argv)
{
	int rc = 0;
	for (int i = 0; i < argc; i++) {
		_cleanup_buf_ struct phi_buf b = { 0 };
		int r = spool_read_file(AT_FDCWD, argv[i], c->max_job_bytes, &b, NULL, false);
		if (r < 0) {
			fprintf(stderr, "spoolctl: %s: %s\n", argv[i], strerror(-r));
			rc = 1;
			continue;
		}
		_cleanup_job_ struct job *j = NULL;
		char err[JOB_ERR_MAX];
		if (job_parse(b.p, b.len, &j, err, sizeof err) < 0) {
			fprintf(stderr, "spoolctl: %s: %s\n", argv[i], err);
			rc = 1;
			continue;
		}
		char name[JOB_ID_MAX_NAME];
		snprintf(name, sizeof name, "%s.json", j->id);
		r = drop(s, SD_INCOMING, name, b.p, b.len);
		if (r < 0) {
			fprintf(stderr, "spoolctl: %s: %s\n", argv[i],
				r == -EEXIST ? "a file for this id is already waiting in incoming/" : strerror(-r));
			rc = 1;
			continue;
		}
		printf("%s\n", j->id);
	}
	return rc;
}

static int cmd_request(struct spool *s, const char *op, const char *id)
{
	if (job_id_valid(id) < 0) {
		fprintf(stderr, "spoolctl: not a job id\n");
		return 2;
	}
	struct jrec r;
	if (spool_journal_load(s, id, &r) < 0) {
		fprintf(stderr, "spoolctl: no job %s\n", id);
		return 1;
	}
	char name[96];
	snprintf(name, sizeof name, "%s.%s", op, id);
	int e = drop(s, SD_CTL, name, "", 0);
	if (e < 0 && e != -EEXIST) {
		fprintf(stderr, "spoolctl: %s\n", strerror(-e));
		return 1;
	}
	printf("%s requested for %s (state %s)\n", op, id, jstate_name(r.state));
	return 0;
}

static const char *tier_name(int t)
{
	return t == 0 ? "small" : t == 1 ? "medium" : t == 2 ? "large" : "-";
}

static int cmd_list(struct spool *s)
{
	static const enum spool_dir dirs[] = { SD_QUEUE, SD_ACTIVE, SD_DONE, SD_FAILED };
	printf("%-24s %-9s %-4s %-6s %-7s %s\n", "ID", "STATE", "PRIO", "TIER", "ATTEMPT", "REASON");
	for (size_t k = 0; k < ARRAY_SIZE(dirs); k++) {
		DIR *d = fdopendir(openat(s->d[dirs[k]], ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
		if (!d)
			continue;
		struct dirent *de;
		while ((de = readdir(d))) {
			size_t n = strlen(de->d_name);
			if (de->d_name[0] == '.' || n < 6 || strcmp(de->d_name + n - 5, ".json") ||
			    strstr(de->d_name, ".result.json"))
				continue;
			char id[JOB_ID_MAX + 1];
			if (n - 5 > JOB_ID_MAX)
				continue;
			memcpy(id, de->d_name, n - 5);
			id[n - 5] = 0;
			struct jrec r;
			if (spool_journal_load(s, id, &r) < 0) {
				printf("%-24s %-9s\n", id, "?");
				continue;
			}
			printf("%-24s %-9s %-4d %-6s %-7u %s%s\n", r.id, jstate_name(r.state), r.priority,
			       tier_name(r.tier), r.attempt, r.deferred && r.state == JS_QUEUED ? "deferred (budget) " : "",
			       r.reason);
		}
		closedir(d);
	}
	return 0;
}

static int cmd_show(struct spool *s, const char *id)
{
	struct jrec r;
	if (job_id_valid(id) < 0 || spool_journal_load(s, id, &r) < 0) {
		fprintf(stderr, "spoolctl: no job %s\n", id);
		return 1;
	}
	_cleanup_free_ char *txt = NULL;
	if (jrec_format(&r, true, &txt) < 0)
		return 1;
	printf("%s\n", txt);
	return 0;
}

static size_t count(int dfd, const char *suffix)
{
	DIR *d = fdopendir(openat(dfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC));
	size_t c = 0;
	if (!d)
		return 0;
	struct dirent *de;
	while ((de = readdir(d))) {
		size_t n = strlen(de->d_name), l = strlen(suffix);
		if (de->d_name[0] != '.' && n > l && !strcmp(de->d_name + n - l, suffix) &&
		    !(l == 5 && strstr(de->d_name, ".result.json")))
			c++;
	}
	closedir(d);
	return c;
}

static int cmd_status(struct spool *s, const struct config *c)
{
	printf("incoming %zu\nqueue %zu\nactive %zu\ndone %zu\nfailed %zu\nrejected %zu\n",
	       count(s->d[SD_INCOMING], ""), count(s->d[SD_QUEUE], ".json"),
	       count(s->d[SD_ACTIVE], ".json"), count(s->d[SD_DONE], ".json"),
	       count(s->d[SD_FAILED], ".json"), count(s->d[SD_REJECTED], ".reason"));
	if (c->metrics_file[0]) {
		FILE *f = fopen(c->metrics_file, "re");
		if (f) {
			char line[512];
			while (fgets(line, sizeof line, f))
				if (line[0] != '#')
					fputs(line, stdout);
			fclose(f);
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "spool", required_argument, NULL, 's' },
		{ "help", no_argument, NULL, 'h' },
		{ 0 },
	};
	const char *cfg_path = NULL, *spool = NULL;
	int c;
	while ((c = getopt_long(argc, argv, "+c:s:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			cfg_path = optarg;
			break;
		case 's':
			spool = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	struct config cfg;
	char err[256];
	config_defaults(&cfg);
	if (cfg_path || access("/etc/phifs/spoold.conf", F_OK) == 0)
		if (config_load(&cfg, cfg_path ? cfg_path : "/etc/phifs/spoold.conf", err, sizeof err) < 0) {
			fprintf(stderr, "spoolctl: %s\n", err);
			return 2;
		}
	if (spool)
		snprintf(cfg.spool_dir, sizeof cfg.spool_dir, "%s", spool);
	struct spool s;
	int r = spool_open(&s, cfg.spool_dir, false, false);
	if (r < 0) {
		fprintf(stderr, "spoolctl: %s: %s\n", cfg.spool_dir, strerror(-r));
		return 1;
	}
	const char *cmd = argv[optind];
	int n = argc - optind - 1;
	char **rest = argv + optind + 1;
	if (!strcmp(cmd, "submit") && n >= 1)
		r = cmd_submit(&s, &cfg, n, rest);
	else if (!strcmp(cmd, "list") && n == 0)
		r = cmd_list(&s);
	else if (!strcmp(cmd, "show") && n == 1)
		r = cmd_show(&s, rest[0]);
	else if ((!strcmp(cmd, "cancel") || !strcmp(cmd, "retry")) && n == 1)
		r = cmd_request(&s, cmd, rest[0]);
	else if (!strcmp(cmd, "status") && n == 0)
		r = cmd_status(&s, &cfg);
	else {
		usage(stderr);
		r = 2;
	}
	spool_close(&s);
	return r;
}
