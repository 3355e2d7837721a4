#include <errno.h>
#include <getopt.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/jitctl.h"
#include "common/cliopt.h"
#include "common/config.h"
#include "common/proto.h"

#define DEFAULT_GROUP "jitd"
#define WHO_MAX 64 /* "jitctl " and a command's name, as typed (log or audit) */

_Static_assert(JITCTL_USAGE == CLIOPT_USAGE, "one exit status for a usage error");

static int cmd_help(const struct jitctl_opts *o, int argc, char **argv);

/* The command table, as in wireguard-tools: adding a command is one line here. */
static const struct {
	const char *name;
	int (*fn)(const struct jitctl_opts *o, int argc, char **argv);
	const char *help;
} commands[] = {
	{ "status", cmd_status, "Shows protected ports, active grants and the kernel state" },
	{ "submit", cmd_submit, "Hands a signed grant (file or -) to the agent" },
	{ "revoke", cmd_revoke, "Ends an active grant at once, optionally cutting its sessions" },
	{ "grant", cmd_grant, "Break-glass: opens a port locally, within policy (root only)" },
	{ "log", cmd_log, "Shows the audit trail (--json, --csv)" },
	{ "audit", cmd_log, "The same as log" },
	{ "reload", cmd_reload, "Has the agent re-read its configuration (root only)" },
	{ "keygen", cmd_keygen, "Generates an Ed25519 key pair for signing grants" },
	{ "sign", cmd_sign, "Prints a grant or revocation signed with a private key" },
	{ "teardown", cmd_teardown, "Deletes table inet jitd (agent stopped; root only)" },
	{ "help", cmd_help, "Shows this help" },
};

static void usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] [COMMAND] [ARGS...]\n\n"
		   "Controls and inspects the jitd just-in-time access agent.\n\n"
		   "Options:\n"
		   "  -s, --socket PATH  agent control socket (default: CONFIG's control_socket,\n"
		   "                     else " JITCTL_DEFAULT_SOCKET ")\n"
		   "  -c, --config FILE  jitd's configuration, read for control_socket and\n"
		   "                     control_group, and by teardown for state_dir and\n"
		   "                     audit.syslog\n"
		   "                     (default " CONFIG_DEFAULT_PATH ", if present)\n"
		   "  -h, --help         show this help\n"
		   "  -V, --version      show the version\n\n"
		   "Commands (default: status):\n");
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		fprintf(f, "  %-9s %s\n", commands[i].name, commands[i].help);
	fprintf(f, "\n'jitctl COMMAND --help' describes a command. Exit status: 0 success, "
		   "1 refused, 2 usage error, 3 agent unreachable or no valid reply.\n");
}

static int cmd_help(const struct jitctl_opts *o, int argc, char **argv)
{
	usage(stdout);
	return JITCTL_OK;
}

/* "jitctl" or "jitctl CMD": what the user typed to get to the error. */
static const char *who(const char *cmd, char buf[static WHO_MAX])
{
	if (!cmd)
		return "jitctl";
	snprintf(buf, WHO_MAX, "jitctl %s", cmd);
	return buf;
}

int jitctl_usage_error(const char *cmd, const char *fmt, ...)
{
	char buf[WHO_MAX];
	va_list ap;

	va_start(ap, fmt);
	(void)cliopt_vusage_error(who(cmd, buf), fmt, ap);
	va_end(ap);
	return JITCTL_USAGE;
}

int jitctl_out_of_memory(const char *cmd)
{
	fprintf(stderr, "jitctl %s: out of memory\n", cmd);
	return JITCTL_REFUSED;
}

void jitctl_try_help(const char *cmd)
{
	char buf[WHO_MAX];

	cliopt_try_help(who(cmd, buf));
}

int jitctl_bad_option(const char *cmd, int c, char **argv, int at)
{
	char buf[WHO_MAX];

	return cliopt_bad_option(who(cmd, buf), c, argv, at);
}

int jitctl_unreachable(const struct jitctl_opts *o, int ret)
{
	if (ret == -EPROTO)
		fprintf(stderr, "jitctl: %s: the agent sent no valid reply\n", o->socket);
	else
		fprintf(stderr, "jitctl: cannot reach jitd at %s: %s%s%s%s\n", o->socket,
			strerror(-ret),
			ret == -EACCES ? " (the control socket is for root and group " : "",
			ret == -EACCES ? o->group : "", ret == -EACCES ? ")" : "");
	return JITCTL_UNREACHABLE;
}

int jitctl_call(const struct jitctl_opts *o, const json_t *request, json_t **reply)
{
	int ret = proto_call(o->socket, request, reply);

	return ret ? jitctl_unreachable(o, ret) : JITCTL_OK;
}

