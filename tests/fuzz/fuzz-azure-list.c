/* fuzz-azure-list: the Azure backend's XML response parsers (List Blobs, Get Block List).
 * First byte selects the parser; the rest is the response body. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phifs/store_azure.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int check_entry(void *ctx, const struct phi_az_entry *e)
{
	(void)ctx;
	/* names are NUL-terminated and bounded; touching every byte lets ASan check it */
	size_t n = strlen(e->name);
	if (n > 8192)
		__builtin_trap();
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 1 << 20)
		return 0;
	const char *p = (const char *)data + 1;
	size_t n = size - 1;
	if (data[0] % 2 == 0) {
		char next[256];
		memset(next, 'x', sizeof next);
		if (phi_az_parse_list(p, n, check_entry, NULL, next, sizeof next) == 0 &&
		    strnlen(next, sizeof next) == sizeof next)
			__builtin_trap();
	} else {
		struct phi_az_block *b = NULL;
		size_t nb = 0;
		if (phi_az_parse_blocklist(p, n, &b, &nb) == 0) {
			for (size_t i = 0; i < nb; i++)
				if (strnlen(b[i].id, sizeof b[i].id) == sizeof b[i].id)
					__builtin_trap();
			free(b);
		}
	}
	return 0;
}
