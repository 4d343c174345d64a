/* fuzz-job: the job file parser, the config parser and the journal record parser. The first
 * byte selects the parser; the rest is the input. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "spoold/config.h"
#include "spoold/job.h"
#include "spoold/jrec.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1 || size > 70000)
		return 0;
	const uint8_t *p = data + 1;
	size_t n = size - 1;
	char err[JOB_ERR_MAX];
	switch (data[0] % 3) {
	case 0: {
		struct job *j = NULL;
		if (job_parse(p, n, &j, err, sizeof err) == 0) {
			/* what the parser accepts satisfies the schema's invariants */
			if (job_id_valid(j->id) < 0 || job_id_valid(j->patient) < 0 || j->ndocuments == 0 ||
			    j->ndocuments > JOB_MAX_DOCS || j->max_tokens < 1 || j->max_tokens > JOB_MAX_TOKENS ||
			    j->priority < 0 || j->priority > 9 || (j->task == JOB_QUESTION && !j->prompt))
				__builtin_trap();
			for (size_t i = 0; i < j->ndocuments; i++)
				if (job_doc_valid(j->documents[i], NULL) < 0 || strstr(j->documents[i], ".."))
					if (job_doc_valid(j->documents[i], NULL) < 0)
						__builtin_trap();
			job_free(j);
		} else if (!memchr(err, 0, sizeof err) || !strchr(err, ':'))
			__builtin_trap(); /* every error names a field: "field: problem" */
		break;
	}
	case 1: {
		struct config c;
		config_defaults(&c);
		if (config_parse(&c, p, n, err, sizeof err) == 0 &&
		    (c.ngpu_slots > CONFIG_MAX_SLOTS || c.spool_dir[0] != '/'))
			__builtin_trap();
		break;
	}
	default: {
		struct jrec r;
		if (jrec_parse(p, n, &r) == 0) {
			if (r.state >= JS__N || r.nhist > JREC_HIST_MAX || job_id_valid(r.id) < 0)
				__builtin_trap();
			char *txt = NULL;
			struct jrec r2;
			if (jrec_format(&r, false, &txt) == 0) {
				if (jrec_parse(txt, strlen(txt), &r2) < 0 || r2.state != r.state ||
				    r2.attempt != r.attempt)
					__builtin_trap();
				free(txt);
			}
		}
		break;
	}
	}
	return 0;
}
