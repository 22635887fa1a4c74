#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "latch/config.h"

#define VAULT_AUTH "\"version\":1,\"vault\":{\"address\":\"https://vault:8200\"},\"auth\":{\"role\":\"demo\"}"

static int parse(const char *text, struct latch_config *c, struct latch_error *err)
{
	return latch_config_parse(latch_view_str(text), "LATCH_CONFIG", c, err);
}

static void assert_config_error(const char *text, const char *expected)
{
	struct latch_config c;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_true(parse(text, &c, &err) < 0);
	if (!strstr(latch_error_message(&err), expected))
		fail_msg("error '%s' does not contain '%s'", latch_error_message(&err), expected);
	latch_error_done(&err);
}

static void test_config__defaults(void **state)
{
	struct latch_config c;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\",\"path\":\"database/creds/app\"}]}", &c, &err), 0);
	assert_string_equal(c.auth.path, "auth/kubernetes");
	assert_string_equal(c.auth.token_file, "/var/run/secrets/latch/token");
	assert_string_equal(c.output_dir, "/vault/secrets");
	assert_int_equal(c.deadline_seconds, 120);
	assert_false(c.revoke_on_shutdown);
	assert_int_equal(c.n_secrets, 1);
	assert_int_equal(c.secrets[0].format, LATCH_FORMAT_MAP);
	assert_string_equal(c.secrets[0].file, "db");
	assert_int_equal(c.secrets[0].mode, 0640);
	assert_null(c.secrets[0].params);
	latch_config_done(&c);
}

static void test_config__every_field(void **state)
{
	struct latch_config c;
	struct latch_error err = LATCH_ERROR_INIT;
	const char *text =
		"{\"version\":1,\"vault\":{\"address\":\"https://v:8200\",\"namespace\":\"team-a\",\"ca_file\":\"/ca.pem\","
		"\"server_name\":\"vault.svc\",\"tls_skip_verify\":false},"
		"\"auth\":{\"method\":\"jwt\",\"path\":\"jwt-k8s\",\"role\":\"r\",\"token_file\":\"/t\"},"
		"\"output_dir\":\"/out\",\"deadline_seconds\":30,\"revoke_on_shutdown\":true,\"token_file_name\":\"token\","
		"\"state_dir\":\"/var/run/latch/state\","
		"\"secrets\":[{\"name\":\"cert\",\"path\":\"pki/issue/demo\",\"params\":{\"common_name\":\"a.demo.svc\"},\"format\":\"pem\","
		"\"file\":\"tls/web\",\"mode\":\"0600\",\"uid\":100,\"gid\":1000},"
		"{\"name\":\"url\",\"template\":\"[[ with secret \\\"database/creds/app\\\" ]][[ .Data.username ]][[ end ]]\","
		"\"left_delim\":\"[[\",\"right_delim\":\"]]\",\"error_on_missing_key\":true}]}";
	assert_int_equal(parse(text, &c, &err), 0);
	assert_int_equal(c.auth.method, LATCH_AUTH_JWT);
	assert_string_equal(c.auth.path, "auth/jwt-k8s");
	assert_string_equal(c.vault.namespace, "team-a");
	assert_true(c.revoke_on_shutdown);
	assert_string_equal(c.state_dir, "/var/run/latch/state");
	assert_int_equal(c.secrets[0].format, LATCH_FORMAT_PEM);
	assert_int_equal(c.secrets[0].mode, 0600);
	assert_true(c.secrets[0].set_owner);
	assert_int_equal(c.secrets[0].gid, 1000);
	char *files[3];
	size_t n = 0;
	assert_int_equal(latch_secret_files(&c.secrets[0], files, &n), 0);
	assert_int_equal(n, 3);
	assert_string_equal(files[0], "tls/web.crt");
	assert_string_equal(files[1], "tls/web.key");
	assert_string_equal(files[2], "tls/web-ca.crt");
	for (int i = 0; i < 3; i++)
		free(files[i]);
	assert_int_equal(c.secrets[1].format, LATCH_FORMAT_TEMPLATE);
	assert_int_equal(latch_template_n_secrets(c.secrets[1].template), 1);
	assert_true(c.secrets[1].error_on_missing_key);
	latch_config_done(&c);
}

