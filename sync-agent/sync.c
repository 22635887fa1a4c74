/* One pass over a source: fetch, render, inject, validate the whole revision by server dry
 * run, apply (Namespaces and CRDs first), prune what left, and record the inventory. A
 * revision that fails anywhere before the apply changes nothing in the cluster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "diff.h"
#include "latch/log.h"
#include "objects.h"
#include "render.h"
#include "sync.h"

/* ---- inventory ---- */

static char *inventory_name(const struct sync_config *c, const struct sync_source *s)
{
	struct latch_buf b = LATCH_BUF_INIT(512);
	latch_buf_printf(&b, "latch-sync.%s.%s", c->name, s->name);
	return latch_buf_take(&b);
}

/* The inventory ConfigMap's data, or an empty object when there is none yet. */
static json_t *read_inventory_data(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s)
{
	_cleanup_free_ char *name = inventory_name(c, s);
	json_t *cm = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *data = NULL;
	if (latch_k8s_get(k, "v1", "ConfigMap", c->namespace, name, &cm, &err) == 0)
		data = json_incref(json_object_get(cm, "data"));
	json_decref(cm);
	latch_error_done(&err);
	return json_is_object(data) ? data : (json_decref(data), json_object());
}

/* A JSON text field of the inventory, or an empty value of the expected type. */
static json_t *inventory_field(const json_t *data, const char *key, bool array)
{
	const char *text = latch_json_get_str(data, key);
	json_t *v = text ? json_loads(text, 0, NULL) : NULL;
	if (array ? json_is_array(v) : json_is_object(v))
		return v;
	json_decref(v);
	return array ? json_array() : json_object();
}

/* What the last pass recorded. */
struct last_pass {
	json_t *data;
	json_t *entries;  /* the objects it left in the cluster */
	json_t *versions; /* their resourceVersions by object key */
	json_t *created;  /* Namespaces latch-sync created */
	const char *applied_revision;
};

static void last_pass_read(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, struct last_pass *lp)
{
	lp->data = k ? read_inventory_data(k, c, s) : json_object();
	lp->entries = inventory_field(lp->data, "inventory", true);
	lp->versions = inventory_field(lp->data, "resourceVersions", false);
	lp->created = inventory_field(lp->data, "createdNamespaces", true);
	lp->applied_revision = latch_json_get_str(lp->data, "lastAppliedRevision");
}

static void last_pass_done(struct last_pass *lp)
{
	json_decref(lp->entries);
	json_decref(lp->versions);
	json_decref(lp->created);
	json_decref(lp->data);
}

/* What a pass writes to the inventory. */
struct record {
	const json_t *entries, *versions, *created;
	const char *applied_revision;   /* NULL: keep the last one */
	const char *attempted_revision;
	const char *result;
	const char *durations;          /* NULL: keep the last ones */
};

static json_t *dumped(const json_t *v)
{
	char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
	json_t *s = json_string(text ? text : "null");
	free(text);
	return s;
}

static int write_inventory(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const struct record *rec,
			   struct latch_error *err)
{
	_cleanup_free_ char *name = inventory_name(c, s);
	json_t *data = json_pack("{s:o,s:o,s:o,s:s,s:s}", "inventory", dumped(rec->entries), "resourceVersions", dumped(rec->versions),
				 "createdNamespaces", dumped(rec->created), "lastAttemptedRevision", rec->attempted_revision, "result",
				 rec->result);
	/* Server-side apply drops the fields this manager stops sending: carry over what this
	 * pass does not replace. */
	json_t *old = rec->applied_revision && rec->durations ? NULL : read_inventory_data(k, c, s);
	const char *applied = rec->applied_revision ? rec->applied_revision : latch_json_get_str(old, "lastAppliedRevision");
	const char *durations = rec->durations ? rec->durations : latch_json_get_str(old, "durations");
	if (applied)
		json_object_set_new(data, "lastAppliedRevision", json_string(applied));
	if (durations)
		json_object_set_new(data, "durations", json_string(durations));
	json_decref(old);
	json_t *cm = json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s}},s:o}", "apiVersion", "v1", "kind", "ConfigMap", "metadata", "name",
			       name, "namespace", c->namespace, "labels", LABEL_CONFIG, c->name, LABEL_SOURCE, s->name, "data", data);
	json_t *ns = json_pack("{s:s,s:s,s:{s:s}}", "apiVersion", "v1", "kind", "Namespace", "metadata", "name", c->namespace);
	struct latch_k8s_apply_options ao = { FIELD_MANAGER "-inventory", true, false, NULL };
	int r = latch_k8s_apply(k, ns, &ao, NULL, err);
	if (r == 0)
		r = latch_k8s_apply(k, cm, &ao, NULL, err);
	json_decref(ns);
	json_decref(cm);
	return r;
}

