#!/bin/bash
# bench-rm.sh: rm -rf of a cold tree of small files (bench.sh's small-files tree: BENCH_FILES
# files of 3-5 KiB in directories of 100) on raw / gocryptfs / gocryptfs-ao / phifs, in one
# run, each timed as rm -rf + sync after an unmount, drop_caches and remount (bench.sh's
# "cold"). gocryptfs-ao is gocryptfs -allow_other, which mounts with default_permissions
# like phifs (see bench.sh). Then, on a smaller tree (BENCH_COUNT_FILES), it counts what one
# unlink costs phifs: FUSE requests by opcode (phifs -d) and phifs's syscalls (strace -c).
# Not a test: prints tables. Ratios matter (the machine is shared and noisy).
# Env: BENCH_DIR (/var/tmp/phi-bench), BENCH_FILES (10000), BENCH_REPS (3, interleaved;
#      each cell is the median), BENCH_SETUPS ("raw gocryptfs gocryptfs-ao phifs"),
#      BENCH_COUNT_FILES (1000; 0 skips the counts), PHIFS_OPTS (extra phifs arguments,
#      e.g. "-o grants"), PHIFS, PHIFS_KEY (build-rel paths by default), PHIFS_BASE (another
#      phifs binary, e.g. a build of the previous commit: adds the setup phifs-base, so that
#      a change is measured against its baseline in the same run).
set -euo pipefail
BENCH_DIR=${BENCH_DIR:-/var/tmp/phi-bench}
BENCH_FILES=${BENCH_FILES:-10000}
REPS=${BENCH_REPS:-3}
PHIFS_BASE=${PHIFS_BASE:-}
SETUPS=${BENCH_SETUPS:-raw gocryptfs gocryptfs-ao phifs${PHIFS_BASE:+ phifs-base}}
COUNT_FILES=${BENCH_COUNT_FILES:-1000}
B=${BUILD:-build-rel}
PHIFS=${PHIFS:-$B/phifs/phifs}
PHIFS_KEY=${PHIFS_KEY:-$B/tools/phifs-key}
read -r -a PHIFS_OPTS <<<"${PHIFS_OPTS:-}"
export PHIFS_AUDIT_SOCKET=none # store setup (phifs-key); the mounts themselves are not audited
[ "$(id -u)" = 0 ] || { echo "bench-rm.sh: needs root (drop_caches)" >&2; exit 2; }
for x in "$PHIFS" "$PHIFS_KEY"; do
	[ -x "$x" ] || { echo "bench-rm.sh: $x not built (meson setup $B -Dbuildtype=release)" >&2; exit 2; }
done
command -v python3 >/dev/null || { echo "bench-rm.sh: python3 missing" >&2; exit 2; }

HERE=$(cd "$(dirname "$0")" && pwd)
. "$HERE/bench-lib.sh"
bench_start rm

# the mount of each setup (bench.sh's do_mount); sets WORK. phifs: extra arguments after $1.
do_mount() {
	local s=$1
	shift
	case $s in
	raw) WORK=$TMP/raw; mkdir -p "$WORK" ;;
	gocryptfs) mount_gocryptfs "$s" ;;
	gocryptfs-ao) mount_gocryptfs "$s" -allow_other ;;
	phifs) mount_phifs "$s" "$PHIFS" "${PHIFS_OPTS[@]}" "$@" ;;
	phifs-base) mount_phifs "$s" "$PHIFS_BASE" "${PHIFS_OPTS[@]}" "$@" ;;
	esac
}
do_umount() {
	local s=$1 m
	[ "$s" = raw ] && return 0
	m=$TMP/$s.mnt
	sync
	fuse_umount "$m"
}
mksrc "$BENCH_FILES"

RUN=()
for s in $SETUPS; do
	case $s in
	raw|phifs) ;;
	phifs-base) [ -x "$PHIFS_BASE" ] || { echo "bench-rm.sh: PHIFS_BASE $PHIFS_BASE is not executable" >&2; exit 2; } ;;
	gocryptfs|gocryptfs-ao) command -v gocryptfs >/dev/null || { log "skip $s: not installed"; continue; } ;;
	*) echo "bench-rm.sh: unknown setup $s" >&2; exit 2 ;;
	esac
	RUN+=("$s")
done

# CPU seconds (user + system) a daemon has used: on a loaded machine a steadier measure of
# the work per unlink than the wall time
daemon_pid() { # setup
	case $1 in
	raw) ;;
	gocryptfs|gocryptfs-ao) pgrep -n -f -- "$TMP/$1.cipher $TMP/$1.mnt" ;;
	*) pgrep -n -f -- "--key-file $TMP/$1.key" ;;
	esac
}
cpu_s() { # pid (empty: 0)
	[ -n "$1" ] || { echo 0; return; }
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f", ($14 + $15) / hz }' "/proc/$1/stat"
}

declare -A R C
for rep in $(seq "$REPS"); do
	for s in "${RUN[@]}"; do
		do_mount "$s"
		mktree "$WORK/tree" "$BENCH_FILES"
		do_umount "$s"; drop; do_mount "$s"
		dpid=$(daemon_pid "$s")
		c0=$(cpu_s "$dpid")
		t=$(now)
		rm -rf "$WORK/tree"
		sync
		v=$(elapsed "$t")
		c=$(awk -v a="$c0" -v b="$(cpu_s "$dpid")" 'BEGIN{printf "%.2f", b-a}')
		R[$s]="${R[$s]:-} $v"
		C[$s]="${C[$s]:-} $c"
		log "rep $rep/$REPS $s: rm -rf ${v}s, daemon CPU ${c}s"
		do_umount "$s"
	done
