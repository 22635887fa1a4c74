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

/* "apiVersion/kind/namespace/name", the one format of keys and inventory entries. */
static char *key_of(const char *api_version, const char *kind, const char *ns, const char *name)
{
	struct latch_buf b = LATCH_BUF_INIT(4096);
	latch_buf_printf(&b, "%s/%s/%s/%s", api_version, kind, ns ? ns : "", name);
	return latch_buf_take(&b);
}

char *sync_object_key_in(const json_t *obj, const char *ns)
{
	return key_of(latch_json_get_str(obj, "apiVersion"), latch_json_get_str(obj, "kind"), ns,
		      sync_object_meta(obj, "name"));
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

/* A key split back into its parts: a name, a namespace and a kind never hold a '/', so they
 * are the last three fields and the apiVersion ("apps/v1") is the rest. */
bool sync_entry_split(const char *key, struct sync_entry_parts *p)
{
	size_t len = key ? strlen(key) : 0;
	if (!key || len >= sizeof(p->buf))
		return false;
	memcpy(p->buf, key, len + 1);
	char *fields[3];
	for (int i = 0; i < 3; i++) {
		char *slash = strrchr(p->buf, '/');
		if (!slash)
			return false;
		*slash = '\0';
		fields[i] = slash + 1;
	}
	p->name = fields[0];
	p->namespace = fields[1];
	p->kind = fields[2];
	p->api_version = p->buf;
	return *p->name && *p->kind && *p->api_version;
}

bool sync_kept_unless_created(const json_t *e, const json_t *created)
{
	struct sync_entry_parts p;
	if (!sync_entry_split(sync_entry_key(e), &p))
		return false;
	if (strcmp(p.kind, "Namespace") != 0 && strcmp(p.kind, "CustomResourceDefinition") != 0)
		return false;
	_cleanup_free_ char *key = sync_created_key(p.kind, p.name);
	return !key || !sync_names_contain(created, key); /* out of memory: keep it */
}

const char *sync_entry_key(const json_t *e)
{
	return json_string_value(e);
}

void sync_entry_set_add(json_t *set, const json_t *e)
{
	if (sync_entry_key(e))
		json_object_set_new(set, sync_entry_key(e), json_true());
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
	return sync_entry_key(e) && json_object_get(set, sync_entry_key(e));
}

json_t *sync_object_entry(const json_t *obj)
{
	bool identified = latch_json_get_str(obj, "apiVersion") && latch_json_get_str(obj, "kind") &&
			  sync_object_meta(obj, "name");
	if (!identified)
		return NULL;
	char *key = sync_object_key(obj);
	json_t *e = key ? json_string(key) : NULL;
	free(key);
	return e;
}

json_t *sync_entry_object(const char *key)
{
	struct sync_entry_parts p;
	if (!sync_entry_split(key, &p))
		return NULL;
	return json_pack("{s:s,s:s,s:s,s:s}", "apiVersion", p.api_version, "kind", p.kind, "namespace", p.namespace,
			 "name", p.name);
}

json_t *sync_object_from_entry(const json_t *e)
{
	struct sync_entry_parts p;
	if (!sync_entry_split(sync_entry_key(e), &p))
		return NULL;
	json_t *o = json_pack("{s:s,s:s,s:{s:s}}", "apiVersion", p.api_version, "kind", p.kind, "metadata", "name",
			      p.name);
	if (o && *p.namespace)
		json_object_set_new(json_object_get(o, "metadata"), "namespace", json_string(p.namespace));
	return o;
}

json_t *sync_entries_from_inventory(const json_t *list)
{
	json_t *entries = json_array();
	size_t i;
	json_t *item;
	json_array_foreach(entries ? list : NULL, i, item) {
		const char *api_version = latch_json_get_str(item, "apiVersion"), *kind = latch_json_get_str(item, "kind");
		const char *name = latch_json_get_str(item, "name");
		if (!api_version || !kind || !name)
			continue;
		char *key = key_of(api_version, kind, latch_json_get_str(item, "namespace"), name);
		int r = key ? json_array_append_new(entries, json_string(key)) : -1;
		free(key);
		if (r < 0) {
			json_decref(entries);
			return NULL;
		}
	}
	return entries;
}

char *sync_entries_inventory_text(const json_t *entries)
{
	struct latch_buf b = LATCH_BUF_INIT(64u << 20);
	latch_buf_append_str(&b, "[");
	size_t i;
	json_t *e;
	json_array_foreach(entries, i, e) {
		json_t *o = sync_entry_object(sync_entry_key(e));
		char *text = o ? json_dumps(o, JSON_COMPACT | JSON_SORT_KEYS) : NULL;
		if (!text)
			latch_buf_done(&b);
		else
			latch_buf_printf(&b, "%s%s", i ? "," : "", text);
		free(text);
		json_decref(o);
		if (!text)
			return NULL;
	}
	latch_buf_append_str(&b, "]");
	return latch_buf_take(&b);
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

/* holder[key] becomes the string seen first with its text. */
static void share_string(json_t *seen, json_t *holder, const char *key)
{
	json_t *v = json_object_get(holder, key);
	const char *text = json_string_value(v);
	json_t *known = text ? json_object_get(seen, text) : NULL;
	if (text && !known)
		json_object_set(seen, text, v);
	else if (known && known != v)
		json_object_set(holder, key, known);
}

void sync_objects_share_strings(json_t *objects)
{
	json_t *seen = json_object();
	size_t i;
	json_t *o;
	json_array_foreach(seen ? objects : NULL, i, o) {
		json_t *meta = json_object_get(o, "metadata");
		share_string(seen, o, "apiVersion");
		share_string(seen, o, "kind");
		share_string(seen, meta, "namespace");
		share_string(seen, meta, "_defaultNamespace");
	}
	json_decref(seen);
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

