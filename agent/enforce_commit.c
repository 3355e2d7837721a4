/*
 * The group commit: grants verified on worker threads come back here, are admitted (policy,
 * limits, replay) and committed together, one journal write, one kernel transaction and one
 * fdatasync a group, and each is answered only once its group is durable. Root's local grants
 * take the same way without a signature. With it: the audit trail's own syncs behind the
 * journal, the dropping of grants' records (retried while the journal refuses), and whether a
 * grant's key is still trusted (admission, and a reload).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <openssl/rand.h>

#include "agent/activity.h"
#include "agent/audit.h"
#include "agent/dnat.h"
#include "agent/enforce_impl.h"
#include "agent/group.h"
#include "agent/metrics.h"
#include "agent/replay.h"
#include "agent/syncer.h"
#include "agent/testhook.h"
#include "agent/verifier.h"
#include "common/array.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/policy.h"
#include "common/port.h"
#include "common/prefix.h"

#ifdef JITD_TEST_HOOKS
/* $JITD_TEST_SYNC_FAIL_FILE holding 1: the next group's sync fails with EIO, as on a bad disk. */
static int test_hook_sync(int ret)
{
	return test_hook_read("JITD_TEST_SYNC_FAIL_FILE") > 0 ? -EIO : ret;
}

/*
 * $JITD_TEST_HOLD_FILE present: verified grants wait, uncommitted, until it is removed, so that
 * a test can have more of them ready at once than a group holds.
 */
static bool test_hook_hold(void)
{
	return testhook_exists("JITD_TEST_HOLD_FILE");
}

/*
 * $JITD_TEST_TRAIL_FAIL_FILE present: the audit trail's syncs behind the journal (the timer's)
 * and its recovery after one fail with EIO, as on a disk that lost what they were to write.
 */
static int test_hook_trail(int ret)
{
	return testhook_exists("JITD_TEST_TRAIL_FAIL_FILE") ? -EIO : ret;
}
#else
static int test_hook_sync(int ret)
{
	return ret;
}

static bool test_hook_hold(void)
{
	return false;
}

static int test_hook_trail(int ret)
{
	return ret;
}
#endif

/* Prefixes as "a,b,c", cut short (never mid-prefix) when buf is full. */
static void prefix_list(const struct prefix *v, size_t n, char *buf, size_t len)
{
	size_t off = 0;

	buf[0] = '\0';
	for (size_t i = 0; i < n && off + PREFIX_STRLEN + 1 < len; i++) {
		if (i)
			buf[off++] = ',';
		prefix_format(&v[i], buf + off, len - off);
		off += strlen(buf + off);
	}
}

static void log_applied(const struct grant *g, const char *peer)
{
	char src[256], dst[256] = "", ports[256] = "";
	size_t off = 0;

	prefix_list(g->src, g->n_src, src, sizeof(src));
	if (g->n_dst) {
		memcpy(dst, " dst=", 6);
		prefix_list(g->dst, g->n_dst, dst + 5, sizeof(dst) - 5);
	}
	for (size_t i = 0; i < g->n_ports && off < sizeof(ports) - 16; i++) {
		if (i)
			ports[off++] = ',';
		port_spec_format(&g->ports[i], ports + off, sizeof(ports) - off);
		off += strlen(ports + off);
	}
	log_info("grant applied: jti=%s kid=%s sub=%s src=%s%s ports=%s exp=%lld peer=%s", g->jti,
		g->kid, g->sub, src, dst, ports, (long long)g->exp, peer);
}

/* A full state directory is the operator's to fix, and worth a code of its own. */
static int storage_code(int errno_ret)
{
	return errno_ret == -ENOSPC || errno_ret == -EDQUOT ? JIT_ERR_STORAGE_FULL :
							      JIT_ERR_INTERNAL;
}

/* A grant on its way in, from receipt to its submitter's callback. */
struct pending {
	struct pending *next;		/* in e->ready */
	struct verify_job *job;		/* the token (the store's record) and its verification */
	struct grant local;		/* a local grant: checked already, no job */
	const char *record;
	size_t record_len;
	char *peer;
	enforce_done_fn done;
	void *arg;
	int64_t received_us;
	uint64_t reloads;		/* reloads applied when it was received */
	/* The outcome, as commit_group decides it. */
	int ret;
	struct jit_error err;
	char jti[GRANT_MAX_STRING + 1];
	ssize_t idx;			/* in e->grants once pushed, else -1 */
	bool audited;
	char annex[DNAT_ANNEX_MAX];	/* its gateway ports, recorded with it */
};

/*
 * A committed group: in the books and the kernel, its records and audit lines written; answered
 * once the syncer has made them durable.
 */
struct settling {
	struct sync_req req;		/* first: the syncer hands req back */
	struct settling *next;
	struct pending **v;		/* the whole group, refusals too */
	size_t n;
	int64_t write_us;		/* its journal write (-1: none), for the state histogram */
	bool carried;			/* every audit line of it is in the journal too (notes) */
	struct store_mark mark;		/* where the journal was when req took the trail's fd */
	int doubt;			/* -errno: a sync failed after this group wrote */
};

static struct grant *pending_grant(struct pending *p)
{
	return p->job ? &p->job->grant : &p->local;
}

static void pending_free(struct pending *p)
{
	if (!p)
		return;
	verify_job_free(p->job);
	grant_clear(&p->local);
	free(p->peer);
	free(p);
}

/*
 * Replay ids are written lazily (replay_add_lazy_many, replay_keep), so the ids go durable
 * first: a record keeps its grant's id burned until then. Not at any price: a record that
 * stays restores its grant at the next start, which is access, while an id that is not
 * durable only lets its token in again if someone sends it before replay.db is rewritten. A
 * failed sync is said, and the record goes all the same.
 */
static void sync_before_drop(struct enforce *e, const char *jti, size_t n, bool retry)
{
	int ret = replay_sync(e->replay);
	int64_t now_us = clock_mono_us();

	/* retry_drops comes back every second, for each record it holds: once a minute is enough. */
	if (ret && retry && e->undurable_warned_us &&
		now_us - e->undurable_warned_us < 60000000)
		return;
	if (ret)
		e->undurable_warned_us = now_us;
	if (ret && jti)
		log_warn("replay: the id '%s' is not durable (%s) as its record goes: a restart "
			"before replay.db is rewritten would take its token again", jti,
			strerror(-ret));
	else if (ret)
		log_warn("replay: ids not durable (%s) as the records of %zu grant(s) go: a "
			"restart before replay.db is rewritten would take their tokens again",
			strerror(-ret), n);
}

static int drop_now(struct enforce *e, const char *jti, bool retry)
{
	sync_before_drop(e, jti, 1, retry);
	return store_del(e->store, jti);
}

