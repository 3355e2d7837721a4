#ifndef JITD_COMMON_CONFIG_H
#define JITD_COMMON_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <netinet/in.h>

#include "common/log.h"
#include "common/prefix.h"

struct jit_error;

#define CONFIG_DEFAULT_PATH "/etc/jitd/jitd.json"
#define DEFAULT_CONTROL_GROUP "jitd"
#define CONFIG_MAX_BYTES (1024 * 1024)
#define CONFIG_MAX_PORTS 256
#define CONFIG_MAX_PREFIXES 1024	   /* per list */
#define CONFIG_MIN_MAX_DURATION 1	   /* seconds */
#define CONFIG_MAX_MAX_DURATION (24 * 3600) /* as the cloud products: at most one day */
#define CONFIG_MAX_TARGETS 256

/* "mode": what jitd guards. A bit mask: "both" is host and gateway. */
#define CONFIG_MODE_HOST 0x1u	 /* the host's own ports ("ports"): hook input */
#define CONFIG_MODE_GATEWAY 0x2u /* machines behind it ("targets"): hook forward */

enum deny_action {
	DENY_DROP = 0,
	DENY_REJECT = 1,
};

/* One protected port: the policy a grant for it must satisfy. */
struct port_policy {
	uint16_t port;
	unsigned protos;	/* enum port_proto mask */
	uint64_t max_duration;	/* seconds */
	bool any_source;	/* allowed_sources contains "*" */
	struct prefix *sources; /* allowed prefixes (unused when any_source) */
	size_t n_sources;
};

/*
 * One forwarded target (gateway mode): the machines in addr, one port, its protocols. A grant
 * with a "dst" claim inside addr gets forwarded access to them under this policy.
 */
struct target_policy {
	struct prefix addr;	/* "address" */
	uint16_t port;
	unsigned protos;	/* enum port_proto mask; "protocol", tcp by default */
	uint64_t max_duration;	/* seconds */
	bool any_source;
	struct prefix *sources;
	size_t n_sources;
	/*
	 * "dnat": {"listen_port_range": "50000-50999", "address": "198.51.100.10"}: a grant gets a
	 * gateway port from the range for its lifetime, DNAT'ed to dst:port for its sources only.
	 * IPv4 targets only. address (optional) is what clients connect to, for display: "" if absent.
	 */
	bool dnat;
	uint16_t dnat_lo, dnat_hi;
	char dnat_address[INET6_ADDRSTRLEN];
};

/*
 * The controller endpoint ("listen"). Absent: jitd does not listen on the network. TLS unless
 * insecure_plaintext, which config_parse allows only on a loopback address.
 */
struct listen_config {
	bool enabled;
	char host[INET6_ADDRSTRLEN]; /* numeric, without the brackets of "[::1]:7443" */
	uint16_t port;
	bool loopback;		     /* host is 127.0.0.0/8 or ::1 */
	char *tls_cert;		     /* PEM chain; NULL only with insecure_plaintext */
	char *tls_key;		     /* PEM private key */
	char *client_ca;	     /* PEM CA bundle: clients must present a certificate it signed */
	bool insecure_plaintext;
	unsigned max_connections; /* concurrent; then one gives way, or more wait (connshare.h) */
	uint64_t timeout;	  /* seconds: read, write and idle keep-alive, TLS handshake included */
	unsigned rate_limit;	  /* requests per second per client address (burst 2x); 0: off */
};

/* "issuers": the one iss a trusted key may sign under (RFC 8725 section 3.8). */
struct key_issuer {
	char *kid;
	char *iss;
};

