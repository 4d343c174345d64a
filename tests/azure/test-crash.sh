#!/usr/bin/env bash
# test-crash (run by azurite.sh): written but not committed data survives a kill -9 of
# phifs, through the Azure backend's write journal (docs/azure-store.md):
#  1. files written and left open (a large one across blocks, whose early pieces were
#     already staged as uncommitted blocks; a small one; an overwrite and a truncate of a
#     committed file) when phifs is killed: the journal holds them, as ciphertext only,
#     and the next mount uploads them; every file then reads back as written;
#  2. a journal whose object another mount changed meanwhile is not applied: it is kept
#     in conflict/, the log says so without names, and the other writer's data stands;
#  3. the journal's size limit (cache_max) and a full journal volume (a 1 MiB tmpfs) do
#     not fail writes: they go through to the store instead.
: "${AZ_URL:?run through azurite.sh}" "${AZ_TOOL:?}"
fsdir=$(cd "$(dirname "$0")/../fs" && pwd)
. "$fsdir/lib.sh"

LOCAL=$STORE
phi_setup patient-k
"$AZ_TOOL" copy "$LOCAL" - "$AZ_URL" "$AZ_OPTS" || fail "copying the new store into Azurite"
STORE=$AZ_URL
CACHE=$T/jcache
shopt -s extglob
OPTS="${AZ_OPTS//cache_dir=+([^,])/cache_dir=$CACHE}"
phi_mount --store-opts "$OPTS"
P=$MNT/patient-k

journals() { find "$CACHE" -path '*/m-*/j-*' -type f -size +0 2>/dev/null | wc -l; } # awaiting replay (empty: pooled)
crash() { # kill -9 phifs, and the writer; clear the dead mount
	kill -9 "$PHIFS_PID"
	wait "$PHIFS_PID" 2>/dev/null || true
	PHIFS_PID=
	[ -n "${WPID:-}" ] && { kill -9 "$WPID" 2>/dev/null || true; wait "$WPID" 2>/dev/null || true; WPID=; }
	fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT" 2>/dev/null || true
}

