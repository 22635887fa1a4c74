/* One pass over a source: fetch, render, inject, validate the whole revision by server dry
 * run, apply (Namespaces and CRDs first), prune what left, and record the inventory. A
 * revision that fails anywhere before the apply changes nothing in the cluster. */
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "latch/file.h"
#include "latch/git.h"
#include "latch/log.h"
#include "health.h"
#include "latch/yaml.h"
#include "sync.h"

#define FILE_MAX (8u << 20)
#define FIELD_MANAGER "latch-sync"
#define LABEL_CONFIG "latch.dev/config"
#define LABEL_SOURCE "latch.dev/source"

/* Apply order: what others depend on first, then a stable order by kind. */
static int kind_rank(const char *kind)
{
	static const char *const order[] = { "Namespace", "CustomResourceDefinition", "ServiceAccount", "ClusterRole",
					      "ClusterRoleBinding", "Role", "RoleBinding", "Secret", "ConfigMap",
					      "PersistentVolumeClaim", "Service", NULL };
	for (int i = 0; order[i]; i++)
		if (kind && strcmp(kind, order[i]) == 0)
			return i;
	return 100;
}

static bool first_stage(const json_t *obj)
{
	return kind_rank(latch_json_get_str(obj, "kind")) <= 1;
}

static const char *meta_str(const json_t *obj, const char *key)
{
	return latch_json_get_str(json_object_get(obj, "metadata"), key);
}

static int compare_objects(const void *a, const void *b)
{
	const json_t *x = *(json_t *const *)a, *y = *(json_t *const *)b;
	int d = kind_rank(latch_json_get_str(x, "kind")) - kind_rank(latch_json_get_str(y, "kind"));
	if (d)
		return d;
	const char *kx = latch_json_get_str(x, "kind"), *ky = latch_json_get_str(y, "kind");
	if ((d = strcmp(kx ? kx : "", ky ? ky : "")))
		return d;
	const char *nx = meta_str(x, "namespace"), *ny = meta_str(y, "namespace");
	if ((d = strcmp(nx ? nx : "", ny ? ny : "")))
		return d;
	return strcmp(meta_str(x, "name") ? meta_str(x, "name") : "", meta_str(y, "name") ? meta_str(y, "name") : "");
}

/* The owner labels on every object: what prune checks before it deletes anything. */
static void label(json_t *obj, const struct sync_config *c, const struct sync_source *s)
{
	json_t *meta = json_object_get(obj, "metadata");
	json_t *labels = json_object_get(meta, "labels");
	if (!json_is_object(labels)) {
		labels = json_object();
		json_object_set_new(meta, "labels", labels);
	}
	json_object_set_new(labels, LABEL_CONFIG, json_string(c->name));
	json_object_set_new(labels, LABEL_SOURCE, json_string(s->name));
}

static double now_s(void);

/* One manifest text (a file, or kustomize's output): every document injected, labelled and
 * added to objects. name says where it came from in errors. */
static int render_text(const struct sync_config *c, const struct sync_source *s, const char *name, const char *data, size_t len,
		       json_t *objects, struct latch_buf *warnings, struct latch_error *err)
{
	struct latch_inject_options io = { .image = s->inject_image, .vault_address = s->inject_vault_address };
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	struct latch_yaml_reader *reader = NULL;
	int r = latch_yaml_reader_new(latch_view_make(data, len), name, &lim, &reader, err);
	struct latch_yaml_doc doc;
	while (r == 0 && (r = latch_yaml_reader_next(reader, &doc, err)) == 0) {
		r = latch_inject_object(doc.root, name, &io, warnings, err);
		json_t *obj = r >= 0 ? latch_yaml_to_json(doc.root) : NULL;
		if (r >= 0 && (!json_is_object(obj) || !latch_json_get_str(obj, "kind") || !meta_str(obj, "name")))
			r = latch_error_set(err, LATCH_EINVAL, "%s:%zu: a document without kind or metadata.name", name, doc.line);
		if (r >= 0) {
			label(obj, c, s);
			if (s->target_namespace && !meta_str(obj, "namespace"))
				json_object_set_new(json_object_get(obj, "metadata"), "_defaultNamespace", json_string(s->target_namespace));
			json_array_append(objects, obj);
			r = 0;
		}
		json_decref(obj);
		latch_yaml_node_free(doc.root);
	}
	latch_yaml_reader_free(reader);
	return r == 1 ? 0 : r;
}

