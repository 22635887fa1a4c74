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
#include "parallel.h"
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
			char origin[4096];
			snprintf(origin, sizeof(origin), "%s:%zu", name, doc.line);
			json_object_set_new(json_object_get(obj, "metadata"), "_origin", json_string(origin));
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

static const char *namespace_of(const json_t *obj)
{
	return meta_str(obj, "namespace") ? meta_str(obj, "namespace") : default_ns(obj);
}

/* Where the object came from ("apps/web.yaml@1a2b3c4d5e6f:12"), for error messages. */
static const char *origin_of(const json_t *obj)
{
	return meta_str(obj, "_origin") ? meta_str(obj, "_origin") : "?";
}

/* The object as sent to the server: without our bookkeeping fields. */
static json_t *wire(const json_t *obj)
{
	json_t *copy = json_deep_copy(obj);
	json_object_del(json_object_get(copy, "metadata"), "_defaultNamespace");
	json_object_del(json_object_get(copy, "metadata"), "_origin");
	return copy;
}

static bool is_kind(const json_t *obj, const char *kind)
{
	const char *k = latch_json_get_str(obj, "kind");
	return k && strcmp(k, kind) == 0;
}

/* Whether a CustomResourceDefinition of this revision defines kind in api_version's group. */
static bool kind_defined_in_revision(const json_t *objects, const char *api_version, const char *kind)
{
	const char *slash = api_version ? strchr(api_version, '/') : NULL;
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		const json_t *spec = json_object_get(o, "spec");
		const char *group = latch_json_get_str(spec, "group");
		const char *defined = latch_json_get_str(json_object_get(spec, "names"), "kind");
		if (slash && kind && is_kind(o, "CustomResourceDefinition") && group && defined && strlen(group) == (size_t)(slash - api_version) &&
		    strncmp(group, api_version, (size_t)(slash - api_version)) == 0 && strcmp(defined, kind) == 0)
			return true;
	}
	return false;
}

/* Namespaces of this revision that do not exist yet. */
static int new_namespaces(struct latch_k8s *k, const json_t *objects, json_t *ret, struct latch_error *err)
{
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		if (!is_kind(o, "Namespace"))
			continue;
		json_t *live = NULL;
		int r = latch_k8s_get(k, "v1", "Namespace", NULL, meta_str(o, "name"), &live, err);
		json_decref(live);
		if (r == LATCH_ENOTFOUND)
			json_object_set_new(ret, meta_str(o, "name"), json_true());
		else if (r < 0)
			return r;
	}
	return 0;
}

/* Objects in a Namespace this revision creates, and custom resources of a CRD it defines
 * that the server does not serve yet, cannot be checked before the first stage exists; the
 * apply checks them. (A dry run into a missing Namespace also costs the server a slow
 * lookup: 60 ms each on the stack.) */
static bool waits_for_first_stage(struct latch_k8s *k, const json_t *objects, const json_t *created_here, const json_t *o)
{
	const char *ns = namespace_of(o), *api_version = latch_json_get_str(o, "apiVersion"), *kind = latch_json_get_str(o, "kind");
	return (ns && !first_stage(o) && json_object_get(created_here, ns)) ||
	       (kind_defined_in_revision(objects, api_version, kind) && !latch_k8s_serves(k, api_version, kind));
}

static struct apply_job *make_jobs(const json_t *objects)
{
	size_t n = json_array_size(objects);
	struct apply_job *jobs = calloc(n ? n : 1, sizeof(*jobs));
	for (size_t i = 0; jobs && i < n; i++) {
		const json_t *o = json_array_get(objects, i);
		jobs[i] = (struct apply_job){ .object = wire(o), .default_namespace = default_ns(o), .error = LATCH_ERROR_INIT };
	}
	return jobs;
}

/* The error of the first failed job, named by where its object came from. */
static int first_job_error(const json_t *objects, const struct apply_job *jobs, size_t n, struct latch_error *err)
{
	for (size_t i = 0; i < n; i++)
		if (jobs[i].result < 0)
			return latch_error_set(err, jobs[i].result, "%s: %s", origin_of(json_array_get(objects, i)),
					       latch_error_message(&jobs[i].error));
	return latch_error_set(err, LATCH_ENOMEM, "out of memory");
}

