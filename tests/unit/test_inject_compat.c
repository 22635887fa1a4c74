/* The Vault Agent Injector's own test cases (vault-k8s v1.7.0, agent-inject/agent/ tests
 * and agent-inject/handler_test.go), run against latch-inject. Each case names its origin.
 * Where latch differs on purpose, the case asserts latch's behaviour and says why; README.md's
 * annotation table lists the same differences.
 *
 * A case gives the annotations of the injector's test pod (containers foobar, foo1, foo2;
 * foobar mounts a ServiceAccount token and "tobecopied" at /etc/somewhereelse) and checks
 * either the error or paths into {"pod": spec, "latch": latch-init container, "config":
 * LATCH_CONFIG, "warnings": text}. A path is dot-separated; "name=x" picks the list item
 * named x; "!path" asserts the path is absent; the value after " = " is compared with the
 * string, or with the JSON text of a non-string. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "inject.h"
#include "latch/json.h"

#define MAX_CHECKS 8

struct compat_case {
	const char *origin;
	const char *annotations; /* "key: value" lines; the key's prefix is vault.hashicorp.com/ unless it has one */
	const char *error;       /* expected error text, or NULL */
	const char *checks[MAX_CHECKS];
	const char *first_container_extra; /* YAML lines under the foobar container */
	bool no_role;            /* the case sets the role itself, or none */
};

static const struct latch_inject_options opts = { .vault_address = "https://vault.vault.svc:8200" };

static void append_annotations(struct latch_buf *yaml, const char *lines)
{
	for (const char *p = lines; p && *p;) {
		const char *nl = strchr(p, '\n');
		size_t n = nl ? (size_t)(nl - p) : strlen(p);
		const char *colon = memchr(p, ':', n);
		assert_non_null(colon);
		size_t key_len = (size_t)(colon - p);
		const char *value = colon + 1;
		while (*value == ' ' && value < p + n)
			value++;
		const char *end = p + n;
		if (end - value >= 2 && *value == '\'' && end[-1] == '\'')
			value++, end--; /* already quoted: '' is the empty value */
		bool has_prefix = memchr(p, '/', key_len) != NULL;
		latch_buf_printf(yaml, "    %s%.*s: '", has_prefix ? "" : "vault.hashicorp.com/", (int)key_len, p);
		for (const char *v = value; v < end; v++)
			latch_buf_append_str(yaml, *v == '\'' ? "''" : (char[]){ *v, 0 });
		latch_buf_append_str(yaml, "'\n");
		p += n + (nl ? 1 : 0);
	}
}

static char *pod_yaml(const struct compat_case *c)
{
	struct latch_buf yaml = LATCH_BUF_INIT(1 << 16);
	latch_buf_append_str(&yaml, "apiVersion: v1\nkind: Pod\nmetadata:\n  name: foo\n  namespace: test\n"
				    "  annotations:\n");
	if (strncmp(c->annotations, "agent-inject:", 13) != 0)
		latch_buf_append_str(&yaml, "    vault.hashicorp.com/agent-inject: 'true'\n");
	if (!c->no_role)
		latch_buf_append_str(&yaml, "    vault.hashicorp.com/role: demo\n");
	append_annotations(&yaml, c->annotations);
	latch_buf_append_str(&yaml, "spec:\n  volumes:\n  - name: tobecopied\n    emptyDir: {}\n  containers:\n"
				    "  - name: foobar\n    image: app:1\n    volumeMounts:\n"
				    "    - name: sa\n      mountPath: serviceaccount/somewhere\n"
				    "    - name: tobecopied\n      mountPath: /etc/somewhereelse\n");
	if (c->first_container_extra)
		latch_buf_append_str(&yaml, c->first_container_extra);
	latch_buf_append_str(&yaml, "  - name: foo1\n    image: app:1\n  - name: foo2\n    image: app:1\n");
	return latch_buf_take(&yaml);
}

static json_t *named_item(json_t *list, const char *name)
{
	size_t i;
	json_t *item;
	json_array_foreach(list, i, item) {
		const char *n = json_string_value(json_object_get(item, "name"));
		if (n && strcmp(n, name) == 0)
			return item;
	}
	return NULL;
}

/* Segments are separated by '.'; one in [brackets] is taken whole (a key with dots). */
static json_t *resolve(json_t *doc, const char *path)
{
	json_t *at = doc;
	for (const char *p = path; *p && at;) {
		char seg[256];
		size_t n;
		if (*p == '[') {
			n = strcspn(p + 1, "]");
			snprintf(seg, sizeof(seg), "%.*s", (int)n, p + 1);
			p += n + 2;
		} else {
			n = strcspn(p, ".");
			snprintf(seg, sizeof(seg), "%.*s", (int)n, p);
			p += n;
		}
		if (*p == '.')
			p++;
		char *eq = strchr(seg, '=');
		if (eq && json_is_array(at))
			at = named_item(at, eq + 1);
		else if (json_is_array(at))
			at = json_array_get(at, strtoul(seg, NULL, 10));
		else
			at = json_object_get(at, seg);
	}
	return at;
}

