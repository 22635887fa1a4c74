/* Allocation-failure torture, in the spirit of curl's: each key path runs once with no
 * failure, then again with its 1st, 2nd, ... allocation failing, until a run makes no
 * failing allocation. Every run with a failure must end in a clean error (never a crash, and
 * under ASan never a leak), or in exactly the result of the run without one: a lost
 * allocation never weakens a guard (a policy the manifest breaks always refuses it).
 *
 * The test executable is linked with --wrap for malloc, calloc, realloc, strdup and strndup,
 * so latch's own allocations (lib/, injector/, init/render.c, sync-agent/config.c) come here,
 * and jansson's too: lib/json.c hands it malloc, which the link makes __wrap_malloc. libyaml's
 * and libc's own are not failed, nor jansson's inside json_loadb: its lexer ignores a failed
 * growth of its token buffer, drops the character and parses on, to a value silently short
 * or to assert(0) in lex_scan_string (jansson 2.14). lib/json.c refuses a parse in which an
 * allocation failed, but cannot keep jansson from aborting; json_loadb is wrapped too, so
 * the allocations it makes are neither counted nor failed here. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "init.h"
#include "inject.h"
#include "latch/dotenv.h"
#include "latch/json.h"
#include "latch/vault.h"
#include "latch/yaml.h"
#include "sync.h"
#include "vault_responses.h"

/* ---- the failing allocator ---- */

static bool armed;      /* count (and maybe fail) the allocations of the path under test */
static long allocations; /* made since armed */
static long fail_at;    /* the one to fail (1-based); 0: none */

/* Where to break in a debugger to see who made the failing allocation:
 *   gdb -ex 'break failing if fail_at == 134' build/tests/test_alloc_failure */
__attribute__((noinline)) static void failing(void)
{
	__asm__ volatile("");
}

static bool in_json_loadb;

json_t *__real_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error);
json_t *__wrap_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error);

json_t *__wrap_json_loadb(const char *buffer, size_t buflen, size_t flags, json_error_t *error)
{
	in_json_loadb = true;
	json_t *v = __real_json_loadb(buffer, buflen, flags, error);
	in_json_loadb = false;
	return v;
}

static bool fails_now(void)
{
	if (!armed || in_json_loadb)
		return false;
	allocations++;
	if (allocations != fail_at)
		return false;
	failing();
	return true;
}

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
char *__real_strdup(const char *s);
char *__real_strndup(const char *s, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);
char *__wrap_strdup(const char *s);
char *__wrap_strndup(const char *s, size_t n);

void *__wrap_malloc(size_t n)
{
	return fails_now() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
	return fails_now() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
	return fails_now() ? NULL : __real_realloc(p, n);
}

char *__wrap_strdup(const char *s)
{
	return fails_now() ? NULL : __real_strdup(s);
}

char *__wrap_strndup(const char *s, size_t n)
{
	return fails_now() ? NULL : __real_strndup(s, n);
}

/* A path writes what a user would get (the files, the manifest, the parsed values) to out
 * and returns 0, or returns a negative code with err set. */
typedef int (*path_fn)(struct latch_buf *out, struct latch_error *err);

struct outcome {
	int code;
	char *out;
	char *message;
};

static struct outcome run_path(path_fn path, long fail)
{
	struct latch_buf out = LATCH_BUF_INIT(1u << 20);
	struct latch_error err = LATCH_ERROR_INIT;
	allocations = 0;
	fail_at = fail;
	armed = true;
	int code = path(&out, &err);
	armed = false;
	struct outcome o = { code, latch_buf_take(&out), code < 0 ? strdup(latch_error_message(&err)) : NULL };
	latch_buf_done(&out);
	latch_error_done(&err);
	return o;
}

static void outcome_done(struct outcome *o)
{
	free(o->out);
	free(o->message);
}

