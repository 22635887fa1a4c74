/* latch-inject end to end: its output is accepted by the real kube-apiserver, and a Deployment
 * annotated for the Vault Agent Injector, injected and applied, runs on the stack's node (its
 * kubelet, containerd and runc) into working credentials and documented template output. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "latch/yaml.h"
#include "node.h"
#include "stack.h"

static const char *bin(const char *var)
{
	const char *v = getenv(var);
	if (!v)
		fail_msg("%s is not set", var);
	return v;
}

struct kind_path {
	const char *kind, *prefix, *plural;
};

static const struct kind_path kinds[] = {
	{ "Pod", "api/v1", "pods" },
	{ "Deployment", "apis/apps/v1", "deployments" },
	{ "StatefulSet", "apis/apps/v1", "statefulsets" },
	{ "DaemonSet", "apis/apps/v1", "daemonsets" },
	{ "ReplicaSet", "apis/apps/v1", "replicasets" },
	{ "ReplicationController", "api/v1", "replicationcontrollers" },
	{ "Job", "apis/batch/v1", "jobs" },
	{ "CronJob", "apis/batch/v1", "cronjobs" },
	{ "Secret", "api/v1", "secrets" },
};

static const struct kind_path *path_of(const char *kind)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(kinds[i].kind, kind) == 0)
			return &kinds[i];
	fail_msg("no resource path for kind %s", kind);
	return NULL;
}

/* Server-side apply of one object (JSON text); dry_run asks the server to validate only. */
static long apply(const json_t *obj, bool dry_run, json_t **ret)
{
	const struct kind_path *k = path_of(latch_json_get_str(obj, "kind"));
	const char *ns = latch_json_get_str(json_object_get(obj, "metadata"), "namespace");
	char url[2048];
	snprintf(url, sizeof(url), "%s/%s/namespaces/%s/%s/%s?fieldManager=latch-e2e&force=true%s", stack.kube_url, k->prefix,
		 ns ? ns : "demo", k->plural, latch_json_get_str(json_object_get(obj, "metadata"), "name"), dry_run ? "&dryRun=All" : "");
	struct latch_tls_options tls = { .ca_file = stack.ca, .client_cert_file = stack.admin_cert, .client_key_file = stack.admin_key };
	struct latch_http_client *kube = stack_client(&tls);
	char *body = json_dumps(obj, JSON_COMPACT);
	const char *headers[] = { "Content-Type: application/apply-patch+yaml" };
	struct latch_http_request req = { .method = "PATCH", .url = url, .headers = headers, .n_headers = 1, .body = latch_view_str(body) };
	struct latch_http_response resp = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_http_do(kube, &req, &resp, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	long status = resp.status;
	if (status >= 300)
		fail_msg("apply of %s answered %ld: %s", latch_json_get_str(obj, "kind"), status, latch_buf_str(&resp.body));
	if (ret)
		*ret = json_loads(latch_buf_str(&resp.body), 0, NULL);
	latch_http_response_done(&resp);
	free(body);
	latch_http_client_free(kube);
	return status;
}

/* latch-inject as a filter: input file -> output text (NULL on failure), exit status. */
static char *run_inject(const char *input_path, const char *extra_arg, int *ret_status, char **ret_stderr)
{
	char *dir = stack_mkdtemp("latch-e2e-inject");
	char out[512], err_path[512];
	snprintf(out, sizeof(out), "%s/out", dir);
	snprintf(err_path, sizeof(err_path), "%s/err", dir);
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "'%s' --vault-addr '%s' --image latch-init:e2e %s -f '%s' >'%s' 2>'%s'", bin("LATCH_INJECT"),
		 stack.vault_addr, extra_arg ? extra_arg : "", input_path, out, err_path);
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	*ret_status = stack_run(argv, envp, "/dev/null", 60, NULL);
	char *text = stack_read_file(out);
	if (ret_stderr)
		*ret_stderr = stack_read_file(err_path);
	stack_rm_rf(dir);
	free(dir);
	return text;
}

static json_t *docs_as_json(const char *yaml)
{
	return node_parse_yaml(yaml, "output");
}

static char *write_temp(const char *text)
{
	static char path[512];
	char *dir = stack_mkdtemp("latch-e2e-manifest");
	snprintf(path, sizeof(path), "%s/in.yaml", dir);
	stack_write_file(path, text);
	free(dir);
	return path;
}

