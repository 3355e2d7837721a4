#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <libnftnl/batch.h>
#include <libnftnl/chain.h>
#include <libnftnl/common.h>
#include <libnftnl/gen.h>
#include <libnftnl/object.h>
#include <libnftnl/rule.h>
#include <libnftnl/set.h>
#include <libnftnl/table.h>
#include <linux/netfilter.h>
#include <linux/netfilter/nf_tables.h>
#include <linux/netfilter/nfnetlink.h>
#include <linux/netlink.h>

#include "agent/nft.h"
#include "agent/nldump.h"
#include "agent/testhook.h"
#include "common/array.h"

/*
 * A page holds a full netlink message plus the overrun, as in nftables' mnl.c. A page and its
 * overrun stay below main.c's mmap threshold, so that each commit's comes from the heap rather
 * than a fresh mapping; a restore of 100,000 elements (4.3 MB) takes 17 of them.
 */
#define NFT_NLMSG_MAXSIZE (UINT16_MAX + 4096)
#define BATCH_PAGE_SIZE (256 * 1024)
#define ACK_TIMEOUT_MS 5000
/* Acks of a 100k-element restore arrive together; the default receive buffer would drop them. */
#define SOCK_BUFSIZE (8 * 1024 * 1024)
/*
 * The kernel sizes each part of a dump to the largest read the socket has seen, up to 32 KB.
 * A hash set's dump walks the set from its start again for every part (rhashtable_walk_next
 * was the largest symbol of a status at 100,000 grants), so fewer, larger parts cost less.
 */
#define DUMP_BUFSIZE (32 * 1024)
/* netlink_sendmsg refuses a datagram longer than the send buffer less 32 bytes. */
#define SNDBUF_MARGIN 4096

struct nft {
	struct mnl_socket *nl;
	uint32_t portid;
	uint32_t seq;
	size_t sndbuf;	/* the socket's send buffer as the kernel set it (twice what was asked) */
};

struct batch_msg {
	uint32_t seq;
	char what[64]; /* a copy: callers describe a message from their own stack */
};

struct nft_batch {
	struct nft *nft;
	struct nftnl_batch *nb;
	struct nlmsghdr *begin;	/* its sequence number is set with the first message's */
	uint32_t end_seq;
	struct batch_msg *msgs;
	size_t n, cap;
	bool unanswered;	/* the last commit's verdict was not read */
};

static void set_bufsize(struct mnl_socket *nl, int opt_force, int opt, int size)
{
	int fd = mnl_socket_get_fd(nl);

	/* FORCE needs CAP_NET_ADMIN, which jitd has; the plain option is the capped fallback. */
	if (setsockopt(fd, SOL_SOCKET, opt_force, &size, sizeof(size)) < 0)
		(void)setsockopt(fd, SOL_SOCKET, opt, &size, sizeof(size));
}

static size_t socket_sndbuf(struct mnl_socket *nl)
{
	int size = 0;
	socklen_t len = sizeof(size);

	if (getsockopt(mnl_socket_get_fd(nl), SOL_SOCKET, SO_SNDBUF, &size, &len) < 0 || size < 0)
		return 0;
	return (size_t)size;
}

int nft_open(struct nft **out)
{
	struct nft *n;
	int one = 1, ret;

	*out = NULL;
	n = calloc(1, sizeof(*n));
	if (!n)
		return -ENOMEM;
	n->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC);
	if (!n->nl) {
		ret = -errno;
		goto fail;
	}
	if (mnl_socket_bind(n->nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		goto fail;
	}
	/* Without extended acks a refusal is a bare errno; with them the kernel says which attribute. */
	(void)mnl_socket_setsockopt(n->nl, NETLINK_EXT_ACK, &one, sizeof(one));
	/*
	 * An error ack would otherwise echo the refused message whole: a set-element message is up
	 * to 64 KiB, more than the ack buffer, and a truncated read loses the kernel's reason.
	 */
	(void)mnl_socket_setsockopt(n->nl, NETLINK_CAP_ACK, &one, sizeof(one));
	set_bufsize(n->nl, SO_RCVBUFFORCE, SO_RCVBUF, SOCK_BUFSIZE);
	set_bufsize(n->nl, SO_SNDBUFFORCE, SO_SNDBUF, SOCK_BUFSIZE);
	n->sndbuf = socket_sndbuf(n->nl);
	n->portid = mnl_socket_get_portid(n->nl);
	n->seq = (uint32_t)time(NULL);
	*out = n;
	return 0;
fail:
	if (n->nl)
		mnl_socket_close(n->nl);
	free(n);
	return ret;
}

void nft_close(struct nft **n)
{
	if (!n || !*n)
		return;
	mnl_socket_close((*n)->nl);
	free(*n);
	*n = NULL;
}

