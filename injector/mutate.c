/* Adding latch to a pod template: the memory volume, the token volume, the latch-init
 * container, the mounts in the app containers and the status annotation. Every part latch
 * adds has a fixed name and is replaced, never duplicated, when injection runs again. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "annotations.h"
#include "inject.h"

#define CONTAINER_NAME "latch-init"
#define SECRETS_VOLUME "latch-secrets"
#define TOKEN_VOLUME "latch-token"
#define TLS_VOLUME "latch-tls"
#define TOKEN_DIR "/var/run/secrets/latch"
/* The sidecar's session (its Vault token and responses): latch-init's alone, never the app's. */
#define STATE_VOLUME "latch-state"
#define TLS_DIR "/vault/tls"
#define EXTRA_SECRET_VOLUME "latch-extra-secret"
#define EXTRA_SECRET_DIR "/vault/custom"
/* latch-init's copy of itself, for `latch-init exec` in the app's containers. */
#define BIN_VOLUME "latch-bin"
#define STATUS_KEY "vault.hashicorp.com/agent-inject-status"
#define BAO_STATUS_KEY "openbao.openbao.org/agent-inject-status"

struct pod_template {
	struct latch_yaml_node *holder; /* the mapping with metadata and spec */
	struct latch_yaml_node *spec;
};

static struct latch_yaml_node *path_get(struct latch_yaml_node *n, const char *const *keys)
{
	for (; n && *keys; keys++)
		n = latch_yaml_map_get(n, *keys);
	return n;
}

static bool has_containers(const struct latch_yaml_node *spec)
{
	const struct latch_yaml_node *c = latch_yaml_map_get(spec, "containers");
	return c && c->kind == LATCH_YAML_SEQUENCE;
}

/* The pod template of a workload: the Pod itself, a CronJob's job template, or anything
 * with spec.template.spec.containers (Deployments, Jobs, custom resources...). */
static bool find_pod_template(struct latch_yaml_node *obj, struct pod_template *ret)
{
	const char *kind = latch_yaml_map_get_str(obj, "kind");
	struct latch_yaml_node *holder = NULL;
	if (kind && strcmp(kind, "Pod") == 0)
		holder = obj;
	else if (kind && strcmp(kind, "CronJob") == 0)
		holder = path_get(obj, (const char *const[]){ "spec", "jobTemplate", "spec", "template", NULL });
	else
		holder = path_get(obj, (const char *const[]){ "spec", "template", NULL });
	struct latch_yaml_node *spec = latch_yaml_map_get(holder, "spec");
	if (!holder || holder->kind != LATCH_YAML_MAPPING || !spec || spec->kind != LATCH_YAML_MAPPING || !has_containers(spec))
		return false;
	*ret = (struct pod_template){ holder, spec };
	return true;
}

/* The mapping (or sequence) under key, created empty when missing. */
static struct latch_yaml_node *ensure_child(struct latch_yaml_node *map, const char *key, enum latch_yaml_kind kind)
{
	struct latch_yaml_node *n = latch_yaml_map_get(map, key);
	if (n && n->kind == kind)
		return n;
	if (n && !(n->kind == LATCH_YAML_SCALAR && n->len == 0))
		return NULL; /* something else is there: the caller reports it */
	n = latch_yaml_collection_new(kind);
	if (!n || latch_yaml_map_set(map, key, n) < 0) {
		latch_yaml_node_free(n);
		return NULL;
	}
	return n;
}

static bool named(const struct latch_yaml_node *item, const char *name)
{
	return latch_yaml_is_scalar(latch_yaml_map_get(item, "name"), name);
}

static void remove_named(struct latch_yaml_node *seq, const char *name)
{
	if (!seq || seq->kind != LATCH_YAML_SEQUENCE)
		return;
	size_t out = 0;
	for (size_t i = 0; i < seq->n_items; i++) {
		if (named(seq->items[i], name))
			latch_yaml_node_free(seq->items[i]);
		else
			seq->items[out++] = seq->items[i];
	}
	seq->n_items = out;
}

static int append_json(struct latch_yaml_node *seq, json_t *value, bool first)
{
	struct latch_yaml_node *n = value ? latch_yaml_from_json(value) : NULL;
	json_decref(value);
	if (!n || latch_yaml_seq_append(seq, n) < 0) {
		latch_yaml_node_free(n);
		return LATCH_ENOMEM;
	}
	if (first) {
		memmove(&seq->items[1], &seq->items[0], (seq->n_items - 1) * sizeof(*seq->items));
		seq->items[0] = n;
	}
	return 0;
}

