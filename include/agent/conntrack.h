#ifndef JITD_AGENT_CONNTRACK_H
#define JITD_AGENT_CONNTRACK_H

#include <stdbool.h>
#include <stddef.h>

struct grant;
struct prefix;

/*
 * The conntrack entries of the connections grants let in, through ctnetlink (libnl-nf-3), in
 * the network namespace the handle was opened in. An entry belongs to a grant when one end is
 * inside one of g->src and the other is a local (protocol, port) of g->ports, whatever the
 * local address: the original source and the reply's source port (the port after any DNAT,
 * which jitd's input chain matched), or, for an entry conntrack picked up again from a packet
 * the local server sent after a kill, the reply's source and the original source port. So a
 * local outgoing connection bound to a protected port as its source port counts as well.
 * A gateway grant's entry must also have its other end inside one of g->dst.
 * Functions return 0 or -errno: -EPERM without CAP_NET_ADMIN, -ENOMEM, -EIO for anything
 * else, a kernel without nf_conntrack_netlink among it (nfnetlink answers EINVAL for a
 * subsystem it does not have).
 */
struct conntrack;

/*
 * Opens one NETLINK_NETFILTER socket and asks ctnetlink for its statistics, so that a missing
 * module or privilege shows here rather than at the first revocation. Returns 0 or -errno.
 */
int conntrack_open(struct conntrack **out);
/* Closes and NULLs *c; accepts NULL and *c == NULL. */
void conntrack_close(struct conntrack **c);

/*
 * Without kill: *count = the grant's live flows, TCP entries in state ESTABLISHED and UDP
 * entries of any age. With kill: deletes every entry of the grant, TCP in any state, and
 * *count = the number deleted; an entry that vanished meanwhile is not an error. IPv4 and IPv6.
 * On error *count is 0 when counting, and the number deleted all the same when killing.
 */
int conntrack_flows(struct conntrack *c, const struct grant *g, bool kill, long *count);
/*
 * conntrack_flows with kill, but an entry that one of keep[0..n_keep) also matches stays, and
 * so does one whose end in g's sources is inside one of always[0..n_always): the revocation of
 * g leaves the sessions another live grant or the always-allowed sources let in. An entry that
 * came in through one of g's gateway ports (DNAT) is no other grant's, nor left to always_allow:
 * without g's mapping the flow no longer reaches the machine behind.
 */
int conntrack_cut(struct conntrack *c, const struct grant *g, const struct grant *keep,
	size_t n_keep, const struct prefix *always, size_t n_always, long *count);
/*
 * conntrack_flows without kill for n grants in one dump: counts[i] for grants[i], 0 on error;
 * an entry whose end in a grant's sources is inside one of always[0..n_always) is not counted
 * (but for one through the grant's own gateway port), as conntrack_cut does not cut it.
 */
int conntrack_count_many(struct conntrack *c, const struct grant *grants, size_t n,
	const struct prefix *always, size_t n_always, long *counts);

#endif
