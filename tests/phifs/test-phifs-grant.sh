#!/usr/bin/env bash
# test-phifs-grant: the phifs-grant CLI end to end (add, list, revoke, emergency, bad input).
# Usage: test-phifs-grant.sh PHIFS_GRANT PHIFS_KEY
set -euo pipefail
PG=$1 PK=$2
T=$(mktemp -d /tmp/test-phifs-grant.XXXXXX)
trap 'rm -rf "$T"' EXIT
STORE=$T/store KEY=$T/master.key
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
G() { "$PG" --store "$STORE" --key-file "$KEY" "$@"; }
# expect RC REGEX CMD...: exit status and a one-line stderr matching REGEX, without PHI or key
expect() {
	local rc=$1 re=$2; shift 2
	local got=0
	"$@" >"$T/out" 2>"$T/err" || got=$?
	[ "$got" = "$rc" ] || fail "$* exited $got, want $rc: $(cat "$T/err")"
	grep -Eq -e "$re" "$T/err" || fail "$*: stderr '$(cat "$T/err")' lacks /$re/"
	[ "$(wc -l <"$T/err")" -le 1 ] || fail "$*: more than one error line: $(cat "$T/err")"
	if [ -s "$KEY" ] && grep -qF "$(head -c 64 "$KEY")" "$T/err" "$T/out"; then fail "key in output"; fi
	if grep -q alice-wonderland "$T/err"; then fail "patient id in an error"; fi
}
ID_RE='^g-[0-9a-f]{16}$'

# ---- usage ----
expect 2 usage "$PG"
expect 2 "unknown command" "$PG" --store "$STORE" frobnicate
expect 2 usage "$PG" --store "$STORE" revoke
"$PG" --help | grep -q emergency || fail "--help"
ok "usage errors exit 2"

"$PK" --store "$STORE" --key-file "$KEY" init >/dev/null
"$PK" --store "$STORE" --key-file "$KEY" add alice-wonderland >/dev/null
"$PK" --store "$STORE" --key-file "$KEY" add bob-the-builder >/dev/null

# ---- add ----
A=$(G add --principal user:daemon --patient alice-wonderland --role provider --purpose treatment --consent CONSENT-77 --for 24h)
[[ $A =~ $ID_RE ]] || fail "add prints an id: $A"
expect 2 "one of --for" G add --principal user:daemon --patient alice-wonderland --role provider --consent C
expect 2 "one of --for" G add --principal user:daemon --patient alice-wonderland --role provider --consent C --for 1h --until 2099-01-01T00:00:00Z
expect 2 "not a duration" G add --principal user:daemon --patient alice-wonderland --role provider --consent C --for 3d
expect 2 "not a time" G add --principal user:daemon --patient alice-wonderland --role provider --consent C --until 2026-02-30T00:00:00Z
expect 2 "not a time" G add --principal user:daemon --patient alice-wonderland --role provider --consent C --until tomorrow
expect 2 "unknown role" G add --principal user:daemon --patient alice-wonderland --role boss --for 1h
expect 2 "principal must be" G add --principal daemon --patient alice-wonderland --role service --for 1h
expect 2 "emergency command" G add --principal user:daemon --patient alice-wonderland --role provider --purpose emergency --for 1h
expect 1 "consent" G add --principal user:daemon --patient alice-wonderland --role provider --for 1h
expect 1 "72 hours" G add --principal user:daemon --patient alice-wonderland --role provider --consent C --for 73h
expect 1 "72 hours" G add --principal user:daemon --patient alice-wonderland --role provider --consent C --for 259201
G add --principal user:daemon --patient alice-wonderland --role provider --consent C --for 72h >/dev/null
expect 1 "no such patient" G add --principal user:daemon --patient carol-unknown --role service --for 1h
expect 2 "invalid patient id" G add --principal user:daemon --patient ../x --role service --for 1h
expect 1 "unknown user" G add --principal user:no-such-user-zq --patient alice-wonderland --role service --for 1h
expect 1 "unknown group" G add --principal group:no-such-group-zq --patient alice-wonderland --role service --for 1h
expect 1 "every patient" G add --principal user:daemon --patient '*' --role job --for 1h
expect 1 "already be expired" G add --principal user:daemon --patient alice-wonderland --role service --until 2001-01-01T00:00:00Z
S=$(G add --principal group:0 --patient '*' --role service --until 2099-01-01T00:00:00Z)
J=$(G add --principal user:1 --patient bob-the-builder --role job --not-before 2098-01-01T00:00:00Z --for 2h)
ok "add: ids, rules (consent, 72h, '*'), unknown patient/user, bad times"

