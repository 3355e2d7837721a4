/*
 * What jitctl's commands share about the agent's answers: a reply checked for being jitd's, a
 * refusal said (on stderr, or as JSON), an applied grant printed; and about their options: the
 * comma lists and durations they take, and text that must be UTF-8.
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "agent/jitctl.h"
#include "common/duration.h"
#include "common/err.h"

void jitctl_print_refusal(const char *cmd, bool json, const char *code, const char *msg)
{
	if (json) {
		json_t *o = json_pack("{s:s, s:s}", "error", code, "message", msg);

		/* A message that is not UTF-8 (a path, say) fails: it goes to stderr. */
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

/* Whether the comma list s has an empty item (a leading or trailing comma, two together). */
static bool list_gap(const char *s)
{
	size_t n = strlen(s);

	return n && (s[0] == ',' || s[n - 1] == ',' || strstr(s, ",,"));
}

int jitctl_list_add(const char *item, json_t *arr)
{
	return json_array_append_new(arr, json_string(item)) ? -ENOMEM : 0;
}

int jitctl_split_list(const char *cmd, const char *opt, const char *s, jitctl_item_fn fn,
	const char *what, json_t **out)
{
	char *copy = NULL, *item, *save;
	int ret = -EINVAL;

	if (!(*out = json_array())) {
		ret = -ENOMEM;
		goto out;
	}
	if (!*s) {
		fprintf(stderr, "jitctl %s: --%s is empty\n", cmd, opt);
		goto out;
	}
	if (list_gap(s)) {
		fprintf(stderr, "jitctl %s: --%s '%s' has an empty item\n", cmd, opt, s);
		goto out;
	}
	if (!(copy = strdup(s))) {
		ret = -ENOMEM;
		goto out;
	}
	for (item = strtok_r(copy, ",", &save); item; item = strtok_r(NULL, ",", &save)) {
		ret = fn(item, *out);
		if (ret == -EINVAL)
			fprintf(stderr, "jitctl %s: --%s '%s' is not %s\n", cmd, opt, item, what);
		if (ret)
			goto out;
	}
	ret = 0;
out:
	if (ret) {
		json_decref(*out);
		*out = NULL;
	}
	free(copy);
	return ret;
}

int jitctl_duration(const char *cmd, const char *opt, const char *s, uint64_t *secs)
{
	int ret = duration_parse(s, secs);

	if (ret == -ERANGE)
		fprintf(stderr, "jitctl %s: --%s '%s' is longer than %llu s\n", cmd, opt, s,
			(unsigned long long)DURATION_MAX_SECS);
	else if (ret)
		fprintf(stderr, "jitctl %s: --%s '%s' is not a duration (ISO 8601 like PT30M, or "
			"seconds)\n", cmd, opt, s);
	return ret ? -EINVAL : 0;
}

int jitctl_textn_check(const char *s, size_t len)
{
	json_t *v = json_stringn(s, len);
	int ret = 0;

	if (!v)
		ret = (v = json_stringn_nocheck(s, len)) ? -EILSEQ : -ENOMEM;
	json_decref(v);
	return ret;
}

int jitctl_text_check(const char *s)
{
	return jitctl_textn_check(s, strlen(s));
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