/* Fails the 1st, 2nd, ... allocation of path until a run completes without a failure. */
static void torture(const char *name, path_fn path)
{
	struct outcome want = run_path(path, 0);
	long total = allocations;
	assert_true(total > 0); /* the wrapping works: the path allocates through it */
	long n;
	for (n = 1;; n++) {
		struct outcome got = run_path(path, n);
		bool failed_one = allocations >= n;
		if (!failed_one) { /* past the last allocation: the path ran unharmed */
			assert_int_equal(got.code, want.code);
			outcome_done(&got);
			break;
		}
		if (got.code < 0) {
			/* A clean error says something. */
			if (!got.message || !*got.message)
				fail_msg("%s: allocation %ld failed with code %d and no message", name, n, got.code);
		} else if (want.code < 0 || strcmp(got.out, want.out) != 0) {
			fail_msg("%s: with allocation %ld failing, the result changed (code %d, not %d):\n%s", name, n,
				 got.code, want.code, got.out ? got.out : "(none)");
		}
		outcome_done(&got);
	}
	printf("# %s: %ld allocations, each failed in turn\n", name, total);
	assert_true(n > total);
	outcome_done(&want);
}

/* ---- the paths ---- */

/* What a path read, written to out; an append the allocator failed is the path's failure. */
static int emit(struct latch_buf *out, struct latch_error *err, const char *fmt, ...) _printf_(3, 4);
static int emit(struct latch_buf *out, struct latch_error *err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = latch_buf_vprintf(out, fmt, ap);
	va_end(ap);
	return r < 0 ? latch_error_set(err, r, "out of memory") : 0;
}

/* Vault 1.21 responses (values replaced): db_creds and kv2 are shared with test_template. */
static const char pki_issue[] =
	"{\"request_id\":\"c3\",\"lease_id\":\"pki/issue/demo/Q9\",\"renewable\":false,\"lease_duration\":86399,"
	"\"data\":{\"certificate\":\"-----BEGIN CERTIFICATE-----\\nMIIB\\n-----END CERTIFICATE-----\","
	"\"expiration\":1764219400,"
	"\"issuing_ca\":\"-----BEGIN CERTIFICATE-----\\nMIIC\\n-----END CERTIFICATE-----\","
	"\"private_key\":\"-----BEGIN EC PRIVATE KEY-----\\nMHc\\n-----END EC PRIVATE KEY-----\","
	"\"private_key_type\":\"ec\",\"serial_number\":\"1a:2b\"},"
	"\"wrap_info\":null,\"warnings\":null,\"auth\":null}";

/* A LATCH_CONFIG with every output format, as latch-inject writes one. */
static const char init_config[] =
	"{\"version\":1,\"vault\":{\"address\":\"https://vault:8200\"},\"auth\":{\"role\":\"app\"},"
	"\"secrets\":["
	"{\"name\":\"db\",\"path\":\"database/creds/app\"},"
	"{\"name\":\"db-json\",\"path\":\"database/creds/app\",\"format\":\"json\"},"
	"{\"name\":\"app\",\"path\":\"secret/data/app\",\"format\":\"env\",\"file\":\"app.env\"},"
	"{\"name\":\"app-dot\",\"path\":\"secret/data/app\",\"format\":\"dotenv\"},"
	"{\"name\":\"pw\",\"path\":\"secret/data/app\",\"format\":\"raw\",\"key\":\"password\"},"
	"{\"name\":\"tls\",\"path\":\"pki/issue/demo\",\"params\":{\"common_name\":\"web.demo.svc\"},"
	"\"format\":\"pem\"},"
	"{\"name\":\"url\",\"format\":\"template\",\"template\":"
	"\"{{ with secret \\\"database/creds/app\\\" }}postgres://{{ .Data.username }}:{{ .Data.password }}@pg/demo"
	"{{ end }}\"}]}";

static const char *envelope_text(const char *path)
{
	return strcmp(path, "database/creds/app") == 0 ? db_creds
	       : strcmp(path, "secret/data/app") == 0 ? kv2
	       : pki_issue;
}

