#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <libnftnl/set.h>

#include "agent/activity.h"
#include "agent/conntrack.h"
#include "agent/dnat.h"
#include "agent/enforce.h"
#include "agent/nft.h"
#include "agent/printer.h"
#include "agent/ruleset.h"
#include "agent/status.h"
#include "agent/store.h"
#include "agent/testhook.h"
#include "common/array.h"
#include "common/config.h"
#include "common/duration.h"
#include "common/grant.h"
#include "common/port.h"
#include "common/prefix.h"
#include "common/proto.h"

#define STATUS_VERSION 1
/* Kernel and model are compared after both have moved on by the time a dump takes. */
#define SYNC_TOLERANCE_MS 2000
/* The status document goes to its evbuffer in blocks of this size. */
#define STATUS_BLOCK (64 * 1024)
/*
 * How long a status may wait in all for its reader to catch up (see printer_drain_to): the loop
 * waits with it, so a reader that does not read holds it up this much more, and no longer.
 */
#define STATUS_DRAIN_WAIT_MS 250

/*
 * One element the kernel holds. Nearly every one is an element of the model with the kernel's
 * own expiry, so its fields are not copied (88 bytes each, 8.8 MB at 100,000 grants): at is the
 * model's index, or with KREF_EXTRA the index of a copy the view keeps of what the model lacks.
 */
struct kref {
	uint32_t at;
	int64_t exp_ms;
};
#define KREF_EXTRA 0x80000000u

/* What the kernel holds, read once per status request; r sorted as the model is. */
struct kview {
	bool present;
	uint64_t denied;
	const struct ruleset_elem *model;
	size_t nm;
	struct kref *r;
	size_t n, cap;
	struct ruleset_elem *extra;
	size_t n_extra, extra_cap;
	size_t foreign;		/* elements jitd cannot have written: never in sync */
	int64_t now_ms, boot_ms;	/* read together: a grant's end is one minus the other */
};

static const struct ruleset_elem *kref_elem(const struct kview *kv, const struct kref *r)
{
	return r->at & KREF_EXTRA ? &kv->extra[r->at & ~KREF_EXTRA] : &kv->model[r->at];
}

/* The fields of the kernel's element i; its expiry is kv->r[i].exp_ms. */
static const struct ruleset_elem *kv_elem(const struct kview *kv, size_t i)
{
	return kref_elem(kv, &kv->r[i]);
}

static void kview_free(struct kview *kv)
{
	free(kv->r);
	free(kv->extra);
	kv->r = NULL;
	kv->extra = NULL;
}

static json_t *time_json(int64_t secs)
{
	char buf[PROTO_TIME_LEN];

	return proto_time_format(secs, buf, sizeof(buf)) ? json_null() : json_string(buf);
}

static json_t *prefix_json(const struct prefix *p)
{
	char buf[PREFIX_STRLEN];

	return prefix_format(p, buf, sizeof(buf)) ? json_null() : json_string(buf);
}

#define RANGE_STRLEN (2 * INET6_ADDRSTRLEN + 8)

/* [lo, hi] as a prefix when it is one, "lo-hi" otherwise; 0 or -1. */
static int range_format(int family, const uint8_t *lo, const uint8_t *hi, char *buf, size_t len)
{
	size_t alen = family == AF_INET ? 4 : 16;
	char a[INET6_ADDRSTRLEN], b[INET6_ADDRSTRLEN];
	struct prefix p = { .family = family };
	unsigned bits = 0;

	while (bits < alen * 8) {
		unsigned byte = bits / 8, mask = 0x80u >> (bits % 8);

		if ((lo[byte] & mask) != (hi[byte] & mask))
			break;
		bits++;
	}
	memcpy(p.addr, lo, alen);
	p.len = (uint8_t)bits;
	{
		uint8_t plo[16], phi[16];

		prefix_range(&p, plo, phi);
		if (!memcmp(plo, lo, alen) && !memcmp(phi, hi, alen))
			return prefix_format(&p, buf, len);
	}
	if (!inet_ntop(family, lo, a, sizeof(a)) || !inet_ntop(family, hi, b, sizeof(b)))
		return -1;
	return snprintf(buf, len, "%s-%s", a, b) < (int)len ? 0 : -1;
}

static int kview_push(struct kview *kv, uint32_t at, int64_t exp_ms)
{
	struct kref *nr = array_reserve(kv->r, &kv->cap, kv->n + 1, sizeof(*nr), 16);

	if (!nr)
		return -ENOMEM;
	kv->r = nr;
	kv->r[kv->n++] = (struct kref){ .at = at, .exp_ms = exp_ms };
	return 0;
}

/* Everything but the expiry: ruleset_elem_cmp leaves out only that and the mapped port. */
static bool same_fields(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	return !ruleset_elem_cmp(a, b) && a->to_port == b->to_port;
}

/* Appends the kernel's element re: a reference to its first twin in the model, else a copy. */
static int kview_add(struct kview *kv, const struct ruleset_elem *re)
{
	size_t lo = ruleset_elem_lower(kv->model, kv->nm, re);
	struct ruleset_elem *ne;

	for (; lo < kv->nm && !ruleset_elem_cmp(&kv->model[lo], re); lo++)
		if (kv->model[lo].to_port == re->to_port)
			return kview_push(kv, (uint32_t)lo, re->exp_ms);
	if (kv->n_extra >= KREF_EXTRA)
		return -EOVERFLOW;
	ne = array_reserve(kv->extra, &kv->extra_cap, kv->n_extra + 1, sizeof(*ne), 16);
	if (!ne)
		return -ENOMEM;
	kv->extra = ne;
	kv->extra[kv->n_extra] = *re;
	return kview_push(kv, KREF_EXTRA | (uint32_t)kv->n_extra++, re->exp_ms);
}

