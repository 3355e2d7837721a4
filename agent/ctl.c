#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <grp.h>
#include <pthread.h>
#include <stdatomic.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "agent/audit.h"
#include "agent/ctl.h"
#include "agent/enforce.h"
#include "agent/status.h"
#include "agent/testhook.h"
#include "agent/wake.h"
#include "common/config.h"
#include "common/clock.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/log.h"
#include "common/port.h"
#include "common/prefix.h"
#include "common/proto.h"

/*
 * Replies to users other than root that have not left whole: each holds its rest in memory (a
 * status: about 25 MB at 100,000 grants; a log query: up to tens of MB) until its client reads
 * it or PROTO_TIMEOUT_MS ends, so the group's readers, not reading, could pin gigabytes. At
 * this many, their next status or log query gets "busy". Root's are not counted.
 */
#define HELD_REPLIES_MAX 2
/* After accept fails (out of descriptors), the listener pauses this long rather than spin. */
#define ACCEPT_PAUSE_MS 1000

struct ctl {
	struct event_base *base;
	int lock_fd;		/* PATH.lock, held for jitd's life: see proto_lock_held */
	struct evconnlistener *lev;
	struct event *resume;	/* turns lev on again after a failed accept's pause */
	int fd;			/* bound, until ctl_attach listens on it */
	struct enforce *enf;
	struct client *clients;	/* all connected, so that closing can let go of each */
	unsigned n_clients;
	unsigned n_held;	/* see HELD_REPLIES_MAX */
	/* Monotonic (µs), as once_a_minute keeps them: a wall clock set back would mute them. */
	int64_t refused_logged;	/* at most one "too many clients" line a minute */
	int64_t late_logged;	/* at most one "client cut at its deadline" line a minute */
	/* The last peers' user names, each reused for USER_CACHE_SEC (see user_name). */
	struct user_seen {
		uid_t uid;
		int64_t at;	/* CLOCK_MONOTONIC seconds; 0: an empty slot */
		char name[64];	/* or "uid:N": no such user, said as that */
	} users[8];
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
	/* Log queries on their threads; done ones are answered when the loop is woken. */
	struct wake *wake;
	pthread_mutex_t lock;
	struct log_job *jobs;
	unsigned n_jobs;
	atomic_bool closing;	/* set by ctl_close: a test build's held query reads at once */
};

/*
 * A log query reads the whole trail: about a second at the default size (60 MB), during which
 * the loop would apply no grant. It reads a snapshot of the trail's files on a thread, builds
 * its reply line there too, and the loop sends it when woken.
 */
struct log_job {
	struct ctl *ctl;
	struct client *c;
	struct audit_snapshot *snap;
	int64_t since;
	char *grant, *sub, *event;	/* NULL: not narrowed by it */
	size_t limit;		/* the newest this many at most */
	char *line;		/* the reply, with its newline; NULL: out of memory */
	size_t len;
	pthread_t thread;
	bool done;		/* under ctl->lock */
	struct log_job *next;
};

struct client {
	struct ctl *ctl;
	struct client *prev, *next;
	struct bufferevent *bev;
	struct event *deadline;	/* PROTO_TIMEOUT_MS after the accept: the whole exchange */
	/*
	 * A submit is with the enforcer: its answer comes later. A client that goes away meanwhile
	 * is only marked gone; the answer then frees it.
	 */
	bool waiting, gone;
	bool held;		/* counted in n_held until freed (client_free) */
	struct evbuffer *written; /* a reply written, not built (status), to send as it is */
	size_t reply_len;
	uid_t uid;		/* from SO_PEERCRED: the kernel's word, not the client's */
	pid_t pid;
	bool named;		/* user and peer hold the user's name (peer_name) */
	char user[64];
	char peer[128];
};

static void peer_name(struct client *c);

static void client_free(struct client *c)
{
	int fd = bufferevent_getfd(c->bev);

	if (c->prev)
		c->prev->next = c->next;
	else
		c->ctl->clients = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->ctl->n_clients--;
	if (c->held)
		c->ctl->n_held--;
	enforce_clients(c->ctl->enf, -1);
	/*
	 * libevent closes the socket from a finalizer behind whatever else this pass of the loop
	 * runs (a status built, a check): the end is said now, for jitctl reads to the close.
	 */
	if (fd >= 0)
		(void)shutdown(fd, SHUT_RDWR);
	bufferevent_free(c->bev);
	c->bev = NULL;
	event_free(c->deadline);
	c->deadline = NULL;
	if (c->waiting)
		c->gone = true;
	else
		free(c);
}

static void ctl_event_cb(struct bufferevent *bev, short what, void *arg);

/* c's reply, of a user other than root, counts against HELD_REPLIES_MAX until c is freed. */
static void hold(struct client *c)
{
	if (c->uid == 0 || c->held)
		return;
	c->held = true;
	c->ctl->n_held++;
}

/* Close once the reply has left: the protocol is one request per connection. */
static void ctl_written_cb(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;

	if (evbuffer_get_length(bufferevent_get_output(bev)))
		return;
	/* Only now is a large reply's buffer freed, and worth giving back. */
	status_release_memory(c->reply_len);
	client_free(c);
}

/*
 * Hands a whole reply line to the connection, which closes once it has left. It is written at
 * once: a socket nearly always takes a reply whole, and waiting for the loop to see it writable
 * cost three more system calls and a pass of the loop per grant. What it does not take leaves
 * as the loop finds room.
 */
