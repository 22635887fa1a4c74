/* The Kubernetes client against the stack's real kube-apiserver, connected the way a user's
 * kubeconfig says (client certificate and CA as *-data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>

#include "latch/k8s.h"
#include "stack.h"

static struct latch_k8s *connect(void)
{
	struct latch_k8s *k = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_from_kubeconfig(getenv("KUBECONFIG"), &k, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	return k;
}

static json_t *config_map(const char *name, const char *value)
{
	return json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s}}", "apiVersion", "v1", "kind", "ConfigMap", "metadata", "name", name,
			 "namespace", "demo", "data", "key", value);
}

static void test_k8s__apply_get_delete(void **state)
{
	struct latch_k8s *k = connect();
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *cm = config_map("latch-k8s-e2e", "one");
	struct latch_k8s_apply_options dry = { .field_manager = "latch-e2e", .force = true, .dry_run = true };
	json_t *out = NULL;
	assert_int_equal(latch_k8s_apply(k, cm, &dry, &out, &err), 0);
	assert_string_equal(latch_json_get_str(json_object_get(out, "data"), "key"), "one");
	json_decref(out);
	/* A dry run stores nothing. */
	assert_int_equal(latch_k8s_get(k, "v1", "ConfigMap", "demo", "latch-k8s-e2e", &out, &err), LATCH_ENOTFOUND);

	struct latch_k8s_apply_options real = { .field_manager = "latch-e2e", .force = true };
	assert_int_equal(latch_k8s_apply(k, cm, &real, NULL, &err), 0);
	assert_int_equal(latch_k8s_get(k, "v1", "ConfigMap", "demo", "latch-k8s-e2e", &out, &err), 0);
	const char *rv = latch_json_get_str(json_object_get(out, "metadata"), "resourceVersion");
	char *first_rv = strdup(rv);
	json_decref(out);

	/* Applying the same content again changes nothing: the resourceVersion stays. */
	assert_int_equal(latch_k8s_apply(k, cm, &real, &out, &err), 0);
	assert_string_equal(latch_json_get_str(json_object_get(out, "metadata"), "resourceVersion"), first_rv);
	json_decref(out);

	assert_int_equal(latch_k8s_delete(k, "v1", "ConfigMap", "demo", "latch-k8s-e2e", &err), 0);
	assert_int_equal(latch_k8s_delete(k, "v1", "ConfigMap", "demo", "latch-k8s-e2e", &err), 0); /* gone is fine */
	assert_int_equal(latch_k8s_get(k, "v1", "ConfigMap", "demo", "latch-k8s-e2e", &out, &err), LATCH_ENOTFOUND);
	free(first_rv);
	json_decref(cm);
	latch_error_done(&err);
	latch_k8s_free(k);
}

static void test_k8s__discovery_maps_kinds_to_paths(void **state)
{
	struct latch_k8s *k = connect();
	struct latch_error err = LATCH_ERROR_INIT;
	char *path = NULL;
	bool namespaced = false;
	assert_int_equal(latch_k8s_object_path(k, "apps/v1", "Deployment", NULL, "web", "team", &path, &namespaced, &err), 0);
	assert_string_equal(path, "/apis/apps/v1/namespaces/team/deployments/web");
	assert_true(namespaced);
	free(path);
	assert_int_equal(latch_k8s_object_path(k, "rbac.authorization.k8s.io/v1", "ClusterRole", "ignored", "r", NULL, &path, &namespaced, &err), 0);
	assert_string_equal(path, "/apis/rbac.authorization.k8s.io/v1/clusterroles/r");
	assert_false(namespaced);
	free(path);
	assert_int_equal(latch_k8s_object_path(k, "example.com/v1", "Widget", "demo", "w", NULL, &path, NULL, &err), LATCH_ENOTFOUND);
	assert_non_null(strstr(latch_error_message(&err), "serves no kind Widget in example.com/v1"));
	latch_error_done(&err);
	latch_k8s_free(k);
}

static void test_k8s__server_refusal_names_object_and_message(void **state)
{
	struct latch_k8s *k = connect();
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *bad = json_pack("{s:s,s:s,s:{s:s,s:s},s:[s]}", "apiVersion", "v1", "kind", "ConfigMap", "metadata", "name",
				"Bad_Name", "namespace", "demo", "data", "not-a-map");
	struct latch_k8s_apply_options dry = { .field_manager = "latch-e2e", .force = true, .dry_run = true };
	int r = latch_k8s_apply(k, bad, &dry, NULL, &err);
	assert_true(r == LATCH_EINVAL || r == LATCH_EHTTP);
	assert_non_null(strstr(latch_error_message(&err), "ConfigMap 'demo/Bad_Name' (dry run): the API server answered"));
	json_decref(bad);
	latch_error_done(&err);
	latch_k8s_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_k8s__apply_get_delete),
		cmocka_unit_test(test_k8s__discovery_maps_kinds_to_paths),
		cmocka_unit_test(test_k8s__server_refusal_names_object_and_message),
	};
	return cmocka_run_group_tests(tests, stack_load, NULL);
}