static void test_config__errors_name_the_field(void **state)
{
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\",\"path\":\"p\",\"formt\":\"json\"}]}",
			    "LATCH_CONFIG: secrets[0].formt: unknown field");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\",\"path\":\"p\",\"format\":\"yaml\"}]}",
			    "secrets[0].format: 'yaml' is not a format");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\",\"path\":\"p\",\"mode\":\"0666\"}]}",
			    "secrets[0].mode: must not be group- or world-writable");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\",\"path\":\"p\",\"mode\":\"999\"}]}",
			    "secrets[0].mode: must be an octal file mode");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\",\"path\":\"p\",\"file\":\"../etc/passwd\"}]}",
			    "secrets[0].file: '../etc/passwd' must stay inside output_dir");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\"}]}", "secrets[0].path: is required");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"a\",\"path\":\"p\",\"file\":\"x\"},{\"name\":\"b\",\"path\":\"q\",\"file\":\"x\"}]}",
			    "two secrets write the file 'x'");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"a\",\"path\":\"p\"},{\"name\":\"a\",\"path\":\"q\",\"file\":\"y\"}]}",
			    "two secrets are named 'a'");
	assert_config_error("{" VAULT_AUTH ",\"state_dir\":\"state\","
			    "\"secrets\":[{\"name\":\"db\",\"path\":\"p\"}]}",
			    "state_dir: 'state' must be an absolute path");
	assert_config_error("{" VAULT_AUTH ",\"state_dir\":\"/vault/secrets/.state\","
			    "\"secrets\":[{\"name\":\"db\",\"path\":\"p\"}]}",
			    "state_dir: '/vault/secrets/.state' must not be inside output_dir");
	assert_config_error("{\"version\":2}", "version: must be 1");
	assert_config_error("{\"version\":1,\"vault\":{\"address\":\"vault:8200\"}}", "vault.address: 'vault:8200' must start with https://");
	assert_config_error("{\"version\":1,\"vault\":{\"address\":\"https://v\"},\"auth\":{}}", "auth.role: is required");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"t\",\"template\":\"x\","
			    "\"template_file\":\"/t\"}]}",
			    "secrets[0].template_file: cannot be set together with template");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"t\",\"template_file\":\"t.ctmpl\"}]}",
			    "secrets[0].template_file: 't.ctmpl' must be an absolute path");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"c\",\"path\":\"p\","
			    "\"reload\":{\"signal\":\"KILL\",\"process\":\"nginx\"}}]}",
			    "secrets[0].reload: signal 'KILL' is not one of HUP");
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"c\",\"path\":\"p\","
			    "\"reload\":{\"signal\":\"HUP\",\"process\":\"/usr/sbin/nginx\"}}]}",
			    "secrets[0].reload: process '/usr/sbin/nginx' must be a program name");
	assert_config_error("{" VAULT_AUTH ",\"copy_self_to\":\"bin\"}",
		"copy_self_to: 'bin' must be an absolute path");
	assert_config_error("{" VAULT_AUTH ",\n\"secrets\": [1,]}", "LATCH_CONFIG:2:");
}

static void test_config__bad_template_fails_at_parse(void **state)
{
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\",\"template\":\"{{ env \\\"HOME\\\" }}\"}]}",
			    "template db:1:4: function 'env' is not supported");
}

/* Injection with no secrets (agent-inject and a role only): latch-init logs in, and writes
 * only what is asked, such as the token. */
static void test_config__no_secrets_is_a_login_only(void **state)
{
	struct latch_config c;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("{" VAULT_AUTH "}", &c, &err), 0);
	assert_int_equal(c.n_secrets, 0);
	latch_config_done(&c);
	assert_int_equal(parse("{" VAULT_AUTH ",\"secrets\":[]}", &c, &err), 0);
	assert_int_equal(c.n_secrets, 0);
	latch_config_done(&c);
}

static void test_config__reload_and_signal_names(void **state)
{
	struct latch_config c;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"c\",\"path\":\"pki/issue/x\","
			       "\"format\":\"pem\",\"reload\":{\"signal\":\"sighup\",\"process\":\"nginx\"}}]}",
			       &c, &err), 0);
	assert_int_equal(c.secrets[0].reload.signal, SIGHUP);
	assert_string_equal(c.secrets[0].reload.process, "nginx");
	latch_config_done(&c);
	int sig = 0;
	assert_int_equal(latch_signal_parse("USR1", &sig), 0);
	assert_int_equal(sig, SIGUSR1);
	assert_true(latch_signal_parse("9", &sig) < 0);
	assert_true(latch_signal_parse("SIGSTOP", &sig) < 0);
}

/* A template file is read in the pod, and gets the errors an inline template gets. */
static void test_config__template_file_is_read_and_checked_in_the_pod(void **state)
{
	char dir[] = "/tmp/latch-config-XXXXXX";
	assert_non_null(mkdtemp(dir));
	char good[256], bad_path[256], config[1024];
	snprintf(good, sizeof(good), "%s/good.ctmpl", dir);
	snprintf(bad_path, sizeof(bad_path), "%s/bad.ctmpl", dir);
	FILE *f = fopen(good, "w");
	fputs("{{ with secret \"secret/data/app\" }}{{ .Data.data.user }}{{ end }}", f);
	fclose(f);
	f = fopen(bad_path, "w");
	fputs("line one\n{{ env \"HOME\" }}", f);
	fclose(f);

	struct latch_config c;
	struct latch_error err = LATCH_ERROR_INIT;
	snprintf(config, sizeof(config),
		"{" VAULT_AUTH ",\"secrets\":[{\"name\":\"app\",\"template_file\":\"%s\"}]}", good);
	assert_int_equal(parse(config, &c, &err), 0);
	assert_int_equal(c.secrets[0].format, LATCH_FORMAT_TEMPLATE);
	assert_null(c.secrets[0].template);
	assert_int_equal(latch_config_load_template_files(&c, &err), 0);
	assert_int_equal(latch_template_n_secrets(c.secrets[0].template), 1);
	assert_string_equal(latch_template_secret(c.secrets[0].template, 0).path, "secret/data/app");
	latch_config_done(&c);

	snprintf(config, sizeof(config),
		"{" VAULT_AUTH ",\"secrets\":[{\"name\":\"app\",\"template_file\":\"%s\"}]}", bad_path);
	assert_int_equal(parse(config, &c, &err), 0);
	assert_true(latch_config_load_template_files(&c, &err) < 0);
	if (!strstr(latch_error_message(&err),
		"bad.ctmpl (secret 'app', template_file): template app:2:4: function 'env'"))
		fail_msg("unexpected error: %s", latch_error_message(&err));
	latch_error_done(&err);
	latch_config_done(&c);
	unlink(good);
	unlink(bad_path);
	rmdir(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config__defaults),
		cmocka_unit_test(test_config__every_field),
		cmocka_unit_test(test_config__errors_name_the_field),
		cmocka_unit_test(test_config__bad_template_fails_at_parse),
		cmocka_unit_test(test_config__no_secrets_is_a_login_only),
		cmocka_unit_test(test_config__reload_and_signal_names),
		cmocka_unit_test(test_config__template_file_is_read_and_checked_in_the_pod),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
