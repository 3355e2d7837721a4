/*
 * The verification pool: every job comes back exactly once, with grant_verify's verdict, whether
 * it is delivered on the loop or handed back by verifier_close; jobs submitted together are
 * delivered in batches, not one wake-up each. And the decoded-key cache the workers share
 * never outlives a change to the key file.
 */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <stdbool.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <event2/event.h>

#include "agent/verifier.h"
#include "common/jws.h"
#include "common/keys.h"

#define HOST "verifier-host"
#define NOW 1800000000
#define JOBS 64

static char dir[] = "/tmp/jitd-test-verifier-XXXXXX";
static EVP_PKEY *priv;

struct tally {
	struct event_base *base;
	unsigned delivered, batches, ok, refused;
	unsigned char seen[JOBS];
};

static int setup(void **state)
{
	char path[sizeof(dir) + 16];

	if (!mkdtemp(dir) || keys_generate(dir, "k1"))
		return -1;
	snprintf(path, sizeof(path), "%s/k1.key", dir);
	return keys_load_private(path, &priv);
}

static int teardown(void **state)
{
	char path[sizeof(dir) + 16];

	snprintf(path, sizeof(path), "%s/k1.key", dir);
	unlink(path);
	snprintf(path, sizeof(path), "%s/k1.pem", dir);
	unlink(path);
	rmdir(dir);
	EVP_PKEY_free(priv);
	return 0;
}

/* Even i: a valid grant with jti "j<i>"; odd i: not a JWS at all. */
static struct verify_job *job(int i, struct tally *t)
{
	const struct grant_verify_ctx ctx = { .keys_dir = dir, .host_id = HOST, .now = NOW,
		.clock_skew = 30 };
	json_t *h = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", GRANT_TYP, "kid", "k1");
	json_t *c = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:[s], s:[{s:i, s:s}]}", "iss", "ctl",
		"sub", "alice", "jti", "", "aud", HOST, "iat", (json_int_t)NOW - 5, "exp",
		(json_int_t)NOW + 600, "src", "192.0.2.7", "ports", "port", 22, "protocol", "tcp");
	char jti[16], *payload, *tok = NULL;
	struct verify_job *j;

	snprintf(jti, sizeof(jti), "j%d", i);
	assert_int_equal(json_object_set_new(c, "jti", json_string(jti)), 0);
	payload = json_dumps(c, JSON_COMPACT);
	assert_non_null(payload);
	assert_int_equal(jws_sign(h, (const unsigned char *)payload, strlen(payload), priv, &tok), 0);
	if (i % 2)
		tok[0] = '!';
	j = verify_job_new(tok, strlen(tok), &ctx, t);
	assert_non_null(j);
	free(tok);
	free(payload);
	json_decref(c);
	json_decref(h);
	return j;
}

static void count(struct tally *t, struct verify_job *j)
{
	int i;

	if (j->ret == 0) {
		assert_int_equal(j->grant.jti[0], 'j');
		i = atoi(j->grant.jti + 1);
		assert_true(i >= 0 && i < JOBS && i % 2 == 0);
		assert_int_equal(t->seen[i]++, 0);
		t->ok++;
	} else {
		assert_int_equal(j->token[0], '!');
		assert_int_equal(j->ret, JIT_ERR_MALFORMED);
		t->refused++;
	}
}

static void done(struct verify_job *jobs, void *arg)
{
	struct tally *t = arg;

	t->batches++;
	for (struct verify_job *j = jobs; j; j = j->next) {
		count(t, j);
		t->delivered++;
	}
	verify_job_free(jobs);
	if (t->delivered == JOBS)
		event_base_loopbreak(t->base);
}

