#include <stdarg.h>
#include <stdio.h>

#include "common/log.h"

static enum log_level threshold = LOG_LVL_INFO;

void log_set_level(enum log_level lvl)
{
	threshold = lvl;
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	/* sd-daemon(3) prefixes: journald maps them to priorities when stderr is captured. */
	static const char *const prefix[] = { "<3>", "<4>", "<6>", "<7>" };
	char line[1024];
	va_list ap;

	if (lvl > threshold)
		return;
	va_start(ap, fmt);
	(void)vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	fprintf(stderr, "%sjitd: %s\n", prefix[lvl], line);
}
