/* fuzz-audit-checkpoint: the checkpoint note parser and verifier, and the key text parsers.
 * A note that parses must re-sign (under a fixed test key of the same name) into a note that
 * parses to the same fields. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phifs/audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 16384)
		return 0;
	if (phi_crypto_init() < 0)
		return 0;
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	uint8_t seed[32] = { 0 };
	switch (data[0] % 3) {
	case 0: {
		struct phi_audit_ckpt ck, ck2;
		if (phi_audit_ckpt_parse(p, n, &ck) != 0)
			break;
		struct phi_audit_signer *s;
		if (phi_audit_signer_from_seed(ck.origin, seed, &s) != 0)
			__builtin_trap();
		struct phi_buf b;
		phi_buf_init(&b, PHI_AUDIT_NOTE_MAX * 2);
		if (phi_audit_ckpt_sign(&ck, s, &b) != 0 ||
		    phi_audit_ckpt_verify(b.p, b.len, &s->vk, &ck2) != 0 || ck2.size != ck.size ||
		    ck2.idx != ck.idx || ck2.kind != ck.kind || memcmp(ck2.head, ck.head, 32) != 0)
			__builtin_trap();
		/* the fuzzed note itself, verified under that key: must not crash */
		(void)phi_audit_ckpt_verify(p, n, &s->vk, &ck2);
		phi_buf_done(&b);
		phi_audit_signer_free(s);
		break;
	}
	case 1: {
		struct phi_audit_vkey vk;
		char buf[256];
		if (phi_audit_vkey_parse((const char *)p, n, &vk) == 0 &&
		    phi_audit_vkey_format(&vk, buf, sizeof(buf)) != 0)
			__builtin_trap();
		break;
	}
	default: {
		struct phi_audit_signer *s;
		if (phi_audit_signer_parse(p, n, &s) == 0)
			phi_audit_signer_free(s);
		break;
	}
	}
	return 0;
}
