#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "agent/connshare.h"
#include "agent/ratelimit.h"

/* An address of either family, as getpeername gives it. */
static struct sockaddr_storage addr(const char *a)
{
	struct sockaddr_storage ss = { 0 };
	struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

	if (inet_pton(AF_INET, a, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		return ss;
	}
	assert_int_equal(inet_pton(AF_INET6, a, &s6->sin6_addr), 1);
	s6->sin6_family = AF_INET6;
	return ss;
}

/* A connection from sa joins, as the endpoint's do: counted as the rate limit counts it. */
static int join(struct connshare *cs, const void *sa, void *owner, struct connshare_conn **out)
{
	uint8_t key[16];

	ratelimit_client_key(sa, key);
	return connshare_join(cs, key, owner, out);
}

/* Connection i of the test, from a, joined and idle: owner is &owners[i]. */
static int owners[16];

static struct connshare_conn *idle_from(struct connshare *cs, const char *a, int i)
{
	struct sockaddr_storage ss = addr(a);
	struct connshare_conn *c;

	assert_int_equal(join(cs, &ss, &owners[i], &c), 0);
	connshare_idle(cs, c, true);
	return c;
}

/* No client holds two: none gives way, however long each has been idle. */
static void test_only_ones_never_go(void **state)
{
	struct connshare_conn *c[4];
	struct connshare *cs;

	assert_int_equal(connshare_new(4, &cs), 0);
	assert_null(connshare_victim(cs));
	c[0] = idle_from(cs, "192.0.2.2", 0);
	c[1] = idle_from(cs, "192.0.2.3", 1);
	c[2] = idle_from(cs, "198.51.100.2", 2);
	c[3] = idle_from(cs, "2001:db8:1::2", 3);
	assert_null(connshare_victim(cs));
	for (int i = 0; i < 4; i++)
		connshare_leave(cs, &c[i]);
	assert_null(c[0]);
	connshare_free(&cs);
	assert_null(cs);
}

/* The longest-idle connection of the client holding the most; a second idle period is new. */
static void test_heaviest_longest_idle(void **state)
{
	struct connshare_conn *c[6];
	struct connshare *cs;

	assert_int_equal(connshare_new(8, &cs), 0);
	c[0] = idle_from(cs, "198.51.100.2", 0);
	c[1] = idle_from(cs, "198.51.100.2", 1);
	c[2] = idle_from(cs, "192.0.2.2", 2);
	c[3] = idle_from(cs, "192.0.2.2", 3);
	c[4] = idle_from(cs, "192.0.2.2", 4);
	assert_ptr_equal(connshare_victim(cs), &owners[2]);
	/* c[2] served a request and waits again: its idle time starts over. */
	connshare_idle(cs, c[2], false);
	assert_ptr_equal(connshare_victim(cs), &owners[3]);
	connshare_idle(cs, c[2], true);
	assert_ptr_equal(connshare_victim(cs), &owners[3]);
	/* Two each now: the first client listed at two, 198.51.100.2, before 192.0.2.2. */
	connshare_leave(cs, &c[3]);
	assert_ptr_equal(connshare_victim(cs), &owners[0]);
	/* Never a client's only one: 192.0.2.2's longest idle, c[4] (c[2]'s wait is newer). */
	connshare_leave(cs, &c[0]);
	assert_ptr_equal(connshare_victim(cs), &owners[4]);
	connshare_leave(cs, &c[4]);
	assert_null(connshare_victim(cs));
	connshare_leave(cs, &c[1]);
	connshare_leave(cs, &c[2]);
	/* A client that left entirely starts again from one. */
	c[5] = idle_from(cs, "192.0.2.2", 5);
	assert_null(connshare_victim(cs));
	connshare_leave(cs, &c[5]);
	connshare_free(&cs);
}

/* A connection whose request is being served is never chosen; its client's idle ones are. */
static void test_busy_stays(void **state)
{
	struct connshare_conn *c[5];
	struct connshare *cs;

	assert_int_equal(connshare_new(8, &cs), 0);
	c[0] = idle_from(cs, "192.0.2.2", 0);
	c[1] = idle_from(cs, "192.0.2.2", 1);
	c[2] = idle_from(cs, "192.0.2.2", 2);
	c[3] = idle_from(cs, "198.51.100.2", 3);
	c[4] = idle_from(cs, "198.51.100.2", 4);
	for (int i = 0; i < 3; i++)
		connshare_idle(cs, c[i], false);
	/* The heaviest client has none idle: the next heaviest gives way. */
	assert_ptr_equal(connshare_victim(cs), &owners[3]);
	connshare_idle(cs, c[3], false);
	connshare_idle(cs, c[4], false);
	assert_null(connshare_victim(cs));
	connshare_idle(cs, c[1], true);
	assert_ptr_equal(connshare_victim(cs), &owners[1]);
	for (int i = 0; i < 5; i++)
		connshare_leave(cs, &c[i]);
	connshare_free(&cs);
}

/* The rate limit's clients: an IPv6 /64, 127.0.0.0/8 and an IPv4-mapped address are one each. */
static void test_clients(void **state)
{
	struct sockaddr_in6 mapped = { .sin6_family = AF_INET6 };
	struct connshare_conn *c[6], *m;
	struct connshare *cs;

	assert_int_equal(connshare_new(8, &cs), 0);
	c[0] = idle_from(cs, "2001:db8:1::2", 0);
	c[1] = idle_from(cs, "2001:db8:2::2", 1);
	assert_null(connshare_victim(cs));
	c[2] = idle_from(cs, "2001:db8:1::ffff:7", 2);
	assert_ptr_equal(connshare_victim(cs), &owners[0]);
	connshare_leave(cs, &c[0]);
	connshare_leave(cs, &c[2]);
	c[3] = idle_from(cs, "127.0.0.1", 3);
	c[4] = idle_from(cs, "127.3.2.1", 4);
	assert_ptr_equal(connshare_victim(cs), &owners[3]);
	connshare_leave(cs, &c[3]);
	connshare_leave(cs, &c[4]);
	c[5] = idle_from(cs, "192.0.2.9", 5);
	assert_int_equal(inet_pton(AF_INET6, "::ffff:192.0.2.9", &mapped.sin6_addr), 1);
	assert_int_equal(join(cs, &mapped, &owners[6], &m), 0);
	connshare_idle(cs, m, true);
	assert_ptr_equal(connshare_victim(cs), &owners[5]);
	connshare_leave(cs, &m);
	connshare_leave(cs, &c[5]);
	connshare_leave(cs, &c[1]);
	connshare_free(&cs);
}

/* Unknown addresses count for no client; more than max cannot join. */
static void test_unknown_and_full(void **state)
{
	struct connshare_conn *c[3], *extra = NULL;
	struct sockaddr_storage ss = addr("192.0.2.2");
	struct connshare *cs;

	assert_int_equal(connshare_new(0, &cs), -EINVAL);
	assert_null(cs);
	assert_int_equal(connshare_new(3, &cs), 0);
	assert_int_equal(connshare_join(cs, NULL, &owners[0], &c[0]), 0);
	assert_int_equal(connshare_join(cs, NULL, &owners[1], &c[1]), 0);
	connshare_idle(cs, c[0], true);
	connshare_idle(cs, c[1], true);
	assert_null(connshare_victim(cs));
	c[2] = idle_from(cs, "192.0.2.2", 2);
	assert_null(connshare_victim(cs));
	assert_int_equal(join(cs, &ss, &owners[3], &extra), -ENOSPC);
	assert_null(extra);
	connshare_leave(cs, &c[0]);
	assert_int_equal(join(cs, &ss, &owners[3], &extra), 0);
	connshare_idle(cs, extra, true);
	assert_ptr_equal(connshare_victim(cs), &owners[2]);
	connshare_leave(cs, &extra);
	connshare_leave(cs, &extra);
	connshare_leave(cs, &c[1]);
	connshare_leave(cs, &c[2]);
	connshare_free(&cs);
	connshare_free(NULL);
}

/* Many clients, chains shared: each found again by its key, and a leaving one unlinked. */
static void test_many_clients(void **state)
{
	struct connshare_conn *c[2 * 200];
	struct connshare *cs;
	char a[32];

	assert_int_equal(connshare_new(400, &cs), 0);
	for (int i = 0; i < 200; i++) {
		struct sockaddr_storage ss;

		snprintf(a, sizeof(a), "10.0.%d.%d", i / 100, i % 100);
		ss = addr(a);
		for (int k = 0; k < 2; k++) {
			assert_int_equal(join(cs, &ss, &c[2 * i + k],
				&c[2 * i + k]), 0);
			if (k == 1 || i % 2)
				connshare_idle(cs, c[2 * i + k], true);
		}
	}
	/* All hold two; the first client listed with one idle is 10.0.0.0, its second. */
	assert_ptr_equal(connshare_victim(cs), &c[1]);
	for (int i = 0; i < 2 * 200; i++)
		connshare_leave(cs, &c[i]);
	assert_null(connshare_victim(cs));
	connshare_free(&cs);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_only_ones_never_go),
		cmocka_unit_test(test_heaviest_longest_idle),
		cmocka_unit_test(test_busy_stays),
		cmocka_unit_test(test_clients),
		cmocka_unit_test(test_unknown_and_full),
		cmocka_unit_test(test_many_clients),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
