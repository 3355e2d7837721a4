/*
 * cttool: agent/conntrack.c from the command line, for the end-to-end tests. It acts in the
 * network namespace it runs in (ip netns exec), as root.
 *
 *   cttool count SRC_PREFIX PORT[/PROTO]   flows of that one-source, one-port grant
 *   cttool kill SRC_PREFIX PORT[/PROTO]    deletes them; prints how many were deleted
 *   cttool many SRC_PREFIX PORT[/PROTO]... one dump, one count per pair, one per line
 *
 * PROTO is tcp (default), udp or "*" (both). Exit codes: 0 done, 1 conntrack failed, 64 usage.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/conntrack.h"
#include "common/grant.h"

#define EXIT_FAILED 1
#define EXIT_USAGE 64
#define MAX_GRANTS 32

static int usage(void)
{
	fputs("usage: cttool count|kill SRC_PREFIX PORT[/PROTO]\n"
	      "       cttool many SRC_PREFIX PORT[/PROTO] [SRC_PREFIX PORT[/PROTO]]...\n",
		stderr);
	return EXIT_USAGE;
}

/* A grant of one source and spec's one or two (port, protocol) pairs, in the caller's storage. */
static int grant_build(const char *src, const char *spec, struct grant *g, struct prefix *p,
	struct port_spec ps[static 2])
{
	unsigned mask;
	uint16_t port;

	if (prefix_parse(src, p)) {
		fprintf(stderr, "cttool: not a prefix: '%s'\n", src);
		return -EINVAL;
	}
	if (port_spec_parse(spec, &port, &mask)) {
		fprintf(stderr, "cttool: not a port: '%s'\n", spec);
		return -EINVAL;
	}
	memset(g, 0, sizeof(*g));
	g->src = p;
	g->n_src = 1;
	g->ports = ps;
	if (mask & PORT_PROTO_TCP)
		ps[g->n_ports++] = (struct port_spec){.port = port, .proto = PORT_PROTO_TCP};
	if (mask & PORT_PROTO_UDP)
		ps[g->n_ports++] = (struct port_spec){.port = port, .proto = PORT_PROTO_UDP};
	return 0;
}

int main(int argc, char **argv)
{
	static struct grant g[MAX_GRANTS];
	static struct prefix p[MAX_GRANTS];
	static struct port_spec ps[MAX_GRANTS][2];
	long counts[MAX_GRANTS];
	struct conntrack *ct = NULL;
	size_t n = 0;
	int ret = EXIT_FAILED, r;
	bool many;

	if (argc < 4 || argc % 2)
		return usage();
	many = !strcmp(argv[1], "many");
	if ((!many && argc != 4) || (many && (size_t)(argc - 2) / 2 > MAX_GRANTS) ||
		(!many && strcmp(argv[1], "count") && strcmp(argv[1], "kill")))
		return usage();
	for (int i = 2; i + 1 < argc; i += 2, n++)
		if (grant_build(argv[i], argv[i + 1], &g[n], &p[n], ps[n]))
			return EXIT_USAGE;
	if ((r = conntrack_open(&ct))) {
		fprintf(stderr, "cttool: conntrack: %s\n", strerror(-r));
		goto out;
	}
	if (many)
		r = conntrack_count_many(ct, g, n, NULL, 0, counts);
	else
		r = conntrack_flows(ct, &g[0], !strcmp(argv[1], "kill"), &counts[0]);
	if (r) {
		fprintf(stderr, "cttool: %s: %s\n", argv[1], strerror(-r));
		/* Deleted is deleted, error or not: the test must see how many. */
		if (!strcmp(argv[1], "kill"))
			printf("%ld\n", counts[0]);
		goto out;
	}
	for (size_t i = 0; i < n; i++)
		printf("%ld\n", counts[i]);
	ret = 0;
out:
	conntrack_close(&ct);
	return ret;
}
