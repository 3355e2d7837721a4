#include <errno.h>
#include <getopt.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

#include "bench.h"
#include "common/err.h"
#include "common/grant.h"
#include "common/jws.h"
#include "common/keys.h"

#define MAX_CONNS 256

/* --- signing ----------------------------------------------------------------------------- */

struct pool {
	EVP_PKEY *key;
	const char *kid, *aud;
	uint64_t first;		/* source and jti index of tokens[0] */
	size_t count;
	int64_t exp;		/* grant idx expires at exp + exp_offset(idx) */
	unsigned port;
	char **tokens;
	atomic_size_t next;
	atomic_int err;
};

static char *sign_one(struct pool *p, json_t *header, uint64_t idx, int64_t iat)
{
	char src[16], jti[32], *payload, *tok = NULL;
	json_int_t exp = (json_int_t)(p->exp + exp_offset(idx));
	json_t *claims;

	format_addr(source_addr(idx), src, sizeof(src));
	snprintf(jti, sizeof(jti), "bench-%llu", (unsigned long long)idx);
	claims = json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:[s], s:[{s:i, s:s}]}", "iss", "bench",
		"aud", p->aud, "sub", "bench", "jti", jti, "iat", (json_int_t)iat, "exp", exp,
		"src", src, "ports", "port", (int)p->port, "protocol", "tcp");
	if (!claims || !(payload = json_dumps(claims, JSON_COMPACT))) {
		json_decref(claims);
		return NULL;
	}
	if (jws_sign(header, (const unsigned char *)payload, strlen(payload), p->key, &tok))
		tok = NULL;
	free(payload);
	json_decref(claims);
	return tok;
}

/* Signing threads: a header each, since jansson's encoder marks objects while it walks them. */
static void *sign_thread(void *arg)
{
	struct pool *p = arg;
	json_t *header = json_pack("{s:s, s:s, s:s}", "alg", "EdDSA", "typ", "jit-grant+jwt", "kid",
		p->kid);
	int64_t iat = (int64_t)time(NULL);
	size_t i;

	if (!header) {
		atomic_store(&p->err, 1);
		return NULL;
	}
	while ((i = atomic_fetch_add(&p->next, 1)) < p->count) {
		if (!(p->tokens[i] = sign_one(p, header, p->first + i, iat))) {
			atomic_store(&p->err, 1);
			break;
		}
	}
	json_decref(header);
	return NULL;
}

static int pool_sign(struct pool *p)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	pthread_t th[64];
	int nt = n < 1 ? 1 : n > 64 ? 64 : (int)n, started = 0;

	if (!(p->tokens = calloc(p->count ? p->count : 1, sizeof(char *))))
		return -ENOMEM;
	atomic_store(&p->next, 0);
	for (int i = 0; i < nt; i++)
		if (!pthread_create(&th[i], NULL, sign_thread, p))
			started++;
		else
			break;
	if (!started)
		sign_thread(p);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	return atomic_load(&p->err) ? -EIO : 0;
}

static void pool_clear(struct pool *p)
{
	for (size_t i = 0; p->tokens && i < p->count; i++)
		free(p->tokens[i]);
	free(p->tokens);
	EVP_PKEY_free(p->key);
	p->tokens = NULL;
	p->key = NULL;
}

/* --- submitting -------------------------------------------------------------------------- */

struct run {
	struct pool *pool;
	const struct via *via;
	uint64_t deadline;	/* 0: until the pool is used up */
	size_t batch;		/* grants per request: 1, or more over /v1/grants/batch */
	atomic_size_t next;
	atomic_size_t failed;
	atomic_uint reconnects;
	atomic_int err_printed;
	uint64_t *lat;		/* per token index; 0 = not sent */
	uint64_t *done;		/* per token index: when its reply came (now_ns) */
	unsigned char *ok;
};

static bool ctl_reply_ok(const char *reply, const char **why, json_t **keep)
{
	json_error_t je;
	json_t *r = json_loads(reply, 0, &je);

	*keep = r;
	*why = r ? json_string_value(json_object_get(r, "error")) : "unparsable reply";
	return r && json_is_true(json_object_get(r, "ok"));
}

