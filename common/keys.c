#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>

#include "common/config.h"
#include "common/dirsync.h"
#include "common/err.h"
#include "common/filetrust.h"
#include "common/keys.h"

#define UNKNOWN(e, ...) jit_fail((e), JIT_ERR_UNKNOWN_KEY, __VA_ARGS__)
#define KID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define KEY_FILE_MAX 16384 /* an Ed25519 PEM is about 113 bytes; anything huge is not a key */

bool keys_kid_valid(const char *kid)
{
	size_t n;

	if (!kid)
		return false;
	n = strnlen(kid, KEYS_KID_MAX + 1);
	return n >= 1 && n <= KEYS_KID_MAX && kid[0] != '.' && strspn(kid, KID_CHARS) == n;
}

/*
 * A key file that a system call could not read: untrusted (JIT_ERR_UNKNOWN_KEY) when the error
 * says something about the file, JIT_ERR_INTERNAL when it only says the moment was bad (out of
 * descriptors or memory, an I/O error, an interruption, a network file system's stale handle or
 * lost server), so that no caller takes a passing failure for a removed key and drops the
 * grants it signed.
 */
static int unreadable(struct jit_error *e, const char *kid, const char *path, int err)
{
	switch (err) {
	case EMFILE: case ENFILE: case ENOMEM: case ENOBUFS: case EIO: case EINTR: case EAGAIN:
	case ESTALE: case ETIMEDOUT: case ENOLINK: case ENOTCONN: case EHOSTDOWN:
		return jit_fail(e, JIT_ERR_INTERNAL, "key '%s': %s cannot be read now: %s", kid,
			path, strerror(err));
	default:
		return UNKNOWN(e, "key '%s': %s: %s", kid, path, strerror(err));
	}
}

/* Whoever can rewrite a trusted key can grant themselves access: refuse such files, like doas. */
static int check_stat(const struct stat *stp, const char *kid, const char *path,
	struct jit_error *e)
{
	char why[64];

	if (filetrust_fault(stp, S_IFREG, why, sizeof(why)))
		return UNKNOWN(e, "key '%s': %s is %s", kid, path, why);
	if (stp->st_size > KEY_FILE_MAX)
		return UNKNOWN(e, "key '%s': %s is larger than %d bytes", kid, path, KEY_FILE_MAX);
	return 0;
}

/* The same checks on an opened file, whose identity *stp then holds. */
static int check_file(int fd, const char *kid, const char *path, struct stat *stp,
	struct jit_error *e)
{
	if (fstat(fd, stp))
		return unreadable(e, kid, path, errno);
	return check_stat(stp, kid, path, e);
}

/*
 * Decoding a PEM key costs OpenSSL 3 about as much as verifying a signature, so decoded keys are
 * remembered by the identity of the file they came from. The file is still looked up and checked
 * on every load (lstat: one system call, where opening it took three): a removed or loosened
 * key stops working at once, and any rewrite (new inode, size, mtime or ctime) is decoded
 * afresh. Shared by the verification threads.
 */
#define KEY_CACHE_SLOTS 32

static struct key_cache_slot {
	char path[PATH_MAX];
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
	EVP_PKEY *key;
} key_cache[KEY_CACHE_SLOTS];
static unsigned key_cache_next;
static pthread_mutex_t key_cache_lock = PTHREAD_MUTEX_INITIALIZER;

static bool same_file(const struct key_cache_slot *c, const char *path, const struct stat *st)
{
	return c->key && c->dev == st->st_dev && c->ino == st->st_ino && c->size == st->st_size &&
		c->mtime.tv_sec == st->st_mtim.tv_sec && c->mtime.tv_nsec == st->st_mtim.tv_nsec &&
		c->ctime.tv_sec == st->st_ctim.tv_sec && c->ctime.tv_nsec == st->st_ctim.tv_nsec &&
		!strcmp(c->path, path);
}

static EVP_PKEY *cache_get(const char *path, const struct stat *st)
{
	EVP_PKEY *k = NULL;

	pthread_mutex_lock(&key_cache_lock);
	for (unsigned i = 0; i < KEY_CACHE_SLOTS && !k; i++)
		if (same_file(&key_cache[i], path, st) && EVP_PKEY_up_ref(key_cache[i].key) == 1)
			k = key_cache[i].key;
	pthread_mutex_unlock(&key_cache_lock);
	return k;
}

