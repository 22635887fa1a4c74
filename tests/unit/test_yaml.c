#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "latch/yaml.h"

static const char deployment[] =
	"apiVersion: apps/v1\n"
	"kind: Deployment\n"
	"metadata:\n"
	"  name: web\n"
	"  annotations:\n"
	"    vault.hashicorp.com/agent-inject: \"true\"\n"
	"    vault.hashicorp.com/agent-inject-template-db: |\n"
	"      {{- with secret \"database/creds/app\" -}}\n"
	"      postgres://{{ .Data.username }}@pg/demo\n"
	"      {{- end }}\n"
	"    zeta: 'single'\n"
	"spec:\n"
	"  replicas: 2\n"
	"  template:\n"
	"    spec:\n"
	"      containers:\n"
	"        - name: app\n"
	"          image: nginx\n"
	"          args: [a, b]\n"
	"---\n"
	"apiVersion: v1\n"
	"kind: ConfigMap\n"
	"metadata:\n"
	"  name: cfg\n";

static int parse(const char *text, struct latch_yaml_stream *s, struct latch_error *err)
{
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	return latch_yaml_parse(latch_view_str(text), "deploy.yaml", &lim, s, err);
}

static void test_yaml__tree_keeps_order_style_and_positions(void **state)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse(deployment, &s, &err), 0);
	assert_int_equal(s.n_docs, 2);
	struct latch_yaml_node *root = s.docs[0].root;
	assert_int_equal(root->kind, LATCH_YAML_MAPPING);
	assert_string_equal(root->pairs[0].key->value, "apiVersion");
	assert_string_equal(root->pairs[3].key->value, "spec");
	struct latch_yaml_node *ann = latch_yaml_map_get(latch_yaml_map_get(root, "metadata"), "annotations");
	struct latch_yaml_node *inject = latch_yaml_map_get(ann, "vault.hashicorp.com/agent-inject");
	assert_string_equal(inject->value, "true");
	assert_int_equal(inject->style, LATCH_YAML_STYLE_DOUBLE);
	assert_int_equal(inject->line, 6);
	assert_int_equal(inject->column, 39);
	struct latch_yaml_node *tmpl = latch_yaml_map_get(ann, "vault.hashicorp.com/agent-inject-template-db");
	assert_int_equal(tmpl->style, LATCH_YAML_STYLE_LITERAL);
	assert_non_null(strstr(tmpl->value, "{{- with secret \"database/creds/app\" -}}\n"));
	assert_int_equal(latch_yaml_map_get(ann, "zeta")->style, LATCH_YAML_STYLE_SINGLE);
	assert_string_equal(latch_yaml_map_get_str(s.docs[1].root, "kind"), "ConfigMap");
	assert_int_equal(s.docs[1].line, 20);
	latch_yaml_stream_done(&s);
}

static void test_yaml__round_trip_is_stable(void **state)
{
	struct latch_yaml_stream s = { 0 }, s2 = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse(deployment, &s, &err), 0);
	struct latch_buf out = LATCH_BUF_INIT(1 << 20), out2 = LATCH_BUF_INIT(1 << 20);
	assert_int_equal(latch_yaml_emit(&s, &out, &err), 0);
	assert_int_equal(parse(latch_buf_str(&out), &s2, &err), 0);
	assert_int_equal(latch_yaml_emit(&s2, &out2, &err), 0);
	assert_string_equal(latch_buf_str(&out), latch_buf_str(&out2));
	/* Styles survive: the quoted "true" stays a string, the template stays a literal block. */
	assert_non_null(strstr(latch_buf_str(&out), "vault.hashicorp.com/agent-inject: \"true\"\n"));
	assert_non_null(strstr(latch_buf_str(&out), "vault.hashicorp.com/agent-inject-template-db: |"));
	assert_non_null(strstr(latch_buf_str(&out), "zeta: 'single'"));
	assert_non_null(strstr(latch_buf_str(&out), "\n---\n"));
	latch_buf_done(&out);
	latch_buf_done(&out2);
	latch_yaml_stream_done(&s);
	latch_yaml_stream_done(&s2);
}

static void test_yaml__syntax_error_has_line_and_column(void **state)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("a: 1\nb: [1, 2\nc: 3\n", &s, &err), LATCH_EPARSE);
	assert_true(strncmp(latch_error_message(&err), "deploy.yaml:", 12) == 0);
	assert_non_null(strstr(latch_error_message(&err), ":3:"));
	latch_error_done(&err);
	assert_int_equal(parse("key: value\n  bad indent: x\n", &s, &err), LATCH_EPARSE);
	assert_non_null(strstr(latch_error_message(&err), "deploy.yaml:2:"));
	latch_error_done(&err);
}

