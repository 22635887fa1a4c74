/* Workers take the next unit by an atomic index. Each owns a clone of the client, so no
 * connection or curl handle is shared between threads; the clones go back to the client
 * afterwards, connections open, for the next step to reuse. */
#include "parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "objects.h"

struct shared {
	size_t n;
	parallel_fn fn;
	void *ctx;
	int *results;
	bool keep_going;
	atomic_size_t next;
	atomic_bool failed;
};

static void run_units(struct shared *sh, struct latch_k8s *k)
{
	for (;;) {
		size_t i = atomic_fetch_add(&sh->next, 1);
		if (i >= sh->n || (!sh->keep_going && atomic_load(&sh->failed)))
			return;
		sh->results[i] = sh->fn(k, i, sh->ctx);
		if (sh->results[i] < 0)
			atomic_store(&sh->failed, true);
	}
}

struct worker {
	struct shared *shared;
	struct latch_k8s *client;
};

static void *worker(void *arg)
{
	struct worker *w = arg;
	run_units(w->shared, w->client);
	return NULL;
}

int parallel_run(struct latch_k8s *k, size_t n, size_t workers, parallel_fn fn, void *ctx, bool keep_going,
		 int *results)
{
	struct shared sh = { .n = n, .fn = fn, .ctx = ctx, .results = results, .keep_going = keep_going };
	atomic_init(&sh.next, 0);
	atomic_init(&sh.failed, false);
	for (size_t i = 0; i < n; i++)
		results[i] = 1;
	/* Clients are cloned before any thread runs. */
	struct worker helpers[PARALLEL_MAX_WORKERS];
	pthread_t threads[PARALLEL_MAX_WORKERS];
	size_t wanted = workers < PARALLEL_MAX_WORKERS ? workers : PARALLEL_MAX_WORKERS, cloned = 0, started = 0;
	if (n < wanted)
		wanted = n;
	while (cloned + 1 < wanted && latch_k8s_borrow(k, &helpers[cloned].client, NULL) == 0) {
		helpers[cloned].shared = &sh;
		cloned++;
	}
	while (started < cloned && pthread_create(&threads[started], NULL, worker, &helpers[started]) == 0)
		started++;
	run_units(&sh, k); /* the calling thread works too, on k */
	for (size_t t = 0; t < started; t++)
		pthread_join(threads[t], NULL);
	for (size_t t = 0; t < cloned; t++)
		latch_k8s_give_back(k, helpers[t].client);
	for (size_t i = 0; i < n; i++)
		if (results[i] < 0)
			return results[i];
	return 0;
}

struct apply_ctx {
	struct apply_job *jobs;
	const struct latch_k8s_apply_options *options;
};

static int apply_one(struct latch_k8s *k, size_t i, void *ctx)
{
	struct apply_ctx *a = ctx;
	struct apply_job *j = &a->jobs[i];
	struct latch_k8s_apply_options o = *a->options;
	o.default_namespace = sync_object_default_namespace(j->object);
	char *wire = sync_object_wire_text(j->object); /* made here: one copy alive per worker */
	int r = wire ? latch_k8s_apply_text(k, j->object, wire, &o, &j->stored, &j->error)
		     : latch_error_set(&j->error, LATCH_ENOMEM, "out of memory");
	latch_secret_free(wire);
	if (r == 0 && !o.dry_run && !(j->fingerprint = sync_object_fingerprint(j->stored)))
		r = latch_error_set(&j->error, LATCH_EINVAL, "the API server's answer has no resourceVersion");
	/* A thousand answers with their managedFields are tens of MB as jansson trees. */
	if (!j->keep_stored) {
		json_decref(j->stored);
		j->stored = NULL;
	}
	return r;
}

int apply_parallel(struct latch_k8s *k, struct apply_job *jobs, size_t n, const struct latch_k8s_apply_options *o, bool keep_going)
{
	int *results = calloc(n ? n : 1, sizeof(*results));
	if (!results)
		return LATCH_ENOMEM;
	struct apply_ctx ctx = { jobs, o };
	int r = parallel_run(k, n, PARALLEL_MAX_WORKERS, apply_one, &ctx, keep_going, results);
	for (size_t i = 0; i < n; i++)
		jobs[i].result = results[i];
	free(results);
	return r;
}

void apply_jobs_done(struct apply_job *jobs, size_t n)
{
	for (size_t i = 0; jobs && i < n; i++) {
		json_decref(jobs[i].stored);
		free(jobs[i].fingerprint);
		latch_error_done(&jobs[i].error);
	}
	free(jobs);
}
