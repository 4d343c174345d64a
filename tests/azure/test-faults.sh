#!/usr/bin/env bash
# test-faults (run by azurite.sh): the Azure backend when the service fails under a mount.
#  1. what fsync acknowledged is in the service, not in phifs: it survives a restart of
#     Azurite (SIGTERM: Azurite's own metadata database is not crash-safe, a kill -9 of the
#     emulator loses what it acknowledged in its last seconds, whoever wrote it);
#  2. Azurite killed in the middle of a large write: the writer gets a clean error (EIO or
#     a network errno) once the deadline passes, phifs does not hang or crash, and works
#     again once Azurite is back;
#  3. Azurite down for a moment during a write: retries carry it through, no error;
#  4. an unreachable store at mount time: a clean error, no hang.
: "${AZ_URL:?run through azurite.sh}" "${AZ_TOOL:?}" "${AZURITE_BIN:?}"
fsdir=$(cd "$(dirname "$0")/../fs" && pwd)
. "$fsdir/lib.sh"

RESTARTED=
az_kill() { # az_kill [SIGNAL]: kill (-9 by default) whichever Azurite is running
	local p=${RESTARTED:-$AZURITE_PID}
	kill "-${1:-9}" "$p" 2>/dev/null || true
	while kill -0 "$p" 2>/dev/null; do sleep 0.05; done
	# the port must be free before a restart
	for _ in $(seq 100); do
		curl -s -o /dev/null "$AZ_ENDPOINT/devstoreaccount1?comp=list" || return 0
		sleep 0.05
	done
}
az_restart() { # same port, same location
	"$AZURITE_BIN" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" --location "$AZ_DIR/data" --loose \
		--skipApiVersionCheck --disableTelemetry --silent >>"$AZ_DIR/azurite.log" 2>&1 &
	RESTARTED=$!
	echo "$RESTARTED" >"$AZ_DIR/azurite.pid" # azurite.sh stops it at the end
	for _ in $(seq 200); do
		curl -s -o /dev/null "$AZ_ENDPOINT/devstoreaccount1?comp=list" && return 0
		sleep 0.1
	done
	fail "azurite did not restart"
}

LOCAL=$STORE
phi_setup patient-f
"$AZ_TOOL" copy "$LOCAL" - "$AZ_URL" "$AZ_OPTS" || fail "copying the new store into Azurite"
STORE=$AZ_URL
# a short deadline so that failures come back quickly
OPTS="$AZ_OPTS,timeout=6"
phi_mount --store-opts "$OPTS"
P=$MNT/patient-f

# 1. acknowledged data survives the service's crash
python3 - "$P" <<'PY'
import os, sys
for i in range(20):
    fd = os.open(f"{sys.argv[1]}/acked{i}", os.O_CREAT | os.O_WRONLY, 0o600)
    os.write(fd, (f"acknowledged {i} " * 1000).encode())
    os.fsync(fd)
    os.close(fd)
PY
sum1=$(cd "$P" && cat acked* | sha256sum)
az_kill TERM
az_restart
phi_remount --store-opts "$OPTS"
sum2=$(cd "$P" && cat acked* | sha256sum)
[ "$sum1" = "$sum2" ] || fail "fsync-acknowledged files lost or changed across an Azurite crash"
ok "fsync-acknowledged data is in the service: it survives a restart of Azurite"

# 2. killed mid-write: a clean error within the deadline (bounded wait, not a timing check)
python3 - "$P/big" >"$T/writer.out" 2>&1 <<'PY' &
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o600)
chunk = os.urandom(1 << 20)
try:
    for i in range(512):
        os.write(fd, chunk)
        if i == 8:
            print("started", flush=True)
    os.fsync(fd)
    os.close(fd)
    print("no error")
except OSError as e:
    print("errno", e.errno, os.strerror(e.errno))
PY
writer=$!
for _ in $(seq 600); do grep -q started "$T/writer.out" && break; sleep 0.05; done
grep -q started "$T/writer.out" || fail "writer did not start"
az_kill
timeout 120 tail --pid="$writer" -f /dev/null || fail "writer hung after Azurite died"
wait "$writer" || true
grep -Eq "errno (5|110|113|111|104)" "$T/writer.out" || fail "writer: $(cat "$T/writer.out")"
kill -0 "$PHIFS_PID" || fail "phifs died"
# the mount still answers (with an error) rather than hanging
timeout 120 stat "$P/acked0" >/dev/null 2>"$T/stat.err" && fail "stat succeeded with Azurite down"
[ $? -ne 124 ] || fail "stat hung with Azurite down"
grep -Eqi "Input/output error|No route to host|timed out" "$T/stat.err" || fail "stat error: $(cat "$T/stat.err")"
! grep -q "patient-f\|acked" "$T/phifs.log" || fail "a name reached the log"
grep -q "deadline" "$T/phifs.log" || fail "the failure is not reported in the log"
ok "Azurite killed mid-write: clean errors ($(sed -n 's/^errno [0-9]* //p' "$T/writer.out")), no hang, no crash"

az_restart
[ "$(head -c 12 "$P/acked3")" = "acknowledged" ] || fail "mount works again after the restart"
ok "the mount recovers when the service returns"

# 3. a short outage inside the deadline is retried through
az_kill
python3 - "$P/during" >"$T/w2.out" 2>&1 <<'PY' &
import os, sys
fd = os.open(sys.argv[1], os.O_CREAT | os.O_WRONLY, 0o600)
os.write(fd, b"written during an outage")
os.fsync(fd)
os.close(fd)
print("done")
PY
w2=$!
sleep 1
az_restart
wait "$w2" || fail "write during a short outage: $(cat "$T/w2.out")"
[ "$(cat "$P/during")" = "written during an outage" ] || fail "content after outage"
ok "a short outage is retried through"
phi_umount

# 4. unreachable at mount time: clean error, no hang
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
set +e
timeout 120 "$PHIFS" --key-file "$KEY" --store-opts "endpoint=http://127.0.0.1:$port,key_file=$AZ_KEYFILE,timeout=2" \
	-f "$AZ_URL" "$MNT" 2>"$T/mount.err"
rc=$?
set -e
[ $rc -ne 124 ] || fail "mount hung on an unreachable store"
[ $rc -ne 0 ] || fail "mount of an unreachable store succeeded"
grep -q "No route to host" "$T/mount.err" || fail "mount error: $(cat "$T/mount.err")"
ok "unreachable store: $(tail -1 "$T/mount.err")"
