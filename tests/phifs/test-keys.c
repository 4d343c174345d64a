/* test-keys: master key files, the store header and the per-patient key files
 * (golden structure, wrong key, corruption, swap, rotate/retire, shred, rekey, lock). */
#include <errno.h>
#include <ftw.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "phifs/cfile.h"
#include "phifs/crypto.h"
#include "phifs/keys.h"
#include "phifs/names.h"
#include "phifs/store.h"
#include "phifs/util.h"
#include "test.h"

static char root[] = "/tmp/test-keys.XXXXXX";

static size_t slurp(const char *rel, uint8_t *buf, size_t max)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	FILE *f = fopen(p, "rbe");
	CHECK(f);
	size_t n = fread(buf, 1, max, f);
	fclose(f);
	return n;
}

static void spit(const char *rel, const uint8_t *buf, size_t n)
{
	char p[512];
	snprintf(p, sizeof(p), "%s/%s", root, rel);
	FILE *f = fopen(p, "wbe");
	CHECK(f);
	CHECK_EQ(fwrite(buf, 1, n, f), n);
	fclose(f);
}

static void write_file(const char *p, const void *d, size_t n, mode_t mode)
{
	(void)unlink(p);
	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, d, n), (ssize_t)n);
	CHECK_OK(fchmod(fd, mode));
	close(fd);
}

static bool memmem_any(const uint8_t *hay, size_t n, const void *needle, size_t m)
{
	return memmem(hay, n, needle, m) != NULL;
}

/* every file of the store must not contain needle */
static const void *scan_needle;
static size_t scan_len;
static int scan_fn(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)ftw;
	if (type != FTW_F)
		return 0;
	uint8_t buf[16384];
	FILE *f = fopen(p, "rbe");
	CHECK(f);
	size_t n = fread(buf, 1, sizeof(buf), f);
	fclose(f);
	CHECK(!memmem_any(buf, n, scan_needle, scan_len));
	CHECK(!strstr(p, (const char *)scan_needle));
	return 0;
}
static void store_lacks(const char *s)
{
	scan_needle = s;
	scan_len = strlen(s);
	CHECK_OK(nftw(root, scan_fn, 16, FTW_PHYS));
}

static void test_master(void)
{
	char p[512], q[512];
	_cleanup_key_ struct phi_key *a = NULL, *b = NULL, *c = NULL;
	snprintf(p, sizeof(p), "%s/m.key", root);
	CHECK_OK(phi_master_create(p, &a));
	CHECK_EQ(phi_master_create(p, &b), -EEXIST);
	struct stat st;
	CHECK_OK(stat(p, &st));
	CHECK_EQ(st.st_mode & 07777, 0600);
	CHECK_EQ(st.st_size, 65);
	CHECK_OK(phi_master_load(p, &b));
	CHECK_EQ(b->len, 32);
	CHECK_MEM(a->k, b->k, 32);
	phi_key_free(b);
	b = NULL;

	/* 64 hex without newline, upper case; and 32 raw bytes */
	char hex[65];
	for (int i = 0; i < 32; i++)
		snprintf(hex + 2 * i, 3, "%02X", a->k[i]);
	write_file(p, hex, 64, 0600);
	CHECK_OK(phi_master_load(p, &b));
	CHECK_MEM(a->k, b->k, 32);
	phi_key_free(b);
	b = NULL;
	write_file(p, a->k, 32, 0600);
	CHECK_OK(phi_master_load(p, &b));
	CHECK_MEM(a->k, b->k, 32);
	phi_key_free(b);
	b = NULL;

	/* wrong content */
	write_file(p, "not a key\n", 10, 0600);
	CHECK_EQ(phi_master_load(p, &b), -EINVAL);
	hex[10] = 'g';
	write_file(p, hex, 64, 0600);
	CHECK_EQ(phi_master_load(p, &b), -EINVAL);
	write_file(p, a->k, 31, 0600);
	CHECK_EQ(phi_master_load(p, &b), -EINVAL);

	/* mode, symlink, missing, directory */
	write_file(p, a->k, 32, 0644);
	CHECK_EQ(phi_master_load(p, &b), -EPERM);
	write_file(p, a->k, 32, 0640);
	CHECK_EQ(phi_master_load(p, &b), -EPERM);
	write_file(p, a->k, 32, 0600);
	snprintf(q, sizeof(q), "%s/link.key", root);
	CHECK_OK(symlink(p, q));
	CHECK_EQ(phi_master_load(q, &b), -ELOOP);
	snprintf(q, sizeof(q), "%s/missing.key", root);
	CHECK_EQ(phi_master_load(q, &b), -ENOENT);
	CHECK_EQ(phi_master_load(root, &b), -EPERM);
	CHECK(b == NULL);

	/* systemd credentials */
	unsetenv("CREDENTIALS_DIRECTORY");
	CHECK_EQ(phi_master_load(NULL, &b), -ENOKEY);
	snprintf(q, sizeof(q), "%s/creds", root);
	CHECK_OK(mkdir(q, 0700));
	setenv("CREDENTIALS_DIRECTORY", q, 1);
	CHECK_EQ(phi_master_load(NULL, &b), -ENOENT);
	snprintf(q, sizeof(q), "%s/creds/" PHI_CRED_NAME, root);
	write_file(q, a->k, 32, 0400);
	CHECK_OK(phi_master_load(NULL, &c));
	CHECK_MEM(a->k, c->k, 32);
	unsetenv("CREDENTIALS_DIRECTORY");
}

