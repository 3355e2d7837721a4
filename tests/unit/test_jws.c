#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/b64url.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"

/* RFC 8037 A.1 (the RFC 8032 section 7.1 TEST 1 key pair). */
static const unsigned char a1_d[32] = { 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba,
	0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
	0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60 };
static const unsigned char a1_x[32] = { 0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5,
	0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
	0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a };
/* RFC 8037 A.4. */
static const char a4[] =
	"eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
	"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
static const unsigned char a4_sig[64] = { 0x86, 0x0c, 0x98, 0xd2, 0x29, 0x7f, 0x30, 0x60, 0xa3,
	0x3f, 0x42, 0x73, 0x96, 0x72, 0xd6, 0x1b, 0x53, 0xcf, 0x3a, 0xde, 0xfe, 0xd3, 0xd3, 0xc6,
	0x72, 0xf3, 0x20, 0xdc, 0x02, 0x1b, 0x41, 0x1e, 0x9d, 0x59, 0xb8, 0x62, 0x8d, 0xc3, 0x51,
	0xe2, 0x48, 0xb8, 0x8b, 0x29, 0x46, 0x8e, 0x0e, 0x41, 0x85, 0x5b, 0x0f, 0xb7, 0xd8, 0x3b,
	0xb1, 0x5b, 0xe9, 0x02, 0xbf, 0xcc, 0xb8, 0xcd, 0x0a, 0x02 };
static const char a4_payload[] = "Example of Ed25519 signing";
/* RFC 9864 "Ed25519" over the same payload and key. */
static const char ed25519_fixture[] =
	"eyJhbGciOiJFZDI1NTE5In0.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
	"UxhIYLHGg39NVCLpQAVD_UcfOmnGSCzLFZoXYkLiIbFccmOb_qObsgjzLKsfJw-4NlccUgvYrEHrRbNV0HcZAQ";

static EVP_PKEY *pub, *priv;

static int setup(void **state)
{
	pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a1_x, sizeof(a1_x));
	priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, a1_d, sizeof(a1_d));
	return pub && priv ? 0 : -1;
}

static int teardown(void **state)
{
	EVP_PKEY_free(pub);
	EVP_PKEY_free(priv);
	return 0;
}

/* Decodes and verifies s with the A.2 key; returns the first error. */
static int decode_verify(const char *s, size_t len, struct jit_error *e)
{
	struct jws j;
	int ret;

	if (!(ret = jws_decode(s, len, &j, e)))
		ret = jws_verify(&j, pub, e);
	jws_clear(&j);
	return ret;
}

static void expect(const char *s, int code, const char *needle)
{
	struct jit_error e = { 0 };
	int ret = decode_verify(s, strlen(s), &e);

	if (ret != code)
		fail_msg("'%s': got %s (%s), want %s", s, jit_err_name(ret), e.msg,
			jit_err_name(code));
	if (needle && !strstr(e.msg, needle))
		fail_msg("'%s': message '%s' lacks '%s'", s, e.msg, needle);
}

/* header "." payload "." sig, each base64url-encoded; the caller frees. */
static char *build(const char *header, size_t hlen, const char *payload,
	const unsigned char *sig, size_t siglen)
{
	size_t plen = strlen(payload);
	char *s = malloc(b64url_encoded_len(hlen) + b64url_encoded_len(plen) +
		b64url_encoded_len(siglen) + 3);

	assert_non_null(s);
	b64url_encode((const unsigned char *)header, hlen, s);
	strcat(s, ".");
	b64url_encode((const unsigned char *)payload, plen, s + strlen(s));
	strcat(s, ".");
	b64url_encode(sig, siglen, s + strlen(s));
	return s;
}

/* Signs header_text (JSON) over payload with the A.1 key. */
static char *sign(const char *header_text, const char *payload)
{
	json_t *h = json_loads(header_text, JSON_REJECT_DUPLICATES, NULL);
	char *tok = NULL;

	assert_non_null(h);
	assert_int_equal(jws_sign(h, (const unsigned char *)payload, strlen(payload), priv, &tok),
		0);
	json_decref(h);
	return tok;
}

