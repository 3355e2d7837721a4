/*
 * Recent activity rebuilt from the audit trail on its own thread: every grant.applied record
 * counts but a withdrawn grant's, and freeing the history while the scan runs (jitd stopping
 * right after a start) stops the scan without leaking or touching freed memory (ASan) and
 * leaves the trail readable.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "agent/activity.h"
#include "agent/audit.h"
#include "common/grant.h"
#include "common/port.h"
#include "common/prefix.h"

#define RECORDS 3000

struct fixture {
	char dir[64];
	struct audit *audit;
};

/* The tests' made-up records stay out of the host's syslog. */
static const struct audit_opts quiet = { .no_syslog = true };

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));
	struct prefix src;
	struct port_spec port = { .port = 22, .proto = PORT_PROTO_TCP };
	char jti[32], iss[] = "ctl", sub[] = "alice", kid[] = "k1";
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .exp = 1800000000,
		.src = &src, .n_src = 1, .ports = &port, .n_ports = 1 };

	if (!f)
		return -1;
	snprintf(f->dir, sizeof(f->dir), "/tmp/test_activity.XXXXXX");
	if (!mkdtemp(f->dir) || prefix_parse("192.0.2.7", &src) ||
		audit_open(f->dir, &quiet, &f->audit))
		return -1;
	/* One fdatasync for the lot, not one per line. */
	audit_defer(f->audit, true);
	for (int i = 0; i < RECORDS; i++) {
		snprintf(jti, sizeof(jti), "g-%d", i);
		if (audit_log(f->audit, &(struct audit_rec){ .event = "grant.applied", .grant = &g,
			.peer = "uid=0", .count = -1 }))
			return -1;
	}
	audit_defer(f->audit, false);
	if (audit_sync(f->audit))
		return -1;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char path[128];

	audit_close(&f->audit);
	snprintf(path, sizeof(path), "%s/audit.jsonl", f->dir);
	unlink(path);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void assert_all_counted(struct audit *audit)
{
	struct activity *act;
	struct port_activity pa;

	assert_int_equal(activity_new(&act), 0);
	assert_int_equal(activity_rebuild(act, audit, 0), 0);
	activity_ready(act);
	activity_port(act, 22, IPPROTO_TCP, (int64_t)time(NULL), &pa);
	assert_int_equal(pa.grants_7d, RECORDS);
	assert_true(pa.last_access > 0);
	assert_string_equal(pa.last_user, "alice");
	activity_port(act, 3389, IPPROTO_TCP, (int64_t)time(NULL), &pa);
	assert_int_equal(pa.grants_7d, 0);
	activity_free(&act);
	assert_null(act);
}

static void rebuild_counts_every_record(void **state)
{
	struct fixture *f = *state;

	assert_all_counted(f->audit);
}

/* Whether the scan is cut short or already done, freeing is clean and the trail stays whole. */
static void free_while_rebuilding(void **state)
{
	struct fixture *f = *state;

	for (int i = 0; i < 20; i++) {
		struct activity *act;

		assert_int_equal(activity_new(&act), 0);
		assert_int_equal(activity_rebuild(act, f->audit, 0), 0);
		activity_free(&act);
		assert_null(act);
	}
	assert_all_counted(f->audit);
}

/*
 * A grant withdrawn after a failed fdatasync (grant.applied, then grant.refused marked
 * "withdrawn") does not count; its id applied again later does, in the trail's order; a
 * refusal not so marked (a replay, or internal for the same token resent while the grant is in
 * force) or of an id never applied changes nothing.
 */
