/* admin.c: the common opening steps of the operator tools (see admin.h). */
#include <stdarg.h>
#include <sys/file.h>

#include "admin.h"
#include "util.h"

static int fail(int r, char *msg, size_t msg_len, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));
static int fail(int r, char *msg, size_t msg_len, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	if (msg && msg_len)
		vsnprintf(msg, msg_len, fmt, ap);
	va_end(ap);
	return r;
}

void phi_admin_key_error(const char *key_file, int r, char *msg, size_t msg_len)
{
	const char *f = key_file ? key_file : "$CREDENTIALS_DIRECTORY/" PHI_CRED_NAME;
	switch (r) {
	case -ENOENT:
		fail(r, msg, msg_len, "key file %s not found", f);
		break;
	case -EPERM:
	case -EACCES:
		fail(r, msg, msg_len, "key file %s must be mode 0600 and owned by uid %u", f,
		     (unsigned)geteuid());
		break;
	case -ELOOP:
		fail(r, msg, msg_len, "key file %s must not be a symlink", f);
		break;
	case -EINVAL:
		fail(r, msg, msg_len, "key file %s must hold 64 hex digits or 32 raw bytes", f);
		break;
	case -ENOKEY:
		fail(r, msg, msg_len,
		     "no --key-file given and no systemd credential " PHI_CRED_NAME
		     " in $CREDENTIALS_DIRECTORY");
		break;
	default:
		fail(r, msg, msg_len, "cannot read key file %s: %s", f, strerror(-r));
		break;
	}
}

const char *phi_admin_local_root(const char *url)
{
	if (!strstr(url, "://"))
		return url;
	if (!strncmp(url, "file://", 7))
		return !strncmp(url + 7, "localhost/", 10) ? url + 16 : url + 7;
	return NULL;
}

void phi_admin_done(struct phi_admin *a)
{
	if (!a)
		return;
	phi_keyring_free(a->kr);
	phi_store_close(a->s);
	phi_key_free(a->master);
	if (a->lock_fd >= 0)
		(void)close(a->lock_fd);
	if (a->dir_fd >= 0)
		(void)close(a->dir_fd);
	*a = (struct phi_admin){ .lock_fd = -1, .dir_fd = -1 };
}

int phi_admin_open(const char *url, const char *key_file, bool exclusive, struct phi_admin *ret,
		   char *msg, size_t msg_len)
{
	if (!url || !ret)
		return fail(-EINVAL, msg, msg_len, "no store given");
	_cleanup_(phi_admin_done) struct phi_admin a = { .lock_fd = -1, .dir_fd = -1 };
	int r = phi_master_load(key_file, &a.master);
	if (r < 0) {
		phi_admin_key_error(key_file, r, msg, msg_len);
		return r;
	}
	r = phi_store_open(url, NULL, &a.s);
	if (r < 0)
		return fail(r, msg, msg_len, "cannot open store %s: %s", url, strerror(-r));
	r = phi_store_lock(url, exclusive, &a.lock_fd);
	if (r == -EBUSY)
		return fail(r, msg, msg_len, "%s",
			    exclusive ? "store is mounted (or another key operation is running): unmount it first"
				      : "store is locked by a key operation (rewrap/rekey-master)");
	if (r < 0)
		return fail(r, msg, msg_len, "cannot lock store %s: %s", url, strerror(-r));
	r = phi_keyring_open(a.s, a.master, &a.kr);
	switch (r) {
	case 0:
		break;
	case -EKEYREJECTED:
		return fail(r, msg, msg_len, "master key does not open this store (wrong key?)");
	case -EBADMSG:
		return fail(r, msg, msg_len, "store header is corrupt");
	case -ENOENT:
		return fail(r, msg, msg_len, "%s is not a phifs store (no header; run phifs-key init)", url);
	default:
		return fail(r, msg, msg_len, "cannot open the store keys: %s", strerror(-r));
	}
	*ret = a;
	a = (struct phi_admin){ .lock_fd = -1, .dir_fd = -1 };
	return 0;
}

int phi_admin_lock_dir(struct phi_admin *a, const char *url, const char *dir, char *msg,
		       size_t msg_len)
{
	if (!a || !a->s || !url || !dir)
		return fail(-EINVAL, msg, msg_len, "invalid arguments");
	int r = a->s->ops->mkdir(a->s, dir, 0700);
	if (r < 0 && r != -EEXIST)
		return fail(r, msg, msg_len, "cannot create %s in the store: %s", dir, strerror(-r));
	const char *root = phi_admin_local_root(url);
	if (!root)
		return 0;
	_cleanup_free_ char *p = NULL;
	if (asprintf(&p, "%s/%s", root, dir) < 0)
		return fail(-ENOMEM, msg, msg_len, "out of memory");
	_cleanup_close_ int fd = open(p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		r = phi_neg_errno();
		return fail(r, msg, msg_len, "cannot open %s: %s", p, strerror(-r));
	}
	while (flock(fd, LOCK_EX) < 0)
		if (errno != EINTR) {
			r = phi_neg_errno();
			return fail(r, msg, msg_len, "cannot lock %s: %s", p, strerror(-r));
		}
	if (a->dir_fd >= 0)
		(void)close(a->dir_fd);
	a->dir_fd = TAKE_FD(fd);
	return 0;
}
