/* latch-init against the stack's real Vault, kube-apiserver and PostgreSQL: what it writes,
 * how it fails, and that no secret it handled ever reaches its log. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "stack.h"

/* Every secret value a test saw; each test's log is searched for all of them. */
static char *seen_secrets[256];
static size_t n_seen;

static void remember_secret(const char *value)
{
	if (value && strlen(value) >= 6 && n_seen < 256)
		seen_secrets[n_seen++] = strdup(value);
}

static void assert_log_has_no_secret(const char *log_path)
{
	char *log = stack_read_file(log_path);
	assert_non_null(log);
	for (size_t i = 0; i < n_seen; i++)
		if (strstr(log, seen_secrets[i]))
			fail_msg("the log %s contains a secret value", log_path);
	free(log);
}

struct run {
	char *dir;       /* scratch: token, config, log */
	char *out;       /* output_dir */
	char token_path[512];
	char log_path[512];
	char *config;
};

/* audience NULL: the API server's own. */
static void run_setup_for(struct run *r, const char *sa, const char *audience)
{
	memset(r, 0, sizeof(*r));
	r->dir = stack_mkdtemp("latch-e2e-init");
	char out[512];
	snprintf(out, sizeof(out), "%s/secrets", r->dir);
	r->out = strdup(out);
	snprintf(r->token_path, sizeof(r->token_path), "%s/token", r->dir);
	snprintf(r->log_path, sizeof(r->log_path), "%s/latch-init.log", r->dir);
	char *jwt = stack_token_request_for("demo", sa, 600, audience);
	stack_write_file(r->token_path, jwt);
	remember_secret(jwt);
	free(jwt);
}

static void run_setup(struct run *r, const char *sa)
{
	run_setup_for(r, sa, "vault");
}

static void run_done(struct run *r)
{
	assert_log_has_no_secret(r->log_path);
	stack_rm_rf(r->dir);
	free(r->dir);
	free(r->out);
	free(r->config);
}

/* A LATCH_CONFIG: vault is the inside of the "vault" object, role the auth role. */
static void make_config_for(struct run *r, const char *vault, const char *role, const char *top_extra, const char *secrets)
{
	char buf[16384];
	snprintf(buf, sizeof(buf),
		 "{\"version\":1,\"vault\":{%s},\"auth\":{\"role\":\"%s\",\"token_file\":\"%s\"},\"output_dir\":\"%s\"%s,"
		 "\"secrets\":%s}",
		 vault, role, r->token_path, r->out, top_extra, secrets);
	free(r->config);
	r->config = strdup(buf);
}

/* A LATCH_CONFIG for the stack's Vault, with the given "secrets" list and extra fields. */
static void make_config(struct run *r, const char *vault_extra, const char *top_extra, const char *secrets)
{
	char vault[4096];
	snprintf(vault, sizeof(vault), "\"address\":\"%s\",\"ca_file\":\"%s\"%s", stack.vault_addr, stack.ca, vault_extra);
	make_config_for(r, vault, "demo", top_extra, secrets);
}

static char *latch_init_bin(void)
{
	char *bin = getenv("LATCH_INIT");
	if (!bin)
		fail_msg("LATCH_INIT is not set (meson passes the built latch-init)");
	return bin;
}

static int run_init(struct run *r, const char *mode, double timeout_s, double *seconds)
{
	char env_config[20000];
	snprintf(env_config, sizeof(env_config), "LATCH_CONFIG=%s", r->config);
	char *envp[] = { env_config, NULL };
	char *argv[] = { latch_init_bin(), (char *)mode, NULL };
	return stack_run(argv, envp, r->log_path, timeout_s, seconds);
}

static char *out_file(const struct run *r, const char *name)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", r->out, name);
	return stack_read_file(path);
}

static mode_t out_mode(const struct run *r, const char *name)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/%s", r->out, name);
	struct stat st;
	assert_int_equal(stat(path, &st), 0);
	return st.st_mode & 07777;
}

static void assert_log_contains(const struct run *r, const char *text)
{
	char *log = stack_read_file(r->log_path);
	assert_non_null(log);
	if (!strstr(log, text))
		fail_msg("the log does not say '%s':\n%s", text, log);
	free(log);
}

/* "key: value" line of a map-format file. */
static char *map_value(const char *map, const char *key)
{
	char prefix[128];
	snprintf(prefix, sizeof(prefix), "%s: ", key);
	const char *p = strstr(map, prefix);
	if (!p)
		return NULL;
	p += strlen(prefix);
	return strndup(p, strcspn(p, "\n"));
}

