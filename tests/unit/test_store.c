#include <dirent.h>
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cmocka.h>

#include "agent/store.h"

static char dir[] = "/tmp/jitd-test-store.XXXXXX";
static char path[512];

static const char *at(const char *name)
{
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	return path;
}

/* file's first size bytes into buf: how many there were. */
static ssize_t read_head(const char *file, unsigned char *buf, size_t size)
{
	ssize_t n;
	int fd = open(at(file), O_RDONLY);

	assert_true(fd >= 0);
	n = read(fd, buf, size);
	close(fd);
	assert_true(n >= 0);
	return n;
}

/* Whether the journal opens with the snapshot's epoch, its first record as the snapshot's. */
static bool journal_paired(void)
{
	unsigned char j[36], sn[36];

	return read_head("grants.journal", j, sizeof(j)) == 36 &&
		read_head("grants.snap", sn, sizeof(sn)) == 36 && !memcmp(j, sn, 36);
}

/*
 * Whether the journal is as a compaction leaves it: one record, the snapshot's epoch (a 12-byte
 * header, then 'D', "\001epoch " and 16 hex digits), as the snapshot's first record has it.
 */
static bool journal_emptied(void)
{
	unsigned char j[64];
	ssize_t n = read_head("grants.journal", j, sizeof(j));

	if (n != 36 || !journal_paired())
		return false;
	for (size_t i = 20; i < 36; i++)
		if (!strchr("0123456789abcdef", j[i]) || !j[i])
			return false;
	return j[0] == 0 && j[1] == 0 && j[2] == 0 && j[3] == 24 &&
		!memcmp(j + 12, "D\001epoch ", 8);
}

#define STORE_KEEP 0
#define STORE_REMOVE 1

/*
 * cb(token, len, annex, arg) for every record, as NUL-terminated copies; STORE_REMOVE removes
 * the record there and then, while the walk is open, as the interface allows.
 */
static int walk(struct store *st, int (*cb)(const char *, size_t, const char *, void *),
	void *arg)
{
	char tok[64], annex[64], jti[64];
	struct store_item *v;
	size_t n;
	int ret;

	if ((ret = store_items(st, &v, &n)))
		return ret;
	for (size_t i = 0; i < n; i++) {
		assert_true(v[i].len < sizeof(tok) && v[i].annex_len < sizeof(annex));
		memcpy(tok, v[i].token, v[i].len);
		tok[v[i].len] = '\0';
		if (v[i].annex) {
			memcpy(annex, v[i].annex, v[i].annex_len);
			annex[v[i].annex_len] = '\0';
		}
		snprintf(jti, sizeof(jti), "%s", v[i].jti);
		if (cb(tok, v[i].len, v[i].annex ? annex : NULL, arg) == STORE_REMOVE)
			assert_int_equal(store_del(st, jti), 0);
	}
	store_items_end(st, &v);
	assert_null(v);
	return 0;
}

struct seen {
	char all[1024];
	const char *remove;	/* token to drop during the walk */
};

static int collect(const char *token, size_t len, const char *annex __attribute__((unused)),
	void *arg)
{
	struct seen *s = arg;

	assert_int_equal(strlen(token), len);
	strcat(s->all, token);
	strcat(s->all, ";");
	return s->remove && !strcmp(token, s->remove) ? STORE_REMOVE : STORE_KEEP;
}

/* The walk's order is not part of the interface: compare sorted. */
static int cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

static void assert_tokens(struct store *st, const char *want)
{
	struct seen s = { 0 };
	char *parts[32], *save = NULL, sorted[1024] = "";
	size_t n = 0;

	assert_int_equal(walk(st, collect, &s), 0);
	for (char *p = strtok_r(s.all, ";", &save); p && n < 32; p = strtok_r(NULL, ";", &save))
		parts[n++] = p;
	qsort(parts, n, sizeof(parts[0]), cmp);
	for (size_t i = 0; i < n; i++) {
		strcat(sorted, parts[i]);
		strcat(sorted, ";");
	}
	assert_string_equal(sorted, want);
}

static struct store *reopen(struct store *st)
{
	store_close(&st);
	assert_null(st);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	return st;
}

static int setup(void **state)
{
	return mkdtemp(dir) ? 0 : -1;
}

static int teardown(void **state)
{
	DIR *d = opendir(dir);
	struct dirent *de;

	while (d && (de = readdir(d)))
		if (de->d_name[0] != '.' || strlen(de->d_name) > 2)
			unlink(at(de->d_name));
	if (d)
		closedir(d);
	return rmdir(dir);
}

/* A second store (another jitd) on a directory in use is refused, not let write over it. */
static void test_locked(void **state)
{
	struct store *st, *other = NULL;

	(void)state;
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_open(dir, &other, NULL, 0), -EBUSY);
	assert_null(other);
	assert_tokens(st, "tok-a;");
	/* Released by the close: the next store has it, and the record. */
	st = reopen(st);
	assert_tokens(st, "tok-a;");
	assert_int_equal(store_del(st, "a"), 0);
	store_close(&st);
}

/* A journal group or others may write is refused; why says which and why, for the start. */
static void test_untrusted(void **state)
{
	struct store *st = NULL;
	char why[1024] = "", want[1024];

	(void)state;
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	store_close(&st);
	assert_int_equal(chmod(at("grants.journal"), 0620), 0);
	assert_int_equal(store_open(dir, &st, why, sizeof(why)), -EPERM);
	assert_null(st);
	snprintf(want, sizeof(want), "%s is writable by group or others: whoever may write it "
		"could give themselves access (make it a regular file of root's, writable only by "
		"its owner)", at("grants.journal"));
	assert_string_equal(why, want);
	assert_int_equal(chmod(at("grants.journal"), 0600), 0);
	why[0] = '\0';
	assert_int_equal(store_open(dir, &st, why, sizeof(why)), 0);
	assert_string_equal(why, "");
	store_close(&st);
}

static void test_journal(void **state)
{
	struct store *st;
	struct seen s = { .remove = "tok-b" };

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	assert_int_equal(store_put(st, "c", "tok-c", 5), 0);
	assert_int_equal(store_del(st, "a"), 0);
	assert_int_equal(store_del(st, "nobody"), 0);
	/* Same jti again: replaced, not doubled. */
	assert_int_equal(store_put(st, "c", "tok-C", 5), 0);
	st = reopen(st);
	assert_tokens(st, "tok-C;tok-b;");
	/* STORE_REMOVE during the walk is durable too. */
	assert_int_equal(walk(st, collect, &s), 0);
	st = reopen(st);
	assert_tokens(st, "tok-C;");
	assert_int_equal(store_del(st, "c"), 0);
	st = reopen(st);
	assert_tokens(st, "");
	store_close(&st);
}

