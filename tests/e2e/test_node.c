/* latch on a real node: workloads annotated for the Vault Agent Injector go through
 * latch-inject, are applied through the API server, and run in the stack's kubelet with
 * containerd and runc, from the images built here. The app containers are Debian's psql in
 * its own image; what the tests check is what a user checks: pod status, events, logs
 * through the API server, and the database login the app made. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <curl/curl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gitops.h"
#include "node.h"
#include "stack.h"

#define NS "demo"

static struct latch_k8s *kube;

static int setup(void **state)
{
	stack_load(state);
	kube = node_kube();
	node_ensure_vault_tls(kube, NS);
	return 0;
}

static int teardown(void **state)
{
	latch_k8s_free(kube);
	return 0;
}

/* The app: logs in to PostgreSQL every 2 s with what latch wrote (a .pgpass and the user
 * name in an env file), prints the user it got, and fails at once if a file is missing. */
static const char psql_loop[] =
	"while :; do . /vault/secrets/db-env && psql -XtAw -c 'select current_user' || exit 1; sleep 2; done";
static const char psql_once[] = ". /vault/secrets/db-env && psql -XtAw -c 'select current_user'";

/* A workload's YAML: kind Deployment (sidecar) or Job (pre-populate only), the app running
 * command, extra pod annotations (indented 8 spaces), the Vault role and the database creds
 * path. */
static char *workload_for(const char *kind, const char *name, const char *command,
			  const char *extra_annotations, const char *role, const char *creds)
{
	bool job = strcmp(kind, "Job") == 0;
	char spec_head[256];
	if (job)
		snprintf(spec_head, sizeof(spec_head), "  backoffLimit: 0\n");
	else
		snprintf(spec_head, sizeof(spec_head),
			 "  replicas: 1\n  selector:\n    matchLabels: {app: %s}\n", name);
	char *yaml = NULL;
	if (asprintf(&yaml,
		     "apiVersion: %s\nkind: %s\nmetadata: {name: %s, namespace: " NS "}\n"
		     "spec:\n"
		     "%s"
		     "  template:\n"
		     "    metadata:\n"
		     "      labels: {app: %s}\n"
		     "      annotations:\n"
		     "        vault.hashicorp.com/agent-inject: \"true\"\n"
		     "        vault.hashicorp.com/role: %s\n"
		     "        vault.hashicorp.com/tls-secret: vault-tls\n"
		     "        vault.hashicorp.com/ca-cert: /vault/tls/ca.crt\n"
		     "        vault.hashicorp.com/agent-inject-secret-pgpass: %s\n"
		     "        vault.hashicorp.com/agent-inject-template-pgpass: |\n"
		     "          {{- with secret \"%s\" -}}\n"
		     "          *:*:*:{{ .Data.username }}:{{ .Data.password }}\n"
		     "          {{- end }}\n"
		     "        vault.hashicorp.com/agent-inject-perms-pgpass: \"0600\"\n"
		     "        vault.hashicorp.com/agent-inject-secret-db-env: %s\n"
		     "        vault.hashicorp.com/agent-inject-template-db-env: |\n"
		     "          {{- with secret \"%s\" -}}\n"
		     "          export PGUSER={{ .Data.username }}\n"
		     "          {{- end }}\n"
		     "%s"
		     "    spec:\n"
		     "      serviceAccountName: app\n"
		     "%s"
		     "      containers:\n"
		     "      - name: app\n"
		     "        image: %s\n"
		     "        imagePullPolicy: Never\n"
		     "        command: [sh, -c, \"%s\"]\n"
		     "        env:\n"
		     "        - {name: PGHOST, value: '%s'}\n"
		     "        - {name: PGPORT, value: '%s'}\n"
		     "        - {name: PGDATABASE, value: demo}\n"
		     "        - {name: PGPASSFILE, value: /vault/secrets/pgpass}\n"
		     "        - {name: PGCONNECT_TIMEOUT, value: '5'}\n",
		     job ? "batch/v1" : "apps/v1", kind, name,
		     spec_head, name, role, creds, creds, creds, creds,
		     extra_annotations ? extra_annotations : "", job ? "      restartPolicy: Never\n" : "",
		     node_image("PSQL"), command,
		     getenv("LATCH_POD_PG_HOST") ?: "", getenv("LATCH_PG_PORT") ?: "") < 0)
		fail_msg("out of memory");
	return yaml;
}

static char *workload(const char *kind, const char *name, const char *command, const char *extra_annotations)
{
	return workload_for(kind, name, command, extra_annotations, "demo", "database/creds/app");
}

static char *selector_for(const char *name)
{
	char *s = NULL;
	if (asprintf(&s, "app%%3D%s", name) < 0)
		fail_msg("out of memory");
	return s;
}

/* A file latch wrote into the pod's secrets volume, read on the node (to free). */
static char *secret_file_on_node(const json_t *pod, const char *name)
{
	char *dir = node_volume_dir(pod, "latch-secrets"), path[2300];
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	free(dir);
	char *text = stack_read_file(path);
	if (!text)
		fail_msg("no %s in the pod's secrets volume", name);
	return text;
}

/* What follows marker, up to one of stop, in a file latch wrote on the node (to free); the
 * file's copy is zeroed. */
static char *value_on_node(const json_t *pod, const char *file, const char *marker, const char *stop)
{
	char *text = secret_file_on_node(pod, file);
	const char *p = strstr(text, marker);
	assert_non_null(p);
	p += strlen(marker);
	char *value = strndup(p, strcspn(p, stop));
	explicit_bzero(text, strlen(text));
	free(text);
	return value;
}

/* The value after "export PGUSER=" in the env file latch wrote on the node. */
static char *pg_user_on_node(const json_t *pod)
{
	return value_on_node(pod, "db-env", "PGUSER=", "\n");
}

/* The last field of the .pgpass line. */
static char *pg_password_on_node(const json_t *pod)
{
	char *pgpass = secret_file_on_node(pod, "pgpass");
	const char *last = strrchr(pgpass, ':');
	assert_non_null(last);
	char *password = strndup(last + 1, strcspn(last + 1, "\n"));
	explicit_bzero(pgpass, strlen(pgpass));
	free(pgpass);
	return password;
}

