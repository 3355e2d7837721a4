#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/store.h"
#include "common/grant.h"
#include "common/port.h"
#include "common/prefix.h"

struct fixture {
	char dir[64];
};

/* The tests' made-up records stay out of the host's syslog. */
static const struct audit_opts quiet = { .no_syslog = true };

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_audit.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char path[128];

	for (int i = 0; i <= 10; i++) {
		if (i)
			snprintf(path, sizeof(path), "%s/audit.jsonl.%d", f->dir, i);
		else
			snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
		unlink(path);
	}
	rmdir(f->dir);
	free(f);
	return 0;
}

static void test_grant_record(void **state)
{
	struct fixture *f = *state;
	struct prefix src;
	struct port_spec port = { .port = 22, .proto = PORT_PROTO_TCP };
	char jti[] = "g-1", iss[] = "ctl", sub[] = "alice", kid[] = "k1", reason[] = "INC-1";
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .reason = reason,
		.exp = 1800000000, .src = &src, .n_src = 1, .ports = &port, .n_ports = 1 };
	const struct audit_rec rec = { .event = "grant.applied", .grant = &g,
		.peer = "uid=0 pid=1 user=root", .count = -1 };
	struct audit *a;
	bool trunc = true;
	json_t *ev, *all;
	struct stat st;
	char path[128];

	assert_int_equal(prefix_parse("192.0.2.0/24", &src), 0);
	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	assert_int_equal(audit_log(a, &rec), 0);
	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0640);
	all = audit_query(a, &(struct audit_filter){ 0 }, 10, &trunc);
	assert_non_null(all);
	assert_false(trunc);
	assert_int_equal(json_array_size(all), 1);
	ev = json_array_get(all, 0);
	assert_string_equal(json_string_value(json_object_get(ev, "event")), "grant.applied");
	assert_string_equal(json_string_value(json_object_get(ev, "grant")), "g-1");
	assert_string_equal(json_string_value(json_object_get(ev, "sub")), "alice");
	assert_string_equal(json_string_value(json_object_get(ev, "kid")), "k1");
	assert_string_equal(json_string_value(json_object_get(ev, "reason")), "INC-1");
	assert_string_equal(json_string_value(json_array_get(json_object_get(ev, "sources"), 0)),
		"192.0.2.0/24");
	assert_string_equal(json_string_value(json_array_get(json_object_get(ev, "ports"), 0)),
		"22/tcp");
	assert_string_equal(json_string_value(json_object_get(ev, "expires_at")),
		"2027-01-15T08:00:00Z");
	assert_null(json_object_get(ev, "count"));
	assert_null(json_object_get(ev, "code"));
	json_decref(all);
	audit_close(&a);
	assert_null(a);
}

/* The last n lines of the trail, each parsed: a line that is not one JSON object fails. */
static json_t *read_lines(const char *dir, size_t n)
{
	json_t *all = json_array();
	char path[128], *buf = malloc(1 << 20);
	FILE *fp;

	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	assert_non_null(fp = fopen(path, "r"));
	assert_non_null(buf);
	while (fgets(buf, 1 << 20, fp)) {
		json_error_t err;
		json_t *o;

		assert_int_equal(buf[strlen(buf) - 1], '\n');
		o = json_loads(buf, JSON_REJECT_DUPLICATES, &err);
		if (!o)
			fail_msg("not a JSON line (%s): %s", err.text, buf);
		assert_true(json_is_object(o));
		json_array_append_new(all, o);
	}
	fclose(fp);
	free(buf);
	assert_int_equal(json_array_size(all), n);
	return all;
}

/*
 * Records are printed by hand, not dumped by jansson: each line read back must be the object
 * the record describes, with hostile strings (quotes, backslashes, control characters, UTF-8,
 * bytes that are not UTF-8), a gateway grant, a record larger than the first block, and absent
 * members left out.
 */
