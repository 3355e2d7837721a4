# Local access control: the control socket's group may read (status, log) but not change grants;
# others cannot connect at all; root may also open a port locally (break-glass), within policy,
# audited with the user's name. Users are numeric uids/gids made up for the test (setpriv), so
# the host's user database is never touched. Last, the files of `jitctl keygen`: the private
# half 0600, never written over or through a planted link; with --json, the paths or the
# refusal's code (duplicate, permission_denied).
. "$(dirname "$0")/lib.sh"

READER_GID=4242
OTHER_UID=4243
setup_net
setup_keys
write_config drop '[]' \
	'[{"port": 22, "protocol": "tcp", "max_duration": "PT10M", "allowed_sources": ["192.0.2.0/24"]}]' \
	"\"control_group\": \"$READER_GID\""
start_listeners 22
start_jitd
# The unprivileged caller needs to reach the socket and run jitctl, nothing more.
chmod 0711 "$TMP" "$TMP/run"
install -m 0755 "$JITCTL_BIN" "$TMP/jitctl"
[ "$(stat -c '%a %g' "$SOCK")" = "660 $READER_GID" ] || fail "socket mode/group: $(stat -c '%a %g' "$SOCK")"
pass "control socket is 0660, group $READER_GID"
# A gid is digits only: strtoul reads "-18446744073709547374" as 4242 (2^64 - 4242).
stop_jitd
cp "$CONFIG" "$TMP/perms.json"
jq '.control_group = "-18446744073709547374"' "$TMP/perms.json" >"$CONFIG"
start_jitd
[ "$(stat -c %g "$SOCK")" != "$READER_GID" ] &&
	grep -q "group '-18446744073709547374' does not exist" "$TMP/jitd.log" ||
	fail "a signed gid: socket group $(stat -c %g "$SOCK"); $(grep control: "$TMP/jitd.log")"
pass "a gid with a sign names no group: the socket is root's alone"
stop_jitd
cp "$TMP/perms.json" "$CONFIG"
start_jitd

# In the test's namespace, as every command here: teardown, refused or not, speaks netlink.
as_reader() {
	in_ns "$SRV" setpriv --reuid=$OTHER_UID --regid=$OTHER_UID --groups=$READER_GID -- \
		"$TMP/jitctl" -s "$SOCK" "$@"
}
as_other() {
	in_ns "$SRV" setpriv --reuid=$OTHER_UID --regid=$OTHER_UID --clear-groups -- \
		"$TMP/jitctl" -s "$SOCK" "$@"
}
# expect_exit CODE ERROR DESCRIPTION -- CMD...: exit status and, for refusals, the error code.
expect_exit() {
	local want=$1 code=$2 what=$3 rc=0
	shift 4
	"$@" >"$TMP/out" 2>"$TMP/err" || rc=$?
	[ "$rc" -eq "$want" ] || fail "$what: exit $rc, want $want; $(cat "$TMP/out" "$TMP/err")"
	[ -z "$code" ] || grep -q "$code" "$TMP/out" "$TMP/err" || fail "$what: no '$code' in $(cat "$TMP/out" "$TMP/err")"
	pass "$what -> exit $rc${code:+ ($code)}"
}

token=$(sign --src 192.0.2.2 --port 22 --for 60 --jti perm-1)
expect_exit 0 "" "group member: status" -- as_reader status --json
expect_exit 0 "" "group member: log" -- as_reader log --json
expect_exit 1 permission_denied "group member: submit" -- as_reader submit - <<<"$token"
expect_exit 1 permission_denied "group member: grant" -- as_reader grant --src 192.0.2.2 --port 22 --for 60 --reason x
expect_exit 1 permission_denied "group member: revoke" -- as_reader revoke perm-1
expect_exit 1 permission_denied "group member: reload" -- as_reader reload
expect_exit 3 "Permission denied" "not in the group: status" -- as_other status
# The members' refused changes are in the trail, with their peer, as any refusal.
jq -s -e '([.[] | select(.event == "grant.refused" and .code == "permission_denied" and
	(.peer | test("4243")))] | length) == 2 and ([.[] | select(.event == "revocation.refused"
	and .code == "permission_denied")] | length) == 1' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the refused changes in the trail: $(grep -c refused "$TMP/state/audit.jsonl")"
