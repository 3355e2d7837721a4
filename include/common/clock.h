#ifndef JITD_COMMON_CLOCK_H
#define JITD_COMMON_CLOCK_H

#include <stdint.h>
#include <time.h>

/*
 * CLOCK_MONOTONIC in microseconds: for durations and deadlines, which a change of the wall
 * clock must not stretch or cut short. Inline: the grant path reads it several times a grant.
 */
static inline int64_t clock_mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

#endif