/*
 * Drops the record of a grant gone from the books and the kernel (revoked, taken back, dropped
 * by a reload). A record that stays would restore the grant at the next start: one that
 * cannot be dropped now is tried again every second (retry_drops) and said in status until
 * then; only a restart before that brings the grant back.
 */
void drop_record(struct enforce *e, const char *jti)
{
	char **nv, *id;
	int ret;

	if (!(ret = drop_now(e, jti, false)))
		return;
	note_error(e, "state: cannot drop the record of '%s': %s; retrying every second (a "
		"restart before then restores the grant)", jti, strerror(-ret));
	for (size_t i = 0; i < e->n_undropped; i++)
		if (!strcmp(e->undropped[i], jti))
			return;
	if (!(nv = array_reserve(e->undropped, &e->cap_undropped, e->n_undropped + 1,
		sizeof(*nv), 8)) || !(id = strdup(jti))) {
		if (nv)
			e->undropped = nv;
		log_err("state: out of memory: the record of '%s' will not be retried", jti);
		return;
	}
	e->undropped = nv;
	e->undropped[e->n_undropped++] = id;
}

/*
 * drop_record for n grants: one replay sync, one journal write and one fdatasync for all. If
 * that fails, all are left to retry_drops at once, with one error: one by one, on a disk that
 * is failing, 100,000 of them would each sync and each search the list.
 */
void drop_records(struct enforce *e, const char *const *jti, size_t n)
{
	char **nv;
	int ret;

	if (!n)
		return;
	sync_before_drop(e, NULL, n, false);
	if (!(ret = store_del_many(e->store, jti, n)))
		return;
	note_error(e, "state: cannot drop the records of %zu grant(s): %s; retrying every second "
		"(a restart before then restores them)", n, strerror(-ret));
	if (!(nv = array_reserve(e->undropped, &e->cap_undropped, e->n_undropped + n,
		sizeof(*nv), 8))) {
		log_err("state: out of memory: the records of %zu grant(s) will not be retried", n);
		return;
	}
	e->undropped = nv;
	/* A duplicate of an id already listed costs retry_drops one drop of an absent record. */
	for (size_t i = 0; i < n; i++)
		if ((nv[e->n_undropped] = strdup(jti[i])))
			e->n_undropped++;
}

static int cmp_u32(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return (x > y) - (x < y);
}

/*
 * The records drop_record could not drop, again, all at once as drop_records does: one sync, one
 * write and one fdatasync, not one of each a record on the loop once the disk takes them. A
 * grant taken back is not burned: sent again and applied meanwhile, its id has a live record
 * now, which is not the one to drop (the one that was is gone with the store's rewrite). That
 * is looked up by the grants' hashes, sorted once: not a walk of every grant for each id.
 */
void retry_drops(struct enforce *e)
{
	uint32_t *live = e->n_undropped > 1 ? malloc(e->n_grants * sizeof(*live) + 1) : NULL;
	size_t kept = 0;

	for (size_t i = 0; live && i < e->n_grants; i++)
		live[i] = e->keys[i].jti_hash;
	if (live)
		qsort(live, e->n_grants, sizeof(*live), cmp_u32);
	for (size_t i = 0; i < e->n_undropped; i++) {
		char *jti = e->undropped[i];
		uint32_t h = jti_hash(jti);

		if ((!live || bsearch(&h, live, e->n_grants, sizeof(h), cmp_u32)) &&
			find_index(e, jti) >= 0) {
			/*
			 * Applied again after it was taken back (the record that was to go went
			 * with the store's rewrite), or still in force: its revocation's kernel
			 * change was refused after the drop was.
			 */
			log_info("state: '%s' is in force again; its record is not dropped", jti);
			free(jti);
			continue;
		}
		e->undropped[kept++] = jti;
	}
	free(live);
	e->n_undropped = kept;
	if (!kept)
		return;
	sync_before_drop(e, kept == 1 ? e->undropped[0] : NULL, kept, true);
	if (store_del_many(e->store, (const char *const *)e->undropped, kept))
		return;
	for (size_t i = 0; i < kept; i++) {
		log_info("state: the record of '%s' is dropped now", e->undropped[i]);
		free(e->undropped[i]);
	}
	e->n_undropped = 0;
}

/*
 * Gateway ports for a grant to targets that map them: free of every live grant's and of those
 * admitted earlier in the group. Recorded with the grant (the annex).
 */
static int allocate_ports(struct enforce *e, struct pending *p, struct pending **accepted,
	size_t n_accepted)
{
	struct grant *g = pending_grant(p);
	struct dnat_used *u;
	int ret;

	if (!dnat_pairs(e->cfg, g, NULL))
		return 0;
	if (!(u = calloc(1, sizeof(*u))))
		return jit_fail(&p->err, JIT_ERR_INTERNAL, "out of memory");
	for (size_t i = 0; i < e->n_grants; i++)
		dnat_mark(u, &e->grants[i]);
	for (size_t i = 0; i < n_accepted; i++)
		dnat_mark(u, pending_grant(accepted[i]));
	if (!(ret = dnat_allocate(e->cfg, g, u, &p->err)) &&
		dnat_annex(g, p->annex, sizeof(p->annex)))
		ret = jit_fail(&p->err, JIT_ERR_INTERNAL, "gateway ports do not fit the record");
	free(u);
	return ret;
}

/*
 * Whether a signed grant's key is still trusted under the new configuration (keys_dir may be
 * another), as a restart would find it: removing a key and reloading takes that key's grants
 * away, as a restart always did. Root's local grants have no key. 0, JIT_ERR_UNKNOWN_KEY with
 * err saying why, JIT_ERR_INTERNAL (the key file could not be read now: nothing is known), or
 * -ENOMEM.
 */
int key_trusted(struct keys_seen *seen, const struct config *nc, const struct grant *g,
	struct jit_error *err)
{
	struct key_seen *k = NULL;
	struct jit_error why = { 0 };
	EVP_PKEY *pub = NULL;
	void *v;

	if (g->local)
		return 0;
	for (size_t i = 0; i < seen->n && !k; i++)
		if (!strcmp(seen->v[i].kid, g->kid))
			k = &seen->v[i];
	if (!k) {
		if (!(v = array_reserve(seen->v, &seen->cap, seen->n + 1, sizeof(*seen->v), 4)))
			return -ENOMEM;
		seen->v = v;
		k = &seen->v[seen->n++];
		k->kid = g->kid;
		k->ret = keys_load_public(nc->keys_dir, g->kid, &pub, &why);
		snprintf(k->why, sizeof(k->why), "%s", why.msg);
		EVP_PKEY_free(pub);
	}
	if (k->ret == JIT_ERR_INTERNAL)
		return jit_fail(err, JIT_ERR_INTERNAL, "%s", k->why);
	if (k->ret)
		return jit_fail(err, JIT_ERR_UNKNOWN_KEY, "its key is no longer trusted: %s", k->why);
	return 0;
}

