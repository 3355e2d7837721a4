#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/config.h"
#include "common/err.h"
#include "common/port.h"
#include "common/prefix.h"

/* The example from the configuration brief, byte for byte. */
static const char example[] =
	"{\"host_id\":\"web-01\",\"keys_dir\":\"/etc/jitd/keys.d\","
	"\"state_dir\":\"/var/lib/jitd\",\"control_socket\":\"/run/jitd/jitd.sock\","
	"\"deny_action\":\"drop\",\"clock_skew\":\"PT1M\",\"always_allow\":[\"192.0.2.0/24\"],"
	"\"ports\":[{\"port\":22,\"protocol\":\"tcp\",\"max_duration\":\"PT3H\","
	"\"allowed_sources\":[\"*\"]},{\"port\":3389,\"protocol\":\"tcp\","
	"\"max_duration\":\"PT3H\",\"allowed_sources\":[\"10.0.0.0/8\",\"2001:db8::/32\"]}]}";

/* Test documents are written with ' for " so they stay readable; none needs a literal '. */
static char *dq(const char *in)
{
	char *s = strdup(in);

	assert_non_null(s);
	for (char *p = s; *p; p++)
		if (*p == '\'')
			*p = '"';
	return s;
}

static struct config *parse_ok(const char *text)
{
	struct jit_error e = { 0 };
	struct config *c = NULL;
	char *json = dq(text);

	if (config_parse(json, strlen(json), &c, &e))
		fail_msg("refused: %s: %s", json, e.msg);
	assert_non_null(c);
	free(json);
	return c;
}

static void parse_bad(const char *text, const char *needle)
{
	struct jit_error e = { 0 };
	struct config *c = (struct config *)1;
	char *json = dq(text);

	if (config_parse(json, strlen(json), &c, &e) != JIT_ERR_BAD_CONFIG)
		fail_msg("accepted: %s", json);
	assert_int_equal(e.code, JIT_ERR_BAD_CONFIG);
	assert_null(c);
	if (!strstr(e.msg, needle))
		fail_msg("message '%s' lacks '%s' for %s", e.msg, needle, json);
	free(json);
}

static void assert_prefix(const struct prefix *p, const char *text)
{
	char buf[PREFIX_STRLEN];

	assert_int_equal(prefix_format(p, buf, sizeof(buf)), 0);
	assert_string_equal(buf, text);
}

static void test_example(void **state)
{
	struct config *c = parse_ok(example);

	assert_string_equal(c->host_id, "web-01");
	assert_string_equal(c->keys_dir, "/etc/jitd/keys.d");
	assert_string_equal(c->state_dir, "/var/lib/jitd");
	assert_string_equal(c->control_socket, "/run/jitd/jitd.sock");
	assert_int_equal(c->deny_action, DENY_DROP);
	assert_int_equal(c->clock_skew, 60);
	assert_int_equal(c->n_always_allow, 1);
	assert_prefix(&c->always_allow[0], "192.0.2.0/24");
	assert_int_equal(c->n_ports, 2);
	assert_int_equal(c->ports[0].port, 22);
	assert_int_equal(c->ports[0].protos, PORT_PROTO_TCP);
	assert_int_equal(c->ports[0].max_duration, 3 * 3600);
	assert_true(c->ports[0].any_source);
	assert_int_equal(c->ports[0].n_sources, 0);
	assert_int_equal(c->ports[1].port, 3389);
	assert_int_equal(c->ports[1].protos, PORT_PROTO_TCP);
	assert_int_equal(c->ports[1].max_duration, 3 * 3600);
	assert_false(c->ports[1].any_source);
	assert_int_equal(c->ports[1].n_sources, 2);
	assert_prefix(&c->ports[1].sources[0], "10.0.0.0/8");
	assert_prefix(&c->ports[1].sources[1], "2001:db8::/32");
	assert_ptr_equal(config_find_port(c, 3389), &c->ports[1]);
	assert_ptr_equal(config_find_port(c, 22), &c->ports[0]);
	assert_null(config_find_port(c, 23));
	config_free(c);
}

static void test_defaults(void **state)
{
	char host[HOST_NAME_MAX + 1] = "";
	struct config *c = parse_ok("{}");

	assert_int_equal(gethostname(host, sizeof(host) - 1), 0);
	assert_string_equal(c->host_id, host);
	assert_string_equal(c->keys_dir, "/etc/jitd/keys.d");
	assert_string_equal(c->state_dir, "/var/lib/jitd");
	assert_string_equal(c->control_socket, "/run/jitd/jitd.sock");
	assert_int_equal(c->deny_action, DENY_DROP);
	assert_int_equal(c->clock_skew, 60);
	assert_int_equal(c->n_always_allow, 0);
	assert_null(c->always_allow);
	assert_int_equal(c->n_ports, 1);
	assert_int_equal(c->ports[0].port, 22);
	assert_int_equal(c->ports[0].protos, PORT_PROTO_TCP);
	assert_int_equal(c->ports[0].max_duration, 3 * 3600);
	assert_true(c->ports[0].any_source);
	config_free(c);
	config_free(NULL);
}

static void test_port_defaults(void **state)
{
	struct config *c = parse_ok("{'ports':[{'port':5985,'max_duration':3600}]}");

	assert_int_equal(c->n_ports, 1);
	assert_int_equal(c->ports[0].port, 5985);
	assert_int_equal(c->ports[0].protos, PORT_PROTO_TCP);
	assert_int_equal(c->ports[0].max_duration, 3600);
	assert_true(c->ports[0].any_source);
	assert_null(c->ports[0].sources);
	config_free(c);
}

static void test_values(void **state)
{
	struct config *c = parse_ok("{'host_id':'a.b_c-D9','deny_action':'reject','clock_skew':0,"
		"'always_allow':['::ffff:198.51.100.0/120','2001:db8::1'],'ports':["
		"{'port':22,'protocol':'TCP','max_duration':'P1D'},"
		"{'port':53,'protocol':'Udp','max_duration':1},"
		"{'port':3389,'protocol':'*','max_duration':86400,"
		"'allowed_sources':['2001:db8::/32']},"
		"{'port':65535,'max_duration':'PT1S'}]}");

	assert_string_equal(c->host_id, "a.b_c-D9");
	assert_int_equal(c->deny_action, DENY_REJECT);
	assert_int_equal(c->clock_skew, 0);
	assert_int_equal(c->n_always_allow, 2);
	assert_int_equal(c->always_allow[0].family, AF_INET);
	assert_prefix(&c->always_allow[0], "198.51.100.0/24");
	assert_prefix(&c->always_allow[1], "2001:db8::1");
	assert_int_equal(c->ports[0].protos, PORT_PROTO_TCP);
	assert_int_equal(c->ports[0].max_duration, 86400);
	assert_int_equal(c->ports[1].protos, PORT_PROTO_UDP);
	assert_int_equal(c->ports[1].max_duration, 1);
	assert_int_equal(c->ports[2].protos, PORT_PROTO_ANY);
	assert_int_equal(c->ports[2].max_duration, 86400);
	assert_false(c->ports[2].any_source);
	assert_int_equal(c->ports[3].port, 65535);
	config_free(c);
	c = parse_ok("{'clock_skew':'PT10M','ports':[{'port':1,'max_duration':'PT24H'}]}");
	assert_int_equal(c->clock_skew, 600);
	assert_int_equal(c->ports[0].max_duration, 86400);
	config_free(c);
}

