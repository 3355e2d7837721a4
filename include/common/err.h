#ifndef JITD_COMMON_ERR_H
#define JITD_COMMON_ERR_H

#include <stdbool.h>
#include <stddef.h>

/*
 * Stable error codes. The names (jit_err_name) are part of the public interface: they appear
 * verbatim in jitctl output, --json, audit records and controller replies. Never renumber a
 * name's meaning; add new codes at the end.
 */
enum jit_err {
	JIT_OK = 0,
	JIT_ERR_MALFORMED = -1,		  /* "malformed" */
	JIT_ERR_BAD_HEADER = -2,	  /* "bad_header" */
	JIT_ERR_BAD_SIGNATURE = -3,	  /* "bad_signature" */
	JIT_ERR_UNKNOWN_KEY = -4,	  /* "unknown_key" */
	JIT_ERR_WRONG_AUDIENCE = -5,	  /* "wrong_audience" */
	JIT_ERR_EXPIRED = -6,		  /* "expired" */
	JIT_ERR_NOT_YET_VALID = -7,	  /* "not_yet_valid" */
	JIT_ERR_PORT_NOT_PROTECTED = -8,  /* "port_not_protected" */
	JIT_ERR_SOURCE_NOT_ALLOWED = -9,  /* "source_not_allowed" */
	JIT_ERR_DURATION_EXCEEDS_MAX = -10, /* "duration_exceeds_max" */
	JIT_ERR_TOO_LARGE = -11,	  /* "too_large" */
	JIT_ERR_KERNEL = -12,		  /* "kernel_refused": nothing was applied */
	JIT_ERR_INTERNAL = -13,		  /* "internal": out of memory, I/O; nothing was applied */
	JIT_ERR_BAD_REQUEST = -14,	  /* "bad_request": control protocol misuse */
	JIT_ERR_BAD_CONFIG = -15,	  /* "bad_config" */
	JIT_ERR_DUPLICATE = -16,	  /* "duplicate": same jti already active */
	JIT_ERR_PERMISSION = -17,	  /* "permission_denied" */
	JIT_ERR_REPLAY = -18,		  /* "replay": this jti was already accepted */
	JIT_ERR_BUSY = -19,		  /* "busy": a bounded resource is full; retry later */
	JIT_ERR_NOT_FOUND = -20,	  /* "not_found": no such active grant */
	JIT_ERR_RATE_LIMITED = -21,	  /* "rate_limited" */
	JIT_ERR_STORAGE_FULL = -22,	  /* "storage_full": state_dir is full; nothing was applied */
	JIT_ERR_DESTINATION_NOT_PROTECTED = -23, /* "destination_not_protected": gateway targets */
	JIT_ERR_WRONG_ISSUER = -24,	  /* "wrong_issuer": iss is not its key's ("issuers") */
	JIT_ERR_AGENT_RUNNING = -25,	  /* "agent_running": jitctl teardown while jitd runs */
	JIT_ERR__COUNT = 26
};

/* A code plus the one human sentence that explains this occurrence (names the offending input). */
struct jit_error {
	int code;
	char msg[256];
	/*
	 * Set by grant and revocation verification once a trusted key's signature holds: a refusal
	 * after that is of a controller's input, audited one by one (agent/refusals.h).
	 */
	bool authentic;
};

/* Stable symbolic name of a code ("bad_signature"); "internal" for anything unknown. */
const char *jit_err_name(int code);
/* Inverse of jit_err_name; returns JIT_ERR_INTERNAL for an unknown name. */
int jit_err_from_name(const char *name);

/*
 * Records code and a printf-style message in *e (e may be NULL) and returns code, so that
 * validators can write `return jit_fail(e, JIT_ERR_MALFORMED, "claim '%s' ...", name);`.
 */
int jit_fail(struct jit_error *e, int code, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/* Room for what jit_shown keeps of attacker text (64 bytes) and its NUL. */
#define JIT_SHOWN_LEN 65
/*
 * Attacker text (a kid, a claim, a header value) as a message may quote it: messages reach logs
 * and JSON replies, so only printable ASCII is kept, anything else shows as '?', and at most 64
 * bytes. NULL shows as "". Returns buf.
 */
const char *jit_shown(const char *s, char buf[static JIT_SHOWN_LEN]);

struct json_t;
/* What a JSON value is, for a message that says what was expected instead: "an array". */
const char *jit_json_type(const struct json_t *v);

#endif
