#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "agent/jitctl.h"
#include "common/duration.h"

static void status_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] status [--json]\n\n"
		   "Shows the protected ports with their policy, the always-allowed sources, the active\n"
		   "grants with the time left as read back from the kernel, and whether the kernel's\n"
		   "table matches what the agent computed.\n\n"
		   "  --json  print the status document (schema version 1, see the README)\n");
}

static const char *str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "-";
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
	printf("Kernel:         table %s %s", str(k, "table"),
		json_is_true(json_object_get(k, "present")) ? "present" : "MISSING");
	printf(", %s", json_is_true(json_object_get(k, "in_sync")) ? "in sync" :
		"NOT IN SYNC with the agent's grants");
	printf(", %" JSON_INTEGER_FORMAT " packets %s\n",
		json_integer_value(json_object_get(k, "denied_packets")),
		!strcmp(deny, "reject") ? "rejected" : "dropped");
}

static void print_ports(const json_t *ports)
{
	const json_t *p;
	char src[256];
	size_t i;

	printf("\nProtected ports:\n");
	if (!json_array_size(ports)) {
		printf("  (none)\n");
		return;
	}
	printf("  %-6s %-5s %-10s %-6s %s\n", "PORT", "PROTO", "MAX", "GRANTS", "ALLOWED SOURCES");
	json_array_foreach(ports, i, p)
		printf("  %-6" JSON_INTEGER_FORMAT " %-5s %-10s %-6" JSON_INTEGER_FORMAT " %s\n",
			json_integer_value(json_object_get(p, "port")), str(p, "protocol"),
			str(p, "max_duration"),
			json_integer_value(json_object_get(p, "active_grants")),
			join(json_object_get(p, "allowed_sources"), src, sizeof(src)));
}

static void print_grants(const json_t *grants)
{
	const json_t *g;
	char src[256], ports[128], left[32], kleft[32];
	size_t i;

	printf("\nActive grants:\n");
	if (!json_array_size(grants)) {
		printf("  (none)\n");
		return;
	}
	printf("  %-32s %-16s %-24s %-12s %-20s %s\n", "ID", "USER", "SOURCES", "PORTS",
		"EXPIRES", "LEFT (KERNEL)");
	json_array_foreach(grants, i, g) {
		const json_t *kexp = json_object_get(g, "kernel_expires_in");

		printf("  %-32s %-16s %-24s %-12s %-20s %s (%s)\n", str(g, "id"), str(g, "sub"),
			join(json_object_get(g, "sources"), src, sizeof(src)),
			join(json_object_get(g, "ports"), ports, sizeof(ports)),
			str(g, "expires_at"), human(json_object_get(g, "expires_in"), left,
				sizeof(left)),
			json_is_null(kexp) ? "NOT IN KERNEL" : human(kexp, kleft, sizeof(kleft)));
		if (json_is_string(json_object_get(g, "reason")))
			printf("  %-32s reason: %s\n", "", str(g, "reason"));
	}
}

static void print_status(const json_t *s)
{
	char always[512];

	printf("Host:           %s (jitd status schema %" JSON_INTEGER_FORMAT ")\n",
		str(s, "host_id"), json_integer_value(json_object_get(s, "version")));
	printf("Time:           %s\n", str(s, "time"));
	printf("Deny action:    %s\n", str(s, "deny_action"));
	print_kernel(json_object_get(s, "kernel"), str(s, "deny_action"));
	printf("Always allowed: %s\n", join(json_object_get(s, "always_allow"), always,
		sizeof(always)));
	print_ports(json_object_get(s, "ports"));
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
	bool json = false;
	int c, ret;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'h':
			status_usage(stdout);
			return JITCTL_OK;
		default:
			status_usage(stderr);
			return JITCTL_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "jitctl status: unexpected argument '%s'\n", argv[optind]);
		return JITCTL_USAGE;
	}
	if (!(req = json_pack("{s:s}", "op", "status")))
		return JITCTL_REFUSED;
	if ((ret = jitctl_call(o, req, &rep)))
		goto out;
	st = json_object_get(rep, "status");
	if (!json_is_true(json_object_get(rep, "ok")) || !json_is_object(st)) {
		fprintf(stderr, "jitctl status: %s: %s\n", str(rep, "error"), str(rep, "message"));
		ret = JITCTL_REFUSED;
		goto out;
	}
	if (json) {
		json_dumpf(st, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		print_status(st);
	}
	ret = JITCTL_OK;
out:
	json_decref(req);
	json_decref(rep);
	return ret;
}
