#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/b64url.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"
#include "common/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* RFC 8037 A.1: the seed corpus can then hold tokens that really verify. */
static const unsigned char a1_d[32] = { 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba,
	0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
	0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60 };
static const unsigned char a1_x[32] = { 0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5,
	0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
	0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a };

static EVP_PKEY *pub, *priv;

/* Canonical base64url means decode then encode gives back the input, byte for byte. */
static void check_b64url(const uint8_t *data, size_t size)
{
	size_t cap = b64url_decoded_max(size), n = 0;
	unsigned char *out = malloc(cap + 1);
	char *enc;

	if (!out)
		return;
	if (b64url_decode((const char *)data, size, out, cap, &n) == 0) {
		if (n != cap || !(enc = malloc(b64url_encoded_len(n) + 1)))
			__builtin_trap();
		b64url_encode(out, n, enc);
		if (strlen(enc) != size || memcmp(enc, data, size))
			__builtin_trap();
		free(enc);
	} else if (n != 0) {
		__builtin_trap();
	}
	free(out);
}

/* Re-signing what was decoded must give a token that decodes to the same header and payload. */
static void check_resign(const struct jws *j)
{
	struct jit_error e = { 0 };
	struct jws k;
	char *tok = NULL;

	if (jws_sign(j->header, j->payload, j->payload_len, priv, &tok))
		return;
	if (jws_decode(tok, strlen(tok), &k, &e) == 0) {
		if (!json_equal(k.header, j->header) || k.payload_len != j->payload_len ||
			memcmp(k.payload, j->payload, j->payload_len) || jws_verify(&k, pub, &e))
			__builtin_trap();
		jws_clear(&k);
	} else if (e.code != JIT_ERR_TOO_LARGE) {
		__builtin_trap();
	}
	free(tok);
}

/*
 * A thread's kept header (jws_decode_with) must never change an outcome. The verifier lives
 * across inputs, so the header it holds is the last input's, often a near copy of this one.
 */
static void check_kept(const uint8_t *data, size_t size, int want, const struct jws *plain)
{
	static struct jws_verifier v;
	struct jit_error e = { 0 };
	struct jws k;
	int ret = jws_decode_with(&v, (const char *)data, size, &k, &e);

	if (ret != want)
		__builtin_trap();
	if (ret == 0) {
		if (!json_equal(k.header, plain->header) || k.payload_len != plain->payload_len ||
			memcmp(k.payload, plain->payload, k.payload_len) ||
			memcmp(k.sig, plain->sig, JWS_SIG_LEN) ||
			k.signing_input_len != plain->signing_input_len)
			__builtin_trap();
		jws_clear(&k);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jit_error e = { 0 };
	const char *kid = NULL;
	struct jws j;
	int ret;

	if (!pub) {
		pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a1_x, sizeof(a1_x));
		priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, a1_d, sizeof(a1_d));
		if (!pub || !priv)
			__builtin_trap();
	}
	check_b64url(data, size);
	ret = jws_decode((const char *)data, size, &j, &e);
	check_kept(data, size, ret, &j);
	if (ret) {
		if (ret != e.code || !e.msg[0] || j.header || j.payload ||
			(ret != JIT_ERR_MALFORMED && ret != JIT_ERR_TOO_LARGE &&
				ret != JIT_ERR_INTERNAL))
			__builtin_trap();
		return 0;
	}
	if (!json_is_object(j.header) || j.payload[j.payload_len] != '\0' ||
		j.signing_input_len >= size || data[j.signing_input_len] != '.')
		__builtin_trap();
	ret = jws_check_header(&j, GRANT_TYP, &kid, &e);
	if ((ret == 0 && !keys_kid_valid(kid)) || (ret && (ret != JIT_ERR_BAD_HEADER || kid)))
		__builtin_trap();
	ret = jws_verify(&j, pub, &e);
	if (ret != 0 && ret != JIT_ERR_BAD_SIGNATURE)
		__builtin_trap();
	check_resign(&j);
	jws_clear(&j);
	return 0;
}
