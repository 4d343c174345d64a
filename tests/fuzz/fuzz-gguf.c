/* fuzz-gguf: the GGUF loader over an arbitrary buffer. A parse that succeeds must hand out
 * only strings, arrays and tensors that lie inside the buffer. */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "gpurun/gguf.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static int inside(const uint8_t *b, size_t n, const void *p, uint64_t len)
{
	const uint8_t *q = p;
	return q >= b && q <= b + n && len <= (uint64_t)(b + n - q);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct phi_gguf *g = NULL;
	const char *err = NULL;
	if (size > (1 << 20))
		return 0;
	/* a private copy so that ASan sees reads past the end */
	uint8_t *buf = malloc(size ? size : 1);
	if (!buf)
		return 0;
	memcpy(buf, data, size);
	int r = phi_gguf_parse(buf, size, &g, &err);
	if (r < 0) {
		if (!err || (r != -EBADMSG && r != -EINVAL && r != -ENOMEM))
			__builtin_trap();
		free(buf);
		return 0;
	}
	for (uint64_t i = 0; i < g->n_kv; i++) {
		const struct phi_gguf_kv *kv = &g->kv[i];
		if (!inside(buf, size, kv->key.p, kv->key.len) || !inside(buf, size, kv->val, kv->val_len))
			__builtin_trap();
		if (kv->type == PHI_GV_ARRAY && kv->arr_type == PHI_GV_STRING) {
			char key[64];
			struct phi_gguf_str *s = NULL;
			uint64_t n = 0;
			if (kv->key.len >= sizeof(key))
				continue;
			memcpy(key, kv->key.p, kv->key.len);
			key[kv->key.len] = 0;
			if (phi_gguf_get_strs(g, key, &s, &n) == 0) {
				for (uint64_t j = 0; j < n; j++)
					if (!inside(buf, size, s[j].p, s[j].len))
						__builtin_trap();
			}
			free(s);
		}
	}
	for (uint64_t i = 0; i < g->n_tensors; i++) {
		const struct phi_gguf_tensor *t = &g->tensors[i];
		if (!inside(buf, size, t->data, t->size) || t->n_dims < 1 || t->n_dims > 4)
			__builtin_trap();
	}
	uint64_t v;
	float f;
	(void)phi_gguf_get_u64(g, "llama.block_count", &v);
	(void)phi_gguf_get_f32(g, "llama.rope.freq_base", &f);
	phi_gguf_free(g);
	free(buf);
	return 0;
}
