#ifndef JITD_COMMON_ARRAY_H
#define JITD_COMMON_ARRAY_H

#include <stddef.h>

/*
 * Growable arrays: the one place where their capacity grows, doubling, and where its byte size
 * is checked for overflow.
 *
 * Room in v (*cap elements of size bytes) for at least want elements. With room already, v.
 * Otherwise the array reallocated to the larger of twice *cap, first and want: *cap is set and
 * the new array returned, which the caller stores in place of v. NULL when out of memory or
 * when the size would overflow; v and *cap are then untouched and v still valid.
 */
void *array_reserve(void *v, size_t *cap, size_t want, size_t size, size_t first);

#endif
