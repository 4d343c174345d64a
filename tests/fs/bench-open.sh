#!/bin/bash
# bench-open.sh: opens per second and open-to-first-byte latency (p50, p99) at 1, 16 and 64
# threads: phifs with durable audit (-o grants,audit_socket= and phifs-auditd, log on the
# benchmark disk) beside phifs with access control only (-o grants), phifs with neither and
# gocryptfs (which keeps no audit), in one run, plus the fdatasync latency of the log
# volume: the floor for any durable design.
# Not a test: prints a table. Ratios matter (the machine is shared and noisy).
# Env: BENCH_DIR (/var/tmp/phi-bench), BENCH_S (5 s per cell), BENCH_REPS (3, interleaved;
#      each cell is the median), BENCH_THREADS ("1 16 64"), BENCH_NFILES (64),
#      PHIFS, PHIFS_KEY, PHIFS_GRANT, AUDITD, PHIFS_AUDIT (build-rel paths by default).
set -euo pipefail
BENCH_DIR=${BENCH_DIR:-/var/tmp/phi-bench}
BENCH_S=${BENCH_S:-5}
REPS=${BENCH_REPS:-3}
THREADS=${BENCH_THREADS:-1 16 64}
NFILES=${BENCH_NFILES:-64}
B=${BUILD:-build-rel}
PHIFS=${PHIFS:-$B/phifs/phifs}
PHIFS_KEY=${PHIFS_KEY:-$B/tools/phifs-key}
PHIFS_GRANT=${PHIFS_GRANT:-$B/tools/phifs-grant}
AUDITD=${AUDITD:-$B/phifs/phifs-auditd}
PHIFS_AUDIT=${PHIFS_AUDIT:-$B/tools/phifs-audit}
export PHIFS_AUDIT_SOCKET=none # store setup; the mount under test audits every open
HERE=$(cd "$(dirname "$0")" && pwd)
[ "$(id -u)" = 0 ] || { echo "bench-open.sh: needs root (FUSE)" >&2; exit 2; }
command -v gocryptfs >/dev/null || { echo "bench-open.sh: gocryptfs missing (apt-get install -y gocryptfs)" >&2; exit 2; }
for x in "$PHIFS" "$PHIFS_KEY" "$PHIFS_GRANT" "$AUDITD" "$PHIFS_AUDIT"; do
	[ -x "$x" ] || { echo "bench-open.sh: $x not built (meson setup $B -Dbuildtype=release)" >&2; exit 2; }
done
. "$HERE/bench-lib.sh"
bench_start open
cc -O2 -pthread -o "$TMP/openbench" "$HERE/openbench.c"

mount_gocryptfs gc
# phifs: one store, mounted twice in turn: plain, and with grants + durable audit
"$PHIFS_KEY" --store "$TMP/store" --key-file "$TMP/key" init >/dev/null
"$PHIFS_KEY" --store "$TMP/store" --key-file "$TMP/key" add bench >/dev/null
"$PHIFS_GRANT" --store "$TMP/store" --key-file "$TMP/key" add --principal user:0 --patient '*' \
	--role service --purpose operations --for 24h >/dev/null
mkdir -p "$TMP/ak" "$TMP/alog" "$TMP/aexp" "$TMP/p.mnt"
"$PHIFS_AUDIT" keygen --out "$TMP/ak" --name phi-audit/bench >/dev/null
"$AUDITD" --dir "$TMP/alog" --export-dir "$TMP/aexp" --socket "$TMP/audit.sock" \
	--signing-key "$TMP/ak/phifs-audit-signing-key" 2>"$TMP/auditd.log" &
PIDS+=($!)
for _ in $(seq 200); do [ -S "$TMP/audit.sock" ] && break; sleep 0.05; done
pmount() { # plain | grants | audit
	local o=()
	[ "$1" = grants ] && o=(-o grants)
	[ "$1" = audit ] && o=(-o "grants,audit_socket=$TMP/audit.sock")
	"$PHIFS" --key-file "$TMP/key" "${o[@]}" "$TMP/store" "$TMP/p.mnt"
	MOUNTS+=("$TMP/p.mnt")
}
pumount() { fuse_umount "$TMP/p.mnt"; }
fill() { for i in $(seq 0 $((NFILES - 1))); do head -c 4096 /dev/urandom >"$1/$(printf f%03d "$i")"; done; }
fill "$TMP/gc.mnt"
pmount plain
fill "$TMP/p.mnt/bench"
pumount