static void test_rfc8037_a4(void **state)
{
	struct jit_error e = { 0 };
	struct jws j;

	assert_int_equal(jws_decode(a4, strlen(a4), &j, &e), 0);
	assert_ptr_equal(j.token, a4);
	assert_int_equal(j.signing_input_len, strlen("eyJhbGciOiJFZERTQSJ9.") +
		strlen("RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc"));
	assert_string_equal(json_string_value(json_object_get(j.header, "alg")), "EdDSA");
	assert_int_equal(json_object_size(j.header), 1);
	assert_int_equal(j.payload_len, strlen(a4_payload));
	assert_string_equal((const char *)j.payload, a4_payload);
	assert_memory_equal(j.sig, a4_sig, sizeof(a4_sig));
	assert_int_equal(jws_verify(&j, pub, &e), 0);
	jws_clear(&j);
	jws_clear(&j);
	expect(ed25519_fixture, 0, NULL);
}

/* Ed25519 is deterministic: signing A.4's input with A.1 must give A.4 byte for byte. */
static void test_sign_a4(void **state)
{
	char *tok = sign("{\"alg\":\"EdDSA\"}", a4_payload);

	assert_string_equal(tok, a4);
	free(tok);
	tok = sign("{\"alg\":\"Ed25519\"}", a4_payload);
	assert_string_equal(tok, ed25519_fixture);
	free(tok);
}

static void test_vectors(void **state)
{
	FILE *f = fopen(JITD_VECTORS_DIR "/jws_rfc8037.txt", "r");
	char line[1024], want[32], tok[1000];
	struct jit_error e = { 0 };
	size_t n = 0;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f)) {
		const char *typ;
		struct jws j;

		if (line[0] == '#' || line[0] == '\n')
			continue;
		tok[0] = '\0';
		assert_true(sscanf(line, "%31s %999s", want, tok) >= 1);
		n++;
		if (!strcmp(want, "malformed")) {
			if (jws_decode(tok, strlen(tok), &j, &e) != JIT_ERR_MALFORMED)
				fail_msg("accepted: %s", tok);
			continue;
		}
		/* Cryptographically valid: only the rule under test may refuse it. */
		expect(tok, 0, NULL);
		assert_int_equal(jws_decode(tok, strlen(tok), &j, &e), 0);
		if (!strcmp(want, "bad_header") &&
			jws_check_header(&j, GRANT_TYP, &typ, &e) != JIT_ERR_BAD_HEADER)
			fail_msg("header accepted: %s", tok);
		jws_clear(&j);
	}
	fclose(f);
	assert_int_equal(n, 17);
}

static void test_bad_signature(void **state)
{
	char *s = strdup(a4);
	char *sig = strrchr(s, '.') + 1;
	struct jit_error e = { 0 };
	struct jws j;

	for (size_t i = 0; i < JWS_SIG_LEN; i++) {
		assert_int_equal(jws_decode(a4, strlen(a4), &j, &e), 0);
		j.sig[i] ^= 0x01;
		assert_int_equal(jws_verify(&j, pub, &e), JIT_ERR_BAD_SIGNATURE);
		assert_non_null(strstr(e.msg, "signature"));
		jws_clear(&j);
	}
	/* One character of the encoded signature, then of the payload. */
	sig[0] = 'i';
	expect(s, JIT_ERR_BAD_SIGNATURE, "does not verify");
	sig[0] = 'h';
	s[strlen("eyJhbGciOiJFZERTQSJ9.")] = 'S';
	expect(s, JIT_ERR_BAD_SIGNATURE, "does not verify");
	free(s);
}

/* Every prefix of A.4 (a truncated token) must be refused. */
static void test_truncated(void **state)
{
	struct jit_error e = { 0 };

	for (size_t len = 0; len < strlen(a4); len++)
		if (!decode_verify(a4, len, &e))
			fail_msg("accepted %zu bytes of A.4", len);
}

