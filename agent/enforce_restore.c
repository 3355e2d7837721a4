/*
 * The table and the grants put back: at a start (the journal's records checked again and
 * restored, the table built or brought in line) and after drift (enforce_reconcile); and the
 * audit of damage the store finds in its files.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

#include "agent/audit.h"
#include "agent/dnat.h"
#include "agent/enforce_impl.h"
#include "agent/replay.h"
#include "agent/ruleset.h"
#include "agent/testhook.h"
#include "agent/verifier.h"
#include "common/array.h"
#include "common/config.h"
#include "common/jws.h"
#include "common/keys.h"
#include "common/log.h"

static bool same_set(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	return a->kind == b->kind && a->family == b->family && a->ipproto == b->ipproto &&
		a->port == b->port;
}

/*
 * When the earliest of the live model elements that hold host element want's range between
 * them ends, or -1 when they leave an address of it out. Each holds its addresses for every
 * grant covering them until the longest of those ends (an address two grants share is one
 * element, with the longer's time): the earliest is a bound on want's grant's end, its range
 * split among others' or not. Held only in part, the range may be another grant's alone (a
 * record whose grant never reached the kernel: jitd stopped between the two), which says
 * nothing of this one. Ranges of one set do not overlap in the kernel: the last live element
 * to start before want may hold its first addresses, the others start inside it. Expired
 * elements may linger beside the live ones until the next tick.
 */
static int64_t host_held_end(const struct enforce *e, const struct ruleset_elem *want,
	int64_t now_ms)
{
	size_t alen = want->family == AF_INET ? 4 : 16, at = model_lower(e, want);
	const struct ruleset_elem *v = e->model.v;
	int64_t end = INT64_MAX;
	uint8_t from[16];

	/* from: the first address of want's range not yet found held. */
	memcpy(from, want->lo, alen);
	for (size_t i = at; i-- > 0 && same_set(&v[i], want);) {
		if (v[i].exp_ms <= now_ms)
			continue;
		if (memcmp(v[i].hi, want->lo, alen) >= 0) {
			if (memcmp(v[i].hi, want->hi, alen) >= 0)
				return v[i].exp_ms;
			end = v[i].exp_ms;
			memcpy(from, v[i].hi, alen);
			addr_next(from, alen);
		}
		break;
	}
	for (size_t i = at; i < e->model.n && same_set(&v[i], want); i++) {
		if (v[i].exp_ms <= now_ms)
			continue;
		if (memcmp(v[i].lo, from, alen) > 0)
			return -1;
		if (v[i].exp_ms < end)
			end = v[i].exp_ms;
		if (memcmp(v[i].hi, want->hi, alen) >= 0)
			return end;
		memcpy(from, v[i].hi, alen);
		addr_next(from, alen);
	}
	return -1;
}

/*
 * The live box that starts at gateway box want's corner (first source, first destination) and
 * holds all of it, or NULL; *started: whether a live one starts there at all (then want was
 * split). Boxes split among others' are not looked for (boxes sort by destination, then
 * source, and finding the pieces would take a walk over the group for each grant).
 */
static const struct ruleset_elem *box_at_corner(const struct enforce *e,
	const struct ruleset_elem *want, int64_t now_ms, bool *started)
{
	size_t alen = want->family == AF_INET ? 4 : 16, at = model_lower(e, want);
	const struct ruleset_elem *v = e->model.v;

	*started = false;
	/* Those that start at the corner sort by their ends: before want or from it on. */
	for (size_t i = at; i-- > 0 && same_set(&v[i], want) &&
		!memcmp(v[i].dlo, want->dlo, alen) && !memcmp(v[i].lo, want->lo, alen);)
		*started |= v[i].exp_ms > now_ms;
	for (size_t i = at; i < e->model.n && same_set(&v[i], want) &&
		!memcmp(v[i].dlo, want->dlo, alen) && !memcmp(v[i].lo, want->lo, alen); i++) {
		if (v[i].exp_ms <= now_ms)
			continue;
		if (memcmp(v[i].hi, want->hi, alen) >= 0 && memcmp(v[i].dhi, want->dhi, alen) >= 0)
			return &v[i];
		*started = true;
	}
	return NULL;
}

/* Gateway grant g's box for its source s, destination d and port q. */
static struct ruleset_elem grant_box(const struct grant *g, size_t s, size_t d, size_t q)
{
	struct ruleset_elem want = host_elem(g, s, q, 0);

	want.kind = RULESET_FORWARD;
	prefix_range(&g->dst[d], want.dlo, want.dhi);
	return want;
}

/* Whether box m holds all of box want. */
static bool box_holds(const struct ruleset_elem *m, const struct ruleset_elem *want)
{
	size_t alen = want->family == AF_INET ? 4 : 16;

	return memcmp(m->lo, want->lo, alen) <= 0 && memcmp(m->hi, want->hi, alen) >= 0 &&
		memcmp(m->dlo, want->dlo, alen) <= 0 && memcmp(m->dhi, want->dhi, alen) >= 0;
}

/*
 * When the box that holds gateway grant g's box want ends, or -1 when the kernel does not hold
 * it whole: one that starts at its corner, or, when none starts there, one of g's own other
 * boxes' that holds it too (the kernel merges a grant's adjoining destinations or sources that
 * end together into one box, which starts at the first one's corner). *merged: the last box
 * found so, tried first: a grant's boxes merged into one are each found in it at once, not by
 * a search over the grant's corners each (64 sources by 64 destinations would be 4096 each).
 */
