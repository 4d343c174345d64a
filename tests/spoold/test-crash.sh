#!/usr/bin/env bash
# test-crash: 200 jobs on the local backend; spoold is killed with SIGKILL at random moments
# and restarted after each kill, while jobs are still being dropped. The stand-in runner
# appends its job id to a ledger. At the end every job is in done/ or failed/ exactly once,
# with a result record, nothing is left in incoming/, queue/ or active/, and the ledger shows
# that no job ran twice.
. "$(dirname "$0")/lib.sh"
N=${N:-200} KILLS=${KILLS:-25}
export SPOOLD_TEST_SLEEP=0.1
write_conf "lifetime_sec = 300"
ids=()
for ((i = 0; i < N; i++)); do
	if ((i % 20 == 7)); then ids+=("cfail$i"); else ids+=("c$i"); fi
done
for ((i = 0; i < N / 2; i++)); do drop "${ids[i]}"; done
start
k=0
next=$((N / 2))
while ((k < KILLS)) && [ "$(n_terminal)" -lt "$N" ]; do
	sleep "0.$((RANDOM % 4))$((RANDOM % 10))"
	kill9
	k=$((k + 1))
	# drop some more while it is down, and some right after the restart
	for ((j = 0; j < 5 && next < N; j++, next++)); do drop "${ids[next]}"; done
	start
	for ((j = 0; j < 5 && next < N; j++, next++)); do drop "${ids[next]}"; done
done
for ((; next < N; next++)); do drop "${ids[next]}"; done
wait_for 200 "all $N jobs ended" sh -c "[ \$(( \$(ls $SP/done | grep -c 'result.json\$') + \$(ls $SP/failed | grep -c 'result.json\$') )) -ge $N ]"
alive || fail "spoold died"
stop
echo "killed spoold $k times"

for d in incoming queue active; do [ -z "$(ls "$SP/$d")" ] || fail "$d/ not empty: $(ls "$SP/$d" | head)"; done
nf=0
for id in "${ids[@]}"; do
	c=0
	[ -f "$SP/done/$id.json" ] && c=$((c + 1)) && r=done
	[ -f "$SP/failed/$id.json" ] && c=$((c + 1)) && r=failed
	[ "$c" = 1 ] || fail "job $id is in done/ or failed/ $c times"
	[ -f "$SP/$r/$id.result.json" ] || fail "job $id has no result record"
	case $id in
	cfail*) [ $r = failed ] || fail "$id should have failed"
		[ "$(result_field "$SP/failed/$id.result.json" reason)" = "runner: exit status 3" ] ||
			fail "$id: reason $(result_field "$SP/failed/$id.result.json" reason)"
		nf=$((nf + 1)) ;;
	*) [ $r = done ] || fail "$id failed: $(result_field "$SP/failed/$id.result.json" reason)" ;;
	esac
done
[ "$(n_terminal)" = "$N" ] || fail "$(n_terminal) results for $N jobs"
runs=$(wc -l < "$T/ledger")
dups=$(cut -d' ' -f1 "$T/ledger" | sort | uniq -d | head)
[ -z "$dups" ] || fail "jobs ran twice: $dups"
[ "$runs" = "$N" ] || fail "$runs runs in the ledger for $N jobs"
echo "ok: $N jobs ($nf failed as intended), $k kills, each ran exactly once"
