/*
 * Revocation: a grant ended before its time, by id (root, locally) or by a signed revocation
 * token, and with terminate its established flows cut.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/conntrack.h"
#include "agent/enforce_impl.h"
#include "agent/replay.h"
#include "agent/testhook.h"
#include "common/config.h"
#include "common/log.h"
#include "common/policy.h"
#include "common/revoke.h"

static int cut_flows(struct enforce *e, const struct grant *g, long *flows)
{
	if (!e->ct)
		return -ENOPROTOOPT;
#ifdef JITD_TEST_HOOKS
	/* $JITD_TEST_CUT_FAIL_FILE holding 1: the next cut fails, as when ctnetlink errs. */
	if (testhook_number("JITD_TEST_CUT_FAIL_FILE", true, 0) > 0)
		return -EIO;
#endif
	/* g has left the grants: those still there, and always_allow, keep what they let in. */
	return conntrack_cut(e->ct, g, e->grants, e->n_grants, e->cfg->always_allow,
		e->cfg->n_always_allow, flows);
}

/* Removes grant i from the kernel and the state; with terminate, cuts its flows afterwards. */
static int revoke_at(struct enforce *e, size_t i, bool terminate, const char *peer,
	const char *why, struct revoke_result *res, struct jit_error *err)
{
	struct group *groups = NULL;
	size_t n_groups = 0;
	char kerr[NFT_ERRLEN] = "";
	struct grant g;
	int64_t deadline;
	long flows = 0;
	int ret;

	memset(res, 0, sizeof(*res));
	if ((ret = grant_copy(&e->grants[i], &g))) {
		return jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
	}
	if ((ret = grant_groups(e, &g, &groups, &n_groups))) {
		ret = jit_fail(err, JIT_ERR_INTERNAL, "out of memory");
		goto out;
	}
	/*
	 * The record goes first, durable before the kernel changes: a crash in between leaves
	 * elements with no record, which the next start removes, where the other order left a
	 * record that restored the revoked grant. One the disk refuses is retried (drop_record);
	 * the access ends now all the same.
	 */
	drop_record(e, g.jti);
	test_hook_pause("JITD_TEST_REVOKE_PAUSE_FILE");
	deadline = e->deadline[i];
	grants_remove(e, i);
	e->unanswered = false;
	if ((ret = sync_removed(e, &g, deadline, groups, n_groups, kerr, sizeof(kerr))) &&
		e->unanswered) {
		/*
		 * The kernel takes a batch as it is sent: most likely the elements are gone. Put
		 * back in the books, the grant would have the next check add them again; the
		 * revocation stands, and the kernel is brought to the books now, past the stale
		 * acks. Failing that, the next check does it (the commit left jitd unsure), and
		 * the reply says the kernel did not confirm it.
		 */
		log_warn("revocation of '%s': %s; the kernel is checked again", g.jti, kerr);
		kerr[0] = '\0';
		if ((ret = resync(e)) ||
			(ret = sync_groups(e, groups, n_groups, kerr, sizeof(kerr)))) {
			/* Cut to fit: the kernel's own text can be longer. */
			snprintf(res->unconfirmed, sizeof(res->unconfirmed), "%.127s",
				kerr[0] ? kerr : strerror(-ret));
			note_error(e, "kernel: cannot confirm the revocation of '%.64s' now (%s): "
				"its elements go at the next check", g.jti, res->unconfirmed);
		}
		ret = 0;
	}
	if (ret) {
		struct grant back;

		/*
		 * Still in the kernel, so still a grant: keep the books true. Its record is gone
		 * (unless the disk refused the drop): a restart ends it, as asked.
		 */
		if (grant_copy(&g, &back) == 0 && grants_push_until(e, &back, deadline))
			grant_clear(&back);
		ret = jit_fail(err, JIT_ERR_KERNEL, "the kernel refused the change: %s", kerr);
		note_error(e, "kernel: %s", err->msg);
		goto out;
	}
	snprintf(res->grant_id, sizeof(res->grant_id), "%s", g.jti);
	res->terminate = terminate;
	log_info("grant revoked: jti=%s sub=%s peer=%s%s", g.jti, g.sub, peer,
		terminate ? " (terminating its flows)" : "");
	(void)audit(e, "grant.revoked", &g, NULL, peer, 0, why, -1);
	e->metrics.grants_revoked++;
	/*
	 * After the elements are gone, so a cut client cannot simply come back in. A cut that
	 * failed is said in the reply: sessions that live on must not read as "there were none".
	 */
	if (terminate) {
		char msg[160];

		ret = cut_flows(e, &g, &flows);
		if (flows > 0)
			e->metrics.flows_terminated += (uint64_t)flows;
		/*
		 * On record whatever came of it: a cut that failed part-way cut what it counts,
		 * and one that cut nothing must not leave the trail silent on sessions that were
		 * to end and live on.
		 */
		if (ret)
			snprintf(msg, sizeof(msg), "%s (%s): the %sflows live on",
				flows > 0 ? "cut short" : "not cut",
				e->ct ? strerror(-ret) : "conntrack unavailable",
				flows > 0 ? "other " : "");
		(void)audit(e, "flows.terminated", &g, NULL, peer, 0, ret ? msg : NULL,
			flows > 0 ? flows : 0);
		if (ret) {
			char n[32] = "";

			if (flows > 0)
				snprintf(n, sizeof(n), " after %ld cut", flows);
			snprintf(res->terminate_error, sizeof(res->terminate_error), "%s%s",
				e->ct ? strerror(-ret) : "conntrack unavailable", n);
			res->flows_terminated = -1;
			note_error(e, "conntrack: cannot cut the flows of '%s': %s", g.jti,
				res->terminate_error);
			ret = 0; /* the access itself is gone: the revocation stands */
		} else {
			res->flows_terminated = flows;
		}
	}
	ret = 0;
out:
	grant_clear(&g);
	free(groups);
	return ret;
}

