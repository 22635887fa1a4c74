/* latch-sync once against the stack's kube-apiserver and a git repository made by the test
 * (file://): apply with injection and owner labels, prune, rollback by git revert, and a
 * bad revision (invalid YAML, or an object the server refuses) that applies nothing. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <ctype.h>
#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "latch/k8s.h"
#include "gitops.h"
#include "node.h"
#include "stack.h"

struct repo {
	char *dir;
	char config[512];
	char log[512];
};

static void write_in(const struct repo *r, const char *rel, const char *text)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/repo/%s", r->dir, rel);
	stack_write_file(path, text);
}

static const char base[] =
	"apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sync-e2e\n---\n"
	"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\n  namespace: sync-e2e\ndata:\n  color: blue\n---\n"
	"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: sync-e2e\nspec:\n"
	"  selector: {matchLabels: {app: web}}\n  template:\n    metadata:\n      labels: {app: web}\n      annotations:\n"
	"        vault.hashicorp.com/agent-inject: \"true\"\n        vault.hashicorp.com/role: demo\n"
	"        vault.hashicorp.com/agent-inject-secret-db: database/creds/app\n"
	"    spec:\n      serviceAccountName: app\n      containers: [{name: web, image: nginx}]\n";

/* health: the healthCheck and timeout lines of the source. The Deployment's image (nginx) is
 * not on the stack's node and cannot be pulled, so it never becomes available: most tests
 * turn the check off (test_node has latch-sync wait for a workload that does). */
static void repo_setup_health(struct repo *r, const char *health)
{
	r->dir = stack_mkdtemp("latch-e2e-sync");
	char path[1024];
	snprintf(path, sizeof(path), "%s/repo/clusters/stack", r->dir);
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cd repo && git init -q -b main", path);
	gitops_sh(r->dir, cmd);
	write_in(r, "clusters/stack/app.yaml", base);
	write_in(r, "README.md", "not a manifest\n");
	gitops_sh(r->dir, "cd repo && git add -A && git commit -qm base");
	snprintf(r->config, sizeof(r->config), "%s/sync.yaml", r->dir);
	snprintf(r->log, sizeof(r->log), "%s/sync.log", r->dir);
	char config[4096];
	snprintf(config, sizeof(config),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: e2e}\nspec:\n  namespace: latch-system\n"
		 "  cacheDir: %s/cache\n  sources:\n  - name: apps\n    url: file://%s/repo\n    ref: {branch: main}\n"
		 "    path: clusters/stack\n    inject: {vaultAddress: '%s', image: 'latch-init:e2e'}\n%s",
		 r->dir, r->dir, stack.vault_addr, health);
	stack_write_file(r->config, config);
}

static void repo_setup(struct repo *r)
{
	repo_setup_health(r, "    healthCheck: false\n");
}

static int sync_once(const struct repo *r)
{
	return gitops_sync("once", r->config, getenv("KUBECONFIG"), r->log);
}

static struct latch_k8s *kube(void)
{
	return gitops_kube(getenv("KUBECONFIG"));
}

static json_t *get(struct latch_k8s *k, const char *api, const char *kind, const char *name)
{
	json_t *obj = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	int r = latch_k8s_get(k, api, kind, strcmp(kind, "Namespace") ? "sync-e2e" : NULL, name, &obj, &err);
	latch_error_done(&err);
	return r == 0 ? obj : NULL;
}

static json_t *inventory(struct latch_k8s *k)
{
	json_t *cm = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_k8s_get(k, "v1", "ConfigMap", "latch-system", "latch-sync.e2e.apps", &cm, &err), 0);
	return cm;
}

/* latch-sync's entry in obj's managedFields, as text (to free; NULL without one): what its
 * applies set and when they last changed something. */
static char *latch_sync_fields(const json_t *obj)
{
	size_t i;
	json_t *entry;
	json_array_foreach(latch_json_path(obj, "metadata.managedFields"), i, entry) {
		const char *manager = latch_json_get_str(entry, "manager");
		if (manager && strcmp(manager, "latch-sync") == 0)
			return json_dumps(entry, JSON_COMPACT | JSON_SORT_KEYS);
	}
	return NULL;
}

static char *head(const struct repo *r)
{
	char repo[1024];
	snprintf(repo, sizeof(repo), "%s/repo", r->dir);
	return gitops_rev(repo, "HEAD");
}

static void test_sync__apply_prune_revert_and_bad_revisions(void **state)
{
	struct repo r;
	repo_setup(&r);
	struct latch_k8s *k = kube();

	/* First pass: everything applied, labelled, the Deployment injected. */
	assert_int_equal(sync_once(&r), 0);
	json_t *web = get(k, "apps/v1", "Deployment", "web");
	assert_non_null(web);
	json_t *labels = latch_json_path(web, "metadata.labels");
	assert_string_equal(latch_json_get_str(labels, "latch.dev/config"), "e2e");
	assert_string_equal(latch_json_get_str(labels, "latch.dev/source"), "apps");
	assert_string_equal(latch_json_get_str(json_array_get(latch_json_path(web, "spec.template.spec.initContainers"), 0), "name"),
			    "latch-init");
	char *rev1 = head(&r);
	json_t *inv = inventory(k);
	assert_string_equal(latch_json_get_str(json_object_get(inv, "data"), "lastAppliedRevision"), rev1);
	char *inv_rv = strdup(json_string_value(latch_json_path(inv, "metadata.resourceVersion")));
	json_decref(inv);

	/* An unchanged revision writes nothing: every resourceVersion stays, the inventory's too. */
	json_t *settings = get(k, "v1", "ConfigMap", "settings");
	char *rv = strdup(latch_json_get_str(json_object_get(settings, "metadata"), "resourceVersion"));
	json_decref(settings);
	json_t *web_before = web;
	assert_int_equal(sync_once(&r), 0);
	settings = get(k, "v1", "ConfigMap", "settings");
	assert_string_equal(latch_json_get_str(json_object_get(settings, "metadata"), "resourceVersion"), rv);
	/* The Deployment's controller writes it on its own schedule (the revision annotation,
	 * status), so what must stay is what latch-sync owns: its spec and latch-sync's fields. */
	web = get(k, "apps/v1", "Deployment", "web");
	assert_int_equal(json_integer_value(latch_json_path(web, "metadata.generation")),
			 json_integer_value(latch_json_path(web_before, "metadata.generation")));
	char *fields = latch_sync_fields(web), *fields_before = latch_sync_fields(web_before);
	assert_non_null(fields_before);
	assert_string_equal(fields, fields_before);
	free(fields);
	free(fields_before);
	json_decref(settings);
	json_decref(web_before);
	json_decref(web);
	inv = inventory(k);
	assert_string_equal(json_string_value(latch_json_path(inv, "metadata.resourceVersion")), inv_rv);
	json_decref(inv);
	free(inv_rv);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "changed=0 drifted=0 pruned=0"));
	free(log);

	/* Someone edits an object by hand: the next pass puts it back and counts the drift. */
	json_t *edit = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s}}", "apiVersion", "v1", "kind", "ConfigMap", "metadata", "name",
				 "settings", "namespace", "sync-e2e", "data", "color", "red");
	struct latch_k8s_apply_options by_hand = { .field_manager = "kubectl-edit", .force = true };
	struct latch_error eerr = LATCH_ERROR_INIT;
	assert_int_equal(latch_k8s_apply(k, edit, &by_hand, NULL, &eerr), 0);
	json_decref(edit);
	assert_int_equal(sync_once(&r), 0);
	settings = get(k, "v1", "ConfigMap", "settings");
	assert_string_equal(latch_json_get_str(json_object_get(settings, "data"), "color"), "blue");
	json_decref(settings);
	inv = inventory(k);
	assert_non_null(strstr(latch_json_get_str(json_object_get(inv, "data"), "result"), "1 changed (1 drifted)"));
	json_decref(inv);
	long status = 0;
	json_t *events = NULL;
	assert_int_equal(latch_k8s_request(k, "GET", "/api/v1/namespaces/latch-system/events", NULL, NULL, &status, &events, &eerr), 0);
	char *dump = json_dumps(events, JSON_COMPACT);
	assert_non_null(strstr(dump, "1 changed (1 drifted)"));
	free(dump);
	json_decref(events);

	/* The ConfigMap leaves the repository: it is pruned. */
	const char *without = strstr(base, "apiVersion: apps/v1");
	char text[4096];
	snprintf(text, sizeof(text), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sync-e2e\n---\n%s", without);
	write_in(&r, "clusters/stack/app.yaml", text);
	gitops_sh(r.dir, "cd repo && git commit -qam 'drop settings'");
	assert_int_equal(sync_once(&r), 0);
	assert_null(get(k, "v1", "ConfigMap", "settings"));

	/* Rollback is git revert: the ConfigMap comes back. */
	gitops_sh(r.dir, "cd repo && git revert --no-edit HEAD >/dev/null");
	assert_int_equal(sync_once(&r), 0);
	settings = get(k, "v1", "ConfigMap", "settings");
	assert_non_null(settings);
	json_decref(settings);
	char *good = head(&r);

	/* Invalid YAML next to a valid change: nothing of the revision is applied. */
	write_in(&r, "clusters/stack/more.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: extra\n  namespace: sync-e2e\n");
	write_in(&r, "clusters/stack/zz-bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n   bad: indent\n");
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm bad");
	assert_int_equal(sync_once(&r), 1);
	assert_null(get(k, "v1", "ConfigMap", "extra"));
	inv = inventory(k);
	assert_string_equal(latch_json_get_str(json_object_get(inv, "data"), "lastAppliedRevision"), good);
	assert_non_null(strstr(latch_json_get_str(json_object_get(inv, "data"), "result"), "clusters/stack/zz-bad.yaml@"));
	assert_non_null(strstr(latch_json_get_str(json_object_get(inv, "data"), "result"), ":5:7:"));
	json_decref(inv);

	/* An object the server refuses: still nothing applied, the server's message recorded. */
	write_in(&r, "clusters/stack/zz-bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: Not_A_Valid_Name\n  namespace: sync-e2e\n");
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm refused");
	assert_int_equal(sync_once(&r), 1);
	assert_null(get(k, "v1", "ConfigMap", "extra"));
	log = stack_read_file(r.log);
	assert_non_null(strstr(log, "ConfigMap 'sync-e2e/Not_A_Valid_Name' (dry run): the API server answered 422"));
	free(log);

	/* Fixed: the revision applies. */
	gitops_sh(r.dir, "cd repo && git rm -q clusters/stack/zz-bad.yaml && git commit -qm fixed");
	assert_int_equal(sync_once(&r), 0);
	json_t *extra = get(k, "v1", "ConfigMap", "extra");
	assert_non_null(extra);
	json_decref(extra);

	free(rev1);
	free(rv);
	free(good);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* diff: what the next pass would change, field paths only (no values), nothing written. */
static void test_sync__diff_names_changes_and_writes_nothing(void **state)
{
	struct repo r;
	repo_setup(&r);
	struct latch_k8s *k = kube();
	assert_int_equal(sync_once(&r), 0);
	char *before = gitops_configmap_value(k, "sync-e2e", "settings", "color");
	assert_string_equal(before, "blue");
	char text[4096];
	snprintf(text, sizeof(text),
		 "%s---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: added\n  namespace: sync-e2e\n"
		 "---\napiVersion: v1\nkind: Secret\nmetadata:\n  name: token\n  namespace: sync-e2e\nstringData:\n  password: s3cr3t-value\n",
		 base);
	char *changed = strdup(text);
	char *blue = strstr(changed, "color: blue");
	memcpy(blue, "color: pink", strlen("color: pink"));
	write_in(&r, "clusters/stack/app.yaml", changed);
	free(changed);
	gitops_sh(r.dir, "cd repo && git commit -qam 'pink, and one more'");
	assert_int_equal(gitops_sync("diff", r.config, getenv("KUBECONFIG"), r.log), 0);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "~ v1 ConfigMap sync-e2e/settings: data.color\n"));
	assert_non_null(strstr(log, "+ v1 ConfigMap sync-e2e/added\n"));
	assert_null(strstr(log, "Deployment sync-e2e/web"));
	assert_null(strstr(log, "pink"));
	assert_non_null(strstr(log, "+ v1 Secret sync-e2e/token\n"));
	assert_null(strstr(log, "s3cr3t-value"));
	assert_null(strstr(log, "czNjcjN0LXZhbHVl")); /* base64 of it */
	assert_non_null(strstr(log, "would_change=3"));
	free(log);
	char *after = gitops_configmap_value(k, "sync-e2e", "settings", "color");
	assert_string_equal(after, "blue");
	assert_null(gitops_get(k, "v1", "ConfigMap", "sync-e2e", "added"));
	free(before);
	free(after);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* deploy/latch-sync/latch-sync.yaml as shipped passes the API server's validation. */
