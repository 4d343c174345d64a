/* doc.c: documents to prompt text (doc.h). */
#include "doc.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <sodium.h>
#include <string.h>

#define DOC_JSON_DEPTH 12

const char *doc_kind_name(enum doc_kind k)
{
	static const char *const n[] = { "text", "markdown", "csv", "json", "fhir", "pdf", "binary" };
	return k <= DOC_BINARY ? n[k] : "?";
}

static int ends_with(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcasecmp(s + a - b, suf) == 0;
}

enum doc_kind doc_detect(const char *name, const uint8_t *p, size_t len)
{
	if ((len >= 5 && memcmp(p, "%PDF-", 5) == 0) || ends_with(name, ".pdf"))
		return DOC_PDF;
	if (memchr(p, 0, len))
		return DOC_BINARY;
	if (ends_with(name, ".json")) {
		return DOC_JSON; /* FHIR is decided after parsing */
	}
	if (ends_with(name, ".md") || ends_with(name, ".markdown"))
		return DOC_MARKDOWN;
	if (ends_with(name, ".csv") || ends_with(name, ".tsv"))
		return DOC_CSV;
	return DOC_TEXT;
}

static const char *str(const cJSON *o, const char *k)
{
	const cJSON *it = cJSON_GetObjectItemCaseSensitive(o, k);
	return cJSON_IsString(it) ? it->valuestring : NULL;
}

/* CodeableConcept: its text, else the first coding's display, else its code */
static const char *concept(const cJSON *o, const char *k)
{
	const cJSON *c = cJSON_GetObjectItemCaseSensitive(o, k);
	if (!cJSON_IsObject(c))
		return NULL;
	const char *t = str(c, "text");
	if (t)
		return t;
	const cJSON *cod = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(c, "coding"), 0);
	if (cJSON_IsObject(cod))
		return str(cod, "display") ? str(cod, "display") : str(cod, "code");
	return NULL;
}

#define OR(a, b) ((a) ? (a) : (b))

static int value_of(const cJSON *o, struct phi_secbuf *out)
{
	const cJSON *q = cJSON_GetObjectItemCaseSensitive(o, "valueQuantity");
	if (cJSON_IsObject(q)) {
		const cJSON *v = cJSON_GetObjectItemCaseSensitive(q, "value");
		if (cJSON_IsNumber(v))
			return phi_secbuf_printf(out, " = %g %s", v->valuedouble,
						 OR(str(q, "unit"), OR(str(q, "code"), "")));
	}
	if (str(o, "valueString"))
		return phi_secbuf_printf(out, " = %s", str(o, "valueString"));
	if (concept(o, "valueCodeableConcept"))
		return phi_secbuf_printf(out, " = %s", concept(o, "valueCodeableConcept"));
	const cJSON *b = cJSON_GetObjectItemCaseSensitive(o, "valueBoolean");
	if (cJSON_IsBool(b))
		return phi_secbuf_printf(out, " = %s", cJSON_IsTrue(b) ? "yes" : "no");
	return 0;
}

static int attachment_text(const cJSON *att, struct phi_secbuf *out)
{
	const char *ct = str(att, "contentType"), *data = str(att, "data");
	if (!data || !ct || strncmp(ct, "text/", 5) != 0)
		return str(att, "title") ? phi_secbuf_printf(out, "\n  attachment: %s", str(att, "title")) : 0;
	size_t n = strlen(data), got = 0;
	struct phi_secbuf tmp;
	phi_secbuf_init(&tmp, n, out->tally);
	int r = phi_secbuf_reserve(&tmp, n);
	if (r >= 0 && sodium_base642bin((unsigned char *)tmp.p, tmp.cap, data, n, "\r\n ", &got,
					NULL, sodium_base64_VARIANT_ORIGINAL) == 0 &&
	    !memchr(tmp.p, 0, got)) {
		r = phi_secbuf_puts(out, "\n  text: ");
		if (r >= 0)
			r = phi_secbuf_append(out, tmp.p, got);
	}
	phi_secbuf_done(&tmp);
	return r;
}

static int render_json(const cJSON *j, int depth, struct phi_secbuf *out);

