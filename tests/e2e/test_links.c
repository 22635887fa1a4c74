/* latch over a real link that goes bad. The test owns a network namespace joined to the
 * stack's by a veth pair (10.251.0.0/16, inside the stack's namespace, which has no route
 * out); latch-init and latch-sync run in it and reach Vault, the kube-apiserver and the git
 * server at the node's address through that link only. The link is then made slow and lossy
 * (300 ms each way out, 20% of packets dropped) or cut (every packet dropped, a black hole).
 *
 * This kernel has no netem qdisc, so loss and cuts are iptables rules in the test's
 * namespace (statistic, DROP) and the latency is link-delay, which holds each packet sent to
 * NFQUEUE for 300 ms. */
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
#include <time.h>
#include <unistd.h>

#include "gitops.h"
#include "stack.h"

#define DELAY_QUEUE "7"

struct link {
	char netns[32];
	char host_if[16], ns_if[16]; /* the veth ends: in the stack's namespace, in the test's */
	char host_ip[20], ns_ip[20];
	char hosts_dir[64];          /* /etc/netns/NETNS: ip netns exec mounts its hosts file */
	char *dir;                   /* scratch: logs, configs */
	pid_t delay_pid;
};

static struct link lk;

static void sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void sh(const char *fmt, ...)
{
	char cmd[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(cmd, sizeof(cmd), fmt, ap);
	va_end(ap);
	char *argv[] = { "/bin/sh", "-c", cmd, NULL };
	char *envp[] = { "PATH=/usr/sbin:/usr/bin:/sbin:/bin", NULL };
	char log[1024];
	snprintf(log, sizeof(log), "%s/sh.log", lk.dir);
	if (stack_run(argv, envp, log, 30, NULL) != 0) {
		char *out = stack_read_file(log);
		fail_msg("failed: %s\n%s", cmd, out ? out : "");
	}
}

static const char *node_ip(void)
{
	const char *ip = getenv("LATCH_NODE_IP");
	if (!ip)
		fail_msg("LATCH_NODE_IP is not set (source .stack/env)");
	return ip;
}

static int link_up(void **state)
{
	int r = stack_load(state);
	if (r != 0)
		return r;
	unsigned block = (unsigned)getpid() % 16384; /* a /30 of 10.251.0.0/16 per run */
	snprintf(lk.netns, sizeof(lk.netns), "latch-link-%d", (int)getpid());
	snprintf(lk.host_if, sizeof(lk.host_if), "lk%da", (int)getpid() % 1000000);
	snprintf(lk.ns_if, sizeof(lk.ns_if), "lk%db", (int)getpid() % 1000000);
	snprintf(lk.host_ip, sizeof(lk.host_ip), "10.251.%u.%u", block / 64, (block % 64) * 4 + 1);
	snprintf(lk.ns_ip, sizeof(lk.ns_ip), "10.251.%u.%u", block / 64, (block % 64) * 4 + 2);
	snprintf(lk.hosts_dir, sizeof(lk.hosts_dir), "/etc/netns/%s", lk.netns);
	lk.dir = stack_mkdtemp("latch-e2e-links");
	sh("ip netns add %s", lk.netns);
	sh("ip link add %s type veth peer name %s netns %s", lk.host_if, lk.ns_if, lk.netns);
	sh("ip addr add %s/30 dev %s && ip link set %s up", lk.host_ip, lk.host_if, lk.host_if);
	sh("ip -n %s link set lo up && ip -n %s addr add %s/30 dev %s && ip -n %s link set %s up", lk.netns,
	   lk.netns, lk.ns_ip, lk.ns_if, lk.netns, lk.ns_if);
	sh("ip -n %s route add %s/32 via %s", lk.netns, node_ip(), lk.host_ip);
	sh("mkdir -p %s && printf '127.0.0.1 localhost\\n%s %s\\n' > %s/hosts", lk.hosts_dir, node_ip(),
	   getenv("LATCH_POD_GIT_HOST") ? getenv("LATCH_POD_GIT_HOST") : "git.latch.test", lk.hosts_dir);
	return 0;
}

static void stop_delay(void)
{
	if (lk.delay_pid > 0) {
		kill(lk.delay_pid, SIGTERM);
		stack_wait(lk.delay_pid, 10);
		lk.delay_pid = 0;
	}
}

static int link_down(void **state)
{
	stop_delay();
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "ip netns del %s; rm -rf %s", lk.netns, lk.hosts_dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cleaning up the link failed: %s\n", cmd);
	stack_rm_rf(lk.dir);
	free(lk.dir);
	return 0;
}

static void link_clear(void)
{
	stop_delay();
	sh("ip netns exec %s iptables -F OUTPUT && ip netns exec %s iptables -F INPUT", lk.netns, lk.netns);
}

/* 300 ms more on every packet out, and 20% of them lost (loss_pct 0: delay only). */
static void link_slow(int loss_pct)
{
	link_clear();
	char *bin = getenv("LATCH_LINK_DELAY");
	if (!bin)
		fail_msg("LATCH_LINK_DELAY is not set (meson passes the built link-delay)");
	char log[1024];
	snprintf(log, sizeof(log), "%s/link-delay.log", lk.dir);
	char *argv[] = { "ip", "netns", "exec", lk.netns, bin, DELAY_QUEUE, "300", NULL };
	char *envp[] = { NULL };
	lk.delay_pid = stack_spawn(argv, envp, log);
	for (double end = stack_now() + 10; gitops_count_in(log, "link-delay: queue") == 0;) {
		if (stack_now() > end)
			fail_msg("link-delay did not start; see %s", log);
		struct timespec ts = { 0, 20000000 };
		nanosleep(&ts, NULL);
	}
	if (loss_pct)
		sh("ip netns exec %s iptables -A OUTPUT -o %s -m statistic --mode random --probability 0.%02d -j DROP",
		   lk.netns, lk.ns_if, loss_pct);
	sh("ip netns exec %s iptables -A OUTPUT -o %s -j NFQUEUE --queue-num " DELAY_QUEUE, lk.netns, lk.ns_if);
}

/* Nothing passes either way, and nothing says so: no reset, no ICMP. */
static void link_cut(void)
{
	link_clear();
	sh("ip netns exec %s iptables -A OUTPUT -o %s -j DROP && ip netns exec %s iptables -A INPUT -i %s -j DROP",
	   lk.netns, lk.ns_if, lk.netns, lk.ns_if);
}

static void sleep_s(double s)
{
	struct timespec ts = { (time_t)s, (long)((s - (double)(time_t)s) * 1e9) };
	nanosleep(&ts, NULL);
}

/* ---- latch-init ---------------------------------------------------------------------- */

struct init_run {
	char token[1024], out[1024], log[1024];
	char *config;
};

/* PostgreSQL credentials (database/creds/CREDS) after a login with role, through the link. */
static void init_run_setup(struct init_run *r, const char *name, const char *role, const char *creds,
			   unsigned deadline_s)
{
	snprintf(r->token, sizeof(r->token), "%s/%s.token", lk.dir, name);
	snprintf(r->out, sizeof(r->out), "%s/%s-secrets", lk.dir, name);
	snprintf(r->log, sizeof(r->log), "%s/%s.log", lk.dir, name);
	char *jwt = stack_token_request("demo", "app", 600);
	stack_write_file(r->token, jwt);
	free(jwt);
	char config[4096];
	snprintf(config, sizeof(config),
		 "LATCH_CONFIG={\"version\":1,\"vault\":{\"address\":\"https://%s:%s\",\"ca_file\":\"%s\"},"
		 "\"auth\":{\"role\":\"%s\",\"token_file\":\"%s\"},\"output_dir\":\"%s\",\"deadline_seconds\":%u,"
		 "\"secrets\":[{\"name\":\"db\",\"path\":\"database/creds/%s\"}]}",
		 node_ip(), strrchr(stack.vault_addr, ':') + 1, stack.ca, role, r->token, r->out, deadline_s, creds);
	r->config = strdup(config);
}

static pid_t init_spawn(struct init_run *r, const char *mode)
{
	char *bin = getenv("LATCH_INIT");
	if (!bin)
		fail_msg("LATCH_INIT is not set (meson passes the built latch-init)");
	char *argv[] = { "ip", "netns", "exec", lk.netns, bin, (char *)mode, NULL };
	char *envp[] = { r->config, NULL };
	return stack_spawn(argv, envp, r->log);
}

static char *field(const char *map, const char *key)
{
	char want[64];
	snprintf(want, sizeof(want), "%s: ", key);
	const char *at = map ? strstr(map, want) : NULL;
	if (!at)
		return NULL;
	at += strlen(want);
	return strndup(at, strcspn(at, "\n"));
}

static void assert_log_has(const char *log_path, const char *text)
{
	char *log = stack_read_file(log_path);
	if (!log || !strstr(log, text))
		fail_msg("'%s' is not in %s:\n%s", text, log_path, log ? log : "(no log)");
	free(log);
}

static void assert_log_lacks(const char *log_path, const char *secret)
{
	char *log = stack_read_file(log_path);
	if (log && secret && strstr(log, secret))
		fail_msg("%s holds a secret value", log_path);
	free(log);
}

static void test_links__init_populates_over_a_slow_lossy_link(void **state)
{
	struct init_run r;
	init_run_setup(&r, "slow", "demo", "app", 60);
	link_slow(20);
	double start = stack_now();
	int status = stack_wait(init_spawn(&r, "populate"), 90);
	double seconds = stack_now() - start;
	link_clear();
	if (status != 0)
		fail_msg("latch-init populate exited %d over the slow link", status);
	/* A TCP and a TLS handshake, the login and the read: at least four round trips. */
	if (seconds < 1.2)
		fail_msg("populate took %.2f s: the link was not slow", seconds);
	char path[1200];
	snprintf(path, sizeof(path), "%s/db", r.out);
	char *db = stack_read_file(path);
	char *user = field(db, "username"), *password = field(db, "password");
	assert_non_null(user);
	assert_non_null(password);
	assert_int_equal(stack_psql_login(user, password), 0);
	assert_log_lacks(r.log, password);
	printf("populate over 300 ms and 20%% loss: %.2f s (deadline 60 s)\n", seconds);
	free(db); free(user); free(password); free(r.config);
}

static void test_links__init_keeps_its_deadline_when_the_link_is_cut(void **state)
{
	struct init_run r;
	init_run_setup(&r, "cut", "demo", "app", 5);
	link_cut();
	double start = stack_now();
	int status = stack_wait(init_spawn(&r, "populate"), 60);
	double seconds = stack_now() - start;
	link_clear();
	assert_int_equal(status, 69); /* EX_UNAVAILABLE */
	if (seconds < 4.5 || seconds > 7.0)
		fail_msg("latch-init gave up after %.2f s, its deadline is 5 s", seconds);
	char url[256];
	snprintf(url, sizeof(url), "https://%s:%s/v1/auth/kubernetes/login", node_ip(),
		 strrchr(stack.vault_addr, ':') + 1);
	assert_log_has(r.log, url);
	assert_log_has(r.log, "deadline");
	struct stat st;
	char ready[1200];
	snprintf(ready, sizeof(ready), "%s/db", r.out);
	assert_int_not_equal(stat(ready, &st), 0); /* no file, not even an empty one */
	free(r.config);
}

/* A lease of 45 s is renewed at 30 s: the cut (from 3 s to 33 s) covers that moment. */
static void test_links__sidecar_rides_out_a_30s_cut_and_renews_after(void **state)
{
	stack_vault_db_role("linkcut", "45s", "10m");
	struct init_run r;
	init_run_setup(&r, "sidecar", "linkcut", "linkcut", 10);
	link_clear();
	pid_t pid = init_spawn(&r, "sidecar");
	char path[1200];
	snprintf(path, sizeof(path), "%s/db", r.out);
	char *before = stack_wait_for_file(path, 20);
	double fetched = stack_now();
	sleep_s(3);
	link_cut();
	sleep_s(30);
	assert_int_equal(gitops_count_in(r.log, "renewed lease"), 0); /* not through a cut link */
	link_clear();
	double healed = stack_now();
	while (gitops_count_in(r.log, "renewed lease") == 0) {
		if (stack_now() > fetched + 44)
			fail_msg("no renewal %.1f s after the link came back (the lease ends 45 s after the fetch)",
				 stack_now() - healed);
		sleep_s(0.1);
	}
	printf("renewed %.1f s after the link came back\n", stack_now() - healed);
	char *after = stack_read_file(path);
	assert_non_null(after);
	assert_string_equal(after, before); /* the same credentials: renewed, not replaced */
	char *user = field(after, "username"), *password = field(after, "password");
	assert_int_equal(stack_psql_login(user, password), 0);
	assert_log_lacks(r.log, password);
	kill(pid, SIGTERM);
	assert_int_equal(stack_wait(pid, 10), 0);
	free(before); free(after); free(user); free(password); free(r.config);
}

/* ---- latch-sync ---------------------------------------------------------------------- */

#define N_CONFIGMAPS 200

static void put_revision(const char *repo, const char *version)
{
	char path[1200];
	snprintf(path, sizeof(path), "%s/app.yaml", repo);
	FILE *f = fopen(path, "w");
	assert_non_null(f);
	fprintf(f, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: links-app\n");
	for (int i = 0; i < N_CONFIGMAPS; i++)
		fprintf(f, "---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cm-%03d\n  namespace: links-app\n"
			   "data:\n  version: \"%s\"\n", i, version);
	assert_int_equal(fclose(f), 0);
	char cmd[256];
	snprintf(cmd, sizeof(cmd), "git add -A && git commit -qm 'version %s' && git push -q origin main", version);
	gitops_sh(repo, cmd);
}

static size_t configmaps_at(struct latch_k8s *k, const char *version)
{
	struct latch_k8s_list_options o = { 0 };
	json_t *items = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_list(k, "v1", "ConfigMap", &o, &items, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	size_t n = 0, i;
	json_t *cm;
	json_array_foreach(items, i, cm) {
		const char *ns = latch_json_get_str(json_object_get(cm, "metadata"), "namespace");
		const char *v = latch_json_get_str(json_object_get(cm, "data"), "version");
		n += ns && strcmp(ns, "links-app") == 0 && v && strcmp(v, version) == 0;
	}
	json_decref(items);
	return n;
}

/* The admin kubeconfig, with the API server at the node's address: through the link. */
static void kubeconfig_through_link(const char *out)
{
	char *text = stack_read_file(getenv("KUBECONFIG"));
	assert_non_null(text);
	char *at = strstr(text, "server: https://127.0.0.1:");
	assert_non_null(at);
	char server[64];
	snprintf(server, sizeof(server), "server: https://%s:", node_ip());
	FILE *f = fopen(out, "w");
	assert_non_null(f);
	fprintf(f, "%.*s%s%s", (int)(at - text), text, server, at + strlen("server: https://127.0.0.1:"));
	assert_int_equal(fclose(f), 0);
	assert_int_equal(chmod(out, 0600), 0);
	free(text);
}

static int sync_once(const char *config, const char *kubeconfig, const char *log)
{
	return stack_wait(gitops_spawn_in(lk.netns, "once", config, kubeconfig, log), 180);
}

static void test_links__sync_records_a_revision_only_when_all_of_it_is_applied(void **state)
{
	const char *root = getenv("LATCH_GIT_ROOT"), *git_host = getenv("LATCH_POD_GIT_HTTPS_URL");
	if (!root || !git_host)
		fail_msg("LATCH_GIT_ROOT or LATCH_POD_GIT_HTTPS_URL is not set (the stack's git server)");
	char name[64], cmd[4096], repo[1200], config[1200], kubeconfig[1200], log[1200], user[1200];
	snprintf(name, sizeof(name), "links-%d", (int)getpid());
	snprintf(repo, sizeof(repo), "%s/repo", lk.dir);
	snprintf(config, sizeof(config), "%s/sync.yaml", lk.dir);
	snprintf(kubeconfig, sizeof(kubeconfig), "%s/kubeconfig", lk.dir);
	snprintf(log, sizeof(log), "%s/sync.log", lk.dir);
	snprintf(user, sizeof(user), "%s/git-user", lk.dir);
	snprintf(cmd, sizeof(cmd), "git init -q --bare '%s/%s.git' && git init -q -b main repo && cd repo && "
		 "git remote add origin '%s/%s.git'", root, name, root, name);
	gitops_sh(lk.dir, cmd);
	stack_write_file(user, "latch\n");
	kubeconfig_through_link(kubeconfig);
	char text[4096];
	snprintf(text, sizeof(text),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: links}\n"
		 "spec:\n  namespace: latch-system\n  cacheDir: %s/cache\n"
		 "  sources:\n  - name: app\n    url: %s/%s.git\n    ref: {branch: main}\n    path: .\n"
		 "    healthCheck: false\n    timeout: 60s\n    caFile: %s\n"
		 "    credentials: {usernameFile: %s, passwordFile: %s}\n",
		 lk.dir, git_host, name, stack.ca, user, getenv("LATCH_GIT_PASSWORD_FILE"));
	stack_write_file(config, text);
	struct latch_k8s *k = gitops_kube(getenv("KUBECONFIG")); /* the test's own view, not through the link */

	put_revision(repo, "1");
	char *rev1 = gitops_rev(repo, "HEAD");
	assert_int_equal(sync_once(config, kubeconfig, log), 0);
	assert_int_equal(configmaps_at(k, "1"), N_CONFIGMAPS);

	/* Revision 2 over a slow link, cut once its apply has begun. */
	put_revision(repo, "2");
	char *rev2 = gitops_rev(repo, "HEAD");
	link_slow(0);
	pid_t pid = gitops_spawn_in(lk.netns, "once", config, kubeconfig, log);
	double end = stack_now() + 120;
	while (configmaps_at(k, "2") < 10) {
		if (stack_now() > end)
			fail_msg("revision 2 was not being applied after 120 s");
		sleep_s(0.05);
	}
	link_cut();
	int status = stack_wait(pid, 150);
	size_t applied = configmaps_at(k, "2");
	printf("cut with %zu of %d objects of revision 2 applied; latch-sync exited %d\n", applied, N_CONFIGMAPS,
	       status);
	assert_int_not_equal(status, 0);
	if (applied == N_CONFIGMAPS)
		fail_msg("every object was applied before the cut: the test cut too late");
	/* The cluster holds part of revision 2 (Kubernetes has no transaction over objects), but
	 * latch-sync does not record or report it as applied. */
	char *recorded = gitops_configmap_value(k, "latch-system", "latch-sync.links.app", "lastAppliedRevision");
	assert_non_null(recorded);
	assert_string_equal(recorded, rev1);
	free(recorded);

	/* The link heals: the next pass applies the rest and records revision 2. */
	link_clear();
	status = sync_once(config, kubeconfig, log);
	if (status != 0) {
		char *text_log = stack_read_file(log);
		fail_msg("latch-sync once after the link healed exited %d:\n%s", status, text_log ? text_log : "");
	}
	assert_int_equal(configmaps_at(k, "2"), N_CONFIGMAPS);
	recorded = gitops_configmap_value(k, "latch-system", "latch-sync.links.app", "lastAppliedRevision");
	assert_non_null(recorded);
	assert_string_equal(recorded, rev2);
	free(recorded);

	struct latch_error err = LATCH_ERROR_INIT;
	latch_k8s_delete(k, "v1", "Namespace", NULL, "links-app", &err);
	latch_error_done(&err);
	latch_k8s_free(k);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s/%s.git'", root, name);
	gitops_sh(lk.dir, cmd);
	free(rev1);
	free(rev2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_links__init_populates_over_a_slow_lossy_link),
		cmocka_unit_test(test_links__init_keeps_its_deadline_when_the_link_is_cut),
		cmocka_unit_test(test_links__sidecar_rides_out_a_30s_cut_and_renews_after),
		cmocka_unit_test(test_links__sync_records_a_revision_only_when_all_of_it_is_applied),
	};
	return cmocka_run_group_tests(tests, link_up, link_down);
}
