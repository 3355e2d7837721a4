#include <arpa/inet.h>
#include <endian.h>
#include <errno.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <libnftnl/chain.h>
#include <libnftnl/expr.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <libnftnl/udata.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_conntrack_common.h>
#include <linux/netfilter/nf_nat.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>

#include "agent/nft.h"
#include "agent/ranges.h"
#include "agent/ruleset.h"
#include "common/config.h"
#include "common/log.h"
#include "common/port.h"
#include "common/prefix.h"

/*
 * nft's datatype ids, combined for concatenations as nft does (6 bits per member), so that
 * `nft list table inet jitd` prints our sets with their real types.
 */
#define TYPE_IPADDR 7
#define TYPE_IP6ADDR 8
#define TYPE_INET_PROTOCOL 12
#define TYPE_INET_SERVICE 13
#define TYPE_BITS 6
#define CONCAT2(a, b) (((a) << TYPE_BITS) | (b))
#define CONCAT3(a, b, c) ((((a) << TYPE_BITS | (b)) << TYPE_BITS) | (c))

/* Concatenated keys use 32-bit register slots; every member is padded to 4 bytes. */
#define REG(slot) (NFT_REG32_00 + (slot))

#define CONCAT4(a, b, c, d) (((((a) << TYPE_BITS | (b)) << TYPE_BITS | (c)) << TYPE_BITS) | (d))

/* What a config needs in the table: the host's part always, the rest by mode and targets. */
#define NEED_HOST 0x1u
#define NEED_GATEWAY 0x2u
#define NEED_DNAT 0x4u

enum {
	SET_PROTECTED,
	SET_ALWAYS4,
	SET_ALWAYS6,
	SET_ALLOW4,
	SET_ALLOW6,
	SET_ALLOW4_ADDR,					/* .. + RULESET_ADDR_SHARDS - 1 */
	SET_ALLOW6_ADDR = SET_ALLOW4_ADDR + RULESET_ADDR_SHARDS, /* likewise */
	SET_TARGETS4 = SET_ALLOW6_ADDR + RULESET_ADDR_SHARDS,
	SET_TARGETS6,
	SET_FWD4,
	SET_FWD6,
	SET_DNAT4,
	SET__COUNT
};

#define F_GRANTS (NFT_SET_INTERVAL | NFT_SET_TIMEOUT | NFT_SET_CONCAT)

/*
 * How often the kernel walks a grant set to free its expired elements. The default, one
 * second, walks every element every second: at 100,000 grants about 10 ms of CPU a second
 * with no traffic at all. An expired element matches nothing, is not listed and cannot be
 * deleted from the moment it expires, whenever it is freed, so the walk only reclaims memory;
 * once a minute is enough for that.
 */
#define GRANT_SET_GC_MS 60000u

/* One shape per one-address shard; no interval flag, so the kernel picks a hash set. */
#define SHARDS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11) X(12) X(13) X(14) \
	X(15)
