/*
 * Growable arrays: the first allocation, doubling, a jump straight to what is wanted, no move
 * while there is room, and a size that would overflow refused with the array left as it was.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdlib.h>

#include "common/array.h"

static void grows(void **state __attribute__((unused)))
{
	size_t cap = 0;
	int *v = NULL, *nv;

	assert_non_null(v = array_reserve(v, &cap, 1, sizeof(*v), 8));
	assert_int_equal(cap, 8);
	for (int i = 0; i < 8; i++)
		v[i] = i;
	/* Room enough: the same array, untouched. */
	assert_ptr_equal(array_reserve(v, &cap, 8, sizeof(*v), 8), v);
	assert_int_equal(cap, 8);
	/* One more: twice the capacity, the contents kept. */
	assert_non_null(v = array_reserve(v, &cap, 9, sizeof(*v), 8));
	assert_int_equal(cap, 16);
	for (int i = 0; i < 8; i++)
		assert_int_equal(v[i], i);
	/* More than twice: straight to what is wanted. */
	assert_non_null(nv = array_reserve(v, &cap, 100, sizeof(*v), 8));
	v = nv;
	assert_int_equal(cap, 100);
	v[99] = 99;
	free(v);
}

static void overflow_refused(void **state __attribute__((unused)))
{
	size_t cap = 0;
	uint64_t *v = NULL;

	assert_non_null(v = array_reserve(v, &cap, 4, sizeof(*v), 4));
	v[3] = 3;
	/* 2^62 elements of 8 bytes: a byte size that realloc(v, n * size) would wrap to 0. */
	assert_null(array_reserve(v, &cap, (size_t)1 << 62, sizeof(*v), 4));
	assert_int_equal(cap, 4);
	assert_int_equal(v[3], 3);
	free(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(grows),
		cmocka_unit_test(overflow_refused),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
