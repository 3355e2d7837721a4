#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "common/b64url.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/*
 * Each character's value plus one, 0 for a character outside the alphabet: one load per
 * character, where the comparisons cost a restore of 100,000 tokens a tenth of its time.
 */
static const uint8_t decode_table[256] = {
	['A'] = 1, ['B'] = 2, ['C'] = 3, ['D'] = 4, ['E'] = 5, ['F'] = 6, ['G'] = 7, ['H'] = 8,
	['I'] = 9, ['J'] = 10, ['K'] = 11, ['L'] = 12, ['M'] = 13, ['N'] = 14, ['O'] = 15,
	['P'] = 16, ['Q'] = 17, ['R'] = 18, ['S'] = 19, ['T'] = 20, ['U'] = 21, ['V'] = 22,
	['W'] = 23, ['X'] = 24, ['Y'] = 25, ['Z'] = 26, ['a'] = 27, ['b'] = 28, ['c'] = 29,
	['d'] = 30, ['e'] = 31, ['f'] = 32, ['g'] = 33, ['h'] = 34, ['i'] = 35, ['j'] = 36,
	['k'] = 37, ['l'] = 38, ['m'] = 39, ['n'] = 40, ['o'] = 41, ['p'] = 42, ['q'] = 43,
	['r'] = 44, ['s'] = 45, ['t'] = 46, ['u'] = 47, ['v'] = 48, ['w'] = 49, ['x'] = 50,
	['y'] = 51, ['z'] = 52, ['0'] = 53, ['1'] = 54, ['2'] = 55, ['3'] = 56, ['4'] = 57,
	['5'] = 58, ['6'] = 59, ['7'] = 60, ['8'] = 61, ['9'] = 62, ['-'] = 63, ['_'] = 64
};

size_t b64url_decoded_max(size_t len)
{
	size_t rem = len % 4;

	return len / 4 * 3 + (rem > 1 ? rem - 1 : 0);
}

/*
 * Checks in[0..len) and, unless out is NULL, decodes it: four characters to three bytes at a
 * time, which halves what a character costs against one at a time. RFC 4648 section 3.5: a
 * final group of 2 or 3 characters leaves 4 or 2 bits unused. Were they allowed to be
 * non-zero, one value would have several spellings (and one token several signatures that all
 * verify).
 */
static int decode(const unsigned char *in, size_t len, unsigned char *out)
{
	size_t full = len - len % 4, rem = len % 4;
	uint32_t a, b, c, d;

	if (rem == 1)
		return -EINVAL;
	for (size_t i = 0; i < full; i += 4) {
		a = decode_table[in[i]];
		b = decode_table[in[i + 1]];
		c = decode_table[in[i + 2]];
		d = decode_table[in[i + 3]];
		if (!a || !b || !c || !d)
			return -EINVAL;
		if (out) {
			uint32_t v = (a - 1) << 18 | (b - 1) << 12 | (c - 1) << 6 | (d - 1);

			*out++ = (unsigned char)(v >> 16);
			*out++ = (unsigned char)(v >> 8);
			*out++ = (unsigned char)v;
		}
	}
	if (!rem)
		return 0;
	a = decode_table[in[full]];
	b = decode_table[in[full + 1]];
	c = rem == 3 ? decode_table[in[full + 2]] : 1;
	if (!a || !b || !c || (rem == 2 ? (b - 1) & 0x0f : (c - 1) & 0x03))
		return -EINVAL;
	if (out) {
		uint32_t v = (a - 1) << 12 | (b - 1) << 6 | (c - 1);

		*out++ = (unsigned char)(v >> 10);
		if (rem == 3)
			*out = (unsigned char)(v >> 2);
	}
	return 0;
}

int b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
	size_t need = b64url_decoded_max(len);
	int ret;

	*outlen = 0;
	/* Invalid input is reported as such even when it would not fit either. */
	if (need > cap)
		return (ret = decode((const unsigned char *)in, len, NULL)) ? ret : -ENOSPC;
	if ((ret = decode((const unsigned char *)in, len, out)))
		return ret;
	*outlen = need;
	return 0;
}

size_t b64url_encoded_len(size_t len)
{
	size_t rem = len % 3;

	return len / 3 * 4 + (rem ? rem + 1 : 0);
}

void b64url_encode(const unsigned char *in, size_t len, char *out)
{
	uint32_t acc = 0;
	unsigned bits = 0;

	for (size_t i = 0; i < len; i++) {
		acc = (acc << 8) | in[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			*out++ = alphabet[(acc >> bits) & 0x3f];
		}
		acc &= (1u << bits) - 1;
	}
	if (bits)
		*out++ = alphabet[(acc << (6 - bits)) & 0x3f];
	*out = '\0';
}