/* plain: every manifest file of the commit under path, straight from the tree. */
static int render_files(const struct sync_config *c, const struct sync_source *s, struct latch_git *g, const char *sha,
			json_t *objects, struct latch_buf *warnings, struct latch_error *err)
{
	struct latch_git_files files = { 0 };
	int r = latch_git_read_tree(g, sha, s->path ? s->path : "", FILE_MAX, &files, err);
	for (size_t i = 0; r == 0 && i < files.n; i++) {
		struct latch_buf name = LATCH_BUF_INIT(8192);
		latch_buf_printf(&name, "%s@%.12s", files.items[i].path, sha);
		r = render_text(c, s, latch_buf_str(&name), files.items[i].data, files.items[i].len, objects, warnings, err);
		latch_buf_done(&name);
	}
	latch_git_files_done(&files);
	return r;
}

static int remove_entry(const char *path, const struct stat *st, int type, struct FTW *ftw)
{
	return remove(path);
}

/* Run argv with stdout and stderr to files, killing it after timeout_s. */
static int run_tool(char *const argv[], const char *out, const char *errf, long timeout_s, int *ret_status)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 1, out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	posix_spawn_file_actions_addopen(&fa, 2, errf, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		return -r;
	double deadline = now_s() + (double)timeout_s;
	int status = 0;
	while (waitpid(pid, &status, WNOHANG) == 0) {
		if (now_s() > deadline) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			*ret_status = -1;
			return 0;
		}
		struct timespec pause = { 0, 20000000 };
		nanosleep(&pause, NULL);
	}
	*ret_status = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	return 0;
}

/* kustomize: the commit checked out into a private directory, `kustomize build <path>`. */
static int render_kustomize(const struct sync_config *c, const struct sync_source *s, struct latch_git *g, const char *sha,
			    json_t *objects, struct latch_buf *warnings, struct latch_error *err)
{
	struct latch_buf tmp = LATCH_BUF_INIT(8192), dir = LATCH_BUF_INIT(8192), out = LATCH_BUF_INIT(8192), errf = LATCH_BUF_INIT(8192);
	latch_buf_printf(&tmp, "%s/checkout-XXXXXX", c->cache_dir);
	char *root = latch_buf_take(&tmp);
	int r = root && mkdtemp(root) ? 0 : latch_error_set(err, LATCH_EIO, "cannot make a checkout directory under '%s'", c->cache_dir);
	if (r == 0) {
		latch_buf_printf(&dir, "%s/tree", root);
		latch_buf_printf(&out, "%s/out.yaml", root);
		latch_buf_printf(&errf, "%s/err.txt", root);
		r = mkdir(latch_buf_str(&dir), 0700) == 0 ? 0 : latch_error_set(err, LATCH_EIO, "cannot make '%s'", latch_buf_str(&dir));
	}
	if (r == 0)
		r = latch_git_checkout(g, sha, latch_buf_str(&dir), err);
	if (r == 0) {
		latch_buf_printf(&dir, "/%s", s->path ? s->path : "");
		char *argv[] = { s->kustomize_path, "build", (char *)latch_buf_str(&dir), NULL };
		int status = 0;
		if (run_tool(argv, latch_buf_str(&out), latch_buf_str(&errf), s->timeout_s, &status) < 0)
			r = latch_error_set(err, LATCH_EINVAL, "cannot run kustomize '%s'", s->kustomize_path);
		else if (status != 0) {
			struct latch_buf msg = LATCH_BUF_INIT(16384);
			latch_file_read(latch_buf_str(&errf), 16000, &msg, NULL);
			r = latch_error_set(err, LATCH_EINVAL, "kustomize build %s@%.12s %s: %s", s->path ? s->path : ".", sha,
					    status < 0 ? "timed out" : "failed", latch_buf_str(&msg));
			latch_buf_done(&msg);
		}
	}
	if (r == 0) {
		struct latch_buf text = LATCH_BUF_INIT(256u << 20);
		r = latch_file_read(latch_buf_str(&out), 256u << 20, &text, err);
		struct latch_buf name = LATCH_BUF_INIT(8192);
		latch_buf_printf(&name, "kustomize build %s@%.12s", s->path ? s->path : ".", sha);
		if (r == 0)
			r = render_text(c, s, latch_buf_str(&name), latch_buf_str(&text), text.len, objects, warnings, err);
		latch_buf_done(&name);
		latch_buf_done(&text);
	}
	if (root)
		nftw(root, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
	free(root);
	latch_buf_done(&dir);
	latch_buf_done(&out);
	latch_buf_done(&errf);
	return r;
}

static const char *default_ns(const json_t *obj)
{
	return meta_str(obj, "_defaultNamespace");
}

/* The object as sent to the server: without our bookkeeping field. */
static json_t *wire(const json_t *obj)
{
	json_t *copy = json_deep_copy(obj);
	json_object_del(json_object_get(copy, "metadata"), "_defaultNamespace");
	return copy;
}

static bool namespace_in_revision(const json_t *objects, const char *ns)
{
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) if (strcmp(latch_json_get_str(o, "kind"), "Namespace") == 0 && meta_str(o, "name") && ns &&
					    strcmp(meta_str(o, "name"), ns) == 0) return true;
	return false;
}

