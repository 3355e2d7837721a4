/*
 * ruleset_read_grants over a kernel whose ruleset changes while it is read. The sets are read
 * a dump reply at a time, so an interrupted dump (NLM_F_DUMP_INTR) cannot be retried set by
 * set: the reader is told to forget (restart) and every set is read again. A real kernel
 * interrupts a dump only when another tool commits in the middle of one of several parts, which
 * no e2e test can time; here the dump is stubbed. This file defines every nft.c function
 * ruleset.c calls, so the linker takes them from here and nft.o is never linked (no netlink).
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include <libnftnl/expr.h>
#include <libnftnl/set.h>

#include "agent/nft.h"
#include "agent/ruleset.h"
#include "common/config.h"

#define N_ELEMS 40
#define PER_PART 2	/* elements per reply: a set comes in several */
#define NOW_MS 1800000000000LL

struct nlmsghdr *nft_batch_msg(struct nft_batch *b __attribute__((unused)),
	uint16_t type __attribute__((unused)), uint16_t family __attribute__((unused)),
	uint16_t flags __attribute__((unused)), const char *what __attribute__((unused)))
{
	return NULL;
}

int nft_counter_get(struct nft *n __attribute__((unused)),
	const char *table __attribute__((unused)), const char *name __attribute__((unused)),
	uint64_t *packets, uint64_t *bytes)
{
	*packets = *bytes = 0;
	return -ENOSYS;
}

int nft_set_dump(struct nft *n __attribute__((unused)), const char *table __attribute__((unused)),
	const char *set __attribute__((unused)), struct nftnl_set **s)
{
	*s = NULL;
	return -ENOSYS;
}

int nft_table_view(struct nft *n __attribute__((unused)), const char *table __attribute__((unused)),
	struct nft_table_view *v)
{
	memset(v, 0, sizeof(*v));
	return -ENOSYS;
}

void nft_table_view_free(struct nft_table_view *v __attribute__((unused)))
{
}

/* The kernel: 10.0.0.k, tcp/22, for k = 1..N_ELEMS, each in its shard's set. */
static struct {
	int interrupt;	/* readings still to interrupt, at the set of shard 3 */
	int restarts;	/* how often the reader was told to forget */
	int fail_at;	/* the reader fails at its fail_at-th element (0: never) */
	int seen;
	uint32_t got[N_ELEMS];
	int64_t exp[N_ELEMS];
	size_t n;
} k;

static struct nftnl_set_elem *elem(unsigned i)
{
	struct nftnl_set_elem *e = nftnl_set_elem_alloc();
	uint8_t key[12] = { 10, 0, 0, (uint8_t)i, IPPROTO_TCP };
	uint16_t port = htons(22);

	assert_non_null(e);
	memcpy(&key[8], &port, 2);
	nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, sizeof(key));
	nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_EXPIRATION, 60000 + i);
	return e;
}

int nft_set_elems_each(struct nft *n __attribute__((unused)),
	const char *table __attribute__((unused)), const char *set,
	int (*fn)(struct nftnl_set *part, void *arg), void *arg)
{
	char name[32];
	struct nftnl_set *part = NULL;
	int in_part = 0, ret = 0;

	for (unsigned i = 1; ret == 0 && i <= N_ELEMS; i++) {
		snprintf(name, sizeof(name), "%s", ruleset_set_name(RULESET_HOST_ADDR, AF_INET,
			i % RULESET_ADDR_SHARDS));
		if (strcmp(name, set))
			continue;
		if (!part)
			assert_non_null(part = nftnl_set_alloc());
		nftnl_set_elem_add(part, elem(i));
		if (++in_part == PER_PART) {
			ret = fn(part, arg);
			nftnl_set_free(part);
			part = NULL;
			in_part = 0;
		}
	}
	if (part) {
		if (!ret)
			ret = fn(part, arg);
		nftnl_set_free(part);
	}
	if (!ret && k.interrupt > 0 &&
		!strcmp(set, ruleset_set_name(RULESET_HOST_ADDR, AF_INET, 3))) {
		k.interrupt--;
		return -EINTR;
	}
	return ret;
}

