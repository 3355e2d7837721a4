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
#include "common/port.h"
#include "common/prefix.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define KID "a1"
#define NOW 1700000000LL
#define SKEW 60

/* RFC 8037 A.1, so that the harness can sign whatever claims the fuzzer invents. */
static const unsigned char a1_d[32] = { 0x9d, 0x61, 0xb1, 0x9d, 0xef, 0xfd, 0x5a, 0x60, 0xba,
	0x84, 0x4a, 0xf4, 0x92, 0xec, 0x2c, 0xc4, 0x44, 0x49, 0xc5, 0x69, 0x7b, 0x32, 0x69, 0x19,
	0x70, 0x3b, 0xac, 0x03, 0x1c, 0xae, 0x7f, 0x60 };

static char keys_dir[] = "/tmp/jitd-fuzz-grant-XXXXXX";
static char pem_path[PATH_MAX];
static EVP_PKEY *priv;
static json_t *header;

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
	header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", GRANT_TYP, "kid", KID);
	if (!priv || !header || !mkdtemp(keys_dir))
		__builtin_trap();
	snprintf(pem_path, sizeof(pem_path), "%s/" KID ".pem", keys_dir);
	if (!(f = fopen(pem_path, "w")) || PEM_write_PUBKEY(f, priv) != 1 || fclose(f) ||
		chmod(pem_path, 0644))
		__builtin_trap();
	atexit(cleanup);
}

static bool prefix_same(const struct prefix *a, const struct prefix *b)
{
	return a->family == b->family && a->len == b->len && !memcmp(a->addr, b->addr, 16);
}

/* What every caller of grant_verify relies on when it returns 0. */
static void check_grant(const struct grant *g)
{
	struct grant c;

	if (!g->jti || !g->iss || !g->sub || !g->kid || strcmp(g->kid, KID) || !*g->jti ||
		g->n_src < 1 || g->n_src > GRANT_MAX_SOURCES || g->n_ports < 1 ||
		g->n_ports > GRANT_MAX_PORTS || g->exp <= g->iat || g->exp + SKEW <= NOW ||
		g->iat - SKEW > NOW || g->nbf - SKEW > NOW)
		__builtin_trap();
	for (size_t i = 0; i < g->n_ports; i++) {
		uint8_t proto = g->ports[i].proto;

		if (!g->ports[i].port || (proto != PORT_PROTO_TCP && proto != PORT_PROTO_UDP))
			__builtin_trap();
		for (size_t k = 0; k < i; k++)
			if (g->ports[k].port == g->ports[i].port &&
				g->ports[k].proto == g->ports[i].proto)
				__builtin_trap();
	}
	for (size_t i = 0; i < g->n_src; i++)
		for (size_t k = 0; k < i; k++)
			if (prefix_same(&g->src[k], &g->src[i]))
				__builtin_trap();
	if (grant_copy(g, &c) == 0) {
		if (strcmp(c.jti, g->jti) || c.n_src != g->n_src ||
			memcmp(c.ports, g->ports, g->n_ports * sizeof(*g->ports)))
			__builtin_trap();
		grant_clear(&c);
	}
}

static void verify(const char *tok, size_t len)
{
	const struct grant_verify_ctx ctx = { .keys_dir = keys_dir, .host_id = "web-01",
		.now = NOW, .clock_skew = SKEW };
	struct jit_error e = { 0 };
	struct grant g;
	int ret = grant_verify(tok, len, &ctx, &g, &e);

	if (ret == 0)
		check_grant(&g);
	else if (ret != e.code || !e.msg[0] || g.jti || g.src || g.ports || g.kid)
		__builtin_trap();
	grant_clear(&g);
}

/*
 * The first byte picks the mode. 0: the rest is a whole token. Otherwise the rest is a claims
 * payload, which the harness signs, so that the claim checks behind the signature get fuzzed.
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
	if (jws_sign(header, data + 1, size - 1, priv, &tok) == 0)
		verify(tok, strlen(tok));
	free(tok);
	return 0;
}
