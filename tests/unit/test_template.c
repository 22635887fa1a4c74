#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "latch/template.h"
#include "vault_responses.h"

struct fixtures {
	json_t *db, *kv;
};

static struct fixtures fx;

static const json_t *lookup(const char *path, const json_t *params, void *ud)
{
	if (strcmp(path, "database/creds/app") == 0)
		return fx.db;
	if (strcmp(path, "secret/data/demo/config") == 0)
		return fx.kv;
	if (strcmp(path, "pki/issue/demo") == 0 && params)
		return fx.db;
	return NULL;
}

static int setup(void **state)
{
	fx.db = json_loads(db_creds, 0, NULL);
	fx.kv = json_loads(kv2, 0, NULL);
	return fx.db && fx.kv ? 0 : -1;
}

static int teardown(void **state)
{
	json_decref(fx.db);
	json_decref(fx.kv);
	return 0;
}

/* Parse and render; returns the output or NULL with err filled. */
static char *render_opts(const char *text, const struct latch_template_options *o, bool strict, struct latch_error *err)
{
	struct latch_template *t = NULL;
	if (latch_template_parse(text, "t", o, &t, err) < 0)
		return NULL;
	struct latch_buf out = LATCH_SECRET_BUF_INIT(1 << 20);
	int r = latch_template_render(t, lookup, NULL, strict, &out, err);
	latch_template_free(t);
	if (r < 0) {
		latch_buf_done(&out);
		return NULL;
	}
	return latch_buf_take(&out);
}

static void assert_renders(const char *text, const char *expected)
{
	struct latch_error err = LATCH_ERROR_INIT;
	char *out = render_opts(text, NULL, false, &err);
	if (!out)
		fail_msg("%s", latch_error_message(&err));
	assert_string_equal(out, expected);
	free(out);
}

static void assert_parse_error(const char *text, const char *expected)
{
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_template *t = NULL;
	assert_int_equal(latch_template_parse(text, "db.tmpl", NULL, &t, &err), LATCH_EPARSE);
	if (!strstr(latch_error_message(&err), expected))
		fail_msg("error '%s' does not contain '%s'", latch_error_message(&err), expected);
	latch_error_done(&err);
}

/* The examples of the Vault Agent Injector documentation. */
static void test_template__vault_docs_postgres_example(void **state)
{
	assert_renders("{{- with secret \"database/creds/app\" -}}\n"
		       "postgres://{{ .Data.username }}:{{ .Data.password }}@postgres:5432/appdb?sslmode=disable\n"
		       "{{- end }}\n",
		       "postgres://v-kubernet-app-abc-1764133000:A1a-pw@postgres:5432/appdb?sslmode=disable\n");
}

static void test_template__vault_docs_kv2_export_example(void **state)
{
	assert_renders("{{- with secret \"secret/data/demo/config\" -}}\n"
		       "  export user=\"{{ .Data.data.username }}\"\n"
		       "{{- end }}",
		       "export user=\"demo\"");
}

/* The injector's default "map" template on a DB role and on KV v2 (Go map printing). */
static void test_template__default_map_template(void **state)
{
	const char *map = "{{ with secret \"database/creds/app\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}";
	assert_renders(map, "password: A1a-pw\nusername: v-kubernet-app-abc-1764133000\n");
	assert_renders("{{ with secret \"secret/data/demo/config\" }}{{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }}{{ end }}",
		       "data: map[password:s3<&> username:demo]\n"
		       "metadata: map[created_time:2026-11-26T05:00:00.1Z custom_metadata:<nil> deletion_time: destroyed:false version:1]\n");
}

static void test_template__to_json_like_go(void **state)
{
	assert_renders("{{ with secret \"secret/data/demo/config\" }}{{ .Data.data | toJSON }}{{ end }}",
		       "{\"password\":\"s3\\u003c\\u0026\\u003e\",\"username\":\"demo\"}");
	assert_renders("{{ with secret \"secret/data/demo/config\" }}{{ toJSONPretty .Data.data }}{{ end }}",
		       "{\n  \"password\": \"s3\\u003c\\u0026\\u003e\",\n  \"username\": \"demo\"\n}");
}

static void test_template__secret_fields_index_printf_base64(void **state)
{
	assert_renders("{{ with secret \"database/creds/app\" }}{{ .LeaseDuration }} {{ .Renewable }} {{ index .Data \"username\" }}{{ end }}",
		       "3600 true v-kubernet-app-abc-1764133000");
	assert_renders("{{ printf \"%s=%d%%\" \"x\" 42 }}|{{ \"hi\" | base64Encode }}|{{ \"aGk=\" | base64Decode }}",
		       "x=42%|aGk=|hi");
	assert_renders("{{ $s := secret \"database/creds/app\" }}{{ $s.Data.username | printf \"%q\" }}",
		       "\"v-kubernet-app-abc-1764133000\"");
	/* As Go's fmt: %q is strconv.Quote (no HTML escapes), width and precision count runes,
	 * %x of a string is its bytes in hex. */
	assert_renders("{{ printf \"%q\" \"a<b\\\"c\\n\" }}", "\"a<b\\\"c\\n\"");
	assert_renders("{{ printf \"[%5s|%-4s|%.2s]\" \"\xc3\xa9\" \"ab\" \"h\xc3\xa9llo\" }}", "[    \xc3\xa9|ab  |h\xc3\xa9]");
	assert_renders("{{ printf \"%x %X %05d\" \"abc\" \"hi\" 7 }}", "616263 6869 00007");
}

