# lib.sh: shared by the tests/systemd scripts. Needs $BUILD_ROOT (the meson build dir).
# install_tree DIR: meson install of this build into DIR (a DESTDIR) with the build's prefix.
set -euo pipefail
fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }
PREFIX=$(meson introspect "$BUILD_ROOT" --buildoptions |
	python3 -c 'import json,sys; print([o["value"] for o in json.load(sys.stdin) if o["name"] == "prefix"][0])')
install_tree() {
	meson install -C "$BUILD_ROOT" --destdir "$1" --no-rebuild --quiet >/dev/null ||
		fail "meson install --destdir $1"
}
# units_for_verify DESTDIR OUT: the installed units with PREFIX/bin/ pointing into DESTDIR
# (systemd-analyze verify checks ExecStart= on the host's paths)
units_for_verify() {
	mkdir -p "$2"
	local f
	for f in "$1$PREFIX"/lib/systemd/system/*; do
		sed "s|$PREFIX/bin/|$1$PREFIX/bin/|g" "$f" >"$2/$(basename "$f")"
	done
}
