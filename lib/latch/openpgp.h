/* OpenPGP signature verification against a file of trusted public keys, on GPGME (the only
 * file that speaks gpgme_*). Each call imports the keys into a private, temporary GnuPG home
 * under work_dir, so exactly the keys in that file are trusted and nothing persists between
 * calls. Not thread-safe. */
#pragma once

#include "latch/buf.h"
#include "latch/error.h"

/* 0 when signature is a good signature over signed_data by a key in keyring_file (not
 * revoked, not expired); ret_fingerprint gets that key's fingerprint. Otherwise an error that
 * says why: no signature, a key not in the file (named by its fingerprint), a bad signature. */
int latch_openpgp_verify(const char *keyring_file, const char *work_dir, struct latch_view signature, struct latch_view signed_data,
			 char ret_fingerprint[65], struct latch_error *err);
