#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/dnat.h"
#include "common/config.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/port.h"
#include "common/prefix.h"

#define ANNEX_TAG "dnat="

size_t dnat_pairs(const struct config *c, const struct grant *g, struct dnat_pair *out)
{
	size_t n = 0;

	for (size_t q = 0; q < g->n_ports; q++) {
		for (size_t d = 0; d < g->n_dst; d++) {
			const struct target_policy *t = config_find_target(c, &g->dst[d],
				g->ports[q].port, g->ports[q].proto);

			if (!t || !t->dnat)
				continue;
			if (out && n < DNAT_MAX_PAIRS)
				out[n] = (struct dnat_pair){ t, q, d };
			n++;
		}
	}
	return n;
}

static bool used(const struct dnat_used *u, uint16_t port)
{
	return u->bits[port / 8] & (1u << (port % 8));
}

static void use(struct dnat_used *u, uint16_t port)
{
	u->bits[port / 8] |= (uint8_t)(1u << (port % 8));
}

void dnat_mark(struct dnat_used *u, const struct grant *g)
{
	for (size_t i = 0; i < g->n_dnat_ports; i++)
		use(u, g->dnat_ports[i]);
}

size_t dnat_granted(const struct config *c, const struct grant *g, struct dnat_pair *out)
{
	size_t n = dnat_pairs(c, g, out);

	return n == g->n_dnat_ports && n <= DNAT_MAX_PAIRS ? n : 0;
}

int dnat_allocate(const struct config *c, struct grant *g, struct dnat_used *u,
	struct jit_error *e)
{
	struct dnat_pair p[DNAT_MAX_PAIRS];
	size_t n = dnat_pairs(c, g, p);
	uint16_t *ports = NULL;
	int ret;

	free(g->dnat_ports);
	g->dnat_ports = NULL;
	g->n_dnat_ports = 0;
	if (!n)
		return 0;
	if (n > DNAT_MAX_PAIRS)
		return jit_fail(e, JIT_ERR_TOO_LARGE, "%zu (port, dst) pairs need a gateway port; "
			"at most %d per grant", n, DNAT_MAX_PAIRS);
	if (!(ports = calloc(n, sizeof(*ports))))
		return jit_fail(e, JIT_ERR_INTERNAL, "out of memory");
	for (size_t i = 0; i < n; i++) {
		unsigned port = p[i].t->dnat_lo;

		while (port <= p[i].t->dnat_hi && used(u, (uint16_t)port))
			port++;
		if (port > p[i].t->dnat_hi) {
			ret = jit_fail(e, JIT_ERR_BUSY, "every gateway port of %u-%u is granted; "
				"retry when one is free", (unsigned)p[i].t->dnat_lo,
				(unsigned)p[i].t->dnat_hi);
			/* Nothing of this grant stays marked. */
			for (size_t j = 0; j < i; j++)
				u->bits[ports[j] / 8] &= (uint8_t) ~(1u << (ports[j] % 8));
			free(ports);
			return ret;
		}
		ports[i] = (uint16_t)port;
		use(u, ports[i]);
	}
	g->dnat_ports = ports;
	g->n_dnat_ports = (uint32_t)n;
	return 0;
}

/* The recorded ports, if they are n ports in their pairs' ranges and free; else -EINVAL. */
static int parse_annex(const char *annex, const struct dnat_pair *p, size_t n,
	const struct dnat_used *u, uint16_t *ports)
{
	const char *s = annex;

	if (!annex || strncmp(s, ANNEX_TAG, strlen(ANNEX_TAG)))
		return -EINVAL;
	s += strlen(ANNEX_TAG);
	for (size_t i = 0; i < n; i++) {
		char *end;
		unsigned long v;

		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = strtoul(s, &end, 10);
		if (v < p[i].t->dnat_lo || v > p[i].t->dnat_hi || used(u, (uint16_t)v))
			return -EINVAL;
		for (size_t j = 0; j < i; j++)
			if (ports[j] == v)
				return -EINVAL;
		ports[i] = (uint16_t)v;
		s = end;
		if (*s != (i + 1 < n ? ',' : '\0'))
			return -EINVAL;
		s += i + 1 < n;
	}
	return 0;
}

