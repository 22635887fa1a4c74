/* What `latch-sync diff` prints: per object of the revision whether the apply would create
 * it, change it (and which fields), or leave it as it is, and what the prune would delete. */
#pragma once

#include <stdio.h>

#include "latch/json.h"

/* objects: the revision; would_store: key -> the server's dry-run result; live: key -> this
 * source's live objects; gone: inventory entries the revision no longer has. Returns the
 * number of objects that would change. */
size_t sync_diff_print(FILE *out, const json_t *objects, const json_t *would_store, const json_t *live, const json_t *gone);
