/* latch-sync's handling of a revision's objects without a cluster: apply order, keys,
 * fingerprints for drift, the rendered hash, what a diff prints, and which Namespaces and CRDs
 * a prune may touch. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cluster.h"
#include "diff.h"
#include "objects.h"

static json_t *parse(const char *text)
{
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	json_t *v = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_json_parse(latch_view_str(text), "test", &lim, &v, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	return v;
}

/* "kind namespace/name" of each object, one per line. */
static char *names(const json_t *objects)
{
	struct latch_buf b = LATCH_BUF_INIT(1u << 16);
	size_t i;
	json_t *o;
	json_array_foreach(objects, i, o) {
		const char *ns = sync_object_meta(o, "namespace");
		latch_buf_printf(&b, "%s %s%s%s\n", latch_json_get_str(o, "kind"), ns ? ns : "", ns ? "/" : "",
				 sync_object_meta(o, "name"));
	}
	char *s = latch_buf_take(&b);
	assert_non_null(s);
	return s;
}

static void test_sync_objects__apply_order_puts_what_others_need_first(void **state)
{
	json_t *objects = parse("["
		"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\",\"namespace\":\"b\"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"z\",\"namespace\":\"a\"}},"
		"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"api\",\"namespace\":\"b\"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"ServiceAccount\",\"metadata\":{\"name\":\"app\",\"namespace\":\"a\"}},"
		"{\"apiVersion\":\"apiextensions.k8s.io/v1\",\"kind\":\"CustomResourceDefinition\","
		"\"metadata\":{\"name\":\"widgets.example.org\"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"b\"}},"
		"{\"apiVersion\":\"batch/v1\",\"kind\":\"CronJob\",\"metadata\":{\"name\":\"nightly\",\"namespace\":\"a\""
			"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"a\"}}]");
	json_t *sorted = sync_objects_sorted(objects);
	assert_non_null(sorted);
	char *order = names(sorted);
	assert_string_equal(order, "Namespace a\nNamespace b\nCustomResourceDefinition widgets.example.org\n"
				   "ServiceAccount a/app\nConfigMap a/z\nCronJob a/nightly\nDeployment b/api\n"
				   "Deployment b/web\n");
	assert_true(sync_object_first_stage(json_array_get(sorted, 2)));
	assert_false(sync_object_first_stage(json_array_get(sorted, 3)));
	free(order);
	json_decref(sorted);
	json_decref(objects);
}

/* An object without a namespace takes the source's targetNamespace; its key and its
 * inventory entry's name it the same way. */
static void test_sync_objects__keys_and_inventory_entries_agree(void **state)
{
	json_t *cm = parse("{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
			   "\"metadata\":{\"name\":\"settings\",\"_defaultNamespace\":\"team-a\",\"_origin\":\"a.yaml@1:1\"}}");
	json_t *ns = parse("{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"metadata\":{\"name\":\"team-a\"}}");
	char *key = sync_object_key(cm), *ns_key = sync_object_key(ns);
	assert_string_equal(key, "v1/ConfigMap/team-a/settings");
	assert_string_equal(ns_key, "v1/Namespace//team-a");
	json_t *entry = sync_object_entry(cm);
	assert_string_equal(sync_entry_key(entry), key);
	json_t *set = json_object();
	sync_entry_set_add(set, entry);
	assert_true(sync_entry_set_has(set, entry));
	json_t *other = sync_object_entry(ns);
	assert_false(sync_entry_set_has(set, other));
	/* What is sent carries none of latch-sync's bookkeeping. */
	json_t *wire = sync_object_wire(cm);
	assert_null(json_object_get(json_object_get(wire, "metadata"), "_origin"));
	assert_null(json_object_get(json_object_get(wire, "metadata"), "_defaultNamespace"));
	assert_string_equal(sync_object_meta(wire, "name"), "settings");
	json_decref(wire);
	json_decref(other);
	json_decref(set);
	json_decref(entry);
	free(key);
	free(ns_key);
	json_decref(cm);
	json_decref(ns);
}

/* Drift is judged by the generation and the labels: a controller's status write is not drift,
 * a hand edit of the spec (a new generation) or of a label is. */