struct count {
	int n, shredded;
};
static int count_fn(void *ctx, const struct phi_pkeys *pk)
{
	struct count *c = ctx;
	c->n++;
	c->shredded += pk->shredded;
	return 0;
}

static int stop_fn(void *ctx, const struct phi_pkeys *pk)
{
	(void)pk;
	((struct count *)ctx)->n++;
	return 1;
}
static int tag_fn(void *ctx, const char *tag)
{
	CHECK_EQ(strlen(tag), PHI_TAG_LEN);
	((struct count *)ctx)->n++;
	return 0;
}

static void test_store(void)
{
	_cleanup_key_ struct phi_key *m = NULL, *wrong = NULL, *m2 = NULL;
	_cleanup_store_ struct phi_store *s = NULL;
	char sroot[512];
	snprintf(sroot, sizeof(sroot), "%s/store", root);
	CHECK_OK(mkdir(sroot, 0700));
	CHECK_OK(phi_store_open(sroot, NULL, &s));
	CHECK_OK(phi_key_random(32, &m));
	CHECK_OK(phi_key_random(32, &wrong));
	CHECK_OK(phi_store_init(s, m));
	CHECK_EQ(phi_store_init(s, m), -EEXIST);

	/* header golden structure */
	uint8_t hdr[256], hdr2[256];
	size_t hl = slurp("store/phifs.hdr", hdr, sizeof(hdr));
	CHECK_EQ(hl, 84);
	CHECK_EQ(PHI_HDR_LEN, 84);
	CHECK_MEM(hdr, "PHFS", 4);
	CHECK_EQ(hdr[4], 0);
	CHECK_EQ(hdr[5], 1);
	CHECK_EQ(hdr[6], 0);
	CHECK_EQ(hdr[7], 0);
	uint8_t sid[16];
	const uint8_t *sealed;
	CHECK_OK(phi_keys_parse_header(hdr, hl, sid, &sealed));
	CHECK(sealed == hdr + 24);
	CHECK_EQ(phi_keys_parse_header(hdr, hl - 1, sid, NULL), -EBADMSG);

	struct phi_keyring *kr = NULL;
	CHECK_OK(phi_keyring_open(s, m, &kr));
	CHECK_MEM(phi_keyring_store_id(kr), hdr + 8, 16);

	/* wrong master and corrupt headers; nothing on the store changes */
	struct phi_keyring *bad = NULL;
	CHECK_EQ(phi_keyring_open(s, wrong, &bad), -EKEYREJECTED);
	CHECK_EQ(slurp("store/phifs.hdr", hdr2, sizeof(hdr2)), hl);
	CHECK_MEM(hdr, hdr2, hl);
	const size_t fixed[] = { 0, 3, 4, 5, 6, 7 };
	for (size_t i = 0; i < ARRAY_SIZE(fixed); i++) {
		memcpy(hdr2, hdr, hl);
		hdr2[fixed[i]] ^= 0x20;
		spit("store/phifs.hdr", hdr2, hl);
		CHECK_EQ(phi_keyring_open(s, m, &bad), -EBADMSG);
		uint8_t after[256];
		CHECK_EQ(slurp("store/phifs.hdr", after, sizeof(after)), hl);
		CHECK_MEM(after, hdr2, hl);
	}
	/* store id, nonce, sealed key or tag: authentication fails */
	for (size_t off = 8; off < hl; off += 7) {
		memcpy(hdr2, hdr, hl);
		hdr2[off] ^= 1;
		spit("store/phifs.hdr", hdr2, hl);
		CHECK_EQ(phi_keyring_open(s, m, &bad), -EKEYREJECTED);
	}
	spit("store/phifs.hdr", hdr, hl - 1);
	CHECK_EQ(phi_keyring_open(s, m, &bad), -EBADMSG);
	memset(hdr2, 'A', sizeof(hdr2));
	spit("store/phifs.hdr", hdr2, sizeof(hdr2));
	CHECK_EQ(phi_keyring_open(s, m, &bad), -EBADMSG);
	spit("store/phifs.hdr", hdr, hl);
	CHECK(bad == NULL);

	/* patients and tags */
	CHECK_OK(phi_patient_valid("alice"));
	CHECK_EQ(phi_patient_valid(".alice"), -EINVAL);
	CHECK_EQ(phi_patient_valid("a/b"), -EINVAL);
	CHECK_EQ(phi_patient_valid(""), -EINVAL);
	char longid[70];
	memset(longid, 'x', 65);
	longid[65] = 0;
	CHECK_EQ(phi_patient_valid(longid), -EINVAL);
	longid[64] = 0;
	CHECK_OK(phi_patient_valid(longid));
	CHECK_EQ(phi_patient_add(kr, "a/b"), -EINVAL);

	char ta[PHI_TAG_LEN + 1], tb[PHI_TAG_LEN + 1], t2[PHI_TAG_LEN + 1];
	CHECK_OK(phi_patient_tag(kr, "alice", ta));
	CHECK_OK(phi_patient_tag(kr, "bob", tb));
	CHECK_OK(phi_patient_tag(kr, "alice", t2));
	CHECK_EQ(strlen(ta), PHI_TAG_LEN);
	CHECK(!strcmp(ta, t2));
	CHECK(strcmp(ta, tb) != 0);

	CHECK_OK(phi_patient_add(kr, "alice"));
	CHECK_OK(phi_patient_add(kr, "bob"));
	CHECK_EQ(phi_patient_add(kr, "alice"), -EEXIST);
	CHECK_OK(phi_patient_add(kr, longid));
	char path[1024];
	uint8_t did[PHI_DIRID_LEN];
	snprintf(path, sizeof(path), "data/%s", ta);
	CHECK_OK(phi_dir_id(s, path, did));

	/* key file golden structure */
	uint8_t kf[16384], kf2[16384];
	snprintf(path, sizeof(path), "store/keys/%s", ta);
	size_t kl = slurp(path, kf, sizeof(kf));
	CHECK_EQ(kl, 8 + (1 + 5 + 64 + 8 + 36) + 28);
	CHECK_MEM(kf, "PHFK", 4);
	CHECK_EQ(kf[4], 0);
	CHECK_EQ(kf[5], 1);
	CHECK_EQ(kf[6], PHI_KF_ACTIVE);
	CHECK_EQ(kf[7], 0);
	uint8_t state;
	const uint8_t *rest;
	size_t rest_len;
	CHECK_OK(phi_keys_parse_keyfile(kf, kl, &state, &rest, &rest_len));
	CHECK_EQ(state, 0);
	CHECK_EQ(rest_len, kl - 8);
	kf[6] = 2;
	CHECK_EQ(phi_keys_parse_keyfile(kf, kl, &state, &rest, &rest_len), -EBADMSG);
	kf[6] = 0;

	struct phi_pkeys *pa = NULL;
	CHECK_OK(phi_patient_load(kr, "alice", &pa));
	CHECK(!strcmp(pa->id, "alice"));
	CHECK(!strcmp(pa->tag, ta));
	CHECK(!pa->shredded);
	CHECK_EQ(pa->current, 1);
	CHECK_EQ(pa->n, 1);
	CHECK_EQ(pa->version[0], 1);
	CHECK_EQ(pa->name_key->len, 64);
	uint8_t k1[32];
	const struct phi_key *ck;
	CHECK_OK(phi_pkeys_content(pa, 1, &ck));
	memcpy(k1, ck->k, 32);
	CHECK_EQ(phi_pkeys_content(pa, 2, &ck), -ENOKEY);
	phi_pkeys_free(pa);
	CHECK_OK(phi_patient_load_tag(kr, ta, &pa));
	CHECK(!strcmp(pa->id, "alice"));
	phi_pkeys_free(pa);
	CHECK_EQ(phi_patient_load(kr, "carol", &pa), -ENOENT);

	/* a key file moved to another patient's tag fails */
	snprintf(path, sizeof(path), "store/keys/%s", tb);
	size_t bl = slurp(path, kf2, sizeof(kf2));
	spit(path, kf, kl);
	CHECK_EQ(phi_patient_load(kr, "bob", &pa), -EBADMSG);
	spit(path, kf2, bl);
	CHECK_OK(phi_patient_load(kr, "bob", &pa));
	phi_pkeys_free(pa);
	/* a tampered key file fails */
	snprintf(path, sizeof(path), "store/keys/%s", ta);
	for (size_t off = 0; off < kl; off += 11) {
		memcpy(kf2, kf, kl);
		kf2[off] ^= 4;
		spit(path, kf2, kl);
		CHECK_EQ(phi_patient_load(kr, "alice", &pa), -EBADMSG);
	}
	spit(path, kf, kl - 1);
	CHECK_EQ(phi_patient_load(kr, "alice", &pa), -EBADMSG);
	spit(path, kf, kl);

	/* rotate keeps old versions readable; retire drops them */
	uint32_t v = 0;
	CHECK_OK(phi_patient_rotate(kr, "alice", &v));
	CHECK_EQ(v, 2);
	CHECK_OK(phi_patient_rotate(kr, "alice", &v));
	CHECK_EQ(v, 3);
	CHECK_OK(phi_patient_load(kr, "alice", &pa));
	CHECK_EQ(pa->current, 3);
	CHECK_EQ(pa->n, 3);
	CHECK_OK(phi_pkeys_content(pa, 1, &ck));
	CHECK_MEM(ck->k, k1, 32);
	uint8_t k3[32];
	CHECK_OK(phi_pkeys_content(pa, 3, &ck));
	memcpy(k3, ck->k, 32);
	CHECK(memcmp(k1, k3, 32) != 0);
	phi_pkeys_free(pa);
	CHECK_OK(phi_patient_retire_old(kr, "alice"));
	CHECK_OK(phi_patient_load(kr, "alice", &pa));
	CHECK_EQ(pa->n, 1);
	CHECK_EQ(pa->current, 3);
	CHECK_EQ(phi_pkeys_content(pa, 1, &ck), -ENOKEY);
	CHECK_EQ(phi_pkeys_content(pa, 2, &ck), -ENOKEY);
	CHECK_OK(phi_pkeys_content(pa, 3, &ck));
	CHECK_MEM(ck->k, k3, 32);
	phi_pkeys_free(pa);

	/* no patient id on the store */
	store_lacks("alice");
	store_lacks("bob");
	store_lacks(longid);

	/* rekey: old master fails afterwards, new one opens the same keys */
	CHECK_OK(phi_key_random(32, &m2));
	CHECK_OK(phi_keyring_rekey(kr, m2));
	CHECK_EQ(phi_keyring_open(s, m, &bad), -EKEYREJECTED);
	struct phi_keyring *kr2 = NULL;
	CHECK_OK(phi_keyring_open(s, m2, &kr2));
	CHECK_MEM(phi_keyring_store_id(kr2), hdr + 8, 16);
	CHECK_OK(phi_patient_tag(kr2, "alice", t2));
	CHECK(!strcmp(ta, t2));
	CHECK_OK(phi_patient_load(kr2, "alice", &pa));
	CHECK_OK(phi_pkeys_content(pa, 3, &ck));
	CHECK_MEM(ck->k, k3, 32);
	phi_pkeys_free(pa);
	CHECK_OK(phi_patient_load(kr, "alice", &pa)); /* the rekeyed keyring goes on working */
	phi_pkeys_free(pa);
	snprintf(path, sizeof(path), "%s/.phifs.hdr.rekey", sroot);
	CHECK(access(path, F_OK) < 0);
	snprintf(path, sizeof(path), "%s/keys/.%s.rekey", sroot, ta);
	CHECK(access(path, F_OK) < 0);
	phi_keyring_free(kr);
	kr = kr2;

	/* shred: a tombstone without any key bytes */
	CHECK_OK(phi_patient_shred(kr, "alice"));
	snprintf(path, sizeof(path), "store/keys/%s", ta);
	kl = slurp(path, kf, sizeof(kf));
	CHECK_EQ(kl, 8 + PHI_TAG_LEN);
	CHECK_MEM(kf, "PHFK", 4);
	CHECK_EQ(kf[6], PHI_KF_SHREDDED);
	CHECK_MEM(kf + 8, ta, PHI_TAG_LEN);
	CHECK(!memmem_any(kf, kl, k3, 32));
	CHECK_OK(phi_patient_load(kr, "alice", &pa));
	CHECK(pa->shredded);
	CHECK_EQ(pa->n, 0);
	CHECK(pa->name_key == NULL);
	CHECK_EQ(phi_pkeys_content(pa, 3, &ck), -EKEYREVOKED);
	phi_pkeys_free(pa);
	CHECK_EQ(phi_patient_rotate(kr, "alice", &v), -EKEYREVOKED);
	CHECK_EQ(phi_patient_retire_old(kr, "alice"), -EKEYREVOKED);
	CHECK_EQ(phi_patient_add(kr, "alice"), -EEXIST);
	CHECK_EQ(phi_patient_shred(kr, "carol"), -ENOENT);
	/* a tombstone with another tag is corrupt */
	memcpy(kf2, kf, kl);
	kf2[8] ^= 1;
	spit(path, kf2, kl);
	CHECK_EQ(phi_patient_load(kr, "alice", &pa), -EBADMSG);
	spit(path, kf, kl);

	/* rekey survives a tombstone */
	CHECK_OK(phi_keyring_rekey(kr, m));
	CHECK_OK(phi_patient_load(kr, "alice", &pa));
	CHECK(pa->shredded);
	phi_pkeys_free(pa);
	CHECK_OK(phi_patient_load(kr, "bob", &pa));
	CHECK(!pa->shredded);
	phi_pkeys_free(pa);
	phi_keyring_free(kr);
	CHECK_OK(phi_keyring_open(s, m, &kr));

	/* foreach sees every patient, in tag order */
	struct count cnt = { 0, 0 };
	CHECK_OK(phi_patient_foreach(kr, count_fn, &cnt));
	CHECK_EQ(cnt.n, 3);
	CHECK_EQ(cnt.shredded, 1);
	struct count one = { 0, 0 };
	CHECK_OK(phi_patient_foreach(kr, stop_fn, &one));
	CHECK_EQ(one.n, 1);
	struct count tags = { 0, 0 };
	CHECK_OK(phi_patient_foreach_tag(kr, tag_fn, &tags));
	CHECK_EQ(tags.n, 3);
	phi_keyring_free(kr);
}