static int64_t box_held_end(const struct enforce *e, const struct grant *g,
	const struct ruleset_elem *want, size_t q, int64_t now_ms,
	const struct ruleset_elem **merged)
{
	bool started;
	const struct ruleset_elem *m = box_at_corner(e, want, now_ms, &started);

	if (m || started)
		return m ? m->exp_ms : -1;
	if (*merged && box_holds(*merged, want))
		return (*merged)->exp_ms;
	for (size_t s = 0; s < g->n_src; s++)
		for (size_t d = 0; d < g->n_dst; d++) {
			struct ruleset_elem other;

			if (g->src[s].family != want->family || g->dst[d].family != want->family)
				continue;
			other = grant_box(g, s, d, q);
			m = box_at_corner(e, &other, now_ms, &started);
			if (m && box_holds(m, want)) {
				*merged = m;
				return m->exp_ms;
			}
		}
	return -1;
}

/*
 * When the kernel's elements of a grant run out (wall-clock ms, the earliest bound they give,
 * host_held_end and box_held_end), or -1 when they do not hold every range of it (after a boot:
 * none). They count down on the kernel's clock since the grant was applied, whatever the wall
 * clock did since.
 */
static int64_t kernel_held_end(const struct enforce *e, const struct grant *g, int64_t now_ms)
{
	int64_t held = INT64_MAX;

	/* Each element as desired() plans it alone: per source (and destination) and port. */
	for (size_t q = 0; q < g->n_ports; q++) {
		const struct ruleset_elem *merged = NULL;

		for (size_t s = 0; s < g->n_src; s++) {
			struct ruleset_elem want = host_elem(g, s, q, 0);
			int64_t at;

			if (!g->n_dst) {
				if ((at = host_held_end(e, &want, now_ms)) < 0)
					return -1;
				if (at < held)
					held = at;
			}
			for (size_t d = 0; d < g->n_dst; d++) {
				if (g->dst[d].family != g->src[s].family)
					continue;
				want = grant_box(g, s, d, q);
				if ((at = box_held_end(e, g, &want, q, now_ms, &merged)) < 0)
					return -1;
				if (at < held)
					held = at;
			}
		}
	}
	return held == INT64_MAX ? -1 : held;
}

/*
 * When a restored grant's access ends (wall-clock ms): exp, but no later than the kernel's
 * elements of it when it kept them (a restart, not a boot): a wall clock stepped back since
 * the grant was applied, or behind at a start before NTP has set it, must not lengthen it.
 */
static int64_t restored_end_ms(const struct enforce *e, const struct grant *g, int64_t now_ms)
{
	int64_t end = g->exp * 1000, held = kernel_held_end(e, g, now_ms);

	return held >= 0 && held < end ? held : end;
}

/*
 * The claims of a record that was not restored, unverified (they are jitd's own journal's,
 * checked when admitted): *g when they parse and name the record's id, else false.
 */
static bool record_claims(const struct store_item *it, bool local, struct grant *g)
{
	struct jit_error err = { 0 };
	struct jws j = { 0 };
	json_t *claims = NULL;
	bool named;

	if (local)
		claims = json_loadb(it->token, it->len, JSON_REJECT_DUPLICATES, NULL);
	else if (!jws_decode(it->token, it->len, &j, &err))
		(void)jws_claims(&j, &claims, &err);
	named = claims && !grant_parse_claims(claims, g, &err) && !strcmp(g->jti, it->jti);
	if (!named)
		grant_clear(g);
	json_decref(claims);
	jws_clear(&j);
	return named;
}

/*
 * A recorded grant the start no longer admits (its key removed, the policy tightened since) is
 * in the trail as a reload's removal is; one that ran out while jitd was not running, as any
 * expiry. Its claims name it without its key: the record is jitd's own, checksummed, and its
 * signature held when it was written (the restore trusts it as much), so no second Ed25519
 * verification per record, and a grant whose key went too is named all the same. One whose
 * claims cannot be read is named by its id.
 * g: the record's claims (record_claims), or NULL when they could not be read.
 */
static void audit_not_restored(struct enforce *e, const char *jti, const struct grant *g,
	int code, const char *why)
{
	bool expired = code == JIT_ERR_EXPIRED;
	char msg[sizeof(((struct jit_error *)0)->msg) + 64];

	if (expired)
		snprintf(msg, sizeof(msg), "expired while jitd was not running");
	else
		snprintf(msg, sizeof(msg), "start: not restored: %s", why);
	log_info("grant %s: jti=%s sub=%s (%s)", expired ? "expired" : "revoked", jti,
		g ? g->sub : "?", msg);
	(void)audit(e, expired ? "grant.expired" : "grant.revoked", g, g ? NULL : jti,
		expired ? NULL : "jitd", expired ? 0 : code, msg, -1);
	if (expired)
		e->metrics.grants_expired++;
	else
		e->metrics.grants_revoked++;
}

/*
 * Damage the store found in its files (a damaged snapshot or journal at the start, a record a
 * compaction left out): acknowledged grants lost to the agent, which the trail must say, since
 * what it cost (a grant gone from the state, its element removed at the next start as one no
 * grant stands behind) is otherwise never closed in it. One record for what is new since the
 * last, with the last finding; the log has each.
 */
