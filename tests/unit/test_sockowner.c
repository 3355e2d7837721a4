/*
 * Whose the peer of a TCP connection is, over lo: in a network namespace of the test's own
 * when it can make one (root), so that no listener is ever reachable from the host's network;
 * otherwise on the host's loopback only (the "::" listeners are skipped there).
 */
#include <errno.h>
#include <grp.h>
#include <arpa/inet.h>
#include <net/if.h>
#include <netinet/in.h>
#include <sched.h>
#include <stdbool.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/sockowner.h"

/* A listener on addr (family fam), port chosen by the kernel: its fd, or -1 if unavailable. */
static int listen_on(int fam, const char *addr, struct sockaddr_storage *at, socklen_t *len)
{
	int one = 1, fd = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0), zero = 0;

	memset(at, 0, sizeof(*at));
	if (fam == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)at;

		s->sin_family = AF_INET;
		assert_int_equal(inet_pton(AF_INET, addr, &s->sin_addr), 1);
		*len = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)at;

		s->sin6_family = AF_INET6;
		assert_int_equal(inet_pton(AF_INET6, addr, &s->sin6_addr), 1);
		*len = sizeof(*s);
		/* "::" takes IPv4 clients too, as jitd's dual-stack listener does. */
		(void)setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &zero, sizeof(zero));
	}
	assert_true(fd >= 0);
	(void)setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(fd, (struct sockaddr *)at, *len) < 0 || listen(fd, 4) < 0 ||
		getsockname(fd, (struct sockaddr *)at, len) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* A client socket of family fam connected to port on addr. */