static void test_line_as_jansson(void **state)
{
	struct fixture *f = *state;
	struct prefix src[2], dst;
	struct port_spec ports[2] = { { .port = 22, .proto = PORT_PROTO_TCP },
		{ .port = 3389, .proto = PORT_PROTO_UDP } };
	uint16_t gw[2] = { 40001, 40002 };
	char jti[] = "g\"1\\\n\t\x01/", iss[] = "ctl", sub[] = "Zo\xc3\xab \xe2\x9c\x93",
		kid[] = "k1", reason[] = "INC-1 \x7f</script> \xf0\x9f\x94\x91";
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .reason = reason,
		.exp = 1800000000, .src = src, .n_src = 2, .ports = ports, .n_ports = 2,
		.dst = &dst, .n_dst = 1, .dnat_ports = gw, .n_dnat_ports = 2 };
	struct grant bare = { .jti = jti, .exp = 1800000000, .src = src, .n_src = 1,
		.ports = ports, .n_ports = 1 };
	char *big = malloc(5001);
	json_t *want[4], *got;
	int64_t t0 = (int64_t)time(NULL), t1;
	struct audit *a;

	assert_non_null(big);
	memset(big, 'x', 5000);
	big[5000] = '\0';
	big[100] = '"';
	assert_int_equal(prefix_parse("192.0.2.0/24", &src[0]), 0);
	assert_int_equal(prefix_parse("2001:db8::1", &src[1]), 0);
	assert_int_equal(prefix_parse("10.0.0.5", &dst), 0);
	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.applied", .grant = &g,
		.peer = "uid=0 pid=1 user=root", .count = -1 }), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.refused",
		.grant_id = "id-2", .peer = "uid=7 pid=2 user=\xff\xfe", .code = "E_X",
		.message = "bad \xc3\x28 token\nnext", .count = 0 }), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.expired",
		.grant = &bare, .message = big, .count = 9223372036854775807LL }), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "agent.started",
		.count = -1 }), 0);
	t1 = (int64_t)time(NULL);
	audit_close(&a);

	want[0] = json_pack("{s:s, s:s, s:s, s:s, s:s, s:[s, s], s:[s, s], s:s, s:[s], s:[i, i],"
		" s:s, s:s}", "event", "grant.applied", "grant", jti, "sub", sub, "iss", iss,
		"kid", kid, "sources", "192.0.2.0/24", "2001:db8::1", "ports", "22/tcp",
		"3389/udp", "expires_at", "2027-01-15T08:00:00Z", "destinations", "10.0.0.5",
		"gateway_ports", 40001, 40002, "reason", reason, "peer", "uid=0 pid=1 user=root");
	/* Not UTF-8: ASCII, '?' for each byte above 0x7f. */
	want[1] = json_pack("{s:s, s:s, s:s, s:s, s:s, s:i}", "event", "grant.refused",
		"grant", "id-2", "peer", "uid=7 pid=2 user=??", "code", "E_X", "message",
		"bad ?( token\nnext", "count", 0);
	want[2] = json_pack("{s:s, s:s, s:[s], s:[s], s:s, s:s, s:I}", "event", "grant.expired",
		"grant", jti, "sources", "192.0.2.0/24", "ports", "22/tcp", "expires_at",
		"2027-01-15T08:00:00Z", "message", big, "count", (json_int_t)9223372036854775807LL);
	want[3] = json_pack("{s:s}", "event", "agent.started");
	got = read_lines(f->dir, 4);
	for (size_t i = 0; i < 4; i++) {
		json_t *o = json_array_get(got, i);
		json_int_t ts = json_integer_value(json_object_get(o, "ts"));
		char stamp[32];
		time_t t = (time_t)ts;
		struct tm tm;

		assert_non_null(want[i]);
		assert_true(ts >= t0 && ts <= t1);
		assert_non_null(gmtime_r(&t, &tm));
		strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
		assert_string_equal(json_string_value(json_object_get(o, "time")), stamp);
		json_object_del(o, "time");
		json_object_del(o, "ts");
		if (!json_equal(o, want[i])) {
			char *g1 = json_dumps(o, JSON_COMPACT), *w1 = json_dumps(want[i], JSON_COMPACT);

			fail_msg("line %zu:\n got  %s\n want %s", i, g1, w1);
		}
		json_decref(want[i]);
	}
	json_decref(got);
	free(big);
}