void audit_state_damage(struct enforce *e)
{
	const struct store_damage *d = store_damage(e->store);
	unsigned long n = d->count - e->damage_audited;
	char msg[sizeof(d->last) + 64];

	if (!n)
		return;
	if (n == 1)
		snprintf(msg, sizeof(msg), "%s", d->last);
	else
		snprintf(msg, sizeof(msg), "%lu findings; the last: %s", n, d->last);
	/*
	 * Not audited: tried again with the next finding, or at the stop. (A line written whose
	 * fsync failed is written again then: twice rather than never.)
	 */
	if (!audit(e, "state.damaged", NULL, NULL, "jitd", 0, msg, (long long)n))
		e->damage_audited = d->count;
}

/* The store's hook, in the middle of its operation: the record is written from the loop. */
void damage_found(void *arg)
{
	struct enforce *e = arg;

	event_active(e->damage_event, EV_TIMEOUT, 1);
}

void damage_event_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	audit_state_damage(arg);
}

/*
 * A restored grant whose gateway ports changed: recorded again, and audited, once the start
 * has put them in the kernel. i: its index in e->grants once kept (restore_item).
 */
struct rerec {
	char *jti, *token, *annex, *was;
	size_t len, i;
};

/*
 * A restored gateway grant takes back its recorded ports; if the configuration moved them, it
 * gets new ones, recorded again once the walk is over. 0, or a refusal in err.
 */
static int restore_ports(struct enforce *e, struct grant *g, const char *token, size_t len,
	const char *annex, struct jit_error *err)
{
	char buf[DNAT_ANNEX_MAX];
	struct rerec *nv, *r;
	int ret;

	if (!e->restore_used || !e->restore_reserved)
		return jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
	if ((ret = dnat_restore(e->cfg, g, annex, e->restore_used, e->restore_reserved, err)) <= 0)
		return ret;
	if (dnat_annex(g, buf, sizeof(buf)) ||
		!(nv = array_reserve(e->rerecord, &e->cap_rerecord, e->n_rerecord + 1,
			sizeof(*nv), 16)))
		return jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
	e->rerecord = nv;
	r = &nv[e->n_rerecord];
	*r = (struct rerec){ strdup(g->jti), strndup(token, len), buf[0] ? strdup(buf) : NULL,
		strdup(dnat_annex_ports(annex)), len, SIZE_MAX };
	if (!r->jti || !r->token || (buf[0] && !r->annex) || !r->was) {
		free(r->jti);
		free(r->token);
		free(r->annex);
		free(r->was);
		return jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
	}
	e->n_rerecord++;
	return 0;
}

/*
 * The grants restore_ports gave new ports, once the start has mapped them (applied): recorded
 * in one write, and audited with one fsync. A start that fails forgets them, and the next start
 * gives the new ones again: the kernel maps the old ports still (none, if the start built the
 * table anew), unless the answer to the commit that mapped the new ones was lost (then they
 * may be mapped, unrecorded, until then).
 */
static void rerecord(struct enforce *e, bool applied)
{
	struct store_rec *recs = applied ? calloc(e->n_rerecord + 1, sizeof(*recs)) : NULL;
	int ret = recs ? 0 : -ENOMEM;

	for (size_t i = 0; recs && i < e->n_rerecord; i++)
		recs[i] = (struct store_rec){ e->rerecord[i].jti, e->rerecord[i].token,
			e->rerecord[i].len, e->rerecord[i].annex };
	if (applied && e->n_rerecord &&
		(ret || (ret = store_put_many(e->store, recs, e->n_rerecord))))
		log_warn("state: cannot record the new gateway ports of %zu grant(s): %s",
			e->n_rerecord, strerror(-ret));
	if (applied && e->n_rerecord) {
		audit_defer(e->audit, true);
		for (size_t i = 0; i < e->n_rerecord; i++) {
			const struct rerec *r = &e->rerecord[i];
			ssize_t k = r->i < e->n_grants && !strcmp(e->grants[r->i].jti, r->jti) ?
				(ssize_t)r->i : find_index(e, r->jti);

			if (k >= 0)
				audit_remapped(e, &e->grants[k], r->was, "start");
		}
		audit_deferred_sync(e);
	}
	for (size_t i = 0; i < e->n_rerecord; i++) {
		free(e->rerecord[i].jti);
		free(e->rerecord[i].token);
		free(e->rerecord[i].annex);
		free(e->rerecord[i].was);
	}
	free(recs);
	free(e->rerecord);
	e->rerecord = NULL;
	e->n_rerecord = e->cap_rerecord = 0;
	free(e->restore_used);
	free(e->restore_reserved);
	e->restore_used = e->restore_reserved = NULL;
}

#define RESTORE_KEEP 0
#define RESTORE_DROP 1

/* How a restore worker's parse of a record went; the grant itself is in its slot (restore_pass). */
struct restored {
	bool local;	/* local_record: the parse left it to restore_item */
	int ret;
	struct jit_error *err;	/* on failure, if there was memory for it */
};

struct restore_pass {
	struct enforce *e;	/* only read by the workers; resync (the lead) writes the model */
	const struct store_item *item;
	struct restored *out;
	/*
	 * Record i's grant: e->grants past the live ones, reserved for every record. Kept ones
	 * move down in order (restore_item), and no second array of them is ever held (15 MB at
	 * 100,000).
	 */
	struct grant *slot;
	int64_t now_ms;
	int resync_ret;
};

