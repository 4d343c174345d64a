/* keys.c: master key files, the store header and per-patient versioned key files.
 * Formats: docs/format.md, "## Keys". */
#include <dirent.h>
#include <sys/file.h>
#include <sys/stat.h>

#include <sodium.h>

#include "keys.h"
#include "names.h"
#include "util.h"

#define HDR_PATH "phifs.hdr"
#define HDR_AAD "phifs-hdr-v1"
#define KEYS_AAD "phifs-keys-v1"
#define KF_SEALED_MAX (PHI_KEYFILE_PAYLOAD_MAX + PHI_GCM_OVERHEAD)
#define KF_MAX (PHI_KEYFILE_FIXED + KF_SEALED_MAX)

struct phi_keyring {
	struct phi_store *s; /* borrowed */
	struct phi_key *kek;
	struct phi_key *index_key;
	uint8_t store_id[PHI_STORE_ID_LEN];
};

/* ---- small helpers ---- */

static void sodium_freep(void *p)
{
	sodium_free(*(void **)p);
	*(void **)p = NULL;
}
#define _cleanup_sodium_ _cleanup_(sodium_freep)

static void pkeys_freep(struct phi_pkeys **p)
{
	phi_pkeys_free(*p);
	*p = NULL;
}
#define _cleanup_pkeys_ _cleanup_(pkeys_freep)

static int kek_derive(const struct phi_key *master, struct phi_key **ret)
{
	if (!master || master->len != PHI_KEY_LEN)
		return -EINVAL;
	return phi_kdf(master, "kek", NULL, 0, PHI_KEY_LEN, ret);
}

static bool tag_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '-' || c == '_';
}

static bool tag_valid(const char *t, size_t len)
{
	if (len != PHI_TAG_LEN)
		return false;
	for (size_t i = 0; i < len; i++)
		if (!tag_char_ok(t[i]))
			return false;
	return true;
}

int phi_patient_valid(const char *id)
{
	if (!id || !*id || id[0] == '.')
		return -EINVAL;
	size_t n = 0;
	for (const char *p = id; *p; p++, n++) {
		char c = *p;
		if (n >= PHI_PATIENT_MAX)
			return -EINVAL;
		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '.' || c == '-'))
			return -EINVAL;
	}
	return 0;
}

/* ---- master key files ---- */

