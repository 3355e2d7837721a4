/*
 * The sync threads: every request comes back exactly once, oldest first, with the result of the
 * passes that covered it; the descriptors it was given are closed; a failure reaches every
 * request of its pass and no other; syncer_wait and syncer_close deliver before they return.
 */
#include <errno.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "agent/syncer.h"
#include "common/clock.h"

#define REQS 32

static char path[] = "/tmp/jitd-test-syncer-XXXXXX";
static int file = -1;

struct tally {
	struct event_base *base;
	struct sync_req *req;	/* the requests, in the order they were made */
	size_t made, delivered;
	int fd[REQS];		/* what each was given */
};

static int setup(void **state)
{
	return (file = mkstemp(path)) < 0 ? -1 : 0;
}

static int teardown(void **state)
{
	close(file);
	return unlink(path);
}

static void done_cb(struct sync_req *done, void *arg)
{
	struct tally *t = arg;

	for (; done; done = done->next) {
		/* Oldest first, each once, and only once each of its files has been dealt with. */
		assert_ptr_equal(done, &t->req[t->delivered]);
		assert_int_equal(done->fd[0], -1);
		assert_int_equal(done->fd[1], -1);
		t->delivered++;
	}
	if (t->base && t->delivered == t->made)
		event_base_loopbreak(t->base);
}

static void request(struct syncer *s, struct tally *t, int fd)
{
	struct sync_req *r = &t->req[t->made];

	r->fd[0] = fd;
	r->fd[1] = -1;
	r->ret = 1; /* must be overwritten */
	t->fd[t->made++] = fd;
	syncer_request(s, r);
}

static int dup_file(void)
{
	int fd;

	assert_int_equal(write(file, "x", 1), 1);
	assert_true((fd = fcntl(file, F_DUPFD_CLOEXEC, 0)) >= 0);
	return fd;
}

static void assert_closed(const struct tally *t)
{
	for (size_t i = 0; i < t->made; i++)
		assert_true(fcntl(t->fd[i], F_GETFD) < 0 && errno == EBADF);
}

/* Runs the loop until every request made has come back (10 s at most). */
static void drain(struct tally *t)
{
	struct timeval limit = { 10, 0 };

	event_base_loopexit(t->base, &limit);
	event_base_dispatch(t->base);
	assert_int_equal(t->delivered, t->made);
}

/* Requests made faster than the threads sync: all back, in order, each fd closed. */
static void all_back_in_order(void **state)
{
	struct sync_req req[REQS] = { 0 };
	struct tally t = { .req = req };
	struct syncer *s;

	int64_t t0;

	assert_non_null(t.base = event_base_new());
	assert_int_equal(syncer_open(t.base, done_cb, &t, &s), 0);
	t0 = clock_mono_us();
	for (int i = 0; i < REQS; i++) {
		req[i].sync_us = -1;
		request(s, &t, dup_file());
	}
	drain(&t);
	/* Each one's time is its passes', measured inside the test's own. */
	for (int i = 0; i < REQS; i++) {
		assert_int_equal(req[i].ret, 0);
		assert_in_range(req[i].sync_us, 0, clock_mono_us() - t0);
	}
	assert_closed(&t);
	syncer_close(&s);
	assert_null(s);
	event_base_free(t.base);
}

/*
 * Requests naming only the first file, only the second, or both, made faster than they are
 * synced: all come back once, in the order they were made, each fd closed.
 */
static void mixed_files_in_order(void **state)
{
	struct sync_req req[REQS] = { 0 };
	struct tally t = { .req = req };
	int fds[REQS][2];
	struct syncer *s;

	assert_non_null(t.base = event_base_new());
	assert_int_equal(syncer_open(t.base, done_cb, &t, &s), 0);
	for (int i = 0; i < REQS; i++) {
		req[i].fd[0] = fds[i][0] = i % 3 != 1 ? dup_file() : -1;
		req[i].fd[1] = fds[i][1] = i % 3 != 0 ? dup_file() : -1;
		req[i].ret = 1;
		t.made++;
		syncer_request(s, &req[i]);
	}
	drain(&t);
	for (int i = 0; i < REQS; i++) {
		assert_int_equal(req[i].ret, 0);
		for (int k = 0; k < 2; k++)
			assert_true(fds[i][k] < 0 ||
				(fcntl(fds[i][k], F_GETFD) < 0 && errno == EBADF));
	}
	syncer_close(&s);
	event_base_free(t.base);
}

