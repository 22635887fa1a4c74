#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stack.h"
#include "latch/clock.h"
#include "latch/file.h"

struct stack stack;

static const char *need_env(const char *name)
{
	const char *v = getenv(name);
	if (!v || !*v)
		fail_msg("%s is not set: run the e2e suite with the stack's environment (make e2e, or . .stack/env)", name);
	return v;
}

int stack_load(void **state)
{
	stack.kube_url = need_env("LATCH_KUBE_URL");
	stack.vault_addr = need_env("VAULT_ADDR");
	stack.vault_root_token = need_env("VAULT_TOKEN");
	stack.ca = need_env("LATCH_STACK_CA");
	stack.dir = need_env("LATCH_STACK_DIR");
	snprintf(stack.admin_cert, sizeof(stack.admin_cert), "%s/pki/admin.crt", stack.dir);
	snprintf(stack.admin_key, sizeof(stack.admin_key), "%s/pki/admin.key", stack.dir);
	stack.pg_host = need_env("LATCH_PG_HOST");
	stack.pg_port = need_env("LATCH_PG_PORT");
	stack.pg_db = need_env("LATCH_PG_DB");
	return 0;
}

double stack_now(void)
{
	return latch_monotonic_s();
}

struct latch_http_client *stack_client(const struct latch_tls_options *tls)
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