static int hexval(uint8_t c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int phi_master_parse(const uint8_t *p, size_t len, struct phi_key **ret)
{
	if (len == PHI_KEY_LEN)
		return phi_key_from(p, len, ret);
	if (!(len == 2 * PHI_KEY_LEN || (len == 2 * PHI_KEY_LEN + 1 && p[len - 1] == '\n')))
		return -EINVAL;
	_cleanup_key_ struct phi_key *k = NULL;
	int r = phi_key_new(PHI_KEY_LEN, &k);
	if (r < 0)
		return r;
	for (size_t i = 0; i < PHI_KEY_LEN; i++) {
		int hi = hexval(p[2 * i]), lo = hexval(p[2 * i + 1]);
		if (hi < 0 || lo < 0)
			return -EINVAL;
		k->k[i] = (uint8_t)(hi << 4 | lo);
	}
	*ret = TAKE_PTR(k);
	return 0;
}

int phi_master_load(const char *key_file, struct phi_key **ret)
{
	_cleanup_free_ char *cred = NULL;
	if (!ret)
		return -EINVAL;
	if (!key_file) {
		const char *dir = secure_getenv("CREDENTIALS_DIRECTORY");
		if (!dir || !*dir)
			return -ENOKEY;
		if (asprintf(&cred, "%s/%s", dir, PHI_CRED_NAME) < 0)
			return -ENOMEM;
		key_file = cred;
	}
	_cleanup_close_ int fd = open(key_file, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return phi_neg_errno();
	struct stat st;
	if (fstat(fd, &st) < 0)
		return phi_neg_errno();
	if (!S_ISREG(st.st_mode) || st.st_uid != geteuid() || (st.st_mode & 077) != 0)
		return -EPERM;
	if (st.st_size > 2 * PHI_KEY_LEN + 1)
		return -EINVAL;
	const size_t cap = 2 * PHI_KEY_LEN + 2;
	_cleanup_sodium_ uint8_t *buf = sodium_malloc(cap);
	if (!buf)
		return -ENOMEM;
	size_t len = 0;
	while (len < cap) {
		ssize_t n = read(fd, buf + len, cap - len);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			return phi_neg_errno();
		}
		if (n == 0)
			break;
		len += (size_t)n;
	}
	return phi_master_parse(buf, len, ret);
}

/* Make a new file name durable (best effort). */
static void fsync_parent(const char *file)
{
	_cleanup_free_ char *dir = strdup(file);
	if (!dir)
		return;
	char *slash = strrchr(dir, '/');
	const char *d = ".";
	if (slash == dir)
		d = "/";
	else if (slash) {
		*slash = 0;
		d = dir;
	}
	_cleanup_close_ int dfd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (dfd >= 0)
		(void)fsync(dfd);
}

int phi_master_create(const char *key_file, struct phi_key **ret)
{
	if (!key_file || !ret)
		return -EINVAL;
	_cleanup_key_ struct phi_key *k = NULL;
	int r = phi_key_random(PHI_KEY_LEN, &k);
	if (r < 0)
		return r;
	_cleanup_sodium_ char *hex = sodium_malloc(2 * PHI_KEY_LEN + 2);
	if (!hex)
		return -ENOMEM;
	sodium_bin2hex(hex, 2 * PHI_KEY_LEN + 1, k->k, PHI_KEY_LEN);
	hex[2 * PHI_KEY_LEN] = '\n';
	_cleanup_close_ int fd =
		open(key_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY, 0600);
	if (fd < 0)
		return phi_neg_errno();
	if (fchmod(fd, 0600) < 0)
		goto fail;
	size_t off = 0, len = 2 * PHI_KEY_LEN + 1;
	while (off < len) {
		ssize_t n = write(fd, hex + off, len - off);
		if (n < 0) {
			if (errno == EINTR)
				continue;
			goto fail;
		}
		off += (size_t)n;
	}
	if (fsync(fd) < 0)
		goto fail;
	fsync_parent(key_file);
	*ret = TAKE_PTR(k);
	return 0;
fail:
	r = phi_neg_errno();
	(void)unlink(key_file);
	return r;
}

/* ---- store header ---- */

int phi_keys_parse_header(const uint8_t *p, size_t len, uint8_t ret_store_id[PHI_STORE_ID_LEN],
			  const uint8_t **ret_sealed)
{
	struct phi_cur c = phi_cur_init(p, len);
	uint8_t magic[4];
	uint16_t version, flags;
	const uint8_t *id, *sealed;
	if (len != PHI_HDR_LEN)
		return -EBADMSG;
	if (phi_cur_bytes(&c, magic, 4) < 0 || memcmp(magic, PHI_HDR_MAGIC, 4) != 0)
		return -EBADMSG;
	if (phi_cur_u16be(&c, &version) < 0 || version != PHI_HDR_VERSION)
		return -EBADMSG;
	if (phi_cur_u16be(&c, &flags) < 0 || flags != 0)
		return -EBADMSG;
	if (phi_cur_ref(&c, &id, PHI_STORE_ID_LEN) < 0)
		return -EBADMSG;
	if (phi_cur_ref(&c, &sealed, PHI_KEY_LEN + PHI_GCM_OVERHEAD) < 0 || phi_cur_left(&c) != 0)
		return -EBADMSG;
	memcpy(ret_store_id, id, PHI_STORE_ID_LEN);
	if (ret_sealed)
		*ret_sealed = sealed;
	return 0;
}

static void hdr_aad(const uint8_t store_id[PHI_STORE_ID_LEN], uint8_t aad[12 + PHI_STORE_ID_LEN])
{
	memcpy(aad, HDR_AAD, 12);
	memcpy(aad + 12, store_id, PHI_STORE_ID_LEN);
}

static int hdr_build(const struct phi_key *kek, const uint8_t store_id[PHI_STORE_ID_LEN],
		     const struct phi_key *index_key, uint8_t out[PHI_HDR_LEN])
{
	uint8_t aad[12 + PHI_STORE_ID_LEN];
	memcpy(out, PHI_HDR_MAGIC, 4);
	phi_put_u16be(out + 4, PHI_HDR_VERSION);
	phi_put_u16be(out + 6, 0);
	memcpy(out + 8, store_id, PHI_STORE_ID_LEN);
	hdr_aad(store_id, aad);
	return phi_seal(kek, aad, sizeof(aad), index_key->k, PHI_KEY_LEN, out + 8 + PHI_STORE_ID_LEN);
}

/* Parse and authenticate a header with a KEK: -EBADMSG unparsable, -EKEYREJECTED wrong key. */
static int hdr_open(const struct phi_key *kek, const uint8_t *p, size_t len,
		    uint8_t ret_store_id[PHI_STORE_ID_LEN], struct phi_key **ret_index)
{
	uint8_t id[PHI_STORE_ID_LEN], aad[12 + PHI_STORE_ID_LEN];
	const uint8_t *sealed;
	int r = phi_keys_parse_header(p, len, id, &sealed);
	if (r < 0)
		return r;
	_cleanup_key_ struct phi_key *ik = NULL;
	r = phi_key_new(PHI_KEY_LEN, &ik);
	if (r < 0)
		return r;
	hdr_aad(id, aad);
	r = phi_open(kek, aad, sizeof(aad), sealed, PHI_KEY_LEN + PHI_GCM_OVERHEAD, ik->k);
	if (r < 0)
		return r == -EBADMSG ? -EKEYREJECTED : r;
	memcpy(ret_store_id, id, PHI_STORE_ID_LEN);
	*ret_index = TAKE_PTR(ik);
	return 0;
}

int phi_store_init(struct phi_store *s, const struct phi_key *master)
{
	if (!s || !master)
		return -EINVAL;
	struct phi_store_stat st;
	int r = s->ops->getattr(s, HDR_PATH, &st);
	if (r == 0)
		return -EEXIST;
	if (r != -ENOENT)
		return r;
	_cleanup_key_ struct phi_key *kek = NULL, *ik = NULL;
	r = kek_derive(master, &kek);
	if (r < 0)
		return r;
	r = phi_key_random(PHI_KEY_LEN, &ik);
	if (r < 0)
		return r;
	uint8_t id[PHI_STORE_ID_LEN], hdr[PHI_HDR_LEN];
	phi_random(id, sizeof(id));
	r = hdr_build(kek, id, ik, hdr);
	if (r < 0)
		return r;
	r = s->ops->mkdir(s, "keys", 0700);
	if (r < 0 && r != -EEXIST)
		return r;
	r = s->ops->mkdir(s, "data", 0700);
	if (r < 0 && r != -EEXIST)
		return r;
	r = s->ops->fsync_dir(s, "");
	if (r < 0)
		return r;
	/* the header goes last: a store with a header is complete */
	return s->ops->put(s, HDR_PATH, hdr, sizeof(hdr));
}

int phi_keyring_open(struct phi_store *s, const struct phi_key *master, struct phi_keyring **ret)
{
	if (!s || !master || !ret)
		return -EINVAL;
	uint8_t hdr[PHI_HDR_LEN + 1];
	size_t len;
	int r = s->ops->get(s, HDR_PATH, hdr, sizeof(hdr), &len);
	if (r == -EFBIG)
		return -EBADMSG;
	if (r < 0)
		return r;
	_cleanup_key_ struct phi_key *kek = NULL, *ik = NULL;
	r = kek_derive(master, &kek);
	if (r < 0)
		return r;
	uint8_t id[PHI_STORE_ID_LEN];
	r = hdr_open(kek, hdr, len, id, &ik);
	if (r < 0)
		return r;
	struct phi_keyring *kr = calloc(1, sizeof(*kr));
	if (!kr)
		return -ENOMEM;
	kr->s = s;
	kr->kek = TAKE_PTR(kek);
	kr->index_key = TAKE_PTR(ik);
	memcpy(kr->store_id, id, sizeof(id));
	*ret = kr;
	return 0;
}

void phi_keyring_free(struct phi_keyring *kr)
{
	if (!kr)
		return;
	phi_key_free(kr->kek);
	phi_key_free(kr->index_key);
	free(kr);
}

const uint8_t *phi_keyring_store_id(const struct phi_keyring *kr)
{
	return kr->store_id;
}

int phi_keyring_derive(const struct phi_keyring *kr, const char *label, struct phi_key **ret)
{
	if (!kr || !label || !*label || !ret)
		return -EINVAL;
	return phi_kdf(kr->index_key, label, NULL, 0, PHI_KEY_LEN, ret);
}

int phi_patient_tag(const struct phi_keyring *kr, const char *patient, char tag[PHI_TAG_LEN + 1])
{
	int r = phi_patient_valid(patient);
	if (r < 0)
		return r;
	uint8_t msg[8 + PHI_PATIENT_MAX], mac[32];
	size_t n = strlen(patient);
	memcpy(msg, "patient", 8); /* includes the NUL */
	memcpy(msg + 8, patient, n);
	r = phi_mac(kr->index_key, msg, 8 + n, mac);
	sodium_memzero(msg, sizeof(msg));
	if (r < 0)
		return r;
	phi_b64_enc(mac, 16, tag);
	return 0;
}

/* ---- key files ---- */

void phi_pkeys_free(struct phi_pkeys *pk)
{
	if (!pk)
		return;
	for (uint32_t i = 0; i < PHI_MAX_VERSIONS; i++)
		phi_key_free(pk->content[i]);
	phi_key_free(pk->name_key);
	sodium_memzero(pk, sizeof(*pk));
	free(pk);
}

int phi_pkeys_content(const struct phi_pkeys *pk, uint32_t version, const struct phi_key **ret)
{
	if (pk->shredded)
		return -EKEYREVOKED;
	for (uint32_t i = 0; i < pk->n; i++)
		if (pk->version[i] == version) {
			*ret = pk->content[i];
			return 0;
		}
	return -ENOKEY;
}

int phi_keys_parse_keyfile(const uint8_t *p, size_t len, uint8_t *ret_state,
			   const uint8_t **ret_rest, size_t *ret_rest_len)
{
	struct phi_cur c = phi_cur_init(p, len);
	uint8_t magic[4], state, zero;
	uint16_t version;
	if (phi_cur_bytes(&c, magic, 4) < 0 || memcmp(magic, PHI_KF_MAGIC, 4) != 0)
		return -EBADMSG;
	if (phi_cur_u16be(&c, &version) < 0 || version != PHI_KF_VERSION)
		return -EBADMSG;
	if (phi_cur_u8(&c, &state) < 0 || phi_cur_u8(&c, &zero) < 0 || zero != 0)
		return -EBADMSG;
	size_t left = phi_cur_left(&c);
	const uint8_t *rest = p + c.off;
	if (state == PHI_KF_SHREDDED) {
		if (!tag_valid((const char *)rest, left))
			return -EBADMSG;
	} else if (state == PHI_KF_ACTIVE) {
		if (left < PHI_GCM_OVERHEAD + 1 || left > KF_SEALED_MAX)
			return -EBADMSG;
	} else
		return -EBADMSG;
	*ret_state = state;
	*ret_rest = rest;
	*ret_rest_len = left;
	return 0;
}

int phi_keys_parse_payload(const uint8_t *p, size_t len, struct phi_pkeys *pk)
{
	struct phi_cur c = phi_cur_init(p, len);
	uint8_t idlen;
	const uint8_t *b;
	uint32_t current, n;
	int r;
	if (phi_cur_u8(&c, &idlen) < 0 || idlen == 0 || idlen > PHI_PATIENT_MAX)
		return -EBADMSG;
	char id[PHI_PATIENT_MAX + 1];
	if (phi_cur_bytes(&c, id, idlen) < 0)
		return -EBADMSG;
	id[idlen] = 0;
	if (memchr(id, 0, idlen) || phi_patient_valid(id) < 0)
		return -EBADMSG;
	if (phi_cur_ref(&c, &b, PHI_SIV_KEY_LEN) < 0)
		return -EBADMSG;
	_cleanup_key_ struct phi_key *nk = NULL;
	r = phi_key_from(b, PHI_SIV_KEY_LEN, &nk);
	if (r < 0)
		return r;
	if (phi_cur_u32be(&c, &current) < 0 || phi_cur_u32be(&c, &n) < 0)
		return -EBADMSG;
	if (n == 0 || n > PHI_MAX_VERSIONS || phi_cur_left(&c) != (size_t)n * (4 + PHI_KEY_LEN))
		return -EBADMSG;
	uint32_t version[PHI_MAX_VERSIONS];
	struct phi_key *content[PHI_MAX_VERSIONS] = { 0 };
	bool have_current = false;
	for (uint32_t i = 0; i < n; i++) {
		(void)phi_cur_u32be(&c, &version[i]);
		(void)phi_cur_ref(&c, &b, PHI_KEY_LEN);
		if (version[i] == 0 || (i > 0 && version[i] <= version[i - 1])) {
			r = -EBADMSG;
			goto fail;
		}
		if (version[i] == current)
			have_current = true;
		r = phi_key_from(b, PHI_KEY_LEN, &content[i]);
		if (r < 0)
			goto fail;
	}
	if (!have_current) {
		r = -EBADMSG;
		goto fail;
	}
	memcpy(pk->id, id, (size_t)idlen + 1);
	pk->current = current;
	pk->n = n;
	memcpy(pk->version, version, n * sizeof(version[0]));
	memcpy(pk->content, content, n * sizeof(content[0]));
	pk->name_key = TAKE_PTR(nk);
	pk->shredded = false;
	return 0;
fail:
	for (uint32_t i = 0; i < n; i++)
		phi_key_free(content[i]);
	return r;
}

static void kf_aad(const struct phi_keyring *kr, const char *tag, uint8_t aad[13 + PHI_STORE_ID_LEN + PHI_TAG_LEN])
{
	memcpy(aad, KEYS_AAD, 13);
	memcpy(aad + 13, kr->store_id, PHI_STORE_ID_LEN);
	memcpy(aad + 13 + PHI_STORE_ID_LEN, tag, PHI_TAG_LEN);
}
#define KF_AAD_LEN (13 + PHI_STORE_ID_LEN + PHI_TAG_LEN)

/* Decode a key file's bytes into pkeys (with a given KEK). */
static int kf_decode(const struct phi_keyring *kr, const struct phi_key *kek, const char *tag,
		     const uint8_t *p, size_t len, struct phi_pkeys **ret)
{
	uint8_t state;
	const uint8_t *rest;
	size_t rest_len;
	int r = phi_keys_parse_keyfile(p, len, &state, &rest, &rest_len);
	if (r < 0)
		return r;
	_cleanup_pkeys_ struct phi_pkeys *pk = calloc(1, sizeof(*pk));
	if (!pk)
		return -ENOMEM;
	memcpy(pk->tag, tag, PHI_TAG_LEN + 1);
	if (state == PHI_KF_SHREDDED) {
		if (memcmp(rest, tag, PHI_TAG_LEN) != 0)
			return -EBADMSG;
		pk->shredded = true;
		*ret = TAKE_PTR(pk);
		return 0;
	}
	size_t plen = rest_len - PHI_GCM_OVERHEAD;
	_cleanup_sodium_ uint8_t *payload = sodium_malloc(plen);
	if (!payload)
		return -ENOMEM;
	uint8_t aad[KF_AAD_LEN];
	kf_aad(kr, tag, aad);
	r = phi_open(kek, aad, sizeof(aad), rest, rest_len, payload);
	if (r < 0)
		return r;
	r = phi_keys_parse_payload(payload, plen, pk);
	sodium_memzero(payload, plen);
	if (r < 0)
		return r;
	/* the id inside must map to this tag */
	char want[PHI_TAG_LEN + 1];
	r = phi_patient_tag(kr, pk->id, want);
	if (r < 0)
		return -EBADMSG;
	if (strcmp(want, tag) != 0)
		return -EBADMSG;
	*ret = TAKE_PTR(pk);
	return 0;
}

/* Encode pkeys (active or shredded) into a key file sealed with kek. out holds KF_MAX. */
static int kf_encode(const struct phi_keyring *kr, const struct phi_key *kek,
		     const struct phi_pkeys *pk, uint8_t *out, size_t *ret_len)
{
	memcpy(out, PHI_KF_MAGIC, 4);
	phi_put_u16be(out + 4, PHI_KF_VERSION);
	out[6] = pk->shredded ? PHI_KF_SHREDDED : PHI_KF_ACTIVE;
	out[7] = 0;
	if (pk->shredded) {
		memcpy(out + PHI_KEYFILE_FIXED, pk->tag, PHI_TAG_LEN);
		*ret_len = PHI_KEYFILE_FIXED + PHI_TAG_LEN;
		return 0;
	}
	size_t idlen = strlen(pk->id);
	if (idlen == 0 || idlen > PHI_PATIENT_MAX || pk->n == 0 || pk->n > PHI_MAX_VERSIONS)
		return -EINVAL;
	size_t plen = 1 + idlen + PHI_SIV_KEY_LEN + 8 + (size_t)pk->n * (4 + PHI_KEY_LEN);
	_cleanup_sodium_ uint8_t *payload = sodium_malloc(plen);
	if (!payload)
		return -ENOMEM;
	uint8_t *q = payload;
	*q++ = (uint8_t)idlen;
	memcpy(q, pk->id, idlen);
	q += idlen;
	memcpy(q, pk->name_key->k, PHI_SIV_KEY_LEN);
	q += PHI_SIV_KEY_LEN;
	phi_put_u32be(q, pk->current);
	phi_put_u32be(q + 4, pk->n);
	q += 8;
	for (uint32_t i = 0; i < pk->n; i++) {
		phi_put_u32be(q, pk->version[i]);
		memcpy(q + 4, pk->content[i]->k, PHI_KEY_LEN);
		q += 4 + PHI_KEY_LEN;
	}
	uint8_t aad[KF_AAD_LEN];
	kf_aad(kr, pk->tag, aad);
	int r = phi_seal(kek, aad, sizeof(aad), payload, plen, out + PHI_KEYFILE_FIXED);
	sodium_memzero(payload, plen);
	if (r < 0)
		return r;
	*ret_len = PHI_KEYFILE_FIXED + plen + PHI_GCM_OVERHEAD;
	return 0;
}

static int kf_write(struct phi_keyring *kr, const struct phi_key *kek, const char *path,
		    const struct phi_pkeys *pk)
{
	_cleanup_free_ uint8_t *buf = malloc(KF_MAX);
	if (!buf)
		return -ENOMEM;
	size_t len;
	int r = kf_encode(kr, kek, pk, buf, &len);
	if (r < 0)
		return r;
	return kr->s->ops->put(kr->s, path, buf, len);
}

int phi_patient_load_tag(struct phi_keyring *kr, const char *tag, struct phi_pkeys **ret)
{
	if (!kr || !tag || !tag_valid(tag, strlen(tag)) || !ret)
		return -EINVAL;
	char path[8 + PHI_TAG_LEN];
	snprintf(path, sizeof(path), "keys/%s", tag);
	struct phi_store_stat st;
	int r = kr->s->ops->getattr(kr->s, path, &st);
	if (r < 0)
		return r;
	_cleanup_free_ uint8_t *buf = malloc(KF_MAX);
	if (!buf)
		return -ENOMEM;
	size_t len;
	r = kr->s->ops->get(kr->s, path, buf, KF_MAX, &len);
	if (r == -EFBIG)
		return -EBADMSG;
	if (r < 0)
		return r;
	struct phi_pkeys *pk;
	r = kf_decode(kr, kr->kek, tag, buf, len, &pk);
	if (r < 0)
		return r;
	pk->mtime = st.mtime;
	*ret = pk;
	return 0;
}

int phi_patient_load(struct phi_keyring *kr, const char *patient, struct phi_pkeys **ret)
{
	char tag[PHI_TAG_LEN + 1];
	int r = phi_patient_tag(kr, patient, tag);
	if (r < 0)
		return r;
	struct phi_pkeys *pk;
	r = phi_patient_load_tag(kr, tag, &pk);
	if (r < 0)
		return r;
	if (pk->shredded)
		memcpy(pk->id, patient, strlen(patient) + 1);
	*ret = pk;
	return 0;
}

int phi_patient_add(struct phi_keyring *kr, const char *patient)
{
	char tag[PHI_TAG_LEN + 1], path[8 + PHI_TAG_LEN];
	int r = phi_patient_tag(kr, patient, tag);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "keys/%s", tag);
	struct phi_store_stat st;
	r = kr->s->ops->getattr(kr->s, path, &st);
	if (r == 0)
		return -EEXIST;
	if (r != -ENOENT)
		return r;
	_cleanup_pkeys_ struct phi_pkeys *pk = calloc(1, sizeof(*pk));
	if (!pk)
		return -ENOMEM;
	memcpy(pk->id, patient, strlen(patient) + 1);
	memcpy(pk->tag, tag, sizeof(tag));
	pk->current = 1;
	pk->n = 1;
	pk->version[0] = 1;
	r = phi_key_random(PHI_SIV_KEY_LEN, &pk->name_key);
	if (r < 0)
		return r;
	r = phi_key_random(PHI_KEY_LEN, &pk->content[0]);
	if (r < 0)
		return r;
	/* the data directory first: the key file is what makes the patient exist, so a crash
	 * in between leaves an empty directory that the next add reuses */
	char dpath[8 + PHI_TAG_LEN];
	snprintf(dpath, sizeof(dpath), "data/%s", tag);
	r = phi_dir_create(kr->s, dpath, 0700);
	if (r == -EEXIST) {
		uint8_t did[PHI_DIRID_LEN];
		r = phi_dir_id(kr->s, dpath, did);
	}
	if (r < 0)
		return r;
	r = kr->s->ops->fsync_dir(kr->s, "data");
	if (r < 0)
		return r;
	return kf_write(kr, kr->kek, path, pk);
}

