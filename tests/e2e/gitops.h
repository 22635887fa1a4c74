/* Helpers for the latch-sync e2e tests: git repositories made by the test, latch-sync runs
 * against one of the stack's clusters, and reads of what landed there. */
#pragma once

#include <stdbool.h>
#include <sys/types.h>

#include "latch/json.h"
#include "latch/k8s.h"

/* Run a shell command in dir as a git user; fails the test if it fails. */
void gitops_sh(const char *dir, const char *cmd);
/* The commit a ref names in the repository at dir (40 hex digits, to free). */
char *gitops_rev(const char *dir, const char *ref);

/* latch-sync MODE --config CONFIG against the cluster of kubeconfig, output to log;
 * returns its exit status. The sanitizer options of the test reach it. */
int gitops_sync(const char *mode, const char *config, const char *kubeconfig, const char *log);
/* The same with extra arguments (NULL-terminated, or NULL). */
int gitops_sync_with(const char *mode, const char *config, const char *kubeconfig, const char *log,
		     const char *const extra[]);
/* latch-sync MODE in the background inside network namespace netns (ip netns exec, so
 * /etc/netns/NETNS/hosts names hosts there); the pid is latch-sync's. */
pid_t gitops_spawn_in(const char *netns, const char *mode, const char *config, const char *kubeconfig,
		      const char *log);
/* The same, started in the background with extra arguments (NULL-terminated). */
pid_t gitops_spawn(const char *config, const char *kubeconfig, const char *log, const char *const extra[]);
/* full_stacks false: ASan's fast unwinder (libgit2's leak suppressions need the slow one,
 * which makes a long run several times slower). */
pid_t gitops_spawn_with(const char *config, const char *kubeconfig, const char *log, const char *const extra[], bool full_stacks);

struct latch_k8s *gitops_kube(const char *kubeconfig);
/* The object, or NULL when it does not exist. */
json_t *gitops_get(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns, const char *name);
/* data[key] of a ConfigMap, copied; NULL when the ConfigMap or the key is missing. */
char *gitops_configmap_value(struct latch_k8s *k, const char *ns, const char *name, const char *key);

/* VmRSS of a process in KiB (-1 when gone), and how often needle occurs in a file. */
long gitops_rss_kib(pid_t pid);
size_t gitops_count_in(const char *path, const char *needle);
/* GET http://127.0.0.1:port/path: the status (-1 when nothing answered) and the body (to free). */
long gitops_http_get(int port, const char *path, char **ret_body);
/* A loopback port nobody listens on right now. */
int gitops_free_port(void);
