#include <errno.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>

#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"
#include "common/keys.h"
#include "common/port.h"
#include "common/prefix.h"

#define MALFORMED(e, ...) jit_fail((e), JIT_ERR_MALFORMED, __VA_ARGS__)
#define OOM(e) jit_fail((e), JIT_ERR_INTERNAL, "out of memory")
/*
 * 9999-12-31T23:59:59Z. Far beyond any grant, yet small enough that neither the skew arithmetic
 * here nor the millisecond arithmetic of callers can overflow.
 */
#define GRANT_MAX_TIME 253402300799LL

/*
 * What a claim string must not hold (jansson has made sure it is UTF-8): the C0 and C1
 * controls, which terminals act on (C1's CSI, U+009B, as ESC [ does); line and paragraph
 * separators, which break log lines; the bidirectional marks, embeddings, overrides and
 * isolates (U+200E-F, U+202A-E, U+2066-9) and the Arabic letter mark (U+061C, which acts as
 * U+200F does), which make a printed name read as another ("\u202egro.elpmaxe@ecila"). NULL
 * when s[i..] starts with none of them.
 */
static const char *unsafe_at(const unsigned char *s, size_t n, size_t i)
{
	if (s[i] < 0x20 || s[i] == 0x7f || (s[i] == 0xc2 && i + 1 < n && s[i + 1] >= 0x80 &&
		s[i + 1] <= 0x9f))
		return "a control character";
	if (s[i] == 0xd8 && i + 1 < n && s[i + 1] == 0x9c)
		return "a bidirectional formatting character";
	if (s[i] != 0xe2 || i + 2 >= n)
		return NULL;
	if (s[i + 1] == 0x80 && (s[i + 2] == 0xa8 || s[i + 2] == 0xa9))
		return "a line or paragraph separator";
	if ((s[i + 1] == 0x80 && (s[i + 2] == 0x8e || s[i + 2] == 0x8f ||
		(s[i + 2] >= 0xaa && s[i + 2] <= 0xae))) ||
		(s[i + 1] == 0x81 && s[i + 2] >= 0xa6 && s[i + 2] <= 0xa9))
		return "a bidirectional formatting character";
	return NULL;
}

const char *grant_string_unsafe(const char *s, size_t n)
{
	const char *what = NULL;

	for (size_t i = 0; i < n && !what; i++)
		what = unsafe_at((const unsigned char *)s, n, i);
	return what;
}

void grant_string_defuse(char *s)
{
	unsigned char *u = (unsigned char *)s;
	size_t n = strlen(s);

	for (size_t i = 0; i < n; i++) {
		/* unsafe_at matches from a lead byte: 1, 2 (0xc2, 0xd8) or 3 (0xe2) bytes. */
		size_t len = u[i] < 0x80 ? 1 : u[i] < 0xe0 ? 2 : 3;

		if (unsafe_at(u, n, i))
			for (size_t j = 0; j < len; j++)
				u[i + j] = '?';
	}
}

/* iss, sub, jti and reason end up in log lines and on terminals: refused outright. */
int grant_claim_string(const json_t *c, const char *name, bool required, char **dst,
	struct jit_error *e)
{
	const json_t *v = json_object_get(c, name);
	const char *s, *what;
	size_t n;

	if (!v)
		return required ? MALFORMED(e, "claim '%s': missing", name) : 0;
	if (!json_is_string(v))
		return MALFORMED(e, "claim '%s': expected a string, not %s", name, jit_json_type(v));
	s = json_string_value(v);
	n = json_string_length(v);
	if (required && !n)
		return MALFORMED(e, "claim '%s': empty", name);
	if (n > GRANT_MAX_STRING)
		return MALFORMED(e, "claim '%s': %zu bytes, at most %d allowed", name, n,
			GRANT_MAX_STRING);
	if ((what = grant_string_unsafe(s, n)))
		return MALFORMED(e, "claim '%s': contains %s", name, what);
	if (!(*dst = strdup(s)))
		return OOM(e);
	return 0;
}

int grant_claim_id(const json_t *c, const char *name, char **dst, struct jit_error *e)
{
	int ret = grant_claim_string(c, name, true, dst, e);

	if (ret || !strchr(*dst, ' '))
		return ret;
	free(*dst);
	*dst = NULL;
	return MALFORMED(e, "claim '%s': contains a space", name);
}

