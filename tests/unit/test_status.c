/*
 * The status module's pure parts, without a kernel: whether the kernel's elements and the
 * enforcer's model agree (one walk down both sorted arrays, checked against a quadratic
 * oracle), and the printer (grants and kernel elements come out as JSON that jansson reads back
 * field for field, across block boundaries). agent/status.c is included so that its static
 * functions can be called; the enforcer is stubbed here, so nothing needs netlink or root.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <limits.h>

#include "../../agent/status.c"

/* The enforcer, as much of it as status asks for. */
struct enforce {
	const struct config *cfg;
	const struct ruleset_elem *model;
	size_t n_model;
};

static int64_t stub_now_ms = 1800000000000LL;

int64_t enforce_now_ms(void)
{
	return stub_now_ms;
}

const struct config *enforce_config(const struct enforce *e)
{
	return e->cfg;
}

const struct ruleset_elem *enforce_model(const struct enforce *e, size_t *n)
{
	*n = e->n_model;
	return e->model;
}

/* The rest is only reached through status_write, which needs a kernel (the e2e tests). */
void enforce_expire(struct enforce *e __attribute__((unused)))
{
}

const struct grant *enforce_grants(const struct enforce *e __attribute__((unused)), size_t *n)
{
	*n = 0;
	return NULL;
}

int64_t enforce_grant_end_ms(const struct enforce *e __attribute__((unused)),
	size_t i __attribute__((unused)), int64_t now_ms,
	int64_t boot_ms __attribute__((unused)))
{
	return now_ms;
}

int64_t enforce_boot_ms(void)
{
	return 0;
}

bool enforce_in_doubt(const struct enforce *e __attribute__((unused)))
{
	return false;
}

struct nft *enforce_nft(const struct enforce *e __attribute__((unused)))
{
	return NULL;
}

struct conntrack *enforce_conntrack(const struct enforce *e __attribute__((unused)))
{
	return NULL;
}

struct activity *enforce_activity(const struct enforce *e __attribute__((unused)))
{
	return NULL;
}

static const char *stub_config_path = "";

const char *enforce_config_path(const struct enforce *e __attribute__((unused)))
{
	return stub_config_path;
}

bool enforce_table_owned(const struct enforce *e __attribute__((unused)))
{
	return false;
}

int64_t enforce_started(const struct enforce *e __attribute__((unused)))
{
	return 0;
}

int64_t enforce_uptime(const struct enforce *e __attribute__((unused)))
{
	return 0;
}

const char *enforce_last_error(const struct enforce *e __attribute__((unused)))
{
	return "";
}

const char *enforce_restart_pending(const struct enforce *e __attribute__((unused)))
{
	return "";
}

int64_t enforce_config_loaded_at(const struct enforce *e __attribute__((unused)))
{
	return 0;
}

const char *enforce_reload_refused(const struct enforce *e __attribute__((unused)), int64_t *at)
{
	*at = 0;
	return NULL;
}

const struct store_damage *enforce_state_damage(const struct enforce *e __attribute__((unused)))
{
	static const struct store_damage none;

	return &none;
}

json_t *enforce_endpoint_json(const struct enforce *e __attribute__((unused)),
	int64_t now __attribute__((unused)))
{
	return json_null();
}

/* A one-address IPv4 element on tcp/port, 10.0.a.b, open until exp_ms. */
static struct ruleset_elem host4(unsigned a, unsigned b, uint16_t port, int64_t exp_ms)
{
	struct ruleset_elem r = { .kind = RULESET_HOST_ADDR, .ipproto = IPPROTO_TCP,
		.port = port, .family = AF_INET, .exp_ms = exp_ms };

	r.lo[0] = r.hi[0] = 10;
	r.lo[2] = r.hi[2] = (uint8_t)a;
	r.lo[3] = r.hi[3] = (uint8_t)b;
	return r;
}

