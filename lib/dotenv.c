#include "latch/dotenv.h"

#include <stdlib.h>
#include <string.h>

#define VALUE_MAX (1u << 20)

struct cursor {
	const char *p, *end;
	const char *line_start;
	size_t line;
	const char *source;
	struct latch_error *err;
};

static int parse_error(const struct cursor *c, const char *why)
{
	return latch_error_set(c->err, LATCH_EPARSE, "%s:%zu:%zu: %s", c->source, c->line,
			       (size_t)(c->p - c->line_start) + 1, why);
}

static bool at_end_of_line(const struct cursor *c)
{
	return c->p == c->end || *c->p == '\n';
}

static bool name_char(char ch, bool first)
{
	bool letter = ch == '_' || (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
	return letter || (!first && ch >= '0' && ch <= '9');
}

static void skip_blanks(struct cursor *c)
{
	while (c->p < c->end && (*c->p == ' ' || *c->p == '\t' || *c->p == '\r'))
		c->p++;
}

static int single_quoted(struct cursor *c, struct latch_buf *value)
{
	const char *start = ++c->p;
	while (c->p < c->end && *c->p != '\'')
		c->p++;
	if (c->p == c->end) {
		c->p = start - 1;
		return parse_error(c, "a single quote is not closed");
	}
	int r = latch_buf_append(value, start, (size_t)(c->p - start));
	c->p++;
	return r;
}

static int double_quoted(struct cursor *c, struct latch_buf *value)
{
	const struct cursor opening = *c;
	c->p++;
	int r = 0;
	while (r == 0 && c->p < c->end && *c->p != '"') {
		char ch = *c->p++;
		if (ch == '\\' && c->p < c->end) {
			char e = *c->p++;
			ch = e == 'n' ? '\n' : e;
		}
		if (ch == '\n')
			c->line++, c->line_start = c->p;
		r = latch_buf_putc(value, ch);
	}
	if (r == 0 && c->p == c->end)
		return parse_error(&opening, "a double quote is not closed");
	c->p++;
	return r;
}

/* A shell word: quoted parts, backslash escapes and bare characters, up to a blank or the
 * end of the line. */
static int word(struct cursor *c, struct latch_buf *value)
{
	int r = 0;
	while (r == 0 && !at_end_of_line(c) && *c->p != ' ' && *c->p != '\t' && *c->p != '\r') {
		if (*c->p == '\'')
			r = single_quoted(c, value);
		else if (*c->p == '"')
			r = double_quoted(c, value);
		else if (*c->p == '\\' && c->p + 1 < c->end && c->p[1] != '\n')
			r = latch_buf_putc(value, c->p[1]), c->p += 2;
		else
			r = latch_buf_putc(value, *c->p++);
	}
	return r;
}

static int assignment(struct cursor *c, struct latch_env_list *list)
{
	if (c->end - c->p > 7 && strncmp(c->p, "export", 6) == 0 && (c->p[6] == ' ' || c->p[6] == '\t')) {
		c->p += 6;
		skip_blanks(c);
	}
	const char *key = c->p;
	while (c->p < c->end && name_char(*c->p, c->p == key))
		c->p++;
	if (c->p == key)
		return parse_error(c, "expected a variable name (letters, digits, _)");
	size_t key_len = (size_t)(c->p - key);
	if (c->p == c->end || *c->p != '=')
		return parse_error(c, "expected '=' after the variable name");
	c->p++;
	struct latch_buf value = LATCH_SECRET_BUF_INIT(VALUE_MAX);
	int r = word(c, &value);
	if (r == LATCH_ELIMIT)
		r = parse_error(c, "the value is longer than 1 MiB");
	if (r == 0) {
		skip_blanks(c);
		if (!at_end_of_line(c) && *c->p != '#')
			r = parse_error(c, "unexpected text after the value (quote a value that holds blanks)");
	}
	if (r == 0 && (r = latch_env_list_set(list, key, key_len, latch_buf_view(&value))) < 0)
		r = latch_error_set(c->err, r, "%s:%zu: %s", c->source, c->line,
				    r == LATCH_ELIMIT ? "more than 4096 variables" : "out of memory");
	latch_buf_done(&value);
	return r;
}

int latch_dotenv_parse(struct latch_view text, const char *source, struct latch_env_list *list,
		       struct latch_error *err)
{
	struct cursor c = { text.ptr, text.ptr + text.len, text.ptr, 1, source, err };
	if (memchr(text.ptr, '\0', text.len))
		return latch_error_set(err, LATCH_EPARSE, "%s: holds a NUL byte; not an environment file", source);
	while (c.p < c.end) {
		skip_blanks(&c);
		if (!at_end_of_line(&c) && *c.p != '#') {
			int r = assignment(&c, list);
			if (r < 0)
				return r;
		}
		while (!at_end_of_line(&c))
			c.p++;
		if (c.p < c.end)
			c.p++, c.line++, c.line_start = c.p;
	}
	return 0;
}

int latch_env_list_set(struct latch_env_list *list, const char *key, size_t key_len, struct latch_view value)
{
	struct latch_buf item = LATCH_SECRET_BUF_INIT(key_len + value.len + 2);
	int r = latch_buf_append(&item, key, key_len);
	if (r == 0)
		r = latch_buf_putc(&item, '=');
	if (r == 0)
		r = latch_buf_append_view(&item, value);
	char *s = r == 0 ? latch_buf_take(&item) : NULL;
	latch_buf_done(&item);
	if (!s)
		return LATCH_ENOMEM;
	for (size_t i = 0; i < list->n; i++)
		if (strncmp(list->items[i], s, key_len + 1) == 0) {
			latch_secret_free(list->items[i]);
			list->items[i] = s;
			return 0;
		}
	if (list->n >= LATCH_ENV_MAX_VARS) {
		latch_secret_free(s);
		return LATCH_ELIMIT;
	}
	char **grown = realloc(list->items, (list->n + 2) * sizeof(*grown));
	if (!grown) {
		latch_secret_free(s);
		return LATCH_ENOMEM;
	}
	list->items = grown;
	list->items[list->n++] = s;
	list->items[list->n] = NULL;
	return 0;
}

void latch_env_list_done(struct latch_env_list *list)
{
	for (size_t i = 0; i < list->n; i++)
		latch_secret_free(list->items[i]);
	free(list->items);
	*list = (struct latch_env_list){ 0 };
}
