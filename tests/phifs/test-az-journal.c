/* test-az-journal: the Azure backend's write journal (phifs/az_journal.c): the file format
 * (golden vector), every cut of a journal parses to the records before the cut (a torn
 * tail), bad headers, and recovery of a dead mount's directory (each verdict, a live
 * mount's directory left alone). Writes the fuzz corpus seed when given a directory. */
#include <dirent.h>
#include <errno.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>

#include "phifs/az_journal.h"
#include "test.h"

static int count_files(const char *dir, const char *pfx)
{
	DIR *d = opendir(dir);
	if (!d)
		return -1;
	int n = 0;
	for (struct dirent *e; (e = readdir(d));)
		n += !strncmp(e->d_name, pfx, strlen(pfx));
	closedir(d);
	return n;
}

static size_t read_file(const char *path, uint8_t *buf, size_t cap)
{
	FILE *f = fopen(path, "rb");
	CHECK(f != NULL);
	size_t n = fread(buf, 1, cap, f);
	fclose(f);
	return n;
}

/* the only m-* (other than skip) and its only j-* under root/id */
static void find_journal(const char *root, const char *skip, char *out, size_t size)
{
	char sd[512];
	snprintf(sd, sizeof sd, "%s/id1", root);
	DIR *d = opendir(sd);
	CHECK(d != NULL);
	out[0] = 0;
	for (struct dirent *e; (e = readdir(d));) {
		if (strncmp(e->d_name, "m-", 2) || (skip && !strcmp(e->d_name, skip)))
			continue;
		char md[800];
		snprintf(md, sizeof md, "%.500s/%.200s", sd, e->d_name);
		DIR *m = opendir(md);
		CHECK(m != NULL);
		for (struct dirent *f; (f = readdir(m));)
			if (!strncmp(f->d_name, "j-", 2))
				snprintf(out, size, "%.700s/%.200s", md, f->d_name);
		closedir(m);
	}
	closedir(d);
}

static int verdict_calls;
static enum phi_aj_verdict verdict_next;
static char seen_name[PHI_AJ_NAME_MAX + 1];
static size_t seen_recs;

static enum phi_aj_verdict on_journal(void *ctx, const struct phi_aj_parsed *p, const char *file)
{
	(void)ctx;
	(void)file;
	verdict_calls++;
	snprintf(seen_name, sizeof seen_name, "%s", p->name);
	seen_recs = p->nrecs;
	return verdict_next;
}

