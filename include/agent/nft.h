#ifndef JITD_AGENT_NFT_H
#define JITD_AGENT_NFT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct nlmsghdr;
struct nftnl_set;

/*
 * Every nf_tables conversation jitd has with the kernel: atomic batches with every ack digested,
 * and consistent dumps. Functions return 0 or -errno; where the kernel explained a refusal
 * (NETLINK_EXT_ACK), the text is copied into the caller's err buffer.
 */
struct nft;
struct nft_batch;

#define NFT_ERRLEN 256

/* Opens a NETLINK_NETFILTER socket with extended acks. Returns 0 or -errno. */
int nft_open(struct nft **out);
/* Closes and NULLs *n; accepts NULL and *n == NULL. */
void nft_close(struct nft **n);

/* A new empty transaction on n. Returns 0 or -ENOMEM. */
int nft_batch_new(struct nft *n, struct nft_batch **out);
/*
 * Appends a message header of NFT_MSG_<type> with NLM_F_ACK added to flags; the caller fills the
 * payload with nftnl_*_nlmsg_build_payload before the next call. what names the change in error
 * reports ("add element to allow4"; copied). Returns the header, or NULL on allocation failure.
 */
struct nlmsghdr *nft_batch_msg(struct nft_batch *b, uint16_t type, uint16_t family,
	uint16_t flags, const char *what);
/* Number of messages in the batch (0 = nothing to commit). */
size_t nft_batch_count(const struct nft_batch *b);
/*
 * Sends the batch as one transaction and waits for every ack. Returns 0 only if the kernel
 * acknowledged every message; otherwise -errno of the first failure, and err holds
 * "<what>: <kernel text or strerror>". Either everything was applied or nothing was: which,
 * after a failure, nft_batch_unanswered tells.
 */
int nft_batch_commit(struct nft_batch *b, char err[static NFT_ERRLEN]);
/*
 * Whether the last commit failed without the kernel's verdict (its acks not all read: a
 * timeout, a failed read), so that the batch may have been applied all the same. A refusal
 * the kernel answered applied nothing.
 */
bool nft_batch_unanswered(const struct nft_batch *b);
void nft_batch_free(struct nft_batch *b);

/* How many times a dump interrupted by a change of the ruleset is tried in all. */
#define NFT_DUMP_TRIES 5

/* Sets *exists to whether table (family inet) exists. Returns 0 or -errno. */
int nft_table_exists(struct nft *n, const char *table, bool *exists);
/*
 * Dumps the elements of set into s (a new nftnl_set the caller frees), retried if the ruleset
 * changed during the dump. Returns 0, -ENOENT if the set does not exist, or -errno.
 */
int nft_set_dump(struct nft *n, const char *table, const char *set, struct nftnl_set **s);
/*
 * Dumps the elements of set one reply at a time: each is parsed into its own nftnl_set, passed
 * to fn and freed, so that a large set is never held whole. Not retried: -EINTR when the
 * ruleset changed during the dump (what fn had may be stale; the caller starts again, up to
 * NFT_DUMP_TRIES times in all). 0, -ENOENT if the set does not exist, what fn returned, or
 * -errno; after an error from fn the rest of the dump is read but not passed on.
 */
int nft_set_elems_each(struct nft *n, const char *table, const char *set,
	int (*fn)(struct nftnl_set *part, void *arg), void *arg);
/*
 * The kernel's copy of one table (family inet): table NULL when it does not exist; otherwise
 * its sets (attributes only, no elements), chains and rules, as libnftnl objects.
 */
struct nftnl_table;
struct nftnl_set_list;
struct nftnl_chain_list;
struct nftnl_rule_list;
struct nft_table_view {
	struct nftnl_table *table;
	struct nftnl_set_list *sets;
	struct nftnl_chain_list *chains;
	struct nftnl_rule_list *rules;
};
/* Each part is one consistent dump, retried if the ruleset changed meanwhile. 0 or -errno. */
int nft_table_view(struct nft *n, const char *table, struct nft_table_view *v);
void nft_table_view_free(struct nft_table_view *v);
/* Reads a named counter's packet and byte counts. Returns 0 or -errno. */
int nft_counter_get(struct nft *n, const char *table, const char *name, uint64_t *packets,
	uint64_t *bytes);

/* The port of n's socket: events its own transactions cause carry it. */
uint32_t nft_portid(const struct nft *n);

/*
 * A non-blocking socket subscribed to NFNLGRP_NFTABLES: every change anyone makes to the ruleset.
 */
struct nft_monitor;

/* The ruleset's generation id now (NFT_MSG_GETGEN): every transaction adds one. 0 or -errno. */
int nft_gen_id(struct nft *n, uint32_t *gen);

int nft_monitor_open(struct nft_monitor **out);
void nft_monitor_close(struct nft_monitor **m);
int nft_monitor_fd(const struct nft_monitor *m);
#define NFT_DRIFT_ELEMS 1u	/* elements of one of elem_sets were added or deleted */
#define NFT_DRIFT_STRUCTURE 2u	/* anything else in the table: table, chains, rules, sets */
/*
 * Drains the pending events and ORs into *drift what changed in table (family inet) by anyone
 * but own_portid. Lost events (-ENOBUFS, also returned), and a read that failed otherwise, count
 * as NFT_DRIFT_STRUCTURE: the caller must compare everything. elem_sets is NULL-terminated.
 * 0 or -errno.
 */
int nft_monitor_read(struct nft_monitor *m, const char *table, const char *const *elem_sets,
	uint32_t own_portid, unsigned *drift);
/*
 * Whether the events read so far account for every transaction up to generation gen since the
 * last mark: no loss, no generation skipped, and gen the last one seen. Each transaction, by
 * anyone, ends with its generation's event, so when this holds and the events reported no
 * drift, nothing but jitd's own transactions changed the ruleset since the mark.
 */
bool nft_monitor_current(const struct nft_monitor *m, uint32_t gen);
/* The kernel was read and found in line at generation gen (or later): follow on from there. */
void nft_monitor_mark(struct nft_monitor *m, uint32_t gen);

#endif
