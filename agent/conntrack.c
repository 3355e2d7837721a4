#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_conntrack_tcp.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netfilter/nfnetlink_conntrack.h>
#include <netinet/in.h>
#include <netlink/addr.h>
#include <netlink/errno.h>
#include <netlink/handlers.h>
#include <netlink/netfilter/ct.h>
#include <netlink/netfilter/nfnl.h>
#include <netlink/netlink.h>
#include <netlink/socket.h>

#include "agent/conntrack.h"
#include "agent/localaddr.h"
#include "common/array.h"
#include "common/grant.h"
#include "common/port.h"
#include "common/prefix.h"

/*
 * A ctnetlink dump is no snapshot: a flow created or deleted meanwhile may be missed, which a
 * count can live with. NLM_F_DUMP_INTR is not set on them today; the bound is for a kernel that
 * does.
 */
#define DUMP_TRIES 3

struct conntrack {
	struct nl_sock *sk;
	/* A dump that failed half-way leaves messages on the socket: reconnect before the next. */
	bool stale;
};

/*
 * A grant's source that is one address, for the lookup of an entry's addresses: an IPv4 one
 * as IPv4-mapped IPv6, so that the index is 20 bytes a source (100,000 of them, and as much
 * again while qsort sorts them, were a status's peak). An IPv6 grant for a mapped address
 * shares its key, which only adds a candidate: entry_matches decides.
 */
struct host_src {
	uint8_t addr[16];
	uint32_t grant;
};

/* What one dump is looking for, and what it found. */
struct dump {
	const struct grant *grants;
	size_t n;
	long *counts;		/* counting: per grant, TCP only when ESTABLISHED */
	struct nfnl_ct **hits;	/* killing: one reference per entry of grants[0] */
	const struct grant **keep; /* killing: grants whose entries stay, n_keep of them */
	size_t n_keep;
	const struct prefix *always; /* clients whose entries are nobody's grant's, n_always */
	size_t n_always;
	size_t n_hits, cap;
	int err;		/* first failure inside the callback, as -errno */
	/*
	 * Which grants an entry can belong to, built at the first entry: the grants' one-address
	 * sources sorted, and the grants with a wider source, which every entry is held against.
	 * Trying every grant for every entry made a status at 100,000 grants 0.3-1.1 s slower
	 * with just the benchmark's 64 entries in the table; a busy host has thousands. Built
	 * when hosts is set, and kept across a retried dump.
	 */
	struct host_src *hosts;
	size_t n_hosts;
	size_t *wide, n_wide, wide_cap;
	size_t *cand, n_cand, cand_cap; /* one entry's candidates, grants[] indexes */
	/*
	 * What this namespace takes as its own (read with the index): a host grant's flows end
	 * there, a gateway grant's do not.
	 */
	struct localaddr local;
	bool local_read;
	bool any_local;		/* it could not be read: every address passes for either */
};

/* libnl returns negative NLE_* codes; jitd speaks -errno. */
static int nlerr(int err)
{
	switch (err < 0 ? -err : err) {
	case 0:
		return 0;
	case NLE_NOMEM:
		return -ENOMEM;
	case NLE_PERM:
		return -EPERM;
	case NLE_NOACCESS:
		return -EACCES;
	case NLE_OBJ_NOTFOUND:
		return -ENOENT;
	case NLE_OPNOTSUPP:
		return -EOPNOTSUPP;
	case NLE_AF_NOSUPPORT:
		return -EAFNOSUPPORT;
	case NLE_DUMP_INTR:
		return -EINTR;
	default:
		return -EIO;
	}
}

static void disconnect(struct conntrack *c)
{
	nl_socket_free(c->sk); /* closes the fd too; accepts NULL */
	c->sk = NULL;
}

static int connect_sock(struct conntrack *c)
{
	int ret = -ENOMEM;

	disconnect(c);
	c->stale = true;
	if (!(c->sk = nl_socket_alloc()))
		goto out;
	if ((ret = nlerr(nl_connect(c->sk, NETLINK_NETFILTER))))
		goto out;
	c->stale = false;
	ret = 0;
out:
	if (ret)
		disconnect(c);
	return ret;
}

static int ready(struct conntrack *c)
{
	return c->stale ? connect_sock(c) : 0;
}

