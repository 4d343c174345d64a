/* Unit test of the Azure Blob backend (phifs/store_azure.c) against a real Azurite started
 * by azurite.sh (AZ_URL, AZ_OPTS, AZ_ENDPOINT, AZ_KEYFILE): the store contract shared with
 * the local backend, then what is Azure's own: write-back across blocks, small overwrites,
 * conflicts between two mounts, open objects renamed or unlinked, directory renames,
 * unreachable and misconfigured stores, SAS token credentials, and golden vectors for the two
 * XML parsers. */
#include <curl/curl.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sodium.h>
#include <sys/stat.h>
#include <time.h>

#include "phifs/store.h"
#include "phifs/store_azure.h"
#include "phifs/util.h"
#include "store-contract.h"
#include "test.h"

static const char *az_url, *az_opts, *az_endpoint, *az_keyfile;
static char az_prefix[256]; /* blob name prefix of AZ_URL below the container */

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

static void check_content(struct phi_store *s, const char *path, const uint8_t *want, size_t size);

/* Random writes that push a partial last block out of the cache (staged) and then extend
 * the object past it: the staged block must not keep its short length in the commit. */
static void test_staged_edge(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	const size_t B = 4u << 20, end = 3 * B + 5, big = 6 * B;
	uint8_t *want = calloc(1, big), *buf = malloc(big);
	CHECK(want && buf);
	struct phi_store_obj *obj = NULL;
	CHECK_OK(o->create(s, "edge", 0600, (uint32_t)-1, (uint32_t)-1, "e", 1, &obj));
	want[0] = 'e';
	/* the partial last block first, then three blocks below it: the cache is full of
	 * dirty blocks, so the next one stages all but the newest, the short one included */
	fill(want + 3 * B, 5, 3 * B, 2);
	CHECK_OK(o->pwrite(obj, want + 3 * B, 5, 3 * B));
	for (size_t i = 0; i < 3; i++) {
		fill(want + i * B + 100, 1000, i * B + 100, 3);
		CHECK_OK(o->pwrite(obj, want + i * B + 100, 1000, i * B + 100));
	}
	CHECK_EQ(end, 3 * B + 5);
	fill(want + 5 * B, 4096, 5 * B, 4); /* extends past the staged short block */
	CHECK_OK(o->pwrite(obj, want + 5 * B, 4096, 5 * B));
	CHECK_OK(o->fsync(obj, false));
	CHECK_OK(o->release(obj));
	size_t total = 5 * B + 4096, n = 0;
	struct phi_store_stat st;
	CHECK_OK(o->getattr(s, "edge", &st));
	CHECK_EQ(st.size, total);
	CHECK_OK(o->open(s, "edge", O_RDONLY, 0, &obj));
	CHECK_OK(o->pread(obj, buf, big, 0, &n));
	CHECK_EQ(n, total);
	CHECK_MEM(buf, want, total);
	CHECK_OK(o->release(obj));

	/* the same with the short block still cached when it grows (it is not the least
	 * recently used one): it is staged again at its new length */
	memset(want, 0, big);
	CHECK_OK(o->open(s, "edge", O_RDWR | O_TRUNC, 0, &obj));
	fill(want + 100, 1000, 100, 5);
	CHECK_OK(o->pwrite(obj, want + 100, 1000, 100));
	fill(want + 3 * B, 5, 3 * B, 6);
	CHECK_OK(o->pwrite(obj, want + 3 * B, 5, 3 * B));
	for (size_t i = 1; i < 3; i++) {
		fill(want + i * B + 100, 1000, i * B + 100, 7);
		CHECK_OK(o->pwrite(obj, want + i * B + 100, 1000, i * B + 100));
	}
	fill(want + 5 * B, 4096, 5 * B, 8);
	CHECK_OK(o->pwrite(obj, want + 5 * B, 4096, 5 * B));
	CHECK_OK(o->release(obj));
	check_content(s, "edge", want, total);

	/* cut to a piece boundary without a write, and committed as one small blob from the
	 * committed bytes */
	CHECK_OK(o->open(s, "edge", O_RDWR, 0, &obj));
	CHECK_OK(o->truncate(obj, 1u << 20));
	CHECK_OK(o->fsync(obj, false));
	CHECK_OK(o->release(obj));
	check_content(s, "edge", want, 1u << 20);
	CHECK_OK(o->unlink(s, "edge"));
	free(want);
	free(buf);
}

/* ---- requests of our own (Shared Key), to build the 4 MiB-block layout of earlier
 * versions and to read committed block lists ---- */

