# docs-lib.sh: documents of several patients, written by the service through its mount
# (sourced after run-lib.sh). MARK_A and MARK_B are markers that must never reach the store
# in clear, nor another patient's job.
MARK_A=ZEBRAQUOKKA4711 MARK_B=OTTERPLATYPUS0815
write_docs() {
	mkdir -p "$SVC/p-alpha/notes" "$SVC/p-alpha/fhir" "$SVC/p-beta/notes" "$SVC/p-gamma"
	printf 'Discharge summary. Patient %s, type 2 diabetes, started metformin 500 mg twice daily.\n' "$MARK_A" \
		>"$SVC/p-alpha/notes/discharge.txt"
	printf '# Visit note\n\n- blood pressure 130/85\n- feels well\n' >"$SVC/p-alpha/notes/visit.md"
	printf 'date,test,value,unit\n2026-11-01,HbA1c,7.1,%%\n2026-11-01,LDL,2.9,mmol/L\n' >"$SVC/p-alpha/notes/labs.csv"
	cat >"$SVC/p-alpha/fhir/bundle.json" <<-'J'
	{"resourceType":"Bundle","type":"collection","entry":[
	 {"resource":{"resourceType":"Observation","status":"final","code":{"text":"HbA1c"},"valueQuantity":{"value":7.1,"unit":"%"},"effectiveDateTime":"2026-11-01"}},
	 {"resource":{"resourceType":"Condition","code":{"coding":[{"display":"Type 2 diabetes mellitus"}]},"clinicalStatus":{"text":"active"},"onsetDateTime":"2019-03-02"}},
	 {"resource":{"resourceType":"MedicationStatement","status":"active","medicationCodeableConcept":{"text":"Metformin 500 mg"},"dosage":[{"text":"twice daily"}]}},
	 {"resource":{"resourceType":"DiagnosticReport","status":"final","code":{"text":"Lipid panel"},"conclusion":"LDL slightly raised"}},
	 {"resource":{"resourceType":"DocumentReference","status":"current","type":{"text":"Referral letter"},"content":[{"attachment":{"contentType":"text/plain","data":"UmVmZXJyZWQgdG8gZGlhYmV0ZXMgY2xpbmljLg=="}}]}}]}
	J
	printf '%%PDF-1.4\n%%binary\n' >"$SVC/p-alpha/notes/scan.pdf"
	printf 'Beta note: %s, asthma.\n' "$MARK_B" >"$SVC/p-beta/notes/b.txt"
	printf 'Gamma note.\n' >"$SVC/p-gamma/g.txt"
}
