/* Rendering a revision: fetch with libgit2, resolve the source's ref, then every manifest
 * under its path straight from the commit's tree (plain) or `kustomize build` of a private
 * checkout; each object injected by latch-inject's library and labelled as this source's. */
#pragma once

#include "latch/json.h"
#include "sync.h"

/* sha gets the revision; objects gets the rendered objects appended, in file order.
 * applied: the revision the cluster has (NULL: none yet), for verify.everyCommit. */
int sync_render_revision(const struct sync_config *c, const struct sync_source *s, const char *applied,
			 char sha[41], json_t *objects, struct sync_observed *observed, struct latch_error *err);
