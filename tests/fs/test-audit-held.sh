#!/usr/bin/env bash
# test-audit-held: the audited requests that change something (create, mkdir, symlink, link,
# setattr, truncating open, rename, unlink, rmdir) are done only after their records are durable, by fs.c's
# held queue, while the mount runs its default 2 FUSE threads. 8 threads each run 40 rounds
# of all of them through a real mount (-o grants,audit_socket=...): every call succeeds, the
# tree ends as the calls say, and the log holds exactly one record per call (two per
# rename: source and target) naming the calling thread. Then phifs-auditd is killed (kill -9):
# every such call is denied (EACCES) and changes nothing (no unaudited change), and after a
# restart of the writer they work again and the log verifies.
. "$(dirname "$0")/lib.sh"
: "${AUDITD:?}" "${PHIFS_AUDIT:?}" "${PHIFS_GRANT:?}"
AK=$T/ak ALOG=$T/alog AEXP=$T/aexp ASOCK=$T/audit.sock
mkdir -p "$AK" "$AEXP"
"$PHIFS_AUDIT" keygen --out "$AK" --name phi-audit/test >/dev/null
AUDITD_PID=
trap 'phi_umount 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; [ -z "$AUDITD_PID" ] || kill -9 "$AUDITD_PID" 2>/dev/null || true; rm -rf "$T"' EXIT
auditd_start
export PHIFS_AUDIT_SOCKET=$ASOCK
phi_setup p-held-0001
"$PHIFS_GRANT" --store "$STORE" --key-file "$KEY" add --principal user:0 --patient '*' \
	--role service --purpose operations --for 1h >/dev/null
# as a service runs it: daemonized (fork), so every thread it needs is made after the fork
"$PHIFS" --key-file "$KEY" -o grants,audit_socket="$ASOCK" "$STORE" "$MNT" 2>>"$T/phifs.log" ||
	fail "mount"
P=$MNT/p-held-0001

python3 - "$P" >"$T/rounds.txt" <<'PY' || fail "audited changes from 8 threads"
import os, sys, threading
d = sys.argv[1]
THREADS, ROUNDS = 8, 40
errors, tids = [], []
def run(k):
    tids.append(threading.get_native_id()) # the caller's pid as FUSE (and the record) sees it
    try:
        for i in range(ROUNDS):
            b = os.path.join(d, 't%d-%03d' % (k, i))
            fd = os.open(b, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)   # create
            os.write(fd, b'x' * (i + 1))
            os.close(fd)
            os.chmod(b, 0o640)                                            # setattr
            fd = os.open(b, os.O_WRONLY | os.O_TRUNC)                     # truncating open
            os.write(fd, b'y' * (i + 1))
            os.close(fd)
            os.rename(b, b + '.r')                                        # rename (2 records)
            os.mkdir(b + '.d')                                            # mkdir (create)
            os.symlink('target', b + '.l')                                # symlink (create)
            os.link(b + '.r', b + '.h')                                   # link (create)
            os.unlink(b + '.h')                                           # unlink
            os.unlink(b + '.l')                                           # unlink
            os.rmdir(b + '.d')                                            # rmdir (unlink)
    except OSError as e:
        errors.append('%d: %s' % (k, e))
ts = [threading.Thread(target=run, args=(k,)) for k in range(THREADS)]
[t.start() for t in ts]
[t.join() for t in ts]
if errors:
    sys.exit('; '.join(errors[:3]))
names = sorted(os.listdir(d))
want = sorted('t%d-%03d.r' % (k, i) for k in range(THREADS) for i in range(ROUNDS))
if names != want:
    sys.exit('tree: %d names, want %d' % (len(names), len(want)))
for k in range(THREADS):
    for i in range(ROUNDS):
        st = os.stat(os.path.join(d, 't%d-%03d.r' % (k, i)))
        if st.st_size != i + 1 or st.st_mode & 0o777 != 0o640:
            sys.exit('t%d-%03d.r: size %d mode %o' % (k, i, st.st_size, st.st_mode & 0o777))
print(THREADS * ROUNDS, ','.join(map(str, tids)))
PY
read -r rounds tids <"$T/rounds.txt"
ok "$rounds rounds of create, setattr, O_TRUNC open, rename, mkdir, symlink, link, unlink, rmdir from 8 threads"

kill -9 "$AUDITD_PID"
wait "$AUDITD_PID" 2>/dev/null || true
AUDITD_PID=
python3 - "$P" <<'PY' || fail "changes without a writer"
import errno, os, sys
d = sys.argv[1]
calls = [
    ('create', lambda: os.close(os.open(os.path.join(d, 'n'), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))),
    ('mkdir', lambda: os.mkdir(os.path.join(d, 'nd'))),
    ('symlink', lambda: os.symlink('x', os.path.join(d, 'nl'))),
    ('link', lambda: os.link(os.path.join(d, 't0-000.r'), os.path.join(d, 'nh'))),
    ('chmod', lambda: os.chmod(os.path.join(d, 't0-000.r'), 0o600)),
    ('rename', lambda: os.rename(os.path.join(d, 't0-001.r'), os.path.join(d, 'moved'))),
    ('unlink', lambda: os.unlink(os.path.join(d, 't0-002.r'))),
    ('O_TRUNC open', lambda: os.open(os.path.join(d, 't0-003.r'), os.O_WRONLY | os.O_TRUNC)),
]
for what, f in calls:
    try:
        f()
        sys.exit('%s succeeded without an audit writer' % what)
    except OSError as e:
        if e.errno != errno.EACCES:
            sys.exit('%s: %s (want EACCES)' % (what, e))
