#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

#include "agent/ctl.h"
#include "agent/enforce.h"
#include "agent/status.h"
#include "common/err.h"
#include "common/log.h"
#include "common/proto.h"

struct ctl {
	struct evconnlistener *lev;
	struct enforce *enf;
	char path[sizeof(((struct sockaddr_un *)0)->sun_path)];
};

struct client {
	struct ctl *ctl;
	struct bufferevent *bev;
	char peer[64];
};

static void client_free(struct client *c)
{
	bufferevent_free(c->bev);
	free(c);
}

/* Close once the reply has left: the protocol is one request per connection. */
static void ctl_written_cb(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		client_free(arg);
}

static void reply(struct client *c, json_t *msg)
{
	char *text = msg ? proto_encode(msg) : NULL;

	bufferevent_disable(c->bev, EV_READ);
	bufferevent_setcb(c->bev, NULL, ctl_written_cb, NULL, c);
	if (!text || bufferevent_write(c->bev, text, strlen(text)) < 0) {
		free(text);
		json_decref(msg);
		client_free(c);
		return;
	}
	free(text);
	json_decref(msg);
}

static json_t *do_submit(struct client *c, json_t *req)
{
	const json_t *tok = json_object_get(req, "token");
	struct jit_error err = { 0 };
	const struct grant *g;
	int ret;

	if (!json_is_string(tok))
		return proto_error(JIT_ERR_BAD_REQUEST, "submit needs a \"token\" string");
	/* The JSON length, not strlen: a "\u0000" must not cut trailing garbage off the token. */
	ret = enforce_submit(c->ctl->enf, json_string_value(tok), json_string_length(tok), c->peer,
		&g, &err);
	if (ret)
		return proto_error(ret, err.msg);
	return json_pack("{s:b, s:o}", "ok", 1, "grant", status_grant_json(c->ctl->enf, g));
}

static json_t *dispatch(struct client *c, json_t *req)
{
	const char *op = json_string_value(json_object_get(req, "op"));

	if (!op)
		return proto_error(JIT_ERR_BAD_REQUEST, "request needs an \"op\" string");
	if (!strcmp(op, "submit"))
		return do_submit(c, req);
	if (!strcmp(op, "status"))
		return json_pack("{s:b, s:o}", "ok", 1, "status", status_build(c->ctl->enf));
	return proto_error(JIT_ERR_BAD_REQUEST, "unknown op");
}

static void ctl_read_cb(struct bufferevent *bev, void *arg)
{
	struct client *c = arg;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct jit_error err = { 0 };
	json_t *req = NULL;
	size_t len;
	char *line = evbuffer_readln(in, &len, EVBUFFER_EOL_LF);

	if (!line) {
		if (evbuffer_get_length(in) > PROTO_MAX_MESSAGE)
			reply(c, proto_error(JIT_ERR_TOO_LARGE, "request exceeds 64 KiB"));
		return;
	}
	if (proto_decode(line, len, &req, &err))
		reply(c, proto_error(err.code, err.msg));
	else
		reply(c, dispatch(c, req));
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

static void peer_name(int fd, char *buf, size_t len)
{
	struct ucred cred;
	socklen_t sl = sizeof(cred);

	if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &sl) == 0)
		snprintf(buf, len, "uid=%u pid=%d", cred.uid, cred.pid);
	else
		snprintf(buf, len, "unknown");
}

static void ctl_accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
	int salen, void *arg)
{
	struct timeval tv = { PROTO_TIMEOUT_MS / 1000, 0 };
	struct client *c = calloc(1, sizeof(*c));

	if (!c) {
		close(fd);
		return;
	}
	c->ctl = arg;
	peer_name(fd, c->peer, sizeof(c->peer));
	c->bev = bufferevent_socket_new(evconnlistener_get_base(lev), fd, BEV_OPT_CLOSE_ON_FREE);
	if (!c->bev) {
		close(fd);
		free(c);
		return;
	}
	bufferevent_setcb(c->bev, ctl_read_cb, NULL, ctl_event_cb, c);
	bufferevent_set_timeouts(c->bev, &tv, &tv);
	bufferevent_enable(c->bev, EV_READ);
}

static void ctl_error_cb(struct evconnlistener *lev, void *arg)
{
	/* EMFILE and friends: the listener keeps running; the next accept may succeed. */
	log_warn("control: accept: %s", strerror(errno));
}

/* A live agent answering on path means this one must not steal its socket. */
static int claim_path(const char *path, const struct sockaddr_un *sun)
{
	struct stat st;
	int fd, ret;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode))
		return -EEXIST;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = connect(fd, (const struct sockaddr *)sun, sizeof(*sun));
	close(fd);
	if (ret == 0)
		return -EADDRINUSE;
	return unlink(path) < 0 ? -errno : 0;
}

int ctl_open(struct event_base *base, const char *path, struct enforce *enf, struct ctl **out)
{
	struct sockaddr_un sun = { .sun_family = AF_UNIX };
	struct ctl *c;
	mode_t old;
	int ret;

	*out = NULL;
	if (strlen(path) >= sizeof(sun.sun_path))
		return -ENAMETOOLONG;
	strcpy(sun.sun_path, path);
	if ((ret = claim_path(path, &sun)))
		return ret;
	c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->enf = enf;
	strcpy(c->path, path);
	/* Created 0660 from the start: no window in which others could connect. */
	old = umask(0117);
	c->lev = evconnlistener_new_bind(base, ctl_accept_cb, c,
		LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 16, (struct sockaddr *)&sun,
		sizeof(sun));
	ret = c->lev ? 0 : -errno;
	umask(old);
	if (ret) {
		free(c);
		return ret ? ret : -EIO;
	}
	evconnlistener_set_error_cb(c->lev, ctl_error_cb);
	*out = c;
	return 0;
}

void ctl_close(struct ctl **c)
{
	if (!c || !*c)
		return;
	evconnlistener_free((*c)->lev);
	(void)unlink((*c)->path);
	free(*c);
	*c = NULL;
}
