#!/usr/bin/env bash
# bench.sh: spoold's throughput and latency, with a no-op runner (issue 5's benchmark).
#
#   meson setup build-rel -Dbuildtype=release && meson compile -C build-rel
#   SPOOLD=build-rel/spoold/spoold SPOOLCTL=build-rel/tools/spoolctl bash tests/spoold/bench.sh
#
# Env: BENCH_JOBS (10000) jobs dropped at once on the local backend; BENCH_IDLE (200) jobs
# dropped one at a time at idle for drop-to-provision latency; BENCH_SLURM_JOBS (100) for the
# Slurm part (0 skips it), which runs spoold's Slurm backend and then plain sbatch of the
# same jobs on the same one-node Slurm (tests/spoold/slurm-local.sh), and prints the same
# figures side by side; BENCH_SLURM_IDLE (50) single jobs at idle for each of the two there;
# BENCH_SLURM_ROUNDS (3) bursts of each, alternating (spoold, sbatch, spoold, ...), whose
# median throughput ratio is the one reported, since one burst pair swings 0.7-1.2 on a
# shared 2-core machine.
# As root. Prints one Markdown table per part; nothing here is a pass/fail test.
set -u
. "$(dirname "$0")/lib.sh"
N=${BENCH_JOBS:-10000} IDLE=${BENCH_IDLE:-200} NS=${BENCH_SLURM_JOBS:-100} NSI=${BENCH_SLURM_IDLE:-50} NSR=${BENCH_SLURM_ROUNDS:-3}

# The no-op runner: records "<id> <start epoch s>" (bash's EPOCHREALTIME, no fork) and the
# status file spoold reads, then exits.
NOOP=$T/noop-runner
cat > "$NOOP" <<'R'
#!/bin/bash
printf '%s %s\n' "$(basename "$1" .json)" "$EPOCHREALTIME" >> "$BENCH_LEDGER"
printf '{"tokens_in": 1, "tokens_out": 1}\n' > "$SPOOLD_STATUS_FILE"
R
chmod 755 "$NOOP"
export BENCH_LEDGER=$T/starts

# drops.py MODE ...: drop job files by rename and print the drop times (epoch s).
cat > "$T/drops.py" <<'PY'
import json, os, sys, time
mode, sp, n, prefix = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
def body(i):
    return json.dumps({"version": 1, "id": f"{prefix}{i}", "patient": "p1", "documents": ["*.txt"],
                       "task": "summarize", "model": "m.gguf", "max_tokens": 8,
                       "requested_by": "bench", "purpose": "treatment"}) + "\n"
if mode == "burst":  # write all to tmp/ first, then rename them into incoming/ as fast as possible
    for i in range(n):
        with open(f"{sp}/tmp/.{prefix}{i}", "w") as f:
            f.write(body(i))
    t0 = time.time()
    for i in range(n):
        os.rename(f"{sp}/tmp/.{prefix}{i}", f"{sp}/incoming/{prefix}{i}.json")
    print(f"{t0:.6f} {time.time():.6f}")
else:  # idle: one at a time, each after the previous one has ended
    for i in range(n):
        with open(f"{sp}/tmp/.{prefix}{i}", "w") as f:
            f.write(body(i))
        t = time.time()
        os.rename(f"{sp}/tmp/.{prefix}{i}", f"{sp}/incoming/{prefix}{i}.json")
        print(f"{prefix}{i} {t:.6f}", flush=True)
        res = f"{sp}/done/{prefix}{i}.result.json"
        for _ in range(20000):
            if os.path.exists(res) or os.path.exists(f"{sp}/failed/{prefix}{i}.result.json"):
                break
            time.sleep(0.002)
        time.sleep(0.05)
PY

# pct FILE: p50 and p99 (ms) of the numbers (seconds) in FILE
pct() { sort -g "$1" | awk '{v[NR]=$1} END{ if (!NR) { print "n/a n/a"; exit }
	i50=int(NR*0.50+0.5); i99=int(NR*0.99+0.5); if (i50<1) i50=1; if (i99<1) i99=1; if (i99>NR) i99=NR
	printf "%.1f %.1f\n", v[i50]*1000, v[i99]*1000 }'; }
now() { date +%s.%N; }
terminal() { echo $(( $(ls "$SP/done" | grep -c '\.result\.json$') + $(ls "$SP/failed" | grep -c '\.result\.json$') )); }
hwm_kb() { awk '/^VmHWM/{print $2}' "/proc/$PID/status"; }

