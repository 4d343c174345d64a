/* cfile.c: block-authenticated file contents (format in cfile.h and docs/format.md). */
#include "cfile.h"

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include <sodium.h>

#include "util.h"

#define AAD_LEN (PHI_CF_FILE_ID + 8 + 1 + 1 + 4)
#define CHUNK_BLOCKS 256 /* blocks per store write: one 1 MiB FUSE write is one store write */

struct phi_cfile {
	struct phi_store *s;
	struct phi_store_obj *o;
	struct phi_gcm *g;
	uint64_t size;   /* plaintext */
	uint64_t ctsize; /* ciphertext */
	bool damaged;
	unsigned shift;
	uint32_t kver;
	uint8_t id[PHI_CF_FILE_ID];
	/* scratch, grown on demand up to CHUNK_BLOCKS blocks and kept for the file's life:
	 * per-call allocation of half a MiB (mmap + page faults) dominated small I/O */
	uint8_t *pt, *ct;
	size_t cap; /* blocks */
};

static inline uint64_t bsz(const struct phi_cfile *cf)
{
	return (uint64_t)1 << cf->shift;
}

static inline uint64_t ct_off(const struct phi_cfile *cf, uint64_t i)
{
	return PHI_CF_HDR + i * (bsz(cf) + PHI_GCM_OVERHEAD);
}

static inline uint64_t ct_size_for(const struct phi_cfile *cf, uint64_t size)
{
	return ct_off(cf, size >> cf->shift) + (size & (bsz(cf) - 1)) + PHI_GCM_OVERHEAD;
}

/* plaintext length of block i in a file of the given size */
static inline size_t blen(const struct phi_cfile *cf, uint64_t size, uint64_t i)
{
	uint64_t n = size >> cf->shift;
	return i < n ? (size_t)bsz(cf) : i == n ? (size_t)(size & (bsz(cf) - 1)) : 0;
}

static void mk_aad(const struct phi_cfile *cf, uint64_t i, bool final, uint8_t aad[AAD_LEN])
{
	memcpy(aad, cf->id, PHI_CF_FILE_ID);
	phi_put_u64be(aad + 16, i);
	aad[24] = final;
	aad[25] = (uint8_t)cf->shift;
	phi_put_u32be(aad + 26, cf->kver);
}

static void log_bad(const struct phi_cfile *cf, uint64_t i, const char *what)
{
	char hex[2 * PHI_CF_FILE_ID + 1];
	sodium_bin2hex(hex, sizeof(hex), cf->id, PHI_CF_FILE_ID);
	/* file id and block number only: never names or data */
	fprintf(stderr, "phifs: integrity failure: file %s block %" PRIu64 ": %s\n", hex, i, what);
}

int phi_cfile_plain_size(uint64_t ct, unsigned shift, uint64_t *ret)
{
	uint64_t B = (uint64_t)1 << shift;
	if (ct < PHI_CF_HDR + PHI_GCM_OVERHEAD)
		return -EIO;
	uint64_t x = ct - PHI_CF_HDR - PHI_GCM_OVERHEAD;
	uint64_t n = x / (B + PHI_GCM_OVERHEAD), r = x % (B + PHI_GCM_OVERHEAD);
	if (r >= B)
		return -EIO;
	*ret = n * B + r;
	return 0;
}

int phi_cfile_parse_header(const uint8_t *p, size_t len, unsigned *ret_shift,
			   uint32_t *ret_key_version, uint8_t ret_file_id[PHI_CF_FILE_ID])
{
	struct phi_cur c = phi_cur_init(p, len);
	const uint8_t *magic, *id, *rsv;
	uint16_t ver;
	uint8_t shift, flags;
	uint32_t kver;
	if (phi_cur_ref(&c, &magic, 4) < 0 || memcmp(magic, PHI_CF_MAGIC, 4) != 0)
		return -EIO;
	if (phi_cur_u16be(&c, &ver) < 0 || ver != PHI_CF_VERSION)
		return -EIO;
	if (phi_cur_u8(&c, &shift) < 0 || shift != PHI_CF_SHIFT)
		return -EIO;
	if (phi_cur_u8(&c, &flags) < 0 || flags != 0)
		return -EIO;
	if (phi_cur_u32be(&c, &kver) < 0 || kver == 0)
		return -EIO;
	if (phi_cur_ref(&c, &id, PHI_CF_FILE_ID) < 0 || phi_cur_ref(&c, &rsv, 4) < 0)
		return -EIO;
	if (rsv[0] | rsv[1] | rsv[2] | rsv[3])
		return -EIO;
	*ret_shift = shift;
	*ret_key_version = kver;
	memcpy(ret_file_id, id, PHI_CF_FILE_ID);
	return 0;
}

