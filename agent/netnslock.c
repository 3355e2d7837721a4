/* netnslock: one jitd per network namespace, held as an abstract unix socket. */
#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/listener.h>

#include "agent/netnslock.h"
#include "agent/sockowner.h"

/* Connections at once that ask for the pid: each waits only until the loop accepts it. */
#define BACKLOG 16
/* Out of descriptors, the listener rests this long rather than wake the loop at once again. */
#define REST_SEC 1
/* A name in use whose holder was not seen is asked again after this long. */
#define RETRY_US 100000

struct netnslock {
	int fd;				/* until the listener has it */
	struct evconnlistener *lev;
	struct event *rest;
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
 * The holder's credentials as it had them when it listened: 0 and *cred, -ECONNREFUSED (no
 * one listens there), -EAGAIN (its backlog is full) or another -errno. What it says of itself
 * is only believed on a kernel that cannot say who owns the socket.
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

/*
 * Who holds the name: 0 and *who (held false when no socket listens or is bound on it), or
 * -errno. The kernel says whose socket it is. When it cannot (no unix_diag, or before Linux
 * 5.3), the credentials the holder listened with stand in, which the kernel also keeps; a
 * holder that does not answer (its backlog full) is then held by whoever: unsure.
 */
static int who_holds(struct netnslock_who *who)
{
	struct ucred cred = { 0 };
	uid_t uid = (uid_t)-1;
	int ret = sockowner_abstract_uid(NETNSLOCK_NAME, &uid), asked = ask_holder(&cred);

	*who = (struct netnslock_who){ .pid = asked ? 0 : cred.pid };
	if (!ret) {
		who->held = true;
		who->jitd = trusted(uid);
		return 0;
	}
	if (ret != -EOPNOTSUPP)
		return ret == -ENOENT ? 0 : ret;
	if (!asked) {
		who->held = true;
		who->jitd = trusted(cred.uid);
		return 0;
	}
	if (asked == -EAGAIN) {
		who->held = who->unsure = true;
		return 0;
	}
	return asked == -ECONNREFUSED ? 0 : asked;
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

static void rested_cb(evutil_socket_t fd, short what, void *arg)
{
	struct netnslock *l = arg;

	(void)fd;
	(void)what;
	(void)evconnlistener_enable(l->lev);
}

/* EMFILE and the like: a probe left unaccepted would wake the loop at once again. */
static void probe_error_cb(struct evconnlistener *lev, void *arg)
{
	struct netnslock *l = arg;
	const struct timeval tv = { REST_SEC, 0 };

	(void)evconnlistener_disable(lev);
	if (evtimer_add(l->rest, &tv))
		(void)evconnlistener_enable(lev);
}

int netnslock_take(struct event_base *base, struct netnslock **out, struct netnslock_who *who)
{
	struct netnslock *l = NULL;
	struct sockaddr_un a;
	socklen_t len = lock_addr(&a);
	int ret;

	*out = NULL;
	*who = (struct netnslock_who){ 0 };
	if (!(l = calloc(1, sizeof(*l))))
		return -ENOMEM;
	if ((l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
		ret = -errno;
		goto fail;
	}
	for (int attempt = 0; bind(l->fd, (struct sockaddr *)&a, len); attempt++) {
		if ((ret = -errno) != -EADDRINUSE || (ret = who_holds(who)))
			goto fail;
		if (who->jitd) {
			ret = -EADDRINUSE;
			goto fail;
		}
		/*
		 * No holder seen: it went meanwhile, or (where the kernel cannot say whose a
		 * socket is) a jitd is between its bind and its listen. Once more, a little later.
		 */
		if (!who->held && !attempt) {
			(void)usleep(RETRY_US);
			continue;
		}
		/* Another user's, a socket bound and connected elsewhere, or unsure: not a jitd. */
		who->held = true;
		netnslock_release(&l);
		return 0;
	}
	/* It listens on the bound socket; from here on the socket is the listener's to close. */
	errno = 0;
	if (!(l->rest = evtimer_new(base, rested_cb, l)) ||
		!(l->lev = evconnlistener_new(base, probe_cb, l, LEV_OPT_CLOSE_ON_FREE |
			LEV_OPT_CLOSE_ON_EXEC, BACKLOG, l->fd))) {
		ret = errno ? -errno : -ENOMEM;
		goto fail;
	}
	l->fd = -1;
	evconnlistener_set_error_cb(l->lev, probe_error_cb);
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
	if ((*l)->rest)
		event_free((*l)->rest);
	if ((*l)->fd >= 0)
		close((*l)->fd);
	free(*l);
	*l = NULL;
}

int netnslock_holder(struct netnslock_who *who)
{
	return who_holds(who);
}

const char *netnslock_pid_text(const struct netnslock_who *who, char *buf, size_t len)
{
	if (who->pid > 0)
		snprintf(buf, len, "pid %d", (int)who->pid);
	else
		snprintf(buf, len, "its pid unknown");
	return buf;
}