/* The responses, as latch-init holds them after its fetches. */
static int fetched(struct init_state *s, struct latch_error *err)
{
	if (init_collect_requests(s) < 0)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	struct latch_json_limits lim = LATCH_JSON_LIMITS_DEFAULT;
	int r = 0;
	for (size_t i = 0; r == 0 && i < s->n_requests; i++) {
		struct init_request *req = &s->requests[i];
		r = latch_json_parse(latch_view_str(envelope_text(req->path)), req->path, &lim, &req->envelope, err);
	}
	return r;
}

static int render_all(const struct init_state *s, struct latch_buf *out, struct latch_error *err)
{
	int r = 0;
	for (size_t i = 0; r == 0 && i < s->config->n_secrets; i++) {
		struct init_output files[3] = { 0 };
		size_t n = 0;
		r = init_render_secret(s, &s->config->secrets[i], files, &n, err);
		for (size_t f = 0; r == 0 && f < n; f++)
			r = emit(out, err, "== %s\n%s\n", files[f].relpath, latch_buf_str(&files[f].content));
		if (n)
			init_outputs_done(files, n);
	}
	return r;
}

/* latch-init: LATCH_CONFIG parsed, the Vault responses parsed, every file rendered. */
static int init_path(struct latch_buf *out, struct latch_error *err)
{
	struct latch_config c;
	int r = latch_config_parse(latch_view_str(init_config), "LATCH_CONFIG", &c, err);
	if (r < 0)
		return r;
	struct init_state s = { .config = &c };
	r = fetched(&s, err);
	if (r == 0)
		r = render_all(&s, out, err);
	for (size_t i = 0; i < s.n_requests; i++)
		json_decref(s.requests[i].envelope);
	free(s.requests);
	latch_config_done(&c);
	return r;
}

static const char deployment[] =
	"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: demo\nspec:\n"
	"  selector: {matchLabels: {app: web}}\n  template:\n    metadata:\n      labels: {app: web}\n"
	"      annotations:\n"
	"        vault.hashicorp.com/agent-inject: \"true\"\n"
	"        vault.hashicorp.com/role: demo\n"
	"        vault.hashicorp.com/agent-inject-secret-db: database/creds/app\n"
	"        vault.hashicorp.com/agent-inject-template-db: |\n"
	"          {{- with secret \"database/creds/app\" -}}\n"
	"          postgres://{{ .Data.username }}:{{ .Data.password }}@pg:5432/demo\n"
	"          {{- end }}\n"
	"        vault.hashicorp.com/agent-inject-secret-tls: pki/issue/demo\n"
	"        vault.hashicorp.com/agent-inject-file-tls: tls.pem\n"
	"    spec:\n      serviceAccountName: app\n      securityContext: {fsGroup: 1000}\n"
	"      containers:\n      - name: web\n        image: %s\n"
	"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain}\ndata: {key: \"0640\"}\n";

static int inject(const char *image, const struct latch_inject_options *o, struct latch_buf *out,
		  struct latch_error *err)
{
	char text[sizeof(deployment) + 256];
	snprintf(text, sizeof(text), deployment, image);
	struct latch_yaml_limits lim = { 1u << 20, 32, 1000, 100000 };
	struct latch_yaml_stream s;
	int r = latch_yaml_parse(latch_view_str(text), "web.yaml", &lim, &s, err);
	if (r < 0)
		return r;
	struct latch_buf warnings = LATCH_BUF_INIT(1u << 16);
	r = latch_inject_stream(&s, "web.yaml", o, &warnings, NULL, err);
	if (r == 0)
		r = latch_yaml_emit(&s, out, err);
	latch_buf_done(&warnings);
	latch_yaml_stream_done(&s);
	return r;
}

