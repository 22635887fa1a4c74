/* What a round of passes does once for all of them. The passes of a round run in parallel;
 * the first that needs a piece of work (a repository's fetch, a kind's list) does it while
 * the others that need it wait, then each takes its share of the outcome. Nothing is shared
 * across rounds: a push hook's round fetches anew. */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>

#include "latch/error.h"

struct sync_round;

int sync_round_new(struct sync_round **ret);
void sync_round_free(struct sync_round *r);
/* Called while no pass runs. sources: the names of the sources the round passes. The end
 * drops whatever the round's work kept. */
void sync_round_begin(struct sync_round *r, const char *const *sources, size_t n);
void sync_round_end(struct sync_round *r);
/* How many sources the round now running passes (0 outside a round), and whether it passes
 * this one. */
size_t sync_round_passes(const struct sync_round *r);
bool sync_round_passes_source(const struct sync_round *r, const char *source);

struct sync_round_work {
	/* Done by the first pass that asks; *kept is what the others take from (or NULL). */
	int (*make)(void *arg, json_t **kept, struct latch_error *err);
	/* Each asking pass's share, taken with the work's lock held; not called when make
	 * failed. May be NULL. */
	int (*take)(void *arg, json_t *kept, struct latch_error *err);
	void *arg;
};

/* The work named key, made now unless a pass of this round made it: then that outcome (its
 * error, if it failed). made_in, when not NULL, gets how long the making took. r may be NULL, and outside a
 * round the work is made every time. */
int sync_round_once(struct sync_round *r, const char *key, const struct sync_round_work *w, double *made_in,
		    struct latch_error *err);
