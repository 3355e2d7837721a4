/*
 * The hand-written JSON printer without an evbuffer: the block grows on the heap and the text
 * stays whole in it, through pieces larger than the block, formatted ones, and integers.
 * (With an evbuffer it is tested through status's documents, in test_status.)
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "agent/printer.h"
#include "common/port.h"
#include "common/prefix.h"

static void grows_and_stays_whole(void **state __attribute__((unused)))
{
	char block[8], big[3000], want[4096];
	struct prefix src[2];
	struct port_spec ports[2] = { { 22, PORT_PROTO_TCP }, { 53, PORT_PROTO_UDP } };
	struct printer pr;

	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(prefix_parse("192.0.2.0/24", &src[0]), 0);
	assert_int_equal(prefix_parse("2001:db8::1", &src[1]), 0);
	printer_init(&pr, NULL, block, sizeof(block));
	pr_raw(&pr, "[");
	pr_string(&pr, "a\"b");
	pr_printf(&pr, ",%s,", big);
	pr_int(&pr, true, LLONG_MIN);
	pr_raw(&pr, ",");
	pr_int(&pr, false, 1);
	pr_raw(&pr, ",[");
	pr_prefixes(&pr, src, 2);
	pr_raw(&pr, "],[");
	pr_ports(&pr, ports, 2);
	pr_raw(&pr, "],");
	pr_stamp(&pr, 0, 1800000000);
	pr_raw(&pr, "]");
	snprintf(want, sizeof(want), "[\"a\\\"b\",%s,%lld,null,[\"192.0.2.0/24\",\"2001:db8::1\"],"
		"[\"22/tcp\",\"53/udp\"],\"2027-01-15T08:00:00Z\"]", big, LLONG_MIN);
	assert_int_equal(pr.err, 0);
	assert_true(pr.heap);
	assert_int_equal(pr.len, strlen(want));
	assert_memory_equal(pr.p, want, pr.len);
	assert_true(pr.cap > pr.len);
	printer_release(&pr);
	assert_null(pr.p);
}

/* Text that fits stays in the caller's block: nothing to allocate or free. */
static void fits_in_block(void **state __attribute__((unused)))
{
	char block[64];
	struct printer pr;

	printer_init(&pr, NULL, block, sizeof(block));
	pr_printf(&pr, "{\"n\":%d}", 42);
	assert_int_equal(pr.err, 0);
	assert_false(pr.heap);
	assert_ptr_equal(pr.p, block);
	assert_int_equal(pr.len, 8);
	assert_memory_equal(pr.p, "{\"n\":42}", 8);
	printer_release(&pr);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(grows_and_stays_whole),
		cmocka_unit_test(fits_in_block),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