/* Every object through a server-side apply with dryRun=All, in parallel; the first refusal in
 * the revision's order is the error. */
static int validate(struct latch_k8s *k, const json_t *objects, struct latch_error *err)
{
	json_t *created_here = json_object(), *checked = json_array();
	int r = latch_k8s_discover(k, err);
	if (r == 0)
		r = new_namespaces(k, objects, created_here, err);
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) if (!waits_for_first_stage(k, objects, created_here, o)) json_array_append(checked, o);
	size_t n = json_array_size(checked);
	struct apply_job *jobs = r == 0 ? make_jobs(checked) : NULL;
	if (r == 0 && !jobs)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	struct latch_k8s_apply_options ao = { FIELD_MANAGER, true, true, NULL };
	if (r == 0 && apply_parallel(k, jobs, n, &ao, true) < 0) /* the first refusal in the revision's order */
		r = first_job_error(checked, jobs, n, err);
	if (jobs)
		apply_jobs_done(jobs, n);
	json_decref(checked);
	json_decref(created_here);
	return r;
}

static char *key_in(const json_t *obj, const char *ns)
{
	struct latch_buf b = LATCH_BUF_INIT(4096);
	latch_buf_printf(&b, "%s/%s/%s/%s", latch_json_get_str(obj, "apiVersion"), latch_json_get_str(obj, "kind"), ns ? ns : "",
			 meta_str(obj, "name"));
	return latch_buf_take(&b);
}

static char *object_key(const json_t *obj)
{
	return key_in(obj, namespace_of(obj));
}

/* The live copy of obj in what list_live returned; a namespaced object that names no
 * namespace is in "default". */
static const json_t *live_of(const json_t *live, const json_t *obj)
{
	_cleanup_free_ char *key = object_key(obj);
	const json_t *item = key ? json_object_get(live, key) : NULL;
	if (!item && !namespace_of(obj)) {
		_cleanup_free_ char *in_default = key_in(obj, "default");
		item = in_default ? json_object_get(live, in_default) : NULL;
	}
	return item;
}

/* This source's live objects of the kinds in objects, by object key: one list per kind,
 * selected by the owner labels. Items get back the kind and apiVersion lists leave out. */
static int list_live(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
		     bool cached, json_t *live, struct latch_error *err)
{
	struct latch_buf selector = LATCH_BUF_INIT(1024);
	latch_buf_printf(&selector, LABEL_CONFIG "=%s," LABEL_SOURCE "=%s", c->name, s->name);
	json_t *listed = json_object();
	size_t i;
	json_t *o;
	int r = 0;
	json_array_foreach(objects, i, o) {
		const char *api_version = latch_json_get_str(o, "apiVersion"), *kind = latch_json_get_str(o, "kind");
		struct latch_buf kk = LATCH_BUF_INIT(1024);
		latch_buf_printf(&kk, "%s/%s", api_version, kind);
		json_t *items = NULL;
		if (r == 0 && !json_object_get(listed, latch_buf_str(&kk))) {
			json_object_set_new(listed, latch_buf_str(&kk), json_true());
			r = latch_k8s_list(k, api_version, kind, latch_buf_str(&selector), cached, &items, err);
			if (r == LATCH_ENOTFOUND && !latch_k8s_serves(k, api_version, kind))
				r = 0; /* a kind the server no longer serves has no objects */
		}
		size_t j;
		json_t *item;
		json_array_foreach(items, j, item) {
			json_object_set_new(item, "apiVersion", json_string(api_version));
			json_object_set_new(item, "kind", json_string(kind));
			_cleanup_free_ char *key = key_in(item, meta_str(item, "namespace"));
			if (key)
				json_object_set(live, key, item);
		}
		json_decref(items);
		latch_buf_done(&kk);
	}
	json_decref(listed);
	latch_buf_done(&selector);
	return r;
}

/* Objects whose live resourceVersion is not the one the last pass recorded: changed by
 * someone else (drift), or gone. */
