/* The one growable byte buffer, with a hard cap set at creation, and the {ptr,len} view.
 *
 * A buffer starts empty (LATCH_BUF_INIT(max) or latch_buf_init), grows on append, and is
 * always NUL-terminated once it holds anything. An append past the cap fails with
 * LATCH_ELIMIT and leaves the contents unchanged. A failure is sticky, as in libgit2's
 * git_str: every later append fails with the same code and latch_buf_take() returns NULL, so
 * a sequence of appends is checked once, at the end (latch_buf_error, or take), and a failed
 * one can never leave a shorter string that looks whole (an object path cut back to its
 * collection's). latch_buf_reset() starts afresh. A buffer marked secret is zeroed whenever
 * memory it used is released (on growth, reset and done), so no copy of a token or a
 * secret value is left behind in freed memory. latch_buf_done() releases the contents;
 * latch_buf_take() hands them to the caller. */
#pragma once

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>

#include "latch/macro.h"

struct latch_view {
	const char *ptr;
	size_t len;
};

struct latch_buf {
	char *ptr;
	size_t len;
	size_t cap;
	size_t max;
	bool secret;
	int error; /* the first failed append's code, 0 while none failed */
	size_t dirty; /* how far it was written since it was last zeroed: what a reset zeroes */
};

#define LATCH_BUF_INIT(max_) { NULL, 0, 0, (max_), false, 0, 0 }
#define LATCH_SECRET_BUF_INIT(max_) { NULL, 0, 0, (max_), true, 0, 0 }

void latch_buf_init(struct latch_buf *b, size_t max, bool secret);
int latch_buf_append(struct latch_buf *b, const void *data, size_t n);
int latch_buf_append_str(struct latch_buf *b, const char *s);
int latch_buf_append_view(struct latch_buf *b, struct latch_view v);
int latch_buf_putc(struct latch_buf *b, char c);
int latch_buf_printf(struct latch_buf *b, const char *fmt, ...) _printf_(2, 3);
int latch_buf_vprintf(struct latch_buf *b, const char *fmt, va_list ap) _printf_(2, 0);
/* Empty the buffer, keeping its memory (zeroed first if secret), and forget a failure. */
void latch_buf_reset(struct latch_buf *b);
/* 0, or the code of the first append that failed since the buffer was made or reset. */
int latch_buf_error(const struct latch_buf *b) _warn_unused_;
/* 0, or the buffer's failure as an error saying what was being built ("request URL: longer
 * than 16384 bytes"). Check before a built string becomes a URL, a path or a selector: after
 * a failure latch_buf_str() holds only what came before it. */
struct latch_error;
int latch_buf_check(const struct latch_buf *b, const char *what, struct latch_error *err) _warn_unused_;
/* The contents as a NUL-terminated string ("" when empty); ownership passes to the caller,
 * the buffer is left empty. NULL when out of memory or when an append failed. */
char *latch_buf_take(struct latch_buf *b) _warn_unused_;
struct latch_view latch_buf_view(const struct latch_buf *b);
/* "" when empty; valid until the next change to the buffer. */
const char *latch_buf_str(const struct latch_buf *b);
void latch_buf_done(struct latch_buf *b);

/* Keep this process's memory, where secrets pass, out of core dumps (and out of reach of
 * ptrace by the same user). Programs call it first thing in main. */
void latch_secret_no_core_dumps(void);

/* Zero and free a string that held a secret. Accepts NULL. */
void latch_secret_free(char *s);
void latch_secret_freep(char **s);
#define _cleanup_secret_ _cleanup_(latch_secret_freep)

static inline struct latch_view latch_view_make(const char *ptr, size_t len)
{
	return (struct latch_view){ ptr, len };
}
struct latch_view latch_view_str(const char *s);
bool latch_view_eq(struct latch_view a, struct latch_view b);
bool latch_view_eq_str(struct latch_view a, const char *s);
bool latch_view_has_prefix(struct latch_view v, const char *prefix);
/* A NUL-terminated copy, or NULL when out of memory. */
char *latch_view_dup(struct latch_view v);
/* v without the characters of chars at its end: ("https://v:8200//", "/") -> "https://v:8200". */
struct latch_view latch_view_trim_end(struct latch_view v, const char *chars);