jq -s -e 'any(.[]; .event == "config.refused" and .code == "permission_denied" and
	(.peer | test("4243")))' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the member's refused reload is not in the trail"
pass "the member's refused submit, grant, revoke and reload are audited"
# Reloads a member keeps asking for go to jitd's log, ten a minute to the trail: 25 in a few
# seconds (within at most two minutes) leave at most 20 records.
for i in $(seq 24); do
	as_reader reload >/dev/null 2>&1 && fail "a member's reload was taken"
done
n=$(jq -s '[.[] | select(.event == "config.refused" and (.peer | test("4243")))] | length' \
	"$TMP/state/audit.jsonl")
[ "$n" -ge 10 ] && [ "$n" -le 20 ] || fail "25 refused reloads left $n config.refused records"
[ "$(grep -c "reload refused: permission_denied" "$TMP/jitd.log")" -eq 25 ] ||
	fail "not every refused reload is in jitd's log"
pass "25 refused reloads: $n in the trail, every one in jitd's log"
# teardown probes the socket before anything: a user it keeps out is told permission_denied.
expect_exit 1 '"error": "permission_denied"' "not in the group: teardown --json" -- \
	as_other teardown --json
no_allow_elems || fail "a refused caller changed the kernel"
pass "kernel untouched by the refused callers"
# Output cut short (a full disk: /dev/full) is not a success.
rc=0
"$JITCTL_BIN" -s "$SOCK" log --json >/dev/full 2>"$TMP/err" || rc=$?
[ "$rc" -eq 1 ] && grep -q "writing the output: No space left on device" "$TMP/err" ||
	fail "log --json to a full disk: exit $rc; $(cat "$TMP/err")"
pass "log --json to a full disk: exit 1, said on stderr"

log "break-glass as root"
expect_exit 2 "/tmp: Is a directory" "submit of a directory" -- "$JITCTL_BIN" -s "$SOCK" submit /tmp
expect_exit 2 "" "grant without --reason" -- "$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.2 --port 22 --for 60
for list in "--port 22," "--port ,22" "--port 22,,3389" "--src 192.0.2.2,"; do
	other="--src 192.0.2.2"
	[ "${list%% *}" = --src ] && other="--port 22"
	# shellcheck disable=SC2086 # options and their values
	expect_exit 2 "has an empty item" "grant $list" -- "$JITCTL_BIN" -s "$SOCK" grant \
		$other $list --for 60 --reason "a typo"
done
# A second value would win silently, and a space instead of a comma would leave one out.
expect_exit 2 "jitctl grant: --src given twice (several go in one, comma-separated)" \
	"grant with --src twice" -- "$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.2 \
	--src 192.0.2.3 --port 22 --for 60 --reason x
expect_exit 2 "jitctl grant: unexpected argument '3389'" "grant of two ports with a space" -- \
	"$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.2 --port 22 3389 --for 60 --reason x
expect_exit 1 duration_exceeds_max "grant over the port's maximum" -- \
	"$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.2 --port 22 --for PT20M --reason "too long"
expect_exit 1 source_not_allowed "grant outside allowed_sources" -- \
	"$JITCTL_BIN" -s "$SOCK" grant --src 198.51.100.2 --port 22 --for 60 --reason "wrong source"
expect_exit 1 port_not_protected "grant for an unprotected port" -- \
	"$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.2 --port 2222 --for 60 --reason "wrong port"