static void test_sync__deploy_manifest_passes_server_validation(void **state)
{
	const char *root = getenv("LATCH_SOURCE_ROOT");
	if (!root)
		fail_msg("LATCH_SOURCE_ROOT is not set (meson sets it)");
	struct repo r;
	repo_setup(&r);
	char path[1024];
	snprintf(path, sizeof(path), "%s/deploy/latch-sync/latch-sync.yaml", root);
	char *manifest = stack_read_file(path);
	if (!manifest)
		fail_msg("cannot read %s", path);
	gitops_sh(r.dir, "cd repo && git rm -q -r clusters && mkdir -p clusters/stack");
	write_in(&r, "clusters/stack/latch-sync.yaml", manifest);
	free(manifest);
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm deploy");
	assert_int_equal(gitops_sync("diff", r.config, getenv("KUBECONFIG"), r.log), 0);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "apps/v1 Deployment latch-system/latch-sync"));
	assert_non_null(strstr(log, "rbac.authorization.k8s.io/v1 ClusterRoleBinding latch-sync"));
	free(log);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* targetNamespace: namespaced objects without one land there; a cluster-scoped object is
 * not put in it, is not seen as drifted on every pass, and is pruned when it leaves. */
static void test_sync__target_namespace_and_cluster_scoped_objects(void **state)
{
	struct repo r;
	repo_setup_health(&r, "    healthCheck: false\n    targetNamespace: sync-target\n");
	/* An inventory of its own: this revision drops sync-e2e, which the other tests keep. */
	char *config = stack_read_file(r.config);
	char *name = strstr(config, "{name: e2e}");
	assert_non_null(name);
	char renamed[4096];
	snprintf(renamed, sizeof(renamed), "%.*s{name: e2e-target}%s", (int)(name - config), config, name + strlen("{name: e2e}"));
	stack_write_file(r.config, renamed);
	free(config);
	struct latch_k8s *k = kube();
	char role[128];
	snprintf(role, sizeof(role), "sync-target-reader-%d", (int)getpid());
	char text[2048];
	snprintf(text, sizeof(text),
		 "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sync-target\n---\n"
		 "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: b\n---\n"
		 "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: %s\n"
		 "rules: [{apiGroups: [\"\"], resources: [configmaps], verbs: [get]}]\n",
		 role);
	gitops_sh(r.dir, "cd repo && git rm -q -r clusters && mkdir -p clusters/stack");
	write_in(&r, "clusters/stack/app.yaml", text);
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm target");
	assert_int_equal(sync_once(&r), 0);
	char *a = gitops_configmap_value(k, "sync-target", "plain", "a");
	assert_non_null(a);
	assert_string_equal(a, "b");
	free(a);
	json_t *cr = gitops_get(k, "rbac.authorization.k8s.io/v1", "ClusterRole", NULL, role);
	assert_non_null(cr);
	json_decref(cr);

	/* Unchanged: nothing drifted, nothing written. */
	assert_int_equal(sync_once(&r), 0);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "changed=0 drifted=0 pruned=0"));
	free(log);

	/* The ClusterRole leaves the repository: pruned. */
	snprintf(text, sizeof(text),
		 "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sync-target\n---\n"
		 "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: plain\ndata:\n  a: b\n");
	write_in(&r, "clusters/stack/app.yaml", text);
	gitops_sh(r.dir, "cd repo && git commit -qam 'no role'");
	assert_int_equal(sync_once(&r), 0);
	assert_null(gitops_get(k, "rbac.authorization.k8s.io/v1", "ClusterRole", NULL, role));
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* Polls path until it answers want, within seconds; returns the last body (to free). */
static char *await_status(int port, const char *path, long want, double seconds)
{
	double end = stack_now() + seconds;
	char *body = NULL;
	long status = -1;
	while (stack_now() < end) {
		free(body);
		if ((status = gitops_http_get(port, path, &body)) == want)
			return body;
		struct timespec pause = { 0, 200000000 };
		nanosleep(&pause, NULL);
	}
	fail_msg("%s answered %ld, not %ld, within %.0f s: %s", path, status, want, seconds, body ? body : "");
	return NULL;
}

/* The status page once it shows text (the pass may still be on its way). */
static char *await_page(int port, const char *text, double seconds)
{
	double end = stack_now() + seconds;
	char *body = NULL;
	while (stack_now() < end) {
		free(body);
		body = NULL;
		if (gitops_http_get(port, "/", &body) == 200 && strstr(body, text))
			return body;
		struct timespec pause = { 0, 200000000 };
		nanosleep(&pause, NULL);
	}
	fail_msg("the status page did not show '%s' within %.0f s: %s", text, seconds, body ? body : "");
	return NULL;
}

/* Whether the process may write no core file (its memory holds git credentials). */
static bool no_core_dumps(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/limits", (int)pid);
	char *limits = stack_read_file(path);
	const char *line = limits ? strstr(limits, "Max core file size") : NULL;
	unsigned long soft = 1, hard = 1;
	bool zero = line && sscanf(line + strlen("Max core file size"), " %lu %lu", &soft, &hard) == 2 &&
		    soft == 0 && hard == 0;
	free(limits);
	return zero;
}

/* run --listen: /healthz, /readyz and /metrics follow the passes. */
static void test_sync__run_serves_health_readiness_and_metrics(void **state)
{
	struct repo r;
	repo_setup_health(&r, "    healthCheck: false\n    interval: 1s\n");
	int port = gitops_free_port();
	char listen[64];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", port);
	pid_t pid = gitops_spawn(r.config, getenv("KUBECONFIG"), r.log, (const char *const[]){ "--listen", listen, "--max-passes", "12", NULL });
	free(await_status(port, "/readyz", 200, 30));
	free(await_status(port, "/healthz", 200, 5));
	assert_true(no_core_dumps(pid));
	char *metrics = await_status(port, "/metrics", 200, 5);
	assert_non_null(strstr(metrics, "# TYPE latch_sync_passes_total counter"));
	assert_non_null(strstr(metrics, "latch_sync_objects{config=\"e2e\",source=\"apps\"} 3\n"));
	assert_null(strstr(metrics, "latch_sync_passes_total{config=\"e2e\",source=\"apps\",result=\"success\"} 0\n"));
	free(metrics);

	/* A bad commit: not ready, and the failure is counted. */
	write_in(&r, "clusters/stack/zz-bad.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n   bad: indent\n");
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm bad");
	char *why = await_status(port, "/readyz", 503, 20);
	assert_non_null(strstr(why, "source apps: last pass failed: "));
	assert_non_null(strstr(why, "zz-bad.yaml"));
	free(why);
	metrics = await_status(port, "/metrics", 200, 5);
	assert_null(strstr(metrics, "result=\"failure\"} 0\n"));
	free(metrics);
	char *missing = NULL;
	assert_int_equal(gitops_http_get(port, "/nothing", &missing), 404);
	free(missing);
	assert_int_equal(stack_wait(pid, 60), 0);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* A connection to 127.0.0.1:port whose reads and writes give up after timeout_s; -1 if none. */
static int connect_local(int port, double timeout_s)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct timeval tv = { (time_t)timeout_s, (long)((timeout_s - (double)(time_t)timeout_s) * 1e6) };
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port),
				 .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

/* The agent a test started with spawn_listening(): stopped by stop_agent() after a test that
 * failed halfway, so it cannot go on syncing the shared inventory under the next tests. */
static pid_t running_agent;

static int stop_agent(void **state)
{
	if (running_agent > 0 && kill(running_agent, SIGTERM) == 0)
		stack_wait(running_agent, 30);
	running_agent = 0;
	return 0;
}

/* The end of a test that started an agent: it stops cleanly on SIGTERM. */
static void stop_listening(pid_t pid)
{
	running_agent = 0;
	kill(pid, SIGTERM);
	assert_int_equal(stack_wait(pid, 30), 0);
}

/* latch-sync run serving on a free port of 127.0.0.1, once /readyz says every source applied. */
/* Deletes the Leases of a SyncConfig that an earlier run left behind (an agent killed with
 * its test): a new agent would wait a lease duration for each, seeing another replica. */
static void forget_leases(struct latch_k8s *k, const char *config)
{
	json_t *leases = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_k8s_list(k, "coordination.k8s.io/v1", "Lease", NULL, &leases, &err), 0);
	char source_prefix[128], replica_prefix[128];
	snprintf(source_prefix, sizeof(source_prefix), "latch-sync.%s.", config);
	snprintf(replica_prefix, sizeof(replica_prefix), "latch-sync-replica.%s.", config);
	size_t i;
	json_t *lease;
	json_array_foreach(leases, i, lease) {
		const char *name = latch_json_get_str(json_object_get(lease, "metadata"), "name");
		const char *ns = latch_json_get_str(json_object_get(lease, "metadata"), "namespace");
		if (name && ns && strcmp(ns, "latch-system") == 0 &&
		    (strncmp(name, source_prefix, strlen(source_prefix)) == 0 ||
		     strncmp(name, replica_prefix, strlen(replica_prefix)) == 0))
			assert_int_equal(latch_k8s_delete(k, "coordination.k8s.io/v1", "Lease", ns, name, &err), 0);
	}
	json_decref(leases);
	latch_error_done(&err);
}

static pid_t spawn_listening(const struct repo *r, int *ret_port)
{
	*ret_port = gitops_free_port();
	char listen[64];
	snprintf(listen, sizeof(listen), "127.0.0.1:%d", *ret_port);
	running_agent = gitops_spawn(r->config, getenv("KUBECONFIG"), r->log, (const char *const[]){ "--listen",
		listen, NULL });
	free(await_status(*ret_port, "/readyz", 200, 30));
	return running_agent;
}

/* One GET /healthz from 127.0.0.1 that must complete within limit_s; its status, -1 when not. */
static long probe_within(int port, double limit_s)
{
	double start = stack_now();
	int fd = connect_local(port, limit_s);
	static const char request[] = "GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n";
	char answer[512] = { 0 };
	long status = -1;
	if (fd >= 0 && send(fd, request, sizeof(request) - 1, MSG_NOSIGNAL) == (ssize_t)sizeof(request) - 1 &&
	    read(fd, answer, sizeof(answer) - 1) > 0 && sscanf(answer, "HTTP/1.1 %ld", &status) != 1)
		status = -1;
	if (fd >= 0)
		close(fd);
	return stack_now() - start <= limit_s ? status : -1;
}

/* A client of 127.0.0.2 that starts a request and then sends one byte at a time. */
static int slow_client(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	struct sockaddr_in from = { .sin_family = AF_INET }, to = { .sin_family = AF_INET,
		.sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.0.2", &from.sin_addr);
	inet_pton(AF_INET, "127.0.0.1", &to.sin_addr);
	if (bind(fd, (struct sockaddr *)&from, sizeof(from)) < 0)
		fail_msg("binding a client to 127.0.0.2: %s", latch_errno_message(errno));
	if (connect(fd, (struct sockaddr *)&to, sizeof(to)) < 0 && errno != EINPROGRESS)
		fail_msg("connect: %s", latch_errno_message(errno));
	return fd;
}

/* Whether the server closed the connection (a read sees the end or a reset). */
static bool closed_by_server(int fd)
{
	char c;
	ssize_t n = recv(fd, &c, 1, MSG_DONTWAIT);
	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK);
}

/* 200 slow clients (one byte a second, from 127.0.0.2, for 13 s) hold connections: /healthz
 * from 127.0.0.1 answers within 1 s all along, and every slow connection is cut by the
 * whole-connection deadline (10 s) or refused by the per-client limit. */
