/* test-doc: documents to prompt text (gpurun/doc.h), the runner's configuration
 * (gpurun/runconf.h), the phifs mount options it builds (gpurun/runner.h) and secbufs
 * (gpurun/secbuf.h). Golden renderings of FHIR resources. */
#include <errno.h>
#include <sodium.h>
#include <string.h>

#include "test.h"

#include "gpurun/doc.h"
#include "gpurun/runconf.h"
#include "gpurun/runner.h"
#include "gpurun/secbuf.h"

static char *render(const char *name, const char *in, int *ret_r, enum doc_kind *kind,
		    struct phi_secbuf *b)
{
	const char *why = NULL;
	phi_secbuf_clear(b);
	*ret_r = doc_render(name, (const uint8_t *)in, strlen(in), b, kind, &why);
	return b->p ? b->p : "";
}

static void test_doc(void)
{
	struct phi_scrub_tally t = { 0 };
	struct phi_secbuf b;
	phi_secbuf_init(&b, 1 << 20, &t);
	int r;
	enum doc_kind k = DOC_BINARY;
	CHECK(!strcmp(render("a.txt", "hello", &r, &k, &b), "hello\n"));
	CHECK_OK(r);
	CHECK_EQ(k, DOC_TEXT);
	render("x.md", "# h\n", &r, &k, &b);
	CHECK_EQ(k, DOC_MARKDOWN);
	render("x.csv", "a,b\n1,2\n", &r, &k, &b);
	CHECK_EQ(k, DOC_CSV);
	CHECK(!strcmp(b.p, "a,b\n1,2\n"));

	const char *bundle =
		"{\"resourceType\":\"Bundle\",\"type\":\"collection\",\"entry\":["
		"{\"resource\":{\"resourceType\":\"Observation\",\"status\":\"final\",\"code\":{\"text\":\"HbA1c\"},"
		"\"valueQuantity\":{\"value\":7.1,\"unit\":\"%\"},\"effectiveDateTime\":\"2026-11-01\"}},"
		"{\"resource\":{\"resourceType\":\"Condition\",\"code\":{\"coding\":[{\"display\":\"Asthma\"}]},"
		"\"clinicalStatus\":{\"text\":\"active\"},\"onsetDateTime\":\"2019\"}},"
		"{\"resource\":{\"resourceType\":\"MedicationStatement\",\"status\":\"active\","
		"\"medicationCodeableConcept\":{\"text\":\"Salbutamol\"},\"dosage\":[{\"text\":\"as needed\"}]}},"
		"{\"resource\":{\"resourceType\":\"DiagnosticReport\",\"status\":\"final\",\"code\":{\"text\":\"CBC\"},"
		"\"conclusion\":\"normal\"}},"
		"{\"resource\":{\"resourceType\":\"DocumentReference\",\"type\":{\"text\":\"Letter\"},"
		"\"content\":[{\"attachment\":{\"contentType\":\"text/plain\",\"data\":\"aGVsbG8gd29ybGQ=\"}}]}}]}";
	render("b.json", bundle, &r, &k, &b);
	CHECK_OK(r);
	CHECK_EQ(k, DOC_FHIR);
	const char *want = "Bundle (collection), 5 entries:\n"
			   "Observation: HbA1c = 7.1 % on 2026-11-01 (final)\n"
			   "Condition: Asthma, clinical status active, onset 2019\n"
			   "Medication: Salbutamol, dosage as needed (active)\n"
			   "Diagnostic report: CBC. Conclusion: normal (final)\n"
			   "Document: Letter\n  text: hello world\n";
	if (strcmp(b.p, want)) {
		fprintf(stderr, "got:\n%s\nwant:\n%s\n", b.p, want);
		CHECK(0);
	}
	render("p.json", "{\"a\":{\"b\":[1,\"x\"]},\"c\":true}", &r, &k, &b);
	CHECK_OK(r);
	CHECK_EQ(k, DOC_JSON);
	CHECK(!strcmp(b.p, "a: \n  b: \n    1\n    x\nc: true\n"));
	/* refusals: PDF by magic or name, binary, broken JSON; nothing appended */
	render("scan.bin", "%PDF-1.4\n", &r, &k, &b);
	CHECK_EQ(r, -EMEDIUMTYPE);
	CHECK_EQ(b.len, 0);
	render("x.pdf", "text", &r, &k, &b);
	CHECK_EQ(r, -EMEDIUMTYPE);
	CHECK_EQ(doc_render("z", (const uint8_t *)"a\0b", 3, &b, &k, NULL), -EMEDIUMTYPE);
	render("bad.json", "{\"a\":", &r, &k, &b);
	CHECK_EQ(r, -EBADMSG);
	phi_secbuf_done(&b);
	CHECK(t.buffers >= 1 && t.bytes >= 4096);
}

static void test_secbuf(void)
{
	struct phi_scrub_tally t = { 0 };
	struct phi_secbuf b;
	phi_secbuf_init(&b, 10000, &t);
	for (int i = 0; i < 1000; i++)
		CHECK_OK(phi_secbuf_puts(&b, "abcdefghi"));
	CHECK_EQ(b.len, 9000);
	CHECK_EQ(phi_secbuf_append(&b, "x", 1001), -E2BIG);
	CHECK_EQ(b.len, 9000);
	CHECK_OK(phi_secbuf_printf(&b, "%d-%s", 42, "z"));
	CHECK(!strcmp(b.p + 9000, "42-z"));
	CHECK(t.buffers >= 2); /* growth wiped and unmapped the smaller mapping */
	phi_secbuf_done(&b);
	CHECK(!b.p && !b.len);
	CHECK_EQ(t.locked + t.unlocked, t.buffers);
}

