#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/lineappend.h"
#include "agent/printer.h"
#include "agent/statefile.h"
#include "agent/store.h"
#include "agent/syncer.h"
#include "agent/syslogcopy.h"
#include "agent/testhook.h"
#include "common/config.h"
#include "common/dirsync.h"
#include "common/events.h"
#include "common/proto.h"
#include "common/log.h"
#include "common/grant.h"

#define DEFAULT_MAX_BYTES (10u * 1024 * 1024)
#define DEFAULT_KEEP 5
#define MAX_LINE (256 * 1024)	/* longer is damage: audit_log writes far less */

struct audit {
	char path[4096];
	int fd;
	int twin;	/* the file again, for the syncer (syncer_open_twin) */
	uint64_t size, max_bytes;
	uint64_t ino;		/* of the file fd is */
	unsigned keep;
	bool deferred;	/* audit_defer: records wait for audit_sync */
	bool dirty;	/* written since the last fsync */
	/*
	 * -errno: a sync of the file failed, so lines written before it may be gone from the disk
	 * whatever later syncs say; until audit_recover has checked the lines the journal carries.
	 */
	int lost;
	/*
	 * Where audit_recover put back its first line since the trail was last sound (ino 0:
	 * none): an attempt whose sync failed leaves its lines there, with lines written after.
	 */
	uint64_t recovered_ino;
	uint64_t recovered_at;
	bool unended;		/* a failed append may have left a fragment without its newline */
	struct syslog_copy *sys;
};

static int open_file(struct audit *a)
{
	struct stat st;
	int ret;

	a->fd = statefile_open(AT_FDCWD, a->path, O_WRONLY | O_APPEND | O_CREAT, 0640, &st);
	if (a->fd < 0) {
		ret = a->fd;
		a->fd = -1;
		return ret;
	}
	if (!(ret = syncer_open_twin(AT_FDCWD, a->path, a->fd, &a->twin)))
		/*
		 * A file just made (the first start, a rotation, a retry after a failed one)
		 * keeps its name before a line in it is taken as durable, as the journal does.
		 */
		ret = dirsync_parent(a->path);
	if (ret) {
		/* All or nothing: the next line tries again (reopen). */
		if (a->twin >= 0)
			close(a->twin);
		close(a->fd);
		a->fd = a->twin = -1;
		return ret;
	}
	a->size = (uint64_t)st.st_size;
	a->ino = (uint64_t)st.st_ino;
	a->unended = false; /* a fragment stays at the end of the file rotated away */
	return 0;
}

/*
 * A rotation that failed halfway (a rename or the new file's open) left no file to append to:
 * each line tries audit.jsonl again, wherever the renames stopped, rather than the trail
 * failing every grant until a restart.
 */
static int reopen(struct audit *a)
{
	return a->fd >= 0 ? 0 : open_file(a);
}

/*
 * A trail a crash left mid-line (or ending in the zeros a file system can leave) is marked as
 * a failed append marks it: end_fragment ends the line before the next record, whatever else
 * is recovered. Unreadable, it is taken as mid-line: an empty line costs nothing.
 */
static void find_torn_line(struct audit *a)
{
	char last = '\n';
	int fd;

	if (!a->size)
		return;
	if ((fd = statefile_open_any(AT_FDCWD, a->path, O_RDONLY, 0)) < 0 ||
		pread(fd, &last, 1, (off_t)a->size - 1) != 1)
		last = '\0';
	if (fd >= 0)
		close(fd);
	if ((a->unended = last != '\n'))
		log_warn("audit: %s may end mid-line: the next record starts a line", a->path);
}

struct audit_opts audit_opts_of(const struct config *c)
{
	return (struct audit_opts){ .max_bytes = c->audit_max_bytes, .keep = c->audit_keep,
		.no_syslog = !c->audit_syslog };
}

/* Where the copy goes: /dev/log, or in test builds $JITD_TEST_SYSLOG_PATH, a test's socket. */
static const char *syslog_path(void)
{
#ifdef JITD_TEST_HOOKS
	const char *test = getenv("JITD_TEST_SYSLOG_PATH");

	if (test)
		return test;
#endif
	return _PATH_LOG;
}