static bool in_sync(const struct ruleset_elem *k, size_t nk, const struct ruleset_elem *m,
	size_t nm)
{
	struct ruleset_elem mc[64];
	struct kview kv = { .present = true, .model = mc, .nm = nm, .now_ms = stub_now_ms };
	bool same;

	assert_true(nm <= 64);
	if (nm)
		memcpy(mc, m, nm * sizeof(*m));
	if (nm)
		qsort(mc, nm, sizeof(*mc), ruleset_elem_cmp);
	for (size_t i = 0; i < nk; i++)
		assert_int_equal(kview_add(&kv, &k[i]), 0);
	kview_sort(&kv);
	same = kernel_in_sync(&kv);
	kview_free(&kv);
	return same;
}

static void in_sync_same_elements(void **state __attribute__((unused)))
{
	int64_t exp = stub_now_ms + 60000;
	struct ruleset_elem m[] = { host4(0, 1, 22, exp), host4(0, 2, 22, exp),
		host4(0, 1, 3389, exp), host4(7, 9, 22, exp + 5000) };
	/* The kernel's in another order (a hash walk): the walk sorts it first. */
	struct ruleset_elem k[] = { m[3], m[1], m[2], m[0] };

	assert_true(in_sync(k, 4, m, 4));
	assert_true(in_sync(NULL, 0, NULL, 0));
}

static void in_sync_missing_or_extra(void **state __attribute__((unused)))
{
	int64_t exp = stub_now_ms + 60000;
	struct ruleset_elem m[] = { host4(0, 1, 22, exp), host4(0, 2, 22, exp),
		host4(0, 3, 22, exp) };
	struct ruleset_elem k[4];

	/* One of the model's missing from the kernel: first, middle, last. */
	for (size_t gone = 0; gone < 3; gone++) {
		size_t n = 0;

		for (size_t i = 0; i < 3; i++)
			if (i != gone)
				k[n++] = m[i];
		assert_false(in_sync(k, n, m, 3));
		assert_false(in_sync(m, 3, k, n)); /* the kernel holds one more */
	}
	/* An element nobody granted, before, between and after the model's. */
	memcpy(k, m, sizeof(m));
	k[3] = host4(0, 0, 22, exp);
	assert_false(in_sync(k, 4, m, 3));
	k[3] = host4(0, 2, 23, exp);
	assert_false(in_sync(k, 4, m, 3));
	k[3] = host4(9, 9, 22, exp);
	assert_false(in_sync(k, 4, m, 3));
	assert_false(in_sync(k, 4, NULL, 0));
	assert_false(in_sync(NULL, 0, m, 3));
}

static void in_sync_expiring_and_timeouts(void **state __attribute__((unused)))
{
	int64_t exp = stub_now_ms + 60000;
	struct ruleset_elem m[] = { host4(0, 1, 22, exp), host4(0, 2, 22, exp) };
	struct ruleset_elem k[] = { m[0], m[1], host4(0, 3, 22, stub_now_ms + 1000) };

	/* On its way out of either side this instant: not a difference. */
	assert_true(in_sync(k, 3, m, 2));
	assert_true(in_sync(m, 2, k, 3));
	/* Timeouts within the tolerance agree; beyond it they do not. */
	k[1].exp_ms = exp + SYNC_TOLERANCE_MS - 500;
	assert_true(in_sync(k, 2, m, 2));
	k[1].exp_ms = exp - SYNC_TOLERANCE_MS - 500;
	assert_false(in_sync(k, 2, m, 2));
	/* The same range with another gateway mapping is another element. */
	k[1] = m[1];
	k[1].to_port = 99;
	assert_false(in_sync(k, 2, m, 2));
}

static void in_sync_same_range_twice(void **state __attribute__((unused)))
{
	int64_t exp = stub_now_ms + 60000;
	struct ruleset_elem m[] = { host4(0, 1, 22, exp), host4(0, 2, 22, exp) };
	/* One range in two sets (a stray in another shard): both must match the model's. */
	struct ruleset_elem k[] = { m[0], m[1], m[1] };

	assert_true(in_sync(k, 3, m, 2));
	k[2].exp_ms = exp + 10 * SYNC_TOLERANCE_MS;
	assert_false(in_sync(k, 3, m, 2));
}

