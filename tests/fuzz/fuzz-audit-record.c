/* fuzz-audit-record: the audit record, client event and segment header parsers and the frame
 * scanner. First byte selects; the rest is the input. A record that parses must re-encode to
 * a fixed point (encode, parse, encode gives the same bytes). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "phifs/audit.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 65536)
		return 0;
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	switch (data[0] % 4) {
	case 0:
	case 1: {
		struct phi_audit_record *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
		struct phi_buf x, y;
		phi_buf_init(&x, PHI_AUDIT_RECORD_MAX * 2);
		phi_buf_init(&y, PHI_AUDIT_RECORD_MAX * 2);
		if (!a || !b)
			abort();
		bool stored = data[0] % 4 == 0;
		int r = stored ? phi_audit_parse_record(p, n, a) : phi_audit_parse_event(p, n, &a->ev);
		if (r == 0) {
			r = stored ? phi_audit_encode_record(a, &x) : phi_audit_encode_event(&a->ev, &x);
			if (r == 0) {
				if ((stored ? phi_audit_parse_record(x.p, x.len, b)
					    : phi_audit_parse_event(x.p, x.len, &b->ev)) != 0)
					__builtin_trap();
				if ((stored ? phi_audit_encode_record(b, &y) : phi_audit_encode_event(&b->ev, &y)) != 0 ||
				    x.len != y.len || memcmp(x.p, y.p, x.len) != 0)
					__builtin_trap();
			} else if (r != -E2BIG)
				__builtin_trap();
		}
		phi_buf_done(&x);
		phi_buf_done(&y);
		free(a);
		free(b);
		break;
	}
	case 2: {
		struct phi_audit_seghdr h;
		if (phi_audit_seghdr_parse(p, n, &h) == 0 && (h.first_seq == 0 || !h.origin[0]))
			__builtin_trap();
		break;
	}
	default: {
		struct phi_cur c = phi_cur_init(p, n);
		const uint8_t *f;
		size_t len, last = 0;
		int r;
		while ((r = phi_audit_frame_next(&c, PHI_AUDIT_RECORD_MAX, &f, &len)) == 0) {
			if (f < p || f + len > p + n || len == 0 || c.off <= last)
				__builtin_trap();
			last = c.off;
		}
		if (r != -ENODATA && r != -EBADMSG)
			__builtin_trap();
		break;
	}
	}
	return 0;
}