static size_t raw_sink(char *p, size_t sz, size_t nm, void *ud)
{
	CHECK_OK(phi_buf_append(ud, p, sz * nm));
	return sz * nm;
}

/* query: "name=value" pairs, at most two, names in sorted order, values URL-safe except
 * '='; meta: NULL or one "x-ms-meta-NAME:VALUE" header */
static long raw_req(const char *method, const char *blob, const char *q1, const char *q2,
		    const char *meta, const void *body, size_t len, struct phi_buf *out)
{
	uint8_t key[128];
	size_t klen = 0;
	char kb64[256] = "";
	FILE *f = fopen(az_keyfile, "r");
	CHECK(f && fgets(kb64, sizeof kb64, f));
	fclose(f);
	kb64[strcspn(kb64, "\n")] = 0;
	CHECK_OK(sodium_base642bin(key, sizeof key, kb64, strlen(kb64), NULL, &klen, NULL,
				   sodium_base64_VARIANT_ORIGINAL));
	char date[64];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(date, sizeof date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
	char clen[24] = "";
	if (len)
		snprintf(clen, sizeof clen, "%zu", len);
	char canon_q[512] = "", url_q[512] = "";
	const char *qs[] = { q1, q2 };
	for (size_t i = 0; i < 2 && qs[i]; i++) {
		char name[64], val[256], enc[512] = "";
		const char *eq = strchr(qs[i], '=');
		snprintf(name, sizeof name, "%.*s", (int)(eq - qs[i]), qs[i]);
		snprintf(val, sizeof val, "%s", eq + 1);
		for (const char *c = val; *c; c++)
			snprintf(enc + strlen(enc), sizeof enc - strlen(enc), *c == '=' ? "%%3D" : "%c", *c);
		snprintf(canon_q + strlen(canon_q), sizeof canon_q - strlen(canon_q), "\n%s:%s", name, val);
		snprintf(url_q + strlen(url_q), sizeof url_q - strlen(url_q), "%c%s=%s", i ? '&' : '?', name, enc);
	}
	char sts[2048];
	snprintf(sts, sizeof sts,
		 "%s\n\n\n%s\n\n\n\n\n\n\n\n\nx-ms-date:%s\n%s%sx-ms-version:2021-12-02\n"
		 "/devstoreaccount1/devstoreaccount1/phitest/%s%s",
		 method, clen, date, meta ? meta : "", meta ? "\n" : "", blob, canon_q);
	uint8_t mac[32];
	unsigned maclen = 0;
	CHECK(HMAC(EVP_sha256(), key, (int)klen, (const uint8_t *)sts, strlen(sts), mac, &maclen));
	char sig[64], h_auth[160], h_date[96], url[1024];
	sodium_bin2base64(sig, sizeof sig, mac, maclen, sodium_base64_VARIANT_ORIGINAL);
	snprintf(h_auth, sizeof h_auth, "Authorization: SharedKey devstoreaccount1:%s", sig);
	snprintf(h_date, sizeof h_date, "x-ms-date: %s", date);
	snprintf(url, sizeof url, "%s/devstoreaccount1/phitest/%s%s", az_endpoint, blob, url_q);
	struct curl_slist *hl = NULL;
	const char *hs[] = { h_auth, h_date, "x-ms-version: 2021-12-02", "Content-Type:", "Expect:", meta };
	for (size_t i = 0; i < ARRAY_SIZE(hs) && hs[i]; i++)
		hl = curl_slist_append(hl, hs[i]);
	CURL *h = curl_easy_init();
	CHECK(h && hl);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (!strcmp(method, "PUT")) {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)len);
	}
	struct phi_buf sink;
	phi_buf_init(&sink, 64u << 20);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, raw_sink);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, out ? out : &sink);
	CHECK_EQ(curl_easy_perform(h), CURLE_OK);
	long st = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
	curl_easy_cleanup(h);
	curl_slist_free_all(hl);
	phi_buf_done(&sink);
	sodium_memzero(key, sizeof key);
	return st;
}

/* the committed block list of store path "large/<path>" */
static size_t committed_blocks(const char *path, struct phi_az_block **ret)
{
	char blob[512];
	snprintf(blob, sizeof blob, "%s/large/%s", az_prefix, path);
	struct phi_buf body;
	phi_buf_init(&body, 16u << 20);
	CHECK_EQ(raw_req("GET", blob, "blocklisttype=committed", "comp=blocklist", NULL, NULL, 0, &body), 200);
	size_t n = 0;
	CHECK_OK(phi_az_parse_blocklist((const char *)body.p, body.len, ret, &n));
	phi_buf_done(&body);
	return n;
}