/*
 * What the kernel holds is read while the workers parse: reading 100,000 elements is a third of
 * a second on one CPU, and the records do not depend on it (nor it on them).
 */
static void restore_lead(void *arg)
{
	struct restore_pass *p = arg;

	p->resync_ret = resync(p->e);
}

static bool local_record(const struct store_item *it)
{
	return it->len && it->token[0] == '{';
}

/*
 * Signed records, parsed and checked on every CPU: at 100,000 grants that is most of a
 * restart. Nothing here touches jitd's state; restore_item does that, one record at a time.
 */
static void restore_range(void *arg, size_t begin, size_t end)
{
	struct restore_pass *p = arg;
	/*
	 * The chunk's last trusted key: the grants it signed do not look it up again. And its
	 * last header, which the grants that share it do not decode again.
	 */
	char kid[GRANT_MAX_STRING + 1] = "";
	struct jws_verifier jv = { 0 };

	for (size_t i = begin; i < end; i++) {
		const struct store_item *it = &p->item[i];
		struct restored *r = &p->out[i];
		struct grant *g = &p->slot[i];
		struct jit_error err = { 0 };

		if ((r->local = local_record(it)))
			continue;
		r->ret = check_recorded(p->e, it->token, it->len, p->now_ms, kid[0] ? kid : NULL,
			&jv, g, &err);
		if (!r->ret) {
			snprintf(kid, sizeof(kid), "%s", g->kid);
			(void)grant_pack(g);
		} else if ((r->err = malloc(sizeof(*r->err)))) {
			*r->err = err;
		}
	}
	/*
	 * A parsed grant holds what it needs: its token is read again only for a local or gateway
	 * grant, or to audit one that expired.
	 */
	store_items_done(p->e->store, &p->item[begin], end - begin);
	jws_verifier_clear(&jv);
}

/*
 * The records a start no longer admits: audited and dropped once the kernel holds the rest
 * (restore), never by a start that fails. Grown as they come: most starts have none.
 */
struct drop {
	char *id;	/* the record's */
	struct grant g;	/* its claims when they could be read (named) */
	bool named;
	int code;	/* the refusal's */
	char *why;
};

struct drops {
	struct drop *v;
	const char **ids;	/* v[i].id: what drop_records takes, kept beside them */
	size_t n, cap, cap_ids;
	/* keys_dir_errno, asked once: a key removed leaves a record per grant it signed. */
	int keys_dir_why;
	bool keys_dir_asked;
};

static void drops_free(struct drops *d)
{
	for (size_t i = 0; i < d->n; i++) {
		free(d->v[i].id);
		grant_clear(&d->v[i].g);
		free(d->v[i].why);
	}
	free(d->v);
	free(d->ids);
	*d = (struct drops){ 0 };
}

/*
 * A record that did not pass its check at the start: put in d to be dropped and audited
 * (RESTORE_DROP), or -EAGAIN when nothing is known of it (INTERNAL), for the start to fail
 * rather than lose it; -ENOMEM when d cannot take it (the start fails, keeping the record: a
 * start that went on would remove its elements and leave the record behind).
 */
static int not_restored(struct enforce *e, const struct store_item *it, bool local,
	struct jit_error *err, int64_t now_ms, struct drops *d)
{
	const char **ids;
	struct drop *v;
	struct grant g = { 0 };
	bool named = record_claims(it, local, &g);
	int ret, why;

	/*
	 * A grant whose time ran out while jitd was stopped expired, whatever else its check
	 * found first (a key rotated away, a port no longer protected, a key file unreadable
	 * now): it is audited so, and cannot hold the start up.
	 */
	if (named && err->code != JIT_ERR_EXPIRED && g.exp * 1000 - now_ms < MIN_TIME_LEFT_MS)
		(void)jit_fail(err, JIT_ERR_EXPIRED, "grant '%s' has no time left", g.jti);
	/*
	 * Its key not found in a keys_dir jitd cannot enter: nothing is known of the key, as when
	 * its file cannot be read now (a typo in keys_dir would else end every signed grant).
	 */
	if (err->code == JIT_ERR_UNKNOWN_KEY && !d->keys_dir_asked) {
		d->keys_dir_why = keys_dir_errno(e->cfg->keys_dir);
		d->keys_dir_asked = true;
	}
	if (err->code == JIT_ERR_UNKNOWN_KEY && (why = d->keys_dir_why))
		(void)jit_fail(err, JIT_ERR_INTERNAL, "its key cannot be looked for: "
			"keys_dir %s: %s", e->cfg->keys_dir, strerror(why));
	if (err->code == JIT_ERR_INTERNAL) {
		/*
		 * Out of memory, or a key file that could not be read now: nothing is known about
		 * the grant. Dropping it would lose it; the start fails instead, the kernel keeps
		 * its elements to their own timeouts, and the next start (systemd restarts jitd)
		 * checks it again.
		 */
		log_err("state: cannot check recorded grant now: %s; not starting, so that it is "
			"not dropped", err->msg);
		ret = -EAGAIN;
		goto out;
	}
	/*
	 * Its id outlives the record (synced before the record goes): replay.db may have lost
	 * the id to the crash before this start, and a key or port back in the configuration
	 * later must not make the token usable a second time.
	 */
	if (!local && named && g.exp + (int64_t)e->cfg->clock_skew >= now_ms / 1000 &&
		(ret = replay_keep(e->replay, it->jti, g.exp + (int64_t)e->cfg->clock_skew)) &&
		ret != -EEXIST)
		log_warn("replay: cannot remember dropped grant '%s': %s", it->jti,
			strerror(-ret));
	ret = -ENOMEM;
	if (!(v = array_reserve(d->v, &d->cap, d->n + 1, sizeof(*v), 16)))
		goto out;
	d->v = v;
	if (!(ids = array_reserve(d->ids, &d->cap_ids, d->n + 1, sizeof(*ids), 16)))
		goto out;
	d->ids = ids;
	v[d->n] = (struct drop){ .id = strdup(it->jti), .named = named, .code = err->code,
		.why = strdup(err->msg) };
	if (!v[d->n].id || !v[d->n].why) {
		free(v[d->n].id);
		free(v[d->n].why);
		goto out;
	}
	ids[d->n] = v[d->n].id;
	v[d->n++].g = g;
	return RESTORE_DROP;
out:
	grant_clear(&g);
	return ret;
}

