/* grants.c: access grants on the store, and the loaded grant set of a mount.
 * Format and rules: docs/grants-format.md. */
#include <dirent.h>
#include <grp.h>
#include <pthread.h>
#include <pwd.h>
#include <time.h>

#include <sodium.h>

#include "crypto.h"
#include "grants.h"
#include "util.h"

#define GRANTS_DIR "grants"
#define GRANTS_ALL "all"
#define GRANTS_AAD "phifs-grants-v1"
#define GRANTS_AAD_LEN (15 + PHI_STORE_ID_LEN + 7 + PHI_TAG_LEN)
#define NAME_MAX_LEN PHI_TAG_LEN /* object names: a tag or "all" */
#define FLAG_EMERGENCY 0x01
#define FLAG_REVOKED 0x02

/* ---- names ---- */

static const char *const role_names[] = { "none", "service", "provider", "job", "admin", "auditor" };
static const char *const purpose_names[] = { "none",     "treatment", "payment", "operations",
					     "research", "emergency", "job" };
static const char *const deny_names[] = { "allowed", "no-grant",       "not-yet-valid",
					  "expired", "revoked",        "grants-invalid",
					  "role-forbids", "no-identity" };

const char *phi_role_name(enum phi_role r)
{
	return (unsigned)r < ARRAY_SIZE(role_names) ? role_names[r] : "none";
}

const char *phi_purpose_name(enum phi_purpose p)
{
	return (unsigned)p < ARRAY_SIZE(purpose_names) ? purpose_names[p] : "none";
}

const char *phi_deny_name(enum phi_deny d)
{
	return (unsigned)d < ARRAY_SIZE(deny_names) ? deny_names[d] : "no-grant";
}

static int name_index(const char *const *names, size_t n, const char *s)
{
	for (size_t i = 1; s && i < n; i++)
		if (!strcmp(s, names[i]))
			return (int)i;
	return -EINVAL;
}

int phi_role_parse(const char *s, enum phi_role *ret)
{
	int i = name_index(role_names, ARRAY_SIZE(role_names), s);
	if (i < 0)
		return i;
	*ret = (enum phi_role)i;
	return 0;
}

int phi_purpose_parse(const char *s, enum phi_purpose *ret)
{
	int i = name_index(purpose_names, ARRAY_SIZE(purpose_names), s);
	if (i < 0)
		return i;
	*ret = (enum phi_purpose)i;
	return 0;
}

/* ---- syntax of the fields ---- */

static bool name_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-' || c == '@' || c == '$';
}

/* user and group names: [A-Za-z0-9_.@$-]{1,64} (empty only if allowed) */
static bool name_valid(const char *s, bool may_be_empty)
{
	size_t n = strnlen(s, PHI_GRANT_NAME_MAX + 1);
	if (n > PHI_GRANT_NAME_MAX || (n == 0 && !may_be_empty))
		return false;
	for (size_t i = 0; i < n; i++)
		if (!name_char(s[i]))
			return false;
	return true;
}

