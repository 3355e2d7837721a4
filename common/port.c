#include <errno.h>
#include <netinet/in.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/port.h"

static const struct {
	const char *name;
	unsigned mask;
} protos[] = {
	{ "tcp", PORT_PROTO_TCP },
	{ "udp", PORT_PROTO_UDP },
	{ "*", PORT_PROTO_ANY },
};

/* strcasecmp follows the locale (Turkish dotless i); protocol names are ASCII only. */
static bool ascii_eq(const char *a, const char *b)
{
	for (; *a && *b; a++, b++) {
		char ca = *a >= 'A' && *a <= 'Z' ? (char)(*a - 'A' + 'a') : *a;

		if (ca != *b)
			return false;
	}
	return *a == *b;
}

int port_proto_parse(const char *s, unsigned *mask)
{
	*mask = 0;
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++) {
		if (ascii_eq(s, protos[i].name)) {
			*mask = protos[i].mask;
			return 0;
		}
	}
	return -EINVAL;
}

const char *port_proto_name(unsigned mask)
{
	for (size_t i = 0; i < sizeof(protos) / sizeof(protos[0]); i++)
		if (protos[i].mask == mask)
			return protos[i].name;
	return "?";
}

uint8_t port_proto_ipproto(unsigned mask)
{
	if (mask == PORT_PROTO_TCP)
		return IPPROTO_TCP;
	if (mask == PORT_PROTO_UDP)
		return IPPROTO_UDP;
	return 0;
}

/*
 * Strict decimal 1..65535 in at most n characters. A leading zero is refused ("022" as well as
 * "0"): one spelling per port, and no tool in the chain may read it as octal.
 */
static int parse_number(const char *s, size_t n, uint16_t *port)
{
	unsigned v = 0;

	if (n == 0 || n > 5 || s[0] == '0')
		return -EINVAL;
	for (size_t i = 0; i < n; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(s[i] - '0');
	}
	if (v > 65535)
		return -EINVAL;
	*port = (uint16_t)v;
	return 0;
}

int port_spec_parse(const char *s, uint16_t *port, unsigned *mask)
{
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	unsigned m = PORT_PROTO_TCP;
	uint16_t p;

	*port = 0;
	*mask = 0;
	if (parse_number(s, n, &p))
		return -EINVAL;
	if (slash && port_proto_parse(slash + 1, &m))
		return -EINVAL;
	*port = p;
	*mask = m;
	return 0;
}

int port_spec_format(const struct port_spec *p, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%u/%s", (unsigned)p->port, port_proto_name(p->proto));

	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}
