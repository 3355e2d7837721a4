/*
 * tcpprobe: the TCP and UDP ends of the end-to-end tests. One binary, five roles:
 *
 *   tcpprobe listen ADDR PORT            echo server (every line comes back), runs until killed
 *   tcpprobe connect [-b SRC] [-t MS] ADDR PORT
 *                                        one connection, one echoed line, then close
 *   tcpprobe session [-b SRC] [-t MS] ADDR PORT
 *                                        one long-lived connection: for every line read on
 *                                        stdin, send it and wait for its echo; prints "ok LINE"
 *   tcpprobe udp-listen ADDR PORT        UDP echo server (every datagram back to its sender, from
 *                                        the address it came to), runs until killed
 *   tcpprobe udp-ask [-b SRC] [-t MS] ADDR PORT
 *                                        one datagram on a connected UDP socket, then its echo
 *
 * Exit codes say *how* a connection failed, so tests can tell a drop from a reject:
 *   0 success, 1 timed out (packets dropped), 2 refused or reset, 3 any other error, 64 usage.
 * For connect, 1 and 2 are the handshake's alone: a connection made whose echo then fails (a
 * listener that closed it, or went away) is 3, never taken for a drop or a reject.
 * udp-ask has no handshake: 1 is no echo in time (the datagram or its echo dropped), 2 an ICMP
 * port unreachable, which a connected UDP socket reports as ECONNREFUSED (a reject rule's and a
 * closed port's alike), and an echo of other bytes 3.
 */
/* accept4 and struct in6_pktinfo are GNU's: the build defines it, this file alone may not. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define EXIT_TIMEOUT 1
#define EXIT_REFUSED 2
#define EXIT_ERROR 3
#define EXIT_USAGE 64
#define MAX_CLIENTS 64
#define LINE_MAX_LEN 512

static int exit_for(int err)
{
	if (err == ETIMEDOUT)
		return EXIT_TIMEOUT;
	if (err == ECONNREFUSED || err == ECONNRESET || err == EPIPE)
		return EXIT_REFUSED;
	return EXIT_ERROR;
}

static int resolve(const char *addr, const char *port, int passive, struct addrinfo **res)
{
	struct addrinfo hints = {
		.ai_family = AF_UNSPEC,
		.ai_socktype = SOCK_STREAM,
		.ai_flags = AI_NUMERICHOST | AI_NUMERICSERV | (passive ? AI_PASSIVE : 0),
	};
	int r = getaddrinfo(addr, port, &hints, res);

	if (r)
		fprintf(stderr, "tcpprobe: %s port %s: %s\n", addr, port, gai_strerror(r));
	return r ? -EINVAL : 0;
}

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Waits for fd to become ready for events within the deadline. 0, -ETIMEDOUT or -errno. */
static int wait_fd(int fd, short events, long long deadline)
{
	struct pollfd p = { .fd = fd, .events = events };

	for (;;) {
		long long left = deadline - now_ms();
		int r;

		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)left);
		if (r > 0)
			return 0;
		if (r < 0 && errno != EINTR)
			return -errno;
	}
}

/*
 * Non-blocking connect bounded by timeout_ms; returns a connected fd or -errno. A SOCK_DGRAM
 * connect only fixes the peer, sending nothing: it and the wait return at once (resolve's
 * stream hint gives the same numeric address either way).
 */
static int dial(const char *src, const char *addr, const char *port, int type, int timeout_ms)
{
	struct addrinfo *dst = NULL, *bind_ai = NULL;
	long long deadline = now_ms() + timeout_ms;
	int fd = -1, ret, soerr = 0;
	socklen_t sl = sizeof(soerr);

	if (resolve(addr, port, 0, &dst) || (src && resolve(src, "0", 0, &bind_ai))) {
		ret = -EINVAL;
		goto out;
	}
	fd = socket(dst->ai_family, type | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		ret = -errno;
		goto out;
	}
	if (bind_ai && bind(fd, bind_ai->ai_addr, bind_ai->ai_addrlen) < 0) {
		ret = -errno;
		goto out;
	}
	if (connect(fd, dst->ai_addr, dst->ai_addrlen) < 0 && errno != EINPROGRESS) {
		ret = -errno;
		goto out;
	}
	if ((ret = wait_fd(fd, POLLOUT, deadline)))
		goto out;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
		soerr = errno;
	ret = soerr ? -soerr : fd;
out:
	if (ret < 0 && fd >= 0)
		close(fd);
	if (dst)
		freeaddrinfo(dst);
	if (bind_ai)
		freeaddrinfo(bind_ai);
	return ret;
}