static void test_template__if_else_range_else_with_else(void **state)
{
	assert_renders("{{ if false }}a{{ else if 0 }}b{{ else }}c{{ end }}", "c");
	assert_renders("{{ with secret \"secret/data/demo/config\" }}{{ if .Data.data.username }}yes{{ end }}{{ end }}", "yes");
	assert_renders("{{ with secret \"secret/data/demo/config\" }}{{ range .Data.nothere }}never{{ else }}empty{{ end }}{{ end }}",
		       "empty");
	assert_renders("{{ with \"\" }}x{{ else }}none{{ end }}", "none");
	assert_renders("{{/* a comment */}}a  {{- \" b \" -}}  c", "a b c");
}

static void test_template__custom_delimiters(void **state)
{
	struct latch_template_options o = { .left_delim = "[[", .right_delim = "]]" };
	struct latch_error err = LATCH_ERROR_INIT;
	char *out = render_opts("{{ keep }} [[ with secret \"database/creds/app\" ]][[ .Data.username ]][[ end ]]", &o, false, &err);
	assert_non_null(out);
	assert_string_equal(out, "{{ keep }} v-kubernet-app-abc-1764133000");
	free(out);
}

static void test_template__nil_and_float_print_like_go(void **state)
{
	json_t *saved = fx.db;
	fx.db = json_loads("{\"data\":{\"n\":null,\"f\":0.1,\"m\":{\"x\":null}}}", 0, NULL);
	assert_renders("{{ with secret \"database/creds/app\" }}{{ .Data.n }}|{{ .Data.f }}|{{ .Data.m }}{{ end }}",
		       "<no value>|0.1|map[x:<nil>]");
	json_decref(fx.db);
	fx.db = saved;
}

static void test_template__missing_key(void **state)
{
	const char *text = "{{ with secret \"database/creds/app\" }}{{ .Data.nope }}{{ end }}";
	assert_renders(text, "<no value>");
	struct latch_error err = LATCH_ERROR_INIT;
	assert_null(render_opts(text, NULL, true, &err));
	assert_non_null(strstr(latch_error_message(&err), "template t:1:42: map has no entry for key \"nope\""));
	latch_error_done(&err);
}

static void test_template__secrets_are_collected_once(void **state)
{
	struct latch_template *t = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_template_parse("{{ with secret \"database/creds/app\" }}{{ .Data.username }}{{ end }}"
					      "{{ with secret \"database/creds/app\" }}{{ .Data.password }}{{ end }}"
					      "{{ with secret \"pki/issue/demo\" \"common_name=a.demo.svc\" \"ttl=1h\" }}{{ end }}",
					      "t", NULL, &t, &err),
			 0);
	assert_int_equal(latch_template_n_secrets(t), 2);
	struct latch_template_secret s = latch_template_secret(t, 1);
	assert_string_equal(s.path, "pki/issue/demo");
	assert_string_equal(json_string_value(json_object_get(s.params, "common_name")), "a.demo.svc");
	assert_string_equal(json_string_value(json_object_get(s.params, "ttl")), "1h");
	assert_null(latch_template_secret(t, 0).params);
	latch_template_free(t);
}

static void test_template__unsupported_is_a_parse_error_with_position(void **state)
{
	assert_parse_error("line one\n  {{ env \"HOME\" }}", "template db.tmpl:2:6: function 'env' is not supported");
	assert_parse_error("{{ with secret \"a\" }}\nx", "db.tmpl:1:4: block is never closed");
	assert_parse_error("a\n{{ end }}", "db.tmpl:2:4: end without if");
	assert_parse_error("{{ secret .path }}", "db.tmpl:1:11: the arguments of secret must be string literals");
	assert_parse_error("{{ .x", "db.tmpl:1:1: unclosed action");
	assert_parse_error("{{ template \"x\" }}", "'template' is not supported");
	assert_parse_error("{{ with secret \"pki/issue/x\" \"common_name\" }}{{ end }}", "is not key=value");
	assert_parse_error("{{ toJSON 1 2 }}", "wrong number of arguments for toJSON");
	assert_parse_error("{{ .a | .b }}", "only a function can follow '|'");
	/* Checked when parsed, as Go does, not in the pod. */
	assert_parse_error("{{ $y }}", "db.tmpl:1:4: undefined variable \"$y\"");
	assert_parse_error("{{ range $k, $v := .x }}{{ end }}{{ $k }}", "undefined variable \"$k\"");
	assert_parse_error("{{ $a, $b := 1 }}", "too many declarations");
}

static void test_template__render_errors_name_the_position(void **state)
{
	struct latch_error err = LATCH_ERROR_INIT;
	assert_null(render_opts("\n{{ \"!!\" | base64Decode }}", NULL, false, &err));
	assert_non_null(strstr(latch_error_message(&err), "template t:2:11: base64Decode"));
	assert_null(render_opts("{{ with secret \"database/creds/app\" }}{{ .Bogus }}{{ end }}", NULL, false, &err));
	assert_non_null(strstr(latch_error_message(&err), "a secret has no field 'Bogus'"));
	latch_error_done(&err);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_template__vault_docs_postgres_example),
		cmocka_unit_test(test_template__vault_docs_kv2_export_example),
		cmocka_unit_test(test_template__default_map_template),
		cmocka_unit_test(test_template__to_json_like_go),
		cmocka_unit_test(test_template__secret_fields_index_printf_base64),
		cmocka_unit_test(test_template__if_else_range_else_with_else),
		cmocka_unit_test(test_template__custom_delimiters),
		cmocka_unit_test(test_template__nil_and_float_print_like_go),
		cmocka_unit_test(test_template__missing_key),
		cmocka_unit_test(test_template__secrets_are_collected_once),
		cmocka_unit_test(test_template__unsupported_is_a_parse_error_with_position),
		cmocka_unit_test(test_template__render_errors_name_the_position),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
