#include <dirent.h>
#include <stdbool.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/evp.h>

#include "agent/store.h"
#include "common/jws.h"
#include "common/log.h"

#define SUFFIX ".jws"

struct store {
	int dirfd;
	char path[4096];
};

int store_open(const char *state_dir, struct store **out)
{
	struct store *s;
	int ret;

	*out = NULL;
	s = calloc(1, sizeof(*s));
	if (!s)
		return -ENOMEM;
	s->dirfd = -1;
	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
		goto fail_errno;
	ret = snprintf(s->path, sizeof(s->path), "%s/grants", state_dir);
	if (ret < 0 || (size_t)ret >= sizeof(s->path)) {
		free(s);
		return -ENAMETOOLONG;
	}
	if (mkdir(s->path, 0700) < 0 && errno != EEXIST)
		goto fail_errno;
	s->dirfd = open(s->path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (s->dirfd < 0)
		goto fail_errno;
	*out = s;
	return 0;
fail_errno:
	ret = -errno;
	free(s);
	return ret;
}

void store_close(struct store **s)
{
	if (!s || !*s)
		return;
	if ((*s)->dirfd >= 0)
		close((*s)->dirfd);
	free(*s);
	*s = NULL;
}

/* jti is controller-chosen text: its hash makes a safe, fixed-length file name. */
static int record_name(const char *jti, char name[static 80])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;

	if (!EVP_Digest(jti, strlen(jti), md, &mdlen, EVP_sha256(), NULL) || mdlen != 32)
		return -EIO;
	for (unsigned i = 0; i < 32; i++)
		sprintf(&name[2 * i], "%02x", md[i]);
	strcpy(&name[64], SUFFIX);
	return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
	while (len) {
		ssize_t n = write(fd, buf, len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return -errno;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

int store_put(struct store *s, const char *jti, const char *token, size_t len)
{
	char name[80], tmp[96];
	int fd = -1, ret;

	if ((ret = record_name(jti, name)))
		return ret;
	snprintf(tmp, sizeof(tmp), ".%s.tmp", name);
	fd = openat(s->dirfd, tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
	if (fd < 0)
		return -errno;
	if ((ret = write_all(fd, token, len)) || (fsync(fd) < 0 && (ret = -errno)))
		goto out;
	if (renameat(s->dirfd, tmp, s->dirfd, name) < 0) {
		ret = -errno;
		goto out;
	}
	/* The rename is durable only once the directory entry is. */
	if (fsync(s->dirfd) < 0)
		ret = -errno;
out:
	close(fd);
	if (ret)
		(void)unlinkat(s->dirfd, tmp, 0);
	return ret;
}

int store_del(struct store *s, const char *jti)
{
	char name[80];
	int ret;

	if ((ret = record_name(jti, name)))
		return ret;
	if (unlinkat(s->dirfd, name, 0) < 0 && errno != ENOENT)
		return -errno;
	return 0;
}

static int read_record(int dirfd, const char *name, char *buf, size_t cap, size_t *len)
{
	int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
	ssize_t n;
	int ret = 0;

	if (fd < 0)
		return -errno;
	n = read(fd, buf, cap);
	if (n < 0)
		ret = -errno;
	else if ((size_t)n == cap)
		ret = -EFBIG;
	else
		buf[n] = '\0', *len = (size_t)n;
	close(fd);
	return ret;
}

static bool is_record(const char *name)
{
	size_t len = strlen(name);

	return len == 64 + strlen(SUFFIX) && !strcmp(name + 64, SUFFIX);
}

int store_foreach(struct store *s, int (*cb)(const char *token, size_t len, void *arg), void *arg)
{
	static char buf[JWS_MAX_TOKEN + 1];
	int fd = dup(s->dirfd), ret = 0;
	struct dirent *de;
	DIR *d;

	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -errno;
	}
	rewinddir(d);
	while (ret >= 0 && (de = readdir(d))) {
		size_t len = 0;
		int r;

		if (!is_record(de->d_name))
			continue;
		r = read_record(s->dirfd, de->d_name, buf, sizeof(buf), &len);
		if (r < 0) {
			log_warn("state: skipping grant record %s/%s: %s", s->path, de->d_name,
				strerror(-r));
			continue;
		}
		ret = cb(buf, len, arg);
		if (ret == STORE_REMOVE && unlinkat(s->dirfd, de->d_name, 0) < 0)
			log_warn("state: cannot remove %s/%s: %s", s->path, de->d_name,
				strerror(errno));
	}
	closedir(d);
	return ret < 0 ? ret : 0;
}