static void report_failure(struct run *r, size_t i, const char *what)
{
	atomic_fetch_add(&r->failed, 1);
	/* The first few only: a systematic refusal would otherwise flood the CI log. */
	if (atomic_fetch_add(&r->err_printed, 1) < 5)
		fprintf(stderr, "jitbench submit: grant bench-%llu: %s\n",
			(unsigned long long)(r->pool->first + i), what);
}

static void submit_one(struct run *r, struct conn *c, size_t i)
{
	const char *tok = r->pool->tokens[i], *why;
	char *reply = NULL, *req, msg[300];
	uint64_t t0, t1;
	json_t *j = NULL;
	int ret, status = 0;

	if (r->via->kind == VIA_CTL) {
		size_t n = strlen(tok) + 40;

		if (!(req = malloc(n))) {
			report_failure(r, i, "out of memory");
			return;
		}
		snprintf(req, n, "{\"op\":\"submit\",\"token\":\"%s\"}\n", tok);
		t0 = now_ns();
		ret = ctl_call(r->via, req, &reply);
		t1 = now_ns();
		free(req);
		if (ret) {
			snprintf(msg, sizeof(msg), "control socket: %s", strerror(-ret));
			report_failure(r, i, msg);
		} else if (!ctl_reply_ok(reply, &why, &j)) {
			snprintf(msg, sizeof(msg), "refused: %.200s", reply);
			report_failure(r, i, msg);
		} else {
			r->ok[i] = 1;
		}
	} else {
		t0 = now_ns();
		ret = http_call(c, "POST", "/v1/grants", "application/jwt", tok, strlen(tok), &status,
			&reply);
		t1 = now_ns();
		if (ret) {
			snprintf(msg, sizeof(msg), "HTTP: %s", strerror(-ret));
			report_failure(r, i, msg);
		} else if (status != 201) {
			snprintf(msg, sizeof(msg), "HTTP %d: %.200s", status, reply ? reply : "");
			report_failure(r, i, msg);
		} else {
			r->ok[i] = 1;
		}
	}
	r->lat[i] = t1 - t0 ? t1 - t0 : 1;
	r->done[i] = t1;
	json_decref(j);
	free(reply);
}

/*
 * Grants first..first+n-1 in one POST /v1/grants/batch: the reply's results, in order, each
 * 201 or an error. Every grant of the batch gets the batch's round trip as its latency.
 */
static void submit_batch(struct run *r, struct conn *c, size_t first, size_t n)
{
	char *text = NULL, *reply = NULL, *w, msg[300];
	json_t *j = NULL, *res;
	uint64_t t0, t1;
	size_t len = sizeof("{\"grants\":[]}");
	int ret, status = 0;

	/*
	 * The body is put together by hand, not by jansson: a compact JWS is base64url and dots,
	 * which a JSON string holds as they are (pool_sign made them), and the load generator's
	 * CPU counts against the machine. jitd parses it with jansson all the same.
	 */
	for (size_t i = 0; i < n; i++)
		len += strlen(r->pool->tokens[first + i]) + 3;
	if (!(text = malloc(len))) {
		for (size_t i = 0; i < n; i++)
			report_failure(r, first + i, "out of memory");
		return;
	}
	w = stpcpy(text, "{\"grants\":[");
	for (size_t i = 0; i < n; i++) {
		*w++ = '"';
		w = stpcpy(w, r->pool->tokens[first + i]);
		*w++ = '"';
		if (i + 1 < n)
			*w++ = ',';
	}
	w = stpcpy(w, "]}");
	t0 = now_ns();
	ret = http_call(c, "POST", "/v1/grants/batch", "application/json", text, (size_t)(w - text),
		&status, &reply);
	t1 = now_ns();
	if (!ret && status == 200)
		j = json_loads(reply, 0, NULL);
	res = json_object_get(j, "results");
	for (size_t i = 0; i < n; i++) {
		json_t *item = json_array_get(res, i);

		r->lat[first + i] = t1 - t0 ? t1 - t0 : 1;
		r->done[first + i] = t1;
		if (json_integer_value(json_object_get(item, "status")) == 201) {
			r->ok[first + i] = 1;
			continue;
		}
		if (ret)
			snprintf(msg, sizeof(msg), "HTTP: %s", strerror(-ret));
		else if (json_array_size(res) != n)
			snprintf(msg, sizeof(msg), "HTTP %d: %.200s", status, reply ? reply : "");
		else
			snprintf(msg, sizeof(msg), "%s: %.200s",
				json_string_value(json_object_get(item, "error")),
				json_string_value(json_object_get(item, "message")));
		report_failure(r, first + i, msg);
	}
	json_decref(j);
	free(text);
	free(reply);
}

