/* test-grants: grant rules, the payload format (golden vector), sealed grant files on a
 * store (tampered, swapped, rolled back), lookups to the second, refresh of a loaded set
 * and lookups racing a refresh. */
#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <sys/stat.h>
#include <time.h>

#include "phifs/crypto.h"
#include "phifs/grants.h"
#include "phifs/keys.h"
#include "phifs/store.h"
#include "phifs/util.h"
#include "test.h"

static char root[] = "/tmp/test-grants.XXXXXX";

#define T0 1800000000ull /* 2027-01-15T08:00:00Z */

/* A valid provider grant of uid 1001 for p-0042, valid [T0, T0 + 24 h). */
static struct phi_grant provider(void)
{
	struct phi_grant g = {
		.id = "g-0123456789abcdef",
		.principal_kind = PHI_PRINCIPAL_USER,
		.principal_id = 1001,
		.principal_name = "alice",
		.patient = "p-0042",
		.role = PHI_ROLE_PROVIDER,
		.purpose = PHI_PURPOSE_TREATMENT,
		.not_before = T0,
		.expiry = T0 + 86400,
		.created = T0 - 1000,
		.granted_by_uid = 0,
		.granted_by_name = "root",
		.consent = "CONSENT-7",
	};
	return g;
}

static void test_names(void)
{
	enum phi_role r;
	enum phi_purpose p;
	CHECK_OK(phi_role_parse("auditor", &r));
	CHECK_EQ(r, PHI_ROLE_AUDITOR);
	CHECK_EQ(phi_role_parse("root", &r), -EINVAL);
	CHECK_EQ(phi_role_parse("none", &r), -EINVAL);
	CHECK_OK(phi_purpose_parse("emergency", &p));
	CHECK_EQ(p, PHI_PURPOSE_EMERGENCY);
	CHECK_EQ(phi_purpose_parse("fun", &p), -EINVAL);
	CHECK(!strcmp(phi_role_name(PHI_ROLE_JOB), "job"));
	CHECK(!strcmp(phi_purpose_name(PHI_PURPOSE_OPERATIONS), "operations"));
	CHECK(!strcmp(phi_deny_name(PHI_DENY_NOT_YET_VALID), "not-yet-valid"));
	CHECK(!strcmp(phi_deny_name(PHI_DENY_ROLE_FORBIDS), "role-forbids"));

	uint8_t kind;
	uint32_t id;
	char name[PHI_GRANT_NAME_MAX + 1];
	CHECK_OK(phi_principal_parse("user:root", &kind, &id, name));
	CHECK_EQ(kind, PHI_PRINCIPAL_USER);
	CHECK_EQ(id, 0);
	CHECK(!strcmp(name, "root"));
	CHECK_OK(phi_principal_parse("user:0", &kind, &id, name));
	CHECK(!strcmp(name, "root"));
	CHECK_OK(phi_principal_parse("group:0", &kind, &id, name));
	CHECK_EQ(kind, PHI_PRINCIPAL_GROUP);
	CHECK_EQ(id, 0);
	CHECK_EQ(phi_principal_parse("user:no-such-user-xq", &kind, &id, name), -ENOENT);
	CHECK_EQ(phi_principal_parse("user:3999999", &kind, &id, name), -ENOENT);
	CHECK_EQ(phi_principal_parse("root", &kind, &id, name), -EINVAL);
	CHECK_EQ(phi_principal_parse("user:", &kind, &id, name), -EINVAL);
	CHECK_EQ(phi_principal_parse("user:a b", &kind, &id, name), -EINVAL);

	char id1[PHI_GRANT_ID_LEN + 1], id2[PHI_GRANT_ID_LEN + 1];
	phi_grant_new_id(id1);
	phi_grant_new_id(id2);
	CHECK_EQ(strlen(id1), PHI_GRANT_ID_LEN);
	CHECK(!strncmp(id1, "g-", 2));
	CHECK(strcmp(id1, id2) != 0);
	struct phi_grant g = provider();
	memcpy(g.id, id1, sizeof(id1));
	CHECK_OK(phi_grant_validate(&g, NULL));
}

