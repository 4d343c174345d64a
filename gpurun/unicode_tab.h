/* unicode_tab.h: sorted code point ranges of the Unicode categories L and N. */
#ifndef PHI_UNICODE_TAB_H
#define PHI_UNICODE_TAB_H

#include <stdint.h>

struct phi_urange {
	uint32_t lo, hi;
};

extern const struct phi_urange phi_u_letter[];
extern const unsigned phi_u_letter_n;
extern const struct phi_urange phi_u_number[];
extern const unsigned phi_u_number_n;

#endif