static const char *image_of(const struct inject_settings *s, const struct latch_inject_options *o)
{
	return s->image ? s->image : o->image ? o->image : LATCH_INJECT_DEFAULT_IMAGE;
}

/* The registry part of an image reference: "ghcr.io/org/x:1" -> "ghcr.io/org/x". */
static bool registry_allowed(const char *image, const struct latch_inject_options *o)
{
	if (o->n_allowed_registries == 0)
		return true;
	for (size_t i = 0; i < o->n_allowed_registries; i++) {
		struct latch_view registry = latch_view_trim_end(latch_view_str(o->allowed_registries[i]), "/");
		if (strncmp(image, registry.ptr, registry.len) == 0 && image[registry.len] == '/')
			return true;
	}
	return false;
}

static int check_image(const struct inject_context *ctx, const struct latch_yaml_node *at, const char *image)
{
	const struct latch_inject_options *o = ctx->opts;
	if (o->require_image_digest && !strstr(image, "@sha256:"))
		return inject_fail_at(ctx, at, NULL,
				      "image '%s' is not pinned by digest (@sha256:...) and --require-image-digest is set", image);
	if (!registry_allowed(image, o))
		return inject_fail_at(ctx, at, NULL, "image '%s' is not from an allowed registry (--allowed-registries)",
				      image);
	return 0;
}

static int check_all_images(const struct inject_context *ctx, const struct latch_yaml_node *spec)
{
	static const char *const lists[] = { "containers", "initContainers" };
	for (size_t l = 0; l < 2; l++) {
		const struct latch_yaml_node *seq = latch_yaml_map_get(spec, lists[l]);
		for (size_t i = 0; seq && seq->kind == LATCH_YAML_SEQUENCE && i < seq->n_items; i++) {
			const struct latch_yaml_node *img = latch_yaml_map_get(seq->items[i], "image");
			if (img && img->kind == LATCH_YAML_SCALAR) {
				int r = check_image(ctx, img, img->value);
				if (r < 0)
					return r;
			}
		}
	}
	return 0;
}

static const char *token_audience_of(const struct inject_settings *s, const struct latch_inject_options *o)
{
	return s->token_audience ? s->token_audience : o->token_audience ? o->token_audience
									 : LATCH_INJECT_DEFAULT_TOKEN_AUDIENCE;
}

/* The projected token; NULL only when out of memory (never a token for another audience). */
static json_t *token_volume_json(const struct inject_settings *s, const struct latch_inject_options *o)
{
	json_t *source = json_pack("{s:s,s:i}", "path", "token", "expirationSeconds", 600);
	const char *audience = token_audience_of(s, o);
	if (source && *audience && json_object_set_new(source, "audience", json_string(audience)) < 0) {
		json_decref(source);
		return NULL;
	}
	return source ? json_pack("{s:s,s:{s:[{s:o}]}}", "name", TOKEN_VOLUME, "projected", "sources",
				  "serviceAccountToken", source)
		      : NULL;
}

static int run_as_same_user(const struct inject_context *ctx, const struct latch_yaml_node *spec, long *ret_uid)
{
	const struct latch_yaml_node *containers = latch_yaml_map_get(spec, "containers");
	const struct latch_yaml_node *first = containers->n_items ? containers->items[0] : NULL;
	const struct latch_yaml_node *uid = path_get((struct latch_yaml_node *)first, (const char *const[]){ "securityContext", "runAsUser", NULL });
	char *end = NULL;
	long v = uid && uid->kind == LATCH_YAML_SCALAR ? strtol(uid->value, &end, 10) : -1;
	if (!end || *end || v <= 0)
		return inject_fail_at(ctx, first, NULL,
				      "agent-run-as-same-user needs securityContext.runAsUser (not root) on the first container");
	*ret_uid = v;
	return 0;
}

