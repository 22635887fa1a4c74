/* The agent runs long and flat: LATCH_SOAK_PASSES (10,000 by default) back-to-back passes of
 * `latch-sync run` over an unchanged repository. In the plain build resident memory stays
 * where it was after the first tenth of the passes; in the ASan build LeakSanitizer finds
 * nothing at exit (its verdict is the exit status). Nothing is written: the objects and the
 * inventory keep their resourceVersions. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gitops.h"
#include "stack.h"

#define OBJECTS 30

static void write_repo(const char *dir)
{
	size_t cap = 4096 + OBJECTS * 512;
	char *text = malloc(cap);
	size_t len = (size_t)snprintf(text, cap, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: soak\n");
	for (int i = 0; i < OBJECTS; i++)
		len += (size_t)snprintf(text + len, cap - len,
					"---\napiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings-%d, namespace: soak}\ndata: {n: \"%d\"}\n"
					"---\napiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app-%d, namespace: soak}\nspec:\n"
					"  selector: {matchLabels: {app: app-%d}}\n  template:\n    metadata: {labels: {app: app-%d}}\n"
					"    spec: {containers: [{name: app, image: registry.example/app:%d}]}\n",
					i, i, i, i, i, i);
	char path[1024];
	snprintf(path, sizeof(path), "%s/repo/apps.yaml", dir);
	stack_write_file(path, text);
	free(text);
	gitops_sh(dir, "cd repo && git add -A && git commit -qm soak");
}

static char *resource_version(struct latch_k8s *k, const char *kind, const char *ns, const char *name)
{
	json_t *obj = gitops_get(k, "v1", kind, ns, name);
	assert_non_null(obj);
	char *rv = strdup(json_string_value(latch_json_path(obj, "metadata.resourceVersion")));
	json_decref(obj);
	return rv;
}

static void test_soak__passes_over_an_unchanged_repository(void **state)
{
	long passes = getenv("LATCH_SOAK_PASSES") ? strtol(getenv("LATCH_SOAK_PASSES"), NULL, 10) : 10000;
	assert_true(passes >= 100);
	char *dir = stack_mkdtemp("latch-e2e-soak");
	char config[1024], log[1024], text[4096];
	snprintf(config, sizeof(config), "%s/sync.yaml", dir);
	snprintf(log, sizeof(log), "%s/sync.log", dir);
	gitops_sh(dir, "mkdir repo && cd repo && git init -q -b main");
	write_repo(dir);
	snprintf(text, sizeof(text),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: soak}\nspec:\n  namespace: latch-system\n"
		 "  cacheDir: %s/cache\n  sources:\n  - name: apps\n    url: file://%s/repo\n    ref: {branch: main}\n    healthCheck: false\n",
		 dir, dir);
	stack_write_file(config, text);
	assert_int_equal(gitops_sync("once", config, getenv("KUBECONFIG"), log), 0);
	struct latch_k8s *k = gitops_kube(getenv("KUBECONFIG"));
	char *inventory_rv = resource_version(k, "ConfigMap", "latch-system", "latch-sync.soak.apps");
	char *object_rv = resource_version(k, "ConfigMap", "soak", "settings-7");

	char max_passes[32];
	snprintf(max_passes, sizeof(max_passes), "%ld", passes);
	/* file:// only: no libgit2 ssh frames to suppress, so ASan's fast unwinder will do. */
	pid_t pid = gitops_spawn_with(config, getenv("KUBECONFIG"), log, (const char *const[]){ "--max-passes", max_passes, "--interval", "0", NULL },
				      false);
	long early = -1, late = -1;
	double start = stack_now(), end = start + 3000;
	size_t done = 0;
	while (stack_now() < end && done < (size_t)passes) {
		struct timespec pause = { 1, 0 };
		nanosleep(&pause, NULL);
		done = gitops_count_in(log, "synced source=apps");
		long now = gitops_rss_kib(pid);
		if (early < 0 && done >= (size_t)passes / 10)
			early = now;
		if (early >= 0 && now > late)
			late = now;
	}
	assert_int_equal(stack_wait(pid, 60), 0); /* under ASan: LeakSanitizer found nothing */
	double seconds = stack_now() - start;
	assert_int_equal(gitops_count_in(log, "synced source=apps"), (size_t)passes + 1);
	assert_int_equal(gitops_count_in(log, "sync failed"), 0);
	printf("# %ld passes in %.0f s (%.1f ms each); RSS %ld KiB after a tenth, at most %ld KiB after\n", passes, seconds,
	       seconds * 1000 / (double)passes, early, late);
#ifndef __SANITIZE_ADDRESS__
	/* ASan's quarantine keeps freed memory resident: RSS says something only here. */
	assert_true(early > 0);
	if (late - early > 1024)
		fail_msg("RSS grew from %ld KiB after %ld passes to %ld KiB", early, passes / 10, late);
#endif
	char *inventory_after = resource_version(k, "ConfigMap", "latch-system", "latch-sync.soak.apps");
	char *object_after = resource_version(k, "ConfigMap", "soak", "settings-7");
	assert_string_equal(inventory_after, inventory_rv);
	assert_string_equal(object_after, object_rv);
	free(inventory_rv);
	free(object_rv);
	free(inventory_after);
	free(object_after);
	latch_k8s_free(k);
	stack_rm_rf(dir);
	free(dir);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_soak__passes_over_an_unchanged_repository),
	};
	return cmocka_run_group_tests(tests, stack_load, NULL);
}
