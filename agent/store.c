#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/statefile.h"
#include "agent/statetrust.h"
#include "agent/store.h"
#include "agent/syncer.h"
#include "agent/testhook.h"
#include "common/array.h"
#include "common/clock.h"
#include "common/grant.h"
#include "common/jws.h"
#include "common/log.h"

#define JOURNAL STORE_JOURNAL
#define SNAPSHOT STORE_SNAPSHOT
#define SNAPSHOT_TMP ".grants.snap.tmp"
#define LEGACY_DIR "grants" /* one file per grant, before the journal */
/*
 * A snapshot replaces the journal once it holds this many records, and at least as many as
 * there are live grants: a snapshot rewrites them all, so with 100,000 of them it must not come
 * every 4096 changes (the cost stays proportional to the changes, and a start reads at most
 * about twice the live records).
 */
#define COMPACT_RECORDS 4096
/* Record: 4-byte big-endian payload length, 8 bytes of SHA-256 of the payload, the payload. */
#define HDR 12
#define SUM 8
#define MAX_PAYLOAD (1 + GRANT_MAX_STRING + 1 + JWS_MAX_TOKEN + 1 + STORE_MAX_ANNEX)
/* A note's record: 'N', the offset its covered mark names (8 bytes, big-endian), the note. */
#define NOTE_HDR 9
/*
 * The first record of a snapshot, and of each journal: a deletion of an id no grant can have (a
 * control character) that names an epoch, 16 hex digits. A compaction renames its snapshot into
 * place, then empties the journal: jitd stopped between the two left the old journal beside the
 * new snapshot, and replayed over it, the old records brought back grants dropped from memory
 * alone (after a failed sync, or a damaged record). A journal that opens with another epoch than
 * its snapshot's is older than the snapshot, which holds every grant it did. One that opens with
 * no epoch was written by a jitd from before epochs, which reads an epoch as a deletion of
 * nothing (a rollback): it is read over the snapshot, as that jitd would.
 */
#define EPOCH_ID "\001epoch "
#define EPOCH_DIGITS 16
#define EPOCH_PAYLOAD (1 + sizeof(EPOCH_ID) - 1 + EPOCH_DIGITS)
#define EPOCH_ID_SIZE (sizeof(EPOCH_ID) + EPOCH_DIGITS) /* with its NUL */
/* A snapshot is written in chunks of this much. */
#define COPY_CHUNK (1024 * 1024)
/* A walk through a mapped file gives back what it has read every this many bytes (release). */
#define RELEASE_STEP (1024 * 1024)

/*
 * Where a grant's record is: the token stays on disk, in the snapshot or the journal, so that
 * 100,000 grants cost their ids in memory, not their 600-byte tokens.
 */
enum { IN_SNAPSHOT, IN_JOURNAL };

struct entry {
	char *jti;
	off_t off;		/* of the record's header */
	uint32_t plen;		/* its payload's length */
	uint8_t file;		/* IN_SNAPSHOT or IN_JOURNAL */
	size_t next;		/* next entry in the same hash bucket, or NONE */
};

#define NONE SIZE_MAX

struct files {
	const unsigned char *p[2];
	size_t len[2];
};

/* Where an uncovered note's record is in the journal, while the journal is loaded. */
struct note_at {
	off_t off;
	uint32_t plen;
};

struct store {
	int dirfd;
	int jfd;		/* the journal, opened for appending */
	int jtwin;		/* the journal again, for the syncer (syncer_open_twin) */
	bool unsynced;		/* written since its last fdatasync (store_write_many) */
	bool suspect;		/* a sync of it failed: rewritten before anything more (writable) */
	int64_t compact_failed_us;	/* when the last compaction failed (compact_paced) */
	int compact_ret;	/* how; 0: it did not */
	size_t compact_records;	/* COMPACT_RECORDS, or a test's (store_open) */
	int sfd;		/* the snapshot entries IN_SNAPSHOT point into, or -1 */
	off_t jsize;
	bool walking;		/* store_items is out: no compaction may move the records */
	struct files walk;	/* the files as mapped for it */
	size_t jrecords;
	struct entry *v;
	size_t n, cap;
	/* jti -> entry: expiring 100k grants must not cost 100k x 100k string compares. */
	size_t *bucket;		/* first entry of each bucket, or NONE */
	size_t nbuckets;	/* a power of two, >= cap */
	/*
	 * Fetched once (checksum): EVP_sha256() makes every digest look the algorithm up again,
	 * more than half of checksumming a record (1.2 against 0.5 us), 100,000 at a start.
	 */
	EVP_MD *sha256;
	/*
	 * Notes (store_write_notes): every one before this journal offset has done its job, and
	 * the next note record says so. gen counts compactions, which empty the journal.
	 */
	off_t covered;
	uint64_t gen;
	/* Found while loading the journal: notes, the first notes_first of them covered. */
	struct note_at *notes;
	size_t n_notes, notes_cap, notes_first;
	/* The uncovered ones, copied: what store_notes returns until store_notes_done. */
	struct store_note *loaded;
	size_t n_loaded;
	int (*guard)(void *arg);
	void *guard_arg;
	struct store_damage damage;	/* found since store_open (store_damage) */
	/*
	 * The notes walk is tried again while the trail's check fails: damage it met before, in
	 * the journal of compaction gen, at offsets below off, is not found (counted) again.
	 */
	uint64_t walked_gen;
	off_t walked_off;
	void (*damage_hook)(void *arg);
	void *damage_arg;
	/* A damaged snapshot's replacement, waiting for store_notes_done (store_open). */
	bool compact_after_notes;
	/* Deletions found after damage before the journal's end (late_deletions). */
	char **late_del;
	size_t n_late_del;
	bool late_del_damaged;	/* the first of them is the damaged record itself */
	/* Epochs (EPOCH_ID): the snapshot's and the journal's (0: none), and the highest seen. */
	uint64_t snap_epoch, journal_epoch, epoch;
	bool stale_journal;	/* older than the snapshot: not loaded (journal_stale) */
};

/* Damage found in the files: logged, and kept for status, which an operator reads first. */
static void found_damage(struct store *s, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
static void found_damage(struct store *s, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vsnprintf(s->damage.last, sizeof(s->damage.last), fmt, ap);
	va_end(ap);
	s->damage.count++;
	s->damage.at = (int64_t)time(NULL);
	log_err("%s", s->damage.last);
	if (s->damage_hook)
		s->damage_hook(s->damage_arg);
}

static size_t hash(const char *s)
{
	size_t h = 1469598103934665603ULL;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ULL;
	return h;
}

static size_t *link_to(struct store *s, size_t i)
{
	size_t *p = &s->bucket[hash(s->v[i].jti) & (s->nbuckets - 1)];

	while (*p != i)
		p = &s->v[*p].next;
	return p;
}

static int rehash(struct store *s, size_t want)
{
	size_t nb = s->nbuckets ? s->nbuckets : 64, *b;

	while (nb < want)
		nb *= 2;
	if (nb == s->nbuckets)
		return 0;
	if (!(b = malloc(nb * sizeof(*b))))
		return -ENOMEM;
	for (size_t i = 0; i < nb; i++)
		b[i] = NONE;
	for (size_t i = 0; i < s->n; i++) {
		size_t h = hash(s->v[i].jti) & (nb - 1);

		s->v[i].next = b[h];
		b[h] = i;
	}
	free(s->bucket);
	s->bucket = b;
	s->nbuckets = nb;
	return 0;
}

static int checksum(struct store *s, const void *p, size_t n, unsigned char out[SUM])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	/* On first use: OpenSSL's default provider is 2 MB an idle agent need not hold. */
	if (!s->sha256 && !(s->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)))
		return -EIO;
	if (!EVP_Digest(p, n, md, &mdlen, s->sha256, NULL) || mdlen < SUM)
		return -EIO;
	memcpy(out, md, SUM);
	return 0;
}

static struct entry *find(struct store *s, const char *jti)
{
	if (!s->nbuckets)
		return NULL;
	for (size_t i = s->bucket[hash(jti) & (s->nbuckets - 1)]; i != NONE; i = s->v[i].next)
		if (!strcmp(s->v[i].jti, jti))
			return &s->v[i];
	return NULL;
}

static void mem_del(struct store *s, const char *jti)
{
	struct entry *e = find(s, jti);
	size_t i, last;

	if (!e)
		return;
	i = (size_t)(e - s->v);
	*link_to(s, i) = e->next;
	free(e->jti);
	/* The last entry moves into the hole: repoint whatever led to it. */
	last = --s->n;
	if (i != last) {
		*link_to(s, last) = i;
		s->v[i] = s->v[last];
	}
}

/*
 * Takes a copy of jti; where its record is replaces an earlier one for the same jti. Out of
 * memory, the earlier one stays.
 */
static int mem_put(struct store *s, const char *jti, uint8_t file, off_t off, uint32_t plen)
{
	char *j = strdup(jti);
	struct entry *e;
	size_t h;

	if (!j)
		return -ENOMEM;
	if (!(e = array_reserve(s->v, &s->cap, s->n + 1, sizeof(*e), 64))) {
		free(j);
		return -ENOMEM;
	}
	s->v = e;
	if (rehash(s, s->cap)) {
		free(j);
		return -ENOMEM;
	}
	mem_del(s, jti);
	h = hash(j) & (s->nbuckets - 1);
	s->v[s->n] = (struct entry){ .jti = j, .off = off, .plen = plen, .file = file,
		.next = s->bucket[h] };
	s->bucket[h] = s->n++;
	return 0;
}