static void test_sync_objects__fingerprint_moves_with_spec_and_labels_not_status(void **state)
{
	json_t *live = parse("{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\","
			     "\"namespace\":\"a\",\"generation\":3,\"resourceVersion\":\"100\",\"labels\":{\"app\":\"web\"}},"
			     "\"status\":{\"readyReplicas\":1}}");
	char *before = sync_object_fingerprint(live);
	assert_non_null(before);
	assert_int_equal(before[0], 'g');
	assert_memory_equal(before, "g3-", 3);

	json_t *status = json_object_get(live, "status");
	json_object_set_new(status, "readyReplicas", json_integer(2));
	json_object_set_new(json_object_get(live, "metadata"), "resourceVersion", json_string("101"));
	char *after_status = sync_object_fingerprint(live);
	assert_string_equal(after_status, before);

	json_object_set_new(json_object_get(json_object_get(live, "metadata"), "labels"), "app", json_string("edit"
		"ed"));
	char *after_label = sync_object_fingerprint(live);
	assert_string_not_equal(after_label, before);

	json_object_set_new(json_object_get(live, "metadata"), "generation", json_integer(4));
	char *after_spec = sync_object_fingerprint(live);
	assert_memory_equal(after_spec, "g4-", 3);

	/* No generation (a ConfigMap): every write counts. */
	json_t *cm = parse("{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\",\"resourceVersion\":\"7\"}}");
	char *cm_print = sync_object_fingerprint(cm);
	assert_string_equal(cm_print, "r7");
	json_t *bare = parse("{\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"c\"}}");
	assert_null(sync_object_fingerprint(bare));
	free(before);
	free(after_status);
	free(after_label);
	free(after_spec);
	free(cm_print);
	json_decref(bare);
	json_decref(cm);
	json_decref(live);
}

/* The rendered hash tells a config change on the same commit: it follows what is sent, not
 * where it came from. */
static void test_sync_objects__rendered_hash_follows_what_is_sent(void **state)
{
	json_t *a = parse("[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
			  "\"metadata\":{\"name\":\"c\",\"_origin\":\"x.yaml@1:1\"},\"data\":{\"k\":\"v\"}}]");
	json_t *moved = parse("[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
			      "\"metadata\":{\"name\":\"c\",\"_origin\":\"y.yaml@2:9\"},\"data\":{\"k\":\"v\"}}]");
	json_t *changed = parse("[{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
				"\"metadata\":{\"name\":\"c\",\"_origin\":\"x.yaml@1:1\"},\"data\":{\"k\":\"w\"}}]");
	char *ha = sync_objects_hash(a), *hm = sync_objects_hash(moved), *hc = sync_objects_hash(changed);
	assert_int_equal(strlen(ha), 16);
	assert_string_equal(ha, hm);
	assert_string_not_equal(ha, hc);
	free(ha);
	free(hm);
	free(hc);
	json_decref(a);
	json_decref(moved);
	json_decref(changed);
}

/* Drifted: what the live copy's fingerprint says changed since the last pass, or is gone. */
static void test_sync_objects__drifted_objects_are_the_changed_and_the_gone(void **state)
{
	json_t *objects = parse("["
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"same\",\"namespace\":\"a\"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"edited\",\"namespace\":\"a\"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"deleted\",\"namespace\":\"a\"}}]");
	json_t *recorded = parse("{\"v1/ConfigMap/a/same\":\"r10\",\"v1/ConfigMap/a/edited\":\"r11\","
				 "\"v1/ConfigMap/a/deleted\":\"r12\"}");
	json_t *live = parse("{"
			     "\"v1/ConfigMap/a/same\":{\"metadata\":{\"name\":\"same\",\"resourceVersion\":\"10\"}},"
			     "\"v1/ConfigMap/a/edited\":{\"metadata\":{\"name\":\"edited\",\"resourceVersion\":\"15\"}}}");
	json_t *drifted = sync_changed_objects(objects, NULL, recorded, live);
	char *list = names(drifted);
	assert_string_equal(list, "ConfigMap a/edited\nConfigMap a/deleted\n");
	free(list);
	json_decref(drifted);
	json_decref(objects);
	json_decref(recorded);
	json_decref(live);
}

/* Changed in the revision: an object whose digest is not the one recorded when it was last
 * applied, or that has none recorded; live copies given as fingerprints, as a no-op lists them. */
