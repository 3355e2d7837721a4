#include <err.h>
#include <limits.h>
#include <stdarg.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <malloc.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#include "agent/activity.h"
#include "agent/audit.h"
#include "agent/conntrack.h"
#include "agent/ctl.h"
#include "agent/enforce.h"
#include "agent/fdbudget.h"
#include "agent/http.h"
#include "agent/lockdown.h"
#include "agent/netnslock.h"
#include "agent/nft.h"
#include "agent/replay.h"
#include "agent/sdnotify.h"
#include "agent/statetrust.h"
#include "agent/status.h"
#include "agent/store.h"
#include "agent/tls.h"
#include "agent/watch.h"
#include "common/cliopt.h"
#include "common/config.h"
#include "common/err.h"
#include "common/keys.h"
#include "common/log.h"

/* How often jitd forgets grants the kernel has already expired. */
#define EXPIRE_INTERVAL_SEC 1
/*
 * Blocks from MMAP_THRESHOLD up are mapped on their own and given back when freed. glibc
 * otherwise raises the threshold to the largest such block freed (up to 32 MB): after the
 * first, a restore's transient arrays at 100,000 grants (4 MB of wanted ranges, qsort's copy
 * of them, the plan) came from the heap and their pages stayed with the agent while it
 * committed. Setting it stops that adjustment (a restore into an empty table peaked at 66 MB,
 * 60 MB with ruleset.c's ELEMS_CHUNK). It lies above the netlink batch's pages (agent/nft.c),
 * which every commit takes and gives back; TRIM_THRESHOLD keeps the heap's top from being
 * handed back and faulted in again at every commit (it cost 6-10% of the throughput).
 */
#define MMAP_THRESHOLD (512 * 1024)
#define TRIM_THRESHOLD (4 * 1024 * 1024)

struct opts {
	const char *config_path;
	bool check_only;
	bool lockdown_only;
	bool verbose;
};

static void usage(void)
{
	printf(
		"Usage: jitd [-c CONFIG] [--check-config | --lockdown] [-v] [--help] [--version]\n"
		"Just-in-time access agent: keeps management ports closed in nftables table\n"
		"'inet jitd' and opens them for signed, time-bounded grants.\n\n"
		"  -c, --config PATH   configuration file (default %s)\n"
		"  -t, --check-config  validate the configuration and exit\n"
		"      --lockdown      close the ports as a start that fails does, when the\n"
		"                      kernel holds no table a jitd made, and exit; under\n"
		"                      systemd only after a jitd killed by a signal (the unit\n"
		"                      runs it after every stop)\n"
		"  -v, --verbose       log debug messages\n"
		"  -h, --help          show this help\n"
		"  -V, --version       show the version\n",
		CONFIG_DEFAULT_PATH);
}

static void parse_opts(int argc, char **argv, struct opts *o)
{
	static const struct option longopts[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "check-config", no_argument, NULL, 't' },
		{ "lockdown", no_argument, NULL, 'L' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 },
	};
	int at, ch;

	o->config_path = CONFIG_DEFAULT_PATH;
	for (at = 1; (ch = getopt_long(argc, argv, ":c:tvhV", longopts, NULL)) != -1; at = optind) {
		switch (ch) {
		case 'c': o->config_path = optarg; break;
		case 't': o->check_only = true; break;
		case 'L': o->lockdown_only = true; break;
		case 'v': o->verbose = true; break;
		case 'h': usage(); exit(0);
		case 'V': printf("jitd %s\n", JITD_VERSION); exit(0);
		default: exit(cliopt_bad_option("jitd", ch, argv, at));
		}
	}
	if (optind != argc)
		exit(cliopt_usage_error("jitd", "unexpected argument '%s'", argv[optind]));
	if (o->check_only && o->lockdown_only)
		exit(cliopt_usage_error("jitd", "--check-config touches nothing, --lockdown the "
			"kernel: give one"));
}

