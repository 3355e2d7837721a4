#ifndef JITD_AGENT_REFUSALS_H
#define JITD_AGENT_REFUSALS_H

#include <stdbool.h>
#include <stdint.h>

#include "common/err.h"

/*
 * Refusals of input that no trusted key signed (they name no grant): anyone who can reach the
 * controller endpoint can send them, and audited one by one they would rotate genuine records
 * out of the trail (audit.max_bytes, audit.keep). In each window (a minute: the limit is
 * audit.unverified_per_minute) the first `limit` are audited one by one; the rest are counted,
 * per kind (grant or revocation) and code, and each count becomes one record when the window
 * ends (refusals_take). A count names at most REFUSALS_SOURCES sources, in bounded memory, kept
 * as the space-saving algorithm keeps them (Metwally et al.): a new source, when all places
 * are taken, takes the place of the one with the fewest and counts on from its count, which it
 * may therefore overstate by that much (over). Any source that sent more than a quarter of the
 * count is named, so a flood cannot hide behind a few decoys sent first; a source's count is
 * exact while over is 0, which it is for all as long as there were at most REFUSALS_SOURCES.
 */
#define REFUSALS_WINDOW_MS 60000
/* "192.0.2.7 cn=controller-1": a peer's name without its port. */
#define REFUSALS_SOURCE_LEN 192
#define REFUSALS_SOURCES 4

struct refusals_source {
	long long count;		/* at most this many from name */
	long long over;			/* of count, how many may be others' */
	char name[REFUSALS_SOURCE_LEN];
};

struct refusals_tally {
	bool revocation;
	int code;			/* JIT_ERR_* */
	long long count;		/* counted, not audited one by one: the sum of source[] */
	long long replaced;		/* sources that lost their place to another */
	unsigned n_sources;
	struct refusals_source source[REFUSALS_SOURCES];
};

struct refusals {
	int64_t window_ms;
	int64_t start_ms;		/* the window's; -1: none open */
	unsigned audited;		/* one by one in it so far */
	struct refusals_tally tally[2][JIT_ERR__COUNT];
};

void refusals_init(struct refusals *r, int64_t window_ms);
/*
 * A refusal that names no grant, from peer, at now_ms: true when it is to be audited one by
 * one, false when it was counted. A window opens at the first refusal after the last ended.
 */
bool refusals_admit(struct refusals *r, int64_t now_ms, unsigned limit, bool revocation,
	int code, const char *peer);
/* When the open window ends, if anything in it was counted; else -1. */
int64_t refusals_due(const struct refusals *r);
/*
 * One count to audit once the window has ended (or at once: all, when stopping), taken out of r:
 * true and *t, else false. The window closes when every count is taken.
 */
bool refusals_take(struct refusals *r, int64_t now_ms, bool all, struct refusals_tally *t);
/*
 * The source that surely sent the most of t (count - over; then the higher count, then the
 * first of those tied), for the record's peer: a count that took over a place may be mostly
 * others'. t holds at least one: a tally is only taken once something was counted in it.
 */
const struct refusals_source *refusals_top(const struct refusals_tally *t);
/*
 * "7 from http 192.0.2.7, 2 from https 192.0.2.9 cn=c": each source in refusals_top's order, a
 * count that may include others' as "between 3 and 5", and then, if sources lost their place,
 * how many. Truncated to size. Returns out.
 */
char *refusals_sources_text(const struct refusals_tally *t, char *out, size_t size);

#endif
