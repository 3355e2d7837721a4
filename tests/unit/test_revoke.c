#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"
#include "common/revoke.h"

#define NOW 1700000000LL
#define SKEW 60
#define HOST "web-01"
#define KID "rfc8037-a1"

/* RFC 8037 A.1, as in test_grant.c: a published key, so no secret and no randomness. */
static const unsigned char a1_d[32] = { 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba,
	0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
	0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60 };

static char keys_dir[] = "/tmp/jitd-test-revoke-XXXXXX";
static char pem_path[PATH_MAX];
static EVP_PKEY *priv, *other; /* other: a valid Ed25519 key that no kid names */
static struct jit_error err;   /* of the last verify */
static const struct grant_verify_ctx ctx = { .keys_dir = keys_dir, .host_id = HOST, .now = NOW,
	.clock_skew = SKEW };

static int setup(void **state)
{
	EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	FILE *f = NULL;
	int ret = -1;

	priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, a1_d, sizeof(a1_d));
	if (!priv || !kc || EVP_PKEY_keygen_init(kc) != 1 || EVP_PKEY_keygen(kc, &other) != 1 ||
		!mkdtemp(keys_dir))
		goto out;
	snprintf(pem_path, sizeof(pem_path), "%s/" KID ".pem", keys_dir);
	if (!(f = fopen(pem_path, "w")) || PEM_write_PUBKEY(f, priv) != 1)
		goto out;
	ret = 0;
out:
	if (f && fclose(f))
		ret = -1;
	if (!ret)
		ret = chmod(pem_path, 0644);
	EVP_PKEY_CTX_free(kc);
	return ret;
}

static int teardown(void **state)
{
	unlink(pem_path);
	rmdir(keys_dir);
	EVP_PKEY_free(other);
	EVP_PKEY_free(priv);
	return 0;
}

/* The claims of a valid revocation; tests change one thing at a time. */
static json_t *claims(void)
{
	json_t *c = json_pack("{s:s, s:s, s:s, s:I, s:I, s:s}", "iss", "controller", "aud", HOST,
		"jti", "r-0001", "iat", (json_int_t)(NOW - 10), "exp", (json_int_t)(NOW + 60),
		"revokes", "g-0001");

	assert_non_null(c);
	return c;
}

static json_t *with(const char *name, json_t *v)
{
	json_t *c = claims();

	assert_int_equal(json_object_set_new(c, name, v), 0);
	return c;
}

static json_t *without(const char *name)
{
	json_t *c = claims();

	assert_int_equal(json_object_del(c, name), 0);
	return c;
}

/* Takes c; signs it with key under a header of the given typ and kid. */
static char *sign_with(json_t *c, const char *typ, const char *kid, EVP_PKEY *key)
{
	json_t *h = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", typ, "kid", kid);
	char *payload = json_dumps(c, JSON_COMPACT), *tok = NULL;

	assert_non_null(h);
	assert_non_null(payload);
	assert_int_equal(jws_sign(h, (const unsigned char *)payload, strlen(payload), key, &tok),
		0);
	free(payload);
	json_decref(h);
	json_decref(c);
	return tok;
}

static char *token(json_t *c)
{
	return sign_with(c, REVOKE_TYP, KID, priv);
}

static int verify(const char *tok, struct revocation *r)
{
	int ret;

	memset(&err, 0, sizeof(err));
	ret = revoke_verify(tok, strlen(tok), &ctx, r, &err);
	if (ret)
		assert_int_equal(err.code, ret);
	return ret;
}

/* Takes tok. */
static void expect_tok(char *tok, int code, const char *needle)
{
	struct revocation r;
	int ret = verify(tok, &r);

	if (ret != code)
		fail_msg("got %s (%s), want %s: %s", jit_err_name(ret), err.msg, jit_err_name(code),
			tok);
	if (needle && !strstr(err.msg, needle))
		fail_msg("message '%s' lacks '%s'", err.msg, needle);
	if (code) {
		/* Refused means nothing is handed back. */
		assert_null(r.jti);
		assert_null(r.iss);
		assert_null(r.kid);
		assert_null(r.revokes);
		assert_false(r.terminate);
	}
	revoke_clear(&r);
	free(tok);
}