int main(int argc, char **argv)
{
	char root[] = "/tmp/test-az-journal.XXXXXX";
	CHECK(mkdtemp(root) != NULL);
	char jroot[300];
	snprintf(jroot, sizeof jroot, "%s/cache", root);

	/* a journal: header, a write, a truncate, a commit's generation */
	struct phi_ajd *d = NULL;
	CHECK_OK(phi_ajd_open(jroot, "id1", 1u << 20, &d));
	CHECK(!phi_ajd_full(d, 1000));
	CHECK(phi_ajd_full(d, 2u << 20));
	struct phi_aj *j = NULL;
	struct phi_aj_base b = { .name = "pfx/AbC", .etag = "\"0x8D\"", .gen = 0x0102030405060708ULL,
				 .size = 77 };
	CHECK_OK(phi_aj_create(d, &b, &j));
	CHECK_OK(phi_aj_append(j, PHI_AJ_WRITE, 5, "xyz", 3));
	CHECK_OK(phi_aj_append(j, PHI_AJ_TRUNCATE, 4, NULL, 0));
	CHECK_OK(phi_aj_append(j, PHI_AJ_GEN, 0xfeedULL, NULL, 0));
	CHECK_EQ(phi_aj_append(j, PHI_AJ_WRITE, 0, NULL, 0), -EINVAL);
	CHECK_EQ(phi_aj_append(j, PHI_AJ_GEN, 1, "x", 1), -EINVAL);
	char path[1024];
	find_journal(jroot, NULL, path, sizeof path);
	CHECK(path[0] != 0);
	uint8_t buf[4096];
	size_t n = read_file(path, buf, sizeof buf);
	/* golden vector: 40-byte header + name + etag, then 40-byte records */
	static const uint8_t golden_hdr[] = {
		'P', 'H', 'I', 'A', 'Z', 'J', 'N', 'L', 0, 0, 0, 1, 0, 0, 0, 7, 0, 0, 0, 6, 0, 0, 0, 0,
		1, 2, 3, 4, 5, 6, 7, 8, 0, 0, 0, 0, 0, 0, 0, 77, 'p', 'f', 'x', '/', 'A', 'b', 'C',
		'"', '0', 'x', '8', 'D', '"',
		/* record 0: PJR1 'W' seq 0 off 5 len 3 */
		0x50, 0x4a, 0x52, 0x31, 'W', 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 5,
		0, 0, 0, 0, 0, 0, 0, 3 };
	CHECK_EQ(n, (size_t)(53 + 43 + 40 + 40));
	CHECK(memcmp(buf, golden_hdr, sizeof golden_hdr) == 0);
	CHECK(memcmp(buf + 53 + 40, "xyz", 3) == 0);
	if (argc > 1) { /* the fuzz corpus seed */
		char seed[1024];
		snprintf(seed, sizeof seed, "%s/journal-3rec", argv[1]);
		FILE *f = fopen(seed, "wb");
		CHECK(f != NULL);
		CHECK_EQ(fwrite(buf, 1, n, f), n);
		fclose(f);
	}

	struct phi_aj_parsed p;
	CHECK_OK(phi_aj_parse(buf, n, &p));
	CHECK(!strcmp(p.name, "pfx/AbC") && !strcmp(p.etag, "\"0x8D\""));
	CHECK_EQ(p.base_gen, 0x0102030405060708ULL);
	CHECK_EQ(p.base_size, 77u);
	CHECK_EQ(p.nrecs, 3u);
	CHECK(!p.torn);
	CHECK(p.recs[0].type == PHI_AJ_WRITE && p.recs[0].off == 5 && p.recs[0].len == 3 &&
	      !memcmp(p.recs[0].data, "xyz", 3));
	CHECK(p.recs[1].type == PHI_AJ_TRUNCATE && p.recs[1].off == 4);
	CHECK(p.recs[2].type == PHI_AJ_GEN && p.recs[2].off == 0xfeed);
	phi_aj_parsed_free(&p);

	/* every cut: a header cut is refused, a record cut is a torn tail with the records
	 * before it */
	for (size_t cut = 0; cut < n; cut++) {
		int r = phi_aj_parse(buf, cut, &p);
		if (cut < 53) {
			CHECK_EQ(r, -EBADMSG);
			continue;
		}
		CHECK_OK(r);
		size_t want = cut < 53 + 43 ? 0 : cut < 53 + 43 + 40 ? 1 : 2;
		CHECK_EQ(p.nrecs, want);
		CHECK(p.torn == (cut != 53 && cut != 53 + 43 && cut != 53 + 43 + 40));
		phi_aj_parsed_free(&p);
	}
	/* a flipped bit in a record header ends the journal there; in the header, refused */
	for (size_t k = 0; k < n; k++) {
		if (k >= 53 + 40 && k < 53 + 43)
			continue; /* data bytes: not checked here (the ciphertext is authenticated) */
		uint8_t c[4096];
		memcpy(c, buf, n);
		c[k] ^= 0x10;
		int r = phi_aj_parse(c, n, &p);
		if (k < 53) {
			/* magic, version, lengths and the reserved word are checked; the base
			 * generation and size, name and etag bytes are values (a NUL is refused) */
			if (k < 24)
				CHECK_EQ(r, -EBADMSG);
			if (r == 0)
				phi_aj_parsed_free(&p);
			continue;
		}
		CHECK_OK(r);
		CHECK(p.torn);
		CHECK(p.nrecs < 3);
		phi_aj_parsed_free(&p);
	}

	/* recovery: a live mount's directory is left alone */
	struct phi_ajd *d2 = NULL;
	CHECK_OK(phi_ajd_open(jroot, "id1", 1u << 20, &d2));
	unsigned cnt[3];
	verdict_calls = 0;
	CHECK_OK(phi_ajd_recover(d2, on_journal, NULL, cnt));
	CHECK_EQ(verdict_calls, 0);
	phi_ajd_close(d2);

	/* the mount "dies" with the journal open: phi_aj_keep, then its directory unlocked */
	phi_aj_keep(j);
	phi_ajd_close(d); /* a directory with a journal is kept */
	find_journal(jroot, NULL, path, sizeof path);
	CHECK(path[0] != 0);

	/* RETRY keeps it, CONFLICT moves it to conflict/, DONE deletes */
	CHECK_OK(phi_ajd_open(jroot, "id1", 1u << 20, &d2));
	verdict_next = PHI_AJ_RETRY;
	verdict_calls = 0;
	CHECK_OK(phi_ajd_recover(d2, on_journal, NULL, cnt));
	CHECK_EQ(verdict_calls, 1);
	CHECK(!strcmp(seen_name, "pfx/AbC"));
	CHECK_EQ(seen_recs, 3u);
	CHECK_EQ(cnt[PHI_AJ_RETRY], 1u);
	char sd[400];
	snprintf(sd, sizeof sd, "%s/id1", jroot);
	CHECK_EQ(count_files(sd, "m-"), 2);
	phi_ajd_close(d2);

	CHECK_OK(phi_ajd_open(jroot, "id1", 1u << 20, &d2));
	verdict_next = PHI_AJ_CONFLICT;
	CHECK_OK(phi_ajd_recover(d2, on_journal, NULL, cnt));
	CHECK_EQ(cnt[PHI_AJ_CONFLICT], 1u);
	char cd[500];
	snprintf(cd, sizeof cd, "%s/conflict", sd);
	CHECK_EQ(count_files(cd, "m-"), 1);
	CHECK_EQ(count_files(sd, "m-"), 1); /* the dead mount's directory is gone */
	phi_ajd_close(d2);

	/* a new journal, dropped: nothing left; then one left and DONE */
	CHECK_OK(phi_ajd_open(jroot, "id1", 1u << 20, &d));
	CHECK_OK(phi_aj_create(d, &b, &j));
	CHECK_OK(phi_aj_append(j, PHI_AJ_WRITE, 0, "abc", 3));
	phi_aj_drop(j);
	CHECK_OK(phi_aj_create(d, &b, &j));
	CHECK_OK(phi_aj_append(j, PHI_AJ_WRITE, 0, "abc", 3));
	phi_aj_keep(j);
	phi_ajd_close(d);
	CHECK_OK(phi_ajd_open(jroot, "id1", 1u << 20, &d2));
	verdict_next = PHI_AJ_DONE;
	verdict_calls = 0;
	CHECK_OK(phi_ajd_recover(d2, on_journal, NULL, cnt));
	CHECK_EQ(verdict_calls, 1);
	CHECK_EQ(cnt[PHI_AJ_DONE], 1u);
	CHECK_EQ(count_files(sd, "m-"), 1);
	phi_ajd_close(d2);
	/* everything closed: the store's directory holds only conflict/ */
	CHECK_EQ(count_files(sd, "m-"), 0);

	/* a journal file is private */
	CHECK_OK(phi_ajd_open(jroot, "id1", 1u << 20, &d));
	CHECK_OK(phi_aj_create(d, &b, &j));
	find_journal(jroot, NULL, path, sizeof path);
	struct stat st;
	CHECK_OK(stat(path, &st));
	CHECK_EQ(st.st_mode & 0777, 0600u);
	phi_aj_drop(j);
	phi_ajd_close(d);
	CHECK_EQ(phi_ajd_open(jroot, "a/b", 1u << 20, &d), -EINVAL);

	char cmd[400];
	snprintf(cmd, sizeof cmd, "rm -rf %s", root);
	CHECK_OK(system(cmd));
	puts("PASS");
	return 0;
}
