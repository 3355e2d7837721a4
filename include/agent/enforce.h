#ifndef JITD_AGENT_ENFORCE_H
#define JITD_AGENT_ENFORCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct grant;
struct jit_error;
struct nft;
struct ruleset_elem;
struct store;

/*
 * The only place where grants, the state store and the kernel meet. Every transport (the control
 * socket now, the controller endpoint later) and the start-up restore go through it, so every
 * path gets the same checks in the same fail-closed order:
 *   verify -> policy -> duplicate -> durable record -> one kernel transaction -> success.
 */
struct enforce;

/*
 * Makes table inet jitd match cfg (one transaction; live grant elements kept), then restores the
 * recorded grants that still verify and removes kernel elements no grant stands behind.
 * cfg, nft and store are borrowed and must outlive the handle. Returns 0 or -errno; err
 * explains a kernel refusal.
 */
int enforce_open(const struct config *cfg, struct nft *nft, struct store *store,
	struct enforce **out, char *err, size_t errlen);
void enforce_close(struct enforce **e);

/*
 * Verifies and applies one compact JWS grant. peer names the submitter for the log. Returns 0
 * and a pointer to the applied grant in *applied (valid until the next enforce_* call), or a
 * negative enum jit_err with e->msg set; on any error the kernel and the state are unchanged.
 */
int enforce_submit(struct enforce *e, const char *token, size_t len, const char *peer,
	const struct grant **applied, struct jit_error *err);
/* What a revocation did. */
struct revoke_result {
	char grant_id[257];	/* the revoked grant's jti */
	bool terminate;		/* established flows were asked to be cut */
	long flows_terminated;	/* conntrack entries deleted (0 without terminate) */
};

/*
 * Verifies a revocation token (typ jit-revoke+jwt, see common/revoke.h), checks it against the
 * replay cache, and revokes the grant it names: its access goes at once (other grants covering the
 * same sources keep theirs), and with "terminate" its established flows are cut. Returns 0 and
 * fills *res, or a negative enum jit_err (JIT_ERR_NOT_FOUND when no such grant is active).
 */
int enforce_revoke_token(struct enforce *e, const char *token, size_t len, const char *peer,
	struct revoke_result *res, struct jit_error *err);
/* The same for a local, already-authorised request (jitctl revoke). */
int enforce_revoke_id(struct enforce *e, const char *grant_id, bool terminate, const char *peer,
	struct revoke_result *res, struct jit_error *err);

/* Forgets grants whose time is over (the kernel already removed their elements). */
void enforce_expire(struct enforce *e);

/* Read-only views for status reporting. */
const struct config *enforce_config(const struct enforce *e);
const struct grant *enforce_grants(const struct enforce *e, size_t *n);
/* The allow-set elements jitd believes the kernel holds (expired ones may linger). */
const struct ruleset_elem *enforce_model(const struct enforce *e, size_t *n);
struct nft *enforce_nft(const struct enforce *e);

/* Wall clock in milliseconds since the epoch: grant times and element timeouts use it. */
int64_t enforce_now_ms(void);

#endif
