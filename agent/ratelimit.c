#include <errno.h>
#include <netinet/in.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>

#include "agent/ratelimit.h"

/* Slots searched around an address's home slot: a small, bounded cost per request. */
#define PROBE 8
/* Tokens are counted in thousandths so that refill needs no floating point. */
#define MILLI 1000

struct bucket {
	uint8_t addr[16];	/* the client's key (ratelimit_client_key) */
	bool used;
	int64_t last_ms;	/* last refill */
	uint64_t tokens;	/* in thousandths */
};

struct ratelimit {
	uint64_t rate;		/* tokens per second */
	uint64_t burst;		/* in thousandths */
	size_t mask;
	uint64_t seed;		/* keyed hash: a client cannot aim its addresses at one slot */
	struct bucket *b;
};

int ratelimit_new(unsigned rate, unsigned burst, size_t slots, struct ratelimit **out)
{
	struct ratelimit *r;

	*out = NULL;
	if (!rate || !burst || slots < PROBE || (slots & (slots - 1)))
		return -EINVAL;
	if (!(r = calloc(1, sizeof(*r))) || !(r->b = calloc(slots, sizeof(*r->b)))) {
		free(r);
		return -ENOMEM;
	}
	if (getrandom(&r->seed, sizeof(r->seed), 0) != sizeof(r->seed))
		r->seed = (uint64_t)(uintptr_t)r ^ 0x9e3779b97f4a7c15ULL;
	r->rate = rate;
	r->burst = (uint64_t)burst * MILLI;
	r->mask = slots - 1;
	*out = r;
	return 0;
}

void ratelimit_free(struct ratelimit **r)
{
	if (!*r)
		return;
	free((*r)->b);
	free(*r);
	*r = NULL;
}

/*
 * An IPv4 address (or IPv4-mapped IPv6, the same client on a [::] listener), or an IPv6 /64:
 * one host is routinely given a whole /64 and can pick a new source address per request, so
 * counting /128s would give it 2^64 budgets. For the same reason 127.0.0.0/8 is one client:
 * any local process may bind any of its addresses (the endpoint tells local users apart by
 * their sockets' owner instead: ratelimit_client_key_user).
 */
void ratelimit_client_key(const struct sockaddr *sa, uint8_t key[16])
{
	const struct in6_addr *a6;

	memset(key, 0, 16);
	if (sa->sa_family == AF_INET) {
		key[10] = key[11] = 0xff;
		memcpy(key + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
	} else if (sa->sa_family == AF_INET6) {
		a6 = &((const struct sockaddr_in6 *)sa)->sin6_addr;
		memcpy(key, a6, IN6_IS_ADDR_V4MAPPED(a6) ? 16 : 8);
	}
	if (key[10] == 0xff && key[11] == 0xff && key[12] == 127)
		key[13] = key[14] = key[15] = 0;
}

/* FNV-1a, seeded. */
static size_t slot_of(const struct ratelimit *r, const uint8_t key[16])
{
	uint64_t h = 0xcbf29ce484222325ULL ^ r->seed;

	for (int i = 0; i < 16; i++)
		h = (h ^ key[i]) * 0x100000001b3ULL;
	return (size_t)(h ^ (h >> 32)) & r->mask;
}

static struct bucket *find(struct ratelimit *r, const uint8_t key[16], int64_t now_ms)
{
	size_t home = slot_of(r, key);
	struct bucket *victim = NULL;

	for (size_t i = 0; i < PROBE; i++) {
		struct bucket *b = &r->b[(home + i) & r->mask];

		if (b->used && !memcmp(b->addr, key, 16))
			return b;
		if (!victim || !b->used || (victim->used && b->last_ms < victim->last_ms))
			victim = b;
	}
	memcpy(victim->addr, key, 16);
	victim->used = true;
	victim->last_ms = now_ms;
	victim->tokens = r->burst;
	return victim;
}

void ratelimit_client_key_user(uint8_t key[16], uint32_t uid)
{
	memset(key, 0, 16);
	key[0] = 0xff;
	key[12] = (uint8_t)(uid >> 24);
	key[13] = (uint8_t)(uid >> 16);
	key[14] = (uint8_t)(uid >> 8);
	key[15] = (uint8_t)uid;
}

bool ratelimit_take(struct ratelimit *r, const uint8_t key[16], int64_t now_ms, unsigned n,
	unsigned *retry_after)
{
	uint64_t want = (uint64_t)n * MILLI;
	struct bucket *b;

	*retry_after = 0;
	/* More than a burst can never be had: no point telling the client to come back. */
	if (want > r->burst)
		return false;
	b = find(r, key, now_ms);
	/* A clock that steps back refills nothing; one that jumps ahead refills at most a burst. */
	if (now_ms > b->last_ms) {
		uint64_t add = (uint64_t)(now_ms - b->last_ms) * r->rate;

		b->tokens = add >= r->burst - b->tokens ? r->burst : b->tokens + add;
		b->last_ms = now_ms;
	}
	if (b->tokens >= want) {
		b->tokens -= want;
		return true;
	}
	/* Milliseconds until n whole tokens, rounded up to seconds for Retry-After. */
	*retry_after = (unsigned)(((want - b->tokens + r->rate - 1) / r->rate + 999) / 1000);
	return false;
}

unsigned ratelimit_burst(const struct ratelimit *r)
{
	return (unsigned)(r->burst / MILLI);
}

bool ratelimit_allow(struct ratelimit *r, const uint8_t key[16], int64_t now_ms,
	unsigned *retry_after)
{
	return ratelimit_take(r, key, now_ms, 1, retry_after);
}
