/* latch-sync when things go wrong: a CRD and its custom resources in one commit, the git
 * server going away and coming back, and the agent killed with SIGKILL in the middle of an
 * apply. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "gitops.h"
#include "stack.h"

struct fixture {
	char *dir;
	char repo[1024], config[1024], log[1024];
};

static void fixture_init_ref(struct fixture *f, const char *name, const char *url, const char *ref,
			     const char *extra)
{
	f->dir = stack_mkdtemp("latch-e2e-faults");
	snprintf(f->repo, sizeof(f->repo), "%s/repo", f->dir);
	snprintf(f->config, sizeof(f->config), "%s/sync.yaml", f->dir);
	snprintf(f->log, sizeof(f->log), "%s/sync.log", f->dir);
	gitops_sh(f->dir, "mkdir repo && cd repo && git init -q -b main");
	char text[4096], own_url[1200];
	snprintf(own_url, sizeof(own_url), "file://%s", f->repo);
	snprintf(text, sizeof(text),
		 "apiVersion: latch.dev/v1alpha1\nkind: SyncConfig\nmetadata: {name: %s}\nspec:\n  namespace: latch-system\n"
		 "  cacheDir: %s/cache\n  sources:\n  - name: apps\n    url: %s\n    ref: %s\n    path: .\n"
		 "    healthCheck: false\n    timeout: 60s\n%s",
		 name, f->dir, url ? url : own_url, ref, extra ? extra : "");
	stack_write_file(f->config, text);
}

static void fixture_init_with(struct fixture *f, const char *name, const char *url, const char *extra)
{
	fixture_init_ref(f, name, url, "{branch: main}", extra);
}

static void fixture_init(struct fixture *f, const char *name, const char *url)
{
	fixture_init_with(f, name, url, NULL);
}

static void fixture_done(struct fixture *f)
{
	stack_rm_rf(f->dir);
	free(f->dir);
}

static void put(const struct fixture *f, const char *rel, const char *text)
{
	char path[2048];
	snprintf(path, sizeof(path), "%s/%s", f->repo, rel);
	stack_write_file(path, text);
}

static void commit(const struct fixture *f, const char *message)
{
	char cmd[512];
	snprintf(cmd, sizeof(cmd), "cd repo && git add -A && git commit -qm '%s'", message);
	gitops_sh(f->dir, cmd);
}

static int sync_once(const struct fixture *f)
{
	return gitops_sync("once", f->config, getenv("KUBECONFIG"), f->log);
}

static void must_sync(const struct fixture *f)
{
	int status = sync_once(f);
	if (status != 0) {
		char *log = stack_read_file(f->log);
		fail_msg("latch-sync once exited %d:\n%s", status, log ? log : "");
	}
}

static bool log_has(const struct fixture *f, const char *needle)
{
	char *log = stack_read_file(f->log);
	bool found = log && strstr(log, needle);
	free(log);
	return found;
}

/* A CRD and a Widget in one revision. The group is new in every run of the suite (the stack
 * outlives a run), so the CRD is never served before the commit that brings it. */