/* A descriptor that cannot be synced fails its own pass; the passes before and after hold. */
static void failure_stays_in_its_pass(void **state)
{
	struct sync_req req[3] = { 0 };
	struct tally t = { .req = req };
	struct event_base *base = event_base_new();
	struct syncer *s;
	int p[2];

	assert_non_null(base);
	assert_int_equal(pipe(p), 0);
	close(p[1]);
	assert_int_equal(syncer_open(base, done_cb, &t, &s), 0);
	request(s, &t, dup_file());
	syncer_wait(s);
	assert_int_equal(t.delivered, 1);
	request(s, &t, p[0]); /* fdatasync of a pipe: EINVAL */
	syncer_wait(s);
	assert_int_equal(t.delivered, 2);
	request(s, &t, dup_file());
	syncer_wait(s);
	assert_int_equal(t.delivered, 3);
	assert_int_equal(req[0].ret, 0);
	assert_int_equal(req[1].ret, -EINVAL);
	assert_int_equal(req[2].ret, 0);
	assert_closed(&t);
	syncer_close(&s);
	event_base_free(base);
}

/*
 * Two files in one request are synced side by side (each on its slot's thread): a failure on
 * either side is the request's, and both descriptors are closed.
 */
static void two_files_either_fails(void **state)
{
	char other[] = "/tmp/jitd-test-syncer-XXXXXX";
	int second = mkstemp(other);

	assert_true(second >= 0);
	assert_int_equal(write(second, "z", 1), 1);
	/* side 0: the pipe first (the second thread's); 1: the pipe second; 2: two good files. */
	for (int side = 0; side < 3; side++) {
		struct sync_req req[1] = { 0 };
		struct tally t = { .req = req };
		struct event_base *base = event_base_new();
		struct syncer *s;
		int p[2], good = dup_file(), bad;

		assert_non_null(base);
		assert_int_equal(pipe(p), 0);
		close(p[1]);
		bad = side == 2 ? (close(p[0]), fcntl(second, F_DUPFD_CLOEXEC, 0)) : p[0];
		assert_true(bad >= 0);
		req[0].fd[0] = t.fd[0] = side == 0 ? bad : good;
		req[0].fd[1] = t.fd[1] = side == 0 ? good : bad;
		req[0].ret = 1;
		t.made = 1;
		assert_int_equal(syncer_open(base, done_cb, &t, &s), 0);
		syncer_request(s, &req[0]);
		syncer_wait(s);
		assert_int_equal(t.delivered, 1);
		assert_int_equal(req[0].ret, side == 2 ? 0 : -EINVAL);
		for (int i = 0; i < 2; i++)
			assert_true(fcntl(t.fd[i], F_GETFD) < 0 && errno == EBADF);
		syncer_close(&s);
		event_base_free(base);
	}
	close(second);
	unlink(other);
}

/* More distinct files in a pass than it tracks: every one synced and closed, none refused. */
static void many_files(void **state)
{
	struct sync_req req[24] = { 0 };
	struct tally t = { .req = req };
	struct event_base *base = event_base_new();
	struct syncer *s;
	char names[24][sizeof(path)];

	assert_non_null(base);
	assert_int_equal(syncer_open(base, done_cb, &t, &s), 0);
	for (int i = 0; i < 24; i++) {
		int fd;

		memcpy(names[i], "/tmp/jitd-test-syncer-XXXXXX", sizeof(path));
		assert_true((fd = mkstemp(names[i])) >= 0);
		assert_int_equal(write(fd, "y", 1), 1);
		req[i].fd[0] = fd;
		req[i].fd[1] = -1;
		t.fd[t.made++] = fd;
	}
	/* Queued while the threads are idle, so that one pass is likely to take them all. */
	for (int i = 0; i < 24; i++)
		syncer_request(s, &req[i]);
	syncer_wait(s);
	assert_int_equal(t.delivered, 24);
	for (int i = 0; i < 24; i++) {
		assert_int_equal(req[i].ret, 0);
		unlink(names[i]);
	}
	assert_closed(&t);
	syncer_close(&s);
	event_base_free(base);
}

