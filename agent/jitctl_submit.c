#include <errno.h>
#include <getopt.h>
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
	if (ret == -EFBIG)
		return jitctl_refuse("submit", json, JIT_ERR_TOO_LARGE, "token exceeds %d bytes",
			JWS_MAX_TOKEN);
	if (ret) {
		fprintf(stderr, "jitctl submit: %s: %s\n", argv[optind], strerror(-ret));
		return JITCTL_USAGE;
	}
	token = trim(buf, &len);
	/* Not UTF-8 (which jansson refuses) or holding NUL: no grant can be that. */
	if (memchr(token, '\0', len) || (ret = jitctl_textn_check(token, len)) == -EILSEQ) {
		ret = jitctl_refuse("submit", json, JIT_ERR_MALFORMED, "token is not text");
		goto out;
	}
	if (ret || !(req = json_pack("{s:s, s:s%}", "op", "submit", "token", token, len))) {
		ret = jitctl_out_of_memory("submit");
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
