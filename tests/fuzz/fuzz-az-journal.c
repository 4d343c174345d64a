/* fuzz-az-journal: the Azure backend's write-journal parser (phifs/az_journal.c), which
 * reads files left by a dead mount. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phifs/az_journal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct phi_aj_parsed p;
	if (phi_aj_parse(data, size, &p) < 0)
		return 0;
	/* every record's data lies inside the input; names are terminated */
	if (strlen(p.name) > PHI_AJ_NAME_MAX || strlen(p.etag) > PHI_AJ_ETAG_MAX)
		__builtin_trap();
	for (size_t k = 0; k < p.nrecs; k++) {
		const struct phi_aj_rec *r = &p.recs[k];
		if (r->data && (r->data < data || r->data + r->len > data + size))
			__builtin_trap();
	}
	phi_aj_parsed_free(&p);
	return 0;
}
