#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "latch/error.h"

static void test_error__set_prefix_and_done(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	assert_string_equal(latch_error_message(&err), "success");
	assert_int_equal(latch_error_set(&err, LATCH_ENOTFOUND, "path '%s' does not exist", "secret/data/x"),
			 LATCH_ENOTFOUND);
	assert_int_equal(latch_error_prefix(&err, "reading secret '%s'", "db"), LATCH_ENOTFOUND);
	assert_string_equal(latch_error_message(&err), "reading secret 'db': path 'secret/data/x' does not exist");
	assert_int_equal(err.code, LATCH_ENOTFOUND);
	latch_error_done(&err);
	assert_null(err.message);
	assert_int_equal(err.code, 0);
	/* A NULL error is allowed: the code still comes back. */
	assert_int_equal(latch_error_set(NULL, LATCH_EIO, "x"), LATCH_EIO);
}

static void test_error__code_names_are_distinct(void **state)
{
	for (int a = LATCH_EUNSUPPORTED; a <= 0; a++)
		for (int b = a + 1; b <= 0; b++)
			assert_string_not_equal(latch_code_name(a), latch_code_name(b));
}

static void test_error__errno_message(void **state)
{
	(void)state;
	assert_string_equal(latch_errno_message(ENOENT), "No such file or directory");
	assert_string_equal(latch_errno_message(EACCES), "Permission denied");
	assert_string_equal(latch_errno_message(-1), "unknown error");
	assert_string_equal(latch_errno_message(100000), "unknown error");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_error__set_prefix_and_done),
		cmocka_unit_test(test_error__code_names_are_distinct),
		cmocka_unit_test(test_error__errno_message),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
