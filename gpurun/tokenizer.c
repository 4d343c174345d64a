/* tokenizer.c: SPM and byte-level BPE tokenizers (see tokenizer.h and docs/engine.md). */
#include "tokenizer.h"

#include "unicode_tab.h"
#include "util.h"

#define FAIL(code, msg)                  \
	do {                             \
		if (ret_err)             \
			*ret_err = (msg); \
		return (code);           \
	} while (0)

#define MAX_VOCAB (1u << 22)
#define MAX_TOKEN_LEN 1024

enum { TT_NORMAL = 1, TT_UNKNOWN = 2, TT_CONTROL = 3, TT_USER = 4, TT_UNUSED = 5, TT_BYTE = 6 };

struct merge_slot {
	uint64_t key; /* left << 32 | right, +1 so that 0 means empty */
	uint32_t rank;
	int32_t id;
};

struct phi_tok {
	enum phi_tok_kind kind;
	uint32_t n;
	struct phi_gguf_str *text;
	float *score;
	int32_t *type;
	int32_t *hash; /* open addressing over text, -1 empty */
	uint32_t hash_mask;
	struct merge_slot *merges;
	uint32_t merge_mask;
	int32_t bos, eos, eot, eom, unk;
	bool add_bos, add_space_prefix;
	int32_t byte_id[256];
	int32_t *special; /* control and user-defined ids, longest text first */
	uint32_t n_special;
	bool special_first[256]; /* first bytes of special texts: a quick filter */
	bool *eog;
};

static uint32_t fnv(const char *p, size_t n)
{
	uint32_t h = 2166136261u;
	for (size_t i = 0; i < n; i++)
		h = (h ^ (uint8_t)p[i]) * 16777619u;
	return h;
}

static int32_t lookup(const struct phi_tok *t, const char *p, size_t n)
{
	for (uint32_t i = fnv(p, n) & t->hash_mask;; i = (i + 1) & t->hash_mask) {
		int32_t id = t->hash[i];
		if (id < 0)
			return -1;
		if (t->text[id].len == n && memcmp(t->text[id].p, p, n) == 0)
			return id;
	}
}

static uint64_t mix64(uint64_t x)
{
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return x;
}

static const struct merge_slot *merge_find(const struct phi_tok *t, int32_t l, int32_t r)
{
	uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)r) + 1;
	for (uint32_t i = (uint32_t)mix64(key) & t->merge_mask;; i = (i + 1) & t->merge_mask) {
		if (t->merges[i].key == 0)
			return NULL;
		if (t->merges[i].key == key)
			return &t->merges[i];
	}
}

void phi_tok_free(struct phi_tok *t)
{
	if (!t)
		return;
	free(t->text);
	free(t->score);
	free(t->type);
	free(t->hash);
	free(t->merges);
	free(t->special);
	free(t->eog);
	free(t);
}

static void tok_freep(struct phi_tok **t)
{
	phi_tok_free(*t);
	*t = NULL;
}

static int32_t special_id(const struct phi_gguf *g, const char *key, uint32_t n)
{
	uint64_t v;
	if (phi_gguf_get_u64(g, key, &v) < 0 || v >= n)
		return -1;
	return (int32_t)v;
}

static int cmp_special(const void *a, const void *b, void *arg)
{
	const struct phi_tok *t = arg;
	uint64_t la = t->text[*(const int32_t *)a].len, lb = t->text[*(const int32_t *)b].len;
	if (la != lb)
		return la > lb ? -1 : 1;
	return *(const int32_t *)a - *(const int32_t *)b;
}