static void reply_buffer(struct client *c, struct evbuffer *line)
{
	c->reply_len += evbuffer_get_length(line);
	bufferevent_disable(c->bev, EV_READ);
	if (!evbuffer_get_length(bufferevent_get_output(c->bev)) &&
		evbuffer_write(line, bufferevent_getfd(c->bev)) < 0 && errno != EAGAIN &&
		errno != EINTR) {
		/* The client is gone: nothing more to say to it. */
		evbuffer_free(line);
		client_free(c);
		return;
	}
	if (!evbuffer_get_length(line)) {
		evbuffer_free(line);
		status_release_memory(c->reply_len);
		client_free(c);
		return;
	}
	hold(c);
	/*
	 * With the event callback, a client that goes away mid-reply is freed when the write
	 * fails, not at its deadline: the rest of its reply and its place in n_held go then.
	 */
	bufferevent_setcb(c->bev, NULL, ctl_written_cb, ctl_event_cb, c);
	if (bufferevent_write_buffer(c->bev, line) < 0)
		client_free(c);
	evbuffer_free(line);
}

static void reply(struct client *c, json_t *msg)
{
	char *text = msg ? proto_encode(msg) : NULL;
	struct evbuffer *line = evbuffer_new();

	json_decref(msg);
	if (!text || !line || evbuffer_add(line, text, strlen(text))) {
		free(text);
		if (line)
			evbuffer_free(line);
		client_free(c);
		return;
	}
	free(text);
	reply_buffer(c, line);
}

/*
 * A grant or revocation refused here, before it reaches enforce: logged, audited and counted as
 * the refusals enforce makes are (a member of the group trying, root's malformed request).
 */
static json_t *refuse(struct client *c, bool revocation, int code, const char *msg)
{
	struct jit_error err = { .code = code };

	peer_name(c);
	snprintf(err.msg, sizeof(err.msg), "%s", msg);
	enforce_refuse(c->ctl->enf, revocation, c->peer, &err);
	return proto_error(code, msg);
}

/* Changing calls are root's; the socket's group may only read (status, log). */
static bool may_change(const struct client *c)
{
	return c->uid == 0;
}

/*
 * {"ok":true,"grant":{...}} and its newline, the grant printed as status prints it. Short of
 * memory for that, {"ok":true,"grant":{"id":ID}}: the grant took effect, and "internal" would
 * say that nothing was applied. NULL when not even that can be written.
 */
static struct evbuffer *grant_line(struct client *c, const struct grant *g)
{
	static const char head[] = "{\"ok\":true,\"grant\":";
	struct evbuffer *line = evbuffer_new();

	if (!line)
		return NULL;
	if (!evbuffer_add(line, head, sizeof(head) - 1) &&
		!status_grant_write(c->ctl->enf, g, line) && !evbuffer_add(line, "}\n", 2))
		return line;
	evbuffer_drain(line, evbuffer_get_length(line));
	if (!evbuffer_add(line, head, sizeof(head) - 1) && !status_id_write(g->jti, line) &&
		!evbuffer_add(line, "}\n", 2))
		return line;
	evbuffer_free(line);
	return NULL;
}

static void submitted_cb(void *arg, int ret, const struct grant *g, const struct jit_error *err)
{
	struct client *c = arg;
	struct evbuffer *line;

	c->waiting = false;
	if (c->gone) {
		free(c);
		return;
	}
	if (ret)
		reply(c, proto_error(ret, err->msg));
	else if ((line = grant_line(c, g)))
		reply_buffer(c, line);
	else
		client_free(c); /* applied: closed without a word rather than "internal" */
}

/* NULL when the answer is on its way (submitted_cb). */
static json_t *do_submit(struct client *c, json_t *req)
{
	const json_t *tok = json_object_get(req, "token");
	struct jit_error err = { 0 };
	int ret;

	if (!json_is_string(tok))
		return refuse(c, false, JIT_ERR_BAD_REQUEST, "submit needs a \"token\" string");
	/* The JSON length, not strlen: a "\u0000" must not cut trailing garbage off the token. */
	ret = enforce_submit(c->ctl->enf, json_string_value(tok), json_string_length(tok), c->peer,
		submitted_cb, c, &err);
	if (ret)
		return proto_error(ret, err.msg);
	c->waiting = true;
	return NULL;
}

static json_t *do_reload(struct client *c, json_t *req)
{
	char msg[256], path[1024];
	json_t *rep;
	int ret;

	log_info("control: reload requested by %s", c->peer);
	if ((ret = enforce_reload(c->ctl->enf, msg, sizeof(msg))))
		return proto_error(ret, msg);
	rep = json_pack("{s:b, s:s, s:I, s:I, s:i, s:o}", "ok", 1, "config",
		proto_text(enforce_config_path(c->ctl->enf), path, sizeof(path)), "ports",
		(json_int_t)enforce_config(c->ctl->enf)->n_ports, "targets",
		(json_int_t)enforce_config(c->ctl->enf)->n_targets, "grants_removed", atoi(msg),
		"restart_pending", status_restart_pending(c->ctl->enf));
	/* Applied: short of memory, said without the details rather than as "internal". */
	if (!rep && (c->written = evbuffer_new()) &&
		evbuffer_add(c->written, "{\"ok\":true}\n", 12)) {
		evbuffer_free(c->written);
		c->written = NULL;
	}
	return rep;
}

