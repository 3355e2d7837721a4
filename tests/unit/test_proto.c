#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/err.h"
#include "common/proto.h"

static void decodes(const char *text)
{
	struct jit_error e = { 0 };
	json_t *v = NULL;

	if (proto_decode(text, strlen(text), &v, &e))
		fail_msg("'%s' refused: %s", text, e.msg);
	assert_true(json_is_object(v));
	json_decref(v);
}

static void refused(const char *text, size_t len, int code)
{
	struct jit_error e = { 0 };
	json_t *v = (json_t *)1;

	assert_int_equal(proto_decode(text, len, &v, &e), code);
	assert_int_equal(e.code, code);
	assert_null(v);
	assert_true(e.msg[0] != '\0');
}

static void test_decode(void **state)
{
	static const char *const bad[] = {
		"", "\n", "[]", "\"op\"", "42", "null", "{", "{\"op\":\"status\"} x",
		"{\"op\":\"status\",\"op\":\"submit\"}",
	};

	decodes("{\"op\":\"status\"}");
	decodes("{\"op\":\"status\"}\n");
	decodes("{}");
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		refused(bad[i], strlen(bad[i]), JIT_ERR_BAD_REQUEST);
	/* An embedded NUL ends nothing: the declared length is parsed, and it is not JSON. */
	refused("{}\0{}", 5, JIT_ERR_BAD_REQUEST);
}

/*
 * jansson quotes the input near an error, and a JSON string may hold any UTF-8 but C0: the C1
 * CSI (U+009B) moves a terminal's cursor. The refusal, logged and audited, shows none of it.
 */
static void test_decode_error_shown(void **state)
{
	static const char csi[] = "\"\xc2\x9b" "1F\xc2\x9b" "2K\"";
	struct jit_error e = { 0 };
	json_t *v = NULL;

	(void)state;
	assert_int_equal(proto_decode(csi, sizeof(csi) - 1, &v, &e), JIT_ERR_BAD_REQUEST);
	assert_null(v);
	assert_non_null(strstr(e.msg, "not JSON: "));
	for (const char *p = e.msg; *p; p++)
		if (*p < 0x20 || *p >= 0x7f)
			fail_msg("byte 0x%02x in the refusal: %s", (unsigned char)*p, e.msg);
}

static void test_decode_size(void **state)
{
	size_t n = PROTO_MAX_MESSAGE + 1;
	char *big = malloc(n + 1);

	assert_non_null(big);
	/* {"t":"aaaa..."} exactly one byte over the limit, then exactly at it. */
	memset(big, 'a', n);
	memcpy(big, "{\"t\":\"", 6);
	memcpy(big + n - 2, "\"}", 2);
	refused(big, n, JIT_ERR_TOO_LARGE);
	memcpy(big + n - 3, "\"}", 2);
	{
		struct jit_error e = { 0 };
		json_t *v = NULL;

		assert_int_equal(proto_decode(big, n - 1, &v, &e), 0);
		json_decref(v);
		/* ... and the trailing newline does not count. */
		big[n - 1] = '\n';
		assert_int_equal(proto_decode(big, n, &v, &e), 0);
		json_decref(v);
	}
	free(big);
}

static void test_encode_error(void **state)
{
	json_t *err = proto_error(JIT_ERR_SOURCE_NOT_ALLOWED, "source 203.0.113.9 is outside"), *back;
	struct jit_error e = { 0 };
	char *text;

	assert_non_null(err);
	text = proto_encode(err);
	assert_non_null(text);
	assert_string_equal(text, "{\"ok\":false,\"error\":\"source_not_allowed\","
				  "\"message\":\"source 203.0.113.9 is outside\"}\n");
	assert_int_equal(proto_decode(text, strlen(text), &back, &e), 0);
	assert_true(json_equal(err, back));
	json_decref(back);
	json_decref(err);
	free(text);
}

/*
 * A message that is not UTF-8 (a value cut inside a character, a path) still makes an error
 * reply: without one the control socket closed without a word.
 */
