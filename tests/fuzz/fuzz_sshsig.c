#include "fuzz.h"

#include <string.h>

#include "latch/sshsig.h"

/* Input: allowed_signers text, NUL, an armored signature, NUL, the signed message. */
static struct latch_view next_part(const uint8_t **data, size_t *size)
{
	const uint8_t *nul = memchr(*data, '\0', *size);
	size_t n = nul ? (size_t)(nul - *data) : *size;
	struct latch_view v = latch_view_make((const char *)*data, n);
	*data += nul ? n + 1 : n;
	*size -= nul ? n + 1 : n;
	return v;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct latch_view allowed = next_part(&data, &size), armored = next_part(&data, &size);
	struct latch_view message = latch_view_make((const char *)data, size);
	struct latch_sshsig_signer signer;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_sshsig_verify(allowed, "fuzz", "git", armored, message, 1764000000, &signer, &err) < 0)
		latch_error_done(&err);
	return 0;
}