/* A group's records go in with one write and come back as a group; so do their deletions. */
static void test_group(void **state)
{
	const struct store_rec recs[] = { { "g1", "tok-g1", 6, NULL }, { "g2", "tok-g2", 6, NULL },
		{ "g3", "tok-g3", 6, NULL } };
	const char *gone[] = { "g1", "g3", "never-there" };
	struct store *st;
	struct stat sb;
	off_t before;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	before = sb.st_size;
	assert_int_equal(store_put_many(st, recs, 3), 0);
	assert_true(store_contains(st, "g2"));
	assert_false(store_contains(st, "g4"));
	st = reopen(st);
	assert_tokens(st, "tok-g1;tok-g2;tok-g3;");
	assert_int_equal(store_del_many(st, gone, 3), 0);
	assert_false(store_contains(st, "g1"));
	st = reopen(st);
	assert_tokens(st, "tok-g2;");
	/* Three puts and two deletions: five records, none for the id that was never there. */
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_int_equal(sb.st_size - before, 3 * (12 + 1 + 2 + 1 + 6) + 2 * (12 + 1 + 2));
	assert_int_equal(store_del(st, "g2"), 0);
	store_close(&st);
}

/* A child's exit status: 0 when fn returned 0. */
static int in_child(int (*fn)(void))
{
	pid_t pid = fork();
	int status;

	assert_true(pid >= 0);
	if (!pid)
		_exit(fn() ? 1 : 0);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static int write_two(void)
{
	struct store *st;

	if (store_open(dir, &st, NULL, 0) || store_put(st, "x", "tok-x", 5) ||
		store_put(st, "y", "tok-y", 5))
		return -1;
	store_close(&st);
	return 0;
}

static char null_conf[512];

/* With OpenSSL configured to offer no SHA-256, the store must refuse to open. */
static int open_without_digest(void)
{
	struct store *st = NULL;

	setenv("OPENSSL_CONF", null_conf, 1);
	return store_open(dir, &st, NULL, 0) == -EIO && !st ? 0 : -1;
}

/*
 * A checksum that cannot be computed is no damage: the open fails and the journal keeps every
 * record, where treating it as a torn tail would cut them all. Run first, in children, so that
 * OpenSSL reads the configuration that offers no digest (it does so once per process).
 */
static void test_no_digest_keeps_journal(void **state __attribute__((unused)))
{
	struct stat before, after;
	struct store *st;
	FILE *f;

	assert_int_equal(in_child(write_two), 0);
	assert_int_equal(stat(at("grants.journal"), &before), 0);
	snprintf(null_conf, sizeof(null_conf), "%s/null.cnf", dir);
	assert_non_null(f = fopen(null_conf, "w"));
	fputs("openssl_conf = init\n[init]\nproviders = prov\n[prov]\nnull = null_sect\n"
		"[null_sect]\nactivate = 1\n", f);
	fclose(f);
	assert_int_equal(in_child(open_without_digest), 0);
	assert_int_equal(stat(at("grants.journal"), &after), 0);
	assert_int_equal(after.st_size, before.st_size);
	assert_int_equal(unlink(null_conf), 0);
	/* With the digest, both records are there. */
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-x;tok-y;");
	assert_int_equal(store_del(st, "x"), 0);
	assert_int_equal(store_del(st, "y"), 0);
	store_close(&st);
}

/* Files in the store's directory whose names start with prefix. */
static size_t count_named(const char *prefix)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t n = 0;

	assert_non_null(d);
	while ((de = readdir(d)))
		n += !strncmp(de->d_name, prefix, strlen(prefix));
	closedir(d);
	return n;
}

static void test_torn_tail(void **state)
{
	size_t copies = count_named("grants.journal.corrupt-");
	struct store *st;
	struct stat sb;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "x", "tok-x", 5), 0);
	assert_int_equal(store_put(st, "y", "tok-y", 5), 0);
	store_close(&st);
	/* A crash in the middle of the last append. */
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_int_equal(truncate(path, sb.st_size - 3), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-x;");
	/* Expected after a crash: no copy for a post-mortem. */
	assert_int_equal(count_named("grants.journal.corrupt-"), copies);
	/* Appends continue after the last good record. */
	assert_int_equal(store_put(st, "z", "tok-z", 5), 0);
	st = reopen(st);
	assert_tokens(st, "tok-x;tok-z;");
	assert_int_equal(store_del(st, "x"), 0);
	assert_int_equal(store_del(st, "z"), 0);
	store_close(&st);
}

/* A file system that extended the file before the data reached the disk leaves zeros. */
static void test_zero_tail(void **state)
{
	size_t copies = count_named("grants.journal.corrupt-");
	static const char zeros[4096];
	struct store *st;
	struct stat sb;
	off_t size;
	int fd;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "u", "tok-u", 5), 0);
	store_close(&st);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	size = sb.st_size;
	fd = open(path, O_WRONLY | O_APPEND);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, zeros, sizeof(zeros)), sizeof(zeros));
	close(fd);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-u;");
	assert_int_equal(count_named("grants.journal.corrupt-"), copies);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_int_equal(sb.st_size, size);
	assert_int_equal(store_del(st, "u"), 0);
	store_close(&st);
}

/*
 * Damage before the journal's end is no crash. It is cut off all the same, with the sound
 * record after it (fail closed: the damaged record could have been a grant's end), but a copy
 * of the journal as it was is kept first.
 */
static void test_journal_damage(void **state)
{
	size_t copies = count_named("grants.journal.corrupt-");
	struct stat sb, damaged;
	struct store *st;
	off_t before;
	DIR *d;
	struct dirent *de;
	bool copy_whole = false;
	int fd;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "m", "tok-m", 5), 0);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	before = sb.st_size;
	assert_int_equal(store_put(st, "n", "tok-n", 5), 0);
	assert_int_equal(store_put(st, "o", "tok-o", 5), 0);
	store_close(&st);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	/* A byte of n's payload (after its 12-byte header): o, after it, stays whole. */
	assert_int_equal(pwrite(fd, "!", 1, before + 13), 1);
	close(fd);
	assert_int_equal(stat(path, &damaged), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-m;");
	assert_int_equal(count_named("grants.journal.corrupt-"), copies + 1);
	/* Status shows it (store_damage), not only the log. */
	assert_int_equal(store_damage(st)->count, 1);
	assert_true(store_damage(st)->at > 0);
	assert_non_null(strstr(store_damage(st)->last, "grants.journal is damaged after "));
	assert_non_null(strstr(store_damage(st)->last,
		"before its end; kept as grants.journal.corrupt-"));
	d = opendir(dir);
	while (d && (de = readdir(d))) {
		struct stat cb;

		if (!strncmp(de->d_name, "grants.journal.corrupt-", 23) &&
			stat(at(de->d_name), &cb) == 0 && cb.st_size == damaged.st_size)
			copy_whole = true;
	}
	closedir(d);
	assert_true(copy_whole);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_int_equal(sb.st_size, before);
	/* Cut once: the next start finds a sound journal and makes no copy. */
	st = reopen(st);
	assert_tokens(st, "tok-m;");
	assert_int_equal(count_named("grants.journal.corrupt-"), copies + 1);
	assert_int_equal(store_damage(st)->count, 0);
	assert_string_equal(store_damage(st)->last, "");
	assert_int_equal(store_del(st, "m"), 0);
	store_close(&st);
}

/*
 * A journal of p, q and r, then p's deletion; n bytes of buf written over it at r's record
 * (its 12-byte header, then its payload) plus off.
 */
