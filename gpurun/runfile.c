/* runfile.c: the runtime file of one attempt (runfile.h). */
#include "runfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

/* Slots as spoold hands them out (spoold/config.c set_slots): decimal 0..1023, no leading
 * zeros (CUDA would read "01" as 1, which would pass a repeat check on the text), no
 * repeats (a slot twice is a slot handed out twice), at most 64; "" = no GPU. */
static int slots_check(const char *s, size_t n)
{
	unsigned seen[(RUNFILE_SLOT_MAX + 1 + 31) / 32] = { 0 };
	size_t count = 0, i = 0;
	if (n == 0)
		return 0;
	for (;;) {
		size_t start = i;
		unsigned v = 0;
		while (i < n && s[i] >= '0' && s[i] <= '9') {
			v = v * 10 + (unsigned)(s[i] - '0');
			if (v > RUNFILE_SLOT_MAX)
				return -EINVAL;
			i++;
		}
		if (i == start || (s[start] == '0' && i - start > 1))
			return -EINVAL;
		if (++count > RUNFILE_SLOTS_MAX || (seen[v / 32] & (1u << (v % 32))))
			return -EINVAL;
		seen[v / 32] |= 1u << (v % 32);
		if (i == n)
			return 0;
		if (s[i] != ',')
			return -EINVAL;
		i++; /* a trailing comma leaves an empty slot: refused above */
	}
}

/* spoold's attempt names, spoold-<id>.<n> (spoold/prov.c prov_name): the job id charset
 * (spoold/job.c job_id_valid) and its length limit */
static int attempt_check(const char *s, size_t n)
{
	if (n == 0 || n > RUNFILE_ATTEMPT_MAX || s[0] == '.')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		char c = s[i];
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '_' ||
		      c == '.' || c == '-'))
			return -EINVAL;
	}
	return 0;
}

int runfile_slots_valid(const char *s)
{
	size_t n = s ? strnlen(s, RUNFILE_SLOTS_LEN) : RUNFILE_SLOTS_LEN;
	return n < RUNFILE_SLOTS_LEN ? slots_check(s, n) : -EINVAL;
}

int runfile_attempt_valid(const char *s)
{
	return s ? attempt_check(s, strnlen(s, RUNFILE_ATTEMPT_MAX + 1)) : -EINVAL;
}

int runfile_parse(const char *buf, size_t len, struct runfile *ret, char *err, size_t errlen)
{
	struct runfile rf = { 0 };
	if (len > RUNFILE_MAX_BYTES)
		return phi_errf(err, errlen, -EFBIG, "larger than %d bytes", RUNFILE_MAX_BYTES);
	size_t pos = 0;
	unsigned line = 0;
	while (pos < len) {
		line++;
		/* one line: [pos, end), end at '\n' or at len */
		const char *nl = memchr(buf + pos, '\n', len - pos);
		size_t end = nl ? (size_t)(nl - buf) : len;
		const char *l = buf + pos;
		size_t n = end - pos;
		pos = nl ? end + 1 : len;
		/* printable ASCII only: no NUL, CR, tab or escape, nothing a log or a shell could
		 * take for something else */
		for (size_t i = 0; i < n; i++)
			if ((unsigned char)l[i] < 0x20 || (unsigned char)l[i] > 0x7e)
				return phi_errf(err, errlen, -EINVAL, "line %u: a byte that is not printable ASCII", line);
		if (n == 0 || l[0] == '#')
			continue;
		const char *eq = memchr(l, '=', n);
		if (!eq)
			return phi_errf(err, errlen, -EINVAL, "line %u: not key=value", line);
		size_t kn = (size_t)(eq - l);
		const char *v = eq + 1;
		size_t vn = n - kn - 1;
		if (kn == strlen("cuda_visible_devices") && !memcmp(l, "cuda_visible_devices", kn)) {
			if (rf.has_slots)
				return phi_errf(err, errlen, -EINVAL, "line %u: cuda_visible_devices: given twice", line);
			if (vn >= sizeof rf.slots || slots_check(v, vn) < 0)
				return phi_errf(err, errlen, -EINVAL,
					    "line %u: cuda_visible_devices: not a list of GPU slots (0-%d, comma-separated, at most %d)",
					    line, RUNFILE_SLOT_MAX, RUNFILE_SLOTS_MAX);
			memcpy(rf.slots, v, vn);
			rf.slots[vn] = 0;
			rf.has_slots = true;
		} else if (kn == strlen("attempt") && !memcmp(l, "attempt", kn)) {
			if (rf.has_attempt)
				return phi_errf(err, errlen, -EINVAL, "line %u: attempt: given twice", line);
			if (attempt_check(v, vn) < 0)
				return phi_errf(err, errlen, -EINVAL,
					    "line %u: attempt: not an attempt name ([A-Za-z0-9_.-], 1-%d, no leading '.')",
					    line, RUNFILE_ATTEMPT_MAX);
			memcpy(rf.attempt, v, vn);
			rf.attempt[vn] = 0;
			rf.has_attempt = true;
		} else {
			/* the name is not repeated: it is another user's text */
			return phi_errf(err, errlen, -EINVAL,
				    "line %u: unknown key (only cuda_visible_devices and attempt)", line);
		}
	}
	*ret = rf;
	return 0;
}

int runfile_load(const char *path, struct runfile *ret, char *err, size_t errlen)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		int e = errno;
		return phi_errf(err, errlen, -e, "%s", strerror(e));
	}
	struct stat st;
	if (fstat(fd, &st) < 0) {
		int e = errno;
		return phi_errf(err, errlen, -e, "%s", strerror(e));
	}
	/* not a FIFO or a device that would block or never end */
	if (!S_ISREG(st.st_mode))
		return phi_errf(err, errlen, -EINVAL, "not a regular file");
	char buf[RUNFILE_MAX_BYTES + 1];
	size_t n = 0;
	int r = phi_read_small(fd, buf, sizeof buf, &n);
	if (r == -EFBIG)
		return phi_errf(err, errlen, r, "larger than %d bytes", RUNFILE_MAX_BYTES);
	if (r < 0)
		return phi_errf(err, errlen, r, "%s", strerror(-r));
	return runfile_parse(buf, n, ret, err, errlen);
}
