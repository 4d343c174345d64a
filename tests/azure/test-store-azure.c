/* Unit test of the Azure Blob backend (phifs/store_azure.c) against a real Azurite started
 * by azurite.sh (AZ_URL, AZ_OPTS, AZ_ENDPOINT, AZ_KEYFILE): the store contract shared with
 * the local backend, then what is Azure's own: write-back across blocks, small overwrites,
 * conflicts between two mounts, open objects renamed or unlinked, directory renames,
 * unreachable and misconfigured stores, and golden vectors for the two XML parsers. */
#include <sys/stat.h>

#include "phifs/store.h"
#include "phifs/store_azure.h"
#include "phifs/util.h"
#include "store-contract.h"
#include "test.h"

static const char *az_url, *az_opts, *az_endpoint, *az_keyfile;

static struct phi_store *open_sub(const char *sub)
{
	char url[512];
	snprintf(url, sizeof url, "%s%s", az_url, sub);
	struct phi_store *s = NULL;
	CHECK_OK(phi_store_open(url, az_opts, &s));
	CHECK(s && !strcmp(s->ops->scheme, "az"));
	return s;
}

static void fill(uint8_t *p, size_t n, uint64_t off, uint8_t salt)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (uint8_t)((off + i) * 131 + ((off + i) >> 12) + salt);
}

struct listed {
	char names[4][32];
	bool prefix[4];
	uint64_t size[4];
	uint32_t mode[4];
	bool full[4];
	uint32_t uid[4];
	uint64_t ino[4];
	struct timespec mtime[4];
	int n;
};

static int cb(void *ctx, const struct phi_az_entry *e)
{
	struct listed *g = ctx;
	CHECK(g->n < 4);
	snprintf(g->names[g->n], 32, "%s", e->name);
	g->prefix[g->n] = e->is_prefix;
	g->size[g->n] = e->size;
	g->mode[g->n] = e->mode;
	g->full[g->n] = e->full_meta;
	g->uid[g->n] = e->uid;
	g->ino[g->n] = e->ino;
	g->mtime[g->n] = e->mtime;
	g->n++;
	return 0;
}