static int load_active(struct phi_keyring *kr, const char *patient, struct phi_pkeys **ret)
{
	struct phi_pkeys *pk;
	int r = phi_patient_load(kr, patient, &pk);
	if (r < 0)
		return r;
	if (pk->shredded) {
		phi_pkeys_free(pk);
		return -EKEYREVOKED;
	}
	*ret = pk;
	return 0;
}

static int save(struct phi_keyring *kr, const struct phi_pkeys *pk)
{
	char path[8 + PHI_TAG_LEN];
	snprintf(path, sizeof(path), "keys/%s", pk->tag);
	return kf_write(kr, kr->kek, path, pk);
}

int phi_patient_rotate(struct phi_keyring *kr, const char *patient, uint32_t *ret_version)
{
	_cleanup_pkeys_ struct phi_pkeys *pk = NULL;
	int r = load_active(kr, patient, &pk);
	if (r < 0)
		return r;
	if (pk->n >= PHI_MAX_VERSIONS)
		return -E2BIG;
	uint32_t last = pk->version[pk->n - 1];
	if (last == UINT32_MAX)
		return -EOVERFLOW;
	r = phi_key_random(PHI_KEY_LEN, &pk->content[pk->n]);
	if (r < 0)
		return r;
	pk->version[pk->n] = last + 1;
	pk->n++;
	pk->current = last + 1;
	r = save(kr, pk);
	if (r < 0)
		return r;
	if (ret_version)
		*ret_version = last + 1;
	return 0;
}

