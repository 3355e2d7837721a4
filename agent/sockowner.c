#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <libmnl/libmnl.h>
#include <linux/inet_diag.h>
#include <linux/sock_diag.h>
#include <linux/unix_diag.h>
#include <netinet/in.h>
#include <netinet/tcp.h>

#include "agent/sockowner.h"

struct found {
	struct inet_diag_sockid want;
	bool seen;
	uid_t uid;
	uint32_t inode;
	uint8_t state;
};

static int on_reply(const struct nlmsghdr *nlh, void *data)
{
	struct found *f = data;
	const struct inet_diag_msg *m = mnl_nlmsg_get_payload(nlh);

	if (nlh->nlmsg_type != SOCK_DIAG_BY_FAMILY || mnl_nlmsg_get_payload_len(nlh) < sizeof(*m) ||
		m->id.idiag_sport != f->want.idiag_sport ||
		m->id.idiag_dport != f->want.idiag_dport) {
		errno = EPROTO;
		return MNL_CB_ERROR;
	}
	f->seen = true;
	f->uid = m->idiag_uid;
	f->inode = m->idiag_inode;
	f->state = m->idiag_state;
	return MNL_CB_OK;
}

/*
 * ss has v4-mapped IPv6 addresses (a dual-stack listener's IPv4 clients) as IPv4: the kernel
 * looks those up in its IPv4 tables either way. Else *ss as it is; false for no address.
 */
static bool put_addr(const struct sockaddr_storage *ss, int *family, __be32 addr[4],
	__be16 *port)
{
	const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
	const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;

	if (ss->ss_family == AF_INET) {
		*family = AF_INET;
		memcpy(addr, &s4->sin_addr, sizeof(s4->sin_addr));
		*port = s4->sin_port;
		return true;
	}
	if (ss->ss_family != AF_INET6)
		return false;
	*port = s6->sin6_port;
	if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
		*family = AF_INET;
		memcpy(addr, &s6->sin6_addr.s6_addr[12], 4);
	} else {
		*family = AF_INET6;
		memcpy(addr, &s6->sin6_addr, sizeof(s6->sin6_addr));
	}
	return true;
}

/* Opens a NETLINK_SOCK_DIAG socket (*nl, the caller's to close) and sends it nlh. 0 or -errno. */
static int diag_ask(const struct nlmsghdr *nlh, struct mnl_socket **nl, unsigned *portid)
{
	if (!(*nl = mnl_socket_open2(NETLINK_SOCK_DIAG, SOCK_CLOEXEC)) ||
		mnl_socket_bind(*nl, 0, MNL_SOCKET_AUTOPID) < 0)
		return -errno;
	*portid = mnl_socket_get_portid(*nl);
	return mnl_socket_sendto(*nl, nlh, nlh->nlmsg_len) < 0 ? -errno : 0;
}

int sockowner_peer_uid(int fd, uid_t *uid)
{
	struct sockaddr_storage ours, theirs;
	socklen_t lo = sizeof(ours), lt = sizeof(theirs);
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct mnl_socket *nl = NULL;
	struct inet_diag_req_v2 *req;
	struct nlmsghdr *nlh;
	struct found f = { 0 };
	int fam_ours, fam_theirs, ret;
	unsigned seq, portid = 0;
	ssize_t n;

	if (getsockname(fd, (struct sockaddr *)&ours, &lo) < 0 ||
		getpeername(fd, (struct sockaddr *)&theirs, &lt) < 0)
		return -errno;
	memset(buf, 0, sizeof(buf));
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
	nlh->nlmsg_flags = NLM_F_REQUEST;
	nlh->nlmsg_seq = seq = (unsigned)time(NULL);
	req = mnl_nlmsg_put_extra_header(nlh, sizeof(*req));
	/* The socket at the other end: its own address is our peer's, its peer is us. */
	if (!put_addr(&theirs, &fam_theirs, req->id.idiag_src, &req->id.idiag_sport) ||
		!put_addr(&ours, &fam_ours, req->id.idiag_dst, &req->id.idiag_dport) ||
		fam_ours != fam_theirs)
		return -ENOENT;
	req->sdiag_family = (uint8_t)fam_theirs;
	req->sdiag_protocol = IPPROTO_TCP;
	req->idiag_states = ~0u;
	req->id.idiag_cookie[0] = req->id.idiag_cookie[1] = INET_DIAG_NOCOOKIE;
	f.want = req->id;

	if ((ret = diag_ask(nlh, &nl, &portid)))
		goto out;
	/* One message: the socket's, or an error (ENOENT: none has that address and port). */
	n = mnl_socket_recvfrom(nl, buf, sizeof(buf));
	if (n < 0 || mnl_cb_run(buf, (size_t)n, seq, portid, on_reply, &f) < 0) {
		ret = -errno;
		goto out;
	}
	/*
	 * The kernel reports uid 0 for what no process holds any more: a TIME_WAIT entry (also one
	 * whose state says FIN_WAIT2: a closed socket waiting for its peer's FIN), a half-open
	 * connection, a socket closed and orphaned. Only a socket with an inode is someone's. The
	 * client of a request we are answering is connected, or has shut down its side.
	 */
	if (!f.seen || !f.inode || (f.state != TCP_ESTABLISHED && f.state != TCP_FIN_WAIT1 &&
		f.state != TCP_FIN_WAIT2)) {
		ret = f.seen ? -ENOENT : -EPROTO;
		goto out;
	}
	*uid = f.uid;
	ret = 0;
out:
	if (nl)
		mnl_socket_close(nl);
	return ret;
}

