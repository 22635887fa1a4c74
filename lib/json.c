#include "latch/json.h"

#include <malloc.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static void zeroing_free(void *p)
{
	if (p)
		explicit_bzero(p, malloc_usable_size(p));
	free(p);
}

/* jansson's lexer ignores a failed growth of its token buffer (the character is dropped and
 * the parse goes on), so a value can come back silently short under memory pressure; every
 * failed allocation is noted, and a parse during which one failed is refused. */
static _Thread_local unsigned long jansson_allocation_failures;

static void *noting_malloc(size_t n)
{
	void *p = malloc(n);
	if (!p)
		jansson_allocation_failures++;
	return p;
}

unsigned long latch_json_allocation_failures(void)
{
	return jansson_allocation_failures;
}

__attribute__((constructor)) static void install_allocator(void)
{
	json_set_alloc_funcs(noting_malloc, zeroing_free);
}

/* Nesting depth of the JSON text, counted outside strings; jansson's own limit is fixed at
 * build time, so ours is checked before it parses. Returns the position past the limit. */
static int check_depth(struct latch_view text, unsigned max_depth, size_t *ret_line, size_t *ret_column)
{
	unsigned depth = 0;
	bool in_string = false, escaped = false;
	size_t line = 1, column = 0;
	for (size_t i = 0; i < text.len; i++) {
		char c = text.ptr[i];
		column++;
		if (c == '\n') {
			line++;
			column = 0;
		}
		if (in_string) {
			if (escaped)
				escaped = false;
			else if (c == '\\')
				escaped = true;
			else if (c == '"')
				in_string = false;
			continue;
		}
		if (c == '"')
			in_string = true;
		else if ((c == '{' || c == '[') && ++depth > max_depth) {
			*ret_line = line;
			*ret_column = column;
			return LATCH_ELIMIT;
		} else if ((c == '}' || c == ']') && depth > 0)
			depth--;
	}
	return 0;
}

int latch_json_parse(struct latch_view text, const char *name, const struct latch_json_limits *limits,
		     json_t **ret, struct latch_error *err)
{
	if (text.len > limits->max_bytes)
		return latch_error_set(err, LATCH_ELIMIT, "%s: %zu bytes is more than the limit of %zu", name, text.len,
				       limits->max_bytes);
	size_t line, column;
	if (check_depth(text, limits->max_depth, &line, &column) < 0)
		return latch_error_set(err, LATCH_ELIMIT, "%s:%zu:%zu: nesting deeper than the limit of %u", name, line,
				       column, limits->max_depth);
	json_error_t jerr;
	unsigned long failures = jansson_allocation_failures;
	json_t *v = json_loadb(text.ptr, text.len, JSON_REJECT_DUPLICATES | JSON_DECODE_ANY | JSON_ALLOW_NUL, &jerr);
	if (jansson_allocation_failures != failures) {
		json_decref(v);
		return latch_error_set(err, LATCH_ENOMEM, "%s: out of memory while parsing", name);
	}
	if (!v) {
		/* jansson quotes the input "near '...'": that may be a token or a secret value. */
		char *near = strstr(jerr.text, " near ");
		if (near)
			*near = '\0';
		int col = jerr.column > 0 ? jerr.column : 1;
		return latch_error_set(err, LATCH_EPARSE, "%s:%d:%d: %s", name, jerr.line > 0 ? jerr.line : 1, col,
				       jerr.text);
	}
	*ret = v;
	return 0;
}

static int append_cb(const char *buffer, size_t size, void *data)
{
	return latch_buf_append(data, buffer, size) < 0 ? -1 : 0;
}

int latch_json_dump(const json_t *value, struct latch_buf *out, struct latch_error *err)
{
	if (json_dump_callback(value, append_cb, out, JSON_COMPACT | JSON_SORT_KEYS | JSON_ENCODE_ANY) < 0)
		return latch_error_set(err, LATCH_ELIMIT, "JSON output is larger than the limit of %zu bytes", out->max);
	return 0;
}

const char *latch_json_get_str(const json_t *obj, const char *key)
{
	return json_string_value(json_object_get(obj, key));
}

json_t *latch_json_path(const json_t *obj, const char *dotted)
{
	const char *p = dotted;
	json_t *cur = (json_t *)obj;
	while (cur && *p) {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		cur = json_object_getn(cur, p, n);
		p += n + (dot ? 1 : 0);
	}
	return cur;
}

static int compare_keys(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

const char **latch_json_sorted_keys(const json_t *obj, size_t *ret_n)
{
	size_t n = json_object_size(obj);
	const char **keys = calloc(n ? n : 1, sizeof(*keys));
	if (!keys)
		return NULL;
	size_t i = 0;
	const char *k;
	json_t *val;
	json_object_foreach((json_t *)obj, k, val) keys[i++] = k;
	qsort(keys, n, sizeof(*keys), compare_keys);
	*ret_n = n;
	return keys;
}

void latch_json_decrefp(json_t **p)
{
	json_decref(*p);
	*p = NULL;
}
