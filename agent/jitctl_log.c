/* jitctl log: the agent's audit trail, filtered, as a table, JSON or RFC 4180 CSV. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "agent/jitctl.h"
#include "common/duration.h"
#include "common/events.h"
#include "common/grant.h"
#include "common/proto.h"

static const char *const csv_fields[] = { "time", "event", "grant", "sub", "iss", "kid",
	"sources", "ports", "destinations", "gateway_ports", "expires_at", "reason", "peer", "code",
	"withdrawn", "message", "count" };

static void log_usage(FILE *f)
{
	size_t col = 39; /* columns used so far on the line the names start on */

	fprintf(f, "Usage: jitctl [-s SOCKET] [-c CONFIG] log [--since WHEN] [--grant ID]\n"
		   "                  [--user SUB] [--event NAME] [--limit N] [--json|--csv]\n\n"
		   "Shows the agent's audit trail, oldest first: every grant applied, refused,\n"
		   "expired or revoked, and the agent's own start and stop. The filters combine.\n"
		   "'jitctl audit' is the same command.\n\n"
		   "  --since WHEN  only events since a relative time (7d, 24h, 30m, 90s, or an\n"
		   "                ISO 8601 duration such as PT1H, at most P366D) or a date\n"
		   "                (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, UTC); before 1970 is\n"
		   "                the whole trail\n"
		   "  --grant ID    only the events of one grant\n"
		   "  --user SUB    only the events of one user (the grants' \"sub\", exactly)\n"
		   "  --event NAME  only one kind of event:");
	for (size_t i = 0; i < audit_event_count; i++) {
		if (col + strlen(audit_event_names[i]) + 2 > 80) {
			fprintf(f, "\n               ");
			col = 15;
		}
		fprintf(f, " %s%s", audit_event_names[i], i + 1 < audit_event_count ? "," : "");
		col += strlen(audit_event_names[i]) + 2;
	}
	fprintf(f, "\n  --limit N     only the newest N of the events the filters let through\n"
		   "                (1 to %d, the most a reply holds)\n"
		   "  --json        the events as a JSON array\n"
		   "  --csv         RFC 4180 CSV with a header row, for spreadsheets (a field a\n"
		   "                spreadsheet would run as a formula starts with ')\n",
		PROTO_LOG_MAX_EVENTS);
}

/* A moment, as seconds since the epoch; one before it is the epoch (the whole trail). */
static long long since_epoch(long long t)
{
	return t < 0 ? 0 : t;
}

/*
 * s as a UTC date, YYYY-MM-DD, or with THH:MM:SSZ: exactly those digits, and a day the
 * calendar has (glibc's strptime takes 1 to 4 digits of year, and timegm turns February 31
 * into March 3). Whether it is one; *t: its seconds since the epoch.
 */
static bool parse_date(const char *s, long long *t)
{
	static const char date[] = "dddd-dd-dd", stamp[] = "dddd-dd-ddTdd:dd:ddZ";
	const char *shape = strlen(s) == strlen(date) ? date : stamp;
	struct tm tm = { 0 }, back;

	if (strlen(s) != strlen(shape))
		return false;
	for (size_t i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? s[i] < '0' || s[i] > '9' : s[i] != shape[i])
			return false;
	tm.tm_year = atoi(s) - 1900;
	tm.tm_mon = atoi(s + 5) - 1;
	tm.tm_mday = atoi(s + 8);
	if (shape == stamp) {
		tm.tm_hour = atoi(s + 11);
		tm.tm_min = atoi(s + 14);
		tm.tm_sec = atoi(s + 17);
	}
	back = tm;
	*t = (long long)timegm(&back);
	/* Normalised into another day or time: not one the calendar has. */
	return back.tm_year == tm.tm_year && back.tm_mon == tm.tm_mon &&
		back.tm_mday == tm.tm_mday && back.tm_hour == tm.tm_hour &&
		back.tm_min == tm.tm_min && back.tm_sec == tm.tm_sec;
}

/*
 * "7d", "24h", "30m", "90s", an ISO 8601 duration, or a UTC date. -1 if none of these, -2 for
 * an ISO 8601 duration longer than the parser reads (366 days).
 */
static long long parse_since(const char *s, time_t now)
{
	char *end;
	unsigned long long n = strtoull(s, &end, 10);
	long long date;
	uint64_t secs;
	int ret;

	/*
	 * Digits only (strtoull also takes spaces and a sign). At most 10^12 units: no overflow
	 * in any unit, and far beyond the epoch in days.
	 */
	if (s[0] >= '0' && s[0] <= '9' && end[0] && !end[1] && n <= 1000000000000ULL) {
		switch (end[0]) {
		case 'd': return since_epoch((long long)now - (long long)n * 86400);
		case 'h': return since_epoch((long long)now - (long long)n * 3600);
		case 'm': return since_epoch((long long)now - (long long)n * 60);
		case 's': return since_epoch((long long)now - (long long)n);
		}
	}
	if (s[0] == 'P' && (ret = duration_parse(s, &secs)) != -EINVAL)
		return ret ? -2 : since_epoch((long long)now - (long long)secs);
	/* A date before 1970 reads the whole trail. */
	return parse_date(s, &date) ? since_epoch(date) : -1;
}