/*
 * What jitd could not have written (no timeout, a range of ports, a catch-all) is no grant's:
 * it is not listed, but counted, and the kernel is then not in sync (jitd removes it at its
 * next check, or cannot even name it).
 */
static int read_cb(void *arg, const char *set __attribute__((unused)),
	const struct ruleset_elem *re, const struct ruleset_raw *raw __attribute__((unused)))
{
	struct kview *kv = arg;

	if (re)
		return kview_add(kv, re);
	kv->foreign++;
	return 0;
}

static void read_restart(void *arg)
{
	struct kview *kv = arg;

	kv->n = 0;
	kv->n_extra = 0;
	kv->foreign = 0;
}

/*
 * The model (nm elements, sorted) is what the kernel's elements are looked up in. Room for
 * as many references (and a few more) is made at once: grown by doubling, the array would be
 * copied at every step.
 */
static void kview_read(struct nft *n, const struct config *cfg, const struct ruleset_elem *model,
	size_t nm, struct kview *kv)
{
	uint64_t bytes;

	memset(kv, 0, sizeof(*kv));
	kv->model = model;
	kv->nm = nm;
	kv->now_ms = enforce_now_ms();
	kv->boot_ms = enforce_boot_ms();
	if (nft_table_exists(n, RULESET_TABLE, &kv->present) || !kv->present)
		return;
	if (nm >= KREF_EXTRA) {
		kv->present = false; /* cannot be referred to; no table holds that many */
		return;
	}
	kv->r = array_reserve(NULL, &kv->cap, nm + nm / 64, sizeof(*kv->r), 16);
	(void)nft_counter_get(n, RULESET_TABLE, RULESET_COUNTER_DENIED, &kv->denied, &bytes);
	if (ruleset_read_grants(n, cfg, kv->now_ms, read_cb, read_restart, kv))
		kv->present = false; /* without its sets it is not the table jitd built */
}

/*
 * (kind, family, protocol, port), then addresses: both sides of a comparison are sorted this
 * way, as the enforcer keeps its model.
 */
static int cmp_group(const struct ruleset_elem *x, int kind, int family, uint8_t ipproto,
	uint16_t port)
{
	if (x->kind != kind)
		return x->kind < kind ? -1 : 1;
	if (x->family != family)
		return x->family < family ? -1 : 1;
	if (x->ipproto != ipproto)
		return x->ipproto < ipproto ? -1 : 1;
	if (x->port != port)
		return x->port < port ? -1 : 1;
	return 0;
}

/*
 * ruleset_elem_cmp's order, then the model's references before copies, then by index: a total
 * order. Two references into the (sorted) model compare as their indices do.
 */
static int kref_cmp(const void *a, const void *b, void *arg)
{
	const struct kref *x = a, *y = b;
	int c;

	if (!((x->at | y->at) & KREF_EXTRA))
		return (x->at > y->at) - (x->at < y->at);
	if ((c = ruleset_elem_cmp(kref_elem(arg, x), kref_elem(arg, y))))
		return c;
	if ((x->at ^ y->at) & KREF_EXTRA)
		return x->at & KREF_EXTRA ? 1 : -1;
	return (x->at > y->at) - (x->at < y->at);
}

static void kview_sort(struct kview *kv)
{
	if (kv->n)
		qsort_r(kv->r, kv->n, sizeof(*kv->r), kref_cmp, kv);
}

static bool next_addr(uint8_t *a, size_t alen)
{
	for (size_t i = alen; i-- > 0;)
		if (++a[i])
			return true;
	return false;
}

/*
 * The first of kv's elements not ordered before the group, or with past the first after it;
 * with lo, the first of the group that reaches lo (a set's elements are disjoint, so within a
 * group both ends ascend). A binary search, so that a grant is not checked against every
 * element of a table that holds 100,000 of them.
 */
static size_t kv_bound(const struct kview *kv, int kind, int family, uint8_t ipproto,
	uint16_t port, const uint8_t *lo, bool past)
{
	size_t alen = family == AF_INET ? 4 : 16, first = 0, end = kv->n;

	while (first < end) {
		size_t mid = first + (end - first) / 2;
		const struct ruleset_elem *k = kv_elem(kv, mid);
		int c = cmp_group(k, kind, family, ipproto, port);

		if (c < 0 || (c == 0 && (past || (lo && memcmp(k->hi, lo, alen) < 0))))
			first = mid + 1;
		else
			end = mid;
	}
	return first;
}

/*
 * Milliseconds until the first piece of [lo, hi] on (proto, port) leaves the kernel, or -1 if
 * the kernel does not cover the whole range right now. kv is sorted (kview_sort).
 */
static int64_t covered_until(const struct kview *kv, int kind, int family, uint8_t ipproto,
	uint16_t port, const uint8_t *lo, const uint8_t *hi)
{
	size_t alen = family == AF_INET ? 4 : 16;
	int64_t until = INT64_MAX;
	uint8_t want[16];

	memcpy(want, lo, alen);
	for (size_t i = kv_bound(kv, kind, family, ipproto, port, lo, false); i < kv->n; i++) {
		const struct ruleset_elem *k = kv_elem(kv, i);

		if (cmp_group(k, kind, family, ipproto, port) || memcmp(k->lo, want, alen) > 0)
			return -1; /* a gap, or nothing left that covers the rest */
		if (kv->r[i].exp_ms < until)
			until = kv->r[i].exp_ms;
		memcpy(want, k->hi, alen);
		if (memcmp(want, hi, alen) >= 0 || !next_addr(want, alen))
			return until - kv->now_ms;
	}
	return -1;
}