static void withdrawn_grants_do_not_count(void **state)
{
	static const struct {
		const char *event, *id, *sub, *code;
		bool withdrawn;
	} trail[] = {
		{ "grant.applied", "w-1", "alice", NULL, false },
		{ "grant.applied", "w-2", "bob", NULL, false },
		{ "grant.refused", "w-2", NULL, "internal", true },
		{ "grant.refused", "w-1", NULL, "replay", false },
		{ "grant.refused", "w-1", NULL, "internal", false },
		{ "grant.applied", "w-3", "carol", NULL, false },
		{ "grant.refused", "w-3", NULL, "storage_full", true },
		{ "grant.applied", "w-2", "bob", NULL, false },
		{ "grant.refused", "w-4", NULL, "internal", true },
		{ "grant.applied", "w-6", "dave", NULL, false },
		{ "grant.applied", "w-5", "eve", NULL, false },
		{ "grant.refused", "w-5", NULL, "internal", true },
	};
	struct prefix src;
	struct port_spec port = { .port = 22, .proto = PORT_PROTO_TCP };
	char dir[64], path[128], jti[16], sub[16], iss[] = "ctl", kid[] = "k1";
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .exp = 1800000000,
		.src = &src, .n_src = 1, .ports = &port, .n_ports = 1 };
	struct port_activity pa;
	struct activity *act;
	struct audit *audit;

	(void)state;
	snprintf(dir, sizeof(dir), "/tmp/test_activity.XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(prefix_parse("192.0.2.7", &src), 0);
	assert_int_equal(audit_open(dir, &quiet, &audit), 0);
	for (size_t i = 0; i < sizeof(trail) / sizeof(trail[0]); i++) {
		struct audit_rec r = { .event = trail[i].event, .peer = "uid=0", .count = -1 };

		if (trail[i].code) {
			r.grant_id = trail[i].id;
			r.code = trail[i].code;
			r.message = "refused";
			r.withdrawn = trail[i].withdrawn;
		} else {
			snprintf(jti, sizeof(jti), "%s", trail[i].id);
			snprintf(sub, sizeof(sub), "%s", trail[i].sub);
			r.grant = &g;
		}
		assert_int_equal(audit_log(audit, &r), 0);
	}
	assert_int_equal(activity_new(&act), 0);
	assert_int_equal(activity_rebuild(act, audit, 0), 0);
	activity_ready(act);
	activity_port(act, 22, IPPROTO_TCP, (int64_t)time(NULL), &pa);
	/* w-1, w-2's second application and w-6; in one second, the last counted is dave's. */
	assert_int_equal(pa.grants_7d, 3);
	assert_string_equal(pa.last_user, "dave");
	activity_free(&act);
	audit_close(&audit);
	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	unlink(path);
	rmdir(dir);
}

/*
 * A grant for a port's TCP and UDP both counts once for the port (ipproto 0, what a "*" port's
 * row reads) and once for each protocol; so does its record read back from the trail.
 */
static void both_protocols_count_once(void **state)
{
	struct prefix src;
	struct port_spec ports[] = { { .port = 53, .proto = PORT_PROTO_TCP },
		{ .port = 53, .proto = PORT_PROTO_UDP }, { .port = 22, .proto = PORT_PROTO_TCP } };
	char dir[64], path[128], jti[] = "dns", sub[] = "alice", iss[] = "ctl", kid[] = "k1";
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .exp = 1800000000,
		.src = &src, .n_src = 1, .ports = ports, .n_ports = 3 };
	struct port_activity pa;
	struct activity *act;
	struct audit *audit;
	int64_t now;

	(void)state;
	assert_int_equal(prefix_parse("192.0.2.7", &src), 0);
	snprintf(dir, sizeof(dir), "/tmp/test_activity.XXXXXX");
	assert_non_null(mkdtemp(dir));
	assert_int_equal(audit_open(dir, &quiet, &audit), 0);
	assert_int_equal(audit_log(audit, &(struct audit_rec){ .event = "grant.applied",
		.grant = &g, .peer = "uid=0", .count = -1 }), 0);
	/* After the record's own stamp: one taken before could be a second behind it. */
	now = (int64_t)time(NULL);
	for (int rebuilt = 0; rebuilt < 2; rebuilt++) {
		assert_int_equal(activity_new(&act), 0);
		if (rebuilt)
			assert_int_equal(activity_rebuild(act, audit, 0), 0);
		else
			assert_int_equal(activity_note(act, &g, now), 0);
		activity_ready(act);
		activity_port(act, 53, 0, now, &pa);
		assert_int_equal(pa.grants_7d, 1);
		assert_string_equal(pa.last_user, "alice");
		activity_port(act, 53, IPPROTO_UDP, now, &pa);
		assert_int_equal(pa.grants_7d, 1);
		activity_port(act, 22, 0, now, &pa);
		assert_int_equal(pa.grants_7d, 1);
		activity_free(&act);
	}
	audit_close(&audit);
	snprintf(path, sizeof(path), "%s/audit.jsonl", dir);
	unlink(path);
	rmdir(dir);
}

/* A grant.applied record of user's for 22/tcp, stamped ts, read as the rebuild reads it. */
static void note_record(struct activity *act, const char *user, int64_t ts)
{
	json_t *ev = json_pack("{s:s, s:I, s:s, s:[s]}", "event", "grant.applied", "ts",
		(json_int_t)ts, "sub", user, "ports", "22/tcp");

	assert_non_null(ev);
	assert_int_equal(activity_note_event(act, ev), 0);
	json_decref(ev);
}

