#!/usr/bin/env bash
# demo.sh: the main job end to end on the embedded default (a local store, the local
# provisioner, the CPU). Builds; creates a store, a master key and three patients; starts
# the audit daemon; a service writes the patients' documents through a granted phifs mount;
# an admin drops a summarize job into spoold's incoming/; spoold issues a job grant and runs
# gpurun, which mounts phifs for that patient only in a private mount namespace, reads the
# documents, runs stories260K (../shared/models, or a generated tiny model) on the CPU,
# writes the result back encrypted, scrubs and unmounts. Then shows the result through the
# mount, that the store holds only ciphertext, and that the audit log verifies.
# Run as root (FUSE mounts, mount namespaces). Leaves nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d build ] || meson setup build >/dev/null
meson compile -C build >/dev/null
B=$PWD/build
export PHIFS=$B/phifs/phifs PHIFS_KEY=$B/tools/phifs-key PHIFS_GRANT=$B/tools/phifs-grant \
	PHIFS_AUDIT=$B/tools/phifs-audit AUDITD=$B/phifs/phifs-auditd SPOOLD=$B/spoold/spoold \
	GPURUN=$B/gpurun/gpurun MODELS=$PWD/../shared/models
# the same setup as the pipeline test (tests/gpurun/test-pipeline.sh)
. tests/gpurun/run-lib.sh
. tests/gpurun/docs-lib.sh
step() { printf '\n== %s\n' "$*"; }

step "store, master key, patients p-alpha p-beta p-gamma; phifs-auditd; the service's mount"
run_store p-alpha p-beta p-gamma
"$PHIFS_KEY" --store "$STORE" --key-file "$KEY" list

step "a service writes documents (text, Markdown, CSV, a FHIR Bundle, a PDF) through its mount"
write_docs
find "$SVC" -type f | sed "s|$SVC|MNT|" | sort

step "spoold (local backend, phifs grants + audit) and an admin's job in incoming/"
run_config
run_spoold
drop_job demo-0001 p-alpha '["notes/*","fhir/*.json"]' 64
cat "$SP/incoming/demo-0001.json" 2>/dev/null || cat "$SP"/*/demo-0001.json
wait_for 300 "the job to end" test -e "$SP/done/demo-0001.result.json" -o -e "$SP/failed/demo-0001.result.json"
[ -e "$SP/done/demo-0001.result.json" ] || fail "the job failed: $(json "$SP/failed/demo-0001.result.json" reason)"

step "gpurun's log (ids, phases and counts only)"
cat "$SP/journal/spoold-demo-0001.1.log"

step "the result, read through the service's mount"
R=$SVC/p-alpha/results/demo-0001
ls -l "$R" | sed "s|$SVC|MNT|"
echo "--- output.txt"; cat "$R/output.txt"; echo
echo "--- record.json"; cat "$R/record.json"

step "what gpurun scrubbed (its status JSON for spoold)"
python3 -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["scrub"], indent=1))' \
	"$SP/journal/spoold-demo-0001.1.status.json"

step "the store holds only ciphertext"
for w in "$MARK_A" metformin p-alpha results demo-0001 "$(head -c 24 "$R/output.txt")"; do
	if grep -rqaF -- "$w" "$STORE"; then echo "FOUND PLAINTEXT: $w"; exit 1; fi
	echo "not on the store: $w"
done

step "the audit log verifies; the job's accesses"
"$PHIFS_AUDIT" verify --dir "$ALOG" --export-dir "$AEXP" --pubkey "$AK/phifs-audit.pub"
"$PHIFS_AUDIT" query --dir "$ALOG" --principal "user:nobody" --format table
"$PHIFS_AUDIT" query --dir "$ALOG" --event job-end --format table
echo; echo "demo: ok"
