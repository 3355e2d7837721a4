#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>

#include "common/duration.h"

static void parses_as(const char *s, uint64_t want)
{
	uint64_t v = 12345;

	if (duration_parse(s, &v) != 0)
		fail_msg("'%s' was refused", s);
	if (v != want)
		fail_msg("'%s' = %llu, want %llu", s, (unsigned long long)v,
			(unsigned long long)want);
}

static void test_iso(void **state)
{
	parses_as("PT3H", 3 * 3600);
	parses_as("PT30M", 1800);
	parses_as("PT45S", 45);
	parses_as("P1D", 86400);
	parses_as("P1DT12H", 86400 + 12 * 3600);
	parses_as("P1DT2H3M4S", 86400 + 2 * 3600 + 3 * 60 + 4);
	parses_as("PT1H30S", 3630);
	parses_as("PT0S", 0);
	parses_as("P0D", 0);
	parses_as("PT03H", 3 * 3600);
	parses_as("PT90M", 5400);
	parses_as("PT86400S", 86400);
	parses_as("P366D", DURATION_MAX_SECS);
}

static void test_seconds(void **state)
{
	parses_as("90", 90);
	parses_as("0", 0);
	parses_as("10800", 10800);
	parses_as("31622400", DURATION_MAX_SECS);
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
		"", "P", "PT", "P1DT", "pt3h", "PT3h", "p1d", "PT1.5H", "PT1,5H", "P1Y", "P1M",
		"P1W", "P1Y2M", "PT-1H", "-90", "+90", " 90", "90 ", "9 0", "1h", "PT3H ",
		" PT3H", "PT1H1H", "PT1S1M", "PT1M1H", "P1D1D", "PT1D", "P1H", "PTT1H", "P1DTT1H",
		"PH", "PTH", "P1", "PT1", "PT1HT", "P1DT1H1M1S1", "0x10", "1e3", "3H", "T3H",
		"PT99999999999999999999999X",
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		v = 7;
		if (duration_parse(bad[i], &v) != -EINVAL)
			fail_msg("'%s' was not refused as syntax", bad[i]);
		assert_int_equal(v, 0);
	}
}

static void test_range(void **state)
{
	static const char *const big[] = {
		"P367D", "PT8785H", "31622401", "99999999999999999999999999999999",
		"P99999999999999999999DT99999999999999999999H", "PT18446744073709551616S",
		"P366DT1S",
	};
	uint64_t v;

	for (size_t i = 0; i < sizeof(big) / sizeof(big[0]); i++) {
		v = 7;
		if (duration_parse(big[i], &v) != -ERANGE)
			fail_msg("'%s' was not refused as too long", big[i]);
		assert_int_equal(v, 0);
	}
}

static void formats_as(uint64_t secs, const char *iso, const char *human)
{
	char buf[64];
	uint64_t back;

	assert_int_equal(duration_format(secs, buf, sizeof(buf)), 0);
	assert_string_equal(buf, iso);
	assert_int_equal(duration_parse(buf, &back), 0);
	assert_int_equal(back, secs);
	assert_int_equal(duration_human(secs, buf, sizeof(buf)), 0);
	assert_string_equal(buf, human);
}

static void test_format(void **state)
{
	formats_as(0, "PT0S", "0s");
	formats_as(45, "PT45S", "45s");
	formats_as(60, "PT1M", "1m");
	formats_as(3 * 3600, "PT3H", "3h");
	formats_as(3 * 3600 - 1, "PT2H59M59S", "2h 59m");
	formats_as(86400, "P1D", "1d");
	formats_as(86400 + 2 * 3600, "P1DT2H", "1d 2h");
	formats_as(86400 + 2 * 3600 + 3 * 60 + 4, "P1DT2H3M4S", "1d 2h");
	formats_as(86400 + 30 * 60, "P1DT30M", "1d");
	formats_as(3600 + 5, "PT1H5S", "1h");
	formats_as(125, "PT2M5S", "2m 5s");
	formats_as(DURATION_MAX_SECS, "P366D", "366d");
}

static void test_format_enospc(void **state)
{
	char buf[64];

	assert_int_equal(duration_format(86400 + 7200, buf, 6), -ENOSPC);
	assert_int_equal(duration_format(86400 + 7200, buf, 7), 0);
	assert_string_equal(buf, "P1DT2H");
	assert_int_equal(duration_format(0, buf, 4), -ENOSPC);
	assert_int_equal(duration_format(1, buf, 0), -ENOSPC);
	assert_int_equal(duration_human(86400 + 7200, buf, 5), -ENOSPC);
	assert_int_equal(duration_human(86400 + 7200, buf, 6), 0);
	assert_string_equal(buf, "1d 2h");
	/* Values past the parser cap still format: status output must never fail on them. */
	assert_int_equal(duration_format(UINT64_MAX, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "P213503982334601DT7H15S");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_iso),
		cmocka_unit_test(test_seconds),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_range),
		cmocka_unit_test(test_format),
		cmocka_unit_test(test_format_enospc),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