static void test_segments(void **state)
{
	static const char *const suffix[] = { ".", ".x", "x", "A", "AA", "\n", " ", "=", "\r\n" };
	char buf[300];

	for (size_t i = 0; i < sizeof(suffix) / sizeof(suffix[0]); i++) {
		snprintf(buf, sizeof(buf), "%s%s", a4, suffix[i]);
		expect(buf, JIT_ERR_MALFORMED, "token");
		snprintf(buf, sizeof(buf), "%s%s", suffix[i], a4);
		expect(buf, JIT_ERR_MALFORMED, "token");
	}
	expect(a4 + strlen("eyJhbGciOiJFZERTQSJ9."), JIT_ERR_MALFORMED, "three segments");
	expect("", JIT_ERR_MALFORMED, "three segments");
	expect("..", JIT_ERR_MALFORMED, "empty header");
	expect("....", JIT_ERR_MALFORMED, "more than three");
	snprintf(buf, sizeof(buf), "%s.%s", a4, strrchr(a4, '.') + 1);
	expect(buf, JIT_ERR_MALFORMED, "more than three");
	expect("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.", JIT_ERR_MALFORMED,
		"signature is 0 bytes");
	expect("eyJhbGciOiJFZERTQSJ9.RXhh YmFy.AAAA", JIT_ERR_MALFORMED, "payload segment");
	expect("eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.AAAA\0", JIT_ERR_MALFORMED,
		"signature is 3 bytes");
}

static void test_header_json(void **state)
{
	static const char nul_header[] = "{\"alg\":\"EdDSA\"}\0 junk";
	static const char *const bad[] = {
		"{\"alg\":\"EdDSA\",\"alg\":\"none\"}", "{\"alg\":\"EdDSA\"}x", "[]", "\"EdDSA\"",
		"1", "null", "{\"alg\":\"EdDSA\"", "{'alg':'EdDSA'}", "{\"alg\":\"Ed\\u0000DSA\"}",
		"{\"alg\":\"\xff\"}", " ",
	};
	struct jit_error e = { 0 };
	struct jws j;
	char *s;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		s = build(bad[i], strlen(bad[i]), a4_payload, a4_sig, sizeof(a4_sig));
		if (jws_decode(s, strlen(s), &j, &e) != JIT_ERR_MALFORMED)
			fail_msg("header accepted: %s", bad[i]);
		assert_non_null(strstr(e.msg, "header"));
		free(s);
	}
	s = build(nul_header, sizeof(nul_header) - 1, a4_payload, a4_sig, sizeof(a4_sig));
	assert_int_equal(jws_decode(s, strlen(s), &j, &e), JIT_ERR_MALFORMED);
	assert_non_null(strstr(e.msg, "NUL"));
	free(s);
	/* Whitespace inside JSON is JSON's business: the header is what was signed. */
	s = build(" {\"alg\" : \"EdDSA\"} ", 19, a4_payload, a4_sig, sizeof(a4_sig));
	assert_int_equal(jws_decode(s, strlen(s), &j, &e), 0);
	jws_clear(&j);
	free(s);
}

static void check_header(const char *header_text, int code, const char *needle)
{
	char *tok = sign(header_text, a4_payload);
	struct jit_error e = { 0 };
	const char *kid = (const char *)1;
	struct jws j;
	int ret;

	assert_int_equal(jws_decode(tok, strlen(tok), &j, &e), 0);
	assert_int_equal(jws_verify(&j, pub, &e), 0);
	ret = jws_check_header(&j, GRANT_TYP, &kid, &e);
	if (ret != code)
		fail_msg("%s: got %s (%s), want %s", header_text, jit_err_name(ret), e.msg,
			jit_err_name(code));
	if (code)
		assert_null(kid);
	else
		assert_string_equal(kid, json_string_value(json_object_get(j.header, "kid")));
	if (needle && !strstr(e.msg, needle))
		fail_msg("%s: message '%s' lacks '%s'", header_text, e.msg, needle);
	jws_clear(&j);
	free(tok);
}

#define HDR(alg, rest) "{\"alg\":\"" alg "\",\"typ\":\"jit-grant+jwt\",\"kid\":\"k1\"" rest "}"