# The request itself, past jitctl: a duration no port allows is refused before exp is computed.
reply=$(/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(b"{\"op\":\"grant\",\"src\":[\"192.0.2.2\"],\"ports\":[\"22/tcp\"],"
          b"\"duration\":9223372036854775807,\"reason\":\"overflow\"}\n")
print(s.makefile().readline(), end="")' "$SOCK")
[ -n "$reply" ] && echo "$reply" | jq -e '.error == "duration_exceeds_max"' >/dev/null ||
	fail "a duration of 2^63-1 s: $reply"
pass "grant request with a duration of 2^63-1 s: $(echo "$reply" | jq -r .message)"
# Input refused before its op is known leaves a record too: not JSON, then two lines at once;
# and log queries with a malformed member (a limit of none, one past the cap, not a number).
for req in 'not json' '{"op":"status"}\n{"op":"status"}' '{"op":"frobnicate"}' \
	'{"op":"log","since":"yesterday"}' '{"op":"log","limit":0}' '{"op":"log","limit":50001}' \
	'{"op":"log","limit":"5"}'; do
	reply=$(/usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode() + b"\n")
print(s.makefile().readline(), end="")' "$SOCK" "$req")
	echo "$reply" | jq -e '.error == "bad_request"' >/dev/null || fail "$req: $reply"
done
jq -s -e '[.[] | select(.event == "grant.refused" and .code == "bad_request" and
	(.peer | test("user=root")))] | length == 7' "$TMP/state/audit.jsonl" >/dev/null ||
	fail "the malformed requests in the trail: $(jq -c 'select(.code == "bad_request")' \
		"$TMP/state/audit.jsonl")"
pass "a request that is not JSON, two at once, an unknown op, bad log queries: bad_request, audited"
# More sources or port/protocol pairs than any grant may carry: the limit's code, as for a
# signed grant (a port for both protocols is two pairs).
many=$(seq -s, -f "192.0.2.%g" 1 65)
expect_exit 1 too_large "a local grant of 65 sources" -- \
	"$JITCTL_BIN" -s "$SOCK" grant --src "$many" --port 22 --for 60 --reason "too many"
many=$(seq -s, -f "%g/*" 1 33)
expect_exit 1 too_large "a local grant of 33 ports for both protocols" -- \
	"$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.2 --port "$many" --for 60 --reason "too many"
no_allow_elems || fail "a refused local grant changed the kernel"
expect_connect drop "$C1" 192.0.2.1 22
"$JITCTL_BIN" -s "$SOCK" grant --src 192.0.2.2 --port 22 --for 60 --reason "INC-42 sshd down" --json >"$TMP/g.json" ||
	fail "break-glass grant refused: $(cat "$TMP/g.json")"
id=$(jq -r .id "$TMP/g.json")
jq -e '.sub == "root" and .iss == "local" and .reason == "INC-42 sshd down"' "$TMP/g.json" >/dev/null ||
	fail "local grant does not name its user: $(cat "$TMP/g.json")"
pass "break-glass grant $id applied for user root"
has_elem allow4_addr "192.0.2.2 tcp 22" || fail "no kernel element for the local grant"
expect_connect ok "$C1" 192.0.2.1 22
stop_jitd KILL
start_jitd
status_json | jq -e --arg id "$id" '.grants | map(.id) == [$id]' >/dev/null || fail "local grant not restored after a crash"
pass "the local grant is restored after a crash"
"$JITCTL_BIN" -s "$SOCK" log --grant "$id" --json >"$TMP/log.json" || fail "jitctl log failed"
jq -e '[.[] | select(.event == "grant.applied" and .sub == "root" and (.peer | test("user=root")))] | length == 1' \
	"$TMP/log.json" >/dev/null || fail "audit does not record the local grant with its user: $(cat "$TMP/log.json")"
pass "audit records the break-glass grant with the local user"