/*
 * Why `id` cannot be a grant's id, or NULL: what a signed grant's jti may not hold (grant_claim_id)
 * is refused before it reaches the log, the trail or a reader's terminal as a name.
 */
static const char *not_an_id(const json_t *id)
{
	const char *s = json_string_value(id), *what;
	size_t n = json_string_length(id);

	if (!n)
		return "it is empty";
	if (n > GRANT_MAX_STRING || strlen(s) != n)
		return "it is longer than any grant's";
	if ((what = grant_string_unsafe(s, n)))
		return what;
	return strchr(s, ' ') ? "a space" : NULL;
}

static json_t *do_revoke(struct client *c, json_t *req)
{
	const json_t *jid = json_object_get(req, "id");
	const char *id = json_string_value(jid), *bad;
	const json_t *term = json_object_get(req, "terminate");
	struct jit_error err = { 0 };
	struct revoke_result res;
	char msg[128];
	int ret;

	if (!id || (term && !json_is_boolean(term)))
		return refuse(c, true, JIT_ERR_BAD_REQUEST,
			"revoke needs an \"id\" string and an optional \"terminate\" boolean");
	if ((bad = not_an_id(jid))) {
		snprintf(msg, sizeof(msg), "revoke's \"id\" is no grant's id: %s%s",
			strncmp(bad, "it ", 3) ? "it contains " : "", bad);
		return refuse(c, true, JIT_ERR_BAD_REQUEST, msg);
	}
	ret = enforce_revoke_id(c->ctl->enf, id, json_is_true(term), c->peer, &res, &err);
	if (ret)
		return proto_error(ret, err.msg);
	/* Done: said by hand, or, with no memory even for that, not at all (never internal). */
	if ((c->written = evbuffer_new()) &&
		status_revoke_write(&res, "\"ok\":true,", c->written)) {
		evbuffer_free(c->written);
		c->written = NULL;
	}
	return NULL;
}

/* Ports as "22" or "22/tcp"; one for both protocols becomes two single-protocol entries. */
static int parse_local_ports(const json_t *a, struct port_spec *out, size_t cap, size_t *n)
{
	const json_t *v;
	size_t i;

	*n = 0;
	json_array_foreach(a, i, v) {
		unsigned mask;
		uint16_t port;

		if (!json_is_string(v) || port_spec_parse(json_string_value(v), &port, &mask))
			return -EINVAL;
		for (unsigned bit = PORT_PROTO_TCP; bit <= PORT_PROTO_UDP; bit <<= 1) {
			if (!(mask & bit))
				continue;
			if (*n == cap)
				return -E2BIG;
			out[(*n)++] = (struct port_spec){ .port = port, .proto = (uint8_t)bit };
		}
	}
	return *n ? 0 : -EINVAL;
}

static json_t *do_grant(struct client *c, json_t *req)
{
	const json_t *src = json_object_get(req, "src"), *ports = json_object_get(req, "ports"), *v;
	const json_t *dur = json_object_get(req, "duration");
	const char *reason = json_string_value(json_object_get(req, "reason"));
	struct prefix pfx[GRANT_MAX_SOURCES];
	struct port_spec ps[GRANT_MAX_PORTS];
	struct jit_error err = { 0 };
	struct local_request r = { 0 };
	const struct grant *g;
	size_t i;
	int ret;

	if (!json_is_array(src) || !json_is_array(ports) || !json_is_integer(dur) ||
		json_integer_value(dur) <= 0 || !reason || !*reason)
		return refuse(c, false, JIT_ERR_BAD_REQUEST, "grant needs \"src\" and \"ports\" "
			"arrays, a positive \"duration\" and a \"reason\"");
	/* No port allows more, and exp is computed from it: bounded before any arithmetic. */
	if (json_integer_value(dur) > CONFIG_MAX_MAX_DURATION) {
		char msg[96];

		snprintf(msg, sizeof(msg), "\"duration\": %lld s is longer than any port may "
			"allow (%d s)", (long long)json_integer_value(dur), CONFIG_MAX_MAX_DURATION);
		return refuse(c, false, JIT_ERR_DURATION_EXCEEDS_MAX, msg);
	}
	/* Too many is the limit's code, as for a signed grant (grant.c). */
	if (json_array_size(src) > GRANT_MAX_SOURCES) {
		char msg[96];

		snprintf(msg, sizeof(msg), "%zu sources, at most %d allowed", json_array_size(src),
			GRANT_MAX_SOURCES);
		return refuse(c, false, JIT_ERR_TOO_LARGE, msg);
	}
	if (json_array_size(src) == 0)
		return refuse(c, false, JIT_ERR_BAD_REQUEST, "grant needs 1 to 64 sources");
	json_array_foreach(src, i, v)
		if (!json_is_string(v) || prefix_parse(json_string_value(v), &pfx[i]))
			return refuse(c, false, JIT_ERR_BAD_REQUEST,
				"a source is not an address or prefix");
	if ((ret = parse_local_ports(ports, ps, GRANT_MAX_PORTS, &r.n_ports)) == -E2BIG)
		return refuse(c, false, JIT_ERR_TOO_LARGE,
			"more than 64 port/protocol pairs (a port for both protocols is two)");
	if (ret)
		return refuse(c, false, JIT_ERR_BAD_REQUEST,
			"ports must be 1 to 64 of PORT[/PROTO]");
	r.src = pfx;
	r.n_src = json_array_size(src);
	r.ports = ps;
	r.duration = (uint64_t)json_integer_value(dur);
	r.reason = reason;
	r.user = c->user;
	ret = enforce_grant_local(c->ctl->enf, &r, c->peer, &g, &err);
	if (ret)
		return proto_error(ret, err.msg);
	/* Applied: without memory for a line, closed without a word rather than "internal". */
	c->written = grant_line(c, g);
	return NULL;
}

