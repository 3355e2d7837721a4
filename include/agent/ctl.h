#ifndef JITD_AGENT_CTL_H
#define JITD_AGENT_CTL_H

/*
 * Places beyond limits.control_connections that only root may take: members of control_group
 * may read, and so fill the table, but must not shut root's revoke or grant out.
 */
#define CTL_ROOT_RESERVE 4
/*
 * Log queries read on threads of their own, at most this many at once, and one more for root:
 * each holds up to PROTO_LOG_MAX_EVENTS parsed events (tens of MB) and a descriptor per file of the
 * audit trail while it runs; more get "busy". The one more is root's, so that members of
 * control_group, who may run two, cannot keep root from reading the trail.
 */
#define CTL_LOG_JOBS_MAX 2
#define CTL_LOG_JOBS_ROOT 1	/* the one more for root */

struct config;
struct ctl;
struct enforce;
struct event_base;

/*
 * The local control socket (Unix, newline-delimited JSON, see common/proto.h) at
 * cfg->control_socket: mode 0660, owner root, group cfg->control_group (0600 when that group
 * does not exist). Refuses to start if another agent answers there, and serves each client with
 * a size cap and within PROTO_TIMEOUT_MS of its connect. Read-only calls (status, log) for
 * anyone who can connect; calls that change grants or the configuration (submit, revoke, grant,
 * reload) for uid 0 only, as SO_PEERCRED says. The socket's directory is made (0750, group
 * cfg->control_group) when it does not exist. Opened before the enforcer, so that a socket
 * that cannot be had stops the start before the table closes any port: bound, not listened
 * on, so that clients are refused until ctl_attach. Returns 0 or -errno.
 */
int ctl_open(struct event_base *base, const struct config *cfg, struct ctl **out);
/* The enforcer the clients' calls go to; then listens. 0 or -errno. */
int ctl_attach(struct ctl *c, struct enforce *enf);
/* Stops listening, drops clients, removes the socket file; NULLs *c; accepts NULL. */
void ctl_close(struct ctl **c);

#endif