log "a state directory, or a file a start reads in it, that others may write: refused"
# A start restores the journal's grants unsigned (checked before they were recorded; a local
# grant has none) and takes replay.db's ids as used: whoever may write them can let themselves in.
stop_jitd
before=$(kernel_json | strip_expires)
# state_refused FILE MODE_OR_OWNER WANT...: FILE (under the state directory) given MODE_OR_OWNER,
# --check-config refuses it (a package's upgrade restarts on its OK), and a start exits 1 saying
# each WANT and leaves the table as it is; then FILE is as it was.
state_refused() {
	local f=$TMP/state$1 how=$2 was rc=0 checked=0 want
	shift 2
	was=$(stat -c '%a %u' "$f")
	case $how in
	uid=*) chown "${how#uid=}" "$f" ;;
	*) chmod "$how" "$f" ;;
	esac
	in_ns "$SRV" "$JITD_BIN" --check-config -c "$CONFIG" >"$TMP/out" 2>&1 || checked=$?
	timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
	chmod "${was% *}" "$f"
	chown "${was#* }" "$f"
	[ "$checked" -eq 1 ] && grep -qF "state_dir: $f is " "$TMP/out" ||
		fail "--check-config with $f $how: exit $checked: $(cat "$TMP/out")"
	[ "$rc" -eq 1 ] || fail "a start with $f $how: exit $rc: $(cat "$TMP/fail.log")"
	for want in "$@" "lockdown: table inet jitd is in the kernel: left as it is"; do
		grep -qF -- "$want" "$TMP/fail.log" ||
			fail "a start with $f $how does not say '$want': $(cat "$TMP/fail.log")"
	done
	[ "$(kernel_json | strip_expires)" = "$before" ] ||
		fail "a start with $f $how changed the table"
}
# One others may read is taken, with a warning: whoever may read it may hold its lock.
chmod 0755 "$TMP/state"
rc=0
in_ns "$SRV" "$JITD_BIN" --check-config -c "$CONFIG" >"$TMP/out" 2>&1 || rc=$?
chmod 0700 "$TMP/state"
[ "$rc" -eq 0 ] && grep -qF "state_dir: warning: $TMP/state may be read by group or others" \
	"$TMP/out" || fail "--check-config of a state directory others may read: $(cat "$TMP/out")"
pass "--check-config warns of a state directory others may read (its lock), and accepts it"
# The reason said once, by the start, and so into agent.lockdown's record after a boot.
state_refused "" o+w "cannot open state directory $TMP/state: $TMP/state is writable by group \
or others: whoever may write it could give themselves access (make it root's"
rc=0
chmod g+w "$TMP/state"
in_ns "$SRV" "$JITD_BIN" --check-config -c "$CONFIG" >"$TMP/out" 2>&1 || rc=$?
chmod g-w "$TMP/state"
[ "$rc" -eq 1 ] && grep -qF "state_dir: $TMP/state is writable by group or others" "$TMP/out" ||
	fail "--check-config of a state directory the group may write: exit $rc: $(cat "$TMP/out")"
state_refused /grants.journal g+w "cannot open state directory $TMP/state: \
$TMP/state/grants.journal is writable by group or others: whoever may write it"
state_refused /grants.journal uid=$OTHER_UID "cannot open state directory $TMP/state: \
$TMP/state/grants.journal is owned by uid $OTHER_UID, not root nor jitd's user"
# A line no id is in makes the start rewrite replay.db as jitd's own: the one read is judged.
echo x >>"$TMP/state/replay.db"
state_refused /replay.db o+w "cannot open the replay cache in $TMP/state: \
$TMP/state/replay.db is writable by group or others: whoever may write it could use a revoked"
pass "a state directory others may write, a journal, one of another owner, a replay.db: refused"
# A FIFO in a state file's place (only root could put it there): refused as not a regular file,
# by --check-config and by a start, neither waiting on it for a writer.
for name in grants.snap replay.db; do
	f=$TMP/state/$name
	[ ! -e "$f" ] || mv "$f" "$f.kept"
	mkfifo -m 0600 "$f"
	state_refused "/$name" 0600 "$f is not a regular file"
	rm "$f"
	[ ! -e "$f.kept" ] || mv "$f.kept" "$f"
done
pass "a FIFO as the snapshot or replay.db: refused, not waited on"
# Nor is the trail's (which --check-config does not judge: it holds no grant).
f=$TMP/state/audit.jsonl
mv "$f" "$f.kept"
mkfifo -m 0600 "$f"
rc=0
timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
rm "$f"
mv "$f.kept" "$f"
[ "$rc" -eq 1 ] && grep -qF "cannot open the audit trail" "$TMP/fail.log" ||
	fail "a start with a FIFO as audit.jsonl: exit $rc: $(cat "$TMP/fail.log")"
