/* The Vault client's offline parts; its calls are tested against the stack's real Vault in
 * the e2e suite. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "latch/base64.h"
#include "latch/vault.h"

static char *jwt_with_claims(const char *claims)
{
	struct latch_buf b = LATCH_BUF_INIT(8192);
	latch_buf_append_str(&b, "eyJhbGciOiJFUzI1NiJ9.");
	latch_base64_encode(latch_view_str(claims), true, &b);
	latch_buf_append_str(&b, ".c2ln");
	return latch_buf_take(&b);
}

/* The claims shape of a TokenRequest (projected) token from kube-apiserver 1.36. */
static void test_vault__jwt_service_account_projected(void **state)
{
	char *jwt = jwt_with_claims("{\"aud\":[\"vault\",\"https://127.0.0.1:16443\"],\"exp\":1764134000,"
				    "\"iss\":\"https://127.0.0.1:16443\",\"kubernetes.io\":{\"namespace\":\"demo\","
				    "\"serviceaccount\":{\"name\":\"other\",\"uid\":\"u\"}},"
				    "\"sub\":\"system:serviceaccount:demo:other\"}");
	struct latch_jwt_identity id;
	assert_int_equal(latch_jwt_identity_parse(jwt, &id), 0);
	assert_string_equal(id.namespace, "demo");
	assert_string_equal(id.name, "other");
	assert_string_equal(id.audience, "vault,https://127.0.0.1:16443");
	latch_jwt_identity_done(&id);
	free(jwt);
}

static void test_vault__jwt_service_account_legacy_secret_token(void **state)
{
	char *jwt = jwt_with_claims("{\"iss\":\"kubernetes/serviceaccount\",\"aud\":\"single\","
				    "\"kubernetes.io/serviceaccount/namespace\":\"ops\","
				    "\"kubernetes.io/serviceaccount/service-account.name\":\"deployer\"}");
	struct latch_jwt_identity id;
	assert_int_equal(latch_jwt_identity_parse(jwt, &id), 0);
	assert_string_equal(id.namespace, "ops");
	assert_string_equal(id.name, "deployer");
	assert_string_equal(id.audience, "single");
	latch_jwt_identity_done(&id);
	free(jwt);
}

static void test_vault__jwt_garbage(void **state)
{
	struct latch_jwt_identity id;
	assert_int_equal(latch_jwt_identity_parse("not-a-jwt", &id), LATCH_EINVAL);
	assert_int_equal(latch_jwt_identity_parse("a.!!!.c", &id), LATCH_EINVAL);
	assert_null(id.namespace);
	assert_null(id.name);
	assert_null(id.audience);
}

static void test_vault__client_needs_an_address(void **state)
{
	struct latch_vault_options o = { .address = "", .http = LATCH_HTTP_OPTIONS_DEFAULT };
	struct latch_vault *v = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_vault_new(&o, &v, &err), LATCH_EINVAL);
	assert_non_null(strstr(latch_error_message(&err), "no Vault address"));
	latch_error_done(&err);
}

static void test_vault__token_is_trimmed_and_empty_refused(void **state)
{
	struct latch_vault_options o = { .address = "https://vault:8200/", .http = LATCH_HTTP_OPTIONS_DEFAULT };
	struct latch_vault *v = NULL;
	assert_int_equal(latch_vault_new(&o, &v, NULL), 0);
	assert_false(latch_vault_has_token(v));
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_vault_set_token(v, "\n", &err), LATCH_EINVAL);
	assert_int_equal(latch_vault_set_token(v, "hvs.x\n", &err), 0);
	assert_true(latch_vault_has_token(v));
	latch_vault_free(v);
	latch_error_done(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_vault__jwt_service_account_projected),
		cmocka_unit_test(test_vault__jwt_service_account_legacy_secret_token),
		cmocka_unit_test(test_vault__jwt_garbage),
		cmocka_unit_test(test_vault__client_needs_an_address),
		cmocka_unit_test(test_vault__token_is_trimmed_and_empty_refused),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