_Static_assert(RULESET_ADDR_SHARDS == 16, "SHARDS lists sixteen");
#define ADDR4_SHAPE(k)                                                                      \
	[SET_ALLOW4_ADDR + (k)] = { RULESET_SET_ALLOW4_ADDR "_" #k, NEED_HOST, NFT_SET_TIMEOUT, \
		CONCAT3(TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 12, { 0 }, 0, 0 },
#define ADDR6_SHAPE(k)                                                                      \
	[SET_ALLOW6_ADDR + (k)] = { RULESET_SET_ALLOW6_ADDR "_" #k, NEED_HOST, NFT_SET_TIMEOUT, \
		CONCAT3(TYPE_IP6ADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 24, { 0 }, 0, 0 },

static const struct set_shape {
	const char *name;
	unsigned need;
	uint32_t flags;
	uint32_t key_type;
	uint32_t key_len;
	uint8_t fields[5]; /* concat member lengths, for interval concatenations */
	uint32_t data_type, data_len; /* maps */
} shapes[SET__COUNT] = {
	[SET_PROTECTED] = { RULESET_SET_PROTECTED, NEED_HOST, 0,
		CONCAT2(TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 8, { 0 }, 0, 0 },
	[SET_ALWAYS4] = { RULESET_SET_ALWAYS4, NEED_HOST, NFT_SET_INTERVAL, TYPE_IPADDR, 4, { 0 },
		0, 0 },
	[SET_ALWAYS6] = { RULESET_SET_ALWAYS6, NEED_HOST, NFT_SET_INTERVAL, TYPE_IP6ADDR, 16, { 0 },
		0, 0 },
	[SET_ALLOW4] = { RULESET_SET_ALLOW4, NEED_HOST, F_GRANTS,
		CONCAT3(TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 12, { 4, 1, 2 }, 0, 0 },
	[SET_ALLOW6] = { RULESET_SET_ALLOW6, NEED_HOST, F_GRANTS,
		CONCAT3(TYPE_IP6ADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 24, { 16, 1, 2 }, 0, 0 },
	SHARDS(ADDR4_SHAPE)
	SHARDS(ADDR6_SHAPE)
	[SET_TARGETS4] = { RULESET_SET_TARGETS4, NEED_GATEWAY, NFT_SET_INTERVAL | NFT_SET_CONCAT,
		CONCAT3(TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 12, { 4, 1, 2 }, 0, 0 },
	[SET_TARGETS6] = { RULESET_SET_TARGETS6, NEED_GATEWAY, NFT_SET_INTERVAL | NFT_SET_CONCAT,
		CONCAT3(TYPE_IP6ADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 24, { 16, 1, 2 }, 0, 0 },
	[SET_FWD4] = { RULESET_SET_FWD4, NEED_GATEWAY, F_GRANTS,
		CONCAT4(TYPE_IPADDR, TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 16,
		{ 4, 4, 1, 2 }, 0, 0 },
	[SET_FWD6] = { RULESET_SET_FWD6, NEED_GATEWAY, F_GRANTS,
		CONCAT4(TYPE_IP6ADDR, TYPE_IP6ADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 40,
		{ 16, 16, 1, 2 }, 0, 0 },
	[SET_DNAT4] = { RULESET_MAP_DNAT4, NEED_DNAT, F_GRANTS | NFT_SET_MAP,
		CONCAT3(TYPE_IPADDR, TYPE_INET_PROTOCOL, TYPE_INET_SERVICE), 12, { 4, 1, 2 },
		CONCAT2(TYPE_IPADDR, TYPE_INET_SERVICE), 8 },
};

enum { CHAIN_INPUT, CHAIN_FORWARD, CHAIN_NAT, CHAIN__COUNT };

static const struct chain_shape {
	const char *name;
	unsigned need;
	const char *type;
	uint32_t hook;
	int32_t prio;
} chains[CHAIN__COUNT] = {
	[CHAIN_INPUT] = { RULESET_CHAIN, NEED_HOST, "filter", NF_INET_LOCAL_IN, 0 },
	[CHAIN_FORWARD] = { RULESET_CHAIN_FORWARD, NEED_GATEWAY, "filter", NF_INET_FORWARD, 0 },
	/* dstnat: before routing, so a mapped connection is routed to the machine behind. */
	[CHAIN_NAT] = { RULESET_CHAIN_NAT, NEED_DNAT, "nat", NF_INET_PRE_ROUTING, -100 },
};

static unsigned needs(const struct config *cfg)
{
	unsigned n = NEED_HOST;

	if (cfg->mode & CONFIG_MODE_GATEWAY)
		n |= NEED_GATEWAY;
	for (size_t i = 0; i < cfg->n_targets; i++)
		if (cfg->targets[i].dnat)
			n |= NEED_DNAT;
	return n;
}

int ruleset_wants(const struct config *cfg, int kind)
{
	unsigned need = needs(cfg);

	return kind == RULESET_HOST || kind == RULESET_HOST_ADDR ||
		(kind == RULESET_FORWARD && (need & NEED_GATEWAY)) ||
		(kind == RULESET_DNAT && (need & NEED_DNAT));
}

int ruleset_same_shape(const struct config *a, const struct config *b)
{
	return needs(a) == needs(b);
}

const char *ruleset_set_name(int kind, int family, unsigned shard)
{
	switch (kind) {
	case RULESET_HOST:
		return family == AF_INET ? RULESET_SET_ALLOW4 : RULESET_SET_ALLOW6;
	case RULESET_HOST_ADDR:
		if (shard >= RULESET_ADDR_SHARDS)
			return NULL;
		return shapes[(family == AF_INET ? SET_ALLOW4_ADDR : SET_ALLOW6_ADDR) + shard].name;
	case RULESET_FORWARD:
		return family == AF_INET ? RULESET_SET_FWD4 : RULESET_SET_FWD6;
	case RULESET_DNAT:
		return family == AF_INET ? RULESET_MAP_DNAT4 : NULL;
	}
	return NULL;
}

int ruleset_host_kind(const struct prefix *src)
{
	return prefix_is_host(src) ? RULESET_HOST_ADDR : RULESET_HOST;
}

unsigned ruleset_shards(int kind)
{
	return kind == RULESET_HOST_ADDR ? RULESET_ADDR_SHARDS : 1;
}

unsigned ruleset_elem_shard(const struct ruleset_elem *e)
{
	if (e->kind != RULESET_HOST_ADDR)
		return 0;
	return e->lo[(e->family == AF_INET ? 4 : 16) - 1] % RULESET_ADDR_SHARDS;
}

const char *ruleset_elem_set(const struct ruleset_elem *e)
{
	return ruleset_set_name(e->kind, e->family, ruleset_elem_shard(e));
}

/*
 * memcmp's order of two 16-byte addresses, as two big-endian words: the sorts of 100,000
 * elements (status, the model, restore) compare this way some 1.7 million times each, and
 * memcmp is a call each time (perf of a status at 100,000 grants: 8% in memcmp).
 */
static int cmp16(const uint8_t *a, const uint8_t *b)
{
	for (size_t i = 0; i < 16; i += 8) {
		uint64_t x, y;

		memcpy(&x, a + i, 8);
		memcpy(&y, b + i, 8);
		if (x != y)
			return be64toh(x) < be64toh(y) ? -1 : 1;
	}
	return 0;
}

int ruleset_elem_cmp_addrs(const void *a, const void *b)
{
	const struct ruleset_elem *x = a, *y = b;
	int c = cmp16(x->dlo, y->dlo);

	if (!c)
		c = cmp16(x->lo, y->lo);
	if (!c)
		c = cmp16(x->hi, y->hi);
	return c ? c : cmp16(x->dhi, y->dhi);
}

int ruleset_elem_cmp(const void *a, const void *b)
{
	const struct ruleset_elem *x = a, *y = b;

	if (x->kind != y->kind)
		return x->kind < y->kind ? -1 : 1;
	if (x->family != y->family)
		return x->family < y->family ? -1 : 1;
	if (x->ipproto != y->ipproto)
		return x->ipproto < y->ipproto ? -1 : 1;
	if (x->port != y->port)
		return x->port < y->port ? -1 : 1;
	return ruleset_elem_cmp_addrs(x, y);
}

size_t ruleset_elem_lower(const struct ruleset_elem *v, size_t n, const struct ruleset_elem *key)
{
	size_t lo = 0, hi = n;

	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (ruleset_elem_cmp(&v[mid], key) < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

const char *const *ruleset_grant_sets(void)
{
	static const char *names[SET__COUNT + 1];

	/* The sets with timeouts are the grant sets; filled on first use, by the event loop. */
	if (!names[0]) {
		size_t n = 0;

		for (size_t i = 0; i < SET__COUNT; i++)
			if (shapes[i].flags & NFT_SET_TIMEOUT)
				names[n++] = shapes[i].name;
	}
	return names;
}

/*
 * Table inet jitd, named, or NULL. libnftnl copies the name and leaves it out of the message
 * when the copy fails: the kernel takes a DELTABLE without a name for "delete every table of
 * the family", the host's own too.
 */
static struct nftnl_table *table_new(void)
{
	struct nftnl_table *t = nftnl_table_alloc();

	if (t && nftnl_table_set_str(t, NFTNL_TABLE_NAME, RULESET_TABLE) < 0) {
		nftnl_table_free(t);
		return NULL;
	}
	return t;
}

/*
 * jitd's mark, in the user data of every table it makes: a type of its own, which nft neither
 * prints nor makes. The kernel forgets every table at a boot, so a table inet jitd without it
 * is another program's: most often a saved ruleset (`nft list ruleset` written to
 * /etc/nftables.conf) loaded at the boot, with the grants and ports of the day it was saved.
 * nft's own types count up from 0 (its comment); this one is far above them.
 */
#define TABLE_MARK_TYPE 0xa7
#define TABLE_MARK "jitd"

static int set_mark(struct nftnl_table *t)
{
	struct nftnl_udata_buf *u = nftnl_udata_buf_alloc(32);
	int ret = -ENOMEM;

	if (u && nftnl_udata_put(u, TABLE_MARK_TYPE, sizeof(TABLE_MARK) - 1, TABLE_MARK) &&
		nftnl_table_set_data(t, NFTNL_TABLE_USERDATA, nftnl_udata_buf_data(u),
			nftnl_udata_buf_len(u)) == 0)
		ret = 0;
	nftnl_udata_buf_free(u);
	return ret;
}

/*
 * Walked here, not with nftnl_udata_parse: libnftnl 1.2.4's trusts each TLV's length, and
 * anyone who may change the ruleset can write a table's user data. One that runs past its end
 * is not jitd's.
 */
static bool has_mark(const struct nftnl_table *t)
{
	const uint8_t *d;
	uint32_t len = 0;

	if (!nftnl_table_is_set(t, NFTNL_TABLE_USERDATA) ||
		!(d = nftnl_table_get_data(t, NFTNL_TABLE_USERDATA, &len)))
		return false;
	for (uint32_t off = 0; len - off >= 2 && len - off - 2 >= d[off + 1];
		off += 2u + d[off + 1])
		if (d[off] == TABLE_MARK_TYPE && d[off + 1] == sizeof(TABLE_MARK) - 1 &&
			!memcmp(d + off + 2, TABLE_MARK, sizeof(TABLE_MARK) - 1))
			return true;
	return false;
}

int ruleset_table_state(struct nft *nft)
{
	struct nft_table_view v;
	int ret;

	if ((ret = nft_table_view(nft, RULESET_TABLE, &v)))
		return ret;
	ret = !v.table ? RULESET_TABLE_NONE : has_mark(v.table) ? RULESET_TABLE_JITDS :
		RULESET_TABLE_OTHER;
	nft_table_view_free(&v);
	return ret;
}

/*
 * excl: the table must not exist (NLM_F_EXCL), or the kernel refuses the batch (EEXIST). The
 * mark goes with every message: a table that exists keeps its user data (the kernel updates
 * only flags), and one made new gets it.
 */
static int add_table(struct nft_batch *b, uint32_t flags, bool excl)
{
	struct nftnl_table *t = table_new();
	struct nlmsghdr *nlh;

	if (!t)
		return -ENOMEM;
#ifdef JITD_TEST_HOOKS
	/* Test builds: a table as a jitd before the mark made it. */
	if (!getenv("JITD_TEST_NO_MARK"))
#endif
	if (set_mark(t)) {
		nftnl_table_free(t);
		return -ENOMEM;
	}
	/*
	 * Always sent, 0 too: the kernel leaves an existing table's flags as they are when the
	 * attribute is absent, and a table someone made dormant (its hooks unregistered: every
	 * protected port open) would stay so through a rebuild.
	 */
	nftnl_table_set_u32(t, NFTNL_TABLE_FLAGS, flags);
	nlh = nft_batch_msg(b, NFT_MSG_NEWTABLE, NFPROTO_INET,
		NLM_F_CREATE | (excl ? NLM_F_EXCL : 0), "create table inet jitd");
	if (nlh)
		nftnl_table_nlmsg_build_payload(nlh, t);
	nftnl_table_free(t);
	return nlh ? 0 : -ENOMEM;
}

static struct nftnl_set *set_new(const char *name)
{
	struct nftnl_set *s = nftnl_set_alloc();

	if (!s)
		return NULL;
	if (nftnl_set_set_str(s, NFTNL_SET_TABLE, RULESET_TABLE) < 0 ||
		nftnl_set_set_str(s, NFTNL_SET_NAME, name) < 0) {
		nftnl_set_free(s);
		return NULL;
	}
	nftnl_set_set_u32(s, NFTNL_SET_FAMILY, NFPROTO_INET);
	return s;
}

static int add_set(struct nft_batch *b, const struct set_shape *sh, uint32_t id)
{
	struct nftnl_set *s = set_new(sh->name);
	struct nlmsghdr *nlh;
	size_t nfields = strlen((const char *)sh->fields);

	if (!s)
		return -ENOMEM;
	nftnl_set_set_u32(s, NFTNL_SET_ID, id);
	nftnl_set_set_u32(s, NFTNL_SET_FLAGS, sh->flags);
	nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE, sh->key_type);
	nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, sh->key_len);
	if (nfields)
		nftnl_set_set_data(s, NFTNL_SET_DESC_CONCAT, sh->fields, (uint32_t)nfields);
	if (sh->data_len) {
		nftnl_set_set_u32(s, NFTNL_SET_DATA_TYPE, sh->data_type);
		nftnl_set_set_u32(s, NFTNL_SET_DATA_LEN, sh->data_len);
	}
	if (sh->flags & NFT_SET_TIMEOUT)
		nftnl_set_set_u32(s, NFTNL_SET_GC_INTERVAL, GRANT_SET_GC_MS);
	nlh = nft_batch_msg(b, NFT_MSG_NEWSET, NFPROTO_INET, NLM_F_CREATE, sh->name);
	if (nlh)
		nftnl_set_nlmsg_build_payload(nlh, s);
	nftnl_set_free(s);
	return nlh ? 0 : -ENOMEM;
}

/* A DELSETELEM without elements empties the set (nft's `flush set`). */
static int flush_set(struct nft_batch *b, const char *name)
{
	struct nftnl_set *s = set_new(name);
	struct nlmsghdr *nlh;

	if (!s)
		return -ENOMEM;
	nlh = nft_batch_msg(b, NFT_MSG_DELSETELEM, NFPROTO_INET, 0, name);
	if (nlh)
		nftnl_set_elems_nlmsg_build_payload(nlh, s);
	nftnl_set_free(s);
	return nlh ? 0 : -ENOMEM;
}

/*
 * Sends s's elements as NEWSETELEM/DELSETELEM messages, starting a new message whenever the
 * element nest would overflow (the iterator build returns 1 while elements remain).
 */
static int send_elems(struct nft_batch *b, struct nftnl_set *s, size_t count, uint16_t type,
	const char *what)
{
	struct nftnl_set_elems_iter *it;
	int more = 1;

	if (!count)
		return 0;
	it = nftnl_set_elems_iter_create(s);
	if (!it)
		return -ENOMEM;
	while (more > 0) {
		struct nlmsghdr *nlh = nft_batch_msg(b, type, NFPROTO_INET,
			type == NFT_MSG_NEWSETELEM ? NLM_F_CREATE | NLM_F_EXCL : 0, what);

		more = nlh ? nftnl_set_elems_nlmsg_build_payload_iter(nlh, it) : -ENOMEM;
	}
	nftnl_set_elems_iter_destroy(it);
	return more < 0 ? -ENOMEM : 0;
}

/* The protected-ports set's elements as cfg wants them (a new set, *count elements). */
static int want_protected(const struct config *cfg, struct nftnl_set **out, size_t *countp)
{
	struct nftnl_set *s = set_new(RULESET_SET_PROTECTED);
	size_t count = 0;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	for (size_t i = 0; i < cfg->n_ports; i++) {
		for (unsigned proto = PORT_PROTO_TCP; proto <= PORT_PROTO_UDP; proto <<= 1) {
			uint8_t key[8] = { 0 };
			uint16_t port = htons(cfg->ports[i].port);
			struct nftnl_set_elem *e;

			if (!(cfg->ports[i].protos & proto))
				continue;
			e = nftnl_set_elem_alloc();
			if (!e) {
				nftnl_set_free(s);
				return -ENOMEM;
			}
			key[0] = port_proto_ipproto(proto);
			memcpy(&key[4], &port, 2);
			nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, sizeof(key));
			nftnl_set_elem_add(s, e);
			count++;
		}
	}
	*out = s;
	*countp = count;
	return 0;
}

static int fill_protected(struct nft_batch *b, const struct config *cfg)
{
	struct nftnl_set *s;
	size_t count;
	int ret;

	if ((ret = want_protected(cfg, &s, &count)))
		return ret;
	ret = send_elems(b, s, count, NFT_MSG_NEWSETELEM, "protected ports");
	nftnl_set_free(s);
	return ret;
}

static bool all_ones(const uint8_t *a, size_t len)
{
	for (size_t i = 0; i < len; i++)
		if (a[i] != 0xff)
			return false;
	return true;
}

static void increment(uint8_t *a, size_t len)
{
	for (size_t i = len; i-- > 0;)
		if (++a[i])
			break;
}

/*
 * Single-field interval sets (rbtree) take an interval as a start element plus an end element
 * one past the last address, flagged INTERVAL_END; a range reaching the top needs no end.
 */
static int add_interval(struct nftnl_set *s, const struct span *sp, size_t alen, size_t *count)
{
	struct nftnl_set_elem *e = nftnl_set_elem_alloc();
	uint8_t end[16];

	if (!e)
		return -ENOMEM;
	nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, sp->lo, (uint32_t)alen);
	nftnl_set_elem_add(s, e);
	(*count)++;
	if (all_ones(sp->hi, alen))
		return 0;
	memcpy(end, sp->hi, alen);
	increment(end, alen);
	e = nftnl_set_elem_alloc();
	if (!e)
		return -ENOMEM;
	nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, end, (uint32_t)alen);
	nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS, NFT_SET_ELEM_INTERVAL_END);
	nftnl_set_elem_add(s, e);
	(*count)++;
	return 0;
}

/* An always-allow set's elements as cfg wants them (a new set, *count elements). */
static int want_always(const struct config *cfg, int family, struct nftnl_set **sp,
	size_t *countp)
{
	const char *name = family == AF_INET ? RULESET_SET_ALWAYS4 : RULESET_SET_ALWAYS6;
	size_t alen = family == AF_INET ? 4 : 16, n = 0, nout = 0, count = 0;
	struct span *in = calloc(cfg->n_always_allow + 1, sizeof(*in)), *out = NULL;
	struct nftnl_set *s = set_new(name);
	int ret = -ENOMEM;

	*sp = NULL;
	if (!in || !s)
		goto out;
	for (size_t i = 0; i < cfg->n_always_allow; i++)
		if (cfg->always_allow[i].family == family)
			prefix_range(&cfg->always_allow[i], in[n].lo, in[n].hi), n++;
	/* Overlapping or adjacent config prefixes must become disjoint intervals for the kernel. */
	ret = ranges_disjoint(in, n, alen, &out, &nout);
	for (size_t i = 0; ret == 0 && i < nout; i++)
		ret = add_interval(s, &out[i], alen, &count);
	if (ret == 0) {
		*sp = s;
		*countp = count;
		s = NULL;
	}
out:
	if (s)
		nftnl_set_free(s);
	free(out);
	free(in);
	return ret;
}

static int fill_always(struct nft_batch *b, const struct config *cfg, int family)
{
	struct nftnl_set *s;
	size_t count;
	int ret;

	if ((ret = want_always(cfg, family, &s, &count)))
		return ret;
	ret = send_elems(b, s, count, NFT_MSG_NEWSETELEM,
		family == AF_INET ? RULESET_SET_ALWAYS4 : RULESET_SET_ALWAYS6);
	nftnl_set_free(s);
	return ret;
}

static int add_counter(struct nft_batch *b)
{
	struct nftnl_obj *o = nftnl_obj_alloc();
	struct nlmsghdr *nlh;

	if (!o)
		return -ENOMEM;
	nftnl_obj_set_str(o, NFTNL_OBJ_TABLE, RULESET_TABLE);
	nftnl_obj_set_str(o, NFTNL_OBJ_NAME, RULESET_COUNTER_DENIED);
	nftnl_obj_set_u32(o, NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
	nlh = nft_batch_msg(b, NFT_MSG_NEWOBJ, NFPROTO_INET, NLM_F_CREATE, "counter denied");
	if (nlh)
		nftnl_obj_nlmsg_build_payload(nlh, o);
	nftnl_obj_free(o);
	return nlh ? 0 : -ENOMEM;
}

/* addr . proto . port with each member padded to its 4-byte register slot; the key's length. */
static uint32_t addr_proto_port(uint8_t *key, const uint8_t *addr, size_t alen, uint8_t ipproto,
	uint16_t port)
{
	uint16_t be = htons(port);

	memset(key, 0, alen + 8);
	memcpy(key, addr, alen);
	key[alen] = ipproto;
	memcpy(&key[alen + 4], &be, 2);
	return (uint32_t)(alen + 8);
}

/*
 * A targets set's elements as cfg wants them: per (protocol, port), the target addresses as
 * disjoint ranges (targets may nest: 10.1.0.0/24 and 10.1.0.5 with another maximum).
 */
static int want_targets(const struct config *cfg, int family, struct nftnl_set **sp,
	size_t *countp)
{
	const char *name = family == AF_INET ? RULESET_SET_TARGETS4 : RULESET_SET_TARGETS6;
	size_t alen = family == AF_INET ? 4 : 16, count = 0;
	struct span *in = calloc(cfg->n_targets + 1, sizeof(*in)), *out = NULL;
	struct nftnl_set *s = set_new(name);
	int ret = in && s ? 0 : -ENOMEM;

	*sp = NULL;
	for (size_t t = 0; ret == 0 && t < cfg->n_targets; t++) {
		const struct target_policy *tp = &cfg->targets[t];

		for (unsigned proto = PORT_PROTO_TCP; ret == 0 && proto <= PORT_PROTO_UDP;
			proto <<= 1) {
			size_t n = 0, nout = 0;
			bool first = true;

			if (tp->addr.family != family || !(tp->protos & proto))
				continue;
			/* Each (protocol, port) once: at the first target that lists it. */
			for (size_t u = 0; u < t && first; u++)
				first = !(cfg->targets[u].addr.family == family &&
					cfg->targets[u].port == tp->port &&
					(cfg->targets[u].protos & proto));
			if (!first)
				continue;
			for (size_t u = t; u < cfg->n_targets; u++)
				if (cfg->targets[u].addr.family == family &&
					cfg->targets[u].port == tp->port &&
					(cfg->targets[u].protos & proto))
					prefix_range(&cfg->targets[u].addr, in[n].lo, in[n].hi), n++;
			free(out);
			out = NULL;
			ret = ranges_disjoint(in, n, alen, &out, &nout);
			for (size_t i = 0; ret == 0 && i < nout; i++) {
				struct nftnl_set_elem *e = nftnl_set_elem_alloc();
				uint8_t key[24];
				uint8_t ipproto = port_proto_ipproto(proto);

				if (!e) {
					ret = -ENOMEM;
					break;
				}
				nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key,
					addr_proto_port(key, out[i].lo, alen, ipproto, tp->port));
				nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY_END, key,
					addr_proto_port(key, out[i].hi, alen, ipproto, tp->port));
				nftnl_set_elem_add(s, e);
				count++;
			}
		}
	}
	if (ret == 0) {
		*sp = s;
		*countp = count;
		s = NULL;
	}
	if (s)
		nftnl_set_free(s);
	free(out);
	free(in);
	return ret;
}

static int fill_targets(struct nft_batch *b, const struct config *cfg, int family)
{
	struct nftnl_set *s;
	size_t count;
	int ret;

	if ((ret = want_targets(cfg, family, &s, &count)))
		return ret;
	ret = send_elems(b, s, count, NFT_MSG_NEWSETELEM,
		family == AF_INET ? RULESET_SET_TARGETS4 : RULESET_SET_TARGETS6);
	nftnl_set_free(s);
	return ret;
}

static int add_chain(struct nft_batch *b, const struct chain_shape *sh)
{
	struct nftnl_chain *c = nftnl_chain_alloc();
	struct nlmsghdr *nlh;

	if (!c)
		return -ENOMEM;
	nftnl_chain_set_str(c, NFTNL_CHAIN_TABLE, RULESET_TABLE);
	nftnl_chain_set_str(c, NFTNL_CHAIN_NAME, sh->name);
	nftnl_chain_set_str(c, NFTNL_CHAIN_TYPE, sh->type);
	nftnl_chain_set_u32(c, NFTNL_CHAIN_HOOKNUM, sh->hook);
	nftnl_chain_set_s32(c, NFTNL_CHAIN_PRIO, sh->prio);
	/* accept: traffic jitd does not guard continues to the host's own rules untouched. */
	nftnl_chain_set_u32(c, NFTNL_CHAIN_POLICY, NF_ACCEPT);
	nlh = nft_batch_msg(b, NFT_MSG_NEWCHAIN, NFPROTO_INET, NLM_F_CREATE, sh->name);
	if (nlh)
		nftnl_chain_nlmsg_build_payload(nlh, c);
	nftnl_chain_free(c);
	return nlh ? 0 : -ENOMEM;
}

/* A DELRULE naming only the chain removes all its rules (nft's `flush chain`). */
static int flush_chain(struct nft_batch *b, const char *name)
{
	struct nftnl_rule *r = nftnl_rule_alloc();
	struct nlmsghdr *nlh;

	if (!r)
		return -ENOMEM;
	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, RULESET_TABLE);
	nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, name);
	nlh = nft_batch_msg(b, NFT_MSG_DELRULE, NFPROTO_INET, 0, "flush chain");
	if (nlh)
		nftnl_rule_nlmsg_build_payload(nlh, r);
	nftnl_rule_free(r);
	return nlh ? 0 : -ENOMEM;
}

/* One tiny builder per expression, as in libnftnl's nft-rule-add example. */
static bool expr_add(struct nftnl_rule *r, struct nftnl_expr *e)
{
	if (!e)
		return false;
	nftnl_rule_add_expr(r, e);
	return true;
}

static bool add_meta(struct nftnl_rule *r, uint32_t key, uint32_t dreg)
{
	struct nftnl_expr *e = nftnl_expr_alloc("meta");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_KEY, key);
		nftnl_expr_set_u32(e, NFTNL_EXPR_META_DREG, dreg);
	}
	return expr_add(r, e);
}