/* The agent configuration. Owned by whoever called config_load/config_parse; free with config_free. */
struct config {
	char *host_id;
	char *keys_dir;
	char *state_dir;
	char *control_socket;
	char *control_group;	  /* may read the control socket: a group name or a gid */
	size_t replay_cache_max;  /* remembered grant/revocation ids */
	uint64_t audit_max_bytes; /* audit.jsonl rotates beyond this */
	unsigned audit_keep;	  /* rotated audit files kept */
	/* refusals naming no grant audited one by one in a minute; the rest counted */
	unsigned audit_unverified_per_minute;
	bool audit_syslog;	  /* the trail copied to syslog (authpriv) */
	enum deny_action deny_action;
	uint64_t clock_skew; /* seconds */
	uint64_t reconcile_interval; /* seconds between full comparisons with the kernel */
	bool table_owner;	     /* claim inet jitd (Linux 6.9+); watch and repair regardless */
	/* "limits": at a limit jitd refuses (busy, too_large) and stays healthy. */
	size_t max_grants;	     /* active grants */
	size_t max_sources;	     /* sources per grant (<= GRANT_MAX_SOURCES) */
	size_t max_ports;	     /* ports per grant (<= GRANT_MAX_PORTS) */
	unsigned control_connections; /* concurrent control-socket clients */
	struct prefix *always_allow;
	size_t n_always_allow;
	unsigned mode;		     /* CONFIG_MODE_* mask; "host" (the default), "gateway", "both" */
	struct port_policy *ports;   /* empty in mode gateway */
	size_t n_ports;
	struct target_policy *targets; /* empty in mode host */
	size_t n_targets;
	struct listen_config listen;
	enum log_level log_level; /* "log_level"; jitd -v raises it to debug */
	/* Empty ("issuers" absent): any trusted key may sign under any iss, as before. */
	struct key_issuer *issuers;
	size_t n_issuers;
};

/*
 * Parses a configuration document. Unknown keys, wrong types, out-of-range values, a second entry
 * for the same port, and duplicate JSON keys are errors. Returns 0, or JIT_ERR_BAD_CONFIG with
 * e->msg naming the key and the reason ("ports[1].port: 70000 is not a port number").
 */
int config_parse(const char *json, size_t len, struct config **out, struct jit_error *e);
/* Reads path (at most CONFIG_MAX_BYTES) and parses it. Same returns; I/O errors name the path. */
int config_load(const char *path, struct config **out, struct jit_error *e);
/* config_load, and on success *raw (the caller frees) holds the *raw_len bytes it parsed. */
int config_load_raw(const char *path, struct config **out, char **raw, size_t *raw_len,
	struct jit_error *e);
/*
 * config_load for a configuration kept to close the ports with (agent/lockdown.h): an unset
 * host_id is left NULL, not the host name, which the deny table does not need and which may be
 * unusable at a boot ("(none)", a name DHCP gave with a space) just when the table is wanted.
 */
int config_load_record(const char *path, struct config **out, struct jit_error *e);
/*
 * Where the file at path keeps its state: its "state_dir" when it is a JSON document naming an
 * absolute one, however else it fails to load, but for its mode and owner (a file that only
 * root may write); otherwise the default. Written into buf, which is returned; *no_syslog
 * (unless NULL): whether that same document sets audit.syslog false. For what a start that
 * refuses the file still needs, and jitctl teardown (agent/lockdown.h).
 */
const char *config_state_dir_hint(const char *path, char *buf, size_t len, bool *no_syslog);
/*
 * The next setting of c that loads but is most likely a mistake, said in buf: true, or false
 * when none is left. *at starts at 0 and moves on with each call.
 */
bool config_warning(const struct config *c, size_t *at, char *buf, size_t len);
void config_free(struct config *c);
/* The policy entry for port, or NULL if the port is not protected. */
const struct port_policy *config_find_port(const struct config *c, uint16_t port);
/*
 * The target policy for forwarded traffic to every address of dst on (port, one proto of enum
 * port_proto): among the targets whose address contains dst and that list port with proto, the
 * one with the longest address prefix, as a route lookup would pick. NULL if none.
 */
const struct target_policy *config_find_target(const struct config *c, const struct prefix *dst,
	uint16_t port, unsigned proto);
/* The iss "issuers" binds kid to, or NULL when it names no such key. */
const char *config_issuer_of(const struct config *c, const char *kid);

#endif