/* runAsNonRoot only when neither id is root: with uid 0 the kubelet would refuse to start it. */
static json_t *security_context_json(long uid, long gid)
{
	return json_pack("{s:b,s:I,s:I,s:b,s:b,s:{s:[s]},s:{s:s}}", "runAsNonRoot", uid != 0 && gid != 0, "runAsUser", (json_int_t)uid, "runAsGroup",
			 (json_int_t)gid, "readOnlyRootFilesystem", 1, "allowPrivilegeEscalation", 0, "capabilities", "drop", "ALL",
			 "seccompProfile", "type", "RuntimeDefault");
}

static void set_quantity(json_t *map, const char *name, const struct inject_quantity *q, const char *dflt)
{
	const char *v = q->set ? q->value : dflt;
	if (v)
		json_object_set_new(map, name, json_string(v));
}

/* Requests and limits sized on what latch-init measurably uses (bench/init: under 10 MiB).
 * A request set by annotation without its limit drops latch's default limit, which could be
 * below it (the Vault injector's own 64Mi request, say) and make the pod invalid. An
 * annotation set to "" drops that value, as in the injector. */
static json_t *resources_json(const struct inject_settings *s)
{
	json_t *limits = json_object(), *requests = json_object();
	set_quantity(requests, "cpu", &s->requests_cpu, "10m");
	set_quantity(requests, "memory", &s->requests_mem, "16Mi");
	set_quantity(requests, "ephemeral-storage", &s->requests_ephemeral, NULL);
	set_quantity(limits, "cpu", &s->limits_cpu, s->requests_cpu.set ? NULL : "500m");
	set_quantity(limits, "memory", &s->limits_mem, s->requests_mem.set ? NULL : "32Mi");
	set_quantity(limits, "ephemeral-storage", &s->limits_ephemeral, NULL);
	return json_pack("{s:o,s:o}", "requests", requests, "limits", limits);
}

/* The app container's volumeMounts that agent-copy-volume-mounts names, less the ones of the
 * ServiceAccount (as the injector) and the paths latch-init uses itself. */
static void copy_volume_mounts(const struct latch_yaml_node *spec, const char *from, json_t *mounts)
{
	static const char *const lists[] = { "containers", "initContainers" };
	for (size_t l = 0; l < ELEMENTSOF(lists); l++) {
		const struct latch_yaml_node *seq = latch_yaml_map_get(spec, lists[l]);
		for (size_t i = 0; seq && seq->kind == LATCH_YAML_SEQUENCE && i < seq->n_items; i++) {
			if (!named(seq->items[i], from))
				continue;
			const struct latch_yaml_node *vm = latch_yaml_map_get(seq->items[i], "volumeMounts");
			for (size_t k = 0; vm && vm->kind == LATCH_YAML_SEQUENCE && k < vm->n_items; k++) {
				const char *path = latch_yaml_map_get_str(vm->items[k], "mountPath");
				if (!path || strcasestr(path, "serviceaccount"))
					continue;
				bool taken = false;
				size_t m;
				json_t *have;
				json_array_foreach(mounts, m, have)
					taken = taken || strcmp(json_string_value(json_object_get(have, "mountPath")), path) == 0;
				if (!taken)
					json_array_append_new(mounts, latch_yaml_to_json(vm->items[k]));
			}
			return;
		}
	}
}

static json_t *env_json(const struct inject_settings *s, const char *config)
{
	json_t *env = json_pack("[{s:s,s:s}]", "name", "LATCH_CONFIG", "value", config ? config : "");
	if (s->proxy_address)
		json_array_append_new(env, json_pack("{s:s,s:s}", "name", "HTTPS_PROXY", "value", s->proxy_address));
	if (s->log_format)
		json_array_append_new(env, json_pack("{s:s,s:s}", "name", "LATCH_LOG_FORMAT", "value", s->log_format));
	return env;
}

