#ifndef JITD_COMMON_PROTO_H
#define JITD_COMMON_PROTO_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

struct jit_error;

/*
 * The control socket protocol between jitctl and jitd: one JSON object per line in each
 * direction, one request per connection.
 *   request:  {"op":"submit","token":"<compact JWS>"} | {"op":"status"}
 *   reply:    {"ok":true, ...op-specific members...}
 *           | {"ok":false,"error":"<jit_err_name>","message":"<sentence>"}
 */
#define PROTO_MAX_MESSAGE (64 * 1024)	    /* a request: a grant is at most 16 KiB */
/* A reply: status grows with the active grants, about 350 bytes each (70 MB at 200,000). */
#define PROTO_MAX_REPLY (256 * 1024 * 1024)
#define PROTO_TIMEOUT_MS 10000
/*
 * A log reply holds at most this many events, the newest (it must fit PROTO_MAX_REPLY); the
 * reply says it was cut. A request's "limit" is from 1 to this.
 */
#define PROTO_LOG_MAX_EVENTS 50000
/*
 * A status reply that succeeded begins with exactly these bytes and ends with "}\n": the agent
 * writes it so (status_write), and jitctl status --json passes the document between them on
 * as it came instead of parsing 35 MB only to print it again.
 */
#define PROTO_STATUS_HEAD "{\"ok\":true,\"status\":"

/*
 * Parses one request (without or with its trailing newline). Must be a JSON object without
 * duplicate names, no longer than PROTO_MAX_MESSAGE. Returns 0 and a new reference in *out, or
 * JIT_ERR_TOO_LARGE / JIT_ERR_BAD_REQUEST.
 */
int proto_decode(const char *buf, size_t len, json_t **out, struct jit_error *e);
/* Serialises msg compactly with a trailing newline. Returns a malloc'ed string or NULL. */
char *proto_encode(const json_t *msg);
/*
 * {"ok":false,"error":name,"message":msg} (new reference, NULL on OOM); msg as proto_text
 * gives it, so that a message quoting bytes that are not UTF-8 (a path, a cut claim) still
 * makes a reply.
 */
json_t *proto_error(int code, const char *msg);
/*
 * Text jitd writes into JSON that may not be UTF-8 (a path, a message cut at a byte count):
 * s when jansson takes it as a string, else s in ASCII, '?' for every byte above 0x7f, cut to
 * fit buf (len > 0).
 */
const char *proto_text(const char *s, char *buf, size_t len);

/*
 * s as a JSON string, quoted, exactly as jansson's JSON_COMPACT dump prints it (", \\ and
 * control characters escaped, UTF-8 as it is), or null for NULL; put as json_dump_callback's.
 * For writers that print a large document directly (status) and still take strings from
 * outside: s must be valid UTF-8, as every string jansson parsed is. 0, or -1 when put fails.
 */
int proto_put_string(const char *s, json_dump_callback_t put, void *arg);
/*
 * A time as replies and the audit trail carry it: RFC 3339 in UTC to the second,
 * "2027-01-15T08:00:00Z". 0, or -1 (a time gmtime cannot take, or len under PROTO_TIME_LEN).
 */
#define PROTO_TIME_LEN 32
int proto_time_format(int64_t secs, char *buf, size_t len);

/*
 * Client side: connects to the Unix socket at path, sends request, reads one reply line.
 * Returns 0 and a new reference in *reply; -errno when the agent cannot be reached or the
 * exchange fails (-ETIMEDOUT after PROTO_TIMEOUT_MS, the connect included, -EPROTO for an
 * unparseable reply, anything after its line before the agent closes, or a connection closed
 * without one, -EMSGSIZE over PROTO_MAX_REPLY,
 * -ENAMETOOLONG for a path that does not fit sockaddr_un).
 */
int proto_call(const char *path, const json_t *request, json_t **reply);
/*
 * proto_call without the parsing: the reply line as it came, its newline included (none when
 * the agent closed without one). *line is the caller's to free.
 */
int proto_call_line(const char *path, const json_t *request, char **line, size_t *len);
/*
 * Whether something accepts connections on the Unix socket at path, answering or not (an agent
 * at its connection limit, busy, or with a full backlog): 1; nothing (no socket, or a stale
 * one): 0; -errno when that cannot be told.
 */
int proto_listening(const char *path);
/*
 * The lock a running jitd holds beside its control socket (PATH.lock, flock), from before it
 * binds the socket until it exits: held while it starts, when the socket is not listened on
 * yet. proto_lock_path writes its name (0 or -ENAMETOOLONG); proto_lock_held says 1 when a
 * process holds it, 0 when none does (or there is no such file), -errno when that cannot be
 * told.
 */
int proto_lock_path(const char *socket_path, char *buf, size_t len);
int proto_lock_held(const char *socket_path);
/* A reply line as proto_call parses it: 0 and a new reference, or -EPROTO. */
int proto_decode_reply(const char *line, size_t len, json_t **reply);

#endif
