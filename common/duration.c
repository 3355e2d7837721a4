#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

#include "common/duration.h"

/* Designators in the only order ISO 8601 allows; D is the single date-part unit we accept. */
static const struct unit {
	char des;
	bool time;
	uint64_t secs;
} units[] = {
	{ 'D', false, 86400 },
	{ 'H', true, 3600 },
	{ 'M', true, 60 },
	{ 'S', true, 1 },
};

#define N_UNITS (sizeof(units) / sizeof(units[0]))

/*
 * Reads one or more decimal digits. Values past the cap saturate at cap + 1 so the syntax of the
 * rest can still be checked (syntax errors win over range errors) and no sum can overflow.
 */
static const char *digits(const char *p, uint64_t *n)
{
	const char *start = p;
	uint64_t v = 0;

	for (; *p >= '0' && *p <= '9'; p++) {
		v = v * 10 + (uint64_t)(*p - '0');
		if (v > DURATION_MAX_SECS)
			v = DURATION_MAX_SECS + 1;
	}
	*n = v;
	return p == start ? NULL : p;
}

static int parse_iso(const char *p, uint64_t *secs)
{
	size_t next = 0, ncomp = 0, ntime = 0;
	bool in_time = false;
	uint64_t total = 0, n;

	for (;;) {
		size_t u;

		if (*p == 'T' && !in_time) {
			in_time = true;
			p++;
			continue;
		}
		if (!*p)
			break;
		if (!(p = digits(p, &n)))
			return -EINVAL;
		for (u = next; u < N_UNITS; u++)
			if (units[u].des == *p && units[u].time == in_time)
				break;
		if (u == N_UNITS)
			return -EINVAL;
		total += n * units[u].secs;
		next = u + 1;
		ncomp++;
		ntime += in_time;
		p++;
	}
	if (!ncomp || (in_time && !ntime))
		return -EINVAL;
	*secs = total;
	return 0;
}

int duration_parse(const char *s, uint64_t *secs)
{
	uint64_t v = 0;
	const char *end;
	int ret;

	*secs = 0;
	if (*s == 'P') {
		ret = parse_iso(s + 1, &v);
	} else {
		end = digits(s, &v);
		ret = end && !*end ? 0 : -EINVAL;
	}
	if (ret == 0 && v > DURATION_MAX_SECS)
		ret = -ERANGE;
	if (ret == 0)
		*secs = v;
	return ret;
}

/* Appends to buf at *off; a truncated result is an error, never a shorter duration. */
static int append(char *buf, size_t len, size_t *off, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

static int append(char *buf, size_t len, size_t *off, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (*off >= len)
		return -ENOSPC;
	va_start(ap, fmt);
	n = vsnprintf(buf + *off, len - *off, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= len - *off)
		return -ENOSPC;
	*off += (size_t)n;
	return 0;
}

int duration_format(uint64_t secs, char *buf, size_t len)
{
	bool in_time = false;
	size_t off = 0;
	int ret;

	if (secs == 0)
		return append(buf, len, &off, "PT0S");
	ret = append(buf, len, &off, "P");
	for (size_t u = 0; ret == 0 && u < N_UNITS; u++) {
		uint64_t n = secs / units[u].secs;

		secs %= units[u].secs;
		if (!n)
			continue;
		if (units[u].time && !in_time) {
			in_time = true;
			ret = append(buf, len, &off, "T");
		}
		if (ret == 0)
			ret = append(buf, len, &off, "%llu%c", (unsigned long long)n, units[u].des);
	}
	return ret;
}

int duration_human(uint64_t secs, char *buf, size_t len)
{
	static const char names[N_UNITS] = { 'd', 'h', 'm', 's' };
	uint64_t n[N_UNITS];
	size_t u = 0, off = 0;
	int ret;

	for (size_t i = 0; i < N_UNITS; i++) {
		n[i] = secs / units[i].secs;
		secs %= units[i].secs;
	}
	while (u < N_UNITS - 1 && !n[u])
		u++;
	/* Rounded down: time left must never promise a minute that is not there. */
	ret = append(buf, len, &off, "%llu%c", (unsigned long long)n[u], names[u]);
	if (ret == 0 && u + 1 < N_UNITS && n[u + 1])
		ret = append(buf, len, &off, " %llu%c", (unsigned long long)n[u + 1], names[u + 1]);
	return ret;
}
