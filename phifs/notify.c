/* notify.c: sd_notify over AF_UNIX. The address length is offsetof(sun_path) + length: with
 * sizeof(struct sockaddr_un) an abstract name would carry trailing NULs and not match. */
#include "notify.h"

#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "util.h"

int phi_notify_send(const char *path, const char *msg)
{
	if (!path || !*path)
		return 0;
	if (!msg)
		return -EINVAL;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(path);
	if ((path[0] != '/' && path[0] != '@') || n < 2 || n >= sizeof sa.sun_path)
		return -EINVAL;
	memcpy(sa.sun_path, path, n);
	if (sa.sun_path[0] == '@')
		sa.sun_path[0] = 0;
	_cleanup_close_ int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return phi_neg_errno();
	if (connect(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)) < 0)
		return phi_neg_errno();
	size_t l = strlen(msg);
	ssize_t w = send(fd, msg, l, MSG_NOSIGNAL);
	if (w < 0)
		return phi_neg_errno();
	return (size_t)w == l ? 1 : -EIO;
}

int phi_notify_watchdog_usec(const char *usec, const char *pid, pid_t self, uint64_t *ret_usec)
{
	uint64_t v = 0, p;
	if (usec && *usec) {
		if (phi_parse_u64(usec, UINT64_MAX / 2, &v) < 0)
			return -EINVAL;
		if (pid && *pid) {
			if (phi_parse_u64(pid, UINT32_MAX, &p) < 0)
				return -EINVAL;
			if (p != (uint64_t)self)
				v = 0; /* meant for another process (our parent, say) */
		}
	}
	*ret_usec = v;
	return 0;
}
