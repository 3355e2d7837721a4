#ifndef JITD_COMMON_CLIOPT_H
#define JITD_COMMON_CLIOPT_H

#include <stdarg.h>

/*
 * Usage errors of jitd and jitctl, said one way on stderr: "WHO: why", then "Try 'WHO
 * --help'." WHO is what the user typed to get there: "jitd", "jitctl", "jitctl status".
 * Nothing goes to stdout, which a script may be reading.
 */
#define CLIOPT_USAGE 2 /* the exit status of a usage error, jitd's and jitctl's */

int cliopt_usage_error(const char *who, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
int cliopt_vusage_error(const char *who, const char *fmt, va_list ap)
	__attribute__((format(printf, 2, 0)));
/*
 * Where the help is, the usage error's last line: alone for a command that says every usage
 * error it found (jitctl sign's missing options) before it.
 */
void cliopt_try_help(const char *who);
/*
 * An option getopt_long refused, said as cliopt_usage_error says it. The optstring starts
 * with ':' (so that getopt says nothing itself, and a missing value is c ':'); at is optind
 * before the call that returned c. Returns CLIOPT_USAGE.
 */
int cliopt_bad_option(const char *who, int c, char **argv, int at);

#endif
