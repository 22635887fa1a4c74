#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "kubelet.h"
#include "latch/base64.h"
#include "stack.h"

struct kubelet_pod {
	json_t *tmpl;
	char *ns;
	char *binary;
	char *root;
	char path[2048];
};

static const json_t *spec_of(const struct kubelet_pod *p)
{
	return json_object_get(p->tmpl, "spec");
}

const json_t *kubelet_container(const struct kubelet_pod *p, const char *name)
{
	static const char *const lists[] = { "initContainers", "containers" };
	for (size_t l = 0; l < 2; l++) {
		size_t i;
		json_t *c;
		json_array_foreach(json_object_get(spec_of(p), lists[l]), i, c) if (strcmp(latch_json_get_str(c, "name"), name) == 0) return c;
	}
	return NULL;
}

const char *kubelet_host_path(struct kubelet_pod *p, const char *pod_path)
{
	snprintf(p->path, sizeof(p->path), "%s%s", p->root, pod_path);
	return p->path;
}

static void mkdir_p(const char *path, mode_t mode)
{
	char tmp[2048];
	snprintf(tmp, sizeof(tmp), "%s", path);
	for (char *s = tmp + 1; *s; s++)
		if (*s == '/') {
			*s = '\0';
			mkdir(tmp, 0755);
			*s = '/';
		}
	if (mkdir(tmp, mode) < 0 && errno != EEXIST)
		fail_msg("mkdir %s: %s", tmp, strerror(errno));
	chmod(tmp, mode);
}

static const json_t *volume_named(const struct kubelet_pod *p, const char *name)
{
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(spec_of(p), "volumes"), i, v) if (strcmp(latch_json_get_str(v, "name"), name) == 0) return v;
	fail_msg("the pod has no volume '%s'", name);
	return NULL;
}

static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
	char path[4096];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0 || write(fd, data, len) != (ssize_t)len)
		fail_msg("writing %s: %s", path, strerror(errno));
	fchmod(fd, 0644);
	close(fd);
}

/* A projected service-account token as the kubelet makes it: TokenRequest for the pod's
 * ServiceAccount with the volume's audience and expiry. */
static void project_token(struct kubelet_pod *p, const json_t *source, const char *dir)
{
	const json_t *sat = json_object_get(source, "serviceAccountToken");
	const char *sa = latch_json_get_str(spec_of(p), "serviceAccountName");
	const char *audience = latch_json_get_str(sat, "audience");
	json_int_t expiry = json_integer_value(json_object_get(sat, "expirationSeconds"));
	struct latch_tls_options tls = { .ca_file = stack.ca, .client_cert_file = stack.admin_cert, .client_key_file = stack.admin_key };
	struct latch_http_client *kube = stack_client(&tls);
	char url[1024];
	snprintf(url, sizeof(url), "%s/api/v1/namespaces/%s/serviceaccounts/%s/token", stack.kube_url, p->ns, sa ? sa : "default");
	json_t *body = json_pack("{s:s,s:s,s:{s:I}}", "apiVersion", "authentication.k8s.io/v1", "kind", "TokenRequest", "spec",
				 "expirationSeconds", expiry ? expiry : 3600);
	if (audience)
		json_object_set_new(json_object_get(body, "spec"), "audiences", json_pack("[s]", audience));
	char *text = json_dumps(body, JSON_COMPACT);
	json_t *resp;
	if (stack_call(kube, "POST", url, text, NULL, &resp) != 201)
		fail_msg("TokenRequest for %s/%s failed", p->ns, sa);
	const char *token = json_string_value(latch_json_path(resp, "status.token"));
	write_file(dir, latch_json_get_str(sat, "path"), token, strlen(token));
	json_decref(resp);
	free(text);
	json_decref(body);
	latch_http_client_free(kube);
}

static void secret_volume(struct kubelet_pod *p, const json_t *secret, const char *dir)
{
	char path[1024];
	snprintf(path, sizeof(path), "api/v1/namespaces/%s/secrets/%s", p->ns, latch_json_get_str(secret, "secretName"));
	struct latch_tls_options tls = { .ca_file = stack.ca, .client_cert_file = stack.admin_cert, .client_key_file = stack.admin_key };
	struct latch_http_client *kube = stack_client(&tls);
	char url[2048];
	snprintf(url, sizeof(url), "%s/%s", stack.kube_url, path);
	json_t *resp;
	if (stack_call(kube, "GET", url, NULL, NULL, &resp) != 200)
		fail_msg("reading Secret %s for a volume failed", path);
	const char *key;
	json_t *value;
	json_object_foreach(json_object_get(resp, "data"), key, value) {
		struct latch_buf b = LATCH_BUF_INIT(1 << 20);
		assert_int_equal(latch_base64_decode(latch_view_str(json_string_value(value)), false, &b), 0);
		write_file(dir, key, b.ptr ? b.ptr : "", b.len);
		latch_buf_done(&b);
	}
	json_decref(resp);
	latch_http_client_free(kube);
}

