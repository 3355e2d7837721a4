#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <event2/event.h>

#include "agent/wake.h"
#include "common/log.h"

struct wake {
	int efd;
	struct event *ev;
	void (*cb)(void *arg);
	void *arg;
};

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct wake *w = arg;
	uint64_t n;

	if (read(w->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("eventfd: %s", strerror(errno));
	w->cb(w->arg);
}

int wake_open(struct event_base *base, void (*cb)(void *arg), void *arg, struct wake **out)
{
	struct wake *w = calloc(1, sizeof(*w));
	int ret;

	*out = NULL;
	if (!w)
		return -ENOMEM;
	w->cb = cb;
	w->arg = arg;
	if ((w->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) < 0) {
		ret = -errno;
		goto fail;
	}
	if (!(w->ev = event_new(base, w->efd, EV_READ | EV_PERSIST, wake_cb, w)) ||
		event_add(w->ev, NULL)) {
		ret = -ENOMEM;
		goto fail;
	}
	*out = w;
	return 0;
fail:
	wake_close(&w);
	return ret;
}

void wake_signal(struct wake *w)
{
	uint64_t one = 1;

	if (write(w->efd, &one, sizeof(one)) < 0)
		log_warn("cannot wake the event loop: %s", strerror(errno));
}

void wake_close(struct wake **wp)
{
	struct wake *w = *wp;

	if (!w)
		return;
	if (w->ev)
		event_free(w->ev);
	if (w->efd >= 0)
		close(w->efd);
	free(w);
	*wp = NULL;
}