static void put_widgets(const struct fixture *f, const char *group, const char *widgets)
{
	char text[4096];
	snprintf(text, sizeof(text),
		 "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: widgets.%s\n"
		 "spec:\n  group: %s\n  scope: Namespaced\n  names: {plural: widgets, singular: widget, kind: Widget, listKind: WidgetList}\n"
		 "  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema:\n      openAPIV3Schema:\n        type: object\n"
		 "        properties:\n          spec:\n            type: object\n            properties:\n              size: {type: integer}\n",
		 group, group);
	put(f, "crd.yaml", text);
	snprintf(text, sizeof(text), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: faults-crd\n%s", widgets);
	put(f, "widgets.yaml", text);
}

static char *widget(const char *group, const char *name, const char *size)
{
	char text[1024];
	snprintf(text, sizeof(text), "---\napiVersion: %s/v1\nkind: Widget\nmetadata:\n  name: %s\n  namespace: faults-crd\nspec:\n  size: %s\n",
		 group, name, size);
	return strdup(text);
}

static void test_faults__crd_and_its_resources_in_one_commit(void **state)
{
	char group[128], api_version[160];
	snprintf(group, sizeof(group), "g%d.faults.latch.dev", (int)getpid());
	snprintf(api_version, sizeof(api_version), "%s/v1", group);
	struct fixture f;
	fixture_init(&f, "faults-crd", NULL);
	struct latch_k8s *k = gitops_kube(getenv("KUBECONFIG"));
	char *small = widget(group, "small", "3");
	put_widgets(&f, group, small);
	free(small);
	commit(&f, "crd and widget");
	must_sync(&f);
	json_t *w = gitops_get(k, api_version, "Widget", "faults-crd", "small");
	assert_non_null(w);
	assert_int_equal(json_integer_value(latch_json_path(w, "spec.size")), 3);
	json_decref(w);

	/* A custom resource the CRD's schema refuses: nothing of that revision is applied. */
	char *small4 = widget(group, "small", "4"), *wrong = widget(group, "wrong", "many");
	char both[4096];
	snprintf(both, sizeof(both), "%s%s", small4, wrong);
	put_widgets(&f, group, both);
	free(small4);
	free(wrong);
	commit(&f, "a bad widget");
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "widgets.yaml@"));
	w = gitops_get(k, api_version, "Widget", "faults-crd", "small");
	assert_int_equal(json_integer_value(latch_json_path(w, "spec.size")), 3);
	json_decref(w);
	assert_null(gitops_get(k, api_version, "Widget", "faults-crd", "wrong"));
	latch_k8s_free(k);
	fixture_done(&f);
}

/* A git daemon of the test's own, serving dir on port: the server the test takes down. */
static pid_t start_git_daemon(const char *dir, int port, const char *log)
{
	char port_arg[64], base[1200];
	snprintf(port_arg, sizeof(port_arg), "--port=%d", port);
	snprintf(base, sizeof(base), "--base-path=%s", dir);
	char *argv[] = { "/usr/lib/git-core/git-daemon", "--reuseaddr", "--listen=127.0.0.1", port_arg, "--export-all", base, (char *)dir, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", NULL };
	pid_t pid = stack_spawn(argv, envp, log);
	double end = stack_now() + 10;
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	while (stack_now() < end) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);
		int ok = connect(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
		close(fd);
		if (ok)
			return pid;
		struct timespec pause = { 0, 50000000 };
		nanosleep(&pause, NULL);
	}
	fail_msg("git daemon did not listen on %d", port);
	return -1;
}

static void stop(pid_t pid)
{
	kill(pid, SIGKILL);
	stack_wait(pid, 10);
}

static void put_value(const struct fixture *f, const char *value)
{
	char text[512];
	snprintf(text, sizeof(text), "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: faults-git\n---\n"
				     "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: app\n  namespace: faults-git\ndata:\n  value: %s\n",
		 value);
	put(f, "app.yaml", text);
}

static char *value_in_cluster(void)
{
	struct latch_k8s *k = gitops_kube(getenv("KUBECONFIG"));
	char *v = gitops_configmap_value(k, "faults-git", "app", "value");
	latch_k8s_free(k);
	return v;
}

static void test_faults__git_server_down_keeps_state_and_recovers(void **state)
{
	int port = gitops_free_port();
	char url[256];
	snprintf(url, sizeof(url), "git://127.0.0.1:%d/repo", port);
	struct fixture f;
	fixture_init(&f, "faults-git", url);
	char daemon_log[1200], status_log[1200];
	snprintf(daemon_log, sizeof(daemon_log), "%s/daemon.log", f.dir);
	snprintf(status_log, sizeof(status_log), "%s/status.log", f.dir);
	put_value(&f, "one");
	commit(&f, "one");
	pid_t daemon = start_git_daemon(f.dir, port, daemon_log);
	must_sync(&f);
	char *v = value_in_cluster();
	assert_string_equal(v, "one");
	free(v);
	assert_int_equal(gitops_sync("status", f.config, getenv("KUBECONFIG"), status_log), 0);

	/* The server goes away while a new commit waits: the cluster keeps what it had, and the
	 * status says why the new revision is not there. */
	stop(daemon);
	put_value(&f, "two");
	commit(&f, "two");
	assert_int_equal(sync_once(&f), 1);
	v = value_in_cluster();
	assert_string_equal(v, "one");
	free(v);
	assert_int_equal(gitops_sync("status", f.config, getenv("KUBECONFIG"), status_log), 1);
	char *status = stack_read_file(status_log);
	assert_non_null(status);
	assert_non_null(strstr(status, "127.0.0.1"));
	free(status);

	/* Back: the next pass applies the waiting commit. */
	daemon = start_git_daemon(f.dir, port, daemon_log);
	must_sync(&f);
	v = value_in_cluster();
	assert_string_equal(v, "two");
	free(v);
	assert_int_equal(gitops_sync("status", f.config, getenv("KUBECONFIG"), status_log), 0);
	stop(daemon);
	fixture_done(&f);
}