static void expect_bad(const struct phi_grant *g, const char *why_part)
{
	const char *why = NULL;
	CHECK_EQ(phi_grant_validate(g, &why), -EINVAL);
	CHECK(why && strstr(why, why_part));
}

static void test_rules(void)
{
	struct phi_grant g = provider();
	CHECK_OK(phi_grant_validate(&g, NULL));

	/* provider: consent, at most 72 hours (to the second) */
	g.consent[0] = 0;
	expect_bad(&g, "consent");
	g = provider();
	g.expiry = g.not_before + 72 * 3600;
	CHECK_OK(phi_grant_validate(&g, NULL));
	g.expiry++;
	expect_bad(&g, "72 hours");
	g = provider();
	g.expiry = g.not_before;
	expect_bad(&g, "after");

	/* emergency: provider, reason, at most 4 hours, purpose emergency <-> flag */
	g = provider();
	g.consent[0] = 0;
	g.emergency = true;
	g.purpose = PHI_PURPOSE_EMERGENCY;
	snprintf(g.reason, sizeof(g.reason), "unconscious in the ER");
	g.expiry = g.not_before + 4 * 3600;
	CHECK_OK(phi_grant_validate(&g, NULL));
	g.expiry++;
	expect_bad(&g, "4 hours");
	g.expiry--;
	g.reason[0] = 0;
	expect_bad(&g, "reason");
	snprintf(g.reason, sizeof(g.reason), "line\nbreak");
	expect_bad(&g, "one line");
	snprintf(g.reason, sizeof(g.reason), "x");
	g.emergency = false;
	expect_bad(&g, "emergency");
	g.emergency = true;
	g.role = PHI_ROLE_SERVICE;
	expect_bad(&g, "provider");

	/* job: purpose job, one patient; "*" only for service, admin, auditor */
	g = provider();
	g.role = PHI_ROLE_JOB;
	expect_bad(&g, "job");
	g.purpose = PHI_PURPOSE_JOB;
	g.expiry = g.not_before + 30 * 86400; /* no length limit */
	CHECK_OK(phi_grant_validate(&g, NULL));
	snprintf(g.patient, sizeof(g.patient), "*");
	expect_bad(&g, "every patient");
	g = provider();
	snprintf(g.patient, sizeof(g.patient), "*");
	expect_bad(&g, "every patient");
	g.role = PHI_ROLE_SERVICE;
	g.purpose = PHI_PURPOSE_OPERATIONS;
	g.expiry = g.not_before + 3650ull * 86400;
	CHECK_OK(phi_grant_validate(&g, NULL));
	g.role = PHI_ROLE_AUDITOR;
	CHECK_OK(phi_grant_validate(&g, NULL));
	g.purpose = PHI_PURPOSE_JOB;
	expect_bad(&g, "job");

	/* malformed fields */
	g = provider();
	g.id[5] = 'X';
	expect_bad(&g, "grant id");
	g = provider();
	snprintf(g.patient, sizeof(g.patient), "../x");
	expect_bad(&g, "patient");
	g = provider();
	g.principal_kind = 3;
	expect_bad(&g, "principal");
	g = provider();
	g.principal_name[0] = 0;
	expect_bad(&g, "name");
	g = provider();
	snprintf(g.consent, sizeof(g.consent), "has space");
	expect_bad(&g, "consent");
	g = provider();
	g.role = 9;
	expect_bad(&g, "role");
	g = provider();
	g.purpose = 0;
	expect_bad(&g, "purpose");
	g = provider();
	g.revoked = true;
	expect_bad(&g, "revocation");
	g.revoked_at = T0;
	CHECK_OK(phi_grant_validate(&g, NULL));
	g = provider();
	g.created = 0;
	expect_bad(&g, "creation");
}

