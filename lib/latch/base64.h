/* Base64 (RFC 4648), the standard and the URL-safe alphabet. Decoding accepts input with or
 * without '=' padding and rejects anything else that is not in the alphabet. */
#pragma once

#include <stdbool.h>

#include "latch/buf.h"

int latch_base64_encode(struct latch_view in, bool url, struct latch_buf *out);
/* LATCH_EINVAL on a character outside the alphabet or a bad length. */
int latch_base64_decode(struct latch_view in, bool url, struct latch_buf *out);
