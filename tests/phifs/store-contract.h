/* store-contract.h: the behaviour every store backend owes store.h, as one test suite
 * that each backend's unit test runs against a fresh, empty store. */
#ifndef PHI_STORE_CONTRACT_H
#define PHI_STORE_CONTRACT_H

#include <stdbool.h>
#include "phifs/store.h"

struct store_caps {
	bool hardlinks; /* link() works; otherwise it must fail with EPERM and change nothing */
	/* backend-specific checks of "d/f" after its getattr (e.g. against lstat) */
	void (*stat_hook)(void *ctx, const char *path, const struct phi_store_stat *st);
	void *ctx;
};

/* readdir collection, shared with backend-specific tests */
struct names {
	char n[16][64];
	uint32_t type[16];
	int count;
	int stop_after; /* >0: return 1 after that many entries */
	int fail_with;  /* <0: return it on the first entry */
};
int contract_collect(void *ctx, const char *name, uint32_t type);
int contract_find(const struct names *ns, const char *name);

/* Runs every contract test on s, which must be empty; leaves entries behind. */
void store_contract_run(struct phi_store *s, const struct store_caps *caps);

#endif