/* Sends line + '\n' and waits for the same bytes back. 0 or -errno. */
static int exchange(int fd, const char *line, int timeout_ms)
{
	char out[LINE_MAX_LEN + 2], in[LINE_MAX_LEN + 2];
	long long deadline = now_ms() + timeout_ms;
	size_t n = (size_t)snprintf(out, sizeof(out), "%s\n", line), got = 0;
	ssize_t w;

	if (n >= sizeof(out))
		return -EMSGSIZE;
	w = send(fd, out, n, MSG_NOSIGNAL);
	if (w < 0)
		return -errno;
	if ((size_t)w != n)
		return -EIO;
	while (got < n) {
		ssize_t r;
		int ret = wait_fd(fd, POLLIN, deadline);

		if (ret)
			return ret;
		r = recv(fd, in + got, n - got, 0);
		if (r == 0)
			return -ECONNRESET;
		if (r < 0) {
			if (errno == EAGAIN || errno == EINTR)
				continue;
			return -errno;
		}
		got += (size_t)r;
	}
	return memcmp(in, out, n) ? -EIO : 0;
}

/*
 * Sends line + '\n' as one datagram and waits for the same datagram back. 0 or -errno: an ICMP
 * port unreachable is -ECONNREFUSED, no echo in time -ETIMEDOUT, any other datagram -EIO.
 */
static int udp_exchange(int fd, const char *line, int timeout_ms)
{
	char out[LINE_MAX_LEN + 2], in[LINE_MAX_LEN + 3];
	long long deadline = now_ms() + timeout_ms;
	size_t n = (size_t)snprintf(out, sizeof(out), "%s\n", line);
	ssize_t r;

	if (n >= sizeof(out))
		return -EMSGSIZE;
	r = send(fd, out, n, 0);
	if (r < 0)
		return -errno;
	if ((size_t)r != n)
		return -EIO;
	for (;;) {
		int ret = wait_fd(fd, POLLIN, deadline);

		if (ret)
			return ret;
		/* A byte more than was sent: a longer datagram, cut, must not pass for the echo. */
		r = recv(fd, in, n + 1, 0);
		if (r >= 0)
			return (size_t)r == n && !memcmp(in, out, n) ? 0 : -EIO;
		if (errno != EAGAIN && errno != EINTR)
			return -errno;
	}
}

static int do_listen(const char *addr, const char *port)
{
	struct pollfd p[MAX_CLIENTS + 1];
	struct addrinfo *ai = NULL;
	int one = 1, n = 1;

	if (resolve(addr, port, 1, &ai))
		return EXIT_USAGE;
	p[0].fd = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	p[0].events = POLLIN;
	if (p[0].fd < 0 || setsockopt(p[0].fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		bind(p[0].fd, ai->ai_addr, ai->ai_addrlen) || listen(p[0].fd, 64)) {
		fprintf(stderr, "tcpprobe: listen %s port %s: %s\n", addr, port, strerror(errno));
		freeaddrinfo(ai);
		return EXIT_ERROR;
	}
	freeaddrinfo(ai);
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		if (poll(p, (nfds_t)n, -1) < 0) {
			if (errno == EINTR)
				continue;
			return EXIT_ERROR;
		}
		for (int i = n - 1; i >= 1; i--) {
			char buf[4096];
			ssize_t r;

			if (!p[i].revents)
				continue;
			r = recv(p[i].fd, buf, sizeof(buf), 0);
			/* Echo everything; a client that stops reading is simply dropped. */
			if (r <= 0 || send(p[i].fd, buf, (size_t)r, MSG_NOSIGNAL | MSG_DONTWAIT) != r) {
				close(p[i].fd);
				p[i] = p[--n];
			}
		}
		if (p[0].revents & POLLIN) {
			int c = accept4(p[0].fd, NULL, NULL, SOCK_CLOEXEC);

			if (c >= 0 && n <= MAX_CLIENTS) {
				p[n].fd = c;
				p[n].events = POLLIN;
				p[n++].revents = 0;
			} else if (c >= 0) {
				close(c);
			}
		}
	}
}

/*
 * The socket is bound to the wildcard (ADDR "::" serves IPv4 too), but the echo must leave from
 * the address the datagram came to, which need not be the source the route picks: the asker's
 * connected socket takes datagrams from its peer's address alone. The kernel says which address
 * that was (IPV6_PKTINFO, for IPv4 on a dual-stack socket as a mapped address; IP_PKTINFO on an
 * IPv4 socket), and the same control message given back to sendmsg sends from it.
 */
static int want_pktinfo(int fd, int family)
{
	int one = 1;

	if (family == AF_INET6)
		return setsockopt(fd, IPPROTO_IPV6, IPV6_RECVPKTINFO, &one, sizeof(one));
	return setsockopt(fd, IPPROTO_IP, IP_PKTINFO, &one, sizeof(one));
}

