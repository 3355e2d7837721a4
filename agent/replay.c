#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/lineappend.h"
#include "agent/replay.h"
#include "agent/statefile.h"
#include "agent/statetrust.h"
#include "agent/testhook.h"
#include "common/clock.h"
#include "common/dirsync.h"
#include "common/err.h"
#include "common/log.h"

#define JTI_MAX 256
#define MIN_SLOTS 1024	/* a power of two, as every table size */
/*
 * A start keeps the ids whose time ran out up to a day before its clock. A clock wrongly ahead
 * at boot (an RTC off by hours, before NTP) would otherwise drop, for good with the next
 * rewrite, ids of tokens still valid once the clock is right: each could then be used again.
 * A running jitd prunes only when the cache is full; a day is the longest a grant can last.
 */
#define LOAD_LOOKBACK_S (24 * 3600)

struct entry {
	char *jti;	/* NULL: free slot; TOMB: deleted slot (keeps probe chains intact) */
	int64_t until;
};

static char tomb[1];
#define TOMB tomb

struct replay {
	struct entry *slots;
	size_t cap, live, max;
	size_t used;	/* live ids and tombstones: the slots a probe walks past */
	int fd;
	bool dirty;	/* lines written since the last fsync */
	bool failed;	/* an fsync failed: rewritten before anything counts as durable */
	int heal_ret;		/* the last rewrite's failure (0: none), and when (paced) */
	int64_t heal_failed_us;
	size_t lines;		/* in the file: live ids' and dead ones' (replay_tidy) */
	char path[4096];
};

static uint64_t hash(const char *s)
{
	uint64_t h = 1469598103934665603ull; /* FNV-1a */

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static bool valid_jti(const char *s)
{
	size_t n = strlen(s);

	if (!n || n > JTI_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)s[i] <= 0x20 || s[i] == 0x7f)
			return false;
	return true;
}

static struct entry *lookup(const struct replay *r, const char *jti)
{
	for (size_t i = hash(jti) & (r->cap - 1), n = 0; n < r->cap; i = (i + 1) & (r->cap - 1), n++) {
		if (!r->slots[i].jti)
			return NULL;
		if (r->slots[i].jti != TOMB && !strcmp(r->slots[i].jti, jti))
			return &r->slots[i];
	}
	return NULL;
}

/* The live ids into a new table of cap slots, without the tombstones. */
static int rebuild(struct replay *r, size_t cap)
{
	struct entry *old = r->slots, *nv = calloc(cap, sizeof(*nv));
	size_t oldcap = r->cap;

	if (!nv)
		return -ENOMEM;
	r->slots = nv;
	r->cap = cap;
	r->used = r->live;
	for (size_t i = 0; i < oldcap; i++) {
		size_t j;

		if (!old[i].jti || old[i].jti == TOMB)
			continue;
		for (j = hash(old[i].jti) & (cap - 1); nv[j].jti; j = (j + 1) & (cap - 1))
			;
		nv[j] = old[i];
	}
	free(old);
	return 0;
}

static int put(struct replay *r, const char *jti, int64_t until)
{
	struct entry *e = lookup(r, jti);
	bool fresh;
	size_t i;

	if (e) {
		if (until > e->until)
			e->until = until;
		return 0;
	}
	/*
	 * Tombstones count as used: a lookup stops only at a never-used slot, and once prune
	 * after prune of a full cache had turned every free slot into a tombstone, each new id
	 * walked the whole table. Rebuilt at the same size when tombstones are most of what is
	 * used, twice the size when live ids are.
	 */
	if ((r->used + 1) * 2 > r->cap) {
		int ret = rebuild(r, (r->live + 1) * 4 > r->cap ? r->cap * 2 : r->cap);

		if (ret)
			return ret;
	}
	for (i = hash(jti) & (r->cap - 1); r->slots[i].jti && r->slots[i].jti != TOMB;
		i = (i + 1) & (r->cap - 1))
		;
	fresh = !r->slots[i].jti;
	if (!(r->slots[i].jti = strdup(jti))) {
		r->slots[i].jti = fresh ? NULL : TOMB;
		return -ENOMEM;
	}
	r->slots[i].until = until;
	r->live++;
	r->used += fresh;
	return 0;
}

static void drop(struct replay *r, struct entry *e)
{
	free(e->jti);
	e->jti = TOMB;
	r->live--;
}

static void prune(struct replay *r, int64_t now)
{
	for (size_t i = 0; i < r->cap; i++)
		if (r->slots[i].jti && r->slots[i].jti != TOMB && r->slots[i].until < now)
			drop(r, &r->slots[i]);
}

