#ifndef JITD_AGENT_RULESET_H
#define JITD_AGENT_RULESET_H

#include <stddef.h>
#include <stdint.h>

struct config;
struct nft_batch;
struct nftnl_set_elem;

/*
 * What table inet jitd looks like. ruleset_build describes it as libnftnl objects; nft.c sends.
 *
 *   set protected  { inet_proto . inet_service }                         config ports
 *   set always4/6  { ipv4_addr / ipv6_addr; flags interval }             config always_allow
 *   set allow4/6   { ipv4_addr|ipv6_addr . inet_proto . inet_service;
 *                    flags interval, timeout }                            grants
 *   counter denied
 *   chain input { type filter hook input priority 0; policy accept;
 *     ct state established,related accept
 *     meta l4proto . th dport != @protected return
 *     ip saddr @always4 accept;  ip6 saddr @always6 accept
 *     ip saddr . meta l4proto . th dport @allow4 accept;  (ip6 likewise)
 *     meta l4proto . th dport @protected counter name denied drop|reject }
 */
#define RULESET_TABLE "jitd"
#define RULESET_CHAIN "input"
#define RULESET_SET_PROTECTED "protected"
#define RULESET_SET_ALWAYS4 "always4"
#define RULESET_SET_ALWAYS6 "always6"
#define RULESET_SET_ALLOW4 "allow4"
#define RULESET_SET_ALLOW6 "allow6"
#define RULESET_COUNTER_DENIED "denied"

/* One allow-set element: [lo, hi] source range x protocol x port, open until exp_ms. */
struct ruleset_elem {
	int family;	/* AF_INET or AF_INET6 */
	uint8_t ipproto; /* IPPROTO_TCP or IPPROTO_UDP */
	uint16_t port;
	uint8_t lo[16];
	uint8_t hi[16];
	int64_t exp_ms;	/* wall clock */
};

/*
 * Appends to b everything that makes the table match cfg, in one transaction: table, sets,
 * counter and chain are created if missing; the chain's rules, the protected set and the
 * always-allow sets are replaced; allow-set elements (live grants) are left untouched.
 * Returns 0 or -ENOMEM / -EINVAL.
 */
int ruleset_build(struct nft_batch *b, const struct config *cfg, uint32_t table_flags);
/* Claims an existing table with table_flags (ownership), changing nothing else; 0 flags: no-op. */
int ruleset_claim(struct nft_batch *b, uint32_t table_flags);
/*
 * Whether the kernel already holds exactly what ruleset_build would make of cfg: table flags,
 * sets and their types, chain, rules (compared as libnftnl renders them) and the fixed sets'
 * elements. The allow sets' elements are not looked at. 1: in place; 0: not, *differs says
 * what first differed; -errno. Lets a restart leave a table that is right untouched.
 */
struct nft;
int ruleset_in_place(struct nft *nft, const struct config *cfg, uint32_t table_flags,
	const char **differs);

/*
 * Table ownership (Linux 6.9+): while jitd's socket owns the table no other process can change
 * it, and with PERSIST the table stays (unowned) when jitd exits, instead of being deleted with
 * its owner, which would open the ports on a crash. The uapi headers of Debian 12 predate
 * PERSIST, hence the number.
 */
#define RULESET_TABLE_F_OWNER 0x2u   /* NFT_TABLE_F_OWNER */
#define RULESET_TABLE_F_PERSIST 0x4u /* NFT_TABLE_F_PERSIST */
/* Appends the deletion of the whole table (jitctl teardown, tests). */
int ruleset_delete(struct nft_batch *b);
/*
 * Appends deletions then additions of allow-set elements (deletions first, so a changed range
 * or timeout is delete + add in the same transaction). Added elements get timeout
 * exp_ms - now_ms (at least 1 ms). Returns 0 or -ENOMEM / -EINVAL.
 */
int ruleset_elems(struct nft_batch *b, const struct ruleset_elem *del, size_t n_del,
	const struct ruleset_elem *add, size_t n_add, int64_t now_ms);
/*
 * Decodes a dumped allow-set element of family into *out (exp_ms from its remaining time and
 * now_ms). Returns 0, or -EINVAL for an element jitd cannot have written.
 */
int ruleset_elem_parse(struct nftnl_set_elem *e, int family, int64_t now_ms,
	struct ruleset_elem *out);

#endif
