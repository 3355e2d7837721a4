#ifndef JITD_AGENT_TLS_H
#define JITD_AGENT_TLS_H

#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

struct listen_config;

/*
 * The controller endpoint's TLS context: TLS 1.2 or later, l->tls_cert (PEM chain, leaf first)
 * with l->tls_key, and with l->client_ca set, mutual TLS: a client that presents no certificate,
 * or one that CA did not sign, fails the handshake. 0 or -EINVAL with err saying which file
 * OpenSSL refused and why.
 */
int tls_server_ctx(const struct listen_config *l, SSL_CTX **out, char *err, size_t errlen);
/*
 * The verified client certificate's subject CN for the audit trail, printable ASCII only
 * ("" without one). buf is always terminated.
 */
void tls_peer_cn(SSL *ssl, char *buf, size_t len);
/* Whether ctx demands a client certificate (client_ca was set); false for NULL. */
int tls_mutual(SSL_CTX *ctx);
/* True when the handshake verified a client certificate against the client CA. */
int tls_peer_verified(SSL *ssl);
/*
 * tls_peer_verified, and for a connection made under another context than now (before a
 * reload), its certificate and chain verified again against now's client CA: a keep-alive
 * connection must not keep the trust of a CA the reload took away.
 */
int tls_peer_trusted(SSL *ssl, SSL_CTX *now);
/* When ctx's certificate expires (notAfter, seconds since the epoch). 0, or -EINVAL (no ctx). */
int tls_not_after(SSL_CTX *ctx, int64_t *out);
/* Certificates that expire within this many days are warned of at start and reload. */
#define TLS_EXPIRY_WARN_DAYS 14
/*
 * What to tell the operator about a certificate that expires at not_after, seen at now: 0
 * (nothing), TLS_EXPIRES_SOON or TLS_EXPIRED, with the sentence in buf. An expired certificate
 * keeps every controller out, so the agent says so where the operator looks; it never refuses
 * to start for it (the deny rules matter more).
 */
enum { TLS_EXPIRES_SOON = 1, TLS_EXPIRED = 2 };
int tls_expiry_note(int64_t not_after, int64_t now, char *buf, size_t len);

#endif
