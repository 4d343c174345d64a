#!/usr/bin/env bash
# test-phifs-key: the phifs-key CLI end to end, without a mount.
# Usage: test-phifs-key.sh PHIFS_KEY TEST_KEYS_HELPER
set -euo pipefail
PK=$1 HELPER=$2
T=$(mktemp -d /tmp/test-phifs-key.XXXXXX)
trap 'rm -rf "$T"' EXIT
STORE=$T/store KEY=$T/master.key
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
K() { "$PK" --store "$STORE" --key-file "$KEY" "$@"; }
# expect RC REGEX CMD...: exit status and a stderr line matching REGEX, no key material
expect() {
	local rc=$1 re=$2; shift 2
	local got=0
	"$@" >"$T/out" 2>"$T/err" || got=$?
	[ "$got" = "$rc" ] || fail "$* exited $got, want $rc: $(cat "$T/err")"
	grep -Eq -e "$re" "$T/err" || fail "$*: stderr '$(cat "$T/err")' lacks /$re/"
	[ "$(wc -l <"$T/err")" -le 1 ] || fail "$*: more than one error line: $(cat "$T/err")"
	if [ -s "$KEY" ] && grep -qF "$(head -c 64 "$KEY")" "$T/err" "$T/out"; then fail "key in output"; fi
	if grep -q alice-wonderland "$T/err"; then fail "patient id in an error"; fi
}
snap() { (cd "$STORE" && find . -type f -print0 | sort -z | xargs -0 sha256sum; find . | sort); }
versions() { # key version (content header bytes 8..11) of every content file
	find "$STORE/data" -type f ! -name '.*' ! -name '*.n' -print0 | xargs -0 -n1 \
		sh -c 'od -An -tu1 -j8 -N4 "$1" | awk "{print \$4}"' _ | sort | uniq -c | awk '{print $2":"$1}' | tr '\n' ' '
}

# ---- usage ----
expect 2 usage "$PK"
expect 2 "unknown command" "$PK" --store "$STORE" frobnicate
expect 2 usage "$PK" --store "$STORE" add
ok "usage errors exit 2"

# ---- init ----
K init >/dev/null
[ "$(stat -c %a "$KEY")" = 600 ] || fail "key file mode"
grep -Eqx '[0-9a-f]{64}' "$KEY" || fail "key file format"
[ -f "$STORE/phifs.hdr" ] && [ -d "$STORE/keys" ] && [ -d "$STORE/data" ] || fail "store layout"
[ "$(head -c 4 "$STORE/phifs.hdr")" = PHFS ] || fail "header magic"
[ "$(stat -c %s "$STORE/phifs.hdr")" = 84 ] || fail "header size"
expect 1 "already exists" K init
expect 1 "already a phifs store" "$PK" --store "$STORE" --key-file "$T/other.key" init
[ ! -e "$T/other.key" ] || fail "init on an existing store left a key file"
ok "init: 0600 hex key file, header, keys/ and data/; refuses to overwrite"

# ---- add, list ----
K add alice-wonderland >/dev/null
K add bob-the-builder >/dev/null
expect 1 "patient already exists" K add alice-wonderland
expect 1 "invalid patient id" K add ../x
K list >"$T/list"
[ "$(wc -l <"$T/list")" = 2 ] || fail "list lines"
grep -Pqx 'alice-wonderland\t[A-Za-z0-9_-]{22}\t1\t1\tactive' "$T/list" || fail "list format: $(cat "$T/list")"
[ "$(cut -f1 "$T/list" | tr '\n' ' ')" = "alice-wonderland bob-the-builder " ] || fail "list order"
ALICE_TAG=$(grep -P '^alice-wonderland\t' "$T/list" | cut -f2)
BOB_TAG=$(grep -P '^bob-the-builder\t' "$T/list" | cut -f2)
[ -f "$STORE/keys/$ALICE_TAG" ] && [ -f "$STORE/data/$ALICE_TAG/.d" ] || fail "patient layout"
ok "add and list"

