/* store_azure.c: the Azure Blob Storage store backend (az://ACCOUNT/CONTAINER[/PREFIX]).
 *
 * Layout (docs/azure-store.md): every store entry is one block blob named PREFIX/path.
 * Directories are empty marker blobs and symbolic links hold their target; the POSIX
 * attributes live in blob metadata (phimode, phiuid, phigid, phiino, phiatime, phimtime,
 * phictime, phigen). Children of a directory are found with List Blobs prefix+delimiter.
 *
 * Objects are written back: an open object caches up to OBJ_SLOTS blocks of BLOCK bytes,
 * each made of pieces (PIECE bytes, the grid of the committed Azure blocks) cached and
 * dirtied one by one; the dirty pieces of a block pushed out of the cache are staged with
 * Put Block, and fsync/release commits with Put Block List (or one Put Blob for a small
 * object) under If-Match on the ETag the object was based on, so a concurrent writer on
 * another mount is detected, never overwritten. Unchanged pieces are referenced by their
 * committed block ids, so a small write into a large object reads and uploads only the
 * pieces it touched.
 *
 * Requests are signed with Shared Key (HMAC-SHA256 of the canonical string, OpenSSL) in
 * this file, or carry a SAS token (its query parameters appended to every URL, no
 * Authorization header); libcurl moves the bytes, one easy handle per request taken from a
 * pool so connections are reused and several requests run at once. 408, 429, 5xx and transport
 * errors are retried with exponential backoff and jitter until the operation's deadline.
 *
 * Nothing here logs a blob name, a key or data: errors are reported by operation and
 * status only.
 */
#include "store_azure.h"

#include "az_journal.h"
#include "az_rcache.h"

#include <curl/curl.h>
#include <dirent.h>
#include <inttypes.h>
#include <openssl/hmac.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <sodium.h>
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>

#include "util.h"

#define BLOCK (4u << 20)        /* cache slot: the unit of caching and read-ahead */
/* Committed Azure blocks lie on a grid of pieces: PIECE bytes below FINE_END, BLOCK above */
#ifndef PHI_AZ_PIECE_SHIFT
#define PHI_AZ_PIECE_SHIFT 20 /* 1 MiB; tests/azure/bench.sh compared 1 and 2 MiB */
#endif
#define PIECE (1u << PHI_AZ_PIECE_SHIFT)
#define FINE_END (UINT64_C(16) << 30)
#define SUBS (BLOCK / PIECE)    /* pieces per cache slot below FINE_END */
#define FINE_PIECES (FINE_END / PIECE)
#define MAX_PIECES 50000        /* Azure: committed blocks per blob */
#define MAX_OBJ_SIZE (FINE_END + (MAX_PIECES - FINE_PIECES) * (uint64_t)BLOCK) /* 147.3 GiB */
#define XFER_PAR 4              /* transfers of one object in flight at once */
#define OPEN_READ 8192          /* an open reads the blob's first bytes with its properties */
#define PIECES_META_MAX 600     /* longest phipieces metadata value written */
_Static_assert(SUBS >= 1 && SUBS <= 8 && BLOCK % PIECE == 0 && FINE_END % BLOCK == 0,
	       "a slot's pieces fit the uint8_t masks of struct slot");
/* reads up to this size off the sequential path are ranged GETs, not block loads */
#define SMALL_READ (64u * 1024)
#define OBJ_SLOTS 4             /* cached blocks per open object: bounds memory to 16 MiB */
#define LIST_MAX (16u << 20)    /* largest List Blobs / Get Block List body accepted */
#define MAX_HDRS 24
#define UNLINKED_KEEP (64u << 20) /* an open object unlinked below this size stays readable */
#define ACACHE_SLOTS 2048       /* attributes remembered from listings */
#define SAS_MAX 2048            /* longest SAS query string accepted */
#define ACACHE_MS 1000          /* ...for this long, and only until this mount changes that blob */

/* ---- small helpers ---- */

static const char *const day_names[] = { "Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat" };
static const char *const mon_names[] = { "Jan", "Feb", "Mar", "Apr", "May", "Jun",
					 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec" };

/* RFC 1123 date, English whatever the locale */
static void rfc1123(char *buf, size_t size)
{
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	(void)snprintf(buf, size, "%s, %02d %s %04d %02d:%02d:%02d GMT", day_names[tm.tm_wday % 7],
		       tm.tm_mday, mon_names[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour,
		       tm.tm_min, tm.tm_sec);
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

static struct timespec now_real(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return ts;
}

/* percent-encode everything but RFC 3986 unreserved characters */
static int url_encode(const char *in, char *out, size_t size)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)in; *p; p++) {
		bool plain = (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') ||
			     (*p >= '0' && *p <= '9') || *p == '-' || *p == '_' || *p == '.' ||
			     *p == '~';
		if (o + (plain ? 1 : 3) >= size)
			return -ENAMETOOLONG;
		if (plain) {
			out[o++] = (char)*p;
		} else {
			out[o++] = '%';
			out[o++] = hex[*p >> 4];
			out[o++] = hex[*p & 15];
		}
	}
	out[o] = 0;
	return 0;
}

static bool name_char_ok(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
	       c == '_' || c == '.' || c == '-';
}

/* Same rules as the local backend (store.h): 0 or -EINVAL. */
static int path_check(const char *path, bool allow_root)
{
	if (!path)
		return -EINVAL;
	size_t len = strnlen(path, PHI_STORE_PATH_MAX);
	if (len >= PHI_STORE_PATH_MAX)
		return -EINVAL;
	if (len == 0)
		return allow_root ? 0 : -EINVAL;
	const char *p = path;
	for (;;) {
		const char *e = p;
		while (*e && *e != '/') {
			if (!name_char_ok(*e))
				return -EINVAL;
			e++;
		}
		size_t n = (size_t)(e - p);
		if (n == 0 || n > PHI_STORE_NAME_MAX)
			return -EINVAL;
		if ((n == 1 && p[0] == '.') || (n == 2 && p[0] == '.' && p[1] == '.'))
			return -EINVAL;
		if (!*e)
			return 0;
		p = e + 1;
	}
}

static void parse_ts(const char *v, struct timespec *ts);

/* ---- response parsers (XML, bounded, no allocation but the block array) ---- */

struct span {
	const char *p;
	size_t n;
};

static const char *span_find(struct span s, const char *needle)
{
	size_t nl = strlen(needle);
	if (!s.p || nl > s.n)
		return NULL;
	return memmem(s.p, s.n, needle, nl);
}

/* The content of the first <tag>...</tag> in s; <tag/> and <tag /> give an empty span.
 * -ENOENT if absent, -EBADMSG if opened but not closed. */
static int xml_elem(struct span s, const char *tag, struct span *ret, const char **ret_end)
{
	char open[64], close_[64], empty1[64], empty2[64];
	(void)snprintf(open, sizeof open, "<%s>", tag);
	(void)snprintf(close_, sizeof close_, "</%s>", tag);
	(void)snprintf(empty1, sizeof empty1, "<%s/>", tag);
	(void)snprintf(empty2, sizeof empty2, "<%s />", tag);
	const char *o = span_find(s, open);
	const char *e1 = span_find(s, empty1);
	const char *e2 = span_find(s, empty2);
	const char *e = e1 && (!e2 || e1 < e2) ? e1 : e2;
	if (e && (!o || e < o)) {
		*ret = (struct span){ e, 0 };
		if (ret_end)
			*ret_end = e + (e == e1 ? strlen(empty1) : strlen(empty2));
		return 0;
	}
	if (!o)
		return -ENOENT;
	const char *b = o + strlen(open);
	struct span rest = { b, s.n - (size_t)(b - s.p) };
	const char *c = span_find(rest, close_);
	if (!c)
		return -EBADMSG;
	*ret = (struct span){ b, (size_t)(c - b) };
	if (ret_end)
		*ret_end = c + strlen(close_);
	return 0;
}

/* decode the five XML entities into out (NUL-terminated) */
static int xml_text(struct span s, char *out, size_t size)
{
	static const struct {
		const char *ent;
		char c;
	} ents[] = { { "&amp;", '&' }, { "&lt;", '<' }, { "&gt;", '>' }, { "&quot;", '"' },
		     { "&apos;", '\'' } };
	size_t o = 0;
	for (size_t i = 0; i < s.n;) {
		char c = s.p[i];
		if (c == '<')
			return -EBADMSG;
		if (c == '&') {
			size_t k;
			for (k = 0; k < ARRAY_SIZE(ents); k++) {
				size_t el = strlen(ents[k].ent);
				if (s.n - i >= el && !memcmp(s.p + i, ents[k].ent, el))
					break;
			}
			if (k == ARRAY_SIZE(ents))
				return -EBADMSG;
			c = ents[k].c;
			i += strlen(ents[k].ent);
		} else {
			if (c == 0)
				return -EBADMSG;
			i++;
		}
		if (o + 1 >= size)
			return -ENAMETOOLONG;
		out[o++] = c;
	}
	out[o] = 0;
	return 0;
}

static int xml_u64(struct span s, uint64_t *ret)
{
	char buf[24];
	int r = xml_text(s, buf, sizeof buf);
	if (r < 0)
		return r == -ENAMETOOLONG ? -EBADMSG : r;
	r = phi_parse_u64(buf, UINT64_MAX, ret);
	return r < 0 ? -EBADMSG : 0;
}

int phi_az_parse_list(const char *xml, size_t len, phi_az_entry_fn fn, void *ctx, char *next,
		      size_t size)
{
	if ((!xml && len) || !fn || !next || !size)
		return -EINVAL;
	struct span all = { xml ? xml : "", len }, blobs;
	if (!span_find(all, "<EnumerationResults"))
		return -EBADMSG;
	int r = xml_elem(all, "Blobs", &blobs, NULL);
	if (r == -ENOENT)
		blobs = (struct span){ all.p, 0 };
	else if (r < 0)
		return r;
	char name[PHI_STORE_PATH_MAX + 512];
	struct span rest = blobs;
	while (rest.n) {
		const char *b = span_find(rest, "<Blob>");
		const char *p = span_find(rest, "<BlobPrefix>");
		if (!b && !p)
			break;
		bool is_prefix = p && (!b || p < b);
		struct span item, nm;
		const char *end;
		struct span from = { is_prefix ? p : b, rest.n - (size_t)((is_prefix ? p : b) - rest.p) };
		r = xml_elem(from, is_prefix ? "BlobPrefix" : "Blob", &item, &end);
		if (r < 0)
			return -EBADMSG;
		r = xml_elem(item, "Name", &nm, NULL);
		if (r < 0)
			return -EBADMSG;
		r = xml_text(nm, name, sizeof name);
		if (r < 0)
			return r;
		struct phi_az_entry e = { .name = name, .is_prefix = is_prefix };
		if (!is_prefix) {
			struct span v;
			if (xml_elem(item, "Content-Length", &v, NULL) == 0 && xml_u64(v, &e.size) < 0)
				return -EBADMSG;
			uint64_t m;
			unsigned seen = 0;
			if (xml_elem(item, "phimode", &v, NULL) == 0) {
				if (xml_u64(v, &m) < 0 || m > UINT32_MAX)
					return -EBADMSG;
				e.mode = (uint32_t)m;
				seen |= 1;
			}
			if (xml_elem(item, "phiuid", &v, NULL) == 0 && xml_u64(v, &m) == 0 && m <= UINT32_MAX) {
				e.uid = (uint32_t)m;
				seen |= 2;
			}
			if (xml_elem(item, "phigid", &v, NULL) == 0 && xml_u64(v, &m) == 0 && m <= UINT32_MAX) {
				e.gid = (uint32_t)m;
				seen |= 4;
			}
			if (xml_elem(item, "phiino", &v, NULL) == 0 && xml_u64(v, &e.ino) == 0)
				seen |= 8;
			if (xml_elem(item, "phigen", &v, NULL) == 0)
				(void)xml_u64(v, &e.gen);
			static const char *const tn[] = { "phiatime", "phimtime", "phictime" };
			struct timespec *tv[] = { &e.atime, &e.mtime, &e.ctime };
			for (size_t k = 0; k < 3; k++) {
				char tb[48];
				if (xml_elem(item, tn[k], &v, NULL) == 0 && xml_text(v, tb, sizeof tb) == 0) {
					parse_ts(tb, tv[k]);
					seen |= 16u << k;
				}
			}
			e.full_meta = seen == 127;
		}
		r = fn(ctx, &e);
		if (r < 0)
			return r;
		rest = (struct span){ end, rest.n - (size_t)(end - rest.p) };
	}
	struct span nmk;
	next[0] = 0;
	r = xml_elem(all, "NextMarker", &nmk, NULL);
	if (r == 0)
		return xml_text(nmk, next, size);
	return r == -ENOENT ? 0 : r;
}

int phi_az_parse_blocklist(const char *xml, size_t len, struct phi_az_block **ret,
			   size_t *ret_n)
{
	if ((!xml && len) || !ret || !ret_n)
		return -EINVAL;
	struct span all = { xml ? xml : "", len }, com;
	if (!span_find(all, "<BlockList"))
		return -EBADMSG;
	int r = xml_elem(all, "CommittedBlocks", &com, NULL);
	if (r == -ENOENT)
		com = (struct span){ all.p, 0 };
	else if (r < 0)
		return r;
	_cleanup_free_ struct phi_az_block *v = NULL;
	size_t n = 0, cap = 0;
	struct span rest = com;
	for (;;) {
		struct span item, f;
		const char *end;
		r = xml_elem(rest, "Block", &item, &end);
		if (r == -ENOENT)
			break;
		if (r < 0)
			return r;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 16;
			if (nc > LIST_MAX / sizeof *v)
				return -E2BIG;
			struct phi_az_block *nv = realloc(v, nc * sizeof *v);
			if (!nv)
				return -ENOMEM;
			v = nv;
			cap = nc;
		}
		if (xml_elem(item, "Name", &f, NULL) < 0)
			return -EBADMSG;
		r = xml_text(f, v[n].id, sizeof v[n].id);
		if (r < 0)
			return r == -ENAMETOOLONG ? -EBADMSG : r;
		if (xml_elem(item, "Size", &f, NULL) < 0 || xml_u64(f, &v[n].size) < 0)
			return -EBADMSG;
		n++;
		rest = (struct span){ end, rest.n - (size_t)(end - rest.p) };
	}
	*ret = TAKE_PTR(v);
	*ret_n = n;
	return 0;
}

/* ---- the store ---- */

struct meta {
	uint32_t mode, uid, gid;
	uint64_t ino;
	struct timespec atime, mtime, ctime;
	uint64_t gen; /* content generation: changes on every content commit */
};

struct curl_pool_entry {
	CURL *h;
	struct curl_pool_entry *next;
};

struct az_store {
	struct phi_store base; /* first */
	char account[64];
	char container[64];
	char prefix[1024];     /* "" or "p/q" without slashes at the ends */
	char base_url[512];    /* scheme://host[:port][/account] without a trailing slash */
	char canon_base[600];  /* "/account" + URL path of base_url, for signing */
	uint8_t *key;          /* sodium_malloc'd decoded account key; NULL with a SAS */
	size_t key_len;
	char *sas;             /* sodium_malloc'd SAS query string without '?'; NULL with a key */
	bool sas_refused;      /* a 403 under the SAS was logged (once per store, atomic) */
	uint64_t deadline_ms;  /* per operation, retries included */

	pthread_mutex_t pool_lock; /* guards pool; never held across anything else */
	struct curl_pool_entry *pool;
	pthread_mutex_t lock;  /* guards open; taken before an object's lock */
	struct phi_store_obj *open; /* every open object (write-back state, renames, unlinks) */

	/* Attributes seen in the last listing, so that the getattr of every entry after a
	 * readdir (ls -l, FUSE readdirplus) needs no HEAD; also those of recent getattr and
	 * parent-check HEADs and of blobs this mount just created (head_cached, az_create). An
	 * entry is used only within ACACHE_MS; every PUT or DELETE this mount sends removes the
	 * entry of the blob it names and bumps gen, and an answer is cached only if gen did not
	 * move while it was fetched, so the mount never sees its own changes late. Other
	 * mounts' changes: up to 1 s. */
	pthread_mutex_t cache_lock;
	uint64_t gen;
	struct acache_ent *cache; /* ACACHE_SLOTS, direct-mapped by name hash */

	uint64_t st_requests, st_up, st_down; /* phi_az_stats, atomic */

	struct phi_ajd *jd; /* the write journal's directory; NULL: cache_dir=none, not started */
	char cache_dir[256]; /* options kept for az_start */
	uint64_t cache_max, rcache_max;
	struct phi_rc *rc; /* the read cache; NULL: none */
};

struct acache_ent {
	char *name;
	uint64_t gen, expires, size;
	struct meta m;
};

struct slot {
	uint64_t idx;
	uint8_t *buf; /* BLOCK bytes */
	bool used;
	uint8_t present; /* per piece (sub-unit) of the slot: buf holds its bytes */
	uint8_t dirty;   /* per piece: changed since it was last staged (a subset of present) */
	uint64_t tick;
};

struct phi_store_obj {
	struct az_store *s;
	struct phi_store_obj *next; /* in s->open */
	pthread_mutex_t lock;
	char name[PHI_STORE_PATH_MAX + 1100]; /* blob name; changed by rename (under s->lock) */
	bool writable;
	bool write_intent; /* the caller has a write-only handle (phi_store_ops.write_intent) */
	bool unlinked;  /* deleted while open: commits are dropped */
	int err;        /* first deferred write error */

	char etag[96];  /* of the committed version this state is based on */
	struct meta meta;
	uint64_t size;  /* current logical size */
	uint64_t csize; /* committed blob size */
	uint64_t low;   /* committed bytes still valid: [0, min(csize, low)) */
	bool dirty;     /* something to commit */
	bool meta_fresh_after_write; /* metadata adopted after the last write */
	struct timespec wtime;        /* time of the last write */

	struct slot slots[OBJ_SLOTS];
	uint64_t tick;
	uint32_t *staged; /* per piece: length staged (uncommitted) under our id, 0 if not */
	size_t staged_cap;
	struct phi_az_block *committed; /* committed block list, when known */
	size_t ncommitted;
	bool committed_known;
	uint32_t session; /* in our block ids */
	bool committed_from_meta; /* the committed list came from phipieces, not Get Block List */
	char pieces[PIECES_META_MAX + 1]; /* phipieces of the version opened, until used */
	uint8_t head[OPEN_READ]; /* the first head_len bytes, read by the open; dropped by any */
	size_t head_len;         /* write or truncate */
	uint64_t next_read; /* block a sequential reader asks for next (0: nothing read yet) */
	struct phi_aj *j;   /* journal of the writes since the last commit, NULL: none */
	bool replaying;     /* applying a dead mount's journal: not journaled again */
};

static struct az_store *to_az(struct phi_store *s)
{
	return (struct az_store *)s;
}

/* blob name of a store path: PREFIX/path, or path */
static int blob_name(const struct az_store *s, const char *path, char *out, size_t size)
{
	int n = *s->prefix ? snprintf(out, size, "%s%s%s", s->prefix, *path ? "/" : "", path)
			   : snprintf(out, size, "%s", path);
	return n >= 0 && (size_t)n < size ? 0 : -ENAMETOOLONG;
}

/* ---- HTTP ---- */

struct hdr {
	char name[48]; /* lower case */
	char value[640];
};

struct req {
	const char *method;
	char path[PHI_STORE_PATH_MAX + 1300]; /* URL path below base_url, e.g. "/c/blob"; as sent */
	struct {
		const char *name;
		char value[PHI_STORE_PATH_MAX + 1100]; /* decoded */
	} query[6];
	size_t nquery;
	struct hdr hdrs[MAX_HDRS];
	size_t nhdrs;
	const void *body;
	size_t body_len;
	bool head;

	/* response */
	long status;
	char etag[96];
	char error_code[64];
	char copy_status[32];
	uint64_t content_length;
	bool have_length;
	struct meta meta;
	bool have_meta_mode;
	unsigned meta_seen; /* bitmask of metadata fields present */
	uint64_t range_total; /* the blob's size from Content-Range */
	bool have_range;
	char pieces[PIECES_META_MAX + 1]; /* x-ms-meta-phipieces, "" if none */

	/* body sink: fixed buffer (buf/cap), scattered over iov (niov buffers, cap bytes in
	 * all), or growable (grow) */
	uint8_t *buf;
	const struct iovec *iov;
	size_t niov;
	size_t cap, got;
	bool overflow;
	struct phi_buf *grow;
	CURL *h; /* during an attempt */
};

enum { M_MODE = 1, M_UID = 2, M_GID = 4, M_INO = 8, M_AT = 16, M_MT = 32, M_CT = 64, M_GEN = 128 };

