#!/usr/bin/env bash
# test-deploy.sh: the README's "Deploy on a systemd host", step by step, on a temporary
# root R (meson install --destdir R; every absolute path of a step is taken under R).
# There is no systemd PID 1 here, so:
#   - step 1: systemd-sysusers/systemd-tmpfiles run with --root=R;
#   - step 2: systemd-creds uses R's host key ($SYSTEMD_CREDENTIAL_SECRET at
#     R/var/lib/systemd/credential.secret), not this machine's;
#   - step 3: "systemctl enable --now" is replaced by running each unit's own ExecStart=
#     (read from the installed unit) as its User= with its credential decrypted by
#     systemd-creds the way LoadCredentialEncrypted= does;
#   - steps 4-5: "systemd-run -p User=phifs -p LoadCredentialEncrypted=" likewise;
#   - step 6: spoold's runner is the installed gpurun-systemd, whose "systemctl start --wait
#     gpurun@ID.service" goes to a stand-in for PID 1 (pid1_standin below): a root process
#     that asks the installed polkit rule (evaluated by polkit-eval.js, as polkitd would)
#     whether the caller may, loads the unit's credentials (LoadCredential=,
#     LoadCredentialEncrypted= with systemd-creds, the SetCredential= default) and runs its
#     ExecStart= as root under its CapabilityBoundingSet=, NoNewPrivileges=,
#     SupplementaryGroups= and UMask=. The real gpurun then runs the job with stories260K;
#   - the users exist only in R/etc/passwd: processes get their numeric ids, and where a
#     name must resolve on this host (phifs -o run_as, grants) nobody stands in for phifs,
#     daemon for the provider dr.who, sys for gpurun (job_user), and spoold's admin_group is
#     root's group.
# Runs as root (a real FUSE mount). Skips (77) without ../shared/models/stories260K-q8_0.gguf.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
README=$here/../../README.md
MODEL=
for m in "$here/../../../shared/models" /work/shared/models; do
	[ -f "$m/stories260K-q8_0.gguf" ] && { MODEL=$m/stories260K-q8_0.gguf; break; }
done
[ -n "$MODEL" ] || { echo "SKIP: no stories260K-q8_0.gguf under ../shared/models (step 6 runs a real job)"; exit 77; }
for u in nobody daemon sys; do getent passwd $u >/dev/null || fail "no user $u on this host (a stand-in)"; done
command -v node >/dev/null || fail "no node (polkit-eval.js evaluates the polkit rule)"
temp_root deploy
MOUNTS=("$R/srv/phi/clinic")

sect=$(sed -n '/^## Deploy on a systemd host/,/^## /p' "$README")
for s in "1. **Install**" "2. **Create the master key as an encrypted credential**" "3. **Enable the units**" \
	"4. **Add the first patient**" "5. **Grant a provider**" "6. **Drop the first job**" "7. **Read the audit report**"; do
	grep -qF "$s" <<<"$sect" || fail "README deployment section lacks step '$s'"
done
ok "README: the seven deployment steps"

# ---- 1. Install
install_tree "$R"
mkdir -p "$R/etc"
systemd-sysusers --root="$R" >/dev/null 2>&1 || fail "systemd-sysusers"
systemd-tmpfiles --create --root="$R" >/dev/null 2>&1 || fail "systemd-tmpfiles"
install -D -m 0644 "$P/share/doc/phi/examples/spoold.conf" "$P/etc/phifs/spoold.conf"
install -D -m 0644 "$P/share/doc/phi/examples/gpurun.conf" "$P/etc/phifs/gpurun.conf"
mkdir -p "$R/etc/polkit-1/rules.d"
ln -s "$PREFIX/share/polkit-1/rules.d/50-phi-spoold.rules" "$R/etc/polkit-1/rules.d/"
grep -q 'install -D -m 0644 /usr/local/share/doc/phi/examples/gpurun.conf' <<<"$sect" ||
	fail "README step 1 does not install gpurun.conf"