static void test_sync__probes_answer_while_slow_clients_hold_connections(void **state)
{
	struct repo r;
	repo_setup_health(&r, "    healthCheck: false\n    interval: 1s\n");
	int port;
	pid_t pid = spawn_listening(&r, &port);
	enum { SLOW = 200 };
	int slow[SLOW];
	bool started[SLOW] = { false };
	for (int i = 0; i < SLOW; i++)
		slow[i] = slow_client(port);
	static const char request_line[] = "GET /healthz HTTP/1.1\r\n";
	unsigned probes = 0, late = 0;
	double start = stack_now(), next_byte = start;
	while (stack_now() - start < 13) {
		/* Each second, every slow client sends its request line (once connected), then a byte. */
		for (int i = 0; stack_now() >= next_byte && i < SLOW; i++)
			if (!started[i])
				started[i] = send(slow[i], request_line, sizeof(request_line) - 1, MSG_NOSIGNAL) > 0;
			else
				(void)!send(slow[i], "X", 1, MSG_NOSIGNAL);
		if (stack_now() >= next_byte)
			next_byte += 1;
		probes++;
		if (probe_within(port, 1.0) != 200)
			late++;
		struct timespec pause = { 0, 250 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
	int cut = 0;
	for (int i = 0; i < SLOW; i++) {
		cut += closed_by_server(slow[i]);
		close(slow[i]);
	}
	stop_listening(pid);
	if (late > 0)
		fail_msg("%u of %u probes did not answer 200 within 1 s", late, probes);
	assert_true(probes >= 30);
	assert_int_equal(cut, SLOW);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* POST path with extra header lines and a body; the status, or -1. */
static long http_post(int port, const char *path, const char *headers, const char *body, size_t body_len)
{
	int fd = connect_local(port, 5);
	struct latch_buf request = LATCH_BUF_INIT(4u << 20);
	latch_buf_printf(&request,
		"POST %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Length: %zu\r\n%s\r\n",
			 path, body_len, headers);
	latch_buf_append(&request, body, body_len);
	char answer[512] = { 0 };
	long status = -1;
	if (fd >= 0 && send(fd, request.ptr, request.len, MSG_NOSIGNAL) >= 0 &&
	    read(fd, answer, sizeof(answer) - 1) > 0 &&
	    sscanf(answer, "HTTP/1.1 %ld", &status) != 1)
		status = -1;
	if (fd >= 0)
		close(fd);
	latch_buf_done(&request);
	return status;
}

/* X-Hub-Signature-256 for body under secret, as GitHub sends it. */
static void github_signature(const char *secret, const char *body, char header[128])
{
	unsigned char mac[32];
	unsigned int len = 0;
	HMAC(EVP_sha256(), secret, (int)strlen(secret), (const unsigned char *)body, strlen(body), mac, &len);
	int n = snprintf(header, 128, "X-Hub-Signature-256: sha256=");
	for (unsigned i = 0; i < len; i++)
		n += snprintf(header + n, (size_t)(128 - n), "%02x", mac[i]);
	snprintf(header + n, (size_t)(128 - n), "\r\n");
}

static const char *hook_value(struct latch_k8s *k)
{
	static char value[64];
	json_t *cm = gitops_get(k, "v1", "ConfigMap", "sync-e2e", "hooked");
	snprintf(value, sizeof(value), "%s", cm ? latch_json_get_str(latch_json_path(cm, "data"), "v") ?: "" : "");
	json_decref(cm);
	return value;
}

/* A push followed by a signed hook is applied at once, though the interval is an hour; a hook
 * without a valid signature, for an unknown source or too large starts nothing; a flood is
 * cut by the rate limit and the agent stays responsive. */
static void test_sync__signed_webhook_starts_a_pass_at_once(void **state)
{
	char *secrets = stack_mkdtemp("latch-e2e-hook"), secret_file[1100], source[1400];
	snprintf(secret_file, sizeof(secret_file), "%s/secret", secrets);
	stack_write_file(secret_file, "hook-s3cret\n");
	snprintf(source, sizeof(source), "    healthCheck: false\n    interval: 1h\n    webhook: {secretFile: %s}\n",
		 secret_file);
	struct repo r;
	repo_setup_health(&r, source);
	write_in(&r, "clusters/stack/hooked.yaml",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hooked, namespace: sync-e2e}\n"
						   "data: {v: one}\n");
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm hooked");
	int port;
	pid_t pid = spawn_listening(&r, &port);
	struct latch_k8s *k = kube();
	assert_string_equal(hook_value(k), "one");

	write_in(&r, "clusters/stack/hooked.yaml",
		"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: hooked, namespace: sync-e2e}\n"
						   "data: {v: two}\n");
	gitops_sh(r.dir, "cd repo && git commit -qam two");
	static const char push[] = "{\"ref\":\"refs/heads/main\"}";
	char good[128];
	github_signature("hook-s3cret", push, good);
	assert_int_equal(http_post(port, "/hook/apps", "X-Hub-Signature-256: sha256=00\r\n", push, strlen(push)),
		401);
	char wrong[128];
	github_signature("not-the-secret", push, wrong);
	assert_int_equal(http_post(port, "/hook/apps", wrong, push, strlen(push)), 401);
	assert_int_equal(http_post(port, "/hook/nothing", good, push, strlen(push)), 404);
	assert_int_equal(http_post(port, "/hook/apps", "Content-Type: application/json\r\n", "x", 1), 401);
	sleep(2);
	assert_string_equal(hook_value(k), "one"); /* nothing started a pass */

	double sent = stack_now();
	assert_int_equal(http_post(port, "/hook/apps", good, push, strlen(push)), 202);
	while (strcmp(hook_value(k), "two") != 0 && stack_now() - sent < 10) {
		struct timespec pause = { 0, 50 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
	double took = stack_now() - sent;
	if (took >= 2)
		fail_msg("the pushed revision was applied %.1f s after the hook", took);

	/* GitLab's token header; then a body over the cap; then a flood, cut at the burst. */
	assert_int_equal(http_post(port, "/hook/apps", "X-Gitlab-Token: hook-s3cret\r\n", push, strlen(push)), 202);
	char *big = calloc(1, (2u << 20) + 1);
	memset(big, 'x', 2u << 20);
	assert_int_equal(http_post(port, "/hook/apps", good, big, 2u << 20), 413);
	free(big);
	unsigned limited = 0;
	for (int i = 0; i < 40; i++)
		limited += http_post(port, "/hook/apps", "X-Gitlab-Token: wrong\r\n", push, strlen(push)) == 429;
	assert_true(limited >= 20);
	assert_int_equal(probe_within(port, 1.0), 200);
	char *log = stack_read_file(r.log);
	assert_null(strstr(log, "hook-s3cret"));
	assert_non_null(strstr(log, "refused a webhook without a valid signature"));
	free(log);
	stop_listening(pid);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
	stack_rm_rf(secrets);
	free(secrets);
}

/* Whether the API server's authorizer lets user (in groups, comma-separated) do verb on a
 * resource: a SubjectAccessReview, what `kubectl auth can-i --as` asks. */
static bool can(struct latch_k8s *k, const char *user, const char *groups, const char *verb,
		const char *group,
		const char *resource, const char *ns, const char *name)
{
	json_t *attrs = json_pack("{s:s,s:s,s:s}", "verb", verb, "group", group, "resource", resource);
	if (ns)
		json_object_set_new(attrs, "namespace", json_string(ns));
	if (name)
		json_object_set_new(attrs, "name", json_string(name));
	json_t *group_list = json_array();
	char copy[512];
	snprintf(copy, sizeof(copy), "%s", groups);
	char *save = NULL;
	for (char *g = strtok_r(copy, ",", &save); g; g = strtok_r(NULL, ",", &save))
		json_array_append_new(group_list, json_string(g));
	json_t *review = json_pack("{s:s,s:s,s:{s:s,s:o,s:o}}", "apiVersion", "authorization.k8s.io/v1", "kind",
				   "SubjectAccessReview", "spec", "user", user, "groups", group_list, "resourceAttributes",
				   attrs);
	char *body = json_dumps(review, JSON_COMPACT);
	json_decref(review);
	long status = 0;
	json_t *answer = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_k8s_request(k, "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews",
					   "application/json", body, &status, &answer, &err), 0);
	free(body);
	assert_int_equal(status, 201);
	bool allowed = json_is_true(latch_json_path(answer, "status.allowed"));
	json_decref(answer);
	return allowed;
}

/* deploy/'s RBAC, as the API server enforces it: latch-sync may apply and prune an app's
 * kinds, keep its inventory and Events, and bind "view" for people; it may not define CRDs or
 * ClusterRoles, nor bind cluster-admin. People bound to "view" read and cannot write. */
static void test_sync__deployed_agent_has_least_privilege(void **state)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/deploy/latch-sync/latch-sync.yaml", getenv("LATCH_SOURCE_ROOT") ?: ".");
	char *text = stack_read_file(path);
	assert_non_null(text);
	json_t *docs = node_parse_yaml(text, path);
	free(text);
	struct latch_k8s *k = kube();
	struct latch_error err = LATCH_ERROR_INIT;
	struct latch_k8s_apply_options as_operator = { .field_manager = "kubectl", .force = true };
	size_t i;
	json_t *obj;
	json_array_foreach(docs, i, obj) {
		const char *kind = latch_json_get_str(obj, "kind");
		if (strcmp(kind, "Namespace") == 0 || strcmp(kind, "ClusterRole") == 0 ||
		    strcmp(kind, "ClusterRoleBinding") == 0 || strcmp(kind, "Role") == 0 ||
		    strcmp(kind, "RoleBinding") == 0)
			assert_int_equal(latch_k8s_apply(k, obj, &as_operator, NULL, &err), 0);
	}
	json_decref(docs);
	json_t *people = json_pack("{s:s,s:s,s:{s:s},s:{s:s,s:s,s:s},s:[{s:s,s:s,s:s}]}", "apiVersion",
				   "rbac.authorization.k8s.io/v1", "kind", "ClusterRoleBinding", "metadata", "name",
				   "e2e-developers-view", "roleRef", "apiGroup", "rbac.authorization.k8s.io", "kind",
				   "ClusterRole", "name", "view", "subjects", "apiGroup", "rbac.authorization.k8s.io", "kind",
				   "Group", "name", "e2e-developers");
	assert_int_equal(latch_k8s_apply(k, people, &as_operator, NULL, &err), 0);
	json_decref(people);

	const char *agent = "system:serviceaccount:latch-system:latch-sync";
	const char *agent_groups = "system:serviceaccounts,system:serviceaccounts:latch-system,system:authenticated";
	assert_true(can(k, agent, agent_groups, "create", "apps", "deployments", "guestbook", NULL));
	assert_true(can(k, agent, agent_groups, "delete", "", "services", "guestbook", NULL));
	assert_true(can(k, agent, agent_groups, "patch", "batch", "cronjobs", "guestbook", NULL));
	assert_true(can(k, agent, agent_groups, "create", "", "namespaces", NULL, NULL));
	assert_true(can(k, agent, agent_groups, "update", "", "configmaps", "latch-system", NULL));
	assert_true(can(k, agent, agent_groups, "create", "", "events", "latch-system", NULL));
	/* The Leases replicas share the sources by: in latch-system only. */
	assert_true(can(k, agent, agent_groups, "update", "coordination.k8s.io", "leases", "latch-system", NULL));
	assert_true(can(k, agent, agent_groups, "create", "coordination.k8s.io", "leases", "latch-system", NULL));
	assert_false(can(k, agent, agent_groups, "update", "coordination.k8s.io", "leases", "kube-system", NULL));
	assert_true(can(k, agent, agent_groups, "bind", "rbac.authorization.k8s.io", "clusterroles", NULL, "view"));
	assert_false(can(k, agent, agent_groups, "bind", "rbac.authorization.k8s.io", "clusterroles", NULL,
		"cluster-admin"));
	assert_false(can(k, agent, agent_groups, "create", "rbac.authorization.k8s.io", "clusterroles", NULL, NULL));
	assert_false(can(k, agent, agent_groups, "create", "apiextensions.k8s.io", "customresourcedefinitions",
			 NULL, NULL));
	assert_false(can(k, agent, agent_groups, "create", "admissionregistration.k8s.io",
			 "mutatingwebhookconfigurations", NULL, NULL));

	const char *person = "alice", *person_groups = "e2e-developers,system:authenticated";
	assert_true(can(k, person, person_groups, "list", "apps", "deployments", "guestbook", NULL));
	assert_false(can(k, person, person_groups, "create", "apps", "deployments", "guestbook", NULL));
	assert_false(can(k, person, person_groups, "delete", "", "configmaps", "latch-system", NULL));
	assert_false(can(k, person, person_groups, "get", "", "secrets", "guestbook", NULL));
	latch_error_done(&err);
	latch_k8s_free(k);
}

/* The page as headless Chromium renders it (its DOM, to free), and a screenshot of it kept in
 * $LATCH_ARTIFACTS/<name>.png. */
static char *chromium_page(const char *url, const char *name)
{
	char *dir = stack_mkdtemp("latch-e2e-chromium"), dom[1200], shot[1200], profile[1200];
	snprintf(dom, sizeof(dom), "%s/dom.html", dir);
	snprintf(profile, sizeof(profile), "--user-data-dir=%s/profile", dir);
	const char *artifacts = getenv("LATCH_ARTIFACTS") ?: dir;
	char mkdir_cmd[1300];
	snprintf(mkdir_cmd, sizeof(mkdir_cmd), "mkdir -p '%s'", artifacts);
	gitops_sh(dir, mkdir_cmd);
	snprintf(shot, sizeof(shot), "--screenshot=%s/%s.png", artifacts, name);
	char home[1300];
	snprintf(home, sizeof(home), "HOME=%s", dir);
	char *envp[] = { home, "PATH=/usr/bin:/bin", NULL };
	char *dump[] = { "chromium", "--headless", "--no-sandbox", "--disable-gpu", profile, "--dump-dom",
		(char *)url, NULL };
	char *argv_shot[] = { "chromium", "--headless", "--no-sandbox", "--disable-gpu", profile,
		"--window-size=1400,400",
			      shot, (char *)url, NULL };
	char log[1300];
	snprintf(log, sizeof(log), "%s/screenshot.log", dir);
	assert_int_equal(stack_run(argv_shot, envp, log, 60, NULL), 0);
	/* stdout is the DOM; Chromium's own messages go to stderr, which stack_run mixes in. */
	assert_int_equal(stack_run(dump, envp, dom, 60, NULL), 0);
	char *text = stack_read_file(dom);
	assert_non_null(text);
	stack_rm_rf(dir);
	free(dir);
	return text;
}

/* The status page at /, as a person sees it in a browser: the source, its result, the
 * revision and, after a bad commit, the error naming the file. */
static void test_sync__status_page_shows_what_happened(void **state)
{
	struct repo r;
	repo_setup_health(&r, "    healthCheck: false\n    interval: 1s\n");
	int port;
	pid_t pid = spawn_listening(&r, &port);
	char url[96], repo[1100];
	snprintf(url, sizeof(url), "http://127.0.0.1:%d/", port);
	snprintf(repo, sizeof(repo), "%s/repo", r.dir);
	char *head = gitops_rev(repo, "HEAD"), short_rev[32];
	snprintf(short_rev, sizeof(short_rev), "<code>%.12s</code>", head);
	char *page = chromium_page(url, "status-page-applied");
	assert_non_null(strstr(page, "<h1>latch-sync e2e</h1>"));
	assert_non_null(strstr(page, "<td>apps</td><td class=\"result\">Applied</td>"));
	assert_non_null(strstr(page, short_rev));
	assert_non_null(strstr(page, "the sync loop is turning"));
	assert_null(strstr(page, "<script"));
	/* The inventory: each object (created, or left as an earlier test left it). */
	assert_non_null(strstr(page, "<summary>apps: 3 objects</summary>"));
	assert_non_null(strstr(page, "<td>ConfigMap</td><td>sync-e2e</td><td>settings</td><td>In sync</td>"));
	assert_non_null(strstr(page, "<td>Deployment</td><td>sync-e2e</td><td>web</td><td>In sync</td>"));
	assert_non_null(strstr(page, "<td>Namespace</td><td></td><td>sync-e2e</td><td>In sync</td>"));
	free(page);

	/* Someone edits the ConfigMap by hand, and an object leaves the repository. */
	struct latch_k8s *k = kube();
	json_t *edit = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s}}", "apiVersion", "v1", "kind", "ConfigMap",
				 "metadata", "name", "settings", "namespace", "sync-e2e", "data", "color", "red");
	struct latch_k8s_apply_options by_hand = { .field_manager = "kubectl-edit", .force = true };
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_k8s_apply(k, edit, &by_hand, NULL, &err), 0);
	json_decref(edit);
	free(await_page(port, "<td>settings</td><td>In sync</td><td>Drift corrected 20", 20));
	char without_web[sizeof(base)];
	snprintf(without_web, sizeof(without_web), "%.*s", (int)(strstr(base, "apiVersion: apps/v1") - base), base);
	write_in(&r, "clusters/stack/app.yaml", without_web);
	gitops_sh(r.dir, "cd repo && git commit -qam 'no web'");
	free(await_page(port, "<td>Deployment</td><td>sync-e2e</td><td>web</td><td>Pruned</td><td>Pruned 20", 20));
	page = chromium_page(url, "status-page-drift-and-prune");
	assert_non_null(strstr(page, "<summary>apps: 2 objects</summary>"));
	/* Both stay on the page through the quiet passes since. */
	assert_non_null(strstr(page, "<tr class=\"drift\"><td>ConfigMap</td><td>sync-e2e</td><td>settings</td>"));
	assert_non_null(strstr(page, "<td>web</td><td>Pruned</td><td>Pruned 20"));
	free(page);
	json_t *cm = get(k, "v1", "ConfigMap", "settings");
	assert_string_equal(latch_json_get_str(json_object_get(cm, "data"), "color"), "blue");
	json_decref(cm);
	latch_error_done(&err);
	latch_k8s_free(k);
	free(head);
	head = gitops_rev(repo, "HEAD");
	snprintf(short_rev, sizeof(short_rev), "<code>%.12s</code>", head);

	write_in(&r, "clusters/stack/zz-bad.yaml",
		"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: broken\n   bad: indent\n");
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm bad");
	free(await_status(port, "/readyz", 503, 20));
	page = chromium_page(url, "status-page-failed");
	assert_non_null(strstr(page, "<td class=\"result\">Failed</td>"));
	assert_non_null(strstr(page, "zz-bad.yaml"));
	assert_non_null(strstr(page, short_rev)); /* still what is applied */
	assert_non_null(strstr(page, "<summary>apps: 2 objects</summary>"));
	free(page);
	stop_listening(pid);
	free(head);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* ---- replicas and Leases ---- */