/* An empty store given p and q: the journal's length after them (where the next record goes). */
static off_t open_with_pq(struct store **st)
{
	struct stat sb;

	assert_int_equal(store_open(dir, st, NULL, 0), 0);
	assert_tokens(*st, "");
	assert_int_equal(store_put(*st, "p", "tok-p", 5), 0);
	assert_int_equal(store_put(*st, "q", "tok-q", 5), 0);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	return sb.st_size;
}

static void journal_damaged_at_r(const void *buf, size_t n, off_t off)
{
	struct store *st;
	off_t r = open_with_pq(&st);
	int fd;

	assert_int_equal(store_put(st, "r", "tok-r", 5), 0);
	assert_int_equal(store_del(st, "p"), 0);
	store_close(&st);
	fd = open(at("grants.journal"), O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, buf, n, r + off), (ssize_t)n);
	close(fd);
}

/*
 * Damage before the journal's end: the records after it go, but a deletion among them (a grant
 * revoked after the damaged record was written) still applies, at this start and the next.
 */
static void test_journal_damage_keeps_later_deletions(void **state)
{
	struct store *st;
	struct stat sb;

	/* A byte of r's payload: p's deletion, after it, stays whole. */
	journal_damaged_at_r("!", 1, 13);
	/* A FIFO left at the temporary file's name is replaced, not written into. */
	assert_int_equal(mkfifo(at("grants.journal.tmp"), 0600), 0);
	alarm(20);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	alarm(0);
	assert_tokens(st, "tok-q;");
	assert_int_equal(store_damage(st)->count, 1);
	/* Cut and the deletion written again in one rename: no temporary file is left. */
	assert_int_not_equal(stat(at("grants.journal.tmp"), &sb), 0);
	st = reopen(st);
	assert_tokens(st, "tok-q;");
	assert_int_equal(store_damage(st)->count, 0);
	assert_int_equal(store_del(st, "q"), 0);
	store_close(&st);
}

/*
 * A deletion's own record damaged (a byte of its checksum): the records before it still hold the
 * grant it ended, which must not come back, whether the deletion is the journal's last record
 * (read as a torn tail) or sound records follow it.
 */
static void test_damaged_deletion_still_deletes(void **state)
{
	for (int last = 0; last < 2; last++) {
		struct store *st;
		off_t d = open_with_pq(&st);
		int fd;

		assert_int_equal(store_del(st, "p"), 0);
		if (!last)
			assert_int_equal(store_put(st, "r", "tok-r", 5), 0);
		store_close(&st);
		fd = open(at("grants.journal"), O_WRONLY);
		assert_true(fd >= 0);
		assert_int_equal(pwrite(fd, "!", 1, d + 4), 1);
		close(fd);
		assert_int_equal(store_open(dir, &st, NULL, 0), 0);
		/* r, after the damage, goes with it (fail closed); p stays deleted. */
		assert_tokens(st, "tok-q;");
		/*
		 * Shown as damage, naming the grant it ended, also when read as a torn tail (and
		 * after the cut's own finding when records followed it).
		 */
		assert_int_equal(store_damage(st)->count, last ? 1 : 2);
		assert_non_null(strstr(store_damage(st)->last, "reads as the end of grant 'p'"));
		st = reopen(st);
		assert_tokens(st, "tok-q;");
		assert_int_equal(store_del(st, "q"), 0);
		store_close(&st);
	}
}

/*
 * A record's length damaged so that it claims to run past the end of the file, as a torn last
 * append would: sound records follow it, so it is damage, and the deletion among them holds.
 */
static void test_damaged_length_is_no_torn_tail(void **state)
{
	static const unsigned char claim[4] = { 0, 0, 0x9c, 0x40 }; /* 40,000 bytes */
	struct store *st;

	/* r's header: its payload length (the first 4 bytes), big-endian. */
	journal_damaged_at_r(claim, sizeof(claim), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-q;");
	/* Damage, not a torn tail: found and shown (the copy's name may be taken this second). */
	assert_int_equal(store_damage(st)->count, 1);
	st = reopen(st);
	assert_tokens(st, "tok-q;");
	assert_int_equal(store_del(st, "q"), 0);
	store_close(&st);
}

/* A byte of the snapshot's last record's payload changed: the records before it stay sound. */
static void damage_snapshot_end(void)
{
	struct stat sb;
	int fd;

	assert_int_equal(stat(at("grants.snap"), &sb), 0);
	fd = open(path, O_WRONLY);
	assert_true(fd >= 0);
	assert_int_equal(pwrite(fd, "!", 1, sb.st_size - 2), 1);
	close(fd);
}

static void test_snapshot(void **state)
{
	struct store *st;
	struct stat sb;
	DIR *d;
	struct dirent *de;
	bool aside = false;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "p", "tok-p", 5), 0);
	assert_int_equal(store_put(st, "q", "tok-q", 5), 0);
	/* A FIFO left at the temporary file's name is replaced, not written into. */
	assert_int_equal(mkfifo(at(".grants.snap.tmp"), 0600), 0);
	alarm(20);
	assert_int_equal(store_compact(st), 0);
	alarm(0);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_true(journal_emptied());
	assert_int_equal(store_put(st, "r", "tok-r", 5), 0);
	st = reopen(st);
	assert_tokens(st, "tok-p;tok-q;tok-r;");
	store_close(&st);
	/* Damage the second snapshot record's payload: the first survives, the file moves aside. */
	damage_snapshot_end();
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-p;tok-r;");
	assert_int_equal(store_damage(st)->count, 1);
	assert_non_null(strstr(store_damage(st)->last, "grants.snap is corrupt after "));
	assert_non_null(strstr(store_damage(st)->last, "kept as grants.snap.corrupt-"));
	/* What survived is in a sound snapshot at once, not only in memory. */
	st = reopen(st);
	assert_tokens(st, "tok-p;tok-r;");
	d = opendir(dir);
	while (d && (de = readdir(d)))
		if (!strncmp(de->d_name, "grants.snap.corrupt-", 20))
			aside = true;
	closedir(d);
	assert_true(aside);
	assert_int_equal(store_del(st, "p"), 0);
	assert_int_equal(store_del(st, "r"), 0);
	store_close(&st);
}

/*
 * The good records of a damaged snapshot are nowhere else until a sound snapshot replaces it: a
 * start whose compaction fails (here: its temporary file cannot be made) must leave them for
 * the next start.
 */
