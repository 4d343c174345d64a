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
#     unit boundary, with a stand-in systemctl whose "start --wait" runs the ExecStart= above;
#   - the runtime file (credential "run": LoadCredential=, with the SetCredential= default
#     when the file is missing): without one gpurun has no slot and no attempt name; the GPU
#     slots and attempt name of spoold's environment reach gpurun under the unit (its status
#     and record), through gpurun-systemd and through a real spoold (local backend) whose
#     runner it is; a runtime file with another key (LD_PRELOAD=), a bad slot or name, or a
#     symlink to the master key is refused (exit 2, nothing run, no value echoed), and such
#     an environment is refused by gpurun-systemd before it starts the unit.
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
grep -q "^LoadCredential=run:/run/gpurun-status/%i.run$" "$UNIT" || fail "gpurun@: runtime file credential line"
# the default when the file is missing (systemd.exec(5): SetCredential= with C escapes; an
# empty value is refused by systemd 252, hence a comment line)
RUN_DEFAULT=$(sed -n 's/^SetCredential=run://p' "$UNIT")
[ -n "$RUN_DEFAULT" ] || fail "gpurun@: no SetCredential=run: default (a missing runtime file would fail the start)"
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
# ExecStart= rerooted, with %d and %i left for each instance
CMD_T=$(prop ExecStart | sed -e "s|$PREFIX/|$P/|g; s| /run/| $R/run/|g")
CMD=$(echo "$CMD_T" | sed -e "s|%d|$CD|g; s|%i|$JOB|g")
echo "$CMD" | grep -qF -- "--runtime-file $CD/run " || fail "gpurun@: ExecStart= does not pass the credential run"
STATUS=$R/run/gpurun-status/$JOB.json
RUNFILE=$R/run/gpurun-status/$JOB.run
# load_run_cred CREDDIR RUNFILE: what systemd does at the start: LoadCredential=run: (it
# follows a symlink), else the SetCredential=run: default with its C escapes undone
load_run_cred() {
	rm -f "$1/run"
	if [ -e "$2" ]; then install -m 0400 "$2" "$1/run"
	else printf '%b' "$RUN_DEFAULT" >"$1/run" && chmod 0400 "$1/run"; fi
}
load_run_cred "$CD" "$RUNFILE"
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
# it had no runtime file: the unit's default means no slot (CUDA_VISIBLE_DEVICES stays
# unset) and no attempt name
[ "$(json "$STATUS" attempt)" = "" ] && [ "$(json "$STATUS" cuda_visible_devices)" = None ] ||
	fail "without a runtime file: status attempt/cuda_visible_devices: $(cat "$STATUS")"
ok "without a runtime file (the SetCredential= default): no attempt name, CUDA_VISIBLE_DEVICES unset"

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