static json_t *mounts_json(const struct inject_settings *s, const struct latch_yaml_node *spec)
{
	bool sidecar = !s->pre_populate_only;
	json_t *mounts = json_pack("[{s:s,s:s}]", "name", SECRETS_VOLUME, "mountPath", s->secret_volume_path);
	json_array_append_new(mounts, json_pack("{s:s,s:s,s:b}", "name", s->token_volume_name ? s->token_volume_name : TOKEN_VOLUME,
						"mountPath", TOKEN_DIR, "readOnly", 1));
	if (s->tls_secret)
		json_array_append_new(mounts, json_pack("{s:s,s:s,s:b}", "name", TLS_VOLUME, "mountPath", TLS_DIR, "readOnly", 1));
	if (sidecar)
		json_array_append_new(mounts, json_pack("{s:s,s:s}", "name", STATE_VOLUME, "mountPath",
							INJECT_STATE_DIR));
	if (s->extra_secret)
		json_array_append_new(mounts, json_pack("{s:s,s:s,s:b}", "name", EXTRA_SECRET_VOLUME, "mountPath",
							EXTRA_SECRET_DIR, "readOnly", 1));
	if (s->exec.env_files)
		json_array_append_new(mounts, json_pack("{s:s,s:s}", "name", BIN_VOLUME, "mountPath", INJECT_BIN_DIR));
	if (s->copy_volume_mounts)
		copy_volume_mounts(spec, s->copy_volume_mounts, mounts);
	return mounts;
}

static json_t *container_json(const struct inject_settings *s, const struct latch_yaml_node *spec,
			      const char *image, long uid)
{
	bool sidecar = !s->pre_populate_only;
	json_t *args = json_array();
	if (s->log_level) {
		json_array_append_new(args, json_string("--log-level"));
		json_array_append_new(args, json_string(s->log_level));
	}
	json_array_append_new(args, json_string(sidecar ? "sidecar" : "populate"));
	json_t *c = json_pack("{s:s,s:s,s:[s],s:o}", "name", CONTAINER_NAME, "image", image,
			      "command", "/latch-init", "args", args);
	if (sidecar)
		json_object_set_new(c, "restartPolicy", json_string("Always"));
	json_object_set_new(c, "env", env_json(s, s->config_text));
	json_object_set_new(c, "resources", resources_json(s));
	/* latch-init logs the cause of a failure last (never a value): the kubelet shows it in
	 * the pod's status and `kubectl describe pod`. */
	json_object_set_new(c, "terminationMessagePolicy", json_string("FallbackToLogsOnError"));
	if (s->set_security_context)
		json_object_set_new(c, "securityContext", security_context_json(uid, s->run_as_group));
	/* The probe waits as long as latch-init's own deadline, and a little more. */
	json_int_t deadline = json_integer_value(json_object_get(s->config, "deadline_seconds"));
	if (sidecar && s->pre_populate)
		json_object_set_new(c, "startupProbe", json_pack("{s:{s:[s,s]},s:i,s:I}", "exec", "command", "/latch-init", "probe",
								 "periodSeconds", 1, "failureThreshold",
								 (deadline > 0 ? deadline : 120) + 30));
	json_object_set_new(c, "volumeMounts", mounts_json(s, spec));
	return c;
}

static bool selected(char *const *list, const char *name)
{
	if (!list)
		return true;
	for (; *list; list++)
		if (strcmp(*list, name) == 0)
			return true;
	return false;
}

/* Every name of the list (an annotation's value) is a container of the pod. */
static int check_container_names(const struct inject_context *ctx, char *const *list, const char *annotation,
				 const struct latch_yaml_node *containers)
{
	for (; list && *list; list++) {
		bool found = false;
		for (size_t i = 0; i < containers->n_items && !found; i++)
			found = named(containers->items[i], *list);
		if (!found)
			return inject_fail_at(ctx, containers, NULL, "%s names '%s', which is not a container of the pod",
					      annotation,
					*list);
	}
	return 0;
}

static int mount_at(const struct inject_context *ctx, struct latch_yaml_node *mounts, const char *volume,
		    const char *path)
{
	for (size_t i = 0; i < mounts->n_items; i++)
		if (latch_yaml_is_scalar(latch_yaml_map_get(mounts->items[i], "mountPath"), path))
			return inject_fail_at(ctx, mounts->items[i], NULL,
					      "a container already mounts something at %s, where latch "
					"mounts its volume %s", path, volume);
	json_t *mount = json_pack("{s:s,s:s,s:b}", "name", volume, "mountPath", path, "readOnly", 1);
	return append_json(mounts, mount, false);
}

/* The secrets mounts in one app (or existing init) container, replacing earlier ones: the
 * secret volume path, and each secret-volume-path-NAME. */