static void test_init__populate_every_format(void **state)
{
	struct run r;
	run_setup(&r, "app");
	make_config(&r, "", "",
		    "[{\"name\":\"db\",\"path\":\"database/creds/app\"},"
		    "{\"name\":\"db-url\",\"template\":\"{{- with secret \\\"database/creds/app\\\" -}}\\n"
		    "postgres://{{ .Data.username }}:{{ .Data.password }}@db/demo\\n{{- end }}\\n\",\"mode\":\"0600\"},"
		    "{\"name\":\"config\",\"path\":\"secret/data/demo/config\",\"format\":\"env\",\"file\":\"config.env\"},"
		    "{\"name\":\"config-json\",\"path\":\"secret/data/demo/config\",\"format\":\"json\"},"
		    "{\"name\":\"password\",\"path\":\"secret/data/demo/config\",\"format\":\"raw\",\"key\":\"password\"},"
		    "{\"name\":\"tls\",\"path\":\"pki/issue/demo\",\"params\":{\"common_name\":\"web.demo.svc\"},\"format\":\"pem\"}]");
	double seconds;
	assert_int_equal(run_init(&r, "populate", 60, &seconds), 0);

	/* One set of database credentials for both secrets that read the role, and it works. */
	char *db = out_file(&r, "db");
	assert_non_null(db);
	char *user = map_value(db, "username"), *password = map_value(db, "password");
	assert_non_null(user);
	assert_non_null(password);
	remember_secret(password);
	char *url = out_file(&r, "db-url");
	char expected_url[512];
	snprintf(expected_url, sizeof(expected_url), "postgres://%s:%s@db/demo\n", user, password);
	assert_string_equal(url, expected_url);
	assert_int_equal(stack_psql_login(user, password), 0);
	assert_int_equal(out_mode(&r, "db"), 0640);
	assert_int_equal(out_mode(&r, "db-url"), 0600);

	/* KV v2 values as Vault holds them. */
	json_t *kv;
	assert_int_equal(stack_vault_root("GET", "secret/data/demo/config", NULL, &kv), 200);
	const char *kv_password = json_string_value(latch_json_path(kv, "data.data.password"));
	remember_secret(kv_password);
	char expected_env[512];
	snprintf(expected_env, sizeof(expected_env), "export password='%s'\nexport username='demo'\n", kv_password);
	char *env = out_file(&r, "config.env");
	assert_string_equal(env, expected_env);
	char *raw = out_file(&r, "password");
	assert_string_equal(raw, kv_password);
	char *js = out_file(&r, "config-json");
	assert_non_null(strstr(js, "\"data\":{\"password\":\""));
	assert_non_null(strstr(js, "\"metadata\":{"));

	/* The certificate chains to the stack's PKI root. */
	char verify_ca[1024], cert[1024];
	snprintf(verify_ca, sizeof(verify_ca), "%s/pki/vault-pki-ca.crt", stack.dir);
	snprintf(cert, sizeof(cert), "%s/tls.crt", r.out);
	char *argv[] = { "openssl", "verify", "-CAfile", verify_ca, cert, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	assert_int_equal(stack_run(argv, envp, "/dev/null", 30, NULL), 0);
	char *key = out_file(&r, "tls.key");
	assert_non_null(strstr(key, "PRIVATE KEY-----"));
	remember_secret(strchr(key, '\n') + 1);
	char *ca = out_file(&r, "tls-ca.crt");
	assert_non_null(strstr(ca, "BEGIN CERTIFICATE"));

	/* Lease metadata, without values; the probe agrees the files are there. */
	char *leases = out_file(&r, ".latch/leases.json");
	assert_non_null(strstr(leases, "database/creds/app/"));
	assert_null(strstr(leases, password));
	assert_int_equal(run_init(&r, "probe", 10, NULL), 0);

	free(db); free(user); free(password); free(url); free(env); free(raw); free(js); free(key); free(ca); free(leases);
	json_decref(kv);
	run_done(&r);
}

static void test_init__probe_fails_before_populate(void **state)
{
	struct run r;
	run_setup(&r, "app");
	make_config(&r, "", "", "[{\"name\":\"db\",\"path\":\"database/creds/app\"}]");
	assert_int_equal(run_init(&r, "probe", 10, NULL), 1);
	run_done(&r);
}

static void test_init__wrong_service_account_fails_fast_with_hint(void **state)
{
	struct run r;
	run_setup(&r, "other");
	make_config(&r, "", "", "[{\"name\":\"db\",\"path\":\"database/creds/app\"}]");
	double seconds;
	assert_int_equal(run_init(&r, "populate", 30, &seconds), 77);
	assert_true(seconds < 2.0);
	assert_log_contains(&r,
			    "login to 'auth/kubernetes' with role 'demo' as ServiceAccount 'demo/other' with a token "
				"for audience 'vault' was refused");
	assert_log_contains(&r, "403");
	char *db = out_file(&r, "db");
	assert_null(db);
	run_done(&r);
}

static void test_init__wrong_role_fails_fast_with_hint(void **state)
{
	struct run r;
	run_setup(&r, "app");
	char vault[2048];
	snprintf(vault, sizeof(vault), "\"address\":\"%s\",\"ca_file\":\"%s\"", stack.vault_addr, stack.ca);
	make_config_for(&r, vault, "no-such-role", "", "[{\"name\":\"db\",\"path\":\"database/creds/app\"}]");
	double seconds;
	int status = run_init(&r, "populate", 30, &seconds);
	assert_true(status == 65 || status == 77);
	assert_true(seconds < 2.0);
	assert_log_contains(&r,
			    "with role 'no-such-role' as ServiceAccount 'demo/app' with a token for audience 'vault' "
				"was refused");
	run_done(&r);
}

/* A role made for the webhook's tokens meets latch's, or the reverse: the message names the
 * audience the token has, so the fix (the role's audience, or latch.dev/token-audience) is
 * one read away. */
static void test_init__token_for_another_audience_says_which(void **state)
{
	struct run r;
	run_setup_for(&r, "app", NULL);
	make_config(&r, "", "", "[{\"name\":\"db\",\"path\":\"database/creds/app\"}]");
	double seconds;
	assert_int_equal(run_init(&r, "populate", 30, &seconds), 77);
	assert_log_contains(&r, "as ServiceAccount 'demo/app' with a token for audience '");
	assert_log_contains(&r, "audience (it must be '");
	char *log = stack_read_file(r.log_path);
	assert_null(strstr(log, "for audience 'vault'"));
	free(log);
	assert_null(out_file(&r, "db"));
	run_done(&r);
}

static void test_init__vault_down_bounded_retries(void **state)
{
	struct run r;
	run_setup(&r, "app");
	/* Port 1 on loopback: nothing listens, connections are refused. */
	make_config_for(&r, "\"address\":\"https://127.0.0.1:1\"", "demo", ",\"deadline_seconds\":3",
			"[{\"name\":\"db\",\"path\":\"database/creds/app\"}]");
	double seconds;
	assert_int_equal(run_init(&r, "populate", 30, &seconds), 69);
	assert_true(seconds >= 1.0 && seconds < 10.0);
	assert_log_contains(&r, "https://127.0.0.1:1/v1/auth/kubernetes/login");
	assert_log_contains(&r, "attempts");
	run_done(&r);
}

static void test_init__wrong_ca_and_wrong_name_are_refused(void **state)
{
	struct run r;
	run_setup(&r, "app");
	char vault[1024];
	snprintf(vault, sizeof(vault), "\"address\":\"%s\"", stack.vault_addr); /* no CA: the system store */
	make_config_for(&r, vault, "demo", ",\"deadline_seconds\":5", "[{\"name\":\"db\",\"path\":\"database/creds/app\"}]");
	double seconds;
	assert_int_equal(run_init(&r, "populate", 30, &seconds), 69);
	assert_true(seconds < 3.0); /* a TLS failure is not retried */
	assert_log_contains(&r, "TLS verification of 'the URL's host' against the system CA store failed");

	make_config(&r, ",\"server_name\":\"vault.example.org\"", "", "[{\"name\":\"db\",\"path\":\"database/creds/app\"}]");
	assert_int_equal(run_init(&r, "populate", 30, NULL), 69);
	assert_log_contains(&r, "'vault.example.org' against CA file");
	run_done(&r);
}

static void test_init__missing_path_names_it(void **state)
{
	struct run r;
	run_setup(&r, "app");
	make_config(&r, "", "", "[{\"name\":\"db\",\"path\":\"database/creds/app\"},{\"name\":\"x\",\"path\":\"secret/data/demo/nope\"}]");
	assert_int_equal(run_init(&r, "populate", 30, NULL), 77);
	assert_log_contains(&r, "GET secret/data/demo/nope: Vault answered 404");
	/* Nothing was written: the failure came before any file. */
	assert_null(out_file(&r, "db"));
	run_done(&r);
}

static void test_init__malformed_config_names_the_field(void **state)
{
	struct run r;
	run_setup(&r, "app");
	make_config(&r, "", "", "[{\"name\":\"db\",\"path\":\"database/creds/app\",\"perms\":\"0600\"}]");
	assert_int_equal(run_init(&r, "populate", 10, NULL), 65);
	assert_log_contains(&r, "LATCH_CONFIG: secrets[0].perms: unknown field");
	free(r.config);
	r.config = strdup("{\"version\":1,");
	assert_int_equal(run_init(&r, "populate", 10, NULL), 65);
	assert_log_contains(&r, "LATCH_CONFIG:1:");
	run_done(&r);
}

/* A full volume: a 16 KiB tmpfs already holding 12 KiB. The error says so, and no file is
 * left half-written. Runs in a child with its own mount namespace. */
static void test_init__target_directory_full(void **state)
{
	struct run r;
	run_setup(&r, "app");
	mkdir(r.out, 0755);
	make_config(&r, "", "",
		    "[{\"name\":\"db\",\"path\":\"database/creds/app\"},"
		    "{\"name\":\"tls\",\"path\":\"pki/issue/demo\",\"params\":{\"common_name\":\"full.demo.svc\"},\"format\":\"pem\"}]");
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (unshare(CLONE_NEWNS) < 0 || mount("none", "/", NULL, MS_REC | MS_PRIVATE, NULL) < 0 ||
		    mount("tmpfs", r.out, "tmpfs", 0, "size=16k") < 0)
			_exit(2);
		char filler[1024];
		snprintf(filler, sizeof(filler), "%s/filler", r.out);
		FILE *f = fopen(filler, "w");
		for (int i = 0; f && i < 12 * 1024; i++)
			fputc('x', f);
		if (f)
			fclose(f);
		int status = run_init(&r, "populate", 60, NULL);
		/* Every file present is whole: no temporary names, no empty secret files. */
		DIR *d = opendir(r.out);
		struct dirent *de;
		while (d && (de = readdir(d)))
			if (strstr(de->d_name, ".latch-tmp-"))
				_exit(3);
		if (d)
			closedir(d);
		_exit(status == 73 ? 0 : 4);
	}
	int status;
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_log_contains(&r, "No space left on device");
	run_done(&r);
}