# 7. a runtime file the user spoold wrote itself (it can: /run/gpurun-status is 2770
# root:spoold): two keys with checked values, or gpurun stops before anything runs
SPU=$(uid spoold) SPG=$(gid spoold)
as_spoold() { setpriv --reuid="$SPU" --regid="$SPG" --clear-groups "$@"; }
hostile() { # NAME WHAT CONTENT: that file, loaded as the unit would, must be refused
	local log=$R/run-hostile-$1.log rc=0
	rm -f "$RUNFILE"
	printf '%s' "$3" | as_spoold sh -c "cat >'$RUNFILE'" || fail "the user spoold cannot write $RUNFILE"
	load_run_cred "$CD" "$RUNFILE"
	rm -f "$RUNFILE"
	run_unit "$log" "$BSET" || rc=$?
	[ "$rc" = 2 ] || { cat "$log"; fail "runtime file with $2: exit $rc, want 2"; }
	# one line, gpurun's, naming the line and the problem, never the value
	[ "$(wc -l <"$log")" = 1 ] && grep -q "^gpurun: runtime file: line [0-9]*: " "$log" ||
		{ cat "$log"; fail "runtime file with $2: not one runtime file error line"; }
	! grep -qE 'LD_PRELOAD|evil|\.\./|;' "$log" || { cat "$log"; fail "runtime file with $2: the value is echoed"; }
	[ ! -e "$STATUS" ] || fail "runtime file with $2: a status was written (gpurun ran)"
	[ -z "$(ls -A "$R/run/gpurun")" ] || fail "runtime file with $2: a mount point was made"
	ok "runtime file with $2: refused, exit 2 ($(sed 's/^gpurun: runtime file: //' "$log"))"
}
hostile ldpreload "an extra key LD_PRELOAD=" "attempt=spoold-job-0001.1
LD_PRELOAD=$R/evil.so
"
hostile envname "the variable's name CUDA_VISIBLE_DEVICES=" "CUDA_VISIBLE_DEVICES=0
"
hostile slotsep "a slot list with ';'" "cuda_visible_devices=0;1
"
hostile slotrepeat "a slot twice, once as 01" "cuda_visible_devices=1,01
"
hostile slotrange "slot 1024" "cuda_visible_devices=1024
"
hostile name "an attempt name with ../" "attempt=../../etc/x
"
hostile twice "attempt given twice" "attempt=spoold-job-0001.1
attempt=spoold-job-0001.2
"
# systemd reads LoadCredential= as root and follows a symlink: one to the master key (64 hex
# digits) is refused without a digit of it in the log
rm -f "$RUNFILE"
as_spoold ln -s "$R/root.key" "$RUNFILE" || fail "the user spoold cannot make a symlink in /run/gpurun-status"
load_run_cred "$CD" "$RUNFILE"
rm -f "$RUNFILE"
rc=0; run_unit "$R/run-hostile-link.log" "$BSET" || rc=$?
[ "$rc" = 2 ] || { cat "$R/run-hostile-link.log"; fail "runtime file linked to the master key: exit $rc, want 2"; }
! grep -qiF "$(head -c 8 "$R/root.key")" "$R/run-hostile-link.log" || fail "master key digits in gpurun's log"
ok "runtime file linked to the master key: refused, exit 2 ($(sed 's/^gpurun: runtime file: //' "$R/run-hostile-link.log")), no key digits in the log"
load_run_cred "$CD" "$RUNFILE" # the default again

# ---- gpurun-systemd: spoold's runner, with a systemctl whose start --wait runs the unit
mkdir -p "$R/fake"
cat >"$R/fake/systemctl" <<EOF
#!/bin/bash
# a stand-in for systemctl: "start --wait gpurun@ID.service" loads the credentials as the
# unit's lines say (job, run with its SetCredential= default, the master key decrypted
# above) and runs the unit's ExecStart= as above; "show" gives the last start's
# ExecMainCode (1: exited) and ExecMainStatus; "stop" of an inactive unit is a no-op; every
# call is logged. The runtime file found at the start is kept as $R/seen.run; $R/swap.run,
# if present, replaces it first (the user spoold racing its own runner).
echo "\$*" >>"$R/systemctl.log"
case "\$1 \$2" in
"start --wait")
	id=\${3#gpurun@}; id=\${id%.service}
	case \$id in job-[0-9][0-9][0-9][0-9]) ;; *) exit 5 ;; esac
	cd=$R/run/credentials/gpurun@\$id.service rf=$R/run/gpurun-status/\$id.run
	install -d -m 0700 "\$cd"
	install -m 0400 "$R/var/spool/phifs/active/\$id.json" "\$cd/job" || exit 1
	install -m 0400 "$CD/phifs-master-key" "\$cd/phifs-master-key"
	rm -f "$R/seen.run"; [ -e "\$rf" ] && cp -p "\$rf" "$R/seen.run"
	[ -f "$R/swap.run" ] && cp "$R/swap.run" "\$rf"
	rm -f "\$cd/run"
	if [ -e "\$rf" ]; then install -m 0400 "\$rf" "\$cd/run"
	else printf '%b' '$RUN_DEFAULT' >"\$cd/run"; fi
	cmd=\$(echo '$CMD_T' | sed -e "s|%d|\$cd|g; s|%i|\$id|g")
	rc=0
	(cd / && umask 0077 && exec env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="\$cd" \
		\${ASAN_OPTIONS:+ASAN_OPTIONS="\$ASAN_OPTIONS"} \${UBSAN_OPTIONS:+UBSAN_OPTIONS="\$UBSAN_OPTIONS"} \
		setpriv --reuid=0 --regid=0 --groups="$PG" --inh-caps=-all --bounding-set="$BSET" \
		--no-new-privs \$cmd) >"$R/unit.log" 2>&1 || rc=\$?
	echo "\$rc" >"$R/unit.rc"
	exit "\$rc" ;;
