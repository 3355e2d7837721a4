#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/err.h>
#include <openssl/evp.h>

#include "common/b64url.h"
#include "common/err.h"
#include "common/jws.h"
#include "common/keys.h"

#define MALFORMED(e, ...) jit_fail((e), JIT_ERR_MALFORMED, __VA_ARGS__)
#define BAD_HEADER(e, ...) jit_fail((e), JIT_ERR_BAD_HEADER, __VA_ARGS__)
#define BAD_SIG(e, ...) jit_fail((e), JIT_ERR_BAD_SIGNATURE, __VA_ARGS__)
#define TYP_PREFIX "application/"

/*
 * crit (RFC 7515 section 4.1.11) and b64 (RFC 7797) would change how the token must be read, and
 * we understand no extension; the rest carry or point at keys, but only keys_dir is trusted.
 */
static const char *const refused[] = { "crit", "b64", "jwk", "jku", "x5u", "x5c", "x5t",
	"x5t#S256" };

/* Into a new NUL-terminated buffer, so the payload can be handed to string parsers as is. */
static int decode_part(const char *in, size_t len, const char *what, unsigned char **out,
	size_t *outlen, struct jit_error *e)
{
	size_t cap = b64url_decoded_max(len);

	*out = NULL;
	*outlen = 0;
	if (!len)
		return MALFORMED(e, "token: empty %s segment", what);
	if (!(*out = malloc(cap + 1)))
		return jit_fail(e, JIT_ERR_INTERNAL, "out of memory");
	if (b64url_decode(in, len, *out, cap, outlen))
		return MALFORMED(e, "token: %s segment is not canonical base64url", what);
	(*out)[*outlen] = '\0';
	return 0;
}

static int parse_header(const unsigned char *buf, size_t len, json_t **out, struct jit_error *e)
{
	char why[JIT_SHOWN_LEN];
	json_error_t jerr;

	/* jansson stops at a NUL, which would let bytes after it ride along unparsed. */
	if (memchr(buf, '\0', len))
		return MALFORMED(e, "token: header contains a NUL byte");
	*out = json_loadb((const char *)buf, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!*out && json_error_code(&jerr) == json_error_out_of_memory)
		return jit_fail(e, JIT_ERR_INTERNAL, "out of memory"); /* no verdict on the token */
	if (!*out)
		return MALFORMED(e, "token: header is not valid JSON: %s", jit_shown(jerr.text, why));
	if (!json_is_object(*out))
		return MALFORMED(e, "token: header is not a JSON object");
	return 0;
}

static int decode_sig(const char *in, size_t len, unsigned char sig[static JWS_SIG_LEN],
	struct jit_error *e)
{
	size_t n;
	int ret = b64url_decode(in, len, sig, JWS_SIG_LEN, &n);

	if (ret == -ENOSPC)
		return MALFORMED(e, "token: signature is longer than %d bytes", JWS_SIG_LEN);
	if (ret)
		return MALFORMED(e, "token: signature segment is not canonical base64url");
	if (n != JWS_SIG_LEN)
		return MALFORMED(e, "token: signature is %zu bytes, not %d", n, JWS_SIG_LEN);
	return 0;
}

/* The header segment [seg, seg + len) decoded and parsed, or shared from v when it is v's. */
static int decode_header(struct jws_verifier *v, const char *seg, size_t len, json_t **out,
	struct jit_error *e)
{
	unsigned char *hdr = NULL;
	char *copy;
	size_t hlen;
	int ret;

	if (v && v->header && len == v->hdr_seg_len && !memcmp(seg, v->hdr_seg, len)) {
		*out = json_incref(v->header);
		return 0;
	}
	if ((ret = decode_part(seg, len, "header", &hdr, &hlen, e)) ||
		(ret = parse_header(hdr, hlen, out, e)))
		goto out;
	/* Kept only if it can be kept whole; a miss just parses the next one. */
	if (v && (copy = malloc(len))) {
		free(v->hdr_seg);
		json_decref(v->header);
		v->hdr_seg = memcpy(copy, seg, len);
		v->hdr_seg_len = len;
		v->header = json_incref(*out);
	}
out:
	free(hdr);
	return ret;
}

int jws_decode(const char *token, size_t len, struct jws *out, struct jit_error *e)
{
	return jws_decode_with(NULL, token, len, out, e);
}

int jws_decode_with(struct jws_verifier *v, const char *token, size_t len, struct jws *out,
	struct jit_error *e)
{
	const char *d1 = NULL, *d2 = NULL, *end = NULL;
	struct jws j = { 0 };
	int ret;

