#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/queue.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/bufferevent_struct.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <event2/listener.h>
#include <jansson.h>
#include <openssl/ssl.h>

#include "agent/connshare.h"
#include "agent/enforce.h"
#include "agent/http.h"
#include "agent/metrics.h"
#include "agent/nft.h"
#include "agent/ratelimit.h"
#include "agent/ruleset.h"
#include "agent/sockowner.h"
#include "agent/status.h"
#include "agent/store.h"
#include "agent/testhook.h"
#include "agent/tls.h"
#include "common/clock.h"
#include "common/config.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/log.h"
#include "common/proto.h"

/*
 * Bodies up to this size reach the grant verifier, which refuses anything above JWS_MAX_TOKEN
 * as too_large (JSON reply, audited); evhttp itself answers a larger one with a bare 413.
 */
#define HTTP_MAX_BODY (64 * 1024)
#define HTTP_MAX_HEADERS (8 * 1024)
/* A connection's unread input, at most: the next request whole, and some of the one after. */
#define HTTP_INPUT_MAX (HTTP_MAX_HEADERS + HTTP_MAX_BODY + 16 * 1024)
#define HTTP_BACKLOG 128
#define RATE_SLOTS 4096
/* Floods are logged, not audited: one line per interval, so they cannot fill the disk. */
#define FLOOD_LOG_INTERVAL_MS 10000
/* After accept fails (out of descriptors), pause the listener instead of spinning on it. */
#define ACCEPT_PAUSE_MS 1000
/* A spooled status goes out this much at a time, the next piece read once evhttp sent the last. */
#define STATUS_PIECE (64 * 1024)
/*
 * Statuses sent at once. Each holds its document in state_dir until its client has read it (or
 * listen.timeout ends a client that stopped): 36 MB at 100,000 grants. Without a bound, clients
 * that ask and do not read could fill the disk the journal needs.
 */
#define STATUS_STREAMS_MAX 4

/* A TLS context and the tls_cert it was loaded from. */
struct served_tls {
	SSL_CTX *ctx;
	/* For the log: a copy, since a later reload may disable the endpoint (restart-only). */
	char *cert_path;
};

/* One kind of log line's pace: when the last was written, and the events since. */
struct log_pace {
	int64_t at_ms;
	unsigned long n;
};

struct http {
	struct event_base *base;
	struct evhttp *eh;
	struct evconnlistener *lev;
	int fd;				/* bound, until http_attach listens on it */
	struct event *resume;
	struct served_tls tls;		/* ctx NULL: insecure_plaintext; new connections take it */
	struct served_tls next;		/* a reload's, until the reload is done */
	int cert_said;			/* what was last logged of it: 0, TLS_EXPIRES_SOON, _EXPIRED */
	struct event *cert_timer;	/* looks again when that is due to change */
	struct enforce *enf;
	const struct listen_config *l;
	struct ratelimit *rl;		/* NULL: rate_limit 0 */
	size_t n_conns;			/* open connections, handshakes included */
	struct bufferevent **pending;	/* accepted, close callback not attached yet */
	size_t n_pending;
	struct event *adopt;
	LIST_HEAD(, submission) waiting;	/* grants with the enforcer, their replies owed */
	LIST_HEAD(, stream) streams;		/* statuses being sent */
	LIST_HEAD(, conn_deadline) deadlines;	/* one per connection: see conn_deadline */
	struct connshare *share;	/* connections by client: which gives way when full */
	bool paused_full;		/* the listener waits for a place: see listen_if_room */
	bool closing;
	struct log_pace flood;		/* connections or requests refused */
	struct metrics_endpoint counted;	/* for /metrics; .connections is n_conns */
};

/* Who sent a request: for the audit trail, the rate limit and the status permission. */
struct peer {
	char name[192];		/* "https 192.0.2.7:50412 cn=controller-1" */
	const struct sockaddr *sa;	/* never IPv4-mapped: then it points to v4 */
	struct sockaddr_in v4;
	uint8_t client[16];	/* who it counts as for the rate limit (ratelimit_client_key) */
	uid_t owner;		/* on loopback: who owns the client's socket, if owner_known */
	bool owner_known;
	bool loopback;
	bool verified;		/* a client certificate the client CA signed */
};

/*
 * A grant with the enforcer. evhttp keeps a request whose reply is owed: it stops reading its
 * connection meanwhile, and a connection found gone when the reply is written is freed then.
 * Only closing the endpoint must cut the tie.
 */
struct submission {
	struct http *h;
	struct evhttp_request *req;	/* NULL: the endpoint closed; drop the answer */
	bool proven;	/* its client's certificate verified when it asked (see outside) */
	LIST_ENTRY(submission) entry;
};

/* A status being sent as its client reads it (get_status). */
struct stream {
	struct http *h;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	int fd;			/* the spooled document, unlinked; -1: none */
	off_t off, spooled;	/* what of it was sent; its length */
	struct evbuffer *rest;	/* what could not be spooled, sent after it */
	LIST_ENTRY(stream) entry;
};

struct route {
	const char *path;
	enum evhttp_cmd_type method;
	void (*fn)(struct http *h, struct evhttp_request *req, const struct peer *p);
};

static int status_of(int code)
{
	switch (code) {
	case JIT_ERR_BAD_SIGNATURE:
	case JIT_ERR_UNKNOWN_KEY:
		return 401;
	case JIT_ERR_WRONG_AUDIENCE:
	case JIT_ERR_WRONG_ISSUER:
	case JIT_ERR_EXPIRED:
	case JIT_ERR_NOT_YET_VALID:
	case JIT_ERR_PORT_NOT_PROTECTED:
	case JIT_ERR_SOURCE_NOT_ALLOWED:
	case JIT_ERR_DESTINATION_NOT_PROTECTED:
	case JIT_ERR_DURATION_EXCEEDS_MAX:
	case JIT_ERR_PERMISSION:
		return 403;
	case JIT_ERR_NOT_FOUND:
		return 404;
	case JIT_ERR_REPLAY:
	case JIT_ERR_DUPLICATE:
		return 409;
	case JIT_ERR_TOO_LARGE:
		return 413;
	case JIT_ERR_RATE_LIMITED:
		return 429;
	case JIT_ERR_KERNEL:
	case JIT_ERR_BUSY:
		return 503;
	case JIT_ERR_INTERNAL:
		return 500;
	case JIT_ERR_STORAGE_FULL:
		return 507;
	default:
		return 400;	/* malformed, bad_header, bad_request */
	}
}

/* A JSON reply's headers. */
static void json_headers(struct evhttp_request *req)
{
	struct evkeyvalq *hdr = evhttp_request_get_output_headers(req);

	evhttp_add_header(hdr, "Content-Type", "application/json");
	evhttp_add_header(hdr, "Cache-Control", "no-store");
	evhttp_add_header(hdr, "X-Content-Type-Options", "nosniff");
}

/* Sends body (a JSON text with its newline) and frees it. */
static void send_body(struct evhttp_request *req, int status, struct evbuffer *body)
{
	json_headers(req);
	evhttp_send_reply(req, status, NULL, body);
	evbuffer_free(body);
}

/* The request's own output buffer, emptied: a reply written there needs no allocation of ours. */
static struct evbuffer *own_buffer(struct evhttp_request *req)
{
	struct evbuffer *out = evhttp_request_get_output_buffer(req);

	evbuffer_drain(out, evbuffer_get_length(out));
	return out;
}

/* Sends what own_buffer holds; written only in part (failed, when not ok), an empty body. */
static void send_own(struct evhttp_request *req, int status, bool ok)
{
	if (!ok)
		(void)own_buffer(req);
	json_headers(req);
	evhttp_send_reply(req, status, NULL, NULL);
}

/*
 * A grant that took effect, when its reply cannot be built (out of memory): 201 and its id
 * alone. Never 500 "internal", which says nothing was applied: the controller would count the
 * grant as refused, and its retry would meet 409.
 */
static void send_applied(struct evhttp_request *req, const char *jti)
{
	struct evbuffer *out = own_buffer(req);

	send_own(req, 201, !status_id_write(jti, out) && !evbuffer_add(out, "\n", 1));
}

static void send_json(struct evhttp_request *req, int status, json_t *doc)
{
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
	struct evbuffer *out = evbuffer_new();

	json_decref(doc);
	if (!text || !out || evbuffer_add(out, text, strlen(text)) || evbuffer_add(out, "\n", 1)) {
		evhttp_send_error(req, 500, NULL);
		if (out)
			evbuffer_free(out);
	} else {
		send_body(req, status, out);
	}
	free(text);
}

