#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/syncer.h"
#include "agent/wake.h"

struct syncer {
	pthread_mutex_t lock;
	pthread_cond_t work;	/* a request was queued, or stopping */
	pthread_cond_t idle;	/* a pass finished */
	/* Queued (FIFO), being synced by the thread, finished and not yet delivered (FIFO). */
	struct sync_req *head, *tail, *done, *done_tail;
	bool busy, stopping;
	pthread_t thread;
	bool started;
	struct wake *wake;
	syncer_done_fn done_fn;
	void *arg;
};

int syncer_take(int fd, bool *dirty, int *out)
{
	*out = -1;
	if (!*dirty)
		return 0;
	if ((*out = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		return -errno;
	*dirty = false;
	return 0;
}

/* first..last (linked) onto the end of the list head..tail. */
static void fifo_append(struct sync_req **head, struct sync_req **tail, struct sync_req *first,
	struct sync_req *last)
{
	if (*tail)
		(*tail)->next = first;
	else
		*head = first;
	*tail = last;
}

static int64_t mono_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/*
 * Each file once, however many requests name it (their fds are dup()s, so the same file comes
 * under several numbers); the first failure is every request's.
 */
static int sync_all(struct sync_req *batch)
{
	struct stat seen[16];
	size_t n_seen = 0;
	int ret = 0;

	for (struct sync_req *r = batch; r; r = r->next) {
		for (int i = 0; i < SYNC_MAX_FDS; i++) {
			struct stat st;
			bool dup = false;

			if (r->fd[i] < 0)
				continue;
			if (fstat(r->fd[i], &st) == 0) {
				for (size_t k = 0; k < n_seen && !dup; k++)
					dup = seen[k].st_dev == st.st_dev && seen[k].st_ino == st.st_ino;
				if (!dup && n_seen < sizeof(seen) / sizeof(seen[0]))
					seen[n_seen++] = st;
			}
			if (!dup && fdatasync(r->fd[i]) < 0 && !ret)
				ret = -errno;
			close(r->fd[i]);
			r->fd[i] = -1;
		}
	}
	return ret;
}

static void *worker(void *arg)
{
	struct syncer *s = arg;

	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct sync_req *batch, *last;
		int64_t t0;
		int ret;

		while (!s->head && !s->stopping)
			pthread_cond_wait(&s->work, &s->lock);
		if (!s->head)
			break;
		batch = s->head;
		s->head = s->tail = NULL;
		s->busy = true;
		pthread_mutex_unlock(&s->lock);

		t0 = mono_us();
		ret = sync_all(batch);
		for (last = batch; ; last = last->next) {
			last->ret = ret;
			last->sync_us = mono_us() - t0;
			if (!last->next)
				break;
		}

		pthread_mutex_lock(&s->lock);
		fifo_append(&s->done, &s->done_tail, batch, last);
		s->busy = false;
		pthread_cond_broadcast(&s->idle);
		wake_signal(s->wake);
	}
	pthread_mutex_unlock(&s->lock);
	return NULL;
}

static void deliver(void *arg)
{
	struct syncer *s = arg;
	struct sync_req *done;

	pthread_mutex_lock(&s->lock);
	done = s->done;
	s->done = s->done_tail = NULL;
	pthread_mutex_unlock(&s->lock);
	if (done)
		s->done_fn(done, s->arg);
}

int syncer_open(struct event_base *base, syncer_done_fn done, void *arg, struct syncer **out)
{
	struct syncer *s;
	int ret;

	*out = NULL;
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->done_fn = done;
	s->arg = arg;
	pthread_mutex_init(&s->lock, NULL);
	pthread_cond_init(&s->work, NULL);
	pthread_cond_init(&s->idle, NULL);
	if ((ret = wake_open(base, deliver, s, &s->wake)) ||
		(ret = -pthread_create(&s->thread, NULL, worker, s)))
		goto fail;
	s->started = true;
	*out = s;
	return 0;
fail:
	syncer_close(&s);
	return ret;
}

int syncer_sync_here(struct sync_req *r)
{
	r->next = NULL;
	return sync_all(r);
}

void syncer_request(struct syncer *s, struct sync_req *r)
{
	r->next = NULL;
	pthread_mutex_lock(&s->lock);
	fifo_append(&s->head, &s->tail, r, r);
	pthread_cond_signal(&s->work);
	pthread_mutex_unlock(&s->lock);
}

void syncer_wait(struct syncer *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->head || s->busy)
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
	deliver(s);
}

void syncer_close(struct syncer **sp)
{
	struct syncer *s = *sp;

	if (!s)
		return;
	if (s->started) {
		syncer_wait(s);
		pthread_mutex_lock(&s->lock);
		s->stopping = true;
		pthread_cond_signal(&s->work);
		pthread_mutex_unlock(&s->lock);
		pthread_join(s->thread, NULL);
	}
	wake_close(&s->wake);
	pthread_cond_destroy(&s->idle);
	pthread_cond_destroy(&s->work);
	pthread_mutex_destroy(&s->lock);
	free(s);
	*sp = NULL;
}
