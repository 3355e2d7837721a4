#ifndef JITD_AGENT_SYNCER_H
#define JITD_AGENT_SYNCER_H

#include <stdbool.h>
#include <stdint.h>

struct event_base;
struct syncer;

/*
 * Durability off the event loop. A group commit writes its journal records and audit lines,
 * sends its kernel transaction, and hands the fdatasyncs to the syncer's threads, one per fd
 * slot of a request (the journal's, the audit trail's), which sync side by side; the loop
 * reads, verifies and commits the next group meanwhile, and answers the first group's grants
 * once its files are durable. A pass of a thread takes its slot of every request queued by
 * then and syncs each file they name there once. A group alone may be synced on the loop
 * instead (syncer_request_here), where nothing else would run meanwhile.
 */
#define SYNC_MAX_FDS 2

/* One request. The caller owns the storage and keeps it until the request comes back. */
struct sync_req {
	struct sync_req *next;
	/* In: syncer_take descriptors of the files to sync, or -1; the syncer closes them. */
	int fd[SYNC_MAX_FDS];
	/*
	 * Out: 0 or the first -errno of the passes that covered it, and the longest of their
	 * durations.
	 */
	int ret;
	int64_t sync_us;
	unsigned left;		/* the syncer's: threads not yet done with it */
};

/*
 * For the modules that own the files: *out = a descriptor of fd's file (dirfd/name) with an open
 * file description of its own, kept for syncer_take. The kernel reports a file's writeback error
 * once to each open description: through a dup() of fd, the owner's own fdatasyncs (a durable
 * append on the loop) could take the report that a group's sync needed, and the group would be
 * answered as durable. Read-only, which fdatasync allows. 0, -ESTALE (name is another file by
 * now) or -errno.
 */
int syncer_open_twin(int dirfd, const char *name, int fd, int *out);

/*
 * If *dirty (written since the last sync), *out = a dup() of twin (syncer_open_twin) for a
 * request, and *dirty cleared (its sync is the syncer's now); else *out = -1. 0 or -errno (then
 * nothing changed).
 */
int syncer_take(int twin, bool *dirty, int *out);

/* Called on the loop with finished requests, oldest first. */
typedef void (*syncer_done_fn)(struct sync_req *done, void *arg);

/* 0 or -errno. */
int syncer_open(struct event_base *base, syncer_done_fn done, void *arg, struct syncer **out);
/* Finishes and delivers every request first (syncer_wait), then stops; NULLs *s, accepts NULL. */
void syncer_close(struct syncer **s);
/*
 * What a pass does, for r alone and on the caller's thread: when a group's files cannot be
 * handed over. Closes r's fds; 0 or the first -errno.
 */
int syncer_sync_here(struct sync_req *r);
/* Queues r (its fds set). */
void syncer_request(struct syncer *s, struct sync_req *r);
/*
 * As syncer_request, but r's fdatasync runs here, on the caller's thread (the loop), when that
 * costs the loop no more than its own wait: nothing is queued, r names one file (two are synced
 * side by side by the lanes), and the latest sync took less than 5 ms. r comes back through
 * done on the loop's next turn, in order, as if a lane had synced it.
 */
void syncer_request_here(struct syncer *s, struct sync_req *r);
/*
 * Blocks until every request made so far is finished, and delivers them through done on this
 * thread before it returns: for whatever must not overtake a commit still settling.
 */
void syncer_wait(struct syncer *s);

#endif
