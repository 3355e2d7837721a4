#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/log.h"

/* stderr into a temporary file for the test; its contents read back with slurp. */
static int saved = -1;
static char path[32];

static int setup(void **state)
{
	int fd;

	(void)state;
	snprintf(path, sizeof(path), "/tmp/test_log.XXXXXX");
	fd = mkstemp(path);
	if (fd < 0 || (saved = dup(STDERR_FILENO)) < 0 || dup2(fd, STDERR_FILENO) < 0)
		return -1;
	close(fd);
	log_set_level(LOG_LVL_INFO);
	return 0;
}

static int teardown(void **state)
{
	(void)state;
	dup2(saved, STDERR_FILENO);
	close(saved);
	unlink(path);
	return 0;
}

static char *slurp(void)
{
	FILE *f = fopen(path, "r");
	char *buf = calloc(1, 1 << 17);
	size_t n;

	assert_non_null(f);
	assert_non_null(buf);
	n = fread(buf, 1, (1 << 17) - 1, f);
	buf[n] = '\0';
	fclose(f);
	return buf;
}

static void *other_thread(void *arg)
{
	(void)arg;
	log_info("from another thread");
	return NULL;
}

/* Held lines wait for the release, in order; another thread's go out at once. */
static void test_hold(void **state)
{
	pthread_t t;
	char *s;

	(void)state;
	log_info("one");
	log_hold(true);
	log_info("two");
	log_warn("three");
	log_debug("below the level");
	assert_int_equal(pthread_create(&t, NULL, other_thread, NULL), 0);
	assert_int_equal(pthread_join(t, NULL), 0);
	s = slurp();
	assert_string_equal(s, "<6>jitd: one\n<6>jitd: from another thread\n");
	free(s);
	log_hold(false);
	s = slurp();
	assert_string_equal(s, "<6>jitd: one\n<6>jitd: from another thread\n"
		"<6>jitd: two\n<4>jitd: three\n");
	free(s);
}

/* More than the room: what gathered goes out first; every line whole, in order. */
static void test_hold_overflow(void **state)
{
	char pad[501], want[600], *s, *at;
	size_t len;

	(void)state;
	memset(pad, 'x', sizeof(pad) - 1);
	pad[sizeof(pad) - 1] = '\0';
	log_hold(true);
	for (int i = 0; i < 100; i++)
		log_info("%03d %s", i, pad);
	s = slurp();
	len = strlen(s);
	assert_true(len > 0 && len < 100 * 514);
	assert_int_equal(len % 514, 0); /* whole lines only */
	free(s);
	log_hold(false);
	s = slurp();
	assert_int_equal(strlen(s), 100 * 514);
	at = s;
	for (int i = 0; i < 100; i++, at += 514) {
		snprintf(want, sizeof(want), "<6>jitd: %03d %s\n", i, pad);
		assert_memory_equal(at, want, 514);
	}
	free(s);
}

/* jitd -v: a reload's level from the file does not end the debug lines. Last: it stays on. */
static void test_keep_debug(void **state)
{
	char *s;

	(void)state;
	log_debug("hidden");
	log_keep_debug();
	log_set_level(LOG_LVL_ERR);
	log_debug("shown");
	s = slurp();
	assert_string_equal(s, "<7>jitd: shown\n");
	free(s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_hold, setup, teardown),
		cmocka_unit_test_setup_teardown(test_hold_overflow, setup, teardown),
		cmocka_unit_test_setup_teardown(test_keep_debug, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
