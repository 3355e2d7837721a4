#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/statetrust.h"

int statetrust_fd(int fd, const char *path, char *msg, size_t len)
{
	struct stat st;

	if (fstat(fd, &st) < 0)
		return -errno;
	if (st.st_mode & (S_IWGRP | S_IWOTH))
		snprintf(msg, len, "%s is writable by group or others", path);
	else if (st.st_uid != 0 && st.st_uid != geteuid())
		snprintf(msg, len, "%s is owned by uid %u, not root nor jitd's user", path,
			(unsigned)st.st_uid);
	else
		return 0;
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

int statetrust_dir(const char *dir, char *msg, size_t len)
{
	int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), ret;

	if (fd < 0)
		return errno == ENOENT ? 0 : -errno;
	ret = statetrust_fd(fd, dir, msg, len);
	close(fd);
	return ret;
}
