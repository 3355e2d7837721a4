#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "agent/refusals.h"

void refusals_init(struct refusals *r, int64_t window_ms)
{
	memset(r, 0, sizeof(*r));
	r->window_ms = window_ms;
	r->start_ms = -1;
}

/*
 * "https 192.0.2.7:50412 cn=controller-1" -> "https 192.0.2.7 cn=controller-1": a client opens
 * a connection per request from a new port, so the port would make each one a source of its
 * own. For the same reason "uid=4243 pid=812 user=bob" (the control socket's, a jitctl process
 * per request) -> "uid=4243 user=bob". Other names are kept as they are.
 */
static void source_of(const char *peer, char *out, size_t len)
{
	const char *addr = strchr(peer, ' '), *end, *port;

	if (!strncmp(peer, "uid=", 4) && addr && !strncmp(addr, " pid=", 5)) {
		end = addr + 1 + strcspn(addr + 1, " ");
		snprintf(out, len, "%.*s%s", (int)(addr - peer), peer, end);
		return;
	}
	if (strncmp(peer, "http", 4) || !addr) {
		snprintf(out, len, "%s", peer);
		return;
	}
	addr++;
	end = addr + strcspn(addr, " ");
	port = addr[0] == '[' ? memchr(addr, ']', (size_t)(end - addr)) : addr;
	port = port ? memchr(port, ':', (size_t)(end - port)) : NULL;
	if (!port) {
		snprintf(out, len, "%s", peer);
		return;
	}
	snprintf(out, len, "%.*s%s", (int)(port - peer), peer, end);
}

static bool window_over(const struct refusals *r, int64_t now_ms)
{
	/* A clock that went back is no reason to keep counting into a window forever. */
	return r->start_ms >= 0 &&
		(now_ms - r->start_ms >= r->window_ms || now_ms < r->start_ms);
}

bool refusals_admit(struct refusals *r, int64_t now_ms, unsigned limit, bool revocation,
	int code, const char *peer)
{
	struct refusals_source *s;
	struct refusals_tally *t;
	char src[REFUSALS_SOURCE_LEN];
	int slot = code < 0 && code > -JIT_ERR__COUNT ? -code : 0;

	/* Counts a caller has not taken yet stay in the window they were counted in. */
	if (r->start_ms < 0 || (window_over(r, now_ms) && refusals_due(r) < 0)) {
		r->start_ms = now_ms;
		r->audited = 0;
	}
	if (r->audited < limit) {
		r->audited++;
		return true;
	}
	t = &r->tally[revocation][slot];
	source_of(peer ? peer : "unknown", src, sizeof(src));
	if (!t->count) {
		t->revocation = revocation;
		t->code = code;
	}
	t->count++;
	for (unsigned i = 0; i < t->n_sources; i++) {
		if (!strcmp(t->source[i].name, src)) {
			t->source[i].count++;
			return false;
		}
	}
	if (t->n_sources < REFUSALS_SOURCES) {
		s = &t->source[t->n_sources++];
		*s = (struct refusals_source){ .count = 1 };
	} else {
		/* The fewest make room, and their count stays in the place (space-saving). */
		s = &t->source[0];
		for (unsigned i = 1; i < t->n_sources; i++)
			if (t->source[i].count < s->count)
				s = &t->source[i];
		s->over = s->count;
		s->count++;
		t->replaced++;
	}
	snprintf(s->name, sizeof(s->name), "%s", src);
	return false;
}

int64_t refusals_due(const struct refusals *r)
{
	for (int k = 0; r->start_ms >= 0 && k < 2; k++)
		for (int c = 0; c < JIT_ERR__COUNT; c++)
			if (r->tally[k][c].count)
				return r->start_ms + r->window_ms;
	return -1;
}

bool refusals_take(struct refusals *r, int64_t now_ms, bool all, struct refusals_tally *t)
{
	if (r->start_ms < 0 || (!all && !window_over(r, now_ms)))
		return false;
	for (int k = 0; k < 2; k++) {
		for (int c = 0; c < JIT_ERR__COUNT; c++) {
			if (!r->tally[k][c].count)
				continue;
			*t = r->tally[k][c];
			memset(&r->tally[k][c], 0, sizeof(r->tally[k][c]));
			return true;
		}
	}
	r->start_ms = -1;
	return false;
}

/*
 * Whether a ranks before b: by what it surely sent (count - over), since a count that took
 * over a place may be mostly others'; then by count.
 */
static bool before(const struct refusals_source *a, const struct refusals_source *b)
{
	long long sa = a->count - a->over, sb = b->count - b->over;

	return sa > sb || (sa == sb && a->count > b->count);
}

const struct refusals_source *refusals_top(const struct refusals_tally *t)
{
	const struct refusals_source *top = &t->source[0];

	for (unsigned i = 1; i < t->n_sources; i++)
		if (before(&t->source[i], top))
			top = &t->source[i];
	return top;
}

/* printf at *at in out, what fits; *at moves on by what would have been written. */
static void put(char *out, size_t size, size_t *at, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static void put(char *out, size_t size, size_t *at, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*at >= size)
		return;
	va_start(ap, fmt);
	n = vsnprintf(out + *at, size - *at, fmt, ap);
	va_end(ap);
	*at += n > 0 ? (size_t)n : 0;
}

char *refusals_sources_text(const struct refusals_tally *t, char *out, size_t size)
{
	bool shown[REFUSALS_SOURCES] = { false };
	size_t at = 0;

	out[0] = '\0';
	/* In before's order, by selection: there are at most REFUSALS_SOURCES. */
	for (unsigned k = 0; k < t->n_sources; k++) {
		unsigned best = REFUSALS_SOURCES;

		for (unsigned i = 0; i < t->n_sources; i++)
			if (!shown[i] && (best == REFUSALS_SOURCES ||
				before(&t->source[i], &t->source[best])))
				best = i;
		shown[best] = true;
		if (t->source[best].over)
			put(out, size, &at, "%sbetween %lld and %lld from %s", k ? ", " : "",
				t->source[best].count - t->source[best].over,
				t->source[best].count, t->source[best].name);
		else
			put(out, size, &at, "%s%lld from %s", k ? ", " : "",
				t->source[best].count, t->source[best].name);
	}
	if (t->replaced)
		put(out, size, &at, " (a place was taken over %lld time(s): a range may include "
			"other sources' refusals)", t->replaced);
	return out;
}
