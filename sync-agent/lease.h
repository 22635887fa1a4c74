/* Replicas share the sources of one SyncConfig through Leases (coordination.k8s.io/v1), one
 * per source, named latch-sync.<config>.<source> in the SyncConfig's namespace: a source is
 * synced by whichever replica holds its Lease, so no source is applied by two at once.
 *
 * Each replica also holds a Lease of its own (latch-sync-replica.<config>.<identity>, labelled
 * latch.dev/replica-of=<config>), so each knows how many are alive and takes no more than its
 * share of the sources; those above its share (a replica joined) are released between passes.
 *
 * As client-go's leader election: a thread tries to take or renew every Lease each retry
 * period; a Lease held by another replica is taken once it has not changed for a whole lease
 * duration, as this replica observed it (no clock is compared across machines), or at once
 * when its holder released it. The API server's resourceVersion precondition decides between
 * two replicas that try at once. A replica that could not renew within the renew deadline
 * (shorter than the lease duration) counts the Lease as lost and stops writing before any other
 * replica may take it. Stopping releases the Leases held, so the others take them at once. */
#pragma once

#include <stdbool.h>

#include "latch/k8s.h"
#include "sync.h"

struct sync_lease_options {
	const char *identity;  /* this replica, as holderIdentity (copied); unique per replica */
	double duration_s;     /* leaseDurationSeconds (15) */
	double renew_deadline_s; /* held only if renewed within this (10) */
	double retry_s;        /* between tries (2) */
};

struct sync_leases;

/* Starts the thread, on a clone of k. The first try is made before it returns, so a replica
 * alone holds its sources from the first pass. */
int sync_leases_start(const struct latch_k8s *k, const struct sync_config *cfg,
		      const struct sync_lease_options *o,
		      struct sync_leases **ret, struct latch_error *err);
/* Whether this replica holds source i's Lease now (renewed within the renew deadline), and
 * for how many seconds more without a renewal (<= 0: not held). */
bool sync_leases_held(struct sync_leases *l, size_t i);
double sync_leases_time_left(struct sync_leases *l, size_t i);
/* Whether another live replica held source i's Lease at the last look, and which (in out). */
bool sync_leases_holder(struct sync_leases *l, size_t i, char *out, size_t size);
/* A pass over source i is under way (busy) or over: its Lease is not given up meanwhile. */
void sync_leases_busy(struct sync_leases *l, size_t i, bool busy);
/* A push hook for a source another replica holds: ask that replica for a pass, through an
 * annotation on the Lease (made with k, the caller's client). */
int sync_leases_request_pass(struct sync_leases *l, struct latch_k8s *k, size_t i, struct latch_error *err);
/* Whether source i wants a pass at once, since the last call: its Lease was just acquired, or
 * another replica asked (sync_leases_request_pass). The loop is woken with SIGUSR1. Accepts a
 * NULL l. */
bool sync_leases_take_pass_request(struct sync_leases *l, size_t i);
/* Stops the thread and releases the Leases held. Accepts NULL. */
void sync_leases_stop(struct sync_leases *l);
