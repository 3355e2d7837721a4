#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "agent/ranges.h"
#include "common/array.h"

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

/* The destination cut points: every box's dlo and the address after its dhi, sorted, unique. */
static int cmp_addr(const void *a, const void *b)
{
	return memcmp(a, b, 16);
}

static size_t cuts(const struct box *in, size_t n, size_t alen, uint8_t (*pt)[16])
{
	size_t m = 0, u = 0;

	for (size_t i = 0; i < n; i++) {
		memset(pt[m], 0, 16);
		memcpy(pt[m++], in[i].dlo, alen);
		memset(pt[m], 0, 16);
		memcpy(pt[m], in[i].dhi, alen);
		if (inc(pt[m], alen))
			m++;
	}
	qsort(pt, m, 16, cmp_addr);
	for (size_t i = 0; i < m; i++)
		if (!u || memcmp(pt[u - 1], pt[i], 16))
			memmove(pt[u++], pt[i], 16);
	return u;
}

static bool same_spans(const struct span *a, size_t na, const struct span *b, size_t nb)
{
	if (na != nb)
		return false;
	for (size_t i = 0; i < na; i++)
		if (memcmp(a[i].lo, b[i].lo, 16) || memcmp(a[i].hi, b[i].hi, 16) ||
			a[i].exp_ms != b[i].exp_ms)
			return false;
	return true;
}

/* A box's destination start, padded to 16 bytes, and its index: the order boxes enter slices. */
struct entry_at {
	uint8_t dlo[16];
	size_t i;
};

static int cmp_entry(const void *a, const void *b)
{
	const struct entry_at *x = a, *y = b;
	int c = memcmp(x->dlo, y->dlo, 16);

	return c ? c : (x->i > y->i) - (x->i < y->i);
}

static int cmp_index(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return (x > y) - (x < y);
}

/* Whether box i's destinations end before the address p (16 bytes, padded). */
static bool ends_before(const struct box *b, size_t alen, const uint8_t p[16])
{
	uint8_t dhi[16] = { 0 };

	memcpy(dhi, b->dhi, alen);
	return memcmp(dhi, p, 16) < 0;
}

int ranges_disjoint2(const struct box *in, size_t n, size_t alen, struct box **out, size_t *nout)
{
	uint8_t (*pt)[16] = NULL;
	struct span *src = NULL, *prev = NULL, *cur = NULL;
	struct entry_at *order = NULL;
	size_t *act = NULL, nact = 0, next = 0;
	size_t m, nprev = 0, ncur = 0, run = 0, cap = 0;
	struct box *res = NULL, *nv;
	uint8_t top[16];
	int ret = -ENOMEM;

	*out = NULL;
	*nout = 0;
	if (alen != 4 && alen != 16)
		return -EINVAL;
	if (n == 0)
		return 0;
	memset(top, 0, sizeof(top));
	memset(top, 0xff, alen);
	if (!(pt = calloc(2 * n, 16)) || !(src = calloc(n, sizeof(*src))) ||
		!(order = calloc(n, sizeof(*order))) || !(act = calloc(n, sizeof(*act))))
		goto out;
	m = cuts(in, n, alen, pt);
	/*
	 * A sweep along the destinations: boxes join the slices at their dlo and leave after
	 * their dhi. Testing every box at every cut cost n x 2n on the loop (20,000 gateway
	 * grants: 8 x 10^8 compares a commit).
	 */
	for (size_t i = 0; i < n; i++) {
		memcpy(order[i].dlo, in[i].dlo, alen);
		order[i].i = i;
	}
	qsort(order, n, sizeof(*order), cmp_entry);
	for (size_t k = 0; k < m; k++) {
		uint8_t last[16];
		size_t ns = 0, kept = 0;

		/* The slice [pt[k], pt[k + 1] - 1]; the last one runs to the top of the space. */
		memcpy(last, top, 16);
		if (k + 1 < m) {
			memcpy(last, pt[k + 1], 16);
			dec(last, alen);
		}
		for (size_t a = 0; a < nact; a++)
			if (!ends_before(&in[act[a]], alen, pt[k]))
				act[kept++] = act[a];
		nact = kept;
		/* Every dlo is a cut: a box not in yet starts here or later. */
		/* A box whose dhi is below its dlo spans no slice, as before the sweep. */
		for (; next < n && memcmp(order[next].dlo, pt[k], 16) <= 0; next++)
			if (!ends_before(&in[order[next].i], alen, pt[k]))
				act[nact++] = order[next].i;
		/* In input order, as every box was tried before. */
		qsort(act, nact, sizeof(*act), cmp_index);
		for (size_t a = 0; a < nact; a++) {
			size_t i = act[a];

			src[ns] = (struct span){ .exp_ms = in[i].exp_ms };
			memcpy(src[ns].lo, in[i].lo, alen);
			memcpy(src[ns].hi, in[i].hi, alen);
			ns++;
		}
		free(cur);
		cur = NULL;
		ncur = 0;
		if (ns && (ret = ranges_disjoint(src, ns, alen, &cur, &ncur)))
			goto out;
		ret = -ENOMEM;
		/* The previous slice ends right before this one: the same sources join it. */
		if (ncur && run && same_spans(prev, nprev, cur, ncur)) {
			for (size_t j = *nout - run; j < *nout; j++)
				memcpy(res[j].dhi, last, 16);
			continue;
		}
		run = 0;
		if (*nout + ncur > cap) {
			if (!(nv = array_reserve(res, &cap, *nout + ncur, sizeof(*nv), 16)))
				goto out;
			res = nv;
		}
		for (size_t j = 0; j < ncur; j++) {
			struct box *bx = &res[(*nout)++];

			memset(bx, 0, sizeof(*bx));
			memcpy(bx->lo, cur[j].lo, 16);
			memcpy(bx->hi, cur[j].hi, 16);
			memcpy(bx->dlo, pt[k], 16);
			memcpy(bx->dhi, last, 16);
			bx->exp_ms = cur[j].exp_ms;
		}
		run = ncur;
		free(prev);
		prev = cur;
		nprev = ncur;
		cur = NULL;
		ncur = 0;
	}
	*out = res;
	res = NULL;
	ret = 0;
out:
	if (ret)
		*nout = 0;
	free(res);
	free(cur);
	free(prev);
	free(src);
	free(order);
	free(act);
	free(pt);
	return ret;
}
