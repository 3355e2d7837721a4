#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bench.h"

uint64_t now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/*
 * The machine's CPU time so far in clock ticks (/proc/stat's first line): busy (user, nice,
 * system, irq, softirq, steal) and idle (idle, iowait). 0 when it cannot be read.
 */
int machine_ticks(uint64_t *busy, uint64_t *idle)
{
	unsigned long long v[8] = { 0 };
	FILE *f = fopen("/proc/stat", "re");
	int n;

	*busy = *idle = 0;
	if (!f)
		return -errno;
	n = fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3],
		&v[4], &v[5], &v[6], &v[7]);
	fclose(f);
	if (n != 8)
		return -EINVAL;
	*busy = v[0] + v[1] + v[2] + v[5] + v[6] + v[7];
	*idle = v[3] + v[4];
	return 0;
}

/* CPU time of this process, every thread, user and system. */
uint64_t cpu_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

uint64_t quantile(const uint64_t *sorted, size_t n, double q)
{
	size_t i;

	if (!n)
		return 0;
	/* Nearest rank: p99 of 100 samples is the 99th, not an interpolation past the data. */
	i = (size_t)(q * (double)n + 0.999999);
	if (i < 1)
		i = 1;
	if (i > n)
		i = n;
	return sorted[i - 1];
}

void sort_u64(uint64_t *v, size_t n)
{
	qsort(v, n, sizeof(*v), cmp_u64);
}

void print_stats(const char *prefix, uint64_t *v, size_t n)
{
	uint64_t p50, p99;

	sort_u64(v, n);
	p50 = quantile(v, n, 0.50);
	p99 = quantile(v, n, 0.99);
	printf("%s_n=%zu\n", prefix, n);
	printf("%s_p50_us=%.1f\n", prefix, (double)p50 / 1e3);
	printf("%s_p99_us=%.1f\n", prefix, (double)p99 / 1e3);
	printf("%s_max_us=%.1f\n", prefix, n ? (double)v[n - 1] / 1e3 : 0.0);
}

uint32_t source_addr(uint64_t idx)
{
	return (10u << 24) + (uint32_t)(2 * idx);
}

int64_t exp_offset(uint64_t idx)
{
	return (int64_t)(idx % 60) * 10;
}

void format_addr(uint32_t a, char *buf, size_t len)
{
	snprintf(buf, len, "%u.%u.%u.%u", a >> 24, (a >> 16) & 255, (a >> 8) & 255, a & 255);
}

char *read_all(const char *path, size_t *len)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "r") : stdin;
	char *buf = NULL;
	size_t cap = 0, n = 0, got;

	if (!f)
		return NULL;
	for (;;) {
		if (cap - n < 65536) {
			char *nb = realloc(buf, cap ? cap * 2 : 1 << 20);

			if (!nb)
				goto fail;
			buf = nb;
			cap = cap ? cap * 2 : 1 << 20;
		}
		got = fread(buf + n, 1, cap - n - 1, f);
		n += got;
		if (got == 0)
			break;
	}
	if (ferror(f))
		goto fail;
	buf[n] = '\0';
	if (f != stdin)
		fclose(f);
	if (len)
		*len = n;
	return buf;
fail:
	if (f != stdin)
		fclose(f);
	free(buf);
	return NULL;
}

static const struct {
	const char *name;
	int (*fn)(int argc, char **argv);
	const char *what;
} cmds[] = {
	{ "submit", cmd_submit, "sign grants in-process and submit them; latency and rate" },
	{ "revoke", cmd_revoke, "revoke bench grants one at a time over the control socket" },
	{ "verifyrate", cmd_verifyrate, "jitd's grant verification alone, in-process, 1 and N threads" },
	{ "metrics", cmd_metrics, "GET /metrics (plain or mutual TLS) to stdout" },
	{ "histdiff", cmd_histdiff, "a histogram's change between two /metrics texts" },
	{ "verify", cmd_verify, "every granted source in `nft -j list set` with its timeout" },
	{ "waitsock", cmd_waitsock, "time until the control socket answers status" },
	{ "listen", cmd_listen, "accept and close TCP connections (bounded lifetime)" },
	{ "connrate", cmd_connrate, "new TCP connections per second from one source" },
	{ "nftloop", cmd_nftloop, "one `nft add element` process per grant, sequentially" },
	{ "stats", cmd_stats, "median, p99, max of numbers on stdin" },
	{ "serve", cmd_serve, "HTTP and inline verification on every CPU, nothing else" },
	{ "fsync", cmd_fsync, "appends made durable with fdatasync: one file, two side by side" },
};

static void usage(FILE *f)
{
	fprintf(f, "usage: jitbench COMMAND [OPTIONS]   (run by scripts/bench)\n\n");
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
		fprintf(f, "  %-9s %s\n", cmds[i].name, cmds[i].what);
}

int main(int argc, char **argv)
{
	if (argc < 2) {
		usage(stderr);
		return 2;
	}
	for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
		if (!strcmp(argv[1], cmds[i].name))
			return cmds[i].fn(argc - 1, argv + 1);
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		usage(stdout);
		return 0;
	}
	fprintf(stderr, "jitbench: unknown command '%s'\n", argv[1]);
	usage(stderr);
	return 2;
}
