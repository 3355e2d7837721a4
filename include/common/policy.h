#ifndef JITD_COMMON_POLICY_H
#define JITD_COMMON_POLICY_H

#include <stdint.h>

struct config;
struct grant;
struct jit_error;

/*
 * The pure, default-deny decision. A grant without "dst" is for the host (mode host or both):
 * every (port, protocol) of the grant must be protected with that protocol, every source must
 * lie inside the port's allowed sources, and exp - now must not exceed the port's max_duration.
 * A grant with "dst" is for forwarded traffic (mode gateway or both): every (dst, port,
 * protocol) must have a target (config_find_target), and the same source and duration rules
 * hold against that target; each dst needs a source of its address family; a dst whose target
 * maps ports (dnat) must be one address. First of all, a signed grant's key must speak for its
 * iss (policy_check_issuer). No I/O. Returns 0, JIT_ERR_UNKNOWN_KEY, JIT_ERR_WRONG_ISSUER,
 * JIT_ERR_PORT_NOT_PROTECTED, JIT_ERR_DESTINATION_NOT_PROTECTED, JIT_ERR_SOURCE_NOT_ALLOWED or
 * JIT_ERR_DURATION_EXCEEDS_MAX, naming the offending item in e->msg.
 */
int policy_check(const struct config *c, const struct grant *g, int64_t now, struct jit_error *e);
/*
 * RFC 8725 section 3.8: with "issuers" configured, a token signed by kid must carry the one iss
 * it binds kid to. 0 (also when "issuers" is not configured), JIT_ERR_UNKNOWN_KEY (kid is bound
 * to none) or JIT_ERR_WRONG_ISSUER. For grants (through policy_check) and revocations.
 */
int policy_check_issuer(const struct config *c, const char *kid, const char *iss,
	struct jit_error *e);

#endif