int phi_tok_load(const struct phi_gguf *g, struct phi_tok **ret, const char **ret_err)
{
	struct phi_gguf_str model;
	const void *arr;
	uint64_t n, an;

	if (phi_gguf_get_str(g, "tokenizer.ggml.model", &model) < 0)
		FAIL(-EINVAL, "tokenizer: tokenizer.ggml.model missing");
	_cleanup_(tok_freep) struct phi_tok *t = calloc(1, sizeof(*t));
	if (!t)
		return -ENOMEM;
	if (phi_gguf_str_eq(model, "llama"))
		t->kind = PHI_TOK_SPM;
	else if (phi_gguf_str_eq(model, "gpt2"))
		t->kind = PHI_TOK_BPE;
	else
		FAIL(-EINVAL, "tokenizer: only the llama and gpt2 tokenizer models are supported");
	if (phi_gguf_get_strs(g, "tokenizer.ggml.tokens", &t->text, &n) < 0)
		FAIL(-EINVAL, "tokenizer: tokenizer.ggml.tokens missing or not a string array");
	if (n == 0 || n > MAX_VOCAB)
		FAIL(-EINVAL, "tokenizer: vocabulary size out of range");
	t->n = (uint32_t)n;
	t->score = calloc(n, sizeof(float));
	t->type = calloc(n, sizeof(int32_t));
	t->eog = calloc(n, sizeof(bool));
	if (!t->score || !t->type || !t->eog)
		return -ENOMEM;
	for (uint64_t i = 0; i < n; i++) {
		t->type[i] = TT_NORMAL;
		if (t->text[i].len > MAX_TOKEN_LEN)
			FAIL(-EINVAL, "tokenizer: a token is longer than 1024 bytes");
	}
	if (phi_gguf_get_arr(g, "tokenizer.ggml.scores", PHI_GV_F32, &arr, &an) == 0) {
		if (an != n)
			FAIL(-EINVAL, "tokenizer: scores and tokens differ in length");
		memcpy(t->score, arr, n * sizeof(float));
	} else if (phi_gguf_find(g, "tokenizer.ggml.scores")) {
		FAIL(-EINVAL, "tokenizer: tokenizer.ggml.scores is not an f32 array");
	}
	if (phi_gguf_get_arr(g, "tokenizer.ggml.token_type", PHI_GV_I32, &arr, &an) == 0) {
		if (an != n)
			FAIL(-EINVAL, "tokenizer: token types and tokens differ in length");
		memcpy(t->type, arr, n * sizeof(int32_t));
	} else if (phi_gguf_find(g, "tokenizer.ggml.token_type")) {
		FAIL(-EINVAL, "tokenizer: tokenizer.ggml.token_type is not an i32 array");
	}

	uint32_t hs = 1;
	while (hs < 2 * n)
		hs <<= 1;
	t->hash = malloc(hs * sizeof(int32_t));
	if (!t->hash)
		return -ENOMEM;
	memset(t->hash, 0xff, hs * sizeof(int32_t));
	t->hash_mask = hs - 1;
	for (uint32_t id = 0; id < n; id++) {
		if (lookup(t, t->text[id].p, t->text[id].len) >= 0)
			continue; /* duplicate text: the first id wins */
		uint32_t i = fnv(t->text[id].p, t->text[id].len) & t->hash_mask;
		while (t->hash[i] >= 0)
			i = (i + 1) & t->hash_mask;
		t->hash[i] = (int32_t)id;
	}

	if (t->kind == PHI_TOK_BPE) {
		struct phi_gguf_str *m = NULL;
		uint64_t nm;
		if (phi_gguf_get_strs(g, "tokenizer.ggml.merges", &m, &nm) < 0)
			FAIL(-EINVAL, "tokenizer: gpt2 tokenizer without tokenizer.ggml.merges");
		uint32_t ms = 1;
		while (ms < 2 * nm + 2)
			ms <<= 1;
		t->merges = calloc(ms, sizeof(*t->merges));
		if (!t->merges || nm > MAX_VOCAB) {
			free(m);
			FAIL(t->merges ? -EINVAL : -ENOMEM, "tokenizer: too many merges");
		}
		t->merge_mask = ms - 1;
		for (uint64_t r = 0; r < nm; r++) {
			const char *p = m[r].p, *sp = memchr(p, ' ', m[r].len);
			char buf[2 * MAX_TOKEN_LEN];
			if (!sp || m[r].len > sizeof buf) {
				free(m);
				FAIL(-EINVAL, "tokenizer: a merge is not \"left right\"");
			}
			size_t ll = (size_t)(sp - p), rl = m[r].len - ll - 1;
			int32_t l = lookup(t, p, ll), rr = lookup(t, sp + 1, rl);
			memcpy(buf, p, ll);
			memcpy(buf + ll, sp + 1, rl);
			int32_t mid = lookup(t, buf, ll + rl);
			if (l < 0 || rr < 0 || mid < 0)
				continue; /* a merge whose result is not a token can never apply */
			uint64_t key = ((uint64_t)(uint32_t)l << 32 | (uint32_t)rr) + 1;
			uint32_t i = (uint32_t)mix64(key) & t->merge_mask;
			while (t->merges[i].key && t->merges[i].key != key)
				i = (i + 1) & t->merge_mask;
			if (!t->merges[i].key)
				t->merges[i] = (struct merge_slot){ key, (uint32_t)r, mid };
		}
		free(m);
	}

	t->bos = special_id(g, "tokenizer.ggml.bos_token_id", t->n);
	t->eos = special_id(g, "tokenizer.ggml.eos_token_id", t->n);
	t->eot = special_id(g, "tokenizer.ggml.eot_token_id", t->n);
	t->eom = special_id(g, "tokenizer.ggml.eom_token_id", t->n);
	t->unk = special_id(g, "tokenizer.ggml.unknown_token_id", t->n);
	if (t->unk < 0 && t->kind == PHI_TOK_SPM)
		t->unk = lookup(t, "<unk>", 5);
	t->add_bos = true;
	t->add_space_prefix = t->kind == PHI_TOK_SPM;
	(void)phi_gguf_get_bool(g, "tokenizer.ggml.add_bos_token", &t->add_bos);
	(void)phi_gguf_get_bool(g, "tokenizer.ggml.add_space_prefix", &t->add_space_prefix);

	for (int b = 0; b < 256; b++) {
		char s[8];
		snprintf(s, sizeof s, "<0x%02X>", b);
		t->byte_id[b] = lookup(t, s, 6);
	}
	static const char *const eog_text[] = { "<|eot_id|>", "<|eom_id|>", "<|endoftext|>",
						"<|im_end|>", "<|end|>", "<end_of_turn>", "<EOT>" };
	for (size_t i = 0; i < ARRAY_SIZE(eog_text); i++) {
		int32_t id = lookup(t, eog_text[i], strlen(eog_text[i]));
		if (id >= 0)
			t->eog[id] = true;
	}
	int32_t ids[3] = { t->eos, t->eot, t->eom };
	for (int i = 0; i < 3; i++)
		if (ids[i] >= 0)
			t->eog[ids[i]] = true;

	t->special = calloc(n, sizeof(int32_t));
	if (!t->special)
		return -ENOMEM;
	for (uint32_t id = 0; id < n; id++)
		if ((t->type[id] == TT_CONTROL || t->type[id] == TT_USER) && t->text[id].len > 0) {
			t->special[t->n_special++] = (int32_t)id;
			t->special_first[(uint8_t)t->text[id].p[0]] = true;
		}
	qsort_r(t->special, t->n_special, sizeof(int32_t), cmp_special, t);
	*ret = TAKE_PTR(t);
	return 0;
}