static void cache_put(const char *path, const struct stat *st, EVP_PKEY *k)
{
	struct key_cache_slot *c = NULL;

	if (EVP_PKEY_up_ref(k) != 1)
		return;
	pthread_mutex_lock(&key_cache_lock);
	/* The slot of an earlier version of the same file, else the next in turn. */
	for (unsigned i = 0; i < KEY_CACHE_SLOTS && !c; i++)
		if (key_cache[i].key && !strcmp(key_cache[i].path, path))
			c = &key_cache[i];
	if (!c)
		c = &key_cache[key_cache_next++ % KEY_CACHE_SLOTS];
	EVP_PKEY_free(c->key);
	snprintf(c->path, sizeof(c->path), "%s", path);
	c->dev = st->st_dev;
	c->ino = st->st_ino;
	c->size = st->st_size;
	c->mtime = st->st_mtim;
	c->ctime = st->st_ctim;
	c->key = k;
	pthread_mutex_unlock(&key_cache_lock);
}

static int read_public(int fd, const char *kid, const char *path, EVP_PKEY **out,
	struct jit_error *e)
{
	FILE *fp = fdopen(fd, "r");
	int ret;

	if (!fp) {
		ret = unreadable(e, kid, path, errno);
		close(fd);
		goto out;
	}
	if (!(*out = PEM_read_PUBKEY(fp, NULL, NULL, NULL))) {
		/*
		 * A read or an allocation that failed says nothing of the key: not a verdict. The
		 * allocation's error may lie under the decoders' own in the queue.
		 */
		bool oom = false;
		unsigned long code;

		while ((code = ERR_get_error()))
			oom |= ERR_GET_REASON(code) == ERR_R_MALLOC_FAILURE;
		if (ferror(fp))
			ret = unreadable(e, kid, path, EIO);
		else if (oom)
			ret = unreadable(e, kid, path, ENOMEM);
		else
			ret = UNKNOWN(e, "key '%s': %s is not a PEM public key", kid, path);
		goto out;
	}
	if (EVP_PKEY_base_id(*out) != EVP_PKEY_ED25519) {
		ret = UNKNOWN(e, "key '%s': %s is not an Ed25519 key", kid, path);
		goto out;
	}
	ret = 0;
out:
	if (ret) {
		EVP_PKEY_free(*out);
		*out = NULL;
	}
	if (fp)
		fclose(fp);
	ERR_clear_error();
	return ret;
}

int keys_load_public(const char *keys_dir, const char *kid, EVP_PKEY **out, struct jit_error *e)
{
	char path[PATH_MAX], buf[JIT_SHOWN_LEN];
	struct stat st = { 0 };
	int fd = -1, n, ret;

	*out = NULL;
	/* Checked before the kid reaches a path: "../x" or "/x" must never name a file. */
	if (!keys_kid_valid(kid)) {
		ret = UNKNOWN(e, "key '%s': not a valid key id", jit_shown(kid, buf));
		goto out;
	}
	n = snprintf(path, sizeof(path), "%s/%s.pem", keys_dir, kid);
	if (n < 0 || (size_t)n >= sizeof(path)) {
		ret = UNKNOWN(e, "key '%s': path too long (keys_dir %s)", kid, keys_dir);
		goto out;
	}
	/*
	 * lstat, not stat: a symbolic link is not a regular file, so it is refused as opening with
	 * O_NOFOLLOW refuses it. A hit needs the very file (inode, size, times) that was decoded.
	 */
#ifdef JITD_TEST_HOOKS
	/* Test builds: while $JITD_TEST_KEYS_EMFILE_FILE exists, key files cannot be opened. */
	const char *hook = getenv("JITD_TEST_KEYS_EMFILE_FILE");

	if (hook && !access(hook, F_OK)) {
		ret = unreadable(e, kid, path, EMFILE);
		goto out;
	}
#endif
	if (lstat(path, &st)) {
		ret = errno == ENOENT ? UNKNOWN(e, "key '%s': no such key in %s", kid, keys_dir) :
					unreadable(e, kid, path, errno);
		goto out;
	}
	if ((ret = check_stat(&st, kid, path, e)))
		goto out;
	if ((*out = cache_get(path, &st))) {
		ret = 0;
		goto out;
	}
	/* O_NONBLOCK so that a FIFO planted in keys_dir cannot hang the daemon before fstat. */
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		if (errno == ENOENT)
			ret = UNKNOWN(e, "key '%s': no such key in %s", kid, keys_dir);
		else
			ret = unreadable(e, kid, path, errno);
		goto out;
	}
	/* What is read must pass the checks itself: the file may have changed since lstat. */
	if ((ret = check_file(fd, kid, path, &st, e)))
		goto out;
	/* read_public owns the descriptor from here on. */
	ret = read_public(fd, kid, path, out, e);
	fd = -1;
	if (ret == 0)
		cache_put(path, &st, *out);