static int restarts(const json_t *pod, const char *container)
{
	const json_t *c = node_container_status(pod, container);
	return c ? (int)json_integer_value(json_object_get(c, "restartCount")) : -1;
}

/* No log, event or status of the pod holds the password. */
static void assert_secret_nowhere(const json_t *pod, const char *password)
{
	const char *name = node_pod_name(pod);
	const char *containers[] = { "latch-init", "app" };
	for (size_t i = 0; i < 2; i++) {
		char *log = node_logs(NS, name, containers[i], false);
		assert_null(strstr(log, password));
		free(log);
	}
	char *events = node_events(kube, NS, name);
	assert_null(strstr(events, password));
	free(events);
	char *status = json_dumps(json_object_get(pod, "status"), 0);
	assert_null(strstr(status, password));
	free(status);
}

/* The login latch wrote works, and its password is in no log, event or status; then both
 * are zeroed and freed. */
static void assert_login_works_and_stays_secret(const json_t *pod, char *user, char *password)
{
	assert_int_equal(stack_psql_login(user, password), 0);
	assert_secret_nowhere(pod, password);
	explicit_bzero(password, strlen(password));
	free(password);
	free(user);
}

/* A workload of the tests, from its YAML to its pod on the node. */
struct running {
	char *yaml, *selector;
	json_t *objects; /* as latch-inject wrote them */
	json_t *pod;     /* the pod that reached the state asked for */
};

/* Inject and apply a workload (after removing what a failed earlier run left), then wait
 * until its pod satisfies done. */
static void run_yaml(struct running *w, char *yaml, const char *name,
		     bool (*done)(const json_t *pod, void *arg), double timeout_s)
{
	w->yaml = yaml;
	w->objects = node_inject(w->yaml);
	w->selector = selector_for(name);
	node_delete_all(kube, w->objects);
	node_wait_no_pods(kube, NS, w->selector, 120);
	node_apply_all(kube, w->objects);
	w->pod = done ? node_wait_pod(kube, NS, w->selector, done, NULL, timeout_s) : NULL;
}

static void run_workload(struct running *w, const char *kind, const char *name, const char *command,
			 const char *extra_annotations, bool (*done)(const json_t *pod, void *arg),
			 double timeout_s)
{
	run_yaml(w, workload(kind, name, command, extra_annotations), name, done, timeout_s);
}

static void stop_workload(struct running *w)
{
	node_delete_all(kube, w->objects);
	json_decref(w->pod);
	json_decref(w->objects);
	free(w->selector);
	free(w->yaml);
}

static void test_node__native_sidecar_gates_the_app_which_logs_in_with_psql(void **state)
{
	struct running w;
	run_workload(&w, "Deployment", "node-psql", psql_loop, NULL, node_pod_running_ready, 120);
	json_t *pod = w.pod;
	const char *name = node_pod_name(pod);

	/* latch-init ran as a native sidecar (an init container that stays), and the app, started
	 * only once latch-init's startupProbe passed, found its files at once: no restart. */
	const json_t *sidecar = node_container_status(pod, "latch-init");
	assert_non_null(sidecar);
	assert_true(json_is_true(json_object_get(sidecar, "started")));
	assert_non_null(latch_json_path(sidecar, "state.running"));
	assert_int_equal(restarts(pod, "app"), 0);

	/* The app logged in as the user Vault created for this pod. */
	char *user = pg_user_on_node(pod), *password = pg_password_on_node(pod);
	assert_int_equal(strncmp(user, "v-", 2), 0);
	char *log = NULL;
	for (int i = 0; i < 60; i++) {
		free(log);
		log = node_logs(NS, name, "app", false);
		if (strstr(log, user))
			break;
		sleep(1);
	}
	assert_non_null(strstr(log, user));
	assert_login_works_and_stays_secret(pod, user, password);
	free(log);
	stop_workload(&w);
}

/* runc enforces the securityContext latch-inject wrote: the process runs as its non-root user
 * with no capability, no privilege escalation, seccomp on, and a read-only root filesystem. */
static void test_node__runc_confines_latch_init(void **state)
{
	struct running w;
	run_workload(&w, "Deployment", "node-confined", psql_loop, NULL, node_pod_running_ready, 120);
	json_t *pod = w.pod;

	/* The user latch-inject chose (the injector's default, 100), and never root. */
	const json_t *init = json_array_get(latch_json_path(pod, "spec.initContainers"), 0);
	json_int_t uid = json_integer_value(latch_json_path(init, "securityContext.runAsUser"));
	assert_true(uid > 0);
	long pid = node_container_pid(pod, "latch-init");
	char path[64], uids[128];
	snprintf(path, sizeof(path), "/proc/%ld/status", pid);
	char *status = stack_read_file(path);
	assert_non_null(status);
	snprintf(uids, sizeof(uids), "Uid:\t%lld\t%lld\t%lld\t%lld", (long long)uid, (long long)uid,
		 (long long)uid, (long long)uid);
	assert_non_null(strstr(status, uids));
	assert_non_null(strstr(status, "CapEff:\t0000000000000000"));
	assert_non_null(strstr(status, "CapBnd:\t0000000000000000"));
	assert_non_null(strstr(status, "NoNewPrivs:\t1"));
	assert_non_null(strstr(status, "Seccomp:\t2"));
	snprintf(path, sizeof(path), "/proc/%ld/mountinfo", pid);
	char *mounts = stack_read_file(path);
	assert_non_null(mounts);
	/* The root mount: "<id> <parent> <dev> <root> / ro,…". */
	bool root_ro = false;
	for (char *line = mounts, *next; line && *line; line = next) {
		next = strchr(line, '\n');
		if (next)
			*next++ = '\0';
		char mount_point[256] = "", options[256] = "";
		if (sscanf(line, "%*s %*s %*s %*s %255s %255s", mount_point, options) == 2 &&
		    strcmp(mount_point, "/") == 0)
			root_ro = strncmp(options, "ro", 2) == 0 && (options[2] == ',' || options[2] == '\0');
	}
	assert_true(root_ro);

	free(mounts);
	free(status);
	stop_workload(&w);
}

