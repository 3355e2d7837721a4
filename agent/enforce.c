#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/event.h>

#include "agent/activity.h"
#include "agent/audit.h"
#include "agent/dnat.h"
#include "agent/enforce_impl.h"
#include "agent/group.h"
#include "agent/metrics.h"
#include "agent/nft.h"
#include "agent/ranges.h"
#include "agent/refusals.h"
#include "agent/ruleset.h"
#include "agent/replay.h"
#include "agent/store.h"
#include "agent/syncer.h"
#include "agent/testhook.h"
#include "agent/verifier.h"
#include "common/array.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/policy.h"

/* A jump of CLOCK_BOOTTIME over CLOCK_MONOTONIC this large between two ticks is a suspend. */
#define SUSPEND_DETECT_MS 2000
/* And of the wall clock against CLOCK_BOOTTIME, either way, a step of the wall clock. */
#define STEP_DETECT_MS 2000
/* Reloads refused to members of control_group that the trail records each minute. */
#define RELOAD_REFUSALS_AUDITED 10

#ifdef JITD_TEST_HOOKS
/*
 * Test builds only (-DJITD_TEST_HOOKS=ON; never in packages): a test cannot suspend the machine,
 * so it writes a number of milliseconds to $JITD_TEST_SUSPEND_FILE and jitd's wall clock and
 * CLOCK_BOOTTIME jump ahead by it, as after a suspend; CLOCK_MONOTONIC and the kernel's element
 * timeouts do not.
 */
static int64_t test_suspended_ms, test_stepped_ms;

/* The number in the file $env names, once: the file is removed. 0 when there is none. */
long long test_hook_read(const char *env)
{
	return testhook_number(env, true, 0);
}

/* $JITD_TEST_CLOCK_STEP_FILE: the wall clock alone is stepped by that many ms (may be < 0). */
static void test_hook_poll(void)
{
	long long ms = test_hook_read("JITD_TEST_SUSPEND_FILE");

	if (ms > 0)
		test_suspended_ms += ms;
	test_stepped_ms += test_hook_read("JITD_TEST_CLOCK_STEP_FILE");
}

/*
 * $JITD_TEST_START_PAUSE_FILE holding N (at most 10,000): jitd sleeps N ms after its restore,
 * before the events are heard, so that a test can change the ruleset in between. The same
 * with $JITD_TEST_PLACE_PAUSE_FILE after a start found its table in place, before the restore,
 * $JITD_TEST_REVOKE_PAUSE_FILE after a revoked grant's record is dropped, before the kernel
 * changes, and $JITD_TEST_APPLY_PAUSE_FILE after a group's records are written, before the
 * kernel changes, so that a test can kill jitd in between.
 */
void test_hook_pause(const char *name)
{
	long long ms = test_hook_read(name);

	if (ms > 0 && ms <= 10000)
		(void)usleep((useconds_t)(ms * 1000));
}

/* $JITD_TEST_REFUSALS_WINDOW_FILE holding N (1 to 60,000): refusals are counted per N ms. */
static int64_t test_hook_refusals_window(void)
{
	long long ms = testhook_number("JITD_TEST_REFUSALS_WINDOW_FILE", false, 0);

	return ms > 0 && ms <= REFUSALS_WINDOW_MS ? ms : REFUSALS_WINDOW_MS;
}
#else
#define test_suspended_ms 0
#define test_stepped_ms 0
static void test_hook_poll(void)
{
}

void test_hook_pause(const char *name)
{
	(void)name;
}

static int64_t test_hook_refusals_window(void)
{
	return REFUSALS_WINDOW_MS;
}
#endif

/* FNV-1a, 32 bits. */
static uint32_t fnv1a(uint32_t h, const void *p, size_t len)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

uint32_t jti_hash(const char *jti)
{
	return fnv1a(2166136261u, jti, strlen(jti));
}

/* Never 0, which says "not one address". */
uint32_t addr_hash(int family, const uint8_t *addr)
{
	uint8_t f = (uint8_t)family;
	uint32_t h = fnv1a(fnv1a(2166136261u, &f, 1), addr, family == AF_INET ? 4 : 16);

	return h ? h : 1;
}

static struct grant_key grant_key_of(const struct grant *g)
{
	struct grant_key k = { .jti_hash = jti_hash(g->jti) };