static void in_sync_table_absent(void **state __attribute__((unused)))
{
	struct kview kv = { .present = false, .now_ms = stub_now_ms };

	assert_false(kernel_in_sync(&kv));
}

/*
 * The kernel's elements that the model holds are references to it, with the kernel's own
 * expiry; only what the model lacks is copied. A grant is covered by either kind, and a
 * restarted reading forgets both.
 */
static void kernel_view_refers_to_model(void **state __attribute__((unused)))
{
	int64_t exp = stub_now_ms + 60000;
	struct ruleset_elem m[] = { host4(0, 1, 22, exp), host4(0, 2, 22, exp) };
	struct ruleset_elem k[] = { m[1], host4(0, 3, 22, exp + 9000), m[0] };
	struct kview kv = { .present = true, .model = m, .nm = 2, .now_ms = stub_now_ms };
	struct port_spec port = { 22, PORT_PROTO_TCP };
	struct grant g = { .n_src = 1, .ports = &port, .n_ports = 1 };
	struct config cfg = { 0 };
	struct prefix src;

	g.src = &src;
	k[0].exp_ms = exp + 1000;
	for (size_t i = 0; i < 3; i++)
		assert_int_equal(kview_add(&kv, &k[i]), 0);
	kview_sort(&kv);
	assert_int_equal(kv.n, 3);
	assert_int_equal(kv.n_extra, 1);
	assert_ptr_equal(kv_elem(&kv, 0), &m[0]);
	assert_ptr_equal(kv_elem(&kv, 1), &m[1]);
	assert_ptr_equal(kv_elem(&kv, 2), &kv.extra[0]);
	assert_memory_equal(kv.extra[0].lo, k[1].lo, 16);
	assert_true(kv.r[1].exp_ms == exp + 1000);
	assert_false(kernel_in_sync(&kv));
	assert_int_equal(prefix_parse("10.0.0.2", &src), 0);
	assert_true(grant_kernel_left(&kv, &cfg, &g) == 61000);
	assert_int_equal(prefix_parse("10.0.0.3", &src), 0);
	assert_true(grant_kernel_left(&kv, &cfg, &g) == 69000);
	assert_int_equal(prefix_parse("10.0.0.4", &src), 0);
	assert_true(grant_kernel_left(&kv, &cfg, &g) == -1);

	read_restart(&kv);
	assert_int_equal(kv.n, 0);
	assert_int_equal(kv.n_extra, 0);
	assert_int_equal(kview_add(&kv, &m[0]), 0);
	assert_int_equal(kview_add(&kv, &k[0]), 0);
	kview_sort(&kv);
	assert_int_equal(kv.n_extra, 0);
	assert_true(kernel_in_sync(&kv));
	/* One jitd cannot have written (no timeout, a catch-all) is no grant's: never in sync. */
	assert_int_equal(read_cb(&kv, "allow4_addr_1", NULL, NULL), 0);
	assert_int_equal(kv.foreign, 1);
	assert_int_equal(kv.n, 2);
	assert_false(kernel_in_sync(&kv));
	read_restart(&kv);
	assert_int_equal(kv.foreign, 0);
	kview_free(&kv);
}

/* What in_sync means, the slow way: each side's lasting elements have a match on the other. */
static bool oracle(const struct ruleset_elem *a, size_t na, const struct ruleset_elem *b,
	size_t nb)
{
	for (int side = 0; side < 2; side++) {
		for (size_t i = 0; i < na; i++) {
			bool found = a[i].exp_ms <= stub_now_ms + SYNC_TOLERANCE_MS;

			for (size_t j = 0; !found && j < nb; j++)
				found = !ruleset_elem_cmp(&a[i], &b[j]) &&
					a[i].to_port == b[j].to_port &&
					llabs(a[i].exp_ms - b[j].exp_ms) <= SYNC_TOLERANCE_MS;
			if (!found)
				return false;
		}
		{
			const struct ruleset_elem *t = a;
			size_t nt = na;

			a = b;
			na = nb;
			b = t;
			nb = nt;
		}
	}
	return true;
}

