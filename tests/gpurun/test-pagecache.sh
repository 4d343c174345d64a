#!/usr/bin/env bash
# test-pagecache: plaintext does not sit in the kernel's page cache (issue 7: direct I/O on
# the job's mount). The counts come from tests/gpurun/pagecache.c, on the same open file
# that read or wrote (FUSE drops an inode's cached pages at every open, so a fresh open or
# fincore(1) would count zero whatever was there):
# - control: through the service's phifs mount (the same store and options as gpurun's,
#   without direct_io) a read and a write leave pages cached (> 0): the count can see them;
# - the job's mount, while the worker is stopped with its output written and synced (hook
#   `results`): the job's documents and a longer one read through it, and a write through
#   it, leave 0 pages cached;
# - the job's own output.txt, on the worker's open file (pidfd_getfd), before gpurun's
#   fadvise: 0 pages cached (and the same count on an open file of the test's own, through
#   the plain mount, shows pages: control);
# - the job then finishes: exit 0, its documents' pages dropped (status), mount gone.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/run-lib.sh"
. "$here/docs-lib.sh"
: "${PAGECACHE:?}"
command -v nsenter >/dev/null || skip "no nsenter"

GP= W=
pc_cleanup() { # a failure leaves no job behind: its worker killed, gpurun unmounts and exits
	[ -z "$W" ] || kill -KILL "$W" 2>/dev/null || true
	[ -z "$GP" ] || { kill -TERM "$GP" 2>/dev/null; wait "$GP" 2>/dev/null; } || true
	run_cleanup
}
trap pc_cleanup EXIT

run_store p-alpha p-beta p-gamma
write_docs
# a longer document outside the job's globs: 64 pages (of 4 KiB) to count rather than 1
mkdir -p "$SVC/p-alpha/long"
python3 -c 'import sys; sys.stdout.write("".join("filler line %06d of a long test note\n" % i for i in range(6700)))' \
	>"$SVC/p-alpha/long/note.txt"
LONG_PAGES=$(( ($(stat -c %s "$SVC/p-alpha/long/note.txt") + $(getconf PAGESIZE) - 1) / $(getconf PAGESIZE) ))
run_config
G add --principal user:nobody --patient p-alpha --role job --purpose job --for 1h >/dev/null

pc() { # ARGS...: the helper's line, checked for its form
	local out
	out=$("$PAGECACHE" "$@") || fail "pagecache $1 failed: $out"
	case $out in "pages="*" resident="*" via="*) ;; *) fail "pagecache: odd output: $out" ;; esac
	echo "$out"
}
field() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$2"; }
cached() { # LINE WHAT: resident > 0 (a control)
	local r; r=$(field resident "$1")
	[ "$r" != "?" ] && [ "$r" -gt 0 ] || fail "control: $2 shows no cached page ($1): the count cannot see the page cache"
}
uncached() { # LINE WHAT: resident = 0 on a file of at least one page
	local r p; r=$(field resident "$1") p=$(field pages "$1")
	[ "$p" -ge 1 ] || fail "$2: an empty file proves nothing ($1)"
	case $r in
	0) ;;
	"?") # no cachestat(2) (Linux < 6.5): the kernel refusing a shared mapping is what
	     # FOPEN_DIRECT_IO does; the plain mount's control maps the same way
		[ "$(field via "$1")" = mmap-refused ] || fail "$2: $1" ;;
	*) fail "$2: $r of $p pages in the page cache ($1)" ;;
	esac
}

# control: the plain mount caches what it reads and writes
L=$SVC/p-alpha/long/note.txt
C_LONG=$(pc read "$L")
[ "$(field pages "$C_LONG")" = "$LONG_PAGES" ] || fail "the long note is not $LONG_PAGES pages: $C_LONG"
cached "$C_LONG" "a read through the plain mount"
C_DOC=$(pc read "$SVC/p-alpha/notes/discharge.txt")
cached "$C_DOC" "a document read through the plain mount"
C_W=$(pc write "$SVC/p-alpha/long/probe-plain" 262144)
cached "$C_W" "a write through the plain mount"
ok "control, plain phifs mount (no direct_io): long note $C_LONG; a document $C_DOC; a write $C_W"
HAVE_CS=0
[ "$(field via "$C_LONG")" = cachestat ] && HAVE_CS=1
if [ "$HAVE_CS" = 1 ]; then
	exec 9<"$L"
	cat <&9 >/dev/null
	C_FD=$(pc fd $$ /p-alpha/long/note.txt)
	exec 9<&-
	cached "$C_FD" "an open file of this shell's, taken with pidfd_getfd"
	ok "control: an open file of this shell's through the plain mount, taken with pidfd_getfd: $C_FD"
