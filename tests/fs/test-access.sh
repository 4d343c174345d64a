#!/usr/bin/env bash
# test-access: roles, grants and the audit log through a real mount
# (phifs -o grants,audit_socket=... with phifs-auditd). Callers of other uids are made with
# setpriv, so no system users are needed. Checks: each role's allowed and denied
# operations, the root listing, a revocation seen by the running mount, the emergency
# flow, every open and every denial recorded before it returns, a dead audit writer
# denying opens (fail closed), and a log that verifies afterwards.
. "$(dirname "$0")/lib.sh"
: "${PHIFS_GRANT:?}" "${AUDITD:?}" "${PHIFS_AUDIT:?}"
command -v setpriv >/dev/null || { echo "SKIP: no setpriv"; exit 77; }

# grants name real accounts (phifs-grant refuses unknown users): make the test's own,
# and remove the ones this run made
MADE_USERS=()
for u in 4001 4002 4003 4004 4005 4006; do
	getent passwd "$u" >/dev/null && continue
	useradd -u "$u" -M -N -s /usr/sbin/nologin "phitest$u" 2>/dev/null || { echo "SKIP: useradd failed"; exit 77; }
	MADE_USERS+=("phitest$u")
done
chmod 711 "$T" # other uids must reach the mount point
G() { "$PHIFS_GRANT" --store "$STORE" --key-file "$KEY" "$@"; }
K() { "$PHIFS_KEY" --store "$STORE" --key-file "$KEY" "$@"; }
settle() { sleep 1.1; } # a running mount sees grant changes within a second
AK=$T/ak ALOG=$T/alog AEXP=$T/aexp ASOCK=$T/audit.sock
mkdir -p "$AK" "$AEXP"
"$PHIFS_AUDIT" keygen --out "$AK" --name phi-audit/test >/dev/null
AUDITD_PID=
auditd_cleanup() { [ -z "$AUDITD_PID" ] || kill -9 "$AUDITD_PID" 2>/dev/null || true; }
trap 'phi_cleanup_all' EXIT
phi_cleanup_all() {
	phi_umount 2>/dev/null || true
	auditd_cleanup
	rm -rf "$T"
	for u in "${MADE_USERS[@]}"; do userdel "$u" 2>/dev/null || true; done
}
auditd_start
# key and grant changes are recorded in this log (meson sets "none" for the other tests)
export PHIFS_AUDIT_SOCKET=$ASOCK
phi_setup p-alpha-000111 p-beta-000222

# the tools fail closed: without a writer no key or grant change happens
kill -9 "$AUDITD_PID"; wait "$AUDITD_PID" 2>/dev/null || true; AUDITD_PID=
K add p-gamma-000333 2>"$T/err" && fail "patient added without an audit record"
grep -q "audit log did not record" "$T/err" || fail "phifs-key refusal: $(cat "$T/err")"
G add --principal user:0 --patient '*' --role service --purpose operations --for 1h 2>"$T/err" &&
	fail "grant added without an audit record"
K list | grep -q p-gamma && fail "the refused patient exists"
[ -z "$(G list)" ] || fail "the refused grant exists"
env -u PHIFS_AUDIT_SOCKET "$PHIFS_KEY" --store "$STORE" --key-file "$KEY" rotate p-alpha-000111 \
	2>"$T/err" && fail "rotate ran with no audit log configured"
grep -q "audit-socket" "$T/err" || fail "no-config refusal: $(cat "$T/err")"
auditd_start
ok "phifs-key and phifs-grant refuse changes they cannot record"