/* Vault sealed: the call is retried (503 is retryable) until the deadline, then the cause. */
static void test_init__sealed_vault(void **state)
{
	struct run r;
	run_setup(&r, "app");
	make_config(&r, "", ",\"deadline_seconds\":4", "[{\"name\":\"db\",\"path\":\"database/creds/app\"}]");
	assert_int_equal(stack_vault_root("PUT", "sys/seal", NULL, NULL), 204);
	double seconds;
	int status = run_init(&r, "populate", 30, &seconds);
	stack_vault_unseal();
	assert_int_equal(status, 69);
	assert_true(seconds >= 3.0 && seconds < 10.0);
	assert_log_contains(&r, "503");
	assert_log_contains(&r, "sealed");
	run_done(&r);
}

/* latch-init sidecar for demo/app with role, reading database/creds/ROLE into "db". */
static pid_t spawn_sidecar(struct run *r, const char *role, const char *top_extra)
{
	run_setup(r, "app");
	char vault[2048], secrets[256];
	snprintf(vault, sizeof(vault), "\"address\":\"%s\",\"ca_file\":\"%s\"", stack.vault_addr, stack.ca);
	snprintf(secrets, sizeof(secrets), "[{\"name\":\"db\",\"path\":\"database/creds/%s\"}]", role);
	make_config_for(r, vault, role, top_extra, secrets);
	char env_config[9000];
	snprintf(env_config, sizeof(env_config), "LATCH_CONFIG=%s", r->config);
	char *envp[] = { env_config, NULL };
	char *argv[] = { latch_init_bin(), "sidecar", NULL };
	return stack_spawn(argv, envp, r->log_path);
}

