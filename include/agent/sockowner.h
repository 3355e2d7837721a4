#ifndef JITD_AGENT_SOCKOWNER_H
#define JITD_AGENT_SOCKOWNER_H

#include <stdbool.h>
#include <sys/types.h>
#include <unistd.h>

/*
 * Who owns the other end of a TCP connection that came from this host (a loopback client), as
 * the kernel reports it (NETLINK_SOCK_DIAG, the interface ss(8) reads): the user that created
 * the client's socket. A TCP peer sends no credentials (no SO_PEERCRED), so this is how the
 * controller endpoint tells root's loopback clients from any other local user's.
 */

/*
 * fd: a connected TCP socket of ours. *uid: the owner of the socket at its other end, when that
 * is a socket of this network namespace that a process still holds, connected or shut down for
 * writing (not a closed one, a TIME_WAIT or a half-open entry: the kernel reports those as
 * root's). 0, -ENOENT (no such socket: the peer is not local, or closed), -EPROTO (a reply
 * that does not parse) or another -errno.
 */
int sockowner_peer_uid(int fd, uid_t *uid);
/*
 * Whether a socket's owner may stand for jitd's side: root, or the user jitd runs as. Every
 * other local user is only that (the controller endpoint's status and fair share, the network
 * namespace's lock). Here, not in sockowner.c: it asks the kernel nothing.
 */
static inline bool sockowner_trusted(uid_t uid)
{
	return uid == 0 || uid == geteuid();
}

/*
 * The owner of the unix stream socket of this network namespace that listens, or is bound and
 * not connected, on the abstract name name (no leading NUL): the user that created it, which it
 * cannot choose (unlike what it sends). 0, -ENOENT (none: a socket bound to it and connected
 * elsewhere is not one), -EOPNOTSUPP (the kernel cannot say: no unix_diag, or before Linux 5.3)
 * or another -errno.
 */
int sockowner_abstract_uid(const char *name, uid_t *uid);

#endif
