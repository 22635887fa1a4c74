/* The Kubernetes API client: connection from a kubeconfig file or the in-cluster service
 * account, discovery of which resource serves a kind, and the calls latch-sync makes
 * (server-side apply with optional dry run, get, delete).
 *
 * Lifecycle: latch_k8s_from_kubeconfig() or latch_k8s_in_cluster() -> calls ->
 * latch_k8s_free(). Discovery runs on the first call that needs it and is cached. */
#pragma once

#include <stdbool.h>

#include "latch/error.h"
#include "latch/json.h"

struct latch_k8s;

/* path NULL: $KUBECONFIG, else ~/.kube/config. Uses the current context. */
int latch_k8s_from_kubeconfig(const char *path, struct latch_k8s **ret, struct latch_error *err);
/* The same from a kubeconfig's text; relative file names in it are taken from path's folder. */
int latch_k8s_from_kubeconfig_text(struct latch_view text, const char *path, struct latch_k8s **ret,
				   struct latch_error *err);
/* Whether the kubeconfig's insecure-skip-tls-verify turned certificate checks off (the
 * program says so in a warning). */
bool latch_k8s_tls_unverified(const struct latch_k8s *k);
/* KUBERNETES_SERVICE_HOST/PORT and /var/run/secrets/kubernetes.io/serviceaccount. */
int latch_k8s_in_cluster(struct latch_k8s **ret, struct latch_error *err);
void latch_k8s_free(struct latch_k8s *k);
void latch_k8s_freep(struct latch_k8s **k);

const char *latch_k8s_server(const struct latch_k8s *k);

/* Another client to the same server with its own connection and a copy of what discovery
 * found: one per thread (a client is not thread-safe). */
int latch_k8s_clone(const struct latch_k8s *k, struct latch_k8s **ret, struct latch_error *err);
/* The same, reusing a clone given back to k (and its open connection) when there is one; give
 * it back with latch_k8s_give_back, which keeps up to LATCH_K8S_SPARES_MAX (the rest are
 * freed; the kept ones with k). Both from k's own thread. */
#define LATCH_K8S_SPARES_MAX 8
int latch_k8s_borrow(struct latch_k8s *k, struct latch_k8s **ret, struct latch_error *err);
void latch_k8s_give_back(struct latch_k8s *k, struct latch_k8s *clone);
/* Run discovery now if it has not run (before cloning: clones copy what it found). */
int latch_k8s_discover(struct latch_k8s *k, struct latch_error *err);
/* Whether the last discovery found the kind, and whether it is namespaced (no request, no
 * refresh; false for a kind it did not find). */
bool latch_k8s_serves(const struct latch_k8s *k, const char *api_version, const char *kind);
bool latch_k8s_namespaced(const struct latch_k8s *k, const char *api_version, const char *kind);
/* The next call that needs discovery runs it again (after a CRD was established). */
void latch_k8s_forget_discovery(struct latch_k8s *k);
/* The resources of one discovery document (an APIResourceList) served at group_version, in
 * place of what was known of it; calls then answer from what is known until
 * latch_k8s_forget_discovery. Subresources and names that cannot be a path segment are
 * skipped. LATCH_EINVAL when group_version cannot name a path, LATCH_ENOMEM. */
int latch_k8s_learn_resources(struct latch_k8s *k, const char *group_version, const json_t *list);
/* The same for an aggregated discovery document (APIGroupDiscoveryList, what GET /api and
 * /apis answer to its Accept type): every group version in it. 1 when doc is not one (a server
 * that answered with the legacy document), LATCH_ENOMEM, else 0. */
int latch_k8s_learn_aggregated(struct latch_k8s *k, const json_t *doc);

/* How many requests the process's clients made with method (0 GET, 1 POST, 2 PUT, 3 PATCH,
 * 4 DELETE; its name in ret_method) that were answered with status (0: no answer). */
#define LATCH_K8S_METHODS 5
#define LATCH_K8S_STATUS_MAX 600
unsigned long latch_k8s_requests(size_t method, long status, const char **ret_method);

