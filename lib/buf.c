#include "latch/buf.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>

#include "latch/error.h"

void latch_buf_init(struct latch_buf *b, size_t max, bool secret)
{
	*b = (struct latch_buf){ .max = max, .secret = secret };
}

static void release(char *ptr, size_t cap, bool secret)
{
	if (ptr && secret)
		explicit_bzero(ptr, cap);
	free(ptr);
}

/* Make room for `need` bytes plus the terminating NUL. A secret buffer never uses realloc:
 * realloc could leave the old copy behind unzeroed. */
static int ensure(struct latch_buf *b, size_t need)
{
	if (need > b->max)
		return LATCH_ELIMIT;
	if (need + 1 <= b->cap)
		return 0;
	size_t cap = b->cap ? b->cap : 64;
	while (cap < need + 1)
		cap = cap > SIZE_MAX / 2 ? need + 1 : cap * 2;
	if (cap > b->max + 1)
		cap = b->max + 1;
	char *p;
	if (b->secret) {
		p = calloc(1, cap); /* zero past what is copied: a reset zeroes only up to dirty */
		if (!p)
			return LATCH_ENOMEM;
		if (b->ptr)
			memcpy(p, b->ptr, b->len + 1);
		release(b->ptr, b->cap, true);
	} else {
		p = realloc(b->ptr, cap);
		if (!p)
			return LATCH_ENOMEM;
	}
	if (!b->ptr)
		p[0] = '\0';
	b->ptr = p;
	b->cap = cap;
	return 0;
}

/* The first failure sticks: see buf.h. */
static int failed(struct latch_buf *b, int code)
{
	if (!b->error)
		b->error = code;
	return code;
}

int latch_buf_append(struct latch_buf *b, const void *data, size_t n)
{
	if (b->error)
		return b->error;
	if (n > SIZE_MAX - b->len - 1)
		return failed(b, LATCH_ELIMIT);
	int r = ensure(b, b->len + n);
	if (r < 0)
		return failed(b, r);
	if (n)
		memcpy(b->ptr + b->len, data, n);
	b->len += n;
	b->ptr[b->len] = '\0';
	if (b->len > b->dirty)
		b->dirty = b->len;
	return 0;
}

int latch_buf_append_str(struct latch_buf *b, const char *s)
{
	return latch_buf_append(b, s, strlen(s));
}

int latch_buf_append_view(struct latch_buf *b, struct latch_view v)
{
	return latch_buf_append(b, v.ptr, v.len);
}

int latch_buf_putc(struct latch_buf *b, char c)
{
	return latch_buf_append(b, &c, 1);
}

int latch_buf_vprintf(struct latch_buf *b, const char *fmt, va_list ap)
{
	if (b->error)
		return b->error;
	va_list copy;
	va_copy(copy, ap);
	int n = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (n < 0)
		return failed(b, LATCH_EINVAL);
	int r = ensure(b, b->len + (size_t)n);
	if (r < 0)
		return failed(b, r);
	vsnprintf(b->ptr + b->len, (size_t)n + 1, fmt, ap);
	b->len += (size_t)n;
	if (b->len > b->dirty)
		b->dirty = b->len;
	return 0;
}

int latch_buf_printf(struct latch_buf *b, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = latch_buf_vprintf(b, fmt, ap);
	va_end(ap);
	return r;
}

void latch_buf_reset(struct latch_buf *b)
{
	/* Past dirty nothing was written since the last zeroing (a caller may have lowered len). */
	if (b->ptr) {
		if (b->secret)
			explicit_bzero(b->ptr, b->dirty + 1 < b->cap ? b->dirty + 1 : b->cap);
		b->ptr[0] = '\0';
	}
	b->len = 0;
	b->dirty = 0;
	b->error = 0;
}

int latch_buf_error(const struct latch_buf *b)
{
	return b->error;
}

int latch_buf_check(const struct latch_buf *b, const char *what, struct latch_error *err)
{
	if (b->error == LATCH_ELIMIT)
		return latch_error_set(err, LATCH_ELIMIT, "%s: longer than %zu bytes", what, b->max);
	if (b->error)
		return latch_error_set(err, b->error, "%s: out of memory", what);
	return 0;
}

char *latch_buf_take(struct latch_buf *b)
{
	if (b->error) {
		latch_buf_done(b);
		return NULL;
	}
	if (!b->ptr && ensure(b, 0) < 0)
		return NULL;
	char *p = b->ptr;
	b->ptr = NULL;
	b->len = b->cap = b->dirty = 0;
	return p;
}

struct latch_view latch_buf_view(const struct latch_buf *b)
{
	return (struct latch_view){ b->ptr ? b->ptr : "", b->len };
}

const char *latch_buf_str(const struct latch_buf *b)
{
	return b->ptr ? b->ptr : "";
}

void latch_buf_done(struct latch_buf *b)
{
	release(b->ptr, b->cap, b->secret);
	b->ptr = NULL;
	b->len = b->cap = b->dirty = 0;
	b->error = 0;
}

void latch_secret_free(char *s)
{
	if (!s)
		return;
	explicit_bzero(s, strlen(s));
	free(s);
}

void latch_secret_freep(char **s)
{
	latch_secret_free(*s);
	*s = NULL;
}

struct latch_view latch_view_str(const char *s)
{
	return (struct latch_view){ s, s ? strlen(s) : 0 };
}

bool latch_view_eq(struct latch_view a, struct latch_view b)
{
	return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

bool latch_view_eq_str(struct latch_view a, const char *s)
{
	return latch_view_eq(a, latch_view_str(s));
}

bool latch_view_has_prefix(struct latch_view v, const char *prefix)
{
	size_t n = strlen(prefix);
	return v.len >= n && memcmp(v.ptr, prefix, n) == 0;
}

struct latch_view latch_view_trim_end(struct latch_view v, const char *chars)
{
	while (v.len > 0 && v.ptr[v.len - 1] != '\0' && strchr(chars, v.ptr[v.len - 1]))
		v.len--;
	return v;
}

char *latch_view_dup(struct latch_view v)
{
	char *s = malloc(v.len + 1);
	if (!s)
		return NULL;
	if (v.len)
		memcpy(s, v.ptr, v.len);
	s[v.len] = '\0';
	return s;
}

void latch_secret_no_core_dumps(void)
{
	struct rlimit none = { 0, 0 };
	setrlimit(RLIMIT_CORE, &none);
	prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
}
