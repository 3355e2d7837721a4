#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <malloc.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>

#include "common/b64url.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"
#include "common/keys.h"
#include "common/port.h"
#include "common/prefix.h"

#define NOW 1700000000LL
#define SKEW 60
#define HOST "web-01"
#define KID "rfc8037-a1"

/* RFC 8037 A.1: a published key, so these fixtures are deterministic and need no secrets. */
static const unsigned char a1_d[32] = { 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba,
	0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
	0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60 };
static const unsigned char a1_x[32] = { 0xd7, 0x5a, 0x98, 0x01, 0x82, 0xb1, 0x0a, 0xb7, 0xd5,
	0x4b, 0xfe, 0xd3, 0xc9, 0x64, 0x07, 0x3a, 0x0e, 0xe1, 0x72, 0xf3, 0xda, 0xa6, 0x23, 0x25,
	0xaf, 0x02, 0x1a, 0x68, 0xf7, 0x07, 0x51, 0x1a };

/* Files setup() puts in keys_dir besides KID.pem; teardown removes them all. */
static const char *const extra_files[] = { "gw.pem", "ow.pem", "ed448.pem", "garbage.pem",
	"link.pem", "empty.pem" };

static char keys_dir[] = "/tmp/jitd-test-grant-XXXXXX";
static EVP_PKEY *priv, *pub, *ed448;
static struct jit_error err; /* of the last verify */
static struct grant_verify_ctx ctx = { .host_id = HOST, .now = NOW, .clock_skew = SKEW };

static int write_pub(const char *name, EVP_PKEY *k, mode_t mode)
{
	char path[PATH_MAX];
	FILE *f;
	int ok;

	snprintf(path, sizeof(path), "%s/%s", keys_dir, name);
	if (!(f = fopen(path, "w")))
		return -1;
	ok = PEM_write_PUBKEY(f, k);
	if (fclose(f) || ok != 1)
		return -1;
	return chmod(path, mode);
}

static int write_text(const char *name, const char *text, mode_t mode)
{
	char path[PATH_MAX];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", keys_dir, name);
	if (!(f = fopen(path, "w")))
		return -1;
	fputs(text, f);
	if (fclose(f))
		return -1;
	return chmod(path, mode);
}

static int setup(void **state)
{
	EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED448, NULL);
	char target[PATH_MAX], link[PATH_MAX];

	priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, a1_d, sizeof(a1_d));
	pub = EVP_PKEY_new_raw_public_key(EVP_PKEY_ED25519, NULL, a1_x, sizeof(a1_x));
	if (!priv || !pub || !kc || EVP_PKEY_keygen_init(kc) != 1 ||
		EVP_PKEY_keygen(kc, &ed448) != 1 || !mkdtemp(keys_dir))
		return -1;
	EVP_PKEY_CTX_free(kc);
	ctx.keys_dir = keys_dir;
	snprintf(target, sizeof(target), "%s/" KID ".pem", keys_dir);
	snprintf(link, sizeof(link), "%s/link.pem", keys_dir);
	if (write_pub(KID ".pem", pub, 0644) || write_pub("gw.pem", pub, 0664) ||
		write_pub("ow.pem", pub, 0646) || write_pub("ed448.pem", ed448, 0644) ||
		write_text("garbage.pem", "not a key\n", 0644) ||
		write_text("empty.pem", "", 0644) ||
		symlink(target, link))
		return -1;
	return 0;
}

static int teardown(void **state)
{
	char path[PATH_MAX];

	for (size_t i = 0; i < sizeof(extra_files) / sizeof(extra_files[0]); i++) {
		snprintf(path, sizeof(path), "%s/%s", keys_dir, extra_files[i]);
		unlink(path);
	}
	snprintf(path, sizeof(path), "%s/" KID ".pem", keys_dir);
	unlink(path);
	rmdir(keys_dir);
	EVP_PKEY_free(ed448);
	EVP_PKEY_free(pub);
	EVP_PKEY_free(priv);
	return 0;
}

/* The claims of a valid grant; tests change one thing at a time. */
static json_t *claims(void)
{
	json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:[s], s:[{s:i, s:s}]}", "iss",
		"controller", "sub", "alice", "jti", "g-0001", "aud", HOST, "iat",
		(json_int_t)(NOW - 10), "exp", (json_int_t)(NOW + 3600), "src", "203.0.113.7",
		"ports", "port", 22, "protocol", "tcp");

	assert_non_null(c);
	return c;
}

/* json_loads for the test's own literals, which use ' for ". */
static json_t *js(const char *text)
{
	char *s = strdup(text);
	json_t *v;

	assert_non_null(s);
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	v = json_loads(s, JSON_DECODE_ANY, NULL);
	if (!v)
		fail_msg("bad test JSON %s", s);
	free(s);
	return v;
}

static json_t *with(const char *name, json_t *v)
{
	json_t *c = claims();

	json_object_set_new(c, name, v);
	return c;
}

static json_t *without(const char *name)
{
	json_t *c = claims();

	assert_int_equal(json_object_del(c, name), 0);
	return c;
}

/* Signs payload (raw bytes) under a header with the given alg/typ/kid, with the A.1 key. */
static char *sign_raw(const char *alg, const char *kid, const char *payload, size_t len)
{
	json_t *h = json_pack("{s:s, s:s, s:s}", "alg", alg, "typ", GRANT_TYP, "kid", kid);
	char *tok = NULL;

	assert_non_null(h);
	assert_int_equal(jws_sign(h, (const unsigned char *)payload, len, priv, &tok), 0);
	json_decref(h);
	return tok;
}

/* Takes c. */
static char *token_kid(json_t *c, const char *kid)
{
	char *payload = json_dumps(c, JSON_COMPACT);
	char *tok;

	assert_non_null(payload);
	tok = sign_raw("EdDSA", kid, payload, strlen(payload));
	free(payload);
	json_decref(c);
	return tok;
}

static char *token(json_t *c)
{
	return token_kid(c, KID);
}

static int verify_len(const char *tok, size_t len, struct grant *g)
{
	int ret;

	memset(&err, 0, sizeof(err));
	ret = grant_verify(tok, len, &ctx, g, &err);
	if (ret)
		assert_int_equal(err.code, ret);
	return ret;
}

static void expect_tok(const char *tok, int code, const char *needle)
{
	struct grant g;
	int ret = verify_len(tok, strlen(tok), &g);

	if (ret != code)
		fail_msg("got %s (%s), want %s: %s", jit_err_name(ret), err.msg, jit_err_name(code),
			tok);
	if (needle && !strstr(err.msg, needle))
		fail_msg("message '%s' lacks '%s'", err.msg, needle);
	if (code) {
		/* Refused means nothing is handed back. */
		assert_null(g.jti);
		assert_null(g.src);
		assert_null(g.ports);
		assert_null(g.dst);
		assert_null(g.kid);
	}
	grant_clear(&g);
}

