/* privs.h: give up root once the mount is up (the in-process half of phifs@.service's
 * hardening: the unit cannot sandbox a daemon whose mount must stay visible to the host). */
#ifndef PHI_PRIVS_H
#define PHI_PRIVS_H

/* Become user (its uid, primary gid and supplementary groups) for good, with an empty
 * capability bounding, permitted, effective, inheritable and ambient set, no_new_privs and
 * not dumpable. Needs CAP_SETUID, CAP_SETGID and CAP_SETPCAP (root). Affects the whole
 * process for the ids; the capability sets are cleared for the calling thread (and the
 * change of uid clears them in every other thread). Returns 0, -ENOENT for an unknown
 * user, -EINVAL for root, or the -errno of the step that failed. */
int phi_privs_drop(const char *user);

#endif