static void in_sync_agrees_with_oracle(void **state __attribute__((unused)))
{
	unsigned seed = 12345, agree_true = 0, agree_false = 0;

	for (int round = 0; round < 4000; round++) {
		struct ruleset_elem m[12], k[16];
		size_t nm = 0, nk = 0;

		/* A few addresses and ports, so that collisions and duplicates are common. */
		for (size_t i = (size_t)(rand_r(&seed) % 12); i > 0; i--)
			m[nm++] = host4(0, (unsigned)rand_r(&seed) % 6, 22 + rand_r(&seed) % 2,
				stub_now_ms + 60000);
		for (size_t i = 0; i < nm; i++)
			if (rand_r(&seed) % 8)
				k[nk++] = m[i];
		for (size_t i = (size_t)(rand_r(&seed) % 3); i > 0 && nk < 16; i--) {
			k[nk] = host4(0, (unsigned)rand_r(&seed) % 6, 22 + rand_r(&seed) % 2,
				stub_now_ms + 60000);
			if (rand_r(&seed) % 2)
				k[nk].exp_ms = stub_now_ms +
					rand_r(&seed) % (2 * SYNC_TOLERANCE_MS);
			nk++;
		}
		if (nk && rand_r(&seed) % 4 == 0)
			k[(size_t)rand_r(&seed) % nk].exp_ms += 3 * SYNC_TOLERANCE_MS;
		{
			bool want = oracle(k, nk, m, nm), got = in_sync(k, nk, m, nm);

			assert_int_equal(got, want);
			agree_true += want;
			agree_false += !want;
		}
	}
	/* Both answers were asked for often, or the comparison proved little. */
	assert_true(agree_true > 400 && agree_false > 400);
}

/* Everything a printer wrote, as one string (the caller frees it). */
static char *drain(struct evbuffer *out)
{
	size_t len = evbuffer_get_length(out);
	char *s = malloc(len + 1);

	assert_non_null(s);
	assert_int_equal(evbuffer_remove(out, s, len), (int)len);
	s[len] = 0;
	return s;
}

static json_t *parse(struct evbuffer *out)
{
	char *s = drain(out);
	json_error_t err;
	json_t *v = json_loads(s, JSON_REJECT_DUPLICATES, &err);

	if (!v)
		fail_msg("not JSON (%s): %s", err.text, s);
	free(s);
	return v;
}

