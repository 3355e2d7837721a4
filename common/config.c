#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <jansson.h>

#include "common/config.h"
#include "common/duration.h"
#include "common/err.h"
#include "common/filetrust.h"
#include "common/grant.h"
#include "common/keys.h"
#include "common/log.h"
#include "common/port.h"
#include "common/prefix.h"

#define BAD(e, ...) jit_fail((e), JIT_ERR_BAD_CONFIG, __VA_ARGS__)
#define OOM(e) jit_fail((e), JIT_ERR_INTERNAL, "out of memory")
#define ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* Sized so that gcc can prove "ports[N]" + ".allowed_sources" + "[N]" never truncates. */
#define WHERE_LEN 32	/* "targets[255]" */
#define KEY_PATH_LEN 64 /* "targets[255].dnat.listen_port_range" */
#define ITEM_LEN 96	/* "targets[255].allowed_sources[1023]" */
#define HOST_ID_MAX 253 /* a DNS name: what the controller puts in aud */
#define HOST_ID_CHARS "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-"
#define DEFAULT_KEYS_DIR "/etc/jitd/keys.d"
#define DEFAULT_STATE_DIR "/var/lib/jitd"
#define DEFAULT_CONTROL_SOCKET "/run/jitd/jitd.sock"
#define DEFAULT_PORT 22
#define DEFAULT_MAX_DURATION (3 * 3600)
#define DEFAULT_CLOCK_SKEW 60
#define MAX_CLOCK_SKEW 600
#define DEFAULT_LISTEN_MAX_CONNECTIONS 64
#define DEFAULT_LISTEN_TIMEOUT 10
#define MAX_LISTEN_TIMEOUT 300
#define DEFAULT_LISTEN_RATE 100
#define DEFAULT_RECONCILE_INTERVAL 30
#define MAX_RECONCILE_INTERVAL 3600

static const char *const top_keys[] = { "host_id", "keys_dir", "state_dir", "control_socket",
	"deny_action", "clock_skew", "always_allow", "ports", "control_group", "replay_cache_max",
	"audit", "listen", "log_level", "reconcile_interval", "table_owner", "limits", "mode",
	"targets", "issuers" };
static const char *const limit_keys[] = { "max_grants", "max_sources_per_grant",
	"max_ports_per_grant", "control_connections" };
static const char *const audit_keys[] = { "max_bytes", "keep", "unverified_per_minute",
	"syslog" };
static const char *const listen_keys[] = { "address", "tls_cert", "tls_key", "client_ca",
	"insecure_plaintext", "max_connections", "timeout", "rate_limit" };
static const char *const port_keys[] = { "port", "protocol", "max_duration", "allowed_sources" };
static const char *const target_keys[] = { "address", "port", "protocol", "max_duration",
	"allowed_sources", "dnat" };
static const char *const dnat_keys[] = { "listen_port_range", "address" };

/* where is NULL at the top level, else the path of the object ("ports[1]"). */
static int check_keys(json_t *o, const char *const *keys, size_t n, const char *where,
	struct jit_error *e)
{
	const char *k;
	json_t *v;

	json_object_foreach(o, k, v) {
		size_t i = 0;

		while (i < n && strcmp(k, keys[i]))
			i++;
		if (i < n)
			continue;
		if (where)
			return BAD(e, "%s: unknown key '%.64s'", where, k);
		return BAD(e, "unknown key '%.64s'", k);
	}
	return 0;
}

static int get_string(const json_t *v, const char *path, const char **s, struct jit_error *e)
{
	*s = NULL;
	if (!json_is_string(v))
		return BAD(e, "%s: expected a string, not %s", path, jit_json_type(v));
	*s = json_string_value(v);
	return 0;
}

/* A boolean member, or def when absent (obj NULL: absent too). */
static int get_bool(const json_t *obj, const char *key, const char *path, bool def, bool *out,
	struct jit_error *e)
{
	const json_t *v = json_object_get(obj, key);

	*out = def;
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return BAD(e, "%s: expected a boolean, not %s", path, jit_json_type(v));
	*out = json_is_true(v);
	return 0;
}

static int copy_str(char **dst, const char *s, struct jit_error *e)
{
	if (!(*dst = strdup(s)))
		return OOM(e);
	return 0;
}

static bool host_id_valid(const char *s)
{
	size_t n = strlen(s);

	return n >= 1 && n <= HOST_ID_MAX && strspn(s, HOST_ID_CHARS) == n;
}

/* resolve: an unset host_id becomes the host name; else it stays NULL (config_load_record). */
static int set_host_id(const json_t *root, bool resolve, struct config *c, struct jit_error *e)
{
	const json_t *v = json_object_get(root, "host_id");
	char name[HOST_NAME_MAX + 1] = "";
	const char *s;
	int ret;

	if (v) {
		if ((ret = get_string(v, "host_id", &s, e)))
			return ret;
		if (!host_id_valid(s))
			return BAD(e, "host_id: '%.64s' is not 1-253 of A-Z a-z 0-9 . _ -", s);
		return copy_str(&c->host_id, s, e);
	}
	if (!resolve)
		return 0;
	/* gethostname may leave the name unterminated when it is truncated. */
	if (gethostname(name, sizeof(name) - 1))
		return BAD(e, "host_id: not set, and gethostname failed: %s", strerror(errno));
	if (!host_id_valid(name))
		return BAD(e, "host_id: not set, and the host name '%.64s' is not usable", name);
	return copy_str(&c->host_id, name, e);
}

/* where names the key in messages ("listen.tls_cert"). */
static int set_path(const json_t *root, const char *key, const char *where, const char *def,
	char **dst, struct jit_error *e)
{
	const json_t *v = json_object_get(root, key);
	const char *s;
	int ret;

	if (!v)
		return copy_str(dst, def, e);
	if ((ret = get_string(v, where, &s, e)))
		return ret;
	/* A relative path would depend on the directory the daemon happened to start in. */
	if (s[0] != '/')
		return BAD(e, "%s: '%.64s' is not an absolute path", where, s);
	if (strlen(s) >= PATH_MAX)
		return BAD(e, "%s: longer than %d bytes", where, PATH_MAX - 1);
	return copy_str(dst, s, e);
}

