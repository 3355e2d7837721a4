#ifndef JITD_AGENT_JITCTL_H
#define JITD_AGENT_JITCTL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

/*
 * jitctl subcommands. Each gets argv with argv[0] the command name and returns the process exit
 * status: JITCTL_OK, JITCTL_REFUSED (the agent or the operation said no), JITCTL_USAGE,
 * JITCTL_UNREACHABLE. Each prints its own errors to stderr, once, with the context it has.
 */
enum {
	JITCTL_OK = 0,
	JITCTL_REFUSED = 1,
	JITCTL_USAGE = 2,
	JITCTL_UNREACHABLE = 3,
};

#define JITCTL_DEFAULT_SOCKET "/run/jitd/jitd.sock"

struct jitctl_opts {
	const char *socket; /* -s, else the configuration's control_socket, else the default */
	const char *group;  /* the configuration's control_group, for hints */
	bool socket_named;  /* -s */
	bool config_unread; /* jitd's configuration is there but could not be read */
	const char *config_path; /* -c, else the default */
	bool config_named;	 /* -c */
	/* the configuration's control_socket, else the default (unread too) */
	const char *config_socket;
};

int cmd_status(const struct jitctl_opts *o, int argc, char **argv);
int cmd_submit(const struct jitctl_opts *o, int argc, char **argv);
int cmd_keygen(const struct jitctl_opts *o, int argc, char **argv);
int cmd_sign(const struct jitctl_opts *o, int argc, char **argv);
int cmd_log(const struct jitctl_opts *o, int argc, char **argv);
int cmd_revoke(const struct jitctl_opts *o, int argc, char **argv);
int cmd_grant(const struct jitctl_opts *o, int argc, char **argv);
int cmd_teardown(const struct jitctl_opts *o, int argc, char **argv);
int cmd_reload(const struct jitctl_opts *o, int argc, char **argv);

/*
 * Sends request to the agent and returns its reply (new reference) in *reply. On failure prints
 * why to stderr and returns JITCTL_UNREACHABLE.
 */
int jitctl_call(const struct jitctl_opts *o, const json_t *request, json_t **reply);
/*
 * Usage errors as common/cliopt.h says them, for "jitctl CMD" (cmd NULL: jitctl's own options
 * and commands). jitctl_usage_error and jitctl_bad_option return JITCTL_USAGE.
 */
int jitctl_usage_error(const char *cmd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void jitctl_try_help(const char *cmd);
int jitctl_bad_option(const char *cmd, int c, char **argv, int at);
/* "jitctl CMD: out of memory", a refusal of jitctl's own (exit 1). Returns JITCTL_REFUSED. */
int jitctl_out_of_memory(const char *cmd);
/* Says why the agent could not be asked (err: -errno, -EPROTO for no valid reply). */
int jitctl_unreachable(const struct jitctl_opts *o, int err);
/* The same, with the reply line unparsed (proto_call_line); *line is the caller's to free. */
int jitctl_call_line(const struct jitctl_opts *o, const json_t *request, char **line,
	size_t *len);
/*
 * A refusal, the agent's (CODE its stable name) or jitctl's own: "jitctl CMD: refused: CODE: MSG"
 * on stderr, or {"error","message"} on stdout with json (a MSG that is not UTF-8 goes to
 * stderr then, and the JSON says so).
 */
void jitctl_print_refusal(const char *cmd, bool json, const char *code, const char *msg);
/*
 * A refusal jitctl decides itself (teardown, keygen, submit), said as jitctl_print_refusal says
 * one, with code's stable name. Returns JITCTL_REFUSED.
 */
int jitctl_refuse(const char *cmd, bool json, int code, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
/* An applied grant as readable lines. */
void jitctl_print_grant(const json_t *grant);
/*
 * Whether s is text jansson takes (UTF-8): 0, -EILSEQ, or -ENOMEM. Found before a request is
 * built, or a failure to build it says nothing of why.
 */
int jitctl_text_check(const char *s);
/* The same for len bytes at s, which need not end in NUL. */
int jitctl_textn_check(const char *s, size_t len);
/* o's string member key, or "-": a missing one must not reach printf as NULL. */
const char *jitctl_str(const json_t *o, const char *key);
/* Adds one list item to arr. 0, -EINVAL (not valid syntax) or -ENOMEM. */
typedef int (*jitctl_item_fn)(const char *item, json_t *arr);
/* The item fn that adds the item as it is, a string. */
int jitctl_list_add(const char *item, json_t *arr);
/* What a source or port item is when it is not one, for jitctl_split_list. */
#define JITCTL_PREFIX_WHAT "an IP address or prefix (host bits must be zero)"
#define JITCTL_PORT_WHAT "a port (1-65535)[/tcp|udp|*]"
/*
 * Splits the comma list s, the value of --opt, into a new array in *out, one fn call per item.
 * An empty list or item is refused: strtok_r would skip an empty item, and "22,,23" is likelier
 * a typo than a wish. 0; -EINVAL, said ("jitctl CMD: --opt 'ITEM' is not WHAT"; where the help
 * is is the caller's to add); -ENOMEM, not said.
 */
int jitctl_split_list(const char *cmd, const char *opt, const char *s, jitctl_item_fn fn,
	const char *what, json_t **out);
/* --opt's duration (ISO 8601 or seconds) in *secs: 0, or -EINVAL, said as jitctl_split_list. */
int jitctl_duration(const char *cmd, const char *opt, const char *s, uint64_t *secs);
/* --json: prints reply's member key, which jitctl_check_reply found, and returns JITCTL_OK. */
int jitctl_print_member(const json_t *reply, const char *key);
/*
 * For a reply with "ok": false, prints the refusal and returns JITCTL_REFUSED; with "ok": true
 * and member (NULL: none is needed) of the JSON type, JITCTL_OK. Anything else is no reply of
 * jitd's: said on stderr, JITCTL_UNREACHABLE (exit 3) in every output mode.
 */
int jitctl_check_reply(const char *cmd, bool json, const json_t *reply, const char *member,
	json_type type);

#endif