/*
 * What may be decided per grant before the group touches anything: policy as configured now
 * (a reload may have come since the grant was received), time left, limits, replay. accepted
 * are the group's grants admitted so far, which count against the limits and ids too.
 */
static int admit(struct enforce *e, struct pending *p, struct pending **accepted,
	size_t n_accepted, int64_t now_ms)
{
	struct grant *g = pending_grant(p);
	struct jit_error *err = &p->err;
	int ret;

	if (p->job && (ret = policy_check(e->cfg, g, now_ms / 1000, err)))
		return ret;
	/*
	 * Verified before a reload that may have taken its key away, with every grant of that
	 * key in force: trusted still, or refused as those were removed.
	 */
	if (p->job && p->reloads != e->metrics.reloads_applied) {
		struct keys_seen seen = { 0 };

		ret = key_trusted(&seen, e->cfg, g, err);
		free(seen.v);
		if (ret == -ENOMEM)
			return jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
		if (ret)
			return ret;
	}
	/* Skew lets a just-expired grant verify; it must still not open anything. */
	if (g->exp * 1000 - now_ms < MIN_TIME_LEFT_MS)
		return jit_fail(err, JIT_ERR_EXPIRED, "grant '%s' has no time left", g->jti);
	/* Bounded: a full agent says so and stays healthy. */
	if (e->n_grants + n_accepted >= e->cfg->max_grants)
		return jit_fail(err, JIT_ERR_BUSY, "%zu grants are active, the limit "
			"(limits.max_grants); retry later", e->n_grants + n_accepted);
	if (g->n_src > e->cfg->max_sources || g->n_ports > e->cfg->max_ports)
		return jit_fail(err, JIT_ERR_TOO_LARGE, "%zu source(s) and %zu port(s); at most %zu "
			"and %zu per grant (limits)", g->n_src, g->n_ports, e->cfg->max_sources,
			e->cfg->max_ports);
	/*
	 * Remembered (written) before anything opens and durable before the answer (below): a
	 * crash cannot make an answered token work twice.
	 */
	if ((ret = replay_check(e->replay, g->jti, now_ms / 1000)))
		return ret == JIT_ERR_BUSY ?
			jit_fail(err, JIT_ERR_BUSY, "the replay cache is full; retry later") :
			jit_fail(err, JIT_ERR_REPLAY, "grant '%s' was already used", g->jti);
	for (size_t i = 0; i < n_accepted; i++)
		if (!strcmp(pending_grant(accepted[i])->jti, g->jti))
			return jit_fail(err, JIT_ERR_REPLAY, "grant '%s' was already used", g->jti);
	/* Only reachable if the replay cache was lost: still never the same grant twice. */
	if (store_contains(e->store, g->jti))
		return jit_fail(err, JIT_ERR_DUPLICATE, "grant '%s' is already active", g->jti);
	return g->n_dst ? allocate_ports(e, p, accepted, n_accepted) : 0;
}

static void follow_move(struct pending **v, size_t n, ssize_t from, ssize_t to)
{
	for (size_t i = 0; i < n; i++)
		if (v[i]->idx == from)
			v[i]->idx = to;
}

/* Takes pushed grants back out of the books (the kernel is synced by the caller). */
static void unpush(struct enforce *e, struct pending **v, size_t n, struct pending *p)
{
	ssize_t last = (ssize_t)e->n_grants - 1, hole = p->idx;

	grants_remove(e, (size_t)hole);
	/* grants_remove moved the last grant into the hole: follow it, in every open group. */
	p->idx = -1;
	follow_move(v, n, last, hole);
	for (struct settling *st = e->settling; st; st = st->next)
		follow_move(st->v, st->n, last, hole);
}

/*
 * Undoes what commit_admitted did for one grant: out of the books (if pushed), its record
 * (unless record_gone: dropped with its group's already), its id (forgetting an id never added
 * is a no-op). The caller syncs the kernel.
 */
static void take_back(struct enforce *e, struct pending **v, size_t n, struct pending *p,
	bool record_gone)
{
	if (p->idx >= 0)
		unpush(e, v, n, p);
	if (!record_gone)
		drop_record(e, p->jti);
	replay_forget(e->replay, p->jti);
}

static void fail_all(struct pending **v, size_t n, int code, const char *what, const char *why)
{
	for (size_t i = 0; i < n; i++)
		v[i]->ret = jit_fail(&v[i]->err, code, "%s '%s': %s", what, v[i]->jti, why);
}

/* A gateway grant's "connect to ..." for its audit record; NULL for none. */
static const char *connect_details(const struct enforce *e, const struct grant *g, char *buf,
	size_t len)
{
	return g->n_dnat_ports && !dnat_describe(e->cfg, g, buf, len) && buf[0] ? buf : NULL;
}

/*
 * grant.applied for each grant of v in the books, with one write: all are audited or none is.
 * Each line is kept in notes[i] (empty when there is none) for the journal.
 */
static int audit_applied(struct enforce *e, struct pending **v, size_t n, struct store_note *notes)
{
	struct audit_rec *recs = calloc(n + 1, sizeof(*recs));
	char **connect = calloc(n + 1, sizeof(*connect));
	size_t k = 0;
	int ret = 0;

	if (!recs || !connect) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; i < n; i++) {
		char buf[DNAT_MAX_PAIRS * 64];
		const struct grant *g;

		if (v[i]->idx < 0)
			continue;
		g = &e->grants[v[i]->idx];
		if (connect_details(e, g, buf, sizeof(buf)) && !(connect[k] = strdup(buf))) {
			ret = -ENOMEM;
			goto out;
		}
		recs[k] = (struct audit_rec){
			.event = "grant.applied",
			.grant = g,
			.peer = v[i]->peer,
			.message = connect[k],
			.count = -1,
			.note = &notes[i],
		};
		k++;
	}
	ret = k ? audit_recs(e, recs, k) : 0;
out:
	for (size_t i = 0; connect && i < k; i++)
		free(connect[i]);
	free(connect);
	free(recs);
	return ret;
}

/*
 * Group commit: the admitted grants of a group (all of v) go to the state journal in one write,
 * their ids to the replay file in another, to the kernel in one transaction, to the audit
 * trail, and their audit lines to the journal again (notes, a further write); the syncer makes
 * the journal durable before any is answered, and with it the lines (*carried; if the notes
 * could not be written, the trail too). A record in the page cache survives a crash of jitd,
 * and a power loss takes the kernel's elements with it, so the kernel may change first. Each
 * one's outcome lands in its pending; whatever fails is undone for the grants it concerns.
 * *write_us: the journal write's duration.
 */
