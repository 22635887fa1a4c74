/* One git fetch per repository per round of passes (round.h). Sources that read the same url
 * with the same credentials share one cache, and within a round the first pass fetches while
 * the others wait and use what it fetched. */
#pragma once

#include "round.h"
#include "sync.h"

/* The cache directory of the source's repository: <cacheDir>/<config>/git/<digest of the url
 * and the credentials' files>. NULL when out of memory. */
char *sync_fetch_dir(const struct sync_config *c, const struct sync_source *s);

typedef int (*sync_fetch_fn)(void *arg, struct latch_error *err);

/* fetch(arg) for the repository in dir, unless this round fetched it already: then that
 * fetch's outcome (its error, if it failed). round may be NULL: fetch every time. */
int sync_fetch_once(struct sync_round *round, const char *dir, sync_fetch_fn fetch, void *arg,
		    struct sync_observed *observed, struct latch_error *err);
