#!/usr/bin/env bash
# test-hostile: malformed and hostile job files (bad JSON, wrong types, huge files and
# fields, path traversal, symlinks, a directory, a non-admin owner, duplicate ids, too many
# tokens) are each refused with the right reason while spoold keeps running; spoolctl submit,
# list, show, cancel and retry; the lifetime limit (SIGTERM, then SIGKILL for a runner that
# ignores it); budgets (jobs deferred, not dropped, then run); the provisioning-failure and
# queue-length alerts, each just past its threshold.
. "$(dirname "$0")/lib.sh"
[ -x "${SPOOLCTL:-}" ] || skip "SPOOLCTL not set"
ctl() { "$SPOOLCTL" --config "$T/conf" "$@"; }
write_conf "lifetime_sec = 3" "kill_grace_sec = 1"
head -c 900000 /dev/zero | tr '\0' y > "$T/docs/p1/big.dat"   # ~225k tokens
start
wait_for 20 "spool" test -d "$SP/ctl"

# --- refused files: each with its reason ---
echo '{"version":1,"id":' > "$SP/incoming/badjson.json"
job wt | sed 's/"max_tokens":64/"max_tokens":"64"/' > "$SP/incoming/types.json"
job trav | sed 's|"\*.txt"|"../p2/*.txt"|' > "$SP/incoming/trav.json"
job abs | sed 's|"\*.txt"|"/etc/shadow"|' > "$SP/incoming/abs.json"
python3 -c 'print("{\"version\":1,\"id\":\"huge\",\"pad\":\"" + "x"*70000 + "\"}")' > "$SP/tmp/huge"; mv "$SP/tmp/huge" "$SP/incoming/huge.json"
python3 -c 'print("{\"version\":1,\"id\":\"hp\",\"patient\":\"p1\",\"documents\":[\"a\"],\"task\":\"question\",\"prompt\":\"" + "q"*5000 + "\",\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}")' > "$SP/incoming/hugeprompt.json"
job link > "$T/target.json"; ln -s "$T/target.json" "$SP/tmp/link.json"; mv "$SP/tmp/link.json" "$SP/incoming/link.json"
mkdir "$SP/tmp/adir.json"; mv "$SP/tmp/adir.json" "$SP/incoming/adir.json"
job nobody > "$SP/tmp/nobody"; chown 65534:65534 "$SP/tmp/nobody"; mv "$SP/tmp/nobody" "$SP/incoming/nobody.json"
job big2 | sed 's|"\*.txt"|"*.dat"|' > "$SP/tmp/big2"; mv "$SP/tmp/big2" "$SP/incoming/big2.json"
job nomatch | sed 's|"\*.txt"|"*.pdf"|' > "$SP/tmp/nm"; mv "$SP/tmp/nm" "$SP/incoming/nomatch.json"
drop dup1
wait_for 20 "dup1 done" test -f "$SP/done/dup1.result.json"
job dup1 > "$SP/tmp/d2"; mv "$SP/tmp/d2" "$SP/incoming/dup1-again.json"

check_reason() { # check_reason FILE-NAME EXPECTED
	wait_for 20 "$1 refused" sh -c "ls $SP/failed/rejected/ | grep -q -- '-$1.reason\$'"
	got=$(reason_of "$1")
	[ "$got" = "$2" ] || fail "$1: reason '$got', want '$2'"
}
check_reason badjson.json "(file): not valid JSON (at byte 18)"
check_reason types.json "max_tokens: must be a number"
check_reason trav.json "documents[0]: '..' not allowed"
check_reason abs.json "documents[0]: absolute path not allowed"
check_reason huge.json "(file): larger than 65536 bytes"
check_reason hugeprompt.json "prompt: too long"
check_reason link.json "(file): symbolic link refused"
check_reason adir.json "(file): not a regular file"
check_reason nobody.json "(owner): uid 65534 is not a member of the admin group"
check_reason dup1-again.json "id: a job with this id already exists"
[ -L "$(ls -d "$SP"/failed/rejected/*-link.json)" ] || fail "the symlink was not moved aside as it was"
[ -f "$T/target.json" ] || fail "the symlink's target was touched"
wait_for 20 "big2 refused" test -f "$SP/failed/big2.result.json"
[ "$(result_field "$SP/failed/big2.result.json" reason)" = "documents: about 225000 tokens, more than the largest tier (200000)" ] ||
	fail "big2: $(result_field "$SP/failed/big2.result.json" reason)"
wait_for 20 "nomatch refused" test -f "$SP/failed/nomatch.result.json"
[ "$(result_field "$SP/failed/nomatch.result.json" reason)" = "documents[0]: matches no file" ] || fail "nomatch reason"
alive || fail "spoold died on hostile input"