static void *submit_thread(void *arg)
{
	struct run *r = arg;
	struct conn c;
	size_t i;

	conn_init(&c, r->via);
	for (;;) {
		if (r->deadline && now_ns() >= r->deadline)
			break;
		if ((i = atomic_fetch_add(&r->next, r->batch)) >= r->pool->count)
			break;
		if (r->batch > 1)
			submit_batch(r, &c, i, r->batch < r->pool->count - i ? r->batch :
				r->pool->count - i);
		else
			submit_one(r, &c, i);
	}
	atomic_fetch_add(&r->reconnects, c.reconnects);
	conn_close(&c);
	free(c.buf);
	return NULL;
}

static int write_granted(const char *path, const struct run *r)
{
	FILE *f = fopen(path, "w");
	char src[16];

	if (!f)
		return -errno;
	for (size_t i = 0; i < r->pool->count; i++) {
		uint64_t idx = r->pool->first + i;

		if (!r->ok[i])
			continue;
		format_addr(source_addr(idx), src, sizeof(src));
		fprintf(f, "%s %lld\n", src, (long long)(r->pool->exp + exp_offset(idx)));
	}
	return fclose(f) ? -errno : 0;
}

static void submit_usage(void)
{
	fprintf(stderr,
		"usage: jitbench submit --key KEY --kid KID --aud HOST --via ctl:SOCK|http://A:P|"
		"https://A:P\n"
		"         --first IDX --count N [--for SECS] [--port 22] [--conns C] [--seconds S]\n"
		"         [--batch B] [--cert C --certkey K --ca CA] [--granted FILE]\n"
		"  Signs N grants (source 10.0.0.0 + 2*idx, jti bench-idx, for SECS + 10 *\n"
		"  (idx %% 60) seconds) before the clock starts, then submits them over C\n"
		"  connections (one request at a time each), for at most S seconds; with --batch\n"
		"  (HTTP or HTTPS), B grants per POST /v1/grants/batch. --granted FILE: each\n"
		"  applied grant's source and exp.\n");
}

/*
 * Grants applied in each whole second of the run (a partial last second is left out): the
 * median second, the slowest and the fastest, so that a stall shows beside the mean rate.
 */
static int print_seconds(const struct run *r, size_t count, uint64_t t0, uint64_t t1)
{
	size_t n = (size_t)((t1 - t0) / 1000000000u);
	uint64_t *v;

	if (!n)
		return 0;
	if (!(v = calloc(n, sizeof(*v))))
		return -ENOMEM;
	for (size_t i = 0; i < count; i++) {
		size_t k;

		if (!r->ok[i] || r->done[i] < t0)
			continue;
		if ((k = (size_t)((r->done[i] - t0) / 1000000000u)) < n)
			v[k]++;
	}
	sort_u64(v, n);
	printf("seconds=%zu\nsecond_p50=%llu\nsecond_min=%llu\nsecond_max=%llu\n", n,
		(unsigned long long)quantile(v, n, 0.5), (unsigned long long)v[0],
		(unsigned long long)v[n - 1]);
	free(v);
	return 0;
}

