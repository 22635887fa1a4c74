/* The JSON adapter: the only file that speaks jansson's conventions. Parses with a size and
 * nesting limit and reports errors as "<name>:<line>:<column>: <reason>"; every string
 * jansson frees is zeroed first, because JSON here carries tokens and secret values.
 * Values are plain jansson json_t, owned by the caller (json_decref). */
#pragma once

#include <jansson.h>

#include "latch/buf.h"
#include "latch/error.h"

struct latch_json_limits {
	size_t max_bytes;
	unsigned max_depth;
};

#define LATCH_JSON_LIMITS_DEFAULT ((struct latch_json_limits){ 4u << 20, 64 })

/* Parse one JSON value; duplicate object keys are an error. name labels the input in errors. */
int latch_json_parse(struct latch_view text, const char *name, const struct latch_json_limits *limits,
		     json_t **ret, struct latch_error *err);

/* Serialise compactly with sorted keys (stable output), appending to out. */
int latch_json_dump(const json_t *value, struct latch_buf *out, struct latch_error *err);

/* obj.key as a string, or NULL when obj is not an object or the key is missing or not a string. */
const char *latch_json_get_str(const json_t *obj, const char *key);
/* How many of jansson's allocations have failed in this thread. A builder call that failed
 * (json_object_set_new given NULL, say) leaves a value silently short; code that builds a
 * document with many calls compares this before and after, and so checks them all at once. */
unsigned long latch_json_allocation_failures(void);

/* Follow a dotted path of object keys ("auth.client_token"); NULL when any step is missing. */
json_t *latch_json_path(const json_t *obj, const char *dotted);

/* The keys of an object in byte order (as Go sorts map keys); free() the array, not the
 * keys. NULL when out of memory. */
const char **latch_json_sorted_keys(const json_t *obj, size_t *ret_n);

void latch_json_decrefp(json_t **p);
#define _cleanup_json_ _cleanup_(latch_json_decrefp)