static void test_yaml__invalid_utf8_has_position(void **state)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("a: ok\nb: bad\xff\n", &s, &err), LATCH_EPARSE);
	assert_non_null(strstr(latch_error_message(&err), "deploy.yaml:2:7:"));
	assert_non_null(strstr(latch_error_message(&err), "UTF-8"));
	latch_error_done(&err);
}

static void test_yaml__limits(void **state)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_yaml_limits depth = { 1 << 20, 3, 10, 1000 };
	assert_int_equal(latch_yaml_parse(latch_view_str("a: {b: {c: {d: 1}}}\n"), "x", &depth, &s, &err), LATCH_ELIMIT);
	assert_non_null(strstr(latch_error_message(&err), "x:1:12: nesting"));
	struct latch_yaml_limits docs = { 1 << 20, 10, 2, 1000 };
	assert_int_equal(latch_yaml_parse(latch_view_str("a: 1\n---\nb: 2\n---\nc: 3\n"), "x", &docs, &s, &err),
			 LATCH_ELIMIT);
	assert_non_null(strstr(latch_error_message(&err), "documents"));
	struct latch_yaml_limits size = { 4, 10, 10, 1000 };
	assert_int_equal(latch_yaml_parse(latch_view_str("a: 12345\n"), "x", &size, &s, &err), LATCH_ELIMIT);
	latch_error_done(&err);
}

static void test_yaml__aliases_refused(void **state)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("a: &x [1, 2]\nb: *x\n", &s, &err), LATCH_EUNSUPPORTED);
	assert_non_null(strstr(latch_error_message(&err), "deploy.yaml:2:4: YAML aliases"));
	latch_error_done(&err);
}

/* A policy reading the first 'image' and a JSON conversion keeping the last once let an
 * image through: equal keys in one mapping are refused where the second one is. */
static void test_yaml__duplicate_keys_refused(void **state)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("spec:\n  containers:\n  - name: a\n    image: registry.example/ok:1\n"
			       "    image: evil.example/x:1\n", &s, &err), LATCH_EPARSE);
	assert_string_equal(latch_error_message(&err),
			    "deploy.yaml:5:5: duplicate key 'image' (first at line 4, column 5)");
	latch_error_done(&err);
	assert_int_equal(parse("{a: 1, b: {a: 2}, c: [a, a]}\n", &s, &err), 0);
	latch_yaml_stream_done(&s);
}

static void test_yaml__empty_documents_skipped(void **state)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("---\n# only a comment\n---\na: 1\n---\n", &s, &err), 0);
	assert_int_equal(s.n_docs, 1);
	latch_yaml_stream_done(&s);
}

static void test_yaml__edit_keeps_key_order(void **state)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(parse("b: 1\na: 2\nc: 3\n", &s, &err), 0);
	struct latch_yaml_node *root = s.docs[0].root;
	assert_int_equal(latch_yaml_map_set(root, "a", latch_yaml_scalar_new("two", LATCH_YAML_STYLE_ANY)), 0);
	assert_int_equal(latch_yaml_map_set(root, "d", latch_yaml_scalar_new("4", LATCH_YAML_STYLE_DOUBLE)), 0);
	assert_true(latch_yaml_map_remove(root, "c"));
	assert_false(latch_yaml_map_remove(root, "c"));
	struct latch_yaml_node *seq = latch_yaml_collection_new(LATCH_YAML_SEQUENCE);
	assert_int_equal(latch_yaml_seq_append(seq, latch_yaml_scalar_new("x", LATCH_YAML_STYLE_ANY)), 0);
	assert_int_equal(latch_yaml_map_set(root, "e", seq), 0);
	struct latch_buf out = LATCH_BUF_INIT(4096);
	assert_int_equal(latch_yaml_emit(&s, &out, &err), 0);
	assert_string_equal(latch_buf_str(&out), "b: 1\na: two\nd: \"4\"\ne:\n- x\n");
	struct latch_yaml_node *copy = latch_yaml_node_clone(root);
	assert_string_equal(latch_yaml_map_get_str(copy, "a"), "two");
	latch_yaml_node_free(copy);
	latch_buf_done(&out);
	latch_yaml_stream_done(&s);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_yaml__tree_keeps_order_style_and_positions),
		cmocka_unit_test(test_yaml__round_trip_is_stable),
		cmocka_unit_test(test_yaml__syntax_error_has_line_and_column),
		cmocka_unit_test(test_yaml__invalid_utf8_has_position),
		cmocka_unit_test(test_yaml__limits),
		cmocka_unit_test(test_yaml__aliases_refused),
		cmocka_unit_test(test_yaml__duplicate_keys_refused),
		cmocka_unit_test(test_yaml__empty_documents_skipped),
		cmocka_unit_test(test_yaml__edit_keeps_key_order),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
