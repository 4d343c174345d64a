#!/usr/bin/env bash
# test-keys-live: rotate, rewrap, shred and rekey-master through real mounts.
. "$(dirname "$0")/lib.sh"
K() { "$PHIFS_KEY" --store "$STORE" --key-file "$KEY" "$@"; }
# key versions of every content file on the store (header bytes 8..11)
versions() {
	find "$STORE/data" -type f ! -name .d ! -name '*.n' -print0 | xargs -0 -n1 \
		sh -c 'od -An -tu1 -j8 -N4 "$1" | awk "{print \$4}"' _ | sort | uniq -c | awk '{print $2":"$1}' | tr '\n' ' '
}
phi_setup patient-alice-7 patient-bob-9
phi_mount
for i in 1 2 3; do echo "MARKER-OLD-$i" > "$MNT/patient-alice-7/old$i"; done
echo "patient-bob-9's MARKER-BOB" > "$MNT/patient-bob-9/b"
[ "$(versions)" = "1:4 " ] || fail "initial versions: $(versions)"

K rotate patient-alice-7 >/dev/null
sleep 1.2 # a running mount rechecks key files once a second
echo "MARKER-NEW" > "$MNT/patient-alice-7/new"
[ "$(versions)" = "1:4 2:1 " ] || fail "after rotate, new writes use v2: $(versions)"
[ "$(cat "$MNT/patient-alice-7/old1")" = MARKER-OLD-1 ] || fail "old version readable after rotate"
ok "rotate: new writes use the new version, old ones stay readable (live mount)"

phi_umount
K rewrap patient-alice-7 >/dev/null
[ "$(versions)" = "1:1 2:4 " ] || fail "after rewrap: $(versions)"
K list | grep -P '^patient-alice-7\t' >/dev/null || fail "list"
phi_mount
for i in 1 2 3; do [ "$(cat "$MNT/patient-alice-7/old$i")" = "MARKER-OLD-$i" ] || fail "read after rewrap"; done
phi_umount
python3 "$(dirname "$0")/scan_plaintext.py" "$STORE" MARKER patient-alice-7 patient-bob-9 || fail "plaintext after rotate/rewrap"
ok "rewrap: every patient-alice-7 file on v2, patient-bob-9 untouched, contents intact, no plaintext"

# rewrap needs the store unmounted: a mount holds the lock
phi_mount
if K rewrap patient-alice-7 2>"$T/err"; then fail "rewrap while mounted"; fi
grep -qi "mount" "$T/err" || fail "rewrap-while-mounted message: $(cat "$T/err")"
phi_umount
ok "rewrap refuses while mounted"

# rekey-master: the old key stops working, the new one works, data untouched
data_before=$(cd "$STORE/data" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
K rekey-master --new-key-file "$T/new.key" >/dev/null
data_after=$(cd "$STORE/data" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
[ "$data_before" = "$data_after" ] || fail "rekey-master touched file data"
if timeout 20 "$PHIFS" --key-file "$KEY" -f "$STORE" "$MNT" 2>/dev/null; then fail "old master still mounts"; fi
cp "$T/new.key" "$KEY"
phi_mount
[ "$(cat "$MNT/patient-alice-7/new")" = MARKER-NEW ] || fail "read with the new master"
ok "rekey-master: file data untouched, old master rejected, new master reads"

# shred: patient-alice-7's data becomes unreadable and is reported as such, live
K shred patient-alice-7 --yes >/dev/null
sleep 1.2
expect_errno EKEYREVOKED "os.stat('$MNT/patient-alice-7')" || fail "shredded patient not reported"
ls "$MNT" | grep -q patient-alice-7 && fail "shredded patient still listed"
[ "$(cat "$MNT/patient-bob-9/b")" = "patient-bob-9's MARKER-BOB" ] || fail "patient-bob-9 unaffected"
phi_umount
if K check >"$T/check" 2>&1; then :; fi
grep -qi shredded "$T/check" || fail "check does not report the shredded patient: $(cat "$T/check")"
ok "shred: EKEYREVOKED in the mount, check reports it, other patients unaffected"
