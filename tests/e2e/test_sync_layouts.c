/* The four multi-cluster repository layouts, each synced by latch-sync into two clusters (the
 * stack's two kube-apiservers): repo per cluster, branch per cluster (promotion is a merge),
 * directory per cluster, and a kustomize overlay per cluster over a shared base. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gitops.h"
#include "stack.h"

enum { STAGING, PRODUCTION };
static const char *const cluster_names[] = { "staging", "production" };

static const char *kubeconfig_of(int cluster)
{
	const char *path = getenv(cluster == STAGING ? "KUBECONFIG" : "LATCH_KUBECONFIG_2");
	if (!path)
		fail_msg("%s is not set (the stack's second cluster; source .stack/env)", cluster == STAGING ? "KUBECONFIG" : "LATCH_KUBECONFIG_2");
	return path;
}

struct layout {
	const char *name; /* with the cluster's, names the SyncConfig: an inventory per layout */
	char *dir;
	char config[2][1024];
	char log[2][1024];
};

static void layout_init(struct layout *l, const char *name)
{
	l->name = name;
	l->dir = stack_mkdtemp("latch-e2e-layout");
	for (int c = 0; c < 2; c++)
		snprintf(l->log[c], sizeof(l->log[c]), "%s/%s.log", l->dir, cluster_names[c]);
}

static void layout_done(struct layout *l)
{
	stack_rm_rf(l->dir);
	free(l->dir);
}

static void put(const struct layout *l, const char *rel, const char *text)
{
	char path[1024], mkdir[1200];
	snprintf(path, sizeof(path), "%s/%s", l->dir, rel);
	snprintf(mkdir, sizeof(mkdir), "mkdir -p \"$(dirname '%s')\"", path);
	gitops_sh(l->dir, mkdir);
	stack_write_file(path, text);
}

static void init_repo(const struct layout *l, const char *name, const char *branch)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "mkdir -p '%s' && cd '%s' && git init -q -b '%s'", name, name, branch);
	gitops_sh(l->dir, cmd);
}

static void commit_all(const struct layout *l, const char *repo, const char *message)
{
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "cd '%s' && git add -A && git commit -qm '%s'", repo, message);
	gitops_sh(l->dir, cmd);
}

/* The app's manifests: a Namespace and a ConfigMap saying which version and cluster. */
static void put_app(const struct layout *l, const char *rel, const char *ns, const char *version, const char *cluster)
{
	char text[2048];
	snprintf(text, sizeof(text),
		 "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n---\n"
		 "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\n  namespace: %s\ndata:\n  version: \"%s\"\n  cluster: %s\n",
		 ns, ns, version, cluster);
	put(l, rel, text);
}

/* One cluster's SyncConfig: repo (a directory under the layout), branch, path, render. */
static void configure(struct layout *l, int cluster, const char *repo, const char *branch, const char *path, const char *render)
{
	snprintf(l->config[cluster], sizeof(l->config[cluster]), "%s/%s.yaml", l->dir, cluster_names[cluster]);
	char text[4096];
	snprintf(text, sizeof(text),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: %s-%s}\nspec:\n  namespace: latch-system\n"
		 "  cacheDir: %s/cache-%s\n  sources:\n  - name: apps\n    url: file://%s/%s\n    ref: {branch: %s}\n"
		 "    path: %s\n    render: %s\n    kustomizePath: %s\n",
		 l->name, cluster_names[cluster], l->dir, cluster_names[cluster], l->dir, repo, branch, path, render,
		 getenv("KUSTOMIZE_BIN") ? getenv("KUSTOMIZE_BIN") : "kustomize");
	stack_write_file(l->config[cluster], text);
}

static void sync_both(const struct layout *l)
{
	for (int c = 0; c < 2; c++) {
		int status = gitops_sync("once", l->config[c], kubeconfig_of(c), l->log[c]);
		if (status != 0) {
			char *log = stack_read_file(l->log[c]);
			fail_msg("latch-sync once for %s exited %d:\n%s", cluster_names[c], status, log ? log : "");
		}
	}
}

/* What the app's ConfigMap says in a cluster: "<version>@<cluster>", or "missing". */
static char *deployed(int cluster, const char *ns)
{
	struct latch_k8s *k = gitops_kube(kubeconfig_of(cluster));
	char *version = gitops_configmap_value(k, ns, "app-config", "version");
	char *where = gitops_configmap_value(k, ns, "app-config", "cluster");
	char text[512];
	snprintf(text, sizeof(text), "%s@%s", version ? version : "missing", where ? where : "missing");
	free(version);
	free(where);
	latch_k8s_free(k);
	return strdup(text);
}