/* Make every volume the container mounts, as a directory at its mount path. */
static void prepare_mounts(struct kubelet_pod *p, const json_t *container)
{
	size_t i;
	json_t *m;
	json_array_foreach(json_object_get(container, "volumeMounts"), i, m) {
		const json_t *v = volume_named(p, latch_json_get_str(m, "name"));
		char dir[2048];
		snprintf(dir, sizeof(dir), "%s%s", p->root, latch_json_get_str(m, "mountPath"));
		struct stat st;
		bool exists = stat(dir, &st) == 0;
		mkdir_p(dir, json_object_get(v, "emptyDir") ? 01777 : 0755);
		if (exists)
			continue; /* a volume is made once per pod */
		if (json_object_get(v, "projected")) {
			size_t k;
			json_t *src;
			json_array_foreach(latch_json_path(v, "projected.sources"), k, src) if (json_object_get(src, "serviceAccountToken"))
				project_token(p, src, dir);
		} else if (json_object_get(v, "secret")) {
			secret_volume(p, json_object_get(v, "secret"), dir);
		} else if (!json_object_get(v, "emptyDir")) {
			fail_msg("the kubelet stand-in has no support for volume '%s'", latch_json_get_str(v, "name"));
		}
	}
}

struct kubelet_pod *kubelet_pod_new(const json_t *pod_template, const char *ns, const char *binary)
{
	struct kubelet_pod *p = calloc(1, sizeof(*p));
	p->tmpl = json_deep_copy(pod_template);
	p->ns = strdup(ns);
	p->binary = strdup(binary);
	p->root = stack_mkdtemp("latch-pod");
	chmod(p->root, 0755);
	return p;
}

void kubelet_pod_free(struct kubelet_pod *p)
{
	if (!p)
		return;
	stack_rm_rf(p->root);
	free(p->root);
	free(p->ns);
	free(p->binary);
	json_decref(p->tmpl);
	free(p);
}

static char **string_array(const json_t *a, const json_t *b)
{
	size_t n = json_array_size(a) + json_array_size(b);
	char **out = calloc(n + 1, sizeof(*out));
	size_t k = 0, i;
	json_t *v;
	json_array_foreach(a, i, v) out[k++] = (char *)json_string_value(v);
	json_array_foreach(b, i, v) out[k++] = (char *)json_string_value(v);
	return out;
}

static char **container_env(const json_t *container)
{
	size_t n = json_array_size(json_object_get(container, "env"));
	char **env = calloc(n + 1, sizeof(*env));
	size_t i;
	json_t *e;
	json_array_foreach(json_object_get(container, "env"), i, e) {
		if (!json_object_get(e, "value"))
			fail_msg("the kubelet stand-in supports only literal env values (%s)", latch_json_get_str(e, "name"));
		struct latch_buf b = LATCH_BUF_INIT(1 << 20);
		latch_buf_printf(&b, "%s=%s", latch_json_get_str(e, "name"), latch_json_get_str(e, "value"));
		env[i] = latch_buf_take(&b);
	}
	return env;
}

/* Place the binary at the entrypoint's path inside the root. */
static void install_binary(struct kubelet_pod *p, const char *entrypoint)
{
	char dst[2048];
	snprintf(dst, sizeof(dst), "%s%s", p->root, entrypoint);
	if (access(dst, X_OK) == 0)
		return;
	char *argv[] = { "install", "-D", "-m", "0755", p->binary, dst, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	assert_int_equal(stack_run(argv, envp, "/dev/null", 30, NULL), 0);
}

static pid_t run_in_root(struct kubelet_pod *p, const json_t *container, char **argv, const char *log_path)
{
	long uid = (long)json_integer_value(latch_json_path(container, "securityContext.runAsUser"));
	long gid = (long)json_integer_value(latch_json_path(container, "securityContext.runAsGroup"));
	char **env = container_env(container);
	pid_t pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int fd = open(log_path, O_WRONLY | O_CREAT | O_APPEND, 0600);
		if (fd < 0 || dup2(fd, 1) < 0 || dup2(fd, 2) < 0)
			_exit(120);
		if (chroot(p->root) < 0 || chdir("/") < 0 || setgroups(0, NULL) < 0 || setgid((gid_t)(gid ? gid : 65534)) < 0 ||
		    setuid((uid_t)(uid ? uid : 65534)) < 0)
			_exit(121);
		execve(argv[0], argv, env);
		_exit(127);
	}
	for (size_t i = 0; env[i]; i++)
		free(env[i]);
	free(env);
	return pid;
}

pid_t kubelet_start(struct kubelet_pod *p, const char *name, const char *log_path)
{
	const json_t *c = kubelet_container(p, name);
	if (!c)
		fail_msg("the pod has no container '%s'", name);
	const json_t *command = json_object_get(c, "command");
	if (json_array_size(command) == 0)
		fail_msg("container '%s' has no command: a FROM scratch image needs one", name);
	prepare_mounts(p, c);
	install_binary(p, json_string_value(json_array_get(command, 0)));
	char **argv = string_array(command, json_object_get(c, "args"));
	pid_t pid = run_in_root(p, c, argv, log_path);
	free(argv);
	return pid;
}

int kubelet_exec(struct kubelet_pod *p, const char *name, const json_t *cmd, const char *log_path, double timeout_s)
{
	const json_t *c = kubelet_container(p, name);
	char **argv = string_array(cmd, NULL);
	pid_t pid = run_in_root(p, c, argv, log_path);
	free(argv);
	return stack_wait(pid, timeout_s);
}

int kubelet_wait_started(struct kubelet_pod *p, const char *name, const char *log_path, double timeout_s)
{
	const json_t *probe = latch_json_path(kubelet_container(p, name), "startupProbe.exec.command");
	if (!probe)
		fail_msg("container '%s' has no startupProbe", name);
	double end = stack_now() + timeout_s;
	while (stack_now() < end) {
		if (kubelet_exec(p, name, probe, log_path, 10) == 0)
			return 0;
		struct timespec ts = { 0, 200000000 };
		nanosleep(&ts, NULL);
	}
	return -1;
}
