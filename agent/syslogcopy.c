#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "agent/syslogcopy.h"
#include "common/log.h"

/* How often a missing syslog socket is looked for again. */
#define RECHECK_SEC 10

struct syslog_copy {
	struct sockaddr_un addr;
	char ident[32];
	char prefix[32];
	int pid;
	int fd;			/* -1: not connected */
	int64_t tried;		/* when a connect last failed; 0: never */
	unsigned long dropped;
};

int syslog_copy_open(const char *path, const char *ident, const char *prefix,
	struct syslog_copy **out)
{
	struct syslog_copy *s = calloc(1, sizeof(*s));

	if (!s)
		return -ENOMEM;
	s->addr.sun_family = AF_UNIX;
	snprintf(s->addr.sun_path, sizeof(s->addr.sun_path), "%s", path);
	snprintf(s->ident, sizeof(s->ident), "%s", ident);
	snprintf(s->prefix, sizeof(s->prefix), "%s", prefix);
	s->pid = (int)getpid();
	s->fd = -1;
	*out = s;
	return 0;
}

static void disconnect(struct syslog_copy *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

void syslog_copy_close(struct syslog_copy **s)
{
	if (!s || !*s)
		return;
	disconnect(*s);
	free(*s);
	*s = NULL;
}

/* A clock stepped back tries again at once rather than after the step. */
bool syslog_copy_ready(struct syslog_copy *s, int64_t now)
{
	if (!s)
		return false;
	if (s->fd >= 0)
		return true;
	if (s->tried && now >= s->tried && now - s->tried < RECHECK_SEC)
		return false;
	s->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (s->fd >= 0 && connect(s->fd, (struct sockaddr *)&s->addr, sizeof(s->addr)) < 0)
		disconnect(s);
	s->tried = s->fd >= 0 ? 0 : now;
	return s->fd >= 0;
}

void syslog_copy_send(struct syslog_copy *s, int priority, const char *msg, int64_t now)
{
	time_t t = (time_t)now;
	char head[128], stamp[32] = "";
	struct iovec iov[2];
	struct msghdr mh = { .msg_iov = iov, .msg_iovlen = 2 };
	struct tm tm;
	int n;

	if (!syslog_copy_ready(s, now))
		return;
	if (localtime_r(&t, &tm))
		(void)strftime(stamp, sizeof(stamp), "%h %e %T", &tm);
	n = snprintf(head, sizeof(head), "<%d>%s %s[%d]: %s", LOG_AUTHPRIV | priority, stamp,
		s->ident, s->pid, s->prefix);
	iov[0] = (struct iovec){ head, (size_t)n };
	/* sendmsg only reads it. */
	iov[1] = (struct iovec){ (void *)(uintptr_t)msg, strlen(msg) };
	for (int attempt = 0; attempt < 2; attempt++) {
		if (sendmsg(s->fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0) {
			if (s->dropped)
				log_warn("audit: %lu copies to syslog dropped: its socket was full "
					"(the trail has them)", s->dropped);
			s->dropped = 0;
			return;
		}
		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == ENOBUFS)
			break;
		/* The daemon restarted (a new socket at the path): connected again, once. */
		disconnect(s);
		if (attempt || !syslog_copy_ready(s, now))
			return;
	}
	s->dropped++;
}

unsigned long syslog_copy_dropped(const struct syslog_copy *s)
{
	return s->dropped;
}