static void commit_admitted(struct enforce *e, struct pending **v, size_t n, int64_t *write_us,
	bool *carried)
{
	struct store_rec *recs = calloc(n + 1, sizeof(*recs));
	struct store_note *notes = calloc(n + 1, sizeof(*notes));
	struct replay_id *ids = calloc(n + 1, sizeof(*ids));
	int *added = calloc(n + 1, sizeof(*added));
	struct group *groups = NULL;
	size_t n_groups = 0, pushed = 0, withdrawn;
	char kerr[NFT_ERRLEN] = "";
	int64_t t0;
	int ret;

	*carried = false;
	if (!recs || !notes || !ids || !added) {
		fail_all(v, n, JIT_ERR_INTERNAL, "cannot apply grant", "out of memory");
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		recs[i] = (struct store_rec){ v[i]->jti, v[i]->record, v[i]->record_len,
			v[i]->annex[0] ? v[i]->annex : NULL };
	/*
	 * The records first, then the ids: a crash between the two restores the grants on start
	 * (which remembers their ids again), whereas the other order would burn the id of a grant
	 * that never opened anything, and the controller's retry would get "replay".
	 */
	t0 = clock_mono_us();
	if ((ret = store_write_many(e->store, recs, n))) {
		fail_all(v, n, storage_code(ret), "cannot record grant", strerror(-ret));
		goto out;
	}
	*write_us = clock_mono_us() - t0;
	test_hook_pause("JITD_TEST_APPLY_PAUSE_FILE");
	/* The group's ids with one write; v[i]'s outcome in added[i]. */
	for (size_t i = 0; i < n; i++)
		ids[i] = (struct replay_id){ v[i]->jti,
			pending_grant(v[i])->exp + (int64_t)e->cfg->clock_skew };
	replay_add_lazy_many(e->replay, ids, n, enforce_now_ms() / 1000, added);
	for (size_t i = 0; i < n; i++) {
		struct grant *g = pending_grant(v[i]);

		if ((ret = added[i]) || (ret = grant_groups(e, g, &groups, &n_groups))) {
			/* Each grant of the group saw room in the cache; together they overfill. */
			if (ret == -ENOBUFS)
				v[i]->ret = jit_fail(&v[i]->err, JIT_ERR_BUSY,
					"the replay cache is full; retry later");
			else
				v[i]->ret = jit_fail(&v[i]->err, storage_code(ret),
					"cannot remember grant id '%s': %s", v[i]->jti,
					strerror(-ret));
			take_back(e, v, n, v[i], false);
			continue;
		}
		if (grants_push(e, g)) {
			v[i]->ret = jit_fail(&v[i]->err, JIT_ERR_INTERNAL, "out of memory");
			take_back(e, v, n, v[i], false);
			continue;
		}
		v[i]->idx = (ssize_t)e->n_grants - 1;
		pushed++;
	}
	if (!pushed)
		goto out;
	e->unanswered = false;
	if ((ret = sync_added(e, e->n_grants - pushed, groups, n_groups, kerr, sizeof(kerr)))) {
		bool unanswered = e->unanswered;
		const char *what = unanswered ? "the kernel did not answer" :
			"the kernel refused the change", *after = "";
		char why[NFT_ERRLEN];

		snprintf(why, sizeof(why), "%s", kerr);
		for (size_t i = 0; i < n; i++) {
			/* added[i] is spent: it marks the grants taken back here. */
			if ((added[i] = v[i]->idx >= 0))
				take_back(e, v, n, v[i], false);
		}
		/*
		 * Unanswered, the batch may have been applied: the elements of grants refused
		 * and taken back must not stay open until the next check reads the kernel.
		 */
		if (unanswered) {
			after = "; what it may have applied is withdrawn";
			kerr[0] = '\0';
			if ((ret = resync(e)) ||
				(ret = sync_groups(e, groups, n_groups, kerr, sizeof(kerr)))) {
				after = "; what it may have applied goes at the next check";
				note_error(e, "kernel: cannot withdraw the elements of refused "
					"grants: %s", kerr[0] ? kerr : strerror(-ret));
			}
		}
		for (size_t i = 0; i < n; i++)
			if (added[i])
				v[i]->ret = jit_fail(&v[i]->err, JIT_ERR_KERNEL, "%s: %s%s", what,
					why, after);
		if (!unanswered || !ret)
			note_error(e, "kernel: %s: %s", what, why);
		goto out;
	}
	/*
	 * An access nobody can trace must not exist: no audit record, no grant (its fsync is the
	 * syncer's, see settle_group).
	 */
	ret = audit_applied(e, v, n, notes);
	for (size_t i = 0; i < n; i++)
		v[i]->audited = v[i]->idx >= 0 && !ret;
	/*
	 * The journal carries the lines too: then the group is durable with the journal's one
	 * fdatasync, and the trail's follows (synced_cb). Without them it waits for both.
	 */
	*carried = !store_write_notes(e->store, notes, n);
	withdrawn = 0;
	for (size_t i = 0; i < n; i++) {
		if (v[i]->idx < 0 || v[i]->audited)
			continue;
		v[i]->ret = jit_fail(&v[i]->err, storage_code(ret ? ret : -EIO),
			"cannot write the audit trail for '%s'; nothing applied", v[i]->jti);
		take_back(e, v, n, v[i], false);
		withdrawn++;
	}
	if (withdrawn && sync_groups(e, groups, n_groups, kerr, sizeof(kerr)))
		note_error(e, "kernel: cannot withdraw unaudited grants: %s", kerr);
	*carried = *carried && !withdrawn;
out:
	for (size_t i = 0; notes && i < n; i++)
		free(notes[i].p);
	free(notes);
	free(ids);
	free(added);
	free(groups);
	free(recs);
}

/*
 * Everything ready goes through at once: admission one by one, then one commit for all that
 * were admitted. Each outcome is in its pending (ret, err, idx); refusals are audited here.
 * Nothing is durable yet: settle_group follows once it is.
 */
static void commit_group(struct enforce *e, struct pending **v, size_t n, int64_t *write_us,
	bool *carried)
{
	struct pending **ok = calloc(n + 1, sizeof(*ok));
	int64_t now_ms, t0;
	size_t n_ok = 0;

	/* Expiry is the timer's business: it walks every grant, this runs per group. */
	now_ms = enforce_now_ms();
	audit_defer(e->audit, true);
	e->metrics.group_commits++;
	e->metrics.group_grants += n;
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];

		p->idx = -1;
		if (p->job) {
			metrics_observe(&e->metrics.verify, p->job->verify_us);
			if ((p->ret = p->job->ret)) {
				p->err = p->job->err;
				continue;
			}
		}
		/* Signed by a trusted key: from here on a refusal can name the grant. */
		snprintf(p->jti, sizeof(p->jti), "%s", pending_grant(p)->jti);
		if (!ok) {
			p->ret = jit_fail(&p->err, JIT_ERR_INTERNAL, "out of memory");
			continue;
		}
		t0 = clock_mono_us();
		if (!(p->ret = admit(e, p, ok, n_ok, now_ms)))
			ok[n_ok++] = p;
		metrics_observe(&e->metrics.admit, clock_mono_us() - t0);
	}
	*write_us = -1;
	*carried = false;
	if (n_ok)
		commit_admitted(e, ok, n_ok, write_us, carried);
	/* A refusal's line is not in the journal: its group waits for the trail's fdatasync. */
	for (size_t i = 0; i < n; i++) {
		if (!v[i]->ret)
			continue;
		*carried = false;
		refused(e, "grant", v[i]->jti[0] ? v[i]->jti : NULL, v[i]->peer, &v[i]->err);
	}
	audit_defer(e->audit, false);
	free(ok);
}

