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
static const struct config cfg = { .mode = CONFIG_MODE_HOST, .ports = policies, .n_ports = 4 };

static struct prefix office[2]; /* 192.0.2.0/24, 2001:db8:1::/48 */
/* Filled in setup(): addresses are parsed, so the table names only ports and limits here. */
static struct target_policy targets[] = {
	{ .port = 22, .protos = PORT_PROTO_TCP, .max_duration = 3 * HOUR, .any_source = true },
	{ .port = 22, .protos = PORT_PROTO_TCP, .max_duration = HOUR, .sources = office,
		.n_sources = 2 },
	{ .port = 3389, .protos = PORT_PROTO_TCP, .max_duration = 2 * HOUR, .any_source = true,
		.dnat = true, .dnat_lo = 50000, .dnat_hi = 50999 },
	{ .port = 3389, .protos = PORT_PROTO_TCP, .max_duration = 2 * HOUR, .any_source = true,
		.dnat = true, .dnat_lo = 51000, .dnat_hi = 51999 },
	{ .port = 22, .protos = PORT_PROTO_TCP, .max_duration = 3 * HOUR, .sources = office,
		.n_sources = 2 },
	{ .port = 53, .protos = PORT_PROTO_ANY, .max_duration = HOUR, .any_source = true },
};
static const char *const target_addrs[] = { "10.1.0.0/16", "10.1.2.0/24", "10.3.0.5",
	"10.4.0.0/24", "2001:db8:10::/48", "10.1.0.0/16" };
#define N_TARGETS (sizeof(targets) / sizeof(targets[0]))
static const struct config gw = { .mode = CONFIG_MODE_GATEWAY, .targets = targets,
	.n_targets = N_TARGETS };
static const struct config both = { .mode = CONFIG_MODE_HOST | CONFIG_MODE_GATEWAY,
	.ports = policies, .n_ports = 4, .targets = targets, .n_targets = N_TARGETS };

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
	office[0] = pfx("192.0.2.0/24");
	office[1] = pfx("2001:db8:1::/48");
	for (size_t i = 0; i < N_TARGETS; i++)
		targets[i].addr = pfx(target_addrs[i]);
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

