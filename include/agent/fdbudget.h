#ifndef JITD_AGENT_FDBUDGET_H
#define JITD_AGENT_FDBUDGET_H

#include <stddef.h>

struct listen_config;

/*
 * Every controller and control-socket client holds a descriptor. Short of them, accept pauses,
 * but key files can no longer be opened either: every grant would be refused as internal and
 * every reload refused. A configuration that asks for more than the process may open is refused
 * (at the start, by --check-config and by a reload) rather than found out under load.
 * 0, or -EMFILE with msg saying what needs how many.
 */
int fdbudget_check(unsigned control_connections, const struct listen_config *l, char *msg,
	size_t len);

#endif