static void test_sync_objects__changed_objects_are_the_edited_and_the_new(void **state)
{
	json_t *objects = parse("["
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"same\",\"namespace\":\"a\"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"edited\",\"namespace\":\"a\"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"new\",\"namespace\":\"a\"}}]");
	free(sync_objects_hash(objects));
	const char *same = sync_object_digest(json_array_get(objects, 0));
	assert_non_null(same);
	assert_string_not_equal(same, sync_object_digest(json_array_get(objects, 1)));
	json_t *digests = json_pack("{s:s,s:s}", "v1/ConfigMap/a/same", same, "v1/ConfigMap/a/edited",
				    "0000000000000000");
	static const char fingerprints[] = "{\"v1/ConfigMap/a/same\":\"r10\",\"v1/ConfigMap/a/edited\":\"r11\","
					   "\"v1/ConfigMap/a/new\":\"r12\"}";
	json_t *recorded = parse(fingerprints), *live = parse(fingerprints);
	json_t *changed = sync_changed_objects(objects, digests, recorded, live);
	char *list = names(changed);
	assert_string_equal(list, "ConfigMap a/edited\nConfigMap a/new\n");
	free(list);
	json_decref(changed);
	changed = sync_changed_objects(objects, NULL, recorded, live);
	assert_int_equal(json_array_size(changed), 0);
	json_decref(changed);
	json_t *wire = sync_object_wire(json_array_get(objects, 0));
	assert_null(json_object_get(json_object_get(wire, "metadata"), "_digest"));
	json_decref(wire);
	json_decref(digests);
	json_decref(objects);
	json_decref(recorded);
	json_decref(live);
}

/* latch-sync diff: + new, ~ changed with the fields that change, - pruned; an object the dry
 * run would leave as it is, and server-set fields, print nothing. */
static void test_sync_objects__diff_names_objects_and_fields(void **state)
{
	json_t *objects = parse("["
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"new\",\"namespace\":\"a\"}},"
		"{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\",\"metadata\":{\"name\":\"web\",\"namespace\":\"a\"}},"
		"{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\",\"metadata\":{\"name\":\"same\",\"namespace\":\"a\"}}]");
	json_t *live = parse("{"
		"\"apps/v1/Deployment/a/web\":{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\","
		"\"metadata\":{\"name\":\"web\",\"namespace\":\"a\",\"resourceVersion\":\"5\"},"
		"\"spec\":{\"replicas\":2,\"template\":{\"spec\":{\"containers\":[{\"image\":\"web:1\"}]}}},"
		"\"status\":{\"x\":1}},"
		"\"v1/ConfigMap/a/same\":{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
		"\"metadata\":{\"name\":\"same\",\"namespace\":\"a\",\"resourceVersion\":\"6\"},\"data\":{\"k\":\"v\"}}}");
	json_t *would_store = parse("{"
		"\"apps/v1/Deployment/a/web\":{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\","
		"\"metadata\":{\"name\":\"web\",\"namespace\":\"a\",\"resourceVersion\":\"7\",\"generation\":2},"
		"\"spec\":{\"replicas\":3,\"template\":{\"spec\":{\"containers\":[{\"image\":\"web:2\"}]}}},"
		"\"status\":{\"x\":2}},"
		"\"v1/ConfigMap/a/same\":{\"apiVersion\":\"v1\",\"kind\":\"ConfigMap\","
		"\"metadata\":{\"name\":\"same\",\"namespace\":\"a\",\"resourceVersion\":\"8\"},\"data\":{\"k\":\"v\"}}}");
	json_t *gone = parse("[\"v1/Secret/a/old\"]");
	char *text = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&text, &len);
	assert_non_null(out);
	size_t changes = sync_diff_print(out, objects, would_store, live, gone);
	fclose(out);
	assert_int_equal(changes, 3);
	assert_string_equal(text, "+ v1 ConfigMap a/new\n"
				  "~ apps/v1 Deployment a/web: spec.replicas, spec.template.spec.containers\n"
				  "- v1 Secret a/old: pruned\n");
	free(text);
	json_decref(objects);
	json_decref(live);
	json_decref(would_store);
	json_decref(gone);
}

/* Entries are held as keys and written as the inventory ConfigMap has always held them:
 * objects of four fields, an item without apiVersion, kind or name dropped on the way in. */