	memset(out, 0, sizeof(*out));
	if (len > JWS_MAX_TOKEN) {
		ret = jit_fail(e, JIT_ERR_TOO_LARGE, "token: %zu bytes, at most %d accepted", len,
			JWS_MAX_TOKEN);
		goto out;
	}
	if (len && (d1 = memchr(token, '.', len))) {
		end = token + len;
		d2 = memchr(d1 + 1, '.', (size_t)(end - d1 - 1));
	}
	if (!d2) {
		ret = MALFORMED(e, "token: fewer than three segments");
		goto out;
	}
	if (memchr(d2 + 1, '.', (size_t)(end - d2 - 1))) {
		ret = MALFORMED(e, "token: more than three segments");
		goto out;
	}
	j.token = token;
	j.signing_input_len = (size_t)(d2 - token);
	if ((ret = decode_header(v, token, (size_t)(d1 - token), &j.header, e)) ||
		(ret = decode_part(d1 + 1, (size_t)(d2 - d1 - 1), "payload", &j.payload,
			&j.payload_len, e)) ||
		(ret = decode_sig(d2 + 1, (size_t)(end - d2 - 1), j.sig, e)))
		goto out;
	*out = j;
	memset(&j, 0, sizeof(j));
	ret = 0;
out:
	jws_clear(&j);
	return ret;
}

int jws_claims(const struct jws *j, json_t **out, struct jit_error *e)
{
	char buf[JIT_SHOWN_LEN];
	json_error_t jerr;

	*out = NULL;
	/* jansson stops at a NUL, which would let bytes after it ride along unparsed. */
	if (memchr(j->payload, '\0', j->payload_len))
		return MALFORMED(e, "claims: contain a NUL byte");
	*out = json_loadb((const char *)j->payload, j->payload_len, JSON_REJECT_DUPLICATES, &jerr);
	if (!*out && json_error_code(&jerr) == json_error_out_of_memory)
		return jit_fail(e, JIT_ERR_INTERNAL, "out of memory");
	if (!*out)
		return MALFORMED(e, "claims: not valid JSON: %s", jit_shown(jerr.text, buf));
	if (!json_is_object(*out)) {
		json_decref(*out);
		*out = NULL;
		return MALFORMED(e, "claims: not a JSON object");
	}
	return 0;
}

/* Media types compare case-insensitively; strcasecmp would follow the locale. */
static int ascii_lower(int c)
{
	return c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c;
}

static bool ascii_prefix(const char *s, const char *prefix)
{
	for (; *prefix; s++, prefix++)
		if (ascii_lower((unsigned char)*s) != ascii_lower((unsigned char)*prefix))
			return false;
	return true;
}

/* RFC 7515 section 4.1.9: "application/" is implied when typ contains no '/'. */
static const char *media_subtype(const char *s)
{
	if (ascii_prefix(s, TYP_PREFIX))
		s += strlen(TYP_PREFIX);
	return strchr(s, '/') ? NULL : s;
}

static bool typ_equal(const char *got, const char *want)
{
	got = media_subtype(got);
	want = media_subtype(want);
	return got && want && strlen(got) == strlen(want) && ascii_prefix(got, want);
}

static int get_string(const json_t *h, const char *name, const char **s, struct jit_error *e)
{
	const json_t *v = json_object_get(h, name);

	*s = NULL;
	if (!v)
		return BAD_HEADER(e, "header: '%s' is missing", name);
	if (!json_is_string(v))
		return BAD_HEADER(e, "header: '%s' is not a string", name);
	*s = json_string_value(v);
	return 0;
}

static int check_alg(const json_t *h, struct jit_error *e)
{
	char buf[JIT_SHOWN_LEN];
	const char *alg;
	int ret;

	if ((ret = get_string(h, "alg", &alg, e)))
		return ret;
	/* An allow-list compared exactly: RFC 8725 section 3.1, and no "noNE" games. */
	if (strcmp(alg, "EdDSA") && strcmp(alg, "Ed25519"))
		return BAD_HEADER(e, "header: alg '%s' is not EdDSA or Ed25519", jit_shown(alg, buf));
	return 0;
}

int jws_check_header(const struct jws *j, const char *want_typ, const char **kid,
	struct jit_error *e)
{
	char buf[JIT_SHOWN_LEN];
	const char *typ, *k;
	int ret;

	*kid = NULL;
	if ((ret = check_alg(j->header, e)))
		return ret;
	for (size_t i = 0; i < sizeof(refused) / sizeof(refused[0]); i++)
		if (json_object_get(j->header, refused[i]))
			return BAD_HEADER(e, "header: '%s' is not supported", refused[i]);
	if ((ret = get_string(j->header, "typ", &typ, e)))
		return ret;
	if (!typ_equal(typ, want_typ))
		return BAD_HEADER(e, "header: typ '%s' is not %s", jit_shown(typ, buf), want_typ);
	if ((ret = get_string(j->header, "kid", &k, e)))
		return ret;
	if (!keys_kid_valid(k))
		return BAD_HEADER(e, "header: kid '%s' is not 1-64 of A-Z a-z 0-9 . _ - not "
			"starting with '.'", jit_shown(k, buf));
	*kid = k;
	return 0;
}

/* The template only: a key or context that cannot be kept leaves the header alone. */
static void drop_template(struct jws_verifier *v)
{
	EVP_MD_CTX_free(v->tmpl);
	EVP_PKEY_free(v->key);
	v->tmpl = NULL;
	v->key = NULL;
}

