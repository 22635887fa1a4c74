#include "latch/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "latch/buf.h"
#include "latch/error.h"
#include "latch/file.h"

#define LOG_LINE_MAX (64 * 1024)

static struct {
	int fd;
	enum latch_log_format format;
	enum latch_log_level min_level;
} log_config = { STDERR_FILENO, LATCH_LOG_TEXT, LATCH_LOG_INFO };

static const char *const level_names[] = { "debug", "info", "warn", "error" };

void latch_log_setup(int fd, enum latch_log_format format, enum latch_log_level min_level)
{
	log_config.fd = fd;
	log_config.format = format;
	log_config.min_level = min_level;
}

int latch_log_format_parse(const char *name, enum latch_log_format *ret_format)
{
	if (strcmp(name, "text") == 0)
		*ret_format = LATCH_LOG_TEXT;
	else if (strcmp(name, "json") == 0)
		*ret_format = LATCH_LOG_JSON;
	else
		return LATCH_EINVAL;
	return 0;
}

int latch_log_level_parse(const char *name, enum latch_log_level *ret_level)
{
	for (size_t i = 0; i < ELEMENTSOF(level_names); i++)
		if (strcmp(name, level_names[i]) == 0) {
			*ret_level = (enum latch_log_level)i;
			return 0;
		}
	return LATCH_EINVAL;
}

bool latch_log_key_is_secret(const char *key)
{
	static const char *const words[] = { "token", "password", "passwd", "secret", "private",
					     "credential", "jwt", "key_pem", "client_key", "value" };
	for (size_t i = 0; i < ELEMENTSOF(words); i++)
		if (strcasestr(key, words[i]))
			return true;
	return false;
}

static void append_json_string(struct latch_buf *b, const char *s)
{
	latch_buf_putc(b, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '"' || *p == '\\') {
			latch_buf_putc(b, '\\');
			latch_buf_putc(b, (char)*p);
		} else if (*p == '\n') {
			latch_buf_append_str(b, "\\n");
		} else if (*p < 0x20) {
			latch_buf_printf(b, "\\u%04x", *p);
		} else {
			latch_buf_putc(b, (char)*p);
		}
	}
	latch_buf_putc(b, '"');
}

static bool needs_quotes(const char *s)
{
	return *s == '\0' || strpbrk(s, " \t\n\"=") != NULL;
}

static void append_text_value(struct latch_buf *b, const char *s)
{
	if (needs_quotes(s))
		append_json_string(b, s);
	else
		latch_buf_append_str(b, s);
}

static void append_timestamp(struct latch_buf *b)
{
	struct timespec ts;
	struct tm tm;
	clock_gettime(CLOCK_REALTIME, &ts);
	gmtime_r(&ts.tv_sec, &tm);
	latch_buf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
			 tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000);
}

static const char *field_value(const struct latch_log_field *f)
{
	if (latch_log_key_is_secret(f->key))
		return "<redacted>";
	return f->value ? f->value : "";
}

static void format_text(struct latch_buf *b, enum latch_log_level level, const char *msg,
			const struct latch_log_field *fields, size_t n)
{
	append_timestamp(b);
	latch_buf_printf(b, " %-5s %s", level_names[level], msg);
	for (size_t i = 0; i < n; i++) {
		latch_buf_printf(b, " %s=", fields[i].key);
		append_text_value(b, field_value(&fields[i]));
	}
}

static void format_json(struct latch_buf *b, enum latch_log_level level, const char *msg,
			const struct latch_log_field *fields, size_t n)
{
	latch_buf_append_str(b, "{\"time\":\"");
	append_timestamp(b);
	latch_buf_printf(b, "\",\"level\":\"%s\",\"msg\":", level_names[level]);
	append_json_string(b, msg);
	for (size_t i = 0; i < n; i++) {
		latch_buf_putc(b, ',');
		append_json_string(b, fields[i].key);
		latch_buf_putc(b, ':');
		append_json_string(b, field_value(&fields[i]));
	}
	latch_buf_putc(b, '}');
}

void latch_log_fields(enum latch_log_level level, const char *msg,
		      const struct latch_log_field *fields, size_t n_fields)
{
	if (level < log_config.min_level || (unsigned)level >= ELEMENTSOF(level_names))
		return;
	struct latch_buf line = LATCH_BUF_INIT(LOG_LINE_MAX);
	if (log_config.format == LATCH_LOG_JSON)
		format_json(&line, level, msg, fields, n_fields);
	else
		format_text(&line, level, msg, fields, n_fields);
	latch_buf_putc(&line, '\n');
	(void)latch_write_all(log_config.fd, latch_buf_view(&line)); /* a log line that cannot be written is lost */
	latch_buf_done(&line);
}

void latch_logf(enum latch_log_level level, const char *fmt, ...)
{
	if (level < log_config.min_level)
		return;
	struct latch_buf msg = LATCH_BUF_INIT(LOG_LINE_MAX);
	va_list ap;
	va_start(ap, fmt);
	latch_buf_vprintf(&msg, fmt, ap);
	va_end(ap);
	latch_log_fields(level, latch_buf_str(&msg), NULL, 0);
	latch_buf_done(&msg);
}