static bool add_payload(struct nftnl_rule *r, uint32_t base, uint32_t off, uint32_t len,
	uint32_t dreg)
{
	struct nftnl_expr *e = nftnl_expr_alloc("payload");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_BASE, base);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_OFFSET, off);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_LEN, len);
		nftnl_expr_set_u32(e, NFTNL_EXPR_PAYLOAD_DREG, dreg);
	}
	return expr_add(r, e);
}

static bool add_cmp(struct nftnl_rule *r, uint32_t op, const void *data, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("cmp");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_SREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_CMP_OP, op);
		nftnl_expr_set(e, NFTNL_EXPR_CMP_DATA, data, len);
	}
	return expr_add(r, e);
}

/* reg1 = reg1 & mask, over len (at most 4) bytes. */
static bool add_bitwise(struct nftnl_rule *r, const void *mask, uint32_t len)
{
	struct nftnl_expr *e = nftnl_expr_alloc("bitwise");
	const uint8_t zero[4] = { 0 };

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_SREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_DREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_BITWISE_LEN, len);
		nftnl_expr_set(e, NFTNL_EXPR_BITWISE_MASK, mask, len);
		nftnl_expr_set(e, NFTNL_EXPR_BITWISE_XOR, zero, len);
	}
	return expr_add(r, e);
}