static void expect(int cluster, const char *ns, const char *want)
{
	char *got = deployed(cluster, ns);
	if (strcmp(got, want) != 0)
		fail_msg("%s: %s/app-config is %s, expected %s", cluster_names[cluster], ns, got, want);
	free(got);
}

static char *applied_revision(const struct layout *l, int cluster)
{
	struct latch_k8s *k = gitops_kube(kubeconfig_of(cluster));
	char inventory[256];
	snprintf(inventory, sizeof(inventory), "latch-sync.%s-%s.apps", l->name, cluster_names[cluster]);
	char *rev = gitops_configmap_value(k, "latch-system", inventory, "lastAppliedRevision");
	latch_k8s_free(k);
	return rev;
}

static void test_layout__repo_per_cluster(void **state)
{
	struct layout l;
	layout_init(&l, "repo");
	init_repo(&l, "staging-repo", "main");
	init_repo(&l, "production-repo", "main");
	put_app(&l, "staging-repo/app.yaml", "layout-repo", "1", "staging");
	put_app(&l, "production-repo/app.yaml", "layout-repo", "1", "production");
	commit_all(&l, "staging-repo", "v1");
	commit_all(&l, "production-repo", "v1");
	configure(&l, STAGING, "staging-repo", "main", ".", "plain");
	configure(&l, PRODUCTION, "production-repo", "main", ".", "plain");
	sync_both(&l);
	expect(STAGING, "layout-repo", "1@staging");
	expect(PRODUCTION, "layout-repo", "1@production");

	/* A change to the staging repository reaches staging only. */
	put_app(&l, "staging-repo/app.yaml", "layout-repo", "2", "staging");
	commit_all(&l, "staging-repo", "v2");
	sync_both(&l);
	expect(STAGING, "layout-repo", "2@staging");
	expect(PRODUCTION, "layout-repo", "1@production");
	layout_done(&l);
}

static void test_layout__branch_per_cluster_promotion_by_merge(void **state)
{
	struct layout l;
	layout_init(&l, "branch");
	init_repo(&l, "repo", "staging");
	put_app(&l, "repo/app.yaml", "layout-branch", "1", "any");
	commit_all(&l, "repo", "v1");
	gitops_sh(l.dir, "cd repo && git branch production");
	configure(&l, STAGING, "repo", "staging", ".", "plain");
	configure(&l, PRODUCTION, "repo", "production", ".", "plain");
	sync_both(&l);
	expect(STAGING, "layout-branch", "1@any");
	expect(PRODUCTION, "layout-branch", "1@any");

	put_app(&l, "repo/app.yaml", "layout-branch", "2", "any");
	commit_all(&l, "repo", "v2");
	sync_both(&l);
	expect(STAGING, "layout-branch", "2@any");
	expect(PRODUCTION, "layout-branch", "1@any");

	/* Promotion: merge staging into production. */
	gitops_sh(l.dir, "cd repo && git checkout -q production && git merge -q --no-ff -m promote staging && git checkout -q staging");
	sync_both(&l);
	expect(PRODUCTION, "layout-branch", "2@any");
	char repo[1024];
	snprintf(repo, sizeof(repo), "%s/repo", l.dir);
	char *want = gitops_rev(repo, "production"), *got = applied_revision(&l, PRODUCTION);
	assert_non_null(got);
	assert_string_equal(got, want);
	free(want);
	free(got);
	layout_done(&l);
}

static void test_layout__directory_per_cluster(void **state)
{
	struct layout l;
	layout_init(&l, "dir");
	init_repo(&l, "repo", "main");
	put_app(&l, "repo/clusters/staging/app.yaml", "layout-dir", "1", "staging");
	put_app(&l, "repo/clusters/production/app.yaml", "layout-dir", "1", "production");
	commit_all(&l, "repo", "v1");
	configure(&l, STAGING, "repo", "main", "clusters/staging", "plain");
	configure(&l, PRODUCTION, "repo", "main", "clusters/production", "plain");
	sync_both(&l);
	expect(STAGING, "layout-dir", "1@staging");
	expect(PRODUCTION, "layout-dir", "1@production");

	/* A commit that touches only staging's folder changes nothing in production. */
	struct latch_k8s *k = gitops_kube(kubeconfig_of(PRODUCTION));
	json_t *before = gitops_get(k, "v1", "ConfigMap", "layout-dir", "app-config");
	put_app(&l, "repo/clusters/staging/app.yaml", "layout-dir", "2", "staging");
	commit_all(&l, "repo", "v2 staging");
	sync_both(&l);
	expect(STAGING, "layout-dir", "2@staging");
	expect(PRODUCTION, "layout-dir", "1@production");
	json_t *after = gitops_get(k, "v1", "ConfigMap", "layout-dir", "app-config");
	assert_string_equal(json_string_value(latch_json_path(after, "metadata.resourceVersion")),
			    json_string_value(latch_json_path(before, "metadata.resourceVersion")));
	json_decref(before);
	json_decref(after);
	latch_k8s_free(k);

	/* Promotion: the same change in production's folder. */
	put_app(&l, "repo/clusters/production/app.yaml", "layout-dir", "2", "production");
	commit_all(&l, "repo", "v2 production");
	sync_both(&l);
	expect(PRODUCTION, "layout-dir", "2@production");
	layout_done(&l);
}

