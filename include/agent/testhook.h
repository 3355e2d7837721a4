#ifndef JITD_AGENT_TESTHOOK_H
#define JITD_AGENT_TESTHOOK_H

#include <stdbool.h>

/*
 * Test builds only (-DJITD_TEST_HOOKS=ON; never in packages; agent/testhook.c is built only
 * then): an end-to-end test steers jitd through files whose paths it puts in jitd's
 * environment, to reach what it cannot cause for real (a suspend, a failing disk, lost events).
 */

/* Whether the file that $env names exists. */
bool testhook_exists(const char *env);

/*
 * The number the file that $env names holds; dflt when there is no such file, or it holds no
 * number. consume: a file that was there is removed once read, so that it acts once.
 */
long long testhook_number(const char *env, bool consume, long long dflt);

#endif
