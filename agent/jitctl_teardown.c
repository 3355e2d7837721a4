/* jitctl teardown: removes jitd's protection explicitly (package removal runs it). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>

#include "agent/jitctl.h"
#include "agent/nft.h"
#include "agent/ruleset.h"
#include "common/proto.h"

static void teardown_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] teardown\n\n"
		   "Deletes nftables table 'inet jitd' in one transaction (root only): the\n"
		   "protected ports are then no longer closed by jitd, and active grants end.\n"
		   "Refused while the agent listens on its control socket: stop it first\n"
		   "(systemctl stop jitd), since stopping jitd alone leaves the ports closed.\n"
		   "Nothing else in the ruleset is touched. Succeeds when there is no table.\n");
}

int cmd_teardown(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct nft_batch *b = NULL;
	char err[NFT_ERRLEN] = "";
	struct nft *n = NULL;
	int c, ret, rc = JITCTL_REFUSED;
	bool exists;

	optind = 0;
	while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
		switch (c) {
		case 'h': teardown_usage(stdout); return JITCTL_OK;
		default: teardown_usage(stderr); return JITCTL_USAGE;
		}
	}
	if (optind != argc) {
		teardown_usage(stderr);
		return JITCTL_USAGE;
	}
	/*
	 * A running agent would go on believing its table is there, and put it back. Where it
	 * listens is -s, or its configuration's control_socket; the default path is asked too
	 * (a jitd started before the file moved its socket). Without -s, a configuration that
	 * cannot be read leaves nowhere sure to ask.
	 */
	if (!o->socket_named && o->config_unread) {
		fprintf(stderr, "jitctl teardown: cannot read jitd's configuration to find its "
				"control socket; name it with -s SOCKET (nothing removed)\n");
		return JITCTL_REFUSED;
	}
	for (int i = 0; i < 2; i++) {
		const char *path = i ? JITCTL_DEFAULT_SOCKET : o->socket;

		if (i && (o->socket_named || !strcmp(path, o->socket)))
			break;
		/* Starting, a jitd holds its lock before it listens. */
		if ((ret = proto_listening(path)) == 0)
			ret = proto_lock_held(path);
		if (ret == 1) {
			fprintf(stderr, "jitctl teardown: jitd is running (it listens on %s, or "
					"is starting there); stop it first: systemctl stop jitd\n",
					path);
			return JITCTL_REFUSED;
		}
		if (ret < 0) {
			fprintf(stderr, "jitctl teardown: cannot tell whether jitd is running (%s: "
					"%s); nothing removed\n", path, strerror(-ret));
			return JITCTL_REFUSED;
		}
	}
	if ((ret = nft_open(&n)) || (ret = nft_table_exists(n, RULESET_TABLE, &exists))) {
		fprintf(stderr, "jitctl teardown: cannot read the nftables ruleset: %s%s\n",
			strerror(-ret), ret == -EPERM ? " (run as root: CAP_NET_ADMIN)" : "");
		goto out;
	}
	if (!exists) {
		printf("table inet jitd does not exist: nothing to remove\n");
		rc = JITCTL_OK;
		goto out;
	}
	if ((ret = nft_batch_new(n, &b)) || (ret = ruleset_delete(b)) ||
		(ret = nft_batch_commit(b, err))) {
		fprintf(stderr, "jitctl teardown: %s\n", err[0] ? err : strerror(-ret));
		goto out;
	}
	printf("removed table inet jitd: jitd no longer closes the protected ports\n");
	rc = JITCTL_OK;
out:
	nft_batch_free(b);
	nft_close(&n);
	return rc;
}