	if (g->n_src == 1 && !g->n_dst && prefix_is_host(&g->src[0]))
		k.addr_hash = addr_hash(g->src[0].family, g->src[0].addr);
	return k;
}

int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
		(id == CLOCK_BOOTTIME ? test_suspended_ms : 0);
}

int64_t enforce_grant_end_ms(const struct enforce *e, size_t i, int64_t now_ms,
	int64_t boot_ms)
{
	return grant_end_ms(e, i, now_ms, boot_ms);
}

int64_t enforce_boot_ms(void)
{
	return clock_ms(CLOCK_BOOTTIME);
}

int64_t enforce_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 + test_suspended_ms +
		test_stepped_ms;
}

/* Room for want grants: the restore asks for what it read, a push for one more (doubling). */
int grants_reserve(struct enforce *e, size_t want)
{
	/* Arrays side by side: the capacity they share is set once all have it. */
	size_t cap = e->cap_grants, cap_d = e->cap_grants, cap_k = e->cap_grants;
	struct grant_key *nk;
	struct grant *nv;
	int64_t *nd;

	if (want <= e->cap_grants)
		return 0;
	if (!(nv = array_reserve(e->grants, &cap, want, sizeof(*nv), 16)))
		return -ENOMEM;
	e->grants = nv;
	if (!(nd = array_reserve(e->deadline, &cap_d, cap, sizeof(*nd), cap)))
		return -ENOMEM;
	e->deadline = nd;
	if (!(nk = array_reserve(e->keys, &cap_k, cap, sizeof(*nk), cap)))
		return -ENOMEM;
	e->keys = nk;
	e->cap_grants = cap;
	return 0;
}

/*
 * g joins the grants, ending at deadline on CLOCK_BOOTTIME. A grant taken out and put back
 * keeps the deadline it had: counted again from the wall clock, a clock stepped back since
 * it was applied would lengthen it.
 */
int grants_push_until(struct enforce *e, struct grant *g, int64_t deadline)
{
	if (grants_reserve(e, e->n_grants + 1))
		return -ENOMEM;
	e->deadline[e->n_grants] = deadline;
	e->keys[e->n_grants] = grant_key_of(g);
	/* Kept for its lifetime: one allocation, not six. Unpacked it works the same. */
	(void)grant_pack(g);
	e->grants[e->n_grants++] = *g;
	memset(g, 0, sizeof(*g));
	return 0;
}

/* A grant new to the books: the time left as the wall clock says now, counted on BOOTTIME. */
int grants_push(struct enforce *e, struct grant *g)
{
	return grants_push_until(e, g, clock_ms(CLOCK_BOOTTIME) + (g->exp * 1000 -
		enforce_now_ms()));
}

/* Grant i leaves the grants (its storage is the caller's now); the last one takes its place. */
struct grant grants_take(struct enforce *e, size_t i)
{
	struct grant g = e->grants[i];

	e->n_grants--;
	e->grants[i] = e->grants[e->n_grants];
	e->deadline[i] = e->deadline[e->n_grants];
	e->keys[i] = e->keys[e->n_grants];
	return g;
}

void grants_remove(struct enforce *e, size_t i)
{
	struct grant g = grants_take(e, i);

	grant_clear(&g);
}

/*
 * A recorded grant, as it restores: claims, a still trusted key, policy and freshness (its
 * signature was verified when it was received, see grant_verify_recorded).
 */
int check_recorded(const struct enforce *e, const char *token, size_t len, int64_t now_ms,
	const char *trusted_kid, struct jws_verifier *jv, struct grant *g, struct jit_error *err)
{
	const struct grant_verify_ctx ctx = {
		.keys_dir = e->cfg->keys_dir,
		.host_id = e->cfg->host_id,
		.now = now_ms / 1000,
		.clock_skew = e->cfg->clock_skew,
		.trusted_kid = trusted_kid,
		.verifier = jv,
	};
	int ret;

	if ((ret = grant_verify_recorded(token, len, &ctx, g, err)))
		return ret;
	if ((ret = policy_check(e->cfg, g, now_ms / 1000, err)))
		goto fail;
	/* Skew lets a just-expired grant verify; it must still not open anything. */
	if (g->exp * 1000 - now_ms < MIN_TIME_LEFT_MS) {
		ret = jit_fail(err, JIT_ERR_EXPIRED, "grant '%s' has no time left", g->jti);
		goto fail;
	}
	return 0;
fail:
	grant_clear(g);
	return ret;
}