static int append(struct replay *r, const char *line, bool sync)
{
	int ret = line_append(r->fd, line, strlen(line));

	/* Part of the line may be in the file, or an I/O error left it unknown: rewrite it. */
	if (ret == -EIO)
		r->failed = true;
	if (ret)
		return ret;
	r->dirty = true;
	r->lines++;
	return sync ? replay_sync(r) : 0;
}

/*
 * replay.db opened to append to, by name again (after load read it, or a rewrite renamed
 * over it): a FIFO put in its place since is refused as load refuses one, not waited on.
 * The descriptor, or -errno.
 */
static int open_append(const char *path)
{
	return statefile_open(AT_FDCWD, path, O_WRONLY | O_APPEND, 0, NULL);
}

/* fsync of replay.db, or of its rewrite: 0 or -errno. */
static int sync_fd(int fd)
{
#ifdef JITD_TEST_HOOKS
	/* Test builds: while $JITD_TEST_REPLAY_SYNC_FAIL_FILE exists, as a disk losing writes. */
	if (testhook_exists("JITD_TEST_REPLAY_SYNC_FAIL_FILE"))
		return -EIO;
#endif
	return fsync(fd) < 0 ? -errno : 0;
}

static int compact(struct replay *r);

/*
 * The file rewritten from memory, durable, and appends going on in the new one. Renamed into
 * place but not opened again, or its directory entry not durable, what follows would go to the
 * old file (gone from the directory) or to one a crash may undo: marked failed, so that the
 * next sync rewrites it again before anything counts as durable.
 */
static int rewrite_file(struct replay *r)
{
	int fd, ret;

	if ((ret = compact(r)))
		return ret;
	if ((fd = open_append(r->path)) < 0) {
		r->failed = true;
		return fd;
	}
	close(r->fd);
	r->fd = fd;
	r->dirty = false;
	r->failed = (ret = dirsync_parent(r->path)) != 0;
	return ret;
}

/*
 * After a failed fsync, the file holds whatever the disk kept of what was written since the
 * last good one, and Linux tells each open file of a writeback error once: the next fsync
 * says 0 over lines that may be gone. So the file is rewritten from memory (every live id, the
 * failed lines' among them) and appends go on in the new one.
 */
static int heal(struct replay *r)
{
	int ret = rewrite_file(r);

	if (!ret)
		log_info("replay: %s rewritten after a failed sync", r->path);
	return ret;
}

/*
 * A rewrite that failed is not tried again for a second: each rewrites every live id and
 * fsyncs, on the event loop, and a group withdrawn on a failing disk forgets its ids one by one.
 */
#define HEAL_RETRY_US 1000000
/* replay_tidy's rewrite that failed (a full disk) is not tried again for a minute. */
#define TIDY_RETRY_US 60000000

static int heal_paced(struct replay *r)
{
	if (r->heal_ret && clock_mono_us() - r->heal_failed_us < HEAL_RETRY_US)
		return r->heal_ret;
	if ((r->heal_ret = heal(r)))
		r->heal_failed_us = clock_mono_us();
	return r->heal_ret;
}

int replay_sync(struct replay *r)
{
	int ret;

	if (r->failed)
		return heal_paced(r);
	if (!r->dirty)
		return 0;
	if ((ret = sync_fd(r->fd))) {
		r->failed = true;
		return ret;
	}
	r->dirty = false;
	return 0;
}

/*
 * Rewrites the file with the live entries only: tmp + fsync + rename. The caller makes the
 * rename durable (dirsync_parent) once it writes to the new file.
 */
static int compact(struct replay *r)
{
	char tmp[4200];
	FILE *f;
	int fd, ret = 0;

	snprintf(tmp, sizeof(tmp), "%s.tmp", r->path);
	if ((fd = statefile_create(AT_FDCWD, tmp)) < 0)
		return fd;
	if (!(f = fdopen(fd, "w"))) {
		ret = -errno;
		close(fd);
		unlink(tmp);
		return ret;
	}
	for (size_t i = 0; i < r->cap; i++)
		if (r->slots[i].jti && r->slots[i].jti != TOMB)
			fprintf(f, "A %" PRId64 " %s\n", r->slots[i].until, r->slots[i].jti);
	if (fflush(f))
		ret = -errno;
	else if (ferror(f))
		ret = -EIO; /* an earlier flush failed: its buffer is lost; only ferror says so */
	else
		ret = sync_fd(fileno(f));
	if (fclose(f) && !ret)
		ret = -errno;
	if (!ret && rename(tmp, r->path) < 0)
		ret = -errno;
	if (ret) {
		unlink(tmp);
		return ret;
	}
	r->lines = r->live;
	return 0;
}