static int reader(void *arg __attribute__((unused)), const char *set __attribute__((unused)),
	const struct ruleset_elem *re, const struct ruleset_raw *raw __attribute__((unused)))
{
	assert_non_null(re);
	if (++k.seen == k.fail_at)
		return -ENOMEM;
	assert_true(k.n < N_ELEMS);
	k.got[k.n] = re->lo[3];
	k.exp[k.n++] = re->exp_ms;
	return 0;
}

static void forget(void *arg __attribute__((unused)))
{
	k.restarts++;
	k.n = 0;
}

static int read_all(int interrupt, int fail_at)
{
	struct config cfg = { .mode = CONFIG_MODE_HOST };

	memset(&k, 0, sizeof(k));
	k.interrupt = interrupt;
	k.fail_at = fail_at;
	return ruleset_read_grants(NULL, &cfg, NOW_MS, reader, forget, NULL);
}

/* Every element once, with the kernel's time left added to the reading's moment. */
static void assert_each_once(void)
{
	bool seen[N_ELEMS + 1] = { false };

	assert_int_equal(k.n, N_ELEMS);
	for (size_t i = 0; i < k.n; i++) {
		assert_true(k.got[i] >= 1 && k.got[i] <= N_ELEMS);
		assert_false(seen[k.got[i]]);
		seen[k.got[i]] = true;
		assert_true(k.exp[i] == NOW_MS + 60000 + k.got[i]);
	}
}

static void read_whole(void **state __attribute__((unused)))
{
	assert_int_equal(read_all(0, 0), 0);
	assert_int_equal(k.restarts, 0);
	assert_each_once();
}

static void interrupted_reads_again(void **state __attribute__((unused)))
{
	assert_int_equal(read_all(2, 0), 0);
	assert_int_equal(k.restarts, 2);
	assert_each_once();
}

static void interrupted_every_time(void **state __attribute__((unused)))
{
	assert_int_equal(read_all(1000, 0), -EINTR);
	assert_int_equal(k.restarts, NFT_DUMP_TRIES - 1);
}

static void reader_failure_ends_it(void **state __attribute__((unused)))
{
	assert_int_equal(read_all(1, 5), -ENOMEM);
	assert_int_equal(k.restarts, 0);
	assert_int_equal(k.seen, 5);
}

/*
 * What a reading takes for jitd's element and what for a stray: one with a stateful expression
 * of its own (a quota that would throttle the grant it passes for), or with padding that is
 * not zero (it matches no packet, and jitd's deletion of it would not match it), is a stray.
 */
static void strays_by_expression_or_padding(void **state __attribute__((unused)))
{
	const unsigned i = 7, shard = i % RULESET_ADDR_SHARDS;
	struct nftnl_set_elem *e = elem(i);
	struct ruleset_elem re;
	struct nftnl_expr *x;
	uint32_t klen;
	uint8_t key[12];

	assert_int_equal(ruleset_elem_parse(e, RULESET_HOST_ADDR, AF_INET, shard, NOW_MS, &re), 0);
	assert_int_equal(re.port, 22);
	assert_non_null(x = nftnl_expr_alloc("quota"));
	nftnl_set_elem_add_expr(e, x);
	assert_int_equal(ruleset_elem_parse(e, RULESET_HOST_ADDR, AF_INET, shard, NOW_MS, &re),
		-EINVAL);
	nftnl_set_elem_free(e);
	for (size_t pad = 5; pad < 12; pad++) {
		if (pad == 8 || pad == 9)
			continue; /* the port */
		e = elem(i);
		memcpy(key, nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen), sizeof(key));
		key[pad] = 1;
		nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, sizeof(key));
		assert_int_equal(ruleset_elem_parse(e, RULESET_HOST_ADDR, AF_INET, shard, NOW_MS,
			&re), -EINVAL);
		nftnl_set_elem_free(e);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(read_whole),
		cmocka_unit_test(interrupted_reads_again),
		cmocka_unit_test(interrupted_every_time),
		cmocka_unit_test(reader_failure_ends_it),
		cmocka_unit_test(strays_by_expression_or_padding),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
