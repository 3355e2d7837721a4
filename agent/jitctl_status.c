#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/jitctl.h"
#include "common/duration.h"
#include "common/grant.h"
#include "common/proto.h"

static void status_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] status [--json]\n\n"
		   "Shows the agent's health, its controller endpoint (address, TLS, connections,\n"
		   "and when its certificate ends: called out within 14 days of it), the protected\n"
		   "ports with their policy and recent activity (grants in the last 7 days, last\n"
		   "access, last user), the always-allowed sources, the active grants with the time\n"
		   "left as read back from the kernel and the connections each let in, and whether\n"
		   "the kernel's table matches what the agent computed. In modes gateway and both\n"
		   "also the mode, the protected targets behind this host and, per grant, its\n"
		   "destinations and the gateway ports to connect to. Root and members of the\n"
		   "agent's control group may use it.\n\n"
		   "  --json  print the status document (schema version 1, see the README) as one\n"
		   "          line of compact JSON, as the agent wrote it\n");
}

/* Joins an array of strings with ", " into buf (truncated with "..." if it does not fit). */
static const char *join(const json_t *a, char *buf, size_t len)
{
	const json_t *v;
	size_t i, used = 0;

	buf[0] = '\0';
	json_array_foreach(a, i, v) {
		int n = snprintf(buf + used, len - used, "%s%s", i ? ", " : "",
			json_string_value(v) ? json_string_value(v) : "?");

		if (n < 0 || (size_t)n >= len - used) {
			if (len > 4)
				memcpy(buf + len - 4, "...", 4);
			break;
		}
		used += (size_t)n;
	}
	return buf[0] ? buf : "-";
}

static const char *human(const json_t *secs, char *buf, size_t len)
{
	if (!json_is_integer(secs) || json_integer_value(secs) < 0 ||
		duration_human((uint64_t)json_integer_value(secs), buf, len))
		return "-";
	return buf;
}

static void print_kernel(const json_t *k, const char *deny)
{
	json_int_t foreign = json_integer_value(json_object_get(k, "foreign_elements"));

	printf("Kernel:         table %s %s%s", jitctl_str(k, "table"),
		json_is_true(json_object_get(k, "present")) ? "present" : "MISSING",
		json_is_true(json_object_get(k, "owned")) ? " (owned by jitd)" : "");
	printf(", %s", json_is_true(json_object_get(k, "in_sync")) ? "in sync" :
		"NOT IN SYNC with the agent's grants");
	if (foreign)
		printf(" (%" JSON_INTEGER_FORMAT " element%s jitd did not write)", foreign,
			foreign == 1 ? "" : "s");
	printf(", %" JSON_INTEGER_FORMAT " packets %s\n",
		json_integer_value(json_object_get(k, "denied_packets")),
		!strcmp(deny, "reject") ? "rejected" : "dropped");
}

/* Cuts s to width columns with a trailing "~", so that a long value cannot break the table. */
static const char *fit(const char *s, size_t width, char *buf, size_t len)
{
	if (strlen(s) <= width || width >= len)
		return s;
	memmove(buf, s, width - 1); /* s may be buf itself */
	buf[width - 1] = '~';
	buf[width] = '\0';
	return buf;
}