static void test_header_alg(void **state)
{
	check_header(HDR("EdDSA", ""), 0, NULL);
	check_header(HDR("Ed25519", ""), 0, NULL);
	check_header(HDR("none", ""), JIT_ERR_BAD_HEADER, "alg 'none'");
	check_header(HDR("HS256", ""), JIT_ERR_BAD_HEADER, "alg 'HS256'");
	check_header(HDR("EDDSA", ""), JIT_ERR_BAD_HEADER, "alg 'EDDSA'");
	check_header(HDR("eddsa", ""), JIT_ERR_BAD_HEADER, "alg 'eddsa'");
	check_header(HDR("Ed448", ""), JIT_ERR_BAD_HEADER, "alg 'Ed448'");
	check_header(HDR("ES256", ""), JIT_ERR_BAD_HEADER, "alg 'ES256'");
	check_header(HDR("EdDSA ", ""), JIT_ERR_BAD_HEADER, "alg 'EdDSA '");
	check_header(HDR("Ed\\n25519", ""), JIT_ERR_BAD_HEADER, "alg 'Ed?25519'");
	check_header("{\"typ\":\"jit-grant+jwt\",\"kid\":\"k1\"}", JIT_ERR_BAD_HEADER,
		"'alg' is missing");
	check_header("{\"alg\":[\"EdDSA\"],\"typ\":\"jit-grant+jwt\",\"kid\":\"k1\"}",
		JIT_ERR_BAD_HEADER, "'alg' is not a string");
}

static void test_header_members(void **state)
{
	static const char *const refused[] = { "crit", "jwk", "jku", "x5u", "x5c", "x5t",
		"x5t#S256", "b64" };
	char h[256];

	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++) {
		snprintf(h, sizeof(h), HDR("EdDSA", ",\"%s\":[\"exp\"]"), refused[i]);
		check_header(h, JIT_ERR_BAD_HEADER, refused[i]);
	}
	check_header(HDR("EdDSA", ",\"jwk\":{\"kty\":\"OKP\",\"crv\":\"Ed25519\","
		"\"x\":\"11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo\"}"),
		JIT_ERR_BAD_HEADER, "jwk");
	check_header(HDR("EdDSA", ",\"b64\":false,\"crit\":[\"b64\"]"), JIT_ERR_BAD_HEADER, NULL);
	/* Members we have no rule for are harmless, as in any JOSE header. */
	check_header(HDR("EdDSA", ",\"cty\":\"x\",\"x-other\":1"), 0, NULL);
}

static void test_header_typ(void **state)
{
	static const char *const ok[] = { "jit-grant+jwt", "JIT-GRANT+JWT", "Jit-Grant+Jwt",
		"application/jit-grant+jwt", "APPLICATION/jit-grant+JWT" };
	static const char *const bad[] = { "JWT", "jwt", "", "jit-grant+jwt ", " jit-grant+jwt",
		"jit-grant", "jit-grant+jwt+x", "text/jit-grant+jwt", "application/",
		"application/application/jit-grant+jwt", "applicationjit-grant+jwt",
		"application/jit-grant+jwt/x", "jit-revoke+jwt" };
	char h[256];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(h, sizeof(h), "{\"alg\":\"EdDSA\",\"typ\":\"%s\",\"kid\":\"k1\"}", ok[i]);
		check_header(h, 0, NULL);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(h, sizeof(h), "{\"alg\":\"EdDSA\",\"typ\":\"%s\",\"kid\":\"k1\"}", bad[i]);
		check_header(h, JIT_ERR_BAD_HEADER, "typ");
	}
	check_header("{\"alg\":\"EdDSA\",\"kid\":\"k1\"}", JIT_ERR_BAD_HEADER, "'typ' is missing");
	check_header("{\"alg\":\"EdDSA\",\"typ\":1,\"kid\":\"k1\"}", JIT_ERR_BAD_HEADER,
		"'typ' is not a string");
}

