#define LATCH_ERROR_IMPL /* the real functions, not the analyzer's view of them */
#include "latch/error.h"

#include "latch/buf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void latch_freep(void *p)
{
	free(*(void **)p);
}

#define MESSAGE_MAX (64 * 1024)

static char *format_message(const char *fmt, va_list ap)
{
	struct latch_buf b = LATCH_BUF_INIT(MESSAGE_MAX);
	if (latch_buf_vprintf(&b, fmt, ap) < 0) {
		latch_buf_done(&b);
		return NULL;
	}
	return latch_buf_take(&b);
}

int latch_error_setv(struct latch_error *err, int code, const char *fmt, va_list ap)
{
	if (!err)
		return code;
	free(err->message);
	err->code = code;
	err->message = format_message(fmt, ap);
	return code;
}

int latch_error_set(struct latch_error *err, int code, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	latch_error_setv(err, code, fmt, ap);
	va_end(ap);
	return code;
}

int latch_error_setv_prefixed(struct latch_error *err, int code, const char *prefix, const char *fmt, va_list ap)
{
	struct latch_buf b = LATCH_BUF_INIT(MESSAGE_MAX);
	latch_buf_append_str(&b, prefix);
	latch_buf_vprintf(&b, fmt, ap);
	int r = latch_buf_error(&b) == LATCH_ENOMEM
			? latch_error_set(err, code, "%s (out of memory describing it)", latch_code_name(code))
			: latch_error_set(err, code, "%s", latch_buf_str(&b));
	latch_buf_done(&b);
	return r;
}

int latch_error_prefix(struct latch_error *err, const char *fmt, ...)
{
	if (!err)
		return LATCH_EINVAL;
	va_list ap;
	va_start(ap, fmt);
	struct latch_buf b = LATCH_BUF_INIT(MESSAGE_MAX);
	int r = latch_buf_vprintf(&b, fmt, ap);
	va_end(ap);
	if (r == 0)
		r = latch_buf_printf(&b, ": %s", latch_error_message(err));
	if (r == 0) {
		free(err->message);
		err->message = latch_buf_take(&b);
	}
	latch_buf_done(&b);
	return err->code;
}

const char *latch_code_name(int code)
{
	switch (code) {
	case LATCH_OK: return "success";
	case LATCH_ENOMEM: return "out of memory";
	case LATCH_EINVAL: return "invalid input";
	case LATCH_EPARSE: return "parse error";
	case LATCH_ELIMIT: return "limit reached";
	case LATCH_EIO: return "I/O error";
	case LATCH_ENOSPC: return "no space left on device";
	case LATCH_ECONNECT: return "connection failed";
	case LATCH_ETIMEOUT: return "timed out";
	case LATCH_ETLS: return "TLS error";
	case LATCH_EHTTP: return "unexpected HTTP status";
	case LATCH_ENOTFOUND: return "not found";
	case LATCH_EFORBIDDEN: return "permission denied";
	case LATCH_ECONFLICT: return "conflict";
	case LATCH_EUNSUPPORTED: return "not supported";
	default: return "unknown error";
	}
}

const char *latch_errno_message(int e)
{
	const char *text = strerrordesc_np(e); /* glibc >= 2.32: a constant string per value */
	return text ? text : "unknown error";
}

const char *latch_error_message(const struct latch_error *err)
{
	if (!err)
		return "unknown error";
	if (err->message)
		return err->message;
	return latch_code_name(err->code);
}

void latch_error_done(struct latch_error *err)
{
	if (!err)
		return;
	free(err->message);
	*err = (struct latch_error)LATCH_ERROR_INIT;
}
