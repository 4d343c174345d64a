#!/usr/bin/env bash
# test-kill: kill -9 of gpurun in mid-inference under spoold. The first attempt's worker
# stops at its first generated token (test hook, first attempt only); the test checks the
# mount is there in its namespace, kills gpurun with SIGKILL, and checks: the worker and
# phifs die with it and the mount is gone from every namespace; spoold retries (a signal it
# did not send); the second attempt ends done; the results folder holds exactly one output
# and one record, of attempt 2; both attempts' grants are revoked. Then an operator cancels
# a job mid-inference: the group SIGTERM path (the same as at the lifetime) scrubs and unmounts.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/run-lib.sh"
. "$here/docs-lib.sh"

run_store p-alpha p-beta p-gamma
write_docs
run_config
touch "$T/once"
export GPURUN_TEST_STOP=inference GPURUN_TEST_STOP_ONCE=$T/once
run_spoold
unset GPURUN_TEST_STOP GPURUN_TEST_STOP_ONCE
drop_job j-kill p-alpha '["notes/*.txt"]'
L1=$SP/journal/spoold-j-kill.1.log
have_worker() { grep -q worker_pid= "$L1" 2>/dev/null; }
wait_for 120 "attempt 1's worker" have_worker
W=$(sed -n 's/.*worker_pid=\([0-9]*\).*/\1/p' "$L1")
stopped() { [ "$(awk '{print $3}' "/proc/$W/stat" 2>/dev/null)" = T ]; }
wait_for 120 "the worker to stop mid-inference" stopped
GP=$(awk '{print $4}' "/proc/$W/stat")
grep -q gpurun "/proc/$GP/comm" || fail "the worker's parent is not gpurun"
MP=$(awk -v r="$RUN/" 'index($5, r) == 1 {print $5}' "/proc/$W/mountinfo")
[ -n "$MP" ] || fail "no job mount in the worker's namespace"
kill -9 "$GP"
gone() { ! kill -0 "$W" 2>/dev/null; }
wait_for 60 "the worker to die with gpurun" gone
no_mount() { ! grep -qsF " $MP " /proc/[0-9]*/mountinfo; }
wait_for 60 "the job mount to go away in every namespace" no_mount
ok "kill -9 of gpurun mid-inference: worker and phifs gone, the mount gone with its namespace"

wait_for 240 "the job to end" test -e "$SP/done/j-kill.result.json" -o -e "$SP/failed/j-kill.result.json"
[ -e "$SP/done/j-kill.result.json" ] || fail "job failed: $(json "$SP/failed/j-kill.result.json" reason)"
[ "$(json "$SP/done/j-kill.result.json" attempt)" = 2 ] || fail "not retried once"
ok "spoold retried the job (attempt 2) and it is done"

R=$SVC/p-alpha/results/j-kill
[ "$(ls -A "$R" | sort | tr '\n' ' ')" = "output.txt record.json " ] || fail "results folder: $(ls -A "$R")"
[ "$(json "$R/record.json" attempt)" = spoold-j-kill.2 ] || fail "record of attempt $(json "$R/record.json" attempt)"
[ "$(ls -A "$SVC/p-alpha/results")" = j-kill ] || fail "results: $(ls -A "$SVC/p-alpha/results")"
ok "the result is written exactly once: one output, one record (attempt 2), no temp file"

G list --patient p-alpha --json >"$T/grants.json"
python3 - "$T/grants.json" <<'PY' || fail "grants"
import json, sys
g = [x for x in json.load(open(sys.argv[1])) if x.get("role") == "job"]
assert len(g) == 2 and all(x["state"] == "revoked" for x in g), g
assert sorted(x["reason"] for x in g) == ["spoold attempt spoold-j-kill.1", "spoold attempt spoold-j-kill.2"], g
PY
[ -z "$(ls -A "$RUN")" ] || fail "mount point left: $(ls -A "$RUN")"
ok "one grant per attempt, both revoked; no mount point left"

# an operator's cancel mid-inference: spoold's supervisor sends SIGTERM to gpurun's whole
# process group (as at the lifetime); phifs has it blocked (gpurun unmounts it), the worker
# scrubs, gpurun exits 9 with a status JSON; the job ends failed, its grant revoked
touch "$T/once"
drop_job j-cancel p-alpha '["notes/*.txt"]'
L1=$SP/journal/spoold-j-cancel.1.log
wait_for 120 "j-cancel's worker" have_worker
W=$(sed -n 's/.*worker_pid=\([0-9]*\).*/\1/p' "$L1")
wait_for 120 "the worker to stop mid-inference" stopped
"$SPOOLCTL" --config "$T/spoold.conf" cancel j-cancel >/dev/null
term_pending() { grep -q '^SigPnd:.*[1-9a-f]' "/proc/$W/status" 2>/dev/null || grep -q '^ShdPnd:.*[1-9a-f]' "/proc/$W/status" 2>/dev/null; }
wait_for 60 "the SIGTERM to reach the worker" term_pending
kill -CONT "$W"
wait_for 120 "j-cancel to end" test -e "$SP/failed/j-cancel.result.json"
S=$SP/journal/spoold-j-cancel.1.status.json
[ "$(json "$S" exit)" = 9 ] || fail "cancel: exit $(json "$S" exit)"
[ "$(json "$S" scrub.host.engine_freed)" = True ] && [ "$(json "$S" scrub.mount.unmounted)" = True ] &&
	[ "$(json "$S" scrub.mount.gone)" = True ] || fail "cancel: not scrubbed"
grep -qsF "$RUN/" /proc/[0-9]*/mountinfo && fail "cancel: a job mount is left"
[ -z "$(ls -A "$RUN")" ] || fail "cancel: mount point left"
ok "cancel mid-inference (SIGTERM to the group): exit 9, worker scrubbed, mount unmounted and gone, nothing left"
