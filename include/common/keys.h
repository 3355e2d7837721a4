#ifndef JITD_COMMON_KEYS_H
#define JITD_COMMON_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <openssl/evp.h>

struct config;
struct jit_error;

#define KEYS_KID_MAX 64

/* A kid is 1..64 of [A-Za-z0-9._-], not starting with '.', so it can only name a file in keys_dir. */
bool keys_kid_valid(const char *kid);
/*
 * Loads the trusted public key keys_dir/<kid>.pem (PEM SubjectPublicKeyInfo, Ed25519 only). The
 * file must be a regular file not writable by group or others. Returns 0 and a new key in *out
 * (caller frees with EVP_PKEY_free), or JIT_ERR_UNKNOWN_KEY with the reason in e->msg, or
 * JIT_ERR_INTERNAL when the file could not be read for a passing reason (out of descriptors or
 * memory, an I/O error): that says nothing about the key.
 */
int keys_load_public(const char *keys_dir, const char *kid, EVP_PKEY **out, struct jit_error *e);
/* Loads an Ed25519 private key (PEM PKCS#8). Returns 0, or -errno / -EINVAL (not Ed25519). */
int keys_load_private(const char *path, EVP_PKEY **out);
/*
 * Generates an Ed25519 key pair and writes dir/<kid>.key (mode 0600) and dir/<kid>.pem (0644).
 * Refuses to overwrite existing files. Returns 0 or -errno.
 */
int keys_generate(const char *dir, const char *kid);

typedef void keys_warn_fn(void *arg, const char *msg);

/*
 * What cfg's trusted keys let through, for --check-config, each start and each reload: every
 * <kid>.pem in keys_dir loaded as a grant naming it would load it, and every key "issuers"
 * binds. Keys are read when grants name them and may be added while jitd runs, so what cannot
 * be used is a line on warn (each such file, an unreadable keys_dir, none usable, a bound key
 * that cannot be loaded, keys bound to no issuer, several keys and no issuers), not an error.
 * Returns how many keys can sign a grant jitd admits (with issuers, only the bound ones).
 */
size_t keys_survey(const struct config *cfg, keys_warn_fn *warn, void *arg);
/*
 * 0 when keys_dir is a directory jitd can look for keys in, else why not as an errno: missing (a
 * typo), not a directory, not searchable, or a disk that fails. Asked as keys_load_public asks,
 * with a path through it: the same credentials and capabilities. Such a keys_dir reads as
 * every key removed, which it says nothing about: a reload to it is refused and a start with
 * signed records fails (agent/enforce_reload.c, agent/enforce_restore.c), and --check-config
 * refuses it.
 */
int keys_dir_errno(const char *keys_dir);

#endif
