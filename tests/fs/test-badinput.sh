#!/usr/bin/env bash
# test-badinput: a wrong master key, a missing, world-readable or symlinked key file and a
# corrupted store header each give a clear error, and nothing on the store changes.
. "$(dirname "$0")/lib.sh"
phi_setup patient-alice
phi_mount; echo data > "$MNT/patient-alice/f"; phi_umount
snap() { (cd "$STORE" && find . -type f ! -name .lock -print0 | sort -z | xargs -0 sha256sum); }
before=$(snap)

expect_fail() { # expect_fail REGEX ARGS...: phifs must exit non-zero, print REGEX, not mount
	local want=$1; shift
	local out rc=0
	out=$(timeout 20 "$PHIFS" "$@" -f "$STORE" "$MNT" 2>&1) || rc=$?
	[ $rc -ne 0 ] || fail "phifs $* succeeded"
	mountpoint -q "$MNT" && fail "mounted anyway"
	echo "$out" | grep -Eq "$want" || fail "phifs $*: message '$out' lacks /$want/"
	if grep -aq "$(head -c 64 "$KEY")" <<<"$out"; then fail "key material in the message"; fi
	ok "$want"
}

head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' > "$T/wrong.key"; chmod 600 "$T/wrong.key"
expect_fail "does not open this store" --key-file "$T/wrong.key"
expect_fail "not found" --key-file "$T/missing.key"
cp "$KEY" "$T/open.key"; chmod 644 "$T/open.key"
expect_fail "mode 0600" --key-file "$T/open.key"
ln -s "$KEY" "$T/link.key"
expect_fail "symlink|not found|mode" --key-file "$T/link.key"
echo "not a key" > "$T/junk.key"; chmod 600 "$T/junk.key"
expect_fail "64 hex" --key-file "$T/junk.key"
(unset CREDENTIALS_DIRECTORY; expect_fail "CREDENTIALS_DIRECTORY")
[ "$(snap)" = "$before" ] || fail "store modified by failed mounts"

cp "$STORE/phifs.hdr" "$T/hdr.bak"
python3 "$(dirname "$0")/../flip-bit.py" "$STORE/phifs.hdr" 30
before=$(snap)
expect_fail "does not open|corrupt" --key-file "$KEY"
printf 'JUNK' | dd of="$STORE/phifs.hdr" bs=1 seek=0 conv=notrunc status=none
before=$(snap)
expect_fail "corrupt" --key-file "$KEY"
[ "$(snap)" = "$before" ] || fail "store modified"
cp "$T/hdr.bak" "$STORE/phifs.hdr"

# credentials from the systemd credential directory
mkdir -p "$T/creds"; cp "$KEY" "$T/creds/phifs-master-key"; chmod 600 "$T/creds/phifs-master-key"
CREDENTIALS_DIRECTORY=$T/creds "$PHIFS" -f "$STORE" "$MNT" 2>>"$T/phifs.log" &
PHIFS_PID=$!
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.05; done
[ "$(cat "$MNT/patient-alice/f")" = data ] || fail "mount with a systemd credential"
phi_umount
ok "systemd credential"

# the mount helper form: mount -t fuse.phifs STORE MNT -o key_file=FILE
# mount(8) runs helpers with a fixed PATH (/usr/local/bin, /usr/bin, ...), where an
# installed phifs lives; the test links the built one there for the duration.
linked=
if [ ! -e /usr/local/bin/phifs ]; then
	ln -s "$(readlink -f "$PHIFS")" /usr/local/bin/phifs && linked=1
fi
trap '[ -n "$linked" ] && rm -f /usr/local/bin/phifs; phi_cleanup' EXIT
mount -t fuse.phifs "$STORE" "$MNT" -o "key_file=$KEY" || fail "mount -t fuse.phifs"
[ "$(cat "$MNT/patient-alice/f")" = data ] || fail "mount helper read"
umount "$MNT"
ok "mount -t fuse.phifs -o key_file="

# tampered content reads EIO and is logged with file id and block, no names
phi_mount
f=$(find "$STORE/data" -type f ! -name .d | head -1)
python3 "$(dirname "$0")/../flip-bit.py" "$f" 40
phi_umount; phi_mount
if cat "$MNT/patient-alice/f" 2>/dev/null; then fail "tampered read succeeded"; fi
grep -q "integrity failure: file [0-9a-f]\{32\} block 0" "$T/phifs.log" || fail "integrity log line"
grep -q patient-alice "$T/phifs.log" && fail "patient id in the log"
ok "tampered block: EIO and a log line with file id and block number"
