#ifndef JITD_AGENT_ACTIVITY_H
#define JITD_AGENT_ACTIVITY_H

#include <stdint.h>

#include <jansson.h>

#include "common/grant.h"

/*
 * Recent activity per protected port, the columns operators know from cloud JIT consoles:
 * grants approved in the last 7 days, when access was last granted and to whom. Kept in memory,
 * rebuilt at start-up from the audit trail's grant.applied events.
 */
#define ACTIVITY_WINDOW_SEC (7 * 24 * 3600)

struct activity;

struct port_activity {
	unsigned grants_7d;
	int64_t last_access;	/* seconds since the epoch; 0 = never */
	char last_user[GRANT_MAX_STRING + 1];
};

/* Returns 0 or -ENOMEM. */
int activity_new(struct activity **out);
/* NULLs *a; accepts NULL. */
void activity_free(struct activity **a);
/* A grant was applied at `when`: counts once for each (port, protocol) it opens. 0 or -ENOMEM. */
int activity_note(struct activity *a, const struct grant *g, int64_t when);
/* The same from an audit record; events other than grant.applied are ignored. 0 or -ENOMEM. */
int activity_note_event(struct activity *a, const json_t *ev);
/* Activity of (port, ipproto) as of now; zeroed when there was none. */
void activity_port(const struct activity *a, uint16_t port, uint8_t ipproto, int64_t now,
	struct port_activity *out);

#endif