static int setup_key(struct phi_cfile *cf, const struct phi_key *ck)
{
	return phi_gcm_new_derived(ck, "content", cf->id, PHI_CF_FILE_ID, &cf->g);
}

void phi_cfile_free(struct phi_cfile *cf)
{
	if (!cf)
		return;
	phi_gcm_free(cf->g);
	phi_wipe_free(cf->pt, cf->cap * (size_t)bsz(cf));
	free(cf->ct);
	free(cf);
}

/* write one final block holding pt[0..len) at block index i; the store object is not truncated */
static int put_blocks(struct phi_cfile *cf, uint64_t first, size_t count, const uint8_t *pt,
		      const size_t *lens, bool last_is_final, uint8_t *ct)
{
	uint8_t aad[AAD_LEN];
	uint8_t nonces[CHUNK_BLOCKS * PHI_GCM_NONCE];
	size_t o = 0, p = 0;
	randombytes_buf(nonces, count * PHI_GCM_NONCE); /* one call for the batch */
	for (size_t k = 0; k < count; k++) {
		mk_aad(cf, first + k, last_is_final && k == count - 1, aad);
		int r = phi_gcm_seal(cf->g, nonces + k * PHI_GCM_NONCE, aad, AAD_LEN, pt + p, lens[k],
				     ct + o);
		if (r < 0)
			return r;
		p += (size_t)bsz(cf);
		o += lens[k] + PHI_GCM_OVERHEAD;
	}
	return cf->s->ops->pwrite(cf->o, ct, o, ct_off(cf, first));
}

int phi_cfile_prepare(struct phi_store *s, const struct phi_key *ck, uint32_t kver,
		      uint8_t ret_bytes[PHI_CF_EMPTY], struct phi_cfile **ret)
{
	struct phi_cfile *cf = calloc(1, sizeof(*cf));
	if (!cf)
		return -ENOMEM;
	cf->s = s;
	cf->shift = PHI_CF_SHIFT;
	cf->kver = kver;
	randombytes_buf(cf->id, sizeof(cf->id));
	int r = setup_key(cf, ck);
	uint8_t hdr[PHI_CF_EMPTY] = { 0 }, nonce[PHI_GCM_NONCE], aad[AAD_LEN];
	memcpy(hdr, PHI_CF_MAGIC, 4);
	phi_put_u16be(hdr + 4, PHI_CF_VERSION);
	hdr[6] = (uint8_t)cf->shift;
	hdr[7] = 0;
	phi_put_u32be(hdr + 8, kver);
	memcpy(hdr + 12, cf->id, PHI_CF_FILE_ID);
	if (r >= 0) {
		randombytes_buf(nonce, sizeof(nonce));
		mk_aad(cf, 0, true, aad);
		r = phi_gcm_seal(cf->g, nonce, aad, AAD_LEN, "", 0, hdr + PHI_CF_HDR);
	}
	if (r < 0) {
		phi_cfile_free(cf);
		return r;
	}
	cf->size = 0;
	cf->ctsize = PHI_CF_EMPTY;
	memcpy(ret_bytes, hdr, sizeof(hdr));
	*ret = cf;
	return 0;
}

void phi_cfile_bind(struct phi_cfile *cf, struct phi_store_obj *o)
{
	cf->o = o;
}

