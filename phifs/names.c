/* names.c: directory ids and AES-SIV file names. */
#include "names.h"

#include <errno.h>
#include <string.h>

#include <sodium.h>

#include "util.h"

#define DIRID_MAGIC "PHFD"
#define DIRID_VERSION 1
#define DIRID_FILE_LEN (4 + 2 + 2 + PHI_DIRID_LEN)

int phi_dir_id_parse(const uint8_t *p, size_t len, uint8_t id[PHI_DIRID_LEN])
{
	struct phi_cur c = phi_cur_init(p, len);
	const uint8_t *magic;
	uint16_t ver, zero;
	uint8_t tmp[PHI_DIRID_LEN];
	if (phi_cur_ref(&c, &magic, 4) < 0 || memcmp(magic, DIRID_MAGIC, 4) != 0)
		return -EBADMSG;
	if (phi_cur_u16be(&c, &ver) < 0 || ver != DIRID_VERSION)
		return -EBADMSG;
	if (phi_cur_u16be(&c, &zero) < 0 || zero != 0)
		return -EBADMSG;
	if (phi_cur_bytes(&c, tmp, PHI_DIRID_LEN) < 0 || phi_cur_left(&c) != 0)
		return -EBADMSG;
	memcpy(id, tmp, PHI_DIRID_LEN);
	return 0;
}

int phi_dir_id(struct phi_store *s, const char *path, uint8_t id[PHI_DIRID_LEN])
{
	char p[PHI_STORE_PATH_MAX];
	uint8_t buf[DIRID_FILE_LEN + 1];
	size_t n;
	if ((size_t)snprintf(p, sizeof(p), "%s/%s", path, PHI_DIRID_FILE) >= sizeof(p))
		return -ENAMETOOLONG;
	int r = s->ops->get(s, p, buf, sizeof(buf), &n);
	if (r == -EFBIG)
		return -EBADMSG;
	if (r < 0)
		return r == -ENOENT ? -EBADMSG : r; /* a directory without .d is damage */
	return phi_dir_id_parse(buf, n, id);
}

int phi_dir_create(struct phi_store *s, const char *path, uint32_t mode)
{
	char tmp[PHI_STORE_PATH_MAX], idp[PHI_STORE_PATH_MAX];
	uint8_t rnd[9], buf[DIRID_FILE_LEN];
	char rs[16];
	const char *slash = strrchr(path, '/');
	size_t plen = slash ? (size_t)(slash - path) + 1 : 0;

	/* the temp dir sits beside the target, so the rename is within one directory */
	phi_random(rnd, sizeof(rnd));
	phi_b64_enc(rnd, sizeof(rnd), rs);
	if ((size_t)snprintf(tmp, sizeof(tmp), "%.*s.tmp.%s", (int)plen, path, rs) >= sizeof(tmp) ||
	    (size_t)snprintf(idp, sizeof(idp), "%s/%s", tmp, PHI_DIRID_FILE) >= sizeof(idp))
		return -ENAMETOOLONG;
	memcpy(buf, DIRID_MAGIC, 4);
	phi_put_u16be(buf + 4, DIRID_VERSION);
	phi_put_u16be(buf + 6, 0);
	phi_random(buf + 8, PHI_DIRID_LEN);

	int r = s->ops->mkdir(s, tmp, mode);
	if (r < 0)
		return r;
	r = s->ops->put(s, idp, buf, sizeof(buf));
	if (r >= 0)
		r = s->ops->rename(s, tmp, path, RENAME_NOREPLACE);
	if (r < 0) {
		(void)s->ops->unlink(s, idp);
		(void)s->ops->rmdir(s, tmp);
	}
	return r;
}

bool phi_name_is_entry(const char *n)
{
	size_t len = strlen(n);
	if (len == 0 || n[0] == '.')
		return false;
	if (len > 2 && n[len - 2] == '.' && n[len - 1] == 'n')
		return false;
	return true;
}

void phi_name_sidecar(const char *store_name, char out[PHI_STORE_NAME_MAX + 1])
{
	size_t len = strnlen(store_name, PHI_STORE_NAME_MAX);
	memcpy(out, store_name, len);
	out[len] = 0;
	if (len >= 2 && out[len - 2] == '.')
		out[len - 1] = 'n';
}

