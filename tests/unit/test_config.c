#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
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
	assert_int_equal(latch_secret_files(&c.secrets[0], files), 3);
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
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[]}", "secrets: must name at least one secret");
	assert_config_error("{" VAULT_AUTH ",\n\"secrets\": [1,]}", "LATCH_CONFIG:2:");
}

static void test_config__bad_template_fails_at_parse(void **state)
{
	assert_config_error("{" VAULT_AUTH ",\"secrets\":[{\"name\":\"db\",\"template\":\"{{ env \\\"HOME\\\" }}\"}]}",
			    "template db:1:4: function 'env' is not supported");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_config__defaults),
		cmocka_unit_test(test_config__every_field),
		cmocka_unit_test(test_config__errors_name_the_field),
		cmocka_unit_test(test_config__bad_template_fails_at_parse),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
