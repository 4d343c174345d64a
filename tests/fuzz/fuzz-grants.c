/* fuzz-grants: the grant file parsers and the /proc parsers of the policy. First byte
 * selects the parser; the rest is the input. A payload that parses must re-encode to
 * exactly the same bytes. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phifs/crypto.h"
#include "phifs/grants.h"
#include "phifs/policy.h"
#include "phifs/util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > (1u << 20))
		return 0;
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	switch (data[0] % 4) {
	case 0: {
		const uint8_t *sealed;
		size_t sl;
		if (phi_grants_parse_file(p, n, &sealed, &sl) == 0 &&
		    (sealed != p + PHI_GRANTS_FIXED || sl + PHI_GRANTS_FIXED != n))
			__builtin_trap();
		break;
	}
	case 1: {
		uint64_t gen;
		struct phi_grant *g = NULL;
		size_t ng;
		if (phi_grants_parse_payload(p, n, &gen, &g, &ng) == 0) {
			struct phi_buf b;
			phi_buf_init(&b, PHI_GRANTS_PAYLOAD_MAX);
			if (phi_grants_encode_payload(gen, g, ng, &b) < 0 || b.len != n ||
			    memcmp(b.p, p, n) != 0)
				__builtin_trap();
			for (size_t i = 0; i < ng; i++)
				if (phi_grant_validate(&g[i], NULL) < 0)
					__builtin_trap();
			phi_buf_done(&b);
			free(g);
		}
		break;
	}
	case 2: {
		struct phi_proc_status st;
		if (phi_proc_parse_status((const char *)p, n, &st) == 0 &&
		    (st.ngroups > PHI_ID_GROUPS_MAX || st.tgid <= 0))
			__builtin_trap();
		break;
	}
	default: {
		char unit[PHI_ID_UNIT_MAX];
		if (phi_proc_parse_unit((const char *)p, n, unit, sizeof(unit)) == 0 &&
		    strlen(unit) >= sizeof(unit))
			__builtin_trap();
		break;
	}
	}
	return 0;
}