/*
 * A unix socket's address holds 107 bytes of path: a longer one would pass here, and
 * --check-config with it, then stop the next start (ENAMETOOLONG).
 */
static int check_socket_path(const char *path, struct jit_error *e)
{
	const size_t max = sizeof(((struct sockaddr_un *)0)->sun_path) - 1;

	if (strlen(path) > max)
		return BAD(e, "control_socket: longer than %zu bytes (a unix socket's path)", max);
	return 0;
}

static int set_deny(const json_t *root, struct config *c, struct jit_error *e)
{
	const json_t *v = json_object_get(root, "deny_action");
	const char *s;
	int ret;

	c->deny_action = DENY_DROP;
	if (!v)
		return 0;
	if ((ret = get_string(v, "deny_action", &s, e)))
		return ret;
	if (!strcmp(s, "reject"))
		c->deny_action = DENY_REJECT;
	else if (strcmp(s, "drop"))
		return BAD(e, "deny_action: '%.32s' is neither drop nor reject", s);
	return 0;
}

static int check_range(uint64_t secs, const char *path, const char *shown, uint64_t min,
	uint64_t max, struct jit_error *e)
{
	char lim[32];

	if (secs < min) {
		duration_format(min, lim, sizeof(lim));
		return BAD(e, "%s: %s is below the minimum %s", path, shown, lim);
	}
	if (secs > max) {
		duration_format(max, lim, sizeof(lim));
		return BAD(e, "%s: %s exceeds the maximum %s", path, shown, lim);
	}
	return 0;
}

/*
 * A duration is an ISO 8601 string of the form PnDTnHnMnS ("PT3H"; duration_parse), integer
 * seconds, or a string of digits (seconds), within [min, max].
 */
static int get_duration(const json_t *v, const char *path, uint64_t min, uint64_t max,
	uint64_t *secs, struct jit_error *e)
{
	char shown[48];
	const char *s;
	int ret;

	if (json_is_integer(v)) {
		json_int_t i = json_integer_value(v);

		if (i < 0)
			return BAD(e, "%s: %lld is not a duration (negative)", path, (long long)i);
		snprintf(shown, sizeof(shown), "%lld", (long long)i);
		*secs = (uint64_t)i;
		return check_range(*secs, path, shown, min, max, e);
	}
	if (!json_is_string(v))
		return BAD(e, "%s: expected an ISO 8601 duration or integer seconds, not %s", path,
			jit_json_type(v));
	s = json_string_value(v);
	snprintf(shown, sizeof(shown), "'%.32s'", s);
	ret = duration_parse(s, secs);
	if (ret == -ERANGE)
		*secs = UINT64_MAX;
	else if (ret)
		return BAD(e, "%s: %s is not a duration (ISO 8601 of days, hours, minutes "
			"and seconds in whole numbers, such as PT3H or P1DT12H; or whole "
			"seconds)", path, shown);
	return check_range(*secs, path, shown, min, max, e);
}

static int set_owner(const json_t *root, struct config *c, struct jit_error *e)
{
	/*
	 * Off unless asked: nft before 1.1 misprints the flags of a table that outlived its owner
	 * (Debian 12's nft on a 6.9+ kernel), which breaks `nft -j` readers while jitd is stopped.
	 */
	return get_bool(root, "table_owner", "table_owner", false, &c->table_owner, e);
}

/*
 * "issuers": {"<kid>": "<iss>", ...}. Absent: not bound. An empty object would refuse every
 * grant, which leaving keys_dir empty says more plainly: refused.
 */
static int set_issuers(const json_t *root, struct config *c, struct jit_error *e)
{
	json_t *o = json_object_get(root, "issuers"), *v;
	const char *kid, *iss;
	char shown[JIT_SHOWN_LEN];
	size_t n;
	int ret;

	if (!o)
		return 0;
	if (!json_is_object(o))
		return BAD(e, "issuers: expected an object of key id: issuer, not %s",
			jit_json_type(o));
	if (!(n = json_object_size(o)))
		return BAD(e, "issuers: empty (leave it out to let any trusted key sign as any "
			"issuer)");
	if (!(c->issuers = calloc(n, sizeof(*c->issuers))))
		return OOM(e);
	json_object_foreach(o, kid, v) {
		struct key_issuer *k = &c->issuers[c->n_issuers];

		if (!keys_kid_valid(kid))
			return BAD(e, "issuers: '%s' is not a key id (1-64 of A-Z a-z 0-9 . _ -, "
				"not starting with '.')", jit_shown(kid, shown));
		if (!json_is_string(v))
			return BAD(e, "issuers.%s: expected a string, not %s", kid,
				jit_json_type(v));
		iss = json_string_value(v);
		if (!iss[0] || strlen(iss) > GRANT_MAX_STRING)
			return BAD(e, "issuers.%s: an issuer is 1-%d bytes", kid, GRANT_MAX_STRING);
		/* Counted first: config_free frees what was copied if the second copy fails. */
		c->n_issuers++;
		if ((ret = copy_str(&k->kid, kid, e)) || (ret = copy_str(&k->iss, iss, e)))
			return ret;
	}
	return 0;
}

static int set_reconcile(const json_t *root, struct config *c, struct jit_error *e)
{
	const json_t *v = json_object_get(root, "reconcile_interval");

	c->reconcile_interval = DEFAULT_RECONCILE_INTERVAL;
	if (!v)
		return 0;
	return get_duration(v, "reconcile_interval", 1, MAX_RECONCILE_INTERVAL,
		&c->reconcile_interval, e);
}

static int set_skew(const json_t *root, struct config *c, struct jit_error *e)
{
	const json_t *v = json_object_get(root, "clock_skew");

	c->clock_skew = DEFAULT_CLOCK_SKEW;
	if (!v)
		return 0;
	return get_duration(v, "clock_skew", 0, MAX_CLOCK_SKEW, &c->clock_skew, e);
}