void dnat_reserve(struct dnat_used *u, const char *annex, size_t len)
{
	size_t tag = strlen(ANNEX_TAG), i;

	if (!annex || len < tag || strncmp(annex, ANNEX_TAG, tag))
		return;
	for (i = tag; i < len;) {
		unsigned long v = 0;
		size_t digits = 0;

		for (; i < len && annex[i] >= '0' && annex[i] <= '9' && digits < 5; i++, digits++)
			v = v * 10 + (unsigned long)(annex[i] - '0');
		if (!digits || v > 65535 || (i < len && annex[i] != ','))
			return;
		use(u, (uint16_t)v);
		i++;
	}
}

int dnat_restore(const struct config *c, struct grant *g, const char *annex, struct dnat_used *u,
	const struct dnat_used *reserved, struct jit_error *e)
{
	struct dnat_pair p[DNAT_MAX_PAIRS];
	size_t n = dnat_pairs(c, g, p);
	uint16_t *ports;
	int ret;

	if (!n)
		return annex && *annex ? 1 : 0;
	/* Too many pairs: dnat_allocate says so. */
	if (n > DNAT_MAX_PAIRS || !(ports = calloc(n, sizeof(*ports))))
		return n > DNAT_MAX_PAIRS ? dnat_allocate(c, g, u, e) :
					    jit_fail(e, JIT_ERR_INTERNAL, "out of memory");
	ret = parse_annex(annex, p, n, u, ports);
	if (ret) {
		struct dnat_used busy = *u;

		/* Not a port a record still to come takes back: it would lose it, or its grant. */
		for (size_t i = 0; reserved && i < sizeof(busy.bits); i++)
			busy.bits[i] |= reserved->bits[i];
		free(ports);
		if ((ret = dnat_allocate(c, g, &busy, e)))
			return ret;
		dnat_mark(u, g);
		return 1;
	}
	free(g->dnat_ports);
	g->dnat_ports = ports;
	g->n_dnat_ports = (uint32_t)n;
	dnat_mark(u, g);
	return 0;
}

bool dnat_fits(const struct config *c, const struct grant *g)
{
	struct dnat_pair p[DNAT_MAX_PAIRS];
	size_t n = dnat_pairs(c, g, p);

	if (n != g->n_dnat_ports || n > DNAT_MAX_PAIRS)
		return false;
	for (size_t i = 0; i < n; i++)
		if (g->dnat_ports[i] < p[i].t->dnat_lo || g->dnat_ports[i] > p[i].t->dnat_hi)
			return false;
	return true;
}

int dnat_describe(const struct config *c, const struct grant *g, char *buf, size_t len)
{
	struct dnat_pair p[DNAT_MAX_PAIRS];
	size_t n = dnat_granted(c, g, p), o = 0;

	if (!len)
		return -ENOSPC;
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		char to[PREFIX_STRLEN], spec[16];
		int w;

		prefix_format(&g->dst[p[i].dst_idx], to, sizeof(to));
		port_spec_format(&g->ports[p[i].port_idx], spec, sizeof(spec));
		w = snprintf(buf + o, len - o, "%sconnect to %s:%u for %s:%s", i ? "; " : "",
			p[i].t->dnat_address[0] ? p[i].t->dnat_address : "gateway",
			(unsigned)g->dnat_ports[i], to, spec);
		if (w < 0 || (size_t)w >= len - o)
			return -ENOSPC;
		o += (size_t)w;
	}
	return 0;
}

const char *dnat_annex_ports(const char *annex)
{
	return annex && !strncmp(annex, ANNEX_TAG, strlen(ANNEX_TAG)) ? annex + strlen(ANNEX_TAG) :
		"";
}

int dnat_ports_text(const uint16_t *ports, size_t n, char *buf, size_t len)
{
	size_t o = 0;

	if (!len)
		return -ENOSPC;
	buf[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		int w = snprintf(buf + o, len - o, "%s%u", i ? "," : "", (unsigned)ports[i]);

		if (w < 0 || (size_t)w >= len - o)
			return -ENOSPC;
		o += (size_t)w;
	}
	return 0;
}

int dnat_annex(const struct grant *g, char *buf, size_t len)
{
	size_t tag = strlen(ANNEX_TAG);

	if (!len)
		return -ENOSPC;
	buf[0] = '\0';
	if (!g->n_dnat_ports)
		return 0;
	if (len <= tag)
		return -ENOSPC;
	memcpy(buf, ANNEX_TAG, tag);
	return dnat_ports_text(g->dnat_ports, g->n_dnat_ports, buf + tag, len - tag);
}
