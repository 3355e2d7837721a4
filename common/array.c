#include <stdint.h>
#include <stdlib.h>

#include "common/array.h"

void *array_reserve(void *v, size_t *cap, size_t want, size_t size, size_t first)
{
	size_t ncap;
	void *nv;

	if (v && want <= *cap)
		return v;
	ncap = *cap <= SIZE_MAX / 2 ? 2 * *cap : SIZE_MAX;
	if (ncap < first)
		ncap = first;
	if (ncap < want)
		ncap = want;
	/* A byte size that would wrap is refused here, before the allocator sees it. */
	if (size && ncap > SIZE_MAX / size)
		return NULL;
	if (!(nv = realloc(v, ncap * size)))
		return NULL;
	*cap = ncap;
	return nv;
}
