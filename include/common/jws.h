#ifndef JITD_COMMON_JWS_H
#define JITD_COMMON_JWS_H

#include <stddef.h>

#include <jansson.h>
#include <openssl/evp.h>

struct jit_error;

#define JWS_MAX_TOKEN (16 * 1024) /* grants above this are refused as too_large before decoding */
#define JWS_SIG_LEN 64

/*
 * A decoded compact JWS. The signing input is token[0..signing_input_len), exactly as received,
 * because RFC 7515 signs the encoded bytes, never a re-serialisation.
 */
struct jws {
	const char *token;	 /* borrowed: the caller's buffer */
	size_t signing_input_len;
	json_t *header;		 /* owned; a JSON object (duplicate names refused) */
	unsigned char *payload;	 /* owned; decoded bytes, NUL-terminated for convenience */
	size_t payload_len;
	unsigned char sig[JWS_SIG_LEN];
};

/*
 * Splits and strictly decodes a compact JWS (exactly three segments, canonical base64url, header
 * a JSON object without duplicate names, signature exactly 64 bytes). Does not look at header
 * values. Returns 0, JIT_ERR_TOO_LARGE (len > JWS_MAX_TOKEN), JIT_ERR_MALFORMED or
 * JIT_ERR_INTERNAL (out of memory).
 */
int jws_decode(const char *token, size_t len, struct jws *out, struct jit_error *e);
/*
 * Header rules for a jitd token: "alg" exactly "EdDSA" or "Ed25519", "typ" equal to want_typ
 * (ASCII case-insensitive, media-type rules), a "kid" string, no "crit", no key-carrying
 * parameters (jwk, jku, x5u, x5c, x5t, x5t#S256). Sets *kid (borrowed from the header).
 * Returns 0 or JIT_ERR_BAD_HEADER.
 */
int jws_check_header(const struct jws *j, const char *want_typ, const char **kid,
	struct jit_error *e);
/*
 * Ed25519 verification of the signing input. Returns 0, JIT_ERR_BAD_SIGNATURE or
 * JIT_ERR_INTERNAL (the verification could not be set up: out of memory).
 */
int jws_verify(const struct jws *j, EVP_PKEY *pub, struct jit_error *e);
/*
 * What a thread that verifies many tokens keeps from one to the next, one jws_verifier per
 * thread, zero-initialised; jws_verifier_clear releases it.
 * - The context made for the last key. EVP_DigestVerifyInit fetches the algorithm and sets up
 *   the key each time (about 5 us of a 170 us verification, more under load), so it is made
 *   once and copied for the next token with that key. A template is only ever used for the
 *   very EVP_PKEY it was made with: v holds a reference to it, so no other key can meanwhile
 *   be allocated at its address.
 * - The last header: a controller signs every grant with the same one, and decoding and
 *   parsing it is a fifth of restoring a recorded grant. A token whose header segment is byte
 *   for byte the last one (length included) shares that parse; any other is decoded afresh.
 *   Only a header that decoded and parsed cleanly is kept.
 * v NULL: jws_decode, jws_verify.
 */
struct jws_verifier {
	EVP_PKEY *key;
	EVP_MD_CTX *tmpl;
	char *hdr_seg;		/* the last header segment, as received */
	size_t hdr_seg_len;
	json_t *header;		/* its parse: shared, never modified */
};
int jws_decode_with(struct jws_verifier *v, const char *token, size_t len, struct jws *out,
	struct jit_error *e);
int jws_verify_with(struct jws_verifier *v, const struct jws *j, EVP_PKEY *pub,
	struct jit_error *e);
void jws_verifier_clear(struct jws_verifier *v);
/*
 * The payload as a JWT claims set: a JSON object without duplicate names or NUL bytes. Call it
 * only after jws_verify, so that no unauthenticated bytes reach the JSON parser. Returns 0 and a
 * new reference in *out, or JIT_ERR_MALFORMED with *out NULL.
 */
int jws_claims(const struct jws *j, json_t **out, struct jit_error *e);
/* Releases what jws_decode allocated; safe on a zeroed or already-cleared struct. */
void jws_clear(struct jws *j);

/*
 * Signs: BASE64URL(header JSON) "." BASE64URL(payload) "." BASE64URL(sig) with an Ed25519 private
 * key. header is serialised compactly. Returns 0 and a malloc'ed NUL-terminated token in *out,
 * or -ENOMEM / -EINVAL.
 */
int jws_sign(const json_t *header, const unsigned char *payload, size_t payload_len,
	EVP_PKEY *priv, char **out);

#endif
