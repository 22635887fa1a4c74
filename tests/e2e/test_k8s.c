/* The Kubernetes client against the stack's real kube-apiserver, connected the way a user's
 * kubeconfig says (client certificate and CA as *-data). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

static struct latch_http_client *admin_client(void)
{
	struct latch_tls_options tls = { .ca_file = stack.ca, .client_cert_file = stack.admin_cert,
					 .client_key_file = stack.admin_key };
	return stack_client(&tls);
}

/* POST body to url, which must create (201); returns the answer's field at path (to free). */
static char *created_field(struct latch_http_client *admin, const char *url, const char *body,
			   const char *path)
{
	json_t *resp = NULL;
	long status = stack_call(admin, "POST", url, body, NULL, &resp);
	if (status != 201)
		fail_msg("POST %s answered %ld", url, status);
	char *value = strdup(json_string_value(latch_json_path(resp, path)));
	json_decref(resp);
	return value;
}

/* A Secret in demo; returns its uid (caller frees). */
static char *create_secret(struct latch_http_client *admin, const char *name)
{
	char url[512], body[512];
	snprintf(url, sizeof(url), "%s/api/v1/namespaces/demo/secrets", stack.kube_url);
	snprintf(body, sizeof(body), "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"metadata\":{\"name\":\"%s\"}}",
		 name);
	return created_field(admin, url, body, "metadata.uid");
}

/* A token of ServiceAccount demo/app that holds only while Secret demo/<secret> exists, as a
 * projected token holds only while its pod does. */
static char *token_bound_to_secret(struct latch_http_client *admin, const char *secret)
{
	char *uid = create_secret(admin, secret);
	char url[512], body[1024];
	snprintf(url, sizeof(url), "%s/api/v1/namespaces/demo/serviceaccounts/app/token", stack.kube_url);
	snprintf(body, sizeof(body),
		 "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\","
		 "\"spec\":{\"expirationSeconds\":3600,\"boundObjectRef\":"
		 "{\"apiVersion\":\"v1\",\"kind\":\"Secret\",\"name\":\"%s\",\"uid\":\"%s\"}}}",
		 secret, uid);
	free(uid);
	return created_field(admin, url, body, "status.token");
}

static void delete_secret(struct latch_http_client *admin, const char *name)
{
	char url[512];
	snprintf(url, sizeof(url), "%s/api/v1/namespaces/demo/secrets/%s", stack.kube_url, name);
	json_t *resp = NULL;
	long status = stack_call(admin, "DELETE", url, NULL, NULL, &resp);
	json_decref(resp);
	if (status != 200 && status != 404)
		fail_msg("deleting Secret demo/%s answered %ld", name, status);
}

static const char *const self_review =
	"{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"SelfSubjectReview\"}";

/* Whether the API server takes token: 201, or 401 when it does not (0: no answer). c has no
 * client certificate, which the API server would take first. */
static long self_review_as(struct latch_http_client *c, const char *token)
{
	char url[512], header[4096];
	snprintf(url, sizeof(url), "%s/apis/authentication.k8s.io/v1/selfsubjectreviews", stack.kube_url);
	snprintf(header, sizeof(header), "Authorization: Bearer %s", token);
	/* A connection that fails is asked again by the caller's loop: 0. */
	const char *headers[2] = { "Content-Type: application/json", header };
	struct latch_http_request req = { .method = "POST", .url = url, .headers = headers, .n_headers = 2,
					  .body = latch_view_str(self_review) };
	struct latch_http_response resp = { 0 };
	long status = latch_http_do(c, &req, &resp, NULL) == 0 ? resp.status : 0;
	latch_http_response_done(&resp);
	return status;
}

/* The kubelet rotates a pod's token file; the old token stops holding once its pod is gone (or
 * it expires). A client reading the file once would fail from then on. */
static void test_k8s__a_rotated_token_file_is_read_again(void **state)
{
	struct latch_http_client *admin = admin_client();
	delete_secret(admin, "latch-token-a");
	delete_secret(admin, "latch-token-b");
	char *token_a = token_bound_to_secret(admin, "latch-token-a");
	char *token_b = token_bound_to_secret(admin, "latch-token-b");
	char *dir = stack_mkdtemp("latch-token");
	char token_file[1024], kubeconfig_file[1024], kubeconfig[4096];
	snprintf(token_file, sizeof(token_file), "%s/token", dir);
	snprintf(kubeconfig_file, sizeof(kubeconfig_file), "%s/kubeconfig", dir);
	snprintf(kubeconfig, sizeof(kubeconfig),
		 "apiVersion: v1\nkind: Config\ncurrent-context: sa\n"
		 "clusters: [{name: stack, cluster: {server: '%s', certificate-authority: '%s'}}]\n"
		 "users: [{name: app, user: {tokenFile: token}}]\n"
		 "contexts: [{name: sa, context: {cluster: stack, user: app}}]\n", stack.kube_url, stack.ca);
	stack_write_file(token_file, token_a);
	stack_write_file(kubeconfig_file, kubeconfig);

	struct latch_k8s *k = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_k8s_from_kubeconfig(kubeconfig_file, &k, &err), 0);
	long status = 0;
	json_t *out = NULL;
	assert_int_equal(latch_k8s_request(k, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", NULL,
					   self_review, &status, &out, &err), 0);
	assert_int_equal(status, 201);
	assert_string_equal(json_string_value(latch_json_path(out, "status.userInfo.username")),
			    "system:serviceaccount:demo:app");
	json_decref(out);

	/* The rotation: the file holds B, then A's Secret goes and A with it. */
	stack_write_file(token_file, token_b);
	delete_secret(admin, "latch-token-a");
	/* The API server keeps a token it took for 10 s before it looks at it again. One
	 * connection for all the asking. */
	struct latch_tls_options no_cert = { .ca_file = stack.ca };
	struct latch_http_client *anonymous = stack_client(&no_cert);
	double deadline = stack_now() + 20;
	while (self_review_as(anonymous, token_a) != 401 && stack_now() < deadline)
		usleep(250 * 1000);
	assert_int_equal(self_review_as(anonymous, token_a), 401);
	latch_http_client_free(anonymous);

	assert_int_equal(latch_k8s_request(k, "POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", NULL,
					   self_review, &status, &out, &err), 0);
	assert_int_equal(status, 201);
	assert_string_equal(json_string_value(latch_json_path(out, "status.userInfo.username")),
			    "system:serviceaccount:demo:app");
	json_decref(out);

	latch_k8s_free(k);
	latch_error_done(&err);
	delete_secret(admin, "latch-token-b");
	stack_rm_rf(dir);
	free(dir);
	free(token_a);
	free(token_b);
	latch_http_client_free(admin);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_k8s__apply_get_delete),
		cmocka_unit_test(test_k8s__discovery_maps_kinds_to_paths),
		cmocka_unit_test(test_k8s__server_refusal_names_object_and_message),
		cmocka_unit_test(test_k8s__a_rotated_token_file_is_read_again),
	};
	return cmocka_run_group_tests(tests, stack_load, NULL);
}
