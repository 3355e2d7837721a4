#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <netinet/in.h>
#include <poll.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"

extern char **environ;

/* --- the kernel witness ------------------------------------------------------------------- */

struct kelem {
	uint32_t lo, hi;	/* the source: lo == hi for one address */
	int64_t expires;	/* seconds left, as nft printed it */
	int proto, port;	/* IPPROTO_*; -1 when not a protocol nft names */
	bool used;		/* taken by a granted line: each element accounts for one grant */
};

static int cmp_kelem(const void *a, const void *b)
{
	const struct kelem *x = a, *y = b;

	return x->lo < y->lo ? -1 : x->lo > y->lo;
}

static int parse_ip(const char *s, uint32_t *out)
{
	struct in_addr a;

	if (!s || inet_pton(AF_INET, s, &a) != 1)
		return -EINVAL;
	*out = ntohl(a.s_addr);
	return 0;
}

/* The source of a grant set's element: an address, a range or a prefix, as nft -j prints them. */
static int elem_source(const json_t *v, uint32_t *lo, uint32_t *hi)
{
	const json_t *r = json_object_get(v, "range"), *p = json_object_get(v, "prefix");

	if (json_is_string(v)) {
		if (parse_ip(json_string_value(v), lo))
			return -EINVAL;
		*hi = *lo;
		return 0;
	}
	if (json_is_array(r))
		return parse_ip(json_string_value(json_array_get(r, 0)), lo) ||
			parse_ip(json_string_value(json_array_get(r, 1)), hi) ? -EINVAL : 0;
	if (json_is_object(p)) {
		json_int_t len = json_integer_value(json_object_get(p, "len"));

		if (parse_ip(json_string_value(json_object_get(p, "addr")), lo) || len < 0 ||
			len > 32)
			return -EINVAL;
		*hi = *lo | (len == 32 ? 0 : (uint32_t)(0xffffffffu >> len));
		return 0;
	}
	return -EINVAL;
}

/* nft prints a protocol it knows by name and any other as a number. */
static int elem_proto(const json_t *v)
{
	const char *s = json_string_value(v);

	if (json_is_integer(v))
		return (int)json_integer_value(v);
	return !s ? -1 : !strcmp(s, "tcp") ? IPPROTO_TCP : !strcmp(s, "udp") ? IPPROTO_UDP : -1;
}

/*
 * The sets that hold the configuration, not grants: protected ports, always_allow, a gateway's
 * targets. Every other set and map of the table is counted, so that an element nobody granted
 * shows wherever jitd put it.
 */
static bool config_set(const char *name)
{
	static const char *const names[] = { "protected", "always4", "always6", "targets4",
		"targets6" };

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (name && !strcmp(name, names[i]))
			return true;
	return false;
}

/*
 * Collects every element of the table's grant sets and maps. An element that is not an IPv4
 * source . protocol . port (an IPv6 one, a map's) is left out of the list but counted in
 * *odd: the benchmark grants none, so each is one nobody granted. Returns the count or -errno.
 */
static long kernel_elems(const json_t *root, struct kelem **out, size_t *odd)
{
	const json_t *obj, *e;
	size_t i, j, n = 0, cap = 0;
	struct kelem *v = NULL;

	*odd = 0;
	json_array_foreach(json_object_get(root, "nftables"), i, obj) {
		const json_t *set = json_object_get(obj, "set");

		if (!set)
			set = json_object_get(obj, "map");
		if (!set || config_set(json_string_value(json_object_get(set, "name"))))
			continue;
		json_array_foreach(json_object_get(set, "elem"), j, e) {
			const json_t *inner = json_object_get(e, "elem"), *val, *cc;
			struct kelem k = { .expires = -1 };

			val = inner ? json_object_get(inner, "val") : e;
			if (!(cc = json_object_get(val, "concat")) || !json_is_array(cc) ||
				json_array_size(cc) != 3 ||
				elem_source(json_array_get(cc, 0), &k.lo, &k.hi)) {
				++*odd;
				continue;
			}
			k.proto = elem_proto(json_array_get(cc, 1));
			k.port = json_is_integer(json_array_get(cc, 2)) ?
				(int)json_integer_value(json_array_get(cc, 2)) : -1;
			if (inner && json_is_integer(json_object_get(inner, "expires")))
				k.expires = json_integer_value(json_object_get(inner, "expires"));
			if (n == cap) {
				struct kelem *nv = realloc(v, (cap = cap ? cap * 2 : 4096) * sizeof(*v));

				if (!nv) {
					free(v);
					return -ENOMEM;
				}
				v = nv;
			}
			v[n++] = k;
		}
	}
	if (n)
		qsort(v, n, sizeof(*v), cmp_kelem);
	*out = v;
	return (long)n;
}