static void test_syntax(void **state)
{
	parse_bad("", "line 1");
	parse_bad("{", "line 1");
	parse_bad("{} x", "end of file expected");
	parse_bad("[]", "expected a JSON object, not an array");
	parse_bad("'x'", "line 1");
	parse_bad("{'host_id':'a\\u0000b'}", "\\u0000 is not allowed");
	parse_bad("{'host_id':'a','host_id':'b'}", "duplicate object key near '\"host_id\"'");
	parse_bad("{'ports':[{'port':22,'port':23,'max_duration':1}]}",
		"duplicate object key near '\"port\"'");
	parse_bad("{'clock_skew':99999999999999999999}", "too big integer");
}

static void test_nul_byte(void **state)
{
	struct jit_error e = { 0 };
	struct config *c = NULL;

	assert_int_equal(config_parse("{}\0", 3, &c, &e), JIT_ERR_BAD_CONFIG);
	assert_non_null(strstr(e.msg, "NUL"));
	assert_null(c);
}

static void test_unknown_keys(void **state)
{
	parse_bad("{'portz':[]}", "unknown key 'portz'");
	parse_bad("{'target':[]}", "unknown key 'target'");
	parse_bad("{'Host_id':'x'}", "unknown key 'Host_id'");
	parse_bad("{'ports':[{'port':22,'max_duration':1,'prot':'tcp'}]}",
		"ports[0]: unknown key 'prot'");
	parse_bad("{'ports':[{'port':22,'max_duration':1},{'port':23,'max_duration':1,"
		  "'source':[]}]}",
		"ports[1]: unknown key 'source'");
}

static void test_access_keys(void **state)
{
	struct config *c = parse_ok("{}");

	assert_string_equal(c->control_group, "jitd");
	/* Twice the grant limit: a full agent's ids, plus revoked ones until they expire. */
	assert_int_equal(c->replay_cache_max, 400000);
	assert_int_equal(c->audit_max_bytes, 10 * 1024 * 1024);
	assert_int_equal(c->audit_keep, 5);
	assert_int_equal(c->audit_unverified_per_minute, 60);
	assert_true(c->audit_syslog);
	config_free(c);
	c = parse_ok("{'limits':{'max_grants':5}}");
	assert_int_equal(c->replay_cache_max, 10);
	config_free(c);
	c = parse_ok("{'control_group':'4242','replay_cache_max':7,'limits':{'max_grants':7},"
		     "'audit':{'max_bytes':65536,'keep':2,'unverified_per_minute':0,"
		     "'syslog':false}}");
	assert_string_equal(c->control_group, "4242");
	assert_int_equal(c->replay_cache_max, 7);
	assert_int_equal(c->audit_max_bytes, 65536);
	assert_int_equal(c->audit_keep, 2);
	assert_int_equal(c->audit_unverified_per_minute, 0);
	assert_false(c->audit_syslog);
	config_free(c);
	c = parse_ok("{'audit':{'syslog':true}}");
	assert_true(c->audit_syslog);
	config_free(c);
	parse_bad("{'control_group':''}", "control_group");
	parse_bad("{'control_group':7}", "control_group");
	parse_bad("{'replay_cache_max':0}", "replay_cache_max: 0 is outside");
	parse_bad("{'replay_cache_max':1000}", "replay_cache_max: 1000 is below limits.max_grants");
	parse_bad("{'replay_cache_max':'9'}", "replay_cache_max: expected an integer");
	parse_bad("{'audit':[]}", "audit: expected an object");
	parse_bad("{'audit':{'max_bytes':100}}", "audit.max_bytes: 100 is outside");
	parse_bad("{'audit':{'keep':0}}", "audit.keep: 0 is outside");
	parse_bad("{'audit':{'unverified_per_minute':1000001}}",
		"audit.unverified_per_minute: 1000001 is outside");
	parse_bad("{'audit':{'kept':1}}", "audit: unknown key 'kept'");
	parse_bad("{'audit':{'syslog':1}}", "audit.syslog: expected a boolean, not an integer");
}

