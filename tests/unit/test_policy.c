#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include "common/config.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/policy.h"
#include "common/port.h"
#include "common/prefix.h"

#define NOW 1700000000LL
#define HOUR 3600

static struct prefix rdp_sources[2];
static struct port_policy policies[] = {
	{ .port = 22, .protos = PORT_PROTO_TCP, .max_duration = 3 * HOUR, .any_source = true },
	{ .port = 3389, .protos = PORT_PROTO_TCP, .max_duration = 3 * HOUR, .sources = rdp_sources,
		.n_sources = 2 },
	{ .port = 53, .protos = PORT_PROTO_UDP, .max_duration = HOUR, .any_source = true },
	{ .port = 5985, .protos = PORT_PROTO_ANY, .max_duration = 24 * HOUR, .any_source = true },
};
static const struct config cfg = { .ports = policies, .n_ports = 4 };

static struct prefix pfx(const char *s)
{
	struct prefix p;

	if (prefix_parse(s, &p))
		fail_msg("bad test prefix %s", s);
	return p;
}

static int setup(void **state)
{
	rdp_sources[0] = pfx("10.0.0.0/8");
	rdp_sources[1] = pfx("2001:db8::/32");
	return 0;
}

#define TCP PORT_PROTO_TCP
#define UDP PORT_PROTO_UDP

static struct jit_error err; /* of the last check */

static int check(const struct grant *g, int64_t now)
{
	memset(&err, 0, sizeof(err));
	return policy_check(&cfg, g, now, &err);
}

/* One source, one port: the common shape of a grant. */
static int check1(const char *src, uint16_t port, unsigned proto, int64_t exp)
{
	struct prefix s = pfx(src);
	struct port_spec ps = { .port = port, .proto = (uint8_t)proto };
	struct grant g = { .src = &s, .n_src = 1, .ports = &ps, .n_ports = 1, .exp = exp };

	return check(&g, NOW);
}

static void refused(int got, int code, const char *msg)
{
	assert_int_equal(got, code);
	assert_int_equal(err.code, code);
	assert_string_equal(err.msg, msg);
}

static void test_allowed(void **state)
{
	assert_int_equal(check1("192.0.2.1", 22, TCP, NOW + HOUR), 0);
	assert_int_equal(check1("10.1.2.0/24", 3389, TCP, NOW + HOUR), 0);
	assert_int_equal(check1("10.0.0.0/8", 3389, TCP, NOW + HOUR), 0);
	assert_int_equal(check1("53.0.0.1", 53, UDP, NOW + 60), 0);
	assert_int_equal(check1("192.0.2.1", 5985, TCP, NOW + HOUR), 0);
	assert_int_equal(check1("192.0.2.1", 5985, UDP, NOW + HOUR), 0);
}

static void test_port_not_protected(void **state)
{
	refused(check1("192.0.2.1", 23, TCP, NOW + 60), JIT_ERR_PORT_NOT_PROTECTED,
		"port 23/tcp is not protected");
	refused(check1("192.0.2.1", 22, UDP, NOW + 60), JIT_ERR_PORT_NOT_PROTECTED,
		"port 22/udp is not protected");
	refused(check1("192.0.2.1", 53, TCP, NOW + 60), JIT_ERR_PORT_NOT_PROTECTED,
		"port 53/tcp is not protected");
	/* A port_spec carries exactly one protocol; "both" must not slip through the mask test. */
	refused(check1("192.0.2.1", 22, PORT_PROTO_ANY, NOW + 60), JIT_ERR_PORT_NOT_PROTECTED,
		"port 22/* is not protected");
	refused(check1("192.0.2.1", 22, 0, NOW + 60), JIT_ERR_PORT_NOT_PROTECTED,
		"port 22/? is not protected");
}

static void test_no_ports(void **state)
{
	struct prefix s = pfx("192.0.2.1");
	struct grant g = { .src = &s, .n_src = 1, .exp = NOW + 60 };

	assert_int_equal(policy_check(&cfg, &g, NOW, NULL), JIT_ERR_PORT_NOT_PROTECTED);
}