static json_t *drifted_objects(const json_t *objects, const json_t *versions, const json_t *live)
{
	json_t *out = json_array();
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		_cleanup_free_ char *key = object_key(o);
		const char *recorded = key ? latch_json_get_str(versions, key) : NULL;
		const char *now = meta_str(live_of(live, o), "resourceVersion");
		if (!recorded || !now || strcmp(recorded, now) != 0)
			json_array_append(out, o);
	}
	return out;
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
	if (!is_kind(obj, "Namespace") || name_in(created, meta_str(obj, "name")))
		return 0;
	json_t *live = NULL;
	int r = latch_k8s_get(k, "v1", "Namespace", NULL, meta_str(obj, "name"), &live, err);
	json_decref(live);
	if (r == LATCH_ENOTFOUND)
		return json_array_append_new(created, json_string(meta_str(obj, "name"))) < 0 ? LATCH_ENOMEM : 0;
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
		int r = latch_k8s_get(k, latch_json_get_str(crd, "apiVersion"), "CustomResourceDefinition", NULL, meta_str(crd, "name"), &live,
				      err);
		bool established = r == 0 && condition_true(live, "Established");
		json_decref(live);
		if (r < 0 || established)
			return r;
		if (now_s() >= deadline)
			return latch_error_set(err, LATCH_ETIMEOUT, "CustomResourceDefinition '%s' not established in time", meta_str(crd, "name"));
		struct timespec pause = { 0, 100000000 };
		nanosleep(&pause, NULL);
	}
}

/* Record what the apply stored. It changed the object if the resourceVersion moved from
 * the one the last pass recorded (or, for an object new to the inventory, from the live one,
 * which a lagging watch cache cannot make look like a change). */
static void note_applied(const json_t *obj, const json_t *stored, json_t *versions, const json_t *live, struct sync_result *res)
{
	_cleanup_free_ char *key = object_key(obj);
	const char *rv = meta_str(stored, "resourceVersion");
	const char *before = key ? latch_json_get_str(versions, key) : NULL;
	if (!before && live)
		before = meta_str(live_of(live, obj), "resourceVersion");
	if (!before || !rv || strcmp(before, rv) != 0)
		res->changed++;
	if (key && rv)
		json_object_set_new(versions, key, json_string(rv));
}

/* Stage one, one at a time: Namespaces and CRDs, each CRD waited for until Established. */
static int apply_first_stage(struct latch_k8s *k, const struct sync_source *s, const json_t *objects, json_t *versions,
			     const json_t *live, json_t *created, struct sync_result *res, struct latch_error *err)
{
	double deadline = now_s() + (double)s->timeout_s;
	bool crds = false;
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		if (!first_stage(o))
			continue;
		struct latch_k8s_apply_options ao = { FIELD_MANAGER, true, false, default_ns(o) };
		int r = note_created_namespace(k, o, created, err);
		json_t *w = wire(o), *stored = NULL;
		if (r == 0)
			r = latch_k8s_apply(k, w, &ao, &stored, err);
		json_decref(w);
		if (r == 0 && is_kind(o, "CustomResourceDefinition")) {
			crds = true;
			r = wait_established(k, o, deadline, err);
		}
		if (r < 0) {
			json_decref(stored);
			return latch_error_prefix(err, "%s", origin_of(o));
		}
		note_applied(o, stored, versions, live, res);
		json_decref(stored);
	}
	if (crds) /* their kinds are served now */
		latch_k8s_forget_discovery(k);
	return 0;
}

/* versions: resourceVersions the last pass left (read), replaced by this pass's (written).
 * live: the objects as listed before the apply, or NULL. created: see note_created_namespace. */