/* prefix_parse only says -EINVAL; an administrator deserves to know which half is wrong. */
static const char *prefix_why(const char *s)
{
	const char *slash = strchr(s, '/');
	size_t n = slash ? (size_t)(slash - s) : strlen(s);
	char addr[64], probe[80];
	struct prefix p;
	int len;

	if (!slash || n >= sizeof(addr))
		return "not an IPv4 or IPv6 address";
	memcpy(addr, s, n);
	addr[n] = '\0';
	if (prefix_parse(addr, &p))
		return "not an IPv4 or IPv6 address";
	/* The all-zero address has no host bits, so only the length can make the probe fail. */
	len = snprintf(probe, sizeof(probe), "%s/%s", strchr(addr, ':') ? "::" : "0.0.0.0",
		slash + 1);
	if (len < 0 || (size_t)len >= sizeof(probe) || prefix_parse(probe, &p))
		return "bad prefix length";
	return "host bits set";
}

static int get_prefix(const json_t *v, const char *path, struct prefix *p, struct jit_error *e)
{
	const char *s;

	if (!json_is_string(v))
		return BAD(e, "%s: expected a prefix string, not %s", path, jit_json_type(v));
	s = json_string_value(v);
	if (prefix_parse(s, p))
		return BAD(e, "%s: '%.64s' is not a prefix (%s)", path, s, prefix_why(s));
	return 0;
}

/* Fills *out and *n (owned by the config, freed by config_free even on error). */
static int get_prefixes(const json_t *a, const char *path, bool *star, struct prefix **out,
	size_t *n, struct jit_error *e)
{
	size_t cnt = json_array_size(a), i;
	char item[ITEM_LEN];
	json_t *v;
	int ret;

	if (!json_is_array(a))
		return BAD(e, "%s: expected an array, not %s", path, jit_json_type(a));
	if (cnt > CONFIG_MAX_PREFIXES)
		return BAD(e, "%s: %zu entries, at most %d allowed", path, cnt,
			CONFIG_MAX_PREFIXES);
	if (cnt && !(*out = calloc(cnt, sizeof(**out))))
		return OOM(e);
	json_array_foreach(a, i, v) {
		snprintf(item, sizeof(item), "%s[%zu]", path, i);
		if (star && json_is_string(v) && !strcmp(json_string_value(v), "*")) {
			/* ["*", "10.0.0.0/8"] has no single sensible meaning: refuse it. */
			if (cnt > 1)
				return BAD(e, "%s: '*' cannot be mixed with prefixes", item);
			*star = true;
			continue;
		}
		if ((ret = get_prefix(v, item, &(*out)[*n], e)))
			return ret;
		(*n)++;
	}
	return 0;
}

static int set_always(const json_t *root, struct config *c, struct jit_error *e)
{
	const json_t *v = json_object_get(root, "always_allow");

	if (!v)
		return 0;
	return get_prefixes(v, "always_allow", NULL, &c->always_allow, &c->n_always_allow, e);
}

static int port_number(const json_t *o, const char *where, struct port_policy *pp,
	struct jit_error *e)
{
	const json_t *v = json_object_get(o, "port");
	json_int_t n;

	if (!v)
		return BAD(e, "%s: missing required key 'port'", where);
	if (!json_is_integer(v))
		return BAD(e, "%s.port: expected an integer, not %s", where, jit_json_type(v));
	n = json_integer_value(v);
	if (n < 1 || n > 65535)
		return BAD(e, "%s.port: %lld is not a port number (1-65535)", where, (long long)n);
	pp->port = (uint16_t)n;
	return 0;
}

static int port_protocol(const json_t *o, const char *where, struct port_policy *pp,
	struct jit_error *e)
{
	const json_t *v = json_object_get(o, "protocol");
	char path[KEY_PATH_LEN];
	const char *s;
	int ret;

	pp->protos = PORT_PROTO_TCP;
	if (!v)
		return 0;
	snprintf(path, sizeof(path), "%s.protocol", where);
	if ((ret = get_string(v, path, &s, e)))
		return ret;
	if (port_proto_parse(s, &pp->protos))
		return BAD(e, "%s: '%.32s' is not tcp, udp or *", path, s);
	return 0;
}

static int port_duration(const json_t *o, const char *where, struct port_policy *pp,
	struct jit_error *e)
{
	const json_t *v = json_object_get(o, "max_duration");
	char path[KEY_PATH_LEN];

	if (!v)
		return BAD(e, "%s: missing required key 'max_duration'", where);
	snprintf(path, sizeof(path), "%s.max_duration", where);
	return get_duration(v, path, CONFIG_MIN_MAX_DURATION, CONFIG_MAX_MAX_DURATION,
		&pp->max_duration, e);
}

static int port_sources(const json_t *o, const char *where, struct port_policy *pp,
	struct jit_error *e)
{
	const json_t *v = json_object_get(o, "allowed_sources");
	char path[KEY_PATH_LEN];
	int ret;

	pp->any_source = !v;
	if (!v)
		return 0;
	snprintf(path, sizeof(path), "%s.allowed_sources", where);
	if ((ret = get_prefixes(v, path, &pp->any_source, &pp->sources, &pp->n_sources, e)))
		return ret;
	if (!pp->any_source && !pp->n_sources)
		return BAD(e, "%s: empty, so nothing can match (use [\"*\"] for any source)", path);
	if (pp->any_source) {
		free(pp->sources);
		pp->sources = NULL;
	}
	return 0;
}

/* The keys of a ports[] and a targets[] entry. pp->sources is the caller's, even on error. */
static int parse_rule(const json_t *o, const char *where, struct port_policy *pp,
	struct jit_error *e)
{
	int ret;

	if ((ret = port_number(o, where, pp, e)) ||
		(ret = port_protocol(o, where, pp, e)) ||
		(ret = port_duration(o, where, pp, e)) ||
		(ret = port_sources(o, where, pp, e)))
		return ret;
	return 0;
}

static int parse_port(json_t *o, size_t i, struct port_policy *pp, struct jit_error *e)
{
	char where[WHERE_LEN];
	int ret;

	snprintf(where, sizeof(where), "ports[%zu]", i);
	if (!json_is_object(o))
		return BAD(e, "%s: expected an object, not %s", where, jit_json_type(o));
	if ((ret = check_keys(o, port_keys, ARRAY_LEN(port_keys), where, e)) ||
		(ret = parse_rule(o, where, pp, e)))
		return ret;
	return 0;
}