static void test_snapshot_damage_outlives_failed_compaction(void **state)
{
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(store_put(st, "c", "tok-c", 5), 0);
	store_close(&st);
	damage_snapshot_end();
	assert_int_equal(mkdir(at(".grants.snap.tmp"), 0700), 0);
	assert_int_not_equal(store_open(dir, &st, NULL, 0), 0);
	assert_null(st);
	assert_int_equal(rmdir(at(".grants.snap.tmp")), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-a;tok-c;");
	st = reopen(st);
	assert_tokens(st, "tok-a;tok-c;");
	assert_int_equal(store_del(st, "a"), 0);
	assert_int_equal(store_del(st, "c"), 0);
	store_close(&st);
}

/* The first byte of what in file (a token: each is in one record) overwritten. */
static void damage_record(const char *file, const char *what)
{
	char buf[4096], *hit;
	ssize_t n;
	int fd = open(at(file), O_RDWR);

	assert_true(fd >= 0);
	n = pread(fd, buf, sizeof(buf), 0);
	assert_true(n > 0);
	hit = memmem(buf, (size_t)n, what, strlen(what));
	assert_non_null(hit);
	assert_int_equal(pwrite(fd, "!", 1, hit - buf), 1);
	close(fd);
}

/*
 * A record that no longer matches its checksum when a compaction copies it (a page whose
 * writeback failed, evicted and read back stale) is not copied as if sound: a start cuts a
 * snapshot at its first bad record, with every grant after it. It is left out, the others kept.
 */
static void count_call(void *arg)
{
	(*(int *)arg)++;
}

static void test_compaction_leaves_damage_out(void **state)
{
	size_t copies = count_named("grants.snap.corrupt-");
	struct store *st;
	int hooked = 0;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(store_put(st, "c", "tok-c", 5), 0);
	assert_int_equal(store_put(st, "d", "tok-d", 5), 0);
	damage_record("grants.snap", "tok-a");
	damage_record("grants.journal", "tok-c");
	assert_int_equal(store_damage(st)->count, 0);
	store_set_damage_hook(st, count_call, &hooked);
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(hooked, 2);
	assert_false(store_contains(st, "a"));
	assert_false(store_contains(st, "c"));
	/* One finding per grant left out, each naming it; the last one is shown. */
	assert_int_equal(store_damage(st)->count, 2);
	assert_true(strstr(store_damage(st)->last, "the record of grant 'a' is damaged") ||
		strstr(store_damage(st)->last, "the record of grant 'c' is damaged"));
	st = reopen(st);
	assert_tokens(st, "tok-b;tok-d;");
	assert_int_equal(count_named("grants.snap.corrupt-"), copies);
	assert_int_equal(store_del(st, "b"), 0);
	assert_int_equal(store_del(st, "d"), 0);
	store_close(&st);
}

/*
 * After a failed sync (here: reported by the syncer's caller) nothing more is written until
 * every record is rewritten into a new snapshot; while that cannot be done (its temporary file
 * cannot be made) every write fails, a failed drop leaves memory all the same, and the rewrite
 * that then holds answers the drop again and leaves the record out.
 */
static void test_rewritten_after_failed_sync(void **state)
{
	struct store *st;
	struct stat sb;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	store_sync_failed(st);
	assert_int_equal(mkdir(at(".grants.snap.tmp"), 0700), 0);
	assert_int_not_equal(store_put(st, "c", "tok-c", 5), 0);
	assert_false(store_contains(st, "c"));
	assert_int_not_equal(store_del(st, "a"), 0);
	assert_false(store_contains(st, "a"));
	assert_int_not_equal(store_del(st, "a"), 0);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_true(sb.st_size > 0);
	assert_int_equal(rmdir(at(".grants.snap.tmp")), 0);
	/* A failed rewrite is tried again a second later at the soonest. */
	assert_int_not_equal(store_del(st, "a"), 0);
	usleep(1100 * 1000);
	/* The drop asked again: answered by the rewrite, which holds now. */
	assert_int_equal(store_del(st, "a"), 0);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_true(journal_emptied());
	assert_int_equal(store_put(st, "c", "tok-c", 5), 0);
	st = reopen(st);
	assert_tokens(st, "tok-b;tok-c;");
	assert_int_equal(store_del(st, "b"), 0);
	assert_int_equal(store_del(st, "c"), 0);
	store_close(&st);
}

/* Whether what is in the first 4 KiB of file. */
static bool file_holds(const char *file, const char *what)
{
	char buf[4096];
	ssize_t n;
	int fd = open(at(file), O_RDONLY);

	assert_true(fd >= 0);
	n = read(fd, buf, sizeof(buf));
	close(fd);
	assert_true(n >= 0);
	return memmem(buf, (size_t)n, what, strlen(what)) != NULL;
}

/*
 * A drop after a failed sync (a group's grants withdrawn) leaves memory before the rewrite:
 * the new snapshot never holds the dropped record, so that no crash before a later drop
 * record could bring it back.
 */
static void test_drop_left_out_of_rewrite(void **state)
{
	struct store *st;
	struct stat sb;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	assert_int_equal(store_put(st, "c", "tok-c", 5), 0);
	store_sync_failed(st);
	assert_int_equal(store_del(st, "b"), 0);
	assert_false(store_contains(st, "b"));
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_true(journal_emptied());
	assert_true(file_holds("grants.snap", "tok-a"));
	assert_false(file_holds("grants.snap", "tok-b"));
	/* The same for a drop of several records at once. */
	store_sync_failed(st);
	assert_int_equal(store_del_many(st, (const char *const[]){ "c" }, 1), 0);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_true(journal_emptied());
	assert_false(file_holds("grants.snap", "tok-c"));
	st = reopen(st);
	assert_tokens(st, "tok-a;");
	assert_int_equal(store_del(st, "a"), 0);
	store_close(&st);
}

/* file's whole content (at most 4 KiB) into buf: its length. */
static size_t read_whole(const char *file, char *buf, size_t size)
{
	ssize_t n;
	int fd = open(at(file), O_RDONLY);

	assert_true(fd >= 0);
	n = read(fd, buf, size);
	close(fd);
	assert_true(n >= 0 && (size_t)n < size);
	return (size_t)n;
}

/* file holding buf (n bytes) from its byte from on: what was before from is gone. */
static void write_whole(const char *file, const char *buf, size_t n, size_t from)
{
	int fd = open(at(file), O_WRONLY | O_TRUNC);

	assert_true(fd >= 0 && from <= n);
	assert_int_equal(write(fd, buf + from, n - from), (ssize_t)(n - from));
	close(fd);
}

/*
 * A compaction renames its snapshot into place, then empties the journal. jitd stopped in
 * between (here: the journal written back as it was) must not replay the old journal over the
 * new snapshot: a drop after a failed sync left memory alone, and its grant came back. The old
 * journal opens with the epoch of the compaction before, each a new one. A grant whose last
 * record in it is a deletion ends: a jitd from before epochs, after a rollback, appends to it
 * (here: records copied from a journal this store wrote).
 */
static void test_old_journal_left_out(void **state)
{
	char old[4096], now[4096];
	size_t n, m;
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	assert_int_equal(store_put(st, "c", "tok-c", 5), 0);
	n = read_whole("grants.journal", old, sizeof(old));
	assert_true(memmem(old, n, "\001epoch ", 7) == old + 13);
	store_sync_failed(st);
	assert_int_equal(store_del(st, "b"), 0);
	assert_true(journal_emptied());
	store_close(&st);
	write_whole("grants.journal", old, n, 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-a;tok-c;");
	/* Left as it is until a write: the new snapshot's rename may not be durable yet. */
	assert_true(file_holds("grants.journal", "tok-b"));
	assert_int_equal(store_put(st, "d", "tok-d", 5), 0);
	assert_false(file_holds("grants.journal", "tok-b"));
	st = reopen(st);
	assert_tokens(st, "tok-a;tok-c;tok-d;");
	/*
	 * a's deletion, then its record again (taken back, sent again), after the old journal's
	 * records, beside a snapshot holding a: its last record is the grant's, and it stays.
	 */
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(store_del(st, "a"), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	m = read_whole("grants.journal", now, sizeof(now));
	assert_true(m > 36 + 14 && n + m - 36 < sizeof(old) && !memcmp(now + 48, "Da", 2));
	memcpy(old + n, now + 36, m - 36);
	assert_int_equal(store_compact(st), 0);
	store_close(&st);
	write_whole("grants.journal", old, n + m - 36, 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-a;tok-c;tok-d;");
	store_close(&st);
	/* The rollback: a's deletion alone appended (a jitd from before epochs): a ends. */
	write_whole("grants.journal", old, n + 14, 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-c;tok-d;");
	st = reopen(st);
	assert_tokens(st, "tok-c;tok-d;");
	assert_int_equal(store_del_many(st, (const char *const[]){ "c", "d" }, 2), 0);
	st = reopen(st);
	assert_tokens(st, "");
	store_close(&st);
}

/*
 * jitd stopped after a compaction emptied the journal and before the epoch was in it: the next
 * start puts the epoch first, or what it appends would be taken for an older journal's. The
 * epoch pairs the journal with a snapshot; without one the journal is all there is.
 */
static void test_emptied_journal_gets_its_epoch(void **state)
{
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_compact(st), 0);
	store_close(&st);
	assert_int_equal(truncate(at("grants.journal"), 0), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_true(journal_emptied());
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	st = reopen(st);
	assert_tokens(st, "tok-a;tok-b;");
	/* With its snapshot gone, a journal with an epoch is still read: all there is. */
	store_close(&st);
	assert_int_equal(unlink(at("grants.snap")), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-b;");
	assert_int_equal(store_del(st, "b"), 0);
	store_close(&st);
}

/*
 * The journal's epoch damaged: the journal is cut there, and the deletions found after it stay,
 * recorded again after the epoch (without it, a stop inside the next compaction would have the
 * journal replayed over the new snapshot, as one from before epochs).
 */
static void test_damaged_epoch(void **state)
{
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(store_del(st, "a"), 0);
	store_close(&st);
	damage_record("grants.journal", "epoch");
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-b;");
	assert_true(journal_paired());
	st = reopen(st);
	assert_tokens(st, "tok-b;");
	assert_int_equal(store_del(st, "b"), 0);
	store_close(&st);
}

/*
 * A journal with no epoch was written by a jitd from before epochs (here: the epoch cut off),
 * after a rollback that found it emptied: it is read over the snapshot, as that jitd did. So is
 * state from before epochs (both cut off); the next compaction gives both an epoch.
 */
static void test_state_before_epochs(void **state)
{
	char buf[4096];
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(store_put(st, "c", "tok-c", 5), 0);
	assert_int_equal(store_del(st, "a"), 0);
	store_close(&st);
	write_whole("grants.journal", buf, read_whole("grants.journal", buf, sizeof(buf)), 36);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-b;tok-c;");
	store_close(&st);
	write_whole("grants.snap", buf, read_whole("grants.snap", buf, sizeof(buf)), 36);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-b;tok-c;");
	assert_int_equal(store_put(st, "d", "tok-d", 5), 0);
	st = reopen(st);
	assert_tokens(st, "tok-b;tok-c;tok-d;");
	assert_int_equal(store_compact(st), 0);
	assert_true(journal_emptied());
	assert_int_equal(store_del(st, "b"), 0);
	st = reopen(st);
	assert_tokens(st, "tok-c;tok-d;");
	assert_int_equal(store_del_many(st, (const char *const[]){ "c", "d" }, 2), 0);
	store_close(&st);
}

#ifdef JITD_TEST_HOOKS
/*
 * A compaction whose snapshot is renamed into place but whose directory sync then fails has
 * replaced the snapshot all the same, for the next start of jitd: the store goes on with the
 * new epoch, and writes nothing to the old journal (which a start leaves out) before a rewrite
 * that holds. The hook fails that sync without a disk.
 */
static void test_compaction_fails_after_rename(void **state)
{
	char fail[600];
	struct store *st;

	snprintf(fail, sizeof(fail), "%s", at("dirfail"));
	assert_int_equal(setenv("JITD_TEST_STATE_DIR_SYNC_FAIL_FILE", fail, 1), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "x", "tok-x", 5), 0);
	assert_int_equal(store_put(st, "y", "tok-y", 5), 0);
	fclose(fopen(fail, "w"));
	assert_int_equal(store_compact(st), -EIO);
	unlink(fail);
	/* The old journal stays: a power loss may bring back the old snapshot, which needs it. */
	assert_true(file_holds("grants.journal", "tok-x"));
	/* A restart now: the new snapshot holds both; the journal, older, waits for a write. */
	st = reopen(st);
	assert_tokens(st, "tok-x;tok-y;");
	assert_true(file_holds("grants.journal", "tok-x"));
	fclose(fopen(fail, "w"));
	assert_int_equal(store_compact(st), -EIO);
	unlink(fail);
	/* Written after a rewrite, not to the journal of the epoch before. */
	assert_int_equal(store_put(st, "z", "tok-z", 5), 0);
	assert_int_equal(store_del(st, "x"), 0);
	st = reopen(st);
	assert_tokens(st, "tok-y;tok-z;");
	assert_int_equal(store_del_many(st, (const char *const[]){ "y", "z" }, 2), 0);
	store_close(&st);
	unsetenv("JITD_TEST_STATE_DIR_SYNC_FAIL_FILE");
}

/*
 * A drop written whole whose own sync failed stays in the journal (the page cache at least):
 * cut back, a restart of jitd before the rewrite brought back the grant it ended, a revoked
 * one among them. The hook makes the journal's fdatasync report EIO without a disk.
 */
static void test_drop_kept_after_its_sync_failed(void **state)
{
	char fail[600];
	struct store *st;

	snprintf(fail, sizeof(fail), "%s", at("fail"));
	assert_int_equal(setenv("JITD_TEST_JOURNAL_SYNC_FAIL_FILE", fail, 1), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put(st, "a", "tok-a", 5), 0);
	assert_int_equal(store_put(st, "b", "tok-b", 5), 0);
	assert_int_equal(store_put(st, "c", "tok-c", 5), 0);
	fclose(fopen(fail, "w"));
	assert_int_equal(store_del(st, "a"), -EIO);
	assert_false(store_contains(st, "a"));
	st = reopen(st);
	assert_tokens(st, "tok-b;tok-c;");
	/* The same for several at once. */
	assert_int_equal(store_del_many(st, (const char *const[]){ "b" }, 1), -EIO);
	st = reopen(st);
	assert_tokens(st, "tok-c;");
	/* A grant's own record whose sync failed is cut: its grant was refused. */
	assert_int_equal(store_put(st, "d", "tok-d", 5), -EIO);
	unlink(fail);
	st = reopen(st);
	assert_tokens(st, "tok-c;");
	assert_int_equal(store_del(st, "c"), 0);
	store_close(&st);
	unsetenv("JITD_TEST_JOURNAL_SYNC_FAIL_FILE");
}
#else
static void test_drop_kept_after_its_sync_failed(void **state)
{
	(void)state;
	skip();
}

static void test_compaction_fails_after_rename(void **state)
{
	(void)state;
	skip();
}
#endif

static int count_cb(const char *token, size_t len, const char *annex __attribute__((unused)),
	void *arg)
{
	char want[16];

	/* Every token left must be one that was not deleted: t<i> with i not a multiple of 3. */
	snprintf(want, sizeof(want), "t%d", atoi(token + 1));
	assert_string_equal(token, want);
	assert_int_not_equal(atoi(token + 1) % 3, 0);
	(*(size_t *)arg)++;
	return STORE_KEEP;
}

/* Enough entries for several rehashes and shared buckets; deletes in an order that moves many. */
static void test_many(void **state)
{
	struct store *st;
	char jti[16], tok[16];
	size_t n = 0;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	for (int i = 0; i < 300; i++) {
		snprintf(jti, sizeof(jti), "g%d", i);
		snprintf(tok, sizeof(tok), "t%d", i);
		assert_int_equal(store_put(st, jti, tok, strlen(tok)), 0);
	}
	for (int i = 0; i < 300; i += 3) {
		snprintf(jti, sizeof(jti), "g%d", i);
		assert_int_equal(store_del(st, jti), 0);
	}
	st = reopen(st);
	assert_int_equal(walk(st, count_cb, &n), 0);
	assert_int_equal(n, 200);
	for (int i = 299; i >= 0; i--) {
		snprintf(jti, sizeof(jti), "g%d", i);
		assert_int_equal(store_del(st, jti), 0);
	}
	st = reopen(st);
	assert_tokens(st, "");
	store_close(&st);
}

static int count_any(const char *token, size_t len, const char *annex __attribute__((unused)),
	void *arg)
{
	(*(size_t *)arg)++;
	return STORE_KEEP;
}

static off_t journal_size(void)
{
	struct stat sb;

	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	return sb.st_size;
}

/*
 * A snapshot rewrites every live grant, so it comes only once the journal holds as many records
 * as there are live grants (and at least 4096): its cost stays proportional to the changes.
 */
static void test_compaction_pace(void **state)
{
	struct store *st;
	char jti[16], tok[16];
	size_t n = 0;
	off_t before;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_compact(st), 0); /* what earlier tests left: out of the count */
	for (int i = 0; i < 4096; i++) {
		snprintf(jti, sizeof(jti), "p%d", i);
		snprintf(tok, sizeof(tok), "t%d", i);
		assert_int_equal(store_put(st, jti, tok, strlen(tok)), 0);
	}
	assert_true(journal_emptied()); /* 4096 records, 4096 live: into the snapshot */
	for (int i = 4096; i < 8192; i++) {
		snprintf(jti, sizeof(jti), "p%d", i);
		snprintf(tok, sizeof(tok), "t%d", i);
		assert_int_equal(store_put(st, jti, tok, strlen(tok)), 0);
	}
	/* 4096 records now, but 8192 live: a snapshot would rewrite twice what changed. */
	before = journal_size();
	assert_true(before > 0);
	assert_int_equal(store_del(st, "p0"), 0);
	assert_true(journal_size() > before);
	st = reopen(st);
	assert_int_equal(walk(st, count_any, &n), 0);
	assert_int_equal(n, 8191);
	for (int i = 1; i < 8192; i++) {
		snprintf(jti, sizeof(jti), "p%d", i);
		assert_int_equal(store_del(st, jti), 0);
	}
	store_close(&st);
}

/* Grant i's token in test_release: long, and different in every byte position it can be. */
#define BIG_N 6000
#define BIG_LEN 700
static void big_token(int i, char *tok)
{
	int n = snprintf(tok, BIG_LEN + 1, "t%d-", i);

	for (int k = n; k < BIG_LEN; k++)
		tok[k] = (char)('a' + (i + k) % 26);
	tok[BIG_LEN] = '\0';
}

static void assert_big(const struct store_item *v, size_t n)
{
	char want[BIG_LEN + 1];

	assert_int_equal(n, BIG_N);
	for (size_t i = 0; i < n; i++) {
		assert_int_equal(v[i].len, BIG_LEN);
		big_token(atoi(v[i].token + 1), want);
		assert_memory_equal(v[i].token, want, BIG_LEN);
	}
}

/* This process's file-backed resident memory (kB): what a mapped walk holds. */
static long rss_file_kb(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kb = -1;

	assert_non_null(f);
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "RssFile: %ld", &kb) == 1)
			break;
	fclose(f);
	assert_true(kb >= 0);
	return kb;
}

/* The store, emptied of what earlier tests left, then b0 .. b<BIG_N - 1> put in order. */
static struct store *open_big(void)
{
	char jti[16], tok[BIG_LEN + 1];
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_compact(st), 0);
	for (int i = 0; i < BIG_N; i++) {
		snprintf(jti, sizeof(jti), "b%d", i);
		big_token(i, tok);
		assert_int_equal(store_put(st, jti, tok, BIG_LEN), 0);
	}
	return st;
}

/* Removes b<from> .. b<to - 1>. */
static void del_big(struct store *st, int from, int to)
{
	char jti[16];

	for (int i = from; i < to; i++) {
		snprintf(jti, sizeof(jti), "b%d", i);
		assert_int_equal(store_del(st, jti), 0);
	}
}

/*
 * A walk gives its mapped pages back as it goes (store_items_done; the load and a compaction
 * on their own), and every record still reads back whole afterwards, from a snapshot and a
 * journal of several megabytes each.
 */
static void test_release(void **state)
{
	struct store_item *v;
	struct store *st = open_big();
	long before;
	size_t n;

	st = reopen(st);
	assert_int_equal(store_items(st, &v, &n), 0);
	assert_big(v, n);
	before = rss_file_kb();
	for (size_t i = 0; i < n; i += 100)
		store_items_done(st, &v[i], n - i < 100 ? n - i : 100);
	/* 4 MB of records were resident; most of it is given back. */
	assert_true(before - rss_file_kb() > 2048);
	assert_big(v, n);
	store_items_end(st, &v);
	assert_int_equal(store_compact(st), 0);
	st = reopen(st);
	assert_int_equal(store_items(st, &v, &n), 0);
	assert_big(v, n);
	/* Now all in the snapshot: the journal is empty, and not mapped. */
	store_items_done(st, v, n);
	assert_big(v, n);
	store_items_end(st, &v);
	del_big(st, 0, BIG_N);
	store_close(&st);
}

/*
 * A removal moves the last entry into its gap. The walk still reads the files forward, in their
 * order, giving back what it has read as it goes: it holds about one RELEASE_STEP, not the
 * journal's 4 MB, and its items come in the order the records were put.
 */
static void test_release_after_removals(void **state)
{
	struct store_item *v;
	struct store *st = open_big();
	long before;
	size_t n;

	(void)state;
	del_big(st, 0, 50);
	before = rss_file_kb();
	assert_int_equal(store_items(st, &v, &n), 0);
	assert_true(rss_file_kb() - before < 2048);
	assert_int_equal(n, BIG_N - 50);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(atoi(v[i].token + 1), 50 + (int)i);
	store_items_end(st, &v);
	del_big(st, 50, BIG_N);
	store_close(&st);
}

static int find_annex(const char *token, size_t len, const char *annex, void *arg)
{
	const char **want = arg;

	if (len == strlen(want[0]) && !memcmp(token, want[0], len)) {
		assert_non_null(annex);
		assert_string_equal(annex, want[1]);
		want[2] = "seen";
	} else if (!strcmp(token, "tok-plain")) {
		assert_null(annex);
	}
	return STORE_KEEP;
}

/* A grant's annex (its gateway ports) comes back with it, from the journal and a snapshot. */
static void test_annex(void **state)
{
	const struct store_rec r[2] = {
		{ "an1", "tok-annexed", 11, "dnat=50017,50018" },
		{ "an2", "tok-plain", 9, NULL },
	};
	const char *want[3] = { "tok-annexed", "dnat=50017,50018", NULL };
	struct store *st;

	(void)state;
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_put_many(st, r, 2), 0);
	st = reopen(st);
	assert_int_equal(walk(st, find_annex, want), 0);
	assert_non_null(want[2]);
	assert_int_equal(store_compact(st), 0);
	st = reopen(st);
	want[2] = NULL;
	assert_int_equal(walk(st, find_annex, want), 0);
	assert_non_null(want[2]);
	assert_int_equal(store_del(st, "an1"), 0);
	assert_int_equal(store_del(st, "an2"), 0);
	store_close(&st);
}