/* An operational failure, kept for status ("last error") as well as logged. */
void note_error(struct enforce *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(e->last_error, sizeof(e->last_error), fmt, ap);
	va_end(ap);
	log_err("%s", e->last_error);
}

/* n records (n > 0) with one write: all or none. */
int audit_recs(struct enforce *e, const struct audit_rec *recs, size_t n)
{
	int ret = audit_log_many(e->audit, recs, n);

	if (ret)
		note_error(e, "audit: cannot record %s: %s", recs->event, strerror(-ret));
	return ret;
}

static int audit_rec(struct enforce *e, const struct audit_rec *rec)
{
	return audit_recs(e, rec, 1);
}

int audit(struct enforce *e, const char *event, const struct grant *g,
	const char *grant_id, const char *peer, int code, const char *message, long long count)
{
	return audit_rec(e, &(const struct audit_rec){
		.event = event,
		.grant = g,
		.grant_id = grant_id,
		.peer = peer,
		.code = code ? jit_err_name(code) : NULL,
		.message = message,
		.count = count,
	});
}

/*
 * A gateway grant given new ports while it stays active (a reload, or a start after a change
 * made while jitd was stopped: a range that moved, a target that gained or lost dnat): the
 * grant.applied line names its old ones, so the trail says which ports reach its machines now
 * (gateway_ports) and which no longer do (was: "P1,P2", "" for none).
 */
void audit_remapped(struct enforce *e, const struct grant *g, const char *was,
	const char *when)
{
	char what[DNAT_ANNEX_MAX + 128];

	snprintf(what, sizeof(what), "%s: new gateway ports, the configuration changed them "
		"(were: %s)", when, was[0] ? was : "none");
	log_warn("%s: grant '%s' gets new gateway ports (were: %s): the configuration changed "
		"them", when, g->jti, was[0] ? was : "none");
	(void)audit(e, "grant.remapped", g, NULL, "jitd", 0, what, -1);
}

/*
 * The refusals refusals_admit counted, one record per kind and code once their window has
 * ended (all: every one now, when stopping).
 */
static void audit_counted(struct enforce *e, bool all)
{
	struct refusals_tally t;
	char sources[REFUSALS_SOURCES * (REFUSALS_SOURCE_LEN + 64) + 128];
	char msg[sizeof(sources) + 160];

	while (refusals_take(&e->refusals, clock_mono_us() / 1000, all, &t)) {
		snprintf(msg, sizeof(msg), "%lld more refusal(s) naming no grant, with this code, "
			"within %lld s: not audited one by one (audit.unverified_per_minute); %s",
			t.count, (long long)(e->refusals.window_ms + 999) / 1000,
			refusals_sources_text(&t, sources, sizeof(sources)));
		log_warn("%s refused: %s: %s", t.revocation ? "revocation" : "grant",
			jit_err_name(t.code), msg);
		(void)audit(e, t.revocation ? "revocation.refused" : "grant.refused", NULL, NULL,
			refusals_top(&t)->name, t.code, msg, t.count);
	}
}

/* ev fires in ms milliseconds (at least 1). */
void timer_in_ms(struct event *ev, int64_t ms)
{
	const struct timeval tv = { ms > 0 ? ms / 1000 : 0, ms > 0 ? ms % 1000 * 1000 : 1000 };

	evtimer_add(ev, &tv);
}

/*
 * The timer for the end of the window refusals were counted in. libevent's clock may run a
 * little behind clock_mono_us (a coarse clock): a timer that fires early is set again.
 */
static void refusals_due_timer(struct enforce *e)
{
	int64_t due = refusals_due(&e->refusals);

	if (due < 0 || !e->refusals_timer || evtimer_pending(e->refusals_timer, NULL))
		return;
	timer_in_ms(e->refusals_timer, due - clock_mono_us() / 1000);
}

static void refusals_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	audit_counted(arg, false);
	refusals_due_timer(arg);
}

