/* gguf.c: validating GGUF reader. Every read goes through a struct phi_cur; every size is
 * computed with overflow checks before it is compared with what is left of the buffer. */
#include "gguf.h"

#include <endian.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "util.h"

#define FAIL(code, msg)                  \
	do {                             \
		if (ret_err)             \
			*ret_err = (msg); \
		return (code);           \
	} while (0)

static int cur_u32le(struct phi_cur *c, uint32_t *v)
{
	uint32_t x;
	int r = phi_cur_bytes(c, &x, 4);
	if (r < 0)
		return r;
	*v = le32toh(x);
	return 0;
}

static int cur_u64le(struct phi_cur *c, uint64_t *v)
{
	uint64_t x;
	int r = phi_cur_bytes(c, &x, 8);
	if (r < 0)
		return r;
	*v = le64toh(x);
	return 0;
}

static int cur_str(struct phi_cur *c, uint64_t max, struct phi_gguf_str *s)
{
	uint64_t n;
	const uint8_t *p;
	size_t save = c->off;
	if (cur_u64le(c, &n) < 0)
		return -EBADMSG;
	if (n > max || n > phi_cur_left(c) || phi_cur_ref(c, &p, n) < 0) {
		c->off = save;
		return -EBADMSG;
	}
	s->p = (const char *)p;
	s->len = n;
	return 0;
}

static const uint8_t scalar_size[PHI_GV_COUNT] = {
	[PHI_GV_U8] = 1, [PHI_GV_I8] = 1, [PHI_GV_U16] = 2, [PHI_GV_I16] = 2,
	[PHI_GV_U32] = 4, [PHI_GV_I32] = 4, [PHI_GV_F32] = 4, [PHI_GV_BOOL] = 1,
	[PHI_GV_U64] = 8, [PHI_GV_I64] = 8, [PHI_GV_F64] = 8,
};

/* Skip over one value of type t, checking it; depth bounds nested arrays. */
static int skip_value(struct phi_cur *c, uint32_t t, int depth, const char **ret_err)
{
	if (t >= PHI_GV_COUNT)
		FAIL(-EBADMSG, "gguf: unknown metadata value type");
	if (t == PHI_GV_STRING) {
		struct phi_gguf_str s;
		if (cur_str(c, UINT64_MAX, &s) < 0)
			FAIL(-EBADMSG, "gguf: metadata string runs past the end of the file");
		return 0;
	}
	if (t == PHI_GV_ARRAY) {
		uint32_t et;
		uint64_t n;
		if (depth >= PHI_GGUF_MAX_NEST)
			FAIL(-EBADMSG, "gguf: arrays nested too deeply");
		if (cur_u32le(c, &et) < 0 || cur_u64le(c, &n) < 0)
			FAIL(-EBADMSG, "gguf: truncated array header");
		if (et >= PHI_GV_COUNT)
			FAIL(-EBADMSG, "gguf: unknown array element type");
		if (et == PHI_GV_STRING || et == PHI_GV_ARRAY) {
			/* each element takes at least 8 bytes (a length or a type + count) */
			if (n > phi_cur_left(c) / 8)
				FAIL(-EBADMSG, "gguf: array count exceeds the file");
			for (uint64_t i = 0; i < n; i++) {
				int r = skip_value(c, et, depth + 1, ret_err);
				if (r < 0)
					return r;
			}
			return 0;
		}
		if (n > phi_cur_left(c) / scalar_size[et])
			FAIL(-EBADMSG, "gguf: array count exceeds the file");
		c->off += n * scalar_size[et];
		return 0;
	}
	if (phi_cur_left(c) < scalar_size[t])
		FAIL(-EBADMSG, "gguf: truncated metadata value");
	if (t == PHI_GV_BOOL && c->p[c->off] > 1)
		FAIL(-EBADMSG, "gguf: bool value is neither 0 nor 1");
	c->off += scalar_size[t];
	return 0;
}

int phi_ggml_type_info(uint32_t type, uint32_t *ret_blck, uint32_t *ret_bytes)
{
	uint32_t b, s;
	switch (type) {
	case PHI_T_F32: b = 1; s = 4; break;
	case PHI_T_F16: b = 1; s = 2; break;
	case PHI_T_BF16: b = 1; s = 2; break;
	case PHI_T_Q8_0: b = 32; s = 34; break;
	case PHI_T_Q4_K: b = 256; s = 144; break;
	case PHI_T_Q6_K: b = 256; s = 210; break;
	default: return -EINVAL;
	}
	*ret_blck = b;
	*ret_bytes = s;
	return 0;
}

const char *phi_ggml_type_name(uint32_t type)
{
	switch (type) {
	case PHI_T_F32: return "F32";
	case PHI_T_F16: return "F16";
	case PHI_T_BF16: return "BF16";
	case PHI_T_Q8_0: return "Q8_0";
	case PHI_T_Q4_K: return "Q4_K";
	case PHI_T_Q6_K: return "Q6_K";
	default: return "unsupported";
	}
}

