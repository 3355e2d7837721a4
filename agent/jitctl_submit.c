#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/jitctl.h"
#include "common/err.h"
#include "common/jws.h"
#include "common/proto.h"

/*
 * What jitctl reads before giving up locally. Larger than JWS_MAX_TOKEN on purpose: tokens up to
 * here reach the agent, which refuses them as too_large itself (and will audit it); only what
 * could not even fit a control message is refused here.
 */
#define SUBMIT_MAX_INPUT (PROTO_MAX_MESSAGE - 64)

static void submit_usage(FILE *f)
{
	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] submit FILE|- [--json]\n\n"
		   "Hands a compact JWS grant, read from FILE or standard input, to the agent and\n"
		   "prints what was applied (grant id, elements, expiry) or the error code and message.\n\n"
		   "  --json  print the applied grant, or {\"error\",\"message\"}, as JSON\n\n"
		   "Exit status: 0 applied, 1 refused, 2 usage error, 3 agent unreachable\n"
		   "or no valid reply.\n");
}

/* Reads the whole input; -EFBIG when it is over max (the token cannot be a grant). */
static int read_input(const char *path, char **out, size_t *outlen, size_t max)
{
	FILE *f = strcmp(path, "-") ? fopen(path, "re") : stdin;
	char *buf = NULL;
	size_t len = 0;
	int ret = 0;

	if (!f)
		return -errno;
	if (!(buf = malloc(max + 2))) {
		ret = -ENOMEM;
		goto out;
	}
	errno = 0;
	len = fread(buf, 1, max + 1, f);
	if (ferror(f)) {
		/* The read's own reason: a directory given for FILE is EISDIR, not a disk's EIO. */
		ret = errno ? -errno : -EIO;
		goto out;
	}
	if (len > max) {
		ret = -EFBIG;
		goto out;
	}
	buf[len] = '\0';
out:
	if (f != stdin)
		fclose(f);
	if (ret) {
		free(buf);
		return ret;
	}
	*out = buf;
	*outlen = len;
	return 0;
}

/*
 * A token file ends with a newline; the agent gets exactly the token. A NUL byte is not space
 * (strchr finds the terminator): a file padded with them is refused, not cleaned.
 */
static char *trim(char *s, size_t *len)
{
	while (*len && s[*len - 1] && strchr(" \t\r\n", s[*len - 1]))
		s[--*len] = '\0';
	while (*len && *s && strchr(" \t\r\n", *s)) {
		s++;
		--*len;
	}
	return s;
}

void jitctl_print_refusal(const char *cmd, bool json, const char *code, const char *msg)
{
	if (json) {
		json_t *o = json_pack("{s:s, s:s}", "error", code, "message", msg);

		/* Only a message that is not UTF-8 (a path, say) can fail: it goes to stderr. */
		if (!o) {
			o = json_pack("{s:s, s:s}", "error", code, "message",
				"the message is not UTF-8 text; it was printed to stderr");
			fprintf(stderr, "jitctl %s: refused: %s: %s\n", cmd, code, msg);
		}
		if (o)
			json_dumpf(o, stdout, JSON_INDENT(2));
		printf("\n");
		json_decref(o);
		return;
	}
	fprintf(stderr, "jitctl %s: refused: %s: %s\n", cmd, code, msg);
}

int jitctl_refuse(const char *cmd, bool json, int code, const char *fmt, ...)
{
	char msg[2 * PATH_MAX]; /* a path or two, and words */
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	/* As the agent's refusals are said: with the stable code, which scripts match. */
	jitctl_print_refusal(cmd, json, jit_err_name(code), msg);
	return JITCTL_REFUSED;
}

int jitctl_check_reply(const char *cmd, bool json, const json_t *reply, const char *member,
	json_type type)
{
	const char *code = json_string_value(json_object_get(reply, "error"));
	const char *msg = json_string_value(json_object_get(reply, "message"));
	const json_t *ok = json_object_get(reply, "ok"), *v = json_object_get(reply, member);

	/*
	 * Not jitd's answer, whatever the output: an "ok" that is no boolean, or one without
	 * what it answers (a submit taken for refused, exit 1, may have been applied).
	 */
	if (!json_is_boolean(ok) ||
		(json_is_true(ok) && member && (!v || json_typeof(v) != type))) {
		fprintf(stderr, "jitctl %s: the agent sent no valid reply (%s)\n", cmd,
			json_is_boolean(ok) ? "no result in it" : "no \"ok\" in it");
		return JITCTL_UNREACHABLE;
	}
	if (json_is_true(ok))
		return JITCTL_OK;
	jitctl_print_refusal(cmd, json, code ? code : "internal", msg ? msg : "");
	return JITCTL_REFUSED;
}

