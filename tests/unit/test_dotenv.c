#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "latch/dotenv.h"

static void parse_ok(const char *text, struct latch_env_list *list)
{
	struct latch_error err = LATCH_ERROR_INIT;
	int r = latch_dotenv_parse(latch_view_str(text), "db.env", list, &err);
	if (r < 0)
		fail_msg("'%s' refused: %s", text, latch_error_message(&err));
}

static void assert_refused(const char *text, const char *expected)
{
	struct latch_env_list list = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_true(latch_dotenv_parse(latch_view_str(text), "db.env", &list, &err) < 0);
	if (!strstr(latch_error_message(&err), expected))
		fail_msg("error '%s' does not contain '%s'", latch_error_message(&err), expected);
	assert_null(strstr(latch_error_message(&err), "hunter2")); /* never a value */
	latch_error_done(&err);
	latch_env_list_done(&list);
}

/* What latch-init writes with format env and dotenv reads back as the values Vault gave. */
static void test_dotenv__reads_what_latch_init_writes(void **state)
{
	struct latch_env_list list = { 0 };
	parse_ok("export PGUSER='v-app-x1'\n"
		 "export PGPASSWORD='it'\\''s \"quoted\"'\n"
		 "DOTENV=\"two\\nlines \\\"and\\\" \\\\\"\n"
		 "PLAIN=bare # a comment\n"
		 "\n"
		 "# comment line\n"
		 "EMPTY=\n",
		 &list);
	assert_int_equal(list.n, 5);
	assert_string_equal(list.items[0], "PGUSER=v-app-x1");
	assert_string_equal(list.items[1], "PGPASSWORD=it's \"quoted\"");
	assert_string_equal(list.items[2], "DOTENV=two\nlines \"and\" \\");
	assert_string_equal(list.items[3], "PLAIN=bare");
	assert_string_equal(list.items[4], "EMPTY=");
	assert_null(list.items[5]);
	latch_env_list_done(&list);
}

static void test_dotenv__later_value_replaces_earlier(void **state)
{
	struct latch_env_list list = { 0 };
	parse_ok("A=1\nB=2\n", &list);
	parse_ok("export A='3'\n", &list);
	assert_int_equal(list.n, 2);
	assert_string_equal(list.items[0], "A=3");
	assert_string_equal(list.items[1], "B=2");
	latch_env_list_done(&list);
}

static void test_dotenv__bad_lines_name_line_and_column_not_the_value(void **state)
{
	assert_refused("A=1\nexport PGPASSWORD='hunter2\n", "db.env:2:19: a single quote is not closed");
	assert_refused("PGPASSWORD=hunter2 more\n", "db.env:1:20: unexpected text after the value");
	assert_refused("1A=x\n", "db.env:1:1: expected a variable name");
	assert_refused("A-B=x\n", "db.env:1:2: expected '=' after the variable name");
	assert_refused("A=1\nB=\"hunter2\nmore", "db.env:2:3: a double quote is not closed");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dotenv__reads_what_latch_init_writes),
		cmocka_unit_test(test_dotenv__later_value_replaces_earlier),
		cmocka_unit_test(test_dotenv__bad_lines_name_line_and_column_not_the_value),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
