#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <stdbool.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/replay.h"
#include "common/err.h"

#define NOW 1800000000
/* Ran out more than the day a start looks back (LOAD_LOOKBACK_S): gone at the start. */
#define LONG_AGO (NOW - 24 * 3600 - 1)

struct fixture {
	char dir[64];
	char db[96];
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	snprintf(f->dir, sizeof(f->dir), "/tmp/test_replay.XXXXXX");
	if (!mkdtemp(f->dir))
		return -1;
	snprintf(f->db, sizeof(f->db), "%s/replay.db", f->dir);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;
	char tmp[128];

	unlink(f->db);
	snprintf(tmp, sizeof(tmp), "%s.tmp", f->db);
	unlink(tmp);
	rmdir(f->dir);
	free(f);
	return 0;
}

static void test_add_check(void **state)
{
	struct fixture *f = *state;
	struct replay *r;

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "g1", NOW), 0);
	assert_int_equal(replay_add(r, "g1", NOW + 60), 0);
	assert_int_equal(replay_check(r, "g1", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "g2", NOW), 0);
	/* Once its time is over an id may come again: the token itself is expired by then. */
	assert_int_equal(replay_check(r, "g1", NOW + 61), 0);
	assert_int_equal(replay_add(r, "g1", NOW + 60), -EEXIST);
	assert_int_equal(replay_add(r, "with space", NOW + 60), -EINVAL);
	assert_int_equal(replay_add(r, "", NOW + 60), -EINVAL);
	assert_int_equal(replay_count(r), 1);
	replay_close(&r);
	assert_null(r);
}

static void test_survives_restart(void **state)
{
	struct fixture *f = *state;
	struct replay *r;

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "kept", NOW + 600), 0);
	assert_int_equal(replay_add(r, "short", NOW + 5), 0);
	assert_int_equal(replay_add(r, "forgotten", NOW + 600), 0);
	replay_forget(r, "forgotten");
	replay_close(&r);

	assert_int_equal(replay_open(f->dir, 10, NOW + 10, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "kept", NOW + 10), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "short", NOW + 10), 0);
	assert_int_equal(replay_check(r, "forgotten", NOW + 10), 0);
	/* short's time is over, yet within the day a start looks back: held, and no replay. */
	assert_int_equal(replay_count(r), 2);
	replay_close(&r);
}

/*
 * A start whose clock is wrongly ahead (an RTC hours off, before NTP) keeps the ids it takes
 * for expired: once the clock is right, their tokens may still be valid, and are replays.
 */
static void test_start_with_clock_ahead(void **state)
{
	struct fixture *f = *state;
	struct replay *r;
	FILE *fp;

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "g", NOW + 600), 0);
	replay_close(&r);
	/* An unreadable line, so that the next start rewrites the file with what it keeps. */
	fp = fopen(f->db, "a");
	assert_non_null(fp);
	fputs("nonsense line\n", fp);
	fclose(fp);
	/* Six hours ahead: g's time looks over. */
	assert_int_equal(replay_open(f->dir, 10, NOW + 6 * 3600, &r, NULL, 0), 0);
	replay_close(&r);
	/* The clock right again, the file rewritten at that start. */
	assert_int_equal(replay_open(f->dir, 10, NOW + 60, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "g", NOW + 60), JIT_ERR_REPLAY);
	replay_close(&r);
}

/*
 * The disk fills up while an id is appended (a file size limit stands in for it): the id is
 * refused and its part of a line cut off, so that the next id is a line of its own and is
 * still remembered after a restart. Run on from the torn part, it was lost: a token revoked
 * early could then have been applied again after a restart.
 */
static void test_torn_line(void **state)
{
	struct fixture *f = *state;
	struct rlimit old, lim;
	struct replay *r;
	struct stat st;
	int ret;

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "first", NOW + 600), 0);
	assert_int_equal(stat(f->db, &st), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 5; /* less than a line */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	signal(SIGXFSZ, SIG_IGN);
	ret = replay_add(r, "torn", NOW + 600);
	/* Restored before any assertion: a failure must not leave the next tests limited. */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(ret, -ENOSPC);
	assert_int_equal(replay_check(r, "torn", NOW), 0);
	assert_int_equal(replay_add(r, "next", NOW + 600), 0);
	replay_close(&r);

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "first", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "next", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "torn", NOW), 0);
	assert_int_equal(replay_count(r), 2);
	replay_close(&r);
}

