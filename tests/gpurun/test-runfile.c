/* test-runfile: the runtime file parser (gpurun/runfile.h) against golden vectors: what
 * gpurun-systemd writes is taken, byte for byte as expected; everything else, above all an
 * extra key such as LD_PRELOAD= and a slot list that is not spoold's, is refused with the
 * line and the problem, never the value. Then runfile_load on files: symlink, FIFO, size. */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "test.h"

#include "gpurun/runfile.h"

struct vec {
	const char *in;
	size_t len; /* 0: strlen(in) */
	int r;
	/* on success */
	bool has_slots;
	const char *slots;
	bool has_attempt;
	const char *attempt;
	/* on failure: err must be exactly this */
	const char *err;
};

#define OK_(in, hs, s, ha, a) { in, 0, 0, hs, s, ha, a, NULL }
#define BAD(in, r, e) { in, 0, r, false, NULL, false, NULL, e }

static const char ERR_SLOTS[] =
	"cuda_visible_devices: not a list of GPU slots (0-1023, comma-separated, at most 64)";
static const char ERR_ATTEMPT[] = "attempt: not an attempt name ([A-Za-z0-9_.-], 1-95, no leading '.')";
static const char ERR_KEY[] = "unknown key (only cuda_visible_devices and attempt)";

static void check_vec(const struct vec *v, size_t idx)
{
	struct runfile rf;
	memset(&rf, 0xa5, sizeof rf); /* must stay untouched on failure */
	struct runfile before = rf;
	char err[256] = "";
	size_t len = v->len ? v->len : strlen(v->in);
	int r = runfile_parse(v->in, len, &rf, err, sizeof err);
	if (r != v->r) {
		fprintf(stderr, "vector %zu: r=%d want %d (err \"%s\")\n", idx, r, v->r, err);
		exit(1);
	}
	if (r == 0) {
		CHECK(!err[0]);
		CHECK_EQ(rf.has_slots, v->has_slots);
		CHECK_EQ(rf.has_attempt, v->has_attempt);
		CHECK(!strcmp(rf.slots, v->has_slots ? v->slots : ""));
		CHECK(!strcmp(rf.attempt, v->has_attempt ? v->attempt : ""));
	} else {
		CHECK(!memcmp(&rf, &before, sizeof rf));
		if (strcmp(err, v->err)) {
			fprintf(stderr, "vector %zu: err \"%s\"\n          want \"%s\"\n", idx, err, v->err);
			exit(1);
		}
	}
}