static int req_hdr(struct req *q, const char *name, const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));
static int req_hdr(struct req *q, const char *name, const char *fmt, ...)
{
	if (q->nhdrs >= MAX_HDRS)
		return -E2BIG;
	struct hdr *h = &q->hdrs[q->nhdrs];
	(void)snprintf(h->name, sizeof h->name, "%s", name);
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(h->value, sizeof h->value, fmt, ap);
	va_end(ap);
	if (n < 0 || (size_t)n >= sizeof h->value)
		return -E2BIG;
	q->nhdrs++;
	return 0;
}

static int req_query(struct req *q, const char *name, const char *value)
{
	if (q->nquery >= ARRAY_SIZE(q->query))
		return -E2BIG;
	q->query[q->nquery].name = name;
	int n = snprintf(q->query[q->nquery].value, sizeof q->query[0].value, "%s", value);
	if (n < 0 || (size_t)n >= sizeof q->query[0].value)
		return -ENAMETOOLONG;
	q->nquery++;
	return 0;
}

static const char *req_get_hdr(const struct req *q, const char *name)
{
	for (size_t i = 0; i < q->nhdrs; i++)
		if (!strcmp(q->hdrs[i].name, name))
			return q->hdrs[i].value;
	return "";
}

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* Shared Key: HMAC-SHA256 over the canonical string; writes the Authorization value. */
static int sign(const struct az_store *s, const struct req *q, char *auth, size_t auth_size)
{
	_cleanup_buf_ struct phi_buf sts;
	phi_buf_init(&sts, 64u << 10);
	char clen[24] = "";
	if (q->body_len)
		(void)snprintf(clen, sizeof clen, "%zu", q->body_len);
	const char *std[] = { "content-encoding", "content-language", NULL, "content-md5",
			      "content-type", "date", "if-modified-since", "if-match",
			      "if-none-match", "if-unmodified-since", "range" };
	int r = phi_buf_append(&sts, q->method, strlen(q->method));
	r = r < 0 ? r : phi_buf_append(&sts, "\n", 1);
	for (size_t i = 0; r >= 0 && i < ARRAY_SIZE(std); i++) {
		const char *v = std[i] ? req_get_hdr(q, std[i]) : clen;
		r = phi_buf_append(&sts, v, strlen(v));
		r = r < 0 ? r : phi_buf_append(&sts, "\n", 1);
	}
	/* canonical x-ms-* headers, sorted by name */
	const char *names[MAX_HDRS];
	size_t nn = 0;
	for (size_t i = 0; i < q->nhdrs; i++)
		if (!strncmp(q->hdrs[i].name, "x-ms-", 5))
			names[nn++] = q->hdrs[i].name;
	qsort(names, nn, sizeof names[0], cmp_str);
	for (size_t i = 0; r >= 0 && i < nn; i++) {
		const char *v = req_get_hdr(q, names[i]);
		r = phi_buf_append(&sts, names[i], strlen(names[i]));
		r = r < 0 ? r : phi_buf_append(&sts, ":", 1);
		r = r < 0 ? r : phi_buf_append(&sts, v, strlen(v));
		r = r < 0 ? r : phi_buf_append(&sts, "\n", 1);
	}
	/* canonical resource: /account + URL path, then the query sorted by name, decoded */
	if (r >= 0)
		r = phi_buf_append(&sts, s->canon_base, strlen(s->canon_base));
	if (r >= 0)
		r = phi_buf_append(&sts, q->path, strlen(q->path));
	const char *qn[ARRAY_SIZE(q->query)];
	for (size_t i = 0; i < q->nquery; i++)
		qn[i] = q->query[i].name;
	qsort(qn, q->nquery, sizeof qn[0], cmp_str);
	for (size_t i = 0; r >= 0 && i < q->nquery; i++) {
		const char *v = "";
		for (size_t k = 0; k < q->nquery; k++)
			if (q->query[k].name == qn[i])
				v = q->query[k].value;
		r = phi_buf_append(&sts, "\n", 1);
		r = r < 0 ? r : phi_buf_append(&sts, qn[i], strlen(qn[i]));
		r = r < 0 ? r : phi_buf_append(&sts, ":", 1);
		r = r < 0 ? r : phi_buf_append(&sts, v, strlen(v));
	}
	if (r < 0)
		return r;
	uint8_t mac[EVP_MAX_MD_SIZE];
	unsigned maclen = 0;
	if (!HMAC(EVP_sha256(), s->key, (int)s->key_len, sts.p, sts.len, mac, &maclen))
		return -EIO;
	char b64[64];
	sodium_bin2base64(b64, sizeof b64, mac, maclen, sodium_base64_VARIANT_ORIGINAL);
	sodium_memzero(mac, sizeof mac);
	int n = snprintf(auth, auth_size, "SharedKey %s:%s", s->account, b64);
	return n > 0 && (size_t)n < auth_size ? 0 : -E2BIG;
}

static size_t on_body(char *p, size_t sz, size_t nm, void *ud)
{
	struct req *q = ud;
	size_t n = sz * nm;
	long st = 0;
	/* an error's XML body is not the data asked for: drop it */
	if (curl_easy_getinfo(q->h, CURLINFO_RESPONSE_CODE, &st) == CURLE_OK && st >= 300)
		return n;
	if (q->grow) {
		if (phi_buf_append(q->grow, p, n) < 0) {
			q->overflow = true;
			return 0;
		}
		return n;
	}
	if (!q->buf && !q->iov) /* error bodies of requests that expect none */
		return n;
	if (n > q->cap - q->got) {
		q->overflow = true;
		return 0;
	}
	if (q->buf) {
		memcpy(q->buf + q->got, p, n);
		q->got += n;
		return n;
	}
	/* scattered: find the buffer at offset got, then copy across buffer ends */
	size_t at = q->got, k = 0;
	while (k < q->niov && at >= q->iov[k].iov_len)
		at -= q->iov[k++].iov_len;
	for (size_t left = n; left; k++, at = 0) {
		size_t c = q->iov[k].iov_len - at < left ? q->iov[k].iov_len - at : left;
		memcpy((uint8_t *)q->iov[k].iov_base + at, p, c);
		p += c;
		left -= c;
	}
	q->got += n;
	return n;
}

static void parse_ts(const char *v, struct timespec *ts)
{
	char *end;
	errno = 0;
	long long sec = strtoll(v, &end, 10);
	long nsec = 0;
	if (*end == '.')
		nsec = strtol(end + 1, NULL, 10);
	if (errno || nsec < 0 || nsec > 999999999)
		return;
	*ts = (struct timespec){ .tv_sec = (time_t)sec, .tv_nsec = nsec };
}

static size_t on_header(char *p, size_t sz, size_t nm, void *ud)
{
	struct req *q = ud;
	size_t n = sz * nm;
	char line[1024];
	if (n >= sizeof line)
		return n;
	memcpy(line, p, n);
	line[n] = 0;
	if (!strncmp(line, "HTTP/", 5)) { /* a new response (after a 100 or a redirect) */
		q->meta_seen = 0;
		q->etag[0] = q->pieces[0] = 0;
		q->have_range = false;
		return n;
	}
	char *colon = strchr(line, ':');
	if (!colon)
		return n;
	*colon = 0;
	char *v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	size_t vl = strlen(v);
	while (vl && (v[vl - 1] == '\r' || v[vl - 1] == '\n' || v[vl - 1] == ' '))
		v[--vl] = 0;
	for (char *c = line; *c; c++)
		if (*c >= 'A' && *c <= 'Z')
			*c = (char)(*c - 'A' + 'a');
	uint64_t u;
	if (!strcmp(line, "etag"))
		(void)snprintf(q->etag, sizeof q->etag, "%s", v);
	else if (!strcmp(line, "x-ms-error-code"))
		(void)snprintf(q->error_code, sizeof q->error_code, "%s", v);
	else if (!strcmp(line, "x-ms-copy-status"))
		(void)snprintf(q->copy_status, sizeof q->copy_status, "%s", v);
	else if (!strcmp(line, "content-length") && phi_parse_u64(v, UINT64_MAX, &u) == 0) {
		q->content_length = u;
		q->have_length = true;
	} else if (!strcmp(line, "content-range")) { /* bytes FIRST-LAST/TOTAL */
		const char *sl = strrchr(v, '/');
		if (!strncmp(v, "bytes ", 6) && sl && phi_parse_u64(sl + 1, UINT64_MAX, &u) == 0) {
			q->range_total = u;
			q->have_range = true;
		}
	} else if (!strcmp(line, "x-ms-meta-phipieces")) {
		if (vl < sizeof q->pieces)
			memcpy(q->pieces, v, vl + 1);
	} else if (!strncmp(line, "x-ms-meta-", 10)) {
		const char *k = line + 10;
		if (!strcmp(k, "phimode") && phi_parse_u64(v, UINT32_MAX, &u) == 0) {
			q->meta.mode = (uint32_t)u;
			q->meta_seen |= M_MODE;
		} else if (!strcmp(k, "phiuid") && phi_parse_u64(v, UINT32_MAX, &u) == 0) {
			q->meta.uid = (uint32_t)u;
			q->meta_seen |= M_UID;
		} else if (!strcmp(k, "phigid") && phi_parse_u64(v, UINT32_MAX, &u) == 0) {
			q->meta.gid = (uint32_t)u;
			q->meta_seen |= M_GID;
		} else if (!strcmp(k, "phiino") && phi_parse_u64(v, UINT64_MAX, &u) == 0) {
			q->meta.ino = u;
			q->meta_seen |= M_INO;
		} else if (!strcmp(k, "phigen") && phi_parse_u64(v, UINT64_MAX, &u) == 0) {
			q->meta.gen = u;
			q->meta_seen |= M_GEN;
		} else if (!strcmp(k, "phiatime")) {
			parse_ts(v, &q->meta.atime);
			q->meta_seen |= M_AT;
		} else if (!strcmp(k, "phimtime")) {
			parse_ts(v, &q->meta.mtime);
			q->meta_seen |= M_MT;
		} else if (!strcmp(k, "phictime")) {
			parse_ts(v, &q->meta.ctime);
			q->meta_seen |= M_CT;
		}
	}
	return n;
}

static CURL *pool_get(struct az_store *s)
{
	pthread_mutex_lock(&s->pool_lock);
	struct curl_pool_entry *e = s->pool;
	if (e)
		s->pool = e->next;
	pthread_mutex_unlock(&s->pool_lock);
	if (e) {
		CURL *h = e->h;
		free(e);
		return h;
	}
	return curl_easy_init();
}

static void pool_put(struct az_store *s, CURL *h)
{
	struct curl_pool_entry *e = malloc(sizeof *e);
	if (!e) {
		curl_easy_cleanup(h);
		return;
	}
	e->h = h;
	pthread_mutex_lock(&s->pool_lock);
	e->next = s->pool;
	s->pool = e;
	pthread_mutex_unlock(&s->pool_lock);
}

static uint32_t rnd32(void)
{
	return randombytes_random();
}

static bool retryable_status(long st)
{
	return st == 408 || st == 429 || st == 500 || st == 502 || st == 503 || st == 504;
}

/* The SAS reason code of a 403 for the log: the service's x-ms-error-code if it is a plain
 * word (it comes from the network), else the status. */
static const char *refusal_code(const struct req *q)
{
	if (!q->error_code[0])
		return "HTTP 403";
	for (const char *c = q->error_code; *c; c++)
		if (!((*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
			return "HTTP 403";
	return q->error_code;
}

/* curl copies header lines into the list; a SAS in one (x-ms-copy-source) or the Authorization
 * value should not linger in freed heap memory */
static void slist_free_wiped(struct curl_slist *hl)
{
	for (struct curl_slist *t = hl; t; t = t->next)
		sodium_memzero(t->data, strlen(t->data));
	curl_slist_free_all(hl);
}

/* One attempt. Returns 0 with q->status set, or a transport error -errno. */
static int attempt(struct az_store *s, struct req *q, uint64_t left_ms)
{
	/* room for the SAS, appended only when the URL is handed to curl (below) */
	char url[sizeof s->base_url + sizeof q->path + 6 * (PHI_STORE_PATH_MAX + 64) + SAS_MAX + 2];
	int n = snprintf(url, sizeof url, "%s%s", s->base_url, q->path);
	if (n < 0 || (size_t)n >= sizeof url - SAS_MAX - 2)
		return -ENAMETOOLONG;
	size_t off = (size_t)n;
	for (size_t i = 0; i < q->nquery; i++) {
		char enc[3 * (PHI_STORE_PATH_MAX + 1100)];
		int r = url_encode(q->query[i].value, enc, sizeof enc);
		if (r < 0)
			return r;
		n = snprintf(url + off, sizeof url - SAS_MAX - 2 - off, "%c%s=%s", i ? '&' : '?',
			     q->query[i].name, enc);
		if (n < 0 || (size_t)n >= sizeof url - SAS_MAX - 2 - off)
			return -ENAMETOOLONG;
		off += (size_t)n;
	}

	char date[64], auth[256] = "";
	rfc1123(date, sizeof date);
	size_t keep = q->nhdrs;
	int r = req_hdr(q, "x-ms-date", "%s", date);
	r = r < 0 ? r : req_hdr(q, "x-ms-version", "2021-12-02");
	/* with a SAS the token in the URL authorizes the request: nothing to sign */
	if (r >= 0 && !s->sas)
		r = sign(s, q, auth, sizeof auth);
	if (r < 0) {
		q->nhdrs = keep;
		return r;
	}

	struct curl_slist *hl = NULL, *t;
	char line[sizeof q->hdrs[0].name + sizeof q->hdrs[0].value + SAS_MAX + 8];
	bool ok = true;
	for (size_t i = 0; ok && i < q->nhdrs; i++) {
		const char *v = q->hdrs[i].value;
		if (s->sas && !strcmp(q->hdrs[i].name, "x-ms-copy-source"))
			/* the source of a copy is read with the same SAS (it needs r): the
			 * service does not authorize it through the destination's token */
			(void)snprintf(line, sizeof line, "%s: %s%c%s", q->hdrs[i].name, v,
				       strchr(v, '?') ? '&' : '?', s->sas);
		else
			(void)snprintf(line, sizeof line, "%s: %s", q->hdrs[i].name, v);
		ok = (t = curl_slist_append(hl, line)) != NULL;
		hl = ok ? t : hl;
	}
	q->nhdrs = keep;
	(void)snprintf(line, sizeof line, "authorization: %s", auth);
	const char *extra[] = { line, "Expect:", "Content-Type:", "Accept:" };
	for (size_t i = s->sas ? 1 : 0; ok && i < ARRAY_SIZE(extra); i++) {
		if (!strcmp(extra[i], "Content-Type:") && *req_get_hdr(q, "content-type"))
			continue;
		ok = (t = curl_slist_append(hl, extra[i])) != NULL;
		hl = ok ? t : hl;
	}
	sodium_memzero(line, sizeof line);
	sodium_memzero(auth, sizeof auth);
	if (!ok) {
		slist_free_wiped(hl);
		return -ENOMEM;
	}

	CURL *h = pool_get(s);
	if (!h) {
		slist_free_wiped(hl);
		return -ENOMEM;
	}
	curl_easy_reset(h);
	q->h = h;
	q->status = 0;
	q->etag[0] = q->error_code[0] = q->copy_status[0] = 0;
	q->have_length = q->have_range = false;
	q->pieces[0] = 0;
	q->meta_seen = 0;
	q->got = 0;
	q->overflow = false;
	if (q->grow)
		q->grow->len = 0;

	if (s->sas) /* after the request's own parameters; room was kept above */
		(void)snprintf(url + off, sizeof url - off, "%c%s", q->nquery ? '&' : '?', s->sas);
	/* curl keeps its own copy of the URL: ours need not outlive this call */
	(void)curl_easy_setopt(h, CURLOPT_URL, url);
	sodium_memzero(url, sizeof url);
	(void)curl_easy_setopt(h, CURLOPT_HTTPHEADER, hl);
	(void)curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	(void)curl_easy_setopt(h, CURLOPT_PROTOCOLS_STR, "http,https");
	(void)curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(left_ms < 5000 ? left_ms : 5000));
	(void)curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)(left_ms ? left_ms : 1));
	/* a server that stops moving bytes is a failed attempt, not a hang */
	(void)curl_easy_setopt(h, CURLOPT_LOW_SPEED_LIMIT, 1L);
	(void)curl_easy_setopt(h, CURLOPT_LOW_SPEED_TIME, 10L);
	(void)curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	(void)curl_easy_setopt(h, CURLOPT_HEADERDATA, q);
	(void)curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	(void)curl_easy_setopt(h, CURLOPT_WRITEDATA, q);
	if (q->head) {
		(void)curl_easy_setopt(h, CURLOPT_NOBODY, 1L);
	} else if (!strcmp(q->method, "GET")) {
		(void)curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	} else {
		(void)curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, q->method);
		if (!strcmp(q->method, "PUT")) {
			(void)curl_easy_setopt(h, CURLOPT_POSTFIELDS, q->body ? q->body : "");
			(void)curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE_LARGE, (curl_off_t)q->body_len);
		}
	}
	CURLcode cc = curl_easy_perform(h);
	long st = 0;
	(void)curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &st);
	curl_off_t up = 0, down = 0;
	(void)curl_easy_getinfo(h, CURLINFO_SIZE_UPLOAD_T, &up);
	(void)curl_easy_getinfo(h, CURLINFO_SIZE_DOWNLOAD_T, &down);
	__atomic_add_fetch(&s->st_requests, 1, __ATOMIC_RELAXED);
	__atomic_add_fetch(&s->st_up, (uint64_t)(up > 0 ? up : 0), __ATOMIC_RELAXED);
	__atomic_add_fetch(&s->st_down, (uint64_t)(down > 0 ? down : 0), __ATOMIC_RELAXED);
	(void)curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	slist_free_wiped(hl);
	if (cc != CURLE_OK && !(cc == CURLE_WRITE_ERROR && q->overflow)) {
		/* the connection may be half used: do not keep it */
		curl_easy_cleanup(h);
		switch (cc) {
		case CURLE_COULDNT_CONNECT:
		case CURLE_COULDNT_RESOLVE_HOST:
			return -EHOSTUNREACH;
		case CURLE_OPERATION_TIMEDOUT:
			return -ETIMEDOUT;
		default:
			return -ECONNRESET;
		}
	}
	pool_put(s, h);
	q->status = st;
	if (st == 403 && s->sas && !__atomic_exchange_n(&s->sas_refused, true, __ATOMIC_RELAXED))
		/* an expired token shows up here first, mid-mount: say so once, not per request */
		fprintf(stderr, "phifs: azure: the service refused the SAS (%s): wrong signature, "
			"expired or not yet valid, or missing a permission; refused requests fail "
			"with EACCES (logged once)\n", refusal_code(q));
	return 0;
}

/* One request with retries until the deadline. Returns 0 with q->status (any final HTTP
 * status, the caller maps it), or -EIO past the deadline (the cause is logged). */
static void cache_bump(struct az_store *s, const char *path);
static int perform_once(struct az_store *s, struct req *q);

static int perform(struct az_store *s, struct req *q)
{
	bool mutates = !strcmp(q->method, "PUT") || !strcmp(q->method, "DELETE");
	if (mutates)
		cache_bump(s, q->path);
	int r = perform_once(s, q);
	if (mutates)
		cache_bump(s, q->path); /* a lookup that overlapped the change is not kept either */
	return r;
}

static int meta_hdrs(struct req *q, const struct meta *m);

/* A conditional PUT retried after an attempt whose outcome is unknown (a reset or a
 * timeout after the request went out, a 5xx) comes back 412 (If-Match) or 409/412
 * (If-None-Match: *) when that attempt was applied and only its answer was lost: the
 * retry then races against its own first attempt. Treating that as another writer turned
 * a commit into a false conflict (EIO, writes reported lost though stored) and a create
 * into EEXIST (tests/azure/test-proxy.sh, resets halfway through the answer). Every such
 * PUT carries our full metadata, with phigen and phiino (random 64 bits) and phictime
 * (ns): if a HEAD finds exactly that metadata on the blob, the earlier attempt landed,
 * and the request is answered as the success it was, with the blob's ETag. Anything else
 * (another writer, a HEAD that fails) leaves the 412/409 to the caller. */
