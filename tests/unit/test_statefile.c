/*
 * What jitd finds at a name in its state directory (a FIFO, a link, a directory, a file a crash
 * left) is never waited on, written through, or kept: the opener and the rewrite's temporary
 * file. alarm turns a wait into a failure rather than a hung test.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/statefile.h"

static char dir[] = "/tmp/jitd-test-statefile.XXXXXX";
/* Two in turn: symlink takes two. */
static char paths[2][128];

static const char *at(const char *name)
{
	static int turn;
	char *path = paths[turn++ % 2];

	snprintf(path, sizeof(paths[0]), "%s/%s", dir, name);
	return path;
}

static int make_dir(void **state __attribute__((unused)))
{
	memcpy(dir + sizeof(dir) - 7, "XXXXXX", 6);
	return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state __attribute__((unused)))
{
	char cmd[96];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static int dir_fd(void)
{
	int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	assert_true(dfd >= 0);
	return dfd;
}

static void write_file(const char *name, const char *text, mode_t mode)
{
	FILE *f = fopen(at(name), "w");

	assert_non_null(f);
	assert_true(fputs(text, f) >= 0);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(at(name), mode), 0);
}

/* name is a new, empty regular file of mode 0600, and fd is it. */
static void fresh(int fd, const char *name)
{
	struct stat a, b;

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &a), 0);
	assert_int_equal(lstat(at(name), &b), 0);
	assert_true(S_ISREG(b.st_mode));
	assert_int_equal(a.st_ino, b.st_ino);
	assert_int_equal(b.st_size, 0);
	assert_int_equal(b.st_mode & 07777, 0600);
	assert_int_equal(write(fd, "x", 1), 1);
	close(fd);
}

static void create_replaces(void **state __attribute__((unused)))
{
	char buf[16] = "";
	int dfd = dir_fd(), fd;
	FILE *f;

	alarm(20);
	assert_int_equal(mkfifo(at("fifo.tmp"), 0600), 0);
	fresh(statefile_create(dfd, "fifo.tmp"), "fifo.tmp");
	/* A link's target is neither written nor truncated: the link goes. */
	write_file("target", "kept", 0644);
	assert_int_equal(symlink(at("target"), at("link.tmp")), 0);
	fresh(statefile_create(dfd, "link.tmp"), "link.tmp");
	assert_non_null(f = fopen(at("target"), "r"));
	assert_non_null(fgets(buf, sizeof(buf), f));
	fclose(f);
	assert_string_equal(buf, "kept");
	/* A rewrite a crash left, of another mode: nothing of it is kept. */
	write_file("old.tmp", "stale bytes", 0644);
	fresh(statefile_create(dfd, "old.tmp"), "old.tmp");
	fresh(statefile_create(dfd, "new.tmp"), "new.tmp");
	/* 0600 whatever the umask took from it. */
	umask(0277);
	fd = statefile_create(dfd, "masked.tmp");
	umask(022);
	fresh(fd, "masked.tmp");
	/* What cannot be removed is said, not written into. */
	assert_int_equal(mkdir(at("dir.tmp"), 0700), 0);
	assert_int_equal(statefile_create(dfd, "dir.tmp"), -EISDIR);
	alarm(0);
	close(dfd);
}

static void open_refuses(void **state __attribute__((unused)))
{
	struct stat st;
	int dfd = dir_fd(), fd;

	alarm(20);
	assert_int_equal(mkfifo(at("fifo"), 0600), 0);
	assert_int_equal(statefile_open(dfd, "fifo", O_RDONLY, 0, NULL), -EINVAL);
	assert_int_equal(statefile_open(dfd, "fifo", O_WRONLY | O_APPEND, 0, NULL), -ENXIO);
	assert_int_equal(statefile_open(dfd, "fifo", O_RDWR, 0, NULL), -EINVAL);
	write_file("file", "abc", 0600);
	assert_int_equal(symlink(at("file"), at("link")), 0);
	assert_int_equal(statefile_open(dfd, "link", O_RDONLY, 0, NULL), -ELOOP);
	assert_int_equal(statefile_open(dfd, ".", O_RDONLY, 0, NULL), -EINVAL);
	assert_int_equal(statefile_open(dfd, "none", O_RDONLY, 0, NULL), -ENOENT);
	/* A regular file opens, by path too, with its fstat. */
	fd = statefile_open(AT_FDCWD, at("file"), O_WRONLY | O_APPEND, 0, &st);
	assert_true(fd >= 0);
	assert_int_equal(st.st_size, 3);
	close(fd);
	fd = statefile_open(dfd, "made", O_WRONLY | O_APPEND | O_CREAT, 0640, &st);
	assert_true(fd >= 0);
	assert_true(S_ISREG(st.st_mode));
	close(fd);
	alarm(0);
	close(dfd);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(create_replaces, make_dir, remove_dir),
		cmocka_unit_test_setup_teardown(open_refuses, make_dir, remove_dir),
	};

	umask(022);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
