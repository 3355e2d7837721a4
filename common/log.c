#include <stdarg.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/log.h"

/* Atomic: a reload sets it on the loop while a worker thread may log (wake.c's warning). */
static atomic_int threshold = LOG_LVL_INFO;
static bool keep_debug;

/* This thread's lines while held (log_hold): a group's "grant applied" lines, one write. */
#define HELD_MAX 16384
static __thread struct {
	bool on;
	size_t len;
	char buf[HELD_MAX];
} held;

void log_set_level(enum log_level lvl)
{
	atomic_store_explicit(&threshold, keep_debug ? LOG_LVL_DEBUG : (int)lvl,
		memory_order_relaxed);
}

void log_keep_debug(void)
{
	keep_debug = true;
	atomic_store_explicit(&threshold, LOG_LVL_DEBUG, memory_order_relaxed);
}

static void flush_held(void)
{
	if (held.len)
		(void)fwrite(held.buf, 1, held.len, stderr);
	held.len = 0;
}

void log_hold(bool on)
{
	held.on = on;
	if (!on)
		flush_held();
}

void log_msg(enum log_level lvl, const char *fmt, ...)
{
	/* sd-daemon(3) prefixes: journald maps them to priorities when stderr is captured. */
	static const char *const prefix[] = { "<3>", "<4>", "<6>", "<7>" };
	char line[1024], out[sizeof(line) + 16];
	size_t len;
	va_list ap;
	int n;

	if ((int)lvl > atomic_load_explicit(&threshold, memory_order_relaxed))
		return;
	va_start(ap, fmt);
	(void)vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	n = snprintf(out, sizeof(out), "%sjitd: %s\n", prefix[lvl], line);
	len = n < 0 ? 0 : (size_t)n < sizeof(out) ? (size_t)n : sizeof(out) - 1;
	if (!held.on) {
		(void)fwrite(out, 1, len, stderr);
		return;
	}
	if (held.len + len > sizeof(held.buf))
		flush_held();
	memcpy(held.buf + held.len, out, len);
	held.len += len;
}
