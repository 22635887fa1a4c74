#include "objects.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "latch/buf.h"

#define WIRE_KEY "_wire"

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

bool sync_object_first_stage(const json_t *obj)
{
	return kind_rank(latch_json_get_str(obj, "kind")) <= 1;
}

const char *sync_object_meta(const json_t *obj, const char *key)
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
	const char *nx = sync_object_meta(x, "namespace"), *ny = sync_object_meta(y, "namespace");
	if ((d = strcmp(nx ? nx : "", ny ? ny : "")))
		return d;
	return strcmp(sync_object_meta(x, "name") ? sync_object_meta(x, "name") : "", sync_object_meta(y, "name") ? sync_object_meta(y, "name") : "");
}

const char *sync_object_default_namespace(const json_t *obj)
{
	return sync_object_meta(obj, "_defaultNamespace");
}

const char *sync_object_namespace(const json_t *obj)
{
	return sync_object_meta(obj, "namespace") ? sync_object_meta(obj, "namespace") : sync_object_default_namespace(obj);
}

/* Where the object came from ("apps/web.yaml@1a2b3c4d5e6f:12"), for error messages. */
const char *sync_object_origin(const json_t *obj)
{
	return sync_object_meta(obj, "_origin") ? sync_object_meta(obj, "_origin") : "?";
}

/* The object as sent to the server: without our bookkeeping fields. */
json_t *sync_object_wire(const json_t *obj)
{
	const char *packed = latch_json_get_str(obj, WIRE_KEY);
	if (packed)
		return json_loads(packed, 0, NULL);
	json_t *copy = json_deep_copy(obj);
	json_object_del(json_object_get(copy, "metadata"), "_defaultNamespace");
	json_object_del(json_object_get(copy, "metadata"), "_origin");
	json_object_del(json_object_get(copy, "metadata"), "_digest");
	return copy;
}