static void test_runconf(void)
{
	struct runconf c;
	char err[128];
	runconf_defaults(&c);
	const char *ok = "# c\nstore = /s\nthreads = 4\ncost_usd_per_hour = 1.25\n"
			 "template_summarize = Sum:\\n{documents}\\nEnd\nno_gpu = true\n";
	CHECK_OK(runconf_parse(&c, ok, strlen(ok), err, sizeof err));
	CHECK(!strcmp(c.store, "/s"));
	CHECK_EQ(c.threads, 4);
	CHECK_EQ(c.cost_micro_usd_per_hour, 1250000);
	CHECK(!strcmp(c.template_[0], "Sum:\n{documents}\nEnd"));
	CHECK_EQ(c.no_gpu, 1);
	CHECK(!*c.phifs_user); /* default: phifs keeps gpurun's identity */
	const char *pu = "phifs_user = phifs\n";
	CHECK_OK(runconf_parse(&c, pu, strlen(pu), err, sizeof err));
	CHECK(!strcmp(c.phifs_user, "phifs"));
	/* a user name with a 't' in it is a name like any other */
	const char *pt = "phifs_user = phistore\n";
	CHECK_OK(runconf_parse(&c, pt, strlen(pt), err, sizeof err));
	CHECK(!strcmp(c.phifs_user, "phistore"));
	/* it goes into phifs' -o list: no option separators, never root */
	const char *bad[] = { "nokey\n", "store = rel\n", "bogus = 1\n", "threads = -1\n",
			      "template_question = no placeholder\n", "cost_usd_per_hour = 1.1234567\n",
			      "phifs_user = a,allow_root\n", "phifs_user = a=b\n", "phifs_user = root\n",
			      "phifs_user = a\tb\n", "phifs_user = a\\b\n" };
	for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
		runconf_defaults(&c);
		CHECK_EQ(runconf_parse(&c, bad[i], strlen(bad[i]), err, sizeof err), -EINVAL);
		CHECK(!strncmp(err, "line 1", 6));
	}
	runconf_defaults(&c);
	snprintf(c.job_user, sizeof c.job_user, "root");
	CHECK(runconf_resolve(&c, err, sizeof err) < 0); /* never root */
}

/* gpurun's -o list for phifs: direct_io always; run_as never dropped to make it fit */
static void test_phifs_options(void)
{
	struct runconf c;
	char o[RUNCONF_PATH_MAX + 192];
	runconf_defaults(&c);
	snprintf(c.audit_socket, sizeof c.audit_socket, "/run/a.sock");
	CHECK_OK(runner_phifs_options(&c, o, sizeof o));
	CHECK(!strcmp(o, "grants,audit_socket=/run/a.sock,allow_other,direct_io"));
	snprintf(c.phifs_user, sizeof c.phifs_user, "phifs");
	CHECK_OK(runner_phifs_options(&c, o, sizeof o));
	CHECK(!strcmp(o, "grants,audit_socket=/run/a.sock,allow_other,direct_io,run_as=phifs"));
	*c.audit_socket = 0;
	CHECK_OK(runner_phifs_options(&c, o, sizeof o));
	CHECK(!strcmp(o, "grants,allow_other,direct_io,run_as=phifs"));
	/* exactly fits (with its NUL); one byte less: refused, and buf untouched */
	size_t need = strlen(o) + 1;
	char small[64];
	memset(small, 'x', sizeof small);
	CHECK_OK(runner_phifs_options(&c, small, need));
	CHECK(!strcmp(small, o));
	memset(small, 'x', sizeof small);
	CHECK_EQ(runner_phifs_options(&c, small, need - 1), -ENAMETOOLONG);
	CHECK_EQ(small[0], 'x');
	/* everything up to run_as fits, run_as does not: refused, not mounted as root */
	CHECK_EQ(runner_phifs_options(&c, small, strlen("grants,allow_other,direct_io") + 1), -ENAMETOOLONG);
	CHECK_EQ(small[0], 'x');
	/* the longest values the configuration takes still fit gpurun's own buffer */
	memset(c.audit_socket, 'a', sizeof c.audit_socket - 1);
	c.audit_socket[0] = '/';
	c.audit_socket[sizeof c.audit_socket - 1] = 0;
	memset(c.phifs_user, 'u', sizeof c.phifs_user - 1);
	c.phifs_user[sizeof c.phifs_user - 1] = 0;
	CHECK_OK(runner_phifs_options(&c, o, sizeof o));
	CHECK(strstr(o, ",run_as=uuu") != NULL);
	/* a comma in a value would be options of its own */
	snprintf(c.audit_socket, sizeof c.audit_socket, "/run/a.sock,allow_root");
	memset(o, 'x', sizeof o);
	CHECK_EQ(runner_phifs_options(&c, o, sizeof o), -EINVAL);
	CHECK_EQ(o[0], 'x');
}

int main(void)
{
	CHECK(sodium_init() >= 0);
	test_doc();
	test_secbuf();
	test_runconf();
	test_phifs_options();
	puts("ok");
	return 0;
}
