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

static const struct latch_inject_options default_opts = { .vault_address = "https://vault.vault.svc:8200" };

struct result {
	struct latch_yaml_stream stream;
	char *yaml;
	struct latch_buf warnings;
	struct latch_error err;
	int rc;
};

static void inject_text(const char *text, const struct latch_inject_options *opts, struct result *res)
{
	memset(res, 0, sizeof(*res));
	latch_buf_init(&res->warnings, 1 << 20, false);
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	assert_int_equal(latch_yaml_parse(latch_view_str(text), "in.yaml", &lim, &res->stream, &res->err), 0);
	res->rc = latch_inject_stream(&res->stream, "in.yaml", opts ? opts : &default_opts, &res->warnings, NULL, &res->err);
	if (res->rc == 0) {
		struct latch_buf out = LATCH_BUF_INIT(1 << 24);
		assert_int_equal(latch_yaml_emit(&res->stream, &out, &res->err), 0);
		res->yaml = latch_buf_take(&out);
	}
}

static void result_done(struct result *res)
{
	latch_yaml_stream_done(&res->stream);
	free(res->yaml);
	latch_buf_done(&res->warnings);
	latch_error_done(&res->err);
}

static json_t *doc_json(const struct result *res, size_t i)
{
	return latch_yaml_to_json(res->stream.docs[i].root);
}

static json_t *pod_spec(json_t *obj)
{
	const char *kind = json_string_value(json_object_get(obj, "kind"));
	if (strcmp(kind, "Pod") == 0)
		return json_object_get(obj, "spec");
	if (strcmp(kind, "CronJob") == 0)
		return latch_json_path(obj, "spec.jobTemplate.spec.template.spec");
	return latch_json_path(obj, "spec.template.spec");
}

static json_t *named(json_t *list, const char *name)
{
	size_t i;
	json_t *item;
	json_array_foreach(list, i, item) if (strcmp(json_string_value(json_object_get(item, "name")), name) == 0) return item;
	return NULL;
}

static json_t *latch_config_of(json_t *container)
{
	json_t *env = named(json_object_get(container, "env"), "LATCH_CONFIG");
	assert_non_null(env);
	return json_loads(json_string_value(json_object_get(env, "value")), 0, NULL);
}


static const char deployment[] =
	"apiVersion: apps/v1\n"
	"kind: Deployment\n"
	"metadata:\n"
	"  name: web\n"
	"  namespace: demo\n"
	"spec:\n"
	"  template:\n"
	"    metadata:\n"
	"      annotations:\n"
	"        vault.hashicorp.com/agent-inject: \"true\"\n"
	"        vault.hashicorp.com/role: demo\n"
	"        vault.hashicorp.com/agent-inject-secret-DB: database/creds/app\n"
	"        vault.hashicorp.com/agent-inject-secret-config: secret/data/demo/config\n"
	"        vault.hashicorp.com/agent-inject-template-config: |\n"
	"          {{- with secret \"secret/data/demo/config\" -}}\n"
	"          {{ .Data.data.username }}\n"
	"          {{- end }}\n"
	"        vault.hashicorp.com/agent-inject-perms-config: \"0400\"\n"
	"    spec:\n"
	"      serviceAccountName: app\n"
	"      initContainers:\n"
	"      - name: migrate\n"
	"        image: migrate:1\n"
	"      containers:\n"
	"      - name: web\n"
	"        image: nginx:1.27\n"
	"      - name: metrics\n"
	"        image: exporter:2\n";

