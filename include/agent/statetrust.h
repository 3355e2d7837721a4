#ifndef JITD_AGENT_STATETRUST_H
#define JITD_AGENT_STATETRUST_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

/*
 * Whoever can write jitd's state can give themselves access: a start restores the journal's
 * grants without checking their signatures again (they were checked before they were recorded)
 * and a local grant has none, and replay.db says which ids were used. So the state directory,
 * and each file a start reads from it, must be root's (or jitd's user's) and writable by no
 * one else, as the configuration and the trusted keys must. The packaged unit's
 * StateDirectory= is; a state_dir of the operator's own choosing may not be.
 */

/* What a message of a refused directory or file tells the operator to do. */
#define STATETRUST_FIX_DIR "make it root's, and writable only by its owner"
#define STATETRUST_FIX_FILE "make it a regular file of root's, writable only by its owner"

/*
 * fd (path, for the message) is such, and of type (S_IFREG or S_IFDIR): 0, or -EPERM with msg
 * saying why (common/filetrust.h), or -errno.
 */
int statetrust_fd(int fd, mode_t type, const char *path, char *msg, size_t len);
/*
 * The same of the file dir/name opened as a start opens it (flags: O_RDONLY, O_RDWR; never a
 * link), when it exists (0 when it does not). An open that fails is said in msg too, and is
 * never -EPERM (-EACCES then).
 */
int statetrust_file(const char *dir, const char *name, int flags, char *msg, size_t len);
/*
 * The same of the directory dir, when it exists (through a link, as a start opens it; an open
 * that fails said as statetrust_file says it); when it does not, 0 if a start can make it,
 * else -ENOENT (a link to nothing, no parent) with msg saying why.
 */
int statetrust_dir(const char *dir, char *msg, size_t len);
/*
 * Whether the directory dir may be read by group or others, said in msg: whoever may read it
 * may hold its lock, which otherwise says another jitd uses it. Such a lock is not trusted: a
 * start that finds it held fails (closing the ports as a failing start does) rather than stop
 * as taken, and the lockdown does not ask it. A warning, not a refusal: a directory made so
 * before is kept, and serves while nobody holds its lock.
 */
bool statetrust_dir_readable(const char *dir, char *msg, size_t len);

#endif