int nft_batch_new(struct nft *n, struct nft_batch **out)
{
	struct nft_batch *b;

	*out = NULL;
	b = calloc(1, sizeof(*b));
	if (!b)
		return -ENOMEM;
	b->nft = n;
	b->nb = nftnl_batch_alloc(BATCH_PAGE_SIZE, NFT_NLMSG_MAXSIZE);
	if (!b->nb) {
		free(b);
		return -ENOMEM;
	}
	b->begin = nftnl_batch_begin(nftnl_batch_buffer(b->nb), 0);
	nftnl_batch_update(b->nb);
	*out = b;
	return 0;
}

void nft_batch_free(struct nft_batch *b)
{
	if (!b)
		return;
	nftnl_batch_free(b->nb);
	free(b->msgs);
	free(b);
}

size_t nft_batch_count(const struct nft_batch *b)
{
	return b->n;
}

struct nlmsghdr *nft_batch_msg(struct nft_batch *b, uint16_t type, uint16_t family,
	uint16_t flags, const char *what)
{
	struct batch_msg *m;
	struct nlmsghdr *nlh;

	/* The previous message's payload is complete now: account for it before starting ours. */
	if (b->n && nftnl_batch_update(b->nb) < 0)
		return NULL;
	if (!(m = array_reserve(b->msgs, &b->cap, b->n + 1, sizeof(*m), 16)))
		return NULL;
	b->msgs = m;
	/*
	 * The kernel answers a commit that fails as a whole (after every message was taken) on
	 * the begin message, and digest_acks takes the acks from the one before the first
	 * message's. A dump between nft_batch_new and here (ruleset_extra's) would have put the
	 * begin's number out of that reach, and the failure would have read as success.
	 */
	if (!b->n)
		b->begin->nlmsg_seq = b->nft->seq++;
	b->msgs[b->n].seq = b->nft->seq;
	snprintf(b->msgs[b->n].what, sizeof(b->msgs[b->n].what), "%s", what);
	b->n++;
	nlh = nftnl_nlmsg_build_hdr(nftnl_batch_buffer(b->nb), type, family, flags | NLM_F_ACK,
		b->nft->seq++);
	return nlh;
}

static const char *msg_what(const struct nft_batch *b, uint32_t seq)
{
	for (size_t i = 0; i < b->n; i++)
		if (b->msgs[i].seq == seq)
			return b->msgs[i].what;
	return "batch";
}

/* Records the first failure with the kernel's own explanation when it gave one. */
static void note_error(const struct nft_batch *b, struct nlmsghdr *nlh, int *first,
	char err[static NFT_ERRLEN])
{
	const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
	struct nlattr *attr;
	const char *text = NULL;
	size_t off = sizeof(*e);

	if (*first)
		return;
	*first = e->error;
	/* Without NLM_F_CAPPED the kernel echoes the offending message before the TLVs. */
	if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
		off += e->msg.nlmsg_len - sizeof(struct nlmsghdr);
	if (nlh->nlmsg_flags & NLM_F_ACK_TLVS) {
		mnl_attr_for_each(attr, nlh, off) {
			if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG &&
				mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0)
				text = mnl_attr_get_str(attr);
		}
	}
	snprintf(err, NFT_ERRLEN, "%s: %s", msg_what(b, e->msg.nlmsg_seq),
		text ? text : strerror(-e->error));
}

static int send_batch(struct nft_batch *b)
{
	struct sockaddr_nl snl = { .nl_family = AF_NETLINK };
	struct msghdr msg = { 0 };
	struct iovec *iov;
	size_t total = 0;
	int iovlen, ret = 0;

	iovlen = nftnl_batch_iovec_len(b->nb);
	iov = calloc((size_t)iovlen, sizeof(*iov));
	if (!iov)
		return -ENOMEM;
	nftnl_batch_iovec(b->nb, iov, (uint32_t)iovlen);
	for (int i = 0; i < iovlen; i++)
		total += iov[i].iov_len;
	/*
	 * The kernel takes a batch in one datagram, refused (EMSGSIZE) when it exceeds the send
	 * buffer; a restore of some 400,000 elements does. Raised to fit it, as nft does.
	 */
	if (total + SNDBUF_MARGIN > b->nft->sndbuf) {
		int want = total > INT_MAX / 2 - SNDBUF_MARGIN ? INT_MAX / 2 :
			(int)(total + SNDBUF_MARGIN);

		if (setsockopt(mnl_socket_get_fd(b->nft->nl), SOL_SOCKET, SO_SNDBUFFORCE, &want,
			sizeof(want)) == 0)
			b->nft->sndbuf = socket_sndbuf(b->nft->nl);
	}
	msg.msg_name = &snl;
	msg.msg_namelen = sizeof(snl);
	msg.msg_iov = iov;
	msg.msg_iovlen = (size_t)iovlen;
	if (sendmsg(mnl_socket_get_fd(b->nft->nl), &msg, 0) < 0)
		ret = -errno;
	free(iov);
	return ret;
}

