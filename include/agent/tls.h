#ifndef JITD_AGENT_TLS_H
#define JITD_AGENT_TLS_H

#include <stddef.h>

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
/* True when the handshake verified a client certificate against the client CA. */
int tls_peer_verified(SSL *ssl);

#endif
