#include "cluster.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "health.h"
#include "latch/clock.h"
#include "latch/log.h"
#include "objects.h"
#include "parallel.h"
#include "round.h"

static bool serves_version(const json_t *spec, const char *version)
{
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(spec, "versions"), i, v) {
		const char *name = latch_json_get_str(v, "name");
		if (name && strcmp(name, version) == 0 && json_is_true(json_object_get(v, "served")))
			return true;
	}
	return false;
}

/* The CustomResourceDefinition of this revision that serves kind at api_version, or NULL. */
static const json_t *crd_in_revision(const json_t *objects, const char *api_version, const char *kind)
{
	const char *slash = api_version ? strchr(api_version, '/') : NULL;
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		const json_t *spec = json_object_get(o, "spec");
		const char *group = latch_json_get_str(spec, "group");
		const char *defined = latch_json_get_str(json_object_get(spec, "names"), "kind");
		if (slash && kind && sync_object_is(o, "CustomResourceDefinition") && group && defined && strlen(group) == (size_t)(slash - api_version) &&
		    strncmp(group, api_version, (size_t)(slash - api_version)) == 0 && strcmp(defined, kind) == 0 &&
		    serves_version(spec, slash + 1))
			return o;
	}
	return NULL;
}

int sync_resolve_namespaces(struct latch_k8s *k, json_t *objects, struct latch_error *err)
{
	int r = latch_k8s_discover(k, err);
	size_t i;
	json_t *o;
	json_array_foreach(r == 0 ? objects : NULL, i, o) {
		const char *api_version = latch_json_get_str(o, "apiVersion"), *kind = latch_json_get_str(o, "kind");
		const json_t *crd = latch_k8s_serves(k, api_version, kind) ? NULL : crd_in_revision(objects, api_version, kind);
		const char *scope = latch_json_get_str(json_object_get(crd, "spec"), "scope");
		bool namespaced = crd ? !(scope && strcmp(scope, "Cluster") == 0) : latch_k8s_namespaced(k, api_version, kind);
		json_t *meta = json_object_get(o, "metadata");
		if (!namespaced && !crd && !latch_k8s_serves(k, api_version, kind))
			continue; /* an unknown kind: the dry run names it */
		if (!namespaced)
			json_object_del(meta, "_defaultNamespace");
		else if (!sync_object_namespace(o) && json_object_set_new(meta, "_defaultNamespace", json_string("default")) < 0)
			r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	return r;
}

/* Which of some Namespaces and CRDs do not exist yet, asked in parallel. */
struct presence {
	const json_t *objects;
	bool *missing;
	struct latch_error *errors;
};

static int ask_presence(struct latch_k8s *k, size_t i, void *ctx)
{
	struct presence *p = ctx;
	const json_t *o = json_array_get(p->objects, i);
	bool crd = sync_object_is(o, "CustomResourceDefinition");
	json_t *live = NULL;
	const char *api_version = crd ? "apiextensions.k8s.io/v1" : "v1";
	const char *kind = crd ? "CustomResourceDefinition" : "Namespace";
	int r = latch_k8s_get(k, api_version, kind, NULL, sync_object_meta(o, "name"), &live, &p->errors[i]);
	json_decref(live);
	p->missing[i] = r == LATCH_ENOTFOUND;
	return p->missing[i] ? 0 : r;
}

/* missing[i]: whether objects[i] (a Namespace or a CRD) does not exist. */
static int find_missing(struct latch_k8s *k, const json_t *objects, bool *missing, struct latch_error *err)
{
	size_t n = json_array_size(objects);
	struct latch_error *errors = calloc(n ? n : 1, sizeof(*errors));
	int *results = calloc(n ? n : 1, sizeof(*results));
	struct presence p = { objects, missing, errors };
	int r = errors && results ? latch_k8s_discover(k, err)
				  : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		parallel_run(k, n, PARALLEL_MAX_WORKERS, ask_presence, &p, false, results);
	for (size_t i = 0; r == 0 && i < n; i++) /* the first failure in order */
		if (results[i] < 0)
			r = latch_error_set(err, results[i], "%s", latch_error_message(&errors[i]));
	for (size_t i = 0; errors && i < n; i++)
		latch_error_done(&errors[i]);
	free(errors);
	free(results);
	return r;
}

/* The objects of a kind, in their order (a new array; NULL when out of memory). */
static json_t *of_kind(const json_t *objects, const char *kind)
{
	json_t *out = json_array();
	size_t i;
	json_t *o;
	json_array_foreach(out ? objects : NULL, i, o) {
		if (sync_object_is(o, kind) && json_array_append(out, o) < 0) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

/* Namespaces of this revision that do not exist yet. */
static int new_namespaces(struct latch_k8s *k, const json_t *objects, json_t *ret, struct latch_error *err)
{
	json_t *namespaces = of_kind(objects, "Namespace");
	size_t n = json_array_size(namespaces);
	bool *missing = calloc(n ? n : 1, sizeof(*missing));
	int r = namespaces && missing ? find_missing(k, namespaces, missing, err)
				      : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < n; i++) {
		const char *name = sync_object_meta(json_array_get(namespaces, i), "name");
		if (missing[i] && json_object_set_new(ret, name, json_true()) < 0)
			r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	free(missing);
	json_decref(namespaces);
	return r;
}

/* Objects in a Namespace this revision creates, and custom resources of a CRD it defines
 * that the server does not serve yet, cannot be checked before the first stage exists; the
 * apply checks them. (A dry run into a missing Namespace also costs the server a slow
 * lookup: 60 ms each on the stack.) */
static bool waits_for_first_stage(struct latch_k8s *k, const json_t *objects, const json_t *created_here, const json_t *o)
{
	const char *ns = sync_object_namespace(o), *api_version = latch_json_get_str(o, "apiVersion"), *kind = latch_json_get_str(o, "kind");
	return (ns && !sync_object_first_stage(o) && json_object_get(created_here, ns)) ||
	       (!latch_k8s_serves(k, api_version, kind) && crd_in_revision(objects, api_version, kind));
}

static struct apply_job *make_jobs(const json_t *objects, bool keep_stored)
{
	size_t n = json_array_size(objects);
	struct apply_job *jobs = calloc(n ? n : 1, sizeof(*jobs));
	for (size_t i = 0; jobs && i < n; i++)
		jobs[i] = (struct apply_job){ .object = json_array_get(objects, i), .keep_stored = keep_stored, .error = LATCH_ERROR_INIT };
	return jobs;
}

/* The error of the first failed job, named by where its object came from. */
static int first_job_error(const json_t *objects, const struct apply_job *jobs, size_t n, struct latch_error *err)
{
	for (size_t i = 0; i < n; i++)
		if (jobs[i].result < 0)
			return latch_error_set(err, jobs[i].result, "%s: %s", sync_object_origin(json_array_get(objects, i)),
					       latch_error_message(&jobs[i].error));
	return latch_error_set(err, LATCH_ENOMEM, "out of memory");
}

/* Every object through a server-side apply with dryRun=All, in parallel; the first refusal in
 * the revision's order is the error. */
int sync_validate(struct latch_k8s *k, const json_t *objects, json_t *created_here, json_t *would_store, struct latch_error *err)
{
	json_t *checked = json_array();
	int r = latch_k8s_discover(k, err);
	if (r == 0)
		r = new_namespaces(k, objects, created_here, err);
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) if (!waits_for_first_stage(k, objects, created_here, o)) json_array_append(checked, o);
	size_t n = json_array_size(checked);
	struct apply_job *jobs = r == 0 ? make_jobs(checked, would_store != NULL) : NULL;
	if (r == 0 && !jobs)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	struct latch_k8s_apply_options ao = { FIELD_MANAGER, true, true, NULL };
	if (r == 0 && apply_parallel(k, jobs, n, &ao, true) < 0) /* the first refusal in the revision's order */
		r = first_job_error(checked, jobs, n, err);
	for (i = 0; r == 0 && would_store && i < n; i++) {
		_cleanup_free_ char *key = sync_object_key(json_array_get(checked, i));
		if (key)
			json_object_set(would_store, key, jobs[i].stored);
	}
	if (jobs)
		apply_jobs_done(jobs, n);
	json_decref(checked);
	return r;
}

struct live_kind {
	const char *api_version, *kind;
	enum sync_live keep;
	json_t *live;
	const struct sync_round *round; /* a list shared by the round: live by source, the round's only */
};

/* Where a listed item goes: live, or, in a list the round shares, live's set for its source;
 * *skip when it is no source's the round passes. NULL otherwise only when out of memory. */
static json_t *live_set_of(const struct live_kind *lk, const json_t *item, bool *skip)
{
	*skip = false;
	if (!lk->round)
		return lk->live;
	const json_t *labels = json_object_get(json_object_get(item, "metadata"), "labels");
	const char *source = latch_json_get_str(labels, LABEL_SOURCE);
	*skip = !source || !sync_round_passes_source(lk->round, source);
	json_t *set = *skip ? NULL : json_object_get(lk->live, source);
	if (!*skip && !set && json_object_set_new(lk->live, source, set = json_object()) < 0)
		return NULL;
	return set;
}

/* One listed item into live under its key, with back the kind and apiVersion lists leave out. */
static int keep_live(json_t *item, void *arg)
{
	const struct live_kind *lk = arg;
	/* Drift needs the resourceVersion, health the status: not who owns which field. */
	json_object_del(json_object_get(item, "metadata"), "managedFields");
	json_object_set_new(item, "apiVersion", json_string(lk->api_version));
	json_object_set_new(item, "kind", json_string(lk->kind));
	bool skip;
	json_t *set = live_set_of(lk, item, &skip);
	if (skip)
		return 0;
	if (!set)
		return LATCH_ENOMEM;
	_cleanup_free_ char *key = sync_object_key_in(item, sync_object_meta(item, "namespace"));
	if (!key)
		return LATCH_ENOMEM;
	if (lk->keep != SYNC_LIVE_FINGERPRINT)
		return json_object_set(set, key, item) < 0 ? LATCH_ENOMEM : 0;
	_cleanup_free_ char *fingerprint = sync_object_fingerprint(item);
	/* One without a fingerprint counts as changed: it is applied again. */
	return fingerprint && json_object_set_new(set, key, json_string(fingerprint)) < 0 ? LATCH_ENOMEM : 0;
}

static int list_kind(struct latch_k8s *k, const char *selector, bool cached, struct live_kind *lk,
		     struct latch_error *err)
{
	struct latch_k8s_list_options lo = { selector, cached, lk->keep != SYNC_LIVE_WHOLE };
	int r = latch_k8s_list_each(k, lk->api_version, lk->kind, &lo, keep_live, lk, err);
	if (r == LATCH_ENOTFOUND && !latch_k8s_serves(k, lk->api_version, lk->kind))
		r = 0; /* a kind the server no longer serves has no objects */
	return r;
}

/* A kind's list shared by the passes of a round: every object of the config, kept by source. */
struct shared_list {
	struct latch_k8s *k;
	const struct sync_config *c;
	const struct sync_source *s;
	const char *api_version, *kind;
	json_t *live;
};

static int make_shared_list(void *arg, json_t **kept, struct latch_error *err)
{
	const struct shared_list *sl = arg;
	struct latch_buf selector = LATCH_BUF_INIT(1024);
	latch_buf_printf(&selector, LABEL_CONFIG "=%s", sl->c->name);
	json_t *by_source = json_object();
	struct live_kind lk = { sl->api_version, sl->kind, SYNC_LIVE_FINGERPRINT, by_source, sl->c->round };
	int r = latch_buf_check(&selector, "label selector", err);
	if (r == 0)
		r = by_source ? list_kind(sl->k, latch_buf_str(&selector), true, &lk, err)
			      : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	latch_buf_done(&selector);
	if (r < 0) {
		json_decref(by_source);
		return r;
	}
	*kept = by_source;
	return 0;
}

/* A source passes once a round: its part of the list is moved out, not copied. */
static int take_shared_list(void *arg, json_t *kept, struct latch_error *err)
{
	const struct shared_list *sl = arg;
	json_t *mine = json_object_get(kept, sl->s->name);
	if (mine && json_object_update(sl->live, mine) < 0)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	json_object_del(kept, sl->s->name);
	return 0;
}

static int list_kind_shared(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s,
			    const char *kind_key, const struct live_kind *lk, struct latch_error *err)
{
	struct shared_list sl = { k, c, s, lk->api_version, lk->kind, lk->live };
	struct sync_round_work w = { make_shared_list, take_shared_list, &sl };
	struct latch_buf key = LATCH_BUF_INIT(1024);
	latch_buf_printf(&key, "list %s", kind_key);
	int r = latch_buf_check(&key, "list key", err);
	if (r == 0)
		r = sync_round_once(c->round, latch_buf_str(&key), &w, NULL, err);
	latch_buf_done(&key);
	return r;
}

/* A cached fingerprint list is shared by a round that passes at least half the config's
 * sources: one list per kind instead of one per source and kind (100 sources, 2 kinds: 2
 * requests, not 200). For fewer it would send more than the sources' own lists would. */
static bool shares_lists(const struct sync_config *c, bool cached, enum sync_live keep)
{
	size_t passes = sync_round_passes(c->round);
	return cached && keep == SYNC_LIVE_FINGERPRINT && passes >= 2 && 2 * passes >= c->n_sources;
}

int sync_list_live(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
		   bool cached, enum sync_live keep, json_t *live, struct latch_error *err)
{
	struct latch_buf selector = LATCH_BUF_INIT(1024);
	latch_buf_printf(&selector, LABEL_CONFIG "=%s," LABEL_SOURCE "=%s", c->name, s->name);
	bool shared = shares_lists(c, cached, keep);
	json_t *listed = json_object();
	size_t i;
	json_t *o;
	int r = latch_buf_check(&selector, "label selector", err);
	json_array_foreach(objects, i, o) {
		const char *api_version = latch_json_get_str(o, "apiVersion"), *kind = latch_json_get_str(o, "kind");
		struct latch_buf kk = LATCH_BUF_INIT(1024);
		latch_buf_printf(&kk, "%s/%s", api_version, kind);
		if (r == 0)
			r = latch_buf_check(&kk, "apiVersion/kind", err);
		if (r == 0 && !json_object_get(listed, latch_buf_str(&kk))) {
			json_object_set_new(listed, latch_buf_str(&kk), json_true());
			struct live_kind lk = { api_version, kind, keep, live, NULL };
			r = shared ? list_kind_shared(k, c, s, latch_buf_str(&kk), &lk, err)
				   : list_kind(k, latch_buf_str(&selector), cached, &lk, err);
		}
		latch_buf_done(&kk);
	}
	json_decref(listed);
	latch_buf_done(&selector);
	return r;
}

char *sync_live_fingerprint(const json_t *live, const json_t *obj)
{
	const json_t *listed = sync_object_live(live, obj);
	if (json_is_string(listed))
		return strdup(json_string_value(listed));
	return sync_object_fingerprint(listed);
}

json_t *sync_changed_objects(const json_t *objects, const json_t *digests, const json_t *fingerprints,
			     const json_t *live)
{
	json_t *out = json_array();
	size_t i;
	json_t *o;
	json_array_foreach(out ? objects : NULL, i, o) {
		_cleanup_free_ char *key = sync_object_key(o);
		_cleanup_free_ char *now = sync_live_fingerprint(live, o);
		const char *recorded = key ? latch_json_get_str(fingerprints, key) : NULL;
		const char *applied = key && digests ? latch_json_get_str(digests, key) : NULL;
		const char *digest = sync_object_digest(o);
		bool drifted = !recorded || !now || strcmp(recorded, now) != 0;
		bool changed = digests && (!applied || !digest || strcmp(applied, digest) != 0);
		if ((drifted || changed) && json_array_append(out, o) < 0) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

static char *created_key_of(const json_t *obj)
{
	return sync_created_key(latch_json_get_str(obj, "kind"), sync_object_meta(obj, "name"));
}

/* Namespaces and CRDs this source created: only those may be pruned. Deleting a Namespace
 * deletes everything in it, deleting a CRD every resource of its kind in the cluster; one
 * that existed before latch-sync adopted it is not its to delete. Each of objects (Namespaces
 * and CRDs) that created does not name yet is asked for, in parallel, and added if missing. */
static int note_created(struct latch_k8s *k, const json_t *objects, json_t *created, struct latch_error *err)
{
	json_t *unnoted = json_array();
	size_t i;
	json_t *o;
	json_array_foreach(unnoted ? objects : NULL, i, o) {
		_cleanup_free_ char *key = created_key_of(o);
		if (!sync_names_contain(created, key ? key : ""))
			json_array_append(unnoted, o);
	}
	size_t n = json_array_size(unnoted);
	bool *missing = calloc(n ? n : 1, sizeof(*missing));
	int r = unnoted && missing ? find_missing(k, unnoted, missing, err)
				   : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	for (i = 0; r == 0 && i < n; i++) {
		char *key = missing[i] ? created_key_of(json_array_get(unnoted, i)) : NULL;
		if (missing[i] && (!key || json_array_append_new(created, json_string(key)) < 0))
			r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
		free(key);
	}
	free(missing);
	json_decref(unnoted);
	return r;
}

static bool condition_true(const json_t *obj, const char *type)
{
	size_t i;
	json_t *cond;
	json_array_foreach(json_object_get(json_object_get(obj, "status"), "conditions"), i, cond) {
		const char *t = latch_json_get_str(cond, "type"), *st = latch_json_get_str(cond, "status");
		if (t && st && strcmp(t, type) == 0 && strcmp(st, "True") == 0)
			return true;
	}
	return false;
}

/* A CRD's custom resources can be applied once the CRD is Established. */
static int wait_established(struct latch_k8s *k, const json_t *crd, double deadline, struct latch_error *err)
{
	for (;;) {
		json_t *live = NULL;
		int r = latch_k8s_get(k, latch_json_get_str(crd, "apiVersion"), "CustomResourceDefinition", NULL, sync_object_meta(crd, "name"), &live,
				      err);
		bool established = r == 0 && condition_true(live, "Established");
		json_decref(live);
		if (r < 0 || established)
			return r;
		if (latch_monotonic_s() >= deadline)
			return latch_error_set(err, LATCH_ETIMEOUT, "CustomResourceDefinition '%s' not established in time", sync_object_meta(crd, "name"));
		struct timespec pause = { 0, 100000000 };
		nanosleep(&pause, NULL);
	}
}

void sync_result_note(struct sync_result *res, const char *key, const char *action)
{
	if (!res->touched)
		res->touched = json_object();
	if (key && res->touched)
		json_object_set_new(res->touched, key, json_string(action));
}

void sync_result_done(struct sync_result *res)
{
	json_decref(res->entries);
	json_decref(res->touched);
	res->entries = res->touched = NULL;
}

/* Record the fingerprint of what the apply stored. It changed the object if that moved from
 * the one the last pass recorded (or, for an object new to the inventory, from the live one,
 * which a lagging watch cache cannot make look like a change). */
static void note_applied(const json_t *obj, const char *fingerprint, json_t *fingerprints, const json_t *live, struct sync_result *res)
{
	_cleanup_free_ char *key = sync_object_key(obj);
	const char *recorded = key ? latch_json_get_str(fingerprints, key) : NULL;
	char *listed = !recorded && live ? sync_live_fingerprint(live, obj) : NULL;
	const char *before = recorded ? recorded : listed;
	if (!before || !fingerprint || strcmp(before, fingerprint) != 0) {
		res->changed++;
		sync_result_note(res, key, before ? "Updated" : "Created");
	}
	free(listed);
	if (key && fingerprint)
		json_object_set_new(fingerprints, key, json_string(fingerprint));
}

/* objects through server-side applies over up to 8 connections, each one's stored fingerprint
 * noted (note_applied); the first failure in their order is the error. */
static int apply_and_note(struct latch_k8s *k, const json_t *objects, json_t *versions, const json_t *live,
			  struct sync_result *res, struct latch_error *err)
{
	size_t n = json_array_size(objects);
	struct apply_job *jobs = make_jobs(objects, false);
	if (!jobs)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	struct latch_k8s_apply_options ao = { FIELD_MANAGER, true, false, NULL };
	int r = apply_parallel(k, jobs, n, &ao, false) < 0 ? first_job_error(objects, jobs, n, err) : 0;
	for (size_t i = 0; r == 0 && i < n; i++)
		note_applied(json_array_get(objects, i), jobs[i].fingerprint, versions, live, res);
	apply_jobs_done(jobs, n);
	return r;
}

/* The revision's Namespaces, in parallel (none depends on another), those missing noted as
 * created before any is applied. */
static int apply_namespaces(struct latch_k8s *k, const json_t *objects, json_t *versions, const json_t *live,
			    json_t *created, struct sync_result *res, struct latch_error *err)
{
	json_t *namespaces = of_kind(objects, "Namespace");
	int r = namespaces ? note_created(k, namespaces, created, err)
			   : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = apply_and_note(k, namespaces, versions, live, res, err);
	json_decref(namespaces);
	return r;
}

/* Stage one: the Namespaces, then the CRDs one at a time, each waited for until Established. */
static int apply_first_stage(struct latch_k8s *k, const struct sync_source *s, const json_t *objects, json_t *versions,
			     const json_t *live, json_t *created, struct sync_result *res, struct latch_error *err)
{
	double deadline = latch_monotonic_s() + (double)s->timeout_s;
	json_t *crds = of_kind(objects, "CustomResourceDefinition");
	int r = crds ? apply_namespaces(k, objects, versions, live, created, res, err)
		     : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = note_created(k, crds, created, err);
	size_t i;
	json_t *o;
	json_array_foreach(r == 0 ? crds : NULL, i, o) {
		struct latch_k8s_apply_options ao = { FIELD_MANAGER, true, false, NULL };
		json_t *w = sync_object_wire(o), *stored = NULL;
		r = latch_k8s_apply(k, w, &ao, &stored, err);
		json_decref(w);
		if (r == 0)
			r = wait_established(k, o, deadline, err);
		if (r < 0) {
			json_decref(stored);
			r = latch_error_prefix(err, "%s", sync_object_origin(o));
			break;
		}
		_cleanup_free_ char *fingerprint = sync_object_fingerprint(stored);
		note_applied(o, fingerprint, versions, live, res);
		json_decref(stored);
	}
	if (json_array_size(crds)) /* their kinds are served now */
		latch_k8s_forget_discovery(k);
	json_decref(crds);
	return r;
}

/* versions: fingerprints the last pass left (read), replaced by this pass's (written).
 * live: the objects as listed before the apply, or NULL. created: see note_created. */
int sync_apply_all(struct latch_k8s *k, const struct sync_source *s, const json_t *objects, json_t *versions, const json_t *live,
		     json_t *created, struct sync_result *res, struct latch_error *err)
{
	int r = apply_first_stage(k, s, objects, versions, live, created, res, err);
	json_t *rest = json_array();
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) if (!sync_object_first_stage(o)) json_array_append(rest, o);
	if (r == 0)
		r = latch_k8s_discover(k, err);
	if (r == 0)
		r = apply_and_note(k, rest, versions, live, res, err);
	json_decref(rest);
	return r;
}

struct delete_ctx {
	const json_t *objects; /* the live copies, as listed */
	struct latch_error *errors;
};

#define KEPT 2 /* a delete_one result: replaced since it was listed, so not ours to delete */

static int delete_one(struct latch_k8s *k, size_t i, void *ctx)
{
	struct delete_ctx *d = ctx;
	const json_t *o = json_array_get(d->objects, i);
	int r = latch_k8s_delete_uid(k, latch_json_get_str(o, "apiVersion"), latch_json_get_str(o, "kind"), sync_object_meta(o, "namespace"),
				     sync_object_meta(o, "name"), sync_object_meta(o, "uid"), &d->errors[i]);
	return r == LATCH_ECONFLICT ? KEPT : r;
}

/* Deletes objects (in parallel unless one_by_one, which keeps their order). */
static int delete_all(struct latch_k8s *k, const json_t *objects, bool one_by_one, struct sync_result *res, struct latch_error *err)
{
	size_t n = json_array_size(objects);
	struct latch_error *errors = calloc(n ? n : 1, sizeof(*errors));
	int *results = calloc(n ? n : 1, sizeof(*results));
	struct delete_ctx ctx = { objects, errors };
	int r = errors && results ? 0 : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && one_by_one && i < n; i++)
		results[i] = delete_one(k, i, &ctx);
	if (r == 0 && !one_by_one)
		parallel_run(k, n, PARALLEL_MAX_WORKERS, delete_one, &ctx, false, results);
	for (size_t i = 0; r == 0 && i < n; i++) {
		const json_t *o = json_array_get(objects, i);
		if (results[i] < 0)
			r = latch_error_set(err, results[i], "pruning: %s", latch_error_message(&errors[i]));
		else if (results[i] == 0) {
			res->pruned++;
			_cleanup_free_ char *key = sync_object_key(o);
			sync_result_note(res, key, "Pruned");
			LATCH_LOG(LATCH_LOG_INFO, "pruned", { "kind", latch_json_get_str(o, "kind") }, { "name", sync_object_meta(o, "name") });
		} else if (results[i] == KEPT) {
			LATCH_LOG(LATCH_LOG_INFO, "kept an object replaced since it was listed", { "kind", latch_json_get_str(o, "kind") },
				  { "name", sync_object_meta(o, "name") });
		}
	}
	for (size_t i = 0; errors && i < n; i++)
		latch_error_done(&errors[i]);
	free(errors);
	free(results);
	return r;
}

/* Delete what the previous inventory had and this revision does not, and only if it still
 * carries this source's labels (someone may have taken it over; the labelled lists say).
 * Namespaces and CRDs go last, after what they hold. */
int sync_prune(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *previous,
		 const json_t *current, json_t *created, struct sync_result *res, struct latch_error *err)
{
	json_t *gone = json_array(), *live = json_object(), *rest = json_array(), *last = json_array(), *keep = sync_entry_set(current);
	if (!gone || !live || !rest || !last || !keep) { /* never prune on a set that failed to build */
		json_decref(gone);
		json_decref(live);
		json_decref(rest);
		json_decref(last);
		json_decref(keep);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	for (size_t i = json_array_size(previous); i-- > 0;) {
		const json_t *e = json_array_get(previous, i);
		struct sync_entry_parts parts;
		if (!sync_entry_split(sync_entry_key(e), &parts) || sync_entry_set_has(keep, e))
			continue;
		if (sync_kept_unless_created(e, created)) {
			bool ns = strcmp(parts.kind, "Namespace") == 0;
			LATCH_LOG(LATCH_LOG_INFO,
				  ns ? "kept a Namespace latch-sync did not create" : "kept a CRD latch-sync did not create",
				  { "name", parts.name });
			continue;
		}
		json_array_append_new(gone, sync_object_from_entry(e));
	}
	int r = json_array_size(gone) ? latch_k8s_discover(k, err) : 0;
	if (r == 0 && json_array_size(gone))
		/* fresh: never delete what was just taken over */
		r = sync_list_live(k, c, s, gone, false, SYNC_LIVE_METADATA, live, err);
	size_t i;
	json_t *o;
	json_array_foreach(gone, i, o) {
		const json_t *listed = sync_object_live(live, o);
		if (listed)
			json_array_append((json_t *)(sync_object_first_stage(o) ? last : rest), (json_t *)listed);
	}
	if (r == 0)
		r = delete_all(k, rest, false, res, err);
	if (r == 0)
		r = delete_all(k, last, true, res, err);
	json_decref(gone);
	json_decref(live);
	json_decref(rest);
	json_decref(last);
	json_decref(keep);
	return r;
}

/* Wait until every applied workload is healthy, one fails, or the source's timeout passes.
 * Workloads are read by one labelled list per kind, so waiting costs a few requests a second
 * whatever the number of objects. */
int sync_wait_healthy(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
			struct latch_error *err)
{
	json_t *workloads = json_array();
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) if (sync_health_has_rules(latch_json_get_str(o, "kind"))) json_array_append(workloads, o);
	double deadline = latch_monotonic_s() + (double)s->timeout_s;
	int r = 0;
	while (r == 0 && json_array_size(workloads)) {
		char reason[512] = "";
		const json_t *waiting = NULL;
		json_t *live = json_object();
		/* fresh: a cached copy may predate the apply */
		r = sync_list_live(k, c, s, workloads, false, SYNC_LIVE_WHOLE, live, err);
		json_array_foreach(workloads, i, o) {
			if (r < 0 || waiting)
				break;
			const json_t *item = sync_object_live(live, o);
			enum sync_health h = item ? sync_health_of(item, reason, sizeof(reason)) : SYNC_HEALTH_PROGRESSING;
			if (!item)
				snprintf(reason, sizeof(reason), "not found (deleted since the apply?)");
			if (h == SYNC_HEALTH_FAILED)
				r = latch_error_set(err, LATCH_EINVAL, "%s '%s' is unhealthy: %s", latch_json_get_str(o, "kind"), sync_object_meta(o, "name"), reason);
			else if (h == SYNC_HEALTH_PROGRESSING)
				waiting = o;
		}
		json_decref(live);
		if (r < 0 || !waiting)
			break;
		if (latch_monotonic_s() >= deadline) {
			r = latch_error_set(err, LATCH_ETIMEOUT, "%s '%s' not healthy within %lds: %s", latch_json_get_str(waiting, "kind"),
					    sync_object_meta(waiting, "name"), s->timeout_s, reason);
			break;
		}
		struct timespec pause = { 1, 0 };
		nanosleep(&pause, NULL);
	}
	json_decref(workloads);
	return r;
}
