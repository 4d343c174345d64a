/* test-cfile: the content format against a model buffer, golden layout, and every
 * tamper class (modified, swapped, reordered, moved between files, truncated, zeroed,
 * extended, header edited) giving -EIO, never wrong bytes. */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "phifs/cfile.h"
#include "phifs/store.h"
#include "test.h"

#define B 4096
#define SLOT (B + 28)

static struct phi_store *S;
static struct phi_key *K;

static int keyfn(void *ctx, uint32_t v, const struct phi_key **ret)
{
	(void)ctx;
	if (v != 1)
		return -ENOKEY;
	*ret = K;
	return 0;
}

static struct phi_store_obj *obj(const char *name, int flags)
{
	struct phi_store_obj *o;
	CHECK_OK(S->ops->open(S, name, O_RDWR | flags, 0600, &o));
	return o;
}

static void raw(struct phi_store_obj *o, uint8_t **buf, uint64_t *len)
{
	size_t n;
	CHECK_OK(S->ops->size(o, len));
	*buf = malloc(*len + 1);
	CHECK_OK(S->ops->pread(o, *buf, *len, 0, &n));
	CHECK_EQ(n, *len);
}

static void model_test(void)
{
	struct phi_store_obj *o = obj("model", O_CREAT | O_TRUNC);
	struct phi_cfile *cf;
	CHECK_OK(phi_cfile_create(S, o, K, 1, &cf));
	size_t cap = 300000;
	uint8_t *m = calloc(1, cap), *buf = malloc(cap), *got = malloc(cap);
	uint64_t size = 0;
	srand(7);
	for (int it = 0; it < 3000; it++) {
		int op = rand() % 10;
		uint64_t off = (uint64_t)rand() % 200000;
		size_t len = (size_t)(rand() % 3 == 0 ? rand() % 20000 : rand() % 600);
		if (op < 5) {
			for (size_t i = 0; i < len; i++)
				buf[i] = (uint8_t)rand();
			CHECK_OK(phi_cfile_write(cf, buf, len, off));
			memcpy(m + off, buf, len);
			if (len && off + len > size)
				size = off + len;
		} else if (op < 7) {
			uint64_t ns = (uint64_t)rand() % 200000;
			if (rand() % 4 == 0)
				ns = ns & ~(uint64_t)(B - 1);
			CHECK_OK(phi_cfile_truncate(cf, ns));
			if (ns < size)
				memset(m + ns, 0, size - ns);
			size = ns;
		} else {
			size_t n;
			CHECK_OK(phi_cfile_read(cf, got, len, off, &n));
			size_t want = off >= size ? 0 : (off + len > size ? size - off : len);
			CHECK_EQ(n, want);
			CHECK_MEM(got, m + off, n);
		}
		CHECK_EQ(phi_cfile_size(cf), size);
		if (it % 500 == 0) {
			/* reopen from the store alone */
			phi_cfile_free(cf);
			CHECK_OK(phi_cfile_open(S, o, keyfn, NULL, &cf));
			CHECK_EQ(phi_cfile_size(cf), size);
			uint64_t ct, ps;
			CHECK_OK(S->ops->size(o, &ct));
			CHECK_OK(phi_cfile_plain_size(ct, 12, &ps));
			CHECK_EQ(ps, size);
		}
	}
	size_t n;
	CHECK_OK(phi_cfile_read(cf, got, size, 0, &n));
	CHECK_EQ(n, size);
	CHECK_MEM(got, m, size);
	CHECK_OK(phi_cfile_verify(cf, &(uint64_t){ 0 }));
	phi_cfile_free(cf);
	CHECK_OK(S->ops->release(o));
	free(m);
	free(buf);
	free(got);
}

/* make a 3.5-block file named name with known content; returns its ciphertext */
static void mkfile(const char *name, uint8_t fill)
{
	struct phi_store_obj *o = obj(name, O_CREAT | O_TRUNC);
	struct phi_cfile *cf;
	uint8_t d[3 * B + 100];
	memset(d, fill, sizeof(d));
	CHECK_OK(phi_cfile_create(S, o, K, 1, &cf));
	CHECK_OK(phi_cfile_write(cf, d, sizeof(d), 0));
	phi_cfile_free(cf);
	CHECK_OK(S->ops->release(o));
}

/* reading the whole file must fail with -EIO (or the open must), never return data */
static void expect_eio(const char *name)
{
	struct phi_store_obj *o = obj(name, 0);
	struct phi_cfile *cf;
	int r = phi_cfile_open(S, o, keyfn, NULL, &cf);
	if (r == 0) {
		uint8_t buf[4 * B];
		size_t n = 0;
		r = phi_cfile_read(cf, buf, sizeof(buf), 0, &n);
		if (r == 0)
			fprintf(stderr, "tamper of %s not detected (read %zu)\n", name, n);
		CHECK_EQ(r, -EIO);
		uint64_t blk;
		CHECK_EQ(phi_cfile_verify(cf, &blk), -EIO);
		phi_cfile_free(cf);
	} else {
		CHECK(r == -EIO || r == -ENOKEY); /* an edited key version names no key */
	}
	CHECK_OK(S->ops->release(o));
}

static void tamper(const char *name, void (*fn)(uint8_t *p, uint64_t *len, const uint8_t *other))
{
	uint8_t *p, *q;
	uint64_t len, olen;
	mkfile(name, 'a');
	mkfile("other", 'a');
	struct phi_store_obj *o = obj(name, 0), *oo = obj("other", 0);
	raw(o, &p, &len);
	raw(oo, &q, &olen);
	p = realloc(p, len + 2 * SLOT);
	fn(p, &len, q);
	CHECK_OK(S->ops->truncate(o, 0));
	CHECK_OK(S->ops->pwrite(o, p, len, 0));
	CHECK_OK(S->ops->release(o));
	CHECK_OK(S->ops->release(oo));
	free(p);
	free(q);
	expect_eio(name);
}

