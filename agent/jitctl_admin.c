/* jitctl revoke and jitctl grant: the local, root-only calls that change grants. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>

#include "agent/jitctl.h"
#include "common/port.h"
#include "common/prefix.h"

static void revoke_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] revoke GRANT_ID [--terminate] [--json]\n\n"
		   "Ends an active grant at once (root only). Other grants covering the same\n"
		   "sources keep their access. Established sessions live on, as on expiry,\n"
		   "unless --terminate is given: then the connections the grant let in are cut,\n"
		   "but for those another active grant or always_allow lets in too (a session\n"
		   "through the grant's own DNAT gateway port is cut all the same).\n\n"
		   "  --terminate  also cut the grant's established connections (conntrack)\n"
		   "  --json       print the agent's reply as JSON\n");
}

int cmd_revoke(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "terminate", no_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool terminate = false, json = false;
	json_t *req = NULL, *rep = NULL;
	int at, c, err, ret;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 't': terminate = true; break;
		case 'j': json = true; break;
		case 'h': revoke_usage(stdout); return JITCTL_OK;
		default: return jitctl_bad_option("revoke", c, argv, at);
		}
	}
	if (argc - optind != 1)
		return jitctl_usage_error("revoke", "expected one GRANT_ID");
	if ((err = jitctl_text_check(argv[optind])) == -ENOMEM)
		return jitctl_out_of_memory("revoke");
	if (err)
		return jitctl_usage_error("revoke", "GRANT_ID is not UTF-8 text");
	req = json_pack("{s:s, s:s, s:b}", "op", "revoke", "id", argv[optind], "terminate",
		terminate);
	if (!req)
		return jitctl_out_of_memory("revoke");
	if ((ret = jitctl_call(o, req, &rep)) ||
		(ret = jitctl_check_reply("revoke", json, rep, "revoked", JSON_STRING)))
		goto out;
	if (json) {
		json_object_del(rep, "ok");
		json_dumpf(rep, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		const json_t *cut = json_object_get(rep, "flows_terminated");

		printf("revoked grant %s", jitctl_str(rep, "revoked"));
		if (terminate && json_is_integer(cut))
			printf("; %" JSON_INTEGER_FORMAT " connection(s) cut",
				json_integer_value(cut));
		else if (terminate)
			printf("; its connections could NOT be cut (%s): those not cut live on",
				jitctl_str(rep, "terminate_error"));
		if (json_object_get(rep, "kernel_unconfirmed"))
			printf("; the kernel did not confirm it (%s): its elements may stay until "
				"jitd's next check", jitctl_str(rep, "kernel_unconfirmed"));
		printf("\n");
	}
out:
	json_decref(req);
	json_decref(rep);
	return ret;
}

static void grant_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] grant --src PREFIX[,...]\n"
		   "                  --port PORT[/PROTO][,...] --for DURATION --reason TEXT\n"
		   "                  [--json]\n\n"
		   "Break-glass access without a controller (root only): opens the ports for the\n"
		   "sources within the same policy as a signed grant (protected port, allowed\n"
		   "sources, maximum duration). The grant is audited with your user name.\n\n"
		   "  --src PREFIX[,...]         source addresses or prefixes, comma-separated\n"
		   "  --port PORT[/PROTO][,...]  ports, comma-separated; PROTO tcp (default), udp\n"
		   "                             or * (both)\n"
		   "  --for DURATION             ISO 8601 (PT30M) or seconds\n"
		   "  --reason TEXT              why (required: break-glass must be explained)\n"
		   "  --json                     print the applied grant, or the error, as JSON\n\n"
		   "--src, --port, --for and --reason once each: several sources or ports go\n"
		   "in one, comma-separated.\n");
}

/* The agent reads the items as strings, as typed: checked here, so that a typo is a usage error. */
static int add_src(const char *item, json_t *arr)
{
	struct prefix p;

	return prefix_parse(item, &p) ? -EINVAL : jitctl_list_add(item, arr);
}

static int add_port(const char *item, json_t *arr)
{
	unsigned mask;
	uint16_t port;

	return port_spec_parse(item, &port, &mask) ? -EINVAL : jitctl_list_add(item, arr);
}

/*
 * An option given twice: the last would win silently, and "--src A --src B" would open B alone
 * while its caller believes both open. Several sources or ports go comma-separated in one.
 */
static bool given_twice(const char *was, const char *name)
{
	if (!was)
		return false;
	(void)jitctl_usage_error("grant", "--%s given twice (several go in one, comma-separated)",
		name);
	return true;
}

