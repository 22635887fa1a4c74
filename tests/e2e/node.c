#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "gitops.h"
#include "latch/base64.h"
#include "latch/yaml.h"
#include "node.h"
#include "stack.h"

static const char *need(const char *var)
{
	const char *v = getenv(var);
	if (!v || !*v)
		fail_msg("%s is not set: run the e2e suite with the stack's environment (make e2e)", var);
	return v;
}

const char *node_image(const char *name)
{
	char var[64];
	snprintf(var, sizeof(var), "LATCH_IMAGE_%s", name);
	return need(var);
}

struct latch_k8s *node_kube(void)
{
	return gitops_kube(need("KUBECONFIG"));
}

json_t *node_parse_yaml(const char *yaml, const char *name)
{
	struct latch_yaml_stream s;
	struct latch_yaml_limits lim = LATCH_YAML_LIMITS_DEFAULT;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_yaml_parse(latch_view_str(yaml), name, &lim, &s, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	json_t *docs = json_array();
	for (size_t i = 0; i < s.n_docs; i++)
		json_array_append_new(docs, latch_yaml_to_json(s.docs[i].root));
	latch_yaml_stream_done(&s);
	return docs;
}

json_t *node_inject(const char *yaml)
{
	char *dir = stack_mkdtemp("latch-e2e-node");
	char in[512], out[512], errlog[512], cmd[4096];
	snprintf(in, sizeof(in), "%s/in.yaml", dir);
	snprintf(out, sizeof(out), "%s/out.yaml", dir);
	snprintf(errlog, sizeof(errlog), "%s/err", dir);
	stack_write_file(in, yaml);
	snprintf(cmd, sizeof(cmd), "'%s' --vault-addr '%s' --image '%s' -f '%s' >'%s' 2>'%s'",
		 need("LATCH_INJECT"), need("LATCH_POD_VAULT_ADDR"), node_image("INIT"), in, out, errlog);
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	if (stack_run(argv, envp, "/dev/null", 60, NULL) != 0) {
		char *why = stack_read_file(errlog);
		fail_msg("latch-inject refused the manifest: %s", why ? why : "?");
	}
	char *text = stack_read_file(out);
	json_t *docs = node_parse_yaml(text, "latch-inject output");
	free(text);
	stack_rm_rf(dir);
	free(dir);
	return docs;
}

void node_apply_all(struct latch_k8s *k, const json_t *objects)
{
	struct latch_k8s_apply_options o = { .field_manager = "latch-e2e", .force = true };
	struct latch_error err = LATCH_ERROR_INIT;
	const json_t *obj;
	size_t i;
	json_array_foreach(objects, i, obj) {
		if (latch_k8s_apply(k, obj, &o, NULL, &err) < 0)
			fail_msg("apply: %s", latch_error_message(&err));
	}
}

void node_delete_all(struct latch_k8s *k, const json_t *objects)
{
	const json_t *obj;
	size_t i;
	json_array_foreach(objects, i, obj) {
		const json_t *meta = json_object_get(obj, "metadata");
		struct latch_error err = LATCH_ERROR_INIT;
		int r = latch_k8s_delete(k, latch_json_get_str(obj, "apiVersion"),
					 latch_json_get_str(obj, "kind"),
					 latch_json_get_str(meta, "namespace"),
					 latch_json_get_str(meta, "name"), &err);
		if (r < 0 && r != LATCH_ENOTFOUND)
			fail_msg("delete: %s", latch_error_message(&err));
	}
}

void node_ensure_vault_tls(struct latch_k8s *k, const char *ns)
{
	char *ca = stack_read_file(stack.ca);
	struct latch_buf b64 = LATCH_BUF_INIT(1 << 20);
	if (latch_base64_encode(latch_view_str(ca), false, &b64) < 0)
		fail_msg("base64 of the stack CA failed");
	json_t *secret = json_pack("[{s:s,s:s,s:{s:s,s:s},s:{s:s}}]", "apiVersion", "v1", "kind", "Secret",
				   "metadata", "name", "vault-tls", "namespace", ns, "data", "ca.crt",
				   latch_buf_str(&b64));
	node_apply_all(k, secret);
	json_decref(secret);
	latch_buf_done(&b64);
	free(ca);
}

static json_t *list_pods(struct latch_k8s *k, const char *ns, const char *selector)
{
	char path[1024];
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/pods?labelSelector=%s", ns, selector);
	json_t *list = NULL;
	long status = 0;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_request(k, "GET", path, NULL, NULL, &status, &list, &err) < 0 || status != 200)
		fail_msg("listing pods %s in %s: %ld %s", selector, ns, status, latch_error_message(&err));
	return list;
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

json_t *node_list_pods(struct latch_k8s *k, const char *ns, const char *selector)
{
	json_t *list = list_pods(k, ns, selector), *items = json_incref(json_object_get(list, "items"));
	json_decref(list);
	return items ? items : json_array();
}

json_t *node_wait_pod(struct latch_k8s *k, const char *ns, const char *selector,
		      bool (*done)(const json_t *pod, void *arg), void *arg, double timeout_s)
{
	double end = stack_now() + timeout_s;
	for (;;) {
		json_t *list = list_pods(k, ns, selector);
		const json_t *pod;
		size_t i;
		json_array_foreach(json_object_get(list, "items"), i, pod) {
			if (!latch_json_path(pod, "metadata.deletionTimestamp") && done(pod, arg)) {
				json_t *found = json_incref((json_t *)pod);
				json_decref(list);
				return found;
			}
		}
		if (stack_now() > end) {
			char *status = json_dumps(list, JSON_INDENT(1));
			char *events = node_events(k, ns, NULL);
			print_error("pods %s in %s:\n%s\nevents:\n%s\n", selector, ns, status, events);
			free(status);
			free(events);
			json_decref(list);
			fail_msg("no pod %s in %s reached the expected state within %.0f s", selector, ns,
				 timeout_s);
		}
		json_decref(list);
		sleep_s(0.5);
	}
}

void node_wait_no_pods(struct latch_k8s *k, const char *ns, const char *selector, double timeout_s)
{
	double end = stack_now() + timeout_s;
	for (;;) {
		json_t *list = list_pods(k, ns, selector);
		size_t n = json_array_size(json_object_get(list, "items"));
		json_decref(list);
		if (n == 0)
			return;
		if (stack_now() > end)
			fail_msg("%zu pods %s in %s still there after %.0f s", n, selector, ns, timeout_s);
		sleep_s(0.5);
	}
}

const char *node_pod_name(const json_t *pod)
{
	return latch_json_get_str(json_object_get(pod, "metadata"), "name");
}

const json_t *node_container_status(const json_t *pod, const char *container)
{
	const char *lists[] = { "status.initContainerStatuses", "status.containerStatuses" };
	for (size_t l = 0; l < 2; l++) {
		const json_t *c;
		size_t i;
		json_array_foreach(latch_json_path(pod, lists[l]), i, c) {
			if (strcmp(latch_json_get_str(c, "name"), container) == 0)
				return c;
		}
	}
	return NULL;
}

bool node_pod_running_ready(const json_t *pod, void *unused)
{
	const json_t *c;
	size_t i;
	if (strcmp(latch_json_get_str(json_object_get(pod, "status"), "phase") ?: "", "Running") != 0)
		return false;
	json_array_foreach(latch_json_path(pod, "status.conditions"), i, c) {
		if (strcmp(latch_json_get_str(c, "type"), "Ready") == 0)
			return strcmp(latch_json_get_str(c, "status"), "True") == 0;
	}
	return false;
}

bool node_pod_succeeded(const json_t *pod, void *unused)
{
	return strcmp(latch_json_get_str(json_object_get(pod, "status"), "phase") ?: "", "Succeeded") == 0;
}

/* GET of a text resource from the API server as the stack admin; NULL on a non-200 answer
 * when soft, a failed test otherwise. */
static char *kube_text_get(const char *path, bool soft)
{
	struct latch_tls_options tls = { .ca_file = stack.ca, .client_cert_file = stack.admin_cert,
					 .client_key_file = stack.admin_key };
	struct latch_http_client *c = stack_client(&tls);
	char url[2048];
	snprintf(url, sizeof(url), "%s%s", stack.kube_url, path);
	struct latch_http_request req = { .method = "GET", .url = url };
	struct latch_http_response resp = { 0 };
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_http_do(c, &req, &resp, &err) < 0)
		fail_msg("GET %s: %s", path, latch_error_message(&err));
	if (resp.status != 200 && !soft)
		fail_msg("GET %s answered %ld: %s", path, resp.status, latch_buf_str(&resp.body));
	char *text = resp.status == 200 ? strdup(latch_buf_str(&resp.body)) : NULL;
	latch_http_response_done(&resp);
	latch_http_client_free(c);
	return text;
}

