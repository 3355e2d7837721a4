#include <errno.h>
#include <stdio.h>
#include <sys/resource.h>

#include "agent/ctl.h"
#include "agent/fdbudget.h"
#include "common/config.h"

/* Descriptors beside the clients': journal, trail, replay cache, sockets, key files, spools. */
#define FD_RESERVE 128
/*
 * The trail's readers at once: the log queries, the activity rebuild, the trail's check. Each
 * holds a descriptor per file (audit.keep + 1) and another for the one it reads.
 */
#define TRAIL_READERS (CTL_LOG_JOBS_MAX + CTL_LOG_JOBS_ROOT + 2)

int fdbudget_check(const struct config *started, unsigned control_connections, char *msg,
	size_t len)
{
	const struct listen_config *l = &started->listen;
	unsigned long long need = (unsigned long long)control_connections + CTL_ROOT_RESERVE +
		FD_RESERVE + (l->enabled ? l->max_connections : 0) +
		(unsigned long long)TRAIL_READERS * (started->audit_keep + 2);
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
		need <= rl.rlim_cur)
		return 0;
	snprintf(msg, len, "listen.max_connections, limits.control_connections and audit.keep need "
		"%llu file descriptors with jitd's own, and this process may open %llu "
		"(RLIMIT_NOFILE; LimitNOFILE= in the unit)", need, (unsigned long long)rl.rlim_cur);
	return -EMFILE;
}
