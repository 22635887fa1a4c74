#include "gitops.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "latch/buf.h"
#include "stack.h"

void gitops_sh(const char *dir, const char *cmd)
{
	char full[8192];
	snprintf(full, sizeof(full), "cd '%s' && %s", dir, cmd);
	char *argv[] = { "/bin/sh", "-c", full, NULL };
	char *envp[] = { "PATH=/usr/bin:/bin", "GIT_AUTHOR_NAME=t", "GIT_AUTHOR_EMAIL=t@example.org", "GIT_COMMITTER_NAME=t",
			 "GIT_COMMITTER_EMAIL=t@example.org", "HOME=/tmp", NULL };
	if (stack_run(argv, envp, "/dev/null", 60, NULL) != 0)
		fail_msg("command failed in %s: %s", dir, cmd);
}

char *gitops_rev(const char *dir, const char *ref)
{
	char out[1024], cmd[2048];
	snprintf(out, sizeof(out), "%s/.rev-XXXXXX", dir);
	snprintf(cmd, sizeof(cmd), "git rev-parse '%s' > '%s'", ref, out);
	gitops_sh(dir, cmd);
	char *sha = stack_read_file(out);
	if (!sha || strlen(sha) < 40)
		fail_msg("no revision for %s in %s", ref, dir);
	sha[40] = '\0';
	remove(out);
	return sha;
}

struct sync_env {
	char kube[1024], lsan[1024], asan[1024];
	char *envp[4];
};

static void sync_env_init(struct sync_env *e, const char *kubeconfig, bool full_stacks)
{
	snprintf(e->kube, sizeof(e->kube), "KUBECONFIG=%s", kubeconfig);
	/* The sanitizer build's options and suppressions (tests/lsan.supp) reach the agent too. */
	snprintf(e->lsan, sizeof(e->lsan), "LSAN_OPTIONS=%s", getenv("LSAN_OPTIONS") ? getenv("LSAN_OPTIONS") : "");
	/* Full stacks for leaks: libgit2 has no frame pointers, and the suppressions match on
	 * frames below it. */
	snprintf(e->asan, sizeof(e->asan), "ASAN_OPTIONS=%s%s%s", getenv("ASAN_OPTIONS") ? getenv("ASAN_OPTIONS") : "",
		 getenv("ASAN_OPTIONS") && full_stacks ? ":" : "", full_stacks ? "fast_unwind_on_malloc=0" : "");
	e->envp[0] = e->kube;
	e->envp[1] = e->lsan;
	e->envp[2] = e->asan;
	e->envp[3] = NULL;
}

static char *sync_bin(void)
{
	char *bin = getenv("LATCH_SYNC");
	if (!bin)
		fail_msg("LATCH_SYNC is not set");
	return bin;
}

int gitops_sync(const char *mode, const char *config, const char *kubeconfig, const char *log)
{
	return gitops_sync_with(mode, config, kubeconfig, log, NULL);
}

int gitops_sync_with(const char *mode, const char *config, const char *kubeconfig, const char *log,
		     const char *const extra[])
{
	struct sync_env e;
	sync_env_init(&e, kubeconfig, true);
	char *argv[16] = { sync_bin(), (char *)mode, "--config", (char *)config };
	size_t n = 4;
	for (size_t i = 0; extra && extra[i] && n < 15; i++)
		argv[n++] = (char *)extra[i];
	return stack_run(argv, e.envp, log, 180, NULL);
}

pid_t gitops_spawn_in(const char *netns, const char *mode, const char *config, const char *kubeconfig,
		      const char *log)
{
	struct sync_env e;
	sync_env_init(&e, kubeconfig, true);
	char *argv[] = { "ip", "netns", "exec", (char *)netns, sync_bin(), (char *)mode, "--config", (char *)config,
			 NULL };
	return stack_spawn(argv, e.envp, log);
}

pid_t gitops_spawn(const char *config, const char *kubeconfig, const char *log, const char *const extra[])
{
	return gitops_spawn_with(config, kubeconfig, log, extra, true);
}

pid_t gitops_spawn_with(const char *config, const char *kubeconfig, const char *log, const char *const extra[], bool full_stacks)
{
	struct sync_env e;
	sync_env_init(&e, kubeconfig, full_stacks);
	char *argv[16] = { sync_bin(), "run", "--config", (char *)config };
	size_t n = 4;
	for (size_t i = 0; extra && extra[i] && n < 15; i++)
		argv[n++] = (char *)extra[i];
	argv[n] = NULL;
	return stack_spawn(argv, e.envp, log);
}

struct latch_k8s *gitops_kube(const char *kubeconfig)
{
	struct latch_k8s *k = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	if (latch_k8s_from_kubeconfig(kubeconfig, &k, &err) < 0)
		fail_msg("%s", latch_error_message(&err));
	return k;
}

json_t *gitops_get(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns, const char *name)
{
	json_t *obj = NULL;
	struct latch_error err = LATCH_ERROR_INIT;
	int r = latch_k8s_get(k, api_version, kind, ns, name, &obj, &err);
	if (r < 0 && r != LATCH_ENOTFOUND)
		fail_msg("getting %s %s/%s: %s", kind, ns ? ns : "", name, latch_error_message(&err));
	latch_error_done(&err);
	return r == 0 ? obj : NULL;
}

char *gitops_configmap_value(struct latch_k8s *k, const char *ns, const char *name, const char *key)
{
	json_t *cm = gitops_get(k, "v1", "ConfigMap", ns, name);
	const char *v = latch_json_get_str(json_object_get(cm, "data"), key);
	char *copy = v ? strdup(v) : NULL;
	json_decref(cm);
	return copy;
}

long gitops_rss_kib(pid_t pid)
{
	char path[64];
	snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
	char *status = stack_read_file(path);
	const char *line = status ? strstr(status, "VmRSS:") : NULL;
	long kib = line ? strtol(line + 6, NULL, 10) : -1;
	free(status);
	return kib;
}

size_t gitops_count_in(const char *path, const char *needle)
{
	char *text = stack_read_file(path);
	size_t n = 0;
	for (const char *p = text; p && (p = strstr(p, needle)); p++)
		n++;
	free(text);
	return n;
}

long gitops_http_get(int port, const char *path, char **ret_body)
{
	*ret_body = NULL;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	if (fd < 0 || connect(fd, (struct sockaddr *)&a, sizeof(a)) < 0) {
		if (fd >= 0)
			close(fd);
		return -1;
	}
	char request[512];
	int n = snprintf(request, sizeof(request), "GET %s HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n", path);
	struct latch_buf answer = LATCH_BUF_INIT(4u << 20);
	char chunk[4096];
	ssize_t got;
	if (write(fd, request, (size_t)n) == n)
		while ((got = read(fd, chunk, sizeof(chunk))) > 0)
			latch_buf_append(&answer, chunk, (size_t)got);
	close(fd);
	long status = -1;
	const char *text = latch_buf_str(&answer);
	const char *body = text ? strstr(text, "\r\n\r\n") : NULL;
	if (text && sscanf(text, "HTTP/1.1 %ld", &status) == 1 && body)
		*ret_body = strdup(body + 4);
	latch_buf_done(&answer);
	return status;
}

int gitops_free_port(void)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in a = { .sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
	socklen_t len = sizeof(a);
	if (fd < 0 || bind(fd, (struct sockaddr *)&a, sizeof(a)) < 0 || getsockname(fd, (struct sockaddr *)&a, &len) < 0)
		fail_msg("no free port");
	close(fd);
	return ntohs(a.sin_port);
}
