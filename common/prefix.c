#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "common/prefix.h"

static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff };

/*
 * Strict decimal: no sign, no whitespace, no leading zeros, so that every length has exactly one
 * spelling and "/010" cannot be misread as octal by another tool.
 */
static int parse_len(const char *s, unsigned max, unsigned *len)
{
	unsigned v = 0;

	if (!*s || (s[0] == '0' && s[1]) || strlen(s) > 3)
		return -EINVAL;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -EINVAL;
		v = v * 10 + (unsigned)(*s - '0');
	}
	if (v > max)
		return -EINVAL;
	*len = v;
	return 0;
}

/* True if any bit at or after position len (counting from the most significant) is set. */
static bool host_bits(const uint8_t *addr, size_t alen, unsigned len)
{
	for (size_t i = len / 8; i < alen; i++) {
		uint8_t keep = i == len / 8 ? (uint8_t)(0xff00u >> (len % 8)) : 0;

		if (addr[i] & (uint8_t)~keep)
			return true;
	}
	return false;
}

/* The kernel's inet family matches mapped addresses as IPv4, so that is how we store them. */
static void unmap(struct prefix *p)
{
	if (p->family != AF_INET6 || p->len < 96 || memcmp(p->addr, v4mapped, sizeof(v4mapped)))
		return;
	memmove(p->addr, p->addr + 12, 4);
	memset(p->addr + 4, 0, 12);
	p->family = AF_INET;
	p->len -= 96;
}

int prefix_parse(const char *s, struct prefix *out)
{
	char addr[INET6_ADDRSTRLEN];
	const char *slash = s ? strchr(s, '/') : NULL;
	size_t alen = slash ? (size_t)(slash - s) : (s ? strlen(s) : 0);
	struct prefix p = { 0 };
	unsigned len;

	memset(out, 0, sizeof(*out));
	if (!alen || alen >= sizeof(addr))
		return -EINVAL;
	memcpy(addr, s, alen);
	addr[alen] = '\0';
	p.family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	if (inet_pton(p.family, addr, p.addr) != 1)
		return -EINVAL;
	len = p.family == AF_INET ? 32 : 128;
	if (slash && parse_len(slash + 1, len, &len))
		return -EINVAL;
	if (host_bits(p.addr, prefix_addr_len(&p), len))
		return -EINVAL;
	p.len = (uint8_t)len;
	unmap(&p);
	*out = p;
	return 0;
}

int prefix_format(const struct prefix *p, char *buf, size_t len)
{
	char addr[INET6_ADDRSTRLEN];
	unsigned max = p->family == AF_INET ? 32 : 128;
	int n;

	if ((p->family != AF_INET && p->family != AF_INET6) || p->len > max)
		return -EINVAL;
	if (!inet_ntop(p->family, p->addr, addr, sizeof(addr)))
		return -EINVAL;
	/* A host is copied, not printed: status formats 100,000 of them in one go. */
	if (p->len == max) {
		size_t alen = strlen(addr);

		if (alen >= len)
			return -ENOSPC;
		memcpy(buf, addr, alen + 1);
		return 0;
	}
	n = snprintf(buf, len, "%s/%u", addr, p->len);
	return n < 0 || (size_t)n >= len ? -ENOSPC : 0;
}

size_t prefix_addr_len(const struct prefix *p)
{
	return p->family == AF_INET ? 4 : 16;
}

bool prefix_is_host(const struct prefix *p)
{
	return p->len == prefix_addr_len(p) * 8;
}

void prefix_range(const struct prefix *p, uint8_t lo[static 16], uint8_t hi[static 16])
{
	size_t alen = prefix_addr_len(p);

	memset(lo, 0, 16);
	memset(hi, 0, 16);
	for (size_t i = 0; i < alen; i++) {
		unsigned bits = p->len > i * 8 ? p->len - (unsigned)i * 8 : 0;
		uint8_t mask = bits >= 8 ? 0xff : (uint8_t)(0xff00u >> bits);

		lo[i] = p->addr[i] & mask;
		hi[i] = p->addr[i] | (uint8_t)~mask;
	}
}

bool prefix_contains(const struct prefix *outer, const struct prefix *inner)
{
	uint8_t olo[16], ohi[16], ilo[16], ihi[16];
	size_t alen = prefix_addr_len(outer);

	if (outer->family != inner->family || outer->len > inner->len)
		return false;
	prefix_range(outer, olo, ohi);
	prefix_range(inner, ilo, ihi);
	return memcmp(olo, ilo, alen) <= 0 && memcmp(ihi, ohi, alen) <= 0;
}
