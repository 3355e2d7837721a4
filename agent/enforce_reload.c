/*
 * A reload: the configuration read again and put in force without a restart, every grant judged
 * again under it, the table brought in line in one transaction, or nothing changed at all.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "agent/audit.h"
#include "agent/dnat.h"
#include "agent/enforce_impl.h"
#include "agent/fdbudget.h"
#include "agent/lockdown.h"
#include "agent/ruleset.h"
#include "agent/testhook.h"
#include "common/config.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/policy.h"

/*
 * What a reload cannot change in a running agent: the settings in which the file n differs from
 * o, the configuration jitd started with, as names separated by spaces in list ("" for none),
 * so that the operator knows a restart is still owed, at every reload until it happens.
 */
static void restart_only(const struct config *o, const struct config *n, char *list, size_t len)
{
	const struct listen_config *a = &o->listen, *b = &n->listen;
	const struct {
		bool differs;
		const char *name;
	} v[] = {
#define DIFF_STR(x, y) (((x) == NULL) != ((y) == NULL) || ((x) && strcmp((x), (y))))
		{ DIFF_STR(o->host_id, n->host_id), "host_id" },
		{ DIFF_STR(o->state_dir, n->state_dir), "state_dir" },
		{ DIFF_STR(o->control_socket, n->control_socket), "control_socket" },
		{ DIFF_STR(o->control_group, n->control_group), "control_group" },
		{ o->replay_cache_max != n->replay_cache_max, "replay_cache_max" },
		{ o->audit_max_bytes != n->audit_max_bytes || o->audit_keep != n->audit_keep ||
			o->audit_syslog != n->audit_syslog, "audit" },
		{ o->reconcile_interval != n->reconcile_interval, "reconcile_interval" },
		/* The running table's flags: claimed or not at the start (e->table_flags). */
		{ o->table_owner != n->table_owner, "table_owner" },
		/* The TLS files are not in the list: the endpoint loads them again (its hook). */
		{ a->enabled != b->enabled || DIFF_STR(a->host, b->host) || a->port != b->port ||
			a->insecure_plaintext != b->insecure_plaintext ||
			a->max_connections != b->max_connections || a->timeout != b->timeout ||
			a->rate_limit != b->rate_limit, "listen" },
#undef DIFF_STR
	};
	size_t off = 0;

	list[0] = '\0';
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++)
		if (v[i].differs && off < len)
			off += (size_t)snprintf(list + off, len - off, "%s%s", off ? " " : "",
				v[i].name);
}

/* *n's copy of o, if they differ. 0 or -ENOMEM. */
static int keep_str(char **n, const char *o)
{
	char *copy;

	if (!strcmp(*n, o))
		return 0;
	if (!(copy = strdup(o)))
		return -ENOMEM;
	free(*n);
	*n = copy;
	return 0;
}

/*
 * Restart-only settings that other modules read from the running configuration after the
 * start keep their running values in the reloaded one, so that it says what is in force:
 * - host_id: the grants in force were admitted for it, and nothing kept their audiences. A new
 *   one (set, or the host renamed while host_id is unset) waits for the restart, which checks
 *   every recorded grant against it; applied to new grants alone, it would leave the old
 *   audience's grants open beside them.
 * - state_dir: the journal, replay cache and audit trail stay where they were opened, and an
 *   HTTP status is spooled beside them (on the file system whose space they need).
 * 0 or -ENOMEM.
 */
static int keep_running(const struct config *o, struct config *n)
{
	int ret;

	if ((ret = keep_str(&n->host_id, o->host_id)))
		return ret;
	return keep_str(&n->state_dir, o->state_dir);
}

#ifdef JITD_TEST_HOOKS
/*
 * Test builds: $JITD_TEST_RELOAD_RACE_FILE holding 1 makes the next reload's first batch meet
 * a kernel from which the elements it deletes are already gone, in a transaction of their own,
 * as if they had run out between the reload's reading of the sets and its commit.
 * $JITD_TEST_RELOAD_FAIL_FILE present: the reload's batches are refused with EPERM, as by the
 * kernel, and not sent.
 */
