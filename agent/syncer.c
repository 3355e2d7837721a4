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

#include "agent/statefile.h"
#include "agent/syncer.h"
#include "agent/wake.h"
#include "common/clock.h"

/*
 * One thread per slot of a request: the journal's on one, the audit trail's on the other. Two
 * fdatasyncs one after the other cost their sum; issued together, the device takes both writes
 * and its cache flush serves them at once (ad hoc on this project's VMs: p50 519 -> 420 us,
 * p99 1.1 -> 0.8 ms for two small appends). The loop wakes each lane itself, so that both
 * fdatasyncs start one wake-up after the request, and whichever lane finishes last wakes the
 * loop. A second file's thread woken by the first's cost a wake-up more before its fdatasync
 * and one more before the loop heard (ad hoc, one grant at a time: end-to-end p50 64 us less,
 * median of 7 paired runs).
 */
struct lane {
	struct syncer *s;
	unsigned slot;		/* which fd of a request is this lane's */
	pthread_cond_t work;	/* under s->lock: pos was set, or stopping */
	struct sync_req *pos;	/* the oldest request this lane has not taken; NULL: none */
	pthread_t thread;
	bool started;
};

/*
 * Requests wait in one FIFO (head..tail) until every lane is done with them (left == 0); the
 * finished prefix moves to done..done_tail, which the loop takes. A lane's pos always points
 * into the unfinished part: a request it has not taken counts it in left.
 */
struct syncer {
	pthread_mutex_t lock;
	pthread_cond_t idle;	/* a request finished */
	struct sync_req *head, *tail, *done, *done_tail;
	bool stopping;
	int64_t last_us;	/* how long the latest pass took, a lane's or syncer_request_here's */
	struct lane lane[SYNC_MAX_FDS];
	struct wake *wake;
	syncer_done_fn done_fn;
	void *arg;
};

int syncer_open_twin(int dirfd, const char *name, int fd, int *out)
{
	struct stat a, b;
	int twin;

	*out = -1;
	/* As the file was opened: whatever was put in its place since must not be waited on. */
	if ((twin = statefile_open(dirfd, name, O_RDONLY, 0, &b)) < 0)
		return twin;
	if (fstat(fd, &a) < 0) {
		int ret = -errno;

		close(twin);
		return ret;
	}
	if (a.st_dev != b.st_dev || a.st_ino != b.st_ino) {
		close(twin);
		return -ESTALE;
	}
	*out = twin;
	return 0;
}

