#ifndef JITD_COMMON_PREFIX_H
#define JITD_COMMON_PREFIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/*
 * An IPv4 or IPv6 prefix. addr is in network byte order; for AF_INET only addr[0..3] is used and
 * the rest is zero. IPv4-mapped IPv6 prefixes (::ffff:a.b.c.d/96+n) are stored as IPv4 a.b.c.d/n,
 * because that is how the kernel's inet family sees those packets.
 */
struct prefix {
	int family;	  /* AF_INET or AF_INET6 */
	uint8_t len;	  /* 0..32 or 0..128 */
	uint8_t addr[16];
};

#define PREFIX_STRLEN 64 /* enough for any formatted prefix plus NUL */

/*
 * Parses "a.b.c.d", "a.b.c.d/n", "x::y", "x::y/n". A bare address is a host prefix. Host bits
 * beyond the prefix length must be zero ("10.0.0.5/24" is refused: ambiguous). Returns 0 or
 * -EINVAL.
 */
int prefix_parse(const char *s, struct prefix *out);
/* Canonical text: bare address for host prefixes, "addr/len" otherwise. Returns 0 or -ENOSPC. */
int prefix_format(const struct prefix *p, char *buf, size_t len);
/* Address length in bytes for the prefix's family: 4 or 16. */
size_t prefix_addr_len(const struct prefix *p);
/* True if p is one address (/32, /128). */
bool prefix_is_host(const struct prefix *p);
/* First and last address covered (addr_len bytes each, network order). */
void prefix_range(const struct prefix *p, uint8_t lo[static 16], uint8_t hi[static 16]);
/* True if inner lies entirely inside outer (same family required). */
bool prefix_contains(const struct prefix *outer, const struct prefix *inner);

#endif
