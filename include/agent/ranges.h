#ifndef JITD_AGENT_RANGES_H
#define JITD_AGENT_RANGES_H

#include <stddef.h>
#include <stdint.h>

/*
 * An address range [lo, hi] (network byte order, alen bytes of 4 or 16 used) that stays open
 * until exp_ms (wall clock, milliseconds since the epoch).
 */
struct span {
	uint8_t lo[16];
	uint8_t hi[16];
	int64_t exp_ms;
};

/*
 * The kernel refuses overlapping ranges in one interval set, so overlapping grants become
 * disjoint ranges, each carrying the latest expiry of the inputs covering it. Output is sorted by
 * lo; adjacent ranges with equal expiry are merged, so the result is minimal and deterministic.
 * in is not modified. Returns 0 and a malloc'ed array in *out (NULL when n == 0), or -ENOMEM.
 */
int ranges_disjoint(const struct span *in, size_t n, size_t alen, struct span **out, size_t *nout);

/* A source range x destination range, open until exp_ms (gateway grants). */
struct box {
	uint8_t lo[16], hi[16];	  /* source */
	uint8_t dlo[16], dhi[16]; /* destination */
	int64_t exp_ms;
};

/*
 * ranges_disjoint in two dimensions: the union of the boxes as disjoint boxes, each point with
 * the latest expiry of the inputs covering it. The destination axis is cut at every box edge;
 * each slice gets the disjoint source ranges of the boxes spanning it, and neighbouring slices
 * with the same source ranges are joined again. Output is sorted by destination, then source,
 * and deterministic. Returns 0 and a malloc'ed array in *out (NULL when empty), or -ENOMEM.
 */
int ranges_disjoint2(const struct box *in, size_t n, size_t alen, struct box **out,
	size_t *nout);

#endif