static int test_hook_reload_race(struct enforce *e, const struct plan *p, int attempt,
	int64_t now_ms, char *refused)
{
	char kerr[NFT_ERRLEN] = "";
	struct nft_batch *b = NULL;

	if (testhook_exists("JITD_TEST_RELOAD_FAIL_FILE")) {
		snprintf(refused, NFT_ERRLEN, "test hook: %s", strerror(EPERM));
		return -EPERM;
	}
	if (attempt || test_hook_read("JITD_TEST_RELOAD_RACE_FILE") <= 0)
		return 0;
	if (nft_batch_new(e->nft, &b) || ruleset_raw_delete(b, e->strays.v, e->strays.n) ||
		ruleset_elems(b, p->del.v, p->del.n, NULL, 0, now_ms) || nft_batch_commit(b, kerr))
		log_warn("test hook: cannot remove the reload's elements first: %s", kerr);
	nft_batch_free(b);
	return 0;
}
#else
static int test_hook_reload_race(struct enforce *e, const struct plan *p, int attempt,
	int64_t now_ms, char *refused)
{
	(void)e;
	(void)p;
	(void)attempt;
	(void)now_ms;
	(void)refused;
	return 0;
}
#endif

/* A reload left the running configuration in force: for /metrics and status, until one applies. */
static void reload_refused(struct enforce *e, const char *why)
{
	e->metrics.reloads_refused++;
	snprintf(e->reload_refused, sizeof(e->reload_refused), "%s", why);
	e->reload_refused_at = enforce_now_ms() / 1000;
}

/* Whether a and b name one directory: the same string, or the same one by another path. */
static bool same_dir(const char *a, const char *b)
{
	struct stat x, y;

	return !strcmp(a, b) || (!stat(a, &x) && !stat(b, &y) && x.st_dev == y.st_dev &&
		x.st_ino == y.st_ino);
}

static void warn_reload(void *arg, const char *msg)
{
	(void)arg;
	log_warn("reload: %s", msg);
}

/*
 * Whether a reload may read nc's keys_dir as the keys it trusts: a directory jitd can search
 * (keys_dir_errno). One it cannot reads as every key removed, and would revoke every signed
 * grant: refused while there is one (root's local grants have no key). An operator who means
 * to end them all empties the directory. 0, or JIT_ERR_BAD_CONFIG with why in err.
 */
static int keys_dir_usable(const struct enforce *e, const struct config *nc, char *err,
	size_t errlen)
{
	size_t i;
	int why;

	for (i = 0; i < e->n_grants && e->grants[i].local; i++)
		;
	if (i == e->n_grants || !(why = keys_dir_errno(nc->keys_dir)))
		return 0;
	snprintf(err, errlen, "keys_dir %s: %s: every signed grant would be revoked (to end them "
		"all, empty the directory instead)", nc->keys_dir, strerror(why));
	return JIT_ERR_BAD_CONFIG;
}

/* A grant a reload drops: why, and its deadline should it come back (the reload failing). */
struct reload_drop {
	struct grant g;
	int64_t until;
	struct jit_error why;
};

/* A grant a reload gave new gateway ports: its index and old ones, put back if it fails. */
struct reload_moved {
	size_t i;
	uint16_t *ports;
	uint32_t n;
};

/*
 * Gateway grants the new file admits but would not give the ports they hold (a target that
 * gained or lost dnat, a range that moved) get new ones, as a restart gives them: the lowest
 * free beside the kept grants' that fit. One whose range is full is dropped, its reason
 * dnat_allocate's. A dropped grant's port may go to another in the same transaction, as at a
 * start: its mapping is deleted before the new one is added, and the map is keyed by source.
 * A grant that ran out (now, boot: the reload's clocks), gone at the next tick, takes none.
 * *moved is the caller's to free, failure or not; reload_rerecord records the new ports.
 */