/* A GET_STATS answered proves the module is there and we may talk to it, at no dump's cost. */
static int probe(struct conntrack *c)
{
	int ret = nfnl_send_simple(c->sk, NFNL_SUBSYS_CTNETLINK, IPCTNL_MSG_CT_GET_STATS, 0,
		AF_UNSPEC, 0);

	if (ret >= 0)
		ret = nl_wait_for_ack(c->sk);
	return nlerr(ret);
}

int conntrack_open(struct conntrack **out)
{
	struct conntrack *c = NULL;
	int ret = -ENOMEM;

	*out = NULL;
	if (!(c = calloc(1, sizeof(*c))))
		goto out;
	if ((ret = connect_sock(c)) || (ret = probe(c)))
		goto out;
	*out = c;
	c = NULL;
	ret = 0;
out:
	conntrack_close(&c);
	return ret;
}

void conntrack_close(struct conntrack **c)
{
	if (!c || !*c)
		return;
	disconnect(*c);
	free(*c);
	*c = NULL;
}

static bool port_match(const struct grant *g, uint8_t proto, uint16_t port)
{
	for (size_t i = 0; i < g->n_ports; i++)
		if (g->ports[i].port == port && port_proto_ipproto(g->ports[i].proto) == proto)
			return true;
	return false;
}

static bool src_match(const struct grant *g, const struct prefix *host)
{
	for (size_t i = 0; i < g->n_src; i++)
		if (prefix_contains(&g->src[i], host))
			return true;
	return false;
}

static bool dst_match(const struct grant *g, const struct prefix *host)
{
	for (size_t i = 0; i < g->n_dst; i++)
		if (prefix_contains(&g->dst[i], host))
			return true;
	return false;
}

/* Address dir's source as a host prefix; false for families grants cannot name. */
static bool tuple_source(const struct nfnl_ct *ct, int dir, struct prefix *host)
{
	struct nl_addr *a = nfnl_ct_get_src(ct, dir);
	unsigned len;

	if (!a)
		return false;
	len = nl_addr_get_len(a);
	host->family = nl_addr_get_family(a);
	if (!((host->family == AF_INET && len == 4) || (host->family == AF_INET6 && len == 16)))
		return false;
	memset(host->addr, 0, sizeof(host->addr));
	memcpy(host->addr, nl_addr_get_binary_addr(a), len);
	host->len = (uint8_t)(len * 8);
	return true;
}

/*
 * Unreadable, every address passes for local and for not alike: a cut takes too much rather
 * than too little.
 */
static void read_local(struct dump *d)
{
	d->local_read = true;
	d->any_local = localaddr_read(&d->local) != 0;
}

/*
 * Whether the flow's server end (host) is where g's flows end: here for a host grant (the
 * input chain), at one of its destinations and not here for a gateway grant (the forward
 * chain; a session to the gateway's own address in a target's prefix is a host grant's).
 */
static bool ends_at(const struct dump *d, const struct grant *g, const struct prefix *host)
{
	if (!g->n_dst)
		return d->any_local || localaddr_has(&d->local, host);
	return dst_match(g, host) && (d->any_local || !localaddr_has(&d->local, host));
}

/*
 * The remote end normally opened the flow: its address is the original source and the local
 * port the reply's source, i.e. after any DNAT, as jitd's input chain saw it. But once an
 * entry is deleted, conntrack (nf_conntrack_tcp_loose, the default) picks the flow up again
 * from whichever packet comes next; if the local server sends first, the new entry runs the
 * other way, and that flow is the grant's too. *client is the end that is g's source.
 */
static bool entry_matches(const struct dump *d, const struct grant *g, const struct nfnl_ct *ct,
	uint8_t proto, struct prefix *client)
{
	struct prefix host;

	for (int dir = 0; dir < 2; dir++) {
		/* dir 0: opened by the granted source; 1: picked up again the other way. */
		if (!port_match(g, proto, nfnl_ct_get_src_port(ct, !dir)) ||
			!tuple_source(ct, dir, client) || !src_match(g, client) ||
			!tuple_source(ct, !dir, &host))
			continue;
		/* The server end, after any DNAT: a forwarded flow is not a host grant's. */
		if (ends_at(d, g, &host))
			return true;
	}
	return false;
}

static int keep_hit(struct dump *d, struct nfnl_ct *ct)
{
	struct nfnl_ct **h = array_reserve(d->hits, &d->cap, d->n_hits + 1, sizeof(*h), 16);

	if (!h)
		return -ENOMEM;
	d->hits = h;
	nfnl_ct_get(ct);
	d->hits[d->n_hits++] = ct;
	return 0;
}

