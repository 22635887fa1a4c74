/* Workers take the next job by an atomic index. Each owns a clone of the client, so no
 * connection or curl handle is shared between threads. */
#include "parallel.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>

#define MAX_WORKERS 8

struct shared {
	struct apply_job *jobs;
	size_t n;
	const struct latch_k8s_apply_options *options;
	bool keep_going;
	atomic_size_t next;
	atomic_bool failed;
};

static void run_jobs(struct shared *sh, struct latch_k8s *k)
{
	for (;;) {
		size_t i = atomic_fetch_add(&sh->next, 1);
		if (i >= sh->n || (!sh->keep_going && atomic_load(&sh->failed)))
			return;
		struct apply_job *j = &sh->jobs[i];
		struct latch_k8s_apply_options o = *sh->options;
		o.default_namespace = j->default_namespace;
		j->result = latch_k8s_apply(k, j->object, &o, &j->stored, &j->error);
		if (j->result < 0)
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
	run_jobs(w->shared, w->client);
	return NULL;
}

static int first_failure(const struct apply_job *jobs, size_t n, struct latch_error *err)
{
	for (size_t i = 0; i < n; i++) {
		if (jobs[i].result < 0)
			return latch_error_set(err, jobs[i].result, "%s", latch_error_message(&jobs[i].error));
	}
	return 0;
}

int apply_parallel(struct latch_k8s *k, struct apply_job *jobs, size_t n, const struct latch_k8s_apply_options *o,
		   bool keep_going, struct latch_error *err)
{
	struct shared sh = { .jobs = jobs, .n = n, .options = o, .keep_going = keep_going };
	atomic_init(&sh.next, 0);
	atomic_init(&sh.failed, false);
	for (size_t i = 0; i < n; i++)
		jobs[i].result = 0;
	/* Clients are cloned before any thread runs: a clone reads what k's discovery holds. */
	struct worker workers[MAX_WORKERS];
	pthread_t threads[MAX_WORKERS];
	size_t wanted = n < MAX_WORKERS ? n : MAX_WORKERS, cloned = 0, started = 0;
	while (cloned + 1 < wanted && latch_k8s_clone(k, &workers[cloned].client, NULL) == 0) {
		workers[cloned].shared = &sh;
		cloned++;
	}
	while (started < cloned && pthread_create(&threads[started], NULL, worker, &workers[started]) == 0)
		started++;
	run_jobs(&sh, k); /* the calling thread works too, on k */
	for (size_t t = 0; t < started; t++)
		pthread_join(threads[t], NULL);
	for (size_t t = 0; t < cloned; t++)
		latch_k8s_free(workers[t].client);
	return first_failure(jobs, n, err);
}

void apply_jobs_done(struct apply_job *jobs, size_t n)
{
	for (size_t i = 0; jobs && i < n; i++) {
		json_decref(jobs[i].object);
		json_decref(jobs[i].stored);
		latch_error_done(&jobs[i].error);
	}
	free(jobs);
}