/* mode is NULL in host mode, whose output stays as it was before gateway mode. */
static void print_ports(const json_t *ports, const char *mode)
{
	const json_t *p;
	char src[256], user[16], week[24];
	size_t i;

	printf("\nProtected ports:\n");
	if (!json_array_size(ports)) {
		/* Mode gateway has no host ports by design: say so, not just "none". */
		if (mode && !strcmp(mode, "gateway"))
			printf("  (none in mode gateway: only the targets below)\n");
		else
			printf("  (none)\n");
		return;
	}
	printf("  %-5s %-5s %-6s %-6s %-6s %-20s %-12s %s\n", "PORT", "PROTO", "MAX", "ACTIVE",
		"7 DAYS", "LAST ACCESS", "LAST USER", "ALLOWED SOURCES");
	json_array_foreach(ports, i, p) {
		const json_t *n = json_object_get(p, "grants_7d");
		char last[GRANT_MAX_STRING + 1];

		/*
		 * null while jitd still reads its audit trail at the start, or for a week after a
		 * start that could not: not known.
		 */
		if (json_is_integer(n))
			snprintf(week, sizeof(week), "%" JSON_INTEGER_FORMAT,
				json_integer_value(n));
		else
			snprintf(week, sizeof(week), "-");
		/*
		 * From the trail, a file: what a terminal would act on is shown as '?'. jitd sends
		 * it so already; an older one, or another agent on this socket, may not.
		 */
		snprintf(last, sizeof(last), "%s", jitctl_str(p, "last_user"));
		grant_string_defuse(last);
		printf("  %-5" JSON_INTEGER_FORMAT " %-5s %-6s %-6" JSON_INTEGER_FORMAT
			" %-6s %-20s %-12s %s\n",
			json_integer_value(json_object_get(p, "port")), jitctl_str(p, "protocol"),
			jitctl_str(p, "max_duration"),
			json_integer_value(json_object_get(p, "active_grants")), week,
			jitctl_str(p, "last_access"),
			fit(last, 12, user, sizeof(user)),
			fit(join(json_object_get(p, "allowed_sources"), src, sizeof(src)), 30, src,
				sizeof(src)));
	}
}

/*
 * "198.51.100.10:50000-50999"; without a configured address "gateway:50000-50999", as the
 * grants' connect lines say it.
 */
static const char *dnat_range(const json_t *d, char *buf, size_t len)
{
	const char *addr = json_string_value(json_object_get(d, "address"));

	if (!json_is_object(d))
		return "-";
	snprintf(buf, len, "%s:%s", addr ? addr : "gateway", jitctl_str(d, "listen_port_range"));
	return buf;
}

static void print_targets(const json_t *targets)
{
	const json_t *t;
	char src[256], range[96];
	int aw = (int)strlen("ADDRESS");
	size_t i;

	printf("\nProtected targets:\n");
	if (!json_array_size(targets)) {
		printf("  (none)\n");
		return;
	}
	/* Addresses are not cut like user names: the column is as wide as the longest one. */
	json_array_foreach(targets, i, t)
		if ((int)strlen(jitctl_str(t, "address")) > aw)
			aw = (int)strlen(jitctl_str(t, "address"));
	printf("  %-*s %-5s %-5s %-6s %-6s %-27s %s\n", aw, "ADDRESS", "PORT", "PROTO", "MAX",
		"ACTIVE", "DNAT", "ALLOWED SOURCES");
	json_array_foreach(targets, i, t)
		printf("  %-*s %-5" JSON_INTEGER_FORMAT " %-5s %-6s %-6" JSON_INTEGER_FORMAT
			" %-27s %s\n", aw, jitctl_str(t, "address"),
			json_integer_value(json_object_get(t, "port")), jitctl_str(t, "protocol"),
			jitctl_str(t, "max_duration"),
			json_integer_value(json_object_get(t, "active_grants")),
			dnat_range(json_object_get(t, "dnat"), range, sizeof(range)),
			fit(join(json_object_get(t, "allowed_sources"), src, sizeof(src)), 30, src,
				sizeof(src)));
}

/* A gateway grant's destinations and gateway ports, under its row (indent: the ID column). */
static void print_gateway_grant(const json_t *g)
{
	const json_t *dst = json_object_get(g, "destinations"), *d;
	char buf[1024];
	size_t i;

	if (!json_is_array(dst))
		return;
	printf("  %-32s destinations: %s\n", "", join(dst, buf, sizeof(buf)));
	json_array_foreach(json_object_get(g, "dnat"), i, d)
		printf("  %-32s connect to %s -> %s/%s\n", "", jitctl_str(d, "connect"),
			jitctl_str(d, "to"), jitctl_str(d, "protocol"));
}

