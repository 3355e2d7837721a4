/*
 * The model of the kernel's elements and the changes to it: what the grants want of each set
 * (desired), the plan that takes the kernel there (elements to delete and add), its commit in
 * one transaction, and the model following what the kernel took.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "agent/dnat.h"
#include "agent/enforce_impl.h"
#include "agent/metrics.h"
#include "agent/nft.h"
#include "agent/ranges.h"
#include "agent/ruleset.h"
#include "agent/testhook.h"
#include "common/array.h"
#include "common/clock.h"
#include "common/log.h"
#include "common/port.h"
#include "common/prefix.h"

/*
 * A kernel element re-read after a restart carries its remaining time, not the grant's exact
 * expiry; within this tolerance it is the same element and is left alone.
 */
#define EXP_TOLERANCE_MS 1500

static int elems_push(struct elems *v, const struct ruleset_elem *e)
{
	struct ruleset_elem *nv = array_reserve(v->v, &v->cap, v->n + 1, sizeof(*nv), 64);

	if (!nv)
		return -ENOMEM;
	v->v = nv;
	v->v[v->n++] = *e;
	return 0;
}

static int raws_push(struct raws *r, const struct ruleset_raw *x)
{
	struct ruleset_raw *nv = array_reserve(r->v, &r->cap, r->n + 1, sizeof(*nv), 8);

	if (!nv)
		return -ENOMEM;
	r->v = nv;
	r->v[r->n++] = *x;
	return 0;
}

void elems_free(struct elems *v)
{
	free(v->v);
	memset(v, 0, sizeof(*v));
}

/* Sorts v as the model is, unless it already is (a plan's elements nearly always are). */
static void elems_sort(struct elems *v)
{
	for (size_t i = 1; i < v->n; i++) {
		if (ruleset_elem_cmp(&v->v[i - 1], &v->v[i]) > 0) {
			qsort(v->v, v->n, sizeof(*v->v), ruleset_elem_cmp);
			return;
		}
	}
}

/*
 * The model stays sorted by group, then address: a new grant's neighbours, and the elements
 * covering a grant, are then found by binary search instead of a walk over every element.
 */
static void model_sort(struct enforce *e)
{
	elems_sort(&e->model);
}

/* Index of the first model element not ordered before key. */
size_t model_lower(const struct enforce *e, const struct ruleset_elem *key)
{
	return ruleset_elem_lower(e->model.v, e->model.n, key);
}

static bool in_group(const struct ruleset_elem *e, const struct group *g)
{
	return e->kind == g->kind && e->family == g->family && e->ipproto == g->ipproto &&
		e->port == g->port;
}

static struct group group_of(const struct ruleset_elem *e)
{
	struct group g;

	memset(&g, 0, sizeof(g)); /* compared with memcmp: padding too */
	g.family = e->family;
	g.kind = e->kind;
	g.ipproto = e->ipproto;
	g.port = e->port;
	return g;
}

/* A host or forward grant naming g's (protocol, port); *port_idx is which of its ports. */
static bool grant_in_group(const struct grant *gr, const struct group *g, size_t *port_idx)
{
	if ((gr->n_dst > 0) != (g->kind == RULESET_FORWARD))
		return false;
	for (size_t i = 0; i < gr->n_ports; i++) {
		if (gr->ports[i].port == g->port &&
			port_proto_ipproto(gr->ports[i].proto) == g->ipproto) {
			*port_idx = i;
			return true;
		}
	}
	return false;
}

/*
 * Host elements of one address sort by address; two grants from the same address are one
 * element that lasts as long as the longer of them.
 */
static int cmp_span_lo(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	int c = memcmp(x->lo, y->lo, 16);

	return c ? c : (x->exp_ms > y->exp_ms) - (x->exp_ms < y->exp_ms);
}

/* Sorts v and keeps one span per address, the one lasting longest; returns how many. */
static size_t one_per_address(struct span *v, size_t n)
{
	size_t k = 0;

	qsort(v, n, sizeof(*v), cmp_span_lo);
	for (size_t i = 0; i < n; i++) {
		/* Sorted by expiry within an address: the last of a run is the longest. */
		if (k > 0 && !memcmp(v[k - 1].lo, v[i].lo, 16))
			k--;
		v[k++] = v[i];
	}
	return k;
}

/*
 * What the kernel must hold for one group, sorted by address (ruleset_elem_cmp_addrs). A host
 * group's are ranges of one kind, family, protocol and port, kept as spans: 40 bytes each
 * against an element's 88, and a restore plans 100,000 of them. The others (gateway grants,
 * few) are elements.
 */
struct wants {
	struct span *spans;
	struct elems elems;
	size_t n;
};

static void wants_free(struct wants *w)
{
	free(w->spans);
	elems_free(&w->elems);
}

/* The element group g wants j-th. */
static void want_at(const struct wants *w, const struct group *g, size_t j,
	struct ruleset_elem *re)
{
	size_t alen = g->family == AF_INET ? 4 : 16;