# root writes through a service grant; others get their own grants below
G add --principal user:0 --patient '*' --role service --purpose operations --for 1h >/dev/null
phi_mount -o grants,audit_socket="$ASOCK",allow_other
A=$MNT/p-alpha-000111 B=$MNT/p-beta-000222
mkdir "$A/notes" "$A/results"
echo "visit note" >"$A/notes/n1.txt"
echo "beta note" >"$B/b1.txt"
chmod -R a+rwX "$A"/* "$B"/*
ok "service role writes both patients"

as() { local u=$1; shift; setpriv --reuid="$u" --regid="$u" --clear-groups "$@"; }
denied() { # UID CMD...: the command must fail with EACCES
	local u=$1; shift
	out=$(as "$u" "$@" 2>&1) && fail "uid $u allowed: $*"
	case $out in *"ermission denied"*) ;; *) fail "uid $u: not EACCES: $*: $out" ;; esac
}

# provider 4001: consent grant on alpha only
gid=$(G add --principal user:4001 --patient p-alpha-000111 --role provider --purpose treatment \
	--consent form-17 --for 24h)
settle
[ "$(as 4001 cat "$A/notes/n1.txt")" = "visit note" ] || fail "provider read"
as 4001 sh -c "echo addendum >> '$A/notes/n1.txt'" || fail "provider write"
denied 4001 cat "$B/b1.txt"
[ "$(as 4001 ls "$MNT")" = p-alpha-000111 ] || fail "provider's root listing: $(as 4001 ls "$MNT")"
ok "provider: own patient read/write, other patient EACCES, root lists only granted patients"
G add --principal user:4009 --patient p-alpha-000111 --role provider --purpose treatment \
	--consent x --for 73h >/dev/null 2>&1 && fail "provider grant over 72h accepted"
ok "provider grant over 72 hours refused"

# entries below a patient are cached by the kernel for a second, the patient itself never:
# a caller without a grant, right after one with a grant, is still stopped at the patient
as 4001 stat "$A/notes/n1.txt" >/dev/null || fail "provider stat"
denied 4006 stat "$A/notes/n1.txt"
denied 4006 ls "$A/notes"
ok "metadata cached for one caller is not served to another"

# a process already inside the patient when its grant goes (its cwd skips the patient's
# gate) sees cached metadata for at most a second more, then EACCES
as 4001 ln -s "target-of-the-link" "$A/notes/ln" || fail "provider symlink"
as 4001 sh -c "cd '$A/notes' && sleep 4 && exec stat n1.txt" >"$T/cwd.out" 2>&1 &
cwdpid=$!
# while a caller with a grant (root, service) keeps walking to the link, its dentry stays
# in the kernel's cache, which the revoked holder's walk from its cwd may use; reading the
# link's target still asks the policy (op_readlink's gate)
as 4001 sh -c "cd '$A/notes' && sleep 4 && exec readlink ln" >"$T/rl.out" 2>&1 &
rlpid=$!
(for _ in $(seq 40); do stat "$A/notes/ln" >/dev/null 2>&1; sleep 0.15; done) &
walkpid=$!
sleep 0.5
# revocation reaches the running mount within a second (policy refresh), no remount
G revoke "$gid" >/dev/null
sleep 1.2
denied 4001 cat "$A/notes/n1.txt"
wait "$cwdpid" && fail "a process inside the patient still stats after the revocation"
grep -q "ermission denied" "$T/cwd.out" || fail "cwd inside the patient: $(cat "$T/cwd.out")"
wait "$rlpid" && fail "a process inside the patient still reads a link's target after the revocation"
! grep -q "target-of-the-link" "$T/rl.out" || fail "link target served after the revocation"
wait "$walkpid" || true
rm -f "$A/notes/ln"
ok "revoked grant denied by the running mount, also to a process already inside the patient"

# job 4002: reads the patient, writes only under results/
G add --principal user:4002 --patient p-alpha-000111 --role job --purpose job --for 1h >/dev/null
settle
as 4002 cat "$A/notes/n1.txt" >/dev/null || fail "job read"
as 4002 sh -c "echo summary > '$A/results/s.txt'" || fail "job write results"
# gpurun's atomic results: a subfolder, a temp file renamed over an older one, an unlink
as 4002 sh -c "mkdir -p '$A/results/j1' && echo a > '$A/results/j1/.o.tmp' && mv '$A/results/j1/.o.tmp' '$A/results/j1/o' && echo b > '$A/results/j1/.o.tmp' && mv '$A/results/j1/.o.tmp' '$A/results/j1/o' && echo x > '$A/results/j1/y' && rm '$A/results/j1/y'" ||
	fail "job: mkdir, rename over, unlink below results/"
[ "$(as 4002 cat "$A/results/j1/o")" = b ] || fail "job: renamed result"
denied 4002 mv "$A/results" "$A/results2"
denied 4002 rmdir "$A/results"
denied 4002 sh -c "echo x > '$A/notes/evil.txt'"
denied 4002 rm "$A/notes/n1.txt"
denied 4002 cat "$B/b1.txt"
ok "job: reads its patient, writes only results/"

# admin 4003 and auditor 4005: no PHI, not even names
G add --principal user:4003 --patient '*' --role admin --purpose operations --for 1h >/dev/null
G add --principal user:4005 --patient '*' --role auditor --purpose operations --for 1h >/dev/null
settle
for u in 4003 4005; do
	denied "$u" ls "$A"
	denied "$u" cat "$A/notes/n1.txt"
done
ok "admin and auditor: no listing, no reads inside patients"

# root itself is not special once the service grant is revoked... (other uid: no grant)
denied 4006 cat "$A/notes/n1.txt"
[ -z "$(as 4006 ls "$MNT")" ] || fail "ungranted uid sees patients"
ok "no grant: empty root, EACCES inside"

# emergency access: granted with a reason, flagged in the log
G emergency --principal user:4004 --patient p-beta-000222 --reason "unconscious, ER bay 3" --for 1h >/dev/null
settle
as 4004 cat "$B/b1.txt" >/dev/null || fail "emergency read"
ok "emergency access works"

# fail closed: no audit writer, no PHI
kill -9 "$AUDITD_PID"; wait "$AUDITD_PID" 2>/dev/null || true; AUDITD_PID=
sleep 0.2
cat "$A/notes/n1.txt" >/dev/null 2>&1 && fail "open served without a durable audit record"
auditd_start
# the mount's pooled connections to the dead writer are dropped before use: no retry needed
cat "$A/notes/n1.txt" >/dev/null || fail "the first open after the writer's restart failed"
ok "audit writer down: opens denied; back: the next open is served"

# a writer that stops answering (SIGSTOP): the open waits for its record no longer than the
# client's deadline (500 ms) and is then denied; once the writer resumes, opens are served
kill -STOP "$AUDITD_PID"
if cat "$A/notes/n1.txt" >/dev/null 2>"$T/err"; then
	kill -CONT "$AUDITD_PID"
	fail "open served while the audit writer was stopped"
fi
kill -CONT "$AUDITD_PID"
grep -q "Permission denied" "$T/err" || fail "stopped writer: $(cat "$T/err")"
cat "$A/notes/n1.txt" >/dev/null || fail "the first open after the writer resumed failed"
ok "audit writer hung: the open is denied at the deadline; resumed: served"

# grant expiry: an attempt under an expired grant is denied, and the mount records the
# expiry itself once (grant-expire), then a denial per attempt
# (8 s: long enough for the read below on a loaded 2-core machine; then wait out the expiry
# from the clock, not a fixed sleep)
t0=$(date +%s)
xgid=$(G add --principal user:4006 --patient p-alpha-000111 --role provider --purpose treatment \
	--consent form-9 --for 8s)
settle
as 4006 cat "$A/notes/n1.txt" >/dev/null || fail "short grant read"
while [ "$(date +%s)" -le $((t0 + 9)) ]; do sleep 0.2; done
denied 4006 cat "$A/notes/n1.txt"
denied 4006 cat "$A/notes/n1.txt"
ok "expired grant denied at open"

phi_umount

# key events on the unmounted store: one durable record each before the change
"$PHIFS_AUDIT" lookup-key --key-file "$KEY" --out "$T/lookup.key" >/dev/null
PA_ALPHA=$("$PHIFS_AUDIT" pseudonym --lookup-key "$T/lookup.key" --patient p-alpha-000111)
PA_BETA=$("$PHIFS_AUDIT" pseudonym --lookup-key "$T/lookup.key" --patient p-beta-000222)
K rotate p-alpha-000111 >/dev/null
K rewrap p-alpha-000111 >/dev/null
K shred p-beta-000222 --yes >/dev/null
K rotate p-nobody-999 2>/dev/null && fail "rotate of an unknown patient"
K rekey-master --new-key-file "$T/master2.key" >/dev/null
ok "rotate, rewrap, shred, rekey-master with audit"
kill -TERM "$AUDITD_PID"; wait "$AUDITD_PID" || fail "auditd stop"; AUDITD_PID=

# the log: every kind of record above is there, PHI-free, and it verifies
q() { "$PHIFS_AUDIT" query --dir "$ALOG" --format json "$@"; }
python3 - "$ALOG" "$PA_ALPHA" "$PA_BETA" "$gid" "$xgid" <<PY || fail "audit log content"
import json, subprocess, sys
recs = [json.loads(l) for l in subprocess.run(["$PHIFS_AUDIT", "query", "--dir", sys.argv[1],
        "--format", "json"], stdout=subprocess.PIPE, text=True, check=True).stdout.splitlines()]
blob = json.dumps(recs)
def has(pred, what):
    if not any(pred(r) for r in recs):
        sys.exit(f"no record: {what}")
ev = lambda r: r.get("event")
uid = lambda r: r.get("actor", {}).get("uid")
has(lambda r: ev(r) == "mount", "mount")
has(lambda r: ev(r) == "unmount", "unmount")
has(lambda r: ev(r) == "open" and uid(r) == 4001, "provider open")
has(lambda r: ev(r) == "deny" and uid(r) == 4001, "provider denial after revoke")
has(lambda r: ev(r) == "deny" and uid(r) == 4003, "admin denial")
has(lambda r: ev(r) == "deny" and uid(r) == 4002, "job denial outside results/")
has(lambda r: ev(r) == "create" and uid(r) == 4002, "job create in results/")
has(lambda r: uid(r) == 4004 and "emergency" in json.dumps(r), "emergency use flagged")
alpha, beta, gid, xgid = sys.argv[2:6]
pt = lambda r: r.get("object", {}).get("patient") or r.get("obj", {}).get("patient") or r.get("patient")
def count(pred):
    return sum(1 for r in recs if pred(r))
ok0 = lambda r: r.get("outcome") == 0
op = lambda r: r.get("actor", {}).get("role") == "operator"
# key events: one success record each, by the operator, naming the patient's pseudonym
for e, p in (("key-add", alpha), ("key-add", beta), ("key-rotate", alpha), ("key-rewrap", alpha),
             ("key-shred", beta)):
    n = count(lambda r: ev(r) == e and pt(r) == p and ok0(r) and op(r) and uid(r) == 0)
    if n != 1:
        sys.exit(f"{e}: {n} success records for the patient, want 1")
if count(lambda r: ev(r) == "key-rekey" and ok0(r) and op(r)) != 1:
    sys.exit("key-rekey record")
# the refused patient left no record (the writer was down); the failed rotate left two
if count(lambda r: ev(r) == "key-add") != 2:
    sys.exit("key-add records: %d" % count(lambda r: ev(r) == "key-add"))
if count(lambda r: ev(r) == "key-rotate" and r.get("outcome") == 8) != 1:
    sys.exit("the failed rotate has no failure record")
gr = lambda r: r.get("why", {}).get("grant")
for e, g in (("grant-create", gid), ("grant-revoke", gid), ("grant-create", xgid)):
    if count(lambda r: ev(r) == e and gr(r) == g and pt(r) == alpha and ok0(r) and op(r)) != 1:
        sys.exit(f"{e} record of {g}")
if count(lambda r: ev(r) == "emergency" and pt(r) == beta and op(r) and r.get("action") == "C") != 1:
    sys.exit("emergency grant record")
if count(lambda r: ev(r) == "grant-expire" and gr(r) == xgid and pt(r) == alpha and uid(r) == 4006) != 1:
    sys.exit("grant-expire: want exactly one record of the expired grant")
if count(lambda r: ev(r) == "deny" and gr(r) == xgid) < 2:
    sys.exit("denials under the expired grant")
for marker in ("p-alpha-000111", "p-beta-000222", "n1.txt", "visit note", "unconscious"):
    if marker in blob:
        sys.exit(f"PHI in the audit log: {marker}")
print(f"{len(recs)} records")
PY
"$PHIFS_AUDIT" verify --dir "$ALOG" --export-dir "$AEXP" --pubkey "$AK/phifs-audit.pub" >/dev/null ||
	fail "audit log does not verify"
ok "audit: opens, creates, denials, emergency, mount/unmount recorded without PHI; log verifies"