int enforce_revoke_id(struct enforce *e, const char *grant_id, bool terminate, const char *peer,
	struct revoke_result *res, struct jit_error *err)
{
	ssize_t i;
	int ret;

	expire(e, false);
	if ((i = find_index(e, grant_id)) < 0) {
		ret = jit_fail(err, JIT_ERR_NOT_FOUND, "no active grant '%.64s'", grant_id);
		goto refused;
	}
	if ((ret = revoke_at(e, (size_t)i, terminate, peer, "revoked locally", res, err)))
		goto refused;
	return 0;
refused:
	refused(e, "revocation", grant_id, peer, err);
	return ret;
}

/*
 * The ids early revocations may hold beyond a day: a quarter of the cache (as it was sized at
 * the start), and never the places limits.max_grants needs; none in a cache of fewer than 4.
 */
static size_t far_ids_max(const struct enforce *e)
{
	size_t max = replay_max(e->replay), grants = e->cfg->max_grants;

	return max <= grants ? 0 : max / 4 < max - grants ? max / 4 : max - grants;
}

int enforce_revoke_token(struct enforce *e, const char *token, size_t len, const char *peer,
	struct revoke_result *res, struct jit_error *err)
{
	const struct grant_verify_ctx ctx = {
		.keys_dir = e->cfg->keys_dir,
		.host_id = e->cfg->host_id,
		.now = enforce_now_ms() / 1000,
		.clock_skew = e->cfg->clock_skew,
	};
	struct revocation rv = { 0 };
	char why[GRANT_MAX_STRING * 2 + 64];
	const int64_t skew = e->cfg->clock_skew, day = ctx.now + CONFIG_MAX_MAX_DURATION;
	bool used, full;
	ssize_t i;
	int ret;

