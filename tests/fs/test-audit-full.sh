#!/usr/bin/env bash
# test-audit-full: a full log volume (a 2 MiB tmpfs) behind a real audited mount
# (-o grants,audit_socket=...). While phifs-auditd cannot make records durable, every open
# through the mount is denied with EACCES and serves no byte, though the file's pages may
# still be in the kernel's cache from before (an open's record goes through the
# asynchronous path, a create's through the synchronous one: both are tried); the writer
# records from its reserve that it is degraded; once space returns, opens are served
# again, and the log verifies.
. "$(dirname "$0")/lib.sh"
: "${AUDITD:?}" "${PHIFS_AUDIT:?}" "${PHIFS_GRANT:?}"
AK=$T/ak VOL=$T/vol AEXP=$T/aexp ASOCK=$T/audit.sock
ALOG=$VOL/log
mkdir -p "$AK" "$AEXP" "$VOL"
if ! mount -t tmpfs -o size=2m tmpfs "$VOL"; then
	echo "cannot mount a tmpfs: skipped"
	rm -rf "$T"
	exit 77
fi
AUDITD_PID=
trap 'phi_umount 2>/dev/null || umount -l "$MNT" 2>/dev/null || true; [ -z "$AUDITD_PID" ] || kill -9 "$AUDITD_PID" 2>/dev/null || true; umount -l "$VOL" 2>/dev/null || true; rm -rf "$T"' EXIT
"$PHIFS_AUDIT" keygen --out "$AK" --name phi-audit/test >/dev/null
auditd_start --reserve 262144 --prealloc 65536 # zeros ahead hold ~100 records, within the 500 tries
export PHIFS_AUDIT_SOCKET=$ASOCK
phi_setup p-full-0001
"$PHIFS_GRANT" --store "$STORE" --key-file "$KEY" add --principal user:0 --patient '*' \
	--role service --purpose operations --for 1h >/dev/null
phi_mount -o grants,audit_socket="$ASOCK"
P=$MNT/p-full-0001
echo "MARKER-FULL-4411" >"$P/doc"
# try OP PATH: prints "ok <bytes read>" or the errno's name
try() {
	python3 - "$1" "$2" <<'PY'
import errno, os, sys
op, path = sys.argv[1:3]
try:
    if op == 'read':
        fd = os.open(path, os.O_RDONLY)
        data = os.read(fd, 100)
        os.close(fd)
        print('ok', data.decode(errors='replace').strip())
    else:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        os.close(fd)
        print('ok created')
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
PY
}
[ "$(try read "$P/doc")" = "ok MARKER-FULL-4411" ] || fail "read before the volume filled"
[ "$(try read "$P/doc")" = "ok MARKER-FULL-4411" ] || fail "second read (pages kept)"
ok "served while the log volume has room"

dd if=/dev/zero of="$VOL/filler" bs=64k 2>/dev/null || true
# records may still fit in the last partly used page of the segment: open until the first
# refusal, after which the writer is degraded and refuses everything
first=
for i in $(seq 500); do
	r=$(try read "$P/doc")
	[ "$r" = "ok MARKER-FULL-4411" ] && continue
	first=$r
	break
done
[ -n "$first" ] || fail "the full log volume never refused an open"
[ "$first" = EACCES ] || fail "first refused open: $first (want EACCES)"
for i in $(seq 20); do
	r=$(try read "$P/doc")
	[ "$r" = EACCES ] || fail "open $i on a full log volume: $r (want EACCES, nothing served)"
done
r=$(try create "$P/new")
[ "$r" = EACCES ] || fail "create on a full log volume: $r (want EACCES)"
ok "full log volume: 21 opens and a create denied (EACCES), no byte served"

rm -f "$VOL/filler"
r=
for _ in $(seq 100); do # the writer leaves degraded at its next append (not a timing assertion)
	r=$(try read "$P/doc")
	[ "$r" = "ok MARKER-FULL-4411" ] && break
	sleep 0.05
done
[ "$r" = "ok MARKER-FULL-4411" ] || fail "space back, open still refused: $r"
# O_EXCL: the create refused before left no file behind
[ "$(try create "$P/new")" = "ok created" ] || fail "space back, create refused (or the refused one left a file)"
ok "space back: opens and creates served again"

phi_umount
kill -TERM "$AUDITD_PID"
wait "$AUDITD_PID" || fail "phifs-auditd stop"
AUDITD_PID=
"$PHIFS_AUDIT" query --dir "$ALOG" --event audit-degraded --format csv >"$T/degraded.csv"
[ "$(grep -c . "$T/degraded.csv")" -ge 2 ] || fail "no audit-degraded record: $(cat "$T/degraded.csv")"
"$PHIFS_AUDIT" verify --dir "$ALOG" --export-dir "$AEXP" --pubkey "$AK/phifs-audit.pub" >/dev/null ||
	fail "the log does not verify after the full volume"
ok "the degraded state is in the log, and the log verifies"