/* A Kubernetes Event on the inventory ConfigMap, for kubectl get events and alerting. */
static void record_event(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, bool warning,
			 const char *reason, const char *message)
{
	_cleanup_free_ char *name = inventory_name(c, s);
	char now[32];
	time_t t = time(NULL);
	struct tm tm;
	gmtime_r(&t, &tm);
	strftime(now, sizeof(now), "%Y-%m-%dT%H:%M:%SZ", &tm);
	struct latch_buf prefix = LATCH_BUF_INIT(512);
	latch_buf_printf(&prefix, "%s.", name);
	json_t *ev = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s,s:s,s:s,s:s},s:s,s:s,s:s,s:s,s:s,s:i,s:{s:s}}", "apiVersion", "v1",
			       "kind", "Event", "metadata", "generateName", latch_buf_str(&prefix), "namespace", c->namespace,
			       "involvedObject", "apiVersion", "v1", "kind", "ConfigMap", "name", name, "namespace", c->namespace,
			       "reason", reason, "message", message, "type", warning ? "Warning" : "Normal", "firstTimestamp", now,
			       "lastTimestamp", now, "count", 1, "source", "component", "latch-sync");
	char *body = json_dumps(ev, JSON_COMPACT);
	struct latch_buf path = LATCH_BUF_INIT(1024);
	latch_buf_printf(&path, "/api/v1/namespaces/%s/events", c->namespace);
	long status = 0;
	json_t *resp = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (body && (latch_k8s_request(k, "POST", latch_buf_str(&path), NULL, body, &status, &resp, &err) < 0 || status >= 300))
		LATCH_LOG(LATCH_LOG_WARN, "recording an Event failed", { "source", s->name });
	json_decref(resp);
	latch_error_done(&err);
	latch_buf_done(&path);
	latch_buf_done(&prefix);
	free(body);
	json_decref(ev);
}

static bool adds_entries(const json_t *previous, const json_t *current)
{
	json_t *before = sync_entry_set(previous);
	bool adds = false;
	size_t i;
	json_t *e;
	json_array_foreach(current, i, e) {
		if (!sync_entry_set_has(before, e)) {
			adds = true;
			break;
		}
	}
	json_decref(before);
	return adds;
}

static json_t *union_of(const json_t *a, const json_t *b)
{
	json_t *out = json_copy((json_t *)a), *seen = sync_entry_set(a);
	size_t i;
	json_t *e;
	json_array_foreach(b, i, e) {
		if (!sync_entry_set_has(seen, e)) {
			json_array_append(out, e);
			sync_entry_set_add(seen, e);
		}
	}
	json_decref(seen);
	return out;
}

/* Before a revision adds objects, the inventory lists them too: a pass killed during the
 * apply leaves nothing that a later revision's prune would not find. */
static int record_intent(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const struct last_pass *lp,
			 const json_t *current, const char *revision, struct latch_error *err)
{
	if (!adds_entries(lp->entries, current))
		return 0;
	json_t *both = union_of(lp->entries, current);
	struct latch_buf result = LATCH_BUF_INIT(256);
	latch_buf_printf(&result, "Applying %.12s", revision);
	struct record rec = { both, lp->versions, lp->created, NULL, revision, latch_buf_str(&result), NULL };
	int r = write_inventory(k, c, s, &rec, err);
	latch_buf_done(&result);
	json_decref(both);
	return r;
}

struct timings {
	double start, rendered, validated, applied, pruned, healthy;
};

