#!/usr/bin/env bash
# test-proxy (run by azurite.sh): the Azure backend's retries, seen through a loopback proxy
# (faultproxy.py) between phifs and Azurite that injects faults on command:
#  1. 503 Server Busy: a burst on one request, then on every 3rd request: writes with
#     fsync, reads, renames and listings succeed, and the proxy saw every 503'd request
#     come again (retried);
#  2. connection resets, before the request is read and halfway through the answer: the same;
#     and answers of applied conditional PUTs (create, commit) lost: the retry's 409/412 is
#     its own first attempt, not a conflict;
#  3. answers delayed by 2 s, under the 5 s deadline: the same;
#  4. 503 forever: fsync, read, stat, create and readdir fail with EIO, and a service that
#     answers nothing with EIO too, after about the deadline (bounded by
#     `timeout`, not timed); phifs says so in its log with no name or content, keeps
#     running, and works again once the proxy passes requests;
#  5. everything written in 1-3 is in Azurite, byte for byte, mounted without the proxy;
#     the container holds no plaintext.
: "${AZ_URL:?run through azurite.sh}" "${AZ_TOOL:?}" "${AZ_ENDPOINT:?}" "${AZ_KEYFILE:?}"
here=$(cd "$(dirname "$0")" && pwd)
fsdir=$(cd "$here/../fs" && pwd)
. "$fsdir/lib.sh"

PROXY_PID=
proxy_cleanup() {
	phi_cleanup
	if [ -n "$PROXY_PID" ]; then
		kill "$PROXY_PID" 2>/dev/null || true
		wait "$PROXY_PID" 2>/dev/null || true
	fi
}
trap proxy_cleanup EXIT

python3 "$here/faultproxy.py" --upstream "$AZ_ENDPOINT" --port-file "$T/proxy.port" \
	2>"$T/proxy.log" &
