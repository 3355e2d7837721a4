#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libnftnl/set.h>

#include "agent/enforce.h"
#include "agent/nft.h"
#include "agent/ranges.h"
#include "agent/ruleset.h"
#include "agent/store.h"
#include "common/config.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/log.h"
#include "common/policy.h"

/*
 * A kernel element re-read after a restart carries its remaining time, not the grant's exact
 * expiry; within this tolerance it is the same element and is left alone.
 */
#define EXP_TOLERANCE_MS 1500
/* A grant with less time left than this would be gone before the kernel saw it. */
#define MIN_TIME_LEFT_MS 1000
/* Commits that race an element's own expiry (ENOENT/EEXIST) are retried after a resync. */
#define COMMIT_ATTEMPTS 4

struct group {
	int family;
	uint8_t ipproto;
	uint16_t port;
};

struct elems {
	struct ruleset_elem *v;
	size_t n, cap;
};

struct enforce {
	const struct config *cfg;
	struct nft *nft;
	struct store *store;
	struct grant *grants;
	size_t n_grants, cap_grants;
	struct elems model;
};

int64_t enforce_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int elems_push(struct elems *v, const struct ruleset_elem *e)
{
	if (v->n == v->cap) {
		size_t cap = v->cap ? 2 * v->cap : 64;
		struct ruleset_elem *nv = realloc(v->v, cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		v->v = nv;
		v->cap = cap;
	}
	v->v[v->n++] = *e;
	return 0;
}

static void elems_free(struct elems *v)
{
	free(v->v);
	memset(v, 0, sizeof(*v));
}

static bool in_group(const struct ruleset_elem *e, const struct group *g)
{
	return e->family == g->family && e->ipproto == g->ipproto && e->port == g->port;
}

static bool grant_in_group(const struct grant *gr, const struct group *g, size_t *port_idx)
{
	for (size_t i = 0; i < gr->n_ports; i++) {
		if (gr->ports[i].port == g->port &&
			port_proto_ipproto(gr->ports[i].proto) == g->ipproto) {
			*port_idx = i;
			return true;
		}
	}
	return false;
}

/* The disjoint ranges the kernel must hold for one group, from every live grant. */
static int desired(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct elems *out)
{
	size_t alen = g->family == AF_INET ? 4 : 16, n = 0, nout = 0, cap = 0, pi;
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

		if (!grant_in_group(gr, g, &pi) || gr->exp * 1000 <= now_ms)
			continue;
		for (size_t s = 0; s < gr->n_src; s++) {
			if (gr->src[s].family != g->family)
				continue;
			prefix_range(&gr->src[s], in[n].lo, in[n].hi);
			in[n++].exp_ms = gr->exp * 1000;
		}
	}
	ret = ranges_disjoint(in, n, alen, &res, &nout);
	for (size_t i = 0; ret == 0 && i < nout; i++) {
		struct ruleset_elem re = { .family = g->family, .ipproto = g->ipproto,
			.port = g->port, .exp_ms = res[i].exp_ms };

		memcpy(re.lo, res[i].lo, alen);
		memcpy(re.hi, res[i].hi, alen);
		ret = elems_push(out, &re);
	}
	free(res);
	free(in);
	return ret;
}

static bool same_elem(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	int64_t d = a->exp_ms - b->exp_ms;

	return !memcmp(a->lo, b->lo, 16) && !memcmp(a->hi, b->hi, 16) &&
		d <= EXP_TOLERANCE_MS && d >= -EXP_TOLERANCE_MS;
}

struct plan {
	struct elems del, add, model;
};

static void plan_free(struct plan *p)
{
	elems_free(&p->del);
	elems_free(&p->add);
	elems_free(&p->model);
}

/*
 * Diffs one group: model elements that match a wanted one stay untouched, the rest are deleted,
 * wanted ones not yet in the kernel are added. An element whose time is up is neither kept
 * nor deleted: the kernel is removing it on its own.
 */
static int plan_group(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct plan *p)
{
	struct elems want = { 0 };
	bool *used = NULL;
	int ret;

	if ((ret = desired(e, g, now_ms, &want)))
		goto out;
	used = calloc(want.n + 1, sizeof(*used));
	if (!used) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; ret == 0 && i < e->model.n; i++) {
		const struct ruleset_elem *m = &e->model.v[i];
		size_t j;

		if (!in_group(m, g) || m->exp_ms <= now_ms)
			continue;
		for (j = 0; j < want.n && (used[j] || !same_elem(m, &want.v[j])); j++)
			;
		if (j < want.n) {
			used[j] = true;
			ret = elems_push(&p->model, m);
		} else {
			ret = elems_push(&p->del, m);
		}
	}
	for (size_t j = 0; ret == 0 && j < want.n; j++)
		if (!used[j] && !(ret = elems_push(&p->add, &want.v[j])))
			ret = elems_push(&p->model, &want.v[j]);