static int connect_to(int fam, const char *addr, const struct sockaddr_storage *listener)
{
	struct sockaddr_storage to = { 0 };
	socklen_t len;
	in_port_t port = listener->ss_family == AF_INET ?
		((const struct sockaddr_in *)listener)->sin_port :
		((const struct sockaddr_in6 *)listener)->sin6_port;
	int fd = socket(fam, SOCK_STREAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	if (fam == AF_INET) {
		struct sockaddr_in *s = (struct sockaddr_in *)&to;

		s->sin_family = AF_INET;
		s->sin_port = port;
		assert_int_equal(inet_pton(AF_INET, addr, &s->sin_addr), 1);
		len = sizeof(*s);
	} else {
		struct sockaddr_in6 *s = (struct sockaddr_in6 *)&to;

		s->sin6_family = AF_INET6;
		s->sin6_port = port;
		assert_int_equal(inet_pton(AF_INET6, addr, &s->sin6_addr), 1);
		len = sizeof(*s);
	}
	assert_int_equal(connect(fd, (struct sockaddr *)&to, len), 0);
	return fd;
}

static bool own_namespace;

/* A namespace of our own, its lo up; false (the host's, untouched) when it cannot be made. */
static int setup(void **state)
{
	struct ifreq ifr = { .ifr_name = "lo" };
	int fd;

	(void)state;
	if (geteuid() != 0 || unshare(CLONE_NEWNET) != 0)
		return 0;
	if ((fd = socket(AF_INET, SOCK_DGRAM | SOCK_CLOEXEC, 0)) < 0)
		return -1;
	if (ioctl(fd, SIOCGIFFLAGS, &ifr) == 0) {
		ifr.ifr_flags |= IFF_UP;
		own_namespace = ioctl(fd, SIOCSIFFLAGS, &ifr) == 0;
	}
	close(fd);
	return own_namespace ? 0 : -1;
}

/* Our own connection over lo: the other end is ours (the test's user). */
static void own(int lfam, const char *laddr, int cfam, const char *caddr)
{
	struct sockaddr_storage at;
	socklen_t len;
	int l = listen_on(lfam, laddr, &at, &len), c, a;
	uid_t uid = (uid_t)-1;

	if (l < 0) {
		print_message("no %s here: skipped\n", laddr);
		return;
	}
	c = connect_to(cfam, caddr, &at);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(a >= 0);
	assert_int_equal(sockowner_peer_uid(a, &uid), 0);
	assert_int_equal(uid, geteuid());
	/* Shut down for writing (a client that sent its request whole): still its owner's. */
	assert_int_equal(shutdown(c, SHUT_WR), 0);
	uid = (uid_t)-1;
	assert_int_equal(sockowner_peer_uid(a, &uid), 0);
	assert_int_equal(uid, geteuid());
	close(c);
	close(a);
	close(l);
}

static void test_own_connections(void **state)
{
	(void)state;
	own(AF_INET, "127.0.0.1", AF_INET, "127.0.0.1");
	own(AF_INET, "127.0.0.2", AF_INET, "127.0.0.2");
	own(AF_INET6, "::1", AF_INET6, "::1");
	/* An IPv4 client of a dual-stack listener: the peer arrives v4-mapped. */
	if (!own_namespace) {
		print_message("not in a namespace of our own: no listener on \"::\"\n");
		return;
	}
	own(AF_INET6, "::", AF_INET, "127.0.0.1");
	own(AF_INET6, "::", AF_INET6, "::ffff:127.0.0.1");
}

/*
 * A client that closed its socket: the kernel keeps an entry that says uid 0 (FIN_WAIT2 or
 * TIME_WAIT, no process behind it). It is nobody's, not root's.
 */
static void test_closed_peer_is_nobodys(void **state)
{
	struct sockaddr_storage at;
	socklen_t len;
	int l = listen_on(AF_INET, "127.0.0.1", &at, &len), c, a;
	uid_t uid = 4242;

	(void)state;
	assert_true(l >= 0);
	c = connect_to(AF_INET, "127.0.0.1", &at);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(a >= 0);
	assert_int_equal(write(c, "GET", 3), 3);
	close(c);
	assert_int_equal(sockowner_peer_uid(a, &uid), -ENOENT);
	assert_int_equal(uid, 4242);
	close(a);
	close(l);
}

/* What is not a TCP connection has no owner to find. */
static void test_not_a_connection(void **state)
{
	int sv[2];
	uid_t uid;

	(void)state;
	assert_int_equal(sockowner_peer_uid(-1, &uid), -EBADF);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	assert_int_equal(sockowner_peer_uid(sv[0], &uid), -ENOENT);
	close(sv[0]);
	close(sv[1]);
}

/*
 * Another user's client (as root: a child that drops to nobody before it makes its socket) is
 * that user's: the uid jitd's status check refuses.
 */
static void test_other_users_client(void **state)
{
	struct sockaddr_storage at;
	socklen_t len;
	int l, a, go[2], st, ret;
	uid_t uid = 0;
	pid_t pid;
	char b;

	(void)state;
	if (geteuid() != 0)
		skip();
	l = listen_on(AF_INET, "127.0.0.1", &at, &len);
	assert_true(l >= 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int c;

		/* Else a parent that failed before its write would leave the read below waiting. */
		close(go[1]);
		if (setgroups(0, NULL) || setgid(65534) || setuid(65534))
			_exit(2);
		c = connect_to(AF_INET, "127.0.0.1", &at);
		/* Held open until the parent has looked. */
		_exit(read(go[0], &b, 1) == 1 && c >= 0 ? 0 : 3);
	}
	close(go[0]);
	a = accept4(l, NULL, NULL, SOCK_CLOEXEC);
	assert_true(a >= 0);
	ret = sockowner_peer_uid(a, &uid);
	assert_int_equal(write(go[1], "x", 1), 1);
	assert_int_equal(waitpid(pid, &st, 0), pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	assert_int_equal(ret, 0);
	assert_int_equal(uid, 65534);
	close(go[1]);
	close(a);
	close(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_own_connections),
		cmocka_unit_test(test_closed_peer_is_nobodys),
		cmocka_unit_test(test_not_a_connection),
		cmocka_unit_test(test_other_users_client),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, setup, NULL);
}
