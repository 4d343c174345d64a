/* doc.h: a patient document (bytes read through the mount) rendered to readable text for a
 * prompt: plain text, Markdown and CSV as they are; JSON as indented "key: value" lines;
 * FHIR resources (Bundle, Observation, Condition, MedicationStatement, DiagnosticReport,
 * DocumentReference, Patient) as short sentences. PDF and binary files are refused with a
 * reason. Output goes into a secbuf; error texts never quote the document. */
#ifndef PHI_DOC_H
#define PHI_DOC_H

#include <stddef.h>
#include <stdint.h>

#include "secbuf.h"

enum doc_kind { DOC_TEXT, DOC_MARKDOWN, DOC_CSV, DOC_JSON, DOC_FHIR, DOC_PDF, DOC_BINARY };

const char *doc_kind_name(enum doc_kind k);
/* The kind from the file name's extension and the first bytes. */
enum doc_kind doc_detect(const char *name, const uint8_t *p, size_t len);
/* Append the rendering of p[0..len) to out. -EMEDIUMTYPE for PDF and binary content,
 * -EBADMSG for JSON that does not parse; *ret_why says why (static, no content). */
int doc_render(const char *name, const uint8_t *p, size_t len, struct phi_secbuf *out,
	       enum doc_kind *ret_kind, const char **ret_why);

#endif