static void logs_path(char *path, size_t n, const char *ns, const char *pod, const char *container,
		      bool previous)
{
	snprintf(path, n, "/api/v1/namespaces/%s/pods/%s/log?container=%s%s", ns, pod, container,
		 previous ? "&previous=true" : "");
}

char *node_logs(const char *ns, const char *pod, const char *container, bool previous)
{
	char path[1024];
	logs_path(path, sizeof(path), ns, pod, container, previous);
	return kube_text_get(path, false);
}

char *node_logs_when_served(const char *ns, const char *pod, const char *container, double timeout_s)
{
	char path[1024];
	logs_path(path, sizeof(path), ns, pod, container, false);
	double end = stack_now() + timeout_s;
	char *text;
	while (!(text = kube_text_get(path, true))) {
		if (stack_now() > end)
			return kube_text_get(path, false);
		sleep_s(0.5);
	}
	return text;
}

char *node_events(struct latch_k8s *k, const char *ns, const char *name)
{
	char path[1024];
	snprintf(path, sizeof(path), "/api/v1/namespaces/%s/events%s%s", ns,
		 name ? "?fieldSelector=involvedObject.name%3D" : "", name ? name : "");
	json_t *list = NULL;
	long status = 0;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_request(k, "GET", path, NULL, NULL, &status, &list, &err) < 0 || status != 200)
		fail_msg("events in %s: %s", ns, latch_error_message(&err));
	struct latch_buf out = LATCH_BUF_INIT(8u << 20);
	const json_t *e;
	size_t i;
	json_array_foreach(json_object_get(list, "items"), i, e) {
		const char *object = latch_json_get_str(json_object_get(e, "involvedObject"), "name");
		const char *reason = latch_json_get_str(e, "reason");
		const char *message = latch_json_get_str(e, "message");
		if (latch_buf_printf(&out, "%s %s: %s\n", object ?: "?", reason ?: "?", message ?: "") < 0)
			fail_msg("events: out of memory");
	}
	json_decref(list);
	return latch_buf_take(&out);
}

