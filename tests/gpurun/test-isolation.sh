#!/usr/bin/env bash
# test-isolation: gpurun run by hand (the --patient form) with its test hooks, which stop
# the worker (SIGSTOP) at a chosen point so the test can look at it:
# - at its first generated token: the job's mount exists in the worker's namespace and in no other
#   (host mountinfo, another process's); the job user's attempt on another patient's file
#   through that mount is denied and audited; a document marker IS in the worker's memory
#   (this proves the memory scan can see it, and that the test can fail);
# - after the scrub: the marker and other document text are absent from its memory;
# - afterwards: no mount, no mount point, no temp file; the status JSON says what was scrubbed;
# - SIGTERM mid-inference: exit 9, scrubbed, unmounted; a job with no document: exit 5,
#   unmounted.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/run-lib.sh"
. "$here/docs-lib.sh"
command -v nsenter >/dev/null && command -v setpriv >/dev/null || skip "no nsenter/setpriv"

run_store p-alpha p-beta p-gamma
write_docs
run_config
G add --principal user:nobody --patient p-alpha --role job --purpose job --for 1h >/dev/null
sleep 1.1 # the next mount reads grants anyway; this keeps the service mount's view fresh too

gpurun_bg() { # ID HOOK [ARGS...]: gpurun in the background, its output in $T/ID.out
	local id=$1 hook=$2; shift 2
	GPURUN_TEST_STOP=$hook "$GPURUN" --config "$T/gpurun.conf" --status "$T/$id.status.json" \
		--patient p-alpha --task summarize --model model.gguf --max-tokens 24 --id "$id" "$@" \
		>"$T/$id.out" 2>&1 &
	GP=$!
}
worker_of() { sed -n 's/.*worker_pid=\([0-9]*\).*/\1/p' "$T/$1.out"; }
stopped() { [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = T ]; }
have_worker() { [ -n "$(worker_of "$1")" ]; }

gpurun_bg iso-1 inference,after-scrub --documents 'notes/*' --documents 'fhir/*.json'
wait_for 120 "the worker" have_worker iso-1
W=$(worker_of iso-1)
wait_for 120 "the worker to stop at its first generated token" stopped "$W"

# the mount: in the worker's namespace only
MP=$(awk -v r="$RUN/" 'index($5, r) == 1 {print $5}' "/proc/$W/mountinfo")
[ -n "$MP" ] || fail "no job mount in the worker's namespace"
grep -qF "$RUN/" /proc/self/mountinfo && fail "the job mount is visible in the test's namespace"
grep -qF "$RUN/" "/proc/$SVC_PID/mountinfo" && fail "the job mount is visible to another process (phifs of the service)"
grep -qF "$RUN/" /proc/1/mountinfo && fail "the job mount is visible to pid 1"
[ -z "$(ls -A "$MP" 2>/dev/null)" ] || fail "the mount point shows the job's files on the host"
ok "while it runs, the job's mount exists only in gpurun's namespace"

# the job user on another patient, through the job's own mount: denied and audited
out=$(nsenter -t "$W" -m setpriv --reuid=nobody --regid=nogroup --clear-groups cat "$MP/p-beta/notes/b.txt" 2>&1) &&
	fail "the job user read another patient's file"
case $out in *"ermission denied"*) ;; *) fail "not EACCES: $out" ;; esac
nsenter -t "$W" -m setpriv --reuid=nobody --regid=nogroup --clear-groups cat "$MP/p-alpha/notes/visit.md" >/dev/null ||
	fail "the job user cannot read its own patient (control)"
PB=$("$PHIFS_AUDIT" pseudonym --lookup-key "$T/lookup.key" --patient p-beta)
"$PHIFS_AUDIT" query --dir "$ALOG" --format json >"$T/audit.json"
python3 - "$T/audit.json" "$PB" "$(id -u nobody)" <<'PY' || fail "the denial is not in the audit log"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
pb, uid = sys.argv[2], int(sys.argv[3])
d = [r for r in recs if r["event"] == "deny" and r["actor"]["uid"] == uid and r.get("obj", {}).get("patient") == pb]
assert d, "no deny record"
PY
ok "the job user's attempt on another patient is denied (EACCES) and audited"