static void test_node__job_with_pre_populate_only_completes(void **state)
{
	struct running w;
	run_workload(&w, "Job", "node-job", psql_once,
		     "        vault.hashicorp.com/agent-pre-populate-only: \"true\"\n", node_pod_succeeded,
		     120);
	json_t *pod = w.pod;
	const char *name = node_pod_name(pod);

	const json_t *init = node_container_status(pod, "latch-init");
	assert_non_null(init);
	assert_int_equal(json_integer_value(latch_json_path(init, "state.terminated.exitCode")), 0);
	const json_t *app = node_container_status(pod, "app");
	assert_int_equal(json_integer_value(latch_json_path(app, "state.terminated.exitCode")), 0);
	char *log = node_logs(NS, name, "app", false);
	assert_int_equal(strncmp(log, "v-", 2), 0);

	free(log);
	stop_workload(&w);
}

/* A file with no perms annotation in a pod with an fsGroup is 0640 and of that group: the
 * app, another user than latch-init (100:1000) and not in its group, reads it, and the
 * "other" bits that would let any user of the pod read it are off. */
static void test_node__fs_group_pod_reads_its_0640_files(void **state)
{
	static const char pod_security[] =
		"      securityContext: {runAsUser: 65532, runAsGroup: 65532, fsGroup: 4242}\n";
	static const char anchor[] = "      serviceAccountName: app\n";
	char *yaml = workload("Job", "node-fsgroup",
			      "stat -c '%a %g' /vault/secrets/db-env && . /vault/secrets/db-env "
				 "&& echo \\\"read as $(id -u) $PGUSER\\\"",
			      "        vault.hashicorp.com/agent-pre-populate-only: \"true\"\n");
	char *at = strstr(yaml, anchor), *with_group = NULL;
	assert_non_null(at);
	if (asprintf(&with_group, "%.*s%s%s", (int)(at - yaml), yaml, pod_security, at) < 0)
		fail_msg("out of memory");
	free(yaml);
	struct running w;
	run_yaml(&w, with_group, "node-fsgroup", node_pod_succeeded, 120);
	char *log = node_logs(NS, node_pod_name(w.pod), "app", false);
	assert_non_null(strstr(log, "640 4242\n"));
	assert_non_null(strstr(log, "read as 65532 v-"));
	free(log);
	stop_workload(&w);
}

/* latch-init exited 69 (Vault unavailable) and the kubelet is backing off before the next try. */
static bool init_backing_off_unavailable(const json_t *pod, void *unused)
{
	const json_t *c = node_container_status(pod, "latch-init");
	const char *waiting = c ? json_string_value(latch_json_path(c, "state.waiting.reason")) : NULL;
	return c && json_integer_value(latch_json_path(c, "lastState.terminated.exitCode")) == 69 &&
	       waiting && strcmp(waiting, "CrashLoopBackOff") == 0;
}

/* Whatever happened in the test, Vault is unsealed for the next one. */
static int unseal_after(void **state)
{
	stack_vault_unseal();
	return 0;
}

/* Vault sealed while the pod starts: latch-init exits 69 with the cause as the container's
 * termination message, the kubelet backs off and starts it again, and the pod comes up once
 * Vault is unsealed, without anyone touching it. */
static void test_node__vault_sealed_at_pod_start_then_unsealed(void **state)
{
	struct running w;
	assert_int_equal(stack_vault_root("PUT", "sys/seal", NULL, NULL), 204);
	run_workload(&w, "Deployment", "node-sealed", psql_loop,
		     "        latch.dev/deadline-seconds: \"4\"\n", init_backing_off_unavailable, 120);
	const json_t *failed = w.pod;
	const json_t *init = node_container_status(failed, "latch-init");
	const char *message = json_string_value(latch_json_path(init, "lastState.terminated.message"));
	if (!message || !strstr(message, "sealed"))
		fail_msg("the termination message does not name the cause: %s", message ? message : "(none)");
	/* The app never started without its files. */
	const json_t *app = node_container_status(failed, "app");
	assert_true(!app || !latch_json_path(app, "state.running"));
	stack_vault_unseal();

	json_t *pod = node_wait_pod(kube, NS, w.selector, node_pod_running_ready, NULL, 180);
	assert_true(restarts(pod, "latch-init") >= 1);
	assert_int_equal(restarts(pod, "app"), 0);
	json_decref(pod);
	stop_workload(&w);
}

struct restarted {
	const char *uid;
};

static bool sidecar_restarted_and_ready(const json_t *pod, void *arg)
{
	const struct restarted *r = arg;
	const json_t *c = node_container_status(pod, "latch-init");
	return strcmp(latch_json_get_str(json_object_get(pod, "metadata"), "uid"), r->uid) == 0 && c &&
	       restarts(pod, "latch-init") >= 1 && json_is_true(json_object_get(c, "started")) &&
	       node_pod_running_ready(pod, NULL);
}

/* The lease ids latch-init recorded in the pod's volume (.latch/leases.json), joined. */
static char *lease_ids_on_node(const json_t *pod)
{
	char *text = secret_file_on_node(pod, ".latch/leases.json");
	json_t *leases = json_loads(text, 0, NULL);
	free(text);
	assert_non_null(leases);
	char *ids = NULL;
	size_t len = 0;
	FILE *out = open_memstream(&ids, &len);
	const json_t *l;
	size_t i;
	json_array_foreach(leases, i, l)
		fprintf(out, "%s\n", latch_json_get_str(l, "lease_id"));
	fclose(out);
	json_decref(leases);
	return ids;
}

/* The sidecar killed with SIGKILL (as an OOM kill does): the kubelet starts it again in the
 * same pod, it resumes its saved session (same token, same leases, the same database user),
 * and the app goes on running and logging in. */
