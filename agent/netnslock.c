/* netnslock: one jitd per network namespace, held as an abstract unix socket. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "agent/netnslock.h"

/* Probes at once: a few, since each waits in the backlog only until the loop accepts it. */
#define BACKLOG 16
/* A name bound but not yet listened on, asked again: 3 times, 50 ms apart. */
#define RETRIES 3
#define RETRY_US 50000

struct netnslock {
	int fd;				/* until the listener has it */
	struct evconnlistener *lev;
};

static socklen_t lock_addr(struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	/* sun_path[0] stays '\0': an abstract name, its length given, no terminator. */
	memcpy(a->sun_path + 1, NETNSLOCK_NAME, sizeof(NETNSLOCK_NAME) - 1);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof(NETNSLOCK_NAME));
}

/* A holder that may be a jitd: root, or the user this process runs as. */
static bool trusted(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/*
 * Who holds the name, as it was when it listened: 0 and *cred, -ECONNREFUSED (no one listens
 * there), -EAGAIN (its backlog is full) or another -errno.
 */
static int ask_holder(struct ucred *cred)
{
	struct sockaddr_un a;
	socklen_t len = lock_addr(&a), clen = sizeof(*cred);
	int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), ret = 0;

	if (fd < 0)
		return -errno;
	if (connect(fd, (struct sockaddr *)&a, len) ||
		getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &clen))
		ret = -errno;
	close(fd);
	return ret;
}

/* A probe has learnt who holds the name when it connected: nothing more to say. */
static void probe_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
	int socklen, void *arg)
{
	(void)lev;
	(void)sa;
	(void)socklen;
	(void)arg;
	close(fd);
}

int netnslock_take(struct event_base *base, struct netnslock **out, pid_t *holder,
	pid_t *squatter)
{
	struct netnslock *l = NULL;
	struct ucred cred = { 0 };
	struct sockaddr_un a;
	socklen_t len = lock_addr(&a);
	int ret;

	*out = NULL;
	*holder = *squatter = 0;
	if (!(l = calloc(1, sizeof(*l))))
		return -ENOMEM;
	if ((l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
		ret = -errno;
		goto fail;
	}
	for (int attempt = 0; bind(l->fd, (struct sockaddr *)&a, len); attempt++) {
		if ((ret = -errno) != -EADDRINUSE)
			goto fail;
		/*
		 * Taken. A jitd listens right after it binds: a name that refuses still may be
		 * one in between, asked again a little later. A jitd accepts its probes at once,
		 * so a full backlog is someone who does not: no jitd.
		 */
		for (int i = 0; (ret = ask_holder(&cred)) == -ECONNREFUSED && i < RETRIES; i++)
			(void)usleep(RETRY_US);
		if (ret && ret != -EAGAIN && ret != -ECONNREFUSED)
			goto fail;
		if (!ret && trusted(cred.uid)) {
			*holder = cred.pid;
			ret = -EADDRINUSE;
			goto fail;
		}
		/* Refused all along: its holder may have gone meanwhile. Once more, then no. */
		if (ret == -ECONNREFUSED && !attempt)
			continue;
		*squatter = ret ? -1 : cred.pid;
		netnslock_release(&l);
		return 0;
	}
	/* It listens on the bound socket; from here on the socket is the listener's to close. */
	errno = 0;
	if (!(l->lev = evconnlistener_new(base, probe_cb, NULL, LEV_OPT_CLOSE_ON_FREE |
			LEV_OPT_CLOSE_ON_EXEC, BACKLOG, l->fd))) {
		ret = errno ? -errno : -ENOMEM;
		goto fail;
	}
	l->fd = -1;
	*out = l;
	return 0;
fail:
	netnslock_release(&l);
	return ret;
}

void netnslock_release(struct netnslock **l)
{
	if (!*l)
		return;
	if ((*l)->lev)
		evconnlistener_free((*l)->lev);
	if ((*l)->fd >= 0)
		close((*l)->fd);
	free(*l);
	*l = NULL;
}

int netnslock_holder(pid_t *pid)
{
	struct ucred cred = { 0 };
	int ret = ask_holder(&cred);

	*pid = 0;
	if (ret == -ECONNREFUSED)
		return 0;
	/* Not to be asked: a jitd under a flood of probes looks so too. */
	if (ret == -EAGAIN)
		return 1;
	if (ret)
		return ret;
	*pid = cred.pid;
	return trusted(cred.uid) ? 1 : 0;
}
