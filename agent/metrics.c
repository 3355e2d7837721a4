#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/metrics.h"

/* Seconds: a kernel transaction takes ~100 us, an fsync ~0.4 ms median and ~3 ms p99. */
static const double bounds[METRICS_BUCKETS] = { 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005,
	0.01, 0.025, 0.05, 0.1, 0.25, 1.0 };

void metrics_observe(struct metrics_hist *h, int64_t usec)
{
	if (usec < 0)
		usec = 0;
	h->count++;
	h->sum_us += (uint64_t)usec;
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		if ((double)usec / 1e6 <= bounds[i]) {
			h->le[i]++;
			return;
		}
	}
}

void metrics_refused(uint64_t *by_code, int code)
{
	if (code < 0 && code > -JIT_ERR__COUNT)
		by_code[-code]++;
}

/* An open_memstream, so that the renderer reads like the text it makes. */
struct out {
	FILE *f;
	char *buf;
	size_t len;
};

static void put(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void put(struct out *o, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	(void)vfprintf(o->f, fmt, ap);
	va_end(ap);
}

static void head(struct out *o, const char *name, const char *type, const char *help)
{
	put(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

static void scalar(struct out *o, const char *name, const char *type, const char *help,
	unsigned long long v)
{
	head(o, name, type, help);
	put(o, "%s %llu\n", name, v);
}

/* One series of a labelled family: name{label="value"} v. */
static void series(struct out *o, const char *name, const char *label, const char *value,
	uint64_t v)
{
	put(o, "%s{%s=\"%s\"} %llu\n", name, label, value, (unsigned long long)v);
}

static void by_code(struct out *o, const char *name, const char *help, const uint64_t *v)
{
	head(o, name, "counter", help);
	for (int i = 1; i < JIT_ERR__COUNT; i++)
		series(o, name, "code", jit_err_name(-i), v[i]);
}

static void hist(struct out *o, const char *name, const char *help, const struct metrics_hist *h)
{
	uint64_t cum = 0;

	head(o, name, "histogram", help);
	for (int i = 0; i < METRICS_BUCKETS; i++) {
		cum += h->le[i];
		put(o, "%s_bucket{le=\"%g\"} %llu\n", name, bounds[i], (unsigned long long)cum);
	}
	put(o, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)h->count);
	put(o, "%s_sum %.6f\n", name, (double)h->sum_us / 1e6);
	put(o, "%s_count %llu\n", name, (unsigned long long)h->count);
}

char *metrics_render(const struct metrics *m, const struct metrics_gauges *g)
{
	struct out o = { 0 };

	if (!(o.f = open_memstream(&o.buf, &o.len)))
		return NULL;
	head(&o, "jitd_build_info", "gauge", "Version of the running agent.");
	put(&o, "jitd_build_info{version=\"%s\"} 1\n", JITD_VERSION);
	scalar(&o, "jitd_start_time_seconds", "gauge", "When the agent started (Unix time).",
		(unsigned long long)g->started);
	if (g->tls_not_after > 0)
		scalar(&o, "jitd_tls_certificate_not_after_seconds", "gauge",
			"When the controller endpoint's TLS certificate expires (Unix time).",
			(unsigned long long)g->tls_not_after);
	scalar(&o, "jitd_active_grants", "gauge", "Grants in force.", g->active_grants);
	scalar(&o, "jitd_kernel_elements", "gauge",
		"Allow-set elements in table inet jitd, as the agent last wrote them.",
		g->kernel_elements);
	scalar(&o, "jitd_grants_verifying", "gauge",
		"Grants received and being verified (queued for or on a worker thread).",
		g->verifying);
	scalar(&o, "jitd_grants_waiting", "gauge",
		"Grants verified and waiting for their group to be committed.", g->waiting);
	if (g->denied_packets >= 0)
		scalar(&o, "jitd_denied_packets_total", "counter",
			"Packets to protected ports dropped or rejected (kernel counter).",
			(unsigned long long)g->denied_packets);
	scalar(&o, "jitd_grants_applied_total", "counter", "Grants applied.", m->grants_applied);
	by_code(&o, "jitd_grants_refused_total", "Grants refused, by error code.",
		m->grants_refused);
	scalar(&o, "jitd_grants_expired_total", "counter", "Grants that reached their expiry.",
		m->grants_expired);
	scalar(&o, "jitd_grants_revoked_total", "counter", "Grants ended early: by a revocation, "
		"or dropped by a reload or a start (policy, key, issuer).", m->grants_revoked);
	by_code(&o, "jitd_revocations_refused_total", "Revocations refused, by error code.",
		m->revocations_refused);
	scalar(&o, "jitd_flows_terminated_total", "counter",
		"Established flows cut by revocations with terminate.", m->flows_terminated);
	scalar(&o, "jitd_drift_repairs_total", "counter",
		"Transactions that put the kernel back in line with the grants.", m->drift_repairs);
	head(&o, "jitd_config_reloads_total", "counter",
		"Configuration reloads (SIGHUP, jitctl reload), applied or refused.");
	series(&o, "jitd_config_reloads_total", "result", "applied", m->reloads_applied);
	series(&o, "jitd_config_reloads_total", "result", "refused", m->reloads_refused);
	scalar(&o, "jitd_config_last_reload_successful", "gauge",
		"Whether the last reload was applied (1 before any): 0 means the file on disk is "
		"not the configuration in force.", !g->reload_refused);
	scalar(&o, "jitd_config_last_reload_success_timestamp_seconds", "gauge",
		"When the configuration in force was loaded (the start or the last applied reload).",
		(unsigned long long)m->reload_applied_at);
	scalar(&o, "jitd_config_restart_pending", "gauge",
		"Restart-only settings the file changed since the start (0: no restart owed).",
		g->restart_pending);
	scalar(&o, "jitd_state_damage_total", "counter",
		"Damage found in the grant state's files since the start (a damaged snapshot or "
		"journal, a record left out of a compaction): acknowledged grants lost to the "
		"agent; see the log and jitctl status.", g->state_damage);
	scalar(&o, "jitd_group_commits_total", "counter",
		"Groups of grants committed together (one fdatasync, one kernel transaction).",
		m->group_commits);
	scalar(&o, "jitd_group_grants_total", "counter",
		"Grants that went through those groups, applied or refused.", m->group_grants);
	if (g->endpoint) {
		const struct metrics_endpoint *ep = g->endpoint;

		scalar(&o, "jitd_http_connections", "gauge",
			"Open connections to the controller endpoint, handshakes included.",
			(unsigned long long)ep->connections);
		head(&o, "jitd_http_connections_closed_total", "counter",
			"Connections the endpoint closed to protect itself: no whole request "
			"within listen.timeout or a reply not taken (deadline), an idle one for a "
			"new connection at "
			"listen.max_connections (gave_way), or a new one with no place "
			"(over_limit).");
		series(&o, "jitd_http_connections_closed_total", "reason", "deadline",
			ep->cut_deadline);
		series(&o, "jitd_http_connections_closed_total", "reason", "gave_way",
			ep->gave_way);
		series(&o, "jitd_http_connections_closed_total", "reason", "over_limit",
			ep->over_limit);
		scalar(&o, "jitd_http_accept_paused_total", "counter",
			"Times the endpoint stopped accepting at listen.max_connections, none to "
			"give way (new clients wait in the kernel's backlog).",
			(unsigned long long)ep->paused);
		scalar(&o, "jitd_http_rate_limited_total", "counter",
			"Requests answered 429 by listen.rate_limit.",
			(unsigned long long)ep->rate_limited);
	}
	hist(&o, "jitd_grant_seconds",
		"One grant, from receipt to applied (kernel acknowledgement and audit record).",
		&m->grant);
	hist(&o, "jitd_verify_seconds",
		"One signature and claims verification, on a worker thread.", &m->verify);
	hist(&o, "jitd_admit_seconds",
		"One grant's admission on the event loop: the policy as configured now, time left, "
		"limits and the replay check.", &m->admit);
	hist(&o, "jitd_kernel_transaction_seconds",
		"One nf_tables transaction, from send to the last acknowledgement.", &m->kernel);
	hist(&o, "jitd_state_write_seconds",
		"Durable record of a group of grants: its journal write, then the sync "
		"thread's fdatasync of the journal and the audit trail.", &m->state);
	if (fclose(o.f)) {
		free(o.buf);
		return NULL;
	}
	return o.buf;
}
