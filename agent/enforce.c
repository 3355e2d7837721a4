#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>

#include <event2/event.h>
#include <libnftnl/set.h>
#include <openssl/rand.h>

#include "agent/activity.h"
#include "agent/audit.h"
#include "agent/conntrack.h"
#include "agent/dnat.h"
#include "agent/enforce.h"
#include "agent/fdbudget.h"
#include "agent/group.h"
#include "agent/lockdown.h"
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
#include "common/jws.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/policy.h"
#include "common/revoke.h"

/*
 * A kernel element re-read after a restart carries its remaining time, not the grant's exact
 * expiry; within this tolerance it is the same element and is left alone.
 */
#define EXP_TOLERANCE_MS 1500
/* A jump of CLOCK_BOOTTIME over CLOCK_MONOTONIC this large between two ticks is a suspend. */
#define SUSPEND_DETECT_MS 2000
/* And of the wall clock against CLOCK_BOOTTIME, either way, a step of the wall clock. */
#define STEP_DETECT_MS 2000
/* A grant with less time left than this would be gone before the kernel saw it. */
#define MIN_TIME_LEFT_MS 1000
/* Commits that race an element's own expiry (ENOENT/EEXIST) are retried after a resync. */
#define COMMIT_ATTEMPTS 4
/* Reloads refused to members of control_group that the trail records each minute. */
#define RELOAD_REFUSALS_AUDITED 10

/* The elements one change can touch: one set's (protocol, port). Compared with memcmp. */
struct group {
	int family;
	uint8_t kind;	 /* enum ruleset_kind */
	uint8_t ipproto;
	uint16_t port;	 /* for RULESET_DNAT: the gateway's port */
};

struct elems {
	struct ruleset_elem *v;
	size_t n, cap;
};

struct raws {
	struct ruleset_raw *v;
	size_t n, cap;
};

#ifdef JITD_TEST_HOOKS
/*
 * Test builds only (-DJITD_TEST_HOOKS=ON; never in packages): a test cannot suspend the machine,
 * so it writes a number of milliseconds to $JITD_TEST_SUSPEND_FILE and jitd's wall clock and
 * CLOCK_BOOTTIME jump ahead by it, as after a suspend; CLOCK_MONOTONIC and the kernel's element
 * timeouts do not.
 */
static int64_t test_suspended_ms, test_stepped_ms;

/* The number in the file $env names, once: the file is removed. 0 when there is none. */
static long long test_hook_read(const char *env)
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
 * $JITD_TEST_START_PAUSE_FILE holding N (at most 10,000): jitd sleeps N ms after its restore,
 * before the events are heard, so that a test can change the ruleset in between. The same
 * with $JITD_TEST_PLACE_PAUSE_FILE after a start found its table in place, before the restore,
 * $JITD_TEST_REVOKE_PAUSE_FILE after a revoked grant's record is dropped, before the kernel
 * changes, and $JITD_TEST_APPLY_PAUSE_FILE after a group's records are written, before the
 * kernel changes, so that a test can kill jitd in between.
 */
static void test_hook_pause(const char *name)
{
	long long ms = test_hook_read(name);

	if (ms > 0 && ms <= 10000)
		(void)usleep((useconds_t)(ms * 1000));
}

/*
 * $JITD_TEST_TRAIL_FAIL_FILE present: the audit trail's syncs behind the journal (the timer's)
 * and its recovery after one fail with EIO, as on a disk that lost what they were to write.
 */