static char *timings_text(const struct timings *t)
{
	json_t *d = json_pack("{s:f,s:f,s:f,s:f,s:f,s:f}", "render", t->rendered - t->start, "validate", t->validated - t->rendered, "apply",
			      t->applied - t->validated, "prune", t->pruned - t->applied, "health", t->healthy - t->pruned, "total",
			      t->healthy - t->start);
	char *text = json_dumps(d, JSON_COMPACT | JSON_REAL_PRECISION(3));
	json_decref(d);
	return text;
}

/* The live objects, when the revision is the one last applied: then only what drifted is
 * applied again. NULL means apply (and validate) everything. */
static json_t *live_if_same_revision(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
				     bool same_revision)
{
	if (!same_revision)
		return NULL;
	json_t *live = json_object();
	struct latch_error err = LATCH_ERROR_INIT;
	if (sync_list_live(k, c, s, objects, true, true, live, &err) < 0) {
		LATCH_LOG(LATCH_LOG_WARN, "listing the live objects failed; applying every object", { "source", s->name },
			  { "error", latch_error_message(&err) });
		json_decref(live);
		live = NULL;
	}
	latch_error_done(&err);
	return live;
}

/* Apply, prune and wait for health; *in_cluster says the revision got applied. */
static int apply_revision(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
			  const json_t *to_apply, const json_t *live, const json_t *current, struct last_pass *lp, struct sync_result *res,
			  struct timings *t, bool *in_cluster, struct latch_error *err)
{
	int r = record_intent(k, c, s, lp, current, res->revision, err);
	if (r == 0)
		r = sync_apply_all(k, s, to_apply, lp->versions, live, lp->created, res, err);
	t->applied = sync_now();
	if (r == 0) {
		res->applied = json_array_size(objects);
		*in_cluster = true;
		if (s->prune)
			r = sync_prune(k, c, s, lp->entries, current, lp->created, res, err);
	}
	t->pruned = sync_now();
	if (r == 0 && s->health_check)
		r = sync_wait_healthy(k, c, s, objects, err);
	t->healthy = sync_now();
	return r;
}

/* Whether the inventory already says this revision was applied and healthy: a quiet pass
 * then writes nothing, not even the inventory. */
static bool already_recorded(const struct last_pass *lp, const char *revision)
{
	const char *attempted = latch_json_get_str(lp->data, "lastAttemptedRevision");
	const char *result = latch_json_get_str(lp->data, "result");
	return attempted && strcmp(attempted, revision) == 0 && result && strncmp(result, "Applied: ", 9) == 0;
}

/* Record the attempt either way; a failed revision keeps the last applied one. Events when
 * something happened, not on every quiet pass. */
static int record_pass(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const struct last_pass *lp,
		       const json_t *current, const struct sync_result *res, const struct timings *t, bool in_cluster, bool quiet,
		       int r, struct latch_error *err)
{
	if (r == 0 && quiet && already_recorded(lp, res->revision))
		return 0;
	struct latch_buf result = LATCH_BUF_INIT(8192);
	if (r == 0)
		latch_buf_printf(&result, "Applied: %zu objects, %zu changed (%zu drifted), %zu pruned", res->applied, res->changed,
				 res->drifted, res->pruned);
	else
		latch_buf_printf(&result, "%s%s", in_cluster ? "Applied, unhealthy: " : "", latch_error_message(err));
	char *durations = quiet ? NULL : timings_text(t);
	struct record rec = { in_cluster ? current : lp->entries, lp->versions, lp->created, in_cluster ? res->revision : NULL,
			      res->revision[0] ? res->revision : "unknown", latch_buf_str(&result), durations };
	struct latch_error ierr = LATCH_ERROR_INIT;
	if (write_inventory(k, c, s, &rec, &ierr) < 0 && r == 0)
		r = latch_error_set(err, ierr.code, "recording the inventory: %s", latch_error_message(&ierr));
	if (r < 0)
		record_event(k, c, s, true, "SyncFailed", latch_buf_str(&result));
	else if (!quiet)
		record_event(k, c, s, false, "Synced", latch_buf_str(&result));
	free(durations);
	latch_error_done(&ierr);
	latch_buf_done(&result);
	return r;
}

