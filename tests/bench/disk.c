#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"

/*
 * The storage reference: what a durable append costs on this file system, measured the way
 * jitd makes a group durable, so that the latency rows can be read against the device. jitd
 * appends a grant's journal record and audit line (and the line's copy to the journal), then
 * fdatasyncs the journal alone; a group with a refusal in it fdatasyncs both files side by
 * side, the journal on one sync thread, the audit trail on another (agent/syncer.c). About the
 * size of one grant's record and line.
 */
#define JOURNAL_BYTES 600
#define AUDIT_BYTES 400
/*
 * Rounds are this far apart, as grants sent one at a time are (the client's round trip and the
 * verification come between two syncs). Back to back, the same syncs cost less on this
 * project's VMs (p50 227 vs 302 us for one file, 321 vs 510 us for two): an idle device and
 * CPU take longer to answer.
 */
#define GAP_US 500

/* The second sync thread: one fdatasync per request, handed over as jitd's syncer does. */
struct lane {
	pthread_mutex_t lock;
	pthread_cond_t cv;
	int fd;		/* to sync; -1: nothing asked */
	int ret;
	bool done, stopping;
};

static void *lane_main(void *arg)
{
	struct lane *l = arg;

	pthread_mutex_lock(&l->lock);
	for (;;) {
		int fd;

		while (l->fd < 0 && !l->stopping)
			pthread_cond_wait(&l->cv, &l->lock);
		if (l->stopping)
			break;
		fd = l->fd;
		pthread_mutex_unlock(&l->lock);
		int ret = fdatasync(fd) ? -errno : 0;
		pthread_mutex_lock(&l->lock);
		l->fd = -1;
		l->ret = ret;
		l->done = true;
		pthread_cond_broadcast(&l->cv);
	}
	pthread_mutex_unlock(&l->lock);
	return NULL;
}

static int append(int fd, const char *buf, size_t len)
{
	ssize_t n = write(fd, buf, len);

	return n == (ssize_t)len ? 0 : n < 0 ? -errno : -EIO;
}

/* One round: append to j (and a when a >= 0), then fdatasync them (side by side when two). */
static int durable_append(int j, int a, struct lane *l, const char *rec)
{
	int ret;

	if ((ret = append(j, rec, JOURNAL_BYTES)) || (a >= 0 && (ret = append(a, rec, AUDIT_BYTES))))
		return ret;
	if (a < 0)
		return fdatasync(j) ? -errno : 0;
	pthread_mutex_lock(&l->lock);
	l->fd = a;
	l->done = false;
	pthread_cond_broadcast(&l->cv);
	pthread_mutex_unlock(&l->lock);
	ret = fdatasync(j) ? -errno : 0;
	pthread_mutex_lock(&l->lock);
	while (!l->done)
		pthread_cond_wait(&l->cv, &l->lock);
	if (!ret)
		ret = l->ret;
	pthread_mutex_unlock(&l->lock);
	return ret;
}

int cmd_fsync(int argc, char **argv)
{
	struct lane l = { .lock = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER,
		.fd = -1 };
	char jpath[4096], apath[4096], rec[JOURNAL_BYTES];
	uint64_t *one = NULL, *two = NULL;
	int j = -1, a = -1, ret = 1, err = 0;
	bool started = false;
	pthread_t t;
	size_t count;

	if (argc != 3 || !(count = strtoul(argv[2], NULL, 10)) || count > 1000000) {
		fprintf(stderr, "usage: jitbench fsync DIR COUNT   (COUNT 1-1000000)\n");
		return 2;
	}
	snprintf(jpath, sizeof(jpath), "%s/fsync-journal", argv[1]);
	snprintf(apath, sizeof(apath), "%s/fsync-audit", argv[1]);
	memset(rec, 'x', sizeof(rec));
	rec[AUDIT_BYTES - 1] = rec[JOURNAL_BYTES - 1] = '\n';
	if ((j = open(jpath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600)) < 0 ||
		(a = open(apath, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0600)) < 0) {
		fprintf(stderr, "jitbench fsync: %s: %s\n", argv[1], strerror(errno));
		goto out;
	}
	if (!(one = calloc(count, sizeof(*one))) || !(two = calloc(count, sizeof(*two))) ||
		pthread_create(&t, NULL, lane_main, &l)) {
		fprintf(stderr, "jitbench fsync: cannot start\n");
		goto out;
	}
	started = true;
	for (size_t i = 0; i < count && !err; i++) {
		uint64_t s = now_ns();

		err = durable_append(j, -1, &l, rec);
		one[i] = now_ns() - s;
		usleep(GAP_US);
		s = now_ns();
		if (!err)
			err = durable_append(j, a, &l, rec);
		two[i] = now_ns() - s;
		usleep(GAP_US);
	}
	if (err) {
		fprintf(stderr, "jitbench fsync: %s\n", strerror(-err));
		goto out;
	}
	print_stats("one", one, count);
	print_stats("two", two, count);
	ret = 0;
out:
	if (started) {
		pthread_mutex_lock(&l.lock);
		l.stopping = true;
		pthread_cond_broadcast(&l.cv);
		pthread_mutex_unlock(&l.lock);
		pthread_join(t, NULL);
	}
	if (j >= 0)
		close(j);
	if (a >= 0)
		close(a);
	unlink(jpath);
	unlink(apath);
	free(one);
	free(two);
	return ret;
}