int cmd_submit(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "key", required_argument, NULL, 'k' }, { "kid", required_argument, NULL, 'K' },
		{ "aud", required_argument, NULL, 'a' }, { "via", required_argument, NULL, 'v' },
		{ "first", required_argument, NULL, 'f' }, { "count", required_argument, NULL, 'n' },
		{ "for", required_argument, NULL, 'd' }, { "port", required_argument, NULL, 'p' },
		{ "conns", required_argument, NULL, 'c' }, { "seconds", required_argument, NULL, 's' },
		{ "cert", required_argument, NULL, 'C' }, { "certkey", required_argument, NULL, 'Y' },
		{ "ca", required_argument, NULL, 'A' }, { "granted", required_argument, NULL, 'g' },
		{ "batch", required_argument, NULL, 'b' }, { NULL, 0, NULL, 0 },
	};
	const char *key = NULL, *via_s = NULL, *cert = NULL, *certkey = NULL, *ca = NULL;
	const char *granted = NULL;
	struct pool p = { .kid = "ctl", .port = 22 };
	struct run r = { 0 };
	struct via via;
	pthread_t th[MAX_CONNS];
	unsigned conns = 1, duration = 3600;
	unsigned long batch = 1;
	double seconds = 0;
	uint64_t t0, t1, cpu0, cpu1, busy0, busy1, idle0, idle1, *lat = NULL;
	size_t sent = 0, okn = 0;
	int c, started = 0, ret = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'k': key = optarg; break;
		case 'K': p.kid = optarg; break;
		case 'a': p.aud = optarg; break;
		case 'v': via_s = optarg; break;
		case 'f': p.first = strtoull(optarg, NULL, 10); break;
		case 'n': p.count = strtoull(optarg, NULL, 10); break;
		case 'd': duration = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'p': p.port = (unsigned)strtoul(optarg, NULL, 10); break;
		case 'c': conns = (unsigned)strtoul(optarg, NULL, 10); break;
		case 's': seconds = strtod(optarg, NULL); break;
		case 'C': cert = optarg; break;
		case 'Y': certkey = optarg; break;
		case 'A': ca = optarg; break;
		case 'g': granted = optarg; break;
		case 'b': batch = strtoul(optarg, NULL, 10); break;
		default: submit_usage(); return 2;
		}
	}
	if (!key || !p.aud || !via_s || !p.count || !conns || conns > MAX_CONNS || !batch ||
		batch > 64 || via_parse(via_s, &via) || (batch > 1 && via.kind == VIA_CTL)) {
		submit_usage();
		return 2;
	}
	if (via.kind == VIA_HTTPS && (!cert || !certkey || !ca || via_tls(&via, cert, certkey, ca))) {
		fprintf(stderr, "jitbench submit: https needs --cert, --certkey and --ca that load\n");
		return 2;
	}
	if (keys_load_private(key, &p.key)) {
		fprintf(stderr, "jitbench submit: cannot load %s\n", key);
		return 2;
	}
	p.exp = (int64_t)time(NULL) + duration;
	t0 = now_ns();
	if (pool_sign(&p)) {
		fprintf(stderr, "jitbench submit: signing failed\n");
		goto out;
	}
	printf("sign_s=%.3f\n", (double)(now_ns() - t0) / 1e9);
	r.pool = &p;
	r.via = &via;
	r.batch = batch;
	if (!(r.lat = calloc(p.count, sizeof(*r.lat))) || !(r.ok = calloc(p.count, 1)) ||
		!(r.done = calloc(p.count, sizeof(*r.done))) ||
		!(lat = malloc(p.count * sizeof(*lat))))
		goto out;
	machine_ticks(&busy0, &idle0);
	cpu0 = cpu_ns();
	t0 = now_ns();
	r.deadline = seconds > 0 ? t0 + (uint64_t)(seconds * 1e9) : 0;
	for (unsigned i = 0; i < conns; i++) {
		if (pthread_create(&th[i], NULL, submit_thread, &r))
			break;
		started++;
	}
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	t1 = now_ns();
	cpu1 = cpu_ns();
	machine_ticks(&busy1, &idle1);
	for (size_t i = 0; i < p.count; i++) {
		if (r.lat[i])
			lat[sent++] = r.lat[i];
		okn += r.ok[i];
	}
	printf("batch=%lu\nconns=%d\nsent=%zu\nok=%zu\nfailed=%zu\n", batch, started, sent, okn,
		atomic_load(&r.failed));
	printf("elapsed_s=%.3f\nrate=%.1f\n", (double)(t1 - t0) / 1e9,
		(double)okn / ((double)(t1 - t0) / 1e9));
	/* A throughput run that used every token measured the signer's pool, not jitd. */
	printf("exhausted=%d\nreconnects=%u\n", r.deadline && sent == p.count,
		atomic_load(&r.reconnects));
	/*
	 * Where the machine's time went while the load ran: this process's own CPU (user +
	 * system), and every CPU's busy and idle ticks over the same window (signing excluded).
	 */
	printf("cpu_s=%.3f\nmachine_busy_ticks=%llu\nmachine_idle_ticks=%llu\n",
		(double)(cpu1 - cpu0) / 1e9, (unsigned long long)(busy1 - busy0),
		(unsigned long long)(idle1 - idle0));
	print_stats("lat", lat, sent);
	if (print_seconds(&r, p.count, t0, t1))
		goto out;
	if (granted && write_granted(granted, &r)) {
		fprintf(stderr, "jitbench submit: cannot write %s\n", granted);
		goto out;
	}
	ret = started == (int)conns && okn == sent && sent > 0 ? 0 : 1;
