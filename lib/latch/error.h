/* The error model: every fallible function returns 0 or a negative latch code and fills a
 * caller-owned struct latch_error with what failed, on which object, and why. Library code
 * never prints; the program prints the error once.
 *
 * Lifecycle: struct latch_error err = LATCH_ERROR_INIT; ...; latch_error_done(&err). */
#pragma once

#include <stdarg.h>

#include "latch/macro.h"

enum latch_code {
	LATCH_OK = 0,
	LATCH_ENOMEM = -1,      /* out of memory */
	LATCH_EINVAL = -2,      /* bad input or argument */
	LATCH_EPARSE = -3,      /* input does not parse (JSON, YAML, template) */
	LATCH_ELIMIT = -4,      /* a configured limit was reached (size, depth, count) */
	LATCH_EIO = -5,         /* a file system call failed */
	LATCH_ENOSPC = -6,      /* no space left on the target file system */
	LATCH_ECONNECT = -7,    /* could not connect or the connection broke */
	LATCH_ETIMEOUT = -8,    /* a timeout or a deadline passed */
	LATCH_ETLS = -9,        /* TLS handshake or verification failed */
	LATCH_EHTTP = -10,      /* the server answered with a status the caller did not accept */
	LATCH_ENOTFOUND = -11,  /* 404 or a missing file or key */
	LATCH_EFORBIDDEN = -12, /* 401/403 */
	LATCH_ECONFLICT = -13,  /* 409 */
	LATCH_EUNSUPPORTED = -14, /* valid input that latch does not support */
};

struct latch_error {
	int code;
	long http_status; /* the HTTP status that caused the error, 0 if none */
	char *message;    /* NULL when no error was recorded */
};

#define LATCH_ERROR_INIT { 0, 0, NULL }

/* Record an error (replacing any earlier one) and return code, so callers can write
 * `return latch_error_set(err, LATCH_EINVAL, "...")`. err may be NULL. */
int latch_error_set(struct latch_error *err, int code, const char *fmt, ...) _printf_(3, 4);
int latch_error_setv(struct latch_error *err, int code, const char *fmt, va_list ap) _printf_(3, 0);

/* Record "<prefix><formatted message>": the shape of every positioned error
 * ("file:3:7: Deployment 'web': ..."). */
int latch_error_setv_prefixed(struct latch_error *err, int code, const char *prefix, const char *fmt, va_list ap)
	_printf_(4, 0);

/* Prefix the recorded message with context ("reading 'x': <old message>"); returns the code. */
int latch_error_prefix(struct latch_error *err, const char *fmt, ...) _printf_(2, 3);

/* The message, or a description of the code when no message was recorded. Never NULL. */
const char *latch_error_message(const struct latch_error *err);
const char *latch_code_name(int code);

/* The text of an errno value, as strerror() gives it, but safe to call from any thread
 * (strerror may share one buffer between threads). Never NULL. */
const char *latch_errno_message(int e);

void latch_error_done(struct latch_error *err);

#if defined(__clang_analyzer__) && !defined(LATCH_ERROR_IMPL)
/* The static analyzer (dev/lint) sees one file at a time, so it cannot know that these return
 * their code argument, a negative constant, and follows impossible "failed but returned 0"
 * paths. Only the analysis sees these definitions (lib/error.c, defining them, does not). */
#define latch_error_set(err, code, ...) (latch_error_set((err), (code), __VA_ARGS__), (code))
#define latch_error_setv(err, code, fmt, ap) (latch_error_setv((err), (code), (fmt), (ap)), (code))
#define latch_error_setv_prefixed(err, code, prefix, fmt, ap) \
	(latch_error_setv_prefixed((err), (code), (prefix), (fmt), (ap)), (code))
#endif
