/* latch-sync's SyncConfig: where a source's folder is, and what it refuses, said at
 * file:line:column. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "sync.h"

static const char config_head[] =
	"apiVersion: latch.dev/v1alpha1\n"
	"kind: SyncConfig\n"
	"metadata: {name: staging}\n"
	"spec:\n"
	"  namespace: latch-system\n"
	"  sources:\n"
	"  - name: platform\n"
	"    url: https://git.latch.test/gitops.git\n";

static int parse_with_path(const char *path, struct sync_config *c, struct latch_error *err)
{
	char text[1024];
	snprintf(text, sizeof(text), "%s    path: '%s'\n", config_head, path);
	return sync_config_parse(latch_view_str(text), "sync.yaml", c, err);
}

static void assert_folder(const char *written, const char *kept)
{
	struct sync_config c;
	struct latch_error err = LATCH_ERROR_INIT;
	if (parse_with_path(written, &c, &err) < 0)
		fail_msg("%s: %s", written, latch_error_message(&err));
	assert_string_equal(c.sources[0].path, kept);
	sync_config_done(&c);
}

static void test_sync_config__one_folder_has_one_spelling(void **state)
{
	assert_folder("./clusters//staging/./", "clusters/staging");
	assert_folder("/clusters/staging", "clusters/staging");
	assert_folder("clusters/staging", "clusters/staging");
	assert_folder(".", "");
	assert_folder("./", "");
	assert_folder("..a/b..", "..a/b..");
}

static void test_sync_config__a_path_out_of_the_repository_is_refused_where_it_is(void **state)
{
	static const char *const climbing[] = { "..", "../other-repo", "clusters/../../etc", "a/./../../b", "x/.." };
	for (size_t i = 0; i < sizeof(climbing) / sizeof(*climbing); i++) {
		struct sync_config c;
		struct latch_error err = LATCH_ERROR_INIT;
		assert_int_equal(parse_with_path(climbing[i], &c, &err), LATCH_EINVAL);
		char want[256];
		snprintf(want, sizeof(want),
			 "sync.yaml:9:11: spec.sources[0].path: '%s' climbs out of the repository with '..'", climbing[i]);
		assert_string_equal(latch_error_message(&err), want);
		latch_error_done(&err);
	}
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sync_config__one_folder_has_one_spelling),
		cmocka_unit_test(test_sync_config__a_path_out_of_the_repository_is_refused_where_it_is),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
