#ifndef JITD_AGENT_STATUS_H
#define JITD_AGENT_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

struct enforce;
struct evbuffer;
struct grant;

/*
 * Appends the status document (schema version 1, documented in README.md) to out as compact
 * JSON, without a newline: configuration, live grants and what the kernel really holds, read
 * back from it. 0, or -ENOMEM with a partial document in out.
 *
 * With fd >= 0, a non-blocking socket whose peer waits for the document after what out holds
 * already, or a file to spool it in: out is written to it as it fills (printer_drain_to), and
 * *sent says how many bytes went. Out then holds only the rest (all of it after a write
 * failed). At 100,000 grants the document is 36 MB; built whole, it raised the agent's RSS
 * from 59 to 104 MB for each status.
 */
int status_write(struct enforce *e, struct evbuffer *out, int fd, size_t *sent);
/*
 * One grant as the control protocol reports it after a submit (with its elements), printed
 * into out as status prints its grants. Its kernel_expires_in comes from the transaction the
 * kernel just acknowledged, not a read-back. 0, or -ENOMEM with a partial object in out.
 */
int status_grant_write(struct enforce *e, const struct grant *g, struct evbuffer *out);
/*
 * {"id":JTI}: a grant that took effect, when its whole object cannot be written (out of
 * memory), never "internal", which says nothing was applied. 0, or -ENOMEM.
 */
int status_id_write(const char *jti, struct evbuffer *out);
/* The settings a restart still owes (enforce_restart_pending) as a new JSON array; NULL: OOM. */
json_t *status_restart_pending(const struct enforce *e);
/*
 * A revocation's reply and its newline: {HEAD"revoked", "terminate", "flows_terminated"}, the
 * count null and "terminate_error" added when the flows could not be cut, "kernel_unconfirmed"
 * when the kernel did not answer. head: "" or members, each with its comma. Written by hand,
 * into out, so that a revocation that took effect is said with what a cut did even when
 * memory is short (never "internal", which says nothing was done). 0, or -ENOMEM with a
 * partial object in out.
 */
struct revoke_result;
int status_revoke_write(const struct revoke_result *res, const char *head, struct evbuffer *out);
/*
 * Once a reply of len bytes has been written to its peer: a large one (status at 100,000 grants
 * is a 35 MB buffer) leaves freed heap that glibc would keep for reuse, leaving the agent at
 * that high-water mark. It goes back to the system here.
 */
void status_release_memory(size_t len);

#endif
