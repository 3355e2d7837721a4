#ifndef JITD_COMMON_DIRSYNC_H
#define JITD_COMMON_DIRSYNC_H

/*
 * Makes durable the directory entry of path (a file just created, or renamed into place): an
 * fsync of the directory that holds it. Without it a crash may leave the old name, or none,
 * whatever the file's own fsync said. 0 or -errno.
 */
int dirsync_parent(const char *path);

#endif
