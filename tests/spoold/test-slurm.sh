#!/usr/bin/env bash
# test-slurm: the kill -9 test against a real one-node Slurm (slurmctld + slurmd + munged,
# fake GPUs for --gres) that this test starts and stops (slurm-local.sh). 200 jobs, spoold
# SIGKILLed at random moments and restarted; at the end every job is in done/ or failed/
# exactly once, each was submitted to Slurm once (the jobcomp file has one job per name) and
# ran once (the runner's ledger). Then 12 jobs that end while spoold is down and that
# slurmctld then forgets (MinJobAge=2 here: squeue no longer lists them when spoold comes
# back): their outcomes come from sacct -c, nothing is submitted again. Exits 77, saying why,
# where Slurm cannot run here.
. "$(dirname "$0")/lib.sh"
# (Slurm launched one job every 1-3 s here while spoold passed --export=ALL,NAME=value, which
# made slurmd run a login shell before each launch; see prov_slurm.c. Now tens per second.)
N=${N:-200} KILLS=${KILLS:-20}
for t in slurmctld slurmd munged mungekey sbatch squeue scontrol sacct scancel; do
	command -v $t >/dev/null || skip "$t not installed (tools/debian-packages.txt: slurmctld slurmd slurm-client munge)"
done
# MinJobAge=2 (slurm.conf(5): the smallest non-zero value it recommends): finished jobs
# leave squeue at slurmctld's next purge, about once a minute, here as on a busy cluster
# where spoold's downtime outlasts MinJobAge. Part 1 meets that too, for jobs that end while
# spoold is being restarted.
export SLURM_LOCAL_DIR=$T/slurm SLURM_LOCAL_CPUS=16 SLURM_LOCAL_GPUS=8 SLURM_LOCAL_MIN_JOB_AGE=2
export SLURM_LOCAL_CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-16817} SLURM_LOCAL_SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-16818}
SL=$here/slurm-local.sh
chmod 755 "$T" # munged wants every directory above its socket searchable
if ! "$SL" up > "$T/slurm-up.log" 2>&1; then
	reason=$(grep -h -i -E "error|fatal" "$T/slurm-up.log" "$T"/slurm/log/*.log 2>/dev/null | tail -n 3)
	"$SL" down >/dev/null 2>&1
	skip "one-node Slurm did not start here: ${reason:-see slurm-up.log}"
fi
trap '"$SL" down >/dev/null 2>&1; cleanup' EXIT
export SLURM_CONF=$SLURM_LOCAL_DIR/etc/slurm.conf
export SPOOLD_TEST_SLEEP=0.1
write_conf "backend = slurm" "tick_ms = 200" "lifetime_sec = 300"
ids=()
for ((i = 0; i < N; i++)); do
	if ((i % 20 == 7)); then ids+=("sfail$i"); else ids+=("s$i"); fi
done
for ((i = 0; i < N / 2; i++)); do drop "${ids[i]}"; done
start
wait_for 30 "spoold up" test -d "$SP/done"
k=0
next=$((N / 2))
while ((k < KILLS)) && [ "$(n_terminal)" -lt "$N" ]; do
	sleep "$((RANDOM % 2)).$((RANDOM % 10))"
	kill9
	k=$((k + 1))
	for ((j = 0; j < 7 && next < N; j++, next++)); do drop "${ids[next]}"; done
	start
	for ((j = 0; j < 7 && next < N; j++, next++)); do drop "${ids[next]}"; done
done
for ((; next < N; next++)); do drop "${ids[next]}"; done
wait_for 200 "all $N jobs ended" sh -c "[ \$(( \$(ls $SP/done | grep -c 'result.json\$') + \$(ls $SP/failed | grep -c 'result.json\$') )) -ge $N ]"
alive || fail "spoold died"
stop
echo "killed spoold $k times"
for d in incoming queue active; do [ -z "$(ls "$SP/$d")" ] || fail "$d/ not empty: $(ls "$SP/$d" | head)"; done
# every job in done/ or failed/ exactly once, with its Slurm job id and the right outcome
# (one python3 for all 200: a python3 per job took over a minute on the 2-core machine)
bad=$(python3 - "$SP" "${ids[@]}" <<'PY'
import json, os, sys
sp, ids = sys.argv[1], sys.argv[2:]
for i in ids:
    where = [d for d in ("done", "failed") if os.path.exists(f"{sp}/{d}/{i}.json")]
    if len(where) != 1:
        print(f"job {i} is in done/ or failed/ {len(where)} times"); continue
    r = json.load(open(f"{sp}/{where[0]}/{i}.result.json"))
    if not r.get("slurm_id"):
        print(f"{i} has no Slurm job id")
    if "fail" in i:
        if where[0] != "failed" or r.get("reason") != "runner: exit status 3":
            print(f"{i}: {where[0]} {r.get('reason')}")
    elif where[0] != "done":
        print(f"{i} failed: {r.get('reason')}")
PY
) || fail "checking the results: python3 failed"
[ -z "$bad" ] || fail "$(echo "$bad" | head -n 5)"
dups=$(cut -d' ' -f1 "$T/ledger" | sort | uniq -d | head)
[ -z "$dups" ] || fail "jobs ran twice: $dups"
[ "$(wc -l < "$T/ledger")" = "$N" ] || fail "$(wc -l < "$T/ledger") runs for $N jobs"
subs=$(sacct -c -n -P -S 2000-01-01 -o JobName | grep -c '^spoold-')
[ "$subs" = "$N" ] || fail "$subs Slurm jobs for $N spoold jobs (submitted twice?)"
echo "ok: $N jobs through Slurm, $k kills, each submitted and run exactly once"

# Part 2: squeue has forgotten the jobs (they ended while spoold was down, and slurmctld
# purged them, MinJobAge having passed): spoold must take their outcomes from sacct -c (the
# jobcomp file, now over 200 jobs long) and submit nothing again.
M=12
ids2=()
for ((i = 0; i < M; i++)); do
	if ((i % 4 == 1)); then ids2+=("afail$i"); else ids2+=("a$i"); fi
done
# every job submitted in one tick and still running or pending when spoold is killed: the
# runner sleeps 5 s, the node has 8 GPUs
write_conf "backend = slurm" "tick_ms = 200" "lifetime_sec = 300" "max_instances = $M"
SPOOLD_TEST_SLEEP=5 start
for id in "${ids2[@]}"; do drop "$id"; done
wait_for 60 "$M jobs in Slurm" sh -c "[ \$(squeue -h -o %j | grep -c '^spoold-a') -ge $M ]"
kill9
before=$(n_terminal)
wait_for 120 "$M jobs ended in Slurm" sh -c "[ \$(grep -c ' Name=spoold-a' $SLURM_LOCAL_DIR/log/jobcomp.txt) -ge $M ]"
# in_squeue: how many of them squeue lists as spoold does (-t all: finished jobs too); empty
# if squeue fails. Wait for slurmctld's purge: MinJobAge after the last end, then its next
# purge (one a minute): bounded, and spoold stays down until then.
in_squeue() { local o; o=$(squeue -h -a -t all -o %j) || return 1; printf '%s\n' "$o" | grep -c '^spoold-a'; return 0; }
purged() { [ "$(in_squeue)" = 0 ]; }
t_purge=$SECONDS
wait_for 150 "slurmctld to purge the $M jobs from squeue" purged
echo "squeue forgot the $M jobs $((SECONDS - t_purge)) s after the last had ended"
start
wait_for 60 "the $M jobs ended in spoold" sh -c "[ \$(( \$(ls $SP/done | grep -c 'result.json\$') + \$(ls $SP/failed | grep -c 'result.json\$') )) -ge $((N + M)) ]"
alive || fail "spoold died (part 2)"
stop
# nothing submitted again: Slurm has the 12 jobs once each, in the jobcomp file, and none
# pending, running or finished in squeue (a second submission would be one or the other)
again=$(in_squeue)
[ -n "$again" ] || fail "part 2: squeue failed"
[ "$again" = 0 ] || fail "part 2: $again jobs submitted again: $(squeue -h -a -t all -o '%i %j %T' | grep spoold-a | head -n 3)"
subs=$(sacct -c -n -P -S 2000-01-01 -o JobName | grep -c '^spoold-a')
[ "$subs" = "$M" ] || fail "part 2: $subs Slurm jobs for $M spoold jobs (submitted again?)"
bad=$(python3 - "$SP" "${ids2[@]}" <<'PY'
import json, os, sys
sp, ids = sys.argv[1], sys.argv[2:]
for i in ids:
    ok = "failed" if "fail" in i else "done"
    try:
        r = json.load(open(f"{sp}/{ok}/{i}.result.json"))
    except OSError:
        print(f"{i} not in {ok}/"); continue
    if not r.get("slurm_id"):
        print(f"{i} has no Slurm job id")
    if ok == "failed" and r.get("reason") != "runner: exit status 3":
        print(f"{i}: {r.get('reason')}")
PY
) || fail "checking part 2: python3 failed"
[ -z "$bad" ] || fail "part 2: $(echo "$bad" | head -n 5)"
for id in "${ids2[@]}"; do
	[ "$(grep -c "^$id " "$T/ledger")" = 1 ] || fail "$id ran $(grep -c "^$id " "$T/ledger") times"
done
late=$((N + M - before))
[ "$late" -gt 0 ] || fail "part 2: every job had ended before spoold was killed (nothing taken from sacct)"
echo "ok: $late of $M jobs ended while spoold was down and were purged from squeue: outcomes from sacct -c, none resubmitted"
