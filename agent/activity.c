#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "agent/activity.h"
#include "agent/audit.h"
#include "common/array.h"
#include "common/err.h"
#include "common/log.h"
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

/*
 * A grant withdrawn because its group's fdatasync failed has its grant.applied line followed by
 * a grant.refused one naming it, marked "withdrawn": a grant's last record holds, and it does
 * not count. Such refusals need a failing disk, so the rebuild reads the trail once, noting
 * every grant.applied and the ids withdrawals name; only when there were any does it read the
 * trail again, to find the line each withdrawal takes back (the last grant.applied of its id
 * before it), and a third time, noting every grant.applied but those, in the trail's order.
 */
struct withdrawn {
	char *id;
	size_t last;		/* the index of its last grant.applied so far; 0: none */
};

/* The start-up rebuild from the audit trail, on a thread of its own until it joins. */
struct rebuild {
	pthread_t thread;
	struct audit_snapshot *snap;
	struct activity *found;	/* the thread's own, merged into the live one at the end */
	int64_t since;
	struct withdrawn *w;	/* sorted by id, unique */
	size_t n_w, cap_w;
	size_t *taken;		/* the indexes of the lines taken back, sorted */
	size_t n_taken, cap_taken;
	size_t at, next;	/* the index of the record read (from 1); the next of taken */
	int ret;
	atomic_bool done;
	/* Set when jitd stops: a SIGTERM right after a start must not wait out the whole scan. */
	atomic_bool stop;
};

struct activity {
	struct port_hist *v;
	size_t n, cap;
	struct rebuild *rb;
	bool waited;	/* a status has waited for rb once: the next ones do not */
	/*
	 * A rebuild that failed (the trail unreadable at the start): the week before it is not
	 * known, so no count of the week is either until this wall-clock second.
	 */
	int64_t unknown_until;
};

static void rebuild_failed(struct activity *a, int err)
{
	log_warn("cannot read the audit trail: %s; recent activity starts from now, and the "
		"grants of the last 7 days are not shown for 7 days",
		strerror(err < 0 ? -err : EIO));
	a->unknown_until = (int64_t)time(NULL) + ACTIVITY_WINDOW_SEC;
}

int activity_new(struct activity **out)
{
	*out = calloc(1, sizeof(**out));
	return *out ? 0 : -ENOMEM;
}

void activity_free(struct activity **a)
{
	if (!a || !*a)
		return;
	if ((*a)->rb)
		atomic_store(&(*a)->rb->stop, true);
	activity_settle(*a, true);
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
	if (!(h = array_reserve(a->v, &a->cap, a->n + 1, sizeof(*h), 8)))
		return NULL;
	a->v = h;
	h = &a->v[a->n++];
	memset(h, 0, sizeof(*h));
	h->port = port;
	h->ipproto = ipproto;
	return h;
}

/*
 * Notes a grant applied at when (the wall clock then). take_last: it may be the port's last
 * access, which is the latest stamp, but for one stamped after now (a clock that ran ahead
 * before it was stepped back), which any grant noted after it replaces: the trail's order alone
 * cannot say (a line put back after a failed sync comes after later ones).
 */
static int note_one(struct activity *a, uint16_t port, uint8_t ipproto, const char *user,
	int64_t when, bool take_last, int64_t now)
{
	struct port_hist *h = find_or_add(a, port, ipproto);
	int64_t *when_v, newest = INT64_MIN, base;
	size_t kept = 0;

	if (!h)
		return -ENOMEM;
	if (h->n == h->cap) {
		/*
		 * Prune before growing: the list only ever needs the last 7 days, counted back from
		 * this grant's time, or from the newest already noted when that is earlier (one
		 * grant stamped days ahead must not prune the genuine week).
		 */
		for (size_t i = 0; i < h->n; i++)
			newest = h->when[i] > newest ? h->when[i] : newest;
		base = h->n && newest < when ? newest : when;
		for (size_t i = 0; i < h->n; i++)
			if (h->when[i] > base - ACTIVITY_WINDOW_SEC)
				h->when[kept++] = h->when[i];
		h->n = kept;
	}
	if (!(when_v = array_reserve(h->when, &h->cap, h->n + 1, sizeof(*when_v), 16)))
		return -ENOMEM;
	h->when = when_v;
	h->when[h->n++] = when;
	if (take_last && (when >= h->last_access || h->last_access > now)) {
		h->last_access = when;
		snprintf(h->last_user, sizeof(h->last_user), "%s", user ? user : "");
	}
	return 0;
}