/* Takes c. */
static void expect(json_t *c, int code, const char *needle)
{
	expect_tok(token(c), code, needle);
}

/* Takes c; verifies it and returns the revocation (caller clears). */
static struct revocation accept(json_t *c)
{
	char *tok = token(c);
	struct revocation r;

	if (verify(tok, &r))
		fail_msg("refused: %s: %s", jit_err_name(err.code), err.msg);
	free(tok);
	return r;
}

static void test_valid(void **state)
{
	struct revocation r = accept(claims());

	assert_string_equal(r.jti, "r-0001");
	assert_string_equal(r.iss, "controller");
	assert_string_equal(r.kid, KID);
	assert_string_equal(r.revokes, "g-0001");
	assert_int_equal(r.iat, NOW - 10);
	assert_int_equal(r.exp, NOW + 60);
	assert_false(r.terminate);
	revoke_clear(&r);
	assert_null(r.jti);
	assert_null(r.revokes);
	/* Clearing twice is harmless, as callers' error paths rely on. */
	revoke_clear(&r);

	/* The same variants a grant may use: an audience list, nbf in the past, unknown claims. */
	r = accept(with("aud", json_pack("[s, s]", "web-02", HOST)));
	revoke_clear(&r);
	r = accept(with("nbf", json_integer(NOW - 5)));
	revoke_clear(&r);
	r = accept(with("reason", json_string("INC-42")));
	revoke_clear(&r);
}

static void test_terminate(void **state)
{
	struct revocation r = accept(with("terminate", json_true()));

	assert_true(r.terminate);
	assert_string_equal(r.revokes, "g-0001");
	revoke_clear(&r);
	r = accept(with("terminate", json_false()));
	assert_false(r.terminate);
	revoke_clear(&r);
	r = accept(claims());
	assert_false(r.terminate);
	revoke_clear(&r);
}

/* RFC 8725 section 3.11: each typ is its own kind of token, whatever the claims say. */
static void test_typ(void **state)
{
	json_t *c = with("terminate", json_true());
	struct grant g;
	char *tok;

	/* A grant, even one that carries a revokes claim, is not a revocation. */
	json_object_set_new(c, "sub", json_string("alice"));
	json_object_set_new(c, "src", json_pack("[s]", "203.0.113.7"));
	json_object_set_new(c, "ports", json_pack("[{s:i}]", "port", 22));
	expect_tok(sign_with(json_incref(c), GRANT_TYP, KID, priv), JIT_ERR_BAD_HEADER,
		"typ 'jit-grant+jwt' is not jit-revoke+jwt");
	/* And the same claims signed as a revocation are not a grant. */
	tok = sign_with(c, REVOKE_TYP, KID, priv);
	memset(&err, 0, sizeof(err));
	assert_int_equal(grant_verify(tok, strlen(tok), &ctx, &g, &err), JIT_ERR_BAD_HEADER);
	assert_non_null(strstr(err.msg, "typ 'jit-revoke+jwt' is not jit-grant+jwt"));
	assert_null(g.jti);
	grant_clear(&g);
	/* The same token is a valid revocation: only the typ made the difference above. */
	expect_tok(tok, 0, NULL);

	expect_tok(sign_with(claims(), "jit-revoke", KID, priv), JIT_ERR_BAD_HEADER, "typ");
	expect_tok(sign_with(claims(), "JWT", KID, priv), JIT_ERR_BAD_HEADER, "typ");
	expect_tok(sign_with(claims(), "application/jit-revoke+jwt", KID, priv), 0, NULL);
	expect_tok(sign_with(claims(), "Jit-Revoke+JWT", KID, priv), 0, NULL);
}