static void test_filters_and_garbage(void **state)
{
	struct fixture *f = *state;
	struct audit *a;
	bool trunc;
	json_t *all;
	char path[128];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	fprintf(fp, "{\"ts\":100,\"event\":\"grant.applied\",\"grant\":\"old\",\"sub\":\"alice\"}\n"
		"not json\n");
	fclose(fp);
	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.refused",
		.grant_id = "x", .code = "expired", .message = "bad\nline\x01", .count = -1 }), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "flows.terminated",
		.grant_id = "y", .count = 3 }), 0);
	all = audit_query(a, &(struct audit_filter){ 0 }, 100, &trunc);
	assert_int_equal(json_array_size(all), 3); /* the garbage line is skipped */
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 1), "message")),
		"bad\nline\x01");
	assert_int_equal(json_integer_value(json_object_get(json_array_get(all, 2), "count")), 3);
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ .since = time(NULL) - 60 }, 100, &trunc);
	assert_int_equal(json_array_size(all), 2); /* "old" is before since */
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ .grant_id = "x" }, 100, &trunc);
	assert_int_equal(json_array_size(all), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "code")),
		"expired");
	json_decref(all);
	/* By user, by kind of event, and every member given must match. */
	all = audit_query(a, &(struct audit_filter){ .sub = "alice" }, 100, &trunc);
	assert_int_equal(json_array_size(all), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "grant")),
		"old");
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ .event = "flows.terminated" }, 100, &trunc);
	assert_int_equal(json_array_size(all), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "grant")),
		"y");
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ .event = "grant.applied", .sub = "alice",
		.grant_id = "old" }, 100, &trunc);
	assert_int_equal(json_array_size(all), 1);
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ .event = "grant.applied", .grant_id = "x" },
		100, &trunc);
	assert_int_equal(json_array_size(all), 0);
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ .sub = "alic" }, 100, &trunc);
	assert_int_equal(json_array_size(all), 0); /* exact, not a prefix */
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ 0 }, 2, &trunc);
	assert_true(trunc);
	assert_int_equal(json_array_size(all), 2);
	/* The newest two, still oldest first. */
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "grant")), "x");
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 1), "grant")), "y");
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ 0 }, 1, &trunc);
	assert_true(trunc);
	assert_int_equal(json_array_size(all), 1);
	assert_string_equal(json_string_value(json_object_get(json_array_get(all, 0), "grant")), "y");
	json_decref(all);
	all = audit_query(a, &(struct audit_filter){ 0 }, 3, &trunc);
	assert_false(trunc);
	assert_int_equal(json_array_size(all), 3);
	json_decref(all);
	audit_close(&a);
}

/*
 * The disk fills up in the middle of a line (a file size limit stands in for it: the kernel
 * writes what fits and no more): the line is refused and cut off, so that the next record
 * starts a line of its own and every line in the file is whole JSON.
 */
static void test_torn_line(void **state)
{
	struct fixture *f = *state;
	struct rlimit old, lim;
	struct audit *a;
	struct stat st;
	char path[128], line[1024];
	int lines = 0, ret;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.applied",
		.grant_id = "first", .count = -1 }), 0);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 20; /* less than a record */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	signal(SIGXFSZ, SIG_IGN);
	ret = audit_log(a, &(struct audit_rec){ .event = "grant.applied", .grant_id = "torn",
		.count = -1 });
	/* Restored before any assertion: a failure must not leave the next tests limited. */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(ret, -ENOSPC);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.refused",
		.grant_id = "torn", .code = "storage_full", .count = -1 }), 0);
	audit_close(&a);

	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp)) {
		json_t *j = json_loads(line, 0, NULL);

		assert_non_null(j);
		lines++;
		json_decref(j);
	}
	fclose(fp);
	assert_int_equal(lines, 2);
}