/* A group's ids: each judged as one by one, all with one write, and all there after a restart. */
static void test_add_group(void **state)
{
	struct fixture *f = *state;
	const struct replay_id ids[] = {
		{ "a", NOW + 600 },
		{ "bad id", NOW + 600 },	/* -EINVAL */
		{ "old", NOW + 30 },	/* -EEXIST: remembered for longer already */
		{ "old", NOW + 120 },	/* longer: taken */
		{ "a", NOW + 900 },	/* longer than the group's own first: taken */
		{ "b", NOW + 600 },
		{ "c", NOW + 600 },	/* the fourth id: the cache is full after it */
		{ "d", NOW + 600 },	/* -ENOBUFS */
	};
	const int want[] = { 0, -EINVAL, -EEXIST, 0, 0, 0, 0, -ENOBUFS };
	int res[8];
	struct replay *r;

	assert_int_equal(replay_open(f->dir, 4, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "old", NOW + 60), 0);
	replay_add_lazy_many(r, ids, 8, NOW, res);
	for (size_t i = 0; i < 8; i++)
		assert_int_equal(res[i], want[i]);
	assert_int_equal(replay_sync(r), 0);
	replay_close(&r);

	assert_int_equal(replay_open(f->dir, 4, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_count(r), 4);
	assert_int_equal(replay_check(r, "a", NOW + 800), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "old", NOW + 100), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "b", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "c", NOW), JIT_ERR_REPLAY);
	replay_close(&r);
}

/*
 * A start whose rewrite cannot be written (a full disk) goes on with the file as it is, its
 * torn tail cut off: failing, jitd would serve no revocation until room was made.
 */
static void test_open_when_rewrite_fails(void **state)
{
	struct fixture *f = *state;
	char whole[128];
	struct rlimit old, lim;
	struct replay *r = NULL;
	struct stat st;
	FILE *db;
	int ret;

	snprintf(whole, sizeof(whole), "A %d a\nA %d b\n", NOW + 600, NOW + 600);
	assert_non_null(db = fopen(f->db, "w"));
	assert_true(fprintf(db, "%sA %d tor", whole, NOW + 600) > 0);
	assert_int_equal(fclose(db), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = 1; /* no rewrite fits; a cut needs no room */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	signal(SIGXFSZ, SIG_IGN);
	ret = replay_open(f->dir, 10, NOW, &r, NULL, 0);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(ret, 0);
	assert_int_equal(replay_check(r, "a", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "b", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_count(r), 2);
	assert_int_equal(stat(f->db, &st), 0);
	assert_int_equal(st.st_size, strlen(whole));
	/* The next line starts on a line of its own. */
	assert_int_equal(replay_add(r, "c", NOW + 600), 0);
	replay_close(&r);
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "c", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_count(r), 3);
	replay_close(&r);
}

/* A replay.db group or others may write is refused; why says so, for the start to say. */
static void test_untrusted(void **state)
{
	struct fixture *f = *state;
	struct replay *r = NULL;
	char why[1024] = "", want[1024];

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	replay_close(&r);
	assert_int_equal(chmod(f->db, 0602), 0);
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, why, sizeof(why)), -EPERM);
	assert_null(r);
	snprintf(want, sizeof(want), "%s is writable by group or others: whoever may write it "
		"could use a revoked grant's token again (make it a regular file of root's, "
		"writable only by its owner)", f->db);
	assert_string_equal(why, want);
	assert_int_equal(chmod(f->db, 0600), 0);
	why[0] = '\0';
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, why, sizeof(why)), 0);
	assert_string_equal(why, "");
	replay_close(&r);
}