static int reload_ports(struct enforce *e, const struct config *nc, int64_t now, int64_t boot,
	struct reload_drop *dropped, size_t *n_dropped, struct reload_moved **moved,
	size_t *n_moved)
{
	struct dnat_used *u = calloc(1, sizeof(*u));
	struct reload_moved *nv;
	int ret = 0;

	if (!u)
		return -ENOMEM;
	for (size_t i = 0; i < e->n_grants; i++)
		if (grant_end_ms(e, i, now, boot) > now && dnat_fits(nc, &e->grants[i]))
			dnat_mark(u, &e->grants[i]);
	/* Upwards: one dropped here takes the last one's place, looked at next; the rest stay. */
	for (size_t i = 0; i < e->n_grants;) {
		struct grant *g = &e->grants[i];
		struct jit_error jerr = { 0 };
		struct reload_moved old = { i, g->dnat_ports, g->n_dnat_ports };

		if (grant_end_ms(e, i, now, boot) <= now || dnat_fits(nc, g)) {
			i++;
			continue;
		}
		if (!(nv = realloc(*moved, (*n_moved + 1) * sizeof(*nv)))) {
			ret = -ENOMEM;
			break;
		}
		*moved = nv;
		/* dnat_allocate frees what it replaces: the old ports stay with old. */
		g->dnat_ports = NULL;
		g->n_dnat_ports = 0;
		if ((ret = dnat_allocate(nc, g, u, &jerr))) {
			g->dnat_ports = old.ports;
			g->n_dnat_ports = old.n;
			if (ret == JIT_ERR_INTERNAL) {
				ret = -ENOMEM;
				break;
			}
			dropped[*n_dropped].why = jerr;
			dropped[*n_dropped].until = e->deadline[i];
			dropped[(*n_dropped)++].g = grants_take(e, i);
			ret = 0;
			continue;
		}
		nv[(*n_moved)++] = old;
		i++;
	}
	free(u);
	return ret;
}

/*
 * A moved grant's jti and new ports, found by jti in the walk over the records; its token
 * copied from there, since the write comes after the walk (a suspect store rewrites itself
 * first, which it cannot do while a walk is open).
 */
struct moved_rec {
	const char *jti;
	char *annex, *token;
	size_t len;
};

static int moved_rec_cmp(const void *a, const void *b)
{
	return strcmp(((const struct moved_rec *)a)->jti, ((const struct moved_rec *)b)->jti);
}

/*
 * Records the new ports of the grants a reload moved, in one write, with their tokens from the
 * store: else the next start would take back a recorded port that came back into its range,
 * from under the grant a later reload gave it to. A failure is logged: that start then gives
 * them ports again, as it does after a change made while jitd was stopped.
 */
static void reload_rerecord(struct enforce *e, const struct reload_moved *moved, size_t n)
{
	struct moved_rec *by = calloc(n, sizeof(*by));
	struct store_rec *recs = calloc(n, sizeof(*recs));
	struct store_item *v = NULL;
	size_t nv = 0, k = 0;
	int ret = by && recs ? 0 : -ENOMEM;

	for (size_t i = 0; !ret && i < n; i++) {
		const struct grant *g = &e->grants[moved[i].i];
		char buf[DNAT_ANNEX_MAX];

		by[i].jti = g->jti;
		if (dnat_annex(g, buf, sizeof(buf)))
			ret = -ENOSPC;
		else if (buf[0] && !(by[i].annex = strdup(buf)))
			ret = -ENOMEM;
	}
	if (!ret) {
		qsort(by, n, sizeof(*by), moved_rec_cmp);
		ret = store_items(e->store, &v, &nv);
	}
	for (size_t j = 0; !ret && j < nv; j++) {
		struct moved_rec key = { .jti = v[j].jti }, *m;

		if (!(m = bsearch(&key, by, n, sizeof(*by), moved_rec_cmp)) || m->token)
			continue;
		if (!(m->token = strndup(v[j].token, v[j].len)))
			ret = -ENOMEM;
		m->len = v[j].len;
	}
	store_items_end(e->store, &v);
	for (size_t i = 0; !ret && i < n; i++)
		if (by[i].token)
			recs[k++] = (struct store_rec){ by[i].jti, by[i].token, by[i].len,
				by[i].annex };
	if (!ret && k)
		ret = store_put_many(e->store, recs, k);
	if (ret || k < n)
		log_warn("state: cannot record the new gateway ports of %zu grant(s): %s; the "
			"next start gives them ports again", ret ? n : n - k,
			ret ? strerror(-ret) : "no record");
	for (size_t i = 0; by && i < n; i++) {
		free(by[i].annex);
		free(by[i].token);
	}
	free(by);
	free(recs);
}