static void test_listen(void **state)
{
	struct config *c = parse_ok("{}");

	assert_false(c->listen.enabled);
	assert_int_equal(c->log_level, LOG_LVL_INFO);
	config_free(c);
	c = parse_ok("{'listen':{'address':'0.0.0.0:7443','tls_cert':'/etc/jitd/tls/cert.pem',"
		     "'tls_key':'/etc/jitd/tls/key.pem','client_ca':'/etc/jitd/tls/ca.pem'}}");
	assert_true(c->listen.enabled);
	assert_string_equal(c->listen.host, "0.0.0.0");
	assert_int_equal(c->listen.port, 7443);
	assert_false(c->listen.loopback);
	assert_string_equal(c->listen.tls_cert, "/etc/jitd/tls/cert.pem");
	assert_string_equal(c->listen.tls_key, "/etc/jitd/tls/key.pem");
	assert_string_equal(c->listen.client_ca, "/etc/jitd/tls/ca.pem");
	assert_false(c->listen.insecure_plaintext);
	assert_int_equal(c->listen.max_connections, 64);
	assert_int_equal(c->listen.timeout, 10);
	assert_int_equal(c->listen.rate_limit, 100);
	config_free(c);
	c = parse_ok("{'listen':{'address':'[::1]:8080','insecure_plaintext':true,"
		     "'max_connections':2,'timeout':'PT30S','rate_limit':0}}");
	assert_string_equal(c->listen.host, "::1");
	assert_int_equal(c->listen.port, 8080);
	assert_true(c->listen.loopback);
	assert_null(c->listen.tls_cert);
	assert_int_equal(c->listen.max_connections, 2);
	assert_int_equal(c->listen.timeout, 30);
	assert_int_equal(c->listen.rate_limit, 0);
	config_free(c);
	c = parse_ok("{'listen':{'address':'127.0.0.2:1','insecure_plaintext':true}}");
	assert_true(c->listen.loopback);
	assert_int_equal(c->reconcile_interval, 30);
	config_free(c);
	c = parse_ok("{'reconcile_interval':'PT5M'}");
	assert_int_equal(c->reconcile_interval, 300);
	config_free(c);
	parse_bad("{'reconcile_interval':0}", "reconcile_interval");
	parse_bad("{'reconcile_interval':'PT2H'}", "reconcile_interval");
	c = parse_ok("{}");
	assert_int_equal(c->max_grants, 200000);
	assert_int_equal(c->max_sources, 64);
	assert_int_equal(c->max_ports, 64);
	assert_int_equal(c->control_connections, 32);
	assert_false(c->table_owner);
	config_free(c);
	c = parse_ok("{'limits':{'max_grants':5,'max_sources_per_grant':2,'max_ports_per_grant':1,"
		     "'control_connections':3},'table_owner':true}");
	assert_int_equal(c->max_grants, 5);
	assert_int_equal(c->max_sources, 2);
	assert_int_equal(c->max_ports, 1);
	assert_int_equal(c->control_connections, 3);
	assert_true(c->table_owner);
	config_free(c);
	parse_bad("{'limits':{'max_sources_per_grant':65}}", "limits.max_sources_per_grant: 65");
	parse_bad("{'limits':{'max_grants':0}}", "limits.max_grants: 0 is outside");
	parse_bad("{'limits':{'grants':1}}", "limits: unknown key 'grants'");
	parse_bad("{'limits':7}", "limits: expected an object");
	parse_bad("{'table_owner':'yes'}", "table_owner: expected a boolean");
	parse_bad("{'log_level':'verbose'}", "log_level: 'verbose' is not");
	parse_bad("{'log_level':3}", "log_level: expected a string");
	config_free(c = parse_ok("{'log_level':'debug'}"));
	parse_bad("{'listen':true}", "listen: expected an object");
	parse_bad("{'listen':{}}", "listen.address: missing");
	parse_bad("{'listen':{'address':'0.0.0.0:7443','port':1}}", "listen: unknown key 'port'");
	parse_bad("{'listen':{'address':'0.0.0.0:7443'}}", "tls_cert and tls_key are required");
	parse_bad("{'listen':{'address':'0.0.0.0:7443','tls_cert':'/c'}}", "are required");
	parse_bad("{'listen':{'address':'0.0.0.0:7443','tls_cert':'c','tls_key':'/k'}}",
		"listen.tls_cert: 'c' is not an absolute path");
	parse_bad("{'listen':{'address':'192.0.2.1:80','insecure_plaintext':true}}",
		"only on a loopback address");
	parse_bad("{'listen':{'address':'[::]:80','insecure_plaintext':true}}",
		"only on a loopback address");
	parse_bad("{'listen':{'address':'127.0.0.1:80','insecure_plaintext':true,'tls_key':'/k'}}",
		"contradicts");
	parse_bad("{'listen':{'address':'127.0.0.1:80','insecure_plaintext':1}}",
		"insecure_plaintext: expected a boolean");
	parse_bad("{'listen':{'address':'localhost:80'}}", "not a numeric IPv4");
	parse_bad("{'listen':{'address':'::1:80'}}", "not a numeric IPv4");
	parse_bad("{'listen':{'address':'[127.0.0.1]:80'}}", "brackets are for IPv6");
	parse_bad("{'listen':{'address':'[::1:80'}}", "write IPv6 as [ADDRESS]:PORT");
	parse_bad("{'listen':{'address':'127.0.0.1'}}", "is not ADDRESS:PORT");
	parse_bad("{'listen':{'address':'127.0.0.1:'}}", "is not ADDRESS:PORT");
	parse_bad("{'listen':{'address':'127.0.0.1:0'}}", "is not a port number");
	parse_bad("{'listen':{'address':'127.0.0.1:65536'}}", "is not a port number");
	parse_bad("{'listen':{'address':'127.0.0.1:+80'}}", "is not a port number");
	parse_bad("{'listen':{'address':'127.0.0.1:80x'}}", "is not a port number");
	parse_bad("{'listen':{'address':'127.0.0.1: 80'}}", "is not a port number");
	parse_bad("{'listen':{'address':'127.0.0.1:\\t80'}}", "is not a port number");
	parse_bad("{'listen':{'address':'127.0.0.1:080'}}", "is not a port number");
	parse_bad("{'listen':{'address':7443}}", "listen.address: expected a string");
	parse_bad("{'listen':{'address':'127.0.0.1:80','insecure_plaintext':true,"
		  "'max_connections':0}}", "listen.max_connections: 0 is outside");
	parse_bad("{'listen':{'address':'127.0.0.1:80','insecure_plaintext':true,"
		  "'timeout':'PT0S'}}", "listen.timeout");
	parse_bad("{'listen':{'address':'127.0.0.1:80','insecure_plaintext':true,"
		  "'rate_limit':-1}}", "listen.rate_limit: -1 is outside");
}

static void test_strings(void **state)
{
	char big[400];

	parse_bad("{'host_id':5}", "host_id: expected a string, not an integer");
	parse_bad("{'host_id':''}", "host_id: '' is not");
	parse_bad("{'host_id':'web 01'}", "host_id: 'web 01' is not");
	parse_bad("{'host_id':'web/01'}", "host_id: 'web/01' is not");
	snprintf(big, sizeof(big), "{\"host_id\":\"%0254d\"}", 0);
	parse_bad(big, "host_id: '000");
	snprintf(big, sizeof(big), "{\"host_id\":\"%0253d\"}", 0);
	config_free(parse_ok(big));
	parse_bad("{'keys_dir':'etc/jitd'}", "keys_dir: 'etc/jitd' is not an absolute path");
	parse_bad("{'keys_dir':''}", "keys_dir: '' is not an absolute path");
	parse_bad("{'state_dir':null}", "state_dir: expected a string, not null");
	parse_bad("{'state_dir':'./x'}", "state_dir: './x' is not an absolute path");
	parse_bad("{'control_socket':['/run']}", "control_socket: expected a string, not an array");
	parse_bad("{'control_socket':'jitd.sock'}", "control_socket: 'jitd.sock' is not");
	/* 107 bytes of path fit a unix socket's address; 108 do not. */
	snprintf(big, sizeof(big), "{\"control_socket\":\"/%0106d\"}", 0);
	config_free(parse_ok(big));
	snprintf(big, sizeof(big), "{\"control_socket\":\"/%0107d\"}", 0);
	parse_bad(big, "control_socket: longer than 107 bytes (a unix socket's path)");
	parse_bad("{'deny_action':'DROP'}", "deny_action: 'DROP' is neither drop nor reject");
	parse_bad("{'deny_action':'accept'}", "deny_action: 'accept'");
	parse_bad("{'deny_action':true}", "deny_action: expected a string, not a boolean");
}

static void test_long_path(void **state)
{
	size_t n = PATH_MAX + 32;
	char *json = malloc(n);

	assert_non_null(json);
	memset(json, 'a', n - 1);
	memcpy(json, "{\"keys_dir\":\"/", 14);
	memcpy(json + n - 3, "\"}", 3);
	parse_bad(json, "keys_dir: longer than");
	free(json);
}

static void test_clock_skew(void **state)
{
	parse_bad("{'clock_skew':'PT11M'}", "clock_skew: 'PT11M' exceeds the maximum PT10M");
	parse_bad("{'clock_skew':601}", "clock_skew: 601 exceeds the maximum PT10M");
	parse_bad("{'clock_skew':'P999D'}", "clock_skew: 'P999D' exceeds the maximum PT10M");
	parse_bad("{'clock_skew':-1}", "clock_skew: -1 is not a duration");
	parse_bad("{'clock_skew':'1m'}", "clock_skew: '1m' is not a duration");
	parse_bad("{'clock_skew':'pt1m'}", "clock_skew: 'pt1m' is not a duration");
	parse_bad("{'clock_skew':1.5}", "clock_skew: expected an ISO 8601 duration or integer "
					 "seconds, not a real number");
	parse_bad("{'clock_skew':{}}", "clock_skew: expected");
}

static void test_prefixes(void **state)
{
	parse_bad("{'always_allow':'10.0.0.0/8'}", "always_allow: expected an array, not a string");
	parse_bad("{'always_allow':['10.0.0.5/24']}",
		"always_allow[0]: '10.0.0.5/24' is not a prefix (host bits set)");
	parse_bad("{'always_allow':['10.0.0.0/8','10.0.0.0/33']}",
		"always_allow[1]: '10.0.0.0/33' is not a prefix (bad prefix length)");
	parse_bad("{'always_allow':['10.0.0.0/08']}", "(bad prefix length)");
	parse_bad("{'always_allow':['2001:db8::1/64']}", "(host bits set)");
	parse_bad("{'always_allow':['::ffff:10.0.0.1/120']}", "(host bits set)");
	parse_bad("{'always_allow':['bastion']}",
		"always_allow[0]: 'bastion' is not a prefix (not an IPv4 or IPv6 address)");
	parse_bad("{'always_allow':['bastion/24']}", "(not an IPv4 or IPv6 address)");
	parse_bad("{'always_allow':['*']}", "always_allow[0]: '*' is not a prefix");
	parse_bad("{'always_allow':[24]}",
		"always_allow[0]: expected a prefix string, not an integer");
}

