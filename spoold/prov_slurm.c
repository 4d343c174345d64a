/* prov_slurm.c: the Slurm backend, over the CLI. sbatch --job-name=spoold-<id>.<attempt>
 * --gres=gpu:N --time=<lifetime> --no-requeue; state and exit codes from one squeue per tick
 * (all of spoold's jobs in one call), and sacct -c (jobcomp/filetxt, no slurmdbd) for a job
 * squeue no longer shows; scancel to cancel. Before any sbatch the name is looked up in that
 * tick's squeue, so a restarted spoold adopts what it had submitted instead of submitting it
 * twice. */
#include <stdio.h>

#include "prov.h"

#define SNAP_MAX 4096

struct sjob {
	char id[24];
	char name[96];
	char state[24];
	bool have_exit; /* exit_code/term_sig are known (squeue's exit_code, sacct's ExitCode) */
	int exit_code, term_sig;
};

struct slurm {
	struct sjob *snap;
	size_t n;
	bool have_snap;
};

static struct slurm *S(struct prov *p)
{
	return p->priv;
}

static void bin(struct prov *p, const char *tool, char out[CONFIG_PATH_MAX + 16])
{
	if (p->cfg->slurm_bin_dir[0])
		snprintf(out, CONFIG_PATH_MAX + 16, "%s/%s", p->cfg->slurm_bin_dir, tool);
	else
		snprintf(out, CONFIG_PATH_MAX + 16, "%s", tool);
}

enum exit_fmt {
	EXIT_NONE,   /* "id|name|state" */
	EXIT_STATUS, /* "id|name|state|<wait status>" (squeue -O exit_code: 768 = exit 3, 9 = SIGKILL) */
	EXIT_PAIR,   /* "id|name|state|<exit>:<signal>" (sacct ExitCode, scontrol) */
};

static bool parse_exit(const char *s, enum exit_fmt fmt, struct sjob *j)
{
	char *end;
	errno = 0;
	long a = strtol(s, &end, 10);
	if (errno || end == s || a < 0)
		return false;
	if (fmt == EXIT_STATUS) {
		if (*end && *end != '|' && *end != ' ')
			return false;
		j->exit_code = (int)((a >> 8) & 0xff);
		j->term_sig = (int)(a & 0x7f);
		return true;
	}
	if (*end != ':')
		return false;
	const char *b = end + 1;
	long c = strtol(b, &end, 10);
	if (errno || end == b || c < 0)
		return false;
	j->exit_code = (int)a;
	j->term_sig = (int)c;
	return true;
}

/* Parse "id|name|state[|exit]" lines (squeue, sacct) into v, keeping spoold's names only,
 * and only the name only when not NULL. */
static size_t parse_lines(char *out, struct sjob *v, size_t max, enum exit_fmt fmt, const char *only)
{
	size_t n = 0;
	char *save = NULL;
	for (char *line = strtok_r(out, "\n", &save); line && n < max; line = strtok_r(NULL, "\n", &save)) {
		char *a = strchr(line, '|'), *b = a ? strchr(a + 1, '|') : NULL;
		if (!a || !b)
			continue;
		char *c = strchr(b + 1, '|');
		*a = *b = 0;
		if (c)
			*c = 0;
		if (strncmp(a + 1, "spoold-", 7) != 0 || (only && strcmp(a + 1, only) != 0))
			continue;
		struct sjob *j = &v[n];
		*j = (struct sjob){ 0 };
		if (snprintf(j->id, sizeof j->id, "%s", line) >= (int)sizeof j->id ||
		    snprintf(j->name, sizeof j->name, "%s", a + 1) >= (int)sizeof j->name ||
		    snprintf(j->state, sizeof j->state, "%s", b + 1) >= (int)sizeof j->state)
			continue;
		char *sp = strchr(j->state, ' ');
		if (sp)
			*sp = 0; /* "CANCELLED by 0" */
		if (fmt != EXIT_NONE && c)
			j->have_exit = parse_exit(c + 1, fmt, j);
		n++;
	}
	return n;
}