/*
 * One read of n's socket, waiting at most ms for it: a wait, not a blocking read, because the
 * kernel drops, without a word, what it would send a socket whose queue a batch's acks overran
 * (congested until a read empties it), and a request whose answer was dropped so must fail,
 * not hold the loop for good. The length read, -ETIMEDOUT, or -errno.
 */
static ssize_t recv_within(struct nft *n, void *buf, size_t len, int ms)
{
	struct pollfd pfd = { .fd = mnl_socket_get_fd(n->nl), .events = POLLIN };
	ssize_t got;
	int r;

	while ((r = poll(&pfd, 1, ms)) < 0 && errno == EINTR)
		;
	if (r <= 0)
		return r ? -errno : -ETIMEDOUT;
	got = mnl_socket_recvfrom(n->nl, buf, len);
	return got < 0 ? -errno : got;
}

/*
 * Reads until every message has been acknowledged (ok or error), the kernel has answered for
 * the whole batch, or the deadline passes.
 */
static int digest_acks(struct nft_batch *b, char err[static NFT_ERRLEN])
{
	char buf[MNL_SOCKET_BUFFER_SIZE * 4];
	const uint32_t first = b->begin->nlmsg_seq;
	size_t acked = 0;
	int failed = 0;
	bool whole = false;

	while (acked < b->n) {
		struct nlmsghdr *nlh; /* mutable only because mnl_attr_for_each wants it so */
		ssize_t len = recv_within(b->nft, buf, sizeof(buf), whole ? 0 : ACK_TIMEOUT_MS);
		int rest;

		/*
		 * The kernel answers a batch within the send, so once it has answered for the whole
		 * batch (refused before its messages, as without CAP_NET_ADMIN, or a commit that
		 * failed) whatever else it had to say is already queued: its verdict is known.
		 */
		if (len == -ETIMEDOUT && whole)
			return failed;
		if (len == -ETIMEDOUT)
			snprintf(err, NFT_ERRLEN, "no answer from the kernel for %zu of %zu changes",
				b->n - acked, b->n);
		else if (len < 0)
			snprintf(err, NFT_ERRLEN, "reading kernel acks: %s", strerror((int)-len));
		if (len < 0) {
			b->unanswered = true;
			return (int)len;
		}
		rest = (int)len;
		for (nlh = (void *)buf; mnl_nlmsg_ok(nlh, rest); nlh = mnl_nlmsg_next(nlh, &rest)) {
			/*
			 * Only this batch's acks count (its begin and end included, which the kernel
			 * answers when it refuses the whole batch): one that an earlier batch left
			 * unread, having given up on a timeout or a bad read, must not stand in for
			 * one of ours.
			 */
			if (nlh->nlmsg_type != NLMSG_ERROR || nlh->nlmsg_pid != b->nft->portid ||
				nlh->nlmsg_seq - first > b->end_seq - first)
				continue;
			if (((const struct nlmsgerr *)mnl_nlmsg_get_payload(nlh))->error) {
				note_error(b, nlh, &failed, err);
				whole |= nlh->nlmsg_seq == first || nlh->nlmsg_seq == b->end_seq;
			}
			acked++;
		}
	}
	return failed;
}

int nft_batch_commit(struct nft_batch *b, char err[static NFT_ERRLEN])
{
	int ret;

	err[0] = '\0';
	b->unanswered = false;
	if (!b->n)
		return 0;
	if (nftnl_batch_update(b->nb) < 0)
		return -ENOMEM;
	b->end_seq = b->nft->seq++;
	nftnl_batch_end(nftnl_batch_buffer(b->nb), b->end_seq);
	if (nftnl_batch_update(b->nb) < 0)
		return -ENOMEM;
	ret = send_batch(b);
	if (ret < 0) {
		snprintf(err, NFT_ERRLEN, "sending %zu changes: %s", b->n, strerror(-ret));
		return ret;
	}
#ifdef JITD_TEST_HOOKS
	/*
	 * $JITD_TEST_ACKS_LOST_FILE holding 1: the next commit's acks are not read, as when they
	 * are lost; the kernel's answer stays in the socket for what reads it next.
	 */
	if (testhook_number("JITD_TEST_ACKS_LOST_FILE", true, 0) > 0) {
		snprintf(err, NFT_ERRLEN, "test hook: the kernel's acks were not read");
		b->unanswered = true;
		return -ETIMEDOUT;
	}
#endif
	return digest_acks(b, err);
}

bool nft_batch_unanswered(const struct nft_batch *b)
{
	return b->unanswered;
}