static void all_delivered(void **state)
{
	struct timeval limit = { 20, 0 };
	struct tally t = { 0 };
	struct verifier *v;

	t.base = event_base_new();
	assert_non_null(t.base);
	assert_int_equal(verifier_open(t.base, 2, done, &t, &v), 0);
	assert_int_equal(verifier_threads(v), 2);
	for (int i = 0; i < JOBS; i++)
		verifier_submit(v, job(i, &t));
	/* Bounded: a lost job ends the loop here instead of hanging the test. */
	event_base_loopexit(t.base, &limit);
	event_base_dispatch(t.base);
	assert_int_equal(t.delivered, JOBS);
	assert_int_equal(t.ok, JOBS / 2);
	assert_int_equal(t.refused, JOBS / 2);
	/* One wake-up per batch of finished jobs, not per job. */
	assert_true(t.batches < JOBS);
	assert_null(verifier_close(&v));
	assert_null(v);
	event_base_free(t.base);
}

static void close_hands_back(void **state)
{
	struct tally t = { 0 };
	struct verifier *v;
	struct verify_job *rest;
	unsigned n = 0;

	t.base = event_base_new();
	assert_non_null(t.base);
	assert_int_equal(verifier_open(t.base, 1, done, &t, &v), 0);
	for (int i = 0; i < JOBS; i++)
		verifier_submit(v, job(i, &t));
	/* The loop never ran: nothing was delivered, everything comes back, verified or not. */
	rest = verifier_close(&v);
	for (struct verify_job *j = rest; j; j = j->next)
		n++;
	assert_int_equal(n, JOBS);
	assert_int_equal(t.delivered, 0);
	verify_job_free(rest);
	event_base_free(t.base);
}

/* Verifies a grant signed with the original k1 against whatever keys_dir holds now. */
static int verify_now(void)
{
	struct tally t = { 0 };
	struct verify_job *j = job(0, &t);
	const struct grant_verify_ctx ctx = { .keys_dir = dir, .host_id = HOST, .now = NOW,
		.clock_skew = 30 };
	int ret = grant_verify(j->token, j->len, &ctx, &j->grant, &j->err);

	verify_job_free(j);
	return ret;
}

/* Reads a small file whole into buf; its length. */
static size_t slurp(const char *path, char *buf, size_t cap)
{
	int fd = open(path, O_RDONLY);
	ssize_t n;

	assert_true(fd >= 0);
	n = read(fd, buf, cap);
	assert_true(n > 0 && (size_t)n < cap);
	close(fd);
	return (size_t)n;
}

/*
 * Decoded keys are remembered by file identity (common/keys.c); any change to the file must be
 * seen at once: a key replaced by another file, the same file written over, loosened
 * permissions, a removed file.
 */
static void key_changes_seen(void **state)
{
	char other[] = "/tmp/jitd-test-verifier-other-XXXXXX", from[64], to[64], orig[4096];
	const struct timespec old_mtime[2] = { { 0, UTIME_OMIT }, { 1, 0 } };
	size_t orig_len;
	int fd;

	snprintf(to, sizeof(to), "%s/k1.pem", dir);
	orig_len = slurp(to, orig, sizeof(orig));
	assert_int_equal(verify_now(), 0);
	assert_int_equal(verify_now(), 0); /* from the cache */
	assert_non_null(mkdtemp(other));
	assert_int_equal(keys_generate(other, "k1"), 0);
	snprintf(from, sizeof(from), "%s/k1.pem", other);
	/* Another key under the same name: the old signature no longer verifies. */
	assert_int_equal(rename(from, to), 0);
	assert_int_equal(verify_now(), JIT_ERR_BAD_SIGNATURE);
	/*
	 * The original key written back over that file: the same inode and the same size (every
	 * Ed25519 PEM has one length), so only its times tell. The mtime is set apart, since a
	 * write within one clock tick of the last could leave them as they were.
	 */
	fd = open(to, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, orig, orig_len), (ssize_t)orig_len);
	assert_int_equal(futimens(fd, old_mtime), 0);
	close(fd);
	assert_int_equal(verify_now(), 0);
	assert_int_equal(chmod(to, 0666), 0);
	assert_int_equal(verify_now(), JIT_ERR_UNKNOWN_KEY);
	assert_int_equal(unlink(to), 0);
	assert_int_equal(verify_now(), JIT_ERR_UNKNOWN_KEY);
	snprintf(from, sizeof(from), "%s/k1.key", other);
	unlink(from);
	rmdir(other);
}