static void grant_reply_reads_back(void **state __attribute__((unused)))
{
	char jti[] = "g-\"1\"\\\x01\n\xc3\xa9", iss[] = "ctl", sub[] = "alice@example.com",
		kid[] = "k1";
	struct prefix src[2];
	struct port_spec ports[] = { { 22, PORT_PROTO_TCP }, { 53, PORT_PROTO_UDP } };
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .iat = 1800000000,
		.exp = 1800000000 + 3600, .src = src, .n_src = 2, .ports = ports, .n_ports = 2 };
	struct ruleset_elem m[4];
	struct config cfg = { 0 };
	struct enforce e = { .cfg = &cfg, .model = m, .n_model = 4 };
	struct evbuffer *out = evbuffer_new();
	json_t *v, *want_jti;

	assert_int_equal(prefix_parse("10.0.0.1", &src[0]), 0);
	assert_int_equal(prefix_parse("2001:db8::/64", &src[1]), 0);
	/* The kernel holds each element; the one that leaves first sets kernel_expires_in. */
	for (size_t s = 0, i = 0; s < 2; s++) {
		for (size_t p = 0; p < 2; p++, i++) {
			m[i] = (struct ruleset_elem){ .kind = (uint8_t)ruleset_host_kind(&src[s]),
				.ipproto = port_proto_ipproto(ports[p].proto),
				.port = ports[p].port, .family = src[s].family,
				.exp_ms = stub_now_ms + 3000000 + 1000 * (int)i };
			prefix_range(&src[s], m[i].lo, m[i].hi);
		}
	}
	qsort(m, 4, sizeof(*m), ruleset_elem_cmp);
	assert_non_null(out);
	assert_int_equal(status_grant_write(&e, &g, out), 0);
	v = parse(out);
	want_jti = json_string(jti);
	assert_true(json_equal(json_object_get(v, "id"), want_jti));
	assert_string_equal(json_string_value(json_object_get(v, "sub")), sub);
	assert_true(json_is_null(json_object_get(v, "reason")));
	assert_string_equal(json_string_value(json_array_get(json_object_get(v, "sources"), 0)),
		"10.0.0.1");
	assert_string_equal(json_string_value(json_array_get(json_object_get(v, "sources"), 1)),
		"2001:db8::/64");
	assert_string_equal(json_string_value(json_array_get(json_object_get(v, "ports"), 1)),
		"53/udp");
	assert_string_equal(json_string_value(json_object_get(v, "issued_at")),
		"2027-01-15T08:00:00Z");
	assert_string_equal(json_string_value(json_object_get(v, "expires_at")),
		"2027-01-15T09:00:00Z");
	assert_int_equal(json_integer_value(json_object_get(v, "expires_in")), 3600);
	assert_int_equal(json_integer_value(json_object_get(v, "kernel_expires_in")), 3000);
	assert_true(json_is_null(json_object_get(v, "flows")));
	assert_int_equal(json_array_size(json_object_get(v, "elements")), 4);
	json_decref(want_jti);
	json_decref(v);

	/* Not all of it in the kernel: not known rather than a number. */
	e.n_model = 3;
	assert_int_equal(status_grant_write(&e, &g, out), 0);
	v = parse(out);
	assert_true(json_is_null(json_object_get(v, "kernel_expires_in")));
	json_decref(v);
	evbuffer_free(out);
}

/*
 * A printer with a block far smaller than what goes through it: pieces larger than the block,
 * pieces that straddle it, and the time stamps of consecutive grants, each changed or not.
 */
static void printer_across_blocks(void **state __attribute__((unused)))
{
	static char reason[5000];
	char jti[16], iss[] = "ctl", sub[] = "bob", kid[] = "k1", block[64];
	struct prefix src;
	struct port_spec port = { 22, PORT_PROTO_TCP };
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .reason = reason,
		.src = &src, .n_src = 1, .ports = &port, .n_ports = 1 };
	static const int64_t iat[] = { 0, 0, 86399, 1800000000, 1800000000 };
	static const char *const want[] = { "1970-01-01T00:00:00Z", "1970-01-01T00:00:00Z",
		"1970-01-01T23:59:59Z", "2027-01-15T08:00:00Z", "2027-01-15T08:00:00Z" };
	struct kview kv = { .present = true, .now_ms = stub_now_ms };
	struct config cfg = { 0 };
	struct evbuffer *out = evbuffer_new();
	struct printer pr;
	json_t *v;

	memset(reason, 'r', sizeof(reason) - 1);
	reason[100] = '"';
	assert_int_equal(prefix_parse("192.0.2.7", &src), 0);
	assert_non_null(out);
	printer_init(&pr, out, block, sizeof(block));
	pr_raw(&pr, "[");
	for (size_t i = 0; i < 5; i++) {
		snprintf(jti, sizeof(jti), "j%zu", i);
		g.iat = iat[i];
		g.exp = iat[i] + 86400 * (int64_t)(i % 2);
		if (i)
			pr_raw(&pr, ",");
		print_grant(&pr, &cfg, &g, kv.now_ms, g.exp * 1000,
			grant_kernel_left(&kv, &cfg, &g), (long)i, false);
	}
	pr_raw(&pr, "]");
	pr_flush(&pr);
	assert_int_equal(pr.err, 0);
	v = parse(out);
	assert_int_equal(json_array_size(v), 5);
	for (size_t i = 0; i < 5; i++) {
		json_t *o = json_array_get(v, i);
		char id[16];

		snprintf(id, sizeof(id), "j%zu", i);
		assert_string_equal(json_string_value(json_object_get(o, "id")), id);
		assert_string_equal(json_string_value(json_object_get(o, "reason")), reason);
		assert_string_equal(json_string_value(json_object_get(o, "issued_at")), want[i]);
		assert_int_equal(json_integer_value(json_object_get(o, "flows")), (long long)i);
		assert_true(json_is_null(json_object_get(o, "kernel_expires_in")));
	}
	assert_string_equal(json_string_value(json_object_get(json_array_get(v, 1),
		"expires_at")), "1970-01-02T00:00:00Z");
	json_decref(v);
	evbuffer_free(out);
}