/*
 * payload: 'P' jti NUL token [NUL annex], 'D' jti, or 'N' covered note (NOTE_HDR; for 'N',
 * token and len are the note).
 */
static int encode(struct store *s, char op, const char *jti, const char *token, size_t len,
	const char *annex, unsigned char **out, size_t *outlen)
{
	size_t al = annex ? strlen(annex) : 0;
	size_t jl = op == 'N' ? 0 : strlen(jti);
	size_t pl = op == 'N' ? NOTE_HDR + len :
		1 + jl + (op == 'P' ? 1 + len + (annex ? 1 + al : 0) : 0);
	uint32_t pl_be = htobe32((uint32_t)pl);
	unsigned char *b;
	int ret;

	if (jl > GRANT_MAX_STRING || pl > MAX_PAYLOAD || !(b = malloc(HDR + pl)))
		return jl > GRANT_MAX_STRING || pl > MAX_PAYLOAD ? -EINVAL : -ENOMEM;
	memcpy(b, &pl_be, sizeof(pl_be));
	b[HDR] = (unsigned char)op;
	if (op == 'N') {
		const uint64_t covered = htobe64((uint64_t)s->covered);

		memcpy(b + HDR + 1, &covered, sizeof(covered));
		if (len)
			memcpy(b + HDR + NOTE_HDR, token, len);
	} else {
		memcpy(b + HDR + 1, jti, jl);
	}
	if (op == 'P') {
		b[HDR + 1 + jl] = '\0';
		memcpy(b + HDR + 2 + jl, token, len);
		if (annex) {
			b[HDR + 2 + jl + len] = '\0';
			memcpy(b + HDR + 3 + jl + len, annex, al);
		}
	}
	if ((ret = checksum(s, b + HDR, pl, b + 4))) {
		free(b);
		return ret;
	}
	*out = b;
	*outlen = HDR + pl;
	return 0;
}

/*
 * A 'P' payload's parts: token [NUL annex] after 'P' jti NUL. -EINVAL for anything jitd cannot
 * have written.
 */
static int split_put(const unsigned char *p, size_t n, const char **token, size_t *len,
	const char **annex, size_t *alen)
{
	const unsigned char *j = memchr(p + 1, '\0', n - 1), *t, *nul;
	size_t rest;

	if (!j || j == p + 1 || (size_t)(j - p - 1) > GRANT_MAX_STRING)
		return -EINVAL;
	t = j + 1;
	rest = n - (size_t)(t - p);
	nul = memchr(t, '\0', rest);
	*token = (const char *)t;
	*len = nul ? (size_t)(nul - t) : rest;
	*annex = nul ? (const char *)nul + 1 : NULL;
	*alen = nul ? rest - *len - 1 : 0;
	if (*len > JWS_MAX_TOKEN || *alen > STORE_MAX_ANNEX ||
		(*annex && memchr(*annex, '\0', *alen)))
		return -EINVAL;
	return 0;
}

/*
 * Whether r, a record as a file holds it now, is still what was written: 0, -EBADMSG, or why no
 * checksum could be computed. Pages whose writeback failed are clean in the page cache and may
 * be evicted, then read back from the disk stale; a damaged record copied as it is would make
 * the next start cut the snapshot there, with every record after it.
 */
static int record_sound(struct store *s, const unsigned char *r, uint32_t plen)
{
	unsigned char sum[SUM];
	int ret;

	if ((ret = checksum(s, r + HDR, plen, sum)))
		return ret;
	return memcmp(sum, r + 4, SUM) ? -EBADMSG : 0;
}

/* A record's payload length, from the first 4 bytes of its header (big-endian). */
static uint32_t payload_len(const unsigned char *hdr)
{
	uint32_t be;

	memcpy(&be, hdr, sizeof(be));
	return be32toh(be);
}

/*
 * The payload length of the record at off in a file of len bytes, if it is one jitd can have
 * written whole there; else 0.
 */
static uint32_t record_fits(const unsigned char *p, size_t len, off_t off)
{
	size_t left = len - (size_t)off;
	uint32_t pl = left < HDR ? 0 : payload_len(p + off);

	return pl < 2 || pl > MAX_PAYLOAD || left - HDR < pl ? 0 : pl;
}

/* The offset a note record (payload p, at least NOTE_HDR bytes) says every earlier note is done. */
static off_t note_covered(const unsigned char *p)
{
	uint64_t be;

	memcpy(&be, p + 1, sizeof(be));
	return (off_t)be64toh(be);
}

/*
 * A note record in the journal: kept in the list store_notes returns, which drops every note
 * before the offset the record says is covered. Notes go only into the journal (a snapshot
 * copies grants), so one in a snapshot is damage.
 */
static int load_note(struct store *s, const unsigned char *p, size_t n, uint8_t file, off_t off)
{
	struct note_at *v;
	off_t covered;

	if (n < NOTE_HDR || file != IN_JOURNAL)
		return -EINVAL;
	covered = note_covered(p);
	if (covered < 0 || covered > off)
		return -EINVAL;
	while (s->notes_first < s->n_notes && s->notes[s->notes_first].off < covered)
		s->notes_first++;
	if (n == NOTE_HDR)
		return 0;
	if (!(v = array_reserve(s->notes, &s->notes_cap, s->n_notes + 1, sizeof(*v), 16)))
		return -ENOMEM;
	s->notes = v;
	s->notes[s->n_notes++] = (struct note_at){ off, (uint32_t)n };
	return 0;
}

/* The epoch an epoch record's payload (p, n bytes) names, or 0 if it is none. */
static uint64_t epoch_of(const unsigned char *p, size_t n)
{
	static const char hex[] = "0123456789abcdef";
	const unsigned char *d = p + EPOCH_PAYLOAD - EPOCH_DIGITS;
	uint64_t e = 0;

	if (n != EPOCH_PAYLOAD || p[0] != 'D' || memcmp(p + 1, EPOCH_ID, sizeof(EPOCH_ID) - 1))
		return 0;
	for (size_t i = 0; i < EPOCH_DIGITS; i++) {
		const char *h = d[i] ? strchr(hex, d[i]) : NULL;

		if (!h)
			return 0;
		e = e << 4 | (uint64_t)(h - hex);
	}
	return e;
}

/* The id an epoch record deletes. */
static void epoch_id(char id[EPOCH_ID_SIZE], uint64_t epoch)
{
	snprintf(id, EPOCH_ID_SIZE, EPOCH_ID "%016llx", (unsigned long long)epoch);
}

/* An epoch record (HDR and its payload) in *out, *outlen bytes: 0 or -errno. */
static int encode_epoch(struct store *s, uint64_t epoch, unsigned char **out, size_t *outlen)
{
	char id[EPOCH_ID_SIZE];

	epoch_id(id, epoch);
	return encode(s, 'D', id, NULL, 0, NULL, out, outlen);
}

/* Only the first record of a file: anywhere else jitd never wrote it, damage. */
static int load_epoch(struct store *s, const unsigned char *p, size_t n, uint8_t file,
	off_t off)
{
	uint64_t e = epoch_of(p, n);

	if (!e || off)
		return -EINVAL;
	if (file == IN_SNAPSHOT)
		s->snap_epoch = e;
	else
		s->journal_epoch = e;
	if (e > s->epoch)
		s->epoch = e;
	return 0;
}

/* Applies one verified payload, the record at off in file, to the in-memory set. */
static int apply_payload(struct store *s, const unsigned char *p, size_t n, uint8_t file,
	off_t off)
{
	const char *token, *annex;
	char jti[GRANT_MAX_STRING + 1];
	size_t len, alen, jl;

	if (n >= 1 && p[0] == 'N')
		return load_note(s, p, n, file, off);
	if (n < 2 || (p[0] != 'P' && p[0] != 'D'))
		return -EINVAL;
	if (p[0] == 'D' && p[1] == EPOCH_ID[0])
		return load_epoch(s, p, n, file, off);
	if (p[0] == 'D') {
		if ((jl = n - 1) > GRANT_MAX_STRING || memchr(p + 1, '\0', jl))
			return -EINVAL;
		memcpy(jti, p + 1, jl);
		jti[jl] = '\0';
		mem_del(s, jti);
		return 0;
	}
	if (split_put(p, n, &token, &len, &annex, &alen))
		return -EINVAL;
	return mem_put(s, (const char *)p + 1, file, off, (uint32_t)n);
}

/* fd's whole content mapped read-only; *len 0 (and nothing mapped) for an empty file. */
static int map_file(int fd, const unsigned char **p, size_t *len)
{
	struct stat st;
	void *m;

	*p = NULL;
	*len = 0;
	if (fstat(fd, &st) < 0)
		return -errno;
	if (!st.st_size)
		return 0;
	if ((m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0)) == MAP_FAILED)
		return -errno;
	*p = m;
	*len = (size_t)st.st_size;
	return 0;
}

static void unmap_file(const unsigned char *p, size_t len)
{
	if (len)
		munmap((void *)(uintptr_t)p, len);
}