int phi_cfile_create(struct phi_store *s, struct phi_store_obj *o, const struct phi_key *ck,
		     uint32_t kver, struct phi_cfile **ret)
{
	uint8_t hdr[PHI_CF_EMPTY];
	struct phi_cfile *cf = NULL;
	uint64_t old = 0;
	int r = phi_cfile_prepare(s, ck, kver, hdr, &cf);
	/* new header first, then cut: a crash in between leaves the new header over old
	 * blocks, which all fail authentication (new file id), never a header-less object */
	if (r >= 0)
		r = s->ops->pwrite(o, hdr, sizeof(hdr), 0);
	if (r >= 0)
		r = s->ops->size(o, &old);
	if (r >= 0 && old > sizeof(hdr))
		r = s->ops->truncate(o, sizeof(hdr));
	if (r < 0) {
		phi_cfile_free(cf);
		return r;
	}
	phi_cfile_bind(cf, o);
	*ret = cf;
	return 0;
}

int phi_cfile_open(struct phi_store *s, struct phi_store_obj *o, phi_cf_keyfn keyfn, void *ctx,
		   struct phi_cfile **ret)
{
	uint8_t hdr[PHI_CF_HDR];
	size_t n;
	uint64_t ctsize;
	const struct phi_key *ck;
	int r = s->ops->pread(o, hdr, sizeof(hdr), 0, &n);
	if (r < 0)
		return r;
	struct phi_cfile *cf = calloc(1, sizeof(*cf));
	if (!cf)
		return -ENOMEM;
	cf->s = s;
	cf->o = o;
	r = phi_cfile_parse_header(hdr, n, &cf->shift, &cf->kver, cf->id);
	if (r < 0)
		fprintf(stderr, "phifs: integrity failure: bad content header\n");
	if (r >= 0)
		r = keyfn(ctx, cf->kver, &ck);
	if (r >= 0)
		r = setup_key(cf, ck);
	if (r >= 0)
		r = s->ops->size(o, &ctsize);
	if (r < 0) {
		phi_cfile_free(cf);
		return r;
	}
	cf->ctsize = ctsize;
	if (phi_cfile_plain_size(ctsize, cf->shift, &cf->size) < 0) {
		log_bad(cf, (ctsize - PHI_CF_HDR) / (bsz(cf) + PHI_GCM_OVERHEAD), "torn or truncated final block");
		cf->damaged = true;
		cf->size = 0;
	}
	*ret = cf;
	return 0;
}

uint64_t phi_cfile_size(const struct phi_cfile *cf)
{
	return cf->size;
}

uint32_t phi_cfile_key_version(const struct phi_cfile *cf)
{
	return cf->kver;
}

const uint8_t *phi_cfile_id(const struct phi_cfile *cf)
{
	return cf->id;
}

bool phi_cfile_damaged(const struct phi_cfile *cf)
{
	return cf->damaged;
}

/* decrypt blocks [first, first+count) of the current file into out (B bytes apart) */
static int get_blocks(struct phi_cfile *cf, uint64_t first, size_t count, uint8_t *out, uint8_t *ct)
{
	uint64_t last_index = cf->size >> cf->shift;
	size_t total = 0, n;
	for (size_t k = 0; k < count; k++)
		total += blen(cf, cf->size, first + k) + PHI_GCM_OVERHEAD;
	int r = cf->s->ops->pread(cf->o, ct, total, ct_off(cf, first), &n);
	if (r < 0)
		return r;
	if (n != total) {
		log_bad(cf, first, "short ciphertext");
		return -EIO;
	}
	uint8_t aad[AAD_LEN];
	size_t o = 0;
	for (size_t k = 0; k < count; k++) {
		uint64_t i = first + k;
		size_t l = blen(cf, cf->size, i);
		mk_aad(cf, i, i == last_index, aad);
		r = phi_gcm_open(cf->g, aad, AAD_LEN, ct + o, l + PHI_GCM_OVERHEAD, out + k * bsz(cf));
		if (r == -EBADMSG) {
			log_bad(cf, i, "authentication failed");
			return -EIO;
		}
		if (r < 0)
			return r;
		o += l + PHI_GCM_OVERHEAD;
	}
	return 0;
}

/* make room for n blocks of scratch */
static int scratch(struct phi_cfile *cf, size_t n)
{
	if (n <= cf->cap)
		return 0;
	size_t B = (size_t)bsz(cf);
	uint8_t *pt = malloc(n * B), *ct = malloc(n * (B + PHI_GCM_OVERHEAD));
	if (!pt || !ct) {
		free(pt);
		free(ct);
		return -ENOMEM;
	}
	phi_wipe_free(cf->pt, cf->cap * B);
	free(cf->ct);
	cf->pt = pt;
	cf->ct = ct;
	cf->cap = n;
	return 0;
}