/* RFC 7519 NumericDate, restricted to whole positive seconds: 1.5 or 1e9 is refused. */
int grant_claim_time(const json_t *c, const char *name, bool required, int64_t *t,
	struct jit_error *e)
{
	const json_t *v = json_object_get(c, name);
	json_int_t i;

	*t = 0;
	if (!v)
		return required ? MALFORMED(e, "claim '%s': missing", name) : 0;
	if (!json_is_integer(v))
		return MALFORMED(e, "claim '%s': expected an integer, not %s", name, jit_json_type(v));
	i = json_integer_value(v);
	if (i < 1 || i > GRANT_MAX_TIME)
		return MALFORMED(e, "claim '%s': %lld is not a time (1-%lld)", name, (long long)i,
			GRANT_MAX_TIME);
	*t = (int64_t)i;
	return 0;
}

/* RFC 7519 section 4.1.3: a string or an array of strings. Which host it names is checked later. */
int grant_claim_aud(const json_t *c, struct jit_error *e)
{
	const json_t *a = json_object_get(c, "aud");
	size_t i;
	json_t *v;

	if (!a)
		return MALFORMED(e, "claim 'aud': missing");
	if (json_is_string(a))
		return 0;
	if (!json_is_array(a))
		return MALFORMED(e, "claim 'aud': expected a string or an array of strings, not %s",
			jit_json_type(a));
	json_array_foreach(a, i, v) {
		if (!json_is_string(v))
			return MALFORMED(e, "claim 'aud[%zu]': expected a string, not %s", i,
				jit_json_type(v));
	}
	return 0;
}

int grant_claim_bool(const json_t *c, const char *name, bool *b, struct jit_error *e)
{
	const json_t *v = json_object_get(c, name);

	*b = false;
	if (!v)
		return 0;
	/* Only true and false: 1 or "yes" would be a guess at what the issuer meant. */
	if (!json_is_boolean(v))
		return MALFORMED(e, "claim '%s': expected a boolean, not %s", name, jit_json_type(v));
	*b = json_is_true(v);
	return 0;
}

static bool prefix_equal(const struct prefix *a, const struct prefix *b)
{
	return a->family == b->family && a->len == b->len && !memcmp(a->addr, b->addr, 16);
}

/*
 * Claim `name`: a non-empty array of at most max IP prefixes, canonical and deduplicated in *v
 * (owned by the grant, also on error). Absent and optional: 0, *v untouched.
 */
static int parse_prefixes(const json_t *c, const char *name, bool required, size_t max,
	struct prefix **v, size_t *n, struct jit_error *e)
{
	const json_t *a = json_object_get(c, name);
	size_t cnt = json_array_size(a), i, j;
	char buf[JIT_SHOWN_LEN];
	struct prefix p;
	json_t *s;

	if (!a)
		return required ? MALFORMED(e, "claim '%s': missing", name) : 0;
	if (!json_is_array(a))
		return MALFORMED(e, "claim '%s': expected an array, not %s", name, jit_json_type(a));
	if (!cnt)
		return MALFORMED(e, "claim '%s': empty", name);
	/* Well-formed, only more than any grant may carry: the limit's code, as for the limits. */
	if (cnt > max)
		return jit_fail(e, JIT_ERR_TOO_LARGE, "claim '%s': %zu entries, at most %zu allowed",
			name, cnt, max);
	if (!(*v = calloc(cnt, sizeof(**v))))
		return OOM(e);
	json_array_foreach(a, i, s) {
		if (!json_is_string(s))
			return MALFORMED(e, "claim '%s[%zu]': expected a string, not %s", name, i,
				jit_json_type(s));
		if (prefix_parse(json_string_value(s), &p))
			return MALFORMED(e, "claim '%s[%zu]': '%s' is not an IP prefix", name, i,
				jit_shown(json_string_value(s), buf));
		/* Canonical forms compare equal, so "::ffff:10.0.0.1" and "10.0.0.1" are one. */
		for (j = 0; j < *n && !prefix_equal(&(*v)[j], &p); j++)
			;
		if (j == *n)
			(*v)[(*n)++] = p;
	}
	return 0;
}

/* One port object: {"port": 1-65535, "protocol": "tcp" | "udp" | "*"}, nothing else. */
static int parse_port(const json_t *o, size_t i, uint16_t *port, unsigned *mask,
	struct jit_error *e)
{
	const json_t *v = json_object_get(o, "port"), *p = json_object_get(o, "protocol");
	char buf[JIT_SHOWN_LEN];
	json_int_t n;

