#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <jansson.h>

#include "agent/verifier.h"
#include "common/clock.h"
#include "common/jws.h"
#include "agent/wake.h"

#define MAX_THREADS 16

struct verifier {
	pthread_mutex_t lock;
	pthread_cond_t work;
	/* Queued jobs (FIFO) and finished ones not yet delivered (LIFO), both under lock. */
	struct verify_job *head, *tail, *done;
	bool stopping;
	pthread_t thread[MAX_THREADS];
	unsigned n_threads;
	struct wake *wake;
	verifier_done_fn done_fn;
	void *arg;
};

static void *worker(void *arg)
{
	struct verifier *v = arg;
	struct jws_verifier jv = { 0 };

	/* Named, so that top -H, ps -L and perf tell verification from the loop. */
	pthread_setname_np(pthread_self(), "jitd-verify");
	pthread_mutex_lock(&v->lock);
	for (;;) {
		struct verify_job *j;
		bool wake;
		int64_t t0;

		while (!v->head && !v->stopping)
			pthread_cond_wait(&v->work, &v->lock);
		if (v->stopping)
			break;
		j = v->head;
		if (!(v->head = j->next))
			v->tail = NULL;
		pthread_mutex_unlock(&v->lock);

		const struct grant_verify_ctx ctx = { .keys_dir = j->keys_dir,
			.host_id = j->host_id, .now = j->now, .clock_skew = j->clock_skew,
			.verifier = &jv };
		t0 = clock_mono_us();
		j->ret = grant_verify(j->token, j->len, &ctx, &j->grant, &j->err);
		j->verify_us = clock_mono_us() - t0;

		pthread_mutex_lock(&v->lock);
		/* One wake-up per batch: the loop takes everything finished when it runs. */
		wake = !v->done;
		j->next = v->done;
		v->done = j;
		if (wake) {
			/*
			 * Outside the lock: the loop it wakes takes the lock at once, and would
			 * find it held. v->wake outlives the workers (verifier_close joins first).
			 */
			pthread_mutex_unlock(&v->lock);
			wake_signal(v->wake);
			pthread_mutex_lock(&v->lock);
		}
	}
	pthread_mutex_unlock(&v->lock);
	jws_verifier_clear(&jv);
	return NULL;
}

static struct verify_job *reverse(struct verify_job *j)
{
	struct verify_job *r = NULL;

	while (j) {
		struct verify_job *next = j->next;

		j->next = r;
		r = j;
		j = next;
	}
	return r;
}

static void deliver(void *arg)
{
	struct verifier *v = arg;
	struct verify_job *done;

	pthread_mutex_lock(&v->lock);
	done = v->done;
	v->done = NULL;
	pthread_mutex_unlock(&v->lock);
	if (done)
		v->done_fn(reverse(done), v->arg);
}

static unsigned cpus(void)
{
	cpu_set_t set;
	int n;

	if (sched_getaffinity(0, sizeof(set), &set) == 0 && (n = CPU_COUNT(&set)) > 0)
		return (unsigned)n;
	n = (int)sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? (unsigned)n : 1;
}

int verifier_open(struct event_base *base, unsigned threads, verifier_done_fn done, void *arg,
	struct verifier **out)
{
	struct verifier *v;
	int ret;

	*out = NULL;
	if (!(v = calloc(1, sizeof(*v))))
		return -ENOMEM;
	v->done_fn = done;
	v->arg = arg;
	pthread_mutex_init(&v->lock, NULL);
	pthread_cond_init(&v->work, NULL);
	if ((ret = wake_open(base, deliver, v, &v->wake)))
		goto fail;
	/* jansson seeds its hash function on first use; do it before there are threads. */
	json_object_seed(0);
	if (!threads)
		threads = cpus();
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	for (; v->n_threads < threads; v->n_threads++) {
		if ((ret = -pthread_create(&v->thread[v->n_threads], NULL, worker, v)))
			goto fail;
	}
	*out = v;
	return 0;
fail:
	verify_job_free(verifier_close(&v));
	return ret;
}