# --- spoolctl ---
job okctl > "$T/okctl.json"
[ "$(ctl submit "$T/okctl.json")" = okctl ] || fail "spoolctl submit"
job badctl | sed 's/"treatment"/"fun"/' > "$T/badctl.json"
out=$(ctl submit "$T/badctl.json" 2>&1) && fail "spoolctl accepted an invalid job"
case $out in *"purpose: must be treatment, payment, operations or research"*) ;; *) fail "spoolctl: $out" ;; esac
wait_for 20 "okctl done" test -f "$SP/done/okctl.result.json"
ctl list | grep -q '^okctl  *done ' || fail "spoolctl list: $(ctl list)"
ctl show okctl | grep -q '"state":	"done"' || fail "spoolctl show"
# cancel a running job: its runner gets SIGTERM
drop sleepy-cancel
wait_for 20 "sleepy-cancel running" grep -q '^sleepy-cancel ' "$T/ledger"
ctl cancel sleepy-cancel >/dev/null || fail "spoolctl cancel"
wait_for 20 "sleepy-cancel cancelled" test -f "$SP/failed/sleepy-cancel.result.json"
[ "$(result_field "$SP/failed/sleepy-cancel.result.json" reason)" = "cancelled by operator" ] || fail "cancel reason"
grep -q '^sleepy-cancel$' "$T/ledger.term" || fail "the cancelled runner got no SIGTERM"
# retry a failed job: it runs again as attempt 2
drop retry-fail
wait_for 20 "retry-fail failed" test -f "$SP/failed/retry-fail.result.json"
ctl retry retry-fail >/dev/null
wait_for 20 "retry-fail second run" sh -c "[ \$(grep -c '^retry-fail ' $T/ledger) = 2 ]"
wait_for 20 "retry-fail failed again" test -f "$SP/failed/retry-fail.result.json"
[ "$(result_field "$SP/failed/retry-fail.result.json" attempt)" = 2 ] || fail "retry attempt"
grep -q '^retry-fail spoold-retry-fail.2$' "$T/ledger" || fail "retry ran under a new name"
ls "$SP/journal/retry-fail.result.attempt1.json" >/dev/null || fail "the first result was not kept"
ctl status | grep -q '^done ' || fail "spoolctl status"

# --- lifetime (3 s): SIGTERM; a runner that ignores it gets SIGKILL after the grace ---
drop sleepy-life
drop stubborn-life
wait_for 60 "sleepy-life ended" test -f "$SP/failed/sleepy-life.result.json"
wait_for 60 "stubborn-life ended" test -f "$SP/failed/stubborn-life.result.json"
for id in sleepy-life stubborn-life; do
	[ "$(result_field "$SP/failed/$id.result.json" reason)" = "lifetime: exceeded 3 s, terminated" ] ||
		fail "$id: $(result_field "$SP/failed/$id.result.json" reason)"
done
grep -q '^sleepy-life$' "$T/ledger.term" || fail "sleepy-life got no SIGTERM"
[ "$(result_field "$SP/failed/stubborn-life.result.json" signal)" = 9 ] || fail "stubborn-life was not SIGKILLed"
alive || fail "spoold died"
stop

# --- budgets: a job whose worst case (30 min x $0.015 = $0.45) exceeds the day's budget by
# one micro-dollar is deferred, not dropped; at exactly the budget it runs ---
write_conf "lifetime_sec = 1800" "budget_day_usd = 0.449999" "queue_alert = 2"
start
drop bud1; drop bud2; drop bud3
wait_for 20 "bud1 deferred" sh -c "grep -q '\"deferred\":true' $SP/journal/bud1.json"
ctl list | grep -q '^bud1 .*deferred (budget)' || fail "list does not show deferred"
[ -f "$SP/queue/bud1.json" ] || fail "deferred job left the queue"
wait_for 20 "queue alert" grep -q 'spoold_alert{alert="queue_length"} 1' "$T/metrics.prom"
stop
spent=$(python3 -c 'import json,glob; print(sum(json.load(open(f))["cost_micro_usd"] for f in glob.glob("'"$SP"'/*/*.result.json")))')
# the day's budget: what is already spent plus exactly one worst case
write_conf "lifetime_sec = 1800" "budget_day_usd = $(python3 -c "print('%.6f' % (($spent + 450000) / 1e6))")" "max_instances = 1"
start
wait_for 30 "one of the deferred jobs ran" sh -c "ls $SP/done | grep -q '^bud.*result.json'"
stop
[ "$(ls "$SP/done" | grep -c '^bud.*result.json')" -ge 1 ] || fail "no budget job ran"

# --- provisioning failures: 4 in the window (> 3) raise the alert ---
write_conf "runner = /nonexistent/gpurun" "max_attempts = 2" "retry_backoff_sec = 0"
start
drop pf1; drop pf2
wait_for 30 "pf1 failed" test -f "$SP/failed/pf1.result.json"
wait_for 30 "pf2 failed" test -f "$SP/failed/pf2.result.json"
[ "$(result_field "$SP/failed/pf1.result.json" reason)" = "provisioning: the instance could not be started (gave up after 2 attempts)" ] ||
	fail "pf1: $(result_field "$SP/failed/pf1.result.json" reason)"
wait_for 10 "prov alert" grep -q 'spoold_alert{alert="provisioning_failures"} 1' "$T/metrics.prom"
# pf1, pf2 and the budget jobs still queued from above each fail twice
nfail=$(sed -n 's/^spoold_provisioning_failures_total //p' "$T/metrics.prom")
[ "$nfail" -ge 4 ] || fail "failures counter: $nfail"
grep -q 'alert: more than 3 provisioning failures' "$T/log" || fail "no alert in the log"
alive || fail "spoold died"
stop
echo "ok"