# ---- content files (written by the helper), rotate ----
"$HELPER" populate "$STORE" "$KEY" alice-wonderland file-one dir-two/file-two file-one=hardlink-one
"$HELPER" populate "$STORE" "$KEY" bob-the-builder bob-file-one
[ "$(K rotate alice-wonderland)" = 2 ] || fail "rotate prints the new version"
"$HELPER" populate "$STORE" "$KEY" alice-wonderland file-three
grep -Pq '^alice-wonderland\t\S+\t2\t1,2\tactive' <(K list) || fail "list after rotate"
[ "$(versions)" = "1:4 2:1 " ] || fail "versions after rotate: $(versions)"
"$HELPER" verify "$STORE" "$KEY" alice-wonderland file-one dir-two/file-two file-one=hardlink-one file-three
K check >"$T/check"
grep -qx "5 files ok, 0 damaged" "$T/check" || fail "check: $(cat "$T/check")"
ok "rotate: new files use v2, v1 files stay readable, check passes"

# ---- rewrap ----
exec 9<>"$STORE/.lock" # what a mount does: a shared flock on STORE/.lock
flock -s 9
expect 1 "store is mounted" K rewrap alice-wonderland
expect 1 "store is mounted" K rekey-master --new-key-file "$T/n.key"
[ ! -e "$T/n.key" ] || fail "rekey-master created a key while locked"
exec 9>&-
ok "rewrap and rekey-master refuse while the store is mounted (shared lock held)"
K rewrap alice-wonderland >/dev/null
[ "$(versions)" = "1:1 2:4 " ] || fail "versions after rewrap: $(versions)"
grep -Pq '^alice-wonderland\t\S+\t2\t2\tactive' <(K list) || fail "list after rewrap: $(K list)"
"$HELPER" verify "$STORE" "$KEY" alice-wonderland file-one dir-two/file-two file-one=hardlink-one file-three
"$HELPER" verify "$STORE" "$KEY" bob-the-builder bob-file-one
[ "$(find "$STORE/data/$ALICE_TAG" -type f -links 2 | wc -l)" = 2 ] || fail "hard link split by rewrap"
[ -z "$(find "$STORE" -name '.rewrap.tmp')" ] || fail "rewrap temp left"
K rewrap alice-wonderland >/dev/null
[ "$(versions)" = "1:1 2:4 " ] || fail "second rewrap changed something"
ok "rewrap: every alice-wonderland file on v2 (hard links kept), contents intact, bob-the-builder untouched"

# ---- a crash during the in-place copy of a hard-linked file: the next rewrap finishes it ----
[ "$(K rotate alice-wonderland)" = 3 ] || fail "second rotate"
f=$(find "$STORE/data/$ALICE_TAG" -maxdepth 1 -type f -links 2 | head -1)
cp "$f" "$(dirname "$f")/.rewrap.$(basename "$f")" # the complete new ciphertext, kept until done
printf 'torn' | dd of="$f" bs=1 seek=9000 conv=notrunc status=none
if K check alice-wonderland >/dev/null 2>&1; then fail "torn file not reported"; fi
K rewrap alice-wonderland >/dev/null
[ "$(versions)" = "1:1 3:4 " ] || fail "versions after resumed rewrap: $(versions)"
"$HELPER" verify "$STORE" "$KEY" alice-wonderland file-one dir-two/file-two file-one=hardlink-one file-three
[ -z "$(find "$STORE" -name '.rewrap.*')" ] || fail "pending rewrap copy left"
[ "$(find "$STORE/data/$ALICE_TAG" -type f -links 2 | wc -l)" = 2 ] || fail "hard link split"
grep -Pq '^alice-wonderland\t\S+\t3\t3\tactive' <(K list) || fail "list after resumed rewrap"
ok "rewrap finishes an interrupted in-place copy of a hard-linked file"

# ---- no plaintext, no patient ids on the store ----
if grep -rqa MARKER "$STORE"; then fail "plaintext content on the store"; fi
if grep -rqaE 'alice-wonderland|bob-the-builder' "$STORE"; then fail "patient id in store contents"; fi
if find "$STORE" | grep -qE 'alice-wonderland|bob-the-builder|file-one|file-two|dir-two|file-three|hardlink-one'; then fail "plaintext name on the store"; fi
ok "the store holds no plaintext and no patient id"

