#ifndef JITD_COMMON_FILETRUST_H
#define JITD_COMMON_FILETRUST_H

#include <stddef.h>
#include <sys/stat.h>

/*
 * Whoever may change a file jitd trusts (the configuration, a controller's key, the state a
 * start restores without checking signatures again) can give themselves access, as doas
 * reasons of doas.conf. Such a file must be of the kind its reader expects, root's or the
 * reader's own user's (jitd's), and writable by no one else. The one rule for every such file;
 * each caller says what follows from a fault in its own words.
 */

/*
 * Why *st may not be trusted as a file of type (S_IFREG or S_IFDIR): a phrase that reads after
 * "path is " ("writable by group or others"), written into buf, or NULL when it may be.
 */
const char *filetrust_fault(const struct stat *st, mode_t type, char *buf, size_t len);

#endif