/* Keeps tokens t<odd>, removes t<even>; counts what it kept. */
static int keep_odd(const char *token, size_t len, const char *annex __attribute__((unused)),
	void *arg)
{
	char want[16];

	snprintf(want, sizeof(want), "t%d", atoi(token + 1));
	assert_string_equal(token, want);
	assert_int_equal(len, strlen(want));
	if (atoi(token + 1) % 2 == 0)
		return STORE_REMOVE;
	(*(size_t *)arg)++;
	return STORE_KEEP;
}

/*
 * Tokens are read from the files, not kept in memory. A walk that removes half of 10,000
 * records appends enough to call for a snapshot half-way: it must wait for the walk's end,
 * when it moves every record, and the survivors must read back whole from it.
 */
static void test_walk_removes(void **state)
{
	struct store *st;
	char jti[16], tok[16];
	size_t n = 0;

	(void)state;
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(store_compact(st), 0);
	for (int i = 0; i < 10000; i++) {
		snprintf(jti, sizeof(jti), "w%d", i);
		snprintf(tok, sizeof(tok), "t%d", i);
		assert_int_equal(store_put(st, jti, tok, strlen(tok)), 0);
	}
	assert_int_equal(walk(st, keep_odd, &n), 0);
	assert_int_equal(n, 5000);
	assert_true(journal_emptied()); /* the walk's removals were compacted after it */
	n = 0;
	assert_int_equal(walk(st, keep_odd, &n), 0);
	assert_int_equal(n, 5000);
	st = reopen(st);
	n = 0;
	assert_int_equal(walk(st, keep_odd, &n), 0);
	assert_int_equal(n, 5000);
	for (int i = 1; i < 10000; i += 2) {
		snprintf(jti, sizeof(jti), "w%d", i);
		assert_int_equal(store_del(st, jti), 0);
	}
	store_close(&st);
}