#define REPLICAS 3
static const char *const lease_sources[] = { "a", "b", "c" };
static pid_t replicas[REPLICAS];

static int stop_replicas(void **state)
{
	for (size_t i = 0; i < REPLICAS; i++)
		if (replicas[i] > 0 && kill(replicas[i], SIGTERM) == 0)
			stack_wait(replicas[i], 30);
	memset(replicas, 0, sizeof(replicas));
	return 0;
}

static char *lease_holder_named(struct latch_k8s *k, const char *name)
{
	json_t *lease = gitops_get(k, "coordination.k8s.io/v1", "Lease", "latch-system", name);
	const char *holder = latch_json_get_str(json_object_get(lease, "spec"), "holderIdentity");
	char *copy = strdup(lease ? (holder ? holder : "") : "(none)");
	json_decref(lease);
	return copy;
}

static char *lease_holder(struct latch_k8s *k, const char *source)
{
	char name[128];
	snprintf(name, sizeof(name), "latch-sync.leases.%s", source);
	return lease_holder_named(k, name);
}

/* Lines of a JSON log saying msg for source. */
static size_t log_lines(const char *log_path, const char *msg, const char *source)
{
	char *log = stack_read_file(log_path);
	char want_msg[128], want_source[128];
	snprintf(want_msg, sizeof(want_msg), "\"msg\":\"%s\"", msg);
	snprintf(want_source, sizeof(want_source), "\"source\":\"%s\"", source);
	size_t n = 0;
	for (char *line = log, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		n += strstr(line, want_msg) && strstr(line, want_source);
	}
	free(log);
	return n;
}

static int replica_of(const char *identity)
{
	int i = -1;
	return sscanf(identity, "replica-%d", &i) == 1 && i >= 0 && i < REPLICAS ? i : -1;
}

/* The holders of the three sources, when each replica holds exactly one. */
static bool read_holders(struct latch_k8s *k, int holder[3])
{
	bool seen[REPLICAS] = { false };
	for (size_t s = 0; s < 3; s++) {
		char *h = lease_holder(k, lease_sources[s]);
		holder[s] = replica_of(h);
		free(h);
		if (holder[s] < 0 || seen[holder[s]])
			return false;
		seen[holder[s]] = true;
	}
	return true;
}

/* Seconds until source's Lease is held by a replica other than not (and not released). */
static double seconds_until_taken(struct latch_k8s *k, const char *source, int not, double limit_s)
{
	double start = stack_now();
	while (stack_now() - start < limit_s) {
		char *holder = lease_holder(k, source);
		int who = replica_of(holder);
		free(holder);
		if (who >= 0 && who != not)
			return stack_now() - start;
		usleep(100 * 1000);
	}
	return -1;
}

/* The SyncConfig "leases" with sources a, b and c, for replica i (its own git cache). */
static void write_lease_config(const struct repo *r, int i, const char *path)
{
	char config[4096];
	int n = snprintf(config, sizeof(config),
			 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: leases}\n"
			 "spec:\n  namespace: latch-system\n  cacheDir: %s/cache-%d\n  sources:\n", r->dir, i);
	for (size_t s = 0; s < 3; s++)
		n += snprintf(config + n, sizeof(config) - (size_t)n, "  - {name: %s, url: 'file://%s/repo', path: %s, "
			      "interval: 1s, healthCheck: false}\n", lease_sources[s], r->dir, lease_sources[s]);
	stack_write_file(path, config);
}

/* Three replicas of one SyncConfig share its three sources by Leases: each source has one
 * holder, and only that holder syncs it. kill -9 of a holder: another takes its sources within
 * the lease duration (6 s here) and syncs them. A clean stop releases at once. */
