/* audit-report.h: `phifs-audit report` (compliance report, Markdown + self-contained HTML with
 * inline SVG charts) and `phifs-audit watch` (real-time rules that write alert records). */
#ifndef PHI_AUDIT_REPORT_H
#define PHI_AUDIT_REPORT_H

#include <stdio.h>

#include "phifs/audit-client.h"
#include "phifs/audit.h"

/* Records with from_ns <= ts < to_ns (to_ns 0: no bound). Either output may be NULL. */
int phi_audit_report(const char *log_dir, int64_t from_ns, int64_t to_ns, FILE *md, FILE *html);

struct phi_audit_watch_opts {
	const char *log_dir;
	struct phi_audit_client *client; /* NULL: print only */
	unsigned work_from, work_to;     /* UTC hours [from, to) are working hours; from == to: none */
	unsigned deny_max;               /* denials per principal within deny_window_s: 5 */
	unsigned deny_window_s;          /* 600 */
	unsigned spike_max;              /* accesses per principal per minute: 100 */
	bool once;                       /* process what is there and return */
	unsigned interval_ms;            /* poll interval: 1000 */
	uint64_t from_seq;               /* skip records up to this seq */
};
/* Runs until an error (or one pass with once). Hits go to stdout and, with a client, into the
 * log as alert records. *ret_hits counts them. */
int phi_audit_watch(const struct phi_audit_watch_opts *o, uint64_t *ret_hits);

#endif