/* "path = value", "!path", or "path ~ text" (a string that holds text). */
static void check(const struct compat_case *c, json_t *doc, const char *spec)
{
	char path[512];
	if (spec[0] == '!') {
		json_t *v = resolve(doc, spec + 1);
		if (v && !json_is_null(v))
			fail_msg("%s: %s is present", c->origin, spec + 1);
		return;
	}
	const char *op = strstr(spec, " = ") ? strstr(spec, " = ") : strstr(spec, " ~ ");
	assert_non_null(op);
	snprintf(path, sizeof(path), "%.*s", (int)(op - spec), spec);
	const char *want = op + 3;
	json_t *v = resolve(doc, path);
	if (!v)
		fail_msg("%s: %s is absent", c->origin, path);
	char *text = json_is_string(v) ? strdup(json_string_value(v))
				       : json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
	bool ok = op[1] == '=' ? strcmp(text, want) == 0 : strstr(text, want) != NULL;
	if (!ok)
		fail_msg("%s: %s is '%s', expected %s'%s'", c->origin, path, text, op[1] == '=' ? "" : "to hold ", want);
	free(text);
}

static json_t *latch_container(json_t *spec)
{
	json_t *inits = json_object_get(spec, "initContainers");
	return named_item(inits, "latch-init");
}

static void run_case(const struct compat_case *c)
{
	char *text = pod_yaml(c);
	struct latch_yaml_stream stream;
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_buf warnings = LATCH_BUF_INIT(1 << 16);
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	if (latch_yaml_parse(latch_view_str(text), "pod.yaml", &lim, &stream, &err) < 0)
		fail_msg("%s: the test pod does not parse: %s\n%s", c->origin, latch_error_message(&err), text);
	int r = latch_inject_stream(&stream, "pod.yaml", &opts, &warnings, NULL, &err);
	if (c->error) {
		if (r == 0)
			fail_msg("%s: accepted, expected '%s'", c->origin, c->error);
		if (!strstr(latch_error_message(&err), c->error))
			fail_msg("%s: error '%s' does not hold '%s'", c->origin, latch_error_message(&err), c->error);
	} else {
		if (r < 0)
			fail_msg("%s: refused: %s", c->origin, latch_error_message(&err));
		json_t *pod = latch_yaml_to_json(stream.docs[0].root);
		json_t *spec = json_object_get(pod, "spec");
		json_t *latch = latch_container(spec);
		json_t *env = named_item(json_object_get(latch, "env"), "LATCH_CONFIG");
		json_t *config = env ? json_loads(json_string_value(json_object_get(env, "value")), 0, NULL) : json_null();
		json_t *doc = json_pack("{s:O,s:O?,s:o,s:s,s:O}", "pod", spec, "latch", latch, "config", config, "warnings",
					latch_buf_str(&warnings), "annotations", latch_json_path(pod, "metadata.annotations"));
		for (size_t i = 0; i < MAX_CHECKS && c->checks[i]; i++)
			check(c, doc, c->checks[i]);
		json_decref(doc);
		json_decref(pod);
	}
	latch_error_done(&err);
	latch_buf_done(&warnings);
	latch_yaml_stream_done(&stream);
	free(text);
}

static void run_cases(const struct compat_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++)
		run_case(&cases[i]);
}

#define RUN(cases) run_cases(cases, sizeof(cases) / sizeof(cases[0]))

/* annotations_test.go TestSecretAnnotationsWithPreserveCaseSensitivityFlagOff / FlagOn */
static void test_inject_compat__secret_names_and_case(void **state)
{
	static const struct compat_case cases[] = {
		{ "TestSecretAnnotationsWithPreserveCaseSensitivityFlagOff foobar", "agent-inject-secret-foobar: test1",
		  NULL, { "config.secrets.name=foobar.path = test1" } },
		{ "...FlagOff FOOBAR", "agent-inject-secret-FOOBAR: test2", NULL,
		  { "config.secrets.name=foobar.path = test2" } },
		{ "...FlagOff foobar-2_3", "agent-inject-secret-foobar-2_3: test3", NULL,
		  { "config.secrets.name=foobar-2_3.path = test3" } },
		{ "...FlagOff server.crt", "agent-inject-secret-server.crt: creds/tls/somecert", NULL,
		  { "config.secrets.[name=server.crt].path = creds/tls/somecert" } },
		/* An empty name names nothing; latch then injects a login only, as the injector does. */
		{ "...FlagOff agent-inject-secret-", "agent-inject-secret-: test5", NULL, { "config.secrets = []" } },
		{ "...FlagOff FOOBAR_EXPLICIT",
		  "agent-inject-secret-FOOBAR_EXPLICIT: test2\npreserve-secret-case-FOOBAR_EXPLICIT: true", NULL,
		  { "config.secrets.name=FOOBAR_EXPLICIT.path = test2" } },
		{ "...FlagOn FOOBAR", "agent-inject-secret-FOOBAR: test2\npreserve-secret-case: true", NULL,
		  { "config.secrets.name=FOOBAR.path = test2" } },
		/* The injector ignores a bad preserve-secret-case value; so does latch. */
		{ "preserve-secret-case: yes", "agent-inject-secret-FOO: p\npreserve-secret-case: yes", NULL,
		  { "config.secrets.name=foo.path = p" } },
		/* Differs on purpose: the injector renders both to one file, one over the other. */
		{ "names that differ only in case", "agent-inject-secret-DB: a\nagent-inject-secret-db: b",
		  "two secrets are named" },
		/* A blank value names no secret (annotations.go: strings.TrimSpace). */
		{ "blank agent-inject-secret", "agent-inject-secret-foo: '  '", NULL, { "config.secrets = []" } },
	};
	RUN(cases);
}