fi

# the job, stopped with output.txt written and synced, its file still open
GPURUN_TEST_STOP=results "$GPURUN" --config "$T/gpurun.conf" --status "$T/pc-1.status.json" \
	--patient p-alpha --task summarize --model model.gguf --max-tokens 24 --id pc-1 \
	--documents 'notes/*' --documents 'fhir/*.json' >"$T/pc-1.out" 2>&1 &
GP=$!
worker_of() { sed -n 's/.*worker_pid=\([0-9]*\).*/\1/p' "$T/pc-1.out"; }
have_worker() { [ -n "$(worker_of)" ]; }
stopped() { [ "$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" = T ]; }
wait_for 120 "the worker" have_worker
W=$(worker_of)
wait_for 300 "the worker to stop with its output written" stopped "$W"
MP=$(awk -v r="$RUN/" 'index($5, r) == 1 {print $5}' "/proc/$W/mountinfo")
[ -n "$MP" ] || fail "no job mount in the worker's namespace"
injob() { nsenter -t "$W" -m "$PAGECACHE" "$@"; }
jpc() { # ARGS...: pc inside the job's mount namespace
	local out
	out=$(injob "$@") || fail "pagecache $1 in the job's namespace failed: $out"
	echo "$out"
}

J_LONG=$(jpc read "$MP/p-alpha/long/note.txt")
[ "$(field pages "$J_LONG")" = "$LONG_PAGES" ] || fail "the long note through the job's mount: $J_LONG"
uncached "$J_LONG" "the long note read through the job's mount"
n=0
for f in notes/discharge.txt notes/visit.md notes/labs.csv notes/scan.pdf fhir/bundle.json; do
	J=$(jpc read "$MP/p-alpha/$f")
	uncached "$J" "document $((n + 1)) read through the job's mount"
	n=$((n + 1))
done
J_W=$(jpc write "$MP/p-alpha/long/probe-job" 262144)
uncached "$J_W" "a write through the job's mount"
ok "job's mount (direct_io): long note $J_LONG; $n documents, none cached; a write $J_W"

if [ "$HAVE_CS" = 1 ]; then
	J_OUT=$(pc fd "$W" /.output.txt.tmp)
	uncached "$J_OUT" "the job's output.txt, on the worker's open file"
	ok "the job's output.txt, written and synced through the mount, before gpurun's fadvise: $J_OUT"
else
	echo "note: no cachestat(2) (Linux < 6.5): the worker's output file is not counted (mincore needs its size, and an fstat can drop the pages)"
fi

kill -CONT "$W"
rc=0; wait "$GP" || rc=$?
GP= W=
[ "$rc" = 0 ] || fail "gpurun exit $rc: $(tail -3 "$T/pc-1.out")"
S=$T/pc-1.status.json
used=$(json "$S" scrub.page_cache.files_dropped)
[ "$used" -ge 1 ] || fail "status: no document's pages dropped ($used)"
[ "$(json "$S" scrub.mount.gone)" = True ] || fail "status: mount not gone"
grep -qF "$RUN/" /proc/self/mountinfo && fail "the job's mount is left"
[ -f "$SVC/p-alpha/results/pc-1/output.txt" ] || fail "no output.txt"
[ ! -e "$SVC/p-alpha/long/probe-job" ] && [ ! -e "$SVC/p-alpha/long/probe-plain" ] || fail "a probe file is left"
grep -qaF -e "$MARK_A" -e metformin "$T/pc-1.out" && fail "PHI on gpurun's stdout/stderr"
ok "the job finished: exit 0, $used documents' pages dropped, mount gone"
