#ifndef JITD_AGENT_WATCH_H
#define JITD_AGENT_WATCH_H

struct config;
struct enforce;
struct event_base;
struct watch;

/*
 * Self-healing: watches every nf_tables change (NFNLGRP_NFTABLES) and has the enforcer repair
 * table inet jitd as soon as anyone else touches it (`nft flush ruleset`, as nftables.service
 * does on start and reload; a deleted table, chain, rule or element; an element nobody granted).
 * Events caused by jitd's own socket are ignored, so a repair cannot trigger itself. Lost events
 * (ENOBUFS) mean a full comparison, not a rebuild. A timer compares again every cfg->reconcile_interval
 * seconds, as a second line of defence; it skips the comparison while the events account for
 * every transaction since the last full one (generation ids) and the enforcer is sure of the
 * kernel, but at most FULL_CHECK_EVERY - 1 times in a row. While the enforcer is unsure of
 * the kernel (a repair or a change failed), a check runs 1, 2, 4, ... seconds apart, up to
 * reconcile_interval, until one succeeds. 0 or -errno.
 */
int watch_open(struct event_base *base, const struct config *cfg, struct enforce *enf,
	struct watch **out);
void watch_close(struct watch **w);

#endif
