/* job.h: the job file (docs/job-schema.md): parse and validate one JSON job from a bounded
 * buffer. Every error names the field and the problem, never the field's value (values may
 * be PHI: patient ids, document names, prompts). */
#ifndef SPOOLD_JOB_H
#define SPOOLD_JOB_H

#include <stddef.h>
#include <stdint.h>

#define JOB_VERSION 1
#define JOB_ID_MAX 64          /* [A-Za-z0-9_.-]{1,64}, not starting with '.' */
#define JOB_MAX_BYTES 65536    /* default cap on a job file */
#define JOB_MAX_DOCS 64
#define JOB_DOC_MAX 255
#define JOB_PROMPT_MAX 4096
#define JOB_MODEL_MAX 128
#define JOB_WHO_MAX 128
#define JOB_MAX_TOKENS 32768
#define JOB_ERR_MAX 160
#define JOB_ID_MAX_NAME 96 /* room for "<id>.result.json" */

enum job_task { JOB_SUMMARIZE, JOB_EXTRACT, JOB_QUESTION };

struct job {
	uint32_t version;
	char id[JOB_ID_MAX + 1];
	char patient[JOB_ID_MAX + 1];
	char *documents[JOB_MAX_DOCS];
	size_t ndocuments;
	enum job_task task;
	char *prompt; /* required for question, optional for extract, NULL otherwise */
	char model[JOB_MODEL_MAX + 1];
	uint32_t max_tokens;
	int priority; /* 0..9, higher first; default 5 */
	char requested_by[JOB_WHO_MAX + 1];
	char purpose[16];
	uint64_t deadline_ms;      /* 0: none */
	uint64_t estimated_tokens; /* 0: not given */
};

/* Parse buf[0..len) (not necessarily NUL-terminated). On failure returns -EBADMSG (not JSON)
 * or -EINVAL (invalid field) and writes "field: problem" to err. */
int job_parse(const void *buf, size_t len, struct job **ret, char *err, size_t errlen);
struct job *job_free(struct job *j);
static inline void job_freep(struct job **j)
{
	*j = job_free(*j);
}
#define _cleanup_job_ __attribute__((cleanup(job_freep)))

/* [A-Za-z0-9_.-]{1,64}, not starting with '.' (the patient id rule). */
int job_id_valid(const char *id);
/* A document path or glob inside the patient's directory: relative, no '..' component,
 * no empty component, printable. Returns 0 or -EINVAL with a problem text. */
int job_doc_valid(const char *doc, const char **problem);
const char *job_task_name(enum job_task t);
/* RFC 3339 UTC "YYYY-MM-DDTHH:MM:SS[.fff]Z" to ms since the epoch. */
int job_parse_time(const char *s, uint64_t *ret_ms);

#endif