	*mask = PORT_PROTO_TCP;
	if (!json_is_object(o))
		return MALFORMED(e, "claim 'ports[%zu]': expected an object, not %s", i,
			jit_json_type(o));
	if (!v)
		return MALFORMED(e, "claim 'ports[%zu]': missing 'port'", i);
	if (!json_is_integer(v))
		return MALFORMED(e, "claim 'ports[%zu].port': expected an integer, not %s", i,
			jit_json_type(v));
	n = json_integer_value(v);
	if (n < 1 || n > 65535)
		return MALFORMED(e, "claim 'ports[%zu].port': %lld is not a port number (1-65535)",
			i, (long long)n);
	*port = (uint16_t)n;
	if (p && !json_is_string(p))
		return MALFORMED(e, "claim 'ports[%zu].protocol': expected a string, not %s", i,
			jit_json_type(p));
	if (p && port_proto_parse(json_string_value(p), mask))
		return MALFORMED(e, "claim 'ports[%zu].protocol': '%s' is not tcp, udp or *", i,
			jit_shown(json_string_value(p), buf));
	/* A member we do not know might restrict the grant in a way we would silently ignore. */
	if (json_object_size(o) != (p ? 2 : 1))
		return MALFORMED(e, "claim 'ports[%zu]': members other than port and protocol", i);
	return 0;
}

static void add_port(struct grant *g, uint16_t port, uint8_t proto)
{
	for (size_t i = 0; i < g->n_ports; i++)
		if (g->ports[i].port == port && g->ports[i].proto == proto)
			return;
	g->ports[g->n_ports].port = port;
	g->ports[g->n_ports].proto = proto;
	g->n_ports++;
}

static int parse_ports(const json_t *c, struct grant *g, struct jit_error *e)
{
	const json_t *a = json_object_get(c, "ports");
	size_t cnt = json_array_size(a), i;
	uint16_t port = 0;
	unsigned mask;
	json_t *v;
	int ret;

	if (!a)
		return MALFORMED(e, "claim 'ports': missing");
	if (!json_is_array(a))
		return MALFORMED(e, "claim 'ports': expected an array, not %s", jit_json_type(a));
	if (!cnt)
		return MALFORMED(e, "claim 'ports': empty");
	if (cnt > GRANT_MAX_PORTS)
		return jit_fail(e, JIT_ERR_TOO_LARGE, "claim 'ports': %zu entries, at most %d allowed",
			cnt, GRANT_MAX_PORTS);
	/* Room for "*" expanding every entry to two. */
	if (!(g->ports = calloc(2 * cnt, sizeof(*g->ports))))
		return OOM(e);
	json_array_foreach(a, i, v) {
		if ((ret = parse_port(v, i, &port, &mask, e)))
			return ret;
		if (mask & PORT_PROTO_TCP)
			add_port(g, port, PORT_PROTO_TCP);
		if (mask & PORT_PROTO_UDP)
			add_port(g, port, PORT_PROTO_UDP);
	}
	if (g->n_ports > GRANT_MAX_PORTS)
		return jit_fail(e, JIT_ERR_TOO_LARGE, "claim 'ports': %zu port/protocol pairs, at "
			"most %d allowed", g->n_ports, GRANT_MAX_PORTS);
	return 0;
}

int grant_parse_claims(const json_t *claims, struct grant *out, struct jit_error *e)
{
	int ret;

	memset(out, 0, sizeof(*out));
	if (!json_is_object(claims)) {
		ret = MALFORMED(e, "claims: not a JSON object");
		goto out;
	}
	/* Claims we do not know are ignored, as JWT consumers do; every one we use is checked. */
	if ((ret = grant_claim_id(claims, "jti", &out->jti, e)) ||
		(ret = grant_claim_string(claims, "iss", true, &out->iss, e)) ||
		(ret = grant_claim_string(claims, "sub", true, &out->sub, e)) ||
		(ret = grant_claim_time(claims, "iat", true, &out->iat, e)) ||
		(ret = grant_claim_time(claims, "exp", true, &out->exp, e)) ||
		(ret = grant_claim_time(claims, "nbf", false, &out->nbf, e)) ||
		(ret = grant_claim_aud(claims, e)) ||
		(ret = parse_prefixes(claims, "src", true, GRANT_MAX_SOURCES, &out->src,
			&out->n_src, e)) ||
		(ret = parse_ports(claims, out, e)) ||
		(ret = parse_prefixes(claims, "dst", false, GRANT_MAX_DESTINATIONS, &out->dst,
			&out->n_dst, e)) ||
		(ret = grant_claim_string(claims, "reason", false, &out->reason, e)))
		goto out;
	ret = 0;
out:
	if (ret)
		grant_clear(out);
	return ret;
}