enum phi_tok_kind phi_tok_kind(const struct phi_tok *t) { return t->kind; }
uint32_t phi_tok_n_vocab(const struct phi_tok *t) { return t->n; }
int32_t phi_tok_bos(const struct phi_tok *t) { return t->bos; }
int32_t phi_tok_eos(const struct phi_tok *t) { return t->eos; }
bool phi_tok_add_bos(const struct phi_tok *t) { return t->add_bos; }

bool phi_tok_is_eog(const struct phi_tok *t, int32_t id)
{
	return id >= 0 && (uint32_t)id < t->n && t->eog[id];
}

/* ------------------------------------------------------------------ output */

struct out {
	int32_t *v;
	size_t max, n;
	int err;
};

static void emit(struct out *o, int32_t id)
{
	if (id < 0)
		return;
	if (o->n >= o->max) {
		o->err = -E2BIG;
		return;
	}
	o->v[o->n++] = id;
}

/* Length of the UTF-8 sequence at p (1 for an invalid byte) and its code point. */
static size_t utf8_next(const uint8_t *p, size_t n, uint32_t *cp)
{
	uint8_t c = p[0];
	size_t l = c < 0x80 ? 1 : (c >> 5) == 6 ? 2 : (c >> 4) == 14 ? 3 : (c >> 3) == 30 ? 4 : 0;
	if (l == 0 || l > n) {
		*cp = 0xFFFD;
		return 1;
	}
	uint32_t v = l == 1 ? c : l == 2 ? c & 0x1f : l == 3 ? c & 0x0f : c & 0x07;
	for (size_t i = 1; i < l; i++) {
		if ((p[i] & 0xc0) != 0x80) {
			*cp = 0xFFFD;
			return 1;
		}
		v = v << 6 | (p[i] & 0x3f);
	}
	*cp = v;
	return l;
}