/*
 * Lines that no longer stand for an entry (expired, forgotten, superseded, unreadable) beyond
 * which the file is rewritten (at open, and by replay_tidy). Below it, rewriting and fsyncing
 * every live id at every start cost more than the lines it saves (at 100,000 ids, 100 ms of a
 * restart); above it the file stays within half again its live lines.
 */
#define DEAD_LINES_KEPT(live) ((live) / 2 + 1024)
/* Whether a file of lines lines (live ids' and dead ones') holds more dead ones than that. */
#define TOO_MANY_DEAD(lines, live) ((lines) > (live) + DEAD_LINES_KEPT(live))

/*
 * Slots for a file of size bytes, made at once before reading it: doubling from 1,024 to
 * 262,144 one step at a time rehashed the first ids eight times, a fifth of loading 100,000.
 * Lines are about 30 bytes; a file of mostly dead lines stays within one doubling of what it
 * needs.
 */
static int reserve(struct replay *r, off_t size)
{
	size_t want = (size_t)size / 32, cap = r->cap;

	if (want > r->max)
		want = r->max;
	while (cap < want * 2)
		cap *= 2;
	return cap == r->cap ? 0 : rebuild(r, cap);
}

/*
 * A line as add and forget write it, its newline replaced by a NUL: 'A' (*until and *jti set)
 * or 'F' (*jti set); 0 for anything else.
 */
static char parse_line(char *line, int64_t *until, char **jti)
{
	char *end;

	line[strcspn(line, "\n")] = '\0';
	if (line[0] == 'F' && line[1] == ' ') {
		*jti = line + 2;
		return 'F';
	}
	if (line[0] != 'A' || line[1] != ' ')
		return 0;
	errno = 0;
	*until = strtoll(line + 2, &end, 10);
	if (errno || end == line + 2 || *end != ' ' || !valid_jti(end + 1))
		return 0;
	*jti = end + 1;
	return 'A';
}

/*
 * *rewrite: the file is absent, ends torn, holds an unreadable line or too many dead lines
 * (see above). *whole: the length of its whole lines, -1 when it is absent.
 */
static int load(struct replay *r, int64_t now, bool *rewrite, off_t *whole, char *why,
	size_t why_len)
{
	/* A FIFO in its place is refused below (statetrust_fd), not waited on. */
	int fd = statefile_open_any(AT_FDCWD, r->path, O_RDONLY, 0), err;
	FILE *f = fd < 0 ? NULL : fdopen(fd, "r");
	char msg[PATH_MAX + 64];
	size_t lines = 0, size = 0;
	bool garbage = false, torn = false;
	char *line = NULL, *jti;
	struct stat st;
	ssize_t n;
	int ret = 0;

	*rewrite = true;
	*whole = -1;
	if (!f) {
		err = fd < 0 ? -fd : errno;
		if (fd >= 0)
			close(fd);
		return err == ENOENT ? 0 : -err;
	}
	*whole = 0;
	/*
	 * Before a line is read: ids taken out of it could be used again, and the file read is
	 * the one to judge (a rewrite below would replace it with one of jitd's own).
	 */
	if ((ret = statetrust_fd(fileno(f), S_IFREG, r->path, msg, sizeof(msg))) == -EPERM && why)
		snprintf(why, why_len, "%s: whoever may write it could use a revoked grant's token "
			"again (" STATETRUST_FIX_FILE ")", msg);
	if (ret || (fstat(fileno(f), &st) == 0 && (ret = reserve(r, st.st_size)))) {
		fclose(f);
		return ret;
	}
	/*
	 * Whole lines, however long: a damaged one (a newline lost, a stray NUL) is skipped, and
	 * the ids after it are still read. Stopping there would let the rewrite below drop them
	 * for good, and with them the refusal of their tokens, revoked ones among them.
	 */
	while (ret == 0 && (n = getline(&line, &size, f)) > 0) {
		int64_t until;
		struct entry *e;
		char kind = 0;

		/* A last line without its newline was never fully written, so never acknowledged. */
		if (line[n - 1] != '\n') {
			log_warn("replay: skipping a torn last line in %s", r->path);
			torn = true;
			break;
		}
		lines++;
		*whole += n;
		/* parse_line reads up to the first NUL: the line must not end sooner. */
		if (!memchr(line, '\0', (size_t)n))
			kind = parse_line(line, &until, &jti);
		if (kind == 'A') {
			if (until >= now - LOAD_LOOKBACK_S)
				ret = put(r, jti, until);
		} else if (kind == 'F') {
			if ((e = lookup(r, jti)))
				drop(r, e);
		} else {
			log_warn("replay: skipping an unreadable line in %s", r->path);
			garbage = true;
		}
	}
	if (ret == 0 && ferror(f))
		ret = -EIO;
	free(line);
	fclose(f);
	/*
	 * Garbage goes at once, or every start would warn of it again; a torn line too, or the
	 * next line appended would run on from it and be lost with it.
	 */
	*rewrite = garbage || torn || TOO_MANY_DEAD(lines, r->live);
	r->lines = lines;
	return ret;
}