static void test_port_entries(void **state)
{
	parse_bad("{'ports':[]}", "ports: empty, so nothing is protected");
	parse_bad("{'ports':{}}", "ports: expected an array, not an object");
	parse_bad("{'ports':[22]}", "ports[0]: expected an object, not an integer");
	parse_bad("{'ports':[{'max_duration':'PT3H'}]}", "ports[0]: missing required key 'port'");
	parse_bad("{'ports':[{'port':22}]}", "ports[0]: missing required key 'max_duration'");
	parse_bad("{'ports':[{'port':22,'max_duration':1},{'port':70000,'max_duration':1}]}",
		"ports[1].port: 70000 is not a port number (1-65535)");
	parse_bad("{'ports':[{'port':0,'max_duration':1}]}",
		"ports[0].port: 0 is not a port number");
	parse_bad("{'ports':[{'port':-22,'max_duration':1}]}",
		"ports[0].port: -22 is not a port number");
	parse_bad("{'ports':[{'port':'22','max_duration':1}]}",
		"ports[0].port: expected an integer, not a string");
	parse_bad("{'ports':[{'port':22.0,'max_duration':1}]}",
		"ports[0].port: expected an integer, not a real number");
	parse_bad("{'ports':[{'port':22,'protocol':'sctp','max_duration':1}]}",
		"ports[0].protocol: 'sctp' is not tcp, udp or *");
	parse_bad("{'ports':[{'port':22,'protocol':6,'max_duration':1}]}",
		"ports[0].protocol: expected a string, not an integer");
}

static void test_duplicate_port(void **state)
{
	parse_bad("{'ports':[{'port':22,'max_duration':1},{'port':80,'max_duration':1},"
		  "{'port':22,'protocol':'udp','max_duration':1}]}",
		"ports[2]: port 22 is listed twice (ports[0])");
	parse_bad("{'ports':[{'port':53,'protocol':'tcp','max_duration':1},"
		  "{'port':53,'protocol':'tcp','max_duration':1}]}",
		"ports[1]: port 53 is listed twice (ports[0])");
}

static void test_max_duration(void **state)
{
	parse_bad("{'ports':[{'port':22,'max_duration':'PT25H'}]}",
		"ports[0].max_duration: 'PT25H' exceeds the maximum P1D");
	parse_bad("{'ports':[{'port':22,'max_duration':86401}]}",
		"ports[0].max_duration: 86401 exceeds the maximum P1D");
	parse_bad("{'ports':[{'port':22,'max_duration':0}]}",
		"ports[0].max_duration: 0 is below the minimum PT1S");
	parse_bad("{'ports':[{'port':22,'max_duration':'PT0S'}]}",
		"ports[0].max_duration: 'PT0S' is below the minimum PT1S");
	parse_bad("{'ports':[{'port':22,'max_duration':'P2W'}]}",
		"ports[0].max_duration: 'P2W' is not a duration");
	parse_bad("{'ports':[{'port':22,'max_duration':null}]}",
		"ports[0].max_duration: expected an ISO 8601 duration");
}

static void test_sources(void **state)
{
	parse_bad("{'ports':[{'port':22,'max_duration':1,'allowed_sources':[]}]}",
		"ports[0].allowed_sources: empty");
	parse_bad("{'ports':[{'port':22,'max_duration':1,'allowed_sources':'*'}]}",
		"ports[0].allowed_sources: expected an array, not a string");
	parse_bad("{'ports':[{'port':22,'max_duration':1,"
		  "'allowed_sources':['*','10.0.0.0/8']}]}",
		"ports[0].allowed_sources[0]: '*' cannot be mixed with prefixes");
	parse_bad("{'ports':[{'port':22,'max_duration':1},{'port':23,'max_duration':1,"
		  "'allowed_sources':['10.0.0.0/8','*']}]}",
		"ports[1].allowed_sources[1]: '*' cannot be mixed with prefixes");
	parse_bad("{'ports':[{'port':22,'max_duration':1,"
		  "'allowed_sources':['10.0.0.1/8']}]}",
		"ports[0].allowed_sources[0]: '10.0.0.1/8' is not a prefix (host bits set)");
	parse_bad("{'ports':[{'port':22,'max_duration':1,'allowed_sources':[null]}]}",
		"ports[0].allowed_sources[0]: expected a prefix string, not null");
}

/* Builds {"<key>":[<n> copies of item]} in a malloc'ed buffer. */
static char *repeat(const char *head, const char *item, size_t n, const char *tail)
{
	size_t len = strlen(head) + n * (strlen(item) + 1) + strlen(tail) + 1, off;
	char *s = malloc(len);

	assert_non_null(s);
	off = (size_t)sprintf(s, "%s", head);
	for (size_t i = 0; i < n; i++)
		off += (size_t)sprintf(s + off, i ? ",%s" : "%s", item);
	sprintf(s + off, "%s", tail);
	return s;
}

static void test_limits(void **state)
{
	char *s = repeat("{'always_allow':[", "'10.0.0.0/8'", CONFIG_MAX_PREFIXES + 1, "]}");
	struct config *c;
	char *ports;
	size_t off = 0;

	parse_bad(s, "always_allow: 1025 entries, at most 1024 allowed");
	free(s);
	s = repeat("{'always_allow':[", "'10.0.0.0/8'", CONFIG_MAX_PREFIXES, "]}");
	c = parse_ok(s);
	assert_int_equal(c->n_always_allow, CONFIG_MAX_PREFIXES);
	config_free(c);
	free(s);
	ports = malloc(64 * (CONFIG_MAX_PORTS + 2));
	assert_non_null(ports);
	off = (size_t)sprintf(ports, "{'ports':[");
	for (int i = 1; i <= CONFIG_MAX_PORTS + 1; i++)
		off += (size_t)sprintf(ports + off, "%s{'port':%d,'max_duration':60}",
			i > 1 ? "," : "", i);
	sprintf(ports + off, "]}");
	parse_bad(ports, "ports: 257 entries, at most 256 allowed");
	free(ports);
}

/* "issuers": key id -> the one iss it signs under; absent, nothing is bound. */
static void test_issuers(void **state)
{
	struct config *c = parse_ok("{}");

	assert_int_equal(c->n_issuers, 0);
	assert_null(config_issuer_of(c, "ctl"));
	config_free(c);
	c = parse_ok("{'issuers': {'ctl': 'https://ctl.example', 'ctl-2.b_k': 'ops'}}");
	assert_int_equal(c->n_issuers, 2);
	assert_string_equal(config_issuer_of(c, "ctl"), "https://ctl.example");
	assert_string_equal(config_issuer_of(c, "ctl-2.b_k"), "ops");
	assert_null(config_issuer_of(c, "ctl-2"));
	config_free(c);
	parse_bad("{'issuers': []}", "issuers: expected an object of key id: issuer, not an array");
	parse_bad("{'issuers': {}}", "issuers: empty (leave it out");
	parse_bad("{'issuers': {'.ctl': 'x'}}", "issuers: '.ctl' is not a key id");
	parse_bad("{'issuers': {'a/b': 'x'}}", "issuers: 'a/b' is not a key id");
	parse_bad("{'issuers': {'ctl': 1}}", "issuers.ctl: expected a string, not an integer");
	parse_bad("{'issuers': {'ctl': ''}}", "issuers.ctl: an issuer is 1-");
	parse_bad("{'issuers': {'ctl': 'a', 'ctl': 'b'}}", "duplicate");
}