uid() { awk -F: -v n="$1" '$1 == n { print $3 }' "$R/etc/passwd"; }
gid() { awk -F: -v n="$1" '$1 == n { print $3 }' "$R/etc/group"; }
groups_of() { awk -F: -v n="$1" '{ split($4, m, ","); for (i in m) if (m[i] == n) print $3 }' "$R/etc/group" | paste -sd, -; }
for u in phifs phifs-auditd spoold gpurun; do [ -n "$(uid $u)" ] || fail "no user $u"; done
for b in phifs phifs-auditd spoold spoolctl phifs-key phifs-grant phifs-audit; do [ -x "$BIN/$b" ] || fail "$b"; done
[ -f "$P/share/man/man8/phifs.8" ] || fail "man pages not installed"
# nobody stands in for phifs on this host (see above)
chown nobody:nogroup "$R/var/lib/phifs"
ok "1. installed under $PREFIX, users and directories created"

# ---- 2. The master key as an encrypted credential
export SYSTEMD_CREDENTIAL_SECRET=$R/var/lib/systemd/credential.secret
mkdir -p "$R/var/lib/systemd"
# with the group phifs, as the user phifs has: it may connect to the audit socket
as_phifs() { setpriv --reuid=nobody --regid=nogroup --groups="$(gid phifs)" "$@"; }
install -d -m 0700 -o nobody -g nogroup "$R/run/phi-setup"
as_phifs "$BIN/phifs-key" --store "$R/var/lib/phifs/store" --key-file "$R/run/phi-setup/master.key" init >/dev/null ||
	fail "phifs-key init as phifs"
MK=$(od -An -tx1 "$R/run/phi-setup/master.key" | tr -d ' \n' | head -c 32)
systemd-creds encrypt --name=phifs-master-key "$R/run/phi-setup/master.key" \
	"$R/etc/credstore.encrypted/phifs-master-key" 2>/dev/null || fail "systemd-creds encrypt (master key)"
"$BIN/phifs-audit" keygen --out "$R/run/phi-setup" --name phi-audit/test >/dev/null || fail "keygen"
systemd-creds encrypt --name=phifs-audit-signing-key "$R/run/phi-setup/phifs-audit-signing-key" \
	"$R/etc/credstore.encrypted/phifs-audit-signing-key" 2>/dev/null || fail "systemd-creds encrypt (signing key)"
install -m 0644 "$R/run/phi-setup/phifs-audit.pub" "$P/etc/phifs/phifs-audit.pub"
shred -u "$R/run/phi-setup/master.key" "$R/run/phi-setup/phifs-audit-signing-key" && rm -r "$R/run/phi-setup"
[ "$(stat -c %U "$R/var/lib/phifs/store")" = nobody ] || fail "the store does not belong to phifs"
! od -An -tx1 "$R/etc/credstore.encrypted/phifs-master-key" | tr -d ' \n' | grep -q "$MK" ||
	fail "the credential holds the key in the clear"
! grep -rq "$(cut -c1-16 <<<"$MK")" "$R/etc" "$R/var/lib/phifs" || fail "plaintext key material left behind"
[ ! -e "$R/run/phi-setup" ] || fail "setup directory left"
ok "2. store created by phifs; master and signing keys only as encrypted credentials"

# ---- 3. Enable the units (no PID 1: start each ExecStart= as the unit says)
reroot() { sed -e "s|$PREFIX/|$P/|g; s| /var/| $R/var/|g; s| /run/| $R/run/|g; s|=/run/|=$R/run/|g"; }
exec_of() { sed -n 's/^ExecStart=//p' "$P/lib/systemd/system/$1" | reroot; }
cred() { # UNIT OWNER NAME: LoadCredentialEncrypted=NAME:/etc/credstore.encrypted/NAME
	local d=$R/run/credentials/$1
	install -d -m 0700 -o "$2" "$d"
	systemd-creds decrypt --name="$3" "$R/etc/credstore.encrypted/$3" "$d/$3" 2>/dev/null || fail "decrypt $3"
	chmod 0400 "$d/$3"
	chown "$2" "$d/$3"
	echo "$d"
}
grep -q "^LoadCredentialEncrypted=phifs-audit-signing-key:/etc/credstore.encrypted/phifs-audit-signing-key$" \
	"$P/lib/systemd/system/phifs-auditd.service" || fail "phifs-auditd.service: credential line"