/*
 * The records of a group whose sync failed, dropped together before each grant is taken back:
 * with the store suspect they all leave memory before the one rewrite the drop makes
 * (drop_suspect). One by one, the first drop's rewrite would copy the others into the new,
 * synced snapshot, and a crash before their own drops brought them back. Whether they were
 * dropped: out of memory, each is dropped on its own (take_back).
 */
static bool drop_group_records(struct enforce *e, struct pending **v, size_t n)
{
	const char **ids = calloc(n + 1, sizeof(*ids));
	size_t k = 0;

	if (!ids)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!v[i]->ret && v[i]->idx >= 0)
			ids[k++] = v[i]->jti;
	drop_records(e, ids, k);
	free(ids);
	return true;
}

/* A group's records and audit lines are durable (sync_ret 0), or could not be made so. */
static void settle_group(struct enforce *e, struct pending **v, size_t n, int sync_ret)
{
	struct group *groups = NULL;
	size_t n_groups = 0, withdrawn = 0;
	char kerr[NFT_ERRLEN] = "";
	int64_t now_ms = enforce_now_ms();
	bool dropped = false;

	if (sync_ret) {
		store_sync_failed(e->store);
		dropped = drop_group_records(e, v, n);
	}
	for (size_t i = 0; sync_ret && i < n; i++) {
		struct pending *p = v[i];

		if (p->ret || p->idx < 0)
			continue;
		p->ret = jit_fail(&p->err, storage_code(sync_ret), "cannot make grant '%s' durable: "
			"%s; nothing applied", p->jti, strerror(-sync_ret));
		take_back(e, v, n, p, dropped);
		refused_rec(e, "grant", p->jti, p->peer, &p->err, true);
		withdrawn++;
	}
	if (withdrawn) {
		int gret;

		note_error(e, "state: cannot make %zu grant(s) durable: %s", withdrawn,
			strerror(-sync_ret));
		/* Rare: the whole table is planned again rather than each grant's groups kept. */
		if ((gret = all_groups(e, &groups, &n_groups))) {
			snprintf(kerr, sizeof(kerr), "%s", strerror(-gret));
			(void)change_failed(e, gret);
		}
		if (gret || sync_groups(e, groups, n_groups, kerr, sizeof(kerr)))
			note_error(e, "kernel: cannot withdraw grants that are not durable: %s", kerr);
		free(groups);
		if (audit_sync(e->audit))
			log_warn("audit: cannot sync the withdrawal of %zu grant(s)", withdrawn);
	}
	/* The group's lines with one write. */
	log_hold(true);
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];

		if (p->ret)
			continue;
		e->metrics.grants_applied++;
		metrics_observe(&e->metrics.grant, clock_mono_us() - p->received_us);
		(void)activity_note(e->activity, &e->grants[p->idx], now_ms / 1000);
		log_applied(&e->grants[p->idx], p->peer);
	}
	log_hold(false);
}

/* When the syncs cannot be handed over: made durable here, on the loop. */
static int durable_here(struct enforce *e, struct sync_req *r)
{
	int ret = syncer_sync_here(r);

	if (!ret)
		ret = store_sync(e->store);
	if (!ret)
		ret = audit_sync(e->audit);
	return ret;
}

/*
 * The files a group wrote, for the syncer: the journal, and the audit trail unless the journal
 * carries the group's lines. 0 or -errno (then durable_here with what is in r).
 */
static int unsynced_fds(struct enforce *e, struct settling *st)
{
	struct sync_req *r = &st->req;
	int ret;

	r->fd[0] = r->fd[1] = -1;
	if ((ret = store_unsynced_fd(e->store, &r->fd[0])) || st->carried)
		return ret;
	st->mark = store_mark(e->store);
	return audit_unsynced_fd(e->audit, &r->fd[1]);
}

/*
 * The audit trail's fdatasync, behind the journal's, for lines the journal carried (notes):
 * TRAIL_SYNC_MS after a carried group is committed, one at a time, covering every group since.
 * Not after every group: that doubles the fdatasyncs for nothing (ad hoc, one grant at a time,
 * 21 paired runs: p50 a median 47 us more with a trail sync after every answered group).
 * Whatever takes the trail's fd takes a mark with it: once that sync is done, every note
 * before the mark is redundant (its line was written before it).
 */
#define TRAIL_SYNC_MS 100

/*
 * The check after a failed sync of the trail (trail_restore) reads every uncovered note back on
 * the loop: tried again after a second, then after twice as long each time it fails, up to a
 * minute, so that a disk that keeps failing does not stall grants every second.
 */
#define TRAIL_RESTORE_FIRST_MS 1000
#define TRAIL_RESTORE_MAX_MS 60000

static int64_t trail_restore_wait(const struct enforce *e)
{
	return e->trail_restore_wait_ms ? e->trail_restore_wait_ms : TRAIL_RESTORE_FIRST_MS;
}

/* Whether trail_restore may run now, and if not, in how many ms (*wait). */
static bool trail_restore_now(const struct enforce *e, int64_t *wait)
{
	*wait = trail_restore_wait(e) - (clock_mono_us() - e->trail_restored_us) / 1000;
	return *wait <= 0;
}

/*
 * After a failed sync of the trail (audit_lost) the lines the journal still carries (notes no
 * mark covers) are checked against the disk and appended again where they are missing
 * (audit_recover); then every note before the mark taken first is covered. Until that holds
 * nothing is covered, however later syncs end, and no compaction drops the notes (the guard).
 */
