#!/usr/bin/env bash
# test-intake: real inotify, thousands of job files dropped in bursts (by rename and by
# writing in place), some while spoold is stopped, one held open half-written across a
# restart: each is taken exactly once (one result, one run in the runner's ledger), and the
# half-written one only after its writer closed it. Also READY=1 / STATUS= over a real
# sd_notify socket.
. "$(dirname "$0")/lib.sh"
N1=${N1:-500} N2=${N2:-400} N3=${N3:-600}
export SPOOLD_TEST_SLEEP=0
write_conf

# an sd_notify listener
NS=$T/notify.sock
python3 - "$NS" "$T/notify.log" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
with open(sys.argv[2], "a") as f:
    while True:
        m = s.recv(4096).decode()
        f.write(m.replace("\n", "|") + "\n"); f.flush()
PY
LPID=$!
trap 'kill $LPID 2>/dev/null; cleanup' EXIT
wait_for 10 "notify socket" test -S "$NS"

NOTIFY_SOCKET=$NS start
wait_for 30 "READY=1" grep -q 'READY=1' "$T/notify.log"

# burst 1 while running: half by rename, half written in place
python3 - "$SP" 0 "$N1" <<'PY'
import os, sys
sp, a, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(a, a + n):
    body = ('{"version":1,"id":"b%05d","patient":"p1","documents":["*.txt"],"task":"summarize",'
            '"model":"m","max_tokens":8,"requested_by":"t","purpose":"operations"}' % i)
    if i % 2:
        with open(f"{sp}/tmp/.b{i}", "w") as f: f.write(body)
        os.rename(f"{sp}/tmp/.b{i}", f"{sp}/incoming/b{i:05d}.json")
    else:
        with open(f"{sp}/incoming/b{i:05d}.json", "w") as f: f.write(body)
PY
stop
# burst 2 while stopped, and one file held open half-written across the restart
python3 - "$SP" "$N1" "$N2" <<'PY'
import os, sys
sp, a, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(a, a + n):
    body = ('{"version":1,"id":"b%05d","patient":"p1","documents":["*.txt"],"task":"summarize",'
            '"model":"m","max_tokens":8,"requested_by":"t","purpose":"operations"}' % i)
    with open(f"{sp}/incoming/b{i:05d}.json", "w") as f: f.write(body)
PY
python3 - "$SP/incoming/half.json" "$T/release" <<'PY' &
import os, sys, time
body = ('{"version":1,"id":"half","patient":"p1","documents":["*.txt"],"task":"summarize",'
        '"model":"m","max_tokens":8,"requested_by":"t","purpose":"operations"}')
with open(sys.argv[1], "w") as f:
    f.write(body[:40]); f.flush()
    open(sys.argv[1] + ".opened", "w").close() if False else None
    while not os.path.exists(sys.argv[2]): time.sleep(0.05)
    f.write(body[40:])
PY
HPID=$!
wait_for 10 "half-written file" test -s "$SP/incoming/half.json"
NOTIFY_SOCKET=$NS start
# burst 3 while running
python3 - "$SP" $((N1 + N2)) "$N3" <<'PY'
import os, sys
sp, a, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
for i in range(a, a + n):
    body = ('{"version":1,"id":"b%05d","patient":"p1","documents":["*.txt"],"task":"summarize",'
            '"model":"m","max_tokens":8,"requested_by":"t","purpose":"operations"}' % i)
    with open(f"{sp}/tmp/.b{i}", "w") as f: f.write(body)
    os.rename(f"{sp}/tmp/.b{i}", f"{sp}/incoming/b{i:05d}.json")
PY
TOTAL=$((N1 + N2 + N3))
wait_for 170 "$TOTAL jobs done" sh -c "[ \$(ls $SP/done | grep -c '^b.*result.json$') -ge $TOTAL ]"
# every other file is through: the half-written one is still waiting, not refused
[ -f "$SP/incoming/half.json" ] || fail "the half-written file was taken while open for writing"
[ -z "$(ls "$SP/failed/rejected")" ] || fail "files were refused: $(cat "$SP"/failed/rejected/*.reason | sort | uniq -c)"
touch "$T/release"; wait $HPID
wait_for 30 "the half-written file, once closed" test -f "$SP/done/half.result.json"
alive || fail "spoold died"
stop

# exactly once: one result per id, no file left behind, each job ran once
[ "$(n_done)" = $((TOTAL + 1)) ] || fail "done: $(n_done), want $((TOTAL + 1))"
[ "$(n_failed)" = 0 ] || fail "failed: $(n_failed)"
for d in incoming queue active; do [ -z "$(ls "$SP/$d")" ] || fail "$d/ not empty: $(ls "$SP/$d" | head)"; done
[ "$(wc -l < "$T/ledger")" = $((TOTAL + 1)) ] || fail "ledger has $(wc -l < "$T/ledger") runs for $((TOTAL + 1)) jobs"
dups=$(cut -d' ' -f1 "$T/ledger" | sort | uniq -d | head)
[ -z "$dups" ] || fail "jobs ran twice: $dups"
grep -q '^STATUS=queued' "$T/notify.log" || fail "no STATUS= notification"
grep -q 'STOPPING=1' "$T/notify.log" || fail "no STOPPING=1"
[ "$(grep -c 'READY=1' "$T/notify.log")" = 2 ] || fail "READY=1 not sent once per start"
echo "ok: $((TOTAL + 1)) jobs, each taken and run exactly once"
