/* The agent's HTTP endpoints while it runs: / (a status page for people, HTML with no
 * script), /healthz (the loop is alive), /readyz (every
 * source's last pass applied) and /metrics (Prometheus text format), served by libmicrohttpd
 * on a thread of its own, connections concurrently, each with a whole-connection deadline, a
 * header cap and a per-client limit, so slow clients cannot starve the kubelet's probes. The
 * loop reports each pass with serve_record() and each turn with serve_heartbeat(). Only names
 * and counts are served: no secret, no object content. POST /hook/<source>, signed with the
 * source's webhook secret (webhook.h), requests a pass of that source at once.
 *
 * Lifecycle: serve_start() -> serve_record()/serve_heartbeat() -> serve_stop(). */
#pragma once

#include <stdbool.h>

#include "latch/error.h"
#include "sync.h"

struct serve;

/* listen: "HOST:PORT" or ":PORT" (every address). stale_after_s: /healthz fails when the loop
 * has not turned for that long. */
int serve_start(const char *listen, const struct sync_config *cfg, long stale_after_s, struct serve **ret, struct latch_error *err);
/* error: the failed pass's message, or NULL. */
void serve_record(struct serve *sv, size_t source, bool ok, const struct sync_result *res,
		  const struct sync_observed *observed, double seconds, const char *error);
void serve_heartbeat(struct serve *sv);
/* Whether a signed push hook asked for a pass of this source since the last call (the hook
 * also sends SIGUSR1 to the process, which the loop waits for). */
bool serve_take_pass_request(struct serve *sv, size_t source);
/* This replica does not hold the source's Lease (elsewhere). When another replica, holder,
 * does, /readyz does not wait for the source here and the page names that replica; when none
 * does yet (holder NULL or ""), /readyz waits. Accepts a NULL sv. */
void serve_held_elsewhere(struct serve *sv, size_t source, bool elsewhere, const char *holder);
void serve_stop(struct serve *sv);