static void test_node__killed_sidecar_is_restarted_and_the_app_keeps_running(void **state)
{
	struct running w;
	run_workload(&w, "Deployment", "node-kill", psql_loop, NULL, node_pod_running_ready, 120);
	json_t *pod = w.pod;
	struct restarted r = { latch_json_get_str(json_object_get(pod, "metadata"), "uid") };
	char *leases_before = lease_ids_on_node(pod), *user_before = pg_user_on_node(pod);
	assert_true(strlen(leases_before) > 2);

	node_kill_container(pod, "latch-init");
	json_t *after = node_wait_pod(kube, NS, w.selector, sidecar_restarted_and_ready, &r, 120);
	assert_int_equal(restarts(after, "app"), 0);
	/* The previous sidecar's log is kept by the kubelet and readable through the API. */
	const char *name = node_pod_name(after);
	char *previous = node_logs(NS, name, "latch-init", true);
	assert_true(strlen(previous) > 0);
	char *current = node_logs(NS, name, "latch-init", false);
	assert_non_null(strstr(current, "resumed the saved session"));
	/* Nothing new was issued: the same leases, the same database user, still working. */
	char *leases_after = lease_ids_on_node(after);
	assert_string_equal(leases_after, leases_before);
	char *user = pg_user_on_node(after), *password = pg_password_on_node(after);
	assert_string_equal(user, user_before);
	assert_login_works_and_stays_secret(after, user, password);
	free(leases_before);
	free(leases_after);
	free(user_before);
	free(current);
	free(previous);
	json_decref(after);
	stop_workload(&w);
}

/* The objects of deploy/latch-sync/latch-sync.yaml, set for this stack the way an operator
 * sets them: the image the node holds, the SyncConfig pointing at the repository, the git
 * credentials in a Secret, and the stack CA for the git server. */
static json_t *latch_sync_deployment(const char *sync_yaml)
{
	char path[1024];
	snprintf(path, sizeof(path), "%s/deploy/latch-sync/latch-sync.yaml",
		 getenv("LATCH_SOURCE_ROOT") ?: ".");
	char *text = stack_read_file(path);
	assert_non_null(text);
	json_t *docs = node_parse_yaml(text, path);
	free(text);
	json_t *obj;
	size_t i;
	json_array_foreach(docs, i, obj) {
		const char *kind = latch_json_get_str(obj, "kind");
		if (strcmp(kind, "ConfigMap") == 0) {
			json_object_set_new(json_object_get(obj, "data"), "sync.yaml",
					    json_string(sync_yaml));
		} else if (strcmp(kind, "Deployment") == 0) {
			json_t *spec = latch_json_path(obj, "spec.template.spec");
			json_t *c = json_array_get(json_object_get(spec, "containers"), 0);
			json_object_set_new(c, "image", json_string(node_image("SYNC")));
			json_object_set_new(c, "imagePullPolicy", json_string("Never"));
			json_array_append_new(json_object_get(c, "volumeMounts"),
					      json_pack("{s:s,s:s,s:b}", "name", "git-ca", "mountPath",
							"/etc/latch-sync/ca", "readOnly", 1));
			json_array_append_new(json_object_get(spec, "volumes"),
					      json_pack("{s:s,s:{s:s}}", "name", "git-ca", "configMap",
							"name", "kube-root-ca.crt"));
			/* The git server's name, as a cluster DNS would give it. */
			json_object_set_new(spec, "hostAliases",
					    json_pack("[{s:s,s:[s]}]", "ip", getenv("LATCH_NODE_IP"),
						      "hostnames", getenv("LATCH_POD_GIT_HOST")));
		}
	}
	char *password = stack_read_file(getenv("LATCH_GIT_PASSWORD_FILE"));
	assert_non_null(password);
	password[strcspn(password, "\n")] = '\0';
	json_array_append_new(docs, json_pack("{s:s,s:s,s:{s:s,s:s},s:{s:s,s:s}}", "apiVersion", "v1", "kind",
					      "Secret", "metadata", "name", "latch-sync-git", "namespace",
					      "latch-system", "stringData", "username",
					      getenv("LATCH_GIT_USER"), "password", password));
	explicit_bzero(password, strlen(password));
	free(password);
	return docs;
}

/* A Deployment by name, as a one-object list for node_delete_all. */
static json_t *deployment_ref(const char *name, const char *ns)
{
	return json_pack("[{s:s,s:s,s:{s:s,s:s}}]", "apiVersion", "apps/v1", "kind", "Deployment", "metadata",
			 "name", name, "namespace", ns);
}

/* A repository on the stack's git server holding one annotated workload; ret_rev: the commit. */
static char *push_repository(const char *name, char **ret_rev)
{
	char *dir = stack_mkdtemp("latch-e2e-node-repo");
	char *app = workload("Deployment", "node-synced", psql_loop, NULL);
	char path[1024], cmd[4096];
	snprintf(path, sizeof(path), "%s/repo/clusters/node", dir);
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cd repo && git init -q -b main", path);
	gitops_sh(dir, cmd);
	snprintf(path, sizeof(path), "%s/repo/clusters/node/app.yaml", dir);
	stack_write_file(path, app);
	snprintf(cmd, sizeof(cmd),
		 "cd repo && git add -A && git commit -qm app && rm -rf '%1$s/%2$s.git' && "
		 "git init -q --bare '%1$s/%2$s.git' && git push -q '%1$s/%2$s.git' main",
		 getenv("LATCH_GIT_ROOT"), name);
	gitops_sh(dir, cmd);
	snprintf(path, sizeof(path), "%s/repo", dir);
	*ret_rev = gitops_rev(path, "HEAD");
	free(app);
	return dir;
}

/* latch-sync deployed from deploy/ runs as a pod with its image and in-cluster config (the
 * kubernetes Service, through kube-proxy), pulls the repository from the git server, and the
 * workload it applies runs on the node with its secrets; its health check waits for that
 * workload to be available, and only then is the agent ready (/readyz). */