static bool add_ct(struct nftnl_rule *r, uint32_t key)
{
	struct nftnl_expr *e = nftnl_expr_alloc("ct");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_CT_KEY, key);
		nftnl_expr_set_u32(e, NFTNL_EXPR_CT_DREG, NFT_REG_1);
	}
	return expr_add(r, e);
}

static bool add_lookup(struct nftnl_rule *r, const char *set, uint32_t sreg, bool invert)
{
	struct nftnl_expr *e = nftnl_expr_alloc("lookup");

	if (e) {
		nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, set);
		nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, sreg);
		/* Always, as the kernel reports it: ruleset_in_place compares the two. */
		nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, invert ? NFT_LOOKUP_F_INV : 0);
	}
	return expr_add(r, e);
}

static bool add_verdict(struct nftnl_rule *r, int verdict)
{
	struct nftnl_expr *e = nftnl_expr_alloc("immediate");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_DREG, NFT_REG_VERDICT);
		nftnl_expr_set_u32(e, NFTNL_EXPR_IMM_VERDICT, (uint32_t)verdict);
	}
	return expr_add(r, e);
}

static bool add_counter_ref(struct nftnl_rule *r)
{
	struct nftnl_expr *e = nftnl_expr_alloc("objref");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_OBJREF_IMM_TYPE, NFT_OBJECT_COUNTER);
		nftnl_expr_set_str(e, NFTNL_EXPR_OBJREF_IMM_NAME, RULESET_COUNTER_DENIED);
	}
	return expr_add(r, e);
}

static bool add_reject(struct nftnl_rule *r, uint32_t type, uint8_t code)
{
	struct nftnl_expr *e = nftnl_expr_alloc("reject");

	if (e) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_REJECT_TYPE, type);
		nftnl_expr_set_u8(e, NFTNL_EXPR_REJECT_CODE, code);
	}
	return expr_add(r, e);
}

/* meta l4proto . th dport into slots first, first + 1. */
static bool add_proto_port(struct nftnl_rule *r, uint32_t first)
{
	return add_meta(r, NFT_META_L4PROTO, REG(first)) &&
		add_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2, REG(first + 1));
}

static bool add_nfproto(struct nftnl_rule *r, int family)
{
	uint8_t proto = family == AF_INET ? NFPROTO_IPV4 : NFPROTO_IPV6;

	return add_meta(r, NFT_META_NFPROTO, NFT_REG_1) && add_cmp(r, NFT_CMP_EQ, &proto, 1);
}

/* ip saddr / ip6 saddr into slot 0. */
static bool add_saddr(struct nftnl_rule *r, int family)
{
	return family == AF_INET ? add_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 12, 4, REG(0)) :
				   add_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 8, 16, REG(0));
}

/*
 * ct state established: the mask test both ct rules begin with. Not related: the first packet
 * of a connection a conntrack helper expects (FTP data, IRC DCC, SIP media: set up by another
 * table's "ct helper") is related, to whatever port the expected connection names, which the
 * far end or a local user may choose; to a protected port it must meet the grants. ICMP errors
 * about a flow, the other related packets, carry no protected port or target: no rule here
 * drops them.
 */
static bool add_ct_established(struct nftnl_rule *r)
{
	uint32_t zero = 0, mask = NF_CT_STATE_BIT(IP_CT_ESTABLISHED);

	return add_ct(r, NFT_CT_STATE) && add_bitwise(r, &mask, sizeof(mask)) &&
		add_cmp(r, NFT_CMP_NEQ, &zero, sizeof(zero));
}

/*
 * ct state established ct direction original accept. Only the direction in which the
 * flow began: once a revocation with "terminate" deletes a TCP flow's entry, the server's next
 * segment makes conntrack pick the flow up again (nf_conntrack_tcp_loose) the other way round,
 * and the client's packets, now its replies, would pass here as established for as long as the
 * server talks. Replies go through the port and grant checks instead; one to a connection this
 * host (or a machine behind it) opened itself leaves at the next rules, unless it left from a
 * protected port.
 */
static bool rule_ct(struct nftnl_rule *r, const void *arg __attribute__((unused)))
{
	uint8_t original = IP_CT_DIR_ORIGINAL;

	return add_ct_established(r) && add_ct(r, NFT_CT_DIRECTION) &&
		add_cmp(r, NFT_CMP_EQ, &original, sizeof(original)) && add_verdict(r, NF_ACCEPT);
}

/*
 * ct state established meta l4proto != tcp accept: replies of any other protocol still
 * pass. A UDP service speaks from its own port (WireGuard, IKE, NTP do to their peers), and a
 * datagram cannot tell a reply from a flow picked up the other way.
 */
static bool rule_ct_not_tcp(struct nftnl_rule *r, const void *arg __attribute__((unused)))
{
	uint8_t tcp = IPPROTO_TCP;

	return add_ct_established(r) && add_meta(r, NFT_META_L4PROTO, NFT_REG_1) &&
		add_cmp(r, NFT_CMP_NEQ, &tcp, sizeof(tcp)) && add_verdict(r, NF_ACCEPT);
}

static bool rule_unprotected(struct nftnl_rule *r, const void *arg __attribute__((unused)))
{
	return add_proto_port(r, 0) && add_lookup(r, RULESET_SET_PROTECTED, REG(0), true) &&
		add_verdict(r, NFT_RETURN);
}

static bool rule_always(struct nftnl_rule *r, const void *arg)
{
	int family = *(const int *)arg;

	return add_nfproto(r, family) && add_saddr(r, family) &&
		add_lookup(r, family == AF_INET ? RULESET_SET_ALWAYS4 : RULESET_SET_ALWAYS6, REG(0),
			false) &&
		add_verdict(r, NF_ACCEPT);
}

/* Which allow set a rule_allow looks up. */
struct allow_rule {
	int kind, family;
	uint8_t shard;
};

/*
 * ip saddr . meta l4proto . th dport @allow4 accept, and for a one-address shard first
 * ip saddr & 0.0.0.15 == shard (the last byte's low bits: ruleset_elem_shard).
 */
static bool rule_allow(struct nftnl_rule *r, const void *arg)
{
	const struct allow_rule *a = arg;
	uint32_t slots = a->family == AF_INET ? 1 : 4;
	/* The last byte of saddr: offset 12 + 3 in an IPv4 header, 8 + 15 in an IPv6 one. */
	uint32_t last = a->family == AF_INET ? 15 : 23;
	uint8_t low = RULESET_ADDR_SHARDS - 1;

	if (!add_nfproto(r, a->family))
		return false;
	if (a->kind == RULESET_HOST_ADDR &&
		(!add_payload(r, NFT_PAYLOAD_NETWORK_HEADER, last, 1, NFT_REG_1) ||
			!add_bitwise(r, &low, 1) ||
			!add_cmp(r, NFT_CMP_EQ, &a->shard, 1)))
		return false;
	return add_saddr(r, a->family) && add_proto_port(r, slots) &&
		add_lookup(r, ruleset_set_name(a->kind, a->family, a->shard), REG(0), false) &&
		add_verdict(r, NF_ACCEPT);
}

/* ip daddr / ip6 daddr into a slot. */
static bool add_daddr(struct nftnl_rule *r, int family, uint32_t slot)
{
	return family == AF_INET ?
		add_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 16, 4, REG(slot)) :
		add_payload(r, NFT_PAYLOAD_NETWORK_HEADER, 24, 16, REG(slot));
}

/* ip saddr . ip daddr . meta l4proto . th dport @fwd4 accept (ip6 likewise). */
static bool rule_forward(struct nftnl_rule *r, const void *arg)
{
	int family = *(const int *)arg;
	uint32_t slots = family == AF_INET ? 1 : 4;

	return add_nfproto(r, family) && add_saddr(r, family) && add_daddr(r, family, slots) &&
		add_proto_port(r, 2 * slots) &&
		add_lookup(r, ruleset_set_name(RULESET_FORWARD, family, 0), REG(0), false) &&
		add_verdict(r, NF_ACCEPT);
}

/*
 * What the deny rules guard, and how: the host's protected ports (family AF_UNSPEC) or one
 * family's targets, dropped or rejected.
 */
struct guard {
	int family;
	enum deny_action action;
};

static const struct guard guards[3][2] = {
	{ { AF_UNSPEC, DENY_DROP }, { AF_UNSPEC, DENY_REJECT } },
	{ { AF_INET, DENY_DROP }, { AF_INET, DENY_REJECT } },
	{ { AF_INET6, DENY_DROP }, { AF_INET6, DENY_REJECT } },
};

/* Matches packets to what g guards: @protected, or daddr . l4proto . dport @targets4/6. */
static bool add_guarded(struct nftnl_rule *r, const struct guard *g)
{
	uint32_t slots = g->family == AF_INET ? 1 : 4;

	if (g->family == AF_UNSPEC)
		return add_proto_port(r, 0) && add_lookup(r, RULESET_SET_PROTECTED, REG(0), false);
	return add_nfproto(r, g->family) && add_daddr(r, g->family, 0) &&
		add_proto_port(r, slots) &&
		add_lookup(r, g->family == AF_INET ? RULESET_SET_TARGETS4 : RULESET_SET_TARGETS6,
			REG(0), false);
}

/*
 * The deny rule matches what it guards again rather than relying on rule order alone: a packet
 * whose transport header cannot be read makes the `return` rule break, not match, and must
 * then fall through to the policy, not into a drop.
 */
static bool rule_deny(struct nftnl_rule *r, const void *arg)
{
	const struct guard *g = arg;

	if (!add_guarded(r, g) || !add_counter_ref(r))
		return false;
	if (g->action == DENY_DROP)
		return add_verdict(r, NF_DROP);
	return add_reject(r, NFT_REJECT_ICMPX_UNREACH, NFT_REJECT_ICMPX_PORT_UNREACH);
}

/* TCP gets a reset, as a closed port would answer; everything else ICMP port unreachable. */
static bool rule_deny_tcp(struct nftnl_rule *r, const void *arg)
{
	uint8_t tcp = IPPROTO_TCP;

	return add_meta(r, NFT_META_L4PROTO, NFT_REG_1) && add_cmp(r, NFT_CMP_EQ, &tcp, 1) &&
		add_guarded(r, arg) && add_counter_ref(r) && add_reject(r, NFT_REJECT_TCP_RST, 0);
}

