#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>
#include <sys/socket.h>

#include "common/prefix.h"

/* Parses in, expects family/len, and checks the canonical text. */
static void parses_as(const char *in, int family, unsigned len, const char *canon)
{
	char buf[PREFIX_STRLEN];
	struct prefix p;

	assert_int_equal(prefix_parse(in, &p), 0);
	assert_int_equal(p.family, family);
	assert_int_equal(p.len, len);
	assert_int_equal(prefix_format(&p, buf, sizeof(buf)), 0);
	assert_string_equal(buf, canon);
}

static struct prefix pfx(const char *s)
{
	struct prefix p;

	assert_int_equal(prefix_parse(s, &p), 0);
	return p;
}

static void test_ipv4(void **state)
{
	parses_as("10.0.0.0/8", AF_INET, 8, "10.0.0.0/8");
	parses_as("192.0.2.7", AF_INET, 32, "192.0.2.7");
	parses_as("192.0.2.7/32", AF_INET, 32, "192.0.2.7");
	parses_as("0.0.0.0/0", AF_INET, 0, "0.0.0.0/0");
	parses_as("255.255.255.255", AF_INET, 32, "255.255.255.255");
	parses_as("10.0.0.128/25", AF_INET, 25, "10.0.0.128/25");
}

static void test_ipv6(void **state)
{
	parses_as("2001:db8::/32", AF_INET6, 32, "2001:db8::/32");
	parses_as("2001:DB8:0:0::1", AF_INET6, 128, "2001:db8::1");
	parses_as("2001:db8::1/128", AF_INET6, 128, "2001:db8::1");
	parses_as("::/0", AF_INET6, 0, "::/0");
	parses_as("::", AF_INET6, 128, "::");
	parses_as("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", AF_INET6, 128,
		"ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff");
	parses_as("fe80::/10", AF_INET6, 10, "fe80::/10");
}