static void put_overlay(const struct layout *l, const char *cluster)
{
	char rel[256], text[1024];
	snprintf(rel, sizeof(rel), "repo/overlays/%s/kustomization.yaml", cluster);
	snprintf(text, sizeof(text),
		 "namespace: layout-kust\nresources: [../../base, namespace.yaml]\npatches:\n- patch: |-\n"
		 "    apiVersion: v1\n    kind: ConfigMap\n    metadata: {name: app-config}\n    data: {cluster: %s}\n",
		 cluster);
	put(l, rel, text);
	snprintf(rel, sizeof(rel), "repo/overlays/%s/namespace.yaml", cluster);
	put(l, rel, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: layout-kust\n");
}

static void put_base(const struct layout *l, const char *version)
{
	char text[512];
	snprintf(text, sizeof(text), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app-config\ndata:\n  version: \"%s\"\n  cluster: base\n",
		 version);
	put(l, "repo/base/app.yaml", text);
	put(l, "repo/base/kustomization.yaml", "resources: [app.yaml]\n");
}

static void test_layout__kustomize_overlay_per_cluster(void **state)
{
	if (!getenv("KUSTOMIZE_BIN"))
		fail_msg("KUSTOMIZE_BIN is not set (dev/stack writes it to .stack/env)");
	struct layout l;
	layout_init(&l, "kust");
	init_repo(&l, "repo", "main");
	put_base(&l, "1");
	put_overlay(&l, "staging");
	put_overlay(&l, "production");
	commit_all(&l, "repo", "v1");
	configure(&l, STAGING, "repo", "main", "overlays/staging", "kustomize");
	configure(&l, PRODUCTION, "repo", "main", "overlays/production", "kustomize");
	sync_both(&l);
	expect(STAGING, "layout-kust", "1@staging");
	expect(PRODUCTION, "layout-kust", "1@production");

	/* A change to the base reaches both clusters, each with its overlay. */
	put_base(&l, "2");
	commit_all(&l, "repo", "v2");
	sync_both(&l);
	expect(STAGING, "layout-kust", "2@staging");
	expect(PRODUCTION, "layout-kust", "2@production");

	/* kustomize refuses a file linked from outside its root, but not a folder: a link to a
	 * kustomization outside the checkout (the agent's own files) would be built and applied.
	 * It stops the revision before kustomize runs, and nothing of it is applied. */
	put(&l, "outside/kustomization.yaml", "resources: [cm.yaml]\n");
	put(&l, "outside/cm.yaml",
	    "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: leaked\ndata:\n  from: agent\n");
	char cmd[1024];
	snprintf(cmd, sizeof(cmd), "ln -s '%s/outside' repo/base/extra", l.dir);
	gitops_sh(l.dir, cmd);
	put_base(&l, "3");
	put(&l, "repo/base/kustomization.yaml", "resources: [app.yaml, extra]\n");
	commit_all(&l, "repo", "v3 with a link out");
	assert_int_not_equal(gitops_sync("once", l.config[STAGING], kubeconfig_of(STAGING), l.log[STAGING]), 0);
	char *log = stack_read_file(l.log[STAGING]);
	if (!log || !strstr(log, "the symlink 'base/extra' leads out of the repository"))
		fail_msg("latch-sync's log does not name the link:\n%s", log ? log : "");
	free(log);
	expect(STAGING, "layout-kust", "2@staging");
	struct latch_k8s *k = gitops_kube(kubeconfig_of(STAGING));
	char *leaked = gitops_configmap_value(k, "layout-kust", "leaked", "from");
	latch_k8s_free(k);
	assert_null(leaked);
	layout_done(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_layout__repo_per_cluster),
		cmocka_unit_test(test_layout__branch_per_cluster_promotion_by_merge),
		cmocka_unit_test(test_layout__directory_per_cluster),
		cmocka_unit_test(test_layout__kustomize_overlay_per_cluster),
	};
	return cmocka_run_group_tests(tests, stack_load, NULL);
}