/*
 * A member as text, whole (a gateway grant's ports run to thousands): lists joined by one
 * space, numbers in decimal, true and false as such, absent as "". The caller frees it; NULL
 * when out of memory.
 */
static char *field_text(const json_t *v)
{
	const json_t *x;
	char *s = NULL;
	size_t i, len = 0;
	FILE *f = open_memstream(&s, &len);

	if (!f)
		return NULL;
	if (json_is_string(v)) {
		fputs(json_string_value(v), f);
	} else if (json_is_integer(v)) {
		fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	} else if (json_is_boolean(v)) {
		fputs(json_is_true(v) ? "true" : "false", f);
	} else if (json_is_array(v)) {
		json_array_foreach(v, i, x) {
			if (i)
				fputc(' ', f);
			/* A gateway port is a number. */
			if (json_is_integer(x))
				fprintf(f, "%" JSON_INTEGER_FORMAT, json_integer_value(x));
			else if (json_string_value(x))
				fputs(json_string_value(x), f);
		}
	}
	if (ferror(f) | fclose(f)) {
		free(s);
		return NULL;
	}
	/*
	 * jitd writes none of what a claim may not hold into the trail, but the trail is a file:
	 * a control character put there by hand would reach the reader's terminal as an escape
	 * sequence, and a bidi override would make a name read as another. Each is shown as '?'.
	 */
	grant_string_defuse(s);
	return s;
}

/* field_text cut to fit buf, for a table's column; -ENOMEM. */
static int field_cut(const json_t *v, char *buf, size_t len)
{
	char *s = field_text(v);

	if (!s)
		return -ENOMEM;
	snprintf(buf, len, "%s", s);
	free(s);
	return 0;
}

/*
 * RFC 4180: quote a field holding a comma, quote, CR or LF, doubling the quotes. A spreadsheet
 * runs a cell that starts with = + - @ (or a tab or CR) as a formula, and a grant's reason or
 * sub is whatever its requester wrote: such a field starts with ' (OWASP's advice), quoted.
 */
static void csv_field(const char *s)
{
	bool formula = s[0] && strchr("=+-@\t\r", s[0]);

	if (!formula && !strpbrk(s, ",\"\r\n")) {
		fputs(s, stdout);
		return;
	}
	putchar('"');
	if (formula)
		putchar('\'');
	for (; *s; s++) {
		if (*s == '"')
			putchar('"');
		putchar(*s);
	}
	putchar('"');
}

static int print_csv(const json_t *events)
{
	const json_t *ev;
	size_t i, n = sizeof(csv_fields) / sizeof(csv_fields[0]);
	char *text;

	for (size_t f = 0; f < n; f++)
		printf("%s%s", f ? "," : "", csv_fields[f]);
	printf("\r\n");
	json_array_foreach(events, i, ev) {
		for (size_t f = 0; f < n; f++) {
			if (f)
				putchar(',');
			if (!(text = field_text(json_object_get(ev, csv_fields[f]))))
				return -ENOMEM;
			csv_field(text);
			free(text);
		}
		printf("\r\n");
	}
	return 0;
}

static int print_table(const json_t *events)
{
	char grant[64], sub[64], src[64], ports[64], detail[512], code[64], msg[256], peer[128];
	char when[32], event[32];
	const json_t *ev;
	size_t i;

	printf("%-20s %-18s %-16s %-10s %-15s %-8s %s\n", "TIME", "EVENT", "GRANT", "USER",
		"SOURCES", "PORTS", "DETAIL");
	json_array_foreach(events, i, ev) {
		if (field_cut(json_object_get(ev, "grant"), grant, sizeof(grant)) ||
			field_cut(json_object_get(ev, "sub"), sub, sizeof(sub)) ||
			field_cut(json_object_get(ev, "sources"), src, sizeof(src)) ||
			field_cut(json_object_get(ev, "ports"), ports, sizeof(ports)) ||
			field_cut(json_object_get(ev, "code"), code, sizeof(code)) ||
			field_cut(json_object_get(ev, "message"), msg, sizeof(msg)) ||
			field_cut(json_object_get(ev, "peer"), peer, sizeof(peer)) ||
			field_cut(json_object_get(ev, "time"), when, sizeof(when)) ||
			field_cut(json_object_get(ev, "event"), event, sizeof(event)))
			return -ENOMEM;
		snprintf(detail, sizeof(detail), "%s%s%s%s%s", code, *code && *msg ? ": " : "", msg,
			(*code || *msg) && *peer ? "; " : "", peer);
		printf("%-20.20s %-18.18s %-16.16s %-10.10s %-15.15s %-8.8s %s\n",
			*when ? when : "-", *event ? event : "-", *grant ? grant : "-",
			*sub ? sub : "-", *src ? src : "-",
			*ports ? ports : "-", *detail ? detail : "-");
	}
	return 0;
}

