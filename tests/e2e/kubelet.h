/* The kubelet stand-in: runs one container of a pod template, as read back from the
 * kube-apiserver, the way a kubelet would run it from a FROM scratch image: the static binary
 * alone in a new root, emptyDir volumes as directories, projected service-account tokens
 * made with the TokenRequest API for the pod's ServiceAccount, audience and expiry, Secret
 * volumes read from the API, the env and the uid/gid from the container spec.
 *
 * Lifecycle: kubelet_pod_new() -> kubelet_start()/kubelet_exec() -> kubelet_pod_free(). */
#pragma once

#include <sys/types.h>

#include "latch/json.h"

struct kubelet_pod;

/* template: the pod template (metadata + spec) or a Pod; ns: its namespace; binary: the
 * static executable standing in for every image's entrypoint. */
struct kubelet_pod *kubelet_pod_new(const json_t *pod_template, const char *ns, const char *binary);
void kubelet_pod_free(struct kubelet_pod *p);

/* Host path of a path inside the pod's root (volumes are directories there). */
const char *kubelet_host_path(struct kubelet_pod *p, const char *pod_path);
/* The container spec by name (initContainers first). */
const json_t *kubelet_container(const struct kubelet_pod *p, const char *name);

/* Start the container's command + args; output goes to log_path. */
pid_t kubelet_start(struct kubelet_pod *p, const char *container, const char *log_path);
/* Run argv inside the same container (a probe's exec); returns the exit status. */
int kubelet_exec(struct kubelet_pod *p, const char *container, const json_t *argv, const char *log_path, double timeout_s);
/* Run the container's startupProbe until it passes or timeout_s: 0 when it passed. */
int kubelet_wait_started(struct kubelet_pod *p, const char *container, const char *log_path, double timeout_s);
