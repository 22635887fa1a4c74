/* Logging for the programs: one line per event on a file descriptor (stderr by default),
 * human text or JSON lines. Fields are key/value strings; a field whose key names a secret
 * (token, password, secret, key material...) is written as "<redacted>", so a slip in a
 * caller cannot put a value in a log. The library's other modules never log.
 *
 * Setup once at program start with latch_log_setup(); the settings are process-wide. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "latch/macro.h"

enum latch_log_level {
	LATCH_LOG_DEBUG,
	LATCH_LOG_INFO,
	LATCH_LOG_WARN,
	LATCH_LOG_ERROR,
};

enum latch_log_format {
	LATCH_LOG_TEXT,
	LATCH_LOG_JSON,
};

struct latch_log_field {
	const char *key;
	const char *value;
};

void latch_log_setup(int fd, enum latch_log_format format, enum latch_log_level min_level);
/* "text" or "json"; -LATCH_EINVAL otherwise. */
int latch_log_format_parse(const char *name, enum latch_log_format *ret_format);
/* "debug", "info", "warn", "error". */
int latch_log_level_parse(const char *name, enum latch_log_level *ret_level);

/* True when a field with this key is never written with its value. */
bool latch_log_key_is_secret(const char *key);

void latch_log_fields(enum latch_log_level level, const char *msg,
		      const struct latch_log_field *fields, size_t n_fields);
void latch_logf(enum latch_log_level level, const char *fmt, ...) _printf_(2, 3);

#define LATCH_LOG(level, msg, ...)                                                        \
	latch_log_fields(level, msg, (const struct latch_log_field[]){ { NULL, NULL }, ##__VA_ARGS__ } + 1, \
			 sizeof((const struct latch_log_field[]){ { NULL, NULL }, ##__VA_ARGS__ }) /      \
					 sizeof(struct latch_log_field) - 1)
