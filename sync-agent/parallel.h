/* Many Kubernetes requests at once: a few workers, each with its own connection. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "latch/error.h"
#include "latch/k8s.h"

/* One unit of work, run on the worker's own client; returns 0 or an error code. */
typedef int (*parallel_fn)(struct latch_k8s *k, size_t i, void *ctx);

#define PARALLEL_MAX_WORKERS 8

/* Runs fn for i in [0, n) on up to workers (at most PARALLEL_MAX_WORKERS) workers;
 * results[i] gets what fn returned, or 1 for a unit that did not run (after a failure,
 * unless keep_going). k's discovery has run (latch_k8s_discover): the clients the workers
 * get copy it instead of running it again. Returns 0, or the first failure in index order. */
int parallel_run(struct latch_k8s *k, size_t n, size_t workers, parallel_fn fn, void *ctx, bool keep_going,
		 int *results);

struct apply_job {
	const json_t *object;          /* as rendered (see objects.h); borrowed */
	bool keep_stored;              /* keep the server's whole answer, not only its resourceVersion */
	json_t *stored;                /* what the server stored (or would store), if keep_stored */
	char *fingerprint;             /* of what it stored (sync_object_fingerprint); NULL on failure */
	int result;                    /* 0, an error code, or 1: not run */
	struct latch_error error;
};

/* Server-side apply of every job with parallel_run. */
int apply_parallel(struct latch_k8s *k, struct apply_job *jobs, size_t n, const struct latch_k8s_apply_options *o,
		   bool keep_going);
void apply_jobs_done(struct apply_job *jobs, size_t n);
