/* audit.h: the tamper-evident audit log (docs/audit-format.md).
 *
 * Records are canonical JSON lines framed as u32be len | bytes | '\n'; a hash chain over
 * the stored bytes; Ed25519-signed checkpoints in the C2SP signed-note format; keyed,
 * reversible pseudonyms for patients and paths. This module is pure format code plus the
 * verifier; the writer is auditd.h, the client API audit-client.h.
 */
#ifndef PHI_AUDIT_H
#define PHI_AUDIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "crypto.h"
#include "util.h"

#define PHI_AUDIT_VERSION 1
#define PHI_AUDIT_HASH_LEN 32
#define PHI_AUDIT_RECORD_MAX 16384 /* one frame's JSON */
#define PHI_AUDIT_NOTE_MAX 4096
#define PHI_AUDIT_NAME_MAX 128      /* key name / origin */
#define PHI_AUDIT_PATH_PLAIN_MAX 4096
#define PHI_AUDIT_PATIENT_PLAIN_MAX 255
/* "pt:" / "p:" + base64url(SIV tag + plaintext) + NUL */
#define PHI_AUDIT_PSEUDO_PATIENT_MAX (3 + ((PHI_AUDIT_PATIENT_PLAIN_MAX + 16) / 3 + 1) * 4 + 1)
#define PHI_AUDIT_PSEUDO_PATH_MAX (2 + ((PHI_AUDIT_PATH_PLAIN_MAX + 16) / 3 + 1) * 4 + 1)
#define PHI_AUDIT_CRED_NAME "phifs-audit-signing-key"
#define PHI_AUDIT_PUB_NAME "phifs-audit.pub"

enum phi_audit_ev {
	PHI_AE_NONE = 0,
	PHI_AE_OPEN,
	PHI_AE_CREATE,
	PHI_AE_UNLINK,
	PHI_AE_RENAME,
	PHI_AE_SETATTR,
	PHI_AE_READDIR,
	PHI_AE_DENY,
	PHI_AE_GRANT_CREATE,
	PHI_AE_GRANT_REVOKE,
	PHI_AE_GRANT_EXPIRE,
	PHI_AE_EMERGENCY,
	PHI_AE_KEY_ADD,
	PHI_AE_KEY_ROTATE,
	PHI_AE_KEY_REWRAP,
	PHI_AE_KEY_SHRED,
	PHI_AE_KEY_REKEY,
	PHI_AE_MOUNT,
	PHI_AE_UNMOUNT,
	PHI_AE_AUDIT_START,
	PHI_AE_AUDIT_STOP,
	PHI_AE_AUDIT_RECOVERY,
	PHI_AE_AUDIT_DEGRADED,
	PHI_AE_ALERT,
	PHI_AE_JOB_SUBMIT,
	PHI_AE_JOB_START,
	PHI_AE_JOB_END,
	PHI_AE_MAX_
};
/* "open", "grant-create", ...; NULL for an unknown value. */
const char *phi_audit_ev_name(enum phi_audit_ev e);
int phi_audit_ev_from_name(const char *name, enum phi_audit_ev *ret);

/* What a client (FUSE worker, spoold, tools) fills in. Strings are NUL-terminated and must
 * hold no PHI; object fields hold pseudonyms made by phi_audit_pseudonym(). */
struct phi_audit_event {
	enum phi_audit_ev event;
	char action;     /* 'C' 'R' 'U' 'D' 'E' */
	uint8_t outcome; /* 0 success, 4 minor failure / denied, 8 serious, 12 major */
	int32_t err;     /* positive errno of the operation, 0 on success */
	struct {
		uint32_t uid, gid, pid;
		char comm[17];
		char exe[1024];   /* sizes match policy.h's struct phi_identity */
		char unit[256];
		char role[32];
		char principal[128];
	} actor;
	struct {
		char patient[PHI_AUDIT_PSEUDO_PATIENT_MAX];
		char path[PHI_AUDIT_PSEUDO_PATH_MAX];
	} obj;
	struct {
		char purpose[32];
		char grant[64];
		int64_t grant_exp_ns; /* 0: none */
	} why;
	char detail[256];
};

/* A stored record: the event plus what the writer assigns. */
struct phi_audit_record {
	uint32_t v;
	uint64_t seq;
	int64_t ts_ns;
	uint64_t mono_ns;
	char boot[37];
	uint32_t src_uid, src_pid;
	uint8_t prev[PHI_AUDIT_HASH_LEN];
	struct phi_audit_event ev;
};

