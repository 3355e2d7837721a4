#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#ifdef HAVE_LIBSYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "agent/sdnotify.h"

#ifdef HAVE_LIBSYSTEMD

int sdnotify_send(const char *state)
{
	int ret = sd_notify(0, state);

	return ret < 0 ? ret : 0;
}

uint64_t sdnotify_watchdog_usec(void)
{
	uint64_t usec = 0;

	return sd_watchdog_enabled(0, &usec) > 0 ? usec : 0;
}

#else

int sdnotify_send(const char *state)
{
	const char *path = getenv("NOTIFY_SOCKET");
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	socklen_t len;
	int fd, ret = 0;

	if (!path || !*path)
		return 0;
	/* A path needs its NUL in sun_path; an abstract name has none and may fill it. */
	if ((path[0] != '/' && path[0] != '@') || strlen(path) > sizeof(sun.sun_path) ||
		(path[0] == '/' && strlen(path) == sizeof(sun.sun_path)))
		return -EINVAL;
	memcpy(sun.sun_path, path, strlen(path));
	/* A leading '@' names the abstract namespace, whose addresses start with a NUL byte. */
	if (path[0] == '@')
		sun.sun_path[0] = '\0';
	len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(path));
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (sendto(fd, state, strlen(state), MSG_NOSIGNAL, (struct sockaddr *)&sun, len) < 0)
		ret = -errno;
	close(fd);
	return ret;
}

/* WATCHDOG_PID, when set, names the process the interval is for (not a child of it). */
uint64_t sdnotify_watchdog_usec(void)
{
	const char *usec = getenv("WATCHDOG_USEC"), *pid = getenv("WATCHDOG_PID");
	unsigned long long v;
	char *end;

	if (!usec || !*usec)
		return 0;
	if (pid && *pid) {
		errno = 0;
		v = strtoull(pid, &end, 10);
		if (errno || *end || v != (unsigned long long)getpid())
			return 0;
	}
	errno = 0;
	v = strtoull(usec, &end, 10);
	return errno || *end ? 0 : (uint64_t)v;
}

#endif