static int test_hook_trail(int ret)
{
	return testhook_exists("JITD_TEST_TRAIL_FAIL_FILE") ? -EIO : ret;
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

static int test_hook_sync(int ret)
{
	return ret;
}

static bool test_hook_hold(void)
{
	return false;
}

static void test_hook_pause(const char *name)
{
	(void)name;
}

static int64_t test_hook_refusals_window(void)
{
	return REFUSALS_WINDOW_MS;
}

static int test_hook_trail(int ret)
{
	return ret;
}
#endif

struct rerec;

struct enforce {
	const struct config *cfg;
	const char *config_path;
	struct nft *nft;
	struct store *store;
	struct replay *replay;
	struct audit *audit;
	struct activity *activity;
	struct conntrack *ct;
	int64_t started;
	int64_t started_boot_ms;	/* uptime's start: the wall clock may step */
	int64_t undurable_warned_us;	/* sync_before_drop's last warning (monotonic) */
	/* Room for a kernel's or a refused reload's reason (NFT_ERRLEN) and words before it. */
	char last_error[NFT_ERRLEN + 128];
	struct grant *grants;
	/*
	 * Per grant, when it ends on CLOCK_BOOTTIME (ms), fixed when it was applied: the kernel's
	 * timeouts do not follow wall-clock steps, and neither may jitd's idea of the time left.
	 */
	int64_t *deadline;
	/* Per grant, what a scan of every grant compares first (see grant_key). */
	struct grant_key *keys;
	size_t n_grants, cap_grants;
	int64_t suspend_gap_ms;	/* CLOCK_BOOTTIME - CLOCK_MONOTONIC when last read in line */
	int64_t wall_gap_ms;	/* the wall clock - CLOCK_BOOTTIME when last read in line */
	struct config *owned_cfg;	/* a reloaded config (the first one is the caller's) */
	const struct config *started_cfg; /* the caller's: what restart-only settings still are */
	char restart_pending[RESTART_PENDING_LEN]; /* those the file changed (restart_only) */
	char reload_refused[256];	/* why the last reload was refused; "" if it was applied */
	int64_t reload_refused_at;	/* when (seconds since the epoch) */
	struct enforce_endpoint_hook endpoint_hook;
	uint32_t table_flags;		/* RULESET_TABLE_F_OWNER | _PERSIST, or 0 */
	bool gap_measured;
	struct elems model;
	struct raws strays;	/* elements read back that jitd cannot have written: to remove */
	struct metrics metrics;
	bool repairing;		/* the start-up restore: its changes are drift repairs */
	/*
	 * The kernel may differ from the model: a transaction was refused (a removal may not have
	 * happened) or a check left something behind. Cleared by a check that ends in line, or a
	 * start-up restore that stands for one (enforce_open).
	 */
	bool unsure;
	bool model_lost;	/* the model could not follow a commit: unsure until a full read */
	/*
	 * A change failed for good, or the model lost the kernel: until a full read has put
	 * things right, status does not call the kernel in sync (unsure is also set by races
	 * with expiry that a re-read and a retry settled).
	 */
	bool doubt;
	bool unanswered;	/* the last commit failed without the kernel's verdict */
	/* Transactions the kernel took, and the generation the start-up restore left (see there). */
	uint64_t commits;
	uint32_t start_gen;
	bool start_gen_known;
	bool in_place;		/* at start: the kernel's table is already what cfg wants */
	bool no_mark;		/* the kernel keeps no table user data: the mark is not asked */
	bool mark_kept;		/* it does (a table read back with its mark): not asked again */
	/* During restore: gateway ports taken so far, and grants whose ports must be recorded anew. */
	struct dnat_used *restore_used;
	struct dnat_used *restore_reserved;	/* every record's recorded ports */
	struct rerec *rerecord;
	size_t n_rerecord, cap_rerecord;
	/* Ids of grants gone from the books and the kernel whose records could not be dropped. */
	char **undropped;
	size_t n_undropped, cap_undropped;
	/* Group commit: grants being verified, and verified ones waiting for their group. */
	struct verifier *verifier;
	struct event *group_timer;
	size_t in_flight, n_ready;
	struct pending *ready, *ready_tail;
	unsigned clients;	/* connected to the control socket or the controller endpoint */
	/* Groups committed and waiting for their files to be durable, to be answered. */
	struct syncer *syncer;
	struct settling *settling;
	/*
	 * The audit trail's own fdatasync, for groups whose lines the journal carries (notes):
	 * the timer's (sync_audit_behind); mark is where the journal was when it took the trail's
	 * fd, and so which notes it makes redundant.
	 */
	struct event *trail_timer;
	struct sync_req audit_req;
	struct store_mark audit_mark;
	bool audit_syncing, closing;
	int64_t trail_restored_us;	/* when trail_restore last ran (monotonic) */
	int64_t trail_restore_wait_ms;	/* before it runs again: doubles while it fails */
	/* Refusals that name no grant, beyond audit.unverified_per_minute: counted (refused). */
	struct refusals refusals;
	/* Reloads refused to members of control_group this minute (enforce_refuse_reload). */
	int64_t reload_refused_minute;
	unsigned reload_refused_n;
	struct event *refusals_timer;
	struct event *damage_event;	/* the store found damage: audit it from the loop */
	unsigned long damage_audited;	/* the store's findings audited so far */
	bool settling_all;	/* in settle_all: answering groups, committing none */
};

/*
 * A grant's strings and arrays live in a block of their own: at 100,000 grants a scan that
 * reads each grant's jti or sources takes a cache miss per grant (a revocation's two scans,
 * find_index and touched_by_grant, took about 15 ms of its 22). These sit side by side with
 * the grants and are read in order; eight bytes a grant, as RSS at 100,000 grants has a
 * limit (a whole source here cost 4 MB of it).
 */
struct grant_key {
	uint32_t jti_hash;
	/* A host grant (no dst) whose one source is one address: addr_hash of it; else 0. */
	uint32_t addr_hash;
};

/* FNV-1a, 32 bits. */
static uint32_t fnv1a(uint32_t h, const void *p, size_t len)
{
	const uint8_t *b = p;

	for (size_t i = 0; i < len; i++)
		h = (h ^ b[i]) * 16777619u;
	return h;
}

static uint32_t jti_hash(const char *jti)
{
	return fnv1a(2166136261u, jti, strlen(jti));
}

/* Never 0, which says "not one address". */
static uint32_t addr_hash(int family, const uint8_t *addr)
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

static int64_t clock_ms(clockid_t id)
{
	struct timespec ts;

	clock_gettime(id, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000 +
		(id == CLOCK_BOOTTIME ? test_suspended_ms : 0);
}

/*
 * When grant i's access ends, in wall-clock ms: the time it had left when it was applied,
 * counted on CLOCK_BOOTTIME from then, as the kernel counts its timeout except that suspended
 * time counts too. A wall clock stepped forward or back after that changes nothing: the grant
 * keeps its time (new grants are judged by the clock as it is, with clock_skew).
 */
static int64_t grant_end_ms(const struct enforce *e, size_t i, int64_t now_ms,
	int64_t boot_ms)
{
	return now_ms + (e->deadline[i] - boot_ms);
}

/*
 * The wall clock, in s, as grant i's own time runs: exp less the time it has left. The new
 * policy judges what the grant still holds (a clock stepped back since it was applied would
 * have it ask for more than its maximum, one stepped forward for less).
 */
static int64_t grant_now_s(const struct enforce *e, size_t i, int64_t boot_ms)
{
	int64_t left = e->deadline[i] - boot_ms;

	return e->grants[i].exp - (left > 0 ? left / 1000 : 0);
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

static int elems_push(struct elems *v, const struct ruleset_elem *e)
{
	struct ruleset_elem *nv = array_reserve(v->v, &v->cap, v->n + 1, sizeof(*nv), 64);

	if (!nv)
		return -ENOMEM;
	v->v = nv;
	v->v[v->n++] = *e;
	return 0;
}

static int raws_push(struct raws *r, const struct ruleset_raw *x)
{
	struct ruleset_raw *nv = array_reserve(r->v, &r->cap, r->n + 1, sizeof(*nv), 8);

	if (!nv)
		return -ENOMEM;
	r->v = nv;
	r->v[r->n++] = *x;
	return 0;
}

static void elems_free(struct elems *v)
{
	free(v->v);
	memset(v, 0, sizeof(*v));
}

/* Sorts v as the model is, unless it already is (a plan's elements nearly always are). */
static void elems_sort(struct elems *v)
{
	for (size_t i = 1; i < v->n; i++) {
		if (ruleset_elem_cmp(&v->v[i - 1], &v->v[i]) > 0) {
			qsort(v->v, v->n, sizeof(*v->v), ruleset_elem_cmp);
			return;
		}
	}
}

/*
 * The model stays sorted by group, then address: a new grant's neighbours, and the elements
 * covering a grant, are then found by binary search instead of a walk over every element.
 */
static void model_sort(struct enforce *e)
{
	elems_sort(&e->model);
}

/* Index of the first model element not ordered before key. */
static size_t model_lower(const struct enforce *e, const struct ruleset_elem *key)
{
	return ruleset_elem_lower(e->model.v, e->model.n, key);
}

static bool in_group(const struct ruleset_elem *e, const struct group *g)
{
	return e->kind == g->kind && e->family == g->family && e->ipproto == g->ipproto &&
		e->port == g->port;
}

static struct group group_of(const struct ruleset_elem *e)
{
	struct group g;

	memset(&g, 0, sizeof(g)); /* compared with memcmp: padding too */
	g.family = e->family;
	g.kind = e->kind;
	g.ipproto = e->ipproto;
	g.port = e->port;
	return g;
}

/* A host or forward grant naming g's (protocol, port); *port_idx is which of its ports. */
static bool grant_in_group(const struct grant *gr, const struct group *g, size_t *port_idx)
{
	if ((gr->n_dst > 0) != (g->kind == RULESET_FORWARD))
		return false;
	for (size_t i = 0; i < gr->n_ports; i++) {
		if (gr->ports[i].port == g->port &&
			port_proto_ipproto(gr->ports[i].proto) == g->ipproto) {
			*port_idx = i;
			return true;
		}
	}
	return false;
}

/*
 * Host elements of one address sort by address; two grants from the same address are one
 * element that lasts as long as the longer of them.
 */
static int cmp_span_lo(const void *a, const void *b)
{
	const struct span *x = a, *y = b;
	int c = memcmp(x->lo, y->lo, 16);

	return c ? c : (x->exp_ms > y->exp_ms) - (x->exp_ms < y->exp_ms);
}

/* Sorts v and keeps one span per address, the one lasting longest; returns how many. */
static size_t one_per_address(struct span *v, size_t n)
{
	size_t k = 0;

	qsort(v, n, sizeof(*v), cmp_span_lo);
	for (size_t i = 0; i < n; i++) {
		/* Sorted by expiry within an address: the last of a run is the longest. */
		if (k > 0 && !memcmp(v[k - 1].lo, v[i].lo, 16))
			k--;
		v[k++] = v[i];
	}
	return k;
}

/*
 * What the kernel must hold for one group, sorted by address (ruleset_elem_cmp_addrs). A host
 * group's are ranges of one kind, family, protocol and port, kept as spans: 40 bytes each
 * against an element's 88, and a restore plans 100,000 of them. The others (gateway grants,
 * few) are elements.
 */
struct wants {
	struct span *spans;
	struct elems elems;
	size_t n;
};

static void wants_free(struct wants *w)
{
	free(w->spans);
	elems_free(&w->elems);
}

/* The element group g wants j-th. */
static void want_at(const struct wants *w, const struct group *g, size_t j,
	struct ruleset_elem *re)
{
	size_t alen = g->family == AF_INET ? 4 : 16;

	if (!w->spans) {
		*re = w->elems.v[j];
		return;
	}
	memset(re, 0, sizeof(*re));
	re->kind = g->kind;
	re->family = g->family;
	re->ipproto = g->ipproto;
	re->port = g->port;
	re->exp_ms = w->spans[j].exp_ms;
	memcpy(re->lo, w->spans[j].lo, alen);
	memcpy(re->hi, w->spans[j].hi, alen);
}

/*
 * A host group, from every live grant: its sources of one address (RULESET_HOST_ADDR) or its
 * wider ones as disjoint ranges (RULESET_HOST), sorted.
 */
static int desired_host(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct wants *out)
{
	size_t alen = g->family == AF_INET ? 4 : 16, n = 0, nout = 0, cap = 0, pi;
	/* Once per plan, not per grant: this loop runs over every grant on each submit. */
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	struct span *in = NULL, *res = NULL;
	int ret = 0;

	for (size_t i = 0; i < e->n_grants; i++)
		if (grant_in_group(&e->grants[i], g, &pi))
			cap += e->grants[i].n_src;
	in = calloc(cap ? cap : 1, sizeof(*in));
	if (!in)
		return -ENOMEM;
	for (size_t i = 0; i < e->n_grants; i++) {
		const struct grant *gr = &e->grants[i];

		int64_t end = grant_end_ms(e, i, now_ms, boot);

		if (!grant_in_group(gr, g, &pi) || end <= now_ms)
			continue;
		for (size_t s = 0; s < gr->n_src; s++) {
			if (gr->src[s].family != g->family ||
				ruleset_host_kind(&gr->src[s]) != g->kind)
				continue;
			prefix_range(&gr->src[s], in[n].lo, in[n].hi);
			in[n++].exp_ms = end;
		}
	}
	if (g->kind == RULESET_HOST_ADDR) {
		nout = one_per_address(in, n);
		res = in;
		in = NULL;
	} else {
		ret = ranges_disjoint(in, n, alen, &res, &nout);
	}
	free(in);
	out->spans = res;
	out->n = nout;
	return ret;
}

/*
 * A forward group: every live grant's sources x destinations of g's family, as disjoint boxes
 * (the kernel refuses overlapping elements in one set, in any dimension).
 */
static int desired_forward(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct elems *out)
{
	size_t alen = g->family == AF_INET ? 4 : 16, n = 0, nout = 0, cap = 0, pi;
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	struct box *in = NULL, *res = NULL;
	int ret;

	for (size_t i = 0; i < e->n_grants; i++)
		if (grant_in_group(&e->grants[i], g, &pi))
			cap += e->grants[i].n_src * e->grants[i].n_dst;
	if (!(in = calloc(cap ? cap : 1, sizeof(*in))))
		return -ENOMEM;
	for (size_t i = 0; i < e->n_grants; i++) {
		const struct grant *gr = &e->grants[i];
		int64_t end = grant_end_ms(e, i, now_ms, boot);

		if (!grant_in_group(gr, g, &pi) || end <= now_ms)
			continue;
		for (size_t d = 0; d < gr->n_dst; d++) {
			if (gr->dst[d].family != g->family)
				continue;
			for (size_t s = 0; s < gr->n_src; s++) {
				if (gr->src[s].family != g->family)
					continue;
				prefix_range(&gr->src[s], in[n].lo, in[n].hi);
				prefix_range(&gr->dst[d], in[n].dlo, in[n].dhi);
				in[n++].exp_ms = end;
			}
		}
	}
	ret = ranges_disjoint2(in, n, alen, &res, &nout);
	for (size_t i = 0; ret == 0 && i < nout; i++) {
		struct ruleset_elem re = { .kind = RULESET_FORWARD, .family = g->family,
			.ipproto = g->ipproto, .port = g->port, .exp_ms = res[i].exp_ms };

		memcpy(re.lo, res[i].lo, alen);
		memcpy(re.hi, res[i].hi, alen);
		memcpy(re.dlo, res[i].dlo, alen);
		memcpy(re.dhi, res[i].dhi, alen);
		ret = elems_push(out, &re);
	}
	free(res);
	free(in);
	return ret;
}

/*
 * A dnat group is one gateway port, so one grant's: its IPv4 sources (made disjoint: they may
 * nest) mapped to the pair's machine and port.
 */
static int desired_dnat(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct elems *out)
{
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	struct dnat_pair pairs[DNAT_MAX_PAIRS];
	int ret = 0;

	for (size_t i = 0; ret == 0 && i < e->n_grants; i++) {
		const struct grant *gr = &e->grants[i];
		int64_t end = grant_end_ms(e, i, now_ms, boot);
		struct span in[GRANT_MAX_SOURCES], *res = NULL;
		size_t n = 0, nout = 0, k;

		for (k = 0; k < gr->n_dnat_ports && gr->dnat_ports[k] != g->port; k++)
			;
		if (k == gr->n_dnat_ports || end <= now_ms)
			continue;
		if (!dnat_granted(e->cfg, gr, pairs) ||
			port_proto_ipproto(gr->ports[pairs[k].port_idx].proto) != g->ipproto)
			continue;
		for (size_t s = 0; s < gr->n_src; s++) {
			if (gr->src[s].family != AF_INET)
				continue;
			prefix_range(&gr->src[s], in[n].lo, in[n].hi);
			in[n++].exp_ms = end;
		}
		ret = ranges_disjoint(in, n, 4, &res, &nout);
		for (size_t j = 0; ret == 0 && j < nout; j++) {
			struct ruleset_elem re = { .kind = RULESET_DNAT, .family = AF_INET,
				.ipproto = g->ipproto, .port = g->port,
				.to_port = gr->ports[pairs[k].port_idx].port, .exp_ms = end };

			memcpy(re.lo, res[j].lo, 4);
			memcpy(re.hi, res[j].hi, 4);
			memcpy(re.dlo, gr->dst[pairs[k].dst_idx].addr, 4);
			memcpy(re.dhi, re.dlo, 4);
			ret = elems_push(out, &re);
		}
		free(res);
	}
	return ret;
}

/* What the kernel must hold for group g, in out (zeroed; wants_free frees it either way). */
static int desired(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct wants *out)
{
	int ret;

	memset(out, 0, sizeof(*out));
	if (g->kind != RULESET_FORWARD && g->kind != RULESET_DNAT)
		return desired_host(e, g, now_ms, out);
	ret = g->kind == RULESET_FORWARD ? desired_forward(e, g, now_ms, &out->elems) :
					   desired_dnat(e, g, now_ms, &out->elems);
	out->n = out->elems.n;
	if (out->n)
		qsort(out->elems.v, out->n, sizeof(*out->elems.v), ruleset_elem_cmp_addrs);
	return ret;
}

static bool same_elem(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	int64_t d = a->exp_ms - b->exp_ms;

	return !memcmp(a->lo, b->lo, 16) && !memcmp(a->hi, b->hi, 16) &&
		!memcmp(a->dlo, b->dlo, 16) && !memcmp(a->dhi, b->dhi, 16) &&
		a->to_port == b->to_port && d <= EXP_TOLERANCE_MS && d >= -EXP_TOLERANCE_MS;
}

/*
 * What a commit deletes and adds; the model follows it in place (model_apply). removed: host
 * elements among del whose range the wanted ones do not cover whole, access ended rather than
 * reshaped or given another timeout.
 */
struct plan {
	struct elems del, add;
	size_t removed;
};

/* Whether a and b (one group) share an address: their source ranges overlap. */
static bool overlap(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	size_t alen = a->family == AF_INET ? 4 : 16;

	return memcmp(a->hi, b->lo, alen) >= 0 && memcmp(b->hi, a->lo, alen) >= 0;
}

static void plan_free(struct plan *p)
{
	elems_free(&p->del);
	elems_free(&p->add);
}

/* addr (alen bytes, big-endian) plus one; the caller knows it is not the last address. */
static void addr_next(uint8_t *addr, size_t alen)
{
	for (size_t i = alen; i-- > 0 && !++addr[i];)
		;
}

/*
 * Whether a host element plan_group deletes before the j-th wanted one (in address order) ends
 * access to part of its range: the wanted elements do not cover all of it. Both sides are
 * disjoint ranges in one dimension: the wanted ones from j - 1 on, up to the first that reaches
 * its end, are the only ones that can (each is looked at for at most two deleted elements, the
 * ones its ends fall in). Gateway elements (boxes, mappings) are not counted.
 */
static bool host_removal(const struct wants *w, const struct group *g, size_t j,
	const struct ruleset_elem *have)
{
	size_t alen = g->family == AF_INET ? 4 : 16;
	struct ruleset_elem want;
	uint8_t from[16];

	if (g->kind != RULESET_HOST && g->kind != RULESET_HOST_ADDR)
		return false;
	/* from: the first address of have's range not yet found covered. */
	memcpy(from, have->lo, alen);
	for (size_t k = j ? j - 1 : 0; k < w->n; k++) {
		want_at(w, g, k, &want);
		if (memcmp(want.hi, from, alen) < 0)
			continue;
		if (memcmp(want.lo, from, alen) > 0)
			return true;
		if (memcmp(want.hi, have->hi, alen) >= 0)
			return false;
		/* want ends inside have's range, so one past it is an address: no carry out. */
		memcpy(from, want.hi, alen);
		addr_next(from, alen);
	}
	return true;
}

/*
 * Diffs one group: model elements that match a wanted one stay untouched, the rest are deleted,
 * wanted ones not yet in the kernel are added. An element whose time is up is neither kept
 * nor deleted: the kernel is removing it on its own. Both sides are disjoint ranges, so one
 * walk over both sorted by address finds every match: this runs on every commit, over every
 * element of the group. The model is sorted by group, then address (model_sort): the group's
 * elements are one run of it, walked in place rather than copied. No new model is built beside
 * the old one: model_apply brings the old one along after the commit.
 */
static int plan_group(const struct enforce *e, const struct group *g, int64_t now_ms,
	struct plan *p)
{
	const struct ruleset_elem key = { .kind = g->kind, .family = g->family,
		.ipproto = g->ipproto, .port = g->port };
	const struct ruleset_elem *have = e->model.v;
	size_t i = model_lower(e, &key), nh, j = 0;
	struct ruleset_elem want;
	struct wants w;
	int ret;

	if ((ret = desired(e, g, now_ms, &w)))
		goto out;
	for (nh = i; nh < e->model.n && in_group(&have[nh], g); nh++)
		;
	while (ret == 0 && (i < nh || j < w.n)) {
		int c;

		if (j < w.n)
			want_at(&w, g, j, &want);
		c = i == nh ? 1 : j == w.n ? -1 : ruleset_elem_cmp_addrs(&have[i], &want);
		if (i < nh && have[i].exp_ms <= now_ms) {
			i++;
		} else if (c < 0) {
			p->removed += host_removal(&w, g, j, &have[i]);
			ret = elems_push(&p->del, &have[i++]);
		} else if (c > 0) {
			ret = elems_push(&p->add, &want);
			j++;
		} else if (same_elem(&have[i], &want)) {
			i++;
			j++;
		} else {
			/* Same range, another timeout: replaced in the same transaction. */
			if (!(ret = elems_push(&p->del, &have[i++])))
				ret = elems_push(&p->add, &want);
			j++;
		}
	}
out:
	wants_free(&w);
	return ret;
}

/* Elements outside the groups being changed carry over as they are: only groups are planned. */
static int plan_build(const struct enforce *e, const struct group *groups, size_t n_groups,
	int64_t now_ms, struct plan *p)
{
	int ret = 0;

	memset(p, 0, sizeof(*p));
	for (size_t g = 0; ret == 0 && g < n_groups; g++)
		ret = plan_group(e, &groups[g], now_ms, p);
	if (ret)
		plan_free(p);
	return ret;
}

struct reading {
	struct enforce *e;
	struct elems elems;
};

static int read_cb(void *arg, const char *set, const struct ruleset_elem *re,
	const struct ruleset_raw *raw)
{
	struct reading *r = arg;

	if (re)
		return elems_push(&r->elems, re);
	/*
	 * Something jitd cannot have written (a range of ports, an address in another address's
	 * set, no timeout) stays out of the model, which could not describe it, and is removed by
	 * its exact keys: nothing in jitd's sets opens what no grant stands for.
	 */
	if (raw)
		return raws_push(&r->e->strays, raw);
	log_warn("kernel: %s holds an element jitd cannot read", set);
	return 0;
}

static void read_restart(void *arg)
{
	struct reading *r = arg;

	r->elems.n = 0;
	r->e->strays.n = 0;
}

/* Re-reads what the kernel really holds: the model after a refused commit or at start. */
static int resync(struct enforce *e)
{
	struct reading r = { .e = e };
	/* One moment for the model's ends and the step baseline (a step during the read). */
	int64_t now = enforce_now_ms(), boot = clock_ms(CLOCK_BOOTTIME);
	int ret;

	e->strays.n = 0;
	ret = ruleset_read_grants(e->nft, e->cfg, now, read_cb, read_restart, &r);
	if (ret) {
		elems_free(&r.elems);
		return ret;
	}
	elems_free(&e->model);
	e->model = r.elems;
	model_sort(e);
	e->model_lost = false;
	/* The model's ends are the kernel's, by the wall clock then: steps count from there. */
	e->wall_gap_ms = now - boot;
	return 0;
}

/*
 * Every transaction of the enforcer: a refused one leaves it unsure of the kernel, and one
 * the kernel did not answer leaves it not knowing whether the batch was applied (unanswered).
 */
static int commit_batch(struct enforce *e, struct nft_batch *b, char *kerr)
{
	int ret = nft_batch_commit(b, kerr);

	e->unanswered = ret && nft_batch_unanswered(b);
	if (ret)
		e->unsure = true;
	else if (nft_batch_count(b))
		e->commits++;	/* an empty batch sends nothing: no generation */
	return ret;
}

#ifdef JITD_TEST_HOOKS
/*
 * Test builds: $JITD_TEST_STRAY_RACE_FILE holding 1 takes the first of the strays about to be
 * removed out in a transaction of its own, as if it had run out since it was read.
 */
static void test_hook_stray_race(struct enforce *e)
{
	char kerr[NFT_ERRLEN] = "";
	struct nft_batch *b = NULL;

	if (test_hook_read("JITD_TEST_STRAY_RACE_FILE") <= 0)
		return;
	if (nft_batch_new(e->nft, &b) || ruleset_raw_delete(b, e->strays.v, 1) ||
		nft_batch_commit(b, kerr))
		log_warn("test hook: cannot remove a stray first: %s", kerr);
	nft_batch_free(b);
}
#else
static void test_hook_stray_race(struct enforce *e)
{
	(void)e;
}
#endif

/*
 * Removes the elements the last resync found that jitd cannot have written: *removed of them.
 * One of them that runs out before the batch fails it whole (ENOENT), which would keep the
 * others, a catch-all among them, until the next full check: the sets are read again and the
 * rest removed, as sync_groups retries its own race with expiry.
 */
static int drop_strays(struct enforce *e, size_t *removed, char *err, size_t errlen)
{
	int ret = 0;

	*removed = 0;
	for (int attempt = 0; attempt < COMMIT_ATTEMPTS && e->strays.n; attempt++) {
		char kerr[NFT_ERRLEN] = "";
		struct nft_batch *b = NULL;

		if (!(ret = nft_batch_new(e->nft, &b)) &&
			!(ret = ruleset_raw_delete(b, e->strays.v, e->strays.n))) {
			test_hook_stray_race(e);
			ret = commit_batch(e, b, kerr);
		}
		nft_batch_free(b);
		if (ret == 0) {
			*removed += e->strays.n;
			e->strays.n = 0;
			break;
		}
		snprintf(err, errlen, "%s", kerr[0] ? kerr : strerror(-ret));
		if (ret != -ENOENT)
			break;
		log_info("kernel: removing elements jitd did not write: %s; re-reading the sets",
			err);
		/* What the failed reading left of the strays is not all of them: a full check. */
		if (resync(e)) {
			e->model_lost = e->unsure = true;
			break;
		}
		if (!e->strays.n)
			ret = 0; /* the one that ran out was the last */
	}
	return ret;
}

static int commit_plan(struct enforce *e, const struct plan *p, int64_t now_ms, char *err,
	size_t errlen)
{
	char kerr[NFT_ERRLEN] = "";
	struct nft_batch *b = NULL;
	int64_t t0;
	int ret;

	if (!p->del.n && !p->add.n)
		return 0;
	if ((ret = nft_batch_new(e->nft, &b)))
		goto out;
	if ((ret = ruleset_elems(b, p->del.v, p->del.n, p->add.v, p->add.n, now_ms)))
		goto out;
	t0 = clock_mono_us();
	ret = commit_batch(e, b, kerr);
	metrics_observe(&e->metrics.kernel, clock_mono_us() - t0);
	if (!ret && e->repairing)
		e->metrics.drift_repairs++;
out:
	if (ret)
		snprintf(err, errlen, "%s", kerr[0] ? kerr : strerror(-ret));
	nft_batch_free(b);
	return ret;
}

/*
 * A change that failed, wherever: a withdrawal that never reached the kernel (out of memory
 * for its plan or batch) leaves elements no grant stands for. The kernel is read in full
 * within seconds (watch.c), not at the next periodic check, which may be skipped.
 */
static int change_failed(struct enforce *e, int ret)
{
	e->unsure = e->doubt = true;
	return ret;
}

/*
 * Adds sorted elements to the sorted model, keeping it sorted. 0 or -ENOMEM. In place, from
 * the back: a group commit at 100,000 grants must not copy the whole model (and with large
 * arrays mapped, fault in a fresh copy of it); only elements sorting after the first added
 * one move. The larger array takes in the smaller, so add may come back holding the model's
 * old array (its owner frees it): a restore into an empty table adds 100,000 elements to
 * none. Equal ones (an expired element and a live one) may end up in either order: readers
 * walk the whole run of them.
 */
static int model_merge(struct enforce *e, struct elems *add)
{
	struct elems *m = &e->model, *big = m->n < add->n ? add : m, t;
	size_t i, j, k = m->n + add->n;
	struct ruleset_elem *nv;

	/* Room first: a failure leaves the model as it was, short of add only. */
	if (!(nv = array_reserve(big->v, &big->cap, k, sizeof(*nv), 64)))
		return -ENOMEM;
	big->v = nv;
	if (big == add) {
		t = *m;
		*m = *add;
		*add = t;
	}
	i = m->n;
	j = add->n;
	while (j > 0)
		m->v[--k] = i > 0 && ruleset_elem_cmp(&m->v[i - 1], &add->v[j - 1]) > 0 ?
			m->v[--i] : add->v[--j];
	m->n += add->n;
	return 0;
}

/*
 * Drops from the model every element of del (sorted as the model is; each one a copy of a model
 * element) and every element whose time is up, in one walk, keeping the order.
 */
static void model_compact(struct enforce *e, const struct elems *del, int64_t now_ms)
{
	struct elems *m = &e->model;
	size_t kept = 0, d = 0;

	for (size_t i = 0; i < m->n; i++) {
		const struct ruleset_elem *x = &m->v[i];
		bool gone = x->exp_ms <= now_ms;

		while (d < del->n && ruleset_elem_cmp(&del->v[d], x) < 0)
			d++;
		for (size_t k = d; !gone && k < del->n && !ruleset_elem_cmp(&del->v[k], x); k++)
			gone = del->v[k].exp_ms == x->exp_ms && del->v[k].to_port == x->to_port;
		if (gone)
			continue;
		/* Nothing moves before the first one gone: most ticks, none is. */
		if (kept != i)
			m->v[kept] = *x;
		kept++;
	}
	m->n = kept;
}

/*
 * Brings the model along with p once the kernel has taken it, in place: p's deletions and
 * whatever ran out by now_ms leave, p's additions are merged in. The plan kept no second model:
 * a restore at 100,000 grants held two (8.8 MB each) at its peak. 0 or -ENOMEM, which leaves
 * the model short of p's additions.
 */
static int model_apply(struct enforce *e, struct plan *p, int64_t now_ms)
{
	elems_sort(&p->del);
	elems_sort(&p->add);
	model_compact(e, &p->del, now_ms);
	return model_merge(e, &p->add);
}

/*
 * After a commit the kernel took: fix_failed (the model could not follow it) re-reads the
 * kernel, and failing that too leaves the next check to read it in full (unsure) rather than
 * plan against a model that misses what the kernel holds.
 */
static void model_follow(struct enforce *e, int fix_failed)
{
	if (fix_failed && resync(e))
		e->unsure = e->model_lost = e->doubt = true;
}

/* Brings the given groups of the kernel in line with the live grants, in one transaction. */
static int sync_groups_removing(struct enforce *e, const struct group *groups, size_t n_groups,
	size_t *removed, char *err, size_t errlen)
{
	int ret = -EAGAIN, reread;

	for (int attempt = 0; attempt < COMMIT_ATTEMPTS; attempt++) {
		int64_t now = enforce_now_ms();
		struct plan p;

		if ((ret = plan_build(e, groups, n_groups, now, &p))) {
			snprintf(err, errlen, "%s", strerror(-ret));
			return change_failed(e, ret);
		}
		ret = commit_plan(e, &p, now, err, errlen);
		if (ret == 0)
			model_follow(e, model_apply(e, &p, now));
		if (ret == 0 && removed)
			*removed = p.removed;
		plan_free(&p);
		if (ret == 0)
			return 0;
		/* Only a race with the kernel's own expiry is worth another look. */
		if (ret != -ENOENT && ret != -EEXIST)
			return change_failed(e, ret);
		log_debug("kernel: %s; re-reading the allow sets and retrying", err);
		if ((reread = resync(e))) {
			/* The reason to give up is the read's; the refusal it followed says why. */
			char was[200];

			snprintf(was, sizeof(was), "%s", err);
			snprintf(err, errlen, "cannot re-read the allow sets (%s) after: %s",
				strerror(-reread), was);
			return change_failed(e, ret);
		}
	}
	return change_failed(e, ret);
}

static int sync_groups(struct enforce *e, const struct group *groups, size_t n_groups, char *err,
	size_t errlen)
{
	return sync_groups_removing(e, groups, n_groups, NULL, err, errlen);
}

/*
 * Whether a and b (same group) might not stay two elements of their own in desired(): they
 * overlap, or they adjoin. desired() merges adjoining ranges whose grants end together, and an
 * expiry read back from the kernel (or computed a millisecond apart) cannot tell that here:
 * adjoining ranges take the full plan, whatever their exp_ms.
 */
static bool touch(const struct ruleset_elem *a, const struct ruleset_elem *b)
{
	size_t alen = a->family == AF_INET ? 4 : 16;
	uint8_t next[16];
	size_t i;

	if (overlap(a, b))
		return true;
	if (a->kind == RULESET_HOST_ADDR) /* one element per address, never merged */
		return false;
	/* Disjoint: a before b or b before a, with a gap or without one. */
	for (int round = 0; round < 2; round++) {
		const struct ruleset_elem *x = round ? b : a, *y = round ? a : b;

		memcpy(next, x->hi, alen);
		for (i = alen; i-- > 0;)
			if (++next[i])
				break;
		if (i != (size_t)-1 && !memcmp(next, y->lo, alen))
			return true;
	}
	return false;
}

/* Host grant g's element for its source s and port q, as desired() makes it when alone. */
static struct ruleset_elem host_elem(const struct grant *g, size_t s, size_t q, int64_t end)
{
	struct ruleset_elem re = {
		.kind = (uint8_t)ruleset_host_kind(&g->src[s]),
		.family = g->src[s].family,
		.ipproto = port_proto_ipproto(g->ports[q].proto),
		.port = g->ports[q].port, .exp_ms = end };

	prefix_range(&g->src[s], re.lo, re.hi);
	return re;
}

/* Sorts v; whether two of its elements of one group touch (then they are not one each). */
static bool sort_touching(struct elems *v)
{
	elems_sort(v);
	for (size_t i = 1; i < v->n; i++) {
		struct group g = group_of(&v->v[i]);

		if (in_group(&v->v[i - 1], &g) && touch(&v->v[i - 1], &v->v[i]))
			return true;
	}
	return false;
}

/*
 * The common case, without recomputing every grant: the grants from index first on are new,
 * and none of their ranges overlaps or adjoins an element already there or one another. Then
 * the disjoint ranges desired() would compute are exactly the old elements plus one element per
 * new range, and only those need adding. Returns 0 with p->add filled (p->model and p->del
 * untouched), 1 when this does not apply (the caller plans in full), or -errno.
 */
static int plan_added(const struct enforce *e, size_t first, int64_t now_ms, struct plan *p)
{
	int64_t boot = clock_ms(CLOCK_BOOTTIME);
	struct elems add = { 0 };
	int ret = 0;

	for (size_t i = first; ret == 0 && i < e->n_grants; i++) {
		const struct grant *g = &e->grants[i];
		int64_t end = grant_end_ms(e, i, now_ms, boot);

		/* Gateway grants are few and two-dimensional: they take the full plan. */
		if (g->n_dst) {
			ret = 1;
			goto out;
		}
		for (size_t s = 0; ret == 0 && s < g->n_src; s++) {
			for (size_t q = 0; ret == 0 && q < g->n_ports; q++) {
				struct ruleset_elem re = host_elem(g, s, q, end);

				ret = elems_push(&add, &re);
			}
		}
	}
	if (ret || !add.n)
		goto out;
	if (sort_touching(&add)) {
		ret = 1;
		goto out;
	}
	for (size_t k = 0; k < add.n; k++) {
		const struct ruleset_elem *a = &add.v[k], *m;
		struct group g = group_of(a);
		size_t pos = model_lower(e, a), i;

		/*
		 * Live elements of a group are disjoint, so only the last live one before a and the
		 * first live one from a on can touch it; expired ones may linger until the next tick.
		 */
		for (i = pos; i-- > 0 && in_group(&e->model.v[i], &g) &&
			e->model.v[i].exp_ms <= now_ms;)
			;
		if (i != (size_t)-1 && (m = &e->model.v[i])->exp_ms > now_ms && in_group(m, &g) &&
			touch(a, m)) {
			ret = 1;
			goto out;
		}
		for (i = pos; i < e->model.n && e->model.v[i].exp_ms <= now_ms; i++)
			;
		if (i < e->model.n && in_group(m = &e->model.v[i], &g) && touch(a, m)) {
			ret = 1;
			goto out;
		}
	}
	p->add = add;
	add = (struct elems){ 0 };
out:
	elems_free(&add);
	return ret;
}

/*
 * Commits a cheap plan (planned 0) and brings the model along with fix_model; the full plan for
 * groups when the cheap one does not apply (planned 1) or raced the kernel's own expiry.
 */
static int sync_cheap(struct enforce *e, int planned, struct plan *p, int64_t now,
	int (*fix_model)(struct enforce *, struct plan *), const struct group *groups,
	size_t n_groups, char *err, size_t errlen)
{
	int ret = planned;

	if (ret == 0) {
		ret = commit_plan(e, p, now, err, errlen);
		if (ret == 0)
			model_follow(e, fix_model(e, p));
	}
	plan_free(p);
	/* 1: not cheap; ENOENT, EEXIST: a race with the kernel's own expiry. */
	if (ret < 0 && ret != -ENOENT && ret != -EEXIST) {
		/* A plan that could not be made (out of memory) said nothing yet. */
		if (planned < 0)
			snprintf(err, errlen, "%s", strerror(-ret));
		return change_failed(e, ret);
	}
	if (ret == 0)
		return 0;
	return sync_groups(e, groups, n_groups, err, errlen);
}

static int model_add(struct enforce *e, struct plan *p)
{
	return model_merge(e, &p->add);
}

/* Brings the kernel in line after grants [first, n_grants) were added: cheaply if it can. */
static int sync_added(struct enforce *e, size_t first, const struct group *groups,
	size_t n_groups, char *err, size_t errlen)
{
	int64_t now = enforce_now_ms();
	struct plan p = { 0 };

	return sync_cheap(e, plan_added(e, first, now, &p), &p, now, model_add, groups, n_groups,
		err, errlen);
}

/*
 * The live model element equal to want (its range, and its time to within the tolerance), or
 * NULL. Expired ones may linger beside it until the next tick.
 */
static const struct ruleset_elem *model_find(const struct enforce *e,
	const struct ruleset_elem *want, int64_t now_ms)
{
	for (size_t i = model_lower(e, want);
		i < e->model.n && !ruleset_elem_cmp(&e->model.v[i], want); i++)
		if (e->model.v[i].exp_ms > now_ms && same_elem(&e->model.v[i], want))
			return &e->model.v[i];
	return NULL;
}

/* Whether a live grant other than the revoked one has a range in re's group that touches re. */
static bool touched_by_grant(const struct enforce *e, const struct ruleset_elem *re,
	int64_t now_ms, int64_t boot)
{
	uint32_t want = re->kind == RULESET_HOST_ADDR ? addr_hash(re->family, re->lo) : 0;
	struct ruleset_elem other = *re;
	struct group g = group_of(re);
	size_t pi;

	for (size_t i = 0; i < e->n_grants; i++) {
		const struct grant *gr = &e->grants[i];
		uint32_t has = e->keys[i].addr_hash;

		/*
		 * A grant of one address (most of them) is decided by its key, without reading the
		 * grant: another address, or an address where re is a range (another set).
		 */
		if (has && has != want)
			continue;
		for (size_t s = 0; !gr->n_dst && s < gr->n_src; s++) {
			const struct prefix *x = &gr->src[s];

			if (x->family != re->family || ruleset_host_kind(x) != re->kind)
				continue;
			/* Its own time or not, adjoining ones are taken to merge: the full plan decides. */
			prefix_range(x, other.lo, other.hi);
			if (touch(re, &other) && grant_in_group(gr, &g, &pi) &&
				grant_end_ms(e, i, now_ms, boot) > now_ms)
				return true;
		}
	}
	return false;
}

/*
 * The common revocation, without recomputing every grant: g (ending at deadline on the boot
 * clock) has just left the grants, it is a host grant, and none of its ranges touches a range of
 * another live grant of its group or another of its own. Then each of its ranges was one model
 * element of its own, and what desired() would compute now is the model without them: only
 * those need deleting. Returns 0 with p->del filled, 1 when this does not apply (the caller
 * plans in full), or -errno.
 */
static int plan_removed(const struct enforce *e, const struct grant *g, int64_t deadline,
	const struct group *groups, size_t n_groups, int64_t now_ms, struct plan *p)
{
	int64_t boot = clock_ms(CLOCK_BOOTTIME), end = now_ms + (deadline - boot);
	struct elems del = { 0 };
	int ret = 0;

	for (size_t k = 0; k < n_groups; k++)
		if (groups[k].kind != RULESET_HOST && groups[k].kind != RULESET_HOST_ADDR)
			return 1;
	for (size_t s = 0; ret == 0 && s < g->n_src; s++) {
		for (size_t q = 0; ret == 0 && q < g->n_ports; q++) {
			struct ruleset_elem re = host_elem(g, s, q, end);
			const struct ruleset_elem *m;

			if (!(m = model_find(e, &re, now_ms)) ||
				touched_by_grant(e, &re, now_ms, boot)) {
				ret = 1;
				goto out;
			}
			ret = elems_push(&del, m);
		}
	}
	if (ret || !del.n) {
		ret = ret ? ret : 1;
		goto out;
	}
	if (sort_touching(&del)) {
		ret = 1;
		goto out;
	}
	p->del = del;
	del = (struct elems){ 0 };
out:
	elems_free(&del);
	return ret;
}

/* Takes p's deletions (found in the model as they are: a grant's few) out of the sorted model. */
static int model_drop(struct enforce *e, struct plan *p)
{
	struct elems *m = &e->model;

	for (size_t j = 0; j < p->del.n; j++) {
		const struct ruleset_elem *d = &p->del.v[j];
		size_t i = model_lower(e, d);

		while (i < m->n && !ruleset_elem_cmp(&m->v[i], d) && m->v[i].exp_ms != d->exp_ms)
			i++;
		if (i == m->n || ruleset_elem_cmp(&m->v[i], d))
			return -ENOENT;
		memmove(&m->v[i], &m->v[i + 1], (m->n - i - 1) * sizeof(*m->v));
		m->n--;
	}
	return 0;
}

/* Brings the kernel in line after g (see plan_removed) was revoked: cheaply if it can. */
static int sync_removed(struct enforce *e, const struct grant *g, int64_t deadline,
	const struct group *groups, size_t n_groups, char *err, size_t errlen)
{
	int64_t now = enforce_now_ms();
	struct plan p = { 0 };

	return sync_cheap(e, plan_removed(e, g, deadline, groups, n_groups, now, &p), &p, now,
		model_drop, groups, n_groups, err, errlen);
}

static int add_group(struct group **v, size_t *n, const struct group *g)
{
	struct group *nv;

	for (size_t i = 0; i < *n; i++)
		if (!memcmp(&(*v)[i], g, sizeof(*g)))
			return 0;
	nv = realloc(*v, (*n + 1) * sizeof(*nv));
	if (!nv)
		return -ENOMEM;
	nv[(*n)++] = *g;
	*v = nv;
	return 0;
}

/* The groups a grant has elements in: host or forward ones, and its gateway ports'. */
static int grant_groups(const struct enforce *e, const struct grant *gr, struct group **v,
	size_t *n)
{
	struct dnat_pair pairs[DNAT_MAX_PAIRS];
	struct group g;
	int ret = 0;

	memset(&g, 0, sizeof(g)); /* compared with memcmp: padding too */
	for (size_t p = 0; ret == 0 && p < gr->n_ports; p++) {
		for (size_t s = 0; ret == 0 && s < gr->n_src; s++) {
			g.kind = (uint8_t)(gr->n_dst ? RULESET_FORWARD :
				ruleset_host_kind(&gr->src[s]));
			g.family = gr->src[s].family;
			g.ipproto = port_proto_ipproto(gr->ports[p].proto);
			g.port = gr->ports[p].port;
			ret = add_group(v, n, &g);
		}
	}
	if (ret || !dnat_granted(e->cfg, gr, pairs))
		return ret;
	g.kind = RULESET_DNAT;
	g.family = AF_INET;
	for (size_t k = 0; ret == 0 && k < gr->n_dnat_ports; k++) {
		g.ipproto = port_proto_ipproto(gr->ports[pairs[k].port_idx].proto);
		g.port = gr->dnat_ports[k];
		ret = add_group(v, n, &g);
	}
	return ret;
}

/* Every (family, protocol, port) that a grant covers or the kernel holds elements for. */
static int all_groups(const struct enforce *e, struct group **groups, size_t *n_groups)
{
	int ret = 0;

	for (size_t i = 0; ret == 0 && i < e->n_grants; i++)
		ret = grant_groups(e, &e->grants[i], groups, n_groups);
	for (size_t i = 0; ret == 0 && i < e->model.n; i++) {
		struct group g = group_of(&e->model.v[i]);

		ret = add_group(groups, n_groups, &g);
	}
	return ret;
}

/* Room for want grants: the restore asks for what it read, a push for one more (doubling). */
static int grants_reserve(struct enforce *e, size_t want)
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
static int grants_push_until(struct enforce *e, struct grant *g, int64_t deadline)
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
static int grants_push(struct enforce *e, struct grant *g)
{
	return grants_push_until(e, g, clock_ms(CLOCK_BOOTTIME) + (g->exp * 1000 -
		enforce_now_ms()));
}

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

/* Grant i leaves the grants (its storage is the caller's now); the last one takes its place. */
static struct grant grants_take(struct enforce *e, size_t i)
{
	struct grant g = e->grants[i];

	e->n_grants--;
	e->grants[i] = e->grants[e->n_grants];
	e->deadline[i] = e->deadline[e->n_grants];
	e->keys[i] = e->keys[e->n_grants];
	return g;
}

static void grants_remove(struct enforce *e, size_t i)
{
	struct grant g = grants_take(e, i);

	grant_clear(&g);
}

/*
 * A recorded grant, as it restores: claims, a still trusted key, policy and freshness (its
 * signature was verified when it was received, see grant_verify_recorded).
 */
static int check_recorded(const struct enforce *e, const char *token, size_t len, int64_t now_ms,
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
static void note_error(struct enforce *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void note_error(struct enforce *e, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(e->last_error, sizeof(e->last_error), fmt, ap);
	va_end(ap);
	log_err("%s", e->last_error);
}

/* n records (n > 0) with one write: all or none. */
static int audit_recs(struct enforce *e, const struct audit_rec *recs, size_t n)
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

static int audit(struct enforce *e, const char *event, const struct grant *g,
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
static void audit_remapped(struct enforce *e, const struct grant *g, const char *was,
	const char *when)
{
	char what[DNAT_ANNEX_MAX + 128];

	snprintf(what, sizeof(what), "%s: new gateway ports, the configuration changed them "
		"(were: %s)", when, was[0] ? was : "none");
	log_warn("%s: grant '%s' gets new gateway ports (were: %s): the configuration changed "
		"them", when, g->jti, was[0] ? was : "none");
	(void)audit(e, "grant.remapped", g, NULL, "jitd", 0, what, -1);
}

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
static void timer_in_ms(struct event *ev, int64_t ms)
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
static void refused_rec(struct enforce *e, const char *what, const char *grant_id,
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

static void refused(struct enforce *e, const char *what, const char *grant_id, const char *peer,
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
static void drop_record(struct enforce *e, const char *jti)
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
static void drop_records(struct enforce *e, const char *const *jti, size_t n)
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

static ssize_t find_index(const struct enforce *e, const char *jti);

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
static void retry_drops(struct enforce *e)
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

/* A reload's answers, one per key id: a fleet has few keys, and a reload may meet 100,000 grants. */
struct keys_seen {
	struct key_seen {
		const char *kid;	/* a grant's, which outlives the reload's loop */
		int ret;
		char why[sizeof(((struct jit_error *)0)->msg)];
	} *v;
	size_t n, cap;
};

/*
 * Whether a signed grant's key is still trusted under the new configuration (keys_dir may be
 * another), as a restart would find it: removing a key and reloading takes that key's grants
 * away, as a restart always did. Root's local grants have no key. 0, JIT_ERR_UNKNOWN_KEY with
 * err saying why, JIT_ERR_INTERNAL (the key file could not be read now: nothing is known), or
 * -ENOMEM.
 */
static int key_trusted(struct keys_seen *seen, const struct config *nc, const struct grant *g,
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

static void trail_timer_cb(evutil_socket_t fd, short what, void *arg)
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
static void audit_deferred_sync(struct enforce *e)
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
static int trail_durable(void *arg)
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
static void settle_all(struct enforce *e)
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
static void synced_cb(struct sync_req *done, void *arg)
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
static void group_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct enforce *e = arg;

	while (!test_hook_hold() && e->ready)
		run_group(e);
	wait_for_rest(e);
}

/* Verified grants come back from the workers: commit now, or wait a little for the rest. */
static void verified_cb(struct verify_job *jobs, void *arg)
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

/* A local grant is stored as its claims object, marked so that restore knows it is unsigned. */
#define LOCAL_MARK "jitd_local_grant"

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
static int check_local(const struct enforce *e, const json_t *claims, int64_t now_ms,
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
static void expire(struct enforce *e, bool model_too)
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
static void audit_state_damage(struct enforce *e)
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
static void damage_found(void *arg)
{
	struct enforce *e = arg;

	event_active(e->damage_event, EV_TIMEOUT, 1);
}

static void damage_event_cb(evutil_socket_t fd, short what, void *arg)
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

static ssize_t find_index(const struct enforce *e, const char *jti)
{
	uint32_t h = jti_hash(jti);

	for (size_t i = 0; i < e->n_grants; i++)
		if (e->keys[i].jti_hash == h && !strcmp(e->grants[i].jti, jti))
			return (ssize_t)i;
	return -1;
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
static int build_table(struct enforce *e, bool refill, size_t *refilled, char *err,
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
static int restore(struct enforce *e, unsigned threads, char *err, size_t errlen)
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

/* Stopping: grants still being verified or waiting for their group are refused, not applied. */
static void cancel_pending(struct enforce *e)
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