#define KID_HDR "{\"alg\":\"EdDSA\",\"typ\":\"jit-grant+jwt\",\"kid\":\"%s\"}"

static void test_header_kid(void **state)
{
	static const char *const ok[] = { "k", "K-1_a.b",
		"kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k",
		"0123456789012345678901234567890123456789012345678901234567890123" };
	static const char *const bad[] = { "", ".", ".hidden", "../etc/passwd", "a/b", "/etc/x",
		"a b", "a\\u0001", "k\\u00e9",
		"01234567890123456789012345678901234567890123456789012345678901234" };
	char h[256];

	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		snprintf(h, sizeof(h), KID_HDR, ok[i]);
		check_header(h, 0, NULL);
	}
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		snprintf(h, sizeof(h), KID_HDR, bad[i]);
		check_header(h, JIT_ERR_BAD_HEADER, "kid");
	}
	/* Four letters of the set: the message must name the rule they break. */
	snprintf(h, sizeof(h), KID_HDR, ".ctl");
	check_header(h, JIT_ERR_BAD_HEADER, "not starting with '.'");
	check_header("{\"alg\":\"EdDSA\",\"typ\":\"jit-grant+jwt\"}", JIT_ERR_BAD_HEADER,
		"'kid' is missing");
	check_header("{\"alg\":\"EdDSA\",\"typ\":\"jit-grant+jwt\",\"kid\":7}", JIT_ERR_BAD_HEADER,
		"'kid' is not a string");
}

/*
 * A thread's template verifies exactly what a fresh context does: the same token passes again
 * from the copy, a flipped bit or a changed signed byte fails from the copy, and another key
 * (even one with the same bytes, as a reloaded key file gives) gets a template of its own.
 */
static void test_verifier_template(void **state)
{
	EVP_PKEY *same = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a1_x, sizeof(a1_x));
	EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	struct jws_verifier v = { 0 };
	struct jit_error e = { 0 };
	EVP_PKEY *other = NULL;
	char *s = strdup(a4);
	struct jws j;

	assert_non_null(same);
	assert_non_null(s);
	assert_non_null(kc);
	assert_int_equal(EVP_PKEY_keygen_init(kc), 1);
	assert_int_equal(EVP_PKEY_keygen(kc, &other), 1);
	assert_int_equal(jws_decode(a4, strlen(a4), &j, &e), 0);
	assert_int_equal(jws_verify_with(&v, &j, pub, &e), 0);
	assert_ptr_equal(v.key, pub);
	assert_non_null(v.tmpl);
	assert_int_equal(jws_verify_with(&v, &j, pub, &e), 0);
	for (size_t i = 0; i < JWS_SIG_LEN; i += 7) {
		j.sig[i] ^= 0x01;
		assert_int_equal(jws_verify_with(&v, &j, pub, &e), JIT_ERR_BAD_SIGNATURE);
		j.sig[i] ^= 0x01;
	}
	assert_ptr_equal(v.key, pub);
	jws_clear(&j);
	/* A changed payload byte under the original signature. */
	s[strlen("eyJhbGciOiJFZERTQSJ9.")] ^= 0x01;
	assert_int_equal(jws_decode(s, strlen(s), &j, &e), 0);
	assert_int_equal(jws_verify_with(&v, &j, pub, &e), JIT_ERR_BAD_SIGNATURE);
	jws_clear(&j);
	assert_int_equal(jws_decode(a4, strlen(a4), &j, &e), 0);
	assert_int_equal(jws_verify_with(&v, &j, other, &e), JIT_ERR_BAD_SIGNATURE);
	assert_ptr_equal(v.key, other);
	assert_int_equal(jws_verify_with(&v, &j, same, &e), 0);
	assert_ptr_equal(v.key, same);
	/* A key of another type never touches the template. */
	assert_int_equal(jws_verify_with(&v, &j, NULL, &e), JIT_ERR_BAD_SIGNATURE);
	assert_ptr_equal(v.key, same);
	jws_clear(&j);
	/* v holds its own reference: the caller's may go first. */
	EVP_PKEY_free(same);
	assert_int_equal(jws_decode(a4, strlen(a4), &j, &e), 0);
	assert_int_equal(jws_verify_with(&v, &j, v.key, &e), 0);
	jws_clear(&j);
	jws_verifier_clear(&v);
	assert_null(v.key);
	assert_null(v.tmpl);
	jws_verifier_clear(&v);
	EVP_PKEY_free(other);
	EVP_PKEY_CTX_free(kc);
	free(s);
}

