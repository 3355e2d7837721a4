#ifndef JITD_AGENT_ENFORCE_IMPL_H
#define JITD_AGENT_ENFORCE_IMPL_H

/*
 * The enforcer's insides (struct enforce and what its files share), split by concern:
 *   enforce.c          the grants, the clocks, the audit and refusal records, expiry, open and
 *                      close, and the accessors;
 *   enforce_plan.c     the model of the kernel's elements, the plans that change it, commits;
 *   enforce_commit.c   the group commit: admission, journal, kernel, sync, answers;
 *   enforce_restore.c  the start-up restore and the repair after drift;
 *   enforce_revoke.c   revocation;
 *   enforce_reload.c   a reload of the configuration.
 * Not an interface: the rest of jitd goes through agent/enforce.h.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

#include <event2/util.h>
#include <jansson.h>

#include "agent/enforce.h"
#include "agent/metrics.h"
#include "agent/nft.h"
#include "agent/refusals.h"
#include "agent/store.h"
#include "agent/syncer.h"
#include "common/err.h"
#include "common/grant.h"

struct audit_rec;
struct config;
struct event;
struct jws_verifier;
struct ruleset_elem;
struct ruleset_raw;
struct verify_job;

/* A grant with less time left than this would be gone before the kernel saw it. */
#define MIN_TIME_LEFT_MS 1000
/* Commits that race an element's own expiry (ENOENT/EEXIST) are retried after a resync. */
#define COMMIT_ATTEMPTS 4

/* A local grant is stored as its claims object, marked so that restore knows it is unsigned. */
#define LOCAL_MARK "jitd_local_grant"

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
	/*
	 * Transactions the kernel took, and the generation the start-up restore left (see
	 * enforce_open).
	 */
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

/* Inline, as when they were static: the planner calls them for every grant of a group. */

/*
 * When grant i's access ends, in wall-clock ms: the time it had left when it was applied,
 * counted on CLOCK_BOOTTIME from then, as the kernel counts its timeout except that suspended
 * time counts too. A wall clock stepped forward or back after that changes nothing: the grant
 * keeps its time (new grants are judged by the clock as it is, with clock_skew).
 */
static inline int64_t grant_end_ms(const struct enforce *e, size_t i, int64_t now_ms,
	int64_t boot_ms)
{
	return now_ms + (e->deadline[i] - boot_ms);
}

/*
 * The wall clock, in s, as grant i's own time runs: exp less the time it has left. The new
 * policy judges what the grant still holds (a clock stepped back since it was applied would
 * have it ask for more than its maximum, one stepped forward for less).
 */
static inline int64_t grant_now_s(const struct enforce *e, size_t i, int64_t boot_ms)
{
	int64_t left = e->deadline[i] - boot_ms;

	return e->grants[i].exp - (left > 0 ? left / 1000 : 0);
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

/* A reload's answers, one per key id: a fleet has few keys, and a reload may meet 100,000 grants. */
struct keys_seen {
	struct key_seen {
		const char *kid;	/* a grant's, which outlives the reload's loop */
		int ret;
		char why[sizeof(((struct jit_error *)0)->msg)];
	} *v;
	size_t n, cap;
};

/* enforce.c: what the other files of the enforcer use of it (each described where it is). */
uint32_t addr_hash(int family, const uint8_t *addr);
int audit(struct enforce *e, const char *event, const struct grant *g,
	const char *grant_id, const char *peer, int code, const char *message, long long count);
int audit_recs(struct enforce *e, const struct audit_rec *recs, size_t n);
void audit_remapped(struct enforce *e, const struct grant *g, const char *was,
	const char *when);
int check_recorded(const struct enforce *e, const char *token, size_t len, int64_t now_ms,
	const char *trusted_kid, struct jws_verifier *jv, struct grant *g, struct jit_error *err);
int64_t clock_ms(clockid_t id);
void expire(struct enforce *e, bool model_too);
ssize_t find_index(const struct enforce *e, const char *jti);
int grants_push(struct enforce *e, struct grant *g);
int grants_push_until(struct enforce *e, struct grant *g, int64_t deadline);
void grants_remove(struct enforce *e, size_t i);
int grants_reserve(struct enforce *e, size_t want);
struct grant grants_take(struct enforce *e, size_t i);
uint32_t jti_hash(const char *jti);
void note_error(struct enforce *e, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void refused(struct enforce *e, const char *what, const char *grant_id, const char *peer,
	const struct jit_error *err);
void refused_rec(struct enforce *e, const char *what, const char *grant_id,
	const char *peer, const struct jit_error *err, bool withdrawn);
void timer_in_ms(struct event *ev, int64_t ms);
#ifdef JITD_TEST_HOOKS
long long test_hook_read(const char *env);
#endif
void test_hook_pause(const char *name);

/* enforce_commit.c */
void audit_deferred_sync(struct enforce *e);
void cancel_pending(struct enforce *e);
int check_local(const struct enforce *e, const json_t *claims, int64_t now_ms,
	struct grant *g, struct jit_error *err);
void drop_record(struct enforce *e, const char *jti);
void drop_records(struct enforce *e, const char *const *jti, size_t n);
void group_timer_cb(evutil_socket_t fd, short what, void *arg);
int key_trusted(struct keys_seen *seen, const struct config *nc, const struct grant *g,
	struct jit_error *err);
void retry_drops(struct enforce *e);
void settle_all(struct enforce *e);
void synced_cb(struct sync_req *done, void *arg);
int trail_durable(void *arg);
void trail_timer_cb(evutil_socket_t fd, short what, void *arg);
void verified_cb(struct verify_job *jobs, void *arg);

/* enforce_plan.c */
void addr_next(uint8_t *addr, size_t alen);
int all_groups(const struct enforce *e, struct group **groups, size_t *n_groups);
int change_failed(struct enforce *e, int ret);
int commit_batch(struct enforce *e, struct nft_batch *b, char *kerr);
int drop_strays(struct enforce *e, size_t *removed, char *err, size_t errlen);
void elems_free(struct elems *v);
int grant_groups(const struct enforce *e, const struct grant *gr, struct group **v,
	size_t *n);
struct ruleset_elem host_elem(const struct grant *g, size_t s, size_t q, int64_t end);
int model_apply(struct enforce *e, struct plan *p, int64_t now_ms);
void model_compact(struct enforce *e, const struct elems *del, int64_t now_ms);
void model_follow(struct enforce *e, int fix_failed);
size_t model_lower(const struct enforce *e, const struct ruleset_elem *key);
int plan_build(const struct enforce *e, const struct group *groups, size_t n_groups,
	int64_t now_ms, struct plan *p);
void plan_free(struct plan *p);
int resync(struct enforce *e);
int sync_added(struct enforce *e, size_t first, const struct group *groups,
	size_t n_groups, char *err, size_t errlen);
int sync_groups(struct enforce *e, const struct group *groups, size_t n_groups, char *err,
	size_t errlen);
int sync_groups_removing(struct enforce *e, const struct group *groups, size_t n_groups,
	size_t *removed, char *err, size_t errlen);
int sync_removed(struct enforce *e, const struct grant *g, int64_t deadline,
	const struct group *groups, size_t n_groups, char *err, size_t errlen);

/* enforce_restore.c */
void audit_state_damage(struct enforce *e);
int build_table(struct enforce *e, bool refill, size_t *refilled, char *err,
	size_t errlen);
void damage_event_cb(evutil_socket_t fd, short what, void *arg);
void damage_found(void *arg);
int restore(struct enforce *e, unsigned threads, char *err, size_t errlen);

#endif