static void test_parsers(void)
{
	static const char list[] =
		"<?xml version=\"1.0\" encoding=\"utf-8\"?><EnumerationResults><Prefix>p/</Prefix>"
		"<Blobs><Blob><Name>p/a</Name><Properties><Content-Length>12</Content-Length>"
		"</Properties><Metadata><phimode>33152</phimode><phiuid>7</phiuid><phigid>8</phigid>"
		"<phiino>99</phiino><phiatime>1.5</phiatime><phimtime>2.000000006</phimtime>"
		"<phictime>3.0</phictime></Metadata></Blob>"
		"<BlobPrefix><Name>p/d/</Name></BlobPrefix>"
		"<Blob><Name>p/x&amp;y</Name><Properties><Content-Length>0</Content-Length>"
		"</Properties><Metadata /></Blob></Blobs><NextMarker>m&lt;1</NextMarker>"
		"</EnumerationResults>";
	struct listed got = { 0 };
	char next[32];
	CHECK_OK(phi_az_parse_list(list, sizeof list - 1, cb, &got, next, sizeof next));
	CHECK_EQ(got.n, 3);
	CHECK(!strcmp(got.names[0], "p/a") && !got.prefix[0] && got.size[0] == 12);
	CHECK_EQ(got.mode[0], 0100600);
	CHECK(got.full[0] && got.uid[0] == 7 && got.ino[0] == 99);
	CHECK(got.mtime[0].tv_sec == 2 && got.mtime[0].tv_nsec == 6);
	CHECK(!got.full[2]); /* no phi metadata: attributes come from a HEAD */
	CHECK(!strcmp(got.names[1], "p/d/") && got.prefix[1]);
	CHECK(!strcmp(got.names[2], "p/x&y") && got.mode[2] == 0);
	CHECK(!strcmp(next, "m<1"));
	got.n = 0;
	CHECK_EQ(phi_az_parse_list(list, sizeof list - 1, cb, &got, next, 3), -ENAMETOOLONG);

	static const char *bad[] = {
		"<html>no</html>",
		"<EnumerationResults><Blobs><Blob><Name>a</Blob></Blobs></EnumerationResults>",
		"<EnumerationResults><Blobs><Blob><Name>a&bogus;</Name></Blob></Blobs></EnumerationResults>",
		("<EnumerationResults><Blobs><Blob><Name>a</Name><Properties><Content-Length>x1"
		 "</Content-Length></Properties></Blob></Blobs></EnumerationResults>"),
		"<EnumerationResults><Blobs><Blob><Name>a</Name>",
	};
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		got.n = 0;
		CHECK_EQ(phi_az_parse_list(bad[i], strlen(bad[i]), cb, &got, next, sizeof next), -EBADMSG);
	}
	/* empty listing */
	static const char empty[] = "<EnumerationResults><Blobs /><NextMarker /></EnumerationResults>";
	got.n = 0;
	CHECK_OK(phi_az_parse_list(empty, sizeof empty - 1, cb, &got, next, sizeof next));
	CHECK_EQ(got.n, 0);
	CHECK_EQ(next[0], 0);

	static const char bl[] =
		"<?xml version=\"1.0\"?><BlockList><CommittedBlocks><Block><Name>QUFB</Name>"
		"<Size>4194304</Size></Block><Block><Name>QkJC</Name><Size>7</Size></Block>"
		"</CommittedBlocks><UncommittedBlocks><Block><Name>Q0ND</Name><Size>1</Size></Block>"
		"</UncommittedBlocks></BlockList>";
	struct phi_az_block *b = NULL;
	size_t nb = 0;
	CHECK_OK(phi_az_parse_blocklist(bl, sizeof bl - 1, &b, &nb));
	CHECK_EQ(nb, 2);
	CHECK(!strcmp(b[0].id, "QUFB") && b[0].size == 4194304);
	CHECK(!strcmp(b[1].id, "QkJC") && b[1].size == 7);
	free(b);
	static const char blbad[] = "<BlockList><CommittedBlocks><Block><Name>QUFB</Name></Block>"
				    "</CommittedBlocks></BlockList>";
	b = NULL;
	CHECK_EQ(phi_az_parse_blocklist(blbad, sizeof blbad - 1, &b, &nb), -EBADMSG);
	CHECK(b == NULL);
}

/* A 10 MiB object spans three 4 MiB blocks; write it in odd pieces, reread through a new
 * open, overwrite 4 KiB in the middle, truncate and extend. */
static void test_large(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	const size_t big = (10u << 20) + 12345;
	uint8_t *want = malloc(big), *buf = malloc(big);
	CHECK(want && buf);
	fill(want, big, 0, 1);
	struct phi_store_obj *obj = NULL;
	CHECK_OK(o->create(s, "big", 0600, (uint32_t)-1, (uint32_t)-1, want, 100, &obj));
	for (size_t off = 100; off < big;) {
		size_t n = big - off < 777777 ? big - off : 777777;
		CHECK_OK(o->pwrite(obj, want + off, n, off));
		off += n;
	}
	/* the store reports the uncommitted size of an object open here */
	struct phi_store_stat st;
	CHECK_OK(o->getattr(s, "big", &st));
	CHECK_EQ(st.size, big);
	size_t n = 0;
	CHECK_OK(o->pread(obj, buf, big, 0, &n)); /* reads back staged blocks */
	CHECK_EQ(n, big);
	CHECK_MEM(buf, want, big);
	CHECK_OK(o->fsync(obj, false));
	CHECK_OK(o->release(obj));

	CHECK_OK(o->open(s, "big", O_RDWR, 0, &obj));
	uint64_t sz;
	CHECK_OK(o->size(obj, &sz));
	CHECK_EQ(sz, big);
	memset(buf, 0, big);
	CHECK_OK(o->pread(obj, buf, big, 0, &n));
	CHECK_EQ(n, big);
	CHECK_MEM(buf, want, big);
	/* 4 KiB overwrite straddling nothing, in the second block */
	fill(want + 5000000, 4096, 5000000, 9);
	CHECK_OK(o->pwrite(obj, want + 5000000, 4096, 5000000));
	CHECK_OK(o->fsync(obj, true));
	CHECK_OK(o->release(obj));

	CHECK_OK(o->open(s, "big", O_RDONLY, 0, &obj));
	CHECK_OK(o->pread(obj, buf, big, 0, &n));
	CHECK_EQ(n, big);
	CHECK_MEM(buf, want, big);
	CHECK_OK(o->release(obj));

	/* truncate into the second block, extend to 9 MiB: the gap reads as zeros */
	CHECK_OK(o->open(s, "big", O_RDWR, 0, &obj));
	CHECK_OK(o->truncate(obj, 6000000));
	CHECK_OK(o->truncate(obj, 9u << 20));
	memset(want + 6000000, 0, (9u << 20) - 6000000);
	CHECK_OK(o->pwrite(obj, "tail", 4, (9u << 20) - 4));
	memcpy(want + (9u << 20) - 4, "tail", 4);
	CHECK_OK(o->release(obj));
	CHECK_OK(o->open(s, "big", O_RDONLY, 0, &obj));
	CHECK_OK(o->pread(obj, buf, big, 0, &n));
	CHECK_EQ(n, 9u << 20);
	CHECK_MEM(buf, want, 9u << 20);
	CHECK_OK(o->release(obj));
	CHECK_OK(o->getattr(s, "big", &st));
	CHECK_EQ(st.size, 9u << 20);
	CHECK_OK(o->unlink(s, "big"));
	free(want);
	free(buf);
}

