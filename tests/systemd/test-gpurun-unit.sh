#!/usr/bin/env bash
# test-gpurun-unit.sh: the installed gpurun@.service runs the real gpurun for a real job
# (stories260K on a real store, audited), with the unit's privileges reproduced without a
# systemd PID 1: its ExecStart= (read from the installed unit, %d and %i filled in) runs
# under setpriv with the unit's CapabilityBoundingSet=, NoNewPrivileges=,
# SupplementaryGroups= and UMask=, and its credentials ("job" from LoadCredential=,
# "phifs-master-key" decrypted with systemd-creds as LoadCredentialEncrypted= does) in
# $CREDENTIALS_DIRECTORY. Then:
#   - the job succeeds: result and record written encrypted, readable through a mount;
#   - with the old unit's empty bounding set it fails ("private mount namespace");
#   - without any one of the unit's capabilities it fails (each one is needed);
#   - every system call the run made (strace -f) is allowed by the unit's SystemCallFilter=
#     lines as systemd-analyze expands them;
#   - under ProtectProc=invisible (a hidepid=invisible /proc) it fails, as docs/systemd.md says;
#   - under PrivateDevices= with the unit's BindPaths= (a private mount namespace whose /dev
#     is a tmpfs with the pseudo devices and the bound nodes only, as systemd 252 builds it)
#     it succeeds on the same backend (cpu, or cuda on a GPU host), and without /dev/fuse
#     bound it fails;
#   - gpurun-systemd (spoold's runner) hands the status file and the exit code over the
#     unit boundary, with a stand-in systemctl whose "start --wait" runs the ExecStart= above.
# Users exist only in R/etc/passwd: nobody stands in for phifs (phifs_user), daemon for
# gpurun (job_user). Not reproduced: the other sandbox options (ProtectSystem=, seccomp
# itself, the cgroup side of DeviceAllow=/DevicePolicy=, RestrictNamespaces=), which need
# systemd to apply them.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
skip() { echo "SKIP: $*"; exit 77; }
[ "$(id -u)" = 0 ] || skip "needs root (FUSE mounts, setpriv to root with a bounding set)"
[ -e /dev/fuse ] || skip "no /dev/fuse"
for t in setpriv systemd-creds systemd-analyze strace unshare; do
	command -v "$t" >/dev/null || skip "no $t"
done
unshare -m true 2>/dev/null || skip "cannot create a mount namespace here"
getent passwd nobody >/dev/null && getent passwd daemon >/dev/null || skip "no users nobody and daemon (stand-ins)"
MODEL=
for m in "$here/../../../shared/models" /work/shared/models; do
	[ -f "$m/stories260K-q8_0.gguf" ] && { MODEL=$m/stories260K-q8_0.gguf; break; }
done
[ -n "$MODEL" ] || skip "no stories260K-q8_0.gguf under ../shared/models"

temp_root gpurun-unit
SVC=$R/svc
MOUNTS=("$SVC")

# ---- the installed tree, users and directories
install_tree "$R"
mkdir -p "$R/etc"
systemd-sysusers --root="$R" >/dev/null 2>&1 || fail "systemd-sysusers"
systemd-tmpfiles --create --root="$R" >/dev/null 2>&1 || fail "systemd-tmpfiles"
uid() { awk -F: -v n="$1" '$1 == n { print $3 }' "$R/etc/passwd"; }
gid() { awk -F: -v n="$1" '$1 == n { print $3 }' "$R/etc/group"; }
UNIT=$P/lib/systemd/system/gpurun@.service
[ -f "$UNIT" ] || fail "gpurun@.service not installed"
[ -x "$BIN/gpurun" ] && [ -x "$BIN/gpurun-systemd" ] || fail "gpurun or gpurun-systemd not installed"
[ "$(stat -c '%a %u %g' "$R/run/gpurun")" = "711 0 0" ] || fail "tmpfiles: /run/gpurun"
[ "$(stat -c '%a %u %g' "$R/run/gpurun-status")" = "2770 0 $(gid spoold)" ] || fail "tmpfiles: /run/gpurun-status"
chown nobody:nogroup "$R/var/lib/phifs" # nobody stands in for phifs
chgrp daemon "$R/var/cache/phifs"       # daemon (the job user) stands in for gpurun
install -m 0640 -g daemon "$MODEL" "$R/var/cache/phifs/stories260K.gguf"