/* Notes as "text;text;" in order. */
static void assert_joined(const struct store_note *v, size_t n, const char *want)
{
	char all[1024] = "";

	for (size_t i = 0; i < n; i++) {
		assert_true(strlen(all) + v[i].len + 2 < sizeof(all));
		strncat(all, (const char *)v[i].p, v[i].len);
		strcat(all, ";");
	}
	assert_string_equal(all, want);
}

/* The notes store_open found uncovered. */
static void assert_notes(struct store *st, const char *want)
{
	const struct store_note *v;
	size_t n;

	store_notes(st, &v, &n);
	assert_joined(v, n, want);
}

static int write_note(struct store *st, const char *text)
{
	const struct store_note n = { (unsigned char *)(uintptr_t)text, strlen(text) };

	return store_write_notes(st, &n, 1);
}

/*
 * store_cover(m), one more note (which records the cover), durable, and a new open: the notes
 * it finds are want, and the one grant the note tests keep, "x", is still there.
 */
static struct store *cover_and_reopen(struct store *st, struct store_mark m, const char *last,
	const char *want)
{
	store_cover(st, m);
	assert_int_equal(write_note(st, last), 0);
	assert_int_equal(store_sync(st), 0);
	st = reopen(st);
	assert_notes(st, want);
	assert_tokens(st, "tok-x;");
	return st;
}

