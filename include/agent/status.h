#ifndef JITD_AGENT_STATUS_H
#define JITD_AGENT_STATUS_H

#include <stdbool.h>
#include <stdint.h>

#include <jansson.h>

struct enforce;
struct grant;

/*
 * The status document (schema version 1, documented in README.md): configuration, live grants
 * and what the kernel really holds, read back from it. New reference, or NULL on OOM.
 */
json_t *status_build(struct enforce *e);
/*
 * One grant as the control protocol reports it after a submit (with its elements). Its
 * kernel_expires_in comes from the transaction the kernel just acknowledged, not a read-back.
 */
json_t *status_grant_json(struct enforce *e, const struct grant *g);

#endif