/*
 * A refusal that names no grant and is not authentic (jit_error) was not signed by a trusted
 * key: anyone who reaches the endpoint can send one, and a flood of them audited one by one
 * would rotate every genuine record out of the trail. Beyond audit.unverified_per_minute in a
 * minute they are counted instead (struct refusals); each is still answered and counted in the
 * metrics.
 */
static bool refusal_audited(struct enforce *e, bool revocation, const struct jit_error *err,
	const char *peer)
{
	audit_counted(e, false);
	if (refusals_admit(&e->refusals, clock_mono_us() / 1000,
		e->cfg->audit_unverified_per_minute, revocation, err->code, peer))
		return true;
	refusals_due_timer(e);
	return false;
}

/*
 * withdrawn: the grant's grant.applied line is in the trail already (its group's sync failed);
 * the record says so, so that whoever reads the trail (the activity's rebuild) can tell this
 * refusal from one of the same id resent while the grant stays in force.
 */
void refused_rec(struct enforce *e, const char *what, const char *grant_id,
	const char *peer, const struct jit_error *err, bool withdrawn)
{
	bool revocation = !strcmp(what, "revocation");

	metrics_refused(revocation ? e->metrics.revocations_refused : e->metrics.grants_refused,
		err->code);
	if (!grant_id && !err->authentic && !refusal_audited(e, revocation, err, peer))
		return;
	log_warn("%s refused: %s: %s (peer=%s)", what, jit_err_name(err->code), err->msg, peer);
	(void)audit_rec(e, &(const struct audit_rec){
		.event = revocation ? "revocation.refused" : "grant.refused",
		.grant_id = grant_id,
		.peer = peer,
		.code = jit_err_name(err->code),
		.message = err->msg,
		.count = -1,
		.withdrawn = withdrawn,
	});
}

void refused(struct enforce *e, const char *what, const char *grant_id, const char *peer,
	const struct jit_error *err)
{
	refused_rec(e, what, grant_id, peer, err, false);
}

void enforce_refuse(struct enforce *e, bool revocation, const char *peer,
	const struct jit_error *err)
{
	refused(e, revocation ? "revocation" : "grant", NULL, peer, err);
}

void enforce_refuse_reload(struct enforce *e, const char *peer, const struct jit_error *err)
{
	int64_t minute = clock_mono_us() / 60000000;

	log_warn("reload refused: %s: %s (peer=%s)", jit_err_name(err->code), err->msg, peer);
	/*
	 * A few a minute in the trail, the rest in the log only: members of control_group could
	 * otherwise fill the disk (the grants' per-minute tally would count them as grants).
	 */
	if (minute != e->reload_refused_minute) {
		e->reload_refused_minute = minute;
		e->reload_refused_n = 0;
	}
	if (e->reload_refused_n++ < RELOAD_REFUSALS_AUDITED)
		(void)audit(e, "config.refused", NULL, NULL, peer, err->code, err->msg, -1);
}

static void expire_grants(struct enforce *e, int64_t now);

static void model_expire(struct enforce *e, int64_t now)
{
	const struct elems none = { 0 };

	model_compact(e, &none, now);
}

/*
 * model_too: also drop the model's elements whose time is up. Everything that reads the model
 * passes them over, so a revocation leaves that walk (100,000 elements) to the next tick.
 */
