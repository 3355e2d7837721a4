#ifndef JITD_AGENT_ENFORCE_H
#define JITD_AGENT_ENFORCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct activity;
struct audit;
struct conntrack;
struct grant;
struct jit_error;
struct metrics;
struct port_spec;
struct prefix;
struct replay;
struct nft;
struct ruleset_elem;
struct store;

/*
 * The only place where grants, the state store and the kernel meet. Every transport (the control
 * socket, the controller endpoint) and the start-up restore go through it, so every path gets
 * the same checks in the same fail-closed order:
 *   verify -> policy -> replay -> durable record -> one kernel transaction -> audit -> success.
 */
struct enforce;
struct event_base;

/* What the enforcer works with. Everything is borrowed and must outlive the handle. */
struct enforce_deps {
	const struct config *cfg;
	const char *config_path;	/* for status */
	struct nft *nft;
	struct store *store;
	struct replay *replay;
	struct audit *audit;
	struct activity *activity;
	struct conntrack *ct;
	struct event_base *base;	/* the loop the verification results come back on */
	unsigned verify_threads;	/* 0: one per CPU */
};

/*
 * Makes table inet jitd match cfg (one transaction; live grant elements kept), then restores the
 * recorded grants that still verify and removes kernel elements no grant stands behind. Returns
 * 0 or -errno; err explains a kernel refusal, or (-EAGAIN) that a recorded grant cannot be
 * checked now (a key file unreadable for a passing reason, no memory): then the start fails,
 * and no grant is dropped for it (the records found run out or no longer admitted before it
 * are, as at any start).
 */
int enforce_open(const struct enforce_deps *deps, struct enforce **out, char *err, size_t errlen);
void enforce_close(struct enforce **e);

/*
 * The outcome of enforce_submit, on the event loop: ret 0 and the applied grant (valid only
 * during the call), or a negative enum jit_err with err->msg set. By then the outcome is audited.
 */
typedef void (*enforce_done_fn)(void *arg, int ret, const struct grant *applied,
	const struct jit_error *err);
/*
 * Takes one compact JWS grant. Its signature is verified on a worker thread; grants verified
 * together are committed together (group commit): one kernel transaction and one journal
 * fdatasync for the group, the journal carrying a copy of each audit line, each grant
 * acknowledged through done only after both; the trail's own fsync follows within TRAIL_SYNC_MS
 * for every group since (a group whose lines have no copy in the journal, one with a refusal,
 * waits for it too). On any error the kernel and the state are unchanged for that grant; a
 * grant that cannot be audited is not applied. peer names the submitter for the audit trail.
 * Returns 0 when the grant is on its way (done follows, never before this returns), or a
 * negative enum jit_err with err set if it could not even be queued (done is not called).
 */
int enforce_submit(struct enforce *e, const char *token, size_t len, const char *peer,
	enforce_done_fn done, void *arg, struct jit_error *err);

/* A break-glass request from the local root user (jitctl grant). */
struct local_request {
	const struct prefix *src;
	size_t n_src;
	const struct port_spec *ports;
	size_t n_ports;
	uint64_t duration;	/* seconds */
	const char *reason;
	const char *user;	/* the local user's name: the grant's sub */
};
/* Applies a local grant under the same policy and with the same guarantees as enforce_submit. */
int enforce_grant_local(struct enforce *e, const struct local_request *r, const char *peer,
	const struct grant **applied, struct jit_error *err);
/* What a revocation did. */
struct revoke_result {
	char grant_id[257];	/* the revoked grant's jti */
	bool terminate;		/* established flows were asked to be cut */
	long flows_terminated;	/* conntrack entries deleted (0 without terminate, -1: failed) */
	char terminate_error[128]; /* why the flows could not be cut, when they could not */
	/*
	 * The kernel did not answer the removal and could not be read back: why. The grant is
	 * revoked all the same (the batch was most likely applied); its elements, should they
	 * remain, go at the next check.
	 */
	char unconfirmed[128];
};

