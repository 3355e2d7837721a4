#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <netinet/in.h>

#include "common/port.h"

static void test_proto_parse(void **state)
{
	unsigned m;

	assert_int_equal(port_proto_parse("tcp", &m), 0);
	assert_int_equal(m, PORT_PROTO_TCP);
	assert_int_equal(port_proto_parse("TCP", &m), 0);
	assert_int_equal(m, PORT_PROTO_TCP);
	assert_int_equal(port_proto_parse("Udp", &m), 0);
	assert_int_equal(m, PORT_PROTO_UDP);
	assert_int_equal(port_proto_parse("*", &m), 0);
	assert_int_equal(m, PORT_PROTO_ANY);
	assert_int_equal(port_proto_parse("", &m), -EINVAL);
	assert_int_equal(m, 0);
	assert_int_equal(port_proto_parse("tcp ", &m), -EINVAL);
	assert_int_equal(port_proto_parse("tc", &m), -EINVAL);
	assert_int_equal(port_proto_parse("tcpp", &m), -EINVAL);
	assert_int_equal(port_proto_parse("sctp", &m), -EINVAL);
	assert_int_equal(port_proto_parse("any", &m), -EINVAL);
	assert_int_equal(port_proto_parse("**", &m), -EINVAL);
}

static void test_proto_names(void **state)
{
	assert_string_equal(port_proto_name(PORT_PROTO_TCP), "tcp");
	assert_string_equal(port_proto_name(PORT_PROTO_UDP), "udp");
	assert_string_equal(port_proto_name(PORT_PROTO_ANY), "*");
	assert_int_equal(port_proto_ipproto(PORT_PROTO_TCP), IPPROTO_TCP);
	assert_int_equal(port_proto_ipproto(PORT_PROTO_UDP), IPPROTO_UDP);
	assert_int_equal(port_proto_ipproto(PORT_PROTO_ANY), 0);
	assert_int_equal(port_proto_ipproto(0), 0);
}

static void spec_ok(const char *s, uint16_t port, unsigned mask)
{
	uint16_t p;
	unsigned m;

	assert_int_equal(port_spec_parse(s, &p, &m), 0);
	assert_int_equal(p, port);
	assert_int_equal(m, mask);
}

static void test_spec_parse(void **state)
{
	spec_ok("22", 22, PORT_PROTO_TCP);
	spec_ok("22/tcp", 22, PORT_PROTO_TCP);
	spec_ok("53/UDP", 53, PORT_PROTO_UDP);
	spec_ok("53/udp", 53, PORT_PROTO_UDP);
	spec_ok("22/*", 22, PORT_PROTO_ANY);
	spec_ok("1", 1, PORT_PROTO_TCP);
	spec_ok("65535/tcp", 65535, PORT_PROTO_TCP);
	spec_ok("3389", 3389, PORT_PROTO_TCP);
}

static void test_spec_refused(void **state)
{
	static const char *const bad[] = {
		"", "0", "022", "00", "65536", "99999", "100000", "-1", "+22", " 22", "22 ",
		"22/", "/tcp", "22/tcp/udp", "22/sctp", "0x16", "22.0", "2 2", "22/ tcp",
		"4294967318",
	};
	uint16_t p;
	unsigned m;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (port_spec_parse(bad[i], &p, &m) != -EINVAL)
			fail_msg("'%s' was accepted", bad[i]);
		assert_int_equal(p, 0);
		assert_int_equal(m, 0);
	}
}

static void test_spec_format(void **state)
{
	struct port_spec s = { .port = 22, .proto = PORT_PROTO_TCP };
	char buf[16];

	assert_int_equal(port_spec_format(&s, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "22/tcp");
	s = (struct port_spec){ .port = 65535, .proto = PORT_PROTO_UDP };
	assert_int_equal(port_spec_format(&s, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "65535/udp");
	assert_int_equal(port_spec_format(&s, buf, 9), -ENOSPC);
	assert_int_equal(port_spec_format(&s, buf, 10), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_proto_parse),
		cmocka_unit_test(test_proto_names),
		cmocka_unit_test(test_spec_parse),
		cmocka_unit_test(test_spec_refused),
		cmocka_unit_test(test_spec_format),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