static int trail_restore(struct enforce *e)
{
	struct store_mark mark = store_mark(e->store);
	struct store_note *v = NULL;
	size_t n = 0, restored = 0;
	int ret;

	e->trail_restored_us = clock_mono_us();
	if (!(ret = test_hook_trail(0)) && !(ret = store_uncovered_notes(e->store, &v, &n)))
		ret = audit_recover(e->audit, v, n, &restored);
	store_notes_free(v, n);
	e->trail_restore_wait_ms = ret ? trail_restore_wait(e) * 2 : TRAIL_RESTORE_FIRST_MS;
	if (e->trail_restore_wait_ms > TRAIL_RESTORE_MAX_MS)
		e->trail_restore_wait_ms = TRAIL_RESTORE_MAX_MS;
	if (ret) {
		note_error(e, "audit: cannot check the trail after a failed write: %s; the journal "
			"keeps its lines", strerror(-ret));
		return ret;
	}
	/*
	 * Said in the journal now: a start would look for the lines put back only at the end of
	 * the trail, where lines written since would hide them, and append them once more.
	 */
	if ((ret = store_cover_durable(e->store, mark)))
		log_warn("state: cannot record that the journal's audit lines are in the trail: %s",
			strerror(-ret));
	if (restored)
		log_warn("audit: %zu line(s) a failed write took from the trail put back from the "
			"journal", restored);
	else
		log_info("audit: the trail holds every line the journal carried after a failed "
			"write");
	return 0;
}

/* The timer's: when trail_restore_now allows, and again until it holds. */
static bool trail_restored(struct enforce *e)
{
	int64_t wait;

	if (!audit_lost(e->audit))
		return true;
	if (trail_restore_now(e, &wait) && !trail_restore(e))
		return true;
	if (!e->closing)
		timer_in_ms(e->trail_timer, wait > 0 ? wait : trail_restore_wait(e));
	return false;
}

static void sync_audit_behind(struct enforce *e)
{
	struct store_mark mark = store_mark(e->store);
	int fd = -1;

	if (e->audit_syncing || e->closing || !trail_restored(e))
		return;
	/* No descriptor to hand over: the notes stay, and a later pass takes the trail. */
	if (audit_unsynced_fd(e->audit, &fd) || fd < 0)
		return;
	e->audit_req = (struct sync_req){ .fd = { -1, fd } };
	e->audit_mark = mark;
	e->audit_syncing = true;
	syncer_request(e->syncer, &e->audit_req);
}

void trail_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	sync_audit_behind(arg);
}

static void trail_due(struct enforce *e)
{
	const struct timeval tv = { 0, TRAIL_SYNC_MS * 1000 };

	if (!e->closing && !e->audit_syncing && !evtimer_pending(e->trail_timer, NULL))
		evtimer_add(e->trail_timer, &tv);
}

/* After a sync of the trail failed anywhere, its check is due whether grants come or not. */
static void trail_check_due(struct enforce *e)
{
	/* Not before enforce_open has made the timer (a start's expiries). */
	if (e->trail_timer && audit_lost(e->audit))
		trail_due(e);
}

/*
 * Ends a run of lines written with the trail deferred (expiries, a start's or a reload's
 * drops): one fsync for them all. A failure is the agent's last error, and the trail's check
 * is due (lines the journal carries are checked against it).
 */
void audit_deferred_sync(struct enforce *e)
{
	int ret;

	audit_defer(e->audit, false);
	if ((ret = audit_sync(e->audit)))
		note_error(e, "audit: cannot sync the trail: %s", strerror(-ret));
	trail_check_due(e);
}

/*
 * Before a compaction drops the notes: what they carried must be in the trail, durable. And the
 * grants' ids in replay.db (group commits write them there without an fsync): a compaction
 * leaves out a record found damaged, the last copy of its grant's id outside replay.db.
 * Best effort: a replay.db that cannot be synced is healed on its own path (replay_sync), and
 * must not stop the journal from being compacted.
 */
int trail_durable(void *arg)
{
	struct enforce *e = arg;
	int64_t wait;
	int ret;

	/* A journal past its size asks at each write: the check keeps its own pace. */
	if (audit_lost(e->audit) && !trail_restore_now(e, &wait))
		return audit_lost(e->audit);
	if (audit_lost(e->audit) && (ret = trail_restore(e)))
		return ret;
	if ((ret = audit_sync_now(e->audit)))
		return ret;
	if ((ret = replay_sync(e->replay)))
		log_warn("replay: cannot sync replay.db before a compaction: %s", strerror(-ret));
	return 0;
}

/* sync_audit_behind's request is done. */
static void audit_synced(struct enforce *e, const struct sync_req *r)
{
	int ret = r->ret;

	e->audit_syncing = false;
	if (ret)
		audit_sync_failed(e->audit, ret);
	/* Lines of groups carried meanwhile wait for the next. */
	trail_due(e);
	if (!ret) {
		if (!audit_lost(e->audit))
			store_cover(e->store, e->audit_mark);
		return;
	}
	/* Nothing is lost: the journal keeps the lines, and they are checked (trail_restore). */
	note_error(e, "audit: cannot make %s durable: %s; the journal keeps its records",
		"audit.jsonl", strerror(-ret));
}

/*
 * Answers every group still settling, once durable: before anything that removes grants, since
 * grants_take moves the last grant into the hole and only unpush follows it into settling
 * groups. So nothing is committed meanwhile (answering a group commits what became due, in
 * synced_cb): that waits for the loop's next turn, after the caller's removals.
 */
void settle_all(struct enforce *e)
{
	bool was = e->settling_all;

	if (!e->syncer)
		return;
	e->settling_all = true;
	syncer_wait(e->syncer);
	e->settling_all = was;
	if (!was && e->ready && !e->closing)
		event_active(e->group_timer, EV_TIMEOUT, 1);
}

/*
 * Test builds: a grant answered is the one at its index, wherever removals moved it meanwhile
 * (grants_take moves the last grant into a hole; settle_all and unpush keep indices true).
 */
static void check_index(const struct enforce *e, const struct pending *p)
{
#ifdef JITD_TEST_HOOKS
	if (p->ret)
		return;
	if (p->idx < 0 || (size_t)p->idx >= e->n_grants || strcmp(e->grants[p->idx].jti, p->jti)) {
		log_err("grant '%s' answered from index %zd of %zu", p->jti, p->idx, e->n_grants);
		abort();
	}
#else
	(void)e;
	(void)p;
#endif
}

/* Settles a group and answers it; replies last: a callback may submit again. */
static void finish(struct enforce *e, struct pending **v, size_t n, int sync_ret)
{
	settle_group(e, v, n, sync_ret);
	for (size_t i = 0; i < n; i++) {
		struct pending *p = v[i];

		check_index(e, p);
		p->done(p->arg, p->ret, p->ret ? NULL : &e->grants[p->idx], &p->err);
		pending_free(p);
	}
}

static void unlink_settling(struct enforce *e, struct settling *st)
{
	struct settling **pp = &e->settling;

	while (*pp && *pp != st)
		pp = &(*pp)->next;
	if (*pp)
		*pp = st->next;
}

