#ifndef JITD_AGENT_LINEAPPEND_H
#define JITD_AGENT_LINEAPPEND_H

#include <stddef.h>

/*
 * One line at the end of an append-only text file (opened O_APPEND), or nothing. A write the
 * kernel takes only in part (the disk filled up, a file size limit) is cut off again: else the
 * next line would run on from it, and a reader would lose both. When the cut fails, the
 * fragment is ended with a newline if that can be written (a damaged line, skipped alone).
 * 0, -ENOSPC for a short write cut off (which sets no errno), -EIO when the cut failed (part
 * of the line is in the file, perhaps unended), or -errno. On failure the file's size may
 * differ from before: a caller that counts it reads it again.
 */
int line_append(int fd, const char *line, size_t len);

#endif