static void test_too_large(void **state)
{
	size_t n = CONFIG_MAX_BYTES + 1;
	char *s = malloc(n);
	struct jit_error e = { 0 };
	struct config *c = NULL;

	assert_non_null(s);
	memset(s, ' ', n);
	s[0] = '{';
	s[n - 1] = '}';
	assert_int_equal(config_parse(s, n, &c, &e), JIT_ERR_BAD_CONFIG);
	assert_non_null(strstr(e.msg, "larger than 1048576 bytes"));
	s[n - 2] = '}';
	assert_int_equal(config_parse(s, n - 1, &c, &e), 0);
	config_free(c);
	free(s);
}

/* A gateway document with the given target entries (written with '). */
static char *gateway(const char *mode, const char *targets)
{
	char *s = malloc(strlen(targets) + 64);

	assert_non_null(s);
	sprintf(s, "{'mode':'%s','targets':[%s]}", mode, targets);
	return s;
}

static void gw_bad(const char *targets, const char *needle)
{
	char *s = gateway("gateway", targets);

	parse_bad(s, needle);
	free(s);
}

static struct config *gw_ok(const char *targets)
{
	char *s = gateway("gateway", targets);
	struct config *c = parse_ok(s);

	free(s);
	return c;
}

#define T22 "{'address':'10.1.0.0/24','port':22,'max_duration':'PT1H'}"

static void test_mode(void **state)
{
	struct config *c = parse_ok("{}");

	assert_int_equal(c->mode, CONFIG_MODE_HOST);
	assert_int_equal(c->n_targets, 0);
	assert_null(c->targets);
	config_free(c);
	c = parse_ok("{'mode':'host'}");
	assert_int_equal(c->mode, CONFIG_MODE_HOST);
	assert_int_equal(c->n_ports, 1);
	config_free(c);
	/* No default port in mode gateway: it guards forwarded traffic only. */
	c = gw_ok(T22);
	assert_int_equal(c->mode, CONFIG_MODE_GATEWAY);
	assert_int_equal(c->n_ports, 0);
	assert_null(c->ports);
	assert_null(config_find_port(c, 22));
	assert_int_equal(c->n_targets, 1);
	config_free(c);
	c = parse_ok("{'mode':'both','targets':[" T22 "]}");
	assert_int_equal(c->mode, CONFIG_MODE_HOST | CONFIG_MODE_GATEWAY);
	assert_int_equal(c->n_ports, 1);
	assert_int_equal(c->ports[0].port, 22);
	assert_int_equal(c->n_targets, 1);
	config_free(c);
	c = parse_ok("{'mode':'both','ports':[{'port':3389,'max_duration':60}],'targets':["
		     T22 "]}");
	assert_int_equal(c->n_ports, 1);
	assert_int_equal(c->ports[0].port, 3389);
	config_free(c);
	parse_bad("{'mode':'Gateway'}", "mode: 'Gateway' is not host, gateway or both");
	parse_bad("{'mode':''}", "mode: '' is not host, gateway or both");
	parse_bad("{'mode':2}", "mode: expected a string, not an integer");
	parse_bad("{'targets':[" T22 "]}", "targets: needs \"mode\": \"gateway\" or \"both\"");
	parse_bad("{'mode':'host','targets':[]}", "targets: needs \"mode\"");
	parse_bad("{'mode':'gateway','ports':[{'port':22,'max_duration':1}],'targets':[" T22 "]}",
		"ports: mode gateway guards only targets; use \"mode\": \"both\" to guard this "
		"host's ports too");
	parse_bad("{'mode':'gateway'}", "targets: missing, and mode gateway needs at least one "
					"target");
	parse_bad("{'mode':'both'}", "targets: missing, and mode both needs at least one target");
	parse_bad("{'mode':'gateway','targets':[]}", "targets: empty, and mode gateway needs");
	parse_bad("{'mode':'both','targets':[]}", "targets: empty, and mode both needs");
	parse_bad("{'mode':'both','targets':{}}", "targets: expected an array, not an object");
	parse_bad("{'mode':'both','ports':[],'targets':[" T22 "]}", "ports: empty");
}

static void test_targets(void **state)
{
	struct config *c = gw_ok(T22 ",{'address':'2001:db8:10::5','port':3389,"
		"'protocol':'*','max_duration':'PT3H','allowed_sources':['192.0.2.0/24',"
		"'2001:db8:1::/48']},{'address':'::ffff:10.2.0.5','port':53,'protocol':'udp',"
		"'max_duration':60,'allowed_sources':['*']}");
	const struct target_policy *t = c->targets;

	assert_int_equal(c->n_targets, 3);
	assert_prefix(&t[0].addr, "10.1.0.0/24");
	assert_int_equal(t[0].port, 22);
	assert_int_equal(t[0].protos, PORT_PROTO_TCP);
	assert_int_equal(t[0].max_duration, 3600);
	assert_true(t[0].any_source);
	assert_null(t[0].sources);
	assert_false(t[0].dnat);
	assert_string_equal(t[0].dnat_address, "");
	assert_prefix(&t[1].addr, "2001:db8:10::5");
	assert_int_equal(t[1].addr.len, 128);
	assert_int_equal(t[1].protos, PORT_PROTO_ANY);
	assert_int_equal(t[1].max_duration, 3 * 3600);
	assert_false(t[1].any_source);
	assert_int_equal(t[1].n_sources, 2);
	assert_prefix(&t[1].sources[0], "192.0.2.0/24");
	assert_prefix(&t[1].sources[1], "2001:db8:1::/48");
	assert_int_equal(t[2].addr.family, AF_INET);
	assert_prefix(&t[2].addr, "10.2.0.5");
	assert_int_equal(t[2].protos, PORT_PROTO_UDP);
	assert_true(t[2].any_source);
	assert_null(t[2].sources);
	config_free(c);
	/* Same address and port with other protocols, or another port: distinct targets. */
	c = gw_ok(T22 ",{'address':'10.1.0.0/24','port':22,'protocol':'udp','max_duration':1},"
		"{'address':'10.1.0.0/24','port':23,'max_duration':1},"
		"{'address':'10.1.0.0/25','port':22,'max_duration':1}");
	assert_int_equal(c->n_targets, 4);
	config_free(c);
}

