#ifndef JITD_BENCH_H
#define JITD_BENCH_H

/*
 * jitbench: the measuring half of scripts/bench. Each subcommand does one bounded job inside
 * the namespace the script runs it in and prints "key=value" lines that the script puts into
 * its Markdown table. A subcommand exits 1 when something is functionally wrong (a grant
 * refused, an element missing in the kernel), so that `scripts/bench --tiny` fails in CI.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <openssl/ssl.h>

/* --- bench.c: time, statistics, small helpers ----------------------------------------------- */

uint64_t now_ns(void);
uint64_t cpu_ns(void);
int machine_ticks(uint64_t *busy, uint64_t *idle);
void sort_u64(uint64_t *v, size_t n);
/* Sorts v and prints PREFIX_n, PREFIX_p50_us, PREFIX_p99_us, PREFIX_max_us (nanoseconds in). */
void print_stats(const char *prefix, uint64_t *v, size_t n);
/* The sorted v's q-quantile (nearest rank), 0 when empty. */
uint64_t quantile(const uint64_t *sorted, size_t n, double q);
/* The address of source number idx: 10.0.0.0 + 2 * idx, so that no two are adjacent (jitd
 * merges adjacent ranges with the same expiry, which would hide a missing element). */
uint32_t source_addr(uint64_t idx);
/* What grant number idx adds to its phase's expiry (s): 0 to 590 in steps of 10, 60 grants a
 * cycle. With one expiry for all, the witness could not tell an element that carries another
 * grant's timeout; 10 s apart, any grant within 59 of it is further off than its tolerance. */
int64_t exp_offset(uint64_t idx);
void format_addr(uint32_t addr, char *buf, size_t len);
/* Reads a whole file (or stdin for "-") into a NUL-terminated malloc'ed buffer; NULL on error. */
char *read_all(const char *path, size_t *len);

/* --- client.c: the three ways a controller reaches jitd ------------------------------------- */

enum via_kind { VIA_CTL, VIA_HTTP, VIA_HTTPS };

struct via {
	enum via_kind kind;
	char path[108];		/* VIA_CTL: the control socket */
	char host[64];		/* VIA_HTTP(S): IPv4 address */
	uint16_t port;
	SSL_CTX *tls;		/* VIA_HTTPS: client certificate, trusts --ca */
};

/* A keep-alive connection (HTTP/HTTPS); the control socket takes one request per connection. */
struct conn {
	const struct via *via;
	int fd;
	SSL *ssl;
	char *buf;		/* bytes read and not yet consumed */
	size_t len, cap;
	unsigned reconnects;
};

/* Parses "ctl:PATH", "http://A:P" or "https://A:P". 0 or -EINVAL. */
int via_parse(const char *s, struct via *v);
/* Client certificate, key and the CA that signed jitd's certificate. 0 or -EINVAL. */
int via_tls(struct via *v, const char *cert, const char *key, const char *ca);
void conn_init(struct conn *c, const struct via *v);
void conn_close(struct conn *c);
/*
 * One control-socket request line; *reply gets the malloc'ed reply line. The connection is
 * opened and closed here (the protocol is one request per connection). 0 or -errno.
 */
int ctl_call(const struct via *v, const char *request, char **reply);
/*
 * One HTTP/1.1 request on a keep-alive connection, reconnecting once when the server closed
 * an idle one. *status and a malloc'ed *body (may be NULL). 0 or -errno.
 */
int http_call(struct conn *c, const char *method, const char *path, const char *ctype,
	const char *body, size_t body_len, int *status, char **resp);

/* --- load.c: signing, verifying in-process and submitting grants, revoking, /metrics -------- */

int cmd_submit(int argc, char **argv);
int cmd_revoke(int argc, char **argv);
int cmd_verifyrate(int argc, char **argv);
int cmd_metrics(int argc, char **argv);
int cmd_histdiff(int argc, char **argv);

/* --- probe.c: kernel witness, packets, the one-process-per-grant baseline ------------------ */

int cmd_verify(int argc, char **argv);
int cmd_waitsock(int argc, char **argv);
int cmd_listen(int argc, char **argv);
int cmd_connrate(int argc, char **argv);
int cmd_nftloop(int argc, char **argv);
int cmd_stats(int argc, char **argv);

/* --- disk.c: what a durable append costs on this file system -------------------------------- */

int cmd_fsync(int argc, char **argv);

/* --- serve.c: the ceiling of one grant per request (HTTP and verification, nothing else) --- */

int cmd_serve(int argc, char **argv);

#endif