/* The pod whose latch-sync holds the Lease (holderIdentity is POD_NAME_suffix), to free. */
static char *lease_holder_pod(const char *lease)
{
	char *pod = NULL;
	for (int t = 0; t < 60 && !pod; t++) {
		json_t *l = NULL;
		struct latch_error err = LATCH_ERROR_INIT;
		if (latch_k8s_get(kube, "coordination.k8s.io/v1", "Lease", "latch-system", lease, &l, &err) == 0) {
			const char *holder = latch_json_get_str(json_object_get(l, "spec"), "holderIdentity");
			const char *cut = holder ? strrchr(holder, '_') : NULL;
			if (cut)
				pod = strndup(holder, (size_t)(cut - holder));
		}
		latch_error_done(&err);
		json_decref(l);
		if (!pod)
			sleep(1);
	}
	assert_non_null(pod);
	return pod;
}

static void test_node__latch_sync_in_the_cluster_deploys_a_working_app(void **state)
{
	const char *repo = "node-sync";
	char *rev = NULL;
	char *dir = push_repository(repo, &rev);
	char sync_yaml[4096];
	snprintf(sync_yaml, sizeof(sync_yaml),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: node}\nspec:\n"
		 "  namespace: latch-system\n  cacheDir: /var/cache/latch-sync\n  sources:\n"
		 "  - name: node\n    url: %s/%s.git\n    ref: {branch: main}\n    path: clusters/node\n"
		 "    interval: 10s\n    prune: true\n    healthCheck: true\n    timeout: 2m\n"
		 "    caFile: /etc/latch-sync/ca/ca.crt\n"
		 "    credentials: {usernameFile: /etc/latch-sync/git/username,\n"
		 "                  passwordFile: /etc/latch-sync/git/password}\n"
		 "    inject: {vaultAddress: '%s', image: '%s'}\n",
		 getenv("LATCH_POD_GIT_HTTPS_URL"), repo, getenv("LATCH_POD_VAULT_ADDR"), node_image("INIT"));
	json_t *agent = latch_sync_deployment(sync_yaml);
	json_t *synced = deployment_ref("node-synced", NS);
	json_t *stop = deployment_ref("latch-sync", "latch-system");
	node_delete_all(kube, stop); /* what a failed earlier run left */
	node_delete_all(kube, synced);
	node_wait_no_pods(kube, "latch-system", "app.kubernetes.io%2Fname%3Dlatch-sync", 120);
	node_wait_no_pods(kube, NS, "app%3Dnode-synced", 120);
	node_apply_all(kube, agent);

	json_t *sync_pod = node_wait_pod(kube, "latch-system", "app.kubernetes.io%2Fname%3Dlatch-sync",
					 node_pod_running_ready, NULL, 120);
	char *selector = selector_for("node-synced");
	json_t *app = node_wait_pod(kube, NS, selector, node_pod_running_ready, NULL, 120);
	/* What latch-sync applied carries its injection: the app found its files and logged in. */
	assert_non_null(node_container_status(app, "latch-init"));
	char *user = pg_user_on_node(app), *password = pg_password_on_node(app);
	assert_int_equal(stack_psql_login(user, password), 0);
	/* deploy/ runs two replicas: the one holding the source's Lease synced it, and says which
	 * commit it applied (once its health check saw the app available, a moment after the app
	 * is ready); the other synced nothing. */
	char *holder = lease_holder_pod("latch-sync.node.node");
	char *log = NULL;
	for (int t = 0; t < 60 && (!log || !strstr(log, "\"msg\":\"synced\"")); t++) {
		if (log)
			sleep(1);
		free(log);
		log = node_logs("latch-system", holder, "latch-sync", false);
	}
	assert_non_null(strstr(log, "\"msg\":\"synced\""));
	assert_non_null(strstr(log, rev));
	assert_null(strstr(log, password));
	json_t *pods = node_list_pods(kube, "latch-system", "app.kubernetes.io%2Fname%3Dlatch-sync");
	size_t i, n_pods = 0;
	json_t *pod;
	json_array_foreach(pods, i, pod) {
		const char *name = node_pod_name(pod);
		if (latch_json_path(pod, "metadata.deletionTimestamp") || strcmp(name, holder) == 0)
			continue;
		char *other = node_logs("latch-system", name, "latch-sync", false);
		assert_null(strstr(other, "\"msg\":\"synced\""));
		free(other);
		n_pods++;
	}
	assert_int_equal(n_pods, 1);
	json_decref(pods);
	free(holder);

	explicit_bzero(password, strlen(password));
	free(password);
	free(user);
	free(log);
	node_delete_all(kube, stop);
	node_delete_all(kube, synced);
	json_decref(stop);
	json_decref(synced);
	json_decref(app);
	json_decref(sync_pod);
	json_decref(agent);
	free(selector);
	stack_rm_rf(dir);
	free(dir);
	free(rev);
}

/* The distinct database users in the app's log ("v-…" lines), in order, one per line. */
static char *users_in_log(const char *log)
{
	struct latch_buf users = LATCH_BUF_INIT(1 << 16);
	char *copy = strdup(log), *save = NULL;
	for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		char needle[256];
		snprintf(needle, sizeof(needle), "%s\n", line);
		if (strncmp(line, "v-", 2) == 0 && !strstr(latch_buf_str(&users), needle))
			latch_buf_printf(&users, "%s", needle);
	}
	free(copy);
	return latch_buf_take(&users);
}

static size_t count_lines(const char *text)
{
	size_t n = 0;
	for (const char *p = text; (p = strchr(p, '\n')); p++)
		n++;
	return n;
}

/* The users the app logged in as, once there are two (the login was replaced). */
static char *wait_for_second_user(const struct running *w)
{
	char *users = NULL;
	for (double end = stack_now() + 90;;) {
		char *log = node_logs(NS, node_pod_name(w->pod), "app", false);
		free(users);
		users = users_in_log(log);
		free(log);
		if (count_lines(users) >= 2)
			return users;
		if (stack_now() > end)
			fail_msg("the app logged in as one user only in 90 s: %s", users);
		sleep(2);
	}
}

/* A short-TTL database role: the sidecar replaces the login before it expires, and the app,
 * which reads its files before each login, logs in as the new user without a restart. */
