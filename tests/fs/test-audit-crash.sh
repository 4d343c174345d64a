#!/usr/bin/env bash
# test-audit-crash: kill -9 of the audit writer, and then of the mount, in the middle of a
# batch of opens from 16 threads through a real mount (-o grants,audit_socket=...). After
# each restart: every open that returned a file descriptor has its `open` record, and at
# the end the log verifies. Records name files only by path pseudonyms, so each file has a
# distinct size: pseudonym -> store path (lookup key) -> ciphertext size -> file number.
. "$(dirname "$0")/lib.sh"
: "${AUDITD:?}" "${PHIFS_AUDIT:?}" "${PHIFS_GRANT:?}"
HERE=$(cd "$(dirname "$0")" && pwd)
N=800 HALF=400 THREADS=16 KILL_AFTER=120
AK=$T/ak ALOG=$T/alog AEXP=$T/aexp ASOCK=$T/audit.sock
mkdir -p "$AK" "$AEXP"
"$PHIFS_AUDIT" keygen --out "$AK" --name phi-audit/test >/dev/null
AUDITD_PID=
trap 'phi_umount 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; [ -z "$AUDITD_PID" ] || kill -9 "$AUDITD_PID" 2>/dev/null || true; rm -rf "$T"' EXIT

# batch FIRST LAST VICTIM_PID: run the opens; once KILL_AFTER have succeeded, kill -9 VICTIM
batch() {
	python3 - "$HERE/open_batch.py" "$MNT/p-crash-0001" "$1" "$2" "$THREADS" "$3" "$KILL_AFTER" \
		>"$T/batch.$1" <<'PY'
import os, signal, subprocess, sys
prog, d, first, last, threads, victim, after = sys.argv[1:8]
p = subprocess.Popen([sys.executable, prog, d, first, last, threads], stdout=subprocess.PIPE, text=True)
ok = killed = 0
for line in p.stdout:
    sys.stdout.write(line)
    ok += line.startswith('ok ')
    if not killed and ok >= int(after):
        os.kill(int(victim), signal.SIGKILL)
        killed = 1
p.wait()
sys.exit(0 if killed else 1)
PY
}
count() { grep -c "^$1 " "$T/batch.$2" || true; }

auditd_start
export PHIFS_AUDIT_SOCKET=$ASOCK # the setup's key and grant changes are recorded too
phi_setup p-crash-0001
"$PHIFS_GRANT" --store "$STORE" --key-file "$KEY" add --principal user:0 --patient '*' \
	--role service --purpose operations --for 1h >/dev/null
phi_mount -o grants,audit_socket="$ASOCK"
python3 - "$MNT/p-crash-0001" "$N" <<'PY'
import os, sys
for i in range(int(sys.argv[2])):
    with open(os.path.join(sys.argv[1], 'f%04d' % i), 'wb') as f:
        f.write(b'x' * (i + 1))  # distinct sizes: the ciphertext size names the file
PY
ok "$N files written through the audited mount"

# 1. kill -9 of the writer in the middle of the batch: opens fail closed from then on
batch 0 "$HALF" "$AUDITD_PID" || fail "batch 1 ended before $KILL_AFTER opens succeeded"
wait "$AUDITD_PID" 2>/dev/null || true
AUDITD_PID=
ok1=$(count ok 0) bad1=$(count fail 0)
[ "$bad1" -gt 0 ] || fail "no open failed after the writer was killed"
grep "^fail " "$T/batch.0" | grep -qv EACCES && fail "an open failed otherwise than EACCES: $(grep -m1 -v '^ok' "$T/batch.0")"
auditd_start
ok "writer killed after $ok1 opens succeeded; $bad1 later opens denied (EACCES)"

# 2. kill -9 of the mount in the middle of the next batch
batch "$HALF" "$N" "$PHIFS_PID" || fail "batch 2 ended before $KILL_AFTER opens succeeded"
wait "$PHIFS_PID" 2>/dev/null || true
PHIFS_PID=
umount -l "$MNT" 2>/dev/null || fusermount3 -u -z "$MNT"
ok2=$(count ok "$HALF") bad2=$(count fail "$HALF")
[ "$bad2" -gt 0 ] || fail "no open failed after the mount was killed"
phi_mount -o grants,audit_socket="$ASOCK"
head -c1 "$MNT/p-crash-0001/f0000" >/dev/null || fail "remounted store serves nothing"
phi_umount
ok "mount killed after $ok2 opens succeeded; $bad2 later opens failed; remount serves"
kill -TERM "$AUDITD_PID"; wait "$AUDITD_PID" || fail "auditd stop"; AUDITD_PID=

# every open that returned success has its record
"$PHIFS_AUDIT" lookup-key --key-file "$KEY" --out "$T/lookup.key" >/dev/null
python3 - "$PHIFS_AUDIT" "$ALOG" "$T/lookup.key" "$STORE" "$T/batch.0" "$T/batch.$HALF" "$N" <<'PY' ||
import json, os, subprocess, sys
pa, log, lk, store, b1, b2, n = sys.argv[1:8]
# with the lookup key, query adds the store path of each record's path pseudonym
recs = [json.loads(l) for l in subprocess.run([pa, 'query', '--dir', log, '--event', 'open',
        '--format', 'json', '--lookup-key', lk], stdout=subprocess.PIPE, text=True,
        check=True).stdout.splitlines()]
# ciphertext sizes, in the order of the plaintext sizes (1..N bytes)
sizes = []
for root, dirs, files in os.walk(os.path.join(store, 'data')):
    for f in files:
        if not f.startswith('.') and not f.endswith('.n'):
            sizes.append(os.stat(os.path.join(root, f)).st_size)
sizes.sort()
if len(sizes) != int(n) or len(set(sizes)) != int(n):
    sys.exit('store files: %d, distinct sizes %d' % (len(sizes), len(set(sizes))))
rank = {s: i for i, s in enumerate(sizes)}
recorded = set()
for r in recs:
    sp = r['path_plain']
    if sp.startswith('?'):
        sys.exit('a path pseudonym does not resolve: %r' % r)
    recorded.add(rank[os.stat(os.path.join(store, sp)).st_size])
for b in (b1, b2):
    ok = {int(l.split()[1]) for l in open(b) if l.startswith('ok ')}
    missing = sorted(ok - recorded)
    if missing:
        sys.exit('%s: %d successful opens without a record, e.g. f%04d' % (b, len(missing), missing[0]))
print('%d open records, %d files with a record' % (len(recs), len(recorded)))
PY
	fail "a successful open is missing from the log"
ok "every open that returned success ($ok1 + $ok2) has its record"
"$PHIFS_AUDIT" verify --dir "$ALOG" --export-dir "$AEXP" --pubkey "$AK/phifs-audit.pub" >/dev/null ||
	fail "the log does not verify after the crashes"
ok "the log verifies"
