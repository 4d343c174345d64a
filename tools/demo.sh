#!/usr/bin/env bash
# demo.sh: the main job end to end on the embedded default (a local store).
# Builds, creates a store and a master key, registers a patient, mounts phifs, writes and
# reads the patient's documents, and shows that the store holds only ciphertext.
# Run as root (FUSE mount). Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d build ] || meson setup build >/dev/null
meson compile -C build >/dev/null
PHIFS=build/phifs/phifs PHIFS_KEY=build/tools/phifs-key
# the demo runs no audit writer: key changes unaudited 
export PHIFS_AUDIT_SOCKET=${PHIFS_AUDIT_SOCKET:-none}

W=$(mktemp -d /tmp/phi-demo.XXXXXX)
STORE=$W/store KEY=$W/master.key MNT=$W/mnt
cleanup() { mountpoint -q "$MNT" && fusermount3 -u "$MNT"; rm -rf "$W"; }
trap cleanup EXIT
mkdir -p "$MNT"

step() { printf '\n== %s\n' "$*"; }
step "create a store and a master key (mode 0600)"
$PHIFS_KEY --store "$STORE" --key-file "$KEY" init
$PHIFS_KEY --store "$STORE" --key-file "$KEY" add patient-0042
$PHIFS_KEY --store "$STORE" --key-file "$KEY" list

step "mount phifs and write the patient's documents"
$PHIFS --key-file "$KEY" "$STORE" "$MNT"
mkdir -p "$MNT/patient-0042/notes"
printf 'Discharge summary: Jane Example, diabetes type 2, metformin 500mg.\n' \
	>"$MNT/patient-0042/notes/discharge-summary.txt"
printf 'Lab results: HbA1c 7.1%%\n' >"$MNT/patient-0042/labs.txt"
find "$MNT" | sed "s|$MNT|MNT|"
cat "$MNT/patient-0042/notes/discharge-summary.txt"

step "the store holds only ciphertext"
find "$STORE" | sed "s|$STORE|STORE|"
for word in Jane diabetes metformin patient-0042 discharge labs; do
	if grep -rqa "$word" "$STORE"; then echo "FOUND PLAINTEXT: $word"; exit 1; fi
	echo "not on the store: $word"
done

step "remount and read back"
fusermount3 -u "$MNT"
$PHIFS --key-file "$KEY" "$STORE" "$MNT"
cat "$MNT/patient-0042/labs.txt"
fusermount3 -u "$MNT"
$PHIFS_KEY --store "$STORE" --key-file "$KEY" check
echo; echo "demo: ok"
