/* Server-side apply of many objects at once: a few workers, each with its own connection. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "latch/error.h"
#include "latch/k8s.h"

struct apply_job {
	json_t *object;                /* as sent */
	const char *default_namespace; /* for a namespaced object without one */
	json_t *stored;                /* what the server stored (or would store); NULL on failure */
	int result;                    /* 0, or the error code */
	struct latch_error error;
};

/* Apply every job; returns 0 if all succeeded, else the error of the first failed job in
 * job order (so the message does not depend on timing). After a failure no new job starts
 * unless keep_going (a dry run checks them all). */
int apply_parallel(struct latch_k8s *k, struct apply_job *jobs, size_t n, const struct latch_k8s_apply_options *o,
		   bool keep_going, struct latch_error *err);
void apply_jobs_done(struct apply_job *jobs, size_t n);