/*
 * Forward elements are boxes (source x destination). Milliseconds until the first box covering
 * part of src x dst on (proto, port) leaves the kernel, or -1 if the boxes do not cover all of
 * it: the destination range is cut at every box edge inside it, and each slice's source range
 * must be covered by the boxes spanning the slice.
 */
static int64_t box_covered_until(const struct kview *kv, int family, uint8_t ipproto,
	uint16_t port, const struct prefix *src, const struct prefix *dst)
{
	size_t alen = family == AF_INET ? 4 : 16;
	size_t first = kv_bound(kv, RULESET_FORWARD, family, ipproto, port, NULL, false);
	size_t end = kv_bound(kv, RULESET_FORWARD, family, ipproto, port, NULL, true);
	uint8_t lo[16] = { 0 }, hi[16] = { 0 }, dlo[16] = { 0 }, dhi[16] = { 0 }, at[16];
	int64_t until = INT64_MAX;

	prefix_range(src, lo, hi);
	prefix_range(dst, dlo, dhi);
	memcpy(at, dlo, 16);
	for (;;) {
		uint8_t want[16], next[16];
		bool done = false;

		/* The slice starting at `at` ends before the next box edge above it. */
		memcpy(next, dhi, 16);
		for (size_t i = first; i < end; i++) {
			const struct ruleset_elem *k = kv_elem(kv, i);

			if (memcmp(k->dlo, at, 16) > 0 || memcmp(k->dhi, at, 16) < 0)
				continue;
			if (memcmp(k->dhi, next, 16) < 0)
				memcpy(next, k->dhi, 16);
		}
		/* The boxes spanning the slice, walked by source; they are disjoint. */
		memcpy(want, lo, 16);
		while (!done) {
			size_t best = end;

			for (size_t i = first; i < end; i++) {
				const struct ruleset_elem *k = kv_elem(kv, i);

				if (memcmp(k->dlo, at, 16) > 0 || memcmp(k->dhi, at, 16) < 0 ||
					memcmp(k->lo, want, 16) > 0 || memcmp(k->hi, want, 16) < 0)
					continue;
				best = i;
				break;
			}
			if (best == end)
				return -1;
			if (kv->r[best].exp_ms < until)
				until = kv->r[best].exp_ms;
			memcpy(want, kv_elem(kv, best)->hi, 16);
			done = memcmp(want, hi, 16) >= 0 || !next_addr(want, alen);
		}
		if (memcmp(next, dhi, 16) >= 0)
			break;
		memcpy(at, next, 16);
		if (!next_addr(at, alen))
			break;
	}
	return until == INT64_MAX ? -1 : until - kv->now_ms;
}

/* A gateway grant's boxes, and its gateway ports' mappings from each IPv4 source. */
static int64_t gateway_kernel_left(const struct kview *kv, const struct config *cfg,
	const struct grant *g)
{
	struct dnat_pair pairs[DNAT_MAX_PAIRS];
	int64_t left = INT64_MAX, l;
	size_t np = dnat_granted(cfg, g, pairs);

	for (size_t p = 0; p < g->n_ports; p++) {
		uint8_t ipproto = port_proto_ipproto(g->ports[p].proto);

		for (size_t d = 0; d < g->n_dst; d++) {
			for (size_t s = 0; s < g->n_src; s++) {
				if (g->src[s].family != g->dst[d].family)
					continue;
				l = box_covered_until(kv, g->dst[d].family, ipproto, g->ports[p].port,
					&g->src[s], &g->dst[d]);
				if (l < 0)
					return -1;
				left = l < left ? l : left;
			}
		}
	}
	if (np != g->n_dnat_ports)
		return -1; /* the configuration no longer maps what the grant was given */
	for (size_t k = 0; k < np; k++) {
		for (size_t s = 0; s < g->n_src; s++) {
			uint8_t lo[16] = { 0 }, hi[16] = { 0 };

			if (g->src[s].family != AF_INET)
				continue;
			prefix_range(&g->src[s], lo, hi);
			l = covered_until(kv, RULESET_DNAT, AF_INET,
				port_proto_ipproto(g->ports[pairs[k].port_idx].proto),
				g->dnat_ports[k], lo, hi);
			if (l < 0)
				return -1;
			left = l < left ? l : left;
		}
	}
	return left == INT64_MAX ? -1 : left;
}

static int64_t grant_kernel_left(const struct kview *kv, const struct config *cfg,
	const struct grant *g)
{
	int64_t left = INT64_MAX;

	if (g->n_dst)
		return gateway_kernel_left(kv, cfg, g);
	for (size_t p = 0; p < g->n_ports; p++) {
		for (size_t s = 0; s < g->n_src; s++) {
			uint8_t lo[16], hi[16];
			int64_t l;

			prefix_range(&g->src[s], lo, hi);
			l = covered_until(kv, ruleset_host_kind(&g->src[s]),
				g->src[s].family,
				port_proto_ipproto(g->ports[p].proto), g->ports[p].port, lo, hi);
			if (l < 0)
				return -1;
			if (l < left)
				left = l;
		}
	}
	return left == INT64_MAX ? -1 : left;
}

/*
 * A gateway grant's "dnat" entries, as a cloud console shows them: where to connect, and where
 * that leads. connect names the configured gateway address, or just the port.
 */