static int str_cmp(struct phi_gguf_str a, struct phi_gguf_str b)
{
	size_t n = a.len < b.len ? a.len : b.len;
	int r = n ? memcmp(a.p, b.p, n) : 0;
	if (r)
		return r;
	return a.len < b.len ? -1 : a.len > b.len;
}

static int cmp_strp(const void *a, const void *b)
{
	return str_cmp(**(const struct phi_gguf_str *const *)a, **(const struct phi_gguf_str *const *)b);
}

/* true if two of the n strings (each at stride bytes from the last) are equal */
static int has_dups(const void *first, size_t stride, uint64_t n)
{
	if (n < 2)
		return 0;
	_cleanup_free_ const struct phi_gguf_str **v = calloc(n, sizeof(*v));
	if (!v)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++)
		v[i] = (const struct phi_gguf_str *)((const uint8_t *)first + i * stride);
	qsort(v, n, sizeof(*v), cmp_strp);
	for (uint64_t i = 1; i < n; i++)
		if (str_cmp(*v[i - 1], *v[i]) == 0)
			return 1;
	return 0;
}

void phi_gguf_free(struct phi_gguf *g)
{
	if (!g)
		return;
	free(g->kv);
	free(g->tensors);
	if (g->map)
		(void)munmap(g->map, g->map_len);
	free(g);
}

static void gguf_freep(struct phi_gguf **g)
{
	phi_gguf_free(*g);
	*g = NULL;
}