static int apply_all(struct latch_k8s *k, const struct sync_source *s, const json_t *objects, json_t *versions, const json_t *live,
		     json_t *created, struct sync_result *res, struct latch_error *err)
{
	int r = apply_first_stage(k, s, objects, versions, live, created, res, err);
	json_t *rest = json_array();
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) if (!first_stage(o)) json_array_append(rest, o);
	if (r == 0)
		r = latch_k8s_discover(k, err);
	size_t n = json_array_size(rest);
	struct apply_job *jobs = r == 0 ? make_jobs(rest) : NULL;
	if (r == 0 && !jobs)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	struct latch_k8s_apply_options ao = { FIELD_MANAGER, true, false, NULL };
	if (r == 0 && apply_parallel(k, jobs, n, &ao, false) < 0)
		r = first_job_error(rest, jobs, n, err);
	for (size_t j = 0; r == 0 && j < n; j++)
		note_applied(json_array_get(rest, j), jobs[j].stored, versions, live, res);
	if (jobs)
		apply_jobs_done(jobs, n);
	json_decref(rest);
	return r;
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
	const char *ns = namespace_of(obj);
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

static bool in_list(const json_t *entries, const json_t *e)
{
	size_t i;
	json_t *x;
	json_array_foreach(entries, i, x) if (json_equal(x, (json_t *)e)) return true;
	return false;
}

/* An inventory entry as an object carrying only its identity, for list_live and live_of. */
static json_t *object_of_entry(const json_t *e)
{
	const char *ns = latch_json_get_str(e, "namespace");
	json_t *o = json_pack("{s:s?,s:s?,s:{s:s?}}", "apiVersion", latch_json_get_str(e, "apiVersion"), "kind", latch_json_get_str(e, "kind"),
			      "metadata", "name", latch_json_get_str(e, "name"));
	if (o && ns && *ns)
		json_object_set_new(json_object_get(o, "metadata"), "namespace", json_string(ns));
	return o;
}

struct delete_ctx {
	const json_t *objects;
	struct latch_error *errors;
};

