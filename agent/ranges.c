#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ranges.h"

/*
 * A sweep from low to high addresses. The heap holds the spans that have started, latest expiry
 * on top; spans that ended are dropped lazily when they reach the top. A segment ends where the
 * top span ends or the next span starts, the only two points where the maximum can change.
 */
struct sweep {
	struct span *s; /* sorted copy of the input, bytes past alen zeroed */
	size_t n, next; /* next: first span not yet pushed */
	size_t alen;
	size_t *heap;
	size_t nheap;
	struct span *out;
	size_t nout;
};

static int cmp_lo(const void *a, const void *b)
{
	return memcmp(((const struct span *)a)->lo, ((const struct span *)b)->lo, 16);
}

/* Adds one; false when a was all ones and wrapped to zero (no address after it). */
static bool inc(uint8_t *a, size_t alen)
{
	for (size_t i = alen; i-- > 0;)
		if (++a[i])
			return true;
	return false;
}

/* Subtracts one; callers only pass addresses above zero. */
static void dec(uint8_t *a, size_t alen)
{
	for (size_t i = alen; i-- > 0;)
		if (a[i]--)
			return;
}

static bool later(const struct sweep *w, size_t a, size_t b)
{
	return w->s[w->heap[a]].exp_ms > w->s[w->heap[b]].exp_ms;
}

static void swap(struct sweep *w, size_t a, size_t b)
{
	size_t t = w->heap[a];

	w->heap[a] = w->heap[b];
	w->heap[b] = t;
}

static void push(struct sweep *w, size_t idx)
{
	size_t i = w->nheap++;

	w->heap[i] = idx;
	for (; i > 0 && later(w, i, (i - 1) / 2); i = (i - 1) / 2)
		swap(w, i, (i - 1) / 2);
}

static void pop(struct sweep *w)
{
	size_t i = 0;

	w->heap[0] = w->heap[--w->nheap];
	for (;;) {
		size_t l = 2 * i + 1, r = l + 1, m = i;

		if (l < w->nheap && later(w, l, m))
			m = l;
		if (r < w->nheap && later(w, r, m))
			m = r;
		if (m == i)
			break;
		swap(w, i, m);
		i = m;
	}
}

/* Appends [lo, hi] @ exp, extending the previous range when it is adjacent with the same expiry. */
static void emit(struct sweep *w, const uint8_t *lo, const uint8_t *hi, int64_t exp)
{
	struct span *last = w->nout ? &w->out[w->nout - 1] : NULL;
	uint8_t next[16];

	if (last && last->exp_ms == exp) {
		memcpy(next, last->hi, 16);
		if (inc(next, w->alen) && !memcmp(next, lo, 16)) {
			memcpy(last->hi, hi, 16);
			return;
		}
	}
	last = &w->out[w->nout++];
	memcpy(last->lo, lo, 16);
	memcpy(last->hi, hi, 16);
	last->exp_ms = exp;
}

/* One segment starting at pos; false when the sweep is done. */
static bool step(struct sweep *w, uint8_t *pos)
{
	const struct span *top;
	uint8_t end[16];

	while (w->nheap && memcmp(w->s[w->heap[0]].hi, pos, 16) < 0)
		pop(w);
	if (!w->nheap) {
		if (w->next == w->n)
			return false;
		memcpy(pos, w->s[w->next].lo, 16);
	}
	while (w->next < w->n && memcmp(w->s[w->next].lo, pos, 16) <= 0)
		push(w, w->next++);
	top = &w->s[w->heap[0]];
	memcpy(end, top->hi, 16);
	if (w->next < w->n) {
		uint8_t before[16];

		memcpy(before, w->s[w->next].lo, 16);
		dec(before, w->alen);
		if (memcmp(before, end, 16) < 0)
			memcpy(end, before, 16);
	}
	emit(w, pos, end, top->exp_ms);
	memcpy(pos, end, 16);
	return inc(pos, w->alen);
}

/* Copies the non-empty spans with the unused tail zeroed, so whole-array compares are exact. */
static void load(struct sweep *w, const struct span *in, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct span *d = &w->s[w->n];

		memset(d, 0, sizeof(*d));
		memcpy(d->lo, in[i].lo, w->alen);
		memcpy(d->hi, in[i].hi, w->alen);
		d->exp_ms = in[i].exp_ms;
		/* lo > hi describes no address at all; it cannot widen the union. */
		if (memcmp(d->lo, d->hi, 16) <= 0)
			w->n++;
	}
	qsort(w->s, w->n, sizeof(*w->s), cmp_lo);
}

int ranges_disjoint(const struct span *in, size_t n, size_t alen, struct span **out, size_t *nout)
{
	struct sweep w = { .alen = alen };
	uint8_t pos[16] = { 0 };
	int ret = -ENOMEM;

	*out = NULL;
	*nout = 0;
	if (alen != 4 && alen != 16)
		return -EINVAL;
	if (n == 0)
		return 0;
	/* Every segment ends at a span's end or just before a span's start: at most 2n of them. */
	w.s = calloc(n, sizeof(*w.s));
	w.heap = calloc(n, sizeof(*w.heap));
	w.out = calloc(n, 2 * sizeof(*w.out));
	if (!w.s || !w.heap || !w.out)
		goto out;
	load(&w, in, n);
	while (step(&w, pos))
		;
	if (w.nout) {
		struct span *fit = realloc(w.out, w.nout * sizeof(*w.out));

		*out = fit ? fit : w.out;
		*nout = w.nout;
		w.out = NULL;
	}
	ret = 0;
out:
	free(w.out);
	free(w.heap);
	free(w.s);
	return ret;
}