/*
 * In drop mode, a TCP segment without SYN to a protected port that no rule accepted belongs to a
 * flow conntrack no longer knows: one a revocation with "terminate" cut. A reset ends the
 * client's session at once instead of leaving it to retransmit for minutes. A stray ACK to a
 * closed or an open port gets a reset from the stack anyway, so on a host this tells a scanner
 * nothing; to a gateway's target it shows the prefix and port guarded (the README says so).
 */
static bool rule_reset_stale(struct nftnl_rule *r, const void *arg)
{
	uint8_t tcp = IPPROTO_TCP, syn = 0x02, zero = 0;

	return add_meta(r, NFT_META_L4PROTO, NFT_REG_1) && add_cmp(r, NFT_CMP_EQ, &tcp, 1) &&
		add_payload(r, NFT_PAYLOAD_TRANSPORT_HEADER, 13, 1, NFT_REG_1) &&
		add_bitwise(r, &syn, 1) && add_cmp(r, NFT_CMP_EQ, &zero, 1) &&
		add_guarded(r, arg) && add_counter_ref(r) && add_reject(r, NFT_REJECT_TCP_RST, 0);
}

/*
 * meta l4proto P fib daddr type local dnat ip to ip saddr . meta l4proto . th dport map @dnat4:
 * only connections to the gateway itself are mapped, never traffic passing through it.
 */
static bool rule_dnat(struct nftnl_rule *r, const void *arg)
{
	uint8_t proto = *(const uint8_t *)arg;
	uint32_t local = RTN_LOCAL;
	struct nftnl_expr *e;

	if (!add_meta(r, NFT_META_L4PROTO, NFT_REG_1) || !add_cmp(r, NFT_CMP_EQ, &proto, 1))
		return false;
	if ((e = nftnl_expr_alloc("fib"))) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_DREG, NFT_REG_1);
		nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_RESULT, NFT_FIB_RESULT_ADDRTYPE);
		nftnl_expr_set_u32(e, NFTNL_EXPR_FIB_FLAGS, NFTA_FIB_F_DADDR);
	}
	if (!expr_add(r, e) || !add_cmp(r, NFT_CMP_EQ, &local, sizeof(local)) ||
		!add_nfproto(r, AF_INET) || !add_saddr(r, AF_INET) || !add_proto_port(r, 1))
		return false;
	if ((e = nftnl_expr_alloc("lookup"))) {
		nftnl_expr_set_str(e, NFTNL_EXPR_LOOKUP_SET, RULESET_MAP_DNAT4);
		nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_SREG, REG(0));
		nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_DREG, REG(0));
		nftnl_expr_set_u32(e, NFTNL_EXPR_LOOKUP_FLAGS, 0);
	}
	if (!expr_add(r, e))
		return false;
	if ((e = nftnl_expr_alloc("nat"))) {
		nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_TYPE, NFT_NAT_DNAT);
		nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FAMILY, NFPROTO_IPV4);
		/* Max = min and the flags: as the kernel reports them back, for ruleset_in_place. */
		nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MIN, REG(0));
		nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_ADDR_MAX, REG(0));
		nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MIN, REG(1));
		nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_REG_PROTO_MAX, REG(1));
		nftnl_expr_set_u32(e, NFTNL_EXPR_NAT_FLAGS,
			NF_NAT_RANGE_MAP_IPS | NF_NAT_RANGE_PROTO_SPECIFIED);
	}
	return expr_add(r, e);
}

/* One rule of a chain: how to build it, and its name in error reports. */
struct rule_spec {
	bool (*build)(struct nftnl_rule *r, const void *arg);
	const void *arg;
	const char *what;
};

#define MAX_RULES (10 + 2 * RULESET_ADDR_SHARDS)

/* The deny rules for one guard, as the deny action wants them. */
static size_t deny_specs(const struct guard *g, struct rule_spec *out)
{
	size_t n = 0;

	if (g->action == DENY_REJECT)
		out[n++] = (struct rule_spec){ rule_deny_tcp, g, "rule reject tcp" };
	if (g->action == DENY_DROP)
		out[n++] = (struct rule_spec){ rule_reset_stale, g, "rule reset stale tcp" };
	out[n++] = (struct rule_spec){ rule_deny, g, "rule deny" };
	return n;
}

/* A chain's rules in order, as cfg wants them. Returns how many (at most MAX_RULES). */
static size_t rule_specs(const struct config *cfg, size_t chain, struct rule_spec out[MAX_RULES])
{
	static const int v4 = AF_INET, v6 = AF_INET6;
#define ALLOW4_ADDR(k) { RULESET_HOST_ADDR, AF_INET, k },
#define ALLOW6_ADDR(k) { RULESET_HOST_ADDR, AF_INET6, k },
	static const struct allow_rule allow[2] = { { RULESET_HOST, AF_INET, 0 },
		{ RULESET_HOST, AF_INET6, 0 } };
	static const struct allow_rule shard[2][RULESET_ADDR_SHARDS] = { { SHARDS(ALLOW4_ADDR) },
		{ SHARDS(ALLOW6_ADDR) } };
	static const uint8_t tcp = IPPROTO_TCP, udp = IPPROTO_UDP;
	size_t n = 0, action = cfg->deny_action == DENY_REJECT;

	if (chain == CHAIN_NAT) {
		out[n++] = (struct rule_spec){ rule_dnat, &tcp, "rule dnat tcp" };
		out[n++] = (struct rule_spec){ rule_dnat, &udp, "rule dnat udp" };
		return n;
	}
	out[n++] = (struct rule_spec){ rule_ct, NULL, "rule ct state" };
	out[n++] = (struct rule_spec){ rule_ct_not_tcp, NULL, "rule ct state not tcp" };
	if (chain == CHAIN_INPUT)
		out[n++] = (struct rule_spec){ rule_unprotected, NULL, "rule unprotected ports" };
	out[n++] = (struct rule_spec){ rule_always, &v4, "rule always4" };
	out[n++] = (struct rule_spec){ rule_always, &v6, "rule always6" };
	if (chain == CHAIN_INPUT) {
		/* Single addresses first: that is where most grants are, and a hash lookup is cheap. */
		for (size_t f = 0; f < 2; f++)
			for (uint8_t k = 0; k < RULESET_ADDR_SHARDS; k++)
				out[n++] = (struct rule_spec){ rule_allow, &shard[f][k],
					ruleset_set_name(shard[f][k].kind, shard[f][k].family, k) };
		out[n++] = (struct rule_spec){ rule_allow, &allow[0], "rule allow4" };
		out[n++] = (struct rule_spec){ rule_allow, &allow[1], "rule allow6" };
		return n + deny_specs(&guards[0][action], &out[n]);
	}
	out[n++] = (struct rule_spec){ rule_forward, &v4, "rule fwd4" };
	out[n++] = (struct rule_spec){ rule_forward, &v6, "rule fwd6" };
	n += deny_specs(&guards[1][action], &out[n]);
	return n + deny_specs(&guards[2][action], &out[n]);
}

static struct nftnl_rule *rule_new(const char *chain, const struct rule_spec *sp)
{
	struct nftnl_rule *r = nftnl_rule_alloc();

	if (!r)
		return NULL;
	nftnl_rule_set_str(r, NFTNL_RULE_TABLE, RULESET_TABLE);
	nftnl_rule_set_str(r, NFTNL_RULE_CHAIN, chain);
	nftnl_rule_set_u32(r, NFTNL_RULE_FAMILY, NFPROTO_INET);
	if (!sp->build(r, sp->arg)) {
		nftnl_rule_free(r);
		return NULL;
	}
	return r;
}

static int add_rules(struct nft_batch *b, const struct config *cfg, size_t chain)
{
	struct rule_spec spec[MAX_RULES];
	size_t n = rule_specs(cfg, chain, spec);

	for (size_t i = 0; i < n; i++) {
		struct nftnl_rule *r = rule_new(chains[chain].name, &spec[i]);
		struct nlmsghdr *nlh = r ? nft_batch_msg(b, NFT_MSG_NEWRULE, NFPROTO_INET,
			NLM_F_CREATE | NLM_F_APPEND, spec[i].what) : NULL;

		if (nlh)
			nftnl_rule_nlmsg_build_payload(nlh, r);
		if (r)
			nftnl_rule_free(r);
		if (!nlh)
			return -ENOMEM;
	}
	return 0;
}

int ruleset_claim(struct nft_batch *b, uint32_t table_flags)
{
	return table_flags ? add_table(b, table_flags, false) : 0;
}

static int build(struct nft_batch *b, const struct config *cfg, uint32_t table_flags, bool excl)
{
	unsigned need = needs(cfg);
	int ret;

	if ((ret = add_table(b, table_flags, excl)))
		return ret;
	for (uint32_t i = 0; i < SET__COUNT; i++)
		if ((shapes[i].need & need) && (ret = add_set(b, &shapes[i], i + 1)))
			return ret;
	if ((ret = add_counter(b)))
		return ret;
	for (size_t i = 0; i < CHAIN__COUNT; i++)
		if ((chains[i].need & need) &&
			((ret = add_chain(b, &chains[i])) || (ret = flush_chain(b, chains[i].name))))
			return ret;
	if ((ret = flush_set(b, RULESET_SET_PROTECTED)) || (ret = fill_protected(b, cfg)) ||
		(ret = flush_set(b, RULESET_SET_ALWAYS4)) || (ret = fill_always(b, cfg, AF_INET)) ||
		(ret = flush_set(b, RULESET_SET_ALWAYS6)) || (ret = fill_always(b, cfg, AF_INET6)))
		return ret;
	if ((need & NEED_GATEWAY) &&
		((ret = flush_set(b, RULESET_SET_TARGETS4)) || (ret = fill_targets(b, cfg, AF_INET)) ||
		(ret = flush_set(b, RULESET_SET_TARGETS6)) || (ret = fill_targets(b, cfg, AF_INET6))))
		return ret;
	for (size_t i = 0; i < CHAIN__COUNT; i++)
		if ((chains[i].need & need) && (ret = add_rules(b, cfg, i)))
			return ret;
	return 0;
}

int ruleset_build(struct nft_batch *b, const struct config *cfg, uint32_t table_flags)
{
	return build(b, cfg, table_flags, false);
}

int ruleset_build_new(struct nft_batch *b, const struct config *cfg, uint32_t table_flags)
{
	return build(b, cfg, table_flags, true);
}