static void test_target_errors(void **state)
{
	char *many, *s;
	size_t off;

	gw_bad("22", "targets[0]: expected an object, not an integer");
	gw_bad(T22 ",{'address':'10.1.0.5','port':22,'max_duration':1,'src':[]}",
		"targets[1]: unknown key 'src'");
	gw_bad("{'port':22,'max_duration':1}", "targets[0]: missing required key 'address'");
	gw_bad("{'address':'10.1.0.5/24','port':22,'max_duration':1}",
		"targets[0].address: '10.1.0.5/24' is not a prefix (host bits set)");
	gw_bad("{'address':'db-01','port':22,'max_duration':1}",
		"targets[0].address: 'db-01' is not a prefix (not an IPv4 or IPv6 address)");
	gw_bad("{'address':['10.1.0.5'],'port':22,'max_duration':1}",
		"targets[0].address: expected a prefix string, not an array");
	gw_bad("{'address':'10.1.0.5','max_duration':1}", "targets[0]: missing required key 'port'");
	gw_bad("{'address':'10.1.0.5','port':0,'max_duration':1}",
		"targets[0].port: 0 is not a port number (1-65535)");
	gw_bad("{'address':'10.1.0.5','port':22}",
		"targets[0]: missing required key 'max_duration'");
	gw_bad("{'address':'10.1.0.5','port':22,'max_duration':'PT25H'}",
		"targets[0].max_duration: 'PT25H' exceeds the maximum P1D");
	gw_bad("{'address':'10.1.0.5','port':22,'max_duration':1,'protocol':'icmp'}",
		"targets[0].protocol: 'icmp' is not tcp, udp or *");
	gw_bad("{'address':'10.1.0.5','port':22,'max_duration':1,'allowed_sources':[]}",
		"targets[0].allowed_sources: empty, so nothing can match");
	gw_bad("{'address':'10.1.0.5','port':22,'max_duration':1,"
	       "'allowed_sources':['10.0.0.0/8','*']}",
		"targets[0].allowed_sources[1]: '*' cannot be mixed with prefixes");
	/* One policy per (address, port, protocol), whatever the spelling of the address. */
	gw_bad("{'address':'10.1.0.5','port':22,'max_duration':1},"
	       "{'address':'10.1.0.0/24','port':22,'max_duration':1},"
	       "{'address':'::ffff:10.1.0.5/128','port':22,'protocol':'*','max_duration':1}",
		"targets[2]: 10.1.0.5 port 22/tcp is also in targets[0]");
	gw_bad("{'address':'2001:db8::/64','port':53,'protocol':'*','max_duration':1},"
	       "{'address':'2001:db8:0:0::/64','port':53,'protocol':'udp','max_duration':1}",
		"targets[1]: 2001:db8::/64 port 53/udp is also in targets[0]");
	many = malloc(80 * (CONFIG_MAX_TARGETS + 1));
	assert_non_null(many);
	off = 0;
	for (int i = 0; i <= CONFIG_MAX_TARGETS; i++)
		off += (size_t)sprintf(many + off, "%s{'address':'10.1.%d.0/24','port':22,"
			"'max_duration':1}", i ? "," : "", i);
	gw_bad(many, "targets: 257 entries, at most 256 allowed");
	*strrchr(many, '{') = '\0';
	many[strlen(many) - 1] = '\0';
	s = gateway("gateway", many);
	config_free(parse_ok(s));
	free(s);
	free(many);
}

#define DNAT(addr, range) "{'address':'" addr "','port':3389,'max_duration':60," \
	"'dnat':{'listen_port_range':'" range "'}}"

static void test_dnat(void **state)
{
	struct config *c = gw_ok("{'address':'10.3.0.5','port':3389,'max_duration':60,"
		"'dnat':{'listen_port_range':'50000-50999','address':'::ffff:198.51.100.10'}},"
		DNAT("10.4.0.0/24", "1-1") "," DNAT("10.5.0.0/24", "65535-65535") ","
		DNAT("10.6.0.0/24", "51000-51999"));

	assert_true(c->targets[0].dnat);
	assert_int_equal(c->targets[0].dnat_lo, 50000);
	assert_int_equal(c->targets[0].dnat_hi, 50999);
	assert_string_equal(c->targets[0].dnat_address, "198.51.100.10");
	assert_true(c->targets[1].dnat);
	assert_int_equal(c->targets[1].dnat_lo, 1);
	assert_int_equal(c->targets[1].dnat_hi, 1);
	assert_string_equal(c->targets[1].dnat_address, "");
	assert_int_equal(c->targets[2].dnat_lo, 65535);
	config_free(c);
	/* In mode both, beside ports the range leaves alone (by number or protocol). */
	c = parse_ok("{'mode':'both','ports':[{'port':22,'max_duration':60},{'port':50010,"
		     "'protocol':'udp','max_duration':60}],'targets':["
		     DNAT("10.3.0.5", "50000-50999") "]}");
	assert_int_equal(c->n_ports, 2);
	assert_true(c->targets[0].dnat);
	config_free(c);
}

static void test_dnat_errors(void **state)
{
	static const char *const ranges[] = { "50000", "50000-", "-50000", "a-b", "1 -2", "+1-2",
		"1-+2", "1-2-3", "123456-123457", "0x10-0x20", "", "050000-050999", "1-02" };
	char doc[160], needle[96];

	gw_bad("{'address':'2001:db8::5','port':22,'max_duration':1,"
	       "'dnat':{'listen_port_range':'50000-50999'}}",
		"targets[0].dnat: only IPv4 targets can map ports");
	gw_bad("{'address':'10.3.0.5','port':22,'max_duration':1,'dnat':'50000-50999'}",
		"targets[0].dnat: expected an object, not a string");
	gw_bad(T22 ",{'address':'10.3.0.5','port':22,'max_duration':1,'dnat':{}}",
		"targets[1].dnat: missing required key 'listen_port_range'");
	gw_bad("{'address':'10.3.0.5','port':22,'max_duration':1,"
	       "'dnat':{'listen_port_range':'1-2','port':3}}",
		"targets[0].dnat: unknown key 'port'");
	gw_bad("{'address':'10.3.0.5','port':22,'max_duration':1,"
	       "'dnat':{'listen_port_range':[1,2]}}",
		"targets[0].dnat.listen_port_range: expected a string, not an array");
	for (size_t i = 0; i < sizeof(ranges) / sizeof(ranges[0]); i++) {
		snprintf(doc, sizeof(doc), "{'address':'10.3.0.5','port':22,'max_duration':1,"
			"'dnat':{'listen_port_range':'%s'}}", ranges[i]);
		snprintf(needle, sizeof(needle),
			"targets[0].dnat.listen_port_range: '%s' is not LO-HI", ranges[i]);
		gw_bad(doc, needle);
	}
	gw_bad(DNAT("10.3.0.5", "0-10"),
		"targets[0].dnat.listen_port_range: '0-10' is not within 1-65535");
	gw_bad(DNAT("10.3.0.5", "1-65536"),
		"targets[0].dnat.listen_port_range: '1-65536' is not within 1-65535");
	gw_bad(DNAT("10.3.0.5", "600-500"),
		"targets[0].dnat.listen_port_range: '600-500' starts above its end");
	gw_bad("{'address':'10.3.0.5','port':22,'max_duration':1,"
	       "'dnat':{'listen_port_range':'1-2','address':'198.51.100.0/24'}}",
		"targets[0].dnat.address: '198.51.100.0/24' is not an IPv4 address");
	gw_bad("{'address':'10.3.0.5','port':22,'max_duration':1,"
	       "'dnat':{'listen_port_range':'1-2','address':'2001:db8::1'}}",
		"targets[0].dnat.address: '2001:db8::1' is not an IPv4 address");
	gw_bad("{'address':'10.3.0.5','port':22,'max_duration':1,"
	       "'dnat':{'listen_port_range':'1-2','address':'gw.example'}}",
		"targets[0].dnat.address: 'gw.example' is not an IPv4 address");
	gw_bad("{'address':'10.3.0.5','port':22,'max_duration':1,"
	       "'dnat':{'listen_port_range':'1-2','address':7}}",
		"targets[0].dnat.address: expected a string, not an integer");
}