	if (!w->spans) {
		*re = w->elems.v[j];
		return;
	}
	memset(re, 0, sizeof(*re));
	re->kind = g->kind;
	re->family = g->family;
	re->ipproto = g->ipproto;
	re->port = g->port;
	re->exp_ms = w->spans[j].exp_ms;
	memcpy(re->lo, w->spans[j].lo, alen);
	memcpy(re->hi, w->spans[j].hi, alen);
}

/*
 * A host group, from every live grant: its sources of one address (RULESET_HOST_ADDR) or its
 * wider ones as disjoint ranges (RULESET_HOST), sorted.
 */
static int desired_host(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct wants *out)
{
	size_t alen = g->family == AF_INET ? 4 : 16, n = 0, nout = 0, cap = 0, pi;
	/* Once per plan, not per grant: this loop runs over every grant on each submit. */
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	struct span *in = NULL, *res = NULL;
	int ret = 0;

	for (size_t i = 0; i < e->n_grants; i++)
		if (grant_in_group(&e->grants[i], g, &pi))
			cap += e->grants[i].n_src;
	in = calloc(cap ? cap : 1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	for (size_t i = 0; i < e->n_grants; i++) {
		const struct grant *gr = &e->grants[i];

		int64_t end = grant_end_ms(e, i, now_ms, boot);

		if (!grant_in_group(gr, g, &pi) || end <= now_ms)
			continue;
		for (size_t s = 0; s < gr->n_src; s++) {
			if (gr->src[s].family != g->family ||
				ruleset_host_kind(&gr->src[s]) != g->kind)
				continue;
			prefix_range(&gr->src[s], in[n].lo, in[n].hi);
			in[n++].exp_ms = end;
		}
	}
	if (g->kind == RULESET_HOST_ADDR) {
		nout = one_per_address(in, n);
		res = in;
		in = NULL;
	} else {
		ret = ranges_disjoint(in, n, alen, &res, &nout);
	}
	free(in);
	out->spans = res;
	out->n = nout;
	return ret;
}

/*
 * A forward group: every live grant's sources x destinations of g's family, as disjoint boxes
 * (the kernel refuses overlapping elements in one set, in any dimension).
 */
static int desired_forward(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct elems *out)
{
	size_t alen = g->family == AF_INET ? 4 : 16, n = 0, nout = 0, cap = 0, pi;
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	struct box *in = NULL, *res = NULL;
	int ret;

	for (size_t i = 0; i < e->n_grants; i++)
		if (grant_in_group(&e->grants[i], g, &pi))
			cap += e->grants[i].n_src * e->grants[i].n_dst;
	if (!(in = calloc(cap ? cap : 1, sizeof(*in))))
		return -ENOMEM;
	for (size_t i = 0; i < e->n_grants; i++) {
		const struct grant *gr = &e->grants[i];
		int64_t end = grant_end_ms(e, i, now_ms, boot);

		if (!grant_in_group(gr, g, &pi) || end <= now_ms)
			continue;
		for (size_t d = 0; d < gr->n_dst; d++) {
			if (gr->dst[d].family != g->family)
				continue;
			for (size_t s = 0; s < gr->n_src; s++) {
				if (gr->src[s].family != g->family)
					continue;
				prefix_range(&gr->src[s], in[n].lo, in[n].hi);
				prefix_range(&gr->dst[d], in[n].dlo, in[n].dhi);
				in[n++].exp_ms = end;
			}
		}
	}
	ret = ranges_disjoint2(in, n, alen, &res, &nout);
	for (size_t i = 0; ret == 0 && i < nout; i++) {
		struct ruleset_elem re = { .kind = RULESET_FORWARD, .family = g->family,
			.ipproto = g->ipproto, .port = g->port, .exp_ms = res[i].exp_ms };

		memcpy(re.lo, res[i].lo, alen);
		memcpy(re.hi, res[i].hi, alen);
		memcpy(re.dlo, res[i].dlo, alen);
		memcpy(re.dhi, res[i].dhi, alen);
		ret = elems_push(out, &re);
	}
	free(res);
	free(in);
	return ret;
}

/*
 * A dnat group is one gateway port, so one grant's: its IPv4 sources (made disjoint: they may
 * nest) mapped to the pair's machine and port.
 */
static int desired_dnat(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct elems *out)
{
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	struct dnat_pair pairs[DNAT_MAX_PAIRS];
	int ret = 0;

	for (size_t i = 0; ret == 0 && i < e->n_grants; i++) {
		const struct grant *gr = &e->grants[i];
		int64_t end = grant_end_ms(e, i, now_ms, boot);
		struct span in[GRANT_MAX_SOURCES], *res = NULL;
		size_t n = 0, nout = 0, k;

		for (k = 0; k < gr->n_dnat_ports && gr->dnat_ports[k] != g->port; k++)
			;
		if (k == gr->n_dnat_ports || end <= now_ms)
			continue;
		if (!dnat_granted(e->cfg, gr, pairs) ||
			port_proto_ipproto(gr->ports[pairs[k].port_idx].proto) != g->ipproto)
			continue;
		for (size_t s = 0; s < gr->n_src; s++) {
			if (gr->src[s].family != AF_INET)
				continue;
			prefix_range(&gr->src[s], in[n].lo, in[n].hi);
			in[n++].exp_ms = end;
		}
		ret = ranges_disjoint(in, n, 4, &res, &nout);
		for (size_t j = 0; ret == 0 && j < nout; j++) {
			struct ruleset_elem re = { .kind = RULESET_DNAT, .family = AF_INET,
				.ipproto = g->ipproto, .port = g->port,
				.to_port = gr->ports[pairs[k].port_idx].port, .exp_ms = end };

			memcpy(re.lo, res[j].lo, 4);
			memcpy(re.hi, res[j].hi, 4);
			memcpy(re.dlo, gr->dst[pairs[k].dst_idx].addr, 4);
			memcpy(re.dhi, re.dlo, 4);
			ret = elems_push(out, &re);
		}
		free(res);
	}
	return ret;
}

/* What the kernel must hold for group g, in out (zeroed; wants_free frees it either way). */
static int desired(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct wants *out)
{
	int ret;

	memset(out, 0, sizeof(*out));
	if (g->kind != RULESET_FORWARD && g->kind != RULESET_DNAT)
		return desired_host(e, g, now_ms, out);
	ret = g->kind == RULESET_FORWARD ? desired_forward(e, g, now_ms, &out->elems) :
					   desired_dnat(e, g, now_ms, &out->elems);
	out->n = out->elems.n;
	if (out->n)
		qsort(out->elems.v, out->n, sizeof(*out->elems.v), ruleset_elem_cmp_addrs);
	return ret;
}

static bool same_elem(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	int64_t d = a->exp_ms - b->exp_ms;

	return !memcmp(a->lo, b->lo, 16) && !memcmp(a->hi, b->hi, 16) &&
		!memcmp(a->dlo, b->dlo, 16) && !memcmp(a->dhi, b->dhi, 16) &&
		a->to_port == b->to_port && d <= EXP_TOLERANCE_MS && d >= -EXP_TOLERANCE_MS;
}

/* Whether a and b (one group) share an address: their source ranges overlap. */
static bool overlap(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	size_t alen = a->family == AF_INET ? 4 : 16;

	return memcmp(a->hi, b->lo, alen) >= 0 && memcmp(b->hi, a->lo, alen) >= 0;
}

void plan_free(struct plan *p)
{
	elems_free(&p->del);
	elems_free(&p->add);
}

/* addr (alen bytes, big-endian) plus one; the caller knows it is not the last address. */
void addr_next(uint8_t *addr, size_t alen)
{
	for (size_t i = alen; i-- > 0 && !++addr[i];)
		;
}

/*
 * Whether a host element plan_group deletes before the j-th wanted one (in address order) ends
 * access to part of its range: the wanted elements do not cover all of it. Both sides are
 * disjoint ranges in one dimension: the wanted ones from j - 1 on, up to the first that reaches
 * its end, are the only ones that can (each is looked at for at most two deleted elements, the
 * ones its ends fall in). Gateway elements (boxes, mappings) are not counted.
 */
static bool host_removal(const struct wants *w, const struct group *g, size_t j,
	const struct ruleset_elem *have)
{
	size_t alen = g->family == AF_INET ? 4 : 16;
	struct ruleset_elem want;
	uint8_t from[16];

	if (g->kind != RULESET_HOST && g->kind != RULESET_HOST_ADDR)
		return false;
	/* from: the first address of have's range not yet found covered. */
	memcpy(from, have->lo, alen);
	for (size_t k = j ? j - 1 : 0; k < w->n; k++) {
		want_at(w, g, k, &want);
		if (memcmp(want.hi, from, alen) < 0)
			continue;
		if (memcmp(want.lo, from, alen) > 0)
			return true;
		if (memcmp(want.hi, have->hi, alen) >= 0)
			return false;
		/* want ends inside have's range, so one past it is an address: no carry out. */
		memcpy(from, want.hi, alen);
		addr_next(from, alen);
	}
	return true;
}

/*
 * Diffs one group: model elements that match a wanted one stay untouched, the rest are deleted,
 * wanted ones not yet in the kernel are added. An element whose time is up is neither kept
 * nor deleted: the kernel is removing it on its own. Both sides are disjoint ranges, so one
 * walk over both sorted by address finds every match: this runs on every commit, over every
 * element of the group. The model is sorted by group, then address (model_sort): the group's
 * elements are one run of it, walked in place rather than copied. No new model is built beside
 * the old one: model_apply brings the old one along after the commit.
 */
static int plan_group(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct plan *p)
{
	const struct ruleset_elem key = { .kind = g->kind, .family = g->family,
		.ipproto = g->ipproto, .port = g->port };
	const struct ruleset_elem *have = e->model.v;
	size_t i = model_lower(e, &key), nh, j = 0;
	struct ruleset_elem want;
	struct wants w;
	int ret;

	if ((ret = desired(e, g, now_ms, &w)))
		goto out;
	for (nh = i; nh < e->model.n && in_group(&have[nh], g); nh++)
		;
	while (ret == 0 && (i < nh || j < w.n)) {
		int c;

		if (j < w.n)
			want_at(&w, g, j, &want);
		c = i == nh ? 1 : j == w.n ? -1 : ruleset_elem_cmp_addrs(&have[i], &want);
		if (i < nh && have[i].exp_ms <= now_ms) {
			i++;
		} else if (c < 0) {
			p->removed += host_removal(&w, g, j, &have[i]);
			ret = elems_push(&p->del, &have[i++]);
		} else if (c > 0) {
			ret = elems_push(&p->add, &want);
			j++;
		} else if (same_elem(&have[i], &want)) {
			i++;
			j++;
		} else {
			/* Same range, another timeout: replaced in the same transaction. */
			if (!(ret = elems_push(&p->del, &have[i++])))
				ret = elems_push(&p->add, &want);
			j++;
		}
	}
out:
	wants_free(&w);
	return ret;
}

/* Elements outside the groups being changed carry over as they are: only groups are planned. */
int plan_build(const struct enforce *e, const struct group *groups, size_t n_groups,
	int64_t now_ms, struct plan *p)
{
	int ret = 0;

	memset(p, 0, sizeof(*p));
	for (size_t g = 0; ret == 0 && g < n_groups; g++)
		ret = plan_group(e, &groups[g], now_ms, p);
	if (ret)
		plan_free(p);
	return ret;
}

struct reading {
	struct enforce *e;
	struct elems elems;
};

static int read_cb(void *arg, const char *set, const struct ruleset_elem *re,
	const struct ruleset_raw *raw)
{
	struct reading *r = arg;

	if (re)
		return elems_push(&r->elems, re);
	/*
	 * Something jitd cannot have written (a range of ports, an address in another address's
	 * set, no timeout) stays out of the model, which could not describe it, and is removed by
	 * its exact keys: nothing in jitd's sets opens what no grant stands for.
	 */
	if (raw)
		return raws_push(&r->e->strays, raw);
	log_warn("kernel: %s holds an element jitd cannot read", set);
	return 0;
}

static void read_restart(void *arg)
{
	struct reading *r = arg;

	r->elems.n = 0;
	r->e->strays.n = 0;
}

/* Re-reads what the kernel really holds: the model after a refused commit or at start. */
int resync(struct enforce *e)
{
	struct reading r = { .e = e };
	/* One moment for the model's ends and the step baseline (a step during the read). */
	int64_t now = enforce_now_ms(), boot = clock_ms(CLOCK_BOOTTIME);
	int ret;

	e->strays.n = 0;
	ret = ruleset_read_grants(e->nft, e->cfg, now, read_cb, read_restart, &r);
	if (ret) {
		elems_free(&r.elems);
		return ret;
	}
	elems_free(&e->model);
	e->model = r.elems;
	model_sort(e);
	e->model_lost = false;
	/* The model's ends are the kernel's, by the wall clock then: steps count from there. */
	e->wall_gap_ms = now - boot;
	return 0;
}

/*
 * Every transaction of the enforcer: a refused one leaves it unsure of the kernel, and one
 * the kernel did not answer leaves it not knowing whether the batch was applied (unanswered).
 */
int commit_batch(struct enforce *e, struct nft_batch *b, char *kerr)
{
	int ret = nft_batch_commit(b, kerr);

	e->unanswered = ret && nft_batch_unanswered(b);
	if (ret)
		e->unsure = true;
	else if (nft_batch_count(b))
		e->commits++;	/* an empty batch sends nothing: no generation */
	return ret;
}

#ifdef JITD_TEST_HOOKS
/*
 * Test builds: $JITD_TEST_STRAY_RACE_FILE holding 1 takes the first of the strays about to be
 * removed out in a transaction of its own, as if it had run out since it was read.
 */
static void test_hook_stray_race(struct enforce *e)
{
	char kerr[NFT_ERRLEN] = "";
	struct nft_batch *b = NULL;

	if (test_hook_read("JITD_TEST_STRAY_RACE_FILE") <= 0)
		return;
	if (nft_batch_new(e->nft, &b) || ruleset_raw_delete(b, e->strays.v, 1) ||
		nft_batch_commit(b, kerr))
		log_warn("test hook: cannot remove a stray first: %s", kerr);
	nft_batch_free(b);
}
#else
static void test_hook_stray_race(struct enforce *e)
{
	(void)e;
}
#endif

/*
 * Removes the elements the last resync found that jitd cannot have written: *removed of them.
 * One of them that runs out before the batch fails it whole (ENOENT), which would keep the
 * others, a catch-all among them, until the next full check: the sets are read again and the
 * rest removed, as sync_groups retries its own race with expiry.
 */
int drop_strays(struct enforce *e, size_t *removed, char *err, size_t errlen)
{
	int ret = 0;

	*removed = 0;
	for (int attempt = 0; attempt < COMMIT_ATTEMPTS && e->strays.n; attempt++) {
		char kerr[NFT_ERRLEN] = "";
		struct nft_batch *b = NULL;

		if (!(ret = nft_batch_new(e->nft, &b)) &&
			!(ret = ruleset_raw_delete(b, e->strays.v, e->strays.n))) {
			test_hook_stray_race(e);
			ret = commit_batch(e, b, kerr);
		}
		nft_batch_free(b);
		if (ret == 0) {
			*removed += e->strays.n;
			e->strays.n = 0;
			break;
		}
		snprintf(err, errlen, "%s", kerr[0] ? kerr : strerror(-ret));
		if (ret != -ENOENT)
			break;
		log_info("kernel: removing elements jitd did not write: %s; re-reading the sets",
			err);
		/* What the failed reading left of the strays is not all of them: a full check. */
		if (resync(e)) {
			e->model_lost = e->unsure = true;
			break;
		}
		if (!e->strays.n)
			ret = 0; /* the one that ran out was the last */
	}
	return ret;
}

static int commit_plan(struct enforce *e, const struct plan *p, int64_t now_ms, char *err,
	size_t errlen)
{
	char kerr[NFT_ERRLEN] = "";
	struct nft_batch *b = NULL;
	int64_t t0;
	int ret;

	if (!p->del.n && !p->add.n)
		return 0;
	if ((ret = nft_batch_new(e->nft, &b)))
		goto out;
	if ((ret = ruleset_elems(b, p->del.v, p->del.n, p->add.v, p->add.n, now_ms)))
		goto out;
	t0 = clock_mono_us();
	ret = commit_batch(e, b, kerr);
	metrics_observe(&e->metrics.kernel, clock_mono_us() - t0);
	if (!ret && e->repairing)
		e->metrics.drift_repairs++;
out:
	if (ret)
		snprintf(err, errlen, "%s", kerr[0] ? kerr : strerror(-ret));
	nft_batch_free(b);
	return ret;
}

/*
 * A change that failed, wherever: a withdrawal that never reached the kernel (out of memory
 * for its plan or batch) leaves elements no grant stands for. The kernel is read in full
 * within seconds (watch.c), not at the next periodic check, which may be skipped.
 */
int change_failed(struct enforce *e, int ret)
{
	e->unsure = e->doubt = true;
	return ret;
}

/*
 * Adds sorted elements to the sorted model, keeping it sorted. 0 or -ENOMEM. In place, from
 * the back: a group commit at 100,000 grants must not copy the whole model (and with large
 * arrays mapped, fault in a fresh copy of it); only elements sorting after the first added
 * one move. The larger array takes in the smaller, so add may come back holding the model's
 * old array (its owner frees it): a restore into an empty table adds 100,000 elements to
 * none. Equal ones (an expired element and a live one) may end up in either order: readers
 * walk the whole run of them.
 */
static int model_merge(struct enforce *e, struct elems *add)
{
	struct elems *m = &e->model, *big = m->n < add->n ? add : m, t;
	size_t i, j, k = m->n + add->n;
	struct ruleset_elem *nv;

	/* Room first: a failure leaves the model as it was, short of add only. */
	if (!(nv = array_reserve(big->v, &big->cap, k, sizeof(*nv), 64)))
		return -ENOMEM;
	big->v = nv;
	if (big == add) {
		t = *m;
		*m = *add;
		*add = t;
	}
	i = m->n;
	j = add->n;
	while (j > 0)
		m->v[--k] = i > 0 && ruleset_elem_cmp(&m->v[i - 1], &add->v[j - 1]) > 0 ?
			m->v[--i] : add->v[--j];
	m->n += add->n;
	return 0;
}

/*
 * Drops from the model every element of del (sorted as the model is; each one a copy of a model
 * element) and every element whose time is up, in one walk, keeping the order.
 */
void model_compact(struct enforce *e, const struct elems *del, int64_t now_ms)
{
	struct elems *m = &e->model;
	size_t kept = 0, d = 0;

	for (size_t i = 0; i < m->n; i++) {
		const struct ruleset_elem *x = &m->v[i];
		bool gone = x->exp_ms <= now_ms;

		while (d < del->n && ruleset_elem_cmp(&del->v[d], x) < 0)
			d++;
		for (size_t k = d; !gone && k < del->n && !ruleset_elem_cmp(&del->v[k], x); k++)
			gone = del->v[k].exp_ms == x->exp_ms && del->v[k].to_port == x->to_port;
		if (gone)
			continue;
		/* Nothing moves before the first one gone: most ticks, none is. */
		if (kept != i)
			m->v[kept] = *x;
		kept++;
	}
	m->n = kept;
}

/*
 * Brings the model along with p once the kernel has taken it, in place: p's deletions and
 * whatever ran out by now_ms leave, p's additions are merged in. The plan kept no second model:
 * a restore at 100,000 grants held two (8.8 MB each) at its peak. 0 or -ENOMEM, which leaves
 * the model short of p's additions.
 */
int model_apply(struct enforce *e, struct plan *p, int64_t now_ms)
{
	elems_sort(&p->del);
	elems_sort(&p->add);
	model_compact(e, &p->del, now_ms);
	return model_merge(e, &p->add);
}

/*
 * After a commit the kernel took: fix_failed (the model could not follow it) re-reads the
 * kernel, and failing that too leaves the next check to read it in full (unsure) rather than
 * plan against a model that misses what the kernel holds.
 */
void model_follow(struct enforce *e, int fix_failed)
{
	if (fix_failed && resync(e))
		e->unsure = e->model_lost = e->doubt = true;
}

/* Brings the given groups of the kernel in line with the live grants, in one transaction. */
int sync_groups_removing(struct enforce *e, const struct group *groups, size_t n_groups,
	size_t *removed, char *err, size_t errlen)
{
	int ret = -EAGAIN, reread;

	for (int attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
		int64_t now = enforce_now_ms();
		struct plan p;

		if ((ret = plan_build(e, groups, n_groups, now, &p))) {
			snprintf(err, errlen, "%s", strerror(-ret));
			return change_failed(e, ret);
		}
		ret = commit_plan(e, &p, now, err, errlen);
		if (ret == 0)
			model_follow(e, model_apply(e, &p, now));
		if (ret == 0 && removed)
			*removed = p.removed;
		plan_free(&p);
		if (ret == 0)
			return 0;
		/* Only a race with the kernel's own expiry is worth another look. */
		if (ret != -ENOENT && ret != -EEXIST)
			return change_failed(e, ret);
		log_debug("kernel: %s; re-reading the allow sets and retrying", err);
		if ((reread = resync(e))) {
			/* The reason to give up is the read's; the refusal it followed says why. */
			char was[200];

			snprintf(was, sizeof(was), "%s", err);
			snprintf(err, errlen, "cannot re-read the allow sets (%s) after: %s",
				strerror(-reread), was);
			return change_failed(e, ret);
		}
	}
	return change_failed(e, ret);
}

int sync_groups(struct enforce *e, const struct group *groups, size_t n_groups, char *err,
	size_t errlen)
{
	return sync_groups_removing(e, groups, n_groups, NULL, err, errlen);
}

/*
 * Whether a and b (same group) might not stay two elements of their own in desired(): they
 * overlap, or they adjoin. desired() merges adjoining ranges whose grants end together, and an
 * expiry read back from the kernel (or computed a millisecond apart) cannot tell that here:
 * adjoining ranges take the full plan, whatever their exp_ms.
 */
static bool touch(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	size_t alen = a->family == AF_INET ? 4 : 16;
	uint8_t next[16];
	size_t i;

	if (overlap(a, b))
		return true;
	if (a->kind == RULESET_HOST_ADDR) /* one element per address, never merged */
		return false;
	/* Disjoint: a before b or b before a, with a gap or without one. */
	for (int round = 0; round < 2; round++) {
		const struct ruleset_elem *x = round ? b : a, *y = round ? a : b;

		memcpy(next, x->hi, alen);
		for (i = alen; i-- > 0;)
			if (++next[i])
				break;
		if (i != (size_t)-1 && !memcmp(next, y->lo, alen))
			return true;
	}
	return false;
}

/* Host grant g's element for its source s and port q, as desired() makes it when alone. */
struct ruleset_elem host_elem(const struct grant *g, size_t s, size_t q, int64_t end)
{
	struct ruleset_elem re = {
		.kind = (uint8_t)ruleset_host_kind(&g->src[s]),
		.family = g->src[s].family,
		.ipproto = port_proto_ipproto(g->ports[q].proto),
		.port = g->ports[q].port, .exp_ms = end };

	prefix_range(&g->src[s], re.lo, re.hi);
	return re;
}

/* Sorts v; whether two of its elements of one group touch (then they are not one each). */
static bool sort_touching(struct elems *v)
{
	elems_sort(v);
	for (size_t i = 1; i < v->n; i++) {
		struct group g = group_of(&v->v[i]);

		if (in_group(&v->v[i - 1], &g) && touch(&v->v[i - 1], &v->v[i]))
			return true;
	}
	return false;
}

/*
 * The common case, without recomputing every grant: the grants from index first on are new,
 * and none of their ranges overlaps or adjoins an element already there or one another. Then
 * the disjoint ranges desired() would compute are exactly the old elements plus one element per
 * new range, and only those need adding. Returns 0 with p->add filled (p->model and p->del
 * untouched), 1 when this does not apply (the caller plans in full), or -errno.
 */
static int plan_added(const struct enforce *e, size_t first, int64_t now_ms, struct plan *p)
{
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	struct elems add = { 0 };
	int ret = 0;

	for (size_t i = first; ret == 0 && i < e->n_grants; i++) {
		const struct grant *g = &e->grants[i];
		int64_t end = grant_end_ms(e, i, now_ms, boot);

		/* Gateway grants are few and two-dimensional: they take the full plan. */
		if (g->n_dst) {
			ret = 1;
			goto out;
		}
		for (size_t s = 0; ret == 0 && s < g->n_src; s++) {
			for (size_t q = 0; ret == 0 && q < g->n_ports; q++) {
				struct ruleset_elem re = host_elem(g, s, q, end);

				ret = elems_push(&add, &re);
			}
		}
	}
	if (ret || !add.n)
		goto out;
	if (sort_touching(&add)) {
		ret = 1;
		goto out;
	}
	for (size_t k = 0; k < add.n; k++) {
		const struct ruleset_elem *a = &add.v[k], *m;
		struct group g = group_of(a);
		size_t pos = model_lower(e, a), i;

		/*
		 * Live elements of a group are disjoint, so only the last live one before a and the
		 * first live one from a on can touch it; expired ones may linger until the next tick.
		 */
		for (i = pos; i-- > 0 && in_group(&e->model.v[i], &g) &&
			e->model.v[i].exp_ms <= now_ms;)
			;
		if (i != (size_t)-1 && (m = &e->model.v[i])->exp_ms > now_ms && in_group(m, &g) &&
			touch(a, m)) {
			ret = 1;
			goto out;
		}
		for (i = pos; i < e->model.n && e->model.v[i].exp_ms <= now_ms; i++)
			;
		if (i < e->model.n && in_group(m = &e->model.v[i], &g) && touch(a, m)) {
			ret = 1;
			goto out;
		}
	}
	p->add = add;
	add = (struct elems){ 0 };
out:
	elems_free(&add);
	return ret;
}

/*
 * Commits a cheap plan (planned 0) and brings the model along with fix_model; the full plan for
 * groups when the cheap one does not apply (planned 1) or raced the kernel's own expiry.
 */
static int sync_cheap(struct enforce *e, int planned, struct plan *p, int64_t now,
	int (*fix_model)(struct enforce *, struct plan *), const struct group *groups,
	size_t n_groups, char *err, size_t errlen)
{
	int ret = planned;

	if (ret == 0) {
		ret = commit_plan(e, p, now, err, errlen);
		if (ret == 0)
			model_follow(e, fix_model(e, p));
	}
	plan_free(p);
	/* 1: not cheap; ENOENT, EEXIST: a race with the kernel's own expiry. */
	if (ret < 0 && ret != -ENOENT && ret != -EEXIST) {
		/* A plan that could not be made (out of memory) said nothing yet. */
		if (planned < 0)
			snprintf(err, errlen, "%s", strerror(-ret));
		return change_failed(e, ret);
	}
	if (ret == 0)
		return 0;
	return sync_groups(e, groups, n_groups, err, errlen);
}

static int model_add(struct enforce *e, struct plan *p)
{
	return model_merge(e, &p->add);
}

/* Brings the kernel in line after grants [first, n_grants) were added: cheaply if it can. */
int sync_added(struct enforce *e, size_t first, const struct group *groups,
	size_t n_groups, char *err, size_t errlen)
{
	int64_t now = enforce_now_ms();
	struct plan p = { 0 };

	return sync_cheap(e, plan_added(e, first, now, &p), &p, now, model_add, groups, n_groups,
		err, errlen);
}

/*
 * The live model element equal to want (its range, and its time to within the tolerance), or
 * NULL. Expired ones may linger beside it until the next tick.
 */
static const struct ruleset_elem *model_find(const struct enforce *e,
	const struct ruleset_elem *want, int64_t now_ms)
{
	for (size_t i = model_lower(e, want);
		i < e->model.n && !ruleset_elem_cmp(&e->model.v[i], want); i++)
		if (e->model.v[i].exp_ms > now_ms && same_elem(&e->model.v[i], want))
			return &e->model.v[i];
	return NULL;
}

/* Whether a live grant other than the revoked one has a range in re's group that touches re. */
static bool touched_by_grant(const struct enforce *e, const struct ruleset_elem *re,
	int64_t now_ms, int64_t boot)
{
	uint32_t want = re->kind == RULESET_HOST_ADDR ? addr_hash(re->family, re->lo) : 0;
	struct ruleset_elem other = *re;
	struct group g = group_of(re);
	size_t pi;

	for (size_t i = 0; i < e->n_grants; i++) {
		const struct grant *gr = &e->grants[i];
		uint32_t has = e->keys[i].addr_hash;

		/*
		 * A grant of one address (most of them) is decided by its key, without reading the
		 * grant: another address, or an address where re is a range (another set).
		 */
		if (has && has != want)
			continue;
		for (size_t s = 0; !gr->n_dst && s < gr->n_src; s++) {
			const struct prefix *x = &gr->src[s];

			if (x->family != re->family || ruleset_host_kind(x) != re->kind)
				continue;
			/* Its own time or not, adjoining ones are taken to merge: the full plan decides. */
			prefix_range(x, other.lo, other.hi);
			if (touch(re, &other) && grant_in_group(gr, &g, &pi) &&
				grant_end_ms(e, i, now_ms, boot) > now_ms)
				return true;
		}
	}
	return false;
}

/*
 * The common revocation, without recomputing every grant: g (ending at deadline on the boot
 * clock) has just left the grants, it is a host grant, and none of its ranges touches a range of
 * another live grant of its group or another of its own. Then each of its ranges was one model
 * element of its own, and what desired() would compute now is the model without them: only
 * those need deleting. Returns 0 with p->del filled, 1 when this does not apply (the caller
 * plans in full), or -errno.
 */
static int plan_removed(const struct enforce *e, const struct grant *g, int64_t deadline,
	const struct group *groups, size_t n_groups, int64_t now_ms, struct plan *p)
{
	int64_t boot = clock_ms(CLOCK_BOOTTIME), end = now_ms + (deadline - boot);
	struct elems del = { 0 };
	int ret = 0;

	for (size_t k = 0; k < n_groups; k++)
		if (groups[k].kind != RULESET_HOST && groups[k].kind != RULESET_HOST_ADDR)
			return 1;
	for (size_t s = 0; ret == 0 && s < g->n_src; s++) {
		for (size_t q = 0; ret == 0 && q < g->n_ports; q++) {
			struct ruleset_elem re = host_elem(g, s, q, end);
			const struct ruleset_elem *m;

			if (!(m = model_find(e, &re, now_ms)) ||
				touched_by_grant(e, &re, now_ms, boot)) {
				ret = 1;
				goto out;
			}
			ret = elems_push(&del, m);
		}
	}
	if (ret || !del.n) {
		ret = ret ? ret : 1;
		goto out;
	}
	if (sort_touching(&del)) {
		ret = 1;
		goto out;
	}
	p->del = del;
	del = (struct elems){ 0 };
out:
	elems_free(&del);
	return ret;
}

/* Takes p's deletions (found in the model as they are: a grant's few) out of the sorted model. */
static int model_drop(struct enforce *e, struct plan *p)
{
	struct elems *m = &e->model;

	for (size_t j = 0; j < p->del.n; j++) {
		const struct ruleset_elem *d = &p->del.v[j];
		size_t i = model_lower(e, d);

		while (i < m->n && !ruleset_elem_cmp(&m->v[i], d) && m->v[i].exp_ms != d->exp_ms)
			i++;
		if (i == m->n || ruleset_elem_cmp(&m->v[i], d))
			return -ENOENT;
		memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
		m->n--;
	}
	return 0;
}

/* Brings the kernel in line after g (see plan_removed) was revoked: cheaply if it can. */
int sync_removed(struct enforce *e, const struct grant *g, int64_t deadline,
	const struct group *groups, size_t n_groups, char *err, size_t errlen)
{
	int64_t now = enforce_now_ms();
	struct plan p = { 0 };

	return sync_cheap(e, plan_removed(e, g, deadline, groups, n_groups, now, &p), &p, now,
		model_drop, groups, n_groups, err, errlen);
}

static int add_group(struct group **v, size_t *n, const struct group *g)
{
	struct group *nv;

	for (size_t i = 0; i < *n; i++)
		if (!memcmp(&(*v)[i], g, sizeof(*g)))
			return 0;
	nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	nv[(*n)++] = *g;
	*v = nv;
	return 0;
}

/* The groups a grant has elements in: host or forward ones, and its gateway ports'. */
int grant_groups(const struct enforce *e, const struct grant *gr, struct group **v,
	size_t *n)
{
	struct dnat_pair pairs[DNAT_MAX_PAIRS];
	struct group g;
	int ret = 0;

	memset(&g, 0, sizeof(g)); /* compared with memcmp: padding too */
	for (size_t p = 0; ret == 0 && p < gr->n_ports; p++) {
		for (size_t s = 0; ret == 0 && s < gr->n_src; s++) {
			g.kind = (uint8_t)(gr->n_dst ? RULESET_FORWARD :
				ruleset_host_kind(&gr->src[s]));
			g.family = gr->src[s].family;
			g.ipproto = port_proto_ipproto(gr->ports[p].proto);
			g.port = gr->ports[p].port;
			ret = add_group(v, n, &g);
		}
	}
	if (ret || !dnat_granted(e->cfg, gr, pairs))
		return ret;
	g.kind = RULESET_DNAT;
	g.family = AF_INET;
	for (size_t k = 0; ret == 0 && k < gr->n_dnat_ports; k++) {
		g.ipproto = port_proto_ipproto(gr->ports[pairs[k].port_idx].proto);
		g.port = gr->dnat_ports[k];
		ret = add_group(v, n, &g);
	}
	return ret;
}

/* Every (family, protocol, port) that a grant covers or the kernel holds elements for. */
int all_groups(const struct enforce *e, struct group **groups, size_t *n_groups)
{
	int ret = 0;

	for (size_t i = 0; ret == 0 && i < e->n_grants; i++)
		ret = grant_groups(e, &e->grants[i], groups, n_groups);
	for (size_t i = 0; ret == 0 && i < e->model.n; i++) {
		struct group g = group_of(&e->model.v[i]);

		ret = add_group(groups, n_groups, &g);
	}
	return ret;
}
