#ifndef JITD_AGENT_LOCKDOWN_H
#define JITD_AGENT_LOCKDOWN_H

#include <stdbool.h>
#include <stddef.h>

struct audit;
struct config;

/*
 * Failing closed when jitd cannot start. The kernel forgets table inet jitd at a reboot, and a
 * jitd that then refuses its configuration (a typo a refused reload kept, a file an upgraded
 * binary reads differently) or cannot read its keys, state or TLS files would leave the
 * protected ports as the host's own ruleset leaves them: open. So every start that served, and
 * every reload applied, keeps the configuration it enforced, byte for byte, as
 * STATE_DIR/lockdown.json; a start that fails, when the kernel holds no table inet jitd a jitd
 * made, builds the deny table (protected ports, targets and always_allow sources; no grants) of
 * the file it read, if that loaded, or else of the record, and exits as it would have. A table
 * a jitd made since the boot (a restart: its grants keep running out in the kernel) is left
 * alone; one without jitd's mark (ruleset_table_state: a saved ruleset loaded at the boot, with
 * the grants of the day it was saved) is replaced in the same transaction. A host where jitd
 * never served (no record, or one that cannot be read) gets none: no agent that never served
 * closes a port; but in a state directory others may write, or another user owns, who may
 * have taken the record away, the file read decides alone.
 */
#define LOCKDOWN_FILE "lockdown.json"

/* Keeps raw (a configuration just enforced) as state_dir's record: written, synced, renamed. */
int lockdown_save(const char *state_dir, const char *raw, size_t len);
/*
 * The same in the state_dir a reload applied moves to at the next start (made 0700 if
 * missing), so that a start that fails there after a boot finds a record: 0, -EBUSY while
 * another jitd holds that directory, or -errno.
 */
int lockdown_save_ahead(const char *state_dir, const char *raw, size_t len);
/*
 * Removes state_dir's record, durably (jitctl teardown: jitd is to close nothing any more), and
 * with note (the table was deleted; NULL: it was not there) audits agent.teardown with it into
 * the directory's trail (copied to syslog unless no_syslog), naming the caller's uid and pid:
 * *noted 0, or -errno, the directory's too (left as it is when nothing was to be audited).
 * 1 removed, 0 there was none, -EBUSY a running jitd holds the directory, or -errno; a
 * directory that does not exist holds neither record nor trail (0).
 */
int lockdown_forget(const char *state_dir, const char *note, bool no_syslog, int *noted);

enum lockdown_result {
	LOCKDOWN_BUILT = 1,	/* the table is in the kernel now */
	LOCKDOWN_NO_RECORD = 2, /* state_dir holds none: jitd never served there */
	LOCKDOWN_TABLE_THERE = 3, /* left as it is */
	LOCKDOWN_HELD = 4,	/* another jitd holds state_dir, or the namespace: nothing done */
};
/*
 * When state_dir holds a record it can read (or is a directory others may write, or another
 * user owns, who may have taken the record away, and the file loaded), the kernel no table a
 * jitd made, and no other jitd the directory (unless the caller holds it: trail; in a
 * directory others may write or read, or another user owns, whose lock another may hold, the
 * network namespace's lock instead, held by a jitd whose pid is known and not the caller's):
 * builds the
 * table of now (the file the start loaded; NULL when it did not) or else, when there is none or
 * the kernel refuses it, of the record, each in one transaction (deleting the unmarked table
 * found first) that fails if a table appeared meanwhile,
 * and audits it there with why (the start's failure; NULL: not audited): into trail when the
 * caller holds the directory and has its trail open, else when no other jitd holds it. A
 * LOCKDOWN_* result, or -errno; msg says what happened, for the log.
 */
int lockdown_apply(const char *state_dir, const struct config *now, const char *why,
	struct audit *trail, char *msg, size_t len);

#endif
