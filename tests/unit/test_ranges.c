#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "agent/ranges.h"

#define H (3600 * 1000LL)

static struct span v4(const char *lo, const char *hi, int64_t exp)
{
	struct span s = { .exp_ms = exp };

	assert_int_equal(inet_pton(AF_INET, lo, s.lo), 1);
	assert_int_equal(inet_pton(AF_INET, hi, s.hi), 1);
	return s;
}

static struct span v6(const char *lo, const char *hi, int64_t exp)
{
	struct span s = { .exp_ms = exp };

	assert_int_equal(inet_pton(AF_INET6, lo, s.lo), 1);
	assert_int_equal(inet_pton(AF_INET6, hi, s.hi), 1);
	return s;
}

/* Runs ranges_disjoint and compares with want[] exactly, including the zeroed tail bytes. */
static void expect(const struct span *in, size_t n, size_t alen, const struct span *want,
	size_t nwant)
{
	struct span *out = NULL, *copy = malloc((n + 1) * sizeof(*in));
	size_t nout = 99;

	assert_non_null(copy);
	if (n)
		memcpy(copy, in, n * sizeof(*in));
	assert_int_equal(ranges_disjoint(in, n, alen, &out, &nout), 0);
	if (n)
		assert_memory_equal(copy, in, n * sizeof(*in)); /* in is not modified */
	assert_int_equal(nout, nwant);
	for (size_t i = 0; i < nwant; i++) {
		assert_memory_equal(out[i].lo, want[i].lo, 16);
		assert_memory_equal(out[i].hi, want[i].hi, 16);
		assert_int_equal(out[i].exp_ms, want[i].exp_ms);
	}
	if (!nwant)
		assert_null(out);
	free(out);
	free(copy);
}

static void test_example(void **state)
{
	const struct span in[] = {
		v4("10.0.0.0", "10.0.0.255", 1 * H),
		v4("10.0.0.5", "10.0.0.5", 2 * H),
	};
	const struct span want[] = {
		v4("10.0.0.0", "10.0.0.4", 1 * H),
		v4("10.0.0.5", "10.0.0.5", 2 * H),
		v4("10.0.0.6", "10.0.0.255", 1 * H),
	};

	expect(in, 2, 4, want, 3);
}

static void test_nested(void **state)
{
	const struct span in[] = {
		v4("10.0.0.5", "10.0.0.5", 1 * H),
		v4("10.0.0.0", "10.0.0.255", 2 * H),
		v4("10.0.0.16", "10.0.0.31", 1 * H),
	};
	const struct span want[] = { v4("10.0.0.0", "10.0.0.255", 2 * H) };

	expect(in, 3, 4, want, 1);
}

static void test_identical(void **state)
{
	const struct span in[] = {
		v4("10.0.0.0", "10.0.0.255", 1 * H),
		v4("10.0.0.0", "10.0.0.255", 3 * H),
		v4("10.0.0.0", "10.0.0.255", 2 * H),
	};
	const struct span want[] = { v4("10.0.0.0", "10.0.0.255", 3 * H) };

	expect(in, 3, 4, want, 1);
}

static void test_adjacent(void **state)
{
	const struct span same[] = {
		v4("10.0.0.128", "10.0.0.255", 1 * H),
		v4("10.0.0.0", "10.0.0.127", 1 * H),
	};
	const struct span merged[] = { v4("10.0.0.0", "10.0.0.255", 1 * H) };
	const struct span differ[] = {
		v4("10.0.0.128", "10.0.0.255", 2 * H),
		v4("10.0.0.0", "10.0.0.127", 1 * H),
	};
	const struct span kept[] = {
		v4("10.0.0.0", "10.0.0.127", 1 * H),
		v4("10.0.0.128", "10.0.0.255", 2 * H),
	};

	expect(same, 2, 4, merged, 1);
	expect(differ, 2, 4, kept, 2);
}