/* alg of a decoded token's header, or NULL. */
static const char *alg_of(const struct jws *j)
{
	return json_string_value(json_object_get(j->header, "alg"));
}

/*
 * A thread's last header is shared only with a token whose header segment is byte for byte
 * the same: a different one, even a longer or shorter spelling of the same start, is decoded
 * and judged afresh, and a header that fails is never kept.
 */
static void test_verifier_header(void **state)
{
	static const char none[] = "eyJhbGciOiJub25lIn0.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc."
		"hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg";
	const char *sig = strrchr(a4, '.');
	const char *bad[] = { "eyJhbGciOiJFZERTQSJ9AA", "eyJhbGciOiJFZERTQSJ", "eyJhbGciOiJFZERTQSJ8",
		"eyJhbGciOiJFZERTQSJ9eyJhbGciOiJFZERTQSJ9" };
	struct jws_verifier v = { 0 };
	struct jit_error e = { 0 };
	struct jws j, k;
	char tok[512];

	assert_non_null(sig);
	assert_int_equal(jws_decode_with(&v, a4, strlen(a4), &j, &e), 0);
	assert_non_null(v.header);
	assert_int_equal(v.hdr_seg_len, strlen("eyJhbGciOiJFZERTQSJ9"));
	assert_ptr_equal(j.header, v.header);
	assert_int_equal(jws_decode_with(&v, a4, strlen(a4), &k, &e), 0);
	assert_ptr_equal(k.header, j.header);
	assert_string_equal(alg_of(&k), "EdDSA");
	assert_int_equal(jws_verify_with(&v, &k, pub, &e), 0);
	jws_clear(&k);
	jws_clear(&j);
	/* Another header replaces it. */
	assert_int_equal(jws_decode_with(&v, ed25519_fixture, strlen(ed25519_fixture), &j, &e), 0);
	assert_ptr_equal(j.header, v.header);
	assert_string_equal(alg_of(&j), "Ed25519");
	jws_clear(&j);
	assert_int_equal(jws_decode_with(&v, none, strlen(none), &j, &e), 0);
	assert_string_equal(alg_of(&j), "none");
	{
		const char *kid;

		assert_int_equal(jws_check_header(&j, GRANT_TYP, &kid, &e), JIT_ERR_BAD_HEADER);
	}
	jws_clear(&j);
	/* Spellings that start or end like the kept one are read, and refused, on their own. */
	assert_int_equal(jws_decode_with(&v, a4, strlen(a4), &j, &e), 0);
	jws_clear(&j);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const json_t *kept = v.header;

		snprintf(tok, sizeof(tok), "%s.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc%s", bad[i], sig);
		memset(&e, 0, sizeof(e));
		if (jws_decode_with(&v, tok, strlen(tok), &j, &e) != JIT_ERR_MALFORMED)
			fail_msg("header segment '%s' was not refused", bad[i]);
		assert_ptr_equal(v.header, kept);
		assert_string_equal(json_string_value(json_object_get(v.header, "alg")), "EdDSA");
	}
	/* A refused payload or signature leaves the (good) header kept and the token refused. */
	snprintf(tok, sizeof(tok), "eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbm%s", sig);
	assert_int_equal(jws_decode_with(&v, tok, strlen(tok), &j, &e), JIT_ERR_MALFORMED);
	assert_int_equal(jws_decode_with(&v, a4, strlen(a4) - 1, &j, &e), JIT_ERR_MALFORMED);
	jws_verifier_clear(&v);
	assert_null(v.header);
	assert_null(v.hdr_seg);
	jws_verifier_clear(&v);
}