/* 201 and the grant as status prints it. */
static void send_grant(struct evhttp_request *req, struct enforce *enf, const struct grant *g)
{
	struct evbuffer *out = evbuffer_new();

	if (!out || status_grant_write(enf, g, out) || evbuffer_add(out, "\n", 1)) {
		if (out)
			evbuffer_free(out);
		send_applied(req, g->jti);
		return;
	}
	send_body(req, 201, out);
}

/*
 * A refusal's message as the client gets it. unknown_key's and internal's may name keys_dir's
 * files, their owners and modes (common/keys.c): a controller proven by its client certificate
 * when it asked (not the endpoint's context when the reply leaves: a reload may add client_ca
 * meanwhile) gets them; any other client (an endpoint without client_ca, plain HTTP on
 * loopback) gets the code and a message that names no file.
 */
static const char *outside(bool proven, int code, const char *msg)
{
	if (proven)
		return msg;
	if (code == JIT_ERR_UNKNOWN_KEY)
		return "the token's key (its kid, under its issuer) is not one this host trusts";
	if (code == JIT_ERR_INTERNAL)
		return "nothing was applied, for a reason of this host's: retry later";
	return msg;
}

static void send_error(struct evhttp_request *req, int status, int code, const char *msg)
{
	char buf[1024];

	send_json(req, status, json_pack("{s:s, s:s}", "error", jit_err_name(code), "message",
		proto_text(msg, buf, sizeof(buf))));
}

/*
 * One more event of lp's kind: whether a line is due (one per interval_ms at most, as a flood
 * must not flood the log too), and then in *n the events since the last, this one included.
 */
static bool log_paced(struct log_pace *lp, int64_t interval_ms, unsigned long *n)
{
	int64_t now_ms = clock_mono_us() / 1000;

	lp->n++;
	if (lp->at_ms && now_ms - lp->at_ms < interval_ms)
		return false;
	*n = lp->n;
	lp->n = 0;
	lp->at_ms = now_ms;
	return true;
}

static void flood_note(struct http *h, const char *what)
{
	unsigned long n;

	if (log_paced(&h->flood, FLOOD_LOG_INTERVAL_MS, &n))
		log_warn("controller endpoint: refused %lu connection(s) or request(s) in the last "
			 "%d s (latest: %s)", n, FLOOD_LOG_INTERVAL_MS / 1000, what);
}

/* Who a rate limit counts, in words (client_of): on loopback, a user or all the others. */
static const char *client_words(const struct peer *p)
{
	if (!p->loopback || !p->owner_known)
		return "this address";
	return sockowner_trusted(p->owner) ? "this local user" :
		"local users other than root and jitd's own, who share one budget";
}

/*
 * 429, with Retry-After in seconds unless retry is 0 (the request can never pass). msg says
 * what was too much; the reply names whose budget it spent, and the log which user it was.
 */
static void rate_limited(struct http *h, struct evhttp_request *req, const struct peer *p,
	unsigned retry, const char *msg)
{
	char num[16], what[sizeof(p->name) + 32], text[256];

	if (p->loopback && p->owner_known)
		snprintf(what, sizeof(what), "%s uid %u", p->name, (unsigned)p->owner);
	else
		snprintf(what, sizeof(what), "%s", p->name);
	flood_note(h, what);
	snprintf(text, sizeof(text), "%s %s", msg, client_words(p));
	h->counted.rate_limited++;
	if (retry) {
		snprintf(num, sizeof(num), "%u", retry);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", num);
	}
	send_error(req, 429, JIT_ERR_RATE_LIMITED, text);
}

/* Whether Content-Type ct is one of ok (NULL-terminated), parameters ignored. */
static bool media_type_in(const char *ct, const char *const *ok)
{
	size_t n;

	if (!ct)
		return false;
	n = strcspn(ct, "; \t");
	for (; *ok; ok++)
		if (n == strlen(*ok) && !strncasecmp(ct, *ok, n))
			return true;
	return false;
}

/* A compact JWS: RFC 7519's type, or RFC 7515's. */
static const char *const jws_types[] = { "application/jwt", "application/jose", NULL };
static const char *const json_types[] = { "application/json", NULL };

/*
 * The body as a NUL-terminated copy, without one trailing newline (what `curl --data-binary @f`
 * sends for a file that ends in one). NULL after replying with the error (which it audits).
 */
static char *take_token(struct http *h, struct evhttp_request *req, const struct peer *p,
	bool revocation, size_t *len)
{
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	size_t n = evbuffer_get_length(in);
	char *buf;

	if (!media_type_in(ct, jws_types)) {
		struct jit_error err = { .code = JIT_ERR_BAD_REQUEST };

		snprintf(err.msg, sizeof(err.msg),
			"Content-Type must be application/jwt (a compact JWS)");
		/* Bad input is still bad input: logged, audited and counted like the rest. */
		enforce_refuse(h->enf, revocation, p->name, &err);
		send_error(req, 415, err.code, err.msg);
		return NULL;
	}
	if (!(buf = malloc(n + 1)) || evbuffer_copyout(in, buf, n) != (ev_ssize_t)n) {
		free(buf);
		send_error(req, 500, JIT_ERR_INTERNAL, "out of memory");
		return NULL;
	}
	if (n && buf[n - 1] == '\n')
		n--;
	if (n && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* The replies owed: http_close detaches them all at once. */
static void waiting_add(struct http *h, struct submission *s)
{
	LIST_INSERT_HEAD(&h->waiting, s, entry);
}

static void waiting_remove(struct submission *s)
{
	if (!s->req)
		return;	/* detached by http_close with the whole list */
	LIST_REMOVE(s, entry);
}

static void reply_made(struct http *h, struct evhttp_connection *evcon,
	struct evhttp_request *req);

static void submitted_cb(void *arg, int ret, const struct grant *g, const struct jit_error *err)
{
	struct submission *s = arg;
	struct evhttp_request *req = s->req;
	struct evhttp_connection *evcon = req ? evhttp_request_get_connection(req) : NULL;

	if (req && ret)
		send_error(req, status_of(ret), ret, outside(s->proven, ret, err->msg));
	else if (req)
		send_grant(req, s->h->enf, g);
	waiting_remove(s);
	if (req)
		reply_made(s->h, evcon, req);
	free(s);
}

static void post_grant(struct http *h, struct evhttp_request *req, const struct peer *p)
{
	struct jit_error err = { 0 };
	struct submission *s;
	char *token;
	size_t len;
	int ret;

	if (!(token = take_token(h, req, p, false, &len)))
		return;
	if (!(s = calloc(1, sizeof(*s)))) {
		free(token);
		send_error(req, 500, JIT_ERR_INTERNAL, "out of memory");
		return;
	}
	s->h = h;
	s->req = req;
	s->proven = p->verified;
	ret = enforce_submit(h->enf, token, len, p->name, submitted_cb, s, &err);
	free(token);
	if (ret) {
		free(s);
		send_error(req, status_of(ret), ret, outside(p->verified, ret, err.msg));
		return;
	}
	waiting_add(h, s);
}

/*
 * POST /v1/grants/batch: {"grants": [JWS, ...]}, up to BATCH_MAX. Each grant goes its own way
 * (verified, committed, audited and counted as if posted alone); the reply, once all are
 * settled, gives each one's status and body in request order. It saves a controller that
 * pushes many grants one round trip, one HTTP parse and one reply per grant.
 */
#define BATCH_MAX 64

struct batch;

struct batch_item {
	struct batch *b;
	struct evbuffer *out;	/* this grant's result, once settled */
};

struct batch {
	struct submission s;	/* the request, on the waiting list while the reply is owed */
	size_t n, left;		/* left: unsettled grants, plus one while submitting */
	size_t applied;		/* grants that took effect */
	struct batch_item item[];
};

static void batch_free(struct batch *b)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->item[i].out)
			evbuffer_free(b->item[i].out);
	free(b);
}

/* {"results": [...]} in request order; each item's buffer is moved into the reply. */
static void batch_reply(struct batch *b)
{
	struct evbuffer *out = evbuffer_new();

	if (!out || evbuffer_add(out, "{\"results\":[", 12))
		goto fail;
	for (size_t i = 0; i < b->n; i++)
		if ((i && evbuffer_add(out, ",", 1)) || evbuffer_add_buffer(out, b->item[i].out))
			goto fail;
	if (evbuffer_add(out, "]}\n", 3))
		goto fail;
	send_body(b->s.req, 200, out);
	return;
fail:
	if (out)
		evbuffer_free(out);
	/* Not internal when some took effect (see send_applied): how many, in req's own buffer. */
	if (!b->applied) {
		evhttp_send_error(b->s.req, 500, NULL);
		return;
	}
	send_own(b->s.req, 200, evbuffer_add_printf(own_buffer(b->s.req),
		"{\"results\":null,\"applied\":%zu}\n", b->applied) >= 0);
}