int syncer_take(int twin, bool *dirty, int *out)
{
	*out = -1;
	if (!*dirty)
		return 0;
	if ((*out = fcntl(twin, F_DUPFD_CLOEXEC, 0)) < 0)
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

#define SYNC_MAX_FILES 16

/*
 * Slot slot of first..last (linked): each file once, however many requests name it (their fds
 * are dup()s, so the same file comes under several numbers, and a compacted journal is a new
 * file); the fds are closed. 0 or the first -errno.
 */
static int sync_slot(struct sync_req *first, struct sync_req *last, unsigned slot)
{
	struct stat seen[SYNC_MAX_FILES];
	size_t n = 0;
	int ret = 0;

	for (struct sync_req *r = first; ; r = r->next) {
		int fd = r->fd[slot];
		struct stat st;
		bool known, dup = false;

		if (fd >= 0) {
			known = fstat(fd, &st) == 0;
			for (size_t k = 0; known && k < n && !dup; k++)
				dup = seen[k].st_dev == st.st_dev && seen[k].st_ino == st.st_ino;
			/* Unknown, or past the table's end: synced, never skipped. */
			if (!dup && fdatasync(fd) < 0 && !ret)
				ret = -errno;
			if (!dup && known && n < SYNC_MAX_FILES)
				seen[n++] = st;
			close(fd);
			r->fd[slot] = -1;
		}
		if (r == last)
			break;
	}
	return ret;
}

/* Under s->lock: the finished prefix to the done list; the loop is woken for it. */
static void finish_prefix(struct syncer *s)
{
	struct sync_req *first = s->head, *last = NULL;

	for (struct sync_req *r = s->head; r && !r->left; r = r->next)
		last = r;
	if (!last)
		return;
	s->head = last->next;
	if (!s->head)
		s->tail = NULL;
	last->next = NULL;
	fifo_append(&s->done, &s->done_tail, first, last);
	pthread_cond_broadcast(&s->idle);
	if (s->wake)
		wake_signal(s->wake);
}

static void *lane_main(void *arg)
{
	struct lane *l = arg;
	struct syncer *s = l->s;

	pthread_setname_np(pthread_self(), "jitd-sync");
	pthread_mutex_lock(&s->lock);
	for (;;) {
		struct sync_req *first, *last;
		int64_t t0, us;
		int ret;

		while (!l->pos && !s->stopping)
			pthread_cond_wait(&l->work, &s->lock);
		if (!l->pos)
			break;
		/* Everything queued so far: links up to tail do not change while unlocked. */
		first = l->pos;
		last = s->tail;
		l->pos = NULL;
		pthread_mutex_unlock(&s->lock);

		t0 = clock_mono_us();
		ret = sync_slot(first, last, l->slot);
		us = clock_mono_us() - t0;

		pthread_mutex_lock(&s->lock);
		s->last_us = us;
		for (struct sync_req *r = first; ; r = r->next) {
			if (ret && !r->ret)
				r->ret = ret;
			if (us > r->sync_us)
				r->sync_us = us;
			r->left--;
			if (r == last)
				break;
		}
		finish_prefix(s);
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
	pthread_cond_init(&s->idle, NULL);
	for (unsigned i = 0; i < SYNC_MAX_FDS; i++) {
		s->lane[i].s = s;
		s->lane[i].slot = i;
		pthread_cond_init(&s->lane[i].work, NULL);
	}
	if ((ret = wake_open(base, deliver, s, &s->wake)))
		goto fail;
	for (unsigned i = 0; i < SYNC_MAX_FDS; i++) {
		if ((ret = -pthread_create(&s->lane[i].thread, NULL, lane_main, &s->lane[i])))
			goto fail;
		s->lane[i].started = true;
	}
	*out = s;
	return 0;
fail:
	syncer_close(&s);
	return ret;
}

int syncer_sync_here(struct sync_req *r)
{
	int ret = 0, sret;

	r->next = NULL;
	for (unsigned i = 0; i < SYNC_MAX_FDS; i++)
		if ((sret = sync_slot(r, r, i)) && !ret)
			ret = sret;
	return ret;
}

/*
 * Each lane with a file to sync for r is woken here, by the loop, so that both fdatasyncs
 * start after one wake-up each, side by side. A lane that is still on earlier requests takes
 * r with its next pass; a lane with nothing to do for r and nothing before it is done with r.
 */
void syncer_request(struct syncer *s, struct sync_req *r)
{
	r->next = NULL;
	r->ret = 0;
	r->sync_us = 0;
	r->left = SYNC_MAX_FDS;
	pthread_mutex_lock(&s->lock);
	fifo_append(&s->head, &s->tail, r, r);
	for (unsigned i = 0; i < SYNC_MAX_FDS; i++) {
		struct lane *l = &s->lane[i];

		if (l->pos)
			continue;
		if (r->fd[i] < 0) {
			r->left--;
			continue;
		}
		l->pos = r;
		pthread_cond_signal(&l->work);
	}
	finish_prefix(s);
	pthread_mutex_unlock(&s->lock);
}

/*
 * Beyond this, the disk is slow (a stall, a busy device): the next syncs go to the lanes, so
 * that the loop is not held up by the next one too. This disk's p99 is about 1 ms.
 */
#define SYNC_HERE_MAX_US 5000

void syncer_request_here(struct syncer *s, struct sync_req *r)
{
	bool here;
	int64_t t0;

	pthread_mutex_lock(&s->lock);
	/* Nothing queued: r cannot overtake a request, and done keeps the order. */
	here = !s->head && (r->fd[0] < 0) != (r->fd[1] < 0) && s->last_us < SYNC_HERE_MAX_US;
	pthread_mutex_unlock(&s->lock);
	if (!here) {
		syncer_request(s, r);
		return;
	}
	t0 = clock_mono_us();
	r->ret = syncer_sync_here(r);
	r->sync_us = clock_mono_us() - t0;
	r->left = 0;
	pthread_mutex_lock(&s->lock);
	s->last_us = r->sync_us;
	fifo_append(&s->done, &s->done_tail, r, r);
	pthread_mutex_unlock(&s->lock);
	/* Delivered on the loop's next turn, as a lane's would be: never inside the caller. */
	wake_signal(s->wake);
}

void syncer_wait(struct syncer *s)
{
	pthread_mutex_lock(&s->lock);
	while (s->head)
		pthread_cond_wait(&s->idle, &s->lock);
	pthread_mutex_unlock(&s->lock);
	deliver(s);
}

void syncer_close(struct syncer **sp)
{
	struct syncer *s = *sp;

	if (!s)
		return;
	syncer_wait(s);
	pthread_mutex_lock(&s->lock);
	s->stopping = true;
	for (unsigned i = 0; i < SYNC_MAX_FDS; i++)
		pthread_cond_signal(&s->lane[i].work);
	pthread_mutex_unlock(&s->lock);
	for (unsigned i = 0; i < SYNC_MAX_FDS; i++) {
		if (s->lane[i].started)
			pthread_join(s->lane[i].thread, NULL);
		pthread_cond_destroy(&s->lane[i].work);
	}
	pthread_cond_destroy(&s->idle);
	pthread_mutex_destroy(&s->lock);
	wake_close(&s->wake);
	free(s);
	*sp = NULL;
}