/*
 * Whether a datagram holds a message of this conversation (seq); with end, its last one:
 * NLMSG_DONE or NLMSG_ERROR.
 */
static bool has_seq(const char *buf, ssize_t len, uint32_t seq, bool end)
{
	const struct nlmsghdr *nlh;
	int rest = (int)len;

	for (nlh = (const void *)buf; mnl_nlmsg_ok(nlh, rest); nlh = mnl_nlmsg_next(nlh, &rest))
		if (nlh->nlmsg_seq == seq && (!end || nlh->nlmsg_type == NLMSG_DONE ||
					      nlh->nlmsg_type == NLMSG_ERROR))
			return true;
	return false;
}

/*
 * Runs one dump request and feeds every reply to cb; *intr: NLM_F_DUMP_INTR, the ruleset
 * changed while the kernel was answering.
 */
static int dump_once(struct nft *n, struct nlmsghdr *req, mnl_cb_t cb, void *arg, bool *intr)
{
	char buf[DUMP_BUFSIZE];
	ssize_t len;
	int ret;

	*intr = false;
	req->nlmsg_seq = n->seq++;
	if (mnl_socket_sendto(n->nl, req, req->nlmsg_len) < 0)
		return -errno;
	do {
		if ((len = recv_within(n, buf, sizeof(buf), ACK_TIMEOUT_MS)) < 0)
			return (int)len;
		/*
		 * Acks a commit gave up on (nft_batch_unanswered) may come before the dump's
		 * answer: another conversation's, passed over rather than taken for a failure.
		 */
		if (!has_seq(buf, len, req->nlmsg_seq, false)) {
			ret = 1;
			continue;
		}
		/* The kernel's error sets errno; a failing callback (memory, a parse) does not. */
		ret = nldump_run(buf, (size_t)len, req->nlmsg_seq, n->portid, cb, arg, intr);
	} while (ret > 0);
	if (!ret)
		return 0;
	ret = errno ? -errno : -EPROTO;
	/*
	 * A callback that failed part-way leaves the rest of a dump in the socket, where the
	 * kernel answers the next dump request with EBUSY: it is read to its end and let go.
	 * Only a dump is sure to end so; a lone reply's may have nothing after it.
	 */
	if (req->nlmsg_flags & NLM_F_DUMP)
		while (!has_seq(buf, len, req->nlmsg_seq, true))
			if ((len = recv_within(n, buf, sizeof(buf), ACK_TIMEOUT_MS)) < 0)
				break;
	return ret;
}

/* The same, an interrupted result retried rather than trusted. */
static int dump(struct nft *n, struct nlmsghdr *req, mnl_cb_t cb, void *arg,
	int (*reset)(void *))
{
	for (int attempt = 0; attempt < NFT_DUMP_TRIES; attempt++) {
		bool intr;
		int ret = dump_once(n, req, cb, arg, &intr);

		if (ret || !intr)
			return ret;
		if (reset && (ret = reset(arg)))
			return ret;
	}
	return -EINTR;
}

static int table_cb(const struct nlmsghdr *nlh __attribute__((unused)), void *arg)
{
	*(bool *)arg = true;
	return MNL_CB_OK;
}

int nft_table_exists(struct nft *n, const char *table, bool *exists)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nftnl_table *t = nftnl_table_alloc();
	struct nlmsghdr *nlh;
	int ret;

	*exists = false;
	if (!t)
		return -ENOMEM;
	nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETTABLE, NFPROTO_INET, NLM_F_ACK, 0);
	nftnl_table_set_str(t, NFTNL_TABLE_NAME, table);
	nftnl_table_nlmsg_build_payload(nlh, t);
	nftnl_table_free(t);
	ret = dump(n, nlh, table_cb, exists, NULL);
	if (ret == -ENOENT)
		ret = 0;
	/* A reply whose ack never came says nothing a caller may act on. */
	else if (ret)
		*exists = false;
	return ret;
}

/* A generation message's id (a GETGEN reply, a NEWGEN event): 0, or -EINVAL without one. */
static int gen_of(const struct nlmsghdr *nlh, uint32_t *gen)
{
	struct nftnl_gen *g = nftnl_gen_alloc();
	int ret = -EINVAL;

	if (g && nftnl_gen_nlmsg_parse(nlh, g) >= 0 && nftnl_gen_is_set(g, NFTNL_GEN_ID)) {
		*gen = nftnl_gen_get_u32(g, NFTNL_GEN_ID);
		ret = 0;
	}
	nftnl_gen_free(g);
	return ret;
}

static int gen_cb(const struct nlmsghdr *nlh, void *arg)
{
	return gen_of(nlh, arg) ? MNL_CB_ERROR : MNL_CB_OK;
}