static void test_state(void)
{
	struct phi_grant g = provider();
	CHECK_EQ(phi_grant_state(&g, T0 - 1), PHI_DENY_NOT_YET_VALID);
	CHECK_EQ(phi_grant_state(&g, T0), PHI_DENY_NONE);
	CHECK_EQ(phi_grant_state(&g, T0 + 86399), PHI_DENY_NONE);
	CHECK_EQ(phi_grant_state(&g, T0 + 86400), PHI_DENY_EXPIRED);
	g.revoked = true;
	g.revoked_at = T0 + 5;
	CHECK_EQ(phi_grant_state(&g, T0 + 10), PHI_DENY_REVOKED);
}

/* The payload of docs/grants-format.md, built by hand from the table there. */
static const char golden_hex[] =
	"000000000000000700000001672d303132333435363738396162636465660100"
	"0003e905616c69636506702d30303432020100000000006b49d200000000006b"
	"4b2380000000006b49ce1800000000000000000000000004726f6f7400000000"
	"09434f4e53454e542d370000";

static size_t unhex(const char *h, uint8_t *out)
{
	size_t n = strlen(h) / 2;
	for (size_t i = 0; i < n; i++) {
		unsigned v;
		CHECK(sscanf(h + 2 * i, "%2x", &v) == 1);
		out[i] = (uint8_t)v;
	}
	return n;
}

static void test_payload(void)
{
	uint8_t gold[256];
	size_t glen = unhex(golden_hex, gold);
	CHECK_EQ(glen, 108);

	struct phi_grant g = provider();
	struct phi_buf b;
	phi_buf_init(&b, PHI_GRANTS_PAYLOAD_MAX);
	CHECK_OK(phi_grants_encode_payload(7, &g, 1, &b));
	CHECK_EQ(b.len, glen);
	CHECK_MEM(b.p, gold, glen);
	phi_buf_done(&b);

	uint64_t gen;
	struct phi_grant *out;
	size_t n;
	CHECK_OK(phi_grants_parse_payload(gold, glen, &gen, &out, &n));
	CHECK_EQ(gen, 7);
	CHECK_EQ(n, 1);
	CHECK(!strcmp(out[0].id, g.id) && out[0].principal_id == 1001 && out[0].role == PHI_ROLE_PROVIDER);
	CHECK(!strcmp(out[0].principal_name, "alice") && !strcmp(out[0].patient, "p-0042"));
	CHECK_EQ(out[0].expiry, T0 + 86400);
	CHECK(!strcmp(out[0].consent, "CONSENT-7") && out[0].reason[0] == 0);
	free(out);

	/* every truncation, a trailing byte, and single-byte edits that break a rule */
	for (size_t cut = 0; cut < glen; cut++)
		CHECK_EQ(phi_grants_parse_payload(gold, cut, &gen, &out, &n), -EBADMSG);
	uint8_t m[300];
	memcpy(m, gold, glen);
	m[glen] = 0;
	CHECK_EQ(phi_grants_parse_payload(m, glen + 1, &gen, &out, &n), -EBADMSG);
	struct {
		size_t off;
		uint8_t v;
	} const edits[] = {
		{ 11, 2 },    /* count 2, one grant */
		{ 11, 0 },    /* count 0, one grant left over */
		{ 14, 'G' },  /* id not hex */
		{ 30, 3 },    /* principal kind */
		{ 35, 0 },    /* principal name length 0 */
		{ 48, 9 },    /* role */
		{ 49, 5 },    /* purpose emergency without the flag */
		{ 50, 0x04 }, /* unknown flag */
		{ 50, 0x02 }, /* revoked without a time */
		{ 96, 0 },    /* consent length 0 for a provider */
	};
	for (size_t i = 0; i < ARRAY_SIZE(edits); i++) {
		memcpy(m, gold, glen);
		m[edits[i].off] = edits[i].v;
		CHECK_EQ(phi_grants_parse_payload(m, glen, &gen, &out, &n), -EBADMSG);
	}

	/* two grants: duplicate ids and mixed patients are refused */
	struct phi_grant two[2] = { provider(), provider() };
	two[1].id[17] = '0';
	phi_buf_init(&b, PHI_GRANTS_PAYLOAD_MAX);
	CHECK_OK(phi_grants_encode_payload(1, two, 2, &b));
	CHECK_OK(phi_grants_parse_payload(b.p, b.len, &gen, &out, &n));
	CHECK_EQ(n, 2);
	free(out);
	CHECK(b.len == 12 + 2 * 96);
	memcpy(b.p + 12 + 96 + 17, "f", 1); /* same id as the first */
	CHECK_EQ(phi_grants_parse_payload(b.p, b.len, &gen, &out, &n), -EBADMSG);
	memcpy(b.p + 12 + 96 + 17, "0", 1);
	memcpy(b.p + 12 + 96 + 35, "3", 1); /* p-0043 */
	CHECK_EQ(phi_grants_parse_payload(b.p, b.len, &gen, &out, &n), -EBADMSG);
	phi_buf_done(&b);

	/* the fixed part */
	uint8_t f[64] = "PHFG\x00\x01\x00\x00";
	const uint8_t *sealed;
	size_t sl;
	CHECK_OK(phi_grants_parse_file(f, 48, &sealed, &sl));
	CHECK(sealed == f + 8 && sl == 40);
	CHECK_EQ(phi_grants_parse_file(f, 47, &sealed, &sl), -EBADMSG);
	f[5] = 2;
	CHECK_EQ(phi_grants_parse_file(f, 48, &sealed, &sl), -EBADMSG);
	f[5] = 1;
	f[7] = 1;
	CHECK_EQ(phi_grants_parse_file(f, 48, &sealed, &sl), -EBADMSG);
	f[7] = 0;
	f[0] = 'X';
	CHECK_EQ(phi_grants_parse_file(f, 48, &sealed, &sl), -EBADMSG);
}

