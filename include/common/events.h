#ifndef JITD_COMMON_EVENTS_H
#define JITD_COMMON_EVENTS_H

#include <stdbool.h>
#include <stddef.h>

/*
 * The audit trail's event names: every "event" jitd writes, and what jitctl log --event takes,
 * so that a typo there is a usage error instead of an empty answer. A test build of jitd
 * refuses to write a name that is not here (agent/audit.c).
 */
extern const char *const audit_event_names[];
extern const size_t audit_event_count;
bool audit_event_known(const char *name);

#endif