#define MANY 600

/* The kill test's Namespace: new in every run of the suite, since a pruned Namespace stays
 * Terminating on the stack (it runs no namespace controller). */
static const char *kill_namespace(void)
{
	static char name[64];
	if (!name[0])
		snprintf(name, sizeof(name), "faults-kill-%d", (int)getpid());
	return name;
}

static void put_many(const struct fixture *f, const char *prefix, size_t n)
{
	size_t cap = 200 + n * 200;
	char *text = malloc(cap);
	size_t len = (size_t)snprintf(text, cap, "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n", kill_namespace());
	for (size_t i = 0; i < n; i++)
		len += (size_t)snprintf(text + len, cap - len,
					"---\napiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: %s-%04zu\n  namespace: %s\ndata:\n  i: \"%zu\"\n",
					prefix, i, kill_namespace(), i);
	put(f, "many.yaml", text);
	free(text);
}

/* ConfigMaps of this test's SyncConfig in its Namespace whose name starts with prefix. */
static size_t labelled_configmaps(struct latch_k8s *k, const char *prefix)
{
	json_t *items = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_list(k, "v1", "ConfigMap", &(struct latch_k8s_list_options){ "latch.dev/config=faults-kill", false, false }, &items, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	size_t n = 0, i;
	json_t *item;
	json_array_foreach(items, i, item) {
		const char *ns = json_string_value(latch_json_path(item, "metadata.namespace"));
		const char *name = json_string_value(latch_json_path(item, "metadata.name"));
		n += ns && name && strcmp(ns, kill_namespace()) == 0 && strncmp(name, prefix, strlen(prefix)) == 0;
	}
	json_decref(items);
	return n;
}

static bool applying(struct latch_k8s *k)
{
	char *result = gitops_configmap_value(k, "latch-system", "latch-sync.faults-kill.apps", "result");
	bool yes = result && strncmp(result, "Applying ", 9) == 0;
	free(result);
	return yes;
}

/* Starts a pass and kills it with SIGKILL once part of the revision is in the cluster;
 * returns how many of its ConfigMaps were there. */
static size_t kill_mid_apply(const struct fixture *f, struct latch_k8s *k, const char *prefix)
{
	/* No Leases: the Lease the killed agent held would keep the next one waiting 15 s. */
	pid_t pid = gitops_spawn(f->config, getenv("KUBECONFIG"), f->log, (const char *const[]){ "--max-passes", "1",
		"--no-leases", NULL });
	double end = stack_now() + 60;
	while (stack_now() < end && !(applying(k) && labelled_configmaps(k, prefix) >= 10)) {
		struct timespec pause = { 0, 2000000 };
		nanosleep(&pause, NULL);
	}
	kill(pid, SIGKILL);
	stack_wait(pid, 10);
	size_t n = labelled_configmaps(k, prefix);
	if (n == 0 || n >= MANY)
		fail_msg("SIGKILL landed with %zu of %d objects applied, not during the apply; the test proves nothing", n, MANY);
	return n;
}

/* SIGKILL lands in the middle of an apply. Restarted, the agent converges; and when the
 * repository moved on meanwhile, the next revision prunes what the killed pass created:
 * nothing is left behind untracked. */
static void test_faults__kill_during_apply_then_converge(void **state)
{
	struct fixture f;
	fixture_init(&f, "faults-kill", NULL);
	struct latch_k8s *k = gitops_kube(getenv("KUBECONFIG"));
	put(&f, "seed.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: seed\n  namespace: default\n");
	commit(&f, "seed");
	must_sync(&f);

	put_many(&f, "first", MANY);
	commit(&f, "many");
	size_t first = kill_mid_apply(&f, k, "first");
	must_sync(&f);
	assert_int_equal(labelled_configmaps(k, "first"), MANY);

	put_many(&f, "second", MANY);
	commit(&f, "many more");
	size_t second = kill_mid_apply(&f, k, "second");
	gitops_sh(f.dir, "cd repo && git rm -q many.yaml && git commit -qm 'none of them'");
	must_sync(&f);
	assert_int_equal(labelled_configmaps(k, "first"), 0);
	assert_int_equal(labelled_configmaps(k, "second"), 0);
	/* The Namespace the killed pass created went too (Terminating: the stack runs no
	 * namespace controller to finish it). */
	json_t *ns = gitops_get(k, "v1", "Namespace", NULL, kill_namespace());
	assert_true(!ns || latch_json_path(ns, "metadata.deletionTimestamp"));
	json_decref(ns);
	printf("# killed with %zu and %zu of %d objects applied; converged, and pruned to 0\n", first, second, MANY);
	latch_k8s_free(k);
	fixture_done(&f);
}

/* gpg with the test's own home; key generation and signing need no agent passphrase. */
static void gpg(const struct fixture *f, const char *args)
{
	char cmd[4096];
	snprintf(cmd, sizeof(cmd), "GNUPGHOME='%s/gnupg' gpg --batch --quiet --passphrase '' %s", f->dir, args);
	gitops_sh(f->dir, cmd);
}

static char *fingerprint_of(const struct fixture *f, const char *uid)
{
	char cmd[2048], out[1200];
	snprintf(out, sizeof(out), "%s/fpr", f->dir);
	snprintf(cmd, sizeof(cmd), "GNUPGHOME='%s/gnupg' gpg --batch --with-colons --list-keys '%s' | awk -F: '/^fpr/ { print $10; exit }' > '%s'",
		 f->dir, uid, out);
	gitops_sh(f->dir, cmd);
	char *fpr = stack_read_file(out);
	assert_true(fpr && strlen(fpr) >= 40);
	fpr[40] = '\0';
	return fpr;
}

/* A commit of value, signed by the key with fingerprint fpr (NULL: unsigned). */
static void commit_value(const struct fixture *f, const char *value, const char *fpr)
{
	char text[512], cmd[2048];
	snprintf(text, sizeof(text), "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: signed\n  namespace: default\ndata:\n  value: %s\n", value);
	put(f, "app.yaml", text);
	if (fpr)
		snprintf(cmd, sizeof(cmd), "cd repo && git add -A && GNUPGHOME='%s/gnupg' git -c user.signingkey=%s -c gpg.program=gpg commit -q -S -m %s",
			 f->dir, fpr, value);
	else
		snprintf(cmd, sizeof(cmd), "cd repo && git add -A && git commit -q -m %s", value);
	gitops_sh(f->dir, cmd);
}

static char *signed_value(void)
{
	struct latch_k8s *k = gitops_kube(getenv("KUBECONFIG"));
	char *v = gitops_configmap_value(k, "default", "signed", "value");
	latch_k8s_free(k);
	return v;
}

static void expect_signed_value(const char *want)
{
	char *v = signed_value();
	assert_non_null(v);
	assert_string_equal(v, want);
	free(v);
}

/* OpenPGP keys trusted and stranger in the fixture's gnupg home, and trusted's public key
 * exported to dir/trusted.asc, the keyring the source's verify names. */
struct pgp_keys {
	char *trusted, *stranger; /* fingerprints */
};

static struct pgp_keys make_pgp_keys(const struct fixture *f, const char *dir)
{
	gitops_sh(f->dir, "mkdir -m 700 gnupg");
	gpg(f, "--quick-gen-key 'trusted <trusted@example.org>' ed25519 sign never");
	gpg(f, "--quick-gen-key 'stranger <stranger@example.org>' ed25519 sign never");
	struct pgp_keys k = { fingerprint_of(f, "trusted@example.org"), fingerprint_of(f, "stranger@example.org") };
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "--armor --export %s > '%s/trusted.asc'", k.trusted, dir);
	gpg(f, cmd);
	return k;
}