static void print_grants(const json_t *grants)
{
	char src[256], ports[128], left[32], kleft[32], both[80], user[16], flows[16];
	const json_t *g;
	size_t i;

	printf("\nActive grants:\n");
	if (!json_array_size(grants)) {
		printf("  (none)\n");
		return;
	}
	printf("  %-32s %-12s %-18s %-10s %-16s %s\n", "ID", "USER", "SOURCES", "PORTS",
		"LEFT (KERNEL)", "FLOWS");
	json_array_foreach(grants, i, g) {
		const json_t *kexp = json_object_get(g, "kernel_expires_in");
		const json_t *fl = json_object_get(g, "flows");

		snprintf(both, sizeof(both), "%s (%s)",
			human(json_object_get(g, "expires_in"), left, sizeof(left)),
			json_is_null(kexp) ? "NOT IN KERNEL" : human(kexp, kleft, sizeof(kleft)));
		snprintf(flows, sizeof(flows), json_is_integer(fl) ? "%" JSON_INTEGER_FORMAT : "-",
			json_integer_value(fl));
		printf("  %-32s %-12s %-18s %-10s %-16s %s\n", jitctl_str(g, "id"),
			fit(jitctl_str(g, "sub"), 12, user, sizeof(user)),
			fit(join(json_object_get(g, "sources"), src, sizeof(src)), 18, src,
				sizeof(src)),
			fit(join(json_object_get(g, "ports"), ports, sizeof(ports)), 10, ports,
				sizeof(ports)),
			both, flows);
		printf("  %-32s granted %s, expires %s\n", "", jitctl_str(g, "issued_at"),
			jitctl_str(g, "expires_at"));
		if (json_is_string(json_object_get(g, "reason")))
			printf("  %-32s reason: %s\n", "", jitctl_str(g, "reason"));
		print_gateway_grant(g);
	}
}

static void print_agent(const json_t *a)
{
	const json_t *refused = json_object_get(a, "reload_refused"),
		     *damage = json_object_get(a, "state_damage");
	char up[32], pending[256];

	printf("Agent:          jitd %s, up %s, config %s%s\n", jitctl_str(a, "version"),
		human(json_object_get(a, "uptime"), up, sizeof(up)), jitctl_str(a, "config"),
		json_is_false(json_object_get(a, "conntrack")) ? ", conntrack unavailable" : "");
	printf("Last error:     %s\n", jitctl_str(a, "last_error"));
	if (json_is_object(refused))
		printf("Reload refused: %s: %s (the configuration loaded %s stays in force)\n",
			jitctl_str(refused, "at"), jitctl_str(refused, "error"),
			jitctl_str(a, "config_loaded_at"));
	if (json_is_object(damage))
		printf("State damage:   %s (%lld finding(s) since the start, the last at %s)\n",
			jitctl_str(damage, "last"),
			(long long)json_integer_value(json_object_get(damage, "count")),
			jitctl_str(damage, "last_at"));
	if (json_array_size(json_object_get(a, "restart_pending")) > 0)
		printf("Restart needed: %s (changed in the file; applied at the next start)\n",
			join(json_object_get(a, "restart_pending"), pending, sizeof(pending)));
}