static size_t utf8_put(uint32_t cp, char *o)
{
	if (cp < 0x80) {
		o[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		o[0] = (char)(0xc0 | cp >> 6);
		o[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		o[0] = (char)(0xe0 | cp >> 12);
		o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
		o[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	o[0] = (char)(0xf0 | cp >> 18);
	o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
	o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
	o[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* ------------------------------------------------------------------ SPM */

struct sym {
	size_t off, len;
	int prev, next;
};

/* a candidate merge of sym l with its next; stale once either side has changed */
struct bigram {
	float score;
	int l;
	size_t len; /* bytes of the merged text when queued */
	int32_t id;
};

static bool bigram_before(const struct bigram *a, const struct bigram *b)
{
	return a->score > b->score || (a->score == b->score && a->l < b->l);
}

static void heap_push(struct bigram *h, size_t *n, struct bigram x)
{
	size_t i = (*n)++;
	while (i && bigram_before(&x, &h[(i - 1) / 2])) {
		h[i] = h[(i - 1) / 2];
		i = (i - 1) / 2;
	}
	h[i] = x;
}

static struct bigram heap_pop(struct bigram *h, size_t *n)
{
	struct bigram top = h[0], x = h[--*n];
	size_t i = 0;
	for (;;) {
		size_t c = 2 * i + 1;
		if (c >= *n)
			break;
		if (c + 1 < *n && bigram_before(&h[c + 1], &h[c]))
			c++;
		if (!bigram_before(&h[c], &x))
			break;
		h[i] = h[c];
		i = c;
	}
	if (*n)
		h[i] = x;
	return top;
}

static void try_bigram(const struct phi_tok *t, const char *s, const struct sym *sy, int l,
		       struct bigram *h, size_t *n)
{
	int r = l < 0 ? -1 : sy[l].next;
	if (r < 0)
		return;
	size_t len = sy[l].len + sy[r].len;
	int32_t id = lookup(t, s + sy[l].off, len);
	if (id >= 0)
		heap_push(h, n, (struct bigram){ t->score[id], l, len, id });
}

/* llama.cpp's SPM: repeatedly merge the best-scoring adjacent pair (a heap of candidates,
 * stale entries skipped), O(n log n) */
static void spm_encode(const struct phi_tok *t, const char *text, size_t len, bool prefix, struct out *o)
{
	/* "▁" (U+2581) for every space, and one in front when asked */
	size_t cap = (len + 1) * 3;
	_cleanup_erase_ char *s = malloc(cap);
	_cleanup_erase_ struct sym *sy = calloc(len + 1, sizeof(*sy));
	/* each merge adds at most 2 candidates to the n - 1 initial ones */
	_cleanup_erase_ struct bigram *h = calloc(3 * (len + 2), sizeof(*h));
	if (!s || !sy || !h) {
		o->err = -ENOMEM;
		return;
	}
	size_t n = 0, nh = 0;
	if (prefix) {
		memcpy(s, "\xe2\x96\x81", 3);
		n = 3;
	}
	for (size_t i = 0; i < len; i++) {
		if (text[i] == ' ') {
			memcpy(s + n, "\xe2\x96\x81", 3);
			n += 3;
		} else {
			s[n++] = text[i];
		}
	}
	int ns = 0;
	for (size_t i = 0; i < n;) {
		uint32_t cp;
		size_t l = utf8_next((const uint8_t *)s + i, n - i, &cp);
		sy[ns] = (struct sym){ i, l, ns - 1, ns + 1 };
		ns++;
		i += l;
	}
	if (ns == 0)
		return;
	sy[ns - 1].next = -1;
	for (int i = 0; i + 1 < ns; i++)
		try_bigram(t, s, sy, i, h, &nh);
	while (nh) {
		struct bigram b = heap_pop(h, &nh);
		int l = b.l, r = sy[l].next;
		if (sy[l].len == 0 || r < 0 || sy[l].len + sy[r].len != b.len)
			continue; /* stale */
		sy[l].len += sy[r].len;
		sy[l].next = sy[r].next;
		if (sy[r].next >= 0)
			sy[sy[r].next].prev = l;
		sy[r].len = 0;
		try_bigram(t, s, sy, sy[l].prev, h, &nh);
		try_bigram(t, s, sy, l, h, &nh);
	}
	for (int i = 0; i >= 0; i = sy[i].next) {
		int32_t id = lookup(t, s + sy[i].off, sy[i].len);
		if (id >= 0) {
			emit(o, id);
			continue;
		}
		for (size_t k = 0; k < sy[i].len; k++) {
			int32_t b = t->byte_id[(uint8_t)s[sy[i].off + k]];
			emit(o, b >= 0 ? b : t->unk);
		}
	}
}

/* ------------------------------------------------------------------ BPE */

static bool in_ranges(const struct phi_urange *r, unsigned n, uint32_t cp)
{
	unsigned lo = 0, hi = n;
	while (lo < hi) {
		unsigned mid = (lo + hi) / 2;
		if (cp < r[mid].lo)
			hi = mid;
		else if (cp > r[mid].hi)
			lo = mid + 1;
		else
			return true;
	}
	return false;
}

static bool is_letter(uint32_t c)
{
	if (c < 0x80)
		return (c | 0x20) >= 'a' && (c | 0x20) <= 'z';
	return in_ranges(phi_u_letter, phi_u_letter_n, c);
}

static bool is_number(uint32_t c)
{
	if (c < 0x80)
		return c >= '0' && c <= '9';
	return in_ranges(phi_u_number, phi_u_number_n, c);
}

static bool is_space(uint32_t c)
{
	return (c >= 9 && c <= 13) || c == ' ' || c == 0x85 || c == 0xa0 || c == 0x1680 ||
	       (c >= 0x2000 && c <= 0x200a) || c == 0x2028 || c == 0x2029 || c == 0x202f ||
	       c == 0x205f || c == 0x3000;
}

static bool is_crlf(uint32_t c)
{
	return c == '\r' || c == '\n';
}

/* Length in code points of the Llama 3 pre-token starting at cp[i] (n > i). */
static size_t llama3_pretoken(const uint32_t *cp, size_t i, size_t n)
{
	uint32_t c = cp[i], c1 = i + 1 < n ? cp[i + 1] : 0, c2 = i + 2 < n ? cp[i + 2] : 0;
	/* '[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD] */
	if (c == '\'' && i + 1 < n) {
		uint32_t a = c1 | 0x20, b = c2 | 0x20;
		if (c1 < 0x80 && c2 < 0x80 &&
		    ((a == 'r' && b == 'e') || (a == 'v' && b == 'e') || (a == 'l' && b == 'l')))
			return 3;
		if (c1 < 0x80 && (a == 's' || a == 't' || a == 'm' || a == 'd'))
			return 2;
	}
	/* [^\r\n\p{L}\p{N}]?\p{L}+ */
	size_t j = i;
	if (!is_letter(c) && !is_number(c) && !is_crlf(c) && i + 1 < n && is_letter(c1))
		j++;
	if (is_letter(cp[j])) {
		while (j < n && is_letter(cp[j]))
			j++;
		return j - i;
	}
	/* \p{N}{1,3} */
	if (is_number(c)) {
		j = i;
		while (j < n && j - i < 3 && is_number(cp[j]))
			j++;
		return j - i;
	}
	/* ' '?[^\s\p{L}\p{N}]+[\r\n]* */
	j = i + (c == ' ' && i + 1 < n);
	if (!is_space(cp[j]) && !is_letter(cp[j]) && !is_number(cp[j])) {
		while (j < n && !is_space(cp[j]) && !is_letter(cp[j]) && !is_number(cp[j]))
			j++;
		while (j < n && is_crlf(cp[j]))
			j++;
		return j - i;
	}
	/* whitespace runs */
	size_t e = i;
	while (e < n && is_space(cp[e]))
		e++;
	if (e > i) {
		/* \s*[\r\n]+ : up to the last line break of the run */
		for (size_t k = e; k > i; k--)
			if (is_crlf(cp[k - 1]))
				return k - i;
		/* \s+(?!\S) : all of it at the end, else all but the last */
		if (e == n || e - i == 1)
			return e - i;
		return e - 1 - i;
	}
	return 1;
}

/* GPT-2 bytes_to_unicode */
static uint32_t byte_to_cp(uint8_t b)
{
	if ((b >= '!' && b <= '~') || (b >= 0xa1 && b <= 0xac) || b >= 0xae)
		return b;
	/* the other 68 bytes, in order, map to U+0100.. */
	uint32_t k = b <= ' ' ? b : b <= 0xa0 ? (uint32_t)b - 0x7f + 33 : 33 + 34;
	return 256 + k;
}

static int cp_to_byte(uint32_t cp)
{
	if ((cp >= '!' && cp <= '~') || (cp >= 0xa1 && cp <= 0xac) || (cp >= 0xae && cp <= 0xff))
		return (int)cp;
	if (cp < 256 || cp >= 256 + 68)
		return -1;
	uint32_t k = cp - 256;
	if (k <= 32)
		return (int)k;
	if (k <= 66)
		return (int)(k - 33 + 0x7f);
	return 0xad;
}

static void bpe_piece(const struct phi_tok *t, const uint8_t *p, size_t len, struct out *o)
{
	char buf[4 * 256] = { 0 };
	int32_t ids[512];
	/* long pieces (runs of letters) go in slices; no Llama 3 token is that long */
	if (len > 256) {
		bpe_piece(t, p, 256, o);
		bpe_piece(t, p + 256, len - 256, o);
		return;
	}
	size_t bl = 0;
	int n = 0;
	for (size_t i = 0; i < len; i++)
		bl += utf8_put(byte_to_cp(p[i]), buf + bl);
	int32_t whole = lookup(t, buf, bl);
	if (whole >= 0) { /* ignore_merges */
		emit(o, whole);
		return;
	}
	for (size_t i = 0; i < len; i++) {
		char c[4];
		size_t cl = utf8_put(byte_to_cp(p[i]), c);
		ids[n++] = lookup(t, c, cl);
	}
	for (;;) {
		int best = -1;
		uint32_t br = UINT32_MAX;
		int32_t bid = -1;
		for (int i = 0; i + 1 < n; i++) {
			if (ids[i] < 0 || ids[i + 1] < 0)
				continue;
			const struct merge_slot *m = merge_find(t, ids[i], ids[i + 1]);
			if (m && m->rank < br) {
				br = m->rank;
				best = i;
				bid = m->id;
			}
		}
		if (best < 0)
			break;
		ids[best] = bid;
		memmove(ids + best + 1, ids + best + 2, (size_t)(n - best - 2) * sizeof(int32_t));
		n--;
	}
	for (int i = 0; i < n; i++)
		emit(o, ids[i] >= 0 ? ids[i] : t->unk);
}

static void bpe_encode(const struct phi_tok *t, const char *text, size_t len, struct out *o)
{
	_cleanup_erase_ uint32_t *cp = calloc(len + 1, sizeof(uint32_t));
	_cleanup_erase_ size_t *off = calloc(len + 1, sizeof(size_t));
	if (!cp || !off) {
		o->err = -ENOMEM;
		return;
	}
	size_t n = 0;
	for (size_t i = 0; i < len;) {
		off[n] = i;
		i += utf8_next((const uint8_t *)text + i, len - i, &cp[n]);
		n++;
	}
	off[n] = len;
	for (size_t i = 0; i < n && !o->err;) {
		size_t k = llama3_pretoken(cp, i, n);
		bpe_piece(t, (const uint8_t *)text + off[i], off[i + k] - off[i], o);
		i += k;
	}
}

int phi_tok_encode(const struct phi_tok *t, const char *text, size_t len, bool add_bos,
		   bool parse_special, int32_t *out, size_t max, size_t *ret_n)
{
	struct out o = { .v = out, .max = max };
	if (add_bos && t->bos >= 0)
		emit(&o, t->bos);
	bool prev_special = true;
	size_t start = 0, i = 0;
	while (start < len && !o.err) {
		int32_t sp = -1;
		if (parse_special) {
			for (; i < len; i++) {
				if (!t->special_first[(uint8_t)text[i]])
					continue;
				for (uint32_t k = 0; k < t->n_special; k++) {
					const struct phi_gguf_str *s = &t->text[t->special[k]];
					if (s->len <= len - i && memcmp(text + i, s->p, s->len) == 0) {
						sp = t->special[k];
						break;
					}
				}
				if (sp >= 0)
					break;
			}
		} else {
			i = len;
		}
		if (i > start) {
			if (t->kind == PHI_TOK_SPM)
				spm_encode(t, text + start, i - start, t->add_space_prefix && prev_special, &o);
			else
				bpe_encode(t, text + start, i - start, &o);
			prev_special = false;
		}
		if (sp >= 0) {
			emit(&o, sp);
			i += t->text[sp].len;
			prev_special = true;
		}
		start = i;
	}
	if (o.err)
		return o.err;
	*ret_n = o.n;
	return 0;
}

int phi_tok_piece(const struct phi_tok *t, int32_t id, bool special, bool strip_space, char *buf,
		  size_t len, size_t *ret_n)
{
	if (id < 0 || (uint32_t)id >= t->n)
		return -EINVAL;
	const struct phi_gguf_str *s = &t->text[id];
	size_t n = 0;
	int ty = t->type[id];
	if (ty == TT_CONTROL || ty == TT_UNUSED) {
		if (special) {
			if (s->len > len)
				return -ENOBUFS;
			memcpy(buf, s->p, s->len);
			n = s->len;
		}
		*ret_n = n;
		return 0;
	}
	if (ty == TT_BYTE && s->len == 6 && memcmp(s->p, "<0x", 3) == 0) {
		unsigned v;
		char h[3] = { s->p[3], s->p[4], 0 };
		if (len < 1)
			return -ENOBUFS;
		v = (unsigned)strtoul(h, NULL, 16);
		buf[0] = (char)v;
		*ret_n = 1;
		return 0;
	}
	if (t->kind == PHI_TOK_SPM || ty == TT_USER) {
		for (size_t i = 0; i < s->len; i++) {
			if (t->kind == PHI_TOK_SPM && i + 3 <= s->len && memcmp(s->p + i, "\xe2\x96\x81", 3) == 0) {
				if (!(strip_space && n == 0)) {
					if (n >= len)
						return -ENOBUFS;
					buf[n++] = ' ';
				}
				strip_space = false;
				i += 2;
				continue;
			}
			if (n >= len)
				return -ENOBUFS;
			buf[n++] = s->p[i];
			strip_space = false;
		}
		*ret_n = n;
		return 0;
	}
	for (size_t i = 0; i < s->len;) {
		uint32_t cp;
		size_t l = utf8_next((const uint8_t *)s->p + i, s->len - i, &cp);
		int b = cp_to_byte(cp);
		if (b >= 0) {
			if (n >= len)
				return -ENOBUFS;
			buf[n++] = (char)b;
		} else {
			if (n + l > len)
				return -ENOBUFS;
			memcpy(buf + n, s->p + i, l);
			n += l;
		}
		i += l;
	}
	*ret_n = n;
	return 0;
}

int phi_tok_chat_llama3(const char *system, const char *user, char **ret)
{
	_cleanup_buf_ struct phi_buf b;
	phi_buf_init(&b, (size_t)1 << 30);
	const char *parts[] = { "<|begin_of_text|>", system ? "<|start_header_id|>system<|end_header_id|>\n\n" : "",
				system ? system : "", system ? "<|eot_id|>" : "",
				"<|start_header_id|>user<|end_header_id|>\n\n", user,
				"<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n" };
	for (size_t i = 0; i < ARRAY_SIZE(parts); i++) {
		int r = phi_buf_append(&b, parts[i], strlen(parts[i]));
		if (r < 0)
			return r;
	}
	int r = phi_buf_append(&b, "", 1);
	if (r < 0)
		return r;
	*ret = (char *)TAKE_PTR(b.p);
	return 0;
}
