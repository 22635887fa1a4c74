/* The Kubernetes client without a server: a kubeconfig's relative files, what discovery
 * teaches, and names that cannot be part of an API path. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "latch/k8s.h"

static const char kubeconfig[] =
	"apiVersion: v1\nkind: Config\ncurrent-context: ro\n"
	"clusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443/'}}]\n"
	"contexts: [{name: ro, context: {cluster: c, user: viewer}}]\n"
	"users: [{name: viewer, user: {tokenFile: token}}]\n";

static const char inline_token[] =
	"apiVersion: v1\nkind: Config\ncurrent-context: ro\n"
	"clusters: [{name: c, cluster: {server: 'https://127.0.0.1:6443'}}]\n"
	"contexts: [{name: ro, context: {cluster: c, user: viewer}}]\n"
	"users: [{name: viewer, user: {token: t0k3n}}]\n";

/* kube-apiserver v1.36 GET /api/v1, cut to three resources. */
static const char core_v1[] =
	"{\"kind\":\"APIResourceList\",\"groupVersion\":\"v1\",\"resources\":["
	"{\"name\":\"configmaps\",\"singularName\":\"configmap\",\"namespaced\":true,\"kind\":\"ConfigMap\","
	"\"verbs\":[\"create\",\"delete\",\"get\",\"list\",\"patch\"],\"shortNames\":[\"cm\"]},"
	"{\"name\":\"namespaces\",\"singularName\":\"namespace\",\"namespaced\":false,\"kind\":\"Namespace\","
	"\"verbs\":[\"create\",\"delete\",\"get\",\"list\",\"patch\"],\"shortNames\":[\"ns\"]},"
	"{\"name\":\"pods/status\",\"singularName\":\"\",\"namespaced\":true,\"kind\":\"Pod\","
	"\"verbs\":[\"get\",\"patch\"]}]}";

