#ifndef JITD_AGENT_HTTP_H
#define JITD_AGENT_HTTP_H

struct config;
struct enforce;
struct event_base;
struct http;

/*
 * The controller endpoint (libevent evhttp, TLS through OpenSSL): POST /v1/grants,
 * POST /v1/revocations, GET /v1/status. Does nothing and sets *out = NULL when the configuration
 * has no "listen" block. Returns 0 or -errno (the message is logged here).
 */
int http_open(struct event_base *base, const struct config *cfg, struct enforce *enf,
	struct http **out);
/* Stops listening and drops connections; NULLs *h; accepts NULL. */
void http_close(struct http **h);

#endif