static int slurm_refresh(struct prov *p)
{
	char exe[CONFIG_PATH_MAX + 16];
	bin(p, "squeue", exe);
	/* -O with a "|" suffix and no width: unpadded fields; exit_code is the wait status */
	char *argv[] = { exe, "-h", "-a", "-t", "all", "-O", "JobID:|,Name:|,State:|,exit_code:|", NULL };
	char *out = NULL;
	int r = prov_run_cmd(argv, &out, 4 << 20);
	if (r != 0) {
		free(out);
		S(p)->have_snap = false;
		return r < 0 ? r : -EIO;
	}
	S(p)->n = parse_lines(out, S(p)->snap, SNAP_MAX, EXIT_STATUS, NULL);
	S(p)->have_snap = true;
	free(out);
	return 0;
}

/* sacct -c (the jobcomp file) by name: the final state of a job squeue forgot. */
static int sacct_by_name(struct prov *p, const char *name, struct sjob *ret)
{
	char exe[CONFIG_PATH_MAX + 16], nm[128];
	bin(p, "sacct", exe);
	snprintf(nm, sizeof nm, "--name=%s", name);
	char *argv[] = { exe, "-c", "-n", "-P", "-S", "2000-01-01", nm, "-o", "JobID,JobName,State,ExitCode", NULL };
	char *out = NULL;
	int r = prov_run_cmd(argv, &out, 64 << 20); /* the whole jobcomp file: see below */
	if (r != 0) {
		free(out);
		return r < 0 ? r : -EIO;
	}
	/* sacct -c ignores --name (jobcomp/filetxt, 22.05: every job comes back), so the name is
	 * matched here; before, only the first 16 jobs of the file were looked at */
	struct sjob v[16];
	size_t n = parse_lines(out, v, 16, EXIT_PAIR, name);
	free(out);
	for (size_t i = n; i-- > 0;) /* the last line is the newest */
		if (!strcmp(v[i].name, name)) {
			*ret = v[i];
			return 0;
		}
	return -ENOENT;
}

static const struct sjob *snap_find(struct prov *p, const char *id, const char *name)
{
	const struct sjob *best = NULL;
	for (size_t i = 0; i < S(p)->n; i++) {
		const struct sjob *j = &S(p)->snap[i];
		if (id && id[0] ? !strcmp(j->id, id) : !strcmp(j->name, name))
			if (!best || strtoull(j->id, NULL, 10) < strtoull(best->id, NULL, 10))
				best = j;
	}
	return best;
}

/* The job in this tick's squeue snapshot (refreshed if there is none). */
static int find_snap(struct prov *p, const struct jrec *rec, struct sjob *ret)
{
	if (!S(p)->have_snap) {
		int r = slurm_refresh(p);
		if (r < 0)
			return r;
	}
	const struct sjob *j = snap_find(p, rec->slurm_id, rec->backend_id);
	if (!j)
		return -ENOENT;
	*ret = *j;
	return 0;
}

static int find(struct prov *p, const struct jrec *rec, struct sjob *ret)
{
	int r = find_snap(p, rec, ret);
	if (r != -ENOENT)
		return r;
	return sacct_by_name(p, rec->backend_id, ret);
}

static int exit_code(struct prov *p, const char *id, int *ret_exit, int *ret_sig)
{
	char exe[CONFIG_PATH_MAX + 16];
	bin(p, "scontrol", exe);
	char *argv[] = { exe, "show", "job", "-o", (char *)id, NULL };
	char *out = NULL;
	int r = prov_run_cmd(argv, &out, 1 << 20);
	const char *e = r == 0 && out ? strstr(out, " ExitCode=") : NULL;
	if (!e) {
		/* aged out of slurmctld: sacct -c has it */
		free(out);
		out = NULL;
		bin(p, "sacct", exe);
		char *av[] = { exe, "-c", "-n", "-P", "-S", "2000-01-01", "-j", (char *)id, "-o", "ExitCode", NULL };
		r = prov_run_cmd(av, &out, 1 << 20);
		if (r != 0 || !out || !out[0]) {
			free(out);
			return -ENOENT;
		}
		e = out;
	} else
		e += 10;
	int a = 0, b = 0;
	if (sscanf(e, "%d:%d", &a, &b) != 2) {
		free(out);
		return -EBADMSG;
	}
	free(out);
	*ret_exit = a;
	*ret_sig = b;
	return 0;
}

