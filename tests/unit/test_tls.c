#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "agent/tls.h"

#define DAY 86400
/* 2026-12-04T12:00:00Z */
#define NOW 1796385600

static void test_far_expiry_says_nothing(void **state)
{
	char buf[160] = "x";

	assert_int_equal(tls_expiry_note(NOW + TLS_EXPIRY_WARN_DAYS * DAY, NOW, buf, sizeof(buf)),
		0);
	assert_string_equal(buf, "");
	assert_int_equal(tls_expiry_note(NOW + 365 * DAY, NOW, buf, sizeof(buf)), 0);
}

/* soon(LEFT, TEXT): a certificate LEFT seconds from its end is warned of in these words. */
#define soon(left, text) do {								\
		char buf_[160];								\
										\
		assert_int_equal(tls_expiry_note(NOW + (left), NOW, buf_, sizeof(buf_)),	\
			TLS_EXPIRES_SOON);						\
		assert_string_equal(buf_, "the TLS certificate expires at " text);	\
	} while (0)

static void test_near_expiry_in_days_then_hours(void **state)
{
	soon(TLS_EXPIRY_WARN_DAYS * DAY - 1, "2026-12-18T11:59:59Z, in 13 day(s)");
	soon(2 * DAY, "2026-12-06T12:00:00Z, in 2 day(s)");
	soon(2 * DAY - 1, "2026-12-06T11:59:59Z, in 47 hour(s)");
	soon(1, "2026-12-04T12:00:01Z, in 0 hour(s)");
}

/* OpenSSL counts a certificate expired from its notAfter second on (X509_cmp_time: "or equal"). */
static void test_expired_at_and_after(void **state)
{
	char buf[160];

	assert_int_equal(tls_expiry_note(NOW, NOW, buf, sizeof(buf)), TLS_EXPIRED);
	assert_string_equal(buf,
		"the TLS certificate expired at 2026-12-04T12:00:00Z: controllers cannot connect");
	assert_int_equal(tls_expiry_note(NOW - 30 * DAY, NOW, buf, sizeof(buf)), TLS_EXPIRED);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_far_expiry_says_nothing),
		cmocka_unit_test(test_near_expiry_in_days_then_hours),
		cmocka_unit_test(test_expired_at_and_after),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