static void count_range(void *arg, size_t begin, size_t end)
{
	unsigned char *seen = arg;

	for (size_t i = begin; i < end; i++)
		seen[i]++;
}

/* verifier_run covers every index exactly once, whatever the threads and chunk for the size. */
static void run_covers_all(void **state)
{
	static const struct { unsigned threads; size_t n, chunk; } cases[] = {
		{ 0, 0, 1024 }, { 0, 1, 1024 }, { 16, 5, 1024 }, { 3, 1000, 1024 },
		{ 2, 100001, 1024 }, { 64, 77, 1024 }, { 1, 9, 1024 }, { 2, 100001, 7 },
		{ 3, 1000, 1 }, { 2, 9, 0 }, { 4, 5000, 4999 }, { 2, 64, 64 },
	};
	unsigned char *seen = calloc(100001, 1);

	assert_non_null(seen);
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++) {
		memset(seen, 0, 100001);
		verifier_run(cases[c].threads, cases[c].n, cases[c].chunk, count_range, seen, NULL);
		for (size_t i = 0; i < cases[c].n; i++)
			assert_int_equal(seen[i], 1);
		for (size_t i = cases[c].n; i < 100001; i++)
			assert_int_equal(seen[i], 0);
	}
	free(seen);
}

struct led {
	unsigned char *seen;
	pthread_t caller;
	int leads, patience;	/* patience: 5 ms waits for the other thread's first chunk */
	bool on_caller;
	size_t done_before_lead_returned;
};

/* Atomic, as lead reads the marks while the other thread writes them. */
static void count_led(void *arg, size_t begin, size_t end)
{
	struct led *l = arg;

	for (size_t i = begin; i < end; i++)
		__atomic_fetch_add(&l->seen[i], 1, __ATOMIC_RELAXED);
}

static void lead(void *arg)
{
	struct led *l = arg;
	size_t done = 0;

	l->leads++;
	l->on_caller = pthread_equal(pthread_self(), l->caller);
	/* Long enough for another thread to have taken chunks meanwhile. */
	for (int i = 0; i < l->patience && !done; i++) {
		struct timespec ms = { 0, 5 * 1000 * 1000 };

		nanosleep(&ms, NULL);
		for (size_t k = 0; k < 100001; k++)
			done += __atomic_load_n(&l->seen[k], __ATOMIC_RELAXED) != 0;
	}
	l->done_before_lead_returned = done;
}

/*
 * With a lead, the caller's thread runs it once and then joins in: every index is still done
 * exactly once, and with two threads the other one works meanwhile.
 */
static void run_with_lead(void **state __attribute__((unused)))
{
	struct led l = { .seen = calloc(100001, 1), .caller = pthread_self(), .patience = 400 };

	assert_non_null(l.seen);
	verifier_run(2, 100001, 1024, count_led, &l, lead);
	assert_int_equal(l.leads, 1);
	assert_true(l.on_caller);
	assert_true(l.done_before_lead_returned > 0);
	for (size_t i = 0; i < 100001; i++)
		assert_int_equal(l.seen[i], 1);
	/* One thread: the lead first, then everything on the caller's. */
	memset(l.seen, 0, 100001);
	l.leads = 0;
	l.patience = 2;
	verifier_run(1, 1000, 1024, count_led, &l, lead);
	assert_int_equal(l.leads, 1);
	assert_int_equal(l.done_before_lead_returned, 0);
	for (size_t i = 0; i < 1000; i++)
		assert_int_equal(l.seen[i], 1);
	free(l.seen);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(all_delivered),
		cmocka_unit_test(close_hands_back),
		cmocka_unit_test(run_covers_all),
		cmocka_unit_test(run_with_lead),
		/* Last: it replaces and removes k1. */
		cmocka_unit_test(key_changes_seen),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