# by lookups (not recorded): a listing is an opendir, which is refused as well
exists = lambda n: os.path.lexists(os.path.join(d, n))
for n in ('n', 'nd', 'nl', 'nh', 'moved'):
    if exists(n):
        sys.exit('%s exists: a denied request was done' % n)
for n in ('t0-001.r', 't0-002.r'):
    if not exists(n):
        sys.exit('%s is gone: a denied request was done' % n)
if os.stat(os.path.join(d, 't0-000.r')).st_mode & 0o777 != 0o640:
    sys.exit('a denied chmod changed the mode')
if os.stat(os.path.join(d, 't0-003.r')).st_size != 4:
    sys.exit('a denied truncating open truncated')
PY
ok "no writer: create, mkdir, symlink, link, chmod, rename, unlink, O_TRUNC open denied (EACCES), nothing changed"

auditd_start
for _ in $(seq 100); do # the mount reconnects on its next submission (not a timing assertion)
	python3 -c "import os,sys; os.mkdir(sys.argv[1])" "$P/again" 2>/dev/null && break
	sleep 0.05
done
[ -d "$P/again" ] || fail "writer back, mkdir still refused"
ok "writer back: changes served again"

# the path pseudonym of an open names the path opened, also after a rename (fs.c keeps a
# node's last pseudonym with the store path it was made of)
ps_pid=$(python3 - "$P" <<'PY'
import os, sys
d = sys.argv[1]
os.close(os.open(os.path.join(d, 'ps-a'), os.O_WRONLY | os.O_CREAT, 0o600))
for _ in range(2):
    os.close(os.open(os.path.join(d, 'ps-a'), os.O_RDONLY))
os.rename(os.path.join(d, 'ps-a'), os.path.join(d, 'ps-b'))
os.close(os.open(os.path.join(d, 'ps-b'), os.O_RDONLY))
print(os.getpid())
PY
) || fail "opens and a rename"

phi_umount
"$PHIFS_AUDIT" lookup-key --key-file "$KEY" --out "$T/lookup.key" >/dev/null
"$PHIFS_AUDIT" query --dir "$ALOG" --format json >"$T/ps.json"
python3 - "$T/ps.json" "$ps_pid" "$PHIFS_AUDIT" "$T/lookup.key" "$STORE" <<'PY' || fail "path pseudonyms"
import json, os, subprocess, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
pid, pa, lk, store = int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
ps = [r['obj']['path'] for r in recs if r.get('actor', {}).get('pid') == pid and r['event'] == 'open']
if len(ps) != 3 or ps[0] != ps[1] or ps[1] == ps[2]:
    sys.exit('open path pseudonyms (twice ps-a, then ps-b): %r' % ps)
path = [subprocess.run([pa, 'resolve', '--lookup-key', lk, p], stdout=subprocess.PIPE, text=True,
                       check=True).stdout.strip() for p in (ps[0], ps[2])]
if os.path.exists(os.path.join(store, path[0])) or not os.path.isfile(os.path.join(store, path[1])):
    sys.exit('resolved store paths %r: the first is gone after the rename, the second is there' % path)
PY
ok "path pseudonyms: the same for the same path, the new path's after a rename"
kill -TERM "$AUDITD_PID"
wait "$AUDITD_PID" || fail "phifs-auditd stop"
AUDITD_PID=
"$PHIFS_AUDIT" query --dir "$ALOG" --format json >"$T/recs.json"
python3 - "$T/recs.json" "$rounds" "$tids" <<'PY' || fail "records of the held requests"
import collections, json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
rounds, tids = int(sys.argv[2]), {int(t) for t in sys.argv[3].split(',')}
c = collections.Counter(r['event'] for r in recs if r.get('actor', {}).get('pid') in tids and r.get('outcome') == 0)
want = {'create': 4 * rounds, 'setattr': rounds, 'open': rounds, 'rename': 2 * rounds, 'unlink': 3 * rounds}
got = {k: c.get(k, 0) for k in want}
if got != want:
    sys.exit('records by event: %r, want %r' % (got, want))
print('records:', got)
PY
"$PHIFS_AUDIT" verify --dir "$ALOG" --export-dir "$AEXP" --pubkey "$AK/phifs-audit.pub" >/dev/null ||
	fail "the log does not verify"
ok "one record per change (two per rename), each with its caller's thread; the log verifies"