/* Two mounts of the same store: a concurrent content change is a conflict (EIO on
 * fsync, the winner's bytes kept); a concurrent chmod is not. */
static void test_conflict(struct phi_store *a, struct phi_store *b)
{
	struct phi_store_obj *oa = NULL, *ob = NULL;
	char buf[16];
	size_t n;
	CHECK_OK(a->ops->create(a, "shared", 0600, (uint32_t)-1, (uint32_t)-1, "0000", 4, &oa));
	CHECK_OK(a->ops->release(oa));
	CHECK_OK(a->ops->open(a, "shared", O_RDWR, 0, &oa));
	CHECK_OK(b->ops->open(b, "shared", O_RDWR, 0, &ob));
	CHECK_OK(a->ops->pwrite(oa, "AAAA", 4, 0));
	CHECK_OK(b->ops->pwrite(ob, "BBBB", 4, 0));
	CHECK_OK(a->ops->fsync(oa, false));
	CHECK_EQ(b->ops->fsync(ob, false), -EIO);
	CHECK_EQ(b->ops->release(ob), -EIO);
	CHECK_OK(a->ops->release(oa));
	CHECK_OK(b->ops->get(b, "shared", buf, sizeof buf, &n));
	CHECK_EQ(n, 4);
	CHECK_MEM(buf, "AAAA", 4);

	/* chmod from the other mount while a write is pending: both survive */
	CHECK_OK(a->ops->open(a, "shared", O_RDWR, 0, &oa));
	CHECK_OK(a->ops->pwrite(oa, "CC", 2, 4));
	CHECK_OK(b->ops->chmod(b, "shared", 0640));
	CHECK_OK(a->ops->release(oa));
	struct phi_store_stat st;
	CHECK_OK(b->ops->getattr(b, "shared", &st));
	CHECK_EQ(st.mode & 07777, 0640);
	CHECK_EQ(st.size, 6);
	CHECK_OK(a->ops->unlink(a, "shared"));
}