# run_burst PREFIX N [POLL_S]: drop N jobs at once; prints "accept_s total_s". Polls every
# POLL_S (0.01) seconds: seven forks each time, so the Slurm part polls every 0.1 s to leave
# the 2 cores to Slurm (an error of 0.1 s in about 25 s)
run_burst() {
	local prefix=$1 n=$2 poll=${3:-0.01} t0 t_acc= t_all= line
	line=$(python3 "$T/drops.py" burst "$SP" "$n" "$prefix")
	t0=${line% *}
	while :; do
		local inc term
		inc=$(ls -f "$SP/incoming" | grep -c '\.json$')
		if [ -z "$t_acc" ] && [ "$inc" = 0 ]; then t_acc=$(now); fi
		term=$(terminal)
		if [ "$term" -ge "$n" ]; then t_all=$(now); [ -n "$t_acc" ] || t_acc=$t_all; break; fi
		alive || fail "spoold died"
		sleep "$poll"
	done
	awk -v a="$t_acc" -v b="$t_all" -v t0="$t0" 'BEGIN{ printf "%.3f %.3f\n", a-t0, b-t0 }'
}

# latencies PREFIX DROPS: drop->provision (spoold's started_ms) and drop->runner start, seconds
latencies() {
	python3 - "$SP" "$2" "$BENCH_LEDGER" "$T/lat.prov" "$T/lat.start" <<'PY'
import json, sys
sp, drops, ledger, outp, outs = sys.argv[1:6]
d = dict(l.split() for l in open(drops))
st = {}
for l in open(ledger):
    k, v = l.split()
    st.setdefault(k, float(v))
with open(outp, "w") as fp, open(outs, "w") as fs:
    for k, t in d.items():
        try:
            r = json.load(open(f"{sp}/done/{k}.result.json"))
        except OSError:
            continue
        if r.get("started_ms"):
            fp.write(f"{r['started_ms'] / 1000 - float(t):.6f}\n")
        if k in st:
            fs.write(f"{st[k] - float(t):.6f}\n")
PY
}

echo "spoold benchmark: $(uname -r), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"

# ---- local backend (BENCH_JOBS=0 skips it) ----
if [ "$N" -gt 0 ]; then
write_conf "runner = $NOOP" "max_instances = 20" "gpu_slots = $(seq -s, 0 19)" "tick_ms = 100"
start
wait_for 10 "spoold up" test -d "$SP/queue"
sleep 0.5
read -r acc all < <(run_burst b "$N")
rss=$(hwm_kb)
: > "$BENCH_LEDGER"
python3 "$T/drops.py" idle "$SP" "$IDLE" i > "$T/drops.idle"
latencies i "$T/drops.idle"
read -r p50 p99 < <(pct "$T/lat.prov")
read -r s50 s99 < <(pct "$T/lat.start")
rss2=$(hwm_kb)
stop
echo
echo "### local backend ($N jobs dropped at once; $IDLE dropped one at a time at idle)"
echo
echo "| metric | spoold | goal |"
echo "|---|---:|---:|"
awk -v n="$N" -v a="$acc" 'BEGIN{ printf "| time until all %d accepted (s) | %.2f | |\n| intake (jobs/s) | %.0f | >= 1000 |\n", n, a, n/a }'
awk -v n="$N" -v a="$all" 'BEGIN{ printf "| whole pipeline, drop to all ended (jobs/s) | %.1f | |\n", n/a }'
echo "| drop to provision at idle, p50 / p99 (ms) | $p50 / $p99 | p99 < 20 |"
echo "| drop to runner start at idle, p50 / p99 (ms) | $s50 / $s99 | |"
echo "| spoold peak RSS (MiB) | $(awk -v k="${rss2:-$rss}" 'BEGIN{printf "%.1f", k/1024}') | |"
fi


# ---- Slurm: spoold's backend beside plain sbatch ----
# Both columns get the same figures, from the same one-node Slurm in the same run, with the
# same runner and sbatch options: a burst of NS jobs (time until accepted/submitted, jobs/s
# to all ended), then NSI jobs one at a time at idle (drop, or sbatch's start, to provision
# and to the runner's start), and peak RSS.
[ "$NS" -gt 0 ] || exit 0
for t in slurmctld slurmd munged sbatch squeue; do
	command -v $t >/dev/null || { echo "(Slurm part skipped: $t not installed)"; exit 0; }