"show -p") echo 1; cat "$R/unit.rc" ;;
"stop gpurun@"*) exit 0 ;;
*) exit 1 ;;
esac
EOF
chmod 755 "$R/fake/systemctl"
mkdir -p "$R/journal"
rm -rf "$SVC/p-0042/results"
# wrapper LOG [VAR=VALUE...]: gpurun-systemd for job-0001 in spoold's environment plus VARs
wrapper() {
	local log=$1
	shift
	env -i PATH="$R/fake:/usr/bin:/bin" GPURUN_STATUS_DIR="$R/run/gpurun-status" \
		${ASAN_OPTIONS:+ASAN_OPTIONS="$ASAN_OPTIONS"} ${UBSAN_OPTIONS:+UBSAN_OPTIONS="$UBSAN_OPTIONS"} \
		"$@" "$BIN/gpurun-systemd" "$R/var/spool/phifs/active/$JOB.json" >"$log" 2>&1
}
# spoold's variables (a one-GPU job on slot 0, its first attempt) cross into the unit
rc=0
wrapper "$R/wrapper.log" SPOOLD_STATUS_FILE="$R/journal/spoold-$JOB.1.status.json" \
	CUDA_VISIBLE_DEVICES=0 SPOOLD_NAME="spoold-$JOB.1" SPOOLD_GRANT=g-1 SPOOLD_JOB_FILE=x || rc=$?
[ "$rc" = 0 ] || { cat "$R/wrapper.log" "$R/unit.log"; fail "gpurun-systemd: exit $rc"; }
grep -qx "start --wait gpurun@$JOB.service" "$R/systemctl.log" || fail "gpurun-systemd did not start gpurun@$JOB.service"
ST1=$R/journal/spoold-$JOB.1.status.json
[ "$(json "$ST1" exit)" = 0 ] || fail "status not handed to spoold"
[ ! -e "$STATUS" ] || fail "gpurun-systemd left the status in /run/gpurun-status"
[ -s "$out" ] || fail "no output after gpurun-systemd"
# the file as the unit found it: the two keys and nothing else, 0640 (group spoold here
# through the setgid directory), gone after the run
printf 'cuda_visible_devices=0\nattempt=spoold-%s.1\n' "$JOB" | cmp -s - "$R/seen.run" ||
	{ cat "$R/seen.run"; fail "the runtime file gpurun-systemd wrote"; }
[ "$(stat -c %a "$R/seen.run")" = 640 ] || fail "runtime file mode $(stat -c %a "$R/seen.run"), want 640"
[ ! -e "$RUNFILE" ] && [ ! -e "$RUNFILE.tmp" ] || fail "gpurun-systemd left the runtime file"
# ... and what gpurun did with it: its status and its record name the attempt, and it ran
# with CUDA_VISIBLE_DEVICES=0 (on the backend it has with the host's GPUs: slot 0 is one)
[ "$(json "$ST1" attempt)" = "spoold-$JOB.1" ] || fail "status attempt: $(json "$ST1" attempt)"
[ "$(json "$ST1" cuda_visible_devices)" = 0 ] || fail "status cuda_visible_devices: $(json "$ST1" cuda_visible_devices)"
[ "$(json "$ST1" scrub.device.backend)" = "$BACKEND" ] || fail "slot 0: backend $(json "$ST1" scrub.device.backend), want $BACKEND"
[ "$(json "$SVC/p-0042/results/$JOB/record.json" attempt)" = "spoold-$JOB.1" ] || fail "record attempt"
ok "gpurun-systemd: CUDA_VISIBLE_DEVICES=0 and SPOOLD_NAME reach gpurun under the unit as the runtime file (status and record: attempt spoold-$JOB.1, cuda_visible_devices 0, backend $BACKEND); the file is removed after"
# a failing run: its exit code comes back (no documents: 5); a job of no GPU (slots "")
# runs on the CPU even where CUDA works
sed -i 's/"visit.txt"/"none.txt"/' "$R/var/spool/phifs/active/$JOB.json"
rc=0
wrapper "$R/wrapper2.log" SPOOLD_STATUS_FILE="$R/journal/spoold-$JOB.2.status.json" \
	CUDA_VISIBLE_DEVICES= SPOOLD_NAME="spoold-$JOB.2" || rc=$?
