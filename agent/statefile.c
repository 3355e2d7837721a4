#include <errno.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/statefile.h"

int statefile_open_any(int dirfd, const char *name, int flags, mode_t mode)
{
	/*
	 * O_NONBLOCK: a FIFO is refused by the caller, not waited on. A regular file heeds it only
	 * while another process's lease on it is broken: the open fails then (EWOULDBLOCK).
	 */
	int fd = openat(dirfd, name, flags | O_NOFOLLOW | O_NONBLOCK | O_NOCTTY | O_CLOEXEC, mode);

	return fd < 0 ? -errno : fd;
}

int statefile_open(int dirfd, const char *name, int flags, mode_t mode, struct stat *st)
{
	struct stat own;
	int fd, ret;

	if (!st)
		st = &own;
	if ((fd = statefile_open_any(dirfd, name, flags, mode)) < 0)
		return fd;
	if (fstat(fd, st) < 0)
		ret = -errno;
	else if (!S_ISREG(st->st_mode))
		ret = -EINVAL;
	else
		return fd;
	close(fd);
	return ret;
}

int statefile_create(int dirfd, const char *name)
{
	int fd;

	if (unlinkat(dirfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	/*
	 * O_EXCL makes the file: whatever takes the name between the two calls fails the rewrite,
	 * which is tried again, rather than being written to (and renamed over the real file).
	 */
	if ((fd = openat(dirfd, name, O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_NOCTTY |
			O_CLOEXEC, 0600)) < 0)
		return -errno;
	/* Exactly 0600, whatever the umask took: the file takes the real one's place. */
	if (fchmod(fd, 0600) < 0) {
		int ret = -errno;

		close(fd);
		(void)unlinkat(dirfd, name, 0);
		return ret;
	}
	return fd;
}