/*
 * A clock that ran ahead, then stepped back: the grant stamped ahead is not the last access
 * once a later one is noted (live, and read from the trail), it counts within the week, and
 * it does not prune the genuine week from a full list.
 */
static void clock_ran_ahead(void **state)
{
	struct prefix src;
	struct port_spec port = { .port = 22, .proto = PORT_PROTO_TCP };
	char jti[16], sub[16], iss[] = "ctl", kid[] = "k1";
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .exp = 1800000000,
		.src = &src, .n_src = 1, .ports = &port, .n_ports = 1 };
	int64_t now = 1790000000, ahead = now + 8 * 86400;
	struct port_activity pa;
	struct activity *act;

	(void)state;
	assert_int_equal(prefix_parse("192.0.2.7", &src), 0);
	assert_int_equal(activity_new(&act), 0);
	/* Sixteen genuine grants (a port's list is full at 16), then one stamped 8 days ahead. */
	snprintf(sub, sizeof(sub), "alice");
	for (int i = 0; i < 16; i++)
		assert_int_equal(activity_note(act, &g, now - 3600 - i), 0);
	snprintf(sub, sizeof(sub), "mallory");
	assert_int_equal(activity_note(act, &g, ahead), 0);
	snprintf(sub, sizeof(sub), "bob");
	assert_int_equal(activity_note(act, &g, now), 0);
	activity_port(act, 22, IPPROTO_TCP, now, &pa);
	assert_int_equal(pa.grants_7d, 18);
	assert_string_equal(pa.last_user, "bob");
	assert_int_equal(pa.last_access, now);
	activity_free(&act);

	/*
	 * Read from the trail, as the clock is now: a record stamped ahead of it gives way to the
	 * one after it; but a line put back after a failed sync (alice's, after bob's later one)
	 * does not take the last access from the later stamp.
	 */
	now = (int64_t)time(NULL);
	assert_int_equal(activity_new(&act), 0);
	note_record(act, "mallory", now + 86400);
	note_record(act, "bob", now - 60);
	activity_port(act, 22, IPPROTO_TCP, now, &pa);
	assert_int_equal(pa.grants_7d, 2);
	assert_string_equal(pa.last_user, "bob");
	activity_free(&act);
	assert_int_equal(activity_new(&act), 0);
	note_record(act, "bob", now - 300);
	note_record(act, "alice", now - 600);
	activity_port(act, 22, IPPROTO_TCP, now, &pa);
	assert_string_equal(pa.last_user, "bob");
	assert_int_equal(pa.last_access, now - 300);
	activity_free(&act);
}

/*
 * The trail is a file: a sub no grant could carry is shown as '?'s where a terminal would act
 * on it, and whole as "?" when longer than a claim may be (a cut could split a character).
 */
static void trail_sub_shown_safe(void **state)
{
	char longest[GRANT_MAX_STRING + 1], over[GRANT_MAX_STRING + 2];
	int64_t now = (int64_t)time(NULL);
	struct port_activity pa;
	struct activity *act;

	(void)state;
	assert_int_equal(activity_new(&act), 0);
	note_record(act, "d\x1b]0;x\x07\xe2\x80\xae\xc2\x9b", now - 60);
	activity_port(act, 22, IPPROTO_TCP, now, &pa);
	assert_string_equal(pa.last_user, "d?]0;x??????");
	memset(longest, 'a', GRANT_MAX_STRING);
	longest[GRANT_MAX_STRING] = '\0';
	note_record(act, longest, now - 30);
	activity_port(act, 22, IPPROTO_TCP, now, &pa);
	assert_string_equal(pa.last_user, longest);
	/* One byte over, the last character two bytes across the cut. */
	memset(over, 'a', GRANT_MAX_STRING - 1);
	memcpy(over + GRANT_MAX_STRING - 1, "\xc3\xa9", 3);
	note_record(act, over, now - 10);
	activity_port(act, 22, IPPROTO_TCP, now, &pa);
	assert_string_equal(pa.last_user, "?");
	assert_int_equal(pa.grants_7d, 3);
	activity_free(&act);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(rebuild_counts_every_record),
		cmocka_unit_test(free_while_rebuilding),
		cmocka_unit_test(withdrawn_grants_do_not_count),
		cmocka_unit_test(both_protocols_count_once),
		cmocka_unit_test(clock_ran_ahead),
		cmocka_unit_test(trail_sub_shown_safe),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
