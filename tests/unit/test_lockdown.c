#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/lockdown.h"

/*
 * The record's writing, and the answers about it: those need the kernel's tables read first (a
 * table a jitd made is left whatever the record), so they run in a network namespace of their
 * own, as root, or are skipped. Building the table, and leaving one that is there, are e2e
 * lockdown's.
 */
static char dir[] = "/tmp/jitd-test-lockdown.XXXXXX";
static bool own_namespace;

static int enter_namespace(void **state)
{
	(void)state;
	own_namespace = geteuid() == 0 && unshare(CLONE_NEWNET) == 0;
	return 0;
}

static int make_dir(void **state)
{
	memcpy(dir + sizeof(dir) - 7, "XXXXXX", 6);
	return mkdtemp(dir) ? 0 : -1;
}

static int remove_dir(void **state)
{
	char cmd[64];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd);
}

static void read_back(const char *name, char *buf, size_t cap, size_t *len, mode_t *mode)
{
	char path[96];
	struct stat st;
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", dir, name);
	assert_int_equal(stat(path, &st), 0);
	*mode = st.st_mode & 07777;
	assert_non_null(f = fopen(path, "r"));
	*len = fread(buf, 1, cap, f);
	fclose(f);
}

static void test_save(void **state)
{
	static const char first[] = "{\"ports\": [{\"port\": 22}]}\n";
	static const char second[] = "{}";
	char buf[128], tmp[96];
	size_t len;
	mode_t mode;

	/* A FIFO left at the temporary file's name is replaced, not waited on. */
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, LOCKDOWN_FILE);
	assert_int_equal(mkfifo(tmp, 0600), 0);
	alarm(20);
	assert_int_equal(lockdown_save(dir, first, strlen(first)), 0);
	alarm(0);
	read_back(LOCKDOWN_FILE, buf, sizeof(buf), &len, &mode);
	assert_int_equal(len, strlen(first));
	assert_memory_equal(buf, first, len);
	assert_int_equal(mode, 0600);
	/* A second save replaces the first whole: nothing of the longer one is left. */
	assert_int_equal(lockdown_save(dir, second, strlen(second)), 0);
	read_back(LOCKDOWN_FILE, buf, sizeof(buf), &len, &mode);
	assert_int_equal(len, strlen(second));
	assert_memory_equal(buf, second, len);
	snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, LOCKDOWN_FILE);
	assert_int_equal(access(tmp, F_OK), -1);
	snprintf(tmp, sizeof(tmp), "%s/gone", dir);
	assert_int_equal(lockdown_save(tmp, first, strlen(first)), -ENOENT);
}

static void test_apply_without_a_table(void **state)
{
	static const char bad[] = "{\"portz\": 1}";
	char msg[512];

	if (!own_namespace)
		skip();
	assert_int_equal(lockdown_apply(dir, NULL, "why", NULL, msg, sizeof(msg)),
		LOCKDOWN_NO_RECORD);
	if (!strstr(msg, "no configuration was served here before") || !strstr(msg, dir))
		fail_msg("message: %s", msg);
	/* A record this jitd cannot read builds nothing, and says why. */
	assert_int_equal(lockdown_save(dir, bad, strlen(bad)), 0);
	assert_int_equal(lockdown_apply(dir, NULL, "why", NULL, msg, sizeof(msg)), -EINVAL);
	if (!strstr(msg, "cannot be read") || !strstr(msg, "portz"))
		fail_msg("message: %s", msg);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_save, make_dir, remove_dir),
		cmocka_unit_test_setup_teardown(test_apply_without_a_table, make_dir, remove_dir),
	};

	return cmocka_run_group_tests(tests, enter_namespace, NULL);
}
