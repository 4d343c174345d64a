/* gguf.h: a validating GGUF (v2/v3, little-endian) reader over a memory buffer or an mmap.
 *
 * phi_gguf_parse() checks every count, length, type, offset and size before it is used
 * (see docs/engine.md for the rules); after it succeeds, every string, array and tensor
 * it hands out lies inside the buffer. The buffer must outlive the struct phi_gguf. */
#ifndef PHI_GGUF_H
#define PHI_GGUF_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum phi_gguf_vtype {
	PHI_GV_U8 = 0, PHI_GV_I8, PHI_GV_U16, PHI_GV_I16, PHI_GV_U32, PHI_GV_I32, PHI_GV_F32,
	PHI_GV_BOOL, PHI_GV_STRING, PHI_GV_ARRAY, PHI_GV_U64, PHI_GV_I64, PHI_GV_F64,
	PHI_GV_COUNT,
};

/* ggml tensor types this engine computes with (codes are ggml's). */
enum phi_ggml_type {
	PHI_T_F32 = 0,
	PHI_T_F16 = 1,
	PHI_T_Q8_0 = 8,
	PHI_T_Q4_K = 12,
	PHI_T_Q6_K = 14,
	PHI_T_BF16 = 30,
};

#define PHI_GGUF_MAX_DIMS 4
#define PHI_GGUF_MAX_NAME 64        /* tensor names, bytes */
#define PHI_GGUF_MAX_KEY 65535      /* metadata keys, bytes */
#define PHI_GGUF_MAX_NEST 2         /* arrays of arrays of scalars at most */
#define PHI_GGUF_MAX_ELEMS (1ULL << 40) /* elements in one tensor */

struct phi_gguf_str {
	const char *p; /* not NUL-terminated */
	uint64_t len;
};

struct phi_gguf_kv {
	struct phi_gguf_str key;
	uint32_t type;           /* enum phi_gguf_vtype */
	uint32_t arr_type;       /* arrays: element type */
	uint64_t arr_n;          /* arrays: element count */
	const uint8_t *val;      /* the value (arrays: the first element) */
	uint64_t val_len;        /* bytes of the value (arrays: all elements) */
};

struct phi_gguf_tensor {
	struct phi_gguf_str name;
	uint32_t type;           /* enum phi_ggml_type */
	uint32_t n_dims;
	uint64_t ne[PHI_GGUF_MAX_DIMS]; /* unused dims are 1 */
	uint64_t n_elems;
	uint64_t size;           /* bytes */
	uint64_t offset;         /* from the data section */
	const void *data;
};

struct phi_gguf {
	const uint8_t *base;
	size_t size;
	uint32_t version;
	uint32_t alignment;
	uint64_t n_kv, n_tensors;
	struct phi_gguf_kv *kv;
	struct phi_gguf_tensor *tensors;
	uint64_t data_off;
	/* phi_gguf_open() only */
	void *map;
	size_t map_len;
};

/* Block size (weights) and bytes per block of a supported tensor type; -EINVAL otherwise. */
int phi_ggml_type_info(uint32_t type, uint32_t *ret_blck, uint32_t *ret_bytes);
const char *phi_ggml_type_name(uint32_t type);

/* Parse buf[0..len). On failure returns -EBADMSG (malformed, truncated) or -EINVAL
 * (well-formed but unsupported) and, when ret_err is given, a static message. */
int phi_gguf_parse(const void *buf, size_t len, struct phi_gguf **ret, const char **ret_err);
/* mmap path read-only (O_CLOEXEC) and parse it. */
int phi_gguf_open(const char *path, struct phi_gguf **ret, const char **ret_err);
void phi_gguf_free(struct phi_gguf *g);

const struct phi_gguf_kv *phi_gguf_find(const struct phi_gguf *g, const char *key);
const struct phi_gguf_tensor *phi_gguf_tensor(const struct phi_gguf *g, const char *name);

/* Typed getters: -ENOENT if absent, -EINVAL if of an incompatible type or out of range. */
int phi_gguf_get_u64(const struct phi_gguf *g, const char *key, uint64_t *ret);
int phi_gguf_get_f32(const struct phi_gguf *g, const char *key, float *ret);
int phi_gguf_get_bool(const struct phi_gguf *g, const char *key, bool *ret);
int phi_gguf_get_str(const struct phi_gguf *g, const char *key, struct phi_gguf_str *ret);
/* An array of strings: fills out[0..n) (n = arr_n, checked by the caller with *ret_n). */
int phi_gguf_get_strs(const struct phi_gguf *g, const char *key, struct phi_gguf_str **ret,
		      uint64_t *ret_n);
/* An array of a fixed-size scalar type: returns a pointer to the raw little-endian elements. */
int phi_gguf_get_arr(const struct phi_gguf *g, const char *key, uint32_t elem_type,
		     const void **ret, uint64_t *ret_n);

static inline bool phi_gguf_str_eq(struct phi_gguf_str s, const char *z)
{
	size_t n = 0;
	while (z[n])
		n++;
	if (s.len != n)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s.p[i] != z[i])
			return false;
	return true;
}

#endif