static int mount_into(const struct inject_context *ctx, struct latch_yaml_node *container,
		      const struct inject_settings *s)
{
	struct latch_yaml_node *mounts = ensure_child(container, "volumeMounts", LATCH_YAML_SEQUENCE);
	if (!mounts)
		return inject_fail_at(ctx, container, NULL, "volumeMounts of a container is not a list");
	remove_named(mounts, SECRETS_VOLUME);
	int r = mount_at(ctx, mounts, SECRETS_VOLUME, s->secret_volume_path);
	for (size_t i = 0; r == 0 && s->extra_mount_paths && s->extra_mount_paths[i]; i++)
		r = mount_at(ctx, mounts, SECRETS_VOLUME, s->extra_mount_paths[i]);
	return r;
}

static int mount_app_containers(const struct inject_context *ctx, const struct inject_settings *s, struct latch_yaml_node *spec)
{
	struct latch_yaml_node *containers = latch_yaml_map_get(spec, "containers");
	int r = check_container_names(ctx, s->containers, "agent-inject-containers", containers);
	for (size_t i = 0; r == 0 && i < containers->n_items; i++) {
		const char *name = latch_yaml_map_get_str(containers->items[i], "name");
		if (name && selected(s->containers, name))
			r = mount_into(ctx, containers->items[i], s);
	}
	/* Like the Vault Agent Injector: every existing init container gets the secrets too. */
	struct latch_yaml_node *inits = latch_yaml_map_get(spec, "initContainers");
	for (size_t i = 0; r == 0 && inits && inits->kind == LATCH_YAML_SEQUENCE && i < inits->n_items; i++)
		if (!named(inits->items[i], CONTAINER_NAME))
			r = mount_into(ctx, inits->items[i], s);
	return r;
}

/* A command injected before: the app's own command is what follows "--". */
static size_t unwrapped_start(const struct latch_yaml_node *command)
{
	if (command->n_items < 2 || !latch_yaml_is_scalar(command->items[0], INJECT_BIN_DIR "/latch-init") ||
	    !latch_yaml_is_scalar(command->items[1], "exec"))
		return 0;
	for (size_t i = 2; i < command->n_items; i++)
		if (latch_yaml_is_scalar(command->items[i], "--"))
			return i + 1;
	return 0;
}

static json_t *wrapper_json(const struct inject_settings *s)
{
	json_t *argv = json_pack("[s,s]", INJECT_BIN_DIR "/latch-init", "exec");
	for (size_t i = 0; s->exec.env_files[i]; i++) {
		json_array_append_new(argv, json_string("--env-file"));
		json_array_append_new(argv, json_string(s->exec.env_files[i]));
	}
	char grace[32];
	snprintf(grace, sizeof(grace), "%ld", s->exec.grace_seconds);
	json_array_append_new(argv, json_string("--on-change"));
	json_array_append_new(argv, json_string(s->exec.restart ? "restart" : "ignore"));
	json_array_append_new(argv, json_string("--grace"));
	json_array_append_new(argv, json_string(grace));
	json_array_append_new(argv, json_string("--"));
	return argv;
}

/* latch.dev/exec-env: command becomes `latch-init exec ... -- <command> <args>`. latch never
 * looks an image up, so the command must be in the manifest. */
static int wrap_command(const struct inject_context *ctx, const struct inject_settings *s,
			struct latch_yaml_node *container)
{
	const char *name = latch_yaml_map_get_str(container, "name");
	struct latch_yaml_node *command = latch_yaml_map_get(container, "command");
	if (!command || command->kind != LATCH_YAML_SEQUENCE || command->n_items == 0)
		return inject_fail_at(ctx, container, NULL,
				      "container '%s' has no command: latch.dev/exec-env runs the app's "
				"command through latch-init exec, and latch does not look images up; write the command "
				"in the manifest", name ? name : "?");
	json_t *argv = wrapper_json(s);
	for (size_t i = unwrapped_start(command); i < command->n_items; i++)
		json_array_append_new(argv, latch_yaml_to_json(command->items[i]));
	const struct latch_yaml_node *args = latch_yaml_map_get(container, "args");
	for (size_t i = 0; args && args->kind == LATCH_YAML_SEQUENCE && i < args->n_items; i++)
		json_array_append_new(argv, latch_yaml_to_json(args->items[i]));
	struct latch_yaml_node *wrapped = latch_yaml_from_json(argv);
	json_decref(argv);
	if (!wrapped || latch_yaml_map_set(container, "command", wrapped) < 0) {
		latch_yaml_node_free(wrapped);
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	}
	latch_yaml_map_remove(container, "args");
	struct latch_yaml_node *mounts = ensure_child(container, "volumeMounts", LATCH_YAML_SEQUENCE);
	if (!mounts)
		return inject_fail_at(ctx, container, NULL, "volumeMounts of a container is not a list");
	remove_named(mounts, BIN_VOLUME);
	return mount_at(ctx, mounts, BIN_VOLUME, INJECT_BIN_DIR);
}