/* A trail a crash left mid-line: the first line after the start stands alone all the same. */
static void test_crash_left_a_fragment(void **state)
{
	static const char before[] = "{\"event\":\"grant.applied\",\"grant\":\"whole\"}\n"
		"{\"event\":\"grant.app";
	struct fixture *f = *state;
	char path[128], line[1024];
	json_t *last = NULL;
	struct audit *a;
	int lines = 0;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	fp = fopen(path, "w");
	assert_non_null(fp);
	assert_int_equal(fputs(before, fp) >= 0, 1);
	assert_int_equal(fclose(fp), 0);
	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "config.loaded",
		.count = -1 }), 0);
	audit_close(&a);

	fp = fopen(path, "r");
	assert_non_null(fp);
	while (fgets(line, sizeof(line), fp)) {
		json_decref(last);
		last = json_loads(line, 0, NULL);
		lines++;
	}
	fclose(fp);
	assert_int_equal(lines, 3); /* the whole line, the fragment alone, the new record */
	assert_non_null(last);
	assert_string_equal(json_string_value(json_object_get(last, "event")), "config.loaded");
	json_decref(last);
}

static void test_rotation(void **state)
{
	struct fixture *f = *state;
	const struct audit_opts o = { .max_bytes = 65536, .keep = 2, .no_syslog = true };
	char id[32], path[128];
	struct audit *a;
	bool trunc;
	json_t *all;
	struct stat st;

	assert_int_equal(audit_open(f->dir, &o, &a), 0);
	for (int i = 0; i < 2000; i++) {
		snprintf(id, sizeof(id), "g-%04d", i);
		assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.expired",
			.grant_id = id, .message = "padding padding padding padding padding",
			.count = -1 }), 0);
	}
	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	assert_int_equal(stat(path, &st), 0);
	assert_true(st.st_size <= 65536);
	snprintf(path, sizeof(path), "%s/audit.jsonl.2", f->dir);
	assert_int_equal(stat(path, &st), 0);
	snprintf(path, sizeof(path), "%s/audit.jsonl.3", f->dir);
	assert_int_not_equal(stat(path, &st), 0); /* keep = 2 */
	all = audit_query(a, &(struct audit_filter){ 0 }, 100000, &trunc);
	assert_true(json_array_size(all) < 2000);
	/* Oldest first across the files, and the newest event last. */
	assert_string_equal(json_string_value(json_object_get(
		json_array_get(all, json_array_size(all) - 1), "grant")), "g-1999");
	for (size_t i = 1; i < json_array_size(all); i++)
		assert_true(strcmp(json_string_value(json_object_get(json_array_get(all, i - 1),
			"grant")), json_string_value(json_object_get(json_array_get(all, i),
			"grant"))) < 0);
	json_decref(all);
	audit_close(&a);
}

/* name's whole content is want. */
static void assert_content(const char *name, const char *want)
{
	char buf[64] = "";
	FILE *fp = fopen(name, "r");

	assert_non_null(fp);
	assert_non_null(fgets(buf, sizeof(buf), fp));
	fclose(fp);
	assert_string_equal(buf, want);
}

/*
 * The files shift up into the lowest free place, and the oldest goes only when there is none:
 * a rotation tried again after one that failed halfway (it left a gap) must not remove one
 * more old file at each try. Here .2 is free: .1 moves there, .3 stays.
 */
static void test_rotation_fills_a_gap(void **state)
{
	struct fixture *f = *state;
	const struct audit_opts o = { .max_bytes = 65536, .keep = 3, .no_syslog = true };
	char id[32], one[128], two[128], three[128];
	struct audit *a;
	struct stat st;
	FILE *fp;
	int i;

	snprintf(one, sizeof(one), "%s/audit.jsonl.1", f->dir);
	snprintf(two, sizeof(two), "%s/audit.jsonl.2", f->dir);
	snprintf(three, sizeof(three), "%s/audit.jsonl.3", f->dir);
	assert_non_null(fp = fopen(one, "w"));
	fputs("one\n", fp);
	fclose(fp);
	assert_non_null(fp = fopen(three, "w"));
	fputs("three\n", fp);
	fclose(fp);
	assert_int_equal(audit_open(f->dir, &o, &a), 0);
	for (i = 0; i < 3000 && stat(two, &st) < 0; i++) {
		snprintf(id, sizeof(id), "g-%04d", i);
		assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.expired",
			.grant_id = id, .message = "padding padding padding padding padding",
			.count = -1 }), 0);
	}
	assert_int_equal(stat(two, &st), 0);
	assert_content(two, "one\n");
	assert_content(three, "three\n");
	audit_close(&a);
}

