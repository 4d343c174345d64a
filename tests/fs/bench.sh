#!/bin/bash
# bench.sh: compare raw / bindfs / gocryptfs / gocryptfs-ao / phifs on the same disk.
# gocryptfs-ao is gocryptfs -allow_other, which makes gocryptfs mount with default_permissions:
# the kernel then checks Unix permissions itself and must refresh a directory's attributes
# (one GETATTR round trip) after every change to it. phifs is a multi-user mount and always
# runs that way, so gocryptfs-ao is the like-for-like peer; plain gocryptfs is the packaged
# default (single user, no kernel permission checks).
# Env: BENCH_DIR (/var/tmp/phi-bench), BENCH_MB (1024), BENCH_FILES (10000),
#      BENCH_FIO_S (15), BENCH_FIO_SIZE (256M), BENCH_OC_N (20000),
#      PHIFS (build/phifs/phifs), PHIFS_KEY (build/tools/phifs-key),
#      BENCH_SETUPS (default "raw bindfs gocryptfs gocryptfs-ao phifs"), BENCH_REPS (1).
# With BENCH_REPS=N the setups run N times, interleaved (raw bindfs gocryptfs phifs raw ...),
# and each cell is the median of its N values: on a shared, noisy machine a burst of load
# then hits every setup alike instead of one setup's whole run.
set -euo pipefail

BENCH_DIR=${BENCH_DIR:-/var/tmp/phi-bench}
BENCH_MB=${BENCH_MB:-1024}
BENCH_FILES=${BENCH_FILES:-10000}
BENCH_FIO_S=${BENCH_FIO_S:-15}
BENCH_FIO_SIZE=${BENCH_FIO_SIZE:-256M}
BENCH_OC_N=${BENCH_OC_N:-20000}
PHIFS=${PHIFS:-build/phifs/phifs}
PHIFS_KEY=${PHIFS_KEY:-build/tools/phifs-key}
export PHIFS_AUDIT_SOCKET=${PHIFS_AUDIT_SOCKET:-none} # store setup; the open benchmark audits its mount
SETUPS=${BENCH_SETUPS:-raw bindfs gocryptfs gocryptfs-ao phifs}
REPS=${BENCH_REPS:-1}
HERE=$(cd "$(dirname "$0")" && pwd)

[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root (drop_caches)" >&2; exit 2; }
for t in fio cc python3; do command -v "$t" >/dev/null || { echo "bench.sh: missing $t" >&2; exit 2; }; done

. "$HERE/bench-lib.sh"
bench_start run

cc -O2 -o "$TMP/openclose" "$HERE/openclose.c"

# setup-specific mount / unmount; sets WORK (directory to benchmark in)
do_mount() {
	local s=$1
	case $s in
	raw) WORK=$TMP/raw; mkdir -p "$WORK" ;;
	bindfs)
		mkdir -p "$TMP/bindfs.back" "$TMP/bindfs.mnt"
		bindfs "$TMP/bindfs.back" "$TMP/bindfs.mnt"
		MOUNTS+=("$TMP/bindfs.mnt"); WORK=$TMP/bindfs.mnt ;;
	gocryptfs) mount_gocryptfs "$s" ;;
	gocryptfs-ao) mount_gocryptfs "$s" -allow_other ;;
	phifs) mount_phifs phifs "$PHIFS" ;;
	esac
}
do_umount() {
	local s=$1 m
	[ "$s" = raw ] && return 0
	m=$TMP/$s.mnt
	sync
	fuse_umount "$m"
}
cold() { # unmount + drop caches + mount again (raw: just drop caches)
	local s=$1
	do_umount "$s"; drop; do_mount "$s"
}

declare -A R  # R[setup.metric] = space-separated values, one per repetition
METRICS=(seqw seqr rread rwrite create stat readall oc rm)
declare -A LABEL=(
	[seqw]="seq write ${BENCH_MB} MiB + fsync (MB/s)"
	[seqr]="seq cold read (MB/s)"
	[rread]="fio 4k rand read (IOPS)"
	[rwrite]="fio 4k rand write (IOPS)"
	[create]="create ${BENCH_FILES} files (s)"
	[stat]="stat all, cold (s)"
	[readall]="cold read all (s)"
	[oc]="open+close median (µs)"
	[rm]="rm -rf tree (s)")
declare -A HIGHER=([seqw]=1 [seqr]=1 [rread]=1 [rwrite]=1)

add() { R[$s.$1]="${R[$s.$1]:-} $2"; }

mbps() { awk -v mb="$1" -v s="$2" 'BEGIN{ if (s<=0) s=0.001; printf "%.0f", mb/s }'; }

