#!/usr/bin/env bash
# test-pipeline: the main job end to end, as tools/demo.sh runs it. A store and keys,
# phifs-auditd, a service that writes documents for three patients through a granted
# mount, an admin who drops a job into spoold's incoming/, spoold (local backend, real
# phifs hooks: job grant + audit) running gpurun on the CPU. Checks: the job is done; the
# result is on the store only as ciphertext and readable through a granted mount; the
# record says what ran; the job grant was issued and revoked; the audit log verifies and
# shows every access of the job, all to its own patient; no mount and no temp file is left.
here=$(cd "$(dirname "$0")" && pwd)
. "$here/run-lib.sh"
. "$here/docs-lib.sh"

run_store p-alpha p-beta p-gamma
write_docs
ok "service wrote documents of 3 patients through its mount"
run_config
run_spoold
drop_job j-0001 p-alpha '["notes/*","fhir/*.json"]'
wait_for 240 "the job to end" test -e "$SP/done/j-0001.result.json" -o -e "$SP/failed/j-0001.result.json"
[ -e "$SP/done/j-0001.result.json" ] || fail "job failed: $(json "$SP/failed/j-0001.result.json" reason)"
ok "spoold ran the job to done/"

ST=$SP/journal/spoold-j-0001.1.status.json
[ "$(json "$ST" exit)" = 0 ] || fail "status exit"
[ "$(json "$ST" scrub.mount.gone)" = True ] || fail "status: mount not gone"
[ "$(json "$ST" scrub.host.engine_freed)" = True ] || fail "status: engine not freed"
[ "$(json "$ST" scrub.host.buffers_wiped)" -gt 0 ] || fail "status: no buffers wiped"
for p in provisioning ready executing deprovisioning; do
	grep -q "\"phase\":	\"$p\"" "$ST" || fail "status: no phase $p"
done
[ "$(json "$SP/done/j-0001.result.json" tokens_in)" -gt 0 ] || fail "spoold saw no tokens_in"
ok "status JSON: exit 0, 4 phases, host buffers wiped, engine freed, mount gone; spoold took the token counts"

R=$SVC/p-alpha/results/j-0001
[ -s "$R/output.txt" ] || fail "no output through the service mount"
[ "$(json "$R/record.json" version)" = 1 ] || fail "record version"
[ "$(json "$R/record.json" model.sha256)" = "$(sha256sum "$T/models/model.gguf" | cut -d' ' -f1)" ] || fail "record: model sha256"
[ "$(json "$R/record.json" documents.used)" = 4 ] || fail "record: documents used: $(json "$R/record.json" documents.used)"
[ "$(json "$R/record.json" documents.refused)" = 1 ] || fail "record: the PDF was not refused"
json "$R/record.json" documents.refusals.0.reason | grep -q PDF || fail "record: refusal reason"
[ "$(json "$R/record.json" tokens.out)" -gt 0 ] || fail "record: no output tokens"
python3 - "$R/record.json" <<'PY' || fail "record: fields"
import json, sys
r = json.load(open(sys.argv[1]))
assert r["tokens"]["in"] > 0 and r["speed"]["prefill_tokens_per_s"] > 0 and r["speed"]["decode_tokens_per_s"] > 0
assert r["device"]["backend"] in ("cpu", "cuda")
for p in ("provisioning", "ready", "executing"):
    assert r["phases"][p]["duration_ms"] >= 0
assert r["cost"]["usd_per_hour"] == 1.2 and r["cost"]["estimated_micro_usd"] >= 1
# the documents do not fit stories260K's 512-token context with the output: map-reduce
assert r["model"]["n_ctx"] > 512 or r["passes"] >= 3, r["passes"]
PY
ls -A "$R" | grep -q '\.tmp$' && fail "temp file left in results"
ok "result readable through a granted mount: output + record (model sha256, tokens, speeds, phases, cost; PDF refused; $(json "$R/record.json" passes) passes, map-reduce)"

# the store holds ciphertext only: no document marker, no piece of the output
OUT=$(tr -s '[:space:]' ' ' <"$R/output.txt" | cut -c1-24)
[ ${#OUT} -ge 12 ] || fail "output too short to look for: '$OUT'"
for w in "$MARK_A" "$MARK_B" "$OUT" metformin results j-0001 '"tokens"'; do
	grep -rqaF -- "$w" "$STORE" && fail "plaintext on the store: $w"
done
ok "the store holds no plaintext: document markers, the output, the record, names"

# grant: issued for the attempt, for the job user on p-alpha only, and revoked
G list --patient p-alpha --json >"$T/grants.json"
python3 - "$T/grants.json" <<'PY' || fail "job grant"
import json, sys
g = [x for x in json.load(open(sys.argv[1])) if x.get("role") == "job"]
assert len(g) == 1, g
assert g[0]["patient"] == "p-alpha" and g[0]["state"] == "revoked" and g[0]["principal"] == "user:nobody", g[0]
PY
ok "spoold issued one job grant (p-alpha, the job user) and revoked it after the run"

# audit: the log verifies; every access by the job user is to p-alpha and allowed
"$PHIFS_AUDIT" verify --dir "$ALOG" --export-dir "$AEXP" --pubkey "$AK/phifs-audit.pub" >"$T/verify.txt" 2>&1 ||
	fail "phifs-audit verify: $(cat "$T/verify.txt")"
PA=$("$PHIFS_AUDIT" pseudonym --lookup-key "$T/lookup.key" --patient p-alpha)
"$PHIFS_AUDIT" query --dir "$ALOG" --format json >"$T/audit.json"
python3 - "$T/audit.json" "$PA" "$(id -u nobody)" <<'PY' || fail "audit log"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()] if not open(sys.argv[1]).read().lstrip().startswith("[") else json.load(open(sys.argv[1]))
pa, uid = sys.argv[2], int(sys.argv[3])
def f(r, *k):
    for x in k:
        r = r.get(x, {}) if isinstance(r, dict) else {}
    return r
job = [r for r in recs if f(r, "actor", "uid") == uid or f(r, "ev", "actor", "uid") == uid]
assert job, "no record of the job user"
pat = lambda r: f(r, "obj", "patient") or f(r, "ev", "obj", "patient")
evn = lambda r: f(r, "event") or f(r, "ev", "event")
bad = [r for r in job if pat(r) != pa]
assert not bad, ("job records outside its patient", bad[:3])
denied = [r for r in job if evn(r) == "deny"]
assert not denied, ("denials", denied[:3])
opens = [r for r in job if evn(r) == "open"]
assert len(opens) >= 5, ("opens", len(opens))   # 5 documents read (the PDF too)
creates = [r for r in job if evn(r) == "create"]
assert len(creates) >= 3, ("creates", len(creates))
names = {evn(r) for r in recs}
for e in ("job-submit", "job-start", "job-end", "grant-create", "grant-revoke", "mount", "unmount"):
    assert e in names, ("missing event", e, sorted(names))
print(len(job), "records of the job")
PY
ok "audit: verify passes; every record of the job user is an allowed access to p-alpha; job and grant events present"

grep -q "$RUN" /proc/self/mountinfo && fail "a job mount is visible on the host"
[ -z "$(ls -A "$RUN" 2>/dev/null)" ] || fail "mount point left in $RUN"
find "$SP" "$RUN" -name '*.tmp' 2>/dev/null | grep -q . && fail "temp file left"
grep -qaF -e "$MARK_A" -e metformin "$SP"/journal/* "$T/spoold.log" && fail "PHI in spoold's logs"
ok "nothing left: no mount, no mount point, no temp file; no document text in the logs"