long stack_call(struct latch_http_client *c, const char *method, const char *url, const char *body, const char *header,
		json_t **ret_json)
{
	const char *headers[2] = { "Content-Type: application/json", header };
	struct latch_http_request req = { .method = method, .url = url, .headers = headers, .n_headers = header ? 2 : 1 };
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

char *stack_token_request(const char *ns, const char *sa, long seconds)
{
	return stack_token_request_for(ns, sa, seconds, "vault");
}

char *stack_token_request_for(const char *ns, const char *sa, long seconds, const char *audience)
{
	struct latch_tls_options tls = { .ca_file = stack.ca, .client_cert_file = stack.admin_cert,
					 .client_key_file = stack.admin_key };
	struct latch_http_client *kube = stack_client(&tls);
	char url[512], body[512];
	snprintf(url, sizeof(url), "%s/api/v1/namespaces/%s/serviceaccounts/%s/token", stack.kube_url, ns, sa);
	snprintf(body, sizeof(body),
		 "{\"apiVersion\":\"authentication.k8s.io/v1\",\"kind\":\"TokenRequest\","
		 "\"spec\":{\"expirationSeconds\":%ld%s%s%s}}", seconds, audience ? ",\"audiences\":[\"" : "",
		 audience ? audience : "", audience ? "\"]" : "");
	json_t *resp;
	long status = stack_call(kube, "POST", url, body, NULL, &resp);
	if (status != 201)
		fail_msg("TokenRequest for %s/%s answered %ld", ns, sa, status);
	char *token = strdup(json_string_value(latch_json_path(resp, "status.token")));
	json_decref(resp);
	latch_http_client_free(kube);
	return token;
}

long stack_vault_root(const char *method, const char *path, const char *body, json_t **ret_json)
{
	struct latch_tls_options tls = { .ca_file = stack.ca };
	struct latch_http_client *c = stack_client(&tls);
	char url[1024], header[512];
	snprintf(url, sizeof(url), "%s/v1/%s", stack.vault_addr, path);
	snprintf(header, sizeof(header), "X-Vault-Token: %s", stack.vault_root_token);
	json_t *ignored = NULL;
	long status = stack_call(c, method, url, body, header, ret_json ? ret_json : &ignored);
	json_decref(ignored);
	latch_http_client_free(c);
	return status;
}

void stack_vault_root_ok(const char *method, const char *path, const char *body)
{
	long status = stack_vault_root(method, path, body, NULL);
	if (status != 200 && status != 204) /* 200 when Vault adds warnings */
		fail_msg("%s %s answered %ld", method, path, status);
}

/* name added to the connection's allowed_roles, keeping the roles other tests made. */
static void allow_db_role(const char *name)
{
	json_t *cfg = NULL;
	if (stack_vault_root("GET", "database/config/postgres", NULL, &cfg) != 200)
		fail_msg("cannot read database/config/postgres");
	json_t *roles = json_object_get(json_object_get(cfg, "data"), "allowed_roles");
	json_t *list = json_array();
	bool present = false;
	size_t i;
	json_t *role;
	json_array_foreach(roles, i, role) {
		present = present || strcmp(json_string_value(role), name) == 0;
		json_array_append(list, role);
	}
	json_array_append_new(list, json_string(name));
	json_t *body = json_pack("{s:o}", "allowed_roles", list);
	char *text = json_dumps(body, JSON_COMPACT);
	if (!present)
		stack_vault_root_ok("PUT", "database/config/postgres", text);
	free(text);
	json_decref(body);
	json_decref(cfg);
}

void stack_vault_db_role(const char *name, const char *default_ttl, const char *max_ttl)
{
	char path[256], body[2048];
	snprintf(path, sizeof(path), "database/roles/%s", name);
	snprintf(body, sizeof(body),
		 "{\"db_name\":\"postgres\",\"default_ttl\":\"%s\",\"max_ttl\":\"%s\",\"creation_statements\":"
		 "\"CREATE ROLE \\\"{{name}}\\\" WITH LOGIN PASSWORD '{{password}}' VALID UNTIL '{{expiration}}';"
		 " GRANT CONNECT ON DATABASE demo TO \\\"{{name}}\\\";\"}",
		 default_ttl, max_ttl);
	stack_vault_root_ok("PUT", path, body);
	allow_db_role(name);
	snprintf(path, sizeof(path), "sys/policies/acl/%s", name);
	snprintf(body, sizeof(body),
		 "{\"policy\":\"path \\\"database/creds/%s\\\" { capabilities = [\\\"read\\\"] }\\n"
		 "path \\\"sys/leases/*\\\" { capabilities = [\\\"update\\\"] }\"}",
		 name);
	stack_vault_root_ok("PUT", path, body);
	snprintf(path, sizeof(path), "auth/kubernetes/role/%s", name);
	snprintf(body, sizeof(body),
		 "{\"bound_service_account_names\":\"app\",\"bound_service_account_namespaces\":\"demo\","
		 "\"audience\":\"vault\",\"token_policies\":\"%s\",\"token_ttl\":\"1h\"}",
		 name);
	stack_vault_root_ok("PUT", path, body);
}

void stack_vault_unseal(void)
{
	json_t *status = NULL;
	if (stack_vault_root("GET", "sys/seal-status", NULL, &status) != 200)
		fail_msg("Vault's seal status is unknown");
	bool sealed = json_is_true(json_object_get(status, "sealed"));
	json_decref(status);
	if (!sealed)
		return;
	char path[512];
	snprintf(path, sizeof(path), "%s/vault-init.json", stack.dir);
	char *init = stack_read_file(path);
	json_t *keys = init ? json_loads(init, 0, NULL) : NULL;
	free(init);
	if (!keys)
		fail_msg("no unseal key in %s", path);
	char body[512];
	snprintf(body, sizeof(body), "{\"key\":\"%s\"}",
		 json_string_value(json_array_get(json_object_get(keys, "unseal_keys_b64"), 0)));
	json_decref(keys);
	json_t *unsealed = NULL;
	if (stack_vault_root("PUT", "sys/unseal", body, &unsealed) != 200 ||
	    json_is_true(json_object_get(unsealed, "sealed")))
		fail_msg("Vault did not unseal");
	json_decref(unsealed);
	explicit_bzero(body, sizeof(body));
}

int stack_psql_as(const char *user, const char *password, const char *sql, const char *out_path)
{
	char pgpass[512];
	snprintf(pgpass, sizeof(pgpass), "PGPASSWORD=%s", password);
	char *envp[] = { pgpass, "PGCONNECT_TIMEOUT=5", "PATH=/usr/bin:/bin", NULL };
	char *argv[] = { "psql", "-X", "-w", "-q", "-h", (char *)stack.pg_host, "-p", (char *)stack.pg_port,
			 "-U", (char *)user, "-d", (char *)stack.pg_db, "-tAc", (char *)sql, NULL };
	int status = stack_run(argv, envp, out_path, 30, NULL);
	explicit_bzero(pgpass, sizeof(pgpass));
	return status;
}

int stack_psql_login(const char *user, const char *password)
{
	return stack_psql_as(user, password, "SELECT current_user", "/dev/null");
}

pid_t stack_spawn(char *const argv[], char *const envp[], const char *log_path)
{
	posix_spawn_file_actions_t fa;
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, STDOUT_FILENO, log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
	posix_spawn_file_actions_adddup2(&fa, STDOUT_FILENO, STDERR_FILENO);
	pid_t pid;
	int r = posix_spawnp(&pid, argv[0], &fa, NULL, argv, envp);
	posix_spawn_file_actions_destroy(&fa);
	if (r != 0)
		fail_msg("cannot run %s: %s", argv[0], latch_errno_message(r));
	return pid;
}

int stack_wait(pid_t pid, double timeout_s)
{
	double end = stack_now() + timeout_s;
	int status;
	for (;;) {
		pid_t w = waitpid(pid, &status, WNOHANG);
		if (w == pid)
			break;
		if (stack_now() > end) {
			kill(pid, SIGKILL);
			waitpid(pid, &status, 0);
			break;
		}
		struct timespec ts = { 0, 10000000 };
		nanosleep(&ts, NULL);
	}
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int stack_run(char *const argv[], char *const envp[], const char *log_path, double timeout_s, double *ret_seconds)
{
	double start = stack_now();
	int status = stack_wait(stack_spawn(argv, envp, log_path), timeout_s);
	if (ret_seconds)
		*ret_seconds = stack_now() - start;
	return status;
}

char *stack_read_file(const char *path)
{
	struct latch_buf b = LATCH_BUF_INIT(16u << 20);
	if (latch_file_read(path, 16u << 20, &b, NULL) < 0) {
		latch_buf_done(&b);
		return NULL;
	}
	return latch_buf_take(&b);
}

char *stack_wait_for_file(const char *path, double timeout_s)
{
	char *text;
	for (double end = stack_now() + timeout_s; !(text = stack_read_file(path));) {
		if (stack_now() > end)
			fail_msg("%s did not appear within %.0f s", path, timeout_s);
		struct timespec ts = { 0, 50000000 };
		nanosleep(&ts, NULL);
	}
	return text;
}

void stack_write_file(const char *path, const char *text)
{
	struct latch_file_opts o = { .mode = 0600 };
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_file_write_atomic(path, latch_view_str(text), &o, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
}

char *stack_mkdtemp(const char *prefix)
{
	char *t = malloc(256);
	snprintf(t, 256, "/tmp/%s-XXXXXX", prefix);
	if (!mkdtemp(t))
		fail_msg("mkdtemp: %s", latch_errno_message(errno));
	return t;
}

/* The *.log files under dir, kept in $LATCH_ARTIFACTS/logs/<dir's name>/ for a person to
 * read after the run, and for dev/secret-audit to search. */
static void keep_logs(const char *dir)
{
	const char *artifacts = getenv("LATCH_ARTIFACTS");
	if (!artifacts || !*artifacts)
		return;
	char *argv[] = { "sh", "-c",
			 "dest=\"$1/logs/${2##*/}\" && cd \"$2\" && "
			 "find . -name '*.log' -type f -size -64M | while IFS= read -r f; do "
			 "mkdir -p \"$dest/$(dirname \"$f\")\" && cp \"$f\" \"$dest/$f\"; done",
			 "keep-logs", (char *)artifacts, (char *)dir, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	stack_run(argv, envp, "/dev/null", 60, NULL);
}

void stack_rm_rf(const char *dir)
{
	keep_logs(dir);
	char *argv[] = { "rm", "-rf", (char *)dir, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	stack_run(argv, envp, "/dev/null", 30, NULL);
}
