#ifndef JITD_AGENT_HTTP_H
#define JITD_AGENT_HTTP_H

struct config;
struct enforce;
struct event_base;
struct http;

/*
 * The controller endpoint (libevent evhttp, TLS through OpenSSL) on cfg->listen.address:
 *   POST /v1/grants       compact JWS (application/jwt)  -> 201 the applied grant
 *   POST /v1/grants/batch {"grants": [JWS, ...]}         -> 200 each grant's result
 *   POST /v1/revocations  compact JWS, typ jit-revoke+jwt -> 200 what was revoked
 *   GET  /v1/status       the status document (mutual TLS, or loopback clients whose socket
 *                         is root's or jitd's own user's)
 *   GET  /metrics         Prometheus text format (mutual TLS, or any loopback client)
 * Errors are {"error":"<jit_err_name>","message":"..."} with the HTTP status README.md lists
 * (requests libevent refuses before any handler runs get its own bare replies, as README says).
 * Bounded: header and body size, per-connection timeouts, concurrent connections, requests per
 * second per client address. Does nothing (*out = NULL) when cfg->listen is not enabled.
 * Returns 0, or -errno with err saying why (a TLS file OpenSSL refused, a busy address).
 * Opened before the enforcer, as ctl_open: the address is bound, not yet listened on.
 */
int http_open(struct event_base *base, const struct config *cfg, struct http **out, char *err,
	size_t errlen);
/*
 * The enforcer requests go to, and whose reloads load the TLS files again; then listens.
 * 0 (also for a NULL h), or -errno with err saying why.
 */
int http_attach(struct http *h, struct enforce *enf, char *err, size_t errlen);
/* Stops listening and drops every connection; NULLs *h; accepts NULL. */
void http_close(struct http **h);

#endif
