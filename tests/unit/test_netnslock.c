/*
 * The network namespace's lock, in a network namespace of the test's own (unshare: root only,
 * else skipped), so that it never meets a jitd of the host's: one holder at a time, its pid
 * told to the next; its probes accepted however many come; and a name taken by a user other
 * than root does not keep jitd from starting nor teardown from running: listening, with its
 * backlog full (a probe of root's waiting in it), or bound and never listening.
 */
#include <errno.h>
#include <grp.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "agent/netnslock.h"
#include "agent/sockowner.h"

static bool own_namespace;

/* Bound (and listening) on the abstract name name: its fd. */
static int bound_to(const char *name, int type, bool listens)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, type, 0);

	memcpy(a.sun_path + 1, name, strlen(name));
	if (fd < 0 || bind(fd, (struct sockaddr *)&a,
			(socklen_t)(offsetof(struct sockaddr_un, sun_path) + 1 + strlen(name))) ||
		(listens && listen(fd, 4)))
		return -1;
	return fd;
}

/* Root only (unshare), and on a kernel that says who owns a unix socket (Linux 5.3+). */
static int setup(void **state)
{
	uid_t uid;
	int fd;

	(void)state;
	own_namespace = geteuid() == 0 && unshare(CLONE_NEWNET) == 0;
	if (own_namespace && (fd = bound_to("jitd.test.probe", SOCK_STREAM, true)) >= 0) {
		own_namespace = sockowner_abstract_uid("jitd.test.probe", &uid) == 0 && uid == 0;
		close(fd);
	}
	return 0;
}

static void test_one_holder(void **state)
{
	struct event_base *base;
	struct netnslock *a = NULL, *b = (struct netnslock *)&b;
	struct netnslock_who who;
	char text[32];

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(base = event_base_new());
	assert_int_equal(netnslock_holder(&who), 0);
	assert_false(who.held);
	assert_int_equal(netnslock_take(base, 1, &a, &who), 0);
	assert_non_null(a);
	assert_false(who.held);
	assert_int_equal(netnslock_holder(&who), 0);
	assert_true(who.held && who.jitd);
	assert_int_equal(who.pid, getpid());
	assert_int_equal(netnslock_take(base, 1, &b, &who), -EADDRINUSE);
	assert_null(b);
	assert_true(who.held && who.jitd);
	assert_int_equal(who.pid, getpid());
	snprintf(text, sizeof(text), "pid %d", (int)getpid());
	assert_string_equal(netnslock_pid_text(&who, text + 16, 16), text);
	netnslock_release(&a);
	assert_null(a);
	netnslock_release(&a);
	assert_int_equal(netnslock_holder(&who), 0);
	assert_false(who.held);
	assert_int_equal(netnslock_take(base, 1, &a, &who), 0);
	netnslock_release(&a);
	event_base_free(base);
}

/* More probes than the backlog holds: each is accepted, so each still learns the pid. */
static void test_probes_accepted(void **state)
{
	struct event_base *base;
	struct netnslock *l = NULL;
	struct netnslock_who who;

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(base = event_base_new());
	assert_int_equal(netnslock_take(base, 1, &l, &who), 0);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(netnslock_holder(&who), 0);
		assert_true(who.held && who.jitd);
		assert_int_equal(who.pid, getpid());
		assert_true(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
	}
	netnslock_release(&l);
	event_base_free(base);
}

enum squat { LISTENS, FULL, BOUND, CONNECTED, OTHER_TYPES };

/*
 * A child of nobody's takes the name: listening; listening with a backlog of one, full with a
 * connection of root's (the parent's) it never accepts; bound and never listening; bound, then
 * connected to a listener of its own elsewhere (it keeps the name); or, with datagram and
 * seqpacket sockets, the name of those types (the stream one may be a jitd's). It holds it
 * until told. Returns its pid; *go is the pipe that tells it to go.
 */
static pid_t squat(enum squat how, int *go)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	socklen_t len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) +
		sizeof(NETNSLOCK_NAME));
	int p[2], ready[2], fd;
	pid_t pid;
	char c;

	assert_int_equal(pipe(p), 0);
	assert_int_equal(pipe(ready), 0);
	memcpy(a.sun_path + 1, NETNSLOCK_NAME, sizeof(NETNSLOCK_NAME) - 1);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		close(p[1]);
		close(ready[0]);
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(2);
		if (how == OTHER_TYPES) {
			if (bound_to(NETNSLOCK_NAME, SOCK_DGRAM, false) < 0 ||
				bound_to(NETNSLOCK_NAME, SOCK_SEQPACKET, true) < 0)
				_exit(3);
		} else if (how == CONNECTED) {
			struct sockaddr_un b = { .sun_family = AF_UNIX };

			memcpy(b.sun_path + 1, "jitd.test.peer", 14);
			fd = socket(AF_UNIX, SOCK_STREAM, 0);
			if (bound_to("jitd.test.peer", SOCK_STREAM, true) < 0 || fd < 0 ||
				bind(fd, (struct sockaddr *)&a, len) ||
				connect(fd, (struct sockaddr *)&b,
					(socklen_t)(offsetof(struct sockaddr_un, sun_path) + 15)))
				_exit(3);
		} else {
			fd = socket(AF_UNIX, SOCK_STREAM, 0);
			if (fd < 0 || bind(fd, (struct sockaddr *)&a, len) ||
				(how != BOUND && listen(fd, how == FULL ? 0 : 4)))
				_exit(3);
		}
		if (write(ready[1], "r", 1) != 1)
			_exit(4);
		_exit(read(p[0], &c, 1) == 1 ? 0 : 5);
	}
	close(p[0]);
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	if (how == FULL) {
		/* Root's connection waits in the backlog: none of the prober's then can. */
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0);
		assert_true(fd >= 0);
		assert_int_equal(connect(fd, (struct sockaddr *)&a, len), 0);
		/* Left open until the test ends: it must stay in the backlog. */
	}
	*go = p[1];
	return pid;
}