int jitctl_print_member(const json_t *reply, const char *key)
{
	json_dumpf(json_object_get(reply, key), stdout, JSON_INDENT(2));
	printf("\n");
	return JITCTL_OK;
}

const char *jitctl_str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));

	return s ? s : "-";
}

bool jitctl_list_gap(const char *s)
{
	size_t n = strlen(s);

	return n && (s[0] == ',' || s[n - 1] == ',' || strstr(s, ",,"));
}

void jitctl_print_grant(const json_t *g)
{
	const json_t *el;
	size_t i;

	/* Short of memory, the agent answers with the grant's id alone: it took effect. */
	if (!json_is_integer(json_object_get(g, "expires_in"))) {
		printf("applied grant %s (the agent could not say more: see jitctl status)\n",
			jitctl_str(g, "id"));
		return;
	}
	printf("applied grant %s for %s (issuer %s, key %s)\n", jitctl_str(g, "id"),
		jitctl_str(g, "sub"), jitctl_str(g, "iss"), jitctl_str(g, "kid"));
	printf("  expires %s (in %" JSON_INTEGER_FORMAT " s)\n", jitctl_str(g, "expires_at"),
		json_integer_value(json_object_get(g, "expires_in")));
	json_array_foreach(json_object_get(g, "elements"), i, el) {
		/* A gateway grant's element is per destination: name it, or rows look doubled. */
		if (json_is_string(json_object_get(el, "destination")))
			printf("  allow %s -> %s port %" JSON_INTEGER_FORMAT "/%s\n",
				jitctl_str(el, "source"), jitctl_str(el, "destination"),
				json_integer_value(json_object_get(el, "port")),
				jitctl_str(el, "protocol"));
		else
			printf("  allow %s -> %" JSON_INTEGER_FORMAT "/%s\n",
				jitctl_str(el, "source"),
				json_integer_value(json_object_get(el, "port")),
				jitctl_str(el, "protocol"));
	}
	/* Where the user connects when the grant was given gateway ports (DNAT). */
	json_array_foreach(json_object_get(g, "dnat"), i, el)
		printf("  connect to %s -> %s/%s\n", jitctl_str(el, "connect"),
			jitctl_str(el, "to"), jitctl_str(el, "protocol"));
}

int cmd_submit(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	json_t *req = NULL, *rep = NULL;
	char *buf = NULL, *token;
	bool json = false;
	size_t len = 0;
	int at, c, ret;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 'j':
			json = true;
			break;
		case 'h':
			submit_usage(stdout);
			return JITCTL_OK;
		default:
			return jitctl_bad_option("submit", c, argv, at);
		}
	}
	if (argc - optind != 1)
		return jitctl_usage_error("submit", "expected one FILE (or - for standard input)");
	ret = read_input(argv[optind], &buf, &len, SUBMIT_MAX_INPUT);
	if (ret == -EFBIG) {
		char msg[128];

		snprintf(msg, sizeof(msg), "token exceeds %d bytes", JWS_MAX_TOKEN);
		jitctl_print_refusal("submit", json, jit_err_name(JIT_ERR_TOO_LARGE), msg);
		return JITCTL_REFUSED;
	}
	if (ret) {
		fprintf(stderr, "jitctl submit: %s: %s\n", argv[optind], strerror(-ret));
		return JITCTL_USAGE;
	}
	token = trim(buf, &len);
	if (memchr(token, '\0', len) ||
		!(req = json_pack("{s:s, s:s%}", "op", "submit", "token", token, len))) {
		/* Not UTF-8 (which jansson refuses) or holding NUL: no grant can be that. */
		jitctl_print_refusal("submit", json, jit_err_name(JIT_ERR_MALFORMED), "token is not text");
		ret = JITCTL_REFUSED;
		goto out;
	}
	if ((ret = jitctl_call(o, req, &rep)))
		goto out;
	if ((ret = jitctl_check_reply("submit", json, rep, "grant", JSON_OBJECT)))
		goto out;
	if (json)
		ret = jitctl_print_member(rep, "grant");
	else
		jitctl_print_grant(json_object_get(rep, "grant"));
out:
	json_decref(req);
	json_decref(rep);
	free(buf);
	return ret;
}
