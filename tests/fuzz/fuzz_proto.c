#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "common/err.h"
#include "common/proto.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/*
 * The control socket's framing: whatever a local client sends is either refused with a code, or
 * a JSON object that encodes to exactly one line and decodes back to the same object.
 */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jit_error e = { 0 };
	json_t *v = NULL, *w = NULL;
	char *line = NULL;
	size_t n;

	if (proto_decode((const char *)data, size, &v, &e)) {
		if (e.code >= 0 || !e.msg[0] || v)
			__builtin_trap();
		return 0;
	}
	if (!json_is_object(v) || !(line = proto_encode(v)))
		__builtin_trap();
	n = strlen(line);
	if (n < 2 || line[n - 1] != '\n' || memchr(line, '\n', n - 1))
		__builtin_trap();
	if (n - 1 <= PROTO_MAX_MESSAGE &&
		(proto_decode(line, n - 1, &w, &e) || !json_equal(v, w)))
		__builtin_trap();
	free(line);
	json_decref(v);
	json_decref(w);
	return 0;
}
