#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/store.h"
#include "common/log.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The grant store reads back what a crash, a full disk or a damaged medium left in state_dir:
 * grants.journal and grants.snap. Every record must be cut off, moved aside or read as it was
 * written; nothing may read outside the files. Checksums would stop a fuzzer at the first
 * record, so the input is a list of chunks, each written as the fuzzer says:
 *
 *   kind (1 byte), length (2 bytes, big-endian), that many bytes (fewer at the end of input)
 *   kind & 3: 0 a record with its right header, 1 the same with a wrong checksum,
 *             2 the bytes as they are, 3 that many zero bytes
 *   kind & 4: this chunk and the ones after it go to the snapshot instead of the journal
 *
 * Then the store is opened, every record walked and read whole, the notes taken, a grant put
 * and removed, and the store compacted: what a start does next with what it read.
 */

/* On tmpfs where there is one: each input's open, put and compaction sync their files. */
static char dir[PATH_MAX];
/* Where the walks' sums go, so that no read of a record can be optimised away. */
unsigned fuzz_store_sum;

static void empty_dir(void)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	char path[PATH_MAX];

	while (d && (de = readdir(d))) {
		if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		/* The store makes files only; a directory here is the legacy one, left empty. */
		if (unlink(path) < 0 && errno == EISDIR)
			rmdir(path);
	}
	if (d)
		closedir(d);
}

static void cleanup(void)
{
	empty_dir();
	rmdir(dir);
}

static int put(FILE *f, const void *p, size_t n)
{
	return n && fwrite(p, 1, n, f) != n ? -1 : 0;
}

static int write_chunk(FILE *f, unsigned kind, const uint8_t *p, size_t n)
{
	unsigned char hdr[12], md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	static const unsigned char zeros[256];

	switch (kind & 3) {
	case 0:
	case 1:
		hdr[0] = (unsigned char)(n >> 24);
		hdr[1] = (unsigned char)(n >> 16);
		hdr[2] = (unsigned char)(n >> 8);
		hdr[3] = (unsigned char)n;
		if (!EVP_Digest(p, n, md, &mdlen, EVP_sha256(), NULL))
			return -1;
		memcpy(hdr + 4, md, 8);
		if (kind & 1)
			hdr[4] ^= 1;
		return put(f, hdr, sizeof(hdr)) || put(f, p, n) ? -1 : 0;
	case 2:
		return put(f, p, n);
	default:
		for (size_t left = n; left; ) {
			size_t k = left < sizeof(zeros) ? left : sizeof(zeros);

			if (put(f, zeros, k))
				return -1;
			left -= k;
		}
		return 0;
	}
}

static int write_files(const uint8_t *data, size_t size)
{
	char jpath[PATH_MAX], spath[PATH_MAX];
	FILE *j, *s, *f;
	int ret = 0;

	snprintf(jpath, sizeof(jpath), "%s/grants.journal", dir);
	snprintf(spath, sizeof(spath), "%s/grants.snap", dir);
	j = fopen(jpath, "we");
	s = fopen(spath, "we");
	f = j;
	while (!ret && j && s && size >= 3) {
		unsigned kind = data[0];
		size_t n = (size_t)data[1] << 8 | data[2];

		data += 3;
		size -= 3;
		/* Zeros cost no input: a long run of them is as easy to ask for as a short one. */
		if ((kind & 3) != 3 && n > size)
			n = size;
		if (kind & 4)
			f = s;
		ret = write_chunk(f, kind, data, n);
		if ((kind & 3) != 3) {
			data += n;
			size -= n;
		}
	}
	if (!j || !s)
		ret = -1;
	if (j && fclose(j))
		ret = -1;
	if (s && fclose(s))
		ret = -1;
	return ret;
}

/* Every byte of every record: ASan sees a read past what was mapped. */
static unsigned walk(struct store *st)
{
	struct store_item *v = NULL;
	const struct store_note *notes;
	unsigned sum = 0;
	size_t n = 0;

	if (!store_items(st, &v, &n)) {
		for (size_t i = 0; i < n; i++) {
			sum += (unsigned)strlen(v[i].jti);
			for (size_t k = 0; k < v[i].len; k++)
				sum += (unsigned char)v[i].token[k];
			for (size_t k = 0; v[i].annex && k < v[i].annex_len; k++)
				sum += (unsigned char)v[i].annex[k];
		}
		store_items_done(st, v, n);
		store_items_end(st, &v);
	}
	store_notes(st, &notes, &n);
	for (size_t i = 0; i < n; i++)
		for (size_t k = 0; k < notes[i].len; k++)
			sum += notes[i].p[k];
	return sum;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static bool ready;
	struct store *st = NULL;

	if (!ready) {
		snprintf(dir, sizeof(dir), "%s/jitd-fuzz-store-XXXXXX",
			access("/dev/shm", W_OK) ? "/tmp" : "/dev/shm");
		if (!mkdtemp(dir))
			abort();
		ready = true;
		atexit(cleanup);
		log_set_level(LOG_LVL_ERR);
	}
	empty_dir();
	if (write_files(data, size))
		abort();
	if (!store_open(dir, &st, NULL, 0)) {
		fuzz_store_sum += walk(st);
		(void)store_notes_done(st);
		if (!store_put(st, "fuzz", "a.b.c", 5))
			(void)store_del(st, "fuzz");
		(void)store_compact(st);
		fuzz_store_sum += walk(st);
		store_close(&st);
	}
	return 0;
}