# ---- emergency ----
expect 2 "needs --principal, --patient and --reason" G emergency --principal user:daemon --patient alice-wonderland
expect 1 "needs a reason" G emergency --principal user:daemon --patient alice-wonderland --reason ""
expect 1 "4 hours" G emergency --principal user:daemon --patient alice-wonderland --reason "cardiac arrest" --for 5h
expect 1 "one patient" G emergency --principal user:daemon --patient '*' --reason x
expect 2 "only --principal" G emergency --principal user:daemon --patient alice-wonderland --reason x --role service
expect 0 "EMERGENCY access granted until [0-9-]+T[0-9:]+Z" G emergency --principal user:daemon --patient alice-wonderland --reason "cardiac arrest, unconscious" --for 2h
E=$(cat "$T/out")
[[ $E =~ $ID_RE ]] || fail "emergency prints an id"
ok "emergency: reason required, at most 4h, one patient, flagged on stderr"

# ---- list ----
G list >"$T/list"
[ "$(wc -l <"$T/list")" = 5 ] || fail "list lines: $(cat "$T/list")"
head -1 "$T/list" | grep -Pq "^$S\tgroup:root\t\*\tservice\toperations\t" || fail "'*' grants first: $(head -1 "$T/list")"
grep -Pq "^$A\tuser:daemon\talice-wonderland\tprovider\ttreatment\t[0-9-]+T[0-9:]+Z\t[0-9-]+T[0-9:]+Z\tactive\t-\tCONSENT-77$" "$T/list" || fail "provider line: $(cat "$T/list")"
grep -Pq "^$J\tuser:daemon\tbob-the-builder\tjob\tjob\t2098-01-01T00:00:00Z\t2098-01-01T02:00:00Z\tnot-yet-valid\t" "$T/list" || fail "job line"
grep -Pq "^$E\t.*\temergency\t-$" "$T/list" || fail "emergency line"
[ "$(G list --patient bob-the-builder | cut -f1 | tr '\n' ' ')" = "$S $J " ] || fail "list --patient"
G list --json >"$T/json"
python3 - "$T/json" "$E" "$A" <<'PY'
import json, sys
g = {x["id"]: x for x in json.load(open(sys.argv[1]))}
e, a = g[sys.argv[2]], g[sys.argv[3]]
assert e["emergency"] is True and e["purpose"] == "emergency" and e["reason"].startswith("cardiac"), e
assert a["state"] == "active" and a["consent"] == "CONSENT-77" and a["principal"] == "user:daemon", a
assert a["granted_by_uid"] == 0 and a["granted_by"] == "root", a
PY
expect 2 "only --patient" G list --role service
ok "list: table, --patient, --json"

# ---- revoke ----
[ "$(G revoke "$A")" = "revoked $A" ] || fail "revoke output"
expect 1 "already revoked" G revoke "$A"
expect 1 "no such grant" G revoke g-0000000000000000
expect 2 "malformed grant id" G revoke nonsense
grep -Pq "^$A\t.*\trevoked\t" <(G list) || fail "revoked state in list"
python3 -c 'import json,sys; g={x["id"]:x for x in json.load(sys.stdin)}; a=g[sys.argv[1]]; assert a["state"]=="revoked" and "revoked_at" in a' "$A" < <(G list --json)
ok "revoke: once, unknown and malformed ids refused, list shows it"

# ---- the store ----
[ -f "$STORE/grants/all" ] || fail "grants/all"
[ "$(ls "$STORE/grants" | grep -c .)" = 3 ] || fail "one file per patient plus all: $(ls "$STORE/grants")"
if grep -rqaE 'alice-wonderland|bob-the-builder|CONSENT-77|cardiac|daemon' "$STORE"; then fail "PHI on the store"; fi
if ls "$STORE/grants" | grep -qE 'alice|bob'; then fail "patient id in a file name"; fi
f=$(ls "$STORE"/grants/* | grep -v /all | head -1)
cp "$f" "$T/saved"
python3 "$(dirname "$0")/../flip-bit.py" "$f" 40
expect 1 "corrupt or tampered" G list
cp "$T/saved" "$f"
G list >/dev/null
cp "$STORE/grants/all" "$f"
expect 1 "corrupt or tampered" G list
cp "$T/saved" "$f"
head -c 32 /dev/urandom >"$T/other.key"
chmod 600 "$T/other.key"
expect 1 "does not open" "$PG" --store "$STORE" --key-file "$T/other.key" list
ok "the store holds no PHI; tampered or swapped grant files are refused; a wrong key is refused"