int phi_patient_retire_old(struct phi_keyring *kr, const char *patient)
{
	_cleanup_pkeys_ struct phi_pkeys *pk = NULL;
	int r = load_active(kr, patient, &pk);
	if (r < 0)
		return r;
	uint32_t keep = 0;
	for (uint32_t i = 0; i < pk->n; i++)
		if (pk->version[i] == pk->current)
			keep = i;
	if (pk->n == 1)
		return 0;
	struct phi_key *cur = pk->content[keep];
	pk->content[keep] = NULL;
	for (uint32_t i = 0; i < pk->n; i++) {
		phi_key_free(pk->content[i]);
		pk->content[i] = NULL;
	}
	pk->content[0] = cur;
	pk->version[0] = pk->current;
	pk->n = 1;
	return save(kr, pk);
}

int phi_patient_shred(struct phi_keyring *kr, const char *patient)
{
	char tag[PHI_TAG_LEN + 1], path[8 + PHI_TAG_LEN];
	int r = phi_patient_tag(kr, patient, tag);
	if (r < 0)
		return r;
	snprintf(path, sizeof(path), "keys/%s", tag);
	struct phi_store_stat st;
	r = kr->s->ops->getattr(kr->s, path, &st);
	if (r < 0)
		return r;
	struct phi_pkeys tomb = { .shredded = true };
	memcpy(tomb.tag, tag, sizeof(tag));
	return kf_write(kr, kr->kek, path, &tomb);
}