static void test_vectors(void)
{
	char e_slots1[128], e_att1[128], e_key1[128], e_key2[128], e_key3[128], e_att2[128];
	snprintf(e_slots1, sizeof e_slots1, "line 1: %s", ERR_SLOTS);
	snprintf(e_att1, sizeof e_att1, "line 1: %s", ERR_ATTEMPT);
	snprintf(e_att2, sizeof e_att2, "line 2: %s", ERR_ATTEMPT);
	snprintf(e_key1, sizeof e_key1, "line 1: %s", ERR_KEY);
	snprintf(e_key2, sizeof e_key2, "line 2: %s", ERR_KEY);
	snprintf(e_key3, sizeof e_key3, "line 3: %s", ERR_KEY);
	char long_attempt[RUNFILE_ATTEMPT_MAX + 16], max_attempt[RUNFILE_ATTEMPT_MAX + 16];
	char a95[RUNFILE_ATTEMPT_MAX + 1];
	memset(a95, 'a', RUNFILE_ATTEMPT_MAX);
	a95[RUNFILE_ATTEMPT_MAX] = 0;
	snprintf(max_attempt, sizeof max_attempt, "attempt=%s\n", a95);
	snprintf(long_attempt, sizeof long_attempt, "attempt=%sa\n", a95);
	/* 64 slots (0..63) is spoold's maximum; 65 is one too many */
	char s64[RUNFILE_SLOTS_LEN], s65[RUNFILE_SLOTS_LEN + 8], f64[RUNFILE_SLOTS_LEN + 32],
		f65[RUNFILE_SLOTS_LEN + 40];
	size_t o = 0;
	for (int i = 0; i < 64; i++)
		o += (size_t)snprintf(s64 + o, sizeof s64 - o, "%s%d", i ? "," : "", 960 + i);
	snprintf(s65, sizeof s65, "%s,1", s64);
	snprintf(f64, sizeof f64, "cuda_visible_devices=%s\n", s64);
	snprintf(f65, sizeof f65, "cuda_visible_devices=%s\n", s65);
	const struct vec v[] = {
		/* what gpurun-systemd writes */
		OK_("cuda_visible_devices=0,1\nattempt=spoold-j-0001.1\n", true, "0,1", true, "spoold-j-0001.1"),
		OK_("attempt=spoold-job-0001.2\ncuda_visible_devices=3\n", true, "3", true, "spoold-job-0001.2"),
		/* a job of 0 GPUs: the key with no value, CUDA sees no device */
		OK_("cuda_visible_devices=\nattempt=spoold-a.1\n", true, "", true, "spoold-a.1"),
		/* either key alone, or none: that variable was not in spoold's environment */
		OK_("attempt=spoold-x.7\n", false, NULL, true, "spoold-x.7"),
		OK_("cuda_visible_devices=1023\n", true, "1023", false, NULL),
		OK_("", false, NULL, false, NULL),
		/* the unit's default (SetCredential=run:...) when there is no file */
		OK_("# no runtime file from gpurun-systemd: no GPU slot, no attempt name\n", false, NULL, false, NULL),
		OK_("# no newline at the end", false, NULL, false, NULL),
		OK_("\n\n#c\n\nattempt=a\n\n", false, NULL, true, "a"),
		OK_("attempt=spoold-A_b.c-9.10", false, NULL, true, "spoold-A_b.c-9.10"),
		OK_("cuda_visible_devices=0", true, "0", false, NULL),
		OK_("cuda_visible_devices=10,0,7\n", true, "10,0,7", false, NULL),
		OK_(max_attempt, false, NULL, true, a95),
		OK_(f64, true, s64, false, NULL),

		/* other keys: whatever they are, they are refused, and not named back */
		BAD("LD_PRELOAD=/tmp/x.so\n", -EINVAL, e_key1),
		BAD("attempt=spoold-j.1\nLD_PRELOAD=/run/gpurun-status/evil.so\n", -EINVAL, e_key2),
		BAD("cuda_visible_devices=0\nattempt=a\nPATH=/tmp\n", -EINVAL, e_key3),
		BAD("CUDA_VISIBLE_DEVICES=0\n", -EINVAL, e_key1),
		BAD("SPOOLD_NAME=x\n", -EINVAL, e_key1),
		BAD("Attempt=x\n", -EINVAL, e_key1),
		BAD("attempt =x\n", -EINVAL, e_key1),
		BAD(" attempt=x\n", -EINVAL, e_key1),
		BAD("=x\n", -EINVAL, e_key1),
		BAD("attempt\n", -EINVAL, "line 1: not key=value"),
		BAD("\n\nnonsense", -EINVAL, "line 3: not key=value"),
		/* the same key twice: which one would win is not a question to leave open */
		BAD("attempt=a\nattempt=b\n", -EINVAL, "line 2: attempt: given twice"),
		BAD("cuda_visible_devices=0\ncuda_visible_devices=1\n", -EINVAL,
		    "line 2: cuda_visible_devices: given twice"),

		/* slots that are not spoold's */
		BAD("cuda_visible_devices=0;1\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=0,,1\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=0,\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=,0\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=,\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=1024\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=99999999999999999999\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=-1\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=+1\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=01\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=1,01\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=00\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=1,2,1\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=0 \n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices= 0\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=GPU-8c2a5e6f-0d1b-4b7c-9a3e-2f1d0c9b8a7e\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=MIG-0\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=0x1\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=$(id)\n", -EINVAL, e_slots1),
		BAD("cuda_visible_devices=0=1\n", -EINVAL, e_slots1),
		BAD(f65, -EINVAL, e_slots1),

		/* attempt names that are not spoold's */
		BAD("attempt=\n", -EINVAL, e_att1),
		BAD("attempt=.hidden\n", -EINVAL, e_att1),
		BAD("attempt=a/b\n", -EINVAL, e_att1),
		BAD("attempt=../../etc\n", -EINVAL, e_att1),
		BAD("attempt=a b\n", -EINVAL, e_att1),
		BAD("attempt=a;b\n", -EINVAL, e_att1),
		BAD("attempt=a=b\n", -EINVAL, e_att1),
		BAD("attempt=\"a\"\n", -EINVAL, e_att1),
		BAD("cuda_visible_devices=0\nattempt=a\\nb\n", -EINVAL, e_att2),
		BAD(long_attempt, -EINVAL, e_att1),

		/* bytes: control characters, CR (a file from another system), non-ASCII */
		BAD("attempt=a\r\n", -EINVAL, "line 1: a byte that is not printable ASCII"),
		BAD("attempt=a\tb\n", -EINVAL, "line 1: a byte that is not printable ASCII"),
		BAD("#\x1b[2J\n", -EINVAL, "line 1: a byte that is not printable ASCII"),
		BAD("attempt=caf\xc3\xa9\n", -EINVAL, "line 1: a byte that is not printable ASCII"),
		BAD("# \x7f\n", -EINVAL, "line 1: a byte that is not printable ASCII"),
		{ "attempt=a\0LD_PRELOAD=x\n", 23, -EINVAL, false, NULL, false, NULL,
		  "line 1: a byte that is not printable ASCII" },
		{ "\0", 1, -EINVAL, false, NULL, false, NULL, "line 1: a byte that is not printable ASCII" },
	};
	for (size_t i = 0; i < sizeof v / sizeof v[0]; i++)
		check_vec(&v[i], i);

	/* the size bound: RUNFILE_MAX_BYTES of comments are fine, one byte more is not */
	char big[RUNFILE_MAX_BYTES + 1];
	memset(big, '#', sizeof big);
	struct runfile rf;
	char err[256];
	CHECK_OK(runfile_parse(big, RUNFILE_MAX_BYTES, &rf, err, sizeof err));
	CHECK_EQ(runfile_parse(big, RUNFILE_MAX_BYTES + 1, &rf, err, sizeof err), -EFBIG);
	CHECK(!strcmp(err, "larger than 1024 bytes"));
	/* no err buffer: still refused */
	CHECK_EQ(runfile_parse("x=1", 3, &rf, NULL, 0), -EINVAL);
	/* the parser stops at len: what follows is not read */
	CHECK_OK(runfile_parse("attempt=ab\nLD_PRELOAD=x", 10, &rf, err, sizeof err));
	CHECK(rf.has_attempt && !strcmp(rf.attempt, "ab"));
}