static void test_source(void **state)
{
	refused(check1("192.0.2.1", 3389, TCP, NOW + 60), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 192.0.2.1 is not allowed for port 3389/tcp");
	/* Wider than the allowed prefix: partly outside is outside. */
	refused(check1("10.0.0.0/7", 3389, TCP, NOW + 60), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 10.0.0.0/7 is not allowed for port 3389/tcp");
	refused(check1("0.0.0.0/0", 3389, TCP, NOW + 60), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 0.0.0.0/0 is not allowed for port 3389/tcp");
	refused(check1("11.0.0.1", 3389, TCP, NOW + 60), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 11.0.0.1 is not allowed for port 3389/tcp");
}

static void test_source_v6(void **state)
{
	assert_int_equal(check1("2001:db8:1::5", 3389, TCP, NOW + 60), 0);
	assert_int_equal(check1("2001:db8:ff00::/40", 3389, TCP, NOW + 60), 0);
	refused(check1("2001:db9::1", 3389, TCP, NOW + 60), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 2001:db9::1 is not allowed for port 3389/tcp");
	refused(check1("2001:db8::/31", 3389, TCP, NOW + 60), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 2001:db8::/31 is not allowed for port 3389/tcp");
	/* Mapped sources are IPv4 and are judged by the IPv4 prefixes. */
	assert_int_equal(check1("::ffff:10.9.8.7", 3389, TCP, NOW + 60), 0);
	refused(check1("::ffff:192.0.2.1", 3389, TCP, NOW + 60), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 192.0.2.1 is not allowed for port 3389/tcp");
}

static void test_any_source(void **state)
{
	assert_int_equal(check1("0.0.0.0/0", 22, TCP, NOW + 60), 0);
	assert_int_equal(check1("::/0", 22, TCP, NOW + 60), 0);
	assert_int_equal(check1("2001:db8::1", 22, TCP, NOW + 60), 0);
}

static void test_duration(void **state)
{
	assert_int_equal(check1("192.0.2.1", 22, TCP, NOW + 3 * HOUR), 0);
	refused(check1("192.0.2.1", 22, TCP, NOW + 3 * HOUR + 1), JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested 10801s exceeds the 10800s maximum for port 22/tcp");
	refused(check1("192.0.2.1", 22, TCP, NOW + 4 * HOUR), JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested 4h exceeds the 3h maximum for port 22/tcp");
	refused(check1("192.0.2.1", 53, UDP, NOW + HOUR + 90), JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested 1h 1m exceeds the 1h maximum for port 53/udp");
	assert_int_equal(check1("192.0.2.1", 5985, UDP, NOW + 24 * HOUR), 0);
}

static void test_expired_and_wrap(void **state)
{
	/* Expiry is grant_verify's decision; policy only bounds the length. */
	assert_int_equal(check1("192.0.2.1", 22, TCP, NOW), 0);
	assert_int_equal(check1("192.0.2.1", 22, TCP, NOW - 100 * HOUR), 0);
	assert_int_equal(check1("192.0.2.1", 22, TCP, INT64_MIN + 5), 0);
	refused(check1("192.0.2.1", 22, TCP, INT64_MAX), JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested 106751991147624d 17h exceeds the 3h maximum for port 22/tcp");
}

static void test_wrap_negative_now(void **state)
{
	struct prefix s = pfx("192.0.2.1");
	struct port_spec ps = { .port = 22, .proto = TCP };
	struct grant g = { .src = &s, .n_src = 1, .ports = &ps, .n_ports = 1, .exp = INT64_MAX };

	/* INT64_MAX - (-10) does not fit: it must be refused, never wrapped to "expired". */
	assert_int_equal(policy_check(&cfg, &g, -10, NULL), JIT_ERR_DURATION_EXCEEDS_MAX);
	/* The other direction is simply in the past. */
	g.exp = INT64_MIN;
	assert_int_equal(policy_check(&cfg, &g, 10, NULL), 0);
}

static void test_multi(void **state)
{
	struct prefix src[] = { pfx("10.0.0.1"), pfx("2001:db8::1"), pfx("192.0.2.1") };
	struct port_spec ps[] = { { 22, TCP }, { 3389, TCP }, { 53, UDP }, { 23, TCP } };
	struct grant g = { .src = src, .n_src = 2, .ports = ps, .n_ports = 3, .exp = NOW + HOUR };

	assert_int_equal(check(&g, NOW), 0);
	/* The shortest maximum among the grant's ports is the bound. */
	g.exp = NOW + 2 * HOUR;
	refused(check(&g, NOW), JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested 2h exceeds the 1h maximum for port 53/udp");
	/* Sources are checked before durations. */
	g.n_src = 3;
	refused(check(&g, NOW), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 192.0.2.1 is not allowed for port 3389/tcp");
	/* Ports are checked before sources. */
	g.n_ports = 4;
	refused(check(&g, NOW), JIT_ERR_PORT_NOT_PROTECTED, "port 23/tcp is not protected");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_allowed),
		cmocka_unit_test(test_port_not_protected),
		cmocka_unit_test(test_no_ports),
		cmocka_unit_test(test_source),
		cmocka_unit_test(test_source_v6),
		cmocka_unit_test(test_any_source),
		cmocka_unit_test(test_duration),
		cmocka_unit_test(test_expired_and_wrap),
		cmocka_unit_test(test_wrap_negative_now),
		cmocka_unit_test(test_multi),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