static bool applied_earlier(struct az_store *s, struct req *q)
{
	bool im = *req_get_hdr(q, "if-match"), inm = *req_get_hdr(q, "if-none-match");
	if (strcmp(q->method, "PUT") || !*req_get_hdr(q, "x-ms-meta-phigen") ||
	    !((im && q->status == 412) || (inm && (q->status == 409 || q->status == 412))))
		return false;
	_cleanup_free_ struct req *v = calloc(2, sizeof *v); /* the HEAD; its metadata formatted */
	if (!v)
		return false;
	v[0] = (struct req){ .method = "HEAD", .head = true };
	memcpy(v[0].path, q->path, sizeof v[0].path);
	if (perform_once(s, &v[0]) < 0 || v[0].status != 200 ||
	    v[0].meta_seen != (M_MODE | M_UID | M_GID | M_INO | M_AT | M_MT | M_CT | M_GEN))
		return false;
	v[1] = (struct req){ .method = "HEAD" };
	if (meta_hdrs(&v[1], &v[0].meta) < 0)
		return false;
	for (size_t i = 0; i < v[1].nhdrs; i++)
		if (strcmp(req_get_hdr(q, v[1].hdrs[i].name), v[1].hdrs[i].value))
			return false;
	q->status = 201;
	(void)snprintf(q->etag, sizeof q->etag, "%s", v[0].etag);
	return true;
}

static int perform_once(struct az_store *s, struct req *q)
{
	uint64_t start = now_ms(), end = start + s->deadline_ms;
	uint64_t backoff = 50;
	int last = 0;
	for (unsigned tries = 1;; tries++) {
		uint64_t now = now_ms();
		if (now >= end)
			break;
		int r = attempt(s, q, end - now);
		if (r == -ENAMETOOLONG || r == -ENOMEM || r == -E2BIG)
			return r;
		if (r == 0 && !retryable_status(q->status)) {
			if (last)
				(void)applied_earlier(s, q); /* an earlier attempt failed: maybe not */
			return 0;
		}
		last = r < 0 ? r : -EIO;
		now = now_ms();
		if (now >= end)
			break;
		/* exponential backoff with jitter in [b/2, 3b/2), capped at 2 s */
		uint64_t d = backoff / 2 + (uint64_t)rnd32() % backoff;
		if (d > end - now)
			d = end - now;
		struct timespec ts = { .tv_sec = (time_t)(d / 1000), .tv_nsec = (long)(d % 1000) * 1000000 };
		nanosleep(&ts, NULL);
		backoff = backoff * 2 > 2000 ? 2000 : backoff * 2;
		(void)tries;
	}
	if (!last)
		last = -ETIMEDOUT;
	/* operation and outcome only: no blob name, no data */
	if (last == -EIO)
		fprintf(stderr, "phifs: azure: %s request failed past the %" PRIu64 " s deadline: HTTP %ld\n",
			q->method, s->deadline_ms / 1000, q->status);
	else
		fprintf(stderr, "phifs: azure: %s request failed past the %" PRIu64 " s deadline: %s\n",
			q->method, s->deadline_ms / 1000, strerror(-last));
	/* EIO whatever the cause, as for a disk that stopped answering; the line above says
	 * which (a refused connection, a timeout, an HTTP status) */
	return -EIO;
}

static int status_errno(const struct req *q)
{
	switch (q->status) {
	case 200:
	case 201:
	case 202:
	case 206:
		return 0;
	case 304:
	case 412:
		return -ESTALE; /* a condition failed: callers decide what that means */
	case 403:
		return -EACCES;
	case 404:
		return -ENOENT;
	case 409:
		return -EEXIST;
	case 400:
		return -EINVAL;
	case 413:
		return -EFBIG;
	case 416:
		return -ERANGE;
	default:
		return -EIO;
	}
}

static int req_init(struct az_store *s, struct req *q, const char *method, const char *blob)
{
	*q = (struct req){ .method = method, .head = !strcmp(method, "HEAD") };
	int n = blob ? snprintf(q->path, sizeof q->path, "/%s/%s", s->container, blob)
		     : snprintf(q->path, sizeof q->path, "/%s", s->container);
	return n > 0 && (size_t)n < sizeof q->path ? 0 : -ENAMETOOLONG;
}

static int meta_hdrs(struct req *q, const struct meta *m)
{
	int r = req_hdr(q, "x-ms-meta-phimode", "%" PRIu32, m->mode);
	r = r < 0 ? r : req_hdr(q, "x-ms-meta-phiuid", "%" PRIu32, m->uid);
	r = r < 0 ? r : req_hdr(q, "x-ms-meta-phigid", "%" PRIu32, m->gid);
	r = r < 0 ? r : req_hdr(q, "x-ms-meta-phiino", "%" PRIu64, m->ino);
	r = r < 0 ? r : req_hdr(q, "x-ms-meta-phigen", "%" PRIu64, m->gen);
	r = r < 0 ? r : req_hdr(q, "x-ms-meta-phiatime", "%lld.%09ld", (long long)m->atime.tv_sec, m->atime.tv_nsec);
	r = r < 0 ? r : req_hdr(q, "x-ms-meta-phimtime", "%lld.%09ld", (long long)m->mtime.tv_sec, m->mtime.tv_nsec);
	r = r < 0 ? r : req_hdr(q, "x-ms-meta-phictime", "%lld.%09ld", (long long)m->ctime.tv_sec, m->ctime.tv_nsec);
	return r;
}

static uint64_t rnd64(void)
{
	uint64_t v;
	randombytes_buf(&v, sizeof v);
	return v;
}

static uint64_t fnv1a(const char *s)
{
	uint64_t h = UINT64_C(0xcbf29ce484222325);
	for (; *s; s++)
		h = (h ^ (uint8_t)*s) * UINT64_C(0x100000001b3);
	return h;
}

static struct meta meta_new(uint32_t mode, uint32_t uid, uint32_t gid)
{
	struct timespec t = now_real();
	return (struct meta){
		.mode = mode,
		.uid = uid == (uint32_t)-1 ? (uint32_t)geteuid() : uid,
		.gid = gid == (uint32_t)-1 ? (uint32_t)getegid() : gid,
		.ino = (rnd64() >> 2) | 1, /* nonzero, below the name hashes' range */
		.atime = t,
		.mtime = t,
		.ctime = t,
		.gen = rnd64(),
	};
}

/* Fill in what a foreign blob (no phi metadata) lacks. */
static void meta_fixup(struct req *q, const char *blob)
{
	if (!(q->meta_seen & M_MODE))
		q->meta.mode = S_IFREG | 0600;
	if (!(q->meta_seen & M_INO))
		q->meta.ino = fnv1a(blob) | (UINT64_C(1) << 63);
	if (!(q->meta_seen & M_UID))
		q->meta.uid = (uint32_t)geteuid();
	if (!(q->meta_seen & M_GID))
		q->meta.gid = (uint32_t)getegid();
}

/* Get Blob Properties. ret_meta/size/etag optional. */
static int head_blob(struct az_store *s, const char *blob, struct meta *ret_meta,
		     uint64_t *ret_size, char *ret_etag, size_t etag_size)
{
	struct req q;
	int r = req_init(s, &q, "HEAD", blob);
	if (r < 0)
		return r;
	r = perform(s, &q);
	if (r < 0)
		return r;
	r = status_errno(&q);
	if (r < 0)
		return r;
	meta_fixup(&q, blob);
	if (ret_meta)
		*ret_meta = q.meta;
	if (ret_size)
		*ret_size = q.have_length ? q.content_length : 0;
	if (ret_etag)
		(void)snprintf(ret_etag, etag_size, "%s", q.etag);
	return 0;
}

static bool cache_get(struct az_store *s, const char *blob, struct meta *m, uint64_t *size);
static void cache_put(struct az_store *s, const char *blob, const struct meta *m, uint64_t size,
		      uint64_t gen);
static uint64_t cache_gen(struct az_store *s);

/* A HEAD whose answer the attribute cache may give, and which fills it. For getattr and
 * the parent and directory checks only, not before a change (those HEADs want the ETag):
 * the cache's rules hold (ACACHE_MS, and kept only if this mount changed nothing while
 * the HEAD was in flight, hence gen taken before it). Without it a small file's create cost
 * three HEADs of its directory: the kernel's getattr, the negative lookup's parent check
 * and the create's parent check, with nothing changed in between; and until changes
 * dropped only their own blob's entry, one per file in a directory being filled. */
static int head_cached(struct az_store *s, const char *blob, struct meta *ret_meta,
		       uint64_t *ret_size)
{
	struct meta m;
	uint64_t size = 0;
	if (!cache_get(s, blob, &m, &size)) {
		uint64_t gen = cache_gen(s);
		int r = head_blob(s, blob, &m, &size, NULL, 0);
		if (r < 0)
			return r;
		cache_put(s, blob, &m, size, gen);
	}
	if (ret_meta)
		*ret_meta = m;
	if (ret_size)
		*ret_size = size;
	return 0;
}

/* the type of a path's parent: 0 if it is a directory (or the root), -ENOENT, -ENOTDIR */
static int parent_check(struct az_store *s, const char *path)
{
	const char *slash = strrchr(path, '/');
	if (!slash)
		return 0;
	char parent[PHI_STORE_PATH_MAX];
	memcpy(parent, path, (size_t)(slash - path));
	parent[slash - path] = 0;
	char blob[sizeof parent + 1100];
	int r = blob_name(s, parent, blob, sizeof blob);
	if (r < 0)
		return r;
	struct meta m;
	r = head_cached(s, blob, &m, NULL);
	if (r == -ENOENT)
		return parent_check(s, parent) == -ENOTDIR ? -ENOTDIR : -ENOENT;
	if (r < 0)
		return r;
	return S_ISDIR(m.mode) ? 0 : -ENOTDIR;
}

/* Put Blob of a whole small blob. cond: NULL, "*" (If-None-Match: *, create only) or an
 * ETag (If-Match). ret_etag optional. */
static int put_blob(struct az_store *s, const char *blob, const void *data, size_t len,
		    const struct meta *m, const char *cond, char *ret_etag, size_t etag_size)
{
	struct req q;
	int r = req_init(s, &q, "PUT", blob);
	r = r < 0 ? r : req_hdr(&q, "x-ms-blob-type", "BlockBlob");
	r = r < 0 ? r : meta_hdrs(&q, m);
	if (r >= 0 && cond)
		r = !strcmp(cond, "*") ? req_hdr(&q, "if-none-match", "*")
				       : req_hdr(&q, "if-match", "%s", cond);
	if (r < 0)
		return r;
	q.body = data;
	q.body_len = len;
	r = perform(s, &q);
	if (r < 0)
		return r;
	r = status_errno(&q);
	if (r == -ESTALE && cond && !strcmp(cond, "*"))
		r = -EEXIST;
	if (r < 0)
		return r;
	if (ret_etag)
		(void)snprintf(ret_etag, etag_size, "%s", q.etag);
	return 0;
}

static int delete_blob(struct az_store *s, const char *blob)
{
	struct req q;
	int r = req_init(s, &q, "DELETE", blob);
	if (r < 0)
		return r;
	r = perform(s, &q);
	return r < 0 ? r : status_errno(&q);
}

/* Set Blob Metadata (replaces the whole set) under If-Match. */
static int set_meta(struct az_store *s, const char *blob, const struct meta *m, const char *etag)
{
	struct req q;
	int r = req_init(s, &q, "PUT", blob);
	r = r < 0 ? r : req_query(&q, "comp", "metadata");
	r = r < 0 ? r : meta_hdrs(&q, m);
	r = r < 0 ? r : req_hdr(&q, "if-match", "%s", etag);
	if (r < 0)
		return r;
	r = perform(s, &q);
	return r < 0 ? r : status_errno(&q);
}

/* ---- attribute cache (filled by listings, HEADs and creates) ---- */

static uint64_t fnv1a(const char *s);

/* A change to the blob at URL path (as in struct req) is coming or done: forget that blob's
 * attributes, and refuse every lookup that was in flight (cache_put) as it may have seen
 * the blob before the change. Other blobs' entries stay: a PUT or DELETE changes only the
 * blob it names (a directory is a marker blob of its own, unchanged by its children). */
static void cache_bump(struct az_store *s, const char *path)
{
	size_t cl = strlen(s->container);
	const char *blob = path[0] == '/' && !strncmp(path + 1, s->container, cl) &&
					   path[1 + cl] == '/'
				   ? path + 2 + cl
				   : NULL;
	pthread_mutex_lock(&s->cache_lock);
	s->gen++;
	if (blob && s->cache) {
		struct acache_ent *e = &s->cache[fnv1a(blob) % ACACHE_SLOTS];
		if (e->name && !strcmp(e->name, blob)) {
			free(e->name);
			e->name = NULL;
		}
	}
	pthread_mutex_unlock(&s->cache_lock);
}

static uint64_t cache_gen(struct az_store *s)
{
	pthread_mutex_lock(&s->cache_lock);
	uint64_t g = s->gen;
	pthread_mutex_unlock(&s->cache_lock);
	return g;
}

static void cache_put(struct az_store *s, const char *blob, const struct meta *m, uint64_t size,
		      uint64_t gen)
{
	if (!s->cache)
		return;
	char *dup = strdup(blob);
	if (!dup)
		return;
	pthread_mutex_lock(&s->cache_lock);
	if (gen != s->gen) { /* a change overlapped the lookup: its answer may be stale */
		pthread_mutex_unlock(&s->cache_lock);
		free(dup);
		return;
	}
	struct acache_ent *e = &s->cache[fnv1a(blob) % ACACHE_SLOTS];
	free(e->name);
	*e = (struct acache_ent){ .name = dup, .gen = gen, .expires = now_ms() + ACACHE_MS,
				  .size = size, .m = *m };
	pthread_mutex_unlock(&s->cache_lock);
}

static bool cache_get(struct az_store *s, const char *blob, struct meta *m, uint64_t *size)
{
	if (!s->cache)
		return false;
	bool hit = false;
	pthread_mutex_lock(&s->cache_lock);
	struct acache_ent *e = &s->cache[fnv1a(blob) % ACACHE_SLOTS];
	if (e->name && now_ms() < e->expires && !strcmp(e->name, blob)) {
		*m = e->m;
		*size = e->size;
		hit = true;
	}
	pthread_mutex_unlock(&s->cache_lock);
	return hit;
}

/* ---- registry of open objects ---- */

static struct phi_store_obj *find_open_locked(struct az_store *s, const char *blob)
{
	for (struct phi_store_obj *o = s->open; o; o = o->next)
		if (!o->unlinked && !strcmp(o->name, blob))
			return o;
	return NULL;
}

/* ---- namespace ---- */

static void meta_to_stat(const struct meta *m, uint64_t size, struct phi_store_stat *ret)
{
	*ret = (struct phi_store_stat){
		.ino = m->ino,
		.mode = m->mode,
		.uid = m->uid,
		.gid = m->gid,
		.nlink = S_ISDIR(m->mode) ? 2 : 1,
		.size = size,
		.atime = m->atime,
		.mtime = m->mtime,
		.ctime = m->ctime,
	};
}

static int az_getattr(struct phi_store *ps, const char *path, struct phi_store_stat *ret)
{
	struct az_store *s = to_az(ps);
	int r = path_check(path, true);
	if (r < 0)
		return r;
	if (!*path) {
		/* the root has no blob: a private directory of the mounting user */
		struct meta m = { .mode = S_IFDIR | 0700, .uid = (uint32_t)geteuid(),
				  .gid = (uint32_t)getegid(), .ino = 1 };
		meta_to_stat(&m, 0, ret);
		return 0;
	}
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	struct meta m;
	uint64_t size;
	r = head_cached(s, blob, &m, &size);
	if (r == -ENOENT) {
		int p = parent_check(s, path);
		return p == -ENOTDIR ? -ENOTDIR : p < 0 && p != -ENOENT ? p : -ENOENT;
	}
	if (r < 0)
		return r;
	/* an object open here with uncommitted writes: its size and mtime are the truth */
	pthread_mutex_lock(&s->lock);
	struct phi_store_obj *o = find_open_locked(s, blob);
	if (o && o->dirty) {
		size = o->size;
		if (!o->meta_fresh_after_write)
			m.mtime = o->wtime;
	}
	pthread_mutex_unlock(&s->lock);
	meta_to_stat(&m, S_ISDIR(m.mode) ? 0 : size, ret);
	return 0;
}

static int create_entry(struct az_store *s, const char *path, uint32_t mode, const void *data,
			size_t len)
{
	int r = path_check(path, false);
	if (r < 0)
		return r;
	r = parent_check(s, path);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	struct meta m = meta_new(mode, (uint32_t)-1, (uint32_t)-1);
	return put_blob(s, blob, data, len, &m, "*", NULL, 0);
}

static int az_mkdir(struct phi_store *ps, const char *path, uint32_t mode)
{
	return create_entry(to_az(ps), path, S_IFDIR | (mode & 07777), NULL, 0);
}

static int az_symlink(struct phi_store *ps, const char *target, const char *path)
{
	if (!target || !*target)
		return -EINVAL;
	size_t tl = strnlen(target, PHI_STORE_PATH_MAX);
	if (tl >= PHI_STORE_PATH_MAX)
		return -ENAMETOOLONG;
	return create_entry(to_az(ps), path, S_IFLNK | 0777, target, tl);
}

/* List Blobs under dir (a store path, "" for the root); recursive: no delimiter. */
struct list_ctx {
	struct az_store *s;
	size_t strip; /* bytes of the listed prefix */
	phi_store_dirent_fn fn;
	void *ctx;
	int stop;  /* fn returned >0 */
	size_t count;
	bool count_only;
	/* directory markers seen, and virtual directories (BlobPrefix) to report at the end
	 * unless their marker was seen: the service may list prefixes apart from blobs */
	char **dirs, **pending;
	size_t ndirs, npending, cdirs, cpending;
	uint64_t gen; /* attribute cache generation when the listing started */
};

static int strv_add(char ***v, size_t *n, size_t *cap, const char *x)
{
	if (*n == *cap) {
		size_t nc = *cap ? *cap * 2 : 16;
		char **p = realloc(*v, nc * sizeof *p);
		if (!p)
			return -ENOMEM;
		*v = p;
		*cap = nc;
	}
	(*v)[*n] = strdup(x);
	if (!(*v)[*n])
		return -ENOMEM;
	(*n)++;
	return 0;
}

static void list_ctx_done(struct list_ctx *l)
{
	for (size_t i = 0; i < l->ndirs; i++)
		free(l->dirs[i]);
	for (size_t i = 0; i < l->npending; i++)
		free(l->pending[i]);
	free(l->dirs);
	free(l->pending);
}

static int list_entry(void *ctx, const struct phi_az_entry *e)
{
	struct list_ctx *l = ctx;
	if (l->stop)
		return 0;
	size_t nl = strlen(e->name);
	if (nl <= l->strip)
		return 0;
	const char *leaf = e->name + l->strip;
	l->count++;
	if (l->count_only)
		return 0;
	char name[PHI_STORE_NAME_MAX + 2];
	if (e->is_prefix) {
		size_t ll = strlen(leaf);
		if (ll < 2 || ll - 1 > PHI_STORE_NAME_MAX)
			return 0;
		memcpy(name, leaf, ll - 1);
		name[ll - 1] = 0;
		if (path_check(name, false) < 0)
			return 0;
		return strv_add(&l->pending, &l->npending, &l->cpending, name);
	}
	if (strchr(leaf, '/') || strlen(leaf) > PHI_STORE_NAME_MAX)
		return 0;
	(void)snprintf(name, sizeof name, "%s", leaf);
	if (path_check(name, false) < 0)
		return 0; /* not a name this store could have made */
	uint32_t type = e->mode ? IFTODT(e->mode) : DT_REG;
	if (e->full_meta && l->fn) {
		struct meta m = { .mode = e->mode, .uid = e->uid, .gid = e->gid, .ino = e->ino,
				  .atime = e->atime, .mtime = e->mtime, .ctime = e->ctime, .gen = e->gen };
		cache_put(l->s, e->name, &m, e->size, l->gen);
	}
	if (type == DT_DIR) {
		int r = strv_add(&l->dirs, &l->ndirs, &l->cdirs, name);
		if (r < 0)
			return r;
	}
	int r = l->fn ? l->fn(l->ctx, name, type) : 0;
	if (r < 0)
		return r;
	if (r > 0)
		l->stop = 1;
	return 0;
}

/* report the virtual directories that have no marker blob */
static int list_finish(struct list_ctx *l)
{
	for (size_t i = 0; i < l->npending && !l->stop; i++) {
		bool seen = false;
		for (size_t k = 0; k < l->ndirs && !seen; k++)
			seen = !strcmp(l->dirs[k], l->pending[i]);
		if (seen || !l->fn)
			continue;
		int r = l->fn(l->ctx, l->pending[i], DT_DIR);
		if (r < 0)
			return r;
		if (r > 0)
			l->stop = 1;
	}
	return 0;
}