static void put_dnat(struct printer *pr, const struct config *cfg, const struct grant *g)
{
	struct dnat_pair pairs[DNAT_MAX_PAIRS];
	size_t np = dnat_granted(cfg, g, pairs);

	for (size_t k = 0; k < np; k++) {
		const struct port_spec *ps = &g->ports[pairs[k].port_idx];
		char to[PREFIX_STRLEN + 8], connect[INET6_ADDRSTRLEN + 8], addr[PREFIX_STRLEN];

		prefix_format(&g->dst[pairs[k].dst_idx], addr, sizeof(addr));
		snprintf(to, sizeof(to), "%s:%u", addr, (unsigned)ps->port);
		snprintf(connect, sizeof(connect), "%s:%u", pairs[k].t->dnat_address[0] ?
			pairs[k].t->dnat_address : "gateway", (unsigned)g->dnat_ports[k]);
		pr_raw(pr, k ? ",{\"gateway_port\":" : "{\"gateway_port\":");
		pr_int(pr, true, g->dnat_ports[k]);
		pr_raw(pr, ",\"protocol\":");
		pr_plain(pr, port_proto_name(ps->proto));
		pr_raw(pr, ",\"to\":");
		pr_plain(pr, to);
		pr_raw(pr, ",\"connect\":");
		pr_string(pr, connect);
		pr_raw(pr, "}");
	}
}

/* One element: a source x port, and for a gateway grant a destination of the source's family. */
static void put_element(struct printer *pr, const struct prefix *src, const struct port_spec *ps,
	const struct prefix *dst)
{
	char buf[PREFIX_STRLEN];

	pr_raw(pr, "{\"source\":");
	pr_plain(pr, prefix_format(src, buf, sizeof(buf)) ? NULL : buf);
	pr_raw(pr, ",\"protocol\":");
	pr_plain(pr, port_proto_name(ps->proto));
	pr_raw(pr, ",\"port\":");
	pr_int(pr, true, ps->port);
	if (dst) {
		pr_raw(pr, ",\"destination\":");
		pr_plain(pr, prefix_format(dst, buf, sizeof(buf)) ? NULL : buf);
	}
	pr_raw(pr, "}");
}

/* The elements a grant asks for, as a reply lists them. */
static void put_elements(struct printer *pr, const struct grant *g)
{
	bool first = true;

	for (size_t s = 0; s < g->n_src; s++) {
		for (size_t p = 0; p < g->n_ports; p++) {
			for (size_t d = 0; d < (g->n_dst ? g->n_dst : 1); d++) {
				const struct prefix *dst = g->n_dst ? &g->dst[d] : NULL;

				if (dst && dst->family != g->src[s].family)
					continue;
				if (!first)
					pr_raw(pr, ",");
				put_element(pr, &g->src[s], &g->ports[p], dst);
				first = false;
			}
		}
	}
}

/*
 * A grant's object, printed: what jansson's JSON_COMPACT prints for it, member for member. At
 * 100,000 grants, building and dumping a jansson object per grant was most of a status. What
 * comes from outside (the claims, a configured address) goes through pr_string; the
 * rest is formatted here and needs no escape. end_ms: when its access ends by the clock as it
 * reads now_ms (enforce_grant_end_ms); flows < 0: not known (conntrack unavailable).
 * With elements, the reply to a submit: the elements the grant asked for, last.
 */
static void print_grant(struct printer *pr, const struct config *cfg, const struct grant *g,
	int64_t now_ms, int64_t end_ms, int64_t left, long flows, bool elements)
{
	/* To the nearest second: exp itself, but for the milliseconds between two clock reads. */
	int64_t end = (end_ms + 500) / 1000, in = end - now_ms / 1000;

	pr_raw(pr, "{\"id\":");
	pr_string(pr, g->jti);
	pr_raw(pr, ",\"sub\":");
	pr_string(pr, g->sub);
	pr_raw(pr, ",\"iss\":");
	pr_string(pr, g->iss);
	pr_raw(pr, ",\"kid\":");
	pr_string(pr, g->kid);
	pr_raw(pr, ",\"reason\":");
	pr_string(pr, g->reason);
	pr_raw(pr, ",\"sources\":[");
	pr_prefixes(pr, g->src, g->n_src);
	pr_raw(pr, "],\"ports\":[");
	pr_ports(pr, g->ports, g->n_ports);
	pr_raw(pr, "],\"issued_at\":");
	pr_stamp(pr, 0, g->iat);
	pr_raw(pr, ",\"expires_at\":");
	pr_stamp(pr, 1, end);
	pr_raw(pr, ",\"expires_in\":");
	pr_int(pr, true, in > 0 ? in : 0);
	pr_raw(pr, ",\"kernel_expires_in\":");
	pr_int(pr, left >= 0, (left + 999) / 1000);
	pr_raw(pr, ",\"flows\":");
	pr_int(pr, flows >= 0, flows);
	if (g->n_dst) {
		pr_raw(pr, ",\"destinations\":[");
		pr_prefixes(pr, g->dst, g->n_dst);
		pr_raw(pr, "],\"dnat\":[");
		put_dnat(pr, cfg, g);
		pr_raw(pr, "]");
	}
	if (elements) {
		pr_raw(pr, ",\"elements\":[");
		put_elements(pr, g);
		pr_raw(pr, "]");
	}
	pr_raw(pr, "}");
}

/*
 * The elements that can cover g, from what the kernel acknowledged last (the enforcer's model,
 * sorted by group and address): a reply to a grant must cost neither a dump of every element
 * in the table nor a walk over the model, so each (source, port) is a binary search. Elements
 * that ran out stay in the model until the next tick, beside what replaced them (a grant
 * renewed as the last one ends): they are not the kernel's, and would make a grant it holds
 * look not held.
 */