/*
 * The element of a one-address grant from a, to TCP port: exactly that address (a range or
 * prefix around it would admit others), not yet taken by another line. NULL when there is none;
 * *near then says what the kernel holds for a instead, if anything.
 */
static struct kelem *find_elem(struct kelem *v, size_t n, uint32_t a, int port,
	const struct kelem **near)
{
	size_t lo = 0, hi = n;

	*near = NULL;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;

		if (v[mid].lo < a)
			lo = mid + 1;
		else
			hi = mid;
	}
	for (; lo < n && v[lo].lo == a; lo++) {
		if (v[lo].hi == a && v[lo].proto == IPPROTO_TCP && v[lo].port == port &&
			!v[lo].used)
			return &v[lo];
		*near = &v[lo];
	}
	return NULL;
}

static void report_near(const char *src, const struct kelem *k)
{
	char lo[16], hi[16];

	format_addr(k->lo, lo, sizeof(lo));
	format_addr(k->hi, hi, sizeof(hi));
	fprintf(stderr, "jitbench verify: %s missing in the kernel; it holds %s-%s proto %d port "
		"%d%s\n", src, lo, hi, k->proto, k->port, k->used ? " (already taken)" : "");
}

int cmd_verify(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "granted", required_argument, NULL, 'g' }, { "kernel", required_argument, NULL, 'k' },
		{ "listed-at", required_argument, NULL, 't' }, { "port", required_argument, NULL, 'p' },
		{ "tolerance", required_argument, NULL, 'T' },
		{ "listed-by", required_argument, NULL, 'b' }, { NULL, 0, NULL, 0 },
	};
	const char *granted = NULL, *kernel = "-";
	long long listed_at = 0, listed_by = 0, tolerance = 3;
	size_t expected = 0, found = 0, missing = 0, bad_time = 0, odd = 0, unexpected;
	long long max_dev = 0;
	int port = 22, c, ret = 1;
	struct kelem *v = NULL;
	json_t *root = NULL;
	json_error_t je;
	char line[128];
	FILE *g = NULL;
	long n;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'g': granted = optarg; break;
		case 'k': kernel = optarg; break;
		case 't': listed_at = strtoll(optarg, NULL, 10); break;
		case 'p': port = atoi(optarg); break;
		case 'T': tolerance = strtoll(optarg, NULL, 10); break;
		case 'b': listed_by = strtoll(optarg, NULL, 10); break;
		default: goto usage;
		}
	}
	if (!granted || !listed_at)
		goto usage;
	if (listed_by < listed_at)
		listed_by = listed_at;
	if (!(root = strcmp(kernel, "-") ? json_load_file(kernel, 0, &je) :
		json_loadf(stdin, 0, &je))) {
		fprintf(stderr, "jitbench verify: kernel listing: %s\n", je.text);
		return 1;
	}
	if ((n = kernel_elems(root, &v, &odd)) < 0 || !(g = fopen(granted, "r")))
		goto out;
	while (fgets(line, sizeof(line), g)) {
		char src[32];
		long long exp, want, dev;
		const struct kelem *near;
		struct kelem *k;
		uint32_t a;

		if (sscanf(line, "%31s %lld", src, &exp) != 2 || parse_ip(src, &a))
			continue;
		expected++;
		if (!(k = find_elem(v, (size_t)n, a, port, &near))) {
			if (missing++ >= 5)
				continue;
			if (near)
				report_near(src, near);
			else
				fprintf(stderr, "jitbench verify: %s missing in the kernel\n", src);
			continue;
		}
		k->used = true;
		/*
		 * Expiry from the grant's exp and the moment of listing, not from jitd's word. A
		 * listing of 200,000 elements takes seconds, and each set is read at some moment
		 * within it: the element must expire within [exp - listed_by, exp - listed_at].
		 */
		want = exp - listed_at;
		if (k->expires > want)
			dev = k->expires - want;
		else if (k->expires < exp - listed_by)
			dev = exp - listed_by - k->expires;
		else
			dev = 0;
		if (dev > max_dev)
			max_dev = dev;
		if (dev > tolerance) {
			if (bad_time++ < 5)
				fprintf(stderr, "jitbench verify: %s expires in %lld s, wanted "
					"%lld-%lld s\n", src, (long long)k->expires,
					exp - listed_by, want);
		} else {
			found++;
		}
	}
	/* Whatever no granted line took: a grant revoked but still there, or one nobody made. */
	unexpected = odd + (size_t)n - (expected - missing);
	for (long i = 0, shown = 0; i < n && shown < 5; i++) {
		char lo_s[16], hi_s[16];

		if (v[i].used)
			continue;
		format_addr(v[i].lo, lo_s, sizeof(lo_s));
		format_addr(v[i].hi, hi_s, sizeof(hi_s));
		fprintf(stderr, "jitbench verify: %s-%s proto %d port %d in the kernel, not "
			"granted\n", lo_s, hi_s, v[i].proto, v[i].port);
		shown++;
	}
	if (odd)
		fprintf(stderr, "jitbench verify: %zu elements in the kernel that are not an IPv4 "
			"source . protocol . port\n", odd);
	/* found: present, exactly, with the right timeout; what the table's row counts. */
	printf("kernel_elements=%zu\nexpected=%zu\nfound=%zu\nmissing=%zu\nbad_timeout=%zu\n"
		"unexpected=%zu\nmax_timeout_dev_s=%lld\n", (size_t)n + odd, expected, found,
		missing, bad_time, unexpected, max_dev);
	ret = expected && found == expected && !unexpected ? 0 : 1;
