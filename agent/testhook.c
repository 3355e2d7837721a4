#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "agent/testhook.h"

bool testhook_exists(const char *env)
{
	const char *path = getenv(env);

	return path && access(path, F_OK) == 0;
}

long long testhook_number(const char *env, bool consume, long long dflt)
{
	const char *path = getenv(env);
	long long n;
	FILE *f;

	if (!path || !(f = fopen(path, "r")))
		return dflt;
	if (fscanf(f, "%lld", &n) != 1)
		n = dflt;
	fclose(f);
	if (consume)
		(void)unlink(path);
	return n;
}