void jws_verifier_clear(struct jws_verifier *v)
{
	drop_template(v);
	free(v->hdr_seg);
	json_decref(v->header);
	v->hdr_seg = NULL;
	v->hdr_seg_len = 0;
	v->header = NULL;
}

/*
 * A context ready to verify with pub: a copy of v's template when it was made for this very key
 * object, else initialised (and kept as v's template). NULL when out of memory or refused.
 */
static EVP_MD_CTX *verify_ctx(struct jws_verifier *v, EVP_PKEY *pub)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new(), *tmpl;

	if (!ctx)
		return NULL;
	/* v holds a reference to v->key: while it does, no other key can have its address. */
	if (v && v->tmpl && v->key == pub) {
		if (EVP_MD_CTX_copy_ex(ctx, v->tmpl) == 1)
			return ctx;
		EVP_MD_CTX_free(ctx);
		return NULL;
	}
	/* PureEdDSA has no digest and no streaming mode: NULL md, then one-shot. */
	if (EVP_DigestVerifyInit(ctx, NULL, NULL, NULL, pub) != 1) {
		EVP_MD_CTX_free(ctx);
		return NULL;
	}
	if (v && (tmpl = EVP_MD_CTX_new())) {
		if (EVP_MD_CTX_copy_ex(tmpl, ctx) == 1 && EVP_PKEY_up_ref(pub) == 1) {
			drop_template(v);
			v->tmpl = tmpl;
			v->key = pub;
		} else {
			EVP_MD_CTX_free(tmpl);
		}
	}
	return ctx;
}

int jws_verify_with(struct jws_verifier *v, const struct jws *j, EVP_PKEY *pub,
	struct jit_error *e)
{
	EVP_MD_CTX *ctx = NULL;
	int ret;

	/* RFC 8037 section 3.1: the key decides the curve; never try an Ed448 or RSA key. */
	if (!pub || EVP_PKEY_base_id(pub) != EVP_PKEY_ED25519) {
		ret = BAD_SIG(e, "signature: the key is not an Ed25519 key");
		goto out;
	}
	/* Nothing about the token: a passing failure (memory), so retryable, not a bad signature. */
	if (!(ctx = verify_ctx(v, pub))) {
		ret = jit_fail(e, JIT_ERR_INTERNAL, "signature: cannot set up the verification "
			"(out of memory)");
		goto out;
	}
	if (EVP_DigestVerify(ctx, j->sig, JWS_SIG_LEN, (const unsigned char *)j->token,
		j->signing_input_len) != 1) {
		ret = BAD_SIG(e, "signature: does not verify");
		goto out;
	}
	ret = 0;
out:
	ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	return ret;
}

int jws_verify(const struct jws *j, EVP_PKEY *pub, struct jit_error *e)
{
	return jws_verify_with(NULL, j, pub, e);
}

void jws_clear(struct jws *j)
{
	json_decref(j->header);
	free(j->payload);
	memset(j, 0, sizeof(*j));
}

static int sign_input(const char *input, size_t len, EVP_PKEY *priv,
	unsigned char sig[static JWS_SIG_LEN])
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	size_t siglen = JWS_SIG_LEN;
	int ret = -EINVAL;

	if (!ctx) {
		ret = -ENOMEM;
		goto out;
	}
	if (EVP_DigestSignInit(ctx, NULL, NULL, NULL, priv) != 1 ||
		EVP_DigestSign(ctx, sig, &siglen, (const unsigned char *)input, len) != 1 ||
		siglen != JWS_SIG_LEN)
		goto out;
	ret = 0;
out:
	ERR_clear_error();
	EVP_MD_CTX_free(ctx);
	return ret;
}

int jws_sign(const json_t *header, const unsigned char *payload, size_t payload_len,
	EVP_PKEY *priv, char **out)
{
	unsigned char sig[JWS_SIG_LEN];
	char *hdr = NULL, *tok = NULL, *p;
	size_t hlen, total;
	int ret;

	*out = NULL;
	if (!priv || EVP_PKEY_base_id(priv) != EVP_PKEY_ED25519 || !json_is_object(header) ||
		payload_len > JWS_MAX_TOKEN) {
		ret = -EINVAL;
		goto out;
	}
	if (!(hdr = json_dumps(header, JSON_COMPACT))) {
		ret = -ENOMEM;
		goto out;
	}
	hlen = strlen(hdr);
	total = b64url_encoded_len(hlen) + 1 + b64url_encoded_len(payload_len) + 1 +
		b64url_encoded_len(JWS_SIG_LEN);
	if (!(tok = malloc(total + 1))) {
		ret = -ENOMEM;
		goto out;
	}
	b64url_encode((const unsigned char *)hdr, hlen, tok);
	p = tok + strlen(tok);
	*p++ = '.';
	b64url_encode(payload, payload_len, p);
	p += strlen(p);
	if ((ret = sign_input(tok, (size_t)(p - tok), priv, sig)))
		goto out;
	*p++ = '.';
	b64url_encode(sig, JWS_SIG_LEN, p);
	*out = tok;
	tok = NULL;
	ret = 0;
out:
	free(tok);
	free(hdr);
	return ret;
}