static int set_default_port(struct config *c, struct jit_error *e)
{
	if (!(c->ports = calloc(1, sizeof(*c->ports))))
		return OOM(e);
	c->n_ports = 1;
	c->ports[0].port = DEFAULT_PORT;
	c->ports[0].protos = PORT_PROTO_TCP;
	c->ports[0].max_duration = DEFAULT_MAX_DURATION;
	c->ports[0].any_source = true;
	return 0;
}

static int set_ports(const json_t *root, struct config *c, struct jit_error *e)
{
	const json_t *a = json_object_get(root, "ports");
	size_t cnt = json_array_size(a), i;
	json_t *v;
	int ret;

	if (!(c->mode & CONFIG_MODE_HOST)) {
		if (a)
			return BAD(e, "ports: mode gateway guards only targets; use \"mode\": "
				      "\"both\" to guard this host's ports too");
		return 0;
	}
	if (!a)
		return set_default_port(c, e);
	if (!json_is_array(a))
		return BAD(e, "ports: expected an array, not %s", jit_json_type(a));
	if (!cnt)
		return BAD(e, "ports: empty, so nothing is protected (omit the key for 22/tcp)");
	if (cnt > CONFIG_MAX_PORTS)
		return BAD(e, "ports: %zu entries, at most %d allowed", cnt, CONFIG_MAX_PORTS);
	if (!(c->ports = calloc(cnt, sizeof(*c->ports))))
		return OOM(e);
	c->n_ports = cnt;
	json_array_foreach(a, i, v) {
		if ((ret = parse_port(v, i, &c->ports[i], e)))
			return ret;
		/* One entry per port number, as in the cloud products: tcp plus udp is "*". */
		for (size_t j = 0; j < i; j++)
			if (c->ports[j].port == c->ports[i].port)
				return BAD(e, "ports[%zu]: port %u is listed twice (ports[%zu])", i,
					(unsigned)c->ports[i].port, j);
	}
	return 0;
}

static const char *mode_name(unsigned mode)
{
	switch (mode) {
	case CONFIG_MODE_HOST:
		return "host";
	case CONFIG_MODE_GATEWAY:
		return "gateway";
	}
	return "both";
}

static int set_mode(const json_t *root, struct config *c, struct jit_error *e)
{
	const json_t *v = json_object_get(root, "mode");
	const char *s;
	int ret;

	c->mode = CONFIG_MODE_HOST;
	if (!v)
		return 0;
	if ((ret = get_string(v, "mode", &s, e)))
		return ret;
	if (!strcmp(s, "gateway"))
		c->mode = CONFIG_MODE_GATEWAY;
	else if (!strcmp(s, "both"))
		c->mode = CONFIG_MODE_HOST | CONFIG_MODE_GATEWAY;
	else if (strcmp(s, "host"))
		return BAD(e, "mode: '%.32s' is not host, gateway or both", s);
	return 0;
}

/* Exactly 1-5 decimal digits: no sign, no space. */
static bool port_digits(const char *s, size_t n, unsigned long *v)
{
	*v = 0;
	if (n < 1 || n > 5 || strspn(s, "0123456789") < n || (n > 1 && s[0] == '0'))
		return false;
	for (size_t i = 0; i < n; i++)
		*v = *v * 10 + (unsigned long)(s[i] - '0');
	return true;
}

/* "LO-HI": the gateway ports a target's grants are given, LO <= HI. */
static int dnat_range(const json_t *v, const char *path, struct target_policy *t,
	struct jit_error *e)
{
	const char *s, *dash;
	unsigned long lo, hi;
	int ret;

	if ((ret = get_string(v, path, &s, e)))
		return ret;
	dash = strchr(s, '-');
	if (!dash || !port_digits(s, (size_t)(dash - s), &lo) ||
		!port_digits(dash + 1, strlen(dash + 1), &hi))
		return BAD(e, "%s: '%.32s' is not LO-HI (e.g. \"50000-50999\")", path, s);
	if (lo < 1 || hi > 65535)
		return BAD(e, "%s: '%.32s' is not within 1-65535", path, s);
	if (lo > hi)
		return BAD(e, "%s: '%.32s' starts above its end", path, s);
	t->dnat_lo = (uint16_t)lo;
	t->dnat_hi = (uint16_t)hi;
	return 0;
}

/* What clients connect to, shown to them: one IPv4 address, kept in canonical form. */
static int dnat_address(const json_t *v, const char *path, struct target_policy *t,
	struct jit_error *e)
{
	struct prefix p;
	const char *s;
	int ret;

	if ((ret = get_string(v, path, &s, e)))
		return ret;
	if (prefix_parse(s, &p) || p.family != AF_INET || p.len != 32 ||
		prefix_format(&p, t->dnat_address, sizeof(t->dnat_address)))
		return BAD(e, "%s: '%.64s' is not an IPv4 address", path, s);
	return 0;
}

static int target_dnat(const json_t *o, const char *where, struct target_policy *t,
	struct jit_error *e)
{
	json_t *d = json_object_get(o, "dnat");
	char path[KEY_PATH_LEN];
	const json_t *v;
	int ret;

	if (!d)
		return 0;
	snprintf(path, sizeof(path), "%s.dnat", where);
	if (!json_is_object(d))
		return BAD(e, "%s: expected an object, not %s", path, jit_json_type(d));
	/* Mapping ports stands in for public IPv4 addresses; IPv6 targets are routed to. */
	if (t->addr.family != AF_INET)
		return BAD(e, "%s: only IPv4 targets can map ports", path);
	if ((ret = check_keys(d, dnat_keys, ARRAY_LEN(dnat_keys), path, e)))
		return ret;
	if (!(v = json_object_get(d, "listen_port_range")))
		return BAD(e, "%s: missing required key 'listen_port_range'", path);
	snprintf(path, sizeof(path), "%s.dnat.listen_port_range", where);
	if ((ret = dnat_range(v, path, t, e)))
		return ret;
	t->dnat = true;
	if (!(v = json_object_get(d, "address")))
		return 0;
	snprintf(path, sizeof(path), "%s.dnat.address", where);
	return dnat_address(v, path, t, e);
}