# ---- damage is reported without PHI ----
f=$(find "$STORE/data/$ALICE_TAG" -maxdepth 1 -type f ! -name '.*' -links 1 | head -1)
cp "$f" "$T/orig"
python3 "$(dirname "$0")/../flip-bit.py" "$f" 5000
rc=0; K check >"$T/check" 2>"$T/checkerr" || rc=$?
[ $rc = 1 ] || fail "check exit status on damage: $rc"
grep -Pq "^data/$ALICE_TAG/\S+\tdamaged\tfile [0-9a-f]{32}\tblock 1$" "$T/check" || fail "damage line: $(cat "$T/check")"
grep -qx "4 files ok, 1 damaged" "$T/check" || fail "damage summary: $(cat "$T/check")"
if grep -qE 'alice-wonderland|bob-the-builder|MARKER' "$T/check" "$T/checkerr"; then fail "PHI in check output"; fi
rc=0; K check bob-the-builder >"$T/check" || rc=$?
[ $rc = 0 ] && grep -qx "1 files ok, 0 damaged" "$T/check" || fail "check bob-the-builder: $(cat "$T/check")"
cp "$T/orig" "$f"
ok "check reports the damaged file and block without PHI, exit 1"

# ---- a corrupt key file is reported per patient ----
cp "$STORE/keys/$BOB_TAG" "$T/bobkeys"
python3 "$(dirname "$0")/../flip-bit.py" "$STORE/keys/$BOB_TAG" 40
rc=0; K list >"$T/list" 2>"$T/err" || rc=$?
[ $rc = 1 ] || fail "list with a corrupt key file exited $rc"
grep -Pqx "\-\t$BOB_TAG\t-\t-\tcorrupt" "$T/list" || fail "corrupt line: $(cat "$T/list")"
grep -Pq '^alice-wonderland\t' "$T/list" || fail "list stops at a corrupt key file"
grep -q "corrupt" "$T/err" || fail "list error line"
rc=0; K check >"$T/check" 2>/dev/null || rc=$?
[ $rc = 1 ] || fail "check with a corrupt key file exited $rc"
grep -Pqx "keys/$BOB_TAG\tdamaged\tkey file" "$T/check" || fail "check: $(cat "$T/check")"
grep -qx "4 files ok, 1 damaged" "$T/check" || fail "check summary: $(cat "$T/check")"
expect 1 "key file on the store is corrupt" K rotate bob-the-builder
cp "$T/bobkeys" "$STORE/keys/$BOB_TAG"
ok "a corrupt key file: list and check report it and go on"

# ---- bad input: nothing changes ----
before=$(snap)
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$T/wrong.key"; chmod 600 "$T/wrong.key"
W() { "$PK" --store "$STORE" --key-file "$T/wrong.key" "$@"; }
for cmd in list "add carol-singer" "rotate alice-wonderland" "shred alice-wonderland --yes" "rewrap alice-wonderland" check \
	"rekey-master --new-key-file $T/n2.key"; do
	# shellcheck disable=SC2086
	expect 1 "master key does not open this store \(wrong key\?\)" W $cmd
done
[ ! -e "$T/n2.key" ] || fail "rekey-master with a wrong key created a key file"
cp "$KEY" "$T/open.key"; chmod 644 "$T/open.key"
expect 1 "key file .* must be mode 0600 and owned by uid $(id -u)" "$PK" --store "$STORE" --key-file "$T/open.key" list
ln -s "$KEY" "$T/link.key"
expect 1 "must not be a symlink" "$PK" --store "$STORE" --key-file "$T/link.key" list
expect 1 "not found" "$PK" --store "$STORE" --key-file "$T/missing.key" list
echo "not a key" >"$T/junk.key"; chmod 600 "$T/junk.key"
expect 1 "64 hex digits" "$PK" --store "$STORE" --key-file "$T/junk.key" list
(unset CREDENTIALS_DIRECTORY; expect 1 "CREDENTIALS_DIRECTORY" "$PK" --store "$STORE" list)
cp "$STORE/phifs.hdr" "$T/hdr.bak"
python3 "$(dirname "$0")/../flip-bit.py" "$STORE/phifs.hdr" 0
hdr_before=$(snap)
expect 1 "store header is corrupt" K list
expect 1 "store header is corrupt" K add carol-singer
[ "$(snap)" = "$hdr_before" ] || fail "store modified with a corrupt header"
cp "$T/hdr.bak" "$STORE/phifs.hdr"
[ "$(snap)" = "$before" ] || fail "store modified by failed commands"
ok "wrong key, bad key files and a corrupt header: one clear error line, store unchanged"

