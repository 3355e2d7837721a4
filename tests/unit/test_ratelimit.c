#include <errno.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>

#include <cmocka.h>

#include "agent/ratelimit.h"

static struct sockaddr_in v4(const char *a, uint16_t port)
{
	struct sockaddr_in s = { .sin_family = AF_INET, .sin_port = htons(port) };

	assert_int_equal(inet_pton(AF_INET, a, &s.sin_addr), 1);
	return s;
}

static struct sockaddr_in6 v6(const char *a)
{
	struct sockaddr_in6 s = { .sin6_family = AF_INET6 };

	assert_int_equal(inet_pton(AF_INET6, a, &s.sin6_addr), 1);
	return s;
}

static bool allow(struct ratelimit *r, const void *sa, int64_t now, unsigned *retry)
{
	uint8_t key[16];

	ratelimit_client_key(sa, key);
	return ratelimit_allow(r, key, now, retry);
}

static bool take(struct ratelimit *r, const void *sa, int64_t now, unsigned n, unsigned *retry)
{
	uint8_t key[16];

	ratelimit_client_key(sa, key);
	return ratelimit_take(r, key, now, n, retry);
}

static void test_burst_then_rate(void **state)
{
	struct sockaddr_in a = v4("192.0.2.7", 1000);
	struct ratelimit *r;
	unsigned retry;

	assert_int_equal(ratelimit_new(10, 20, 64, &r), 0);
	for (int i = 0; i < 20; i++)
		assert_true(allow(r, &a, 1000, &retry));
	assert_false(allow(r, &a, 1000, &retry));
	assert_int_equal(retry, 1);
	/* 10 per second: one token every 100 ms, none before. */
	assert_false(allow(r, &a, 1099, &retry));
	assert_true(allow(r, &a, 1100, &retry));
	assert_false(allow(r, &a, 1100, &retry));
	/* A long pause refills to the burst, not beyond. */
	for (int i = 0; i < 20; i++)
		assert_true(allow(r, &a, 100000, &retry));
	assert_false(allow(r, &a, 100000, &retry));
	ratelimit_free(&r);
	assert_null(r);
}

static void test_addresses_are_separate(void **state)
{
	struct sockaddr_in a = v4("192.0.2.7", 1000), a2 = v4("192.0.2.7", 2000);
	struct sockaddr_in b = v4("192.0.2.8", 1000);
	struct sockaddr_in6 mapped = v6("::ffff:192.0.2.7"), c = v6("2001:db8::1");
	struct ratelimit *r;
	unsigned retry;

	assert_int_equal(ratelimit_new(1, 2, 64, &r), 0);
	assert_true(allow(r, &a, 0, &retry));
	/* The port does not make a new client; IPv4-mapped IPv6 is the same address. */
	assert_true(allow(r, &a2, 0, &retry));
	assert_false(allow(r, &mapped, 0, &retry));
	assert_true(allow(r, &b, 0, &retry));
	assert_true(allow(r, &c, 0, &retry));
	ratelimit_free(&r);
}

static void test_ipv6_counts_by_64(void **state)
{
	struct sockaddr_in6 a = v6("2001:db8:0:7::1"), same64 = v6("2001:db8:0:7:ffff::2");
	struct sockaddr_in6 other64 = v6("2001:db8:0:8::1");
	struct ratelimit *r;
	unsigned retry;

	assert_int_equal(ratelimit_new(1, 2, 64, &r), 0);
	assert_true(allow(r, &a, 0, &retry));
	assert_true(allow(r, &same64, 0, &retry));
	/* Another address in the same /64 is the same client: its budget is spent. */
	assert_false(allow(r, &a, 0, &retry));
	assert_false(allow(r, &same64, 0, &retry));
	assert_true(allow(r, &other64, 0, &retry));
	ratelimit_free(&r);
}

static void test_loopback_is_one_client(void **state)
{
	struct sockaddr_in a = v4("127.0.0.1", 1000), b = v4("127.1.2.3", 1000);
	struct sockaddr_in6 mapped = v6("::ffff:127.9.9.9");
	struct ratelimit *r;
	unsigned retry;

	assert_int_equal(ratelimit_new(1, 2, 64, &r), 0);
	assert_true(allow(r, &a, 0, &retry));
	assert_true(allow(r, &b, 0, &retry));
	/* Any local process may bind any address in 127/8: not a new budget each. */
	assert_false(allow(r, &mapped, 0, &retry));
	assert_false(allow(r, &a, 0, &retry));
	ratelimit_free(&r);
}

