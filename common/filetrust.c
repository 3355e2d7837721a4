#include <stdio.h>
#include <unistd.h>

#include "common/filetrust.h"

const char *filetrust_fault(const struct stat *st, mode_t type, char *buf, size_t len)
{
	if ((st->st_mode & S_IFMT) != type)
		snprintf(buf, len, "not a %s", type == S_IFDIR ? "directory" : "regular file");
	else if (st->st_mode & (S_IWGRP | S_IWOTH))
		snprintf(buf, len, "writable by group or others");
	else if (st->st_uid != 0 && st->st_uid != geteuid())
		snprintf(buf, len, "owned by uid %u, not root nor jitd's user",
			(unsigned)st->st_uid);
	else
		return NULL;
	return buf;
}
