#ifndef JITD_COMMON_REVOKE_H
#define JITD_COMMON_REVOKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/grant.h"

struct jit_error;

/*
 * A revocation's media type. Distinct from GRANT_TYP (RFC 8725 section 3.12), so that a grant can
 * never be replayed as a revocation, nor a revocation as a grant.
 */
#define REVOKE_TYP "jit-revoke+jwt"

/* A verified revocation's claims. All strings are owned; free with revoke_clear. */
struct revocation {
	char *jti;		/* this revocation's own id */
	char *iss;
	char *kid;
	char *revokes;		/* the jti of the grant it ends */
	int64_t iat;
	int64_t exp;		/* refused as expired after exp + clock_skew, like a grant */
	bool terminate;		/* also cut the grant's open sessions; false when absent */
};

/*
 * Verifies a revocation exactly as strictly as grant_verify verifies a grant, with the same
 * functions: size, syntax, header (typ REVOKE_TYP), key, signature, claim types, audience, time.
 * Claims: iss, aud, jti, iat, exp, revokes (strings and times as for a grant, revokes with a
 * jti's syntax), optional nbf and terminate (boolean). Returns 0 and fills *out, or a negative
 * enum jit_err with e->msg set (too_large, malformed, bad_header, unknown_key, bad_signature,
 * wrong_audience, expired, not_yet_valid, internal); *out is then cleared.
 */
int revoke_verify(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	struct revocation *out, struct jit_error *e);
/* Frees what revoke_verify filled in and zeroes *r; safe on a zeroed or cleared struct. */
void revoke_clear(struct revocation *r);

#endif
