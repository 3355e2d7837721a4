#ifndef JITD_AGENT_WAKE_H
#define JITD_AGENT_WAKE_H

struct event_base;
struct wake;

/*
 * How a worker thread wakes the event loop (the verification pool, the sync thread): an eventfd
 * the loop watches. However many wake_signal calls come before the loop runs, cb runs once, on
 * the loop; it takes whatever the worker left for it.
 */
/* 0 or -errno. */
int wake_open(struct event_base *base, void (*cb)(void *arg), void *arg, struct wake **out);
/* From any thread. */
void wake_signal(struct wake *w);
/* NULLs *w; accepts NULL. */
void wake_close(struct wake **w);

#endif