/* Takes c. */
static void expect(json_t *c, int code, const char *needle)
{
	char *tok = token(c);

	expect_tok(tok, code, needle);
	free(tok);
}

/* Takes c; verifies it and returns the grant (caller clears). */
static struct grant accept(json_t *c)
{
	char *tok = token(c);
	struct grant g;

	if (verify_len(tok, strlen(tok), &g))
		fail_msg("refused: %s: %s", jit_err_name(err.code), err.msg);
	free(tok);
	return g;
}

static void assert_prefix(const struct prefix *p, const char *text)
{
	char buf[PREFIX_STRLEN];

	assert_int_equal(prefix_format(p, buf, sizeof(buf)), 0);
	assert_string_equal(buf, text);
}

static void assert_port(const struct port_spec *p, uint16_t port, unsigned proto)
{
	assert_int_equal(p->port, port);
	assert_int_equal(p->proto, proto);
}

static void test_valid(void **state)
{
	struct grant g = accept(claims());

	assert_string_equal(g.jti, "g-0001");
	assert_string_equal(g.iss, "controller");
	assert_string_equal(g.sub, "alice");
	assert_string_equal(g.kid, KID);
	assert_null(g.reason);
	assert_int_equal(g.iat, NOW - 10);
	assert_int_equal(g.exp, NOW + 3600);
	assert_int_equal(g.nbf, 0);
	assert_int_equal(g.n_src, 1);
	assert_prefix(&g.src[0], "203.0.113.7");
	assert_int_equal(g.n_ports, 1);
	assert_port(&g.ports[0], 22, PORT_PROTO_TCP);
	/* No "dst": a grant for the host's own ports. */
	assert_null(g.dst);
	assert_int_equal(g.n_dst, 0);
	grant_clear(&g);
	assert_null(g.jti);
	assert_int_equal(g.n_ports, 0);
	grant_clear(&g);
}

static void test_positive_variants(void **state)
{
	struct grant g;
	json_t *c;

	g = accept(with("aud", js("['other', 'web-01', 'third']")));
	grant_clear(&g);
	g = accept(with("ports", js("[{'port': 3389, 'protocol': '*'}]")));
	assert_int_equal(g.n_ports, 2);
	assert_port(&g.ports[0], 3389, PORT_PROTO_TCP);
	assert_port(&g.ports[1], 3389, PORT_PROTO_UDP);
	grant_clear(&g);
	g = accept(with("ports", js("[{'port': 22}, {'port': 22, 'protocol': 'TCP'},"
		"{'port': 53, 'protocol': 'Udp'}, {'port': 22, 'protocol': '*'},"
		"{'port': 65535}]")));
	assert_int_equal(g.n_ports, 4);
	assert_port(&g.ports[0], 22, PORT_PROTO_TCP);
	assert_port(&g.ports[1], 53, PORT_PROTO_UDP);
	assert_port(&g.ports[2], 22, PORT_PROTO_UDP);
	assert_port(&g.ports[3], 65535, PORT_PROTO_TCP);
	grant_clear(&g);
	g = accept(with("src", js("['2001:db8::/32', '2001:DB8:0::1', '10.0.0.1', "
		"'::ffff:10.0.0.1', '2001:db8::/32', '198.51.100.0/24']")));
	assert_int_equal(g.n_src, 4);
	assert_prefix(&g.src[0], "2001:db8::/32");
	assert_prefix(&g.src[1], "2001:db8::1");
	assert_prefix(&g.src[2], "10.0.0.1");
	assert_prefix(&g.src[3], "198.51.100.0/24");
	grant_clear(&g);
	g = accept(with("reason", json_string("INC-42: disk full on web-01")));
	assert_string_equal(g.reason, "INC-42: disk full on web-01");
	grant_clear(&g);
	g = accept(with("nbf", json_integer(NOW - 5)));
	assert_int_equal(g.nbf, NOW - 5);
	grant_clear(&g);
	/* Claims the agent has no use for are ignored, as JWT consumers do. */
	c = claims();
	json_object_set_new(c, "scope", js("{'x': [1, 2.5, null]}"));
	json_object_set_new(c, "azp", json_string("portal"));
	g = accept(c);
	grant_clear(&g);
}

static void test_dst(void **state)
{
	struct grant g = accept(with("dst", js("['10.1.0.5', '::ffff:10.1.0.5', '10.2.0.0/24', "
		"'2001:DB8:0::/64', '10.1.0.5/32', '2001:db8::/64', '0.0.0.0/0']")));

	assert_int_equal(g.n_dst, 4);
	assert_prefix(&g.dst[0], "10.1.0.5");
	assert_prefix(&g.dst[1], "10.2.0.0/24");
	assert_prefix(&g.dst[2], "2001:db8::/64");
	assert_prefix(&g.dst[3], "0.0.0.0/0");
	/* The sources are unaffected. */
	assert_int_equal(g.n_src, 1);
	assert_prefix(&g.src[0], "203.0.113.7");
	grant_clear(&g);
	assert_null(g.dst);
	assert_int_equal(g.n_dst, 0);
	expect(with("dst", json_string("10.1.0.5")), JIT_ERR_MALFORMED,
		"claim 'dst': expected an array, not a string");
	expect(with("dst", json_null()), JIT_ERR_MALFORMED,
		"claim 'dst': expected an array, not null");
	expect(with("dst", js("[]")), JIT_ERR_MALFORMED, "claim 'dst': empty");
	expect(with("dst", js("['10.1.0.5', 7]")), JIT_ERR_MALFORMED,
		"claim 'dst[1]': expected a string, not an integer");
	expect(with("dst", js("['10.1.0.5/24']")), JIT_ERR_MALFORMED,
		"claim 'dst[0]': '10.1.0.5/24' is not an IP prefix");
	expect(with("dst", js("['*']")), JIT_ERR_MALFORMED, "claim 'dst[0]': '*'");
	expect(with("dst", js("['db-01.example']")), JIT_ERR_MALFORMED, "claim 'dst[0]'");
	expect(with("dst", js("['10.1.0.5\\u001b']")), JIT_ERR_MALFORMED, "'10.1.0.5?'");
}

static void test_header_alg_ed25519(void **state)
{
	json_t *c = claims();
	char *payload = json_dumps(c, JSON_COMPACT);
	char *tok = sign_raw("Ed25519", KID, payload, strlen(payload));

	expect_tok(tok, 0, NULL);
	free(tok);
	free(payload);
	json_decref(c);
}

/* header "." payload "." sig, each encoded here: for tokens jws_sign would not make. */
static char *assemble(const char *header, const char *payload, const unsigned char *sig,
	size_t siglen)
{
	size_t hl = strlen(header), pl = strlen(payload);
	char *s = malloc(b64url_encoded_len(hl) + b64url_encoded_len(pl) +
		b64url_encoded_len(siglen) + 3);

	assert_non_null(s);
	b64url_encode((const unsigned char *)header, hl, s);
	strcat(s, ".");
	b64url_encode((const unsigned char *)payload, pl, s + strlen(s));
	strcat(s, ".");
	b64url_encode(sig, siglen, s + strlen(s));
	return s;
}

