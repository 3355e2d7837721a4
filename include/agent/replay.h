#ifndef JITD_AGENT_REPLAY_H
#define JITD_AGENT_REPLAY_H

#include <stddef.h>
#include <stdint.h>

/*
 * Replay protection: every accepted grant or revocation id (jti) is remembered until a time
 * (its exp plus the clock skew), in state_dir/replay.db, appended and fsync'd before the caller
 * acts on it, so a restart does not reopen the window. Lines: "A UNTIL JTI" and "F JTI"
 * (forget); the file is rewritten at open when it is missing, ends mid-line, holds a line it
 * cannot read, or more dead lines than half its live ones (plus 1024).
 */
struct replay;

/* The file in state_dir that says which ids were used. */
#define REPLAY_FILE "replay.db"

/*
 * Loads state_dir/replay.db (created 0600 if absent), dropping expired ids. 0 or -errno:
 * -EPERM when the file is not to be trusted, why (unless NULL) then saying why, for the caller
 * to say once.
 */
int replay_open(const char *state_dir, size_t max_entries, int64_t now, struct replay **out,
	char *why, size_t why_len);
/* NULLs *r; accepts NULL. */
void replay_close(struct replay **r);
/* 0 when jti may be accepted, JIT_ERR_REPLAY when it is remembered, JIT_ERR_BUSY when full. */
int replay_check(struct replay *r, const char *jti, int64_t now);
/*
 * Durably remembers jti until `until`. 0, -EEXIST, -ENOBUFS (full: replay_check makes room),
 * -EINVAL or -errno.
 */
int replay_add(struct replay *r, const char *jti, int64_t until);
struct replay_id {
	const char *jti;
	int64_t until;
};
/*
 * replay_add for a group, written with one write but not yet fsync'd: for grants whose own
 * records in the state journal are durable, which bring their ids back on start anyway. The ids
 * must be durable before those records go (replay_sync before store_del): the group commit
 * saves one fsync per group this way. res[i] is ids[i]'s outcome, taken in order; a full cache
 * is pruned of the ids expired by now before one is refused -ENOBUFS. If the write fails, no
 * id of the group is added and each res[i] that was 0 is its error.
 */
void replay_add_lazy_many(struct replay *r, const struct replay_id *ids, size_t n, int64_t now,
	int *res);
/*
 * The id of a grant a start restores, or drops while its token is still valid: written, not
 * fsync'd (synced once the start is done), and never refused for want of room; kept in memory
 * when the write fails, and the file rewritten from memory at the next replay_sync. Its record may
 * be the only trace of the id left (replay.db loses the lines a power loss caught unsynced),
 * and a start finds the cache full on any busy node (it keeps the last day's ids): a revoked
 * grant's token, or a dropped one's, must not apply a second time. The cache holds at most the
 * records more than replay_cache_max then; new ids are busy until pruning makes room.
 */
int replay_keep(struct replay *r, const char *jti, int64_t until);
/* Makes every id written so far durable. 0 or -errno. */
int replay_sync(struct replay *r);
/*
 * Once the file holds more dead lines (ids pruned from a full cache, forgotten or superseded
 * while jitd runs) than the start would keep, rewrites it with the ids in memory, as the start
 * does: without this, replay.db grew by a line per grant for as long as jitd ran, and a full
 * state_dir then kept the next start from its own rewrite. Expired ids are not pruned for it:
 * a wall clock stepped forward by mistake must not make the file forget ids a correction
 * brings back into their time. A rewrite that failed is tried again a minute later. For the
 * expiry tick. 0, or -errno of a rewrite tried now and failed.
 */
int replay_tidy(struct replay *r);
/*
 * Undoes replay_add for an id whose grant was not applied after all: gone from memory at once;
 * a failure to record that on disk is logged (a restart before the file is rewritten refuses
 * the id).
 */
void replay_forget(struct replay *r, const char *jti);
size_t replay_count(const struct replay *r);
/* Until when jti is remembered, INT64_MIN when it is not. */
int64_t replay_until(const struct replay *r, const char *jti);
/* The ids the cache holds at most: replay_cache_max as at the start (a reload does not move it). */
size_t replay_max(const struct replay *r);
/* The ids remembered beyond t: a walk of the whole table, for what is rare (far revocations). */
size_t replay_count_beyond(const struct replay *r, int64_t t);
/* For tests: slots in use (live ids and tombstones, which a lookup walks past) and in all. */
void replay_table(const struct replay *r, size_t *used, size_t *cap);

#endif