/*
 * A rotation that cannot rename (here audit.jsonl.1 is a directory with a file in it) fails
 * that line, and the next ones while it lasts; the trail goes on once it can rotate again,
 * rather than failing every line until a restart.
 */
static void test_rotation_fails_then_recovers(void **state)
{
	struct fixture *f = *state;
	const struct audit_opts o = { .max_bytes = 65536, .keep = 1, .no_syslog = true };
	char id[32], dir1[128], inside[160];
	struct audit *a;
	bool trunc, failed = false;
	json_t *all;
	int i, ret, fd;

	snprintf(dir1, sizeof(dir1), "%s/audit.jsonl.1", f->dir);
	snprintf(inside, sizeof(inside), "%s/x", dir1);
	assert_int_equal(mkdir(dir1, 0700), 0);
	assert_true((fd = open(inside, O_WRONLY | O_CREAT, 0600)) >= 0);
	close(fd);
	assert_int_equal(audit_open(f->dir, &o, &a), 0);
	for (i = 0; i < 2000 && !failed; i++) {
		snprintf(id, sizeof(id), "g-%04d", i);
		ret = audit_log(a, &(struct audit_rec){ .event = "grant.expired", .grant_id = id,
			.message = "padding padding padding padding padding", .count = -1 });
		failed = ret != 0;
	}
	assert_true(failed);
	assert_int_not_equal(audit_log(a, &(struct audit_rec){ .event = "grant.expired",
		.grant_id = "still", .message = "padding padding padding padding padding",
		.count = -1 }), 0);
	assert_int_equal(unlink(inside), 0);
	assert_int_equal(rmdir(dir1), 0);
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.expired",
		.grant_id = "after", .count = -1 }), 0);
	all = audit_query(a, &(struct audit_filter){ 0 }, 100000, &trunc);
	assert_string_equal(json_string_value(json_object_get(
		json_array_get(all, json_array_size(all) - 1), "grant")), "after");
	json_decref(all);
	audit_close(&a);
}

static int collect_ids(json_t *ev, void *arg)
{
	json_t *ids = arg;

	return json_array_append_new(ids, json_string(json_string_value(json_object_get(ev,
		"grant"))));
}

static void log_ids(struct audit *a, int from, int to)
{
	char id[32];

	for (int i = from; i < to; i++) {
		snprintf(id, sizeof(id), "s-%04d", i);
		assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.expired",
			.grant_id = id, .message = "padding padding padding padding padding",
			.count = -1 }), 0);
	}
}

/*
 * A snapshot reads the trail as it was when taken, oldest first, whatever is written and
 * rotated after it (the activity rebuild reads it on another thread meanwhile).
 */
static void test_snapshot(void **state)
{
	struct fixture *f = *state;
	const struct audit_opts o = { .max_bytes = 65536, .keep = 3, .no_syslog = true };
	struct audit_snapshot *snap;
	json_t *before = json_array(), *seen = json_array();
	struct audit *a;
	bool trunc;
	json_t *all;

	assert_int_equal(audit_open(f->dir, &o, &a), 0);
	log_ids(a, 0, 500);
	all = audit_query(a, &(struct audit_filter){ 0 }, 100000, &trunc);
	assert_int_equal(audit_foreach(a, 0, collect_ids, before), 0);
	assert_int_equal(audit_snapshot(a, &snap), 0);
	/* More than a file's worth afterwards: every file rotates at least once. */
	log_ids(a, 500, 1500);
	assert_int_equal(audit_snapshot_foreach(snap, 0, collect_ids, seen), 0);
	audit_snapshot_free(&snap);
	assert_null(snap);
	assert_true(json_array_size(before) > 100);
	assert_true(json_equal(before, seen));
	assert_int_equal(json_array_size(all), json_array_size(seen));
	assert_string_equal(json_string_value(json_array_get(seen, json_array_size(seen) - 1)),
		"s-0499");
	json_decref(all);
	json_decref(before);
	json_decref(seen);
	audit_close(&a);
}

/*
 * A file of the trail that is there but cannot be opened now (here a link to itself: ELOOP, as
 * EMFILE would be when descriptors run short) fails the snapshot, and the query, rather than
 * leaving the file out: a reader would take what is left for the whole trail.
 */