/* ---- iteration and rekey ---- */

struct taglist {
	char (*tags)[PHI_TAG_LEN + 1];
	size_t n, cap;
};

static int taglist_fn(void *ctx, const char *name, uint32_t type)
{
	struct taglist *tl = ctx;
	if (type != DT_REG && type != DT_UNKNOWN)
		return 0;
	if (!tag_valid(name, strlen(name)))
		return 0; /* temp files (".x"), anything foreign */
	if (tl->n == tl->cap) {
		size_t nc = tl->cap ? tl->cap * 2 : 64;
		if (nc > (1u << 24))
			return -E2BIG;
		void *np = realloc(tl->tags, nc * sizeof(*tl->tags));
		if (!np)
			return -ENOMEM;
		tl->tags = np;
		tl->cap = nc;
	}
	memcpy(tl->tags[tl->n++], name, PHI_TAG_LEN + 1);
	return 0;
}

static int tag_cmp(const void *a, const void *b)
{
	return strcmp(a, b);
}

static int list_tags(struct phi_keyring *kr, struct taglist *tl)
{
	int r = kr->s->ops->readdir(kr->s, "keys", taglist_fn, tl);
	if (r < 0)
		return r;
	if (tl->n)
		qsort(tl->tags, tl->n, sizeof(*tl->tags), tag_cmp);
	return 0;
}

