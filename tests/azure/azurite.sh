#!/usr/bin/env bash
# azurite.sh CMD [ARGS...]: run CMD against a private Azurite blob service.
# Starts Azurite (tests/azure/node_modules, installed from package-lock.json by
# setup-azurite.sh when missing) on 127.0.0.1 with a free port and a temp dir, creates
# nothing, exports AZ_URL, AZ_OPTS, AZ_KEYFILE, AZ_PORT, AZURITE_PID, AZ_DIR and
# AZURITE_RESTART (a command that restarts it on the same port and location), runs CMD,
# and stops Azurite on every exit path. Exit 77 (skip) only if node or npm is missing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
command -v node >/dev/null && command -v npm >/dev/null || { echo "SKIP: node/npm missing"; exit 77; }
"$here/setup-azurite.sh" >&2

AZ_DIR=$(mktemp -d /tmp/phi-azurite.XXXXXX)
AZURITE_PID=
azurite_stop() {
	if [ -n "$AZURITE_PID" ] && kill -0 "$AZURITE_PID" 2>/dev/null; then
		kill "$AZURITE_PID" 2>/dev/null || true
		wait "$AZURITE_PID" 2>/dev/null || true
	fi
	AZURITE_PID=
}
cleanup() {
	azurite_stop
	# a restarted instance (AZURITE_RESTART) may still run: its command line names our dir
	pkill -f -- "--location $AZ_DIR/data" 2>/dev/null || true
	rm -rf "$AZ_DIR" 2>/dev/null || { sleep 0.5; rm -rf "$AZ_DIR" 2>/dev/null; } || true
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

AZ_PORT=$(free_port)
azurite_start() {
	# disk persistence (not --inMemoryPersistence): the fault test restarts it and expects
	# acknowledged data to be there
	"$here/node_modules/.bin/azurite-blob" --blobHost 127.0.0.1 --blobPort "$AZ_PORT" \
		--location "$AZ_DIR/data" --loose --skipApiVersionCheck --disableTelemetry \
		${AZURITE_DEBUG:+--debug "$AZ_DIR/debug.log"} --silent >>"$AZ_DIR/azurite.log" 2>&1 &
	AZURITE_PID=$!
	for _ in $(seq 200); do
		if curl -s -o /dev/null "http://127.0.0.1:$AZ_PORT/devstoreaccount1?comp=list"; then
			return 0
		fi
		kill -0 "$AZURITE_PID" 2>/dev/null || { cat "$AZ_DIR/azurite.log" >&2; echo "azurite died" >&2; exit 1; }
		sleep 0.1
	done
	echo "azurite did not start" >&2
	exit 1
}
azurite_start

# Azurite's published development key (not a secret), kept in a file like a real key
AZ_KEYFILE=$AZ_DIR/account.key
umask 077
printf '%s\n' 'Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==' >"$AZ_KEYFILE"
export AZ_DIR AZ_PORT AZ_KEYFILE AZURITE_PID
export AZ_ENDPOINT="http://127.0.0.1:$AZ_PORT"
# the write journal in our temp dir, not /var/cache/phifs
export AZ_OPTS="endpoint=$AZ_ENDPOINT,key_file=$AZ_KEYFILE,create=1,cache_dir=$AZ_DIR/cache"
export AZ_URL="az://devstoreaccount1/phitest/p$RANDOM"
export AZURITE_BIN="$here/node_modules/.bin/azurite-blob"

# run CMD; it may kill and restart Azurite itself (tests/azure/test-faults.sh)
set +e
"$@"
rc=$?
set -e
# CMD may have restarted Azurite under another PID: stop whatever listens on our port
if [ -f "$AZ_DIR/azurite.pid" ]; then
	p=$(cat "$AZ_DIR/azurite.pid")
	kill "$p" 2>/dev/null || true
fi
exit $rc
