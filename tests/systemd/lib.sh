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

# temp_root NAME: a temporary root R for a test (mode 711: the users the test switches to must
# reach the store and mounts below it), P the install prefix inside it, BIN its bindir. At exit
# the processes in PIDS are killed, the mountpoints in MOUNTS unmounted and R removed (unless KEEP).
temp_root() {
	R=$(mktemp -d "/tmp/phi-test-$1.XXXXXX")
	chmod 711 "$R"
	P=$R$PREFIX BIN=$R$PREFIX/bin
	PIDS=() MOUNTS=()
	trap cleanup_root EXIT
}
cleanup_root() {
	local m p
	for m in "${MOUNTS[@]}"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	[ -n "${KEEP:-}" ] || rm -rf "$R"
}
waitfor() { # DESCRIPTION COMMAND...: retry (bounded, not a timing check) until it succeeds
	local what=$1 i; shift
	for i in $(seq 300); do "$@" >/dev/null 2>&1 && return 0; sleep 0.1; done
	fail "gave up waiting: $what"
}