void expire(struct enforce *e, bool model_too)
{
	int64_t now, gap, wall, step;
	char why[64];

	/* Grants still settling are answered first: expiry and revocations remove grants. */
	settle_all(e);
	test_hook_poll();
	now = enforce_now_ms();
	gap = clock_ms(CLOCK_BOOTTIME) - clock_ms(CLOCK_MONOTONIC);
	wall = now - clock_ms(CLOCK_BOOTTIME);
	step = wall - e->wall_gap_ms;

	why[0] = '\0';
	/*
	 * The kernel's element timeouts stood still while the machine was suspended: without this,
	 * a grant with 1 h left, suspended for 2 h, would stay open for 3 h of real time.
	 */
	/*
	 * gap is 0 on a machine that never slept: "not measured yet" needs its own mark. The
	 * baseline moves only when the kernel is read again for it: short suspends add up, each
	 * under SUSPEND_DETECT_MS, until together they are worth the read.
	 */
	if (e->gap_measured && gap - e->suspend_gap_ms > SUSPEND_DETECT_MS) {
		snprintf(why, sizeof(why), "resume after %lld s suspended",
			(long long)(gap - e->suspend_gap_ms + 500) / 1000);
		e->suspend_gap_ms = gap;
	}
	/*
	 * The model's elements end at wall-clock times, the kernel's timeouts and the grants do
	 * not move with the clock: after a step forward the model would drop elements the
	 * kernel still holds, and a revocation would find none to delete. Measured from the
	 * clock as it was at the last read, as suspends are: steps each under STEP_DETECT_MS
	 * (ntpd's of a few hundred ms, a hypervisor's periodic sync) add up until together they
	 * are worth the read.
	 */
	else if (e->gap_measured && (step > STEP_DETECT_MS || step < -STEP_DETECT_MS))
		snprintf(why, sizeof(why), "wall clock stepped %+lld s",
			(long long)(step + (step < 0 ? -500 : 500)) / 1000);
	if (!e->gap_measured)
		e->suspend_gap_ms = gap;
	e->gap_measured = true;
	expire_grants(e, now);
	/* Either: the kernel's elements read again, the model from them. */
	if (why[0]) {
		e->wall_gap_ms = wall;
		log_info("%s: the kernel's elements read again", why);
		(void)enforce_reconcile(e, false, why);
		return;
	}
	if (model_too) {
		int ret;

		model_expire(e, now);
		retry_drops(e);
		if ((ret = replay_tidy(e->replay)))
			log_warn("replay: cannot rewrite replay.db without its dead lines: %s; "
				"trying again in a minute", strerror(-ret));
	}
}

void enforce_expire(struct enforce *e)
{
	expire(e, true);
}

/* Grants that ran out, together: one audit fsync and one journal write for all of them. */
static void expire_grants(struct enforce *e, int64_t now)
{
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	size_t *gone = NULL, n = 0, cap = 0;
	const char **jti = NULL;

	for (size_t i = e->n_grants; i-- > 0;) {
		size_t *ng;

		if (grant_end_ms(e, i, now, boot) > now)
			continue;
		/* Out of memory: the rest wait for the next tick. */
		if (!(ng = array_reserve(gone, &cap, n + 1, sizeof(*ng), 64)))
			break;
		gone = ng;
		gone[n++] = i;
	}
	if (!n || !(jti = calloc(n, sizeof(*jti)))) {
		free(gone);
		return;
	}
	audit_defer(e->audit, true);
	for (size_t k = 0; k < n; k++) {
		const struct grant *g = &e->grants[gone[k]];

		log_info("grant expired: jti=%s sub=%s", g->jti, g->sub);
		(void)audit(e, "grant.expired", g, NULL, NULL, 0, NULL, -1);
		jti[k] = g->jti;
	}
	audit_deferred_sync(e);
	/*
	 * Retried every second until the journal takes them, as a revocation's: left behind, a
	 * record restores its grant at a start whose clock was stepped back, and is audited
	 * as expired a second time at any other.
	 */
	drop_records(e, jti, n);
	/* Highest index first: grants_remove moves the last grant into the hole. */
	for (size_t k = 0; k < n; k++)
		grants_remove(e, gone[k]);
	e->metrics.grants_expired += n;
	free(jti);
	free(gone);
}

ssize_t find_index(const struct enforce *e, const char *jti)
{
	uint32_t h = jti_hash(jti);

	for (size_t i = 0; i < e->n_grants; i++)
		if (e->keys[i].jti_hash == h && !strcmp(e->grants[i].jti, jti))
			return (ssize_t)i;
	return -1;
}

