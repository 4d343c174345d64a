#!/usr/bin/env bash
# test-fstab.sh: fstab support for fuse.phifs.
# 1. systemd-fstab-generator turns the shipped example (docs/examples/fstab: a fuse.phifs
#    line with _netdev) into exactly the units in fstab-generator.golden: a network mount
#    pulled in by remote-fs.target, ordered after the audit writer.
# 2. Without _netdev the same line would be a local mount (local-fs.target.requires).
# 3. The mount helper path works: `mount --fstab FILE MOUNTPOINT` with the same options
#    (mount(8) -> mount.fuse3 -> phifs on mount's PATH) mounts nosuid,nodev, serves and
#    unmounts (in a private mount namespace, so nothing of it is seen outside).
# Needs $PHIFS and $PHIFS_KEY; runs as root (a real mount).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
GEN=/lib/systemd/system-generators/systemd-fstab-generator
[ -x "$GEN" ] || GEN=/usr/lib/systemd/system-generators/systemd-fstab-generator
[ -x "$GEN" ] || fail "no systemd-fstab-generator"
T=$(mktemp -d /tmp/phi-test-fstab.XXXXXX)
cleanup() { rm -rf "$T"; }
trap cleanup EXIT

# manifest DIR: every generated file with its content, every link with its target
manifest() {
	(cd "$1" && find . -mindepth 1 | LC_ALL=C sort | while read -r f; do
		if [ -L "$f" ]; then echo "link $f -> $(readlink "$f")"
		elif [ -f "$f" ]; then echo "file $f"; sed "s|^SourcePath=.*|SourcePath=FSTAB|; s|^|  |" "$f"
		else echo "dir $f"; fi
	done)
}

cp "$here/../../docs/examples/fstab" "$T/fstab"
mkdir "$T/gen"
SYSTEMD_FSTAB=$T/fstab "$GEN" "$T/gen" "$T/gen" "$T/gen" || fail "the generator failed"
manifest "$T/gen" >"$T/got"
diff -u "$here/fstab-generator.golden" "$T/got" || fail "generator output differs from fstab-generator.golden"
ok "fstab generator output for the example matches the golden file"

sed 's/_netdev,//' "$T/fstab" >"$T/fstab.local"
mkdir "$T/gen2"
SYSTEMD_FSTAB=$T/fstab.local "$GEN" "$T/gen2" "$T/gen2" "$T/gen2" || fail "the generator failed"
[ -L "$T/gen2/local-fs.target.requires/srv-phi-static.mount" ] ||
	[ -L "$T/gen2/local-fs.target.wants/srv-phi-static.mount" ] || fail "without _netdev: not a local mount?"
[ ! -e "$T/gen2/remote-fs.target.wants/srv-phi-static.mount" ] || fail "without _netdev: still remote"
ok "without _netdev the same line would be ordered before local-fs.target"

# the helper path, with the example's options and a store of our own
STORE=$T/store KEY=$T/master.key MNT=$T/mnt
mkdir "$MNT"
"$PHIFS_KEY" --store "$STORE" --key-file "$KEY" init >/dev/null
# this test is about the mount helper, not the audit log: key changes go unaudited
"$PHIFS_KEY" --store "$STORE" --key-file "$KEY" --audit-socket none add p-0042 >/dev/null
opts=$(awk '$3 == "fuse.phifs" { print $4 }' "$T/fstab" | sed "s|key_file=[^,]*|key_file=$KEY|")
printf '%s %s fuse.phifs %s 0 0\n' "$STORE" "$MNT" "$opts" >"$T/fstab.test"
# mount(8) gives helpers PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:
# in a private mount namespace, /usr/local/bin is a directory holding only phifs
mkdir "$T/bin"
ln -s "$PHIFS" "$T/bin/phifs"
unshare -m --propagation private bash -euc '
	T=$1 MNT=$2
	fail() { echo "FAIL: $*" >&2; exit 1; }
	mount --bind "$T/bin" /usr/local/bin
	mount --fstab "$T/fstab.test" "$MNT" || fail "mount --fstab"
	[ "$(findmnt -n -o FSTYPE "$MNT")" = fuse.phifs ] || fail "mounted, but not as fuse.phifs"
	o=,$(findmnt -n -o OPTIONS "$MNT"),
	case $o in *,nosuid,*) ;; *) fail "no nosuid: $o" ;; esac
	case $o in *,nodev,*) ;; *) fail "no nodev: $o" ;; esac
	echo fstab >"$MNT/p-0042/n.txt"
	[ "$(cat "$MNT/p-0042/n.txt")" = fstab ] || fail "the fstab mount does not serve"
	umount "$MNT"
	! mountpoint -q "$MNT" || fail "still mounted"
' - "$T" "$MNT" || fail "the fstab line through mount(8) and mount.fuse3"
ok "mount --fstab with '$opts' (key path replaced): fuse.phifs, nosuid,nodev, served, unmounted"
echo "test-fstab: all passed"