static void test_alg_none(void **state)
{
	static const unsigned char zeros[64];
	json_t *c = claims();
	char *payload = json_dumps(c, JSON_COMPACT), *tok;
	const char *hdr = "{\"alg\":\"none\",\"typ\":\"jit-grant+jwt\",\"kid\":\"" KID "\"}";

	tok = assemble(hdr, payload, zeros, 0);
	expect_tok(tok, JIT_ERR_MALFORMED, "signature is 0 bytes");
	free(tok);
	/* With a signature of the right size, the header rule is what refuses it. */
	tok = assemble(hdr, payload, zeros, sizeof(zeros));
	expect_tok(tok, JIT_ERR_BAD_HEADER, "alg 'none'");
	free(tok);
	tok = assemble("{\"alg\":\"NoNe\",\"typ\":\"jit-grant+jwt\",\"kid\":\"" KID "\"}", payload,
		zeros, sizeof(zeros));
	expect_tok(tok, JIT_ERR_BAD_HEADER, "alg 'NoNe'");
	free(tok);
	free(payload);
	json_decref(c);
}

/* The key-confusion attack: the public key, which anyone has, used as an HMAC secret. */
static void test_alg_hmac(void **state)
{
	const char *hs256 = "{\"alg\":\"HS256\",\"typ\":\"jit-grant+jwt\",\"kid\":\"" KID "\"}";
	const char *hs512 = "{\"alg\":\"HS512\",\"typ\":\"jit-grant+jwt\",\"kid\":\"" KID "\"}";
	json_t *c = claims();
	char *payload = json_dumps(c, JSON_COMPACT), *tok, *input;
	unsigned char mac[EVP_MAX_MD_SIZE];
	unsigned int maclen;

	tok = assemble(hs256, payload, mac, 0);
	input = strndup(tok, strlen(tok) - 1);
	assert_non_null(HMAC(EVP_sha256(), a1_x, sizeof(a1_x), (const unsigned char *)input,
		strlen(input), mac, &maclen));
	assert_int_equal(maclen, 32);
	free(tok);
	tok = assemble(hs256, payload, mac, maclen);
	expect_tok(tok, JIT_ERR_MALFORMED, "signature is 32 bytes");
	free(tok);
	free(input);

	/* HS512 has the size of an Ed25519 signature, so it reaches the header check. */
	tok = assemble(hs512, payload, mac, 0);
	input = strndup(tok, strlen(tok) - 1);
	assert_non_null(HMAC(EVP_sha512(), a1_x, sizeof(a1_x), (const unsigned char *)input,
		strlen(input), mac, &maclen));
	assert_int_equal(maclen, 64);
	free(tok);
	tok = assemble(hs512, payload, mac, maclen);
	expect_tok(tok, JIT_ERR_BAD_HEADER, "alg 'HS512'");
	free(tok);
	free(input);
	free(payload);
	json_decref(c);
}

static void test_bad_signature(void **state)
{
	EVP_PKEY_CTX *kc = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	EVP_PKEY *other = NULL;
	json_t *h, *c = claims();
	char *tok = token(claims()), *payload, *forged = NULL;
	char *sig = strrchr(tok, '.') + 1;

	/* 'A' <-> 'B' changes one bit of the first signature byte. */
	sig[0] = sig[0] == 'A' ? 'B' : 'A';
	expect_tok(tok, JIT_ERR_BAD_SIGNATURE, "signature");
	free(tok);

	/* A correct signature by a key that is not the one kid names. */
	assert_non_null(kc);
	assert_int_equal(EVP_PKEY_keygen_init(kc), 1);
	assert_int_equal(EVP_PKEY_keygen(kc, &other), 1);
	h = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", GRANT_TYP, "kid", KID);
	payload = json_dumps(c, JSON_COMPACT);
	assert_int_equal(jws_sign(h, (const unsigned char *)payload, strlen(payload), other,
		&forged), 0);
	expect_tok(forged, JIT_ERR_BAD_SIGNATURE, "does not verify");
	free(forged);
	free(payload);
	json_decref(h);
	json_decref(c);
	EVP_PKEY_free(other);
	EVP_PKEY_CTX_free(kc);
}

/* A claim changed after signing: the signature covers the encoded payload. */
static void test_tampered_payload(void **state)
{
	char *tok = token(claims()), *good = token(claims());
	char *dot1 = strchr(tok, '.'), *dot2 = strrchr(tok, '.');
	char *other = token(with("aud", json_string("web-02")));
	char *p1 = strchr(other, '.'), *p2 = strrchr(other, '.');
	char *spliced = malloc(strlen(tok) + strlen(other));

	assert_non_null(spliced);
	/* Header of one, payload of another, signature of the first. */
	snprintf(spliced, strlen(tok) + strlen(other), "%.*s%.*s%s", (int)(dot1 - tok), tok,
		(int)(p2 - p1), p1, dot2);
	expect_tok(spliced, JIT_ERR_BAD_SIGNATURE, "does not verify");
	expect_tok(good, 0, NULL);
	free(spliced);
	free(other);
	free(good);
	free(tok);
}