static int render_resource(const cJSON *o, int depth, struct phi_secbuf *out)
{
	const char *rt = str(o, "resourceType");
	const char *status = str(o, "status");
	int r = 0;
	if (depth > DOC_JSON_DEPTH)
		return 0;
	if (!strcmp(rt, "Bundle")) {
		const cJSON *entries = cJSON_GetObjectItemCaseSensitive(o, "entry");
		r = phi_secbuf_printf(out, "Bundle (%s), %d entries:\n", OR(str(o, "type"), "collection"),
				      cJSON_GetArraySize(entries));
		const cJSON *e;
		cJSON_ArrayForEach(e, entries)
		{
			const cJSON *res = cJSON_GetObjectItemCaseSensitive(e, "resource");
			if (r >= 0 && cJSON_IsObject(res) && str(res, "resourceType"))
				r = render_resource(res, depth + 1, out);
		}
		return r;
	}
	if (!strcmp(rt, "Observation")) {
		r = phi_secbuf_printf(out, "Observation: %s", OR(concept(o, "code"), "(no code)"));
		if (r >= 0)
			r = value_of(o, out);
		if (r >= 0 && str(o, "effectiveDateTime"))
			r = phi_secbuf_printf(out, " on %s", str(o, "effectiveDateTime"));
		const cJSON *comp;
		cJSON_ArrayForEach(comp, cJSON_GetObjectItemCaseSensitive(o, "component"))
		{
			if (r >= 0)
				r = phi_secbuf_printf(out, "; %s", OR(concept(comp, "code"), "component"));
			if (r >= 0)
				r = value_of(comp, out);
		}
	} else if (!strcmp(rt, "Condition")) {
		r = phi_secbuf_printf(out, "Condition: %s", OR(concept(o, "code"), "(no code)"));
		if (r >= 0 && concept(o, "clinicalStatus"))
			r = phi_secbuf_printf(out, ", clinical status %s", concept(o, "clinicalStatus"));
		if (r >= 0 && str(o, "onsetDateTime"))
			r = phi_secbuf_printf(out, ", onset %s", str(o, "onsetDateTime"));
		if (r >= 0 && str(o, "recordedDate"))
			r = phi_secbuf_printf(out, ", recorded %s", str(o, "recordedDate"));
	} else if (!strcmp(rt, "MedicationStatement")) {
		const cJSON *ref = cJSON_GetObjectItemCaseSensitive(o, "medicationReference");
		r = phi_secbuf_printf(out, "Medication: %s",
				      OR(concept(o, "medicationCodeableConcept"),
					 OR(cJSON_IsObject(ref) ? str(ref, "display") : NULL, "(unnamed)")));
		const cJSON *d = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "dosage"), 0);
		if (r >= 0 && cJSON_IsObject(d) && str(d, "text"))
			r = phi_secbuf_printf(out, ", dosage %s", str(d, "text"));
		if (r >= 0 && str(o, "effectiveDateTime"))
			r = phi_secbuf_printf(out, ", since %s", str(o, "effectiveDateTime"));
	} else if (!strcmp(rt, "DiagnosticReport")) {
		r = phi_secbuf_printf(out, "Diagnostic report: %s", OR(concept(o, "code"), "(no code)"));
		if (r >= 0 && str(o, "effectiveDateTime"))
			r = phi_secbuf_printf(out, " on %s", str(o, "effectiveDateTime"));
		if (r >= 0 && str(o, "conclusion"))
			r = phi_secbuf_printf(out, ". Conclusion: %s", str(o, "conclusion"));
		const cJSON *res;
		cJSON_ArrayForEach(res, cJSON_GetObjectItemCaseSensitive(o, "result"))
		{
			if (r >= 0 && str(res, "display"))
				r = phi_secbuf_printf(out, "\n  result: %s", str(res, "display"));
		}
	} else if (!strcmp(rt, "DocumentReference")) {
		r = phi_secbuf_printf(out, "Document: %s", OR(concept(o, "type"), "(no type)"));
		if (r >= 0 && str(o, "date"))
			r = phi_secbuf_printf(out, " dated %s", str(o, "date"));
		if (r >= 0 && str(o, "description"))
			r = phi_secbuf_printf(out, ": %s", str(o, "description"));
		const cJSON *c;
		cJSON_ArrayForEach(c, cJSON_GetObjectItemCaseSensitive(o, "content"))
		{
			const cJSON *att = cJSON_GetObjectItemCaseSensitive(c, "attachment");
			if (r >= 0 && cJSON_IsObject(att))
				r = attachment_text(att, out);
		}
	} else if (!strcmp(rt, "Patient")) {
		const cJSON *nm = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "name"), 0);
		const char *fam = cJSON_IsObject(nm) ? str(nm, "family") : NULL;
		const cJSON *giv = cJSON_IsObject(nm) ? cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(nm, "given"), 0) : NULL;
		r = phi_secbuf_printf(out, "Patient: %s %s", cJSON_IsString(giv) ? giv->valuestring : "",
				      OR(fam, ""));
		if (r >= 0 && str(o, "gender"))
			r = phi_secbuf_printf(out, ", %s", str(o, "gender"));
		if (r >= 0 && str(o, "birthDate"))
			r = phi_secbuf_printf(out, ", born %s", str(o, "birthDate"));
		status = NULL;
	} else {
		r = phi_secbuf_printf(out, "%s:\n", rt);
		if (r >= 0)
			r = render_json(o, depth + 1, out);
		return r;
	}
	if (r >= 0 && status)
		r = phi_secbuf_printf(out, " (%s)", status);
	if (r >= 0)
		r = phi_secbuf_puts(out, "\n");
	return r;
}

