/* JSON too large for a ConfigMap's data in plain text (the API server takes at most 1 MiB per
 * object): gzip-compressed and base64-encoded for binaryData, and back. The format is gzip, so
 * `base64 -d | gunzip` reads it. */
#pragma once

#include "latch/json.h"

/* JSON text gzipped and base64-encoded, in a JSON string; NULL when out of memory. */
json_t *sync_packed_from_text(const char *text);
/* The value a packed text holds; NULL when it holds none (not base64, not gzip, not JSON,
 * or over 64 MiB once unpacked). */
json_t *sync_packed_to_json(const char *packed);