/* Stops the fixture's gpg-agent and frees the fingerprints. */
static void pgp_keys_done(const struct fixture *f, struct pgp_keys *k)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "GNUPGHOME='%s/gnupg' gpgconf --kill all", f->dir);
	gitops_sh(f->dir, cmd);
	free(k->trusted);
	free(k->stranger);
}

/* verify.keyringFile: only commits signed by a key in that file reach the cluster. */
static void test_faults__only_commits_signed_by_a_trusted_key_apply(void **state)
{
	struct fixture f;
	char extra[2048];
	char *dir = stack_mkdtemp("latch-e2e-verify-keys");
	snprintf(extra, sizeof(extra), "    verify: {keyringFile: %s/trusted.asc}\n", dir);
	fixture_init_with(&f, "faults-verify", NULL, extra);
	struct pgp_keys keys = make_pgp_keys(&f, dir);
	const char *trusted = keys.trusted, *stranger = keys.stranger;

	commit_value(&f, "one", trusted);
	must_sync(&f);
	expect_signed_value("one");
	assert_true(log_has(&f, trusted));

	commit_value(&f, "two", NULL);
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "is not signed"));
	expect_signed_value("one");

	commit_value(&f, "three", stranger);
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "which is not in"));
	assert_true(log_has(&f, stranger));
	expect_signed_value("one");

	commit_value(&f, "four", trusted);
	must_sync(&f);
	expect_signed_value("four");

	pgp_keys_done(&f, &keys);
	stack_rm_rf(dir);
	free(dir);
	fixture_done(&f);
}

