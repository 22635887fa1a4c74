/* The story `make demo` tells, as a test: dev/demo runs it on the stack's node, and this
 * checks, through the API server, the node and the database, what the demo claims: the
 * guestbook from examples/gitops-repo runs with latch-init injected, its worker logged in
 * with a login Vault made for its pod, the CronJob's Job runs with pre-populate-only, and
 * after the prune and the `git revert` the Service is back at the repository's head.
 * Then promotion: a change on main reaches staging at once and production only when it is
 * merged into the production branch that production's latch-sync follows. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gitops.h"
#include "latch/file.h"
#include "node.h"
#include "stack.h"

#define STAGING "guestbook-staging"
#define PRODUCTION "guestbook-production"
#define AGENTS "latch-system"

extern char **environ;

static struct latch_k8s *kube;

static int setup(void **state)
{
	stack_load(state);
	kube = node_kube();
	return 0;
}

/* Staging's agent stops, so the suites after this one run on a quiet cluster. */
static int teardown(void **state)
{
	if (!kube)
		return 0;
	json_t *agent = json_pack("[{s:s,s:s,s:{s:s,s:s}}]", "apiVersion", "apps/v1", "kind", "Deployment",
				  "metadata", "name", "latch-sync", "namespace", AGENTS);
	node_delete_all(kube, agent);
	json_decref(agent);
	latch_k8s_free(kube);
	return 0;
}

static const char *source_root(void)
{
	return getenv("LATCH_SOURCE_ROOT") ?: ".";
}

/* A field of the inventory latch-sync keeps for CONFIG's SOURCE; NULL when there is none. */
static char *inventory(const char *config, const char *source, const char *key)
{
	char name[256];
	snprintf(name, sizeof(name), "latch-sync.%s.%s", config, source);
	return gitops_configmap_value(kube, AGENTS, name, key);
}

static bool applied_healthy(const char *config, const char *source, const char *rev)
{
	char *applied = inventory(config, source, "lastAppliedRevision");
	char *result = inventory(config, source, "result");
	bool ok = applied && result && strcmp(applied, rev) == 0 && strncmp(result, "Applied: ", 9) == 0;
	free(applied);
	free(result);
	return ok;
}

static void wait_applied(const char *config, const char *source, const char *rev, double timeout_s)
{
	double end = stack_now() + timeout_s;
	while (!applied_healthy(config, source, rev)) {
		if (stack_now() > end) {
			char *result = inventory(config, source, "result");
			fail_msg("%s/%s did not apply %s healthy within %.0f s; last result: %s", config, source, rev,
				 timeout_s, result ? result : "(none)");
		}
		usleep(500 * 1000);
	}
}

/* The head of BRANCH in the stack's git server's copy of the demo repository. */
static char *server_rev(const char *branch)
{
	char dir[1024];
	snprintf(dir, sizeof(dir), "%s/gitops.git", getenv("LATCH_GIT_ROOT"));
	return gitops_rev(dir, branch);
}

/* user and password from a .pgpass line host:port:db:user:password */
static void pgpass_login(const char *pgpass, char **ret_user, char **ret_password)
{
	const char *p = pgpass;
	for (int field = 0; field < 3 && p; field++)
		p = strchr(p, ':') ? strchr(p, ':') + 1 : NULL;
	assert_non_null(p);
	const char *colon = strchr(p, ':');
	assert_non_null(colon);
	*ret_user = strndup(p, (size_t)(colon - p));
	*ret_password = strndup(colon + 1, strcspn(colon + 1, "\n"));
}

/* How many visits USER wrote, asked as USER (the login must work for this). */
static long visits_by(const char *user, const char *password)
{
	char *dir = stack_mkdtemp("latch-e2e-story-psql");
	char out[1024];
	snprintf(out, sizeof(out), "%s/out", dir);
	int status = stack_psql_as(user, password, "SELECT count(*) FROM visits WHERE db_user = current_user", out);
	char *text = stack_read_file(out);
	long n = status == 0 && text ? strtol(text, NULL, 10) : -1;
	free(text);
	stack_rm_rf(dir);
	free(dir);
	return n;
}

static const json_t *only_init_container(const json_t *pod_spec)
{
	const json_t *inits = json_object_get(pod_spec, "initContainers");
	assert_int_equal(json_array_size(inits), 1);
	return json_array_get(inits, 0);
}

static void assert_no_container_named(const json_t *pod_spec, const char *name)
{
	const json_t *c;
	size_t i;
	json_array_foreach(json_object_get(pod_spec, "containers"), i, c)
		assert_string_not_equal(latch_json_get_str(c, "name"), name);
}