/* Every object through a server-side apply with dryRun=All. Objects in a Namespace this
 * revision creates cannot be checked before it exists; the apply checks them. */
static int validate(struct latch_k8s *k, const json_t *objects, struct latch_error *err)
{
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		struct latch_k8s_apply_options ao = { FIELD_MANAGER, true, true, default_ns(o) };
		json_t *w = wire(o);
		int r = latch_k8s_apply(k, w, &ao, NULL, err);
		json_decref(w);
		const char *ns = meta_str(o, "namespace") ? meta_str(o, "namespace") : default_ns(o);
		if (r == LATCH_ENOTFOUND && namespace_in_revision(objects, ns))
			continue;
		if (r < 0)
			return r;
	}
	return 0;
}

static char *object_key(const json_t *obj)
{
	const char *ns = meta_str(obj, "namespace") ? meta_str(obj, "namespace") : default_ns(obj);
	struct latch_buf b = LATCH_BUF_INIT(4096);
	latch_buf_printf(&b, "%s/%s/%s/%s", latch_json_get_str(obj, "apiVersion"), latch_json_get_str(obj, "kind"), ns ? ns : "",
			 meta_str(obj, "name"));
	return latch_buf_take(&b);
}

static bool name_in(const json_t *names, const char *name)
{
	size_t i;
	json_t *n;
	json_array_foreach(names, i, n) if (json_string_value(n) && strcmp(json_string_value(n), name) == 0) return true;
	return false;
}

/* Namespaces this source created: only those may be pruned (deleting a Namespace deletes
 * everything in it, and one that existed before latch-sync is not its to delete). */
static int note_created_namespace(struct latch_k8s *k, const json_t *obj, json_t *created, struct latch_error *err)
{
	if (strcmp(latch_json_get_str(obj, "kind"), "Namespace") != 0 || name_in(created, meta_str(obj, "name")))
		return 0;
	json_t *live = NULL;
	int r = latch_k8s_get(k, "v1", "Namespace", NULL, meta_str(obj, "name"), &live, err);
	json_decref(live);
	if (r == LATCH_ENOTFOUND)
		return json_array_append_new(created, json_string(meta_str(obj, "name"))) < 0 ? LATCH_ENOMEM : 0;
	return r;
}

/* versions: resourceVersions the last pass left (read), replaced by this pass's (written). A
 * different one means the apply changed the object. created: see note_created_namespace. */
static int apply_all(struct latch_k8s *k, const json_t *objects, json_t *versions, json_t *created, struct sync_result *res,
		     struct latch_error *err)
{
	for (int stage = 0; stage < 2; stage++) {
		size_t i;
		json_t *o;
		json_array_foreach(objects, i, o) {
			if (first_stage(o) != (stage == 0))
				continue;
			struct latch_k8s_apply_options ao = { FIELD_MANAGER, true, false, default_ns(o) };
			int r = stage == 0 ? note_created_namespace(k, o, created, err) : 0;
			if (r < 0)
				return r;
			json_t *w = wire(o), *stored = NULL;
			r = latch_k8s_apply(k, w, &ao, &stored, err);
			json_decref(w);
			if (r < 0)
				return r;
			res->applied++;
			_cleanup_free_ char *key = object_key(o);
			const char *rv = meta_str(stored, "resourceVersion");
			const char *before = latch_json_get_str(versions, key);
			if (!before || !rv || strcmp(before, rv) != 0)
				res->changed++;
			if (key && rv)
				json_object_set_new(versions, key, json_string(rv));
			json_decref(stored);
		}
	}
	return 0;
}

