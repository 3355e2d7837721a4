#include <errno.h>
#include <stdint.h>
#include <string.h>

#include "common/b64url.h"

static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/* Value of a base64url character, or -1: '+', '/', '=' and whitespace are all invalid here. */
static int value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '-')
		return 62;
	if (c == '_')
		return 63;
	return -1;
}

size_t b64url_decoded_max(size_t len)
{
	size_t rem = len % 4;

	return len / 4 * 3 + (rem > 1 ? rem - 1 : 0);
}

/*
 * RFC 4648 section 3.5: a final group of 2 or 3 characters leaves 4 or 2 bits unused. Were they
 * allowed to be non-zero, one value would have several spellings (and one token several
 * signatures that all verify).
 */
static int check(const char *in, size_t len)
{
	size_t rem = len % 4;
	int last;

	if (rem == 1)
		return -EINVAL;
	for (size_t i = 0; i < len; i++)
		if (value((unsigned char)in[i]) < 0)
			return -EINVAL;
	if (rem == 0)
		return 0;
	last = value((unsigned char)in[len - 1]);
	if (last & (rem == 2 ? 0x0f : 0x03))
		return -EINVAL;
	return 0;
}

int b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen)
{
	size_t need = b64url_decoded_max(len), o = 0;
	uint32_t acc = 0;
	unsigned bits = 0;
	int ret;

	*outlen = 0;
	/* Invalid input is reported as such even when it would not fit either. */
	if ((ret = check(in, len)))
		return ret;
	if (need > cap)
		return -ENOSPC;
	for (size_t i = 0; i < len; i++) {
		acc = (acc << 6) | (uint32_t)value((unsigned char)in[i]);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			out[o++] = (unsigned char)(acc >> bits);
		}
		acc &= (1u << bits) - 1;
	}
	*outlen = o;
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