static int slurm_submit(struct prov *p, const struct prov_job *j, struct jrec *rec,
			prov_record_fn record, void *ud)
{
	struct sjob found;
	snprintf(rec->backend_id, sizeof rec->backend_id, "%s", j->name);
	rec->slurm_id[0] = 0;
	/* This tick's snapshot is enough, no squeue or sacct per submit: it was taken after
	 * this spoold started, so it shows whatever an earlier one submitted under this name
	 * unless that job ended more than MinJobAge ago; and such a name is never submitted
	 * again here: a fresh attempt's name is journalled (claim) before its first sbatch, and
	 * an attempt recovered without a Slurm id was looked up by poll (squeue, then sacct) in
	 * this tick before it was requeued as never started and relaunched. */
	if (find_snap(p, rec, &found) == 0) {
		/* submitted before a crash: adopt it, never submit twice */
		snprintf(rec->slurm_id, sizeof rec->slurm_id, "%s", found.id);
		return record(ud, rec);
	}
	const struct config *c = p->cfg;
	if (strchr(c->runner, '\'') || strchr(j->job_path, '\''))
		return -EINVAL;
	char exe[CONFIG_PATH_MAX + 16], name[128], gres[32], tm[32], out[CONFIG_PATH_MAX + 160],
		wrap[3 * CONFIG_PATH_MAX], part[96], e_job[CONFIG_PATH_MAX + 32], e_name[128],
		e_status[2 * CONFIG_PATH_MAX], e_grant[160];
	bin(p, "sbatch", exe);
	snprintf(name, sizeof name, "--job-name=%s", j->name);
	snprintf(gres, sizeof gres, "--gres=gpu:%u", j->gpus);
	snprintf(tm, sizeof tm, "--time=%llu", (unsigned long long)((j->lifetime_sec + 59) / 60));
	snprintf(out, sizeof out, "--output=%s/journal/%s.log", p->spool, j->name);
	snprintf(wrap, sizeof wrap, "exec '%s' '%s'", c->runner, j->job_path);
	/* The runner's variables go in sbatch's own environment, which --export=ALL passes on.
	 * Not --export=ALL,NAME=value: any --export but plain ALL makes sbatch (22.05) set
	 * SLURM_GET_USER_ENV=1, and slurmd then runs "su - <user> -c '... slurmstepd getenv'"
	 * (a login shell, the user's profile) before each launch, one launch at a time: one
	 * job every 1-3 s on the 2-core CI machine instead of tens per second. */
	snprintf(e_job, sizeof e_job, "SPOOLD_JOB_FILE=%s", j->job_path);
	snprintf(e_name, sizeof e_name, "SPOOLD_NAME=%s", j->name);
	snprintf(e_status, sizeof e_status, "SPOOLD_STATUS_FILE=%s/journal/%s.status.json", p->spool, j->name);
	snprintf(e_grant, sizeof e_grant, "SPOOLD_GRANT=%s", j->grant ? j->grant : "");
	char *env[] = { e_job, e_name, e_status, e_grant, NULL };
	snprintf(part, sizeof part, "--partition=%s", c->slurm_partition);
	char *argv[16];
	size_t k = 0;
	argv[k++] = exe;
	argv[k++] = "--parsable";
	argv[k++] = "--no-requeue"; /* at most once from Slurm's side; spoold decides retries */
	argv[k++] = name;
	argv[k++] = gres;
	argv[k++] = tm;
	argv[k++] = out;
	argv[k++] = "--export=ALL";
	if (c->slurm_partition[0])
		argv[k++] = part;
	argv[k++] = "--wrap";
	argv[k++] = wrap;
	argv[k] = NULL;
	char *o = NULL;
	int r = prov_run_cmd_env(argv, env, &o, 4096);
	if (r != 0) {
		free(o);
		return r < 0 ? r : -EIO;
	}
	char *semi = strpbrk(o, ";\n");
	if (semi)
		*semi = 0;
	if (!o[0] || strlen(o) >= sizeof rec->slurm_id) {
		free(o);
		return -EBADMSG;
	}
	snprintf(rec->slurm_id, sizeof rec->slurm_id, "%s", o);
	free(o);
	return record(ud, rec);
}

