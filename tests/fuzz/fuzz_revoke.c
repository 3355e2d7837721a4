#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KID "a1"
#define NOW 1700000000LL
#define SKEW 60

/* RFC 8037 A.1, so that the harness can sign whatever claims the fuzzer invents. */
static const unsigned char a1_d[32] = { 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba,
	0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
	0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60 };

static char keys_dir[] = "/tmp/jitd-fuzz-revoke-XXXXXX";
static char pem_path[PATH_MAX];
static EVP_PKEY *priv;
static json_t *revoke_header, *grant_header;
static struct grant_verify_ctx ctx = { .host_id = "web-01", .now = NOW, .clock_skew = SKEW };

static void cleanup(void)
{
	unlink(pem_path);
	rmdir(keys_dir);
}

/* One keys directory per process, holding the A.1 public key as KID.pem. */
static void init(void)
{
	FILE *f;

	priv = EVP_PKEY_new_raw_private_key(EVP_PKEY_ED25519, NULL, a1_d, sizeof(a1_d));
	revoke_header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", REVOKE_TYP, "kid",
		KID);
	grant_header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", GRANT_TYP, "kid", KID);
	if (!priv || !revoke_header || !grant_header || !mkdtemp(keys_dir))
		__builtin_trap();
	ctx.keys_dir = keys_dir;
	snprintf(pem_path, sizeof(pem_path), "%s/" KID ".pem", keys_dir);
	if (!(f = fopen(pem_path, "w")) || PEM_write_PUBKEY(f, priv) != 1 || fclose(f) ||
		chmod(pem_path, 0644))
		__builtin_trap();
	atexit(cleanup);
}

/* What enforce_revoke.c relies on: strings it logs and looks up, bounded and free of controls. */
static void check_string(const char *s)
{
	size_t n;

	if (!s || !*s || (n = strlen(s)) > GRANT_MAX_STRING)
		__builtin_trap();
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
			__builtin_trap();
}

/* What every caller of revoke_verify relies on when it returns 0. */
static void check_revocation(const struct revocation *r)
{
	check_string(r->jti);
	check_string(r->iss);
	check_string(r->revokes);
	if (!r->kid || strcmp(r->kid, KID) || r->exp <= r->iat || r->exp + SKEW <= NOW ||
		r->iat - SKEW > NOW)
		__builtin_trap();
}

/* Returns revoke_verify's code; traps on a broken contract. */
static int verify(const char *tok, size_t len)
{
	struct jit_error e = { 0 };
	struct revocation r;
	struct grant g;
	int ret = revoke_verify(tok, len, &ctx, &r, &e);

	if (ret == 0) {
		check_revocation(&r);
		/* Explicit typing: whatever passes as a revocation never passes as a grant. */
		if (grant_verify(tok, len, &ctx, &g, &e) != JIT_ERR_BAD_HEADER)
			__builtin_trap();
		grant_clear(&g);
	} else if (ret != e.code || !e.msg[0] || r.jti || r.iss || r.kid || r.revokes ||
		r.terminate) {
		__builtin_trap();
	}
	revoke_clear(&r);
	return ret;
}

/*
 * The first byte picks the mode. 0: the rest is a whole token. 1: the rest is a claims payload
 * signed as a grant, which must never pass. Otherwise the rest is a claims payload signed as a
 * revocation, so that the claim checks behind the signature get fuzzed.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	char *tok = NULL;

	if (!priv)
		init();
	if (size < 1)
		return 0;
	if (data[0] == 0) {
		verify((const char *)data + 1, size - 1);
		return 0;
	}
	if (jws_sign(data[0] == 1 ? grant_header : revoke_header, data + 1, size - 1, priv,
		&tok) == 0 && verify(tok, strlen(tok)) == 0 && data[0] == 1)
		__builtin_trap();
	free(tok);
	return 0;
}