out:
	pool_clear(&p);
	free(lat);
	free(r.lat);
	free(r.done);
	free(r.ok);
	if (via.tls)
		SSL_CTX_free(via.tls);
	return ret;
}

/* --- revoking ---------------------------------------------------------------------------- */

int cmd_revoke(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "via", required_argument, NULL, 'v' }, { "first", required_argument, NULL, 'f' },
		{ "count", required_argument, NULL, 'n' }, { NULL, 0, NULL, 0 },
	};
	uint64_t first = 0, *lat;
	size_t count = 0, failed = 0;
	struct via via = { 0 };
	const char *via_s = NULL;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'v': via_s = optarg; break;
		case 'f': first = strtoull(optarg, NULL, 10); break;
		case 'n': count = strtoull(optarg, NULL, 10); break;
		default: goto usage;
		}
	}
	if (!via_s || via_parse(via_s, &via) || via.kind != VIA_CTL || !count)
		goto usage;
	if (!(lat = calloc(count, sizeof(*lat))))
		return 1;
	for (size_t i = 0; i < count; i++) {
		char req[128], *reply = NULL;
		const char *why;
		json_t *j = NULL;
		uint64_t t0 = now_ns();
		int ret;

		snprintf(req, sizeof(req), "{\"op\":\"revoke\",\"id\":\"bench-%llu\"}\n",
			(unsigned long long)(first + i));
		ret = ctl_call(&via, req, &reply);
		lat[i] = now_ns() - t0;
		if (ret || !ctl_reply_ok(reply, &why, &j)) {
			if (failed++ < 5)
				fprintf(stderr, "jitbench revoke: bench-%llu: %s\n",
					(unsigned long long)(first + i),
					ret ? strerror(-ret) : reply);
		}
		json_decref(j);
		free(reply);
	}
	printf("failed=%zu\n", failed);
	print_stats("lat", lat, count);
	free(lat);
	return failed ? 1 : 0;
usage:
	fprintf(stderr, "usage: jitbench revoke --via ctl:SOCK --first IDX --count N\n");
	return 2;
}

/* --- verification alone, in-process --------------------------------------------------------- */

/*
 * What jitd's verification costs with nothing else on the machine: grant_verify, the function
 * jitd's worker threads run (envelope, key file, Ed25519, claims), on a pool of real grants,
 * one thread and then one per CPU. Beside openssl speed it shows whether jitd's own checks add
 * to the signature's arithmetic, and the rate no amount of work elsewhere lets jitd pass.
 */
struct vrun {
	struct pool *pool;
	const char *keys_dir;
	uint64_t deadline;
	atomic_size_t next;
	atomic_size_t verified;
	atomic_int err;
	bool recorded;		/* grant_verify_recorded: everything but the signature */
};