/* A FIFO left at the rewrite's temporary name is replaced, not waited on by the start. */
static void test_rewrite_over_fifo(void **state)
{
	struct fixture *f = *state;
	char whole[128], tmp[128];
	struct replay *r = NULL;
	struct stat st;
	FILE *db;

	snprintf(whole, sizeof(whole), "A %d a\n", NOW + 600);
	assert_non_null(db = fopen(f->db, "w"));
	assert_true(fprintf(db, "%sA %d tor", whole, NOW + 600) > 0);
	assert_int_equal(fclose(db), 0);
	snprintf(tmp, sizeof(tmp), "%s.tmp", f->db);
	assert_int_equal(mkfifo(tmp, 0600), 0);
	alarm(20);
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	alarm(0);
	assert_int_equal(replay_check(r, "a", NOW), JIT_ERR_REPLAY);
	/* Rewritten: the torn tail gone, the rewrite renamed over the file. */
	assert_int_equal(stat(f->db, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_size, strlen(whole));
	assert_int_not_equal(lstat(tmp, &st), 0);
	replay_close(&r);
}

/* A group whose write fails leaves nothing behind: in memory, in the file, after a restart. */
static void test_add_group_write_fails(void **state)
{
	struct fixture *f = *state;
	const struct replay_id ids[] = { { "x", NOW + 600 }, { "first", NOW + 900 },
		{ "y", NOW + 600 }, { "x", NOW + 700 } };
	struct rlimit old, lim;
	struct replay *r;
	struct stat st;
	int res[4];

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "first", NOW + 600), 0);
	assert_int_equal(stat(f->db, &st), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 20; /* less than the group's lines */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	signal(SIGXFSZ, SIG_IGN);
	replay_add_lazy_many(r, ids, 4, NOW, res);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	for (size_t i = 0; i < 4; i++)
		assert_int_equal(res[i], -ENOSPC);
	assert_int_equal(replay_count(r), 1);
	assert_int_equal(replay_check(r, "x", NOW), 0);
	assert_int_equal(replay_check(r, "y", NOW), 0);
	/* Its old expiry back: free again after it. */
	assert_int_equal(replay_check(r, "first", NOW + 700), 0);
	assert_int_equal(stat(f->db, &st), 0);
	assert_int_equal(st.st_size, lim.rlim_cur - 20);
	replay_close(&r);

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_count(r), 1);
	assert_int_equal(replay_check(r, "first", NOW + 700), 0);
	assert_int_equal(replay_check(r, "x", NOW), 0);
	replay_close(&r);
}

static void test_compaction_and_garbage(void **state)
{
	struct fixture *f = *state;
	struct replay *r;
	char buf[256] = "";
	FILE *fp;

	fp = fopen(f->db, "w");
	assert_non_null(fp);
	fprintf(fp, "A %d old\nnonsense line\nA %d live\nF gone\nA %d torn", LONG_AGO, NOW + 100,
		NOW + 100);
	fclose(fp);
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "live", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "old", NOW), 0);
	replay_close(&r);
	/* Lines jitd cannot have written are unreadable as a whole, never read in part. */
	fp = fopen(f->db, "a");
	assert_non_null(fp);
	fprintf(fp, "A x bad1\nA %d1x bad2\nA  \nA %d \nA %d two words\n"
		"A 99999999999999999999 bad3\nA%d bad4\nB %d bad5\n", NOW + 100, NOW + 100,
		NOW + 100, NOW + 100, NOW + 100);
	fclose(fp);
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_count(r), 1);
	assert_int_equal(replay_check(r, "two", NOW), 0);
	assert_int_equal(replay_check(r, "bad2", NOW), 0);
	replay_close(&r);
	fp = fopen(f->db, "r");
	assert_non_null(fp);
	assert_non_null(fgets(buf, sizeof(buf), fp));
	assert_string_equal(buf, "A 1800000100 live\n");
	assert_null(fgets(buf, sizeof(buf), fp)); /* only live entries remain */
	fclose(fp);
}

/*
 * A damaged line before the end (its newline lost, so that it runs on for hundreds of bytes,
 * or a stray NUL in it) is skipped, and the ids after it are still refused: also after the
 * rewrite the damage causes. Read as a torn last line, the rest of the file was lost with it.
 */