/*
 * A mapped file keeps every page read through it resident until it is unmapped: a pass over
 * the state (the load, a start's walk, a compaction) would hold all of it, 50 MB at 100,000
 * grants, on top of what jitd builds from it. The pages of [from, to) that the pass is done
 * with are given back instead: they stay in the page cache, and the mapping (read-only,
 * never written) reads them from it again if they are touched. From the page holding from to
 * the one holding to, that one excluded: a record being read next may start in it.
 */
static void release(const unsigned char *p, size_t from, size_t to)
{
	/* Not kept in a static: restore threads call this at once (a data race, if benign). */
	size_t page = (size_t)sysconf(_SC_PAGESIZE), a, b;

	a = from / page * page;
	b = to / page * page;
	/* Only memory is at stake: a failure leaves the pages where they were. */
	if (b > a)
		(void)madvise((void *)(uintptr_t)(p + a), b - a, MADV_DONTNEED);
}

/*
 * A pass reading the file mapped at p forward has come to off: it gives back what lies behind,
 * RELEASE_STEP at a time. *done: where the pages it has not given back begin.
 */
static void release_behind(const unsigned char *p, size_t *done, size_t off)
{
	if (off >= *done + RELEASE_STEP) {
		release(p, *done, off);
		*done = off;
	}
}

/*
 * The notes no mark covered, copied out of the journal as mapped (p): a compaction may empty
 * it before they are used.
 */
static int copy_notes(struct store *s, const unsigned char *p)
{
	size_t n = s->n_notes - s->notes_first;
	int ret = 0;

	if (n && !(s->loaded = calloc(n, sizeof(*s->loaded))))
		return -ENOMEM;
	for (size_t i = 0; i < n; i++) {
		const struct note_at *at = &s->notes[s->notes_first + i];
		size_t len = at->plen - NOTE_HDR;

		if (!(s->loaded[i].p = malloc(len))) {
			ret = -ENOMEM;
			break;
		}
		memcpy(s->loaded[i].p, p + at->off + HDR + NOTE_HDR, len);
		s->loaded[i].len = len;
		s->n_loaded++;
	}
	free(s->notes);
	s->notes = NULL;
	s->n_notes = s->notes_cap = s->notes_first = 0;
	return ret;
}

static void free_loaded(struct store *s)
{
	for (size_t i = 0; i < s->n_loaded; i++)
		free(s->loaded[i].p);
	free(s->loaded);
	s->loaded = NULL;
	s->n_loaded = 0;
}

/*
 * Whether what follows the last good record (at good) is what a crash in the middle of an
 * append leaves: a last record cut short or garbled, with nothing after it but zeros (a file
 * system can extend a file before its data reaches the disk).
 */
static bool torn_tail(const unsigned char *p, size_t len, off_t good)
{
	size_t left = len - (size_t)good, pl, from = (size_t)good;

	if (left < HDR)
		return true;
	pl = payload_len(p + good);
	if (pl >= 2 && pl <= MAX_PAYLOAD) {
		if (left - HDR <= pl)
			return true;
		from += HDR + pl;
	}
	for (size_t i = from; i < len; i++)
		if (p[i])
			return false;
	return true;
}

/* d (pl bytes) as a deletion ('D' and a grant's id), kept to apply once the journal is cut. */
static int keep_deletion(struct store *s, const unsigned char *d, uint32_t pl)
{
	char **v;

	if (d[0] != 'D' || pl - 1 > GRANT_MAX_STRING || memchr(d + 1, '\0', pl - 1))
		return 0;
	if (!(v = realloc(s->late_del, (s->n_late_del + 1) * sizeof(*v))))
		return -ENOMEM;
	s->late_del = v;
	if (!(v[s->n_late_del] = strndup((const char *)d + 1, pl - 1)))
		return -ENOMEM;
	s->n_late_del++;
	return 0;
}

/*
 * Damage before the journal's end cuts it there (cut_journal), and the records after it go with
 * it. A deletion among them ended a grant (revoked, expired, withdrawn) that the records before
 * the damage still hold, and that grant must not come back: every whole, sound 'D' record after
 * the damage, wherever it starts, is found by its checksum and kept to apply once the journal
 * is cut (apply_late_deletions). *sound: how many sound records of any kind it found there.
 */
static int late_deletions(struct store *s, const unsigned char *p, size_t len, off_t from,
	size_t *sound)
{
	size_t o = (size_t)from + 1;

	*sound = 0;
	while (o + HDR < len) {
		uint32_t pl = record_fits(p, len, (off_t)o);
		int ret;

		if (!pl || (ret = record_sound(s, p + o, pl)) == -EBADMSG) {
			o++;
			continue;
		}
		if (ret || (ret = keep_deletion(s, p + o + HDR, pl)))
			return ret;
		(*sound)++;
		o += HDR + pl;
	}
	return 0;
}

/*
 * Whether the journal (p, len bytes) is older than the snapshot (EPOCH_ID): the snapshot has
 * an epoch, and the journal's first record, whole and sound, is another epoch. A first record
 * damaged is damage, as anywhere (load). 0, or why no checksum could be computed.
 */
static int journal_stale(struct store *s, const unsigned char *p, size_t len, bool *stale)
{
	uint32_t pl;
	uint64_t e;
	int ret;

	*stale = false;
	if (!s->snap_epoch || !(pl = record_fits(p, len, 0)))
		return 0;
	if ((ret = record_sound(s, p, pl)))
		return ret == -EBADMSG ? 0 : ret;
	e = epoch_of(p + HDR, pl);
	*stale = e && e != s->snap_epoch;
	if (e > s->epoch)
		s->epoch = e;
	return 0;
}

/* A sound grant record of a stale journal, by id then place (stale_deletions). */
struct stale_rec {
	const unsigned char *id;
	size_t len;
	size_t off;
	bool del;
};

static int cmp_stale_rec(const void *a, const void *b)
{
	const struct stale_rec *x = a, *y = b;
	int c = memcmp(x->id, y->id, x->len < y->len ? x->len : y->len);

	if (!c)
		c = (x->len > y->len) - (x->len < y->len);
	return c ? c : (x->off > y->off) - (x->off < y->off);
}

/*
 * A stale journal's grants are taken from the snapshot, but a grant whose last record in it is
 * a deletion ends: a jitd from before epochs, after a rollback, may have appended that deletion
 * for a grant the snapshot holds, and a deletion opens nothing. Its last record, not any: a
 * grant taken back and sent again (a record, its deletion, the record again) is live, and in
 * the snapshot. Every sound record counts, found by its checksum from the first byte on, as
 * after damage (late_deletions).
 */
static int stale_deletions(struct store *s, const unsigned char *p, size_t len)
{
	struct stale_rec *v = NULL, *nv;
	size_t n = 0, cap = 0, o = 0;
	char jti[GRANT_MAX_STRING + 1];

	while (o + HDR < len) {
		uint32_t pl = record_fits(p, len, (off_t)o);
		const unsigned char *d = p + o + HDR, *nul;
		int ret;

		if (!pl || (ret = record_sound(s, p + o, pl)) == -EBADMSG) {
			o++;
			continue;
		}
		if (ret) {
			free(v);
			return ret;
		}
		nul = d[0] == 'P' ? memchr(d + 1, '\0', pl - 1) : NULL;
		if ((d[0] == 'D' && d[1] != EPOCH_ID[0]) || nul) {
			if (!(nv = array_reserve(v, &cap, n + 1, sizeof(*v), 64))) {
				free(v);
				return -ENOMEM;
			}
			v = nv;
			v[n++] = (struct stale_rec){ d + 1, nul ? (size_t)(nul - d - 1) : pl - 1, o,
				d[0] == 'D' };
		}
		o += HDR + pl;
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_stale_rec);
	for (size_t i = 0; i < n; i++) {
		/* The last of an id's records: is it a deletion? */
		if ((i + 1 < n && v[i + 1].len == v[i].len && !memcmp(v[i + 1].id, v[i].id,
			v[i].len)) || !v[i].del || v[i].len > GRANT_MAX_STRING ||
			memchr(v[i].id, '\0', v[i].len))
			continue;
		memcpy(jti, v[i].id, v[i].len);
		jti[v[i].len] = '\0';
		mem_del(s, jti);
	}
	free(v);
	return 0;
}

/*
 * Reads records from fd until the end or the first that is short or fails its checksum.
 * *good is the offset after the last good record; *bad tells whether anything followed it,
 * and *torn whether that is only a torn tail (torn_tail) rather than damage.
 * The file is mapped: 100,000 records read with two preads each were 8% of a restart.
 */