/* One source, one destination, one port, against config c. */
static int check_dst(const struct config *c, const char *src, const char *dst, uint16_t port,
	unsigned proto, int64_t exp)
{
	struct prefix s = pfx(src), d = pfx(dst);
	struct port_spec ps = { .port = port, .proto = (uint8_t)proto };
	struct grant g = { .src = &s, .n_src = 1, .ports = &ps, .n_ports = 1, .dst = &d,
		.n_dst = 1, .exp = exp };

	memset(&err, 0, sizeof(err));
	return policy_check(c, &g, NOW, &err);
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

static void test_host_grant_on_gateway(void **state)
{
	struct prefix s = pfx("192.0.2.1");
	struct port_spec ps = { .port = 22, .proto = TCP };
	struct grant g = { .src = &s, .n_src = 1, .ports = &ps, .n_ports = 1, .exp = NOW + 60 };

	memset(&err, 0, sizeof(err));
	refused(policy_check(&gw, &g, NOW, &err), JIT_ERR_DESTINATION_NOT_PROTECTED,
		"the grant names no dst; this gateway guards forwarded targets only");
	/* Mode both still guards the host's own ports, by exactly the host rules. */
	memset(&err, 0, sizeof(err));
	assert_int_equal(policy_check(&both, &g, NOW, &err), 0);
	ps.port = 23;
	refused(policy_check(&both, &g, NOW, &err), JIT_ERR_PORT_NOT_PROTECTED,
		"port 23/tcp is not protected");
}

static void test_dst_grant_on_host(void **state)
{
	refused(check_dst(&cfg, "192.0.2.1", "10.1.0.5", 22, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"claim 'dst': this host is not a gateway (mode host)");
}

static void test_dst_allowed(void **state)
{
	assert_int_equal(check_dst(&gw, "198.51.100.7", "10.1.0.5", 22, TCP, NOW + 3 * HOUR), 0);
	assert_int_equal(check_dst(&gw, "192.0.2.0/24", "10.1.0.0/16", 22, TCP, NOW + HOUR), 0);
	assert_int_equal(check_dst(&gw, "192.0.2.9", "10.1.2.7", 22, TCP, NOW + HOUR), 0);
	assert_int_equal(check_dst(&gw, "198.51.100.7", "10.3.0.5", 3389, TCP, NOW + HOUR), 0);
	assert_int_equal(check_dst(&gw, "198.51.100.7", "10.4.0.200", 3389, TCP, NOW + HOUR), 0);
	assert_int_equal(check_dst(&gw, "2001:db8:1::5", "2001:db8:10::/64", 22, TCP, NOW + 60),
		0);
	assert_int_equal(check_dst(&gw, "198.51.100.7", "10.1.9.9", 53, UDP, NOW + 60), 0);
	assert_int_equal(check_dst(&gw, "198.51.100.7", "10.1.9.9", 53, TCP, NOW + 60), 0);
	/* A mapped destination is an IPv4 one. */
	assert_int_equal(check_dst(&gw, "198.51.100.7", "::ffff:10.1.0.5", 22, TCP, NOW + 60), 0);
	assert_int_equal(check_dst(&both, "198.51.100.7", "10.1.0.5", 22, TCP, NOW + 60), 0);
}

static void test_dst_not_protected(void **state)
{
	refused(check_dst(&gw, "192.0.2.1", "10.2.0.5", 22, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.2.0.5 port 22/tcp is not a protected target");
	refused(check_dst(&gw, "192.0.2.1", "10.1.0.5", 23, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.1.0.5 port 23/tcp is not a protected target");
	refused(check_dst(&gw, "192.0.2.1", "10.1.0.5", 22, UDP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.1.0.5 port 22/udp is not a protected target");
	/* Wider than every target: partly outside is outside. */
	refused(check_dst(&gw, "192.0.2.1", "10.0.0.0/8", 22, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.0.0.0/8 port 22/tcp is not a protected target");
	refused(check_dst(&gw, "192.0.2.1", "10.3.0.4/31", 3389, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.3.0.4/31 port 3389/tcp is not a protected target");
	refused(check_dst(&gw, "2001:db8:1::5", "2001:db8::1", 22, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 2001:db8::1 port 22/tcp is not a protected target");
	/* One protocol per spec, as for the host's ports, even where the target has both. */
	refused(check_dst(&gw, "192.0.2.1", "10.1.0.5", 53, PORT_PROTO_ANY, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.1.0.5 port 53/* is not a protected target");
	refused(check_dst(&gw, "192.0.2.1", "10.1.0.5", 22, 0, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.1.0.5 port 22/? is not a protected target");
	/* The host's own ports are no targets. */
	refused(check_dst(&both, "192.0.2.1", "10.9.0.1", 3389, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.9.0.1 port 3389/tcp is not a protected target");
}

static void test_dst_dnat_one_address(void **state)
{
	refused(check_dst(&gw, "192.0.2.1", "10.4.0.0/28", 3389, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.4.0.0/28 port 3389/tcp: target 10.4.0.0/24 port 3389/tcp maps a "
		"gateway port to one machine: name one address in dst");
	refused(check_dst(&gw, "192.0.2.1", "10.4.0.0/24", 3389, TCP, NOW + 60),
		JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.4.0.0/24 port 3389/tcp: target 10.4.0.0/24 port 3389/tcp maps a "
		"gateway port to one machine: name one address in dst");
}

static void test_dst_sources(void **state)
{
	/* The longest prefix decides: 10.1.2.0/24 allows the office only, 10.1.0.0/16 anyone. */
	refused(check_dst(&gw, "198.51.100.7", "10.1.2.7", 22, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 198.51.100.7 is not allowed for destination 10.1.2.7 port 22/tcp");
	refused(check_dst(&gw, "192.0.0.0/16", "10.1.2.0/24", 22, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 192.0.0.0/16 is not allowed for destination 10.1.2.0/24 port 22/tcp");
	refused(check_dst(&gw, "2001:db8:2::1", "2001:db8:10::5", 22, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 2001:db8:2::1 is not allowed for destination 2001:db8:10::5 port 22/tcp");
}

static void test_dst_inside(void **state)
{
	/*
	 * 10.1.0.0/16 lets anyone in for 3h, 10.1.2.0/24 inside it the office for 1h: a grant to the
	 * whole /16 opens the /24 too, so the /24 judges it as well.
	 */
	refused(check_dst(&gw, "0.0.0.0/0", "10.1.0.0/16", 22, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED, "source 0.0.0.0/0 is not allowed for destination "
		"10.1.2.0/24 port 22/tcp, inside 10.1.0.0/16");
	refused(check_dst(&gw, "198.51.100.7", "10.1.0.0/20", 22, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED, "source 198.51.100.7 is not allowed for destination "
		"10.1.2.0/24 port 22/tcp, inside 10.1.0.0/20");
	refused(check_dst(&gw, "192.0.2.9", "10.1.0.0/16", 22, TCP, NOW + 2 * HOUR),
		JIT_ERR_DURATION_EXCEEDS_MAX, "requested 2h exceeds the 1h maximum for "
		"destination 10.1.2.0/24 port 22/tcp, inside 10.1.0.0/16");
	/* Beside the /24, or on another port, the /16 alone decides. */
	assert_int_equal(check_dst(&gw, "198.51.100.7", "10.1.3.0/24", 22, TCP, NOW + 3 * HOUR),
		0);
	assert_int_equal(check_dst(&gw, "198.51.100.7", "10.1.0.0/16", 53, UDP, NOW + HOUR), 0);
}

static void test_dst_inside_dnat(void **state)
{
	struct prefix office_v4 = pfx("192.0.2.0/24");
	struct target_policy t[] = {
		{ .addr = pfx("10.3.0.0/16"), .port = 3389, .protos = TCP, .max_duration = HOUR,
			.any_source = true },
		{ .addr = pfx("10.3.0.5"), .port = 3389, .protos = TCP, .max_duration = HOUR,
			.sources = &office_v4, .n_sources = 1, .dnat = true, .dnat_lo = 50000,
			.dnat_hi = 50999 },
	};
	struct config c = { .mode = CONFIG_MODE_GATEWAY, .targets = t, .n_targets = 2 };

	/* A prefix around a machine behind a gateway port forwards to it, within its policy. */
	refused(check_dst(&c, "198.51.100.7", "10.3.0.0/24", 3389, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED, "source 198.51.100.7 is not allowed for destination "
		"10.3.0.5 port 3389/tcp, inside 10.3.0.0/24");
	assert_int_equal(check_dst(&c, "192.0.2.9", "10.3.0.0/24", 3389, TCP, NOW + 60), 0);
	assert_int_equal(check_dst(&c, "198.51.100.7", "10.3.1.0/24", 3389, TCP, NOW + 60), 0);
	refused(check_dst(&c, "198.51.100.7", "10.3.0.5", 3389, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 198.51.100.7 is not allowed for destination 10.3.0.5 port 3389/tcp");
}

static void test_dst_family(void **state)
{
	struct prefix src[] = { pfx("2001:db8:1::5"), pfx("192.0.2.9"), pfx("198.51.100.7") };
	struct prefix dst[] = { pfx("10.1.2.7"), pfx("2001:db8:10::5") };
	struct port_spec ps = { .port = 22, .proto = TCP };
	struct grant g = { .src = src, .n_src = 2, .ports = &ps, .n_ports = 1, .dst = dst,
		.n_dst = 2, .exp = NOW + HOUR };

	/* Each source is judged by the destinations of its family only. */
	assert_int_equal(policy_check(&gw, &g, NOW, NULL), 0);
	g.n_src = 3;
	refused(policy_check(&gw, &g, NOW, &err), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 198.51.100.7 is not allowed for destination 10.1.2.7 port 22/tcp");
	refused(check_dst(&gw, "2001:db8:1::5", "10.1.0.5", 22, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED, "no source of destination 10.1.0.5's address family");
	refused(check_dst(&gw, "192.0.2.1", "2001:db8:10::5", 22, TCP, NOW + 60),
		JIT_ERR_SOURCE_NOT_ALLOWED,
		"no source of destination 2001:db8:10::5's address family");
}

static void test_dst_duration(void **state)
{
	assert_int_equal(check_dst(&gw, "192.0.2.9", "10.1.2.7", 22, TCP, NOW + HOUR), 0);
	refused(check_dst(&gw, "192.0.2.9", "10.1.2.7", 22, TCP, NOW + HOUR + 1),
		JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested 3601s exceeds the 3600s maximum for destination 10.1.2.7 port 22/tcp");
	refused(check_dst(&gw, "192.0.2.9", "10.1.0.5", 22, TCP, NOW + 4 * HOUR),
		JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested 4h exceeds the 3h maximum for destination 10.1.0.5 port 22/tcp");
	refused(check_dst(&gw, "192.0.2.9", "10.1.0.5", 22, TCP, INT64_MAX),
		JIT_ERR_DURATION_EXCEEDS_MAX, "requested 106751991147624d 17h exceeds the 3h "
		"maximum for destination 10.1.0.5 port 22/tcp");
	/* Past exp is grant_verify's to refuse. */
	assert_int_equal(check_dst(&gw, "192.0.2.9", "10.1.0.5", 22, TCP, INT64_MIN + 5), 0);
}

static void test_dst_multi(void **state)
{
	struct prefix src[] = { pfx("192.0.2.9"), pfx("2001:db8:1::5") };
	struct prefix dst[] = { pfx("10.1.0.5"), pfx("10.1.2.7"), pfx("2001:db8:10::5"),
		pfx("10.9.9.9") };
	struct port_spec ps[] = { { 22, TCP }, { 53, UDP } };
	struct grant g = { .src = src, .n_src = 2, .ports = ps, .n_ports = 1, .dst = dst,
		.n_dst = 3, .exp = NOW + HOUR };

	assert_int_equal(check(&g, NOW), JIT_ERR_DESTINATION_NOT_PROTECTED);
	assert_int_equal(policy_check(&both, &g, NOW, NULL), 0);
	assert_int_equal(policy_check(&gw, &g, NOW, NULL), 0);
	/* The shortest maximum among the grant's targets is the bound. */
	g.exp = NOW + 2 * HOUR;
	refused(policy_check(&gw, &g, NOW, &err), JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested 2h exceeds the 1h maximum for destination 10.1.2.7 port 22/tcp");
	/* Sources are checked before durations. */
	src[0] = pfx("198.51.100.7");
	refused(policy_check(&gw, &g, NOW, &err), JIT_ERR_SOURCE_NOT_ALLOWED,
		"source 198.51.100.7 is not allowed for destination 10.1.2.7 port 22/tcp");
	/* Targets are checked before sources, for every port and destination. */
	g.n_ports = 2;
	refused(policy_check(&gw, &g, NOW, &err), JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 2001:db8:10::5 port 53/udp is not a protected target");
	g.n_ports = 1;
	g.n_dst = 4;
	refused(policy_check(&gw, &g, NOW, &err), JIT_ERR_DESTINATION_NOT_PROTECTED,
		"destination 10.9.9.9 port 22/tcp is not a protected target");
}

static void test_dst_empty(void **state)
{
	struct prefix s = pfx("192.0.2.1"), d = pfx("10.1.0.5");
	struct port_spec ps = { .port = 22, .proto = TCP };
	struct grant g = { .src = &s, .ports = &ps, .n_ports = 1, .dst = &d, .n_dst = 1,
		.exp = NOW + 60 };

	refused(policy_check(&gw, &g, NOW, &err), JIT_ERR_SOURCE_NOT_ALLOWED,
		"the grant names no source");
	g.n_ports = 0;
	g.n_src = 1;
	refused(policy_check(&gw, &g, NOW, &err), JIT_ERR_PORT_NOT_PROTECTED,
		"the grant names no port");
}

/*
 * RFC 8725 section 3.8: with "issuers", a key signs under its one iss only; a key bound to none
 * is not trusted for grants; root's local grants carry no issuer. Without it, any iss passes.
 */
static void test_issuer(void **state)
{
	char ctl[] = "ctl", ctl2[] = "ctl2", bound_iss[] = "https://ctl.example";
	char other[] = "https://other.example", root[] = "root";
	struct key_issuer bound[] = { { ctl, bound_iss } };
	struct config c = cfg;
	struct prefix s = pfx("192.0.2.1");
	struct port_spec ps = { .port = 22, .proto = TCP };
	struct grant g = { .src = &s, .n_src = 1, .ports = &ps, .n_ports = 1, .exp = NOW + 60,
		.kid = ctl, .iss = other };

	assert_int_equal(policy_check(&c, &g, NOW, &err), 0);
	c.issuers = bound;
	c.n_issuers = 1;
	refused(policy_check(&c, &g, NOW, &err), JIT_ERR_WRONG_ISSUER, "claim 'iss': "
		"'https://other.example' is not the issuer key 'ctl' is bound to");
	g.iss = bound_iss;
	assert_int_equal(policy_check(&c, &g, NOW, &err), 0);
	/* Bound, it is still policy: the port is judged after the issuer. */
	ps.port = 23;
	refused(policy_check(&c, &g, NOW, &err), JIT_ERR_PORT_NOT_PROTECTED,
		"port 23/tcp is not protected");
	ps.port = 22;
	g.kid = ctl2;
	refused(policy_check(&c, &g, NOW, &err), JIT_ERR_UNKNOWN_KEY,
		"key 'ctl2' is bound to no issuer in the configuration's issuers");
	g.local = true;
	g.iss = root;
	assert_int_equal(policy_check(&c, &g, NOW, &err), 0);
	refused(policy_check_issuer(&c, "ctl", "https://ctl.example/", &err), JIT_ERR_WRONG_ISSUER,
		"claim 'iss': 'https://ctl.example/' is not the issuer key 'ctl' is bound to");
	assert_int_equal(policy_check_issuer(&c, "ctl", "https://ctl.example", &err), 0);
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
		cmocka_unit_test(test_host_grant_on_gateway),
		cmocka_unit_test(test_dst_grant_on_host),
		cmocka_unit_test(test_dst_allowed),
		cmocka_unit_test(test_dst_not_protected),
		cmocka_unit_test(test_dst_dnat_one_address),
		cmocka_unit_test(test_dst_sources),
		cmocka_unit_test(test_dst_inside),
		cmocka_unit_test(test_dst_inside_dnat),
		cmocka_unit_test(test_dst_family),
		cmocka_unit_test(test_issuer),
		cmocka_unit_test(test_dst_duration),
		cmocka_unit_test(test_dst_multi),
		cmocka_unit_test(test_dst_empty),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
