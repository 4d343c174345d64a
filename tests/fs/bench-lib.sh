# bench-lib.sh: what the benchmark scripts (bench.sh, bench-rm.sh, bench-open.sh) share.
# Sourced, not run. bench_start sets TMP (a fresh directory under BENCH_DIR) and the trap
# that, on any exit, unmounts every mount in MOUNTS, stops every process in PIDS and
# removes TMP.

log() { echo "# $*" >&2; }
now() { date +%s.%N; }
elapsed() { awk -v a="$1" -v b="$(now)" 'BEGIN{printf "%.2f", b-a}'; }
drop() { sync; echo 3 > /proc/sys/vm/drop_caches; }
# the median of the numbers on stdin (space or newline separated; even count: the mean of
# the middle two); nothing for none
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END{ if (NR==0) exit; if (NR%2) print v[(NR+1)/2]; else printf "%.2f\n", (v[NR/2]+v[NR/2+1])/2 }'; }

bench_cleanup() {
	local m p
	for m in "${MOUNTS[@]}"; do
		mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || umount -l "$m" 2>/dev/null || true; }
	done
	for p in "${PIDS[@]}"; do
		kill "$p" 2>/dev/null && wait "$p" 2>/dev/null || true
	done
	rm -rf "$TMP"
}

bench_start() { # name: TMP=$BENCH_DIR/name.XXXXXX
	mkdir -p "$BENCH_DIR"
	TMP=$(mktemp -d "$BENCH_DIR/$1.XXXXXX")
	MOUNTS=() PIDS=()
	trap bench_cleanup EXIT INT TERM
}

fuse_umount() { # mountpoint (one retry: a just-closed file can keep it busy a moment)
	fusermount3 -u "$1" 2>/dev/null || { sleep 0.5; fusermount3 -u "$1"; }
}

# gocryptfs on $TMP/name.cipher at $TMP/name.mnt (made on first use; scrypt cost kept low:
# key derivation is not what is measured); more arguments go to gocryptfs (-allow_other).
# Sets WORK.
mount_gocryptfs() { # name [gocryptfs options]
	local s=$1
	shift
	mkdir -p "$TMP/$s.cipher" "$TMP/$s.mnt"
	[ -e "$TMP/gocryptfs.pass" ] || echo pw > "$TMP/gocryptfs.pass"
	[ -e "$TMP/$s.cipher/gocryptfs.conf" ] ||
		gocryptfs -init -q -scryptn 10 -passfile "$TMP/gocryptfs.pass" "$TMP/$s.cipher" >/dev/null
	gocryptfs -q "$@" -passfile "$TMP/gocryptfs.pass" "$TMP/$s.cipher" "$TMP/$s.mnt"
	MOUNTS+=("$TMP/$s.mnt")
	WORK=$TMP/$s.mnt
}

# phifs binary bin on $TMP/name.store at $TMP/name.mnt, with one patient "bench" (store and
# key made on first use); more arguments go to phifs. Sets WORK to the patient's directory.
mount_phifs() { # name bin [phifs options]
	local s=$1 bin=$2
	shift 2
	mkdir -p "$TMP/$s.store" "$TMP/$s.mnt"
	if [ ! -e "$TMP/$s.key" ]; then
		"$PHIFS_KEY" --store "$TMP/$s.store" --key-file "$TMP/$s.key" init >/dev/null
		"$PHIFS_KEY" --store "$TMP/$s.store" --key-file "$TMP/$s.key" add bench >/dev/null
	fi
	"$bin" --key-file "$TMP/$s.key" "$@" "$TMP/$s.store" "$TMP/$s.mnt"
	MOUNTS+=("$TMP/$s.mnt")
	mkdir -p "$TMP/$s.mnt/bench" 2>/dev/null || [ -d "$TMP/$s.mnt/bench" ]
	WORK=$TMP/$s.mnt/bench
}

# The random bytes a tree of n files is cut from: $TMP/rand.src, made when missing or too
# short. Call it before timing mktree.
mksrc() { # n
	local need=$(($1 * 4096 + 8192))
	[ "$(stat -c %s "$TMP/rand.src" 2>/dev/null || echo 0)" -ge "$need" ] ||
		head -c "$need" /dev/urandom > "$TMP/rand.src"
}

# The small-files tree: n files of 3-5 KiB in directories of 100, cut from $TMP/rand.src.
mktree() { # dir n
	mksrc "$2"
	python3 - "$1" "$2" "$TMP/rand.src" <<'PY'
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
}
