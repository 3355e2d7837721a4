#ifndef JITD_AGENT_PRINTER_H
#define JITD_AGENT_PRINTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/proto.h"

struct evbuffer;
struct port_spec;
struct prefix;

/*
 * JSON written by hand, for the documents written often enough that building a jansson tree
 * and dumping it was most of their cost: status (100,000 grants), a grant's reply, an audit
 * record. Pieces gather in a caller's block. With an evbuffer, a full block goes to it; without
 * one, the block grows on the heap and the whole text stays in p (len bytes, one spare after
 * them). Errors stick: the first is in err, and what follows is dropped.
 */
struct printer {
	struct evbuffer *out;
	char *p;
	size_t len, cap;
	bool heap;		/* p was grown on the heap: printer_release frees it */
	int err;
	int drain_fd;		/* see printer_drain_to; -1: none */
	size_t drained;		/* bytes of out that went to drain_fd */
	int64_t drain_wait_us;	/* what is left of the time printer_drain_to allows for waiting */
	/* Each of two time stamps as last formatted: they repeat from document to document. */
	struct {
		int64_t secs;
		char text[PROTO_TIME_LEN];
	} stamp[2];
};

void printer_init(struct printer *pr, struct evbuffer *out, char *block, size_t cap);
/*
 * From now on each block flushed to the evbuffer also goes to the socket fd (non-blocking) as
 * far as it takes it at once: a long document then leaves while the rest is printed, read by
 * its peer on another CPU, rather than standing whole in memory first. While more than
 * PRINTER_BACKLOG bytes wait, the printer waits for the peer to read, wait_ms in all at most: a
 * peer on the same CPU would otherwise read only once the whole document is written. A socket
 * that fails is left alone; the caller's own write of the rest finds it so.
 */
#define PRINTER_BACKLOG (1024 * 1024)
void printer_drain_to(struct printer *pr, int fd, int wait_ms);
/* Frees a grown block. */
void printer_release(struct printer *pr);
/* What the block holds, to the evbuffer. */
void pr_flush(struct printer *pr);
void pr_add(struct printer *pr, const char *s, size_t n);
void pr_raw(struct printer *pr, const char *s);
/* json_dump_callback's and proto_put_string's writer. */
int pr_buf(const char *buf, size_t len, void *pr);
/* A string quoted as jansson quotes it (see proto_put_string), null for NULL. */
void pr_string(struct printer *pr, const char *s);
/* A value jansson would not escape (an address, a port, a time) quoted, or null for NULL. */
void pr_plain(struct printer *pr, const char *s);
/* v, or null when it is not known. */
void pr_int(struct printer *pr, bool known, long long v);
/* A time stamp (which: 0 or 1, a slot each), formatted once per distinct second. */
void pr_stamp(struct printer *pr, int which, int64_t secs);
/* Short formatted pieces (a kernel element, a member name). */
void pr_printf(struct printer *pr, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* The entries of a JSON array: prefixes ("192.0.2.0/24"), ports ("22/tcp", unprintable ones left out). */
void pr_prefixes(struct printer *pr, const struct prefix *v, size_t n);
void pr_ports(struct printer *pr, const struct port_spec *v, size_t n);

#endif