/* Grants that arrive while others are still being verified wait for them, this long at most. */
#define GROUP_WAIT_US 2000

static bool ready_due(const struct enforce *e)
{
	return group_due(e->n_ready, e->in_flight, e->settling != NULL);
}

static void run_group(struct enforce *e);
static void commit_due(struct enforce *e);

/* Groups whose files are durable now (or failed to be), oldest first. */
void synced_cb(struct sync_req *done, void *arg)
{
	struct enforce *e = arg;

	while (done) {
		struct sync_req *next = done->next;
		struct settling *st = (struct settling *)done;
		int ret;

		/*
		 * A failed fdatasync may have written back, and lost, the pages of requests written
		 * after this one too, and the kernel reports the error once per open file
		 * description, which the requests' descriptors of a file share, so their own syncs
		 * may come back 0. Written before the loop heard of it, they are refused with it;
		 * fail closed, the controller sends them again. The trail's own request fails the
		 * groups whose lines wait for the trail (not carried), and a group's failure while
		 * it is out makes the trail lost (its notes stay until the trail is checked).
		 */
		if (done == &e->audit_req) {
			done->ret = test_hook_trail(done->ret);
			for (struct settling *o = e->settling; done->ret && o; o = o->next)
				if (!o->carried && !o->doubt)
					o->doubt = done->ret;
			audit_synced(e, done);
			done = next;
			continue;
		}
		ret = test_hook_sync(done->ret);
		for (struct settling *later = st->next; ret && later; later = later->next)
			later->doubt = later->doubt ? later->doubt : ret;
		ret = ret ? ret : st->doubt;
		/* Not carried, it synced the trail too: the failure may be the trail's. */
		if (ret && (!st->carried || e->audit_syncing))
			audit_sync_failed(e->audit, ret);
		if (!st->carried && !ret && !audit_lost(e->audit))
			store_cover(e->store, st->mark);
		if (st->write_us >= 0)
			metrics_observe(&e->metrics.state, st->write_us + done->sync_us);
		/* Still listed while it answers: a take-back meanwhile must follow its grants. */
		finish(e, st->v, st->n, ret);
		unlink_settling(e, st);
		free(st->v);
		free(st);
		done = next;
	}
	trail_check_due(e);
	/* Grants verified while the disk was busy may not wait for the rest any more. */
	if (!e->settling_all)
		commit_due(e);
}

/*
 * Commits what is ready and hands its syncs to the syncer; synced_cb answers the group. The
 * loop goes on reading and verifying meanwhile, and the next group may commit before this one
 * is durable (it is answered after it).
 */
static void run_group(struct enforce *e)
{
	struct settling *st, **tail;
	struct pending **v, *p, *last;
	size_t n = 0, take = group_take(e->n_ready);
	int ret;

	if (!e->ready)
		return;
	evtimer_del(e->group_timer);
	v = calloc(take, sizeof(*v));
	st = calloc(1, sizeof(*st));
	/* The oldest take of them; the rest stay ready, in order, for the next group. */
	p = last = e->ready;
	for (size_t i = 1; i < take; i++)
		last = last->next;
	if (!(e->ready = last->next))
		e->ready_tail = NULL;
	last->next = NULL;
	e->n_ready -= take;
	if (!v || !st) {
		/* Nothing committed: each is refused at once. */
		while (p) {
			struct pending *next = p->next;

			p->ret = jit_fail(&p->err, JIT_ERR_INTERNAL, "out of memory");
			refused(e, "grant", p->jti[0] ? p->jti : NULL, p->peer, &p->err);
			p->done(p->arg, p->ret, NULL, &p->err);
			pending_free(p);
			p = next;
		}
		goto out;
	}
	for (; p; p = p->next)
		v[n++] = p;
	commit_group(e, v, n, &st->write_us, &st->carried);
	st->v = v;
	st->n = n;
	for (tail = &e->settling; *tail; tail = &(*tail)->next)
		;
	*tail = st;
	if (unsynced_fds(e, st)) {
		/* No descriptor to hand over: durable here, after every group before it. */
		settle_all(e);
		ret = durable_here(e, &st->req);
		trail_check_due(e);
		finish(e, v, n, ret ? ret : st->doubt);
		unlink_settling(e, st);
		goto out;
	}
	/* st is the last settling group (appended above): any before it is another. */
	if (group_sync_here(e->in_flight, e->n_ready, e->settling != st, e->clients))
		syncer_request_here(e->syncer, &st->req);
	else
		syncer_request(e->syncer, &st->req);
	if (st->carried)
		trail_due(e);
	return;
out:
	free(v);
	free(st);
}

/* Grants still ready wait for the timer, GROUP_WAIT_US from the first of them at most. */
static void wait_for_rest(struct enforce *e)
{
	if (e->ready && !evtimer_pending(e->group_timer, NULL)) {
		struct timeval tv = { 0, GROUP_WAIT_US };

		evtimer_add(e->group_timer, &tv);
	}
}

/* Every group that is due, GROUP_MAX grants at most each; the rest wait. */
static void commit_due(struct enforce *e)
{
	while (!test_hook_hold() && ready_due(e))
		run_group(e);
	wait_for_rest(e);
}

/* The ready grants have waited long enough for the rest: all of them, in groups. */
void group_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct enforce *e = arg;

	while (!test_hook_hold() && e->ready)
		run_group(e);
	wait_for_rest(e);
}

/* Verified grants come back from the workers: commit now, or wait a little for the rest. */
void verified_cb(struct verify_job *jobs, void *arg)
{
	struct enforce *e = arg;

	while (jobs) {
		struct verify_job *next = jobs->next;
		struct pending *p = jobs->arg;

		jobs->next = NULL;
		p->next = NULL;
		if (e->ready_tail)
			e->ready_tail->next = p;
		else
			e->ready = p;
		e->ready_tail = p;
		e->n_ready++;
		e->in_flight--;
		jobs = next;
	}
	commit_due(e);
}

static struct pending *pending_new(struct enforce *e, const char *peer, enforce_done_fn done,
	void *arg)
{
	struct pending *p = calloc(1, sizeof(*p));

	if (!p)
		return NULL;
	if (!(p->peer = strdup(peer ? peer : "-"))) {
		free(p);
		return NULL;
	}
	p->done = done;
	p->arg = arg;
	p->idx = -1;
	p->received_us = clock_mono_us();
	return p;
}

