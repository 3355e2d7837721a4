/* jitctl teardown: removes jitd's protection explicitly (package removal runs it). */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "agent/jitctl.h"
#include "agent/nft.h"
#include "agent/ruleset.h"

static void teardown_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] teardown\n\n"
		   "Deletes nftables table 'inet jitd' in one transaction (root only): the\n"
		   "protected ports are then no longer closed by jitd, and active grants end.\n"
		   "Refused while the agent listens on its control socket: stop it first\n"
		   "(systemctl stop jitd), since stopping jitd alone leaves the ports closed.\n"
		   "Nothing else in the ruleset is touched. Succeeds when there is no table.\n");
}

/*
 * A running agent would go on believing its table is there. Something accepting connections on
 * the socket is taken for the agent, whether or not it answers: one at its control_connections
 * limit, busy, or out of memory closes or stalls the conversation but is still running.
 * 0: nothing listens (no socket, or a stale one); -EBUSY: something does; else -errno.
 */
static int agent_listening(const struct jitctl_opts *o)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	int fd, ret = -EBUSY;

	if (strlen(o->socket) >= sizeof(sa.sun_path))
		return -ENAMETOOLONG;
	memcpy(sa.sun_path, o->socket, strlen(o->socket) + 1);
	if ((fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0)) < 0)
		return -errno;
	/* A full backlog (EAGAIN) is a listener too. */
	if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 && errno != EAGAIN)
		ret = errno == ECONNREFUSED || errno == ENOENT ? 0 : -errno;
	close(fd);
	return ret;
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
	if ((ret = agent_listening(o)) == -EBUSY) {
		fprintf(stderr, "jitctl teardown: jitd is running (it listens on %s); stop it "
				"first: systemctl stop jitd\n", o->socket);
		return JITCTL_REFUSED;
	}
	if (ret) {
		fprintf(stderr, "jitctl teardown: cannot tell whether jitd is running (%s: %s); "
				"nothing removed\n", o->socket, strerror(-ret));
		return JITCTL_REFUSED;
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