static int slurm_poll(struct prov *p, const struct jrec *rec, struct prov_result *ret)
{
	struct prov_result res = { .exit_status = -1 };
	struct sjob j;
	int r = find(p, rec, &j);
	if (r == -ENOENT) {
		res.st = rec->slurm_id[0] ? PS_LOST : PS_NONE;
		*ret = res;
		return 0;
	}
	if (r < 0)
		return r;
	snprintf(res.slurm_id, sizeof res.slurm_id, "%s", j.id);
	const char *s = j.state;
	if (!strcmp(s, "PENDING") || !strcmp(s, "CONFIGURING") || !strcmp(s, "REQUEUED") ||
	    !strcmp(s, "REQUEUE_HOLD") || !strcmp(s, "REQUEUE_FED") || !strcmp(s, "SUSPENDED") ||
	    !strcmp(s, "RESV_DEL_HOLD"))
		res.st = PS_PENDING;
	else if (!strcmp(s, "RUNNING") || !strcmp(s, "COMPLETING") || !strcmp(s, "STAGE_OUT") ||
		 !strcmp(s, "SIGNALING") || !strcmp(s, "RESIZING"))
		res.st = PS_RUNNING;
	else if (!strcmp(s, "NODE_FAIL") || !strcmp(s, "BOOT_FAIL"))
		res.st = PS_PROVFAIL;
	else if (!strcmp(s, "COMPLETED") || !strcmp(s, "FAILED") || !strcmp(s, "CANCELLED") ||
		 !strcmp(s, "TIMEOUT") || !strcmp(s, "DEADLINE") || !strcmp(s, "OUT_OF_MEMORY") ||
		 !strcmp(s, "PREEMPTED")) {
		res.st = PS_EXITED;
		res.cancelled = !strcmp(s, "CANCELLED");
		res.lifetime = !strcmp(s, "TIMEOUT") || !strcmp(s, "DEADLINE");
		int e = -1, sig = 0;
		if (j.have_exit) {
			e = j.exit_code;
			sig = j.term_sig;
			res.exit_status = e;
			res.term_signal = sig;
		} else if (exit_code(p, j.id, &e, &sig) == 0) {
			res.exit_status = e;
			res.term_signal = sig;
		}
		if (!strcmp(s, "COMPLETED"))
			res.exit_status = 0;
		else if (res.exit_status == 0 && !sig)
			res.exit_status = 1; /* FAILED/OOM with "0:0": not a success */
		if (!strcmp(s, "PREEMPTED") && !sig)
			res.term_signal = 15; /* preempted: retried like a killed runner */
	} else
		res.st = PS_RUNNING; /* an unknown state: keep watching */
	*ret = res;
	return 0;
}

static int slurm_cancel(struct prov *p, const struct jrec *rec)
{
	if (!rec->slurm_id[0])
		return -ESRCH;
	char exe[CONFIG_PATH_MAX + 16];
	bin(p, "scancel", exe);
	char *argv[] = { exe, (char *)rec->slurm_id, NULL };
	int r = prov_run_cmd(argv, NULL, 4096);
	return r == 0 ? 0 : r < 0 ? r : -EIO;
}

static int slurm_cleanup(struct prov *p, const struct jrec *rec)
{
	(void)p;
	(void)rec;
	return 0;
}

static bool slurm_capacity(struct prov *p, uint32_t gpus)
{
	(void)p;
	(void)gpus;
	return true; /* Slurm queues; max_instances bounds what spoold submits */
}

static void slurm_adopt(struct prov *p, const struct jrec *rec)
{
	(void)p;
	(void)rec;
}

static void slurm_free(struct prov *p)
{
	free(S(p)->snap);
	free(p->priv);
	free(p);
}

static const struct prov_ops slurm_ops = {
	.name = "slurm",
	.submit = slurm_submit,
	.poll = slurm_poll,
	.cancel = slurm_cancel,
	.cleanup = slurm_cleanup,
	.capacity = slurm_capacity,
	.adopt = slurm_adopt,
	.refresh = slurm_refresh,
	.free = slurm_free,
};

int prov_slurm_new(const struct config *c, const char *spool, struct prov **ret)
{
	struct prov *p = calloc(1, sizeof *p);
	struct slurm *s = calloc(1, sizeof *s);
	struct sjob *snap = calloc(SNAP_MAX, sizeof *snap);
	if (!p || !s || !snap) {
		free(p);
		free(s);
		free(snap);
		return -ENOMEM;
	}
	s->snap = snap;
	p->ops = &slurm_ops;
	p->cfg = c;
	p->priv = s;
	snprintf(p->spool, sizeof p->spool, "%s", spool);
	*ret = p;
	return 0;
}