/* ---- on a store ---- */

static struct phi_store *st;
static struct phi_keyring *kr;
static char sroot[600];

static size_t slurp(const char *rel, uint8_t *buf, size_t max)
{
	char p[800];
	snprintf(p, sizeof(p), "%s/%s", sroot, rel);
	FILE *f = fopen(p, "rbe");
	CHECK(f);
	size_t n = fread(buf, 1, max, f);
	fclose(f);
	return n;
}

static void spit(const char *rel, const uint8_t *buf, size_t n)
{
	char p[800], tmp[820];
	snprintf(p, sizeof(p), "%s/%s", sroot, rel);
	snprintf(tmp, sizeof(tmp), "%s.t", p);
	FILE *f = fopen(tmp, "wbe");
	CHECK(f);
	CHECK_EQ(fwrite(buf, 1, n, f), n);
	fclose(f);
	CHECK_OK(rename(tmp, p)); /* a new inode, like put */
}

static const char *gpath(const char *patient, char *buf, size_t len)
{
	char tag[PHI_TAG_LEN + 1];
	CHECK_OK(phi_patient_tag(kr, patient, tag));
	snprintf(buf, len, "grants/%s", tag);
	return buf;
}

static void add(struct phi_grant *g)
{
	const char *why = NULL;
	int r = phi_grants_add(kr, st, g, &why);
	if (r < 0)
		fprintf(stderr, "add: %s (%s)\n", strerror(-r), why ? why : "");
	CHECK_OK(r);
}

static enum phi_deny look(struct phi_grants *gs, uint32_t uid, uint32_t gid, const char *patient,
			  uint64_t now, struct phi_grant *ret)
{
	struct phi_grant_match m;
	CHECK_OK(phi_grants_lookup(gs, uid, &gid, 1, patient, now, &m));
	CHECK(m.found || m.reason != PHI_DENY_NONE);
	if (ret)
		*ret = m.found ? m.grant : (struct phi_grant){ 0 };
	return m.reason;
}

