#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <openssl/err.h>

#include "bench.h"

/* Every socket wait is bounded: a stuck agent fails the run instead of hanging it. */
#define IO_TIMEOUT_SEC 30
#define MAX_REPLY (64 << 20)

int via_parse(const char *s, struct via *v)
{
	const char *hp, *colon;
	unsigned long port;
	char *end;

	memset(v, 0, sizeof(*v));
	if (!strncmp(s, "ctl:", 4)) {
		v->kind = VIA_CTL;
		if (strlen(s + 4) >= sizeof(v->path))
			return -EINVAL;
		strcpy(v->path, s + 4);
		return 0;
	}
	if (!strncmp(s, "http://", 7)) {
		v->kind = VIA_HTTP;
		hp = s + 7;
	} else if (!strncmp(s, "https://", 8)) {
		v->kind = VIA_HTTPS;
		hp = s + 8;
	} else {
		return -EINVAL;
	}
	if (!(colon = strrchr(hp, ':')) || (size_t)(colon - hp) >= sizeof(v->host))
		return -EINVAL;
	memcpy(v->host, hp, (size_t)(colon - hp));
	v->host[colon - hp] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	if (errno || *end || port == 0 || port > 65535)
		return -EINVAL;
	v->port = (uint16_t)port;
	return 0;
}

int via_tls(struct via *v, const char *cert, const char *key, const char *ca)
{
	if (!(v->tls = SSL_CTX_new(TLS_client_method())))
		return -ENOMEM;
	if (SSL_CTX_use_certificate_chain_file(v->tls, cert) != 1 ||
		SSL_CTX_use_PrivateKey_file(v->tls, key, SSL_FILETYPE_PEM) != 1 ||
		SSL_CTX_load_verify_locations(v->tls, ca, NULL) != 1) {
		ERR_print_errors_fp(stderr);
		return -EINVAL;
	}
	/* The controller checks the agent's certificate against the CA, as a real one would. */
	SSL_CTX_set_verify(v->tls, SSL_VERIFY_PEER, NULL);
	return 0;
}

static int set_timeouts(int fd)
{
	struct timeval tv = { IO_TIMEOUT_SEC, 0 };

	if (setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) ||
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)))
		return -errno;
	return 0;
}

static int write_all(int fd, SSL *ssl, const char *p, size_t n)
{
	while (n) {
		ssize_t w;

		if (ssl) {
			int r = SSL_write(ssl, p, n > INT32_MAX ? INT32_MAX : (int)n);

			if (r <= 0)
				return -EIO;
			w = r;
		} else if ((w = write(fd, p, n)) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		p += w;
		n -= (size_t)w;
	}
	return 0;
}

int ctl_call(const struct via *v, const char *request, char **reply)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	size_t len = 0, cap = 4096;
	char *buf = NULL, *nl;
	int fd, ret;

	*reply = NULL;
	strcpy(sa.sun_path, v->path);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	if ((ret = set_timeouts(fd)))
		goto out;
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		goto out;
	}
	if ((ret = write_all(fd, NULL, request, strlen(request))))
		goto out;
	if (!(buf = malloc(cap))) {
		ret = -ENOMEM;
		goto out;
	}
	for (;;) {
		ssize_t r;

		if (cap - len < 2) {
			char *nb;

			if (cap >= MAX_REPLY) {
				ret = -E2BIG;
				goto out;
			}
			if (!(nb = realloc(buf, cap * 2))) {
				ret = -ENOMEM;
				goto out;
			}
			buf = nb;
			cap *= 2;
		}
		if ((r = read(fd, buf + len, cap - len - 1)) < 0) {
			if (errno == EINTR)
				continue;
			ret = -errno;
			goto out;
		}
		if (r == 0) {
			ret = -ECONNRESET;
			goto out;
		}
		len += (size_t)r;
		buf[len] = '\0';
		if ((nl = memchr(buf, '\n', len))) {
			*nl = '\0';
			*reply = buf;
			buf = NULL;
			ret = 0;
			goto out;
		}
	}
out:
	free(buf);
	close(fd);
	return ret;
}

void conn_init(struct conn *c, const struct via *v)
{
	memset(c, 0, sizeof(*c));
	c->via = v;
	c->fd = -1;
}

void conn_close(struct conn *c)
{
	if (c->ssl) {
		SSL_shutdown(c->ssl);
		SSL_free(c->ssl);
		c->ssl = NULL;
	}
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->len = 0;
}