static int parse_target(json_t *o, size_t i, struct target_policy *t, struct jit_error *e)
{
	struct port_policy pp = { 0 };
	char where[WHERE_LEN], path[KEY_PATH_LEN];
	const json_t *a;
	int ret;

	snprintf(where, sizeof(where), "targets[%zu]", i);
	if (!json_is_object(o))
		return BAD(e, "%s: expected an object, not %s", where, jit_json_type(o));
	if ((ret = check_keys(o, target_keys, ARRAY_LEN(target_keys), where, e)))
		return ret;
	if (!(a = json_object_get(o, "address")))
		return BAD(e, "%s: missing required key 'address'", where);
	snprintf(path, sizeof(path), "%s.address", where);
	if ((ret = get_prefix(a, path, &t->addr, e)))
		return ret;
	ret = parse_rule(o, where, &pp, e);
	/* Handed over on error too, so that config_free frees the sources. */
	t->port = pp.port;
	t->protos = pp.protos;
	t->max_duration = pp.max_duration;
	t->any_source = pp.any_source;
	t->sources = pp.sources;
	t->n_sources = pp.n_sources;
	if (ret)
		return ret;
	return target_dnat(o, where, t, e);
}

/* Canonical prefixes: equal when neither is longer and one contains the other. */
static bool same_prefix(const struct prefix *a, const struct prefix *b)
{
	return a->len == b->len && prefix_contains(a, b);
}

/* targets[i] against the ones before it: one policy per (address, port, protocol). */
static int check_target(const struct config *c, size_t i, struct jit_error *e)
{
	const struct target_policy *t = &c->targets[i];
	char addr[PREFIX_STRLEN];

	for (size_t j = 0; j < i; j++) {
		const struct target_policy *u = &c->targets[j];
		unsigned common = t->protos & u->protos;

		if (t->port != u->port || !common || !same_prefix(&t->addr, &u->addr))
			continue;
		if (prefix_format(&t->addr, addr, sizeof(addr)))
			addr[0] = '\0';
		return BAD(e, "targets[%zu]: %s port %u/%s is also in targets[%zu]", i, addr,
			(unsigned)t->port, port_proto_name(common), j);
	}
	return 0;
}

/* A gateway port belongs to one grant of one target, and never to the host's own ports. */
static int check_dnat(const struct config *c, size_t i, struct jit_error *e)
{
	const struct target_policy *t = &c->targets[i];

	if (!t->dnat)
		return 0;
	for (size_t j = 0; j < i; j++) {
		const struct target_policy *u = &c->targets[j];

		if (u->dnat && t->dnat_lo <= u->dnat_hi && u->dnat_lo <= t->dnat_hi)
			return BAD(e, "targets[%zu].dnat.listen_port_range: %u-%u overlaps "
				      "targets[%zu]'s %u-%u", i, (unsigned)t->dnat_lo,
				(unsigned)t->dnat_hi, j, (unsigned)u->dnat_lo,
				(unsigned)u->dnat_hi);
	}
	for (size_t j = 0; j < c->n_ports; j++) {
		const struct port_policy *pp = &c->ports[j];

		if (pp->port >= t->dnat_lo && pp->port <= t->dnat_hi && (pp->protos & t->protos))
			return BAD(e, "targets[%zu].dnat.listen_port_range: %u-%u contains the "
				      "protected port %u/%s (ports[%zu])", i, (unsigned)t->dnat_lo,
				(unsigned)t->dnat_hi, (unsigned)pp->port,
				port_proto_name(pp->protos & t->protos), j);
	}
	return 0;
}

static int set_targets(const json_t *root, struct config *c, struct jit_error *e)
{
	const json_t *a = json_object_get(root, "targets");
	size_t cnt = json_array_size(a), i;
	json_t *v;
	int ret;

	if (!(c->mode & CONFIG_MODE_GATEWAY))
		return a ? BAD(e, "targets: needs \"mode\": \"gateway\" or \"both\"") : 0;
	if (!a)
		return BAD(e, "targets: missing, and mode %s needs at least one target",
			mode_name(c->mode));
	if (!json_is_array(a))
		return BAD(e, "targets: expected an array, not %s", jit_json_type(a));
	if (!cnt)
		return BAD(e, "targets: empty, and mode %s needs at least one target",
			mode_name(c->mode));
	if (cnt > CONFIG_MAX_TARGETS)
		return BAD(e, "targets: %zu entries, at most %d allowed", cnt, CONFIG_MAX_TARGETS);
	if (!(c->targets = calloc(cnt, sizeof(*c->targets))))
		return OOM(e);
	c->n_targets = cnt;
	json_array_foreach(a, i, v) {
		if ((ret = parse_target(v, i, &c->targets[i], e)) ||
			(ret = check_target(c, i, e)) ||
			(ret = check_dnat(c, i, e)))
			return ret;
	}
	return 0;
}

/* An integer member within [min, max], or def when absent. */
static int get_int(const json_t *obj, const char *key, const char *path, long long def,
	long long min, long long max, long long *out, struct jit_error *e)
{
	const json_t *v = json_object_get(obj, key);

	*out = def;
	if (!v)
		return 0;
	if (!json_is_integer(v))
		return BAD(e, "%s: expected an integer, not %s", path, jit_json_type(v));
	*out = json_integer_value(v);
	if (*out < min || *out > max)
		return BAD(e, "%s: %lld is outside %lld..%lld", path, *out, min, max);
	return 0;
}

static int set_log_level(const json_t *root, struct config *c, struct jit_error *e)
{
	static const char *const names[] = { "error", "warning", "info", "debug" };
	const json_t *v = json_object_get(root, "log_level");
	const char *s;
	int ret;

	c->log_level = LOG_LVL_INFO;
	if (!v)
		return 0;
	if ((ret = get_string(v, "log_level", &s, e)))
		return ret;
	for (size_t i = 0; i < ARRAY_LEN(names); i++) {
		if (!strcmp(s, names[i])) {
			c->log_level = (enum log_level)i;
			return 0;
		}
	}
	return BAD(e, "log_level: '%.32s' is not error, warning, info or debug", s);
}