static void test_audience(void **state)
{
	expect(with("aud", json_string("web-02")), JIT_ERR_WRONG_AUDIENCE,
		"does not name this host 'web-01'");
	expect(with("aud", json_pack("[s, s]", "web-02", "web-010")), JIT_ERR_WRONG_AUDIENCE,
		"claim 'aud'");
	expect(with("aud", json_pack("[]")), JIT_ERR_WRONG_AUDIENCE, "claim 'aud'");
	expect(with("aud", json_integer(1)), JIT_ERR_MALFORMED, "claim 'aud'");
	expect(with("aud", json_pack("[s, i]", HOST, 5)), JIT_ERR_MALFORMED, "claim 'aud[1]'");
	expect(without("aud"), JIT_ERR_MALFORMED, "claim 'aud': missing");
}

/* Claims issued an hour ago that end at exp. */
static json_t *ending_at(int64_t exp)
{
	json_t *c = with("iat", json_integer(NOW - 3600));

	assert_int_equal(json_object_set_new(c, "exp", json_integer(exp)), 0);
	return c;
}

static void test_time(void **state)
{
	struct revocation r;
	json_t *c;

	/* Refused once exp + skew is reached, exactly like a grant. */
	expect(ending_at(NOW - SKEW), JIT_ERR_EXPIRED, "claim 'exp': expired");
	expect(ending_at(NOW - 1800), JIT_ERR_EXPIRED, "claim 'exp': expired");
	r = accept(ending_at(NOW - SKEW + 1));
	assert_int_equal(r.exp, NOW - SKEW + 1);
	revoke_clear(&r);
	c = with("nbf", json_integer(NOW + SKEW + 1));
	json_object_set_new(c, "exp", json_integer(NOW + SKEW + 60));
	expect(c, JIT_ERR_NOT_YET_VALID, "claim 'nbf'");
	c = with("iat", json_integer(NOW + SKEW + 1));
	json_object_set_new(c, "exp", json_integer(NOW + SKEW + 60));
	expect(c, JIT_ERR_NOT_YET_VALID, "claim 'iat'");
	expect(with("exp", json_integer(NOW - 10)), JIT_ERR_MALFORMED, "not after iat");
	expect(with("exp", json_real(1700000060.0)), JIT_ERR_MALFORMED,
		"claim 'exp': expected an integer, not a real number");
	expect(with("iat", json_string("now")), JIT_ERR_MALFORMED, "claim 'iat'");
	expect(with("nbf", json_integer(0)), JIT_ERR_MALFORMED, "claim 'nbf'");
	expect(with("revokes", json_string("g 1")), JIT_ERR_MALFORMED,
		"claim 'revokes': contains a space");
	expect(with("jti", json_string("r 1")), JIT_ERR_MALFORMED, "claim 'jti': contains a space");
}

static void test_missing(void **state)
{
	static const char *const required[] = { "iss", "aud", "jti", "iat", "exp", "revokes" };
	char needle[64];

	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		snprintf(needle, sizeof(needle), "claim '%s': missing", required[i]);
		expect(without(required[i]), JIT_ERR_MALFORMED, needle);
	}
}