int jitctl_call_line(const struct jitctl_opts *o, const json_t *request, char **line,
	size_t *len)
{
	int ret = proto_call_line(o->socket, request, line, len);

	return ret ? jitctl_unreachable(o, ret) : JITCTL_OK;
}

/*
 * control_socket and control_group from jitd's configuration, so that a jitd moved elsewhere is
 * found (and teardown does not take a running one for stopped). Only those two members are
 * read: the agent judges the rest. The default file may be absent (the defaults hold), or
 * unreadable or broken (o->config_unread, said unless -s named the socket; keygen and sign
 * need no agent, teardown refuses); a named one must be read. 0, or JITCTL_USAGE having said
 * why.
 */
static int read_config(const char *path, bool named, struct jitctl_opts *o, json_t **root)
{
	const json_t *s = NULL, *g = NULL;
	FILE *f = fopen(path, "re");
	const char *why;
	json_error_t je;

	if (!f) {
		if (!named && errno == ENOENT)
			return 0;
		why = strerror(errno);
		/* Not root's business: the control group reads a root-only file as nothing. */
		if (!named && errno == EACCES) {
			o->config_unread = true;
			return 0;
		}
		goto unread;
	}
	*root = json_loadf(f, JSON_REJECT_DUPLICATES, &je);
	fclose(f);
	if (json_is_object(*root)) {
		s = json_object_get(*root, "control_socket");
		g = json_object_get(*root, "control_group");
	}
	if (!json_is_object(*root) || (s && !json_is_string(s)) || (g && !json_is_string(g))) {
		why = !*root ? je.text : !json_is_object(*root) ? "not a JSON object" :
			"control_socket and control_group must be strings";
		goto unread;
	}
	if (s)
		o->config_socket = json_string_value(s);
	if (s && !o->socket_named)
		o->socket = json_string_value(s);
	if (g)
		o->group = json_string_value(g);
	return 0;
unread:
	if (named || !o->socket_named)
		fprintf(stderr, "jitctl: %s: %s%s\n", path, why, named ? "" :
			" (using the default control socket)");
	json_decref(*root);
	*root = NULL;
	o->config_unread = true;
	return named ? JITCTL_USAGE : 0;
}

int main(int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "socket", required_argument, NULL, 's' },
		{ "config", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	struct jitctl_opts o = { .socket = JITCTL_DEFAULT_SOCKET, .group = DEFAULT_GROUP,
		.config_socket = JITCTL_DEFAULT_SOCKET };
	static char status_name[] = "status";
	char *status_argv[] = { status_name, NULL };
	const char *socket = NULL, *config = NULL;
	json_t *root = NULL;
	int at, c, rc;

	/*
	 * The commands take their options before or after their operands, as their synopses
	 * show ("revoke ID --terminate"); POSIXLY_CORRECT would stop each command's getopt at
	 * its first operand. '+' keeps it for jitctl's own options: those after the command name
	 * belong to the command.
	 */
	(void)unsetenv("POSIXLY_CORRECT");
	for (at = 1; (c = getopt_long(argc, argv, "+:s:c:hV", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 's':
			socket = optarg;
			break;
		case 'c':
			config = optarg;
			break;
		case 'h':
			usage(stdout);
			return JITCTL_OK;
		case 'V':
			printf("jitctl %s\n", JITD_VERSION);
			return JITCTL_OK;
		default:
			return jitctl_bad_option(NULL, c, argv, at);
		}
	}
	argc -= optind;
	argv += optind;
	if (socket) {
		o.socket = socket;
		o.socket_named = true;
	}
	o.config_path = config ? config : CONFIG_DEFAULT_PATH;
	o.config_named = config != NULL;
	if ((rc = read_config(o.config_path, config != NULL, &o, &root)))
		return rc;
	if (!argc) {
		rc = cmd_status(&o, 1, status_argv);
		goto out;
	}
	for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
		if (!strcmp(argv[0], commands[i].name)) {
			rc = commands[i].fn(&o, argc, argv);
			goto out;
		}
	rc = jitctl_usage_error(NULL, "unknown command '%s'", argv[0]);
out:
	json_decref(root);
	/* Output cut short (a full disk, say) must not read as success. */
	if (rc == JITCTL_OK) {
		int e = fflush(stdout) ? errno : ferror(stdout) ? EIO : 0;

		if (e) {
			fprintf(stderr, "jitctl: writing the output: %s\n", strerror(e));
			rc = JITCTL_REFUSED;
		}
	}
	return rc;
}