static struct phi_az_stats stats_since(struct phi_store *s, const struct phi_az_stats *before)
{
	struct phi_az_stats now;
	CHECK_OK(phi_az_stats(s, &now));
	return (struct phi_az_stats){ .requests = now.requests - before->requests,
				      .bytes_up = now.bytes_up - before->bytes_up,
				      .bytes_down = now.bytes_down - before->bytes_down };
}

/* open, read the 32-byte header, overwrite len bytes at off (one cfile block: 4 KiB + 28),
 * fsync, release: what it cost */
static struct phi_az_stats overwrite(struct phi_store *s, const char *path, uint8_t *want,
				     uint64_t off, size_t len, uint8_t salt)
{
	const struct phi_store_ops *o = s->ops;
	struct phi_store_obj *obj = NULL;
	uint8_t hdr[32];
	size_t n = 0;
	struct phi_az_stats before;
	CHECK_OK(phi_az_stats(s, &before));
	CHECK_OK(o->open(s, path, O_RDWR, 0, &obj));
	CHECK_OK(o->pread(obj, hdr, sizeof hdr, 0, &n));
	CHECK_EQ(n, sizeof hdr);
	CHECK_MEM(hdr, want, sizeof hdr);
	fill(want + off, len, off, salt);
	CHECK_OK(o->pwrite(obj, want + off, len, off));
	CHECK_OK(o->fsync(obj, true));
	CHECK_OK(o->release(obj));
	return stats_since(s, &before);
}

static void check_content(struct phi_store *s, const char *path, const uint8_t *want, size_t size)
{
	const struct phi_store_ops *o = s->ops;
	uint8_t *buf = malloc(size + 1);
	CHECK(buf);
	struct phi_store_obj *obj = NULL;
	size_t n = 0;
	CHECK_OK(o->open(s, path, O_RDONLY, 0, &obj));
	CHECK_OK(o->pread(obj, buf, size + 1, 0, &n));
	CHECK_EQ(n, size);
	CHECK_MEM(buf, want, size);
	CHECK_OK(o->release(obj));
	free(buf);
}

/* A small file's create, as phifs drives it (the kernel's getattr of the directory, the
 * negative lookup, the create, the entry's getattr): one HEAD of the directory, one of the
 * name, one Put Blob. The directory's HEAD answers the parent checks of the lookup and the
 * create, and the create answers the entry's getattr (head_cached); nothing this mount
 * changes is seen late, another mount's change within ACACHE_MS (1 s). */
static void test_create_cost(struct phi_store *s, struct phi_store *other)
{
	const struct phi_store_ops *o = s->ops;
	struct phi_store_stat st;
	struct phi_az_stats before, c;
	uint8_t init[32];
	fill(init, sizeof init, 0, 9);
	CHECK_OK(o->mkdir(s, "cc", 0700));
	CHECK_OK(phi_az_stats(s, &before));
	CHECK_OK(o->getattr(s, "cc", &st));
	CHECK(S_ISDIR(st.mode));
	CHECK_EQ(o->getattr(s, "cc/f", &st), -ENOENT);
	struct phi_store_obj *obj = NULL;
	CHECK_OK(o->create(s, "cc/f", 0640, (uint32_t)-1, (uint32_t)-1, init, sizeof init, &obj));
	CHECK_OK(o->getattr(s, "cc/f", &st));
	c = stats_since(s, &before);
	fprintf(stderr, "# small create: %" PRIu64 " requests\n", c.requests);
	CHECK_EQ(c.requests, 3);
	CHECK(S_ISREG(st.mode) && (st.mode & 07777) == 0640 && st.size == sizeof init);
	/* what the store says is what the cache said */
	struct phi_store_stat fresh;
	CHECK_OK(other->ops->getattr(other, "cc/f", &fresh));
	CHECK(fresh.mode == st.mode && fresh.size == st.size && fresh.ino == st.ino &&
	      fresh.mtime.tv_sec == st.mtime.tv_sec && fresh.mtime.tv_nsec == st.mtime.tv_nsec);
	/* a change by this mount is seen at once: content, then mode */
	uint8_t more[100];
	fill(more, sizeof more, 32, 10);
	CHECK_OK(o->pwrite(obj, more, sizeof more, sizeof init));
	CHECK_OK(o->fsync(obj, true));
	CHECK_OK(o->release(obj));
	CHECK_OK(o->getattr(s, "cc/f", &st));
	CHECK_EQ(st.size, sizeof init + sizeof more);
	CHECK_OK(o->chmod(s, "cc/f", 0600));
	CHECK_OK(o->getattr(s, "cc/f", &st));
	CHECK_EQ(st.mode & 07777, 0600);
	/* another mount's removal: seen within ACACHE_MS */
	CHECK_OK(o->getattr(s, "cc", &st));
	CHECK_OK(other->ops->unlink(other, "cc/f"));
	CHECK_OK(other->ops->rmdir(other, "cc"));
	struct timespec pause = { 1, 200 * 1000 * 1000 };
	nanosleep(&pause, NULL);
	CHECK_EQ(o->getattr(s, "cc", &st), -ENOENT);
	CHECK_EQ(o->create(s, "cc/g", 0600, (uint32_t)-1, (uint32_t)-1, init, sizeof init, &obj), -ENOENT);
}