static int set_access(json_t *root, struct config *c, struct jit_error *e)
{
	json_t *g = json_object_get(root, "control_group"), *a = json_object_get(root, "audit");
	long long n;
	int ret;

	if (g && (!json_is_string(g) || !json_string_length(g)))
		return BAD(e, "control_group: expected a group name or gid");
	if (!(c->control_group = strdup(g ? json_string_value(g) : DEFAULT_CONTROL_GROUP)))
		return OOM(e);
	/*
	 * Every active grant's id is in the cache, and so are revoked ones and revocations until
	 * they expire: by default twice the grant limit (set_limits runs first), never less than it.
	 */
	if ((ret = get_int(root, "replay_cache_max", "replay_cache_max",
		c->max_grants > 5000000 ? 10000000 : 2 * (long long)c->max_grants, 1, 10000000, &n,
		e)))
		return ret;
	if ((size_t)n < c->max_grants)
		return BAD(e, "replay_cache_max: %lld is below limits.max_grants (%zu): grants under "
			"the limit would be refused as busy", n, c->max_grants);
	c->replay_cache_max = (size_t)n;
	if (a && !json_is_object(a))
		return BAD(e, "audit: expected an object, not %s", jit_json_type(a));
	if (a && (ret = check_keys(a, audit_keys, ARRAY_LEN(audit_keys), "audit", e)))
		return ret;
	if ((ret = get_int(a, "max_bytes", "audit.max_bytes", 10 * 1024 * 1024, 65536,
		(long long)1 << 40, &n, e)))
		return ret;
	c->audit_max_bytes = (uint64_t)n;
	if ((ret = get_int(a, "keep", "audit.keep", 5, 1, 100, &n, e)))
		return ret;
	c->audit_keep = (unsigned)n;
	if ((ret = get_int(a, "unverified_per_minute", "audit.unverified_per_minute", 60, 0,
		1000000, &n, e)))
		return ret;
	c->audit_unverified_per_minute = (unsigned)n;
	/* On unless asked: a host's own log (authpriv) is where most operators look first. */
	return get_bool(a, "syslog", "audit.syslog", true, &c->audit_syslog, e);
}

/* "192.0.2.1:7443" or "[2001:db8::1]:7443": numeric only, since a name would need DNS at boot. */
static int parse_address(const char *s, struct listen_config *l, struct jit_error *e)
{
	const char *colon = strrchr(s, ':'), *host = s;
	size_t n = colon ? (size_t)(colon - s) : 0;
	unsigned char buf[sizeof(struct in6_addr)];
	char *end;
	unsigned long port;

	if (!colon || !colon[1])
		return BAD(e, "listen.address: '%.64s' is not ADDRESS:PORT", s);
	if (s[0] == '[') {
		if (n < 2 || s[n - 1] != ']')
			return BAD(e, "listen.address: '%.64s': write IPv6 as [ADDRESS]:PORT", s);
		host = s + 1;
		n -= 2;
	}
	if (n == 0 || n >= sizeof(l->host))
		return BAD(e, "listen.address: '%.64s' is not ADDRESS:PORT", s);
	memcpy(l->host, host, n);
	l->host[n] = '\0';
	errno = 0;
	port = strtoul(colon + 1, &end, 10);
	/* Digits only, no leading zero: strtoul would also take " +7443" or "007443". */
	if (*end || errno || port < 1 || port > 65535 || colon[1] < '1' || colon[1] > '9')
		return BAD(e, "listen.address: '%.16s' is not a port number", colon + 1);
	l->port = (uint16_t)port;
	if (inet_pton(AF_INET, l->host, buf) == 1) {
		if (s[0] == '[')
			return BAD(e, "listen.address: brackets are for IPv6 addresses");
		l->loopback = buf[0] == 127;
		return 0;
	}
	if (s[0] != '[' || inet_pton(AF_INET6, l->host, buf) != 1)
		return BAD(e, "listen.address: '%.64s' is not a numeric IPv4 or [IPv6] address",
			l->host);
	l->loopback = IN6_IS_ADDR_LOOPBACK((struct in6_addr *)buf);
	return 0;
}

static int set_listen(json_t *root, struct config *c, struct jit_error *e)
{
	json_t *o = json_object_get(root, "listen"), *v;
	struct listen_config *l = &c->listen;
	const char *s;
	long long n;
	int ret;

	if (!o)
		return 0;
	if (!json_is_object(o))
		return BAD(e, "listen: expected an object, not %s", jit_json_type(o));
	if ((ret = check_keys(o, listen_keys, ARRAY_LEN(listen_keys), "listen", e)))
		return ret;
	l->enabled = true;
	if (!(v = json_object_get(o, "address")))
		return BAD(e, "listen.address: missing (e.g. \"0.0.0.0:7443\")");
	if ((ret = get_string(v, "listen.address", &s, e)) || (ret = parse_address(s, l, e)))
		return ret;
	if ((ret = get_bool(o, "insecure_plaintext", "listen.insecure_plaintext", false,
		&l->insecure_plaintext, e)))
		return ret;
	if ((json_object_get(o, "tls_cert") &&
		(ret = set_path(o, "tls_cert", "listen.tls_cert", NULL, &l->tls_cert, e))) ||
		(json_object_get(o, "tls_key") &&
			(ret = set_path(o, "tls_key", "listen.tls_key", NULL, &l->tls_key, e))) ||
		(json_object_get(o, "client_ca") &&
			(ret = set_path(o, "client_ca", "listen.client_ca", NULL, &l->client_ca, e))))
		return ret;
	if (l->insecure_plaintext) {
		/* Grants are signed, but status is not, and a network path deserves TLS. */
		if (!l->loopback)
			return BAD(e, "listen.insecure_plaintext: only on a loopback address, not %s",
				l->host);
		if (l->tls_cert || l->tls_key || l->client_ca)
			return BAD(e, "listen.insecure_plaintext: contradicts tls_cert/tls_key/client_ca");
	} else if (!l->tls_cert || !l->tls_key) {
		return BAD(e, "listen: tls_cert and tls_key are required (or insecure_plaintext "
			      "on a loopback address)");
	}
	if ((ret = get_int(o, "max_connections", "listen.max_connections",
		DEFAULT_LISTEN_MAX_CONNECTIONS, 1, 65536, &n, e)))
		return ret;
	l->max_connections = (unsigned)n;
	l->timeout = DEFAULT_LISTEN_TIMEOUT;
	if ((v = json_object_get(o, "timeout")) &&
		(ret = get_duration(v, "listen.timeout", 1, MAX_LISTEN_TIMEOUT, &l->timeout, e)))
		return ret;
	if ((ret = get_int(o, "rate_limit", "listen.rate_limit", DEFAULT_LISTEN_RATE, 0, 1000000,
		&n, e)))
		return ret;
	l->rate_limit = (unsigned)n;
	return 0;
}

