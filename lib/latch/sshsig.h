/* SSH signatures: the SSHSIG format of `ssh-keygen -Y sign`, which git writes for commits and
 * tags with gpg.format=ssh, verified against an allowed_signers file as git and ssh-keygen
 * read it (ssh-keygen(1), ALLOWED SIGNERS), on OpenSSL alone: no ssh-keygen at run time.
 *
 * Keys: ssh-ed25519, ssh-rsa (rsa-sha2-256 and rsa-sha2-512 signatures, 2048 bits or more),
 * ecdsa-sha2-nistp256/384/521. Certificates and security keys (sk-*) are refused, saying so.
 * Options of a line: namespaces="…" (patterns, ! negates), valid-after and valid-before
 * (YYYYMMDD[HHMM[SS]], read as UTC), cert-authority (such a line never matches a key). A line
 * that does not parse is an error naming the file and line, not a line skipped. */
#pragma once

#include <stdint.h>

#include "latch/buf.h"
#include "latch/error.h"

#define LATCH_SSHSIG_BEGIN "-----BEGIN SSH SIGNATURE-----"

struct latch_sshsig_signer {
	char fingerprint[64]; /* "SHA256:…", as ssh-keygen -l prints it */
	char principal[256];  /* the principals field of the line that allowed the key */
	size_t line;
};

/* 0 when armored is a good signature over message for namespace ns by a key that
 * allowed_signers (text, named name in errors) lists for ns and at signed_at (Unix time, the
 * commit's or tag's). Otherwise LATCH_EFORBIDDEN (a key not listed, a bad signature, outside
 * its namespaces or validity) or LATCH_EINVAL (not a signature, an unsupported key, a line that
 * does not parse), the message naming the key by fingerprint. */
int latch_sshsig_verify(struct latch_view allowed_signers, const char *name, const char *ns,
			struct latch_view armored,
			struct latch_view message, int64_t signed_at, struct latch_sshsig_signer *ret,
			struct latch_error *err);

/* The same, reading the allowed_signers file at path. */
int latch_sshsig_verify_file(const char *path, const char *ns, struct latch_view armored,
			     struct latch_view message,
			     int64_t signed_at, struct latch_sshsig_signer *ret, struct latch_error *err);