/* latch-inject: parse, inject, emit. */
static int inject_path(struct latch_buf *out, struct latch_error *err)
{
	struct latch_inject_options o = { .vault_address = "https://vault.vault.svc:8200" };
	return inject("registry.example/web@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
		      &o, out, err);
}

/* latch-inject with --policy all-images --require-image-digest: an unpinned app image from
 * another registry is refused whichever allocation fails. */
static int inject_policy_path(struct latch_buf *out, struct latch_error *err)
{
	static const char *const registries[] = { "registry.example", "ghcr.io/latch-dev" };
	struct latch_inject_options o = { .vault_address = "https://vault.vault.svc:8200",
					  .image = "ghcr.io/latch-dev/latch-init@sha256:"
						   "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
					  .require_image_digest = true,
					  .allowed_registries = registries,
					  .n_allowed_registries = 2,
					  .policy = LATCH_INJECT_POLICY_ALL_IMAGES };
	return inject("docker.io/library/nginx:1.27", &o, out, err);
}

/* latch-sync's render: a revision's YAML stream as the JSON objects it applies. */
static int manifests_path(struct latch_buf *out, struct latch_error *err)
{
	char text[sizeof(deployment) + 256];
	snprintf(text, sizeof(text), deployment, "nginx:1.27");
	struct latch_yaml_limits lim = { 1u << 20, 32, 1000, 100000 };
	struct latch_yaml_stream s;
	int r = latch_yaml_parse(latch_view_str(text), "web.yaml", &lim, &s, err);
	if (r < 0)
		return r;
	for (size_t i = 0; r == 0 && i < s.n_docs; i++) {
		json_t *obj = latch_yaml_to_json(s.docs[i].root);
		r = obj ? latch_json_dump(obj, out, err) : latch_error_set(err, LATCH_ENOMEM, "out of memory");
		json_decref(obj);
		if (r == 0)
			r = emit(out, err, "\n");
	}
	latch_yaml_stream_done(&s);
	return r;
}

static const char sync_config[] =
	"apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: prod}\nspec:\n"
	"  namespace: latch-system\n  cacheDir: /var/cache/latch-sync\n  sources:\n"
	"  - name: apps\n    url: https://git.example/org/config.git\n    ref: {branch: main}\n"
	"    path: clusters/prod\n    interval: 1m\n    prune: true\n    caFile: /etc/latch/git-ca.crt\n"
	"    credentials: {usernameFile: /etc/git/username, passwordFile: /etc/git/password}\n"
	"    verify: {allowedSignersFile: /etc/latch/allowed_signers, mode: HEAD, everyCommit: true}\n"
	"    inject: {vaultAddress: 'https://vault:8200', image: 'latch-init:1', tokenAudience: vault}\n"
	"  - name: infra\n    url: ssh://git@git.example/org/infra.git\n    ref: {tag: release}\n"
	"    path: overlays/prod\n    render: kustomize\n    timeout: 5m\n"
	"    webhook: {secretFile: /etc/latch/hook}\n";

/* latch-sync: its SyncConfig, back as the fields it read. */
static int sync_config_path(struct latch_buf *out, struct latch_error *err)
{
	struct sync_config c;
	int r = sync_config_parse(latch_view_str(sync_config), "sync.yaml", &c, err);
	if (r < 0)
		return r;
	r = emit(out, err, "%s %s %s %zu\n", c.name, c.namespace, c.cache_dir, c.n_sources);
	for (size_t i = 0; r == 0 && i < c.n_sources; i++) {
		const struct sync_source *s = &c.sources[i];
		r = emit(out, err, "%s %s %s %s %s %ld %d %u %s %s\n", s->name, s->url, s->branch ? s->branch : "-",
				 s->tag ? s->tag : "-", s->path ? s->path : "-", s->interval_s, s->prune, s->verify_mode,
				 s->verify_allowed_signers_file ? s->verify_allowed_signers_file : "-",
				 s->webhook_secret_file ? s->webhook_secret_file : "-");
	}
	sync_config_done(&c);
	return r;
}

