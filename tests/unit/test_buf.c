#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "latch/buf.h"
#include "latch/error.h"

#include <stdlib.h>

static void test_buf__append_and_printf(void **state)
{
	struct latch_buf b = LATCH_BUF_INIT(1024);
	assert_int_equal(latch_buf_append_str(&b, "role="), 0);
	assert_int_equal(latch_buf_printf(&b, "%s/%d", "demo", 7), 0);
	assert_string_equal(latch_buf_str(&b), "role=demo/7");
	assert_int_equal(b.len, strlen("role=demo/7"));
	latch_buf_done(&b);
	assert_null(b.ptr);
}

static void test_buf__grows_past_initial_capacity(void **state)
{
	struct latch_buf b = LATCH_BUF_INIT(100000);
	for (int i = 0; i < 10000; i++)
		assert_int_equal(latch_buf_putc(&b, (char)('a' + i % 26)), 0);
	assert_int_equal(b.len, 10000);
	assert_int_equal(b.ptr[9999], 'a' + 9999 % 26);
	assert_int_equal(b.ptr[10000], '\0');
	latch_buf_done(&b);
}

static void test_buf__cap_reached_leaves_contents(void **state)
{
	struct latch_buf b = LATCH_BUF_INIT(8);
	assert_int_equal(latch_buf_append_str(&b, "12345678"), 0);
	assert_int_equal(latch_buf_append_str(&b, "9"), LATCH_ELIMIT);
	assert_int_equal(latch_buf_printf(&b, "%d", 42), LATCH_ELIMIT);
	assert_string_equal(latch_buf_str(&b), "12345678");
	latch_buf_done(&b);
}

/* A failed append sticks: the next one, which would fit, fails too, and take() gives NULL
 * rather than a string that looks whole. reset() starts afresh. */
static void test_buf__failure_is_sticky_until_reset(void **state)
{
	struct latch_buf b = LATCH_BUF_INIT(8);
	assert_int_equal(latch_buf_append_str(&b, "/api/v1/"), 0);
	assert_int_equal(latch_buf_append_str(&b, "namespaces"), LATCH_ELIMIT);
	assert_int_equal(latch_buf_putc(&b, 'x'), LATCH_ELIMIT);
	assert_int_equal(latch_buf_error(&b), LATCH_ELIMIT);
	assert_null(latch_buf_take(&b));
	assert_int_equal(latch_buf_append_str(&b, "ok"), 0);
	latch_buf_reset(&b);
	assert_int_equal(latch_buf_error(&b), 0);
	assert_int_equal(latch_buf_append_str(&b, "12"), 0);
	char *s = latch_buf_take(&b);
	assert_string_equal(s, "12");
	free(s);
	latch_buf_done(&b);
}

/* str() after a failure holds only the part before it ("/api/v1/" of an object's path):
 * check() is what stops it from being used as the whole. */
static void test_buf__check_refuses_what_a_failure_cut_short(void **state)
{
	struct latch_buf b = LATCH_BUF_INIT(8);
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_buf_append_str(&b, "/api/v1/"), 0);
	assert_int_equal(latch_buf_check(&b, "request URL", &err), 0);
	latch_buf_append_str(&b, "namespaces/demo");
	assert_string_equal(latch_buf_str(&b), "/api/v1/");
	assert_int_equal(latch_buf_check(&b, "request URL", &err), LATCH_ELIMIT);
	assert_string_equal(latch_error_message(&err), "request URL: longer than 8 bytes");
	latch_error_done(&err);
	latch_buf_done(&b);
}

static void test_buf__empty_buffer_reads_as_empty_string(void **state)
{
	struct latch_buf b = LATCH_BUF_INIT(8);
	assert_string_equal(latch_buf_str(&b), "");
	assert_int_equal(latch_buf_view(&b).len, 0);
	char *s = latch_buf_take(&b);
	assert_non_null(s);
	assert_string_equal(s, "");
	free(s);
}

static void test_buf__secret_growth_keeps_data_and_reset_zeroes(void **state)
{
	struct latch_buf b = LATCH_SECRET_BUF_INIT(4096);
	for (int i = 0; i < 300; i++)
		assert_int_equal(latch_buf_append_str(&b, "s3cr3t"), 0);
	assert_int_equal(b.len, 1800);
	assert_memory_equal(b.ptr + 1794, "s3cr3t", 6);
	char *mem = b.ptr;
	size_t cap = b.cap;
	latch_buf_reset(&b);
	assert_ptr_equal(b.ptr, mem);
	for (size_t i = 0; i < cap; i++)
		assert_int_equal(mem[i], 0);
	latch_buf_done(&b);
}

/* A caller may cut a secret buffer short by lowering len (the template's precision does): the
 * next reset still zeroes what was written past it. */
static void test_buf__reset_zeroes_past_a_lowered_len(void **state)
{
	struct latch_buf b = LATCH_SECRET_BUF_INIT(4096);
	assert_int_equal(latch_buf_append_str(&b, "a password of some length"), 0);
	b.len = 3;
	assert_int_equal(latch_buf_append_str(&b, "xy"), 0);
	latch_buf_reset(&b);
	for (size_t i = 0; i < b.cap; i++)
		assert_int_equal(b.ptr[i], 0);
	latch_buf_done(&b);
}

static void test_buf__take_hands_over(void **state)
{
	struct latch_buf b = LATCH_BUF_INIT(64);
	latch_buf_append_str(&b, "abc");
	char *s = latch_buf_take(&b);
	assert_string_equal(s, "abc");
	assert_null(b.ptr);
	assert_int_equal(b.len, 0);
	free(s);
}

static void test_buf__views(void **state)
{
	struct latch_view v = latch_view_str("vault.hashicorp.com/role");
	assert_true(latch_view_has_prefix(v, "vault.hashicorp.com/"));
	assert_false(latch_view_has_prefix(v, "openbao.openbao.org/"));
	assert_true(latch_view_eq_str(latch_view_make(v.ptr, 5), "vault"));
	assert_false(latch_view_eq_str(latch_view_make(v.ptr, 5), "vaul"));
	char *d = latch_view_dup(latch_view_make(v.ptr + 20, 4));
	assert_string_equal(d, "role");
	free(d);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_buf__append_and_printf),
		cmocka_unit_test(test_buf__grows_past_initial_capacity),
		cmocka_unit_test(test_buf__cap_reached_leaves_contents),
		cmocka_unit_test(test_buf__failure_is_sticky_until_reset),
		cmocka_unit_test(test_buf__check_refuses_what_a_failure_cut_short),
		cmocka_unit_test(test_buf__empty_buffer_reads_as_empty_string),
		cmocka_unit_test(test_buf__secret_growth_keeps_data_and_reset_zeroes),
		cmocka_unit_test(test_buf__reset_zeroes_past_a_lowered_len),
		cmocka_unit_test(test_buf__take_hands_over),
		cmocka_unit_test(test_buf__views),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
