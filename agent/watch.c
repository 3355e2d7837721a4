#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include <event2/event.h>

#include "agent/enforce.h"
#include "agent/nft.h"
#include "agent/ruleset.h"
#include "agent/watch.h"
#include "common/config.h"
#include "common/log.h"

/*
 * A periodic check reads every grant set back from the kernel, on the loop: about 0.4 s of CPU
 * at 100,000 elements. It is skipped while the events account for every transaction
 * since the last full check and none was anyone else's in table inet jitd (those are repaired
 * as they come), as nft itself trusts its cache while the generation stands; but never more
 * than this many times in a row.
 */
#define FULL_CHECK_EVERY 10

struct watch {
	struct enforce *enf;
	struct nft_monitor *mon;
	struct event *ev, *timer;
	struct event *first;	/* a check at once, when the start missed a transaction */
	struct event *retry;	/* every second: a check while the enforcer is unsure */
	unsigned skipped;	/* periodic checks skipped since the last full one */
	unsigned retry_wait;	/* seconds between retries now: 1, 2, 4, ... (0: none yet) */
	unsigned retry_left;	/* seconds until the next */
	unsigned interval;	/* reconcile_interval, the longest wait */
};

/* Sure of the kernel again: the next time it is not, retries start from a second. */
static void retry_reset(struct watch *w)
{
	if (!enforce_unsure(w->enf))
		w->retry_wait = w->retry_left = 0;
}

/* Reads every grant set and the structure, and repairs; the events go on from gen. */
static void full_check(struct watch *w, bool have_gen, uint32_t gen, const char *trigger)
{
	w->skipped = 0;
	/* Read at gen or later and left in line: the events go on from there. */
	if (!enforce_reconcile(w->enf, false, trigger) && have_gen && !enforce_unsure(w->enf))
		nft_monitor_mark(w->mon, gen);
	retry_reset(w);
}

static void watch_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	unsigned drift = 0;
	int ret;

	/* Sets whose elements are grants; a change anywhere else is a change of structure. */
	ret = nft_monitor_read(w->mon, RULESET_TABLE, ruleset_grant_sets(),
		nft_portid(enforce_nft(w->enf)), &drift);
	if (ret == -ENOBUFS)
		log_debug("nftables events were lost (ENOBUFS): comparing the table with the "
			"kernel");
	else if (ret)
		log_warn("nftables events: %s", strerror(-ret));
	/*
	 * Lost events call for a comparison, not a rebuild: the loss may be jitd's own repair of
	 * 100,000 elements overflowing the socket with its own events, or another table's
	 * churn, and a table found right is left alone and nothing is audited.
	 */
	if (drift) {
		(void)enforce_reconcile(w->enf, !ret && (drift & NFT_DRIFT_STRUCTURE),
			ret ? "nftables events were lost" : "nftables event");
		retry_reset(w);
	}
}

static void watch_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	uint32_t gen;
	bool have_gen;

	/* Pending events first: what they report is repaired on their own path. */
	watch_event_cb(nft_monitor_fd(w->mon), EV_READ, w);
	have_gen = nft_gen_id(enforce_nft(w->enf), &gen) == 0;
	if (have_gen && w->skipped + 1 < FULL_CHECK_EVERY && !enforce_unsure(w->enf) &&
		nft_monitor_current(w->mon, gen)) {
		w->skipped++;
		log_debug("periodic check skipped: generation %u, no transaction but jitd's own "
			"since the last full check", gen);
		return;
	}
	log_debug("periodic check: reading every grant set from the kernel");
	full_check(w, have_gen, gen, "periodic check");
}

/*
 * A repair that failed (a flushed table whose rebuild hit a passing error: every protected
 * port unfiltered meanwhile) or a change the enforcer could not finish (a withdrawn grant's
 * elements perhaps still in the kernel) leaves it unsure: it is checked again a second later,
 * then after 1, 2, 4, ... seconds more, rather than at the next periodic check only, which may be
 * up to an hour away. From a wait of reconcile_interval on, the periodic check alone goes on
 * (it never skips while unsure): a kernel that keeps refusing is not read twice as often.
 */
static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct watch *w = arg;
	unsigned next;
	uint32_t gen;
	bool have_gen;

	retry_reset(w);
	if (!enforce_unsure(w->enf))
		return;
	if (w->retry_left > 0) {
		w->retry_left--;
		return;
	}
	next = w->retry_wait ? w->retry_wait * 2 : 1;
	if (w->retry_wait && next >= w->interval)
		return;
	w->retry_wait = next;
	w->retry_left = next - 1;
	/* Pending events first, as for the periodic check: their repair may settle it. */
	watch_event_cb(nft_monitor_fd(w->mon), EV_READ, w);
	if (!enforce_unsure(w->enf))
		return;
	log_debug("unsure of the kernel: reading every grant set again");
	have_gen = nft_gen_id(enforce_nft(w->enf), &gen) == 0;
	full_check(w, have_gen, gen, "repair retried");
}

int watch_open(struct event_base *base, const struct config *cfg, struct enforce *enf,
	struct watch **out)
{
	struct timeval tv = { (time_t)cfg->reconcile_interval, 0 };
	uint32_t start, gen;
	struct watch *w;
	bool caught_up;
	int ret;

	*out = NULL;
	if (!(w = calloc(1, sizeof(*w))))
		return -ENOMEM;
	w->enf = enf;
	w->interval = (unsigned)cfg->reconcile_interval;
	if ((ret = nft_monitor_open(&w->mon)))
		goto fail;
	/*
	 * The restore was a full check. Events follow on from it if the generation is still the
	 * one it left, read now that the monitor listens. A transaction since, anyone's, was not
	 * heard: it may have flushed the table, so the full check runs at the loop's first turn,
	 * not reconcile_interval later.
	 */
	caught_up = enforce_start_gen(enf, &start) && nft_gen_id(enforce_nft(enf), &gen) == 0 &&
		gen == start;
	if (caught_up)
		nft_monitor_mark(w->mon, gen);
	w->ev = event_new(base, nft_monitor_fd(w->mon), EV_READ | EV_PERSIST, watch_event_cb, w);
	w->timer = event_new(base, -1, EV_PERSIST, watch_timer_cb, w);
	w->retry = event_new(base, -1, EV_PERSIST, retry_cb, w);
	if (!w->ev || !w->timer || !w->retry || event_add(w->ev, NULL) ||
		event_add(w->timer, &tv) || event_add(w->retry, &(struct timeval){ 1, 0 })) {
		ret = -ENOMEM;
		goto fail;
	}
	/* Its own one-shot event: activating the periodic one would put its next tick back. */
	if (!caught_up && (!(w->first = evtimer_new(base, watch_timer_cb, w)) ||
		event_add(w->first, &(struct timeval){ 0, 0 }))) {
		ret = -ENOMEM;
		goto fail;
	}
	*out = w;
	return 0;
fail:
	watch_close(&w);
	return ret;
}

void watch_close(struct watch **w)
{
	if (!*w)
		return;
	if ((*w)->ev)
		event_free((*w)->ev);
	if ((*w)->timer)
		event_free((*w)->timer);
	if ((*w)->first)
		event_free((*w)->first);
	if ((*w)->retry)
		event_free((*w)->retry);
	nft_monitor_close(&(*w)->mon);
	free(*w);
	*w = NULL;
}