static int wrap_app_commands(const struct inject_context *ctx, const struct inject_settings *s,
			     struct latch_yaml_node *spec)
{
	if (!s->exec.env_files)
		return 0;
	char *const *list = s->exec.containers ? s->exec.containers : s->containers;
	struct latch_yaml_node *containers = latch_yaml_map_get(spec, "containers");
	int r = check_container_names(ctx, s->exec.containers, "latch.dev/exec-containers", containers);
	for (size_t i = 0; r == 0 && i < containers->n_items; i++) {
		const char *name = latch_yaml_map_get_str(containers->items[i], "name");
		if (name && selected(list, name))
			r = wrap_command(ctx, s, containers->items[i]);
	}
	return r;
}

/* agent-share-process-namespace, for a reload signal to reach the app. */
static int share_process_namespace(const struct inject_context *ctx, const struct inject_settings *s,
				   struct latch_yaml_node *spec)
{
	if (s->share_process_namespace < 0)
		return 0;
	const struct latch_yaml_node *have = latch_yaml_map_get(spec, "shareProcessNamespace");
	if (s->share_process_namespace && latch_yaml_is_scalar(have, "false"))
		return inject_fail_at(ctx, have, NULL, "shareProcessNamespace is false on the pod, and "
				"agent-share-process-namespace asks for it; refusing to turn it on");
	struct latch_yaml_node *v = latch_yaml_from_json(s->share_process_namespace ? json_true() : json_false());
	if (!v || latch_yaml_map_set(spec, "shareProcessNamespace", v) < 0) {
		latch_yaml_node_free(v);
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	}
	return 0;
}

static int add_volumes(const struct inject_context *ctx, const struct inject_settings *s, struct latch_yaml_node *spec)
{
	struct latch_yaml_node *volumes = ensure_child(spec, "volumes", LATCH_YAML_SEQUENCE);
	if (!volumes)
		return inject_fail_at(ctx, spec, NULL, "spec.volumes is not a list");
	remove_named(volumes, SECRETS_VOLUME);
	remove_named(volumes, TOKEN_VOLUME);
	remove_named(volumes, TLS_VOLUME);
	remove_named(volumes, STATE_VOLUME);
	remove_named(volumes, EXTRA_SECRET_VOLUME);
	remove_named(volumes, BIN_VOLUME);
	json_t *token = s->token_volume_name ? NULL : token_volume_json(s, ctx->opts);
	if (!s->token_volume_name && !token)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	int r = append_json(volumes,
			    json_pack("{s:s,s:{s:s}}", "name", SECRETS_VOLUME, "emptyDir", "medium", "Memory"),
			    false);
	if (r == 0 && token)
		r = append_json(volumes, token, false);
	else
		json_decref(token);
	if (r == 0 && s->tls_secret)
		r = append_json(volumes,
				json_pack("{s:s,s:{s:s}}", "name", TLS_VOLUME, "secret", "secretName", s->tls_secret),
				false);
	if (r == 0 && !s->pre_populate_only)
		r = append_json(volumes, json_pack("{s:s,s:{s:s,s:s}}", "name", STATE_VOLUME, "emptyDir",
						   "medium", "Memory", "sizeLimit", "1Mi"), false);
	if (r == 0 && s->extra_secret)
		r = append_json(volumes, json_pack("{s:s,s:{s:s}}", "name", EXTRA_SECRET_VOLUME, "secret", "secretName",
						   s->extra_secret), false);
	/* The static latch-init is about 5 MB. */
	if (r == 0 && s->exec.env_files)
		r = append_json(volumes, json_pack("{s:s,s:{s:s,s:s}}", "name", BIN_VOLUME, "emptyDir", "medium", "Memory",
						   "sizeLimit", "16Mi"), false);
	return r < 0 ? latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory") : 0;
}