int phi_patient_foreach(struct phi_keyring *kr, int (*fn)(void *ctx, const struct phi_pkeys *pk),
			void *ctx)
{
	struct taglist tl = { 0 };
	int r = list_tags(kr, &tl);
	for (size_t i = 0; r >= 0 && i < tl.n; i++) {
		struct phi_pkeys *pk;
		r = phi_patient_load_tag(kr, tl.tags[i], &pk);
		if (r == -ENOENT) { /* removed meanwhile */
			r = 0;
			continue;
		}
		if (r < 0)
			break;
		r = fn(ctx, pk);
		phi_pkeys_free(pk);
		if (r != 0)
			break; /* >0: stop early; <0: abort */
	}
	free(tl.tags);
	return r < 0 ? r : 0;
}

int phi_patient_foreach_tag(struct phi_keyring *kr, int (*fn)(void *ctx, const char *tag), void *ctx)
{
	struct taglist tl = { 0 };
	int r = list_tags(kr, &tl);
	for (size_t i = 0; r >= 0 && i < tl.n; i++) {
		r = fn(ctx, tl.tags[i]);
		if (r != 0)
			break;
	}
	free(tl.tags);
	return r < 0 ? r : 0;
}

/* Rekey: every key file is rewritten to "keys/.<tag>.rekey" (and the header to
 * ".phifs.hdr.rekey") under the new KEK, then renamed over the originals, header last.
 * A file already sealed under the new KEK (an interrupted earlier run) is accepted, so a
 * rerun with the old master and the same new master completes the job. */
