/* Helpers for the e2e tests that run pods on the stack's real node (kubelet, containerd,
 * runc): manifests go through latch-inject with the pod-facing Vault address and the
 * latch-init image the node holds, are applied through the API server, and what happened is
 * read back the way a user reads it: pod status, events and logs from the API server.
 * Every helper fails the current test (cmocka) instead of returning an error. */
#pragma once

#include <stdbool.h>

#include "latch/json.h"
#include "latch/k8s.h"

/* An image the node holds, as name@digest, from LATCH_IMAGE_<NAME> ("PSQL", "INIT", …). */
const char *node_image(const char *name);

struct latch_k8s *node_kube(void);

/* YAML text (name: where it came from, for errors) as a JSON array of its documents. */
json_t *node_parse_yaml(const char *yaml, const char *name);
/* latch-inject over YAML text, with --vault-addr $LATCH_POD_VAULT_ADDR and --image
 * $LATCH_IMAGE_INIT: the injected objects as a JSON array. */
json_t *node_inject(const char *yaml);
/* Server-side apply of every object of a JSON array. */
void node_apply_all(struct latch_k8s *k, const json_t *objects);
/* Delete every object of a JSON array (missing ones are fine), pods with them. */
void node_delete_all(struct latch_k8s *k, const json_t *objects);

/* The Secret vault-tls in ns holding the stack CA under ca.crt (the tls-secret annotation). */
void node_ensure_vault_tls(struct latch_k8s *k, const char *ns);

/* Wait until a pod matching the label selector satisfies done(pod, arg); returns that pod.
 * On timeout the test fails with the pods' status and events. */
/* The pods matching selector (a JSON array, to decref). */
json_t *node_list_pods(struct latch_k8s *k, const char *ns, const char *selector);
json_t *node_wait_pod(struct latch_k8s *k, const char *ns, const char *selector,
		      bool (*done)(const json_t *pod, void *arg), void *arg, double timeout_s);

/* Wait until no pod matching the selector is left (after deleting what made them). */
void node_wait_no_pods(struct latch_k8s *k, const char *ns, const char *selector, double timeout_s);

/* A container's status (init containers included), NULL when not reported yet. */
const char *node_pod_name(const json_t *pod);
const json_t *node_container_status(const json_t *pod, const char *container);
bool node_pod_running_ready(const json_t *pod, void *unused);
bool node_pod_succeeded(const json_t *pod, void *unused);

/* The container's log, through the API server (the kubelet serves it); previous: the log of
 * the instance before the last restart. */
char *node_logs(const char *ns, const char *pod, const char *container, bool previous);
/* The same, retried until the kubelet serves it (after the kubelet itself restarted). */
char *node_logs_when_served(const char *ns, const char *pod, const char *container, double timeout_s);
/* The events of an object, each "reason: message" on a line. */
char *node_events(struct latch_k8s *k, const char *ns, const char *name);

/* Where the kubelet mounted a pod's emptyDir volume on the node. */
char *node_volume_dir(const json_t *pod, const char *volume);
/* The pid, on the node, of a running container's first process. */
long node_container_pid(const json_t *pod, const char *container);
/* SIGKILL a container's processes through the node's runc, as an OOM kill would. */
void node_kill_container(const json_t *pod, const char *container);