/* annotations_test.go TestSecretLocationFileAnnotations, config_test.go TestFilePathAndName */
static void test_inject_compat__file_names(void **state)
{
	static const struct compat_case cases[] = {
		{ "TestSecretLocationFileAnnotations simple name",
		  "agent-inject-secret-foobar: vault/test1\nagent-inject-file-foobar: foobar_simple_name", NULL,
		  { "config.secrets.name=foobar.file = foobar_simple_name" } },
		/* The injector joins an absolute name under the mount path; so does latch. */
		{ "TestSecretLocationFileAnnotations absolute file path",
		  "agent-inject-secret-foobar: vault/test1\nagent-inject-file-foobar: /some/path/foobar_simple_name", NULL,
		  { "config.secrets.name=foobar.file = some/path/foobar_simple_name" } },
		{ "TestSecretLocationFileAnnotations long file name",
		  "agent-inject-secret-foobar: vault/test1\n"
		  "agent-inject-file-foobar: this_is_very_long_and/would_fail_in_kubernetes/if_in_annotation",
		  NULL, { "config.secrets.name=foobar.file = "
		    "this_is_very_long_and/would_fail_in_kubernetes/if_in_annotation" } },
		/* The injector silently ignores it; latch ignores it too, with a warning. */
		{ "TestSecretLocationFileAnnotations file doesn't match secret annotation",
		  "agent-inject-secret-foobar: vault/test1\nagent-inject-file-notcorresponding: x", NULL,
		  { "!config.secrets.name=foobar.file",
		    "warnings ~ 'vault.hashicorp.com/agent-inject-file-notcorresponding' "
							"was ignored: no secret is named 'notcorresponding'" } },
		/* Differs on purpose: the injector lets "../" leave the volume. */
		{ "file name with ..", "agent-inject-secret-foobar: p\nagent-inject-file-foobar: ../../etc/passwd",
		  "must stay inside output_dir" },
		{ "TestFilePathAndName with secret volume mount set, relative file path",
		  "agent-inject-secret-foo: p\nsecret-volume-path-foo: /new/mount/path\n"
		  "agent-inject-file-foo: nested/foofile",
		  NULL, { "config.secrets.name=foo.file = nested/foofile",
			  "pod.containers.name=foo1.volumeMounts.1.mountPath = /new/mount/path" } },
		{ "TestFilePathAndName with global volume mount set",
		  "agent-inject-secret-foo: p\nsecret-volume-path: /new/mount/path", NULL,
		  { "config.output_dir = /new/mount/path",
		    "pod.containers.name=foo1.volumeMounts.0.mountPath = /new/mount/path" } },
	};
	RUN(cases);
}

/* annotations_test.go TestSecretTemplateAnnotations, TestSecretMixedTemplatesAnnotations,
 * TestSecretTemplateFileAnnotations */
static void test_inject_compat__templates(void **state)
{
	static const struct compat_case cases[] = {
		{ "TestSecretTemplateAnnotations#0",
		  "agent-inject-secret-foobar: test1\nagent-inject-template-foobar: foobarTemplate",
		  NULL, { "config.secrets.name=foobar.template = foobarTemplate",
		    "config.secrets.name=foobar.format = template" } },
		{ "TestSecretTemplateAnnotations#1", "agent-inject-secret-foobar2: test2\nagent-inject-template-foobar: ''",
		  NULL,
		  { "config.secrets.name=foobar2.format = map", "!config.secrets.name=foobar" } },
		{ "TestSecretTemplateAnnotations#2 (typo)",
		  "agent-inject-secret-foobar: test1\nagent-inject-templat-foobar: x",
		  "'vault.hashicorp.com/agent-inject-templat-foobar': is not an annotation latch knows" },
		{ "TestSecretTemplateAnnotations#3 template-only", "agent-inject-secret-foobar: test1\n"
		  "agent-inject-template-foobar2: foobarTemplate", NULL,
		  { "config.secrets.name=foobar.path = test1", "config.secrets.name=foobar2.template = foobarTemplate",
		    "!config.secrets.name=foobar2.path" } },
		{ "TestSecretTemplateAnnotations#5 prefix is case-sensitive", "agent-inject-secret-foobar2: test1\n"
		  "agent-inject-TEMPLATE-foobar: x",
		    "'vault.hashicorp.com/agent-inject-TEMPLATE-foobar': is not an annotation" },
		{ "TestSecretMixedTemplatesAnnotations foobar", "agent-inject-secret-foobar: test1\n"
		  "agent-inject-template-foobar: ''\nagent-inject-template-file-foobar: /etc/config.tmpl", NULL,
		  { "config.secrets.name=foobar.template_file = /etc/config.tmpl", "!config.secrets.name=foobar.path" } },
		{ "TestSecretMixedTemplatesAnnotations only-template-file",
		  "agent-inject-template-file-only-template-file: /etc/onlyTemplateFile", NULL,
		  { "config.secrets.name=only-template-file.template_file = /etc/onlyTemplateFile" } },
		/* Differs on purpose: a relative path would depend on latch-init's working directory. */
		{ "TestSecretMixedTemplatesAnnotations relative template file",
		  "agent-inject-template-file-only-template-file: onlyTemplateFile",
		  "'onlyTemplateFile' must be an absolute path in latch-init's container" },
		{ "TestSecretMixedTemplatesAnnotations barfoo delimiters", "agent-inject-secret-barfoo: test1\n"
		  "agent-template-left-delim-barfoo: ${\nagent-template-right-delim-barfoo: }\n"
		  "agent-inject-template-file-barfoo: /etc/config.tmpl", NULL,
		  { "config.secrets.name=barfoo.left_delim = ${", "config.secrets.name=barfoo.right_delim = }" } },
		{ "TestSecretMixedTemplatesAnnotations only-template-2", "agent-inject-template-only-template-2: "
		  "${ with secret \"kv/x\" }${ .Data.a }${ end }\nagent-template-left-delim-only-template-2: ${\n"
		  "agent-template-right-delim-only-template-2: }", NULL,
		  { "config.secrets.name=only-template-2.left_delim = ${" } },
		{ "TestSecretTemplateFileAnnotations[0] template wins", "agent-inject-secret-foobar: test1\n"
		  "agent-inject-template-foobar: foobarTemplate\nagent-inject-template-file-foobar: /etc/config.tmpl", NULL,
		  { "config.secrets.name=foobar.template = foobarTemplate", "!config.secrets.name=foobar.template_file" } },
		{ "TestSecretTemplateFileAnnotations[1]", "agent-inject-secret-foobar: test1\n"
		  "agent-inject-template-foobar: ''\nagent-inject-template-file-foobar: /etc/config.tmpl", NULL,
		  { "config.secrets.name=foobar.template_file = /etc/config.tmpl" } },
	};
	RUN(cases);
}