static void jitd_signal_cb(evutil_socket_t sig, short what, void *arg)
{
	log_info("received %s, stopping (table inet jitd stays: ports remain closed)",
		strsignal((int)sig));
	event_base_loopexit(arg, NULL);
}

/* From the event loop itself: a wedged loop stops the pings and systemd restarts jitd. */
static void jitd_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)sdnotify_send("WATCHDOG=1");
}

static void jitd_reload_cb(evutil_socket_t sig, short what, void *arg)
{
	char msg[256];

	log_info("received SIGHUP: reloading the configuration");
	(void)enforce_reload(arg, msg, sizeof(msg));
}

static void jitd_expire_cb(evutil_socket_t fd, short what, void *arg)
{
	enforce_expire(arg);
	activity_settle(enforce_activity(arg), false);
}

/* Lifecycle events go to the audit trail too; audit_log leaves saying why to its caller. */
static void audit_agent(struct audit *a, const char *event, const char *message)
{
	const struct audit_rec rec = { .event = event, .message = message, .count = -1 };
	int ret;

	if ((ret = audit_log(a, &rec)))
		log_warn("audit: cannot record %s: %s", event, strerror(-ret));
}

/* ", 3 forwarded target(s)" in gateway mode; "" on a host, whose messages stay as they were. */
static const char *targets_note(const struct config *cfg, char *buf, size_t len)
{
	buf[0] = '\0';
	if (cfg->mode & CONFIG_MODE_GATEWAY)
		snprintf(buf, len, ", %zu forwarded target(s)", cfg->n_targets);
	return buf;
}

static void warn_stderr(void *path, const char *msg)
{
	fprintf(stderr, "jitd: %s: warning: %s\n", *(const char **)path, msg);
}

/* At a start, the journal says what --check-config would have warned of. */
static void warn_log(void *arg, const char *msg)
{
	(void)arg;
	log_warn("%s", msg);
}

/*
 * --check-config: what the start would refuse, found before it. Besides the file itself, the
 * controller endpoint's certificate, key and client CA are loaded (a key that does not match
 * its certificate fails here, before a package restarts the agent, not as it starts),
 * and the trusted keys are counted; a key "issuers" binds that cannot be used is warned of.
 * Exits 0 or 1.
 */
static int check_config(const struct config *cfg, const char *path)
{
	SSL_CTX *tls = NULL;
	/*
	 * As a start opens them, read and written: replay.db is appended to, and rewritten (renamed
	 * over, truncated), which an append-only file (chattr +a) refuses as O_RDWR does here.
	 */
	static const struct {
		const char *name;
		int flags;
	} restored[] = { { STORE_JOURNAL, O_RDWR }, { STORE_SNAPSHOT, O_RDONLY },
		{ REPLAY_FILE, O_RDWR } };
	char note[64], msg[PATH_MAX + 128];
	int64_t not_after;
	size_t keys, i;
	int err;

	if (cfg->listen.enabled && !cfg->listen.insecure_plaintext &&
		tls_server_ctx(&cfg->listen, &tls, msg, sizeof(msg))) {
		fprintf(stderr, "jitd: %s: listen: %s\n", path, msg);
		return 1;
	}
	/* A warning, not an error: the agent must start (its deny rules) whatever the certificate. */
	if (tls && !tls_not_after(tls, &not_after) &&
		tls_expiry_note(not_after, (int64_t)time(NULL), msg, sizeof(msg)))
		fprintf(stderr, "jitd: %s: listen: warning: %s (%s)\n", path, msg,
			cfg->listen.tls_cert);
	SSL_CTX_free(tls);
	for (size_t at = 0; config_warning(cfg, &at, msg, sizeof(msg));)
		fprintf(stderr, "jitd: %s: warning: %s\n", path, msg);
	/*
	 * A start refuses the directory and each of these files, or fails to open a file (an
	 * upgrade restarts on OK): a missing one is all that passes. A directory this process
	 * may not enter is left to the start, which may see another (PrivateTmp=).
	 */
	err = statetrust_dir(cfg->state_dir, msg, sizeof(msg));
	for (i = 0; !err && i < sizeof(restored) / sizeof(*restored); i++)
		err = statetrust_file(cfg->state_dir, restored[i].name, restored[i].flags, msg,
			sizeof(msg));
	if (err == -EPERM) {
		fprintf(stderr, "jitd: %s: state_dir: %s: whoever may write it could give "
			"themselves access (%s)\n", path, msg, i ? STATETRUST_FIX_FILE :
			STATETRUST_FIX_DIR);
		return 1;
	}
	if (err && (i || err != -EACCES)) {
		fprintf(stderr, "jitd: %s: state_dir: %s (a start fails on it, at once or at its "
			"first rewrite)\n", path, msg);
		return 1;
	}
	if (statetrust_dir_readable(cfg->state_dir, msg, sizeof(msg)))
		fprintf(stderr, "jitd: %s: state_dir: warning: %s\n", path, msg);
	keys = keys_survey(cfg, warn_stderr, &path);
	/* Stricter than a start (one with no records serves): a package's upgrade trusts this. */
	if ((err = keys_dir_errno(cfg->keys_dir))) {
		fprintf(stderr, "jitd: %s: keys_dir %s: %s: no key can be looked for there (a "
			"reload to it is refused while signed grants are active, and a start with "
			"recorded signed grants fails)\n", path, cfg->keys_dir, strerror(err));
		return 1;
	}
	printf("%s: configuration OK (%zu protected port(s)%s, %zu trusted key(s))\n", path,
		cfg->n_ports, targets_note(cfg, note, sizeof(note)), keys);
	return 0;
}