/* Whether c may not have another large reply: see HELD_REPLIES_MAX. */
static bool held_full(const struct client *c)
{
	return c->uid != 0 && c->ctl->n_held >= HELD_REPLIES_MAX;
}

static json_t *held_busy(void)
{
	char msg[112];

	snprintf(msg, sizeof(msg), "%d replies to users other than root are waiting to be read, "
		"the most at once; try again", HELD_REPLIES_MAX);
	return proto_error(JIT_ERR_BUSY, msg);
}

/*
 * Written straight into the reply, and to the client as it is written (see status_write). Once
 * part of it has gone, an error can no longer be answered: the client sees the line cut short.
 */
static json_t *do_status(struct client *c, json_t *req)
{
	struct evbuffer *line;
	size_t sent = 0;

	(void)req;
	if (held_full(c))
		return held_busy();
	if (!(line = evbuffer_new()) ||
		evbuffer_add(line, PROTO_STATUS_HEAD, strlen(PROTO_STATUS_HEAD)) ||
		status_write(c->ctl->enf, line, bufferevent_getfd(c->bev), &sent) ||
		evbuffer_add(line, "}\n", 2)) {
		if (line && sent) {
			log_err("control: out of memory writing the status to %s; cut short",
				c->peer);
			evbuffer_drain(line, evbuffer_get_length(line));
			c->written = line; /* empty: reply_buffer closes */
			return NULL;
		}
		log_err("control: out of memory writing the status to %s", c->peer);
		if (line)
			evbuffer_free(line);
		return proto_error(JIT_ERR_INTERNAL, "out of memory writing the status");
	}
	c->reply_len = sent;
	c->written = line;
	return NULL;
}

static void log_job_free(struct log_job *j)
{
	audit_snapshot_free(&j->snap);
	free(j->grant);
	free(j->sub);
	free(j->event);
	free(j->line);
	free(j);
}

#ifdef JITD_TEST_HOOKS
/*
 * Test builds: while $JITD_TEST_LOG_HOLD_FILE exists (at most 60 s, and not once the control
 * socket is closing), a log query waits before it reads.
 */
static void test_hook_log_hold(const struct ctl *ctl)
{
	for (int i = 0; i < 6000 && !atomic_load(&ctl->closing) &&
		testhook_exists("JITD_TEST_LOG_HOLD_FILE"); i++)
		usleep(10000);
}
#else
static void test_hook_log_hold(const struct ctl *ctl)
{
}
#endif

static void *log_main(void *arg)
{
	struct log_job *j = arg;
	const struct audit_filter f = { .since = j->since, .grant_id = j->grant, .sub = j->sub,
		.event = j->event };
	bool truncated = false;
	json_t *events, *msg;

	pthread_setname_np(pthread_self(), "jitd-log");
	test_hook_log_hold(j->ctl);
	events = audit_snapshot_query(j->snap, &f, j->limit, &truncated);
	msg = events ? json_pack("{s:b, s:o, s:b}", "ok", 1, "events", events, "truncated",
			       truncated) :
		       proto_error(JIT_ERR_INTERNAL, "cannot read the audit trail");
	if ((j->line = msg ? proto_encode(msg) : NULL))
		j->len = strlen(j->line);
	json_decref(msg);
	pthread_mutex_lock(&j->ctl->lock);
	j->done = true;
	pthread_mutex_unlock(&j->ctl->lock);
	wake_signal(j->ctl->wake);
	return NULL;
}

static void free_line(const void *data, size_t len, void *line)
{
	free(line);
}

/*
 * On the loop: a query's reply to its client, or the client freed if it went away meanwhile.
 * The line (up to tens of MB) is handed to the connection as it is, not copied.
 */
static void log_answer(struct log_job *j)
{
	struct client *c = j->c;
	struct evbuffer *line = NULL;

	c->waiting = false;
	if (c->gone) {
		free(c);
		return;
	}
	if (j->line && (line = evbuffer_new()) &&
		!evbuffer_add_reference(line, j->line, j->len, free_line, j->line)) {
		j->line = NULL;
		reply_buffer(c, line);
		return;
	}
	if (line)
		evbuffer_free(line);
	reply(c, proto_error(JIT_ERR_INTERNAL, "out of memory reading the audit trail"));
}

/* Takes the finished jobs off the list (all of them with all); they are the caller's. */
static struct log_job *log_jobs_take(struct ctl *ctl, bool all)
{
	struct log_job **pp = &ctl->jobs, *j, *out = NULL;

	pthread_mutex_lock(&ctl->lock);
	while ((j = *pp)) {
		if (!all && !j->done) {
			pp = &j->next;
			continue;
		}
		*pp = j->next;
		j->next = out;
		out = j;
		ctl->n_jobs--;
	}
	pthread_mutex_unlock(&ctl->lock);
	return out;
}

/* Joins, answers and frees a list that log_jobs_take returned. */
static void log_jobs_finish(struct log_job *j)
{
	struct log_job *next;

	for (; j; j = next) {
		next = j->next;
		pthread_join(j->thread, NULL);
		log_answer(j);
		log_job_free(j);
	}
}