static void test_unknown_key(void **state)
{
	static const struct {
		const char *kid, *needle;
	} cases[] = {
		{ "nosuch", "no such key" },
		{ "gw", "writable by group or others" },
		{ "ow", "writable by group or others" },
		{ "ed448", "not an Ed25519 key" },
		{ "garbage", "not a PEM public key" },
		{ "empty", "not a PEM public key" },
		{ "link", "link" },
	};
	EVP_PKEY *k = (EVP_PKEY *)1;
	struct jit_error e = { 0 };
	char *tok;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		tok = token_kid(claims(), cases[i].kid);
		expect_tok(tok, JIT_ERR_UNKNOWN_KEY, cases[i].needle);
		assert_non_null(strstr(err.msg, cases[i].kid));
		free(tok);
	}
	/* Path traversal never gets as far as the file system. */
	tok = token_kid(claims(), "../etc/passwd");
	expect_tok(tok, JIT_ERR_BAD_HEADER, "kid '../etc/passwd'");
	free(tok);
	assert_int_equal(keys_load_public(keys_dir, "../etc/passwd", &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_null(k);
	assert_non_null(strstr(e.msg, "not a valid key id"));
	assert_int_equal(keys_load_public(keys_dir, "/etc/passwd", &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_int_equal(keys_load_public(keys_dir, ".", &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_int_equal(keys_load_public(keys_dir, "", &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_int_equal(keys_load_public(keys_dir, NULL, &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_int_equal(keys_load_public("/nonexistent", KID, &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_int_equal(keys_load_public(keys_dir, KID, &k, &e), 0);
	assert_int_equal(EVP_PKEY_eq(k, pub), 1);
	EVP_PKEY_free(k);
}

static void test_key_file_types(void **state)
{
	char long_dir[PATH_MAX + 10], sub[PATH_MAX];
	struct jit_error e = { 0 };
	EVP_PKEY *k = NULL;

	/* A directory where a key should be. */
	snprintf(sub, sizeof(sub), "%s/dir.pem", keys_dir);
	assert_int_equal(mkdir(sub, 0755), 0);
	assert_int_equal(keys_load_public(keys_dir, "dir", &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_non_null(strstr(e.msg, "not a regular file"));
	assert_int_equal(rmdir(sub), 0);
	/* A FIFO must be refused, not block the daemon. */
	snprintf(sub, sizeof(sub), "%s/fifo.pem", keys_dir);
	assert_int_equal(mkfifo(sub, 0644), 0);
	assert_int_equal(keys_load_public(keys_dir, "fifo", &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_non_null(strstr(e.msg, "not a regular file"));
	assert_int_equal(unlink(sub), 0);
	memset(long_dir, 'd', sizeof(long_dir) - 1);
	long_dir[0] = '/';
	long_dir[sizeof(long_dir) - 1] = '\0';
	assert_int_equal(keys_load_public(long_dir, KID, &k, &e), JIT_ERR_UNKNOWN_KEY);
	assert_non_null(strstr(e.msg, "too long"));
	assert_null(k);
}

static void test_audience(void **state)
{
	expect(with("aud", json_string("web-02")), JIT_ERR_WRONG_AUDIENCE, "aud");
	expect(with("aud", json_string("WEB-01")), JIT_ERR_WRONG_AUDIENCE, "'web-01'");
	expect(with("aud", json_string("web-01 ")), JIT_ERR_WRONG_AUDIENCE, "aud");
	expect(with("aud", json_string("")), JIT_ERR_WRONG_AUDIENCE, "aud");
	expect(with("aud", js("['web-02', 'db-01']")), JIT_ERR_WRONG_AUDIENCE, "aud");
	expect(with("aud", js("[]")), JIT_ERR_WRONG_AUDIENCE, "aud");
	expect(with("aud", js("5")), JIT_ERR_MALFORMED, "claim 'aud'");
	expect(with("aud", js("{'web-01': true}")), JIT_ERR_MALFORMED, "claim 'aud'");
	expect(with("aud", js("['web-01', 5]")), JIT_ERR_MALFORMED, "claim 'aud[1]'");
	expect(with("aud", js("[['web-01']]")), JIT_ERR_MALFORMED, "claim 'aud[0]'");
}

/* Takes c, with iat/nbf/exp already set; verifies at NOW with the given skew. */
static void expect_at(json_t *c, uint64_t skew, int code, const char *needle)
{
	ctx.clock_skew = skew;
	expect(c, code, needle);
	ctx.clock_skew = SKEW;
}

static json_t *times(int64_t iat, int64_t nbf, int64_t exp)
{
	json_t *c = claims();

	json_object_set_new(c, "iat", json_integer(iat));
	json_object_set_new(c, "exp", json_integer(exp));
	if (nbf)
		json_object_set_new(c, "nbf", json_integer(nbf));
	return c;
}

static void test_time(void **state)
{
	/* exp: refused at or after exp + skew. */
	expect_at(times(NOW - 100, 0, NOW - 61), SKEW, JIT_ERR_EXPIRED, "claim 'exp'");
	expect_at(times(NOW - 100, 0, NOW - 60), SKEW, JIT_ERR_EXPIRED, "claim 'exp'");
	expect_at(times(NOW - 100, 0, NOW - 59), SKEW, 0, NULL);
	expect_at(times(NOW - 100, 0, NOW), 0, JIT_ERR_EXPIRED, "claim 'exp'");
	expect_at(times(NOW - 100, 0, NOW + 1), 0, 0, NULL);
	/* nbf and iat: refused when later than now + skew. */
	expect_at(times(NOW, NOW + 61, NOW + 100), SKEW, JIT_ERR_NOT_YET_VALID, "claim 'nbf'");
	expect_at(times(NOW, NOW + 60, NOW + 100), SKEW, 0, NULL);
	expect_at(times(NOW, NOW + 1, NOW + 100), 0, JIT_ERR_NOT_YET_VALID, "claim 'nbf'");
	expect_at(times(NOW, NOW, NOW + 100), 0, 0, NULL);
	expect_at(times(NOW + 61, 0, NOW + 100), SKEW, JIT_ERR_NOT_YET_VALID, "claim 'iat'");
	expect_at(times(NOW + 60, 0, NOW + 100), SKEW, 0, NULL);
	expect_at(times(NOW + 1, 0, NOW + 100), 0, JIT_ERR_NOT_YET_VALID, "claim 'iat'");
	/* Windows that close before they open. */
	expect_at(times(NOW, 0, NOW), SKEW, JIT_ERR_MALFORMED, "not after iat");
	expect_at(times(NOW + 10, 0, NOW + 5), SKEW, JIT_ERR_MALFORMED, "not after iat");
	expect_at(times(NOW - 10, NOW + 30, NOW + 20), SKEW, JIT_ERR_MALFORMED, "not after nbf");
	/* The same whatever the clock: not expired, nor not yet valid (which invites a retry). */
	expect_at(times(NOW - 100, 0, NOW - 200), SKEW, JIT_ERR_MALFORMED, "not after iat");
	expect_at(times(NOW, NOW + 3600, NOW + 1800), SKEW, JIT_ERR_MALFORMED, "not after nbf");
	/* A huge skew neither overflows nor turns expired grants into valid ones forever. */
	expect_at(times(NOW - 100, 0, NOW - 50), UINT64_MAX, 0, NULL);
	expect_at(times(NOW - 100, 0, 253402300799LL), SKEW, 0, NULL);
	expect_at(times(NOW - 100, 0, 253402300800LL), SKEW, JIT_ERR_MALFORMED, "claim 'exp'");
}

static void test_types(void **state)
{
	char longs[GRANT_MAX_STRING + 2];

	expect(with("ports", js("[{'port': '22'}]")), JIT_ERR_MALFORMED,
		"claim 'ports[0].port': expected an integer, not a string");
	expect(with("exp", json_real(1700003600.0)), JIT_ERR_MALFORMED,
		"claim 'exp': expected an integer, not a real number");
	expect(with("exp", js("1.7000036e9")), JIT_ERR_MALFORMED, "claim 'exp'");
	expect(with("exp", json_string("1700003600")), JIT_ERR_MALFORMED, "claim 'exp'");
	expect(with("exp", json_true()), JIT_ERR_MALFORMED, "claim 'exp'");
	expect(with("exp", json_null()), JIT_ERR_MALFORMED, "claim 'exp'");
	expect(with("iat", json_integer(0)), JIT_ERR_MALFORMED, "claim 'iat'");
	expect(with("iat", json_integer(-5)), JIT_ERR_MALFORMED, "claim 'iat'");
	expect(with("nbf", json_string("now")), JIT_ERR_MALFORMED, "claim 'nbf'");
	expect(with("nbf", json_integer(0)), JIT_ERR_MALFORMED, "claim 'nbf'");
	expect(with("src", json_string("203.0.113.7")), JIT_ERR_MALFORMED,
		"claim 'src': expected an array");
	expect(with("src", js("[]")), JIT_ERR_MALFORMED, "claim 'src': empty");
	expect(with("src", js("[7]")), JIT_ERR_MALFORMED, "claim 'src[0]'");
	expect(with("src", js("['10.0.0.1', '10.0.0.5/24']")), JIT_ERR_MALFORMED,
		"claim 'src[1]': '10.0.0.5/24'");
	expect(with("src", js("['*']")), JIT_ERR_MALFORMED, "claim 'src[0]'");
	expect(with("src", js("['host.example']")), JIT_ERR_MALFORMED, "claim 'src[0]'");
	expect(with("src", js("['10.0.0.1\\n']")), JIT_ERR_MALFORMED, "'10.0.0.1?'");
	expect(with("ports", js("{'port': 22}")), JIT_ERR_MALFORMED, "claim 'ports'");
	expect(with("ports", js("[]")), JIT_ERR_MALFORMED, "claim 'ports': empty");
	expect(with("ports", js("[22]")), JIT_ERR_MALFORMED, "claim 'ports[0]'");
	expect(with("ports", js("[{'port': 0}]")), JIT_ERR_MALFORMED, "claim 'ports[0].port'");
	expect(with("ports", js("[{'port': 65536}]")), JIT_ERR_MALFORMED, "claim 'ports[0].port'");
	expect(with("ports", js("[{'port': -22}]")), JIT_ERR_MALFORMED, "claim 'ports[0].port'");
	expect(with("ports", js("[{'port': 22.0}]")), JIT_ERR_MALFORMED, "claim 'ports[0].port'");
	expect(with("ports", js("[{'protocol': 'tcp'}]")), JIT_ERR_MALFORMED, "claim 'ports[0]'");
	expect(with("ports", js("[{'port': 22, 'protocol': 'sctp'}]")), JIT_ERR_MALFORMED,
		"claim 'ports[0].protocol': 'sctp'");
	expect(with("ports", js("[{'port': 22, 'protocol': 6}]")), JIT_ERR_MALFORMED,
		"claim 'ports[0].protocol'");
	expect(with("ports", js("[{'port': 22}, {'port': 22, 'proto': 'udp'}]")),
		JIT_ERR_MALFORMED, "claim 'ports[1]': members other than");
	expect(with("ports", js("[{'port': 22, 'protocol': 'tcp', 'src': '10.0.0.1'}]")),
		JIT_ERR_MALFORMED, "claim 'ports[0]'");
	expect(with("iss", json_integer(5)), JIT_ERR_MALFORMED, "claim 'iss'");
	expect(with("sub", js("['alice']")), JIT_ERR_MALFORMED, "claim 'sub'");
	expect(with("jti", json_string("")), JIT_ERR_MALFORMED, "claim 'jti': empty");
	expect(with("jti", json_string("g\n1")), JIT_ERR_MALFORMED,
		"claim 'jti': contains a control");
	/* One word in the replay file and the log; other claims may hold spaces. */
	expect(with("jti", json_string("g 1")), JIT_ERR_MALFORMED, "claim 'jti': contains a space");
	grant_clear((struct grant[]){ accept(with("sub", json_string("alice smith"))) });
	expect(with("sub", json_string("alice\x1b[31m")), JIT_ERR_MALFORMED, "claim 'sub'");
	/* C1's CSI, the right-to-left override, a line separator, an isolate, a mark. */
	expect(with("reason", json_string("a\xc2\x9b" "2J")), JIT_ERR_MALFORMED,
		"claim 'reason': contains a control character");
	expect(with("sub", json_string("\xe2\x80\xae" "gro.elpmaxe@ecila")), JIT_ERR_MALFORMED,
		"claim 'sub': contains a bidirectional formatting character");
	expect(with("reason", json_string("a\xe2\x80\xa8" "b")), JIT_ERR_MALFORMED,
		"claim 'reason': contains a line or paragraph separator");
	expect(with("sub", json_string("a\xe2\x81\xa6" "b")), JIT_ERR_MALFORMED,
		"claim 'sub': contains a bidirectional formatting character");
	expect(with("jti", json_string("g\xe2\x80\x8f" "1")), JIT_ERR_MALFORMED,
		"claim 'jti': contains a bidirectional formatting character");
	expect(with("sub", json_string("a\xd8\x9c" "b")), JIT_ERR_MALFORMED,
		"claim 'sub': contains a bidirectional formatting character");
	/* Other UTF-8 stays: names are not ASCII everywhere (U+00E9, U+0627; U+2014, U+20AC). */
	grant_clear((struct grant[]){ accept(with("sub", json_string("ren\xc3\xa9" "e"))) });
	grant_clear((struct grant[]){ accept(with("sub", json_string("\xd8\xa7" "b"))) });
	grant_clear((struct grant[]){ accept(with("reason",
		json_string("a \xe2\x80\x94 \xe2\x82\xac" "5"))) });
	expect(with("reason", json_integer(1)), JIT_ERR_MALFORMED, "claim 'reason'");
	expect(with("reason", json_string("a\rb")), JIT_ERR_MALFORMED, "claim 'reason'");
	memset(longs, 'x', sizeof(longs) - 1);
	longs[sizeof(longs) - 1] = '\0';
	expect(with("reason", json_string(longs)), JIT_ERR_MALFORMED, "claim 'reason': 257 bytes");
	expect(with("jti", json_string(longs)), JIT_ERR_MALFORMED, "claim 'jti': 257 bytes");
	longs[GRANT_MAX_STRING] = '\0';
	grant_clear((struct grant[]){ accept(with("jti", json_string(longs))) });
}

static void test_missing(void **state)
{
	static const char *const required[] = { "iss", "sub", "jti", "iat", "exp", "aud", "src",
		"ports" };
	char needle[64];

	for (size_t i = 0; i < sizeof(required) / sizeof(required[0]); i++) {
		snprintf(needle, sizeof(needle), "claim '%s': missing", required[i]);
		expect(without(required[i]), JIT_ERR_MALFORMED, needle);
	}
}

/* Takes payload text verbatim: what the controller might send that is not a claims object. */
static void expect_payload(const char *payload, size_t len, const char *needle)
{
	char *tok = sign_raw("EdDSA", KID, payload, len);

	expect_tok(tok, JIT_ERR_MALFORMED, needle);
	free(tok);
}

static void test_payload(void **state)
{
	static const char dup[] = "{\"iss\":\"a\",\"iss\":\"b\"}";
	static const char nul[] = "{\"iss\":\"a\"}\0{\"x\":1}";

	expect_payload("Example of Ed25519 signing", 26, "claims: not valid JSON");
	expect_payload("[1]", 3, "claims");
	expect_payload("\"x\"", 3, "claims");
	expect_payload(dup, strlen(dup), "duplicate");
	expect_payload(nul, sizeof(nul) - 1, "NUL");
	expect_payload("{} x", 4, "claims: not valid JSON");
	expect_payload("{\"exp\":1e400}", 13, "claims");
	expect_payload("{\"exp\":100000000000000000000}", 29, "claims");
}

static void test_syntax(void **state)
{
	char *tok = token(claims()), *bad = malloc(strlen(tok) + 8);
	char *payload = strchr(tok, '.') + 1;

	assert_non_null(bad);
	/* Trailing garbage, in all its shapes. */
	sprintf(bad, "%sx", tok);
	expect_tok(bad, JIT_ERR_MALFORMED, "signature");
	sprintf(bad, "%s\n", tok);
	expect_tok(bad, JIT_ERR_MALFORMED, "signature");
	sprintf(bad, "%s.", tok);
	expect_tok(bad, JIT_ERR_MALFORMED, "more than three");
	sprintf(bad, "%s==", tok);
	expect_tok(bad, JIT_ERR_MALFORMED, "signature");
	sprintf(bad, " %s", tok);
	expect_tok(bad, JIT_ERR_MALFORMED, "header");
	/* Bad base64url in the payload: standard alphabet, then a stray '='. */
	strcpy(bad, tok);
	bad[payload - tok] = '+';
	expect_tok(bad, JIT_ERR_MALFORMED, "payload segment is not canonical base64url");
	bad[payload - tok] = '=';
	expect_tok(bad, JIT_ERR_MALFORMED, "payload segment");
	strcpy(bad, tok);
	bad[1] = '/';
	expect_tok(bad, JIT_ERR_MALFORMED, "header segment");
	/* Two segments. */
	*strrchr(tok, '.') = '\0';
	expect_tok(tok, JIT_ERR_MALFORMED, "fewer than three");
	free(bad);
	free(tok);
}

static void test_too_large(void **state)
{
	size_t big = 1024 * 1024;
	char *tok = malloc(big + 1), *padding = malloc(JWS_MAX_TOKEN);
	struct grant g;
	json_t *c;

	assert_non_null(tok);
	assert_non_null(padding);
	memset(tok, 'A', big);
	tok[big] = '\0';
	tok[20] = tok[40] = '.';
	assert_int_equal(verify_len(tok, big, &g), JIT_ERR_TOO_LARGE);
	assert_non_null(strstr(err.msg, "at most 16384"));
	free(tok);
	/* Validly signed but just over the cap: refused before the signature is looked at. */
	memset(padding, 'p', JWS_MAX_TOKEN - 4000);
	padding[JWS_MAX_TOKEN - 4000] = '\0';
	c = with("padding", json_string(padding));
	tok = token(c);
	assert_true(strlen(tok) > JWS_MAX_TOKEN);
	expect_tok(tok, JIT_ERR_TOO_LARGE, "token");
	free(tok);
	free(padding);
}

static void test_limits(void **state)
{
	json_t *src = json_array(), *ports = json_array(), *stars = json_array(),
	       *dst = json_array();
	char buf[32];
	struct grant g;

	for (int i = 0; i < GRANT_MAX_SOURCES; i++) {
		snprintf(buf, sizeof(buf), "10.0.%d.0/24", i);
		json_array_append_new(src, json_string(buf));
		snprintf(buf, sizeof(buf), "10.1.%d.5", i);
		json_array_append_new(dst, json_string(buf));
	}
	for (int i = 0; i < GRANT_MAX_PORTS; i++) {
		json_array_append_new(ports, json_pack("{s:i}", "port", 1000 + i));
		if (i < GRANT_MAX_PORTS / 2)
			json_array_append_new(stars, json_pack("{s:i,s:s}", "port", 1000 + i,
				"protocol", "*"));
	}
	g = accept(with("src", json_incref(src)));
	assert_int_equal(g.n_src, GRANT_MAX_SOURCES);
	grant_clear(&g);
	g = accept(with("ports", json_incref(ports)));
	assert_int_equal(g.n_ports, GRANT_MAX_PORTS);
	grant_clear(&g);
	g = accept(with("dst", json_incref(dst)));
	assert_int_equal(g.n_dst, GRANT_MAX_DESTINATIONS);
	grant_clear(&g);
	g = accept(with("ports", json_incref(stars)));
	assert_int_equal(g.n_ports, GRANT_MAX_PORTS);
	grant_clear(&g);
	json_array_append_new(src, json_string("192.0.2.1"));
	expect(with("src", src), JIT_ERR_TOO_LARGE, "claim 'src': 65 entries");
	/* Counted before deduplication, like src. */
	json_array_append_new(dst, json_string("10.1.0.5"));
	expect(with("dst", dst), JIT_ERR_TOO_LARGE, "claim 'dst': 65 entries, at most 64 allowed");
	json_array_append_new(ports, json_pack("{s:i}", "port", 1));
	expect(with("ports", ports), JIT_ERR_TOO_LARGE, "claim 'ports': 65 entries");
	json_array_append_new(stars, json_pack("{s:i,s:s}", "port", 1, "protocol", "*"));
	expect(with("ports", stars), JIT_ERR_TOO_LARGE, "claim 'ports': 66 port/protocol pairs");
}

static void test_parse_claims(void **state)
{
	struct jit_error e = { 0 };
	json_t *c = claims(), *arr = js("[]");
	struct grant g;

	assert_int_equal(grant_parse_claims(c, &g, &e), 0);
	assert_null(g.kid);
	assert_string_equal(g.jti, "g-0001");
	grant_clear(&g);
	/* The audience is checked for type here, for value only by grant_verify. */
	json_object_set_new(c, "aud", json_string("elsewhere"));
	assert_int_equal(grant_parse_claims(c, &g, &e), 0);
	grant_clear(&g);
	assert_int_equal(grant_parse_claims(arr, &g, &e), JIT_ERR_MALFORMED);
	assert_non_null(strstr(e.msg, "claims"));
	assert_null(g.jti);
	json_decref(arr);
	json_decref(c);
}

static void test_copy(void **state)
{
	struct grant g = accept(with("reason", json_string("why"))), d, empty = { 0 };

	assert_int_equal(grant_copy(&g, &d), 0);
	assert_ptr_not_equal(d.jti, g.jti);
	assert_ptr_not_equal(d.src, g.src);
	assert_string_equal(d.jti, g.jti);
	assert_string_equal(d.iss, g.iss);
	assert_string_equal(d.sub, g.sub);
	assert_string_equal(d.kid, g.kid);
	assert_string_equal(d.reason, g.reason);
	assert_int_equal(d.iat, g.iat);
	assert_int_equal(d.exp, g.exp);
	assert_int_equal(d.nbf, g.nbf);
	assert_int_equal(d.n_src, g.n_src);
	assert_int_equal(d.n_ports, g.n_ports);
	assert_memory_equal(d.src, g.src, g.n_src * sizeof(*g.src));
	assert_memory_equal(d.ports, g.ports, g.n_ports * sizeof(*g.ports));
	grant_clear(&g);
	assert_string_equal(d.reason, "why");
	grant_clear(&d);
	assert_int_equal(grant_copy(&empty, &d), 0);
	assert_null(d.jti);
	assert_null(d.src);
	assert_null(d.dst);
	assert_null(d.dnat_ports);
	grant_clear(&d);
}

static void test_copy_dst(void **state)
{
	static const uint16_t mapped[] = { 50000, 50001 };
	struct grant g = accept(with("dst", js("['10.1.0.5', '2001:db8::/64']"))), d;

	/* The agent's gateway ports travel with the grant. */
	assert_non_null(g.dnat_ports = malloc(sizeof(mapped)));
	memcpy(g.dnat_ports, mapped, sizeof(mapped));
	g.n_dnat_ports = 2;
	assert_int_equal(grant_copy(&g, &d), 0);
	assert_ptr_not_equal(d.dst, g.dst);
	assert_int_equal(d.n_dst, 2);
	assert_memory_equal(d.dst, g.dst, g.n_dst * sizeof(*g.dst));
	assert_ptr_not_equal(d.dnat_ports, g.dnat_ports);
	assert_int_equal(d.n_dnat_ports, 2);
	assert_memory_equal(d.dnat_ports, mapped, sizeof(mapped));
	grant_clear(&g);
	assert_null(g.dnat_ports);
	assert_int_equal(g.n_dnat_ports, 0);
	assert_prefix(&d.dst[1], "2001:db8::/64");
	grant_clear(&d);
	assert_null(d.dst);
	assert_int_equal(d.n_dst, 0);
}

static int verify_recorded(const char *tok, const char *trusted_kid, struct grant *g)
{
	struct grant_verify_ctx c = ctx;
	int ret;

	c.trusted_kid = trusted_kid;
	memset(&err, 0, sizeof(err));
	ret = grant_verify_recorded(tok, strlen(tok), &c, g, &err);
	grant_clear(g);
	return ret;
}

/*
 * A recorded token: no signature arithmetic, but its key must still be trusted. trusted_kid
 * spares the lookup for that one kid, and only for recorded tokens.
 */
static void test_verify_recorded(void **state)
{
	char *orphan = token_kid(claims(), "gone"), *tok = token(claims()), *sig;
	struct grant g;

	assert_int_equal(verify_recorded(tok, NULL, &g), 0);
	/* jitd verified the signature before recording it: it is not verified again. */
	sig = strrchr(tok, '.') + 5;
	*sig = *sig == 'A' ? 'B' : 'A';
	assert_int_equal(verify_recorded(tok, NULL, &g), 0);
	expect_tok(tok, JIT_ERR_BAD_SIGNATURE, NULL);
	/* No gone.pem: refused, unless this pass has just found "gone" trusted. */
	assert_int_equal(verify_recorded(orphan, NULL, &g), JIT_ERR_UNKNOWN_KEY);
	assert_int_equal(verify_recorded(orphan, KID, &g), JIT_ERR_UNKNOWN_KEY);
	assert_int_equal(verify_recorded(orphan, "gone", &g), 0);
	ctx.trusted_kid = "gone";
	expect_tok(orphan, JIT_ERR_UNKNOWN_KEY, NULL); /* a token from outside: always looked up */
	ctx.trusted_kid = NULL;
	free(orphan);
	free(tok);

	/*
	 * A clock behind the grant's iat now (a boot before NTP): the recorded token is judged by
	 * it as one from outside, not yet valid. Its time cannot be known: closed, not open.
	 */
	tok = token(with("iat", json_integer(NOW + 500)));
	assert_int_equal(verify_recorded(tok, NULL, &g), JIT_ERR_NOT_YET_VALID);
	free(tok);
}

/* A packed grant says what it said before, from one block, and still owns its gateway ports. */
static void test_pack(void **state)
{
	static const uint16_t mapped[] = { 50000, 50001 };
	struct grant g = accept(with("dst", js("['10.1.0.5', '2001:db8::/64']"))), want, empty = { 0 };
	uint16_t *ports;
	char *block;

	assert_non_null(g.reason = strdup("INC-7"));
	assert_non_null(ports = g.dnat_ports = malloc(sizeof(mapped)));
	memcpy(g.dnat_ports, mapped, sizeof(mapped));
	g.n_dnat_ports = 2;
	assert_int_equal(grant_copy(&g, &want), 0);
	assert_int_equal(grant_pack(&g), 0);
	assert_non_null(block = g.block);
	/* Every string and claim array now lives in the block; the gateway ports do not. */
	{
		const char *in[] = { g.jti, g.iss, g.sub, g.kid, g.reason, (char *)g.src,
			(char *)g.ports, (char *)g.dst };

		for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++) {
			assert_true(in[i] >= block);
			assert_true(in[i] < block + malloc_usable_size(block));
		}
	}
	assert_string_equal(g.jti, want.jti);
	assert_string_equal(g.iss, want.iss);
	assert_string_equal(g.sub, want.sub);
	assert_string_equal(g.kid, want.kid);
	assert_string_equal(g.reason, "INC-7");
	assert_int_equal(g.n_src, want.n_src);
	assert_memory_equal(g.src, want.src, want.n_src * sizeof(*want.src));
	assert_memory_equal(g.ports, want.ports, want.n_ports * sizeof(*want.ports));
	assert_memory_equal(g.dst, want.dst, want.n_dst * sizeof(*want.dst));
	assert_ptr_equal(g.dnat_ports, ports);
	assert_int_equal(grant_pack(&g), 0); /* already packed: nothing moves */
	assert_ptr_equal(g.block, block);
	assert_ptr_equal((void *)g.src, (void *)block);
	grant_clear(&g); /* ASan: the block and the ports freed, nothing twice */
	assert_null(g.block);
	assert_null(g.dnat_ports);
	grant_clear(&want);
	assert_int_equal(grant_pack(&empty), 0);
	assert_null(empty.jti);
	assert_null(empty.src);
	grant_clear(&empty);
}

static void read_file(const char *path, char *buf, size_t len)
{
	FILE *f = fopen(path, "r");
	size_t n;

	assert_non_null(f);
	n = fread(buf, 1, len - 1, f);
	buf[n] = '\0';
	fclose(f);
}

/* How many entries dir holds, "." and ".." aside. */
static int dir_entries(const char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += strcmp(de->d_name, ".") && strcmp(de->d_name, "..");
	closedir(d);
	return n;
}

static void test_keys_generate(void **state)
{
	char dir[] = "/tmp/jitd-test-keygen-XXXXXX", path[PATH_MAX], pem[PATH_MAX];
	char before[1024], after[1024];
	const struct grant_verify_ctx gctx = { .keys_dir = dir, .host_id = HOST, .now = NOW,
		.clock_skew = SKEW };
	struct jit_error e = { 0 };
	EVP_PKEY *k = NULL, *p = NULL;
	struct stat st;
	struct grant g;
	json_t *h, *c;
	char *payload, *tok;
	FILE *f;

	assert_non_null(mkdtemp(dir));
	assert_int_equal(keys_generate(dir, "gen-1"), 0);
	/* The two files and nothing else (written unnamed, then named: no temporary left). */
	assert_int_equal(dir_entries(dir), 2);
	snprintf(path, sizeof(path), "%s/gen-1.key", dir);
	snprintf(pem, sizeof(pem), "%s/gen-1.pem", dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(stat(pem, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0644);

	/* The pair works end to end: sign with the private half, verify by kid. */
	assert_int_equal(keys_load_private(path, &k), 0);
	assert_int_equal(EVP_PKEY_base_id(k), EVP_PKEY_ED25519);
	assert_int_equal(keys_load_public(dir, "gen-1", &p, &e), 0);
	assert_int_equal(EVP_PKEY_eq(k, p), 1);
	EVP_PKEY_free(p);
	h = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", GRANT_TYP, "kid", "gen-1");
	c = claims();
	payload = json_dumps(c, JSON_COMPACT);
	assert_int_equal(jws_sign(h, (const unsigned char *)payload, strlen(payload), k, &tok), 0);
	assert_int_equal(grant_verify(tok, strlen(tok), &gctx, &g, &e), 0);
	assert_string_equal(g.kid, "gen-1");
	grant_clear(&g);

	/* Never overwrite: both files stay as they were. */
	read_file(path, before, sizeof(before));
	assert_int_equal(keys_generate(dir, "gen-1"), -EEXIST);
	read_file(path, after, sizeof(after));
	assert_string_equal(before, after);
	assert_int_equal(stat(pem, &st), 0);
	/* Only the public half exists: refused, and no orphan private key left behind. */
	snprintf(path, sizeof(path), "%s/half.pem", dir);
	assert_non_null(f = fopen(path, "w"));
	fclose(f);
	assert_int_equal(keys_generate(dir, "half"), -EEXIST);
	snprintf(path, sizeof(path), "%s/half.key", dir);
	assert_int_equal(access(path, F_OK), -1);
	snprintf(path, sizeof(path), "%s/half.pem", dir);
	assert_int_equal(unlink(path), 0);

	/* A dangling symlink in the private key's place: refused, nothing written through it. */
	snprintf(path, sizeof(path), "%s/link.key", dir);
	snprintf(before, sizeof(before), "%s/planted", dir);
	assert_int_equal(symlink(before, path), 0);
	assert_int_equal(keys_generate(dir, "link"), -EEXIST);
	assert_int_equal(access(before, F_OK), -1);
	snprintf(before, sizeof(before), "%s/link.pem", dir);
	assert_int_equal(access(before, F_OK), -1);
	assert_int_equal(unlink(path), 0);
	assert_int_equal(dir_entries(dir), 2);

	assert_int_equal(keys_generate(dir, "../escape"), -EINVAL);
	assert_int_equal(keys_generate(dir, ".hidden"), -EINVAL);
	assert_int_equal(keys_generate(dir, ""), -EINVAL);
	assert_int_equal(keys_generate("/nonexistent/dir", "x"), -ENOENT);

	/* keys_load_private: the public file, a missing file, a directory, an Ed448 key. */
	assert_int_equal(keys_load_private(pem, &p), -EINVAL);
	assert_null(p);
	snprintf(path, sizeof(path), "%s/missing.key", dir);
	assert_int_equal(keys_load_private(path, &p), -ENOENT);
	assert_int_equal(keys_load_private(dir, &p), -EISDIR);
	assert_null(p);
	snprintf(path, sizeof(path), "%s/ed448.key", dir);
	assert_non_null(f = fopen(path, "w"));
	assert_int_equal(PEM_write_PrivateKey(f, ed448, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	assert_int_equal(keys_load_private(path, &p), -EINVAL);
	assert_null(p);
	unlink(path);

	free(tok);
	free(payload);
	json_decref(c);
	json_decref(h);
	EVP_PKEY_free(k);
	snprintf(path, sizeof(path), "%s/gen-1.key", dir);
	unlink(path);
	unlink(pem);
	assert_int_equal(rmdir(dir), 0);
}

static void test_kid_valid(void **state)
{
	char kid[KEYS_KID_MAX + 2];

	assert_true(keys_kid_valid("a"));
	assert_true(keys_kid_valid("A.b_c-9"));
	assert_true(keys_kid_valid("a.."));
	assert_false(keys_kid_valid(NULL));
	assert_false(keys_kid_valid(""));
	assert_false(keys_kid_valid("."));
	assert_false(keys_kid_valid(".."));
	assert_false(keys_kid_valid("a/b"));
	assert_false(keys_kid_valid("a b"));
	assert_false(keys_kid_valid("a\n"));
	assert_false(keys_kid_valid("k\xc3\xa9"));
	memset(kid, 'k', sizeof(kid) - 1);
	kid[KEYS_KID_MAX + 1] = '\0';
	assert_false(keys_kid_valid(kid));
	kid[KEYS_KID_MAX] = '\0';
	assert_true(keys_kid_valid(kid));
}

/* What a claim may not hold, shown to a reader: each of its bytes '?', the rest as it was. */
static void test_string_defuse(void **state)
{
	char s[] = "a\x1b[1\x7f" "b\xc2\x9b" "c\xe2\x80\xae" "d\xd8\x9c" "e\xe2\x80\xa8"
		   "ren\xc3\xa9" "e \xe2\x80\x94 \xd8\xa7\xe2\x80";

	(void)state;
	grant_string_defuse(s);
	assert_string_equal(s, "a?[1?b??c???d??e???ren\xc3\xa9" "e \xe2\x80\x94 \xd8\xa7\xe2\x80");
	assert_null(grant_string_unsafe(s, strlen(s)));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_string_defuse),
		cmocka_unit_test(test_valid),
		cmocka_unit_test(test_positive_variants),
		cmocka_unit_test(test_dst),
		cmocka_unit_test(test_header_alg_ed25519),
		cmocka_unit_test(test_alg_none),
		cmocka_unit_test(test_alg_hmac),
		cmocka_unit_test(test_bad_signature),
		cmocka_unit_test(test_tampered_payload),
		cmocka_unit_test(test_unknown_key),
		cmocka_unit_test(test_key_file_types),
		cmocka_unit_test(test_audience),
		cmocka_unit_test(test_time),
		cmocka_unit_test(test_types),
		cmocka_unit_test(test_missing),
		cmocka_unit_test(test_payload),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_parse_claims),
		cmocka_unit_test(test_copy),
		cmocka_unit_test(test_copy_dst),
		cmocka_unit_test(test_pack),
		cmocka_unit_test(test_verify_recorded),
		cmocka_unit_test(test_keys_generate),
		cmocka_unit_test(test_kid_valid),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
