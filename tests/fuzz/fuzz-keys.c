/* fuzz-keys: the parsers of phifs.hdr, key files (fixed part and decrypted payload) and
 * master key files. First byte selects the parser; the rest is the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phifs/crypto.h"
#include "phifs/keys.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	if (phi_crypto_init() < 0)
		return 0;
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	switch (data[0] % 4) {
	case 0: {
		uint8_t id[PHI_STORE_ID_LEN];
		const uint8_t *sealed;
		if (phi_keys_parse_header(p, n, id, &sealed) == 0 &&
		    (sealed != p + 24 || n != PHI_HDR_LEN))
			__builtin_trap();
		break;
	}
	case 1: {
		uint8_t state;
		const uint8_t *rest;
		size_t rl;
		if (phi_keys_parse_keyfile(p, n, &state, &rest, &rl) == 0 &&
		    (rest < p || rest + rl != p + n || state > 1))
			__builtin_trap();
		break;
	}
	case 2: {
		struct phi_pkeys *pk = calloc(1, sizeof(*pk));
		if (!pk)
			return 0;
		if (phi_keys_parse_payload(p, n, pk) == 0) {
			if (pk->n == 0 || pk->n > PHI_MAX_VERSIONS || !pk->name_key ||
			    phi_patient_valid(pk->id) < 0)
				__builtin_trap();
			const struct phi_key *k;
			if (phi_pkeys_content(pk, pk->current, &k) < 0)
				__builtin_trap();
		}
		phi_pkeys_free(pk);
		break;
	}
	default: {
		struct phi_key *k = NULL;
		if (phi_master_parse(p, n, &k) == 0 && k->len != PHI_KEY_LEN)
			__builtin_trap();
		phi_key_free(k);
		break;
	}
	}
	return 0;
}