static void test_error_not_utf8(void **state)
{
	json_t *err = proto_error(JIT_ERR_BAD_CONFIG, "deny_action: 'a\xc3' in /etc/\xff.json");
	char buf[8];

	assert_non_null(err);
	assert_string_equal(json_string_value(json_object_get(err, "message")),
		"deny_action: 'a?' in /etc/?.json");
	assert_string_equal(json_string_value(json_object_get(err, "error")), "bad_config");
	json_decref(err);
	/* Valid text as it is, whatever its length; the ASCII copy cut to its buffer. */
	assert_string_equal(proto_text("caf\xc3\xa9 au lait", buf, sizeof(buf)),
		"caf\xc3\xa9 au lait");
	assert_string_equal(proto_text("caf\xc3 au lait", buf, sizeof(buf)), "caf? au");
}

/*
 * A one-shot server in a child: accepts one connection, reads one line, sends reply bytes,
 * and then, when late is not NULL, those a moment later (in a write of their own).
 */
struct server {
	char path[108];
	char dir[64];
	pid_t pid;
};

static void server_start(struct server *s, const char *reply, size_t len, const char *late)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd;

	strcpy(s->dir, "/tmp/jitd-test-proto-XXXXXX");
	assert_non_null(mkdtemp(s->dir));
	snprintf(s->path, sizeof(s->path), "%s/sock", s->dir);
	strcpy(sa.sun_path, s->path);
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	assert_true(fd >= 0);
	assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(fd, 1), 0);
	s->pid = fork();
	assert_true(s->pid >= 0);
	if (s->pid == 0) {
		char buf[4096];
		int c = accept(fd, NULL, NULL);
		ssize_t r;

		alarm(20); /* never outlive a broken test */
		while ((r = read(c, buf, sizeof(buf))) > 0 && !memchr(buf, '\n', (size_t)r))
			;
		if (len)
			(void)!write(c, reply, len);
		if (late) {
			usleep(200000);
			(void)!write(c, late, strlen(late));
		}
		_exit(0);
	}
	close(fd);
}

static void server_stop(struct server *s)
{
	int st;

	assert_int_equal(waitpid(s->pid, &st, 0), s->pid);
	assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
	unlink(s->path);
	rmdir(s->dir);
}

static int call_with_late(const char *reply, size_t len, const char *late, json_t **out)
{
	json_t *req = json_pack("{s:s}", "op", "status");
	struct server s;
	int ret;

	server_start(&s, reply, len, late);
	ret = proto_call(s.path, req, out);
	server_stop(&s);
	json_decref(req);
	return ret;
}

static int call_with_reply(const char *reply, size_t len, json_t **out)
{
	return call_with_late(reply, len, NULL, out);
}

static void test_call(void **state)
{
	static const char ok[] = "{\"ok\":true,\"status\":{}}\n";
	json_t *rep = NULL;

	assert_int_equal(call_with_reply(ok, strlen(ok), &rep), 0);
	assert_true(json_is_true(json_object_get(rep, "ok")));
	json_decref(rep);
	/* The agent closing after the reply without a newline is still a reply. */
	assert_int_equal(call_with_reply(ok, strlen(ok) - 1, &rep), 0);
	json_decref(rep);
	assert_int_equal(call_with_reply("", 0, &rep), -EPROTO);
	assert_null(rep);
	assert_int_equal(call_with_reply("nonsense\n", 9, &rep), -EPROTO);
	assert_int_equal(call_with_reply("[1]\n", 4, &rep), -EPROTO);
	assert_int_equal(call_with_reply("{}\n{}\n", 6, &rep), -EPROTO);
	assert_null(rep);
	/* Also when what follows the line comes in a write of its own, before the close. */
	assert_int_equal(call_with_late(ok, strlen(ok), "{}\n", &rep), -EPROTO);
	assert_null(rep);
}

static void test_call_unreachable(void **state)
{
	char longpath[200];
	json_t *req = json_pack("{s:s}", "op", "status"), *rep = (json_t *)1;

	assert_int_equal(proto_call("/nonexistent/jitd.sock", req, &rep), -ENOENT);
	assert_null(rep);
	memset(longpath, 'x', sizeof(longpath) - 1);
	longpath[0] = '/';
	longpath[sizeof(longpath) - 1] = '\0';
	assert_int_equal(proto_call(longpath, req, &rep), -ENAMETOOLONG);
	json_decref(req);
}

/*
 * An agent whose loop stalls stops accepting, and its backlog fills: a client's connect then
 * waits for room, which the exchange's deadline must bound too (10 s here).
 */