int replay_tidy(struct replay *r)
{
	size_t before = r->lines;

	if (r->failed || !TOO_MANY_DEAD(r->lines, r->live))
		return 0;
	if (r->heal_ret && clock_mono_us() - r->heal_failed_us < TIDY_RETRY_US)
		return 0;
	if ((r->heal_ret = rewrite_file(r))) {
		r->heal_failed_us = clock_mono_us();
		return r->heal_ret;
	}
	log_info("replay: %s rewritten: %zu live id(s), %zu line(s) before", r->path, r->live,
		before);
	return 0;
}

int replay_open(const char *state_dir, size_t max_entries, int64_t now, struct replay **out,
	char *why, size_t why_len)
{
	struct replay *r = calloc(1, sizeof(*r));
	bool rewrite;
	off_t whole;
	int ret;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	r->fd = -1;
	r->max = max_entries ? max_entries : 1;
	if ((size_t)snprintf(r->path, sizeof(r->path), "%s/" REPLAY_FILE, state_dir) >=
		sizeof(r->path)) {
		ret = -ENAMETOOLONG;
		goto fail;
	}
	/*
	 * The directory synced at every start, rewritten or not: a rewrite whose rename a stop
	 * left undurable must not have ids appended to it as if they were.
	 */
	if ((ret = rebuild(r, MIN_SLOTS)) || (ret = load(r, now, &rewrite, &whole, why, why_len)))
		goto fail;
	if (rewrite && (ret = compact(r))) {
		/*
		 * A full disk must not keep jitd from starting (and from serving revocations): the
		 * file serves as it is, a torn tail cut off (which takes no room) so that the next
		 * line does not run on from it; replay_tidy takes the dead lines later.
		 */
		if (whole < 0 || truncate(r->path, whole) < 0)
			goto fail;
		log_warn("replay: cannot rewrite %s (%s); going on with it as it is", r->path,
			strerror(-ret));
	}
	if ((ret = dirsync_parent(r->path)))
		goto fail;
	if ((r->fd = open_append(r->path)) < 0) {
		ret = r->fd;
		r->fd = -1;
		goto fail;
	}
	*out = r;
	return 0;
fail:
	replay_close(&r);
	return ret;
}

void replay_close(struct replay **r)
{
	if (!r || !*r)
		return;
	/* The last chance to heal: not paced. */
	(*r)->heal_failed_us = 0;
	if (replay_sync(*r))
		log_warn("replay: cannot sync %s", (*r)->path);
	for (size_t i = 0; i < (*r)->cap; i++)
		if ((*r)->slots[i].jti != TOMB)
			free((*r)->slots[i].jti);
	free((*r)->slots);
	if ((*r)->fd >= 0)
		close((*r)->fd);
	free(*r);
	*r = NULL;
}

int replay_check(struct replay *r, const char *jti, int64_t now)
{
	struct entry *e = lookup(r, jti);

	if (e && e->until >= now)
		return JIT_ERR_REPLAY;
	if (!e && r->live >= r->max) {
		prune(r, now);
		if (r->live >= r->max)
			return JIT_ERR_BUSY;
	}
	return 0;
}

/* "A UNTIL JTI\n": the sign, 20 digits, two spaces, a jti, the newline. */
#define ADD_LINE_MAX (JTI_MAX + 32)

/*
 * A full cache is pruned once of the ids expired by now before an id is refused room (each id
 * of a group found room at its replay_check, but together they may overfill it; INT64_MIN
 * prunes nothing). room: never refused room (replay_keep).
 */