int phi_keyring_rekey(struct phi_keyring *kr, const struct phi_key *new_master)
{
	if (!kr || !new_master)
		return -EINVAL;
	_cleanup_key_ struct phi_key *nkek = NULL;
	int r = kek_derive(new_master, &nkek);
	if (r < 0)
		return r;
	struct taglist tl = { 0 };
	r = list_tags(kr, &tl);
	_cleanup_free_ uint8_t *buf = malloc(KF_MAX);
	if (r >= 0 && !buf)
		r = -ENOMEM;
	char path[8 + PHI_TAG_LEN], tmp[16 + PHI_TAG_LEN];
	for (size_t i = 0; r >= 0 && i < tl.n; i++) {
		snprintf(path, sizeof(path), "keys/%s", tl.tags[i]);
		size_t len;
		r = kr->s->ops->get(kr->s, path, buf, KF_MAX, &len);
		if (r == -EFBIG)
			r = -EBADMSG;
		if (r < 0)
			break;
		struct phi_pkeys *pk;
		r = kf_decode(kr, kr->kek, tl.tags[i], buf, len, &pk);
		if (r == -EBADMSG)
			r = kf_decode(kr, nkek, tl.tags[i], buf, len, &pk);
		if (r < 0)
			break;
		r = kf_encode(kr, nkek, pk, buf, &len);
		phi_pkeys_free(pk);
		if (r < 0)
			break;
		snprintf(tmp, sizeof(tmp), "keys/.%s.rekey", tl.tags[i]);
		r = kr->s->ops->put(kr->s, tmp, buf, len);
	}
	uint8_t hdr[PHI_HDR_LEN];
	if (r >= 0)
		r = hdr_build(nkek, kr->store_id, kr->index_key, hdr);
	if (r >= 0)
		r = kr->s->ops->put(kr->s, ".phifs.hdr.rekey", hdr, sizeof(hdr));
	/* every new file is durable: switch over */
	for (size_t i = 0; r >= 0 && i < tl.n; i++) {
		snprintf(path, sizeof(path), "keys/%s", tl.tags[i]);
		snprintf(tmp, sizeof(tmp), "keys/.%s.rekey", tl.tags[i]);
		r = kr->s->ops->rename(kr->s, tmp, path, 0);
	}
	if (r >= 0)
		r = kr->s->ops->fsync_dir(kr->s, "keys");
	if (r >= 0)
		r = kr->s->ops->rename(kr->s, ".phifs.hdr.rekey", HDR_PATH, 0);
	if (r >= 0)
		r = kr->s->ops->fsync_dir(kr->s, "");
	if (r < 0) { /* best effort: a rerun rewrites whatever is missing */
		for (size_t i = 0; i < tl.n; i++) {
			snprintf(tmp, sizeof(tmp), "keys/.%s.rekey", tl.tags[i]);
			(void)kr->s->ops->unlink(kr->s, tmp);
		}
		(void)kr->s->ops->unlink(kr->s, ".phifs.hdr.rekey");
	}
	free(tl.tags);
	if (r < 0)
		return r;
	phi_key_free(kr->kek);
	kr->kek = TAKE_PTR(nkek);
	return 0;
}

