#ifndef JITD_AGENT_STORE_H
#define JITD_AGENT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Durable record of the active grants, so that a restart of jitd restores exactly what it had
 * granted: the signed token as received (checked again on load, so a removed key or a tightened
 * policy takes effect). An append-only journal, state_dir/grants.journal, takes one record per
 * change, written before the kernel changes and fdatasync'd before the grant is answered
 * (before the call returns, but for store_write_many); once it holds
 * 4096 records and at least as many as there are live grants, a snapshot,
 * state_dir/grants.snap (temporary file, fsync, rename, fsync of the directory), replaces it.
 * Each record carries its length and a SHA-256-based checksum: a torn journal tail (a crash
 * mid-append) is cut off, a damaged snapshot is reported and kept under a second name
 * (grants.snap.corrupt-TIME, .N when taken; when the directory allows one) until a sound one
 * replaces it; neither can add a grant, since only records whose checksum holds are read.
 * Memory holds each grant's id and where its record is; tokens are read back from the files
 * (mapped) when they are walked or compacted.
 */
struct store;

/* The files in state_dir whose records a start restores, unsigned (agent/statetrust.h). */
#define STORE_JOURNAL "grants.journal"
#define STORE_SNAPSHOT "grants.snap"

/*
 * Creates state_dir (0700) if needed, locks it (flock, held until store_close) and loads the
 * snapshot and journal. 0, -EBUSY when another store (another jitd) holds it, or -errno:
 * -EPERM when the directory, the journal or the snapshot is not to be trusted, why (unless
 * NULL) then saying which and why, for the caller to say once.
 */
int store_open(const char *state_dir, struct store **out, char *why, size_t why_len);
/* Closes and NULLs *s; accepts NULL. */
void store_close(struct store **s);
/* Writes a snapshot now and empties the journal (also done as the journal grows). 0 or -errno. */
int store_compact(struct store *s);
/* Durably records token as the grant jti. Returns 0 or -errno. */
int store_put(struct store *s, const char *jti, const char *token, size_t len);
/*
 * One grant's record, for store_put_many. annex (NULL for none): what jitd decided about the
 * grant that must survive with it, such as its gateway ports; a string of at most
 * STORE_MAX_ANNEX bytes.
 */
struct store_rec {
	const char *jti;
	const char *token;
	size_t len;
	const char *annex;
};
#define STORE_MAX_ANNEX 32768
/*
 * Durably records n grants together: one write and one fdatasync for all (group commit). All or
 * none: on failure none of them is recorded. Returns 0 or -errno.
 */
int store_put_many(struct store *s, const struct store_rec *r, size_t n);
/*
 * The same, written but not yet durable: a group commit hands the fdatasync to another thread
 * (store_unsynced_fd) and answers no grant before it is done. A later durable call, or
 * store_sync, makes these records durable too.
 */
int store_write_many(struct store *s, const struct store_rec *r, size_t n);
/*
 * If records were written since the last fdatasync: *fd = a descriptor of the journal for the
 * syncer (syncer_take), whose fdatasync is now the caller's, else *fd = -1. 0 or -errno (then
 * nothing changed).
 */
int store_unsynced_fd(struct store *s, int *fd);
/* fdatasync of the journal if anything was written since the last one. 0 or -errno. */
int store_sync(struct store *s);
/*
 * The caller's fdatasync of store_unsynced_fd's descriptor failed. As after a failed sync of
 * the store's own, the next write first rewrites every record into a new snapshot, and fails
 * if that cannot be done (the journal may have lost a write, and a start cuts it there).
 */
void store_sync_failed(struct store *s);
/* Whether jti has a record (a hash lookup). */
bool store_contains(struct store *s, const char *jti);
/* Removes the record of jti (absent is fine). Returns 0 or -errno. */
int store_del(struct store *s, const char *jti);
/* Removes the records of n grants with one write and one fdatasync. 0 or -errno. */
int store_del_many(struct store *s, const char *const *jti, size_t n);
/*
 * One record, for a pass that decides about many at once (the restore). token and annex point
 * into the mapped files and are not NUL-terminated; annex is NULL when the record has none. jti
 * is the store's own string: valid until that record is removed.
 */