/* RFC 8725 section 3.9: the controller signs for many hosts, so aud must name this one. */
int grant_check_audience(const json_t *claims, const char *host_id, struct jit_error *e)
{
	const json_t *a = json_object_get(claims, "aud");
	size_t i;
	json_t *v;

	if (json_is_string(a) && !strcmp(json_string_value(a), host_id))
		return 0;
	json_array_foreach(a, i, v) {
		if (!strcmp(json_string_value(v), host_id))
			return 0;
	}
	return jit_fail(e, JIT_ERR_WRONG_AUDIENCE, "claim 'aud': does not name this host '%s'",
		host_id);
}

/* Claims are at most GRANT_MAX_TIME and the skew is clamped to it, so nothing here overflows. */
int grant_check_time(int64_t iat, int64_t nbf, int64_t exp, const struct grant_verify_ctx *ctx,
	struct jit_error *e)
{
	int64_t skew = ctx->clock_skew > (uint64_t)GRANT_MAX_TIME ? GRANT_MAX_TIME :
		(int64_t)ctx->clock_skew;
	int64_t now = ctx->now;

	/*
	 * A window that closes before it opens is a broken issuer, not a timing problem: said
	 * first, so that the code does not depend on the clock (not_yet_valid invites a retry).
	 */
	if (exp <= iat)
		return MALFORMED(e, "claim 'exp': %lld is not after iat %lld", (long long)exp,
			(long long)iat);
	if (nbf && exp <= nbf)
		return MALFORMED(e, "claim 'exp': %lld is not after nbf %lld", (long long)exp,
			(long long)nbf);
	if (exp + skew <= now)
		return jit_fail(e, JIT_ERR_EXPIRED, "claim 'exp': expired at %lld, now is %lld",
			(long long)exp, (long long)now);
	if (nbf && nbf - skew > now)
		return jit_fail(e, JIT_ERR_NOT_YET_VALID,
			"claim 'nbf': not before %lld, now is %lld", (long long)nbf,
			(long long)now);
	if (iat - skew > now)
		return jit_fail(e, JIT_ERR_NOT_YET_VALID,
			"claim 'iat': issued at %lld, now is %lld", (long long)iat,
			(long long)now);
	return 0;
}

/* A recorded token's key, already found trusted in this pass (grant_verify_ctx.trusted_kid). */
static bool key_checked(const struct grant_verify_ctx *ctx, bool signature, const char *kid)
{
	return !signature && ctx->trusted_kid && !strcmp(kid, ctx->trusted_kid);
}

static int verify(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	bool signature, struct grant *out, struct jit_error *e)
{
	struct jws j = { 0 };
	EVP_PKEY *pub = NULL;
	json_t *claims = NULL;
	const char *kid = NULL;
	int ret;

	memset(out, 0, sizeof(*out));
	if (e)
		e->authentic = false;
	/* Cheapest first: jws_decode refuses an oversized token before it looks at a byte. */
	if ((ret = jws_decode_with(ctx->verifier, token, len, &j, e)) ||
		(ret = jws_check_header(&j, GRANT_TYP, &kid, e)) ||
		(!key_checked(ctx, signature, kid) &&
			(ret = keys_load_public(ctx->keys_dir, kid, &pub, e))) ||
		(signature && (ret = jws_verify_with(ctx->verifier, &j, pub, e))))
		goto out;
	if (e)
		e->authentic = true;
	if ((ret = jws_claims(&j, &claims, e)) ||
		(ret = grant_parse_claims(claims, out, e)) ||
		(ret = grant_check_audience(claims, ctx->host_id, e)) ||
		(ret = grant_check_time(out->iat, out->nbf, out->exp, ctx, e)))
		goto out;
	if (!(out->kid = strdup(kid))) {
		ret = OOM(e);
		goto out;
	}
	ret = 0;
out:
	if (ret)
		grant_clear(out);
	json_decref(claims);
	EVP_PKEY_free(pub);
	jws_clear(&j);
	return ret;
}

int grant_verify(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	struct grant *out, struct jit_error *e)
{
	return verify(token, len, ctx, true, out, e);
}