static const char pipeline_manifest[] =
	"apiVersion: apps/v1\n"
	"kind: Deployment\n"
	"metadata:\n"
	"  name: web\n"
	"  namespace: demo\n"
	"spec:\n"
	"  selector:\n"
	"    matchLabels: {app: web}\n"
	"  template:\n"
	"    metadata:\n"
	"      labels: {app: web}\n"
	"      annotations:\n"
	"        vault.hashicorp.com/agent-inject: \"true\"\n"
	"        vault.hashicorp.com/role: \"demo\"\n"
	"        vault.hashicorp.com/tls-secret: \"vault-tls\"\n"
	"        vault.hashicorp.com/ca-cert: \"/vault/tls/ca.crt\"\n"
	"        vault.hashicorp.com/agent-inject-secret-db: \"database/creds/app\"\n"
	"        vault.hashicorp.com/agent-inject-secret-db-creds: \"database/creds/app\"\n"
	"        vault.hashicorp.com/agent-inject-template-db-creds: |\n"
	"          {{- with secret \"database/creds/app\" -}}\n"
	"          postgres://{{ .Data.username }}:{{ .Data.password }}@postgres:5432/appdb?sslmode=disable\n"
	"          {{- end }}\n"
	"        vault.hashicorp.com/agent-inject-secret-config: \"secret/data/demo/config\"\n"
	"        vault.hashicorp.com/agent-inject-template-config: |\n"
	"          {{- with secret \"secret/data/demo/config\" -}}\n"
	"            export api_key=\"{{ .Data.data.password }}\"\n"
	"          {{- end }}\n"
	"        vault.hashicorp.com/agent-inject-secret-cert: \"pki/issue/demo\"\n"
	"        latch.dev/format-cert: pem\n"
	"        latch.dev/params-cert: common_name=web.demo.svc\n"
	"    spec:\n"
	"      serviceAccountName: app\n"
	"      containers:\n"
	"      - name: web\n"
	"        command: [sleep, '3600']\n"
	"        image: "; /* the busybox image the node holds */

static char *map_value(const char *map, const char *key)
{
	char prefix[128];
	snprintf(prefix, sizeof(prefix), "%s: ", key);
	const char *p = strstr(map, prefix);
	return p ? strndup(p + strlen(prefix), strcspn(p + strlen(prefix), "\n")) : NULL;
}