/*
 * syncer_request_here: with nothing queued, a request naming one file is synced before the call
 * returns (its descriptor closed, its result set), yet comes back only through done, on the
 * loop's turn. A failure here is the request's own. Mixed with requests the lanes take, all
 * come back once, in the order they were made, with their own results.
 */
static void here_when_idle(void **state)
{
	struct sync_req req[REQS] = { 0 };
	struct tally t = { .req = req };
	struct syncer *s;
	int p[2];

	assert_non_null(t.base = event_base_new());
	assert_int_equal(syncer_open(t.base, done_cb, &t, &s), 0);
	/* First a pipe (EINVAL at once), so that the disk's speed cannot send the next one away. */
	assert_int_equal(pipe(p), 0);
	close(p[1]);
	req[0].fd[0] = -1;
	req[0].fd[1] = t.fd[0] = p[0];
	req[1].fd[0] = t.fd[1] = dup_file();
	req[1].fd[1] = -1;
	for (int i = 0; i < 2; i++) {
		int64_t t0 = clock_mono_us();

		req[i].ret = 1;
		req[i].sync_us = -1;
		t.made++;
		syncer_request_here(s, &req[i]);
		assert_true(fcntl(t.fd[i], F_GETFD) < 0 && errno == EBADF);
		assert_int_equal(req[i].fd[0], -1);
		assert_int_equal(req[i].fd[1], -1);
		assert_int_equal(req[i].ret, i ? 0 : -EINVAL);
		assert_in_range(req[i].sync_us, 0, clock_mono_us() - t0);
	}
	assert_int_equal(t.delivered, 0);
	drain(&t);

	for (int i = 2; i < REQS; i++) {
		if (i % 4 == 3) {
			request(s, &t, dup_file());
			continue;
		}
		req[i].fd[0] = t.fd[i] = dup_file();
		req[i].fd[1] = i % 4 == 2 ? dup_file() : -1;	/* two files: the lanes' */
		req[i].ret = 1;
		t.made++;
		syncer_request_here(s, &req[i]);
	}
	drain(&t);
	for (int i = 2; i < REQS; i++)
		assert_int_equal(req[i].ret, 0);
	assert_closed(&t);
	syncer_close(&s);
	event_base_free(t.base);
}

/* Closing delivers what is still owed, on the caller's thread, with no loop running. */
static void close_delivers(void **state)
{
	struct sync_req req[REQS] = { 0 };
	struct tally t = { .req = req };
	struct event_base *base = event_base_new();
	struct syncer *s;

	assert_non_null(base);
	assert_int_equal(syncer_open(base, done_cb, &t, &s), 0);
	for (int i = 0; i < REQS; i++)
		request(s, &t, i % 2 ? dup_file() : -1);
	syncer_close(&s);
	assert_int_equal(t.delivered, REQS);
	for (int i = 0; i < REQS; i++)
		assert_int_equal(req[i].ret, 0);
	for (int i = 1; i < REQS; i += 2)
		assert_true(fcntl(t.fd[i], F_GETFD) < 0 && errno == EBADF);
	event_base_free(base);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(all_back_in_order),
		cmocka_unit_test(mixed_files_in_order),
		cmocka_unit_test(failure_stays_in_its_pass),
		cmocka_unit_test(close_delivers),
		cmocka_unit_test(two_files_either_fails),
		cmocka_unit_test(many_files),
		cmocka_unit_test(here_when_idle),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