static void test_lock(void)
{
	char sroot[512];
	snprintf(sroot, sizeof(sroot), "%s/store", root);
	int a = -1, b = -1, c = -1;
	CHECK_OK(phi_store_lock(sroot, false, &a));
	CHECK_OK(phi_store_lock(sroot, false, &b));
	CHECK_EQ(phi_store_lock(sroot, true, &c), -EBUSY);
	close(a);
	close(b);
	char url[600];
	snprintf(url, sizeof(url), "file://%s", sroot);
	CHECK_OK(phi_store_lock(url, true, &a));
	CHECK_EQ(phi_store_lock(sroot, false, &b), -EBUSY);
	close(a);
	CHECK_OK(phi_store_lock("az://acct/container", true, &c));
	CHECK_EQ(c, -1);
}

static int rm_fn(const char *p, const struct stat *st, int type, struct FTW *ftw)
{
	(void)st;
	(void)type;
	(void)ftw;
	return remove(p);
}

/* ---- helper modes for test-phifs-key.sh (no FUSE needed) ----
 *   test-keys populate STORE KEYFILE PATIENT NAME...   write files with known content
 *   test-keys verify STORE KEYFILE PATIENT NAME...     read them back and compare
 * NAME is "file" or "dir/file"; "a=b" makes b a hard link of a (verify: b holds a's content). */