static int kview_model(struct enforce *e, const struct grant *g, struct kview *kv)
{
	size_t n;
	const struct ruleset_elem *m = enforce_model(e, &n);

	memset(kv, 0, sizeof(*kv));
	kv->model = m;
	kv->nm = n;
	kv->now_ms = enforce_now_ms();
	kv->present = true;
	if (n >= KREF_EXTRA)
		return -EOVERFLOW;
	/*
	 * Gateway grants are few: their elements are simply all the gateway ones, which the model
	 * keeps after every host element (it is sorted by kind first).
	 */
	if (g->n_dst) {
		const struct ruleset_elem forward = { .kind = RULESET_FORWARD };

		for (size_t i = ruleset_elem_lower(m, n, &forward); i < n; i++)
			if (m[i].exp_ms > kv->now_ms && kview_push(kv, (uint32_t)i, m[i].exp_ms))
				return -ENOMEM;
		return 0;
	}
	for (size_t s = 0; s < g->n_src; s++) {
		for (size_t p = 0; p < g->n_ports; p++) {
			struct ruleset_elem key = {
				.kind = (uint8_t)ruleset_host_kind(&g->src[s]),
				.family = g->src[s].family,
				.ipproto = port_proto_ipproto(g->ports[p].proto),
				.port = g->ports[p].port };
			size_t alen = key.family == AF_INET ? 4 : 16, i;

			prefix_range(&g->src[s], key.lo, key.hi);
			/*
			 * Back to the first element of the group that still reaches key.lo: live
			 * ones do not overlap, but one that ran out may sit inside a live one.
			 */
			i = ruleset_elem_lower(m, n, &key);
			while (i > 0 && !cmp_group(&m[i - 1], key.kind, key.family, key.ipproto,
				key.port) && (m[i - 1].exp_ms <= kv->now_ms ||
				memcmp(m[i - 1].hi, key.lo, alen) >= 0))
				i--;
			for (; i < n && !cmp_group(&m[i], key.kind, key.family, key.ipproto,
				key.port) &&
				memcmp(m[i].lo, key.hi, alen) <= 0; i++) {
				if (m[i].exp_ms > kv->now_ms &&
					memcmp(m[i].hi, key.lo, alen) >= 0 &&
					kview_push(kv, (uint32_t)i, m[i].exp_ms))
					return -ENOMEM;
			}
		}
	}
	return 0;
}

int status_grant_write(struct enforce *e, const struct grant *g, struct evbuffer *out)
{
	const struct config *cfg = enforce_config(e);
	struct printer pr;
	struct kview kv;
	char block[4096];

	if (kview_model(e, g, &kv))
		kv.present = false; /* kernel_expires_in: null, "not known" */
	kview_sort(&kv);
	printer_init(&pr, out, block, sizeof(block));
	/* Just applied: it ends at exp (a clock step since would be milliseconds old). */
	print_grant(&pr, cfg, g, kv.now_ms, g->exp * 1000, grant_kernel_left(&kv, cfg, g), -1,
		true);
	pr_flush(&pr);
	kview_free(&kv);
	return pr.err;
}

int status_id_write(const char *jti, struct evbuffer *out)
{
	struct printer pr;
	char block[512];

	printer_init(&pr, out, block, sizeof(block));
	pr_raw(&pr, "{\"id\":");
	pr_string(&pr, jti);
	pr_raw(&pr, "}");
	pr_flush(&pr);
	return pr.err;
}

int status_revoke_write(const struct revoke_result *res, const char *head, struct evbuffer *out)
{
	struct printer pr;
	char block[1024], text[sizeof(res->terminate_error) + sizeof(res->unconfirmed)];

	printer_init(&pr, out, block, sizeof(block));
	pr_printf(&pr, "{%s\"revoked\":", head);
	pr_string(&pr, res->grant_id);
	pr_printf(&pr, ",\"terminate\":%s,\"flows_terminated\":",
		res->terminate ? "true" : "false");
	pr_int(&pr, res->flows_terminated >= 0, res->flows_terminated);
	if (res->flows_terminated < 0) {
		pr_raw(&pr, ",\"terminate_error\":");
		pr_string(&pr, proto_text(res->terminate_error, text, sizeof(text)));
	}
	if (res->unconfirmed[0]) {
		pr_raw(&pr, ",\"kernel_unconfirmed\":");
		pr_string(&pr, proto_text(res->unconfirmed, text, sizeof(text)));
	}
	pr_raw(&pr, "}\n");
	pr_flush(&pr);
	return pr.err;
}

static json_t *sources_json(const struct port_policy *pp)
{
	json_t *a = json_array();

	if (pp->any_source)
		json_array_append_new(a, json_string("*"));
	for (size_t i = 0; a && !pp->any_source && i < pp->n_sources; i++)
		json_array_append_new(a, prefix_json(&pp->sources[i]));
	return a;
}

static json_t *always_json(const struct config *cfg)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < cfg->n_always_allow; i++)
		json_array_append_new(a, prefix_json(&cfg->always_allow[i]));
	return a;
}

