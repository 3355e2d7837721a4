#include <errno.h>
#include <stdio.h>
#include <sys/resource.h>

#include "agent/ctl.h"
#include "agent/fdbudget.h"
#include "common/config.h"

/* Descriptors beside the clients': journal, trail, replay cache, sockets, key files, spools. */
#define FD_RESERVE 128

int fdbudget_check(unsigned control_connections, const struct listen_config *l, char *msg,
	size_t len)
{
	unsigned long long need = (unsigned long long)control_connections + CTL_ROOT_RESERVE +
		FD_RESERVE + (l->enabled ? l->max_connections : 0);
	struct rlimit rl;

	if (getrlimit(RLIMIT_NOFILE, &rl) < 0 || rl.rlim_cur == RLIM_INFINITY ||
		need <= rl.rlim_cur)
		return 0;
	snprintf(msg, len, "listen.max_connections and limits.control_connections need %llu file "
		"descriptors with jitd's own, and this process may open %llu (RLIMIT_NOFILE; "
		"LimitNOFILE= in the unit)", need, (unsigned long long)rl.rlim_cur);
	return -EMFILE;
}