/* Encode the client form (no writer fields) / the stored form. Appends to out. */
int phi_audit_encode_event(const struct phi_audit_event *ev, struct phi_buf *out);
int phi_audit_encode_record(const struct phi_audit_record *rec, struct phi_buf *out);
/* Strict bounded parsers; *ret is written only on success. -EBADMSG on any error. */
int phi_audit_parse_event(const uint8_t *p, size_t len, struct phi_audit_event *ret);
int phi_audit_parse_record(const uint8_t *p, size_t len, struct phi_audit_record *ret);
/* Check an event's enums and ranges (also done by the parsers): 0 or -EINVAL. */
int phi_audit_event_valid(const struct phi_audit_event *ev);

/* ---- framing and chain ---- */
/* Next frame from c: 0 and the bytes (borrowed), -ENODATA at a clean end, -EBADMSG for a
 * malformed frame (c is then left at its start). */
int phi_audit_frame_next(struct phi_cur *c, size_t max, const uint8_t **ret_p, size_t *ret_len);
/* Whether everything left in c is zero bytes: the zeros phifs-auditd writes ahead of the
 * open segment's end (zerofill.h), where a reader stops as at the end of the file. */
bool phi_audit_zero_tail(const struct phi_cur *c);
/* Append a frame to out. */
int phi_audit_frame_put(struct phi_buf *out, const void *p, size_t len);
void phi_audit_leaf(const uint8_t *rec, size_t len, uint8_t out[PHI_AUDIT_HASH_LEN]);
void phi_audit_chain(const uint8_t prev[PHI_AUDIT_HASH_LEN], uint64_t seq,
		     const uint8_t leaf[PHI_AUDIT_HASH_LEN], uint8_t out[PHI_AUDIT_HASH_LEN]);

/* ---- segments ---- */
struct phi_audit_seghdr {
	uint32_t v;
	char origin[PHI_AUDIT_NAME_MAX];
	uint64_t seg;
	uint64_t first_seq;
	uint8_t prev_head[PHI_AUDIT_HASH_LEN];
	int64_t created_ns;
};
int phi_audit_seghdr_encode(const struct phi_audit_seghdr *h, struct phi_buf *out);
int phi_audit_seghdr_parse(const uint8_t *p, size_t len, struct phi_audit_seghdr *ret);
/* "seg-%08u.log" */
int phi_audit_seg_name(uint64_t seg, char *out, size_t out_max);

/* ---- keys (Go sumdb/note text formats) ---- */
struct phi_audit_vkey {
	char name[PHI_AUDIT_NAME_MAX];
	uint8_t keyid[4];
	uint8_t pk[32];
};
struct phi_audit_signer {
	struct phi_audit_vkey vk;
	struct phi_key *sk; /* 64-byte Ed25519 secret key, locked memory */
};
void phi_audit_signer_free(struct phi_audit_signer *s);
static inline void phi_audit_signer_freep(struct phi_audit_signer **s)
{
	phi_audit_signer_free(*s);
	*s = NULL;
}
/* Name: 1..127 printable ASCII, no space or '+'. 0 or -EINVAL. */
int phi_audit_name_valid(const char *name);
/* "PRIVATE+KEY+NAME+HASH8+B64(0x01||seed)" */
int phi_audit_signer_parse(const uint8_t *p, size_t len, struct phi_audit_signer **ret);
/* From path, or when NULL from $CREDENTIALS_DIRECTORY/phifs-audit-signing-key; the file must
 * be a regular file of ours with no group/other bits (-EPERM). */
int phi_audit_signer_load(const char *path, struct phi_audit_signer **ret);
/* "NAME+HASH8+B64(0x01||pk)" with optional trailing newline. */
int phi_audit_vkey_parse(const char *text, size_t len, struct phi_audit_vkey *ret);
int phi_audit_vkey_load(const char *path, struct phi_audit_vkey *ret);
int phi_audit_vkey_format(const struct phi_audit_vkey *vk, char *out, size_t out_max);
/* New key pair: DIR/phifs-audit-signing-key (0600, O_EXCL) and DIR/phifs-audit.pub. */
int phi_audit_keygen(const char *dir, const char *name);
/* Deterministic key from a 32-byte seed (golden vectors, keygen). */
int phi_audit_signer_from_seed(const char *name, const uint8_t seed[32],
			       struct phi_audit_signer **ret);

/* ---- checkpoints ---- */
enum { PHI_CK_START, PHI_CK_BATCH, PHI_CK_HEARTBEAT, PHI_CK_ROTATE, PHI_CK_STOP, PHI_CK_DEGRADED,
       PHI_CK_KIND_MAX_ };
struct phi_audit_ckpt {
	char origin[PHI_AUDIT_NAME_MAX];
	uint64_t size;
	uint8_t head[PHI_AUDIT_HASH_LEN];
	uint64_t idx;
	int64_t ts_ns;
	uint8_t prev[PHI_AUDIT_HASH_LEN]; /* SHA-256 of the previous note */
	uint64_t seg;
	int kind;
};
const char *phi_audit_ck_kind_name(int kind);
/* Body text + blank line + signature line; appended to out. ck->origin must equal the
 * signer's name. */