static void write_text(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static struct latch_k8s *client_knowing_core_v1(void)
{
	struct latch_k8s *k = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_from_kubeconfig_text(latch_view_str(inline_token), "config", &k, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	json_t *list = NULL;
	assert_int_equal(latch_json_parse(latch_view_str(core_v1), "core_v1", &lim, &list, NULL), 0);
	assert_int_equal(latch_k8s_learn_resources(k, "v1", list), 0);
	json_decref(list);
	return k;
}

/* A borrowed clone given back is the next one borrowed (its connection open), with what the
 * client learned since: discovery and the write guard. At most LATCH_K8S_SPARES_MAX wait. */
static double no_time_left(void *arg)
{
	return 0;
}

static void test_k8s__borrowed_clones_are_reused_with_the_client_s_state(void **state)
{
	struct latch_k8s *k = NULL, *first = NULL, *again = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_from_kubeconfig_text(latch_view_str(inline_token), "config", &k, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	assert_int_equal(latch_k8s_borrow(k, &first, &err), 0);
	assert_false(latch_k8s_serves(first, "v1", "ConfigMap"));
	latch_k8s_give_back(k, first);

	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	json_t *list = NULL;
	assert_int_equal(latch_json_parse(latch_view_str(core_v1), "core_v1", &lim, &list, NULL), 0);
	assert_int_equal(latch_k8s_learn_resources(k, "v1", list), 0);
	json_decref(list);
	latch_k8s_set_write_guard(k, no_time_left, NULL);
	assert_int_equal(latch_k8s_borrow(k, &again, &err), 0);
	assert_ptr_equal(again, first);
	assert_true(latch_k8s_serves(again, "v1", "ConfigMap"));
	assert_true(latch_k8s_namespaced(again, "v1", "ConfigMap"));
	/* The guard came along: a write now is refused before any request. */
	json_t *cm = json_pack("{s:s,s:s,s:{s:s,s:s}}", "apiVersion", "v1", "kind", "ConfigMap", "metadata", "name",
			       "x", "namespace", "default");
	struct latch_k8s_apply_options ao = { .field_manager = "test", .force = true };
	assert_int_equal(latch_k8s_apply(again, cm, &ao, NULL, &err), LATCH_EFORBIDDEN);
	json_decref(cm);
	latch_error_done(&err);

	struct latch_k8s *many[LATCH_K8S_SPARES_MAX + 2];
	many[0] = again;
	for (size_t i = 1; i < LATCH_K8S_SPARES_MAX + 2; i++)
		assert_int_equal(latch_k8s_borrow(k, &many[i], &err), 0);
	for (size_t i = 0; i < LATCH_K8S_SPARES_MAX + 2; i++)
		latch_k8s_give_back(k, many[i]); /* two are freed here, the rest with k (LSan checks) */
	latch_k8s_free(k);
}

/* kubectl reads a relative tokenFile from the kubeconfig's folder, not the working one. */
static int collect_name(json_t *item, void *arg)
{
	const char *name = latch_json_get_str(json_object_get(item, "metadata"), "name");
	return json_array_append_new(arg, json_string(name ? name : "?")) < 0 ? LATCH_ENOMEM : 0;
}

/* The items a list body streams are the ones a whole parse finds, in order; its continue
 * token is kept; a body that is not such a list is refused, never half read as fine. */
static void test_k8s__list_body_streams_the_items_a_whole_parse_finds(void **state)
{
	static const char body[] =
		" {\"kind\": \"ConfigMapList\", \"apiVersion\": \"v1\",\n"
		"  \"metadata\": {\"resourceVersion\": \"471\", \"continue\": \"eyJ2Ijoi\"},\n"
		"  \"items\": [ {\"metadata\": {\"name\": \"a\", \"labels\": {\"x\": \"[{,\"}},\n"
		"    \"data\": {\"k\": \"]}\"}},\n"
		"    {\"metadata\": {\"name\": \"b\"}, \"data\": {\"n\": 12, \"t\": true}} ,\n"
		"    {\"metadata\": {\"name\": \"c\"}} ],\n"
		"  \"extra\": [1, 2.5e3, null, \"\\\"}\"] } ";
	json_t *whole = json_loads(body, 0, NULL), *names = json_array(), *meta = NULL;
	assert_non_null(whole);
	assert_int_equal(latch_k8s_list_body_each(latch_view_str(body), collect_name, names, &meta), 0);
	size_t i;
	json_t *item;
	assert_int_equal(json_array_size(names), json_array_size(json_object_get(whole, "items")));
	json_array_foreach(json_object_get(whole, "items"), i, item)
		assert_string_equal(json_string_value(json_array_get(names, i)),
				    latch_json_get_str(json_object_get(item, "metadata"), "name"));
	assert_string_equal(latch_json_get_str(meta, "continue"), "eyJ2Ijoi");
	json_decref(meta);
	json_decref(names);
	json_decref(whole);

	static const char *const broken[] = { "", "[]", "{\"items\": {}}", "{\"items\": [{\"metadata\": {}}",
					      "{\"items\": [{}] \"x\": 1}", "{\"items\": [{},]}", "{\"kind\" \"List\"}" };
	for (size_t b = 0; b < sizeof(broken) / sizeof(broken[0]); b++) {
		names = json_array();
		meta = NULL;
		if (latch_k8s_list_body_each(latch_view_str(broken[b]), collect_name, names, &meta) != LATCH_EPARSE)
			fail_msg("'%s' was read as a list", broken[b]);
		json_decref(meta);
		json_decref(names);
	}
}

static void test_k8s__token_file_is_relative_to_the_kubeconfig(void **state)
{
	char dir[] = "/tmp/latch-test-k8s-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char config[256], token[256];
	snprintf(config, sizeof(config), "%s/config", dir);
	snprintf(token, sizeof(token), "%s/token", dir);
	write_text(config, kubeconfig);
	write_text(token, "t0k3n\n");
	struct latch_k8s *k = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_from_kubeconfig(config, &k, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	assert_string_equal(latch_k8s_server(k), "https://127.0.0.1:6443");
	latch_k8s_free(k);
	assert_int_equal(unlink(token), 0);
	assert_int_equal(latch_k8s_from_kubeconfig(config, &k, &err), LATCH_ENOTFOUND);
	assert_non_null(strstr(latch_error_message(&err), token));
	latch_error_done(&err);
	assert_int_equal(unlink(config), 0);
	assert_int_equal(rmdir(dir), 0);
}

static void test_k8s__discovery_teaches_kinds_not_subresources(void **state)
{
	struct latch_k8s *k = client_knowing_core_v1();
	assert_true(latch_k8s_serves(k, "v1", "ConfigMap"));
	assert_true(latch_k8s_namespaced(k, "v1", "ConfigMap"));
	assert_true(latch_k8s_serves(k, "v1", "Namespace"));
	assert_false(latch_k8s_namespaced(k, "v1", "Namespace"));
	assert_false(latch_k8s_serves(k, "v1", "Pod"));
	char *path = NULL;
	assert_int_equal(latch_k8s_object_path(k, "v1", "ConfigMap", "demo", "web", NULL, &path, NULL, NULL), 0);
	assert_string_equal(path, "/api/v1/namespaces/demo/configmaps/web");
	free(path);
	assert_int_equal(latch_k8s_object_path(k, "v1", "Namespace", NULL, "demo", NULL, &path, NULL, NULL), 0);
	assert_string_equal(path, "/api/v1/namespaces/demo");
	free(path);
	latch_k8s_free(k);
}

/* A name from a manifest is one path segment: "../secrets/x" must not reach another resource. */
/* What kube-apiserver 1.36 answers to GET /apis with the aggregated discovery Accept type
 * (recorded from the stack's server, cut to two groups and the fields read). */
static const char aggregated_apis[] =
	"{\"kind\":\"APIGroupDiscoveryList\",\"apiVersion\":\"apidiscovery.k8s.io/v2\",\"metadata"
	"\":{},\"items\":[{\"metadata\":{\"name\":\"apps\"},\"versions\":[{\"version\":\"v1\",\"r"
	"esources\":[{\"resource\":\"deployments\",\"responseKind\":{\"group\":\"\",\"version\":\""
	"\",\"kind\":\"Deployment\"},\"scope\":\"Namespaced\",\"subresources\":[{\"subresource\":"
	"\"scale\",\"responseKind\":{\"group\":\"autoscaling\",\"version\":\"v1\",\"kind\":\"Scal"
	"e\"}},{\"subresource\":\"status\",\"responseKind\":{\"group\":\"\",\"version\":\"\",\"ki"
	"nd\":\"Deployment\"}}]}],\"freshness\":\"Current\"}]},{\"metadata\":{\"name\":\"rbac.aut"
	"horization.k8s.io\"},\"versions\":[{\"version\":\"v1\",\"resources\":[{\"resource\":\"cl"
	"usterroles\",\"responseKind\":{\"group\":\"\",\"version\":\"\",\"kind\":\"ClusterRole\"}"
	",\"scope\":\"Cluster\"}],\"freshness\":\"Current\"}]}]}";

/* Aggregated discovery teaches each group version's kinds, their scope and plural, not the
 * subresources listed with them; a legacy document is left for the legacy walk. */
static void test_k8s__aggregated_discovery_teaches_kinds_and_scope(void **state)
{
	struct latch_k8s *k = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_from_kubeconfig_text(latch_view_str(inline_token), "config", &k, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	json_t *doc = json_loads(aggregated_apis, 0, NULL);
	assert_non_null(doc);
	assert_int_equal(latch_k8s_learn_aggregated(k, doc), 0);
	assert_true(latch_k8s_serves(k, "apps/v1", "Deployment"));
	assert_true(latch_k8s_namespaced(k, "apps/v1", "Deployment"));
	assert_true(latch_k8s_serves(k, "rbac.authorization.k8s.io/v1", "ClusterRole"));
	assert_false(latch_k8s_namespaced(k, "rbac.authorization.k8s.io/v1", "ClusterRole"));
	assert_false(latch_k8s_serves(k, "autoscaling/v1", "Scale")); /* only a subresource's kind */
	char *path = NULL;
	assert_int_equal(latch_k8s_object_path(k, "apps/v1", "Deployment", "team", "web", NULL, &path, NULL, &err),
			 0);
	assert_string_equal(path, "/apis/apps/v1/namespaces/team/deployments/web");
	free(path);
	json_decref(doc);

	json_t *legacy = json_pack("{s:s,s:[]}", "kind", "APIGroupList", "groups");
	assert_int_equal(latch_k8s_learn_aggregated(k, legacy), 1);
	json_decref(legacy);
	latch_error_done(&err);
	latch_k8s_free(k);
}

static void test_k8s__names_that_would_leave_their_path_segment_are_refused(void **state)
{
	struct latch_k8s *k = client_knowing_core_v1();
	static const char *const names[] = { "../secrets/db", "..", ".", "a/b", "web?dryRun=All", "a#b", "a%2fb",
					     "a b", "" };
	for (size_t i = 0; i < sizeof(names) / sizeof(*names); i++) {
		char *path = NULL;
		struct latch_error err = LATCH_ERROR_INIT;
		assert_int_equal(latch_k8s_object_path(k, "v1", "ConfigMap", "demo", names[i], NULL, &path, NULL, &err),
				 LATCH_EINVAL);
		assert_null(path);
		char want[256];
		snprintf(want, sizeof(want), "ConfigMap 'demo/%s' cannot be a name in the API", names[i]);
		assert_non_null(strstr(latch_error_message(&err), want));
		latch_error_done(&err);
		const char *ns = names[i][0] ? names[i] : "..";
		assert_int_equal(latch_k8s_object_path(k, "v1", "ConfigMap", ns, "web", NULL, &path, NULL, NULL),
				 LATCH_EINVAL);
	}
	latch_k8s_free(k);
}

static void test_k8s__a_group_version_that_cannot_name_a_path_is_not_learned(void **state)
{
	struct latch_k8s *k = client_knowing_core_v1();
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	json_t *list = NULL;
	assert_int_equal(latch_json_parse(latch_view_str(core_v1), "core_v1", &lim, &list, NULL), 0);
	static const char *const bad[] = { "../v1", "a/b/c", "apps/", "/v1", "v1?x", "" };
	for (size_t i = 0; i < sizeof(bad) / sizeof(*bad); i++) {
		assert_int_equal(latch_k8s_learn_resources(k, bad[i], list), LATCH_EINVAL);
		assert_false(latch_k8s_serves(k, bad[i], "ConfigMap"));
	}
	assert_int_equal(latch_k8s_learn_resources(k, "latch.dev/v1", list), 0);
	assert_true(latch_k8s_serves(k, "latch.dev/v1", "ConfigMap"));
	json_decref(list);
	latch_k8s_free(k);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_k8s__list_body_streams_the_items_a_whole_parse_finds),
		cmocka_unit_test(test_k8s__token_file_is_relative_to_the_kubeconfig),
		cmocka_unit_test(test_k8s__borrowed_clones_are_reused_with_the_client_s_state),
		cmocka_unit_test(test_k8s__discovery_teaches_kinds_not_subresources),
		cmocka_unit_test(test_k8s__aggregated_discovery_teaches_kinds_and_scope),
		cmocka_unit_test(test_k8s__names_that_would_leave_their_path_segment_are_refused),
		cmocka_unit_test(test_k8s__a_group_version_that_cannot_name_a_path_is_not_learned),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