static void test_call_backlog_full(void **state)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char dir[] = "/tmp/jitd-test-proto.XXXXXX";
	json_t *req = json_pack("{s:s}", "op", "status"), *rep = (json_t *)1;
	int lfd, cfd;

	assert_non_null(mkdtemp(dir));
	snprintf(sa.sun_path, sizeof(sa.sun_path), "%s/s", dir);
	assert_true((lfd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0)) >= 0);
	assert_int_equal(bind(lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(listen(lfd, 0), 0);
	/* Never accepted: with a backlog of 0, one waiting connection fills it. */
	assert_true((cfd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0)) >= 0);
	assert_int_equal(connect(cfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
	assert_int_equal(proto_call(sa.sun_path, req, &rep), -ETIMEDOUT);
	assert_null(rep);
	close(cfd);
	close(lfd);
	unlink(sa.sun_path);
	rmdir(dir);
	json_decref(req);
}

struct sbuf {
	char b[4096];
	size_t n;
};

static int sbuf_put(const char *buf, size_t len, void *arg)
{
	struct sbuf *s = arg;

	if (s->n + len >= sizeof(s->b))
		return -1;
	memcpy(s->b + s->n, buf, len);
	s->n += len;
	s->b[s->n] = '\0';
	return 0;
}

/* proto_put_string prints what jansson's dump of the same string prints, byte for byte. */
static void same_as_jansson(const char *text)
{
	json_t *v = json_string(text);
	char *want = json_dumps(v, JSON_COMPACT | JSON_ENCODE_ANY);
	struct sbuf got = { .n = 0 };

	assert_non_null(want);
	assert_int_equal(proto_put_string(text, sbuf_put, &got), 0);
	assert_string_equal(got.b, want);
	free(want);
	json_decref(v);
}

static void test_put_string(void **state)
{
	static const char *const fixed[] = { "", "plain", "a\"quote", "back\\slash", "/slash/",
		"\b\f\n\r\t", "del\x7f", "caf\xc3\xa9", "\xe2\x82\xac", "\xf0\x9f\x98\x80 smile",
		"\"\"\\\\", "end\x1f", "\x01start" };
	struct sbuf got = { .n = 0 };
	char s[64];

	(void)state;
	for (size_t i = 0; i < sizeof(fixed) / sizeof(fixed[0]); i++)
		same_as_jansson(fixed[i]);
	/* Every byte below 0x80 alone, then in bounded pseudo-random mixtures. */
	for (int c = 1; c < 0x80; c++) {
		snprintf(s, sizeof(s), "x%cy", c);
		same_as_jansson(s);
	}
	srand(6);
	for (int round = 0; round < 2000; round++) {
		size_t n = (size_t)(rand() % 40);

		for (size_t i = 0; i < n; i++)
			s[i] = (char)(1 + rand() % 0x7f);
		s[n] = '\0';
		same_as_jansson(s);
	}
	assert_int_equal(proto_put_string(NULL, sbuf_put, &got), 0);
	assert_string_equal(got.b, "null");
	/* A writer's failure is the caller's to see. */
	got.n = sizeof(got.b) - 2;
	assert_int_equal(proto_put_string("long enough to overflow", sbuf_put, &got), -1);
}

/* RFC 3339 in UTC to the second; a buffer too short or a time gmtime cannot take is refused. */
static void test_time_format(void **state)
{
	char buf[PROTO_TIME_LEN];

	(void)state;
	assert_int_equal(proto_time_format(1800000000, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "2027-01-15T08:00:00Z");
	assert_int_equal(proto_time_format(0, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "1970-01-01T00:00:00Z");
	assert_int_equal(proto_time_format(-1, buf, sizeof(buf)), 0);
	assert_string_equal(buf, "1969-12-31T23:59:59Z");
	assert_int_equal(proto_time_format(1800000000, buf, 20), -1);
	assert_int_equal(proto_time_format(INT64_MAX, buf, sizeof(buf)), -1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_decode),
		cmocka_unit_test(test_decode_error_shown),
		cmocka_unit_test(test_decode_size),
		cmocka_unit_test(test_encode_error),
		cmocka_unit_test(test_error_not_utf8),
		cmocka_unit_test(test_put_string),
		cmocka_unit_test(test_time_format),
		cmocka_unit_test(test_call),
		cmocka_unit_test(test_call_unreachable),
		cmocka_unit_test(test_call_backlog_full),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