/* List the blobs whose names start with pfx (delimiter "/" unless recursive). */
static int list_blobs(struct az_store *s, const char *pfx, bool recursive, unsigned maxresults,
		      phi_az_entry_fn fn, void *ctx, bool (*stop)(void *), void *stopctx)
{
	char marker[1024] = "";
	_cleanup_buf_ struct phi_buf body;
	phi_buf_init(&body, LIST_MAX);
	for (;;) {
		struct req q;
		int r = req_init(s, &q, "GET", NULL);
		r = r < 0 ? r : req_query(&q, "restype", "container");
		r = r < 0 ? r : req_query(&q, "comp", "list");
		r = r < 0 ? r : req_query(&q, "prefix", pfx);
		if (r >= 0 && !recursive)
			r = req_query(&q, "delimiter", "/");
		r = r < 0 ? r : req_query(&q, "include", "metadata");
		if (r >= 0 && *marker)
			r = req_query(&q, "marker", marker);
		char mr[16];
		(void)snprintf(mr, sizeof mr, "%u", maxresults ? maxresults : 5000);
		r = r < 0 ? r : req_query(&q, "maxresults", mr);
		if (r < 0)
			return r;
		q.grow = &body;
		r = perform(s, &q);
		if (r < 0)
			return r;
		if (q.overflow)
			return -E2BIG;
		r = status_errno(&q);
		if (r < 0)
			return r == -ENOENT ? -EIO : r; /* no container */
		r = phi_az_parse_list((const char *)body.p, body.len, fn, ctx, marker, sizeof marker);
		if (r < 0)
			return r == -EBADMSG ? -EIO : r;
		if (!*marker || maxresults || (stop && stop(stopctx)))
			return 0;
	}
}

static bool list_stopped(void *ctx)
{
	return ((struct list_ctx *)ctx)->stop != 0;
}

/* 0 if path is a directory (or the root); -ENOTDIR, -ENOENT, -ELOOP for a symlink. cached:
 * the attribute cache may answer (readdir, fsync_dir), not before a delete (rmdir) */
static int dir_check(struct az_store *s, const char *path, char *blob, size_t size, bool cached)
{
	int r = blob_name(s, path, blob, size);
	if (r < 0 || !*path)
		return r;
	struct meta m;
	r = cached ? head_cached(s, blob, &m, NULL) : head_blob(s, blob, &m, NULL, NULL, 0);
	if (r == -ENOENT)
		return parent_check(s, path) == -ENOTDIR ? -ENOTDIR : -ENOENT;
	if (r < 0)
		return r;
	return S_ISDIR(m.mode) ? 0 : S_ISLNK(m.mode) ? -ELOOP : -ENOTDIR;
}

static int az_readdir(struct phi_store *ps, const char *path, phi_store_dirent_fn fn, void *ctx)
{
	struct az_store *s = to_az(ps);
	if (!fn)
		return -EINVAL;
	int r = path_check(path, true);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = dir_check(s, path, blob, sizeof blob, true);
	if (r < 0)
		return r;
	char pfx[sizeof blob + 1];
	(void)snprintf(pfx, sizeof pfx, "%s%s", blob, *blob ? "/" : "");
	_cleanup_(list_ctx_done) struct list_ctx l = { .s = s, .strip = strlen(pfx), .fn = fn,
							.ctx = ctx, .gen = cache_gen(s) };
	r = list_blobs(s, pfx, false, 0, list_entry, &l, list_stopped, &l);
	return r < 0 ? r : list_finish(&l);
}

/* number of entries under a directory blob (0 or 1 is enough to know) */
static int dir_nonempty(struct az_store *s, const char *blob)
{
	char pfx[PHI_STORE_PATH_MAX + 1200];
	(void)snprintf(pfx, sizeof pfx, "%s/", blob);
	_cleanup_(list_ctx_done) struct list_ctx l = { .s = s, .strip = strlen(pfx),
							.count_only = true };
	int r = list_blobs(s, pfx, false, 1, list_entry, &l, NULL, NULL);
	return r < 0 ? r : l.count > 0;
}

static int az_rmdir(struct phi_store *ps, const char *path)
{
	struct az_store *s = to_az(ps);
	int r = path_check(path, false);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = dir_check(s, path, blob, sizeof blob, false);
	if (r < 0)
		return r == -ELOOP ? -ENOTDIR : r;
	r = dir_nonempty(s, blob);
	if (r < 0)
		return r;
	if (r > 0)
		return -ENOTEMPTY;
	return delete_blob(s, blob);
}

/* Read a whole small blob into buf (at most max bytes). */
static int get_blob(struct az_store *s, const char *blob, void *buf, size_t max, size_t *ret_len,
		    struct meta *ret_meta)
{
	struct req q;
	int r = req_init(s, &q, "GET", blob);
	if (r < 0)
		return r;
	uint8_t dummy;
	q.buf = max ? buf : &dummy;
	q.cap = max;
	r = perform(s, &q);
	if (r < 0)
		return r;
	if (q.overflow)
		return -EFBIG;
	r = status_errno(&q);
	if (r < 0)
		return r;
	if (q.have_length && q.content_length != q.got)
		return q.content_length > max ? -EFBIG : -EIO;
	meta_fixup(&q, blob);
	*ret_len = q.got;
	if (ret_meta)
		*ret_meta = q.meta;
	return 0;
}

static int az_readlink(struct phi_store *ps, const char *path, char *buf, size_t size,
		       size_t *ret_len)
{
	struct az_store *s = to_az(ps);
	if (!buf || size == 0)
		return -EINVAL;
	int r = path_check(path, false);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	_cleanup_free_ char *tmp = malloc(PHI_STORE_PATH_MAX);
	if (!tmp)
		return -ENOMEM;
	size_t n;
	struct meta m;
	r = get_blob(s, blob, tmp, PHI_STORE_PATH_MAX, &n, &m);
	if (r == -ENOENT) {
		int p = parent_check(s, path);
		return p == -ENOTDIR ? -ENOTDIR : -ENOENT;
	}
	if (r == -EFBIG)
		return -EINVAL; /* not a symlink of ours */
	if (r < 0)
		return r;
	if (!S_ISLNK(m.mode))
		return -EINVAL;
	if (n >= size)
		return -ENAMETOOLONG;
	memcpy(buf, tmp, n);
	buf[n] = 0;
	*ret_len = n;
	return 0;
}

/* Read-modify-write of the metadata under If-Match, retried when another change wins. */
static int update_meta(struct az_store *s, const char *path, void (*fn)(struct meta *, const void *),
		       const void *arg)
{
	int r = path_check(path, true);
	if (r < 0)
		return r;
	if (!*path)
		return 0; /* the root's attributes are not stored (docs/azure-store.md) */
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	for (int tries = 0; tries < 8; tries++) {
		struct meta m;
		char etag[96];
		r = head_blob(s, blob, &m, NULL, etag, sizeof etag);
		if (r == -ENOENT) {
			int p = parent_check(s, path);
			return p == -ENOTDIR ? -ENOTDIR : -ENOENT;
		}
		if (r < 0)
			return r;
		fn(&m, arg);
		m.ctime = now_real();
		r = set_meta(s, blob, &m, etag);
		if (r != -ESTALE)
			return r;
	}
	return -EIO;
}

static void do_chmod(struct meta *m, const void *arg)
{
	m->mode = (m->mode & (uint32_t)S_IFMT) | (*(const uint32_t *)arg & 07777);
}

static int az_chmod(struct phi_store *ps, const char *path, uint32_t mode)
{
	return update_meta(to_az(ps), path, do_chmod, &mode);
}

static void do_chown(struct meta *m, const void *arg)
{
	const uint32_t *ug = arg;
	if (ug[0] != (uint32_t)-1)
		m->uid = ug[0];
	if (ug[1] != (uint32_t)-1)
		m->gid = ug[1];
}

static int az_chown(struct phi_store *ps, const char *path, uint32_t uid, uint32_t gid)
{
	uint32_t ug[2] = { uid, gid };
	return update_meta(to_az(ps), path, do_chown, ug);
}

static void do_utimens(struct meta *m, const void *arg)
{
	const struct timespec *tv = arg;
	struct timespec now = now_real();
	if (!tv) {
		m->atime = m->mtime = now;
		return;
	}
	if (tv[0].tv_nsec != UTIME_OMIT)
		m->atime = tv[0].tv_nsec == UTIME_NOW ? now : tv[0];
	if (tv[1].tv_nsec != UTIME_OMIT)
		m->mtime = tv[1].tv_nsec == UTIME_NOW ? now : tv[1];
}

static int az_utimens(struct phi_store *ps, const char *path, const struct timespec tv[2])
{
	return update_meta(to_az(ps), path, do_utimens, tv);
}

static int az_statfs(struct phi_store *ps, struct statvfs *ret)
{
	(void)ps;
	/* a blob container has no fixed capacity: report plenty, as blobfuse does */
	*ret = (struct statvfs){
		.f_bsize = BLOCK,
		.f_frsize = 4096,
		.f_blocks = UINT64_C(1) << 40,
		.f_bfree = UINT64_C(1) << 40,
		.f_bavail = UINT64_C(1) << 40,
		.f_files = UINT64_C(1) << 32,
		.f_ffree = UINT64_C(1) << 32,
		.f_favail = UINT64_C(1) << 32,
		.f_namemax = PHI_STORE_NAME_MAX,
	};
	return 0;
}

static int az_fsync_dir(struct phi_store *ps, const char *path)
{
	/* every namespace operation is durable when the service acknowledges it */
	int r = path_check(path, true);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = dir_check(to_az(ps), path, blob, sizeof blob, true);
	return r == -ELOOP ? -ENOTDIR : r;
}

/* ---- objects ---- */

/* Geometry. A cache slot holds BLOCK bytes at a BLOCK-aligned offset. An object is
 * committed as a list of Azure blocks on a fixed grid of "pieces": PIECE bytes below
 * FINE_END, BLOCK bytes above it, so a slot is SUBS pieces there and one piece here. A small
 * write reads and uploads only the piece it touches, and the grid bounds the block list:
 * every block we commit is one piece, and a committed block is kept only if both its ends
 * are on the grid (or it ends the object), so a blob never has more blocks than its size
 * has pieces, at most MAX_PIECES (Azure's 50,000). */

static uint64_t nblocks(uint64_t size)
{
	return (size + BLOCK - 1) / BLOCK;
}

static uint64_t block_len(uint64_t size, uint64_t i)
{
	uint64_t start = i * BLOCK;
	return size <= start ? 0 : size - start < BLOCK ? size - start : BLOCK;
}

static uint64_t piece_of(uint64_t off)
{
	return off < FINE_END ? off / PIECE : FINE_PIECES + (off - FINE_END) / BLOCK;
}

static uint64_t piece_start(uint64_t p)
{
	return p < FINE_PIECES ? p * PIECE : FINE_END + (p - FINE_PIECES) * BLOCK;
}

static uint64_t piece_end(uint64_t p) /* nominal: as if the object went on */
{
	return piece_start(p) + (p < FINE_PIECES ? PIECE : BLOCK);
}

/* bytes of piece p in an object of size bytes */
static uint64_t piece_len(uint64_t size, uint64_t p)
{
	uint64_t a = piece_start(p), b = piece_end(p);
	return size <= a ? 0 : (size < b ? size : b) - a;
}

static uint64_t npieces(uint64_t size)
{
	return size ? piece_of(size - 1) + 1 : 0;
}

/* The sub-units of slot i are its pieces: SUBS of them below FINE_END, else one. */
static unsigned slot_subs(uint64_t i)
{
	return i * BLOCK < FINE_END ? SUBS : 1;
}

static uint64_t sub_size(uint64_t i)
{
	return BLOCK / slot_subs(i);
}

static unsigned all_subs(uint64_t i)
{
	return (1u << slot_subs(i)) - 1;
}

/* the sub-units of slot i that [off, off + len) touches; len > 0, inside the slot */
static unsigned subs_of(uint64_t i, uint64_t off, uint64_t len)
{
	uint64_t base = i * BLOCK, ss = sub_size(i);
	unsigned a = (unsigned)((off - base) / ss), b = (unsigned)((off + len - 1 - base) / ss);
	return ((2u << b) - 1) & ~((1u << a) - 1);
}

static uint64_t valid_end(const struct phi_store_obj *o)
{
	return o->csize < o->low ? o->csize : o->low;
}

/* Block ids: base64 of "phi1-<session, 8 hex>-<piece index, 12 digits>" (all the same
 * length, as Azure wants within a blob). */
static void id_of(uint32_t session, uint64_t p, char *out, size_t size)
{
	char raw[32];
	(void)snprintf(raw, sizeof raw, "phi1-%08" PRIx32 "-%012" PRIu64, session, p);
	sodium_bin2base64(out, size, (const unsigned char *)raw, strlen(raw),
			  sodium_base64_VARIANT_ORIGINAL);
}

static void block_id(const struct phi_store_obj *o, uint64_t p, char *out, size_t size)
{
	id_of(o->session, p, out, size);
}

/* the session of one of our block ids for piece p; false for any other id */
static bool id_session(const char *id, uint64_t p, uint32_t *ret)
{
	char raw[40], want[32];
	size_t n = 0;
	if (sodium_base642bin((unsigned char *)raw, sizeof raw - 1, id, strlen(id), NULL, &n, NULL,
			      sodium_base64_VARIANT_ORIGINAL) != 0 || n != 26)
		return false;
	raw[n] = 0;
	uint64_t sess;
	char hex[9];
	memcpy(hex, raw + 5, 8);
	hex[8] = 0;
	for (size_t k = 0; k < 8; k++)
		if (!((hex[k] >= '0' && hex[k] <= '9') || (hex[k] >= 'a' && hex[k] <= 'f')))
			return false;
	sess = strtoull(hex, NULL, 16);
	(void)snprintf(want, sizeof want, "phi1-%08" PRIx32 "-%012" PRIu64, (uint32_t)sess, p);
	if (strcmp(raw, want) != 0)
		return false;
	*ret = (uint32_t)sess;
	return true;
}

/* The blob metadata phipieces: when the committed list is exactly the grid, piece k being
 * block k with our id, it is the runs of the ids' sessions, "SSSSSSSS-COUNT" joined by
 * '.', so that a writer knows the list without Get Block List. "" otherwise, or if it
 * would be longer than PIECES_META_MAX (Get Block List then). */
static void pieces_meta(const struct phi_az_block *v, size_t n, uint64_t size, char *out,
			size_t cap)
{
	size_t ol = 0;
	uint32_t cur = 0;
	uint64_t run = 0;
	out[0] = 0;
	if (!n || n != npieces(size))
		return;
	for (size_t k = 0; k <= n; k++) {
		uint32_t sess = 0;
		if (k < n && (v[k].size != piece_len(size, k) || !id_session(v[k].id, k, &sess))) {
			out[0] = 0;
			return;
		}
		if (k < n && run && sess == cur) {
			run++;
			continue;
		}
		if (run) {
			int w = snprintf(out + ol, cap - ol, "%s%08" PRIx32 "-%" PRIu64, ol ? "." : "", cur, run);
			if (w < 0 || (size_t)w >= cap - ol || ol + (size_t)w > PIECES_META_MAX) {
				out[0] = 0;
				return;
			}
			ol += (size_t)w;
		}
		cur = sess;
		run = 1;
	}
}

/* The committed list that phipieces describes for an object of size bytes. */
static int pieces_parse(const char *m, uint64_t size, struct phi_az_block **ret, size_t *ret_n)
{
	uint64_t n = npieces(size), k = 0;
	if (!n || n > MAX_PIECES)
		return -EBADMSG;
	_cleanup_free_ struct phi_az_block *v = calloc((size_t)n, sizeof *v);
	if (!v)
		return -ENOMEM;
	for (const char *c = m; *c;) {
		char *end;
		if (strspn(c, "0123456789abcdef") != 8 || c[8] != '-')
			return -EBADMSG;
		uint32_t sess = (uint32_t)strtoul(c, NULL, 16);
		errno = 0;
		unsigned long long cnt = strtoull(c + 9, &end, 10);
		if (errno || end == c + 9 || !cnt || cnt > n - k || (*end && *end != '.'))
			return -EBADMSG;
		for (; cnt; cnt--, k++) {
			id_of(sess, k, v[k].id, sizeof v[k].id);
			v[k].size = piece_len(size, k);
		}
		c = *end ? end + 1 : end;
	}
	if (k != n)
		return -EBADMSG;
	*ret = TAKE_PTR(v);
	*ret_n = (size_t)n;
	return 0;
}

/* GET [off, off + len) of the open object into buf, or scattered over iov (niov buffers
 * that hold len bytes in all) when buf is NULL */
