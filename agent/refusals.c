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
 * own. Other names (the control socket's) are kept as they are.
 */
static void source_of(const char *peer, char *out, size_t len)
{
	const char *addr = strchr(peer, ' '), *end, *port;

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
		snprintf(t->first, sizeof(t->first), "%s", src);
	}
	t->count++;
	t->from_first += !strcmp(t->first, src);
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
