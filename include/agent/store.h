#ifndef JITD_AGENT_STORE_H
#define JITD_AGENT_STORE_H

#include <stddef.h>

/*
 * Durable record of the active grants, so that a restart of jitd restores exactly what it had
 * granted: one file per grant under state_dir/grants/, holding the signed token as received
 * (re-verified on load, so a removed key or a tightened policy takes effect). Each write is
 * temporary file + fsync + rename + fsync of the directory, done before the kernel changes.
 */
struct store;

/* Creates state_dir/grants (0700) if needed. Returns 0 or -errno. */
int store_open(const char *state_dir, struct store **out);
/* Closes and NULLs *s; accepts NULL. */
void store_close(struct store **s);
/* Durably records token as the grant jti. Returns 0 or -errno. */
int store_put(struct store *s, const char *jti, const char *token, size_t len);
/* Removes the record of jti (absent is fine). Returns 0 or -errno. */
int store_del(struct store *s, const char *jti);
#define STORE_KEEP 0
#define STORE_REMOVE 1
/*
 * Calls cb(token, len, arg) for every recorded token (NUL-terminated, at most 16 KiB). cb returns
 * STORE_KEEP, STORE_REMOVE (the record is deleted: no longer valid), or < 0 to stop the walk with
 * that error. Unreadable records are skipped with a warning.
 */
int store_foreach(struct store *s, int (*cb)(const char *token, size_t len, void *arg), void *arg);

#endif