static void test_mapped(void **state)
{
	struct prefix p = pfx("::ffff:192.0.2.7");

	assert_int_equal(p.family, AF_INET);
	assert_memory_equal(p.addr, "\xc0\x00\x02\x07\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	parses_as("::ffff:192.0.2.7", AF_INET, 32, "192.0.2.7");
	parses_as("::ffff:10.0.0.0/104", AF_INET, 8, "10.0.0.0/8");
	parses_as("::FFFF:c000:0200/120", AF_INET, 24, "192.0.2.0/24");
	parses_as("::ffff:0.0.0.0/96", AF_INET, 0, "0.0.0.0/0");
	/* Shorter than /96 would cover non-mapped space, and always has host bits set here. */
	assert_int_equal(prefix_parse("::ffff:0:0/95", &p), -EINVAL);
	/* Only ::ffff:0:0/96 is mapped; the deprecated compatible form stays IPv6. */
	parses_as("::c000:207", AF_INET6, 128, "::192.0.2.7");
}

static void test_refused(void **state)
{
	static const char *const bad[] = {
		"", "/", "/24", "10.0.0.0/", "10.0.0.5/24", "10.0.0.0/33", "10.0.0.0/+8",
		"10.0.0.0/08", "10.0.0.0/008", "10.0.0.0/-1", " 10.0.0.0/8", "10.0.0.0/8 ",
		"10.0.0.0 /8", "10.0.0.0/ 8", "10.0.0.0/8/8", "10.0.0", "10.0.0.256", "010.0.0.1",
		"2001:db8::/129", "2001:db8::1/64", "2001:db8::/0032", "2001:db8::%eth0",
		"2001:db8:::1", "example.com", "10.0.0.0/8\n", "1.2.3.4/4294967328",
		"0000:0000:0000:0000:0000:0000:0000:0000:0/0", "*",
	};
	struct prefix p;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		memset(&p, 0xa5, sizeof(p));
		if (prefix_parse(bad[i], &p) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_int_equal(p.family, 0); /* output cleared on failure */
	}
	assert_int_equal(prefix_parse(NULL, &p), -EINVAL);
}

static void test_format_enospc(void **state)
{
	struct prefix p = pfx("192.0.2.0/24");
	char buf[PREFIX_STRLEN];

	assert_int_equal(prefix_format(&p, buf, 12), -ENOSPC);
	assert_int_equal(prefix_format(&p, buf, 13), 0);
	assert_string_equal(buf, "192.0.2.0/24");
}

static void test_range(void **state)
{
	uint8_t lo[16], hi[16];
	struct prefix p = pfx("10.1.2.0/23");

	prefix_range(&p, lo, hi);
	assert_memory_equal(lo, "\x0a\x01\x02\x00\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	assert_memory_equal(hi, "\x0a\x01\x03\xff\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	assert_int_equal(prefix_addr_len(&p), 4);
	assert_false(prefix_is_host(&p));
	p = pfx("0.0.0.0/0");
	prefix_range(&p, lo, hi);
	assert_memory_equal(lo, "\0\0\0\0", 4);
	assert_memory_equal(hi, "\xff\xff\xff\xff", 4);
	p = pfx("::/0");
	prefix_range(&p, lo, hi);
	assert_memory_equal(hi, "\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
		16);
	assert_int_equal(prefix_addr_len(&p), 16);
	p = pfx("2001:db8::1");
	prefix_range(&p, lo, hi);
	assert_memory_equal(lo, hi, 16);
	assert_true(prefix_is_host(&p));
	assert_true(prefix_is_host(&(struct prefix){ .family = AF_INET, .len = 32 }));
	assert_false(prefix_is_host(&(struct prefix){ .family = AF_INET6, .len = 32 }));
	p = pfx("2001:db8:8000::/33");
	prefix_range(&p, lo, hi);
	assert_memory_equal(lo, "\x20\x01\x0d\xb8\x80\0\0\0\0\0\0\0\0\0\0\0", 16);
	assert_memory_equal(hi, "\x20\x01\x0d\xb8\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff",
		16);
}

static void contains(const char *outer, const char *inner, bool want)
{
	struct prefix o = pfx(outer), i = pfx(inner);

	if (prefix_contains(&o, &i) != want)
		fail_msg("contains(%s, %s) != %d", outer, inner, want);
}

static void test_contains(void **state)
{
	contains("10.0.0.0/8", "10.1.2.3", true);
	contains("10.0.0.0/8", "10.0.0.0/8", true);
	contains("10.0.0.0/8", "10.0.0.0/16", true);
	contains("10.0.0.0/16", "10.0.0.0/8", false);
	contains("10.0.0.0/8", "11.0.0.0", false);
	contains("10.0.0.0/8", "9.255.255.255", false);
	contains("0.0.0.0/0", "255.255.255.255", true);
	contains("0.0.0.0/0", "0.0.0.0/0", true);
	contains("192.0.2.7", "192.0.2.7", true);
	contains("192.0.2.7", "192.0.2.6", false);
	contains("2001:db8::/32", "2001:db8:1::/48", true);
	contains("2001:db8::/32", "2001:db9::1", false);
	contains("2001:db8:1::/48", "2001:db8::/32", false);
	contains("::/0", "ffff::1", true);
	contains("::/0", "::1", true);
	contains("10.0.0.0/8", "::ffff:10.2.3.4", true);
}

static void test_cross_family(void **state)
{
	contains("0.0.0.0/0", "::1", false);
	contains("::/0", "10.0.0.1", false);
	contains("::/0", "::ffff:10.0.0.1", false); /* stored as IPv4 */
	contains("::/96", "0.0.0.0/0", false);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ipv4),
		cmocka_unit_test(test_ipv6),
		cmocka_unit_test(test_mapped),
		cmocka_unit_test(test_refused),
		cmocka_unit_test(test_format_enospc),
		cmocka_unit_test(test_range),
		cmocka_unit_test(test_contains),
		cmocka_unit_test(test_cross_family),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