static void add_many(struct replay *r, const struct replay_id *ids, size_t n, int64_t now,
	bool room, int *res)
{
	/* Each id's expiry before the group, to put back if the write fails; INT64_MIN: none. */
	int64_t *was = calloc(n + 1, sizeof(*was));
	char *buf = malloc(n * ADD_LINE_MAX + 1);
	bool pruned = false;
	size_t len = 0;
	int ret;

	if (!was || !buf) {
		for (size_t i = 0; i < n; i++)
			res[i] = -ENOMEM;
		goto out;
	}
	/* In memory first: a later id of the group sees an earlier one, as one by one. */
	for (size_t i = 0; i < n; i++) {
		struct entry *e;

		if (!valid_jti(ids[i].jti)) {
			res[i] = -EINVAL;
			continue;
		}
		e = lookup(r, ids[i].jti);
		if (e && e->until >= ids[i].until) {
			res[i] = -EEXIST;
			continue;
		}
		if (!e && !room && r->live >= r->max) {
			if (!pruned && now != INT64_MIN) {
				prune(r, now);
				pruned = true;
			}
			if (r->live >= r->max) {
				res[i] = -ENOBUFS;
				continue;
			}
		}
		was[i] = e ? e->until : INT64_MIN;
		if ((res[i] = put(r, ids[i].jti, ids[i].until)))
			continue;
		len += (size_t)snprintf(buf + len, ADD_LINE_MAX + 1, "A %" PRId64 " %s\n",
			ids[i].until, ids[i].jti);
	}
	if (!len)
		goto out;
	if (!(ret = line_append(r->fd, buf, len))) {
		r->dirty = true;
		for (size_t i = 0; i < n; i++)
			r->lines += !res[i];
		goto out;
	}
	/*
	 * Nothing of the group reached the file (line_append cuts a torn write off), or, on
	 * -EIO, the file is rewritten from memory without it before anything more (as in append).
	 * Ids that must be kept (room: a start's restored grants, whose records may be their only
	 * trace) stay in memory, and the next sync rewrites the file from memory with them.
	 */
	if (ret == -EIO || room)
		r->failed = true;
	if (room)
		goto out;
	for (size_t i = n; i-- > 0;) {
		struct entry *e;

		if (res[i])
			continue;
		res[i] = ret;
		if (!(e = lookup(r, ids[i].jti)))
			continue;
		if (was[i] == INT64_MIN)
			drop(r, e);
		else
			e->until = was[i];
	}
out:
	free(was);
	free(buf);
}

void replay_add_lazy_many(struct replay *r, const struct replay_id *ids, size_t n, int64_t now,
	int *res)
{
	add_many(r, ids, n, now, false, res);
}

static int add(struct replay *r, const char *jti, int64_t until, bool room, bool sync)
{
	const struct replay_id id = { jti, until };
	int ret;

	add_many(r, &id, 1, INT64_MIN, room, &ret);
	/* An id already there is durable only once what was written of it is. */
	if (sync && (!ret || ret == -EEXIST)) {
		int err = replay_sync(r);

		if (err)
			return err;
	}
	return ret;
}

int replay_add(struct replay *r, const char *jti, int64_t until)
{
	return add(r, jti, until, false, true);
}

int replay_keep(struct replay *r, const char *jti, int64_t until)
{
	return add(r, jti, until, true, false);
}

void replay_forget(struct replay *r, const char *jti)
{
	char line[JTI_MAX + 8];
	struct entry *e = lookup(r, jti);
	int ret;

	if (!e)
		return;
	/*
	 * Out of memory whatever the disk does: the id's grant was not applied, and an id kept
	 * only because a disk failed refused the controller's retry as replay once the disk was
	 * mended. A line the file still holds refuses the id after a restart at worst (closed),
	 * and goes with the next rewrite, made from memory.
	 */
	drop(r, e);
	if (r->failed)
		ret = heal_paced(r);
	else {
		snprintf(line, sizeof(line), "F %s\n", jti);
		ret = append(r, line, true);
	}
	if (ret)
		log_warn("replay: '%s' forgotten in memory only (%s): a restart before %s is "
			"rewritten refuses it", jti, strerror(-ret), r->path);
}

int64_t replay_until(const struct replay *r, const char *jti)
{
	const struct entry *e = lookup(r, jti);

	return e ? e->until : INT64_MIN;
}

size_t replay_max(const struct replay *r)
{
	return r->max;
}

size_t replay_count_beyond(const struct replay *r, int64_t t)
{
	size_t n = 0;

	for (size_t i = 0; i < r->cap; i++)
		n += r->slots[i].jti && r->slots[i].jti != TOMB && r->slots[i].until > t;
	return n;
}

size_t replay_count(const struct replay *r)
{
	return r->live;
}

void replay_table(const struct replay *r, size_t *used, size_t *cap)
{
	*used = r->used;
	*cap = r->cap;
}
