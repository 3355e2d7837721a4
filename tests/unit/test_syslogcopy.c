/*
 * The audit trail's copy to syslog, against a datagram socket of the test's own: lines arrive
 * as syslog(3) formats them; a socket whose queue is full (a daemon that stopped reading)
 * drops lines at once rather than holding the caller, and the next line that goes through
 * says how many; no socket at the path sends nothing and does not try again per line; a
 * daemon restarted on a new socket at the same path is found again.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <syslog.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/syslogcopy.h"

static char dir[] = "/tmp/jitd-test-syslog.XXXXXX";
static char path[96];

/* A "daemon": a datagram socket bound at path, not reading until the test does. */
static int daemon_socket(void)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	snprintf(sun.sun_path, sizeof(sun.sun_path), "%s", path);
	(void)unlink(path);
	assert_int_equal(bind(fd, (struct sockaddr *)&sun, sizeof(sun)), 0);
	return fd;
}

/* The next datagram, or "" when none waits. */
static const char *next_line(int fd)
{
	static char buf[4096];
	ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);

	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static int setup(void **state)
{
	(void)state;
	if (!mkdtemp(dir))
		return -1;
	snprintf(path, sizeof(path), "%s/log", dir);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	(void)unlink(path);
	return rmdir(dir);
}

static void test_format(void **state)
{
	struct syslog_copy *s;
	int fd = daemon_socket();
	char want[64];
	const char *line;

	(void)state;
	assert_int_equal(syslog_copy_open(path, "jitd", "audit ", &s), 0);
	syslog_copy_send(s, LOG_WARNING, "{\"event\":\"grant.refused\"}", 1767225600);
	line = next_line(fd);
	/* <PRI>, a local time stamp of 15 characters, then ident[pid]: and the text. */
	assert_int_equal(strncmp(line, "<84>", 4), 0);
	assert_true(strlen(line) > 4 + 16);
	snprintf(want, sizeof(want), " jitd[%d]: audit {\"event\":\"grant.refused\"}", getpid());
	assert_string_equal(line + 4 + 15, want);
	syslog_copy_close(&s);
	close(fd);
}

static void test_full_socket_drops(void **state)
{
	struct syslog_copy *s;
	int fd = daemon_socket();
	unsigned long sent = 0;

	(void)state;
	assert_int_equal(syslog_copy_open(path, "jitd", "audit ", &s), 0);
	/* Far more than a datagram queue holds (max_dgram_qlen, 512 by default): never blocks. */
	for (; sent < 5000; sent++)
		syslog_copy_send(s, LOG_INFO, "a line that nobody reads", 1767225600);
	assert_true(syslog_copy_dropped(s) > 0);
	assert_true(syslog_copy_dropped(s) < sent);
	/* Room again: the next line goes through and the count starts over. */
	while (*next_line(fd))
		;
	syslog_copy_send(s, LOG_INFO, "the daemon reads again", 1767225600);
	assert_int_equal(syslog_copy_dropped(s), 0);
	assert_non_null(strstr(next_line(fd), "the daemon reads again"));
	syslog_copy_close(&s);
	close(fd);
}

static void test_no_daemon_then_restart(void **state)
{
	struct syslog_copy *s;
	int fd;

	(void)state;
	(void)unlink(path);
	assert_int_equal(syslog_copy_open(path, "jitd", "", &s), 0);
	syslog_copy_send(s, LOG_INFO, "nobody listens", 1000);
	assert_int_equal(syslog_copy_dropped(s), 0);
	/* A daemon that starts now is found 10 s later, not at the next line. */
	fd = daemon_socket();
	syslog_copy_send(s, LOG_INFO, "too soon", 1005);
	assert_string_equal(next_line(fd), "");
	syslog_copy_send(s, LOG_INFO, "found", 1010);
	assert_non_null(strstr(next_line(fd), "jitd["));
	/* Restarted on a new socket at the path: the old one refuses, the new one is found. */
	close(fd);
	fd = daemon_socket();
	syslog_copy_send(s, LOG_INFO, "after the restart", 1011);
	assert_non_null(strstr(next_line(fd), "after the restart"));
	syslog_copy_close(&s);
	close(fd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_full_socket_drops),
		cmocka_unit_test(test_no_daemon_then_restart),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
