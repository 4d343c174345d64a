/* fuzz-runfile: gpurun's runtime file parser (gpurun/runfile.h) on hostile bytes: the file
 * is written by the user spoold and read by gpurun as root. The whole input is the file.
 * Checked, independently of the parser's own code: a refusal leaves the output untouched;
 * what is accepted is spoold's alphabet only, appears in the input as its own line, and
 * parses again to the same result from a canonical rewrite. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gpurun/runfile.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* "\nkey=value\n" (or at the start, or at the end without '\n') is in the input */
static int has_line(const uint8_t *data, size_t size, const char *key, const char *value)
{
	char want[RUNFILE_SLOTS_LEN + 32];
	int n = snprintf(want, sizeof want, "%s=%s", key, value);
	if (n < 0 || (size_t)n >= sizeof want)
		return 0;
	for (size_t i = 0; i + (size_t)n <= size; i++) {
		if (i > 0 && data[i - 1] != '\n')
			continue;
		if (memcmp(data + i, want, (size_t)n))
			continue;
		if (i + (size_t)n == size || data[i + (size_t)n] == '\n')
			return 1;
	}
	return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size > 4 * RUNFILE_MAX_BYTES)
		return 0;
	struct runfile rf, before;
	memset(&rf, 0x5a, sizeof rf);
	before = rf;
	char err[256] = "";
	int r = runfile_parse((const char *)data, size, &rf, err, sizeof err);
	if (r < 0) {
		if (memcmp(&rf, &before, sizeof rf) || !err[0] || strlen(err) >= sizeof err)
			__builtin_trap();
		return 0;
	}
	if (size > RUNFILE_MAX_BYTES)
		__builtin_trap();
	if (!rf.has_slots && rf.slots[0])
		__builtin_trap();
	if (!rf.has_attempt && rf.attempt[0])
		__builtin_trap();
	if (rf.has_slots) {
		size_t n = strnlen(rf.slots, sizeof rf.slots);
		if (n == sizeof rf.slots || !has_line(data, size, "cuda_visible_devices", rf.slots))
			__builtin_trap();
		/* digits and single commas, no empty slot, no leading zero, each <= 1023 */
		unsigned count = 0, v = 0, digits = 0;
		for (size_t i = 0; i <= n; i++) {
			char c = rf.slots[i];
			if (c >= '0' && c <= '9') {
				if (digits == 1 && v == 0)
					__builtin_trap();
				v = v * 10 + (unsigned)(c - '0');
				digits++;
				if (v > RUNFILE_SLOT_MAX)
					__builtin_trap();
			} else if (c == ',' || c == 0) {
				if (n && !digits)
					__builtin_trap();
				count += digits > 0;
				v = digits = 0;
			} else {
				__builtin_trap();
			}
		}
		if (count > RUNFILE_SLOTS_MAX)
			__builtin_trap();
	}
	if (rf.has_attempt) {
		size_t n = strnlen(rf.attempt, sizeof rf.attempt);
		if (n == 0 || n == sizeof rf.attempt || rf.attempt[0] == '.' ||
		    strspn(rf.attempt, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-") != n ||
		    !has_line(data, size, "attempt", rf.attempt))
			__builtin_trap();
	}
	/* the canonical form (what gpurun-systemd writes) parses to the same */
	char canon[RUNFILE_MAX_BYTES];
	int cn = snprintf(canon, sizeof canon, "%s%s%s%s%s%s", rf.has_slots ? "cuda_visible_devices=" : "",
			  rf.has_slots ? rf.slots : "", rf.has_slots ? "\n" : "", rf.has_attempt ? "attempt=" : "",
			  rf.has_attempt ? rf.attempt : "", rf.has_attempt ? "\n" : "");
	if (cn < 0 || (size_t)cn >= sizeof canon)
		__builtin_trap();
	struct runfile again;
	if (runfile_parse(canon, (size_t)cn, &again, err, sizeof err) < 0 ||
	    again.has_slots != rf.has_slots || again.has_attempt != rf.has_attempt ||
	    strcmp(again.slots, rf.has_slots ? rf.slots : "") ||
	    strcmp(again.attempt, rf.has_attempt ? rf.attempt : ""))
		__builtin_trap();
	return 0;
}