static void test_snapshot_unopenable_file(void **state)
{
	struct fixture *f = *state;
	const struct audit_opts o = { .max_bytes = 65536, .keep = 3, .no_syslog = true };
	struct audit_snapshot *snap = NULL;
	struct audit *a;
	char path[128];
	bool trunc;

	assert_int_equal(audit_open(f->dir, &o, &a), 0);
	log_ids(a, 0, 10);
	snprintf(path, sizeof(path), "%s/audit.jsonl.2", f->dir);
	assert_int_equal(symlink("audit.jsonl.2", path), 0);
	assert_int_equal(audit_snapshot(a, &snap), -ELOOP);
	assert_null(snap);
	assert_null(audit_query(a, &(struct audit_filter){ 0 }, 100, &trunc));
	/* A file that is not there (.1, .3) is no loss. */
	assert_int_equal(unlink(path), 0);
	assert_int_equal(audit_snapshot(a, &snap), 0);
	audit_snapshot_free(&snap);
	audit_close(&a);
}

/*
 * A damaged line, a NUL in it (a crash on a file system that leaves zeros), is skipped whole,
 * even when what comes before the NUL is a record; and it does not move the snapshot's bound:
 * lines written after the snapshot stay out of it.
 */
static void test_snapshot_damaged_line(void **state)
{
	static const char damaged[] = "{\"ts\":100,\"event\":\"grant.expired\",\"grant\":"
		"\"damaged\"}\0\0\0\0 zeros after\n";
	struct fixture *f = *state;
	struct audit_snapshot *snap;
	json_t *seen = json_array();
	struct audit *a;
	char path[128];
	FILE *fp;

	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	log_ids(a, 0, 2);
	fp = fopen(path, "a");
	assert_non_null(fp);
	assert_int_equal(fwrite(damaged, 1, sizeof(damaged) - 1, fp), sizeof(damaged) - 1);
	assert_int_equal(fclose(fp), 0);
	log_ids(a, 2, 4);
	assert_int_equal(audit_snapshot(a, &snap), 0);
	log_ids(a, 4, 6);
	assert_int_equal(audit_snapshot_foreach(snap, 0, collect_ids, seen), 0);
	audit_snapshot_free(&snap);
	assert_int_equal(json_array_size(seen), 4);
	for (size_t i = 0; i < 4; i++) {
		char id[32];

		snprintf(id, sizeof(id), "s-%04zu", i);
		assert_string_equal(json_string_value(json_array_get(seen, i)), id);
	}
	json_decref(seen);
	audit_close(&a);
}

/* The whole trail, audit.jsonl, as one string. */
static char *slurp(const struct fixture *f, const char *name)
{
	char path[128], *buf;
	struct stat st;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", f->dir, name);
	assert_int_equal(stat(path, &st), 0);
	buf = calloc(1, (size_t)st.st_size + 1);
	assert_non_null(buf);
	fp = fopen(path, "r");
	assert_non_null(fp);
	assert_int_equal(fread(buf, 1, (size_t)st.st_size, fp), (size_t)st.st_size);
	fclose(fp);
	return buf;
}

static size_t count_of(const char *hay, const char *needle)
{
	size_t n = 0;

	for (const char *p = hay; (p = strstr(p, needle)); p++)
		n++;
	return n;
}

static void log_noted(struct audit *a, const char *id, struct store_note *note)
{
	assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.applied",
		.grant_id = id, .count = -1, .note = note }), 0);
	assert_non_null(note->p);
}

/*
 * A noted line still in the trail is left as it is; one the trail lost (cut off, as a crash
 * before its fsync leaves it) is appended again, byte for byte, after a newline that ends a
 * torn last line; and once only, however often recovery runs.
 */