/* The key decides the algorithm: a valid A.4 token must not be tried with another key type. */
static void test_verify_key_type(void **state)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED448, NULL);
	json_t *h = json_pack("{s:s}", "alg", "EdDSA");
	EVP_PKEY *other = NULL, *x = NULL;
	struct jit_error e = { 0 };
	char *tok = (char *)1;
	struct jws j;

	assert_non_null(ctx);
	assert_non_null(h);
	assert_int_equal(EVP_PKEY_keygen_init(ctx), 1);
	assert_int_equal(EVP_PKEY_keygen(ctx, &other), 1);
	x = EVP_PKEY_new_raw_public_key(EVP_PKEY_X25519, NULL, a1_x, sizeof(a1_x));
	assert_non_null(x);
	assert_int_equal(jws_decode(a4, strlen(a4), &j, &e), 0);
	assert_int_equal(jws_verify(&j, other, &e), JIT_ERR_BAD_SIGNATURE);
	assert_non_null(strstr(e.msg, "not an Ed25519 key"));
	assert_int_equal(jws_verify(&j, x, &e), JIT_ERR_BAD_SIGNATURE);
	assert_int_equal(jws_verify(&j, NULL, &e), JIT_ERR_BAD_SIGNATURE);
	jws_clear(&j);
	/* Signing with the public half only, another key type or a non-object header fails. */
	assert_int_equal(jws_sign(h, (const unsigned char *)"x", 1, pub, &tok), -EINVAL);
	assert_null(tok);
	assert_int_equal(jws_sign(h, (const unsigned char *)"x", 1, other, &tok), -EINVAL);
	assert_int_equal(jws_sign(json_object_get(h, "alg"), (const unsigned char *)"x", 1, priv,
		&tok), -EINVAL);
	json_decref(h);
	EVP_PKEY_free(x);
	EVP_PKEY_free(other);
	EVP_PKEY_CTX_free(ctx);
}

static void test_too_large(void **state)
{
	char *big = malloc(JWS_MAX_TOKEN + 2);
	struct jit_error e = { 0 };
	struct jws j;

	assert_non_null(big);
	memset(big, '.', JWS_MAX_TOKEN + 1);
	big[JWS_MAX_TOKEN + 1] = '\0';
	assert_int_equal(jws_decode(big, JWS_MAX_TOKEN + 1, &j, &e), JIT_ERR_TOO_LARGE);
	assert_null(j.header);
	/* At the limit it is merely malformed: the cap is inclusive. */
	assert_int_equal(jws_decode(big, JWS_MAX_TOKEN, &j, &e), JIT_ERR_MALFORMED);
	free(big);
}

/* A large but legal payload goes through encode, sign, decode and verify unchanged. */
static void test_sign_roundtrip(void **state)
{
	char *payload = malloc(8001), *tok;
	struct jit_error e = { 0 };
	struct jws j;

	assert_non_null(payload);
	for (size_t i = 0; i < 8000; i++)
		payload[i] = (char)('a' + i % 26);
	payload[8000] = '\0';
	tok = sign(HDR("EdDSA", ""), payload);
	assert_int_equal(jws_decode(tok, strlen(tok), &j, &e), 0);
	assert_int_equal(jws_verify(&j, pub, &e), 0);
	assert_int_equal(j.payload_len, 8000);
	assert_memory_equal(j.payload, payload, 8000);
	assert_int_equal(j.payload[8000], '\0');
	jws_clear(&j);
	free(tok);
	free(payload);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc8037_a4),
		cmocka_unit_test(test_sign_a4),
		cmocka_unit_test(test_vectors),
		cmocka_unit_test(test_bad_signature),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_segments),
		cmocka_unit_test(test_header_json),
		cmocka_unit_test(test_header_alg),
		cmocka_unit_test(test_header_members),
		cmocka_unit_test(test_header_typ),
		cmocka_unit_test(test_header_kid),
		cmocka_unit_test(test_verifier_template),
		cmocka_unit_test(test_verifier_header),
		cmocka_unit_test(test_verify_key_type),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_sign_roundtrip),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