/*
 * One record, in the store's order: a local grant (claims, no signature) is checked here, a
 * gateway grant takes back its ports, the grant id is remembered and the grant kept. slot: its
 * parsed grant, at or past e->n_grants, which this takes (and leaves zeroed).
 * RESTORE_KEEP, RESTORE_DROP (no longer valid), -EAGAIN (it cannot be checked now) or -ENOMEM.
 */
static int restore_item(struct enforce *e, const struct store_item *it, struct restored *r,
	struct grant *slot, int64_t now_ms, struct drops *d)
{
	struct jit_error err = { 0 };
	struct grant g = { 0 };
	char *annex = NULL;
	size_t rerecords = e->n_rerecord;
	bool remapped = false;
	int ret;

	/* r->local, not the token: its page has left memory and need not come back for this. */
	if (r->local) {
		json_error_t jerr;
		json_t *claims = json_loadb(it->token, it->len, JSON_REJECT_DUPLICATES, &jerr);

		/* Out of memory is no verdict on the record: INTERNAL keeps it (below). */
		ret = claims && json_is_true(json_object_get(claims, LOCAL_MARK)) ?
			check_local(e, claims, now_ms, &g, &err) :
			!claims && json_error_code(&jerr) == json_error_out_of_memory ?
			jit_fail(&err, JIT_ERR_INTERNAL, "out of memory") :
			jit_fail(&err, JIT_ERR_MALFORMED, "unreadable local grant record");
		json_decref(claims);
	} else if (!(ret = r->ret)) {
		g = *slot;
		memset(slot, 0, sizeof(*slot));
	} else if (r->err) {
		err = *r->err;
	} else {
		(void)jit_fail(&err, ret, "(no memory was left for the reason)");
	}
	if (!ret && g.n_dst) {
		if (it->annex && !(annex = strndup(it->annex, it->annex_len)))
			ret = jit_fail(&err, JIT_ERR_INTERNAL, "out of memory");
		else
			ret = restore_ports(e, &g, it->token, it->len, annex, &err);
		free(annex);
		if (ret)
			grant_clear(&g);
		remapped = !ret && e->n_rerecord > rerecords;
	}
	if (ret)
		return not_restored(e, it, r->local, &err, now_ms, d);
	/*
	 * A lost replay file must not make a restored grant's token usable a second time (synced
	 * once for all at the end of restore).
	 */
	ret = replay_keep(e->replay, g.jti, g.exp + (int64_t)e->cfg->clock_skew);
	if (ret && ret != -EEXIST)
		log_warn("replay: cannot remember restored grant '%s': %s", g.jti, strerror(-ret));
	now_ms = enforce_now_ms();
	if (grants_push_until(e, &g, clock_ms(CLOCK_BOOTTIME) +
		(restored_end_ms(e, &g, now_ms) - now_ms))) {
		grant_clear(&g);
		return -ENOMEM;
	}
	if (remapped)
		e->rerecord[e->n_rerecord - 1].i = e->n_grants - 1;
	return RESTORE_KEEP;
}

/*
 * Records per chunk of the parallel parse. Not much fewer: each chunk gives back its mapped
 * pages (store_items_done), and on a VM that system call costs 0.1 ms (it flushes every CPU's
 * TLB); chunks of 256 made the parse of 100,000 records 10% slower.
 */
#define RESTORE_CHUNK 1024

/*
 * Every record: parsed in parallel (while the caller's thread first reads the kernel's
 * elements into the model), then taken in order. The records no longer valid go into
 * *dropped (the caller audits and drops them, and frees it), however the walk ends.
 * *resync_ret: how that read went, when it returns 0.
 */
static int restore_records(struct enforce *e, unsigned threads, int *resync_ret,
	struct drops *dropped)
{
	struct restore_pass pass = { .e = e, .now_ms = enforce_now_ms() };
	struct store_item *items = NULL;
	struct restored *parsed = NULL;
	size_t n = 0, base = e->n_grants;
	int ret;