static void test_node__short_lived_login_is_replaced_and_the_app_uses_the_new_one(void **state)
{
	/* Logins live 10 s, renewable to 20 s at most: then only new ones do. */
	stack_vault_db_role("short", "10s", "20s");
	static const char login_loop[] =
		"while :; do . /vault/secrets/db-env && psql -XtAw -c 'select current_user'; sleep 2; done";
	struct running w;
	run_yaml(&w, workload_for("Deployment", "node-short", login_loop, NULL, "short", "database/creds/short"),
		 "node-short", node_pod_running_ready, 120);
	char *users = wait_for_second_user(&w);
	json_t *pod = node_wait_pod(kube, NS, w.selector, node_pod_running_ready, NULL, 30);
	assert_int_equal(restarts(pod, "app"), 0);
	assert_int_equal(restarts(pod, "latch-init"), 0);
	/* The login in the files now works, and is not the first one. */
	char *user = pg_user_on_node(pod), *password = pg_password_on_node(pod);
	assert_true(strncmp(users, user, strlen(user)) != 0 || users[strlen(user)] != '\n');
	assert_login_works_and_stays_secret(pod, user, password);
	free(users);
	json_decref(pod);
	stop_workload(&w);
}

static const char *waiting_reason(const json_t *pod, const char *container)
{
	const json_t *c = node_container_status(pod, container);
	return c ? latch_json_get_str(latch_json_path(c, "state.waiting"), "reason") : NULL;
}

static bool init_image_not_pulled(const json_t *pod, void *unused)
{
	const char *reason = waiting_reason(pod, "latch-init");
	return reason && (strcmp(reason, "ErrImagePull") == 0 || strcmp(reason, "ImagePullBackOff") == 0);
}

/* latch-init's image is not to be had (a wrong agent-image): the pod waits at the init
 * container's pull, which `kubectl describe pod` shows with the image's name, and the app
 * never starts without its secrets. */
static void test_node__missing_latch_init_image_is_named_and_the_app_waits(void **state)
{
	struct running w;
	run_workload(&w, "Deployment", "node-no-image", psql_loop,
		     "        vault.hashicorp.com/agent-image: latch.local/latch-init:no-such-tag\n",
		     init_image_not_pulled, 120);
	char *events = NULL;
	for (double end = stack_now() + 30; stack_now() < end; sleep(1)) {
		free(events);
		events = node_events(kube, NS, node_pod_name(w.pod));
		if (strstr(events, "latch.local/latch-init:no-such-tag"))
			break;
	}
	assert_non_null(strstr(events, "latch.local/latch-init:no-such-tag"));
	assert_string_equal(waiting_reason(w.pod, "app"), "PodInitializing");
	free(events);
	stop_workload(&w);
}

/* The node's daemons crash (SIGKILL to the kubelet and containerd) and come back while the
 * sidecar runs: the containers went on running, the kubelet takes them up again, and the app
 * keeps its credentials: the same leases, the same database user, no restart. */
static void test_node__node_daemons_restart_while_the_sidecar_runs(void **state)
{
	struct running w;
	run_workload(&w, "Deployment", "node-restart", psql_loop, NULL, node_pod_running_ready, 120);
	char *leases_before = lease_ids_on_node(w.pod), *user_before = pg_user_on_node(w.pod);

	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "'%s/dev/stack' restart-node", getenv("LATCH_SOURCE_ROOT") ?: ".");
	char home[512], log[] = "/tmp/latch-e2e-restart-node.log";
	snprintf(home, sizeof(home), "HOME=%s", getenv("HOME") ?: "/root");
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	char *envp[] = { "PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin:/usr/local/go/bin", home, NULL };
	remove(log);
	if (stack_run(argv, envp, log, 180, NULL) != 0) {
		char *out = stack_read_file(log);
		fail_msg("dev/stack restart-node failed: %s", out ? out : "?");
	}

	struct restarted r = { latch_json_get_str(json_object_get(w.pod, "metadata"), "uid") };
	json_t *after = node_wait_pod(kube, NS, w.selector, node_pod_running_ready, NULL, 120);
	assert_string_equal(latch_json_get_str(json_object_get(after, "metadata"), "uid"), r.uid);
	/* The new kubelet has taken the pod up again when it serves its logs. */
	free(node_logs_when_served(NS, node_pod_name(after), "app", 60));
	json_decref(after);
	after = node_wait_pod(kube, NS, w.selector, node_pod_running_ready, NULL, 120);
	assert_int_equal(restarts(after, "app"), 0);
	char *leases_after = lease_ids_on_node(after);
	char *user = pg_user_on_node(after), *password = pg_password_on_node(after);
	assert_string_equal(leases_after, leases_before);
	assert_string_equal(user, user_before);
	assert_login_works_and_stays_secret(after, user, password);
	free(leases_after);
	free(user_before);
	free(leases_before);
	json_decref(after);
	stop_workload(&w);
}

/* nginx, a program that knows nothing of Vault, serves https with the certificate latch-init
 * wrote from pki/issue/demo. The certificate lives 20 s; the sidecar issues the next one and
 * signals nginx the way the injector's users write it (agent-inject-command "nginx -s
 * reload", in a shared process namespace). */
