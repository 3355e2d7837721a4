#ifndef JITD_COMMON_B64URL_H
#define JITD_COMMON_B64URL_H

#include <stddef.h>

/*
 * Strict base64url (RFC 7515 section 2, RFC 4648 section 5): no padding, no whitespace, only the
 * URL-safe alphabet, and unused trailing bits must be zero so every value has one spelling.
 */

/* Bytes needed to decode len input characters (upper bound). */
size_t b64url_decoded_max(size_t len);
/*
 * Decodes in[0..len) into out (capacity cap). Returns 0 and sets *outlen, or -EINVAL for any
 * non-canonical or invalid input, -ENOSPC if cap is too small; on failure out holds nothing
 * meaningful.
 */
int b64url_decode(const char *in, size_t len, unsigned char *out, size_t cap, size_t *outlen);
/* Encoded length for len bytes, without the NUL. */
size_t b64url_encoded_len(size_t len);
/* Encodes in into out, which must hold b64url_encoded_len(len) + 1 bytes; NUL-terminates. */
void b64url_encode(const unsigned char *in, size_t len, char *out);

#endif