static void test_validators(void)
{
	CHECK_OK(runfile_slots_valid(""));
	CHECK_OK(runfile_slots_valid("0,1,1023"));
	CHECK_EQ(runfile_slots_valid("1,1"), -EINVAL);
	CHECK_EQ(runfile_slots_valid(NULL), -EINVAL);
	char longs[RUNFILE_SLOTS_LEN + 10];
	memset(longs, '1', sizeof longs - 1);
	longs[sizeof longs - 1] = 0;
	CHECK_EQ(runfile_slots_valid(longs), -EINVAL);
	CHECK_OK(runfile_attempt_valid("spoold-j-0001.1"));
	CHECK_EQ(runfile_attempt_valid(""), -EINVAL);
	CHECK_EQ(runfile_attempt_valid(".a"), -EINVAL);
	CHECK_EQ(runfile_attempt_valid(NULL), -EINVAL);
}

static void test_load(void)
{
	char dir[] = "/tmp/test-runfile.XXXXXX";
	CHECK(mkdtemp(dir));
	char p[128], l[128], f[128], big[128];
	snprintf(p, sizeof p, "%s/job.run", dir);
	snprintf(l, sizeof l, "%s/link.run", dir);
	snprintf(f, sizeof f, "%s/fifo.run", dir);
	snprintf(big, sizeof big, "%s/big.run", dir);
	struct runfile rf = { 0 };
	char err[256];

	int fd = open(p, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	CHECK(fd >= 0);
	const char txt[] = "cuda_visible_devices=2\nattempt=spoold-j.3\n";
	CHECK_EQ(write(fd, txt, sizeof txt - 1), (long long)(sizeof txt - 1));
	close(fd);
	CHECK_OK(runfile_load(p, &rf, err, sizeof err));
	CHECK(rf.has_slots && !strcmp(rf.slots, "2") && rf.has_attempt && !strcmp(rf.attempt, "spoold-j.3"));

	/* a symlink (to the master key, /etc/shadow ...) is not followed */
	CHECK_OK(symlink(p, l));
	CHECK(runfile_load(l, &rf, err, sizeof err) == -ELOOP);
	/* a FIFO would block a reader that opened it for good */
	CHECK_OK(mkfifo(f, 0600));
	CHECK_EQ(runfile_load(f, &rf, err, sizeof err), -EINVAL);
	CHECK(!strcmp(err, "not a regular file"));
	CHECK_EQ(runfile_load(dir, &rf, err, sizeof err), -EINVAL);
	/* missing: an error here (gpurun@ gives a default when the file is missing) */
	char missing[160];
	snprintf(missing, sizeof missing, "%s/none.run", dir);
	CHECK_EQ(runfile_load(missing, &rf, err, sizeof err), -ENOENT);
	CHECK(!strcmp(err, "No such file or directory"));
	/* larger than the bound: refused without reading it all */
	fd = open(big, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
	CHECK(fd >= 0);
	char blk[4096];
	memset(blk, '#', sizeof blk);
	CHECK_EQ(write(fd, blk, sizeof blk), (long long)sizeof blk);
	close(fd);
	CHECK_EQ(runfile_load(big, &rf, err, sizeof err), -EFBIG);
	CHECK_OK(truncate(big, RUNFILE_MAX_BYTES));
	CHECK_OK(runfile_load(big, &rf, err, sizeof err));
	CHECK(!rf.has_slots && !rf.has_attempt);

	unlink(p);
	unlink(l);
	unlink(f);
	unlink(big);
	CHECK_OK(rmdir(dir));
}

int main(void)
{
	test_vectors();
	test_validators();
	test_load();
	printf("test-runfile: all passed\n");
	return 0;
}
