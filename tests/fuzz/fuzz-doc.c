/* fuzz-doc: gpurun's document renderer (text, JSON, FHIR) on hostile bytes. The first byte
 * picks the file name (and so the kind); the rest is the document. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gpurun/doc.h"
#include "gpurun/secbuf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static const char *const names[] = { "a.json", "a.txt", "a.md", "a.csv", "a.pdf" };
	if (size < 1 || size > 200000)
		return 0;
	struct phi_secbuf b;
	phi_secbuf_init(&b, 1 << 22, NULL);
	enum doc_kind k;
	const char *why = NULL;
	int r = doc_render(names[data[0] % 5], data + 1, size - 1, &b, &k, &why);
	if (r < 0 && b.len != 0)
		__builtin_trap(); /* a refusal appends nothing */
	if (r == 0 && b.len && (!b.p || b.p[b.len] != 0))
		__builtin_trap();
	phi_secbuf_done(&b);
	return 0;
}
