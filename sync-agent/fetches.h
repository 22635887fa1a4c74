/* One git fetch per repository per round of passes. Sources that read the same url with the
 * same credentials share one cache, and within a round (every source's pass, run in
 * parallel) the first pass fetches while the others wait and use what it fetched. */
#pragma once

#include "sync.h"

struct sync_fetches;

int sync_fetches_new(struct sync_fetches **ret);
void sync_fetches_free(struct sync_fetches *f);
/* Between begin and end a repository is fetched once; outside a round, at every pass (a push
 * hook's pass must see the push). Called while no pass runs. */
void sync_fetches_round_begin(struct sync_fetches *f);
void sync_fetches_round_end(struct sync_fetches *f);

/* The cache directory of the source's repository: <cacheDir>/<config>/git/<digest of the url
 * and the credentials' files>. NULL when out of memory. */
char *sync_fetch_dir(const struct sync_config *c, const struct sync_source *s);

typedef int (*sync_fetch_fn)(void *arg, struct latch_error *err);

/* fetch(arg) for the repository in dir, unless this round fetched it already: then that
 * fetch's outcome (its error, if it failed). f may be NULL: fetch every time. */
int sync_fetch_once(struct sync_fetches *f, const char *dir, sync_fetch_fn fetch, void *arg,
		    struct sync_observed *observed, struct latch_error *err);