declare -A R
add() { R[$1]="${R[$1]:-} $2"; }
cell() { # setup dir threads
	local out
	out=$("$TMP/openbench" open "$2" "$NFILES" "$3" "$BENCH_S")
	set -- "$1" "$2" "$3" $out
	[ "$7" = 0 ] || log "$1 $3 threads: $7 failed opens"
	add "$1.$3.ops" "$4"; add "$1.$3.p50" "$5"; add "$1.$3.p99" "$6"
}
for rep in $(seq "$REPS"); do
	log "repetition $rep/$REPS"
	out=$("$TMP/openbench" fdatasync "$TMP/alog" 200)
	add fsync.p50 "${out% *}"; add fsync.p99 "${out#* }"
	for t in $THREADS; do cell gocryptfs "$TMP/gc.mnt" "$t"; done
	pmount plain
	for t in $THREADS; do cell phifs "$TMP/p.mnt/bench" "$t"; done
	pumount
	pmount grants
	for t in $THREADS; do cell phifs-grants "$TMP/p.mnt/bench" "$t"; done
	pumount
	pmount audit
	for t in $THREADS; do cell phifs-audit "$TMP/p.mnt/bench" "$t"; done
	pumount
done
for k in "${!R[@]}"; do R[$k]=$(echo "${R[$k]}" | median); done
recs=$("$PHIFS_AUDIT" query --dir "$TMP/alog" --event open --format csv | wc -l)

echo
echo "Open benchmark: $(uname -r), $(nproc) cores, $BENCH_DIR ($(df -PT "$BENCH_DIR" | awk 'NR==2{print $2}')), $NFILES files of 4 KiB, ${BENCH_S}s per cell, median of $REPS interleaved repetitions"
echo "log volume fdatasync (512 B append): p50 ${R[fsync.p50]} µs, p99 ${R[fsync.p99]} µs; durable open records written: $recs"
echo
echo "opens/s (open + first byte + close, per second, all threads):"
echo
# The durable ceiling: each thread has one open in flight and every open waits for a
# fdatasync of the log, so even perfect group commit (all waiting opens in one flush) gives
# at most threads / fdatasync latency opens per second.
echo "| threads | gocryptfs | phifs | phifs+grants | phifs+grants+audit | audit/gocryptfs | audit/grants | durable ceiling (threads / fdatasync p50) | ceiling/gocryptfs |"
echo "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
ratio() { awk -v a="$1" -v g="$2" 'BEGIN{ if (g>0) printf "%.2f", a/g; else print "n/a" }'; }
for t in $THREADS; do
	g=${R[gocryptfs.$t.ops]} a=${R[phifs-audit.$t.ops]} c=${R[phifs-grants.$t.ops]}
	ceil=$(awk -v t="$t" -v f="${R[fsync.p50]}" 'BEGIN{ if (f>0) printf "%.0f", t*1e6/f; else print 0 }')
	printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$t" "$g" "${R[phifs.$t.ops]}" "$c" "$a" \
		"$(ratio "$a" "$g")" "$(ratio "$a" "$c")" "$ceil" "$(ratio "$ceil" "$g")"
done
echo
echo "open-to-first-byte latency p50 / p99 (µs):"
echo
echo "| threads | gocryptfs | phifs | phifs+grants | phifs+grants+audit |"
echo "|---:|---:|---:|---:|---:|"
for t in $THREADS; do
	printf '| %s |' "$t"
	for s in gocryptfs phifs phifs-grants phifs-audit; do printf ' %s / %s |' "${R[$s.$t.p50]}" "${R[$s.$t.p99]}"; done
	echo
done
echo