/*
 * Verifies a revocation token (typ jit-revoke+jwt, see common/revoke.h), checks it against the
 * replay cache, and revokes the grant it names: its access goes at once (other grants covering the
 * same sources keep theirs), and with "terminate" its established flows are cut. Returns 0 and
 * fills *res, or a negative enum jit_err (JIT_ERR_NOT_FOUND when no such grant is active).
 * A removal the kernel did not confirm still revokes: res->unconfirmed says why.
 */
int enforce_revoke_token(struct enforce *e, const char *token, size_t len, const char *peer,
	struct revoke_result *res, struct jit_error *err);
/* The same for a local, already-authorised request (jitctl revoke). */
int enforce_revoke_id(struct enforce *e, const char *grant_id, bool terminate, const char *peer,
	struct revoke_result *res, struct jit_error *err);

/*
 * Records a grant or revocation that a transport refused before it reached the checks above (a
 * wrong content type): logged, audited and counted like any refusal.
 */
void enforce_refuse(struct enforce *e, bool revocation, const char *peer,
	const struct jit_error *err);
/* A reload asked by someone who may not: audited as config.refused, with the peer. */
void enforce_refuse_reload(struct enforce *e, const char *peer, const struct jit_error *err);

/*
 * Puts the kernel back in line with the grants after someone else changed table inet jitd:
 * recreates the table (and with rebuild, its chain, rules and fixed sets) when needed, removes
 * elements nobody granted and restores granted ones with their remaining time, in one
 * transaction each. Audits drift.repaired with what it found (trigger says what noticed it).
 * Does nothing when all is in line. 0 or -errno.
 */
int enforce_reconcile(struct enforce *e, bool rebuild, const char *trigger);

/*
 * Re-reads the configuration file (SIGHUP, jitctl reload). A valid one is applied in one
 * transaction: the table's structure and fixed sets as it says, and the grants it would no
 * longer admit (policy_check now, or a key no longer trusted in its keys_dir, as a restart
 * would find it) removed with their elements and audited as grant.revoked. Keys are read from
 * keys_dir at each verification, so new keys need no reload. An invalid file,
 * or a refused transaction, changes nothing: the running configuration stays (JIT_ERR_BAD_CONFIG,
 * JIT_ERR_KERNEL or JIT_ERR_INTERNAL, err says why; on success err holds the number of grants
 * removed). A batch the kernel refuses because an element changed meanwhile (one it deletes ran
 * out) is built again from a fresh reading of the sets, a few times.
 * What cannot change while running (state_dir, sockets, the listen address, ...) waits for a
 * restart, with a warning. The enforcer owns reloaded configurations; enforce_config() returns
 * the current one.
 */
int enforce_reload(struct enforce *e, char *err, size_t errlen);

/*
 * The controller endpoint's part of the enforcer's work. Its part of a reload (its TLS files),
 * all or nothing with the rest: prepare loads what the new configuration names, before anything
 * is changed, and a failure (0 or -errno, err saying why) refuses the whole reload as an invalid
 * file would; finish then takes it into use (commit) or drops it, once the reload has succeeded
 * or failed. Its part of the status: describe returns a new JSON object (NULL: out of memory).
 * One hook at most; NULL removes it.
 */
struct json_t;
struct enforce_endpoint_hook {
	int (*prepare)(void *arg, const struct config *next, char *err, size_t errlen);
	void (*finish)(void *arg, bool commit);
	struct json_t *(*describe)(void *arg, int64_t now);
	void *arg;
};
void enforce_set_endpoint_hook(struct enforce *e, const struct enforce_endpoint_hook *hook);
/* The endpoint's description for status: JSON null without one; NULL when out of memory. */
struct json_t *enforce_endpoint_json(const struct enforce *e, int64_t now);