static void test_disjoint(void **state)
{
	const struct span in[] = {
		v4("10.0.1.0", "10.0.1.255", 1 * H),
		v4("10.0.0.0", "10.0.0.127", 1 * H),
		v4("192.0.2.7", "192.0.2.7", 5 * H),
	};
	const struct span want[] = {
		v4("10.0.0.0", "10.0.0.127", 1 * H),
		v4("10.0.1.0", "10.0.1.255", 1 * H),
		v4("192.0.2.7", "192.0.2.7", 5 * H),
	};

	expect(in, 3, 4, want, 3);
}

static void test_overlap_chain(void **state)
{
	const struct span in[] = {
		v4("10.0.0.0", "10.0.0.10", 1 * H),
		v4("10.0.0.5", "10.0.0.20", 2 * H),
		v4("10.0.0.15", "10.0.0.30", 1 * H),
	};
	const struct span want[] = {
		v4("10.0.0.0", "10.0.0.4", 1 * H),
		v4("10.0.0.5", "10.0.0.20", 2 * H),
		v4("10.0.0.21", "10.0.0.30", 1 * H),
	};

	expect(in, 3, 4, want, 3);
}

static void test_v6(void **state)
{
	const struct span in[] = {
		v6("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1 * H),
		v6("2001:db8::1", "2001:db8::1", 2 * H),
		v6("2001:db9::1", "2001:db9::ff", 1 * H),
	};
	const struct span want[] = {
		v6("2001:db8::", "2001:db8::", 1 * H),
		v6("2001:db8::1", "2001:db8::1", 2 * H),
		v6("2001:db8::2", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1 * H),
		v6("2001:db9::1", "2001:db9::ff", 1 * H),
	};
	const struct span adj[] = {
		v6("2001:db9::", "2001:db9::ff", 1 * H),
		v6("2001:db8::", "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff", 1 * H),
	};
	const struct span adj_want = v6("2001:db8::", "2001:db9::ff", 1 * H);

	expect(in, 3, 16, want, 4);
	/* Adjacency carries across the byte boundary: db8:ffff..ffff + 1 is db9::. */
	expect(adj, 2, 16, &adj_want, 1);
}

static void test_full_v4(void **state)
{
	const struct span in[] = {
		v4("0.0.0.0", "255.255.255.255", 1 * H),
		v4("255.255.255.255", "255.255.255.255", 2 * H),
		v4("0.0.0.0", "0.0.0.0", 2 * H),
	};
	const struct span want[] = {
		v4("0.0.0.0", "0.0.0.0", 2 * H),
		v4("0.0.0.1", "255.255.255.254", 1 * H),
		v4("255.255.255.255", "255.255.255.255", 2 * H),
	};
	const struct span whole[] = { v4("0.0.0.0", "255.255.255.255", 0) };

	expect(in, 3, 4, want, 3);
	expect(whole, 1, 4, whole, 1);
	expect(in, 1, 4, in, 1);
}

static void test_full_v6(void **state)
{
	const char *ones = "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff";
	const struct span in[] = {
		v6("::", ones, 1 * H),
		v6(ones, ones, 2 * H),
		v6("::", "::", 2 * H),
	};
	const struct span want[] = {
		v6("::", "::", 2 * H),
		v6("::1", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe", 1 * H),
		v6(ones, ones, 2 * H),
	};
	const struct span tail[] = {
		v6("ffff::", ones, 1 * H),
		v6("ffff::1", ones, 1 * H),
	};

	expect(in, 3, 16, want, 3);
	expect(tail, 2, 16, tail, 1);
}

static void test_edges(void **state)
{
	struct span in[] = {
		v4("10.0.0.9", "10.0.0.1", 1 * H), /* lo > hi: empty, ignored */
		v4("10.0.0.1", "10.0.0.1", -5),
	};
	struct span *out = (struct span *)1;
	size_t nout = 7;

	expect(in, 1, 4, NULL, 0);
	expect(in, 2, 4, &in[1], 1);
	assert_int_equal(ranges_disjoint(in, 0, 4, &out, &nout), 0);
	assert_null(out);
	assert_int_equal(nout, 0);
	assert_int_equal(ranges_disjoint(in, 2, 8, &out, &nout), -EINVAL);
	assert_null(out);
	/* Bytes past alen are not part of an IPv4 address. */
	memset(in[1].lo + 4, 0xee, 12);
	memset(in[1].hi + 4, 0x11, 12);
	assert_int_equal(ranges_disjoint(&in[1], 1, 4, &out, &nout), 0);
	assert_int_equal(nout, 1);
	assert_memory_equal(out[0].lo, "\x0a\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	assert_memory_equal(out[0].hi, "\x0a\0\0\x01\0\0\0\0\0\0\0\0\0\0\0\0", 16);
	free(out);
}

/* A fixed-seed generator, so a failure reproduces on every libc. */
static uint32_t rnd(uint64_t *s)
{
	*s = *s * 6364136223846793005ULL + 1442695040888963407ULL;
	return (uint32_t)(*s >> 33);
}

#define SPACE 256

/*
 * Random spans inside one /24 (or /120) whose last byte varies, cross-checked against the
 * per-address maximum computed by brute force. base is the address with last byte 0.
 */
static void oracle_round(uint64_t *seed, const uint8_t *base, size_t alen, size_t n)
{
	struct span *in = calloc(n, sizeof(*in)), *out = NULL;
	int64_t best[SPACE];
	size_t nout, k = 0;

	assert_non_null(in);
	for (size_t a = 0; a < SPACE; a++)
		best[a] = INT64_MIN;
	for (size_t i = 0; i < n; i++) {
		unsigned x = rnd(seed) % SPACE, y = rnd(seed) % SPACE;
		unsigned lo = x < y ? x : y, hi = x < y ? y : x;

		if (rnd(seed) % 3 == 0) {
			unsigned d = rnd(seed) % 4;

			hi = lo + d < SPACE ? lo + d : SPACE - 1;
		}
		memcpy(in[i].lo, base, alen);
		memcpy(in[i].hi, base, alen);
		in[i].lo[alen - 1] = (uint8_t)lo;
		in[i].hi[alen - 1] = (uint8_t)hi;
		in[i].exp_ms = (int64_t)(rnd(seed) % 4) * H;
		for (unsigned a = lo; a <= hi; a++)
			if (in[i].exp_ms > best[a])
				best[a] = in[i].exp_ms;
	}
	assert_int_equal(ranges_disjoint(in, n, alen, &out, &nout), 0);
	for (size_t a = 0; a < SPACE;) {
		size_t b = a;

		if (best[a] == INT64_MIN) {
			a++;
			continue;
		}
		while (b + 1 < SPACE && best[b + 1] == best[a])
			b++;
		assert_true(k < nout);
		assert_memory_equal(out[k].lo, base, alen - 1);
		assert_memory_equal(out[k].hi, base, alen - 1);
		assert_int_equal(out[k].lo[alen - 1], a);
		assert_int_equal(out[k].hi[alen - 1], b);
		assert_int_equal(out[k].exp_ms, best[a]);
		k++;
		a = b + 1;
	}
	assert_int_equal(k, nout);
	free(out);
	free(in);
}

static void test_oracle(void **state)
{
	static const uint8_t bases[][16] = {
		{ 10, 0, 0, 0 },
		{ 0, 0, 0, 0 },
		{ 255, 255, 255, 0 },
	};
	static const uint8_t base6[16] = { 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0 };
	uint64_t seed = 20240601;

	for (int round = 0; round < 200; round++) {
		size_t n = 1 + rnd(&seed) % 40;

		oracle_round(&seed, bases[round % 3], 4, n);
		oracle_round(&seed, base6, 16, n);
	}
}

/* 100k spans: the sweep must stay fast, and the output sorted, disjoint and merged. */
static void test_many(void **state)
{
	size_t n = 100000, nout = 0;
	struct span *in = calloc(n, sizeof(*in)), *out = NULL;
	uint64_t seed = 7;

	assert_non_null(in);
	for (size_t i = 0; i < n; i++) {
		uint32_t lo = rnd(&seed), len = rnd(&seed) % 100000, hi;

		hi = lo > UINT32_MAX - len ? UINT32_MAX : lo + len;
		lo = htonl(lo);
		hi = htonl(hi);
		memcpy(in[i].lo, &lo, 4);
		memcpy(in[i].hi, &hi, 4);
		in[i].exp_ms = (int64_t)(rnd(&seed) % 16);
	}
	assert_int_equal(ranges_disjoint(in, n, 4, &out, &nout), 0);
	assert_true(nout > 0 && nout <= 2 * n);
	for (size_t i = 0; i < nout; i++) {
		uint32_t lo, hi, prev;

		memcpy(&lo, out[i].lo, 4);
		memcpy(&hi, out[i].hi, 4);
		assert_true(ntohl(lo) <= ntohl(hi));
		if (!i)
			continue;
		memcpy(&prev, out[i - 1].hi, 4);
		assert_true(ntohl(prev) < ntohl(lo));
		if (ntohl(prev) + 1 == ntohl(lo))
			assert_true(out[i - 1].exp_ms != out[i].exp_ms);
	}
	free(out);
	free(in);
}

static struct box box4(const char *lo, const char *hi, const char *dlo, const char *dhi, int64_t exp)
{
	struct box b = { .exp_ms = exp };

	assert_int_equal(inet_pton(AF_INET, lo, b.lo), 1);
	assert_int_equal(inet_pton(AF_INET, hi, b.hi), 1);
	assert_int_equal(inet_pton(AF_INET, dlo, b.dlo), 1);
	assert_int_equal(inet_pton(AF_INET, dhi, b.dhi), 1);
	return b;
}

/* The e2e gateway example: a /24 to one machine, one address to a /24 of machines. */
static void test_boxes_example(void **state)
{
	const struct box in[] = {
		box4("192.0.2.0", "192.0.2.255", "10.1.0.5", "10.1.0.5", 1 * H),
		box4("192.0.2.2", "192.0.2.2", "10.1.0.0", "10.1.0.255", 2 * H),
	};
	const struct box want[] = {
		box4("192.0.2.2", "192.0.2.2", "10.1.0.0", "10.1.0.4", 2 * H),
		box4("192.0.2.0", "192.0.2.1", "10.1.0.5", "10.1.0.5", 1 * H),
		box4("192.0.2.2", "192.0.2.2", "10.1.0.5", "10.1.0.5", 2 * H),
		box4("192.0.2.3", "192.0.2.255", "10.1.0.5", "10.1.0.5", 1 * H),
		box4("192.0.2.2", "192.0.2.2", "10.1.0.6", "10.1.0.255", 2 * H),
	};
	struct box *out = NULL;
	size_t nout = 0;

	(void)state;
	assert_int_equal(ranges_disjoint2(in, 2, 4, &out, &nout), 0);
	assert_int_equal(nout, 5);
	for (size_t i = 0; i < nout; i++)
		assert_memory_equal(&out[i], &want[i], sizeof(want[i]));
	free(out);
	assert_int_equal(ranges_disjoint2(in, 0, 4, &out, &nout), 0);
	assert_null(out);
	assert_int_equal(nout, 0);
	/* A box whose destinations run backwards covers nothing, beside the first box. */
	{
		const struct box odd[] = {
			in[0], box4("192.0.2.9", "192.0.2.9", "10.1.0.5", "10.1.0.4", 3 * H),
		};

		assert_int_equal(ranges_disjoint2(odd, 2, 4, &out, &nout), 0);
		assert_int_equal(nout, 1);
		assert_memory_equal(&out[0], &in[0], sizeof(in[0]));
		free(out);
	}
}

/* Same sources on neighbouring destinations become one box; a gap keeps them apart. */
static void test_boxes_join(void **state)
{
	const struct box in[] = {
		box4("192.0.2.0", "192.0.2.9", "10.0.0.0", "10.0.0.9", 1 * H),
		box4("192.0.2.0", "192.0.2.9", "10.0.0.10", "10.0.0.19", 1 * H),
		box4("192.0.2.0", "192.0.2.9", "10.0.0.30", "10.0.0.39", 1 * H),
		box4("0.0.0.0", "255.255.255.255", "255.255.255.255", "255.255.255.255", 3 * H),
	};
	struct box *out = NULL;
	size_t nout = 0;

	(void)state;
	assert_int_equal(ranges_disjoint2(in, 4, 4, &out, &nout), 0);
	assert_int_equal(nout, 3);
	{
		struct box a = box4("192.0.2.0", "192.0.2.9", "10.0.0.0", "10.0.0.19", 1 * H);
		struct box b = box4("192.0.2.0", "192.0.2.9", "10.0.0.30", "10.0.0.39", 1 * H);
		struct box c = box4("0.0.0.0", "255.255.255.255", "255.255.255.255",
			"255.255.255.255", 3 * H);

		assert_memory_equal(&out[0], &a, sizeof(a));
		assert_memory_equal(&out[1], &b, sizeof(b));
		assert_memory_equal(&out[2], &c, sizeof(c));
	}
	free(out);
}

/*
 * Random boxes on a 32 x 32 corner of the space against brute force: every point carries the
 * latest expiry of the inputs covering it, in exactly one output box, and nothing else is
 * covered. (Joining is test_boxes_join's.)
 */
static void test_boxes_oracle(void **state)
{
	enum { SIDE = 32, ROUNDS = 300 };

	(void)state;
	srand(7);
	for (int round = 0; round < ROUNDS; round++) {
		/* Up to 16: boxes enter and leave the destination sweep at many cuts. */
		struct box in[16], *out = NULL;
		size_t n = 1 + (size_t)(rand() % 16), nout = 0;
		int64_t want[SIDE][SIDE] = { { 0 } };

		for (size_t i = 0; i < n; i++) {
			int a = rand() % SIDE, b = rand() % SIDE, c = rand() % SIDE, d = rand() % SIDE;

			memset(&in[i], 0, sizeof(in[i]));
			in[i].lo[3] = (uint8_t)(a < b ? a : b);
			in[i].hi[3] = (uint8_t)(a < b ? b : a);
			in[i].dlo[3] = (uint8_t)(c < d ? c : d);
			in[i].dhi[3] = (uint8_t)(c < d ? d : c);
			in[i].exp_ms = 1 + rand() % 3;
			for (int x = in[i].lo[3]; x <= in[i].hi[3]; x++)
				for (int y = in[i].dlo[3]; y <= in[i].dhi[3]; y++)
					if (in[i].exp_ms > want[x][y])
						want[x][y] = in[i].exp_ms;
		}
		assert_int_equal(ranges_disjoint2(in, n, 4, &out, &nout), 0);
		for (int x = 0; x < SIDE; x++) {
			for (int y = 0; y < SIDE; y++) {
				int hits = 0;

				for (size_t k = 0; k < nout; k++) {
					if (x < out[k].lo[3] || x > out[k].hi[3] || y < out[k].dlo[3] ||
						y > out[k].dhi[3])
						continue;
					hits++;
					assert_int_equal(out[k].exp_ms, want[x][y]);
				}
				assert_int_equal(hits, want[x][y] ? 1 : 0);
			}
		}
		free(out);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example),
		cmocka_unit_test(test_nested),
		cmocka_unit_test(test_identical),
		cmocka_unit_test(test_adjacent),
		cmocka_unit_test(test_disjoint),
		cmocka_unit_test(test_overlap_chain),
		cmocka_unit_test(test_v6),
		cmocka_unit_test(test_full_v4),
		cmocka_unit_test(test_full_v6),
		cmocka_unit_test(test_edges),
		cmocka_unit_test(test_oracle),
		cmocka_unit_test(test_many),
		cmocka_unit_test(test_boxes_example),
		cmocka_unit_test(test_boxes_join),
		cmocka_unit_test(test_boxes_oracle),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