static int add_container(const struct inject_context *ctx, const struct inject_settings *s, struct latch_yaml_node *spec)
{
	long uid = s->run_as_user;
	if (s->run_as_same_user && run_as_same_user(ctx, spec, &uid) < 0)
		return LATCH_EINVAL;
	const char *image = image_of(s, ctx->opts);
	int r = check_image(ctx, latch_yaml_map_get(spec, "containers"), image);
	if (r < 0)
		return r;
	struct latch_yaml_node *inits = ensure_child(spec, "initContainers", LATCH_YAML_SEQUENCE);
	if (!inits)
		return inject_fail_at(ctx, spec, NULL, "spec.initContainers is not a list");
	remove_named(inits, CONTAINER_NAME);
	if (append_json(inits, container_json(s, spec, image, uid), s->init_first) < 0)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	/* After injection, over every container: no name (an app container may be called
	 * latch-init too) exempts an image from the policy. */
	return ctx->opts->policy == LATCH_INJECT_POLICY_ALL_IMAGES ? check_all_images(ctx, spec) : 0;
}

static bool uses_openbao_prefix(const struct latch_yaml_node *annotations)
{
	for (size_t i = 0; annotations && i < annotations->n_pairs; i++)
		if (annotations->pairs[i].key && annotations->pairs[i].key->kind == LATCH_YAML_SCALAR &&
		    strncmp(annotations->pairs[i].key->value, "openbao.openbao.org/", 20) == 0)
			return true;
	return false;
}

/* map[key] = value, a new string; the map keeps it only when the call succeeds. */
static int set_string(struct latch_yaml_node *map, const char *key, const char *value)
{
	struct latch_yaml_node *n = latch_yaml_string_new(value);
	int r = n ? latch_yaml_map_set(map, key, n) : LATCH_ENOMEM;
	if (r < 0)
		latch_yaml_node_free(n);
	return r;
}

/* agent-inject-status: injected, so a Vault (or OpenBao) webhook still installed skips it. */
static int mark_injected(const struct inject_context *ctx, struct latch_yaml_node *holder, bool openbao)
{
	struct latch_yaml_node *meta = ensure_child(holder, "metadata", LATCH_YAML_MAPPING);
	struct latch_yaml_node *ann = meta ? ensure_child(meta, "annotations", LATCH_YAML_MAPPING) : NULL;
	if (!ann)
		return inject_fail_at(ctx, holder, NULL, "the pod template's metadata.annotations is not a mapping");
	int r = set_string(ann, STATUS_KEY, "injected");
	if (r == 0 && openbao)
		r = set_string(ann, BAO_STATUS_KEY, "injected");
	return r < 0 ? latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory") : 0;
}

static bool has_latch_container(const struct latch_yaml_node *spec)
{
	const struct latch_yaml_node *inits = latch_yaml_map_get(spec, "initContainers");
	for (size_t i = 0; inits && inits->kind == LATCH_YAML_SEQUENCE && i < inits->n_items; i++)
		if (named(inits->items[i], CONTAINER_NAME))
			return true;
	return false;
}

static void describe(const struct latch_yaml_node *obj, struct latch_buf *out)
{
	const char *kind = latch_yaml_map_get_str(obj, "kind");
	const char *name = latch_yaml_map_get_str(latch_yaml_map_get(obj, "metadata"), "name");
	const char *ns = latch_yaml_map_get_str(latch_yaml_map_get(obj, "metadata"), "namespace");
	latch_buf_printf(out, "%s '%s%s%s'", kind ? kind : "object", ns ? ns : "", ns ? "/" : "", name ? name : "?");
}

static bool system_namespace(const struct latch_yaml_node *obj)
{
	const char *ns = latch_yaml_map_get_str(latch_yaml_map_get(obj, "metadata"), "namespace");
	return ns && (strcmp(ns, "kube-system") == 0 || strcmp(ns, "kube-public") == 0);
}

/* With an fsGroup, the kubelet gives the secrets volume that group (setgid) and every
 * container has it: 0640 reaches the app and no one else. Without, the app's user is not
 * known here, so 0644 as Vault Agent writes them. */
static const char *secret_file_mode(const struct latch_yaml_node *spec)
{
	const struct latch_yaml_node *fs_group = path_get((struct latch_yaml_node *)spec,
							  (const char *const[]){ "securityContext", "fsGroup", NULL });
	char *end = NULL;
	long gid = fs_group && fs_group->kind == LATCH_YAML_SCALAR ? strtol(fs_group->value, &end, 10) : -1;
	return end && end != fs_group->value && !*end && gid >= 0 ? "0640" : "0644";
}