/* On loopback each local user is a client of its own, apart from loopback's shared one. */
static void test_local_users_are_separate(void **state)
{
	struct sockaddr_in lo = v4("127.0.0.1", 1000);
	uint8_t root[16], user[16], shared[16];
	struct ratelimit *r;
	unsigned retry;

	ratelimit_client_key_user(root, 0);
	ratelimit_client_key_user(user, 4243);
	ratelimit_client_key((const struct sockaddr *)&lo, shared);
	assert_memory_not_equal(root, user, 16);
	assert_memory_not_equal(root, shared, 16);
	assert_int_equal(ratelimit_new(1, 2, 64, &r), 0);
	assert_true(ratelimit_allow(r, user, 0, &retry));
	assert_true(ratelimit_allow(r, user, 0, &retry));
	assert_false(ratelimit_allow(r, user, 0, &retry));
	/* The user's spent budget is not root's, nor that of a client the kernel could not name. */
	assert_true(ratelimit_allow(r, root, 0, &retry));
	assert_true(ratelimit_allow(r, root, 0, &retry));
	assert_false(ratelimit_allow(r, root, 0, &retry));
	assert_true(allow(r, &lo, 0, &retry));
	/* The same user again is the same client. */
	ratelimit_client_key_user(user, 4243);
	assert_false(ratelimit_allow(r, user, 0, &retry));
	ratelimit_free(&r);
}

static void test_clock_steps_back(void **state)
{
	struct sockaddr_in a = v4("192.0.2.7", 1);
	struct ratelimit *r;
	unsigned retry;

	assert_int_equal(ratelimit_new(1, 1, 64, &r), 0);
	assert_true(allow(r, &a, 5000, &retry));
	assert_false(allow(r, &a, 1000, &retry));
	assert_false(allow(r, &a, 5999, &retry));
	assert_true(allow(r, &a, 6000, &retry));
	ratelimit_free(&r);
}

/* A flood of distinct addresses fills the fixed table but never blocks a fresh one. */
static void test_eviction_bounded(void **state)
{
	struct ratelimit *r;
	unsigned retry;

	assert_int_equal(ratelimit_new(1, 1, 16, &r), 0);
	for (uint32_t i = 0; i < 10000; i++) {
		struct sockaddr_in s = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(i) };

		assert_true(allow(r, &s, i, &retry));
	}
	ratelimit_free(&r);
}

/* A batch takes all its tokens or none; one larger than the burst never passes. */
static void test_take_many(void **state)
{
	struct sockaddr_in a = v4("192.0.2.9", 1000);
	struct ratelimit *r;
	unsigned retry;

	assert_int_equal(ratelimit_new(10, 20, 64, &r), 0);
	assert_int_equal(ratelimit_burst(r), 20);
	assert_false(take(r, &a, 1000, 21, &retry));
	assert_int_equal(retry, 0);
	assert_true(take(r, &a, 1000, 15, &retry));
	/* 5 left: 8 fails and takes nothing, so 5 single ones still pass. */
	assert_false(take(r, &a, 1000, 8, &retry));
	assert_int_equal(retry, 1);
	for (int i = 0; i < 5; i++)
		assert_true(allow(r, &a, 1000, &retry));
	assert_false(allow(r, &a, 1000, &retry));
	/* 20 tokens need 2 s at 10 per second: Retry-After says so. */
	assert_false(take(r, &a, 1000, 20, &retry));
	assert_int_equal(retry, 2);
	assert_true(take(r, &a, 3000, 20, &retry));
	ratelimit_free(&r);
}

static void test_bad_arguments(void **state)
{
	struct ratelimit *r = (struct ratelimit *)&r;

	assert_int_equal(ratelimit_new(0, 1, 64, &r), -EINVAL);
	assert_null(r);
	assert_int_equal(ratelimit_new(1, 0, 64, &r), -EINVAL);
	assert_int_equal(ratelimit_new(1, 1, 100, &r), -EINVAL);
	assert_int_equal(ratelimit_new(1, 1, 4, &r), -EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_burst_then_rate),
		cmocka_unit_test(test_addresses_are_separate),
		cmocka_unit_test(test_ipv6_counts_by_64),
		cmocka_unit_test(test_loopback_is_one_client),
		cmocka_unit_test(test_local_users_are_separate),
		cmocka_unit_test(test_clock_steps_back),
		cmocka_unit_test(test_eviction_bounded),
		cmocka_unit_test(test_take_many),
		cmocka_unit_test(test_bad_arguments),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
