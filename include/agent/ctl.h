#ifndef JITD_AGENT_CTL_H
#define JITD_AGENT_CTL_H

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
 * reload) for uid 0 only, as SO_PEERCRED says. Returns 0 or -errno.
 */
int ctl_open(struct event_base *base, const struct config *cfg, struct enforce *enf,
	struct ctl **out);
/* Stops listening, drops clients, removes the socket file; NULLs *c; accepts NULL. */
void ctl_close(struct ctl **c);

#endif