/* Open objects follow renames and survive unlink; directories rename with their subtree. */
static void test_open_objects(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	struct phi_store_obj *obj = NULL;
	char buf[64];
	size_t n;
	CHECK_OK(o->mkdir(s, "r", 0700));
	CHECK_OK(o->create(s, "r/a", 0600, (uint32_t)-1, (uint32_t)-1, "hdr", 3, &obj));
	CHECK_OK(o->pwrite(obj, "12", 2, 3));
	CHECK_OK(o->rename(s, "r/a", "r/b", 0));
	CHECK_OK(o->pwrite(obj, "34", 2, 5));
	CHECK_OK(o->release(obj));
	CHECK_EQ(o->getattr(s, "r/a", &(struct phi_store_stat){ 0 }), -ENOENT);
	CHECK_OK(o->get(s, "r/b", buf, sizeof buf, &n));
	CHECK_EQ(n, 7);
	CHECK_MEM(buf, "hdr1234", 7);

	/* unlinked while open: still readable and writable, gone from the store */
	CHECK_OK(o->open(s, "r/b", O_RDWR, 0, &obj));
	CHECK_OK(o->unlink(s, "r/b"));
	CHECK_OK(o->pread(obj, buf, sizeof buf, 0, &n));
	CHECK_EQ(n, 7);
	CHECK_MEM(buf, "hdr1234", 7);
	CHECK_OK(o->pwrite(obj, "x", 1, 0));
	CHECK_OK(o->fsync(obj, false));
	CHECK_OK(o->release(obj));
	CHECK_EQ(o->getattr(s, "r/b", &(struct phi_store_stat){ 0 }), -ENOENT);

	/* a directory with a subtree, one file of it open */
	CHECK_OK(o->mkdir(s, "r/d", 0700));
	CHECK_OK(o->mkdir(s, "r/d/e", 0700));
	CHECK_OK(o->put(s, "r/d/e/k", "K", 1));
	CHECK_OK(o->symlink(s, "tgt", "r/d/l"));
	CHECK_OK(o->create(s, "r/d/f", 0600, (uint32_t)-1, (uint32_t)-1, "F", 1, &obj));
	struct phi_store_stat before;
	CHECK_OK(o->getattr(s, "r/d/e/k", &before));
	CHECK_OK(o->rename(s, "r/d", "r/D", RENAME_NOREPLACE));
	CHECK_OK(o->pwrite(obj, "G", 1, 1));
	CHECK_OK(o->release(obj));
	CHECK_EQ(o->getattr(s, "r/d", &(struct phi_store_stat){ 0 }), -ENOENT);
	CHECK_OK(o->get(s, "r/D/e/k", buf, sizeof buf, &n));
	CHECK_MEM(buf, "K", 1);
	struct phi_store_stat after;
	CHECK_OK(o->getattr(s, "r/D/e/k", &after));
	CHECK_EQ(after.ino, before.ino); /* identity moves with the entry */
	CHECK_OK(o->readlink(s, "r/D/l", buf, sizeof buf, &n));
	CHECK(!strcmp(buf, "tgt"));
	CHECK_OK(o->get(s, "r/D/f", buf, sizeof buf, &n));
	CHECK_EQ(n, 2);
	CHECK_MEM(buf, "FG", 2);
	CHECK_EQ(o->rename(s, "r/D", "r/D/e/x", 0), -EINVAL);

	/* attributes remembered from a listing never hide this mount's own changes */
	struct names ns = { 0 };
	CHECK_OK(o->readdir(s, "r/D", contract_collect, &ns));
	CHECK_EQ(ns.count, 3); /* e, l, f */
	CHECK_OK(o->chmod(s, "r/D/f", 0604));
	struct phi_store_stat fst;
	CHECK_OK(o->getattr(s, "r/D/f", &fst));
	CHECK_EQ(fst.mode & 07777, 0604);
	ns = (struct names){ 0 };
	CHECK_OK(o->readdir(s, "r/D", contract_collect, &ns));
	CHECK_OK(o->put(s, "r/D/f", "longer", 6));
	CHECK_OK(o->getattr(s, "r/D/f", &fst));
	CHECK_EQ(fst.size, 6);
	CHECK_OK(o->mkdir(s, "r/full", 0700));
	CHECK_OK(o->put(s, "r/full/z", "z", 1));
	CHECK_EQ(o->rename(s, "r/D", "r/full", 0), -ENOTEMPTY);
	CHECK_EQ(o->rename(s, "r/D", "r/full/z", 0), -ENOTDIR);
	CHECK_EQ(o->rename(s, "r/full/z", "r/D", 0), -EISDIR);
}