	/*
	 * The token first: settling every queued sync and walking every grant (expire) is for a
	 * revocation that may end one, not for whatever anyone posts.
	 */
	if ((ret = revoke_verify(token, len, &ctx, &rv, err)) ||
		(ret = policy_check_issuer(e->cfg, rv.kid, rv.iss, err)))
		goto refused;
	expire(e, false);
	ret = replay_check(e->replay, rv.jti, ctx.now);
	/*
	 * A full cache refuses only a revocation with no active grant to end. One that has ends
	 * it without its own id remembered (sent again, it only revokes again), rather than
	 * leave access open until the grant's exp while the cache is full.
	 */
	if ((full = ret == JIT_ERR_BUSY) && find_index(e, rv.revokes) < 0) {
		ret = jit_fail(err, JIT_ERR_BUSY, "the replay cache is full; retry later");
		goto refused;
	}
	/*
	 * A revocation replayed only revokes again, so a used one still ends its grant if that
	 * is active: a crash after its id was written and before the grant's record was dropped
	 * (or a restart while the journal refused the drop) restores the grant, and the
	 * controller, never answered, sends the same token again.
	 */
	if ((used = ret == JIT_ERR_REPLAY) && find_index(e, rv.revokes) < 0) {
		ret = jit_fail(err, JIT_ERR_REPLAY, "revocation '%s' was already used", rv.jti);
		goto refused;
	}
	/*
	 * Its own id need not be durable first. When replay.db cannot be written (a failing
	 * disk: replay_add then fails until it is rewritten), the revocation still ends the
	 * grant, rather than every one being refused while the grants they would end stay open.
	 * It is kept at most a day, whatever its exp: sent again later, it only revokes again, or
	 * burns an id already burned; held longer, it would be an id beyond a day (below) that no
	 * quota counts.
	 */
	if (used || full)
		ret = 0;
	else if ((ret = replay_add(e->replay, rv.jti, (rv.exp < day ? rv.exp : day) + skew)) &&
		(ret == -ENOBUFS || ret == -ENOMEM || ret == -EINVAL)) {
		ret = jit_fail(err, JIT_ERR_INTERNAL, "cannot remember revocation id: %s",
			strerror(-ret));
		goto refused;
	}
	if (ret)
		log_warn("replay: revocation '%s' applied, its id not durable: %s", rv.jti,
			strerror(-ret));
	if (full)
		log_warn("replay: revocation '%s' applied, its id not remembered: the replay cache "
			"is full", rv.jti);
	if ((i = find_index(e, rv.revokes)) < 0) {
		/*
		 * The grant may still be on its way, or not valid yet (nbf): its id is burned for as
		 * long as a grant admitted now could live, or until the revocation's own exp when
		 * that is later (a controller revoking a grant scheduled further ahead gives the
		 * revocation the grant's exp), so that a revocation that overtook its grant wins.
		 */
		int64_t until = rv.exp > day ? rv.exp : day;
		/* replay_check first: it makes room in a full cache, as for any new id. */
		int known = replay_check(e->replay, rv.revokes, ctx.now);

		/*
		 * An id held beyond a day outlives every grant's, which the cache turns over within
		 * one: such ids may fill at most a quarter of it, or any controller key could, with
		 * revocations signed years ahead, fill it for good (a restart keeps them) and leave
		 * every grant and every early revocation busy. Also for an id already remembered,
		 * which this would hold longer; not for one held as long already (the same
		 * revocation sent again once its own id is forgotten, or another for the same id).
		 */
		if (known == JIT_ERR_BUSY)
			ret = -ENOBUFS;
		else if (until > day && replay_until(e->replay, rv.revokes) < until + skew &&
			replay_count_beyond(e->replay, day + skew) >= far_ids_max(e))
			ret = -EDQUOT;
		else
			ret = replay_add(e->replay, rv.revokes, until + skew);
		if (ret && ret != -EEXIST) {
			/*
			 * Not remembered, the grant would be admitted when it arrives: the
			 * controller must retry, and the revocation's own id is forgotten so that
			 * the same token is taken then.
			 */
			const char *why_not = strerror(-ret);

			if (ret == -ENOBUFS)
				why_not = "the replay cache is full; retry later";
			else if (ret == -EDQUOT && !far_ids_max(e))
				why_not = "this replay cache keeps no place for ids held beyond "
					"a day (replay_cache_max is below 4, or no larger than "
					"limits.max_grants); send it once the grant is active";
			else if (ret == -EDQUOT)
				why_not = "ids held beyond a day fill the places the replay cache "
					"keeps for them (a quarter of it, at most what "
					"limits.max_grants leaves); retry later";
			replay_forget(e->replay, rv.jti);
			ret = jit_fail(err, ret == -ENOBUFS || ret == -EDQUOT ? JIT_ERR_BUSY :
				JIT_ERR_INTERNAL, "no active grant '%.64s', and its id cannot be "
				"remembered to refuse it: %s%s", rv.revokes, why_not,
				ret == -ENOBUFS || ret == -EDQUOT ? "" : "; retry later");
			goto refused;
		}
		ret = jit_fail(err, JIT_ERR_NOT_FOUND,
			"no active grant '%.64s'; it will be refused if it arrives", rv.revokes);
		goto refused;
	}
	snprintf(why, sizeof(why), "revocation %s from %s", rv.jti, rv.iss);
	if ((ret = revoke_at(e, (size_t)i, rv.terminate, peer, why, res, err))) {
		/* The grant is still in force: the same token must be taken when sent again. */
		if (!used)
			replay_forget(e->replay, rv.jti);
		goto refused;
	}
	revoke_clear(&rv);
	return 0;
refused:
	refused(e, "revocation", rv.revokes, peer, err);
	revoke_clear(&rv);
	return ret;
}