int audit_open(const char *state_dir, const struct audit_opts *o, struct audit **out)
{
	struct audit *a = calloc(1, sizeof(*a));
	int ret;

	*out = NULL;
	if (!a)
		return -ENOMEM;
	a->fd = a->twin = -1;
	a->max_bytes = o && o->max_bytes ? o->max_bytes : DEFAULT_MAX_BYTES;
	a->keep = o && o->keep ? o->keep : DEFAULT_KEEP;
	if ((size_t)snprintf(a->path, sizeof(a->path), "%s/audit.jsonl", state_dir) >=
		sizeof(a->path)) {
		free(a);
		return -ENAMETOOLONG;
	}
	if ((ret = open_file(a))) {
		audit_close(&a);
		return ret;
	}
	find_torn_line(a);
	if ((!o || !o->no_syslog) &&
		(ret = syslog_copy_open(syslog_path(), "jitd", "audit ", &a->sys))) {
		audit_close(&a);
		return ret;
	}
	*out = a;
	return 0;
}

void audit_close(struct audit **a)
{
	if (!a || !*a)
		return;
	if ((*a)->fd >= 0 && audit_sync(*a))
		log_warn("audit: cannot sync %s", (*a)->path);
	if ((*a)->fd >= 0)
		close((*a)->fd);
	if ((*a)->twin >= 0)
		close((*a)->twin);
	syslog_copy_close(&(*a)->sys);
	free(*a);
	*a = NULL;
}

static void rotated(const struct audit *a, unsigned n, char *buf, size_t len)
{
	if (n)
		snprintf(buf, len, "%s.%u", a->path, n);
	else
		snprintf(buf, len, "%s", a->path);
}

void audit_sync_failed(struct audit *a, int err)
{
	if (a->lost)
		return;
	a->lost = err < 0 ? err : -EIO;
	log_err("audit: a sync of %s failed (%s): lines written since the last one that held may "
		"be gone from the disk; grants' lines are checked against the journal's copies, "
		"the others cannot be", a->path, strerror(-a->lost));
}

int audit_lost(const struct audit *a)
{
	return a->lost;
}

static int trail_fsync(struct audit *a)
{
	int ret;

	/* No file since a rotation failed: nothing written was lost; the file is sought again. */
	if (a->fd < 0 && (ret = reopen(a)))
		return ret;
	if (fsync(a->fd) < 0) {
		ret = -errno;
		audit_sync_failed(a, ret);
		return ret;
	}
	a->dirty = false;
	return 0;
}

int audit_sync(struct audit *a)
{
	return a->dirty ? trail_fsync(a) : 0;
}

int audit_sync_now(struct audit *a)
{
	int ret = trail_fsync(a);

	return ret ? ret : a->lost;
}

/* The lowest n in 1..keep with no file path.n, or keep + 1 when every one is there. */
static unsigned free_place(const struct audit *a)
{
	char name[4200];
	struct stat st;
	unsigned n;

	for (n = 1; n <= a->keep; n++) {
		rotated(a, n, name, sizeof(name));
		if (lstat(name, &st) < 0 && errno == ENOENT)
			break;
	}
	return n;
}

static int rotate(struct audit *a)
{
	char from[4200], to[4200];
	unsigned gap;
	int ret;

	/*
	 * Even when nothing is dirty: a sync of the file handed to the syncer may still be running,
	 * and this one waits for it and hears a failure of its own, before the file goes where
	 * nothing syncs it again.
	 */
	if ((ret = trail_fsync(a)))
		return ret;
	close(a->fd);
	close(a->twin);
	a->fd = a->twin = -1;
	/*
	 * The files shift up into the lowest free place, and the oldest goes only when there is
	 * none: a rotation that failed at its last rename, and is tried again at the next line,
	 * must not remove one more old file at each try.
	 */
	gap = free_place(a);
	if (gap > a->keep) {
		gap = a->keep;
		rotated(a, gap, to, sizeof(to));
		(void)unlink(to);
	}
	for (unsigned n = gap; n-- > 0;) {
		rotated(a, n, from, sizeof(from));
		rotated(a, n + 1, to, sizeof(to));
		if (rename(from, to) < 0 && errno != ENOENT) {
			ret = -errno;
			break;
		}
	}
	if (ret) {
		log_err("audit: cannot rotate %s (%s); tried again at the next line", a->path,
			strerror(-ret));
		(void)reopen(a);
		return ret;
	}
	/* The new names durable before a line goes into the new file: open_file syncs them. */
	return open_file(a);
}

