#ifndef JITD_AGENT_CONNSHARE_H
#define JITD_AGENT_CONNSHARE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * The controller endpoint's connections by client, the rate limit's clients (an IPv4 address,
 * an IPv6 /64; on loopback root, jitd's own user, and all other users together), so that one
 * client cannot keep the others out by holding every connection. While the endpoint is full,
 * a new connection may take the place of the longest-idle connection (no request of it being
 * served: one still arriving is idle, or a trickled request would hold its place) of the
 * client holding the most among those with one idle, and only if that client holds two or
 * more: no client loses its only one, and a controller holding fewer than a flooding client
 * keeps its own. Clients sharing an address (a NAT) are one.
 *
 * Every operation is O(1) but for finding the next-heaviest client when the heaviest drops
 * out: a walk down the counts between the two. A connection's memory is connshare's until
 * connshare_leave.
 */
struct connshare;
struct connshare_conn;

/* max: the most connections at once, as many as may join. 0, -EINVAL (max 0) or -ENOMEM. */
int connshare_new(size_t max, struct connshare **out);
/* Every connection must have left. NULLs *cs; accepts NULL. */
void connshare_free(struct connshare **cs);
/*
 * A connection of the client key names (ratelimit_client_key) joins, not idle; owner is what
 * connshare_victim names it by. A NULL key (its client unknown) joins no client: it counts for
 * none and is never chosen. 0, -ENOSPC (max already joined) or -ENOMEM.
 */
int connshare_join(struct connshare *cs, const uint8_t key[16], void *owner,
	struct connshare_conn **out);
/* *c leaves and is freed; NULLs *c, accepts NULL. */
void connshare_leave(struct connshare *cs, struct connshare_conn **c);
/*
 * idle: c waits for its client (a new connection, or the last reply has left); its idle time
 * counts from now. Not idle: a request of c's is being served, and c is not chosen meanwhile.
 */
void connshare_idle(struct connshare *cs, struct connshare_conn *c, bool idle);
/* The owner of the connection to close for a newcomer (see above), or NULL if none may go. */
void *connshare_victim(const struct connshare *cs);

#endif