static void test_damaged_lines(void **state)
{
	static const char nul_line[] = "A 1800000100 nu\0l\n";
	struct fixture *f = *state;
	struct replay *r;
	char run_on[600];
	FILE *fp;

	memset(run_on, 'x', sizeof(run_on) - 1);
	run_on[sizeof(run_on) - 1] = '\0';
	fp = fopen(f->db, "w");
	assert_non_null(fp);
	fprintf(fp, "A %d first\nA %d lost%s\nA %d second\n", NOW + 100, NOW + 100, run_on,
		NOW + 100);
	assert_int_equal(fwrite(nul_line, 1, sizeof(nul_line) - 1, fp), sizeof(nul_line) - 1);
	fprintf(fp, "A %d third\n", NOW + 100);
	fclose(fp);
	for (int round = 0; round < 2; round++) {
		assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
		assert_int_equal(replay_check(r, "first", NOW), JIT_ERR_REPLAY);
		assert_int_equal(replay_check(r, "second", NOW), JIT_ERR_REPLAY);
		assert_int_equal(replay_check(r, "third", NOW), JIT_ERR_REPLAY);
		assert_int_equal(replay_check(r, "nu", NOW), 0);
		assert_int_equal(replay_count(r), 3);
		replay_close(&r);
	}
}

static size_t count_lines(const char *path)
{
	FILE *fp = fopen(path, "r");
	char buf[512];
	size_t n = 0;

	assert_non_null(fp);
	while (fgets(buf, sizeof(buf), fp))
		n++;
	fclose(fp);
	return n;
}

/*
 * A start rewrites the file only when dead lines outnumber what is worth keeping (half the
 * live ids plus 1,024) or something in it is unreadable; otherwise every start would rewrite
 * and fsync all the ids.
 */
static void test_rewrite_only_when_worth_it(void **state)
{
	struct fixture *f = *state;
	struct replay *r;
	FILE *fp;

	fp = fopen(f->db, "w");
	assert_non_null(fp);
	for (int i = 0; i < 10; i++)
		fprintf(fp, "A %d live-%d\n", NOW + 100, i);
	for (int i = 0; i < 1000; i++)
		fprintf(fp, "A %d old-%d\n", LONG_AGO, i);
	fclose(fp);
	assert_int_equal(replay_open(f->dir, 100, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_count(r), 10);
	assert_int_equal(replay_add(r, "new", NOW + 100), 0);
	replay_close(&r);
	assert_int_equal(count_lines(f->db), 1011); /* kept, and appended to */

	fp = fopen(f->db, "a");
	assert_non_null(fp);
	for (int i = 0; i < 100; i++)
		fprintf(fp, "F old-%d\n", i);
	fclose(fp);
	assert_int_equal(replay_open(f->dir, 100, NOW, &r, NULL, 0), 0);
	replay_close(&r);
	assert_int_equal(count_lines(f->db), 11); /* 1,100 dead lines > 11 / 2 + 1,024 */

	fp = fopen(f->db, "a");
	assert_non_null(fp);
	fprintf(fp, "what is this\n");
	fclose(fp);
	assert_int_equal(replay_open(f->dir, 100, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "new", NOW), JIT_ERR_REPLAY);
	replay_close(&r);
	assert_int_equal(count_lines(f->db), 11); /* the unreadable line is gone */
}

/*
 * While jitd runs, the lines of ids forgotten, or pruned from a full cache, are rewritten away
 * once they pass what a start would keep (live / 2 + 1,024), not kept until the next start:
 * the file stays bounded however long jitd runs, and the live ids stay durable.
 */
static void test_tidy_while_running(void **state)
{
	struct fixture *f = *state;
	struct replay *r;
	struct stat before, after;
	char id[32];

	assert_int_equal(replay_open(f->dir, 2000, NOW, &r, NULL, 0), 0);
	for (int i = 0; i < 600; i++) {
		snprintf(id, sizeof(id), "gone-%d", i);
		assert_int_equal(replay_add(r, id, NOW + 100), 0);
		replay_forget(r, id);
	}
	/* 1,200 dead lines: more than a start keeps (1,024 beside one live id), so rewritten. */
	assert_int_equal(count_lines(f->db), 1200);
	assert_int_equal(replay_add(r, "kept", NOW + 1000), 0);
	assert_int_equal(replay_tidy(r), 0);
	assert_int_equal(count_lines(f->db), 1);
	/* Below the bound nothing is rewritten: the same file, appended to. */
	assert_int_equal(stat(f->db, &before), 0);
	assert_int_equal(replay_add(r, "more", NOW + 1000), 0);
	assert_int_equal(replay_tidy(r), 0);
	assert_int_equal(count_lines(f->db), 2);
	assert_int_equal(stat(f->db, &after), 0);
	assert_int_equal(after.st_ino, before.st_ino);
	/* A full cache pruned at a later check: the expired ids' lines go with the next tidy. */
	for (int i = 0; i < 1998; i++) {
		snprintf(id, sizeof(id), "short-%d", i);
		assert_int_equal(replay_keep(r, id, NOW + 10), 0);
	}
	assert_int_equal(replay_check(r, "late", NOW + 20), 0);
	assert_int_equal(replay_count(r), 2);
	assert_int_equal(replay_tidy(r), 0);
	assert_int_equal(count_lines(f->db), 2);
	/* Appends go on in the rewritten file, and a restart still refuses every live id. */
	assert_int_equal(replay_add(r, "after", NOW + 1000), 0);
	replay_close(&r);
	assert_int_equal(count_lines(f->db), 3);
	assert_int_equal(replay_open(f->dir, 2000, NOW + 20, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "kept", NOW + 20), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "more", NOW + 20), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "after", NOW + 20), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "gone-1", NOW + 20), 0);
	replay_close(&r);
}

