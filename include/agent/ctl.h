#ifndef JITD_AGENT_CTL_H
#define JITD_AGENT_CTL_H

struct ctl;
struct enforce;
struct event_base;

/*
 * The local control socket (Unix, newline-delimited JSON, see common/proto.h). Binds path with
 * mode 0660, refusing to start if another agent answers there, and serves each client with a
 * size cap and a timeout. Returns 0 or -errno.
 */
int ctl_open(struct event_base *base, const char *path, struct enforce *enf, struct ctl **out);
/* Stops listening, drops clients, removes the socket file; NULLs *c; accepts NULL. */
void ctl_close(struct ctl **c);

#endif
