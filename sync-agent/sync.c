/* One pass over a source: fetch, render, inject, validate the whole revision by server dry
 * run, apply (Namespaces and CRDs first), prune what left, and record the inventory. A
 * revision that fails anywhere before the apply changes nothing in the cluster. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cluster.h"
#include "diff.h"
#include "latch/clock.h"
#include "latch/log.h"
#include "objects.h"
#include "packed.h"
#include "render.h"
#include "sync.h"

/* ---- inventory ---- */

static char *inventory_name(const struct sync_config *c, const struct sync_source *s)
{
	struct latch_buf b = LATCH_BUF_INIT(512);
	latch_buf_printf(&b, "latch-sync.%s.%s", c->name, s->name);
	return latch_buf_take(&b);
}

/* The inventory ConfigMap's data and binaryData, or empty objects when there is none yet. Any
 * other failure to read it fails the pass: taking it for empty would forget what to prune. */
static int read_inventory_data(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s,
			       json_t **ret_data, json_t **ret_binary, struct latch_error *err)
{
	_cleanup_free_ char *name = inventory_name(c, s);
	json_t *cm = NULL;
	int r = latch_k8s_get(k, "v1", "ConfigMap", c->namespace, name, &cm, err);
	if (r < 0 && r != LATCH_ENOTFOUND)
		return latch_error_prefix(err, "reading the inventory ConfigMap %s/%s", c->namespace, name);
	json_t *data = json_incref(json_object_get(cm, "data"));
	json_t *binary = json_incref(json_object_get(cm, "binaryData"));
	json_decref(cm);
	if (!json_is_object(data)) {
		json_decref(data);
		data = json_object();
	}
	if (!json_is_object(binary)) {
		json_decref(binary);
		binary = json_object();
	}
	*ret_data = data;
	*ret_binary = binary;
	return data && binary ? 0 : latch_error_set(err, LATCH_ENOMEM, "out of memory");
}

/* Where a list packed into binaryData lives: KEY.gz. */
static const char *packed_key(const char *key, char buf[64])
{
	snprintf(buf, 64, "%s.gz", key);
	return buf;
}

/* A JSON text field of the inventory, plain in data or packed in binaryData as KEY.gz (see
 * record_list), or an empty value of the expected type. */
static json_t *inventory_field(const json_t *data, const json_t *binary, const char *key, bool array)
{
	const char *text = latch_json_get_str(data, key);
	json_t *v = NULL;
	if (text) {
		v = json_loads(text, 0, NULL);
	} else {
		char packed[64];
		v = sync_packed_to_json(latch_json_get_str(binary, packed_key(key, packed)));
	}
	if (array ? json_is_array(v) : json_is_object(v))
		return v;
	json_decref(v);
	return array ? json_array() : json_object();
}

/* What the last pass recorded. */
struct last_pass {
	json_t *data, *binary;
	json_t *digests;  /* the digest of each object as it was last applied (sync_object_digest) */
	json_t *entries;  /* the objects it left in the cluster */
	json_t *versions; /* their fingerprints by object key (sync_object_fingerprint) */
	json_t *created;  /* Namespaces and CRDs latch-sync created (sync_created_key) */
	const char *applied_revision;
	const char *rendered_hash; /* of the objects that revision rendered to */
};

static int last_pass_read(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, struct last_pass *lp,
			  struct latch_error *err)
{
	int r = read_inventory_data(k, c, s, &lp->data, &lp->binary, err);
	if (r < 0)
		return r;
	json_t *listed = inventory_field(lp->data, lp->binary, "inventory", true);
	lp->entries = sync_entries_from_inventory(listed);
	json_decref(listed);
	lp->versions = inventory_field(lp->data, lp->binary, "fingerprints", false);
	lp->created = inventory_field(lp->data, lp->binary, "createdNamespaces", true);
	lp->digests = inventory_field(lp->data, lp->binary, "renderedDigests", false);
	lp->applied_revision = latch_json_get_str(lp->data, "lastAppliedRevision");
	lp->rendered_hash = latch_json_get_str(lp->data, "renderedHash");
	if (!lp->entries || !lp->versions || !lp->created || !lp->digests)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	return 0;
}

