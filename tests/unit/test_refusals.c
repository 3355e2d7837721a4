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
	/* jitctl runs as a new process each time: the pid does not make another source. */
	assert_false(admit(&r, 1006, 2, true, JIT_ERR_MALFORMED, "uid=0 pid=8 user=root"));
	assert_int_equal(refusals_due(&r), 1000 + W);
	/* Nothing is taken before the window ends. */
	assert_false(refusals_take(&r, 1000 + W - 1, false, &t));
	assert_false(admit(&r, 1000 + W - 1, 2, false, JIT_ERR_MALFORMED, "http 127.0.0.1:9"));

	assert_true(refusals_take(&r, 1000 + W, false, &t));
	assert_false(t.revocation);
	assert_int_equal(t.code, JIT_ERR_MALFORMED);
	assert_int_equal(t.count, 4);
	assert_int_equal(t.n_sources, 2);
	assert_int_equal(t.source[0].count, 3);
	assert_int_equal(t.source[0].over, 0);
	assert_string_equal(t.source[0].name, "http 127.0.0.1");
	assert_int_equal(t.source[1].count, 1);
	assert_string_equal(t.source[1].name, "https 192.0.2.9 cn=x");
	assert_int_equal(t.replaced, 0);
	assert_true(refusals_take(&r, 1000 + W, false, &t));
	assert_false(t.revocation);
	assert_int_equal(t.code, JIT_ERR_BAD_SIGNATURE);
	assert_int_equal(t.count, 1);
	assert_int_equal(t.n_sources, 1);
	assert_int_equal(t.source[0].count, 1);
	assert_true(refusals_take(&r, 1000 + W, false, &t));
	assert_true(t.revocation);
	assert_int_equal(t.count, 2);
	assert_int_equal(t.n_sources, 1);
	assert_string_equal(t.source[0].name, "uid=0 user=root");
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
	assert_string_equal(t.source[0].name, "https [2001:db8::7] cn=c");
	assert_int_equal(t.count, 4);
	assert_int_equal(t.source[0].count, 2);
	assert_string_equal(t.source[1].name, "https [2001:db8::8] cn=c");
	assert_string_equal(t.source[2].name, "unknown");
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

/*
 * At most REFUSALS_SOURCES sources are kept: a new one takes the place of the one with the
 * fewest and counts on from there (space-saving), so a count may include others' (a range). The
 * record's peer is the highest count, and the text lists them highest first.
 */
static void test_several_sources(void **state)
{
	static const char *const peer[] = { "http 192.0.2.1:1", "http 192.0.2.2:1",
		"http 192.0.2.3:1", "http 192.0.2.4:1", "http 192.0.2.5:1", "http 192.0.2.6:1" };
	/* From each of them, in turn: 1, 2, 5, 2, 3 and 1 refusals. */
	static const int times[] = { 1, 2, 5, 2, 3, 1 };
	struct refusals r;
	struct refusals_tally t;
	char text[512];

	(void)state;
	refusals_init(&r, W);
	for (int p = 0; p < 6; p++)
		for (int k = 0; k < times[p]; k++)
			assert_false(admit(&r, 0, 0, false, JIT_ERR_MALFORMED, peer[p]));
	assert_true(refusals_take(&r, 0, true, &t));
	assert_int_equal(t.count, 14);
	assert_int_equal(t.n_sources, REFUSALS_SOURCES);
	assert_int_equal(t.replaced, 2);
	/*
	 * .5 took .1's place (1), .6 then .2's (2, the first of the fewest). Ranked by what each
	 * surely sent: .6's 3 may be 1, below .4's exact 2.
	 */
	assert_string_equal(refusals_top(&t)->name, "http 192.0.2.3");
	assert_string_equal(refusals_sources_text(&t, text, sizeof(text)),
		"5 from http 192.0.2.3, between 3 and 4 from http 192.0.2.5, "
		"2 from http 192.0.2.4, between 1 and 3 from http 192.0.2.6 "
		"(a place was taken over 2 time(s): a range may include other sources' refusals)");
	/* Cut short, never past the buffer. */
	assert_string_equal(refusals_sources_text(&t, text, 12), "5 from http");
	/* One source: exact, nothing else said. */
	assert_false(admit(&r, 1, 0, false, JIT_ERR_MALFORMED, peer[0]));
	assert_true(refusals_take(&r, 1, true, &t));
	assert_string_equal(refusals_top(&t)->name, "http 192.0.2.1");
	assert_string_equal(refusals_sources_text(&t, text, sizeof(text)), "1 from http 192.0.2.1");
}

/*
 * A flood that sends one refusal from each of REFUSALS_SOURCES decoys first is still named:
 * its source takes a decoy's place and its count rises above them all.
 */
static void test_decoys_first(void **state)
{
	static const char *const decoy[] = { "http 203.0.113.1:1", "http 203.0.113.2:1",
		"http 203.0.113.3:1", "http 203.0.113.4:1" };
	struct refusals r;
	struct refusals_tally t;
	char text[512];

	(void)state;
	refusals_init(&r, W);
	for (int d = 0; d < 4; d++)
		assert_false(admit(&r, 0, 0, false, JIT_ERR_BAD_SIGNATURE, decoy[d]));
	for (int k = 0; k < 100; k++)
		assert_false(admit(&r, 0, 0, false, JIT_ERR_BAD_SIGNATURE, "http 198.51.100.9:2"));
	assert_true(refusals_take(&r, 0, true, &t));
	assert_int_equal(t.count, 104);
	assert_string_equal(refusals_top(&t)->name, "http 198.51.100.9");
	assert_int_equal(refusals_top(&t)->count, 101);
	assert_int_equal(refusals_top(&t)->over, 1);
	assert_string_equal(refusals_sources_text(&t, text, sizeof(text)),
		"between 100 and 101 from http 198.51.100.9, 1 from http 203.0.113.2, "
		"1 from http 203.0.113.3, 1 from http 203.0.113.4 "
		"(a place was taken over 1 time(s): a range may include other sources' refusals)");
}

/*
 * Four sources kept level, then one refusal from a bystander: it takes a place and counts on
 * from 25, but surely sent only 1, so it is not the record's peer.
 */
static void test_bystander_not_peer(void **state)
{
	static const char *const flood[] = { "http 203.0.113.1:1", "http 203.0.113.2:1",
		"http 203.0.113.3:1", "http 203.0.113.4:1" };
	struct refusals r;
	struct refusals_tally t;

	(void)state;
	refusals_init(&r, W);
	for (int k = 0; k < 25; k++)
		for (int f = 0; f < 4; f++)
			assert_false(admit(&r, 0, 0, false, JIT_ERR_MALFORMED, flood[f]));
	assert_false(admit(&r, 0, 0, false, JIT_ERR_MALFORMED, "http 192.0.2.50:9"));
	assert_true(refusals_take(&r, 0, true, &t));
	assert_string_equal(refusals_top(&t)->name, "http 203.0.113.2");
	assert_int_equal(refusals_top(&t)->count, 25);
	assert_int_equal(refusals_top(&t)->over, 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_limit_then_counted),
		cmocka_unit_test(test_sources_and_all),
		cmocka_unit_test(test_several_sources),
		cmocka_unit_test(test_decoys_first),
		cmocka_unit_test(test_bystander_not_peer),
		cmocka_unit_test(test_untaken_counts_stay),
		cmocka_unit_test(test_clock_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