/* ssh-keygen's fingerprint of key.pub in the fixture's directory (to free). */
static char *ssh_fingerprint(const struct fixture *f, const char *key)
{
	char cmd[1024], path[1200];
	snprintf(cmd, sizeof(cmd), "ssh-keygen -l -E sha256 -f %s.pub | cut -d' ' -f2 > %s.fpr", key, key);
	gitops_sh(f->dir, cmd);
	snprintf(path, sizeof(path), "%s/%s.fpr", f->dir, key);
	char *fpr = stack_read_file(path);
	assert_non_null(fpr);
	fpr[strcspn(fpr, "\n")] = '\0';
	return fpr;
}

/* Keys trusted and stranger, and an allowed_signers file in dir that lists trusted for git,
 * as a team writes it. */
static void make_ssh_keys(const struct fixture *f, const char *dir)
{
	char cmd[2048];
	gitops_sh(f->dir, "ssh-keygen -q -t ed25519 -N '' -C trusted -f trusted && "
			  "ssh-keygen -q -t ecdsa -N '' -C stranger -f stranger");
	snprintf(cmd, sizeof(cmd), "printf '# who may sign the config repo\\n' > '%s/allowed_signers' && "
		 "echo \"trusted@example.org namespaces=\\\"git\\\" $(cut -d' ' -f1,2 trusted.pub)\" "
		 ">> '%s/allowed_signers'",
		 dir, dir);
	gitops_sh(f->dir, cmd);
}

/* git as a team signing with SSH keys runs it. */
#define GIT_SSH_SIGNING "git -c gpg.format=ssh -c user.signingkey=\"$PWD/../%s\""

/* The ConfigMap ssh-signed/value = value, committed; signed by key (a file in the fixture's
 * directory), or unsigned when key is NULL. */
static void commit_ssh_signed(const struct fixture *f, const char *value, const char *key)
{
	char text[512], cmd[2048];
	snprintf(text, sizeof(text),
		 "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: ssh-signed\n  namespace: default\n"
		 "data:\n  value: %s\n", value);
	put(f, "app.yaml", text);
	if (key)
		snprintf(cmd, sizeof(cmd), "cd repo && git add -A && " GIT_SSH_SIGNING " commit -q -S -m %s", key, value);
	else
		snprintf(cmd, sizeof(cmd), "cd repo && git add -A && git commit -q -m %s", value);
	gitops_sh(f->dir, cmd);
}

static void expect_ssh_signed_value(const char *want)
{
	struct latch_k8s *k = gitops_kube(getenv("KUBECONFIG"));
	char *v = gitops_configmap_value(k, "default", "ssh-signed", "value");
	latch_k8s_free(k);
	assert_non_null(v);
	assert_string_equal(v, want);
	free(v);
}

/* verify.allowedSignersFile: commits signed with gpg.format=ssh by a listed key apply; an
 * unsigned one, or one by another key, leaves the cluster at the last verified commit, and
 * the log names the commit, the key and why. */