static void unsquat(pid_t pid, int go)
{
	int st;

	assert_int_equal(write(go, "x", 1), 1);
	close(go);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
}

static void test_squatters_ignored(void **state)
{
	const enum squat hows[] = { LISTENS, FULL, BOUND };
	struct event_base *base;
	struct netnslock *l = NULL;
	struct netnslock_who who;
	pid_t child;
	int go;

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(base = event_base_new());
	for (size_t i = 0; i < sizeof(hows) / sizeof(hows[0]); i++) {
		child = squat(hows[i], &go);
		/* Another user's: held, but by no jitd, for teardown and for jitd alike. */
		assert_int_equal(netnslock_holder(&who), 0);
		assert_true(who.held);
		assert_false(who.jitd || who.unsure);
		assert_int_equal(who.pid, hows[i] == LISTENS ? child : 0);
		assert_int_equal(netnslock_take(base, 1, &l, &who), 0);
		assert_non_null(l);
		assert_true(who.held);
		assert_false(who.jitd);
		/* Not jitd's: it is still the other's, and jitd waits to ask again. */
		assert_int_equal(netnslock_holder(&who), 0);
		assert_true(who.held && !who.jitd);
		netnslock_release(&l);
		unsquat(child, go);
	}
	/* Bound and connected elsewhere: the name is taken, but by no socket that holds it. */
	child = squat(CONNECTED, &go);
	assert_int_equal(netnslock_holder(&who), 0);
	assert_false(who.held);
	assert_int_equal(netnslock_take(base, 1, &l, &who), 0);
	assert_non_null(l);
	assert_true(who.held);
	assert_false(who.jitd);
	netnslock_release(&l);
	unsquat(child, go);
	/* Gone with its holder: the name is jitd's to take. */
	assert_int_equal(netnslock_take(base, 1, &l, &who), 0);
	assert_non_null(l);
	assert_false(who.held);
	netnslock_release(&l);
	event_base_free(base);
}

/*
 * Once the other user's process lets go, jitd takes the name (asked again every second here),
 * or once the jitd that took it first stops.
 */
static void test_taken_when_let_go(void **state)
{
	const struct timeval wait = { 1, 500000 };
	struct event_base *base, *other;
	struct netnslock *l = NULL, *rival = NULL;
	struct netnslock_who who;
	pid_t child;
	int go;

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(base = event_base_new());
	assert_non_null(other = event_base_new());
	child = squat(LISTENS, &go);
	assert_int_equal(netnslock_take(base, 1, &l, &who), 0);
	assert_non_null(l);
	assert_true(who.held && !who.jitd);
	/* Asked again while the other still holds it: it stays the other's. */
	assert_int_equal(event_base_loopexit(base, &wait), 0);
	assert_int_equal(event_base_dispatch(base), 0);
	assert_int_equal(netnslock_holder(&who), 0);
	assert_true(who.held && !who.jitd);
	assert_int_equal(who.pid, child);
	unsquat(child, go);
	/* Another jitd (here: this process, on another loop) takes it first. */
	assert_int_equal(netnslock_take(other, 1, &rival, &who), 0);
	assert_false(who.held);
	assert_int_equal(event_base_loopexit(base, &wait), 0);
	assert_int_equal(event_base_dispatch(base), 0);
	/* And stops: the name is taken at a later asking. */
	netnslock_release(&rival);
	assert_int_equal(netnslock_holder(&who), 0);
	assert_false(who.held);
	assert_int_equal(event_base_loopexit(base, &wait), 0);
	assert_int_equal(event_base_dispatch(base), 0);
	assert_int_equal(netnslock_holder(&who), 0);
	assert_true(who.held && who.jitd);
	assert_int_equal(who.pid, getpid());
	/* Only the retrying lock can have it now: the other loop's is gone. */
	assert_int_equal(netnslock_take(other, 1, &rival, &who), -EADDRINUSE);
	netnslock_release(&l);
	assert_int_equal(netnslock_holder(&who), 0);
	assert_false(who.held);
	event_base_free(other);
	event_base_free(base);
}

/* The name of other socket types, taken beside a jitd's: it is still the jitd's lock. */
static void test_other_types_beside(void **state)
{
	struct event_base *base;
	struct netnslock *a = NULL, *b = (struct netnslock *)&b;
	struct netnslock_who who;
	pid_t child;
	int go;

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(base = event_base_new());
	assert_int_equal(netnslock_take(base, 1, &a, &who), 0);
	child = squat(OTHER_TYPES, &go);
	assert_int_equal(netnslock_holder(&who), 0);
	assert_true(who.held && who.jitd);
	assert_int_equal(netnslock_take(base, 1, &b, &who), -EADDRINUSE);
	assert_int_equal(who.pid, getpid());
	unsquat(child, go);
	netnslock_release(&a);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_holder),
		cmocka_unit_test(test_probes_accepted),
		cmocka_unit_test(test_squatters_ignored),
		cmocka_unit_test(test_other_types_beside),
		cmocka_unit_test(test_taken_when_let_go),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