int enforce_open(const struct enforce_deps *d, struct enforce **out, char *err, size_t errlen)
{
	const char *differs;
	struct enforce *e;
	uint64_t commits;
	size_t refilled;
	bool have_gen;
	uint32_t gen;
	int ret;

	*out = NULL;
	snprintf(err, errlen, "%s", "");
	e = calloc(1, sizeof(*e));
	if (!e)
		return -ENOMEM;
	e->cfg = e->started_cfg = d->cfg;
	e->unsure = true; /* until the kernel has been read in full */
	/* Test builds: a clock step (or suspend) written before the start is the restore's too. */
	test_hook_poll();
	refusals_init(&e->refusals, test_hook_refusals_window());
	e->config_path = d->config_path;
	e->nft = d->nft;
	e->store = d->store;
	store_set_compact_guard(e->store, trail_durable, e);
	e->replay = d->replay;
	e->audit = d->audit;
	e->activity = d->activity;
	e->ct = d->ct;
	/* What store_open found, before the restore removes what it cost from the kernel. */
	audit_state_damage(e);
	e->started = enforce_now_ms() / 1000;
	e->started_boot_ms = clock_ms(CLOCK_BOOTTIME);
	e->metrics.reload_applied_at = e->started;
	if (e->cfg->table_owner)
		e->table_flags = RULESET_TABLE_F_OWNER | RULESET_TABLE_F_PERSIST;
	/*
	 * The generation before the table is read: a table found in place is left as it is (a
	 * claim at most, often nothing sent), so a change someone makes after this read is seen
	 * only by the generations (below).
	 */
	have_gen = nft_gen_id(e->nft, &gen) == 0;
	commits = e->commits;
	ret = ruleset_in_place(e->nft, e->cfg, e->table_flags, true, &differs);
	if (ret < 0) {
		snprintf(err, errlen, "reading table inet jitd: %s", strerror(-ret));
		goto fail;
	}
	e->in_place = ret == 1;
	if (e->in_place) {
		log_info("table inet jitd is in place: left as it is");
		test_hook_pause("JITD_TEST_PLACE_PAUSE_FILE");
	} else if (strcmp(differs, "table inet jitd is missing"))
		log_info("table inet jitd: %s; bringing it in line (one transaction)", differs);
	ret = build_table(e, false, &refilled, err, errlen);
	e->in_place = false; /* from here on a rebuild rebuilds */
	if (ret)
		goto fail;
	if ((ret = restore(e, d->verify_threads, err, errlen)))
		goto fail;
	/* The clocks as the restore left the model: a step before the first tick is one too. */
	e->suspend_gap_ms = clock_ms(CLOCK_BOOTTIME) - clock_ms(CLOCK_MONOTONIC);
	e->wall_gap_ms = enforce_now_ms() - clock_ms(CLOCK_BOOTTIME);
	e->gap_measured = true;
	/*
	 * The table's read and the restore's (every grant set, left in line) stand for a full
	 * check if the generations since the first are jitd's own transactions, none of anyone
	 * else's in between: each transaction adds exactly one.
	 */
	if (have_gen && !e->strays.n && !e->model_lost && nft_gen_id(e->nft, &e->start_gen) == 0 &&
		e->start_gen - gen == e->commits - commits) {
		e->start_gen_known = true;
		e->unsure = false;
	}
	test_hook_pause("JITD_TEST_START_PAUSE_FILE");
	if (!(e->group_timer = evtimer_new(d->base, group_timer_cb, e)) ||
		!(e->trail_timer = evtimer_new(d->base, trail_timer_cb, e)) ||
		!(e->refusals_timer = evtimer_new(d->base, refusals_timer_cb, e)) ||
		!(e->damage_event = event_new(d->base, -1, 0, damage_event_cb, e))) {
		ret = -ENOMEM;
		goto fail;
	}
	/* What the restore's own writes found, then whatever is found from now on. */
	audit_state_damage(e);
	store_set_damage_hook(e->store, damage_found, e);
	if ((ret = verifier_open(d->base, d->verify_threads, verified_cb, e, &e->verifier))) {
		snprintf(err, errlen, "cannot start the verification threads: %s", strerror(-ret));
		goto fail;
	}
	if ((ret = syncer_open(d->base, synced_cb, e, &e->syncer))) {
		snprintf(err, errlen, "cannot start the sync thread: %s", strerror(-ret));
		goto fail;
	}
	*out = e;
	return 0;
fail:
	enforce_close(&e);
	return ret;
}