/* A projected ServiceAccount token's claims (the signature is Vault's to check). */
static const char jwt[] =
	"eyJhbGciOiJSUzI1NiIsImtpZCI6ImsxIn0."
	"eyJhdWQiOlsidmF1bHQiXSwiZXhwIjoxNzY0MjE5NDAwLCJpc3MiOiJodHRwczovL2t1YmVybmV0ZXMuZGVmYXVsdC5zdmMiLCJr"
	"dWJlcm5ldGVzLmlvIjp7Im5hbWVzcGFjZSI6ImRlbW8iLCJzZXJ2aWNlYWNjb3VudCI6eyJuYW1lIjoiYXBwIn19LCJzdWIiOiJz"
	"eXN0ZW06c2VydmljZWFjY291bnQ6ZGVtbzphcHAifQ.c2ln";

static int jwt_path(struct latch_buf *out, struct latch_error *err)
{
	struct latch_jwt_identity id;
	int r = latch_jwt_identity_parse(jwt, &id);
	if (r < 0)
		return latch_error_set(err, r, "the token cannot be read");
	r = emit(out, err, "%s %s %s\n", id.namespace ? id.namespace : "-", id.name ? id.name : "-",
		 id.audience ? id.audience : "-");
	latch_jwt_identity_done(&id);
	return r;
}

static int dotenv_path(struct latch_buf *out, struct latch_error *err)
{
	static const char text[] = "# the app's settings\nexport PGHOST=pg\nPGUSER='v-app'\n"
				   "PGPASSWORD=\"a b\\\"c\"\n"
				   "EMPTY=\nURL=postgres://u@h/db # comment\n";
	struct latch_env_list list = { 0 };
	int r = latch_dotenv_parse(latch_view_str(text), "app.env", &list, err);
	for (size_t i = 0; r == 0 && i < list.n; i++)
		r = emit(out, err, "%s\n", list.items[i]);
	latch_env_list_done(&list);
	return r;
}

/* ---- the tests ---- */

static void test_alloc_failure__latch_init_config_and_every_format(void **state)
{
	torture("latch-init", init_path);
}

static void test_alloc_failure__latch_inject(void **state)
{
	torture("latch-inject", inject_path);
}

static void test_alloc_failure__latch_inject_policy_never_weakens(void **state)
{
	struct outcome refused = run_path(inject_policy_path, 0);
	assert_true(refused.code < 0);
	assert_non_null(strstr(refused.message, "nginx"));
	outcome_done(&refused);
	torture("latch-inject policy", inject_policy_path);
}

static void test_alloc_failure__manifests_as_json(void **state)
{
	torture("manifests as JSON", manifests_path);
}

static void test_alloc_failure__latch_sync_config(void **state)
{
	torture("SyncConfig", sync_config_path);
}

static void test_alloc_failure__service_account_token(void **state)
{
	torture("ServiceAccount token", jwt_path);
}

static void test_alloc_failure__dotenv(void **state)
{
	torture("dotenv", dotenv_path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_alloc_failure__latch_init_config_and_every_format),
		cmocka_unit_test(test_alloc_failure__latch_inject),
		cmocka_unit_test(test_alloc_failure__latch_inject_policy_never_weakens),
		cmocka_unit_test(test_alloc_failure__manifests_as_json),
		cmocka_unit_test(test_alloc_failure__latch_sync_config),
		cmocka_unit_test(test_alloc_failure__service_account_token),
		cmocka_unit_test(test_alloc_failure__dotenv),
	};
	/* LATCH_TEST_FILTER=*inject* runs only the tests it matches. */
	if (getenv("LATCH_TEST_FILTER"))
		cmocka_set_test_filter(getenv("LATCH_TEST_FILTER"));
	return cmocka_run_group_tests(tests, NULL, NULL);
}