static const char nginx_yaml[] =
	"apiVersion: v1\nkind: ConfigMap\nmetadata: {name: node-nginx, namespace: " NS "}\n"
	"data:\n"
	"  nginx.conf: |\n"
	"    daemon off; error_log stderr; pid /tmp/nginx.pid; events {}\n"
	"    http {\n"
	"      access_log off; client_body_temp_path /tmp/cb; proxy_temp_path /tmp/p;\n"
	"      fastcgi_temp_path /tmp/f; uwsgi_temp_path /tmp/u; scgi_temp_path /tmp/s;\n"
	"      server {\n"
	"        listen 8443 ssl;\n"
	"        ssl_certificate /vault/secrets/tls.crt; ssl_certificate_key /vault/secrets/tls.key;\n"
	"        location / { return 200 \"ok\\n\"; }\n"
	"      }\n"
	"    }\n"
	"---\n"
	"apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: node-nginx, namespace: " NS "}\n"
	"spec:\n"
	"  replicas: 1\n"
	"  selector: {matchLabels: {app: node-nginx}}\n"
	"  template:\n"
	"    metadata:\n"
	"      labels: {app: node-nginx}\n"
	"      annotations:\n"
	"        vault.hashicorp.com/agent-inject: \"true\"\n"
	"        vault.hashicorp.com/role: demo\n"
	"        vault.hashicorp.com/tls-secret: vault-tls\n"
	"        vault.hashicorp.com/ca-cert: /vault/tls/ca.crt\n"
	"        vault.hashicorp.com/agent-inject-secret-tls: pki/issue/demo\n"
	"        latch.dev/format-tls: pem\n"
	"        latch.dev/params-tls: common_name=web.demo.svc,ttl=20s\n"
	"        vault.hashicorp.com/agent-inject-command-tls: nginx -s reload\n"
	"        vault.hashicorp.com/agent-share-process-namespace: \"true\"\n"
	"        vault.hashicorp.com/agent-run-as-same-user: \"true\"\n"
	"    spec:\n"
	"      serviceAccountName: app\n"
	"      containers:\n"
	"      - name: app\n"
	"        image: %s\n"
	"        imagePullPolicy: Never\n"
	"        args: [-c, /etc/node-nginx/nginx.conf, -e, stderr]\n"
	"        securityContext: {runAsUser: 65532, runAsGroup: 65532}\n"
	"        readinessProbe: {tcpSocket: {port: 8443}, periodSeconds: 1}\n"
	"        volumeMounts:\n"
	"        - {name: config, mountPath: /etc/node-nginx}\n"
	"        - {name: tmp, mountPath: /tmp}\n"
	"      volumes:\n"
	"      - {name: config, configMap: {name: node-nginx}}\n"
	"      - {name: tmp, emptyDir: {medium: Memory}}\n";

/* One https request on a new connection and a full handshake, verified against the CA of
 * Vault's PKI; the serial number of the certificate nginx served, or NULL on any failure. */
static char *served_serial(CURL *h)
{
	if (curl_easy_perform(h) != CURLE_OK)
		return NULL;
	long status = 0;
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &status);
	struct curl_certinfo *info = NULL;
	if (status != 200 || curl_easy_getinfo(h, CURLINFO_CERTINFO, &info) != CURLE_OK || !info ||
	    info->num_of_certs < 1)
		return NULL;
	for (struct curl_slist *f = info->certinfo[0]; f; f = f->next)
		if (strncmp(f->data, "Serial Number:", 14) == 0)
			return strdup(f->data + 14);
	return NULL;
}

static size_t discard(char *ptr, size_t size, size_t n, void *unused)
{
	(void)ptr;
	(void)unused;
	return size * n;
}

static CURL *nginx_client(const json_t *pod, struct curl_slist **ret_resolve)
{
	char resolve[256], ca[2100];
	snprintf(resolve, sizeof(resolve), "web.demo.svc:8443:%s",
		 latch_json_get_str(json_object_get(pod, "status"), "podIP"));
	snprintf(ca, sizeof(ca), "%s/pki/vault-pki-ca.crt", stack.dir);
	*ret_resolve = curl_slist_append(NULL, resolve);
	CURL *h = curl_easy_init();
	curl_easy_setopt(h, CURLOPT_URL, "https://web.demo.svc:8443/");
	curl_easy_setopt(h, CURLOPT_RESOLVE, *ret_resolve);
	curl_easy_setopt(h, CURLOPT_CAINFO, ca);
	curl_easy_setopt(h, CURLOPT_CERTINFO, 1L);
	curl_easy_setopt(h, CURLOPT_FORBID_REUSE, 1L);
	curl_easy_setopt(h, CURLOPT_SSL_SESSIONID_CACHE, 0L);
	curl_easy_setopt(h, CURLOPT_TIMEOUT, 5L);
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, discard);
	return h;
}

static void test_node__nginx_reloads_the_renewed_certificate_and_no_request_fails(void **state)
{
	struct running w;
	char *yaml = NULL;
	if (asprintf(&yaml, nginx_yaml, node_image("NGINX")) < 0)
		fail_msg("out of memory");
	run_yaml(&w, yaml, "node-nginx", node_pod_running_ready, 120);
	struct curl_slist *resolve = NULL;
	CURL *h = nginx_client(w.pod, &resolve);

	/* A request every 100 ms for 45 s (two renewals at least): each must succeed. */
	char *first = NULL, *last = NULL;
	unsigned requests = 0, failed = 0, switches = 0;
	for (double end = stack_now() + 45; stack_now() < end && requests < 600; requests++) {
		char *serial = served_serial(h);
		if (!serial)
			failed++;
		else if (!first)
			first = strdup(serial);
		if (serial && last && strcmp(serial, last) != 0)
			switches++;
		if (serial) {
			free(last);
			last = serial;
		}
		usleep(100 * 1000);
	}
	curl_easy_cleanup(h);
	curl_slist_free_all(resolve);
	if (failed > 0)
		fail_msg("%u of %u requests failed", failed, requests);
	if (switches < 1)
		fail_msg("nginx served one certificate (serial %s) for 45 s", first ? first : "?");

	/* latch-init said what it did; nginx reloaded in place, never restarted, and never read
	 * a certificate and key that do not match. */
	json_t *pod = node_wait_pod(kube, NS, w.selector, node_pod_running_ready, NULL, 30);
	char *sidecar_log = node_logs(NS, node_pod_name(pod), "latch-init", false);
	char *nginx_log = node_logs(NS, node_pod_name(pod), "app", false);
	assert_non_null(strstr(sidecar_log, "signalled the app to reload"));
	assert_null(strstr(nginx_log, "emerg"));
	assert_null(strstr(nginx_log, "mismatch"));
	assert_int_equal(restarts(pod, "app"), 0);
	free(sidecar_log);
	free(nginx_log);
	free(first);
	free(last);
	json_decref(pod);
	stop_workload(&w);
}

