#ifndef JITD_COMMON_GRANT_H
#define JITD_COMMON_GRANT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#include "common/port.h"
#include "common/prefix.h"

struct jit_error;

#define GRANT_TYP "jit-grant+jwt"
#define GRANT_MAX_SOURCES 64
#define GRANT_MAX_PORTS 64
#define GRANT_MAX_DESTINATIONS 64
#define GRANT_MAX_STRING 256 /* iss, sub, jti, reason */

/* A verified grant's claims. All strings and arrays are owned; free with grant_clear. */
struct grant {
	char *jti;
	char *iss;
	char *sub;
	char *kid;
	char *reason;		/* NULL when absent */
	int64_t iat;
	int64_t nbf;		/* 0 when absent */
	int64_t exp;
	struct prefix *src;	/* canonical, deduplicated */
	size_t n_src;
	struct port_spec *ports; /* one entry per (port, protocol); "*" expands to tcp and udp */
	size_t n_ports;
	/*
	 * "dst" (optional; gateway mode): the machines behind the gateway the grant opens, as
	 * prefixes like src (canonical, deduplicated). Absent: a grant for the host's own ports.
	 */
	struct prefix *dst;
	size_t n_dst;
	/*
	 * Not a claim: the gateway ports jitd allocated to this grant (agent/dnat.c), one per
	 * (port, dst) pair whose target maps ports, in ports-then-dst order. Copied and freed
	 * with the grant.
	 */
	uint16_t *dnat_ports;
	/* At most GRANT_MAX_PORTS * GRANT_MAX_DESTINATIONS; 32 bits, so that local shares its word. */
	uint32_t n_dnat_ports;
	/* Not a claim: root's own grant on this host (jitctl grant), unsigned, no key behind it. */
	bool local;
	/* Set by grant_pack: every string and array above but dnat_ports lives in this block. */
	void *block;
};

/* What grant_verify checks against, besides the signature. */
struct jws_verifier;

struct grant_verify_ctx {
	const char *keys_dir;
	const char *host_id;	/* must appear in aud */
	int64_t now;		/* seconds since the epoch */
	uint64_t clock_skew;	/* seconds of tolerance for exp and nbf */
	/*
	 * grant_verify_recorded only, may be NULL: a kid whose key file this pass (the start-up
	 * restore) has just found trusted. It is not looked up again for every grant it signed.
	 */
	const char *trusted_kid;
	/* May be NULL: what this thread keeps between tokens (jws_decode_with, jws_verify_with). */
	struct jws_verifier *verifier;
};

/*
 * Full envelope + claims verification, cheapest checks first: size, syntax, header, key,
 * signature, claim types, audience, time. Does NOT apply port policy (see policy_check).
 * Returns 0 and fills *out, or a negative enum jit_err with e->msg set; *out is then cleared.
 */
int grant_verify(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	struct grant *out, struct jit_error *e);
/*
 * grant_verify for a token jitd itself verified before it recorded it (state_dir, written by
 * jitd alone, checksummed): everything but the signature arithmetic. The key must still be a
 * trusted key (a removed or loosened key file refuses the grant), and claims, audience and
 * time are checked as on receipt. For restoring 100,000 grants at start-up in well under a
 * second; never for a token from outside.
 */
int grant_verify_recorded(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	struct grant *out, struct jit_error *e);
/*
 * Parses the claims object alone (types, required claims, src, dst and ports syntax). Used by
 * grant_verify after the signature, and by tests. Returns 0, JIT_ERR_MALFORMED, JIT_ERR_TOO_LARGE
 * (over 64 entries in src, dst or ports, or port/protocol pairs) or JIT_ERR_INTERNAL (out of
 * memory).
 */
int grant_parse_claims(const json_t *claims, struct grant *out, struct jit_error *e);

/*
 * The claim checks grant_verify is built from, shared with the other tokens jitd verifies
 * (common/revoke.c) so that all are held to exactly the same rules. Each returns 0 or a negative
 * enum jit_err with e->msg naming the claim.
 */

/*
 * What the n bytes of UTF-8 at s hold that a claim string may not (a control character, a line
 * or paragraph separator, a bidirectional formatting character), or NULL.
 */
const char *grant_string_unsafe(const char *s, size_t n);
/* Each byte of what grant_string_unsafe finds in s (UTF-8, NUL-terminated) made '?'. */
void grant_string_defuse(char *s);
/*
 * Claim `name` as a new string in *dst: at most GRANT_MAX_STRING bytes, no control characters,
 * not empty if required. Absent and optional: 0, *dst untouched. JIT_ERR_MALFORMED or
 * JIT_ERR_INTERNAL (out of memory).
 */
int grant_claim_string(const json_t *c, const char *name, bool required, char **dst,
	struct jit_error *e);
/*
 * Required claim `name` as an id (jti, revokes): grant_claim_string's rules, and no space. An
 * id is one word in the replay file, the journal's notes and the log's jti=.
 */
int grant_claim_id(const json_t *c, const char *name, char **dst, struct jit_error *e);
/* Claim `name` as whole seconds, 1 to the end of year 9999; *t = 0 when absent and optional. */
int grant_claim_time(const json_t *c, const char *name, bool required, int64_t *t,
	struct jit_error *e);
/* Optional claim `name`: true or false, nothing else; *b = false when absent. */
int grant_claim_bool(const json_t *c, const char *name, bool *b, struct jit_error *e);
/* "aud" is present and a string or an array of strings. JIT_ERR_MALFORMED. */
int grant_claim_aud(const json_t *c, struct jit_error *e);
/* "aud" names host_id. Only on claims grant_claim_aud accepted. JIT_ERR_WRONG_AUDIENCE. */
int grant_check_audience(const json_t *claims, const char *host_id, struct jit_error *e);
/*
 * Times from grant_claim_time (nbf 0 when absent) against ctx->now with ctx->clock_skew:
 * JIT_ERR_MALFORMED (exp not after iat or nbf, whatever the clock), JIT_ERR_EXPIRED or
 * JIT_ERR_NOT_YET_VALID (nbf or iat in the future).
 */
int grant_check_time(int64_t iat, int64_t nbf, int64_t exp, const struct grant_verify_ctx *ctx,
	struct jit_error *e);

/* Deep copy (not packed). Returns 0 or -ENOMEM. */
int grant_copy(const struct grant *src, struct grant *dst);
/*
 * Moves g's strings and claim arrays into one allocation, for a grant kept for its lifetime:
 * at 100,000 grants six small allocations each are about 10 MB of malloc overhead. dnat_ports
 * stays its own (the agent may replace it). 0, or -ENOMEM with g unchanged.
 */
int grant_pack(struct grant *g);
void grant_clear(struct grant *g);

#endif