static int load(struct store *s, int fd, uint8_t file, off_t *good, size_t *records, bool *bad,
	bool *torn)
{
	const unsigned char *p;
	size_t len, done = 0;
	uint32_t pl;
	int ret;

	*good = 0;
	*records = 0;
	*bad = false;
	*torn = false;
	if ((ret = map_file(fd, &p, &len)))
		return ret;
	if (file == IN_JOURNAL && ((ret = journal_stale(s, p, len, &s->stale_journal)) ||
		s->stale_journal)) {
		if (!ret)
			ret = stale_deletions(s, p, len);
		unmap_file(p, len);
		return ret;
	}
	while ((size_t)*good < len) {
		const unsigned char *hdr = p + *good;

		/*
		 * A checksum that cannot be computed (no memory, no digest) says nothing of the
		 * record: the open fails rather than cut the journal there.
		 */
		if (!(pl = record_fits(p, len, *good)) ||
			(ret = record_sound(s, hdr, pl)) == -EBADMSG) {
			*bad = true;
			*torn = torn_tail(p, len, *good);
			/*
			 * The damaged record itself may be a grant's end, which the records before
			 * it cannot tell: whole, and reading as a deletion, it still deletes (one
			 * torn from a crash was asked; a changed byte in its id may end another
			 * grant early: fail closed, and reported in apply_late_deletions).
			 */
			ret = pl && file == IN_JOURNAL ? keep_deletion(s, hdr + HDR, pl) : 0;
			s->late_del_damaged = s->n_late_del > 0;
			break;
		}
		if (ret)
			break;
		/* Whole, as written, yet not understood: no crash does that. */
		if ((ret = apply_payload(s, hdr + HDR, pl, file, *good)) == -EINVAL) {
			ret = 0;
			*bad = true;
			break;
		}
		/* Out of memory is no damage: fail the open rather than drop a sound record. */
		if (ret)
			break;
		*good += (off_t)(HDR + pl);
		(*records)++;
		release_behind(p, &done, (size_t)*good);
	}
	/*
	 * A sound record after the bad one: no crash tears a file in the middle, whatever length
	 * the bad record's header claims (one that runs past the end passes for a torn tail).
	 */
	if (!ret && *bad && file == IN_JOURNAL) {
		size_t sound;

		if (!(ret = late_deletions(s, p, len, *good, &sound)) && sound)
			*torn = false;
	}
	if (!ret && file == IN_JOURNAL)
		ret = copy_notes(s, p);
	unmap_file(p, len);
	return ret;
}