/* A 4 KiB overwrite inside a large object downloads and uploads one 1 MiB piece (two where
 * it straddles a piece boundary), not a 4 MiB block; the block list keeps one block per
 * piece; objects committed in 4 MiB blocks by earlier versions move to pieces as they are
 * overwritten. */
static void test_overwrite_cost(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	const size_t P = 1u << 20, size = (24u << 20) + 777, cb = 4096 + 28;
	uint8_t *want = malloc(size);
	CHECK(want);
	fill(want, size, 0, 5);
	struct phi_store_obj *obj = NULL;
	CHECK_OK(o->create(s, "ow", 0600, (uint32_t)-1, (uint32_t)-1, want, 32, &obj));
	for (size_t off = 32; off < size; off += P)
		CHECK_OK(o->pwrite(obj, want + off, off + P < size ? P : size - off, off));
	CHECK_OK(o->release(obj));
	struct phi_az_block *bl = NULL;
	size_t nb = committed_blocks("ow", &bl);
	CHECK_EQ(nb, 25);
	for (size_t i = 0; i < nb; i++)
		CHECK_EQ(bl[i].size, i < 24 ? P : 777);
	free(bl);

	/* inside one piece: the open (one ranged GET: properties, the phipieces metadata and
	 * the header), the piece, one Put Block of it, Put Block List */
	struct phi_az_stats c = overwrite(s, "ow", want, (20u << 20) + 12345, cb, 6);
	fprintf(stderr, "# 4 KiB overwrite: %" PRIu64 " requests, %" PRIu64 " B up, %" PRIu64 " B down\n",
		c.requests, c.bytes_up, c.bytes_down);
	CHECK_EQ(c.requests, 4);
	CHECK(c.bytes_up >= P && c.bytes_up <= P + 8192);
	CHECK(c.bytes_down >= P && c.bytes_down <= P + 16384);
	/* as phifs does it: the two cipher blocks a write covers in part are read first, then
	 * written; the reads fetch the piece the commit uploads, so no more requests. Only
	 * while the caller says it can write (phifs opens every object O_RDWR): without that,
	 * a small read stays a ranged GET of just its bytes */
	{
		struct phi_az_stats b0;
		struct phi_store_obj *rw = NULL;
		uint8_t hdr[32], cbuf[2 * 4124];
		size_t got = 0;
		const uint64_t at = (14u << 20) + 32 + 100 * 4124;
		CHECK_OK(o->open(s, "ow", O_RDWR, 0, &rw));
		CHECK_OK(phi_az_stats(s, &b0));
		CHECK_OK(o->pread(rw, cbuf, 4124, at - 50 * 4124, &got));
		CHECK_MEM(cbuf, want + at - 50 * 4124, 4124);
		c = stats_since(s, &b0);
		CHECK_EQ(c.requests, 1);
		CHECK(c.bytes_down <= 8192);
		CHECK_OK(o->release(rw));
		rw = NULL;
		CHECK_OK(phi_az_stats(s, &b0));
		CHECK_OK(o->open(s, "ow", O_RDWR, 0, &rw));
		o->write_intent(rw, true);
		CHECK_OK(o->pread(rw, hdr, sizeof hdr, 0, &got));
		CHECK_OK(o->pread(rw, cbuf, 4124, at, &got));
		CHECK_EQ(got, 4124);
		CHECK_MEM(cbuf, want + at, 4124);
		CHECK_OK(o->pread(rw, cbuf + 4124, 4124, at + 4124, &got));
		CHECK_MEM(cbuf + 4124, want + at + 4124, 4124);
		fill(want + at + 1000, 4124, at + 1000, 13);
		CHECK_OK(o->pwrite(rw, want + at + 1000, 4124, at + 1000));
		CHECK_OK(o->fsync(rw, true));
		CHECK_OK(o->release(rw));
		c = stats_since(s, &b0);
		fprintf(stderr, "# read-modify-write of two cipher blocks: %" PRIu64 " requests\n", c.requests);
		CHECK_EQ(c.requests, 4); /* open, the piece, Put Block, Put Block List */
		CHECK(c.bytes_down >= P && c.bytes_down <= P + 16384);
		check_content(s, "ow", want, size);
	}
	/* across a piece boundary: both pieces, in one GET */
	c = overwrite(s, "ow", want, (3u << 20) - 2000, cb, 7);
	CHECK_EQ(c.requests, 5);
	CHECK(c.bytes_up >= 2 * P && c.bytes_up <= 2 * P + 8192);
	CHECK(c.bytes_down >= 2 * P && c.bytes_down <= 2 * P + 16384);
	check_content(s, "ow", want, size);
	nb = committed_blocks("ow", &bl);
	CHECK_EQ(nb, 25);
	free(bl);
	/* phipieces that no longer match the blocks (metadata set by someone else): the
	 * commit is refused, the block list fetched, and the commit goes through */
	char oblob[512];
	snprintf(oblob, sizeof oblob, "%s/large/ow", az_prefix);
	CHECK_EQ(raw_req("PUT", oblob, "comp=metadata", NULL, "x-ms-meta-phipieces:0badf00d-25",
			 NULL, 0, NULL), 200);
	c = overwrite(s, "ow", want, (7u << 20) + 1, cb, 11);
	CHECK_EQ(c.requests, 6); /* open, piece, Put Block, refused list, Get Block List, list */
	check_content(s, "ow", want, size);
	/* renamed (Copy Blob): the next overwrite is as cheap */
	CHECK_OK(o->rename(s, "ow", "ow2", 0));
	c = overwrite(s, "ow2", want, (9u << 20) + 1, cb, 12);
	CHECK(c.requests <= 5);
	check_content(s, "ow2", want, size);
	CHECK_OK(o->unlink(s, "ow2"));

	/* the layout of earlier versions: 4 MiB blocks (and a short last one) */
	const size_t B = 4u << 20, lsize = 2 * B + 1000;
	char blob[512], xml[1024] = "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>";
	snprintf(blob, sizeof blob, "%s/large/legacy", az_prefix);
	fill(want, lsize, 0, 8);
	for (size_t i = 0; i < 3; i++) {
		char raw[32], id[64], q[96];
		snprintf(raw, sizeof raw, "phi1-%08x-%012zu", 0x1234abcdu, i);
		sodium_bin2base64(id, sizeof id, (const uint8_t *)raw, strlen(raw),
				  sodium_base64_VARIANT_ORIGINAL);
		snprintf(q, sizeof q, "blockid=%s", id);
		CHECK_EQ(raw_req("PUT", blob, q, "comp=block", NULL, want + i * B, i < 2 ? B : 1000, NULL), 201);
		snprintf(xml + strlen(xml), sizeof xml - strlen(xml), "<Latest>%s</Latest>", id);
	}
	strcat(xml, "</BlockList>");
	CHECK_EQ(raw_req("PUT", blob, "comp=blocklist", NULL, NULL, xml, strlen(xml), NULL), 201);
	/* the overwritten 4 MiB block becomes four pieces: its other three are fetched and
	 * uploaded too, once; the blocks around it stay */
	c = overwrite(s, "legacy", want, B + 100, cb, 9);
	CHECK(c.bytes_up >= B && c.bytes_up <= B + 8192);
	nb = committed_blocks("legacy", &bl);
	CHECK_EQ(nb, 6);
	CHECK(bl[0].size == B && bl[1].size == P && bl[4].size == P && bl[5].size == 1000);
	free(bl);
	c = overwrite(s, "legacy", want, B + 100, cb, 10);
	CHECK(c.bytes_up >= P && c.bytes_up <= P + 8192);
	check_content(s, "legacy", want, lsize);
	CHECK_OK(o->unlink(s, "legacy"));
	free(want);
}

