#ifndef JITD_AGENT_NLDUMP_H
#define JITD_AGENT_NLDUMP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <libmnl/libmnl.h>

/*
 * mnl_cb_run for one datagram of a netlink conversation, its control messages read in full:
 * an NLMSG_DONE carrying an error (a dump the kernel ended early: the set or table deleted
 * between two parts) fails like an NLMSG_ERROR, with errno set, where libmnl's own handler
 * stops as if the dump were whole. A message marked NLM_F_DUMP_INTR (what was dumped changed
 * while the kernel answered) sets *intr and loses the mark in buf, so that the dump is read
 * to its end (libmnl would fail it at once): the caller then reads it again. As mnl_cb_run:
 * > 0 for more to read, 0 at the end, < 0 on failure, errno 0 when cb failed, not the kernel.
 */
int nldump_run(void *buf, size_t len, uint32_t seq, uint32_t portid, mnl_cb_t cb, void *arg,
	bool *intr);

#endif