static int write_all(int fd, const void *buf, size_t len)
{
	const char *b = buf;

	while (len) {
		ssize_t n = write(fd, b, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		b += n;
		len -= (size_t)n;
	}
	return 0;
}

/* A durable append's own fdatasync: 0 or -errno. */
static int journal_datasync(int fd)
{
#ifdef JITD_TEST_HOOKS
	/* Test builds: while $JITD_TEST_JOURNAL_SYNC_FAIL_FILE exists, as a disk losing writes. */
	if (testhook_exists("JITD_TEST_JOURNAL_SYNC_FAIL_FILE"))
		return -EIO;
#endif
	return fdatasync(fd) < 0 ? -errno : 0;
}

/*
 * Records already encoded back to back, in one write; durable before return unless the caller
 * makes them durable itself (store_write_many), with one fdatasync. On failure the journal is
 * cut back to where it was, so that none of them can come back on start; but drops (D) written
 * whole whose sync failed stay: the store is suspect, so nothing is appended after them before
 * a rewrite, and cut, they would be gone from the page cache too, where a restart before the
 * rewrite (jitd's, not the machine's) would still have found them: the grants they end came
 * back with it.
 */
static int append_raw(struct store *s, const unsigned char *buf, size_t n, size_t records,
	bool durable, bool drops)
{
	int ret = write_all(s->jfd, buf, n);

	if (!ret && durable && (ret = journal_datasync(s->jfd))) {
		s->suspect = true;
		if (drops) {
			s->jsize += (off_t)n;
			s->jrecords += records;
			return ret;
		}
	}
	if (ret == -EIO)
		s->suspect = true;
	if (ret) {
		/*
		 * A half-written record would only be a torn tail, but the next append follows it.
		 * The offset goes back even when the cut fails; what stays beyond the next record
		 * is then damage, so the journal is rewritten before it is written again.
		 */
		bool cut = ftruncate(s->jfd, s->jsize) == 0;

		if (lseek(s->jfd, s->jsize, SEEK_SET) < 0 || !cut) {
			log_warn("state: cannot cut the journal back after: %s", strerror(-ret));
			s->suspect = true;
		}
		return ret;
	}
	/* Synced, it carries every earlier write with it. */
	s->unsynced = !durable;
	s->jsize += (off_t)n;
	s->jrecords += records;
	return 0;
}

static int append(struct store *s, char op, const char *jti, const char *token, size_t len)
{
	unsigned char *rec;
	size_t n;
	int ret;

	if ((ret = encode(s, op, jti, token, len, NULL, &rec, &n)))
		return ret;
	ret = append_raw(s, rec, n, 1, true, op == 'D');
	free(rec);
	return ret;
}

/* Both files mapped read-only for a walk over the records; unmapped by unmap_files. */
static void unmap_files(struct files *f)
{
	for (int i = 0; i < 2; i++)
		unmap_file(f->p[i], f->len[i]);
	memset(f, 0, sizeof(*f));
}

static int map_files(struct store *s, struct files *f)
{
	const int fds[2] = { [IN_SNAPSHOT] = s->sfd, [IN_JOURNAL] = s->jfd };
	int ret;

	memset(f, 0, sizeof(*f));
	for (int i = 0; i < 2; i++) {
		if (fds[i] >= 0 && (ret = map_file(fds[i], &f->p[i], &f->len[i]))) {
			unmap_files(f);
			return ret;
		}
	}
	return 0;
}

/* Where e's record (header and payload) is in the mapped files, or NULL if outside them. */
static const unsigned char *record_at(const struct files *f, const struct entry *e)
{
	if (e->off < 0 || (size_t)e->off > f->len[e->file] ||
		f->len[e->file] - (size_t)e->off < HDR + (size_t)e->plen)
		return NULL;
	return f->p[e->file] + e->off;
}

/* e's whole record in the mapped files, or NULL if it is not there. */
static const unsigned char *record_of(const struct files *f, const struct entry *e)
{
	const unsigned char *r = record_at(f, e);

	/* The length it was loaded with: the file is jitd's own and only ever appended to. */
	return r && payload_len(r) == e->plen ? r : NULL;
}

struct entry_at {
	uint64_t key;	/* file, then offset */
	size_t i;	/* the entry's index */
};

static int cmp_entry_at(const void *a, const void *b)
{
	const struct entry_at *x = a, *y = b;

	return (x->key > y->key) - (x->key < y->key);
}

static uint64_t entry_key(const struct entry *e)
{
	return (uint64_t)e->file << 62 | (uint64_t)e->off;
}

/*
 * The order a walk over every record reads the files in: each file forward, so that the pages
 * behind it can be given back (release_behind). Entries keep their records' order but for
 * removals, which move the last entry into the gap, and records put again. A walk in entry
 * order after a revocation at 100,000 grants jumped to the journal's end first and gave back
 * nothing after it: the restore then held 33 MB of file pages, not 8. *out: NULL when entry
 * order is that order (walk s->v as it is), else each entry's index in file order. 0 or -ENOMEM.
 */
static int walk_order(const struct store *s, struct entry_at **out)
{
	struct entry_at *v;
	size_t i;

	*out = NULL;
	for (i = 1; i < s->n && entry_key(&s->v[i - 1]) < entry_key(&s->v[i]); i++)
		;
	if (i >= s->n)
		return 0;
	if (!(v = malloc(s->n * sizeof(*v))))
		return -ENOMEM;
	for (i = 0; i < s->n; i++)
		v[i] = (struct entry_at){ entry_key(&s->v[i]), i };
	qsort(v, s->n, sizeof(*v), cmp_entry_at);
	*out = v;
	return 0;
}

/*
 * A grant whose record is damaged (record_sound) has nothing to be restored from: it stays in
 * force until it ends, not after a restart. Removed from memory once the new snapshot holds,
 * the highest index first: mem_del moves the last entry into the hole.
 */
static void drop_damaged(struct store *s, const off_t *moved)
{
	for (size_t i = s->n; i-- > 0;) {
		if (moved[i] >= 0)
			continue;
		found_damage(s, "state: the record of grant '%s' is damaged; left out of the new "
			"snapshot (the grant stays in force until it ends, and a restart does not "
			"restore it)", s->v[i].jti);
		mem_del(s, s->v[i].jti);
	}
}

/*
 * The journal emptied, then opened with epoch (the snapshot's), durably: 0 or -errno. Whoever
 * sees it fail marks the store suspect, so that no record is appended to it before a rewrite
 * gives it an epoch.
 */
static int reset_journal(struct store *s, uint64_t epoch)
{
	unsigned char *rec;
	size_t n;
	int ret;

	if ((ret = encode_epoch(s, epoch, &rec, &n)))
		return ret;
	s->jsize = 0;
	s->jrecords = 0;
	if (ftruncate(s->jfd, 0) < 0 || lseek(s->jfd, 0, SEEK_SET) < 0)
		ret = -errno;
	if (!ret && !(ret = write_all(s->jfd, rec, n)) && fsync(s->jfd) < 0)
		ret = -errno;
	free(rec);
	if (ret)
		return ret;
	s->jsize = (off_t)n;
	s->journal_epoch = epoch;
	if (epoch > s->epoch)
		s->epoch = epoch;
	return 0;
}

/*
 * Every live record into a new snapshot (temporary file, fsync, rename, fsync of the directory)
 * under a new epoch, then an empty journal opened with it. A crash in between leaves the old
 * journal, without that epoch, beside the new snapshot: the next start leaves it out. The
 * records are copied as they are, from the files they are in, each checked against its
 * checksum first. Notes are not: the guard first makes what they stand for durable.
 */
static int compact(struct store *s)
{
	struct entry_at *order = NULL;
	unsigned char *buf = NULL, *mark = NULL;
	off_t *moved = NULL;
	size_t used = 0, done[2] = { 0 };
	struct files f;
	off_t at;
	int fd, ret, dir_ret;

	if (s->guard && (ret = s->guard(s->guard_arg)))
		return ret;
	if ((ret = encode_epoch(s, s->epoch + 1, &mark, &used)))
		return ret;
	if ((ret = map_files(s, &f))) {
		free(mark);
		return ret;
	}
	fd = statefile_create(s->dirfd, SNAPSHOT_TMP);
	if (fd < 0 || !(buf = malloc(COPY_CHUNK)) || !(moved = calloc(s->n + 1, sizeof(*moved))) ||
		walk_order(s, &order)) {
		ret = fd < 0 ? fd : -ENOMEM;
		goto out;
	}
	memcpy(buf, mark, used);
	at = (off_t)used;
	for (size_t k = 0; !ret && k < s->n; k++) {
		size_t i = order ? order[k].i : k;
		const unsigned char *r = record_at(&f, &s->v[i]);
		size_t n = HDR + s->v[i].plen;
		int sound;

		/* Outside the files: no failed write does that, so stop rather than drop it. */
		if (!r) {
			ret = -EIO;
			break;
		}
		sound = payload_len(r) == s->v[i].plen ? record_sound(s, r, s->v[i].plen) : -EBADMSG;
		if (sound == -EBADMSG) {
			moved[i] = -1;
			continue;
		}
		if ((ret = sound))
			break;
		if (used + n > COPY_CHUNK) {
			ret = write_all(fd, buf, used);
			used = 0;
		}
		memcpy(buf + used, r, n);
		used += n;
		moved[i] = at;
		at += (off_t)n;
		release_behind(f.p[s->v[i].file], &done[s->v[i].file], (size_t)s->v[i].off);
	}
	if (!ret && used)
		ret = write_all(fd, buf, used);
	if (!ret && fsync(fd) < 0)
		ret = -errno;
	if (!ret && renameat(s->dirfd, SNAPSHOT_TMP, s->dirfd, SNAPSHOT) < 0)
		ret = -errno;
	if (ret) {
		(void)unlinkat(s->dirfd, SNAPSHOT_TMP, 0);
		goto out;
	}
	/*
	 * Renamed, the new file is the snapshot now, for the next start too (jitd's, not the
	 * machine's): every record is in it, at its new place, and its epoch is the one to go on
	 * with. A record appended to the journal under the old epoch would be left out.
	 */
	dir_ret = fsync(s->dirfd) < 0 ? -errno : 0;
#ifdef JITD_TEST_HOOKS
	/* $JITD_TEST_STATE_DIR_SYNC_FAIL_FILE present: that sync fails, as on a failing disk. */
	if (testhook_exists("JITD_TEST_STATE_DIR_SYNC_FAIL_FILE"))
		dir_ret = -EIO;
#endif
	if (s->sfd >= 0)
		close(s->sfd);
	s->sfd = fd;
	fd = -1;
	for (size_t i = 0; i < s->n; i++) {
		s->v[i].file = IN_SNAPSHOT;
		s->v[i].off = moved[i];
	}
	drop_damaged(s, moved);
	s->snap_epoch = ++s->epoch;
	/*
	 * Until the rename is durable, a power loss may bring back the old snapshot, which needs
	 * the old journal: it stays as it is, and nothing is appended to it (suspect) before a
	 * rewrite that holds.
	 */
	if ((ret = dir_ret) || (ret = reset_journal(s, s->snap_epoch))) {
		s->suspect = true;
		goto out;
	}
	s->unsynced = false;
	s->covered = 0;
	s->gen++;
out:
	if (fd >= 0)
		close(fd);
	unmap_files(&f);
	free(order);
	free(moved);
	free(buf);
	free(mark);
	return ret;
}

/*
 * A second name for the damaged snapshot (open as fd), SNAPSHOT.corrupt-<time>[.<n>], in aside.
 * A name already taken by the same file (a start that failed within the same second) will do.
 */
static int keep_aside(const struct store *s, int fd, char *aside, size_t size)
{
	long long now = (long long)time(NULL);
	struct stat a, b;

	if (fstat(fd, &a) < 0)
		return -errno;
	for (int n = 0; n < 10; n++) {
		if (n)
			snprintf(aside, size, SNAPSHOT ".corrupt-%lld.%d", now, n);
		else
			snprintf(aside, size, SNAPSHOT ".corrupt-%lld", now);
		if (linkat(s->dirfd, SNAPSHOT, s->dirfd, aside, 0) == 0)
			return 0;
		if (errno != EEXIST)
			return -errno;
		if (fstatat(s->dirfd, aside, &b, AT_SYMLINK_NOFOLLOW) == 0 &&
			a.st_dev == b.st_dev && a.st_ino == b.st_ino)
			return 0;
	}
	return -EEXIST;
}

/*
 * statetrust_fd of state_dir/name: -EPERM stops the start (agent/statetrust.h), why (unless
 * NULL) saying why for store_open's caller.
 */
static int trusted(int fd, const char *state_dir, const char *name, char *why, size_t why_len)
{
	char path[PATH_MAX], msg[PATH_MAX + 64];
	int ret;

	snprintf(path, sizeof(path), "%s%s%s", state_dir, name ? "/" : "", name ? name : "");
	if ((ret = statetrust_fd(fd, name ? S_IFREG : S_IFDIR, path, msg, sizeof(msg))) == -EPERM &&
		why)
		snprintf(why, why_len, "%s: whoever may write it could give themselves access (%s)",
			msg, name ? STATETRUST_FIX_FILE : STATETRUST_FIX_DIR);
	return ret;
}

static int load_snapshot(struct store *s, const char *state_dir, bool *damaged, char *why,
	size_t why_len)
{
	/* A FIFO in its place is refused (trusted), not waited on. */
	int fd = statefile_open_any(s->dirfd, SNAPSHOT, O_RDONLY, 0);
	char aside[64];
	size_t records;
	off_t good;
	bool bad, torn;
	int ret;

	if (fd < 0)
		return fd == -ENOENT ? 0 : fd;
	s->sfd = fd; /* where the loaded entries' records are */
	if ((ret = trusted(fd, state_dir, SNAPSHOT, why, why_len)))
		return ret;
	ret = load(s, fd, IN_SNAPSHOT, &good, &records, &bad, &torn);
	*damaged = bad;
	if (ret || !bad)
		return ret;
	/*
	 * Never written in place, so damage is not a crash: keep a copy for a post-mortem. A second
	 * name, not a rename: until the compaction after this renames a sound snapshot over it, the
	 * good records in it are nowhere else, and a crash or a failed compaction in between must
	 * find them here on the next start. The copy is a courtesy; failing to make it stops nothing.
	 */
	if ((ret = keep_aside(s, fd, aside, sizeof(aside)))) {
		found_damage(s, "state: %s/%s is corrupt after %zu good record(s) and no copy "
			"can be kept: %s (the grants in it are checked again on start, the rest "
			"are lost to this agent, none opens)", state_dir, SNAPSHOT, records,
			strerror(-ret));
		return 0;
	}
	found_damage(s, "state: %s/%s is corrupt after %zu good record(s); kept as %s (the "
		"grants in it are checked again on start, the rest are lost to this agent, none "
		"opens)", state_dir, SNAPSHOT, records, aside);
	return 0;
}

/*
 * jitd 0.1 before the journal kept one file per grant under state_dir/grants/. No release
 * shipped it, so its records are not carried over: they are named, and ignored (fail closed).
 */
static void note_legacy(struct store *s, const char *state_dir)
{
	struct stat st;

	if (fstatat(s->dirfd, LEGACY_DIR, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISDIR(st.st_mode))
		log_warn("state: %s/%s is from an earlier development version; its grants are not "
			 "restored (remove the directory)", state_dir, LEGACY_DIR);
}

/*
 * A copy of the journal as it is, before damage found in it is cut off: for a post-mortem, as
 * for the snapshot. Made with copy_file_range, in the kernel; made durable before the cut.
 */
/* The journal's first len bytes into fd, from its start: 0 or -errno. */
static int copy_head(const struct store *s, int fd, off_t len)
{
	off_t in = 0, out = 0;

	while (in < len) {
		ssize_t n = copy_file_range(s->jfd, &in, fd, &out, (size_t)(len - in), 0);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
	}
	return 0;
}

static int copy_journal(const struct store *s, char *aside, size_t size)
{
	struct stat st;
	int fd, ret;

	snprintf(aside, size, JOURNAL ".corrupt-%lld", (long long)time(NULL));
	if (fstat(s->jfd, &st) < 0)
		return -errno;
	fd = openat(s->dirfd, aside, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	ret = copy_head(s, fd, st.st_size);
	if (!ret && (fsync(fd) < 0 || fsync(s->dirfd) < 0))
		ret = -errno;
	close(fd);
	if (ret)
		(void)unlinkat(s->dirfd, aside, 0);
	return ret;
}

/*
 * What follows the journal's last good record goes. A torn tail was never acknowledged. Damage
 * before the end is cut off too, with the records after it: any of them, or the damaged one,
 * may be a grant's end (revoked, expired), and keeping the rest could bring that grant back.
 * Fail closed: those grants are lost to this agent, and none opens; a copy is kept first.
 */
static int cut_journal(struct store *s, const char *state_dir, off_t good, size_t records,
	bool torn)
{
	char aside[80];
	int ret;

	if (torn) {
		log_warn("state: ignoring a torn tail of %s/%s after %zu record(s) (an append a "
			"crash cut short, never acknowledged)", state_dir, JOURNAL, records);
	} else if ((ret = copy_journal(s, aside, sizeof(aside)))) {
		found_damage(s, "state: %s/%s is damaged after %zu good record(s), before its "
			"end; no copy can be kept (%s); cut there (the grants recorded after the "
			"damage are lost to this agent, none opens)", state_dir, JOURNAL, records,
			strerror(-ret));
	} else {
		found_damage(s, "state: %s/%s is damaged after %zu good record(s), before its "
			"end; kept as %s and cut there (the grants recorded after the damage are "
			"lost to this agent, none opens)", state_dir, JOURNAL, records, aside);
	}
	/* With deletions found beyond the damage, the cut is a rewrite (apply_late_deletions). */
	if (s->n_late_del)
		return 0;
	if (ftruncate(s->jfd, good) < 0 || fsync(s->jfd) < 0)
		return -errno;
	return 0;
}

static void free_late_deletions(struct store *s)
{
	for (size_t i = 0; i < s->n_late_del; i++)
		free(s->late_del[i]);
	free(s->late_del);
	s->late_del = NULL;
	s->n_late_del = 0;
	s->late_del_damaged = false;
}

static int encode_onto(struct store *s, char op, const char *jti, const char *token,
	size_t len, const char *annex, unsigned char **buf, size_t *used, size_t *at);

/* Whether a late deletion after the i-th names the same grant. */
static bool named_later(const struct store *s, size_t i)
{
	for (size_t k = i + 1; k < s->n_late_del; k++)
		if (!strcmp(s->late_del[k], s->late_del[i]))
			return true;
	return false;
}

/*
 * The journal cut at good with the deletions late_deletions found appended again, in one step:
 * a new file holding [0, good) and the deletions is made durable and renamed over the journal.
 * Cutting first and appending after would lose the only copy of the deletions (in the bytes
 * cut) to a crash, or to a failed write that fails this start, and the next start would
 * bring back the grants they ended. The grants they name go from memory once it holds. A
 * journal cut at its first record gets its snapshot's epoch first (pair_journal): without it,
 * the next start would take it for an older journal, and leave the deletions out.
 */
static int apply_late_deletions(struct store *s, const char *state_dir, off_t good)
{
	static const char tmp[] = JOURNAL ".tmp";
	unsigned char *buf = NULL;
	size_t used = 0, records = 0;
	int fd = -1, twin = -1, ret = 0;
	char id[EPOCH_ID_SIZE];

	if (!good && s->snap_epoch) {
		epoch_id(id, s->snap_epoch);
		ret = encode_onto(s, 'D', id, NULL, 0, NULL, &buf, &used, NULL);
	}
	for (size_t i = 0; ret == 0 && i < s->n_late_del; i++) {
		/* Once each: a sound deletion after the damage may name the damaged one's grant. */
		if (!find(s, s->late_del[i]) || named_later(s, i))
			continue;
		/*
		 * Read from a damaged record, the id may be another grant's (a changed byte): it
		 * ends all the same (fail closed), and is shown as damage, naming it.
		 */
		if (!i && s->late_del_damaged)
			found_damage(s, "state: a damaged record of %s/%s reads as the end "
				"of grant '%.64s', which stays ended (had a byte of it changed, "
				"that grant lost its access early)", state_dir, JOURNAL,
				s->late_del[i]);
		if (!(ret = encode_onto(s, 'D', s->late_del[i], NULL, 0, NULL, &buf, &used,
			NULL)))
			records++;
	}
	if (ret)
		goto out;
	if ((fd = statefile_create(s->dirfd, tmp)) < 0) {
		ret = fd;
		goto out;
	}
	ret = copy_head(s, fd, good);
	if (!ret && lseek(fd, good, SEEK_SET) < 0)
		ret = -errno;
	if (!ret && used)
		ret = write_all(fd, buf, used);
	if (!ret && (fsync(fd) < 0 || renameat(s->dirfd, tmp, s->dirfd, JOURNAL) < 0 ||
		fsync(s->dirfd) < 0))
		ret = -errno;
	if (!ret)
		ret = syncer_open_twin(s->dirfd, JOURNAL, fd, &twin);
	if (ret)
		goto out;
	close(s->jfd);
	close(s->jtwin);
	s->jfd = fd;
	s->jtwin = twin;
	fd = -1;
	s->jsize = good + (off_t)used;
	s->jrecords += records;
	if (!good && s->snap_epoch)
		s->journal_epoch = s->snap_epoch;
	for (size_t i = 0; i < s->n_late_del; i++)
		mem_del(s, s->late_del[i]);
	if (records)
		log_warn("state: %zu grant(s) ended after the damage in %s/%s stay ended (their "
			"deletions, found beyond it, are recorded again)", records, state_dir,
			JOURNAL);
out:
	if (fd >= 0) {
		close(fd);
		(void)unlinkat(s->dirfd, tmp, 0);
	}
	free(buf);
	free_late_deletions(s);
	return ret;
}

/*
 * A journal gets its epoch before anything is appended to it. One older than the snapshot (a
 * stop between a compaction's two steps) is rewritten, with a new snapshot, before anything
 * more is written (suspect): the rename of the snapshot it is older than may not be durable
 * (its directory's sync failed), and emptied now, a power loss could bring back the old
 * snapshot beside an empty journal. An empty one (new, or left empty by a stop between the
 * truncation and its epoch, or cut at its first record) takes the snapshot's epoch, or a new
 * one without a snapshot. One written by a jitd from before epochs keeps its records, and gets
 * an epoch at the next compaction. apply_late_deletions puts the epoch before the deletions it
 * keeps in a journal cut at its first record.
 */
static void pair_journal(struct store *s, const char *state_dir)
{
	int ret;

	if (s->journal_epoch && (!s->snap_epoch || s->journal_epoch == s->snap_epoch))
		return;
	if (s->stale_journal) {
		log_warn("state: %s/%s is older than %s (jitd stopped between the two steps of a "
			"compaction): its grants are taken from the snapshot, and those whose "
			"last record in it is a deletion end; both are rewritten before anything "
			"more is written", state_dir, JOURNAL, SNAPSHOT);
		s->suspect = true;
		return;
	}
	if (s->jsize)
		return;
	if ((ret = reset_journal(s, s->snap_epoch ? s->snap_epoch : s->epoch + 1))) {
		log_warn("state: cannot empty %s/%s: %s (it is rewritten before anything more is "
			"written to it)", state_dir, JOURNAL, strerror(-ret));
		s->suspect = true;
	}
}

int store_open(const char *state_dir, struct store **out, char *why, size_t why_len)
{
	char note[PATH_MAX + 256];
	struct store *s;
	bool bad, torn, damaged = false;
	size_t records;
	off_t good;
	int ret;

	*out = NULL;
	if (!(s = calloc(1, sizeof(*s))))
		return -ENOMEM;
	s->dirfd = s->jfd = s->jtwin = s->sfd = -1;
	s->compact_records = COMPACT_RECORDS;
#ifdef JITD_TEST_HOOKS
	{
		/* $JITD_TEST_COMPACT_RECORDS_FILE holding N: compactions after N records. */
		long long at = testhook_number("JITD_TEST_COMPACT_RECORDS_FILE", false, 0);

		if (at > 0)
			s->compact_records = (size_t)at;
	}
#endif
	if ((mkdir(state_dir, 0700) < 0 && errno != EEXIST) ||
		(s->dirfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		ret = -errno;
		goto fail;
	}
	/*
	 * First: in a directory others may write, its lock may be theirs, not another jitd's, and
	 * a start stopped by it would close no port.
	 */
	if ((ret = trusted(s->dirfd, state_dir, NULL, why, why_len)))
		goto fail;
	if (statetrust_dir_readable(state_dir, note, sizeof(note)))
		log_warn("state: %s", note);
	/*
	 * Two agents appending to one journal would write over each other's records. The lock is
	 * on the directory itself: no file to leave behind, and released by any exit. A file
	 * system that cannot lock a directory (NFS emulates flock with fcntl locks, which need
	 * the file open for writing) started before this lock existed, and still does.
	 */
	if (flock(s->dirfd, LOCK_EX | LOCK_NB) < 0) {
		if (errno == EWOULDBLOCK) {
			ret = -EBUSY;
			goto fail;
		}
		log_warn("state: cannot lock %s (%s): a second jitd using it would not be stopped",
			state_dir, strerror(errno));
	}
	/* Its kind judged by trusted, which says why. */
	if ((s->jfd = statefile_open_any(s->dirfd, JOURNAL, O_RDWR | O_CREAT, 0600)) < 0) {
		ret = s->jfd;
		s->jfd = -1;
		goto fail;
	}
	if ((ret = trusted(s->jfd, state_dir, JOURNAL, why, why_len)))
		goto fail;
	/* A journal just created must keep its name before a grant in it is acknowledged. */
	if (fsync(s->dirfd) < 0) {
		ret = -errno;
		goto fail;
	}
	if ((ret = syncer_open_twin(s->dirfd, JOURNAL, s->jfd, &s->jtwin)))
		goto fail;
	if ((ret = load_snapshot(s, state_dir, &damaged, why, why_len)) ||
		(ret = load(s, s->jfd, IN_JOURNAL, &good, &records, &bad, &torn)) ||
		(bad && (ret = cut_journal(s, state_dir, good, records, torn))))
		goto fail;
	s->jsize = good;
	/* An epoch is no change: compactions come after so many changes (maybe_compact). */
	s->jrecords = records - (s->journal_epoch ? 1 : 0);
	if (lseek(s->jfd, good, SEEK_SET) < 0) {
		ret = -errno;
		goto fail;
	}
	if (s->n_late_del && (ret = apply_late_deletions(s, state_dir, good)))
		goto fail;
	pair_journal(s, state_dir);
	/*
	 * What survived a damaged snapshot goes into a sound one, which replaces the damaged file.
	 * The compaction empties the journal: while it holds notes not yet put back into the
	 * trail, it waits for store_notes_done (a start that fails before finds the damage again).
	 */
	if (damaged && s->n_loaded)
		s->compact_after_notes = true;
	else if (damaged && (ret = compact(s)))
		goto fail;
	note_legacy(s, state_dir);
	*out = s;
	return 0;
fail:
	store_close(&s);
	return ret;
}

void store_close(struct store **sp)
{
	struct store *s = *sp;

	if (!s)
		return;
	if (s->walking)
		unmap_files(&s->walk);
	if (s->jfd >= 0)
		close(s->jfd);
	if (s->jtwin >= 0)
		close(s->jtwin);
	if (s->sfd >= 0)
		close(s->sfd);
	if (s->dirfd >= 0)
		close(s->dirfd);
	free_late_deletions(s);
	for (size_t i = 0; i < s->n; i++)
		free(s->v[i].jti);
	free(s->v);
	free(s->bucket);
	free(s->notes);
	free_loaded(s);
	EVP_MD_free(s->sha256);
	free(s);
	*sp = NULL;
}

int store_compact(struct store *s)
{
	return compact(s);
}

/*
 * A compaction writes every record, and every write asks for one while it is due (the journal
 * past its size, or the store suspect): after one fails the next waits this long, and each
 * ask meanwhile gets the failure back (compact_waits).
 */
#define COMPACT_RETRY_US 1000000

static bool compact_waits(const struct store *s)
{
	return s->compact_ret && clock_mono_us() - s->compact_failed_us < COMPACT_RETRY_US;
}

static int compact_paced(struct store *s)
{
	if ((s->compact_ret = compact(s)))
		s->compact_failed_us = clock_mono_us();
	return s->compact_ret;
}

/*
 * After a failed sync the journal on disk may have a hole where the kernel lost a write, and a
 * start cuts the journal at a hole: every record after it would be lost, however durable its
 * own sync said it was. So nothing more is appended until every record is rewritten from
 * memory (mapped from the page cache, which holds what the disk failed to take) into a new
 * snapshot and the journal is emptied; until then each write is refused, and no grant is
 * answered as durable.
 */
static int writable(struct store *s)
{
	int ret;

	if (!s->suspect)
		return 0;
	if (s->walking)
		return -EIO;
	if (compact_waits(s))
		return s->compact_ret;
	/* A report this descriptor still holds is of what the rewrite replaces. */
	(void)fdatasync(s->jfd);
	if ((ret = compact_paced(s)))
		return ret;
	/* The twin's too, now that every record it could concern is in the new snapshot. */
	(void)fdatasync(s->jtwin);
	s->suspect = false;
	log_info("state: the journal is rewritten into a new snapshot after a failed write");
	return 0;
}

void store_sync_failed(struct store *s)
{
	s->suspect = true;
}

static int maybe_compact(struct store *s)
{
	int ret;

	if (s->walking || s->jrecords < s->compact_records || s->jrecords < s->n ||
		compact_waits(s))
		return 0;
	/* The records are durable in the journal already: a failed compaction loses nothing. */
	if ((ret = compact_paced(s)))
		log_warn("state: cannot write a snapshot: %s", strerror(-ret));
	return 0;
}

int store_put(struct store *s, const char *jti, const char *token, size_t len)
{
	const struct store_rec r = { jti, token, len, NULL };

	return store_put_many(s, &r, 1);
}

/*
 * One more record at the end of *buf (used bytes so far): a group is written in one go. *at
 * (may be NULL) is where in *buf the record starts.
 */
static int encode_onto(struct store *s, char op, const char *jti, const char *token,
	size_t len, const char *annex, unsigned char **buf, size_t *used, size_t *at)
{
	unsigned char *rec, *nb;
	size_t n;
	int ret;

	if ((ret = encode(s, op, jti, token, len, annex, &rec, &n)))
		return ret;
	if (at)
		*at = *used;
	if (!(nb = realloc(*buf, *used + n))) {
		free(rec);
		return -ENOMEM;
	}
	memcpy(nb + *used, rec, n);
	*buf = nb;
	*used += n;
	free(rec);
	return 0;
}

static int put_many(struct store *s, const struct store_rec *r, size_t n, bool durable)
{
	size_t *at = calloc(n + 1, sizeof(*at)), used = 0, done = 0;
	bool *had = calloc(n + 1, sizeof(*had));
	unsigned char *buf = NULL;
	off_t base;
	int ret = at && had ? writable(s) : -ENOMEM;

	/* After writable: a rewrite empties the journal. */
	base = s->jsize;

	for (size_t i = 0; ret == 0 && i < n; i++) {
		had[i] = find(s, r[i].jti) != NULL;
		ret = encode_onto(s, 'P', r[i].jti, r[i].token, r[i].len, r[i].annex, &buf,
			&used, &at[i]);
	}
	if (ret == 0 && n)
		ret = append_raw(s, buf, used, n, durable, false);
	/* Each record's payload length, from its header, for the entry that points at it. */
	for (; ret == 0 && done < n; done++) {
		const unsigned char *h = buf + at[done];

		ret = mem_put(s, r[done].jti, IN_JOURNAL, base + (off_t)at[done], payload_len(h));
	}
	free(buf);
	free(at);
	if (ret && done) {
		/*
		 * Durable but not all in memory (out of memory): take the new ones back. A record
		 * written again (a restored grant's new gateway ports) is a live grant's: it keeps
		 * its entry, the new record's or, where that failed, the old one's (the journal's
		 * later record is the one a start reads); a drop would end it at the next start.
		 */
		for (size_t i = 0; i < n; i++) {
			if (had[i])
				continue;
			if (append(s, 'D', r[i].jti, NULL, 0))
				log_warn("state: cannot drop the record of '%s'", r[i].jti);
			mem_del(s, r[i].jti);
		}
	}
	free(had);
	if (ret)
		return ret;
	return maybe_compact(s);
}

int store_put_many(struct store *s, const struct store_rec *r, size_t n)
{
	return put_many(s, r, n, true);
}

int store_write_many(struct store *s, const struct store_rec *r, size_t n)
{
	return put_many(s, r, n, false);
}

int store_unsynced_fd(struct store *s, int *fd)
{
#ifdef JITD_TEST_HOOKS
	/*
	 * $JITD_TEST_SYNC_ASIDE_FILE present: the journal (and the trail, audit_unsynced_fd) is
	 * synced through the loop's own descriptor first, as a durable append on the loop (a
	 * dropped record) can do while a group waits for its sync. A write error that reports must
	 * reach the group's sync as well.
	 */
	if (s->unsynced && testhook_exists("JITD_TEST_SYNC_ASIDE_FILE") && fdatasync(s->jfd) < 0)
		log_warn("test: the loop's own sync of the journal failed: %s", strerror(errno));
#endif
	return syncer_take(s->jtwin, &s->unsynced, fd);
}

int store_sync(struct store *s)
{
	if (s->unsynced && fdatasync(s->jfd) < 0) {
		s->suspect = true;
		return -errno;
	}
	s->unsynced = false;
	return 0;
}

bool store_contains(struct store *s, const char *jti)
{
	return find(s, jti) != NULL;
}

/*
 * After a failed sync (the store suspect) a drop leaves memory before the rewrite that must
 * come before any other write (writable): the new snapshot then leaves the records out and no
 * drop need follow it. Rewritten with them, a crash before their drops were durable would
 * bring back grants withdrawn because their group's sync failed. Until the rewrite is done a
 * restart would bring the records back, and a call again, for records no longer in memory, is
 * answered by that rewrite.
 */
static int drop_suspect(struct store *s, const char *const *jti, size_t n)
{
	for (size_t i = 0; i < n; i++)
		mem_del(s, jti[i]);
	return writable(s);
}

/*
 * A drop the journal did not take: if its own sync failed (the store suspect now), the records
 * leave memory all the same, as in drop_suspect. Otherwise (a full disk refused the append,
 * which leaves nothing behind) they stay, and a call again appends the drop again.
 */
static int drop_failed(struct store *s, const char *const *jti, size_t n, int ret)
{
	for (size_t i = 0; s->suspect && i < n; i++)
		mem_del(s, jti[i]);
	return ret;
}

int store_del(struct store *s, const char *jti)
{
	int ret;

#ifdef JITD_TEST_HOOKS
	/* $JITD_TEST_DEL_FAIL_FILE present: the journal refuses a dropped record, as a full disk. */
	if (testhook_exists("JITD_TEST_DEL_FAIL_FILE"))
		return drop_failed(s, &jti, 1, -ENOSPC);
#endif
	if (s->suspect)
		return drop_suspect(s, &jti, 1);
	if (!find(s, jti))
		return 0;
	if ((ret = append(s, 'D', jti, NULL, 0)))
		return drop_failed(s, &jti, 1, ret);
	mem_del(s, jti);
	return maybe_compact(s);
}

int store_del_many(struct store *s, const char *const *jti, size_t n)
{
	unsigned char *buf = NULL;
	size_t used = 0, records = 0;
	int ret = 0;

#ifdef JITD_TEST_HOOKS
	/* As in store_del: the journal refuses the dropped records, as a full disk. */
	if (testhook_exists("JITD_TEST_DEL_FAIL_FILE"))
		return drop_failed(s, jti, n, -ENOSPC);
#endif
	if (s->suspect)
		return drop_suspect(s, jti, n);
	for (size_t i = 0; ret == 0 && i < n; i++)
		if (find(s, jti[i]) &&
			!(ret = encode_onto(s, 'D', jti[i], NULL, 0, NULL, &buf, &used, NULL)))
			records++;
	if (ret == 0 && records)
		ret = append_raw(s, buf, used, records, true, true);
	free(buf);
	if (ret)
		return drop_failed(s, jti, n, ret);
	for (size_t i = 0; i < n; i++)
		mem_del(s, jti[i]);
	return maybe_compact(s);
}

/*
 * The records are read from the files, mapped until store_items_end; no compaction may move
 * them meanwhile (a removal or an addition appends, which leaves every mapped record where it
 * was). Each was checksummed when store_open loaded it.
 */
int store_items(struct store *s, struct store_item **out, size_t *n_out)
{
	struct entry_at *order = NULL;
	struct store_item *v;
	size_t done[2] = { 0 };
	int ret;

	*out = NULL;
	*n_out = 0;
	if (s->walking)
		return -EBUSY;
	if (!(v = calloc(s->n + 1, sizeof(*v))) || walk_order(s, &order)) {
		free(v);
		return -ENOMEM;
	}
	if ((ret = map_files(s, &s->walk)))
		goto fail;
	/* In file order, so that the caller's chunks (store_items_done) are runs of the files. */
	for (size_t k = 0; k < s->n; k++) {
		size_t i = order ? order[k].i : k;
		const unsigned char *r = record_of(&s->walk, &s->v[i]);

		v[k].jti = s->v[i].jti;
		if (!r || split_put(r + HDR, s->v[i].plen, &v[k].token, &v[k].len, &v[k].annex,
			&v[k].annex_len)) {
			unmap_files(&s->walk);
			ret = -EIO;
			goto fail;
		}
		/* The caller reads them again, page by page: no need to hold all of them now. */
		release_behind(s->walk.p[s->v[i].file], &done[s->v[i].file], (size_t)s->v[i].off);
	}
	free(order);
	s->walking = true;
	*out = v;
	*n_out = s->n;
	return 0;
fail:
	free(order);
	free(v);
	return ret;
}

void store_items_end(struct store *s, struct store_item **v)
{
	if (!*v)
		return;
	free(*v);
	*v = NULL;
	s->walking = false;
	unmap_files(&s->walk);
	(void)maybe_compact(s);
}

void store_items_done(struct store *s, const struct store_item *v, size_t n)
{
	const struct files *f = &s->walk;

	for (int k = 0; k < 2; k++) {
		const unsigned char *p = f->p[k];
		size_t lo = SIZE_MAX, hi = 0, off;

		if (!f->len[k])
			continue;	/* an empty file, not mapped */
		for (size_t i = 0; i < n; i++) {
			const char *t = v[i].token;

			/* Compared as addresses: a token is in one mapping or the other. */
			if ((uintptr_t)t < (uintptr_t)p || (uintptr_t)t >= (uintptr_t)p + f->len[k])
				continue;
			off = (size_t)((const unsigned char *)t - p);
			if (off < lo)
				lo = off;
			if (off + v[i].len > hi)
				hi = off + v[i].len;
		}
		if (lo < hi)
			release(p, lo, hi);
	}
}

void store_set_compact_guard(struct store *s, int (*guard)(void *arg), void *arg)
{
	s->guard = guard;
	s->guard_arg = arg;
}

const struct store_damage *store_damage(const struct store *s)
{
	return &s->damage;
}

void store_set_damage_hook(struct store *s, void (*hook)(void *arg), void *arg)
{
	s->damage_hook = hook;
	s->damage_arg = arg;
}

int store_write_notes(struct store *s, const struct store_note *v, size_t n)
{
	unsigned char *buf = NULL;
	size_t used = 0, records = 0;
	int ret = writable(s);

	for (size_t i = 0; ret == 0 && i < n; i++)
		if (v[i].len && !(ret = encode_onto(s, 'N', NULL, (const char *)v[i].p, v[i].len,
			NULL, &buf, &used, NULL)))
			records++;
	if (ret == 0 && records)
		ret = append_raw(s, buf, used, records, false, false);
	free(buf);
	return ret;
}

/* Whether damage the notes walk met at off is news (store_uncovered_notes runs again). */
static bool walk_news(struct store *s, off_t off)
{
	bool news = s->walked_gen != s->gen || off >= s->walked_off;

	if (news) {
		s->walked_gen = s->gen;
		s->walked_off = off + 1;
	}
	return news;
}

/*
 * The notes in the journal that no mark covers, copied (*v, *n; store_notes_free): the first
 * offset they may start at is the highest any note record or store_cover named. Read from the
 * journal as it is now, each record checked against its checksum: a damaged one (a failed
 * writeback of the journal's own) ends the walk with the notes before it, and is logged.
 */
int store_uncovered_notes(struct store *s, struct store_note **v, size_t *n)
{
	struct note_at *at = NULL;
	size_t n_at = 0, cap = 0, maplen, len, done = 0;
	const unsigned char *p;
	off_t off = 0, covered = s->covered;
	int ret;

	*v = NULL;
	*n = 0;
	if ((ret = map_file(s->jfd, &p, &maplen)))
		return ret;
	len = (size_t)s->jsize < maplen ? (size_t)s->jsize : maplen;
	while ((size_t)off < len) {
		uint32_t pl = record_fits(p, len, off);
		const unsigned char *pay = p + off + HDR;

		/* A length that cannot be trusted leaves nothing after it to read. */
		if (!pl) {
			if (walk_news(s, off))
				found_damage(s, "state: the journal is damaged at offset %lld: the "
					"audit lines it carries after that cannot be checked",
					(long long)off);
			break;
		}
		if ((ret = record_sound(s, p + off, pl)) == -EBADMSG) {
			if (walk_news(s, off))
				found_damage(s, "state: the journal's record at offset %lld is "
					"damaged: an audit line it carried cannot be checked",
					(long long)off);
			ret = 0;
			off += (off_t)(HDR + pl);
			continue;
		}
		if (ret)
			break;
		if (pay[0] == 'N' && pl >= NOTE_HDR) {
			if (note_covered(pay) > covered)
				covered = note_covered(pay);
			if (pl > NOTE_HDR) {
				struct note_at *nv;

				if (!(nv = array_reserve(at, &cap, n_at + 1, sizeof(*nv), 16))) {
					ret = -ENOMEM;
					break;
				}
				at = nv;
				at[n_at++] = (struct note_at){ off, pl };
			}
		}
		off += (off_t)(HDR + pl);
		release_behind(p, &done, (size_t)off);
	}
	if (!ret && !(*v = calloc(n_at + 1, sizeof(**v))))
		ret = -ENOMEM;
	for (size_t i = 0; !ret && i < n_at; i++) {
		size_t l = at[i].plen - NOTE_HDR;

		if (at[i].off < covered)
			continue;
		if (!((*v)[*n].p = malloc(l))) {
			ret = -ENOMEM;
			break;
		}
		memcpy((*v)[*n].p, p + at[i].off + HDR + NOTE_HDR, l);
		(*v)[(*n)++].len = l;
	}
	unmap_file(p, maplen);
	free(at);
	if (ret) {
		store_notes_free(*v, *n);
		*v = NULL;
		*n = 0;
	}
	return ret;
}

void store_notes_free(struct store_note *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free(v[i].p);
	free(v);
}

struct store_mark store_mark(const struct store *s)
{
	return (struct store_mark){ s->gen, s->jsize };
}

void store_cover(struct store *s, struct store_mark m)
{
	if (m.gen == s->gen && m.off > s->covered)
		s->covered = m.off;
}

int store_cover_durable(struct store *s, struct store_mark m)
{
	store_cover(s, m);
	/* A store that must be rewritten first takes no record; the rewrite drops every note. */
	if (s->suspect || m.gen != s->gen)
		return 0;
	return append(s, 'N', NULL, NULL, 0);
}

void store_notes(const struct store *s, const struct store_note **v, size_t *n)
{
	*v = s->loaded;
	*n = s->n_loaded;
}

int store_notes_done(struct store *s)
{
	int ret;

	if (!s->n_loaded)
		return 0;
	s->covered = s->jsize;
	if ((ret = append(s, 'N', NULL, NULL, 0)))
		return ret;
	free_loaded(s);
	if (s->compact_after_notes) {
		s->compact_after_notes = false;
		return compact(s);
	}
	return 0;
}