int enforce_submit(struct enforce *e, const char *token, size_t len, const char *peer,
	enforce_done_fn done, void *arg, struct jit_error *err)
{
	const struct grant_verify_ctx ctx = {
		.keys_dir = e->cfg->keys_dir,
		.host_id = e->cfg->host_id,
		.now = enforce_now_ms() / 1000,
		.clock_skew = e->cfg->clock_skew,
	};
	struct pending *p = pending_new(e, peer, done, arg);
	int ret;

	if (!p || !(p->job = verify_job_new(token, len, &ctx, p))) {
		pending_free(p);
		ret = jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
		refused(e, "grant", NULL, peer, err);
		return ret;
	}
	p->record = p->job->token;
	p->record_len = p->job->len;
	p->reloads = e->metrics.reloads_applied;
	e->in_flight++;
	verifier_submit(e->verifier, p->job);
	return 0;
}

static json_t *local_claims(const struct enforce *e, const struct local_request *r,
	const char *jti, int64_t now)
{
	json_t *c, *src = json_array(), *ports = json_array();

	for (size_t i = 0; src && i < r->n_src; i++) {
		char buf[PREFIX_STRLEN];

		if (prefix_format(&r->src[i], buf, sizeof(buf)) ||
			json_array_append_new(src, json_string(buf)))
			goto fail;
	}
	for (size_t i = 0; ports && i < r->n_ports; i++)
		if (json_array_append_new(ports, json_pack("{s:i, s:s}", "port", r->ports[i].port,
			"protocol", port_proto_name(r->ports[i].proto))))
			goto fail;
	if (!src || !ports)
		goto fail;
	c = json_pack("{s:b, s:s, s:s, s:s, s:s, s:I, s:I, s:o, s:o, s:s}", LOCAL_MARK, 1,
		"iss", "local", "aud", e->cfg->host_id, "sub", r->user, "jti", jti,
		"iat", (json_int_t)now, "exp", (json_int_t)(now + (int64_t)r->duration),
		"src", src, "ports", ports, "reason", r->reason);
	return c;
fail:
	json_decref(src);
	json_decref(ports);
	return NULL;
}

/* Claims of a local grant, checked as strictly as a signed one, minus the signature. */
int check_local(const struct enforce *e, const json_t *claims, int64_t now_ms,
	struct grant *g, struct jit_error *err)
{
	int ret;

	if ((ret = grant_parse_claims(claims, g, err)))
		return ret;
	if (!(g->kid = strdup("local"))) {
		ret = jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
		goto fail;
	}
	g->local = true;
	/* Its iat too, as a signed grant's: a boot with the clock behind it restores nothing. */
	if ((ret = grant_check_time(g->iat, g->nbf, g->exp, &(struct grant_verify_ctx){
			.now = now_ms / 1000, .clock_skew = e->cfg->clock_skew }, err)) ||
		(ret = policy_check(e->cfg, g, now_ms / 1000, err)))
		goto fail;
	if (g->exp * 1000 - now_ms < MIN_TIME_LEFT_MS) {
		ret = jit_fail(err, JIT_ERR_EXPIRED, "grant '%s' has no time left", g->jti);
		goto fail;
	}
	return 0;
fail:
	grant_clear(g);
	return ret;
}

int enforce_grant_local(struct enforce *e, const struct local_request *r, const char *peer,
	const struct grant **applied, struct jit_error *err)
{
	int64_t now_ms = enforce_now_ms();
	unsigned char rnd[8];
	char jti[32] = "", *text = NULL;
	struct pending p = { 0 }, *pp = &p;
	struct sync_req sr = { .fd = { -1, -1 } };
	json_t *claims = NULL;
	bool committed = false;
	int64_t write_us, t0;
	bool carried;
	int ret;

	*applied = NULL;
	if (RAND_bytes(rnd, sizeof(rnd)) != 1) {
		ret = jit_fail(err, JIT_ERR_INTERNAL, "no randomness for a grant id");
		goto out;
	}
	snprintf(jti, sizeof(jti), "local-%02x%02x%02x%02x%02x%02x%02x%02x", rnd[0], rnd[1],
		rnd[2], rnd[3], rnd[4], rnd[5], rnd[6], rnd[7]);
	if (!(claims = local_claims(e, r, jti, now_ms / 1000)) ||
		!(text = json_dumps(claims, JSON_COMPACT))) {
		ret = jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
		goto out;
	}
	if ((ret = check_local(e, claims, now_ms, &p.local, err)))
		goto out;
	/* A group of one, at once: root at the console does not wait for a controller's batch. */
	p.record = text;
	p.record_len = strlen(text);
	if (!(p.peer = strdup(peer))) {
		ret = jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
		goto out;
	}
	p.received_us = clock_mono_us();
	/* Answered here, not by the syncer: nothing may still be settling while it commits. */
	settle_all(e);
	commit_group(e, &pp, 1, &write_us, &carried);
	t0 = clock_mono_us();
	/* Both files, carried or not: the notes stay until a later sync of the trail covers them. */
	ret = durable_here(e, &sr);
	trail_check_due(e);
	if (write_us >= 0)
		metrics_observe(&e->metrics.state, write_us + clock_mono_us() - t0);
	settle_group(e, &pp, 1, ret);
	grant_clear(&p.local);
	if ((ret = p.ret))
		*err = p.err;
	else
		*applied = &e->grants[p.idx];
	committed = true;
out:
	/* commit_group audits its own refusals. */
	if (ret && !committed)
		refused(e, "grant", jti[0] ? jti : NULL, peer, err);
	grant_clear(&p.local);
	free(p.peer);
	free(text);
	json_decref(claims);
	return ret;
}

/* Stopping: grants still being verified or waiting for their group are refused, not applied. */
void cancel_pending(struct enforce *e)
{
	struct verify_job *rest = verifier_close(&e->verifier);
	struct pending *p;

	while (rest) {
		struct verify_job *next = rest->next;

		p = rest->arg;
		rest->next = NULL;
		p->next = e->ready;
		e->ready = p;
		rest = next;
	}
	/*
	 * As commit_group would: a grant whose verification failed keeps its own verdict (an
	 * expired grant of a trusted key says so), and one a trusted key signed (or root's local
	 * grant) is named, so that its refusal is audited one by one, not counted with unsigned
	 * input. An unverified job has no grant yet (jti NULL). One fsync for them all.
	 */
	if (e->audit)
		audit_defer(e->audit, true);
	while ((p = e->ready)) {
		const char *id = p->job && p->job->ret ? NULL : pending_grant(p)->jti;

		e->ready = p->next;
		if (p->job && (p->ret = p->job->ret))
			p->err = p->job->err;
		else
			p->ret = jit_fail(&p->err, JIT_ERR_INTERNAL,
				"the agent is stopping; retry");
		refused(e, "grant", id, p->peer, &p->err);
		p->done(p->arg, p->ret, NULL, &p->err);
		pending_free(p);
	}
	if (e->audit) {
		audit_defer(e->audit, false);
		(void)audit_sync(e->audit);
	}
	e->ready_tail = NULL;
	e->n_ready = e->in_flight = 0;
}