static void test_inject_e2e__pipeline_to_working_files(void **state)
{
	struct latch_k8s *k = node_kube();
	node_ensure_vault_tls(k, "demo");
	char manifest[sizeof(pipeline_manifest) + 256];
	snprintf(manifest, sizeof(manifest), "%s%s\n", pipeline_manifest, node_image("BUSYBOX"));
	json_t *docs = node_inject(manifest);
	node_apply_all(k, docs);

	/* The pod the Deployment made, running on the node with its files in the memory volume. */
	json_t *pod = node_wait_pod(k, "demo", "app%3Dweb", node_pod_running_ready, NULL, 120);
	char *secrets = node_volume_dir(pod, "latch-secrets");
	char path[2400];
	snprintf(path, sizeof(path), "%s/db", secrets);
	char *db = stack_read_file(path);
	snprintf(path, sizeof(path), "%s/db-creds", secrets);
	char *url = stack_read_file(path);
	snprintf(path, sizeof(path), "%s/config", secrets);
	char *config = stack_read_file(path);
	assert_non_null(db);
	char *user = map_value(db, "username"), *password = map_value(db, "password");
	assert_int_equal(stack_psql_login(user, password), 0);

	/* The injector documentation's templates, byte for byte, with the same credentials. */
	char expected[1024];
	snprintf(expected, sizeof(expected), "postgres://%s:%s@postgres:5432/appdb?sslmode=disable\n", user, password);
	assert_string_equal(url, expected);
	json_t *kv;
	assert_int_equal(stack_vault_root("GET", "secret/data/demo/config", NULL, &kv), 200);
	snprintf(expected, sizeof(expected), "export api_key=\"%s\"\n", json_string_value(latch_json_path(kv, "data.data.password")));
	assert_string_equal(config, expected);

	char ca[1024], cert[2400];
	snprintf(ca, sizeof(ca), "%s/pki/vault-pki-ca.crt", stack.dir);
	snprintf(cert, sizeof(cert), "%s/cert.crt", secrets);
	char *argv[] = { "openssl", "verify", "-CAfile", ca, cert, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	assert_int_equal(stack_run(argv, envp, "/dev/null", 30, NULL), 0);

	char *logtext = node_logs("demo", latch_json_get_str(json_object_get(pod, "metadata"), "name"),
				  "latch-init", false);
	assert_null(strstr(logtext, password));
	free(logtext);
	free(db); free(url); free(config); free(user); free(password);
	free(secrets);
	json_decref(kv);
	node_delete_all(k, docs);
	json_decref(pod);
	json_decref(docs);
	latch_k8s_free(k);
}

static void test_inject_e2e__every_kind_passes_server_dry_run(void **state)
{
	const char *ann = "{vault.hashicorp.com/agent-inject: 'true', vault.hashicorp.com/role: demo, "
			  "vault.hashicorp.com/agent-inject-secret-db: database/creds/app}";
	char text[16384];
	snprintf(text, sizeof(text),
		 "apiVersion: v1\nkind: Pod\nmetadata: {name: p, namespace: demo, annotations: %s}\nspec:\n  serviceAccountName: app\n  containers: [{name: a, image: nginx}]\n"
		 "---\napiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s, namespace: demo}\nspec:\n  serviceName: s\n  selector: {matchLabels: {app: s}}\n  template:\n    metadata: {labels: {app: s}, annotations: %s}\n    spec: {containers: [{name: a, image: nginx}]}\n"
		 "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d, namespace: demo}\nspec:\n  selector: {matchLabels: {app: d}}\n  template:\n    metadata: {labels: {app: d}, annotations: %s}\n    spec: {containers: [{name: a, image: nginx}]}\n"
		 "---\napiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: r, namespace: demo}\nspec:\n  selector: {matchLabels: {app: r}}\n  template:\n    metadata: {labels: {app: r}, annotations: %s}\n    spec: {containers: [{name: a, image: nginx}]}\n"
		 "---\napiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc, namespace: demo}\nspec:\n  selector: {app: rc}\n  template:\n    metadata: {labels: {app: rc}, annotations: %s}\n    spec: {containers: [{name: a, image: nginx}]}\n"
		 "---\napiVersion: batch/v1\nkind: Job\nmetadata: {name: j, namespace: demo}\nspec:\n  template:\n    metadata: {annotations: %s}\n    spec: {restartPolicy: Never, containers: [{name: a, image: nginx}]}\n"
		 "---\napiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c, namespace: demo}\nspec:\n  schedule: '*/5 * * * *'\n  jobTemplate:\n    spec:\n      template:\n        metadata: {annotations: %s}\n        spec: {restartPolicy: Never, containers: [{name: a, image: nginx}]}\n",
		 ann, ann, ann, ann, ann, ann, ann);
	int status;
	char *out = run_inject(write_temp(text), NULL, &status, NULL);
	assert_int_equal(status, 0);
	json_t *docs = docs_as_json(out);
	assert_int_equal(json_array_size(docs), 7);
	size_t i;
	json_t *doc;
	json_array_foreach(docs, i, doc) {
		json_t *result = NULL;
		long code = apply(doc, true, &result);
		assert_true(code == 200 || code == 201);
		char *dump = json_dumps(result, JSON_COMPACT);
		assert_non_null(strstr(dump, "latch-init"));
		free(dump);
		json_decref(result);
	}
	json_decref(docs);
	free(out);
}

static void test_inject_e2e__bad_input_writes_nothing(void **state)
{
	int status;
	char *err = NULL;
	char *out = run_inject(write_temp("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n   bad: indent\n"), NULL, &status, &err);
	assert_int_equal(status, 1);
	assert_string_equal(out, "");
	assert_non_null(strstr(err, "in.yaml:5:"));
	free(out);
	free(err);
	out = run_inject(write_temp("apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  namespace: demo\n  annotations:\n"
				    "    vault.hashicorp.com/agent-inject: 'true'\n    vault.hashicorp.com/role: demo\n"
				    "    vault.hashicorp.com/agent-inject-secret-DB: database/creds/app\n"
				    "    vault.hashicorp.com/agent-inject-secret-db: secret/data/demo/config\n"
				    "spec:\n  containers: [{name: a, image: nginx}]\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n"),
			 NULL, &status, &err);
	assert_int_equal(status, 1);
	assert_string_equal(out, "");
	assert_non_null(strstr(err, "Pod 'demo/p'"));
	assert_non_null(strstr(err, "two secrets are named 'db'"));
	free(out);
	free(err);
}

static void test_inject_e2e__krm_function(void **state)
{
	const char *list = "apiVersion: config.kubernetes.io/v1\nkind: ResourceList\nfunctionConfig:\n  apiVersion: v1\n  kind: ConfigMap\n"
			   "  metadata: {name: latch}\n  data: {image: registry.example/latch-init:9}\nitems:\n"
			   "- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: p\n    annotations:\n      vault.hashicorp.com/agent-inject: 'true'\n"
			   "      vault.hashicorp.com/role: demo\n      vault.hashicorp.com/agent-inject-secret-db: database/creds/app\n"
			   "      config.kubernetes.io/index: '0'\n  spec:\n    containers: [{name: a, image: nginx}]\n";
	char *dir = stack_mkdtemp("latch-e2e-krm");
	char in[512], out[512], cmd[2048];
	snprintf(in, sizeof(in), "%s/in", dir);
	snprintf(out, sizeof(out), "%s/out", dir);
	stack_write_file(in, list);
	snprintf(cmd, sizeof(cmd), "'%s' --vault-addr '%s' <'%s' >'%s'", bin("LATCH_INJECT"), stack.vault_addr, in, out);
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	assert_int_equal(stack_run(argv, envp, "/dev/null", 30, NULL), 0);
	char *text = stack_read_file(out);
	json_t *docs = docs_as_json(text);
	json_t *rl = json_array_get(docs, 0);
	assert_string_equal(latch_json_get_str(rl, "kind"), "ResourceList");
	json_t *pod = json_array_get(json_object_get(rl, "items"), 0);
	json_t *latch = json_array_get(latch_json_path(pod, "spec.initContainers"), 0);
	assert_string_equal(latch_json_get_str(latch, "image"), "registry.example/latch-init:9");
	assert_string_equal(latch_json_get_str(latch_json_path(pod, "metadata.annotations"), "config.kubernetes.io/index"), "0");
	json_decref(docs);
	free(text);
	stack_rm_rf(dir);
	free(dir);
}

/* As a kustomize exec function: kustomize build --enable-alpha-plugins --enable-exec. */
static void test_inject_e2e__kustomize_exec_function(void **state)
{
	char *dir = stack_mkdtemp("latch-e2e-kustomize");
	char path[1024], wrapper[1024];
	snprintf(wrapper, sizeof(wrapper), "%s/latch-inject-fn", dir);
	char script[2048];
	snprintf(script, sizeof(script), "#!/bin/sh\nexec '%s' --vault-addr '%s'\n", bin("LATCH_INJECT"), stack.vault_addr);
	stack_write_file(wrapper, script);
	chmod(wrapper, 0755);
	snprintf(path, sizeof(path), "%s/kustomization.yaml", dir);
	stack_write_file(path, "resources: [deploy.yaml]\ntransformers: [latch.yaml]\n");
	snprintf(path, sizeof(path), "%s/latch.yaml", dir);
	char fn[2048];
	snprintf(fn, sizeof(fn),
		 "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: latch\n  annotations:\n    config.kubernetes.io/function: |\n"
		 "      exec:\n        path: %s\ndata:\n  image: registry.example/latch-init:7\n", wrapper);
	stack_write_file(path, fn);
	snprintf(path, sizeof(path), "%s/deploy.yaml", dir);
	stack_write_file(path, pipeline_manifest);
	char out[1024], cmd[4096];
	snprintf(out, sizeof(out), "%s/out.yaml", dir);
	snprintf(cmd, sizeof(cmd), "'%s' build --enable-alpha-plugins --enable-exec '%s' >'%s'", bin("KUSTOMIZE_BIN"), dir, out);
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	assert_int_equal(stack_run(argv, envp, "/dev/null", 60, NULL), 0);
	char *text = stack_read_file(out);
	json_t *docs = docs_as_json(text);
	json_t *latch = json_array_get(latch_json_path(json_array_get(docs, 0), "spec.template.spec.initContainers"), 0);
	assert_string_equal(latch_json_get_str(latch, "name"), "latch-init");
	assert_string_equal(latch_json_get_str(latch, "image"), "registry.example/latch-init:7");
	json_decref(docs);
	free(text);
	stack_rm_rf(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inject_e2e__pipeline_to_working_files),
		cmocka_unit_test(test_inject_e2e__every_kind_passes_server_dry_run),
		cmocka_unit_test(test_inject_e2e__bad_input_writes_nothing),
		cmocka_unit_test(test_inject_e2e__krm_function),
		cmocka_unit_test(test_inject_e2e__kustomize_exec_function),
	};
	return cmocka_run_group_tests(tests, stack_load, NULL);
}
