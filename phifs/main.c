/* phifs: mount a plaintext, per-patient view of an encrypted store.
 *
 *   phifs [--key-file FILE] [-o OPTIONS] [-f] [-d] STORE MOUNTPOINT
 *   mount -t fuse.phifs STORE MOUNTPOINT -o key_file=FILE     (fstab works the same)
 *
 * Without a key file the master key comes from $CREDENTIALS_DIRECTORY/phifs-master-key.
 * -o run_as=USER: once the mount is up, become USER with no capabilities (phifs@.service).
 * Under systemd ($NOTIFY_SOCKET): READY=1 once mounted, STOPPING=1 before unmounting.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>

#include <fuse_lowlevel.h>

#include "fs.h"
#include "audit-client.h"
#include "audit.h"
#include "grants.h"
#include "keys.h"
#include "notify.h"
#include "privs.h"
#include "store.h"
#include "util.h"

struct cli {
	char *store;
	char *key_file;
	char *store_opts;
	char *audit_socket;
	char *run_as;
	int grants;
	int direct_io;
	int linger_ms;
	int ro;
	int show_help;
	int max_threads_given;
};

enum { KEY_RO, KEY_HELP, KEY_MAX_THREADS };

static const struct fuse_opt cli_opts[] = {
	{ "--key-file=%s", offsetof(struct cli, key_file), 0 },
	{ "--key-file %s", offsetof(struct cli, key_file), 0 },
	{ "key_file=%s", offsetof(struct cli, key_file), 0 },
	{ "store_opts=%s", offsetof(struct cli, store_opts), 0 },
	{ "audit_socket=%s", offsetof(struct cli, audit_socket), 0 },
	{ "grants", offsetof(struct cli, grants), 1 },
	{ "run_as=%s", offsetof(struct cli, run_as), 0 },
	/* fstab-only options (mount.fuse3 drops them too when it runs phifs) */
	FUSE_OPT_KEY("_netdev", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nofail", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("auto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("noauto", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("user", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("nouser", FUSE_OPT_KEY_DISCARD),
	FUSE_OPT_KEY("users", FUSE_OPT_KEY_DISCARD),
	{ "direct_io", offsetof(struct cli, direct_io), 1 },
	{ "linger_ms=%d", offsetof(struct cli, linger_ms), 0 },
	{ "--store-opts %s", offsetof(struct cli, store_opts), 0 },
	FUSE_OPT_KEY("ro", KEY_RO),
	FUSE_OPT_KEY("max_threads=", KEY_MAX_THREADS),
	FUSE_OPT_KEY("-h", KEY_HELP),
	FUSE_OPT_KEY("--help", KEY_HELP),
	FUSE_OPT_END
};

static int cli_proc(void *data, const char *arg, int key, struct fuse_args *outargs)
{
	(void)outargs;
	struct cli *c = data;
	if (key == KEY_RO) {
		c->ro = 1;
		return 1; /* also passed to the kernel */
	}
	if (key == KEY_HELP) {
		c->show_help = 1;
		return 0;
	}
	if (key == KEY_MAX_THREADS) {
		/* fuse_parse_cmdline fills in its own default (10), so only this tells an explicit
		 * -o max_threads= from none */
		c->max_threads_given = 1;
		return 1; /* for fuse_parse_cmdline */
	}
	if (key == FUSE_OPT_KEY_NONOPT && !c->store) {
		c->store = strdup(arg);
		return 0;
	}
	return 1;
}

static void usage(void)
{
	printf("usage: phifs [--key-file FILE] [-o OPTIONS] [-f] [-d] STORE MOUNTPOINT\n"
	       "\n"
	       "  --key-file FILE, -o key_file=FILE   master key file (mode 0600, owned by you);\n"
	       "                                      default $CREDENTIALS_DIRECTORY/" PHI_CRED_NAME "\n"
	       "  -o grants                           enforce roles and grants (phifs-grant)\n"
	       "  -o audit_socket=PATH                record every access in phifs-auditd's log\n"
	       "                                      before answering it; deny if it cannot\n"
	       "  -o direct_io                        no page cache for file contents (plaintext)\n"
	       "  -o linger_ms=N                      keep a file's store object open N ms (at most\n"
	       "                                      1000, the default; 0: off) after its last close\n"
	       "  -o run_as=USER                      once mounted, become USER with no capabilities\n"
	       "  -o _netdev,nofail,auto,noauto       fstab-only; ignored\n"
	       "  -o ro, -o allow_other, ...          the usual FUSE mount options\n"
	       "  -f  foreground   -d  debug (never shows names or data: they are ciphertext below)\n");
}

static const char *key_error(int r)
{
	switch (r) {
	case -ENOENT:
		return "key file not found";
	case -EPERM:
	case -EACCES:
		return "key file must be a regular file of mode 0600 (no group/other access) owned by the mounting user";
	case -ENOKEY:
		return "no --key-file given and no systemd credential " PHI_CRED_NAME " in $CREDENTIALS_DIRECTORY";
	case -EINVAL:
		return "key file must hold 64 hex digits or 32 raw bytes";
	case -ELOOP:
		return "key file must not be a symlink";
	default:
		return strerror(-r);
	}
}

static int mount_record(struct phi_audit_client *audit, enum phi_audit_ev what, bool ro)
{
	struct phi_audit_event ev = { .event = what, .action = 'E' };
	ev.actor.uid = (uint32_t)getuid();
	ev.actor.gid = (uint32_t)getgid();
	ev.actor.pid = (uint32_t)getpid();
	snprintf(ev.actor.comm, sizeof(ev.actor.comm), "phifs");
	snprintf(ev.detail, sizeof(ev.detail), "%s", ro ? "ro" : "rw");
	return phi_audit_submit(audit, &ev, NULL);
}

int main(int argc, char *argv[])
{
	struct fuse_args args = FUSE_ARGS_INIT(argc, argv);
	struct fuse_cmdline_opts fo = { 0 };
	struct cli c = { .linger_ms = 1000 };
	int ret = 1, lockfd = -1;
	struct phi_key *master = NULL;
	struct phi_store *s = NULL;
	struct phi_keyring *kr = NULL;
	struct phifs *fs = NULL;
	struct fuse_session *se = NULL;
	struct fuse_loop_config *lc = NULL;
	char *mp_real = NULL;
	struct phi_grants *grants = NULL;
	struct phi_audit_client *audit = NULL;
	struct phi_key *lookup_key = NULL;

	/* key material must never reach a core dump or another process's ptrace */
	(void)prctl(PR_SET_DUMPABLE, 0);
	(void)setrlimit(RLIMIT_CORE, &(struct rlimit){ 0, 0 });

	if (fuse_opt_parse(&args, &c, cli_opts, cli_proc) < 0)
		return 2;
	if (c.show_help) {
		usage();
		return 0;
	}
	if (fuse_parse_cmdline(&args, &fo) < 0)
		return 2;
	if (!c.store || !fo.mountpoint) {
		usage();
		ret = 2;
		goto out;
	}
	if (c.linger_ms < 0 || c.linger_ms > 1000) {
		/* no longer than a running mount takes to see a shredded key (KEY_RECHECK_S) */
		fprintf(stderr, "phifs: -o linger_ms= takes 0 to 1000\n");
		ret = 2;
		goto out;
	}
	/* the kernel lists mounts by canonical path */
	mp_real = realpath(fo.mountpoint, NULL);
	int r = phi_crypto_init();
	if (r >= 0) {
		r = phi_master_load(c.key_file, &master);
		if (r < 0)
			fprintf(stderr, "phifs: %s%s%s\n", c.key_file ? c.key_file : "", c.key_file ? ": " : "",
				key_error(r));
	}
	if (r >= 0) {
		r = phi_store_open(c.store, c.store_opts, &s);
		if (r < 0)
			fprintf(stderr, "phifs: cannot open store %s: %s\n", c.store, strerror(-r));
	}
	if (r >= 0) {
		r = phi_store_lock(c.store, false, &lockfd);
		if (r < 0)
			fprintf(stderr, "phifs: store %s is locked by a key operation (rewrap/rekey-master): %s\n",
				c.store, strerror(-r));
	}
	if (r >= 0) {
		r = phi_keyring_open(s, master, &kr);
		if (r == -EKEYREJECTED)
			fprintf(stderr, "phifs: the master key does not open this store (wrong key?)\n");
		else if (r == -EBADMSG)
			fprintf(stderr, "phifs: the store header is corrupt\n");
		else if (r == -ENOENT)
			fprintf(stderr, "phifs: %s is not a phifs store (no header; run phifs-key init)\n", c.store);
		else if (r < 0)
			fprintf(stderr, "phifs: cannot open the store keys: %s\n", strerror(-r));
	}
	if (r >= 0 && c.audit_socket) {
		r = phi_audit_lookup_key(master, &lookup_key);
		if (r >= 0)
			r = phi_audit_client_open(c.audit_socket, &audit);
		if (r < 0)
			fprintf(stderr, "phifs: audit: %s: %s\n", c.audit_socket, strerror(-r));
	}
	phi_key_free(master);
	master = NULL;
	if (r >= 0 && c.grants) {
		r = phi_grants_open(s, kr, &grants);
		if (r < 0)
			fprintf(stderr, "phifs: cannot load grants: %s\n", strerror(-r));
	}
	if (r >= 0 && !c.grants && !c.audit_socket)
		fprintf(stderr, "phifs: warning: no -o grants and no -o audit_socket: access is "
				"checked by Unix permissions only and not audited\n");
	if (r >= 0)
		r = phifs_new(s, kr,
			      &(struct phifs_opts){ .ro = c.ro, .direct_io = c.direct_io,
						    .linger_ms = (unsigned)c.linger_ms, .mountpoint = mp_real, .grants = grants,
						    .audit = audit, .lookup_key = lookup_key },
			      &fs);
	if (r < 0)
		goto out;

	/* store entries carry exactly the modes users ask for (the kernel already applied
	 * their umask); the store root itself is 0700 */
	umask(0);
	/* kernel-side permission checks against the modes we report */
	fuse_opt_add_arg(&args, "-odefault_permissions");
	char fsname[PHI_STORE_PATH_MAX + 16];
	snprintf(fsname, sizeof(fsname), "-ofsname=%s,subtype=phifs", c.store);
	if (!strchr(c.store, ','))
		fuse_opt_add_arg(&args, fsname);

	se = fuse_session_new(&args, phifs_ll_ops(), sizeof(struct fuse_lowlevel_ops), fs);
	if (!se)
		goto out;
	phifs_set_session(fs, se);
	if (fuse_set_signal_handlers(se) != 0)
		goto out;
	if (fuse_session_mount(se, fo.mountpoint) != 0)
		goto out_signals;
	if (audit && mount_record(audit, PHI_AE_MOUNT, c.ro) < 0) {
		/* an unaudited mount must not serve anything */
		fprintf(stderr, "phifs: the audit log refused the mount record: not serving\n");
		fuse_session_unmount(se);
		goto out_signals;
	}
	fuse_daemonize(fo.foreground);
	if (c.run_as && audit) {
		/* USER may not connect to the writer's socket: every connection the mount will
		 * use is made now (a FUSE thread's synchronous records, and the opens answered
		 * by the completion thread: 8 connections of 32 pipelined requests each) */
		r = phi_audit_client_preconnect(audit, 16, 8);
		if (r < 0) {
			fprintf(stderr, "phifs: cannot connect to the audit writer: %s\n", strerror(-r));
			(void)mount_record(audit, PHI_AE_UNMOUNT, c.ro);
			fuse_session_unmount(se);
			goto out_signals;
		}
	}
	if (c.run_as) {
		r = phi_privs_drop(c.run_as);
		if (r < 0) {
			/* never serve with more than asked for */
			fprintf(stderr, "phifs: cannot drop privileges to %s: %s\n", c.run_as,
				r == -ENOENT ? "no such user" : r == -EINVAL ? "not an unprivileged user" : strerror(-r));
			if (audit)
				(void)mount_record(audit, PHI_AE_UNMOUNT, c.ro);
			fuse_session_unmount(se);
			goto out_signals;
		}
	}
	/* the store's local state (the Azure write journal) belongs to the final identity */
	if (s->ops->start && (r = s->ops->start(s)) < 0) {
		fprintf(stderr, "phifs: cannot start the store: %s\n", strerror(-r));
		if (audit)
			(void)mount_record(audit, PHI_AE_UNMOUNT, c.ro);
		fuse_session_unmount(se);
		goto out_signals;
	}
	/* under systemd (Type=notify): the mount is up and audited */
	const char *notify = secure_getenv("NOTIFY_SOCKET");
	(void)phi_notify_send(notify, c.run_as ? "READY=1\nSTATUS=mounted, privileges dropped" : "READY=1\nSTATUS=mounted");
	lc = fuse_loop_cfg_create();
	fuse_loop_cfg_set_clone_fd(lc, fo.clone_fd);
	fuse_loop_cfg_set_idle_threads(lc, fo.max_idle_threads > 0 && fo.max_idle_threads <= 1024 ? fo.max_idle_threads : 10);
	/* With audit no FUSE thread waits for a record: opens and opendirs are answered by the
	 * audit client's completion thread, the requests that change something by fs.c's held
	 * queue. So the FUSE threads only decide, and few serve best: every extra one is woken
	 * (an IPI) and preempted in turn. Audited opens from 64 client threads on 2 cores
	 * (tests/fs/openbench.c, 3 runs): p99 5.5-6.3 ms with 2 FUSE threads, 8.9-11.1 ms
	 * with 8. A store over the network (Azure) keeps 16: its threads wait on requests. */
	bool local = !strcmp(s->ops->scheme, "file");
	fuse_loop_cfg_set_max_threads(lc, c.max_threads_given && fo.max_threads > 0 && fo.max_threads <= 1024
						  ? fo.max_threads : audit && local ? 2 : 16);
	ret = fo.singlethread ? fuse_session_loop(se) : fuse_session_loop_mt(se, lc);
	ret = ret != 0;
	/* requests still waiting for their records are answered (or denied) while the session
	 * they belong to still exists */
	phifs_drain(fs);
	(void)phi_notify_send(notify, "STOPPING=1\nSTATUS=unmounting");
	if (audit)
		(void)mount_record(audit, PHI_AE_UNMOUNT, c.ro);
	fuse_session_unmount(se);
out_signals:
	fuse_remove_signal_handlers(se);
out:
	if (lc)
		fuse_loop_cfg_destroy(lc);
	if (se)
		fuse_session_destroy(se);
	phifs_free(fs);
	phi_grants_free(grants);
	phi_audit_client_free(audit);
	phi_key_free(lookup_key);
	phi_keyring_free(kr);
	phi_store_close(s);
	if (lockfd >= 0)
		close(lockfd);
	free(fo.mountpoint);
	free(mp_real);
	free(c.store);
	free(c.key_file);
	free(c.store_opts);
	free(c.audit_socket);
	free(c.run_as);
	fuse_opt_free_args(&args);
	return ret;
}
