#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "webhook.h"

/* GitHub's documented test vector ("Validating webhook deliveries"). */
static const char secret[] = "It's a Secret to Everybody\n";
static const char body[] = "Hello, World!";
static const char github[] = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

static bool signed_with(const char *s, const char *b, const char *hub, const char *latch, const char *gitlab)
{
	return sync_webhook_signed(latch_view_str(s), latch_view_str(b), hub, latch, gitlab);
}

static void test_webhook__github_signature(void **state)
{
	assert_true(signed_with(secret, body, github, NULL, NULL));
	assert_true(signed_with(secret, body, NULL, github, NULL)); /* the generic header, same scheme */
	assert_false(signed_with(secret, "Hello, World?", github, NULL, NULL));
	assert_false(signed_with("another secret", body, github, NULL, NULL));
	assert_false(signed_with(secret, body, "sha256=757107ea", NULL, NULL));
	assert_false(signed_with(secret, body,
		"sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17",
				 NULL, NULL));
	assert_false(signed_with(secret, body, NULL, NULL, NULL));
}

static void test_webhook__gitlab_token(void **state)
{
	assert_true(signed_with("s3cret\n", body, NULL, NULL, "s3cret"));
	assert_false(signed_with("s3cret", body, NULL, NULL, "s3cre"));
	assert_false(signed_with("s3cret", body, NULL, NULL, "s3cret "));
	/* An empty secret authorizes nobody, not an empty token. */
	assert_false(signed_with("\n", body, NULL, NULL, ""));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_webhook__github_signature),
		cmocka_unit_test(test_webhook__gitlab_token),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
