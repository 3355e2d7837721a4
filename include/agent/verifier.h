#ifndef JITD_AGENT_VERIFIER_H
#define JITD_AGENT_VERIFIER_H

#include <stddef.h>
#include <stdint.h>

#include "common/err.h"
#include "common/grant.h"

struct event_base;
struct verifier;

/*
 * Signature verification off the event loop. An Ed25519 verification costs as much as the rest
 * of a grant together, so a pool of threads (one per CPU jitd may run on) verifies while the loop
 * keeps accepting, committing and replying. Workers run grant_verify() only: no jitd state, no
 * kernel, no files but the key they read. Results come back on the loop, in batches.
 */
struct verify_job {
	struct verify_job *next;
	/* In: owned by the job (verify_job_free). */
	char *token;
	size_t len;
	char *keys_dir;
	char *host_id;
	int64_t now;		/* seconds since the epoch, when the grant was received */
	uint64_t clock_skew;
	/* Out: set by a worker. */
	int ret;		/* 0 or a negative enum jit_err */
	struct grant grant;	/* on success */
	struct jit_error err;	/* on failure */
	int64_t verify_us;	/* time spent in grant_verify */
	void *arg;		/* the submitter's */
};

/* Called on the loop with the jobs finished since the last call (in no particular order). */
typedef void (*verifier_done_fn)(struct verify_job *jobs, void *arg);

/* threads 0: as many as the CPUs this process may run on (at most 16). 0 or -errno. */
int verifier_open(struct event_base *base, unsigned threads, verifier_done_fn done, void *arg,
	struct verifier **out);
/*
 * Stops and joins the workers. Jobs not yet delivered (verified or not) are returned as a list
 * for the caller to fail; they never reach done.
 */
struct verify_job *verifier_close(struct verifier **v);

/* A job with copies of token and the context. NULL on out of memory. */
struct verify_job *verify_job_new(const char *token, size_t len, const struct grant_verify_ctx *ctx,
	void *arg);
/* Frees j and every job linked after it. */
void verify_job_free(struct verify_job *j);
/* Queues j; its result arrives through done. */
void verifier_submit(struct verifier *v, struct verify_job *j);
unsigned verifier_threads(const struct verifier *v);

/*
 * For work with no event loop to come back to (the start-up restore): runs fn(arg, begin, end)
 * over [0, n) in chunks of chunk indices (the last one shorter; 0 counts as 1) that threads (0:
 * one per CPU, as above) take in turn, and returns once every index is done. The caller's
 * thread is one of them; with lead it first runs lead(arg), other work the restore can do
 * meanwhile, and then joins in. A thread that cannot be started leaves its share to the
 * others. fn must be safe to run on several threads at once.
 */
void verifier_run(unsigned threads, size_t n, size_t chunk,
	void (*fn)(void *arg, size_t begin, size_t end), void *arg, void (*lead)(void *arg));

#endif