[ "$rc" = 5 ] || { cat "$R/wrapper2.log" "$R/unit.log"; fail "gpurun-systemd: exit $rc for a job without documents, want 5"; }
ST2=$R/journal/spoold-$JOB.2.status.json
[ "$(json "$ST2" exit)" = 5 ] || fail "failed run's status not handed over"
[ "$(json "$ST2" attempt)" = "spoold-$JOB.2" ] && [ "$(json "$ST2" cuda_visible_devices)" = "" ] ||
	fail "no-GPU run: status attempt/cuda_visible_devices: $(cat "$ST2")"
[ "$(json "$ST2" scrub.device.backend)" = cpu ] || fail "no GPU slot: backend $(json "$ST2" scrub.device.backend)"
! "$BIN/gpurun-systemd" "$R/var/spool/phifs/active/../x;y.json" 2>/dev/null || fail "gpurun-systemd took a bad job id"
ok "gpurun-systemd: hands status and exit code (0, then 5) to spoold; CUDA_VISIBLE_DEVICES= (no GPU) arrives empty: backend cpu"
# the user spoold swaps a hostile file in before the start: gpurun refuses it, leaves no
# status, and gpurun-systemd passes its exit code (2) on from the unit's main process
printf 'attempt=spoold-%s.3\nLD_PRELOAD=%s/evil.so\n' "$JOB" "$R" >"$R/swap.run"
rc=0
wrapper "$R/wrapper3.log" SPOOLD_STATUS_FILE="$R/journal/spoold-$JOB.3.status.json" \
	CUDA_VISIBLE_DEVICES=0 SPOOLD_NAME="spoold-$JOB.3" || rc=$?
rm -f "$R/swap.run"
[ "$rc" = 2 ] || { cat "$R/wrapper3.log" "$R/unit.log"; fail "swapped hostile runtime file: gpurun-systemd exit $rc, want 2"; }
grep -q "^gpurun: runtime file: line 2: unknown key" "$R/unit.log" || { cat "$R/unit.log"; fail "swapped runtime file: not refused by gpurun"; }
[ ! -e "$R/journal/spoold-$JOB.3.status.json" ] && [ ! -e "$RUNFILE" ] || fail "swapped runtime file: status or runtime file left"
ok "a runtime file swapped in by the user spoold (LD_PRELOAD=): gpurun refuses it, gpurun-systemd exits 2"
# an environment spoold would not make never reaches the unit: no start, no file
starts=$(grep -c "^start" "$R/systemctl.log")
for bad in "SPOOLD_NAME=spoold-$JOB.4
LD_PRELOAD=$R/evil.so" "SPOOLD_NAME=../x" "CUDA_VISIBLE_DEVICES=0;id" "CUDA_VISIBLE_DEVICES=0,,1" \
	"CUDA_VISIBLE_DEVICES=GPU-0a1b"; do
	rc=0
	wrapper "$R/wrapper4.log" "$bad" || rc=$?
	[ "$rc" = 2 ] || { cat "$R/wrapper4.log"; fail "gpurun-systemd with ${bad%%$'\n'*}...: exit $rc, want 2"; }
	grep -q "^gpurun-systemd: .* is not" "$R/wrapper4.log" || { cat "$R/wrapper4.log"; fail "gpurun-systemd: no reason given"; }
done
[ "$(grep -c "^start" "$R/systemctl.log")" = "$starts" ] || fail "gpurun-systemd started the unit with a bad environment"
[ ! -e "$RUNFILE" ] || fail "gpurun-systemd wrote a runtime file for a bad environment"
ok "gpurun-systemd refuses (exit 2, unit not started) SPOOLD_NAME with a newline + LD_PRELOAD= or ../, and slot lists with ';', ',,' or a UUID"

