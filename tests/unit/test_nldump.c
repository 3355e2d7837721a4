/*
 * nldump_run on datagrams built here, as the kernel would send them: how a dump ends (its
 * NLMSG_DONE, with or without an error), an NLMSG_ERROR (an error, or the ack of a request),
 * and a part marked NLM_F_DUMP_INTR.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>
#include <linux/netlink.h>

#include "agent/nldump.h"

#define SEQ 7
#define PORTID 1234
#define DATA_TYPE (NLMSG_MIN_TYPE + 1)

struct dgram {
	char buf[4096];
	size_t len;
};

/* Appends a message of type with flags and an int payload (none when !with_int). */
static void put(struct dgram *d, uint16_t type, uint16_t flags, bool with_int, int value)
{
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(d->buf + d->len);

	nlh->nlmsg_type = type;
	nlh->nlmsg_flags = flags;
	nlh->nlmsg_seq = SEQ;
	nlh->nlmsg_pid = PORTID;
	if (type == NLMSG_ERROR) {
		struct nlmsgerr *e = mnl_nlmsg_put_extra_header(nlh, sizeof(*e));

		e->error = value;
	} else if (with_int) {
		memcpy(mnl_nlmsg_put_extra_header(nlh, sizeof(value)), &value, sizeof(value));
	}
	d->len += nlh->nlmsg_len;
}

static int count_cb(const struct nlmsghdr *nlh, void *arg)
{
	(void)nlh;
	(*(int *)arg)++;
	return MNL_CB_OK;
}

static int run(struct dgram *d, int *seen, bool *intr)
{
	*seen = 0;
	*intr = false;
	return nldump_run(d->buf, d->len, SEQ, PORTID, count_cb, seen, intr);
}

static void test_done(void **state)
{
	struct dgram d = { .len = 0 };
	bool intr;
	int seen;

	(void)state;
	put(&d, DATA_TYPE, NLM_F_MULTI, false, 0);
	put(&d, NLMSG_DONE, NLM_F_MULTI, true, 0);
	assert_int_equal(run(&d, &seen, &intr), 0);
	assert_int_equal(seen, 1);
	assert_false(intr);
}

/* The set or table deleted between two parts: the error is only in the NLMSG_DONE. */
static void test_done_with_error(void **state)
{
	struct dgram d = { .len = 0 };
	bool intr;
	int seen;

	(void)state;
	put(&d, DATA_TYPE, NLM_F_MULTI, false, 0);
	put(&d, NLMSG_DONE, NLM_F_MULTI, true, -ENOENT);
	assert_true(run(&d, &seen, &intr) < 0);
	assert_int_equal(errno, ENOENT);
}

static void test_error_and_ack(void **state)
{
	struct dgram d = { .len = 0 };
	bool intr;
	int seen;

	(void)state;
	put(&d, NLMSG_ERROR, 0, false, -EBUSY);
	assert_true(run(&d, &seen, &intr) < 0);
	assert_int_equal(errno, EBUSY);
	d.len = 0;
	/* A request's answer, then its ack: the conversation ends, well. */
	put(&d, DATA_TYPE, 0, false, 0);
	put(&d, NLMSG_ERROR, 0, false, 0);
	assert_int_equal(run(&d, &seen, &intr), 0);
	assert_int_equal(seen, 1);
}

/* Marked interrupted: noted, and read to the end, so that the caller may ask again. */
static void test_interrupted(void **state)
{
	struct dgram d = { .len = 0 };
	bool intr;
	int seen;

	(void)state;
	put(&d, DATA_TYPE, NLM_F_MULTI | NLM_F_DUMP_INTR, false, 0);
	put(&d, DATA_TYPE, NLM_F_MULTI | NLM_F_DUMP_INTR, false, 0);
	put(&d, NLMSG_DONE, NLM_F_MULTI | NLM_F_DUMP_INTR, true, 0);
	assert_int_equal(run(&d, &seen, &intr), 0);
	assert_true(intr);
	assert_int_equal(seen, 2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_done),
		cmocka_unit_test(test_done_with_error),
		cmocka_unit_test(test_error_and_ack),
		cmocka_unit_test(test_interrupted),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
