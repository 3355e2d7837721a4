#include <errno.h>
#include <string.h>

#include "agent/nldump.h"

/* libmnl's own rule: an ack (0) ends the conversation, an error fails it. */
static int error_cb(const struct nlmsghdr *nlh, void *arg __attribute__((unused)))
{
	const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);

	if (nlh->nlmsg_len < mnl_nlmsg_size(sizeof(*e))) {
		errno = EBADMSG;
		return MNL_CB_ERROR;
	}
	if (e->error == 0)
		return MNL_CB_STOP;
	errno = e->error < 0 ? -e->error : e->error;
	return MNL_CB_ERROR;
}

static int done_cb(const struct nlmsghdr *nlh, void *arg __attribute__((unused)))
{
	int err;

	if (mnl_nlmsg_get_payload_len(nlh) >= sizeof(err)) {
		memcpy(&err, mnl_nlmsg_get_payload(nlh), sizeof(err));
		if (err < 0) {
			errno = -err;
			return MNL_CB_ERROR;
		}
	}
	return MNL_CB_STOP;
}

int nldump_run(void *buf, size_t len, uint32_t seq, uint32_t portid, mnl_cb_t cb, void *arg,
	bool *intr)
{
	/*
	 * mnl_cb_run2 passes over a control message whose slot here is NULL, without libmnl's
	 * default: NLMSG_ERROR must have one, or an error would leave the reader waiting.
	 * Not const: mnl_cb_run2 takes it so, though it only reads it.
	 */
	static mnl_cb_t ctl[NLMSG_MIN_TYPE] = { [NLMSG_ERROR] = error_cb, [NLMSG_DONE] = done_cb };
	struct nlmsghdr *nlh;
	int rest = (int)len;

	/*
	 * libmnl fails a message marked interrupted (EINTR) before any callback, leaving the rest
	 * of the dump unread: on the socket, where the kernel answers the next dump request with
	 * EBUSY. Noted and cleared, the dump is read to its end and the caller asks again.
	 */
	for (nlh = buf; mnl_nlmsg_ok(nlh, rest); nlh = mnl_nlmsg_next(nlh, &rest))
		if (nlh->nlmsg_flags & NLM_F_DUMP_INTR) {
			nlh->nlmsg_flags &= (uint16_t)~NLM_F_DUMP_INTR;
			*intr = true;
		}
	errno = 0;
	return mnl_cb_run2(buf, len, seq, portid, cb, arg, ctl, NLMSG_MIN_TYPE);
}