/* Errors that must come back quickly and cleanly. */
static void test_failures(void)
{
	struct phi_store *s = NULL;
	char opts[1024];
	/* nothing listens there: EHOSTUNREACH within the 2 s deadline, no hang */
	snprintf(opts, sizeof opts, "endpoint=http://127.0.0.1:9,key_file=%s,timeout=2", az_keyfile);
	CHECK_EQ(phi_store_open("az://devstoreaccount1/phitest", opts, &s), -EHOSTUNREACH);
	CHECK(s == NULL);
	/* a wrong key: the service refuses the signature */
	char kf[] = "/tmp/phi-azkey-XXXXXX";
	int fd = mkstemp(kf);
	CHECK(fd >= 0);
	CHECK_EQ(write(fd, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n", 45), 45);
	close(fd);
	snprintf(opts, sizeof opts, "endpoint=%s,key_file=%s", az_endpoint, kf);
	CHECK_EQ(phi_store_open("az://devstoreaccount1/phitest", opts, &s), -EACCES);
	unlink(kf);
	/* a missing container without create=1 */
	snprintf(opts, sizeof opts, "endpoint=%s,key_file=%s", az_endpoint, az_keyfile);
	CHECK_EQ(phi_store_open("az://devstoreaccount1/nosuchcontainer", opts, &s), -ENXIO);
	/* malformed URLs and options */
	CHECK_EQ(phi_store_open("az://devstoreaccount1", opts, &s), -EINVAL);
	CHECK_EQ(phi_store_open("az://devstoreaccount1/UPPER", opts, &s), -EINVAL);
	CHECK_EQ(phi_store_open("az://devstoreaccount1/phitest/a/../b", opts, &s), -EINVAL);
	CHECK_EQ(phi_store_open("az://devstoreaccount1/phitest", "bogus=1", &s), -EINVAL);
	snprintf(opts, sizeof opts, "endpoint=%s,key_file=/nonexistent", az_endpoint);
	CHECK_EQ(phi_store_open("az://devstoreaccount1/phitest", opts, &s), -ENOKEY);
	/* the credential directory */
	char cd[] = "/tmp/phi-azcred-XXXXXX";
	CHECK(mkdtemp(cd));
	char p[256];
	snprintf(p, sizeof p, "%s/phifs-azure-key", cd);
	CHECK_OK(symlink(az_keyfile, p));
	setenv("CREDENTIALS_DIRECTORY", cd, 1);
	snprintf(opts, sizeof opts, "endpoint=%s", az_endpoint);
	CHECK_OK(phi_store_open("az://devstoreaccount1/phitest", opts, &s));
	phi_store_closep(&s);
	unsetenv("CREDENTIALS_DIRECTORY");
	unlink(p);
	rmdir(cd);

	/* a store that goes away after opening: operations fail within the deadline */
	snprintf(opts, sizeof opts, "%s,timeout=2", az_opts);
	CHECK_OK(phi_store_open(az_url, opts, &s));
	CHECK_OK(s->ops->put(s, "gone", "x", 1));
	phi_store_closep(&s);
}

int main(void)
{
	test_parsers();
	az_url = getenv("AZ_URL");
	az_opts = getenv("AZ_OPTS");
	az_endpoint = getenv("AZ_ENDPOINT");
	az_keyfile = getenv("AZ_KEYFILE");
	if (!az_url || !az_opts || !az_endpoint || !az_keyfile) {
		fprintf(stderr, "SKIP: run through tests/azure/azurite.sh\n");
		return 77;
	}

	struct phi_store *s = open_sub("/contract");
	store_contract_run(s, &(struct store_caps){ .hardlinks = false });
	phi_store_closep(&s);

	s = open_sub("/large");
	test_large(s);
	phi_store_closep(&s);

	struct phi_store *a = open_sub("/conflict"), *b = open_sub("/conflict");
	test_conflict(a, b);
	phi_store_closep(&a);
	phi_store_closep(&b);

	s = open_sub("/open");
	test_open_objects(s);
	phi_store_closep(&s);

	test_failures();
	return 0;
}
