/* fuzz-format: every parser of on-store data in the content and name formats.
 * Input byte 0 selects the parser; the rest is the untrusted store data. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phifs/cfile.h"
#include "phifs/names.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static struct phi_key *k; /* fuzzer-lifetime fixture, built once */
	if (!k) {
		uint8_t kb[64] = { 1 };
		if (phi_crypto_init() < 0 || phi_key_from(kb, 64, &k) < 0)
			abort();
	}
	if (size < 1)
		return 0;
	uint8_t sel = data[0];
	data++, size--;
	char *s = malloc(size + 1);
	memcpy(s, data, size);
	s[size] = 0;
	uint8_t id[16] = { 0 };
	switch (sel % 5) {
	case 0: {
		unsigned shift;
		uint32_t kv;
		uint8_t fid[16];
		(void)phi_cfile_parse_header(data, size, &shift, &kv, fid);
		uint64_t ct = 0, ps;
		memcpy(&ct, data, size < 8 ? size : 8);
		(void)phi_cfile_plain_size(ct, 12, &ps);
		break;
	}
	case 1:
		(void)phi_dir_id_parse(data, size, id);
		break;
	case 2: {
		char out[PHI_NAME_PLAIN_MAX + 1];
		(void)phi_name_decrypt(k, id, s, out);
		break;
	}
	case 3: {
		char out[4096];
		(void)phi_link_decrypt(k, s, out, sizeof(out));
		break;
	}
	case 4: {
		uint8_t out[512];
		size_t n;
		(void)phi_b64_dec(s, size, out, sizeof(out), &n);
		break;
	}
	}
	free(s);
	return 0;
}
