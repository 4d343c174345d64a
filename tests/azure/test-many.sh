#!/usr/bin/env bash
# test-many (run by azurite.sh): 10,000 small files (100 directories of 100, 200 bytes to
# 4 KiB each, content derived from the name) written through a phifs mount on Azurite with
# plain write() and close(), no fsync, the file system unmounted at once after the last
# close, then mounted again: every file is there with exactly its content (a list of
# checksums compared), none empty, nothing else in the directories; and the container
# holds no plaintext. (The issue: rclone crypt with --vfs-cache-mode writes left 17 % of
# them empty in a similar test.) PHI_AZ_MANY_DIRS / PHI_AZ_MANY_FILES shrink it by hand.
: "${AZ_URL:?run through azurite.sh}" "${AZ_TOOL:?}"
here=$(cd "$(dirname "$0")" && pwd)
fsdir=$(cd "$here/../fs" && pwd)
. "$fsdir/lib.sh"
dirs=${PHI_AZ_MANY_DIRS:-100} files=${PHI_AZ_MANY_FILES:-100}
n=$((dirs * files))

LOCAL=$STORE
phi_setup patient-MANYMARK-5309
"$AZ_TOOL" copy "$LOCAL" - "$AZ_URL" "$AZ_OPTS" || fail "copying the new store into Azurite"
rm -rf "$LOCAL"
STORE=$AZ_URL
phi_mount --store-opts "$AZ_OPTS"
P=$MNT/patient-MANYMARK-5309

start=$SECONDS
python3 "$here/manyfiles.py" write "$P" "$dirs" "$files" >"$T/sums.ref" || fail "writing $n files"
# at once: no sync, no wait for the kernel's asynchronous releases
fusermount3 -u "$MNT" || fail "unmount right after the writes"
wrote=$((SECONDS - start))
# phifs commits what the releases left before it exits; that it does so is the point
timeout 600 tail --pid="$PHIFS_PID" -f /dev/null || fail "phifs did not exit after the unmount"
wait "$PHIFS_PID" || fail "phifs exited with an error after the unmount: $(tail -5 "$T/phifs.log")"
PHIFS_PID=
[ "$(wc -l <"$T/sums.ref")" = "$n" ] || fail "the writer listed $(wc -l <"$T/sums.ref") files"
ok "$n files written and closed in ${wrote} s, unmounted at once"

phi_mount --store-opts "$AZ_OPTS"
python3 "$here/manyfiles.py" sums "$P" "$dirs" "$files" >"$T/sums.got" 2>"$T/sums.err" ||
	fail "after the remount: $(head -5 "$T/sums.err")"
if ! cmp -s "$T/sums.ref" "$T/sums.got"; then
	missing=$(comm -23 "$T/sums.ref" "$T/sums.got" | wc -l)
	fail "after the remount, $missing of $n files are missing or differ ($(tail -1 "$T/sums.err")); first: $(comm -23 "$T/sums.ref" "$T/sums.got" | head -3)"
fi
ok "after the remount: all $n files present and intact ($(tail -1 "$T/sums.err"))"
phi_umount

mkdir "$T/dump"
"$AZ_TOOL" dump "$AZ_URL" "$AZ_OPTS" "$T/dump" || fail "download"
blobs=$(find "$T/dump" -type f | wc -l)
[ "$blobs" -gt "$n" ] || fail "the container holds $blobs blobs, fewer than the $n files"
python3 "$fsdir/scan_plaintext.py" "$T/dump" MANYMARK || fail "plaintext in the container"
! grep -qi 'MANYMARK' "$T/phifs.log" || fail "a name or content in phifs's log"
ok "$blobs blobs in the container, no plaintext; no names in phifs's log"