/* TestSecretPermissionAnnotations, TestSecretCommandAnnotations,
 * TestSecretErrorOnMissingKeyAnnotations, TestErrMissingKey */
static void test_inject_compat__per_secret_settings(void **state)
{
	static const struct compat_case cases[] = {
		{ "TestSecretPermissionAnnotations[0]", "agent-inject-secret-foobar: p\nagent-inject-perms-foobar: 0600",
		  NULL,
		  { "config.secrets.name=foobar.mode = 0600" } },
		/* The injector leaves the mode to Vault Agent's default, 0644; latch writes the same. */
		{ "TestSecretPermissionAnnotations[1]", "agent-inject-secret-foobar: p\nagent-inject-secret-foobar2: q\n"
		  "agent-inject-perms-foobar2: 0600", NULL, { "config.secrets.name=foobar.mode = 0644" } },
		/* Differs on purpose: the injector passes any text to Vault Agent. */
		{ "group-writable perms", "agent-inject-secret-foobar: p\nagent-inject-perms-foobar: 0666",
		  "would make the file group- or world-writable" },
		/* A shell command becomes the signal it sends: latch-init has no shell. */
		{ "TestSecretCommandAnnotations[0]", "agent-inject-secret-foobar: p\n"
		  "agent-inject-command-foobar: pkill -HUP nginx", NULL,
		  { "config.secrets.name=foobar.reload.signal = HUP",
		    "config.secrets.name=foobar.reload.process = nginx" } },
		{ "TestSecretCommandAnnotations[1]", "agent-inject-secret-foobar: p\nagent-inject-secret-foobar2: q\n"
		  "agent-inject-command-foobar2: pkill -HUP nginx", NULL, { "!config.secrets.name=foobar.reload" } },
		{ "command kill -HUP $(pidof nginx)", "agent-inject-secret-t: p\n"
		  "agent-inject-command-t: kill -HUP $(pidof nginx)", NULL,
		    { "config.secrets.name=t.reload.process = nginx" } },
		{ "command nginx -s reload", "agent-inject-secret-t: p\nagent-inject-command-t: /usr/sbin/nginx -s reload",
		  NULL, { "config.secrets.name=t.reload.signal = HUP", "config.secrets.name=t.reload.process = nginx" } },
		{ "config_test.go TestNewConfig command /tmp/smth.sh", "agent-inject-secret-t: p\n"
		  "agent-inject-command-t: /tmp/smth.sh", "latch-init runs no shell commands" },
		{ "command with a pipe", "agent-inject-secret-t: p\nagent-inject-command-t: pkill -HUP nginx; rm -rf /",
		  "latch-init runs no shell commands" },
		{ "latch.dev/reload", "agent-inject-secret-t: p\nlatch.dev/reload-t: USR1 gunicorn", NULL,
		  { "config.secrets.name=t.reload.signal = USR1", "config.secrets.name=t.reload.process = gunicorn" } },
		{ "latch.dev/reload bad signal", "agent-inject-secret-t: p\nlatch.dev/reload-t: KILL app",
		  "'KILL app' is not '<signal> <process>'" },
		{ "TestSecretErrorOnMissingKeyAnnotations force error", "agent-inject-secret-foobar: p\n"
		  "error-on-missing-key-foobar: True", NULL, { "config.secrets.name=foobar.error_on_missing_key = true" } },
		{ "TestSecretErrorOnMissingKeyAnnotations ignore error", "agent-inject-secret-foobar: p\n"
		  "error-on-missing-key-foobar: false", NULL, { "!config.secrets.name=foobar.error_on_missing_key" } },
		{ "TestSecretErrorOnMissingKeyAnnotations default value", "agent-inject-secret-foobar: p", NULL,
		  { "!config.secrets.name=foobar.error_on_missing_key" } },
		{ "TestSecretErrorOnMissingKeyAnnotations bad annotation", "agent-inject-secret-foobar: p\n"
		  "error-on-missing-key-foobar: unknown", "'unknown' is not true or false" },
	};
	RUN(cases);
}