static void test_busy_when_full(void **state)
{
	struct fixture *f = *state;
	struct replay *r;

	assert_int_equal(replay_open(f->dir, 2, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "a", NOW + 10), 0);
	assert_int_equal(replay_add(r, "b", NOW + 100), 0);
	assert_int_equal(replay_check(r, "c", NOW), JIT_ERR_BUSY);
	assert_int_equal(replay_add(r, "c", NOW + 10), -ENOBUFS);
	/* After "a" expired there is room again, and nothing unexpired was forgotten. */
	assert_int_equal(replay_check(r, "c", NOW + 11), 0);
	assert_int_equal(replay_add(r, "c", NOW + 50), 0);
	assert_int_equal(replay_check(r, "b", NOW + 11), JIT_ERR_REPLAY);
	replay_close(&r);
}

/*
 * A group that overfills a cache holding expired ids prunes them first: each id of it found
 * room at its own check (the cache was not full yet), and together they overfill it.
 */
static void test_group_prunes_when_full(void **state)
{
	const struct replay_id ids[] = { { "x", NOW + 600 }, { "y", NOW + 600 } };
	struct fixture *f = *state;
	struct replay *r;
	int res[2];

	assert_int_equal(replay_open(f->dir, 3, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "old", NOW + 5), 0);
	assert_int_equal(replay_add(r, "live", NOW + 600), 0);
	assert_int_equal(replay_check(r, "x", NOW + 10), 0);
	assert_int_equal(replay_check(r, "y", NOW + 10), 0);
	replay_add_lazy_many(r, ids, 2, NOW + 10, res);
	assert_int_equal(res[0], 0);
	assert_int_equal(res[1], 0);
	assert_int_equal(replay_count(r), 3);
	assert_int_equal(replay_check(r, "live", NOW + 10), JIT_ERR_REPLAY);
	replay_close(&r);
}

/*
 * A start's restored grants' ids are kept though the cache is full (a start keeps the last
 * day's ids): a grant's record may be the only trace of its id left, and a revoked grant's
 * token must not apply again. New ids wait for room.
 */
static void test_keep_beyond_full(void **state)
{
	struct fixture *f = *state;
	struct replay *r;

	assert_int_equal(replay_open(f->dir, 2, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "a", NOW + 600), 0);
	assert_int_equal(replay_add(r, "b", NOW + 600), 0);
	assert_int_equal(replay_keep(r, "restored", NOW + 600), 0);
	assert_int_equal(replay_count(r), 3);
	assert_int_equal(replay_check(r, "restored", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "new", NOW), JIT_ERR_BUSY);
	assert_int_equal(replay_sync(r), 0);
	replay_close(&r);
	assert_int_equal(replay_open(f->dir, 2, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "restored", NOW), JIT_ERR_REPLAY);
	replay_close(&r);
}

/* Whether the file holds the line, whole. */
static bool file_has(const char *path, const char *want)
{
	char line[128];
	bool found = false;
	FILE *fp = fopen(path, "r");

	assert_non_null(fp);
	while (!found && fgets(line, sizeof(line), fp))
		found = !strcmp(line, want);
	fclose(fp);
	return found;
}