int grant_verify_recorded(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	struct grant *out, struct jit_error *e)
{
	return verify(token, len, ctx, false, out, e);
}

static bool dup_str(const char *s, char **dst)
{
	*dst = NULL;
	return !s || (*dst = strdup(s));
}

static void *dup_mem(const void *p, size_t n)
{
	void *q;

	if (!n || !(q = malloc(n)))
		return NULL;
	return memcpy(q, p, n);
}

int grant_copy(const struct grant *src, struct grant *dst)
{
	struct grant g = { .iat = src->iat, .nbf = src->nbf, .exp = src->exp,
		.n_src = src->n_src, .n_ports = src->n_ports, .n_dst = src->n_dst,
		.n_dnat_ports = src->n_dnat_ports, .local = src->local };
	int ret;

	memset(dst, 0, sizeof(*dst));
	g.src = dup_mem(src->src, src->n_src * sizeof(*src->src));
	g.ports = dup_mem(src->ports, src->n_ports * sizeof(*src->ports));
	g.dst = dup_mem(src->dst, src->n_dst * sizeof(*src->dst));
	g.dnat_ports = dup_mem(src->dnat_ports, src->n_dnat_ports * sizeof(*src->dnat_ports));
	if (!dup_str(src->jti, &g.jti) || !dup_str(src->iss, &g.iss) ||
		!dup_str(src->sub, &g.sub) || !dup_str(src->kid, &g.kid) ||
		!dup_str(src->reason, &g.reason) || (src->n_src && !g.src) ||
		(src->n_ports && !g.ports) || (src->n_dst && !g.dst) ||
		(src->n_dnat_ports && !g.dnat_ports)) {
		ret = -ENOMEM;
		goto out;
	}
	*dst = g;
	memset(&g, 0, sizeof(g));
	ret = 0;
out:
	grant_clear(&g);
	return ret;
}

/* Where the next piece of a packed grant goes: arrays first, each at an aligned offset. */
static size_t pack_at(size_t *off, size_t len)
{
	size_t at = (*off + _Alignof(max_align_t) - 1) & ~(_Alignof(max_align_t) - 1);

	*off = at + len;
	return at;
}

static void *pack_mem(char *block, size_t at, const void *p, size_t len)
{
	return len ? memcpy(block + at, p, len) : NULL;
}

static char *pack_str(char *block, size_t *off, const char *s)
{
	size_t len = s ? strlen(s) + 1 : 0;
	char *at = block + *off;

	if (!s)
		return NULL;
	*off += len;
	return memcpy(at, s, len);
}

int grant_pack(struct grant *g)
{
	size_t src_len = g->n_src * sizeof(*g->src), ports_len = g->n_ports * sizeof(*g->ports);
	size_t dst_len = g->n_dst * sizeof(*g->dst), off = 0, src_at, ports_at, dst_at, str_at;
	const char *strs[] = { g->jti, g->iss, g->sub, g->kid, g->reason };
	struct grant old = *g;
	char *block;

	if (g->block)
		return 0;
	src_at = pack_at(&off, src_len);
	ports_at = pack_at(&off, ports_len);
	dst_at = pack_at(&off, dst_len);
	str_at = off;
	for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++)
		off += strs[i] ? strlen(strs[i]) + 1 : 0;
	if (!(block = malloc(off ? off : 1)))
		return -ENOMEM;
	g->src = pack_mem(block, src_at, old.src, src_len);
	g->ports = pack_mem(block, ports_at, old.ports, ports_len);
	g->dst = pack_mem(block, dst_at, old.dst, dst_len);
	g->jti = pack_str(block, &str_at, old.jti);
	g->iss = pack_str(block, &str_at, old.iss);
	g->sub = pack_str(block, &str_at, old.sub);
	g->kid = pack_str(block, &str_at, old.kid);
	g->reason = pack_str(block, &str_at, old.reason);
	g->block = block;
	old.dnat_ports = NULL;
	old.n_dnat_ports = 0;
	grant_clear(&old);
	return 0;
}

void grant_clear(struct grant *g)
{
	if (g->block) {
		free(g->block);
	} else {
		free(g->jti);
		free(g->iss);
		free(g->sub);
		free(g->kid);
		free(g->reason);
		free(g->src);
		free(g->ports);
		free(g->dst);
	}
	free(g->dnat_ports);
	memset(g, 0, sizeof(*g));
}
