/* Unit test for util.h: the cursor never reads past its end, the bounded buffer honours its max. */
#include "phifs/util.h"
#include "test.h"

int main(void)
{
	const uint8_t in[] = { 0x01, 0x02, 0x03, 0x04, 0x05, 0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b };
	struct phi_cur c = phi_cur_init(in, sizeof in);
	uint16_t a;
	uint32_t b;
	uint64_t d;
	CHECK_OK(phi_cur_u16be(&c, &a));
	CHECK_EQ(a, 0x0102);
	CHECK_OK(phi_cur_u32be(&c, &b));
	CHECK_EQ(b, 0x03040506);
	CHECK_EQ(phi_cur_left(&c), 5);
	CHECK_EQ(phi_cur_u64be(&c, &d), -EBADMSG); /* only 5 bytes left */
	CHECK_EQ(c.off, 6);

	uint8_t w[8];
	phi_put_u64be(w, 0x0102030405060708ull);
	c = phi_cur_init(w, sizeof w);
	CHECK_OK(phi_cur_u64be(&c, &d));
	CHECK_EQ(d, 0x0102030405060708ll);

	struct phi_buf buf _cleanup_buf_;
	phi_buf_init(&buf, 100);
	for (int i = 0; i < 10; i++)
		CHECK_OK(phi_buf_append(&buf, "0123456789", 10));
	CHECK_EQ(phi_buf_append(&buf, "x", 1), -E2BIG);
	CHECK_EQ(buf.len, 100);

	uint64_t v;
	CHECK_OK(phi_parse_u64("18446744073709551615", UINT64_MAX, &v));
	CHECK_EQ(phi_parse_u64("18446744073709551616", UINT64_MAX, &v), -ERANGE);
	CHECK_EQ(phi_parse_u64("12a", 100, &v), -EINVAL);
	CHECK_EQ(phi_parse_u64("101", 100, &v), -ERANGE);
	CHECK_OK(phi_parse_u64("100", 100, &v));
	CHECK_EQ(v, 100);
	return 0;
}
