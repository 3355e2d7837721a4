#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "common/b64url.h"

#define ALPHABET "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"

static void assert_decodes(const char *in, const void *want, size_t want_len)
{
	unsigned char out[64];
	size_t n = 99;

	if (b64url_decode(in, strlen(in), out, sizeof(out), &n))
		fail_msg("'%s' refused", in);
	assert_int_equal(n, want_len);
	assert_memory_equal(out, want, want_len);
}

static void assert_refused(const char *in, size_t len)
{
	unsigned char out[64];
	size_t n = 99;

	if (b64url_decode(in, len, out, sizeof(out), &n) != -EINVAL)
		fail_msg("'%.*s' accepted", (int)len, in);
	assert_int_equal(n, 0);
}

static void assert_encodes(const void *in, size_t len, const char *want)
{
	char out[64];

	assert_int_equal(b64url_encoded_len(len), strlen(want));
	b64url_encode(in, len, out);
	assert_string_equal(out, want);
}

/* RFC 4648 section 10, without the padding. */
static void test_rfc4648(void **state)
{
	static const char *const enc[] = { "", "Zg", "Zm8", "Zm9v", "Zm9vYg", "Zm9vYmE",
		"Zm9vYmFy" };

	for (size_t i = 0; i < 7; i++) {
		assert_encodes("foobar", i, enc[i]);
		assert_decodes(enc[i], "foobar", i);
	}
}

static void test_url_alphabet(void **state)
{
	static const unsigned char b[] = { 0xfb, 0xef, 0xff, 0xfe };

	/* Standard base64 would be "++//" and "/g==". */
	assert_encodes(b, 3, "--__");
	assert_decodes("--__", b, 3);
	assert_encodes(b + 3, 1, "_g");
	assert_decodes("_g", b + 3, 1);
}

static void test_invalid(void **state)
{
	static const char *const bad[] = {
		"Zg==", "Zm8=", "Zg=", /* padding */
		"++//", "Zm9/", "Zm9+", /* standard alphabet */
		"Zm9v Yg", " Zm9v", "Zm9v\n", "Zm9v\r\nYg", "Zm\t9v", /* whitespace */
		"Z", "Zm9vY", /* one character in the last group */
		"Zh", "Zm9", "Zm9vYh", "AB", "AAB", /* non-zero unused bits */
		"Zm9.", "Zm9v!", "\x80\x80\x80\x80", "Zm9\xc3\xa9",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_refused(bad[i], strlen(bad[i]));
	assert_refused("Zm\0v", 4);
	assert_refused("Zm9v\0", 5);
}

static void test_lengths(void **state)
{
	unsigned char out[3];
	size_t n = 99;

	assert_int_equal(b64url_decoded_max(0), 0);
	assert_int_equal(b64url_decoded_max(2), 1);
	assert_int_equal(b64url_decoded_max(3), 2);
	assert_int_equal(b64url_decoded_max(4), 3);
	assert_int_equal(b64url_decoded_max(86), 64);
	assert_int_equal(b64url_encoded_len(0), 0);
	assert_int_equal(b64url_encoded_len(64), 86);
	assert_int_equal(b64url_encoded_len(32), 43);

	assert_int_equal(b64url_decode("Zm9vYg", 6, out, 3, &n), -ENOSPC);
	assert_int_equal(n, 0);
	assert_int_equal(b64url_decode("Zm9v", 4, out, 2, &n), -ENOSPC);
	assert_int_equal(b64url_decode("Zm9v", 4, out, 3, &n), 0);
	assert_int_equal(n, 3);
	/* Invalid input says so even when it would not fit. */
	assert_int_equal(b64url_decode("Zm9vYg==", 8, out, 3, &n), -EINVAL);
	assert_int_equal(b64url_decode("", 0, out, 0, &n), 0);
	assert_int_equal(n, 0);
}

/* Every 2- and 3-character string: exactly one spelling per value must decode. */
static void test_canonical(void **state)
{
	static unsigned char seen[65536];
	unsigned char out[2];
	char in[4] = "";
	size_t ok = 0, n;

	for (int a = 0; a < 64; a++) {
		for (int b = 0; b < 64; b++) {
			in[0] = ALPHABET[a];
			in[1] = ALPHABET[b];
			if (b64url_decode(in, 2, out, sizeof(out), &n))
				continue;
			assert_int_equal(n, 1);
			assert_int_equal(seen[out[0]]++, 0);
			ok++;
		}
	}
	assert_int_equal(ok, 256);
	memset(seen, 0, sizeof(seen));
	ok = 0;
	for (int a = 0; a < 64; a++) {
		for (int b = 0; b < 64; b++) {
			for (int c = 0; c < 64; c++) {
				in[0] = ALPHABET[a];
				in[1] = ALPHABET[b];
				in[2] = ALPHABET[c];
				if (b64url_decode(in, 3, out, sizeof(out), &n))
					continue;
				assert_int_equal(n, 2);
				assert_int_equal(seen[out[0] << 8 | out[1]]++, 0);
				ok++;
			}
		}
	}
	assert_int_equal(ok, 65536);
}

static void test_roundtrip(void **state)
{
	unsigned char in[200], out[200];
	char enc[300];
	size_t n;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(i * 37 + 11);
	for (size_t len = 0; len <= sizeof(in); len++) {
		b64url_encode(in, len, enc);
		assert_int_equal(strlen(enc), b64url_encoded_len(len));
		assert_int_equal(b64url_decoded_max(strlen(enc)), len);
		assert_int_equal(b64url_decode(enc, strlen(enc), out, len, &n), 0);
		assert_int_equal(n, len);
		assert_memory_equal(in, out, len);
	}
}

/* A character outside the alphabet is refused wherever it stands, in a full group or the last. */
static void test_invalid_anywhere(void **state)
{
	static const char bad[] = { '=', '+', '/', '.', ' ', '\0', (char)0x80 };
	unsigned char in[40], out[40];
	char enc[64];
	size_t n;

	for (size_t i = 0; i < sizeof(in); i++)
		in[i] = (unsigned char)(i * 53 + 7);
	for (size_t len = 1; len <= sizeof(in); len++) {
		size_t elen = b64url_encoded_len(len);

		b64url_encode(in, len, enc);
		for (size_t pos = 0; pos < elen; pos++) {
			for (size_t k = 0; k < sizeof(bad); k++) {
				char keep = enc[pos];

				enc[pos] = bad[k];
				n = 99;
				if (b64url_decode(enc, elen, out, sizeof(out), &n) != -EINVAL || n)
					fail_msg("length %zu: 0x%02x at %zu accepted", len,
						(unsigned char)bad[k], pos);
				enc[pos] = keep;
			}
		}
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4648),
		cmocka_unit_test(test_url_alphabet),
		cmocka_unit_test(test_invalid),
		cmocka_unit_test(test_lengths),
		cmocka_unit_test(test_canonical),
		cmocka_unit_test(test_roundtrip),
		cmocka_unit_test(test_invalid_anywhere),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