out:
	free(used);
	elems_free(&want);
	return ret;
}

static int plan_build(const struct enforce *e, const struct group *groups, size_t n_groups,
	int64_t now_ms, struct plan *p)
{
	int ret = 0;

	memset(p, 0, sizeof(*p));
	/* Elements outside the groups being changed carry over as they are. */
	for (size_t i = 0; ret == 0 && i < e->model.n; i++) {
		bool touched = false;

		for (size_t g = 0; g < n_groups && !touched; g++)
			touched = in_group(&e->model.v[i], &groups[g]);
		if (!touched && e->model.v[i].exp_ms > now_ms)
			ret = elems_push(&p->model, &e->model.v[i]);
	}
	for (size_t g = 0; ret == 0 && g < n_groups; g++)
		ret = plan_group(e, &groups[g], now_ms, p);
	if (ret)
		plan_free(p);
	return ret;
}

static int read_set(struct enforce *e, const char *name, int family, int64_t now_ms,
	struct elems *out)
{
	struct nftnl_set_elems_iter *it;
	struct nftnl_set_elem *el;
	struct nftnl_set *s = NULL;
	int ret;

	if ((ret = nft_set_dump(e->nft, RULESET_TABLE, name, &s)))
		return ret;
	it = nftnl_set_elems_iter_create(s);
	if (!it) {
		nftnl_set_free(s);
		return -ENOMEM;
	}
	while (ret == 0 && (el = nftnl_set_elems_iter_next(it))) {
		struct ruleset_elem re;

		/* Something jitd cannot have written is still ours to remove: keep it in the model. */
		if (ruleset_elem_parse(el, family, now_ms, &re))
			log_warn("kernel: %s holds an element jitd cannot decode", name);
		else
			ret = elems_push(out, &re);
	}
	nftnl_set_elems_iter_destroy(it);
	nftnl_set_free(s);
	return ret;
}

/* Re-reads what the kernel really holds: the model after a refused commit or at start. */
static int resync(struct enforce *e)
{
	struct elems fresh = { 0 };
	int64_t now = enforce_now_ms();
	int ret;

	if ((ret = read_set(e, RULESET_SET_ALLOW4, AF_INET, now, &fresh)) ||
		(ret = read_set(e, RULESET_SET_ALLOW6, AF_INET6, now, &fresh))) {
		elems_free(&fresh);
		return ret;
	}
	elems_free(&e->model);
	e->model = fresh;
	return 0;
}

static int commit_plan(struct enforce *e, const struct plan *p, int64_t now_ms, char *err,
	size_t errlen)
{
	char kerr[NFT_ERRLEN] = "";
	struct nft_batch *b = NULL;
	int ret;

	if (!p->del.n && !p->add.n)
		return 0;
	if ((ret = nft_batch_new(e->nft, &b)))
		goto out;
	if ((ret = ruleset_elems(b, p->del.v, p->del.n, p->add.v, p->add.n, now_ms)))
		goto out;
	ret = nft_batch_commit(b, kerr);
out:
	if (ret)
		snprintf(err, errlen, "%s", kerr[0] ? kerr : strerror(-ret));
	nft_batch_free(b);
	return ret;
}

