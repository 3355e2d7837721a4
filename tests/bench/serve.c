#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/util.h>

#include "bench.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"

/*
 * The ceiling of one grant per request on this machine: an agent that does nothing but take a
 * grant over HTTP keep-alive, verify it and answer. Each thread has its own libevent loop and
 * evhttp (what jitd serves with) on one SO_REUSEPORT port, so the kernel spreads connections
 * over the threads and no request is handed from one thread to another; grant_verify runs
 * inline. No policy, replay cache, kernel transaction or disk. Driven by `jitbench submit` as
 * jitd's throughput phases are, on the same CPUs, its rate is what jitd's would be if all of
 * its own work cost nothing.
 */

#define SERVE_MAX_THREADS 16

struct serve {
	const char *keys_dir, *aud;
	int stop_fd;		/* readable once the main thread wants the loops to end */
};

struct sthread {
	const struct serve *s;
	int fd;
	pthread_t th;
	struct event_base *base;
	struct evhttp *http;
	struct event *stop;
	struct jws_verifier jv;
	unsigned long long served, refused;
};

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	event_base_loopbreak(arg);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct sthread *t = arg;
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct evbuffer *out = evhttp_request_get_output_buffer(req);
	size_t len = evbuffer_get_length(in);
	const char *tok = len ? (const char *)evbuffer_pullup(in, -1) : NULL;
	const struct grant_verify_ctx ctx = { .keys_dir = t->s->keys_dir, .host_id = t->s->aud,
		.now = (int64_t)time(NULL), .clock_skew = 5, .verifier = &t->jv };
	struct grant g;
	struct jit_error e = { 0 };

	if (evhttp_request_get_command(req) != EVHTTP_REQ_POST ||
		strcmp(evhttp_request_get_uri(req), "/v1/grants") || !tok) {
		evhttp_send_error(req, 404, NULL);
		return;
	}
	if (grant_verify(tok, len, &ctx, &g, &e)) {
		t->refused++;
		evbuffer_add_printf(out, "{\"ok\":false,\"error\":\"%s\"}\n", jit_err_name(e.code));
		evhttp_send_reply(req, 403, "Forbidden", out);
		return;
	}
	/* About the size of jitd's own answer, so that the write costs what jitd's does. */
	evbuffer_add_printf(out, "{\"ok\":true,\"status\":\"applied\",\"id\":\"%s\","
		"\"expires_at\":%lld,\"expires_in\":%lld}\n", g.jti, (long long)g.exp,
		(long long)(g.exp - ctx.now));
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
		"application/json");
	evhttp_send_reply(req, 201, "Created", out);
	grant_clear(&g);
	t->served++;
}

static void *serve_thread(void *arg)
{
	struct sthread *t = arg;

	event_base_dispatch(t->base);
	return NULL;
}

static int listen_on(uint16_t port)
{
	struct sockaddr_in sin = { .sin_family = AF_INET, .sin_port = htons(port),
		.sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	int one = 1, fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) ||
		bind(fd, (struct sockaddr *)&sin, sizeof(sin)) || listen(fd, 256)) {
		int ret = -errno;

		close(fd);
		return ret;
	}
	return fd;
}