/* ---- inventory ---- */

static char *inventory_name(const struct sync_config *c, const struct sync_source *s)
{
	struct latch_buf b = LATCH_BUF_INIT(512);
	latch_buf_printf(&b, "latch-sync.%s.%s", c->name, s->name);
	return latch_buf_take(&b);
}

static json_t *entry_of(const json_t *obj)
{
	const char *ns = meta_str(obj, "namespace") ? meta_str(obj, "namespace") : default_ns(obj);
	return json_pack("{s:s,s:s,s:s,s:s}", "apiVersion", latch_json_get_str(obj, "apiVersion"), "kind",
			 latch_json_get_str(obj, "kind"), "namespace", ns ? ns : "", "name", meta_str(obj, "name"));
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

static json_t *read_inventory(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s)
{
	json_t *data = read_inventory_data(k, c, s);
	const char *text = latch_json_get_str(data, "inventory");
	json_t *entries = text ? json_loads(text, 0, NULL) : NULL;
	json_decref(data);
	return json_is_array(entries) ? entries : (json_decref(entries), json_array());
}

static int write_inventory(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *entries,
			   const json_t *versions, const json_t *created, const char *applied_rev, const char *attempted_rev,
			   const char *result, struct latch_error *err)
{
	_cleanup_free_ char *name = inventory_name(c, s);
	char *text = json_dumps(entries, JSON_COMPACT);
	char *versions_text = json_dumps(versions, JSON_COMPACT | JSON_SORT_KEYS);
	json_t *data = json_pack("{s:s,s:s,s:s,s:s}", "inventory", text ? text : "[]", "lastAttemptedRevision", attempted_rev,
				 "result", result, "resourceVersions", versions_text ? versions_text : "{}");
	free(versions_text);
	char *created_text = json_dumps(created, JSON_COMPACT);
	json_object_set_new(data, "createdNamespaces", json_string(created_text ? created_text : "[]"));
	free(created_text);
	/* Server-side apply drops the fields this manager stops sending: keep the last applied
	 * revision when this attempt failed. */
	json_t *old = applied_rev ? NULL : read_inventory_data(k, c, s);
	if (!applied_rev)
		applied_rev = latch_json_get_str(old, "lastAppliedRevision");
	if (applied_rev)
		json_object_set_new(data, "lastAppliedRevision", json_string(applied_rev));
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
	free(text);
	return r;
}

static bool in_list(const json_t *entries, const json_t *e)
{
	size_t i;
	json_t *x;
	json_array_foreach(entries, i, x) if (json_equal(x, (json_t *)e)) return true;
	return false;
}

/* Delete, newest-applied last first, what the previous inventory had and this revision does
 * not, and only if it still carries this source's labels (someone may have taken it over). */
static int prune(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *previous,
		 const json_t *current, json_t *created, struct sync_result *res, struct latch_error *err)
{
	for (size_t i = json_array_size(previous); i-- > 0;) {
		const json_t *e = json_array_get(previous, i);
		if (in_list(current, e))
			continue;
		const char *ns = latch_json_get_str(e, "namespace");
		if (strcmp(latch_json_get_str(e, "kind"), "Namespace") == 0 && !name_in(created, latch_json_get_str(e, "name"))) {
			LATCH_LOG(LATCH_LOG_INFO, "kept a Namespace latch-sync did not create", { "name", latch_json_get_str(e, "name") });
			continue;
		}
		json_t *live = NULL;
		int r = latch_k8s_get(k, latch_json_get_str(e, "apiVersion"), latch_json_get_str(e, "kind"), *ns ? ns : NULL,
				      latch_json_get_str(e, "name"), &live, err);
		if (r == LATCH_ENOTFOUND)
			continue;
		if (r < 0)
			return r;
		const json_t *labels = json_object_get(json_object_get(live, "metadata"), "labels");
		bool ours = latch_json_get_str(labels, LABEL_CONFIG) && strcmp(latch_json_get_str(labels, LABEL_CONFIG), c->name) == 0 &&
			    latch_json_get_str(labels, LABEL_SOURCE) && strcmp(latch_json_get_str(labels, LABEL_SOURCE), s->name) == 0;
		json_decref(live);
		if (!ours)
			continue;
		r = latch_k8s_delete(k, latch_json_get_str(e, "apiVersion"), latch_json_get_str(e, "kind"), *ns ? ns : NULL,
				     latch_json_get_str(e, "name"), err);
		if (r < 0)
			return r;
		res->pruned++;
		LATCH_LOG(LATCH_LOG_INFO, "pruned", { "kind", latch_json_get_str(e, "kind") }, { "name", latch_json_get_str(e, "name") });
	}
	return 0;
}

/* ---- health ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait until every applied workload is healthy, one fails, or the source's timeout passes. */
static int wait_healthy(struct latch_k8s *k, const struct sync_source *s, const json_t *objects, struct latch_error *err)
{
	double deadline = now_s() + (double)s->timeout_s;
	for (;;) {
		char reason[512] = "";
		const json_t *waiting = NULL;
		size_t i;
		json_t *o;
		json_array_foreach(objects, i, o) {
			const char *ns = meta_str(o, "namespace") ? meta_str(o, "namespace") : default_ns(o);
			json_t *live = NULL;
			struct latch_error gerr = LATCH_ERROR_INIT;
			if (latch_k8s_get(k, latch_json_get_str(o, "apiVersion"), latch_json_get_str(o, "kind"), ns, meta_str(o, "name"),
					  &live, &gerr) < 0) {
				int r = latch_error_set(err, gerr.code, "%s", latch_error_message(&gerr));
				latch_error_done(&gerr);
				return r;
			}
			enum sync_health h = sync_health_of(live, reason, sizeof(reason));
			json_decref(live);
			if (h == SYNC_HEALTH_FAILED)
				return latch_error_set(err, LATCH_EINVAL, "%s '%s' is unhealthy: %s", latch_json_get_str(o, "kind"),
						       meta_str(o, "name"), reason);
			if (h == SYNC_HEALTH_PROGRESSING) {
				waiting = o;
				break;
			}
		}
		if (!waiting)
			return 0;
		if (now_s() >= deadline)
			return latch_error_set(err, LATCH_ETIMEOUT, "%s '%s' not healthy within %lds: %s", latch_json_get_str(waiting, "kind"),
					       meta_str(waiting, "name"), s->timeout_s, reason);
		struct timespec pause = { 1, 0 };
		nanosleep(&pause, NULL);
	}
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

/* ---- the pass ---- */

/* Credentials are read at every pass, so a rotated password is picked up. */
static int fetch_with_credentials(struct latch_git *g, const struct sync_source *s, struct latch_error *err)
{
	struct latch_buf user = LATCH_SECRET_BUF_INIT(65536), pass = LATCH_SECRET_BUF_INIT(65536);
	int r = 0;
	if (s->username_file)
		r = latch_file_read_line(s->username_file, 65536, &user, err);
	if (r == 0 && s->password_file)
		r = latch_file_read_line(s->password_file, 65536, &pass, err);
	struct latch_git_auth auth = { s->username_file ? latch_buf_str(&user) : NULL, s->password_file ? latch_buf_str(&pass) : NULL,
				       s->ssh_key_file, s->known_hosts_file, s->ca_file };
	if (r == 0)
		r = latch_git_fetch(g, &auth, err);
	latch_buf_done(&user);
	latch_buf_done(&pass);
	return r;
}

/* Fetch, resolve the ref, render the commit (plain or kustomize). */
static int render_revision(const struct sync_config *c, const struct sync_source *s, char sha[41], json_t *objects,
			   struct latch_error *err)
{
	struct latch_buf dir = LATCH_BUF_INIT(8192), warnings = LATCH_BUF_INIT(1u << 20);
	latch_buf_printf(&dir, "%s/%s/%s", c->cache_dir, c->name, s->name);
	struct latch_git *g = NULL;
	struct latch_git_ref ref = { s->branch, s->tag, s->commit };
	int r = latch_git_open(latch_buf_str(&dir), s->url, &g, err);
	if (r == 0)
		r = fetch_with_credentials(g, s, err);
	if (r == 0)
		r = latch_git_resolve(g, &ref, sha, err);
	if (r == 0)
		r = s->kustomize ? render_kustomize(c, s, g, sha, objects, &warnings, err) : render_files(c, s, g, sha, objects, &warnings, err);
	if (warnings.len)
		LATCH_LOG(LATCH_LOG_WARN, "latch-inject warnings", { "source", s->name }, { "warnings", latch_buf_str(&warnings) });
	latch_git_close(g);
	latch_buf_done(&dir);
	latch_buf_done(&warnings);
	return r;
}

static json_t *sorted(json_t *objects)
{
	size_t n = json_array_size(objects);
	json_t **items = calloc(n ? n : 1, sizeof(*items));
	for (size_t i = 0; items && i < n; i++)
		items[i] = json_array_get(objects, i);
	if (items)
		qsort(items, n, sizeof(*items), compare_objects);
	json_t *out = json_array();
	for (size_t i = 0; items && i < n; i++)
		json_array_append(out, items[i]);
	free(items);
	return out;
}

int sync_source_pass(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, bool dry_run,
		     struct sync_result *ret, struct latch_error *err)
{
	struct sync_result res = { 0 };
	json_t *rendered = json_array(), *objects = NULL, *previous = NULL, *current = json_array();
	bool applied = false; /* the revision is in the cluster, whatever its health */
	int r = render_revision(c, s, res.revision, rendered, err);
	if (r == 0 && json_array_size(rendered) == 0 && !s->allow_empty)
		r = latch_error_set(err, LATCH_EINVAL, "revision %.12s renders no object under '%s'; refusing to prune everything "
						       "(set allowEmpty: true to allow it)", res.revision, s->path ? s->path : "");
	if (r == 0) {
		objects = sorted(rendered);
		r = validate(k, objects, err);
	}
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) json_array_append_new(current, entry_of(o));
	json_t *data = dry_run ? NULL : read_inventory_data(k, c, s);
	const char *versions_text = latch_json_get_str(data, "resourceVersions");
	json_t *versions = versions_text ? json_loads(versions_text, 0, NULL) : NULL;
	if (!json_is_object(versions)) {
		json_decref(versions);
		versions = json_object();
	}
	const char *created_text = latch_json_get_str(data, "createdNamespaces");
	json_t *created = created_text ? json_loads(created_text, 0, NULL) : NULL;
	if (!json_is_array(created)) {
		json_decref(created);
		created = json_array();
	}
	const char *last_applied = latch_json_get_str(data, "lastAppliedRevision");
	bool same_revision = last_applied && strcmp(last_applied, res.revision) == 0;
	if (r == 0 && !dry_run) {
		previous = read_inventory(k, c, s);
		r = apply_all(k, objects, versions, created, &res, err);
		if (same_revision)
			res.drifted = res.changed;
		if (r == 0 && s->prune)
			r = prune(k, c, s, previous, current, created, &res, err);
		if (r == 0 && s->health_check) {
			applied = true;
			r = wait_healthy(k, s, objects, err);
		}
	}
	if (!dry_run) {
		/* Record the attempt either way; a failed revision keeps the last applied one. */
		struct latch_error ierr = LATCH_ERROR_INIT;
		bool in_cluster = r == 0 || applied;
		json_t *keep = in_cluster ? json_incref(current) : (previous ? json_incref(previous) : read_inventory(k, c, s));
		struct latch_buf result = LATCH_BUF_INIT(8192);
		if (r == 0)
			latch_buf_printf(&result, "Applied: %zu objects, %zu changed (%zu drifted), %zu pruned", res.applied, res.changed,
					 res.drifted, res.pruned);
		else
			latch_buf_printf(&result, "%s%s", applied ? "Applied, unhealthy: " : "", latch_error_message(err));
		if (write_inventory(k, c, s, keep, versions, created, in_cluster ? res.revision : NULL, res.revision[0] ? res.revision : "unknown",
				    latch_buf_str(&result), &ierr) < 0 &&
		    r == 0)
			r = latch_error_set(err, ierr.code, "%s", latch_error_message(&ierr));
		/* Events when something happened, not on every quiet pass. */
		if (r < 0)
			record_event(k, c, s, true, "SyncFailed", latch_buf_str(&result));
		else if (!same_revision || res.changed > 0 || res.pruned > 0)
			record_event(k, c, s, false, "Synced", latch_buf_str(&result));
		json_decref(keep);
		latch_buf_done(&result);
		latch_error_done(&ierr);
	}
	json_decref(previous);
	json_decref(current);
	json_decref(objects);
	json_decref(rendered);
	json_decref(versions);
	json_decref(created);
	json_decref(data);
	if (r < 0)
		return r;
	*ret = res;
	return 0;
}