static void log_done_cb(void *arg)
{
	log_jobs_finish(log_jobs_take(arg, false));
}

static json_t *do_log(struct client *c, json_t *req)
{
	const json_t *since = json_object_get(req, "since"), *grant = json_object_get(req, "grant"),
		     *sub = json_object_get(req, "sub"), *event = json_object_get(req, "event"),
		     *limit = json_object_get(req, "limit");
	struct ctl *ctl = c->ctl;
	struct log_job *j;

	if ((since && !json_is_integer(since)) || (grant && !json_is_string(grant)) ||
		(sub && !json_is_string(sub)) || (event && !json_is_string(event)) ||
		(limit && (!json_is_integer(limit) || json_integer_value(limit) < 1 ||
			json_integer_value(limit) > PROTO_LOG_MAX_EVENTS))) {
		char msg[160];

		snprintf(msg, sizeof(msg), "log takes an optional \"since\" integer, optional "
			"\"grant\", \"sub\" and \"event\" strings and an optional \"limit\" from "
			"1 to %d", PROTO_LOG_MAX_EVENTS);
		return refuse(c, false, JIT_ERR_BAD_REQUEST, msg);
	}
	if (ctl->n_jobs >= CTL_LOG_JOBS_MAX + (c->uid == 0 ? CTL_LOG_JOBS_ROOT : 0))
		return proto_error(JIT_ERR_BUSY, "other log queries are running; try again");
	if (held_full(c))
		return held_busy();
	/*
	 * Counted from now, not from the answer: else two queries running and two answers
	 * unread would make four.
	 */
	hold(c);
	if (!(j = calloc(1, sizeof(*j))) ||
		(grant && !(j->grant = strdup(json_string_value(grant)))) ||
		(sub && !(j->sub = strdup(json_string_value(sub)))) ||
		(event && !(j->event = strdup(json_string_value(event)))) ||
		audit_snapshot(enforce_audit(ctl->enf), &j->snap)) {
		if (j)
			log_job_free(j);
		return proto_error(JIT_ERR_INTERNAL, "cannot read the audit trail");
	}
	j->ctl = ctl;
	j->c = c;
	j->since = since ? json_integer_value(since) : 0;
	j->limit = limit ? (size_t)json_integer_value(limit) : PROTO_LOG_MAX_EVENTS;
	if (pthread_create(&j->thread, NULL, log_main, j)) {
		log_job_free(j);
		return proto_error(JIT_ERR_BUSY, "cannot start a log query now; try again");
	}
	pthread_mutex_lock(&ctl->lock);
	j->next = ctl->jobs;
	ctl->jobs = j;
	ctl->n_jobs++;
	pthread_mutex_unlock(&ctl->lock);
	c->waiting = true;
	return NULL;
}

/* Changing calls are root's; what one of another user is refused as (READS: none). */
enum refused_as { READS, AS_GRANT, AS_REVOCATION, AS_RELOAD };

static const struct {
	const char *op;
	enum refused_as changes;
	json_t *(*fn)(struct client *c, json_t *req);
} ops[] = {
	{ "status", READS, do_status },
	{ "log", READS, do_log },
	{ "submit", AS_GRANT, do_submit },
	{ "revoke", AS_REVOCATION, do_revoke },
	{ "grant", AS_GRANT, do_grant },
	{ "reload", AS_RELOAD, do_reload },
};

static json_t *dispatch(struct client *c, json_t *req)
{
	const char *op = json_string_value(json_object_get(req, "op"));

	if (!op)
		return refuse(c, false, JIT_ERR_BAD_REQUEST, "request needs an \"op\" string");
	for (size_t i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (strcmp(op, ops[i].op))
			continue;
		/* A read names no one: its peer is the uid and pid (no NSS lookup on the loop). */
		if (ops[i].changes != READS)
			peer_name(c);
		if (ops[i].changes == READS || may_change(c))
			return ops[i].fn(c, req);
		if (ops[i].changes == AS_RELOAD) {
			struct jit_error err = { .code = JIT_ERR_PERMISSION };

			snprintf(err.msg, sizeof(err.msg), "only root may reload");
			enforce_refuse_reload(c->ctl->enf, c->peer, &err);
			return proto_error(err.code, err.msg);
		}
		return refuse(c, ops[i].changes == AS_REVOCATION, JIT_ERR_PERMISSION,
			"only root may change grants");
	}
	return refuse(c, false, JIT_ERR_BAD_REQUEST, "unknown op");
}

static void ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct jit_error err = { 0 };
	json_t *req = NULL;
	size_t len;
	char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);

	/*
	 * Input refused before its op is known is audited as a grant's refusal, as the endpoint
	 * does with a body it cannot read: bad input leaves a record, whoever sent it.
	 */
	if (!line) {
		if (evbuffer_get_length(in) > PROTO_MAX_MESSAGE)
			reply(c, refuse(c, false, JIT_ERR_TOO_LARGE, "request exceeds 64 KiB"));
		return;
	}
	/*
	 * One request per connection: a second line sent with it would go unanswered and undone
	 * without a word, so neither is done (a line that comes later is never read).
	 */
	if (evbuffer_get_length(in)) {
		reply(c, refuse(c, false, JIT_ERR_BAD_REQUEST, "one request per connection: data "
			"after the request's line (nothing done)"));
	} else if (proto_decode(line, len, &req, &err)) {
		reply(c, refuse(c, false, err.code, err.msg));
	} else {
		json_t *msg = dispatch(c, req);
		struct evbuffer *written = c->written;

		/* One request per connection: nothing more is read while its answer is pending. */
		c->written = NULL;
		if (c->waiting)
			bufferevent_disable(c->bev, EV_READ);
		else if (written)
			reply_buffer(c, written);
		else
			reply(c, msg);
	}
	json_decref(req);
	free(line);
}