int nft_gen_id(struct nft *n, uint32_t *gen)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETGEN, AF_UNSPEC, NLM_F_ACK, 0);

	return dump(n, nlh, gen_cb, gen, NULL);
}

static int set_elems_cb(const struct nlmsghdr *nlh, void *arg)
{
	struct nftnl_set **s = arg;

	return nftnl_set_elems_nlmsg_parse(nlh, *s) < 0 ? MNL_CB_ERROR : MNL_CB_OK;
}

static struct nftnl_set *set_named(const char *table, const char *set)
{
	struct nftnl_set *s = nftnl_set_alloc();

	if (s) {
		nftnl_set_set_str(s, NFTNL_SET_TABLE, table);
		nftnl_set_set_str(s, NFTNL_SET_NAME, set);
	}
	return s;
}

/*
 * A retried dump must not append to the interrupted one's elements: start from a fresh set.
 * 0 or -ENOMEM, which ends the dump (kept, the old set would read each element twice).
 */
static int set_reset(void *arg)
{
	struct nftnl_set **s = arg;
	struct nftnl_set *fresh = set_named(nftnl_set_get_str(*s, NFTNL_SET_TABLE),
		nftnl_set_get_str(*s, NFTNL_SET_NAME));

	if (!fresh)
		return -ENOMEM;
	nftnl_set_free(*s);
	*s = fresh;
	return 0;
}

int nft_set_dump(struct nft *n, const char *table, const char *set, struct nftnl_set **out)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nftnl_set *s = set_named(table, set);
	struct nlmsghdr *nlh;
	int ret;

	*out = NULL;
	if (!s)
		return -ENOMEM;
	nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, 0);
	nftnl_set_elems_nlmsg_build_payload(nlh, s);
	ret = dump(n, nlh, set_elems_cb, &s, set_reset);
	if (ret < 0) {
		nftnl_set_free(s);
		return ret;
	}
	*out = s;
	return 0;
}

struct elems_each {
	int (*fn)(struct nftnl_set *part, void *arg);
	void *arg;
	int err;	/* fn's, or parsing's: the dump ends there (dump_once reads the rest) */
};

static int elems_part_cb(const struct nlmsghdr *nlh, void *arg)
{
	struct elems_each *d = arg;
	struct nftnl_set *part;

	if (!(part = nftnl_set_alloc()))
		d->err = -ENOMEM;
	else if (nftnl_set_elems_nlmsg_parse(nlh, part) < 0)
		d->err = -EINVAL;
	else
		d->err = d->fn(part, d->arg);
	nftnl_set_free(part);
	return d->err ? MNL_CB_ERROR : MNL_CB_OK;
}

int nft_set_elems_each(struct nft *n, const char *table, const char *set,
	int (*fn)(struct nftnl_set *part, void *arg), void *arg)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct elems_each d = { .fn = fn, .arg = arg };
	struct nftnl_set *s = set_named(table, set);
	struct nlmsghdr *nlh;
	bool intr;
	int ret;

	if (!s)
		return -ENOMEM;
	nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETSETELEM, NFPROTO_INET, NLM_F_DUMP, 0);
	nftnl_set_elems_nlmsg_build_payload(nlh, s);
	nftnl_set_free(s);
	ret = dump_once(n, nlh, elems_part_cb, &d, &intr);
	if (d.err)
		return d.err;
	return ret ? ret : intr ? -EINTR : 0;
}

/* What the kernel holds of one table: its attributes, sets, chains and rules (nft_table_view). */
struct view_dump {
	struct nft_table_view *v;
	const char *table;
	int what;	/* NFT_MSG_GET* being dumped */
};

/*
 * Whether an object the dump returned is table's. The kernel filters set and rule dumps by the
 * table the request names, but answers a chain dump with every table of the family: another
 * inet table's chains (Debian's own "inet filter") must not read as jitd's.
 */
static bool of_table(const struct view_dump *d, const char *table)
{
	return table && !strcmp(table, d->table);
}