static void test_sync__replicas_share_sources_by_leases(void **state)
{
	struct repo r;
	r.dir = stack_mkdtemp("latch-e2e-leases");
	char rel[64], text[512];
	gitops_sh(r.dir, "mkdir -p repo/a repo/b repo/c && cd repo && git init -q -b main");
	for (size_t s = 0; s < 3; s++) {
		snprintf(text, sizeof(text),
			 "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: lease-%s, namespace: default}\n"
			 "data: {source: %s}\n", lease_sources[s], lease_sources[s]);
		snprintf(rel, sizeof(rel), "%s/cm.yaml", lease_sources[s]);
		write_in(&r, rel, text);
	}
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm three");
	struct latch_k8s *k = kube();
	struct latch_error err = LATCH_ERROR_INIT;
	forget_leases(k, "leases");
	char logs[REPLICAS][600];
	for (int i = 0; i < REPLICAS; i++) {
		char path[600], identity[32];
		snprintf(path, sizeof(path), "%s/sync-%d.yaml", r.dir, i);
		write_lease_config(&r, i, path);
		snprintf(logs[i], sizeof(logs[i]), "%s/replica-%d.log", r.dir, i);
		snprintf(identity, sizeof(identity), "replica-%d", i);
		replicas[i] = gitops_spawn(path, getenv("KUBECONFIG"), logs[i], (const char *const[]){ "--identity",
			identity, "--lease-duration", "6", "--log-format", "json", NULL });
	}

	/* Every source synced; the replicas settle on one source each. */
	double start = stack_now();
	for (size_t s = 0; s < 3; s++) {
		char name[64];
		snprintf(name, sizeof(name), "lease-%s", lease_sources[s]);
		char *v = NULL;
		while (!(v = gitops_configmap_value(k, "default", name, "source")) && stack_now() - start < 30)
			usleep(200 * 1000);
		assert_non_null(v);
		free(v);
	}
	int holder[3];
	while (!read_holders(k, holder) && stack_now() - start < 40)
		usleep(200 * 1000);
	if (!read_holders(k, holder))
		fail_msg("the three replicas did not settle on one source each");
	printf("# one source per replica %.1f s after they started\n", stack_now() - start);

	/* Then, over a few passes at 1 s, each source is synced by its holder alone. */
	size_t before[REPLICAS][3];
	for (int i = 0; i < REPLICAS; i++)
		for (size_t s = 0; s < 3; s++)
			before[i][s] = log_lines(logs[i], "synced", lease_sources[s]);
	sleep(4);
	int still[3];
	assert_true(read_holders(k, still) && memcmp(still, holder, sizeof(holder)) == 0);
	for (size_t s = 0; s < 3; s++)
		for (int i = 0; i < REPLICAS; i++) {
			size_t synced = log_lines(logs[i], "synced", lease_sources[s]) - before[i][s];
			if (i == holder[s] ? synced == 0 : synced != 0)
				fail_msg("source %s held by replica-%d, synced %zu times by replica-%d", lease_sources[s],
					 holder[s], synced, i);
		}

	/* kill -9 of source a's holder: another replica holds it within the lease duration of the
	 * last change it saw, plus a retry period to see that change and one to act (0.8 s each). */
	int victim = holder[0];
	assert_int_equal(kill(replicas[victim], SIGKILL), 0);
	stack_wait(replicas[victim], 10);
	replicas[victim] = 0;
	double took = seconds_until_taken(k, "a", victim, 15);
	printf("# source a taken over %.1f s after its holder was killed (lease duration 6 s)\n", took);
	assert_true(took >= 0 && took < 6 + 2 * 0.8 + 1.5);
	char *h = lease_holder(k, "a");
	int heir = replica_of(h);
	free(h);
	size_t heir_before = log_lines(logs[heir], "synced", "a");
	for (int t = 0; t < 50 && log_lines(logs[heir], "synced", "a") <= heir_before; t++)
		usleep(200 * 1000);
	assert_true(log_lines(logs[heir], "synced", "a") > heir_before);

	/* A clean stop releases its Leases at once: the last replica holds all three within a retry
	 * period or two, not a lease duration. */
	assert_int_equal(kill(replicas[heir], SIGTERM), 0);
	assert_int_equal(stack_wait(replicas[heir], 30), 0);
	replicas[heir] = 0;
	int last = 3 - victim - heir;
	for (size_t s = 0; s < 3; s++) {
		double t = seconds_until_taken(k, lease_sources[s], -1, 10);
		char *who = lease_holder(k, lease_sources[s]);
		if (t < 0 || t > 3 || replica_of(who) != last)
			fail_msg("source %s: held by '%s' after %.1f s; expected replica-%d within 3 s", lease_sources[s], who, t,
				 last);
		free(who);
	}
	assert_true(gitops_count_in(logs[heir], "released the lease") >= 1);

	stop_replicas(NULL);
	for (size_t s = 0; s < 3; s++) {
		char *who = lease_holder(k, lease_sources[s]);
		assert_string_equal(who, "");
		free(who);
	}
	latch_error_done(&err);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* A TCP relay from a loopback port to the API server, that the test cuts as a network
 * partition would: every connection closed, new ones refused. */
#define RELAY_MAX 32
struct relay {
	int listen_fd, port, upstream_port;
	atomic_bool cut;
	pthread_t thread;
	int fds[2 * RELAY_MAX]; /* pairs: client, upstream; -1 when free */
};

static int connect_upstream(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	if (fd >= 0 && connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0)
		return fd;
	if (fd >= 0)
		close(fd);
	return -1;
}

static void relay_close_pair(struct relay *r, int slot)
{
	for (int k = 0; k < 2; k++) {
		if (r->fds[2 * slot + k] >= 0)
			close(r->fds[2 * slot + k]);
		r->fds[2 * slot + k] = -1;
	}
}

static void relay_accept(struct relay *r)
{
	int client = accept4(r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
	int upstream = client >= 0 ? connect_upstream(r->upstream_port) : -1;
	for (int s = 0; upstream >= 0 && s < RELAY_MAX; s++)
		if (r->fds[2 * s] < 0) {
			r->fds[2 * s] = client;
			r->fds[2 * s + 1] = upstream;
			return;
		}
	if (client >= 0)
		close(client);
	if (upstream >= 0)
		close(upstream);
}

/* Copies what fd has to its peer; false when either side is done. */
static bool relay_copy(int from, int to)
{
	char buf[16384];
	ssize_t n = read(from, buf, sizeof(buf));
	for (ssize_t off = 0; n > 0 && off < n;) {
		ssize_t w = write(to, buf + off, (size_t)(n - off));
		if (w <= 0)
			return false;
		off += w;
	}
	return n > 0;
}

static void *relay_run(void *arg)
{
	struct relay *r = arg;
	while (!atomic_load(&r->cut)) {
		struct pollfd p[1 + 2 * RELAY_MAX];
		int map[1 + 2 * RELAY_MAX], n = 1;
		p[0] = (struct pollfd){ r->listen_fd, POLLIN, 0 };
		for (int i = 0; i < 2 * RELAY_MAX; i++)
			if (r->fds[i] >= 0) {
				map[n] = i;
				p[n++] = (struct pollfd){ r->fds[i], POLLIN, 0 };
			}
		if (poll(p, (nfds_t)n, 100) <= 0)
			continue;
		if (p[0].revents & POLLIN)
			relay_accept(r);
		for (int j = 1; j < n; j++) {
			int i = map[j];
			if ((p[j].revents & (POLLIN | POLLHUP | POLLERR)) && r->fds[i] >= 0 &&
			    !relay_copy(r->fds[i], r->fds[i ^ 1]))
				relay_close_pair(r, i / 2);
		}
	}
	for (int s = 0; s < RELAY_MAX; s++)
		relay_close_pair(r, s);
	close(r->listen_fd);
	return NULL;
}

static void relay_start(struct relay *r, int upstream_port)
{
	memset(r, 0, sizeof(*r));
	for (int i = 0; i < 2 * RELAY_MAX; i++)
		r->fds[i] = -1;
	r->upstream_port = upstream_port;
	r->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	struct sockaddr_in a = { .sin_family = AF_INET };
	inet_pton(AF_INET, "127.0.0.1", &a.sin_addr);
	assert_int_equal(bind(r->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(r->listen_fd, 64), 0);
	socklen_t len = sizeof(a);
	getsockname(r->listen_fd, (struct sockaddr *)&a, &len);
	r->port = ntohs(a.sin_port);
	assert_int_equal(pthread_create(&r->thread, NULL, relay_run, r), 0);
}

static void relay_cut(struct relay *r)
{
	atomic_store(&r->cut, true);
	pthread_join(r->thread, NULL);
}

/* The test's kubeconfig with its server at 127.0.0.1:port (the certificate names 127.0.0.1). */
static void kubeconfig_via(const char *path, int port, int *ret_upstream_port)
{
	char *kubeconfig = stack_read_file(getenv("KUBECONFIG"));
	char *server = strstr(kubeconfig, "server: https://127.0.0.1:");
	assert_non_null(server);
	char *port_at = server + strlen("server: https://127.0.0.1:");
	*ret_upstream_port = (int)strtol(port_at, NULL, 10);
	char *eol = strchr(port_at, '\n');
	struct latch_buf text = LATCH_BUF_INIT(1 << 20);
	latch_buf_printf(&text, "%.*s%d%s", (int)(port_at - kubeconfig), kubeconfig, port, eol);
	stack_write_file(path, latch_buf_str(&text));
	latch_buf_done(&text);
	free(kubeconfig);
}

/* Seconds until the Lease name is held by want; -1 when not within limit_s. */
static double wait_for_holder(struct latch_k8s *k, const char *name, const char *want, double limit_s)
{
	double start = stack_now();
	while (stack_now() - start < limit_s) {
		char *holder = lease_holder_named(k, name);
		bool there = strcmp(holder, want) == 0;
		free(holder);
		if (there)
			return stack_now() - start;
		usleep(200 * 1000);
	}
	return -1;
}

/* The "time" of the first line of a JSON log that holds needle (to free), or NULL. */
static char *log_time_of(const char *log_path, const char *needle)
{
	char *log = stack_read_file(log_path), *found = log ? strstr(log, needle) : NULL, *t = NULL;
	while (found && found > log && found[-1] != '\n')
		found--;
	if (found && strncmp(found, "{\"time\":\"", 9) == 0)
		t = strndup(found + 9, 24);
	free(log);
	return t;
}

/* A replica cut off from the API server stops counting itself the holder at its renew deadline
 * (4 s of 6 here), before the Lease can expire and another replica take it: it cannot write
 * after someone else started. The other replica takes the source and syncs it. */
static void test_sync__cut_off_replica_gives_up_before_another_can_take_over(void **state)
{
	struct repo r;
	r.dir = stack_mkdtemp("latch-e2e-partition");
	gitops_sh(r.dir, "mkdir -p repo/solo && cd repo && git init -q -b main");
	write_in(&r, "solo/cm.yaml",
		 "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: partition-solo, namespace: default}\n"
		 "data: {source: solo}\n");
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm solo");
	char config[1024], cfg_text[2048], kubeconfig[1024], logs[2][1100];
	snprintf(config, sizeof(config), "%s/sync.yaml", r.dir);
	snprintf(cfg_text, sizeof(cfg_text),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: partition}\n"
		 "spec:\n  namespace: latch-system\n  cacheDir: %s/cache\n  sources:\n"
		 "  - {name: solo, url: 'file://%s/repo', path: solo, interval: 1s, healthCheck: false}\n", r.dir, r.dir);
	stack_write_file(config, cfg_text);
	struct latch_k8s *k = kube();
	struct latch_error err = LATCH_ERROR_INIT;
	forget_leases(k, "partition");

	struct relay relay;
	int upstream = 0;
	snprintf(kubeconfig, sizeof(kubeconfig), "%s/kubeconfig-via-relay", r.dir);
	relay_start(&relay, 0);
	kubeconfig_via(kubeconfig, relay.port, &upstream);
	relay.upstream_port = upstream;
	for (int i = 0; i < 2; i++)
		snprintf(logs[i], sizeof(logs[i]), "%s/cut-%d.log", r.dir, i);
	replicas[0] = gitops_spawn(config, kubeconfig, logs[0], (const char *const[]){ "--identity", "cut-0",
		"--lease-duration", "6", "--log-format", "json", NULL });
	assert_true(wait_for_holder(k, "latch-sync.partition.solo", "cut-0", 20) >= 0);
	replicas[1] = gitops_spawn(config, getenv("KUBECONFIG"), logs[1],
				   (const char *const[]){ "--identity", "cut-1",
		"--lease-duration", "6", "--log-format", "json", NULL });
	sleep(3);

	relay_cut(&relay);
	double took_s = wait_for_holder(k, "latch-sync.partition.solo", "cut-1", 20);
	assert_true(took_s >= 0);
	printf("# taken over %.1f s after the cut (lease duration 6 s, renew deadline 4 s)\n", took_s);
	char *lost = log_time_of(logs[0], "\"msg\":\"lost the lease\"");
	char *took = log_time_of(logs[1], "\"msg\":\"took the lease over\"");
	assert_non_null(lost);
	assert_non_null(took);
	printf("# cut-0 gave up at %s, cut-1 took over at %s\n", lost, took);
	assert_true(strcmp(lost, took) < 0);
	for (int t = 0; t < 50 && log_lines(logs[1], "synced", "solo") == 0; t++)
		usleep(200 * 1000);
	assert_true(log_lines(logs[1], "synced", "solo") > 0);
	free(lost);
	free(took);
	stop_replicas(NULL);
	latch_error_done(&err);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

static char *configmap_v(struct latch_k8s *k, const char *name)
{
	char *v = gitops_configmap_value(k, "default", name, "v");
	return v ? v : strdup("");
}

/* A push hook reaching the replica that does not hold the source (a Service picks either) is
 * passed on through the Lease: the holder applies the push at once, though the interval is an
 * hour. The replica without the source is ready: it has nothing to wait for. */
static void test_sync__hook_at_a_replica_without_the_lease_reaches_its_holder(void **state)
{
	struct repo r;
	r.dir = stack_mkdtemp("latch-e2e-hook-leases");
	char secret[1100], config[1100], cfg_text[4096], logs[2][1100], listen[2][64];
	int port[2];
	snprintf(secret, sizeof(secret), "%s/secret", r.dir);
	stack_write_file(secret, "hook-s3cret\n");
	gitops_sh(r.dir, "mkdir -p repo/h && cd repo && git init -q -b main");
	static const char cm[] = "apiVersion: v1\nkind: ConfigMap\n"
				 "metadata: {name: hook-leases, namespace: default}\n"
				 "data: {v: %s}\n";
	char text[256];
	snprintf(text, sizeof(text), cm, "one");
	write_in(&r, "h/cm.yaml", text);
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm one");
	snprintf(config, sizeof(config), "%s/sync.yaml", r.dir);
	snprintf(cfg_text, sizeof(cfg_text),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: hooks}\n"
		 "spec:\n  namespace: latch-system\n  cacheDir: %s/cache\n  sources:\n"
		 "  - {name: h, url: 'file://%s/repo', path: h, interval: 1h, healthCheck: false,\n"
		 "     webhook: {secretFile: %s}}\n", r.dir, r.dir, secret);
	stack_write_file(config, cfg_text);
	struct latch_k8s *k = kube();
	struct latch_error err = LATCH_ERROR_INIT;
	forget_leases(k, "hooks");
	for (int i = 0; i < 2; i++) {
		char identity[16];
		snprintf(identity, sizeof(identity), "hook-%d", i);
		snprintf(logs[i], sizeof(logs[i]), "%s/hook-%d.log", r.dir, i);
		port[i] = gitops_free_port();
		snprintf(listen[i], sizeof(listen[i]), "127.0.0.1:%d", port[i]);
		replicas[i] = gitops_spawn(config, getenv("KUBECONFIG"), logs[i], (const char *const[]){ "--identity",
			identity, "--lease-duration", "6", "--listen", listen[i], NULL });
		if (i == 0)
			assert_true(wait_for_holder(k, "latch-sync.hooks.h", "hook-0", 20) >= 0);
	}
	free(await_status(port[0], "/readyz", 200, 30));
	free(await_status(port[1], "/readyz", 200, 30));
	char *v = configmap_v(k, "hook-leases");
	assert_string_equal(v, "one");
	free(v);

	snprintf(text, sizeof(text), cm, "two");
	write_in(&r, "h/cm.yaml", text);
	gitops_sh(r.dir, "cd repo && git commit -qam two");
	static const char push[] = "{\"ref\":\"refs/heads/main\"}";
	char good[128];
	github_signature("hook-s3cret", push, good);
	double sent = stack_now();
	assert_int_equal(http_post(port[1], "/hook/h", good, push, strlen(push)), 202);
	while ((v = configmap_v(k, "hook-leases")) && strcmp(v, "two") != 0 && stack_now() - sent < 10) {
		free(v);
		usleep(50 * 1000);
	}
	double took = stack_now() - sent;
	assert_string_equal(v, "two");
	free(v);
	printf("# applied %.1f s after the hook reached the replica without the Lease\n", took);
	assert_true(took < 3);
	assert_true(gitops_count_in(logs[1], "asked the replica holding the source for a pass") == 1);
	/* The holder logs the pass once it has recorded it, a moment after the apply. */
	for (int t = 0; t < 50 && gitops_count_in(logs[0], "synced") < 2; t++)
		usleep(100 * 1000);
	assert_true(gitops_count_in(logs[0], "synced") >= 2);
	assert_true(gitops_count_in(logs[1], "synced") == 0);

	stop_replicas(NULL);
	latch_error_done(&err);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* The value of the first series a PromQL query (URL-encoded) returns from Prometheus on port;
 * -1 when it returns none. */
static double prometheus_value(int port, const char *query)
{
	char path[1024], *body = NULL;
	snprintf(path, sizeof(path), "/api/v1/query?query=%s", query);
	double v = -1;
	if (gitops_http_get(port, path, &body) == 200) {
		json_t *answer = json_loads(body, 0, NULL);
		json_t *first = json_array_get(latch_json_path(answer, "data.result"), 0);
		const char *value = json_string_value(json_array_get(json_object_get(first, "value"), 1));
		if (value)
			v = strtod(value, NULL);
		json_decref(answer);
	}
	free(body);
	return v;
}

/* Debian's Prometheus scrapes a running agent every second and its HTTP API returns the
 * series; promtool's lint passes on /metrics as served. */
static void test_sync__prometheus_scrapes_the_metrics(void **state)
{
	struct repo r;
	repo_setup(&r);
	int port;
	pid_t pid = spawn_listening(&r, &port);
	char *metrics = NULL, path[1100], cmd[2400];
	assert_int_equal(gitops_http_get(port, "/metrics", &metrics), 200);
	snprintf(path, sizeof(path), "%s/metrics.txt", r.dir);
	stack_write_file(path, metrics);
	free(metrics);
	snprintf(cmd, sizeof(cmd),
		 "promtool check metrics < metrics.txt > promtool.log 2>&1 || { cat promtool.log >&2; exit 1; }");
	gitops_sh(r.dir, cmd);

	int prom_port = gitops_free_port();
	char config[512], listen[64], tsdb[1100], log[1100];
	snprintf(config, sizeof(config), "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
		 "scrape_configs:\n- job_name: latch-sync\n  static_configs:\n  - targets: ['127.0.0.1:%d']\n", port);
	snprintf(path, sizeof(path), "%s/prometheus.yml", r.dir);
	stack_write_file(path, config);
	snprintf(listen, sizeof(listen), "--web.listen-address=127.0.0.1:%d", prom_port);
	snprintf(tsdb, sizeof(tsdb), "--storage.tsdb.path=%s/tsdb", r.dir);
	snprintf(log, sizeof(log), "%s/prometheus.log", r.dir);
	char config_arg[1200];
	snprintf(config_arg, sizeof(config_arg), "--config.file=%s", path);
	char *argv[] = { "prometheus", config_arg, tsdb, listen, NULL };
	pid_t prom = stack_spawn(argv, NULL, log);

	double start = stack_now();
	while (prometheus_value(prom_port,
				"latch_sync_passes_total%7Bsource%3D%22apps%22%2Cresult%3D%22success%22%7D") < 1 &&
	       stack_now() - start < 60)
		usleep(500 * 1000);
	assert_true(prometheus_value(prom_port, "up%7Bjob%3D%22latch-sync%22%7D") == 1);
	assert_true(prometheus_value(prom_port,
				     "latch_sync_passes_total%7Bsource%3D%22apps%22%2Cresult%3D%22success%22%7D") >= 1);
	assert_true(prometheus_value(prom_port,
				     "latch_sync_pass_duration_seconds_count%7Bsource%3D%22apps%22%7D") >= 1);
	assert_true(prometheus_value(prom_port,
				     "latch_sync_git_fetch_duration_seconds_count%7Bsource%3D%22apps%22%7D") >= 1);
	assert_true(prometheus_value(prom_port,
				     "latch_sync_api_requests_total%7Bmethod%3D%22GET%22%2Ccode%3D%22200%22%7D") >= 1);
	assert_true(prometheus_value(prom_port,
				     "latch_sync_reconcile_condition%7Bsource%3D%22apps%22%2Cstatus%3D%22True%22%7D") ==
		    1);
	printf("# Prometheus had the series %.1f s after it started\n", stack_now() - start);

	kill(prom, SIGTERM);
	assert_int_equal(stack_wait(prom, 30), 0);
	stop_listening(pid);
	stack_rm_rf(r.dir);
	free(r.dir);
}

static void test_sync__config_errors_name_key_and_line(void **state)
{
	struct repo r;
	repo_setup(&r);
	stack_write_file(r.config, "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: e2e}\nspec:\n"
				   "  namespace: latch-system\n  sources:\n  - name: apps\n    url: file:///nowhere\n    intervl: 1m\n");
	assert_int_equal(sync_once(&r), 65);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "sync.yaml:9:5: spec.sources[0].intervl: unknown key"));
	free(log);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* With the health check on, the revision is applied but the pass fails naming the workload
 * and what it waits for; the inventory says so and keeps the revision as applied. */
static void test_sync__unhealthy_workload_fails_the_pass(void **state)
{
	struct repo r;
	repo_setup_health(&r, "    healthCheck: true\n    timeout: 2s\n");
	struct latch_k8s *k = kube();
	/* A Deployment an earlier run left has passed its progress deadline by now: start anew. */
	struct latch_error err = LATCH_ERROR_INIT;
	int gone = latch_k8s_delete(k, "apps/v1", "Deployment", "sync-e2e", "web", &err);
	if (gone < 0 && gone != LATCH_ENOTFOUND)
		fail_msg("deleting the old Deployment: %s", latch_error_message(&err));
	latch_error_done(&err);
	assert_int_equal(sync_once(&r), 1);
	char *log = stack_read_file(r.log);
	const char *why = strstr(log, "Deployment 'web' not healthy within 2s: ");
	assert_non_null(why);
	/* What it waits for, as the controller reports it (quick or not to see the new spec). */
	why += strlen("Deployment 'web' not healthy within 2s: ");
	assert_true(strncmp(why, "0 of 1 replicas", 15) == 0
		    || strncmp(why, "waiting for the controller to observe", 37) == 0);
	free(log);
	json_t *inv = inventory(k);
	char *rev = head(&r);
	assert_string_equal(latch_json_get_str(json_object_get(inv, "data"), "lastAppliedRevision"), rev);
	assert_true(strncmp(latch_json_get_str(json_object_get(inv, "data"), "result"), "Applied, unhealthy: ", 20) == 0);
	json_decref(inv);
	free(rev);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* render: kustomize, an overlay per cluster over a shared base. */
static void test_sync__kustomize_overlay(void **state)
{
	const char *kustomize = getenv("KUSTOMIZE_BIN");
	if (!kustomize)
		fail_msg("KUSTOMIZE_BIN is not set (dev/stack writes it to .stack/env)");
	struct repo r;
	repo_setup(&r);
	gitops_sh(r.dir, "mkdir -p repo/base repo/overlays/stack");
	write_in(&r, "base/app.yaml", strstr(base, "apiVersion: v1\nkind: ConfigMap"));
	write_in(&r, "base/kustomization.yaml", "resources: [app.yaml]\n");
	write_in(&r, "overlays/stack/kustomization.yaml",
		 "namespace: sync-kust\nnamePrefix: stack-\nresources: [../../base, namespace.yaml]\n");
	write_in(&r, "overlays/stack/namespace.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sync-kust\n");
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm overlays");
	char config[4096];
	snprintf(config, sizeof(config),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: kust}\nspec:\n  namespace: latch-system\n"
		 "  cacheDir: %s/cache\n  sources:\n  - name: apps\n    url: file://%s/repo\n    ref: {branch: main}\n"
		 "    path: overlays/stack\n    render: kustomize\n    kustomizePath: %s\n    healthCheck: false\n"
		 "    inject: {vaultAddress: '%s'}\n",
		 r.dir, r.dir, kustomize, stack.vault_addr);
	stack_write_file(r.config, config);
	assert_int_equal(sync_once(&r), 0);
	struct latch_k8s *k = kube();
	json_t *web = NULL, *cm = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_k8s_get(k, "apps/v1", "Deployment", "sync-kust", "stack-web", &web, &err), 0);
	assert_string_equal(latch_json_get_str(json_array_get(latch_json_path(web, "spec.template.spec.initContainers"), 0), "name"),
			    "latch-init");
	assert_int_equal(latch_k8s_get(k, "v1", "ConfigMap", "sync-kust", "stack-settings", &cm, &err), 0);
	json_decref(web);
	json_decref(cm);

	/* A kustomization that does not build: the pass fails with kustomize's message. */
	write_in(&r, "overlays/stack/kustomization.yaml", "resources: [../../missing]\n");
	gitops_sh(r.dir, "cd repo && git commit -qam broken");
	assert_int_equal(sync_once(&r), 1);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "kustomize build overlays/stack@"));
	free(log);
	latch_error_done(&err);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* The same repository served by the stack over https (basic auth, the stack CA), ssh (key,
 * known_hosts) and git://; wrong credentials and an unknown host key are refused. */
