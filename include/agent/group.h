#ifndef JITD_AGENT_GROUP_H
#define JITD_AGENT_GROUP_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Group commit's policy, apart from the enforcer that follows it so that a test can hold it to
 * its word: when the grants verified so far are committed, and how many go in one group.
 */

/* A group holds at most this many: one kernel transaction, one journal write, one fdatasync. */
#define GROUP_MAX 256

/*
 * Whether the n_ready grants verified are committed now rather than wait for the in_flight
 * still being verified: when none is, when a group is full, or when no group is being made
 * durable (settling) and at least half of the grants outstanding are ready. The last keeps the
 * disk and the CPUs busy at once: with one grant per request, the connections otherwise move
 * in step, all waiting for one group's fdatasyncs while the CPUs idle, then all verifying while
 * the disk idles. Half, not one: each group costs a sync thread an fdatasync, and a group per
 * grant spent more than the idle time it saved (measured when a group had two: about 350 us of
 * CPU on the project's VMs). Nothing ready: nothing to commit.
 */
static inline bool group_due(size_t n_ready, size_t in_flight, bool settling)
{
	return n_ready && (!in_flight || n_ready >= GROUP_MAX ||
		(!settling && n_ready >= in_flight));
}

/* How many of the n_ready the next group takes, oldest first; the rest make the next one. */
static inline size_t group_take(size_t n_ready)
{
	return n_ready < GROUP_MAX ? n_ready : GROUP_MAX;
}

/*
 * Whether a committed group's fdatasync runs on the loop itself rather than on a sync thread:
 * when the group is alone (no grant verifying or waiting, no other group settling) and at most
 * one client is connected, as when one controller or person sends a grant at a time. Nothing
 * would run on the loop meanwhile, and the hand-off costs two thread wake-ups, the sync
 * thread's and the loop's: 80-250 us of a grant's 0.7-1.1 ms here, more while the VM is busy
 * (ad hoc, paired). With more clients connected, a request may be waiting unread that the loop
 * would read and verify meanwhile: a loop blocked in fdatasync cost 10-15% of the throughput
 * with 16 connections (ad hoc), so they keep the thread.
 */
static inline bool group_sync_here(size_t in_flight, size_t n_ready, bool others_settling,
	unsigned clients)
{
	return !in_flight && !n_ready && !others_settling && clients <= 1;
}

#endif
