/* prov_slurm.c: the Slurm backend (placeholder until it lands). */
#include "prov.h"

int prov_slurm_new(const struct config *c, const char *spool, struct prov **ret)
{
	(void)c;
	(void)spool;
	(void)ret;
	return -EOPNOTSUPP;
}