AU=$(uid phifs-auditd)
CD=$(cred phifs-auditd.service "$AU" phifs-audit-signing-key)
# shellcheck disable=SC2046
(umask 0027; CREDENTIALS_DIRECTORY=$CD exec setpriv --reuid="$AU" --regid="$(gid phifs-auditd)" --clear-groups \
	$(exec_of phifs-auditd.service)) 2>"$R/auditd.log" &
PIDS+=($!)
waitfor "the audit socket" test -S "$R/run/phifs-audit/audit.sock"

MNT=$R/srv/phi/clinic
grep -q "^LoadCredentialEncrypted=phifs-master-key:/etc/credstore.encrypted/phifs-master-key$" \
	"$P/lib/systemd/system/phifs@.service" || fail "phifs@.service: credential line"
CD=$(cred phifs@clinic.service root phifs-master-key)
cmd=$(exec_of phifs@.service | sed -e 's/run_as=phifs/run_as=nobody/; s/ \$PHIFS_OPTS//' \
	-e "s|\${PHIFS_STORE}|$R/var/lib/phifs/store|; s|\${PHIFS_MOUNT}|$MNT|")
mkdir -p "$MNT"
# shellcheck disable=SC2086
# as the unit starts it: root limited to its CapabilityBoundingSet= (setpriv: the bounding set
# is what an exec'd root process keeps), NoNewPrivileges=, SupplementaryGroups=
ucaps=$(sed -n 's/^CapabilityBoundingSet=//p' "$P/lib/systemd/system/phifs@.service")
[ -n "$ucaps" ] || fail "phifs@.service: no CapabilityBoundingSet="
[ "$(sed -n 's/^SupplementaryGroups=//p' "$P/lib/systemd/system/phifs@.service")" = phifs ] ||
	fail "phifs@.service: SupplementaryGroups=phifs (the audit socket's group)"
bs=-all; for c in $ucaps; do c=${c,,}; bs+=",+${c#cap_}"; done
# shellcheck disable=SC2086
(umask 0077; CREDENTIALS_DIRECTORY=$CD exec setpriv --reuid=0 --regid=0 --groups="$(gid phifs)" \
	--inh-caps=-all --bounding-set="$bs" --no-new-privs $cmd) 2>"$R/phifs.log" &
FSPID=$!
PIDS+=($FSPID)
waitfor "the phifs@clinic mount" mountpoint -q "$MNT"
grep -q '^Uid:[[:space:]]*65534[[:space:]]65534[[:space:]]65534[[:space:]]65534$' "/proc/$FSPID/status" ||
	fail "phifs@clinic did not drop to phifs"
grep -q '^CapEff:[[:space:]]*0000000000000000$' "/proc/$FSPID/status" || fail "phifs@clinic kept capabilities"

SU=$(uid spoold)
# spoold's runner is the example's gpurun-systemd; its systemctl is the stand-in below
grep -q "^runner = .*/gpurun-systemd$" "$P/etc/phifs/spoold.conf" || fail "spoold.conf example: runner is not gpurun-systemd"
sed -i -e "s|^spool_dir = .*|spool_dir = $R/var/spool/phifs|" -e "s|^admin_group = .*|admin_group = 0|" \
	-e "s|^runner = $PREFIX/|runner = $P/|" -e "s|^metrics_file = .*|metrics_file = $R/var/lib/spoold/metrics.prom|" \
	"$P/etc/phifs/spoold.conf"