int phi_gguf_parse(const void *buf, size_t len, struct phi_gguf **ret, const char **ret_err)
{
	struct phi_cur c = phi_cur_init(buf, len);
	uint32_t magic, version;
	uint64_t n_t, n_kv;
	int r;

	if (cur_u32le(&c, &magic) < 0 || cur_u32le(&c, &version) < 0)
		FAIL(-EBADMSG, "gguf: file too short for a header");
	if (magic != 0x46554747)
		FAIL(-EBADMSG, "gguf: bad magic (not a GGUF file)");
	if (version == 0x03000000 || version == 0x02000000)
		FAIL(-EINVAL, "gguf: big-endian GGUF files are not supported");
	if (version != 2 && version != 3)
		FAIL(-EINVAL, "gguf: unsupported version (need 2 or 3)");
	if (cur_u64le(&c, &n_t) < 0 || cur_u64le(&c, &n_kv) < 0)
		FAIL(-EBADMSG, "gguf: file too short for a header");
	/* a KV pair takes at least 8 + 4 + 1 bytes, a tensor info 8 + 4 + 8 + 4 + 8 */
	if (n_kv > phi_cur_left(&c) / 13)
		FAIL(-EBADMSG, "gguf: metadata count exceeds the file");
	if (n_t > phi_cur_left(&c) / 32)
		FAIL(-EBADMSG, "gguf: tensor count exceeds the file");

	_cleanup_(gguf_freep) struct phi_gguf *g = calloc(1, sizeof(*g));
	if (!g)
		return -ENOMEM;
	g->base = buf;
	g->size = len;
	g->version = version;
	g->n_kv = n_kv;
	g->n_tensors = n_t;
	g->kv = calloc(n_kv ? n_kv : 1, sizeof(*g->kv));
	g->tensors = calloc(n_t ? n_t : 1, sizeof(*g->tensors));
	if (!g->kv || !g->tensors)
		return -ENOMEM;

	for (uint64_t i = 0; i < n_kv; i++) {
		struct phi_gguf_kv *kv = &g->kv[i];
		if (cur_str(&c, PHI_GGUF_MAX_KEY, &kv->key) < 0)
			FAIL(-EBADMSG, "gguf: metadata key truncated or too long");
		if (kv->key.len == 0)
			FAIL(-EBADMSG, "gguf: empty metadata key");
		if (cur_u32le(&c, &kv->type) < 0)
			FAIL(-EBADMSG, "gguf: truncated metadata type");
		if (kv->type == PHI_GV_ARRAY) {
			struct phi_cur a = c;
			if (cur_u32le(&a, &kv->arr_type) < 0 || cur_u64le(&a, &kv->arr_n) < 0)
				FAIL(-EBADMSG, "gguf: truncated array header");
		}
		size_t start = c.off;
		r = skip_value(&c, kv->type, 0, ret_err);
		if (r < 0)
			return r;
		kv->val = c.p + start + (kv->type == PHI_GV_ARRAY ? 12 : 0);
		kv->val_len = c.off - start - (kv->type == PHI_GV_ARRAY ? 12 : 0);
	}
	r = has_dups(&g->kv[0].key, sizeof(g->kv[0]), n_kv);
	if (r < 0)
		return r;
	if (r)
		FAIL(-EBADMSG, "gguf: duplicate metadata key");

	g->alignment = 32;
	const struct phi_gguf_kv *al = phi_gguf_find(g, "general.alignment");
	if (al) {
		uint32_t a;
		if (al->type != PHI_GV_U32)
			FAIL(-EBADMSG, "gguf: general.alignment is not a u32");
		memcpy(&a, al->val, 4);
		a = le32toh(a);
		if (a < 8 || a > 65536 || (a & (a - 1)))
			FAIL(-EBADMSG, "gguf: general.alignment is not a power of two in [8, 65536]");
		g->alignment = a;
	}

	for (uint64_t i = 0; i < n_t; i++) {
		struct phi_gguf_tensor *t = &g->tensors[i];
		uint32_t blck, bsz;
		if (cur_str(&c, PHI_GGUF_MAX_NAME, &t->name) < 0)
			FAIL(-EBADMSG, "gguf: tensor name truncated or longer than 64 bytes");
		if (t->name.len == 0)
			FAIL(-EBADMSG, "gguf: empty tensor name");
		if (cur_u32le(&c, &t->n_dims) < 0)
			FAIL(-EBADMSG, "gguf: truncated tensor info");
		if (t->n_dims < 1 || t->n_dims > PHI_GGUF_MAX_DIMS)
			FAIL(-EBADMSG, "gguf: tensor n_dims not in 1..4");
		uint64_t ne = 1;
		for (uint32_t d = 0; d < PHI_GGUF_MAX_DIMS; d++) {
			t->ne[d] = 1;
			if (d < t->n_dims && cur_u64le(&c, &t->ne[d]) < 0)
				FAIL(-EBADMSG, "gguf: truncated tensor dimensions");
			if (t->ne[d] == 0 || t->ne[d] > PHI_GGUF_MAX_ELEMS)
				FAIL(-EBADMSG, "gguf: tensor dimension is 0 or too large");
			if (__builtin_mul_overflow(ne, t->ne[d], &ne) || ne > PHI_GGUF_MAX_ELEMS)
				FAIL(-EBADMSG, "gguf: tensor element count too large");
		}
		t->n_elems = ne;
		if (cur_u32le(&c, &t->type) < 0 || cur_u64le(&c, &t->offset) < 0)
			FAIL(-EBADMSG, "gguf: truncated tensor info");
		if (phi_ggml_type_info(t->type, &blck, &bsz) < 0)
			FAIL(-EINVAL, "gguf: unsupported tensor type");
		if (t->ne[0] % blck)
			FAIL(-EBADMSG, "gguf: tensor row length is not a multiple of its block size");
		t->size = ne / blck * bsz; /* ne <= 2^40, bsz < 2^8: no overflow */
		if (t->offset % g->alignment)
			FAIL(-EBADMSG, "gguf: tensor offset is not aligned");
	}
	r = has_dups(&g->tensors[0].name, sizeof(g->tensors[0]), n_t);
	if (r < 0)
		return r;
	if (r)
		FAIL(-EBADMSG, "gguf: duplicate tensor name");

	uint64_t ds = c.off;
	if (ds % g->alignment)
		ds += g->alignment - ds % g->alignment;
	if (n_t && ds > len)
		FAIL(-EBADMSG, "gguf: data section starts past the end of the file");
	g->data_off = ds;
	for (uint64_t i = 0; i < n_t; i++) {
		struct phi_gguf_tensor *t = &g->tensors[i];
		uint64_t end;
		if (t->offset > len - ds || __builtin_add_overflow(t->offset, t->size, &end) ||
		    end > len - ds)
			FAIL(-EBADMSG, "gguf: tensor data lies outside the file");
		t->data = (const uint8_t *)buf + ds + t->offset;
	}
	*ret = TAKE_PTR(g);
	return 0;
}

int phi_gguf_open(const char *path, struct phi_gguf **ret, const char **ret_err)
{
	_cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	if (fd < 0)
		FAIL(phi_neg_errno(), "gguf: cannot open the model file");
	if (fstat(fd, &st) < 0)
		FAIL(phi_neg_errno(), "gguf: cannot stat the model file");
	if (!S_ISREG(st.st_mode))
		FAIL(-EINVAL, "gguf: the model is not a regular file");
	if (st.st_size < 24)
		FAIL(-EBADMSG, "gguf: file too short for a header");
	size_t len = (size_t)st.st_size;
	void *m = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
	if (m == MAP_FAILED)
		FAIL(phi_neg_errno(), "gguf: cannot mmap the model file");
	struct phi_gguf *g;
	int r = phi_gguf_parse(m, len, &g, ret_err);
	if (r < 0) {
		(void)munmap(m, len);
		return r;
	}
	g->map = m;
	g->map_len = len;
	*ret = g;
	return 0;
}