/* latch.dev/exec-env (vault-k8s#14): psql gets PGUSER and PGPASSWORD as environment
 * variables from the memory volume, through latch-init exec, so the values are in no
 * manifest, Secret or argv. The logins live 10 s (role "short"): when the sidecar replaces
 * them, the wrapper restarts psql's loop in place with the new values. */
static char *exec_env_workload(void)
{
	char *yaml = NULL;
	if (asprintf(&yaml,
		     "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: node-exec, namespace: " NS "}\n"
		     "spec:\n"
		     "  replicas: 1\n"
		     "  selector: {matchLabels: {app: node-exec}}\n"
		     "  template:\n"
		     "    metadata:\n"
		     "      labels: {app: node-exec}\n"
		     "      annotations:\n"
		     "        vault.hashicorp.com/agent-inject: \"true\"\n"
		     "        vault.hashicorp.com/role: short\n"
		     "        vault.hashicorp.com/tls-secret: vault-tls\n"
		     "        vault.hashicorp.com/ca-cert: /vault/tls/ca.crt\n"
		     "        vault.hashicorp.com/agent-inject-secret-db: database/creds/short\n"
		     "        vault.hashicorp.com/agent-inject-perms-db: \"0400\"\n"
		     "        vault.hashicorp.com/agent-inject-template-db: |\n"
		     "          {{- with secret \"database/creds/short\" -}}\n"
		     "          PGUSER={{ .Data.username }}\n"
		     "          PGPASSWORD='{{ .Data.password }}'\n"
		     "          {{- end }}\n"
		     "        latch.dev/exec-env: db\n"
		     "        latch.dev/exec-on-change: restart\n"
		     "        latch.dev/exec-grace-seconds: \"2\"\n"
		     "    spec:\n"
		     "      serviceAccountName: app\n"
		     "      containers:\n"
		     "      - name: app\n"
		     "        image: %s\n"
		     "        imagePullPolicy: Never\n"
		     "        command: [sh, -c, \"while :; do psql -XtAw -c 'select current_user'; sleep 2; done\"]\n"
		     "        env:\n"
		     "        - {name: PGHOST, value: '%s'}\n"
		     "        - {name: PGPORT, value: '%s'}\n"
		     "        - {name: PGDATABASE, value: demo}\n"
		     "        - {name: PGCONNECT_TIMEOUT, value: '5'}\n",
		     node_image("PSQL"), getenv("LATCH_POD_PG_HOST") ?: "", getenv("LATCH_PG_PORT") ?: "") < 0)
		fail_msg("out of memory");
	return yaml;
}

/* The value after "PGPASSWORD='" in the env file latch-init wrote. */
static char *exec_password_on_node(const json_t *pod)
{
	return value_on_node(pod, "db", "PGPASSWORD='", "'");
}

/* A file of /proc/<pid> on the node, NULs made newlines. */
static char *proc_file(long pid, const char *name)
{
	char path[128];
	snprintf(path, sizeof(path), "/proc/%ld/%s", pid, name);
	FILE *f = fopen(path, "r");
	if (!f)
		fail_msg("cannot read %s", path);
	char *text = calloc(1, 1 << 16);
	size_t n = fread(text, 1, (1 << 16) - 1, f);
	fclose(f);
	for (size_t i = 0; i < n; i++)
		if (text[i] == '\0')
			text[i] = '\n';
	return text;
}

static void test_node__exec_env_gives_psql_its_login_in_the_environment_only(void **state)
{
	/* Logins live 10 s, renewable to 20 s at most: then only new ones do. */
	stack_vault_db_role("short", "10s", "20s");
	struct running w;
	run_yaml(&w, exec_env_workload(), "node-exec", node_pod_running_ready, 120);
	char *users = wait_for_second_user(&w);
	json_t *pod = node_wait_pod(kube, NS, w.selector, node_pod_running_ready, NULL, 30);
	assert_int_equal(restarts(pod, "app"), 0); /* restarted in place by the wrapper */

	/* The app's container runs the wrapper: its argv names files, its own environment holds
	 * no value; the manifest holds none either. */
	char *password = exec_password_on_node(pod);
	long wrapper = node_container_pid(pod, "app");
	char *cmdline = proc_file(wrapper, "cmdline"), *environ_text = proc_file(wrapper, "environ");
	assert_non_null(strstr(cmdline, "latch-init"));
	assert_null(strstr(cmdline, password));
	assert_null(strstr(environ_text, "PGPASSWORD"));
	char *manifest = json_dumps(pod, 0);
	assert_null(strstr(manifest, password));
	assert_secret_nowhere(pod, password);
	explicit_bzero(password, strlen(password));
	free(password);
	free(manifest);
	free(cmdline);
	free(environ_text);
	free(users);
	json_decref(pod);
	stop_workload(&w);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_node__native_sidecar_gates_the_app_which_logs_in_with_psql),
		cmocka_unit_test(test_node__runc_confines_latch_init),
		cmocka_unit_test(test_node__job_with_pre_populate_only_completes),
		cmocka_unit_test(test_node__fs_group_pod_reads_its_0640_files),
		cmocka_unit_test_teardown(test_node__vault_sealed_at_pod_start_then_unsealed, unseal_after),
		cmocka_unit_test(test_node__killed_sidecar_is_restarted_and_the_app_keeps_running),
		cmocka_unit_test(test_node__short_lived_login_is_replaced_and_the_app_uses_the_new_one),
		cmocka_unit_test(test_node__missing_latch_init_image_is_named_and_the_app_waits),
		cmocka_unit_test(test_node__node_daemons_restart_while_the_sidecar_runs),
		cmocka_unit_test(test_node__latch_sync_in_the_cluster_deploys_a_working_app),
		cmocka_unit_test(test_node__nginx_reloads_the_renewed_certificate_and_no_request_fails),
		cmocka_unit_test(test_node__exec_env_gives_psql_its_login_in_the_environment_only),
	};
	/* LATCH_TEST_FILTER=test_node__nginx* runs only the tests it matches. */
	if (getenv("LATCH_TEST_FILTER"))
		cmocka_set_test_filter(getenv("LATCH_TEST_FILTER"));
	return cmocka_run_group_tests(tests, setup, teardown);
}
