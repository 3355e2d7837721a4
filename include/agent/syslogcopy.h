#ifndef JITD_AGENT_SYSLOGCOPY_H
#define JITD_AGENT_SYSLOGCOPY_H

#include <stdbool.h>
#include <stdint.h>

/*
 * The audit trail's copy to the system log, facility authpriv, that never waits. glibc's
 * syslog(3) sends on a blocking socket: a syslog daemon that falls behind (journald stuck or
 * restarting, its queue full) held the event loop, and every grant with it, until the
 * watchdog restarted jitd, whose next line blocked again. Here a line the socket has no room
 * for is dropped and counted, and the count is logged once a line goes through again; the
 * trail itself has every record. While nothing listens at the path (containers, minimal VMs)
 * it is looked for again at most every 10 s, not per line.
 */
struct syslog_copy;

/*
 * path: _PATH_LOG, or a test's socket; each message follows prefix. Connects at the first
 * line. 0 or -ENOMEM.
 */
int syslog_copy_open(const char *path, const char *ident, const char *prefix,
	struct syslog_copy **out);
/* NULLs *s; accepts NULL. */
void syslog_copy_close(struct syslog_copy **s);
/*
 * Whether a line would be sent (connected, or found now): the caller may spare the lines'
 * preparation when not. now: wall seconds. s NULL (no copy): false.
 */
bool syslog_copy_ready(struct syslog_copy *s, int64_t now);
/* "<PRI>Mmm dd hh:mm:ss IDENT[PID]: PREFIXmsg", as syslog(3) sends it; now: wall seconds. */
void syslog_copy_send(struct syslog_copy *s, int priority, const char *msg, int64_t now);
/* Lines dropped since the last that went through (for tests). */
unsigned long syslog_copy_dropped(const struct syslog_copy *s);

#endif
