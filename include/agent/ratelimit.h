#ifndef JITD_AGENT_RATELIMIT_H
#define JITD_AGENT_RATELIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct sockaddr;

/*
 * Per-client token buckets for the controller endpoint (a client: an IPv4 address, an IPv6
 * /64, a local user on loopback; see ratelimit_client_key): rate requests per second, up to
 * burst at once. The table is fixed-size, so a flood from many addresses costs no memory; it
 * evicts the least recently seen client of a full neighbourhood, which at worst hands an
 * evicted client a fresh bucket, never blocks one that is within its rate.
 */
struct ratelimit;

/* rate > 0, burst >= 1, slots a power of two. 0 or -errno. */
int ratelimit_new(unsigned rate, unsigned burst, size_t slots, struct ratelimit **out);
void ratelimit_free(struct ratelimit **r);
/*
 * Takes one token for the client key names (ratelimit_client_key) at now_ms. false when the
 * bucket is empty; *retry_after then says in whole seconds when one is back.
 */
bool ratelimit_allow(struct ratelimit *r, const uint8_t key[16], int64_t now_ms,
	unsigned *retry_after);
/*
 * Takes n tokens at once (a batch of n grants), or none. false also when n exceeds the burst:
 * such a request can never pass, and *retry_after is then 0.
 */
bool ratelimit_take(struct ratelimit *r, const uint8_t key[16], int64_t now_ms, unsigned n,
	unsigned *retry_after);
/*
 * The client sa counts as, port ignored: its IPv4 address (IPv4-mapped IPv6 too), its IPv6
 * /64, or 127.0.0.0/8 for any of those addresses.
 */
void ratelimit_client_key(const struct sockaddr *sa, uint8_t key[16]);
/*
 * A loopback client's key (above) told apart by the local user that owns its socket, uid, or
 * RATELIMIT_OTHER_USERS for a key shared by the users the caller does not tell apart: every
 * local user reaches the loopback addresses, and one must not spend another's budget or take
 * its places. The key lies in ff00::/8, which no TCP peer's address does.
 */
#define RATELIMIT_OTHER_USERS UINT32_MAX
void ratelimit_client_key_user(uint8_t key[16], uint32_t uid);
/* The most tokens a client can have at once. */
unsigned ratelimit_burst(const struct ratelimit *r);

#endif