int latch_inject_object(struct latch_yaml_node *obj, const char *name, const struct latch_inject_options *opts,
			struct latch_buf *warnings, struct latch_error *err)
{
	struct pod_template pt;
	/* An empty list given on purpose would otherwise read as "no list": every registry. */
	if (opts->allowed_registries && opts->n_allowed_registries == 0)
		return latch_error_set(err, LATCH_EINVAL, "the allowed registries list is empty; to allow any registry, "
				       "give no list at all");
	if (!obj || obj->kind != LATCH_YAML_MAPPING || !find_pod_template(obj, &pt))
		return 0;
	struct latch_buf what = LATCH_BUF_INIT(4096);
	describe(obj, &what);
	struct inject_context ctx = { name, latch_buf_str(&what), opts, warnings, err, secret_file_mode(pt.spec) };
	struct latch_yaml_node *pod_ann = path_get(pt.holder, (const char *const[]){ "metadata", "annotations", NULL });
	struct latch_yaml_node *obj_ann = pt.holder == obj ? NULL : path_get(obj, (const char *const[]){ "metadata", "annotations", NULL });
	struct inject_settings s;
	unsigned long json_failures = latch_json_allocation_failures();
	int r = inject_read_annotations(&ctx, obj_ann, pod_ann, &s);
	if (r < 0 || !s.inject) {
		latch_buf_done(&what);
		return r < 0 ? r : 0;
	}
	if (s.already_injected && !has_latch_container(pt.spec)) {
		latch_buf_printf(warnings, "%s: %s: already injected by a Vault Agent Injector; left as it is\n", name, ctx.object);
		r = 0;
	} else if (system_namespace(obj)) {
		latch_buf_printf(warnings, "%s: %s: kube-system and kube-public are never injected\n", name, ctx.object);
		r = 0;
	} else {
		bool openbao = uses_openbao_prefix(pod_ann) || uses_openbao_prefix(obj_ann);
		r = add_volumes(&ctx, &s, pt.spec);
		if (r == 0)
			r = add_container(&ctx, &s, pt.spec);
		if (r == 0)
			r = mount_app_containers(&ctx, &s, pt.spec);
		if (r == 0)
			r = wrap_app_commands(&ctx, &s, pt.spec);
		if (r == 0)
			r = share_process_namespace(&ctx, &s, pt.spec);
		if (r == 0)
			r = mark_injected(&ctx, pt.holder, openbao);
		if (r == 0)
			r = 1;
	}
	/* The config and containers are built with many jansson calls: one failed is a failure. */
	if (r >= 0 && latch_json_allocation_failures() != json_failures)
		r = latch_error_set(err, LATCH_ENOMEM, "%s: %s: out of memory", name, ctx.object);
	inject_settings_done(&s);
	latch_buf_done(&what);
	return r;
}

/* List, ResourceList, DeploymentList...: any kind ending in "List" that has items. */
static bool is_list(const struct latch_yaml_node *doc)
{
	const char *kind = latch_yaml_map_get_str(doc, "kind");
	const struct latch_yaml_node *items = latch_yaml_map_get(doc, "items");
	size_t n = kind ? strlen(kind) : 0;
	return n >= 4 && strcmp(kind + n - 4, "List") == 0 && items && items->kind == LATCH_YAML_SEQUENCE;
}

int latch_inject_stream(struct latch_yaml_stream *stream, const char *name, const struct latch_inject_options *opts,
			struct latch_buf *warnings, struct latch_inject_stats *stats, struct latch_error *err)
{
	struct latch_inject_stats st = { 0 };
	for (size_t d = 0; d < stream->n_docs; d++) {
		struct latch_yaml_node *doc = stream->docs[d].root;
		struct latch_yaml_node *items = is_list(doc) ? latch_yaml_map_get(doc, "items") : NULL;
		size_t n = items ? items->n_items : 1;
		for (size_t i = 0; i < n; i++) {
			int r = latch_inject_object(items ? items->items[i] : doc, name, opts, warnings, err);
			if (r < 0)
				return r;
			st.objects++;
			st.injected += (size_t)r;
		}
	}
	if (stats)
		*stats = st;
	return 0;
}