static int do_udp_listen(const char *addr, const char *port)
{
	struct addrinfo *ai = NULL;
	int fd;

	if (resolve(addr, port, 1, &ai))
		return EXIT_USAGE;
	fd = socket(ai->ai_family, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (fd < 0 || want_pktinfo(fd, ai->ai_family) || bind(fd, ai->ai_addr, ai->ai_addrlen)) {
		fprintf(stderr, "tcpprobe: udp-listen %s port %s: %s\n", addr, port,
			strerror(errno));
		freeaddrinfo(ai);
		return EXIT_ERROR;
	}
	freeaddrinfo(ai);
	printf("listening\n");
	fflush(stdout);
	for (;;) {
		union {
			char buf[CMSG_SPACE(sizeof(struct in6_pktinfo))];
			struct cmsghdr align;
		} ctl;
		struct sockaddr_storage peer;
		char buf[4096];
		struct iovec iov = { .iov_base = buf, .iov_len = sizeof(buf) };
		struct msghdr m = {
			.msg_name = &peer,
			.msg_namelen = sizeof(peer),
			.msg_iov = &iov,
			.msg_iovlen = 1,
			.msg_control = ctl.buf,
			.msg_controllen = sizeof(ctl.buf),
		};
		ssize_t r = recvmsg(fd, &m, 0);

		if (r < 0) {
			/* An unconnected socket is told of no ICMP error: anything else is real. */
			if (errno == EINTR)
				continue;
			fprintf(stderr, "tcpprobe: udp-listen: %s\n", strerror(errno));
			close(fd);
			return EXIT_ERROR;
		}
		/* Echo it all (one over 4 KiB comes back cut); an echo not sent is simply lost. */
		iov.iov_len = (size_t)r;
		if (!m.msg_controllen)
			m.msg_control = NULL;
		sendmsg(fd, &m, MSG_DONTWAIT);
	}
}

static int do_connect(const char *src, const char *addr, const char *port, int timeout_ms)
{
	int fd = dial(src, addr, port, SOCK_STREAM, timeout_ms), ret;

	if (fd < 0) {
		fprintf(stderr, "tcpprobe: connect %s port %s: %s\n", addr, port, strerror(-fd));
		return exit_for(-fd);
	}
	ret = exchange(fd, "probe", timeout_ms);
	close(fd);
	if (ret) {
		fprintf(stderr, "tcpprobe: connected, but no echo from %s port %s: %s\n", addr,
			port, strerror(-ret));
		return EXIT_ERROR;
	}
	printf("connected\n");
	return 0;
}

static int do_session(const char *src, const char *addr, const char *port, int timeout_ms)
{
	char line[LINE_MAX_LEN + 2];
	int fd = dial(src, addr, port, SOCK_STREAM, timeout_ms), ret = 0;

	if (fd < 0) {
		fprintf(stderr, "tcpprobe: connect %s port %s: %s\n", addr, port, strerror(-fd));
		return exit_for(-fd);
	}
	printf("connected\n");
	fflush(stdout);
	while (fgets(line, sizeof(line), stdin)) {
		line[strcspn(line, "\r\n")] = '\0';
		if ((ret = exchange(fd, line, timeout_ms))) {
			printf("failed %s: %s\n", line, strerror(-ret));
			fflush(stdout);
			ret = exit_for(-ret);
			break;
		}
		printf("ok %s\n", line);
		fflush(stdout);
	}
	close(fd);
	return ret;
}

/* One datagram and its echo; the exit code says whether it was dropped or refused. */
static int do_udp_ask(const char *src, const char *addr, const char *port, int timeout_ms)
{
	int fd = dial(src, addr, port, SOCK_DGRAM, timeout_ms), ret;

	if (fd < 0) {
		fprintf(stderr, "tcpprobe: udp-ask %s port %s: %s\n", addr, port, strerror(-fd));
		return exit_for(-fd);
	}
	ret = udp_exchange(fd, "probe", timeout_ms);
	close(fd);
	if (ret) {
		fprintf(stderr, "tcpprobe: udp-ask %s port %s: no echo: %s\n", addr, port,
			strerror(-ret));
		return exit_for(-ret);
	}
	printf("echoed\n");
	return 0;
}

static void usage(void)
{
	fprintf(stderr, "usage: tcpprobe listen|udp-listen ADDR PORT\n"
			"       tcpprobe connect|session|udp-ask [-b SRC] [-t TIMEOUT_MS]"
			" ADDR PORT\n");
}

int main(int argc, char **argv)
{
	const char *cmd, *src = NULL;
	int timeout_ms = 2000, ch;

	if (argc < 2) {
		usage();
		return EXIT_USAGE;
	}
	cmd = argv[1];
	optind = 2;
	while ((ch = getopt(argc, argv, "b:t:")) != -1) {
		switch (ch) {
		case 'b': src = optarg; break;
		case 't': timeout_ms = atoi(optarg); break;
		default: usage(); return EXIT_USAGE;
		}
	}
	if (argc - optind != 2 || timeout_ms <= 0) {
		usage();
		return EXIT_USAGE;
	}
	if (!strcmp(cmd, "listen"))
		return do_listen(argv[optind], argv[optind + 1]);
	if (!strcmp(cmd, "connect"))
		return do_connect(src, argv[optind], argv[optind + 1], timeout_ms);
	if (!strcmp(cmd, "session"))
		return do_session(src, argv[optind], argv[optind + 1], timeout_ms);
	if (!strcmp(cmd, "udp-listen"))
		return do_udp_listen(argv[optind], argv[optind + 1]);
	if (!strcmp(cmd, "udp-ask"))
		return do_udp_ask(src, argv[optind], argv[optind + 1], timeout_ms);
	usage();
	return EXIT_USAGE;
}