static void batch_settled(struct batch *b)
{
	if (--b->left)
		return;
	if (b->s.req) {
		struct evhttp_request *req = b->s.req;
		struct evhttp_connection *evcon = evhttp_request_get_connection(req);

		batch_reply(b);
		waiting_remove(&b->s);
		reply_made(b->s.h, evcon, req);
	}
	batch_free(b);
}

/* One grant's result: {"status": 201, "grant": {...}} or {"status": N, "error": C, ...}. */
static void batch_item_result(struct batch_item *it, int ret, const struct grant *g,
	const struct jit_error *err)
{
	struct enforce *enf = it->b->s.h->enf;
	char *text = NULL;
	json_t *doc;
	int bad;

	it->b->applied += !ret;
	if (!ret) {
		bad = evbuffer_add_printf(it->out, "{\"status\":201,\"grant\":") < 0 ||
			status_grant_write(enf, g, it->out) || evbuffer_add(it->out, "}", 1);
	} else {
		doc = json_pack("{s:i, s:s, s:s}", "status", status_of(ret), "error",
			jit_err_name(ret), "message", outside(it->b->s.proven, ret, err->msg));
		text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;
		json_decref(doc);
		bad = !text || evbuffer_add(it->out, text, strlen(text));
		free(text);
	}
	if (bad && !ret) {
		/* Applied: said with its id alone, never as internal (see send_applied). */
		evbuffer_drain(it->out, evbuffer_get_length(it->out));
		bad = evbuffer_add_printf(it->out, "{\"status\":201,\"grant\":") < 0 ||
			status_id_write(g->jti, it->out) || evbuffer_add(it->out, "}", 1);
	}
	if (bad) {
		/* The grant's fate is in the audit trail; the reply must still be JSON. */
		evbuffer_drain(it->out, evbuffer_get_length(it->out));
		evbuffer_add_printf(it->out, "{\"status\":500,\"error\":\"%s\","
			"\"message\":\"out of memory\"}", jit_err_name(JIT_ERR_INTERNAL));
	}
}

static void batch_item_cb(void *arg, int ret, const struct grant *g, const struct jit_error *err)
{
	struct batch_item *it = arg;

	/* After http_close, s.h is gone: the outcome is only in the audit trail. */
	if (it->b->s.req)
		batch_item_result(it, ret, g, err);
	batch_settled(it->b);
}

/* The grants array of a batch body, or NULL after replying with the (audited) error. */
static json_t *batch_grants(struct http *h, struct evhttp_request *req, const struct peer *p)
{
	const char *ct = evhttp_find_header(evhttp_request_get_input_headers(req), "Content-Type");
	struct evbuffer *in = evhttp_request_get_input_buffer(req);
	struct jit_error err = { .code = JIT_ERR_BAD_REQUEST };
	size_t n = evbuffer_get_length(in);
	json_t *doc = NULL, *grants;
	const char *body;
	json_error_t je;
	size_t i;
	int status = 400;

	if (!media_type_in(ct, json_types)) {
		status = 415;
		snprintf(err.msg, sizeof(err.msg), "Content-Type must be application/json");
		goto refuse;
	}
	if (!(body = n ? (const char *)evbuffer_pullup(in, -1) : "")) {
		status = 500;
		err.code = JIT_ERR_INTERNAL;
		snprintf(err.msg, sizeof(err.msg), "out of memory");
		goto refuse;
	}
	doc = json_loadb(body, n, JSON_REJECT_DUPLICATES, &je);
	if (!doc) {
		char shown[JIT_SHOWN_LEN];

		/* jansson quotes the body near the error: any UTF-8 but C0, C1 controls included. */
		snprintf(err.msg, sizeof(err.msg), "batch body: %s", jit_shown(je.text, shown));
		goto refuse;
	}
	grants = json_object_get(doc, "grants");
	if (!json_is_object(doc) || json_object_size(doc) != 1 || !json_is_array(grants)) {
		snprintf(err.msg, sizeof(err.msg),
			"batch body must be {\"grants\": [JWS, ...]} and nothing else");
		goto refuse;
	}
	if (!json_array_size(grants) || json_array_size(grants) > BATCH_MAX) {
		snprintf(err.msg, sizeof(err.msg), "a batch holds 1 to %d grants, not %zu",
			BATCH_MAX, json_array_size(grants));
		goto refuse;
	}
	for (i = 0; i < json_array_size(grants); i++) {
		if (!json_is_string(json_array_get(grants, i))) {
			snprintf(err.msg, sizeof(err.msg), "batch grant %zu is %s, not a string", i,
				jit_json_type(json_array_get(grants, i)));
			goto refuse;
		}
	}
	json_incref(grants);
	json_decref(doc);
	return grants;
refuse:
	json_decref(doc);
	enforce_refuse(h->enf, false, p->name, &err);
	send_error(req, status, err.code, err.msg);
	return NULL;
}

static void post_batch(struct http *h, struct evhttp_request *req, const struct peer *p)
{
	struct batch *b = NULL;
	json_t *grants;
	unsigned retry;
	size_t n;

	if (!(grants = batch_grants(h, req, p)))
		return;
	n = json_array_size(grants);
	/* Each grant counts against the address's rate; the request itself already took one. */
	if (h->rl && p->sa && n > ratelimit_burst(h->rl)) {
		rate_limited(h, req, p, 0,
			"this batch holds more grants than the rate limit allows at once for");
		goto out;
	}
	if (h->rl && p->sa && n > 1 &&
		!ratelimit_take(h->rl, p->client, clock_mono_us() / 1000, (unsigned)n - 1,
			&retry)) {
		rate_limited(h, req, p, retry, "too many grants from");
		goto out;
	}
	if (!(b = calloc(1, sizeof(*b) + n * sizeof(b->item[0])))) {
		send_error(req, 500, JIT_ERR_INTERNAL, "out of memory");
		goto out;
	}
	b->s.h = h;
	b->s.req = req;
	b->s.proven = p->verified;
	b->n = n;
	b->left = n + 1;
	for (size_t i = 0; i < n; i++) {
		b->item[i].b = b;
		if (!(b->item[i].out = evbuffer_new())) {
			batch_free(b);
			send_error(req, 500, JIT_ERR_INTERNAL, "out of memory");
			goto out;
		}
	}
	/* Listed before any grant is handed over, so that http_close can always detach the reply. */
	waiting_add(h, &b->s);
	for (size_t i = 0; i < n; i++) {
		const char *tok = json_string_value(json_array_get(grants, i));
		struct jit_error err = { 0 };
		int ret;

		ret = enforce_submit(h->enf, tok, json_string_length(json_array_get(grants, i)),
			p->name, batch_item_cb, &b->item[i], &err);
		if (ret) {
			batch_item_result(&b->item[i], ret, NULL, &err);
			--b->left;
		}
	}
	batch_settled(b);
out:
	json_decref(grants);
}

/* 200 and the revocation's result, written by hand (status_revoke_write): never 500 internal. */
static void send_revoked(struct evhttp_request *req, const struct revoke_result *res)
{
	send_own(req, 200, !status_revoke_write(res, "", own_buffer(req)));
}

static void post_revocation(struct http *h, struct evhttp_request *req, const struct peer *p)
{
	struct jit_error err = { 0 };
	struct revoke_result res;
	char *token;
	size_t len;
	int ret;

	if (!(token = take_token(h, req, p, true, &len)))
		return;
	ret = enforce_revoke_token(h->enf, token, len, p->name, &res, &err);
	free(token);
	if (ret) {
		send_error(req, status_of(ret), ret, outside(p->verified, ret, err.msg));
		return;
	}
	send_revoked(req, &res);
}

static void stream_free(struct stream *s)
{
	LIST_REMOVE(s, entry);
	if (s->fd >= 0)
		close(s->fd);
	if (s->rest)
		evbuffer_free(s->rest);
	free(s);
}

#ifdef JITD_TEST_HOOKS
/*
 * Test builds only: while $JITD_TEST_SPOOL_FAIL_FILE holds N, reading a spool back fails with
 * EIO from byte N * STATUS_PIECE on, as on a failing disk, so that a test reaches the path that
 * cuts the connection short (with N = 0, inside the request's own callback).
 */
static ssize_t spool_read(int fd, void *buf, size_t len, off_t off)
{
	long long pieces = testhook_number("JITD_TEST_SPOOL_FAIL_FILE", false, -1);

	if (pieces >= 0 && off >= (off_t)pieces * STATUS_PIECE) {
		errno = EIO;
		return -1;
	}
	return pread(fd, buf, len, off);
}

/*
 * Test builds only: while $JITD_TEST_SPOOL_OPEN_FAIL_FILE exists, the spool cannot be made
 * (as in a file system without O_TMPFILE), so that the status is sent from memory.
 */
