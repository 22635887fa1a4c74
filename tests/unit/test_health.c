/* Health rules on status documents shaped as the API server returns them (the stack has no
 * controllers, so no workload there ever reports status). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "health.h"

static enum sync_health judge(const char *doc, char *reason)
{
	json_t *obj = json_loads(doc, 0, NULL);
	assert_non_null(obj);
	enum sync_health h = sync_health_of(obj, reason, 512);
	json_decref(obj);
	return h;
}

static void test_health__deployment(void **state)
{
	char reason[512];
	/* Just applied: no controller has looked at it yet. */
	assert_int_equal(judge("{\"kind\":\"Deployment\",\"metadata\":{\"generation\":1},\"spec\":{\"replicas\":2},\"status\":{}}", reason),
			 SYNC_HEALTH_PROGRESSING);
	assert_non_null(strstr(reason, "observe generation 1"));
	/* Rolling: one of two updated. */
	assert_int_equal(judge("{\"kind\":\"Deployment\",\"metadata\":{\"generation\":3},\"spec\":{\"replicas\":2},\"status\":{\"observedGeneration\":3,"
			       "\"replicas\":3,\"updatedReplicas\":1,\"readyReplicas\":2,\"availableReplicas\":2}}", reason),
			 SYNC_HEALTH_PROGRESSING);
	assert_string_equal(reason, "1 of 2 replicas updated");
	/* Old replicas still terminating. */
	assert_int_equal(judge("{\"kind\":\"Deployment\",\"metadata\":{\"generation\":3},\"spec\":{\"replicas\":2},\"status\":{\"observedGeneration\":3,"
			       "\"replicas\":3,\"updatedReplicas\":2,\"availableReplicas\":2}}", reason),
			 SYNC_HEALTH_PROGRESSING);
	assert_int_equal(judge("{\"kind\":\"Deployment\",\"metadata\":{\"generation\":3},\"spec\":{\"replicas\":2},\"status\":{\"observedGeneration\":3,"
			       "\"replicas\":2,\"updatedReplicas\":2,\"readyReplicas\":2,\"availableReplicas\":2,\"conditions\":[{\"type\":\"Available\","
			       "\"status\":\"True\"},{\"type\":\"Progressing\",\"status\":\"True\",\"reason\":\"NewReplicaSetAvailable\"}]}}", reason),
			 SYNC_HEALTH_HEALTHY);
	assert_int_equal(judge("{\"kind\":\"Deployment\",\"metadata\":{\"generation\":4},\"spec\":{\"replicas\":1},\"status\":{\"observedGeneration\":4,"
			       "\"replicas\":2,\"updatedReplicas\":1,\"conditions\":[{\"type\":\"Progressing\",\"status\":\"False\",\"reason\":"
			       "\"ProgressDeadlineExceeded\",\"message\":\"ReplicaSet \\\"web-7d\\\" has timed out progressing.\"}]}}", reason),
			 SYNC_HEALTH_FAILED);
	assert_non_null(strstr(reason, "has timed out progressing"));
	/* replicas omitted means 1. */
	assert_int_equal(judge("{\"kind\":\"Deployment\",\"metadata\":{\"generation\":1},\"spec\":{},\"status\":{\"observedGeneration\":1,"
			       "\"replicas\":1,\"updatedReplicas\":1,\"availableReplicas\":1}}", reason),
			 SYNC_HEALTH_HEALTHY);
}

static void test_health__statefulset_daemonset_job(void **state)
{
	char reason[512];
	assert_int_equal(judge("{\"kind\":\"StatefulSet\",\"metadata\":{\"generation\":2},\"spec\":{\"replicas\":3},\"status\":{\"observedGeneration\":2,"
			       "\"replicas\":3,\"readyReplicas\":3,\"updatedReplicas\":3,\"currentRevision\":\"db-5f\",\"updateRevision\":\"db-6a\"}}", reason),
			 SYNC_HEALTH_PROGRESSING);
	assert_int_equal(judge("{\"kind\":\"StatefulSet\",\"metadata\":{\"generation\":2},\"spec\":{\"replicas\":3},\"status\":{\"observedGeneration\":2,"
			       "\"replicas\":3,\"readyReplicas\":3,\"updatedReplicas\":3,\"currentRevision\":\"db-6a\",\"updateRevision\":\"db-6a\"}}", reason),
			 SYNC_HEALTH_HEALTHY);
	assert_int_equal(judge("{\"kind\":\"DaemonSet\",\"metadata\":{\"generation\":1},\"status\":{\"observedGeneration\":1,\"desiredNumberScheduled\":3,"
			       "\"updatedNumberScheduled\":3,\"numberAvailable\":2,\"numberReady\":2}}", reason),
			 SYNC_HEALTH_PROGRESSING);
	assert_string_equal(reason, "2 of 3 pods available");
	assert_int_equal(judge("{\"kind\":\"Job\",\"status\":{\"active\":1}}", reason), SYNC_HEALTH_PROGRESSING);
	assert_int_equal(judge("{\"kind\":\"Job\",\"status\":{\"succeeded\":1,\"conditions\":[{\"type\":\"SuccessCriteriaMet\",\"status\":\"True\"},"
			       "{\"type\":\"Complete\",\"status\":\"True\"}]}}", reason),
			 SYNC_HEALTH_HEALTHY);
	assert_int_equal(judge("{\"kind\":\"Job\",\"status\":{\"failed\":6,\"conditions\":[{\"type\":\"Failed\",\"status\":\"True\",\"reason\":"
			       "\"BackoffLimitExceeded\",\"message\":\"Job has reached the specified backoff limit\"}]}}", reason),
			 SYNC_HEALTH_FAILED);
	assert_non_null(strstr(reason, "backoff limit"));
	assert_int_equal(judge("{\"kind\":\"ConfigMap\",\"data\":{}}", reason), SYNC_HEALTH_HEALTHY);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_health__deployment),
		cmocka_unit_test(test_health__statefulset_daemonset_job),
	};
	return cmocka_run_group_tests(tests, NULL, NULL);
}
