/*
 * Error codes and the text messages carry: names round-trip, jit_fail records and returns the
 * code, attacker text is quoted as printable ASCII of at most 64 bytes, and JSON types are named.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <string.h>

#include <jansson.h>

#include "common/err.h"

static void names_round_trip(void **state __attribute__((unused)))
{
	for (int code = 0; code > -JIT_ERR__COUNT; code--)
		assert_int_equal(jit_err_from_name(jit_err_name(code)), code);
	assert_string_equal(jit_err_name(JIT_ERR_BAD_SIGNATURE), "bad_signature");
	assert_string_equal(jit_err_name(-JIT_ERR__COUNT), "internal");
	assert_int_equal(jit_err_from_name("no_such_code"), JIT_ERR_INTERNAL);
}

static void fail_records(void **state __attribute__((unused)))
{
	struct jit_error e;

	assert_int_equal(jit_fail(&e, JIT_ERR_EXPIRED, "grant '%s': expired", "g1"),
		JIT_ERR_EXPIRED);
	assert_int_equal(e.code, JIT_ERR_EXPIRED);
	assert_string_equal(e.msg, "grant 'g1': expired");
	assert_int_equal(jit_fail(NULL, JIT_ERR_BUSY, "no record"), JIT_ERR_BUSY);
}

static void shown_is_printable_and_bounded(void **state __attribute__((unused)))
{
	char buf[JIT_SHOWN_LEN], long_text[200];

	assert_string_equal(jit_shown("kid\n\x1b[31m\x7f\xc3\xa9", buf), "kid??[31m???");
	memset(long_text, 'a', sizeof(long_text) - 1);
	long_text[sizeof(long_text) - 1] = '\0';
	assert_int_equal(strlen(jit_shown(long_text, buf)), 64);
	assert_string_equal(jit_shown(NULL, buf), "");
	assert_ptr_equal(jit_shown("x", buf), buf);
}

static void json_types_named(void **state __attribute__((unused)))
{
	json_t *v = json_loads("[{}, [], \"s\", 1, 1.5, true, false, null]", 0, NULL);
	const char *want[] = { "an object", "an array", "a string", "an integer", "a real number",
		"a boolean", "a boolean", "null" };

	assert_non_null(v);
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
		assert_string_equal(jit_json_type(json_array_get(v, i)), want[i]);
	json_decref(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(names_round_trip),
		cmocka_unit_test(fail_records),
		cmocka_unit_test(shown_is_printable_and_bounded),
		cmocka_unit_test(json_types_named),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