static int spool_open(const char *dir)
{
	if (testhook_exists("JITD_TEST_SPOOL_OPEN_FAIL_FILE")) {
		errno = EOPNOTSUPP;
		return -1;
	}
	return open(dir, O_TMPFILE | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
}
#else
#define spool_read pread

static int spool_open(const char *dir)
{
	return open(dir, O_TMPFILE | O_EXCL | O_RDWR | O_CLOEXEC, 0600);
}
#endif

/*
 * The next piece of a status, once evhttp has written the last one (evcon NULL: the first).
 * The reply's length was promised: a spool that cannot be read back ends the connection.
 */
static void stream_pump(struct evhttp_connection *evcon, void *arg)
{
	struct stream *s = arg;
	struct evhttp_request *req = s->req;
	struct evbuffer *piece = NULL;
	struct evbuffer_iovec v;
	ssize_t n = 0;
	bool last;

	if (s->off < s->spooled) {
		if (!(piece = evbuffer_new()) || evbuffer_reserve_space(piece, STATUS_PIECE, &v, 1) < 1)
			goto fail;
		/* The chain reserved may be larger (libevent rounds it up to a power of two). */
		if (v.iov_len > STATUS_PIECE)
			v.iov_len = STATUS_PIECE;
		if (v.iov_len > (size_t)(s->spooled - s->off))
			v.iov_len = (size_t)(s->spooled - s->off);
		if ((n = spool_read(s->fd, v.iov_base, v.iov_len, s->off)) <= 0)
			goto fail;
		v.iov_len = (size_t)n;
		s->off += n;
		if (evbuffer_commit_space(piece, &v, 1))
			goto fail;
	} else {
		/*
		 * What the spool could not take, a piece at a time too: the stream stays counted
		 * among those being sent until its last piece, and each piece re-arms the
		 * connection's timeout (libevent 2.1 arms the read timeout only then), so that
		 * a client reading a large document steadily is not cut off.
		 */
		size_t want = evbuffer_get_length(s->rest);

		if (want > STATUS_PIECE)
			want = STATUS_PIECE;
		/* libevent 2.1 copies a chain it moves in part and ignores a failed copy. */
		if (!(piece = evbuffer_new()) ||
			evbuffer_remove_buffer(s->rest, piece, want) != (int)want ||
			evbuffer_get_length(piece) != want)
			goto fail;
		if (!evbuffer_get_length(s->rest)) {
			evbuffer_free(s->rest);
			s->rest = NULL;
		}
	}
	last = s->off == s->spooled && !s->rest;
	if (last)
		stream_free(s);
	evhttp_send_reply_chunk_with_cb(req, piece, last ? NULL : stream_pump, last ? NULL : s);
	evbuffer_free(piece);
	if (last)
		evhttp_send_reply_end(req);
	return;
fail:
	log_err("controller endpoint: status: reading the spooled document back: %s; closing "
		"the connection", n < 0 ? strerror(errno) : "out of memory or end of file");
	if (piece)
		evbuffer_free(piece);
	/* Its close callback (stream_gone) frees s; evhttp frees req with it. */
	evhttp_connection_free(s->evcon);
}

/* A connection that ends while a status is sent takes the stream with it. */
static void stream_gone(struct http *h, struct evhttp_connection *evcon)
{
	for (struct stream *s = LIST_FIRST(&h->streams), *next; s; s = next) {
		next = LIST_NEXT(s, entry);
		if (s->evcon != evcon)
			continue;
		/* Dropped by a client that went away: evhttp left the request to us. */
		if (!evhttp_request_get_connection(s->req))
			evhttp_request_free(s->req);
		stream_free(s);
	}
}

/*
 * Whether a loopback client without a client certificate is root (or jitd's own user): status
 * names who holds access from where, and why, and every local user reaches the loopback
 * address, while the control socket is only the control group's. A TCP client sends no
 * credentials; the kernel says who owns its socket. Anything it cannot say is a no.
 */
static bool root_on_loopback(struct evhttp_request *req, const struct peer *p)
{
	/* Apart, so that one user's requests cannot hide the kernel's failures. */
	static struct log_pace other_user, unknown;
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	char note[64] = "";
	unsigned long n;
	uid_t uid = p->owner;
	/* Asked at the accept (client_of); again only if the kernel could not say then. */
	int ret = p->owner_known ? 0 :
		sockowner_peer_uid(bufferevent_getfd(evhttp_connection_get_bufferevent(evcon)),
			&uid);

	if (ret == 0 && sockowner_trusted(uid))
		return true;
	/* Why goes to the log, the 403 only saying who is served; once a second at most. */
	if (!log_paced(ret == 0 ? &other_user : &unknown, 1000, &n))
		return false;
	if (n > 1)
		snprintf(note, sizeof(note), "; %lu more since the last such line", n - 1);
	if (ret == 0)
		log_info("controller endpoint: status refused to %s: its socket is uid %u's, "
			 "neither root's nor jitd's own (jitctl status reads it over the control "
			 "socket%s)", p->name, (unsigned)uid, note);
	else
		log_warn("controller endpoint: status refused to %s: the kernel cannot say who "
			 "owns its socket (%s: it closed, or the kernel has no NETLINK_SOCK_DIAG "
			 "for TCP%s)", p->name, strerror(-ret), note);
	return false;
}

static void deadline_streaming(struct http *h, struct evhttp_connection *evcon);

/*
 * Status names who has access to what: authenticated controllers and root on the host only.
 *
 * At 100,000 grants the document is 36 MB: built whole, each request (and each one at the same
 * time) held all of it until sent. evhttp sends only from the loop, and over TLS nothing may
 * write past the bufferevent, so it is written as the control socket's is, but into an unlinked
 * file in state_dir (page cache, not the agent's memory), and sent from there a piece at a time
 * as the client reads. What the file could not take (no O_TMPFILE, a full or read-only disk)
 * stays in memory and is sent after it, as it all was before.
 */
static void get_status(struct http *h, struct evhttp_request *req, const struct peer *p)
{
	static bool warned;
	struct stream *s;
	size_t sent = 0, size;
	unsigned sending = 0;
	char len[24];

	if (!p->verified && !(p->loopback && root_on_loopback(req, p))) {
		send_error(req, 403, JIT_ERR_PERMISSION,
			"status is served over mutual TLS (listen.client_ca) or to root's loopback "
			"clients; jitctl status reads it over the control socket");
		return;
	}
	LIST_FOREACH(s, &h->streams, entry)
		sending++;
	if (sending >= STATUS_STREAMS_MAX) {
		char msg[80];

		flood_note(h, p->name);
		snprintf(msg, sizeof(msg), "%d statuses are being sent, the most at once; try again",
			STATUS_STREAMS_MAX);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Retry-After", "1");
		send_error(req, 503, JIT_ERR_BUSY, msg);
		return;
	}
	if (!(s = calloc(1, sizeof(*s))) || !(s->rest = evbuffer_new())) {
		free(s);
		evhttp_send_error(req, 500, NULL);
		return;
	}
	s->h = h;
	s->req = req;
	s->evcon = evhttp_request_get_connection(req);
	/* O_EXCL: the file can never be linked into the directory. */
	s->fd = spool_open(enforce_config(h->enf)->state_dir);
	if (s->fd < 0 && !warned) {
		log_warn("controller endpoint: cannot spool the status in %s (%s); it is built in "
			 "memory", enforce_config(h->enf)->state_dir, strerror(errno));
		warned = true;
	}
	LIST_INSERT_HEAD(&h->streams, s, entry);
	if (status_write(h->enf, s->rest, s->fd, &sent) || evbuffer_add(s->rest, "\n", 1)) {
		/* Nothing of it has gone to the client yet: the error can still be answered. */
		stream_free(s);
		log_err("controller endpoint: out of memory writing the status for %s", p->name);
		send_error(req, 500, JIT_ERR_INTERNAL, "out of memory writing the status");
		return;
	}
	s->spooled = (off_t)sent;
	size = sent + evbuffer_get_length(s->rest);
	/* The kernel's view and the rest of the making are garbage now, however the send ends. */
	status_release_memory(size);
	snprintf(len, sizeof(len), "%zu", size);
	json_headers(req);
	evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Length", len);
	deadline_streaming(h, s->evcon);
	evhttp_send_reply_start(req, 200, "OK");
	stream_pump(NULL, s);
}

/*
 * Prometheus text format, over mutual TLS or to any loopback client: counts, not who holds
 * access from where, so a local scraper need not run as root.
 */
static void get_metrics(struct http *h, struct evhttp_request *req, const struct peer *p)
{
	struct metrics_gauges g = { .denied_packets = -1, .started = enforce_started(h->enf) };
	struct evbuffer *out = evbuffer_new();
	uint64_t packets, bytes;
	size_t n, verifying, waiting;
	int64_t refused_at;
	char *text;

	if (!p->verified && !p->loopback) {
		if (out)
			evbuffer_free(out);
		send_error(req, 403, JIT_ERR_PERMISSION,
			"metrics are served over mutual TLS (listen.client_ca) or to loopback clients");
		return;
	}
	(void)enforce_grants(h->enf, &n);
	g.active_grants = n;
	(void)enforce_model(h->enf, &n);
	g.kernel_elements = n;
	enforce_queue(h->enf, &verifying, &waiting);
	g.verifying = verifying;
	g.waiting = waiting;
	if (tls_not_after(h->tls.ctx, &g.tls_not_after))
		g.tls_not_after = 0;
	g.reload_refused = enforce_reload_refused(h->enf, &refused_at) != NULL;
	g.restart_pending = enforce_restart_pending_count(h->enf);
	g.state_damage = enforce_state_damage(h->enf)->count;
	h->counted.connections = h->n_conns;
	g.endpoint = &h->counted;
	if (!nft_counter_get(enforce_nft(h->enf), RULESET_TABLE, RULESET_COUNTER_DENIED, &packets,
		&bytes))
		g.denied_packets = (int64_t)packets;
	text = metrics_render(enforce_metrics(h->enf), &g);
	if (!out || !text || evbuffer_add(out, text, strlen(text))) {
		send_error(req, 500, JIT_ERR_INTERNAL, "out of memory");
	} else {
		evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
			"text/plain; version=0.0.4; charset=utf-8");
		evhttp_send_reply(req, 200, NULL, out);
	}
	if (out)
		evbuffer_free(out);
	free(text);
}

