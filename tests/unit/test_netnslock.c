/*
 * The network namespace's lock, in a network namespace of the test's own (unshare: root only,
 * else skipped), so that it never meets a jitd of the host's: one holder at a time, its pid
 * told to the next; its probes accepted however many come; and a name taken by a user other
 * than root, or by a socket that does not listen, does not keep jitd from starting.
 */
#include <errno.h>
#include <grp.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "agent/netnslock.h"

static bool own_namespace;

static int setup(void **state)
{
	(void)state;
	own_namespace = geteuid() == 0 && unshare(CLONE_NEWNET) == 0;
	return 0;
}

static void test_one_holder(void **state)
{
	struct event_base *base;
	struct netnslock *a = NULL, *b = (struct netnslock *)&b;
	pid_t holder, squatter, pid;

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(base = event_base_new());
	assert_int_equal(netnslock_holder(&pid), 0);
	assert_int_equal(netnslock_take(base, &a, &holder, &squatter), 0);
	assert_non_null(a);
	assert_int_equal(squatter, 0);
	assert_int_equal(netnslock_holder(&pid), 1);
	assert_int_equal(pid, getpid());
	assert_int_equal(netnslock_take(base, &b, &holder, &squatter), -EADDRINUSE);
	assert_null(b);
	assert_int_equal(holder, getpid());
	netnslock_release(&a);
	assert_null(a);
	netnslock_release(&a);
	assert_int_equal(netnslock_holder(&pid), 0);
	assert_int_equal(netnslock_take(base, &a, &holder, &squatter), 0);
	netnslock_release(&a);
	event_base_free(base);
}

/* More probes than the backlog holds: each is accepted, so each still learns the holder. */
static void test_probes_accepted(void **state)
{
	struct event_base *base;
	struct netnslock *l = NULL;
	pid_t holder, squatter, pid;

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(base = event_base_new());
	assert_int_equal(netnslock_take(base, &l, &holder, &squatter), 0);
	for (int i = 0; i < 100; i++) {
		assert_int_equal(netnslock_holder(&pid), 1);
		assert_int_equal(pid, getpid());
		assert_true(event_base_loop(base, EVLOOP_NONBLOCK) >= 0);
	}
	netnslock_release(&l);
	event_base_free(base);
}

/*
 * A child takes the name first, as nobody (listening) or as root without listening; it holds
 * it until told. Returns its pid; *go is the pipe that tells it to go.
 */
static pid_t squat(bool as_nobody, bool listens, int *go)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };
	int p[2], ready[2];
	pid_t pid;
	char c;

	assert_int_equal(pipe(p), 0);
	assert_int_equal(pipe(ready), 0);
	memcpy(a.sun_path + 1, NETNSLOCK_NAME, sizeof(NETNSLOCK_NAME) - 1);
	assert_true((pid = fork()) >= 0);
	if (pid == 0) {
		int fd;

		close(p[1]);
		close(ready[0]);
		if (as_nobody && (setgroups(0, NULL) || setgid(65534) || setuid(65534)))
			_exit(2);
		fd = socket(AF_UNIX, SOCK_STREAM, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&a,
				(socklen_t)(offsetof(struct sockaddr_un, sun_path) +
					sizeof(NETNSLOCK_NAME))) ||
			(listens && listen(fd, 4)))
			_exit(3);
		if (write(ready[1], "r", 1) != 1)
			_exit(4);
		_exit(read(p[0], &c, 1) == 1 ? 0 : 5);
	}
	close(p[0]);
	close(ready[1]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
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
	struct event_base *base;
	struct netnslock *l = (struct netnslock *)&l;
	pid_t holder, squatter, pid, child;
	int go;

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(base = event_base_new());
	child = squat(true, true, &go);
	/* Another user's: not a jitd, for jitd nor for teardown. */
	assert_int_equal(netnslock_holder(&pid), 0);
	assert_int_equal(pid, child);
	assert_int_equal(netnslock_take(base, &l, &holder, &squatter), 0);
	assert_null(l);
	assert_int_equal(squatter, child);
	unsquat(child, go);
	/* Bound and never listened on: asked again, then taken for no jitd. */
	child = squat(false, false, &go);
	assert_int_equal(netnslock_holder(&pid), 0);
	assert_int_equal(netnslock_take(base, &l, &holder, &squatter), 0);
	assert_null(l);
	assert_int_equal(squatter, -1);
	unsquat(child, go);
	/* Gone with its holder: the name is jitd's to take. */
	assert_int_equal(netnslock_take(base, &l, &holder, &squatter), 0);
	assert_non_null(l);
	assert_int_equal(squatter, 0);
	netnslock_release(&l);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_one_holder),
		cmocka_unit_test(test_probes_accepted),
		cmocka_unit_test(test_squatters_ignored),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