/*
 * A grant keeps its time when the wall clock is stepped: 1000 s forward, one with 300 s left
 * has exp 700 s behind the clock, yet ends 300 s from now, and says so.
 */
static void grant_time_is_its_own(void **state __attribute__((unused)))
{
	char jti[] = "j", iss[] = "ctl", sub[] = "bob", kid[] = "k1", reason[] = "", block[256];
	struct port_spec port = { 22, PORT_PROTO_TCP };
	struct prefix src;
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .reason = reason,
		.src = &src, .n_src = 1, .ports = &port, .n_ports = 1,
		.iat = stub_now_ms / 1000 - 1000, .exp = stub_now_ms / 1000 - 700 };
	struct config cfg = { 0 };
	struct evbuffer *out = evbuffer_new();
	char at[32];
	struct printer pr;
	json_t *v;

	assert_int_equal(prefix_parse("192.0.2.7", &src), 0);
	assert_non_null(out);
	assert_int_equal(proto_time_format(stub_now_ms / 1000 + 300, at, sizeof(at)), 0);
	printer_init(&pr, out, block, sizeof(block));
	print_grant(&pr, &cfg, &g, stub_now_ms, stub_now_ms + 300000 - 1, -1, -1, false);
	pr_flush(&pr);
	assert_int_equal(pr.err, 0);
	v = parse(out);
	assert_int_equal(json_integer_value(json_object_get(v, "expires_in")), 300);
	assert_string_equal(json_string_value(json_object_get(v, "expires_at")), at);
	json_decref(v);
	evbuffer_free(out);
}

/*
 * A grant renewed as the last one ends: the old element, run out, stays in the model until the
 * next tick, beside the new one (the same range), or inside a live wider one that precedes it.
 * Neither is the kernel's: the reply says the kernel holds the grant for the live one's time.
 */