static void last_pass_done(struct last_pass *lp)
{
	json_decref(lp->entries);
	json_decref(lp->versions);
	json_decref(lp->created);
	json_decref(lp->digests);
	json_decref(lp->data);
	json_decref(lp->binary);
}

/* What a pass writes to the inventory. */
struct record {
	const json_t *previous;         /* the inventory's data as the pass found it */
	const json_t *entries, *versions, *created, *digests;
	const char *applied_revision;   /* NULL: keep the last one (and its rendered hash) */
	const char *rendered_hash;
	const char *attempted_revision;
	const char *result;
	const char *durations;          /* NULL: keep the last ones */
};

/* v as JSON text in a string ("null" for none); NULL when out of memory, never a "null" that
 * would read back as an empty inventory and let a prune miss what it lists. */
static json_t *dumped(const json_t *v)
{
	if (!v)
		return json_string("null");
	char *text = json_dumps(v, JSON_COMPACT | JSON_SORT_KEYS);
	json_t *s = text ? json_string(text) : NULL;
	free(text);
	return s;
}

/* A ConfigMap holds at most 1 MiB: past this many bytes of text a list is packed (gzip and
 * base64) into binaryData as KEY.gz, about a tenth of the size (10,000 objects: 1.7 MB of
 * text). Smaller ones stay readable with kubectl get. */
#define INVENTORY_PLAIN_MAX (128u << 10)

/* text (JSON, taken) under key; false when out of memory: the list is then missing, and the
 * inventory must not be written. */
static bool record_text(json_t *data, json_t *binary, const char *key, char *text)
{
	bool recorded = false;
	if (text && strlen(text) <= INVENTORY_PLAIN_MAX) {
		recorded = json_object_set_new(data, key, json_string(text)) == 0;
	} else if (text) {
		char name[64];
		json_t *packed = sync_packed_from_text(text);
		recorded = packed && json_object_set_new(binary, packed_key(key, name), packed) == 0;
	}
	free(text);
	return recorded;
}

static bool record_list(json_t *data, json_t *binary, const char *key, const json_t *list)
{
	return record_text(data, binary, key, json_dumps(list, JSON_COMPACT | JSON_SORT_KEYS));
}