static void t_flip(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)len; (void)o; p[32 + SLOT + 100] ^= 1; }
static void t_tag(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)o; p[*len - 1] ^= 0x80; }
static void t_swap(uint8_t *p, uint64_t *len, const uint8_t *o)
{
	(void)len; (void)o;
	uint8_t t[SLOT];
	memcpy(t, p + 32, SLOT);
	memcpy(p + 32, p + 32 + SLOT, SLOT);
	memcpy(p + 32 + SLOT, t, SLOT);
}
static void t_move(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)len; memcpy(p + 32 + SLOT, o + 32 + SLOT, SLOT); }
static void t_cut_block(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)p; (void)o; *len = 32 + 3 * SLOT; } /* drop the final block */
static void t_cut_inside(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)p; (void)o; *len = 32 + 2 * SLOT + 1028; } /* a valid-looking size */
static void t_cut_mid(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)p; (void)o; *len -= 50; }
static void t_hdr_only(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)p; (void)o; *len = 32; }
static void t_zero(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)len; (void)o; memset(p + 32, 0, SLOT); }
static void t_zero_all(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)o; memset(p + 32, 0, *len - 32); }
static void t_append(uint8_t *p, uint64_t *len, const uint8_t *o)
{
	(void)o; /* duplicate the final block after itself: the old final is now mid-file */
	memcpy(p + *len, p + 32 + 3 * SLOT, 128);
	*len += 128;
}
static void t_hdr_kver(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)len; (void)o; p[11] = 2; }
static void t_hdr_id(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)len; (void)o; p[20] ^= 1; }
static void t_hdr_magic(uint8_t *p, uint64_t *len, const uint8_t *o) { (void)len; (void)o; p[0] = 'X'; }

static void golden_layout(void)
{
	struct phi_store_obj *o = obj("golden", O_CREAT | O_TRUNC);
	struct phi_cfile *cf;
	uint8_t *p, d[B + 1];
	uint64_t len;
	memset(d, 'z', sizeof(d));
	CHECK_OK(phi_cfile_create(S, o, K, 1, &cf));
	raw(o, &p, &len);
	CHECK_EQ(len, 32 + 28); /* header + empty final block */
	CHECK_MEM(p, "PHFF\x00\x01\x0c\x00\x00\x00\x00\x01", 12);
	CHECK_MEM(p + 12, phi_cfile_id(cf), 16);
	CHECK_MEM(p + 28, "\0\0\0\0", 4);
	free(p);
	CHECK_OK(phi_cfile_write(cf, d, B, 0));
	raw(o, &p, &len);
	CHECK_EQ(len, 32 + SLOT + 28); /* exactly one block: full block + empty final */
	CHECK(memmem(p, len, "zzzz", 4) == NULL);
	free(p);
	CHECK_OK(phi_cfile_write(cf, d, 1, B));
	raw(o, &p, &len);
	CHECK_EQ(len, 32 + SLOT + 1 + 28);
	free(p);
	/* a hole: writing at 5 blocks makes encrypted zero blocks, reading back zeros */
	CHECK_OK(phi_cfile_write(cf, d, 1, 5 * B));
	uint8_t got[B];
	size_t n;
	CHECK_OK(phi_cfile_read(cf, got, B, 3 * B, &n));
	CHECK_EQ(n, B);
	for (size_t i = 0; i < B; i++)
		CHECK_EQ(got[i], 0);
	phi_cfile_free(cf);
	CHECK_OK(S->ops->release(o));
	uint64_t ps;
	CHECK_EQ(phi_cfile_plain_size(31, 12, &ps), -EIO);
	CHECK_EQ(phi_cfile_plain_size(32 + 28 + 4096, 12, &ps), -EIO); /* final would be B bytes */
	CHECK_OK(phi_cfile_plain_size(32 + SLOT + 28, 12, &ps));
	CHECK_EQ(ps, B);
	/* a retired key version gives -ENOKEY, not garbage */
	o = obj("golden", 0);
	uint8_t h[32];
	CHECK_OK(S->ops->pread(o, h, 32, 0, &n));
	h[11] = 7;
	CHECK_OK(S->ops->pwrite(o, h, 32, 0));
	CHECK_EQ(phi_cfile_open(S, o, keyfn, NULL, &cf), -ENOKEY);
	CHECK_OK(S->ops->release(o));
}

int main(void)
{
	char dir[] = "/tmp/test-cfile-XXXXXX";
	CHECK(mkdtemp(dir));
	CHECK_OK(phi_crypto_init());
	CHECK_OK(phi_store_local_open(dir, &S));
	CHECK_OK(phi_key_random(32, &K));
	golden_layout();
	model_test();
	tamper("flip", t_flip);
	tamper("tag", t_tag);
	tamper("swap", t_swap);
	tamper("move", t_move);
	tamper("cutblock", t_cut_block);
	tamper("cutmid", t_cut_mid);
	tamper("cutinside", t_cut_inside);
	tamper("hdronly", t_hdr_only);
	tamper("zero", t_zero);
	tamper("zeroall", t_zero_all);
	tamper("append", t_append);
	tamper("kver", t_hdr_kver);
	tamper("hdrid", t_hdr_id);
	tamper("magic", t_hdr_magic);
	phi_key_free(K);
	phi_store_close(S);
	char cmd[64];
	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	return system(cmd) == 0 ? 0 : 1;
}