/* Brings the given groups of the kernel in line with the live grants, in one transaction. */
static int sync_groups(struct enforce *e, const struct group *groups, size_t n_groups, char *err,
	size_t errlen)
{
	int ret = -EAGAIN;

	for (int attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
		int64_t now = enforce_now_ms();
		struct plan p;

		if ((ret = plan_build(e, groups, n_groups, now, &p)))
			return ret;
		ret = commit_plan(e, &p, now, err, errlen);
		if (ret == 0) {
			elems_free(&e->model);
			e->model = p.model;
			p.model = (struct elems){ 0 };
		}
		plan_free(&p);
		/* Only a race with the kernel's own expiry is worth another look. */
		if (ret != -ENOENT && ret != -EEXIST)
			return ret;
		log_debug("kernel: %s; re-reading the allow sets and retrying", err);
		if (resync(e))
			return ret;
	}
	return ret;
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

static int grant_groups(const struct grant *gr, struct group **v, size_t *n)
{
	int ret = 0;

	for (size_t p = 0; ret == 0 && p < gr->n_ports; p++) {
		for (size_t s = 0; ret == 0 && s < gr->n_src; s++) {
			struct group g;

			memset(&g, 0, sizeof(g)); /* compared with memcmp: padding too */
			g.family = gr->src[s].family;
			g.ipproto = port_proto_ipproto(gr->ports[p].proto);
			g.port = gr->ports[p].port;
			ret = add_group(v, n, &g);
		}
	}
	return ret;
}

static int grants_push(struct enforce *e, struct grant *g)
{
	if (e->n_grants == e->cap_grants) {
		size_t cap = e->cap_grants ? 2 * e->cap_grants : 16;
		struct grant *nv = realloc(e->grants, cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		e->grants = nv;
		e->cap_grants = cap;
	}
	e->grants[e->n_grants++] = *g;
	memset(g, 0, sizeof(*g));
	return 0;
}

static void grants_remove(struct enforce *e, size_t i)
{
	grant_clear(&e->grants[i]);
	e->grants[i] = e->grants[--e->n_grants];
}

static const struct grant *find_grant(const struct enforce *e, const char *jti)
{
	for (size_t i = 0; i < e->n_grants; i++)
		if (!strcmp(e->grants[i].jti, jti))
			return &e->grants[i];
	return NULL;
}

/* Signature, claims, policy and freshness: everything but the kernel. */
static int check(const struct enforce *e, const char *token, size_t len, int64_t now_ms,
	struct grant *g, struct jit_error *err)
{
	const struct grant_verify_ctx ctx = {
		.keys_dir = e->cfg->keys_dir,
		.host_id = e->cfg->host_id,
		.now = now_ms / 1000,
		.clock_skew = e->cfg->clock_skew,
	};
	int ret;

	if ((ret = grant_verify(token, len, &ctx, g, err)))
		return ret;
	if ((ret = policy_check(e->cfg, g, now_ms / 1000, err)))
		goto fail;
	/* Skew lets a just-expired grant verify; it must still not open anything. */
	if (g->exp * 1000 - now_ms < MIN_TIME_LEFT_MS) {
		ret = jit_fail(err, JIT_ERR_EXPIRED, "grant '%s' has no time left", g->jti);
		goto fail;
	}
	if (find_grant(e, g->jti)) {
		ret = jit_fail(err, JIT_ERR_DUPLICATE, "grant '%s' is already active", g->jti);
		goto fail;
	}
	return 0;
fail:
	grant_clear(g);
	return ret;
}

static void log_applied(const struct grant *g, const char *peer)
{
	char src[256] = "", ports[256] = "";
	size_t off = 0;

	for (size_t i = 0; i < g->n_src && off < sizeof(src) - PREFIX_STRLEN; i++) {
		if (i)
			src[off++] = ',';
		prefix_format(&g->src[i], src + off, sizeof(src) - off);
		off += strlen(src + off);
	}
	off = 0;
	for (size_t i = 0; i < g->n_ports && off < sizeof(ports) - 16; i++) {
		if (i)
			ports[off++] = ',';
		port_spec_format(&g->ports[i], ports + off, sizeof(ports) - off);
		off += strlen(ports + off);
	}
	log_info("grant applied: jti=%s kid=%s sub=%s src=%s ports=%s exp=%lld peer=%s", g->jti,
		g->kid, g->sub, src, ports, (long long)g->exp, peer);
}

int enforce_submit(struct enforce *e, const char *token, size_t len, const char *peer,
	const struct grant **applied, struct jit_error *err)
{
	char kerr[NFT_ERRLEN];
	struct group *groups = NULL;
	size_t n_groups = 0;
	struct grant g = { 0 };
	int64_t now = enforce_now_ms();
	int ret;

	*applied = NULL;
	enforce_expire(e);
	if ((ret = check(e, token, len, now, &g, err)))
		goto refused;
	if ((ret = grant_groups(&g, &groups, &n_groups)) || (ret = store_put(e->store, g.jti, token, len))) {
		ret = jit_fail(err, JIT_ERR_INTERNAL, "cannot record grant '%s': %s", g.jti,
			strerror(-ret));
		goto refused;
	}
	if ((ret = grants_push(e, &g))) {
		(void)store_del(e->store, g.jti);
		ret = jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
		goto refused;
	}
	ret = sync_groups(e, groups, n_groups, kerr, sizeof(kerr));
	if (ret) {
		struct grant *last = &e->grants[e->n_grants - 1];

		(void)store_del(e->store, last->jti);
		grants_remove(e, e->n_grants - 1);
		ret = jit_fail(err, JIT_ERR_KERNEL, "the kernel refused the change: %s", kerr);
		goto refused;
	}
	*applied = &e->grants[e->n_grants - 1];
	log_applied(*applied, peer);
	ret = 0;
	goto out;
refused:
	log_warn("grant refused: %s: %s (peer=%s)", jit_err_name(ret), err->msg, peer);
	grant_clear(&g);
out:
	free(groups);
	return ret;
}

void enforce_expire(struct enforce *e)
{
	int64_t now = enforce_now_ms();
	size_t kept = 0;

	for (size_t i = e->n_grants; i-- > 0;) {
		if (e->grants[i].exp * 1000 > now)
			continue;
		log_info("grant expired: jti=%s sub=%s", e->grants[i].jti, e->grants[i].sub);
		(void)store_del(e->store, e->grants[i].jti);
		grants_remove(e, i);
	}
	for (size_t i = 0; i < e->model.n; i++)
		if (e->model.v[i].exp_ms > now)
			e->model.v[kept++] = e->model.v[i];
	e->model.n = kept;
}

static int restore_cb(const char *token, size_t len, void *arg)
{
	struct enforce *e = arg;
	struct jit_error err = { 0 };
	struct grant g = { 0 };

	if (check(e, token, len, enforce_now_ms(), &g, &err)) {
		log_info("state: dropping recorded grant: %s: %s", jit_err_name(err.code), err.msg);
		return STORE_REMOVE;
	}
	if (grants_push(e, &g)) {
		grant_clear(&g);
		return -ENOMEM;
	}
	return STORE_KEEP;
}

static int build_table(struct enforce *e, char *err, size_t errlen)
{
	char kerr[NFT_ERRLEN] = "";
	struct nft_batch *b = NULL;
	int ret;

	if ((ret = nft_batch_new(e->nft, &b)) || (ret = ruleset_build(b, e->cfg)))
		goto out;
	ret = nft_batch_commit(b, kerr);
out:
	if (ret)
		snprintf(err, errlen, "%s", kerr[0] ? kerr : strerror(-ret));
	nft_batch_free(b);
	return ret;
}

/* Restores recorded grants and removes kernel elements that no grant stands behind. */
static int restore(struct enforce *e, char *err, size_t errlen)
{
	struct group *groups = NULL;
	size_t n_groups = 0, stray = e->model.n;
	int ret;

	if ((ret = store_foreach(e->store, restore_cb, e)))
		goto out;
	for (size_t i = 0; ret == 0 && i < e->n_grants; i++)
		ret = grant_groups(&e->grants[i], &groups, &n_groups);
	for (size_t i = 0; ret == 0 && i < e->model.n; i++) {
		struct group g;

		memset(&g, 0, sizeof(g));
		g.family = e->model.v[i].family;
		g.ipproto = e->model.v[i].ipproto;
		g.port = e->model.v[i].port;
		ret = add_group(&groups, &n_groups, &g);
	}
	if (ret == 0)
		ret = sync_groups(e, groups, n_groups, err, errlen);
	if (ret == 0)
		log_info("restored %zu grant(s); kernel held %zu element(s), now %zu", e->n_grants,
			stray, e->model.n);
out:
	free(groups);
	return ret;
}

int enforce_open(const struct config *cfg, struct nft *nft, struct store *store,
	struct enforce **out, char *err, size_t errlen)
{
	struct enforce *e;
	int ret;

	*out = NULL;
	snprintf(err, errlen, "%s", "");
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->cfg = cfg;
	e->nft = nft;
	e->store = store;
	if ((ret = build_table(e, err, errlen)))
		goto fail;
	if ((ret = resync(e))) {
		snprintf(err, errlen, "reading the allow sets: %s", strerror(-ret));
		goto fail;
	}
	if ((ret = restore(e, err, errlen)))
		goto fail;
	*out = e;
	return 0;
fail:
	enforce_close(&e);
	return ret;
}

void enforce_close(struct enforce **e)
{
	if (!e || !*e)
		return;
	for (size_t i = 0; i < (*e)->n_grants; i++)
		grant_clear(&(*e)->grants[i]);
	free((*e)->grants);
	elems_free(&(*e)->model);
	free(*e);
	*e = NULL;
}

const struct config *enforce_config(const struct enforce *e)
{
	return e->cfg;
}

const struct grant *enforce_grants(const struct enforce *e, size_t *n)
{
	*n = e->n_grants;
	return e->grants;
}

const struct ruleset_elem *enforce_model(const struct enforce *e, size_t *n)
{
	*n = e->model.n;
	return e->model.v;
}

struct nft *enforce_nft(const struct enforce *e)
{
	return e->nft;
}

int enforce_revoke_token(struct enforce *e, const char *token, size_t len, const char *peer,
	struct revoke_result *res, struct jit_error *err)
{
	return jit_fail(err, JIT_ERR_INTERNAL, "revocation is not implemented yet");
}

int enforce_revoke_id(struct enforce *e, const char *grant_id, bool terminate, const char *peer,
	struct revoke_result *res, struct jit_error *err)
{
	return jit_fail(err, JIT_ERR_INTERNAL, "revocation is not implemented yet");
}