static int write_inventory(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const struct record *rec,
			   struct latch_error *err)
{
	_cleanup_free_ char *name = inventory_name(c, s);
	unsigned long json_failures = latch_json_allocation_failures();
	json_t *data = json_pack("{s:o,s:s,s:s}", "createdNamespaces", dumped(rec->created), "lastAttemptedRevision",
				 rec->attempted_revision, "result", rec->result);
	json_t *binary = json_object();
	bool listed = data && binary &&
		      record_text(data, binary, "inventory", sync_entries_inventory_text(rec->entries)) &&
		      record_list(data, binary, "fingerprints", rec->versions) &&
		      record_list(data, binary, "renderedDigests", rec->digests);
	/* Server-side apply drops the fields this manager stops sending: carry over what this
	 * pass does not replace. */
	const json_t *old = rec->previous;
	const char *applied = rec->applied_revision ? rec->applied_revision : latch_json_get_str(old, "lastAppliedRevision");
	const char *hash = rec->applied_revision ? rec->rendered_hash : latch_json_get_str(old, "renderedHash");
	const char *durations = rec->durations ? rec->durations : latch_json_get_str(old, "durations");
	if (applied)
		json_object_set_new(data, "lastAppliedRevision", json_string(applied));
	if (hash)
		json_object_set_new(data, "renderedHash", json_string(hash));
	if (durations)
		json_object_set_new(data, "durations", json_string(durations));
	json_t *cm = json_pack("{s:s,s:s,s:{s:s,s:s,s:{s:s,s:s}},s:o}", "apiVersion", "v1", "kind", "ConfigMap", "metadata", "name",
			       name, "namespace", c->namespace, "labels", LABEL_CONFIG, c->name, LABEL_SOURCE, s->name, "data", data);
	if (json_object_size(binary))
		json_object_set(cm, "binaryData", binary);
	json_decref(binary);
	json_t *ns = json_pack("{s:s,s:s,s:{s:s}}", "apiVersion", "v1", "kind", "Namespace", "metadata", "name", c->namespace);
	struct latch_k8s_apply_options ao = { FIELD_MANAGER "-inventory", true, false, NULL };
	/* A builder call that failed would leave a field out: the inventory is written whole or not. */
	int r = !name || !cm || !ns || !listed || latch_json_allocation_failures() != json_failures
			? latch_error_set(err, LATCH_ENOMEM, "out of memory")
			: latch_k8s_apply(k, cm, &ao, NULL, err);
	/* The Namespace is made when the first write finds it missing, not applied before every
	 * write: two requests a pass saved, 200 in a round of 100 sources. */
	if (r == LATCH_ENOTFOUND) {
		latch_error_done(err);
		r = latch_k8s_apply(k, ns, &ao, NULL, err);
		if (r == 0)
			r = latch_k8s_apply(k, cm, &ao, NULL, err);
	}
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

/* Before a revision adds objects, the inventory lists them too, and the Namespaces it is about
 * to create count as created: a pass killed during the apply leaves nothing that a later
 * revision's prune would not find. */
static int record_intent(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, struct last_pass *lp,
			 const json_t *new_namespaces, const json_t *current, const char *revision, struct latch_error *err)
{
	if (!adds_entries(lp->entries, current))
		return 0;
	int r = 0;
	const char *name;
	json_t *v;
	json_object_foreach((json_t *)new_namespaces, name, v) {
		if (!sync_names_contain(lp->created, name) && json_array_append_new(lp->created, json_string(name)) < 0)
			r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	json_t *both = r == 0 ? union_of(lp->entries, current) : NULL;
	struct latch_buf result = LATCH_BUF_INIT(256);
	latch_buf_printf(&result, "Applying %.12s", revision);
	struct record rec = { lp->data, both, lp->versions, lp->created, lp->digests,
			      NULL, NULL, revision, latch_buf_str(&result), NULL };
	if (r == 0)
		r = both ? write_inventory(k, c, s, &rec, err) : latch_error_set(err, LATCH_ENOMEM, "out of memory");
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

/* The fingerprints of the live objects once a pass has recorded some: then only what changed
 * in the revision or drifted in the cluster is validated and applied. NULL means validate and
 * apply everything. */
static json_t *live_fingerprints(struct latch_k8s *k, const struct sync_config *c,
				 const struct sync_source *s, const json_t *objects, const struct last_pass *lp)
{
	if (json_object_size(lp->versions) == 0)
		return NULL;
	json_t *live = json_object();
	struct latch_error err = LATCH_ERROR_INIT;
	if (sync_list_live(k, c, s, objects, true, SYNC_LIVE_FINGERPRINT, live, &err) < 0) {
		LATCH_LOG(LATCH_LOG_WARN, "listing the live objects failed; applying every object", { "source", s->name },
			  { "error", latch_error_message(&err) });
		json_decref(live);
		live = NULL;
	}
	latch_error_done(&err);
	return live;
}

/* What the inventory records as applied once a revision is in the cluster: every object's
 * digest (those not applied again had these already). */
static json_t *digests_of(const json_t *objects)
{
	json_t *digests = json_object();
	size_t i;
	json_t *o;
	json_array_foreach(digests ? objects : NULL, i, o) {
		_cleanup_free_ char *key = sync_object_key(o);
		const char *digest = sync_object_digest(o);
		if (!key || !digest || json_object_set_new(digests, key, json_string(digest)) < 0) {
			json_decref(digests);
			return NULL;
		}
	}
	return digests;
}

/* How far a pass got in the cluster. */
struct progress {
	bool started;    /* the intent is recorded or the apply began */
	bool in_cluster; /* the revision is applied, whatever its health */
	bool settled;    /* and the prune finished: the cluster holds exactly the revision */
};

static int apply_revision(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
			  const json_t *to_apply, const json_t *live, const json_t *current, const json_t *new_namespaces, struct last_pass *lp,
			  struct sync_result *res, struct timings *t, struct progress *p, struct latch_error *err)
{
	p->started = true;
	int r = record_intent(k, c, s, lp, new_namespaces, current, res->revision, err);
	if (r == 0)
		r = sync_apply_all(k, s, to_apply, lp->versions, live, lp->created, res, err);
	t->applied = latch_monotonic_s();
	if (r == 0) {
		res->applied = json_array_size(objects);
		p->in_cluster = true;
		if (s->prune)
			r = sync_prune(k, c, s, lp->entries, current, lp->created, res, err);
		p->settled = r == 0;
	}
	t->pruned = latch_monotonic_s();
	if (r == 0 && s->health_check)
		r = sync_wait_healthy(k, c, s, objects, err);
	t->healthy = latch_monotonic_s();
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

/* What the inventory lists after the pass: the revision once the cluster holds exactly it;
 * both old and new while a failed apply or prune may have left either; else the old. */
static json_t *entries_after(const struct last_pass *lp, const json_t *current, const struct progress *p)
{
	if (p->settled)
		return json_incref((json_t *)current);
	return p->started ? union_of(lp->entries, current) : json_incref(lp->entries);
}

/* Record the attempt either way; a failed revision keeps the last applied one. Events when
 * something happened, not on every quiet pass. */
static int record_pass(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const struct last_pass *lp,
		       const json_t *current, const json_t *objects, const struct sync_result *res, const char *hash,
		       const struct timings *t, const struct progress *p, bool quiet, int r, struct latch_error *err)
{
	if (r == 0 && quiet && already_recorded(lp, res->revision))
		return 0;
	json_t *applied_digests = p->in_cluster ? digests_of(objects) : NULL;
	const json_t *digests = applied_digests ? applied_digests : lp->digests;
	struct latch_buf result = LATCH_BUF_INIT(8192);
	if (r == 0)
		latch_buf_printf(&result, "Applied: %zu objects, %zu changed (%zu drifted), %zu pruned", res->applied, res->changed,
				 res->drifted, res->pruned);
	else
		latch_buf_printf(&result, "%s%s", p->in_cluster ? "Applied, unhealthy: " : "", latch_error_message(err));
	char *durations = quiet ? NULL : timings_text(t);
	json_t *entries = entries_after(lp, current, p);
	struct record rec = { lp->data, entries, lp->versions, lp->created, digests,
			      p->in_cluster ? res->revision : NULL, hash,
			      res->revision[0] ? res->revision : "unknown", latch_buf_str(&result), durations };
	struct latch_error ierr = LATCH_ERROR_INIT;
	if ((!entries || write_inventory(k, c, s, &rec, &ierr) < 0) && r == 0)
		r = latch_error_set(err, entries ? ierr.code : LATCH_ENOMEM, "recording the inventory: %s",
				    entries ? latch_error_message(&ierr) : "out of memory");
	if (r < 0)
		record_event(k, c, s, true, "SyncFailed", latch_buf_str(&result));
	else if (!quiet)
		record_event(k, c, s, false, "Synced", latch_buf_str(&result));
	json_decref(entries);
	json_decref(applied_digests);
	free(durations);
	latch_error_done(&ierr);
	latch_buf_done(&result);
	return r;
}

/* What this pass applies, checked by the server first. Once a pass has recorded fingerprints:
 * what the revision changes, validated, and what drifted (validated when it was applied), so
 * a one-line change to a revision of 10,000 objects is two requests; else every object. */
static int choose_and_validate(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s,
			       const json_t *objects, const struct last_pass *lp, bool unchanged, bool dry_run,
			       json_t *new_namespaces, json_t *would_store, json_t **live, json_t **to_apply,
			       struct latch_error *err)
{
	*live = dry_run ? NULL : live_fingerprints(k, c, s, objects, lp);
	if (!*live) {
		int r = sync_validate(k, objects, new_namespaces, would_store, err);
		*to_apply = r == 0 ? json_incref((json_t *)objects) : NULL;
		return r;
	}
	*to_apply = sync_changed_objects(objects, unchanged ? NULL : lp->digests, lp->versions, *live);
	if (!*to_apply)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	return unchanged ? 0 : sync_validate(k, *to_apply, new_namespaces, would_store, err);
}

/* diff: the revision against what this source has in the cluster. */
static int print_diff(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
		      const json_t *would_store, const struct last_pass *lp, const json_t *current, FILE *out, struct sync_result *res,
		      struct latch_error *err)
{
	json_t *live = json_object(), *gone = json_array(), *keep = sync_entry_set(current);
	int r = live && gone && keep ? sync_list_live(k, c, s, objects, false, SYNC_LIVE_WHOLE, live, err)
				     : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	size_t i;
	json_t *e;
	json_array_foreach(lp->entries, i, e) {
		if (r == 0 && s->prune && !sync_kept_unless_created(e, lp->created) && !sync_entry_set_has(keep, e))
			json_array_append_new(gone, sync_object_from_entry(e));
	}
	/* As the prune would: only what is still labelled as this source's. */
	json_t *still_ours = json_object(), *pruned = json_array();
	if (r == 0 && json_array_size(gone))
		r = sync_list_live(k, c, s, gone, false, SYNC_LIVE_METADATA, still_ours, err);
	json_array_foreach(gone, i, e) if (sync_object_live(still_ours, e)) json_array_append_new(pruned, sync_object_entry(e));
	json_decref(still_ours);
	json_decref(gone);
	gone = pruned;
	if (r == 0)
		res->would_change = sync_diff_print(out, objects, would_store, live, gone);
	json_decref(keep);
	json_decref(live);
	json_decref(gone);
	return r;
}

/* Render, then the objects in apply order with their namespaces resolved, their inventory
 * entries, and the hash of what they render to. */
static int prepare(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s,
		   const char *applied,
		   struct sync_result *res, struct sync_observed *observed, json_t **objects, json_t **current, char **hash,
		   struct latch_error *err)
{
	json_t *rendered = json_array();
	int r = rendered ? sync_render_revision(c, s, applied, res->revision, rendered, observed, err)
			 : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0 && json_array_size(rendered) == 0 && !s->allow_empty)
		r = latch_error_set(err, LATCH_EINVAL, "revision %.12s renders no object under '%s'; refusing to prune everything "
						       "(set allowEmpty: true to allow it)", res->revision, s->path ? s->path : "");
	if (r == 0 && !(*objects = sync_objects_sorted(rendered)))
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	json_decref(rendered);
	if (r == 0)
		r = sync_resolve_namespaces(k, *objects, err);
	if (r == 0)
		sync_objects_share_strings(*objects);
	if (r == 0 && (!(*current = json_array()) || !(*hash = sync_objects_hash(*objects))))
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	size_t i;
	json_t *o;
	json_array_foreach(r == 0 ? *objects : NULL, i, o) {
		if (json_array_append_new(*current, sync_object_entry(o)) < 0)
			r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	return r;
}

/* The revision is the one applied last time: whatever the apply changed had drifted. */
static void mark_drift_corrected(json_t *touched)
{
	const char *key;
	json_t *action;
	json_object_foreach(touched, key, action) {
		if (json_string_value(action) && strcmp(json_string_value(action), "Pruned") != 0)
			json_object_set_new(touched, key, json_string("Drift corrected"));
	}
}

int sync_source_pass(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, FILE *diff,
		     struct sync_result *ret, struct sync_observed *observed, struct latch_error *err)
{
	bool dry_run = diff != NULL;
	struct sync_result res = { 0 };
	struct timings t = { .start = latch_monotonic_s() };
	json_t *objects = NULL, *current = NULL, *live = NULL, *to_apply = NULL;
	json_t *would_store = dry_run ? json_object() : NULL, *new_namespaces = json_object();
	char *hash = NULL;
	struct last_pass lp = { 0 };
	struct progress p = { 0 };
	/* The inventory first: a pass that cannot read it must not write it. */
	int r = last_pass_read(k, c, s, &lp, err);
	bool readable = r == 0;
	if (r == 0)
		r = prepare(k, c, s, lp.applied_revision, &res, observed, &objects, &current, &hash, err);
	t.rendered = latch_monotonic_s();
	bool unchanged = r == 0 && lp.applied_revision && strcmp(lp.applied_revision, res.revision) == 0 && lp.rendered_hash &&
			 strcmp(lp.rendered_hash, hash) == 0;
	if (r == 0)
		r = choose_and_validate(k, c, s, objects, &lp, unchanged, dry_run, new_namespaces, would_store, &live,
					&to_apply, err);
	if (r == 0 && dry_run)
		r = print_diff(k, c, s, objects, would_store, &lp, current, diff, &res, err);
	t.validated = t.applied = t.pruned = t.healthy = latch_monotonic_s();
	if (r == 0 && !dry_run)
		r = apply_revision(k, c, s, objects, to_apply, live, current, new_namespaces, &lp, &res, &t, &p, err);
	if (unchanged) {
		res.drifted = res.changed;
		mark_drift_corrected(res.touched);
	}
	bool quiet = unchanged && res.changed == 0 && res.pruned == 0;
	if (!dry_run && readable)
		r = record_pass(k, c, s, &lp, current ? current : lp.entries, objects, &res, hash, &t, &p, quiet, r, err);
	else if (!dry_run && r < 0)
		record_event(k, c, s, true, "SyncFailed", latch_error_message(err));
	if (r == 0 && !dry_run)
		res.entries = json_incref(current);
	last_pass_done(&lp);
	free(hash);
	json_decref(live);
	json_decref(to_apply);
	json_decref(would_store);
	json_decref(new_namespaces);
	json_decref(current);
	json_decref(objects);
	if (r < 0) {
		sync_result_done(&res);
		return r;
	}
	*ret = res;
	return 0;
}

int sync_source_status(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, struct sync_status *ret,
		       struct latch_error *err)
{
	struct last_pass lp = { 0 };
	*ret = (struct sync_status){ 0 };
	int r = last_pass_read(k, c, s, &lp, err);
	const char *attempted = latch_json_get_str(lp.data, "lastAttemptedRevision");
	const char *result = latch_json_get_str(lp.data, "result");
	const char *durations = latch_json_get_str(lp.data, "durations");
	if (r == 0)
		*ret = (struct sync_status){ .applied_revision = lp.applied_revision ? strdup(lp.applied_revision) : NULL,
					     .attempted_revision = attempted ? strdup(attempted) : NULL,
					     .result = result ? strdup(result) : NULL,
					     .durations = durations ? strdup(durations) : NULL,
					     .objects = json_array_size(lp.entries) };
	ret->ok = ret->result && strncmp(ret->result, "Applied: ", 9) == 0 && ret->applied_revision && ret->attempted_revision &&
		  strcmp(ret->applied_revision, ret->attempted_revision) == 0;
	last_pass_done(&lp);
	if (r == 0 && !ret->attempted_revision)
		r = latch_error_set(err, LATCH_ENOTFOUND, "no pass recorded yet");
	return r;
}

void sync_status_done(struct sync_status *st)
{
	free(st->applied_revision);
	free(st->attempted_revision);
	free(st->result);
	free(st->durations);
}