static void write_source_config(const struct repo *r, const char *url, const char *extra)
{
	char config[8192];
	snprintf(config, sizeof(config),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: remote}\nspec:\n  namespace: latch-system\n"
		 "  cacheDir: %s/cache\n  sources:\n  - name: apps\n    url: %s\n    ref: {branch: main}\n"
		 "    path: clusters/stack\n    healthCheck: false\n    inject: {vaultAddress: '%s'}\n%s",
		 r->dir, url, stack.vault_addr, extra);
	stack_write_file(r->config, config);
}

static void test_sync__git_transports_and_credentials(void **state)
{
	struct repo r;
	repo_setup(&r);
	const char *root = getenv("LATCH_GIT_ROOT");
	if (!root)
		fail_msg("LATCH_GIT_ROOT is not set (the stack's git servers)");
	char cmd[4096];
	const char *name = strrchr(r.dir, '/') + 1;
	snprintf(cmd, sizeof(cmd), "git init -q --bare '%s/%s.git' && cd repo && git push -q '%s/%s.git' main", root, name, root, name);
	gitops_sh(r.dir, cmd);

	char url[1024], extra[4096], wrong[1024];
	snprintf(url, sizeof(url), "%s/%s.git", getenv("LATCH_GIT_HTTPS_URL"), name);
	snprintf(wrong, sizeof(wrong), "%s/wrong-password", r.dir);
	stack_write_file(wrong, "not-the-password\n");
	char user[1024];
	snprintf(user, sizeof(user), "%s/user", r.dir);
	stack_write_file(user, "latch\n");
	snprintf(extra, sizeof(extra), "    caFile: %s\n    credentials: {usernameFile: %s, passwordFile: %s}\n", stack.ca, user,
		 getenv("LATCH_GIT_PASSWORD_FILE"));
	write_source_config(&r, url, extra);
	assert_int_equal(sync_once(&r), 0);

	snprintf(extra, sizeof(extra), "    caFile: %s\n    credentials: {usernameFile: %s, passwordFile: %s}\n", stack.ca, user, wrong);
	write_source_config(&r, url, extra);
	assert_int_equal(sync_once(&r), 1);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "the credentials were refused"));
	free(log);

	snprintf(url, sizeof(url), "%s%s/%s.git", getenv("LATCH_GIT_SSH_URL"), root, name);
	snprintf(extra, sizeof(extra), "    credentials: {sshKeyFile: %s, knownHostsFile: %s}\n", getenv("LATCH_GIT_SSH_KEY"),
		 getenv("LATCH_GIT_KNOWN_HOSTS"));
	write_source_config(&r, url, extra);
	assert_int_equal(sync_once(&r), 0);

	char other_hosts[1024];
	snprintf(other_hosts, sizeof(other_hosts), "%s/known_hosts", r.dir);
	stack_write_file(other_hosts, "[127.0.0.1]:1 ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl\n");
	snprintf(extra, sizeof(extra), "    credentials: {sshKeyFile: %s, knownHostsFile: %s}\n", getenv("LATCH_GIT_SSH_KEY"), other_hosts);
	write_source_config(&r, url, extra);
	assert_int_equal(sync_once(&r), 1);
	log = stack_read_file(r.log);
	assert_non_null(strstr(log, "the host key of '127.0.0.1' is not in"));
	free(log);

	snprintf(url, sizeof(url), "%s/%s.git", getenv("LATCH_GIT_DAEMON_URL"), name);
	write_source_config(&r, url, "");
	assert_int_equal(sync_once(&r), 0);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* The most sources a kustomize run of the probe overlapped with: each run appends "start" and
 * "end" lines with the time, holding for a second in between. */
static int most_at_once(const char *probe_log)
{
	char *text = stack_read_file(probe_log);
	assert_non_null(text);
	long long starts[64], ends[64];
	size_t n_starts = 0, n_ends = 0;
	char *save = NULL;
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		long long t = 0;
		if (sscanf(line, "start %lld", &t) == 1 && n_starts < 64)
			starts[n_starts++] = t;
		else if (sscanf(line, "end %lld", &t) == 1 && n_ends < 64)
			ends[n_ends++] = t;
	}
	free(text);
	int most = 0;
	for (size_t i = 0; i < n_starts; i++) {
		int running = 0; /* runs started by starts[i] and not ended before it */
		for (size_t j = 0; j < n_starts; j++)
			running += starts[j] <= starts[i] && (j >= n_ends || ends[j] > starts[i]);
		most = running > most ? running : most;
	}
	return most;
}

static size_t fetches_of(const char *repo_name)
{
	const char *access_log = getenv("LATCH_GIT_ACCESS_LOG");
	if (!access_log)
		fail_msg("LATCH_GIT_ACCESS_LOG is not set: restart the stack (dev/stack down; dev/stack up)");
	char needle[512];
	snprintf(needle, sizeof(needle), "GET /%s.git/info/refs?service=git-upload-pack HTTP/1.1\" 200 ", repo_name);
	return gitops_count_in(access_log, needle);
}

static const char *const shared_folders[] = { "a", "b", "c", "d" };

/* A repository with a kustomization per folder, pushed to the stack's git server as name. */
static void push_shared_repository(const struct repo *r, const char *name)
{
	gitops_sh(r->dir, "mkdir -p repo/shared/a repo/shared/b repo/shared/c repo/shared/d");
	for (size_t i = 0; i < 4; i++) {
		char rel[64], text[256];
		snprintf(rel, sizeof(rel), "shared/%s/cm.yaml", shared_folders[i]);
		snprintf(text, sizeof(text), "apiVersion: v1\nkind: ConfigMap\n"
			 "metadata: {name: shared-%s, namespace: default}\ndata: {v: one}\n", shared_folders[i]);
		write_in(r, rel, text);
		snprintf(rel, sizeof(rel), "shared/%s/kustomization.yaml", shared_folders[i]);
		write_in(r, rel, "resources: [cm.yaml]\n");
	}
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "cd repo && git add -A && git commit -qm shared && "
		 "git init -q --bare '%s/%s.git' && git push -q '%s/%s.git' main", getenv("LATCH_GIT_ROOT"), name,
		 getenv("LATCH_GIT_ROOT"), name);
	gitops_sh(r->dir, cmd);
}

/* kustomize behind a probe that notes when each run starts and ends, a second apart. */
static void write_kustomize_probe(const char *probe, const char *probe_log)
{
	char script[4096];
	snprintf(script, sizeof(script), "#!/bin/sh\necho \"start $(date +%%s%%N)\" >>'%s'\nsleep 1\n"
		 "echo \"end $(date +%%s%%N)\" >>'%s'\nexec '%s' \"$@\"\n", probe_log, probe_log, getenv("KUSTOMIZE_BIN"));
	stack_write_file(probe, script);
	assert_int_equal(chmod(probe, 0755), 0);
}