echo "tick_ms = 100" >>"$P/etc/phifs/spoold.conf"
# gpurun.conf rerooted; sys stands in for the job user gpurun (it owns the model's group)
sed -i -e "s|^store = .*|store = $R/var/lib/phifs/store|" -e "s|^audit_socket = .*|audit_socket = $R/run/phifs-audit/audit.sock|" \
	-e "s|^phifs = .*|phifs = $BIN/phifs|" -e "s|^phifs_user = .*|phifs_user = nobody|" \
	-e "s|^models_dir = .*|models_dir = $R/var/cache/phifs|" -e "s|^mount_dir = .*|mount_dir = $R/run/gpurun|" \
	-e "s|^job_user = .*|job_user = sys|" -e "s|^threads = .*|threads = 1|" "$P/etc/phifs/gpurun.conf"
chgrp sys "$R/var/cache/phifs"

# ---- the stand-in for PID 1 (and polkitd), serving the stand-in systemctl
# Requests are files R/pid1/*.req ("VERB UNIT"), created by the caller (their owner is the
# subject polkit is asked about); the answer is *.rc, systemctl's exit status.
install -d -m 0770 -o 0 -g "$(gid spoold)" "$R/pid1"
RULE=$R$(readlink "$R/etc/polkit-1/rules.d/50-phi-spoold.rules")
[ -f "$RULE" ] || fail "the polkit rule link of step 1 does not point at the installed rule"
polkit_says() { # USER UNIT VERB
	node "$here/polkit-eval.js" "$RULE" org.freedesktop.systemd1.manage-units "$1" unit="$2" verb="$3"
}
# unit_creds UNITFILE INSTANCE DIR: what systemd 252 puts in $CREDENTIALS_DIRECTORY
unit_creds() {
	local f=$1 i=$2 d=$3 line kind name path
	install -d -m 0700 "$d"
	while IFS= read -r line; do
		case $line in LoadCredential=* | LoadCredentialEncrypted=*) ;; *) continue ;; esac
		kind=${line%%=*} name=${line#*=}
		path=$R${name#*:} name=${name%%:*}
		path=${path//%i/$i}
		[ -e "$path" ] || continue
		if [ "$kind" = LoadCredentialEncrypted ]; then
			systemd-creds decrypt --name="$name" "$path" "$d/$name" 2>/dev/null || return 1
		else
			install -m 0400 "$path" "$d/$name" || return 1
		fi
	done <"$f"
	while IFS= read -r line; do # SetCredential=: the value when loading gave nothing
		case $line in SetCredential=*) ;; *) continue ;; esac
		name=${line#SetCredential=}
		[ -e "$d/${name%%:*}" ] || printf '%b' "${name#*:}" >"$d/${name%%:*}"
	done <"$f"
	for line in $(sed -n 's/^LoadCredential\(Encrypted\)*=\([^:]*\):.*/\2/p' "$f"); do
		[ -e "$d/$line" ] || { echo "credential $line: not found" >&2; return 1; }
	done
	chmod 0400 "$d"/*
}
# start_unit UNIT: ExecStart= of an instance as root with the unit's limits; its exit status
start_unit() {
	local unit=$1 tmpl=${1%%@*}@.service i=${1#*@} f cd bs c rc=0
	i=${i%.service} f=$P/lib/systemd/system/$tmpl cd=$R/run/credentials/$1
	[ -z "$(sed -n 's/^User=//p' "$f")" ] || return 1 # only root units are reproduced here
	unit_creds "$f" "$i" "$cd" 2>"$R/$unit.log" || return 1
	bs=-all
	for c in $(sed -n 's/^CapabilityBoundingSet=//p' "$f"); do c=${c,,}; bs+=",+${c#cap_}"; done
	[ "$(sed -n 's/^NoNewPrivileges=//p' "$f")" = yes ] || return 1
	local cmd
	cmd=$(exec_of "$tmpl" | sed -e "s|%d|$cd|g; s|%i|$i|g")
	# shellcheck disable=SC2086
	(cd / && umask "$(sed -n 's/^UMask=//p' "$f")" && exec env -i PATH=/usr/bin:/bin CREDENTIALS_DIRECTORY="$cd" \
		${ASAN_OPTIONS:+ASAN_OPTIONS="$ASAN_OPTIONS"} ${UBSAN_OPTIONS:+UBSAN_OPTIONS="$UBSAN_OPTIONS"} \
		setpriv --reuid=0 --regid=0 --groups="$(gid "$(sed -n 's/^SupplementaryGroups=//p' "$f")")" \
		--inh-caps=-all --bounding-set="$bs" --no-new-privs $cmd) >>"$R/$unit.log" 2>&1 || rc=$?
	rm -rf "$cd"
	printf '1\n%s\n' "$rc" >"$R/pid1/$unit.main" # ExecMainCode (1: exited), ExecMainStatus
	return "$rc"
}
pid1_standin() {
	local q verb unit who rc
	while :; do
		for q in "$R"/pid1/*.req; do
			[ -e "$q" ] || continue
			read -r verb unit <"$q" || true
			who=$(awk -F: -v u="$(stat -c %u "$q")" '$3 == u { print $1 }' "$R/etc/passwd")
			echo "$who $verb $unit" >>"$R/pid1.log"
			rc=0
			if [ "$(polkit_says "$who" "$unit" "$verb")" != yes ]; then
				rc=4 # systemctl: access denied
				echo "denied: $who $verb $unit" >>"$R/pid1.log"
			elif [ "$verb" = start ]; then
				start_unit "$unit" || rc=$?
			fi # stop: the unit is never running when spoold stops it here
			echo "$rc" >"${q%.req}.rc.tmp" && mv "${q%.req}.rc.tmp" "${q%.req}.rc"
			rm -f "$q"
		done
		sleep 0.1
	done
}
pid1_standin &
PIDS+=($!)
mkdir -p "$R/fake"
cat >"$R/fake/systemctl" <<EOF
#!/bin/bash
# stand-in for systemctl (no PID 1 here): start --wait and stop ask the PID 1 stand-in of
# test-deploy.sh and wait for its answer; show answers from the last start
d=$R/pid1
case "\$1" in
start | stop)
	verb=\$1; shift
	[ "\$1" = --wait ] && shift
	q=\$(mktemp "\$d/q.XXXXXX") || exit 1
	echo "\$verb \$1" >"\$q"
	mv "\$q" "\$q.req"
	while [ ! -e "\$q.rc" ]; do sleep 0.1; done
	rc=\$(cat "\$q.rc"); rm -f "\$q.rc"
	exit "\$rc" ;;
show) cat "\$d/\${!#}.main" 2>/dev/null ;;
*) exit 1 ;;
esac
EOF
chmod 755 "$R/fake/systemctl"
# the rule itself: spoold may start and stop gpurun@ instances, nothing else, nobody else
[ "$(polkit_says spoold gpurun@job-0001.service start)" = yes ] && [ "$(polkit_says spoold gpurun@job-0001.service stop)" = yes ] ||
	fail "polkit rule: spoold may not start/stop gpurun@job-0001"
for bad in "spoold phifs@clinic.service stop" "spoold gpurun@job-0001.service restart" "spoold gpurun@.x.service start" \
	"daemon gpurun@job-0001.service start" "phifs gpurun@job-0001.service start"; do
	# shellcheck disable=SC2086
	[ "$(polkit_says $bad)" = not_handled ] || fail "polkit rule allows: $bad"
done

install -d -m 0750 -o "$SU" -g "$(gid spoold)" "$R/var/lib/spoold" # StateDirectory=spoold
# shellcheck disable=SC2046
(umask 0027; PATH=$R/fake:$PATH GPURUN_STATUS_DIR=$R/run/gpurun-status exec setpriv --reuid="$SU" \
	--regid="$(gid spoold)" --groups="$(groups_of spoold)" $(exec_of spoold.service)) 2>"$R/spoold.log" &
PIDS+=($!)
waitfor "spoold watching" grep -q watching "$R/spoold.log"
ok "3. phifs-auditd, phifs@clinic (mounted, then uid 65534 with no capabilities) and spoold running; the polkit rule lets spoold start/stop gpurun@ only"

# ---- 4. Add the first patient (as phifs, with the credential)
CP=$(cred phifs-key.run nobody phifs-master-key)
CREDENTIALS_DIRECTORY=$CP as_phifs "$BIN/phifs-key" --store "$R/var/lib/phifs/store" --audit-socket "$R/run/phifs-audit/audit.sock" add p-0042 >/dev/null ||
	fail "phifs-key add"
CREDENTIALS_DIRECTORY=$CP as_phifs "$BIN/phifs-key" --store "$R/var/lib/phifs/store" list | grep -q p-0042 ||
	fail "p-0042 not listed"
ok "4. patient p-0042 added"

# ---- 5. Grant a provider (daemon stands in for dr.who)
CREDENTIALS_DIRECTORY=$CP as_phifs "$BIN/phifs-grant" --store "$R/var/lib/phifs/store" --audit-socket "$R/run/phifs-audit/audit.sock" add --principal user:daemon \
	--patient p-0042 --role provider --purpose treatment --consent consent-0042 --for 24h >/dev/null ||
	fail "phifs-grant add"
# not a README step: root writes the first document through a service grant
CREDENTIALS_DIRECTORY=$CP as_phifs "$BIN/phifs-grant" --store "$R/var/lib/phifs/store" --audit-socket "$R/run/phifs-audit/audit.sock" add --principal user:0 \
	--patient '*' --role service --purpose operations --for 1h >/dev/null || fail "service grant"
# the running mount picks up new keys and grants by itself
waitfor "the mount to let the service write" sh -c "echo 'visit note' >'$MNT/p-0042/visit.txt'"
chmod 0644 "$MNT/p-0042/visit.txt"
waitfor "the provider's read" sh -c "[ \"\$(setpriv --reuid=daemon --regid=daemon --clear-groups cat '$MNT/p-0042/visit.txt')\" = 'visit note' ]"
! setpriv --reuid=65533 --regid=65533 --clear-groups cat "$MNT/p-0042/visit.txt" 2>/dev/null ||
	fail "a user without a grant read the document"
ok "5. provider granted: reads p-0042 through phifs@clinic; a user without a grant cannot"

# ---- 6. Drop the first job
# what step 6 asks of the host: the model in /var/cache/phifs, a job grant for gpurun
install -m 0640 -g sys "$MODEL" "$R/var/cache/phifs/stories260K.gguf"
CREDENTIALS_DIRECTORY=$CP as_phifs "$BIN/phifs-grant" --store "$R/var/lib/phifs/store" --audit-socket "$R/run/phifs-audit/audit.sock" add --principal user:sys \
	--patient p-0042 --role job --purpose job --for 1h >/dev/null || fail "job grant for gpurun"
cat >"$R/job-0001.json" <<'JOB'
{"version": 1, "id": "job-0001", "patient": "p-0042", "documents": ["visit.txt"],
 "task": "summarize", "model": "stories260K.gguf", "max_tokens": 32,
 "estimated_tokens": 2000, "requested_by": "dr.who", "purpose": "treatment"}
JOB
[ "$("$BIN/spoolctl" --config "$P/etc/phifs/spoold.conf" submit "$R/job-0001.json")" = job-0001 ] || fail "spoolctl submit"
for _ in $(seq 1200); do # bounded wait for the job (a CPU run of stories260K under ASan)
	"$BIN/spoolctl" --config "$P/etc/phifs/spoold.conf" list | grep -q '^job-0001 *\(done\|failed\)' && break
	sleep 0.1
done
"$BIN/spoolctl" --config "$P/etc/phifs/spoold.conf" list | grep -q '^job-0001 *done' ||
	{ cat "$R/spoold.log" "$R/pid1.log" "$R/gpurun@job-0001.service.log" 2>/dev/null; fail "job-0001 not done"; }
grep -qx "spoold start gpurun@job-0001.service" "$R/pid1.log" || fail "spoold's runner did not start gpurun@job-0001.service"
! grep -q "^denied" "$R/pid1.log" || fail "polkit denied a request of spoold's runner: $(grep ^denied "$R/pid1.log")"
# the result, through phifs@clinic as the provider; encrypted on the store; nothing left
OUT=$MNT/p-0042/results/job-0001
setpriv --reuid=daemon --regid=daemon --clear-groups cat "$OUT/output.txt" >"$R/output.txt" && [ -s "$R/output.txt" ] ||
	fail "the provider cannot read job-0001's output through phifs@clinic"
grep -q '"job_id":[[:space:]]*"job-0001"' "$OUT/record.json" || fail "no record for job-0001"
head -c 24 "$R/output.txt" >"$R/out-head"
! grep -rqF -f "$R/out-head" "$R/var/lib/phifs/store" || fail "job-0001's output is on the store in the clear"
[ -z "$(ls -A "$R/run/gpurun")" ] || fail "a mount point was left in /run/gpurun"
[ ! -e "$R/run/credentials/gpurun@job-0001.service" ] && [ ! -e "$R/run/gpurun-status/job-0001.run" ] ||
	fail "credentials or the runtime file left behind"
ok "6. job-0001 dropped by spoolctl; spoold -> gpurun-systemd -> gpurun@job-0001 (allowed by the polkit rule) ran stories260K: output readable by the provider through phifs@clinic, encrypted on the store"

# ---- 7. Read the audit report (as a member of phi-auditors)
as_auditor() { setpriv --reuid=daemon --regid=daemon --groups="$(gid phi-auditors)" "$@"; }
install -d -o daemon "$R/auditor"
as_auditor "$BIN/phifs-audit" report --dir "$R/var/log/phifs-audit" --out-md "$R/auditor/report.md" 2>"$R/report.err" ||
	fail "phifs-audit report as an auditor: $(cat "$R/report.err")"
grep -q '^# phifs audit report' "$R/auditor/report.md" || fail "no report"
# what steps 5 and 6 did is in it: the provider's read, the service's write, the denial
grep -q '^| provider | [1-9]' "$R/auditor/report.md" || fail "report: no provider access"
grep -q '^| user:daemon | [1-9]' "$R/auditor/report.md" || fail "report: the provider is not an accessor"
grep -q '^| uid:65533 | [1-9]' "$R/auditor/report.md" || fail "report: the denial is missing"
grep -q '^| job | [1-9]' "$R/auditor/report.md" || fail "report: no access by the job"
! setpriv --reuid=daemon --regid=daemon --clear-groups "$BIN/phifs-audit" report --dir "$R/var/log/phifs-audit" \
	--out-md /dev/null 2>/dev/null || fail "a non-auditor read the audit log"
# stop everything cleanly, then the log verifies against the published key
umount "$MNT"
waitfor "phifs to exit" sh -c "! kill -0 $FSPID"
for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
wait
PIDS=()
as_auditor "$BIN/phifs-audit" verify --dir "$R/var/log/phifs-audit" --export-dir "$R/var/lib/phifs-audit/export" \
	--pubkey "$P/etc/phifs/phifs-audit.pub" >"$R/verify.txt" || { cat "$R/verify.txt"; fail "audit log does not verify"; }
ok "7. audit report read by a phi-auditors member (and refused to others); the log verifies"
cat "$R/auditor/report.md"
echo "test-deploy: all passed"
