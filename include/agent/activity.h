#ifndef JITD_AGENT_ACTIVITY_H
#define JITD_AGENT_ACTIVITY_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

#include "common/grant.h"

/*
 * Recent activity per protected port, the columns operators know from cloud JIT consoles:
 * grants approved in the last 7 days, when access was last granted and to whom. Kept in memory,
 * rebuilt at start-up from the audit trail's grant.applied events (activity_rebuild), but for
 * grants a later grant.refused withdrew.
 */
#define ACTIVITY_WINDOW_SEC (7 * 24 * 3600)

struct activity;

struct port_activity {
	unsigned grants_7d;
	int64_t last_access;	/* seconds since the epoch; 0 = never */
	char last_user[GRANT_MAX_STRING + 1];
	bool pending;		/* the trail is still being read: nothing is known yet */
	/* It could not be read at the start, a week ago at most: grants_7d is not known. */
	bool week_unknown;
};

/* Returns 0 or -ENOMEM. */
int activity_new(struct activity **out);
/* A rebuild still running is stopped, not waited out. NULLs *a; accepts NULL. */
void activity_free(struct activity **a);
/*
 * A grant was applied at `when`: counts once for each (port, protocol) it opens, and once for
 * each port under ipproto 0 (what a port open to TCP and UDP both reads). 0 or -ENOMEM.
 */
int activity_note(struct activity *a, const struct grant *g, int64_t when);
/* The same from an audit record; events other than grant.applied are ignored. 0 or -ENOMEM. */
int activity_note_event(struct activity *a, const json_t *ev);
/*
 * Takes a rebuild (activity_rebuild) that has finished into the history, once per status
 * before its activity_port calls, so that all its rows are of one state. The first call while
 * the rebuild runs waits up to a second for it, the next ones not at all.
 */
void activity_ready(struct activity *a);
/*
 * Activity of (port, ipproto) as of now, ipproto 0 for the port whatever the protocol; zeroed
 * when there was none; while a rebuild runs (activity_ready did not take it), zeroed with
 * pending set; within a week of a rebuild that failed, with week_unknown set.
 */
void activity_port(struct activity *a, uint16_t port, uint8_t ipproto, int64_t now,
	struct port_activity *out);

struct audit;
/*
 * Rebuilds the history from the audit trail's grant.applied events since `since`, on a thread
 * of its own: at 100,000 records that is 0.4 s, which start-up must not wait for. Grants noted
 * meanwhile count as well; what the trail held when this was called is read, nothing later.
 * The result joins the history when activity_port needs it or activity_settle finds it done.
 * 0 or -errno (then the history starts from now: said in the log, and grants_7d not known
 * for a week, week_unknown; so too when the thread's read fails).
 */
int activity_rebuild(struct activity *a, struct audit *audit, int64_t since);
/* Takes a finished rebuild into the history; with wait, waits for it first. */
void activity_settle(struct activity *a, bool wait);

#endif