static int view_cb(const struct nlmsghdr *nlh, void *arg)
{
	struct view_dump *d = arg;
	struct nft_table_view *v = d->v;

	switch (d->what) {
	case NFT_MSG_GETTABLE:
		if (!v->table && !(v->table = nftnl_table_alloc()))
			return MNL_CB_ERROR;
		return nftnl_table_nlmsg_parse(nlh, v->table) < 0 ? MNL_CB_ERROR : MNL_CB_OK;
	case NFT_MSG_GETSET: {
		struct nftnl_set *s = v->sets ? nftnl_set_alloc() : NULL; /* (view_reset's OOM) */

		if (!s || nftnl_set_nlmsg_parse(nlh, s) < 0) {
			nftnl_set_free(s);
			return MNL_CB_ERROR;
		}
		if (of_table(d, nftnl_set_get_str(s, NFTNL_SET_TABLE)))
			nftnl_set_list_add_tail(s, v->sets);
		else
			nftnl_set_free(s);
		return MNL_CB_OK;
	}
	case NFT_MSG_GETCHAIN: {
		struct nftnl_chain *c = v->chains ? nftnl_chain_alloc() : NULL;

		if (!c || nftnl_chain_nlmsg_parse(nlh, c) < 0) {
			nftnl_chain_free(c);
			return MNL_CB_ERROR;
		}
		if (of_table(d, nftnl_chain_get_str(c, NFTNL_CHAIN_TABLE)))
			nftnl_chain_list_add_tail(c, v->chains);
		else
			nftnl_chain_free(c);
		return MNL_CB_OK;
	}
	default: {
		struct nftnl_rule *r = v->rules ? nftnl_rule_alloc() : NULL;

		if (!r || nftnl_rule_nlmsg_parse(nlh, r) < 0) {
			nftnl_rule_free(r);
			return MNL_CB_ERROR;
		}
		if (of_table(d, nftnl_rule_get_str(r, NFTNL_RULE_TABLE)))
			nftnl_rule_list_add_tail(r, v->rules);
		else
			nftnl_rule_free(r);
		return MNL_CB_OK;
	}
	}
}

/* A retried dump starts over: drop what the interrupted one collected. 0 or -ENOMEM. */
static int view_reset(void *arg)
{
	struct view_dump *d = arg;
	struct nft_table_view *v = d->v;

	switch (d->what) {
	case NFT_MSG_GETTABLE:
		if (v->table)
			nftnl_table_free(v->table);
		v->table = NULL;
		return 0;
	case NFT_MSG_GETSET:
		nftnl_set_list_free(v->sets);
		v->sets = nftnl_set_list_alloc();
		return v->sets ? 0 : -ENOMEM;
	case NFT_MSG_GETCHAIN:
		nftnl_chain_list_free(v->chains);
		v->chains = nftnl_chain_list_alloc();
		return v->chains ? 0 : -ENOMEM;
	default:
		nftnl_rule_list_free(v->rules);
		v->rules = nftnl_rule_list_alloc();
		return v->rules ? 0 : -ENOMEM;
	}
}

void nft_table_view_free(struct nft_table_view *v)
{
	if (v->table)
		nftnl_table_free(v->table);
	if (v->sets)
		nftnl_set_list_free(v->sets);
	if (v->chains)
		nftnl_chain_list_free(v->chains);
	if (v->rules)
		nftnl_rule_list_free(v->rules);
	memset(v, 0, sizeof(*v));
}

int nft_table_view(struct nft *n, const char *table, struct nft_table_view *v)
{
	static const int what[] = { NFT_MSG_GETTABLE, NFT_MSG_GETSET, NFT_MSG_GETCHAIN,
		NFT_MSG_GETRULE };
	char buf[MNL_SOCKET_BUFFER_SIZE];
	int ret = 0;

	memset(v, 0, sizeof(*v));
	v->sets = nftnl_set_list_alloc();
	v->chains = nftnl_chain_list_alloc();
	v->rules = nftnl_rule_list_alloc();
	if (!v->sets || !v->chains || !v->rules) {
		ret = -ENOMEM;
		goto out;
	}
	for (size_t i = 0; ret == 0 && i < sizeof(what) / sizeof(what[0]); i++) {
		struct view_dump d = { .v = v, .table = table, .what = what[i] };
		uint16_t flags = what[i] == NFT_MSG_GETTABLE ? NLM_F_ACK : NLM_F_DUMP;
		struct nlmsghdr *nlh = nftnl_nlmsg_build_hdr(buf, (uint16_t)what[i], NFPROTO_INET,
			flags, 0);

		/* Every request names the table; view_cb drops what the kernel adds (chains). */
		mnl_attr_put_strz(nlh, what[i] == NFT_MSG_GETTABLE ? NFTA_TABLE_NAME :
			what[i] == NFT_MSG_GETSET ? NFTA_SET_TABLE :
			what[i] == NFT_MSG_GETCHAIN ? NFTA_CHAIN_TABLE : NFTA_RULE_TABLE, table);
		ret = dump(n, nlh, view_cb, &d, view_reset);
		if (ret == -ENOENT && what[i] == NFT_MSG_GETTABLE) {
			ret = 0; /* no table: nothing else to read */
			break;
		}
	}
out:
	if (ret)
		nft_table_view_free(v);
	return ret;
}

static int obj_cb(const struct nlmsghdr *nlh, void *arg)
{
	return nftnl_obj_nlmsg_parse(nlh, arg) < 0 ? MNL_CB_ERROR : MNL_CB_OK;
}

