#include <string.h>

#include "common/events.h"

const char *const audit_event_names[] = { "grant.applied", "grant.refused", "grant.revoked",
	"grant.expired", "grant.remapped", "revocation.refused", "flows.terminated",
	"config.loaded", "config.refused", "drift.repaired", "state.damaged", "agent.started",
	"agent.stopped", "agent.lockdown", "agent.teardown" };
const size_t audit_event_count = sizeof(audit_event_names) / sizeof(audit_event_names[0]);

bool audit_event_known(const char *name)
{
	for (size_t i = 0; i < audit_event_count; i++)
		if (!strcmp(name, audit_event_names[i]))
			return true;
	return false;
}
