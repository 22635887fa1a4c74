/* Smoke test that the local stack is real, end to end: a Kubernetes TokenRequest token logs
 * in to Vault through the kubernetes auth method, Vault issues a PostgreSQL role that psql
 * can log in with, and revoking the lease removes the role. Also the TLS options of the
 * HTTP client against the real servers. Needs `dev/stack up` and its .stack/env. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stack.h"

static long vault_login(struct latch_http_client *vault, const char *jwt, json_t **ret)
{
	char url[512];
	snprintf(url, sizeof(url), "%s/v1/auth/kubernetes/login", stack.vault_addr);
	json_t *body = json_pack("{s:s,s:s}", "role", "demo", "jwt", jwt);
	char *text = json_dumps(body, JSON_COMPACT);
	long status = stack_call(vault, "POST", url, text, NULL, ret);
	latch_secret_free(text);
	json_decref(body);
	return status;
}

static void test_stack__token_login_db_creds_revoke(void **state)
{
	struct latch_tls_options tls = { .ca_file = stack.ca };
	struct latch_http_client *vault = stack_client(&tls);
	char *jwt = stack_token_request("demo", "app", 600);

	json_t *login;
	assert_int_equal(vault_login(vault, jwt, &login), 200);
	const char *token = json_string_value(latch_json_path(login, "auth.client_token"));
	assert_non_null(token);
	assert_string_equal(latch_json_get_str(latch_json_path(login, "auth.metadata"), "service_account_name"), "app");
	char header[512];
	snprintf(header, sizeof(header), "X-Vault-Token: %s", token);

	char url[512];
	snprintf(url, sizeof(url), "%s/v1/database/creds/app", stack.vault_addr);
	json_t *creds;
	assert_int_equal(stack_call(vault, "GET", url, NULL, header, &creds), 200);
	const char *user = json_string_value(latch_json_path(creds, "data.username"));
	const char *password = json_string_value(latch_json_path(creds, "data.password"));
	const char *lease = latch_json_get_str(creds, "lease_id");
	assert_non_null(user);
	assert_non_null(password);
	assert_non_null(lease);
	assert_int_equal(json_integer_value(json_object_get(creds, "lease_duration")), 3600);

	assert_int_equal(stack_psql_login(user, password), 0);

	snprintf(url, sizeof(url), "%s/v1/sys/leases/revoke", stack.vault_addr);
	json_t *body = json_pack("{s:s}", "lease_id", lease);
	char *text = json_dumps(body, JSON_COMPACT);
	json_t *revoked;
	assert_int_equal(stack_call(vault, "PUT", url, text, header, &revoked), 204);
	free(text);
	json_decref(body);

	assert_int_not_equal(stack_psql_login(user, password), 0);

	explicit_bzero(header, sizeof(header));
	json_decref(creds);
	json_decref(login);
	latch_secret_free(jwt);
	latch_http_client_free(vault);
}

static void test_stack__other_service_account_is_refused(void **state)
{
	struct latch_tls_options tls = { .ca_file = stack.ca };
	struct latch_http_client *vault = stack_client(&tls);
	char *jwt = stack_token_request("demo", "other", 600);
	json_t *resp;
	assert_int_equal(vault_login(vault, jwt, &resp), 403);
	json_t *errors = json_object_get(resp, "errors");
	assert_true(json_array_size(errors) > 0);
	assert_non_null(strstr(json_string_value(json_array_get(errors, 0)), "not authorized"));
	json_decref(resp);
	latch_secret_free(jwt);
	latch_http_client_free(vault);
}

/* Why latch's tokens are for the audience "vault": such a token is no credential for the API
 * server (401), while the API server's own is (the ServiceAccount may list nothing: 403, but
 * authenticated). And a role with audience=vault refuses the API server's token. */
static void test_stack__vault_audience_token_is_useless_to_the_api_server(void **state)
{
	struct latch_tls_options tls = { .ca_file = stack.ca };
	struct latch_http_client *kube = stack_client(&tls);
	struct latch_http_client *vault = stack_client(&tls);
	char url[512], header[4096];
	snprintf(url, sizeof(url), "%s/api/v1/namespaces/demo/secrets", stack.kube_url);
	char *for_vault = stack_token_request("demo", "app", 600);
	char *for_api = stack_token_request_for("demo", "app", 600, NULL);
	json_t *resp = NULL;

	snprintf(header, sizeof(header), "Authorization: Bearer %s", for_vault);
	assert_int_equal(stack_call(kube, "GET", url, NULL, header, &resp), 401);
	json_decref(resp);
	snprintf(header, sizeof(header), "Authorization: Bearer %s", for_api);
	assert_int_equal(stack_call(kube, "GET", url, NULL, header, &resp), 403);
	json_decref(resp);

	assert_int_equal(vault_login(vault, for_api, &resp), 403);
	json_decref(resp);
	assert_int_equal(vault_login(vault, for_vault, &resp), 200);
	json_decref(resp);

	explicit_bzero(header, sizeof(header));
	latch_secret_free(for_vault);
	latch_secret_free(for_api);
	latch_http_client_free(kube);
	latch_http_client_free(vault);
}

static void test_stack__tls_server_name_and_wrong_ca(void **state)
{
	char url[512];
	snprintf(url, sizeof(url), "%s/v1/sys/health", stack.vault_addr);
	struct latch_http_request req = { .method = "GET", .url = url };
	struct latch_http_response resp = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;

	/* The certificate names vault.latch.test: verifying that name works... */
	struct latch_tls_options named = { .ca_file = stack.ca, .server_name = "vault.latch.test" };
	struct latch_http_client *c = stack_client(&named);
	assert_int_equal(latch_http_do(c, &req, &resp, &err), 0);
	assert_int_equal(resp.status, 200);
	latch_http_response_done(&resp);
	latch_http_client_free(c);

	/* ...a name it does not carry is refused, and the error says which name. */
	struct latch_tls_options wrong_name = { .ca_file = stack.ca, .server_name = "vault.example.org" };
	c = stack_client(&wrong_name);
	assert_int_equal(latch_http_do(c, &req, &resp, &err), LATCH_ETLS);
	assert_non_null(strstr(latch_error_message(&err), "'vault.example.org'"));
	latch_http_client_free(c);

	/* The system store does not know the stack's CA: refused, naming where the CA came from. */
	struct latch_tls_options system_ca = { 0 };
	c = stack_client(&system_ca);
	assert_int_equal(latch_http_do(c, &req, &resp, &err), LATCH_ETLS);
	assert_non_null(strstr(latch_error_message(&err), "system CA store"));
	latch_http_client_free(c);
	latch_error_done(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_stack__token_login_db_creds_revoke),
		cmocka_unit_test(test_stack__other_service_account_is_refused),
		cmocka_unit_test(test_stack__vault_audience_token_is_useless_to_the_api_server),
		cmocka_unit_test(test_stack__tls_server_name_and_wrong_ca),
	};
	return cmocka_run_group_tests(tests, stack_load, NULL);
}