static void test_inject__deployment_gets_latch(void **state)
{
	struct result res;
	inject_text(deployment, NULL, &res);
	assert_int_equal(res.rc, 0);
	json_t *obj = doc_json(&res, 0);
	json_t *spec = pod_spec(obj);
	json_t *inits = json_object_get(spec, "initContainers");
	assert_int_equal(json_array_size(inits), 2);
	json_t *latch = json_array_get(inits, 1); /* appended after the existing init container */
	assert_string_equal(json_string_value(json_object_get(latch, "name")), "latch-init");
	assert_string_equal(json_string_value(json_object_get(latch, "image")), LATCH_INJECT_DEFAULT_IMAGE);
	assert_string_equal(json_string_value(json_object_get(latch, "restartPolicy")), "Always");
	assert_string_equal(json_string_value(json_array_get(json_object_get(latch, "args"), 0)), "sidecar");
	assert_non_null(json_object_get(latch, "startupProbe"));
	json_t *sc = json_object_get(latch, "securityContext");
	assert_true(json_is_true(json_object_get(sc, "runAsNonRoot")));
	assert_true(json_is_true(json_object_get(sc, "readOnlyRootFilesystem")));
	assert_string_equal(json_string_value(json_array_get(latch_json_path(sc, "capabilities.drop"), 0)), "ALL");
	assert_string_equal(json_string_value(latch_json_path(sc, "seccompProfile.type")), "RuntimeDefault");

	json_t *config = latch_config_of(latch);
	assert_string_equal(json_string_value(latch_json_path(config, "vault.address")), "https://vault.vault.svc:8200");
	assert_string_equal(json_string_value(latch_json_path(config, "auth.role")), "demo");
	json_t *secrets = json_object_get(config, "secrets");
	assert_int_equal(json_array_size(secrets), 2);
	json_t *db = named(secrets, "db"); /* names are lower-cased, as the injector does */
	assert_non_null(db);
	assert_string_equal(json_string_value(json_object_get(db, "path")), "database/creds/app");
	assert_string_equal(json_string_value(json_object_get(db, "format")), "map");
	json_t *cfg = named(secrets, "config");
	assert_string_equal(json_string_value(json_object_get(cfg, "format")), "template");
	assert_string_equal(json_string_value(json_object_get(cfg, "mode")), "0400");

	/* Volumes: memory emptyDir and a projected token of 600 s for Vault's audience, not the
	 * API server's: a token that leaks from Vault's side cannot be replayed to the cluster. */
	json_t *volumes = json_object_get(spec, "volumes");
	assert_string_equal(json_string_value(latch_json_path(named(volumes, "latch-secrets"), "emptyDir.medium")), "Memory");
	json_t *token = json_array_get(latch_json_path(named(volumes, "latch-token"), "projected.sources"), 0);
	assert_int_equal(json_integer_value(latch_json_path(token, "serviceAccountToken.expirationSeconds")), 600);
	assert_string_equal(json_string_value(latch_json_path(token, "serviceAccountToken.audience")), "vault");

	/* Every app container and the existing init container mount the secrets read-only. */
	json_t *containers = json_object_get(spec, "containers");
	json_t *all[] = { named(containers, "web"), named(containers, "metrics"), named(inits, "migrate") };
	for (size_t i = 0; i < 3; i++) {
		json_t *m = named(json_object_get(all[i], "volumeMounts"), "latch-secrets");
		assert_non_null(m);
		assert_string_equal(json_string_value(json_object_get(m, "mountPath")), "/vault/secrets");
		assert_true(json_is_true(json_object_get(m, "readOnly")));
	}
	/* The token is mounted only into latch. */
	assert_null(named(json_object_get(named(containers, "web"), "volumeMounts"), "latch-token"));
	assert_non_null(named(json_object_get(latch, "volumeMounts"), "latch-token"));
	assert_string_equal(json_string_value(latch_json_path(obj, "spec.template.metadata.annotations")
						      ? json_object_get(latch_json_path(obj, "spec.template.metadata.annotations"),
									"vault.hashicorp.com/agent-inject-status")
						      : NULL),
			    "injected");
	json_decref(config);
	json_decref(obj);
	result_done(&res);
}

static void test_inject__output_of_output_is_identical(void **state)
{
	struct result first, second;
	inject_text(deployment, NULL, &first);
	assert_int_equal(first.rc, 0);
	inject_text(first.yaml, NULL, &second);
	assert_int_equal(second.rc, 0);
	assert_string_equal(first.yaml, second.yaml);
	result_done(&first);
	result_done(&second);
}