	if ((ret = store_items(e->store, &items, &n)))
		return ret;
	if (!(parsed = calloc(n + 1, sizeof(*parsed))) || grants_reserve(e, base + n)) {
		ret = -ENOMEM;
		goto out;
	}
	pass.item = items;
	pass.out = parsed;
	if (n) {
		/* Zeroed: a record not parsed there (local, or failed) leaves nothing to free. */
		pass.slot = e->grants + base;
		memset(pass.slot, 0, n * sizeof(*pass.slot));
	}
	verifier_run(threads, n, RESTORE_CHUNK, restore_range, &pass, restore_lead);
	*resync_ret = pass.resync_ret;
	/*
	 * Every recorded gateway port first, of the records that parsed (a record run out or no
	 * longer admitted holds none): one given new ports must not take another's.
	 */
	for (size_t i = 0; e->restore_reserved && i < n; i++)
		if (!parsed[i].local && !parsed[i].ret)
			dnat_reserve(e->restore_reserved, items[i].annex, items[i].annex_len);
	for (size_t i = 0; i < n; i++) {
		/* Kept grants move down to e->n_grants, never past their own slot. */
		if ((ret = restore_item(e, &items[i], &parsed[i], &pass.slot[i], pass.now_ms,
			dropped)) < 0)
			goto out;
	}
	ret = 0;
out:
	/* Slots no kept grant took: zeroed, or what a failed parse or an interrupted pass left. */
	for (size_t i = e->n_grants; pass.slot && i < base + n; i++)
		grant_clear(&e->grants[i]);
	for (size_t i = 0; parsed && i < n; i++)
		free(parsed[i].err);
	free(parsed);
	store_items_end(e->store, &items);
	return ret;
}

/* Every live grant's elements as an empty table would need them: build_batch's refill. */
static int plan_refill(struct enforce *e, int64_t now_ms, struct plan *p)
{
	struct elems kept = e->model;
	struct group *groups = NULL;
	size_t n_groups = 0;
	int ret;

	memset(p, 0, sizeof(*p));
	e->model = (struct elems){ 0 };
	if (!(ret = all_groups(e, &groups, &n_groups)))
		ret = plan_build(e, groups, n_groups, now_ms, p);
	e->model = kept;
	free(groups);
	return ret;
}

/*
 * The table as cfg wants it: claimed if it is in place, else built (see build_table). With
 * refill, a table deleted to be built again takes every live grant's elements (planned into
 * refill, against an empty table) in the same transaction: a second one after it would leave
 * every grant out of the kernel in between, and for good if it failed. *refilled: how many.
 */
static int build_batch(struct enforce *e, struct nft_batch *b, uint32_t flags,
	struct plan *refill, int64_t now_ms, size_t *refilled)
{
	int ret;

	*refilled = 0;
	if (e->in_place)
		return ruleset_claim(b, flags);
	/*
	 * A set or chain the config does not want (the mode changed, or dnat went away) goes with
	 * the whole table, in the same transaction that builds it again; without refill, the
	 * caller re-reads the (then empty) grant sets and restores every grant.
	 */
	if ((ret = ruleset_extra(e->nft, e->cfg, flags, !e->no_mark)) == 1) {
		log_warn("table inet jitd holds sets or chains this configuration does not make "
			 "(or of another shape under jitd's names), its persistence is not what "
			 "table_owner wants, it is dormant, or it has no jitd mark (another "
			 "program made it): rebuilding it from scratch%s", refill ?
			 ", its grants' elements with it" : "");
		if ((ret = ruleset_delete(b)) || (ret = ruleset_build(b, e->cfg, flags)))
			return ret;
		if (!refill)
			return 0;
		/*
		 * Planned here, where it is needed: a second call (no owner flag) plans again. One
		 * that fails must not keep the table as it is (dormant, it filters nothing): built
		 * without the elements, which the caller's repair then puts back.
		 */
		plan_free(refill);
		if ((ret = plan_refill(e, now_ms, refill))) {
			log_warn("cannot plan the grants' elements for the rebuilt table (%s): "
				"built without them, put back after", strerror(-ret));
			plan_free(refill);
			return 0;
		}
		*refilled = refill->add.n;
		return ruleset_elems(b, NULL, 0, refill->add.v, refill->add.n, now_ms);
	}
	return ret < 0 ? ret : ruleset_build(b, e->cfg, flags);
}

/*
 * A table jitd has just built has the mark it was sent, unless the kernel keeps no table user
 * data (before Linux 5.10): then no table has one, and the checks must stop asking for it, or
 * each would rebuild the table. Only when the generations since gen are jitd's own
 * transactions (commits since): an unmarked table someone put in meanwhile is theirs, and the
 * next check rebuilds it, and looks again.
 */
static void check_mark_kept(struct enforce *e, uint32_t gen, uint64_t commits)
{
	uint32_t now;
	int ret = ruleset_table_state(e->nft);

	if (ret < 0) {
		log_warn("cannot read table inet jitd back for its mark (%s): taken as kept",
			strerror(-ret));
		return;
	}
	e->mark_kept = ret == RULESET_TABLE_JITDS;
	if (ret != RULESET_TABLE_OTHER || nft_gen_id(e->nft, &now) ||
		now - gen != e->commits - commits)
		return;
	e->no_mark = true;
	log_warn("this kernel keeps no table user data (Linux 5.10 and later do): table inet jitd "
		 "cannot carry jitd's mark, so a start that fails cannot tell it from a saved "
		 "ruleset's table, and replaces it");
}

/*
 * refill: a table deleted to be built again takes every live grant's elements in the same
 * transaction (the periodic check's repair); without it (a start) the restore adds them.
 */
