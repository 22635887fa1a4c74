/* The objects of a revision as latch-sync handles them: JSON objects as rendered, plus two
 * bookkeeping fields in metadata that never reach the server (_defaultNamespace, the source's
 * targetNamespace; _origin, "file@commit:line" for messages). Keys, inventory entries, the
 * apply order, and a monotonic clock. */
#pragma once

#include <stdbool.h>

#include "latch/json.h"

#define FIELD_MANAGER "latch-sync"
#define LABEL_CONFIG "latch.dev/config"
#define LABEL_SOURCE "latch.dev/source"

const char *sync_object_meta(const json_t *obj, const char *key); /* metadata[key] */
bool sync_object_is(const json_t *obj, const char *kind);
/* Namespaces and CRDs: applied first, one at a time, and pruned last. */
bool sync_object_first_stage(const json_t *obj);
const char *sync_object_default_namespace(const json_t *obj);
/* metadata.namespace, else the default one; NULL for neither. */
const char *sync_object_namespace(const json_t *obj);
const char *sync_object_origin(const json_t *obj);
/* A copy without the bookkeeping fields: what is sent to the server. */
json_t *sync_object_wire(const json_t *obj);
/* The same as compact JSON text, keys sorted (to free with latch_secret_free). */
char *sync_object_wire_text(const json_t *obj);
/* How a rendered object is held until the pass ends: its identity and bookkeeping, with
 * what is sent as text (_wire). A small Deployment as a jansson tree takes about 5 KB, as
 * text under 500 bytes. Namespaces and CRDs stay whole (a CRD's spec is read). A new
 * reference; NULL when out of memory. */
json_t *sync_object_pack(const json_t *obj);

/* "apiVersion/kind/namespace/name" (to free); _in with the namespace given. */
char *sync_object_key(const json_t *obj);
char *sync_object_key_in(const json_t *obj, const char *ns);
/* obj's live copy in live (key -> object); the namespace is the one sync_resolve_namespaces
 * settled. */
const json_t *sync_object_live(const json_t *live, const json_t *obj);

/* Inventory entries, as held: the object's key ("apps/v1/Deployment/web/api", the namespace
 * empty for a cluster-scoped object) in a JSON string, about 130 bytes where an object of four
 * fields took 800. The inventory ConfigMap keeps {apiVersion, kind, namespace, name} objects:
 * sync_entries_from_inventory and sync_entries_inventory_text convert. */
json_t *sync_object_entry(const json_t *obj); /* NULL without apiVersion, kind or name */
const char *sync_entry_key(const json_t *e);
struct sync_entry_parts {
	char buf[1024];
	const char *api_version, *kind, *namespace, *name;
};
/* false when key (NULL, or an entry's key) is not four parts (or is longer than buf). */
bool sync_entry_split(const char *key, struct sync_entry_parts *p);
json_t *sync_entry_object(const char *key);      /* {apiVersion, kind, namespace, name} */
json_t *sync_object_from_entry(const json_t *e); /* an object carrying only that identity */
/* The inventory's list (objects) as entries, dropping items without apiVersion, kind or name;
 * the entries as the inventory's JSON text (to free). NULL when out of memory. */
json_t *sync_entries_from_inventory(const json_t *list);
char *sync_entries_inventory_text(const json_t *entries);
/* A set of entries (a JSON object keyed by their identity), for lookups in O(1). */
json_t *sync_entry_set(const json_t *entries);
void sync_entry_set_add(json_t *set, const json_t *e);
bool sync_entry_set_has(const json_t *set, const json_t *e);
bool sync_names_contain(const json_t *names, const char *name);
/* How the inventory's list of what latch-sync created names a Namespace ("name") or a CRD
 * ("CustomResourceDefinition/name"). */
char *sync_created_key(const char *kind, const char *name);
/* A Namespace or CRD that latch-sync did not create: never pruned. */
bool sync_kept_unless_created(const json_t *e, const json_t *created);

/* A new array of the same objects in apply order: Namespaces, CRDs, then by kind (a fixed
 * order for what others depend on), namespace and name; NULL when out of memory. */
json_t *sync_objects_sorted(json_t *objects);

/* The objects of a revision hold a few apiVersions, kinds and namespaces: each text becomes
 * one string they share, not one per object (about 300 bytes an object). */
void sync_objects_share_strings(json_t *objects);

/* What drift is judged by (to free; NULL without either): the generation, which every
 * change of the spec moves and status writes by controllers do not, with a hash of the
 * labels; for an object without a generation, its resourceVersion. */
char *sync_object_fingerprint(const json_t *obj);
/* A short hash of the objects as they would be sent (hex, to free; NULL when out of memory).
 * Each object gets its own in its metadata (sync_object_digest), kept out of what is sent. */
char *sync_objects_hash(json_t *objects);
/* The hash of one object as it would be sent, set by sync_objects_hash; NULL before. */
const char *sync_object_digest(const json_t *obj);