static void write_shared_config(const struct repo *r, const char *url, const char *probe, const char *user,
				const char *password_file)
{
	struct latch_buf config = LATCH_BUF_INIT(1u << 16);
	latch_buf_printf(&config, "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: shared}\n"
			 "spec:\n  namespace: latch-system\n  cacheDir: %s/cache\n  sources:\n", r->dir);
	for (size_t i = 0; i < 4; i++)
		latch_buf_printf(&config, "  - {name: %s, url: '%s', path: shared/%s, render: kustomize,\n"
				 "     kustomizePath: '%s', healthCheck: false, caFile: '%s',\n"
				 "     credentials: {usernameFile: '%s', passwordFile: '%s'}}\n",
				 shared_folders[i], url, shared_folders[i], probe, stack.ca, user, password_file);
	stack_write_file(r->config, latch_buf_str(&config));
	latch_buf_done(&config);
}

/* Four sources in one repository over https: passed four at a time, the repository fetched
 * once per round (counted in the git server's access log), and a fetch that fails fails each
 * source that shares it. --concurrent 1 passes them one after another. */
static void test_sync__sources_of_one_repository_share_a_fetch_and_pass_together(void **state)
{
	if (!getenv("KUSTOMIZE_BIN") || !getenv("LATCH_GIT_ROOT"))
		fail_msg("KUSTOMIZE_BIN or LATCH_GIT_ROOT is not set (dev/stack writes them to .stack/env)");
	struct repo r;
	repo_setup(&r);
	const char *name = strrchr(r.dir, '/') + 1;
	push_shared_repository(&r, name);
	char probe[1024], probe_log[1024], user[1024], wrong[1024], url[1024];
	snprintf(probe_log, sizeof(probe_log), "%s/probe.log", r.dir);
	snprintf(probe, sizeof(probe), "%s/kustomize-probe", r.dir);
	write_kustomize_probe(probe, probe_log);
	snprintf(url, sizeof(url), "%s/%s.git", getenv("LATCH_GIT_HTTPS_URL"), name);
	snprintf(user, sizeof(user), "%s/user", r.dir);
	stack_write_file(user, "latch\n");
	write_shared_config(&r, url, probe, user, getenv("LATCH_GIT_PASSWORD_FILE"));

	size_t before = fetches_of(name);
	assert_int_equal(sync_once(&r), 0);
	assert_int_equal(fetches_of(name) - before, 1);
	int together = most_at_once(probe_log);
	printf("# once: 1 fetch for 4 sources, %d kustomize runs at once\n", together);
	assert_true(together >= 2);
	struct latch_k8s *k = kube();
	for (size_t i = 0; i < 4; i++) {
		char cm[64];
		snprintf(cm, sizeof(cm), "shared-%s", shared_folders[i]);
		char *v = gitops_configmap_value(k, "default", cm, "v");
		assert_non_null(v);
		assert_string_equal(v, "one");
		free(v);
	}
	latch_k8s_free(k);

	assert_int_equal(unlink(probe_log), 0);
	assert_int_equal(gitops_sync_with("once", r.config, getenv("KUBECONFIG"), r.log,
					  (const char *const[]){ "--concurrent", "1", NULL }), 0);
	assert_int_equal(most_at_once(probe_log), 1);

	before = fetches_of(name);
	pid_t pid = gitops_spawn(r.config, getenv("KUBECONFIG"), r.log,
				 (const char *const[]){ "--max-passes", "2", "--interval", "0", "--no-leases", NULL });
	assert_int_equal(stack_wait(pid, 120), 0);
	assert_int_equal(fetches_of(name) - before, 2);

	snprintf(wrong, sizeof(wrong), "%s/wrong-password", r.dir);
	stack_write_file(wrong, "not-the-password\n");
	write_shared_config(&r, url, probe, user, wrong);
	assert_int_equal(sync_once(&r), 1);
	assert_int_equal(gitops_count_in(r.log, "the credentials were refused"), 4);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* n small ConfigMaps big-0 .. big-(n-1) in Namespace ns, in one file of the repository. */
static void write_many_configmaps(const struct repo *r, const char *ns, int n)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "mkdir -p repo/big && { "
		 "printf -- '---\\napiVersion: v1\\nkind: Namespace\\nmetadata: {name: %s}\\n'; i=0; "
		 "while [ $i -lt %d ]; do printf -- '---\\napiVersion: v1\\nkind: ConfigMap\\n"
		 "metadata: {name: big-%%d, namespace: %s}\\ndata: {v: x}\\n' $i; i=$((i+1)); done; } "
		 "> repo/big/cms.yaml && cd repo && git add -A && git commit -qm 'n=%d'", ns, n, ns, n);
	gitops_sh(r->dir, cmd);
}

/* How many entries the inventory of config lists, read by base64, gunzip and jq from its packed
 * binaryData (plain false) or by jq from its data (plain true); -1 when it is not there. */
static long inventory_entries(struct latch_k8s *k, const struct repo *r, const char *config, bool plain)
{
	json_t *cm = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	char name[256];
	snprintf(name, sizeof(name), "latch-sync.%s.apps", config);
	assert_int_equal(latch_k8s_get(k, "v1", "ConfigMap", "latch-system", name, &cm, &err), 0);
	const char *text = plain ? latch_json_get_str(json_object_get(cm, "data"), "inventory")
				 : latch_json_get_str(json_object_get(cm, "binaryData"), "inventory.gz");
	long n = -1;
	if (text) {
		char path[1024], count[1024], cmd[4096];
		snprintf(path, sizeof(path), "%s/inventory.txt", r->dir);
		snprintf(count, sizeof(count), "%s/count.txt", r->dir);
		stack_write_file(path, text);
		snprintf(cmd, sizeof(cmd), "%s '%s' %s | jq length > '%s'", plain ? "cat" : "base64 -d", path,
			 plain ? "" : "| gunzip -c", count);
		gitops_sh(r->dir, cmd);
		char *counted = stack_read_file(count);
		n = strtol(counted, NULL, 10);
		free(counted);
	}
	json_decref(cm);
	latch_error_done(&err);
	return n;
}

/* The requests of one verb on one resource the API server has answered so far, dry runs
 * included, by its own count (apiserver_request_total on /metrics). */
static long api_requests(const struct repo *r, const char *verb, const char *resource)
{
	char out[1024], cmd[4096];
	const char *state = getenv("LATCH_STACK_DIR");
	snprintf(out, sizeof(out), "%s/requests.txt", r->dir);
	snprintf(cmd, sizeof(cmd), "curl -sS --cacert '%s/pki/ca.crt' --cert '%s/pki/admin.crt' "
		 "--key '%s/pki/admin.key' '%s/metrics' | awk '/^apiserver_request_total[{]/ && "
		 "/resource=\"%s\"/ && /verb=\"%s\"/ { n += $NF } END { print n + 0 }' > '%s'",
		 state, state, state, getenv("LATCH_KUBE_URL"), resource, verb, out);
	gitops_sh(r->dir, cmd);
	char *text = stack_read_file(out);
	long n = strtol(text, NULL, 10);
	free(text);
	return n;
}

static long configmap_applies(const struct repo *r)
{
	return api_requests(r, "APPLY", "configmaps");
}

/* A ConfigMap holds at most 1 MiB: the inventory of a 2,000-object source is packed (gzip,
 * base64) into binaryData, a second pass reads it back and changes nothing, and once the
 * source shrinks the prune finds what left and the inventory is plain text again. A change to
 * one object of the 1,000 left is one object's work. */
static void test_sync__large_inventory_is_packed_and_read_back(void **state)
{
	struct repo r;
	r.dir = stack_mkdtemp("latch-e2e-big");
	snprintf(r.config, sizeof(r.config), "%s/sync.yaml", r.dir);
	snprintf(r.log, sizeof(r.log), "%s/sync.log", r.dir);
	char name[64], config[2048];
	snprintf(name, sizeof(name), "big-%s", strrchr(r.dir, '-') + 1);
	for (char *c = name; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	gitops_sh(r.dir, "mkdir -p repo && cd repo && git init -q -b main");
	write_many_configmaps(&r, name, 2000);
	snprintf(config, sizeof(config), "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: %s}\n"
		 "spec:\n  namespace: latch-system\n  cacheDir: %s/cache\n  sources:\n"
		 "  - {name: apps, url: 'file://%s/repo', path: big, healthCheck: false}\n", name, r.dir, r.dir);
	stack_write_file(r.config, config);
	assert_int_equal(sync_once(&r), 0);
	struct latch_k8s *k = kube();
	assert_int_equal(inventory_entries(k, &r, name, false), 2001);
	assert_int_equal(inventory_entries(k, &r, name, true), -1);

	assert_int_equal(sync_once(&r), 0);
	assert_int_equal(gitops_count_in(r.log, "changed=0"), 1);

	gitops_sh(r.dir, "cd repo && git rm -q -r big && git commit -qm gone");
	write_many_configmaps(&r, name, 1000);
	assert_int_equal(sync_once(&r), 0);
	assert_int_equal(gitops_count_in(r.log, "pruned=1000"), 1);
	assert_int_equal(inventory_entries(k, &r, name, true), 1001);
	assert_int_equal(inventory_entries(k, &r, name, false), -1);
	json_t *gone = gitops_get(k, "v1", "ConfigMap", name, "big-1999");
	assert_null(gone);
	json_t *kept = gitops_get(k, "v1", "ConfigMap", name, "big-999");
	assert_non_null(kept);
	json_decref(kept);

	/* One object changes in a revision of 1,000: it alone is validated and applied (a dry run,
	 * an apply, and the inventory's write), where applying the revision whole takes 2,001. */
	long before = configmap_applies(&r);
	gitops_sh(r.dir, "cd repo && sed -i '0,/data: {v: x}/s//data: {v: changed}/' big/cms.yaml && "
		  "git commit -qam one");
	assert_int_equal(sync_once(&r), 0);
	long applies = configmap_applies(&r) - before;
	printf("# a one-object change to 1,000 ConfigMaps: %ld ConfigMap applies\n", applies);
	assert_true(applies >= 2 && applies <= 5);
	char *v = gitops_configmap_value(k, name, "big-0", "v");
	assert_non_null(v);
	assert_string_equal(v, "changed");
	free(v);
	struct latch_error err = LATCH_ERROR_INIT;
	latch_k8s_delete(k, "v1", "Namespace", NULL, name, &err);
	latch_error_done(&err);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* A round that passes every source of a config lists each kind once for all of them, where
 * it listed it once per source: a no-op pass of 100 sources was 200 lists. Each source still
 * sees its own objects only: a drifted one is put back by its source alone. A push hook for
 * one source passes all the sources of its repository. */
static void test_sync__a_round_lists_each_kind_once_for_all_its_sources(void **state)
{
	enum { SOURCES = 6 };
	struct repo r;
	r.dir = stack_mkdtemp("latch-e2e-round");
	snprintf(r.config, sizeof(r.config), "%s/sync.yaml", r.dir);
	snprintf(r.log, sizeof(r.log), "%s/sync.log", r.dir);
	char name[64], config[8192], cmd[1024];
	snprintf(name, sizeof(name), "round-%s", strrchr(r.dir, '-') + 1);
	for (char *c = name; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	struct latch_k8s *k = kube();
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *ns = json_pack("{s:s,s:s,s:{s:s}}", "apiVersion", "v1", "kind", "Namespace", "metadata", "name",
			       name);
	struct latch_k8s_apply_options by_hand = { .field_manager = "kubectl-create", .force = true };
	assert_int_equal(latch_k8s_apply(k, ns, &by_hand, NULL, &err), 0);
	json_decref(ns);
	int n = snprintf(config, sizeof(config), "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\n"
			 "metadata: {name: %s}\nspec:\n  namespace: latch-system\n  cacheDir: %s/cache\n  sources:\n",
			 name, r.dir);
	gitops_sh(r.dir, "mkdir -p repo && cd repo && git init -q -b main");
	for (int i = 0; i < SOURCES; i++) {
		snprintf(cmd, sizeof(cmd), "mkdir -p repo/s%d && for j in 0 1; do printf -- '---\\napiVersion: v1\\n"
			 "kind: ConfigMap\\nmetadata: {name: c%d-'$j', namespace: %s}\\ndata: {v: x}\\n'; done "
			 "> repo/s%d/cms.yaml", i, i, name, i);
		gitops_sh(r.dir, cmd);
		n += snprintf(config + n, sizeof(config) - (size_t)n, "  - {name: s%d, url: 'file://%s/repo', path: s%d, "
			      "healthCheck: false, interval: 1h%s%s%s}\n", i, r.dir, i, i ? "" : ", webhook: {secretFile: '",
			      i ? "" : r.dir, i ? "" : "/hook-secret'}");
	}
	snprintf(cmd, sizeof(cmd), "%s/hook-secret", r.dir);
	stack_write_file(cmd, "round-s3cret\n");
	/* A kind one source alone has. */
	snprintf(cmd, sizeof(cmd), "printf -- '---\\napiVersion: v1\\nkind: ServiceAccount\\n"
		 "metadata: {name: only-s0, namespace: %s}\\n' > repo/s0/sa.yaml && cd repo && git add -A && "
		 "git commit -qm sources", name);
	gitops_sh(r.dir, cmd);
	stack_write_file(r.config, config);
	assert_int_equal(sync_once(&r), 0);
	assert_int_equal(gitops_count_in(r.log, "changed=2 "), SOURCES - 1);

	long before = api_requests(&r, "LIST", "configmaps");
	assert_int_equal(sync_once(&r), 0);
	long lists = api_requests(&r, "LIST", "configmaps") - before;
	printf("# a no-op pass of %d sources: %ld ConfigMap lists\n", SOURCES, lists);
	/* One, and one more should another client of the cluster list ConfigMaps meanwhile. */
	assert_true(lists >= 1 && lists <= 2);
	assert_int_equal(gitops_count_in(r.log, "changed=0 drifted=0 pruned=0"), SOURCES);

	json_t *edit = json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s}}", "apiVersion", "v1", "kind", "ConfigMap",
				 "metadata", "name", "c3-1", "namespace", name, "data", "v", "edited by hand");
	struct latch_k8s_apply_options hand = { .field_manager = "kubectl-edit", .force = true };
	assert_int_equal(latch_k8s_apply(k, edit, &hand, NULL, &err), 0);
	json_decref(edit);
	assert_int_equal(sync_once(&r), 0);
	assert_int_equal(gitops_count_in(r.log, "changed=0 drifted=0 pruned=0"), 2 * SOURCES - 1);
	assert_int_equal(gitops_count_in(r.log, "changed=1 drifted=1 pruned=0"), 1);
	char line[256];
	snprintf(line, sizeof(line), "source=s3 revision=");
	assert_int_equal(gitops_count_in(r.log, line), 3);
	char *v = gitops_configmap_value(k, name, "c3-1", "v");
	assert_non_null(v);
	assert_string_equal(v, "x");
	free(v);

	/* A push hook for one source passes every source of its repository, in one round. */
	int port;
	pid_t pid = spawn_listening(&r, &port);
	gitops_sh(r.dir, "cd repo && sed -i '0,/data: {v: x}/s//data: {v: pushed}/' s4/cms.yaml && "
		  "git commit -qam push");
	static const char push[] = "{\"ref\":\"refs/heads/main\"}";
	char good[128];
	github_signature("round-s3cret", push, good);
	double sent = stack_now();
	assert_int_equal(http_post(port, "/hook/s0", good, push, strlen(push)), 202);
	while ((v = gitops_configmap_value(k, name, "c4-0", "v")) && strcmp(v, "pushed") != 0 &&
	       stack_now() - sent < 10) {
		free(v);
		usleep(50 * 1000);
	}
	assert_non_null(v);
	assert_string_equal(v, "pushed");
	free(v);
	stop_listening(pid);
	assert_int_equal(gitops_count_in(r.log, "others_on_its_repository=5"), 1);
	latch_k8s_delete(k, "v1", "Namespace", NULL, name, &err);
	latch_error_done(&err);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* A Namespace that existed before latch-sync is never pruned; what latch-sync put in it is. */
static void test_sync__prune_keeps_namespaces_it_did_not_create(void **state)
{
	struct repo r;
	repo_setup(&r);
	struct latch_k8s *k = kube();
	struct latch_error err = LATCH_ERROR_INIT;
	json_t *ns = json_pack("{s:s,s:s,s:{s:s}}", "apiVersion", "v1", "kind", "Namespace", "metadata", "name", "sync-pre");
	struct latch_k8s_apply_options by_hand = { .field_manager = "kubectl-create", .force = true };
	assert_int_equal(latch_k8s_apply(k, ns, &by_hand, NULL, &err), 0);
	json_decref(ns);
	write_in(&r, "clusters/stack/pre.yaml", "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: sync-pre\n---\n"
						"apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: pre-settings\n  namespace: sync-pre\n");
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm pre");
	assert_int_equal(sync_once(&r), 0);
	json_t *cm = NULL;
	assert_int_equal(latch_k8s_get(k, "v1", "ConfigMap", "sync-pre", "pre-settings", &cm, &err), 0);
	json_decref(cm);
	gitops_sh(r.dir, "cd repo && git rm -q clusters/stack/pre.yaml && git commit -qm 'drop pre'");
	assert_int_equal(sync_once(&r), 0);
	assert_int_equal(latch_k8s_get(k, "v1", "ConfigMap", "sync-pre", "pre-settings", &cm, &err), LATCH_ENOTFOUND);
	json_t *live = NULL;
	assert_int_equal(latch_k8s_get(k, "v1", "Namespace", NULL, "sync-pre", &live, &err), 0);
	assert_null(latch_json_path(live, "metadata.deletionTimestamp"));
	json_decref(live);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "kept a Namespace latch-sync did not create"));
	free(log);
	latch_error_done(&err);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* A CRD that existed before latch-sync adopted it is never pruned: deleting it would delete
 * every resource of its kind in the cluster. One latch-sync created is. */
