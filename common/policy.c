#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/config.h"
#include "common/duration.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/policy.h"
#include "common/port.h"
#include "common/prefix.h"

/* "destination <prefix> port <port/proto>[, inside <prefix>]" */
#define WHAT_LEN (24 + PREFIX_STRLEN + 16 + 10 + PREFIX_STRLEN)

static bool single(const struct port_spec *ps)
{
	return ps->proto == PORT_PROTO_TCP || ps->proto == PORT_PROTO_UDP;
}

static int need_ports(const struct grant *g, struct jit_error *e)
{
	return g->n_ports ? 0 : jit_fail(e, JIT_ERR_PORT_NOT_PROTECTED, "the grant names no port");
}

static int need_sources(const struct grant *g, struct jit_error *e)
{
	return g->n_src ? 0 : jit_fail(e, JIT_ERR_SOURCE_NOT_ALLOWED, "the grant names no source");
}

static int check_ports(const struct config *c, const struct grant *g, struct jit_error *e)
{
	for (size_t i = 0; i < g->n_ports; i++) {
		const struct port_spec *ps = &g->ports[i];
		const struct port_policy *pp = config_find_port(c, ps->port);

		/* A spec for both protocols would pass the mask test with one of them allowed. */
		if (!pp || !single(ps) || !(pp->protos & ps->proto))
			return jit_fail(e, JIT_ERR_PORT_NOT_PROTECTED,
				"port %u/%s is not protected", (unsigned)ps->port,
				port_proto_name(ps->proto));
	}
	return 0;
}

static bool allowed(bool any, const struct prefix *sources, size_t n, const struct prefix *src)
{
	if (any)
		return true;
	for (size_t i = 0; i < n; i++)
		if (prefix_contains(&sources[i], src))
			return true;
	return false;
}

static int check_sources(const struct config *c, const struct grant *g, struct jit_error *e)
{
	char src[PREFIX_STRLEN], port[16];

	for (size_t i = 0; i < g->n_ports; i++) {
		const struct port_policy *pp = config_find_port(c, g->ports[i].port);

		for (size_t s = 0; s < g->n_src; s++) {
			if (allowed(pp->any_source, pp->sources, pp->n_sources, &g->src[s]))
				continue;
			prefix_format(&g->src[s], src, sizeof(src));
			port_spec_format(&g->ports[i], port, sizeof(port));
			return jit_fail(e, JIT_ERR_SOURCE_NOT_ALLOWED,
				"source %s is not allowed for port %s", src, port);
		}
	}
	return 0;
}

/*
 * Signed on purpose: a grant already past exp is grant_verify's to refuse, not a huge unsigned
 * duration; a future exp too far away for int64 is refused rather than wrapped into the past.
 */
static uint64_t requested(const struct grant *g, int64_t now)
{
	int64_t left = 0;

	if (__builtin_sub_overflow(g->exp, now, &left))
		return g->exp > now ? UINT64_MAX : 0;
	return left > 0 ? (uint64_t)left : 0;
}

