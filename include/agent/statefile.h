#ifndef JITD_AGENT_STATEFILE_H
#define JITD_AGENT_STATEFILE_H

#include <sys/stat.h>
#include <sys/types.h>

/*
 * How jitd opens a file in its state directory. Root, or jitd's user, may have left anything at
 * one of its names (a FIFO, a device, a link): none of it may hold up a start or the event loop,
 * or be written through. dirfd is AT_FDCWD when name is a path. (lockdown.json is read as a
 * configuration file, through a link too.)
 */

/*
 * dirfd/name opened with flags (O_CREAT: of mode), never through a link, as a terminal, or
 * waited on, whatever it is: for a caller that judges its kind itself, with a message of its
 * own (a start's opens of the journal, the snapshot and replay.db; --check-config's), or that
 * opened it as a regular file just before (the trail's read of its last byte). The
 * descriptor, or -errno.
 */
int statefile_open_any(int dirfd, const char *name, int flags, mode_t mode);

/*
 * dirfd/name as a regular file, opened with flags (O_CREAT: of mode) and never through a
 * link, as a terminal, or waited on; *st (unless NULL) its fstat. The descriptor, or -errno:
 * -EINVAL when it is not a regular file (a FIFO opened to write with no reader: -ENXIO).
 */
int statefile_open(int dirfd, const char *name, int flags, mode_t mode, struct stat *st);

/*
 * A new, empty regular file at dirfd/name, of mode 0600, open to read and write: the temporary
 * file of a rewrite, renamed over the real one once durable. Whatever was at the name is
 * removed first (a rewrite a crash left, or anything else but a directory: -EISDIR): with
 * O_EXCL, nothing put there since is opened. The descriptor, or -errno.
 */
int statefile_create(int dirfd, const char *name);

#endif
