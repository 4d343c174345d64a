/* az-tool: test helper moving whole stores through the store interface.
 *   az-tool copy SRC_URL SRC_OPTS DST_URL DST_OPTS   copy every entry (a store made by
 *                                                    phifs-key on disk, into Azure)
 *   az-tool dump URL OPTS DIR                        download every object into DIR, to
 *                                                    scan what the store really holds
 * OPTS "-" means none. Exit 0 or 1 with a message. */
#include <dirent.h>
#include <sys/stat.h>

#include "phifs/store.h"
#include "phifs/util.h"

struct walk {
	struct phi_store *src, *dst;
	const char *dir; /* dump target */
	char names[512][PHI_STORE_NAME_MAX + 1];
	uint32_t types[512];
	size_t n;
};

static int collect(void *ctx, const char *name, uint32_t type)
{
	struct walk *w = ctx;
	if (w->n >= ARRAY_SIZE(w->names))
		return -E2BIG;
	snprintf(w->names[w->n], sizeof w->names[0], "%s", name);
	w->types[w->n++] = type;
	return 0;
}

static int copy_obj(struct walk *w, const char *path)
{
	struct phi_store_obj *in = NULL;
	int r = w->src->ops->open(w->src, path, O_RDONLY, 0, &in);
	if (r < 0)
		return r;
	static uint8_t buf[1 << 20];
	FILE *out = NULL;
	struct phi_store_obj *o = NULL;
	if (w->dst) {
		struct phi_store_stat st;
		r = w->src->ops->getattr(w->src, path, &st);
		if (r >= 0)
			r = w->dst->ops->create(w->dst, path, st.mode & 07777, (uint32_t)-1, (uint32_t)-1,
						NULL, 0, &o);
	} else {
		char p[PHI_STORE_PATH_MAX + 512];
		snprintf(p, sizeof p, "%s/%s", w->dir, path);
		out = fopen(p, "we");
		r = out ? 0 : -errno;
	}
	for (uint64_t off = 0; r >= 0;) {
		size_t n;
		r = w->src->ops->pread(in, buf, sizeof buf, off, &n);
		if (r < 0 || n == 0)
			break;
		if (o)
			r = w->dst->ops->pwrite(o, buf, n, off);
		else if (fwrite(buf, 1, n, out) != n)
			r = -EIO;
		off += n;
	}
	if (o) {
		int r2 = w->dst->ops->release(o);
		r = r < 0 ? r : r2;
	}
	if (out && fclose(out) != 0 && r >= 0)
		r = -EIO;
	(void)w->src->ops->release(in);
	return r;
}

static int walk(struct phi_store *src, struct phi_store *dst, const char *dir, const char *path)
{
	struct walk *w = calloc(1, sizeof *w);
	if (!w)
		return -ENOMEM;
	w->src = src;
	w->dst = dst;
	w->dir = dir;
	int r = src->ops->readdir(src, path, collect, w);
	for (size_t i = 0; r >= 0 && i < w->n; i++) {
		char p[PHI_STORE_PATH_MAX];
		snprintf(p, sizeof p, "%s%s%s", path, *path ? "/" : "", w->names[i]);
		struct phi_store_stat st;
		r = src->ops->getattr(src, p, &st);
		if (r < 0)
			break;
		if (S_ISDIR(st.mode)) {
			if (dst)
				r = dst->ops->mkdir(dst, p, st.mode & 07777);
			else {
				char q[PHI_STORE_PATH_MAX + 512];
				snprintf(q, sizeof q, "%s/%s", dir, p);
				r = RET_NERRNO(mkdir(q, 0700));
			}
			if (r >= 0)
				r = walk(src, dst, dir, p);
		} else if (S_ISLNK(st.mode)) {
			char t[PHI_STORE_PATH_MAX];
			size_t tl;
			r = src->ops->readlink(src, p, t, sizeof t, &tl);
			if (r >= 0 && dst)
				r = dst->ops->symlink(dst, t, p);
			else if (r >= 0) {
				char q[PHI_STORE_PATH_MAX + 512];
				snprintf(q, sizeof q, "%s/%s", dir, p);
				r = RET_NERRNO(symlink(t, q));
			}
		} else if (S_ISREG(st.mode)) {
			r = copy_obj(w, p);
		}
	}
	free(w);
	return r;
}

static const char *opt(const char *s)
{
	return strcmp(s, "-") ? s : NULL;
}

int main(int argc, char **argv)
{
	struct phi_store *src = NULL, *dst = NULL;
	int r;
	if (argc == 6 && !strcmp(argv[1], "copy")) {
		r = phi_store_open(argv[2], opt(argv[3]), &src);
		if (r >= 0)
			r = phi_store_open(argv[4], opt(argv[5]), &dst);
		if (r >= 0)
			r = walk(src, dst, NULL, "");
	} else if (argc == 5 && !strcmp(argv[1], "dump")) {
		r = phi_store_open(argv[2], opt(argv[3]), &src);
		if (r >= 0)
			r = walk(src, NULL, argv[4], "");
	} else {
		fprintf(stderr, "usage: az-tool copy SRC SRCOPTS DST DSTOPTS | dump URL OPTS DIR\n");
		return 2;
	}
	phi_store_close(src);
	phi_store_close(dst);
	if (r < 0) {
		fprintf(stderr, "az-tool %s: %s\n", argv[1], strerror(-r));
		return 1;
	}
	return 0;
}
