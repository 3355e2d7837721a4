#ifndef JITD_COMMON_DURATION_H
#define JITD_COMMON_DURATION_H

#include <stddef.h>
#include <stdint.h>

#define DURATION_MAX_SECS (366ULL * 24 * 3600) /* parser cap; callers apply tighter policy bounds */

/*
 * Parses a duration: ISO 8601 subset P[nD][T[nH][nM][nS]] (at least one component, non-negative
 * integers, upper-case designators; Y, calendar M, W and fractions refused) or plain decimal
 * seconds ("90"). Returns 0 and sets *secs, or -EINVAL (syntax) / -ERANGE (over DURATION_MAX_SECS).
 */
int duration_parse(const char *s, uint64_t *secs);
/* Formats as ISO 8601 ("PT3H", "P1DT30M", "PT0S"). Returns 0 or -ENOSPC. */
int duration_format(uint64_t secs, char *buf, size_t len);
/* Human text for status output: "2h 59m", "45s", "1d 2h". Returns 0 or -ENOSPC. */
int duration_human(uint64_t secs, char *buf, size_t len);

#endif