int enforce_reload(struct enforce *e, char *err, size_t errlen)
{
	char kerr[NFT_ERRLEN] = "", why[GRANT_MAX_STRING + 64], pending[RESTART_PENDING_LEN];
	const char *fail_why = NULL;	/* what to report when it is neither kerr nor an errno */
	struct jit_error jerr = { 0 };
	struct reload_drop *dropped = NULL;	/* the grants the new policy drops */
	struct reload_moved *moved = NULL;
	const struct config *running = e->cfg;
	struct config *nc = NULL;
	char *raw = NULL, *moved_to = NULL;	/* the file's state_dir, when a restart moves it */
	struct group *groups = NULL;
	struct nft_batch *b = NULL;
	size_t n_groups = 0, n_dropped = 0, n_moved = 0, raw_len = 0;
	struct plan p = { 0 };
	struct keys_seen keys = { 0 };
	const char **ids = NULL;
	int64_t now, boot;
	bool hooked = false;
	int ret;

	/*
	 * A reload may drop grants: those still settling are answered first (expire settles),
	 * and those that ran out since the last tick go, as a start drops them.
	 */
	expire(e, false);
	/* Set by this reload's commits only (see the failure below), not expire's reconcile. */
	e->unanswered = false;
	if ((ret = config_load_raw(e->config_path, &nc, &raw, &raw_len, &jerr))) {
		snprintf(err, errlen, "%s", jerr.msg);
		goto refused;
	}
	for (size_t at = 0; config_warning(nc, &at, jerr.msg, sizeof(jerr.msg));)
		log_warn("reload: %s: %s", e->config_path, jerr.msg);
	(void)keys_survey(nc, warn_reload, NULL);
	if ((ret = keys_dir_usable(e, nc, err, errlen)))
		goto refused;
	ret = JIT_ERR_BAD_CONFIG;
	if (!ruleset_same_shape(e->cfg, nc)) {
		snprintf(err, errlen, "%s: \"mode\", or whether any target maps ports (dnat), "
			"changed: that takes a restart", e->config_path);
		goto refused;
	}
	/* The replay cache keeps its size until the restart; grants it cannot hold are busy. */
	if (nc->max_grants > e->started_cfg->replay_cache_max) {
		snprintf(err, errlen, "%s: limits.max_grants %zu is more than the running "
			"replay cache holds (%zu; replay_cache_max changes at the next start): "
			"restart jitd to raise it", e->config_path, nc->max_grants,
			e->started_cfg->replay_cache_max);
		goto refused;
	}
	/* The endpoint and the trail keep their started settings; control_connections applies. */
	if (fdbudget_check(e->started_cfg, nc->control_connections, why, sizeof(why))) {
		snprintf(err, errlen, "%s: %s", e->config_path, why);
		goto refused;
	}
	if (e->endpoint_hook.prepare &&
		e->endpoint_hook.prepare(e->endpoint_hook.arg, nc, err, errlen))
		goto refused;
	hooked = e->endpoint_hook.finish != NULL;
	restart_only(e->started_cfg, nc, pending, sizeof(pending));
	if (pending[0])
		log_warn("reload: changed but applied only at the next start: %s", pending);
	if (!same_dir(nc->state_dir, e->started_cfg->state_dir) &&
		!(moved_to = strdup(nc->state_dir))) {
		ret = -ENOMEM;
		goto fail;
	}
	/* Nothing but the lockdown record follows it (below): the rest is the operator's move. */
	if (moved_to)
		log_warn("reload: state_dir moves to %s at the next start: stop jitd and move "
			"%s's grants.journal, grants.snap, replay.db and audit.jsonl there "
			"first, or that start ends the active grants and forgets the grant ids "
			"used so far (a token still valid could be applied again)", moved_to,
			e->started_cfg->state_dir);
	if ((ret = keep_running(e->started_cfg, nc)))
		goto fail;
	/* Read after the file and the settling: either may take a while on a slow disk. */
	now = enforce_now_ms();
	boot = clock_ms(CLOCK_BOOTTIME);
	/* Grants the new policy would not admit now leave with it, in the same transaction. */
	if (!(dropped = calloc(e->n_grants + 1, sizeof(*dropped))) ||
		!(ids = calloc(e->n_grants + 1, sizeof(*ids)))) {
		ret = -ENOMEM;
		goto fail;
	}
	for (size_t i = e->n_grants; i-- > 0;) {
		if (!policy_check(nc, &e->grants[i], grant_now_s(e, i, boot), &jerr)) {
			if (!(ret = key_trusted(&keys, nc, &e->grants[i], &jerr)))
				continue;
			else if (ret == -ENOMEM)
				goto fail;
			else if (ret == JIT_ERR_INTERNAL) {
				/* Not a verdict on the key: drop nothing, change nothing. */
				fail_why = jerr.msg;
				ret = -EAGAIN;
				goto fail;
			}
		}
		dropped[n_dropped].why = jerr;
		dropped[n_dropped].until = e->deadline[i];
		dropped[n_dropped++].g = grants_take(e, i);
	}
	if ((ret = reload_ports(e, nc, now, boot, dropped, &n_dropped, &moved, &n_moved)))
		goto fail;
	for (int attempt = 0;; attempt++) {
		if ((ret = resync(e)))
			goto fail;
		/* The clock of the read, not the file's: elements' ends agree with the baseline. */
		now = enforce_now_ms();
		/* The elements the new file wants: its gateway pairs, not the running one's. */
		e->cfg = nc;
		if (!(ret = all_groups(e, &groups, &n_groups)))
			ret = plan_build(e, groups, n_groups, now, &p);
		e->cfg = running;
		if (ret || (ret = nft_batch_new(e->nft, &b)) ||
			(ret = ruleset_build(b, nc, e->table_flags)) ||
			(ret = ruleset_raw_delete(b, e->strays.v, e->strays.n)) ||
			(ret = ruleset_elems(b, p.del.v, p.del.n, p.add.v, p.add.n, now)))
			goto fail;
		/* Structure, fixed sets and elements: all of the new policy or none of it. */
		if (!(ret = test_hook_reload_race(e, &p, attempt, now, kerr)) &&
			!(ret = commit_batch(e, b, kerr)))
			break;
		/*
		 * An element the batch deletes ran out meanwhile (a dropped grant's, a stray's), or
		 * one it adds appeared: the kernel refused all of it, so read again and retry.
		 */
		if ((ret != -ENOENT && ret != -EEXIST) || attempt + 1 == COMMIT_ATTEMPTS)
			goto fail;
		log_info("reload: kernel: %s; an element changed meanwhile, re-reading the allow "
			"sets and retrying", kerr);
		kerr[0] = '\0';
		nft_batch_free(b);
		b = NULL;
		plan_free(&p);
		free(groups);
		groups = NULL;
		n_groups = 0;
	}
	e->strays.n = 0;
	model_follow(e, model_apply(e, &p, now));
	/*
	 * A key removed from under 100,000 grants drops them all here, on the loop: one fsync
	 * of the trail and one fdatasync of the journal for them all, not one of each a grant
	 * (5,000 took 1.3 s that way on the development VM, 0.08 s this way; 100,000 would near
	 * the unit's 30 s watchdog).
	 */
	audit_defer(e->audit, true);
	for (size_t i = 0; i < n_dropped; i++) {
		struct grant *g = &dropped[i].g;

		snprintf(why, sizeof(why), "configuration reload: %s", dropped[i].why.msg);
		log_info("grant revoked: jti=%s sub=%s (%s)", g->jti, g->sub, why);
		(void)audit(e, "grant.revoked", g, NULL, "jitd", dropped[i].why.code, why,
			-1);
		ids[i] = g->jti;
		e->metrics.grants_revoked++;
	}
	for (size_t i = 0; i < n_moved; i++) {
		char was[DNAT_ANNEX_MAX];

		(void)dnat_ports_text(moved[i].ports, moved[i].n, was, sizeof(was));
		audit_remapped(e, &e->grants[moved[i].i], was, "configuration reload");
	}
	audit_deferred_sync(e);
	drop_records(e, ids, n_dropped);
	for (size_t i = 0; i < n_dropped; i++)
		grant_clear(&dropped[i].g);
	for (size_t i = 0; i < n_moved; i++)
		free(moved[i].ports);
	if (n_moved)
		reload_rerecord(e, moved, n_moved);
	n_moved = 0;
	e->cfg = nc;
	config_free(e->owned_cfg);
	e->owned_cfg = nc;
	memcpy(e->restart_pending, pending, sizeof(pending));
	e->metrics.reloads_applied++;
	e->metrics.reload_applied_at = enforce_now_ms() / 1000;
	e->reload_refused[0] = '\0';
	log_set_level(nc->log_level);
	if (hooked)
		e->endpoint_hook.finish(e->endpoint_hook.arg, true);
	snprintf(why, sizeof(why), "%s: reloaded, %zu protected port(s), %zu forwarded target(s), "
		"%zu grant(s) removed", e->config_path, nc->n_ports, nc->n_targets, n_dropped);
	log_info("%s", why);
	(void)audit(e, "config.loaded", NULL, NULL, NULL, 0, why, -1);
	/* Status's last error: the record, stale, would lock down without what this added. */
	if ((ret = lockdown_save(e->started_cfg->state_dir, raw, raw_len)))
		note_error(e, "reload: cannot keep the configuration in %s/%s, which a start that "
			"fails would close the ports with: %s", e->started_cfg->state_dir,
			LOCKDOWN_FILE, strerror(-ret));
	/* The next start looks in the new state_dir: with no record there, one that fails opens. */
	if (moved_to && (ret = lockdown_save_ahead(moved_to, raw, raw_len)))
		note_error(e, "reload: state_dir moves to %s at the next start, and the "
			"configuration cannot be kept there as %s (%s): a start that fails there "
			"after a boot would leave the ports open", moved_to, LOCKDOWN_FILE,
			ret == -EBUSY ? "another jitd uses it" : strerror(-ret));
	snprintf(err, errlen, "%zu", n_dropped);
	ret = 0;
	goto out;
fail:
	snprintf(err, errlen, "%s", kerr[0] ? kerr : fail_why ? fail_why : strerror(-ret));
	/* The file was valid: the kernel's refusal, or a failure of jitd's own, is what to report. */
	ret = kerr[0] ? JIT_ERR_KERNEL : JIT_ERR_INTERNAL;
	reload_refused(e, err);
	/* Logged once, by note_error; agent.last_error says what the log says. */
	note_error(e, "reload failed, the running configuration stays: %s", err);
	(void)audit(e, "config.refused", NULL, NULL, NULL, ret, err, -1);
	/* The kernel refused it (or, unanswered, is brought back below): they are live again. */
	for (size_t i = 0; i < n_moved; i++) {
		struct grant *g = &e->grants[moved[i].i];

		free(g->dnat_ports);
		g->dnat_ports = moved[i].ports;
		g->n_dnat_ports = moved[i].n;
	}
	n_moved = 0;
	for (size_t i = 0; i < n_dropped; i++)
		if (grants_push_until(e, &dropped[i].g, dropped[i].until)) {
			/* Out of the books, its elements still in the kernel: not in sync. */
			(void)change_failed(e, -ENOMEM);
			grant_clear(&dropped[i].g);
		}
	if (hooked)
		e->endpoint_hook.finish(e->endpoint_hook.arg, false);
	config_free(nc);
	/*
	 * Unanswered, the kernel may hold the new policy after all, a port it no longer protects
	 * open: the running one is put back now, not at the next periodic check. A full check,
	 * structure included, that repairs (and audits) only what differs.
	 */
	if (e->unanswered)
		(void)enforce_reconcile(e, false, "reload not answered by the kernel");
	goto out;
refused:
	/* The file, or what it names, is wrong: nothing was changed. */
	log_err("reload refused, the running configuration stays: %s", err);
	reload_refused(e, err);
	(void)audit(e, "config.refused", NULL, NULL, NULL, ret, err, -1);
	config_free(nc);
out:
	nft_batch_free(b);
	plan_free(&p);
	free(groups);
	free(dropped);
	free(moved);
	free(ids);
	free(keys.v);
	free(raw);
	free(moved_to);
	return ret;
}