static void run_demo_story(char **ret_log)
{
	char cmd[1024], log[1024];
	snprintf(cmd, sizeof(cmd), "%s/dev/demo", source_root());
	char *dir = stack_mkdtemp("latch-e2e-story");
	snprintf(log, sizeof(log), "%s/demo.log", dir);
	char *argv[] = { cmd, "story", NULL };
	int status = stack_run(argv, environ, log, 400, NULL);
	*ret_log = stack_read_file(log);
	if (status != 0) {
		fprintf(stderr, "%s", *ret_log ? *ret_log : "");
		fail_msg("dev/demo story failed (%d); its output is above", status);
	}
	stack_rm_rf(dir);
	free(dir);
}

/* The CronJob's template, run once as a Job now (what `kubectl create job --from` does). */
static json_t *job_from_cronjob(const json_t *cronjob)
{
	json_t *spec = json_deep_copy(latch_json_path(cronjob, "spec.jobTemplate.spec"));
	return json_pack("[{s:s,s:s,s:{s:s,s:s},s:o}]", "apiVersion", "batch/v1", "kind", "Job", "metadata", "name",
			 "guestbook-report-now", "namespace", STAGING, "spec", spec);
}

static void test_story__demo_tells_the_story_and_the_cluster_shows_it(void **state)
{
	char *log = NULL;
	run_demo_story(&log);
	assert_non_null(strstr(log, "demo: it worked: 10 steps"));

	/* The Deployment as stored: latch-init as a native sidecar, added by latch-sync. */
	json_t *deployment = gitops_get(kube, "apps/v1", "Deployment", STAGING, "guestbook");
	const json_t *spec = latch_json_path(deployment, "spec.template.spec");
	const json_t *init = only_init_container(spec);
	assert_string_equal(latch_json_get_str(init, "name"), "latch-init");
	assert_string_equal(latch_json_get_str(init, "restartPolicy"), "Always");

	/* The CronJob: latch-init only before the report (a Job must end), and the report runs. */
	json_t *cronjob = gitops_get(kube, "batch/v1", "CronJob", STAGING, "guestbook-report");
	const json_t *job_spec = latch_json_path(cronjob, "spec.jobTemplate.spec.template.spec");
	const json_t *job_init = only_init_container(job_spec);
	assert_string_equal(latch_json_get_str(job_init, "name"), "latch-init");
	assert_null(json_object_get(job_init, "restartPolicy"));
	assert_no_container_named(job_spec, "latch-init");
	json_t *job = job_from_cronjob(cronjob);
	node_delete_all(kube, job);
	node_wait_no_pods(kube, STAGING, "job-name%3Dguestbook-report-now", 60);
	node_apply_all(kube, job);
	json_t *report = node_wait_pod(kube, STAGING, "job-name%3Dguestbook-report-now", node_pod_succeeded, NULL,
				       120);
	char *report_log = node_logs(STAGING, node_pod_name(report), "report", false);
	assert_non_null(strstr(report_log, " visits, the last at "));

	/* The app's pod: its worker wrote visits with the login in its .pgpass, which works. */
	json_t *pod = node_wait_pod(kube, STAGING, "app.kubernetes.io%2Fcomponent%3Dweb", node_pod_running_ready,
				    NULL, 60);
	char *secrets = node_volume_dir(pod, "latch-secrets");
	char path[2300];
	snprintf(path, sizeof(path), "%s/.pgpass", secrets);
	char *pgpass = stack_read_file(path);
	assert_non_null(pgpass);
	char *user, *password;
	pgpass_login(pgpass, &user, &password);
	assert_true(visits_by(user, password) >= 1);
	assert_non_null(strstr(log, user));
	assert_null(strstr(log, password)); /* the demo shows names and sizes, never a value */

	/* After the prune and the revert: the Service is back, at the repository's head. */
	json_t *service = gitops_get(kube, "v1", "Service", STAGING, "guestbook");
	assert_non_null(service);
	char *head = server_rev("main");
	assert_true(applied_healthy("staging", "guestbook", head));

	explicit_bzero(password, strlen(password));
	explicit_bzero(pgpass, strlen(pgpass));
	free(user);
	free(password);
	free(pgpass);
	free(secrets);
	free(head);
	free(report_log);
	json_decref(service);
	json_decref(pod);
	json_decref(report);
	json_decref(job);
	json_decref(cronjob);
	json_decref(deployment);
	free(log);
}

/* production's latch-sync, next to staging's in the one cluster the stack has: the
 * examples/sync/production overlay under other names (in its own cluster it would need none). */
