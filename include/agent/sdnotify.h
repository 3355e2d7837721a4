#ifndef JITD_AGENT_SDNOTIFY_H
#define JITD_AGENT_SDNOTIFY_H

#include <stdint.h>

/*
 * systemd's service protocol (sd_notify(3)): through libsystemd when jitd is built with it
 * (HAVE_LIBSYSTEMD), else one datagram to $NOTIFY_SOCKET, which systemd documents as the stable
 * interface. Both do nothing outside systemd.
 */

/* Sends state ("READY=1", "WATCHDOG=1", ...). Returns 0 (also when not run by systemd) or -errno. */
int sdnotify_send(const char *state);
/*
 * The watchdog interval systemd expects pings within (WatchdogSec=), in microseconds, or 0 when
 * no watchdog is set for this process (as sd_watchdog_enabled(3)).
 */
uint64_t sdnotify_watchdog_usec(void);

#endif
