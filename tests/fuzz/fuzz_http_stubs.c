#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <jansson.h>

#include "agent/enforce.h"
#include "agent/metrics.h"
#include "agent/nft.h"
#include "agent/sockowner.h"
#include "agent/status.h"
#include "agent/store.h"
#include "common/config.h"
#include "common/err.h"
#include "common/grant.h"

#include "fuzz_http_stubs.h"

/*
 * Everything agent/http.c asks of the enforcer, status and nft modules, without netlink or
 * threads. A grant's fate is the sum of its bytes modulo 4: refused before queueing, answered on
 * the next loop turn (applied or refused), or held back until the harness has dropped the client,
 * so that http.c answers a request whose connection is gone. The queue is bounded like the real
 * one (busy when full), so nothing grows across inputs.
 */
#define STUB_QUEUE 64

enum stub_fate { STUB_REFUSE, STUB_SOON_APPLY, STUB_SOON_REFUSE, STUB_LATE_APPLY };

struct owed {
	enforce_done_fn done;
	void *arg;
	int ret;
	bool late;
};

struct enforce {
	struct event *tick;
	struct owed q[STUB_QUEUE];
	size_t n;
	struct metrics m;
};

static struct enforce stub;
static const struct grant applied;

static unsigned byte_sum(const char *s, size_t len)
{
	unsigned sum = 0;

	for (size_t i = 0; i < len; i++)
		sum += (unsigned char)s[i];
	return sum;
}

/* Every refusal code in turn, so that each of http.c's status mappings is reached. */
static int refusal(unsigned sum)
{
	return -(int)(1 + sum % (JIT_ERR__COUNT - 1));
}

/* Answers the first owed grant (any, or only one due soon); false when there is none. */
static bool answer_one(bool include_late)
{
	struct jit_error err = { 0 };
	struct owed o;
	size_t i;

	for (i = 0; i < stub.n && stub.q[i].late && !include_late; i++)
		;
	if (i == stub.n)
		return false;
	/* Off the queue before the callback: it may submit again. */
	o = stub.q[i];
	memmove(&stub.q[i], &stub.q[i + 1], (stub.n - i - 1) * sizeof(stub.q[0]));
	stub.n--;
	if (o.ret)
		jit_fail(&err, o.ret, "refused by the fuzz stub");
	o.done(o.arg, o.ret, o.ret ? NULL : &applied, o.ret ? &err : NULL);
	return true;
}

static void stub_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	while (answer_one(false))
		;
}

struct enforce *stub_open(struct event_base *base)
{
	if (!stub.tick && !(stub.tick = event_new(base, -1, 0, stub_tick_cb, NULL)))
		return NULL;
	stub.m.grants_applied = 3;
	stub.m.grants_refused[-JIT_ERR_BAD_SIGNATURE] = 2;
	metrics_observe(&stub.m.grant, 1500);
	return &stub;
}

void stub_flush(void)
{
	while (answer_one(true))
		;
}

size_t stub_owed(void)
{
	return stub.n;
}

size_t stub_owed_soon(void)
{
	size_t n = 0;

	for (size_t i = 0; i < stub.n; i++)
		n += !stub.q[i].late;
	return n;
}

int enforce_submit(struct enforce *e, const char *token, size_t len, const char *peer,
	enforce_done_fn done, void *arg, struct jit_error *err)
{
	unsigned sum = byte_sum(token, len);
	struct owed o = { .done = done, .arg = arg };

	if (!len)
		return jit_fail(err, JIT_ERR_MALFORMED, "empty token");
	if (e->n == STUB_QUEUE)
		return jit_fail(err, JIT_ERR_BUSY, "too many grants in flight");
	switch ((enum stub_fate)(sum % 4)) {
	case STUB_REFUSE:
		return jit_fail(err, refusal(sum / 4), "refused by the fuzz stub");
	case STUB_SOON_REFUSE:
		o.ret = refusal(sum / 4);
		break;
	case STUB_LATE_APPLY:
		o.late = true;
		break;
	case STUB_SOON_APPLY:
		break;
	}
	e->q[e->n++] = o;
	if (!o.late)
		event_active(e->tick, EV_TIMEOUT, 0);
	return 0;
}