static void test_dnat_overlap(void **state)
{
	gw_bad(DNAT("10.3.0.5", "50000-50999") "," T22 "," DNAT("10.3.0.6", "50999-51999"),
		"targets[2].dnat.listen_port_range: 50999-51999 overlaps targets[0]'s 50000-50999");
	gw_bad(DNAT("10.3.0.5", "50000-50999") "," DNAT("10.3.0.6", "49000-52000"),
		"targets[1].dnat.listen_port_range: 49000-52000 overlaps targets[0]'s 50000-50999");
	gw_bad(DNAT("10.3.0.5", "50500-50500") "," DNAT("10.3.0.6", "50000-50999"),
		"targets[1].dnat.listen_port_range: 50000-50999 overlaps targets[0]'s 50500-50500");
	parse_bad("{'mode':'both','targets':[" DNAT("10.3.0.5", "1-1000") "]}",
		"targets[0].dnat.listen_port_range: 1-1000 contains the protected port 22/tcp "
		"(ports[0])");
	parse_bad("{'mode':'both','ports':[{'port':22,'max_duration':60},{'port':50010,"
		  "'protocol':'*','max_duration':60}],'targets':[" T22 ","
		  DNAT("10.3.0.5", "50000-50999") "]}",
		"targets[1].dnat.listen_port_range: 50000-50999 contains the protected port "
		"50010/tcp (ports[1])");
}

/* warned N TEXT: config_warning gives N warnings for text, the first holding needle. */
static void warned(const char *text, size_t n, const char *needle)
{
	struct config *c = parse_ok(text);
	char msg[256];
	size_t at = 0, got = 0;

	while (config_warning(c, &at, msg, sizeof(msg))) {
		if (!got && needle && !strstr(msg, needle))
			fail_msg("warning '%s' does not hold '%s'", msg, needle);
		got++;
	}
	assert_int_equal(got, n);
	config_free(c);
}

static void test_warnings(void **state)
{
	(void)state;
	warned("{'always_allow':['192.0.2.0/24']}", 0, NULL);
	warned("{'always_allow':['192.0.2.0/24','0.0.0.0/0']}", 1,
		"always_allow[1]: a prefix of length 0 lets every IPv4 source reach every "
		"protected port");
	warned("{'always_allow':['::/0','0.0.0.0/0']}", 2, "always_allow[0]: a prefix of length "
		"0 lets every IPv6 source");
	/* Mapped: 0.0.0.0/0 as the kernel's inet family sees it. */
	warned("{'always_allow':['::ffff:0.0.0.0/96']}", 1, "lets every IPv4 source");
	warned("{'mode':'gateway','listen':{'address':'127.0.0.1:50443',"
		  "'insecure_plaintext':true},'targets':[" T22 "," DNAT("10.3.0.5", "50000-50999")
		  "]}", 1, "targets[1].dnat.listen_port_range: 50000-50999 holds the controller "
		  "endpoint's port 50443/tcp (listen.address)");
	warned("{'mode':'gateway','listen':{'address':'127.0.0.1:51000',"
		"'insecure_plaintext':true},'targets':[" DNAT("10.3.0.5", "50000-50999") "]}", 0,
		NULL);
	/*
	 * What no grant's iss can hold: every grant of that key would be refused. Warned of,
	 * since a record an older jitd kept with it must still close the ports (lockdown).
	 */
	warned("{'issuers': {'ctl': 'https://ctl.example\\t', 'ok': 'ops'}}", 1,
		"issuers.ctl: contains a control character, which no grant's iss may hold: every "
		"grant of key ctl is refused");
	warned("{'always_allow':['0.0.0.0/0'],'issuers': {'a': 'ops\\u202e', "
		"'b': 'a\\u2028b'}}", 3, "always_allow[0]");
	warned("{'issuers': {'a': 'ops\\u202e'}}", 1,
		"issuers.a: contains a bidirectional formatting character");
	warned("{'issuers': {'b': 'a\\u2028b'}}", 1, "issuers.b: contains a line or paragraph");
}

static void test_find_target(void **state)
{
	struct config *c = gw_ok("{'address':'10.0.0.0/8','port':22,'protocol':'*',"
		"'max_duration':60},{'address':'10.1.2.0/24','port':22,'max_duration':60},"
		"{'address':'10.1.0.0/16','port':22,'max_duration':60},"
		"{'address':'10.1.2.5','port':22,'protocol':'udp','max_duration':60},"
		"{'address':'2001:db8::/32','port':22,'max_duration':60},"
		"{'address':'0.0.0.0/0','port':3389,'max_duration':60}");
	const struct target_policy *t = c->targets;
	struct prefix p;

	assert_int_equal(prefix_parse("10.1.2.5", &p), 0);
	assert_ptr_equal(config_find_target(c, &p, 22, PORT_PROTO_TCP), &t[1]);
	assert_ptr_equal(config_find_target(c, &p, 22, PORT_PROTO_UDP), &t[3]);
	assert_ptr_equal(config_find_target(c, &p, 3389, PORT_PROTO_TCP), &t[5]);
	assert_null(config_find_target(c, &p, 3389, PORT_PROTO_UDP));
	assert_null(config_find_target(c, &p, 23, PORT_PROTO_TCP));
	assert_int_equal(prefix_parse("10.1.2.0/24", &p), 0);
	assert_ptr_equal(config_find_target(c, &p, 22, PORT_PROTO_TCP), &t[1]);
	assert_ptr_equal(config_find_target(c, &p, 22, PORT_PROTO_UDP), &t[0]);
	assert_int_equal(prefix_parse("10.1.0.0/23", &p), 0);
	assert_ptr_equal(config_find_target(c, &p, 22, PORT_PROTO_TCP), &t[2]);
	assert_int_equal(prefix_parse("10.200.0.1", &p), 0);
	assert_ptr_equal(config_find_target(c, &p, 22, PORT_PROTO_TCP), &t[0]);
	/* Wider than every target, or outside all of them. */
	assert_int_equal(prefix_parse("10.0.0.0/7", &p), 0);
	assert_null(config_find_target(c, &p, 22, PORT_PROTO_TCP));
	assert_int_equal(prefix_parse("11.0.0.1", &p), 0);
	assert_null(config_find_target(c, &p, 22, PORT_PROTO_TCP));
	/* Families never mix. */
	assert_int_equal(prefix_parse("2001:db8::5", &p), 0);
	assert_ptr_equal(config_find_target(c, &p, 22, PORT_PROTO_TCP), &t[4]);
	assert_null(config_find_target(c, &p, 3389, PORT_PROTO_TCP));
	assert_int_equal(prefix_parse("2001:db9::5", &p), 0);
	assert_null(config_find_target(c, &p, 22, PORT_PROTO_TCP));
	config_free(c);
	c = parse_ok("{}");
	assert_int_equal(prefix_parse("10.1.2.5", &p), 0);
	assert_null(config_find_target(c, &p, 22, PORT_PROTO_TCP));
	config_free(c);
}