/* diff: the revision against what this source has in the cluster. */
static int print_diff(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
		      const json_t *would_store, const struct last_pass *lp, const json_t *current, FILE *out, struct sync_result *res,
		      struct latch_error *err)
{
	json_t *live = json_object(), *gone = json_array(), *keep = sync_entry_set(current);
	int r = sync_list_live(k, c, s, objects, false, false, live, err);
	size_t i;
	json_t *e;
	json_array_foreach(lp->entries, i, e) {
		bool kept_namespace = strcmp(latch_json_get_str(e, "kind"), "Namespace") == 0 &&
				      !sync_names_contain(lp->created, latch_json_get_str(e, "name"));
		if (s->prune && !kept_namespace && !sync_entry_set_has(keep, e))
			json_array_append(gone, e);
	}
	if (r == 0)
		res->would_change = sync_diff_print(out, objects, would_store, live, gone);
	json_decref(keep);
	json_decref(live);
	json_decref(gone);
	return r;
}

int sync_source_pass(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, FILE *diff,
		     struct sync_result *ret, struct latch_error *err)
{
	bool dry_run = diff != NULL;
	struct sync_result res = { 0 };
	struct timings t = { .start = sync_now() };
	json_t *rendered = json_array(), *objects = NULL, *current = json_array(), *live = NULL, *to_apply = NULL;
	json_t *would_store = dry_run ? json_object() : NULL;
	struct last_pass lp = { 0 };
	bool in_cluster = false;
	int r = sync_render_revision(c, s, res.revision, rendered, err);
	if (r == 0 && json_array_size(rendered) == 0 && !s->allow_empty)
		r = latch_error_set(err, LATCH_EINVAL, "revision %.12s renders no object under '%s'; refusing to prune everything "
						       "(set allowEmpty: true to allow it)", res.revision, s->path ? s->path : "");
	objects = sync_objects_sorted(rendered);
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) json_array_append_new(current, sync_object_entry(o));
	t.rendered = sync_now();
	last_pass_read(k, c, s, &lp);
	bool same_revision = lp.applied_revision && strcmp(lp.applied_revision, res.revision) == 0;
	if (r == 0 && (live = live_if_same_revision(k, c, s, objects, same_revision && !dry_run)))
		to_apply = sync_drifted_objects(objects, lp.versions, live);
	else if (r == 0 && (r = sync_validate(k, objects, would_store, err)) == 0)
		to_apply = json_incref(objects);
	if (r == 0 && dry_run)
		r = print_diff(k, c, s, objects, would_store, &lp, current, diff, &res, err);
	t.validated = t.applied = t.pruned = t.healthy = sync_now();
	if (r == 0 && !dry_run)
		r = apply_revision(k, c, s, objects, to_apply, live, current, &lp, &res, &t, &in_cluster, err);
	if (same_revision)
		res.drifted = res.changed;
	bool quiet = same_revision && res.changed == 0 && res.pruned == 0;
	if (!dry_run)
		r = record_pass(k, c, s, &lp, current, &res, &t, in_cluster, quiet, r, err);
	last_pass_done(&lp);
	json_decref(live);
	json_decref(to_apply);
	json_decref(would_store);
	json_decref(current);
	json_decref(objects);
	json_decref(rendered);
	if (r < 0)
		return r;
	*ret = res;
	return 0;
}

int sync_source_status(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, struct sync_status *ret)
{
	struct last_pass lp = { 0 };
	last_pass_read(k, c, s, &lp);
	const char *attempted = latch_json_get_str(lp.data, "lastAttemptedRevision");
	const char *result = latch_json_get_str(lp.data, "result");
	const char *durations = latch_json_get_str(lp.data, "durations");
	*ret = (struct sync_status){ .applied_revision = lp.applied_revision ? strdup(lp.applied_revision) : NULL,
				     .attempted_revision = attempted ? strdup(attempted) : NULL,
				     .result = result ? strdup(result) : NULL,
				     .durations = durations ? strdup(durations) : NULL,
				     .objects = json_array_size(lp.entries) };
	ret->ok = ret->result && strncmp(ret->result, "Applied: ", 9) == 0 && ret->applied_revision && ret->attempted_revision &&
		  strcmp(ret->applied_revision, ret->attempted_revision) == 0;
	last_pass_done(&lp);
	return ret->attempted_revision ? 0 : LATCH_ENOTFOUND;
}

void sync_status_done(struct sync_status *st)
{
	free(st->applied_revision);
	free(st->attempted_revision);
	free(st->result);
	free(st->durations);
}