# ---- systemd credential ----
mkdir "$T/creds"; cp "$KEY" "$T/creds/phifs-master-key"; chmod 600 "$T/creds/phifs-master-key"
CREDENTIALS_DIRECTORY=$T/creds "$PK" --store "$STORE" list | grep -Pq '^alice-wonderland\t' || fail "credential"
ok "master key from \$CREDENTIALS_DIRECTORY"

# ---- rekey-master ----
expect 1 "holds the current master key" K rekey-master --new-key-file "$KEY"
data_before=$(cd "$STORE/data" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
K rekey-master --new-key-file "$T/new.key" >"$T/out"
grep -q "switch" "$T/out" || fail "rekey-master tells the operator to switch"
[ "$(stat -c %a "$T/new.key")" = 600 ] || fail "new key mode"
data_after=$(cd "$STORE/data" && find . -type f -print0 | sort -z | xargs -0 sha256sum)
[ "$data_before" = "$data_after" ] || fail "rekey-master touched file data"
expect 1 "does not open this store" K list
"$PK" --store "$STORE" --key-file "$T/new.key" list | grep -Pq '^alice-wonderland\t\S+\t3\t3\tactive' || fail "new key"
"$HELPER" verify "$STORE" "$T/new.key" alice-wonderland file-one dir-two/file-two file-one=hardlink-one file-three
[ -z "$(find "$STORE" -name '*.rekey')" ] || fail "rekey temp files left"
cp "$T/new.key" "$KEY"
ok "rekey-master: data untouched, old master rejected, new master reads everything"

# ---- shred ----
expect 2 "--yes" K shred bob-the-builder
K shred bob-the-builder --yes >/dev/null
[ "$(stat -c %s "$STORE/keys/$BOB_TAG")" = 30 ] || fail "tombstone size"
[ "$(head -c 4 "$STORE/keys/$BOB_TAG")" = PHFK ] || fail "tombstone magic"
K list >"$T/list"
grep -Pqx "\-\t$BOB_TAG\t-\t-\tshredded" "$T/list" || fail "list after shred: $(cat "$T/list")"
expect 1 "patient was shredded" K rotate bob-the-builder
expect 1 "patient already exists" K add bob-the-builder
K check >"$T/check" || fail "check after shred"
grep -Pq "^data/$BOB_TAG/\S+\tshredded$" "$T/check" || fail "check does not report shredded: $(cat "$T/check")"
grep -qx "4 files ok, 0 damaged, 1 shredded" "$T/check" || fail "summary after shred: $(cat "$T/check")"
if "$HELPER" verify "$STORE" "$KEY" bob-the-builder bob-file-one 2>/dev/null; then fail "shredded data readable"; fi
"$HELPER" verify "$STORE" "$KEY" alice-wonderland file-one dir-two/file-two file-one=hardlink-one file-three
ok "shred: tombstone, reported by list and check, alice-wonderland unaffected"

if grep -rqaE 'alice-wonderland|bob-the-builder|carol-singer' "$STORE"; then fail "patient id on the store"; fi
if find "$STORE" | grep -qE 'alice-wonderland|bob-the-builder|carol-singer'; then fail "patient id in a store name"; fi
ok "no patient id anywhere on the store"

# ---- concurrent key commands serialise (no lost update) ----
for _ in $(seq 8); do K rotate alice-wonderland >/dev/null & done
wait
grep -Pq '^alice-wonderland\t\S+\t11\t3,4,5,6,7,8,9,10,11\tactive' <(K list) || fail "parallel rotates: $(K list)"
ok "eight parallel rotates: eight new versions, none lost"
