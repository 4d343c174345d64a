/* runfile.h: the runtime file of one attempt (docs/runner.md, "Runtime file"): what spoold's
 * local backend hands its runner in the environment (CUDA_VISIBLE_DEVICES, SPOOLD_NAME),
 * carried across `systemctl start` by gpurun-systemd as gpurun@'s credential "run".
 *
 * The file is written by the user spoold and read by gpurun as root, so it is parsed as
 * untrusted input: `key=value` lines with two known keys only, each value checked against
 * what spoold itself produces. It never becomes environment as it is (EnvironmentFile=
 * would let spoold set LD_PRELOAD for a root process); gpurun sets CUDA_VISIBLE_DEVICES
 * from the checked value and nothing else.
 *
 *   cuda_visible_devices=0,1   the GPU slots (spoold's gpu_slots: 0..1023, at most 64, no
 *                              repeats, no leading zeros); empty: no GPU (a job of 0 GPUs)
 *   attempt=spoold-j-0001.1    spoold's attempt name: [A-Za-z0-9_.-], 1..95 characters,
 *                              not starting with '.'
 *
 * Each key at most once, either may be missing (then gpurun leaves CUDA_VISIBLE_DEVICES as
 * it is, and has no attempt name). Lines end in '\n' (the last one may not); '#' starts a
 * comment line; empty lines are allowed; nothing else: no spaces around '=', no CR, no NUL,
 * no bytes outside printable ASCII. At most RUNFILE_MAX_BYTES. */
#ifndef PHI_RUNFILE_H
#define PHI_RUNFILE_H

#include <stdbool.h>
#include <stddef.h>

#define RUNFILE_MAX_BYTES 1024
#define RUNFILE_SLOTS_MAX 64    /* spoold's CONFIG_MAX_SLOTS */
#define RUNFILE_SLOT_MAX 1023   /* spoold's largest slot number */
#define RUNFILE_SLOTS_LEN 320   /* 64 slots of up to 4 digits, 63 commas, NUL */
#define RUNFILE_ATTEMPT_MAX 95  /* spoold's prov_name() buffer, less its NUL */

struct runfile {
	bool has_slots;                   /* cuda_visible_devices given (maybe empty) */
	char slots[RUNFILE_SLOTS_LEN];    /* "0,1"; "" = no GPU */
	bool has_attempt;
	char attempt[RUNFILE_ATTEMPT_MAX + 1];
};

/* Parses len bytes of buf. 0 and *ret filled, or -EINVAL/-EFBIG with "line N: problem" in
 * err (never the value, nor an unknown key's name: the file is another user's). */
int runfile_parse(const char *buf, size_t len, struct runfile *ret, char *err, size_t errlen);
/* Reads path (a regular file, no symlink, at most RUNFILE_MAX_BYTES) and parses it. */
int runfile_load(const char *path, struct runfile *ret, char *err, size_t errlen);

/* The value checks, on NUL-terminated strings: 0 or -EINVAL. */
int runfile_slots_valid(const char *s);
int runfile_attempt_valid(const char *s);

#endif