int build_table(struct enforce *e, bool refill, size_t *refilled, char *err,
	size_t errlen)
{
	char kerr[NFT_ERRLEN] = "";
	struct nft_batch *b = NULL;
	struct plan p = { 0 };
	int64_t now = enforce_now_ms();
	uint64_t commits = e->commits;
	uint32_t gen = 0;
	/*
	 * Not for a table found in place: it was read with its mark (the kernel keeps it), and a
	 * claim reads nothing again, so a table put in since would look like the one built. Nor
	 * once the answer is known either way: the kernel does not change its mind.
	 */
	bool have_gen = !e->no_mark && !e->mark_kept && !e->in_place &&
		nft_gen_id(e->nft, &gen) == 0;
	int ret;

	if ((ret = nft_batch_new(e->nft, &b)))
		goto out;
	/*
	 * A table that is already right stays as it is (a restart of jitd): no flush, no
	 * re-added rule, nothing for a watcher to see. Ownership is a property of the socket,
	 * so an owned table is claimed again, with a message that touches nothing else.
	 */
	if ((ret = build_batch(e, b, e->table_flags, refill ? &p : NULL, now, refilled)))
		goto out;
#ifdef JITD_TEST_HOOKS
	/* Test builds: answer as a kernel before 6.9 would, to test the fallback on any kernel. */
	if (e->table_flags && getenv("JITD_TEST_NO_PERSIST"))
		ret = -EOPNOTSUPP;
	else
#endif
		ret = commit_batch(e, b, kerr);
	/*
	 * Kernels before 6.9 know no PERSIST flag (EOPNOTSUPP). Ownership without it is not an
	 * option: the kernel deletes an owned table with its owner, so a crash would open the
	 * ports. Fall back to an unowned table, which the event watch defends instead.
	 */
	if (ret == -EOPNOTSUPP && e->table_flags) {
		log_warn("this kernel cannot keep an owned table after its owner exits (Linux 6.9+): "
			 "table inet jitd is not owned; changes by others are repaired instead");
		e->table_flags = 0;
		nft_batch_free(b);
		b = NULL;
		kerr[0] = '\0';
		e->in_place = false; /* it was checked with the owner flag, which it will not get */
		if ((ret = nft_batch_new(e->nft, &b)) ||
			(ret = build_batch(e, b, 0, refill ? &p : NULL, now, refilled)))
			goto out;
		ret = commit_batch(e, b, kerr);
	}
	if (!ret && have_gen)
		check_mark_kept(e, gen, commits);
out:
	if (ret)
		snprintf(err, errlen, "%s", kerr[0] ? kerr : strerror(-ret));
	plan_free(&p);
	nft_batch_free(b);
	return ret;
}

/*
 * Access a start ended is audited as the periodic check's repairs are: an element with no
 * record behind it (its revocation's record dropped before the kernel refused the change, a
 * journal cut at damage, an element someone added) otherwise closed with no line in the trail
 * after the grant.applied that opened it. n: the elements jitd cannot have written, and the
 * host elements whose range the restored grants' own in their set do not cover whole
 * (plan_group); an element they replace (another timeout, another shape) is no removal. The
 * elements of grants the start does not restore count too: those grants are audited each.
 */
static void audit_start_removals(struct enforce *e, size_t n)
{
	char what[200];

	snprintf(what, sizeof(what), "start: %zu element(s) removed that no restored grant's "
		"own in their set cover", n);
	log_warn("drift repaired: %s", what);
	(void)audit(e, "drift.repaired", NULL, NULL, NULL, 0, what, (long long)n);
}

/* Restores recorded grants and removes kernel elements that no grant stands behind. */
int restore(struct enforce *e, unsigned threads, char *err, size_t errlen)
{
	struct group *groups = NULL;
	struct drops dropped = { 0 };
	size_t n_groups = 0, stray, raw = 0, removed = 0;
	int ret, resync_ret = 0;

	e->restore_used = calloc(1, sizeof(*e->restore_used));
	e->restore_reserved = calloc(1, sizeof(*e->restore_reserved));
	ret = restore_records(e, threads, &resync_ret, &dropped);
	if (ret == -EAGAIN)
		snprintf(err, errlen, "a recorded grant cannot be checked now (logged above); "
			"not started, so that it is not dropped");
	if (!ret && (ret = resync_ret))
		snprintf(err, errlen, "reading the allow sets: %s", strerror(-ret));
	if (ret)
		goto out;
	stray = e->model.n;
	if ((ret = replay_sync(e->replay)))
		log_warn("replay: cannot sync the restored grant ids: %s", strerror(-ret));
	ret = all_groups(e, &groups, &n_groups);
	e->repairing = true;
	if (ret == 0 && drop_strays(e, &raw, err, errlen))
		log_warn("kernel: cannot remove elements jitd did not write: %s", err);
	if (ret == 0)
		ret = sync_groups_removing(e, groups, n_groups, &removed, err, errlen);
	e->repairing = false;
	if (ret == 0)
		log_info("restored %zu grant(s); kernel held %zu element(s), now %zu", e->n_grants,
			stray, e->model.n);
	if (ret == 0 && raw)
		log_warn("kernel: removed %zu element(s) jitd cannot have written", raw);
	/* The strays' own commit holds even when the start fails after it. */
	if (removed + raw)
		audit_start_removals(e, removed + raw);
out:
	rerecord(e, ret == 0);
	/*
	 * Only once the kernel no longer holds their elements: a start that fails leaves them
	 * there, and a record dropped would leave an element no start removes but as a stray, nor
	 * restores should the cause be mended (a key put back). Their ids were made durable first
	 * (restore_item), as before every drop; a journal that refuses the drop is tried again
	 * every second (retry_drops).
	 */
	if (ret == 0 && dropped.n) {
		/*
		 * One line each, made durable with one fsync, as the expiry tick's are: a key
		 * removed from under 100,000 grants must not cost a start 100,000 fsyncs.
		 */
		audit_defer(e->audit, true);
		for (size_t i = 0; i < dropped.n; i++) {
			const struct drop *x = &dropped.v[i];

			audit_not_restored(e, x->id, x->named ? &x->g : NULL, x->code, x->why);
		}
		audit_deferred_sync(e);
		drop_records(e, dropped.ids, dropped.n);
	} else if (dropped.n) {
		log_warn("state: the records of %zu grant(s) not restored are kept, for the next "
			"start to judge again", dropped.n);
	}
	drops_free(&dropped);
	free(groups);
	return ret;
}

