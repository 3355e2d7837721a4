#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/refusals.h"

#define W REFUSALS_WINDOW_MS

static bool admit(struct refusals *r, int64_t now, unsigned limit, bool revocation, int code,
	const char *peer)
{
	return refusals_admit(r, now, limit, revocation, code, peer);
}

/* The first `limit` of a window are audited; the rest counted per kind and code, ports aside. */
static void test_limit_then_counted(void **state)
{
	struct refusals r;
	struct refusals_tally t;

	refusals_init(&r, W);
	assert_int_equal(refusals_due(&r), -1);
	assert_true(admit(&r, 1000, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:40000"));
	assert_true(admit(&r, 1001, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:40001"));
	assert_int_equal(refusals_due(&r), -1);
	assert_false(admit(&r, 1002, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:40002"));
	assert_false(admit(&r, 1003, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:40003"));
	assert_false(admit(&r, 1004, 2, false, JIT_ERR_MALFORMED, "https 192.0.2.9:5 cn=x"));
	assert_false(admit(&r, 1005, 2, false, JIT_ERR_BAD_SIGNATURE, "http 127.0.0.1:40004"));
	assert_false(admit(&r, 1006, 2, true, JIT_ERR_MALFORMED, "uid=0 pid=7 user=root"));
	assert_int_equal(refusals_due(&r), 1000 + W);
	/* Nothing is taken before the window ends. */
	assert_false(refusals_take(&r, 1000 + W - 1, false, &t));
	assert_false(admit(&r, 1000 + W - 1, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:9"));

	assert_true(refusals_take(&r, 1000 + W, false, &t));
	assert_false(t.revocation);
	assert_int_equal(t.code, JIT_ERR_MALFORMED);
	assert_int_equal(t.count, 4);
	assert_int_equal(t.from_first, 3);
	assert_string_equal(t.first, "http 127.0.0.1");
	assert_true(refusals_take(&r, 1000 + W, false, &t));
	assert_false(t.revocation);
	assert_int_equal(t.code, JIT_ERR_BAD_SIGNATURE);
	assert_int_equal(t.count, 1);
	assert_int_equal(t.from_first, 1);
	assert_true(refusals_take(&r, 1000 + W, false, &t));
	assert_true(t.revocation);
	assert_int_equal(t.count, 1);
	assert_string_equal(t.first, "uid=0 pid=7 user=root");
	assert_false(refusals_take(&r, 1000 + W, false, &t));
	assert_int_equal(refusals_due(&r), -1);

	/* A new window, a new allowance. */
	assert_true(admit(&r, 1000 + W + 5, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:1"));
	assert_true(admit(&r, 1000 + W + 6, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:2"));
	assert_false(admit(&r, 1000 + W + 7, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:3"));
	assert_int_equal(refusals_due(&r), 1000 + 2 * W + 5);
}

/* The IPv6 address keeps its colons, the certificate's CN stays; stopping takes all at once. */
static void test_sources_and_all(void **state)
{
	struct refusals r;
	struct refusals_tally t;

	refusals_init(&r, W);
	assert_false(admit(&r, 0, 0, false, JIT_ERR_UNKNOWN_KEY, "https [2001:db8::7]:443 cn=c"));
	assert_false(admit(&r, 1, 0, false, JIT_ERR_UNKNOWN_KEY, "https [2001:db8::7]:444 cn=c"));
	assert_false(admit(&r, 2, 0, false, JIT_ERR_UNKNOWN_KEY, "https [2001:db8::8]:443 cn=c"));
	assert_false(admit(&r, 3, 0, false, JIT_ERR_UNKNOWN_KEY, NULL));
	assert_false(refusals_take(&r, 4, false, &t));
	assert_true(refusals_take(&r, 4, true, &t));
	assert_string_equal(t.first, "https [2001:db8::7] cn=c");
	assert_int_equal(t.count, 4);
	assert_int_equal(t.from_first, 2);
	assert_false(refusals_take(&r, 4, true, &t));
	/* Out-of-range codes share one count rather than index past the table. */
	assert_false(admit(&r, 5, 0, false, 7, "http 127.0.0.1:1"));
	assert_false(admit(&r, 5, 0, false, -JIT_ERR__COUNT, "http 127.0.0.1:1"));
	assert_true(refusals_take(&r, 5, true, &t));
	assert_int_equal(t.count, 2);
}

/*
 * Counts not yet taken when their window ends stay in it: a refusal then adds to them rather
 * than open a window whose allowance would audit it one by one.
 */
static void test_untaken_counts_stay(void **state)
{
	struct refusals r;
	struct refusals_tally t;

	refusals_init(&r, W);
	assert_true(admit(&r, 0, 1, false, JIT_ERR_MALFORMED, "http 127.0.0.1:1"));
	assert_false(admit(&r, 1, 1, false, JIT_ERR_MALFORMED, "http 127.0.0.1:2"));
	assert_false(admit(&r, W + 1, 1, false, JIT_ERR_MALFORMED, "http 127.0.0.1:3"));
	assert_true(refusals_take(&r, W + 1, false, &t));
	assert_int_equal(t.count, 2);
	assert_false(refusals_take(&r, W + 1, false, &t));
	assert_true(admit(&r, W + 2, 1, false, JIT_ERR_MALFORMED, "http 127.0.0.1:4"));
}

/* A clock that steps back ends the window rather than keeping it open for good. */
static void test_clock_back(void **state)
{
	struct refusals r;
	struct refusals_tally t;

	refusals_init(&r, W);
	assert_false(admit(&r, 5 * W, 0, false, JIT_ERR_MALFORMED, "http 127.0.0.1:1"));
	assert_true(refusals_take(&r, W, false, &t));
	assert_int_equal(t.count, 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limit_then_counted),
		cmocka_unit_test(test_sources_and_all),
		cmocka_unit_test(test_untaken_counts_stay),
		cmocka_unit_test(test_clock_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