static void test_store(void)
{
	snprintf(sroot, sizeof(sroot), "%s/store", root);
	CHECK_OK(mkdir(sroot, 0700));
	CHECK_OK(phi_store_local_open(sroot, &st));
	_cleanup_key_ struct phi_key *master = NULL;
	CHECK_OK(phi_key_random(PHI_KEY_LEN, &master));
	CHECK_OK(phi_store_init(st, master));
	CHECK_OK(phi_keyring_open(st, master, &kr));
	CHECK_OK(phi_patient_add(kr, "p-0042"));
	CHECK_OK(phi_patient_add(kr, "p-0043"));

	/* no grants/ at all: an empty set */
	struct phi_grants *gs;
	CHECK_OK(phi_grants_open(st, kr, &gs));
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0, NULL), PHI_DENY_NO_GRANT);
	CHECK_EQ(phi_grants_lookup(gs, 1001, NULL, 0, "../x", T0, &(struct phi_grant_match){ 0 }),
		 -EINVAL);

	struct phi_grant a = provider();
	add(&a);
	CHECK(strcmp(a.id, "g-0123456789abcdef") != 0); /* a fresh id */
	CHECK(a.created >= T0 - 10 * 365 * 86400ull);
	char path[64], path2[64];
	struct stat sb;
	char full[800];
	snprintf(full, sizeof(full), "%s/%s", sroot, gpath("p-0042", path, sizeof(path)));
	CHECK_OK(stat(full, &sb));

	/* the running set sees it only after a refresh */
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0, NULL), PHI_DENY_NO_GRANT);
	CHECK_OK(phi_grants_refresh(gs));
	struct phi_grant got;
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0, &got), PHI_DENY_NONE);
	CHECK(!strcmp(got.id, a.id));
	/* boundaries to the second */
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0 - 1, NULL), PHI_DENY_NOT_YET_VALID);
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0 + 86399, NULL), PHI_DENY_NONE);
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0 + 86400, &got), PHI_DENY_EXPIRED);
	CHECK(!strcmp(got.id, a.id));
	/* another user, another patient */
	CHECK_EQ(look(gs, 1002, 100, "p-0042", T0, NULL), PHI_DENY_NO_GRANT);
	CHECK_EQ(look(gs, 1001, 100, "p-0043", T0, NULL), PHI_DENY_NO_GRANT);

	/* a group grant matches through any of the caller's groups */
	struct phi_grant gg = provider();
	gg.principal_kind = PHI_PRINCIPAL_GROUP;
	gg.principal_id = 2000;
	snprintf(gg.principal_name, sizeof(gg.principal_name), "nurses");
	snprintf(gg.patient, sizeof(gg.patient), "p-0043");
	add(&gg);
	/* a service grant for every patient */
	struct phi_grant sv = provider();
	sv.role = PHI_ROLE_SERVICE;
	sv.purpose = PHI_PURPOSE_OPERATIONS;
	sv.principal_id = 1500;
	snprintf(sv.principal_name, sizeof(sv.principal_name), "ingest");
	snprintf(sv.patient, sizeof(sv.patient), "*");
	sv.expiry = T0 + 365 * 86400ull;
	add(&sv);
	CHECK_OK(phi_grants_refresh(gs));
	uint32_t gids[3] = { 100, 1999, 2000 };
	struct phi_grant_match m;
	CHECK_OK(phi_grants_lookup(gs, 1003, gids, 3, "p-0043", T0, &m));
	CHECK_EQ(m.reason, PHI_DENY_NONE);
	CHECK(!strcmp(m.grant.id, gg.id));
	CHECK_OK(phi_grants_lookup(gs, 1003, gids, 2, "p-0043", T0, &m));
	CHECK_EQ(m.reason, PHI_DENY_NO_GRANT);
	CHECK_EQ(look(gs, 1500, 1500, "p-0042", T0, &got), PHI_DENY_NONE);
	CHECK(!strcmp(got.id, sv.id));
	CHECK_EQ(look(gs, 1500, 1500, "p-0043", T0, NULL), PHI_DENY_NONE);
	CHECK_EQ(look(gs, 1500, 1500, "some-other-patient", T0, NULL), PHI_DENY_NONE);
	/* patient tags are cached (64 slots): 300 other patients between the lookups of
	 * p-0043 fill and reuse every slot, and each answer is still its own patient's */
	for (int i = 0; i < 300; i++) {
		char other[16];
		snprintf(other, sizeof(other), "q-%04d", i);
		CHECK_OK(phi_grants_lookup(gs, 1003, gids, 3, other, T0, &m));
		CHECK_EQ(m.reason, PHI_DENY_NO_GRANT);
		CHECK_OK(phi_grants_lookup(gs, 1003, gids, 3, "p-0043", T0, &m));
		CHECK(m.reason == PHI_DENY_NONE && !strcmp(m.grant.id, gg.id));
	}
	CHECK_EQ(phi_grants_lookup(gs, 1003, gids, 3, "../p-0043", T0, &m), -EINVAL);

	/* best of several: service beats provider; an expired grant explains a denial
	 * better than a revoked one */
	struct phi_grant sv2 = sv;
	sv2.principal_id = 1001;
	snprintf(sv2.patient, sizeof(sv2.patient), "p-0042");
	sv2.expiry = T0 + 3600;
	add(&sv2);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0, &got), PHI_DENY_NONE);
	CHECK_EQ(got.role, PHI_ROLE_SERVICE);
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0 + 3600, &got), PHI_DENY_NONE);
	CHECK_EQ(got.role, PHI_ROLE_PROVIDER);

	/* revoke: written, seen after a refresh, refused twice, unknown id */
	struct phi_grant rv;
	CHECK_OK(phi_grants_revoke(kr, st, a.id, T0 + 100, 0, &rv));
	CHECK(rv.revoked && rv.revoked_at == T0 + 100 && !strcmp(rv.id, a.id));
	CHECK_EQ(phi_grants_revoke(kr, st, a.id, T0 + 101, 0, NULL), -EALREADY);
	CHECK_EQ(phi_grants_revoke(kr, st, "g-ffffffffffffffff", T0, 0, NULL), -ENOENT);
	CHECK_EQ(phi_grants_revoke(kr, st, "nonsense", T0, 0, NULL), -EINVAL);
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0 + 3600, NULL), PHI_DENY_NONE);
	CHECK_OK(phi_grants_refresh(gs));
	/* an expired grant explains a denial better than a revoked one */
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0 + 3600, &got), PHI_DENY_EXPIRED);
	CHECK(!strcmp(got.id, sv2.id));
	CHECK_OK(phi_grants_revoke(kr, st, sv2.id, T0 + 100, 0, NULL));
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0 + 3600, &got), PHI_DENY_REVOKED);
	CHECK(!strcmp(got.id, a.id)); /* of two revoked ones, the later expiry */
	CHECK_EQ(look(gs, 1001, 100, "p-0042", T0 + 3600 * 48, &got), PHI_DENY_REVOKED); /* revoked wins over expired per grant */

	/* list: everything ("all" first), or one patient plus the "*" grants */
	struct phi_grant *l;
	size_t n;
	CHECK_OK(phi_grants_list(kr, st, NULL, &l, &n));
	CHECK_EQ(n, 4);
	CHECK(!strcmp(l[0].id, sv.id));
	free(l);
	CHECK_OK(phi_grants_list(kr, st, "p-0043", &l, &n));
	CHECK_EQ(n, 2);
	CHECK(!strcmp(l[0].id, sv.id) && !strcmp(l[1].id, gg.id));
	free(l);
	CHECK_OK(phi_grants_list(kr, st, "p-9999", &l, &n));
	CHECK_EQ(n, 1);
	free(l);

	/* a valid grant of p-0042's own file for what follows */
	struct phi_grant c = provider();
	c.principal_id = 1010;
	add(&c);
	CHECK_OK(phi_grants_refresh(gs));

	/* the store holds no patient id, name, consent or reason in the clear */
	uint8_t buf[PHI_GRANTS_FILE_MAX];
	size_t len = slurp(path, buf, sizeof(buf));
	CHECK(len > 8 && !memcmp(buf, "PHFG\x00\x01\x00\x00", 8));
	CHECK(!memmem(buf, len, "p-0042", 6) && !memmem(buf, len, "alice", 5) &&
	      !memmem(buf, len, "CONSENT", 7));

	/* tampered: one flipped bit fails the whole file; that patient's grants deny with
	 * grants-invalid, other patients and the "*" grants are untouched */
	uint8_t orig[PHI_GRANTS_FILE_MAX];
	memcpy(orig, buf, len);
	buf[len / 2] ^= 1;
	spit(path, buf, len);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1010, 100, "p-0042", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	CHECK_EQ(look(gs, 1500, 1500, "p-0042", T0 + 10, NULL), PHI_DENY_NONE);
	CHECK_EQ(look(gs, 1003, 2000, "p-0043", T0 + 10, NULL), PHI_DENY_NONE);
	CHECK_EQ(phi_grants_list(kr, st, "p-0042", &l, &n), -EBADMSG);
	struct phi_grants *gs2;
	CHECK_OK(phi_grants_open(st, kr, &gs2)); /* a fresh mount still opens */
	CHECK_EQ(look(gs2, 1010, 100, "p-0042", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	phi_grants_free(gs2);
	/* truncated */
	spit(path, orig, len - 1);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1010, 100, "p-0042", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	spit(path, orig, len);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1010, 100, "p-0042", T0 + 10, NULL), PHI_DENY_NONE);

	/* swapped: p-0042's file under p-0043's name (and as "all") does not open there */
	uint8_t other[PHI_GRANTS_FILE_MAX];
	size_t olen = slurp(gpath("p-0043", path2, sizeof(path2)), other, sizeof(other));
	spit(path2, orig, len);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1001, 100, "p-0043", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	CHECK_EQ(look(gs, 1003, 2000, "p-0043", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	spit(path2, other, olen);
	uint8_t allf[PHI_GRANTS_FILE_MAX];
	size_t alen = slurp("grants/all", allf, sizeof(allf));
	spit("grants/all", orig, len);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1500, 1500, "p-0043", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	CHECK_EQ(look(gs, 1003, 2000, "p-0043", T0 + 10, NULL), PHI_DENY_NONE);
	spit("grants/all", allf, alen);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1500, 1500, "p-0043", T0 + 10, NULL), PHI_DENY_NONE);

	/* a file from another store (same master key, other store id) does not open */
	char oroot[700];
	snprintf(oroot, sizeof(oroot), "%s/other", root);
	CHECK_OK(mkdir(oroot, 0700));
	struct phi_store *ost;
	struct phi_keyring *okr;
	CHECK_OK(phi_store_local_open(oroot, &ost));
	CHECK_OK(phi_store_init(ost, master));
	CHECK_OK(phi_keyring_open(ost, master, &okr));
	struct phi_grant og = sv;
	add(&og); /* into st; then write the same set into ost and copy that file over */
	CHECK_OK(phi_grants_refresh(gs)); /* the running set has seen this generation */
	struct phi_grant og2 = sv;
	CHECK_OK(phi_grants_add(okr, ost, &og2, NULL));
	char ofull[800];
	snprintf(ofull, sizeof(ofull), "%s/grants/all", oroot);
	FILE *of = fopen(ofull, "rbe");
	CHECK(of);
	size_t oflen = fread(other, 1, sizeof(other), of);
	fclose(of);
	spit("grants/all", other, oflen);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1500, 1500, "p-0043", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	phi_keyring_free(okr);
	phi_store_close(ost);
	spit("grants/all", allf, alen); /* generation as before og: a rollback now */
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1500, 1500, "p-0043", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);

	/* rolled back: an older copy put back is refused by a running set, even after the
	 * file was deleted in between */
	struct phi_grant sv3 = sv; /* written on top of allf: the generation moves on again */
	add(&sv3);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1500, 1500, "p-0043", T0 + 10, NULL), PHI_DENY_NONE);
	len = slurp(path, orig, sizeof(orig));
	struct phi_grant b2 = provider();
	b2.principal_id = 1009;
	add(&b2);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1009, 100, "p-0042", T0 + 10, NULL), PHI_DENY_NONE);
	spit(path, orig, len);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1010, 100, "p-0042", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	CHECK_OK(unlink(full));
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1010, 100, "p-0042", T0 + 10, NULL), PHI_DENY_NO_GRANT);
	spit(path, orig, len);
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1010, 100, "p-0042", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);

	/* the listing of grants/ fails: everything denies until it works again */
	char gdir[700], gdir2[720];
	snprintf(gdir, sizeof(gdir), "%s/grants", sroot);
	snprintf(gdir2, sizeof(gdir2), "%s/grants.away", sroot);
	CHECK_OK(rename(gdir, gdir2));
	CHECK_OK(symlink(gdir2, gdir)); /* the store never follows symlinks */
	CHECK(phi_grants_refresh(gs) < 0);
	CHECK_EQ(look(gs, 1500, 1500, "p-0043", T0 + 10, NULL), PHI_DENY_GRANTS_INVALID);
	CHECK_OK(unlink(gdir));
	CHECK_OK(rename(gdir2, gdir));
	CHECK_OK(phi_grants_refresh(gs));
	CHECK_EQ(look(gs, 1500, 1500, "p-0043", T0 + 10, NULL), PHI_DENY_NONE);

	phi_grants_free(gs);
}