/* The notes taken care of and "x" removed: the next test starts from an empty store. */
static void notes_end(struct store *st)
{
	assert_int_equal(store_notes_done(st), 0);
	assert_int_equal(store_del(st, "x"), 0);
	store_close(&st);
}

/*
 * Notes come back on open until a mark taken after them is covered; grants beside them are
 * untouched, and a note record is no grant.
 */
static void test_notes(void **state)
{
	struct store_mark m;
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_notes(st, "");
	assert_int_equal(store_put(st, "x", "tok-x", 5), 0);
	assert_int_equal(write_note(st, "line-1"), 0);
	assert_int_equal(write_note(st, "line-2"), 0);
	/* Not made durable by the call: the caller's fdatasync is (here, store_sync). */
	assert_int_equal(store_sync(st), 0);
	st = reopen(st);
	assert_notes(st, "line-1;line-2;");
	assert_tokens(st, "tok-x;");
	/* Until store_notes_done, which records that they are taken care of. */
	st = reopen(st);
	assert_notes(st, "line-1;line-2;");
	assert_int_equal(store_notes_done(st), 0);
	assert_notes(st, "");
	st = reopen(st);
	assert_notes(st, "");
	/* A mark covers what was written before it, once the next note says so. */
	assert_int_equal(write_note(st, "line-3"), 0);
	m = store_mark(st);
	assert_int_equal(write_note(st, "line-4"), 0);
	st = cover_and_reopen(st, m, "line-5", "line-4;line-5;");
	notes_end(st);
}

/* What store_uncovered_notes reads back. */
static void assert_uncovered(struct store *st, const char *want)
{
	struct store_note *v;
	size_t n;

	assert_int_equal(store_uncovered_notes(st, &v, &n), 0);
	assert_joined(v, n, want);
	store_notes_free(v, n);
}

/*
 * While jitd runs, the notes no mark covers are read back from the journal: a cover in memory
 * counts at once, one a note record made counts after a new open, and a note done by
 * store_notes_done or a compaction is gone.
 */
