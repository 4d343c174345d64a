#!/usr/bin/env bash
# test-units.sh: the installed units pass `systemd-analyze verify` (with the installed
# binaries) and stay under their exposure thresholds (`systemd-analyze security
# --offline=yes`); sysusers.d and tmpfiles.d create the users, groups and directories on a
# temporary root. No systemd PID 1 needed. Scores: docs/systemd.md.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
T=$(mktemp -d /tmp/phi-test-units.XXXXXX)
trap 'rm -rf "$T"' EXIT

D=$T/dest
install_tree "$D"
for u in phifs@.service phifs-auditd.service spoold.service gpurun@.service; do
	[ -f "$D$PREFIX/lib/systemd/system/$u" ] || fail "$u not installed under $PREFIX/lib/systemd/system"
done
for b in phifs phifs-auditd spoold spoolctl phifs-key phifs-grant phifs-audit; do
	[ -x "$D$PREFIX/bin/$b" ] || fail "$b not installed"
done
# gpurun (the job runner) must be installed: gpurun@ is verified against it
for b in gpurun gpurun-systemd; do [ -x "$D$PREFIX/bin/$b" ] || fail "$b not installed"; done
[ -f "$D$PREFIX/share/polkit-1/rules.d/50-phi-spoold.rules" ] || fail "polkit rule not installed"
# the polkit rule lets spoold start and stop gpurun@ instances only
grep -q 'subject.user != "spoold"' "$D$PREFIX/share/polkit-1/rules.d/50-phi-spoold.rules" || fail "polkit rule: not scoped to spoold"
grep -q '/^gpurun@' "$D$PREFIX/share/polkit-1/rules.d/50-phi-spoold.rules" || fail "polkit rule: not scoped to gpurun@"

U=$T/units
units_for_verify "$D" "$U"
cd "$U"
set -- ./phifs-auditd.service ./spoold.service ./phifs@job1.service ./gpurun@job1.service
# man pages of the Documentation= lines are looked up in the installed tree
MANPATH=$D$PREFIX/share/man systemd-analyze verify "$@" >"$T/verify.log" 2>&1 ||
	{ cat "$T/verify.log"; fail "systemd-analyze verify"; }
[ ! -s "$T/verify.log" ] || { cat "$T/verify.log"; fail "systemd-analyze verify printed warnings"; }
ok "systemd-analyze verify: ${*#./}"
# the check has teeth: a missing binary fails it
sed "s|$D$PREFIX/bin/spoold|$D$PREFIX/bin/no-such-spoold|" spoold.service >"$T/spoold.service"
if MANPATH=$D$PREFIX/share/man systemd-analyze verify "$T/spoold.service" >/dev/null 2>&1; then
	fail "verify accepted a unit whose ExecStart= does not exist"
fi
ok "verify refuses a missing ExecStart= binary"

