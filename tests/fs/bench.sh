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

mkdir -p "$BENCH_DIR"
TMP=$(mktemp -d "$BENCH_DIR/run.XXXXXX")
MOUNTS=()
cleanup() {
	local m
	for m in "${MOUNTS[@]}"; do
		mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
	done
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM

cc -O2 -o "$TMP/openclose" "$HERE/openclose.c"

log() { echo "# $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }

# setup-specific mount / unmount; sets WORK (directory to benchmark in)
do_mount() {
	local s=$1
	case $s in
	raw) WORK=$TMP/raw; mkdir -p "$WORK" ;;
	bindfs)
		mkdir -p "$TMP/bindfs.back" "$TMP/bindfs.mnt"
		bindfs "$TMP/bindfs.back" "$TMP/bindfs.mnt"
		MOUNTS+=("$TMP/bindfs.mnt"); WORK=$TMP/bindfs.mnt ;;
	gocryptfs|gocryptfs-ao)
		mkdir -p "$TMP/$s.cipher" "$TMP/$s.mnt"
		echo pw > "$TMP/gocryptfs.pass"
		[ -e "$TMP/$s.cipher/gocryptfs.conf" ] ||
			gocryptfs -init -q -scryptn 10 -passfile "$TMP/gocryptfs.pass" "$TMP/$s.cipher" >/dev/null
		local ao=
		[ "$s" = gocryptfs-ao ] && ao=-allow_other
		gocryptfs -q $ao -passfile "$TMP/gocryptfs.pass" "$TMP/$s.cipher" "$TMP/$s.mnt"
		MOUNTS+=("$TMP/$s.mnt"); WORK=$TMP/$s.mnt ;;
	phifs)
		mkdir -p "$TMP/phifs.store" "$TMP/phifs.mnt"
		if [ ! -e "$TMP/phifs.key" ]; then
			"$PHIFS_KEY" --store "$TMP/phifs.store" --key-file "$TMP/phifs.key" init >/dev/null
			"$PHIFS_KEY" --store "$TMP/phifs.store" --key-file "$TMP/phifs.key" add bench >/dev/null
		fi
		"$PHIFS" --key-file "$TMP/phifs.key" "$TMP/phifs.store" "$TMP/phifs.mnt"
		MOUNTS+=("$TMP/phifs.mnt")
		mkdir -p "$TMP/phifs.mnt/bench" 2>/dev/null || [ -d "$TMP/phifs.mnt/bench" ]
		WORK=$TMP/phifs.mnt/bench ;;
	esac
}
do_umount() {
	local s=$1 m
	[ "$s" = raw ] && return 0
	m=$TMP/$s.mnt
	sync
	fusermount3 -u "$m" 2>/dev/null || { sleep 0.5; fusermount3 -u "$m"; }
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
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END{ if (NR==0) exit; if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2 }'; }

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
	head -c $((BENCH_FILES * 4096 + 8192)) /dev/urandom > "$TMP/rand.src"
	t=$(now)
	python3 - "$WORK/tree" "$BENCH_FILES" "$TMP/rand.src" <<'PY'
import os, sys
root, n, src = sys.argv[1], int(sys.argv[2]), open(sys.argv[3], "rb").read()
for i in range(n):
    d = os.path.join(root, "d%03d" % (i // 100))
    if i % 100 == 0:
        os.makedirs(d, exist_ok=True)
    sz = 3000 + (i * 7919) % 2200
    with open(os.path.join(d, "f%05d" % i), "wb") as f:
        f.write(src[i * 4096:i * 4096 + sz])
PY
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