static int conn_open(struct conn *c)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons(c->via->port) };
	int one = 1, ret;

	if (inet_pton(AF_INET, c->via->host, &sa.sin_addr) != 1)
		return -EINVAL;
	if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0)
		return -errno;
	/* A controller sends each request in one piece; Nagle would only add delay. */
	if (setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
		(ret = set_timeouts(c->fd)) < 0 ||
		connect(c->fd, (struct sockaddr *)&sa, sizeof(sa))) {
		ret = -errno;
		conn_close(c);
		return ret;
	}
	if (c->via->kind != VIA_HTTPS)
		return 0;
	if (!(c->ssl = SSL_new(c->via->tls)) || SSL_set_fd(c->ssl, c->fd) != 1 ||
		SSL_connect(c->ssl) != 1) {
		ERR_print_errors_fp(stderr);
		conn_close(c);
		return -EPROTO;
	}
	return 0;
}

/* Reads more bytes into c->buf. 0, -ECONNRESET at EOF, or -errno. */
static int conn_fill(struct conn *c)
{
	ssize_t r;

	if (c->cap - c->len < 4096) {
		size_t ncap = c->cap ? c->cap * 2 : 16384;
		char *nb;

		if (ncap > MAX_REPLY || !(nb = realloc(c->buf, ncap)))
			return -ENOMEM;
		c->buf = nb;
		c->cap = ncap;
	}
	for (;;) {
		if (c->ssl) {
			int n = SSL_read(c->ssl, c->buf + c->len, (int)(c->cap - c->len - 1));

			if (n <= 0)
				return -ECONNRESET;
			r = n;
		} else if ((r = read(c->fd, c->buf + c->len, c->cap - c->len - 1)) < 0) {
			if (errno == EINTR)
				continue;
			return -errno;
		}
		if (r == 0)
			return -ECONNRESET;
		c->len += (size_t)r;
		c->buf[c->len] = '\0';
		return 0;
	}
}

/* Reads one response: status line, headers, a Content-Length body. */
static int read_response(struct conn *c, int *status, char **resp, bool *closes)
{
	size_t hlen, clen = 0;
	char *end, *p;
	int ret;

	*closes = false;
	while (!(end = strstr(c->buf ? c->buf : "", "\r\n\r\n")))
		if ((ret = conn_fill(c)))
			return ret;
	hlen = (size_t)(end - c->buf) + 4;
	if (sscanf(c->buf, "HTTP/1.%*c %d", status) != 1)
		return -EPROTO;
	for (p = strstr(c->buf, "\r\n"); p && p < end; p = strstr(p + 2, "\r\n")) {
		if (!strncasecmp(p + 2, "Content-Length:", 15))
			clen = strtoul(p + 17, NULL, 10);
		else if (!strncasecmp(p + 2, "Connection: close", 17))
			*closes = true;
	}
	while (c->len < hlen + clen)
		if ((ret = conn_fill(c)))
			return ret;
	if (resp) {
		if (!(*resp = malloc(clen + 1)))
			return -ENOMEM;
		memcpy(*resp, c->buf + hlen, clen);
		(*resp)[clen] = '\0';
	}
	memmove(c->buf, c->buf + hlen + clen, c->len - hlen - clen);
	c->len -= hlen + clen;
	c->buf[c->len] = '\0';
	return 0;
}

int http_call(struct conn *c, const char *method, const char *path, const char *ctype,
	const char *body, size_t body_len, int *status, char **resp)
{
	char head[512];
	bool closes, fresh;
	int n, ret;

	if (resp)
		*resp = NULL;
	n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: %s\r\n%s%s%sContent-Length: %zu"
		"\r\n\r\n", method, path, c->via->host, ctype ? "Content-Type: " : "",
		ctype ? ctype : "", ctype ? "\r\n" : "", body_len);
	if (n < 0 || (size_t)n >= sizeof(head))
		return -EINVAL;
	for (int attempt = 0; attempt < 2; attempt++) {
		fresh = c->fd < 0;
		if (fresh && (ret = conn_open(c)))
			return ret;
		/* One write for head and body: two small writes would meet the delayed ACK. */
		{
			char *msg = malloc((size_t)n + body_len);

			if (!msg)
				return -ENOMEM;
			memcpy(msg, head, (size_t)n);
			if (body_len)
				memcpy(msg + n, body, body_len);
			ret = write_all(c->fd, c->ssl, msg, (size_t)n + body_len);
			free(msg);
		}
		if (!ret)
			ret = read_response(c, status, resp, &closes);
		if (!ret) {
			if (closes)
				conn_close(c);
			return 0;
		}
		conn_close(c);
		/* A kept-alive connection the server closed meanwhile: once more on a new one. */
		if (fresh)
			return ret;
		c->reconnects++;
	}
	return ret;
}
