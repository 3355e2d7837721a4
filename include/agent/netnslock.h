#ifndef JITD_AGENT_NETNSLOCK_H
#define JITD_AGENT_NETNSLOCK_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * One jitd per network namespace. Table inet jitd is the namespace's, and a second agent with a
 * state directory and control socket of its own (a copied configuration run by hand) would take
 * the first one's grants for strays and delete them, each undoing the other. jitd holds an
 * abstract unix socket (NETNSLOCK_NAME) while it runs: an abstract name belongs to the network
 * namespace, needs no file, and goes with the process however it ends.
 *
 * Abstract names have no permissions, so any local user could take the name first. Who holds it
 * is asked of the kernel (sockowner_abstract_uid: the listening or bound stream socket's owner,
 * which no holder can choose): only a holder that is root, or this process's own user, counts as
 * a jitd. Another's is ignored, with a warning, rather than let any user keep jitd from starting
 * or teardown from running, and the name asked for again until it is let go. Its pid, for
 * messages, comes from a connection to it (SO_PEERCRED) when it answers.
 */
#define NETNSLOCK_NAME "jitd.netns.lock"
/* How often jitd asks again for a name another user's process holds. */
#define NETNSLOCK_RETRY_SEC 10

struct event_base;
struct netnslock;

struct netnslock_who {
	bool held;	/* someone holds the name */
	bool jitd;	/* and it is root's, or this process's user's */
	bool unsure;	/* held, but whose it is cannot be told (see who_holds) */
	pid_t pid;	/* its pid; 0: it did not say */
};

/*
 * Takes the lock for as long as *out lives; the connections that ask who holds it are accepted
 * and closed on base. 0 and *out: taken (who->held false), or the name is held by no jitd, or
 * by whom cannot be told (who says which): jitd starts all the same, since any user can take an
 * abstract name, and *out asks for it again every retry_sec seconds on base until it has it
 * (logged). -EADDRINUSE when a jitd holds it, or -errno.
 */
int netnslock_take(struct event_base *base, unsigned retry_sec, struct netnslock **out,
	struct netnslock_who *who);
/* Lets go. NULLs *l; accepts NULL. */
void netnslock_release(struct netnslock **l);
/* Who holds the lock of the caller's network namespace (jitctl teardown). 0 or -errno. */
int netnslock_holder(struct netnslock_who *who);
/* "pid 123", or "its pid unknown": who's pid for a message. Returns buf. */
const char *netnslock_pid_text(const struct netnslock_who *who, char *buf, size_t len);

#endif