static const struct route routes[] = {
	{ "/v1/grants", EVHTTP_REQ_POST, post_grant },
	{ "/v1/grants/batch", EVHTTP_REQ_POST, post_batch },
	{ "/v1/revocations", EVHTTP_REQ_POST, post_revocation },
	{ "/v1/status", EVHTTP_REQ_GET, get_status },
	{ "/metrics", EVHTTP_REQ_GET, get_metrics },
};

/* Whether path is one of the routes that change grants (every POST route). */
static bool routes_change(const char *path)
{
	for (size_t i = 0; i < sizeof(routes) / sizeof(routes[0]); i++)
		if (routes[i].method == EVHTTP_REQ_POST && !strcmp(path, routes[i].path))
			return true;
	return false;
}

static bool addr_loopback(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return (ntohl(((const struct sockaddr_in *)sa)->sin_addr.s_addr) >> 24) == 127;
	if (sa->sa_family == AF_INET6) {
		const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;

		return IN6_IS_ADDR_LOOPBACK(a) ||
			(IN6_IS_ADDR_V4MAPPED(a) && a->s6_addr[12] == 127);
	}
	return false;
}

static void peer_identify(const struct http *h, struct evhttp_request *req, struct peer *p)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct bufferevent *bev = evhttp_connection_get_bufferevent(evcon);
	SSL *ssl = bufferevent_openssl_get_ssl(bev);
	char host[64] = "?", serv[8] = "?", cn[64] = "";
	const struct sockaddr_in6 *s6;

	p->sa = evhttp_connection_get_addr(evcon);
	s6 = (const struct sockaddr_in6 *)p->sa;
	/*
	 * An IPv4 client of a dual-stack [::] listener arrives mapped. It is the IPv4 address from
	 * here on: in its name (as its grants' sources are written), the loopback test and the
	 * rate limit.
	 */
	if (p->sa && p->sa->sa_family == AF_INET6 && IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		p->v4 = (struct sockaddr_in){ .sin_family = AF_INET, .sin_port = s6->sin6_port };
		memcpy(&p->v4.sin_addr, &s6->sin6_addr.s6_addr[12], sizeof(p->v4.sin_addr));
		p->sa = (const struct sockaddr *)&p->v4;
	}
	if (p->sa) {
		(void)getnameinfo(p->sa, p->sa->sa_family == AF_INET6 ? sizeof(*s6) : sizeof(p->v4),
			host, sizeof(host), serv, sizeof(serv), NI_NUMERICHOST | NI_NUMERICSERV);
		p->loopback = addr_loopback(p->sa);
	}
	p->verified = tls_peer_trusted(ssl, h->tls.ctx);
	if (p->verified)
		tls_peer_cn(ssl, cn, sizeof(cn));
	snprintf(p->name, sizeof(p->name), "%s %s%s%s:%s%s%s", ssl ? "https" : "http",
		strchr(host, ':') ? "[" : "", host, strchr(host, ':') ? "]" : "", serv,
		cn[0] ? " cn=" : "", cn);
}

/*
 * listen.timeout closes a connection that sends nothing for that long, but every byte restarts
 * it: a client trickling a TLS handshake or a request one byte at a time held its connection,
 * and max_connections of them the whole endpoint, before any certificate or rate limit was asked
 * (or, on keep-alive, after one quick request). So each whole request must also come within
 * listen.timeout of the accept, or of the connection's last reply. From a request until its
 * reply is made the deadline rests: that time is jitd's. A reply made but not taken is the
 * client's time again: a client that pipelined requests and read their replies a little at a
 * time (each read restarting the write timeout) held its connections in jitd's turn, where
 * none gives way, and max_connections of them kept a controller out. Once a reply is made
 * (reply_made) the connection may give way, and it is cut if the reply has not left within
 * listen.timeout. While jitd holds a request the deadline is only checked again (a reply made
 * on a path that does not say so is found there). A status streamed is left to the write
 * timeout: a large one read steadily takes longer.
 */
struct conn_deadline {
	struct http *h;
	struct evhttp_connection *evcon;
	struct event *timer;
	struct evhttp_request *req;	/* in jitd's turn until its reply has left; else NULL */
	bool streaming;			/* req is a status, streamed */
	bool unread;			/* req's reply was found made, not taken */
	struct connshare_conn *share;	/* idle while the deadline runs; NULL: not shared */
	uint8_t client[16];		/* client_of, once: it asks the kernel on loopback */
	bool has_client;
	uid_t owner;			/* on loopback, who owns the client's socket */
	bool owner_known;
	LIST_ENTRY(conn_deadline) entry;
};

static void listen_if_room(struct http *h);

static struct conn_deadline *deadline_of(struct http *h, struct evhttp_connection *evcon)
{
	struct conn_deadline *d;

	LIST_FOREACH(d, &h->deadlines, entry)
		if (d->evcon == evcon)
			return d;
	return NULL;
}

/* evcon's request is a status, streamed: its time is the write timeout's (deadline_cb). */
static void deadline_streaming(struct http *h, struct evhttp_connection *evcon)
{
	struct conn_deadline *d = deadline_of(h, evcon);

	if (d)
		d->streaming = true;
}

/* evcon closed: its deadline goes. */
static void deadline_free(struct http *h, struct evhttp_connection *evcon)
{
	struct conn_deadline *d = deadline_of(h, evcon);

	if (!d)
		return;
	LIST_REMOVE(d, entry);
	connshare_leave(h->share, &d->share);
	event_free(d->timer);
	free(d);
}

/* The next check of the connection, listen.timeout from now. */
static void deadline_set(struct conn_deadline *d)
{
	const struct timeval tv = { (time_t)d->h->l->timeout, 0 };

	if (evtimer_add(d->timer, &tv))
		log_warn("controller endpoint: cannot set a connection's deadline");
}

/* The client's turn: its next whole request within listen.timeout. Idle until then. */
static void deadline_arm(struct conn_deadline *d)
{
	deadline_set(d);
	if (d->share) {
		connshare_idle(d->h->share, d->share, true);
		listen_if_room(d->h);
	}
}

/*
 * No whole request in time, or a reply not taken in time: nothing of ours is pending on it
 * (a reply made is evhttp's), so evhttp may free it now. A request jitd still holds (its
 * reply not made: evhttp gives it a code only then) or a status streamed is checked again.
 */
static void deadline_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn_deadline *d = arg;

	if (d->req && (d->streaming || !evhttp_request_get_response_code(d->req))) {
		deadline_set(d);
		return;
	}
	if (d->req && !d->unread) {
		d->unread = true;
		deadline_arm(d);
		return;
	}
	flood_note(d->h, d->req ? "a reply not taken within listen.timeout of the next check" :
		"no whole request within listen.timeout of the connection or its reply");
	d->h->counted.cut_deadline++;
	/* Calls conn_closed_cb, which frees d. */
	evhttp_connection_free(d->evcon);
}