/* plaintext never outlives the call that needed it */
static void scratch_wipe(struct phi_cfile *cf, size_t n)
{
	if (cf->pt)
		sodium_memzero(cf->pt, n * (size_t)bsz(cf));
}

int phi_cfile_read(struct phi_cfile *cf, void *buf, size_t len, uint64_t off, size_t *ret_n)
{
	if (cf->damaged)
		return -EIO;
	if (off >= cf->size || len == 0) {
		*ret_n = 0;
		return 0;
	}
	uint64_t end = off + len < cf->size && off + len > off ? off + len : cf->size;
	uint64_t i = off >> cf->shift, last = (end - 1) >> cf->shift;
	uint8_t *dst = buf;
	int r = 0;
	while (i <= last && r >= 0) {
		uint64_t bs = i << cf->shift;
		size_t l = blen(cf, cf->size, i);
		if (bs < off || bs + l > end) {
			/* a block only partly wanted: decrypt aside, copy the wanted part */
			r = scratch(cf, 1);
			if (r >= 0)
				r = get_blocks(cf, i, 1, cf->pt, cf->ct);
			if (r >= 0) {
				uint64_t a = off > bs ? off : bs, b = end < bs + l ? end : bs + l;
				memcpy(dst + (a - off), cf->pt + (a - bs), (size_t)(b - a));
			}
			scratch_wipe(cf, 1);
			i++;
			continue;
		}
		/* whole blocks: decrypt straight into the caller's buffer */
		size_t n = 1;
		while (n < CHUNK_BLOCKS && i + n <= last &&
		       ((i + n) << cf->shift) + blen(cf, cf->size, i + n) <= end)
			n++;
		r = scratch(cf, n);
		if (r >= 0)
			r = get_blocks(cf, i, n, dst + (bs - off), cf->ct);
		i += n;
	}
	if (r < 0) {
		sodium_memzero(buf, len);
		return r;
	}
	*ret_n = (size_t)(end - off);
	return 0;
}

/* Re-encrypt so that the file has size nsize and bytes [off, off+len) equal buf (buf NULL:
 * zeros); every byte at or past the old size and outside the write becomes zero. */
static int rewrite(struct phi_cfile *cf, const uint8_t *buf, size_t len, uint64_t off, uint64_t nsize)
{
	uint64_t S = cf->size, B = bsz(cf);
	uint64_t start = off < S ? off : S;
	/* an extension re-seals everything up to the new final block; an overwrite inside
	 * the file only the blocks it touches */
	uint64_t first = start >> cf->shift, final = nsize >> cf->shift;
	uint64_t last = nsize > S || len == 0 ? final : (off + len - 1) >> cf->shift;
	size_t lens[CHUNK_BLOCKS];
	int r = scratch(cf, (size_t)(last - first + 1 < CHUNK_BLOCKS ? last - first + 1 : CHUNK_BLOCKS));
	if (r < 0)
		return r;
	for (uint64_t i = first; i <= last;) {
		size_t count = (size_t)(last - i + 1 < CHUNK_BLOCKS ? last - i + 1 : CHUNK_BLOCKS);
		for (size_t k = 0; k < count; k++) {
			uint64_t bi = i + k, bs = bi << cf->shift;
			uint8_t *p = cf->pt + k * B;
			size_t l = blen(cf, nsize, bi), ol = blen(cf, S, bi);
			lens[k] = l;
			/* old bytes are needed unless the write covers every old byte kept */
			bool covered = off <= bs && off + len >= bs + (ol < l ? ol : l);
			if (ol > 0 && !covered) {
				r = get_blocks(cf, bi, 1, p, cf->ct);
				if (r < 0) {
					scratch_wipe(cf, count);
					return r;
				}
			}
			if (ol < B)
				memset(p + ol, 0, (size_t)(B - ol));
			if (len) {
				uint64_t a = off > bs ? off : bs, e = off + len < bs + l ? off + len : bs + l;
				if (a < e) {
					if (buf)
						memcpy(p + (a - bs), buf + (a - off), (size_t)(e - a));
					else
						memset(p + (a - bs), 0, (size_t)(e - a));
				}
			}
		}
		r = put_blocks(cf, i, count, cf->pt, lens, i + count - 1 == final, cf->ct);
		scratch_wipe(cf, count);
		if (r < 0) {
			/* the store may now hold a mix: our view is unknown, make it re-derivable */
			uint64_t cs;
			if (cf->s->ops->size(cf->o, &cs) >= 0)
				cf->ctsize = cs;
			if (phi_cfile_plain_size(cf->ctsize, cf->shift, &cf->size) < 0)
				cf->damaged = true;
			return r;
		}
		i += count;
	}
	cf->size = nsize;
	cf->ctsize = ct_size_for(cf, nsize);
	return 0;
}

