#!/usr/bin/env bash
# bench.sh: phifs over Azure Blob (Azurite) beside rclone mount of a crypt remote over an
# azureblob remote (Debian's rclone, --vfs-cache-mode writes) on the same Azurite.
# Rows (times in seconds, until the data is durable in the blob store):
#   seqw  sequential write of BENCH_MB MiB (dd conv=fsync)
#   seqr  sequential cold read (remount first)
#   ow    a 4 KiB overwrite inside that file, fsync'd
#   small BENCH_FILES files of 4 KiB, each fsync'd
#   lsr   ls -lR of the tree, cold
# phifs's fsync returns once the service has committed the blob; rclone's does not upload,
# so for rclone each row also waits until its log says the files were copied.
# Env: BENCH_MB (512), BENCH_FILES (1000), BENCH_SETUPS ("phifs rclone"),
#      PHIFS, PHIFS_KEY, AZ_TOOL (build paths). Run as root (FUSE).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
BENCH_MB=${BENCH_MB:-512}
BENCH_FILES=${BENCH_FILES:-1000}
SETUPS=${BENCH_SETUPS:-phifs rclone}
PHIFS=${PHIFS:-$root/build/phifs/phifs}
PHIFS_KEY=${PHIFS_KEY:-$root/build/tools/phifs-key}
export PHIFS_AUDIT_SOCKET=${PHIFS_AUDIT_SOCKET:-none} # store setup only
AZ_TOOL=${AZ_TOOL:-$root/build/tests/azure/az-tool}
# the timed rows start a python; a version manager's shim on PATH (pyenv: 0.3 s) would be timed too
PY=/usr/bin/python3
[ -x "$PY" ] || PY=python3
[ "$(id -u)" = 0 ] || { echo "bench.sh: needs root" >&2; exit 2; }
if ! command -v rclone >/dev/null; then
	echo "# rclone missing (apt-get install rclone): phifs only" >&2
	SETUPS=${SETUPS//rclone/}
fi
"$here/setup-azurite.sh" >&2

TMP=$(mktemp -d /var/tmp/phi-azbench.XXXXXX)
AZPID= RCPID= PHPID=
cleanup() {
	for m in "$TMP"/*.mnt; do
		mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" || true; }
	done
	for p in $RCPID $PHPID $AZPID; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$TMP"
}
trap cleanup EXIT INT TERM
log() { echo "# $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.3f", b-a}'; }

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
"$here/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$port" --inMemoryPersistence \
	--loose --skipApiVersionCheck --disableTelemetry --silent \
	>"$TMP/azurite.log" 2>&1 &
AZPID=$!
for _ in $(seq 200); do curl -s -o /dev/null "http://127.0.0.1:$port/" && break; sleep 0.1; done
kill -0 "$AZPID" 2>/dev/null || { cat "$TMP/azurite.log" >&2; exit 1; }
KEY_B64='Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=='
umask 077
printf '%s\n' "$KEY_B64" >"$TMP/account.key"
AZ_OPTS="endpoint=http://127.0.0.1:$port,key_file=$TMP/account.key,create=1,cache_dir=$TMP/cache"

declare -A R
# ---- phifs ----
ph_mount() {
	"$PHIFS" --key-file "$TMP/master.key" --store-opts "$AZ_OPTS" "az://devstoreaccount1/phifs/b" \
		"$TMP/phifs.mnt" 2>>"$TMP/phifs.log"
	WORK=$TMP/phifs.mnt/bench
}
ph_umount() { fusermount3 -u "$TMP/phifs.mnt"; }
ph_setup() {
	mkdir -p "$TMP/phifs.mnt" "$TMP/local"
	"$PHIFS_KEY" --store "$TMP/local" --key-file "$TMP/master.key" init >/dev/null
	"$PHIFS_KEY" --store "$TMP/local" --key-file "$TMP/master.key" add bench >/dev/null
	"$AZ_TOOL" copy "$TMP/local" - "az://devstoreaccount1/phifs/b" "$AZ_OPTS"
	ph_mount
}

# ---- rclone ----
rc_conf() {
	local ob; ob=$(rclone obscure benchpass)
	cat >"$TMP/rclone.conf" <<CONF
[azb]
type = azureblob
use_emulator = true
endpoint = http://127.0.0.1:$port/devstoreaccount1

[azc]
type = crypt
remote = azb:rclone/b
password = $ob
CONF
}
rc_mount() {
	rclone --config "$TMP/rclone.conf" mount azc: "$TMP/rclone.mnt" --vfs-cache-mode writes \
		--cache-dir "$TMP/rclone.cache" --vfs-write-back 0s --dir-cache-time 5m --attr-timeout 1s \
		--transfers 4 --rc --rc-addr "127.0.0.1:$rcport" --rc-no-auth --log-file "$TMP/rclone.log" -v &
	RCPID=$!
	for _ in $(seq 200); do mountpoint -q "$TMP/rclone.mnt" && break; sleep 0.1; done
	mountpoint -q "$TMP/rclone.mnt" || { tail "$TMP/rclone.log" >&2; exit 1; }
	WORK=$TMP/rclone.mnt/bench
}
# COPIED is not reset: the log file (and its earlier "Copied" lines) outlives the remount
rc_umount() { fusermount3 -u "$TMP/rclone.mnt"; wait "$RCPID" 2>/dev/null || true; RCPID=; }
rc_setup() {
	mkdir -p "$TMP/rclone.mnt"
	rcport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
	rc_conf
	rclone --config "$TMP/rclone.conf" mkdir azb:rclone
	rc_mount
}
# until rclone has uploaded N more files: its "Copied" log lines (vfs/stats says 0 queued
# right after close, before the upload is registered: blob.md section 3)
COPIED=0
rc_settle() {
	local want=$((COPIED + $1)) n
	for _ in $(seq 36000); do
		n=$(grep -c "Copied (" "$TMP/rclone.log" || true)
		if [ "$n" -ge "$want" ]; then COPIED=$n; return 0; fi
		sleep 0.05
	done
	echo "rclone never uploaded" >&2; exit 1
}
ph_settle() { :; } # fsync returned: committed to the blob store

run() {
	local s=$1 t
	log "== $s"
	if [ "$s" = phifs ]; then ph_setup; else rc_setup; fi
	mkdir -p "$WORK"
	t=$(now)
	dd if=/dev/urandom of="$WORK/seq" bs=1M count="$BENCH_MB" conv=fsync status=none
	${s:0:2}_settle 1
	R[$s.seqw]=$(since "$t")
	log "$s seqw ${R[$s.seqw]}"
	${s:0:2}_umount; sync; echo 3 >/proc/sys/vm/drop_caches; ${s:0:2}_mount
	[ "$s" = rclone ] && rm -rf "$TMP/rclone.cache"/vfs/* 2>/dev/null || true
	# phifs's read cache is filled by reads only, so it is empty here; cleared all the same
	[ "$s" = phifs ] && rm -rf "$TMP/cache"/*/blocks 2>/dev/null || true
	t=$(now)
	dd if="$WORK/seq" of=/dev/null bs=1M status=none
	R[$s.seqr]=$(since "$t")
	log "$s seqr ${R[$s.seqr]}"
	# timed inside the python, from the open to the close: its start-up and exit (~25 ms
	# and ~10 ms) are not the row. phifs is durable when fsync returns; rclone when its log
	# says the upload finished, so its row ends there.
	read -r t t1 < <("$PY" -c 'import os,sys,time; t=time.time(); fd=os.open(sys.argv[1], os.O_WRONLY); os.pwrite(fd, os.urandom(4096), int(sys.argv[2]) << 19); os.fsync(fd); os.close(fd); print("%.6f %.6f" % (t, time.time()))' "$WORK/seq" "$BENCH_MB")
	if [ "$s" = phifs ]; then
		R[$s.ow]=$(awk -v a="$t" -v b="$t1" 'BEGIN{printf "%.3f", b-a}')
	else
		rc_settle 1
		R[$s.ow]=$(since "$t")
	fi
	log "$s ow ${R[$s.ow]}"
	mkdir -p "$WORK/small"
	t=$(now)
	"$PY" - "$WORK/small" "$BENCH_FILES" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    if i % 100 == 0:
        os.makedirs(f"{d}/d{i // 100}", exist_ok=True)
    fd = os.open(f"{d}/d{i // 100}/f{i}", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, os.urandom(4096))
    os.fsync(fd)
    os.close(fd)
PY
	${s:0:2}_settle "$BENCH_FILES"
	R[$s.small]=$(since "$t")
	log "$s small ${R[$s.small]}"
	${s:0:2}_umount; sync; echo 3 >/proc/sys/vm/drop_caches; ${s:0:2}_mount
	t=$(now)
	n=$(ls -lR "$WORK" | wc -l)
	R[$s.lsr]=$(since "$t")
	log "$s lsr ${R[$s.lsr]} ($n lines)"
	[ "$n" -gt "$BENCH_FILES" ] || { echo "$s: ls -lR saw $n lines" >&2; exit 1; }
	${s:0:2}_umount
}

for s in $SETUPS; do run "$s"; done

both=; [[ " $SETUPS " == *" phifs "* && " $SETUPS " == *" rclone "* ]] && both=1
printf '| row (s, until durable) |'; for s in $SETUPS; do printf ' %s |' "$s"; done
[ -n "$both" ] && printf ' rclone / phifs |'; echo
printf '|---|'; for s in $SETUPS; do printf -- '---|'; done; [ -n "$both" ] && printf -- '---|'; echo
for m in seqw seqr ow small lsr; do
	case $m in
	seqw) l="sequential write ${BENCH_MB} MiB" ;; seqr) l="sequential cold read" ;;
	ow) l="4 KiB overwrite inside it" ;; small) l="${BENCH_FILES} small files" ;; lsr) l="ls -lR (cold)" ;;
	esac
	printf '| %s |' "$l"; for s in $SETUPS; do printf ' %s |' "${R[$s.$m]:--}"; done
	[ -n "$both" ] && awk -v a="${R[rclone.$m]}" -v b="${R[phifs.$m]}" 'BEGIN{printf " %.2f |", (b > 0 ? a / b : 0)}'
	echo
done
