# run-lib.sh: the whole product for gpurun's end-to-end tests (sourced): a store with
# keys, phifs-auditd, a service mount that writes documents for several patients, spoold
# with the local backend and gpurun as its runner. Needs PHIFS PHIFS_KEY PHIFS_GRANT
# PHIFS_AUDIT AUDITD SPOOLD GPURUN (built binaries) and MODELS (../shared/models).
set -euo pipefail
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=0}
skip() { echo "SKIP: $*"; exit 77; }
fail() {
	echo "FAIL: $*" >&2
	for f in "$T"/spoold.log "$SP"/journal/*.log; do
		[ -f "$f" ] && { echo "--- $f" >&2; tail -n 20 "$f" >&2; }
	done
	exit 1
}
ok() { echo "ok: $*"; }
: "${SPOOLCTL:=}" "${PHIFS:?}" "${PHIFS_KEY:?}" "${PHIFS_GRANT:?}" "${PHIFS_AUDIT:?}" "${AUDITD:?}" "${SPOOLD:?}" "${GPURUN:?}"
[ "$(id -u)" = 0 ] || skip "needs root (FUSE mounts, mount namespaces)"
[ -e /dev/fuse ] || skip "no /dev/fuse"
unshare -m true 2>/dev/null || skip "cannot create a mount namespace here"
getent passwd nobody >/dev/null || skip "no user nobody (the job user)"

T=$(mktemp -d /tmp/gpurun-test.XXXXXX)
chmod 711 "$T" # the job user reaches the models and the mount points
STORE=$T/store KEY=$T/master.key SVC=$T/svc SP=$T/spool RUN=$T/run
AK=$T/ak ALOG=$T/alog AEXP=$T/aexp ASOCK=$T/audit.sock
mkdir -p "$SVC" "$AK" "$AEXP" "$T/models" "$SP/incoming" "$SP/tmp"
AUDITD_PID= SVC_PID= SPOOLD_PID=
run_cleanup() {
	[ -z "$SPOOLD_PID" ] || { kill -9 "$SPOOLD_PID" && wait "$SPOOLD_PID"; } 2>/dev/null || true
	# supervisors and runners of this test only (their command lines carry our spool)
	for p in $(pgrep -f -- "$SP/active/" 2>/dev/null); do kill -9 "$p" 2>/dev/null || true; done
	mountpoint -q "$SVC" && { fusermount3 -u "$SVC" 2>/dev/null || umount -l "$SVC"; }
	[ -z "$SVC_PID" ] || wait "$SVC_PID" 2>/dev/null || true
	[ -z "$AUDITD_PID" ] || { kill -9 "$AUDITD_PID" && wait "$AUDITD_PID"; } 2>/dev/null || true
	[ "${KEEP:-0}" = 1 ] || rm -rf "$T"
}
trap run_cleanup EXIT

# the model: stories260K, or a generated tiny random Llama where it is absent
if [ -f "$MODELS/stories260K-q8_0.gguf" ]; then
	cp "$MODELS/stories260K-q8_0.gguf" "$T/models/model.gguf"
else
	python3 -c 'import sys; sys.path.insert(0, sys.argv[1]); import gguflib as G; open(sys.argv[2], "wb").write(G.random_llama(1, G.T_F32))' \
		"$(dirname "$0")" "$T/models/model.gguf" || skip "no model and none could be generated"
fi
chmod 755 "$T/models"; chmod 644 "$T/models/model.gguf"

G() { "$PHIFS_GRANT" --store "$STORE" --key-file "$KEY" "$@"; }
wait_for() { # SECONDS WHAT CMD...: a guard against hanging, not a timing assertion
	local t=$1 what=$2 i; shift 2
	for ((i = 0; i < t * 10; i++)); do "$@" && return 0; sleep 0.1; done
	fail "gave up waiting ($t s) for: $what"
}

run_store() { # PATIENT...: store, keys, audit daemon, service grant and mount
	"$PHIFS_KEY" --store "$STORE" --key-file "$KEY" init >/dev/null
	"$PHIFS_AUDIT" keygen --out "$AK" --name phi-audit/gpurun-test >/dev/null
	"$PHIFS_AUDIT" lookup-key --key-file "$KEY" --out "$T/lookup.key" >/dev/null
	"$AUDITD" --dir "$ALOG" --export-dir "$AEXP" --socket "$ASOCK" \
		--signing-key "$AK/phifs-audit-signing-key" 2>>"$T/auditd.log" &
	AUDITD_PID=$!
	wait_for 20 "phifs-auditd's socket" test -S "$ASOCK"
	# key and grant changes are audited too (phifs-key and phifs-grant refuse without a log)
	export PHIFS_AUDIT_SOCKET=$ASOCK
	for p in "$@"; do "$PHIFS_KEY" --store "$STORE" --key-file "$KEY" add "$p" >/dev/null; done
	G add --principal user:0 --patient '*' --role service --purpose operations --for 1h >/dev/null
	"$PHIFS" --key-file "$KEY" -o grants,audit_socket="$ASOCK",allow_other -f "$STORE" "$SVC" 2>>"$T/phifs-svc.log" &
	SVC_PID=$!
	wait_for 20 "the service mount" mountpoint -q "$SVC"
}

run_config() { # [extra spoold config lines...]
	cat >"$T/gpurun.conf" <<-CONF
	store = $STORE
	key_file = $KEY
	audit_socket = $ASOCK
	phifs = $PHIFS
	models_dir = $T/models
	mount_dir = $RUN
	job_user = nobody
	threads = 1
	cost_usd_per_hour = 1.20
	CONF
	{
		echo "spool_dir = $SP"
		echo "admin_group = root"
		echo "runner = $GPURUN"
		echo "gpu_slots = 0"
		echo "max_instances = 1"
		echo "tick_ms = 100"
		echo "retry_backoff_sec = 1"
		echo "lifetime_sec = 600"
		echo "phifs_store = $STORE"
		echo "phifs_key_file = $KEY"
		echo "audit_socket = $ASOCK"
		echo "job_user = nobody"
		for kv in "$@"; do echo "$kv"; done
	} >"$T/spoold.conf"
}

run_spoold() {
	GPURUN_CONFIG=$T/gpurun.conf "$SPOOLD" --config "$T/spoold.conf" >>"$T/spoold.log" 2>&1 &
	SPOOLD_PID=$!
}

drop_job() { # ID PATIENT DOCS-JSON-ARRAY [MAX_TOKENS]
	printf '{"version":1,"id":"%s","patient":"%s","documents":%s,"task":"summarize","model":"model.gguf","max_tokens":%s,"requested_by":"dr.test","purpose":"treatment","estimated_tokens":2000}\n' \
		"$1" "$2" "$3" "${4:-48}" >"$SP/tmp/.$1"
	mv "$SP/tmp/.$1" "$SP/incoming/$1.json"
}

json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[int(k)] if isinstance(d,list) else d[k]
print(d)' "$1" "$2"; }