/* Forgets grants whose time is over (the kernel already removed their elements). */
void enforce_expire(struct enforce *e);

/* Read-only views for status reporting. */
const struct config *enforce_config(const struct enforce *e);
const struct grant *enforce_grants(const struct enforce *e, size_t *n);
/*
 * When grant i of enforce_grants ends, in wall-clock ms as the clock reads now_ms at boot_ms
 * (enforce_boot_ms, read with it): its exp, unless the wall clock was stepped since it was
 * applied (the grant keeps its time).
 */
int64_t enforce_grant_end_ms(const struct enforce *e, size_t i, int64_t now_ms,
	int64_t boot_ms);
/* CLOCK_BOOTTIME in ms, the clock grants' own time runs on. */
int64_t enforce_boot_ms(void);
/*
 * The elements jitd believes the kernel holds (expired ones may linger), always sorted by kind,
 * family, protocol and port, then destination and source range: status searches it as it is.
 */
const struct ruleset_elem *enforce_model(const struct enforce *e, size_t *n);
struct nft *enforce_nft(const struct enforce *e);
/*
 * Whether the kernel may differ from the model beyond expiry: true from the start until a check
 * (enforce_reconcile), or the start-up restore (enforce_start_gen), has read it in full and left
 * it in line, and again after any transaction the kernel refused or a check that could not
 * finish.
 */
bool enforce_unsure(const struct enforce *e);
/*
 * Whether a change failed for good (or the model lost the kernel) since the last full read
 * that left the kernel in line: then the model may not be what the live grants want.
 */
bool enforce_in_doubt(const struct enforce *e);
/*
 * The ruleset's generation right after the start-up restore, when that restore read the kernel
 * in full and left it in line (so enforce_unsure was false from then) and nobody else's
 * transaction came in between: a full check at *gen. False when that is not known.
 */
bool enforce_start_gen(const struct enforce *e, uint32_t *gen);
struct audit *enforce_audit(const struct enforce *e);
struct conntrack *enforce_conntrack(const struct enforce *e);
struct activity *enforce_activity(const struct enforce *e);
const char *enforce_config_path(const struct enforce *e);
const struct metrics *enforce_metrics(const struct enforce *e);
/*
 * A client connected (+1) or went (-1), on the control socket or the controller endpoint: a
 * group alone syncs on the loop only while at most one is (group_sync_here).
 */
void enforce_clients(struct enforce *e, int delta);
/* Grants received and still being verified; verified and waiting for their group. */
void enforce_queue(const struct enforce *e, size_t *verifying, size_t *waiting);
/* Whether jitd's socket owns table inet jitd (Linux 6.9+, config table_owner). */
bool enforce_table_owned(const struct enforce *e);
/* When the agent started (seconds since the epoch), and its last operational error ("" if none). */
int64_t enforce_started(const struct enforce *e);
/* Seconds since the start, suspended time included (CLOCK_BOOTTIME: a wall-clock step is not). */
int64_t enforce_uptime(const struct enforce *e);
const char *enforce_last_error(const struct enforce *e);
/*
 * The restart-only settings the configuration file changed since the start, as names separated
 * by spaces ("" if none): what the last successful reload could not apply.
 */
#define RESTART_PENDING_LEN 160
const char *enforce_restart_pending(const struct enforce *e);
size_t enforce_restart_pending_count(const struct enforce *e);
/* When the configuration in force was loaded: the start, or the last applied reload. */
int64_t enforce_config_loaded_at(const struct enforce *e);
/* Why the last reload was refused, and when (*at); NULL if none was since the last applied. */
const char *enforce_reload_refused(const struct enforce *e, int64_t *at);
/* Damage found in the grant state's files since the start (store_damage). */
struct store_damage;
const struct store_damage *enforce_state_damage(const struct enforce *e);

/* Wall clock in milliseconds since the epoch: grant times and element timeouts use it. */
int64_t enforce_now_ms(void);

#endif