/*
 * The kernel keeps registers as 32-bit slots and names one that starts a 128-bit register by
 * the old name: our "reg 8" (NFT_REG32_00) comes back as "reg 1" (NFT_REG_1), the same slot.
 * Text from either side is put in that form before it is compared.
 */
static void canonical_regs(const char *in, char *out, size_t len)
{
	size_t o = 0;

	while (*in && o + 1 < len) {
		if (!strncmp(in, "reg ", 4) && in[4] >= '0' && in[4] <= '9') {
			char *end;
			unsigned long r = strtoul(in + 4, &end, 10);

			if (r == 8 || r == 12 || r == 16 || r == 20)
				r = (r - 4) / 4;
			o += (size_t)snprintf(out + o, len - o, "reg %lu", r);
			in = end;
			continue;
		}
		out[o++] = *in++;
	}
	out[o < len ? o : len - 1] = '\0';
}

/* A rule as text, without what only the kernel assigns (handle, position). */
static int rule_text(struct nftnl_rule *r, char *buf, size_t len)
{
	char raw[2048];

	nftnl_rule_unset(r, NFTNL_RULE_HANDLE);
	nftnl_rule_unset(r, NFTNL_RULE_POSITION);
	nftnl_rule_unset(r, NFTNL_RULE_ID);
	if (nftnl_rule_snprintf(raw, sizeof(raw), r, NFTNL_OUTPUT_DEFAULT, 0) >= (int)sizeof(raw))
		return -E2BIG;
	canonical_regs(raw, buf, len);
	return 0;
}

/* Whether the kernel's rules of one chain are, in order, the ones cfg wants there. */
static bool rules_match(const struct config *cfg, size_t chain, struct nftnl_rule_list *have)
{
	struct rule_spec spec[MAX_RULES];
	size_t n = rule_specs(cfg, chain, spec), i = 0;
	struct nftnl_rule_list_iter *it = nftnl_rule_list_iter_create(have);
	const char *name = chains[chain].name;
	struct nftnl_rule *k;
	bool same = it != NULL;

	while (same && (k = nftnl_rule_list_iter_next(it))) {
		char want[2048], got[2048];
		struct nftnl_rule *r;

		if (strcmp(nftnl_rule_get_str(k, NFTNL_RULE_CHAIN), name))
			continue;
		if (i == n || !(r = rule_new(name, &spec[i++]))) {
			same = false;
			break;
		}
		same = !rule_text(r, want, sizeof(want)) && !rule_text(k, got, sizeof(got)) &&
			!strcmp(want, got);
		if (!same)
			log_debug("kernel: %s rule %zu differs:\n  want %s\n  have %s", name, i, want,
				got);
		nftnl_rule_free(r);
	}
	if (it)
		nftnl_rule_list_iter_destroy(it);
	return same && i == n;
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static int any_expr(struct nftnl_expr *x __attribute__((unused)), void *arg __attribute__((unused)))
{
	return -1;
}

/*
 * Whether an element carries stateful expressions of its own (a quota, a limit): the kernel
 * takes them even in a set declared without any, and a lookup that hits one past its bound
 * breaks the rule instead of giving its verdict. jitd writes none.
 */
static bool elem_has_expr(struct nftnl_set_elem *e)
{
	return nftnl_set_elem_expr_foreach(e, any_expr, NULL) < 0;
}

/*
 * A set's elements as sorted text: key bytes, the interval-end flag, and whether the element
 * carries expressions of its own (jitd's never do).
 */
static char *elems_text(struct nftnl_set *s)
{
	struct nftnl_set_elems_iter *it = nftnl_set_elems_iter_create(s);
	struct nftnl_set_elem *e;
	char **v = NULL, *out = NULL;
	size_t n = 0, len = 1;

	/* Not an empty text: two sets that could not be read must not compare equal. */
	if (!it)
		return NULL;
	while ((e = nftnl_set_elems_iter_next(it))) {
		uint32_t klen = 0, elen = 0, flags = 0;
		const uint8_t *key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
		const uint8_t *end = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY_END, &elen);
		char **nv = realloc(v, (n + 1) * sizeof(*v));
		size_t o = 0;

		if (!key)
			klen = 0;
		if (!end)
			elen = 0;
		/* nv owns the array from here: realloc has let go of v. */
		if (!nv)
			goto out;
		v = nv;
		if (!(v[n] = malloc(2 * (klen + elen) + 5)))
			goto out;
		if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS))
			flags = nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS);
		for (uint32_t b = 0; b < klen; b++)
			o += (size_t)sprintf(v[n] + o, "%02x", key[b]);
		if (elen)
			v[n][o++] = '-';
		for (uint32_t b = 0; b < elen; b++)
			o += (size_t)sprintf(v[n] + o, "%02x", end[b]);
		strcpy(v[n] + o, flags & NFT_SET_ELEM_INTERVAL_END ? "e" : "");
		strcat(v[n] + o, elem_has_expr(e) ? "x;" : ";");
		len += strlen(v[n++]);
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_str);
	if ((out = malloc(len))) {
		out[0] = '\0';
		for (size_t i = 0; i < n; i++)
			strcat(out, v[i]);
	}
out:
	nftnl_set_elems_iter_destroy(it);
	for (size_t i = 0; i < n; i++)
		free(v[i]);
	free(v);
	return out;
}

/* 1: the kernel's fixed set name holds exactly want's elements; 0: it does not; -errno. */
static int elems_match(struct nft *nft, const char *name, struct nftnl_set *want)
{
	struct nftnl_set *have = NULL;
	char *a = NULL, *b = NULL;
	int ret = nft_set_dump(nft, RULESET_TABLE, name, &have);

	if (ret == -ENOENT)
		return 0;
	if (ret)
		return ret;
	a = elems_text(want);
	b = elems_text(have);
	ret = a && b ? !strcmp(a, b) : -ENOMEM;
	free(a);
	free(b);
	nftnl_set_free(have);
	return ret;
}

/*
 * What the kernel holds under a wanted set's or chain's name. MENDABLE: it differs only in what
 * its own message changes in place (a set's collection interval, an earlier jitd's; a chain's
 * policy); DIFFERS: in what no message changes (type, flags, concatenation, hook, priority).
 */
enum shape_state { SHAPE_MISSING, SHAPE_DIFFERS, SHAPE_MENDABLE, SHAPE_SAME };

/* The concatenation's field lengths: pipapo matches by them, not by the key's type. */
static bool same_fields(struct nftnl_set *s, const struct set_shape *sh)
{
	uint32_t want = (uint32_t)strlen((const char *)sh->fields), have = 0;
	const void *f = nftnl_set_is_set(s, NFTNL_SET_DESC_CONCAT) ?
		nftnl_set_get_data(s, NFTNL_SET_DESC_CONCAT, &have) : NULL;

	return have == want && (!want || (f && !memcmp(f, sh->fields, want)));
}

static enum shape_state set_state(struct nftnl_set_list *sets, const struct set_shape *sh)
{
	struct nftnl_set_list_iter *it = nftnl_set_list_iter_create(sets);
	enum shape_state st = SHAPE_MISSING;
	struct nftnl_set *s;

	while (it && (s = nftnl_set_list_iter_next(it))) {
		if (strcmp(nftnl_set_get_str(s, NFTNL_SET_NAME), sh->name))
			continue;
		bool data = !sh->data_len ||
			(nftnl_set_get_u32(s, NFTNL_SET_DATA_TYPE) == sh->data_type &&
			 nftnl_set_get_u32(s, NFTNL_SET_DATA_LEN) == sh->data_len);

		/*
		 * jitd's sets carry no expressions: a set-wide quota or limit would break the rules
		 * that look it up (a deny rule among them) once past its bound.
		 */
		st = !(nftnl_set_get_u32(s, NFTNL_SET_FLAGS) == sh->flags &&
			nftnl_set_get_u32(s, NFTNL_SET_KEY_TYPE) == sh->key_type &&
			nftnl_set_get_u32(s, NFTNL_SET_KEY_LEN) == sh->key_len &&
			same_fields(s, sh) && data &&
			nftnl_set_expr_foreach(s, any_expr, NULL) == 0) ? SHAPE_DIFFERS :
			(sh->flags & NFT_SET_TIMEOUT) &&
			nftnl_set_get_u32(s, NFTNL_SET_GC_INTERVAL) != GRANT_SET_GC_MS ?
			SHAPE_MENDABLE : SHAPE_SAME;
		break;
	}
	if (it)
		nftnl_set_list_iter_destroy(it);
	return st;
}

static size_t sets_count(struct nftnl_set_list *sets)
{
	struct nftnl_set_list_iter *it = nftnl_set_list_iter_create(sets);
	size_t n = 0;

	while (it && nftnl_set_list_iter_next(it))
		n++;
	if (it)
		nftnl_set_list_iter_destroy(it);
	return n;
}

static enum shape_state chain_state(struct nftnl_chain_list *list, const struct chain_shape *sh)
{
	struct nftnl_chain_list_iter *it = nftnl_chain_list_iter_create(list);
	enum shape_state st = SHAPE_MISSING;
	struct nftnl_chain *c;

	while (it && (c = nftnl_chain_list_iter_next(it))) {
		if (strcmp(nftnl_chain_get_str(c, NFTNL_CHAIN_NAME), sh->name))
			continue;
		st = !(nftnl_chain_is_set(c, NFTNL_CHAIN_TYPE) &&
			!strcmp(nftnl_chain_get_str(c, NFTNL_CHAIN_TYPE), sh->type) &&
			nftnl_chain_get_u32(c, NFTNL_CHAIN_HOOKNUM) == sh->hook &&
			nftnl_chain_get_s32(c, NFTNL_CHAIN_PRIO) == sh->prio) ? SHAPE_DIFFERS :
			nftnl_chain_get_u32(c, NFTNL_CHAIN_POLICY) != NF_ACCEPT ? SHAPE_MENDABLE :
			SHAPE_SAME;
		break;
	}
	if (it)
		nftnl_chain_list_iter_destroy(it);
	return st;
}

static size_t chains_count(struct nftnl_chain_list *list)
{
	struct nftnl_chain_list_iter *it = nftnl_chain_list_iter_create(list);
	size_t n = 0;

	while (it && nftnl_chain_list_iter_next(it))
		n++;
	if (it)
		nftnl_chain_list_iter_destroy(it);
	return n;
}