static void test_recover(void **state)
{
	struct fixture *f = *state;
	struct store_note n1 = { 0 }, n2 = { 0 }, n3 = { 0 };
	char path[128], *before, *after;
	struct stat st;
	struct audit *a;
	size_t restored;

	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	log_noted(a, "kept", &n1);
	assert_int_equal(stat(path, &st), 0);
	log_noted(a, "lost-1", &n2);
	log_noted(a, "lost-2", &n3);
	audit_close(&a);
	before = slurp(f, "audit.jsonl");
	/* The crash: the last two lines gone, and a few bytes of the first of them left. */
	assert_int_equal(truncate(path, st.st_size + 10), 0);

	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	const struct store_note v[] = { n1, n2, n3 };
	assert_int_equal(audit_recover(a, v, 3, &restored), 0);
	assert_int_equal(restored, 2);
	assert_int_equal(audit_recover(a, v, 3, &restored), 0);
	assert_int_equal(restored, 0);
	audit_close(&a);
	after = slurp(f, "audit.jsonl");
	assert_int_equal(count_of(after, "\"kept\""), 1);
	assert_int_equal(count_of(after, "\"lost-1\""), 1);
	assert_int_equal(count_of(after, "\"lost-2\""), 1);
	/* Each restored line is the line as written. */
	assert_non_null(memmem(after, strlen(after), n2.p + 16, n2.len - 16));
	assert_int_equal(count_of(after, "\n"), 4); /* kept, the torn part, lost-1, lost-2 */
	assert_non_null(strstr(before, "\"lost-2\""));
	free(before);
	free(after);
	free(n1.p);
	free(n2.p);
	free(n3.p);
}

/*
 * After a failed sync (here: reported by the syncer's caller) the trail is lost: a sync that
 * holds does not end it (the compaction guard's), and recovery does, once the lines the disk
 * lost (here: overwritten with blanks, as a failed writeback leaves them) are back. With no
 * notes left to check, a sync that holds ends it.
 */
static void test_recover_after_failed_sync(void **state)
{
	struct fixture *f = *state;
	struct store_note n1 = { 0 }, n2 = { 0 };
	char path[128], blank[512], *after;
	uint64_t at;
	struct audit *a;
	size_t restored;
	int fd;

	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	assert_int_equal(audit_open(f->dir, &quiet, &a), 0);
	log_noted(a, "kept", &n1);
	log_noted(a, "gone", &n2);
	memcpy(&at, n2.p + 8, sizeof(at));
	assert_true(n2.len - 16 - 1 < sizeof(blank));
	memset(blank, ' ', sizeof(blank));
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, blank, n2.len - 16 - 1, (off_t)be64toh(at)),
		(ssize_t)(n2.len - 16 - 1));
	close(fd);

	assert_int_equal(audit_lost(a), 0);
	audit_sync_failed(a, -EIO);
	assert_int_equal(audit_lost(a), -EIO);
	assert_int_equal(audit_sync_now(a), -EIO);
	const struct store_note v[] = { n1, n2 };
	assert_int_equal(audit_recover(a, v, 2, &restored), 0);
	assert_int_equal(restored, 1);
	assert_int_equal(audit_lost(a), 0);
	assert_int_equal(audit_sync_now(a), 0);
	after = slurp(f, "audit.jsonl");
	assert_int_equal(count_of(after, "\"kept\""), 1);
	assert_int_equal(count_of(after, "\"gone\""), 1);
	assert_non_null(memmem(after, strlen(after), n2.p + 16, n2.len - 16));
	free(after);

	audit_sync_failed(a, -EIO);
	assert_int_equal(audit_recover(a, NULL, 0, &restored), 0);
	assert_int_equal(restored, 0);
	assert_int_equal(audit_lost(a), 0);
	audit_close(&a);
	free(n1.p);
	free(n2.p);
}

/* A line the trail still has, but in a rotated file, is found there and not appended again. */
static void test_recover_rotated(void **state)
{
	struct fixture *f = *state;
	const struct audit_opts o = { .max_bytes = 4096, .keep = 2, .no_syslog = true };
	struct store_note n = { 0 };
	struct audit *a;
	size_t restored;
	char *cur;

	assert_int_equal(audit_open(f->dir, &o, &a), 0);
	log_noted(a, "early", &n);
	log_ids(a, 0, 40); /* rotates: "early" is in audit.jsonl.1 or .2 now */
	assert_int_equal(audit_recover(a, &n, 1, &restored), 0);
	assert_int_equal(restored, 0);
	audit_close(&a);
	cur = slurp(f, "audit.jsonl");
	assert_null(strstr(cur, "\"early\""));
	free(cur);
	free(n.p);
}

