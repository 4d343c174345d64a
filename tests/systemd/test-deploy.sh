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
#   - the users exist only in R/etc/passwd: processes get their numeric ids, and where a
#     name must resolve on this host (phifs -o run_as, grants) nobody stands in for phifs,
#     daemon for the provider dr.who, and spoold's admin_group is root's group.
# Runs as root (a real FUSE mount).
here=$(cd "$(dirname "$0")" && pwd)
. "$here/lib.sh"
README=$here/../../README.md
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
# runner: the example's gpurun-systemd needs systemctl (PID 1); test-gpurun-unit.sh runs
# it, and gpurun@'s ExecStart= for a real job, under the unit's privileges
grep -q "^runner = .*/gpurun-systemd$" "$P/etc/phifs/spoold.conf" || fail "spoold.conf example: runner is not gpurun-systemd"
sed -i -e "s|^spool_dir = .*|spool_dir = $R/var/spool/phifs|" -e "s|^admin_group = .*|admin_group = 0|" \
	-e "s|^runner = .*|runner = /bin/true|" -e "s|^metrics_file = .*|metrics_file = $R/var/lib/spoold/metrics.prom|" \
	"$P/etc/phifs/spoold.conf"
echo "tick_ms = 100" >>"$P/etc/phifs/spoold.conf"
install -d -m 0750 -o "$SU" -g "$(gid spoold)" "$R/var/lib/spoold" # StateDirectory=spoold
# shellcheck disable=SC2046
(umask 0027; exec setpriv --reuid="$SU" --regid="$(gid spoold)" --groups="$(groups_of spoold)" \
	$(exec_of spoold.service)) 2>"$R/spoold.log" &
PIDS+=($!)
waitfor "spoold watching" grep -q watching "$R/spoold.log"
ok "3. phifs-auditd, phifs@clinic (mounted, then uid 65534 with no capabilities) and spoold running"

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
cat >"$R/job-0001.json" <<'JOB'
{"version": 1, "id": "job-0001", "patient": "p-0042", "documents": ["visit.txt"],
 "task": "summarize", "model": "stories260K.gguf", "max_tokens": 64,
 "estimated_tokens": 2000, "requested_by": "dr.who", "purpose": "treatment"}
JOB
[ "$("$BIN/spoolctl" --config "$P/etc/phifs/spoold.conf" submit "$R/job-0001.json")" = job-0001 ] || fail "spoolctl submit"
waitfor "spoold to run job-0001" sh -c "'$BIN/spoolctl' --config '$P/etc/phifs/spoold.conf' list | grep -q '^job-0001 *done'"
ok "6. job-0001 dropped by spoolctl, taken by spoold (mode 0640 job file, group phi-admins) and done"

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