# ---- spoold itself (local backend) with gpurun-systemd as its runner: the slots it assigns
# and its attempt name reach gpurun under the unit. A two-GPU job (medium tier) on
# gpu_slots 2,3 (slots no job here would otherwise use; a GPU host may not have them,
# so the backend is not checked).
sed -i 's/"none.txt"/"visit.txt"/' "$R/var/spool/phifs/active/$JOB.json"
mv "$R/var/spool/phifs/active/$JOB.json" "$R/job-0001.json" # not spoold's: it has no journal for it
SP=$R/var/spool/phifs
cat >"$R/spoold.conf" <<EOF
spool_dir = $SP
admin_group = root
runner = $BIN/gpurun-systemd
gpu_slots = 2,3
max_instances = 1
tick_ms = 100
metrics_file = $R/metrics.prom
EOF
env -i PATH="$R/fake:/usr/bin:/bin" GPURUN_STATUS_DIR="$R/run/gpurun-status" \
	${ASAN_OPTIONS:+ASAN_OPTIONS="$ASAN_OPTIONS"} ${UBSAN_OPTIONS:+UBSAN_OPTIONS="$UBSAN_OPTIONS"} \
	"$BIN/spoold" --config "$R/spoold.conf" >"$R/spoold.log" 2>&1 &
SPID=$!
PIDS+=("$SPID")
J2=job-0002
cat >"$SP/tmp/.$J2" <<'J'
{"version": 1, "id": "job-0002", "patient": "p-0042", "documents": ["visit.txt"],
 "task": "summarize", "model": "stories260K.gguf", "max_tokens": 32,
 "estimated_tokens": 20000, "requested_by": "dr.who", "purpose": "treatment"}
J
mv "$SP/tmp/.$J2" "$SP/incoming/$J2.json"
RES=$SP/done/$J2.result.json
for _ in $(seq 1200); do
	[ -e "$RES" ] || [ -e "$SP/failed/$J2.result.json" ] && break
	kill -0 "$SPID" 2>/dev/null || break
	sleep 0.1
done
kill -TERM "$SPID" 2>/dev/null && wait "$SPID" 2>/dev/null
[ -e "$RES" ] || { cat "$R/spoold.log" "$SP/failed/$J2.result.json" "$SP/journal/"*.log "$R/unit.log" 2>/dev/null; fail "spoold: $J2 not done"; }
NAME=$(json "$RES" backend_id) SLOTS=$(json "$RES" slots)
ST=$SP/journal/$NAME.status.json
[ "$NAME" = "spoold-$J2.1" ] && [ "$(json "$RES" gpus)" = 2 ] || fail "spoold's record: attempt $NAME, gpus $(json "$RES" gpus)"
case $SLOTS in 2,3 | 3,2) ;; *) fail "spoold's record: slots $SLOTS, want 2 and 3" ;; esac
[ "$(json "$ST" attempt)" = "$NAME" ] || fail "gpurun's status under the unit: attempt $(json "$ST" attempt), spoold's $NAME"
[ "$(json "$ST" cuda_visible_devices)" = "$SLOTS" ] ||
	fail "gpurun's status under the unit: cuda_visible_devices $(json "$ST" cuda_visible_devices), spoold's slots $SLOTS"
[ "$(json "$SVC/p-0042/results/$J2/record.json" attempt)" = "$NAME" ] || fail "$J2's record: attempt"
[ "$(json "$RES" tokens_in)" -gt 0 ] || fail "spoold did not get gpurun's token counts"
[ ! -e "$R/run/gpurun-status/$J2.run" ] || fail "runtime file of $J2 left"
ok "spoold (local, gpu_slots 2,3) -> gpurun-systemd -> gpurun@$J2: gpurun ran as attempt $NAME with CUDA_VISIBLE_DEVICES=$SLOTS, spoold's own record's slots, and spoold got its status"
echo "test-gpurun-unit: all passed"
