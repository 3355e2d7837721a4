/* Usage errors, said one way by jitd and jitctl: the reason, then where the help is. */
#include <getopt.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/cliopt.h"

int cliopt_vusage_error(const char *who, const char *fmt, va_list ap)
{
	fprintf(stderr, "%s: ", who);
	vfprintf(stderr, fmt, ap);
	fprintf(stderr, "\n");
	cliopt_try_help(who);
	return CLIOPT_USAGE;
}

int cliopt_usage_error(const char *who, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)cliopt_vusage_error(who, fmt, ap);
	va_end(ap);
	return CLIOPT_USAGE;
}

void cliopt_try_help(const char *who)
{
	fprintf(stderr, "Try '%s --help'.\n", who);
}

/*
 * getopt's own messages would start with argv[0], the bare program or command name: said our
 * way. at is optind before the call that failed: getopt moves past a word once it is done
 * with it, so when it has not, the error is inside a cluster of short options ("-xk",
 * argv[optind]). It may have skipped operands to reach that word ("revoke ID -é"): then
 * optind is past at, and the word before is an operand, never an option word as it is when
 * getopt is done with the word that failed. Otherwise the word that failed is
 * argv[optind - 1]; there optopt of a long option given a value it takes none of is its val,
 * not a short option.
 */
int cliopt_bad_option(const char *who, int c, char **argv, int at)
{
	const char *before = optind > 0 ? argv[optind - 1] : NULL;
	bool inside = argv[optind] && (optind == at || !before || before[0] != '-' ||
		!before[1]);
	const char *word = inside ? argv[optind] : argv[optind - 1];

	if (c == ':')
		return cliopt_usage_error(who, "%s: missing argument", argv[optind - 1]);
	if (inside && optopt > 0 && optopt < 128)
		return cliopt_usage_error(who, "-%c: unknown option", optopt);
	if (inside)
		return cliopt_usage_error(who, "%s: unknown option", word);
	if (!strncmp(word, "--", 2))
		return cliopt_usage_error(who, "%s: unknown, ambiguous, or given a value it takes "
			"none of", word);
	if (optopt > 0 && optopt < 128)
		return cliopt_usage_error(who, "-%c: unknown option", optopt);
	return cliopt_usage_error(who, "%s: unknown or ambiguous option", word);
}