/* The controller endpoint, when there is one, and the certificate new connections get. */
static void print_endpoint(const json_t *ep)
{
	const json_t *cert = json_object_get(ep, "certificate"),
		     *left = json_object_get(cert, "expires_in");
	const char *state = jitctl_str(cert, "state");
	json_int_t limit = json_integer_value(json_object_get(ep, "rate_limit"));
	char rate[64] = "", span[32];

	if (!json_is_object(ep))
		return;
	if (limit > 0)
		snprintf(rate, sizeof(rate), ", %" JSON_INTEGER_FORMAT " req/s per source", limit);
	printf("Controller:     %s %s%s, %" JSON_INTEGER_FORMAT "/%" JSON_INTEGER_FORMAT
		" connections%s\n", jitctl_str(ep, "transport"), jitctl_str(ep, "address"),
		json_is_true(json_object_get(ep, "client_certificates")) ? ", mutual TLS" : "",
		json_integer_value(json_object_get(ep, "connections")),
		json_integer_value(json_object_get(ep, "max_connections")), rate);
	if (!json_is_object(cert))
		return;
	if (!strcmp(state, "expired"))
		printf("Certificate:    %s EXPIRED at %s: controllers cannot connect\n",
			jitctl_str(cert, "file"), jitctl_str(cert, "not_after"));
	else
		printf("Certificate:    %s, until %s (%s left%s)\n", jitctl_str(cert, "file"),
			jitctl_str(cert, "not_after"), human(left, span, sizeof(span)),
			!strcmp(state, "expiring") ? ": renew it" : "");
}

static void print_status(const json_t *s)
{
	const char *mode = json_string_value(json_object_get(s, "mode"));
	char always[512];

	/* Host mode (or an agent from before gateway mode) prints exactly what it always did. */
	if (mode && !strcmp(mode, "host"))
		mode = NULL;
	printf("Host:           %s (jitd status schema %" JSON_INTEGER_FORMAT ")\n",
		jitctl_str(s, "host_id"), json_integer_value(json_object_get(s, "version")));
	printf("Time:           %s\n", jitctl_str(s, "time"));
	print_agent(json_object_get(s, "agent"));
	print_endpoint(json_object_get(s, "endpoint"));
	if (mode)
		printf("Mode:           %s\n", mode);
	printf("Deny action:    %s\n", jitctl_str(s, "deny_action"));
	print_kernel(json_object_get(s, "kernel"), jitctl_str(s, "deny_action"));
	printf("Always allowed: %s\n", join(json_object_get(s, "always_allow"), always,
		sizeof(always)));
	print_ports(json_object_get(s, "ports"), mode);
	if (mode)
		print_targets(json_object_get(s, "targets"));
	print_grants(json_object_get(s, "grants"));
}

int cmd_status(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	json_t *req = NULL, *rep = NULL;
	const json_t *st;
	char *line = NULL;
	size_t len = 0, head;
	bool json = false;
	int at, c, ret;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'h':
			status_usage(stdout);
			return JITCTL_OK;
		default:
			return jitctl_bad_option("status", c, argv, at);
		}
	}
	if (optind != argc)
		return jitctl_usage_error("status", "unexpected argument '%s'", argv[optind]);
	if (!(req = json_pack("{s:s}", "op", "status")))
		return jitctl_out_of_memory("status");
	if ((ret = jitctl_call_line(o, req, &line, &len)))
		goto out;
	head = strlen(PROTO_STATUS_HEAD);
	/* The document as the agent wrote it: parsing it here would only print it again. */
	if (json && len > head + 2 && !memcmp(line, PROTO_STATUS_HEAD, head) &&
		line[head] == '{' && !memcmp(line + len - 2, "}\n", 2)) {
		if (fwrite(line + head, 1, len - head - 2, stdout) != len - head - 2 ||
			putchar('\n') == EOF || fflush(stdout)) {
			fprintf(stderr, "jitctl status: cannot write the status: %s\n",
				strerror(errno));
			ret = JITCTL_REFUSED;
			goto out;
		}
		ret = JITCTL_OK;
		goto out;
	}
	if ((ret = proto_decode_reply(line, len, &rep))) {
		ret = jitctl_unreachable(o, ret);
		goto out;
	}
	st = json_object_get(rep, "status");
	if ((ret = jitctl_check_reply("status", json, rep, "status", JSON_OBJECT)))
		goto out;
	if (json) {
		json_dumpf(st, stdout, JSON_COMPACT);
		printf("\n");
	} else {
		print_status(st);
	}
	ret = JITCTL_OK;
out:
	json_decref(req);
	json_decref(rep);
	free(line);
	return ret;
}