/*
 * req's reply has been made (not streamed) on evcon: the client's time from now, and the
 * connection may give way (the newest idle of its client's: the last of them to). Sending may
 * have ended the connection (out of memory): evcon is looked up by address, and req touched
 * only while it is still its deadline's.
 */
static void reply_made(struct http *h, struct evhttp_connection *evcon,
	struct evhttp_request *req)
{
	struct conn_deadline *d = deadline_of(h, evcon);

	if (d && d->req == req && !d->streaming && evhttp_request_get_response_code(req)) {
		d->unread = true;
		deadline_arm(d);
	}
}

/*
 * The client a connection counts as for the rate limit and the fair share: its address's, and
 * on loopback, which every local user reaches, root's and jitd's own user's sockets each a
 * client of their own, so that another local user cannot spend a local controller's budget or
 * take its places. Every other local user is one client together: a user can own sockets as
 * each of its subordinate uids (a user namespace), which must not buy it a budget or a place
 * each. One whose owner the kernel cannot say (closed meanwhile) counts as its address does.
 * The owner is kept for status's check (root_on_loopback): only root can change it (fchown).
 */
static void client_of(int fd, const struct sockaddr *sa, struct conn_deadline *d)
{
	ratelimit_client_key(sa, d->client);
	d->has_client = true;
	if (addr_loopback(sa) && !sockowner_peer_uid(fd, &d->owner)) {
		d->owner_known = true;
		ratelimit_client_key_user(d->client, sockowner_trusted(d->owner) ? d->owner :
			RATELIMIT_OTHER_USERS);
	}
}

static void deadline_start(struct http *h, struct evhttp_connection *evcon, int fd)
{
	struct conn_deadline *d = calloc(1, sizeof(*d));
	struct sockaddr_storage ss;
	socklen_t sl = sizeof(ss);
	int ret;

	if (!d || !(d->timer = evtimer_new(evhttp_connection_get_base(evcon), deadline_cb, d))) {
		/* The idle timeout still holds; only the trickle goes unbounded for this one. */
		log_warn("controller endpoint: out of memory for a connection's deadline");
		free(d);
		return;
	}
	d->h = h;
	d->evcon = evcon;
	/* Without its address (or memory), it counts for no client and never gives way. */
	if (!getpeername(fd, (struct sockaddr *)&ss, &sl))
		client_of(fd, (struct sockaddr *)&ss, d);
	if ((ret = connshare_join(h->share, d->has_client ? d->client : NULL, d, &d->share)))
		log_warn("controller endpoint: a connection counts for no client (%s)",
			ret == -ENOSPC ? "the endpoint is full" : strerror(-ret));
	LIST_INSERT_HEAD(&h->deadlines, d, entry);
	deadline_arm(d);
}

/*
 * A reply has left. The connection's deadline (arg, NULL if it had none) runs again, and only
 * now is a large reply's buffer freed, and worth giving back (evhttp wrote its Content-Length).
 * evhttp calls this only while the connection, and so its deadline, lives.
 */
static void reply_sent_cb(struct evhttp_request *req, void *arg)
{
	const char *len = evhttp_find_header(evhttp_request_get_output_headers(req),
		"Content-Length");
	struct conn_deadline *d = arg;

	if (len)
		status_release_memory((size_t)strtoull(len, NULL, 10));
	if (d) {
		d->req = NULL;
		d->streaming = d->unread = false;
		deadline_arm(d);
	}
}

static void route(struct http *h, struct evhttp_request *req, struct conn_deadline *d);

/*
 * jitd's turn until the reply is made, the client's again once it has (reply_made): here for
 * a reply route makes, from submitted_cb or batch_settled for a grant's or a batch's, never
 * for a status streamed. route may end the connection (and d with it) before it returns.
 */
static void request_cb(struct evhttp_request *req, void *arg)
{
	struct evhttp_connection *evcon = evhttp_request_get_connection(req);
	struct http *h = arg;
	struct conn_deadline *d = deadline_of(h, evcon);

	if (d) {
		d->req = req;
		d->streaming = d->unread = false;
		deadline_set(d);
		if (d->share)
			connshare_idle(h->share, d->share, false);
	}
	evhttp_request_set_on_complete_cb(req, reply_sent_cb, d);
	route(h, req, d);
	reply_made(h, evcon, req);
}

static void route(struct http *h, struct evhttp_request *req, struct conn_deadline *d)
{
	const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
	enum evhttp_cmd_type method = evhttp_request_get_command(req);
	struct peer p = { 0 };
	unsigned retry;
	bool known = false;

	peer_identify(h, req, &p);
	/* Without a deadline (out of memory), its address alone. */
	if (d && d->has_client)
		memcpy(p.client, d->client, sizeof(p.client));
	else if (p.sa)
		ratelimit_client_key(p.sa, p.client);
	if (d && d->owner_known) {
		p.owner = d->owner;
		p.owner_known = true;
	}
	/*
	 * The handshake already demanded it; never serve a mutual-TLS endpoint without it. A
	 * connection from before a reload whose new client CA does not sign its certificate is
	 * closed: what the reload took away must not live on in a keep-alive connection.
	 */
	if (tls_mutual(h->tls.ctx) && !p.verified) {
		struct jit_error err = { .code = JIT_ERR_PERMISSION };

		snprintf(err.msg, sizeof(err.msg),
			"no client certificate the endpoint's client CA signs");
		/* A grant or revocation refused so is audited like any other (peer, code). */
		if (method == EVHTTP_REQ_POST && path && routes_change(path))
			enforce_refuse(h->enf, !strcmp(path, "/v1/revocations"), p.name, &err);
		evhttp_add_header(evhttp_request_get_output_headers(req), "Connection", "close");
		send_error(req, 403, err.code, err.msg);
		return;
	}
	/* The monotonic clock: a wall clock stepped back would stop every bucket refilling. */
	if (h->rl && p.sa && !ratelimit_allow(h->rl, p.client, clock_mono_us() / 1000, &retry)) {
		rate_limited(h, req, &p, retry, "too many requests from");
		return;
	}
	for (size_t i = 0; path && i < sizeof(routes) / sizeof(routes[0]); i++) {
		if (strcmp(path, routes[i].path))
			continue;
		known = true;
		if (method == routes[i].method) {
			routes[i].fn(h, req, &p);
			return;
		}
		evhttp_add_header(evhttp_request_get_output_headers(req), "Allow",
			routes[i].method == EVHTTP_REQ_GET ? "GET" : "POST");
	}
	if (known)
		send_error(req, 405, JIT_ERR_BAD_REQUEST, "method not allowed on this path");
	else
		send_error(req, 404, JIT_ERR_NOT_FOUND, "no such endpoint");
}

/*
 * Every connection is counted from the moment evhttp asks for its bufferevent until evhttp's
 * close callback for it, however it ends. At the limit a new connection takes the place of an
 * idle one of the client holding the most, if it holds two or more (connshare.h): one client
 * holding every place would otherwise keep a controller out until it let go. With none
 * to give way the listener stops accepting, so further clients wait in the kernel's backlog
 * instead of costing descriptors and handshakes. evhttp only creates the connection object
 * after bev_cb returns, so its close callback is attached in adopt_cb, queued as an active
 * event: it runs before the loop polls again, so before any I/O could end the connection.
 * (libevent 2.1 has no server connection hook of its own.)
 */
static bool room(const struct http *h)
{
	return h->n_conns < h->l->max_connections || connshare_victim(h->share);
}

static void listen_if_room(struct http *h)
{
	if (h->closing || !h->paused_full || !room(h))
		return;
	h->paused_full = false;
	evconnlistener_enable(h->lev);
}

static void conn_gone(struct http *h)
{
	h->n_conns--;
	enforce_clients(h->enf, -1);
	listen_if_room(h);
}

static void conn_closed_cb(struct evhttp_connection *evcon, void *arg)
{
	deadline_free(arg, evcon);
	stream_gone(arg, evcon);
	conn_gone(arg);
}

static void adopt_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;
	int one = 1;

	for (size_t i = 0; i < h->n_pending; i++) {
		struct bufferevent *bev = h->pending[i];
		void *evcon = NULL;

		/* evhttp_connection_free clears the callbacks; our reference kept the memory. */
		bufferevent_getcb(bev, NULL, NULL, NULL, &evcon);
		if (evcon)
			evhttp_connection_set_closecb(evcon, conn_closed_cb, h);
		if (evcon && h->n_conns > h->l->max_connections) {
			/*
			 * The idle connection that was to give way for one of these got a request
			 * before it came (bev_cb): as if it had waited in the backlog, given up.
			 */
			flood_note(h, "listen.max_connections reached");
			h->counted.over_limit++;
			evhttp_connection_free(evcon);
		} else if (evcon) {
			deadline_start(h, evcon, bufferevent_getfd(bev));
			/*
			 * OpenSSL writes a reply as several records: with Nagle, the second waits
			 * for the client's delayed ACK (40 ms per request on keep-alive).
			 */
			(void)setsockopt(bufferevent_getfd(bev), IPPROTO_TCP, TCP_NODELAY, &one,
				sizeof(one));
		} else {
			conn_gone(h);
		}
		bufferevent_decref(bev);
	}
	h->n_pending = 0;
}