/*
 * A record is printed straight into its line (agent/printer.h) rather than built as a jansson
 * object and dumped: that was 10-30 us of every grant's path on the loop (ad hoc, by phase),
 * about what the kernel's transaction costs. A string that is not valid UTF-8, which jansson
 * refuses and a reader could not parse, is recorded as ASCII with '?' for every byte above
 * 0x7f; jansson still decides what is valid.
 */
static void put_text(struct printer *pr, const char *v)
{
	char buf[512];

	pr_string(pr, proto_text(v, buf, sizeof(buf)));
}

/* ,"key":"value", omitted for NULL. key is one of this file's names: nothing to escape. */
static void put_member(struct printer *pr, const char *key, const char *v)
{
	if (!v)
		return;
	pr_raw(pr, ",\"");
	pr_raw(pr, key);
	pr_raw(pr, "\":");
	put_text(pr, v);
}

static void put_grant(struct printer *pr, const struct grant *g)
{
	put_member(pr, "grant", g->jti);
	put_member(pr, "sub", g->sub);
	put_member(pr, "iss", g->iss);
	put_member(pr, "kid", g->kid);
	pr_raw(pr, ",\"sources\":[");
	pr_prefixes(pr, g->src, g->n_src);
	pr_raw(pr, "],\"ports\":[");
	pr_ports(pr, g->ports, g->n_ports);
	pr_raw(pr, "],\"expires_at\":");
	pr_stamp(pr, 1, g->exp);
	if (g->n_dst) {
		pr_raw(pr, ",\"destinations\":[");
		pr_prefixes(pr, g->dst, g->n_dst);
		pr_raw(pr, "],\"gateway_ports\":[");
		for (size_t i = 0; i < g->n_dnat_ports; i++) {
			if (i)
				pr_raw(pr, ",");
			pr_int(pr, true, g->dnat_ports[i]);
		}
		pr_raw(pr, "]");
	}
	put_member(pr, "reason", g->reason);
}

/* The syslog copy: no client byte may start a new log line or a terminal escape. */
static void sanitize(char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			*s = '?';
}

void audit_defer(struct audit *a, bool on)
{
	a->deferred = on;
}

int audit_unsynced_fd(struct audit *a, int *fd)
{
#ifdef JITD_TEST_HOOKS
	/* As the journal's (store_unsynced_fd): the loop's own descriptor is synced first. */
	if (a->dirty && testhook_exists("JITD_TEST_SYNC_ASIDE_FILE") && fsync(a->fd) < 0)
		log_warn("test: the loop's own sync of the trail failed: %s", strerror(errno));
#endif
	return syncer_take(a->twin, &a->dirty, fd);
}

/* A note: the file's inode and where the line starts in it (8 bytes each, big-endian), the line. */
#define NOTE_AT 16

static int make_note(const struct audit *a, uint64_t offset, const char *line, size_t len,
	struct store_note *n)
{
	const uint64_t at[2] = { htobe64(a->ino), htobe64(offset) };

	if (!(n->p = malloc(NOTE_AT + len)))
		return -ENOMEM;
	memcpy(n->p, at, sizeof(at));
	memcpy(n->p + NOTE_AT, line, len);
	n->len = NOTE_AT + len;
	return 0;
}

static void print_rec(struct printer *pr, const struct audit_rec *r, int64_t now)
{
#ifdef JITD_TEST_HOOKS
	/* A new kind of event belongs in common/events.c, or jitctl log --event refuses it. */
	if (!audit_event_known(r->event)) {
		log_err("audit: event '%s' is not in common/events.c", r->event);
		abort();
	}
#endif
	pr_raw(pr, "{\"time\":");
	pr_stamp(pr, 0, now);
	pr_raw(pr, ",\"ts\":");
	pr_int(pr, true, now);
	put_member(pr, "event", r->event);
	if (r->grant)
		put_grant(pr, r->grant);
	else
		put_member(pr, "grant", r->grant_id);
	put_member(pr, "peer", r->peer);
	put_member(pr, "code", r->code);
	put_member(pr, "message", r->message);
	if (r->withdrawn)
		pr_raw(pr, ",\"withdrawn\":true");
	if (r->count >= 0) {
		pr_raw(pr, ",\"count\":");
		pr_int(pr, true, r->count);
	}
	pr_raw(pr, "}\n");
}

