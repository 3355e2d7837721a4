#ifndef JITD_AGENT_RULESET_H
#define JITD_AGENT_RULESET_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct nft;
struct nft_batch;
struct nftnl_set_elem;
struct prefix;

/*
 * What table inet jitd looks like. ruleset_build describes it as libnftnl objects; nft.c sends.
 *
 *   set protected  { inet_proto . inet_service }                         config ports
 *   set always4/6  { ipv4_addr / ipv6_addr; flags interval }             config always_allow
 *   set allow4_addr_0 .. allow4_addr_15, allow6_addr_0 .. allow6_addr_15
 *                  { ipv4_addr|ipv6_addr . inet_proto . inet_service;
 *                    flags timeout }                            grants from one address
 *   set allow4/6   { ipv4_addr|ipv6_addr . inet_proto . inet_service;
 *                    flags interval, timeout }                  grants from wider prefixes
 *   counter denied
 *   chain input { type filter hook input priority 0; policy accept;
 *     ct state established ct direction original accept
 *     ct state established meta l4proto != tcp accept   (not related: see add_ct_established)
 *     meta l4proto . th dport != @protected return
 *     ip saddr @always4 accept;  ip6 saddr @always6 accept
 *     ip saddr & 0.0.0.15 == K ip saddr . meta l4proto . th dport @allow4_addr_K accept;
 *       (K = 0..15; ip6 likewise, by the low four bits of the address's last byte)
 *     ip saddr . meta l4proto . th dport @allow4 accept;  (ip6 likewise)
 *     meta l4proto . th dport @protected counter name denied drop|reject }
 *
 * Mode gateway or both adds what guards the machines behind the host (config "targets"):
 *
 *   set targets4/6 { ipv4_addr|ipv6_addr . inet_proto . inet_service; flags interval }  config
 *   set fwd4/6     { saddr . daddr . inet_proto . inet_service; flags interval, timeout } grants
 *   chain forward { type filter hook forward priority 0; policy accept;
 *     the same two ct state rules;  ip saddr @always4 accept (ip6 likewise)
 *     ip saddr . ip daddr . meta l4proto . th dport @fwd4 accept (ip6 likewise)
 *     ip daddr . meta l4proto . th dport @targets4 counter name denied drop|reject (ip6 likewise) }
 *
 * and, when a target maps ports (dnat), the gateway ports granted sources may connect to:
 *
 *   map dnat4 { ipv4_addr . inet_proto . inet_service : ipv4_addr . inet_service;
 *               flags interval, timeout }                                        grants
 *   chain prerouting { type nat hook prerouting priority dstnat; policy accept;
 *     meta l4proto tcp fib daddr type local
 *       dnat ip to ip saddr . meta l4proto . th dport map @dnat4  (udp likewise) }
 */
#define RULESET_TABLE "jitd"
#define RULESET_CHAIN "input"
#define RULESET_SET_PROTECTED "protected"
#define RULESET_SET_ALWAYS4 "always4"
#define RULESET_SET_ALWAYS6 "always6"
#define RULESET_SET_ALLOW4 "allow4"
#define RULESET_SET_ALLOW6 "allow6"
/* Prefixes of the one-address sets' names: allow4_addr_0 .. allow4_addr_15 (likewise 6). */
#define RULESET_SET_ALLOW4_ADDR "allow4_addr"
#define RULESET_SET_ALLOW6_ADDR "allow6_addr"
/*
 * How many hash sets one-address grants are spread over, by the low bits of the address. The
 * kernel walks a hash set from its start again for every part of a dump, so dumping one set of
 * n elements costs about n * n / 500 steps (at 100,000 grants, seconds); sixteen sets cost a
 * sixteenth of that. The low bits of an address are what the rule can select a set by.
 */
#define RULESET_ADDR_SHARDS 16
#define RULESET_COUNTER_DENIED "denied"
#define RULESET_CHAIN_FORWARD "forward"
#define RULESET_CHAIN_NAT "prerouting"
#define RULESET_SET_TARGETS4 "targets4"
#define RULESET_SET_TARGETS6 "targets6"
#define RULESET_SET_FWD4 "fwd4"
#define RULESET_SET_FWD6 "fwd6"
#define RULESET_MAP_DNAT4 "dnat4"

/*
 * Which set an element lives in: allow4/6, allow4_addr/allow6_addr, fwd4/6 or the dnat4 map.
 * A grant from one address goes to the hash set: a transaction that adds to an interval set
 * makes the kernel clone the whole set (pipapo), which at 100,000 grants costs more than the
 * rest of the grant; a hash set takes an insert alone.
 */