/* How many sets and chains cfg wants in the table. */
static void wanted(const struct config *cfg, size_t *n_sets, size_t *n_chains)
{
	unsigned need = needs(cfg);

	*n_sets = *n_chains = 0;
	for (size_t i = 0; i < SET__COUNT; i++)
		*n_sets += !!(shapes[i].need & need);
	for (size_t i = 0; i < CHAIN__COUNT; i++)
		*n_chains += !!(chains[i].need & need);
}

int ruleset_extra(struct nft *nft, const struct config *cfg, uint32_t table_flags,
	bool want_mark)
{
	struct nft_table_view v;
	size_t n_sets, n_chains;
	int ret;

	if ((ret = nft_table_view(nft, RULESET_TABLE, &v)))
		return ret;
	wanted(cfg, &n_sets, &n_chains);
	/*
	 * A wanted set or chain of another shape: the messages that make the table do not change
	 * it (the kernel refuses a set of the same name and another kind, or keeps it).
	 */
	ret = 0;
	for (size_t i = 0; i < SET__COUNT && !ret; i++)
		ret = (shapes[i].need & needs(cfg)) &&
			set_state(v.sets, &shapes[i]) == SHAPE_DIFFERS;
	for (size_t i = 0; i < CHAIN__COUNT && !ret; i++)
		ret = (chains[i].need & needs(cfg)) &&
			chain_state(v.chains, &chains[i]) == SHAPE_DIFFERS;
	/*
	 * Each wanted one is there at most once, so any surplus is something cfg would not make.
	 * Persistence differing either way: no message changes it on a table that is not an
	 * orphan. Dormant: waking it marks it so in the kernel, which then refuses a new base
	 * chain in the same transaction (Linux 6.9, and the stable kernels since 2024), so one
	 * whose chain was also deleted could never be rebuilt in place. Without jitd's mark:
	 * another program's table, whose user data no message changes, and whose grants no
	 * jitd gave (the caller restores its own).
	 */
	ret = v.table && (ret || sets_count(v.sets) > n_sets || chains_count(v.chains) > n_chains ||
		((nftnl_table_get_u32(v.table, NFTNL_TABLE_FLAGS) ^ table_flags) &
			RULESET_TABLE_F_PERSIST) ||
		(nftnl_table_get_u32(v.table, NFTNL_TABLE_FLAGS) & NFT_TABLE_F_DORMANT) ||
		(want_mark && !has_mark(v.table)));
	nft_table_view_free(&v);
	return ret;
}

/* 1: the kernel's fixed set name holds exactly what want() makes of cfg; 0: not; -errno. */
static int fixed_match(struct nft *nft, const struct config *cfg, const char *name,
	int (*want)(const struct config *, int, struct nftnl_set **, size_t *), int family)
{
	struct nftnl_set *s = NULL;
	size_t count;
	int ret = want(cfg, family, &s, &count);

	if (ret == 0)
		ret = elems_match(nft, name, s);
	if (s)
		nftnl_set_free(s);
	return ret;
}

static int want_protected_any(const struct config *cfg, int family __attribute__((unused)),
	struct nftnl_set **out, size_t *countp)
{
	return want_protected(cfg, out, countp);
}

int ruleset_in_place(struct nft *nft, const struct config *cfg, uint32_t table_flags,
	bool want_mark, const char **differs)
{
	struct nft_table_view v;
	unsigned need = needs(cfg);
	size_t n_sets, n_chains;
	uint64_t packets, bytes;
	int ret;

	*differs = "";
	if ((ret = nft_table_view(nft, RULESET_TABLE, &v)))
		return ret;
	ret = 0;
	if (!v.table) {
		*differs = "table inet jitd is missing";
		goto out;
	}
	/*
	 * An owned table whose owner exited has lost its owner flag, and is claimed again anyway
	 * (ruleset_claim). A dormant one filters nothing: anyone who may change the table (any
	 * root process, unless jitd owns it) can make it so, and the rebuild wakes it.
	 */
	if (nftnl_table_get_u32(v.table, NFTNL_TABLE_FLAGS) & NFT_TABLE_F_DORMANT) {
		*differs = "table inet jitd is dormant (filtering nothing)";
		goto out;
	}
	if ((nftnl_table_get_u32(v.table, NFTNL_TABLE_FLAGS) ^ table_flags) &
		RULESET_TABLE_F_PERSIST) {
		*differs = "table flags differ";
		goto out;
	}
	wanted(cfg, &n_sets, &n_chains);
	for (size_t i = 0; i < SET__COUNT; i++) {
		if ((shapes[i].need & need) && set_state(v.sets, &shapes[i]) != SHAPE_SAME) {
			*differs = "a set is missing or differs (type, flags, expressions or "
				"collection interval)";
			goto out;
		}
	}
	if (sets_count(v.sets) != n_sets) {
		*differs = "the table holds sets jitd did not make";
		goto out;
	}
	for (size_t i = 0; i < CHAIN__COUNT; i++) {
		if (!(chains[i].need & need))
			continue;
		if (chain_state(v.chains, &chains[i]) != SHAPE_SAME) {
			*differs = "a chain is missing or differs";
			goto out;
		}
		if (!rules_match(cfg, i, v.rules)) {
			*differs = "the rules differ";
			goto out;
		}
	}
	if (chains_count(v.chains) != n_chains) {
		*differs = "the table holds chains jitd did not make";
		goto out;
	}
	/* Only ENOENT says it is missing: any other error is a read that failed. */
	if ((ret = nft_counter_get(nft, RULESET_TABLE, RULESET_COUNTER_DENIED, &packets, &bytes))) {
		if (ret == -ENOENT) {
			*differs = "the counter is missing";
			ret = 0;
		}
		goto out;
	}
	if ((ret = fixed_match(nft, cfg, RULESET_SET_PROTECTED, want_protected_any, 0)) <= 0 ||
		(ret = fixed_match(nft, cfg, RULESET_SET_ALWAYS4, want_always, AF_INET)) <= 0 ||
		(ret = fixed_match(nft, cfg, RULESET_SET_ALWAYS6, want_always, AF_INET6)) <= 0)
		goto fixed;
	if ((need & NEED_GATEWAY) &&
		((ret = fixed_match(nft, cfg, RULESET_SET_TARGETS4, want_targets, AF_INET)) <= 0 ||
		(ret = fixed_match(nft, cfg, RULESET_SET_TARGETS6, want_targets, AF_INET6)) <= 0))
		goto fixed;
	/* Last: what else differs says more. */
	if (want_mark && !has_mark(v.table)) {
		*differs = "table inet jitd has no jitd mark: another program made it (a saved "
			"ruleset loaded at the boot?), or a jitd older than the mark";
		ret = 0;
		goto out;
	}
	ret = 1;
fixed:
	if (ret == 0)
		*differs = "the protected ports, targets or always-allowed sources differ";
out:
	nft_table_view_free(&v);
	return ret;
}

int ruleset_delete(struct nft_batch *b)
{
	struct nftnl_table *t = table_new();
	struct nlmsghdr *nlh;

	if (!t)
		return -ENOMEM;
	nlh = nft_batch_msg(b, NFT_MSG_DELTABLE, NFPROTO_INET, 0, "delete table inet jitd");
	if (nlh)
		nftnl_table_nlmsg_build_payload(nlh, t);
	nftnl_table_free(t);
	return nlh ? 0 : -ENOMEM;
}

/*
 * An element's key, its start (lo side) or its end (hi side): src . proto . port (host, dnat)
 * or src . dst . proto . port (forward), each member padded to its register slot.
 */
static uint32_t elem_key(const struct ruleset_elem *e, bool end, uint8_t key[48])
{
	size_t alen = e->family == AF_INET ? 4 : 16;

	if (e->kind != RULESET_FORWARD)
		return addr_proto_port(key, end ? e->hi : e->lo, alen, e->ipproto, e->port);
	memcpy(key, end ? e->hi : e->lo, alen);
	return (uint32_t)alen + addr_proto_port(key + alen, end ? e->dhi : e->dlo, alen, e->ipproto,
		e->port);
}

static int put_elem(struct nftnl_set *s, const struct ruleset_elem *re, int64_t timeout_ms)
{
	struct nftnl_set_elem *e = nftnl_set_elem_alloc();
	uint8_t key[48];

	if (!e)
		return -ENOMEM;
	nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, key, elem_key(re, false, key));
	if (re->kind != RULESET_HOST_ADDR)
		nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY_END, key, elem_key(re, true, key));
	if (re->kind == RULESET_DNAT) {
		uint8_t data[8] = { 0 };
		uint16_t port = htons(re->to_port);

		memcpy(data, re->dlo, 4);
		memcpy(&data[4], &port, 2);
		nftnl_set_elem_set(e, NFTNL_SET_ELEM_DATA, data, sizeof(data));
	}
	if (timeout_ms > 0)
		nftnl_set_elem_set_u64(e, NFTNL_SET_ELEM_TIMEOUT, (uint64_t)timeout_ms);
	nftnl_set_elem_add(s, e);
	return 0;
}

/*
 * libnftnl's element objects are about 600 bytes each: a restore at 100,000 grants held one
 * shard's 6,250 of them (3.7 MB) beside the 4.3 MB batch at its peak (heaptrack). They go to
 * the batch this many at a time instead; the messages stay in the same transaction. Test
 * builds take fewer, so that the end-to-end tests' hundreds of elements cross chunks.
 */
#ifdef JITD_TEST_HOOKS
#define ELEMS_CHUNK 64
#else
#define ELEMS_CHUNK 1024
#endif

/*
 * An element to add with less time left than this is left out: a kernel without e0c47281723f
 * ("netfilter: nf_tables: elements with timeout below CONFIG_HZ never expire", 2024) rounds a
 * timeout under one tick (10 ms at HZ=100) to none, and the element would never expire. Its
 * grant loses these last moments instead, which errs closed; grants are admitted with a
 * second or more left, so only an element re-added in its grant's last moments (a range split
 * by another grant, a repair) is concerned.
 */
#define MIN_TIMEOUT_MS 50