static void ctl_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct client *c = arg;

	if (what & BEV_EVENT_TIMEOUT)
		log_debug("control: client %s timed out", c->peer);
	client_free(c);
}

/*
 * The user name is what the audit trail shows beside the uid, which decides. Looking it up
 * reads /etc/passwd through NSS: six system calls, 20 us of a grant's 1 ms on the control
 * socket (ad hoc), and with users in a directory (sssd, LDAP) a wait on the network, on the
 * loop. A controller's connections all come from one uid, so a name found is kept for a few
 * seconds, and so is a uid no database knows; a renamed user shows under the old name that
 * long at most. Several are kept: a group member whose refusals are named between root's
 * grants would otherwise have each of them looked up again.
 */
#define USER_CACHE_SEC 10
/*
 * The most a user's or group's entry may take (a member list): beyond it, a user is no such
 * entry, and a group one that cannot be looked up (resolve_group: -EOVERFLOW).
 */
#define NSS_BUF_MAX (1u << 20)

static void user_name(struct ctl *ctl, uid_t uid, char *out, size_t len)
{
	struct passwd pw, *res = NULL;
	int64_t now = clock_mono_us() / 1000000;
	struct user_seen *slot = &ctl->users[0];
	size_t cap = 1024;
	char *buf = NULL;
	int r = ENOMEM;

	for (size_t i = 0; i < sizeof(ctl->users) / sizeof(ctl->users[0]); i++) {
		struct user_seen *u = &ctl->users[i];

		if (u->at && u->uid == uid && now - u->at < USER_CACHE_SEC) {
			snprintf(out, len, "%s", u->name);
			return;
		}
		/* The one to reuse: an empty slot, or else the one found longest ago. */
		if (slot->at && (!u->at || u->at < slot->at))
			slot = u;
	}
	for (;;) {
		char *nb = realloc(buf, cap);

		if (!nb)
			break;
		buf = nb;
		r = getpwuid_r(uid, &pw, buf, cap, &res);
		if (r != ERANGE || cap >= NSS_BUF_MAX)
			break;
		cap *= 2;
	}
	/* No such user, or no answer (out of memory): the uid, kept as a name would be. */
	if (r || !res)
		snprintf(slot->name, sizeof(slot->name), "uid:%u", (unsigned)uid);
	else
		snprintf(slot->name, sizeof(slot->name), "%s", pw.pw_name);
	snprintf(out, len, "%s", slot->name);
	slot->uid = uid;
	slot->at = now ? now : 1;
	free(buf);
}

/* Who is at the other end, as the kernel says (SO_PEERCRED), not the client. */
static int peer_cred(int fd, struct ucred *cred)
{
	socklen_t sl = sizeof(*cred);

	return getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &sl) < 0 ? -errno : 0;
}

/*
 * Who is on the other end, as the kernel says. A failure leaves the client unprivileged. The
 * user's name comes later, for what changes or is refused (peer_name): with passwd in a
 * directory (sssd, LDAP) a lookup may wait on the network, and a group member's status must
 * not hold the loop up for it.
 */
static void peer_identify(int fd, struct client *c)
{
	struct ucred cred;

	c->uid = (uid_t)-1;
	if (peer_cred(fd, &cred)) {
		snprintf(c->user, sizeof(c->user), "unknown");
		snprintf(c->peer, sizeof(c->peer), "unknown");
		c->named = true;
		return;
	}
	c->uid = cred.uid;
	c->pid = cred.pid;
	snprintf(c->user, sizeof(c->user), "uid:%u", (unsigned)cred.uid);
	snprintf(c->peer, sizeof(c->peer), "uid=%u pid=%d", (unsigned)cred.uid, (int)cred.pid);
}

static void peer_name(struct client *c)
{
	if (c->named)
		return;
	c->named = true;
	user_name(c->ctl, c->uid, c->user, sizeof(c->user));
	snprintf(c->peer, sizeof(c->peer), "uid=%u pid=%d user=%s", (unsigned)c->uid,
		(int)c->pid, c->user);
}

/* Whether a line throttled to one a minute may be logged now; if so, *last moves to now. */
static bool once_a_minute(int64_t *last)
{
	int64_t now = clock_mono_us();

	if (*last && now - *last < 60 * 1000000LL)
		return false;
	*last = now;
	return true;
}

/*
 * The read and write timeouts restart with every byte: a client sending its request, or reading
 * its reply, a byte at a time held its place (and a status reply's memory) for as long as it
 * liked, and control_connections of them shut root out. jitctl gives up after PROTO_TIMEOUT_MS
 * for the whole exchange; the agent does the same.
 */
static void ctl_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct client *c = arg;

	if (once_a_minute(&c->ctl->late_logged))
		log_warn("control: %s not done within %d s; closing", c->peer,
			PROTO_TIMEOUT_MS / 1000);
	client_free(c);
}

static bool peer_is_root(int fd)
{
	struct ucred cred;

	return peer_cred(fd, &cred) == 0 && cred.uid == 0;
}

