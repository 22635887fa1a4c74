/* Smoke test that the local stack is real, end to end: a Kubernetes TokenRequest token logs
 * in to Vault through the kubernetes auth method, Vault issues a PostgreSQL role that psql
 * can log in with, and revoking the lease removes the role. Also the TLS options of the
 * HTTP client against the real servers. Needs `dev/stack up` and its .stack/env. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <fcntl.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "latch/http.h"
#include "latch/json.h"

extern char **environ;

struct stack {
	const char *kube_url;
	const char *vault_addr;
	const char *ca;
	char admin_cert[512];
	char admin_key[512];
	const char *pg_host;
	const char *pg_port;
	const char *pg_db;
};

static struct stack stack;

static const char *need_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		fail_msg("%s is not set: run the e2e suite with the stack's environment (. .stack/env)", name);
	return v;
}

static int load_stack(void **state)
{
	stack.kube_url = need_env("LATCH_KUBE_URL");
	stack.vault_addr = need_env("VAULT_ADDR");
	stack.ca = need_env("LATCH_STACK_CA");
	const char *dir = need_env("LATCH_STACK_DIR");
	snprintf(stack.admin_cert, sizeof(stack.admin_cert), "%s/pki/admin.crt", dir);
	snprintf(stack.admin_key, sizeof(stack.admin_key), "%s/pki/admin.key", dir);
	stack.pg_host = need_env("LATCH_PG_HOST");
	stack.pg_port = need_env("LATCH_PG_PORT");
	stack.pg_db = need_env("LATCH_PG_DB");
	return 0;
}

static struct latch_http_client *client(const struct latch_tls_options *tls)
{
	struct latch_http_options o = LATCH_HTTP_OPTIONS_DEFAULT;
	o.tls = *tls;
	o.retry.max_attempts = 1;
	struct latch_http_client *c = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_http_client_new(&o, &c, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	return c;
}

/* method url body [header] -> status, parsed JSON body (NULL when empty) */
static long call(struct latch_http_client *c, const char *method, const char *url, const char *body,
		 const char *header, json_t **ret_json)
{
	struct latch_http_request req = { .method = method, .url = url, .headers = &header, .n_headers = header ? 1 : 0 };
	const char *ct = "Content-Type: application/json";
	const char *headers[2] = { ct, header };
	req.headers = headers;
	req.n_headers = header ? 2 : 1;
	if (body)
		req.body = latch_view_str(body);
	struct latch_http_response resp = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_http_do(c, &req, &resp, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	*ret_json = NULL;
	if (resp.body.len) {
		struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
		if (latch_json_parse(latch_buf_view(&resp.body), url, &lim, ret_json, &err) < 0)
			fail_msg("%s", latch_error_message(&err));
	}
	long status = resp.status;
	latch_http_response_done(&resp);
	return status;
}

static char *token_request(const char *ns, const char *sa)
{
	struct latch_tls_options tls = { .ca_file = stack.ca, .client_cert_file = stack.admin_cert,
					 .client_key_file = stack.admin_key };
	struct latch_http_client *kube = client(&tls);
	char url[512];
	snprintf(url, sizeof(url), "%s/api/v1/namespaces/%s/serviceaccounts/%s/token", stack.kube_url, ns, sa);
	json_t *resp;
	long status = call(kube, "POST", url,
			   "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\",\"spec\":{\"expirationSeconds\":600}}",
			   NULL, &resp);
	assert_int_equal(status, 201);
	const char *token = json_string_value(latch_json_path(resp, "status.token"));
	assert_non_null(token);
	char *copy = strdup(token);
	json_decref(resp);
	latch_http_client_free(kube);
	return copy;
}

static long vault_login(struct latch_http_client *vault, const char *jwt, json_t **ret)
{
	char url[512];
	snprintf(url, sizeof(url), "%s/v1/auth/kubernetes/login", stack.vault_addr);
	json_t *body = json_pack("{s:s,s:s}", "role", "demo", "jwt", jwt);
	char *text = json_dumps(body, JSON_COMPACT);
	long status = call(vault, "POST", url, text, NULL, ret);
	latch_secret_free(text);
	json_decref(body);
	return status;
}

/* psql as user/password; returns its exit status. The password goes in the child's env. */
static int psql_login(const char *user, const char *password)
{
	char pgpass[512];
	snprintf(pgpass, sizeof(pgpass), "PGPASSWORD=%s", password);
	char *envp[] = { pgpass, "PGCONNECT_TIMEOUT=5", "PATH=/usr/bin:/bin", NULL };
	char *argv[] = { "psql", "-X", "-w", "-q", "-h", (char *)stack.pg_host, "-p", (char *)stack.pg_port,
			 "-U", (char *)user, "-d", (char *)stack.pg_db, "-tAc", "SELECT current_user", NULL };
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, "/dev/null", O_WRONLY, 0);
	posix_spawn_file_actions_addopen(&fa, STDERR_FILENO, "/dev/null", O_WRONLY, 0);
	pid_t pid;
	assert_int_equal(posix_spawnp(&pid, "psql", &fa, NULL, argv, envp), 0);
	posix_spawn_file_actions_destroy(&fa);
	explicit_bzero(pgpass, sizeof(pgpass));
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static void test_stack__token_login_db_creds_revoke(void **state)
{
	struct latch_tls_options tls = { .ca_file = stack.ca };
	struct latch_http_client *vault = client(&tls);
	char *jwt = token_request("demo", "app");

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
	assert_int_equal(call(vault, "GET", url, NULL, header, &creds), 200);
	const char *user = json_string_value(latch_json_path(creds, "data.username"));
	const char *password = json_string_value(latch_json_path(creds, "data.password"));
	const char *lease = latch_json_get_str(creds, "lease_id");
	assert_non_null(user);
	assert_non_null(password);
	assert_non_null(lease);
	assert_int_equal(json_integer_value(json_object_get(creds, "lease_duration")), 3600);

	assert_int_equal(psql_login(user, password), 0);

	snprintf(url, sizeof(url), "%s/v1/sys/leases/revoke", stack.vault_addr);
	json_t *body = json_pack("{s:s}", "lease_id", lease);
	char *text = json_dumps(body, JSON_COMPACT);
	json_t *revoked;
	assert_int_equal(call(vault, "PUT", url, text, header, &revoked), 204);
	free(text);
	json_decref(body);

	assert_int_not_equal(psql_login(user, password), 0);

	explicit_bzero(header, sizeof(header));
	json_decref(creds);
	json_decref(login);
	latch_secret_free(jwt);
	latch_http_client_free(vault);
}

static void test_stack__other_service_account_is_refused(void **state)
{
	struct latch_tls_options tls = { .ca_file = stack.ca };
	struct latch_http_client *vault = client(&tls);
	char *jwt = token_request("demo", "other");
	json_t *resp;
	assert_int_equal(vault_login(vault, jwt, &resp), 403);
	json_t *errors = json_object_get(resp, "errors");
	assert_true(json_array_size(errors) > 0);
	assert_non_null(strstr(json_string_value(json_array_get(errors, 0)), "not authorized"));
	json_decref(resp);
	latch_secret_free(jwt);
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
	struct latch_http_client *c = client(&named);
	assert_int_equal(latch_http_do(c, &req, &resp, &err), 0);
	assert_int_equal(resp.status, 200);
	latch_http_response_done(&resp);
	latch_http_client_free(c);

	/* ...a name it does not carry is refused, and the error says which name. */
	struct latch_tls_options wrong_name = { .ca_file = stack.ca, .server_name = "vault.example.org" };
	c = client(&wrong_name);
	assert_int_equal(latch_http_do(c, &req, &resp, &err), LATCH_ETLS);
	assert_non_null(strstr(latch_error_message(&err), "'vault.example.org'"));
	latch_http_client_free(c);

	/* The system store does not know the stack's CA: refused, naming where the CA came from. */
	struct latch_tls_options system_ca = { 0 };
	c = client(&system_ca);
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
		cmocka_unit_test(test_stack__tls_server_name_and_wrong_ca),
	};
	return cmocka_run_group_tests(tests, load_stack, NULL);
}
