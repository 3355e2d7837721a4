/* jitctl teardown: removes jitd's protection explicitly (package removal runs it). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "agent/jitctl.h"
#include "agent/lockdown.h"
#include "agent/netnslock.h"
#include "agent/nft.h"
#include "agent/ruleset.h"
#include "common/config.h"
#include "common/err.h"
#include "common/proto.h"

static void teardown_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] teardown [--json]\n\n"
		   "Deletes nftables table 'inet jitd' in one transaction (root only): the\n"
		   "protected ports are then no longer closed by jitd, and the access of\n"
		   "active grants ends (a start of jitd restores those not expired).\n"
		   "Refused while the agent listens on its control socket, or holds this\n"
		   "network namespace's lock (@" NETNSLOCK_NAME "): stop it first\n"
		   "(systemctl stop jitd), since stopping jitd alone leaves the ports closed.\n"
		   "Nothing else in the ruleset is touched. Succeeds when there is no table.\n"
		   "Also removes STATE_DIR/lockdown.json (STATE_DIR from the configuration),\n"
		   "from which a start of jitd that fails would close the ports again, and\n"
		   "records the deletion (agent.teardown) in STATE_DIR/audit.jsonl; with -s\n"
		   "and no -c, only when SOCKET is the configuration's control_socket or the\n"
		   "default.\n\n"
		   "  --json  print {\"table\",\"removed\",\"lockdown_removed\"}, or\n"
		   "          {\"error\",\"message\"}, as JSON\n");
}

/* JITCTL_OK, or JITCTL_REFUSED: out of memory for the JSON, the work done all the same. */
static int print_done(bool json, bool removed, bool record, const char *dir)
{
	json_t *o;

	if (!json) {
		printf(removed ? "removed table inet jitd: jitd no longer closes the protected "
				 "ports\n" : "table inet jitd does not exist: nothing to remove\n");
		if (record)
			printf("removed %s/%s: a start of jitd that fails no longer closes them\n",
				dir, LOCKDOWN_FILE);
		return JITCTL_OK;
	}
	if (!(o = json_pack("{s:s, s:b, s:b}", "table", "inet " RULESET_TABLE, "removed",
		removed, "lockdown_removed", record))) {
		fprintf(stderr, "jitctl teardown: out of memory for the JSON; table inet %s %s%s\n",
			RULESET_TABLE, removed ? "is removed" : "did not exist",
			record ? ", and so is " LOCKDOWN_FILE : "");
		return JITCTL_REFUSED;
	}
	json_dumpf(o, stdout, JSON_INDENT(2));
	printf("\n");
	json_decref(o);
	return JITCTL_OK;
}