static int ranged_getv(struct phi_store_obj *o, void *buf, const struct iovec *iov, size_t niov,
		       uint64_t off, size_t len, size_t *ret_n)
{
	struct req q;
	int r = req_init(o->s, &q, "GET", o->name);
	r = r < 0 ? r : req_hdr(&q, "x-ms-range", "bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
	r = r < 0 ? r : req_hdr(&q, "if-match", "%s", o->etag);
	if (r < 0)
		return r;
	q.buf = buf;
	q.iov = buf ? NULL : iov;
	q.niov = buf ? 0 : niov;
	q.cap = len;
	r = perform(o->s, &q);
	if (r < 0)
		return r;
	if (q.overflow)
		return -EIO;
	r = status_errno(&q);
	if (r == -ESTALE || r == -ENOENT) {
		fprintf(stderr, "phifs: azure: an open object was changed or removed by another writer\n");
		return -EIO;
	}
	if (r < 0)
		return r == -ERANGE ? -EIO : r;
	*ret_n = q.got;
	return 0;
}

static int ranged_get(struct phi_store_obj *o, void *buf, uint64_t off, size_t len, size_t *ret_n)
{
	return ranged_getv(o, buf, NULL, 0, off, len, ret_n);
}

/* Staged pieces: uncommitted blocks under our ids, with the length each was staged with
 * (0: not staged). A staged piece always has its current length: pieces past a shrinking
 * truncate are unstaged, and the last piece is re-staged or committed before it grows. */
static int staged_set(struct phi_store_obj *o, uint64_t p, uint32_t len)
{
	if (p >= o->staged_cap) {
		if (!len)
			return 0;
		size_t nc = o->staged_cap ? o->staged_cap : 64;
		while (nc <= p)
			nc *= 2;
		uint32_t *v = realloc(o->staged, nc * sizeof *v);
		if (!v)
			return -ENOMEM;
		memset(v + o->staged_cap, 0, (nc - o->staged_cap) * sizeof *v);
		o->staged = v;
		o->staged_cap = nc;
	}
	o->staged[p] = len;
	return 0;
}

static uint32_t staged_len(const struct phi_store_obj *o, uint64_t p)
{
	return p < o->staged_cap ? o->staged[p] : 0;
}

/* whether any piece in [p0, p1) is staged */
static bool staged_any(const struct phi_store_obj *o, uint64_t p0, uint64_t p1)
{
	for (uint64_t p = p0; p < p1 && p < o->staged_cap; p++)
		if (o->staged[p])
			return true;
	return false;
}

/* Put Block of piece p under our id; touches no object state (runs in xfer threads). */
static int put_block_req(struct phi_store_obj *o, uint64_t p, const void *data, size_t len)
{
	char id[64];
	block_id(o, p, id, sizeof id);
	struct req q;
	int r = req_init(o->s, &q, "PUT", o->name);
	r = r < 0 ? r : req_query(&q, "comp", "block");
	r = r < 0 ? r : req_query(&q, "blockid", id);
	if (r < 0)
		return r;
	q.body = data;
	q.body_len = len;
	r = perform(o->s, &q);
	return r < 0 ? r : status_errno(&q);
}

static int put_block_done(struct phi_store_obj *o, uint64_t p, size_t len, int r)
{
	if (r == -ENOENT && o->unlinked)
		return 0;
	if (r < 0)
		return r == -ENOENT ? -EIO : r;
	return staged_set(o, p, (uint32_t)len);
}

/* Get Block List (committed) of the version our ETag names; -ESTALE if it changed. */
static int fetch_blocklist(struct phi_store_obj *o, struct phi_az_block **ret, size_t *ret_n)
{
	struct req q;
	int r = req_init(o->s, &q, "GET", o->name);
	r = r < 0 ? r : req_query(&q, "comp", "blocklist");
	r = r < 0 ? r : req_query(&q, "blocklisttype", "committed");
	if (r < 0)
		return r;
	_cleanup_buf_ struct phi_buf body;
	phi_buf_init(&body, LIST_MAX);
	q.grow = &body;
	r = perform(o->s, &q);
	if (r < 0)
		return r;
	r = status_errno(&q);
	if (r < 0)
		return r;
	if (strcmp(q.etag, o->etag) != 0)
		return -ESTALE;
	r = phi_az_parse_blocklist((const char *)body.p, body.len, ret, ret_n);
	return r < 0 ? -EIO : 0;
}

static void set_committed(struct phi_store_obj *o, struct phi_az_block *v, size_t n)
{
	free(o->committed);
	o->committed = v;
	o->ncommitted = n;
	o->committed_known = true;
	o->committed_from_meta = false;
}

static int fetch_committed(struct phi_store_obj *o)
{
	struct phi_az_block *v = NULL;
	size_t n = 0;
	int r = fetch_blocklist(o, &v, &n);
	if (r < 0)
		return r;
	set_committed(o, v, n);
	return 0;
}

/* The committed list, if this open can know it without a request: from the phipieces
 * metadata of the version it opened. */
static bool committed_quick(struct phi_store_obj *o)
{
	if (o->committed_known)
		return true;
	if (!o->pieces[0])
		return false;
	struct phi_az_block *v = NULL;
	size_t n = 0;
	int r = pieces_parse(o->pieces, o->csize, &v, &n);
	o->pieces[0] = 0;
	if (r < 0)
		return false;
	set_committed(o, v, n);
	o->committed_from_meta = true;
	return true;
}

/* Transfers of one object run a few at once (XFER_PAR threads taking the next task): every
 * request costs a round trip, so several in flight keep the service busy. The caller holds
 * o->lock; the threads only read the object's name, ETag and session. */
enum xkind {
	X_GET,  /* ranged GET of [off, off + len) into buf */
	X_PUT,  /* Put Block of piece from buf, len bytes */
	X_COPY, /* piece rebuilt: its committed bytes [off, off + have), zeros to len, staged */
	X_LIST, /* the committed block list */
};

struct xfer {
	struct phi_store_obj *o;
	enum xkind kind;
	uint8_t *buf;
	uint64_t off, piece;
	size_t len, have;
	struct slot *sl; /* X_PUT from a slot: its sub-unit bit */
	unsigned bit;
	struct phi_az_block *list; /* X_LIST result */
	size_t nlist;
	int r;
};

struct xpool {
	struct xfer *x;
	size_t n, next;
	pthread_mutex_t lock;
};

static void xfer_one(struct xfer *x, uint8_t **tmp)
{
	size_t got = 0;
	switch (x->kind) {
	case X_GET:
		x->r = ranged_get(x->o, x->buf, x->off, x->len, &got);
		if (x->r >= 0 && got != x->len)
			x->r = -EIO;
		break;
	case X_PUT:
		x->r = put_block_req(x->o, x->piece, x->buf, x->len);
		break;
	case X_COPY:
		if (!*tmp && !(*tmp = malloc(BLOCK))) {
			x->r = -ENOMEM;
			break;
		}
		x->r = x->have ? ranged_get(x->o, *tmp, x->off, x->have, &got) : 0;
		if (x->r >= 0 && got != x->have)
			x->r = -EIO;
		if (x->r >= 0) {
			memset(*tmp + x->have, 0, x->len - x->have);
			x->r = put_block_req(x->o, x->piece, *tmp, x->len);
		}
		break;
	case X_LIST:
		x->r = fetch_blocklist(x->o, &x->list, &x->nlist);
		break;
	}
}

static void *xpool_run(void *arg)
{
	struct xpool *p = arg;
	uint8_t *tmp = NULL; /* committed ciphertext only */
	for (;;) {
		pthread_mutex_lock(&p->lock);
		size_t k = p->next++;
		pthread_mutex_unlock(&p->lock);
		if (k >= p->n)
			break;
		xfer_one(&p->x[k], &tmp);
	}
	free(tmp);
	return NULL;
}

static void xfer_all(struct xfer *x, size_t n)
{
	struct xpool p = { .x = x, .n = n };
	pthread_mutex_init(&p.lock, NULL);
	pthread_t t[XFER_PAR];
	size_t nt = 0;
	for (size_t k = 1; k < n && k < XFER_PAR; k++)
		if (pthread_create(&t[nt], NULL, xpool_run, &p) == 0)
			nt++;
	(void)xpool_run(&p); /* the caller takes tasks too; alone if no thread started */
	for (size_t k = 0; k < nt; k++)
		(void)pthread_join(t[k], NULL);
	pthread_mutex_destroy(&p.lock);
}

/* Adopt an X_LIST result: best effort, a failure leaves the list unknown (commit fetches it
 * again and handles the error). */
static void xfer_list_done(struct phi_store_obj *o, struct xfer *x)
{
	if (x->r >= 0 && !o->committed_known) {
		set_committed(o, x->list, x->nlist);
		x->list = NULL;
	}
	free(x->list);
	x->list = NULL;
}

/* Stage every dirty piece of the cached slots, except keep's (the slot being written);
 * with_list: fetch the committed block list at the same time if it is not known. */
static int stage_dirty(struct phi_store_obj *o, const struct slot *keep, bool with_list)
{
	struct xfer x[OBJ_SLOTS * SUBS + 1];
	size_t n = 0;
	for (size_t k = 0; k < OBJ_SLOTS; k++) {
		struct slot *sl = &o->slots[k];
		if (!sl->used || sl == keep)
			continue;
		uint64_t base = sl->idx * BLOCK, p0 = piece_of(base);
		for (unsigned u = 0; u < slot_subs(sl->idx); u++) {
			if (!(sl->dirty & (1u << u)))
				continue;
			uint64_t p = p0 + u, len = piece_len(o->size, p);
			if (!len) { /* past the end: nothing to stage */
				sl->dirty &= ~(1u << u);
				continue;
			}
			x[n++] = (struct xfer){ .o = o, .kind = X_PUT, .piece = p, .len = (size_t)len,
						.buf = sl->buf + (piece_start(p) - base), .sl = sl,
						.bit = 1u << u };
		}
	}
	if (with_list && !committed_quick(o))
		x[n++] = (struct xfer){ .o = o, .kind = X_LIST };
	if (!n)
		return 0;
	xfer_all(x, n);
	int r = 0;
	for (size_t k = 0; k < n; k++) {
		if (x[k].kind == X_LIST) {
			xfer_list_done(o, &x[k]);
			continue;
		}
		int rk = put_block_done(o, x[k].piece, x[k].len, x[k].r);
		if (rk >= 0)
			x[k].sl->dirty &= ~x[k].bit;
		else if (r >= 0)
			r = rk;
	}
	return r;
}

static int commit(struct phi_store_obj *o);

/* The read cache (az_rcache.h) holds block i of the committed version o->etag, all of
 * its committed bytes; not used while a truncate in memory hides some of them (low). */
static uint64_t rc_len(const struct phi_store_obj *o, uint64_t i)
{
	/* An object larger than half the cache is not cached: reading it through would only
	 * evict everything else and be evicted itself before a second read (scan
	 * resistance), and costs a hash and a local write of every block (bench.sh: the
	 * cold read of 512 MiB took 3.8 s instead of 1.4 s with a 256 MiB cache). */
	return o->s->rc && o->low >= o->csize && o->csize <= o->s->rcache_max / 2
		       ? block_len(o->csize, i) : 0;
}

static bool rc_load(struct phi_store_obj *o, uint64_t i, uint8_t *buf)
{
	uint64_t len = rc_len(o, i);
	return len && phi_rc_get(o->s->rc, o->name, o->etag, i, buf, (size_t)len) == 0;
}

static void rc_save(struct phi_store_obj *o, uint64_t i, const uint8_t *buf)
{
	uint64_t len = rc_len(o, i);
	if (len)
		phi_rc_put(o->s->rc, o->name, o->etag, i, buf, (size_t)len);
}

static struct slot *slot_find(struct phi_store_obj *o, uint64_t i)
{
	for (size_t k = 0; k < OBJ_SLOTS; k++)
		if (o->slots[k].used && o->slots[k].idx == i) {
			o->slots[k].tick = ++o->tick;
			return &o->slots[k];
		}
	return NULL;
}

/* A slot for block i, holding nothing yet if it was not cached (see slot_fill). */
static int slot_get(struct phi_store_obj *o, uint64_t i, struct slot **ret)
{
	struct slot *sl = slot_find(o, i);
	if (sl) {
		*ret = sl;
		return 0;
	}
	/* a free slot, else the least recently used clean one, else stage the LRU dirty one */
	struct slot *victim = NULL;
	for (size_t k = 0; k < OBJ_SLOTS && !victim; k++)
		if (!o->slots[k].used)
			victim = &o->slots[k];
	for (size_t k = 0; k < OBJ_SLOTS && !victim; k++) {
		struct slot *c = &o->slots[k];
		if (!c->dirty) {
			struct slot *best = c;
			for (size_t j = k + 1; j < OBJ_SLOTS; j++)
				if (!o->slots[j].dirty && o->slots[j].tick < best->tick)
					best = &o->slots[j];
			victim = best;
		}
	}
	if (!victim) {
		/* all dirty: stage all but the most recently used (likely still being written) */
		struct slot *newest = &o->slots[0];
		victim = &o->slots[0];
		for (size_t k = 1; k < OBJ_SLOTS; k++) {
			if (o->slots[k].tick < victim->tick)
				victim = &o->slots[k];
			if (o->slots[k].tick > newest->tick)
				newest = &o->slots[k];
		}
		int r = stage_dirty(o, newest, false);
		if (r < 0)
			return r;
	}
	if (!victim->buf) {
		victim->buf = malloc(BLOCK);
		if (!victim->buf)
			return -ENOMEM;
	}
	*victim = (struct slot){ .idx = i, .buf = victim->buf, .used = true, .tick = ++o->tick };
	*ret = victim;
	return 0;
}

/* Make the sub-units in mask of slot sl hold the object's bytes: the committed bytes below
 * min(csize, low), fetched with one ranged GET per run of adjacent sub-units, and zeros
 * above. A staged piece cannot be read back before it is committed, so that commits first.
 * with_list (a write that will be committed): fetch the committed block list alongside. */
static int slot_fill(struct phi_store_obj *o, struct slot *sl, unsigned mask, bool with_list)
{
	uint64_t i = sl->idx, base = i * BLOCK, ss = sub_size(i), p0 = piece_of(base);
	unsigned nsub = slot_subs(i);
	mask &= all_subs(i) & ~sl->present;
	if (!mask)
		return 0;
	for (unsigned u = 0; u < nsub; u++)
		if ((mask & (1u << u)) && staged_len(o, p0 + u)) {
			int r = commit(o);
			if (r < 0)
				return r;
			break;
		}
	uint64_t valid = valid_end(o);
	/* a whole block of committed bytes: from the read cache if it has it, into it if not */
	bool whole = !sl->present && mask == all_subs(i) && base < valid &&
		     !staged_any(o, p0, p0 + nsub);
	if (whole && rc_load(o, i, sl->buf)) {
		memset(sl->buf + block_len(valid, i), 0, (size_t)(BLOCK - block_len(valid, i)));
		sl->present = (uint8_t)mask;
		return 0;
	}
	struct xfer x[SUBS + 1];
	size_t n = 0;
	for (unsigned u = 0; u < nsub;) {
		if (!(mask & (1u << u))) {
			u++;
			continue;
		}
		unsigned e = u;
		while (e + 1 < nsub && (mask & (1u << (e + 1))))
			e++;
		uint64_t a = base + u * ss, b = base + (e + 1) * ss;
		memset(sl->buf + u * ss, 0, (size_t)((e + 1 - u) * ss));
		if (a < valid)
			x[n++] = (struct xfer){ .o = o, .kind = X_GET, .buf = sl->buf + u * ss, .off = a,
						.len = (size_t)((b < valid ? b : valid) - a) };
		u = e + 1;
	}
	if (with_list && n && o->writable && !committed_quick(o))
		x[n++] = (struct xfer){ .o = o, .kind = X_LIST };
	if (n)
		xfer_all(x, n);
	int r = 0;
	for (size_t k = 0; k < n; k++) {
		if (x[k].kind == X_LIST)
			xfer_list_done(o, &x[k]);
		else if (x[k].r < 0 && r >= 0)
			r = x[k].r;
	}
	if (r < 0)
		return r;
	if (whole)
		rc_save(o, i, sl->buf);
	sl->present |= mask;
	return 0;
}

/* The object is about to grow: a staged partial last piece would be committed short.
 * Re-stage it from the cache at the next commit, or commit it now if it is not cached. */
static int grow_prep(struct phi_store_obj *o)
{
	if (!o->size)
		return 0;
	uint64_t p = piece_of(o->size - 1);
	if (!staged_len(o, p) || o->size == piece_end(p))
		return 0;
	uint64_t i = piece_start(p) / BLOCK;
	unsigned bit = 1u << (p - piece_of(i * BLOCK));
	struct slot *sl = slot_find(o, i);
	if (sl && (sl->present & bit)) {
		(void)staged_set(o, p, 0);
		sl->dirty |= bit;
		return 0;
	}
	return commit(o);
}

/* After a failed If-Match: adopt a metadata-only change (same content generation). */
static int adopt_meta(struct phi_store_obj *o)
{
	struct meta m;
	char etag[96];
	uint64_t size;
	int r = head_blob(o->s, o->name, &m, &size, etag, sizeof etag);
	if (r == -ENOENT)
		return -ESTALE;
	if (r < 0)
		return r;
	if (m.gen != o->meta.gen || size != o->csize)
		return -ESTALE;
	o->meta = m;
	(void)snprintf(o->etag, sizeof o->etag, "%s", etag);
	o->meta_fresh_after_write = true;
	return 0;
}

/* Put Blob of an object of at most one piece. */
static int commit_small(struct phi_store_obj *o, const struct meta *m, char *etag, size_t esize)
{
	struct slot *sl = NULL;
	for (size_t k = 0; k < OBJ_SLOTS && !sl; k++)
		if (o->slots[k].used && o->slots[k].idx == 0 && (o->slots[k].present & 1))
			sl = &o->slots[k];
	const uint8_t *data = sl ? sl->buf : NULL;
	_cleanup_free_ uint8_t *tmp = NULL;
	if (!sl && o->size) {
		/* not cached (a truncate without writes): its committed bytes and zeros */
		uint64_t valid = valid_end(o), want = valid < o->size ? valid : o->size;
		size_t got = 0;
		tmp = calloc(1, (size_t)o->size);
		if (!tmp)
			return -ENOMEM;
		int r = want ? ranged_get(o, tmp, 0, (size_t)want, &got) : 0;
		if (r < 0)
			return r;
		if (got != want)
			return -EIO;
		data = tmp;
	}
	int r = put_blob(o->s, o->name, data, (size_t)o->size, m, o->etag, etag, esize);
	if (r < 0)
		return r;
	if (sl)
		sl->dirty = 0;
	set_committed(o, NULL, 0); /* Put Blob leaves no committed block list */
	return 0;
}

static int journal_rec(struct phi_store_obj *o, enum phi_aj_type type, uint64_t off,
		       const void *data, uint64_t len);

static int commit_once(struct phi_store_obj *o)
{
	struct az_store *s = o->s;
	uint64_t np = npieces(o->size);
	struct meta m = o->meta;
	m.gen = rnd64();
	/* Before the request that makes it visible: if we die before the answer, a later
	 * mount finds this generation on the blob and knows the journal is in the store.
	 * Best effort: without it that mount sees a changed blob and keeps the journal aside
	 * as a conflict, which loses nothing. */
	(void)journal_rec(o, PHI_AJ_GEN, m.gen, NULL, 0);
	if (!o->meta_fresh_after_write)
		m.mtime = m.ctime = o->wtime;
	char etag[96];

	if (o->size <= PIECE && !staged_any(o, 0, o->staged_cap)) {
		int r = commit_small(o, &m, etag, sizeof etag);
		if (r < 0)
			return r;
	} else {
		/* the dirty pieces, with the committed block list if not known, all at once */
		int r = stage_dirty(o, NULL, true);
		if (r < 0)
			return r;
		if (!o->committed_known) {
			r = fetch_committed(o);
			if (r < 0)
				return r;
		}
		/* The new block list, piece by piece: a staged piece by our id; else a committed
		 * block that starts here, ends on the grid (or ends the object), holds bytes that
		 * are still valid and overlaps no staged piece, by its id; else the piece is
		 * rebuilt (cached bytes, or its committed bytes and zeros) and staged. */
		uint64_t valid = valid_end(o);
		_cleanup_free_ struct phi_az_block *nl = calloc(np ? np : 1, sizeof *nl);
		_cleanup_free_ struct xfer *x = calloc(np ? np : 1, sizeof *x);
		if (!nl || !x)
			return -ENOMEM;
		size_t nn = 0, nx = 0, ci = 0;
		uint64_t coff = 0;
		for (uint64_t pos = 0; pos < o->size;) {
			uint64_t p = piece_of(pos), len = piece_len(o->size, p);
			uint32_t sl_len = staged_len(o, p);
			if (sl_len) {
				if (sl_len != len)
					return -EIO; /* cannot happen: staged_set's invariant */
				block_id(o, p, nl[nn].id, sizeof nl[nn].id);
				nl[nn++].size = len;
				pos += len;
				continue;
			}
			while (ci < o->ncommitted && coff < pos)
				coff += o->committed[ci++].size;
			if (ci < o->ncommitted && coff == pos && o->committed[ci].size) {
				uint64_t b = pos + o->committed[ci].size;
				bool ok = b <= valid && b <= o->size &&
					  (b == o->size || b == piece_start(piece_of(b))) &&
					  !staged_any(o, p, piece_of(b - 1) + 1);
				if (ok) {
					nl[nn++] = o->committed[ci];
					pos = b;
					continue;
				}
			}
			uint64_t i = pos / BLOCK;
			unsigned bit = 1u << (p - piece_of(i * BLOCK));
			struct slot *sl = NULL;
			for (size_t k = 0; k < OBJ_SLOTS && !sl; k++)
				if (o->slots[k].used && o->slots[k].idx == i && (o->slots[k].present & bit))
					sl = &o->slots[k];
			if (sl)
				x[nx++] = (struct xfer){ .o = o, .kind = X_PUT, .piece = p, .len = (size_t)len,
							 .buf = sl->buf + (pos - i * BLOCK) };
			else
				x[nx++] = (struct xfer){ .o = o, .kind = X_COPY, .piece = p, .off = pos,
							 .len = (size_t)len,
							 .have = (size_t)(valid <= pos ? 0 : valid - pos < len ? valid - pos : len) };
			block_id(o, p, nl[nn].id, sizeof nl[nn].id);
			nl[nn++].size = len;
			pos += len;
		}
		if (nx) {
			xfer_all(x, nx);
			for (size_t k = 0; k < nx; k++) {
				int rk = put_block_done(o, x[k].piece, x[k].len, x[k].r);
				if (rk < 0)
					return rk;
			}
		}
		size_t xcap = 64 + nn * (sizeof nl[0].id + 24), xl;
		_cleanup_free_ char *xml = malloc(xcap);
		if (!xml)
			return -ENOMEM;
		xl = (size_t)snprintf(xml, xcap, "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList>");
		for (size_t k = 0; k < nn; k++)
			xl += (size_t)snprintf(xml + xl, xcap - xl, "<Latest>%s</Latest>", nl[k].id);
		xl += (size_t)snprintf(xml + xl, xcap - xl, "</BlockList>");
		char pm[PIECES_META_MAX + 1];
		pieces_meta(nl, nn, o->size, pm, sizeof pm);
		struct req q;
		r = req_init(s, &q, "PUT", o->name);
		r = r < 0 ? r : req_query(&q, "comp", "blocklist");
		r = r < 0 ? r : meta_hdrs(&q, &m);
		if (r >= 0 && pm[0])
			r = req_hdr(&q, "x-ms-meta-phipieces", "%s", pm);
		r = r < 0 ? r : req_hdr(&q, "if-match", "%s", o->etag);
		if (r < 0)
			return r;
		q.body = xml;
		q.body_len = xl;
		r = perform(s, &q);
		if (r < 0)
			return r;
		if (q.status == 400 && o->committed_from_meta) {
			/* a list from phipieces that the service does not have (the blob's blocks
			 * changed under metadata that stayed): ask it, and try again */
			o->committed_known = o->committed_from_meta = false;
			return -EAGAIN;
		}
		r = status_errno(&q);
		if (r < 0)
			return r;
		(void)snprintf(etag, sizeof etag, "%s", q.etag);
		set_committed(o, TAKE_PTR(nl), nn);
	}
	(void)snprintf(o->etag, sizeof o->etag, "%s", etag);
	o->meta = m;
	o->csize = o->low = o->size;
	o->dirty = false;
	if (o->staged) /* memset(NULL, 0, 0) is undefined */
		memset(o->staged, 0, o->staged_cap * sizeof *o->staged);
	o->session = rnd32(); /* fresh block ids: no staged leftovers can be mistaken for ours */
	return 0;
}

/* Commit the object's state: 0, or -EIO on a conflict with another writer (logged). */
static int commit(struct phi_store_obj *o)
{
	if (!o->dirty || o->unlinked) {
		phi_aj_drop(o->j); /* nothing left to keep: committed, or meant to vanish */
		o->j = NULL;
		return 0;
	}
	for (int tries = 0; tries < 4; tries++) {
		int r = commit_once(o);
		if (r == -EAGAIN)
			continue;
		if (r >= 0) {
			phi_aj_drop(o->j);
			o->j = NULL;
		}
		if (r != -ESTALE)
			return r == -ENOENT && o->unlinked ? 0 : r == -ENOENT ? -EIO : r;
		/* our ETag is stale: a metadata-only change is adopted, anything else is a conflict */
		r = adopt_meta(o);
		if (r == -ESTALE) {
			fprintf(stderr, "phifs: azure: conflict: an object was changed by another writer; "
					"this mount's uncommitted writes to it were not stored\n");
			return -EIO;
		}
		if (r < 0)
			return r;
		o->committed_known = false;
		o->pieces[0] = 0;
	}
	return -EIO;
}

static void obj_set_err(struct phi_store_obj *o, int r)
{
	if (!o->err)
		o->err = r;
}

/* ---- the write journal (az_journal.h): every change since the last commit, on local
 * disk, so that a crash of phifs loses no accepted write; the caller holds o->lock ---- */

static int journal_rec(struct phi_store_obj *o, enum phi_aj_type type, uint64_t off,
		       const void *data, uint64_t len)
{
	if (!o->s->jd || o->replaying || o->unlinked)
		return 0;
	if (!o->j) {
		if (type == PHI_AJ_GEN)
			return 0; /* no writes journaled: nothing to recognise later */
		struct phi_aj_base b = { .name = o->name, .etag = o->etag, .gen = o->meta.gen,
					 .size = o->csize };
		int r = phi_aj_create(o->s->jd, &b, &o->j);
		if (r < 0)
			return r;
	}
	/* On failure a half-written record ends the journal (a torn tail, which a replay
	 * drops); the records before it stay valid until the commit the caller makes now,
	 * which empties the journal, or stay for the next mount if that commit fails. */
	return phi_aj_append(o->j, type, off, data, len);
}

/* Journal a change before it is made. A journal that cannot take it (full disk, the
 * cache_max limit) does not fail the change: the object is committed first, which empties
 * its journal, and if the journal still cannot take it the change is committed right
 * after it is made (*through: write-through, slower but as safe). */
static int journal_before(struct phi_store_obj *o, enum phi_aj_type type, uint64_t off,
			  const void *data, uint64_t len, bool *through)
{
	*through = false;
	if (!o->s->jd || o->replaying || o->unlinked)
		return 0;
	if (phi_ajd_full(o->s->jd, len + 64) || journal_rec(o, type, off, data, len) < 0) {
		int r = commit(o);
		if (r < 0)
			return r;
		if (phi_ajd_full(o->s->jd, len + 64) || journal_rec(o, type, off, data, len) < 0)
			*through = true;
	}
	return 0;
}

static int obj_new(struct az_store *s, const char *blob, bool writable, const struct meta *m,
		   uint64_t size, const char *etag, struct phi_store_obj **ret)
{
	struct phi_store_obj *o = calloc(1, sizeof *o);
	if (!o)
		return -ENOMEM;
	o->s = s;
	pthread_mutex_init(&o->lock, NULL);
	(void)snprintf(o->name, sizeof o->name, "%s", blob);
	o->writable = writable;
	(void)snprintf(o->etag, sizeof o->etag, "%s", etag);
	o->meta = *m;
	o->size = o->csize = o->low = size;
	o->wtime = m->mtime;
	o->session = rnd32();
	pthread_mutex_lock(&s->lock);
	o->next = s->open;
	s->open = o;
	pthread_mutex_unlock(&s->lock);
	*ret = o;
	return 0;
}

/* What an open needs of a blob, in one request: Get Blob of its first OPEN_READ bytes
 * brings the properties, the metadata and those bytes (the file header every open reads
 * next). An empty blob has no range to read: its properties come from a HEAD. */
struct opened {
	struct meta m;
	uint64_t size;
	char etag[96];
	char pieces[PIECES_META_MAX + 1];
	uint8_t head[OPEN_READ];
	size_t head_len;
};

static int open_get(struct az_store *s, const char *blob, struct opened *ret)
{
	struct req q;
	int r = req_init(s, &q, "GET", blob);
	r = r < 0 ? r : req_hdr(&q, "x-ms-range", "bytes=0-%u", OPEN_READ - 1);
	if (r < 0)
		return r;
	q.buf = ret->head;
	q.cap = sizeof ret->head;
	r = perform(s, &q);
	if (r < 0)
		return r;
	if (q.status == 416) {
		ret->head_len = 0;
		ret->pieces[0] = 0;
		return head_blob(s, blob, &ret->m, &ret->size, ret->etag, sizeof ret->etag);
	}
	r = status_errno(&q);
	if (r < 0)
		return r;
	if (q.overflow || !q.have_range || q.got > q.range_total ||
	    q.got != (q.range_total < OPEN_READ ? q.range_total : OPEN_READ))
		return -EIO;
	meta_fixup(&q, blob);
	ret->m = q.meta;
	ret->size = q.range_total;
	(void)snprintf(ret->etag, sizeof ret->etag, "%s", q.etag);
	(void)snprintf(ret->pieces, sizeof ret->pieces, "%s", q.pieces);
	ret->head_len = q.got;
	return 0;
}

static int az_release(struct phi_store_obj *o);

static int az_open(struct phi_store *ps, const char *path, int flags, uint32_t mode,
		   struct phi_store_obj **ret)
{
	struct az_store *s = to_az(ps);
	int r = path_check(path, false);
	if (r < 0)
		return r;
	int acc = flags & O_ACCMODE;
	if (acc != O_RDONLY && acc != O_WRONLY && acc != O_RDWR)
		return -EINVAL;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	_cleanup_free_ struct opened *op = calloc(1, sizeof *op);
	if (!op)
		return -ENOMEM;
	for (int tries = 0;; tries++) {
		r = open_get(s, blob, op);
		if (r == 0 && (flags & O_CREAT) && (flags & O_EXCL))
			return -EEXIST;
		if (r != -ENOENT || !(flags & O_CREAT) || tries > 2)
			break;
		r = parent_check(s, path);
		if (r < 0)
			return r;
		op->m = meta_new(S_IFREG | (mode & 07777), (uint32_t)-1, (uint32_t)-1);
		r = put_blob(s, blob, NULL, 0, &op->m, "*", op->etag, sizeof op->etag);
		if (r == 0) {
			op->size = op->head_len = 0;
			op->pieces[0] = 0;
			break;
		}
		if (r != -EEXIST)
			return r;
		if (flags & O_EXCL)
			return -EEXIST;
	}
	if (r == -ENOENT) {
		int p = parent_check(s, path);
		return p == -ENOTDIR ? -ENOTDIR : -ENOENT;
	}
	if (r < 0)
		return r;
	if (S_ISDIR(op->m.mode))
		return -EISDIR;
	if (S_ISLNK(op->m.mode))
		return -ELOOP;
	if (!S_ISREG(op->m.mode))
		return -EINVAL;
	struct phi_store_obj *o;
	r = obj_new(s, blob, acc != O_RDONLY, &op->m, op->size, op->etag, &o);
	if (r < 0)
		return r;
	memcpy(o->pieces, op->pieces, sizeof o->pieces);
	memcpy(o->head, op->head, op->head_len);
	o->head_len = op->head_len;
	if (flags & O_TRUNC && acc != O_RDONLY && op->size) {
		bool through = false;
		pthread_mutex_lock(&o->lock);
		r = journal_before(o, PHI_AJ_TRUNCATE, 0, NULL, 0, &through);
		if (r >= 0) {
			o->size = o->low = 0;
			o->head_len = 0;
			o->dirty = true;
			o->wtime = now_real();
		}
		if (r >= 0 && through)
			r = commit(o);
		pthread_mutex_unlock(&o->lock);
		if (r < 0) {
			(void)az_release(o);
			return r;
		}
	}
	*ret = o;
	return 0;
}

static int az_create(struct phi_store *ps, const char *path, uint32_t mode, uint32_t uid,
		     uint32_t gid, const void *init, size_t len, struct phi_store_obj **ret)
{
	struct az_store *s = to_az(ps);
	if (!init && len)
		return -EINVAL;
	int r = path_check(path, false);
	if (r < 0)
		return r;
	r = parent_check(s, path);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	struct meta m = meta_new(S_IFREG | (mode & 07777), uid, gid);
	char etag[96];
	/* one Put Blob with If-None-Match: * is both atomic and exclusive */
	r = put_blob(s, blob, init, len, &m, "*", etag, sizeof etag);
	if (r < 0)
		return r;
	/* what a HEAD would say now (the metadata just sent, the initial content's length),
	 * so that the caller's getattr of the new file needs none; gen is read after the PUT
	 * bumped it, so any later change of this mount still voids it */
	cache_put(s, blob, &m, len, cache_gen(s));
	struct phi_store_obj *o;
	r = obj_new(s, blob, true, &m, len, etag, &o);
	if (r < 0)
		return r;
	o->committed_known = true; /* Put Blob: no committed blocks */
	if (len && len <= BLOCK) {
		/* the initial content is block 0: writes after it need not read it back */
		uint8_t *b = malloc(BLOCK);
		if (b) {
			memset(b + len, 0, BLOCK - len);
			memcpy(b, init, len);
			o->slots[0] = (struct slot){ .idx = 0, .buf = b, .used = true,
						     .present = (uint8_t)all_subs(0), .tick = ++o->tick };
		}
	}
	*ret = o;
	return 0;
}

/* Sequential reads: load block i and the next ones into clean slots at once. Best effort:
 * a block that fails here is loaded (and its error reported) by slot_fill. */
static void prefetch(struct phi_store_obj *o, uint64_t i)
{
	struct slot *v[OBJ_SLOTS];
	uint64_t idx[OBJ_SLOTS];
	size_t n = 0;
	for (uint64_t j = i; n < OBJ_SLOTS - 1 && j * BLOCK < o->size; j++) {
		uint64_t p0 = piece_of(j * BLOCK);
		if (slot_find(o, j) || staged_any(o, p0, p0 + slot_subs(j)))
			break;
		/* the least recently used slot that is free or clean and not taken yet */
		struct slot *best = NULL;
		for (size_t k = 0; k < OBJ_SLOTS; k++) {
			struct slot *c = &o->slots[k];
			bool taken = false;
			for (size_t m = 0; m < n; m++)
				taken |= v[m] == c;
			if (taken || (c->used && c->dirty))
				continue;
			if (!best || !c->used || (best->used && c->tick < best->tick))
				best = c;
		}
		if (!best)
			break;
		if (!best->buf && !(best->buf = malloc(BLOCK)))
			break;
		best->used = false;
		memset(best->buf, 0, BLOCK);
		v[n] = best;
		idx[n++] = j;
	}
	if (n < 2)
		return; /* nothing to overlap: slot_fill does it */
	/* One GET for the run: blocks past the committed bytes hold zeros and come last. One
	 * request of up to (OBJ_SLOTS - 1) * BLOCK rather than one per block: a request costs a
	 * round trip and a transaction on real Azure, and Azurite hashes (MD5) every ranged
	 * answer of 4 MiB or less, which halved its read rate (docs/azure-store.md). */
	struct iovec iov[OBJ_SLOTS];
	size_t niov = 0, total = 0, got = 0, first = 0;
	uint64_t valid = valid_end(o);
	/* the blocks the read cache holds need no download; the GET starts at the first
	 * block it lacks */
	while (first < n && block_len(valid, idx[first]) && rc_load(o, idx[first], v[first]->buf))
		first++;
	for (size_t k = first; k < n && block_len(valid, idx[k]); k++) {
		iov[niov++] = (struct iovec){ .iov_base = v[k]->buf,
					      .iov_len = (size_t)block_len(valid, idx[k]) };
		total += iov[niov - 1].iov_len;
	}
	int r = total ? ranged_getv(o, NULL, iov, niov, idx[first] * BLOCK, total, &got) : 0;
	if (r < 0 || got != total)
		return; /* slot_fill loads (and reports) it */
	for (size_t k = first; k < first + niov; k++)
		rc_save(o, idx[k], v[k]->buf);
	for (size_t k = 0; k < n; k++)
		*v[k] = (struct slot){ .idx = idx[k], .buf = v[k]->buf, .used = true,
				       .present = (uint8_t)all_subs(idx[k]), .tick = ++o->tick };
}

static int az_pread(struct phi_store_obj *o, void *buf, size_t len, uint64_t off, size_t *ret_n)
{
	if (off > INT64_MAX || len > (size_t)SSIZE_MAX)
		return -EINVAL;
	pthread_mutex_lock(&o->lock);
	size_t done = 0;
	int r = 0;
	while (done < len && off + done < o->size) {
		uint64_t pos = off + done, i = pos / BLOCK;
		/* only a second read in sequence starts read-ahead: every open reads the file
		 * header at offset 0, and a 4 KiB overwrite must not cost three block downloads */
		if (o->next_read && i == o->next_read && !slot_find(o, i))
			prefetch(o, i);
		bool seq = o->next_read && i == o->next_read;
		o->next_read = i + 1;
		uint64_t in = pos - i * BLOCK;
		uint64_t n = block_len(o->size, i) - in;
		if (n > len - done)
			n = len - done;
		if (pos < o->head_len) { /* read by the open, unchanged since */
			if (n > o->head_len - pos)
				n = o->head_len - pos;
			memcpy((uint8_t *)buf + done, o->head + pos, (size_t)n);
			done += (size_t)n;
			continue;
		}
		unsigned touch = subs_of(i, pos, n);
		uint64_t p0 = piece_of(i * BLOCK);
		struct slot *sl = slot_find(o, i);
		if (!sl || (touch & ~sl->present)) {
			/* a small read off the sequence (a file header at open, a random 4 KiB) of
			 * committed bytes that this mount holds nowhere: fetch that range, not the
			 * block */
			bool held = (sl && (touch & sl->present)) ||
				    staged_any(o, piece_of(pos), piece_of(pos + n - 1) + 1);
			/* While the caller has a write-only handle (write_intent; not o->writable, as
			 * phifs opens every object read-write), such a read is the read half of a
			 * read-modify-write (phifs reads the cipher blocks a write covers only in
			 * part): the piece it falls in is uploaded whole at the commit, so fetch
			 * that piece now, once, instead of the range now and the piece again at
			 * the commit (tests/azure/bench.sh, 4 KiB overwrite: 6 requests, now 4). */
			bool rmw = o->write_intent && !seq && len <= SMALL_READ;
			if (!seq && len <= SMALL_READ && pos + n <= valid_end(o) && !held && !rmw) {
				size_t got = 0;
				r = ranged_get(o, (uint8_t *)buf + done, pos, (size_t)n, &got);
				if (r >= 0 && got != n)
					r = -EIO;
				if (r < 0)
					break;
				done += (size_t)n;
				continue;
			}
			if (!sl) {
				r = slot_get(o, i, &sl);
				if (r < 0)
					break;
			}
			/* the whole block, as read-ahead, but for other staged pieces (reading them
			 * back needs a commit); for a read-modify-write only the touched pieces */
			unsigned want = touch;
			for (unsigned u = 0; u < slot_subs(i) && !rmw; u++)
				if (!staged_len(o, p0 + u))
					want |= 1u << u;
			r = slot_fill(o, sl, want, false);
			if (r < 0)
				break;
		}
		memcpy((uint8_t *)buf + done, sl->buf + in, (size_t)n);
		done += (size_t)n;
	}
	pthread_mutex_unlock(&o->lock);
	if (r < 0)
		return r;
	*ret_n = done;
	return 0;
}

static int az_pwrite(struct phi_store_obj *o, const void *buf, size_t len, uint64_t off)
{
	if (off > INT64_MAX || len > (size_t)SSIZE_MAX)
		return -EINVAL;
	if (len > MAX_OBJ_SIZE || off > MAX_OBJ_SIZE - len)
		return -EFBIG;
	pthread_mutex_lock(&o->lock);
	int r = o->writable ? 0 : -EBADF;
	bool through = false;
	if (r >= 0 && len)
		r = journal_before(o, PHI_AJ_WRITE, off, buf, len, &through);
	if (r >= 0 && off < o->head_len)
		o->head_len = 0;
	size_t done = 0;
	while (r >= 0 && done < len) {
		uint64_t pos = off + done, i = pos / BLOCK, base = i * BLOCK, in = pos - base;
		uint64_t n = BLOCK - in;
		if (n > len - done)
			n = len - done;
		struct slot *sl;
		r = slot_get(o, i, &sl);
		/* after slot_get, which may have staged the old last piece to make room */
		if (r >= 0 && pos + n > o->size)
			r = grow_prep(o);
		if (r < 0)
			break;
		/* a touched piece needs its old bytes unless the write covers all of them or
		 * they are zeros (past the committed bytes and not staged) */
		uint64_t valid = valid_end(o), ss = sub_size(i), p0 = piece_of(base);
		unsigned touch = subs_of(i, pos, n), need = 0;
		for (unsigned u = 0; u < slot_subs(i); u++) {
			if (!(touch & ~sl->present & (1u << u)))
				continue;
			uint64_t a = base + u * ss, e = a + ss < o->size ? a + ss : o->size;
			bool covered = pos <= a && pos + n >= e;
			bool zeros = a >= valid && !staged_len(o, p0 + u);
			if (!covered && !zeros)
				need |= 1u << u;
		}
		r = slot_fill(o, sl, need, true);
		if (r < 0)
			break;
		for (unsigned u = 0; u < slot_subs(i); u++)
			if (touch & ~sl->present & (1u << u)) {
				memset(sl->buf + u * ss, 0, (size_t)ss);
				sl->present |= 1u << u;
			}
		memcpy(sl->buf + in, (const uint8_t *)buf + done, (size_t)n);
		sl->dirty |= touch;
		done += (size_t)n;
		if (pos + n > o->size)
			o->size = pos + n;
		o->dirty = true;
		o->wtime = now_real();
		o->meta_fresh_after_write = false;
	}
	if (r >= 0 && through)
		r = commit(o);
	if (r < 0)
		obj_set_err(o, r);
	pthread_mutex_unlock(&o->lock);
	return r;
}

static int az_truncate(struct phi_store_obj *o, uint64_t size)
{
	if (size > INT64_MAX)
		return -EINVAL;
	if (size > MAX_OBJ_SIZE)
		return -EFBIG;
	pthread_mutex_lock(&o->lock);
	int r = o->writable ? 0 : -EBADF;
	bool through = false;
	if (r >= 0 && size != o->size)
		r = journal_before(o, PHI_AJ_TRUNCATE, size, NULL, 0, &through);
	if (r >= 0 && size < o->head_len)
		o->head_len = (size_t)size;
	if (r >= 0 && size < o->size) {
		uint64_t edge = size / BLOCK, pe = piece_of(size);
		bool cut = size > piece_start(pe); /* the new last piece loses bytes: rebuilt */
		struct slot *sl = NULL;
		if (cut) {
			r = slot_get(o, edge, &sl);
			if (r >= 0)
				r = slot_fill(o, sl, 1u << (pe - piece_of(edge * BLOCK)), false);
		}
		for (size_t k = 0; r >= 0 && k < OBJ_SLOTS; k++) {
			struct slot *c = &o->slots[k];
			if (!c->used)
				continue;
			if (c->idx * BLOCK >= size) {
				c->used = false;
				c->present = c->dirty = 0;
			} else if (c->idx == edge) {
				/* zeros past the new end; the pieces there hold nothing */
				uint64_t base = edge * BLOCK, ss = sub_size(edge);
				memset(c->buf + (size - base), 0, (size_t)(BLOCK - (size - base)));
				for (unsigned u = 0; u < slot_subs(edge); u++)
					if (base + u * ss >= size) {
						c->present |= 1u << u;
						c->dirty &= ~(1u << u);
					}
				if (cut)
					c->dirty |= 1u << (pe - piece_of(base));
			}
		}
		for (uint64_t p = pe; r >= 0 && p < o->staged_cap; p++)
			o->staged[p] = 0;
		if (r >= 0 && size < o->low)
			o->low = size;
	}
	if (r >= 0 && size > o->size)
		r = grow_prep(o);
	if (r >= 0 && size != o->size) {
		o->size = size;
		o->dirty = true;
		o->wtime = now_real();
		o->meta_fresh_after_write = false;
	}
	if (r >= 0 && through)
		r = commit(o);
	pthread_mutex_unlock(&o->lock);
	return r;
}

static int az_size(struct phi_store_obj *o, uint64_t *ret)
{
	pthread_mutex_lock(&o->lock);
	*ret = o->size;
	pthread_mutex_unlock(&o->lock);
	return 0;
}

static int az_fsync(struct phi_store_obj *o, bool datasync)
{
	(void)datasync;
	pthread_mutex_lock(&o->lock);
	int r = commit(o);
	if (r < 0)
		obj_set_err(o, r);
	pthread_mutex_unlock(&o->lock);
	return r;
}

static int az_release(struct phi_store_obj *o)
{
	if (!o)
		return 0;
	struct az_store *s = o->s;
	pthread_mutex_lock(&o->lock);
	int r = commit(o);
	int err = o->err;
	/* not committed: the journal stays for the next mount, which uploads it */
	phi_aj_keep(o->j);
	o->j = NULL;
	pthread_mutex_unlock(&o->lock);
	pthread_mutex_lock(&s->lock);
	for (struct phi_store_obj **pp = &s->open; *pp; pp = &(*pp)->next)
		if (*pp == o) {
			*pp = o->next;
			break;
		}
	pthread_mutex_unlock(&s->lock);
	for (size_t k = 0; k < OBJ_SLOTS; k++)
		free(o->slots[k].buf);
	free(o->staged);
	free(o->committed);
	pthread_mutex_destroy(&o->lock);
	free(o);
	return err < 0 ? err : r;
}

/* ---- unlink and rename, which must keep open objects right ---- */

/* An object open on blob is about to lose its name: commit it, and if it will be removed,
 * keep its bytes in memory so the open handle can still read them. */
static int settle_open(struct az_store *s, const char *blob, bool removing)
{
	pthread_mutex_lock(&s->lock);
	struct phi_store_obj *o = find_open_locked(s, blob);
	int r = 0;
	if (o) {
		pthread_mutex_lock(&o->lock);
		r = commit(o);
		if (r >= 0 && removing) {
			if (o->size > (uint64_t)UNLINKED_KEEP || nblocks(o->size) > OBJ_SLOTS) {
				/* too big to keep: later reads of uncached blocks fail with EIO */
			} else {
				for (uint64_t i = 0; r >= 0 && i < nblocks(o->size); i++) {
					struct slot *sl;
					r = slot_get(o, i, &sl);
					r = r < 0 ? r : slot_fill(o, sl, all_subs(i), false);
				}
			}
			if (r >= 0)
				o->unlinked = true;
		}
		pthread_mutex_unlock(&o->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return r;
}

static int az_unlink(struct phi_store *ps, const char *path)
{
	struct az_store *s = to_az(ps);
	int r = path_check(path, false);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	struct meta m;
	r = head_blob(s, blob, &m, NULL, NULL, 0);
	if (r == -ENOENT) {
		int p = parent_check(s, path);
		return p == -ENOTDIR ? -ENOTDIR : -ENOENT;
	}
	if (r < 0)
		return r;
	if (S_ISDIR(m.mode))
		return -EISDIR;
	r = settle_open(s, blob, true);
	if (r < 0)
		return r;
	r = delete_blob(s, blob);
	return r;
}

static int az_link(struct phi_store *ps, const char *from, const char *to)
{
	(void)ps;
	if (path_check(from, false) < 0 || path_check(to, false) < 0)
		return -EINVAL;
	/* blob names are not inodes: hard links cannot be expressed (docs/azure-store.md) */
	return -EPERM;
}

/* Copy Blob within the account; cond "*" makes it create-only. */
static int copy_blob(struct az_store *s, const char *from, const char *to, const char *cond)
{
	struct req q;
	int r = req_init(s, &q, "PUT", to);
	r = r < 0 ? r : req_hdr(&q, "x-ms-copy-source", "%s/%s/%s", s->base_url, s->container, from);
	if (r >= 0 && cond)
		r = req_hdr(&q, "if-none-match", "*");
	if (r < 0)
		return r;
	r = perform(s, &q);
	if (r < 0)
		return r;
	r = status_errno(&q);
	if (r == -ESTALE && cond)
		return -EEXIST;
	if (r < 0)
		return r;
	/* real Azure may copy asynchronously: wait for it, within the deadline */
	uint64_t end = now_ms() + s->deadline_ms;
	while (!strcmp(q.copy_status, "pending")) {
		if (now_ms() >= end)
			return -ETIMEDOUT;
		struct timespec ts = { .tv_nsec = 100 * 1000000 };
		nanosleep(&ts, NULL);
		r = req_init(s, &q, "HEAD", to);
		r = r < 0 ? r : perform(s, &q);
		r = r < 0 ? r : status_errno(&q);
		if (r < 0)
			return r;
	}
	return q.copy_status[0] && strcmp(q.copy_status, "success") ? -EIO : 0;
}

/* the blobs of a subtree, collected for a directory rename */
struct names_vec {
	char **v;
	size_t n, cap;
};

static int collect_name(void *ctx, const struct phi_az_entry *e)
{
	struct names_vec *nv = ctx;
	if (e->is_prefix)
		return 0;
	if (nv->n == nv->cap) {
		size_t nc = nv->cap ? nv->cap * 2 : 64;
		char **p = realloc(nv->v, nc * sizeof *p);
		if (!p)
			return -ENOMEM;
		nv->v = p;
		nv->cap = nc;
	}
	nv->v[nv->n] = strdup(e->name);
	if (!nv->v[nv->n])
		return -ENOMEM;
	nv->n++;
	return 0;
}

static void names_free(struct names_vec *nv)
{
	for (size_t i = 0; i < nv->n; i++)
		free(nv->v[i]);
	free(nv->v);
}

/* Move one entry (a blob, or a directory marker and everything below it) from -> to. */
static int move_tree(struct az_store *s, const char *from, const char *to, bool is_dir)
{
	int r = settle_open(s, from, false);
	if (r < 0)
		return r;
	r = copy_blob(s, from, to, NULL);
	if (r < 0)
		return r;
	if (is_dir) {
		char pfx[PHI_STORE_PATH_MAX + 1200];
		(void)snprintf(pfx, sizeof pfx, "%s/", from);
		_cleanup_(names_free) struct names_vec nv = { 0 };
		r = list_blobs(s, pfx, true, 0, collect_name, &nv, NULL, NULL);
		if (r < 0)
			return r;
		size_t fl = strlen(from);
		for (size_t i = 0; i < nv.n; i++) {
			char dst[PHI_STORE_PATH_MAX + 1200];
			int n = snprintf(dst, sizeof dst, "%s%s", to, nv.v[i] + fl);
			if (n < 0 || (size_t)n >= sizeof dst)
				return -ENAMETOOLONG;
			r = settle_open(s, nv.v[i], false);
			r = r < 0 ? r : copy_blob(s, nv.v[i], dst, NULL);
			if (r < 0)
				return r;
		}
		for (size_t i = 0; i < nv.n; i++) {
			r = delete_blob(s, nv.v[i]);
			if (r < 0 && r != -ENOENT)
				return r;
		}
	}
	r = delete_blob(s, from);
	if (r < 0 && r != -ENOENT)
		return r;

	/* open objects follow their names, and their ETags change with the copy */
	pthread_mutex_lock(&s->lock);
	size_t fl = strlen(from);
	for (struct phi_store_obj *o = s->open; o; o = o->next) {
		if (o->unlinked)
			continue;
		bool same = !strcmp(o->name, from);
		bool below = is_dir && !strncmp(o->name, from, fl) && o->name[fl] == '/';
		if (!same && !below)
			continue;
		char nn[sizeof o->name];
		int n = snprintf(nn, sizeof nn, "%s%s", to, o->name + fl);
		if (n < 0 || (size_t)n >= sizeof nn)
			continue;
		pthread_mutex_lock(&o->lock);
		memcpy(o->name, nn, sizeof nn);
		(void)head_blob(s, o->name, NULL, NULL, o->etag, sizeof o->etag);
		o->committed_known = false;
		o->pieces[0] = 0;
		pthread_mutex_unlock(&o->lock);
	}
	pthread_mutex_unlock(&s->lock);
	return 0;
}

static int az_rename(struct phi_store *ps, const char *from, const char *to, unsigned flags)
{
	struct az_store *s = to_az(ps);
	if (flags != 0 && flags != RENAME_NOREPLACE && flags != RENAME_EXCHANGE)
		return -EINVAL;
	int r = path_check(from, false);
	if (r >= 0)
		r = path_check(to, false);
	if (r < 0)
		return r;
	char fb[PHI_STORE_PATH_MAX + 1100], tb[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, from, fb, sizeof fb);
	r = r < 0 ? r : blob_name(s, to, tb, sizeof tb);
	if (r < 0)
		return r;
	struct meta fm, tm;
	r = head_blob(s, fb, &fm, NULL, NULL, 0);
	if (r == -ENOENT) {
		int p = parent_check(s, from);
		return p == -ENOTDIR ? -ENOTDIR : -ENOENT;
	}
	if (r < 0)
		return r;
	r = parent_check(s, to);
	if (r < 0)
		return r;
	if (!strcmp(fb, tb))
		return 0;
	size_t fl = strlen(fb);
	if (S_ISDIR(fm.mode) && !strncmp(tb, fb, fl) && tb[fl] == '/')
		return -EINVAL; /* into itself */
	int te = head_blob(s, tb, &tm, NULL, NULL, 0);
	if (te < 0 && te != -ENOENT)
		return te;
	bool exists = te == 0;
	if (flags == RENAME_NOREPLACE && exists)
		return -EEXIST;
	if (flags == RENAME_EXCHANGE) {
		if (!exists)
			return -ENOENT;
		/* through a hidden temp name; not atomic (docs/azure-store.md) */
		char tmp[PHI_STORE_PATH_MAX + 1200];
		(void)snprintf(tmp, sizeof tmp, "%s.phi-xchg.%016" PRIx64, fb, rnd64());
		r = move_tree(s, fb, tmp, S_ISDIR(fm.mode));
		r = r < 0 ? r : move_tree(s, tb, fb, S_ISDIR(tm.mode));
		r = r < 0 ? r : move_tree(s, tmp, tb, S_ISDIR(fm.mode));
		return r;
	}
	if (exists) {
		if (S_ISDIR(tm.mode) && !S_ISDIR(fm.mode))
			return -EISDIR;
		if (!S_ISDIR(tm.mode) && S_ISDIR(fm.mode))
			return -ENOTDIR;
		if (S_ISDIR(tm.mode)) {
			r = dir_nonempty(s, tb);
			if (r < 0)
				return r;
			if (r > 0)
				return -ENOTEMPTY;
		}
		r = settle_open(s, tb, true);
		if (r < 0)
			return r;
	}
	return move_tree(s, fb, tb, S_ISDIR(fm.mode));
}

/* ---- small whole objects ---- */

static int az_get(struct phi_store *ps, const char *path, void *buf, size_t max, size_t *ret_len)
{
	struct az_store *s = to_az(ps);
	if (!buf && max)
		return -EINVAL;
	int r = path_check(path, false);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	size_t n;
	struct meta m;
	r = get_blob(s, blob, buf, max, &n, &m);
	if (r == -ENOENT) {
		int p = parent_check(s, path);
		return p == -ENOTDIR ? -ENOTDIR : -ENOENT;
	}
	if (r == -EFBIG) {
		/* too big, or a directory or symlink that happens to be large: check which */
		struct meta hm;
		if (head_blob(s, blob, &hm, NULL, NULL, 0) == 0 && !S_ISREG(hm.mode))
			return S_ISDIR(hm.mode) ? -EISDIR : -ELOOP;
		return -EFBIG;
	}
	if (r < 0)
		return r;
	if (S_ISDIR(m.mode))
		return -EISDIR;
	if (S_ISLNK(m.mode))
		return -ELOOP;
	*ret_len = n;
	return 0;
}

static int az_put(struct phi_store *ps, const char *path, const void *buf, size_t len)
{
	struct az_store *s = to_az(ps);
	if (!buf && len)
		return -EINVAL;
	int r = path_check(path, false);
	if (r < 0)
		return r;
	r = parent_check(s, path);
	if (r < 0)
		return r;
	char blob[PHI_STORE_PATH_MAX + 1100];
	r = blob_name(s, path, blob, sizeof blob);
	if (r < 0)
		return r;
	struct meta old;
	char etag[96];
	r = head_blob(s, blob, &old, NULL, etag, sizeof etag);
	if (r < 0 && r != -ENOENT)
		return r;
	if (r == 0 && S_ISDIR(old.mode))
		return -EISDIR;
	/* a replaced object keeps its identity (inode number); Put Blob replaces atomically */
	struct meta m = meta_new(S_IFREG | 0600, (uint32_t)-1, (uint32_t)-1);
	if (r == 0)
		m.ino = old.ino;
	return put_blob(s, blob, buf, len, &m, NULL, NULL, 0);
}

/* ---- open / close ---- */

static void az_close(struct phi_store *ps)
{
	struct az_store *s = to_az(ps);
	if (!s)
		return;
	while (s->pool) {
		struct curl_pool_entry *e = s->pool;
		s->pool = e->next;
		curl_easy_cleanup(e->h);
		free(e);
	}
	if (s->key)
		sodium_free(s->key);
	phi_ajd_close(s->jd);
	phi_rc_close(s->rc);
	if (s->sas)
		sodium_free(s->sas); /* wipes it */
	pthread_mutex_destroy(&s->lock);
	pthread_mutex_destroy(&s->pool_lock);
	if (s->cache)
		for (size_t i = 0; i < ACACHE_SLOTS; i++)
			free(s->cache[i].name);
	free(s->cache);
	pthread_mutex_destroy(&s->cache_lock);
	free(s);
}

static int journal_open(struct az_store *s, const char *cache_dir, uint64_t cache_max);

static int az_start(struct phi_store *ps)
{
	struct az_store *s = to_az(ps);
	return s->jd ? -EALREADY : journal_open(s, s->cache_dir, s->cache_max);
}

static void az_write_intent(struct phi_store_obj *o, bool on)
{
	pthread_mutex_lock(&o->lock);
	o->write_intent = on;
	pthread_mutex_unlock(&o->lock);
}

static const struct phi_store_ops az_ops = {
	.scheme = "az",
	.close = az_close,
	.getattr = az_getattr,
	.mkdir = az_mkdir,
	.rmdir = az_rmdir,
	.unlink = az_unlink,
	.rename = az_rename,
	.link = az_link,
	.symlink = az_symlink,
	.readlink = az_readlink,
	.chmod = az_chmod,
	.chown = az_chown,
	.utimens = az_utimens,
	.readdir = az_readdir,
	.statfs = az_statfs,
	.open = az_open,
	.create = az_create,
	.pread = az_pread,
	.pwrite = az_pwrite,
	.truncate = az_truncate,
	.size = az_size,
	.fsync = az_fsync,
	.release = az_release,
	.write_intent = az_write_intent,
	.start = az_start,
	.get = az_get,
	.put = az_put,
	.fsync_dir = az_fsync_dir,
};

/* Read a small secret file into locked memory (sodium_malloc: mlocked, guarded, wiped when
 * freed), trailing newlines and spaces trimmed and NUL-terminated. -EINVAL if it is empty,
 * longer than max bytes after trimming, or longer than max + 64 bytes in all. */
static int read_secret(const char *file, size_t max, char **ret, size_t *ret_n)
{
	_cleanup_close_ int fd = open(file, O_RDONLY | O_CLOEXEC | O_NOCTTY);
	if (fd < 0)
		return phi_neg_errno();
	/* slack for trailing whitespace; a file that fills it all is too long */
	size_t cap = max + 64;
	char *buf = sodium_malloc(cap + 1);
	if (!buf)
		return -ENOMEM;
	size_t n = 0;
	int r = 0;
	while (n < cap) {
		ssize_t k = read(fd, buf + n, cap - n);
		if (k < 0 && errno == EINTR)
			continue;
		if (k < 0) {
			r = phi_neg_errno();
			break;
		}
		if (k == 0)
			break;
		n += (size_t)k;
	}
	bool full = n == cap; /* more may follow: never use a truncated secret */
	while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
		n--;
	buf[n] = 0;
	if (r >= 0 && (full || n == 0 || n > max))
		r = -EINVAL;
	if (r < 0) {
		sodium_free(buf);
		return r;
	}
	*ret = buf;
	*ret_n = n;
	return 0;
}

/* Read the base64 account key from a file into locked memory, decoded. */
static int load_key(const char *file, uint8_t **ret, size_t *ret_len)
{
	char *b64 = NULL;
	size_t n = 0;
	int r = read_secret(file, 1022, &b64, &n);
	if (r < 0)
		return r;
	uint8_t *key = sodium_malloc(512);
	if (!key) {
		sodium_free(b64);
		return -ENOMEM;
	}
	size_t kl = 0;
	if (sodium_base642bin(key, 512, b64, n, NULL, &kl, NULL, sodium_base64_VARIANT_ORIGINAL) != 0 ||
	    kl == 0)
		r = -EINVAL;
	sodium_free(b64);
	if (r < 0) {
		sodium_free(key);
		return r;
	}
	*ret = key;
	*ret_len = kl;
	return 0;
}

static bool hex_digit(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');
}

/* A SAS as found in a file: "name=value&..." (one leading '?' allowed). Only URL-safe query
 * characters (unreserved, '%' with two hex digits, '=', '&', and the ':' and ',' that portal
 * tokens leave unencoded), so that it cannot change the request line or headers when pasted
 * into a URL; every parameter is name=value and one of them is a non-empty sig. Returns the
 * start of the query (past the '?') or NULL. */
static const char *sas_check(const char *sas)
{
	if (*sas == '?')
		sas++;
	bool sig = false;
	const char *p = sas;
	while (*p) {
		const char *end = strchr(p, '&');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', len);
		if (!eq || eq == p)
			return NULL;
		for (const char *c = p; c < p + len; c++) {
			bool plain = (*c >= 'A' && *c <= 'Z') || (*c >= 'a' && *c <= 'z') ||
				     (*c >= '0' && *c <= '9') || strchr("-._~=:,", *c);
			if (*c == '%' && c + 2 < p + len && hex_digit(c[1]) && hex_digit(c[2]))
				c += 2;
			else if (!plain || !*c)
				return NULL;
		}
		if (eq - p == 3 && !strncmp(p, "sig", 3) && eq + 1 < p + len)
			sig = true;
		if (!end)
			break;
		p = end + 1;
		if (!*p) /* a trailing '&' */
			return NULL;
	}
	return sig ? sas : NULL;
}

/* The expiry (se=) of a SAS, as ISO 8601 UTC: YYYY-MM-DD[Thh:mm[:ss[.fff]]Z], ':' possibly
 * percent-encoded. Returns false if it has none or it does not parse (the service decides). */
static bool sas_expiry(const char *sas, time_t *ret)
{
	const char *p = sas;
	while (p && strncmp(p, "se=", 3))
		p = (p = strchr(p, '&')) ? p + 1 : NULL;
	if (!p)
		return false;
	char v[40];
	size_t n = 0;
	for (p += 3; *p && *p != '&' && n + 1 < sizeof v; p++) {
		if (!strncasecmp(p, "%3A", 3)) {
			v[n++] = ':';
			p += 2;
		} else {
			v[n++] = *p;
		}
	}
	v[n] = 0;
	struct tm tm = { 0 };
	int used = 0;
	if (sscanf(v, "%4d-%2d-%2d%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &used) != 3)
		return false;
	if (v[used] == 'T' &&
	    sscanf(v + used, "T%2d:%2d:%2d", &tm.tm_hour, &tm.tm_min, &tm.tm_sec) < 2)
		return false;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	*ret = timegm(&tm);
	return *ret != (time_t)-1;
}

/* Read a SAS token from a file into locked memory, checked (sas_check), without its '?'. */
static int load_sas(const char *file, char **ret)
{
	char *buf = NULL;
	size_t n = 0;
	int r = read_secret(file, SAS_MAX + 1, &buf, &n);
	if (r < 0)
		return r;
	const char *q = sas_check(buf);
	if (!q || strlen(q) > SAS_MAX) {
		sodium_free(buf);
		return -EINVAL;
	}
	if (q != buf)
		memmove(buf, q, strlen(q) + 1);
	*ret = buf;
	return 0;
}

static bool container_ok(const char *c)
{
	size_t n = strlen(c);
	if (n < 3 || n > 63)
		return false;
	for (const char *p = c; *p; p++)
		if (!((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '-'))
			return false;
	return true;
}

int phi_az_stats(struct phi_store *ps, struct phi_az_stats *ret)
{
	if (!ps || ps->ops != &az_ops || !ret)
		return -EINVAL;
	struct az_store *s = to_az(ps);
	*ret = (struct phi_az_stats){
		.requests = __atomic_load_n(&s->st_requests, __ATOMIC_RELAXED),
		.bytes_up = __atomic_load_n(&s->st_up, __ATOMIC_RELAXED),
		.bytes_down = __atomic_load_n(&s->st_down, __ATOMIC_RELAXED),
	};
	return 0;
}

/* A dead mount's journal (az_journal.h): apply it if the blob is still the version it was
 * written against, recognise it as already committed if the blob carries a generation it
 * sent, else keep it aside as a conflict. Messages name the journal file, never a path. */
static enum phi_aj_verdict replay(void *ctx, const struct phi_aj_parsed *p, const char *file)
{
	struct az_store *s = ctx;
	struct meta m;
	uint64_t size = 0;
	char etag[96];
	int r = head_blob(s, p->name, &m, &size, etag, sizeof etag);
	if (r == -ENOENT) {
		fprintf(stderr, "phifs: azure: journal %s: its object no longer exists; "
				"kept in the cache's conflict/ directory\n", file);
		return PHI_AJ_CONFLICT;
	}
	if (r < 0)
		return PHI_AJ_RETRY;
	size_t nw = 0;
	for (size_t k = 0; k < p->nrecs; k++) {
		if (p->recs[k].type == PHI_AJ_GEN && p->recs[k].off == m.gen)
			return PHI_AJ_DONE; /* its commit reached the store before the crash */
		nw += p->recs[k].type != PHI_AJ_GEN;
	}
	if (!nw)
		return PHI_AJ_DONE;
	/* a metadata-only change (chmod, utime) since leaves phigen and the size alone */
	if (strcmp(etag, p->etag) && !(m.gen == p->base_gen && size == p->base_size)) {
		fprintf(stderr, "phifs: azure: journal %s: its object was changed by another writer "
				"since; the journal's writes were not applied and are kept in the "
				"cache's conflict/ directory\n", file);
		return PHI_AJ_CONFLICT;
	}
	if (!S_ISREG(m.mode))
		return PHI_AJ_CONFLICT;
	struct phi_store_obj *o;
	r = obj_new(s, p->name, true, &m, size, etag, &o);
	if (r < 0)
		return PHI_AJ_RETRY;
	o->replaying = true;
	for (size_t k = 0; r >= 0 && k < p->nrecs; k++) {
		const struct phi_aj_rec *x = &p->recs[k];
		if (x->type == PHI_AJ_WRITE)
			r = az_pwrite(o, x->data, (size_t)x->len, x->off);
		else if (x->type == PHI_AJ_TRUNCATE)
			r = az_truncate(o, x->off);
	}
	if (r >= 0)
		r = az_fsync(o, false);
	if (r < 0) {
		pthread_mutex_lock(&o->lock);
		o->unlinked = true; /* drop the half-applied state; the journal stays */
		pthread_mutex_unlock(&o->lock);
	}
	(void)az_release(o);
	if (r < 0) {
		fprintf(stderr, "phifs: azure: journal %s: could not be uploaded (%s); kept for the "
				"next mount\n", file, strerror(-r));
		return PHI_AJ_RETRY;
	}
	fprintf(stderr, "phifs: azure: journal %s: %zu uncommitted changes of a previous mount "
			"uploaded\n", file, nw);
	return PHI_AJ_DONE;
}

/* The journal's place: cache_dir=PATH, else $STATE_DIRECTORY/journal (systemd
 * StateDirectory=, the first of its list), else /var/lib/phifs/journal: state, not cache,
 * as deleting it loses writes. A directory per store below it, named by a hash of the
 * endpoint, container and prefix (no names in clear on the local disk either). Run by a
 * mount's start (az_start), as the user it serves as, who must own the journals. */
static int journal_open(struct az_store *s, const char *cache_dir, uint64_t cache_max)
{
	if (!strcmp(cache_dir, "none"))
		return 0;
	char root[512];
	const char *sd = getenv("STATE_DIRECTORY");
	if (*cache_dir)
		(void)snprintf(root, sizeof root, "%s", cache_dir);
	else if (sd && *sd)
		(void)snprintf(root, sizeof root, "%.*s/journal", (int)strcspn(sd, ":"), sd);
	else
		(void)snprintf(root, sizeof root, "/var/lib/phifs/journal");
	uint8_t h[16];
	char id[sizeof h * 2 + 1];
	crypto_generichash_state st;
	crypto_generichash_init(&st, NULL, 0, sizeof h);
	crypto_generichash_update(&st, (const uint8_t *)s->base_url, strlen(s->base_url) + 1);
	crypto_generichash_update(&st, (const uint8_t *)s->container, strlen(s->container) + 1);
	crypto_generichash_update(&st, (const uint8_t *)s->prefix, strlen(s->prefix) + 1);
	crypto_generichash_final(&st, h, sizeof h);
	sodium_bin2hex(id, sizeof id, h, sizeof h);
	int r = phi_ajd_open(root, id, cache_max, &s->jd);
	if (r < 0) {
		fprintf(stderr, "phifs: azure: cannot use the write journal directory %s: %s (give "
				"cache_dir=PATH, or cache_dir=none to run without crash safety)\n",
			root, strerror(-r));
		return r;
	}
	if (s->rcache_max) {
		/* best effort: without it every open downloads again, nothing else changes */
		char rdir[700];
		(void)snprintf(rdir, sizeof rdir, "%s/%s/blocks", root, id);
		int rr = phi_rc_open(rdir, s->rcache_max, &s->rc);
		if (rr < 0)
			fprintf(stderr, "phifs: azure: no read cache in %s: %s\n", rdir, strerror(-rr));
	}
	unsigned n[3];
	r = phi_ajd_recover(s->jd, replay, s, n);
	if (r >= 0 && (n[PHI_AJ_CONFLICT] || n[PHI_AJ_RETRY]))
		fprintf(stderr, "phifs: azure: %u journals of earlier mounts uploaded, %u kept as "
				"conflicts, %u left for a later mount\n", n[PHI_AJ_DONE],
			n[PHI_AJ_CONFLICT], n[PHI_AJ_RETRY]);
	return 0;
}

/* The credential, from the options: an account key (key_file=, credential=) or a SAS
 * (sas_file=, sas_credential=), never both; with none of them the key
 * $CREDENTIALS_DIRECTORY/phifs-azure-key, or if that is absent the SAS
 * $CREDENTIALS_DIRECTORY/phifs-azure-sas. Messages name the option, never the content. */
static int load_credential(struct az_store *s, const char *key_file, const char *cred,
			   const char *sas_file, const char *sas_cred)
{
	bool want_key = *key_file || *cred, want_sas = *sas_file || *sas_cred;
	if (want_key && want_sas) {
		fprintf(stderr, "phifs: azure: give either an account key (key_file=, credential=) "
				"or a SAS (sas_file=, sas_credential=), not both\n");
		return -EINVAL;
	}
	if (*sas_file && *sas_cred) {
		fprintf(stderr, "phifs: azure: give sas_file= or sas_credential=, not both\n");
		return -EINVAL;
	}
	const char *cd = getenv("CREDENTIALS_DIRECTORY");
	char path[768];
	int r;
	if (*key_file || (!want_sas && *cred)) {
		if (*key_file)
			(void)snprintf(path, sizeof path, "%s", key_file);
		else if (cd && *cd)
			(void)snprintf(path, sizeof path, "%s/%s", cd, cred);
		else
			return -ENOKEY;
		r = load_key(path, &s->key, &s->key_len);
	} else if (want_sas) {
		if (*sas_file)
			(void)snprintf(path, sizeof path, "%s", sas_file);
		else if (cd && *cd)
			(void)snprintf(path, sizeof path, "%s/%s", cd, sas_cred);
		else
			return -ENOKEY;
		r = load_sas(path, &s->sas);
	} else {
		if (!cd || !*cd)
			return -ENOKEY;
		(void)snprintf(path, sizeof path, "%s/phifs-azure-key", cd);
		r = load_key(path, &s->key, &s->key_len);
		if (r == -ENOENT) {
			(void)snprintf(path, sizeof path, "%s/phifs-azure-sas", cd);
			r = load_sas(path, &s->sas);
			want_sas = true;
		}
	}
	if (r == -ENOENT)
		return -ENOKEY;
	if (r == -EINVAL)
		fprintf(stderr, "phifs: azure: the %s file is not valid (%s)\n",
			want_sas ? "SAS" : "account key",
			want_sas ? "a query string with sig=, URL-safe characters only, at most "
				   "2048 bytes" : "base64");
	if (r < 0)
		return r;
	time_t se;
	if (s->sas && sas_expiry(s->sas, &se) && se <= time(NULL)) {
		/* the service would refuse every request; say why rather than EACCES */
		struct tm tm;
		char when[32] = "?";
		if (gmtime_r(&se, &tm))
			(void)strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
		fprintf(stderr, "phifs: azure: the SAS expired at %s\n", when);
		return -EKEYEXPIRED;
	}
	return 0;
}

/* ---- append blobs (the audit writer's checkpoint export, docs/audit-format.md) ----
 * These address any container of the store's account, not the store's own container and
 * prefix: the checkpoints go to a container of their own, which can be put under a
 * time-based retention (WORM) policy without touching the data. */

static int req_in(struct az_store *s, struct req *q, const char *method, const char *container,
		  const char *blob)
{
	if (!container || !container_ok(container) || (blob && path_check(blob, false) < 0))
		return -EINVAL;
	int r = req_init(s, q, method, NULL);
	if (r < 0)
		return r;
	int n = blob ? snprintf(q->path, sizeof q->path, "/%s/%s", container, blob)
		     : snprintf(q->path, sizeof q->path, "/%s", container);
	return n > 0 && (size_t)n < sizeof q->path ? 0 : -ENAMETOOLONG;
}

static int az_of(struct phi_store *ps, struct az_store **ret)
{
	if (!ps || ps->ops != &az_ops)
		return -EINVAL;
	*ret = to_az(ps);
	return 0;
}

int phi_az_blob_size(struct phi_store *ps, const char *container, const char *blob,
		     uint64_t *ret_size)
{
	struct az_store *s;
	struct req q;
	int r = az_of(ps, &s);
	r = r < 0 ? r : req_in(s, &q, "HEAD", container, blob);
	r = r < 0 ? r : perform(s, &q);
	r = r < 0 ? r : status_errno(&q);
	if (r < 0)
		return r;
	if (!q.have_length)
		return -EIO;
	*ret_size = q.content_length;
	return 0;
}

int phi_az_blob_get(struct phi_store *ps, const char *container, const char *blob, uint64_t off,
		    uint64_t len, struct phi_buf *out)
{
	struct az_store *s;
	struct req q;
	struct phi_buf b _cleanup_buf_;
	phi_buf_init(&b, out->max);
	int r = az_of(ps, &s);
	r = r < 0 ? r : req_in(s, &q, "GET", container, blob);
	if (r >= 0 && len)
		r = req_hdr(&q, "x-ms-range", "bytes=%" PRIu64 "-%" PRIu64, off, off + len - 1);
	else if (r >= 0 && off)
		r = req_hdr(&q, "x-ms-range", "bytes=%" PRIu64 "-", off);
	if (r < 0)
		return r;
	q.grow = &b;
	r = perform(s, &q);
	if (r < 0)
		return r;
	if (q.overflow)
		return -EFBIG;
	r = status_errno(&q);
	if (r == -ERANGE && !len) /* nothing past off: an empty answer */
		b.len = 0;
	else if (r < 0)
		return r;
	else if ((q.have_length && q.content_length != b.len) || (len && b.len != len))
		return -EIO; /* short: the blob is shorter than the range asked for */
	phi_buf_done(out);
	*out = b;
	b = (struct phi_buf){ 0 };
	return 0;
}

int phi_az_append_create(struct phi_store *ps, const char *container, const char *blob)
{
	struct az_store *s;
	struct req q;
	for (int tries = 0;; tries++) {
		int r = az_of(ps, &s);
		r = r < 0 ? r : req_in(s, &q, "PUT", container, blob);
		r = r < 0 ? r : req_hdr(&q, "x-ms-blob-type", "AppendBlob");
		/* never replace an existing append blob: that would drop what it holds */
		r = r < 0 ? r : req_hdr(&q, "if-none-match", "*");
		r = r < 0 ? r : perform(s, &q);
		if (r < 0)
			return r;
		r = status_errno(&q);
		if (r == -ESTALE || r == -EEXIST)
			return -EEXIST;
		if (r != -ENOENT || tries)
			return r;
		/* ContainerNotFound: make the container, once, then the blob */
		r = req_in(s, &q, "PUT", container, NULL);
		r = r < 0 ? r : req_query(&q, "restype", "container");
		r = r < 0 ? r : perform(s, &q);
		r = r < 0 ? r : status_errno(&q);
		if (r < 0 && r != -EEXIST)
			return r;
	}
}

/* Whether the blob holds data at [pos, pos + len): read it back and compare. */
static int append_landed(struct phi_store *ps, const char *container, const char *blob,
			 uint64_t pos, const void *data, size_t len)
{
	struct phi_buf b _cleanup_buf_;
	phi_buf_init(&b, len);
	int r = phi_az_blob_get(ps, container, blob, pos, len, &b);
	if (r < 0)
		return r;
	return b.len == len && memcmp(b.p, data, len) == 0 ? 0 : -EBADMSG;
}

int phi_az_append(struct phi_store *ps, const char *container, const char *blob, uint64_t pos,
		  const void *data, size_t len)
{
	struct az_store *s;
	struct req q;
	if (len == 0 || len > PHI_AZ_APPEND_MAX)
		return -EINVAL;
	for (int tries = 0; tries < 3; tries++) {
		int r = az_of(ps, &s);
		r = r < 0 ? r : req_in(s, &q, "PUT", container, blob);
		r = r < 0 ? r : req_query(&q, "comp", "appendblock");
		/* the service appends only if the blob ends at pos: a retry after a lost answer
		 * fails this condition instead of appending a second copy */
		r = r < 0 ? r : req_hdr(&q, "x-ms-blob-condition-appendpos", "%" PRIu64, pos);
		if (r < 0)
			return r;
		q.body = data;
		q.body_len = len;
		r = perform(s, &q);
		if (r < 0)
			return r;
		r = status_errno(&q);
		if (r != -ESTALE)
			return r;
		if (strcmp(q.error_code, "AppendPositionConditionNotMet") != 0)
			return -EIO;
		uint64_t size;
		r = phi_az_blob_size(ps, container, blob, &size);
		if (r < 0)
			return r;
		if (size == pos)
			continue; /* the blob was shorter at the time and is at pos now: append again */
		if (size < pos + len)
			return -ESTALE; /* the blob does not end where the caller thinks */
		/* an earlier attempt (this call's retry, or a call whose answer was lost) landed:
		 * done if those bytes are ours */
		r = append_landed(ps, container, blob, pos, data, len);
		return r == -EBADMSG ? -ESTALE : r;
	}
	return -EIO;
}

int phi_store_azure_open(const char *url, const char *opts, struct phi_store **ret)
{
	if (!url || !ret || strncmp(url, "az://", 5) != 0)
		return -EINVAL;
	const char *p = url + 5;
	const char *slash = strchr(p, '/');
	if (!slash || slash == p || (size_t)(slash - p) >= 64)
		return -EINVAL;
	struct az_store *s = calloc(1, sizeof *s);
	if (!s)
		return -ENOMEM;
	pthread_mutex_init(&s->lock, NULL);
	pthread_mutex_init(&s->pool_lock, NULL);
	pthread_mutex_init(&s->cache_lock, NULL);
	s->cache = calloc(ACACHE_SLOTS, sizeof *s->cache); /* none: no caching, still correct */
	s->base.ops = &az_ops;
	_cleanup_store_ struct phi_store *guard = &s->base;
	memcpy(s->account, p, (size_t)(slash - p));
	for (const char *c = s->account; *c; c++)
		if (!((*c >= 'a' && *c <= 'z') || (*c >= '0' && *c <= '9')))
			return -EINVAL;
	const char *c0 = slash + 1;
	const char *c1 = strchr(c0, '/');
	size_t cl = c1 ? (size_t)(c1 - c0) : strlen(c0);
	if (cl >= sizeof s->container)
		return -EINVAL;
	memcpy(s->container, c0, cl);
	if (!container_ok(s->container))
		return -EINVAL;
	if (c1) {
		const char *pf = c1 + 1;
		size_t pl = strlen(pf);
		while (pl && pf[pl - 1] == '/')
			pl--;
		if (pl >= sizeof s->prefix)
			return -EINVAL;
		memcpy(s->prefix, pf, pl);
		if (pl && path_check(s->prefix, false) < 0)
			return -EINVAL;
	}

	/* options */
	char endpoint[256] = "", key_file[512] = "", cred[128] = "", sas_file[512] = "",
	     sas_cred[128] = "", cache_dir[256] = "";
	uint64_t timeout = 30, create = 0, cache_max = UINT64_C(1) << 30;
	uint64_t rcache_max = UINT64_C(256) << 20;
	_cleanup_free_ char *o = strdup(opts ? opts : "");
	if (!o)
		return -ENOMEM;
	char *save = NULL;
	for (char *kv = strtok_r(o, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		if (!eq)
			return -EINVAL;
		*eq = 0;
		const char *v = eq + 1;
		int n;
		if (!strcmp(kv, "endpoint"))
			n = snprintf(endpoint, sizeof endpoint, "%s", v);
		else if (!strcmp(kv, "cache_dir"))
			n = *v ? snprintf(cache_dir, sizeof cache_dir, "%s", v) : -1;
		else if (!strcmp(kv, "cache_max")) {
			if (phi_parse_u64(v, UINT64_C(1) << 40, &cache_max) < 0 || cache_max < (1u << 20))
				return -EINVAL;
			n = 0;
		} else if (!strcmp(kv, "rcache_max")) {
			if (phi_parse_u64(v, UINT64_C(1) << 40, &rcache_max) < 0)
				return -EINVAL;
			n = 0;
		} else if (!strcmp(kv, "key_file"))
			n = snprintf(key_file, sizeof key_file, "%s", v);
		else if (!strcmp(kv, "credential"))
			n = strchr(v, '/') ? -1 : snprintf(cred, sizeof cred, "%s", v);
		else if (!strcmp(kv, "sas_file"))
			n = snprintf(sas_file, sizeof sas_file, "%s", v);
		else if (!strcmp(kv, "sas_credential"))
			n = strchr(v, '/') ? -1 : snprintf(sas_cred, sizeof sas_cred, "%s", v);
		else if (!strcmp(kv, "timeout")) {
			if (phi_parse_u64(v, 3600, &timeout) < 0 || timeout == 0)
				return -EINVAL;
			n = 0;
		} else if (!strcmp(kv, "create")) {
			if (phi_parse_u64(v, 1, &create) < 0)
				return -EINVAL;
			n = 0;
		} else
			return -EINVAL;
		if (n < 0 || (size_t)n >= 256)
			return -EINVAL;
	}
	s->deadline_ms = timeout * 1000;

	if (*endpoint) {
		size_t el = strlen(endpoint);
		while (el && endpoint[el - 1] == '/')
			endpoint[--el] = 0;
		if (strncmp(endpoint, "http://", 7) && strncmp(endpoint, "https://", 8))
			return -EINVAL;
		/* an explicit endpoint is path-style (the emulator): /account/container/blob */
		(void)snprintf(s->base_url, sizeof s->base_url, "%s/%s", endpoint, s->account);
	} else {
		(void)snprintf(s->base_url, sizeof s->base_url, "https://%s.blob.core.windows.net",
			       s->account);
	}
	const char *hostp = strstr(s->base_url, "://") + 3;
	const char *urlpath = strchr(hostp, '/');
	(void)snprintf(s->canon_base, sizeof s->canon_base, "/%s%s", s->account,
		       urlpath ? urlpath : "");

	if (sodium_init() < 0)
		return -EIO;
	int r = load_credential(s, key_file, cred, sas_file, sas_cred);
	if (r < 0)
		return r;
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK)
		return -EIO;

	struct req q;
	if (create) {
		/* create=1: make the container if it is missing (tests, first deployment) */
		r = req_init(s, &q, "PUT", NULL);
		r = r < 0 ? r : req_query(&q, "restype", "container");
		r = r < 0 ? r : perform(s, &q);
		if (r < 0)
			return r;
		r = status_errno(&q);
		if (r < 0 && r != -EEXIST)
			return r;
	}
	/* the container must exist: a typo should fail the mount, not every operation */
	r = req_init(s, &q, "GET", NULL);
	r = r < 0 ? r : req_query(&q, "restype", "container");
	r = r < 0 ? r : req_query(&q, "comp", "list");
	r = r < 0 ? r : req_query(&q, "maxresults", "1");
	if (r < 0)
		return r;
	r = perform(s, &q);
	if (r < 0)
		return r;
	r = status_errno(&q);
	if (r < 0)
		return r == -ENOENT ? -ENXIO : r;
	(void)snprintf(s->cache_dir, sizeof s->cache_dir, "%s", cache_dir);
	s->cache_max = cache_max;
	s->rcache_max = rcache_max;
	*ret = TAKE_PTR(guard);
	return 0;
}