/*
 * A grant counts once for a port whatever its protocols: under ipproto 0, which a "*" port's
 * row reads (its TCP and UDP counts added would count a grant for both twice).
 */
static int note_port(struct activity *a, const uint16_t *seen, size_t n_seen, uint16_t port,
	const char *user, int64_t when, int64_t now)
{
	for (size_t i = 0; i < n_seen; i++)
		if (seen[i] == port)
			return 0;
	return note_one(a, port, 0, user, when, true, now);
}

int activity_note(struct activity *a, const struct grant *g, int64_t when)
{
	uint16_t seen[GRANT_MAX_PORTS];
	int ret = 0;

	/* Per host port: a gateway grant's ports are its targets', not this host's. */
	if (g->n_dst)
		return 0;
	for (size_t i = 0; ret == 0 && i < g->n_ports; i++) {
		ret = note_one(a, g->ports[i].port, port_proto_ipproto(g->ports[i].proto), g->sub,
			when, true, when);
		if (ret == 0 &&
			(ret = note_port(a, seen, i, g->ports[i].port, g->sub, when, when)) == 0)
			seen[i] = g->ports[i].port;
	}
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

static bool event_is(const json_t *ev, const char *name)
{
	const char *event = json_string_value(json_object_get(ev, "event"));

	return event && !strcmp(event, name);
}

int activity_note_event(struct activity *a, const json_t *ev)
{
	const json_t *sub = json_object_get(ev, "sub");
	const char *user = json_string_value(sub);
	char safe[GRANT_MAX_STRING + 1];
	int64_t when = event_time(ev), now;
	uint16_t seen[GRANT_MAX_PORTS];
	size_t i, n_seen = 0;
	const json_t *p;
	int ret = 0;

	if (!event_is(ev, "grant.applied") || when <= 0 ||
		json_object_get(ev, "destinations"))
		return 0;
	/*
	 * The trail is a file: a sub no grant could carry (too long for last_user, whose cut
	 * could split a character and fail the status's JSON) is shown as "?", and what a
	 * terminal would act on as '?', as jitctl log shows it.
	 */
	if (user && json_string_length(sub) > GRANT_MAX_STRING) {
		user = "?";
	} else if (user) {
		snprintf(safe, sizeof(safe), "%s", user);
		grant_string_defuse(safe);
		user = safe;
	}
	/* What "after now" means for the last access (note_one): the clock as the trail is read. */
	now = (int64_t)time(NULL);
	json_array_foreach(json_object_get(ev, "ports"), i, p) {
		unsigned mask;
		uint16_t port;

		if (!json_is_string(p) || port_spec_parse(json_string_value(p), &port, &mask))
			continue;
		if (mask & PORT_PROTO_TCP)
			ret = note_one(a, port, IPPROTO_TCP, user, when, true, now);
		if (ret == 0 && (mask & PORT_PROTO_UDP))
			ret = note_one(a, port, IPPROTO_UDP, user, when, true, now);
		if (ret == 0 && n_seen < GRANT_MAX_PORTS &&
			(ret = note_port(a, seen, n_seen, port, user, when, now)) == 0)
			seen[n_seen++] = port;
		if (ret)
			break;
	}
	return ret;
}

#define ACTIVITY_WAIT_MS 1000

static void settle_within(struct activity *a, int wait_ms);

void activity_ready(struct activity *a)
{
	/*
	 * A status in the first moments waits a little for the trail's reading, not for all of
	 * it: a trail of millions of records would hold the loop (grants, the watchdog) up. Once
	 * in all: the next statuses would each wait again.
	 */
	if (a->rb && !a->waited) {
		settle_within(a, ACTIVITY_WAIT_MS);
		a->waited = a->rb != NULL;
	} else {
		settle_within(a, 0);
	}
}

void activity_port(struct activity *a, uint16_t port, uint8_t ipproto, int64_t now,
	struct port_activity *out)
{
	const struct port_hist *h;

	memset(out, 0, sizeof(*out));
	if ((out->pending = a->rb != NULL))
		return;
	out->week_unknown = a->unknown_until && now < a->unknown_until;
	if (!(h = find(a, port, ipproto)))
		return;
	/* One stamped ahead of now (a clock stepped back since) was applied within the week too. */
	for (size_t i = 0; i < h->n; i++)
		if (h->when[i] > now - ACTIVITY_WINDOW_SEC)
			out->grants_7d++;
	out->last_access = h->last_access;
	snprintf(out->last_user, sizeof(out->last_user), "%s", h->last_user);
}

/* A grant.refused record of a withdrawn grant: the grant's id, or NULL. */
static const char *withdrawal_of(const json_t *ev)
{
	if (!event_is(ev, "grant.refused") || !json_is_true(json_object_get(ev, "withdrawn")))
		return NULL;
	return json_string_value(json_object_get(ev, "grant"));
}

static int withdrawn_cmp(const void *a, const void *b)
{
	return strcmp(((const struct withdrawn *)a)->id, ((const struct withdrawn *)b)->id);
}

static int id_cmp(const void *id, const void *w)
{
	return strcmp(id, ((const struct withdrawn *)w)->id);
}

static struct withdrawn *withdrawn_find(const struct rebuild *r, const char *id)
{
	return id && r->n_w ? bsearch(id, r->w, r->n_w, sizeof(*r->w), id_cmp) : NULL;
}

static bool stopping(struct rebuild *r)
{
	return atomic_load_explicit(&r->stop, memory_order_relaxed);
}

/* The first reading: every grant.applied noted, the ids withdrawals name collected. */
static int first_cb(json_t *ev, void *arg)
{
	struct rebuild *r = arg;
	const char *id = withdrawal_of(ev);
	struct withdrawn *w;

	if (stopping(r))
		return -ECANCELED;
	if (!id)
		return activity_note_event(r->found, ev);
	if (!(w = array_reserve(r->w, &r->cap_w, r->n_w + 1, sizeof(*w), 8)))
		return -ENOMEM;
	r->w = w;
	if (!(r->w[r->n_w].id = strdup(id)))
		return -ENOMEM;
	r->w[r->n_w++].last = 0;
	return 0;
}

/* The second: which line each withdrawal takes back. */
static int second_cb(json_t *ev, void *arg)
{
	struct rebuild *r = arg;
	struct withdrawn *w;
	size_t *taken;

	if (stopping(r))
		return -ECANCELED;
	r->at++;
	if (event_is(ev, "grant.applied") &&
		(w = withdrawn_find(r, json_string_value(json_object_get(ev, "grant"))))) {
		w->last = r->at;
		return 0;
	}
	if (!(w = withdrawn_find(r, withdrawal_of(ev))) || !w->last)
		return 0;
	if (!(taken = array_reserve(r->taken, &r->cap_taken, r->n_taken + 1, sizeof(*taken), 8)))
		return -ENOMEM;
	r->taken = taken;
	r->taken[r->n_taken++] = w->last;
	w->last = 0;
	return 0;
}

/* The third: every grant.applied noted but those taken back. */
static int third_cb(json_t *ev, void *arg)
{
	struct rebuild *r = arg;

	if (stopping(r))
		return -ECANCELED;
	r->at++;
	if (r->next < r->n_taken && r->taken[r->next] == r->at) {
		r->next++;
		return 0;
	}
	return activity_note_event(r->found, ev);
}

static int index_cmp(const void *a, const void *b)
{
	size_t x = *(const size_t *)a, y = *(const size_t *)b;

	return x < y ? -1 : x > y;
}

/* All the readings needed; r->found holds the history when it returns 0. */
static int rebuild_read(struct rebuild *r)
{
	size_t kept = 0;
	int ret;

	if ((ret = audit_snapshot_foreach(r->snap, r->since, first_cb, r)) || !r->n_w)
		return ret;
	qsort(r->w, r->n_w, sizeof(*r->w), withdrawn_cmp);
	for (size_t i = 0; i < r->n_w; i++) {
		if (kept && !strcmp(r->w[kept - 1].id, r->w[i].id))
			free(r->w[i].id);
		else
			r->w[kept++] = r->w[i];
	}
	r->n_w = kept;
	r->at = 0;
	if ((ret = audit_snapshot_foreach(r->snap, r->since, second_cb, r)) || !r->n_taken)
		return ret;
	/* Each index once: an applied line is taken back by the first withdrawal after it. */
	qsort(r->taken, r->n_taken, sizeof(*r->taken), index_cmp);
	activity_free(&r->found);
	if ((ret = activity_new(&r->found)))
		return ret;
	r->at = 0;
	return audit_snapshot_foreach(r->snap, r->since, third_cb, r);
}

static void *rebuild_main(void *arg)
{
	struct rebuild *r = arg;

	pthread_setname_np(pthread_self(), "jitd-activity");
	r->ret = rebuild_read(r);
	atomic_store(&r->done, true);
	return NULL;
}

/* The older history into a: a grant noted live since the start stays the last access. */
static int merge(struct activity *a, const struct activity *old)
{
	for (size_t i = 0; i < old->n; i++) {
		const struct port_hist *o = &old->v[i];
		struct port_hist *h;

		for (size_t k = 0; k < o->n; k++) {
			int ret = note_one(a, o->port, o->ipproto, NULL, o->when[k], false, 0);

			if (ret)
				return ret;
		}
		if (o->last_access && (h = find(a, o->port, o->ipproto)) && !h->last_access) {
			h->last_access = o->last_access;
			memcpy(h->last_user, o->last_user, sizeof(h->last_user));
		}
	}
	return 0;
}

static void rebuild_free(struct rebuild *r)
{
	for (size_t i = 0; i < r->n_w; i++)
		free(r->w[i].id);
	free(r->w);
	free(r->taken);
	activity_free(&r->found);
	audit_snapshot_free(&r->snap);
	free(r);
}

int activity_rebuild(struct activity *a, struct audit *audit, int64_t since)
{
	struct rebuild *r = calloc(1, sizeof(*r));
	int ret;

	if (!r) {
		rebuild_failed(a, -ENOMEM);
		return -ENOMEM;
	}
	r->since = since;
	atomic_init(&r->done, false);
	atomic_init(&r->stop, false);
	if ((ret = audit_snapshot(audit, &r->snap)) || (ret = activity_new(&r->found)))
		goto out;
	/* jansson seeds its hash function on first use; the loop has used it long since. */
	if (pthread_create(&r->thread, NULL, rebuild_main, r)) {
		/* No thread: read here, as jitd did before it had one. */
		if (!(ret = rebuild_read(r)))
			ret = merge(a, r->found);
		goto out;
	}
	a->rb = r;
	a->waited = false;
	return 0;
out:
	rebuild_free(r);
	if (ret)
		rebuild_failed(a, ret);
	return ret;
}

/* activity_settle, waiting at most wait_ms (-1: for as long as it takes). */
static void settle_within(struct activity *a, int wait_ms)
{
	struct rebuild *r = a->rb;
	struct timespec until;
	int ret;

	if (!r || (!wait_ms && !atomic_load(&r->done)))
		return;
	if (wait_ms > 0 && !atomic_load(&r->done)) {
		clock_gettime(CLOCK_MONOTONIC, &until);
		until.tv_sec += wait_ms / 1000;
		until.tv_nsec += (long)(wait_ms % 1000) * 1000000;
		if (until.tv_nsec >= 1000000000) {
			until.tv_sec++;
			until.tv_nsec -= 1000000000;
		}
		if (pthread_clockjoin_np(r->thread, NULL, CLOCK_MONOTONIC, &until))
			return; /* still reading: the next one takes it */
	} else {
		pthread_join(r->thread, NULL);
	}
	a->rb = NULL;
	/* Cancelled: jitd is stopping, and the history goes with it. */
	if (r->ret != -ECANCELED && ((ret = r->ret) || (ret = merge(a, r->found))))
		rebuild_failed(a, ret);
	rebuild_free(r);
	/* The scan peaked well above what the history holds; glibc would keep the freed heap. */
	(void)malloc_trim(0);
}

void activity_settle(struct activity *a, bool wait)
{
	settle_within(a, wait ? -1 : 0);
}
