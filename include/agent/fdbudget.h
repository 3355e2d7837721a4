#ifndef JITD_AGENT_FDBUDGET_H
#define JITD_AGENT_FDBUDGET_H

#include <stddef.h>

struct config;

/*
 * Every controller and control-socket client holds a descriptor, and every reader of the audit
 * trail (log queries, the activity rebuild, the trail's check after a failed sync) one per
 * file of it. Short of them, accept pauses, but key files can no longer be opened either:
 * every grant would be refused as internal and every reload refused. A configuration that asks
 * for more than the process may open is refused (at the start, by --check-config and by a
 * reload) rather than found out under load. started: the configuration the start read (the
 * endpoint and the trail keep its settings until a restart); control_connections: the one to
 * apply. 0, or -EMFILE with msg saying what needs how many.
 */
int fdbudget_check(const struct config *started, unsigned control_connections, char *msg,
	size_t len);

#endif