int nft_counter_get(struct nft *n, const char *table, const char *name, uint64_t *packets,
	uint64_t *bytes)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct nftnl_obj *req = nftnl_obj_alloc(), *reply = nftnl_obj_alloc();
	struct nlmsghdr *nlh;
	int ret = -ENOMEM;

	*packets = *bytes = 0;
	if (!req || !reply)
		goto out;
	nlh = nftnl_nlmsg_build_hdr(buf, NFT_MSG_GETOBJ, NFPROTO_INET, NLM_F_ACK, 0);
	nftnl_obj_set_str(req, NFTNL_OBJ_TABLE, table);
	nftnl_obj_set_str(req, NFTNL_OBJ_NAME, name);
	nftnl_obj_set_u32(req, NFTNL_OBJ_TYPE, NFT_OBJECT_COUNTER);
	nftnl_obj_nlmsg_build_payload(nlh, req);
	/* A separate reply object: libnftnl's parser overwrites strings without freeing them. */
	ret = dump(n, nlh, obj_cb, reply, NULL);
	if (ret == 0) {
		*packets = nftnl_obj_get_u64(reply, NFTNL_OBJ_CTR_PKTS);
		*bytes = nftnl_obj_get_u64(reply, NFTNL_OBJ_CTR_BYTES);
	}
out:
	nftnl_obj_free(reply);
	nftnl_obj_free(req);
	return ret;
}

/* --- the event monitor ------------------------------------------------------------------------ */

#ifdef JITD_TEST_HOOKS
/*
 * Test builds only: while $JITD_TEST_DROP_EVENTS_FILE exists, events are read and thrown away
 * unseen, as if the kernel had failed to deliver them without saying so (no ENOBUFS): what
 * only the periodic check can then find.
 */
static bool test_hook_drop_events(void)
{
	return testhook_exists("JITD_TEST_DROP_EVENTS_FILE");
}

/* The event socket's buffer from $JITD_TEST_MONITOR_RCVBUF_FILE: small, it overruns (ENOBUFS). */
static int test_hook_monitor_rcvbuf(void)
{
	return (int)testhook_number("JITD_TEST_MONITOR_RCVBUF_FILE", false, SOCK_BUFSIZE);
}
#else
static bool test_hook_drop_events(void)
{
	return false;
}

static int test_hook_monitor_rcvbuf(void)
{
	return SOCK_BUFSIZE;
}
#endif

struct nft_monitor {
	struct mnl_socket *nl;
	char *buf;
	/*
	 * The ruleset's generation as the events have told it: every transaction in the namespace
	 * ends with NFT_MSG_NEWGEN and its id, one more than the last. gap: since nft_monitor_mark,
	 * events were lost or a generation was not seen, so what happened is unknown.
	 */
	uint32_t gen;
	bool gen_known, gap;
};

int nft_monitor_open(struct nft_monitor **out)
{
	struct nft_monitor *m;
	int ret;

	*out = NULL;
	if (!(m = calloc(1, sizeof(*m))) || !(m->buf = malloc(NFT_NLMSG_MAXSIZE))) {
		ret = -ENOMEM;
		goto fail;
	}
	m->nl = mnl_socket_open2(NETLINK_NETFILTER, SOCK_CLOEXEC | SOCK_NONBLOCK);
	if (!m->nl || mnl_socket_bind(m->nl, 1u << (NFNLGRP_NFTABLES - 1), MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		goto fail;
	}
	/* A `nft flush ruleset` on a big ruleset is a burst; an overrun still only means resync. */
	set_bufsize(m->nl, SO_RCVBUFFORCE, SO_RCVBUF, test_hook_monitor_rcvbuf());
	*out = m;
	return 0;
fail:
	nft_monitor_close(&m);
	return ret;
}

void nft_monitor_close(struct nft_monitor **m)
{
	if (!*m)
		return;
	if ((*m)->nl)
		mnl_socket_close((*m)->nl);
	free((*m)->buf);
	free(*m);
	*m = NULL;
}

int nft_monitor_fd(const struct nft_monitor *m)
{
	return mnl_socket_get_fd(m->nl);
}

uint32_t nft_portid(const struct nft *n)
{
	return n->portid;
}

struct event_attrs {
	const char *table;	/* attribute 1 of every object message: NFTA_*_TABLE / _NAME */
	const char *set;	/* attribute 2 of a set element message: NFTA_SET_ELEM_LIST_SET */
};

static int event_attr_cb(const struct nlattr *a, void *arg)
{
	struct event_attrs *ea = arg;
	uint16_t type = mnl_attr_get_type(a);

	if ((type == 1 || type == 2) && mnl_attr_validate(a, MNL_TYPE_NUL_STRING) >= 0)
		*(type == 1 ? &ea->table : &ea->set) = mnl_attr_get_str(a);
	return MNL_CB_OK;
}

static bool in_list(const char *s, const char *const *list)
{
	for (; s && list && *list; list++)
		if (!strcmp(s, *list))
			return true;
	return false;
}

/* Follows the generation ids; an older or repeated one (read before a mark) changes nothing. */
static void note_gen(struct nft_monitor *m, const struct nlmsghdr *nlh)
{
	uint32_t gen;

	if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES ||
		NFNL_MSG_TYPE(nlh->nlmsg_type) != NFT_MSG_NEWGEN)
		return;
	if (gen_of(nlh, &gen)) {
		m->gap = true;
		return;
	}
	if (m->gen_known && (int32_t)(gen - m->gen) <= 0)
		return;
	if (!m->gen_known || gen != m->gen + 1)
		m->gap = true;
	m->gen = gen;
	m->gen_known = true;
}