const struct phi_gguf_kv *phi_gguf_find(const struct phi_gguf *g, const char *key)
{
	for (uint64_t i = 0; i < g->n_kv; i++)
		if (phi_gguf_str_eq(g->kv[i].key, key))
			return &g->kv[i];
	return NULL;
}

const struct phi_gguf_tensor *phi_gguf_tensor(const struct phi_gguf *g, const char *name)
{
	for (uint64_t i = 0; i < g->n_tensors; i++)
		if (phi_gguf_str_eq(g->tensors[i].name, name))
			return &g->tensors[i];
	return NULL;
}

int phi_gguf_get_u64(const struct phi_gguf *g, const char *key, uint64_t *ret)
{
	const struct phi_gguf_kv *kv = phi_gguf_find(g, key);
	uint64_t v;
	if (!kv)
		return -ENOENT;
	const uint8_t *p = kv->val;
	switch (kv->type) {
	case PHI_GV_U8: v = p[0]; break;
	case PHI_GV_I8: if ((int8_t)p[0] < 0) return -EINVAL; v = p[0]; break;
	case PHI_GV_U16: v = (uint64_t)p[0] | (uint64_t)p[1] << 8; break;
	case PHI_GV_I16: if (p[1] & 0x80) return -EINVAL; v = (uint64_t)p[0] | (uint64_t)p[1] << 8; break;
	case PHI_GV_U32:
	case PHI_GV_I32: {
		uint32_t x;
		memcpy(&x, p, 4);
		x = le32toh(x);
		if (kv->type == PHI_GV_I32 && (x & 0x80000000u))
			return -EINVAL;
		v = x;
		break;
	}
	case PHI_GV_U64:
	case PHI_GV_I64: {
		uint64_t x;
		memcpy(&x, p, 8);
		x = le64toh(x);
		if (kv->type == PHI_GV_I64 && (x >> 63))
			return -EINVAL;
		v = x;
		break;
	}
	default: return -EINVAL;
	}
	*ret = v;
	return 0;
}

int phi_gguf_get_f32(const struct phi_gguf *g, const char *key, float *ret)
{
	const struct phi_gguf_kv *kv = phi_gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type == PHI_GV_F32) {
		uint32_t x;
		memcpy(&x, kv->val, 4);
		x = le32toh(x);
		memcpy(ret, &x, 4);
		return 0;
	}
	if (kv->type == PHI_GV_F64) {
		uint64_t x;
		double d;
		memcpy(&x, kv->val, 8);
		x = le64toh(x);
		memcpy(&d, &x, 8);
		*ret = (float)d;
		return 0;
	}
	return -EINVAL;
}

int phi_gguf_get_bool(const struct phi_gguf *g, const char *key, bool *ret)
{
	const struct phi_gguf_kv *kv = phi_gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != PHI_GV_BOOL)
		return -EINVAL;
	*ret = kv->val[0] != 0;
	return 0;
}

int phi_gguf_get_str(const struct phi_gguf *g, const char *key, struct phi_gguf_str *ret)
{
	const struct phi_gguf_kv *kv = phi_gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != PHI_GV_STRING)
		return -EINVAL;
	/* validated by phi_gguf_parse: a u64 length then that many bytes */
	uint64_t n;
	memcpy(&n, kv->val, 8);
	ret->len = le64toh(n);
	ret->p = (const char *)kv->val + 8;
	return 0;
}

int phi_gguf_get_strs(const struct phi_gguf *g, const char *key, struct phi_gguf_str **ret,
		      uint64_t *ret_n)
{
	const struct phi_gguf_kv *kv = phi_gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != PHI_GV_ARRAY || kv->arr_type != PHI_GV_STRING)
		return -EINVAL;
	_cleanup_free_ struct phi_gguf_str *v = calloc(kv->arr_n ? kv->arr_n : 1, sizeof(*v));
	if (!v)
		return -ENOMEM;
	struct phi_cur c = phi_cur_init(kv->val, kv->val_len);
	for (uint64_t i = 0; i < kv->arr_n; i++)
		if (cur_str(&c, UINT64_MAX, &v[i]) < 0)
			return -EBADMSG;
	*ret = TAKE_PTR(v);
	*ret_n = kv->arr_n;
	return 0;
}

int phi_gguf_get_arr(const struct phi_gguf *g, const char *key, uint32_t elem_type,
		     const void **ret, uint64_t *ret_n)
{
	const struct phi_gguf_kv *kv = phi_gguf_find(g, key);
	if (!kv)
		return -ENOENT;
	if (kv->type != PHI_GV_ARRAY || kv->arr_type != elem_type || elem_type >= PHI_GV_COUNT ||
	    !scalar_size[elem_type])
		return -EINVAL;
	*ret = kv->val;
	*ret_n = kv->arr_n;
	return 0;
}
