/* placeholder: being written */
#include <stddef.h>

#include "agent/http.h"

int http_open(struct event_base *base, const struct config *cfg, struct enforce *enf,
	struct http **out)
{
	*out = NULL;
	return 0;
}

void http_close(struct http **h)
{
}
