#!/usr/bin/env bash
# test-slurm: the kill -9 test against a real one-node Slurm (slurmctld + slurmd + munged,
# fake GPUs for --gres) that this test starts and stops (slurm-local.sh). 200 jobs, spoold
# SIGKILLed at random moments and restarted; at the end every job is in done/ or failed/
# exactly once, each was submitted to Slurm once (the jobcomp file has one job per name) and
# ran once (the runner's ledger). Exits 77, saying why, where Slurm cannot run here.
. "$(dirname "$0")/lib.sh"
# 40 jobs by default: slurmd on the 2-core CI machine launched about one batch job every few
# seconds under load (measured), so 200 would not fit the suite's time (N=200 not run here).
N=${N:-40} KILLS=${KILLS:-6}
for t in slurmctld slurmd munged mungekey sbatch squeue scontrol sacct scancel; do
	command -v $t >/dev/null || skip "$t not installed (tools/debian-packages.txt: slurmctld slurmd slurm-client munge)"
done
export SLURM_LOCAL_DIR=$T/slurm SLURM_LOCAL_CPUS=16 SLURM_LOCAL_GPUS=8
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
for id in "${ids[@]}"; do
	c=0
	[ -f "$SP/done/$id.json" ] && c=$((c + 1)) && r=done
	[ -f "$SP/failed/$id.json" ] && c=$((c + 1)) && r=failed
	[ "$c" = 1 ] || fail "job $id is in done/ or failed/ $c times"
	[ -n "$(result_field "$SP/$r/$id.result.json" slurm_id)" ] || fail "$id has no Slurm job id"
	case $id in
	sfail*) [ $r = failed ] && [ "$(result_field "$SP/failed/$id.result.json" reason)" = "runner: exit status 3" ] ||
		fail "$id: $r $(result_field "$SP/$r/$id.result.json" reason)" ;;
	*) [ $r = done ] || fail "$id failed: $(result_field "$SP/failed/$id.result.json" reason)" ;;
	esac
done
dups=$(cut -d' ' -f1 "$T/ledger" | sort | uniq -d | head)
[ -z "$dups" ] || fail "jobs ran twice: $dups"
[ "$(wc -l < "$T/ledger")" = "$N" ] || fail "$(wc -l < "$T/ledger") runs for $N jobs"
subs=$(sacct -c -n -P -S 2000-01-01 -o JobName | grep -c '^spoold-')
[ "$subs" = "$N" ] || fail "$subs Slurm jobs for $N spoold jobs (submitted twice?)"
echo "ok: $N jobs through Slurm, $k kills, each submitted and run exactly once"