# ---- store, audit daemon, keys (README steps 2-5, shortened)
export SYSTEMD_CREDENTIAL_SECRET=$R/var/lib/systemd/credential.secret
mkdir -p "$R/var/lib/systemd" "$R/setup"
chmod 0700 "$R/setup"; chown nobody "$R/setup"
PG=$(gid phifs)
as_phifs() { setpriv --reuid=nobody --regid=nogroup --groups="$PG" "$@"; }
as_phifs "$BIN/phifs-key" --store "$R/var/lib/phifs/store" --key-file "$R/setup/master.key" init >/dev/null ||
	fail "phifs-key init"
systemd-creds encrypt --name=phifs-master-key "$R/setup/master.key" \
	"$R/etc/credstore.encrypted/phifs-master-key" 2>/dev/null || fail "systemd-creds encrypt"
AU=$(uid phifs-auditd)
install -d -m 0700 -o "$AU" "$R/ak"
"$BIN/phifs-audit" keygen --out "$R/ak" --name phi-audit/test >/dev/null || fail "keygen"
chown -R "$AU" "$R/ak"
ASOCK=$R/run/phifs-audit/audit.sock
(umask 0027; exec setpriv --reuid="$AU" --regid="$(gid phifs-auditd)" --clear-groups "$BIN/phifs-auditd" \
	--dir "$R/var/log/phifs-audit" --export-dir "$R/var/lib/phifs-audit/export" --socket "$ASOCK" \
	--signing-key "$R/ak/phifs-audit-signing-key") 2>"$R/auditd.log" &
PIDS+=($!)
waitfor "the audit socket" test -S "$ASOCK"
K() { as_phifs "$BIN/$1" --store "$R/var/lib/phifs/store" --key-file "$R/setup/master.key" --audit-socket "$ASOCK" "${@:2}"; }
K phifs-key add p-0042 >/dev/null || fail "phifs-key add"
K phifs-grant add --principal user:0 --patient '*' --role service --purpose operations --for 1h >/dev/null ||
	fail "service grant"
K phifs-grant add --principal user:daemon --patient p-0042 --role job --purpose job --for 1h >/dev/null ||
	fail "job grant"
mkdir -p "$SVC"
install -m 0600 "$R/setup/master.key" "$R/root.key" # phifs wants a key of the mounting user
# as phifs@ does (run_as): the store's files belong to phifs, as on a deployed host
"$BIN/phifs" --key-file "$R/root.key" -o grants,audit_socket="$ASOCK",allow_other,run_as=nobody -f \
	"$R/var/lib/phifs/store" "$SVC" 2>"$R/phifs-svc.log" &
PIDS+=($!)
waitfor "the service mount" mountpoint -q "$SVC"
echo "Patient reports a persistent cough for two weeks. Prescribed rest and fluids." >"$SVC/p-0042/visit.txt"
ok "store, audit daemon, patient p-0042, job grant for the job user, a document"

# ---- gpurun.conf (the installed example, rerooted) and the job file in the spool
install -D -m 0644 "$P/share/doc/phi/examples/gpurun.conf" "$P/etc/phifs/gpurun.conf"
sed -i -e "s|^store = .*|store = $R/var/lib/phifs/store|" -e "s|^audit_socket = .*|audit_socket = $ASOCK|" \
	-e "s|^phifs = .*|phifs = $BIN/phifs|" -e "s|^phifs_user = .*|phifs_user = nobody|" \
	-e "s|^models_dir = .*|models_dir = $R/var/cache/phifs|" -e "s|^mount_dir = .*|mount_dir = $R/run/gpurun|" \
	-e "s|^job_user = .*|job_user = daemon|" -e "s|^threads = .*|threads = 1|" "$P/etc/phifs/gpurun.conf"
JOB=job-0001
mkdir -p "$R/var/spool/phifs/active"
cat >"$R/var/spool/phifs/active/$JOB.json" <<'J'
{"version": 1, "id": "job-0001", "patient": "p-0042", "documents": ["visit.txt"],
 "task": "summarize", "model": "stories260K.gguf", "max_tokens": 32,
 "estimated_tokens": 2000, "requested_by": "dr.who", "purpose": "treatment"}
J

# ---- the unit, as systemd would start it
prop() { sed -n "s/^$1=//p" "$UNIT"; }
grep -q "^LoadCredential=job:/var/spool/phifs/active/%i.json$" "$UNIT" || fail "gpurun@: job credential line"
grep -q "^LoadCredentialEncrypted=phifs-master-key:/etc/credstore.encrypted/phifs-master-key$" "$UNIT" ||
	fail "gpurun@: master key credential line"
