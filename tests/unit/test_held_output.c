/* latch-inject's held-back output: what goes in comes out byte for byte, however it was cut
 * into pieces; past the limit is an error, not a short output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "held_output.h"

/* What written to a memory stream gives. */
static char *written(const struct held_output *h, size_t *len)
{
	char *text = NULL;
	FILE *f = open_memstream(&text, len);
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(held_output_write(h, f, &err), 0);
	fclose(f);
	latch_error_done(&err);
	return text;
}

/* n documents from 10 bytes to 600 KB, some alike (as manifests are), some not, held and
 * written; what comes out must be what went in. Returns whether it was deflated. */
static bool hold_and_compare(int n)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct held_output h;
	held_output_init(&h, 64u << 20);
	struct latch_buf expected = LATCH_BUF_INIT(64u << 20);
	unsigned long long x = 88172645463325252ull;
	for (int doc = 0; doc < n; doc++) {
		size_t len = doc % 7 == 0 ? 600000 : (size_t)(10 + doc * 997);
		for (size_t i = 0; i < len; i++) {
			x ^= x << 13, x ^= x >> 7, x ^= x << 17;
			char ch = doc % 2 ? (char)('a' + i % 26) : (char)(x & 0xff);
			latch_buf_putc(&h.text, ch);
			latch_buf_putc(&expected, ch);
		}
		assert_int_equal(held_output_pack(&h, false, &err), 0);
	}
	assert_int_equal(held_output_pack(&h, true, &err), 0);
	size_t len = 0;
	char *out = written(&h, &len);
	assert_int_equal(len, expected.len);
	assert_memory_equal(out, expected.ptr, len);
	bool deflated = h.packed.len > 0;
	free(out);
	latch_buf_done(&expected);
	held_output_done(&h);
	latch_error_done(&err);
	return deflated;
}

static void test_held_output__gives_back_every_byte_in_order(void **state)
{
	assert_false(hold_and_compare(10)); /* 1.7 MB: held as it is */
	assert_true(hold_and_compare(80));  /* 9.5 MB: deflated past 3 MiB */
}

static void test_held_output__nothing_held_writes_nothing(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct held_output h;
	held_output_init(&h, 1000);
	assert_int_equal(held_output_pack(&h, true, &err), 0);
	size_t len = 1;
	char *out = written(&h, &len);
	assert_int_equal(len, 0);
	free(out);
	held_output_done(&h);
	latch_error_done(&err);
}

static void test_held_output__more_than_the_limit_is_an_error(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct held_output h;
	held_output_init(&h, 1000);
	for (int i = 0; i < 3; i++) {
		char piece[400];
		memset(piece, 'y', sizeof(piece));
		latch_buf_append(&h.text, piece, sizeof(piece));
		if (i < 2)
			assert_int_equal(held_output_pack(&h, false, &err), 0);
	}
	assert_int_equal(held_output_pack(&h, true, &err), LATCH_ELIMIT);
	assert_string_equal(latch_error_message(&err), "the output is larger than 1000 bytes");
	held_output_done(&h);
	latch_error_done(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_held_output__gives_back_every_byte_in_order),
		cmocka_unit_test(test_held_output__nothing_held_writes_nothing),
		cmocka_unit_test(test_held_output__more_than_the_limit_is_an_error),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
