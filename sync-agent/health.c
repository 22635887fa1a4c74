/* Health of applied workloads, judged from what the API server reports: the rules kubectl
 * rollout status and Flux use for Deployments, StatefulSets, DaemonSets and Jobs. Other
 * kinds are healthy once applied. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "health.h"

static long num(const json_t *obj, const char *path, long dflt)
{
	const json_t *v = latch_json_path(obj, path);
	return json_is_integer(v) ? (long)json_integer_value(v) : dflt;
}

static enum sync_health progressing(char *reason, size_t n, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static enum sync_health progressing(char *reason, size_t n, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	/* NOLINTNEXTLINE(clang-analyzer-valist.Uninitialized): va_start is the line above; clang 14 misreads it */
	vsnprintf(reason, n, fmt, ap);
	va_end(ap);
	return SYNC_HEALTH_PROGRESSING;
}

/* The controller has seen the latest spec. */
static bool observed(const json_t *obj, char *reason, size_t n)
{
	long generation = num(obj, "metadata.generation", 0), seen = num(obj, "status.observedGeneration", -1);
	if (seen >= generation)
		return true;
	snprintf(reason, n, "waiting for the controller to observe generation %ld (observed %ld)", generation, seen);
	return false;
}

static enum sync_health deployment(const json_t *obj, char *reason, size_t n)
{
	if (!observed(obj, reason, n))
		return SYNC_HEALTH_PROGRESSING;
	const json_t *c;
	size_t i;
	json_array_foreach(latch_json_path(obj, "status.conditions"), i, c) {
		if (latch_json_get_str(c, "type") && strcmp(latch_json_get_str(c, "type"), "Progressing") == 0 &&
		    latch_json_get_str(c, "reason") && strcmp(latch_json_get_str(c, "reason"), "ProgressDeadlineExceeded") == 0) {
			snprintf(reason, n, "progress deadline exceeded: %s", latch_json_get_str(c, "message") ? latch_json_get_str(c, "message") : "");
			return SYNC_HEALTH_FAILED;
		}
	}
	long want = num(obj, "spec.replicas", 1);
	long updated = num(obj, "status.updatedReplicas", 0), available = num(obj, "status.availableReplicas", 0);
	if (updated < want)
		return progressing(reason, n, "%ld of %ld replicas updated", updated, want);
	if (num(obj, "status.replicas", 0) > updated)
		return progressing(reason, n, "%ld old replicas still running (%ld updated)", num(obj, "status.replicas", 0) - updated, updated);
	if (available < want)
		return progressing(reason, n, "%ld of %ld replicas available", available, want);
	return SYNC_HEALTH_HEALTHY;
}

static enum sync_health statefulset(const json_t *obj, char *reason, size_t n)
{
	if (!observed(obj, reason, n))
		return SYNC_HEALTH_PROGRESSING;
	long want = num(obj, "spec.replicas", 1);
	long ready = num(obj, "status.readyReplicas", 0), updated = num(obj, "status.updatedReplicas", 0);
	if (updated < want)
		return progressing(reason, n, "%ld of %ld replicas updated", updated, want);
	if (ready < want)
		return progressing(reason, n, "%ld of %ld replicas ready", ready, want);
	const char *cur = latch_json_get_str(json_object_get(obj, "status"), "currentRevision");
	const char *upd = latch_json_get_str(json_object_get(obj, "status"), "updateRevision");
	if (cur && upd && strcmp(cur, upd) != 0)
		return progressing(reason, n, "rolling update in progress (%ld of %ld)", updated, want);
	return SYNC_HEALTH_HEALTHY;
}

static enum sync_health daemonset(const json_t *obj, char *reason, size_t n)
{
	if (!observed(obj, reason, n))
		return SYNC_HEALTH_PROGRESSING;
	long want = num(obj, "status.desiredNumberScheduled", 0);
	long updated = num(obj, "status.updatedNumberScheduled", 0), available = num(obj, "status.numberAvailable", 0);
	if (updated < want)
		return progressing(reason, n, "%ld of %ld pods updated", updated, want);
	if (available < want)
		return progressing(reason, n, "%ld of %ld pods available", available, want);
	return SYNC_HEALTH_HEALTHY;
}

static enum sync_health job(const json_t *obj, char *reason, size_t n)
{
	const json_t *c;
	size_t i;
	json_array_foreach(latch_json_path(obj, "status.conditions"), i, c) {
		const char *type = latch_json_get_str(c, "type"), *status = latch_json_get_str(c, "status");
		if (!type || !status || strcmp(status, "True") != 0)
			continue;
		if (strcmp(type, "Complete") == 0)
			return SYNC_HEALTH_HEALTHY;
		if (strcmp(type, "Failed") == 0) {
			snprintf(reason, n, "job failed: %s", latch_json_get_str(c, "message") ? latch_json_get_str(c, "message") : "");
			return SYNC_HEALTH_FAILED;
		}
	}
	snprintf(reason, n, "job running (%ld succeeded, %ld failed)", num(obj, "status.succeeded", 0), num(obj, "status.failed", 0));
	return SYNC_HEALTH_PROGRESSING;
}

bool sync_health_has_rules(const char *kind)
{
	static const char *const kinds[] = { "Deployment", "StatefulSet", "DaemonSet", "Job", NULL };
	for (int i = 0; kind && kinds[i]; i++)
		if (strcmp(kind, kinds[i]) == 0)
			return true;
	return false;
}

enum sync_health sync_health_of(const json_t *obj, char *reason, size_t n)
{
	const char *kind = latch_json_get_str(obj, "kind");
	reason[0] = '\0';
	if (!kind)
		return SYNC_HEALTH_HEALTHY;
	if (strcmp(kind, "Deployment") == 0)
		return deployment(obj, reason, n);
	if (strcmp(kind, "StatefulSet") == 0)
		return statefulset(obj, reason, n);
	if (strcmp(kind, "DaemonSet") == 0)
		return daemonset(obj, reason, n);
	if (strcmp(kind, "Job") == 0)
		return job(obj, reason, n);
	return SYNC_HEALTH_HEALTHY;
}