int cmd_grant(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "src", required_argument, NULL, 's' },
		{ "port", required_argument, NULL, 'p' },
		{ "for", required_argument, NULL, 'f' },
		{ "reason", required_argument, NULL, 'r' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	const char *src = NULL, *ports = NULL, *dur = NULL, *reason = NULL, **slot;
	json_t *req = NULL, *rep = NULL, *jsrc = NULL, *jports = NULL;
	bool json = false;
	uint64_t secs;
	int at, c, err, ret = JITCTL_USAGE;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 's': case 'p': case 'f': case 'r':
			slot = c == 's' ? &src : c == 'p' ? &ports : c == 'f' ? &dur : &reason;
			if (given_twice(*slot, c == 's' ? "src" : c == 'p' ? "port" :
				c == 'f' ? "for" : "reason"))
				return JITCTL_USAGE;
			*slot = optarg;
			break;
		case 'j': json = true; break;
		case 'h': grant_usage(stdout); return JITCTL_OK;
		default: return jitctl_bad_option("grant", c, argv, at);
		}
	}
	if (optind != argc)
		return jitctl_usage_error("grant", "unexpected argument '%s' (several sources or "
			"ports go comma-separated)", argv[optind]);
	if (!src || !ports || !dur || !reason || !*reason)
		return jitctl_usage_error("grant", "--src, --port, --for and --reason are "
			"required");
	if (jitctl_duration("grant", "for", dur, &secs)) {
		jitctl_try_help("grant");
		return JITCTL_USAGE;
	}
	if (secs == 0)
		return jitctl_usage_error("grant", "--for '%s' is shorter than 1 s", dur);
	if ((err = jitctl_text_check(reason)) == -ENOMEM)
		return jitctl_out_of_memory("grant");
	if (err)
		return jitctl_usage_error("grant", "--reason is not UTF-8 text");
	if ((err = jitctl_split_list("grant", "src", src, add_src, JITCTL_PREFIX_WHAT, &jsrc)) ||
		(err = jitctl_split_list("grant", "port", ports, add_port, JITCTL_PORT_WHAT,
			&jports))) {
		if (err == -ENOMEM)
			ret = jitctl_out_of_memory("grant");
		else
			jitctl_try_help("grant");
		goto out;
	}
	/* Every string in it was checked: only memory can fail it. */
	req = json_pack("{s:s, s:O, s:O, s:I, s:s}", "op", "grant", "src", jsrc, "ports", jports,
		"duration", (json_int_t)secs, "reason", reason);
	if (!req) {
		ret = jitctl_out_of_memory("grant");
		goto out;
	}
	if ((ret = jitctl_call(o, req, &rep)) ||
		(ret = jitctl_check_reply("grant", json, rep, "grant", JSON_OBJECT)))
		goto out;
	if (json)
		ret = jitctl_print_member(rep, "grant");
	else
		jitctl_print_grant(json_object_get(rep, "grant"));
out:
	json_decref(jsrc);
	json_decref(jports);
	json_decref(req);
	json_decref(rep);
	return ret;
}

static void reload_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] reload [--json]\n\n"
		   "Has the agent re-read its configuration file (root only), as SIGHUP does. A\n"
		   "valid file is applied in one transaction; grants the new policy would not\n"
		   "admit, or whose key is no longer trusted, are removed and audited; the\n"
		   "controller endpoint's TLS files are loaded again (a renewed certificate). An\n"
		   "invalid file, TLS files that do not load, or a keys_dir jitd cannot enter\n"
		   "while a signed grant is active are refused and the running configuration\n"
		   "stays. New keys in keys_dir need no reload. Settings only a restart applies\n"
		   "(host_id, state_dir, the sockets, listen, audit.max_bytes and audit.keep,\n"
		   "table_owner; jitd(8) lists them all) are named when the file changed them.\n\n"
		   "  --json  print the agent's reply as JSON\n");
}

int cmd_reload(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	json_t *req = NULL, *rep = NULL;
	bool json = false;
	int at, c, ret;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 'j': json = true; break;
		case 'h': reload_usage(stdout); return JITCTL_OK;
		default: return jitctl_bad_option("reload", c, argv, at);
		}
	}
	if (optind != argc)
		return jitctl_usage_error("reload", "unexpected argument '%s'", argv[optind]);
	if (!(req = json_pack("{s:s}", "op", "reload")))
		return jitctl_out_of_memory("reload");
	if ((ret = jitctl_call(o, req, &rep)) ||
		(ret = jitctl_check_reply("reload", json, rep, NULL, JSON_NULL)))
		goto out;
	if (json) {
		json_object_del(rep, "ok");
		json_dumpf(rep, stdout, JSON_INDENT(2));
		printf("\n");
	} else {
		json_int_t targets = json_integer_value(json_object_get(rep, "targets"));
		char tn[48] = "";
		const json_t *pending = json_object_get(rep, "restart_pending"), *v;
		size_t i;

		if (targets)
			snprintf(tn, sizeof(tn), ", %lld forwarded target(s)", (long long)targets);
		/* Short of memory, the agent answers {"ok":true} alone: the reload took effect. */
		if (!json_is_integer(json_object_get(rep, "ports")))
			printf("reloaded (the agent could not say more: see jitctl status)\n");
		else
			printf("reloaded %s: %lld protected port(s)%s, %lld grant(s) removed\n",
				jitctl_str(rep, "config"),
				(long long)json_integer_value(json_object_get(rep, "ports")), tn,
				(long long)json_integer_value(json_object_get(rep,
					"grants_removed")));
		if (json_array_size(pending)) {
			printf("restart needed for:");
			json_array_foreach(pending, i, v)
				printf("%s %s", i ? "," : "", json_is_string(v) ?
					json_string_value(v) : "?");
			printf(" (changed in the file; applied at the next start)\n");
		}
	}
out:
	json_decref(req);
	json_decref(rep);
	return ret;
}