/* annotations_test.go TestCouldErrorAnnotations: the booleans, as parseutil.ParseBool reads
 * them ("" is false). */
static void test_inject_compat__booleans(void **state)
{
	static const char *const keys[] = { "agent-pre-populate", "agent-pre-populate-only", "tls-skip-verify",
					    "agent-revoke-on-shutdown", "agent-share-process-namespace",
					    "agent-init-first", "agent-inject-token", "agent-run-as-same-user" };
	static const char *const valid[] = { "true", "false", "TRUE", "FALSE", "0", "1", "t", "f", "" };
	static const char *const invalid[] = { "tRuE", "fAlSe", "yes", "on" };
	for (size_t k = 0; k < sizeof(keys) / sizeof(keys[0]); k++) {
		bool same_user = strcmp(keys[k], "agent-run-as-same-user") == 0;
		for (size_t v = 0; v < sizeof(valid) / sizeof(valid[0]); v++) {
			char annotations[256];
			snprintf(annotations, sizeof(annotations), "agent-inject-secret-x: p\n%s: %s", keys[k], valid[v]);
			struct compat_case c = { "TestCouldErrorAnnotations valid", annotations, NULL, { NULL } };
			c.first_container_extra = same_user ? "    securityContext:\n      runAsUser: 1000\n" : NULL;
			run_case(&c);
		}
		for (size_t v = 0; v < sizeof(invalid) / sizeof(invalid[0]); v++) {
			char annotations[256];
			snprintf(annotations, sizeof(annotations), "agent-inject-secret-x: p\n%s: %s", keys[k], invalid[v]);
			struct compat_case c = { "TestCouldErrorAnnotations invalid", annotations, "is not true or false" };
			run_case(&c);
		}
	}
	static const struct compat_case cases[] = {
		{ "agent-pre-populate: '' is false", "agent-inject-secret-x: p\nagent-pre-populate: ''", NULL,
		  { "!latch.startupProbe" } },
		{ "agent-inject: '' injects nothing", "agent-inject: ''\nagent-inject-secret-x: p", NULL, { "!latch" } },
		{ "agent-inject: TRUE", "agent-inject: TRUE\nagent-inject-secret-x: p", NULL,
		  { "latch.name = latch-init" } },
		{ "agent-inject: tRuE", "agent-inject: tRuE\nagent-inject-secret-x: p", "'tRuE' is not true or false" },
		{ "TestCouldErrorAnnotations agent-revoke-grace 01", "agent-inject-secret-x: p\nagent-revoke-grace: 01",
		  NULL,
		  { "latch.name = latch-init" } },
		{ "TestCouldErrorAnnotations agent-revoke-grace -1", "agent-inject-secret-x: p\nagent-revoke-grace: -1",
		  "'-1' is not a number of seconds" },
		{ "TestCouldErrorAnnotations agent-run-as-user root", "agent-inject-secret-x: p\nagent-run-as-user: root",
		  "'root' is not a user or group id" },
		{ "TestCouldErrorAnnotations auth-min-backoff 1m", "agent-inject-secret-x: p\nauth-min-backoff: 1m", NULL,
		  { "latch.name = latch-init" } },
		{ "TestCouldErrorAnnotations auth-max-backoff x", "agent-inject-secret-x: p\nauth-max-backoff: x",
		  "'x' is not a duration" },
		{ "TestAuthMinMaxBackoff", "agent-inject-secret-x: p\nauth-min-backoff: 5s\nauth-max-backoff: 1m30s", NULL,
		  { "latch.name = latch-init" } },
	};
	RUN(cases);
}