enum ruleset_kind {
	RULESET_HOST = 0,      /* prefixes wider than one address: disjoint ranges */
	RULESET_HOST_ADDR = 1, /* single addresses: lo == hi */
	RULESET_FORWARD = 2,
	RULESET_DNAT = 3,
	RULESET_KINDS = 4
};

/*
 * One element of a grant set: [lo, hi] source range x protocol x port, open until exp_ms. For
 * RULESET_FORWARD also x [dlo, dhi], the destination range. For RULESET_DNAT, port is the
 * gateway's port and the element maps it to dlo:to_port (dhi == dlo).
 */
struct ruleset_elem {
	uint8_t kind;	/* enum ruleset_kind */
	uint8_t ipproto; /* IPPROTO_TCP or IPPROTO_UDP */
	uint16_t port;
	uint16_t to_port;
	int family;	/* AF_INET or AF_INET6 */
	uint8_t lo[16];
	uint8_t hi[16];
	uint8_t dlo[16];
	uint8_t dhi[16];
	int64_t exp_ms;	/* wall clock */
};
/*
 * The set (or map) holding elements of kind and family, and for RULESET_HOST_ADDR of one
 * shard (0 otherwise); NULL for a combination there is not.
 */
const char *ruleset_set_name(int kind, int family, unsigned shard);
/* How many sets elements of kind are spread over: RULESET_ADDR_SHARDS or 1. */
unsigned ruleset_shards(int kind);
/* Which of its kind's sets e belongs in. */
unsigned ruleset_elem_shard(const struct ruleset_elem *e);
/* The set e belongs in. */
const char *ruleset_elem_set(const struct ruleset_elem *e);
/*
 * qsort/bsearch orders of elements. ruleset_elem_cmp: group (kind, family, protocol, port),
 * then addresses; the order the enforcer keeps its model in and status compares the kernel's
 * elements in. ruleset_elem_cmp_addrs: addresses alone (dlo, lo, hi, dhi), within one group.
 */
int ruleset_elem_cmp(const void *a, const void *b);
int ruleset_elem_cmp_addrs(const void *a, const void *b);
/* The first of v's n elements (sorted by ruleset_elem_cmp) not ordered before key. */
size_t ruleset_elem_lower(const struct ruleset_elem *v, size_t n, const struct ruleset_elem *key);
/* Every set whose elements are grants, NULL-terminated: the names a watcher treats as such. */
const char *const *ruleset_grant_sets(void);
/* Where a host grant's source goes: RULESET_HOST_ADDR (one address) or RULESET_HOST. */
int ruleset_host_kind(const struct prefix *src);

/*
 * Appends to b everything that makes the table match cfg, in one transaction: table, sets,
 * counter and chain are created if missing; the chain's rules, the protected set and the
 * always-allow sets are replaced; allow-set elements (live grants) are left untouched.
 * Returns 0 or -ENOMEM / -EINVAL.
 */
int ruleset_build(struct nft_batch *b, const struct config *cfg, uint32_t table_flags);
/*
 * ruleset_build for a table that must not exist yet: should one appear after the caller looked,
 * the kernel refuses the whole batch (-EEXIST) rather than rewrite another's rules and sets.
 */
int ruleset_build_new(struct nft_batch *b, const struct config *cfg, uint32_t table_flags);
/*
 * 1 when the kernel's table holds a set or chain that ruleset_build(cfg) would not make (a mode
 * or dnat change since it was built), one it makes under that name but of another shape (type,
 * flags, concatenation, hook: the messages that build it cannot change that), is persistent
 * where table_flags is not or the other way round (no message changes that on a table that is
 * not an orphan), is dormant, or has no jitd mark (ruleset_table_state) when want_mark (false:
 * the kernel keeps no table user data, before Linux 5.10): the table must then be rebuilt from
 * scratch. 0 or -errno.
 */
int ruleset_extra(struct nft *nft, const struct config *cfg, uint32_t table_flags,
	bool want_mark);
/* Whether cfg's table has the set(s) for elements of kind (enum ruleset_kind). */
int ruleset_wants(const struct config *cfg, int kind);
/* Whether two configs make tables of the same shape (same sets and chains). */
int ruleset_same_shape(const struct config *a, const struct config *b);
/*
 * Whether the kernel holds table inet jitd, and whether a jitd made it (a mark in its user data
 * that nft neither prints nor makes): a saved ruleset loaded at a boot brings back a table of
 * another day, unmarked. RULESET_TABLE_NONE, _JITDS or _OTHER; or -errno.
 */