# exposure: threshold on the 0-100 scale (1.4 shown = 14); docs/systemd.md has the scores
check_exposure() { # UNIT THRESHOLD
	local out score
	out=$(systemd-analyze security --offline=yes --threshold="$2" "./$1" 2>&1) ||
		{ echo "$out" | grep -E '✗|Overall' >&2; fail "$1: exposure over $2/100"; }
	score=$(echo "$out" | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
	[ -n "$score" ] || fail "$1: no exposure level in the output"
	ok "$1 exposure $score (threshold $2/100)"
}
check_exposure spoold.service 14
check_exposure gpurun@job1.service 20
check_exposure phifs-auditd.service 5
check_exposure phifs@job1.service 39
# the thresholds bite: an unhardened unit is far over them
printf '[Service]\nExecStart=%s\n' "$D$PREFIX/bin/spoold" >"$T/bare.service"
if systemd-analyze security --offline=yes --threshold=37 "$T/bare.service" >/dev/null 2>&1; then
	fail "an unhardened unit passed --threshold=37"
fi
ok "an unhardened unit fails the thresholds"
# phifs@ must not get a private mount namespace (its mount would be invisible to the host)
for opt in ProtectSystem ProtectHome PrivateTmp PrivateDevices PrivateMounts ProtectKernelTunables \
	ProtectKernelModules ProtectKernelLogs ProtectControlGroups ProtectProc ProcSubset \
	ReadWritePaths ReadOnlyPaths InaccessiblePaths TemporaryFileSystem BindPaths RootDirectory \
	MountAPIVFS PrivateUsers; do
	! grep -q "^$opt=" phifs@.service || fail "phifs@.service sets $opt= (mount namespace)"
done
ok "phifs@.service has no option that needs a mount namespace"
# gpurun@ runs as root: nothing the user spoold writes may become its environment (an
# EnvironmentFile= under /run/gpurun-status could set LD_PRELOAD); spoold's slots and attempt
# name come in the credential run, which gpurun parses (docs/systemd.md, "The runtime file")
for opt in EnvironmentFile PassEnvironment; do
	! grep -q "^$opt=" gpurun@.service || fail "gpurun@.service sets $opt="
done
grep -q '^LoadCredential=run:/run/gpurun-status/%i.run$' gpurun@.service || fail "gpurun@: no credential run"
grep -q '^ExecStart=.* --runtime-file %d/run ' gpurun@.service || fail "gpurun@: ExecStart= without --runtime-file %d/run"
grep -q '^SetCredential=run:.' gpurun@.service || fail "gpurun@: no SetCredential=run: default for a missing file"
# the default cannot be empty: systemd 252 ignores an empty SetCredential= (and a missing
# runtime file would then fail the start), which verify reports
sed 's/^SetCredential=run:.*/SetCredential=run:/' gpurun@.service >"$T/gpurun@.service"
MANPATH=$D$PREFIX/share/man systemd-analyze verify "$T/gpurun@job1.service" >"$T/verify-empty.log" 2>&1 || true
grep -q "SetCredential=run:.*Invalid syntax\|Invalid syntax, ignoring: run:" "$T/verify-empty.log" ||
	{ cat "$T/verify-empty.log"; fail "verify took an empty SetCredential=run: (the comment default would not be needed)"; }
ok "gpurun@.service: no EnvironmentFile= or PassEnvironment=; the runtime file as credential run, with a non-empty default"

# sysusers.d + tmpfiles.d on a temporary root
R=$T/root
mkdir -p "$R/etc"
cp -a "$D/." "$R/"
systemd-sysusers --root="$R" >"$T/sysusers.log" 2>&1 || { cat "$T/sysusers.log"; fail "systemd-sysusers"; }
for u in phifs phifs-auditd spoold gpurun; do
	grep -q "^$u:x:[0-9]*:[0-9]*:.*:/usr/sbin/nologin$" "$R/etc/passwd" || fail "no system user $u"
done
for g in phi-admins phi-auditors; do
	grep -q "^$g:x:[0-9]*:" "$R/etc/group" || fail "no group $g"
done
grep -q "^phi-admins:x:[0-9]*:spoold$" "$R/etc/group" || fail "spoold is not in phi-admins (it reads admins' 0640 job files)"
ok "sysusers: users phifs phifs-auditd spoold gpurun, groups phi-admins (with spoold) phi-auditors"
systemd-tmpfiles --create --root="$R" >"$T/tmpfiles.log" 2>&1 || { cat "$T/tmpfiles.log"; fail "systemd-tmpfiles"; }
uid() { [ "$1" = root ] && { echo 0; return; }; awk -F: -v n="$1" '$1 == n { print $3 }' "$R/etc/passwd"; }
gid() { [ "$1" = root ] && { echo 0; return; }; awk -F: -v n="$1" '$1 == n { print $3 }' "$R/etc/group"; }
expect_dir() { # PATH MODE USER GROUP
	local got want
	got=$(stat -c '%a %u %g' "$R$1" 2>/dev/null) || fail "$1 not created"
	want="$2 $(uid "$3") $(gid "$4")"
	[ "$got" = "$want" ] || fail "$1: mode/uid/gid $got, want $want ($2 $3 $4)"
}
expect_dir /var/spool/phifs 2750 spoold phi-admins
expect_dir /var/spool/phifs/incoming 2770 spoold phi-admins
expect_dir /var/spool/phifs/tmp 2770 spoold phi-admins
expect_dir /var/spool/phifs/ctl 2770 spoold phi-admins
expect_dir /var/log/phifs-audit 2750 phifs-auditd phi-auditors
expect_dir /var/lib/phifs-audit/export 2750 phifs-auditd phi-auditors
expect_dir /run/phifs-audit 2750 phifs-auditd phifs
expect_dir /var/lib/phifs 700 phifs phifs
expect_dir /var/cache/phifs 750 root gpurun
ok "tmpfiles: spool, audit log, socket, store and cache directories with owner and mode"
echo "test-units: all passed"
