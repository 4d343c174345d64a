/* test-notify.c: phi_notify_send() against a real AF_UNIX datagram listener, on a path and
 * on an abstract address bound with exactly offsetof(sun_path) + length (the address that
 * systemd binds); phi_notify_watchdog_usec(). */
#include <stddef.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "phifs/notify.h"
#include "phifs/util.h"
#include "test.h"

/* Bind a datagram socket at addr ("/path" or "@abstract") the way the service manager does. */
static int listen_at(const char *addr)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t n = strlen(addr);
	CHECK(n < sizeof sa.sun_path);
	memcpy(sa.sun_path, addr, n);
	if (addr[0] == '@')
		sa.sun_path[0] = 0;
	else
		(void)unlink(addr);
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	CHECK(fd >= 0);
	CHECK_OK(bind(fd, (struct sockaddr *)&sa, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n)));
	/* a bounded wait, so that a lost datagram fails the test instead of hanging it */
	struct timeval tv = { .tv_sec = 10 };
	CHECK_OK(setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv));
	return fd;
}

static void expect(int fd, const char *want)
{
	char buf[4096];
	ssize_t n = recv(fd, buf, sizeof buf - 1, 0);
	CHECK(n >= 0);
	buf[n] = 0;
	if (strcmp(buf, want)) {
		fprintf(stderr, "got '%s', want '%s'\n", buf, want);
		CHECK(0);
	}
}

static void roundtrip(const char *addr)
{
	_cleanup_close_ int fd = listen_at(addr);
	CHECK_EQ(phi_notify_send(addr, "READY=1\nSTATUS=mounted"), 1);
	expect(fd, "READY=1\nSTATUS=mounted");
	CHECK_EQ(phi_notify_send(addr, "WATCHDOG=1"), 1);
	expect(fd, "WATCHDOG=1");
	CHECK_EQ(phi_notify_send(addr, "STOPPING=1"), 1);
	expect(fd, "STOPPING=1");
	if (addr[0] == '/')
		CHECK_OK(unlink(addr));
}

int main(void)
{
	char path[108];
	/* not under systemd: nothing to do */
	CHECK_EQ(phi_notify_send(NULL, "READY=1"), 0);
	CHECK_EQ(phi_notify_send("", "READY=1"), 0);
	/* neither a path nor an abstract address; too long */
	CHECK_EQ(phi_notify_send("relative/sock", "READY=1"), -EINVAL);
	CHECK_EQ(phi_notify_send("@", "READY=1"), -EINVAL);
	char longp[200];
	memset(longp, 'a', sizeof longp - 1);
	longp[0] = '/';
	longp[sizeof longp - 1] = 0;
	CHECK_EQ(phi_notify_send(longp, "READY=1"), -EINVAL);

	snprintf(path, sizeof path, "/tmp/phi-test-notify.%d", (int)getpid());
	roundtrip(path);
	/* nobody listens any more */
	CHECK_EQ(phi_notify_send(path, "READY=1"), -ENOENT);

	snprintf(path, sizeof path, "@phi-test-notify.%d", (int)getpid());
	roundtrip(path);
	/* an abstract name is exact: a listener on a longer name does not get it */
	{
		char longer[120];
		snprintf(longer, sizeof longer, "%sx", path);
		_cleanup_close_ int fd = listen_at(longer);
		CHECK(fd >= 0);
		CHECK_EQ(phi_notify_send(path, "READY=1"), -ECONNREFUSED);
	}

	/* watchdog period */
	uint64_t u = 7;
	CHECK_OK(phi_notify_watchdog_usec(NULL, NULL, 42, &u));
	CHECK_EQ(u, 0);
	CHECK_OK(phi_notify_watchdog_usec("30000000", NULL, 42, &u));
	CHECK_EQ(u, 30000000);
	CHECK_OK(phi_notify_watchdog_usec("30000000", "42", 42, &u));
	CHECK_EQ(u, 30000000);
	CHECK_OK(phi_notify_watchdog_usec("30000000", "41", 42, &u)); /* another process's */
	CHECK_EQ(u, 0);
	u = 9;
	CHECK_EQ(phi_notify_watchdog_usec("30s", NULL, 42, &u), -EINVAL);
	CHECK_EQ(u, 9); /* untouched on failure */
	CHECK_EQ(phi_notify_watchdog_usec("1000", "x", 42, &u), -EINVAL);
	CHECK_EQ(u, 9);
	puts("test-notify: ok");
	return 0;
}
