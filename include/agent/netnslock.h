#ifndef JITD_AGENT_NETNSLOCK_H
#define JITD_AGENT_NETNSLOCK_H

#include <sys/types.h>

/*
 * One jitd per network namespace. Table inet jitd is the namespace's, and a second agent with
 * a state directory and control socket of its own (a copied configuration run by hand) would
 * take the first one's grants for strays and delete them, each undoing the other. jitd holds an
 * abstract unix socket (NETNSLOCK_NAME) while it runs: an abstract name belongs to the network
 * namespace, needs no file, and goes with the process however it ends.
 *
 * Abstract names have no permissions, so any local user could take the name first. The
 * holder's credentials tell (SO_PEERCRED on a connection to it): only a holder that is root, or
 * this process's own user, counts as a jitd. Another's is ignored, with a warning, rather than
 * let any user keep jitd from starting.
 */
#define NETNSLOCK_NAME "jitd.netns.lock"

struct event_base;
struct netnslock;

/*
 * Takes the lock for as long as *out lives; the connections its probes make are accepted and
 * closed on base. 0 (also when a user other than root holds the name: *squatter is then that
 * user's process, else 0), -EADDRINUSE (another jitd holds it: *holder its pid), or -errno.
 */
int netnslock_take(struct event_base *base, struct netnslock **out, pid_t *holder,
	pid_t *squatter);
/* Lets go. NULLs *l; accepts NULL. */
void netnslock_release(struct netnslock **l);
/*
 * Whether a jitd holds the lock of the caller's network namespace (jitctl teardown): 1 and *pid
 * (0 when it cannot be had: its backlog full), 0 when nothing, or a user other than root,
 * holds it, or -errno.
 */
int netnslock_holder(pid_t *pid);

#endif
