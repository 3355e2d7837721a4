#ifndef JITD_AGENT_DNAT_H
#define JITD_AGENT_DNAT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct grant;
struct jit_error;
struct target_policy;

/*
 * Gateway ports for grants to targets that map ports ("dnat"). A grant gets one port per
 * (port, dst) pair whose target maps ports, from that target's listen_port_range, for its
 * lifetime: the lowest port no live grant holds, so a port is reused only after its grant
 * expired or was revoked. The allocation is part of the grant's durable record (the store's
 * annex, "dnat=50017,50018"), so a restart, even after a reboot, keeps every port.
 */

/* A bitmap of the gateway ports in use. */
struct dnat_used {
	uint8_t bits[65536 / 8];
};

/* One (port, dst) pair of a grant whose target maps a gateway port. */
struct dnat_pair {
	const struct target_policy *t;
	size_t port_idx, dst_idx;
};

/* The most pairs a grant may have (each costs a gateway port). */
#define DNAT_MAX_PAIRS 64
/*
 * The grant's pairs in ports-then-dst order: how many there are, and the first DNAT_MAX_PAIRS
 * of them in out (may be NULL).
 */
size_t dnat_pairs(const struct config *c, const struct grant *g, struct dnat_pair *out);
/*
 * The pairs behind g's allocated ports, in out (DNAT_MAX_PAIRS of room): g->n_dnat_ports of
 * them, or 0 when its allocation no longer matches c's pairs.
 */
size_t dnat_granted(const struct config *c, const struct grant *g, struct dnat_pair *out);
/* Marks g's allocated ports as used. */
void dnat_mark(struct dnat_used *u, const struct grant *g);
/*
 * Fills g->dnat_ports (nothing for a grant without pairs) with the lowest free port of each
 * pair's range, and marks them used. 0, JIT_ERR_BUSY naming the full range, or
 * JIT_ERR_INTERNAL (out of memory).
 */
int dnat_allocate(const struct config *c, struct grant *g, struct dnat_used *u,
	struct jit_error *e);
/*
 * Marks the ports a recorded allocation names (annex, len bytes, not NUL-terminated; may be
 * NULL), whatever their ranges: a restore reserves every record's before it takes any back.
 */
void dnat_reserve(struct dnat_used *u, const char *annex, size_t len);
/*
 * Takes back a recorded allocation (annex, may be NULL) when it still fits the configuration
 * and no other grant holds its ports (u); otherwise allocates anew, from ports neither in u
 * nor in reserved (may be NULL), so that a record restored later keeps its own. Marks them in
 * u. 0: as recorded; 1: allocated anew (the caller records it); or dnat_allocate's errors.
 */
int dnat_restore(const struct config *c, struct grant *g, const char *annex, struct dnat_used *u,
	const struct dnat_used *reserved, struct jit_error *e);
/* Whether g's allocation still fits c: one port per pair, each in its pair's range. */
bool dnat_fits(const struct config *c, const struct grant *g);
/*
 * The connection details of g's gateway ports, as a console shows them: "connect to
 * 198.51.100.10:50017 for 10.1.0.5:22/tcp", several joined by "; " ("gateway" when the target
 * names no address); "" for none. 0 or -ENOSPC.
 */
int dnat_describe(const struct config *c, const struct grant *g, char *buf, size_t len);
/* Ports as "P1,P2" ("" for none), as an annex and the audit trail show them. 0 or -ENOSPC. */
int dnat_ports_text(const uint16_t *ports, size_t n, char *buf, size_t len);
/* The annex recording g's allocation ("" for none). 0 or -ENOSPC. */
int dnat_annex(const struct grant *g, char *buf, size_t len);
#define DNAT_ANNEX_MAX (8 + 6 * DNAT_MAX_PAIRS)
/* The ports a recorded allocation (annex, NUL-terminated; may be NULL) names, "P1,P2", or "". */
const char *dnat_annex_ports(const char *annex);

#endif
