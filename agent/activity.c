#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent/activity.h"
#include "common/port.h"

/* Grant times older than the window are dropped when a port's list would otherwise grow. */
struct port_hist {
	uint16_t port;
	uint8_t ipproto;
	int64_t *when;
	size_t n, cap;
	int64_t last_access;
	char last_user[GRANT_MAX_STRING + 1];
};

struct activity {
	struct port_hist *v;
	size_t n, cap;
};

int activity_new(struct activity **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void activity_free(struct activity **a)
{
	if (!a || !*a)
		return;
	for (size_t i = 0; i < (*a)->n; i++)
		free((*a)->v[i].when);
	free((*a)->v);
	free(*a);
	*a = NULL;
}

static struct port_hist *find(const struct activity *a, uint16_t port, uint8_t ipproto)
{
	for (size_t i = 0; i < a->n; i++)
		if (a->v[i].port == port && a->v[i].ipproto == ipproto)
			return &a->v[i];
	return NULL;
}

static struct port_hist *find_or_add(struct activity *a, uint16_t port, uint8_t ipproto)
{
	struct port_hist *h = find(a, port, ipproto);

	if (h)
		return h;
	if (a->n == a->cap) {
		size_t cap = a->cap ? 2 * a->cap : 8;
		struct port_hist *nv = realloc(a->v, cap * sizeof(*nv));

		if (!nv)
			return NULL;
		a->v = nv;
		a->cap = cap;
	}
	h = &a->v[a->n++];
	memset(h, 0, sizeof(*h));
	h->port = port;
	h->ipproto = ipproto;
	return h;
}

static int note_one(struct activity *a, uint16_t port, uint8_t ipproto, const char *user,
	int64_t when)
{
	struct port_hist *h = find_or_add(a, port, ipproto);
	size_t kept = 0;

	if (!h)
		return -ENOMEM;
	if (h->n == h->cap) {
		/* Prune before growing: the list only ever needs the last 7 days. */
		for (size_t i = 0; i < h->n; i++)
			if (h->when[i] > when - ACTIVITY_WINDOW_SEC)
				h->when[kept++] = h->when[i];
		h->n = kept;
	}
	if (h->n == h->cap) {
		size_t cap = h->cap ? 2 * h->cap : 16;
		int64_t *nv = realloc(h->when, cap * sizeof(*nv));

		if (!nv)
			return -ENOMEM;
		h->when = nv;
		h->cap = cap;
	}
	h->when[h->n++] = when;
	if (when >= h->last_access) {
		h->last_access = when;
		snprintf(h->last_user, sizeof(h->last_user), "%s", user ? user : "");
	}
	return 0;
}

int activity_note(struct activity *a, const struct grant *g, int64_t when)
{
	int ret = 0;

	/* Per host port: a gateway grant's ports are its targets', not this host's. */
	if (g->n_dst)
		return 0;
	for (size_t i = 0; ret == 0 && i < g->n_ports; i++)
		ret = note_one(a, g->ports[i].port, port_proto_ipproto(g->ports[i].proto), g->sub,
			when);
	return ret;
}

/* The record's time: "ts" (seconds) when present, else the RFC 3339 "time". 0 if neither. */
static int64_t event_time(const json_t *ev)
{
	const char *t = json_string_value(json_object_get(ev, "time"));
	struct tm tm;
	char *end;

	if (json_is_integer(json_object_get(ev, "ts")))
		return json_integer_value(json_object_get(ev, "ts"));
	memset(&tm, 0, sizeof(tm));
	if (!t || !(end = strptime(t, "%Y-%m-%dT%H:%M:%S", &tm)))
		return 0;
	return (int64_t)timegm(&tm);
}

int activity_note_event(struct activity *a, const json_t *ev)
{
	const char *event = json_string_value(json_object_get(ev, "event"));
	int64_t when = event_time(ev);
	const json_t *p;
	size_t i;
	int ret = 0;

	if (!event || strcmp(event, "grant.applied") || when <= 0 ||
		json_object_get(ev, "destinations"))
		return 0;
	json_array_foreach(json_object_get(ev, "ports"), i, p) {
		unsigned mask;
		uint16_t port;

		if (!json_is_string(p) || port_spec_parse(json_string_value(p), &port, &mask))
			continue;
		if (mask & PORT_PROTO_TCP)
			ret = note_one(a, port, port_proto_ipproto(PORT_PROTO_TCP),
				json_string_value(json_object_get(ev, "sub")), when);
		if (ret == 0 && (mask & PORT_PROTO_UDP))
			ret = note_one(a, port, port_proto_ipproto(PORT_PROTO_UDP),
				json_string_value(json_object_get(ev, "sub")), when);
		if (ret)
			break;
	}
	return ret;
}

void activity_port(const struct activity *a, uint16_t port, uint8_t ipproto, int64_t now,
	struct port_activity *out)
{
	const struct port_hist *h = find(a, port, ipproto);

	memset(out, 0, sizeof(*out));
	if (!h)
		return;
	for (size_t i = 0; i < h->n; i++)
		if (h->when[i] > now - ACTIVITY_WINDOW_SEC && h->when[i] <= now)
			out->grants_7d++;
	out->last_access = h->last_access;
	snprintf(out->last_user, sizeof(out->last_user), "%s", h->last_user);
}
