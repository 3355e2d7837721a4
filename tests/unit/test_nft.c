/*
 * nft's transactions against the real kernel, in a network namespace of the test's own
 * (unshare: root only; skipped otherwise). Nothing outside that namespace is touched.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <sched.h>
#include <stdbool.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/capability.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netlink.h>

#include "agent/nft.h"

#define TABLE "jitdtest"
#define SET "big"
/* Each element carries 200 bytes of comment (user data): a large batch in few elements. */
#define N_ELEMS 80000
#define PER_MSG 200

static bool own_namespace;

static int setup(void **state)
{
	(void)state;
	own_namespace = geteuid() == 0 && unshare(CLONE_NEWNET) == 0;
	return 0;
}

static void add_table_and_set(struct nft *n, const char *table)
{
	struct nft_batch *b;
	struct nftnl_table *t = nftnl_table_alloc();
	struct nftnl_set *s = nftnl_set_alloc();
	struct nlmsghdr *nlh;
	char err[NFT_ERRLEN];

	assert_non_null(t);
	assert_non_null(s);
	assert_int_equal(nft_batch_new(n, &b), 0);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, table);
	assert_non_null(nlh = nft_batch_msg(b, NFT_MSG_NEWTABLE, NFPROTO_INET, NLM_F_CREATE,
		"table"));
	nftnl_table_nlmsg_build_payload(nlh, t);
	nftnl_set_set_str(s, NFTNL_SET_TABLE, table);
	nftnl_set_set_str(s, NFTNL_SET_NAME, SET);
	nftnl_set_set_u32(s, NFTNL_SET_KEY_TYPE, 7); /* ipv4_addr */
	nftnl_set_set_u32(s, NFTNL_SET_KEY_LEN, 4);
	nftnl_set_set_u32(s, NFTNL_SET_ID, 1);
	assert_non_null(nlh = nft_batch_msg(b, NFT_MSG_NEWSET, NFPROTO_INET, NLM_F_CREATE, "set"));
	nftnl_set_nlmsg_build_payload(nlh, s);
	assert_int_equal(nft_batch_commit(b, err), 0);
	nft_batch_free(b);
	nftnl_set_free(s);
	nftnl_table_free(t);
}

/* n addresses from 10.0.0.0 into table's SET, PER_MSG a message, each with comment if any. */
static void add_elements(struct nft_batch *b, const char *table, uint32_t n, const char *comment,
	size_t comment_len)
{
	for (uint32_t i = 0; i < n; i += PER_MSG) {
		struct nftnl_set *s = nftnl_set_alloc();
		struct nlmsghdr *nlh;

		assert_non_null(s);
		nftnl_set_set_str(s, NFTNL_SET_TABLE, table);
		nftnl_set_set_str(s, NFTNL_SET_NAME, SET);
		for (uint32_t k = i; k < i + PER_MSG; k++) {
			struct nftnl_set_elem *e = nftnl_set_elem_alloc();
			uint32_t addr = htonl(0x0a000000u + k);

			assert_non_null(e);
			nftnl_set_elem_set(e, NFTNL_SET_ELEM_KEY, &addr, sizeof(addr));
			if (comment)
				nftnl_set_elem_set(e, NFTNL_SET_ELEM_USERDATA, comment,
					(uint32_t)comment_len);
			nftnl_set_elem_add(s, e);
		}
		assert_non_null(nlh = nft_batch_msg(b, NFT_MSG_NEWSETELEM, NFPROTO_INET,
			NLM_F_CREATE, "elements"));
		nftnl_set_elems_nlmsg_build_payload(nlh, s);
		nftnl_set_free(s);
	}
}

/*
 * The kernel takes a batch as one datagram, refused when longer than the socket's send buffer
 * (16 MiB as jitd opens it): a restore of some 400,000 grant elements is. Here some 18 MB.
 */
static void test_batch_larger_than_send_buffer(void **state)
{
	struct nft_batch *b;
	struct nftnl_set *dump = NULL;
	struct nft *n;
	char err[NFT_ERRLEN], comment[200];
	size_t count = 0;
	int ret;

	(void)state;
	if (!own_namespace)
		skip();
	memset(comment, 'c', sizeof(comment));
	assert_int_equal(nft_open(&n), 0);
	add_table_and_set(n, TABLE);
	assert_int_equal(nft_batch_new(n, &b), 0);
	add_elements(b, TABLE, N_ELEMS, comment, sizeof(comment));
	ret = nft_batch_commit(b, err);
	if (ret)
		print_error("commit: %s\n", err);
	assert_int_equal(ret, 0);
	nft_batch_free(b);
	assert_int_equal(nft_set_dump(n, TABLE, SET, &dump), 0);
	struct nftnl_set_elems_iter *it = nftnl_set_elems_iter_create(dump);

	assert_non_null(it);
	while (nftnl_set_elems_iter_next(it))
		count++;
	nftnl_set_elems_iter_destroy(it);
	nftnl_set_free(dump);
	assert_int_equal(count, N_ELEMS);
	nft_close(&n);
}

/* Deletes table over a socket of its own, as another process would. */
static void delete_table(const char *table)
{
	struct nftnl_table *t = nftnl_table_alloc();
	struct nft_batch *b;
	struct nlmsghdr *nlh;
	struct nft *other;
	char err[NFT_ERRLEN];

	assert_non_null(t);
	assert_int_equal(nft_open(&other), 0);
	assert_int_equal(nft_batch_new(other, &b), 0);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, table);
	assert_non_null(nlh = nft_batch_msg(b, NFT_MSG_DELTABLE, NFPROTO_INET, 0, "table"));
	nftnl_table_nlmsg_build_payload(nlh, t);
	assert_int_equal(nft_batch_commit(b, err), 0);
	nft_batch_free(b);
	nftnl_table_free(t);
	nft_close(&other);
}

