#!/usr/bin/env bash
# test-linger: a closed file's store object stays open for -o linger_ms (fs.c, "lingering
# store objects"): reading opens within that time take it over instead of opening it again,
# the timer closes it, and a change through another mount of the same store, a write open,
# a truncate and a shredded key are never served from what lingered.
. "$(dirname "$0")/lib.sh"
HERE=$(dirname "$0")
K() { "$PHIFS_KEY" --store "$STORE" --key-file "$KEY" "$@"; }
M2=$T/mnt2 M2_PID=
mkdir -p "$M2"
cleanup2() {
	mountpoint -q "$M2" && { fusermount3 -u "$M2" 2>/dev/null || umount -l "$M2"; }
	phi_cleanup
}
trap cleanup2 EXIT
phi_setup patient-linger-1
phi_mount -o linger_ms=1000
F=$MNT/patient-linger-1/f
printf 'first-version' >"$F"
OBJ=$(find "$STORE/data" -type f ! -name .d ! -name '*.n' | head -1)
[ -n "$OBJ" ] || fail "no store object for f"
sleep 0.2 # a stat less than 50 ms old vouches for nothing (pages_valid): let it age
phi_remount -o linger_ms=1000 # no attachment left from the write

# 5 reads in a row open the store object once; the timer closes it within a second
out=$(python3 "$HERE/linger_watch.py" "$OBJ" 10 -- sh -c "for i in 1 2 3 4 5; do cat '$F' >/dev/null; done")
echo "linger_ms=1000: $out"
opens=${out#opens=}; opens=${opens%% *}
[ "$opens" -ge 1 ] && [ "$opens" -lt 5 ] || fail "5 reads opened the store object $opens times"
case $out in *closed_after=yes*) ;; *) fail "not closed after the linger time: $out" ;; esac
[ "$(cat "$F")" = first-version ] || fail "content"
ok "5 reads: the store object opened $opens time(s), closed by the timer"

# with linger_ms=0 every read opens it (the check above can fail)
phi_remount -o linger_ms=0
out=$(python3 "$HERE/linger_watch.py" "$OBJ" 10 -- sh -c "for i in 1 2 3 4 5; do cat '$F' >/dev/null; done")
echo "linger_ms=0: $out"
case $out in opens=5\ *) ;; *) fail "linger_ms=0: $out" ;; esac
ok "linger_ms=0: every read opens the store object"

# another mount of the same store changes the file while it lingers here: read anew
phi_remount -o linger_ms=1000
"$PHIFS" --key-file "$KEY" -o linger_ms=0 -f "$STORE" "$M2" 2>>"$T/phifs2.log" &
M2_PID=$!
for _ in $(seq 100); do mountpoint -q "$M2" && break; sleep 0.05; done
mountpoint -q "$M2" || fail "second mount"
for v in second-version-longer third-version-longe; do
	[ "$(cat "$F")" != "$v" ] || fail "precondition"
	sleep 0.1 # the next read must find the object as it was recorded (not racy)
	cat "$F" >/dev/null # lingers
	printf '%s' "$v" >"$M2/patient-linger-1/f"
	got=$(cat "$F")
	[ "$got" = "$v" ] || fail "after a change through another mount: read '$got', want '$v'"
done
ok "changes through another mount (new size, then same size) are read at the next open"

# a write open and a truncate while the file lingers
cat "$F" >/dev/null
printf '+appended' >>"$F"
[ "$(cat "$F")" = "third-version-longe+appended" ] || fail "append while lingering: $(cat "$F")"
cat "$F" >/dev/null
truncate -s 5 "$F"
[ "$(cat "$F")" = "third" ] || fail "truncate while lingering: $(cat "$F")"
[ "$(cat "$M2/patient-linger-1/f")" = "third" ] || fail "the other mount sees $(cat "$M2/patient-linger-1/f")"
ok "append and truncate of a lingering file"
fusermount3 -u "$M2"; wait "$M2_PID" || true

# a shredded key: no read is served, and what lingered is closed within the linger time
held() { for l in /proc/"$PHIFS_PID"/fd/*; do [[ $(readlink "$l" 2>/dev/null) == "$OBJ"* ]] && return 0; done; return 1; }
cat "$F" >/dev/null
held || fail "the store object is not open right after a read"
K shred patient-linger-1 --yes >/dev/null
sleep 1.2 # a running mount rechecks key files once a second
expect_errno EKEYREVOKED "open('$F').read()" || fail "read after shred"
for _ in $(seq 100); do held || break; sleep 0.1; done
held && fail "the store object is still open 10 s after the shred"
ok "shred: the read fails, and what lingered is closed"