/*
 * A TLS connection's input or output taken: what OpenSSL still holds decrypted is read now, as
 * far as reading is on. libevent 2.1's TLS bufferevent stops reading at the input limit
 * (HTTP_INPUT_MAX) mid record, the rest of it left inside OpenSSL; and when reading is turned
 * on again (the watermark cleared, or a reply queued: evhttp turns reading off while a request
 * is handled, and on again, with no read callback, as it queues the reply) it only re-adds the
 * socket's event, which a client that sent everything and waits for its replies never makes
 * readable again. The requests after would wait until listen.timeout cut the connection. Its
 * read event made active does what the socket's readiness would (ev_read: bufferevent_struct.h,
 * the only way in). Output is taken as a reply is written, reading on again by then; input, as
 * evhttp takes a chunked body's pieces with reading on. Never while reading is off: a request
 * waiting for its reply (a grant on a verifier thread) has evhttp's read callback still set,
 * and bytes read then would end jitd (evhttp's "illegal connection state": exit 1). libevent reads
 * nothing then either (bytes_to_read), and turning reading off also cancels an activation made
 * while the request was parsed (event_del); the check here keeps that true by itself.
 */
static void tls_drained_cb(struct evbuffer *buf, const struct evbuffer_cb_info *info, void *arg)
{
	struct bufferevent *bev = arg;
	SSL *ssl;

	(void)buf;
	/* Called at every add and drain of both buffers: the cheap tests first. */
	if (!info->n_deleted || !(bufferevent_get_enabled(bev) & EV_READ))
		return;
	ssl = bufferevent_openssl_get_ssl(bev);
	if (ssl && SSL_is_init_finished(ssl) && SSL_has_pending(ssl))
		event_active(&bev->ev_read, EV_READ, 1);
}

static struct bufferevent *new_bev(struct http *h, struct event_base *base)
{
	struct bufferevent *bev;
	SSL *ssl;

	if (!h->tls.ctx)
		return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
	if (!(ssl = SSL_new(h->tls.ctx)))
		return NULL;
	bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
		BEV_OPT_CLOSE_ON_FREE);
	if (!bev) {
		SSL_free(ssl);
		return NULL;
	}
	if (!evbuffer_add_cb(bufferevent_get_input(bev), tls_drained_cb, bev) ||
		!evbuffer_add_cb(bufferevent_get_output(bev), tls_drained_cb, bev)) {
		bufferevent_free(bev);
		return NULL;
	}
	return bev;
}

/* evhttp calls this for each accepted socket, before it makes the connection object. */
static struct bufferevent *bev_cb(struct event_base *base, void *arg)
{
	struct http *h = arg;
	struct bufferevent *bev = new_bev(h, base);
	struct conn_deadline *gives_way;

	/* On NULL evhttp would speak plain HTTP itself: a TLS port must never do that. */
	if (!bev || h->n_pending > h->l->max_connections) {
		log_err("controller endpoint: cannot set up a connection; stopping");
		abort();
	}
	if (h->n_conns >= h->l->max_connections && (gives_way = connshare_victim(h->share))) {
		flood_note(h, "listen.max_connections reached: an idle connection of the client "
			"holding the most closed for a new one");
		h->counted.gave_way++;
		/* Calls conn_closed_cb, which frees gives_way and counts it gone. */
		evhttp_connection_free(gives_way->evcon);
	}
	/*
	 * While evhttp writes a reply it reads on with no callback, into the input buffer: a
	 * client that pipelines requests and reads no replies would fill memory. One request whole
	 * (evhttp keeps a body in the buffer until all of it came) plus some is enough.
	 */
	bufferevent_setwatermark(bev, EV_READ, 0, HTTP_INPUT_MAX);
	bufferevent_incref(bev);
	h->pending[h->n_pending++] = bev;
	event_active(h->adopt, EV_TIMEOUT, 0);
	enforce_clients(h->enf, 1);
	h->n_conns++;
	if (!room(h) && !h->paused_full) {
		h->paused_full = true;
		evconnlistener_disable(h->lev);
		flood_note(h, "listen.max_connections reached, accepting paused");
		h->counted.paused++;
	}
	return bev;
}

static void resume_cb(evutil_socket_t fd, short what, void *arg)
{
	struct http *h = arg;

	/* No listener before http_attach. */
	if (!h->paused_full && h->lev)
		evconnlistener_enable(h->lev);
}

/*
 * accept failed for a reason that will not pass at once (out of descriptors): without a pause
 * the listener would spin. (arg is evhttp's, so the periodic resume_cb restarts it.)
 */
static void accept_error_cb(struct evconnlistener *lev, void *arg)
{
	log_warn("controller endpoint: accept: %s; pausing for up to %d ms", strerror(errno),
		ACCEPT_PAUSE_MS);
	evconnlistener_disable(lev);
}

static int bind_address(const struct listen_config *l, struct sockaddr_storage *ss,
	socklen_t *sl)
{
	struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
	struct sockaddr_in *s4 = (struct sockaddr_in *)ss;

	memset(ss, 0, sizeof(*ss));
	if (inet_pton(AF_INET, l->host, &s4->sin_addr) == 1) {
		s4->sin_family = AF_INET;
		s4->sin_port = htons(l->port);
		*sl = sizeof(*s4);
		return 0;
	}
	if (inet_pton(AF_INET6, l->host, &s6->sin6_addr) == 1) {
		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(l->port);
		*sl = sizeof(*s6);
		return 0;
	}
	return -EINVAL;
}

/*
 * Says where the operator looks when the served certificate is near its end or past it: at
 * start and at each reload (always), and while the agent runs, once each time that changes.
 * The timer fires when it is due to change (14 days before the end, at the end), and at least
 * daily, since a clock set or a suspend moves those moments.
 */
static void cert_look(struct http *h, bool always)
{
	int64_t now = enforce_now_ms() / 1000, end, soon;
	struct timeval tv = { 86400, 0 };
	char msg[160];
	int said;

	if (tls_not_after(h->tls.ctx, &end))
		return;
	soon = end - TLS_EXPIRY_WARN_DAYS * 86400;
	said = tls_expiry_note(end, now, msg, sizeof(msg));
	if (said && (always || said > h->cert_said)) {
		if (said == TLS_EXPIRED)
			log_err("controller endpoint: %s (%s)", msg, h->tls.cert_path);
		else
			log_warn("controller endpoint: %s (%s)", msg, h->tls.cert_path);
	}
	h->cert_said = said;
	if (soon > now && soon - now < tv.tv_sec)
		tv.tv_sec = (time_t)(soon - now);
	else if (soon <= now && end > now && end - now < tv.tv_sec)
		tv.tv_sec = (time_t)(end - now);
	(void)evtimer_add(h->cert_timer, &tv);
}

static void cert_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	cert_look(arg, false);
}

/* host:port as a client writes it, an IPv6 address in brackets. */
#define ENDPOINT_ADDRLEN 128
static void endpoint_address(const struct listen_config *l, char *buf, size_t len)
{
	bool v6 = strchr(l->host, ':') != NULL;

	snprintf(buf, len, "%s%s%s:%u", v6 ? "[" : "", l->host, v6 ? "]" : "", (unsigned)l->port);
}

/*
 * The endpoint in the status: the address and transport it serves (a reload changes neither),
 * its connections, and the certificate new connections get, with its end, so that an operator
 * sees one running out before the controllers do.
 */
static json_t *describe(void *arg, int64_t now)
{
	struct http *h = arg;
	const struct listen_config *l = h->l;
	static const char *const standing[] = { [0] = "valid", [TLS_EXPIRES_SOON] = "expiring",
		[TLS_EXPIRED] = "expired" };
	char addr[ENDPOINT_ADDRLEN], until[PROTO_TIME_LEN], note[160];
	json_t *cert = json_null();
	int64_t end;

	endpoint_address(l, addr, sizeof(addr));
	/* Its standing as the agent's own warnings judge it, so that the two always agree. */
	if (h->tls.ctx && !tls_not_after(h->tls.ctx, &end))
		cert = json_pack("{s:s, s:o, s:I, s:s}", "file", h->tls.cert_path, "not_after",
			proto_time_format(end, until, sizeof(until)) ? json_null() :
								       json_string(until),
			"expires_in", (json_int_t)(end - now), "state",
			standing[tls_expiry_note(end, now, note, sizeof(note))]);
	return json_pack("{s:s, s:s, s:b, s:I, s:I, s:I, s:o}", "address", addr, "transport",
		h->tls.ctx ? "https" : "http", "client_certificates", tls_mutual(h->tls.ctx),
		"connections", (json_int_t)h->n_conns, "max_connections",
		(json_int_t)l->max_connections, "rate_limit", (json_int_t)l->rate_limit,
		"certificate", cert);
}