enum { RULESET_TABLE_NONE = 1, RULESET_TABLE_JITDS = 2, RULESET_TABLE_OTHER = 3 };
int ruleset_table_state(struct nft *nft);
/* Claims an existing table with table_flags (ownership), changing nothing else; 0 flags: no-op. */
int ruleset_claim(struct nft_batch *b, uint32_t table_flags);
/*
 * Whether the kernel already holds exactly what ruleset_build would make of cfg: table flags,
 * sets and their types, chain, rules (compared as libnftnl renders them), the fixed sets'
 * elements and, when want_mark, jitd's mark. The allow sets' elements are not looked at. 1: in
 * place; 0: not, *differs says what first differed; -errno. Lets a restart leave a table that
 * is right untouched.
 */
int ruleset_in_place(struct nft *nft, const struct config *cfg, uint32_t table_flags,
	bool want_mark, const char **differs);

/*
 * Table ownership (Linux 6.9+): while jitd's socket owns the table no other process can change
 * it, and with PERSIST the table stays (unowned) when jitd exits, instead of being deleted with
 * its owner, which would open the ports on a crash. The uapi headers of Debian 12 predate
 * PERSIST, hence the number.
 */
#define RULESET_TABLE_F_OWNER 0x2u   /* NFT_TABLE_F_OWNER */
#define RULESET_TABLE_F_PERSIST 0x4u /* NFT_TABLE_F_PERSIST */
/* NFT_SET_ELEM_CATCHALL, an enum value (Linux 5.13's uapi), hence the number too. */
#define RULESET_SET_ELEM_CATCHALL 0x2u
/* Appends the deletion of the whole table (jitctl teardown, tests). */
int ruleset_delete(struct nft_batch *b);
/*
 * Appends deletions then additions of allow-set elements (deletions first, so a changed range
 * or timeout is delete + add in the same transaction). Added elements get timeout
 * exp_ms - now_ms; one with less than 50 ms left is not added (under a kernel tick, an old
 * kernel would keep it for ever). Returns 0 or -ENOMEM / -EINVAL.
 */
int ruleset_elems(struct nft_batch *b, const struct ruleset_elem *del, size_t n_del,
	const struct ruleset_elem *add, size_t n_add, int64_t now_ms);
/*
 * An element as the kernel holds it, by its set and exact keys: one that jitd cannot have
 * written (ruleset_elem_parse refused it) and removes as it is.
 */
struct ruleset_raw {
	const char *set; /* a name ruleset_set_name gave: static */
	uint8_t key[64], end[64];
	uint32_t klen, elen; /* elen 0: the set's elements have no end key */
	bool catchall;	/* the set's catch-all element ("*"): no key; it matches every packet */
};
/*
 * Captures a dumped element of set for ruleset_raw_delete: one with keys, or the catch-all.
 * 0, or -EINVAL if its keys do not fit.
 */
int ruleset_raw_from(struct nftnl_set_elem *e, const char *set, struct ruleset_raw *out);
/* Appends the deletion of each element by its exact keys. 0 or -ENOMEM. */
int ruleset_raw_delete(struct nft_batch *b, const struct ruleset_raw *v, size_t n);
/*
 * Decodes a dumped element of the kind, family and shard set into *out (exp_ms from its
 * remaining time and now_ms). Returns 0, or -EINVAL for an element jitd cannot have written:
 * one without a timeout, a range of ports, an address in another shard's set.
 */
int ruleset_elem_parse(struct nftnl_set_elem *e, int kind, int family, unsigned shard,
	int64_t now_ms, struct ruleset_elem *out);
/*
 * Called for each element of a grant set: re when jitd could have written it (ruleset_elem_parse),
 * else raw, its exact keys (NULL as well if even those do not fit). Non-zero stops the reading.
 */
typedef int (*ruleset_elem_fn)(void *arg, const char *set, const struct ruleset_elem *re,
	const struct ruleset_raw *raw);
/* Forget every element passed so far: the reading starts again. */
typedef void (*ruleset_restart_fn)(void *arg);
/*
 * Dumps every grant set cfg has (each kind, family and shard, in that order) and passes each
 * element to fn. Sets are read a reply at a time, never held whole; if the ruleset changes
 * while one is read, restart is called and the reading starts again (NFT_DUMP_TRIES in all).
 * 0, a dump's -errno, or what fn returned.
 */
int ruleset_read_grants(struct nft *n, const struct config *cfg, int64_t now_ms,
	ruleset_elem_fn fn, ruleset_restart_fn restart, void *arg);

#endif
