#include <errno.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/lineappend.h"
#include "common/log.h"

int line_append(int fd, const char *line, size_t len)
{
	ssize_t n = write(fd, line, len);
	struct stat st;

	if (n == (ssize_t)len)
		return 0;
	if (n < 0)
		return -errno;
	/* O_APPEND: the torn part is the last n bytes of the file. */
	if (n > 0 && (fstat(fd, &st) < 0 || ftruncate(fd, st.st_size - n) < 0)) {
		/*
		 * Ended, the fragment is a damaged line of its own, skipped by its reader. Either
		 * way the file holds what the caller takes for not written: -EIO says so.
		 */
		log_warn("cannot cut off a torn line: %s", strerror(errno));
		(void)!write(fd, "\n", 1);
		return -EIO;
	}
	return -ENOSPC;
}
