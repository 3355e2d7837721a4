#!/bin/bash
# The bash completion (packaging/bash-completion/jitctl) against jitctl itself: the commands and
# each command's options it offers are the ones 'jitctl --help' and 'jitctl COMMAND --help'
# list, and a value given as --socket=PATH is passed over as it is with a space. Readline's
# words are given as it splits them ('=' a word of its own), without the bash-completion
# package (its _init_completion path is what the package install test loads).
# Usage: completion.sh JITCTL COMPLETION_FILE
set -euo pipefail
JITCTL=$1
. "$2"
failed=0
# offer WORD...: what the completion offers for the last word, sorted, one line.
offer() {
	COMP_WORDS=("$@")
	COMP_CWORD=$((${#COMP_WORDS[@]} - 1))
	COMPREPLY=()
	_jitctl
	printf '%s\n' "${COMPREPLY[@]}" | sort | paste -sd' '
}
same() {
	if [ "$2" = "$3" ]; then
		echo "ok - $1: $2"
	else
		echo "FAIL - $1: the completion offers '$2', jitctl has '$3'"
		failed=1
	fi
}
# The long options a --help text names (--help itself aside: every command takes it).
long_opts() {
	grep -oE '(^|[ ,])--[a-z][a-z-]*' | sed 's/^[ ,]*//' | grep -vx -- --help | sort -u |
		paste -sd' '
}

commands=$("$JITCTL" --help | sed -n '/^Commands/,/^$/p' | awk 'NR > 1 && NF { print $1 }' |
	sort | paste -sd' ')
[ -n "$commands" ] || { echo "FAIL - no commands in jitctl --help"; exit 1; }
same "commands" "$(offer jitctl "")" "$commands"
for c in $commands; do
	[ "$c" = help ] && continue
	if ! help=$("$JITCTL" "$c" --help 2>&1) || [ -z "$help" ]; then
		echo "FAIL - jitctl $c --help: $help"
		failed=1
		continue
	fi
	same "$c's options" "$(offer jitctl "$c" -- | tr ' ' '\n' | grep -vx -- --help |
		paste -sd' ')" "$(long_opts <<<"$help")"
done
same "after --socket=PATH" "$(offer jitctl --socket = /run/x status --j)" "--json"
same "after -s PATH" "$(offer jitctl -s /run/x status --j)" "--json"
same "after --config=FILE" "$(offer jitctl --config = /etc/x.json revoke --t)" "--terminate"
exit $failed