char *node_volume_dir(const json_t *pod, const char *volume)
{
	char *dir = malloc(2048);
	snprintf(dir, 2048, "%s/node/kubelet/pods/%s/volumes/kubernetes.io~empty-dir/%s", stack.dir,
		 latch_json_get_str(json_object_get(pod, "metadata"), "uid"), volume);
	return dir;
}

/* "containerd://<id>" of a running container, as the kubelet reports it. */
static const char *container_id(const json_t *pod, const char *container)
{
	const json_t *c = node_container_status(pod, container);
	const char *id = c ? latch_json_get_str(c, "containerID") : NULL;
	if (!id || strncmp(id, "containerd://", 13) != 0)
		fail_msg("container %s has no containerd id yet", container);
	return id + 13;
}

static char *runc(const char *args)
{
	char cmd[1024], log[256];
	snprintf(log, sizeof(log), "/tmp/latch-e2e-runc-%d.out", (int)getpid());
	snprintf(cmd, sizeof(cmd), "runc --root '%s' %s >'%s' 2>&1", need("LATCH_NODE_RUNC_ROOT"), args, log);
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	char *envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	int status = stack_run(argv, envp, "/dev/null", 30, NULL);
	char *out = stack_read_file(log);
	remove(log);
	if (status != 0)
		fail_msg("runc %s: %s", args, out ? out : "?");
	return out;
}

long node_container_pid(const json_t *pod, const char *container)
{
	char args[256];
	snprintf(args, sizeof(args), "state %s", container_id(pod, container));
	char *out = runc(args);
	json_t *state = json_loads(out, 0, NULL);
	long pid = state ? (long)json_integer_value(json_object_get(state, "pid")) : 0;
	json_decref(state);
	free(out);
	if (pid <= 0)
		fail_msg("no pid for container %s", container);
	return pid;
}

void node_kill_container(const json_t *pod, const char *container)
{
	char args[256];
	snprintf(args, sizeof(args), "kill %s KILL", container_id(pod, container));
	free(runc(args));
}
