/*
 * The one rule for a file jitd trusts: of the kind expected, root's or the reader's own user's,
 * and writable by no one else; the first fault named, nothing for a file that passes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/filetrust.h"

static struct stat file(mode_t mode, uid_t uid)
{
	struct stat st;

	memset(&st, 0, sizeof(st));
	st.st_mode = mode;
	st.st_uid = uid;
	return st;
}

static void fault_is(struct stat st, mode_t type, const char *want)
{
	char buf[64];
	const char *got = filetrust_fault(&st, type, buf, sizeof(buf));

	if (!want) {
		assert_null(got);
		return;
	}
	assert_ptr_equal(got, buf);
	assert_string_equal(got, want);
}

static void trusted(void **state __attribute__((unused)))
{
	fault_is(file(S_IFREG | 0600, 0), S_IFREG, NULL);
	fault_is(file(S_IFREG | 0644, geteuid()), S_IFREG, NULL);
	fault_is(file(S_IFDIR | 0755, 0), S_IFDIR, NULL);
}

static void kind(void **state __attribute__((unused)))
{
	fault_is(file(S_IFDIR | 0700, 0), S_IFREG, "not a regular file");
	fault_is(file(S_IFIFO | 0600, 0), S_IFREG, "not a regular file");
	fault_is(file(S_IFCHR | 0600, 0), S_IFREG, "not a regular file");
	fault_is(file(S_IFREG | 0600, 0), S_IFDIR, "not a directory");
	/* The kind first: a FIFO others may write is refused as a FIFO. */
	fault_is(file(S_IFIFO | 0666, 0), S_IFREG, "not a regular file");
}

static void writers(void **state __attribute__((unused)))
{
	fault_is(file(S_IFREG | 0620, 0), S_IFREG, "writable by group or others");
	fault_is(file(S_IFREG | 0602, 0), S_IFREG, "writable by group or others");
	fault_is(file(S_IFDIR | 0777, 0), S_IFDIR, "writable by group or others");
}

static void owner(void **state __attribute__((unused)))
{
	/* Neither root nor this process's user (which is root when the tests run as root). */
	uid_t other = geteuid() == 0 ? 1 : geteuid() + 1;
	char want[64];

	snprintf(want, sizeof(want), "owned by uid %u, not root nor jitd's user", (unsigned)other);
	fault_is(file(S_IFREG | 0600, other), S_IFREG, want);
	/* Writable by others is named before the owner. */
	fault_is(file(S_IFREG | 0666, other), S_IFREG, "writable by group or others");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(trusted),
		cmocka_unit_test(kind),
		cmocka_unit_test(writers),
		cmocka_unit_test(owner),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