[ "$(kernel_json | strip_expires)" = "$before" ] ||
	fail "a start with a FIFO as audit.jsonl changed the table"
pass "a FIFO as audit.jsonl: the start fails, not waited on, the table left as it is"
# A FIFO at a rewrite's temporary name (left by root, or a crash of something else): a start
# that rewrites replay.db (a line with no id) and saves lockdown.json makes each file anew
# rather than wait on the FIFO for a reader, and serves (start_jitd fails after 10 s).
echo x >>"$TMP/state/replay.db"
for name in replay.db.tmp lockdown.json.tmp; do
	mkfifo -m 0600 "$TMP/state/$name"
done
start_jitd
for name in replay.db.tmp lockdown.json.tmp; do
	[ ! -e "$TMP/state/$name" ] || fail "$name is left after the start: $(ls -l "$TMP/state")"
done
grep -qx x "$TMP/state/replay.db" && fail "the start did not rewrite replay.db"
cmp -s "$TMP/state/lockdown.json" "$CONFIG" || fail "lockdown.json is not the configuration"
[ "$(kernel_json | strip_expires)" = "$before" ] ||
	fail "a start over FIFOs at the temporary names changed the table"
stop_jitd
pass "FIFOs at replay.db's and lockdown.json's temporary names: replaced, the start serves"
# A link in the snapshot's or replay.db's place, which a start does not follow (it fails on
# ELOOP): whatever stops a start fails --check-config too, not only a refusal of its own.
for name in grants.snap replay.db; do
	f=$TMP/state/$name
	[ ! -e "$f" ] || mv "$f" "$f.kept"
	ln -s grants.journal "$f"
	rc=0 started=0
	in_ns "$SRV" "$JITD_BIN" --check-config -c "$CONFIG" >"$TMP/out" 2>&1 || rc=$?
	timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || started=$?
	rm "$f"
	[ ! -e "$f.kept" ] || mv "$f.kept" "$f"
	[ "$rc" -eq 1 ] &&
		grep -qF "state_dir: $f: Too many levels of symbolic links (a start" "$TMP/out" ||
		fail "--check-config with a link as $name: exit $rc: $(cat "$TMP/out")"
	[ "$started" -eq 1 ] && grep -qF "Too many levels of symbolic links" "$TMP/fail.log" ||
		fail "a start with a link as $name: exit $started: $(cat "$TMP/fail.log")"
done
pass "--check-config fails on a link as the snapshot or replay.db, as a start does"
# A state_dir no start can use or make, whoever runs it: a file, a link to nothing, a missing
# parent (a start makes only the last level).
ln -s "$TMP/nowhere" "$TMP/dangling"
for bad in "$TMP/state/grants.journal:Not a directory" "$TMP/dangling:a link to nothing" \
	"$TMP/dangling/:a link to nothing" "$TMP/no/state:its parent $TMP/no is missing"; do
	jq --arg d "${bad%%:*}" '.state_dir = $d' "$CONFIG" >"$TMP/baddir.json"
	rc=0
	in_ns "$SRV" "$JITD_BIN" --check-config -c "$TMP/baddir.json" >"$TMP/out" 2>&1 || rc=$?
	[ "$rc" -eq 1 ] && grep -qF "state_dir: ${bad%%:*}: ${bad#*:}" "$TMP/out" ||
		fail "--check-config with state_dir ${bad%%:*}: exit $rc: $(cat "$TMP/out")"
done
rm "$TMP/dangling"
# One a start makes (its last level missing), spelled with a trailing slash: taken, not made.
jq --arg d "$TMP/fresh/" '.state_dir = $d' "$CONFIG" >"$TMP/baddir.json"
in_ns "$SRV" "$JITD_BIN" --check-config -c "$TMP/baddir.json" >"$TMP/out" 2>&1 ||
	fail "--check-config with state_dir $TMP/fresh/: $(cat "$TMP/out")"
