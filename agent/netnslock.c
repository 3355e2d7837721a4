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
#include "common/log.h"

/* Connections at once that ask for the pid: each waits only until the loop accepts it. */
#define BACKLOG 16
/* Out of descriptors, the listener rests this long rather than wake the loop at once again. */
#define REST_SEC 1
/* A name in use whose holder was not seen is asked again after this long. */
#define RETRY_US 100000

struct netnslock {
	struct event_base *base;
	int fd;				/* until the listener has it */
	struct evconnlistener *lev;	/* NULL while another holds the name */
	struct event *rest;
	struct event *retry;		/* while another holds the name */
	unsigned retry_sec;
	bool bound;			/* the name is ours, the listener not yet */
	pid_t rival;			/* another jitd that took the name, pid + 1; 0: none */
};

static socklen_t lock_addr(struct sockaddr_un *a)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	/* sun_path[0] stays '\0': an abstract name, its length given, no terminator. */
	memcpy(a->sun_path + 1, NETNSLOCK_NAME, sizeof(NETNSLOCK_NAME) - 1);
	return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + sizeof(NETNSLOCK_NAME));
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
 * -errno. The kernel says whose socket it is. When it cannot (no unix_diag, before Linux 5.3,
 * or the query refused: an LSM's EPERM), the credentials the holder listened with stand in,
 * which the kernel also keeps; a holder that does not answer (its backlog full) is then held
 * by whoever: unsure. Failing instead, any user's socket on the name kept jitd from starting.
 */
static int who_holds(struct netnslock_who *who)
{
	struct ucred cred = { 0 };
	uid_t uid = (uid_t)-1;
	int ret = sockowner_abstract_uid(NETNSLOCK_NAME, &uid), asked = ask_holder(&cred);

	*who = (struct netnslock_who){ .pid = asked ? 0 : cred.pid };
	if (!ret) {
		who->held = true;
		who->jitd = sockowner_trusted(uid);
		return 0;
	}
	if (ret == -ENOENT)
		return 0;
	if (!asked) {
		who->held = true;
		who->jitd = sockowner_trusted(cred.uid);
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

/*
 * Binds l->fd to the name: 0 (bound), 1 (held by no jitd: another user's socket, one bound and
 * connected elsewhere, or unsure), -EADDRINUSE (a jitd holds it) or -errno; *who says who.
 * may_wait: a name in use whose holder is not seen is asked again 100 ms later (at the start;
 * not on the loop).
 */
static int try_bind(struct netnslock *l, bool may_wait, struct netnslock_who *who)
{
	struct sockaddr_un a;
	socklen_t len = lock_addr(&a);
	int ret;

	*who = (struct netnslock_who){ 0 };
	for (int attempt = 0; bind(l->fd, (struct sockaddr *)&a, len); attempt++) {
		if ((ret = -errno) != -EADDRINUSE || (ret = who_holds(who)))
			return ret;
		if (who->jitd)
			return -EADDRINUSE;
		/*
		 * No holder seen: it went meanwhile, or (where the kernel cannot say whose a
		 * socket is) a jitd is between its bind and its listen. Once more, a little later.
		 */
		if (!who->held && !attempt && may_wait) {
			(void)usleep(RETRY_US);
			continue;
		}
		who->held = true;
		return 1;
	}
	return 0;
}

/* Listens on the bound socket; from here on the socket is the listener's to close. */
static int listen_on(struct netnslock *l)
{
	errno = 0;
	if (!(l->lev = evconnlistener_new(l->base, probe_cb, l, LEV_OPT_CLOSE_ON_FREE |
			LEV_OPT_CLOSE_ON_EXEC, BACKLOG, l->fd)))
		return errno ? -errno : -ENOMEM;
	l->fd = -1;
	evconnlistener_set_error_cb(l->lev, probe_error_cb);
	return 0;
}

/* While another holds the name, it is asked for again: its holder may go. */
static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	const struct timeval tv = { (time_t)((struct netnslock *)arg)->retry_sec, 0 };
	struct netnslock *l = arg;
	struct netnslock_who who = { 0 };
	char pid[32];
	int ret;

	(void)fd;
	(void)what;
	/* Bound but not listening (out of memory last time): the name is ours already. */
	if ((ret = l->bound ? 0 : try_bind(l, false, &who)) == 0) {
		l->bound = true;
		if (!(ret = listen_on(l))) {
			log_info("the network namespace's lock (@%s) is jitd's now: the process "
				 "that held it let go", NETNSLOCK_NAME);
			return;
		}
	}
	/*
	 * Another jitd took it once the other process let go. Said once per such jitd; asked
	 * again all the same, so that this one takes the name should that one stop first.
	 */
	if (ret == -EADDRINUSE && l->rival != who.pid + 1) {
		l->rival = who.pid + 1;
		log_err("another jitd (%s) took the network namespace's lock (@%s) after the "
			"process that held it let go: two jitd run in this namespace, and each "
			"deletes the other's grants; stop one", netnslock_pid_text(&who, pid,
			sizeof(pid)), NETNSLOCK_NAME);
	} else if (ret < 0 && ret != -EADDRINUSE) {
		log_warn("the network namespace's lock (@%s): %s; asked again in %u s",
			 NETNSLOCK_NAME, strerror(-ret), l->retry_sec);
	}
	if (evtimer_add(l->retry, &tv))
		log_warn("the network namespace's lock (@%s) will not be asked for again",
			 NETNSLOCK_NAME);
}

int netnslock_take(struct event_base *base, unsigned retry_sec, struct netnslock **out,
	struct netnslock_who *who)
{
	const struct timeval tv = { (time_t)retry_sec, 0 };
	struct netnslock *l = NULL;
	int ret;

	*out = NULL;
	*who = (struct netnslock_who){ 0 };
	if (!(l = calloc(1, sizeof(*l))))
		return -ENOMEM;
	l->base = base;
	l->retry_sec = retry_sec;
	if ((l->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0) {
		ret = -errno;
		goto fail;
	}
	if (!(l->rest = evtimer_new(base, rested_cb, l)) ||
		!(l->retry = evtimer_new(base, retry_cb, l))) {
		ret = -ENOMEM;
		goto fail;
	}
	if ((ret = try_bind(l, true, who)) < 0)
		goto fail;
	if (ret == 1) {
		if (evtimer_add(l->retry, &tv)) {
			ret = -ENOMEM;
			goto fail;
		}
		*out = l;
		return 0;
	}
	if ((ret = listen_on(l)))
		goto fail;
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
	if ((*l)->retry)
		event_free((*l)->retry);
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