static void test_sync__prune_keeps_crds_it_did_not_create(void **state)
{
	struct repo r;
	repo_setup(&r);
	struct latch_k8s *k = kube();
	struct latch_error err = LATCH_ERROR_INIT;
	char group[128], pre_crd[4096], own_crd[4096];
	snprintf(group, sizeof(group), "g%d.prune.latch.dev", (int)getpid());
	static const char crd_fmt[] =
		"apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: %s.%s\n"
		"spec:\n  group: %s\n  scope: Namespaced\n"
		"  names: {plural: %s, singular: %.*s, kind: %s, listKind: %sList}\n"
		"  versions:\n  - name: v1\n    served: true\n    storage: true\n"
		"    schema: {openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}}\n";
	snprintf(pre_crd, sizeof(pre_crd), crd_fmt, "gadgets", group, group, "gadgets", 6, "gadgets", "Gadget",
		"Gadget");
	snprintf(own_crd, sizeof(own_crd), crd_fmt, "gizmos", group, group, "gizmos", 5, "gizmos", "Gizmo", "Gizmo");
	/* The first CRD is created by hand, as by an operator's chart. */
	json_t *by_hand = node_parse_yaml(pre_crd, "pre-crd");
	struct latch_k8s_apply_options hand = { .field_manager = "helm", .force = true };
	assert_int_equal(latch_k8s_apply(k, json_array_get(by_hand, 0), &hand, NULL, &err), 0);
	json_decref(by_hand);
	char both[9000];
	snprintf(both, sizeof(both), "%s---\n%s", pre_crd, own_crd);
	write_in(&r, "clusters/stack/crds.yaml", both);
	gitops_sh(r.dir, "cd repo && git add -A && git commit -qm crds");
	assert_int_equal(sync_once(&r), 0);
	gitops_sh(r.dir, "cd repo && git rm -q clusters/stack/crds.yaml && git commit -qm 'drop crds'");
	assert_int_equal(sync_once(&r), 0);

	char name[256];
	snprintf(name, sizeof(name), "gadgets.%s", group);
	json_t *live = NULL;
	assert_int_equal(latch_k8s_get(k, "apiextensions.k8s.io/v1", "CustomResourceDefinition", NULL, name,
				       &live, &err), 0);
	assert_null(latch_json_path(live, "metadata.deletionTimestamp"));
	json_decref(live);
	live = NULL;
	snprintf(name, sizeof(name), "gizmos.%s", group);
	int r_own = latch_k8s_get(k, "apiextensions.k8s.io/v1", "CustomResourceDefinition", NULL, name, &live, &err);
	assert_true(r_own == LATCH_ENOTFOUND || (r_own == 0 && latch_json_path(live, "metadata.deletionTimestamp")));
	json_decref(live);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "kept a CRD latch-sync did not create"));
	free(log);
	snprintf(name, sizeof(name), "gadgets.%s", group);
	assert_int_equal(latch_k8s_delete(k, "apiextensions.k8s.io/v1", "CustomResourceDefinition", NULL,
					  name, &err), 0);
	latch_error_done(&err);
	latch_k8s_free(k);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* A kubeconfig that turns TLS verification off is obeyed, and said. */
static void test_sync__insecure_kubeconfig_is_said(void **state)
{
	struct repo r;
	repo_setup(&r);
	char *kubeconfig = stack_read_file(getenv("KUBECONFIG"));
	char *server = strstr(kubeconfig, "    server: ");
	assert_non_null(server);
	char path[1024];
	snprintf(path, sizeof(path), "%s/insecure-kubeconfig", r.dir);
	struct latch_buf text = LATCH_BUF_INIT(1 << 20);
	latch_buf_printf(&text, "%.*s    insecure-skip-tls-verify: true\n%s", (int)(server - kubeconfig), kubeconfig,
		server);
	stack_write_file(path, latch_buf_str(&text));
	assert_int_equal(gitops_sync("once", r.config, path, r.log), 0);
	char *log = stack_read_file(r.log);
	assert_non_null(strstr(log, "the kubeconfig turns TLS verification off (insecure-skip-tls-verify)"));
	free(log);
	latch_buf_done(&text);
	free(kubeconfig);
	stack_rm_rf(r.dir);
	free(r.dir);
}

/* The long-running loop stays flat: memory after 40 passes is what it was after 10 (the
 * sanitized run of the same test checks for leaks outright). */
static void test_sync__run_loop_memory_is_flat(void **state)
{
	struct repo r;
	repo_setup(&r);
	char config[4096];
	char *text = stack_read_file(r.config);
	snprintf(config, sizeof(config), "%s    interval: 1s\n", text);
	free(text);
	stack_write_file(r.config, config);
	const char *const limit[] = { "--max-passes", "45", NULL };
	pid_t pid = gitops_spawn(r.config, getenv("KUBECONFIG"), r.log, limit);
	long at10 = -1, at40 = -1;
	double end = stack_now() + 120;
	while (stack_now() < end && at40 < 0) {
		size_t passes = gitops_count_in(r.log, "synced source=apps");
		if (passes >= 10 && at10 < 0)
			at10 = gitops_rss_kib(pid);
		if (passes >= 40)
			at40 = gitops_rss_kib(pid);
		struct timespec ts = { 0, 100000000 };
		nanosleep(&ts, NULL);
	}
	/* Under ASan the agent's exit status carries LeakSanitizer's verdict instead: its
	 * quarantine keeps freed memory resident, so RSS says nothing there. */
	assert_int_equal(stack_wait(pid, 30), 0);
	assert_true(at10 > 0 && at40 > 0);
#ifndef __SANITIZE_ADDRESS__
	if (at40 - at10 > 1024)
		fail_msg("RSS grew from %ld KiB after 10 passes to %ld KiB after 40", at10, at40);
#endif
	assert_int_equal(gitops_count_in(r.log, "sync failed"), 0);
	stack_rm_rf(r.dir);
	free(r.dir);
}

static int setup_suite(void **state)
{
	int r = stack_load(state);
	if (r == 0) {
		struct latch_k8s *k = kube();
		forget_leases(k, "e2e");
		latch_k8s_free(k);
	}
	return r;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_sync__apply_prune_revert_and_bad_revisions),
		cmocka_unit_test(test_sync__diff_names_changes_and_writes_nothing),
		cmocka_unit_test(test_sync__deploy_manifest_passes_server_validation),
		cmocka_unit_test(test_sync__target_namespace_and_cluster_scoped_objects),
		cmocka_unit_test(test_sync__run_serves_health_readiness_and_metrics),
		cmocka_unit_test_teardown(test_sync__probes_answer_while_slow_clients_hold_connections, stop_agent),
		cmocka_unit_test_teardown(test_sync__signed_webhook_starts_a_pass_at_once, stop_agent),
		cmocka_unit_test_teardown(test_sync__prometheus_scrapes_the_metrics, stop_agent),
		cmocka_unit_test_teardown(test_sync__replicas_share_sources_by_leases, stop_replicas),
		cmocka_unit_test_teardown(test_sync__cut_off_replica_gives_up_before_another_can_take_over, stop_replicas),
		cmocka_unit_test_teardown(test_sync__hook_at_a_replica_without_the_lease_reaches_its_holder, stop_replicas),
		cmocka_unit_test(test_sync__deployed_agent_has_least_privilege),
		cmocka_unit_test_teardown(test_sync__status_page_shows_what_happened, stop_agent),
		cmocka_unit_test(test_sync__config_errors_name_key_and_line),
		cmocka_unit_test(test_sync__unhealthy_workload_fails_the_pass),
		cmocka_unit_test(test_sync__kustomize_overlay),
		cmocka_unit_test(test_sync__git_transports_and_credentials),
		cmocka_unit_test(test_sync__sources_of_one_repository_share_a_fetch_and_pass_together),
		cmocka_unit_test(test_sync__large_inventory_is_packed_and_read_back),
		cmocka_unit_test(test_sync__a_round_lists_each_kind_once_for_all_its_sources),
		cmocka_unit_test(test_sync__prune_keeps_namespaces_it_did_not_create),
		cmocka_unit_test(test_sync__prune_keeps_crds_it_did_not_create),
		cmocka_unit_test(test_sync__insecure_kubeconfig_is_said),
		cmocka_unit_test(test_sync__run_loop_memory_is_flat),
	};
	/* LATCH_TEST_FILTER=test_sync__probes* runs only the tests it matches. */
	if (getenv("LATCH_TEST_FILTER"))
		cmocka_set_test_filter(getenv("LATCH_TEST_FILTER"));
	return cmocka_run_group_tests(tests, setup_suite, NULL);
}
