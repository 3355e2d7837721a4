#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/err.h"
#include "common/proto.h"

static int decode(const char *buf, size_t len, size_t max, json_t **out, struct jit_error *e)
{
	char shown[JIT_SHOWN_LEN];
	json_error_t jerr;
	json_t *v;

	*out = NULL;
	if (len && buf[len - 1] == '\n')
		len--;
	if (len > max)
		return jit_fail(e, JIT_ERR_TOO_LARGE, "message of %zu bytes exceeds %zu", len, max);
	/* Duplicates refused so that {"op":"status","op":"submit"} cannot mean two things. */
	v = json_loadb(buf, len, JSON_REJECT_DUPLICATES, &jerr);
	/* jansson quotes the input near the error: a client's bytes, shown as jit_shown shows. */
	if (!v)
		return jit_fail(e, JIT_ERR_BAD_REQUEST, "not JSON: %s at offset %d",
			jit_shown(jerr.text, shown), jerr.position);
	if (!json_is_object(v)) {
		json_decref(v);
		return jit_fail(e, JIT_ERR_BAD_REQUEST, "message is not a JSON object");
	}
	*out = v;
	return 0;
}

int proto_decode(const char *buf, size_t len, json_t **out, struct jit_error *e)
{
	return decode(buf, len, PROTO_MAX_MESSAGE, out, e);
}

char *proto_encode(const json_t *msg)
{
	char *body = json_dumps(msg, JSON_COMPACT), *line;
	size_t n;

	if (!body)
		return NULL;
	n = strlen(body);
	line = realloc(body, n + 2);
	if (!line) {
		free(body);
		return NULL;
	}
	line[n] = '\n';
	line[n + 1] = '\0';
	return line;
}

json_t *proto_error(int code, const char *msg)
{
	char buf[1024];

	return json_pack("{s:b, s:s, s:s}", "ok", 0, "error", jit_err_name(code), "message",
		msg ? proto_text(msg, buf, sizeof(buf)) : "");
}

const char *proto_text(const char *s, char *buf, size_t len)
{
	json_t *valid = json_string(s);
	size_t j = 0;

	if (valid) {
		json_decref(valid);
		return s;
	}
	for (size_t i = 0; s[i] && j < len - 1; i++)
		buf[j++] = (unsigned char)s[i] < 0x80 ? s[i] : '?';
	buf[j] = '\0';
	return buf;
}

int proto_put_string(const char *s, json_dump_callback_t put, void *arg)
{
	/* The two-character escapes jansson uses; every other control character is \u00XX. */
	static const char two[0x20] = { ['\b'] = 'b', ['\f'] = 'f', ['\n'] = 'n', ['\r'] = 'r',
		['\t'] = 't' };
	static const char hex[] = "0123456789ABCDEF";
	const char *run = s;

	if (!s)
		return put("null", 4, arg);
	if (put("\"", 1, arg))
		return -1;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		char esc[6] = { '\\', (char)c, '0', '0', 0, 0 };
		size_t n = 2;

		if (c >= 0x20 && c != '"' && c != '\\')
			continue;
		if (c < 0x20 && two[c]) {
			esc[1] = two[c];
		} else if (c < 0x20) {
			esc[1] = 'u';
			esc[4] = hex[c >> 4];
			esc[5] = hex[c & 15];
			n = 6;
		}
		if ((s > run && put(run, (size_t)(s - run), arg)) || put(esc, n, arg))
			return -1;
		run = s + 1;
	}
	if (s > run && put(run, (size_t)(s - run), arg))
		return -1;
	return put("\"", 1, arg);
}

int proto_time_format(int64_t secs, char *buf, size_t len)
{
	time_t t = (time_t)secs;
	struct tm tm;

	if (len < PROTO_TIME_LEN || !gmtime_r(&t, &tm))
		return -1;
	return strftime(buf, len, "%Y-%m-%dT%H:%M:%SZ", &tm) ? 0 : -1;
}