static void group_recs(struct audit_rec *r, struct store_note *n)
{
	static const char *const id[] = { "grp-a", "grp-b", "grp-c" };

	for (int i = 0; i < 3; i++)
		r[i] = (struct audit_rec){ .event = "grant.applied", .grant_id = id[i], .count = -1,
			.note = &n[i] };
}

/* Where a note says its line went (bytes 8..15, big-endian), and that the line is there. */
static void assert_noted_at(const struct fixture *f, const struct store_note *n)
{
	char *cur = slurp(f, "audit.jsonl");
	uint64_t at;

	memcpy(&at, n->p + 8, sizeof(at));
	at = be64toh(at);
	assert_true(at + n->len - 16 <= strlen(cur));
	assert_memory_equal(cur + at, n->p + 16, n->len - 16);
	free(cur);
}

/*
 * A group's records: one write, in order, each note naming its own line; a group that would take
 * the file past max_bytes goes whole to the next file; a group that cannot be written leaves
 * no line and no note.
 */
static void test_log_group(void **state)
{
	struct fixture *f = *state;
	const struct audit_opts o = { .max_bytes = 4096, .keep = 2, .no_syslog = true };
	struct store_note probe = { 0 }, n[3] = { 0 };
	struct audit_rec r[3];
	struct rlimit old, lim;
	char path[128], *cur;
	struct audit *a;
	struct stat st;
	size_t len, restored;
	off_t before;
	int ret;

	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	assert_int_equal(audit_open(f->dir, &o, &a), 0);
	log_noted(a, "grp-0", &probe);
	len = probe.len - 16;
	/* Lines of that length until there is room for one or two more, not three. */
	for (int i = 0; i < 100; i++) {
		char id[8];

		assert_int_equal(stat(path, &st), 0);
		if ((size_t)st.st_size + 2 * len > o.max_bytes)
			break;
		snprintf(id, sizeof(id), "f-%03d", i);
		assert_int_equal(audit_log(a, &(struct audit_rec){ .event = "grant.applied",
			.grant_id = id, .count = -1 }), 0);
	}
	assert_true((size_t)st.st_size + len <= o.max_bytes);
	group_recs(r, n);
	assert_int_equal(audit_log_many(a, r, 3), 0);
	cur = slurp(f, "audit.jsonl");
	assert_non_null(strstr(cur, "\"grp-a\""));
	assert_true(strstr(cur, "\"grp-a\"") < strstr(cur, "\"grp-b\""));
	assert_true(strstr(cur, "\"grp-b\"") < strstr(cur, "\"grp-c\""));
	assert_int_equal(count_of(cur, "\n"), 3);
	free(cur);
	for (int i = 0; i < 3; i++)
		assert_noted_at(f, &n[i]);
	assert_int_equal(audit_recover(a, n, 3, &restored), 0);
	assert_int_equal(restored, 0);

	/* Room for less than the group: nothing of it stays. */
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + len + 10;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	signal(SIGXFSZ, SIG_IGN);
	for (int i = 0; i < 3; i++)
		free(n[i].p);
	memset(n, 0, sizeof(n));
	group_recs(r, n);
	ret = audit_log_many(a, r, 3);
	/* Restored before any assertion: a failure must not leave the next tests limited. */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(ret, -ENOSPC);
	for (int i = 0; i < 3; i++)
		assert_null(n[i].p);
	before = st.st_size;
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_size, before);
	audit_close(&a);
	free(probe.p);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_grant_record, setup, teardown),
		cmocka_unit_test_setup_teardown(test_line_as_jansson, setup, teardown),
		cmocka_unit_test_setup_teardown(test_filters_and_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_crash_left_a_fragment, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_fails_then_recovers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rotation_fills_a_gap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_unopenable_file, setup, teardown),
		cmocka_unit_test_setup_teardown(test_snapshot_damaged_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_after_failed_sync, setup, teardown),
		cmocka_unit_test_setup_teardown(test_recover_rotated, setup, teardown),
		cmocka_unit_test_setup_teardown(test_log_group, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
