/* prov.c: helpers shared by the backends. */
#include "prov.h"

#include <signal.h>
#include <stdio.h>
#include <sys/prctl.h>
#include <sys/wait.h>

void prov_name(const char *id, uint32_t attempt, char out[96])
{
	snprintf(out, 96, "spoold-%s.%u", id, attempt);
}

void prov_free(struct prov *p)
{
	if (p && p->ops->free)
		p->ops->free(p);
}

int proc_starttime(int64_t pid, uint64_t *ret_start, bool *ret_zombie)
{
	char path[64];
	snprintf(path, sizeof path, "/proc/%lld/stat", (long long)pid);
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return phi_neg_errno();
	char buf[1024];
	ssize_t n = read(fd, buf, sizeof buf - 1);
	if (n <= 0)
		return -EIO;
	buf[n] = 0;
	char *p = strrchr(buf, ')'); /* comm may hold spaces and ')' */
	if (!p || p[1] != ' ')
		return -EBADMSG;
	p += 2;
	char state = *p;
	/* fields after ')' start at 3 (state); starttime is field 22 */
	for (int f = 3; f < 22; f++) {
		p = strchr(p, ' ');
		if (!p)
			return -EBADMSG;
		p++;
	}
	uint64_t st = 0;
	for (; *p >= '0' && *p <= '9'; p++)
		st = st * 10 + (uint64_t)(*p - '0');
	*ret_start = st;
	*ret_zombie = state == 'Z' || state == 'X';
	return 0;
}

int prov_run_cmd(char *const argv[], char **ret_out, size_t max)
{
	return prov_run_cmd_env(argv, NULL, ret_out, max);
}

int prov_run_cmd_env(char *const argv[], char *const env[], char **ret_out, size_t max)
{
	int pfd[2];
	if (pipe2(pfd, O_CLOEXEC) < 0)
		return phi_neg_errno();
	pid_t pid = fork();
	if (pid < 0) {
		int r = phi_neg_errno();
		close(pfd[0]);
		close(pfd[1]);
		return r;
	}
	if (pid == 0) {
		/* a command must not outlive a killed spoold half-way (an sbatch in flight) */
		(void)prctl(PR_SET_PDEATHSIG, SIGKILL);
		sigset_t all;
		sigemptyset(&all);
		sigprocmask(SIG_SETMASK, &all, NULL);
		dup2(pfd[1], 1);
		int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
		if (nul >= 0)
			dup2(nul, 0);
		for (size_t i = 0; env && env[i]; i++)
			if (putenv(env[i]) < 0)
				_exit(127);
		execvp(argv[0], argv);
		_exit(127);
	}
	close(pfd[1]);
	struct phi_buf b;
	phi_buf_init(&b, max + 1);
	int r = 0;
	for (;;) {
		char tmp[4096];
		ssize_t n = read(pfd[0], tmp, sizeof tmp);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		if (r == 0 && phi_buf_append(&b, tmp, (size_t)n) < 0)
			r = -E2BIG; /* keep draining */
	}
	close(pfd[0]);
	int st;
	while (waitpid(pid, &st, 0) < 0)
		if (errno != EINTR) {
			phi_buf_done(&b);
			return phi_neg_errno();
		}
	if (r == 0)
		r = phi_buf_append(&b, "", 1);
	if (r < 0) {
		phi_buf_done(&b);
		return r;
	}
	if (ret_out)
		*ret_out = (char *)b.p;
	else
		phi_buf_done(&b);
	if (WIFSIGNALED(st))
		return -EINTR;
	return WEXITSTATUS(st);
}