/* Lookups from several threads while grants are added and the set refreshed: every
 * answer is one of the two legal ones, and the change shows after the refresh. */
struct racer {
	struct phi_grants *gs;
	volatile int stop;
	unsigned bad, seen_after;
};

static void *race_fn(void *p)
{
	struct racer *rc = p;
	while (!rc->stop) {
		struct phi_grant_match m;
		uint32_t gid = 100;
		if (phi_grants_lookup(rc->gs, 4242, &gid, 1, "p-0043", T0 + 10, &m) < 0 ||
		    (m.reason != PHI_DENY_NONE && m.reason != PHI_DENY_NO_GRANT))
			__atomic_add_fetch(&rc->bad, 1, __ATOMIC_RELAXED);
		if (m.reason == PHI_DENY_NONE)
			__atomic_store_n(&rc->seen_after, 1, __ATOMIC_RELAXED);
	}
	return NULL;
}

static void test_threads(void)
{
	struct racer rc = { 0 };
	CHECK_OK(phi_grants_open(st, kr, &rc.gs));
	pthread_t t[4];
	for (int i = 0; i < 4; i++)
		CHECK_OK(pthread_create(&t[i], NULL, race_fn, &rc));
	for (int i = 0; i < 20; i++) {
		struct phi_grant g = provider();
		g.principal_id = 5000 + (uint32_t)i;
		snprintf(g.patient, sizeof(g.patient), "p-0043");
		add(&g);
		CHECK_OK(phi_grants_refresh(rc.gs));
	}
	struct phi_grant g = provider();
	g.principal_id = 4242;
	snprintf(g.patient, sizeof(g.patient), "p-0043");
	add(&g);
	CHECK_OK(phi_grants_refresh(rc.gs));
	struct phi_grant_match m;
	uint32_t gid = 100;
	CHECK_OK(phi_grants_lookup(rc.gs, 4242, &gid, 1, "p-0043", T0 + 10, &m));
	CHECK_EQ(m.reason, PHI_DENY_NONE);
	while (!__atomic_load_n(&rc.seen_after, __ATOMIC_RELAXED))
		sched_yield();
	rc.stop = 1;
	for (int i = 0; i < 4; i++)
		CHECK_OK(pthread_join(t[i], NULL));
	CHECK_EQ(rc.bad, 0);
	phi_grants_free(rc.gs);
}

static int rm_fn(const char *p, const struct stat *sb, int type, struct FTW *ftw)
{
	(void)sb;
	(void)ftw;
	return type == FTW_DP ? rmdir(p) : unlink(p);
}

int main(void)
{
	CHECK_OK(phi_crypto_init());
	CHECK(mkdtemp(root));
	test_names();
	test_rules();
	test_state();
	test_payload();
	test_store();
	test_threads();
	phi_keyring_free(kr);
	phi_store_close(st);
	CHECK_OK(nftw(root, rm_fn, 16, FTW_DEPTH | FTW_PHYS));
	puts("ok");
	return 0;
}