/*
 * One line appended, a->size kept to the file's own: a failed append may leave a fragment it
 * could not cut (line_append), and the copies' offsets count from the real end.
 */
static int append_line(struct audit *a, const char *line, size_t len)
{
	struct stat st;
	int ret = line_append(a->fd, line, len);

	if (!ret) {
		a->size += len;
		return 0;
	}
	if (ret == -EIO)
		a->unended = true;
	if (fstat(a->fd, &st) == 0)
		a->size = (uint64_t)st.st_size;
	return ret;
}

/*
 * A fragment a failed append may have left unended is ended before anything more is written
 * (else the next line runs on from it, and both are skipped), and before the offsets of the
 * next lines' copies are taken. Failing, nothing more is written.
 */
static int end_fragment(struct audit *a)
{
	int ret;

	if (!a->unended)
		return 0;
	if ((ret = append_line(a, "\n", 1)))
		return ret;
	a->unended = false;
	return 0;
}

int audit_log_many(struct audit *a, const struct audit_rec *r, size_t n)
{
	int64_t now = (int64_t)time(NULL);
	struct printer pr;
	char block[2048];	/* most single records fit: no allocation */
	size_t one[2], *at = n > 1 ? calloc(n + 1, sizeof(*at)) : one;
	size_t noted = 0;
	int ret = 0;

	printer_init(&pr, NULL, block, sizeof(block));
	if (!at) {
		ret = -ENOMEM;
		goto out;
	}
	/* at[i]: where record i starts in the text; at[n]: the text's end. */
	for (size_t i = 0; i < n; i++) {
		at[i] = pr.len;
		print_rec(&pr, &r[i], now);
	}
	at[n] = pr.len;
	if ((ret = pr.err) || !n)
		goto out;
	if ((ret = reopen(a)))
		goto out;
	/* A group's lines stay together, in the file they are noted in. */
	if (a->size && a->size + pr.len > a->max_bytes && (ret = rotate(a)))
		goto out;
	if ((ret = end_fragment(a)))
		goto out;
	for (; noted < n; noted++)
		if (r[noted].note && (ret = make_note(a, a->size + at[noted], pr.p + at[noted],
			at[noted + 1] - at[noted], r[noted].note)))
			goto out;
	if ((ret = append_line(a, pr.p, pr.len)))
		goto out;
	a->dirty = true;
	if (!a->deferred && (ret = audit_sync(a)))
		goto out;
	for (size_t i = 0; syslog_copy_ready(a->sys, now) && i < n; i++) {
		pr.p[at[i + 1] - 1] = '\0'; /* the newline */
		sanitize(pr.p + at[i]);
		syslog_copy_send(a->sys, r[i].code ? LOG_WARNING : LOG_INFO, pr.p + at[i], now);
	}
out:
	/* A failure means none is recorded, as far as the caller knows: no note stands. */
	for (size_t i = 0; ret && i < noted; i++) {
		if (!r[i].note)
			continue;
		free(r[i].note->p);
		*r[i].note = (struct store_note){ 0 };
	}
	if (at != one)
		free(at);
	printer_release(&pr);
	return ret;
}

int audit_log(struct audit *a, const struct audit_rec *r)
{
	return audit_log_many(a, r, 1);
}

/* Whether member name of ev is the string want, or want is NULL. */
static bool member_is(const json_t *ev, const char *name, const char *want)
{
	const char *v = json_string_value(json_object_get(ev, name));

	return !want || (v && !strcmp(v, want));
}

static bool wanted(const json_t *ev, const struct audit_filter *f)
{
	return json_integer_value(json_object_get(ev, "ts")) >= f->since &&
		member_is(ev, "grant", f->grant_id) && member_is(ev, "sub", f->sub) &&
		member_is(ev, "event", f->event);
}