static void ctl_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
	int salen, void *arg)
{
	struct timeval tv = { PROTO_TIMEOUT_MS / 1000, 0 };
	struct ctl *ctl = arg;
	unsigned limit = enforce_config(ctl->enf)->control_connections;
	struct client *c;

	/* Each client is served within PROTO_TIMEOUT_MS, so a full table empties on its own. */
	if (ctl->n_clients >= limit &&
		(ctl->n_clients >= limit + CTL_ROOT_RESERVE || !peer_is_root(fd))) {
		if (once_a_minute(&ctl->refused_logged))
			log_warn("control: %u clients connected (limits.control_connections); "
				 "refusing more", ctl->n_clients);
		close(fd);
		return;
	}
	if (!(c = calloc(1, sizeof(*c)))) {
		close(fd);
		return;
	}
	c->ctl = ctl;
	peer_identify(fd, c);
	c->bev = bufferevent_socket_new(evconnlistener_get_base(lev), fd, BEV_OPT_CLOSE_ON_FREE);
	c->deadline = evtimer_new(evconnlistener_get_base(lev), ctl_deadline_cb, c);
	if (!c->bev || !c->deadline || evtimer_add(c->deadline, &tv)) {
		if (c->deadline)
			event_free(c->deadline);
		if (c->bev)
			bufferevent_free(c->bev);
		else
			close(fd);
		free(c);
		return;
	}
	ctl->n_clients++;
	enforce_clients(ctl->enf, 1);
	if ((c->next = ctl->clients))
		c->next->prev = c;
	ctl->clients = c;
	bufferevent_setcb(c->bev, ctl_read_cb, NULL, ctl_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ);
}

/*
 * accept failed for a reason that does not pass at once (EMFILE, ENFILE, ENOMEM): libevent
 * leaves the listener on, and the connection waiting keeps the socket readable, so the loop
 * would spin on it, a log line each time. It pauses instead, as the controller endpoint's does.
 */
static void ctl_error_cb(struct evconnlistener *lev, void *arg)
{
	struct ctl *c = arg;
	struct timeval pause = { ACCEPT_PAUSE_MS / 1000, (ACCEPT_PAUSE_MS % 1000) * 1000 };

	log_warn("control: accept: %s; pausing for %d ms", strerror(errno), ACCEPT_PAUSE_MS);
	evconnlistener_disable(lev);
	if (evtimer_add(c->resume, &pause))
		evconnlistener_enable(lev); /* no timer: spinning beats never accepting again */
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ctl *c = arg;

	(void)fd;
	(void)what;
	evconnlistener_enable(c->lev);
}

/* A live agent listening on path means this one must not steal its socket. */
static int claim_path(const char *path)
{
	struct stat st;
	int ret;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	if ((ret = proto_listening(path)))
		return ret > 0 ? -EADDRINUSE : ret;
	return unlink(path) < 0 ? -errno : 0;
}

/*
 * The group that may read: a name or a decimal gid. -ENOENT when there is no such group, or
 * getgrnam_r's own -errno (NSS unreachable, out of memory), or -EOVERFLOW for an entry past
 * NSS_BUF_MAX: none of which says the group is missing.
 */
static int resolve_group(const char *name, gid_t *gid)
{
	struct group gr, *res = NULL;
	char *buf = NULL, *end;
	unsigned long n;
	size_t len = 4096;
	int r = ENOMEM;

	/* A group with many members does not fit 4 KiB (ERANGE): it is still the group. */
	for (;;) {
		char *nb = realloc(buf, len);

		if (!nb) {
			r = ENOMEM;
			break;
		}
		buf = nb;
		r = getgrnam_r(name, &gr, buf, len, &res);
		if (r != ERANGE || len >= NSS_BUF_MAX)
			break;
		len *= 2;
	}
	if (r == 0 && res) {
		*gid = gr.gr_gid;
		free(buf);
		return 0;
	}
	free(buf);
	/* Digits only: strtoul also takes " 1001", "+1001" and "-18446744073709547374" (4242). */
	if (*name && strspn(name, "0123456789") == strlen(name)) {
		n = strtoul(name, &end, 10);
		if (!*end && n < (gid_t)-1) {
			*gid = (gid_t)n;
			return 0;
		}
	}
	/* Larger than NSS_BUF_MAX: "Numerical result out of range" would say nothing. */
	if (r == ERANGE)
		return -EOVERFLOW;
	/* Not found is 0 with no entry (glibc); some NSS modules say ENOENT or ESRCH. */
	return r && r != ENOENT && r != ESRCH ? -r : -ENOENT;
}

/*
 * The socket's directory, when it does not exist (jitd run by hand, without the unit's
 * RuntimeDirectory): one level, 0750, the reading group's. 0 or -errno.
 */
static int make_dir(const char *path, const char *group)
{
	char dir[sizeof(((struct sockaddr_un *)0)->sun_path)], *slash;
	gid_t gid;

	snprintf(dir, sizeof(dir), "%s", path);
	if (!(slash = strrchr(dir, '/')) || slash == dir)
		return 0;
	*slash = '\0';
	if (mkdir(dir, 0750) < 0)
		return errno == EEXIST ? 0 : -errno;
	/* 0750 whatever the umask (the unit's is 0077). */
	if (chmod(dir, 0750) < 0)
		return -errno;
	log_info("control: created %s", dir);
	if (!resolve_group(group, &gid) && chown(dir, (uid_t)-1, gid) < 0)
		log_warn("control: cannot give group '%s' %s: %s", group, dir, strerror(errno));
	return 0;
}