[ -z "$(prop User)" ] || fail "gpurun@ sets User=: this test reproduces root with a bounding set"
[ "$(prop NoNewPrivileges)" = yes ] || fail "gpurun@: NoNewPrivileges"
[ "$(prop UMask)" = 0077 ] || fail "gpurun@: UMask"
[ "$(prop SupplementaryGroups)" = phifs ] || fail "gpurun@: SupplementaryGroups (this test maps phifs only)"
CAPS=$(prop CapabilityBoundingSet)
[ -n "$CAPS" ] || fail "gpurun@: no CapabilityBoundingSet"
bset() { # CAP_A CAP_B ... -> setpriv's -all,+a,+b
	local s=-all c
	for c in "$@"; do c=${c,,}; s+=",+${c#cap_}"; done
	echo "$s"
}
CD=$R/run/credentials/gpurun@$JOB.service
install -d -m 0700 "$CD"
install -m 0400 "$R/var/spool/phifs/active/$JOB.json" "$CD/job"
systemd-creds decrypt --name=phifs-master-key "$R/etc/credstore.encrypted/phifs-master-key" "$CD/phifs-master-key" ||
	fail "systemd-creds decrypt"
chmod 0400 "$CD/phifs-master-key"
CMD=$(prop ExecStart | sed -e "s|$PREFIX/|$P/|g; s| /run/| $R/run/|g; s|%d|$CD|g; s|%i|$JOB|g")
STATUS=$R/run/gpurun-status/$JOB.json
# run_unit LOG BOUNDING-SET [WRAPPER...]: ExecStart= as root with the unit's limits
run_unit() {
	local log=$1 bs=$2
	shift 2
	rm -f "$STATUS"
	# an ASan build: keep the sanitizer's options, and LeakSanitizer cannot run under ptrace
	local asan=${ASAN_OPTIONS:-}
	[ "${1:-}" = strace ] && asan="${asan:+$asan:}detect_leaks=0"
	# shellcheck disable=SC2086
	(cd / && umask 0077 && exec env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="$CD" \
		${asan:+ASAN_OPTIONS="$asan"} ${UBSAN_OPTIONS:+UBSAN_OPTIONS="$UBSAN_OPTIONS"} "$@" \
		setpriv --reuid=0 --regid=0 --groups="$PG" --inh-caps=-all --bounding-set="$bs" --no-new-privs \
		$CMD) >"$log" 2>&1
}
json() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1]))
for k in sys.argv[2].split("."): d=d[k]
print(d)' "$1" "$2"; }

# 1. the unit's capabilities are enough
# shellcheck disable=SC2086
rc=0; run_unit "$R/run.log" "$(bset $CAPS)" strace -f -qq -o "$R/strace.out" || rc=$?
[ "$rc" = 0 ] || { cat "$R/run.log"; fail "gpurun under gpurun@'s privileges: exit $rc"; }
grep -q "phase=deprovisioning" "$R/run.log" || fail "no deprovisioning phase"
[ "$(json "$STATUS" exit)" = 0 ] && [ "$(json "$STATUS" scrub.mount.gone)" = True ] || fail "status: $(cat "$STATUS")"
[ "$(stat -c '%a %g' "$STATUS")" = "640 $(gid spoold)" ] || fail "status file not 0640 group spoold (gpurun-systemd reads it)"
out=$SVC/p-0042/results/$JOB/output.txt
[ -s "$out" ] || fail "no output through the mount"
grep -q '"job_id":[[:space:]]*"job-0001"' "$SVC/p-0042/results/$JOB/record.json" || fail "no record"
head -c 24 "$out" >"$R/out-head"
! grep -rqF -f "$R/out-head" "$R/var/lib/phifs/store" || fail "the output is on the store in the clear"
ls "$R/run/gpurun" | grep -q . && fail "a mount point was left in /run/gpurun"
STATUS_RUN1=$R/status-run1.json
cp "$STATUS" "$STATUS_RUN1"
CAPS_SHOWN=${CAPS// /,}
ok "the real gpurun ran job-0001 under gpurun@'s bounding set ($CAPS_SHOWN), no_new_privs, root + group phifs: exit 0, result encrypted on the store and readable through a mount"

# 2. the old unit's empty bounding set (CapabilityBoundingSet=) is not
rc=0; run_unit "$R/run-empty.log" -all || rc=$?
[ "$rc" = 3 ] || { cat "$R/run-empty.log"; fail "with an empty bounding set: exit $rc, want 3"; }
grep -q "private mount namespace: Operation not permitted" "$R/run-empty.log" || fail "empty set: wrong error"
ok "with the old empty bounding set gpurun fails (exit 3, private mount namespace: Operation not permitted)"

# 3. each capability is needed
for c in $CAPS; do
	less=()
	for d in $CAPS; do [ "$d" = "$c" ] || less+=("$d"); done
	rc=0; run_unit "$R/run-no-$c.log" "$(bset "${less[@]}")" || rc=$?
	[ "$rc" != 0 ] || fail "gpurun succeeded without $c: the unit grants more than it needs"
	ok "without $c: exit $rc ($(grep -o 'error=.*' "$R/run-no-$c.log" | head -1))"
done

# 4. every system call made is in the unit's SystemCallFilter=
python3 - "$UNIT" "$R/strace.out" <<'PY' || fail "system calls outside gpurun@'s SystemCallFilter="
import re, subprocess, sys
groups, cur = {}, None
for line in subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True).stdout.splitlines():
    s = line.split("#")[0].strip()
    if not s:
        continue
    if line.startswith("@"):
        cur = s; groups[cur] = []
    elif cur:
        groups[cur].append(s)