/*
 * A restored grant's id whose write fails stays in memory, and the next sync rewrites the file
 * from memory with it: rolled back, a revoked grant's token applied again after a start on a
 * full disk that found its line lost.
 */
static void test_keep_write_fails(void **state)
{
	struct fixture *f = *state;
	struct rlimit old, lim;
	struct replay *r;
	struct stat st;
	char line[64];
	int ret;

	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "first", NOW + 600), 0);
	assert_int_equal(stat(f->db, &st), 0);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old), 0);
	lim = old;
	lim.rlim_cur = (rlim_t)st.st_size + 5; /* less than the id's line */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &lim), 0);
	signal(SIGXFSZ, SIG_IGN);
	ret = replay_keep(r, "restored", NOW + 600);
	/* Restored before any assertion: a failing one must not leave the limit to the next. */
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old), 0);
	signal(SIGXFSZ, SIG_DFL);
	assert_int_equal(ret, 0);
	assert_int_equal(replay_check(r, "restored", NOW), JIT_ERR_REPLAY);
	snprintf(line, sizeof(line), "A %d restored\n", NOW + 600);
	assert_false(file_has(f->db, line));
	assert_int_equal(replay_sync(r), 0);
	assert_true(file_has(f->db, line));
	replay_close(&r);
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "restored", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "first", NOW), JIT_ERR_REPLAY);
	replay_close(&r);
}

static void test_many(void **state)
{
	struct fixture *f = *state;
	struct replay *r;
	char id[32];

	assert_int_equal(replay_open(f->dir, 200000, NOW, &r, NULL, 0), 0);
	/*
	 * Lazy: the table is what this tests, and 100,000 fdatasyncs took 20-40 s of a slow disk
	 * (over the unit tests' 60 s limit under ASan in CI). test_survives_restart covers the sync.
	 */
	for (int i = 0; i < 100000; i++) {
		snprintf(id, sizeof(id), "id-%d", i);
		assert_int_equal(replay_check(r, id, NOW), 0);
		assert_int_equal(replay_keep(r, id, NOW + 3600), 0);
	}
	assert_int_equal(replay_count(r), 100000);
	for (int i = 0; i < 100000; i += 997) {
		snprintf(id, sizeof(id), "id-%d", i);
		assert_int_equal(replay_check(r, id, NOW), JIT_ERR_REPLAY);
	}
	assert_int_equal(replay_check(r, "id-100000", NOW), 0);
	replay_close(&r);
}

/*
 * A full cache is pruned of expired ids again and again over a long uptime. The tombstones
 * prune leaves must not use up the free slots, at which alone a lookup of a new id stops:
 * what is used stays within half the table, and every id is still found.
 */
static void test_tombstones_reclaimed(void **state)
{
	struct fixture *f = *state;
	size_t used, cap, cap0;
	struct replay *r;
	char id[32];
	int n = 0;

	assert_int_equal(replay_open(f->dir, 1000, NOW, &r, NULL, 0), 0);
	for (int round = 0; round < 12; round++) {
		int64_t now = NOW + 10 * round;

		/* Full of ids that expire before the next round: its first check prunes them. */
		for (int i = 0; i < 1000; i++, n++) {
			snprintf(id, sizeof(id), "r%d-%d", round, i);
			assert_int_equal(replay_check(r, id, now), 0);
			assert_int_equal(replay_keep(r, id, now + 5), 0);
			replay_table(r, &used, &cap);
			if (used * 2 > cap)
				fail_msg("round %d: %zu of %zu slots used", round, used, cap);
		}
		if (round == 0)
			cap0 = cap;
		assert_int_equal(replay_count(r), 1000);
		snprintf(id, sizeof(id), "r%d-%d", round, 999);
		assert_int_equal(replay_check(r, id, now), JIT_ERR_REPLAY);
	}
	/* Rebuilt in place: the table did not grow with the rounds. */
	assert_int_equal(cap, cap0);
	replay_close(&r);
}

#ifdef JITD_TEST_HOOKS
static ino_t inode_of(const char *path)
{
	struct stat st;

	assert_int_equal(stat(path, &st), 0);
	return st.st_ino;
}