/* ---- advisory lock ---- */

int phi_store_lock(const char *url, bool exclusive, int *ret_fd)
{
	if (!url || !*url || !ret_fd)
		return -EINVAL;
	const char *root = url;
	const char *sep = strstr(url, "://");
	if (sep) {
		if (strncmp(url, "file://", 7) != 0) {
			*ret_fd = -1;
			return 0;
		}
		root = url + 7;
		if (!strncmp(root, "localhost/", 10))
			root += 9;
	}
	_cleanup_free_ char *path = NULL;
	if (asprintf(&path, "%s/.lock", root) < 0)
		return -ENOMEM;
	/* flock() needs no write access: read-only first, so that root without
	 * CAP_DAC_OVERRIDE (phifs under gpurun@.service, before it drops to the store's
	 * owner) can take the lock of a store that is not its own */
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY);
	if (fd < 0 && errno == ENOENT)
		fd = open(path, O_CREAT | O_RDWR | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0600);
	if (fd < 0)
		return phi_neg_errno();
	if (flock(fd, (exclusive ? LOCK_EX : LOCK_SH) | LOCK_NB) < 0)
		return errno == EWOULDBLOCK ? -EBUSY : phi_neg_errno();
	*ret_fd = TAKE_FD(fd);
	return 0;
}
