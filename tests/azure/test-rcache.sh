#!/usr/bin/env bash
# test-rcache (run by azurite.sh with AZURITE_DEBUG=1): the Azure backend's local read
# cache (docs/azure-store.md). Downloads are counted from Azurite's request log.
#  1. a cold read of a 13 MiB file downloads it; after a remount and a page-cache drop
#     the same read downloads only the open's 8 KiB, and reads back the same bytes;
#  2. freshness by ETag: another mount (its own cache) rewrites the file; the first
#     cache's next read downloads the new version and returns it, never the old bytes;
#  3. a damaged entry (a flipped byte) is detected by its hash, removed, refetched;
#  4. the cache stays under rcache_max (evicting the least recently used entries);
#  5. ciphertext only: no marker and no patient id in the cache directory.
: "${AZ_URL:?run through azurite.sh}" "${AZ_TOOL:?}"
[ -f "$AZ_DIR/debug.log" ] || { echo "SKIP: needs AZURITE_DEBUG=1"; exit 77; }
fsdir=$(cd "$(dirname "$0")/../fs" && pwd)
. "$fsdir/lib.sh"
shopt -s extglob

LOCAL=$STORE
phi_setup patient-r
"$AZ_TOOL" copy "$LOCAL" - "$AZ_URL" "$AZ_OPTS" || fail "copying the new store into Azurite"
STORE=$AZ_URL
CACHE=$T/rc
OPTS="${AZ_OPTS//cache_dir=+([^,])/cache_dir=$CACHE}"
OTHER="${AZ_OPTS//cache_dir=+([^,])/cache_dir=$T/other}"
P=$MNT/patient-r

mark() { stat -c %s "$AZ_DIR/debug.log"; }
downloaded() { # bytes of Get Blob ranges logged after mark $1 (Azurite writes its log lazily)
	local s0=-1 s1; s1=$(mark)
	while [ "$s0" != "$s1" ]; do sleep 0.5; s0=$s1; s1=$(mark); done
	tail -c +"$(($1 + 1))" "$AZ_DIR/debug.log" | grep -o '"x-ms-range":"bytes=[0-9]*-[0-9]*"' |
		sed 's/.*=\([0-9]*\)-\([0-9]*\)"/\1 \2/' | awk '{ s += $2 - $1 + 1 } END { print s + 0 }'
}
cold() { phi_umount; sync; echo 3 >/proc/sys/vm/drop_caches; phi_mount --store-opts "$1"; }
entries() { find "$CACHE" -path '*/blocks/*' -type f | wc -l; }

phi_mount --store-opts "$OPTS"
# the checksum from the writer: a read through the mount would already fill the cache
want=$(python3 - "$P/big" <<'PY'
import hashlib, os, sys
m = b"MARKER-RCACHE-3391 "
data = (m * ((13 << 20) // len(m) + 1))[:(13 << 20) + 4321]
with open(sys.argv[1], "wb") as f:
    f.write(data)
print(hashlib.sha256(data).hexdigest() + "  -")
PY
)
[ "$(entries)" = 0 ] || fail "writing filled the read cache"

# 1. cold, then warm from the cache
cold "$OPTS"
m=$(mark); got=$(sha256sum < "$P/big"); d1=$(downloaded "$m")
[ "$got" = "$want" ] || fail "first read"
[ "$d1" -ge $((13 << 20)) ] || fail "a cold read downloaded only $d1 bytes"
[ "$(entries)" -ge 3 ] || fail "the read cache holds $(entries) entries"
cold "$OPTS"
m=$(mark); got=$(sha256sum < "$P/big"); d2=$(downloaded "$m")
[ "$got" = "$want" ] || fail "read from the cache differs"
[ "$d2" -le 16384 ] || fail "a read through a warm cache downloaded $d2 bytes"
ok "cold read downloaded $d1 bytes; after a remount the cache served it ($d2 bytes downloaded)"

# 5. ciphertext only
grep -rqa "MARKER-RCACHE" "$CACHE" && fail "plaintext in the read cache"
grep -rqa "patient-r" "$CACHE" && fail "a patient id in the read cache"
ok "the read cache holds ciphertext only"

# 2. another writer: the old entries are not served
phi_umount
phi_mount --store-opts "$OTHER"
python3 - "$P/big" <<'PY'
import os, sys
fd = os.open(sys.argv[1], os.O_WRONLY)
os.pwrite(fd, b"NEW-VERSION " * 100000, 5 << 20)
os.close(fd)
PY
want2=$(sha256sum < "$P/big")
[ "$want2" != "$want" ] || fail "the rewrite changed nothing"
cold "$OPTS"
m=$(mark); got=$(sha256sum < "$P/big"); d3=$(downloaded "$m")
[ "$got" = "$want2" ] || fail "a changed blob was served from the cache"
[ "$d3" -ge $((13 << 20)) ] || fail "the new version downloaded only $d3 bytes"
ok "a blob changed by another mount is downloaded again (new ETag)"

# 3. a damaged entry
phi_umount
for f in $(find "$CACHE" -path '*/blocks/*' -type f); do
	printf '\xff' | dd of="$f" bs=1 seek=100 conv=notrunc status=none
done
: >"$T/phifs.log"
phi_mount --store-opts "$OPTS"
m=$(mark); got=$(sha256sum < "$P/big"); d4=$(downloaded "$m")
[ "$got" = "$want2" ] || fail "a damaged cache entry changed what was read"
[ "$d4" -ge $((13 << 20)) ] || fail "damaged entries were not refetched ($d4 bytes)"
grep -q "read cache entry .* is damaged" "$T/phifs.log" || fail "damage not logged"
cold "$OPTS"
m=$(mark); got=$(sha256sum < "$P/big"); d5=$(downloaded "$m")
[ "$got" = "$want2" ] && [ "$d5" -le 16384 ] || fail "the refetched entries were not cached ($d5)"
ok "damaged entries are detected, removed and refetched"

# 4. the size limit: files up to half of it are cached, larger ones are not (scan
#    resistance)
phi_umount
rm -rf "$CACHE"
LIM=20000000
phi_mount --store-opts "$OPTS,rcache_max=$LIM"
for i in 1 2 3; do head -c $((9 << 20)) "$P/big" > "$P/copy$i"; done
for i in 1 2 3; do cold "$OPTS,rcache_max=$LIM"; cat "$P/copy$i" >/dev/null; done
total=$(find "$CACHE" -path '*/blocks/*' -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
[ "$total" -le "$LIM" ] || fail "the read cache holds $total bytes, over its $LIM limit"
[ "$total" -gt $((9 << 20)) ] || fail "the read cache holds only $total bytes"
cold "$OPTS,rcache_max=$LIM"
m=$(mark); cat "$P/copy3" >/dev/null; d6=$(downloaded "$m")
[ "$d6" -le 16384 ] || fail "the most recent file was evicted ($d6 bytes downloaded)"
rm -rf "$CACHE"
cold "$OPTS,rcache_max=$((16 << 20))"
cat "$P/big" >/dev/null
[ "$(entries)" = 0 ] || fail "a file larger than half the cache was cached"
ok "the read cache stays under rcache_max ($total bytes), keeps the most recent, skips large files"
echo PASS