static void grant_reply_past_stale_elements(void **state __attribute__((unused)))
{
	char jti[] = "r", iss[] = "ctl", sub[] = "bob", kid[] = "k1";
	struct port_spec port = { 22, PORT_PROTO_TCP };
	struct prefix src, wide, inside;
	struct grant g = { .jti = jti, .iss = iss, .sub = sub, .kid = kid, .src = &src, .n_src = 1,
		.ports = &port, .n_ports = 1, .iat = stub_now_ms / 1000,
		.exp = stub_now_ms / 1000 + 60 };
	const char *srcs[] = { "10.0.0.5", "10.0.0.5" }, *walls[] = { "10.0.0.5", "10.0.0.0/24" },
		   *stales[] = { "10.0.0.5", "10.0.0.3" };
	struct config cfg = { 0 };

	for (size_t c = 0; c < 2; c++) {
		struct ruleset_elem m[2];
		struct enforce e = { .cfg = &cfg, .model = m, .n_model = 2 };
		struct evbuffer *out = evbuffer_new();
		json_t *v;

		assert_non_null(out);
		assert_int_equal(prefix_parse(srcs[c], &src), 0);
		assert_int_equal(prefix_parse(walls[c], &wide), 0);
		assert_int_equal(prefix_parse(stales[c], &inside), 0);
		for (size_t i = 0; i < 2; i++) {
			m[i] = (struct ruleset_elem){ .kind = (uint8_t)ruleset_host_kind(&src),
				.ipproto = IPPROTO_TCP, .port = 22, .family = AF_INET,
				.exp_ms = i ? stub_now_ms - 100 : stub_now_ms + 60000 };
			prefix_range(i ? &inside : &wide, m[i].lo, m[i].hi);
		}
		qsort(m, 2, sizeof(*m), ruleset_elem_cmp);
		assert_int_equal(status_grant_write(&e, &g, out), 0);
		v = parse(out);
		assert_int_equal(json_integer_value(json_object_get(v, "kernel_expires_in")), 60);
		json_decref(v);
		evbuffer_free(out);
	}
}

/* jitd -c takes any path: one that is not UTF-8 is shown, not a status that fails whole. */
static void config_path_not_utf8(void **state __attribute__((unused)))
{
	struct enforce e = { 0 };
	json_t *agent;

	stub_config_path = "/etc/jitd/caf\xe9.json";
	agent = agent_json(&e, false);
	stub_config_path = "";
	assert_non_null(agent);
	assert_string_equal(json_string_value(json_object_get(agent, "config")),
		"/etc/jitd/caf?.json");
	json_decref(agent);
}

static void integers_print_exactly(void **state __attribute__((unused)))
{
	static const long long values[] = { 0, 7, -7, 65535, LLONG_MAX, LLONG_MIN };
	struct evbuffer *out = evbuffer_new();
	char block[8], want[32];
	struct printer pr;

	assert_non_null(out);
	for (size_t i = 0; i < sizeof(values) / sizeof(values[0]); i++) {
		char *got;

		printer_init(&pr, out, block, sizeof(block));
		pr_int(&pr, true, values[i]);
		pr_flush(&pr);
		got = drain(out);
		snprintf(want, sizeof(want), "%lld", values[i]);
		assert_string_equal(got, want);
		free(got);
	}
	printer_init(&pr, out, block, sizeof(block));
	pr_int(&pr, false, 5);
	pr_flush(&pr);
	{
		char *got = drain(out);

		assert_string_equal(got, "null");
		free(got);
	}
	evbuffer_free(out);
}