static int sthread_open(struct sthread *t, const struct serve *s, uint16_t port)
{
	t->s = s;
	if ((t->fd = listen_on(port)) < 0)
		return t->fd;
	if (!(t->base = event_base_new()) || !(t->http = evhttp_new(t->base)) ||
		!(t->stop = event_new(t->base, s->stop_fd, EV_READ, on_stop, t->base)) ||
		event_add(t->stop, NULL))
		return -ENOMEM;
	evhttp_set_allowed_methods(t->http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_gencb(t->http, on_request, t);
	if (evhttp_accept_socket(t->http, t->fd))
		return -EIO;
	t->fd = -1;		/* the listener owns it now */
	return 0;
}

static void sthread_close(struct sthread *t)
{
	if (t->http)
		evhttp_free(t->http);
	if (t->stop)
		event_free(t->stop);
	if (t->base)
		event_base_free(t->base);
	if (t->fd >= 0)
		close(t->fd);
	jws_verifier_clear(&t->jv);
}

int cmd_serve(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "port", required_argument, NULL, 'p' }, { "keys", required_argument, NULL, 'D' },
		{ "aud", required_argument, NULL, 'a' },
		{ "threads", required_argument, NULL, 't' },
		{ "seconds", required_argument, NULL, 's' },
		{ "ready", required_argument, NULL, 'r' },
		{ NULL, 0, NULL, 0 },
	};
	struct serve s = { .stop_fd = -1 };
	struct sthread t[SERVE_MAX_THREADS];
	const char *ready = NULL;
	unsigned long long served = 0, refused = 0;
	int c, nt = 1, port = 0, pfd[2] = { -1, -1 }, opened = 0, started = 0, ret = 1;
	double seconds = 0;
	uint64_t cpu0 = cpu_ns(), cpu1;
	struct timespec limit;
	sigset_t set;
	FILE *f;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'p': port = atoi(optarg); break;
		case 'D': s.keys_dir = optarg; break;
		case 'a': s.aud = optarg; break;
		case 't': nt = atoi(optarg); break;
		case 's': seconds = strtod(optarg, NULL); break;
		case 'r': ready = optarg; break;
		default: goto usage;
		}
	}
	if (!s.keys_dir || !s.aud || port < 1 || port > 65535 || nt < 1 || nt > SERVE_MAX_THREADS ||
		!(seconds > 0 && seconds <= 3600))
		goto usage;

	/* SIGTERM and SIGINT are taken by sigtimedwait below, never by a serving thread. */
	sigemptyset(&set);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	pthread_sigmask(SIG_BLOCK, &set, NULL);
	memset(t, 0, sizeof(t));
	if (pipe(pfd)) {
		perror("jitbench serve: pipe");
		return 1;
	}
	s.stop_fd = pfd[0];
	for (; opened < nt; opened++) {
		int r = sthread_open(&t[opened], &s, (uint16_t)port);

		if (r) {
			fprintf(stderr, "jitbench serve: cannot serve on 127.0.0.1:%d: %s\n", port,
				strerror(-r));
			opened++;
			goto out;
		}
	}
	for (; started < nt; started++)
		if (pthread_create(&t[started].th, NULL, serve_thread, &t[started]))
			goto out;
	if (ready && (!(f = fopen(ready, "w")) || fclose(f))) {
		fprintf(stderr, "jitbench serve: cannot write %s\n", ready);
		goto out;
	}
	limit.tv_sec = (time_t)seconds;
	limit.tv_nsec = (long)((seconds - (double)limit.tv_sec) * 1e9);
	/* Until signalled, or the bounded lifetime is over. */
	while (sigtimedwait(&set, NULL, &limit) < 0 && errno == EINTR)
		;
	ret = 0;
out:
	if (pfd[1] >= 0 && write(pfd[1], "x", 1) != 1)
		ret = 1;
	for (int i = 0; i < started; i++)
		pthread_join(t[i].th, NULL);
	cpu1 = cpu_ns();
	for (int i = 0; i < opened; i++) {
		served += t[i].served;
		refused += t[i].refused;
		sthread_close(&t[i]);
	}
	close(pfd[0]);
	close(pfd[1]);
	printf("threads=%d\nserved=%llu\nrefused=%llu\ncpu_s=%.3f\n", nt, served, refused,
		(double)(cpu1 - cpu0) / 1e9);
	return ret || refused ? 1 : 0;
usage:
	fprintf(stderr,
		"usage: jitbench serve --port P --keys DIR --aud HOST --seconds S [--threads N]\n"
		"         [--ready FILE]\n"
		"  Serves POST /v1/grants on 127.0.0.1:P with N threads (each its own libevent\n"
		"  loop on one SO_REUSEPORT port), verifying each grant inline and answering 201:\n"
		"  the ceiling of one grant per request. Ends on SIGTERM or after S seconds;\n"
		"  FILE is created once it accepts. Exits 1 if any grant was refused.\n");
	return 2;
}
