/* Helpers the e2e tests share: the stack's addresses from .stack/env, requests to the real
 * kube-apiserver and Vault, a psql login, and running a program with a deadline.
 * Every helper fails the current test (cmocka) instead of returning an error. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "latch/http.h"
#include "latch/json.h"

struct stack {
	const char *kube_url;
	const char *vault_addr;
	const char *vault_root_token;
	const char *ca;
	const char *dir;
	char admin_cert[512];
	char admin_key[512];
	const char *pg_host;
	const char *pg_port;
	const char *pg_db;
};

extern struct stack stack;

/* cmocka group setup: fails unless the stack's environment is there. */
int stack_load(void **state);

struct latch_http_client *stack_client(const struct latch_tls_options *tls);
/* A request; returns the status and the parsed body (NULL when empty). */
long stack_call(struct latch_http_client *c, const char *method, const char *url, const char *body, const char *header,
		json_t **ret_json);
/* A TokenRequest token for namespace/serviceaccount (caller frees). */
/* A token for the audience latch injects by default ("vault"), as the stack's roles expect. */
char *stack_token_request(const char *ns, const char *sa, long seconds);
/* audience NULL: the API server's own. */
char *stack_token_request_for(const char *ns, const char *sa, long seconds, const char *audience);
/* Vault as root (set-up only): method path [json body] -> status, body. */
long stack_vault_root(const char *method, const char *path, const char *body, json_t **ret_json);
/* The same, failing the test unless Vault answers 200 or 204. */
void stack_vault_root_ok(const char *method, const char *path, const char *body);
/* A PostgreSQL role NAME whose logins live default_ttl, renewable up to max_ttl, that the
 * ServiceAccount demo/app reads (and renews) through the kubernetes auth role NAME. */
void stack_vault_db_role(const char *name, const char *default_ttl, const char *max_ttl);
/* Unseal the stack's Vault with the key dev/stack saved, if it is sealed. */
void stack_vault_unseal(void);
/* psql login as user/password; 0 when it worked. */
int stack_psql_login(const char *user, const char *password);
/* Run one SQL statement as user (psql -tA), its output into out_path; psql's exit status. */
int stack_psql_as(const char *user, const char *password, const char *sql, const char *out_path);

/* Run argv with env (NULL-terminated) and stdout+stderr to log_path; kill it after
 * timeout_s. Returns the exit status (128+signal when killed) and the wall time. */
int stack_run(char *const argv[], char *const envp[], const char *log_path, double timeout_s, double *ret_seconds);
pid_t stack_spawn(char *const argv[], char *const envp[], const char *log_path);
int stack_wait(pid_t pid, double timeout_s);

char *stack_read_file(const char *path);
/* The file's content once it exists (polled every 50 ms); fails the test after timeout_s. */
char *stack_wait_for_file(const char *path, double timeout_s);
void stack_write_file(const char *path, const char *text);
char *stack_mkdtemp(const char *prefix);
/* rm -rf dir, its *.log files kept first in $LATCH_ARTIFACTS/logs/ (see dev/secret-audit). */
void stack_rm_rf(const char *dir);
double stack_now(void);
