#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <jansson.h>

#include "common/err.h"

/* Indexed by -code. The names are a stable interface: see err.h. */
static const char *const names[JIT_ERR__COUNT] = {
	[0] = "ok",
	[-JIT_ERR_MALFORMED] = "malformed",
	[-JIT_ERR_BAD_HEADER] = "bad_header",
	[-JIT_ERR_BAD_SIGNATURE] = "bad_signature",
	[-JIT_ERR_UNKNOWN_KEY] = "unknown_key",
	[-JIT_ERR_WRONG_AUDIENCE] = "wrong_audience",
	[-JIT_ERR_EXPIRED] = "expired",
	[-JIT_ERR_NOT_YET_VALID] = "not_yet_valid",
	[-JIT_ERR_PORT_NOT_PROTECTED] = "port_not_protected",
	[-JIT_ERR_SOURCE_NOT_ALLOWED] = "source_not_allowed",
	[-JIT_ERR_DURATION_EXCEEDS_MAX] = "duration_exceeds_max",
	[-JIT_ERR_TOO_LARGE] = "too_large",
	[-JIT_ERR_KERNEL] = "kernel_refused",
	[-JIT_ERR_INTERNAL] = "internal",
	[-JIT_ERR_BAD_REQUEST] = "bad_request",
	[-JIT_ERR_BAD_CONFIG] = "bad_config",
	[-JIT_ERR_DUPLICATE] = "duplicate",
	[-JIT_ERR_PERMISSION] = "permission_denied",
	[-JIT_ERR_REPLAY] = "replay",
	[-JIT_ERR_BUSY] = "busy",
	[-JIT_ERR_NOT_FOUND] = "not_found",
	[-JIT_ERR_RATE_LIMITED] = "rate_limited",
	[-JIT_ERR_STORAGE_FULL] = "storage_full",
	[-JIT_ERR_DESTINATION_NOT_PROTECTED] = "destination_not_protected",
	[-JIT_ERR_WRONG_ISSUER] = "wrong_issuer",
	[-JIT_ERR_AGENT_RUNNING] = "agent_running",
};

const char *jit_err_name(int code)
{
	if (code > 0 || -code >= JIT_ERR__COUNT || !names[-code])
		return names[-JIT_ERR_INTERNAL];
	return names[-code];
}

int jit_err_from_name(const char *name)
{
	for (int i = 0; i < JIT_ERR__COUNT; i++)
		if (names[i] && !strcmp(names[i], name))
			return -i;
	return JIT_ERR_INTERNAL;
}

/*
 * The length of s without a UTF-8 sequence its end cut short: a message that quotes a claim
 * (UTF-8, up to 256 bytes) is cut at a byte count, and JSON (jansson) takes no broken text.
 */
static size_t utf8_whole(const char *s, size_t len)
{
	size_t i = len, cont = 0;
	unsigned char lead;

	while (i > 0 && cont < 3 && ((unsigned char)s[i - 1] & 0xc0) == 0x80) {
		i--;
		cont++;
	}
	if (i == 0 || (lead = (unsigned char)s[i - 1]) < 0xc0)
		return len;
	/* A lead byte of 2, 3 or 4 bytes, with fewer continuation bytes than it needs. */
	if (cont + 1 < (lead >= 0xf0 ? 4u : lead >= 0xe0 ? 3u : 2u))
		return i - 1;
	return len;
}

int jit_fail(struct jit_error *e, int code, const char *fmt, ...)
{
	va_list ap;
	int n;

	if (!e)
		return code;
	e->code = code;
	va_start(ap, fmt);
	/* A truncated message is still a correct (shorter) explanation; the code carries the meaning. */
	n = vsnprintf(e->msg, sizeof(e->msg), fmt, ap);
	va_end(ap);
	if (n >= (int)sizeof(e->msg))
		e->msg[utf8_whole(e->msg, sizeof(e->msg) - 1)] = '\0';
	return code;
}

const char *jit_shown(const char *s, char buf[static JIT_SHOWN_LEN])
{
	size_t i;

	for (i = 0; s && s[i] && i < JIT_SHOWN_LEN - 1; i++)
		buf[i] = s[i] >= 0x20 && s[i] < 0x7f ? s[i] : '?';
	buf[i] = '\0';
	return buf;
}

const char *jit_json_type(const struct json_t *v)
{
	switch (json_typeof(v)) {
	case JSON_OBJECT:
		return "an object";
	case JSON_ARRAY:
		return "an array";
	case JSON_STRING:
		return "a string";
	case JSON_INTEGER:
		return "an integer";
	case JSON_REAL:
		return "a real number";
	case JSON_TRUE:
	case JSON_FALSE:
		return "a boolean";
	case JSON_NULL:
		break;
	}
	return "null";
}
