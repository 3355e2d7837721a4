#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <libmnl/libmnl.h>
#include <linux/rtnetlink.h>

#include "agent/localaddr.h"
#include "agent/nldump.h"
#include "common/array.h"

/* An interrupted dump (NLM_F_DUMP_INTR: the table changed meanwhile) is read again. */
#define DUMP_TRIES 3

/* Multicast is delivered to the host wherever the routing table says nothing of it. */
static const struct prefix multicast[] = {
	{ AF_INET, 4, { 224 } },
	{ AF_INET6, 8, { 0xff } },
};

struct reading {
	struct localaddr *l;
	size_t cap;
	bool intr;
	int err;
};

static int attr_cb(const struct nlattr *a, void *arg)
{
	const struct nlattr **tb = arg;
	uint16_t type = mnl_attr_get_type(a);

	if (mnl_attr_type_valid(a, RTA_MAX) > 0)
		tb[type] = a;
	return MNL_CB_OK;
}

static int route_cb(const struct nlmsghdr *nlh, void *arg)
{
	const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
	const struct nlattr *tb[RTA_MAX + 1] = { NULL };
	struct reading *r = arg;
	struct prefix *p, *v;
	uint32_t table;
	size_t alen;

	if (mnl_attr_parse(nlh, sizeof(*rtm), attr_cb, tb) < 0)
		return MNL_CB_OK;
	if (rtm->rtm_type != RTN_LOCAL && rtm->rtm_type != RTN_BROADCAST &&
		rtm->rtm_type != RTN_ANYCAST && rtm->rtm_type != RTN_MULTICAST)
		return MNL_CB_OK;
	/*
	 * Any table: IPv6 without multiple tables keeps its local routes in main, a VRF in its
	 * own. But a catch-all elsewhere (TPROXY's "local default dev lo table 100", taken only
	 * for marked packets) would make every address this host's: that one is passed over.
	 */
	table = tb[RTA_TABLE] ? mnl_attr_get_u32(tb[RTA_TABLE]) : rtm->rtm_table;
	if (table != RT_TABLE_LOCAL && rtm->rtm_dst_len == 0)
		return MNL_CB_OK;
	alen = rtm->rtm_family == AF_INET ? 4 : rtm->rtm_family == AF_INET6 ? 16 : 0;
	if (!alen || rtm->rtm_dst_len > alen * 8 ||
		(tb[RTA_DST] && mnl_attr_get_payload_len(tb[RTA_DST]) != alen))
		return MNL_CB_OK;
	if (!(v = array_reserve(r->l->v, &r->cap, r->l->n + 1, sizeof(*v), 16))) {
		r->err = -ENOMEM;
		return MNL_CB_ERROR;
	}
	r->l->v = v;
	p = &v[r->l->n++];
	memset(p, 0, sizeof(*p));
	p->family = rtm->rtm_family;
	p->len = rtm->rtm_dst_len;
	if (tb[RTA_DST])
		memcpy(p->addr, mnl_attr_get_payload(tb[RTA_DST]), alen);
	return MNL_CB_OK;
}

static int dump_once(struct mnl_socket *nl, struct reading *r)
{
	char buf[MNL_SOCKET_BUFFER_SIZE * 4];
	uint32_t seq = (uint32_t)time(NULL), portid = mnl_socket_get_portid(nl);
	struct nlmsghdr *nlh = mnl_nlmsg_put_header(buf);
	struct rtmsg *rtm;
	ssize_t len;
	int ret;

	nlh->nlmsg_type = RTM_GETROUTE;
	nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_DUMP;
	nlh->nlmsg_seq = seq;
	rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
	rtm->rtm_family = AF_UNSPEC;
	if (mnl_socket_sendto(nl, nlh, nlh->nlmsg_len) < 0)
		return -errno;
	do {
		if ((len = mnl_socket_recvfrom(nl, buf, sizeof(buf))) < 0)
			return -errno;
		ret = nldump_run(buf, (size_t)len, seq, portid, route_cb, r, &r->intr);
	} while (ret > 0);
	if (ret < 0)
		return r->err ? r->err : errno ? -errno : -EPROTO;
	return 0;
}

int localaddr_read(struct localaddr *out)
{
	struct reading r = { .l = out };
	struct mnl_socket *nl;
	int ret = 0;

	memset(out, 0, sizeof(*out));
	if (!(nl = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC)))
		return -errno;
	if (mnl_socket_bind(nl, 0, MNL_SOCKET_AUTOPID) < 0) {
		ret = -errno;
		goto out;
	}
	/* Only a whole dump the kernel marked interrupted is asked again; any error ends it. */
	for (int i = 0; i < DUMP_TRIES; i++) {
		out->n = 0;
		r.intr = false;
		r.err = 0;
		if ((ret = dump_once(nl, &r)) || !r.intr)
			break;
		ret = -EINTR;
	}
out:
	mnl_socket_close(nl);
	if (ret)
		localaddr_free(out);
	return ret;
}

bool localaddr_has(const struct localaddr *l, const struct prefix *host)
{
	for (size_t i = 0; i < sizeof(multicast) / sizeof(multicast[0]); i++)
		if (prefix_contains(&multicast[i], host))
			return true;
	for (size_t i = 0; i < l->n; i++)
		if (prefix_contains(&l->v[i], host))
			return true;
	return false;
}

void localaddr_free(struct localaddr *l)
{
	free(l->v);
	l->v = NULL;
	l->n = 0;
}
