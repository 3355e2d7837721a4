/*
 * The hand-written JSON printer without an evbuffer: the block grows on the heap and the text
 * stays whole in it, through pieces larger than the block, formatted ones, and integers.
 * (With an evbuffer it is tested through status's documents, in test_status.) With an evbuffer
 * drained to a socket, as status is to a control client: what the socket takes leaves as the
 * text is printed, in order, and the rest stays; a socket whose peer is gone changes nothing.
 * With time to wait, no more than PRINTER_BACKLOG stays while a slow peer reads, and a peer
 * that does not read costs that time and no more.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>

#include "agent/printer.h"
#include "common/port.h"
#include "common/prefix.h"

static void grows_and_stays_whole(void **state __attribute__((unused)))
{
	char block[8], big[3000], want[4096];
	struct prefix src[2];
	struct port_spec ports[2] = { { 22, PORT_PROTO_TCP }, { 53, PORT_PROTO_UDP } };
	struct printer pr;

	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(prefix_parse("192.0.2.0/24", &src[0]), 0);
	assert_int_equal(prefix_parse("2001:db8::1", &src[1]), 0);
	printer_init(&pr, NULL, block, sizeof(block));
	pr_raw(&pr, "[");
	pr_string(&pr, "a\"b");
	pr_printf(&pr, ",%s,", big);
	pr_int(&pr, true, LLONG_MIN);
	pr_raw(&pr, ",");
	pr_int(&pr, false, 1);
	pr_raw(&pr, ",[");
	pr_prefixes(&pr, src, 2);
	pr_raw(&pr, "],[");
	pr_ports(&pr, ports, 2);
	pr_raw(&pr, "],");
	pr_stamp(&pr, 0, 1800000000);
	pr_raw(&pr, "]");
	snprintf(want, sizeof(want), "[\"a\\\"b\",%s,%lld,null,[\"192.0.2.0/24\",\"2001:db8::1\"],"
		"[\"22/tcp\",\"53/udp\"],\"2027-01-15T08:00:00Z\"]", big, LLONG_MIN);
	assert_int_equal(pr.err, 0);
	assert_true(pr.heap);
	assert_int_equal(pr.len, strlen(want));
	assert_memory_equal(pr.p, want, pr.len);
	assert_true(pr.cap > pr.len);
	printer_release(&pr);
	assert_null(pr.p);
}

/* Text that fits stays in the caller's block: nothing to allocate or free. */
static void fits_in_block(void **state __attribute__((unused)))
{
	char block[64];
	struct printer pr;

	printer_init(&pr, NULL, block, sizeof(block));
	pr_printf(&pr, "{\"n\":%d}", 42);
	assert_int_equal(pr.err, 0);
	assert_false(pr.heap);
	assert_ptr_equal(pr.p, block);
	assert_int_equal(pr.len, 8);
	assert_memory_equal(pr.p, "{\"n\":42}", 8);
	printer_release(&pr);
}

/* 4 MB of numbered lines, far more than a socket buffer holds, printed in 99-byte pieces. */
#define DRAIN_LINES 40000

static void print_lines(struct printer *pr)
{
	for (int i = 0; i < DRAIN_LINES; i++)
		pr_printf(pr, "%098d\n", i);
	pr_flush(pr);
}

#define DRAIN_TOTAL ((size_t)DRAIN_LINES * 99 + 5)

/* What the peer must read in all: "head\n" (added before printing) and the lines. */
static char *want_text(void)
{
	char *want = malloc(DRAIN_TOTAL + 1);

	assert_non_null(want);
	memcpy(want, "head\n", 5);
	for (int i = 0; i < DRAIN_LINES; i++)
		snprintf(want + 5 + (size_t)i * 99, 100, "%098d\n", i);
	return want;
}

/* The text, read from the peer's end (what went) and then from out (the rest). */
static void check_text(int peer, struct evbuffer *out, size_t drained)
{
	size_t got = 0, left = evbuffer_get_length(out);
	char *text = malloc(DRAIN_TOTAL), *want = want_text();

	assert_non_null(text);
	assert_int_equal(drained + left, DRAIN_TOTAL);
	for (;;) {
		ssize_t r = read(peer, text + got, DRAIN_TOTAL - got);

		if (r <= 0) {
			assert_true(r < 0 && errno == EAGAIN);
			break;
		}
		got += (size_t)r;
	}
	assert_int_equal(got, drained);
	assert_int_equal(evbuffer_remove(out, text + got, left), (int)left);
	assert_memory_equal(text, want, DRAIN_TOTAL);
	free(text);
	free(want);
}

/*
 * A printer into an evbuffer that holds "head\n" already, drained to sv[0] of a new socket pair
 * (sv[1] is the peer), waiting wait_ms at most.
 */
