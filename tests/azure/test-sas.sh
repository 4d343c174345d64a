#!/usr/bin/env bash
# test-sas (run by azurite.sh): phifs mounted on Azurite with a SAS token instead of the
# account key. Azurite checks account SAS tokens whatever --loose says (signature, start and
# expiry, services, resource types, permissions: node_modules/azurite/dist/src/blob/
# authentication/AccountSASAuthenticator.js), so the refusals in 2 and 3 are the emulator's.
#  1. a SAS with the permissions docs/azure-store.md lists (r, w, d, l; no c): write, read,
#     rename, remove through the mount, remount;
#  2. a read-only SAS (r, l): reads and listings work, creating, writing and removing fail
#     with EACCES, and the log says once why;
#  3. a SAS with a wrong signature: the mount fails with EACCES and a message;
#  4. an expired SAS: phifs refuses it before any request, with EKEYEXPIRED;
#  5. no SAS, nor its signature, in phifs's log or error output.
: "${AZ_URL:?run through azurite.sh}" "${AZ_TOOL:?}" "${AZ_KEYFILE:?}" "${AZ_ENDPOINT:?}"
fsdir=$(cd "$(dirname "$0")/../fs" && pwd)
. "$fsdir/lib.sh"

# make_sas PERM EXPIRY [wrong]: an account SAS for devstoreaccount1 ("Create an account SAS",
# sv >= 2020-12-06: account, sp, ss, srt, st, se, sip, spr, sv, ses, each followed by \n)
make_sas() {
	python3 - "$AZ_KEYFILE" "$@" <<'PY'
import base64, hashlib, hmac, sys, urllib.parse
keyfile, perm, expiry = sys.argv[1:4]
key = bytearray(base64.b64decode(open(keyfile).read().strip()))
if len(sys.argv) > 4:
    key[0] ^= 1
sv = "2021-12-02"
sts = "\n".join(["devstoreaccount1", perm, "b", "sco", "", expiry, "", "", sv, "", ""])
sig = base64.b64encode(hmac.new(bytes(key), sts.encode(), hashlib.sha256).digest()).decode()
print(f"?sv={sv}&ss=b&srt=sco&sp={perm}&se={expiry}&sig={urllib.parse.quote(sig, safe='')}")
PY
}

LOCAL=$STORE
phi_setup patient-s
"$AZ_TOOL" copy "$LOCAL" - "$AZ_URL" "$AZ_OPTS" || fail "copying the new store into Azurite"
STORE=$AZ_URL
SASF=$T/azure.sas
umask 077
SAS_OPTS="endpoint=$AZ_ENDPOINT,sas_file=$SASF"
SIGS=() # every signature used, for the log check
remember() { SIGS+=("$(sed -n 's/.*&sig=//p' "$SASF")"); }

# 1. a full SAS
make_sas rwdl 2099-01-01T00:00:00Z >"$SASF"
remember
phi_mount --store-opts "$SAS_OPTS"
P=$MNT/patient-s
printf 'written through a SAS\n' >"$P/note"
mkdir "$P/dir"
head -c 3000000 /dev/urandom >"$T/big"
cp "$T/big" "$P/dir/big"
mv "$P/dir/big" "$P/dir/big2" # Copy Blob: the source is read with the SAS too
rm "$P/note"
printf 'kept\n' >"$P/note2"
phi_remount --store-opts "$SAS_OPTS"
[ "$(cat "$P/note2")" = kept ] || fail "content written through a SAS"
cmp -s "$T/big" "$P/dir/big2" || fail "renamed large file through a SAS"
[ ! -e "$P/note" ] || fail "a file removed through a SAS is still there"
[ "$(ls "$P/dir")" = big2 ] || fail "listing through a SAS: $(ls "$P/dir")"
phi_umount
ok "mount with a SAS: write, read, rename, remove, remount"

# 2. a read-only SAS
make_sas rl 2099-01-01T00:00:00Z >"$SASF"
remember
phi_mount --store-opts "$SAS_OPTS"
[ "$(cat "$P/note2")" = kept ] || fail "read through a read-only SAS"
cmp -s "$T/big" "$P/dir/big2" || fail "large read through a read-only SAS"
[ "$(ls "$P" | sort | tr '\n' ' ')" = "dir note2 " ] || fail "listing with a read-only SAS: $(ls "$P")"
expect_errno EACCES "os.open('$P/new', os.O_CREAT | os.O_WRONLY, 0o600)" || fail "create with a read-only SAS"
expect_errno EACCES "os.mkdir('$P/newdir')" || fail "mkdir with a read-only SAS"
expect_errno EACCES "os.unlink('$P/note2')" || fail "unlink with a read-only SAS"
# a write to an existing file is cached and refused when it is committed
expect_errno EACCES "fd = os.open('$P/note2', os.O_WRONLY); os.write(fd, b'x'); os.fsync(fd)" ||
	fail "write with a read-only SAS"
[ "$(cat "$P/note2")" = kept ] || fail "a refused write changed the file"
phi_umount
grep -q "refused the SAS (AuthorizationPermissionMismatch)" "$T/phifs.log" ||
	fail "the log does not say why writes fail: $(cat "$T/phifs.log")"
[ "$(grep -c "refused the SAS" "$T/phifs.log")" = 1 ] || fail "the refusal is logged more than once"
ok "read-only SAS: reads work, create/mkdir/unlink/write fail with EACCES, logged once"

# mount_fails WANT: phifs must exit with an error whose output contains WANT
mount_fails() {
	set +e
	timeout 120 "$PHIFS" --key-file "$KEY" --store-opts "$SAS_OPTS,timeout=5" -f "$STORE" "$MNT" \
		>"$T/mount.err" 2>&1
	local rc=$?
	set -e
	cat "$T/mount.err" >>"$T/phifs.log"
	[ $rc -ne 124 ] || fail "mount hung"
	[ $rc -ne 0 ] || fail "mount succeeded"
	mountpoint -q "$MNT" && fail "mounted"
	grep -q "$1" "$T/mount.err" || fail "mount error: $(cat "$T/mount.err")"
}

# 3. a wrong signature (the token of another key)
make_sas rwdlc 2099-01-01T00:00:00Z wrong >"$SASF"
remember
mount_fails "Permission denied"
grep -q "refused the SAS (AuthorizationFailure)" "$T/mount.err" || fail "no reason: $(cat "$T/mount.err")"
ok "wrong SAS signature: $(tr '\n' ' ' <"$T/mount.err")"

# 4. expired
make_sas rwdlc 2020-01-01T00:00:00Z >"$SASF"
remember
mount_fails "Key has expired"
grep -q "the SAS expired at 2020-01-01T00:00:00Z" "$T/mount.err" || fail "no reason: $(cat "$T/mount.err")"
ok "expired SAS: $(tr '\n' ' ' <"$T/mount.err")"

# 5. no token in the logs
[ ${#SIGS[@]} = 4 ] || fail "signatures collected: ${#SIGS[@]}"
for s in "${SIGS[@]}"; do
	[ ${#s} -gt 20 ] || fail "bad signature extracted: $s"
	! grep -qF "$s" "$T/phifs.log" || fail "a SAS signature reached phifs's log"
	dec=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.unquote(sys.argv[1]))' "$s")
	! grep -qF "$dec" "$T/phifs.log" || fail "a SAS signature reached phifs's log"
done
! grep -q "sig=\|patient-s\|note2" "$T/phifs.log" || fail "a token or a name reached the log"
ok "no SAS token or signature in phifs's log ($(wc -l <"$T/phifs.log") lines)"
