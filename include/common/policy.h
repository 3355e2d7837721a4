#ifndef JITD_COMMON_POLICY_H
#define JITD_COMMON_POLICY_H

#include <stdint.h>

struct config;
struct grant;
struct jit_error;

/*
 * The pure, default-deny decision: every (port, protocol) of the grant must be protected with
 * that protocol, every source must lie inside the port's allowed sources, and exp - now must not
 * exceed the port's max_duration. No I/O. Returns 0, JIT_ERR_PORT_NOT_PROTECTED,
 * JIT_ERR_SOURCE_NOT_ALLOWED or JIT_ERR_DURATION_EXCEEDS_MAX, naming the offending item in e->msg.
 */
int policy_check(const struct config *c, const struct grant *g, int64_t now, struct jit_error *e);

#endif