fio_iops() { # rw dir
	fio --name=b --directory="$2" --rw="$1" --bs=4k --ioengine=psync --direct=0 \
		--size="$BENCH_FIO_SIZE" --runtime="$BENCH_FIO_S" --time_based --numjobs=1 \
		--output-format=terse --terse-version=3 2>/dev/null |
		awk -F';' -v rw="$1" '{ print (rw=="randread") ? $8 : $49 }'
}

bench_one() {
	local s=$1 t
	log "== $s"
	do_mount "$s"
	# sequential write / cold read
	t=$(now)
	dd if=/dev/zero of="$WORK/seq" bs=1M count="$BENCH_MB" conv=fsync status=none
	add seqw $(mbps "$BENCH_MB" "$(elapsed "$t")")
	cold "$s"
	t=$(now)
	dd if="$WORK/seq" of=/dev/null bs=1M status=none
	add seqr $(mbps "$BENCH_MB" "$(elapsed "$t")")
	rm -f "$WORK/seq"
	log "$s: seq done"
	# fio
	mkdir -p "$WORK/fio"
	add rwrite $(fio_iops randwrite "$WORK/fio")
	cold "$s"
	add rread $(fio_iops randread "$WORK/fio")
	rm -rf "$WORK/fio"
	log "$s: fio done"
	# small files
	mksrc "$BENCH_FILES"
	t=$(now)
	mktree "$WORK/tree" "$BENCH_FILES"
	sync
	add create $(elapsed "$t")
	cold "$s"
	t=$(now)
	find "$WORK/tree" -type f -printf '%s\n' >/dev/null
	add stat $(elapsed "$t")
	cold "$s"
	t=$(now)
	find "$WORK/tree" -type f -exec cat {} + >/dev/null
	add readall $(elapsed "$t")
	add oc $("$TMP/openclose" "$WORK/tree/d000/f00000" "$BENCH_OC_N")
	t=$(now)
	rm -rf "$WORK/tree"
	sync
	add rm $(elapsed "$t")
	log "$s: files done"
	do_umount "$s"
}

RUN=()
for s in $SETUPS; do
	case $s in
	raw) ;;
	gocryptfs-ao) command -v gocryptfs >/dev/null || { log "skip $s: not installed"; continue; } ;;
	bindfs|gocryptfs) command -v "$s" >/dev/null || { log "skip $s: not installed"; continue; } ;;
	phifs) { [ -x "$PHIFS" ] && [ -x "$PHIFS_KEY" ]; } || { log "skip phifs: $PHIFS / $PHIFS_KEY not built"; continue; } ;;
	*) echo "bench.sh: unknown setup $s" >&2; exit 2 ;;
	esac
	RUN+=("$s")
done
for rep in $(seq "$REPS"); do
	for s in "${RUN[@]}"; do
		log "repetition $rep/$REPS"
		bench_one "$s"
	done
done
for k in "${!R[@]}"; do R[$k]=$(echo "${R[$k]}" | median); done

cols="raw bindfs gocryptfs gocryptfs-ao phifs"
ratio() { # metric peer
	local g=${R[$2.$1]:-} p=${R[phifs.$1]:-}
	if [ -z "$g" ] || [ -z "$p" ]; then echo n/a; return; fi
	if [ -n "${HIGHER[$1]:-}" ]; then
		awk -v p="$p" -v g="$g" 'BEGIN{ if (g>0) printf "%.2f", p/g; else print "n/a" }'
	else
		awk -v p="$p" -v g="$g" 'BEGIN{ if (p>0) printf "%.2f", g/p; else print "n/a" }'
	fi
}
echo
echo "Benchmark: $(uname -r), $(nproc) cores, dir $BENCH_DIR ($(df -PT "$BENCH_DIR" | awk 'NR==2{print $2}')), BENCH_MB=$BENCH_MB BENCH_FILES=$BENCH_FILES fio ${BENCH_FIO_S}s/${BENCH_FIO_SIZE}, median of $REPS interleaved repetition(s)"
echo
printf '| metric |'; for c in $cols; do printf ' %s |' "$c"; done; printf ' phifs/gocryptfs | phifs/gocryptfs-ao |\n'
printf '|---|'; for c in $cols; do printf -- '---:|'; done; printf -- '---:|---:|\n'
for m in "${METRICS[@]}"; do
	printf '| %s |' "${LABEL[$m]}"
	for c in $cols; do printf ' %s |' "${R[$c.$m]:-n/a}"; done
	printf ' %s | %s |\n' "$(ratio "$m" gocryptfs)" "$(ratio "$m" gocryptfs-ao)"
done
echo
echo "Ratio columns: >1 means phifs is better (throughput: phifs/peer; time and latency: peer/phifs)."
echo "gocryptfs-ao: gocryptfs -allow_other (default_permissions, like phifs)."