struct named {
	const char *name;	/* abstract: matched after the leading NUL */
	size_t len;
	bool seen, has_uid;
	uid_t uid;
};

static int on_unix(const struct nlmsghdr *nlh, void *data)
{
	const struct unix_diag_msg *m = mnl_nlmsg_get_payload(nlh);
	struct named *f = data;
	struct nlattr *a;
	const char *name = NULL;
	size_t len = 0;
	bool has_uid = false;
	uint32_t uid = 0;

	if (nlh->nlmsg_type != SOCK_DIAG_BY_FAMILY || mnl_nlmsg_get_payload_len(nlh) < sizeof(*m)) {
		errno = EPROTO;
		return MNL_CB_ERROR;
	}
	mnl_attr_for_each(a, nlh, sizeof(*m)) {
		if (mnl_attr_get_type(a) == UNIX_DIAG_NAME) {
			name = mnl_attr_get_payload(a);
			len = mnl_attr_get_payload_len(a);
		} else if (mnl_attr_get_type(a) == UNIX_DIAG_UID &&
			mnl_attr_get_payload_len(a) >= sizeof(uid)) {
			memcpy(&uid, mnl_attr_get_payload(a), sizeof(uid));
			has_uid = true;
		}
	}
	/*
	 * Names are the type's: a datagram or seqpacket socket may bear the same one. Only one
	 * stream socket listens or is bound unconnected on a name; should a second ever show,
	 * the first stands.
	 */
	if (m->udiag_type == SOCK_STREAM && !f->seen && name && len == f->len + 1 && !name[0] &&
		!memcmp(name + 1, f->name, f->len)) {
		f->seen = true;
		f->has_uid = has_uid;
		f->uid = (uid_t)uid;
	}
	return MNL_CB_OK;
}

int sockowner_abstract_uid(const char *name, uid_t *uid)
{
	char buf[MNL_SOCKET_BUFFER_SIZE];
	struct named f = { .name = name, .len = strlen(name) };
	struct mnl_socket *nl = NULL;
	struct unix_diag_req *req;
	struct nlmsghdr *nlh;
	unsigned seq, portid = 0;
	int ret;
	ssize_t n;

	memset(buf, 0, sizeof(buf));
	nlh = mnl_nlmsg_put_header(buf);
	nlh->nlmsg_type = SOCK_DIAG_BY_FAMILY;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = seq = (unsigned)time(NULL);
	req = mnl_nlmsg_put_extra_header(nlh, sizeof(*req));
	req->sdiag_family = AF_UNIX;
	/*
	 * Listening, or bound and not (yet) listening: the socket that holds the name, not a
	 * connection that may carry its listener's name as well.
	 */
	req->udiag_states = (1u << TCP_LISTEN) | (1u << TCP_CLOSE);
	req->udiag_show = UDIAG_SHOW_NAME | UDIAG_SHOW_UID;
	if ((ret = diag_ask(nlh, &nl, &portid)))
		goto out;
	/* Every unix socket of the namespace in those states, to the end of the dump. */
	do {
		if ((n = mnl_socket_recvfrom(nl, buf, sizeof(buf))) < 0) {
			ret = -errno;
			goto out;
		}
		ret = mnl_cb_run(buf, (size_t)n, seq, portid, on_unix, &f);
	} while (ret > MNL_CB_STOP);
	/* A kernel without unix_diag answers ENOENT: that says nothing of the name. */
	if (ret < 0) {
		ret = errno == ENOENT ? -EOPNOTSUPP : -errno;
		goto out;
	}
	if (!f.seen)
		ret = -ENOENT;
	else if (!f.has_uid)
		ret = -EOPNOTSUPP;
	else
		*uid = f.uid;
out:
	if (nl)
		mnl_socket_close(nl);
	return ret;
}