/* systemd's word for how the service ended (systemd.exec(5)), or NULL: shown, so only a word. */
static const char *service_word(const char *name)
{
	const char *v = getenv(name);
	size_t n = v ? strspn(v, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_")
		     : 0;

	return n && n <= 32 && !v[n] ? v : NULL;
}

/*
 * --lockdown: what a start that fails does to the kernel (agent/lockdown.h), alone. The unit
 * runs it after every stop: a jitd killed before its own failure path could run (a read fault
 * in a mapped state file is a SIGBUS; the OOM killer; any crash) leaves no table after a boot,
 * and the protected ports as the host's ruleset leaves them. A jitd that ended by itself (a
 * stop, a start that failed or found another jitd) did what it had to, and a table replaced
 * after every stop would end every grant on a kernel that keeps no mark: under systemd only a
 * jitd killed by a signal is followed (EXIT_CODE killed or dumped). 0, or 1 when the ports
 * could not be closed.
 */
static int lockdown_only(const struct opts *o)
{
	const char *result = service_word("SERVICE_RESULT"), *code = service_word("EXIT_CODE");
	const char *status = service_word("EXIT_STATUS");
	char dir[PATH_MAX], why[256], msg[2 * PATH_MAX + 256];
	struct jit_error jerr = { 0 };
	struct config *cfg = NULL;
	int ret;

	if (o->verbose)
		log_keep_debug();
	if (getenv("SERVICE_RESULT") &&
		(!code || (strcmp(code, "killed") && strcmp(code, "dumped")))) {
		warnx("lockdown: jitd ended by itself (systemd: %s, %s %s): nothing to do",
			result ? result : "?", code ? code : "?", status ? status : "?");
		return 0;
	}
	/* Refused, it is the record's turn, as in a start that fails. */
	if (config_load(o->config_path, &cfg, &jerr))
		warnx("%s", jerr.msg);
	if (cfg)
		snprintf(dir, sizeof(dir), "%s", cfg->state_dir);
	else
		config_state_dir_hint(o->config_path, dir, sizeof(dir), NULL);
	if (result)
		snprintf(why, sizeof(why), "jitd ended (systemd: %s%s%s%s%s) with no table a jitd "
			"made in the kernel", result, code ? ", " : "", code ? code : "",
			status ? " " : "", status ? status : "");
	else
		snprintf(why, sizeof(why), "jitd --lockdown found no table a jitd made in the "
			"kernel");
	ret = lockdown_apply(dir, cfg, why, NULL, msg, sizeof(msg));
	warnx("lockdown: %s", msg);
	config_free(cfg);
	return ret < 0 ? 1 : 0;
}

/* What a start that fails lets go of; each is NULL until opened. */
struct starting {
	const struct opts *opts;
	struct config **cfg;
	struct ctl **ctl;
	struct http **http;
	struct store **store;
	struct audit **audit;
	struct enforce **enf;
	/*
	 * The journal's audit lines were being put back into the trail: a line added after them
	 * would hide from the next start those already put back (audit_recover reads the end).
	 */
	const bool *trail_restoring;
};

/*
 * Every start that fails ends here, saying why. Its sockets go with it rather than leave files;
 * the state directory is let go (for the lockdown's audit line) unless the enforcer's threads
 * may use it (the line then goes into the trail still open), and then, with lock_down, the
 * ports fail closed: the deny table of the file read (or else of the last configuration
 * served), if the kernel holds none a jitd made (agent/lockdown.h). Once the enforcer is open
 * it holds the table.
 */
static void __attribute__((noreturn, format(printf, 3, 4)))
start_ends(const struct starting *s, bool lock_down, const char *fmt, ...)
{
	char why[1024], dir[PATH_MAX], msg[2 * PATH_MAX + 256];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	warnx("%s", why);
	/* A check that fails touches nothing. */
	if (s->opts->check_only)
		exit(1);
	http_close(s->http);
	ctl_close(s->ctl);
	if (!*s->enf) {
		audit_close(s->audit);
		store_close(s->store);
	}
	if (*s->cfg)
		snprintf(dir, sizeof(dir), "%s", (*s->cfg)->state_dir);
	else
		config_state_dir_hint(s->opts->config_path, dir, sizeof(dir), NULL);
	if (lock_down) {
		(void)lockdown_apply(dir, *s->cfg, *s->trail_restoring ? NULL : why,
			*s->enf ? *s->audit : NULL, msg, sizeof(msg));
		warnx("lockdown: %s", msg);
	}
	exit(1);
}

#define start_failed(s, ...) start_ends((s), true, __VA_ARGS__)
/*
 * Another jitd holds what this one needs (its control socket's lock, the state directory, the
 * network namespace's lock): the table is that one's, and nothing of the kernel is touched.
 */
#define start_taken(s, ...) start_ends((s), false, __VA_ARGS__)

/*
 * The audit lines of the last grants before a crash may be only in the journal, which was made
 * durable first (agent/store.h, notes): they go back into the trail before anything else does.
 */
static int recover_audit(struct store *store, struct audit *audit)
{
	const struct store_note *v;
	size_t n, restored;
	int ret;

	store_notes(store, &v, &n);
	if ((ret = audit_recover(audit, v, n, &restored)))
		return ret;
	if (restored)
		log_warn("audit: %zu record(s) a crash kept out of the trail restored from the "
			"journal", restored);
	return store_notes_done(store);
}

/*
 * With one grant per HTTP request, libevent's evhttp turns reading and writing on and off four
 * times a request, each an epoll_ctl. The changelist backend folds what one pass of the loop
 * changes into at most one call per descriptor (three a request instead of four, measured; a
 * system call costs more than a microsecond on a virtual machine). Its known flaw, descriptors
 * cloned with dup() registered side by side, cannot arise: jitd registers no clone.
 */
static struct event_base *loop_new(void)
{
	struct event_config *cfg = event_config_new();
	struct event_base *base = NULL;

	if (!cfg)
		return NULL;
	if (!event_config_set_flag(cfg, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST))
		base = event_base_new_with_config(cfg);
	event_config_free(cfg);
	return base;
}

int main(int argc, char **argv)
{
	struct timeval tick = { EXPIRE_INTERVAL_SEC, 0 };
	struct event *sigterm, *sigint, *sighup, *expire, *watchdog = NULL;
	sigset_t hup;
	struct timeval wd_tick;
	uint64_t wd_usec;
	struct enforce_deps deps = { 0 };
	struct audit_opts aopts;
	struct jit_error jerr = { 0 };
	struct activity *activity = NULL;
	struct conntrack *ct = NULL;
	struct replay *replay = NULL;
	struct config *cfg = NULL;
	char *cfg_raw = NULL;
	size_t cfg_raw_len = 0;
	struct enforce *enf = NULL;
	struct store *store = NULL;
	struct netnslock *nslock = NULL;
	struct netnslock_who holder;
	struct audit *audit = NULL;
	struct event_base *base;
	char note[64];
	struct ctl *ctl = NULL;
	struct http *http = NULL;
	struct watch *watch = NULL;
	struct nft *nft = NULL;
	struct opts o = { 0 };
	bool trail_restoring = false;
	const struct starting start = { .opts = &o, .cfg = &cfg, .ctl = &ctl, .http = &http,
		.store = &store, .audit = &audit, .enf = &enf,
		.trail_restoring = &trail_restoring };
	char kerr[256], msg[512], why[PATH_MAX + 256] = "";
	int64_t now;
	int ret, status = 0;

	(void)mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD);
	(void)mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD);
	parse_opts(argc, argv, &o);
	if (o.lockdown_only)
		return lockdown_only(&o);
	/*
	 * A reload request before the loop can serve it must not kill the agent (the default),
	 * nor a start that fails before it has closed the ports, nor be lost: the file may change
	 * after it is read below. Blocked, it waits for the loop's handler; the threads started
	 * meanwhile inherit the mask and never take it.
	 */
	sigemptyset(&hup);
	sigaddset(&hup, SIGHUP);
	(void)pthread_sigmask(SIG_BLOCK, &hup, NULL);
	if (config_load_raw(o.config_path, &cfg, &cfg_raw, &cfg_raw_len, &jerr))
		start_failed(&start, "%s", jerr.msg);
	if (o.verbose)
		log_keep_debug();
	log_set_level(cfg->log_level);
	if (fdbudget_check(cfg, cfg->control_connections, msg, sizeof(msg)))
		start_failed(&start, "%s", msg);
	if (o.check_only) {
		ret = check_config(cfg, o.config_path);
		free(cfg_raw);
		config_free(cfg);
		return ret;
	}
	for (size_t at = 0; config_warning(cfg, &at, msg, sizeof(msg));)
		log_warn("%s: %s", o.config_path, msg);
	(void)keys_survey(cfg, warn_log, NULL);
	/* A client that goes away mid-reply must not kill the agent. */
	signal(SIGPIPE, SIG_IGN);
	now = enforce_now_ms() / 1000;
	if (!(base = loop_new()))
		start_failed(&start, "cannot create the event loop");
	/*
	 * Every socket first (bound, not yet listened on): one that cannot be had, or another
	 * jitd holding the control socket's lock, stops the start before any state is touched.
	 */
	if ((ret = ctl_open(base, cfg, &ctl)) == -EADDRINUSE)
		start_taken(&start, "cannot listen on %s: another jitd runs there (it listens, or "
			"holds its .lock)", cfg->control_socket);
	if (ret)
		start_failed(&start, "cannot listen on %s: %s", cfg->control_socket,
			strerror(-ret));
	if ((ret = http_open(base, cfg, &http, msg, sizeof(msg))))
		start_failed(&start, "cannot open the controller endpoint on %s:%u: %s",
			cfg->listen.host, (unsigned)cfg->listen.port, msg);
	if ((ret = nft_open(&nft)))
		start_failed(&start, "cannot open the nf_tables netlink socket: %s",
			strerror(-ret));
	/* A lock whoever may read the directory may hold says nothing (agent/statetrust.h). */
	if ((ret = store_open(cfg->state_dir, &store, why, sizeof(why))) == -EBUSY &&
		statetrust_dir_readable(cfg->state_dir, msg, sizeof(msg)))
		start_failed(&start, "cannot open state directory %s: its lock is held, by another "
			"jitd or by anyone: %s", cfg->state_dir, msg);
	if (ret == -EBUSY)
		start_taken(&start, "cannot open state directory %s: another jitd uses it",
			cfg->state_dir);
	if (ret)
		start_failed(&start, "cannot open state directory %s: %s", cfg->state_dir,
			why[0] ? why : strerror(-ret));
	/* A jitd with its own socket and state would still share the table: one per namespace. */
	if ((ret = netnslock_take(base, NETNSLOCK_RETRY_SEC, &nslock, &holder)) == -EADDRINUSE)
		start_taken(&start, "another jitd (%s) runs in this network namespace, and "
			"table inet jitd is the namespace's: stop it first",
			netnslock_pid_text(&holder, note, sizeof(note)));
	if (ret)
		start_failed(&start, "cannot take the network namespace's lock (@%s): %s",
			NETNSLOCK_NAME, strerror(-ret));
	if (holder.held)
		log_warn("the network namespace's lock (@%s) is held by %s (%s): ignored, so a "
			 "second jitd here would not be stopped until that process lets go (asked "
			 "every %d s)", NETNSLOCK_NAME, holder.unsure ?
			 "a process whose user this kernel cannot tell" :
			 "a process of a user other than root and jitd's own",
			 netnslock_pid_text(&holder, note, sizeof(note)), NETNSLOCK_RETRY_SEC);
	if ((ret = replay_open(cfg->state_dir, cfg->replay_cache_max, now, &replay, why,
		sizeof(why))))
		start_failed(&start, "cannot open the replay cache in %s: %s", cfg->state_dir,
			why[0] ? why : strerror(-ret));
	aopts = audit_opts_of(cfg);
	if ((ret = audit_open(cfg->state_dir, &aopts, &audit)))
		start_failed(&start, "cannot open the audit trail in %s: %s", cfg->state_dir,
			strerror(-ret));
	trail_restoring = true;
	if ((ret = recover_audit(store, audit)))
		start_failed(&start, "cannot restore the audit trail in %s from the journal, "
			"or then replace a damaged snapshot: %s", cfg->state_dir, strerror(-ret));
	trail_restoring = false;
	if ((ret = activity_new(&activity)))
		start_failed(&start, "cannot keep activity: %s", strerror(-ret));
	/* Without conntrack jitd still enforces; it cannot count or cut flows. */
	if ((ret = conntrack_open(&ct)))
		log_warn("conntrack unavailable (%s): flows are not counted and cannot be cut",
			strerror(-ret));
	snprintf(msg, sizeof(msg), "%s: %zu protected port(s)%s", o.config_path, cfg->n_ports,
		targets_note(cfg, note, sizeof(note)));
	audit_agent(audit, "config.loaded", msg);

	deps = (struct enforce_deps){ .cfg = cfg, .config_path = o.config_path, .nft = nft,
		.store = store, .replay = replay, .audit = audit, .activity = activity, .ct = ct,
		.base = base };
	if ((ret = enforce_open(&deps, &enf, kerr, sizeof(kerr))))
		start_failed(&start, "cannot start enforcing: %s",
			kerr[0] ? kerr : strerror(-ret));
	/* What a start that fails at the next boot closes the ports with (agent/lockdown.h). */
	if ((ret = lockdown_save(cfg->state_dir, cfg_raw, cfg_raw_len)))
		log_err("cannot keep the configuration in %s/%s, which a start that fails would "
			"close the ports with: %s", cfg->state_dir, LOCKDOWN_FILE, strerror(-ret));
	free(cfg_raw);
	cfg_raw = NULL;
	/* Before anything can be granted: from here on, whoever touches the table is undone. */
	if ((ret = watch_open(base, cfg, enf, &watch)))
		start_failed(&start, "cannot watch nftables events: %s", strerror(-ret));
	if ((ret = ctl_attach(ctl, enf)))
		start_failed(&start, "cannot listen on %s: %s", cfg->control_socket,
			strerror(-ret));
	if ((ret = http_attach(http, enf, msg, sizeof(msg))))
		start_failed(&start, "cannot listen on the controller endpoint %s:%u: %s",
			cfg->listen.host, (unsigned)cfg->listen.port, msg);

	sigterm = evsignal_new(base, SIGTERM, jitd_signal_cb, base);
	sigint = evsignal_new(base, SIGINT, jitd_signal_cb, base);
	sighup = evsignal_new(base, SIGHUP, jitd_reload_cb, enf);
	expire = event_new(base, -1, EV_PERSIST, jitd_expire_cb, enf);
	if (!sigterm || !sigint || !sighup || !expire || evsignal_add(sigterm, NULL) ||
		evsignal_add(sigint, NULL) || evsignal_add(sighup, NULL) || event_add(expire, &tick))
		start_failed(&start, "cannot register events");
	(void)pthread_sigmask(SIG_UNBLOCK, &hup, NULL);
	if ((wd_usec = sdnotify_watchdog_usec())) {
		/* Twice per interval, as sd_watchdog_enabled(3) advises; a zero tick would spin. */
		if (wd_usec < 2000)
			wd_usec = 2000;
		wd_tick = (struct timeval){ (time_t)(wd_usec / 2 / 1000000),
			(suseconds_t)(wd_usec / 2 % 1000000) };
		if (!(watchdog = event_new(base, -1, EV_PERSIST, jitd_watchdog_cb, NULL)) ||
			event_add(watchdog, &wd_tick))
			start_failed(&start, "cannot register the watchdog timer");
	}
	/* Only now are the deny rules in the kernel: what systemd orders sshd after. */
	if ((ret = sdnotify_send("READY=1")))
		log_err("cannot tell systemd that jitd is ready: %s", strerror(-ret));
	log_info("ready: host %s, %zu protected port(s)%s, control socket %s", cfg->host_id,
		cfg->n_ports, targets_note(cfg, note, sizeof(note)), cfg->control_socket);
	audit_agent(audit, "agent.started", "version " JITD_VERSION);
	/*
	 * Status's per-port activity is rebuilt after ready and on a thread of its own: it
	 * protects nothing, so neither the deny rules nor the first grants wait for it (0.4 s per
	 * 100,000 records). The whole trail, not 7 days: last_access is the last grant however
	 * old (every line is parsed either way; grants_7d counts the window alone).
	 */
	(void)activity_rebuild(activity, audit, 0); /* a failure is said there */
	/*
	 * Restoring peaks well above what the running agent holds; glibc would keep the freed
	 * heap, and the agent at that high-water mark.
	 */
	(void)malloc_trim(0);

	/* A loop that failed (not a signal) exits 1: Restart=on-failure brings jitd back. */
	if (event_base_dispatch(base) < 0) {
		log_err("the event loop failed: %s; stopping", strerror(errno));
		status = 1;
	}
	(void)sdnotify_send("STOPPING=1");

	if (watchdog)
		event_free(watchdog);
	event_free(expire);
	http_close(&http);
	ctl_close(&ctl);
	watch_close(&watch);
	/* Its last records (counted refusals, damage found at the end) come before the stop's. */
	enforce_close(&enf);
	audit_agent(audit, "agent.stopped", "table inet jitd stays: ports remain closed");
	conntrack_close(&ct);
	activity_free(&activity);
	audit_close(&audit);
	replay_close(&replay);
	netnslock_release(&nslock);
	store_close(&store);
	nft_close(&nft);
	/*
	 * Freed last: freeing them restores the action they found, the default (SIGHUP was
	 * blocked, not ignored), and a second SIGTERM, a ^C or a reload while the closes above
	 * finish their records would end jitd before they are written.
	 */
	event_free(sighup);
	event_free(sigint);
	event_free(sigterm);
	event_base_free(base);
	config_free(cfg);
	return status;
}