/* Each request that follows, retries included, within deadline_ms (0: the default policy's). */
void latch_k8s_set_deadline(struct latch_k8s *k, unsigned deadline_ms);

/* While set, every request but a GET is refused once time_left(arg) is <= 0, and given at
 * most that many seconds, retries included (a replica that may have lost its Lease writes
 * nothing, and no write of its lands after). Clones made while it is set share it. */
void latch_k8s_set_write_guard(struct latch_k8s *k, double (*time_left)(void *arg), void *arg);

/* A raw request: path below the server ("/api/v1/namespaces"); ret gets the parsed body
 * (NULL when empty), ret_status the HTTP status. Fails only when no answer came. */
int latch_k8s_request(struct latch_k8s *k, const char *method, const char *path, const char *content_type,
		      const char *body, long *ret_status, json_t **ret, struct latch_error *err);

/* The REST path of an object ("/apis/apps/v1/namespaces/demo/deployments/web"), found by
 * discovery; ret_namespaced says whether the kind is namespaced. name may be NULL (the
 * collection); a namespaced kind without namespace uses default_namespace. */
int latch_k8s_object_path(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns,
			  const char *name, const char *default_namespace, char **ret_path, bool *ret_namespaced,
			  struct latch_error *err);

struct latch_k8s_apply_options {
	const char *field_manager;
	bool force;
	bool dry_run;
	const char *default_namespace;
};

/* Server-side apply of one object; ret is what the server stored (or would store). A
 * refusal is an error carrying the server's message and the object's kind/name. */
int latch_k8s_apply(struct latch_k8s *k, const json_t *obj, const struct latch_k8s_apply_options *o, json_t **ret,
		    struct latch_error *err);
/* The same with the body given as JSON text; identity names the object (apiVersion, kind,
 * metadata.name and .namespace: the rest of it is not read). */
int latch_k8s_apply_text(struct latch_k8s *k, const json_t *identity, const char *body,
			 const struct latch_k8s_apply_options *o, json_t **ret, struct latch_error *err);
/* Get an object; LATCH_ENOTFOUND when it does not exist. */
int latch_k8s_get(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns, const char *name,
		  json_t **ret, struct latch_error *err);
/* Delete an object (background propagation); deleting one that is gone is success. */
int latch_k8s_delete(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns, const char *name,
		     struct latch_error *err);
/* The same, only if the object still has this uid (else LATCH_ECONFLICT): not a namesake
 * created since the caller looked. */
int latch_k8s_delete_uid(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns, const char *name, const char *uid,
			 struct latch_error *err);
struct latch_k8s_list_options {
	const char *label_selector; /* NULL: every object */
	/* From the API server's watch cache (resourceVersion=0), which may lag a moment behind
	 * but costs the server no etcd read over every object of the kind. */
	bool cached;
	bool metadata_only;         /* items carry only metadata (PartialObjectMetadata) */
};

/* Every object of a kind in all namespaces, following continue tokens; ret is an array of
 * the items (which carry no kind or apiVersion). o NULL: every object, uncached. */
int latch_k8s_list(struct latch_k8s *k, const char *api_version, const char *kind, const struct latch_k8s_list_options *o,
		   json_t **ret, struct latch_error *err);
/* The same, each item through fn as it is read (fn's return < 0 stops the list and is
 * returned; fn may take a reference): a long list is never held as one tree. */
int latch_k8s_list_each(struct latch_k8s *k, const char *api_version, const char *kind,
			const struct latch_k8s_list_options *o, int (*fn)(json_t *item, void *arg), void *arg,
			struct latch_error *err);
/* A list body's items through fn one at a time, each parsed alone and freed after (a list of
 * 10,000 objects is never one tree); ret_meta gets its metadata (the continue token), or NULL.
 * LATCH_EPARSE when the body is not a JSON object whose items are an array; what fn returns
 * when it is < 0. */
int latch_k8s_list_body_each(struct latch_view body, int (*fn)(json_t *item, void *arg), void *arg,
			     json_t **ret_meta);
