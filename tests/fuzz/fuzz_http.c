/*
 * The controller endpoint's request path, agent/http.c as jitd runs it (plain HTTP on loopback),
 * fed raw bytes by a real TCP client. The .c is included, as wireguard-tools' fuzzers do, for
 * two facts the API does not give: the port the kernel chose and when every server-side
 * connection is gone. The enforcer, status and nft are stand-ins (fuzz_http_stubs.c).
 */
#include "../../agent/http.c"

#include <poll.h>
#include <signal.h>
#include <time.h>

#include "fuzz_http_stubs.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* rate_limit 0: a token bucket per address would make inputs depend on the ones before. */
#define FUZZ_CONFIG "{\"host_id\": \"fuzz\", \"listen\": {\"address\": \"127.0.0.1:1\", " \
	"\"insecure_plaintext\": true, \"rate_limit\": 0, \"timeout\": 5}}"
/* Loop turns without news after which the server is taken to wait for more input. */
#define IDLE_TURNS 4
/* Bounds on one exchange and on the server letting go afterwards (both far above normal). */
#define EXCHANGE_MS 250
#define SETTLE_MS 2000

/* FUZZ_HTTP_SHOW=1: the server's replies on stderr, to read what an input did. */
static bool show;

struct fuzz {
	struct event_base *base;
	struct config *cfg;
	struct http *h;
	struct sockaddr_in addr;
};

static int64_t mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void fail(const char *what) __attribute__((noreturn));
static void fail(const char *what)
{
	fprintf(stderr, "fuzz_http: %s: %s\n", what, strerror(errno));
	abort();
}

/* One endpoint for the whole process: http_open costs a socket and an evhttp each time. */
static struct fuzz *fuzz_setup(void)
{
	static struct fuzz f;
	struct jit_error e = { 0 };
	struct enforce *enf = NULL;
	socklen_t sl = sizeof(f.addr);
	char err[256];

	/* jitd ignores it too (agent/main.c): a client gone mid-reply is an error, not a signal. */
	signal(SIGPIPE, SIG_IGN);
	log_set_level(LOG_LVL_ERR);
	show = getenv("FUZZ_HTTP_SHOW");
	if (config_parse(FUZZ_CONFIG, strlen(FUZZ_CONFIG), &f.cfg, &e)) {
		fprintf(stderr, "fuzz_http: config: %s\n", e.msg);
		abort();
	}
	/* config_parse wants a real port; the kernel's pick keeps parallel runs apart. */
	f.cfg->listen.port = 0;
	if (!(f.base = event_base_new()) || !(enf = stub_open(f.base)))
		fail("event base");
	if (http_open(f.base, f.cfg, &f.h, err, sizeof(err)) || !f.h) {
		fprintf(stderr, "fuzz_http: http_open: %s\n", err);
		abort();
	}
	if (http_attach(f.h, enf, err, sizeof(err))) {
		fprintf(stderr, "fuzz_http: http_attach: %s\n", err);
		abort();
	}
	if (getsockname(evconnlistener_get_fd(f.h->lev), (struct sockaddr *)&f.addr, &sl))
		fail("getsockname");
	return &f;
}

/*
 * Non-blocking, the handshake waited for with poll: a blocking connect fails with EINTR when
 * libFuzzer's -timeout alarm (SIGALRM, without SA_RESTART) comes during it. On loopback the
 * kernel completes the handshake before accept.
 */
static int client_connect(const struct fuzz *f)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0), err = 0, n;
	struct pollfd p = { .fd = fd, .events = POLLOUT };
	socklen_t el = sizeof(err);

	if (fd < 0)
		fail("socket");
	if (connect(fd, (const struct sockaddr *)&f->addr, sizeof(f->addr)) && errno != EINPROGRESS)
		fail("connect");
	while ((n = poll(&p, 1, 10000)) < 0 && errno == EINTR)
		;
	if (n <= 0) {
		if (n == 0)
			errno = ETIMEDOUT;
		fail("connect: poll");
	}
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &el) || err) {
		errno = err ? err : errno;
		fail("connect");
	}
	return fd;
}

/* Reads what the server sent; false once it closed or reset. *news when bytes came. */
static bool client_drain(int fd, bool *news)
{
	char buf[16384];
	ssize_t n;

	while ((n = recv(fd, buf, sizeof(buf), 0)) > 0) {
		*news = true;
		if (show)
			fwrite(buf, 1, (size_t)n, stderr);
	}
	return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR);
}

/*
 * Sends data and turns the loop until the server closed, or answered everything it could and
 * waits for more (a few quiet turns: loopback I/O is ready at once), or a deadline passed.
 */
static void exchange(struct fuzz *f, int fd, const uint8_t *data, size_t size)
{
	int64_t deadline = mono_ms() + EXCHANGE_MS;
	unsigned idle = 0;
	size_t off = 0;
	ssize_t n;

	while (idle < IDLE_TURNS && mono_ms() < deadline) {
		bool news = false;

		if (off < size) {
			n = send(fd, data + off, size - off, MSG_NOSIGNAL);
			if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
				return;
			if (n > 0) {
				off += (size_t)n;
				news = true;
			}
		}
		event_base_loop(f->base, EVLOOP_NONBLOCK);
		if (!client_drain(fd, &news))
			return;
		idle = news || stub_owed_soon() || f->h->n_pending ? 0 : idle + 1;
	}
}

/* A reset, not a FIN: no TIME_WAIT per input, and evhttp treats both as the client gone. */
static void client_reset(int fd)
{
	struct linger lg = { .l_onoff = 1, .l_linger = 0 };

	(void)setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg));
	close(fd);
}

/*
 * After the client left: held-back grants are answered (their replies meet the reset), and the
 * server must drop the connection, so nothing carries over to the next input.
 */
static void settle(struct fuzz *f)
{
	int64_t deadline = mono_ms() + SETTLE_MS;
	unsigned turns = 0;

	while (f->h->n_conns || !LIST_EMPTY(&f->h->waiting) || stub_owed()) {
		if (mono_ms() > deadline) {
			fprintf(stderr, "fuzz_http: %zu connection(s), %zu grant(s) left behind\n",
				f->h->n_conns, stub_owed());
			abort();
		}
		/*
		 * A few turns first, for an evhttp that notices the reset while a reply is owed
		 * and detaches the request (2.1.12 does not read then: the reply finds the reset).
		 */
		if (++turns > IDLE_TURNS)
			stub_flush();
		event_base_loop(f->base, EVLOOP_NONBLOCK);
	}
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct fuzz *f;
	int fd;

	if (!f)
		f = fuzz_setup();
	fd = client_connect(f);
	exchange(f, fd, data, size);
	client_reset(fd);
	settle(f);
	return 0;
}