static void test_uncovered_notes(void **state)
{
	struct store_mark m;
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_uncovered(st, "");
	assert_int_equal(store_put(st, "x", "tok-x", 5), 0);
	assert_int_equal(write_note(st, "line-1"), 0);
	m = store_mark(st);
	assert_int_equal(write_note(st, "line-2"), 0);
	assert_uncovered(st, "line-1;line-2;");
	store_cover(st, m);
	assert_uncovered(st, "line-2;");
	assert_int_equal(write_note(st, "line-3"), 0);
	assert_int_equal(store_sync(st), 0);
	st = reopen(st);
	assert_uncovered(st, "line-2;line-3;");
	assert_int_equal(store_notes_done(st), 0);
	assert_uncovered(st, "");
	assert_int_equal(write_note(st, "line-4"), 0);
	assert_uncovered(st, "line-4;");
	assert_int_equal(store_compact(st), 0);
	assert_uncovered(st, "");
	assert_int_equal(store_del(st, "x"), 0);
	store_close(&st);
}

/*
 * A damaged note is skipped, and found (counted, for status and the trail) once: the walk runs
 * again while the trail's check fails, and the same damage is no new finding.
 */
static void test_uncovered_damage_found_once(void **state)
{
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	/* An empty journal, so that the notes are in the first page damage_record reads. */
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(store_put(st, "x", "tok-x", 5), 0);
	assert_int_equal(write_note(st, "line-1"), 0);
	assert_int_equal(write_note(st, "rotten"), 0);
	assert_int_equal(write_note(st, "line-3"), 0);
	damage_record("grants.journal", "rotten");
	assert_uncovered(st, "line-1;line-3;");
	assert_int_equal(store_damage(st)->count, 1);
	assert_non_null(strstr(store_damage(st)->last, "is damaged: an audit line it carried"));
	assert_uncovered(st, "line-1;line-3;");
	assert_int_equal(store_damage(st)->count, 1);
	assert_int_equal(store_compact(st), 0);
	assert_uncovered(st, "");
	assert_int_equal(store_del(st, "x"), 0);
	store_close(&st);
}

static int guard_calls, guard_ret;

static int guard(void *arg)
{
	guard_calls++;
	return guard_ret;
}

/*
 * A compaction copies no note, so it runs only after the guard has made them redundant; a
 * guard that fails leaves the journal (and its notes) as it was. A mark from before a
 * compaction covers nothing after it.
 */
static void test_notes_compaction(void **state)
{
	struct store_mark old;
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	store_set_compact_guard(st, guard, NULL);
	assert_int_equal(store_put(st, "x", "tok-x", 5), 0);
	assert_int_equal(write_note(st, "before"), 0);
	old = store_mark(st);
	guard_ret = -EIO;
	assert_int_equal(store_compact(st), -EIO);
	assert_int_equal(guard_calls, 1);
	st = reopen(st);
	assert_notes(st, "before;");
	store_set_compact_guard(st, guard, NULL);
	guard_ret = 0;
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(guard_calls, 2);
	assert_int_equal(write_note(st, "after"), 0);
	st = cover_and_reopen(st, old, "later", "after;later;");
	notes_end(st);
	guard_calls = 0;
}

/* A note torn by a crash is cut off like any record, and what came before it stays. */
static void test_notes_torn(void **state)
{
	struct store *st;
	struct stat sb;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_int_equal(write_note(st, "whole"), 0);
	assert_int_equal(write_note(st, "torn"), 0);
	assert_int_equal(store_sync(st), 0);
	store_close(&st);
	assert_int_equal(stat(at("grants.journal"), &sb), 0);
	assert_int_equal(truncate(path, sb.st_size - 2), 0);
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_notes(st, "whole;");
	assert_int_equal(store_notes_done(st), 0);
	store_close(&st);
}

/*
 * A damaged snapshot is replaced at the start by a sound one, and that compaction empties the
 * journal. Its notes (the audit lines of the last grants, which the start puts back into the
 * trail) must outlive it until store_notes_done: a start that fails between the two, or a
 * crash, would lose them. So the compaction waits for store_notes_done.
 */
static void test_snapshot_damage_keeps_notes(void **state)
{
	struct store *st;

	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_notes(st, "");
	assert_tokens(st, "");
	assert_int_equal(store_put(st, "p", "tok-p", 5), 0);
	assert_int_equal(store_put(st, "q", "tok-q", 5), 0);
	assert_int_equal(store_compact(st), 0);
	assert_int_equal(write_note(st, "line-1"), 0);
	assert_int_equal(store_sync(st), 0);
	store_close(&st);
	damage_snapshot_end();
	assert_int_equal(store_open(dir, &st, NULL, 0), 0);
	assert_tokens(st, "tok-p;");
	assert_notes(st, "line-1;");
	/* This start ends before store_notes_done: the next one still has the notes. */
	st = reopen(st);
	assert_notes(st, "line-1;");
	assert_tokens(st, "tok-p;");
	assert_int_equal(store_notes_done(st), 0);
	assert_notes(st, "");
	/* And then a sound snapshot holds what survived. */
	st = reopen(st);
	assert_notes(st, "");
	assert_tokens(st, "tok-p;");
	assert_int_equal(store_damage(st)->count, 0);
	assert_int_equal(store_del(st, "p"), 0);
	store_close(&st);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		/* First: see test_no_digest_keeps_journal. */
		cmocka_unit_test(test_no_digest_keeps_journal),
		cmocka_unit_test(test_journal),
		cmocka_unit_test(test_locked),
		cmocka_unit_test(test_untrusted),
		cmocka_unit_test(test_group),
		cmocka_unit_test(test_torn_tail),
		cmocka_unit_test(test_zero_tail),
		cmocka_unit_test(test_journal_damage),
		cmocka_unit_test(test_journal_damage_keeps_later_deletions),
		cmocka_unit_test(test_damaged_length_is_no_torn_tail),
		cmocka_unit_test(test_damaged_deletion_still_deletes),
		cmocka_unit_test(test_snapshot),
		cmocka_unit_test(test_snapshot_damage_outlives_failed_compaction),
		cmocka_unit_test(test_compaction_leaves_damage_out),
		cmocka_unit_test(test_rewritten_after_failed_sync),
		cmocka_unit_test(test_drop_left_out_of_rewrite),
		cmocka_unit_test(test_drop_kept_after_its_sync_failed),
		cmocka_unit_test(test_old_journal_left_out),
		cmocka_unit_test(test_compaction_fails_after_rename),
		cmocka_unit_test(test_emptied_journal_gets_its_epoch),
		cmocka_unit_test(test_damaged_epoch),
		cmocka_unit_test(test_state_before_epochs),
		cmocka_unit_test(test_many),
		cmocka_unit_test(test_compaction_pace),
		cmocka_unit_test(test_release),
		cmocka_unit_test(test_release_after_removals),
		cmocka_unit_test(test_annex),
		cmocka_unit_test(test_walk_removes),
		cmocka_unit_test(test_notes),
		cmocka_unit_test(test_uncovered_notes),
		cmocka_unit_test(test_uncovered_damage_found_once),
		cmocka_unit_test(test_notes_compaction),
		cmocka_unit_test(test_notes_torn),
		cmocka_unit_test(test_snapshot_damage_keeps_notes),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