static int set_limits(json_t *root, struct config *c, struct jit_error *e)
{
	json_t *o = json_object_get(root, "limits");
	long long n;
	int ret;

	if (o && !json_is_object(o))
		return BAD(e, "limits: expected an object, not %s", jit_json_type(o));
	if (o && (ret = check_keys(o, limit_keys, ARRAY_LEN(limit_keys), "limits", e)))
		return ret;
	if ((ret = get_int(o, "max_grants", "limits.max_grants", 200000, 1, 10000000, &n, e)))
		return ret;
	c->max_grants = (size_t)n;
	if ((ret = get_int(o, "max_sources_per_grant", "limits.max_sources_per_grant",
		GRANT_MAX_SOURCES, 1, GRANT_MAX_SOURCES, &n, e)))
		return ret;
	c->max_sources = (size_t)n;
	if ((ret = get_int(o, "max_ports_per_grant", "limits.max_ports_per_grant", GRANT_MAX_PORTS,
		1, GRANT_MAX_PORTS, &n, e)))
		return ret;
	c->max_ports = (size_t)n;
	if ((ret = get_int(o, "control_connections", "limits.control_connections", 32, 1, 1024, &n,
		e)))
		return ret;
	c->control_connections = (unsigned)n;
	return 0;
}

static int parse_doc(json_t *root, bool resolve_host, struct config *c, struct jit_error *e)
{
	int ret;

	if (!json_is_object(root))
		return BAD(e, "expected a JSON object, not %s", jit_json_type(root));
	if ((ret = check_keys(root, top_keys, ARRAY_LEN(top_keys), NULL, e)) ||
		(ret = set_host_id(root, resolve_host, c, e)) ||
		(ret = set_path(root, "keys_dir", "keys_dir", DEFAULT_KEYS_DIR, &c->keys_dir, e)) ||
		(ret = set_path(root, "state_dir", "state_dir", DEFAULT_STATE_DIR, &c->state_dir,
			e)) ||
		(ret = set_path(root, "control_socket", "control_socket", DEFAULT_CONTROL_SOCKET,
			&c->control_socket, e)) ||
		(ret = check_socket_path(c->control_socket, e)) ||
		(ret = set_deny(root, c, e)) ||
		(ret = set_skew(root, c, e)) ||
		(ret = set_reconcile(root, c, e)) ||
		(ret = set_owner(root, c, e)) ||
		(ret = set_limits(root, c, e)) ||
		(ret = set_always(root, c, e)) ||
		(ret = set_access(root, c, e)) ||
		(ret = set_listen(root, c, e)) ||
		(ret = set_log_level(root, c, e)) ||
		(ret = set_mode(root, c, e)) ||
		(ret = set_ports(root, c, e)) ||
		(ret = set_targets(root, c, e)) ||
		(ret = set_issuers(root, c, e)))
		return ret;
	return 0;
}

static int parse(const char *json, size_t len, bool resolve_host, struct config **out,
	struct jit_error *e)
{
	struct config *c = NULL;
	json_t *root = NULL;
	json_error_t jerr;
	int ret;

	*out = NULL;
	if (len > CONFIG_MAX_BYTES) {
		ret = BAD(e, "larger than %d bytes", CONFIG_MAX_BYTES);
		goto out;
	}
	/* jansson takes a NUL as the end of input and would ignore what follows it. */
	if (len && memchr(json, '\0', len)) {
		ret = BAD(e, "contains a NUL byte");
		goto out;
	}
	/* Never JSON_ALLOW_NUL: paths and names are C strings and must not be cut short. */
	root = json_loadb(json, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!root) {
		ret = BAD(e, "line %d, column %d: %s", jerr.line, jerr.column, jerr.text);
		goto out;
	}
	if (!(c = calloc(1, sizeof(*c)))) {
		ret = OOM(e);
		goto out;
	}
	if ((ret = parse_doc(root, resolve_host, c, e)))
		goto out;
	*out = c;
	c = NULL;
	ret = 0;
out:
	config_free(c);
	json_decref(root);
	return ret;
}

int config_parse(const char *json, size_t len, struct config **out, struct jit_error *e)
{
	return parse(json, len, true, out, e);
}

/*
 * The file decides who may reach the management ports: like doas, refuse one that someone other
 * than root (or the user testing it) could have changed.
 */
static int check_file(int fd, const char *path, struct jit_error *e)
{
	struct stat st;
	char why[64];

	if (fstat(fd, &st))
		return BAD(e, "%s: %s", path, strerror(errno));
	if (filetrust_fault(&st, S_IFREG, why, sizeof(why)))
		return BAD(e, "%s: %s", path, why);
	return 0;
}

/* Reads one byte past the cap so that an oversized file is refused, never silently truncated. */
static int slurp(int fd, const char *path, char **buf, size_t *len, struct jit_error *e)
{
	size_t cap = CONFIG_MAX_BYTES + 1;
	ssize_t n;

	if (!(*buf = malloc(cap)))
		return OOM(e);
	while (*len < cap) {
		n = read(fd, *buf + *len, cap - *len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0)
			return BAD(e, "%s: %s", path, strerror(errno));
		if (n == 0)
			break;
		*len += (size_t)n;
	}
	if (*len > CONFIG_MAX_BYTES)
		return BAD(e, "%s: larger than %d bytes", path, CONFIG_MAX_BYTES);
	return 0;
}

static int load(const char *path, bool resolve_host, struct config **out, char **raw,
	size_t *raw_len, struct jit_error *e)
{
	struct jit_error perr = { 0 };
	char *buf = NULL;
	size_t len = 0;
	int fd, ret;

	*out = NULL;
	/*
	 * O_NONBLOCK: a FIFO put in the file's place must not hang the open until a writer comes
	 * (a start would never reach its lockdown, a reload would stall the loop): check_file
	 * refuses it. A regular file's reads ignore the flag.
	 */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0) {
		ret = BAD(e, "%s: %s", path, strerror(errno));
		goto out;
	}
	if ((ret = check_file(fd, path, e)) || (ret = slurp(fd, path, &buf, &len, e)))
		goto out;
	/* The caller prints only the message, so it must say which file. */
	if ((ret = parse(buf, len, resolve_host, out, &perr)))
		jit_fail(e, ret, "%s: %s", path, perr.msg);
	else if (raw) {
		*raw = buf;
		*raw_len = len;
		buf = NULL;
	}