done
export SLURM_LOCAL_DIR=$T/slurm SLURM_LOCAL_CPUS=16 SLURM_LOCAL_GPUS=8
export SLURM_LOCAL_CTLD_PORT=${SLURM_LOCAL_CTLD_PORT:-16827} SLURM_LOCAL_SLURMD_PORT=${SLURM_LOCAL_SLURMD_PORT:-16828}
SL=$here/slurm-local.sh
chmod 755 "$T"
"$SL" up > "$T/slurm-up.log" 2>&1 || { "$SL" down >/dev/null 2>&1; echo "(Slurm part skipped: one-node Slurm did not start)"; exit 0; }
trap '"$SL" down >/dev/null 2>&1; cleanup' EXIT
export SLURM_CONF=$SLURM_LOCAL_DIR/etc/slurm.conf
JOBCOMP=$SLURM_LOCAL_DIR/log/jobcomp.txt
load_slurm=$(cut -d' ' -f1-3 /proc/loadavg)
ms() { awk '{ printf "%.1f", $1 / 1024 }'; } # KiB on stdin -> MiB
maxkb() { grep -hE '^[0-9]+$' "$@" 2>/dev/null | sort -n | tail -n 1; }

# plain_burst ROUND: NS jobs by plain sbatch, the same runner and the same options spoold
# passes, submitted in a loop; the runner's variables in sbatch's environment like spoold
# does (not --export=ALL,NAME=value, which makes slurmd run a login shell before each
# launch: see prov_slurm.c). Ended: every job has its line in the jobcomp file (slurmctld
# writes it when the job ends; no squeue polling that would load slurmctld), polled every
# 0.1 s like spoold's results. Prints "submit_s all_s".
mkdir -p "$T/plain"
plain_burst() {
	local r=$1 i t0 t_sub t_end
	: > "$BENCH_LEDGER"
	for ((i = 0; i < NS; i++)); do
		printf '{"id":"r%dq%d"}\n' "$r" "$i" > "$T/plain/r${r}q$i.json"
	done
	t0=$(now)
	for ((i = 0; i < NS; i++)); do
		SPOOLD_STATUS_FILE=$T/plain/r${r}q$i.status sbatch --parsable --no-requeue --job-name="plain-r${r}q$i" \
			--gres=gpu:1 --time=5 --output="$T/plain/r${r}q$i.log" --export=ALL \
			--wrap "exec '$NOOP' '$T/plain/r${r}q$i.json'" >/dev/null || fail "sbatch failed"
	done
	t_sub=$(now)
	plain_ended() { [ "$(grep -c " Name=plain-r${r}q[0-9]* " "$JOBCOMP" 2>/dev/null)" -ge "$NS" ]; }
	for ((i = 0; i < 36000; i++)); do plain_ended && break; sleep 0.1; done
	t_end=$(now)
	plain_ended || fail "plain sbatch jobs did not end"
	[ "$(wc -l < "$BENCH_LEDGER")" -ge "$NS" ] || fail "plain sbatch: $(wc -l < "$BENCH_LEDGER") runner starts for $NS jobs"
	awk -v a="$t_sub" -v b="$t_end" -v z="$t0" 'BEGIN{ print a - z, b - z }'
}

# the bursts, alternating: a fresh spool and spoold for each of its rounds
write_conf "runner = $NOOP" "backend = slurm" "max_instances = 20" "tick_ms = 200" "lifetime_sec = 300"
: > "$T/rounds"
for ((r = 1; r <= NSR; r++)); do
	rm -rf "$SP"; : > "$BENCH_LEDGER"
	start
	wait_for 10 "spoold up" test -d "$SP/queue"
	sleep 0.5
	read -r sacc sall < <(run_burst "s${r}-" "$NS" 0.1)
	alive || fail "spoold died"
	stop
	read -r sub_s all_s < <(plain_burst "$r")
	echo "$r $sacc $sall $sub_s $all_s" >> "$T/rounds"
done