int phi_cfile_write(struct phi_cfile *cf, const void *buf, size_t len, uint64_t off)
{
	if (cf->damaged)
		return -EIO;
	if (len == 0)
		return 0;
	if (off + len < off || off + len > (UINT64_C(1) << 52))
		return -EFBIG;
	uint64_t nsize = off + len > cf->size ? off + len : cf->size;
	return rewrite(cf, buf, len, off, nsize);
}

int phi_cfile_truncate(struct phi_cfile *cf, uint64_t size)
{
	if (size > (UINT64_C(1) << 52))
		return -EFBIG;
	if (cf->damaged) {
		if (size != 0)
			return -EIO;
		cf->damaged = false;
		cf->size = 0;
		size_t zero = 0;
		uint8_t ct[PHI_GCM_OVERHEAD];
		int r = put_blocks(cf, 0, 1, (const uint8_t *)"", &zero, true, ct);
		if (r >= 0)
			r = cf->s->ops->truncate(cf->o, PHI_CF_EMPTY);
		if (r < 0) {
			cf->damaged = true;
			return r;
		}
		cf->ctsize = PHI_CF_EMPTY;
		return 0;
	}
	if (size == cf->size)
		return 0;
	if (size > cf->size)
		return rewrite(cf, NULL, 0, size, size);
	/* shrink: re-seal the block that becomes final, then cut the ciphertext after it */
	uint64_t t = size >> cf->shift;
	size_t l = (size_t)(size & (bsz(cf) - 1));
	int r = scratch(cf, 1);
	if (r < 0)
		return r;
	if (l > 0) {
		r = get_blocks(cf, t, 1, cf->pt, cf->ct);
		if (r < 0)
			return r;
	}
	r = put_blocks(cf, t, 1, cf->pt, &l, true, cf->ct);
	scratch_wipe(cf, 1);
	if (r >= 0)
		r = cf->s->ops->truncate(cf->o, ct_size_for(cf, size));
	if (r < 0) {
		cf->damaged = true; /* final block rewritten but not cut: reads would fail anyway */
		return r;
	}
	cf->size = size;
	cf->ctsize = ct_size_for(cf, size);
	return 0;
}

int phi_cfile_verify(struct phi_cfile *cf, uint64_t *ret_block)
{
	if (cf->damaged) {
		*ret_block = (cf->ctsize - PHI_CF_HDR) / (bsz(cf) + PHI_GCM_OVERHEAD);
		return -EIO;
	}
	int r = scratch(cf, CHUNK_BLOCKS);
	if (r < 0)
		return r;
	uint64_t last = cf->size >> cf->shift;
	for (uint64_t i = 0; i <= last;) {
		size_t count = (size_t)(last - i + 1 < CHUNK_BLOCKS ? last - i + 1 : CHUNK_BLOCKS);
		r = get_blocks(cf, i, count, cf->pt, cf->ct);
		scratch_wipe(cf, count);
		if (r == -EIO) {
			/* find the exact block */
			for (size_t k = 0; k < count; k++)
				if (get_blocks(cf, i + k, 1, cf->pt, cf->ct) < 0) {
					*ret_block = i + k;
					return -EIO;
				}
		}
		if (r < 0)
			return r;
		i += count;
	}
	return 0;
}
