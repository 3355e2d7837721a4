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

static int check_ports(const struct config *c, const struct grant *g, struct jit_error *e)
{
	if (!g->n_ports)
		return jit_fail(e, JIT_ERR_PORT_NOT_PROTECTED, "the grant names no port");
	for (size_t i = 0; i < g->n_ports; i++) {
		const struct port_spec *ps = &g->ports[i];
		const struct port_policy *pp = config_find_port(c, ps->port);
		bool single = ps->proto == PORT_PROTO_TCP || ps->proto == PORT_PROTO_UDP;

		/* A spec for both protocols would pass the mask test with one of them allowed. */
		if (!pp || !single || !(pp->protos & ps->proto))
			return jit_fail(e, JIT_ERR_PORT_NOT_PROTECTED,
				"port %u/%s is not protected", (unsigned)ps->port,
				port_proto_name(ps->proto));
	}
	return 0;
}

static bool allowed(const struct port_policy *pp, const struct prefix *src)
{
	if (pp->any_source)
		return true;
	for (size_t i = 0; i < pp->n_sources; i++)
		if (prefix_contains(&pp->sources[i], src))
			return true;
	return false;
}

static int check_sources(const struct config *c, const struct grant *g, struct jit_error *e)
{
	char src[PREFIX_STRLEN], port[16];

	if (!g->n_src)
		return jit_fail(e, JIT_ERR_SOURCE_NOT_ALLOWED, "the grant names no source");
	for (size_t i = 0; i < g->n_ports; i++) {
		const struct port_policy *pp = config_find_port(c, g->ports[i].port);

		for (size_t s = 0; s < g->n_src; s++) {
			if (allowed(pp, &g->src[s]))
				continue;
			prefix_format(&g->src[s], src, sizeof(src));
			port_spec_format(&g->ports[i], port, sizeof(port));
			return jit_fail(e, JIT_ERR_SOURCE_NOT_ALLOWED,
				"source %s is not allowed for port %s", src, port);
		}
	}
	return 0;
}

static int too_long(uint64_t req, const struct port_policy *pp, const struct port_spec *ps,
	struct jit_error *e)
{
	char a[48], b[48], port[16];

	duration_human(req, a, sizeof(a));
	duration_human(pp->max_duration, b, sizeof(b));
	/* "requested 3h exceeds the 3h maximum" would read as a bug: show exact seconds then. */
	if (!strcmp(a, b)) {
		snprintf(a, sizeof(a), "%llus", (unsigned long long)req);
		snprintf(b, sizeof(b), "%llus", (unsigned long long)pp->max_duration);
	}
	port_spec_format(ps, port, sizeof(port));
	return jit_fail(e, JIT_ERR_DURATION_EXCEEDS_MAX,
		"requested %s exceeds the %s maximum for port %s", a, b, port);
}

/*
 * Signed on purpose: a grant already past exp is grant_verify's to refuse, not a huge unsigned
 * duration; a future exp too far away for int64 is refused rather than wrapped into the past.
 */
static int check_duration(const struct config *c, const struct grant *g, int64_t now,
	struct jit_error *e)
{
	int64_t left = 0;
	bool overflow = __builtin_sub_overflow(g->exp, now, &left);
	uint64_t req = left > 0 ? (uint64_t)left : 0;

	if (overflow)
		req = g->exp > now ? UINT64_MAX : 0;
	for (size_t i = 0; i < g->n_ports; i++) {
		const struct port_policy *pp = config_find_port(c, g->ports[i].port);

		if (req > pp->max_duration)
			return too_long(req, pp, &g->ports[i], e);
	}
	return 0;
}

int policy_check(const struct config *c, const struct grant *g, int64_t now, struct jit_error *e)
{
	int ret;

	if ((ret = check_ports(c, g, e)) || (ret = check_sources(c, g, e)) ||
		(ret = check_duration(c, g, now, e)))
		return ret;
	return 0;
}