/* agent_test.go TestShouldInject, handler_test.go TestHandlerHandle */
static void test_inject_compat__whether_and_how_to_inject(void **state)
{
	static const struct compat_case cases[] = {
		/* handler_test.go "basic pod injection": no secrets, a login only. */
		{ "TestHandlerHandle basic pod injection", "", NULL,
		  { "config.secrets = []", "config.auth.role = demo",
		    "annotations.[vault.hashicorp.com/agent-inject-status] = injected",
		    "pod.containers.name=foobar.volumeMounts.name=latch-secrets.mountPath = /vault/secrets" } },
		{ "TestInjectTokenSink token true", "agent-inject-token: true", NULL,
		  { "config.token_file_name = token" } },
		{ "TestInjectTokenSink custom secret volume path",
		  "agent-inject-token: true\nsecret-volume-path: /new/secrets",
		  NULL, { "config.output_dir = /new/secrets", "config.token_file_name = token" } },
		{ "TestValidate role missing", "agent-inject-secret-x: p", "no Vault role: set vault.hashicorp.com/role",
		  .no_role = true },
		{ "TestShouldInject status update", "agent-inject-status: update\nagent-inject-secret-x: p", NULL,
		  { "latch.name = latch-init" } },
		{ "TestShouldInject status injected", "agent-inject-status: injected\nagent-inject-secret-x: p", NULL,
		  { "!latch", "warnings ~ already injected" } },
		{ "TestHandlerHandle init first", "agent-inject-secret-x: p\nagent-init-first: true", NULL,
		  { "pod.initContainers.0.name = latch-init" } },
		{ "TestHandlerHandle shareProcessNamespaceAdded", "agent-share-process-namespace: true", NULL,
		  { "pod.shareProcessNamespace = true" } },
		{ "TestHandlerHandle invalid default template", "agent-inject-default-template: foobar",
		  "'foobar' is not map or json" },
		{ "TestDefaultTemplateOverride JSON", "agent-inject-secret-x: p\nagent-inject-default-template: JSON", NULL,
		  { "config.secrets.name=x.format = json" } },
		{ "TestDefaultTemplateOverride MAP", "agent-inject-secret-x: p\nagent-inject-default-template: MAP", NULL,
		  { "config.secrets.name=x.format = map" } },
		{ "TestDefaultTemplateOverride jsn", "agent-inject-default-template: jsn", "'jsn' is not map or json" },
		{ "TestDefaultTemplateOverride empty", "agent-inject-default-template: ''", "'' is not map or json" },
		{ "TestVaultNamespaceAnnotation foobar", "namespace: fooBar", NULL, { "config.vault.namespace = fooBar" } },
		{ "TestVaultNamespaceAnnotation empty", "namespace: ''", NULL, { "!config.vault.namespace" } },
		{ "TestContainerSidecarRevokeHook annotation true", "agent-revoke-on-shutdown: 'true'", NULL,
		  { "config.revoke_on_shutdown = true" } },
		{ "TestContainerSidecarRevokeHook annotation false", "agent-revoke-on-shutdown: 'false'", NULL,
		  { "!config.revoke_on_shutdown" } },
	};
	RUN(cases);
}

/* annotations_test.go TestInjectContainers, container_sidecar_test.go TestContainerSidecarVolume */
static void test_inject_compat__containers_and_volumes(void **state)
{
	static const struct compat_case cases[] = {
		{ "TestInjectContainers No InjectionContainers annotations", "", NULL,
		  { "pod.containers.name=foobar.volumeMounts.name=latch-secrets.readOnly = true",
		    "pod.containers.name=foo1.volumeMounts.name=latch-secrets.readOnly = true",
		    "pod.containers.name=foo2.volumeMounts.name=latch-secrets.readOnly = true" } },
		{ "TestInjectContainers with container name", "agent-inject-containers: foo1", NULL,
		  { "!pod.containers.name=foobar.volumeMounts.name=latch-secrets",
		    "pod.containers.name=foo1.volumeMounts.name=latch-secrets.readOnly = true",
		    "!pod.containers.name=foo2.volumeMounts" } },
		{ "TestInjectContainers with multiple container names", "agent-inject-containers: foo1,foo2", NULL,
		  { "!pod.containers.name=foobar.volumeMounts.name=latch-secrets",
		    "pod.containers.name=foo2.volumeMounts.name=latch-secrets.readOnly = true" } },
		{ "TestContainerSidecarVolume", "agent-inject-secret-secret1: p1\n"
		  "secret-volume-path-secret1: /etc/container_environment\nagent-inject-secret-secret2: p2\n"
		  "secret-volume-path-secret2: /etc/default_path\nsecret-volume-path: /etc/default_path\n"
		  "agent-inject-secret-secret3: p3\nagent-extra-secret: extrasecret\nagent-copy-volume-mounts: foobar",
		    NULL,
		  { "pod.containers.name=foo1.volumeMounts.0.mountPath = /etc/default_path",
		    "pod.containers.name=foo1.volumeMounts.1.mountPath = /etc/container_environment",
		    "latch.volumeMounts.name=latch-extra-secret.mountPath = /vault/custom",
		    "pod.volumes.name=latch-extra-secret.secret.secretName = extrasecret",
		    "latch.volumeMounts.name=tobecopied.mountPath = /etc/somewhereelse",
		    /* The ServiceAccount mount is not copied, as in the injector. */
		    "!latch.volumeMounts.name=sa" } },
	};
	RUN(cases);
}

/* container_sidecar_test.go TestContainerSidecarCustomResources, TestContainerSidecarSecurityContext,
 * annotations_test.go Test_runAsSameID */