static struct evbuffer *drained_printer(struct printer *pr, char *block, size_t cap, int sv[2],
	int wait_ms)
{
	struct evbuffer *out = evbuffer_new();

	assert_non_null(out);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	assert_int_equal(evbuffer_add(out, "head\n", 5), 0);
	printer_init(pr, out, block, cap);
	printer_drain_to(pr, sv[0], wait_ms);
	return out;
}

/*
 * A peer that reads nothing: what its socket took went, the rest stays, all of it in order. With
 * time to wait (wait_ms), the printer waits it out, once, and keeps more than PRINTER_BACKLOG.
 */
static void drain_unread(int wait_ms)
{
	char block[4096];
	struct printer pr;
	int sv[2];
	struct evbuffer *out = drained_printer(&pr, block, sizeof(block), sv, wait_ms);

	print_lines(&pr);
	assert_int_equal(pr.err, 0);
	assert_int_equal(pr.drain_fd, sv[0]); /* a full socket is no failure */
	assert_true(pr.drained > 0);
	assert_true(evbuffer_get_length(out) > (wait_ms ? PRINTER_BACKLOG : 0));
	if (wait_ms)
		assert_true(pr.drain_wait_us <= 0);
	check_text(sv[1], out, pr.drained);
	close(sv[0]);
	close(sv[1]);
	evbuffer_free(out);
}

static void drains_to_socket(void **state __attribute__((unused)))
{
	drain_unread(0);
}

static void drain_wait_ends(void **state __attribute__((unused)))
{
	drain_unread(20);
}

static void drain_peer_gone(void **state __attribute__((unused)))
{
	char block[4096];
	struct printer pr;
	int sv[2];
	struct evbuffer *out = drained_printer(&pr, block, sizeof(block), sv, 0);

	close(sv[1]);
	signal(SIGPIPE, SIG_IGN); /* as jitd does */
	print_lines(&pr);
	assert_int_equal(pr.err, 0);
	assert_int_equal(pr.drain_fd, -1);
	assert_int_equal(pr.drained, 0);
	assert_int_equal(evbuffer_get_length(out), DRAIN_TOTAL); /* all of it stayed */
	close(sv[0]);
	evbuffer_free(out);
}

/* A peer that reads 16 KB every 2 ms, far slower than the printer writes, until end of file. */
struct slow_reader {
	int fd;
	char *text;
	size_t got;
};

static void *read_slowly(void *arg)
{
	struct slow_reader *r = arg;
	struct pollfd pfd = { .fd = r->fd, .events = POLLIN };

	for (;;) {
		size_t room = DRAIN_TOTAL + 1 - r->got;
		ssize_t n = read(r->fd, r->text + r->got, room < 16384 ? room : 16384);

		if (n == 0 || (n < 0 && errno != EAGAIN))
			break;
		if (n > 0) {
			r->got += (size_t)n;
			usleep(2000);
		} else if (poll(&pfd, 1, -1) < 0) {
			break;
		}
	}
	return NULL;
}

static void drain_waits_for_reader(void **state __attribute__((unused)))
{
	struct slow_reader r = { .text = malloc(DRAIN_TOTAL + 1) };
	size_t most = 0;
	char block[4096], *want = want_text();
	struct printer pr;
	pthread_t t;
	int sv[2];
	struct evbuffer *out = drained_printer(&pr, block, sizeof(block), sv, 60000);

	assert_non_null(r.text);
	r.fd = sv[1];
	assert_int_equal(pthread_create(&t, NULL, read_slowly, &r), 0);
	for (int i = 0; i < DRAIN_LINES; i++) {
		size_t len;

		pr_printf(&pr, "%098d\n", i);
		len = evbuffer_get_length(out);
		most = len > most ? len : most;
	}
	pr_flush(&pr);
	assert_int_equal(pr.err, 0);
	assert_int_equal(pr.drain_fd, sv[0]);
	assert_true(most <= PRINTER_BACKLOG);
	assert_true(pr.drain_wait_us < 60000 * 1000); /* it did wait: the peer is slower */
	/* The rest as the control socket's own writes send it, then end of file. */
	while (evbuffer_get_length(out)) {
		struct pollfd pfd = { .fd = sv[0], .events = POLLOUT };
		int n = evbuffer_write(out, sv[0]);

		assert_true(n > 0 || (n < 0 && errno == EAGAIN));
		assert_true(poll(&pfd, 1, 60000) == 1);
	}
	shutdown(sv[0], SHUT_WR);
	assert_int_equal(pthread_join(t, NULL), 0);
	assert_int_equal(r.got, DRAIN_TOTAL);
	assert_memory_equal(r.text, want, DRAIN_TOTAL);
	close(sv[0]);
	close(sv[1]);
	evbuffer_free(out);
	free(r.text);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(grows_and_stays_whole),
		cmocka_unit_test(fits_in_block),
		cmocka_unit_test(drains_to_socket),
		cmocka_unit_test(drain_peer_gone),
		cmocka_unit_test(drain_waits_for_reader),
		cmocka_unit_test(drain_wait_ends),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
