/* test-az-append: the append-blob calls of store_azure (phi_az_append and friends) against
 * Azurite (run by azurite.sh: AZ_URL, AZ_OPTS). A repeated append at the same position, as
 * after a lost answer, must not append twice; an append at the wrong position must fail. */
#include <stdio.h>
#include <unistd.h>

#include "phifs/store_azure.h"
#include "test.h"

int main(void)
{
	const char *url = getenv("AZ_URL"), *opts = getenv("AZ_OPTS");
	if (!url || !opts) {
		fprintf(stderr, "run through azurite.sh\n");
		return 77;
	}
	struct phi_store *ps = NULL;
	CHECK_OK(phi_store_azure_open(url, opts, &ps));
	char ctr[64], blob[64];
	/* a container the store was not opened on, created by the first append blob */
	snprintf(ctr, sizeof(ctr), "ckpt-test-%d", (int)getpid());
	snprintf(blob, sizeof(blob), "dir/ckpt-000000000001.log");
	uint64_t size = 1;
	CHECK_EQ(phi_az_blob_size(ps, ctr, blob, &size), -ENOENT);
	CHECK_OK(phi_az_append_create(ps, ctr, blob));
	CHECK_EQ(phi_az_append_create(ps, ctr, blob), -EEXIST); /* never replaced */
	CHECK_OK(phi_az_blob_size(ps, ctr, blob, &size));
	CHECK_EQ(size, 0);

	CHECK_OK(phi_az_append(ps, ctr, blob, 0, "abc", 3));
	/* the same append again: it is already there, nothing is added */
	CHECK_OK(phi_az_append(ps, ctr, blob, 0, "abc", 3));
	CHECK_OK(phi_az_blob_size(ps, ctr, blob, &size));
	CHECK_EQ(size, 3);
	/* other bytes at a taken position, or a position past the end: refused */
	CHECK_EQ(phi_az_append(ps, ctr, blob, 0, "xyz", 3), -ESTALE);
	CHECK_EQ(phi_az_append(ps, ctr, blob, 0, "abcd", 4), -ESTALE);
	CHECK_EQ(phi_az_append(ps, ctr, blob, 10, "def", 3), -ESTALE);
	CHECK_OK(phi_az_append(ps, ctr, blob, 3, "defg", 4));
	/* an older append repeated after a newer one: already there */
	CHECK_OK(phi_az_append(ps, ctr, blob, 0, "abc", 3));
	CHECK_EQ(phi_az_append(ps, ctr, blob, 0, "", 0), -EINVAL);

	struct phi_buf b _cleanup_buf_;
	phi_buf_init(&b, 1024);
	CHECK_OK(phi_az_blob_get(ps, ctr, blob, 0, 0, &b));
	CHECK_EQ(b.len, 7);
	CHECK_MEM(b.p, "abcdefg", 7);
	CHECK_OK(phi_az_blob_get(ps, ctr, blob, 2, 3, &b));
	CHECK_EQ(b.len, 3);
	CHECK_MEM(b.p, "cde", 3);
	CHECK_OK(phi_az_blob_get(ps, ctr, blob, 7, 0, &b)); /* from the end: empty */
	CHECK_EQ(b.len, 0);
	CHECK_EQ(phi_az_blob_get(ps, ctr, blob, 5, 5, &b), -EIO); /* shorter than asked */
	phi_buf_done(&b);
	phi_buf_init(&b, 4);
	CHECK_EQ(phi_az_blob_get(ps, ctr, blob, 0, 0, &b), -EFBIG);
	/* bad names are refused before any request */
	CHECK_EQ(phi_az_append(ps, "Bad_Container", blob, 0, "a", 1), -EINVAL);
	CHECK_EQ(phi_az_append(ps, ctr, "../x", 0, "a", 1), -EINVAL);
	phi_store_close(ps);
	printf("ok append blobs: create, exactly-once appends, ranged reads\n");
	return 0;
}
