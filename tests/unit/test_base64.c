#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "latch/base64.h"
#include "latch/error.h"

static char *enc(const char *s, bool url)
{
	struct latch_buf b = LATCH_BUF_INIT(1024);
	assert_int_equal(latch_base64_encode(latch_view_str(s), url, &b), 0);
	return latch_buf_take(&b);
}

static char *dec(const char *s, bool url, int expect)
{
	struct latch_buf b = LATCH_BUF_INIT(1024);
	assert_int_equal(latch_base64_decode(latch_view_str(s), url, &b), expect);
	return latch_buf_take(&b);
}

/* RFC 4648 section 10 test vectors. */
static void test_base64__rfc4648_vectors(void **state)
{
	const char *plain[] = { "", "f", "fo", "foo", "foob", "fooba", "foobar" };
	const char *coded[] = { "", "Zg==", "Zm8=", "Zm9v", "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy" };
	for (size_t i = 0; i < 7; i++) {
		char *e = enc(plain[i], false);
		assert_string_equal(e, coded[i]);
		char *d = dec(coded[i], false, 0);
		assert_string_equal(d, plain[i]);
		free(e);
		free(d);
	}
}

static void test_base64__url_alphabet_without_padding(void **state)
{
	char *e = enc("\xfb\xff", true);
	assert_string_equal(e, "-_8");
	char *d = dec("-_8", true, 0);
	assert_string_equal(d, "\xfb\xff");
	free(e);
	free(d);
}

static void test_base64__rejects_bad_input(void **state)
{
	free(dec("Zm9v!", false, LATCH_EINVAL));
	free(dec("Z", false, LATCH_EINVAL));
	free(dec("-_8", false, LATCH_EINVAL)); /* URL alphabet is not the standard one */
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64__rfc4648_vectors),
		cmocka_unit_test(test_base64__url_alphabet_without_padding),
		cmocka_unit_test(test_base64__rejects_bad_input),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
