#ifndef JITD_AGENT_METRICS_H
#define JITD_AGENT_METRICS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/*
 * What jitd counts for GET /metrics (Prometheus text format 0.0.4). Plain counters, written by
 * the enforcer on the event loop and read there too: no locking.
 */
#define METRICS_BUCKETS 12

struct metrics_hist {
	uint64_t le[METRICS_BUCKETS];	/* observations <= bucket bound (not cumulative) */
	uint64_t count;
	uint64_t sum_us;
};

struct metrics {
	uint64_t grants_applied;
	uint64_t grants_refused[JIT_ERR__COUNT];	/* by -code */
	uint64_t grants_expired;
	uint64_t grants_revoked;
	uint64_t revocations_refused[JIT_ERR__COUNT];
	uint64_t flows_terminated;
	uint64_t drift_repairs;		/* transactions that put the kernel back to the grants */
	uint64_t group_commits;		/* groups of grants committed together */
	uint64_t group_grants;		/* grants those groups held (applied or not) */
	uint64_t reloads_applied, reloads_refused; /* configuration reloads, by outcome */
	int64_t reload_applied_at;	/* the last applied, or the start (Unix time) */
	struct metrics_hist kernel;	/* one nf_tables transaction, send to last ack */
	struct metrics_hist state;	/* durable record of a group: one journal write + fdatasync */
	struct metrics_hist verify;	/* one signature and claims verification (a worker thread) */
	struct metrics_hist admit;	/* one grant's policy, limit and replay checks (the loop) */
	struct metrics_hist grant;	/* one grant, received to applied (kernel ack, audit) */
};

/* The controller endpoint's own figures, counted in agent/http.c. */
struct metrics_endpoint {
	uint64_t connections;		/* open now, handshakes included */
	uint64_t cut_deadline;		/* closed: no whole request within listen.timeout */
	uint64_t gave_way;		/* closed, idle, for a new connection (connshare.h) */
	uint64_t over_limit;		/* accepted at the limit and closed at once */
	uint64_t paused;		/* times the listener stopped accepting, full */
	uint64_t rate_limited;		/* requests answered 429 */
};

/* What only the caller knows at render time. */
struct metrics_gauges {
	uint64_t active_grants;
	uint64_t kernel_elements;
	uint64_t verifying;		/* grants received, being verified */
	uint64_t waiting;		/* verified, waiting for their group */
	int64_t denied_packets;		/* < 0: unknown */
	int64_t started;		/* seconds since the epoch */
	int64_t tls_not_after;		/* the endpoint's certificate expires; 0: no TLS */
	bool reload_refused;		/* the last reload was refused (enforce_reload_refused) */
	size_t restart_pending;		/* restart-only settings the file changed since the start */
	uint64_t state_damage;		/* damage found in the grant state's files (store_damage) */
	const struct metrics_endpoint *endpoint;	/* NULL: no controller endpoint */
};

void metrics_observe(struct metrics_hist *h, int64_t usec);
void metrics_refused(uint64_t *by_code, int code);
/* The exposition text (NUL-terminated, malloc'd), or NULL on OOM. */
char *metrics_render(const struct metrics *m, const struct metrics_gauges *g);

#endif
