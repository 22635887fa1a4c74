#include "fuzz.h"

#include <string.h>

#include "webhook.h"

/* Input: the signature header's value, NUL, the body. Checked as each header kind against a
 * fixed secret. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	const uint8_t *nul = memchr(data, '\0', size);
	if (!nul)
		return 0;
	const char *header = (const char *)data;
	struct latch_view body = latch_view_make((const char *)nul + 1, size - (size_t)(nul - data) - 1);
	struct latch_view secret = latch_view_str("fuzz-secret");
	sync_webhook_signed(secret, body, header, NULL, NULL);
	sync_webhook_signed(secret, body, NULL, header, NULL);
	sync_webhook_signed(secret, body, NULL, NULL, header);
	return 0;
}