/* revokes and jti follow a grant's jti rules: a non-empty string without control characters. */
static void test_revokes_type(void **state)
{
	char long_id[GRANT_MAX_STRING + 2];

	expect(with("revokes", json_integer(1)), JIT_ERR_MALFORMED,
		"claim 'revokes': expected a string, not an integer");
	expect(with("revokes", json_pack("[s]", "g-0001")), JIT_ERR_MALFORMED,
		"claim 'revokes': expected a string, not an array");
	expect(with("revokes", json_null()), JIT_ERR_MALFORMED, "claim 'revokes'");
	expect(with("revokes", json_true()), JIT_ERR_MALFORMED, "claim 'revokes'");
	expect(with("revokes", json_string("")), JIT_ERR_MALFORMED, "claim 'revokes': empty");
	expect(with("revokes", json_string("g-1\n")), JIT_ERR_MALFORMED,
		"claim 'revokes': contains a control character");
	memset(long_id, 'g', sizeof(long_id) - 1);
	long_id[sizeof(long_id) - 1] = '\0';
	expect(with("revokes", json_string(long_id)), JIT_ERR_MALFORMED, "claim 'revokes'");
	expect(with("jti", json_string(long_id)), JIT_ERR_MALFORMED, "claim 'jti'");
	long_id[GRANT_MAX_STRING] = '\0';
	expect(with("revokes", json_string(long_id)), 0, NULL);
	expect(with("jti", json_integer(7)), JIT_ERR_MALFORMED, "claim 'jti'");
	expect(with("jti", json_string("")), JIT_ERR_MALFORMED, "claim 'jti': empty");
	expect(with("jti", json_string("r\x1b[0m")), JIT_ERR_MALFORMED, "claim 'jti'");
	expect(with("iss", json_pack("{}")), JIT_ERR_MALFORMED, "claim 'iss'");
}

static void test_terminate_type(void **state)
{
	expect(with("terminate", json_integer(1)), JIT_ERR_MALFORMED,
		"claim 'terminate': expected a boolean, not an integer");
	expect(with("terminate", json_string("true")), JIT_ERR_MALFORMED,
		"claim 'terminate': expected a boolean, not a string");
	expect(with("terminate", json_null()), JIT_ERR_MALFORMED,
		"claim 'terminate': expected a boolean, not null");
	expect(with("terminate", json_integer(0)), JIT_ERR_MALFORMED, "claim 'terminate'");
}

static void test_bad_signature(void **state)
{
	char *tok = token(claims());
	char *sig = strrchr(tok, '.') + 1;

	/* 'A' <-> 'B' changes one bit of the first signature byte. */
	sig[0] = sig[0] == 'A' ? 'B' : 'A';
	expect_tok(tok, JIT_ERR_BAD_SIGNATURE, "does not verify");
	/* A correct signature by a key that is not the one kid names. */
	expect_tok(sign_with(claims(), REVOKE_TYP, KID, other), JIT_ERR_BAD_SIGNATURE,
		"does not verify");
}

static void test_unknown_key(void **state)
{
	expect_tok(sign_with(claims(), REVOKE_TYP, "nosuch", priv), JIT_ERR_UNKNOWN_KEY,
		"key 'nosuch'");
	/* Path traversal is refused by the header rules, before the file system is asked. */
	expect_tok(sign_with(claims(), REVOKE_TYP, "../" KID, priv), JIT_ERR_BAD_HEADER, "kid");
}

/* The envelope rules are jws.c's, shared with grants; one case of each proves they run. */
static void test_envelope(void **state)
{
	char *big = malloc(JWS_MAX_TOKEN + 2);
	json_t *h = json_pack("{s:s, s:s, s:s, s:b}", "alg", "EdDSA", "typ", REVOKE_TYP, "kid",
		KID, "crit", 1);
	json_t *c = claims();
	char *payload = json_dumps(c, JSON_COMPACT), *tok = NULL;

	assert_non_null(big);
	memset(big, 'A', JWS_MAX_TOKEN + 1);
	big[JWS_MAX_TOKEN + 1] = '\0';
	expect_tok(big, JIT_ERR_TOO_LARGE, "token");
	expect_tok(strdup("a.b"), JIT_ERR_MALFORMED, "fewer than three segments");
	assert_int_equal(jws_sign(h, (const unsigned char *)payload, strlen(payload), priv, &tok),
		0);
	expect_tok(tok, JIT_ERR_BAD_HEADER, "'crit'");
	free(payload);
	json_decref(c);
	json_decref(h);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_terminate),
		cmocka_unit_test(test_typ),
		cmocka_unit_test(test_audience),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_revokes_type),
		cmocka_unit_test(test_terminate_type),
		cmocka_unit_test(test_bad_signature),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_envelope),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
