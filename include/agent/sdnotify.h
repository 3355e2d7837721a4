#ifndef JITD_AGENT_SDNOTIFY_H
#define JITD_AGENT_SDNOTIFY_H

/*
 * systemd's readiness protocol (sd_notify(3)): one datagram to $NOTIFY_SOCKET. Implemented
 * directly, as systemd documents the datagram as the stable interface, rather than linking
 * libsystemd for one call. Returns 0 (also when not run by systemd) or -errno.
 */
int sdnotify_send(const char *state);

#endif
