#ifndef JITD_AGENT_LOCALADDR_H
#define JITD_AGENT_LOCALADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "common/prefix.h"

/*
 * What this network namespace takes as its own, as the input hook sees it (nft's "fib daddr
 * type local"): the kernel's local routing table, every family. Not only the interfaces'
 * addresses: a local route may hold a whole prefix (AnyIP), and broadcast and multicast
 * destinations are delivered here too.
 */
struct localaddr {
	struct prefix *v;
	size_t n;
};

/* Reads the table into *out (freed with localaddr_free). 0 or -errno; *out empty on error. */
int localaddr_read(struct localaddr *out);
/* Whether host (a one-address prefix) is this namespace's. */
bool localaddr_has(const struct localaddr *l, const struct prefix *host);
void localaddr_free(struct localaddr *l);

#endif