out:
	if (fd >= 0)
		close(fd);
	return ret;
}

/* Never prompt on a terminal for a passphrase: an encrypted key is simply refused. */
static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
	return -1;
}

int keys_load_private(const char *path, EVP_PKEY **out)
{
	FILE *fp = NULL;
	struct stat st;
	int fd, ret;

	*out = NULL;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY)) < 0) {
		ret = -errno;
		goto out;
	}
	/* A directory opens; its read's EISDIR would be lost in PEM's "no key". */
	if ((ret = fstat(fd, &st) < 0 ? -errno : S_ISDIR(st.st_mode) ? -EISDIR : 0)) {
		close(fd);
		goto out;
	}
	if (!(fp = fdopen(fd, "r"))) {
		ret = -errno;
		close(fd);
		goto out;
	}
	/* Unbuffered, as fill_pem writes it: fclose would free a buffer holding the key's PEM. */
	if (setvbuf(fp, NULL, _IONBF, 0)) {
		ret = -EIO;
		goto out;
	}
	if (!(*out = PEM_read_PrivateKey(fp, NULL, no_passphrase, NULL)) ||
		EVP_PKEY_base_id(*out) != EVP_PKEY_ED25519) {
		EVP_PKEY_free(*out);
		*out = NULL;
		/* A read that failed is not a file that holds no key. */
		ret = ferror(fp) ? -EIO : -EINVAL;
		goto out;
	}
	ret = 0;
out:
	if (fp)
		fclose(fp);
	ERR_clear_error();
	return ret;
}

static int generate(EVP_PKEY **out)
{
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_ED25519, NULL);
	int ret = -ENOMEM;

	*out = NULL;
	if (!ctx)
		goto out;
	if (EVP_PKEY_keygen_init(ctx) != 1 || EVP_PKEY_keygen(ctx, out) != 1) {
		ret = -EIO;
		goto out;
	}
	ret = 0;
out:
	ERR_clear_error();
	EVP_PKEY_CTX_free(ctx);
	return ret;
}

/* Writes one PEM to fd (which it keeps open) and syncs it. */
static int fill_pem(int fd, mode_t mode, EVP_PKEY *key, bool private)
{
	FILE *fp = NULL;
	int dupfd, ok, ret;

	/* The umask may only narrow the mode; the public half is meant to be world-readable. */
	if (fchmod(fd, mode) || (dupfd = fcntl(fd, F_DUPFD_CLOEXEC, 0)) < 0)
		return -errno;
	if (!(fp = fdopen(dupfd, "w"))) {
		ret = -errno;
		close(dupfd);
		return ret;
	}
	/* Unbuffered, so that no copy of the private key is left in a freed stdio buffer. */
	if (private && setvbuf(fp, NULL, _IONBF, 0)) {
		ret = -EIO;
		goto out;
	}
	if (private)
		ok = PEM_write_PrivateKey(fp, key, NULL, NULL, 0, NULL, NULL);
	else
		ok = PEM_write_PUBKEY(fp, key);
	if (ok != 1 || fflush(fp) || fsync(fd)) {
		ret = ok != 1 ? -EIO : -errno;
		goto out;
	}
	ret = 0;
out:
	if (fclose(fp) && !ret)
		ret = -errno;
	ERR_clear_error();
	return ret;
}