/* The files oldest first, each with the length it had: what a scan on another thread reads. */
struct audit_snapshot {
	unsigned n;
	int *fd;
	off_t *size;
	uint64_t *ino;	/* for audit_recover: where a note says its line went */
};

void audit_snapshot_free(struct audit_snapshot **sp)
{
	struct audit_snapshot *s = *sp;

	if (!s)
		return;
	for (unsigned i = 0; i < s->n; i++)
		close(s->fd[i]);
	free(s->fd);
	free(s->size);
	free(s->ino);
	free(s);
	*sp = NULL;
}

int audit_snapshot(struct audit *a, struct audit_snapshot **out)
{
	struct audit_snapshot *s = calloc(1, sizeof(*s));
	char path[4200];

	*out = NULL;
	if (!s || !(s->fd = calloc(a->keep + 1, sizeof(*s->fd))) ||
		!(s->size = calloc(a->keep + 1, sizeof(*s->size))) ||
		!(s->ino = calloc(a->keep + 1, sizeof(*s->ino)))) {
		audit_snapshot_free(&s);
		return -ENOMEM;
	}
	for (unsigned n = a->keep + 1; n-- > 0;) {
		struct stat st;
		int fd, ret;

		rotated(a, n, path, sizeof(path));
		/*
		 * A file not there yet is no loss; one that cannot be opened now (out of
		 * descriptors) is: a query or a rebuild without it would say less than the
		 * trail holds, and the trail check after a failed sync would write its lines
		 * again.
		 */
		if ((fd = open(path, O_RDONLY | O_NONBLOCK | O_NOCTTY | O_CLOEXEC)) < 0 &&
			errno == ENOENT)
			continue;
		if (fd < 0 || fstat(fd, &st) < 0) {
			ret = -errno;
			if (fd >= 0)
				close(fd);
			audit_snapshot_free(&s);
			return ret;
		}
		s->fd[s->n] = fd;
		s->ino[s->n] = (uint64_t)st.st_ino;
		s->size[s->n++] = st.st_size;
	}
	*out = s;
	return 0;
}

int audit_snapshot_foreach(struct audit_snapshot *s, int64_t since,
	int (*cb)(json_t *ev, void *arg), void *arg)
{
	const struct audit_filter all_since = { .since = since };
	char *line = NULL;
	size_t cap = 0;
	int ret = 0;

	for (unsigned i = 0; ret == 0 && i < s->n; i++) {
		int fd = dup(s->fd[i]);
		off_t at = 0;
		ssize_t n;
		FILE *f;

		/* A file left out would be read as a trail without it (see audit_snapshot). */
		if (fd < 0 || lseek(fd, 0, SEEK_SET) < 0 || !(f = fdopen(fd, "re"))) {
			ret = errno ? -errno : -ENOMEM;
			if (fd >= 0)
				close(fd);
			break;
		}
		/*
		 * Lines appended since the snapshot are not its business: counted in bytes read, as
		 * getline returns them, so that a NUL in a damaged line cannot shift the bound.
		 */
		while (ret == 0 && at < s->size[i] && (n = getline(&line, &cap, f)) > 0) {
			json_t *ev = NULL;

			at += n;
			/* A torn write, or a damaged line (a NUL, a run-on), does not parse: skipped. */
			if (n <= MAX_LINE)
				ev = json_loadb(line, (size_t)n, JSON_REJECT_DUPLICATES, NULL);
			if (json_is_object(ev) && wanted(ev, &all_since))
				ret = cb(ev, arg);
			json_decref(ev);
		}
		/* An error getline did not flag (out of memory) also ends the file short. */
		if (ret == 0 && (ferror(f) || (at < s->size[i] && !feof(f))))
			ret = -EIO;
		fclose(f);
	}
	free(line);
	return ret;
}

int audit_foreach(struct audit *a, int64_t since, int (*cb)(json_t *ev, void *arg),
	void *arg)
{
	struct audit_snapshot *s;
	int ret;

	if ((ret = audit_snapshot(a, &s)))
		return ret;
	ret = audit_snapshot_foreach(s, since, cb, arg);
	audit_snapshot_free(&s);
	return ret;
}