#define POP_SIZE 300000

static void content_of(const char *name, uint8_t *buf, size_t n)
{
	size_t l = strlen(name);
	for (size_t i = 0; i < n; i++)
		buf[i] = i % (l + 8) < 7 ? (uint8_t)"MARKER-"[i % (l + 8)]
					 : i % (l + 8) == l + 7 ? '\n' : (uint8_t)name[i % (l + 8) - 7];
}

/* store path of a plaintext "dir/file" or "file" of the patient; creates dir if asked */
static void store_path(struct phi_store *s, const struct phi_pkeys *pk, const char *name,
		       bool mkdirs, char out[1024])
{
	char dir[1024], comp[256];
	snprintf(dir, sizeof(dir), "data/%s", pk->tag);
	const char *p = name;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t l = slash ? (size_t)(slash - p) : strlen(p);
		memcpy(comp, p, l);
		comp[l] = 0;
		uint8_t did[PHI_DIRID_LEN];
		CHECK_OK(phi_dir_id(s, dir, did));
		struct phi_ename en;
		CHECK_OK(phi_name_encrypt(pk->name_key, did, comp, &en));
		CHECK(!en.is_long);
		size_t dl = strlen(dir);
		snprintf(dir + dl, sizeof(dir) - dl, "/%s", en.store);
		if (!slash)
			break;
		if (mkdirs) {
			int r = phi_dir_create(s, dir, 0700);
			CHECK(r == 0 || r == -EEXIST);
		}
		p = slash + 1;
	}
	memcpy(out, dir, sizeof(dir));
}

