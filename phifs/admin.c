/* admin.c: the common opening steps of the operator tools (see admin.h). */
#include <pwd.h>
#include <stdarg.h>
#include <sys/file.h>

#include "admin.h"
#include "grants.h"
#include "policy.h"
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

/* ---- audit records of the tools ---- */

void phi_admin_audit_done(struct phi_admin_audit *a)
{
	if (!a)
		return;
	phi_audit_client_free(a->client);
	phi_key_free(a->lookup_key);
	*a = (struct phi_admin_audit){ 0 };
}

int phi_admin_audit_open(const char *spec, const struct phi_key *master, struct phi_admin_audit *ret,
			 char *msg, size_t msg_len)
{
	if (!master || !ret)
		return fail(-EINVAL, msg, msg_len, "invalid arguments");
	if (!spec || !spec[0])
		spec = secure_getenv(PHI_AUDIT_SOCKET_ENV);
	if (!spec || !spec[0])
		return fail(-ENOTCONN, msg, msg_len,
			    "no audit log: give --audit-socket PATH (phifs-auditd's socket), or "
			    "--audit-socket none to change keys and grants unaudited");
	struct phi_admin_audit a = { 0 };
	if (strcmp(spec, PHI_AUDIT_SOCKET_NONE) != 0) {
		/* one request at a time; a tool can wait longer for the writer than an open */
		int r = phi_audit_client_open_opts(spec,
						   &(struct phi_audit_client_opts){ .pool = 1,
										    .deadline_ms = 5000 },
						   &a.client);
		if (r < 0)
			return fail(r, msg, msg_len, "audit socket %s: %s", spec, strerror(-r));
		r = phi_audit_lookup_key(master, &a.lookup_key);
		if (r < 0) {
			phi_admin_audit_done(&a);
			return fail(r, msg, msg_len, "cannot derive the audit lookup key: %s", strerror(-r));
		}
	}
	*ret = a;
	return 0;
}

static void actor_self(struct phi_audit_event *ev)
{
	uid_t uid = getuid();
	ev->actor.uid = (uint32_t)uid;
	ev->actor.gid = (uint32_t)getgid();
	ev->actor.pid = (uint32_t)getpid();
	struct phi_identity *id = calloc(1, sizeof(*id));
	if (id && phi_identity_from_pid((uint32_t)geteuid(), (uint32_t)getegid(), getpid(), id) >= 0) {
		snprintf(ev->actor.comm, sizeof(ev->actor.comm), "%s", id->comm);
		snprintf(ev->actor.exe, sizeof(ev->actor.exe), "%s", id->exe);
		snprintf(ev->actor.unit, sizeof(ev->actor.unit), "%s", id->unit);
	}
	free(id);
	snprintf(ev->actor.role, sizeof(ev->actor.role), "operator");
	struct passwd pw, *res = NULL;
	char buf[4096];
	if (getpwuid_r(uid, &pw, buf, sizeof(buf), &res) == 0 && res &&
	    strlen(pw.pw_name) < sizeof(ev->actor.principal) - 5)
		snprintf(ev->actor.principal, sizeof(ev->actor.principal), "user:%s", pw.pw_name);
	else
		snprintf(ev->actor.principal, sizeof(ev->actor.principal), "uid:%u", (unsigned)uid);
}

int phi_admin_audit_record(struct phi_admin_audit *a, struct phi_audit_event *ev,
			   const char *patient)
{
	if (!a || !ev)
		return -EINVAL;
	if (!a->client)
		return 0;
	actor_self(ev);
	if (patient && patient[0] && strcmp(patient, PHI_GRANT_ALL) != 0) {
		int r = phi_audit_pseudonym(a->lookup_key, PHI_AUDIT_PATIENT, patient, ev->obj.patient,
					    sizeof(ev->obj.patient));
		if (r < 0)
			return r;
	}
	return phi_audit_submit(a->client, ev, NULL);
}