static void test_inject_compat__resources_and_security_context(void **state)
{
	static const struct compat_case cases[] = {
		{ "TestContainerSidecarCustomResources valid Mi", "agent-limits-cpu: 500m\nagent-limits-mem: 128Mi\n"
		  "agent-limits-ephemeral: 128Mi\nagent-requests-cpu: 250m\nagent-requests-mem: 64Mi\n"
		  "agent-requests-ephemeral: 64Mi", NULL,
		  { "latch.resources.limits.cpu = 500m", "latch.resources.limits.ephemeral-storage = 128Mi",
		    "latch.resources.requests.memory = 64Mi", "latch.resources.requests.ephemeral-storage = 64Mi" } },
		{ "TestContainerSidecarCustomResources valid none", "agent-limits-cpu: ''\nagent-limits-mem: ''\n"
		  "agent-requests-cpu: ''\nagent-requests-mem: ''", NULL,
		  { "latch.resources.limits = {}", "latch.resources.requests = {}" } },
		{ "TestContainerSidecarCustomResources invalid cpu Mi notation", "agent-limits-cpu: 500mi",
		  "'500mi' is not a resource quantity" },
		{ "TestContainerSidecarCustomResources invalid mem m notation", "agent-limits-mem: 128mb",
		  "'128mb' is not a resource quantity" },
		{ "TestContainerSidecarCustomResources invalid mem g notation", "agent-requests-ephemeral: 128g",
		  "'128g' is not a resource quantity" },
		{ "TestContainerSidecarSecurityContext defaults", "", NULL,
		  { "latch.securityContext.runAsUser = 100", "latch.securityContext.runAsGroup = 1000",
		    "latch.securityContext.runAsNonRoot = true", "latch.securityContext.readOnlyRootFilesystem = true",
		    "latch.securityContext.allowPrivilegeEscalation = false" } },
		{ "TestContainerSidecarSecurityContext root user and group", "agent-run-as-user: 0\nagent-run-as-group: 0",
		  NULL, { "latch.securityContext.runAsNonRoot = false" } },
		{ "TestContainerSidecarSecurityContext non-root user and root group", "agent-run-as-user: 100\n"
		  "agent-run-as-group: 0", NULL, { "latch.securityContext.runAsNonRoot = false" } },
		{ "TestContainerSidecarSecurityContext no security context", "agent-set-security-context: false", NULL,
		  { "!latch.securityContext" } },
		/* Differs on purpose: the injector reads "" as uid 0, root; latch keeps its default. */
		{ "empty agent-run-as-user", "agent-run-as-user: ''", NULL, { "latch.securityContext.runAsUser = 100" } },
		{ "Test_runAsSameID true with app SCC", "agent-run-as-same-user: true", NULL,
		  { "latch.securityContext.runAsUser = 123456", "latch.securityContext.runAsGroup = 1000" },
		  "    securityContext:\n      runAsUser: 123456\n" },
		{ "Test_runAsSameID true with no app SCC", "agent-run-as-same-user: true",
		  "agent-run-as-same-user needs securityContext.runAsUser" },
		{ "Test_runAsSameID true with app SCC as root user", "agent-run-as-same-user: true",
		  "agent-run-as-same-user needs securityContext.runAsUser (not root)", { NULL },
		  "    securityContext:\n      runAsUser: 0\n" },
		{ "Test_runAsSameID invalid annotation set", "agent-run-as-same-user: rooooooot", "is not true or false" },
	};
	RUN(cases);
}

/* annotations_test.go TestAuthConfigAnnotations */
static void test_inject_compat__auth_config(void **state)
{
	static const struct compat_case cases[] = {
		{ "TestAuthConfigAnnotations[0]", "role: backwardscompat", NULL, { "config.auth.role = backwardscompat" },
		  .no_role = true },
		{ "TestAuthConfigAnnotations[1] role wins", "role: backwardscompat\nauth-config-role: lowerprio", NULL,
		  { "config.auth.role = backwardscompat" }, .no_role = true },
		{ "auth-config-role alone", "auth-config-role: lowerprio", NULL, { "config.auth.role = lowerprio" },
		  .no_role = true },
		{ "TestAuthConfigAnnotations[2] token path", "auth-config-token-path: /var/run/secrets/other/token", NULL,
		  { "config.auth.token_file = /var/run/secrets/other/token" } },
		/* Differs on purpose: these configure other Vault Agent auth methods; latch-init's
		 * kubernetes and jwt logins have nothing to set them on. */
		{ "TestAuthConfigAnnotations[3]", "auth-config-name: foo",
		  "latch-init's kubernetes login takes role and token_path only; 'name' has no equivalent" },
		{ "jwt path", "auth-type: jwt\nauth-path: auth/jwt\nauth-config-path: /var/run/secrets/tokens/jwt", NULL,
		  { "config.auth.method = jwt", "config.auth.token_file = /var/run/secrets/tokens/jwt" } },
	};
	RUN(cases);
}

/* Annotations that configure Vault Agent's own internals: refused with the reason, unless
 * the value asks for nothing (TestContainerCache, TestAgentJsonPatch, TestConfigAgentQuit,
 * TestParseTemplateConfigAnnotations, TestDisableIdleConnections, TestParseTelemetryAnnotations). */
static void test_inject_compat__vault_agent_internals(void **state)
{
	static const struct compat_case cases[] = {
		{ "TestContainerCache cache enabled", "agent-cache-enable: true", "latch-init has no cache or listener" },
		{ "TestContainerCache cache disabled", "agent-cache-enable: false", NULL, { "latch.name = latch-init" } },
		{ "TestAgentJsonPatch null patch", "agent-json-patch: 'null'", NULL, { "latch.name = latch-init" } },
		{ "TestAgentJsonPatch empty list", "agent-json-patch: '[]'", NULL, { "latch.name = latch-init" } },
		{ "TestAgentJsonPatch set different name", "agent-json-patch: '[{\"op\":\"replace\",\"path\":\"/name\","
		  "\"value\":\"different-name\"}]'", "it patches the Vault Agent container" },
		{ "TestConfigAgentQuit enable_quit true", "agent-enable-quit: true", "latch-init has no listener" },
		{ "TestConfigAgentQuit enable_quit false", "agent-enable-quit: false", NULL,
		  { "latch.name = latch-init" } },
		{ "TestParseTemplateConfigAnnotations lease renewal threshold", "template-lease-renewal-threshold: 0.75",
		  "latch-init renews at 2/3 of a lease" },
		{ "TestDisableIdleConnections full list", "agent-disable-idle-connections: auto-auth,caching,templating",
		  "a Vault Agent transport setting" },
		{ "TestParseTelemetryAnnotations prometheus", "agent-telemetry-prometheus_retention_time: 5s",
		  "latch-init has no telemetry stanza" },
		{ "agent-configmap", "agent-configmap: demo", "it holds Vault Agent HCL" },
		{ "go-max-procs", "go-max-procs: '2'", "latch-init is not a Go program" },
	};
	RUN(cases);
}