static int delete_one(struct latch_k8s *k, size_t i, void *ctx)
{
	struct delete_ctx *d = ctx;
	const json_t *o = json_array_get(d->objects, i);
	return latch_k8s_delete(k, latch_json_get_str(o, "apiVersion"), latch_json_get_str(o, "kind"), meta_str(o, "namespace"),
				meta_str(o, "name"), &d->errors[i]);
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
		parallel_run(k, n, delete_one, &ctx, false, results);
	for (size_t i = 0; r == 0 && i < n; i++) {
		const json_t *o = json_array_get(objects, i);
		if (results[i] < 0)
			r = latch_error_set(err, results[i], "pruning: %s", latch_error_message(&errors[i]));
		else if (results[i] == 0) {
			res->pruned++;
			LATCH_LOG(LATCH_LOG_INFO, "pruned", { "kind", latch_json_get_str(o, "kind") }, { "name", meta_str(o, "name") });
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
static int prune(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *previous,
		 const json_t *current, json_t *created, struct sync_result *res, struct latch_error *err)
{
	json_t *gone = json_array(), *live = json_object(), *rest = json_array(), *last = json_array();
	for (size_t i = json_array_size(previous); i-- > 0;) {
		const json_t *e = json_array_get(previous, i);
		if (in_list(current, e))
			continue;
		if (strcmp(latch_json_get_str(e, "kind"), "Namespace") == 0 && !name_in(created, latch_json_get_str(e, "name"))) {
			LATCH_LOG(LATCH_LOG_INFO, "kept a Namespace latch-sync did not create", { "name", latch_json_get_str(e, "name") });
			continue;
		}
		json_array_append_new(gone, object_of_entry(e));
	}
	int r = json_array_size(gone) ? latch_k8s_discover(k, err) : 0;
	if (r == 0 && json_array_size(gone))
		r = list_live(k, c, s, gone, false, live, err); /* fresh: never delete what was just taken over */
	size_t i;
	json_t *o;
	json_array_foreach(gone, i, o) if (live_of(live, o)) json_array_append(first_stage(o) ? last : rest, o);
	if (r == 0)
		r = delete_all(k, rest, false, res, err);
	if (r == 0)
		r = delete_all(k, last, true, res, err);
	json_decref(gone);
	json_decref(live);
	json_decref(rest);
	json_decref(last);
	return r;
}

/* ---- health ---- */

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Wait until every applied workload is healthy, one fails, or the source's timeout passes.
 * Workloads are read by one labelled list per kind, so waiting costs a few requests a second
 * whatever the number of objects. */
static int wait_healthy(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, const json_t *objects,
			struct latch_error *err)
{
	json_t *workloads = json_array();
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) if (sync_health_has_rules(latch_json_get_str(o, "kind"))) json_array_append(workloads, o);
	double deadline = now_s() + (double)s->timeout_s;
	int r = 0;
	while (r == 0 && json_array_size(workloads)) {
		char reason[512] = "";
		const json_t *waiting = NULL;
		json_t *live = json_object();
		r = list_live(k, c, s, workloads, true, live, err);
		json_array_foreach(workloads, i, o) {
			if (r < 0 || waiting)
				break;
			const json_t *item = live_of(live, o);
			enum sync_health h = item ? sync_health_of(item, reason, sizeof(reason)) : SYNC_HEALTH_PROGRESSING;
			if (!item)
				snprintf(reason, sizeof(reason), "not found (deleted since the apply?)");
			if (h == SYNC_HEALTH_FAILED)
				r = latch_error_set(err, LATCH_EINVAL, "%s '%s' is unhealthy: %s", latch_json_get_str(o, "kind"), meta_str(o, "name"), reason);
			else if (h == SYNC_HEALTH_PROGRESSING)
				waiting = o;
		}
		json_decref(live);
		if (r < 0 || !waiting)
			break;
		if (now_s() >= deadline) {
			r = latch_error_set(err, LATCH_ETIMEOUT, "%s '%s' not healthy within %lds: %s", latch_json_get_str(waiting, "kind"),
					    meta_str(waiting, "name"), s->timeout_s, reason);
			break;
		}
		struct timespec pause = { 1, 0 };
		nanosleep(&pause, NULL);
	}
	json_decref(workloads);
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

static bool adds_entries(const json_t *previous, const json_t *current)
{
	size_t i;
	json_t *e;
	json_array_foreach(current, i, e) if (!in_list(previous, e)) return true;
	return false;
}

static json_t *union_of(const json_t *a, const json_t *b)
{
	json_t *out = json_copy((json_t *)a);
	size_t i;
	json_t *e;
	json_array_foreach(b, i, e) if (!in_list(out, e)) json_array_append(out, e);
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
	if (list_live(k, c, s, objects, true, live, &err) < 0) {
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
		r = apply_all(k, s, to_apply, lp->versions, live, lp->created, res, err);
	t->applied = now_s();
	if (r == 0) {
		res->applied = json_array_size(objects);
		*in_cluster = true;
		if (s->prune)
			r = prune(k, c, s, lp->entries, current, lp->created, res, err);
	}
	t->pruned = now_s();
	if (r == 0 && s->health_check)
		r = wait_healthy(k, c, s, objects, err);
	t->healthy = now_s();
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

int sync_source_pass(struct latch_k8s *k, const struct sync_config *c, const struct sync_source *s, bool dry_run,
		     struct sync_result *ret, struct latch_error *err)
{
	struct sync_result res = { 0 };
	struct timings t = { .start = now_s() };
	json_t *rendered = json_array(), *objects = NULL, *current = json_array(), *live = NULL, *to_apply = NULL;
	struct last_pass lp = { 0 };
	bool in_cluster = false;
	int r = render_revision(c, s, res.revision, rendered, err);
	if (r == 0 && json_array_size(rendered) == 0 && !s->allow_empty)
		r = latch_error_set(err, LATCH_EINVAL, "revision %.12s renders no object under '%s'; refusing to prune everything "
						       "(set allowEmpty: true to allow it)", res.revision, s->path ? s->path : "");
	objects = sorted(rendered);
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) json_array_append_new(current, entry_of(o));
	t.rendered = now_s();
	last_pass_read(dry_run ? NULL : k, c, s, &lp);
	bool same_revision = lp.applied_revision && strcmp(lp.applied_revision, res.revision) == 0;
	if (r == 0 && (live = live_if_same_revision(k, c, s, objects, same_revision && !dry_run)))
		to_apply = drifted_objects(objects, lp.versions, live);
	else if (r == 0 && (r = validate(k, objects, err)) == 0)
		to_apply = json_incref(objects);
	t.validated = t.applied = t.pruned = t.healthy = now_s();
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