static void *verify_thread(void *arg)
{
	struct vrun *r = arg;
	struct jws_verifier jv = { 0 };
	const struct grant_verify_ctx ctx = { .keys_dir = r->keys_dir, .host_id = r->pool->aud,
		.now = (int64_t)time(NULL), .clock_skew = 5, .verifier = &jv };
	size_t n = 0;

	/* The clock is read every 64 tokens: a read costs more than a recorded verify. */
	while (!atomic_load(&r->err) && (n % 64 || now_ns() < r->deadline)) {
		const char *tok = r->pool->tokens[atomic_fetch_add(&r->next, 1) % r->pool->count];
		struct grant g;
		struct jit_error e;
		int ret = r->recorded ? grant_verify_recorded(tok, strlen(tok), &ctx, &g, &e) :
			grant_verify(tok, strlen(tok), &ctx, &g, &e);

		if (ret) {
			if (!atomic_exchange(&r->err, 1))
				fprintf(stderr, "jitbench verifyrate: refused: %s\n", e.msg);
			break;
		}
		grant_clear(&g);
		n++;
	}
	atomic_fetch_add(&r->verified, n);
	jws_verifier_clear(&jv);
	return NULL;
}

/* Verifies for the given seconds on nt threads; the rate in grants/s, or -1 on a refusal. */
static double verify_for(struct pool *p, const char *keys_dir, int nt, double seconds,
	bool recorded)
{
	struct vrun r = { .pool = p, .keys_dir = keys_dir, .recorded = recorded };
	pthread_t th[64];
	int started = 0;
	uint64_t t0 = now_ns();

	r.deadline = t0 + (uint64_t)(seconds * 1e9);
	for (; started < nt && started < 64; started++)
		if (pthread_create(&th[started], NULL, verify_thread, &r))
			break;
	if (!started)
		verify_thread(&r);
	for (int i = 0; i < started; i++)
		pthread_join(th[i], NULL);
	if (atomic_load(&r.err))
		return -1;
	return (double)atomic_load(&r.verified) / ((double)(now_ns() - t0) / 1e9);
}

int cmd_verifyrate(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "key", required_argument, NULL, 'k' }, { "kid", required_argument, NULL, 'K' },
		{ "aud", required_argument, NULL, 'a' }, { "keys", required_argument, NULL, 'D' },
		{ "threads", required_argument, NULL, 't' }, { "seconds", required_argument, NULL, 's' },
		{ NULL, 0, NULL, 0 },
	};
	struct pool p = { .kid = "ctl", .port = 22, .first = 0, .count = 512 };
	const char *key = NULL, *keys_dir = NULL;
	double seconds = 1, one, all, rec;
	int c, threads = 1, ret = 1;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'k': key = optarg; break;
		case 'K': p.kid = optarg; break;
		case 'a': p.aud = optarg; break;
		case 'D': keys_dir = optarg; break;
		case 't': threads = atoi(optarg); break;
		case 's': seconds = strtod(optarg, NULL); break;
		default: goto usage;
		}
	}
	if (!key || !p.aud || !keys_dir || threads < 1 || threads > 64 || !(seconds > 0))
		goto usage;
	if (keys_load_private(key, &p.key)) {
		fprintf(stderr, "jitbench verifyrate: cannot load %s\n", key);
		return 2;
	}
	p.exp = (int64_t)time(NULL) + 3600;
	if (pool_sign(&p)) {
		fprintf(stderr, "jitbench verifyrate: signing failed\n");
		goto out;
	}
	if ((one = verify_for(&p, keys_dir, 1, seconds, false)) < 0 ||
		(all = verify_for(&p, keys_dir, threads, seconds, false)) < 0 ||
		(rec = verify_for(&p, keys_dir, 1, seconds, true)) < 0)
		goto out;
	printf("rate_1=%.1f\nrate_n=%.1f\nthreads=%d\nverify_us=%.1f\nrecorded_us=%.1f\n", one, all,
		threads, 1e6 / one, 1e6 / rec);
	ret = 0;
out:
	pool_clear(&p);
	return ret;
usage:
	fprintf(stderr,
		"usage: jitbench verifyrate --key KEY --kid KID --aud HOST --keys DIR [--threads N]\n"
		"         [--seconds S]\n"
		"  Signs 512 grants, then runs jitd's grant_verify on them for S seconds on one\n"
		"  thread, then on N; then the same checks without the signature, on one.\n");
	return 2;
}

/* --- /metrics ------------------------------------------------------------------------------ */