/*
 * The newest max events, in a ring, each the walk's own object kept by reference: dropping the
 * oldest from the front of a JSON array moved every pointer behind it once per event past max,
 * and a full default trail holds four times max.
 */
struct query {
	const struct audit_filter *f;
	json_t **ring;
	size_t max, n, oldest;
	bool truncated;
};

static int query_cb(json_t *ev, void *arg)
{
	struct query *q = arg;

	if (!wanted(ev, q->f))
		return 0;
	if (q->n < q->max) {
		q->ring[q->n++] = json_incref(ev);
		return 0;
	}
	json_decref(q->ring[q->oldest]);
	q->ring[q->oldest] = json_incref(ev);
	q->oldest = (q->oldest + 1) % q->max;
	q->truncated = true;
	return 0;
}

json_t *audit_snapshot_query(struct audit_snapshot *s, const struct audit_filter *f, size_t max,
	bool *truncated)
{
	struct query q = { .f = f, .max = max ? max : 1 };
	json_t *out = NULL;
	size_t i = 0;

	if (!(q.ring = calloc(q.max, sizeof(*q.ring))) ||
		audit_snapshot_foreach(s, f->since, query_cb, &q) || !(out = json_array()))
		goto out;
	/* Oldest first; each event moves from the ring into the array. */
	for (; i < q.n; i++)
		if (json_array_append_new(out, q.ring[(q.oldest + i) % q.max])) {
			json_decref(out);
			out = NULL;
			i++;
			break;
		}
	*truncated = q.truncated;
out:
	for (; i < q.n; i++)
		json_decref(q.ring[(q.oldest + i) % q.max]);
	free(q.ring);
	return out;
}

json_t *audit_query(struct audit *a, const struct audit_filter *f, size_t max, bool *truncated)
{
	struct audit_snapshot *s;
	json_t *out;

	if (audit_snapshot(a, &s))
		return NULL;
	out = audit_snapshot_query(s, f, max, truncated);
	audit_snapshot_free(&s);
	return out;
}

/*
 * The part of one of the trail's files that noted_line_there read last. Notes come in the order
 * their lines were written, so a window read forward takes each file in a few large reads
 * rather than one read per line (after a failed sync, tens of thousands of lines from a disk
 * whose cache was dropped).
 */
#define RECOVER_WINDOW (1024 * 1024)

struct window {
	unsigned file;		/* index in the snapshot; t->n: nothing read yet */
	off_t from;
	size_t len;
	char *buf;		/* RECOVER_WINDOW bytes */
};

/* Whether the line a note names is in the trail, where it was written: any of its files. */
static bool noted_line_there(const struct audit_snapshot *t, const unsigned char *p,
	size_t len, struct window *w)
{
	size_t n = len - NOTE_AT;
	uint64_t at[2];
	unsigned i;
	off_t off;
	ssize_t r;

	memcpy(at, p, sizeof(at));
	for (i = 0; i < t->n && t->ino[i] != be64toh(at[0]); i++)
		;
	off = (off_t)be64toh(at[1]);
	/* No line is that long (MAX_LINE): one that claims to be is not there. */
	if (i == t->n || off < 0 || n > RECOVER_WINDOW)
		return false;
	if (w->file != i || off < w->from || (size_t)(off - w->from) + n > w->len) {
		r = pread(t->fd[i], w->buf, RECOVER_WINDOW, off);
		w->file = r > 0 ? i : t->n;
		w->from = off;
		w->len = r > 0 ? (size_t)r : 0;
	}
	return w->file == i && (size_t)(off - w->from) + n <= w->len &&
		!memcmp(w->buf + (off - w->from), p + NOTE_AT, n);
}

/* A trail that ends mid-line (a crash) gets its newline first: the next line must stand alone. */
static int end_line(struct audit *a, const struct audit_snapshot *t)
{
	char last = '\n';
	int ret;

	if (a->size && pread(t->fd[t->n - 1], &last, 1, (off_t)a->size - 1) != 1)
		return -EIO;
	if (last != '\n' && (ret = append_line(a, "\n", 1)))
		return ret;
	a->unended = false; /* read, not guessed */
	return 0;
}

