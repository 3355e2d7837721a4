#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <string.h>
#include <sys/socket.h>

#include "agent/nft.h"
#include "agent/ruleset.h"

/* Byte order is the contract: the model, status and the kernel's ranges sort as memcmp does. */
static int sign(int c)
{
	return (c > 0) - (c < 0);
}

static int by_memcmp(const struct ruleset_elem *x, const struct ruleset_elem *y)
{
	int c = memcmp(x->dlo, y->dlo, 16);

	if (!c)
		c = memcmp(x->lo, y->lo, 16);
	if (!c)
		c = memcmp(x->hi, y->hi, 16);
	return c ? c : memcmp(x->dhi, y->dhi, 16);
}

/* xorshift: the same pairs on every run. */
static uint32_t next(uint32_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 17;
	*s ^= *s << 5;
	return *s;
}

/*
 * Random pairs that differ in one byte of one field, any byte of 64 (so in the first or the
 * second half of an address, above or below 0x80), or not at all.
 */
static void test_addrs_order_as_bytes(void **state)
{
	uint32_t s = 2463534242u;

	(void)state;
	for (int i = 0; i < 20000; i++) {
		struct ruleset_elem a = { .kind = RULESET_HOST, .family = AF_INET6 }, b;
		uint8_t *fields[4] = { a.dlo, a.lo, a.hi, a.dhi };
		uint8_t *bf[4];

		for (int f = 0; f < 4; f++)
			for (int k = 0; k < 16; k++)
				fields[f][k] = (uint8_t)next(&s);
		b = a;
		bf[0] = b.dlo;
		bf[1] = b.lo;
		bf[2] = b.hi;
		bf[3] = b.dhi;
		if (i % 10) {
			uint32_t at = next(&s) % 64;

			bf[at / 16][at % 16] = (uint8_t)next(&s);
		}
		assert_int_equal(sign(ruleset_elem_cmp_addrs(&a, &b)), sign(by_memcmp(&a, &b)));
		assert_int_equal(sign(ruleset_elem_cmp_addrs(&b, &a)), sign(by_memcmp(&b, &a)));
		assert_int_equal(sign(ruleset_elem_cmp(&a, &b)), sign(by_memcmp(&a, &b)));
	}
}

/* The first byte outweighs all the others, and 0x80 sorts above 0x7f (unsigned). */
static void test_addrs_edges(void **state)
{
	struct ruleset_elem a = { 0 }, b = { 0 };

	(void)state;
	a.lo[0] = 0x80;
	memset(b.lo, 0xff, 16);
	b.lo[0] = 0x7f;
	assert_true(ruleset_elem_cmp_addrs(&a, &b) > 0);
	assert_true(ruleset_elem_cmp_addrs(&b, &a) < 0);
	memset(&b, 0, sizeof(b));
	b.lo[15] = 1;
	assert_true(ruleset_elem_cmp_addrs(&a, &b) > 0);
	a = b;
	assert_int_equal(ruleset_elem_cmp_addrs(&a, &b), 0);
	a.lo[8] = 1;
	assert_true(ruleset_elem_cmp_addrs(&a, &b) > 0);
}

/*
 * An element added with a timeout under one kernel tick would never expire on a kernel
 * without e0c47281723f: one with less than 50 ms left is not sent at all. Deletions always are.
 * Only the batch is built (a netlink socket, no transaction): nothing needs root.
 */
static void test_no_timeout_under_a_tick(void **state)
{
	const struct { int64_t left; size_t msgs; } cases[] = {
		{ -5, 0 }, { 0, 0 }, { 1, 0 }, { 49, 0 }, { 50, 1 }, { 60000, 1 },
	};
	const int64_t now = 1800000000000LL;
	struct ruleset_elem e = { .kind = RULESET_HOST_ADDR, .ipproto = IPPROTO_TCP, .port = 22,
		.family = AF_INET, .lo = { 192, 0, 2, 1 }, .hi = { 192, 0, 2, 1 } };
	struct nft_batch *b = NULL;
	struct nft *n = NULL;

	(void)state;
	assert_int_equal(nft_open(&n), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		e.exp_ms = now + cases[i].left;
		assert_int_equal(nft_batch_new(n, &b), 0);
		assert_int_equal(ruleset_elems(b, NULL, 0, &e, 1, now), 0);
		if (nft_batch_count(b) != cases[i].msgs)
			fail_msg("%lld ms left: %zu messages, not %zu", (long long)cases[i].left,
				nft_batch_count(b), cases[i].msgs);
		nft_batch_free(b);
	}
	e.exp_ms = now + 1;
	assert_int_equal(nft_batch_new(n, &b), 0);
	assert_int_equal(ruleset_elems(b, &e, 1, NULL, 0, now), 0);
	assert_int_equal(nft_batch_count(b), 1);
	nft_batch_free(b);
	nft_close(&n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addrs_order_as_bytes),
		cmocka_unit_test(test_addrs_edges),
		cmocka_unit_test(test_no_timeout_under_a_tick),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