/* what: "port 22/tcp" or "destination 10.1.0.5 port 22/tcp". */
static int too_long(uint64_t req, uint64_t max, const char *what, struct jit_error *e)
{
	char a[48], b[48];

	duration_human(req, a, sizeof(a));
	duration_human(max, b, sizeof(b));
	/* "requested 3h exceeds the 3h maximum" would read as a bug: show exact seconds then. */
	if (!strcmp(a, b)) {
		snprintf(a, sizeof(a), "%llus", (unsigned long long)req);
		snprintf(b, sizeof(b), "%llus", (unsigned long long)max);
	}
	return jit_fail(e, JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested %s exceeds the %s maximum for %s", a, b, what);
}

static int check_duration(const struct config *c, const struct grant *g, int64_t now,
	struct jit_error *e)
{
	uint64_t req = requested(g, now);
	char what[WHAT_LEN], port[16];

	for (size_t i = 0; i < g->n_ports; i++) {
		const struct port_policy *pp = config_find_port(c, g->ports[i].port);

		if (req <= pp->max_duration)
			continue;
		port_spec_format(&g->ports[i], port, sizeof(port));
		snprintf(what, sizeof(what), "port %s", port);
		return too_long(req, pp->max_duration, what, e);
	}
	return 0;
}

static int check_host(const struct config *c, const struct grant *g, int64_t now,
	struct jit_error *e)
{
	int ret;

	if (!(c->mode & CONFIG_MODE_HOST))
		return jit_fail(e, JIT_ERR_DESTINATION_NOT_PROTECTED,
			"the grant names no dst; this gateway guards forwarded targets only");
	if ((ret = need_ports(g, e)) || (ret = check_ports(c, g, e)) ||
		(ret = need_sources(g, e)) || (ret = check_sources(c, g, e)) ||
		(ret = check_duration(c, g, now, e)))
		return ret;
	return 0;
}

/* "destination 10.1.0.5 port 22/tcp", for messages. */
static const char *dst_port(const struct prefix *d, const struct port_spec *ps,
	char what[static WHAT_LEN])
{
	char addr[PREFIX_STRLEN], port[16];

	prefix_format(d, addr, sizeof(addr));
	port_spec_format(ps, port, sizeof(port));
	snprintf(what, WHAT_LEN, "destination %s port %s", addr, port);
	return what;
}

static const struct target_policy *target_of(const struct config *c, const struct prefix *d,
	const struct port_spec *ps)
{
	/* As for the host's ports: a spec for both protocols must not pass on one of them. */
	return single(ps) ? config_find_target(c, d, ps->port, ps->proto) : NULL;
}

/*
 * After prev, the next target besides best (the most specific one containing all of d) that
 * governs part of (d, ps). Prefixes nest or are disjoint, so any other target overlapping d lies
 * inside it, and the addresses it holds are its own to judge: a grant to a whole /16 must not
 * pass a stricter /24 in it by naming the /16. Walk them from prev = best until NULL.
 */
static const struct target_policy *next_inside(const struct config *c, const struct prefix *d,
	const struct port_spec *ps, const struct target_policy *best,
	const struct target_policy *prev)
{
	for (size_t k = prev == best ? 0 : (size_t)(prev - c->targets) + 1; k < c->n_targets; k++) {
		const struct target_policy *t = &c->targets[k];

		if (t != best && t->addr.family == d->family && t->port == ps->port &&
			(t->protos & ps->proto) && prefix_contains(d, &t->addr))
			return t;
	}
	return NULL;
}

/* The part of (d, ps) that t governs, for messages: d itself, or t's prefix inside it. */
static const char *part(const struct target_policy *t, const struct target_policy *best,
	const struct prefix *d, const struct port_spec *ps, char what[static WHAT_LEN])
{
	char addr[PREFIX_STRLEN];
	size_t n;

	if (t == best)
		return dst_port(d, ps, what);
	dst_port(&t->addr, ps, what);
	prefix_format(d, addr, sizeof(addr));
	n = strlen(what);
	snprintf(what + n, WHAT_LEN - n, ", inside %s", addr);
	return what;
}

/* The target of (d, ps): protected, and one machine when the target maps a gateway port. */
static int check_target(const struct config *c, const struct prefix *d,
	const struct port_spec *ps, struct jit_error *e)
{
	const struct target_policy *t = target_of(c, d, ps);
	char what[WHAT_LEN], addr[PREFIX_STRLEN];

	if (!t)
		return jit_fail(e, JIT_ERR_DESTINATION_NOT_PROTECTED,
			"%s is not a protected target", dst_port(d, ps, what));
	/*
	 * A gateway port is DNAT'ed to one address, and a prefix names several machines. A target
	 * that maps ports inside a wider d is another matter: the grant forwards to its machine as
	 * to the others, within its sources and duration.
	 */
	if (t->dnat && d->len != 32) {
		prefix_format(&t->addr, addr, sizeof(addr));
		return jit_fail(e, JIT_ERR_DESTINATION_NOT_PROTECTED,
			"%s: target %s port %u/%s maps a gateway port to one machine: "
			"name one address in dst", dst_port(d, ps, what), addr,
			(unsigned)ps->port, port_proto_name(ps->proto));
	}
	return 0;
}

/*
 * Each source reaches the destinations of its own address family only, so each is judged
 * against those, and a destination no source can reach is a mistake in the grant.
 */
static int check_target_sources(const struct target_policy *t, const struct target_policy *best,
	const struct grant *g, const struct prefix *d, const struct port_spec *ps, uint64_t req,
	struct jit_error *e)
{
	char what[WHAT_LEN], src[PREFIX_STRLEN], addr[PREFIX_STRLEN];
	bool reached = false;

	(void)req;
	for (size_t s = 0; s < g->n_src; s++) {
		if (g->src[s].family != d->family)
			continue;
		reached = true;
		if (allowed(t->any_source, t->sources, t->n_sources, &g->src[s]))
			continue;
		prefix_format(&g->src[s], src, sizeof(src));
		return jit_fail(e, JIT_ERR_SOURCE_NOT_ALLOWED, "source %s is not allowed for %s",
			src, part(t, best, d, ps, what));
	}
	if (reached)
		return 0;
	prefix_format(d, addr, sizeof(addr));
	return jit_fail(e, JIT_ERR_SOURCE_NOT_ALLOWED,
		"no source of destination %s's address family", addr);
}

/* The requested duration against t, which governs part of (d, ps): as check_target_sources. */
static int check_target_duration(const struct target_policy *t,
	const struct target_policy *best, const struct grant *g, const struct prefix *d,
	const struct port_spec *ps, uint64_t req, struct jit_error *e)
{
	char what[WHAT_LEN];

	(void)g;
	if (req <= t->max_duration)
		return 0;
	return too_long(req, t->max_duration, part(t, best, d, ps, what), e);
}

/* check_target_sources or check_target_duration. */
typedef int judge_fn(const struct target_policy *t, const struct target_policy *best,
	const struct grant *g, const struct prefix *d, const struct port_spec *ps, uint64_t req,
	struct jit_error *e);

/* judge for every (dst, port) of g and every target governing a part of it; the first refusal. */
static int each_governing(const struct config *c, const struct grant *g, judge_fn *judge,
	uint64_t req, struct jit_error *e)
{
	int ret;

	for (size_t i = 0; i < g->n_ports; i++) {
		for (size_t d = 0; d < g->n_dst; d++) {
			const struct prefix *dst = &g->dst[d];
			const struct port_spec *ps = &g->ports[i];
			const struct target_policy *best = target_of(c, dst, ps);

			for (const struct target_policy *t = best; t;
				t = next_inside(c, dst, ps, best, t))
				if ((ret = judge(t, best, g, dst, ps, req, e)))
					return ret;
		}
	}
	return 0;
}

/*
 * As for the host's ports: every (dst, port) must have a target before any source is judged,
 * and every source must be allowed before any duration is; each by every target governing a
 * part of the dst.
 */
static int check_forward(const struct config *c, const struct grant *g, int64_t now,
	struct jit_error *e)
{
	uint64_t req = requested(g, now);
	int ret;

	if (!(c->mode & CONFIG_MODE_GATEWAY))
		return jit_fail(e, JIT_ERR_DESTINATION_NOT_PROTECTED,
			"claim 'dst': this host is not a gateway (mode host)");
	if ((ret = need_ports(g, e)) || (ret = need_sources(g, e)))
		return ret;
	for (size_t i = 0; i < g->n_ports; i++)
		for (size_t d = 0; d < g->n_dst; d++)
			if ((ret = check_target(c, &g->dst[d], &g->ports[i], e)))
				return ret;
	if ((ret = each_governing(c, g, check_target_sources, req, e)) ||
		(ret = each_governing(c, g, check_target_duration, req, e)))
		return ret;
	return 0;
}

int policy_check_issuer(const struct config *c, const char *kid, const char *iss,
	struct jit_error *e)
{
	const char *bound;
	char shown[JIT_SHOWN_LEN];

	if (!c->n_issuers)
		return 0;
	if (!(bound = config_issuer_of(c, kid)))
		return jit_fail(e, JIT_ERR_UNKNOWN_KEY, "key '%s' is bound to no issuer in the "
			"configuration's issuers", kid);
	if (strcmp(iss, bound))
		return jit_fail(e, JIT_ERR_WRONG_ISSUER, "claim 'iss': '%s' is not the issuer "
			"key '%s' is bound to", jit_shown(iss, shown), kid);
	return 0;
}

int policy_check(const struct config *c, const struct grant *g, int64_t now, struct jit_error *e)
{
	int ret;

	/* Root's local grants carry no issuer: the control socket's peer is who made them. */
	if (!g->local && (ret = policy_check_issuer(c, g->kid, g->iss, e)))
		return ret;
	return g->n_dst ? check_forward(c, g, now, e) : check_host(c, g, now, e);
}
