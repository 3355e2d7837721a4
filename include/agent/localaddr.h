#ifndef JITD_AGENT_LOCALADDR_H
#define JITD_AGENT_LOCALADDR_H

#include <stdbool.h>
#include <stddef.h>

#include "common/prefix.h"

/*
 * What this network namespace takes as its own, as the input hook sees it: the kernel's local,
 * broadcast, anycast and multicast routes, every family and table (IPv6 without multiple
 * tables keeps them in main, a VRF in its own), and the multicast ranges. Not only the
 * interfaces' addresses: a local route may hold a whole prefix (AnyIP). A catch-all local
 * route outside the local table (TPROXY's) is not counted: it would make every address local.
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