"$here/memscan.py" "$W" "$MARK_A" >"$T/scan-before.txt"
grep -q "found $MARK_A" "$T/scan-before.txt" || fail "control: the marker is not in memory before the scrub ($(cat "$T/scan-before.txt"))"
ok "control: during inference the document marker is in the worker's memory"
kill -CONT "$W"
wait_for 120 "the worker to stop after its scrub" stopped "$W"
"$here/memscan.py" "$W" "$MARK_A" "Referred to diabetes clinic" "Type 2 diabetes mellitus" "blood pressure 130/85" >"$T/scan-after.txt"
grep -q "^found" "$T/scan-after.txt" && fail "document text in memory after the scrub: $(grep found "$T/scan-after.txt")"
ok "after the scrub: no document text in the worker's memory ($(grep -c absent "$T/scan-after.txt") strings checked)"
kill -CONT "$W"
wait "$GP" || fail "gpurun exit $?: $(tail -3 "$T/iso-1.out")"
S=$T/iso-1.status.json
[ "$(json "$S" scrub.mount.gone)" = True ] && [ "$(json "$S" scrub.mount.unmounted)" = True ] || fail "status: mount"
[ "$(json "$S" scrub.host.stack_burned)" = True ] || fail "status: stack"
[ "$(json "$S" scrub.host.buffers_wiped)" -ge 5 ] || fail "status: buffers"
[ "$(json "$S" scrub.device.backend)" = cpu ] && [ "$(json "$S" scrub.device.zeroed)" = False ] || true
grep -qF "$RUN/" /proc/self/mountinfo && fail "mount left"
[ -z "$(ls -A "$RUN")" ] || fail "mount point left"
find "$RUN" "$T" -name '.*.tmp' -not -path "$STORE/*" | grep -q . && fail "temp file left"
grep -qaF -e "$MARK_A" -e metformin "$T/iso-1.out" && fail "PHI on gpurun's stdout/stderr"
ok "after the run: mount gone, no mount point, no temp file, status says what was scrubbed, no PHI in the output"

# SIGTERM mid-inference (spoold's lifetime or a cancel): scrubbed and unmounted, exit 9
gpurun_bg iso-2 inference --documents 'notes/*'
wait_for 120 "the worker" have_worker iso-2
W=$(worker_of iso-2)
wait_for 120 "the worker to stop mid-inference" stopped "$W"
kill -TERM "$GP"
kill -CONT "$W"
set +e; wait "$GP"; rc=$?; set -e
[ "$rc" = 9 ] || fail "SIGTERM: exit $rc, not 9"
S=$T/iso-2.status.json
[ "$(json "$S" scrub.host.engine_freed)" = True ] && [ "$(json "$S" scrub.mount.gone)" = True ] || fail "SIGTERM: not scrubbed"
grep -qF "$RUN/" /proc/self/mountinfo && fail "SIGTERM: mount left"
ok "SIGTERM mid-inference: exit 9, engine freed, buffers wiped, mount gone"

# an error path: no document matches
set +e
"$GPURUN" --config "$T/gpurun.conf" --status "$T/iso-3.status.json" --patient p-alpha --task summarize \
	--model model.gguf --documents 'nothing/*' --id iso-3 >"$T/iso-3.out" 2>&1
rc=$?; set -e
[ "$rc" = 5 ] || fail "no documents: exit $rc, not 5"
[ "$(json "$T/iso-3.status.json" scrub.mount.gone)" = True ] || fail "no documents: mount"
[ -z "$(ls -A "$RUN")" ] || fail "no documents: mount point left"
ok "no matching document: exit 5, mount gone"