out:
	free(buf);
	if (fd >= 0)
		close(fd);
	return ret;
}

int config_load(const char *path, struct config **out, struct jit_error *e)
{
	return load(path, true, out, NULL, NULL, e);
}

int config_load_raw(const char *path, struct config **out, char **raw, size_t *raw_len,
	struct jit_error *e)
{
	return load(path, true, out, raw, raw_len, e);
}

int config_load_record(const char *path, struct config **out, struct jit_error *e)
{
	return load(path, false, out, NULL, NULL, e);
}

/*
 * Not from a file that check_file refuses: whoever may write that one could send the lookup to
 * a directory that holds no record (a start that fails would then leave the ports open), or
 * keep jitctl teardown's record out of syslog.
 */
const char *config_state_dir_hint(const char *path, char *buf, size_t len, bool *no_syslog)
{
	json_t *root = NULL, *v;
	const char *dir = DEFAULT_STATE_DIR;
	char *text = NULL;
	size_t n = 0;
	int fd;

	if (no_syslog)
		*no_syslog = false;
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) >= 0 &&
		!check_file(fd, path, &(struct jit_error){ 0 }) &&
		!slurp(fd, path, &text, &n, &(struct jit_error){ 0 }) &&
		(root = json_loadb(text, n, 0, NULL))) {
		if (json_is_string(v = json_object_get(root, "state_dir")) &&
			json_string_value(v)[0] == '/')
			dir = json_string_value(v);
		/* Only a false the agent would take too: anything else is its to refuse. */
		if (no_syslog)
			*no_syslog = json_is_false(json_object_get(json_object_get(root, "audit"),
				"syslog"));
	}
	snprintf(buf, len, "%s", dir);
	json_decref(root);
	free(text);
	if (fd >= 0)
		close(fd);
	return buf;
}

/*
 * Settings that load but are most likely mistakes. Warned of, not refused: a file an earlier
 * jitd took must not keep a newer one from starting (its deny rules) after an upgrade.
 */
bool config_warning(const struct config *c, size_t *at, char *buf, size_t len)
{
	size_t n = c->n_always_allow;

	for (; *at < n + c->n_targets + c->n_issuers; (*at)++) {
		const struct target_policy *t = *at < n || *at >= n + c->n_targets ? NULL :
			&c->targets[*at - n];
		size_t i = *at;
		const char *what;

		/*
		 * No grant's iss can hold what grant_claim_string refuses: every grant of that
		 * key would be refused (wrong_issuer or malformed).
		 */
		if (i >= n + c->n_targets) {
			const struct key_issuer *k = &c->issuers[i - n - c->n_targets];

			if (!(what = grant_string_unsafe(k->iss, strlen(k->iss))))
				continue;
			snprintf(buf, len, "issuers.%s: contains %s, which no grant's iss may "
				"hold: every grant of key %s is refused", k->kid, what, k->kid);
			(*at)++;
			return true;
		}

		/* Every source of a family, for good: no one means that as an exception. */
		if (!t && c->always_allow[i].len == 0) {
			snprintf(buf, len, "always_allow[%zu]: a prefix of length 0 lets every "
				"%s source reach every protected port (to stop protecting a port, "
				"remove it from ports)", i,
				c->always_allow[i].family == AF_INET ? "IPv4" : "IPv6");
			(*at)++;
			return true;
		}
		/*
		 * The map takes a granted source's connections to any of the gateway's
		 * addresses: one to the controller endpoint would reach the target instead.
		 */
		if (t && t->dnat && c->listen.enabled && (t->protos & PORT_PROTO_TCP) &&
			c->listen.port >= t->dnat_lo && c->listen.port <= t->dnat_hi) {
			snprintf(buf, len, "targets[%zu].dnat.listen_port_range: %u-%u holds the "
				"controller endpoint's port %u/tcp (listen.address): a granted "
				"source's connections to it would reach the target", i - n,
				(unsigned)t->dnat_lo, (unsigned)t->dnat_hi,
				(unsigned)c->listen.port);
			(*at)++;
			return true;
		}
	}
	return false;
}

void config_free(struct config *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_ports; i++)
		free(c->ports[i].sources);
	free(c->ports);
	for (size_t i = 0; i < c->n_targets; i++)
		free(c->targets[i].sources);
	free(c->targets);
	free(c->always_allow);
	free(c->control_socket);
	free(c->control_group);
	free(c->state_dir);
	free(c->keys_dir);
	free(c->host_id);
	free(c->listen.tls_cert);
	free(c->listen.tls_key);
	free(c->listen.client_ca);
	for (size_t i = 0; i < c->n_issuers; i++) {
		free(c->issuers[i].kid);
		free(c->issuers[i].iss);
	}
	free(c->issuers);
	free(c);
}

const char *config_issuer_of(const struct config *c, const char *kid)
{
	for (size_t i = 0; i < c->n_issuers; i++)
		if (!strcmp(c->issuers[i].kid, kid))
			return c->issuers[i].iss;
	return NULL;
}

const struct port_policy *config_find_port(const struct config *c, uint16_t port)
{
	for (size_t i = 0; i < c->n_ports; i++)
		if (c->ports[i].port == port)
			return &c->ports[i];
	return NULL;
}

const struct target_policy *config_find_target(const struct config *c, const struct prefix *dst,
	uint16_t port, unsigned proto)
{
	const struct target_policy *best = NULL;

	for (size_t i = 0; i < c->n_targets; i++) {
		const struct target_policy *t = &c->targets[i];

		if (t->addr.family != dst->family || t->port != port || !(t->protos & proto) ||
			!prefix_contains(&t->addr, dst))
			continue;
		if (!best || t->addr.len > best->addr.len)
			best = t;
	}
	return best;
}