static void test_faults__ssh_signed_commits_apply_only_when_the_key_is_allowed(void **state)
{
	struct fixture f;
	char extra[2048];
	char *dir = stack_mkdtemp("latch-e2e-ssh-keys");
	snprintf(extra, sizeof(extra), "    verify: {allowedSignersFile: %s/allowed_signers}\n", dir);
	fixture_init_with(&f, "faults-ssh-verify", NULL, extra);
	make_ssh_keys(&f, dir);
	char *trusted = ssh_fingerprint(&f, "trusted"), *stranger = ssh_fingerprint(&f, "stranger");

	commit_ssh_signed(&f, "one", "trusted");
	must_sync(&f);
	expect_ssh_signed_value("one");
	assert_true(log_has(&f, trusted));
	assert_true(log_has(&f, "trusted@example.org"));

	commit_ssh_signed(&f, "two", NULL);
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "is not signed"));
	expect_ssh_signed_value("one");

	commit_ssh_signed(&f, "three", "stranger");
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "which is not in"));
	assert_true(log_has(&f, stranger));
	expect_ssh_signed_value("one");

	commit_ssh_signed(&f, "four", "trusted");
	must_sync(&f);
	expect_ssh_signed_value("four");

	free(trusted);
	free(stranger);
	stack_rm_rf(dir);
	free(dir);
	fixture_done(&f);
}

/* verify.everyCommit: a signed tip does not carry an unsigned commit in between into the
 * cluster; the error names that commit. */
static void test_faults__every_commit_since_the_applied_one_must_be_signed(void **state)
{
	struct fixture f;
	char extra[2048];
	char *dir = stack_mkdtemp("latch-e2e-ssh-every");
	snprintf(extra, sizeof(extra), "    verify: {allowedSignersFile: %s/allowed_signers, everyCommit: true}\n",
		 dir);
	fixture_init_with(&f, "faults-ssh-every", NULL, extra);
	make_ssh_keys(&f, dir);
	/* The inventory a run before this one left names a commit of its own repository. */
	struct latch_k8s *k = gitops_kube(getenv("KUBECONFIG"));
	struct latch_error err = LATCH_ERROR_INIT;
	assert_int_equal(latch_k8s_delete(k, "v1", "ConfigMap", "latch-system", "latch-sync.faults-ssh-every.apps",
					  &err), 0);
	latch_k8s_free(k);

	commit_ssh_signed(&f, "one", "trusted");
	must_sync(&f);
	expect_ssh_signed_value("one");

	commit_ssh_signed(&f, "two", NULL);
	char path[1200];
	gitops_sh(f.dir, "cd repo && git rev-parse HEAD > ../unsigned");
	snprintf(path, sizeof(path), "%s/unsigned", f.dir);
	char *unsigned_sha = stack_read_file(path);
	assert_non_null(unsigned_sha);
	unsigned_sha[12] = '\0';
	commit_ssh_signed(&f, "three", "trusted");
	assert_int_equal(sync_once(&f), 1);
	char want[128];
	snprintf(want, sizeof(want), "commit %s is not signed", unsigned_sha);
	assert_true(log_has(&f, want));
	assert_true(log_has(&f, "verify.everyCommit"));
	expect_ssh_signed_value("one");

	free(unsigned_sha);
	stack_rm_rf(dir);
	free(dir);
	fixture_done(&f);
}

/* Move the annotated tag release to the tip: signed by key, or unsigned (NULL), or
 * lightweight. */
static void tag_release(const struct fixture *f, const char *key, bool lightweight)
{
	char cmd[1024];
	if (lightweight)
		snprintf(cmd, sizeof(cmd), "cd repo && git tag -f release");
	else if (key)
		snprintf(cmd, sizeof(cmd), "cd repo && " GIT_SSH_SIGNING " tag -f -s -m release release", key);
	else
		snprintf(cmd, sizeof(cmd), "cd repo && git tag -f -a -m release release");
	gitops_sh(f->dir, cmd);
}

/* ref: {tag: release} with verify.mode Tag: the commits are not signed, the tag is; only a
 * tag signed by an allowed key moves the cluster. */