static void test_sync_objects__inventory_entries_read_and_written_as_the_configmap_holds_them(void **state)
{
	json_t *listed = parse("[{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\","
			       "\"name\":\"api\",\"namespace\":\"b\"},"
			       "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"name\":\"team-a\",\"namespace\":\"\"},"
			       "{\"kind\":\"ConfigMap\",\"name\":\"no-version\"},"
			       "{\"apiVersion\":\"example.org/v1\",\"kind\":\"Widget\",\"name\":\"w\"}]");
	json_t *entries = sync_entries_from_inventory(listed);
	assert_int_equal(json_array_size(entries), 3);
	assert_string_equal(sync_entry_key(json_array_get(entries, 0)), "apps/v1/Deployment/b/api");
	assert_string_equal(sync_entry_key(json_array_get(entries, 1)), "v1/Namespace//team-a");
	assert_string_equal(sync_entry_key(json_array_get(entries, 2)), "example.org/v1/Widget//w");
	char *text = sync_entries_inventory_text(entries);
	assert_string_equal(text, "[{\"apiVersion\":\"apps/v1\",\"kind\":\"Deployment\","
				  "\"name\":\"api\",\"namespace\":\"b\"},"
				  "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\",\"name\":\"team-a\",\"namespace\":\"\"},"
				  "{\"apiVersion\":\"example.org/v1\",\"kind\":\"Widget\",\"name\":\"w\",\"namespace\":\"\"}]");
	json_t *deployment = sync_object_from_entry(json_array_get(entries, 0));
	assert_string_equal(sync_object_meta(deployment, "namespace"), "b");
	assert_string_equal(sync_object_meta(deployment, "name"), "api");
	assert_string_equal(latch_json_get_str(deployment, "apiVersion"), "apps/v1");
	json_t *ns = sync_object_from_entry(json_array_get(entries, 1));
	assert_null(sync_object_meta(ns, "namespace"));
	json_t *none = json_array(), *broken = json_string("v1/ConfigMap");
	char *empty = sync_entries_inventory_text(none);
	assert_string_equal(empty, "[]");
	assert_null(sync_entry_object(json_string_value(broken)));
	free(empty);
	free(text);
	json_decref(broken);
	json_decref(none);
	json_decref(ns);
	json_decref(deployment);
	json_decref(entries);
	json_decref(listed);
}

/* A prune deletes a Namespace or CRD only when this source created it. */
static void test_sync_objects__prune_keeps_namespaces_and_crds_it_did_not_create(void **state)
{
	json_t *created = parse("[\"team-a\",\"CustomResourceDefinition/widgets.example.org\"]");
	json_t *ours = json_string("v1/Namespace//team-a");
	json_t *theirs = json_string("v1/Namespace//kube-system");
	json_t *crd = json_string("apiextensions.k8s.io/v1/CustomResourceDefinition//widgets.example.org");
	json_t *other_crd = json_string("apiextensions.k8s.io/v1/CustomResourceDefinition//gadgets.example.org");
	json_t *cm = json_string("v1/ConfigMap/team-a/c");
	assert_false(sync_kept_unless_created(ours, created));
	assert_true(sync_kept_unless_created(theirs, created));
	assert_false(sync_kept_unless_created(crd, created));
	assert_true(sync_kept_unless_created(other_crd, created));
	assert_false(sync_kept_unless_created(cm, created));
	json_decref(created);
	json_decref(ours);
	json_decref(theirs);
	json_decref(crd);
	json_decref(other_crd);
	json_decref(cm);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sync_objects__apply_order_puts_what_others_need_first),
		cmocka_unit_test(test_sync_objects__keys_and_inventory_entries_agree),
		cmocka_unit_test(test_sync_objects__fingerprint_moves_with_spec_and_labels_not_status),
		cmocka_unit_test(test_sync_objects__rendered_hash_follows_what_is_sent),
		cmocka_unit_test(test_sync_objects__drifted_objects_are_the_changed_and_the_gone),
		cmocka_unit_test(test_sync_objects__changed_objects_are_the_edited_and_the_new),
		cmocka_unit_test(test_sync_objects__diff_names_objects_and_fields),
		cmocka_unit_test(test_sync_objects__inventory_entries_read_and_written_as_the_configmap_holds_them),
		cmocka_unit_test(test_sync_objects__prune_keeps_namespaces_and_crds_it_did_not_create),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