/* Work goes out in chunks: one range per thread left a thread idle when another ran behind. */
struct run {
	void (*fn)(void *arg, size_t begin, size_t end);
	void *arg;
	size_t n, chunk;
	atomic_size_t next;	/* the first index no thread has taken */
};

static void run_chunks(struct run *r)
{
	size_t b;

	while ((b = atomic_fetch_add(&r->next, r->chunk)) < r->n)
		r->fn(r->arg, b, r->n - b < r->chunk ? r->n : b + r->chunk);
}

static void *run_worker(void *arg)
{
	pthread_setname_np(pthread_self(), "jitd-restore");
	run_chunks(arg);
	return NULL;
}

void verifier_run(unsigned threads, size_t n, size_t chunk,
	void (*fn)(void *arg, size_t begin, size_t end), void *arg, void (*lead)(void *arg))
{
	pthread_t thread[MAX_THREADS];
	bool started[MAX_THREADS] = { false };
	struct run r = { .fn = fn, .arg = arg, .n = n, .chunk = chunk ? chunk : 1 };

	if (!threads)
		threads = cpus();
	if (threads > MAX_THREADS)
		threads = MAX_THREADS;
	if (threads > n)
		threads = n ? (unsigned)n : 1;
	atomic_init(&r.next, 0);
	json_object_seed(0);
	for (unsigned i = 1; i < threads; i++)
		started[i] = !pthread_create(&thread[i], NULL, run_worker, &r);
	if (lead)
		lead(arg);
	/* What a thread that could not start would have taken is left here. */
	run_chunks(&r);
	for (unsigned i = 1; i < threads; i++)
		if (started[i])
			pthread_join(thread[i], NULL);
}

struct verify_job *verifier_close(struct verifier **vp)
{
	struct verifier *v = *vp;
	struct verify_job *rest;

	if (!v)
		return NULL;
	pthread_mutex_lock(&v->lock);
	v->stopping = true;
	pthread_cond_broadcast(&v->work);
	pthread_mutex_unlock(&v->lock);
	for (unsigned i = 0; i < v->n_threads; i++)
		pthread_join(v->thread[i], NULL);
	/* Undelivered results first, then what no worker took. */
	rest = reverse(v->done);
	if (rest) {
		struct verify_job *t = rest;

		while (t->next)
			t = t->next;
		t->next = v->head;
	} else {
		rest = v->head;
	}
	wake_close(&v->wake);
	pthread_cond_destroy(&v->work);
	pthread_mutex_destroy(&v->lock);
	free(v);
	*vp = NULL;
	return rest;
}

struct verify_job *verify_job_new(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	void *arg)
{
	struct verify_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	j->token = malloc(len + 1);
	j->keys_dir = strdup(ctx->keys_dir);
	j->host_id = strdup(ctx->host_id);
	if (!j->token || !j->keys_dir || !j->host_id) {
		verify_job_free(j);
		return NULL;
	}
	memcpy(j->token, token, len);
	j->token[len] = '\0';
	j->len = len;
	j->now = ctx->now;
	j->clock_skew = ctx->clock_skew;
	j->arg = arg;
	return j;
}

/* Frees j and every job linked after it. */
void verify_job_free(struct verify_job *j)
{
	while (j) {
		struct verify_job *next = j->next;

		free(j->token);
		free(j->keys_dir);
		free(j->host_id);
		grant_clear(&j->grant);
		free(j);
		j = next;
	}
}

void verifier_submit(struct verifier *v, struct verify_job *j)
{
	j->next = NULL;
	pthread_mutex_lock(&v->lock);
	if (v->tail)
		v->tail->next = j;
	else
		v->head = j;
	v->tail = j;
	pthread_mutex_unlock(&v->lock);
	/* After the unlock: a worker woken while the lock is held only blocks on it again. */
	pthread_cond_signal(&v->work);
}

unsigned verifier_threads(const struct verifier *v)
{
	return v->n_threads;
}