out:
	if (g)
		fclose(g);
	free(v);
	json_decref(root);
	return ret;
usage:
	fprintf(stderr, "usage: jitbench verify --granted FILE --listed-at UNIX [--listed-by UNIX] "
			"[--kernel FILE|-] [--port 22] [--tolerance SECS]\n"
			"  Each line of FILE (source, exp) must be one element of the kernel's\n"
			"  grant sets: that address alone, tcp, PORT, expiring at exp within the\n"
			"  tolerance; and the sets must hold nothing else.\n");
	return 2;
}

/* --- restart: until the control socket answers --------------------------------------------- */

int cmd_waitsock(int argc, char **argv)
{
	struct via via = { .kind = VIA_CTL };
	uint64_t t0 = now_ns(), limit;
	char *reply = NULL;

	if (argc != 3 || strlen(argv[1]) >= sizeof(via.path)) {
		fprintf(stderr, "usage: jitbench waitsock SOCK TIMEOUT_MS\n");
		return 2;
	}
	strcpy(via.path, argv[1]);
	limit = t0 + strtoull(argv[2], NULL, 10) * 1000000u;
	/*
	 * An unknown op: any reply proves the restore is done and the loop serves, without
	 * building a 100k-grant status document that would be counted as restart time.
	 */
	while (now_ns() < limit) {
		if (!ctl_call(&via, "{\"op\":\"bench-ping\"}\n", &reply)) {
			free(reply);
			printf("ready_ms=%.1f\n", (double)(now_ns() - t0) / 1e6);
			return 0;
		}
		usleep(1000);
	}
	fprintf(stderr, "jitbench waitsock: %s did not answer within %s ms\n", argv[1], argv[2]);
	return 1;
}

/* --- packets -------------------------------------------------------------------------------- */

int cmd_listen(int argc, char **argv)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	uint64_t end;
	int fd, one = 1;

	if (argc != 3) {
		fprintf(stderr, "usage: jitbench listen PORT MAX_SECONDS\n");
		return 2;
	}
	sa.sin_port = htons((uint16_t)atoi(argv[1]));
	end = now_ns() + strtoull(argv[2], NULL, 10) * 1000000000u;
	if ((fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0)) < 0 ||
		setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) ||
		bind(fd, (struct sockaddr *)&sa, sizeof(sa)) || listen(fd, 4096)) {
		perror("jitbench listen");
		return 1;
	}
	/* Bounded even if the script that started it is killed before its trap runs. */
	while (now_ns() < end) {
		struct pollfd p = { .fd = fd, .events = POLLIN };
		int c;

		if (poll(&p, 1, 200) <= 0)
			continue;
		if ((c = accept(fd, NULL, NULL)) >= 0)
			close(c);
	}
	close(fd);
	return 0;
}