/* The sidecar with a DB role of short TTL: the file is replaced with new working credentials
 * before the old ones expire, and a reader polling it never sees a partial or empty file. */
static void test_init__sidecar_keeps_short_lived_credentials_fresh(void **state)
{
	stack_vault_db_role("short", "6s", "10s");
	struct run r;
	pid_t pid = spawn_sidecar(&r, "short", "");

	char path[1024];
	snprintf(path, sizeof(path), "%s/db", r.out);
	char *first_user = NULL, *last = NULL;
	size_t reads = 0, changes = 0;
	double end = stack_now() + 20;
	while (stack_now() < end) {
		char *now = stack_read_file(path);
		if (now) {
			reads++;
			assert_non_null(strstr(now, "password: "));
			assert_non_null(strstr(now, "username: "));
			assert_int_equal(now[strlen(now) - 1], '\n');
			if (!first_user)
				first_user = map_value(now, "username");
			if (last && strcmp(last, now) != 0)
				changes++;
			free(last);
			last = now;
		}
		struct timespec ts = { 0, 5000000 };
		nanosleep(&ts, NULL);
	}
	assert_true(reads > 100);
	assert_true(changes >= 1);
	char *user = map_value(last, "username"), *password = map_value(last, "password");
	remember_secret(password);
	assert_string_not_equal(user, first_user);
	assert_int_equal(stack_psql_login(user, password), 0);

	double stop = stack_now();
	kill(pid, SIGTERM);
	assert_int_equal(stack_wait(pid, 10), 0);
	assert_true(stack_now() - stop < 2.0);
	assert_log_contains(&r, "renewed lease");
	assert_log_contains(&r, "stopping on signal");
	free(first_user); free(last); free(user); free(password);
	run_done(&r);
}