int enforce_reconcile(struct enforce *e, bool rebuild, const char *trigger)
{
	char err[NFT_ERRLEN] = "", what[256];
	const char *differs = NULL;
	struct group *groups = NULL;
	size_t n_groups = 0, n_raw = 0, refilled = 0;
	struct plan p = { 0 };
	bool exists;
	int ret;

#ifdef JITD_TEST_HOOKS
	/* $JITD_TEST_REPAIR_FAIL_FILE holding 1: checks fail while it does (a dump interrupted). */
	if (testhook_number("JITD_TEST_REPAIR_FAIL_FILE", false, 0) > 0) {
		ret = -EINTR;
		snprintf(err, sizeof(err), "cannot read the ruleset: %s", strerror(-ret));
		goto out;
	}
#endif
	if ((ret = nft_table_exists(e->nft, RULESET_TABLE, &exists))) {
		snprintf(err, sizeof(err), "cannot read the ruleset: %s", strerror(-ret));
		goto out;
	}
	rebuild |= !exists;
	/*
	 * Events report a change of structure as it comes, but not one made before the event
	 * socket existed (while a start restores) or in events that were lost: a full check
	 * compares the structure too, so that such a change is found by it rather than never.
	 */
	if (!rebuild && (ret = ruleset_in_place(e->nft, e->cfg, e->table_flags, !e->no_mark,
		&differs)) != 1) {
		if (ret < 0) {
			snprintf(err, sizeof(err), "cannot read the ruleset: %s", strerror(-ret));
			goto out;
		}
		log_warn("table inet jitd: %s", differs);
		rebuild = true;
	}
	/* The table, its chain, rules and fixed sets as the config says; live elements kept. */
	/*
	 * A rebuild that failed with the grants' elements in it (a kernel refusing the larger
	 * commit, memory for its batch) is tried again without them: the table must not stay as
	 * it is (dormant, it filters nothing), and the grants are put back below.
	 */
	if (rebuild && (ret = build_table(e, true, &refilled, err, sizeof(err))) && refilled) {
		log_warn("table inet jitd: the rebuild with %zu granted element(s) failed (%s): "
			"rebuilding it without them", refilled, err);
		err[0] = '\0';
		ret = build_table(e, false, &refilled, err, sizeof(err));
	}
	if (rebuild && ret)
		goto out;
	if ((ret = resync(e)) || (ret = all_groups(e, &groups, &n_groups)) ||
		(ret = plan_build(e, groups, n_groups, enforce_now_ms(), &p))) {
		snprintf(err, sizeof(err), "cannot compare the allow sets: %s", strerror(-ret));
		goto out;
	}
	if (!rebuild && !p.del.n && !p.add.n && !e->strays.n)
		goto out;	/* in sync: nothing happened that needs undoing */
	e->repairing = true;
	/* One that expires before it is removed fails the removal; the next check tries again. */
	if (drop_strays(e, &n_raw, err, sizeof(err)))
		log_warn("kernel: cannot remove elements jitd did not write: %s", err);
	err[0] = '\0';
	ret = sync_groups(e, groups, n_groups, err, sizeof(err));
	e->repairing = false;
	if (ret || (!rebuild && !n_raw && !p.del.n && !p.add.n))
		goto out; /* failed, or only foreign elements whose removal failed (logged above) */
	snprintf(what, sizeof(what), "%s: %s; %zu element(s) nobody granted removed, %zu granted "
		"element(s) restored", trigger, !exists ? "table inet jitd was missing, recreated" :
		rebuild ? "table structure re-applied" : "table intact", p.del.n + n_raw,
		refilled + p.add.n);
	/* build_table's commit, or the strays' own, when the plan had nothing to commit */
	if ((rebuild || n_raw) && !p.del.n && !p.add.n)
		e->metrics.drift_repairs++;
	log_warn("drift repaired: %s", what);
	(void)audit(e, "drift.repaired", NULL, NULL, NULL, 0, what,
		(long long)(p.del.n + n_raw + refilled + p.add.n));
out:
	/* Read in full and brought in line, unless it failed or left strays to the next check. */
	e->unsure = ret || e->strays.n || e->model_lost;
	if (!e->unsure)
		e->doubt = false;
	/* Logged once, by note_error: agent.last_error says what the log says. */
	if (ret)
		note_error(e, "cannot repair table inet jitd (%s): %s", trigger,
			err[0] ? err : strerror(-ret));
	plan_free(&p);
	free(groups);
	return ret;
}