/* consent references: printable ASCII without spaces */
static bool consent_valid(const char *s)
{
	size_t n = strnlen(s, PHI_GRANT_CONSENT_MAX + 1);
	if (n > PHI_GRANT_CONSENT_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

/* free text: no control characters (so it prints on one line) */
static bool text_valid(const char *s)
{
	size_t n = strnlen(s, PHI_GRANT_REASON_MAX + 1);
	if (n > PHI_GRANT_REASON_MAX)
		return false;
	for (size_t i = 0; i < n; i++) {
		uint8_t c = (uint8_t)s[i];
		if (c < 0x20 || c == 0x7f)
			return false;
	}
	return true;
}

static bool id_valid(const char *s)
{
	if (strnlen(s, PHI_GRANT_ID_LEN + 1) != PHI_GRANT_ID_LEN || s[0] != 'g' || s[1] != '-')
		return false;
	for (size_t i = 2; i < PHI_GRANT_ID_LEN; i++)
		if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
			return false;
	return true;
}

static bool is_all(const char *patient)
{
	return !strcmp(patient, PHI_GRANT_ALL);
}

void phi_grant_new_id(char id[PHI_GRANT_ID_LEN + 1])
{
	uint8_t b[8];
	phi_random(b, sizeof(b));
	id[0] = 'g';
	id[1] = '-';
	sodium_bin2hex(id + 2, PHI_GRANT_ID_LEN - 1, b, sizeof(b));
}

int phi_principal_parse(const char *s, uint8_t *ret_kind, uint32_t *ret_id,
			char ret_name[PHI_GRANT_NAME_MAX + 1])
{
	if (!s)
		return -EINVAL;
	uint8_t kind;
	const char *v;
	if (!strncmp(s, "user:", 5)) {
		kind = PHI_PRINCIPAL_USER;
		v = s + 5;
	} else if (!strncmp(s, "group:", 6)) {
		kind = PHI_PRINCIPAL_GROUP;
		v = s + 6;
	} else
		return -EINVAL;
	uint64_t num;
	bool numeric = phi_parse_u64(v, UINT32_MAX - 1, &num) == 0;
	if (!numeric && !name_valid(v, false))
		return -EINVAL;
	char buf[16384];
	const char *name = NULL;
	uint32_t id = 0;
	int r;
	if (kind == PHI_PRINCIPAL_USER) {
		struct passwd pw, *res = NULL;
		r = numeric ? getpwuid_r((uid_t)num, &pw, buf, sizeof(buf), &res)
			    : getpwnam_r(v, &pw, buf, sizeof(buf), &res);
		if (r != 0)
			return -r;
		if (!res)
			return -ENOENT;
		name = pw.pw_name;
		id = (uint32_t)pw.pw_uid;
	} else {
		struct group gr, *res = NULL;
		r = numeric ? getgrgid_r((gid_t)num, &gr, buf, sizeof(buf), &res)
			    : getgrnam_r(v, &gr, buf, sizeof(buf), &res);
		if (r != 0)
			return -r;
		if (!res)
			return -ENOENT;
		name = gr.gr_name;
		id = (uint32_t)gr.gr_gid;
	}
	if (!name_valid(name, false))
		return -EINVAL;
	*ret_kind = kind;
	*ret_id = id;
	memcpy(ret_name, name, strlen(name) + 1);
	return 0;
}

void phi_principal_format(const struct phi_grant *g, char *buf, size_t len)
{
	const char *k = g->principal_kind == PHI_PRINCIPAL_GROUP ? "group" : "user";
	if (g->principal_name[0])
		snprintf(buf, len, "%s:%s", k, g->principal_name);
	else
		snprintf(buf, len, "%s:%u", k, (unsigned)g->principal_id);
}

/* ---- rules ---- */

int phi_grant_validate(const struct phi_grant *g, const char **ret_why)
{
#define BAD(msg)                         \
	do {                             \
		if (ret_why)             \
			*ret_why = (msg); \
		return -EINVAL;          \
	} while (0)
	if (!id_valid(g->id))
		BAD("malformed grant id");
	if (g->principal_kind != PHI_PRINCIPAL_USER && g->principal_kind != PHI_PRINCIPAL_GROUP)
		BAD("the principal must be a user or a group");
	if (!name_valid(g->principal_name, false) || !name_valid(g->granted_by_name, true))
		BAD("malformed user or group name");
	if (strnlen(g->patient, sizeof(g->patient)) >= sizeof(g->patient) ||
	    (!is_all(g->patient) && phi_patient_valid(g->patient) < 0))
		BAD("malformed patient id");
	if (g->role < PHI_ROLE_SERVICE || g->role > PHI_ROLE_AUDITOR)
		BAD("unknown role");
	if (g->purpose < PHI_PURPOSE_TREATMENT || g->purpose > PHI_PURPOSE_JOB)
		BAD("unknown purpose of use");
	if (is_all(g->patient) && g->role != PHI_ROLE_SERVICE && g->role != PHI_ROLE_ADMIN &&
	    g->role != PHI_ROLE_AUDITOR)
		BAD("only service, admin and auditor grants may name every patient (*)");
	if ((g->purpose == PHI_PURPOSE_JOB) != (g->role == PHI_ROLE_JOB))
		BAD("job grants have purpose job, and only they do");
	if (g->emergency != (g->purpose == PHI_PURPOSE_EMERGENCY))
		BAD("emergency grants have purpose emergency, and only they do");
	if (!consent_valid(g->consent))
		BAD("the consent reference must be printable ASCII without spaces, at most 128 bytes");
	if (!text_valid(g->reason))
		BAD("the reason must be one line of at most 256 bytes");
	if (g->expiry <= g->not_before)
		BAD("the expiry must be after the start (not-before)");
	uint64_t span = g->expiry - g->not_before;
	if (g->emergency) {
		if (g->role != PHI_ROLE_PROVIDER)
			BAD("emergency grants are provider grants");
		if (!g->reason[0])
			BAD("an emergency grant needs a reason");
		if (span > PHI_GRANT_EMERGENCY_MAX_S)
			BAD("emergency grants last at most 4 hours");
	} else if (g->role == PHI_ROLE_PROVIDER) {
		if (!g->consent[0])
			BAD("a provider grant needs the patient's consent reference (--consent)");
		if (span > PHI_GRANT_PROVIDER_MAX_S)
			BAD("provider grants last at most 72 hours");
	}
	if (g->created == 0)
		BAD("no creation time");
	if (g->revoked != (g->revoked_at != 0))
		BAD("inconsistent revocation");
	return 0;
#undef BAD
}

enum phi_deny phi_grant_state(const struct phi_grant *g, uint64_t now)
{
	if (g->revoked)
		return PHI_DENY_REVOKED;
	if (now < g->not_before)
		return PHI_DENY_NOT_YET_VALID;
	if (now >= g->expiry)
		return PHI_DENY_EXPIRED;
	return PHI_DENY_NONE;
}

/* ---- payload codec ---- */

static int buf_u8(struct phi_buf *b, uint8_t v)
{
	return phi_buf_append(b, &v, 1);
}

static int buf_u16(struct phi_buf *b, uint16_t v)
{
	uint8_t x[2];
	phi_put_u16be(x, v);
	return phi_buf_append(b, x, 2);
}

static int buf_u32(struct phi_buf *b, uint32_t v)
{
	uint8_t x[4];
	phi_put_u32be(x, v);
	return phi_buf_append(b, x, 4);
}

static int buf_u64(struct phi_buf *b, uint64_t v)
{
	uint8_t x[8];
	phi_put_u64be(x, v);
	return phi_buf_append(b, x, 8);
}

/* a string with a 1- or 2-byte length prefix */
static int buf_str(struct phi_buf *b, const char *s, size_t max, bool wide)
{
	size_t n = strnlen(s, max + 1);
	if (n > max)
		return -EINVAL;
	int r = wide ? buf_u16(b, (uint16_t)n) : buf_u8(b, (uint8_t)n);
	return r ?: phi_buf_append(b, s, n);
}

static int encode_one(const struct phi_grant *g, struct phi_buf *b)
{
	uint8_t flags = (g->emergency ? FLAG_EMERGENCY : 0) | (g->revoked ? FLAG_REVOKED : 0);
	int r = phi_buf_append(b, g->id, PHI_GRANT_ID_LEN);
	r = r ?: buf_u8(b, g->principal_kind);
	r = r ?: buf_u32(b, g->principal_id);
	r = r ?: buf_str(b, g->principal_name, PHI_GRANT_NAME_MAX, false);
	r = r ?: buf_str(b, g->patient, PHI_PATIENT_MAX, false);
	r = r ?: buf_u8(b, g->role);
	r = r ?: buf_u8(b, g->purpose);
	r = r ?: buf_u8(b, flags);
	r = r ?: buf_u64(b, g->not_before);
	r = r ?: buf_u64(b, g->expiry);
	r = r ?: buf_u64(b, g->created);
	r = r ?: buf_u64(b, g->revoked_at);
	r = r ?: buf_u32(b, g->granted_by_uid);
	r = r ?: buf_str(b, g->granted_by_name, PHI_GRANT_NAME_MAX, false);
	r = r ?: buf_u32(b, g->revoked_by_uid);
	r = r ?: buf_str(b, g->consent, PHI_GRANT_CONSENT_MAX, false);
	r = r ?: buf_str(b, g->reason, PHI_GRANT_REASON_MAX, true);
	return r;
}

int phi_grants_encode_payload(uint64_t generation, const struct phi_grant *g, size_t n,
			      struct phi_buf *out)
{
	if (n > PHI_GRANTS_PER_FILE_MAX)
		return -E2BIG;
	for (size_t i = 0; i < n; i++)
		if (phi_grant_validate(&g[i], NULL) < 0)
			return -EINVAL;
	int r = buf_u64(out, generation);
	r = r ?: buf_u32(out, (uint32_t)n);
	for (size_t i = 0; r >= 0 && i < n; i++)
		r = encode_one(&g[i], out);
	return r;
}

static int cur_str(struct phi_cur *c, bool wide, size_t max, char *out)
{
	uint8_t n8;
	uint16_t n16;
	size_t n;
	if (wide) {
		if (phi_cur_u16be(c, &n16) < 0)
			return -EBADMSG;
		n = n16;
	} else {
		if (phi_cur_u8(c, &n8) < 0)
			return -EBADMSG;
		n = n8;
	}
	if (n > max || phi_cur_bytes(c, out, n) < 0 || memchr(out, 0, n))
		return -EBADMSG;
	out[n] = 0;
	return 0;
}

static int parse_one(struct phi_cur *c, struct phi_grant *g)
{
	uint8_t flags;
	*g = (struct phi_grant){ 0 };
	if (phi_cur_bytes(c, g->id, PHI_GRANT_ID_LEN) < 0 || phi_cur_u8(c, &g->principal_kind) < 0 ||
	    phi_cur_u32be(c, &g->principal_id) < 0 ||
	    cur_str(c, false, PHI_GRANT_NAME_MAX, g->principal_name) < 0 ||
	    cur_str(c, false, PHI_PATIENT_MAX, g->patient) < 0 || phi_cur_u8(c, &g->role) < 0 ||
	    phi_cur_u8(c, &g->purpose) < 0 || phi_cur_u8(c, &flags) < 0 ||
	    phi_cur_u64be(c, &g->not_before) < 0 || phi_cur_u64be(c, &g->expiry) < 0 ||
	    phi_cur_u64be(c, &g->created) < 0 || phi_cur_u64be(c, &g->revoked_at) < 0 ||
	    phi_cur_u32be(c, &g->granted_by_uid) < 0 ||
	    cur_str(c, false, PHI_GRANT_NAME_MAX, g->granted_by_name) < 0 ||
	    phi_cur_u32be(c, &g->revoked_by_uid) < 0 ||
	    cur_str(c, false, PHI_GRANT_CONSENT_MAX, g->consent) < 0 ||
	    cur_str(c, true, PHI_GRANT_REASON_MAX, g->reason) < 0)
		return -EBADMSG;
	if (flags & ~(FLAG_EMERGENCY | FLAG_REVOKED))
		return -EBADMSG;
	g->emergency = flags & FLAG_EMERGENCY;
	g->revoked = flags & FLAG_REVOKED;
	return phi_grant_validate(g, NULL) < 0 ? -EBADMSG : 0;
}

int phi_grants_parse_payload(const uint8_t *p, size_t len, uint64_t *ret_generation,
			     struct phi_grant **ret, size_t *ret_n)
{
	struct phi_cur c = phi_cur_init(p, len);
	uint64_t gen;
	uint32_t n;
	if (phi_cur_u64be(&c, &gen) < 0 || phi_cur_u32be(&c, &n) < 0 || n > PHI_GRANTS_PER_FILE_MAX)
		return -EBADMSG;
	/* every grant takes at least 69 bytes: a count beyond what is left is a lie */
	if (n > phi_cur_left(&c) / 69)
		return -EBADMSG;
	_cleanup_free_ struct phi_grant *g = NULL;
	if (n) {
		g = calloc(n, sizeof(*g));
		if (!g)
			return -ENOMEM;
	}
	int r = 0;
	for (uint32_t i = 0; r >= 0 && i < n; i++) {
		r = parse_one(&c, &g[i]);
		if (r >= 0 && i > 0 && strcmp(g[i].patient, g[0].patient) != 0)
			r = -EBADMSG;
		for (uint32_t j = 0; r >= 0 && j < i; j++)
			if (!strcmp(g[i].id, g[j].id))
				r = -EBADMSG;
	}
	if (r >= 0 && phi_cur_left(&c) != 0)
		r = -EBADMSG;
	if (r < 0) {
		if (g)
			sodium_memzero(g, n * sizeof(*g));
		return r;
	}
	*ret_generation = gen;
	*ret = TAKE_PTR(g);
	*ret_n = n;
	return 0;
}

int phi_grants_parse_file(const uint8_t *p, size_t len, const uint8_t **ret_sealed,
			  size_t *ret_sealed_len)
{
	struct phi_cur c = phi_cur_init(p, len);
	uint8_t magic[4];
	uint16_t version, flags;
	if (len > PHI_GRANTS_FILE_MAX)
		return -EBADMSG;
	if (phi_cur_bytes(&c, magic, 4) < 0 || memcmp(magic, PHI_GRANTS_MAGIC, 4) != 0)
		return -EBADMSG;
	if (phi_cur_u16be(&c, &version) < 0 || version != PHI_GRANTS_VERSION)
		return -EBADMSG;
	if (phi_cur_u16be(&c, &flags) < 0 || flags != 0)
		return -EBADMSG;
	if (phi_cur_left(&c) < PHI_GCM_OVERHEAD + 12)
		return -EBADMSG;
	*ret_sealed = p + c.off;
	*ret_sealed_len = phi_cur_left(&c);
	return 0;
}

/* ---- sealed files on the store ---- */

/* what seals and opens grant files of one store */
struct gkey {
	struct phi_key *k;
	uint8_t store_id[PHI_STORE_ID_LEN];
};

static int gkey_init(const struct phi_keyring *kr, struct gkey *gk)
{
	int r = phi_keyring_derive(kr, "grants", &gk->k);
	if (r < 0)
		return r;
	memcpy(gk->store_id, phi_keyring_store_id(kr), PHI_STORE_ID_LEN);
	return 0;
}

static void gkey_done(struct gkey *gk)
{
	phi_key_free(gk->k);
	gk->k = NULL;
}

/* AAD = "phifs-grants-v1" || store_id || "grants/" || name */
static size_t grants_aad(const struct gkey *gk, const char *name, uint8_t aad[GRANTS_AAD_LEN])
{
	size_t n = strlen(name);
	memcpy(aad, GRANTS_AAD, 15);
	memcpy(aad + 15, gk->store_id, PHI_STORE_ID_LEN);
	memcpy(aad + 15 + PHI_STORE_ID_LEN, GRANTS_DIR "/", 7);
	memcpy(aad + 15 + PHI_STORE_ID_LEN + 7, name, n);
	return 15 + PHI_STORE_ID_LEN + 7 + n;
}

/* object names in grants/: "all" or a patient tag (22 chars of base64url) */
static bool gname_valid(const char *name)
{
	if (!strcmp(name, GRANTS_ALL))
		return true;
	uint8_t b[16];
	size_t n;
	return strlen(name) == PHI_TAG_LEN && phi_b64_dec(name, PHI_TAG_LEN, b, sizeof(b), &n) == 0 &&
	       n == sizeof(b);
}

static bool stat_same(const struct phi_store_stat *a, const struct phi_store_stat *b)
{
	return a->ino == b->ino && a->size == b->size && a->mtime.tv_sec == b->mtime.tv_sec &&
	       a->mtime.tv_nsec == b->mtime.tv_nsec && a->ctime.tv_sec == b->ctime.tv_sec &&
	       a->ctime.tv_nsec == b->ctime.tv_nsec;
}

static void grants_wipe_free(struct phi_grant *g, size_t n)
{
	phi_wipe_free(g, n * sizeof(*g));
}

/* Decode a file's bytes: authenticate, parse, and check that the grants belong there. */
static int gfile_decode(const struct phi_keyring *kr, const struct gkey *gk, const char *name,
			const uint8_t *p, size_t len, uint64_t *ret_gen, struct phi_grant **ret,
			size_t *ret_n)
{
	const uint8_t *sealed;
	size_t slen;
	int r = phi_grants_parse_file(p, len, &sealed, &slen);
	if (r < 0)
		return r;
	size_t plen = slen - PHI_GCM_OVERHEAD;
	uint8_t *pt = malloc(plen);
	if (!pt)
		return -ENOMEM;
	uint8_t aad[GRANTS_AAD_LEN];
	size_t alen = grants_aad(gk, name, aad);
	r = phi_open(gk->k, aad, alen, sealed, slen, pt);
	uint64_t gen = 0;
	struct phi_grant *g = NULL;
	size_t n = 0;
	if (r >= 0)
		r = phi_grants_parse_payload(pt, plen, &gen, &g, &n);
	phi_wipe_free(pt, plen);
	if (r < 0)
		return r == -ENOMEM ? r : -EBADMSG;
	/* the AAD already binds the object name; this also catches a writer that files a
	 * grant under the wrong patient */
	if (n > 0) {
		char tag[PHI_TAG_LEN + 1];
		bool ok = is_all(g[0].patient) ? !strcmp(name, GRANTS_ALL)
					       : phi_patient_tag(kr, g[0].patient, tag) == 0 &&
							 !strcmp(tag, name);
		if (!ok) {
			grants_wipe_free(g, n);
			return -EBADMSG;
		}
	}
	*ret_gen = gen;
	*ret = g;
	*ret_n = n;
	return 0;
}

/* Read grants/<name>: its stat (taken before the read, so a change after it is seen by
 * the next comparison) and its grants. -ENOENT when there is no such file. */
static int gfile_read(const struct phi_keyring *kr, struct phi_store *s, const struct gkey *gk,
		      const char *name, struct phi_store_stat *ret_st, uint64_t *ret_gen,
		      struct phi_grant **ret, size_t *ret_n)
{
	char path[sizeof(GRANTS_DIR) + NAME_MAX_LEN + 1];
	snprintf(path, sizeof(path), GRANTS_DIR "/%s", name);
	for (int tries = 0;; tries++) {
		struct phi_store_stat st;
		int r = s->ops->getattr(s, path, &st);
		if (r < 0)
			return r;
		if (st.size > PHI_GRANTS_FILE_MAX)
			return -EBADMSG;
		size_t cap = (size_t)st.size + 1;
		_cleanup_free_ uint8_t *buf = malloc(cap);
		if (!buf)
			return -ENOMEM;
		size_t len;
		r = s->ops->get(s, path, buf, cap, &len);
		if (r == -EFBIG && tries < 3)
			continue; /* replaced by a larger file meanwhile */
		if (r == -EFBIG)
			return -EBADMSG;
		if (r < 0)
			return r;
		r = gfile_decode(kr, gk, name, buf, len, ret_gen, ret, ret_n);
		if (r < 0)
			return r;
		if (ret_st)
			*ret_st = st;
		return 0;
	}
}

/* Replace grants/<name> (put: atomic and durable). A mount notices changes by stat, so
 * the new file must not look like the old one: should it (same inode number reused, same
 * size, same clock tick), write again after a moment until it differs. */
static int gfile_write(struct phi_store *s, const struct gkey *gk, const char *name,
		       uint64_t gen, const struct phi_grant *g, size_t n)
{
	char path[sizeof(GRANTS_DIR) + NAME_MAX_LEN + 1];
	snprintf(path, sizeof(path), GRANTS_DIR "/%s", name);
	struct phi_buf pl;
	phi_buf_init(&pl, PHI_GRANTS_PAYLOAD_MAX);
	int r = phi_grants_encode_payload(gen, g, n, &pl);
	size_t flen = PHI_GRANTS_FIXED + pl.len + PHI_GCM_OVERHEAD;
	uint8_t *out = r >= 0 ? malloc(flen) : NULL;
	if (r >= 0 && !out)
		r = -ENOMEM;
	if (r >= 0) {
		uint8_t aad[GRANTS_AAD_LEN];
		size_t alen = grants_aad(gk, name, aad);
		memcpy(out, PHI_GRANTS_MAGIC, 4);
		phi_put_u16be(out + 4, PHI_GRANTS_VERSION);
		phi_put_u16be(out + 6, 0);
		r = phi_seal(gk->k, aad, alen, pl.p, pl.len, out + PHI_GRANTS_FIXED);
	}
	if (pl.p)
		sodium_memzero(pl.p, pl.len);
	phi_buf_done(&pl);
	if (r >= 0) {
		r = s->ops->mkdir(s, GRANTS_DIR, 0700);
		if (r == -EEXIST)
			r = 0;
	}
	struct phi_store_stat old, cur;
	bool had_old = r >= 0 && s->ops->getattr(s, path, &old) == 0;
	for (int tries = 0; r >= 0; tries++) {
		r = s->ops->put(s, path, out, flen);
		if (r < 0 || !had_old)
			break;
		r = s->ops->getattr(s, path, &cur);
		if (r < 0 || !stat_same(&old, &cur))
			break;
		if (tries >= 2000) {
			r = -EAGAIN;
			break;
		}
		(void)nanosleep(&(struct timespec){ .tv_nsec = 1000000 }, NULL);
	}
	free(out);
	return r;
}

static int gfile_name(const struct phi_keyring *kr, const char *patient,
		      char name[NAME_MAX_LEN + 1])
{
	if (is_all(patient)) {
		memcpy(name, GRANTS_ALL, sizeof(GRANTS_ALL));
		return 0;
	}
	return phi_patient_tag(kr, patient, name);
}

/* ---- writers ---- */

static int grants_add(struct phi_keyring *kr, struct phi_store *s, struct phi_grant *g,
		      bool given_id, const char **ret_why)
{
	if (!kr || !s || !g)
		return -EINVAL;
	struct phi_grant ng = *g;
	if (!given_id)
		phi_grant_new_id(ng.id);
	ng.created = (uint64_t)time(NULL);
	ng.revoked = false;
	ng.revoked_at = 0;
	ng.revoked_by_uid = 0;
	int r = phi_grant_validate(&ng, ret_why);
	if (r < 0)
		return r;
	char name[NAME_MAX_LEN + 1];
	r = gfile_name(kr, ng.patient, name);
	if (r < 0)
		return r;
	_cleanup_(gkey_done) struct gkey gk = { 0 };
	r = gkey_init(kr, &gk);
	if (r < 0)
		return r;
	uint64_t gen = 0;
	struct phi_grant *old = NULL;
	size_t n = 0;
	r = gfile_read(kr, s, &gk, name, NULL, &gen, &old, &n);
	if (r == -ENOENT)
		r = 0;
	if (r < 0)
		return r;
	if (n >= PHI_GRANTS_PER_FILE_MAX) {
		grants_wipe_free(old, n);
		return -E2BIG;
	}
	struct phi_grant *all = calloc(n + 1, sizeof(*all));
	if (!all) {
		grants_wipe_free(old, n);
		return -ENOMEM;
	}
	if (n)
		memcpy(all, old, n * sizeof(*all));
	grants_wipe_free(old, n);
	/* 64 random bits: a collision is all but impossible, but cheap to rule out */
	for (size_t i = 0; i < n; i++)
		if (!strcmp(all[i].id, ng.id)) {
			if (given_id) {
				grants_wipe_free(all, n + 1);
				return -EEXIST;
			}
			phi_grant_new_id(ng.id);
			i = (size_t)-1;
		}
	all[n] = ng;
	r = gfile_write(s, &gk, name, gen + 1, all, n + 1);
	grants_wipe_free(all, n + 1);
	if (r < 0)
		return r;
	*g = ng;
	return 0;
}

int phi_grants_add(struct phi_keyring *kr, struct phi_store *s, struct phi_grant *g,
		   const char **ret_why)
{
	return grants_add(kr, s, g, false, ret_why);
}

int phi_grants_add_as(struct phi_keyring *kr, struct phi_store *s, struct phi_grant *g,
		      const char **ret_why)
{
	return grants_add(kr, s, g, true, ret_why);
}

struct namelist {
	char (*names)[NAME_MAX_LEN + 1];
	size_t n, cap;
};

static int namelist_fn(void *ctx, const char *name, uint32_t type)
{
	struct namelist *nl = ctx;
	if ((type != DT_REG && type != DT_UNKNOWN) || !gname_valid(name))
		return 0; /* put's temp files, anything foreign */
	if (nl->n == nl->cap) {
		size_t nc = nl->cap ? nl->cap * 2 : 64;
		if (nc > (1u << 24))
			return -E2BIG;
		void *np = realloc(nl->names, nc * sizeof(*nl->names));
		if (!np)
			return -ENOMEM;
		nl->names = np;
		nl->cap = nc;
	}
	memcpy(nl->names[nl->n++], name, strlen(name) + 1);
	return 0;
}

/* "all" sorts first, then the tags in byte order */
static int gname_cmp(const void *a, const void *b)
{
	bool aa = !strcmp(a, GRANTS_ALL), ba = !strcmp(b, GRANTS_ALL);
	if (aa || ba)
		return (int)ba - (int)aa;
	return strcmp(a, b);
}

static int list_names(struct phi_store *s, struct namelist *nl)
{
	int r = s->ops->readdir(s, GRANTS_DIR, namelist_fn, nl);
	if (r == -ENOENT)
		r = 0;
	if (r < 0)
		return r;
	if (nl->n)
		qsort(nl->names, nl->n, sizeof(*nl->names), gname_cmp);
	return 0;
}

int phi_grants_revoke(struct phi_keyring *kr, struct phi_store *s, const char *id, uint64_t now,
		      uint32_t by_uid, struct phi_grant *ret)
{
	if (!kr || !s || !id || !id_valid(id))
		return -EINVAL;
	_cleanup_(gkey_done) struct gkey gk = { 0 };
	int r = gkey_init(kr, &gk);
	if (r < 0)
		return r;
	struct namelist nl = { 0 };
	r = list_names(s, &nl);
	bool corrupt = false, found = false;
	for (size_t i = 0; r >= 0 && !found && i < nl.n; i++) {
		uint64_t gen;
		struct phi_grant *g;
		size_t n;
		r = gfile_read(kr, s, &gk, nl.names[i], NULL, &gen, &g, &n);
		if (r == -ENOENT || r == -EBADMSG) {
			corrupt |= r == -EBADMSG;
			r = 0;
			continue;
		}
		for (size_t j = 0; r >= 0 && j < n; j++) {
			if (strcmp(g[j].id, id) != 0)
				continue;
			found = true;
			if (g[j].revoked) {
				r = -EALREADY;
				break;
			}
			g[j].revoked = true;
			g[j].revoked_at = now ? now : 1;
			g[j].revoked_by_uid = by_uid;
			r = gfile_write(s, &gk, nl.names[i], gen + 1, g, n);
			if (r >= 0 && ret)
				*ret = g[j];
		}
		grants_wipe_free(g, n);
	}
	free(nl.names);
	if (r < 0)
		return r;
	if (!found)
		return corrupt ? -EBADMSG : -ENOENT;
	return 0;
}

int phi_grants_list(struct phi_keyring *kr, struct phi_store *s, const char *patient,
		    struct phi_grant **ret, size_t *ret_n)
{
	if (!kr || !s || !ret || !ret_n)
		return -EINVAL;
	struct namelist nl = { 0 };
	int r;
	if (patient) {
		nl.names = calloc(2, sizeof(*nl.names));
		if (!nl.names)
			return -ENOMEM;
		memcpy(nl.names[0], GRANTS_ALL, sizeof(GRANTS_ALL));
		r = phi_patient_tag(kr, patient, nl.names[1]);
		nl.n = 2;
	} else
		r = list_names(s, &nl);
	_cleanup_(gkey_done) struct gkey gk = { 0 };
	if (r >= 0)
		r = gkey_init(kr, &gk);
	struct phi_grant *all = NULL;
	size_t total = 0;
	for (size_t i = 0; r >= 0 && i < nl.n; i++) {
		uint64_t gen;
		struct phi_grant *g;
		size_t n;
		r = gfile_read(kr, s, &gk, nl.names[i], NULL, &gen, &g, &n);
		if (r == -ENOENT) {
			r = 0;
			continue;
		}
		if (r < 0 || n == 0)
			continue;
		struct phi_grant *na = realloc(all, (total + n) * sizeof(*all));
		if (!na) {
			grants_wipe_free(g, n);
			r = -ENOMEM;
			break;
		}
		all = na;
		memcpy(all + total, g, n * sizeof(*g));
		total += n;
		grants_wipe_free(g, n);
	}
	free(nl.names);
	if (r < 0) {
		grants_wipe_free(all, total);
		return r;
	}
	*ret = all;
	*ret_n = total;
	return 0;
}

/* ---- the loaded set of a mount ---- */

struct gfile {
	char name[NAME_MAX_LEN + 1];
	struct phi_store_stat st;
	uint64_t generation; /* the highest seen: an older copy put back is refused */
	bool present;        /* false: removed from the store, kept for its generation */
	bool invalid;        /* failed to load or rolled back: contributes no grant */
	bool keep;           /* refresh scratch: reused by the new table */
	struct phi_grant *g;
	size_t n;
};

/* Patient id -> tag, direct-mapped: every gated request looks up its patient's grants, and
 * the tag is a keyed hash (phi_patient_tag, 2% of a mount's CPU under 64 threads of opens).
 * g->kr is fixed for g's life, and so is every tag. */
#define TAG_CACHE 64
struct tag_slot {
	char patient[PHI_PATIENT_MAX + 1]; /* "" unused */
	char tag[PHI_TAG_LEN + 1];
};

struct phi_grants {
	struct phi_store *s;
	struct phi_keyring *kr;
	struct gkey gk;
	pthread_mutex_t refresh_lock; /* one refresher at a time; it alone replaces the table */
	pthread_rwlock_t lock;        /* guards files, nfiles, broken */
	struct gfile **files;         /* sorted by strcmp of name */
	size_t nfiles;
	bool broken; /* the last listing of grants/ failed: deny everything */
	pthread_mutex_t tag_lock;     /* guards tags */
	struct tag_slot tags[TAG_CACHE];
};

static void gfile_free(struct gfile *f)
{
	if (!f)
		return;
	grants_wipe_free(f->g, f->n);
	free(f);
}

static int gfile_cmp(const void *a, const void *b)
{
	return strcmp((*(struct gfile *const *)a)->name, (*(struct gfile *const *)b)->name);
}

static struct gfile *find_file(struct gfile **files, size_t n, const char *name)
{
	size_t lo = 0, hi = n;
	while (lo < hi) {
		size_t mid = lo + (hi - lo) / 2;
		int c = strcmp(name, files[mid]->name);
		if (c == 0)
			return files[mid];
		if (c < 0)
			hi = mid;
		else
			lo = mid + 1;
	}
	return NULL;
}

/* Load one file for the table; failures become an invalid entry, not an error. */
static int gfile_load(struct phi_grants *g, const char *name, const struct gfile *old,
		      struct gfile **ret)
{
	struct gfile *f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	memcpy(f->name, name, strlen(name) + 1);
	f->generation = old ? old->generation : 0;
	uint64_t gen;
	int r = gfile_read(g->kr, g->s, &g->gk, name, &f->st, &gen, &f->g, &f->n);
	if (r == -ENOMEM) {
		free(f);
		return r;
	}
	if (r == -ENOENT) {
		f->present = false;
	} else if (r < 0) {
		f->present = f->invalid = true;
		/* no stat: the next refresh tries again */
	} else if (gen < f->generation) {
		grants_wipe_free(f->g, f->n);
		f->g = NULL;
		f->n = 0;
		f->present = f->invalid = true;
	} else {
		f->present = true;
		f->generation = gen;
	}
	*ret = f;
	return 0;
}

static void table_free(struct gfile **files, size_t n)
{
	for (size_t i = 0; i < n; i++)
		gfile_free(files[i]);
	free(files);
}

int phi_grants_refresh(struct phi_grants *g)
{
	if (!g)
		return -EINVAL;
	pthread_mutex_lock(&g->refresh_lock);
	struct namelist nl = { 0 };
	struct gfile **nf = NULL;
	size_t nn = 0;
	int r = list_names(g->s, &nl);
	if (r >= 0) {
		/* every listed file, plus the removed ones we remember a generation of */
		nf = calloc(nl.n + g->nfiles + 1, sizeof(*nf));
		if (!nf)
			r = -ENOMEM;
	}
	for (size_t i = 0; i < g->nfiles; i++)
		g->files[i]->keep = false;
	for (size_t i = 0; r >= 0 && i < nl.n; i++) {
		struct gfile *old = find_file(g->files, g->nfiles, nl.names[i]);
		char path[sizeof(GRANTS_DIR) + NAME_MAX_LEN + 1];
		snprintf(path, sizeof(path), GRANTS_DIR "/%s", nl.names[i]);
		struct phi_store_stat st;
		int q = g->s->ops->getattr(g->s, path, &st);
		if (q == -ENOENT)
			continue;
		if (old && old->present && !old->invalid && q == 0 && stat_same(&old->st, &st)) {
			old->keep = true;
			nf[nn++] = old;
			continue;
		}
		r = gfile_load(g, nl.names[i], old, &nf[nn]);
		if (r >= 0)
			nn++;
	}
	/* files gone from the store: remember their generation, so that an old copy put
	 * back later is still refused */
	size_t nlisted = nn;
	if (nn)
		qsort(nf, nn, sizeof(*nf), gfile_cmp);
	for (size_t i = 0; r >= 0 && i < g->nfiles; i++) {
		struct gfile *old = g->files[i];
		if (old->keep || old->generation == 0 || find_file(nf, nlisted, old->name))
			continue;
		struct gfile *t = calloc(1, sizeof(*t));
		if (!t) {
			r = -ENOMEM;
			break;
		}
		memcpy(t->name, old->name, sizeof(t->name));
		t->generation = old->generation;
		nf[nn++] = t;
	}
	free(nl.names);
	if (r < 0) {
		for (size_t i = 0; i < nn; i++)
			if (!nf[i]->keep)
				gfile_free(nf[i]);
		free(nf);
		pthread_rwlock_wrlock(&g->lock);
		g->broken = true;
		pthread_rwlock_unlock(&g->lock);
		pthread_mutex_unlock(&g->refresh_lock);
		return r;
	}
	if (nn)
		qsort(nf, nn, sizeof(*nf), gfile_cmp);
	pthread_rwlock_wrlock(&g->lock);
	struct gfile **of = g->files;
	size_t on = g->nfiles;
	g->files = nf;
	g->nfiles = nn;
	g->broken = false;
	pthread_rwlock_unlock(&g->lock);
	for (size_t i = 0; i < on; i++)
		if (!of[i]->keep)
			gfile_free(of[i]);
	free(of);
	pthread_mutex_unlock(&g->refresh_lock);
	return 0;
}

int phi_grants_open(struct phi_store *s, struct phi_keyring *kr, struct phi_grants **ret)
{
	if (!s || !kr || !ret)
		return -EINVAL;
	struct phi_grants *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->s = s;
	g->kr = kr;
	int r = gkey_init(kr, &g->gk);
	if (r < 0) {
		free(g);
		return r;
	}
	pthread_mutex_init(&g->refresh_lock, NULL);
	pthread_rwlock_init(&g->lock, NULL);
	pthread_mutex_init(&g->tag_lock, NULL);
	r = phi_grants_refresh(g);
	if (r < 0) {
		phi_grants_free(g);
		return r;
	}
	*ret = g;
	return 0;
}

void phi_grants_free(struct phi_grants *g)
{
	if (!g)
		return;
	table_free(g->files, g->nfiles);
	gkey_done(&g->gk);
	pthread_mutex_destroy(&g->refresh_lock);
	pthread_rwlock_destroy(&g->lock);
	pthread_mutex_destroy(&g->tag_lock);
	sodium_memzero(g->tags, sizeof(g->tags)); /* patient ids */
	free(g);
}

static int cached_tag(struct phi_grants *g, const char *patient, char tag[PHI_TAG_LEN + 1])
{
	uint32_t h = 2166136261u; /* FNV-1a: a slot index, not a secret */
	for (const char *p = patient; *p; p++)
		h = (h ^ (uint8_t)*p) * 16777619u;
	struct tag_slot *t = &g->tags[h % TAG_CACHE];
	pthread_mutex_lock(&g->tag_lock);
	bool hit = t->patient[0] && !strcmp(t->patient, patient);
	if (hit)
		memcpy(tag, t->tag, PHI_TAG_LEN + 1);
	pthread_mutex_unlock(&g->tag_lock);
	if (hit)
		return 0;
	int r = phi_patient_tag(g->kr, patient, tag); /* validates patient */
	if (r < 0)
		return r;
	pthread_mutex_lock(&g->tag_lock);
	snprintf(t->patient, sizeof(t->patient), "%s", patient);
	memcpy(t->tag, tag, PHI_TAG_LEN + 1);
	pthread_mutex_unlock(&g->tag_lock);
	return 0;
}

static bool principal_matches(const struct phi_grant *gr, uint32_t uid, const uint32_t *gids,
			      size_t ngids)
{
	if (gr->principal_kind == PHI_PRINCIPAL_USER)
		return gr->principal_id == uid;
	for (size_t i = 0; i < ngids; i++)
		if (gids[i] == gr->principal_id)
			return true;
	return false;
}

/* higher is better among valid grants */
static int valid_rank(const struct phi_grant *gr)
{
	switch (gr->role) {
	case PHI_ROLE_SERVICE:
		return 6;
	case PHI_ROLE_PROVIDER:
		return gr->emergency ? 4 : 5;
	case PHI_ROLE_JOB:
		return 3;
	case PHI_ROLE_AUDITOR:
		return 2;
	default:
		return 1;
	}
}

/* higher explains a denial better */
static int deny_rank(enum phi_deny d)
{
	switch (d) {
	case PHI_DENY_EXPIRED:
		return 4;
	case PHI_DENY_NOT_YET_VALID:
		return 3;
	case PHI_DENY_REVOKED:
		return 2;
	case PHI_DENY_GRANTS_INVALID:
		return 1;
	default:
		return 0;
	}
}

int phi_grants_lookup(struct phi_grants *g, uint32_t uid, const uint32_t *gids, size_t ngids,
		      const char *patient, uint64_t now, struct phi_grant_match *ret)
{
	if (!g || !patient || !ret || (ngids && !gids))
		return -EINVAL;
	char tag[PHI_TAG_LEN + 1];
	int r = cached_tag(g, patient, tag);
	if (r < 0)
		return r;
	const struct phi_grant *best = NULL, *closest = NULL;
	enum phi_deny why = PHI_DENY_NO_GRANT;
	pthread_rwlock_rdlock(&g->lock);
	if (g->broken)
		why = PHI_DENY_GRANTS_INVALID;
	const char *names[2] = { GRANTS_ALL, tag };
	for (size_t k = 0; !g->broken && k < 2; k++) {
		const struct gfile *f = find_file(g->files, g->nfiles, names[k]);
		if (!f || !f->present)
			continue;
		if (f->invalid && deny_rank(PHI_DENY_GRANTS_INVALID) > deny_rank(why))
			why = PHI_DENY_GRANTS_INVALID;
		for (size_t i = 0; i < f->n; i++) {
			const struct phi_grant *gr = &f->g[i];
			if (!principal_matches(gr, uid, gids, ngids))
				continue;
			enum phi_deny st = phi_grant_state(gr, now);
			if (st == PHI_DENY_NONE) {
				if (!best || valid_rank(gr) > valid_rank(best) ||
				    (valid_rank(gr) == valid_rank(best) && gr->expiry > best->expiry))
					best = gr;
			} else if (deny_rank(st) > deny_rank(why) ||
				   (closest && st == why && gr->expiry > closest->expiry)) {
				why = st;
				closest = gr;
			}
		}
	}
	struct phi_grant_match m = { .reason = best ? PHI_DENY_NONE : why };
	const struct phi_grant *pick = best ? best : closest;
	if (pick) {
		m.found = true;
		m.grant = *pick;
	}
	pthread_rwlock_unlock(&g->lock);
	*ret = m;
	sodium_memzero(&m, sizeof(m));
	return 0;
}