/* Vault sealed when a renewal is due (a restart, an operator, an auto-unseal outage): the
 * lease outlives it, so the sidecar keeps renewing it, and the app keeps its credentials. */
static void test_init__sidecar_keeps_its_lease_through_a_sealed_vault(void **state)
{
	stack_vault_db_role("sealed", "24s", "10m");
	struct run r;
	pid_t pid = spawn_sidecar(&r, "sealed", ",\"deadline_seconds\":3");
	char path[1024];
	snprintf(path, sizeof(path), "%s/db", r.out);
	char *before = stack_wait_for_file(path, 20);
	double fetched = stack_now();
	/* The renewal is due 16 s after the fetch, the lease ends at 24 s: sealed from 12 s to 20 s. */
	struct timespec until_seal = { 12, 0 }, sealed_for = { 8, 0 };
	nanosleep(&until_seal, NULL);
	assert_int_equal(stack_vault_root("PUT", "sys/seal", NULL, NULL), 204);
	nanosleep(&sealed_for, NULL);
	stack_vault_unseal();
	for (;;) {
		char *log = stack_read_file(r.log_path);
		bool renewed = log && strstr(log, "renewed lease");
		free(log);
		if (renewed)
			break;
		if (stack_now() > fetched + 23)
			fail_msg("the lease was not renewed once Vault was unsealed");
		struct timespec ts = { 0, 100000000 };
		nanosleep(&ts, NULL);
	}
	char *after = stack_read_file(path);
	assert_non_null(after);
	assert_string_equal(after, before); /* renewed, not replaced by new credentials */
	char *user = map_value(after, "username"), *password = map_value(after, "password");
	remember_secret(password);
	assert_int_equal(stack_psql_login(user, password), 0);
	assert_log_contains(&r, "the lease is still valid, retrying");
	kill(pid, SIGTERM);
	assert_int_equal(stack_wait(pid, 10), 0);
	free(before); free(after); free(user); free(password);
	run_done(&r);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_init__populate_every_format),
		cmocka_unit_test(test_init__probe_fails_before_populate),
		cmocka_unit_test(test_init__wrong_service_account_fails_fast_with_hint),
		cmocka_unit_test(test_init__wrong_role_fails_fast_with_hint),
		cmocka_unit_test(test_init__token_for_another_audience_says_which),
		cmocka_unit_test(test_init__vault_down_bounded_retries),
		cmocka_unit_test(test_init__wrong_ca_and_wrong_name_are_refused),
		cmocka_unit_test(test_init__missing_path_names_it),
		cmocka_unit_test(test_init__malformed_config_names_the_field),
		cmocka_unit_test(test_init__target_directory_full),
		cmocka_unit_test(test_init__sealed_vault),
		cmocka_unit_test(test_init__sidecar_keeps_short_lived_credentials_fresh),
		cmocka_unit_test(test_init__sidecar_keeps_its_lease_through_a_sealed_vault),
	};
	return cmocka_run_group_tests(tests, stack_load, NULL);
}
