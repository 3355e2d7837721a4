#ifndef JITD_COMMON_LOG_H
#define JITD_COMMON_LOG_H

#include <stdarg.h>
#include <stdbool.h>

/* One line per event on stderr (systemd adds the timestamp when it captures it). */
enum log_level { LOG_LVL_ERR, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };

/* The level the configuration asks for; debug whatever it asks after log_keep_debug. */
void log_set_level(enum log_level lvl);
/* jitd -v: debug from now on, through every reload's log_set_level. */
void log_keep_debug(void);
void log_msg(enum log_level lvl, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/*
 * While on, this thread's lines gather and go out with one write when it is turned off (or
 * when 16 KiB have gathered): a group's lines, one per grant. Other threads write at once.
 */
void log_hold(bool on);

#define log_err(...) log_msg(LOG_LVL_ERR, __VA_ARGS__)
#define log_warn(...) log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...) log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) log_msg(LOG_LVL_DEBUG, __VA_ARGS__)

#endif
