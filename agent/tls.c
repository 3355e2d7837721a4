#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "agent/tls.h"
#include "common/config.h"

/* OpenSSL 3 deprecates the name without the reference count in it. */
#if OPENSSL_VERSION_NUMBER >= 0x30000000L
#define peer_certificate SSL_get1_peer_certificate
#else
#define peer_certificate SSL_get_peer_certificate
#endif

/* OpenSSL's queue holds the reason; keep the first (root cause) and clear the rest. */
static int fail(char *err, size_t errlen, const char *what, const char *path)
{
	unsigned long e = ERR_get_error();
	char reason[160] = "unknown error";

	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	ERR_clear_error();
	snprintf(err, errlen, "%s %s: %s", what, path ? path : "", reason);
	return -EINVAL;
}

/*
 * An encrypted tls_key fails to load: OpenSSL's default would ask for its passphrase on the
 * terminal, and a reload (on the event loop) would wait there.
 */
static int no_passphrase(char *buf, int size, int rwflag, void *arg)
{
	(void)buf;
	(void)size;
	(void)rwflag;
	(void)arg;
	return 0;
}

int tls_server_ctx(const struct listen_config *l, SSL_CTX **out, char *err, size_t errlen)
{
	STACK_OF(X509_NAME) *names = NULL;
	SSL_CTX *ctx;
	int ret;

	*out = NULL;
	if (!(ctx = SSL_CTX_new(TLS_server_method())))
		return fail(err, errlen, "cannot create a TLS context", NULL);
	if (!SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION)) {
		ret = fail(err, errlen, "cannot require TLS 1.2", NULL);
		goto out;
	}
	/* No renegotiation, no tickets that outlive a revoked client certificate's session. */
	SSL_CTX_set_options(ctx, SSL_OP_NO_RENEGOTIATION | SSL_OP_NO_TICKET |
		SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_num_tickets(ctx, 0);
	if (SSL_CTX_use_certificate_chain_file(ctx, l->tls_cert) != 1) {
		ret = fail(err, errlen, "cannot load tls_cert", l->tls_cert);
		goto out;
	}
	SSL_CTX_set_default_passwd_cb(ctx, no_passphrase);
	if (SSL_CTX_use_PrivateKey_file(ctx, l->tls_key, SSL_FILETYPE_PEM) != 1) {
		ret = fail(err, errlen, "cannot load tls_key", l->tls_key);
		goto out;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ret = fail(err, errlen, "tls_key does not match tls_cert", l->tls_key);
		goto out;
	}
	if (l->client_ca) {
		if (SSL_CTX_load_verify_locations(ctx, l->client_ca, NULL) != 1 ||
			!(names = SSL_load_client_CA_file(l->client_ca))) {
			ret = fail(err, errlen, "cannot load client_ca", l->client_ca);
			goto out;
		}
		SSL_CTX_set_client_CA_list(ctx, names);
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	*out = ctx;
	ctx = NULL;
	ret = 0;
out:
	SSL_CTX_free(ctx);
	return ret;
}

int tls_mutual(SSL_CTX *ctx)
{
	return ctx && (SSL_CTX_get_verify_mode(ctx) & SSL_VERIFY_FAIL_IF_NO_PEER_CERT);
}

int tls_not_after(SSL_CTX *ctx, int64_t *out)
{
	X509 *cert = ctx ? SSL_CTX_get0_certificate(ctx) : NULL;
	const ASN1_TIME *t = cert ? X509_get0_notAfter(cert) : NULL;
	struct tm tm;

	if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
		return -EINVAL;
	*out = (int64_t)timegm(&tm);
	return 0;
}

int tls_expiry_note(int64_t not_after, int64_t now, char *buf, size_t len)
{
	time_t t = (time_t)not_after;
	char when[32] = "?";
	struct tm tm;

	if (gmtime_r(&t, &tm))
		strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (not_after <= now) {
		snprintf(buf, len, "the TLS certificate expired at %s: controllers cannot connect",
			when);
		return TLS_EXPIRED;
	}
	if (not_after - now < (int64_t)TLS_EXPIRY_WARN_DAYS * 86400) {
		int64_t left = not_after - now;

		snprintf(buf, len, "the TLS certificate expires at %s, in %lld %s", when,
			(long long)(left < 2 * 86400 ? left / 3600 : left / 86400),
			left < 2 * 86400 ? "hour(s)" : "day(s)");
		return TLS_EXPIRES_SOON;
	}
	buf[0] = '\0';
	return 0;
}

int tls_peer_verified(SSL *ssl)
{
	X509 *cert = ssl ? peer_certificate(ssl) : NULL;
	int ok = cert && SSL_get_verify_result(ssl) == X509_V_OK;

	X509_free(cert);
	return ok;
}

int tls_peer_trusted(SSL *ssl, SSL_CTX *now)
{
	X509_STORE_CTX *xs = NULL;
	X509 *cert = NULL;
	int ok = 0;

	if (!ssl || !now || SSL_get_SSL_CTX(ssl) == now)
		return tls_peer_verified(ssl);
	if (!tls_peer_verified(ssl) || !(cert = peer_certificate(ssl)))
		goto out;
	/* The chain the client sent at its handshake (the leaf apart), against now's client CA. */
	if ((xs = X509_STORE_CTX_new()) &&
		X509_STORE_CTX_init(xs, SSL_CTX_get_cert_store(now), cert,
			SSL_get_peer_cert_chain(ssl)) == 1 &&
		X509_VERIFY_PARAM_inherit(X509_STORE_CTX_get0_param(xs),
			SSL_CTX_get0_param(now)) == 1 &&
		X509_STORE_CTX_set_purpose(xs, X509_PURPOSE_SSL_CLIENT) == 1)
		ok = X509_verify_cert(xs) == 1;
	ERR_clear_error();
out:
	X509_STORE_CTX_free(xs);
	X509_free(cert);
	return ok;
}

void tls_peer_cn(SSL *ssl, char *buf, size_t len)
{
	X509 *cert = ssl ? peer_certificate(ssl) : NULL;
	X509_NAME *name; /* not const: OpenSSL 1.1.1's X509_NAME_get_index_by_NID takes none */
	unsigned char *cn = NULL;
	size_t n = 0;
	int at, cn_len;

	if (len)
		buf[0] = '\0';
	if (!cert || !len || !(name = X509_get_subject_name(cert)) ||
		(at = X509_NAME_get_index_by_NID(name, NID_commonName, -1)) < 0)
		goto out;
	/*
	 * As UTF-8 and whole: the raw bytes of a BMPString start with a NUL, and a NUL inside
	 * a UTF8String would cut "ctl-a\0x" to another controller's "ctl-a".
	 */
	cn_len = ASN1_STRING_to_UTF8(&cn, X509_NAME_ENTRY_get_data(X509_NAME_get_entry(name, at)));
	if (cn_len < 0) {
		ERR_clear_error();
		goto out;
	}
	/* The CN goes into audit lines and syslog: no control characters, no quotes. */
	for (int i = 0; i < cn_len && n + 1 < len; i++)
		buf[n++] = (cn[i] > 0x20 && cn[i] < 0x7f && cn[i] != '"' && cn[i] != '\\') ?
			(char)cn[i] : '_';
	buf[n] = '\0';
out:
	OPENSSL_free(cn);
	X509_free(cert);
}
