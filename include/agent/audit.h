#ifndef JITD_AGENT_AUDIT_H
#define JITD_AGENT_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct config;
struct grant;
struct store_note;

/*
 * The audit trail: one compact JSON object per line in state_dir/audit.jsonl (0640), written and
 * fsync'd before audit_log returns (or audit_sync, see audit_defer), plus one syslog line
 * (authpriv) unless no_syslog. When the file would pass
 * max_bytes it becomes audit.jsonl.1 (.1 -> .2, ... keep files at most). Record members, absent
 * ones omitted: time (UTC RFC 3339), ts (seconds), event, grant, sub, iss, kid, sources, ports,
 * expires_at, reason, peer, code, message, count.
 */
struct audit;

struct audit_opts {
	uint64_t max_bytes;	/* 0: 10 MiB */
	unsigned keep;		/* 0: 5 */
	bool no_syslog;		/* no copy to syslog (audit.syslog false) */
};

/* The trail's options as the configuration c sets them ("audit"). */
struct audit_opts audit_opts_of(const struct config *c);

struct audit_rec {
	const char *event;
	const struct grant *grant;	/* optional: fills grant, sub, iss, kid, sources, ... */
	const char *grant_id;		/* when there is no struct grant */
	const char *peer;
	const char *code;
	const char *message;
	long long count;		/* < 0: absent */
	/* grant.refused of a grant whose grant.applied line is already in the trail, taken back */
	bool withdrawn;
	/*
	 * Optional, out: on success, a copy of the line and where it went (malloc'd, the
	 * caller's), for the journal to carry until the trail is durable (audit_recover).
	 */
	struct store_note *note;
};

int audit_open(const char *state_dir, const struct audit_opts *o, struct audit **out);
void audit_close(struct audit **a);
/* 0 or -errno; on error the record may be lost and the caller must not act as if audited. */
int audit_log(struct audit *a, const struct audit_rec *r);
/*
 * n records with one write, in order: all are written or none is (0 or -errno). A group's lines
 * go to one file: when they would take it past max_bytes it is rotated before the first (a
 * group larger than max_bytes on its own makes that file larger).
 */
int audit_log_many(struct audit *a, const struct audit_rec *r, size_t n);
/*
 * Group commit: while deferred, audit_log writes without fsync; audit_sync then makes every
 * record so far durable with one fsync (0 or -errno), and must succeed before the caller acts as
 * if any of them was audited.
 */
void audit_defer(struct audit *a, bool on);
int audit_sync(struct audit *a);
/*
 * fsync now, even while another thread holds the sync of what was written (audit_unsynced_fd).
 * Fails while audit_lost: a sync that holds says nothing of lines an earlier failure lost.
 */
int audit_sync_now(struct audit *a);
/*
 * A sync of the trail failed somewhere else (the syncer's threads, through the twin). Any
 * failed sync makes the trail lost (audit_lost, -errno, else 0) until audit_recover holds:
 * the kernel reports a writeback error once per open file, so a later sync that succeeds
 * proves nothing of lines written before, and the page cache still shows them.
 */
void audit_sync_failed(struct audit *a, int err);
int audit_lost(const struct audit *a);
/*
 * At start, before any record, and after a failed sync (audit_lost): the lines of notes
 * (audit_rec.note) that the journal carries and the trail lost (a crash before its fsync, a
 * failed writeback) are appended again, as they were written, and made durable. A line still
 * where it was written on the disk (the files' clean pages are dropped from the page cache
 * first), in this file or a rotated one, is left, and so is one that an earlier recovery put
 * back at the end of this file. *restored counts the lines appended. 0 (the trail no longer
 * lost) or -errno.
 */
int audit_recover(struct audit *a, const struct store_note *v, size_t n, size_t *restored);
/*
 * If records were written since the last fsync: *fd = a dup() of the trail, whose fsync is now
 * the caller's (another thread's), else *fd = -1. 0 or -errno (then nothing changed).
 */
int audit_unsynced_fd(struct audit *a, int *fd);
/* Which events a query returns; a member left NULL (since 0) does not narrow it. */
struct audit_filter {
	int64_t since;		/* ts >= since */
	const char *grant_id;	/* "grant" */
	const char *sub;	/* "sub", the user */
	const char *event;	/* "event", such as "grant.refused" */
};
/*
 * Events oldest first across the rotated files, those f lets through; at most max (the newest),
 * *truncated set if more. New array, NULL on OOM.
 */
json_t *audit_query(struct audit *a, const struct audit_filter *f, size_t max, bool *truncated);
/*
 * The trail as it is now, for a walk on another thread: its files opened and their lengths
 * noted, so that records written and files rotated meanwhile change nothing of what the walk
 * reads. 0 or -ENOMEM.
 */
struct audit_snapshot;
int audit_snapshot(struct audit *a, struct audit_snapshot **out);
/* audit_foreach over a snapshot; touches no struct audit, so any thread may run it. */
int audit_snapshot_foreach(struct audit_snapshot *s, int64_t since,
	int (*cb)(json_t *ev, void *arg), void *arg);
/* audit_query over a snapshot, likewise for any thread. */
json_t *audit_snapshot_query(struct audit_snapshot *s, const struct audit_filter *f, size_t max,
	bool *truncated);
/* NULLs *s; accepts NULL. */
void audit_snapshot_free(struct audit_snapshot **s);
/*
 * Calls cb for every event with ts >= since, oldest first; a non-zero return stops the walk.
 * The event is released after cb returns: cb keeps it with json_incref, and must not change it.
 */
int audit_foreach(struct audit *a, int64_t since, int (*cb)(json_t *ev, void *arg),
	void *arg);

#endif
