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

/* Cut at 255 bytes, a message ends on a whole UTF-8 character: JSON takes it. */
static void fail_cuts_whole_characters(void **state __attribute__((unused)))
{
	static const char *chars[] = { "\xc3\xa9", "\xe4\xb8\xad", "\xf0\x9f\x94\x91" };
	struct jit_error e;
	char claim[300];

	for (size_t c = 0; c < sizeof(chars) / sizeof(chars[0]); c++) {
		size_t w = strlen(chars[c]);

		/* Each offset of the cut within a character, for each width. */
		for (size_t pad = 0; pad < w; pad++) {
			size_t len = 0;
			json_t *j;

			for (; len + w < sizeof(claim); len += w)
				memcpy(claim + len, chars[c], w);
			claim[len] = '\0';
			jit_fail(&e, JIT_ERR_REPLAY, "%.*sgrant '%s' was already used", (int)pad,
				"xxx", claim);
			assert_true(strlen(e.msg) > sizeof(e.msg) - 1 - w);
			assert_non_null(j = json_string(e.msg));
			json_decref(j);
		}
	}
	/* ASCII is cut at the last byte, as before. */
	memset(claim, 'a', sizeof(claim) - 1);
	claim[sizeof(claim) - 1] = '\0';
	jit_fail(&e, JIT_ERR_REPLAY, "%s", claim);
	assert_int_equal(strlen(e.msg), sizeof(e.msg) - 1);
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
		cmocka_unit_test(fail_cuts_whole_characters),
		cmocka_unit_test(shown_is_printable_and_bounded),
		cmocka_unit_test(json_types_named),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