int phi_audit_ckpt_sign(const struct phi_audit_ckpt *ck, const struct phi_audit_signer *s,
			struct phi_buf *out);
/* Add a signature by s to a signed note (same name): a key rotation's first note is signed
 * by the new key and co-signed by the old one. */
int phi_audit_ckpt_cosign(const struct phi_audit_signer *s, struct phi_buf *note);
/* Parse the body and check the note's shape (no signature check). */
int phi_audit_ckpt_parse(const uint8_t *p, size_t len, struct phi_audit_ckpt *ret);
/* Parse and verify: -EBADMSG malformed or origin != key name, -EKEYREJECTED a signature by
 * the key fails, -ENOKEY no signature by the key. */
int phi_audit_ckpt_verify(const uint8_t *p, size_t len, const struct phi_audit_vkey *vk,
			  struct phi_audit_ckpt *ret);
void phi_audit_note_hash(const uint8_t *p, size_t len, uint8_t out[PHI_AUDIT_HASH_LEN]);

/* ---- pseudonyms ---- */
enum phi_audit_pkind { PHI_AUDIT_PATIENT, PHI_AUDIT_PATH };
/* lookup key = phi_kdf(master, "audit-lookup"), 64 bytes (AES-256-SIV). */
int phi_audit_lookup_key(const struct phi_key *master, struct phi_key **ret);
int phi_audit_lookup_key_load(const char *path, struct phi_key **ret);
int phi_audit_lookup_key_write(const char *path, const struct phi_key *lk); /* 0600, O_EXCL */
int phi_audit_pseudonym(const struct phi_key *lk, enum phi_audit_pkind kind, const char *plain,
			char *out, size_t out_max);
/* Kind from the prefix; out gets the NUL-terminated plaintext. -EBADMSG if it does not
 * decrypt under lk. */
int phi_audit_resolve(const struct phi_key *lk, const char *pseudonym, char *out, size_t out_max);

/* ---- reading and verifying a log directory ---- */
/* Call fn for every record of every segment in order (parse errors abort with -EBADMSG;
 * a malformed frame at the end of the last segment ends the walk). fn returns <0 to abort. */
int phi_audit_foreach(const char *log_dir,
		      int (*fn)(void *ctx, const struct phi_audit_record *rec), void *ctx);

enum { PHI_AV_OK = 0, PHI_AV_TAMPERED = 1, PHI_AV_UNVERIFIABLE = 2 };
struct phi_audit_verify_opts {
	uint64_t max_gap_s; /* 0: no checkpoint-gap check */
};
struct phi_audit_verify_result {
	int status;
	uint64_t segments, records;
	uint64_t ckpt_local, ckpt_exported, ckpt_exported_missing;
	uint64_t verified_size;  /* records covered by the newest checkpoint */
	uint64_t unverified_tail;
	bool torn_tail;
	uint64_t torn_seg, torn_off;
	uint64_t warnings;
	char reason[256];  /* first finding that decided status (no PHI) */
	char warning[256]; /* first warning */
};
/* Never fails: the outcome is in ret->status. */
void phi_audit_verify(const char *log_dir, const char *export_dir, const struct phi_audit_vkey *vk,
		      const struct phi_audit_verify_opts *opts, struct phi_audit_verify_result *ret);
/* The same with the log's signing keys over time, oldest first, all of one name (signing
 * key rotation, docs/audit-format.md): every note must be signed by one of them; a note
 * signed by a newer key than the one before must be co-signed by that one, and no note
 * after it may be signed only by an older key. */
#define PHI_AUDIT_VKEYS_MAX 16
void phi_audit_verify_keys(const char *log_dir, const char *export_dir,
			   const struct phi_audit_vkey *vk, size_t nvk,
			   const struct phi_audit_verify_opts *opts, struct phi_audit_verify_result *ret);

/* Helpers shared with the writer. */
/* Whole file into out (phi_buf with hard max; -EFBIG beyond it). */
int phi_audit_read_file(int dirfd, const char *name, size_t max, struct phi_buf *out);
/* Sorted numbers N of the entries PREFIX<N>SUFFIX of dirfd; *ret is malloc'd. */
int phi_audit_list(int dirfd, const char *prefix, const char *suffix, uint64_t **ret,
		   size_t *ret_n);
int phi_audit_boot_id(char out[37]);
/* Write name in dirfd atomically and durably (temp file, fsync, rename, directory fsync);
 * replace=false fails with -EEXIST if name exists. */
int phi_audit_write_file(int dirfd, const char *name, const void *p, size_t len, mode_t mode,
			 bool replace);

#endif