int cmd_connrate(int argc, char **argv)
{
	struct sockaddr_in src = { .sin_family = AF_INET }, dst = { .sin_family = AF_INET };
	struct linger lg = { 1, 0 };
	struct timeval tv = { 2, 0 };
	uint64_t t0, end, ok = 0, failed = 0;
	double secs;

	if (argc != 5 || parse_ip(argv[1], &src.sin_addr.s_addr) ||
		parse_ip(argv[2], &dst.sin_addr.s_addr)) {
		fprintf(stderr, "usage: jitbench connrate SRC DST PORT SECONDS\n");
		return 2;
	}
	src.sin_addr.s_addr = htonl(src.sin_addr.s_addr);
	dst.sin_addr.s_addr = htonl(dst.sin_addr.s_addr);
	dst.sin_port = htons((uint16_t)atoi(argv[3]));
	secs = strtod(argv[4], NULL);
	t0 = now_ns();
	end = t0 + (uint64_t)(secs * 1e9);
	while (now_ns() < end) {
		int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

		if (fd < 0)
			return 1;
		/*
		 * Closed with a reset: no TIME_WAIT on the client, so the ephemeral ports last
		 * for the whole run and the rate measures the packet path, not port exhaustion.
		 */
		if (setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)) ||
			setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) ||
			bind(fd, (struct sockaddr *)&src, sizeof(src)) ||
			connect(fd, (struct sockaddr *)&dst, sizeof(dst)))
			failed++;
		else
			ok++;
		close(fd);
	}
	secs = (double)(now_ns() - t0) / 1e9;
	printf("connects=%llu\nfailed=%llu\nrate=%.1f\n", (unsigned long long)ok,
		(unsigned long long)failed, (double)ok / secs);
	return ok && failed * 100 <= ok ? 0 : 1;
}

/* --- the baseline: one nft process per grant ------------------------------------------------ */

int cmd_nftloop(int argc, char **argv)
{
	/* posix_spawn takes char *const[]: writable copies, as -Wwrite-strings wants. */
	char a0[] = "nft", a1[] = "add", a2[] = "element", a3[] = "inet";
	uint64_t first, count, t0, t1, *lat;
	char *table, *set;
	size_t failed = 0;
	unsigned port, secs;

	if (argc != 7) {
		fprintf(stderr, "usage: jitbench nftloop TABLE SET FIRST COUNT PORT SECS\n");
		return 2;
	}
	table = argv[1];
	set = argv[2];
	first = strtoull(argv[3], NULL, 10);
	count = strtoull(argv[4], NULL, 10);
	port = (unsigned)atoi(argv[5]);
	secs = (unsigned)atoi(argv[6]);
	if (!count || !(lat = calloc(count, sizeof(*lat))))
		return 2;
	t0 = now_ns();
	for (uint64_t i = 0; i < count; i++) {
		char src[16], elem[96];
		char *args[] = { a0, a1, a2, a3, table, set, elem, NULL };
		uint64_t s = now_ns();
		int st = 0;
		pid_t pid;

		format_addr(source_addr(first + i), src, sizeof(src));
		snprintf(elem, sizeof(elem), "{ %s . tcp . %u timeout %us }", src, port, secs);
		if (posix_spawnp(&pid, "nft", NULL, NULL, args, environ) ||
			waitpid(pid, &st, 0) != pid || !WIFEXITED(st) || WEXITSTATUS(st)) {
			if (failed++ < 5)
				fprintf(stderr, "jitbench nftloop: nft add element %s failed\n", elem);
		}
		lat[i] = now_ns() - s;
	}
	t1 = now_ns();
	printf("failed=%zu\nrate=%.1f\n", failed, (double)count / ((double)(t1 - t0) / 1e9));
	print_stats("lat", lat, count);
	free(lat);
	return failed ? 1 : 0;
}

/* --- numbers from the script ---------------------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* The nearest-rank quantile, as quantile() does for the latency samples. */
static double dquantile(const double *sorted, size_t n, double q)
{
	size_t i = (size_t)(q * (double)n + 0.999999);

	return sorted[(i < 1 ? 1 : i > n ? n : i) - 1];
}

int cmd_stats(int argc, char **argv)
{
	const char *prefix = argc > 1 ? argv[1] : "v";
	double *v = NULL, x;
	size_t n = 0, cap = 0;

	while (scanf("%lf", &x) == 1) {
		if (n == cap) {
			double *nv = realloc(v, (cap = cap ? cap * 2 : 64) * sizeof(*v));

			if (!nv) {
				free(v);
				return 1;
			}
			v = nv;
		}
		v[n++] = x;
	}
	if (!n) {
		fprintf(stderr, "jitbench stats: no numbers on stdin\n");
		return 1;
	}
	qsort(v, n, sizeof(*v), cmp_double);
	printf("%s_n=%zu\n%s_p50=%.9g\n%s_p99=%.9g\n%s_max=%.9g\n", prefix, n, prefix,
		dquantile(v, n, 0.5), prefix, dquantile(v, n, 0.99), prefix, v[n - 1]);
	free(v);
	return 0;
}