static json_t *ports_json(const struct config *cfg, struct activity *act,
	const struct grant *g, size_t n, int64_t now)
{
	json_t *a = json_array();

	/* Once: a rebuild joining between two rows would give the status two states. */
	activity_ready(act);
	for (size_t i = 0; a && i < cfg->n_ports; i++) {
		const struct port_policy *pp = &cfg->ports[i];
		struct port_activity sum;
		char dur[32] = "";
		int active = 0;
		json_t *o;

		/* A grant counts once, also on a "*" port, whose row is its TCP and UDP both. */
		for (size_t j = 0; j < n; j++) {
			bool hit = false;

			for (size_t p = 0; p < g[j].n_ports && !hit; p++)
				hit = !g[j].n_dst && g[j].ports[p].port == pp->port &&
					(g[j].ports[p].proto & pp->protos);
			active += hit;
		}
		/* ipproto 0: each grant once for the port, whatever its protocols. */
		activity_port(act, pp->port, port_proto_ipproto(pp->protos), now, &sum);
		duration_format(pp->max_duration, dur, sizeof(dur));
		o = json_pack("{s:i, s:s, s:s, s:I, s:o, s:i, s:o}", "port", pp->port, "protocol",
			port_proto_name(pp->protos), "max_duration", dur, "max_duration_seconds",
			(json_int_t)pp->max_duration, "allowed_sources", sources_json(pp),
			"active_grants", active, "grants_7d", sum.pending || sum.week_unknown ?
			json_null() : json_integer(sum.grants_7d));
		/*
		 * pending: the trail is still being read at the start; week_unknown: it could not
		 * be, less than a week ago. null, not a wrong 0.
		 */
		if (o && (json_object_set_new(o, "last_access",
			sum.last_access ? time_json(sum.last_access) : json_null()) ||
			json_object_set_new(o, "last_user",
				sum.last_access ? json_string(sum.last_user) : json_null()))) {
			json_decref(o);
			o = NULL;
		}
		/* A row left out would read as a port jitd does not protect: out of memory. */
		if (!o || json_array_append_new(a, o)) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

static const char *mode_name(unsigned mode)
{
	if (mode == (CONFIG_MODE_HOST | CONFIG_MODE_GATEWAY))
		return "both";
	return mode & CONFIG_MODE_GATEWAY ? "gateway" : "host";
}

/* The forwarded targets (gateway mode), with how many live grants name each. */
static json_t *targets_json(const struct config *cfg, const struct grant *g, size_t n)
{
	json_t *a = json_array();

	for (size_t i = 0; a && i < cfg->n_targets; i++) {
		const struct target_policy *t = &cfg->targets[i];
		const struct port_policy pp = { .any_source = t->any_source, .sources = t->sources,
			.n_sources = t->n_sources };
		char dur[32] = "", range[16];
		int active = 0;
		json_t *o;

		/* Counted where policy would place it: the most specific target for the dst. */
		for (size_t j = 0; j < n; j++) {
			bool hit = false;

			for (size_t p = 0; p < g[j].n_ports && !hit; p++)
				for (size_t d = 0; d < g[j].n_dst && !hit; d++)
					hit = config_find_target(cfg, &g[j].dst[d], g[j].ports[p].port,
						g[j].ports[p].proto) == t;
			active += hit;
		}
		duration_format(t->max_duration, dur, sizeof(dur));
		o = json_pack("{s:o, s:i, s:s, s:s, s:I, s:o, s:i}", "address", prefix_json(&t->addr),
			"port", t->port, "protocol", port_proto_name(t->protos), "max_duration", dur,
			"max_duration_seconds", (json_int_t)t->max_duration, "allowed_sources",
			sources_json(&pp), "active_grants", active);
		if (o && t->dnat) {
			snprintf(range, sizeof(range), "%u-%u", (unsigned)t->dnat_lo,
				(unsigned)t->dnat_hi);
			if (json_object_set_new(o, "dnat", json_pack("{s:s, s:o}",
				"listen_port_range", range, "address", t->dnat_address[0] ?
				json_string(t->dnat_address) : json_null()))) {
				json_decref(o);
				o = NULL;
			}
		}
		if (!o || json_array_append_new(a, o)) {
			json_decref(a);
			return NULL;
		}
	}
	return a;
}

json_t *status_restart_pending(const struct enforce *e)
{
	const char *names = enforce_restart_pending(e);
	json_t *a = json_array();
	size_t n;

	while (a && *names) {
		n = strcspn(names, " ");
		if (json_array_append_new(a, json_stringn(names, n))) {
			json_decref(a);
			return NULL;
		}
		names += n + (names[n] == ' ');
	}
	return a;
}

/*
 * Text jitd wrote itself (an error, a finding), cut to its buffer where a UTF-8 character may
 * have been split: as valid JSON, else as ASCII with '?' for every byte above 0x7f (as the
 * audit trail writes it). json_pack would fail on it, and with it every status.
 */
static json_t *text_json(const char *s)
{
	char buf[1024];

	return json_string(proto_text(s, buf, sizeof(buf)));
}

static json_t *agent_json(const struct enforce *e, bool conntrack)
{
	const struct store_damage *d = enforce_state_damage(e);
	const char *err = enforce_last_error(e), *refused;
	int64_t started = enforce_started(e), refused_at;
	json_t *config;

	refused = enforce_reload_refused(e, &refused_at);
	/* A path need not be UTF-8 (jitd -c): as text_json writes it, rather than no status. */
	config = json_string(enforce_config_path(e));
	if (!config)
		config = text_json(enforce_config_path(e));
	return json_pack("{s:s, s:o, s:I, s:o, s:o, s:o, s:o, s:o, s:b, s:o}", "version",
		JITD_VERSION, "started_at", time_json(started), "uptime",
		(json_int_t)enforce_uptime(e), "config", config, "config_loaded_at",
		time_json(enforce_config_loaded_at(e)),
		"reload_refused", refused ? json_pack("{s:o, s:o}", "at", time_json(refused_at),
			"error", text_json(refused)) : json_null(),
		"last_error", *err ? text_json(err) : json_null(),
		"state_damage", d->count ? json_pack("{s:I, s:o, s:o}", "count",
			(json_int_t)d->count, "last_at", time_json(d->at), "last",
			text_json(d->last)) : json_null(),
		"conntrack", conntrack, "restart_pending", status_restart_pending(e));
}

static bool near(int64_t a, int64_t b)
{
	return a - b <= SYNC_TOLERANCE_MS && b - a <= SYNC_TOLERANCE_MS;
}

/* Whether an element of the model from at on with the same fields expires about at exp_ms. */
static bool twin_near(const struct kview *kv, size_t at, int64_t exp_ms)
{
	for (size_t x = at; x < kv->nm && same_fields(&kv->model[x], &kv->model[at]); x++)
		if (near(kv->model[x].exp_ms, exp_ms))
			return true;
	return false;
}

/*
 * Whether what jitd believes is what the kernel enforces: every element either side holds,
 * except those expiring this instant, is in the other with about the same expiry. A kernel
 * element refers to the first of its twins in the model (kview_add), or is a copy of one the
 * model lacks. Both sides are in ruleset_elem_cmp's order (kview_sort, enforce_model), so one
 * walk down the model meets each element's twins; a binary search per element, both ways,
 * was a fifth of a status at 100,000 grants.
 */
static bool kernel_in_sync(const struct kview *kv)
{
	const int64_t soon = kv->now_ms + SYNC_TOLERANCE_MS;
	size_t i;

	if (!kv->present || kv->foreign)
		return false;
	for (i = 0; i < kv->n; i++) {
		const struct kref *r = &kv->r[i];

		if (r->exp_ms > soon && (r->at & KREF_EXTRA || !twin_near(kv, r->at, r->exp_ms)))
			return false;
	}
	i = 0;
	for (size_t j = 0; j < kv->nm; j++) {
		const struct ruleset_elem *m = &kv->model[j];
		bool held = m->exp_ms <= soon;

		while (i < kv->n && ruleset_elem_cmp(kv_elem(kv, i), m) < 0)
			i++;
		for (size_t x = i; !held && x < kv->n && !ruleset_elem_cmp(kv_elem(kv, x), m); x++)
			held = kv_elem(kv, x)->to_port == m->to_port &&
				near(kv->r[x].exp_ms, m->exp_ms);
		if (!held)
			return false;
	}
	return true;
}

/*
 * The document is written, not built: at 100,000 grants a jansson tree of it is hundreds of MB
 * of small objects and most of the time a status takes. Small members are still jansson
 * values; the two long arrays (kernel elements, grants) are written one entry at a time, each
 * entry a small jansson object dumped and freed at once. Member names are literals that need
 * no escaping.
 */
struct writer {
	struct printer pr;
	bool first;	/* no comma before the next member or entry */
};

static void w_raw(struct writer *w, const char *text)
{
	pr_raw(&w->pr, text);
}

/* An array entry, or with name a member; v stays the caller's. */
static void w_dump(struct writer *w, const char *name, json_t *v)
{
	if (!w->first)
		w_raw(w, ",");
	w->first = false;
	if (name)
		pr_printf(&w->pr, "\"%s\":", name);
	if (!v)
		w->pr.err = w->pr.err ? w->pr.err : -ENOMEM;
	else if (json_dump_callback(v, pr_buf, &w->pr, JSON_COMPACT | JSON_ENCODE_ANY))
		w->pr.err = w->pr.err ? w->pr.err : -ENOMEM;
}

/* The same, v consumed. */
static void w_value(struct writer *w, const char *name, json_t *v)
{
	w_dump(w, name, v);
	json_decref(v);
}

/* An address range, quoted; null if it cannot be formatted (it always can, read back). */
static void put_range(struct printer *pr, int family, const uint8_t *lo, const uint8_t *hi)
{
	char r[RANGE_STRLEN];

	pr_plain(pr, range_format(family, lo, hi, r, sizeof(r)) ? NULL : r);
}

/*
 * One kernel element, printed rather than built: every value is a name from a fixed set, a
 * number or a formatted address, none of which JSON escapes, and a jansson object per element
 * was most of what a status cost at 100,000 grants. The output is what jansson's JSON_COMPACT
 * would print (tests compare it with the grants' view).
 */
static void w_kernel_elem(struct writer *w, const struct ruleset_elem *k, int64_t exp_ms,
	int64_t now_ms)
{
	struct printer *pr = &w->pr;

	if (!w->first)
		w_raw(w, ",");
	w->first = false;
	pr_raw(pr, "{\"set\":");
	pr_plain(pr, ruleset_elem_set(k));
	pr_raw(pr, k->family == AF_INET ? ",\"family\":\"ipv4\",\"source\":" :
					   ",\"family\":\"ipv6\",\"source\":");
	put_range(pr, k->family, k->lo, k->hi);
	pr_raw(pr, k->ipproto == IPPROTO_TCP ? ",\"protocol\":\"tcp\",\"port\":" :
						",\"protocol\":\"udp\",\"port\":");
	pr_int(pr, true, k->port);
	pr_raw(pr, ",\"expires_in_ms\":");
	pr_int(pr, true, exp_ms > now_ms ? exp_ms - now_ms : 0);
	if (k->kind == RULESET_FORWARD) {
		pr_raw(pr, ",\"destination\":");
		put_range(pr, k->family, k->dlo, k->dhi);
	} else if (k->kind == RULESET_DNAT) {
		char a[INET_ADDRSTRLEN];

		inet_ntop(AF_INET, k->dlo, a, sizeof(a));
		pr_printf(pr, ",\"to\":\"%s:%u\"", a, (unsigned)k->to_port);
	}
	pr_raw(pr, "}");
}

/* Opens a member object or array (open is "{" or "["); the next value is its first. */
static void w_open(struct writer *w, const char *name, const char *open)
{
	if (!w->first)
		w_raw(w, ",");
	pr_printf(&w->pr, "\"%s\":%s", name, open);
	w->first = true;
}

static void w_close(struct writer *w, const char *close)
{
	w_raw(w, close);
	w->first = false;
}

/*
 * Test builds only: when $JITD_TEST_STATUS_OOM_FILE holds N, the next status runs out of memory
 * once N * 64 KiB of it have been written out (to the client's socket, or to the HTTP spool;
 * 0: before any has), as a real shortage would midway, so that a test reaches what the control
 * socket and the HTTP endpoint do then. The file acts once. -1: never (every other build).
 */
static long long oom_after(void)
{
#ifdef JITD_TEST_HOOKS
	long long n = testhook_number("JITD_TEST_STATUS_OOM_FILE", true, -1);

	return n < 0 ? -1 : n * 64 * 1024;
#else
	return -1;
#endif
}

static void oom_check(struct writer *w, long long after)
{
	if (after >= 0 && (long long)w->pr.drained >= after && !w->pr.err)
		w->pr.err = -ENOMEM;
}

int status_write(struct enforce *e, struct evbuffer *out, int fd, size_t *sent)
{
	const long long oom = oom_after();
	const struct config *cfg = enforce_config(e);
	struct conntrack *ct = enforce_conntrack(e);
	struct writer w = { .first = true };
	char *block = malloc(STATUS_BLOCK);
	const struct ruleset_elem *model;
	const struct grant *g;
	int64_t *left = NULL, now;
	long *flows = NULL;
	size_t n, nm;
	struct kview kv = { 0 };

	if (!block)
		return -ENOMEM;
	printer_init(&w.pr, out, block, STATUS_BLOCK);
	printer_drain_to(&w.pr, fd, STATUS_DRAIN_WAIT_MS);
	enforce_expire(e);
	g = enforce_grants(e, &n);
	model = enforce_model(e, &nm);
	/*
	 * One conntrack dump for all grants; without it the counts are unknown, not zero. It comes
	 * first: its index of the grants' sources (4 MB at 100,000, sorting included) is gone
	 * before the kernel's view is read.
	 */
	if (ct && n && (flows = calloc(n, sizeof(*flows))) &&
		conntrack_count_many(ct, g, n, cfg->always_allow, cfg->n_always_allow, flows)) {
		free(flows);
		flows = NULL;
	}
	kview_read(enforce_nft(e), cfg, model, nm, &kv);
	kview_sort(&kv);
	now = kv.now_ms / 1000;
	/*
	 * Each grant's time in the kernel is looked up now, so that the kernel's view can go once
	 * its elements are printed: the grants after them are most of the document, and what the
	 * client has not read yet piles up while they are written.
	 */
	if (n && !(left = malloc(n * sizeof(*left)))) {
		w.pr.err = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		left[i] = grant_kernel_left(&kv, cfg, &g[i]);
	w_raw(&w, "{");
	w_value(&w, "version", json_integer(STATUS_VERSION));
	w_value(&w, "host_id", json_string(cfg->host_id));
	w_value(&w, "mode", json_string(mode_name(cfg->mode)));
	w_value(&w, "time", time_json(now));
	w_value(&w, "agent", agent_json(e, ct != NULL));
	w_value(&w, "endpoint", enforce_endpoint_json(e, now));
	w_value(&w, "deny_action", json_string(cfg->deny_action == DENY_REJECT ? "reject" :
									     "drop"));
	w_value(&w, "always_allow", always_json(cfg));
	w_value(&w, "ports", ports_json(cfg, enforce_activity(e), g, n, now));
	w_value(&w, "targets", targets_json(cfg, g, n));
	w_open(&w, "kernel", "{");
	w_value(&w, "table", json_string("inet " RULESET_TABLE));
	w_value(&w, "present", json_boolean(kv.present));
	w_value(&w, "owned", json_boolean(enforce_table_owned(e)));
	/* Nor while a change failed or the model lost the kernel, until jitd has read it again. */
	w_value(&w, "in_sync", json_boolean(kernel_in_sync(&kv) && !enforce_in_doubt(e)));
	w_value(&w, "foreign_elements", json_integer((json_int_t)kv.foreign));
	w_value(&w, "denied_packets", json_integer((json_int_t)kv.denied));
	w_open(&w, "elements", "[");
	for (size_t i = 0; !w.pr.err && i < kv.n; i++) {
		oom_check(&w, oom);
		w_kernel_elem(&w, kv_elem(&kv, i), kv.r[i].exp_ms, kv.now_ms);
	}
	w_close(&w, "]}");
	kview_free(&kv);
	w_open(&w, "grants", "[");
	for (size_t i = 0; !w.pr.err && i < n; i++) {
		oom_check(&w, oom);
		if (i)
			w_raw(&w, ",");
		print_grant(&w.pr, cfg, &g[i], kv.now_ms,
			enforce_grant_end_ms(e, i, kv.now_ms, kv.boot_ms),
			left[i], flows ? flows[i] : -1, false);
	}
	w_close(&w, "]}");
	pr_flush(&w.pr);
	if (sent)
		*sent = w.pr.drained;
out:
	free(left);
	free(flows);
	kview_free(&kv);
	free(block);
	return w.pr.err;
}

/* Below this a reply's garbage is small enough to stay for reuse. */
#define RELEASE_AFTER_BYTES (1024 * 1024)

void status_release_memory(size_t len)
{
	if (len >= RELEASE_AFTER_BYTES)
		(void)malloc_trim(0);
}