static json_t *production_agent(char **ret_dir)
{
	char *dir = stack_mkdtemp("latch-e2e-story-production");
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
		 "printf 'resources: [%%s]\\nnameSuffix: -production\\nlabels:\\n"
		 "- pairs: {latch.dev/cluster: production}\\n  includeSelectors: true\\n' "
		 "\"$(realpath --relative-to=. '%s/examples/sync/production')\" > kustomization.yaml && "
		 "'%s' build . > agent.yaml",
		 source_root(), getenv("KUSTOMIZE_BIN"));
	gitops_sh(dir, cmd);
	char path[1024];
	snprintf(path, sizeof(path), "%s/agent.yaml", dir);
	char *text = stack_read_file(path);
	json_t *docs = node_parse_yaml(text, path);
	free(text);
	assert_string_equal(latch_json_get_str(json_array_get(docs, 0), "kind"), "Namespace");
	*ret_dir = dir;
	return docs;
}

static size_t guestbook_passes(const json_t *agent_pod)
{
	char *log = node_logs(AGENTS, node_pod_name(agent_pod), "latch-sync", false);
	size_t n = 0;
	for (const char *p = log; (p = strstr(p, "\"msg\":\"synced\",\"source\":\"guestbook\"")); p++)
		n++;
	free(log);
	return n;
}

static char *configmap_of(const char *ns)
{
	json_t *d = gitops_get(kube, "apps/v1", "Deployment", ns, "guestbook");
	const json_t *v;
	size_t i;
	char *name = NULL;
	json_array_foreach(latch_json_path(d, "spec.template.spec.volumes"), i, v)
		if (strcmp(latch_json_get_str(v, "name"), "config") == 0)
			name = strdup(latch_json_get_str(json_object_get(v, "configMap"), "name"));
	json_decref(d);
	assert_non_null(name);
	return name;
}

static bool serves_v2(const char *ns)
{
	char *name = configmap_of(ns);
	char *conf = gitops_configmap_value(kube, ns, name, "nginx.conf");
	bool v2 = conf && strstr(conf, "guestbook v2");
	free(conf);
	free(name);
	return v2;
}

/* After the story: its repository is on the git server, staging's agent runs. */
static void test_story__a_change_reaches_production_only_when_merged(void **state)
{
	char *agent_dir = NULL;
	json_t *agent = production_agent(&agent_dir);
	node_apply_all(kube, agent);
	char *first = server_rev("production");
	wait_applied("production", "guestbook", first, 180);
	json_t *prod_agent = node_wait_pod(kube, AGENTS, "latch.dev%2Fcluster%3Dproduction", node_pod_running_ready,
					   NULL, 60);
	assert_false(serves_v2(PRODUCTION));

	/* A change on main: staging gets it. */
	char *dir = stack_mkdtemp("latch-e2e-story-clone");
	char cmd[4096];
	snprintf(cmd, sizeof(cmd),
		 "git clone -q -b main '%s/gitops.git' repo && cd repo && "
		 "sed -i 's/guestbook: signed/guestbook v2: signed/' base/config/nginx.conf && "
		 "git commit -qam 'guestbook v2' && git push -q origin main",
		 getenv("LATCH_GIT_ROOT"));
	gitops_sh(dir, cmd);
	char *change = server_rev("main");
	size_t passes_before = guestbook_passes(prod_agent);
	wait_applied("staging", "guestbook", change, 120);
	assert_true(serves_v2(STAGING));

	/* Production passed over its branch twice since (one whole pass after the push) and
	 * still has the first revision. */
	double end = stack_now() + 90;
	while (guestbook_passes(prod_agent) < passes_before + 2) {
		if (stack_now() > end)
			fail_msg("production's latch-sync made no pass in 90 s");
		usleep(500 * 1000);
	}
	char *prod_applied = inventory("production", "guestbook", "lastAppliedRevision");
	assert_string_equal(prod_applied, first);
	assert_false(serves_v2(PRODUCTION));

	/* Promotion: merge main into production. */
	snprintf(cmd, sizeof(cmd),
		 "cd repo && git checkout -q -b production origin/production && "
		 "git merge -q --no-ff -m 'promote guestbook v2 to production' main && git push -q origin production");
	gitops_sh(dir, cmd);
	char *promoted = server_rev("production");
	wait_applied("production", "guestbook", promoted, 180);
	assert_true(serves_v2(PRODUCTION));

	json_array_remove(agent, 0); /* the Namespace, which staging's agent shares */
	node_delete_all(kube, agent);
	free(prod_applied);
	free(promoted);
	free(change);
	free(first);
	json_decref(prod_agent);
	json_decref(agent);
	stack_rm_rf(dir);
	free(dir);
	stack_rm_rf(agent_dir);
	free(agent_dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_story__demo_tells_the_story_and_the_cluster_shows_it),
		cmocka_unit_test(test_story__a_change_reaches_production_only_when_merged),
	};
	return cmocka_run_group_tests(tests, setup, teardown);
}