int phi_name_encrypt(const struct phi_key *name_key, const uint8_t dir_id[PHI_DIRID_LEN],
		     const char *name, struct phi_ename *ret)
{
	size_t len = strlen(name);
	uint8_t ct[PHI_NAME_PLAIN_MAX + PHI_SIV_TAG];
	if (len == 0 || strchr(name, '/') || !strcmp(name, ".") || !strcmp(name, ".."))
		return -EINVAL;
	if (len > PHI_NAME_PLAIN_MAX)
		return -ENAMETOOLONG;
	int r = phi_siv_seal(name_key, dir_id, PHI_DIRID_LEN, name, len, ct);
	if (r < 0)
		return r;
	struct phi_ename e;
	phi_b64_enc(ct, len + PHI_SIV_TAG, e.full);
	size_t elen = strlen(e.full);
	if (elen <= PHI_NAME_SHORT_MAX) {
		memcpy(e.store, e.full, elen + 1);
		e.is_long = false;
	} else {
		uint8_t h[crypto_hash_sha256_BYTES];
		crypto_hash_sha256(h, (const uint8_t *)e.full, elen);
		phi_b64_enc(h, sizeof(h), e.store);
		strcat(e.store, ".l");
		e.is_long = true;
	}
	*ret = e;
	return 0;
}

int phi_name_decrypt(const struct phi_key *name_key, const uint8_t dir_id[PHI_DIRID_LEN],
		     const char *full, char out[PHI_NAME_PLAIN_MAX + 1])
{
	uint8_t ct[PHI_NAME_PLAIN_MAX + PHI_SIV_TAG];
	char pt[PHI_NAME_PLAIN_MAX + 1];
	size_t n;
	int r = phi_b64_dec(full, strlen(full), ct, sizeof(ct), &n);
	if (r < 0 || n <= PHI_SIV_TAG)
		return -EBADMSG;
	r = phi_siv_open(name_key, dir_id, PHI_DIRID_LEN, ct, n, (uint8_t *)pt);
	if (r < 0)
		return -EBADMSG;
	n -= PHI_SIV_TAG;
	pt[n] = 0;
	/* an authentic name is still checked: it becomes a path component in the kernel */
	if (memchr(pt, '/', n) || memchr(pt, 0, n) || !strcmp(pt, ".") || !strcmp(pt, ".."))
		return -EBADMSG;
	memcpy(out, pt, n + 1);
	return 0;
}

static const char link_ad[] = "phifs-link-v1";

int phi_link_encrypt(const struct phi_key *name_key, const char *target, char *out, size_t out_max)
{
	size_t len = strlen(target);
	if (len == 0)
		return -ENOENT;
	if (phi_b64_len(len + PHI_SIV_TAG) + 1 > out_max)
		return -ENAMETOOLONG;
	_cleanup_free_ uint8_t *ct = malloc(len + PHI_SIV_TAG);
	if (!ct)
		return -ENOMEM;
	int r = phi_siv_seal(name_key, link_ad, sizeof(link_ad) - 1, target, len, ct);
	if (r < 0)
		return r;
	phi_b64_enc(ct, len + PHI_SIV_TAG, out);
	return 0;
}

int phi_link_decrypt(const struct phi_key *name_key, const char *enc, char *out, size_t out_max)
{
	size_t elen = strlen(enc), n;
	size_t cap = elen / 4 * 3 + 3;
	_cleanup_free_ uint8_t *ct = malloc(cap);
	if (!ct)
		return -ENOMEM;
	if (phi_b64_dec(enc, elen, ct, cap, &n) < 0 || n <= PHI_SIV_TAG)
		return -EBADMSG;
	if (n - PHI_SIV_TAG + 1 > out_max)
		return -ENAMETOOLONG;
	int r = phi_siv_open(name_key, link_ad, sizeof(link_ad) - 1, ct, n, (uint8_t *)out);
	if (r < 0)
		return -EBADMSG;
	out[n - PHI_SIV_TAG] = 0;
	if (memchr(out, 0, n - PHI_SIV_TAG))
		return -EBADMSG;
	return 0;
}