/*
 * Creates path (never replacing anything, never through a symlink) and writes one PEM to it. On
 * failure nothing is left behind: a half-written key (0 bytes, say) must not look usable. Only
 * where an unnamed file cannot be made or named: a crash mid-write leaves the name (write_pair).
 */
static int named_pem(const char *path, mode_t mode, EVP_PKEY *key, bool private)
{
	int fd, ret;

	if ((fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_NOFOLLOW | O_CLOEXEC, mode)) < 0)
		return -errno;
	if ((ret = fill_pem(fd, mode, key, private)))
		unlink(path);
	close(fd);
	return ret;
}

/* One PEM in an unnamed file in dir (O_TMPFILE), written and synced: *out, for name_pem. */
static int unnamed_pem(const char *dir, mode_t mode, EVP_PKEY *key, bool private, int *out)
{
	int fd, ret;

	*out = -1;
	if ((fd = open(dir, O_TMPFILE | O_WRONLY | O_CLOEXEC, mode)) < 0)
		return -errno;
	if ((ret = fill_pem(fd, mode, key, private))) {
		close(fd);
		return ret;
	}
	*out = fd;
	return 0;
}

/*
 * Gives the unnamed file fd the name path: never replacing anything there, a dangling symlink
 * included (EEXIST). Through /proc, as an unprivileged user may; without /proc, AT_EMPTY_PATH,
 * which needs CAP_DAC_READ_SEARCH.
 */
static int name_pem(int fd, const char *path)
{
	char proc[64];

	snprintf(proc, sizeof(proc), "/proc/self/fd/%d", fd);
	if (!linkat(AT_FDCWD, proc, AT_FDCWD, path, AT_SYMLINK_FOLLOW))
		return 0;
	if (errno == ENOENT && !linkat(fd, "", AT_FDCWD, path, AT_EMPTY_PATH))
		return 0;
	return -errno;
}

/*
 * Both halves are written and synced unnamed, then named: a crash while writing leaves no file
 * (no empty KID.key, refused as existing at the next keygen and as "not a key" by sign).
 */
static int write_pair(const char *dir, const char *key_path, const char *pub_path,
	EVP_PKEY *key)
{
	int kfd = -1, pfd = -1, ret;

	if ((ret = unnamed_pem(dir, 0600, key, true, &kfd)) ||
		(ret = unnamed_pem(dir, 0644, key, false, &pfd)))
		goto out;
	if ((ret = name_pem(kfd, key_path)))
		goto out;
	/* A private key without its public half would be refused next time as existing. */
	if ((ret = name_pem(pfd, pub_path)))
		unlink(key_path);
out:
	if (kfd >= 0)
		close(kfd);
	if (pfd >= 0)
		close(pfd);
	/*
	 * A file system without O_TMPFILE (EISDIR from kernels before 3.11), or no way to name an
	 * unnamed file (ENOENT: no /proc, no CAP_DAC_READ_SEARCH): the files are named at once, as
	 * before. A DIR that is not there fails that way too, with the same ENOENT.
	 */
	if (ret == -EOPNOTSUPP || ret == -EISDIR || ret == -ENOENT) {
		if ((ret = named_pem(key_path, 0600, key, true)))
			return ret;
		if ((ret = named_pem(pub_path, 0644, key, false)))
			unlink(key_path);
	}
	return ret;
}

int keys_generate(const char *dir, const char *kid)
{
	char key_path[PATH_MAX], pub_path[PATH_MAX];
	EVP_PKEY *pkey = NULL;
	int n, ret;

	if (!keys_kid_valid(kid)) {
		ret = -EINVAL;
		goto out;
	}
	n = snprintf(key_path, sizeof(key_path), "%s/%s.key", dir, kid);
	if (n < 0 || (size_t)n >= sizeof(key_path)) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	n = snprintf(pub_path, sizeof(pub_path), "%s/%s.pem", dir, kid);
	if (n < 0 || (size_t)n >= sizeof(pub_path)) {
		ret = -ENAMETOOLONG;
		goto out;
	}
	if ((ret = generate(&pkey)) || (ret = write_pair(dir, key_path, pub_path, pkey)))
		goto out;
	/*
	 * The names are made durable too: a crash must not lose keys keygen said it wrote. A
	 * directory that may be written but not read (0300), or a file system that cannot sync
	 * one (EINVAL), keeps the keys as before: only a failed sync removes them.
	 */
	if ((ret = dirsync_parent(pub_path)) && ret != -EACCES && ret != -EINVAL) {
		unlink(pub_path);
		unlink(key_path);
		goto out;
	}
	ret = 0;
out:
	EVP_PKEY_free(pkey);
	return ret;
}