/* rep's "events" cut to the newest n, in *events; JITCTL_REFUSED when out of memory. */
static int keep_newest(const char *cmd, json_t *rep, size_t n, json_t **events)
{
	size_t from = json_array_size(*events) - n;
	json_t *cut = json_array();

	for (size_t i = from; cut && i < from + n; i++)
		if (json_array_append(cut, json_array_get(*events, i))) {
			json_decref(cut);
			cut = NULL;
		}
	if (!cut || json_object_set_new(rep, "events", cut))
		return jitctl_out_of_memory(cmd);
	*events = cut;
	return 0;
}

int cmd_log(const struct jitctl_opts *o, int argc, char **argv)
{
	static const struct option longopts[] = {
		{ "since", required_argument, NULL, 's' },
		{ "grant", required_argument, NULL, 'g' },
		{ "user", required_argument, NULL, 'u' },
		{ "event", required_argument, NULL, 'e' },
		{ "json", no_argument, NULL, 'j' },
		{ "csv", no_argument, NULL, 'c' },
		{ "limit", required_argument, NULL, 'l' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	/* "log" or "audit", as typed: every message names the command the user ran. */
	const char *cmd = argv[0], *grant = NULL, *user = NULL, *event = NULL;
	json_t *req = NULL, *rep = NULL, *events;
	bool json = false, csv = false;
	long long since = -1;
	unsigned long limit = 0;	/* 0: the agent's cap */
	char *end;
	int at, c, err, ret = JITCTL_USAGE;

	optind = 0;
	for (at = 1; (c = getopt_long(argc, argv, ":h", longopts, NULL)) != -1; at = optind) {
		switch (c) {
		case 's':
			if ((since = parse_since(optarg, time(NULL))) == -2)
				return jitctl_usage_error(cmd, "--since '%s' is longer than an "
					"ISO 8601 duration may be here (P366D); say 400d, or a "
					"date", optarg);
			if (since < 0)
				return jitctl_usage_error(cmd, "--since '%s' is not 7d, 24h, "
					"30m, PT1H or a date (YYYY-MM-DD)", optarg);
			break;
		case 'g': grant = optarg; break;
		case 'u': user = optarg; break;
		case 'e':
			if (!audit_event_known(optarg))
				return jitctl_usage_error(cmd, "--event '%s' is not an event "
					"name (see --help)", optarg);
			event = optarg;
			break;
		case 'l':
			/* Digits only: strtoul also takes spaces and a sign. */
			errno = 0;
			end = optarg;
			limit = 0; /* an empty value must not keep an earlier --limit's */
			if (optarg[0] >= '0' && optarg[0] <= '9')
				limit = strtoul(optarg, &end, 10);
			if (errno || !limit || *end || limit > PROTO_LOG_MAX_EVENTS)
				return jitctl_usage_error(cmd, "--limit '%s' is not a number "
					"from 1 to %d", optarg, PROTO_LOG_MAX_EVENTS);
			break;
		case 'j': json = true; break;
		case 'c': csv = true; break;
		case 'h': log_usage(stdout); return JITCTL_OK;
		default: return jitctl_bad_option(cmd, c, argv, at);
		}
	}
	if (optind != argc)
		return jitctl_usage_error(cmd, "unexpected argument '%s'", argv[optind]);
	if (json && csv)
		return jitctl_usage_error(cmd, "--json and --csv exclude each other");
	/* Checked first (an --event is a known name), so that only memory fails the request. */
	for (int i = 0; i < 2; i++) {
		const char *text = i ? user : grant;

		if (text && (err = jitctl_text_check(text)) == -ENOMEM)
			return jitctl_out_of_memory(cmd);
		if (text && err)
			return jitctl_usage_error(cmd, "--%s is not UTF-8 text",
				i ? "user" : "grant");
	}
	if (!(req = json_pack("{s:s}", "op", "log")) ||
		(since >= 0 && json_object_set_new(req, "since", json_integer(since))) ||
		(grant && json_object_set_new(req, "grant", json_string(grant))) ||
		(user && json_object_set_new(req, "sub", json_string(user))) ||
		(event && json_object_set_new(req, "event", json_string(event))) ||
		(limit && json_object_set_new(req, "limit", json_integer((json_int_t)limit)))) {
		ret = jitctl_out_of_memory(cmd);
		goto out;
	}
	if ((ret = jitctl_call(o, req, &rep)) ||
		(ret = jitctl_check_reply(cmd, json, rep, "events", JSON_ARRAY)))
		goto out;
	events = json_object_get(rep, "events");
	/* An agent older than "limit" ignores it: the newest limit of what it sent, then. */
	if (limit && json_array_size(events) > limit &&
		(ret = keep_newest(cmd, rep, limit, &events)))
		goto out;
	/* Cut at the agent's cap, not at the --limit asked for. */
	if (json_is_true(json_object_get(rep, "truncated")) && !limit)
		fprintf(stderr, "jitctl %s: only the newest %zu events are shown\n", cmd,
			json_array_size(events));
	if (json) {
		ret = jitctl_print_member(rep, "events");
	} else if ((csv ? print_csv(events) : print_table(events)) < 0) {
		ret = jitctl_out_of_memory(cmd);
	}
out:
	json_decref(req);
	json_decref(rep);
	return ret;
}