[ ! -e "$TMP/fresh" ] || fail "--check-config made $TMP/fresh"
pass "--check-config fails on a state_dir that is a file, a link to nothing, or has no parent"
# A journal root may only read: without DAC override (as the unit runs jitd) a start cannot
# open it for writing, and --check-config, run the same way, says so.
chmod 0400 "$TMP/state/grants.journal"
rc=0 started=0
in_ns "$SRV" "${NODAC[@]}" "$JITD_BIN" --check-config -c "$CONFIG" >"$TMP/out" 2>&1 || rc=$?
timeout 20 ip netns exec "$SRV" "${NODAC[@]}" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 ||
	started=$?
chmod 0600 "$TMP/state/grants.journal"
[ "$rc" -eq 1 ] &&
	grep -qF "state_dir: $TMP/state/grants.journal: Permission denied (a start" "$TMP/out" ||
	fail "--check-config of a journal root may only read: exit $rc: $(cat "$TMP/out")"
[ "$started" -eq 1 ] && grep -qF "Permission denied" "$TMP/fail.log" ||
	fail "a start with a journal root may only read: exit $started: $(cat "$TMP/fail.log")"
pass "a journal root may only read, without DAC override: --check-config fails as the start does"
# After a boot, a directory others may read with its lock held (by the test shell): not taken for
# another jitd's, which would stop the start with no table; the start fails and closes the ports.
in_ns "$SRV" nft delete table inet jitd
chmod 0755 "$TMP/state"
exec {held}<"$TMP/state"
flock -x -n "$held" || fail "cannot lock $TMP/state"
rc=0
timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
exec {held}<&-
chmod 0700 "$TMP/state"
[ "$rc" -eq 1 ] && grep -qF "cannot open state directory $TMP/state: its lock is held, by another \
jitd or by anyone: $TMP/state may be read by group or others" "$TMP/fail.log" &&
	grep -qF "lockdown: table inet jitd built from the configuration file just read" \
	"$TMP/fail.log" || fail "a start with the lock held: exit $rc: $(cat "$TMP/fail.log")"
expect_connect drop "$C1" 192.0.2.1 22
pass "a boot, a directory others may read, its lock held: the start fails, the deny table built"
# After a boot, the record taken away and the directory's lock held (whoever may write the
# directory may do both; the lock is what says another jitd uses it): the ports are closed all
# the same, by the file.
in_ns "$SRV" nft delete table inet jitd
mv "$TMP/state/lockdown.json" "$TMP/lockdown.json.saved"
chmod o+w "$TMP/state"
exec {held}<"$TMP/state"
flock -x -n "$held" || fail "cannot lock $TMP/state"
rc=0
timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
exec {held}<&-
chmod o-w "$TMP/state"
mv "$TMP/lockdown.json.saved" "$TMP/state/lockdown.json"
built="lockdown: table inet jitd built from the configuration file just read"
[ "$rc" -eq 1 ] && grep -qF "$built" "$TMP/fail.log" ||
	fail "a start with the record gone: exit $rc: $(cat "$TMP/fail.log")"
kernel_json | jq -e '[.nftables[] | select(.set? and .set.name == "protected") | .set.elem[]
	| .concat | map(tostring) | join(" ")] == ["tcp 22"]' >/dev/null ||
	fail "protected set after the lockdown: $(kernel_json | jq -c .)"
expect_connect drop "$C1" 192.0.2.1 22
pass "a boot, the directory others may write, its record gone, its lock held: the file's deny table"
# After a boot, a journal the group may write: the ports closed, and the reason (said once, by
# the start) is the trail's agent.lockdown record's too.
in_ns "$SRV" nft delete table inet jitd
chmod g+w "$TMP/state/grants.journal"
rc=0
timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$CONFIG" >"$TMP/fail.log" 2>&1 || rc=$?
chmod g-w "$TMP/state/grants.journal"
[ "$rc" -eq 1 ] && grep -qF "$built" "$TMP/fail.log" ||
	fail "a start with the journal the group may write: exit $rc: $(cat "$TMP/fail.log")"