/*
 * PATH.lock, held (flock) until jitd exits: a second jitd, or jitctl teardown, finds this one
 * running while it starts, before its socket is listened on. -EADDRINUSE when another holds it.
 */
static int take_lock(const char *path, int *fd)
{
	char lock[sizeof(((struct sockaddr_un *)0)->sun_path) + 8];
	int ret;

	if ((ret = proto_lock_path(path, lock, sizeof(lock))))
		return ret;
	if ((*fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600)) < 0)
		return -errno;
	/*
	 * Another jitd holds it for good; jitctl teardown's look (proto_lock_held) for a moment.
	 * Taken for another jitd, that look would make this start give up without the lockdown:
	 * so a few tries, 250 ms in all, before saying so.
	 */
	for (int i = 0; i < 10; i++) {
		if (flock(*fd, LOCK_EX | LOCK_NB) == 0)
			return 0;
		if ((ret = errno) != EWOULDBLOCK)
			break;
		usleep(25000);
	}
	ret = ret == EWOULDBLOCK ? -EADDRINUSE : -ret;
	close(*fd);
	return ret;
}

int ctl_open(struct event_base *base, const struct config *cfg, struct ctl **out)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	const char *path = cfg->control_socket;
	struct ctl *c;
	struct stat st;
	mode_t old;
	gid_t gid;
	int ret, lock;

	*out = NULL;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	if ((ret = make_dir(path, cfg->control_group)) || (ret = take_lock(path, &lock)))
		return ret;
	/* Under the lock: a socket no live jitd holds the lock of is stale. */
	if ((ret = claim_path(path)) || !(c = calloc(1, sizeof(*c)))) {
		close(lock);
		return ret ? ret : -ENOMEM;
	}
	c->lock_fd = lock;
	if ((ret = wake_open(base, log_done_cb, c, &c->wake))) {
		close(lock);
		free(c);
		return ret;
	}
	pthread_mutex_init(&c->lock, NULL);
	atomic_init(&c->closing, false);
	strcpy(c->path, path);
	c->base = base;
	/*
	 * Created 0600 from the start: no window in which others could connect. Bound now (the
	 * path is jitd's), listened on only from ctl_attach: until the agent serves, a client is
	 * refused at once rather than left waiting in the backlog.
	 */
	old = umask(0177);
	c->fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	ret = c->fd < 0 || bind(c->fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 ? -errno : 0;
	umask(old);
	if (ret) {
		if (c->fd >= 0)
			close(c->fd);
		close(c->lock_fd);
		wake_close(&c->wake);
		pthread_mutex_destroy(&c->lock);
		free(c);
		return ret;
	}
	/*
	 * Then opened to the reading group, if it exists; otherwise root alone keeps it. Under the
	 * systemd unit (Group=jitd, no CAP_CHOWN) the socket is born with that group already.
	 */
	if ((ret = resolve_group(cfg->control_group, &gid)) == -ENOENT) {
		log_warn("control: group '%s' does not exist; only root can use %s",
			cfg->control_group, path);
	} else if (ret) {
		char big[64];

		snprintf(big, sizeof(big), "its entry takes more than %u KiB", NSS_BUF_MAX / 1024);
		log_warn("control: cannot look group '%s' up (%s); only root can use %s",
			cfg->control_group, ret == -EOVERFLOW ? big : strerror(-ret), path);
	} else if ((stat(path, &st) < 0 ||
		(st.st_gid != gid && chown(path, (uid_t)-1, gid) < 0)) || chmod(path, 0660) < 0) {
		log_warn("control: cannot give group '%s' access to %s: %s", cfg->control_group,
			path, strerror(errno));
	}
	*out = c;
	return 0;
}

int ctl_attach(struct ctl *c, struct enforce *enf)
{
	c->enf = enf;
#ifdef JITD_TEST_HOOKS
	/* Test builds: $JITD_TEST_ATTACH_FAIL_FILE present, a start fails after it enforces. */
	if (testhook_exists("JITD_TEST_ATTACH_FAIL_FILE"))
		return -EIO;
#endif
	if (!(c->resume = evtimer_new(c->base, resume_cb, c)))
		return -ENOMEM;
	/* A controller sends grants in bursts: room for them before they are accepted. */
	if (!(c->lev = evconnlistener_new(c->base, ctl_accept_cb, c, LEV_OPT_CLOSE_ON_FREE |
		LEV_OPT_CLOSE_ON_EXEC, 128, c->fd)))
		return -errno;
	c->fd = -1;
	evconnlistener_set_error_cb(c->lev, ctl_error_cb);
	return 0;
}

void ctl_close(struct ctl **c)
{
	if (!c || !*c)
		return;
	if ((*c)->lev)
		evconnlistener_free((*c)->lev);
	else
		close((*c)->fd);
	if ((*c)->resume)
		event_free((*c)->resume);
	while ((*c)->clients)
		client_free((*c)->clients);
	/* Queries still reading finish first (their clients are gone: freed with them). */
	atomic_store(&(*c)->closing, true);
	log_jobs_finish(log_jobs_take(*c, true));
	wake_close(&(*c)->wake);
	pthread_mutex_destroy(&(*c)->lock);
	(void)unlink((*c)->path);
	/* Last: the socket is gone before another jitd may take the path. */
	close((*c)->lock_fd);
	free(*c);
	*c = NULL;
}