int enforce_revoke_token(struct enforce *e, const char *token, size_t len, const char *peer,
	struct revoke_result *res, struct jit_error *err)
{
	unsigned sum = byte_sum(token, len);

	memset(res, 0, sizeof(*res));
	switch (sum % 3) {
	case 0:
		snprintf(res->grant_id, sizeof(res->grant_id), "g-%u", sum);
		res->terminate = sum & 4;
		res->flows_terminated = res->terminate ? 2 : 0;
		return 0;
	case 1:
		return jit_fail(err, JIT_ERR_NOT_FOUND, "no such active grant");
	default:
		return jit_fail(err, refusal(sum / 3), "revocation refused by the fuzz stub");
	}
}

void enforce_refuse(struct enforce *e, bool revocation, const char *peer,
	const struct jit_error *err)
{
}

int64_t enforce_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int64_t enforce_started(const struct enforce *e)
{
	return 1700000000;
}

const struct grant *enforce_grants(const struct enforce *e, size_t *n)
{
	*n = 1;
	return &applied;
}

const struct ruleset_elem *enforce_model(const struct enforce *e, size_t *n)
{
	*n = 0;
	return NULL;
}

struct nft *enforce_nft(const struct enforce *e)
{
	return NULL;
}

const struct metrics *enforce_metrics(const struct enforce *e)
{
	return &e->m;
}

void enforce_clients(struct enforce *e, int delta)
{
}

const char *enforce_reload_refused(const struct enforce *e, int64_t *at)
{
	*at = 0;
	return NULL;
}

size_t enforce_restart_pending_count(const struct enforce *e)
{
	return 0;
}

/* No netlink in the harness: every loopback client is root's, so status is reached. */
int sockowner_peer_uid(int fd, uid_t *uid)
{
	*uid = 0;
	return 0;
}

const struct store_damage *enforce_state_damage(const struct enforce *e)
{
	static const struct store_damage none;

	return &none;
}

void enforce_queue(const struct enforce *e, size_t *verifying, size_t *waiting)
{
	*verifying = 0;
	*waiting = 0;
}

/* No reloads in the harness: the endpoint registers its hook and nothing calls it. */
void enforce_set_endpoint_hook(struct enforce *e, const struct enforce_endpoint_hook *hook)
{
}

int nft_counter_get(struct nft *n, const char *table, const char *name, uint64_t *packets,
	uint64_t *bytes)
{
	return -ENOENT;
}

/* Statuses are spooled as in state_dir (unlinked files), so that the harness drives streams. */
const struct config *enforce_config(const struct enforce *e)
{
	static char tmp[] = "/tmp";
	static const struct config cfg = { .state_dir = tmp };

	return &cfg;
}

/* Half the document into the spool, the rest left in out, as when the disk fills up midway. */
int status_write(struct enforce *e, struct evbuffer *out, int fd, size_t *sent)
{
	static const char doc[] = "{\"version\":1,\"grants\":[]}";
	size_t half = 0;
	ssize_t n;

	if (fd >= 0 && (n = write(fd, doc, (sizeof(doc) - 1) / 2)) > 0)
		half = (size_t)n;
	*sent = half;
	return evbuffer_add(out, doc + half, sizeof(doc) - 1 - half) ? -ENOMEM : 0;
}

int status_grant_write(struct enforce *e, const struct grant *g, struct evbuffer *out)
{
	static const char doc[] = "{\"id\":\"fuzz-grant\",\"expires_in\":60}";

	return evbuffer_add(out, doc, sizeof(doc) - 1) ? -ENOMEM : 0;
}

int status_id_write(const char *jti, struct evbuffer *out)
{
	return evbuffer_add_printf(out, "{\"id\":\"%s\"}", jti) < 0 ? -ENOMEM : 0;
}

int status_revoke_write(const struct revoke_result *res, const char *head, struct evbuffer *out)
{
	return evbuffer_add_printf(out, "{%s\"revoked\":\"fuzz-grant\",\"terminate\":%s}\n", head,
		res->terminate ? "true" : "false") < 0 ? -ENOMEM : 0;
}

/* The real one trims the heap after large replies: nothing for the stand-in to give back. */
void status_release_memory(size_t len)
{
}