[ "$(grep -c "grants.journal is writable by group or others" "$TMP/fail.log")" -eq 1 ] ||
	fail "the journal's fault not said once: $(cat "$TMP/fail.log")"
tail -n 1 "$TMP/state/audit.jsonl" | jq -e --arg w "cannot open state directory $TMP/state: \
$TMP/state/grants.journal is writable by group or others: whoever may write it could give \
themselves access" '.event == "agent.lockdown" and (.message | startswith($w))' >/dev/null ||
	fail "the trail's last line: $(tail -n 1 "$TMP/state/audit.jsonl")"
expect_connect drop "$C1" 192.0.2.1 22
pass "a boot, a journal the group may write: the deny table, agent.lockdown saying why"
start_jitd
status_json | jq -e --arg id "$id" '.grants | map(.id) == [$id]' >/dev/null ||
	fail "the local grant was not restored once the modes were mended"
pass "mended, the start serves and restores the grant"
if [ "${JITD_TEST_HOOKS:-0}" = 1 ]; then
	# On a kernel before 5.10 jitd's table has no mark. A second jitd with its own socket and
	# the same directory, one others may read (whose lock says nothing), fails; its lockdown
	# must find the first one by the namespace's lock and leave that table, grants and all.
	log "(test build) a second jitd, a directory others may read, the first table unmarked"
	stop_jitd
	JITD_TEST_NO_MARK=1 start_jitd
	before=$(kernel_json | strip_expires)
	jq --arg s "$TMP/run/second.sock" '.control_socket = $s' "$CONFIG" >"$TMP/second.json"
	chmod 0755 "$TMP/state"
	rc=0
	timeout 20 ip netns exec "$SRV" "$JITD_BIN" -c "$TMP/second.json" >"$TMP/fail.log" 2>&1 ||
		rc=$?
	chmod 0700 "$TMP/state"
	[ "$rc" -eq 1 ] && grep -qF "holds this network namespace's lock: nothing made" \
		"$TMP/fail.log" || fail "the second jitd: exit $rc: $(cat "$TMP/fail.log")"
	[ "$(kernel_json | strip_expires)" = "$before" ] ||
		fail "the second jitd changed the first one's table"
	pass "the second jitd fails and leaves the first one's table: $(grep -m1 lockdown: \
		"$TMP/fail.log")"
fi

log "jitctl keygen: modes, no overwrite, no following a planted link"
kd="$TMP/keygen"
mkdir -m 0700 "$kd"
expect_exit 0 "private key: $kd/k1.key" "keygen k1" -- "$JITCTL_BIN" keygen --kid k1 --dir "$kd"
[ "$(stat -c %a "$kd/k1.key")" = 600 ] && [ "$(stat -c %a "$kd/k1.pem")" = 644 ] ||
	fail "keygen modes: key $(stat -c %a "$kd/k1.key"), pem $(stat -c %a "$kd/k1.pem")"
pass "the private key is 0600, the public one 0644"
sum=$(sha256sum "$kd/k1.key" "$kd/k1.pem")
expect_exit 1 "jitctl keygen: refused: duplicate: refusing to overwrite existing $kd/k1.key" \
	"keygen k1 again" -- \
	"$JITCTL_BIN" keygen --kid k1 --dir "$kd"
[ "$(sha256sum "$kd/k1.key" "$kd/k1.pem")" = "$sum" ] || fail "a second keygen changed k1's files"
pass "k1's files are unchanged"
ln -s "$TMP/planted-target" "$kd/k2.key"
expect_exit 1 "refusing to overwrite existing $kd/k2.key" "keygen over a planted link" -- \
	"$JITCTL_BIN" keygen --kid k2 --dir "$kd"
[ ! -e "$TMP/planted-target" ] && [ ! -e "$kd/k2.pem" ] || fail "keygen wrote through the link"
pass "nothing was written through the link"
expect_exit 2 "not a key id" "keygen with a path as kid" -- "$JITCTL_BIN" keygen --kid ../k3 --dir "$kd"
expect_exit 2 "jitctl keygen: --json=yes: unknown, ambiguous, or given a value it takes none of" \
	"keygen --json=yes" -- "$JITCTL_BIN" keygen --json=yes --kid k3 --dir "$kd"
