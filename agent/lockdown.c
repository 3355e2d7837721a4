#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "agent/audit.h"
#include "agent/lockdown.h"
#include "agent/netnslock.h"
#include "agent/nft.h"
#include "agent/ruleset.h"
#include "agent/statefile.h"
#include "agent/statetrust.h"
#include "common/config.h"
#include "common/err.h"
#include "common/log.h"

#define LOCKDOWN_TMP LOCKDOWN_FILE ".tmp"

int lockdown_save(const char *state_dir, const char *raw, size_t len)
{
	int dfd, fd = -1, ret = 0;
	size_t off = 0;
	ssize_t n;

	if ((dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0)
		return -errno;
	if ((fd = statefile_create(dfd, LOCKDOWN_TMP)) < 0) {
		ret = fd;
		goto out;
	}
	while (off < len) {
		if ((n = write(fd, raw + off, len - off)) < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			ret = -errno;
			goto out;
		}
		off += (size_t)n;
	}
	/* Renamed only once durable, and the name made durable: a crash leaves the old record. */
	if (fsync(fd) < 0 || renameat(dfd, LOCKDOWN_TMP, dfd, LOCKDOWN_FILE) < 0 ||
		fsync(dfd) < 0)
		ret = -errno;
out:
	if (fd >= 0)
		close(fd);
	if (ret && fd >= 0)
		(void)unlinkat(dfd, LOCKDOWN_TMP, 0);
	close(dfd);
	return ret;
}

/*
 * The directory, under store.c's lock: its descriptor, or -EBUSY while a jitd holds it (that
 * jitd runs: its trail and record are its own; in a directory others may read, anyone may
 * hold it: see lockdown_apply), or -errno. A file system that cannot lock a
 * directory is used all the same, as store.c does.
 */
static int lock_dir(const char *state_dir)
{
	int dfd = open(state_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);

	if (dfd < 0)
		return -errno;
	if (flock(dfd, LOCK_EX | LOCK_NB) < 0 && errno == EWOULDBLOCK) {
		close(dfd);
		return -EBUSY;
	}
	return dfd;
}

int lockdown_save_ahead(const char *state_dir, const char *raw, size_t len)
{
	int dfd, ret;

	/* Made as store_open makes it at the start; a jitd that uses it keeps its own record. */
	if (mkdir(state_dir, 0700) < 0 && errno != EEXIST)
		return -errno;
	if ((dfd = lock_dir(state_dir)) < 0)
		return dfd;
	ret = lockdown_save(state_dir, raw, len);
	close(dfd);
	return ret;
}

/*
 * The trail's last word was jitd's agent.stopped, "ports remain closed": the teardown that
 * opened them is root's act, and its line goes after it, under the same lock. Never rotated
 * here: the limits are the configuration's, which the teardown need not read, and a rotation
 * by other limits could remove files the configuration keeps. One line past them is rotated
 * at jitd's next write.
 */
static int teardown_note(const char *state_dir, const char *note, bool no_syslog)
{
	const struct audit_opts no_rotation = { .max_bytes = UINT64_MAX, .no_syslog = no_syslog };
	struct audit_rec rec = { .event = "agent.teardown", .message = note, .count = -1 };
	struct audit *a = NULL;
	char peer[64];
	int ret;

	mode_t mask;

	snprintf(peer, sizeof(peer), "uid=%u pid=%ld", (unsigned)getuid(), (long)getpid());
	rec.peer = peer;
	/* A trail made here (the file gone): the mode the packaged unit's UMask gives jitd's. */
	mask = umask(0077);
	if (!(ret = audit_open(state_dir, &no_rotation, &a)))
		ret = audit_log(a, &rec);
	umask(mask);
	audit_close(&a);
	return ret;
}

int lockdown_forget(const char *state_dir, const char *note, bool no_syslog, int *noted)
{
	int dfd, ret = 1;

	if ((dfd = lock_dir(state_dir)) < 0) {
		if (note)
			*noted = dfd;
		return dfd == -ENOENT ? 0 : dfd;
	}
	if (unlinkat(dfd, LOCKDOWN_FILE, 0) < 0)
		ret = errno == ENOENT ? 0 : -errno;
	else if (fsync(dfd) < 0)
		ret = -errno;
	if (note)
		*noted = teardown_note(state_dir, note, no_syslog);
	close(dfd);
	return ret;
}

/*
 * One transaction, which first deletes the table found when replace; an owned table, as the
 * agent makes it, needs Linux 6.9's PERSIST to stay. *unanswered: it failed without the
 * kernel's verdict, and may have been applied.
 */
static int build(struct nft *nft, const struct config *cfg, bool replace,
	char kerr[static NFT_ERRLEN], bool *unanswered)
{
	uint32_t flags = cfg->table_owner ? RULESET_TABLE_F_OWNER | RULESET_TABLE_F_PERSIST : 0;
	struct nft_batch *b = NULL;
	int ret;

	*unanswered = false;
	for (;;) {
		if ((ret = nft_batch_new(nft, &b)) || (replace && (ret = ruleset_delete(b))) ||
			(ret = ruleset_build_new(b, cfg, flags)))
			break;
		/* Without PERSIST the kernel would delete an owned table as this process exits. */
		ret = nft_batch_commit(b, kerr);
		*unanswered = ret && nft_batch_unanswered(b);
		if (ret != -EOPNOTSUPP || !flags)
			break;
		flags = 0;
		kerr[0] = '\0';
		nft_batch_free(b);
		b = NULL;
	}
	nft_batch_free(b);
	return ret;
}

/*
 * Into trail, the caller's open trail of state_dir (it holds the directory), or else into the
 * directory's, unless another process holds its lock (lock_dir): a jitd, which writes that
 * trail itself, or in a directory others may read anyone, and then the line is not written.
 */
static void record(const char *state_dir, struct audit *trail, const struct config *cfg,
	const char *why, const char *what)
{
	const struct audit_opts o = audit_opts_of(cfg);
	struct audit *a = NULL;
	struct audit_rec rec = { .event = "agent.lockdown", .count = -1 };
	char text[2048];
	int dfd = -1, ret;

	snprintf(text, sizeof(text), "%s; %s", why, what);
	rec.message = text;
	/*
	 * Synced here: the caller exits next, and its trail may defer syncs to a group's end
	 * (audit_sync: this line's, not an earlier loss audit_sync_now would repeat).
	 */
	if (trail) {
		if (!(ret = audit_log(trail, &rec)))
			ret = audit_sync(trail);
	} else if ((ret = dfd = lock_dir(state_dir)) >= 0 &&
		!(ret = audit_open(state_dir, &o, &a))) {
		ret = audit_log(a, &rec);
	}
	if (ret < 0)
		log_warn("audit: cannot record agent.lockdown in %s: %s", state_dir,
			strerror(-ret));
	audit_close(&a);
	if (dfd >= 0)
		close(dfd);
}

int lockdown_apply(const char *state_dir, const struct config *now, const char *why,
	struct audit *trail, char *msg, size_t len)
{
	char path[PATH_MAX], kerr[NFT_ERRLEN] = "", targets[48] = "", from[PATH_MAX + 64];
	char refusals[2 * (NFT_ERRLEN + PATH_MAX + 64)] = "";
	struct jit_error jerr = { 0 };
	struct config *rec = NULL;
	const struct config *cfg = NULL;
	struct nft *nft = NULL;
	bool unanswered = false, again = false, replaced = false, untrusted;
	struct netnslock_who who;
	char pid[32];
	int ret, refused, state, prev;

	if ((size_t)snprintf(path, sizeof(path), "%s/%s", state_dir, LOCKDOWN_FILE) >=
		sizeof(path)) {
		snprintf(msg, len, "%s/%s: %s", state_dir, LOCKDOWN_FILE, strerror(ENAMETOOLONG));
		return -ENAMETOOLONG;
	}
	/*
	 * Another jitd holds the state directory (store_open's lock): the table, or the lack of
	 * one, is that jitd's to mind. A caller with the trail open holds the lock itself. In a
	 * directory others may write, or read, or another user owns (agent/statetrust.h),
	 * whoever holds it need not be a jitd.
	 */
	untrusted = statetrust_dir(state_dir, kerr, sizeof(kerr)) == -EPERM;
	if (!trail && !untrusted && !statetrust_dir_readable(state_dir, kerr, sizeof(kerr))) {
		if ((ret = lock_dir(state_dir)) == -EBUSY) {
			snprintf(msg, len, "a running jitd uses %s: nothing made", state_dir);
			return LOCKDOWN_HELD;
		}
		if (ret >= 0)
			close(ret);
	} else if (!trail && !netnslock_holder(&who) && who.held && who.jitd && who.pid > 0 &&
		who.pid != getpid()) {
		/*
		 * There, the namespace's lock (agent/netnslock.h), which no other user can pass
		 * for a jitd's: its table, unmarked on a kernel before 5.10, is its own to mind.
		 * Its pid must be known: a failing start still holds the lock itself, and anyone
		 * may fill its backlog so that it cannot say whose it is (pid 0).
		 */
		snprintf(msg, len, "a running jitd (%s) holds this network namespace's lock: "
			"nothing made", netnslock_pid_text(&who, pid, sizeof(pid)));
		return LOCKDOWN_HELD;
	}
	if ((ret = nft_open(&nft)) || (ret = ruleset_table_state(nft)) < 0) {
		snprintf(msg, len, "cannot read the kernel's tables: %s", strerror(-ret));
		goto out;
	}
	/*
	 * A table a jitd made since the boot (a restart: its grants keep running out there) is
	 * left as it is, whatever the record. One without jitd's mark is another program's: a
	 * saved ruleset loaded at the boot brings back the grants and ports of the day it was
	 * saved, which this start cannot check, so it is replaced, in the same transaction that
	 * builds the deny table.
	 */
	if ((state = ret) == RULESET_TABLE_JITDS) {
		snprintf(msg, len, "table inet jitd is in the kernel: left as it is");
		ret = LOCKDOWN_TABLE_THERE;
		goto out;
	}
	/*
	 * The record is what says jitd served here, so it must be read whatever is built: one
	 * that cannot be (damaged, refused, a directory jitd cannot search) says nothing. But in
	 * a directory others may write, or another user owns (a start refuses it:
	 * agent/statetrust.h), they may have taken it away: the file just read decides alone.
	 */
	untrusted = untrusted && now;
	if (access(path, F_OK) < 0 && errno == ENOENT) {
		if (!untrusted) {
			snprintf(msg, len, "no configuration was served here before (no %s): no "
				"table made, the protected ports are as the host's ruleset leaves "
				"them", path);
			ret = LOCKDOWN_NO_RECORD;
			goto out;
		}
	} else if (config_load_record(path, &rec, &jerr) && !untrusted) {
		snprintf(msg, len, "the last configuration served cannot be read, no table made: "
			"%s", jerr.msg);
		ret = -EINVAL;
		goto out;
	}
	/*
	 * The file just read is the policy wanted now; the record, what the kernel took last,
	 * stands in when that did not load or the kernel refuses it.
	 */
	for (int i = now ? 0 : 1; state != RULESET_TABLE_JITDS && i < 2 && (i ? rec : now); i++) {
		cfg = i ? rec : now;
		if (i)
			snprintf(from, sizeof(from), "%s, the configuration last served", path);
		else
			snprintf(from, sizeof(from), "the configuration file just read");
		kerr[0] = '\0';
		if (!(ret = build(nft, cfg, state == RULESET_TABLE_OTHER, kerr, &unanswered))) {
			replaced = state == RULESET_TABLE_OTHER;
			break;
		}
		/*
		 * EEXIST, or EPERM when owned: another made it since it was looked for, or owns the
		 * one found. After a commit whose answer was lost, the table found is this one's.
		 */
		refused = ret;
		if ((ret = ruleset_table_state(nft)) < 0)
			break;
		prev = state;
		if ((state = ret) == RULESET_TABLE_JITDS) {
			/* An answer lost, the commit applied: what it did is what was sent. */
			replaced = unanswered && prev == RULESET_TABLE_OTHER;
			break;
		}
		/*
		 * Another's table came or went meanwhile (EEXIST, ENOENT): the same policy once
		 * more, as the state is now, rather than the record's for a refusal it was not.
		 */
		if (state != prev && !again) {
			again = true;
			i--;
			continue;
		}
		snprintf(refusals + strlen(refusals), sizeof(refusals) - strlen(refusals),
			"%s%s: %s", refusals[0] ? "; " : "", from,
			kerr[0] ? kerr : strerror(-refused));
		ret = -EIO;
	}
	if (state == RULESET_TABLE_JITDS && !unanswered) {
		snprintf(msg, len, "table inet jitd is in the kernel: left as it is");
		ret = LOCKDOWN_TABLE_THERE;
		goto out;
	}
	if (ret && state != RULESET_TABLE_JITDS) {
		/* -EIO is the refusals'; anything else, the tables could not be read after one. */
		if (ret != -EIO || !refusals[0])
			snprintf(refusals + strlen(refusals), sizeof(refusals) - strlen(refusals),
				"%s%sthe kernel's tables cannot be read: %s",
				refusals[0] ? "; " : "", unanswered ? "its answer was lost, and " : "",
				strerror(-ret));
		snprintf(msg, len, "%s: %s", state == RULESET_TABLE_OTHER ? "a table inet jitd no "
			"jitd made (no jitd mark) is in the kernel, and could not be replaced" :
			"no table made", refusals);
		goto out;
	}
	if (cfg->mode & CONFIG_MODE_GATEWAY)
		snprintf(targets, sizeof(targets), " and %zu forwarded target(s)", cfg->n_targets);
	snprintf(msg, len, "table inet jitd %s from %s%s: %zu protected port(s)%s closed; no "
		"grants until a start restores them", replaced ? "that no jitd "
		"made (no jitd mark: a saved ruleset loaded at the boot?) replaced by one built" :
		"built", from, unanswered ? " (the kernel's answer was lost, and the table is "
		"there)" : "", cfg->n_ports, targets);
	/* The trail's settings (audit.syslog too): the file's, the latest, when it loaded. */
	if (why)
		record(state_dir, trail, now ? now : cfg, why, msg);
	ret = LOCKDOWN_BUILT;
out:
	nft_close(&nft);
	config_free(rec);
	return ret;
}