static int keyfn(void *ctx, uint32_t version, const struct phi_key **ret)
{
	return phi_pkeys_content(ctx, version, ret);
}

static int helper(int argc, char **argv)
{
	CHECK(argc >= 5);
	bool populate = !strcmp(argv[1], "populate");
	_cleanup_key_ struct phi_key *m = NULL;
	_cleanup_store_ struct phi_store *s = NULL;
	struct phi_keyring *kr = NULL;
	struct phi_pkeys *pk = NULL;
	CHECK_OK(phi_master_load(argv[3], &m));
	CHECK_OK(phi_store_open(argv[2], NULL, &s));
	CHECK_OK(phi_keyring_open(s, m, &kr));
	CHECK_OK(phi_patient_load(kr, argv[4], &pk));
	CHECK(!pk->shredded);
	uint8_t *want = malloc(POP_SIZE), *got = malloc(POP_SIZE);
	CHECK(want && got);
	for (int i = 5; i < argc; i++) {
		char name[256], path[1024], target[1024];
		snprintf(name, sizeof(name), "%s", argv[i]);
		char *eq = strchr(name, '=');
		if (eq) {
			*eq = 0;
			store_path(s, pk, eq + 1, populate, path);
			if (populate) {
				store_path(s, pk, name, false, target);
				CHECK_OK(s->ops->link(s, target, path));
				continue;
			}
		} else
			store_path(s, pk, name, populate, path);
		content_of(name, want, POP_SIZE);
		struct phi_store_obj *o;
		struct phi_cfile *cf;
		if (populate) {
			const struct phi_key *ck;
			CHECK_OK(phi_pkeys_content(pk, pk->current, &ck));
			CHECK_OK(s->ops->open(s, path, O_RDWR | O_CREAT | O_EXCL, 0600, &o));
			CHECK_OK(phi_cfile_create(s, o, ck, pk->current, &cf));
			CHECK_OK(phi_cfile_write(cf, want, POP_SIZE, 0));
		} else {
			size_t n;
			CHECK_OK(s->ops->open(s, path, O_RDONLY, 0, &o));
			CHECK_OK(phi_cfile_open(s, o, keyfn, pk, &cf));
			CHECK_EQ(phi_cfile_size(cf), POP_SIZE);
			CHECK_OK(phi_cfile_read(cf, got, POP_SIZE, 0, &n));
			CHECK_EQ(n, POP_SIZE);
			CHECK_MEM(got, want, POP_SIZE);
		}
		phi_cfile_free(cf);
		CHECK_OK(s->ops->fsync(o, false));
		CHECK_OK(s->ops->release(o));
	}
	free(want);
	free(got);
	phi_pkeys_free(pk);
	phi_keyring_free(kr);
	return 0;
}

int main(int argc, char **argv)
{
	CHECK_OK(phi_crypto_init());
	if (argc > 1)
		return helper(argc, argv);
	CHECK(mkdtemp(root));
	test_master();
	test_store();
	test_lock();
	CHECK_OK(nftw(root, rm_fn, 16, FTW_DEPTH | FTW_PHYS));
	puts("ok");
	return 0;
}
