/* test-names: the name format (golden vector, AD binding, long names) and .d parsing. */
#include <errno.h>
#include <string.h>

#include "phifs/names.h"
#include "test.h"

int main(void)
{
	CHECK_OK(phi_crypto_init());
	uint8_t kb[64], dir[16], dir2[16];
	for (int i = 0; i < 64; i++)
		kb[i] = (uint8_t)i;
	for (int i = 0; i < 16; i++)
		dir[i] = (uint8_t)(0xa0 + i), dir2[i] = (uint8_t)i;
	_cleanup_key_ struct phi_key *k = NULL;
	CHECK_OK(phi_key_from(kb, 64, &k));

	struct phi_ename e, e2;
	char out[256];
	CHECK_OK(phi_name_encrypt(k, dir, "notes.txt", &e));
	/* golden vector: AES-256-SIV(key 00..3f, AD a0..af, "notes.txt"), base64url */
	CHECK(strcmp(e.store, "2yFkXUAiUBvy2JetwN8F9UTRlA_Od3tB5A") == 0);
	CHECK(!e.is_long);
	CHECK(phi_name_is_entry(e.store));
	CHECK_OK(phi_name_decrypt(k, dir, e.full, out));
	CHECK(strcmp(out, "notes.txt") == 0);
	/* deterministic, and bound to the directory */
	CHECK_OK(phi_name_encrypt(k, dir, "notes.txt", &e2));
	CHECK(strcmp(e.store, e2.store) == 0);
	CHECK_OK(phi_name_encrypt(k, dir2, "notes.txt", &e2));
	CHECK(strcmp(e.store, e2.store) != 0);
	CHECK_EQ(phi_name_decrypt(k, dir2, e.full, out), -EBADMSG);
	/* tampering */
	e.full[3] = e.full[3] == 'A' ? 'B' : 'A';
	CHECK_EQ(phi_name_decrypt(k, dir, e.full, out), -EBADMSG);
	CHECK_EQ(phi_name_decrypt(k, dir, "!!", out), -EBADMSG);
	CHECK_EQ(phi_name_decrypt(k, dir, "", out), -EBADMSG);

	/* long names: 255 bytes -> hashed entry + sidecar */
	char name[256];
	memset(name, 'x', 255);
	name[255] = 0;
	CHECK_OK(phi_name_encrypt(k, dir, name, &e));
	CHECK(e.is_long);
	CHECK(strlen(e.store) == 43 + 2);
	CHECK(phi_name_is_entry(e.store));
	char side[256];
	phi_name_sidecar(e.store, side);
	CHECK(side[strlen(side) - 1] == 'n');
	CHECK(!phi_name_is_entry(side));
	CHECK_OK(phi_name_decrypt(k, dir, e.full, out));
	CHECK(strcmp(out, name) == 0);
	name[150] = 0; /* 150 bytes: (150+16)*4/3 = 222 > 200: long too */
	CHECK_OK(phi_name_encrypt(k, dir, name, &e));
	CHECK(e.is_long);
	name[100] = 0;
	CHECK_OK(phi_name_encrypt(k, dir, name, &e));
	CHECK(!e.is_long);
	char big[300];
	memset(big, 'y', 299);
	big[299] = 0;
	CHECK_EQ(phi_name_encrypt(k, dir, big, &e), -ENAMETOOLONG);
	CHECK_EQ(phi_name_encrypt(k, dir, "a/b", &e), -EINVAL);
	CHECK_EQ(phi_name_encrypt(k, dir, "..", &e), -EINVAL);
	CHECK(!phi_name_is_entry(".d"));
	CHECK(!phi_name_is_entry(".tmp.abc"));

	/* link targets */
	char enc[200], back[100];
	CHECK_OK(phi_link_encrypt(k, "../other/file", enc, sizeof(enc)));
	CHECK(strstr(enc, "other") == NULL);
	CHECK_OK(phi_link_decrypt(k, enc, back, sizeof(back)));
	CHECK(strcmp(back, "../other/file") == 0);
	enc[5] ^= 1;
	CHECK(phi_link_decrypt(k, enc, back, sizeof(back)) < 0);

	/* .d parsing */
	uint8_t d[24] = { 'P', 'H', 'F', 'D', 0, 1, 0, 0 }, id[16];
	memcpy(d + 8, dir, 16);
	CHECK_OK(phi_dir_id_parse(d, 24, id));
	CHECK_MEM(id, dir, 16);
	CHECK_EQ(phi_dir_id_parse(d, 23, id), -EBADMSG);
	d[5] = 2;
	CHECK_EQ(phi_dir_id_parse(d, 24, id), -EBADMSG);
	return 0;
}