/*
 * A failed fsync is not forgotten: Linux reports a writeback error to an open file once, so
 * the next fsync would say 0 over lines the disk lost. Until the file is rewritten from memory,
 * nothing is durable: not the id whose sync failed, not an id already there (-EEXIST, which a
 * caller takes as remembered), not a forget. The hook makes fsync report EIO without a disk.
 */
static void test_failed_sync_rewrites(void **state)
{
	struct fixture *f = *state;
	struct replay *r;
	char fail[128], line[64];
	ino_t ino;

	snprintf(fail, sizeof(fail), "%s/fail", f->dir);
	assert_int_equal(setenv("JITD_TEST_REPLAY_SYNC_FAIL_FILE", fail, 1), 0);
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_add(r, "a", NOW + 60), 0);
	ino = inode_of(f->db);
	fclose(fopen(fail, "w"));
	assert_int_equal(replay_add(r, "b", NOW + 60), -EIO);
	/* Still refused meanwhile: its line may be gone. */
	assert_int_equal(replay_check(r, "b", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_add(r, "b", NOW + 60), -EIO);
	assert_int_equal(replay_sync(r), -EIO);
	assert_int_equal(inode_of(f->db), ino);
	unlink(fail);
	/* A failed rewrite is tried again a second later, not at once (each rewrites every id). */
	assert_int_equal(replay_add(r, "b", NOW + 60), -EIO);
	usleep(1100000);
	/* The disk takes writes again: the next sync rewrites the file, then says yes. */
	assert_int_equal(replay_add(r, "b", NOW + 60), -EEXIST);
	assert_int_not_equal(inode_of(f->db), ino);
	snprintf(line, sizeof(line), "A %d b\n", NOW + 60);
	assert_true(file_has(f->db, line));
	snprintf(line, sizeof(line), "A %d a\n", NOW + 60);
	assert_true(file_has(f->db, line));
	assert_int_equal(replay_sync(r), 0);
	/*
	 * A forget after a failed sync: out of memory at once, though the disk still fails (the
	 * id's grant was not applied, and a controller's retry must not be replay once the disk
	 * is mended), and the rewrite leaves the id out.
	 */
	fclose(fopen(fail, "w"));
	assert_int_equal(replay_add(r, "c", NOW + 60), -EIO);
	replay_forget(r, "c");
	assert_int_equal(replay_check(r, "c", NOW), 0);
	unlink(fail);
	usleep(1100000);
	assert_int_equal(replay_sync(r), 0);
	snprintf(line, sizeof(line), "A %d c\n", NOW + 60);
	assert_false(file_has(f->db, line));
	assert_int_equal(replay_check(r, "c", NOW), 0);
	replay_close(&r);
	assert_int_equal(replay_open(f->dir, 10, NOW, &r, NULL, 0), 0);
	assert_int_equal(replay_check(r, "a", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "b", NOW), JIT_ERR_REPLAY);
	assert_int_equal(replay_check(r, "c", NOW), 0);
	replay_close(&r);
	unsetenv("JITD_TEST_REPLAY_SYNC_FAIL_FILE");
}
#else
static void test_failed_sync_rewrites(void **state)
{
	(void)state;
	skip();
}
#endif

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_add_check, setup, teardown),
		cmocka_unit_test_setup_teardown(test_untrusted, setup, teardown),
		cmocka_unit_test_setup_teardown(test_survives_restart, setup, teardown),
		cmocka_unit_test_setup_teardown(test_start_with_clock_ahead, setup, teardown),
		cmocka_unit_test_setup_teardown(test_torn_line, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_open_when_rewrite_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewrite_over_fifo, setup, teardown),
		cmocka_unit_test_setup_teardown(test_add_group_write_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_compaction_and_garbage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_damaged_lines, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rewrite_only_when_worth_it, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tidy_while_running, setup, teardown),
		cmocka_unit_test_setup_teardown(test_busy_when_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_group_prunes_when_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keep_beyond_full, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keep_write_fails, setup, teardown),
		cmocka_unit_test_setup_teardown(test_many, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tombstones_reclaimed, setup, teardown),
		cmocka_unit_test_setup_teardown(test_failed_sync_rewrites, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
