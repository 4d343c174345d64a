# lib.sh: shared setup for the FUSE integration tests (sourced). Every test gets a fresh
# store, key and mount point under a private temp dir, and everything is unmounted on exit.
# Usage: PHIFS=path PHIFS_KEY=path; source lib.sh; phi_setup; phi_mount ...
set -euo pipefail
: "${PHIFS:?PHIFS must point at the phifs binary}"
: "${PHIFS_KEY:?PHIFS_KEY must point at the phifs-key binary}"
# the sanitizer build reports leaks at exit as failures; FUSE daemons exit via signals
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}

[ "$(id -u)" = 0 ] || { echo "SKIP: needs root for FUSE mounts"; exit 77; }
[ -e /dev/fuse ] || { echo "SKIP: no /dev/fuse"; exit 77; }

T=$(mktemp -d /tmp/phifs-test.XXXXXX)
STORE=$T/store KEY=$T/master.key MNT=$T/mnt
PHIFS_PID=
mkdir -p "$MNT"

phi_cleanup() {
	phi_umount 2>/dev/null || true
	rm -rf "$T"
}
trap phi_cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }
ok() { echo "ok: $*"; }

# auditd_start [ARGS...]: phifs-auditd with its log in $ALOG, exports in $AEXP, socket $ASOCK
# and the signing key in $AK (ARGS appended); sets AUDITD_PID and returns once the writer
# accepts a connection (a readiness wait, not a timing assertion)
auditd_start() {
	rm -f "$ASOCK" # a killed writer leaves its socket file behind
	"$AUDITD" --dir "$ALOG" --export-dir "$AEXP" --socket "$ASOCK" \
		--signing-key "$AK/phifs-audit-signing-key" "$@" 2>>"$T/auditd.log" &
	AUDITD_PID=$!
	python3 - "$ASOCK" <<'PY' || fail "phifs-auditd did not start"
import socket, sys, time
for _ in range(400):
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.connect(sys.argv[1]); s.close(); sys.exit(0)
    except OSError:
        time.sleep(0.025)
sys.exit(1)
PY
}

phi_setup() { # init a store with the given patients
	"$PHIFS_KEY" --store "$STORE" --key-file "$KEY" init >/dev/null
	for p in "$@"; do "$PHIFS_KEY" --store "$STORE" --key-file "$KEY" add "$p" >/dev/null; done
}

phi_mount() { # mount in the foreground, in the background; waits for the mount
	"$PHIFS" --key-file "$KEY" "$@" -f "$STORE" "$MNT" 2>>"$T/phifs.log" &
	PHIFS_PID=$!
	for _ in $(seq 100); do
		mountpoint -q "$MNT" && return 0
		kill -0 "$PHIFS_PID" 2>/dev/null || { cat "$T/phifs.log" >&2; fail "phifs exited"; }
		sleep 0.05
	done
	fail "mount did not appear"
}

phi_umount() {
	if mountpoint -q "$MNT"; then
		fusermount3 -u "$MNT" 2>/dev/null || umount -l "$MNT"
	fi
	if [ -n "$PHIFS_PID" ]; then
		wait "$PHIFS_PID" 2>/dev/null || true
		PHIFS_PID=
	fi
}

phi_remount() { phi_umount; phi_mount "$@"; }

# expect_errno ERRNO-NAME CMD...: run a python os call and check the errno
expect_errno() {
	local want=$1; shift
	python3 - "$want" "$@" <<'PY'
import errno, os, sys
want, code = sys.argv[1], sys.argv[2]
try:
    exec(code)
except OSError as e:
    if errno.errorcode.get(e.errno) == want:
        sys.exit(0)
    print(f"got {errno.errorcode.get(e.errno)} want {want}: {code}", file=sys.stderr); sys.exit(1)
print(f"no error, want {want}: {code}", file=sys.stderr); sys.exit(1)
PY
}