done

# FUSE requests (phifs -d, counted by opcode) and phifs syscalls (strace -c) of a cold rm -rf
declare -A REQ SYS
count_run() { # setup mode (fuse | strace); writes $TMP/$setup.req or $TMP/$setup.strace
	local s=$1 pid bin=$PHIFS
	[ "$s" = phifs-base ] && bin=$PHIFS_BASE
	do_mount "$s"
	mktree "$WORK/tree" "$COUNT_FILES"
	do_umount "$s"; drop
	if [ "$2" = fuse ]; then
		# -d keeps phifs in the foreground, logging every request
		"$bin" --key-file "$TMP/$s.key" "${PHIFS_OPTS[@]}" -d "$TMP/$s.store" "$TMP/$s.mnt" 2>"$TMP/debug.log" &
		pid=$!
		for _ in $(seq 100); do mountpoint -q "$TMP/$s.mnt" && break; sleep 0.1; done
		MOUNTS+=("$TMP/$s.mnt"); WORK=$TMP/$s.mnt/bench
		ls -d "$WORK/tree" >/dev/null
		local start
		start=$(wc -l <"$TMP/debug.log")
		rm -rf "$WORK/tree"
		sync
		sleep 0.5
		tail -n +"$((start + 1))" "$TMP/debug.log" | grep -o 'opcode: [A-Z_]*' | awk '{print $2}' | sort | uniq -c >"$TMP/$s.req"
		do_umount "$s"
		wait "$pid" || true
	else
		do_mount "$s"
		ls -d "$WORK/tree" >/dev/null
		pid=$(pgrep -n -f -- "--key-file $TMP/$s.key")
		strace -f -c -o "$TMP/$s.strace" -p "$pid" &
		local spid=$!
		sleep 1
		rm -rf "$WORK/tree"
		sync
		kill -INT "$spid"; wait "$spid" || true
		do_umount "$s"
	fi
}
ndirs=$(((COUNT_FILES + 99) / 100))
CSETUPS=()
for s in "${RUN[@]}"; do
	case $s in phifs|phifs-base) [ "$COUNT_FILES" -gt 0 ] && CSETUPS+=("$s") ;; esac
done
for s in "${CSETUPS[@]}"; do
	count_run "$s" fuse
	if command -v strace >/dev/null; then count_run "$s" strace; fi
done

cols=("${RUN[@]}")
ratio() { # peer: peer time / phifs time (>1: phifs is faster)
	local g p
	g=$(echo "${R[$1]:-}" | median) p=$(echo "${R[phifs]:-}" | median)
	if [ -z "$g" ] || [ -z "$p" ]; then echo n/a; return; fi
	awk -v p="$p" -v g="$g" 'BEGIN{ if (p>0) printf "%.2f", g/p; else print "n/a" }'
}
echo
echo "rm -rf + sync of a cold tree of $BENCH_FILES files (3-5 KiB) in dirs of 100: $(uname -r), $(nproc) cores, $BENCH_DIR ($(df -PT "$BENCH_DIR" | awk 'NR==2{print $2}')), median of $REPS interleaved repetition(s) (s)${PHIFS_OPTS:+, phifs ${PHIFS_OPTS[*]}}"
echo
printf '|'; for c in "${cols[@]}"; do printf ' %s |' "$c"; done; printf ' gocryptfs/phifs | gocryptfs-ao/phifs | phifs-base/phifs |\n'
printf '|'; for c in "${cols[@]}"; do printf -- '---:|'; done; printf -- '---:|---:|---:|\n'
printf '|'; for c in "${cols[@]}"; do printf ' %s |' "$(echo "${R[$c]}" | median)"; done
printf ' %s | %s | %s |\n' "$(ratio gocryptfs)" "$(ratio gocryptfs-ao)" "$(ratio phifs-base)"
echo
echo "CPU seconds (user + system) of the filesystem daemon during the rm -rf, median:"
echo
printf '|'; for c in "${cols[@]}"; do printf ' %s |' "$c"; done; printf '\n'
printf '|'; for c in "${cols[@]}"; do printf -- '---:|'; done; printf '\n'
printf '|'; for c in "${cols[@]}"; do printf ' %s |' "$(echo "${C[$c]}" | median)"; done; printf '\n'
echo
echo "Ratio columns: peer time / phifs time (>1 means phifs is faster). All values:"
for c in "${cols[@]}"; do echo "  $c:${R[$c]} (daemon CPU:${C[$c]})"; done
for s in "${CSETUPS[@]}"; do
if [ -s "$TMP/$s.req" ]; then
	echo
	echo "$s FUSE requests of a cold rm -rf of $COUNT_FILES files in $ndirs dirs (per file unlinked):"
	echo
	echo '| opcode | requests | per file |'
	echo '|---|---:|---:|'
	sort -rn "$TMP/$s.req" | awk -v n="$COUNT_FILES" '{ printf "| %s | %d | %.2f |\n", $2, $1, $1/n; t+=$1 } END { printf "| all | %d | %.2f |\n", t, t/n }'
fi
if [ -s "$TMP/$s.strace" ]; then
	echo
	echo "$s syscalls (strace -f -c) of the same rm -rf (per file unlinked; the FUSE device reads and writes included):"
	echo
	echo '| syscall | calls | per file |'
	echo '|---|---:|---:|'
	awk -v n="$COUNT_FILES" '$1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" { name=$NF; calls=$4; if (calls ~ /^[0-9]+$/) { printf "| %s | %d | %.2f |\n", name, calls, calls/n; t+=calls } } END { printf "| all | %d | %.2f |\n", t, t/n }' "$TMP/$s.strace"
fi
done