static void kernel_elements_read_back(void **state __attribute__((unused)))
{
	struct ruleset_elem k[4] = {
		host4(3, 4, 22, stub_now_ms + 1500),
		{ .kind = RULESET_HOST, .ipproto = IPPROTO_UDP, .port = 53, .family = AF_INET6,
			.exp_ms = stub_now_ms - 5 },
		{ .kind = RULESET_FORWARD, .ipproto = IPPROTO_TCP, .port = 3389, .family = AF_INET,
			.exp_ms = stub_now_ms + 1 },
		{ .kind = RULESET_DNAT, .ipproto = IPPROTO_TCP, .port = 50017, .to_port = 3389,
			.family = AF_INET, .exp_ms = stub_now_ms + 2 },
	};
	static const char *const source[] = { "10.0.3.4", "2001:db8::1-2001:db8::3",
		"192.0.2.0/24", "198.51.100.9" };
	struct evbuffer *out = evbuffer_new();
	struct writer w = { .first = true };
	char block[100];
	json_t *v;

	/* A range that is no prefix, a prefix, and a gateway box and mapping. */
	k[1].lo[0] = k[1].hi[0] = 0x20;
	k[1].lo[1] = k[1].hi[1] = 0x01;
	k[1].lo[2] = k[1].hi[2] = 0x0d;
	k[1].lo[3] = k[1].hi[3] = 0xb8;
	k[1].lo[15] = 1;
	k[1].hi[15] = 3;
	memcpy(k[2].lo, (const uint8_t[]){ 192, 0, 2, 0 }, 4);
	memcpy(k[2].hi, (const uint8_t[]){ 192, 0, 2, 255 }, 4);
	memcpy(k[2].dlo, (const uint8_t[]){ 10, 0, 0, 9 }, 4);
	memcpy(k[2].dhi, k[2].dlo, 4);
	memcpy(k[3].lo, (const uint8_t[]){ 198, 51, 100, 9 }, 4);
	memcpy(k[3].hi, k[3].lo, 4);
	memcpy(k[3].dlo, k[2].dlo, 4);
	memcpy(k[3].dhi, k[2].dlo, 4);
	assert_non_null(out);
	printer_init(&w.pr, out, block, sizeof(block));
	w_raw(&w, "[");
	for (size_t i = 0; i < 4; i++)
		w_kernel_elem(&w, &k[i], k[i].exp_ms, stub_now_ms);
	w_raw(&w, "]");
	pr_flush(&w.pr);
	assert_int_equal(w.pr.err, 0);
	v = parse(out);
	for (size_t i = 0; i < 4; i++) {
		json_t *o = json_array_get(v, i);

		assert_string_equal(json_string_value(json_object_get(o, "set")),
			ruleset_elem_set(&k[i]));
		assert_string_equal(json_string_value(json_object_get(o, "source")), source[i]);
		assert_string_equal(json_string_value(json_object_get(o, "family")),
			k[i].family == AF_INET ? "ipv4" : "ipv6");
		assert_int_equal(json_integer_value(json_object_get(o, "port")), k[i].port);
	}
	assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 0),
		"expires_in_ms")), 1500);
	assert_int_equal(json_integer_value(json_object_get(json_array_get(v, 1),
		"expires_in_ms")), 0);
	assert_string_equal(json_string_value(json_object_get(json_array_get(v, 1), "protocol")),
		"udp");
	assert_string_equal(json_string_value(json_object_get(json_array_get(v, 2),
		"destination")), "10.0.0.9");
	assert_string_equal(json_string_value(json_object_get(json_array_get(v, 3), "to")),
		"10.0.0.9:3389");
	json_decref(v);
	evbuffer_free(out);
}

/*
 * Text jitd cut to its buffer may end inside a UTF-8 character: status shows it as ASCII with
 * '?' rather than failing whole (json_pack refuses invalid UTF-8).
 */
static void text_cut_mid_character(void **state)
{
	json_t *v;

	(void)state;
	v = text_json("state: /var/lib/j\xc3\xa4tt/grants.journal is damaged \xe2\x82");
	assert_non_null(v);
	assert_string_equal(json_string_value(v),
		"state: /var/lib/j??tt/grants.journal is damaged ??");
	json_decref(v);
	v = text_json("state: /var/lib/j\xc3\xa4tt");
	assert_string_equal(json_string_value(v), "state: /var/lib/j\xc3\xa4tt");
	json_decref(v);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(in_sync_same_elements),
		cmocka_unit_test(in_sync_missing_or_extra),
		cmocka_unit_test(in_sync_expiring_and_timeouts),
		cmocka_unit_test(in_sync_same_range_twice),
		cmocka_unit_test(in_sync_table_absent),
		cmocka_unit_test(kernel_view_refers_to_model),
		cmocka_unit_test(in_sync_agrees_with_oracle),
		cmocka_unit_test(grant_reply_reads_back),
		cmocka_unit_test(printer_across_blocks),
		cmocka_unit_test(grant_time_is_its_own),
		cmocka_unit_test(grant_reply_past_stale_elements),
		cmocka_unit_test(config_path_not_utf8),
		cmocka_unit_test(integers_print_exactly),
		cmocka_unit_test(text_cut_mid_character),
		cmocka_unit_test(kernel_elements_read_back),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