int cmd_metrics(int argc, char **argv)
{
	static const struct option lo[] = {
		{ "via", required_argument, NULL, 'v' }, { "cert", required_argument, NULL, 'C' },
		{ "certkey", required_argument, NULL, 'Y' }, { "ca", required_argument, NULL, 'A' },
		{ NULL, 0, NULL, 0 },
	};
	const char *via_s = NULL, *cert = NULL, *certkey = NULL, *ca = NULL;
	struct via via;
	struct conn conn;
	char *body = NULL;
	int c, status = 0, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
		switch (c) {
		case 'v': via_s = optarg; break;
		case 'C': cert = optarg; break;
		case 'Y': certkey = optarg; break;
		case 'A': ca = optarg; break;
		default: goto usage;
		}
	}
	if (!via_s || via_parse(via_s, &via) || via.kind == VIA_CTL)
		goto usage;
	if (via.kind == VIA_HTTPS && (!cert || !certkey || !ca || via_tls(&via, cert, certkey, ca)))
		goto usage;
	conn_init(&conn, &via);
	ret = http_call(&conn, "GET", "/metrics", NULL, NULL, 0, &status, &body);
	conn_close(&conn);
	free(conn.buf);
	if (via.tls)
		SSL_CTX_free(via.tls);
	if (ret || status != 200) {
		fprintf(stderr, "jitbench metrics: %s (HTTP %d)\n", ret ? strerror(-ret) : "failed",
			status);
		free(body);
		return 1;
	}
	fputs(body, stdout);
	free(body);
	return 0;
usage:
	fprintf(stderr, "usage: jitbench metrics --via http://A:P|https://A:P [--cert C --certkey "
			"K --ca CA]\n");
	return 2;
}

#define MAX_BUCKETS 32

struct hist {
	int n;
	double le[MAX_BUCKETS];	/* upper bounds; +Inf as HUGE_VAL is not needed: count is */
	double cum[MAX_BUCKETS];
	double sum, count;
	bool found;
};

static void hist_parse(const char *text, const char *name, struct hist *h)
{
	size_t nl = strlen(name);
	const char *line = text;

	memset(h, 0, sizeof(*h));
	while (line && *line) {
		const char *rest = line + nl;
		double le, v;

		if (!strncmp(line, name, nl)) {
			if (sscanf(rest, "_bucket{le=\"%lf\"} %lf", &le, &v) == 2 && h->n < MAX_BUCKETS) {
				h->le[h->n] = le;
				h->cum[h->n++] = v;
			} else if (sscanf(rest, "_sum %lf", &v) == 1) {
				h->sum = v;
			} else if (sscanf(rest, "_count %lf", &v) == 1) {
				h->count = v;
				h->found = true;
			}
		}
		line = strchr(line, '\n');
		if (line)
			line++;
	}
}

/* The bucket bound that q of the observations lie under; -1 when beyond the last bound. */
static double hist_quantile(const struct hist *a, const struct hist *b, double q)
{
	double n = b->count - a->count;

	for (int i = 0; i < b->n; i++)
		if (b->cum[i] - (i < a->n ? a->cum[i] : 0) >= q * n)
			return b->le[i];
	return -1;
}

int cmd_histdiff(int argc, char **argv)
{
	char *ta, *tb;
	struct hist a, b;
	double n;

	if (argc != 4) {
		fprintf(stderr, "usage: jitbench histdiff BEFORE AFTER NAME\n");
		return 2;
	}
	if (!(ta = read_all(argv[1], NULL)) || !(tb = read_all(argv[2], NULL))) {
		fprintf(stderr, "jitbench histdiff: cannot read the metrics files\n");
		return 1;
	}
	hist_parse(ta, argv[3], &a);
	hist_parse(tb, argv[3], &b);
	free(ta);
	free(tb);
	/* A histogram this jitd does not have yet is reported as such, not as a failure. */
	printf("found=%d\n", b.found);
	if (!b.found)
		return 0;
	n = b.count - a.count;
	printf("count=%.0f\n", n);
	printf("mean_us=%.1f\n", n > 0 ? (b.sum - a.sum) / n * 1e6 : 0.0);
	printf("p50_le_us=%.0f\n", n > 0 ? hist_quantile(&a, &b, 0.5) * 1e6 : 0.0);
	printf("p99_le_us=%.0f\n", n > 0 ? hist_quantile(&a, &b, 0.99) * 1e6 : 0.0);
	return 0;
}
