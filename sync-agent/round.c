#include "round.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "latch/clock.h"

/* One named piece of work and what the last round that made it came to. */
struct work {
	char *key;
	pthread_mutex_t lock; /* held while making and taking: the round's other passes wait */
	unsigned long round;
	int result;
	char *message;
	double seconds;
	json_t *kept;
};

struct sync_round {
	pthread_mutex_t lock; /* of the list */
	struct work **items;
	size_t n;
	unsigned long round; /* 0: not in a round; set only while no pass runs */
	unsigned long rounds;
	json_t *sources;     /* the names the round passes, as a set */
};

int sync_round_new(struct sync_round **ret)
{
	struct sync_round *r = calloc(1, sizeof(*r));
	if (!r)
		return LATCH_ENOMEM;
	pthread_mutex_init(&r->lock, NULL);
	*ret = r;
	return 0;
}

void sync_round_free(struct sync_round *r)
{
	if (!r)
		return;
	for (size_t i = 0; i < r->n; i++) {
		pthread_mutex_destroy(&r->items[i]->lock);
		free(r->items[i]->key);
		free(r->items[i]->message);
		json_decref(r->items[i]->kept);
		free(r->items[i]);
	}
	free(r->items);
	json_decref(r->sources);
	pthread_mutex_destroy(&r->lock);
	free(r);
}

void sync_round_begin(struct sync_round *r, const char *const *sources, size_t n)
{
	if (!r)
		return;
	r->round = ++r->rounds;
	json_decref(r->sources);
	r->sources = json_object();
	for (size_t i = 0; i < n && r->sources; i++)
		json_object_set_new(r->sources, sources[i], json_true());
}

void sync_round_end(struct sync_round *r)
{
	if (!r)
		return;
	r->round = 0;
	for (size_t i = 0; i < r->n; i++) {
		json_decref(r->items[i]->kept);
		r->items[i]->kept = NULL;
	}
	json_decref(r->sources);
	r->sources = NULL;
}

size_t sync_round_passes(const struct sync_round *r)
{
	return r && r->round ? json_object_size(r->sources) : 0;
}

bool sync_round_passes_source(const struct sync_round *r, const char *source)
{
	return r && r->round && json_object_get(r->sources, source);
}

static struct work *work_for(struct sync_round *r, const char *key)
{
	struct work *found = NULL;
	pthread_mutex_lock(&r->lock);
	for (size_t i = 0; i < r->n && !found; i++)
		if (strcmp(r->items[i]->key, key) == 0)
			found = r->items[i];
	struct work **grown = found ? NULL : realloc(r->items, (r->n + 1) * sizeof(*r->items));
	if (grown) {
		r->items = grown;
		found = calloc(1, sizeof(*found));
		if (found && !(found->key = strdup(key))) {
			free(found);
			found = NULL;
		}
		if (found) {
			pthread_mutex_init(&found->lock, NULL);
			r->items[r->n++] = found;
		}
	}
	pthread_mutex_unlock(&r->lock);
	return found;
}

static int make_timed(const struct sync_round_work *w, json_t **kept, double *seconds,
		      struct latch_error *err)
{
	double started = latch_monotonic_s();
	int r = w->make(w->arg, kept, err);
	*seconds = latch_monotonic_s() - started;
	return r;
}

static int take(const struct sync_round_work *w, json_t *kept, struct latch_error *err)
{
	return w->take ? w->take(w->arg, kept, err) : 0;
}

/* This round's making of it, now unless an earlier pass of the round made it. */
static int once_in_round(struct sync_round *r, struct work *e, const struct sync_round_work *w,
			 double *made_in, struct latch_error *err)
{
	int result;
	pthread_mutex_lock(&e->lock);
	if (e->round != r->round) {
		json_decref(e->kept);
		e->kept = NULL;
		result = make_timed(w, &e->kept, &e->seconds, err);
		free(e->message);
		e->message = result < 0 ? strdup(latch_error_message(err)) : NULL;
		e->result = result;
		e->round = r->round;
	} else {
		const char *message = e->message ? e->message : "out of memory";
		result = e->result < 0 ? latch_error_set(err, e->result, "%s", message) : 0;
	}
	if (result == 0)
		result = take(w, e->kept, err);
	if (made_in)
		*made_in = e->seconds;
	pthread_mutex_unlock(&e->lock);
	return result;
}

int sync_round_once(struct sync_round *r, const char *key, const struct sync_round_work *w, double *made_in,
		    struct latch_error *err)
{
	if (r && r->round) {
		struct work *e = work_for(r, key);
		if (!e)
			return latch_error_set(err, LATCH_ENOMEM, "out of memory");
		return once_in_round(r, e, w, made_in, err);
	}
	json_t *kept = NULL;
	double seconds;
	int result = make_timed(w, &kept, &seconds, err);
	if (made_in)
		*made_in = seconds;
	if (result == 0)
		result = take(w, kept, err);
	json_decref(kept);
	return result;
}
