/* Whether an applied workload is healthy, from the object as the API server returns it. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "latch/json.h"

enum sync_health {
	SYNC_HEALTH_HEALTHY,
	SYNC_HEALTH_PROGRESSING,
	SYNC_HEALTH_FAILED,
};

/* reason (n bytes) says what is awaited or what failed. */
enum sync_health sync_health_of(const json_t *obj, char *reason, size_t n);
/* Whether objects of this kind have a rule (others are healthy once applied). */
bool sync_health_has_rules(const char *kind);
