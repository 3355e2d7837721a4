#ifndef JITD_TESTS_FUZZ_HTTP_STUBS_H
#define JITD_TESTS_FUZZ_HTTP_STUBS_H

#include <stddef.h>

struct enforce;
struct event_base;

/*
 * The stand-in enforcer behind fuzz_http (fuzz_http_stubs.c): no keys, no kernel, no state
 * directory. Its answers depend only on the token's bytes, so an input replays the same way.
 * Returns the handle for http_attach, whose deferred answers come back on base; NULL on OOM.
 */
struct enforce *stub_open(struct event_base *base);
/* Answers every grant still owed, the held-back ones included (the client is gone by then). */
void stub_flush(void);
/* Grants whose answer is owed: all of them, or only those due on the next loop turn. */
size_t stub_owed(void);
size_t stub_owed_soon(void);

#endif