# committed files first: one to overwrite in place, one to cut short
python3 - "$P" <<'PY'
import os, sys
d = sys.argv[1]
for name, n in (("base", 6 << 20), ("cut", 3 << 20)):
    with open(f"{d}/{name}", "wb") as f:
        f.write(bytes((i * 7 + len(name)) & 255 for i in range(256)) * (n // 256))
        f.flush()
        os.fsync(f.fileno())
PY
[ "$(journals)" = 0 ] || fail "a committed file left a journal"

# 1. writes left uncommitted, then kill -9
python3 - "$P" "$T/want" "$T/ready" <<'PY' &
import hashlib, os, sys, time
d, want, ready = sys.argv[1:4]
marker = b"MARKER-JOURNAL-4417 "
sums = {}
def keep(name, fd):
    os.lseek(fd, 0, 0)
    h = hashlib.sha256()
    while True:
        b = os.read(fd, 1 << 20)
        if not b:
            break
        h.update(b)
    sums[name] = h.hexdigest()
# a large new file: 10 MiB + 777 in 128 KiB writes; the cache holds 16 MiB of blocks, so
# write it twice over (20 MiB) to force staging of early pieces before the crash
big = os.open(f"{d}/big", os.O_CREAT | os.O_RDWR, 0o600)
for rnd in range(2):
    for off in range(0, (10 << 20) + 777, 128 << 10):
        n = min(128 << 10, (10 << 20) + 777 - off)
        os.pwrite(big, (marker * (n // len(marker) + 1))[:n] if rnd == 0 else os.urandom(n), off)
small = os.open(f"{d}/small", os.O_CREAT | os.O_RDWR, 0o600)
os.write(small, marker * 250)
base = os.open(f"{d}/base", os.O_RDWR)
os.pwrite(base, marker * 200, 3 << 20)
os.pwrite(base, b"tail", (6 << 20) + 100) # extends: a hole in between
cut = os.open(f"{d}/cut", os.O_RDWR)
os.ftruncate(cut, 1000003)
for name, fd in (("big", big), ("small", small), ("base", base), ("cut", cut)):
    keep(name, fd)
with open(want, "w") as f:
    for k in sorted(sums):
        f.write(f"{sums[k]}  {k}\n")
open(ready, "w").close()
time.sleep(600) # the files stay open: nothing commits them
PY
WPID=$!
for _ in $(seq 600); do [ -e "$T/ready" ] && break; sleep 0.1; done
[ -e "$T/ready" ] || fail "writer did not finish"
[ "$(journals)" -ge 4 ] || fail "expected a journal per written file, found $(journals)"
crash
[ "$(journals)" -ge 4 ] || fail "the journals did not outlive phifs"
grep -rqa "MARKER-JOURNAL-4417" "$CACHE" && fail "plaintext in the journal"
grep -rqa "patient-k" "$CACHE" && fail "a patient id in the journal"
ok "kill -9 with uncommitted writes: journals kept, ciphertext only"

phi_mount --store-opts "$OPTS"
grep -q "uncommitted changes of a previous mount uploaded" "$T/phifs.log" ||
	fail "no replay in the log: $(tail -5 "$T/phifs.log")"
(cd "$P" && sha256sum -c --quiet "$T/want") || fail "files after replay differ from what was written"
[ "$(journals)" = 0 ] || fail "journals left after the replay: $(journals)"
phi_umount
phi_mount --store-opts "${OPTS//cache_dir=+([^,])/cache_dir=$T/other}"
(cd "$P" && sha256sum -c --quiet "$T/want") || fail "replayed data is not in the store"
phi_umount
ok "the next mount uploaded every journal: contents as written, also from a second cache"

# 2. a conflict: another mount (its own cache) changes the file before the replay
phi_mount --store-opts "$OPTS"
python3 - "$P" "$T/ready2" <<'PY' &
import os, sys, time
fd = os.open(f"{sys.argv[1]}/small", os.O_RDWR)
os.pwrite(fd, b"MARKER-LOSER-5512 " * 10, 0)
open(sys.argv[2], "w").close()
time.sleep(600)
PY
WPID=$!
for _ in $(seq 300); do [ -e "$T/ready2" ] && break; sleep 0.1; done
crash
[ "$(journals)" = 1 ] || fail "expected one journal, found $(journals)"
phi_mount --store-opts "${OPTS//cache_dir=+([^,])/cache_dir=$T/other}"
echo "MARKER-WINNER-6613" > "$P/small"
winner=$(sha256sum < "$P/small")
phi_umount
: >"$T/phifs.log"
phi_mount --store-opts "$OPTS"
grep -q "changed by another writer since" "$T/phifs.log" || fail "conflict not logged: $(cat "$T/phifs.log")"
grep -q "small\|patient-k\|MARKER" "$T/phifs.log" && fail "the log names a file or data"
[ "$(sha256sum < "$P/small")" = "$winner" ] || fail "the other writer's data was replaced"
[ "$(find "$CACHE" -path '*conflict/*' -type f | wc -l)" = 1 ] || fail "conflict/ does not hold the journal"
[ "$(journals)" = 0 ] || fail "the conflicted journal is still waiting for a replay"
ok "a journal whose object changed meanwhile is kept in conflict/, not applied"
phi_umount

# 3. a tiny journal limit, and an unwritable journal directory: writes go through
phi_mount --store-opts "$OPTS,cache_max=1048576"
python3 - "$P" <<'PY' || fail "writes past cache_max"
import os, sys
data = os.urandom(5 << 20)
with open(f"{sys.argv[1]}/over", "wb") as f:
    f.write(data)
with open(f"{sys.argv[1]}/over", "rb") as f:
    assert f.read() == data
PY
phi_umount
ok "writes past cache_max go through"
mkdir -p "$T/full"
mount -t tmpfs -o size=1m tmpfs "$T/full" || fail "tmpfs"
phi_mount --store-opts "${OPTS//cache_dir=+([^,])/cache_dir=$T/full}"
python3 - "$P" <<'PY' || fail "writes with a full journal volume"
import os, sys
data = os.urandom(5 << 20)
with open(f"{sys.argv[1]}/full", "wb") as f:
    for off in range(0, len(data), 128 << 10):
        f.write(data[off:off + (128 << 10)])
with open(f"{sys.argv[1]}/full", "rb") as f:
    assert f.read() == data
PY
sum_full=$(sha256sum < "$P/full")
[ "$(find "$T/full" -path '*/m-*/j-*' -type f -size +0 | wc -l)" = 0 ] || fail "a journal was left on the full volume"
phi_umount
[ -z "$(find "$T/full" -type f ! -path '*/blocks/*')" ] || fail "the full volume was not left empty: $(find "$T/full")"
umount "$T/full"
phi_mount --store-opts "$OPTS"
[ "$(sha256sum < "$P/full")" = "$sum_full" ] || fail "not in the store"
ok "a full journal volume does not fail writes: they go through"

# bad option values are refused
"$PHIFS" --key-file "$KEY" --store-opts "$OPTS,cache_max=12" "$STORE" "$T/nomnt" 2>/dev/null &&
	fail "cache_max below 1 MiB accepted"
echo "PASS"