def expand(name, seen=()):
    if not name.startswith("@"):
        return {name}
    out = set()
    for m in groups[name]:
        if m not in seen:
            out |= expand(m, seen + (name,))
    return out
allowed = None
for line in open(sys.argv[1]):
    m = re.match(r"SystemCallFilter=(~?)(.*)", line.strip())
    if not m:
        continue
    names = set().union(*(expand(n) for n in m.group(2).split()))
    if m.group(1):
        allowed = (allowed or set()) - names
    else:
        allowed = (allowed or set()) | names
# always allowed by systemd's filter (systemd.exec(5))
allowed |= {"execve", "exit", "exit_group", "getrlimit", "rt_sigreturn", "sigreturn"}
# setpriv's own calls (capset, setgroups, ... before it execs gpurun) do not count
used, main, started = set(), None, False
for line in open(sys.argv[2]):
    m = re.match(r"(\d+)\s+([a-z_0-9]+)\(", line)
    if not m:
        continue
    pid, name = m.groups()
    main = main or pid
    if pid == main and not started:
        started = name == "execve" and "/gpurun\"" in line and line.rstrip().endswith("= 0")
        continue
    used.add(name)
if not started:
    print("strace: gpurun was never executed")
    sys.exit(1)
bad = sorted(used - allowed)
if bad:
    print("not allowed:", " ".join(bad))
    sys.exit(1)
print("ok: %d system calls made, all in gpurun@'s SystemCallFilter= (%s)" % (len(used),
      " ".join(sorted(n for n in used if n in ("unshare", "mount", "umount2", "setresuid", "setresgid", "setgroups", "capset", "prctl")))))
PY

# 5. ProtectProc=invisible would hide the worker from phifs: the unit must not set it
# shellcheck disable=SC2016
rc=0; run_unit "$R/run-hidepid.log" "$(bset $CAPS)" unshare -m --propagation private \
	sh -c 'mount -t proc -o hidepid=invisible proc /proc && exec "$@"' sh || rc=$?
[ "$rc" != 0 ] || fail "gpurun succeeded with a hidepid=invisible /proc (then ProtectProc=invisible would do)"
[ "$(prop ProtectProc)" != invisible ] || fail "gpurun@ sets ProtectProc=invisible"
ok "with a hidepid=invisible /proc (ProtectProc=invisible) the job fails (exit $rc): the unit keeps ProtectProc=default"

