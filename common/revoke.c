#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"
#include "common/keys.h"
#include "common/revoke.h"

/*
 * Claims we do not know are ignored, as for grants. sub, src and ports are not read: what a
 * revocation ends is named by revokes alone, and typ already keeps grants out.
 */
static int parse_claims(const json_t *claims, struct revocation *out, int64_t *nbf,
	struct jit_error *e)
{
	int ret;

	if ((ret = grant_claim_id(claims, "jti", &out->jti, e)) ||
		(ret = grant_claim_string(claims, "iss", true, &out->iss, e)) ||
		(ret = grant_claim_time(claims, "iat", true, &out->iat, e)) ||
		(ret = grant_claim_time(claims, "exp", true, &out->exp, e)) ||
		(ret = grant_claim_time(claims, "nbf", false, nbf, e)) ||
		(ret = grant_claim_aud(claims, e)) ||
		(ret = grant_claim_id(claims, "revokes", &out->revokes, e)) ||
		(ret = grant_claim_bool(claims, "terminate", &out->terminate, e)))
		return ret;
	return 0;
}

int revoke_verify(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	struct revocation *out, struct jit_error *e)
{
	struct jws j = { 0 };
	EVP_PKEY *pub = NULL;
	json_t *claims = NULL;
	const char *kid = NULL;
	int64_t nbf = 0;
	int ret;

	memset(out, 0, sizeof(*out));
	if (e)
		e->authentic = false;
	/* The order of grant_verify, so that both refuse a given flaw with the same code. */
	if ((ret = jws_decode(token, len, &j, e)) ||
		(ret = jws_check_header(&j, REVOKE_TYP, &kid, e)) ||
		(ret = keys_load_public(ctx->keys_dir, kid, &pub, e)) ||
		(ret = jws_verify(&j, pub, e)))
		goto out;
	if (e)
		e->authentic = true;
	if ((ret = jws_claims(&j, &claims, e)) ||
		(ret = parse_claims(claims, out, &nbf, e)) ||
		(ret = grant_check_audience(claims, ctx->host_id, e)) ||
		(ret = grant_check_time(out->iat, nbf, out->exp, ctx, e)))
		goto out;
	if (!(out->kid = strdup(kid))) {
		ret = jit_fail(e, JIT_ERR_INTERNAL, "out of memory");
		goto out;
	}
	ret = 0;
out:
	if (ret)
		revoke_clear(out);
	json_decref(claims);
	EVP_PKEY_free(pub);
	jws_clear(&j);
	return ret;
}

void revoke_clear(struct revocation *r)
{
	free(r->jti);
	free(r->iss);
	free(r->kid);
	free(r->revokes);
	memset(r, 0, sizeof(*r));
}
