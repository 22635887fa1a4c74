/* Monotonic time for deadlines, schedules and measured durations (never the wall clock,
 * which NTP may step). */
#pragma once

/* Seconds since an arbitrary point, with sub-microsecond resolution. */
double latch_monotonic_s(void);
