#include <errno.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/buffer.h>

#include "agent/printer.h"
#include "common/clock.h"
#include "common/port.h"
#include "common/prefix.h"

void printer_init(struct printer *pr, struct evbuffer *out, char *block, size_t cap)
{
	memset(pr, 0, sizeof(*pr));
	pr->out = out;
	pr->p = block;
	pr->cap = cap;
	pr->drain_fd = -1;
	pr->stamp[0].secs = pr->stamp[1].secs = INT64_MIN;
}

void printer_drain_to(struct printer *pr, int fd, int wait_ms)
{
	pr->drain_fd = fd;
	pr->drain_wait_us = (int64_t)wait_ms * 1000;
}

void printer_release(struct printer *pr)
{
	if (pr->heap)
		free(pr->p);
	pr->heap = false;
	pr->p = NULL;
	pr->len = pr->cap = 0;
}

/* Without an evbuffer: room for n more bytes and the spare one. */
static int grow(struct printer *pr, size_t n)
{
	size_t cap;
	char *p;

	if (n < pr->cap - pr->len)
		return 0;
	cap = 2 * pr->cap > pr->len + n + 1 ? 2 * pr->cap : pr->len + n + 1;
	if (!(p = pr->heap ? realloc(pr->p, cap) : malloc(cap))) {
		pr->err = pr->err ? pr->err : -ENOMEM;
		return -1;
	}
	if (!pr->heap)
		memcpy(p, pr->p, pr->len);
	pr->p = p;
	pr->cap = cap;
	pr->heap = true;
	return 0;
}

void pr_flush(struct printer *pr)
{
	if (!pr->out)
		return;
	if (pr->len && !pr->err && evbuffer_add(pr->out, pr->p, pr->len))
		pr->err = -ENOMEM;
	pr->len = 0;
	while (pr->drain_fd >= 0 && !pr->err) {
		struct pollfd pfd = { .fd = pr->drain_fd, .events = POLLOUT };
		int n = evbuffer_write(pr->out, pr->drain_fd);
		int64_t t0;

		if (n > 0)
			pr->drained += (size_t)n;
		else if (n < 0 && errno != EAGAIN && errno != EINTR)
			pr->drain_fd = -1;
		if (pr->drain_fd < 0 || evbuffer_get_length(pr->out) <= PRINTER_BACKLOG ||
			pr->drain_wait_us <= 0)
			break;
		t0 = clock_mono_us();
		if (poll(&pfd, 1, (int)((pr->drain_wait_us + 999) / 1000)) < 0 && errno != EINTR)
			pr->drain_wait_us = 0;
		pr->drain_wait_us -= clock_mono_us() - t0;
	}
}

void pr_add(struct printer *pr, const char *s, size_t n)
{
	if (!pr->out) {
		if (pr->err || grow(pr, n))
			return;
	} else {
		if (pr->len + n > pr->cap)
			pr_flush(pr);
		if (n > pr->cap) {
			if (!pr->err && evbuffer_add(pr->out, s, n))
				pr->err = -ENOMEM;
			return;
		}
	}
	memcpy(pr->p + pr->len, s, n);
	pr->len += n;
}

void pr_raw(struct printer *pr, const char *s)
{
	pr_add(pr, s, strlen(s));
}

int pr_buf(const char *buf, size_t len, void *pr)
{
	pr_add(pr, buf, len);
	return 0;
}

void pr_string(struct printer *pr, const char *s)
{
	proto_put_string(s, pr_buf, pr);
}

void pr_plain(struct printer *pr, const char *s)
{
	if (!s) {
		pr_raw(pr, "null");
		return;
	}
	pr_add(pr, "\"", 1);
	pr_raw(pr, s);
	pr_add(pr, "\"", 1);
}

void pr_int(struct printer *pr, bool known, long long v)
{
	char buf[24], *d = buf + sizeof(buf);
	unsigned long long u = v < 0 ? 0ULL - (unsigned long long)v : (unsigned long long)v;

	if (!known) {
		pr_raw(pr, "null");
		return;
	}
	/* Digits by hand: snprintf's "%lld" was three vfprintf calls per grant in a status. */
	do
		*--d = (char)('0' + u % 10);
	while (u /= 10);
	if (v < 0)
		*--d = '-';
	pr_add(pr, d, (size_t)(buf + sizeof(buf) - d));
}

void pr_stamp(struct printer *pr, int which, int64_t secs)
{
	if (pr->stamp[which].secs != secs) {
		if (proto_time_format(secs, pr->stamp[which].text, sizeof(pr->stamp[which].text))) {
			pr->stamp[which].secs = INT64_MIN; /* the text may be half written */
			pr_raw(pr, "null");
			return;
		}
		pr->stamp[which].secs = secs;
	}
	pr_plain(pr, pr->stamp[which].text);
}

void pr_printf(struct printer *pr, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (pr->out && pr->cap - pr->len < 512)
		pr_flush(pr);
	va_start(ap, fmt);
	n = vsnprintf(pr->p + pr->len, pr->cap - pr->len, fmt, ap);
	va_end(ap);
	if (n < 0) {
		pr->err = pr->err ? pr->err : -EINVAL;
	} else if ((size_t)n < pr->cap - pr->len) {
		pr->len += (size_t)n;
	} else if (!pr->out) {
		/* Grown, then printed again where it now fits. */
		if (grow(pr, (size_t)n))
			return;
		va_start(ap, fmt);
		vsnprintf(pr->p + pr->len, pr->cap - pr->len, fmt, ap);
		va_end(ap);
		pr->len += (size_t)n;
	} else {
		pr_flush(pr);
		va_start(ap, fmt);
		if (!pr->err && evbuffer_add_vprintf(pr->out, fmt, ap) < 0)
			pr->err = -ENOMEM;
		va_end(ap);
	}
}

void pr_prefixes(struct printer *pr, const struct prefix *v, size_t n)
{
	char buf[PREFIX_STRLEN];

	for (size_t i = 0; i < n; i++) {
		if (i)
			pr_raw(pr, ",");
		pr_plain(pr, prefix_format(&v[i], buf, sizeof(buf)) ? NULL : buf);
	}
}

void pr_ports(struct printer *pr, const struct port_spec *v, size_t n)
{
	char buf[32];
	bool first = true;

	for (size_t i = 0; i < n; i++) {
		if (port_spec_format(&v[i], buf, sizeof(buf)))
			continue;
		if (!first)
			pr_raw(pr, ",");
		pr_plain(pr, buf);
		first = false;
	}
}
