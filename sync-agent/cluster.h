/* What a pass does in the cluster: validate a revision by server dry run, apply it (first
 * stage one by one, the rest in parallel), find drift by labelled lists, prune, and wait for
 * workloads to be healthy. */
#pragma once

#include "latch/json.h"
#include "latch/k8s.h"
#include "sync.h"

/* The namespace each object will be in, as lists will show it: a cluster-scoped object drops
 * the source's targetNamespace, a namespaced one without any gets "default". Kinds not
 * served yet take the scope their CRD in this revision declares. */
int sync_resolve_namespaces(struct latch_k8s *k, json_t *objects, struct latch_error *err);

/* Every object that can be checked before the apply, by dryRun=All; the first refusal in the
 * revision's order is the error, named by the object's origin. created_here gets the names of
 * the revision's Namespaces that do not exist yet (name -> true); would_store (or NULL) gets
 * key -> what the server would store. */
int sync_validate(struct latch_k8s *k, const json_t *objects, json_t *created_here, json_t *would_store, struct latch_error *err);

/* What sync_list_live keeps of each live object. */
enum sync_live {
	SYNC_LIVE_WHOLE,       /* the object, spec and status (for health and diff) */
	SYNC_LIVE_METADATA,    /* its metadata only */
	SYNC_LIVE_FINGERPRINT, /* only its fingerprint, as a string: all a no-op pass needs */
};
/* This source's live objects of the kinds in objects into live, by object key: one list per
 * kind by the owner labels; cached lists come from the API server's watch cache. */
int sync_list_live(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
		   bool cached, enum sync_live keep, json_t *live, struct latch_error *err);
/* The fingerprint (sync_object_fingerprint) of obj's live copy in what sync_list_live
 * returned, whatever it kept; NULL when there is none. To free. */
char *sync_live_fingerprint(const json_t *live, const json_t *obj);
/* Objects to apply again: those whose live fingerprint (sync_object_fingerprint) is not the
 * recorded one (fingerprints: key -> fingerprint), changed by someone else or gone, and those
 * whose digest (sync_object_digest) is not the one recorded when they were last applied
 * (digests: key -> digest; NULL when the revision renders as it did then). NULL when out of
 * memory. */
json_t *sync_changed_objects(const json_t *objects, const json_t *digests, const json_t *fingerprints,
			     const json_t *live);

/* Server-side apply, staged. versions: the recorded fingerprints, updated with what this
 * apply stored; live: the objects as listed before (or NULL); created: Namespaces
 * latch-sync created, extended with the ones this apply creates. */
int sync_apply_all(struct latch_k8s *k, const struct sync_source *s, const json_t *objects, json_t *versions, const json_t *live,
		   json_t *created, struct sync_result *res, struct latch_error *err);

/* Delete what previous (inventory entries) has and current does not, if still labelled as
 * this source's; a Namespace only if in created. */
int sync_prune(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *previous,
	       const json_t *current, json_t *created, struct sync_result *res, struct latch_error *err);

/* Until every Deployment, StatefulSet, DaemonSet and Job of objects is healthy, one failed, or
 * the source's timeout passed. */
int sync_wait_healthy(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
		      struct latch_error *err);