static void served_tls_clear(struct served_tls *t)
{
	SSL_CTX_free(t->ctx);
	free(t->cert_path);
	memset(t, 0, sizeof(*t));
}

/* 0, or -errno with err saying which file OpenSSL refused and why. */
static int served_tls_load(struct served_tls *t, const struct listen_config *l, char *err,
	size_t errlen)
{
	if (!(t->cert_path = strdup(l->tls_cert))) {
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	return tls_server_ctx(l, &t->ctx, err, errlen);
}

/*
 * A reload loads the TLS files again whether or not their names changed: renewed certificates
 * are usually written over the old ones, and operators' renewal hooks run `systemctl reload`.
 * New connections take the new context; open ones keep theirs (each SSL holds a reference to
 * its context), but their requests are refused, and the connection closed, unless the new
 * context's client CA signs their client certificate too (tls_peer_trusted), when it demands
 * one. A file that does not load refuses the whole reload. Switching between TLS and plain
 * HTTP, or moving the endpoint, waits for a restart (enforce_reload says so): then nothing is
 * loaded here.
 */
static int reload_prepare(void *arg, const struct config *next, char *err, size_t errlen)
{
	struct http *h = arg;
	const struct listen_config *l = &next->listen;
	char why[512];
	int ret;

	served_tls_clear(&h->next);
	if (!h->tls.ctx || !l->enabled || l->insecure_plaintext)
		return 0;
	if ((ret = served_tls_load(&h->next, l, why, sizeof(why))))
		snprintf(err, errlen, "listen: %s", why);
	return ret;
}

static void reload_finish(void *arg, bool commit)
{
	struct http *h = arg;

	if (commit && h->next.ctx) {
		served_tls_clear(&h->tls);
		h->tls = h->next;
		memset(&h->next, 0, sizeof(h->next));
		log_info("controller endpoint: TLS files loaded again (%s), for new connections",
			tls_mutual(h->tls.ctx) ? "mutual TLS" : "no client certificates");
		h->cert_said = 0;
		cert_look(h, true);
	}
	served_tls_clear(&h->next);
}

int http_open(struct event_base *base, const struct config *cfg, struct http **out, char *err,
	size_t errlen)
{
	const struct listen_config *l = &cfg->listen;
	struct timeval pause = { 0, ACCEPT_PAUSE_MS * 1000 };
	struct sockaddr_storage ss;
	struct http *h = NULL;
	socklen_t sl;
	int ret, one = 1;

	*out = NULL;
	if (!l->enabled)
		return 0;
	snprintf(err, errlen, "out of memory");
	/* One more pending than places: a newcomer whose place was taken back (adopt_cb). */
	if (!(h = calloc(1, sizeof(*h))) ||
		!(h->pending = calloc(l->max_connections + 1, sizeof(*h->pending)))) {
		free(h);
		h = NULL;
		ret = -ENOMEM;
		goto out;
	}
	h->fd = -1;
	h->base = base;
	h->l = l;
	if (!l->insecure_plaintext) {
		if ((ret = served_tls_load(&h->tls, l, err, errlen)))
			goto out;
		if (!(h->cert_timer = evtimer_new(base, cert_timer_cb, h))) {
			ret = -ENOMEM;
			goto out;
		}
		cert_look(h, true);
	}

	if ((ret = connshare_new(l->max_connections, &h->share)))
		goto out;
	if (l->rate_limit && (ret = ratelimit_new(l->rate_limit, 2 * l->rate_limit, RATE_SLOTS,
		&h->rl)))
		goto out;
	if (!(h->eh = evhttp_new(base)) || !(h->resume = event_new(base, -1, EV_PERSIST, resume_cb, h)) ||
		!(h->adopt = event_new(base, -1, 0, adopt_cb, h))) {
		ret = -ENOMEM;
		goto out;
	}
	evhttp_set_bevcb(h->eh, bev_cb, h);
	evhttp_set_gencb(h->eh, request_cb, h);
	evhttp_set_allowed_methods(h->eh, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
	evhttp_set_max_headers_size(h->eh, HTTP_MAX_HEADERS);
	evhttp_set_max_body_size(h->eh, HTTP_MAX_BODY);
	evhttp_set_timeout(h->eh, (int)l->timeout);
	if ((ret = bind_address(l, &ss, &sl))) {
		snprintf(err, errlen, "%s is not a numeric address", l->host);
		goto out;
	}
	/*
	 * Bound now, so that an address in use stops the start before the table is touched;
	 * listening only from http_attach, so that no request waits in the backlog meanwhile.
	 * Free bind: the unit starts before the network, when no interface has the address yet,
	 * and a start that failed on it would leave the protected ports open.
	 */
	if ((h->fd = socket(ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) < 0 ||
		setsockopt(h->fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) < 0 ||
		/* As evconnlistener_new_bind did: accepted connections inherit it. */
		setsockopt(h->fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
		(ss.ss_family == AF_INET6 ?
			setsockopt(h->fd, IPPROTO_IPV6, IPV6_FREEBIND, &one, sizeof(one)) :
			setsockopt(h->fd, IPPROTO_IP, IP_FREEBIND, &one, sizeof(one))) < 0 ||
		bind(h->fd, (struct sockaddr *)&ss, sl) < 0) {
		ret = -errno;
		snprintf(err, errlen, "%s", strerror(errno));
		goto out;
	}
	if (event_add(h->resume, &pause)) {
		ret = -ENOMEM;
		goto out;
	}
	*out = h;
	h = NULL;
	ret = 0;
out:
	http_close(&h);
	return ret;
}

int http_attach(struct http *h, struct enforce *enf, char *err, size_t errlen)
{
	const struct enforce_endpoint_hook hook = { reload_prepare, reload_finish, describe, h };
	char addr[ENDPOINT_ADDRLEN];

	if (!h)
		return 0;
	h->enf = enf;
	enforce_set_endpoint_hook(enf, &hook);
	/* Our listener, so that accepting can pause; evhttp frees it with itself. */
	if (!(h->lev = evconnlistener_new(h->base, NULL, NULL, LEV_OPT_CLOSE_ON_FREE |
		LEV_OPT_CLOSE_ON_EXEC, HTTP_BACKLOG, h->fd))) {
		int ret = -errno;

		snprintf(err, errlen, "%s", strerror(-ret));
		return ret;
	}
	h->fd = -1;
	if (!evhttp_bind_listener(h->eh, h->lev)) {
		evconnlistener_free(h->lev);
		h->lev = NULL;
		snprintf(err, errlen, "out of memory");
		return -ENOMEM;
	}
	evconnlistener_set_error_cb(h->lev, accept_error_cb);
	endpoint_address(h->l, addr, sizeof(addr));
	log_info("controller endpoint on %s (%s)", addr, h->l->insecure_plaintext ?
		"plain HTTP, loopback only" :
		h->l->client_ca ? "HTTPS, mutual TLS" : "HTTPS");
	return 0;
}

void http_close(struct http **hp)
{
	struct http *h = *hp;

	if (!h)
		return;
	/* Answers still owed go nowhere: evhttp is about to free their requests. */
	struct submission *s;

	LIST_FOREACH(s, &h->waiting, entry)
		s->req = NULL;
	LIST_INIT(&h->waiting);
	/*
	 * evhttp frees the listener and the connections (conn_gone then only counts, stream_gone
	 * drops the statuses being sent).
	 */
	h->closing = true;
	if (h->enf)
		enforce_set_endpoint_hook(h->enf, NULL);
	if (h->eh)
		evhttp_free(h->eh);
	/* evhttp_free closed every connection, and each close dropped its deadline. */
	while (!LIST_EMPTY(&h->deadlines))
		deadline_free(h, LIST_FIRST(&h->deadlines)->evcon);
	connshare_free(&h->share);
	if (h->resume)
		event_free(h->resume);
	if (h->adopt)
		event_free(h->adopt);
	if (h->cert_timer)
		event_free(h->cert_timer);
	if (h->fd >= 0)
		close(h->fd);
	for (size_t i = 0; i < h->n_pending; i++)
		bufferevent_decref(h->pending[i]);
	free(h->pending);
	served_tls_clear(&h->tls);
	served_tls_clear(&h->next);
	ratelimit_free(&h->rl);
	free(h);
	*hp = NULL;
}