void enforce_close(struct enforce **e)
{
	if (!e || !*e)
		return;
	cancel_pending(*e);
	if ((*e)->audit)
		audit_counted(*e, true);
	/* Committed groups are answered once durable, as ever; the trail is audit_close's. */
	(*e)->closing = true;
	syncer_close(&(*e)->syncer);
	/* After the syncer's last answers, whose writes may have found damage too. */
	if ((*e)->audit && (*e)->store)
		audit_state_damage(*e);
	if ((*e)->store) {
		store_set_compact_guard((*e)->store, NULL, NULL);
		store_set_damage_hook((*e)->store, NULL, NULL);
	}
	if ((*e)->group_timer)
		event_free((*e)->group_timer);
	if ((*e)->trail_timer)
		event_free((*e)->trail_timer);
	if ((*e)->refusals_timer)
		event_free((*e)->refusals_timer);
	if ((*e)->damage_event)
		event_free((*e)->damage_event);
	for (size_t i = 0; i < (*e)->n_grants; i++)
		grant_clear(&(*e)->grants[i]);
	for (size_t i = 0; i < (*e)->n_undropped; i++)
		free((*e)->undropped[i]);
	free((*e)->undropped);
	free((*e)->grants);
	free((*e)->deadline);
	free((*e)->keys);
	config_free((*e)->owned_cfg);
	elems_free(&(*e)->model);
	free((*e)->strays.v);
	free(*e);
	*e = NULL;
}

void enforce_set_endpoint_hook(struct enforce *e, const struct enforce_endpoint_hook *hook)
{
	if (hook)
		e->endpoint_hook = *hook;
	else
		memset(&e->endpoint_hook, 0, sizeof(e->endpoint_hook));
}

json_t *enforce_endpoint_json(const struct enforce *e, int64_t now)
{
	if (!e->endpoint_hook.describe)
		return json_null();
	return e->endpoint_hook.describe(e->endpoint_hook.arg, now);
}

const struct config *enforce_config(const struct enforce *e)
{
	return e->cfg;
}

const struct grant *enforce_grants(const struct enforce *e, size_t *n)
{
	*n = e->n_grants;
	return e->grants;
}

const struct ruleset_elem *enforce_model(const struct enforce *e, size_t *n)
{
	*n = e->model.n;
	return e->model.v;
}

struct nft *enforce_nft(const struct enforce *e)
{
	return e->nft;
}

bool enforce_unsure(const struct enforce *e)
{
	return e->unsure;
}

bool enforce_in_doubt(const struct enforce *e)
{
	return e->doubt;
}

bool enforce_start_gen(const struct enforce *e, uint32_t *gen)
{
	*gen = e->start_gen;
	return e->start_gen_known;
}

struct audit *enforce_audit(const struct enforce *e)
{
	return e->audit;
}

struct conntrack *enforce_conntrack(const struct enforce *e)
{
	return e->ct;
}

struct activity *enforce_activity(const struct enforce *e)
{
	return e->activity;
}

const char *enforce_config_path(const struct enforce *e)
{
	return e->config_path;
}

bool enforce_table_owned(const struct enforce *e)
{
	return e->table_flags != 0;
}

const struct metrics *enforce_metrics(const struct enforce *e)
{
	return &e->metrics;
}

void enforce_clients(struct enforce *e, int delta)
{
	e->clients += (unsigned)delta;
}

void enforce_queue(const struct enforce *e, size_t *verifying, size_t *waiting)
{
	*verifying = e->in_flight;
	*waiting = e->n_ready;
}

int64_t enforce_started(const struct enforce *e)
{
	return e->started;
}

int64_t enforce_uptime(const struct enforce *e)
{
	return (clock_ms(CLOCK_BOOTTIME) - e->started_boot_ms) / 1000;
}

const char *enforce_last_error(const struct enforce *e)
{
	return e->last_error;
}

const char *enforce_restart_pending(const struct enforce *e)
{
	return e->restart_pending;
}

size_t enforce_restart_pending_count(const struct enforce *e)
{
	const char *p = e->restart_pending;
	size_t n = *p != '\0';

	for (; *p; p++)
		n += *p == ' ';
	return n;
}

int64_t enforce_config_loaded_at(const struct enforce *e)
{
	return e->metrics.reload_applied_at;
}

const char *enforce_reload_refused(const struct enforce *e, int64_t *at)
{
	*at = e->reload_refused_at;
	return e->reload_refused[0] ? e->reload_refused : NULL;
}

const struct store_damage *enforce_state_damage(const struct enforce *e)
{
	return store_damage(e->store);
}