int cmd_teardown(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct nft_batch *b = NULL;
	char err[NFT_ERRLEN] = "", dir[PATH_MAX];
	struct nft *n = NULL;
	bool exists, json = false, no_syslog;
	struct netnslock_who who;
	int at, c, ret, rc, noted = 0;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 'j': json = true; break;
		case 'h': teardown_usage(stdout); return JITCTL_OK;
		default: return jitctl_bad_option("teardown", c, argv, at);
		}
	}
	if (optind != argc)
		return jitctl_usage_error("teardown", "unexpected argument '%s'", argv[optind]);
	/*
	 * A running agent would go on believing its table is there, and put it back. Where it
	 * listens is -s, or its configuration's control_socket; the default path is asked too
	 * (a jitd started before the file moved its socket). Without -s, a configuration that
	 * cannot be read leaves nowhere sure to ask.
	 */
	if (!o->socket_named && o->config_unread)
		return jitctl_refuse("teardown", json, JIT_ERR_BAD_CONFIG, "cannot read jitd's "
			"configuration to find its control socket; name it with -s SOCKET (nothing "
			"removed)");
	for (int i = 0; i < 2; i++) {
		const char *path = i ? JITCTL_DEFAULT_SOCKET : o->socket;

		if (i && (o->socket_named || !strcmp(path, o->socket)))
			break;
		/* Starting, a jitd holds its lock before it listens. */
		if ((ret = proto_listening(path)) == 0)
			ret = proto_lock_held(path);
		if (ret == 1)
			return jitctl_refuse("teardown", json, JIT_ERR_AGENT_RUNNING,
				"jitd is running (it listens on %s, or is starting there); "
				"stop it first: systemctl stop jitd", path);
		/* A user kept out of the socket's directory or lock: root's command. */
		if (ret < 0)
			return jitctl_refuse("teardown", json, ret == -EACCES || ret == -EPERM ?
				JIT_ERR_PERMISSION : JIT_ERR_INTERNAL,
				"cannot tell whether jitd is running (%s: %s); nothing removed",
				path, strerror(-ret));
	}
	/*
	 * Wherever its socket is (a configuration changed since it started names another), a
	 * jitd of this network namespace holds the namespace's lock.
	 */
	if (!(ret = netnslock_holder(&who)) && who.held && who.jitd) {
		char pid[32];

		return jitctl_refuse("teardown", json, JIT_ERR_AGENT_RUNNING, "jitd is running in "
			"this network namespace (%s, holding @%s); stop it first: "
			"systemctl stop jitd",
			netnslock_pid_text(&who, pid, sizeof(pid)), NETNSLOCK_NAME);
	}
	if (ret < 0 || who.unsure)
		return jitctl_refuse("teardown", json, JIT_ERR_INTERNAL, "cannot tell whether jitd "
			"is running in this network namespace (@%s: %s); nothing removed",
			NETNSLOCK_NAME, ret < 0 ?
			strerror(-ret) : "held by a process that does not answer, whose user this "
			"kernel cannot tell");
	if ((ret = nft_open(&n)) || (ret = nft_table_exists(n, RULESET_TABLE, &exists))) {
		rc = jitctl_refuse("teardown", json, ret == -EPERM ? JIT_ERR_PERMISSION :
			JIT_ERR_INTERNAL, "cannot read the nftables ruleset: %s%s", strerror(-ret),
			ret == -EPERM ? " (run as root: CAP_NET_ADMIN)" : "");
		goto out;
	}
	if (exists && ((ret = nft_batch_new(n, &b)) || (ret = ruleset_delete(b)))) {
		rc = jitctl_refuse("teardown", json, JIT_ERR_INTERNAL, "%s", strerror(-ret));
		goto out;
	}
	if (exists && (ret = nft_batch_commit(b, err))) {
		rc = jitctl_refuse("teardown", json, ret == -EPERM ? JIT_ERR_PERMISSION :
			JIT_ERR_KERNEL, "%s", err[0] ? err : strerror(-ret));
		goto out;
	}
	/*
	 * The table is gone: a record left behind is said, not a failure of the teardown. -s
	 * naming another socket than the configuration's is another jitd's teardown (in another
	 * namespace, say), and the record that file leads to is not that jitd's; but for the
	 * default socket, the packages' own teardown. Whichever, a record whose directory a
	 * running jitd holds stays (lockdown_forget).
	 */
	config_state_dir_hint(o->config_path, dir, sizeof(dir), &no_syslog);
	if (o->socket_named && !o->config_named && strcmp(o->socket, o->config_socket) &&
		strcmp(o->socket, JITCTL_DEFAULT_SOCKET)) {
		fprintf(stderr, "jitctl teardown: %s/%s left: -s names another jitd than %s "
			"(name its configuration with -c to remove its record)\n", dir,
			LOCKDOWN_FILE, o->config_path);
		ret = 0;
	} else if ((ret = lockdown_forget(dir, exists ? "jitctl teardown: table inet jitd "
			"deleted; the protected ports are as the host's ruleset leaves them, and "
			"the active grants' access ended (a start of jitd restores those not "
			"expired)" : NULL, no_syslog, &noted)) == -EBUSY) {
		fprintf(stderr, "jitctl teardown: %s/%s left: a running jitd uses %s\n", dir,
			LOCKDOWN_FILE, dir);
	} else if (ret < 0) {
		fprintf(stderr, "jitctl teardown: cannot remove %s/%s: %s: a start of jitd that "
			"fails would close the ports again\n", dir, LOCKDOWN_FILE, strerror(-ret));
	}
	if (noted)
		fprintf(stderr, "jitctl teardown: cannot record agent.teardown in %s/audit.jsonl: "
			"%s\n", dir, strerror(-noted));
	rc = print_done(json, exists, ret == 1, dir);
out:
	nft_batch_free(b);
	nft_close(&n);
	return rc;
}
