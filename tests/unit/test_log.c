#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>
#include <jansson.h>

#include "latch/log.h"

/* Run fn with the log going to a pipe and return what it wrote. */
static char *capture(enum latch_log_format format, void (*fn)(void))
{
	int p[2];
	assert_int_equal(pipe(p), 0);
	latch_log_setup(p[1], format, LATCH_LOG_INFO);
	fn();
	close(p[1]);
	static char out[8192];
	ssize_t n = read(p[0], out, sizeof(out) - 1);
	close(p[0]);
	assert_true(n > 0);
	out[n] = '\0';
	latch_log_setup(STDERR_FILENO, LATCH_LOG_TEXT, LATCH_LOG_INFO);
	return out;
}

static void log_login(void)
{
	LATCH_LOG(LATCH_LOG_INFO, "logged in", { "role", "demo" }, { "auth_path", "auth/kubernetes" },
		  { "client_token", "hvs.SHOULD-NOT-APPEAR" });
}

static void log_debug_and_warn(void)
{
	LATCH_LOG(LATCH_LOG_DEBUG, "hidden");
	latch_logf(LATCH_LOG_WARN, "TLS verification is off for %s", "https://vault:8200");
}

static void test_log__text_line_has_level_message_and_fields(void **state)
{
	char *out = capture(LATCH_LOG_TEXT, log_login);
	assert_non_null(strstr(out, " info  logged in role=demo auth_path=auth/kubernetes"));
	assert_int_equal(out[strlen(out) - 1], '\n');
	assert_ptr_equal(strchr(out, '\n'), out + strlen(out) - 1); /* exactly one line */
}

static void test_log__json_lines_parse_and_keep_fields(void **state)
{
	char *out = capture(LATCH_LOG_JSON, log_login);
	json_error_t jerr;
	json_t *line = json_loads(out, 0, &jerr);
	assert_non_null(line);
	assert_string_equal(json_string_value(json_object_get(line, "level")), "info");
	assert_string_equal(json_string_value(json_object_get(line, "msg")), "logged in");
	assert_string_equal(json_string_value(json_object_get(line, "role")), "demo");
	assert_non_null(json_string_value(json_object_get(line, "time")));
	json_decref(line);
}

static void test_log__secret_fields_are_redacted(void **state)
{
	char *text = capture(LATCH_LOG_TEXT, log_login);
	assert_null(strstr(text, "SHOULD-NOT-APPEAR"));
	assert_non_null(strstr(text, "client_token=<redacted>"));
	char *json = capture(LATCH_LOG_JSON, log_login);
	assert_null(strstr(json, "SHOULD-NOT-APPEAR"));
	assert_true(latch_log_key_is_secret("password"));
	assert_true(latch_log_key_is_secret("X-Vault-Token"));
	assert_false(latch_log_key_is_secret("path"));
}

static void test_log__level_filter(void **state)
{
	char *out = capture(LATCH_LOG_TEXT, log_debug_and_warn);
	assert_null(strstr(out, "hidden"));
	assert_non_null(strstr(out, "warn  TLS verification is off for https://vault:8200"));
}

static void test_log__parse_names(void **state)
{
	enum latch_log_format f;
	enum latch_log_level l;
	assert_int_equal(latch_log_format_parse("json", &f), 0);
	assert_int_equal(f, LATCH_LOG_JSON);
	assert_true(latch_log_format_parse("xml", &f) < 0);
	assert_int_equal(latch_log_level_parse("warn", &l), 0);
	assert_int_equal(l, LATCH_LOG_WARN);
	assert_true(latch_log_level_parse("verbose", &l) < 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_log__text_line_has_level_message_and_fields),
		cmocka_unit_test(test_log__json_lines_parse_and_keep_fields),
		cmocka_unit_test(test_log__secret_fields_are_redacted),
		cmocka_unit_test(test_log__level_filter),
		cmocka_unit_test(test_log__parse_names),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