# spoold: single drops at idle (the local part's drops.py and latencies: provision =
# started_ms, journalled once spoold's sbatch has returned the job id)
rm -rf "$SP"; : > "$BENCH_LEDGER"
start
wait_for 10 "spoold up" test -d "$SP/queue"
sleep 0.5
python3 "$T/drops.py" idle "$SP" "$NSI" si > "$T/drops.sidle"
latencies si "$T/drops.sidle"
[ "$(wc -l < "$T/lat.prov")" = "$NSI" ] || fail "spoold (slurm): $(wc -l < "$T/lat.prov") of $NSI idle jobs done"
read -r sp50 sp99 < <(pct "$T/lat.prov")
read -r ss50 ss99 < <(pct "$T/lat.start")
srss=$(hwm_kb)
alive || fail "spoold died"
stop
# the RSS of spoold's own sbatch (and squeue) children: a separate pass of a few single
# drops with those two under /usr/bin/time (slurm_bin_dir), so that no timed figure above
# pays for the wrapper
sb_rss=n/a sq_rss=n/a
if [ -x /usr/bin/time ]; then
	mkdir -p "$T/rssbin"
	for t in sbatch squeue; do
		printf '#!/bin/sh\nexec /usr/bin/time -a -o %s -f %%M %s "$@"\n' "$T/rss.$t" "$(command -v $t)" > "$T/rssbin/$t"
	done
	for t in sacct scontrol scancel; do printf '#!/bin/sh\nexec %s "$@"\n' "$(command -v $t)" > "$T/rssbin/$t"; done
	chmod 755 "$T"/rssbin/*
	write_conf "runner = $NOOP" "backend = slurm" "max_instances = 20" "tick_ms = 200" "lifetime_sec = 300" \
		"slurm_bin_dir = $T/rssbin"
	start
	wait_for 10 "spoold up" test -d "$SP/queue"
	python3 "$T/drops.py" idle "$SP" 5 r > /dev/null
	alive || fail "spoold died (RSS pass)"
	stop
	[ "$(ls "$SP/done" | grep -c '^r[0-9]*\.result\.json$')" = 5 ] || fail "RSS pass: not all 5 jobs done"
	if [ -z "$(maxkb "$T/rss.sbatch")" ] || [ -z "$(maxkb "$T/rss.squeue")" ]; then
		fail "RSS pass: no sbatch or squeue figure from /usr/bin/time"
	fi
	sb_rss=$(maxkb "$T/rss.sbatch" | ms) sq_rss=$(maxkb "$T/rss.squeue" | ms)
fi

# plain sbatch at idle: one sbatch at a time (posix_spawn, like spoold's fork+exec), timed
# from its start until it has exited with the job id; the next one once the job's jobcomp
# line is there. Prints "<id> <start> <return>".
cat > "$T/plain-idle.py" <<'PY'
import json, os, sys, time
noop, d, n, jobcomp = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
for i in range(n):
    k = f"qi{i}"
    with open(f"{d}/{k}.json", "w") as f:
        f.write(json.dumps({"id": k}) + "\n")
    env = dict(os.environ, SPOOLD_STATUS_FILE=f"{d}/{k}.status")
    argv = ["sbatch", "--parsable", "--no-requeue", f"--job-name=plain-{k}", "--gres=gpu:1", "--time=5",
            f"--output={d}/{k}.log", "--export=ALL", "--wrap", f"exec '{noop}' '{d}/{k}.json'"]
    r, w = os.pipe()
    t0 = time.time()
    pid = os.posix_spawnp("sbatch", argv, env, file_actions=[(os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_CLOSE, r)])
    os.close(w)
    out = b""
    while chunk := os.read(r, 4096):
        out += chunk
    _, st = os.waitpid(pid, 0)
    t1 = time.time()
    os.close(r)
    jid = out.decode().strip().split(";")[0]
    if os.waitstatus_to_exitcode(st) != 0 or not jid.isdigit():
        sys.exit(f"sbatch {k}: status {st}, output {out!r}")
    print(f"{k} {t0:.6f} {t1:.6f}", flush=True)
    pat = f"JobId={jid} "
    for _ in range(8000):
        try:
            with open(jobcomp) as f:
                if pat in f.read():
                    break
        except FileNotFoundError:
            pass
        time.sleep(0.005)
    else:
        sys.exit(f"job {jid} ({k}) did not end")
    time.sleep(0.05)
PY
: > "$BENCH_LEDGER"
python3 "$T/plain-idle.py" "$NOOP" "$T/plain" "$NSI" "$JOBCOMP" > "$T/plain.idle" || fail "plain sbatch at idle"
awk '{ printf "%.6f\n", $3 - $2 }' "$T/plain.idle" > "$T/lat.pprov"
awk 'NR == FNR { if (!($1 in s)) s[$1] = $2; next } ($1 in s) { printf "%.6f\n", s[$1] - $2 }' \
	"$BENCH_LEDGER" "$T/plain.idle" > "$T/lat.pstart"
[ "$(wc -l < "$T/lat.pstart")" = "$NSI" ] || fail "plain sbatch at idle: $(wc -l < "$T/lat.pstart") runner starts for $NSI jobs"
read -r pp50 pp99 < <(pct "$T/lat.pprov")
read -r ps50 ps99 < <(pct "$T/lat.pstart")
# plain sbatch's RSS: 5 more of the same jobs under /usr/bin/time, untimed, like spoold's
# pass (not wait4 from python3 above: a child's ru_maxrss counts the memory it had before
# exec, which for a posix_spawn child is python's)
prss=n/a
if [ -x /usr/bin/time ]; then
	for ((i = 0; i < 5; i++)); do
		printf '{"id":"qr%d"}\n' "$i" > "$T/plain/qr$i.json"
		SPOOLD_STATUS_FILE=$T/plain/qr$i.status /usr/bin/time -a -o "$T/rss.plain" -f %M \
			sbatch --parsable --no-requeue --job-name="plain-qr$i" --gres=gpu:1 --time=5 \
			--output="$T/plain/qr$i.log" --export=ALL \
			--wrap "exec '$NOOP' '$T/plain/qr$i.json'" >/dev/null || fail "sbatch failed (RSS pass)"
	done
	wait_for 60 "plain sbatch RSS pass jobs ended" sh -c "[ \$(grep -c ' Name=plain-qr[0-9]* ' $JOBCOMP) -ge 5 ]"
	[ -n "$(maxkb "$T/rss.plain")" ] || fail "RSS pass: no plain sbatch figure from /usr/bin/time"
	prss=$(maxkb "$T/rss.plain" | ms)
fi

# the round with the median throughput ratio gives both columns' burst figures
read -r _ sacc sall sub_s all_s < <(awk -v n="$NS" '{ print (n / $3) / (n / $5), $0 }' "$T/rounds" | sort -g |
	awk '{ l[NR] = $0 } END { print l[int((NR + 1) / 2)] }' | cut -d' ' -f2-)
ratios=$(awk -v n="$NS" '{ printf "%s%.2f", (NR > 1 ? ", " : ""), (n / $3) / (n / $5) }' "$T/rounds")
echo
echo "### Slurm backend beside plain sbatch ($NSR rounds of $NS jobs at once each, alternating, then $NSI one at a time at idle; one-node Slurm, fake GPUs)"
echo
echo "Load average at the start of the Slurm part: $load_slurm; at the end: $(cut -d' ' -f1-3 /proc/loadavg)."
echo
echo "| metric | spoold (slurm) | plain sbatch | spoold / sbatch | goal |"
echo "|---|---:|---:|---:|---:|"
awk -v n="$NS" -v a="$sacc" -v s="$sub_s" \
	'BEGIN{ printf "| time until all %d accepted / submitted (s) | %.2f | %.2f | %.2f | |\n", n, a, s, a/s }'
awk -v n="$NS" -v a="$sall" -v b="$all_s" \
	'BEGIN{ printf "| jobs/s, first drop (or sbatch) to all ended (median round) | %.2f | %.2f | %.2f | >= 0.90 |\n", n/a, n/b, (n/a)/(n/b) }'
echo "| throughput ratio of each round, in order | | | $ratios | |"
echo "| drop (or sbatch start) to provision at idle, p50 / p99 (ms) | $sp50 / $sp99 | $pp50 / $pp99 | | |"
echo "| drop (or sbatch start) to runner start at idle, p50 / p99 (ms) | $ss50 / $ss99 | $ps50 / $ps99 | | |"
echo "| peak RSS (MiB): spoold's VmHWM; plain: the largest sbatch | $(echo "$srss" | ms) | $prss | | |"
echo "| peak RSS of an sbatch (MiB): those spoold runs; plain | $sb_rss | $prss | | |"
echo "| peak RSS of spoold's squeue, one per tick (MiB) | $sq_rss | | | |"
echo
echo "Provision: spoold's sbatch has returned the job id and the attempt is journalled as"
echo "running (started_ms); for plain sbatch, sbatch has exited with the job id. The RSS of"
echo "sbatch and squeue: /usr/bin/time -f %M in separate, untimed passes of 5 jobs each."