/* latch.dev/exec-env (vault-k8s#14): the app's command runs through latch-init exec. */
static void test_inject_compat__exec_env(void **state)
{
	static const struct compat_case cases[] = {
		{ "exec-env wraps the command", "agent-inject-secret-db: database/creds/app\nlatch.dev/exec-env: db\n"
		  "latch.dev/exec-containers: foobar\nlatch.dev/exec-on-change: restart\nlatch.dev/exec-grace-seconds: '5'",
		  NULL,
		  { "pod.containers.name=foobar.command = [\"/var/run/latch/bin/latch-init\",\"exec\",\"--env-file\","
		    "\"/vault/secrets/db\",\"--on-change\",\"restart\",\"--grace\",\"5\",\"--\","
		    "\"psql\",\"-c\",\"select 1\"]",
		    "!pod.containers.name=foobar.args", "config.secrets.name=db.format = dotenv",
		    "config.copy_self_to = /var/run/latch/bin", "pod.volumes.name=latch-bin.emptyDir.medium = Memory",
		    "pod.containers.name=foobar.volumeMounts.name=latch-bin.readOnly = true",
		    "latch.volumeMounts.name=latch-bin.mountPath = /var/run/latch/bin",
		    "!pod.containers.name=foo1.volumeMounts.name=latch-bin" },
		  "    command: [psql]\n    args: ['-c', 'select 1']\n" },
		{ "exec-env without a command", "agent-inject-secret-db: p\nlatch.dev/exec-env: db",
		  "container 'foobar' has no command: latch.dev/exec-env runs the app's command through latch-init exec" },
		{ "exec-env names a json secret",
		  "agent-inject-secret-db: p\nlatch.dev/format-db: json\nlatch.dev/exec-env: db",
		  "its format must be env or dotenv, not json" },
		{ "exec-env names no secret", "agent-inject-secret-db: p\nlatch.dev/exec-env: other",
		  "no secret is named 'other'" },
		{ "exec-env names no container", "agent-inject-secret-db: p\nlatch.dev/exec-env: db\n"
		  "latch.dev/exec-containers: web", "latch.dev/exec-containers names 'web', which is not a container" },
		{ "exec-env names the secret in another case", "agent-inject-secret-DB: p\nlatch.dev/exec-env: DB\n"
		  "latch.dev/exec-containers: foobar", NULL,
		  { "pod.containers.name=foobar.command.3 = /vault/secrets/db" }, "    command: [psql]\n" },
	};
	RUN(cases);
}

/* Injecting the output again changes nothing, the wrapped command included. */
static void test_inject_compat__exec_env_is_idempotent(void **state)
{
	struct compat_case c = { "exec-env twice", "agent-inject-secret-db: p\nlatch.dev/exec-env: db\n"
				 "latch.dev/exec-containers: foobar", NULL, { NULL },
				 "    command: [psql]\n" };
	char *text = pod_yaml(&c);
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_buf once = LATCH_BUF_INIT(1 << 20), twice = LATCH_BUF_INIT(1 << 20);
	struct latch_buf warnings = LATCH_BUF_INIT(1 << 16);
	struct latch_yaml_stream s1, s2;
	assert_int_equal(latch_yaml_parse(latch_view_str(text), "pod.yaml", &lim, &s1, &err), 0);
	assert_int_equal(latch_inject_stream(&s1, "pod.yaml", &opts, &warnings, NULL, &err), 0);
	assert_int_equal(latch_yaml_emit(&s1, &once, &err), 0);
	assert_int_equal(latch_yaml_parse(latch_buf_view(&once), "once.yaml", &lim, &s2, &err), 0);
	assert_int_equal(latch_inject_stream(&s2, "once.yaml", &opts, &warnings, NULL, &err), 0);
	assert_int_equal(latch_yaml_emit(&s2, &twice, &err), 0);
	assert_string_equal(latch_buf_str(&once), latch_buf_str(&twice));
	latch_yaml_stream_done(&s1);
	latch_yaml_stream_done(&s2);
	latch_buf_done(&once);
	latch_buf_done(&twice);
	latch_buf_done(&warnings);
	free(text);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inject_compat__secret_names_and_case),
		cmocka_unit_test(test_inject_compat__file_names),
		cmocka_unit_test(test_inject_compat__templates),
		cmocka_unit_test(test_inject_compat__per_secret_settings),
		cmocka_unit_test(test_inject_compat__booleans),
		cmocka_unit_test(test_inject_compat__whether_and_how_to_inject),
		cmocka_unit_test(test_inject_compat__containers_and_volumes),
		cmocka_unit_test(test_inject_compat__resources_and_security_context),
		cmocka_unit_test(test_inject_compat__auth_config),
		cmocka_unit_test(test_inject_compat__vault_agent_internals),
		cmocka_unit_test(test_inject_compat__exec_env),
		cmocka_unit_test(test_inject_compat__exec_env_is_idempotent),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
