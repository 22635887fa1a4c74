#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "latch/json.h"

/* A real Vault login response (token values replaced). */
static const char login_response[] =
	"{\"request_id\":\"5b1a\",\"lease_id\":\"\",\"renewable\":false,\"lease_duration\":0,\"data\":null,"
	"\"wrap_info\":null,\"warnings\":null,\"auth\":{\"client_token\":\"hvs.example\",\"accessor\":\"acc\","
	"\"policies\":[\"default\",\"demo\"],\"token_policies\":[\"default\",\"demo\"],\"metadata\":{\"role\":\"demo\","
	"\"service_account_name\":\"app\",\"service_account_namespace\":\"demo\"},\"lease_duration\":3600,"
	"\"renewable\":true,\"entity_id\":\"e\",\"token_type\":\"service\",\"orphan\":true}}";

static void test_json__parse_and_path(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *v = NULL;
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	assert_int_equal(latch_json_parse(latch_view_str(login_response), "login", &lim, &v, &err), 0);
	assert_string_equal(json_string_value(latch_json_path(v, "auth.client_token")), "hvs.example");
	assert_string_equal(latch_json_get_str(latch_json_path(v, "auth.metadata"), "service_account_namespace"), "demo");
	assert_int_equal(json_integer_value(latch_json_path(v, "auth.lease_duration")), 3600);
	assert_null(latch_json_path(v, "auth.nope.deeper"));
	assert_null(latch_json_get_str(v, "lease_duration"));
	json_decref(v);
}

static void test_json__syntax_error_has_line_and_column(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *v = NULL;
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	assert_int_equal(latch_json_parse(latch_view_str("{\n  \"role\": \"demo\",\n  \"secrets\": [1,]\n}"), "LATCH_CONFIG",
					  &lim, &v, &err),
			 LATCH_EPARSE);
	assert_null(v);
	assert_true(strncmp(latch_error_message(&err), "LATCH_CONFIG:3:", 15) == 0);
	latch_error_done(&err);
}

static void test_json__duplicate_keys_rejected(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *v = NULL;
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	assert_int_equal(latch_json_parse(latch_view_str("{\"a\":1,\"a\":2}"), "x", &lim, &v, &err), LATCH_EPARSE);
	assert_non_null(strstr(latch_error_message(&err), "duplicate"));
	latch_error_done(&err);
}

static void test_json__depth_limit(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *v = NULL;
	struct latch_json_limits lim = { 1 << 20, 3 };
	assert_int_equal(latch_json_parse(latch_view_str("[[[1]]]"), "x", &lim, &v, &err), 0);
	json_decref(v);
	assert_int_equal(latch_json_parse(latch_view_str("[[[[1]]]]"), "x", &lim, &v, &err), LATCH_ELIMIT);
	assert_non_null(strstr(latch_error_message(&err), "x:1:4: nesting deeper than the limit of 3"));
	/* Brackets inside strings do not count. */
	assert_int_equal(latch_json_parse(latch_view_str("[\"[[[[[[\"]"), "x", &lim, &v, &err), 0);
	json_decref(v);
	latch_error_done(&err);
}

static void test_json__size_limit(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *v = NULL;
	struct latch_json_limits lim = { 8, 10 };
	assert_int_equal(latch_json_parse(latch_view_str("[1,2,3,4,5]"), "body", &lim, &v, &err), LATCH_ELIMIT);
	assert_non_null(strstr(latch_error_message(&err), "limit of 8"));
	latch_error_done(&err);
}

static void test_json__invalid_utf8_rejected(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *v = NULL;
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	assert_int_equal(latch_json_parse(latch_view_str("{\"k\": \"\xff\xfe\"}"), "x", &lim, &v, &err), LATCH_EPARSE);
	assert_non_null(strstr(latch_error_message(&err), "x:1:7: unable to decode byte 0xff"));
	latch_error_done(&err);
}

static void test_json__dump_is_sorted_and_capped(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *v = json_pack("{s:s,s:i}", "b", "x", "a", 1);
	struct latch_buf out = LATCH_BUF_INIT(1024);
	assert_int_equal(latch_json_dump(v, &out, &err), 0);
	assert_string_equal(latch_buf_str(&out), "{\"a\":1,\"b\":\"x\"}");
	struct latch_buf small = LATCH_BUF_INIT(4);
	assert_int_equal(latch_json_dump(v, &small, &err), LATCH_ELIMIT);
	latch_buf_done(&small);
	latch_buf_done(&out);
	json_decref(v);
	latch_error_done(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_json__parse_and_path),
		cmocka_unit_test(test_json__syntax_error_has_line_and_column),
		cmocka_unit_test(test_json__duplicate_keys_rejected),
		cmocka_unit_test(test_json__depth_limit),
		cmocka_unit_test(test_json__size_limit),
		cmocka_unit_test(test_json__invalid_utf8_rejected),
		cmocka_unit_test(test_json__dump_is_sorted_and_capped),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
