#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "agent/metrics.h"

static void assert_line(const char *text, const char *line)
{
	const char *p = text;
	size_t n = strlen(line);

	while ((p = strstr(p, line))) {
		if ((p == text || p[-1] == '\n') && p[n] == '\n')
			return;
		p++;
	}
	fail_msg("no line '%s' in:\n%s", line, text);
}

static void test_histogram_is_cumulative(void **state)
{
	struct metrics m = { 0 };
	struct metrics_gauges g = { .denied_packets = -1 };
	char *text;

	metrics_observe(&m.kernel, 50);		/* 0.00005 s: first bucket */
	metrics_observe(&m.kernel, 100);	/* exactly on the first bound */
	metrics_observe(&m.kernel, 700);	/* 0.0007 s: le 0.001 */
	metrics_observe(&m.kernel, 5000000);	/* 5 s: only +Inf */
	metrics_observe(&m.kernel, -3);		/* a clock oddity counts as 0 */
	metrics_observe(&m.admit, 3);		/* its own histogram, not the kernel's */
	text = metrics_render(&m, &g);
	assert_non_null(text);
	assert_line(text, "# TYPE jitd_kernel_transaction_seconds histogram");
	assert_line(text, "jitd_kernel_transaction_seconds_bucket{le=\"0.0001\"} 3");
	assert_line(text, "jitd_kernel_transaction_seconds_bucket{le=\"0.0005\"} 3");
	assert_line(text, "jitd_kernel_transaction_seconds_bucket{le=\"0.001\"} 4");
	assert_line(text, "jitd_kernel_transaction_seconds_bucket{le=\"1\"} 4");
	assert_line(text, "jitd_kernel_transaction_seconds_bucket{le=\"+Inf\"} 5");
	assert_line(text, "jitd_kernel_transaction_seconds_count 5");
	assert_line(text, "jitd_kernel_transaction_seconds_sum 5.000850");
	assert_line(text, "jitd_state_write_seconds_count 0");
	assert_line(text, "# TYPE jitd_admit_seconds histogram");
	assert_line(text, "jitd_admit_seconds_bucket{le=\"0.0001\"} 1");
	assert_line(text, "jitd_admit_seconds_count 1");
	assert_line(text, "jitd_admit_seconds_sum 0.000003");
	/* Unknown kernel counter: the metric is left out rather than reported as 0. */
	assert_null(strstr(text, "jitd_denied_packets_total"));
	free(text);
}

static void test_counters_and_codes(void **state)
{
	struct metrics m = { .grants_applied = 7, .grants_expired = 2 };
	struct metrics_gauges g = { .active_grants = 5, .kernel_elements = 9, .denied_packets = 42,
		.started = 1796000000, .verifying = 3, .waiting = 11 };
	char *text;

	metrics_refused(m.grants_refused, JIT_ERR_REPLAY);
	metrics_refused(m.grants_refused, JIT_ERR_REPLAY);
	metrics_refused(m.grants_refused, JIT_ERR_BAD_SIGNATURE);
	metrics_refused(m.revocations_refused, JIT_ERR_NOT_FOUND);
	/* Out of range codes are ignored, never written out of bounds. */
	metrics_refused(m.grants_refused, 0);
	metrics_refused(m.grants_refused, -JIT_ERR__COUNT);
	metrics_refused(m.grants_refused, 5);
	text = metrics_render(&m, &g);
	assert_non_null(text);
	assert_line(text, "jitd_build_info{version=\"" JITD_VERSION "\"} 1");
	assert_line(text, "jitd_active_grants 5");
	assert_line(text, "jitd_kernel_elements 9");
	assert_line(text, "jitd_grants_verifying 3");
	assert_line(text, "jitd_grants_waiting 11");
	assert_line(text, "# TYPE jitd_grants_waiting gauge");
	assert_line(text, "jitd_denied_packets_total 42");
	assert_line(text, "jitd_start_time_seconds 1796000000");
	assert_line(text, "jitd_grants_applied_total 7");
	assert_line(text, "jitd_grants_expired_total 2");
	assert_line(text, "jitd_grants_refused_total{code=\"replay\"} 2");
	assert_line(text, "jitd_grants_refused_total{code=\"bad_signature\"} 1");
	assert_line(text, "jitd_grants_refused_total{code=\"too_large\"} 0");
	assert_line(text, "jitd_revocations_refused_total{code=\"not_found\"} 1");
	assert_line(text, "# TYPE jitd_grants_refused_total counter");
	/* Reloads: none yet is a success; the last one's outcome, not the count, decides. */
	assert_line(text, "jitd_config_last_reload_successful 1");
	assert_line(text, "jitd_config_reloads_total{result=\"refused\"} 0");
	assert_line(text, "jitd_config_restart_pending 0");
	assert_line(text, "jitd_state_damage_total 0");
	/* No TLS (plain HTTP): no certificate, no line claiming an expiry. */
	assert_null(strstr(text, "jitd_tls_certificate_not_after_seconds"));
	/* No endpoint figures given: none written. */
	assert_null(strstr(text, "jitd_http_"));
	free(text);
	g.tls_not_after = 1798977600;
	m.reloads_applied = 3;
	m.reloads_refused = 1;
	g.reload_refused = true;
	m.reload_applied_at = 1796000100;
	g.restart_pending = 2;
	g.state_damage = 3;
	text = metrics_render(&m, &g);
	assert_non_null(text);
	assert_line(text, "# TYPE jitd_config_reloads_total counter");
	assert_line(text, "jitd_config_reloads_total{result=\"applied\"} 3");
	assert_line(text, "jitd_config_reloads_total{result=\"refused\"} 1");
	assert_line(text, "jitd_config_last_reload_successful 0");
	assert_line(text, "jitd_config_last_reload_success_timestamp_seconds 1796000100");
	assert_line(text, "jitd_config_restart_pending 2");
	assert_line(text, "# TYPE jitd_state_damage_total counter");
	assert_line(text, "jitd_state_damage_total 3");
	assert_line(text, "# TYPE jitd_tls_certificate_not_after_seconds gauge");
	assert_line(text, "jitd_tls_certificate_not_after_seconds 1798977600");
	free(text);
}

static void test_endpoint(void **state)
{
	const struct metrics_endpoint ep = { .connections = 4, .cut_deadline = 5, .gave_way = 6,
		.over_limit = 7, .paused = 8, .rate_limited = 9 };
	struct metrics_gauges g = { .endpoint = &ep };
	struct metrics m = { 0 };
	char *text = metrics_render(&m, &g);

	assert_non_null(text);
	assert_line(text, "# TYPE jitd_http_connections gauge");
	assert_line(text, "jitd_http_connections 4");
	assert_line(text, "# TYPE jitd_http_connections_closed_total counter");
	assert_line(text, "jitd_http_connections_closed_total{reason=\"deadline\"} 5");
	assert_line(text, "jitd_http_connections_closed_total{reason=\"gave_way\"} 6");
	assert_line(text, "jitd_http_connections_closed_total{reason=\"over_limit\"} 7");
	assert_line(text, "# TYPE jitd_http_accept_paused_total counter");
	assert_line(text, "jitd_http_accept_paused_total 8");
	assert_line(text, "# TYPE jitd_http_rate_limited_total counter");
	assert_line(text, "jitd_http_rate_limited_total 9");
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_histogram_is_cumulative),
		cmocka_unit_test(test_counters_and_codes),
		cmocka_unit_test(test_endpoint),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