/* One message series per (set, direction): kind, family and shard decide the set. */
static int elems_for(struct nft_batch *b, const struct ruleset_elem *v, size_t n, int kind,
	int family, unsigned shard, bool add, int64_t now_ms)
{
	const char *name = ruleset_set_name(kind, family, shard);
	uint16_t type = add ? NFT_MSG_NEWSETELEM : NFT_MSG_DELSETELEM;
	struct nftnl_set *s;
	char what[64];
	size_t count = 0;
	int ret = 0;

	if (!name)
		return 0;
	if (!(s = set_new(name)))
		return -ENOMEM;
	snprintf(what, sizeof(what), "%s element %s %s", add ? "add" : "delete",
		add ? "to" : "from", name);
	for (size_t i = 0; ret == 0 && i < n; i++) {
		int64_t left = v[i].exp_ms - now_ms;

		if (v[i].kind != kind || v[i].family != family || ruleset_elem_shard(&v[i]) != shard)
			continue;
		if (add && left < MIN_TIMEOUT_MS)
			continue;
		if (v[i].ipproto != IPPROTO_TCP && v[i].ipproto != IPPROTO_UDP)
			ret = -EINVAL;
		else
			ret = put_elem(s, &v[i], add ? left : 0);
		if (ret == 0 && ++count == ELEMS_CHUNK) {
			ret = send_elems(b, s, count, type, what);
			nftnl_set_free(s);
			count = 0;
			if (ret)
				return ret;
			if (!(s = set_new(name)))
				return -ENOMEM;
		}
	}
	if (ret == 0)
		ret = send_elems(b, s, count, type, what);
	nftnl_set_free(s);
	return ret;
}

/*
 * Deletions of every set first, so that a changed element is delete + add in one transaction.
 * Only the sets that elements go to are built: preparing all 38 for one grant's element took
 * 37 us of its 1 ms (ad hoc), more than the kernel's transaction.
 */
static int elems_all(struct nft_batch *b, const struct ruleset_elem *v, size_t n, bool add,
	int64_t now_ms)
{
	static const int families[] = { AF_INET, AF_INET6 };
	bool used[RULESET_KINDS][2][RULESET_ADDR_SHARDS] = { { { false } } };
	int ret = 0;

	for (size_t i = 0; i < n; i++)
		if ((unsigned)v[i].kind < RULESET_KINDS)
			used[v[i].kind][v[i].family == AF_INET6][ruleset_elem_shard(&v[i])] = true;
	for (int kind = 0; ret == 0 && kind < RULESET_KINDS; kind++)
		for (size_t f = 0; ret == 0 && f < 2; f++)
			for (unsigned k = 0; ret == 0 && k < ruleset_shards(kind); k++)
				if (used[kind][f][k])
					ret = elems_for(b, v, n, kind, families[f], k, add, now_ms);
	return ret;
}

int ruleset_elems(struct nft_batch *b, const struct ruleset_elem *del, size_t n_del,
	const struct ruleset_elem *add, size_t n_add, int64_t now_ms)
{
	int ret = elems_all(b, del, n_del, false, now_ms);

	return ret ? ret : elems_all(b, add, n_add, true, now_ms);
}

int ruleset_raw_from(struct nftnl_set_elem *e, const char *set, struct ruleset_raw *out)
{
	const void *key, *end;
	uint32_t klen = 0, elen = 0;

	memset(out, 0, sizeof(*out));
	/*
	 * A catch-all element has no key, and the kernel's lookup falls back to it when no key
	 * matches: in an allow set it lets every source in. Deleted by its flag.
	 */
	if (nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_FLAGS) &&
		(nftnl_set_elem_get_u32(e, NFTNL_SET_ELEM_FLAGS) & RULESET_SET_ELEM_CATCHALL)) {
		out->set = set;
		out->catchall = true;
		return 0;
	}
	key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
	end = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY_END, &elen);
	if (!key || klen > sizeof(out->key) || (end && elen > sizeof(out->end)))
		return -EINVAL;
	out->set = set;
	memcpy(out->key, key, klen);
	out->klen = klen;
	if (end) {
		memcpy(out->end, end, elen);
		out->elen = elen;
	}
	return 0;
}

int ruleset_raw_delete(struct nft_batch *b, const struct ruleset_raw *v, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct nftnl_set *s = set_new(v[i].set);
		struct nftnl_set_elem *e = nftnl_set_elem_alloc();
		struct nlmsghdr *nlh = NULL;
		char what[96];

		if (s && e) {
			if (v[i].catchall)
				nftnl_set_elem_set_u32(e, NFTNL_SET_ELEM_FLAGS,
					RULESET_SET_ELEM_CATCHALL);
			else
				nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, v[i].key, v[i].klen);
			if (v[i].elen)
				nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY_END, v[i].end, v[i].elen);
			nftnl_set_elem_add(s, e);
			e = NULL;
			snprintf(what, sizeof(what), "delete an element jitd did not write from %s",
				v[i].set);
			if ((nlh = nft_batch_msg(b, NFT_MSG_DELSETELEM, NFPROTO_INET, 0, what)))
				nftnl_set_elems_nlmsg_build_payload(nlh, s);
		}
		if (e)
			nftnl_set_elem_free(e);
		if (s)
			nftnl_set_free(s);
		if (!nlh)
			return -ENOMEM;
	}
	return 0;
}

/* The bytes of a (protocol . port) key part that the registers leave zero: 3 after each. */
static bool padding_zero(const uint8_t *pp)
{
	return !pp[1] && !pp[2] && !pp[3] && !pp[6] && !pp[7];
}

int ruleset_elem_parse(struct nftnl_set_elem *e, int kind, int family, unsigned shard,
	int64_t now_ms, struct ruleset_elem *out)
{
	size_t alen = family == AF_INET ? 4 : 16, off = kind == RULESET_FORWARD ? alen : 0;
	const uint8_t *key, *end, *data;
	uint32_t klen = 0, elen = 0, dlen = 0;
	uint16_t port;

	memset(out, 0, sizeof(*out));
	key = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY, &klen);
	end = nftnl_set_elem_get(e, NFTNL_SET_ELEM_KEY_END, &elen);
	/* A hash set's element is one key: its own end. */
	if (kind == RULESET_HOST_ADDR && !end) {
		end = key;
		elen = klen;
	}
	if (!key || !end || klen != off + alen + 8 || elen != klen)
		return -EINVAL;
	/* One (protocol, port) per element: jitd never writes a range of them. */
	if (key[off + alen] != end[off + alen] || memcmp(&key[off + alen + 4], &end[off + alen + 4], 2))
		return -EINVAL;
	/*
	 * Not jitd's either, and so strays, deleted by their exact keys: an element that would
	 * pass for a grant's while a quota or limit of its own throttles it, or whose padding is
	 * not zero (it matches no packet, and a deletion jitd writes would not match it).
	 */
	if (elem_has_expr(e) || !padding_zero(&key[off + alen]) || !padding_zero(&end[off + alen]))
		return -EINVAL;
	out->kind = (uint8_t)kind;
	out->family = family;
	memcpy(out->lo, key, alen);
	memcpy(out->hi, end, alen);
	if (kind == RULESET_FORWARD) {
		memcpy(out->dlo, key + alen, alen);
		memcpy(out->dhi, end + alen, alen);
	}
	/* Another protocol (sctp, say) would be planned for deletion in a form jitd cannot write. */
	if (key[off + alen] != IPPROTO_TCP && key[off + alen] != IPPROTO_UDP)
		return -EINVAL;
	out->ipproto = key[off + alen];
	memcpy(&port, &key[off + alen + 4], 2);
	out->port = ntohs(port);
	if (kind == RULESET_DNAT) {
		data = nftnl_set_elem_get(e, NFTNL_SET_ELEM_DATA, &dlen);
		if (!data || dlen != 8 || data[6] || data[7])
			return -EINVAL;
		memcpy(out->dlo, data, 4);
		memcpy(out->dhi, data, 4);
		memcpy(&port, &data[4], 2);
		out->to_port = ntohs(port);
	}
	if (ruleset_elem_shard(out) != shard)
		return -EINVAL;
	/*
	 * No expiration means no timeout: an element that never expires. jitd writes none, and one
	 * taken for an expired element would be left alone for good, so it is not jitd's.
	 */
	if (!nftnl_set_elem_is_set(e, NFTNL_SET_ELEM_EXPIRATION))
		return -EINVAL;
	out->exp_ms = now_ms + (int64_t)nftnl_set_elem_get_u64(e, NFTNL_SET_ELEM_EXPIRATION);
	return 0;
}

struct set_reading {
	const char *name;
	int kind, family;
	unsigned shard;
	int64_t now_ms;
	ruleset_elem_fn fn;
	void *arg;
};

/* One reply's elements to fn: decoded when jitd could have written them, else by exact keys. */
static int read_part(struct nftnl_set *part, void *arg)
{
	const struct set_reading *r = arg;
	struct nftnl_set_elems_iter *it = nftnl_set_elems_iter_create(part);
	struct nftnl_set_elem *el;
	int ret = 0;

	if (!it)
		return -ENOMEM;
	while (ret == 0 && (el = nftnl_set_elems_iter_next(it))) {
		struct ruleset_elem re;
		struct ruleset_raw raw;

		if (ruleset_elem_parse(el, r->kind, r->family, r->shard, r->now_ms, &re) == 0)
			ret = r->fn(r->arg, r->name, &re, NULL);
		else
			ret = r->fn(r->arg, r->name, NULL,
				ruleset_raw_from(el, r->name, &raw) ? NULL : &raw);
	}
	nftnl_set_elems_iter_destroy(it);
	return ret;
}

static int read_sets(struct nft *n, const struct config *cfg, int64_t now_ms,
	ruleset_elem_fn fn, void *arg)
{
	static const int families[] = { AF_INET, AF_INET6 };
	int ret = 0;

	for (int kind = 0; ret == 0 && kind < RULESET_KINDS; kind++) {
		/* A set cfg does not want is not there (or goes with the next build). */
		if (!ruleset_wants(cfg, kind))
			continue;
		for (size_t f = 0; ret == 0 && f < 2; f++) {
			for (unsigned k = 0; ret == 0 && k < ruleset_shards(kind); k++) {
				struct set_reading r = { .name = ruleset_set_name(kind, families[f], k),
					.kind = kind, .family = families[f], .shard = k,
					.now_ms = now_ms, .fn = fn, .arg = arg };

				if (r.name)
					ret = nft_set_elems_each(n, RULESET_TABLE, r.name, read_part,
						&r);
			}
		}
	}
	return ret;
}

int ruleset_read_grants(struct nft *n, const struct config *cfg, int64_t now_ms,
	ruleset_elem_fn fn, ruleset_restart_fn restart, void *arg)
{
	int ret = read_sets(n, cfg, now_ms, fn, arg);

	/* The sets are read a reply at a time, so an interrupted one is read again from the top. */
	for (int tries = 1; ret == -EINTR && tries < NFT_DUMP_TRIES; tries++) {
		restart(arg);
		ret = read_sets(n, cfg, now_ms, fn, arg);
	}
	return ret;
}