/*
 * The last len bytes of the current file (fewer if it is shorter): where a recovery that ran
 * before, and crashed before the journal could say so, put the lines it restored.
 */
static char *read_tail(const struct audit *a, const struct audit_snapshot *t, size_t len,
	size_t *got)
{
	size_t n = a->size < len ? (size_t)a->size : len;
	char *buf = malloc(n + 1);
	ssize_t r;

	*got = 0;
	if (!buf)
		return NULL;
	r = pread(t->fd[t->n - 1], buf, n, (off_t)(a->size - n));
	*got = r > 0 ? (size_t)r : 0;
	return buf;
}

/* A note a store_open handed back: its line, checked (jitd wrote it, a checksum held). */
static bool note_line(const struct store_note *n, const char **line, size_t *len)
{
	if (n->len <= NOTE_AT)
		return false;
	*line = (const char *)n->p + NOTE_AT;
	*len = n->len - NOTE_AT;
	return (*line)[*len - 1] == '\n' && !memchr(*line, '\n', *len - 1);
}

/* The most read back to find lines an earlier attempt put back (audit_recover). */
#define RECOVERED_MAX (64 * 1024 * 1024)

int audit_recover(struct audit *a, const struct store_note *v, size_t n, size_t *restored)
{
	bool *missing = calloc(n + 1, sizeof(*missing));
	struct window w = { .buf = malloc(RECOVER_WINDOW) };
	struct audit_snapshot *t = NULL;
	size_t want = 1, got = 0, len;
	char *tail = NULL;
	const char *line;
	int ret = 0;

	*restored = 0;
	if (!missing || !w.buf) {
		free(missing);
		free(w.buf);
		return -ENOMEM;
	}
	/*
	 * Lines are compared with what the disk holds, not with the page cache: after a failed
	 * writeback the cache still shows what the disk lost (the pages are clean, not written
	 * again). So what is dirty is written first (a failure leaves those pages clean too), and
	 * every clean page of the trail's files is dropped, for the reads below to reach the disk.
	 */
	if (!n)
		goto synced;
	(void)trail_fsync(a);
	if ((ret = audit_snapshot(a, &t)))
		goto out;
	/* The trail's files, oldest first: the last one is audit.jsonl, the one written to. */
	if (!t->n || t->ino[t->n - 1] != a->ino) {
		ret = -EIO;
		goto out;
	}
	for (unsigned i = 0; i < t->n; i++)
		(void)posix_fadvise(t->fd[i], 0, 0, POSIX_FADV_DONTNEED);
	w.file = t->n;
	for (size_t i = 0; i < n; i++) {
		if (!note_line(&v[i], &line, &len)) {
			log_warn("audit: ignoring a note in the journal that is not an audit line");
			continue;
		}
		if ((missing[i] = !noted_line_there(t, v[i].p, v[i].len, &w)))
			want += len;
	}
	/* Lines put back by an earlier attempt are from where it began, else at the very end. */
	if (want > 1 && a->recovered_ino == a->ino && a->recovered_at < a->size &&
		a->size - a->recovered_at > want)
		want = a->size - a->recovered_at < RECOVERED_MAX ?
			(size_t)(a->size - a->recovered_at) : RECOVERED_MAX;
	if (want > 1 && !(tail = read_tail(a, t, want, &got)))
		ret = -ENOMEM;
	for (size_t i = 0; i < n && !ret; i++) {
		if (!missing[i] || !note_line(&v[i], &line, &len) ||
			(got >= len && memmem(tail, got, line, len)))
			continue;
		if (!*restored && (ret = end_line(a, t)))
			break;
		if (!a->recovered_ino) {
			a->recovered_ino = a->ino;
			a->recovered_at = a->size;
		}
		if (!(ret = append_line(a, line, len))) {
			a->dirty = true;
			(*restored)++;
		}
	}
synced:
	/* Only a sync that holds after the lines are back ends the doubt. */
	if (!ret && (*restored || a->lost))
		ret = trail_fsync(a);
	if (!ret) {
		a->lost = 0;
		a->recovered_ino = 0;
	}
out:
	audit_snapshot_free(&t);
	free(tail);
	free(missing);
	free(w.buf);
	return ret;
}