static void test_inject__changed_annotation_replaces_not_duplicates(void **state)
{
	struct result first, second;
	inject_text(deployment, NULL, &first);
	char *edited = strdup(first.yaml);
	char *role = strstr(edited, "vault.hashicorp.com/role: demo");
	assert_non_null(role);
	memcpy(role + strlen("vault.hashicorp.com/role: "), "demx", 4);
	inject_text(edited, NULL, &second);
	assert_int_equal(second.rc, 0);
	json_t *obj = doc_json(&second, 0);
	json_t *inits = json_object_get(pod_spec(obj), "initContainers");
	assert_int_equal(json_array_size(inits), 2);
	json_t *config = latch_config_of(named(inits, "latch-init"));
	assert_string_equal(json_string_value(latch_json_path(config, "auth.role")), "demx");
	/* The secrets, the token and the sidecar's state, each once; the app mounts the secrets
	 * alone (the state holds the sidecar's Vault token). */
	json_t *volumes = json_object_get(pod_spec(obj), "volumes");
	assert_int_equal(json_array_size(volumes), 3);
	assert_non_null(named(volumes, "latch-state"));
	json_t *mounts = json_object_get(named(json_object_get(pod_spec(obj), "containers"), "web"), "volumeMounts");
	assert_int_equal(json_array_size(mounts), 1);
	json_decref(config);
	json_decref(obj);
	free(edited);
	result_done(&first);
	result_done(&second);
}

/* Every workload kind with a pod template, and a custom resource that has one. */
static void test_inject__every_workload_kind(void **state)
{
	static const char *const heads[] = {
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations: ANN\nspec:\n  containers: [{name: a, image: x}]\n",
		"apiVersion: apps/v1\nkind: StatefulSet\nmetadata: {name: s}\nspec:\n  template:\n    metadata:\n      annotations: ANN\n    spec:\n      containers: [{name: a, image: x}]\n",
		"apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: d}\nspec:\n  template:\n    metadata:\n      annotations: ANN\n    spec:\n      containers: [{name: a, image: x}]\n",
		"apiVersion: apps/v1\nkind: ReplicaSet\nmetadata: {name: r}\nspec:\n  template:\n    metadata:\n      annotations: ANN\n    spec:\n      containers: [{name: a, image: x}]\n",
		"apiVersion: v1\nkind: ReplicationController\nmetadata: {name: rc}\nspec:\n  template:\n    metadata:\n      annotations: ANN\n    spec:\n      containers: [{name: a, image: x}]\n",
		"apiVersion: batch/v1\nkind: Job\nmetadata: {name: j}\nspec:\n  template:\n    metadata:\n      annotations: ANN\n    spec:\n      restartPolicy: Never\n      containers: [{name: a, image: x}]\n",
		"apiVersion: batch/v1\nkind: CronJob\nmetadata: {name: c}\nspec:\n  schedule: '* * * * *'\n  jobTemplate:\n    spec:\n      template:\n        metadata:\n          annotations: ANN\n        spec:\n          restartPolicy: Never\n          containers: [{name: a, image: x}]\n",
		"apiVersion: argoproj.io/v1alpha1\nkind: Rollout\nmetadata: {name: ro}\nspec:\n  template:\n    metadata:\n      annotations: ANN\n    spec:\n      containers: [{name: a, image: x}]\n",
	};
	const char *ann = "{vault.hashicorp.com/agent-inject: 'true', vault.hashicorp.com/role: demo, "
			  "vault.hashicorp.com/agent-inject-secret-db: database/creds/app}";
	for (size_t i = 0; i < sizeof(heads) / sizeof(heads[0]); i++) {
		char text[4096];
		const char *at = strstr(heads[i], "ANN");
		snprintf(text, sizeof(text), "%.*s%s%s", (int)(at - heads[i]), heads[i], ann, at + 3);
		struct result res;
		inject_text(text, NULL, &res);
		if (res.rc != 0)
			fail_msg("%s", latch_error_message(&res.err));
		json_t *obj = doc_json(&res, 0);
		json_t *latch = named(json_object_get(pod_spec(obj), "initContainers"), "latch-init");
		if (!latch)
			fail_msg("no latch-init in %s", json_string_value(json_object_get(obj, "kind")));
		json_decref(obj);
		result_done(&res);
	}
}