# 6. PrivateDevices=yes + BindPaths=: the job runs with only the pseudo devices and the bound
# nodes in /dev, and /dev/fuse is the one it cannot do without
[ "$(prop PrivateDevices)" = yes ] || fail "gpurun@: PrivateDevices=yes"
# shellcheck disable=SC2086
BSET=$(bset $CAPS)
read -ra BINDS <<<"$(prop BindPaths | tr '\n' ' ')"
for b in "${BINDS[@]}"; do
	case $b in
	*:*) fail "gpurun@: BindPaths=$b: this test emulates plain SOURCE binds only" ;;
	/dev/* | -/dev/*) ;;
	*) fail "gpurun@: BindPaths=$b is not a device node (this test binds /dev entries only)" ;;
	esac
done
printf '%s\n' "${BINDS[@]}" | grep -qx /dev/fuse || fail "gpurun@: BindPaths= lacks /dev/fuse (required, no '-')"
# every NVIDIA node of this host that CUDA opens is bound (a host with more GPUs than listed fails here)
for n in /dev/nvidiactl /dev/nvidia-uvm /dev/nvidia-uvm-tools /dev/nvidia-caps /dev/nvidia[0-9]*; do
	[ -e "$n" ] || continue
	printf '%s\n' "${BINDS[@]}" | grep -qx -- "-$n" || fail "gpurun@: this host has $n, BindPaths= does not bind it"
done
# privdev BIND... -- CMD...: as systemd 252's mount_private_dev() and BindPaths= (src/core/
# namespace.c), in the mount namespace of `unshare -m`: a tmpfs (nosuid, noexec) with null,
# zero, full, random, urandom and tty, /dev/pts with ptmx, /dev/shm and /dev/mqueue bound
# from the host, the log, fd and std* links; then each BIND from the host's /dev ("-": skip
# if missing, otherwise a missing source fails as the unit would, 226/NAMESPACE); then
# read-only and moved over /dev
cat >"$R/privdev.sh" <<'SH'
set -eu
N=$1; shift
mount -t tmpfs -o mode=0755,nosuid,noexec,strictatime tmpfs "$N"
for d in null zero full random urandom tty; do
	: >"$N/$d"; mount --bind "/dev/$d" "$N/$d"
done
mkdir "$N/pts" "$N/shm"
mount --bind /dev/pts "$N/pts"; ln -s pts/ptmx "$N/ptmx"
mount --bind /dev/shm "$N/shm"
if [ -d /dev/mqueue ]; then mkdir "$N/mqueue"; mount --bind /dev/mqueue "$N/mqueue"; fi
ln -s /run/systemd/journal/dev-log "$N/log"
ln -s /proc/self/fd "$N/fd"
for i in 0:stdin 1:stdout 2:stderr; do ln -s "/proc/self/fd/${i%%:*}" "$N/${i#*:}"; done
while [ "$1" != -- ]; do
	b=$1; shift; src=${b#-}
	if [ ! -e "$src" ]; then
		[ "$b" != "$src" ] && continue
		echo "privdev: BindPaths=$b: no such file" >&2; exit 226
	fi
	dst=$N${src#/dev}
	mkdir -p "$(dirname "$dst")"
	if [ -d "$src" ]; then mkdir -p "$dst"; mount --rbind "$src" "$dst"
	else : >"$dst"; mount --bind "$src" "$dst"; fi
done
shift
mount -o remount,bind,ro,nosuid,noexec "$N"
mount --move "$N" /dev
exec "$@"
SH
mkdir "$R/newdev"
privdev() { unshare -m --propagation private sh "$R/privdev.sh" "$R/newdev" "$@"; }
# what the job sees in /dev: nothing but the pseudo devices and the bound nodes
privdev "${BINDS[@]}" -- ls -A /dev >"$R/privdev.ls" || fail "privdev: ls /dev"
want=(fd full log mqueue null ptmx pts random shm stderr stdin stdout tty urandom zero)
for b in "${BINDS[@]}"; do b=${b#-}; [ -e "$b" ] && want+=("${b#/dev/}"); done
extra=$(printf '%s\n' "${want[@]}" | grep -vxF -f - "$R/privdev.ls" || true)
[ -z "$extra" ] || fail "the private /dev has more than the pseudo devices and the bound nodes: $extra"
grep -qx fuse "$R/privdev.ls" || fail "the private /dev has no fuse"
BACKEND=$(json "$STATUS_RUN1" scrub.device.backend)
rm -rf "$SVC/p-0042/results/$JOB"
rc=0; run_unit "$R/run-privdev.log" "$BSET" unshare -m --propagation private \
	sh "$R/privdev.sh" "$R/newdev" "${BINDS[@]}" -- || rc=$?
[ "$rc" = 0 ] || { cat "$R/run-privdev.log"; fail "gpurun under PrivateDevices= + BindPaths=: exit $rc"; }
[ "$(json "$STATUS" exit)" = 0 ] || fail "PrivateDevices: status: $(cat "$STATUS")"
[ -s "$SVC/p-0042/results/$JOB/output.txt" ] || fail "PrivateDevices: no output through the mount"
[ "$(json "$STATUS" scrub.device.backend)" = "$BACKEND" ] ||
	fail "PrivateDevices: backend $(json "$STATUS" scrub.device.backend), with the host's /dev $BACKEND"
ok "PrivateDevices=yes + BindPaths= ($(tr '\n' ' ' <"$R/privdev.ls")in /dev): exit 0, result written, backend $BACKEND as with the host's /dev"
# without /dev/fuse bound, phifs cannot mount and the job fails
nofuse=()
for b in "${BINDS[@]}"; do [ "$b" = /dev/fuse ] || nofuse+=("$b"); done
rc=0; run_unit "$R/run-nofuse.log" "$BSET" unshare -m --propagation private \
	sh "$R/privdev.sh" "$R/newdev" "${nofuse[@]}" -- || rc=$?
[ "$rc" != 0 ] || fail "gpurun succeeded under PrivateDevices= without /dev/fuse bound"
# libfuse's words for a missing /dev/fuse, from phifs
grep -qF "fuse: device not found" "$R/run-nofuse.log" ||
	{ cat "$R/run-nofuse.log"; fail "without /dev/fuse: not the missing device that failed it"; }
ok "PrivateDevices=yes without /dev/fuse bound: exit $rc ($(grep -m1 -F 'fuse: device not found' "$R/run-nofuse.log"))"

# ---- gpurun-systemd: spoold's runner, with a systemctl whose start --wait runs the unit
mkdir -p "$R/fake"
cat >"$R/fake/systemctl" <<EOF
#!/bin/bash
# a stand-in for systemctl: "start --wait gpurun@ID.service" runs the unit's ExecStart=
# as above; "stop" of an inactive unit is a no-op; every call is logged
echo "\$*" >>"$R/systemctl.log"
case "\$1 \$2" in
"start --wait") [ "\$3" = "gpurun@$JOB.service" ] || exit 5
	cd / && umask 0077 && exec env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="$CD" \
		setpriv --reuid=0 --regid=0 --groups="$PG" --inh-caps=-all --bounding-set="$(bset $CAPS)" \
		--no-new-privs $CMD >"$R/unit.log" 2>&1 ;;
"stop gpurun@$JOB.service") exit 0 ;;
*) exit 1 ;;
esac
EOF
chmod 755 "$R/fake/systemctl"
mkdir -p "$R/journal"
rm -rf "$SVC/p-0042/results"
rc=0
env PATH="$R/fake:/usr/bin:/bin" GPURUN_STATUS_DIR="$R/run/gpurun-status" \
	SPOOLD_STATUS_FILE="$R/journal/spoold-$JOB.1.status.json" "$BIN/gpurun-systemd" \
	"$R/var/spool/phifs/active/$JOB.json" >"$R/wrapper.log" 2>&1 || rc=$?
[ "$rc" = 0 ] || { cat "$R/wrapper.log" "$R/unit.log"; fail "gpurun-systemd: exit $rc"; }
grep -qx "start --wait gpurun@$JOB.service" "$R/systemctl.log" || fail "gpurun-systemd did not start gpurun@$JOB.service"
[ "$(json "$R/journal/spoold-$JOB.1.status.json" exit)" = 0 ] || fail "status not handed to spoold"
[ ! -e "$STATUS" ] || fail "gpurun-systemd left the status in /run/gpurun-status"
[ -s "$out" ] || fail "no output after gpurun-systemd"
# a failing run: its exit code comes back (no documents: 5)
sed -i 's/"visit.txt"/"none.txt"/' "$CD/job"
rc=0
env PATH="$R/fake:/usr/bin:/bin" GPURUN_STATUS_DIR="$R/run/gpurun-status" \
	SPOOLD_STATUS_FILE="$R/journal/spoold-$JOB.2.status.json" "$BIN/gpurun-systemd" \
	"$R/var/spool/phifs/active/$JOB.json" >"$R/wrapper2.log" 2>&1 || rc=$?
[ "$rc" = 5 ] || { cat "$R/wrapper2.log" "$R/unit.log"; fail "gpurun-systemd: exit $rc for a job without documents, want 5"; }
[ "$(json "$R/journal/spoold-$JOB.2.status.json" exit)" = 5 ] || fail "failed run's status not handed over"
! "$BIN/gpurun-systemd" "$R/var/spool/phifs/active/../x;y.json" 2>/dev/null || fail "gpurun-systemd took a bad job id"
ok "gpurun-systemd: starts gpurun@$JOB.service, hands status and exit code (0, then 5) to spoold"
echo "test-gpurun-unit: all passed"
