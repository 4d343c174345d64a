# lib.sh: shared helpers of spoold's shell tests. Needs SPOOLD, SPOOLCTL (built binaries).
set -u
here=$(cd "$(dirname "$0")" && pwd)
RUNNER=$here/fake-runner.sh
fail() { echo "FAIL: $*" >&2; [ -n "${T:-}" ] && [ -f "$T/log" ] && tail -n 30 "$T/log" >&2; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (chown to a non-admin uid, leases)"
[ -x "${SPOOLD:-}" ] || skip "SPOOLD not set"

T=$(mktemp -d /tmp/spoold-test.XXXXXX)
SP=$T/spool
PID=
cleanup() {
	[ -n "$PID" ] && kill -9 "$PID" 2>/dev/null
	# supervisors and runners of this test only (they carry our spool path)
	pkill -9 -f -- "--config $T/conf" 2>/dev/null
	pkill -9 -f -- "$SP/active/" 2>/dev/null
	[ "${KEEP:-0}" = 1 ] || rm -rf "$T"
}
trap cleanup EXIT
export SPOOLD_TEST_LEDGER=$T/ledger SPOOLD_TEST_OUT=$T/out
mkdir -p "$T/out" "$T/docs/p1"
head -c 400 /dev/zero | tr '\0' x > "$T/docs/p1/a.txt"

# write_conf [key=value...]: the test config (extra lines override)
write_conf() {
	mkdir -p "$SP/tmp" "$SP/incoming"
	{
		echo "spool_dir = $SP"
		echo "admin_group = root"
		echo "runner = $RUNNER"
		echo "gpu_slots = 0,1,2,3,4,5,6,7"
		echo "max_instances = 8"
		echo "tick_ms = 100"
		echo "documents_root = $T/docs"
		echo "metrics_file = $T/metrics.prom"
		for kv in "$@"; do echo "$kv"; done
	} > "$T/conf"
}

start() { "$SPOOLD" --config "$T/conf" >>"$T/log" 2>&1 & PID=$!; }
stop() { [ -n "$PID" ] && kill -TERM "$PID" && wait "$PID"; PID=; }
kill9() { [ -n "$PID" ] && kill -9 "$PID" && wait "$PID" 2>/dev/null; PID=; }
alive() { [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; }

# job ID [extra JSON fields]: a valid job file on stdout
job() {
	printf '{"version":1,"id":"%s","patient":"p1","documents":["*.txt"],"task":"summarize","model":"m.gguf","max_tokens":64,"requested_by":"test","purpose":"treatment"%s}\n' "$1" "${2:-}"
}
# drop ID: by rename (tmp/ then incoming/), the recommended way
drop() { job "$1" "${2:-}" > "$SP/tmp/.$1"; mv "$SP/tmp/.$1" "$SP/incoming/$1.json"; }
# drop_write ID: written in place (IN_CLOSE_WRITE), like cp
drop_write() { job "$1" "${2:-}" > "$SP/incoming/$1.json"; }

n_done() { ls "$SP/done" | grep -c '\.result\.json$'; }
n_failed() { ls "$SP/failed" | grep -c '\.result\.json$'; }
n_terminal() { echo $(( $(n_done) + $(n_failed) )); }

# wait_for SECONDS DESCRIPTION CMD...: a guard against hanging, not a timing assertion
wait_for() {
	local t=$1 what=$2 i; shift 2
	for ((i = 0; i < t * 10; i++)); do "$@" && return 0; sleep 0.1; done
	fail "gave up waiting ($t s) for: $what"
}
reason_of() { cat "$SP/failed/rejected/"*"-$1.reason" 2>/dev/null; }
result_field() { python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])' "$1" "$2"; }
