#ifndef JITD_COMMON_PORT_H
#define JITD_COMMON_PORT_H

#include <stdint.h>
#include <stddef.h>

/* Protocol sets as bit masks, so a policy entry for "*" is simply TCP|UDP. */
enum port_proto {
	PORT_PROTO_TCP = 1,
	PORT_PROTO_UDP = 2,
	PORT_PROTO_ANY = PORT_PROTO_TCP | PORT_PROTO_UDP,
};

/* One (port, single protocol) pair: what a kernel element matches on. */
struct port_spec {
	uint16_t port;	/* 1..65535 */
	uint8_t proto;	/* exactly one of PORT_PROTO_TCP / PORT_PROTO_UDP */
};

/* "tcp", "udp" or "*", ASCII case-insensitive. Returns 0 and sets *mask, or -EINVAL. */
int port_proto_parse(const char *s, unsigned *mask);
/* "tcp", "udp" or "*" for a mask. */
const char *port_proto_name(unsigned mask);
/* IPPROTO_TCP / IPPROTO_UDP for a single-protocol mask, 0 otherwise. */
uint8_t port_proto_ipproto(unsigned mask);
/* Parses "22", "22/tcp", "53/udp"; the protocol may be "*" for both; default tcp. 0 or -EINVAL. */
int port_spec_parse(const char *s, uint16_t *port, unsigned *mask);
/* Formats "22/tcp". Returns 0 or -ENOSPC. */
int port_spec_format(const struct port_spec *p, char *buf, size_t len);

#endif
