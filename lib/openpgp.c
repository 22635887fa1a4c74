#include "latch/openpgp.h"

#include <ftw.h>
#include <gpgme.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

static int import_keys(gpgme_ctx_t ctx, const char *keyring_file, struct latch_error *err)
{
	gpgme_data_t keys = NULL;
	if (gpgme_data_new_from_file(&keys, keyring_file, 1) != 0)
		return latch_error_set(err, LATCH_EIO, "cannot read the keyring file '%s'", keyring_file);
	gpgme_error_t e = gpgme_op_import(ctx, keys);
	gpgme_import_result_t result = e == 0 ? gpgme_op_import_result(ctx) : NULL;
	int r = 0;
	if (e != 0)
		r = latch_error_set(err, LATCH_EINVAL, "importing '%s': %s", keyring_file, gpgme_strerror(e));
	else if (!result || result->imported + result->unchanged == 0)
		r = latch_error_set(err, LATCH_EINVAL, "'%s' holds no OpenPGP public key", keyring_file);
	gpgme_data_release(keys);
	return r;
}

static bool acceptable(gpgme_signature_t s)
{
	const gpgme_sigsum_t refused = GPGME_SIGSUM_RED | GPGME_SIGSUM_KEY_REVOKED | GPGME_SIGSUM_KEY_EXPIRED | GPGME_SIGSUM_SIG_EXPIRED;
	return gpgme_err_code(s->status) == GPG_ERR_NO_ERROR && !(s->summary & refused);
}

/* Why no signature was acceptable, from the first one. */
static int refusal(gpgme_verify_result_t result, const char *keyring_file, struct latch_error *err)
{
	gpgme_signature_t s = result ? result->signatures : NULL;
	if (!s)
		return latch_error_set(err, LATCH_EINVAL, "no OpenPGP signature found");
	switch (gpgme_err_code(s->status)) {
	case GPG_ERR_NO_PUBKEY:
		return latch_error_set(err, LATCH_EFORBIDDEN, "signed by key %s, which is not in '%s'", s->fpr ? s->fpr : "?", keyring_file);
	case GPG_ERR_BAD_SIGNATURE:
		return latch_error_set(err, LATCH_EFORBIDDEN, "the signature by key %s does not match the commit", s->fpr ? s->fpr : "?");
	case GPG_ERR_NO_ERROR:
		return latch_error_set(err, LATCH_EFORBIDDEN, "the signing key %s is revoked or expired", s->fpr ? s->fpr : "?");
	default:
		return latch_error_set(err, LATCH_EFORBIDDEN, "the signature by key %s is not valid: %s", s->fpr ? s->fpr : "?",
				       gpgme_strerror(s->status));
	}
}

static int verify_in(gpgme_ctx_t ctx, const char *keyring_file, struct latch_view signature, struct latch_view signed_data,
		     char ret_fingerprint[65], struct latch_error *err)
{
	gpgme_data_t sig = NULL, text = NULL;
	int r = 0;
	if (gpgme_data_new_from_mem(&sig, signature.ptr, signature.len, 0) != 0 ||
	    gpgme_data_new_from_mem(&text, signed_data.ptr, signed_data.len, 0) != 0)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	gpgme_error_t e = r == 0 ? gpgme_op_verify(ctx, sig, text, NULL) : 0;
	if (r == 0 && e != 0)
		r = latch_error_set(err, LATCH_EINVAL, "verifying the signature: %s", gpgme_strerror(e));
	gpgme_verify_result_t result = r == 0 ? gpgme_op_verify_result(ctx) : NULL;
	gpgme_signature_t good = NULL;
	for (gpgme_signature_t s = result ? result->signatures : NULL; s && !good; s = s->next)
		if (acceptable(s))
			good = s;
	if (r == 0 && !good)
		r = refusal(result, keyring_file, err);
	if (r == 0)
		snprintf(ret_fingerprint, 65, "%s", good->fpr ? good->fpr : "");
	gpgme_data_release(sig);
	gpgme_data_release(text);
	return r;
}

static void start_gpgme(void)
{
	gpgme_check_version(NULL);
}

int latch_openpgp_verify(const char *keyring_file, const char *work_dir, struct latch_view signature, struct latch_view signed_data,
			 char ret_fingerprint[65], struct latch_error *err)
{
	static pthread_once_t ready = PTHREAD_ONCE_INIT;
	pthread_once(&ready, start_gpgme);
	char home[4096];
	if (snprintf(home, sizeof(home), "%s/gnupg-XXXXXX", work_dir) >= (int)sizeof(home) || !mkdtemp(home))
		return latch_error_set(err, LATCH_EIO, "cannot make a GnuPG home under '%s'", work_dir);
	gpgme_ctx_t ctx = NULL;
	int r = 0;
	if (gpgme_new(&ctx) != 0 || gpgme_set_protocol(ctx, GPGME_PROTOCOL_OpenPGP) != 0 ||
	    gpgme_ctx_set_engine_info(ctx, GPGME_PROTOCOL_OpenPGP, NULL, home) != 0)
		r = latch_error_set(err, LATCH_EIO, "cannot start GnuPG (is gpg installed?)");
	if (r == 0)
		r = import_keys(ctx, keyring_file, err);
	if (r == 0)
		r = verify_in(ctx, keyring_file, signature, signed_data, ret_fingerprint, err);
	gpgme_release(ctx);
	nftw(home, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	return r;
}
