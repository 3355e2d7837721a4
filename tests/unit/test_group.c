#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdbool.h>

#include "agent/group.h"

/* Nothing verified, nothing to commit: whatever is in flight or settling. */
static void nothing_ready(void **state __attribute__((unused)))
{
	assert_false(group_due(0, 0, false));
	assert_false(group_due(0, 0, true));
	assert_false(group_due(0, 5, false));
	assert_false(group_due(0, 5, true));
}

/* None left to verify: the ready ones go, even one, even behind a group still settling. */
static void none_in_flight(void **state __attribute__((unused)))
{
	assert_true(group_due(1, 0, false));
	assert_true(group_due(1, 0, true));
	assert_true(group_due(GROUP_MAX + 1, 0, true));
}

/* A full group goes at once: waiting for more could only make it larger than a group holds. */
static void full(void **state __attribute__((unused)))
{
	assert_true(group_due(GROUP_MAX, 1000, true));
	assert_true(group_due(GROUP_MAX + 7, 1000, true));
	assert_false(group_due(GROUP_MAX - 1, 1000, true));
}

/*
 * The disk idle (nothing settling): the ready ones go once they are at least half of those
 * outstanding, that is at least as many as are still in flight; fewer wait for the rest.
 */
static void disk_idle_half(void **state __attribute__((unused)))
{
	assert_true(group_due(4, 4, false));
	assert_true(group_due(5, 4, false));
	assert_false(group_due(3, 4, false));
	assert_false(group_due(1, 2, false));
	assert_true(group_due(1, 1, false));
}

/* A group settling and more in flight: the ready ones wait (for it, the rest, or the timer). */
static void settling_waits(void **state __attribute__((unused)))
{
	assert_false(group_due(4, 4, true));
	assert_false(group_due(100, 1, true));
	assert_false(group_due(1, 1, true));
}

/* A group takes every ready grant up to GROUP_MAX; the rest make the next group. */
static void take(void **state __attribute__((unused)))
{
	size_t left = 600, groups = 0;

	assert_int_equal(group_take(0), 0);
	assert_int_equal(group_take(1), 1);
	assert_int_equal(group_take(GROUP_MAX), GROUP_MAX);
	assert_int_equal(group_take(GROUP_MAX + 1), GROUP_MAX);
	assert_int_equal(group_take(100000), GROUP_MAX);
	/* 600 ready and none in flight: due until all are taken, in groups of 256, 256, 88. */
	while (group_due(left, 0, groups > 0)) {
		size_t n = group_take(left);

		assert_true(n > 0 && n <= GROUP_MAX);
		left -= n;
		groups++;
	}
	assert_int_equal(left, 0);
	assert_int_equal(groups, 3);
}

/*
 * A group syncs on the loop only when it is alone and at most one client is connected: any
 * grant verifying or waiting, any other group settling, or a second client keeps the thread.
 */
static void sync_here(void **state __attribute__((unused)))
{
	assert_true(group_sync_here(0, 0, false, 0));
	assert_true(group_sync_here(0, 0, false, 1));
	assert_false(group_sync_here(0, 0, false, 2));
	assert_false(group_sync_here(1, 0, false, 1));
	assert_false(group_sync_here(0, 1, false, 1));
	assert_false(group_sync_here(0, 0, true, 1));
	assert_false(group_sync_here(3, 2, true, 16));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(nothing_ready),
		cmocka_unit_test(none_in_flight),
		cmocka_unit_test(full),
		cmocka_unit_test(disk_idle_half),
		cmocka_unit_test(settling_waits),
		cmocka_unit_test(take),
		cmocka_unit_test(sync_here),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