char *sync_object_wire_text(const json_t *obj)
{
	const char *packed = latch_json_get_str(obj, WIRE_KEY);
	if (packed)
		return strdup(packed);
	json_t *w = sync_object_wire(obj);
	char *text = w ? json_dumps(w, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
	json_decref(w);
	return text;
}

/* metadata[key] of from into to, when from has it. */
static int copy_meta(const json_t *from, json_t *to, const char *key)
{
	json_t *v = json_object_get(from, key);
	return v ? json_object_set(to, key, v) : 0;
}

json_t *sync_object_pack(const json_t *obj)
{
	if (sync_object_first_stage(obj))
		return json_incref((json_t *)obj);
	char *text = sync_object_wire_text(obj);
	const json_t *meta = json_object_get(obj, "metadata");
	json_t *api_version = json_object_get(obj, "apiVersion"), *kind = json_object_get(obj, "kind");
	json_t *packed = NULL;
	if (text)
		packed = json_pack("{s:O*,s:O*,s:{},s:s}", "apiVersion", api_version, "kind", kind, "metadata", WIRE_KEY,
				   text);
	json_t *packed_meta = json_object_get(packed, "metadata");
	static const char *const kept[] = { "name", "namespace", "_defaultNamespace", "_origin", "_digest", NULL };
	for (int i = 0; packed && kept[i]; i++)
		if (copy_meta(meta, packed_meta, kept[i]) < 0) {
			json_decref(packed);
			packed = NULL;
		}
	latch_secret_free(text);
	return packed;
}

bool sync_object_is(const json_t *obj, const char *kind)
{
	const char *k = latch_json_get_str(obj, "kind");
	return k && strcmp(k, kind) == 0;
}

char *sync_object_key_in(const json_t *obj, const char *ns)
{
	struct latch_buf b = LATCH_BUF_INIT(4096);
	latch_buf_printf(&b, "%s/%s/%s/%s", latch_json_get_str(obj, "apiVersion"), latch_json_get_str(obj, "kind"), ns ? ns : "",
			 sync_object_meta(obj, "name"));
	return latch_buf_take(&b);
}

char *sync_object_key(const json_t *obj)
{
	return sync_object_key_in(obj, sync_object_namespace(obj));
}

/* The live copy of obj in what list_live returned (namespaces resolved beforehand). */
const json_t *sync_object_live(const json_t *live, const json_t *obj)
{
	_cleanup_free_ char *key = sync_object_key(obj);
	return key ? json_object_get(live, key) : NULL;
}

bool sync_names_contain(const json_t *names, const char *name)
{
	size_t i;
	json_t *n;
	json_array_foreach(names, i, n) if (json_string_value(n) && strcmp(json_string_value(n), name) == 0) return true;
	return false;
}

char *sync_created_key(const char *kind, const char *name)
{
	struct latch_buf b = LATCH_BUF_INIT(4096);
	/* A bare name is a Namespace, as inventories before CRDs were tracked hold them. */
	if (strcmp(kind, "Namespace") == 0)
		latch_buf_append_str(&b, name);
	else
		latch_buf_printf(&b, "%s/%s", kind, name);
	return latch_buf_take(&b);
}

bool sync_kept_unless_created(const json_t *e, const json_t *created)
{
	const char *kind = latch_json_get_str(e, "kind"), *name = latch_json_get_str(e, "name");
	if (!kind || !name || (strcmp(kind, "Namespace") != 0 && strcmp(kind, "CustomResourceDefinition") != 0))
		return false;
	_cleanup_free_ char *key = sync_created_key(kind, name);
	return !key || !sync_names_contain(created, key); /* out of memory: keep it */
}

char *sync_entry_key(const json_t *e)
{
	struct latch_buf b = LATCH_BUF_INIT(4096);
	latch_buf_printf(&b, "%s/%s/%s/%s", latch_json_get_str(e, "apiVersion"), latch_json_get_str(e, "kind"),
			 latch_json_get_str(e, "namespace"), latch_json_get_str(e, "name"));
	return latch_buf_take(&b);
}

void sync_entry_set_add(json_t *set, const json_t *e)
{
	_cleanup_free_ char *key = sync_entry_key(e);
	if (key)
		json_object_set_new(set, key, json_true());
}

json_t *sync_entry_set(const json_t *entries)
{
	json_t *set = json_object();
	size_t i;
	json_t *e;
	json_array_foreach(entries, i, e) sync_entry_set_add(set, e);
	return set;
}

bool sync_entry_set_has(const json_t *set, const json_t *e)
{
	_cleanup_free_ char *key = sync_entry_key(e);
	return key && json_object_get(set, key);
}

/* The entry shares the object's strings: one per object, not two, in a revision held whole. */
json_t *sync_object_entry(const json_t *obj)
{
	const json_t *meta = json_object_get(obj, "metadata");
	json_t *ns = json_object_get(meta, "namespace");
	if (!json_is_string(ns))
		ns = json_object_get(meta, "_defaultNamespace");
	json_t *api_version = json_object_get(obj, "apiVersion"), *kind = json_object_get(obj, "kind");
	json_t *name = json_object_get(meta, "name");
	if (!json_is_string(api_version) || !json_is_string(kind) || !json_is_string(name))
		return NULL;
	if (!json_is_string(ns))
		return json_pack("{s:O,s:O,s:s,s:O}", "apiVersion", api_version, "kind", kind, "namespace", "", "name",
				 name);
	return json_pack("{s:O,s:O,s:O,s:O}", "apiVersion", api_version, "kind", kind, "namespace", ns, "name",
			 name);
}

/* An inventory entry as an object carrying only its identity, for list_live and live_of. */
json_t *sync_object_from_entry(const json_t *e)
{
	const char *ns = latch_json_get_str(e, "namespace");
	json_t *o = json_pack("{s:s?,s:s?,s:{s:s?}}", "apiVersion", latch_json_get_str(e, "apiVersion"), "kind", latch_json_get_str(e, "kind"),
			      "metadata", "name", latch_json_get_str(e, "name"));
	if (o && ns && *ns)
		json_object_set_new(json_object_get(o, "metadata"), "namespace", json_string(ns));
	return o;
}

json_t *sync_objects_sorted(json_t *objects)
{
	size_t n = json_array_size(objects);
	json_t **items = calloc(n ? n : 1, sizeof(*items));
	json_t *out = items ? json_array() : NULL;
	for (size_t i = 0; out && i < n; i++)
		items[i] = json_array_get(objects, i);
	if (out)
		qsort(items, n, sizeof(*items), compare_objects);
	for (size_t i = 0; out && i < n; i++) {
		if (json_array_append(out, items[i]) < 0) {
			json_decref(out);
			out = NULL;
		}
	}
	free(items);
	return out;
}

static uint64_t fnv1a(uint64_t h, const char *text)
{
	for (const unsigned char *p = (const unsigned char *)text; *p; p++)
		h = (h ^ *p) * 1099511628211ull;
	return h;
}

char *sync_object_fingerprint(const json_t *obj)
{
	const json_t *meta = json_object_get(obj, "metadata");
	const json_t *generation = json_object_get(meta, "generation");
	struct latch_buf b = LATCH_BUF_INIT(256);
	if (json_is_integer(generation)) {
		char *labels = json_dumps(json_object_get(meta, "labels"), JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY);
		latch_buf_printf(&b, "g%lld-%016llx", (long long)json_integer_value(generation),
				 (unsigned long long)fnv1a(14695981039346656037ull, labels ? labels : ""));
		free(labels);
	} else if (latch_json_get_str(meta, "resourceVersion")) {
		latch_buf_printf(&b, "r%s", latch_json_get_str(meta, "resourceVersion"));
	} else {
		latch_buf_done(&b);
		return NULL;
	}
	return latch_buf_take(&b);
}

/* FNV-1a, 64 bits: tells whether what a revision renders to changed (a config change on the
 * same commit), not a security boundary. */
char *sync_objects_hash(json_t *objects)
{
	uint64_t h = 14695981039346656037ull;
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		char *text = sync_object_wire_text(o);
		if (!text)
			return NULL;
		h = fnv1a(h, text);
		h = fnv1a(h, "\n");
		char digest[17];
		snprintf(digest, sizeof(digest), "%016llx", (unsigned long long)fnv1a(14695981039346656037ull, text));
		latch_secret_free(text); /* the objects may be Secrets */
		if (json_object_set_new(json_object_get(o, "metadata"), "_digest", json_string(digest)) < 0)
			return NULL;
	}
	char *hex = malloc(17);
	if (hex)
		snprintf(hex, 17, "%016llx", (unsigned long long)h);
	return hex;
}

const char *sync_object_digest(const json_t *obj)
{
	return latch_json_get_str(json_object_get(obj, "metadata"), "_digest");
}