/* Waits for events on fd until the shared deadline; -ETIMEDOUT once it has passed. */
static int wait_fd(int fd, short events, int64_t deadline)
{
	struct pollfd p = { .fd = fd, .events = events };
	int64_t left;
	int r;

	for (;;) {
		left = deadline - clock_mono_us() / 1000;
		if (left <= 0)
			return -ETIMEDOUT;
		r = poll(&p, 1, (int)left);
		if (r > 0)
			return 0;
		if (r == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int send_all(int fd, const char *buf, size_t len, int64_t deadline)
{
	while (len) {
		ssize_t w = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		int r;

		if (w > 0) {
			buf += w;
			len -= (size_t)w;
			continue;
		}
		if (w < 0 && errno == EINTR)
			continue;
		if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if ((r = wait_fd(fd, POLLOUT, deadline)))
			return r;
	}
	return 0;
}

/*
 * Reads up to the first newline, and sets *nl to it (NULL if there is none); the agent closes
 * after one reply, so EOF also ends it. Each byte is searched once: a status is tens of MB.
 */
static int recv_line(int fd, char **out, size_t *outlen, char **nl, int64_t deadline)
{
	size_t cap = 4096, len = 0, scanned = 0;
	char *buf = malloc(cap), *tmp;
	int ret = 0;

	*nl = NULL;
	if (!buf)
		return -ENOMEM;
	for (;;) {
		ssize_t r;

		if ((*nl = memchr(buf + scanned, '\n', len - scanned)))
			break;
		scanned = len;
		if (len == cap) {
			/* Up to the limit and its newline, not the next power of two (512 MiB). */
			size_t grown = cap * 2 > PROTO_MAX_REPLY + 1 ? PROTO_MAX_REPLY + 1 :
				cap * 2;

			if (cap > PROTO_MAX_REPLY) {
				ret = -EMSGSIZE;
				goto out;
			}
			tmp = realloc(buf, grown);
			if (!tmp) {
				ret = -ENOMEM;
				goto out;
			}
			buf = tmp;
			cap = grown;
		}
		r = recv(fd, buf + len, cap - len, MSG_DONTWAIT);
		if (r > 0) {
			len += (size_t)r;
			continue;
		}
		if (r == 0) {
			if (!len)
				ret = -EPROTO; /* closed without a reply */
			break;
		}
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK) {
			ret = -errno;
			goto out;
		}
		if ((ret = wait_fd(fd, POLLIN, deadline)))
			goto out;
	}
out:
	if (ret) {
		free(buf);
		return ret;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

/*
 * A stream socket connected to the Unix socket at path (flags: SOCK_NONBLOCK or 0); -errno.
 * Blocking, a connect waits while the listener's backlog is full (an agent whose loop stalls):
 * until deadline (ms, clock_mono_us's; 0: none), then -ETIMEDOUT.
 */
static int unix_connect(const char *path, int flags, int64_t deadline, int *out)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int64_t left = deadline - clock_mono_us() / 1000;
	struct timeval tv = { (time_t)(left / 1000), (suseconds_t)(left % 1000 * 1000) };
	int fd, ret = 0;

	*out = -1;
	if (strlen(path) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, path, strlen(path) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | flags, 0)) < 0)
		return -errno;
	/* The kernel waits for room in the backlog up to the send timeout (unix_stream_connect). */
	if (deadline && (left <= 0 ||
		setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) < 0)) {
		ret = left <= 0 ? -ETIMEDOUT : -errno;
		close(fd);
		return ret;
	}
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
		ret = deadline && errno == EAGAIN ? -ETIMEDOUT : -errno;
		close(fd);
		return ret;
	}
	*out = fd;
	return 0;
}

int proto_listening(const char *path)
{
	int fd, ret = unix_connect(path, SOCK_NONBLOCK, 0, &fd);

	if (!ret)
		close(fd);
	/* A full backlog is a listener too. */
	if (!ret || ret == -EAGAIN)
		return 1;
	return ret == -ECONNREFUSED || ret == -ENOENT ? 0 : ret;
}

int proto_lock_path(const char *socket_path, char *buf, size_t len)
{
	int n = snprintf(buf, len, "%s.lock", socket_path);

	return n < 0 || (size_t)n >= len ? -ENAMETOOLONG : 0;
}

int proto_lock_held(const char *socket_path)
{
	char path[4096];
	int fd, ret;

	if ((ret = proto_lock_path(socket_path, path, sizeof(path))))
		return ret;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW)) < 0)
		return errno == ENOENT ? 0 : -errno;
	ret = flock(fd, LOCK_SH | LOCK_NB) == 0 ? 0 : errno == EWOULDBLOCK ? 1 : -errno;
	close(fd);
	return ret;
}

/*
 * After the reply's line, the agent closes: whatever comes before that and the deadline (a
 * second line, a byte) is a broken agent or not jitd (-EPROTO). The reply is whole: a close
 * that the deadline does not see is no failure of the call.
 */
static int recv_eof(int fd, int64_t deadline)
{
	char c;
	ssize_t r;
	int ret;

	for (;;) {
		if ((r = recv(fd, &c, 1, MSG_DONTWAIT)) > 0)
			return -EPROTO;
		/* A reset after the whole reply still ends it: nothing more came. */
		if (r == 0 || errno == ECONNRESET)
			return 0;
		if (errno == EINTR)
			continue;
		if (errno != EAGAIN && errno != EWOULDBLOCK)
			return -errno;
		if ((ret = wait_fd(fd, POLLIN, deadline)))
			return ret == -ETIMEDOUT ? 0 : ret;
	}
}

int proto_call_line(const char *path, const json_t *request, char **line, size_t *len)
{
	int64_t deadline = clock_mono_us() / 1000 + PROTO_TIMEOUT_MS;
	char *text = NULL, *buf = NULL, *nl;
	size_t n = 0;
	int fd = -1, ret;

	*line = NULL;
	*len = 0;
	if (!(text = proto_encode(request)))
		return -ENOMEM;
	if ((ret = unix_connect(path, 0, deadline, &fd)))
		goto out;
	if ((ret = send_all(fd, text, strlen(text), deadline)))
		goto out;
	if ((ret = recv_line(fd, &buf, &n, &nl, deadline)))
		goto out;
	/* One request, one reply: anything after the line is a broken agent. */
	if (nl && (size_t)(nl - buf) + 1 != n)
		ret = -EPROTO;
	else if (nl)
		ret = recv_eof(fd, deadline);
	if (ret)
		goto out;
	if (n > PROTO_MAX_REPLY + 1) {
		ret = -EMSGSIZE;
		goto out;
	}
	*line = buf;
	*len = n;
	buf = NULL;
out:
	if (fd >= 0)
		close(fd);
	free(text);
	free(buf);
	return ret;
}

int proto_decode_reply(const char *line, size_t len, json_t **reply)
{
	return decode(line, len, PROTO_MAX_REPLY, reply, NULL) ? -EPROTO : 0;
}

int proto_call(const char *path, const json_t *request, json_t **reply)
{
	char *line;
	size_t len;
	int ret;

	*reply = NULL;
	if ((ret = proto_call_line(path, request, &line, &len)))
		return ret;
	ret = proto_decode_reply(line, len, reply);
	free(line);
	return ret;
}