/* A socket, and table's SET of 20,000 elements: a dozen parts or more of a dump. */
static struct nft *open_with_big_set(const char *table)
{
	struct nft_batch *b;
	struct nft *n;
	char err[NFT_ERRLEN];

	assert_int_equal(nft_open(&n), 0);
	add_table_and_set(n, table);
	assert_int_equal(nft_batch_new(n, &b), 0);
	add_elements(b, table, 20000, NULL, 0);
	assert_int_equal(nft_batch_commit(b, err), 0);
	nft_batch_free(b);
	return n;
}

static int delete_at_first_part(struct nftnl_set *part, void *arg)
{
	int *parts = arg;

	(void)part;
	if ((*parts)++ == 0)
		delete_table(TABLE "_gone");
	return 0;
}

/*
 * A set deleted between two parts of its dump: the kernel ends the dump with ENOENT in its
 * NLMSG_DONE. That is a failed read, not the whole of a set that happens to be short.
 */
static void test_dump_ended_early(void **state)
{
	struct nft *n;
	int parts = 0, ret;

	(void)state;
	if (!own_namespace)
		skip();
	n = open_with_big_set(TABLE "_gone");
	ret = nft_set_elems_each(n, TABLE "_gone", SET, delete_at_first_part, &parts);
	print_message("%d part(s) read before the dump ended\n", parts);
	assert_int_equal(ret, -ENOENT);
	/* The socket serves the next request. */
	bool exists = true;

	assert_int_equal(nft_table_exists(n, TABLE "_gone", &exists), 0);
	assert_false(exists);
	nft_close(&n);
}

static int fail_at_first_part(struct nftnl_set *part, void *arg)
{
	(void)part;
	++*(int *)arg;
	return -ENOMEM;
}

static int count_part(struct nftnl_set *part, void *arg)
{
	(void)part;
	++*(int *)arg;
	return 0;
}

/*
 * A callback that fails at a dump's first part ends the read there, and the rest of the dump
 * does not stay in the socket: the kernel would answer the next dump request with EBUSY.
 */
static void test_dump_callback_failed(void **state)
{
	struct nft *n;
	int parts = 0;

	(void)state;
	if (!own_namespace)
		skip();
	n = open_with_big_set(TABLE "_fail");
	assert_int_equal(nft_set_elems_each(n, TABLE "_fail", SET, fail_at_first_part, &parts),
		-ENOMEM);
	assert_int_equal(parts, 1);
	parts = 0;
	assert_int_equal(nft_set_elems_each(n, TABLE "_fail", SET, count_part, &parts), 0);
	print_message("the next dump read whole: %d part(s)\n", parts);
	assert_true(parts > 1);
	nft_close(&n);
}

/* Sets whether CAP_NET_ADMIN is in this thread's effective set (it stays permitted). */
static void net_admin_effective(bool on)
{
	struct __user_cap_header_struct hdr = { .version = _LINUX_CAPABILITY_VERSION_3 };
	struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];

	assert_int_equal(syscall(SYS_capget, &hdr, data), 0);
	if (on)
		data[0].effective |= 1u << CAP_NET_ADMIN;
	else
		data[0].effective &= ~(1u << CAP_NET_ADMIN);
	assert_int_equal(syscall(SYS_capset, &hdr, data), 0);
}

/*
 * A batch the kernel refuses as a whole is answered on its begin message alone (here: the
 * sender lacks CAP_NET_ADMIN). That answer is the verdict: its reason, and nothing applied.
 */
static void test_batch_refused_whole(void **state)
{
	struct nftnl_table *t = nftnl_table_alloc();
	struct nft_batch *b;
	struct nlmsghdr *nlh;
	struct nft *n;
	char err[NFT_ERRLEN];
	bool exists = true;
	int ret;

	(void)state;
	if (!own_namespace)
		skip();
	assert_non_null(t);
	assert_int_equal(nft_open(&n), 0);
	assert_int_equal(nft_batch_new(n, &b), 0);
	/* Two messages: one ack, the begin's, must not pass for all of them. */
	for (int i = 0; i < 2; i++) {
		nftnl_table_set_str(t, NFTNL_TABLE_NAME, i ? TABLE "_refused" : TABLE "_refused0");
		assert_non_null(nlh = nft_batch_msg(b, NFT_MSG_NEWTABLE, NFPROTO_INET,
			NLM_F_CREATE, "table"));
		nftnl_table_nlmsg_build_payload(nlh, t);
	}
	net_admin_effective(false);
	ret = nft_batch_commit(b, err);
	net_admin_effective(true);
	assert_int_equal(ret, -EPERM);
	assert_false(nft_batch_unanswered(b));
	assert_non_null(strstr(err, strerror(EPERM)));
	assert_int_equal(nft_table_exists(n, TABLE "_refused", &exists), 0);
	assert_false(exists);
	nft_batch_free(b);
	nftnl_table_free(t);
	nft_close(&n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_batch_larger_than_send_buffer),
		cmocka_unit_test(test_batch_refused_whole),
		cmocka_unit_test(test_dump_ended_early),
		cmocka_unit_test(test_dump_callback_failed),
	};

	return cmocka_run_group_tests(tests, setup, NULL);
}