static void test_inject__unannotated_objects_keep_their_content(void **state)
{
	const char *text = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\ndata: {mode: \"0640\", on: yes, n: 1}\n---\n"
			   "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: plain}\nspec:\n  template:\n    spec:\n"
			   "      containers: [{name: a, image: x}]\n";
	struct latch_yaml_stream before;
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	assert_int_equal(latch_yaml_parse(latch_view_str(text), "in", &lim, &before, NULL), 0);
	struct result res;
	inject_text(text, NULL, &res);
	assert_int_equal(res.rc, 0);
	for (size_t i = 0; i < 2; i++) {
		json_t *a = latch_yaml_to_json(before.docs[i].root), *b = doc_json(&res, i);
		assert_true(json_equal(a, b));
		json_decref(a);
		json_decref(b);
	}
	assert_non_null(strstr(res.yaml, "mode: \"0640\""));
	latch_yaml_stream_done(&before);
	result_done(&res);
}

static void test_inject__workload_annotations_count_and_pod_template_wins(void **state)
{
	const char *text = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: w\n  annotations:\n"
			   "    vault.hashicorp.com/agent-inject: 'true'\n    vault.hashicorp.com/role: from-deployment\n"
			   "    vault.hashicorp.com/agent-inject-secret-db: database/creds/app\n"
			   "spec:\n  template:\n    metadata:\n      annotations:\n        vault.hashicorp.com/role: from-pod\n"
			   "    spec:\n      containers: [{name: a, image: x}]\n";
	struct result res;
	inject_text(text, NULL, &res);
	assert_int_equal(res.rc, 0);
	json_t *obj = doc_json(&res, 0);
	json_t *config = latch_config_of(named(json_object_get(pod_spec(obj), "initContainers"), "latch-init"));
	assert_string_equal(json_string_value(latch_json_path(config, "auth.role")), "from-pod");
	json_decref(config);
	json_decref(obj);
	result_done(&res);
}

static char *with_annotations(const char *extra)
{
	static char text[8192];
	snprintf(text, sizeof(text),
		 "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w, namespace: demo}\nspec:\n  template:\n    metadata:\n"
		 "      annotations:\n        vault.hashicorp.com/agent-inject: 'true'\n        vault.hashicorp.com/role: demo\n"
		 "        vault.hashicorp.com/agent-inject-secret-db: database/creds/app\n%s"
		 "    spec:\n      containers:\n      - {name: a, image: x}\n      - {name: b, image: y}\n",
		 extra);
	return text;
}

static json_t *injected_latch(const char *extra, const struct latch_inject_options *opts, json_t **ret_obj)
{
	struct result res;
	inject_text(with_annotations(extra), opts, &res);
	if (res.rc != 0)
		fail_msg("%s", latch_error_message(&res.err));
	*ret_obj = doc_json(&res, 0);
	result_done(&res);
	return named(json_object_get(pod_spec(*ret_obj), "initContainers"), "latch-init");
}

static void test_inject__options_from_annotations(void **state)
{
	json_t *obj;
	json_t *latch = injected_latch("        vault.hashicorp.com/agent-pre-populate-only: 'true'\n"
				       "        vault.hashicorp.com/agent-inject-containers: b\n"
				       "        vault.hashicorp.com/secret-volume-path: /etc/secrets\n"
				       "        vault.hashicorp.com/agent-requests-cpu: 20m\n"
				       "        vault.hashicorp.com/agent-limits-mem: 48Mi\n"
				       "        vault.hashicorp.com/agent-image: registry.example/latch@sha256:0123\n"
				       "        vault.hashicorp.com/tls-secret: vault-tls\n"
				       "        vault.hashicorp.com/ca-cert: /vault/tls/ca.crt\n"
				       "        latch.dev/token-audience: payments-vault\n"
				       "        latch.dev/format-db: env\n",
				       NULL, &obj);
	assert_null(json_object_get(latch, "restartPolicy"));
	assert_null(json_object_get(latch, "startupProbe"));
	assert_string_equal(json_string_value(json_array_get(json_object_get(latch, "args"), 0)), "populate");
	assert_string_equal(json_string_value(json_object_get(latch, "image")), "registry.example/latch@sha256:0123");
	assert_string_equal(json_string_value(latch_json_path(latch, "resources.requests.cpu")), "20m");
	assert_string_equal(json_string_value(latch_json_path(latch, "resources.limits.memory")), "48Mi");
	json_t *containers = json_object_get(pod_spec(obj), "containers");
	assert_null(json_object_get(named(containers, "a"), "volumeMounts"));
	assert_string_equal(json_string_value(json_object_get(named(json_object_get(named(containers, "b"), "volumeMounts"), "latch-secrets"),
							      "mountPath")),
			    "/etc/secrets");
	json_t *volumes = json_object_get(pod_spec(obj), "volumes");
	assert_string_equal(json_string_value(latch_json_path(named(volumes, "latch-tls"), "secret.secretName")), "vault-tls");
	assert_string_equal(json_string_value(latch_json_path(json_array_get(latch_json_path(named(volumes, "latch-token"), "projected.sources"), 0),
							      "serviceAccountToken.audience")),
			    "payments-vault");
	json_t *config = latch_config_of(latch);
	assert_string_equal(json_string_value(latch_json_path(config, "vault.ca_file")), "/vault/tls/ca.crt");
	assert_string_equal(json_string_value(json_object_get(json_array_get(json_object_get(config, "secrets"), 0), "format")), "env");
	json_decref(config);
	json_decref(obj);
}

static const char *token_audience_with(const struct latch_inject_options *opts, json_t **ret_obj)
{
	injected_latch("", opts, ret_obj);
	json_t *volumes = json_object_get(pod_spec(*ret_obj), "volumes");
	json_t *source = json_array_get(latch_json_path(named(volumes, "latch-token"), "projected.sources"), 0);
	return json_string_value(latch_json_path(source, "serviceAccountToken.audience"));
}

/* The operator chooses the audience for every workload; "" is the API server's own, for Vault
 * roles made for the webhook (which have no audience). */
static void test_inject__token_audience_option(void **state)
{
	json_t *obj;
	struct latch_inject_options opts = default_opts;
	opts.token_audience = "https://vault.example";
	assert_string_equal(token_audience_with(&opts, &obj), "https://vault.example");
	json_decref(obj);
	opts.token_audience = "";
	assert_null(token_audience_with(&opts, &obj));
	json_decref(obj);
	/* On the workload too: "" is the API server's audience, whatever the operator's default. */
	json_t *latch = injected_latch("        latch.dev/token-audience: ''\n", NULL, &obj);
	assert_non_null(latch);
	json_t *source = json_array_get(latch_json_path(named(json_object_get(pod_spec(obj), "volumes"),
							      "latch-token"),
							"projected.sources"), 0);
	assert_null(latch_json_path(source, "serviceAccountToken.audience"));
	json_decref(obj);
}

static const char *db_file_mode(const char *text)
{
	static char mode[8];
	struct result res;
	inject_text(text, NULL, &res);
	if (res.rc != 0)
		fail_msg("%s", latch_error_message(&res.err));
	json_t *obj = doc_json(&res, 0);
	json_t *config = latch_config_of(named(json_object_get(pod_spec(obj), "initContainers"), "latch-init"));
	snprintf(mode, sizeof(mode), "%s",
		 json_string_value(json_object_get(named(json_object_get(config, "secrets"), "db"),
									     "mode")));
	json_decref(config);
	json_decref(obj);
	result_done(&res);
	return mode;
}

/* 0640 whenever the app is sure to read it: with an fsGroup the volume and its files belong to
 * that group. Without one the app's user is unknown: 0644, as Vault Agent. perms wins. */
static void test_inject__secret_files_group_readable_with_fs_group(void **state)
{
	char text[9000];
	snprintf(text, sizeof(text), "%s      securityContext: {runAsUser: 65532, fsGroup: 65532}\n",
		 with_annotations(""));
	assert_string_equal(db_file_mode(text), "0640");
	assert_string_equal(db_file_mode(with_annotations("")), "0644");
	snprintf(text, sizeof(text), "%s      securityContext: {fsGroup: null}\n", with_annotations(""));
	assert_string_equal(db_file_mode(text), "0644");
	snprintf(text, sizeof(text), "%s      securityContext: {fsGroup: 2000}\n",
		 with_annotations("        vault.hashicorp.com/agent-inject-perms-db: '0400'\n"));
	assert_string_equal(db_file_mode(text), "0400");
}

static void assert_inject_error(const char *extra, const struct latch_inject_options *opts, const char *expected)
{
	struct result res;
	inject_text(with_annotations(extra), opts, &res);
	assert_int_not_equal(res.rc, 0);
	if (!strstr(latch_error_message(&res.err), expected))
		fail_msg("error '%s' does not contain '%s'", latch_error_message(&res.err), expected);
	result_done(&res);
}

/* A memo of the last accepted configuration lets only that exact configuration skip
 * latch-init's parser: a bad template after a good one is still refused. */
static void test_inject__memo_never_lets_a_bad_configuration_through(void **state)
{
	struct latch_inject_memo memo = { 0 };
	struct latch_inject_options opts = default_opts;
	opts.memo = &memo;
	struct result res;
	inject_text(with_annotations(""), &opts, &res);
	assert_int_equal(res.rc, 0);
	assert_non_null(memo.valid_config);
	result_done(&res);
	assert_inject_error("        vault.hashicorp.com/agent-inject-template-db: '{{ env \"X\" }}'\n", &opts,
			    "template db:1:4: function 'env' is not supported");
	inject_text(with_annotations(""), &opts, &res);
	assert_int_equal(res.rc, 0);
	result_done(&res);
	latch_inject_memo_done(&memo);
}

static void test_inject__bad_annotations_name_object_annotation_and_position(void **state)
{
	assert_inject_error("        vault.hashicorp.com/agent-inject-perms-db: '999'\n", NULL,
			    "in.yaml:11:52: Deployment 'demo/w': annotation 'vault.hashicorp.com/agent-inject-perms-db': '999' is not an octal file mode");
	assert_inject_error("        vault.hashicorp.com/agent-requests-cpu: lots\n", NULL, "'lots' is not a resource quantity");
	assert_inject_error("        vault.hashicorp.com/agent-cache-enable: 'true'\n", NULL,
			    "annotation 'vault.hashicorp.com/agent-cache-enable': configures Vault Agent itself, which "
			    "latch-init replaces: latch-init has no cache or listener");
	assert_inject_error("        vault.hashicorp.com/agent-inject-template-db: '{{ env \"X\" }}'\n", NULL,
			    "annotation 'vault.hashicorp.com/agent-inject-template-db': template db:1:4: function 'env' is not supported");
	assert_inject_error("        vault.hashicorp.com/agent-inject-containers: nope\n", NULL, "'nope', which is not a container");
	assert_inject_error("        vault.hashicorp.com/tls-skip-verify: maybe\n", NULL, "'maybe' is not true or false");
	struct latch_inject_options digest = default_opts;
	digest.require_image_digest = true;
	assert_inject_error("", &digest, "is not pinned by digest");
	const char *regs[] = { "registry.example" };
	struct latch_inject_options registries = default_opts;
	registries.allowed_registries = regs;
	registries.n_allowed_registries = 1;
	assert_inject_error("", &registries, "is not from an allowed registry");
	registries.policy = LATCH_INJECT_POLICY_ALL_IMAGES;
	assert_inject_error("        vault.hashicorp.com/agent-image: registry.example/latch:1\n", &registries, "image 'x' is not from an allowed registry");
}

/* An app container named like latch's own once escaped --policy all-images. */
static void test_inject__all_images_policy_spares_no_container_name(void **state)
{
	const char *regs[] = { "registry.example" };
	struct latch_inject_options opts = default_opts;
	opts.allowed_registries = regs;
	opts.n_allowed_registries = 1;
	opts.policy = LATCH_INJECT_POLICY_ALL_IMAGES;
	static const char pod[] =
		"apiVersion: v1\nkind: Pod\nmetadata:\n  name: p\n  annotations:\n"
		"    vault.hashicorp.com/agent-inject: 'true'\n    vault.hashicorp.com/role: demo\n"
		"    vault.hashicorp.com/agent-inject-secret-db: database/creds/app\n"
		"    vault.hashicorp.com/agent-image: registry.example/latch:1\n"
		"spec:\n  containers:\n  - {name: latch-init, image: elsewhere.example/miner:1}\n"
		"  - {name: app, image: registry.example/app:1}\n";
	struct result res;
	inject_text(pod, &opts, &res);
	assert_int_not_equal(res.rc, 0);
	assert_non_null(strstr(latch_error_message(&res.err),
			       "image 'elsewhere.example/miner:1' is not from an allowed registry"));
	result_done(&res);
}

/* A manifest's `service` annotation once sent the pod's token, silently and even over
 * http://, to an address the operator never chose. */
static void test_inject__service_override_is_said_pinned_or_refused_and_http_needs_consent(void **state)
{
	const char *elsewhere = "        vault.hashicorp.com/service: https://vault.attacker.example:8200\n";
	struct result res;
	inject_text(with_annotations(elsewhere), NULL, &res);
	assert_int_equal(res.rc, 0);
	assert_non_null(strstr(latch_buf_str(&res.warnings),
			       "sends the pod's token to 'https://vault.attacker.example:8200', "
			       "not to 'https://vault.vault.svc:8200'"));
	result_done(&res);

	struct latch_inject_options pinned = default_opts;
	pinned.pin_vault_address = true;
	assert_inject_error(elsewhere, &pinned, "annotation 'vault.hashicorp.com/service': names "
			    "'https://vault.attacker.example:8200', but the Vault address is pinned to "
			    "'https://vault.vault.svc:8200'");
	json_t *obj;
	const char *same = "        vault.hashicorp.com/service: https://vault.vault.svc:8200\n";
	json_decref(latch_config_of(injected_latch(same, &pinned, &obj)));
	json_decref(obj);

	assert_inject_error("        vault.hashicorp.com/service: http://vault.vault.svc:8200\n", NULL,
			    "is http://: the pod's ServiceAccount token would travel in clear");
	struct latch_inject_options http = default_opts;
	http.vault_address = "http://vault.vault.svc:8200";
	assert_inject_error("", &http, "(--allow-http-vault)");
	http.allow_http_vault = true;
	json_t *config = latch_config_of(injected_latch("", &http, &obj));
	assert_string_equal(json_string_value(latch_json_path(config, "vault.address")),
			    "http://vault.vault.svc:8200");
	json_decref(config);
	json_decref(obj);
}

/* `--allowed-registries ""` once allowed every registry. */
static void test_inject__empty_registry_list_is_refused(void **state)
{
	const char *none[] = { NULL };
	struct latch_inject_options opts = default_opts;
	opts.allowed_registries = none;
	opts.n_allowed_registries = 0;
	assert_inject_error("", &opts, "the allowed registries list is empty");
}

/* Values the Vault injector's users carry over must still give a valid pod. */
static void test_inject__resources_user_and_token_sink(void **state)
{
	json_t *obj;
	json_t *latch = injected_latch("        vault.hashicorp.com/agent-requests-mem: 64Mi\n"
				       "        vault.hashicorp.com/agent-run-as-user: '0'\n"
				       "        vault.hashicorp.com/agent-inject-token: 'true'\n",
				       NULL, &obj);
	assert_string_equal(json_string_value(latch_json_path(latch, "resources.requests.memory")), "64Mi");
	assert_null(latch_json_path(latch, "resources.limits.memory")); /* not a default below the request */
	assert_false(json_is_true(latch_json_path(latch, "securityContext.runAsNonRoot")));
	json_t *config = latch_config_of(latch);
	assert_string_equal(json_string_value(json_object_get(config, "token_file_name")), "token");
	json_decref(config);
	json_decref(obj);
	assert_inject_error("        vault.hashicorp.com/agent-inject-token: 'true'\n"
			    "        vault.hashicorp.com/agent-inject-secret-token: secret/data/x\n",
			    NULL, "would write over the token file");
}

static void test_inject__allow_unsupported_warns(void **state)
{
	struct latch_inject_options o = default_opts;
	o.allow_unsupported = true;
	struct result res;
	inject_text(with_annotations("        vault.hashicorp.com/agent-cache-enable: 'true'\n"), &o, &res);
	assert_int_equal(res.rc, 0);
	assert_non_null(strstr(latch_buf_str(&res.warnings), "'vault.hashicorp.com/agent-cache-enable' was ignored: "
						       "configures Vault Agent itself"));
	result_done(&res);
}

/* Found by fuzz_inject: "agent-inject-template-file-" with no name was read as naming a
 * secret "file-" by "agent-inject-template-", which then had nothing to render and crashed
 * latch-inject (and latch-sync, which injects in-process). */
static void test_inject__template_file_prefix_without_a_name_names_no_secret(void **state)
{
	struct result res;
	const char *nameless = "        vault.hashicorp.com/agent-inject-template-file-: /vault/t.ctmpl\n";
	inject_text(with_annotations(nameless), NULL, &res);
	if (res.rc != 0)
		fail_msg("%s", latch_error_message(&res.err));
	assert_non_null(strstr(latch_buf_str(&res.warnings),
			       "annotation 'vault.hashicorp.com/agent-inject-template-file-' was ignored: it names no secret"));
	json_t *obj = doc_json(&res, 0);
	json_t *config = latch_config_of(named(json_object_get(pod_spec(obj), "initContainers"), "latch-init"));
	json_t *secrets = json_object_get(config, "secrets");
	assert_int_equal(json_array_size(secrets), 1); /* db alone */
	assert_string_equal(latch_json_get_str(json_array_get(secrets, 0), "name"), "db");
	json_decref(config);
	json_decref(obj);
	result_done(&res);
}

static void test_inject__vault_webhook_output_left_alone(void **state)
{
	struct result res;
	inject_text(with_annotations("        vault.hashicorp.com/agent-inject-status: injected\n"), NULL, &res);
	assert_int_equal(res.rc, 0);
	json_t *obj = doc_json(&res, 0);
	assert_null(json_object_get(pod_spec(obj), "initContainers"));
	assert_non_null(strstr(latch_buf_str(&res.warnings), "already injected"));
	json_decref(obj);
	result_done(&res);
}

static void test_inject__openbao_prefix_and_list(void **state)
{
	const char *text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Pod\n  metadata:\n    name: p\n"
			   "    annotations:\n      openbao.openbao.org/agent-inject: 'true'\n      openbao.openbao.org/role: demo\n"
			   "      openbao.openbao.org/agent-inject-secret-kv: secret/data/demo/config\n"
			   "  spec:\n    containers: [{name: a, image: x}]\n";
	struct result res;
	inject_text(text, NULL, &res);
	assert_int_equal(res.rc, 0);
	json_t *obj = doc_json(&res, 0);
	json_t *pod = json_array_get(json_object_get(obj, "items"), 0);
	assert_non_null(named(latch_json_path(pod, "spec.initContainers"), "latch-init"));
	json_t *ann = latch_json_path(pod, "metadata.annotations");
	assert_string_equal(json_string_value(json_object_get(ann, "openbao.openbao.org/agent-inject-status")), "injected");
	json_decref(obj);
	result_done(&res);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_inject__deployment_gets_latch),
		cmocka_unit_test(test_inject__template_file_prefix_without_a_name_names_no_secret),
		cmocka_unit_test(test_inject__output_of_output_is_identical),
		cmocka_unit_test(test_inject__changed_annotation_replaces_not_duplicates),
		cmocka_unit_test(test_inject__every_workload_kind),
		cmocka_unit_test(test_inject__unannotated_objects_keep_their_content),
		cmocka_unit_test(test_inject__workload_annotations_count_and_pod_template_wins),
		cmocka_unit_test(test_inject__options_from_annotations),
		cmocka_unit_test(test_inject__token_audience_option),
		cmocka_unit_test(test_inject__secret_files_group_readable_with_fs_group),
		cmocka_unit_test(test_inject__bad_annotations_name_object_annotation_and_position),
		cmocka_unit_test(test_inject__memo_never_lets_a_bad_configuration_through),
		cmocka_unit_test(test_inject__all_images_policy_spares_no_container_name),
		cmocka_unit_test(test_inject__empty_registry_list_is_refused),
		cmocka_unit_test(test_inject__service_override_is_said_pinned_or_refused_and_http_needs_consent),
		cmocka_unit_test(test_inject__resources_user_and_token_sink),
		cmocka_unit_test(test_inject__allow_unsupported_warns),
		cmocka_unit_test(test_inject__vault_webhook_output_left_alone),
		cmocka_unit_test(test_inject__openbao_prefix_and_list),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