static size_t rnd_below(uint64_t *rng, size_t m)
{
	*rng = *rng * 6364136223846793005ull + 1442695040888963407ull;
	return (size_t)((*rng >> 33) % m);
}

/* Random writes, truncates, reads, fsyncs and reopens of an object larger than the cache
 * (evictions stage pieces, reads and writes load pieces, partial last pieces grow and
 * shrink) against a model of its bytes. Seed 42, or $PHI_TEST_SEED. */
static void test_random_model(struct phi_store *s)
{
	const struct phi_store_ops *o = s->ops;
	const size_t MAXSZ = 26u << 20;
	uint8_t *model = calloc(1, MAXSZ), *buf = malloc(MAXSZ);
	CHECK(model && buf);
	size_t size = 0, n = 0;
	const char *seed = getenv("PHI_TEST_SEED"); /* another seed, for a longer hunt */
	uint64_t rng = seed ? strtoull(seed, NULL, 10) : 42;
#define RND(m) rnd_below(&rng, (m))
	struct phi_store_obj *obj = NULL;
	CHECK_OK(o->create(s, "model", 0600, (uint32_t)-1, (uint32_t)-1, NULL, 0, &obj));
	for (int step = 0; step < 800; step++) {
		size_t op = RND(100);
		if (op < 55) { /* write: mostly small and scattered (evictions), some large */
			size_t len = op < 50 ? 1 + RND(20000) : 1 + RND(5u << 20);
			size_t off = op < 30 ? RND(size + 100000) : op < 50 ? RND(MAXSZ - 20000) : RND(MAXSZ - (5u << 20));
			if (off + len > MAXSZ)
				len = MAXSZ - off;
			fill(model + off, len, off, (uint8_t)step);
			CHECK_OK(o->pwrite(obj, model + off, len, off));
			if (off + len > size)
				size = off + len;
		} else if (op < 65) { /* truncate down or up; sometimes to a piece boundary */
			size_t ns = op < 63 ? (RND(2) ? RND(size + 1) : RND(MAXSZ)) : RND(3) << 20;
			if (ns < size)
				memset(model + ns, 0, size - ns);
			CHECK_OK(o->truncate(obj, ns));
			size = ns;
		} else if (op < 93) { /* read a range */
			size_t off = RND(size + 1), len = 1 + RND(RND(4) ? 70000 : 9u << 20);
			CHECK_OK(o->pread(obj, buf, len, off, &n));
			size_t want = off < size ? (size - off < len ? size - off : len) : 0;
			CHECK_EQ(n, want);
			CHECK_MEM(buf, model + off, n);
		} else if (op < 97) {
			CHECK_OK(o->fsync(obj, false));
		} else { /* reopen: a new state from the committed blob */
			CHECK_OK(o->release(obj));
			CHECK_OK(o->open(s, "model", O_RDWR, 0, &obj));
		}
		uint64_t sz = 0;
		CHECK_OK(o->size(obj, &sz));
		CHECK_EQ(sz, size);
	}
#undef RND
	CHECK_OK(o->release(obj));
	check_content(s, "model", model, size);
	struct phi_az_block *bl = NULL;
	size_t nb = committed_blocks("model", &bl);
	CHECK(nb <= (size + (1u << 20) - 1) / (1u << 20)); /* no more blocks than pieces */
	free(bl);
	CHECK_OK(o->unlink(s, "model"));
	free(model);
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
	/* nothing listens there: EIO (the log says why) within the 2 s deadline, no hang */
	snprintf(opts, sizeof opts, "endpoint=http://127.0.0.1:9,key_file=%s,timeout=2", az_keyfile);
	CHECK_EQ(phi_store_open("az://devstoreaccount1/phitest", opts, &s), -EIO);
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

/* An account SAS for devstoreaccount1 signed with the key in AZ_KEYFILE (or with a wrong
 * key), as "Create an account SAS" defines it for sv >= 2020-12-06: HMAC-SHA256 over
 * account\nsp\nss\nsrt\nst\nse\nsip\nspr\nsv\nses\n, base64, percent-encoded. */
static void make_sas(char *out, size_t size, const char *perm, const char *start,
		     const char *expiry, bool wrong_key)
{
	uint8_t key[128];
	size_t klen = 0;
	char kb64[256] = "";
	FILE *f = fopen(az_keyfile, "r");
	CHECK(f && fgets(kb64, sizeof kb64, f));
	fclose(f);
	kb64[strcspn(kb64, "\n")] = 0;
	CHECK_OK(sodium_base642bin(key, sizeof key, kb64, strlen(kb64), NULL, &klen, NULL,
				   sodium_base64_VARIANT_ORIGINAL));
	if (wrong_key)
		key[0] ^= 1;
	char sts[512];
	snprintf(sts, sizeof sts, "devstoreaccount1\n%s\nb\nsco\n%s\n%s\n\n\n2021-12-02\n\n", perm,
		 start ? start : "", expiry);
	uint8_t mac[32];
	unsigned maclen = 0;
	CHECK(HMAC(EVP_sha256(), key, (int)klen, (const uint8_t *)sts, strlen(sts), mac, &maclen));
	char sig[64], enc[128] = "";
	sodium_bin2base64(sig, sizeof sig, mac, maclen, sodium_base64_VARIANT_ORIGINAL);
	for (const char *c = sig; *c; c++)
		snprintf(enc + strlen(enc), sizeof enc - strlen(enc),
			 strchr("+/=", *c) ? "%%%02X" : "%c", (unsigned char)*c);
	snprintf(out, size, "sv=2021-12-02&ss=b&srt=sco&sp=%s%s%s&se=%s&sig=%s", perm,
		 start ? "&st=" : "", start ? start : "", expiry, enc);
	sodium_memzero(key, sizeof key);
}

static void write_file(const char *path, const char *content)
{
	FILE *f = fopen(path, "w");
	CHECK(f);
	CHECK(fputs(content, f) >= 0);
	CHECK_OK(fclose(f));
}

/* Stores opened with a SAS token instead of the account key. */
static void test_sas(void)
{
	char dir[] = "/tmp/phi-azsas-XXXXXX";
	CHECK(mkdtemp(dir));
	char sas[1024], file[256], opts[1024], url[512], body[4096];
	struct phi_store *s = NULL;
	snprintf(file, sizeof file, "%s/sas", dir);

	/* a full SAS, written with a leading '?' and a newline: the store contract through it
	 * (create, write, read, list, rename: Copy Blob reads its source with the SAS, delete) */
	make_sas(sas, sizeof sas, "rwdlac", NULL, "2099-01-01T00:00:00Z", false);
	snprintf(body, sizeof body, "?%s\n", sas);
	write_file(file, body);
	snprintf(opts, sizeof opts, "endpoint=%s,sas_file=%s", az_endpoint, file);
	snprintf(url, sizeof url, "%s/sas", az_url);
	CHECK_OK(phi_store_open(url, opts, &s));
	store_contract_run(s, &(struct store_caps){ .hardlinks = false });
	CHECK_OK(s->ops->put(s, "kept", "readable", 8));
	phi_store_closep(&s);

	/* a read-only SAS (r, l): reads and listings work, writes and deletes are refused */
	make_sas(sas, sizeof sas, "rl", NULL, "2099-01-01T00:00:00Z", false);
	write_file(file, sas);
	CHECK_OK(phi_store_open(url, opts, &s));
	char got[16];
	size_t gl = 0;
	CHECK_OK(s->ops->get(s, "kept", got, sizeof got, &gl));
	CHECK(gl == 8 && !memcmp(got, "readable", 8));
	struct phi_store_stat st;
	CHECK_OK(s->ops->getattr(s, "kept", &st));
	CHECK_EQ(s->ops->put(s, "kept", "changed!", 8), -EACCES);
	CHECK_EQ(s->ops->put(s, "new", "x", 1), -EACCES);
	CHECK_EQ(s->ops->unlink(s, "kept"), -EACCES);
	CHECK_EQ(s->ops->mkdir(s, "d", 0700), -EACCES);
	phi_store_closep(&s);

	/* refused by the service at open: a wrong signature, a start time in the future */
	make_sas(sas, sizeof sas, "rwdlac", NULL, "2099-01-01T00:00:00Z", true);
	write_file(file, sas);
	CHECK_EQ(phi_store_open(url, opts, &s), -EACCES);
	make_sas(sas, sizeof sas, "rwdlac", "2098-01-01T00:00:00Z", "2099-01-01T00:00:00Z", false);
	write_file(file, sas);
	CHECK_EQ(phi_store_open(url, opts, &s), -EACCES);
	/* expired: refused before any request, with its own errno */
	make_sas(sas, sizeof sas, "rwdlac", NULL, "2001-01-01T00:00:00Z", false);
	write_file(file, sas);
	CHECK_EQ(phi_store_open(url, opts, &s), -EKEYEXPIRED);
	make_sas(sas, sizeof sas, "rwdlac", NULL, "2001-01-01", false);
	write_file(file, sas);
	CHECK_EQ(phi_store_open(url, opts, &s), -EKEYEXPIRED);
	CHECK(s == NULL);

	/* malformed tokens never reach the service */
	const char *bad[] = { "", "\n", "sv=2021-12-02&sp=rl", "sv=2021-12-02&sig=",
			      "sig=abc def", "sig=abc\r\nx-evil: 1", "sig=abc#frag", "sig=abc&",
			      "sig=abc&&sv=1", "sig=a%zz", "sig=a%2", "=x&sig=abc", "sig=abc&novalue",
			      "sig=abc\"" };
	for (size_t i = 0; i < ARRAY_SIZE(bad); i++) {
		write_file(file, bad[i]);
		CHECK_EQ(phi_store_open(url, opts, &s), -EINVAL);
	}
	char *longsas = malloc(3000);
	CHECK(longsas);
	memset(longsas, 'a', 2999);
	memcpy(longsas, "sig=", 4);
	longsas[2999] = 0;
	write_file(file, longsas);
	CHECK_EQ(phi_store_open(url, opts, &s), -EINVAL);
	free(longsas);

	/* one kind of credential only */
	make_sas(sas, sizeof sas, "rwdlac", NULL, "2099-01-01T00:00:00Z", false);
	write_file(file, sas);
	snprintf(opts, sizeof opts, "endpoint=%s,sas_file=%s,key_file=%s", az_endpoint, file, az_keyfile);
	CHECK_EQ(phi_store_open(url, opts, &s), -EINVAL);
	snprintf(opts, sizeof opts, "endpoint=%s,credential=k,sas_credential=sas", az_endpoint);
	CHECK_EQ(phi_store_open(url, opts, &s), -EINVAL);
	snprintf(opts, sizeof opts, "endpoint=%s,sas_file=%s,sas_credential=sas", az_endpoint, file);
	CHECK_EQ(phi_store_open(url, opts, &s), -EINVAL);
	snprintf(opts, sizeof opts, "endpoint=%s,sas_file=%s/missing", az_endpoint, dir);
	CHECK_EQ(phi_store_open(url, opts, &s), -ENOKEY);

	/* the credential directory: sas_credential=NAME, and phifs-azure-sas when there is no
	 * phifs-azure-key; the key wins when both are there */
	setenv("CREDENTIALS_DIRECTORY", dir, 1);
	snprintf(opts, sizeof opts, "endpoint=%s,sas_credential=sas", az_endpoint);
	CHECK_OK(phi_store_open(url, opts, &s));
	phi_store_closep(&s);
	snprintf(opts, sizeof opts, "endpoint=%s", az_endpoint);
	CHECK_EQ(phi_store_open(url, opts, &s), -ENOKEY);
	char p2[300];
	snprintf(p2, sizeof p2, "%s/phifs-azure-sas", dir);
	write_file(p2, "sv=2021-12-02"); /* no sig: EINVAL proves the default read this file */
	CHECK_EQ(phi_store_open(url, opts, &s), -EINVAL);
	write_file(p2, sas);
	CHECK_OK(phi_store_open(url, opts, &s));
	gl = 0;
	CHECK_OK(s->ops->get(s, "kept", got, sizeof got, &gl));
	CHECK(gl == 8);
	phi_store_closep(&s);
	char p3[300];
	snprintf(p3, sizeof p3, "%s/phifs-azure-key", dir);
	write_file(p3, "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"); /* a wrong key */
	CHECK_EQ(phi_store_open(url, opts, &s), -EACCES);
	unsetenv("CREDENTIALS_DIRECTORY");
	unlink(p3);
	unlink(p2);
	unlink(file);
	rmdir(dir);
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
	/* az://devstoreaccount1/phitest/PREFIX */
	const char *pfx = strstr(az_url, "/phitest/");
	CHECK(pfx);
	snprintf(az_prefix, sizeof az_prefix, "%s", pfx + strlen("/phitest/"));

	struct phi_store *s = open_sub("/contract");
	store_contract_run(s, &(struct store_caps){ .hardlinks = false });
	phi_store_closep(&s);

	s = open_sub("/large");
	test_large(s);
	test_staged_edge(s);
	test_overwrite_cost(s);
	test_random_model(s);
	struct phi_store *s2 = open_sub("/large");
	test_create_cost(s, s2);
	phi_store_closep(&s2);
	phi_store_closep(&s);

	struct phi_store *a = open_sub("/conflict"), *b = open_sub("/conflict");
	test_conflict(a, b);
	phi_store_closep(&a);
	phi_store_closep(&b);

	s = open_sub("/open");
	test_open_objects(s);
	phi_store_closep(&s);

	test_failures();
	test_sas();
	return 0;
}