static int cmp_host(const void *a, const void *b)
{
	const struct host_src *x = a, *y = b;

	return memcmp(x->addr, y->addr, sizeof(x->addr));
}

static void host_key(const struct prefix *p, uint8_t key[16])
{
	if (p->family == AF_INET6) {
		memcpy(key, p->addr, 16);
		return;
	}
	memset(key, 0, 10);
	key[10] = key[11] = 0xff;
	memcpy(key + 12, p->addr, 4);
}

static int cmp_index(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* The dump's own: kept across a failed index and a retried dump, read once. */
static void local_free(struct dump *d)
{
	localaddr_free(&d->local);
	d->local_read = d->any_local = false;
}

static void index_free(struct dump *d)
{
	free(d->hosts);
	free(d->wide);
	free(d->cand);
	d->hosts = NULL;
	d->wide = d->cand = NULL;
	d->n_hosts = d->n_wide = d->wide_cap = d->n_cand = d->cand_cap = 0;
}

/* Room for n more in *v (n_v used of *cap); the arrays grow as needed, not to the worst case. */
static int reserve_idx(size_t **v, size_t n_v, size_t *cap, size_t n)
{
	size_t *nv = array_reserve(*v, cap, n_v + n, sizeof(*nv), 16);

	if (!nv)
		return -ENOMEM;
	*v = nv;
	return 0;
}

static int build_index(struct dump *d)
{
	size_t nh = 0;

	if (d->n > UINT32_MAX)
		return -EOVERFLOW;
	for (size_t i = 0; i < d->n; i++)
		for (size_t s = 0; s < d->grants[i].n_src; s++)
			nh += prefix_is_host(&d->grants[i].src[s]);
	if (!(d->hosts = calloc(nh + 1, sizeof(*d->hosts))))
		return -ENOMEM;
	for (size_t i = 0; i < d->n; i++) {
		bool wide = false;

		for (size_t s = 0; s < d->grants[i].n_src; s++) {
			const struct prefix *p = &d->grants[i].src[s];

			if (!prefix_is_host(p)) {
				wide = true;
				continue;
			}
			host_key(p, d->hosts[d->n_hosts].addr);
			d->hosts[d->n_hosts++].grant = (uint32_t)i;
		}
		if (wide) {
			if (reserve_idx(&d->wide, d->n_wide, &d->wide_cap, 1)) {
				index_free(d);
				return -ENOMEM;
			}
			d->wide[d->n_wide++] = i;
		}
	}
	qsort(d->hosts, d->n_hosts, sizeof(*d->hosts), cmp_host);
	return 0;
}

/* The grants with host as a one-address source, added to the entry's candidates. */
static int add_host_candidates(struct dump *d, const struct prefix *host)
{
	struct host_src key;
	size_t lo = 0, hi = d->n_hosts, end;

	host_key(host, key.addr);
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (cmp_host(&d->hosts[mid], &key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (end = lo; end < d->n_hosts && !cmp_host(&d->hosts[end], &key); end++)
		;
	if (reserve_idx(&d->cand, d->n_cand, &d->cand_cap, end - lo))
		return -ENOMEM;
	for (; lo < end; lo++)
		d->cand[d->n_cand++] = d->hosts[lo].grant;
	return 0;
}

/*
 * The grants ct can belong to, in grants[] order, each once: every grant a source of ct's
 * (either way round, see entry_matches) could match, a superset that entry_matches decides.
 */
static int candidates(struct dump *d, const struct nfnl_ct *ct)
{
	struct prefix host;
	size_t k = 0;

	d->n_cand = 0;
	/* Both of an entry's addresses may find the same sources (a flow over loopback). */
	for (int dir = 0; dir < 2; dir++)
		if (tuple_source(ct, dir, &host) && add_host_candidates(d, &host))
			return -ENOMEM;
	if (reserve_idx(&d->cand, d->n_cand, &d->cand_cap, d->n_wide))
		return -ENOMEM;
	for (size_t i = 0; i < d->n_wide; i++)
		d->cand[d->n_cand++] = d->wide[i];
	qsort(d->cand, d->n_cand, sizeof(*d->cand), cmp_index);
	for (size_t i = 0; i < d->n_cand; i++)
		if (!k || d->cand[k - 1] != d->cand[i])
			d->cand[k++] = d->cand[i];
	d->n_cand = k;
	return 0;
}

/*
 * Whether client is always let in: the always-allow rule comes before the grants' in both
 * chains, so its sessions are nobody's grant's, neither counted nor cut (a bastion's).
 */
static bool always_allowed(const struct dump *d, const struct prefix *client)
{
	for (size_t i = 0; i < d->n_always; i++)
		if (prefix_contains(&d->always[i], client))
			return true;
	return false;
}

/*
 * Whether ct came in through one of g's gateway ports (DNAT). No other grant holds that port:
 * once g's mapping is gone, the flow picked up again reaches the gateway itself, not the
 * machine behind it, whatever else lets its source reach that machine.
 */
static bool through_mapping(const struct grant *g, const struct nfnl_ct *ct)
{
	uint16_t port;

	if (!g->n_dnat_ports || !(nfnl_ct_get_status(ct) & IPS_DST_NAT))
		return false;
	port = nfnl_ct_get_dst_port(ct, 0);
	for (size_t i = 0; i < g->n_dnat_ports; i++)
		if (g->dnat_ports[i] == port)
			return true;
	return false;
}

/* Whether ct's flow, g's, is let in all the same, by another grant. */
static bool kept(const struct dump *d, const struct grant *g, const struct nfnl_ct *ct,
	uint8_t proto)
{
	struct prefix other;

	if (through_mapping(g, ct))
		return false;
	for (size_t i = 0; i < d->n_keep; i++)
		if (entry_matches(d, d->keep[i], ct, proto, &other))
			return true;
	return false;
}

static void match(struct dump *d, struct nfnl_ct *ct)
{
	uint8_t proto = nfnl_ct_get_proto(ct);
	struct prefix client;
	bool live;
	int ret;

	if (proto != IPPROTO_TCP && proto != IPPROTO_UDP)
		return;
	if (!d->local_read)
		read_local(d);
	if ((!d->hosts && (ret = build_index(d))) || (ret = candidates(d, ct))) {
		if (!d->err)
			d->err = ret;
		return;
	}
	live = proto == IPPROTO_UDP || (nfnl_ct_test_tcp_state(ct) &&
		nfnl_ct_get_tcp_state(ct) == TCP_CONNTRACK_ESTABLISHED);
	for (size_t c = 0; c < d->n_cand; c++) {
		size_t i = d->cand[c];

		/* Not an always-allowed client's, unless it came through the grant's mapping. */
		if (!entry_matches(d, &d->grants[i], ct, proto, &client) ||
			(always_allowed(d, &client) && !through_mapping(&d->grants[i], ct)))
			continue;
		if (d->counts) {
			d->counts[i] += live;
			continue;
		}
		if (kept(d, &d->grants[i], ct, proto))
			break;
		/* One reference per entry, whichever grant it belongs to. */
		if ((ret = keep_hit(d, ct)) && !d->err)
			d->err = ret;
		break;
	}
}

/* Never NL_STOP: the rest of the dump would be left on the socket for the next request. */
static int dump_valid_cb(struct nl_msg *msg, void *arg)
{
	struct dump *d = arg;
	struct nlmsghdr *nlh = nlmsg_hdr(msg);
	struct nfnl_ct *ct = NULL;
	int ret;

	if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_CTNETLINK)
		return NL_SKIP;
	if ((ret = nfnlmsg_ct_parse(nlh, &ct)) < 0) {
		if (!d->err)
			d->err = nlerr(ret);
		return NL_SKIP;
	}
	match(d, ct);
	nfnl_ct_put(ct);
	return NL_OK;
}

static void dump_reset(struct dump *d)
{
	for (size_t i = 0; i < d->n_hits; i++)
		nfnl_ct_put(d->hits[i]);
	d->n_hits = 0;
	if (d->counts)
		memset(d->counts, 0, d->n * sizeof(*d->counts));
	d->err = 0;
}

static int dump_once(struct conntrack *c, struct dump *d)
{
	struct nl_cb *cb = NULL;
	int ret;

	dump_reset(d);
	if ((ret = ready(c)))
		goto out;
	if (!(cb = nl_cb_alloc(NL_CB_DEFAULT))) {
		ret = -ENOMEM;
		goto out;
	}
	nl_cb_set(cb, NL_CB_VALID, NL_CB_CUSTOM, dump_valid_cb, d);
	c->stale = true;
	/* Returns the bytes sent, not 0, on success (a documented libnl quirk). */
	if ((ret = nfnl_ct_dump_request(c->sk)) < 0 || (ret = nl_recvmsgs(c->sk, cb)) < 0) {
		ret = nlerr(ret);
		goto out;
	}
	c->stale = false;
	ret = d->err;
out:
	nl_cb_put(cb);
	return ret;
}

static int dump(struct conntrack *c, struct dump *d)
{
	int ret = -EINTR;

	for (int i = 0; i < DUMP_TRIES && ret == -EINTR; i++)
		ret = dump_once(c, d);
	return ret;
}

/* Deletes by tuple and CTA_ID, so an entry reused for another flow meanwhile is left alone. */
static int kill_hits(struct conntrack *c, struct dump *d, long *count)
{
	int ret, r;

	if ((ret = ready(c)))
		return ret;
	for (size_t i = 0; i < d->n_hits; i++) {
		r = nlerr(nfnl_ct_del(c->sk, d->hits[i], 0));
		if (r == 0) {
			(*count)++;
			continue;
		}
		if (r == -ENOENT)
			continue;
		if (!ret)
			ret = r;
		/*
		 * A receive that failed may leave the delete's ack on the socket, where the next
		 * request would read it as its own and fail: the rest go on a new socket.
		 */
		c->stale = true;
		if (ready(c))
			break;
	}
	return ret;
}

int conntrack_flows(struct conntrack *c, const struct grant *g, bool kill, long *count)
{
	if (!kill) {
		*count = 0;
		return conntrack_count_many(c, g, 1, NULL, 0, count);
	}
	return conntrack_cut(c, g, NULL, 0, NULL, 0, count);
}

/* Whether o and g name a port in common (each port_spec is one protocol's). */
static bool shares_port(const struct grant *o, const struct grant *g)
{
	for (size_t q = 0; q < g->n_ports; q++)
		if (port_match(o, port_proto_ipproto(g->ports[q].proto), g->ports[q].port))
			return true;
	return false;
}

/* Whether o and g name a source address in common: one prefix holds the other. */
static bool shares_src(const struct grant *o, const struct grant *g)
{
	for (size_t a = 0; a < o->n_src; a++)
		for (size_t b = 0; b < g->n_src; b++)
			if (prefix_contains(&o->src[a], &g->src[b]) ||
				prefix_contains(&g->src[b], &o->src[a]))
				return true;
	return false;
}

/*
 * The grants of keep[0..n) that could share a flow with g: of its kind (a host grant's flows
 * are never a gateway grant's), a port and a source in common. Checked once here, not for
 * every entry against every grant. NULL with *n_out 0 when none; -ENOMEM.
 */
static int keep_candidates(const struct grant *g, const struct grant *keep, size_t n,
	const struct grant ***out, size_t *n_out)
{
	const struct grant **v = NULL;
	size_t k = 0;

	*out = NULL;
	*n_out = 0;
	for (size_t i = 0; i < n; i++) {
		const struct grant *o = &keep[i];

		if (!o->n_dst != !g->n_dst || !shares_port(o, g) || !shares_src(o, g))
			continue;
		if (!v && !(v = calloc(n - i, sizeof(*v))))
			return -ENOMEM;
		v[k++] = o;
	}
	*out = v;
	*n_out = k;
	return 0;
}

int conntrack_cut(struct conntrack *c, const struct grant *g, const struct grant *keep,
	size_t n_keep, const struct prefix *always, size_t n_always, long *count)
{
	struct dump d = {.grants = g, .n = 1, .always = always, .n_always = n_always};
	int ret, r;

	*count = 0;
	if ((ret = keep_candidates(g, keep, n_keep, &d.keep, &d.n_keep)))
		return ret;
	/* A dump that failed part-way still cuts what it found: the error is reported anyway. */
	ret = dump(c, &d);
	if ((r = kill_hits(c, &d, count)) && !ret)
		ret = r;
	dump_reset(&d);
	free(d.hits);
	free(d.keep);
	index_free(&d);
	local_free(&d);
	return ret;
}

int conntrack_count_many(struct conntrack *c, const struct grant *grants, size_t n,
	const struct prefix *always, size_t n_always, long *counts)
{
	struct dump d = {.grants = grants, .n = n, .counts = counts, .always = always,
		.n_always = n_always};
	int ret = 0;

	if (n == 0)
		goto out;
	memset(counts, 0, n * sizeof(*counts));
	if ((ret = dump(c, &d)))
		memset(counts, 0, n * sizeof(*counts));
	index_free(&d);
	local_free(&d);
out:
	return ret;
}