PROXY_PID=$!
for _ in $(seq 100); do [ -s "$T/proxy.port" ] && break; sleep 0.05; done
[ -s "$T/proxy.port" ] || fail "the proxy did not start: $(cat "$T/proxy.log")"
PX=http://127.0.0.1:$(cat "$T/proxy.port")
ctl() { curl -sSf "$PX/__faultproxy/$1" >/dev/null || fail "proxy control $1"; }
counters() { curl -sSf "$PX/__faultproxy/stats" || fail "proxy stats"; }
# counter NAME: one of the proxy's counters
counter() { counters | python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

LOCAL=$STORE
phi_setup patient-PXMARK-4417
"$AZ_TOOL" copy "$LOCAL" - "$AZ_URL" "$AZ_OPTS" || fail "copying the new store into Azurite"
rm -rf "$LOCAL"
STORE=$AZ_URL
# a short deadline: 5 s per request, retries included
POPTS="endpoint=$PX,key_file=$AZ_KEYFILE,timeout=5"
phi_mount --store-opts "$POPTS"
P=$MNT/patient-PXMARK-4417

# work.py DIR: files of sizes around the piece (1 MiB) and header sizes, written and
# fsync'd, one overwritten inside, one renamed, one removed, all read back and listed;
# appends "sha256  path" lines for what it leaves to $T/expected
cat >"$T/work.py" <<'PY'
import hashlib, os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
sizes = [0, 1, 700, 4096, 9000, 65553, 300000, 1 << 20, (1 << 20) + 5, 2621773]
want = {}
for i, n in enumerate(sizes):
    name = f"PXMARK-file-{i}.bin"
    data = (b"PXMARK-CONTENT-%d " % i + os.urandom(n))[:n]
    fd = os.open(f"{d}/{name}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view[:1 << 20]):]
    os.fsync(fd)
    os.close(fd)
    want[name] = data
# a 4 KiB overwrite across the first piece boundary of the largest file
big = f"PXMARK-file-{len(sizes) - 1}.bin"
patch = os.urandom(4096)
fd = os.open(f"{d}/{big}", os.O_WRONLY | os.O_CLOEXEC)
os.pwrite(fd, patch, (1 << 20) - 100)
os.fsync(fd)
os.close(fd)
b = bytearray(want[big])
b[(1 << 20) - 100:(1 << 20) + 3996] = patch
want[big] = bytes(b)
os.rename(f"{d}/PXMARK-file-2.bin", f"{d}/PXMARK-renamed.bin")
want["PXMARK-renamed.bin"] = want.pop("PXMARK-file-2.bin")
os.unlink(f"{d}/PXMARK-file-3.bin")
del want["PXMARK-file-3.bin"]
names = sorted(os.listdir(d))
assert names == sorted(want), f"listing: {names}"
with open(os.environ["EXPECTED"], "a") as out:
    for name in names:
        with open(f"{d}/{name}", "rb") as f:
            got = f.read()
        assert got == want[name], f"{name}: {len(got)} bytes read back, {len(want[name])} written"
        out.write(f"{hashlib.sha256(got).hexdigest()}  {os.path.relpath(d + '/' + name, os.environ['MNT'])}\n")
PY
export EXPECTED=$T/expected MNT
: >"$EXPECTED"
work() { # work PHASE: run work.py in a new directory, bounded
	local rc=0
	timeout 600 python3 "$T/work.py" "$P/PXMARK-$1" || rc=$?
	[ $rc = 0 ] || { tail -5 "$T/phifs.log" >&2; fail "$1: the workload failed (rc $rc) through the proxy: $(counters)"; }
}

python3 "$T/work.py" "$P/PXMARK-warmup" || fail "workload without faults"
[ "$(counter 503)$(counter resets)" = 00 ] || fail "faults without asking: $(counters)"
[ "$(counter max_per_conn)" -gt 1 ] || fail "no connection carried two requests: $(counters)"
ok "through the proxy without faults: $(counter requests) requests, up to $(counter max_per_conn) on one connection"

# 1. 503s. A burst: the next 4 requests (a small file's write and fsync, one after the
# other: one request answered 503 four times in a row, 1.1 s of backoff at most)
ctl zero
ctl "set?mode=503&n=4"
python3 - "$P" <<'PY' || fail "write through a burst of 503s: $(counters)"
import os, sys
fd = os.open(f"{sys.argv[1]}/PXMARK-burst.txt", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
os.write(fd, b"PXMARK-CONTENT burst")
os.fsync(fd)
os.close(fd)
assert open(f"{sys.argv[1]}/PXMARK-burst.txt", "rb").read() == b"PXMARK-CONTENT burst"
PY
echo "$(echo -n "PXMARK-CONTENT burst" | sha256sum | cut -d' ' -f1)  patient-PXMARK-4417/PXMARK-burst.txt" >>"$EXPECTED"
[ "$(counter 503)" = 4 ] || fail "burst: the proxy did not answer 4 requests with 503: $(counters)"
[ "$(counter unretried)" = 0 ] && [ "$(counter retried)" -ge 4 ] ||
	fail "burst: a 503'd request was not retried: $(counters)"
# then one request in 3, 20 times, under the whole workload
ctl zero
ctl "set?mode=503&n=20&every=3"
work busy
[ "$(counter 503)" = 20 ] || fail "503s: the proxy did not inject 20: $(counters)"
[ "$(counter unretried)" = 0 ] && [ "$(counter retried)" -ge 20 ] ||
	fail "503s: a 503'd request was not retried: $(counters)"
ok "503 Server Busy, 4 in a row then 20 spread over $(counter requests) requests: retried, data intact"

# 2. resets: one request in 3, 16 times, half before the request is read, half with the
# answer cut halfway (the service did the work: the retry must cope with that)
ctl zero
ctl "set?mode=reset&n=16&every=3&at=any"
work reset
[ "$(counter resets)" = 16 ] || fail "resets: the proxy did not reset 16 connections: $(counters)"
[ "$(counter unretried)" = 0 ] || fail "resets: a reset request was not retried: $(counters)"
ok "connection resets, 16 over $(counter requests) requests: retried, data intact"
# resets after the service applied a conditional PUT (a create, a commit under If-Match):
# the retry meets its own first attempt (409/412), which is not another writer
ctl zero
ctl "set?mode=reset&n=6&every=2&at=response&method=PUT&cond=1"
work applied
[ "$(counter resets)" = 6 ] && [ "$(counter reset_cond_put)" = 6 ] ||
	fail "resets after PUTs: the proxy did not reset 6 conditional PUTs: $(counters)"
[ "$(counter unretried)" = 0 ] || fail "resets after PUTs: a request was not retried: $(counters)"
ok "answers of $(counter reset_cond_put) applied conditional PUTs lost: the retries see their own writes, data intact"

# 3. delays under the deadline: 12 answers held 2 s each
ctl zero
ctl "set?mode=delay&ms=2000&n=12"
work delay
[ "$(counter delayed)" = 12 ] || fail "delays: the proxy did not delay 12 answers: $(counters)"
ok "answers delayed 2 s (deadline 5 s): no error, data intact"
ctl "set?mode=pass"

# 4. past the deadline. Marker strings in the names and the content; every call bounded by
# timeout(1) (a hang fails the test, the time is not asserted)
mkdir "$P/PXMARK-fail"
head -c 3000000 /dev/urandom >"$T/keep.ref"
cp "$T/keep.ref" "$P/PXMARK-fail/PXMARK-keep.bin"
log_mark=$(($(stat -c %s "$T/phifs.log") + 1))
ctl zero
set +e
timeout 300 python3 - "$P/PXMARK-fail" "$PX" >"$T/fail.out" 2>&1 <<'PY'
import errno, os, sys, time, urllib.request
d, px = sys.argv[1], sys.argv[2]
def ctl(q):
    urllib.request.urlopen(f"{px}/__faultproxy/{q}", timeout=30).read()
def expect(what, fn, want):
    t0 = time.monotonic()
    try:
        fn()
    except OSError as e:
        name = errno.errorcode.get(e.errno, str(e.errno))
        print(f"{what}: {name} after {time.monotonic() - t0:.1f} s", flush=True)
        if name not in want:
            print(f"FAIL {what}: {name}, want {'/'.join(want)}", flush=True)
        return
    print(f"FAIL {what}: no error", flush=True)
# handles opened while the service answers: a write waiting for its fsync, a reader
fw = os.open(f"{d}/PXMARK-pending.txt", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600)
fr = os.open(f"{d}/PXMARK-keep.bin", os.O_RDONLY | os.O_CLOEXEC)
os.write(fw, b"PXMARK-CONTENT never stored " * 100)
ctl("set?mode=fail")
time.sleep(1.2)  # past the kernel's and the store's 1 s attribute caches
expect("fsync", lambda: os.fsync(fw), ["EIO"])
expect("read", lambda: os.pread(fr, 4096, 2 << 20), ["EIO"])
expect("stat", lambda: os.stat(f"{d}/PXMARK-absent"), ["EIO"])
expect("create", lambda: os.open(f"{d}/PXMARK-new", os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o600), ["EIO"])
expect("readdir", lambda: os.listdir(d), ["EIO"])
# a service that answers nothing: the attempt times out at the deadline
ctl("set?mode=hang")
expect("stat (no answer)", lambda: os.stat(f"{d}/PXMARK-absent2"), ["EIO"])
ctl("set?mode=pass")
try:
    os.close(fw)  # the failed commit may be reported again here (deferred error)
except OSError as e:
    print(f"close: {errno.errorcode.get(e.errno)}", flush=True)
os.close(fr)
print("done", flush=True)
PY
rc=$?
set -e
cat "$T/fail.out"
[ $rc -ne 124 ] || fail "an operation hung past the deadline"
[ $rc -eq 0 ] && grep -q '^done' "$T/fail.out" || fail "the failure phase broke (rc $rc)"
! grep -q '^FAIL' "$T/fail.out" || fail "$(grep '^FAIL' "$T/fail.out")"
[ "$(counter 503)" -gt 0 ] && [ "$(counter hung)" -gt 0 ] || fail "the proxy injected nothing: $(counters)"
kill -0 "$PHIFS_PID" || fail "phifs died"
log=$(tail -c +"$log_mark" "$T/phifs.log")
grep -q 'request failed past the 5 s deadline: HTTP 503' <<<"$log" ||
	fail "no message about the 503s in phifs's log: $log"
grep -q 'request failed past the 5 s deadline: Connection timed out' <<<"$log" ||
	fail "no message about the timeout in phifs's log: $log"
! grep -qi 'PXMARK\|never stored' "$T/phifs.log" || fail "a name or content in phifs's log"
ok "503 forever and no answer: EIO after the deadline, no hang, phifs says so without names"

# the service is back: the mount works again
cmp "$P/PXMARK-fail/PXMARK-keep.bin" "$T/keep.ref" || fail "read after the service came back"
stat "$P/PXMARK-fail/PXMARK-keep.bin" >/dev/null || fail "stat after the service came back"
work after
ok "the mount works again once the proxy passes requests"

# 5. what was acknowledged through the proxy is in Azurite: a fresh mount without it
phi_remount --store-opts "$AZ_OPTS"
(cd "$MNT" && sha256sum -c --quiet "$EXPECTED") || fail "files differ in Azurite"
n=$(wc -l <"$EXPECTED")
got=$(cd "$MNT" && find . -path ./patient-PXMARK-4417/PXMARK-fail -prune -o -type f -print | wc -l)
[ "$got" = "$n" ] || fail "$got files in the store, $n written"
phi_umount
mkdir "$T/dump"
"$AZ_TOOL" dump "$AZ_URL" "$AZ_OPTS" "$T/dump" || fail "download"
python3 "$fsdir/scan_plaintext.py" "$T/dump" PXMARK "never stored" || fail "plaintext in the container"
ok "$n files acknowledged through the faults are intact in Azurite; no plaintext in the container"
