/* phifs-auditd: the audit writer daemon (see phifs/auditd.h, docs/audit-format.md).
 *
 *   phifs-auditd --dir LOGDIR (--export-dir DIR | --export-url az://ACCOUNT/CONTAINER[/PREFIX]
 *                [--export-opts OPTS]) --socket PATH [--signing-key FILE]
 *                [--previous-signing-key FILE]
 *                [--segment-max BYTES] [--reserve BYTES] [--prealloc BYTES] [--heartbeat SECONDS]
 *                [--batch-max N] [--batch-wait-us US] [--ckpt-ms MS] [--ckpt-records N]
 *
 * Without --signing-key the key is $CREDENTIALS_DIRECTORY/phifs-audit-signing-key.
 * SIGTERM/SIGINT: clean stop (audit-stop record and a final checkpoint).
 * Under systemd ($NOTIFY_SOCKET): READY=1 once the socket listens, WATCHDOG=1 every half
 * $WATCHDOG_USEC from the serving loop, STOPPING=1.
 */
#include <getopt.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/signalfd.h>

#include "phifs/auditd.h"
#include "phifs/notify.h"

static int num(const char *s, uint64_t max, uint64_t *v)
{
	if (phi_parse_u64(s, max, v) < 0) {
		fprintf(stderr, "phifs-auditd: bad number: %s\n", s);
		return -1;
	}
	return 0;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "dir", required_argument, NULL, 'd' },
		{ "export-dir", required_argument, NULL, 'e' },
		{ "socket", required_argument, NULL, 's' },
		{ "signing-key", required_argument, NULL, 'k' },
		{ "previous-signing-key", required_argument, NULL, 'P' },
		{ "segment-max", required_argument, NULL, 'm' },
		{ "reserve", required_argument, NULL, 'r' },
		{ "prealloc", required_argument, NULL, 'z' },
		{ "heartbeat", required_argument, NULL, 'h' },
		{ "batch-max", required_argument, NULL, 'b' },
		{ "batch-wait-us", required_argument, NULL, 'w' },
		{ "ckpt-ms", required_argument, NULL, 'c' },
		{ "ckpt-records", required_argument, NULL, 'n' },
		{ "export-url", required_argument, NULL, 'U' },
		{ "export-opts", required_argument, NULL, 'O' },
		{ "export-blob-notes", required_argument, NULL, 'B' },
		{ 0 },
	};
	struct phi_auditd_opts o = { .stop_fd = -1 };
	const char *key = NULL, *prev_key = NULL;
	uint64_t v;
	int c;
	while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (c) {
		case 'd': o.dir = optarg; break;
		case 'e': o.export_dir = optarg; break;
		case 's': o.socket_path = optarg; break;
		case 'k': key = optarg; break;
		case 'P': prev_key = optarg; break;
		case 'm': if (num(optarg, UINT64_MAX, &o.segment_max) < 0) return 2; break;
		case 'r': if (num(optarg, UINT64_MAX, &o.reserve_bytes) < 0) return 2; break;
		case 'z': if (num(optarg, 1u << 30, &o.prealloc) < 0) return 2; o.prealloc_off = o.prealloc == 0; break;
		case 'h': if (num(optarg, 86400, &v) < 0) return 2; o.heartbeat_s = (uint32_t)v; break;
		case 'b': if (num(optarg, PHI_AUDITD_BATCH_MAX, &v) < 0) return 2; o.batch_max = (uint32_t)v; break;
		case 'w': if (num(optarg, 2000, &v) < 0) return 2; o.batch_wait_us = (uint32_t)v; break;
		case 'c': if (num(optarg, 60000, &v) < 0) return 2; o.ckpt_ms = (uint32_t)v; break;
		case 'n': if (num(optarg, 1u << 20, &v) < 0) return 2; o.ckpt_records = (uint32_t)v; break;
		case 'U': o.export_url = optarg; break;
		case 'O': o.export_opts = optarg; break;
		/* an append blob takes 50,000 blocks; each note may be one */
		case 'B': if (num(optarg, 50000, &v) < 0 || v == 0) return 2; o.export_blob_notes = v; break;
		default: return 2;
		}
	}
	if (!o.dir || (!o.export_dir && !o.export_url) || !o.socket_path || optind != argc) {
		fputs("usage: phifs-auditd --dir LOGDIR [--export-dir DIR] [--export-url az://ACCOUNT/CONTAINER[/PREFIX]\n"
		      "       [--export-opts OPTS] [--export-blob-notes N]] --socket PATH [--signing-key FILE]\n"
		      "       [--previous-signing-key FILE]\n"
		      "       [--segment-max BYTES] [--reserve BYTES] [--prealloc BYTES] [--heartbeat S] [--batch-max N]\n"
		      "       [--batch-wait-us US] [--ckpt-ms MS] [--ckpt-records N]\n", stderr);
		return 2;
	}
	/* the signing key is in this process: no core dumps, no ptrace by other users */
	(void)prctl(PR_SET_DUMPABLE, 0);
	if (phi_crypto_init() < 0)
		return 1;
	struct phi_audit_signer *s = NULL;
	int r = phi_audit_signer_load(key, &s);
	if (r < 0) {
		fprintf(stderr, "phifs-auditd: cannot load the signing key: %s\n", strerror(-r));
		return 1;
	}
	struct phi_audit_signer *prev = NULL;
	if (prev_key && (r = phi_audit_signer_load(prev_key, &prev)) < 0) {
		fprintf(stderr, "phifs-auditd: cannot load the previous signing key: %s\n", strerror(-r));
		phi_audit_signer_free(s);
		return 1;
	}
	o.prev_signer = prev;
	sigset_t ss;
	sigemptyset(&ss);
	sigaddset(&ss, SIGTERM);
	sigaddset(&ss, SIGINT);
	sigprocmask(SIG_BLOCK, &ss, NULL);
	signal(SIGPIPE, SIG_IGN);
	o.stop_fd = signalfd(-1, &ss, SFD_CLOEXEC | SFD_NONBLOCK);
	if (o.stop_fd < 0) {
		phi_audit_signer_free(s);
		phi_audit_signer_free(prev);
		return 1;
	}
	o.notify_socket = secure_getenv("NOTIFY_SOCKET");
	if (phi_notify_watchdog_usec(secure_getenv("WATCHDOG_USEC"), secure_getenv("WATCHDOG_PID"), getpid(),
				     &o.watchdog_usec) < 0)
		fprintf(stderr, "phifs-auditd: ignoring a malformed WATCHDOG_USEC/WATCHDOG_PID\n");
	r = phi_auditd_run(&o, s);
	phi_audit_signer_free(s);
	phi_audit_signer_free(prev);
	close(o.stop_fd);
	if (r < 0) {
		fprintf(stderr, "phifs-auditd: %s\n", strerror(-r));
		return 1;
	}
	return 0;
}