static char tmpdir[] = "/tmp/jitd-test-config.XXXXXX";

static int make_dir(void **state)
{
	/* A new name each test: mkdtemp wrote the last one over the template. */
	memcpy(tmpdir + sizeof(tmpdir) - 7, "XXXXXX", 6);
	return mkdtemp(tmpdir) ? 0 : -1;
}

static int remove_dir(void **state)
{
	char cmd[64];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", tmpdir);
	return system(cmd);
}

static const char *write_file(const char *name, const char *data, size_t len, mode_t mode)
{
	static char path[128];
	FILE *f;

	snprintf(path, sizeof(path), "%s/%s", tmpdir, name);
	f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fwrite(data, 1, len, f), len);
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(path, mode), 0);
	return path;
}

static void load_bad(const char *path, const char *needle)
{
	struct jit_error e = { 0 };
	struct config *c = (struct config *)1;

	assert_int_equal(config_load(path, &c, &e), JIT_ERR_BAD_CONFIG);
	assert_null(c);
	if (!strstr(e.msg, path) || !strstr(e.msg, needle))
		fail_msg("message '%s' lacks '%s' or the path", e.msg, needle);
}

static void test_load(void **state)
{
	struct jit_error e = { 0 };
	struct config *c = NULL;
	const char *path = write_file("ok.json", example, strlen(example), 0644);
	char missing[160];
	char *big;

	assert_int_equal(config_load(path, &c, &e), 0);
	assert_string_equal(c->host_id, "web-01");
	config_free(c);
	path = write_file("bad.json", "{\"portz\":1}", 11, 0600);
	load_bad(path, ": unknown key 'portz'");
	path = write_file("gw.json", "{}", 2, 0664);
	load_bad(path, "writable by group or others");
	path = write_file("ow.json", "{}", 2, 0646);
	load_bad(path, "writable by group or others");
	snprintf(missing, sizeof(missing), "%s/missing.json", tmpdir);
	load_bad(missing, strerror(ENOENT));
	load_bad(tmpdir, "not a regular file");
	/* A FIFO with no writer is refused at once, not waited on. */
	snprintf(missing, sizeof(missing), "%s/fifo.json", tmpdir);
	assert_int_equal(mkfifo(missing, 0600), 0);
	load_bad(missing, "not a regular file");
	unlink(missing);
	big = malloc(CONFIG_MAX_BYTES + 1);
	assert_non_null(big);
	memset(big, ' ', CONFIG_MAX_BYTES + 1);
	big[0] = '{';
	big[CONFIG_MAX_BYTES] = '}';
	path = write_file("big.json", big, CONFIG_MAX_BYTES + 1, 0600);
	load_bad(path, "larger than 1048576 bytes");
	big[CONFIG_MAX_BYTES - 1] = '}';
	path = write_file("max.json", big, CONFIG_MAX_BYTES, 0600);
	assert_int_equal(config_load(path, &c, &e), 0);
	config_free(c);
	free(big);
}

/* The bytes a start parsed are what lockdown.json keeps (agent/lockdown.h). */
static void test_load_raw(void **state)
{
	struct jit_error e = { 0 };
	struct config *c = NULL;
	const char *path = write_file("raw.json", example, strlen(example), 0600);
	char *raw = (char *)1;
	size_t len = 0;

	assert_int_equal(config_load_raw(path, &c, &raw, &len, &e), 0);
	assert_int_equal(len, strlen(example));
	assert_memory_equal(raw, example, len);
	config_free(c);
	free(raw);
	raw = NULL;
	path = write_file("rawbad.json", "{\"portz\":1}", 11, 0600);
	assert_int_equal(config_load_raw(path, &c, &raw, &len, &e), JIT_ERR_BAD_CONFIG);
	assert_null(c);
	assert_null(raw);
}

static void test_state_dir_hint(void **state)
{
	static const struct {
		const char *text;
		const char *want;
		bool no_syslog;
	} cases[] = {
		{ "{\"state_dir\": \"/srv/jitd\", \"portz\": 1}", "/srv/jitd", false },
		{ "{\"state_dir\": \"relative\"}", "/var/lib/jitd", false },
		{ "{\"state_dir\": 7}", "/var/lib/jitd", false },
		{ "[\"/srv/jitd\"]", "/var/lib/jitd", false },
		{ "{\"state_dir\": \"/srv/jitd\"", "/var/lib/jitd", false },
		{ "{}", "/var/lib/jitd", false },
		{ "{\"audit\": {\"syslog\": false}, \"state_dir\": \"/srv/jitd\"}", "/srv/jitd",
			true },
		{ "{\"audit\": {\"syslog\": \"no\"}}", "/var/lib/jitd", false },
		{ "{\"audit\": false}", "/var/lib/jitd", false },
	};
	char buf[64], missing[160];
	const char *path, *quiet = cases[6].text;
	bool no_syslog;

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		path = write_file("hint.json", cases[i].text, strlen(cases[i].text), 0600);
		no_syslog = !cases[i].no_syslog;
		assert_string_equal(config_state_dir_hint(path, buf, sizeof(buf), &no_syslog),
			cases[i].want);
		assert_int_equal(no_syslog, cases[i].no_syslog);
		assert_string_equal(config_state_dir_hint(path, buf, sizeof(buf), NULL),
			cases[i].want);
	}
	/* A file others may write cannot send the lookup elsewhere, nor keep the copy off. */
	path = write_file("hintgw.json", quiet, strlen(quiet), 0620);
	no_syslog = true;
	assert_string_equal(config_state_dir_hint(path, buf, sizeof(buf), &no_syslog),
		"/var/lib/jitd");
	assert_false(no_syslog);
	snprintf(missing, sizeof(missing), "%s/missing.json", tmpdir);
	assert_string_equal(config_state_dir_hint(missing, buf, sizeof(buf), NULL),
		"/var/lib/jitd");
	assert_string_equal(config_state_dir_hint(tmpdir, buf, sizeof(buf), NULL), "/var/lib/jitd");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_example),
		cmocka_unit_test(test_defaults),
		cmocka_unit_test(test_port_defaults),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_unknown_keys),
		cmocka_unit_test(test_access_keys),
		cmocka_unit_test(test_listen),
		cmocka_unit_test(test_strings),
		cmocka_unit_test(test_long_path),
		cmocka_unit_test(test_clock_skew),
		cmocka_unit_test(test_prefixes),
		cmocka_unit_test(test_port_entries),
		cmocka_unit_test(test_duplicate_port),
		cmocka_unit_test(test_max_duration),
		cmocka_unit_test(test_sources),
		cmocka_unit_test(test_limits),
		cmocka_unit_test(test_issuers),
		cmocka_unit_test(test_too_large),
		cmocka_unit_test(test_mode),
		cmocka_unit_test(test_targets),
		cmocka_unit_test(test_target_errors),
		cmocka_unit_test(test_dnat),
		cmocka_unit_test(test_dnat_errors),
		cmocka_unit_test(test_dnat_overlap),
		cmocka_unit_test(test_warnings),
		cmocka_unit_test(test_find_target),
		cmocka_unit_test_setup_teardown(test_load, make_dir, remove_dir),
		cmocka_unit_test_setup_teardown(test_load_raw, make_dir, remove_dir),
		cmocka_unit_test_setup_teardown(test_state_dir_hint, make_dir, remove_dir),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