struct store_item {
	const char *jti;
	const char *token;
	size_t len;
	const char *annex;
	size_t annex_len;
};
/*
 * Every record, in *v (*n of them) in the order they lie in the files, valid until
 * store_items_end. Meanwhile records may be added and removed, but no compaction runs. 0,
 * -EBUSY (a walk is open already), -EIO (a record loaded at open no longer reads back) or
 * -errno.
 */
int store_items(struct store *s, struct store_item **v, size_t *n);
/*
 * The caller is done reading the records of v[0..n) for now: the pages they span leave jitd's
 * memory (the page cache keeps them). Reading them again still works; it only costs a page
 * fault. Safe to call from several threads at once, for items of the same walk.
 */
void store_items_done(struct store *s, const struct store_item *v, size_t n);
/* Ends the walk and frees *v (NULLed; accepts NULL). A compaction that waited runs now. */
void store_items_end(struct store *s, struct store_item **v);

/*
 * Notes: bytes another module needs kept durable with the journal until it has made them
 * durable elsewhere, and then no longer (the audit trail's lines of a group's grants, so that
 * one fdatasync makes a group durable, see agent/audit.h). A note is written as a journal
 * record (store_write_notes: not durable before the journal's next fdatasync, which the caller
 * arranges as for store_write_many); store_mark tells where the journal is now, and
 * store_cover(mark), once every note written before that mark has done its job, has the next
 * note record say so. store_open keeps the notes that no record said were covered:
 * store_notes, until store_notes_done. A compaction copies no note: it calls the guard first,
 * which must make every note's purpose durable (else the compaction does not run).
 */
struct store_note {
	unsigned char *p;
	size_t len;
};
struct store_mark {
	uint64_t gen;	/* compactions so far: a mark from before one covers nothing after it */
	off_t off;
};
/* Empty notes (len 0) are skipped. 0 or -errno (then none is written). */
int store_write_notes(struct store *s, const struct store_note *v, size_t n);
struct store_mark store_mark(const struct store *s);
void store_cover(struct store *s, struct store_mark m);
/* store_cover, and a note record saying so made durable now. 0 or -errno. */
int store_cover_durable(struct store *s, struct store_mark m);
/* The uncovered notes found by store_open, oldest first; the store's, valid until _done. */
void store_notes(const struct store *s, const struct store_note **v, size_t *n);
/*
 * They are taken care of: a record saying so, made durable, and the notes freed. Then a sound
 * snapshot replaces one store_open found damaged, which waited for this (the compaction would
 * have emptied the journal of the notes). 0 or -errno.
 */
int store_notes_done(struct store *s);
/*
 * While jitd runs: the notes in the journal now that no mark covers, oldest first, copied
 * (freed with store_notes_free). 0 or -errno (then none).
 */
int store_uncovered_notes(struct store *s, struct store_note **v, size_t *n);
void store_notes_free(struct store_note *v, size_t n);
void store_set_compact_guard(struct store *s, int (*guard)(void *arg), void *arg);

/*
 * Damage found in the files since store_open, each finding logged as it is found: a damaged
 * snapshot or journal at the start, a record a compaction left out, a note the check after a
 * failed audit sync could not read. No crash leaves any of these; they cost grants (or audit
 * lines) that were acknowledged, so status shows them until the next start.
 */
struct store_damage {
	unsigned long count;	/* findings; 0: none */
	int64_t at;		/* the last one's (Unix time) */
	char last[512];		/* what it was, as logged */
};
const struct store_damage *store_damage(const struct store *s);
/*
 * hook(arg) after each finding from now on (NULL: none): it may not call the store, which is in
 * the middle of an operation (a compaction).
 */
void store_set_damage_hook(struct store *s, void (*hook)(void *arg), void *arg);

#endif