expect_exit 2 "jitctl keygen: -x: unknown option" "keygen --json -xk" -- \
	"$JITCTL_BIN" keygen --json -xk --kid k3 --dir "$kd"
expect_exit 2 "jitctl keygen: -x: unknown option" "keygen --kid=k3 -xk" -- \
	"$JITCTL_BIN" keygen --kid=k3 -xk --dir "$kd"
expect_exit 2 "jitctl keygen: --help=x: unknown, ambiguous" "keygen --help=x -h" -- \
	"$JITCTL_BIN" keygen --help=x -h
expect_exit 2 "jitctl keygen: -é: unknown option" "keygen --kid=k3 -é" -- \
	"$JITCTL_BIN" keygen --kid=k3 -é --dir "$kd"
[ ! -e "$TMP/k3.key" ] || fail "keygen wrote outside --dir"
# sign's --key: a file that cannot be read is a usage error (2), one that is not a key refused (1).
signargs=(--kid k1 --aud "$HOST_ID" --sub alice --src 192.0.2.2 --port 22 --for 60)
expect_exit 2 "$kd/nokey.key: No such file or directory" "sign with a missing --key" -- \
	"$JITCTL_BIN" sign --key "$kd/nokey.key" "${signargs[@]}"
expect_exit 2 "$kd: Is a directory" "sign with a directory as --key" -- \
	"$JITCTL_BIN" sign --key "$kd" "${signargs[@]}"
expect_exit 1 "not an Ed25519 private key" "sign with a public key as --key" -- \
	"$JITCTL_BIN" sign --key "$kd/k1.pem" "${signargs[@]}"

log "jitctl keygen --json: the paths, or the refusal's stable code"
expect_exit 0 "" "keygen --json k4" -- "$JITCTL_BIN" keygen --kid k4 --dir "$kd" --json
jq -e --arg d "$kd" '. == {"kid": "k4", "private_key": "\($d)/k4.key",
	"public_key": "\($d)/k4.pem"}' "$TMP/out" >/dev/null &&
	cmp -s "$kd/k4.pem" <(openssl pkey -in "$kd/k4.key" -pubout) ||
	fail "keygen --json k4: $(cat "$TMP/out" "$TMP/err")"
pass "keygen --json names the key pair it wrote"
expect_exit 1 "" "keygen --json k4 again" -- "$JITCTL_BIN" keygen --kid k4 --dir "$kd" --json
jq -e --arg d "$kd" '.error == "duplicate" and
	.message == "refusing to overwrite existing \($d)/k4.key"' "$TMP/out" >/dev/null &&
	[ ! -s "$TMP/err" ] || fail "keygen --json over k4: $(cat "$TMP/out" "$TMP/err")"
pass "keygen --json over an existing key: duplicate, on stdout only"
# JSON cannot name a directory that is not UTF-8: refused before any key is written.
mkdir "$kd/"$'\xff'
expect_exit 2 "not UTF-8" "keygen --json into a directory not UTF-8" -- \
	"$JITCTL_BIN" keygen --kid k6 --dir "$kd/"$'\xff' --json
[ -z "$(ls -A "$kd/"$'\xff')" ] && [ ! -s "$TMP/out" ] ||
	fail "keygen --json wrote into a directory not UTF-8"
# The made-up user cannot write in root's 0700 directory.
expect_exit 1 "" "keygen --json where the user may not write" -- \
	setpriv --reuid=$OTHER_UID --regid=$OTHER_UID --clear-groups -- \
	"$TMP/jitctl" keygen --kid k5 --dir "$kd" --json
jq -e '.error == "permission_denied"' "$TMP/out" >/dev/null && [ ! -e "$kd/k5.key" ] ||
	fail "keygen --json without write access: $(cat "$TMP/out" "$TMP/err")"
pass "keygen --json without write access: permission_denied, nothing written"