static int render_json(const cJSON *j, int depth, struct phi_secbuf *out)
{
	if (depth > DOC_JSON_DEPTH)
		return 0;
	const cJSON *it;
	int r = 0;
	cJSON_ArrayForEach(it, j)
	{
		if (r < 0)
			break;
		r = phi_secbuf_printf(out, "%*s", depth * 2, "");
		if (r >= 0 && it->string)
			r = phi_secbuf_printf(out, "%s: ", it->string);
		if (r < 0)
			break;
		if (cJSON_IsString(it))
			r = phi_secbuf_printf(out, "%s\n", it->valuestring);
		else if (cJSON_IsNumber(it))
			r = phi_secbuf_printf(out, "%g\n", it->valuedouble);
		else if (cJSON_IsBool(it))
			r = phi_secbuf_puts(out, cJSON_IsTrue(it) ? "true\n" : "false\n");
		else if (cJSON_IsNull(it))
			r = phi_secbuf_puts(out, "null\n");
		else {
			r = phi_secbuf_puts(out, "\n");
			if (r >= 0)
				r = render_json(it, depth + 1, out);
		}
	}
	return r;
}

int doc_render(const char *name, const uint8_t *p, size_t len, struct phi_secbuf *out,
	       enum doc_kind *ret_kind, const char **ret_why)
{
	enum doc_kind k = doc_detect(name, p, len);
	const char *why = NULL;
	int r = 0;
	if (k == DOC_PDF) {
		why = "PDF: this build has no PDF text extraction; convert the document to text first";
		r = -EMEDIUMTYPE;
	} else if (k == DOC_BINARY) {
		why = "binary content (NUL bytes): not a text document";
		r = -EMEDIUMTYPE;
	} else if (k == DOC_JSON) {
		cJSON *j = cJSON_ParseWithLength((const char *)p, len);
		if (!j) {
			why = "JSON: does not parse";
			r = -EBADMSG;
		} else {
			if (cJSON_IsObject(j) && str(j, "resourceType")) {
				k = DOC_FHIR;
				r = render_resource(j, 0, out);
			} else {
				r = render_json(j, 0, out);
			}
			cJSON_Delete(j); /* the hooks (gpurun main) wipe what cJSON frees */
			if (r < 0)
				why = "rendering: output too large";
		}
	} else {
		r = phi_secbuf_append(out, p, len);
		if (r >= 0 && (len == 0 || p[len - 1] != '\n'))
			r = phi_secbuf_puts(out, "\n");
		if (r < 0)
			why = "too large";
	}
	if (r < 0) {
		if (ret_why)
			*ret_why = why;
		return r;
	}
	*ret_kind = k;
	return 0;
}