bool nft_monitor_current(const struct nft_monitor *m, uint32_t gen)
{
	return m->gen_known && !m->gap && m->gen == gen;
}

void nft_monitor_mark(struct nft_monitor *m, uint32_t gen)
{
	if (!m->gen_known || (int32_t)(gen - m->gen) > 0)
		m->gen = gen;
	m->gen_known = true;
	m->gap = false;
}

/* What an event did to table: 0, NFT_DRIFT_ELEMS or NFT_DRIFT_STRUCTURE. */
static unsigned event_drift(const struct nlmsghdr *nlh, const char *table,
	const char *const *elem_sets, uint32_t own_portid)
{
	uint16_t type = NFNL_MSG_TYPE(nlh->nlmsg_type);
	struct event_attrs ea = { 0 };
	const struct nfgenmsg *nfg;

	if (NFNL_SUBSYS_ID(nlh->nlmsg_type) != NFNL_SUBSYS_NFTABLES || type == NFT_MSG_NEWGEN)
		return 0;
	/* The kernel stamps each event with the port of the socket whose transaction caused it. */
	if (nlh->nlmsg_pid == own_portid)
		return 0;
	if (nlh->nlmsg_len < NLMSG_SPACE(sizeof(*nfg)))
		return 0;
	nfg = mnl_nlmsg_get_payload(nlh);
	if (nfg->nfgen_family != NFPROTO_INET)
		return 0;
	(void)mnl_attr_parse(nlh, sizeof(*nfg), event_attr_cb, &ea);
	if (!ea.table || strcmp(ea.table, table))
		return 0;
	if ((type == NFT_MSG_NEWSETELEM || type == NFT_MSG_DELSETELEM) && in_list(ea.set, elem_sets))
		return NFT_DRIFT_ELEMS;
	return NFT_DRIFT_STRUCTURE;
}

/*
 * After ENOBUFS the kernel drops every event for this socket until its queue is empty, telling
 * no one: a change made after the caller's comparison has read the kernel would go unseen
 * until the periodic check. What is queued is read and thrown away (the caller compares
 * everything anyway). Bounded: while the socket is congested its queue only shrinks, and its
 * buffer (SOCK_BUFSIZE) holds fewer skbs than this.
 */
#define DRAIN_ROUNDS 65536

static void drain(struct nft_monitor *m)
{
	for (int rounds = 0; rounds < DRAIN_ROUNDS; rounds++)
		if (mnl_socket_recvfrom(m->nl, m->buf, NFT_NLMSG_MAXSIZE) < 0 &&
			errno != EINTR && errno != ENOBUFS)
			return;
}

int nft_monitor_read(struct nft_monitor *m, const char *table, const char *const *elem_sets,
	uint32_t own_portid, unsigned *drift)
{
	for (int rounds = 0; rounds < 1024; rounds++) {
		ssize_t len = mnl_socket_recvfrom(m->nl, m->buf, NFT_NLMSG_MAXSIZE);
		const struct nlmsghdr *nlh;
		int left;

		if (len < 0) {
			if (errno == EAGAIN || errno == EWOULDBLOCK)
				return 0;
			if (errno == EINTR)
				continue;
			/*
			 * ENOBUFS: events were lost, so anything may have happened. So with any
			 * other failure (ENOSPC: a message cut short), which loses what it held.
			 */
			int ret = -errno;

			*drift |= NFT_DRIFT_STRUCTURE;
			m->gap = true;
			if (ret == -ENOBUFS)
				drain(m);
			return ret;
		}
		if (test_hook_drop_events())
			continue;
		left = (int)len;
		for (nlh = (const struct nlmsghdr *)m->buf; mnl_nlmsg_ok(nlh, left);
			nlh = mnl_nlmsg_next(nlh, &left)) {
			note_gen(m, nlh);
			*drift |= event_drift(nlh, table, elem_sets, own_portid);
		}
	}
	return 0;
}
