#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/statefile.h"
#include "agent/statetrust.h"
#include "common/filetrust.h"

int statetrust_fd(int fd, mode_t type, const char *path, char *msg, size_t len)
{
	struct stat st;
	char why[64];

	if (fstat(fd, &st) < 0)
		return -errno;
	if (!filetrust_fault(&st, type, why, sizeof(why)))
		return 0;
	snprintf(msg, len, "%s is %s", path, why);
	return -EPERM;
}

bool statetrust_dir_readable(const char *dir, char *msg, size_t len)
{
	struct stat st;

	if (stat(dir, &st) < 0 || !(st.st_mode & (S_IRGRP | S_IROTH)))
		return false;
	snprintf(msg, len, "%s may be read by group or others: whoever may read it may hold its "
		"lock, and keep jitd from starting (make it 0700)", dir);
	return true;
}

/*
 * open's failure of path, said in msg. -EPERM stays statetrust_fd's refusal: an open refused
 * with EPERM (a security module, an immutable file) is -EACCES, msg saying what it was.
 */
static int open_failed(const char *path, int err, char *msg, size_t len)
{
	snprintf(msg, len, "%s: %s", path, strerror(err));
	return err == EPERM ? -EACCES : -err;
}

int statetrust_file(const char *dir, const char *name, int flags, char *msg, size_t len)
{
	char path[PATH_MAX];
	int fd, ret;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
		snprintf(msg, len, "%s/%s: %s", dir, name, strerror(ENAMETOOLONG));
		return -ENAMETOOLONG;
	}
	if ((fd = statefile_open_any(AT_FDCWD, path, flags, 0)) < 0)
		return fd == -ENOENT ? 0 : open_failed(path, -fd, msg, len);
	ret = statetrust_fd(fd, S_IFREG, path, msg, len);
	close(fd);
	return ret;
}

/*
 * A directory not there yet: a start makes it (mkdir, the last level only), unless the name
 * is a link to nothing or its parent is missing. 0, or -ENOENT with msg saying why.
 */
static int absent_dir(const char *dir, char *msg, size_t len)
{
	char name[PATH_MAX], parent[PATH_MAX];
	size_t n = strlen(dir);
	const char *slash;
	struct stat st;

	/*
	 * mkdir takes "/var/lib/jitd/" as "/var/lib/jitd", and so must the checks: lstat follows
	 * a link named with a trailing slash, and its parent is /var/lib.
	 */
	while (n > 1 && dir[n - 1] == '/')
		n--;
	snprintf(name, sizeof(name), "%.*s", (int)n, dir);
	if (lstat(name, &st) == 0) {
		snprintf(msg, len, "%s: a link to nothing", dir);
		return -ENOENT;
	}
	if (errno != ENOENT)
		return 0;
	for (slash = name + n - 1; slash > name && *slash != '/'; slash--)
		;
	if (slash == name)
		return 0;
	snprintf(parent, sizeof(parent), "%.*s", (int)(slash - name), name);
	if (stat(parent, &st) == 0 || errno != ENOENT)
		return 0;
	snprintf(msg, len, "%s: its parent %s is missing (a start makes only the last level)", dir,
		parent);
	return -ENOENT;
}

int statetrust_dir(const char *dir, char *msg, size_t len)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret;

	if (fd < 0)
		return errno == ENOENT ? absent_dir(dir, msg, len) : open_failed(dir, errno, msg,
			len);
	ret = statetrust_fd(fd, S_IFDIR, dir, msg, len);
	close(fd);
	return ret;
}
