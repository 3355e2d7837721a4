#include <stddef.h>
#include <stdint.h>

#include "common/config.h"
#include "common/err.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct jit_error e = { 0 };
	struct config *c = NULL;
	int ret = config_parse((const char *)data, size, &c, &e);

	/*
	 * Beyond memory safety: success hands back a usable config (something to guard: ports,
	 * or targets in gateway mode), failure none and a reason.
	 */
	if (ret == 0 && (!c || (!c->n_ports && !c->n_targets) || !c->host_id || !c->keys_dir ||
		((c->mode & CONFIG_MODE_GATEWAY) && !c->n_targets)))
		__builtin_trap();
	if (ret != 0 && (c || ret != e.code || !e.msg[0] ||
		(ret != JIT_ERR_BAD_CONFIG && ret != JIT_ERR_INTERNAL)))
		__builtin_trap();
	for (size_t i = 0; c && i < c->n_ports; i++)
		if (config_find_port(c, c->ports[i].port) != &c->ports[i])
			__builtin_trap();
	config_free(c);
	return 0;
}