static void test_faults__ssh_signed_tag_mode_follows_only_trusted_tags(void **state)
{
	struct fixture f;
	char extra[2048];
	char *dir = stack_mkdtemp("latch-e2e-ssh-tags");
	snprintf(extra, sizeof(extra), "    verify: {allowedSignersFile: %s/allowed_signers, mode: Tag}\n", dir);
	fixture_init_ref(&f, "faults-ssh-tag", NULL, "{tag: release}", extra);
	make_ssh_keys(&f, dir);
	char *stranger = ssh_fingerprint(&f, "stranger");

	commit_ssh_signed(&f, "one", NULL);
	tag_release(&f, "trusted", false);
	must_sync(&f);
	expect_ssh_signed_value("one");
	assert_true(log_has(&f, "verified tag signature"));

	commit_ssh_signed(&f, "two", NULL);
	tag_release(&f, NULL, false);
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "refusing tag 'release'"));
	assert_true(log_has(&f, "tag 'release' is not signed"));
	expect_ssh_signed_value("one");

	tag_release(&f, "stranger", false);
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, stranger));
	expect_ssh_signed_value("one");

	tag_release(&f, NULL, true);
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "lightweight"));
	expect_ssh_signed_value("one");

	commit_ssh_signed(&f, "three", NULL);
	tag_release(&f, "trusted", false);
	must_sync(&f);
	expect_ssh_signed_value("three");

	free(stranger);
	stack_rm_rf(dir);
	free(dir);
	fixture_done(&f);
}

/* Move the annotated tag release to the tip, signed with OpenPGP by the key fpr. */
static void tag_release_openpgp(const struct fixture *f, const char *fpr)
{
	char cmd[2048];
	snprintf(cmd, sizeof(cmd), "cd repo && GNUPGHOME='%s/gnupg' git -c user.signingkey=%s -c gpg.program=gpg "
		 "tag -f -s -m release release", f->dir, fpr);
	gitops_sh(f->dir, cmd);
}

/* ref: {tag: release} with verify.mode TagAndHEAD and an OpenPGP keyring: the tag and the
 * commit it names must both be signed by a trusted key. */
static void test_faults__openpgp_signed_tag_and_head_both_verified(void **state)
{
	struct fixture f;
	char extra[2048];
	char *dir = stack_mkdtemp("latch-e2e-pgp-tags");
	snprintf(extra, sizeof(extra), "    verify: {keyringFile: %s/trusted.asc, mode: TagAndHEAD}\n", dir);
	fixture_init_ref(&f, "faults-pgp-tag", NULL, "{tag: release}", extra);
	struct pgp_keys keys = make_pgp_keys(&f, dir);
	const char *trusted = keys.trusted, *stranger = keys.stranger;

	commit_value(&f, "one", trusted);
	tag_release_openpgp(&f, trusted);
	must_sync(&f);
	expect_signed_value("one");
	assert_true(log_has(&f, "verified tag signature"));

	/* A trusted tag on an unsigned commit (the log holds only this pass's words). */
	commit_value(&f, "two", NULL);
	tag_release_openpgp(&f, trusted);
	stack_write_file(f.log, "");
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "is not signed"));
	expect_signed_value("one");

	/* A trusted commit under a tag signed by a stranger. */
	commit_value(&f, "three", trusted);
	tag_release_openpgp(&f, stranger);
	stack_write_file(f.log, "");
	assert_int_equal(sync_once(&f), 1);
	assert_true(log_has(&f, "refusing tag 'release'"));
	assert_true(log_has(&f, stranger));
	expect_signed_value("one");

	tag_release_openpgp(&f, trusted);
	must_sync(&f);
	expect_signed_value("three");

	pgp_keys_done(&f, &keys);
	stack_rm_rf(dir);
	free(dir);
	fixture_done(&f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_faults__crd_and_its_resources_in_one_commit),
		cmocka_unit_test(test_faults__git_server_down_keeps_state_and_recovers),
		cmocka_unit_test(test_faults__kill_during_apply_then_converge),
		cmocka_unit_test(test_faults__only_commits_signed_by_a_trusted_key_apply),
		cmocka_unit_test(test_faults__ssh_signed_commits_apply_only_when_the_key_is_allowed),
		cmocka_unit_test(test_faults__ssh_signed_tag_mode_follows_only_trusted_tags),
		cmocka_unit_test(test_faults__openpgp_signed_tag_and_head_both_verified),
		cmocka_unit_test(test_faults__every_commit_since_the_applied_one_must_be_signed),
	};
	return cmocka_run_group_tests(tests, stack_load, NULL);
}