/* warn's line, formatted: a key survey has nothing better to do with one that does not fit. */
static void __attribute__((format(printf, 3, 4)))
say(keys_warn_fn *warn, void *arg, const char *fmt, ...)
{
	char msg[2 * PATH_MAX + 128];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	warn(arg, msg);
}

/* Every <kid>.pem in keys_dir loaded as a grant naming it would load it: how many can be. */
static size_t usable_in_dir(const char *keys_dir, keys_warn_fn *warn, void *arg)
{
	DIR *d = opendir(keys_dir);
	struct dirent *de;
	size_t usable = 0;

	if (!d) {
		say(warn, arg, "keys_dir %s: %s", keys_dir, strerror(errno));
		return 0;
	}
	while ((de = readdir(d))) {
		size_t len = strlen(de->d_name);
		struct jit_error e = { 0 };
		char kid[KEYS_KID_MAX + 1];
		EVP_PKEY *key = NULL;

		if (len <= 4 || strcmp(de->d_name + len - 4, ".pem"))
			continue;
		snprintf(kid, sizeof(kid), "%.*s", (int)(len - 4), de->d_name);
		if (len - 4 > KEYS_KID_MAX || !keys_kid_valid(kid)) {
			say(warn, arg, "%s/%s: not a key id, so no grant can name it", keys_dir,
				de->d_name);
			continue;
		}
		if (keys_load_public(keys_dir, kid, &key, &e)) {
			say(warn, arg, "%s/%s: %s", keys_dir, de->d_name, e.msg);
			continue;
		}
		EVP_PKEY_free(key);
		usable++;
	}
	closedir(d);
	if (!usable)
		say(warn, arg, "no usable key in %s: every signed grant is refused", keys_dir);
	return usable;
}

int keys_dir_errno(const char *keys_dir)
{
	char path[PATH_MAX];
	struct stat st;

	/* Room for the longest key's path, as keys_load_public builds it: else none loads. */
	if (strlen(keys_dir) + sizeof("/.pem") + KEYS_KID_MAX > sizeof(path))
		return ENAMETOOLONG;
	snprintf(path, sizeof(path), "%s/.", keys_dir);
	return stat(path, &st) ? errno : 0;
}

size_t keys_survey(const struct config *cfg, keys_warn_fn *warn, void *arg)
{
	size_t keys = usable_in_dir(cfg->keys_dir, warn, arg), bound = 0;

	for (size_t i = 0; i < cfg->n_issuers; i++) {
		struct jit_error why = { 0 };
		EVP_PKEY *pub = NULL;

		if (keys_load_public(cfg->keys_dir, cfg->issuers[i].kid, &pub, &why))
			say(warn, arg, "issuers.%s: %s", cfg->issuers[i].kid, why.msg);
		else
			bound++;
		EVP_PKEY_free(pub);
	}
	/* With issuers, a key it does not bind signs nothing jitd admits (unknown_key). */
	if (cfg->n_issuers) {
		if (keys > bound)
			say(warn, arg, "%zu usable key(s) in %s bound to no issuer in \"issuers\": "
				"their grants are refused", keys - bound, cfg->keys_dir);
		return bound;
	}
	/*
	 * Unbound, each key may sign under any iss, and the trail's iss is whatever a grant
	 * claims: one controller's key can pass for another's. Harmless with one key.
	 */
	if (keys > 1)
		say(warn, arg, "%zu trusted keys and no \"issuers\": each may sign under any iss "
			"(bind each key id to its controller's issuer)", keys);
	return keys;
}
