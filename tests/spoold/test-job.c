/* test-job: golden vectors for the job file parser (valid files and each refusal with its
 * exact reason), the config parser and the journal record round trip. */
#include <errno.h>
#include <string.h>

#include "spoold/config.h"
#include "spoold/job.h"
#include "spoold/jrec.h"
#include "test.h"

#define BASE "\"version\":1,\"id\":\"j-1\",\"patient\":\"p-0042\",\"documents\":[\"notes/*.txt\"]," \
	     "\"task\":\"summarize\",\"model\":\"stories260K.gguf\",\"max_tokens\":256," \
	     "\"requested_by\":\"dr.who\",\"purpose\":\"treatment\""

static void refused(const char *json, const char *want)
{
	struct job *j = NULL;
	char err[JOB_ERR_MAX];
	int r = job_parse(json, strlen(json), &j, err, sizeof err);
	if (r == 0 || strcmp(err, want) != 0) {
		fprintf(stderr, "input: %s\n  got r=%d err='%s'\n  want '%s'\n", json, r, r ? err : "", want);
		exit(1);
	}
	CHECK(j == NULL);
}

int main(void)
{
	/* a complete valid job */
	const char *ok = "{" BASE ",\"priority\":7,\"deadline\":\"2026-12-31T23:59:59Z\","
			 "\"estimated_tokens\":1234}\n";
	struct job *j = NULL;
	char err[JOB_ERR_MAX];
	CHECK_OK(job_parse(ok, strlen(ok), &j, err, sizeof err));
	CHECK(!strcmp(j->id, "j-1") && !strcmp(j->patient, "p-0042"));
	CHECK_EQ(j->ndocuments, 1);
	CHECK(!strcmp(j->documents[0], "notes/*.txt"));
	CHECK_EQ(j->task, JOB_SUMMARIZE);
	CHECK(j->prompt == NULL);
	CHECK_EQ(j->max_tokens, 256);
	CHECK_EQ(j->priority, 7);
	CHECK_EQ(j->deadline_ms, 1798761599000ULL); /* date -d 2026-12-31T23:59:59Z +%s */
	CHECK_EQ(j->estimated_tokens, 1234);
	CHECK(!strcmp(j->purpose, "treatment"));
	j = job_free(j);

	/* question with a prompt; default priority; not NUL-terminated buffer */
	char q[] = "{\"version\":1,\"id\":\"q\",\"patient\":\"p\",\"documents\":[\"a.md\",\"fhir/*.json\"],"
		   "\"task\":\"question\",\"prompt\":\"Any allergies?\",\"model\":\"m\",\"max_tokens\":1,"
		   "\"requested_by\":\"x\",\"purpose\":\"research\"}XXXX";
	CHECK_OK(job_parse(q, strlen(q) - 4, &j, err, sizeof err));
	CHECK_EQ(j->task, JOB_QUESTION);
	CHECK(!strcmp(j->prompt, "Any allergies?"));
	CHECK_EQ(j->priority, 5);
	CHECK_EQ(j->ndocuments, 2);
	j = job_free(j);

	/* each refusal names the field and the problem */
	refused("", "(file): not valid JSON (at byte 0)");
	refused("{\"version\":1,", "(file): not valid JSON (at byte 12)");
	refused("[1,2]", "(top level): must be a JSON object");
	refused("{" BASE "} {}", "(file): trailing data after the JSON object");
	refused("{" BASE ",\"extra\":1}", "extra: unknown field");
	refused("{" BASE ",\"id\":\"j-2\"}", "id: duplicate field");
	refused("{\"version\":1}", "id: missing");
	refused("{" BASE ",\"priority\":\"high\"}", "priority: must be a number");
	refused("{" BASE ",\"priority\":10}", "priority: must be an integer from 0 to 9");
	refused("{" BASE ",\"priority\":1.5}", "priority: must be an integer from 0 to 9");
	refused("{\"version\":2,\"id\":\"j\",\"patient\":\"p\",\"documents\":[\"a\"],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"version: unsupported (this spoold reads 1)");
	refused("{\"version\":1,\"id\":\"../x\",\"patient\":\"p\",\"documents\":[\"a\"],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"id: only A-Z a-z 0-9 _ . - allowed, not starting with '.'");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":123,\"documents\":[\"a\"],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"patient: must be a string");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":[\"a\",\"../q/b\"],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"documents[1]: '..' not allowed");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":[\"/etc/passwd\"],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"documents[0]: absolute path not allowed");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":[\"a/./b\"],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"documents[0]: '.' component not allowed");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":[],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"documents: must not be empty");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":\"a\",\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"documents: must be an array of strings");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":[\"a\"],\"task\":\"question\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"prompt: missing (required with task question)");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":[\"a\"],\"task\":\"translate\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"task: must be summarize, extract or question");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":[\"a\"],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":0,\"requested_by\":\"x\",\"purpose\":\"treatment\"}",
		"max_tokens: must be an integer from 1 to 32768");
	refused("{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"documents\":[\"a\"],\"task\":\"summarize\","
		"\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"curiosity\"}",
		"purpose: must be treatment, payment, operations or research");
	refused("{" BASE ",\"deadline\":\"2026-02-31T00:00:00Z\"}",
		"deadline: must be RFC 3339 UTC, e.g. 2026-01-31T18:00:00Z");
	/* huge fields */
	static char big[JOB_MAX_BYTES + 2];
	memset(big, ' ', sizeof big - 1);
	big[0] = '{';
	big[sizeof big - 2] = '}';
	CHECK_EQ(job_parse(big, sizeof big - 1, &j, err, sizeof err), -EFBIG);
	CHECK(!strcmp(err, "(file): larger than 65536 bytes"));
	char longid[400];
	snprintf(longid, sizeof longid,
		 "{\"version\":1,\"id\":\"%065d\",\"patient\":\"p\",\"documents\":[\"a\"],\"task\":\"summarize\","
		 "\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\"}", 0);
	refused(longid, "id: too long");
	/* 65 documents */
	char many[2048] = "{\"version\":1,\"id\":\"j\",\"patient\":\"p\",\"task\":\"summarize\","
			  "\"model\":\"m\",\"max_tokens\":1,\"requested_by\":\"x\",\"purpose\":\"treatment\",\"documents\":[";
	for (int i = 0; i < 65; i++)
		strcat(many, i ? ",\"d\"" : "\"d\"");
	strcat(many, "]}");
	refused(many, "documents: more than 64 entries");

	/* time parser */
	uint64_t ms;
	CHECK_OK(job_parse_time("1970-01-01T00:00:01.250Z", &ms));
	CHECK_EQ(ms, 1250);
	CHECK(job_parse_time("2026-01-01T00:00:00+01:00", &ms) < 0);

	/* config golden */
	struct config c;
	config_defaults(&c);
	CHECK_EQ(c.max_instances, 20);
	CHECK_EQ(c.lifetime_sec, 1800);
	CHECK_EQ(c.budget_day_micro, 1000000000ULL);
	CHECK_EQ(c.budget_month_micro, 25000000000ULL);
	CHECK_EQ(c.cost_per_min_micro[0], 15000);
	CHECK_EQ(c.cost_per_min_micro[1], 30000);
	CHECK_EQ(c.cost_per_min_micro[2], 60000);
	const char *cf = "# spoold\n spool_dir = /srv/spool \nbackend=slurm\ngpu_slots = 3,1,2\n"
			 "budget_day_usd = 12.5\ncost_large_usd_per_min=0.000001\nmax_instances=4\n";
	CHECK_OK(config_parse(&c, cf, strlen(cf), err, sizeof err));
	CHECK(!strcmp(c.spool_dir, "/srv/spool"));
	CHECK_EQ(c.backend, BACKEND_SLURM);
	CHECK_EQ(c.ngpu_slots, 3);
	CHECK_EQ(c.gpu_slots[0], 3);
	CHECK_EQ(c.budget_day_micro, 12500000);
	CHECK_EQ(c.cost_per_min_micro[2], 1);
	CHECK_EQ(c.max_instances, 4);
	struct config c2 = c;
	const char *bad = "max_instances = 4\nfoo = 1\n";
	CHECK(config_parse(&c2, bad, strlen(bad), err, sizeof err) < 0);
	CHECK(!strcmp(err, "line 2: foo: unknown key"));
	CHECK(memcmp(&c, &c2, sizeof c) == 0); /* untouched on failure */
	bad = "gpu_slots = 1,1\n";
	CHECK(config_parse(&c2, bad, strlen(bad), err, sizeof err) < 0);
	bad = "budget_day_usd = 1.0000001\n";
	CHECK(config_parse(&c2, bad, strlen(bad), err, sizeof err) < 0);
	CHECK(!strcmp(err, "line 1: budget_day_usd: must be a dollar amount like 0.015 (at most 6 decimals)"));
	bad = "spool_dir = relative\n";
	CHECK(config_parse(&c2, bad, strlen(bad), err, sizeof err) < 0);

	/* journal round trip */
	struct jrec r, r2;
	jrec_init(&r, "j-1");
	r.attempt = 2;
	r.tier = 1;
	r.gpus = 2;
	r.pid = 4242;
	r.starttime = 987654321;
	strcpy(r.slots, "0,1");
	strcpy(r.backend_id, "spoold-j-1.2");
	r.cost_micro = 450000;
	r.received_ms = 1796478429057ULL;
	jrec_set_state(&r, JS_QUEUED, 1796478429057ULL);
	jrec_set_state(&r, JS_RUNNING, 1796478429099ULL);
	char *txt = NULL;
	CHECK_OK(jrec_format(&r, false, &txt));
	CHECK_OK(jrec_parse(txt, strlen(txt), &r2));
	CHECK(memcmp(&r, &r2, sizeof r) == 0 || (r2.attempt == 2 && r2.pid == 4242 &&
		r2.starttime == 987654321 && !strcmp(r2.slots, "0,1") && r2.nhist == 2 &&
		r2.hist[1].at_ms == 1796478429099ULL && r2.state == JS_RUNNING && r2.tier == 1));
	free(txt);
	CHECK(jrec_parse("{\"version\":2}", 13, &r2) < 0);
	char t64[64];
	fmt_time_ms(1796478429057ULL, t64);
	CHECK(!strcmp(t64, "2026-12-05T13:47:09.057Z"));
	printf("ok\n");
	return 0;
}
