#include "latch/template.h"

#include "latch/base64.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define TEMPLATE_MAX_DEFAULT (1u << 20)
#define MAX_NESTING 64
#define MAX_RANGE_ITEMS 100000

/* ---- syntax tree ---- */

enum arg_kind { A_DOT, A_FIELD, A_VAR, A_STRING, A_NUMBER, A_BOOL, A_NIL, A_FUNC, A_PIPE };

enum func_id { F_SECRET, F_INDEX, F_PRINTF, F_TOJSON, F_TOJSONPRETTY, F_B64ENC, F_B64DEC };

static const struct {
	const char *name;
	int min_args, max_args; /* including a piped-in argument; -1: no maximum */
} functions[] = {
	[F_SECRET] = { "secret", 1, -1 },     [F_INDEX] = { "index", 2, -1 },
	[F_PRINTF] = { "printf", 1, -1 },     [F_TOJSON] = { "toJSON", 1, 1 },
	[F_TOJSONPRETTY] = { "toJSONPretty", 1, 1 }, [F_B64ENC] = { "base64Encode", 1, 1 },
	[F_B64DEC] = { "base64Decode", 1, 1 },
};

struct pipe;

struct arg {
	enum arg_kind kind;
	size_t line, column;
	char *name;          /* variable name (without $) */
	char **fields;       /* .a.b after dot, a variable or a parenthesised pipeline */
	size_t n_fields;
	json_t *literal;     /* string, number, bool */
	enum func_id func;
	struct pipe *sub;    /* A_PIPE */
	json_t *secret_params; /* F_SECRET with k=v arguments, else NULL */
};

struct command {
	struct arg **args;
	size_t n_args;
	size_t line, column;
};

struct pipe {
	char *decl[2]; /* declared variables, without $ */
	size_t n_decl;
	bool assign;   /* $x = ... (not :=) */
	struct command **cmds;
	size_t n_cmds;
};

enum node_kind { N_TEXT, N_ACTION, N_IF, N_WITH, N_RANGE };

struct node {
	enum node_kind kind;
	size_t line, column;
	char *text; /* N_TEXT */
	size_t len;
	struct pipe *pipe;
	struct node_list *body, *else_body;
	bool chained; /* an "else if" node: closed by its parent's end */
};

struct node_list {
	struct node **items;
	size_t n, cap;
};

struct secret_ref {
	char *path;
	json_t *params;
};

struct latch_template {
	char *name;
	struct node_list *root;
	struct secret_ref *secrets;
	size_t n_secrets;
};

static void pipe_free(struct pipe *p);
static void list_free(struct node_list *l);

static void arg_free(struct arg *a)
{
	if (!a)
		return;
	free(a->name);
	for (size_t i = 0; i < a->n_fields; i++)
		free(a->fields[i]);
	free(a->fields);
	json_decref(a->literal);
	json_decref(a->secret_params);
	pipe_free(a->sub);
	free(a);
}

static void command_free(struct command *c)
{
	if (!c)
		return;
	for (size_t i = 0; i < c->n_args; i++)
		arg_free(c->args[i]);
	free(c->args);
	free(c);
}

DEFINE_FREE_FUNC(struct arg, arg_free)
DEFINE_FREE_FUNC(struct command, command_free)

static void pipe_free(struct pipe *p)
{
	if (!p)
		return;
	for (size_t i = 0; i < p->n_cmds; i++)
		command_free(p->cmds[i]);
	free(p->cmds);
	free(p->decl[0]);
	free(p->decl[1]);
	free(p);
}

static void node_free(struct node *n)
{
	if (!n)
		return;
	free(n->text);
	pipe_free(n->pipe);
	list_free(n->body);
	list_free(n->else_body);
	free(n);
}

static void list_free(struct node_list *l)
{
	if (!l)
		return;
	for (size_t i = 0; i < l->n; i++)
		node_free(l->items[i]);
	free(l->items);
	free(l);
}

void latch_template_free(struct latch_template *t)
{
	if (!t)
		return;
	list_free(t->root);
	for (size_t i = 0; i < t->n_secrets; i++) {
		free(t->secrets[i].path);
		json_decref(t->secrets[i].params);
	}
	free(t->secrets);
	free(t->name);
	free(t);
}

void latch_template_freep(struct latch_template **t)
{
	latch_template_free(*t);
	*t = NULL;
}

/* Append to a growable pointer array. */
static int push(void ***items, size_t *n, size_t *cap, void *item)
{
	if (*n == *cap) {
		size_t c = *cap ? *cap * 2 : 4;
		void *p = realloc(*items, c * sizeof(void *));
		if (!p)
			return LATCH_ENOMEM;
		*items = p;
		*cap = c;
	}
	(*items)[(*n)++] = item;
	return 0;
}

static int list_add(struct node_list *l, struct node *n)
{
	return push((void ***)&l->items, &l->n, &l->cap, n);
}

/* ---- lexer for the inside of one action ---- */

enum tok_kind { T_EOF, T_DOT, T_FIELD, T_VAR, T_IDENT, T_STRING, T_NUMBER, T_PIPE, T_LPAREN, T_RPAREN,
		T_DECLARE, T_ASSIGN, T_COMMA };

struct token {
	enum tok_kind kind;
	const char *start;
	size_t len;
	size_t line, column;
	bool space_before;
};

struct parser {
	const char *name;
	const char *text;
	size_t len;
	const char *left, *right;
	size_t left_len, right_len;
	struct latch_error *err;
	struct latch_template *t;
	/* the last position computed, so positions are found without rescanning the text */
	const char *mark;
	size_t mark_line, mark_column;
	/* action being parsed */
	const char *p, *end;
	size_t line, column;
	struct token tok;
	bool have_tok;
	size_t depth;
	/* variables in scope, as Go checks them when it parses: names, and per open block the
	 * count to return to at its end */
	const char *vars[256];
	size_t n_vars;
	size_t scope_marks[64];
	size_t n_scopes;
};

static int out_of_memory(struct parser *ps)
{
	return latch_error_set(ps->err, LATCH_ENOMEM, "out of memory");
}

static int perr(struct parser *ps, size_t line, size_t column, const char *fmt, ...) _printf_(4, 5);
static int perr(struct parser *ps, size_t line, size_t column, const char *fmt, ...)
{
	struct latch_buf prefix = LATCH_BUF_INIT(4096);
	latch_buf_printf(&prefix, "template %s:%zu:%zu: ", ps->name, line, column);
	va_list ap;
	va_start(ap, fmt);
	int r = latch_error_setv_prefixed(ps->err, LATCH_EPARSE, latch_buf_str(&prefix), fmt, ap);
	va_end(ap);
	latch_buf_done(&prefix);
	return r;
}

static void advance(struct parser *ps, size_t n)
{
	for (size_t i = 0; i < n && ps->p < ps->end; i++, ps->p++) {
		if (*ps->p == '\n') {
			ps->line++;
			ps->column = 1;
		} else {
			ps->column++;
		}
	}
}

static bool is_ident_char(char c)
{
	return isalnum((unsigned char)c) || c == '_';
}

/* Skip a quoted string starting at p (", ' or `); returns the end, or NULL if unterminated. */
static const char *skip_quoted(const char *p, const char *end)
{
	char q = *p++;
	while (p < end) {
		if (*p == '\\' && q != '`' && p + 1 < end)
			p += 2;
		else if (*p == q)
			return p + 1;
		else if (*p == '\n' && q != '`')
			return NULL;
		else
			p++;
	}
	return NULL;
}

static int lex(struct parser *ps, struct token *tok)
{
	bool space = false;
	while (ps->p < ps->end && isspace((unsigned char)*ps->p)) {
		advance(ps, 1);
		space = true;
	}
	*tok = (struct token){ .start = ps->p, .line = ps->line, .column = ps->column, .space_before = space };
	if (ps->p >= ps->end) {
		tok->kind = T_EOF;
		return 0;
	}
	const char *s = ps->p;
	size_t n = 1;
	char c = *s;
	if (c == '|') {
		tok->kind = T_PIPE;
	} else if (c == '(') {
		tok->kind = T_LPAREN;
	} else if (c == ')') {
		tok->kind = T_RPAREN;
	} else if (c == ',') {
		tok->kind = T_COMMA;
	} else if (c == ':' && s + 1 < ps->end && s[1] == '=') {
		tok->kind = T_DECLARE;
		n = 2;
	} else if (c == '=') {
		tok->kind = T_ASSIGN;
	} else if (c == '"' || c == '`') {
		const char *e = skip_quoted(s, ps->end);
		if (!e)
			return perr(ps, tok->line, tok->column, "%s", "unterminated string");
		tok->kind = T_STRING;
		n = (size_t)(e - s);
	} else if (c == '.' || c == '$') {
		const char *e = s + 1;
		while (e < ps->end && (is_ident_char(*e) || (*e == '.' && e + 1 < ps->end && is_ident_char(e[1]))))
			e++;
		n = (size_t)(e - s);
		tok->kind = c == '$' ? T_VAR : n == 1 ? T_DOT : T_FIELD;
	} else if (isdigit((unsigned char)c) || ((c == '-' || c == '+') && s + 1 < ps->end && isdigit((unsigned char)s[1]))) {
		const char *e = s + 1;
		while (e < ps->end && (isalnum((unsigned char)*e) || *e == '.' || *e == '_'))
			e++;
		tok->kind = T_NUMBER;
		n = (size_t)(e - s);
	} else if (isalpha((unsigned char)c) || c == '_') {
		const char *e = s;
		while (e < ps->end && is_ident_char(*e))
			e++;
		tok->kind = T_IDENT;
		n = (size_t)(e - s);
	} else {
		char what[8] = { c, 0 };
		return perr(ps, tok->line, tok->column, "unexpected '%s' in action", what);
	}
	tok->len = n;
	advance(ps, n);
	return 0;
}

static int peek(struct parser *ps, struct token **ret)
{
	if (!ps->have_tok) {
		int r = lex(ps, &ps->tok);
		if (r < 0)
			return r;
		ps->have_tok = true;
	}
	*ret = &ps->tok;
	return 0;
}

static void consume(struct parser *ps)
{
	ps->have_tok = false;
}

static bool tok_is(const struct token *t, const char *word)
{
	return t->kind == T_IDENT && t->len == strlen(word) && memcmp(t->start, word, t->len) == 0;
}

/* ---- operands ---- */

static struct arg *arg_new(enum arg_kind kind, const struct token *t)
{
	struct arg *a = calloc(1, sizeof(*a));
	if (a) {
		a->kind = kind;
		a->line = t->line;
		a->column = t->column;
	}
	return a;
}

/* Split ".a.b" (or "$x.a.b" after the name) into fields. */
static int split_fields(struct arg *a, const char *s, size_t len)
{
	size_t cap = 0;
	size_t i = 0;
	while (i < len) {
		if (s[i] != '.')
			return LATCH_EINVAL;
		size_t j = i + 1;
		while (j < len && s[j] != '.')
			j++;
		char *f = strndup(s + i + 1, j - i - 1);
		if (!f || push((void ***)&a->fields, &a->n_fields, &cap, f) < 0) {
			free(f);
			return LATCH_ENOMEM;
		}
		i = j;
	}
	return 0;
}

/* Go string literal: "..." with escapes, or `raw`. */
static int unquote(struct parser *ps, const struct token *t, json_t **ret)
{
	struct latch_buf b = LATCH_BUF_INIT(TEMPLATE_MAX_DEFAULT);
	const char *s = t->start + 1, *e = t->start + t->len - 1;
	int r = 0;
	if (*t->start == '`') {
		r = latch_buf_append(&b, s, (size_t)(e - s));
	} else {
		for (; s < e && r == 0; s++) {
			if (*s != '\\') {
				r = latch_buf_putc(&b, *s);
				continue;
			}
			s++;
			switch (*s) {
			case 'n': r = latch_buf_putc(&b, '\n'); break;
			case 't': r = latch_buf_putc(&b, '\t'); break;
			case 'r': r = latch_buf_putc(&b, '\r'); break;
			case '\\': r = latch_buf_putc(&b, '\\'); break;
			case '"': r = latch_buf_putc(&b, '"'); break;
			case '\'': r = latch_buf_putc(&b, '\''); break;
			default:
				latch_buf_done(&b);
				return perr(ps, t->line, t->column, "unsupported escape '\\%s' in string", (char[]){ *s, 0 });
			}
		}
	}
	if (r == 0)
		*ret = json_stringn(b.ptr ? b.ptr : "", b.len);
	latch_buf_done(&b);
	if (r < 0 || !*ret)
		return out_of_memory(ps);
	return 0;
}

static int parse_number(struct parser *ps, const struct token *t, json_t **ret)
{
	char buf[64];
	if (t->len >= sizeof(buf))
		return perr(ps, t->line, t->column, "%s", "number too long");
	memcpy(buf, t->start, t->len);
	buf[t->len] = '\0';
	char *end;
	long long i = strtoll(buf, &end, 10);
	if (*end == '\0') {
		*ret = json_integer(i);
		return 0;
	}
	double d = strtod(buf, &end);
	if (*end != '\0')
		return perr(ps, t->line, t->column, "bad number '%s'", buf);
	*ret = json_real(d);
	return 0;
}

static int parse_pipeline(struct parser *ps, bool in_parens, struct pipe **ret);

static bool var_declared(const struct parser *ps, const char *name)
{
	if (!*name)
		return true; /* $ */
	for (size_t i = ps->n_vars; i-- > 0;)
		if (strcmp(ps->vars[i], name) == 0)
			return true;
	return false;
}

/* A pipeline's declarations come into scope after it: {{ $x := $x }} is an error in Go too. */
static int declare_pipeline_vars(struct parser *ps, const struct pipe *p, size_t line, size_t column)
{
	if (p->assign)
		return var_declared(ps, p->decl[0]) ? 0 : perr(ps, line, column, "undefined variable \"$%s\"", p->decl[0]);
	for (size_t i = 0; i < p->n_decl; i++) {
		if (ps->n_vars >= ELEMENTSOF(ps->vars))
			return perr(ps, line, column, "%s", "too many variables");
		ps->vars[ps->n_vars++] = p->decl[i];
	}
	return 0;
}

static int find_function(const struct token *t)
{
	for (size_t i = 0; i < ELEMENTSOF(functions); i++)
		if (tok_is(t, functions[i].name))
			return (int)i;
	return -1;
}

static int parse_operand(struct parser *ps, struct arg **ret)
{
	struct token *t;
	int r = peek(ps, &t);
	if (r < 0)
		return r;
	struct token tok = *t;
	consume(ps);
	_cleanup_(arg_freep) struct arg *a = NULL;
	switch (tok.kind) {
	case T_DOT:
		a = arg_new(A_DOT, &tok);
		break;
	case T_FIELD:
		a = arg_new(A_FIELD, &tok);
		if (a && split_fields(a, tok.start, tok.len) < 0)
			return out_of_memory(ps);
		break;
	case T_VAR: {
		a = arg_new(A_VAR, &tok);
		if (!a)
			return out_of_memory(ps);
		const char *dot = memchr(tok.start, '.', tok.len);
		size_t name_len = (dot ? (size_t)(dot - tok.start) : tok.len) - 1;
		a->name = strndup(tok.start + 1, name_len);
		if (!a->name || (dot && split_fields(a, dot, tok.len - name_len - 1) < 0))
			return out_of_memory(ps);
		if (!var_declared(ps, a->name)) {
			return perr(ps, tok.line, tok.column, "undefined variable \"$%s\"", a->name);
		}
		break;
	}
	case T_STRING:
		a = arg_new(A_STRING, &tok);
		if (!a)
			return out_of_memory(ps);
		if ((r = unquote(ps, &tok, &a->literal)) < 0)
			return r;
		break;
	case T_NUMBER:
		a = arg_new(A_NUMBER, &tok);
		if (!a)
			return out_of_memory(ps);
		if ((r = parse_number(ps, &tok, &a->literal)) < 0)
			return r;
		break;
	case T_IDENT: {
		if (tok_is(&tok, "true") || tok_is(&tok, "false")) {
			a = arg_new(A_BOOL, &tok);
			if (a)
				a->literal = json_boolean(tok_is(&tok, "true"));
			break;
		}
		if (tok_is(&tok, "nil")) {
			a = arg_new(A_NIL, &tok);
			break;
		}
		int f = find_function(&tok);
		if (f < 0) {
			char name[128];
			snprintf(name, sizeof(name), "%.*s", (int)(tok.len > 100 ? 100 : tok.len), tok.start);
			return perr(ps, tok.line, tok.column,
				    "function '%s' is not supported (supported: secret, index, printf, toJSON, toJSONPretty, "
				    "base64Encode, base64Decode)",
				    name);
		}
		a = arg_new(A_FUNC, &tok);
		if (a)
			a->func = (enum func_id)f;
		break;
	}
	case T_LPAREN: {
		a = arg_new(A_PIPE, &tok);
		if (!a)
			return out_of_memory(ps);
		if ((r = parse_pipeline(ps, true, &a->sub)) < 0)
			return r;
		struct token *close;
		if ((r = peek(ps, &close)) < 0)
			return r;
		if (close->kind != T_RPAREN)
			return perr(ps, close->line, close->column, "%s", "missing ')'");
		consume(ps);
		struct token *after;
		if ((r = peek(ps, &after)) < 0)
			return r;
		if (after->kind == T_FIELD && !after->space_before) {
			if (split_fields(a, after->start, after->len) < 0)
				return out_of_memory(ps);
			consume(ps);
		}
		break;
	}
	default:
		return perr(ps, tok.line, tok.column, "%s", "unexpected token in action");
	}
	if (!a)
		return out_of_memory(ps);
	*ret = TAKE_PTR(a);
	return 0;
}

static bool ends_command(const struct token *t)
{
	return t->kind == T_EOF || t->kind == T_PIPE || t->kind == T_RPAREN;
}

/* `secret "path" "k=v"...`: literal strings only, so the fetch is known before rendering. */
static int check_secret_call(struct parser *ps, struct command *c, bool piped)
{
	struct arg *f = c->args[0];
	if (piped)
		return perr(ps, f->line, f->column, "%s", "secret cannot take a piped argument");
	for (size_t i = 1; i < c->n_args; i++)
		if (c->args[i]->kind != A_STRING)
			return perr(ps, c->args[i]->line, c->args[i]->column, "%s",
				    "the arguments of secret must be string literals");
	if (c->n_args > 2) {
		f->secret_params = json_object();
		if (!f->secret_params)
			return out_of_memory(ps);
	}
	for (size_t i = 2; i < c->n_args; i++) {
		const char *kv = json_string_value(c->args[i]->literal);
		const char *eq = strchr(kv, '=');
		if (!eq || eq == kv)
			return perr(ps, c->args[i]->line, c->args[i]->column, "secret parameter '%s' is not key=value", kv);
		char *key = strndup(kv, (size_t)(eq - kv));
		if (!key || json_object_set_new(f->secret_params, key, json_string(eq + 1)) < 0) {
			free(key);
			return out_of_memory(ps);
		}
		free(key);
	}
	return 0;
}

static int record_secret(struct parser *ps, const struct arg *f, const char *path)
{
	struct latch_template *t = ps->t;
	for (size_t i = 0; i < t->n_secrets; i++)
		if (strcmp(t->secrets[i].path, path) == 0 &&
		    ((!t->secrets[i].params && !f->secret_params) ||
		     (t->secrets[i].params && f->secret_params && json_equal(t->secrets[i].params, f->secret_params))))
			return 0;
	void *p = realloc(t->secrets, (t->n_secrets + 1) * sizeof(*t->secrets));
	if (!p)
		return out_of_memory(ps);
	t->secrets = p;
	char *copy = strdup(path);
	if (!copy)
		return out_of_memory(ps);
	t->secrets[t->n_secrets++] = (struct secret_ref){ copy, json_incref(f->secret_params) };
	return 0;
}

static int check_command(struct parser *ps, struct command *c, bool piped)
{
	struct arg *first = c->args[0];
	if (first->kind != A_FUNC) {
		if (c->n_args > 1)
			return perr(ps, c->args[1]->line, c->args[1]->column, "%s", "a value cannot take arguments");
		if (piped)
			return perr(ps, first->line, first->column, "%s", "only a function can follow '|'");
		return 0;
	}
	int n = (int)c->n_args - 1 + (piped ? 1 : 0);
	int min = functions[first->func].min_args, max = functions[first->func].max_args;
	if (n < min || (max >= 0 && n > max))
		return perr(ps, first->line, first->column, "wrong number of arguments for %s", functions[first->func].name);
	if (first->func == F_SECRET) {
		int r = check_secret_call(ps, c, piped);
		if (r == 0)
			/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference): min_args made args[1] */
			r = record_secret(ps, first, json_string_value(c->args[1]->literal));
		return r;
	}
	return 0;
}

static int parse_command(struct parser *ps, bool piped, struct command **ret)
{
	_cleanup_(command_freep) struct command *c = calloc(1, sizeof(*c));
	if (!c)
		return out_of_memory(ps);
	size_t cap = 0;
	int r;
	for (;;) {
		struct token *t;
		if ((r = peek(ps, &t)) < 0)
			return r;
		if (ends_command(t))
			break;
		if (c->n_args == 0) {
			c->line = t->line;
			c->column = t->column;
		}
		struct arg *a = NULL;
		if ((r = parse_operand(ps, &a)) < 0)
			return r;
		if (!a || push((void ***)&c->args, &c->n_args, &cap, a) < 0) {
			arg_free(a);
			return out_of_memory(ps);
		}
	}
	if (c->n_args == 0)
		return perr(ps, ps->line, ps->column, "%s", "missing value in action");
	if ((r = check_command(ps, c, piped)) < 0)
		return r;
	*ret = TAKE_PTR(c);
	return 0;
}

/* `$a :=`, `$a, $b :=` or `$a =` at the start of a pipeline. */
static int parse_declaration(struct parser *ps, struct pipe *p)
{
	const char *save_p = ps->p;
	size_t save_line = ps->line, save_col = ps->column;
	struct token save_tok = ps->tok;
	bool save_have = ps->have_tok;
	struct token *t;
	int r;
	for (;;) {
		if ((r = peek(ps, &t)) < 0)
			return r;
		if (t->kind != T_VAR || memchr(t->start, '.', t->len) || p->n_decl == 2)
			break;
		char *name = strndup(t->start + 1, t->len - 1);
		if (!name)
			return out_of_memory(ps);
		p->decl[p->n_decl++] = name;
		consume(ps);
		if ((r = peek(ps, &t)) < 0)
			return r;
		if (t->kind == T_COMMA) {
			consume(ps);
			continue;
		}
		if (t->kind == T_DECLARE || (t->kind == T_ASSIGN && p->n_decl == 1)) {
			p->assign = t->kind == T_ASSIGN;
			consume(ps);
			return 0;
		}
		break;
	}
	/* Not a declaration: rewind and parse it as an expression. */
	free(p->decl[0]);
	free(p->decl[1]);
	p->decl[0] = p->decl[1] = NULL;
	p->n_decl = 0;
	ps->p = save_p;
	ps->line = save_line;
	ps->column = save_col;
	ps->tok = save_tok;
	ps->have_tok = save_have;
	return 0;
}

static int parse_pipeline(struct parser *ps, bool in_parens, struct pipe **ret)
{
	if (++ps->depth > MAX_NESTING)
		return perr(ps, ps->line, ps->column, "%s", "expression nested too deeply");
	struct pipe *p = calloc(1, sizeof(*p));
	if (!p)
		return out_of_memory(ps);
	size_t cap = 0;
	int r = in_parens ? 0 : parse_declaration(ps, p);
	while (r == 0) {
		struct command *c = NULL;
		if ((r = parse_command(ps, p->n_cmds > 0, &c)) < 0)
			break;
		if (push((void ***)&p->cmds, &p->n_cmds, &cap, c) < 0) {
			command_free(c);
			r = out_of_memory(ps);
			break;
		}
		struct token *t;
		if ((r = peek(ps, &t)) < 0)
			break;
		if (t->kind != T_PIPE)
			break;
		consume(ps);
	}
	ps->depth--;
	if (r < 0) {
		pipe_free(p);
		return r;
	}
	*ret = p;
	return 0;
}

/* ---- actions and blocks ---- */

struct block {
	struct node *node;
	bool in_else;
};

struct builder {
	struct block stack[MAX_NESTING];
	size_t depth;
	struct node_list *root;
};

static struct node_list *current_list(struct builder *b)
{
	if (b->depth == 0)
		return b->root;
	struct block *top = &b->stack[b->depth - 1];
	return top->in_else ? top->node->else_body : top->node->body;
}

static struct node *node_new(enum node_kind kind, size_t line, size_t column)
{
	struct node *n = calloc(1, sizeof(*n));
	if (n) {
		n->kind = kind;
		n->line = line;
		n->column = column;
	}
	return n;
}

static int add_node(struct parser *ps, struct builder *b, struct node *n)
{
	if (list_add(current_list(b), n) < 0) {
		node_free(n);
		return out_of_memory(ps);
	}
	return 0;
}

static int expect_end_of_action(struct parser *ps)
{
	struct token *t;
	int r = peek(ps, &t);
	if (r < 0)
		return r;
	if (t->kind == T_RPAREN)
		return perr(ps, t->line, t->column, "%s", "unexpected ')'");
	if (t->kind != T_EOF)
		return perr(ps, t->line, t->column, "%s", "unexpected text after the action");
	return 0;
}

static int open_block(struct parser *ps, struct builder *b, enum node_kind kind, size_t line, size_t column, bool chained)
{
	if (b->depth >= MAX_NESTING)
		return perr(ps, line, column, "%s", "blocks nested too deeply");
	struct node *n = node_new(kind, line, column);
	if (!n || !(n->body = calloc(1, sizeof(*n->body))) || !(n->else_body = calloc(1, sizeof(*n->else_body)))) {
		node_free(n);
		return out_of_memory(ps);
	}
	n->chained = chained;
	int r = parse_pipeline(ps, false, &n->pipe);
	if (r == 0)
		r = expect_end_of_action(ps);
	/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference): set when parse_pipeline() returned 0 */
	if (r == 0 && kind == N_RANGE && n->pipe->assign)
		r = perr(ps, line, column, "%s", "range needs := to declare its variables");
	/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference): as above */
	if (r == 0 && kind != N_RANGE && n->pipe->n_decl > 1)
		r = perr(ps, line, column, "%s", "too many declarations");
	if (r == 0 && ps->n_scopes >= ELEMENTSOF(ps->scope_marks))
		r = perr(ps, line, column, "%s", "blocks nested too deeply");
	if (r == 0) {
		ps->scope_marks[ps->n_scopes++] = ps->n_vars;
		r = declare_pipeline_vars(ps, n->pipe, line, column);
	}
	if (r < 0) {
		node_free(n);
		return r;
	}
	if ((r = add_node(ps, b, n)) < 0)
		return r;
	b->stack[b->depth++] = (struct block){ n, false };
	return 0;
}

static int on_else(struct parser *ps, struct builder *b, size_t line, size_t column)
{
	if (b->depth == 0)
		return perr(ps, line, column, "%s", "else without if, with or range");
	struct block *top = &b->stack[b->depth - 1];
	if (top->in_else)
		return perr(ps, line, column, "%s", "a second else in the same block");
	top->in_else = true;
	struct token *t;
	int r = peek(ps, &t);
	if (r < 0)
		return r;
	if (tok_is(t, "if")) {
		if (top->node->kind != N_IF)
			return perr(ps, t->line, t->column, "%s", "else if is only allowed in an if block");
		consume(ps);
		return open_block(ps, b, N_IF, line, column, true);
	}
	return expect_end_of_action(ps);
}

static int on_end(struct parser *ps, struct builder *b, size_t line, size_t column)
{
	int r = expect_end_of_action(ps);
	if (r < 0)
		return r;
	if (b->depth == 0)
		return perr(ps, line, column, "%s", "end without if, with or range");
	do
		ps->n_vars = ps->scope_marks[--ps->n_scopes];
	while (b->stack[--b->depth].node->chained);
	return 0;
}

static int on_action(struct parser *ps, struct builder *b)
{
	struct token *t;
	int r = peek(ps, &t);
	if (r < 0)
		return r;
	size_t line = t->line, column = t->column;
	if (t->kind == T_EOF)
		return perr(ps, line, column, "%s", "empty action");
	static const struct {
		const char *word;
		enum node_kind kind;
	} blocks[] = { { "if", N_IF }, { "with", N_WITH }, { "range", N_RANGE } };
	for (size_t i = 0; i < ELEMENTSOF(blocks); i++)
		if (tok_is(t, blocks[i].word)) {
			consume(ps);
			return open_block(ps, b, blocks[i].kind, line, column, false);
		}
	if (tok_is(t, "else")) {
		consume(ps);
		return on_else(ps, b, line, column);
	}
	if (tok_is(t, "end")) {
		consume(ps);
		return on_end(ps, b, line, column);
	}
	static const char *const unsupported[] = { "define", "template", "block", "break", "continue" };
	for (size_t i = 0; i < ELEMENTSOF(unsupported); i++)
		if (tok_is(t, unsupported[i]))
			return perr(ps, line, column, "'%s' is not supported", unsupported[i]);
	struct node *n = node_new(N_ACTION, line, column);
	if (!n)
		return out_of_memory(ps);
	if ((r = parse_pipeline(ps, false, &n->pipe)) < 0 || (r = expect_end_of_action(ps)) < 0 ||
	    (n->pipe->n_decl > 1 && (r = perr(ps, line, column, "%s", "too many declarations")) < 0) ||
	    (r = declare_pipeline_vars(ps, n->pipe, line, column)) < 0) {
		node_free(n);
		return r;
	}
	return add_node(ps, b, n);
}

/* ---- scanning text and delimiters ---- */

/* Line and column of a position; positions are asked for in increasing order, so counting
 * resumes from the last one (a rescan from the start made parsing quadratic). */
static void position_of(struct parser *ps, const char *at, size_t *line, size_t *column)
{
	if (!ps->mark || at < ps->mark) {
		ps->mark = ps->text;
		ps->mark_line = 1;
		ps->mark_column = 1;
	}
	for (const char *p = ps->mark; p < at; p++) {
		if (*p == '\n') {
			ps->mark_line++;
			ps->mark_column = 1;
		} else {
			ps->mark_column++;
		}
	}
	ps->mark = at;
	*line = ps->mark_line;
	*column = ps->mark_column;
}

static int add_text(struct parser *ps, struct builder *b, const char *s, size_t n)
{
	if (n == 0)
		return 0;
	size_t line, column;
	position_of(ps, s, &line, &column);
	struct node *node = node_new(N_TEXT, line, column);
	if (!node || !(node->text = strndup(s, n))) {
		node_free(node);
		return out_of_memory(ps);
	}
	node->len = n;
	return add_node(ps, b, node);
}

/* The right delimiter that closes the action starting at p, skipping quoted strings. */
static const char *find_close(const struct parser *ps, const char *p)
{
	const char *end = ps->text + ps->len;
	while (p < end) {
		if (*p == '"' || *p == '`' || *p == '\'') {
			const char *e = skip_quoted(p, end);
			if (!e)
				return NULL;
			p = e;
			continue;
		}
		if ((size_t)(end - p) >= ps->right_len && memcmp(p, ps->right, ps->right_len) == 0)
			return p;
		p++;
	}
	return NULL;
}

static int parse_all(struct parser *ps, struct builder *b)
{
	const char *p = ps->text, *end = ps->text + ps->len;
	bool trim_next = false;
	while (p < end) {
		const char *open = strstr(p, ps->left);
		const char *text_end = open ? open : end;
		if (trim_next)
			while (p < text_end && isspace((unsigned char)*p))
				p++;
		const char *body = open ? open + ps->left_len : NULL;
		bool trim_left = body && body + 1 < end && body[0] == '-' && isspace((unsigned char)body[1]);
		const char *keep_end = text_end;
		if (trim_left)
			while (keep_end > p && isspace((unsigned char)keep_end[-1]))
				keep_end--;
		int r = add_text(ps, b, p, (size_t)(keep_end - p));
		if (r < 0 || !open)
			return r;
		if (trim_left)
			body += 2;
		const char *close = find_close(ps, body);
		size_t line, column;
		if (!close) {
			position_of(ps, open, &line, &column);
			return perr(ps, line, column, "unclosed action: no '%s'", ps->right);
		}
		const char *inner_end = close;
		trim_next = close - body >= 2 && close[-1] == '-' && isspace((unsigned char)close[-2]);
		if (trim_next)
			inner_end = close - 1;
		position_of(ps, body, &line, &column);
		const char *q = body;
		while (q < inner_end && isspace((unsigned char)*q))
			q++;
		bool comment = inner_end - q >= 4 && q[0] == '/' && q[1] == '*';
		if (comment) {
			const char *e = inner_end;
			while (e > q && isspace((unsigned char)e[-1]))
				e--;
			if (e - q < 4 || e[-1] != '/' || e[-2] != '*')
				return perr(ps, line, column, "%s", "unclosed comment");
		} else {
			ps->p = body;
			ps->end = inner_end;
			ps->line = line;
			ps->column = column;
			ps->have_tok = false;
			if ((r = on_action(ps, b)) < 0)
				return r;
		}
		p = close + ps->right_len;
	}
	return 0;
}

int latch_template_parse(const char *text, const char *name, const struct latch_template_options *opts,
			 struct latch_template **ret, struct latch_error *err)
{
	size_t max = opts && opts->max_bytes ? opts->max_bytes : TEMPLATE_MAX_DEFAULT;
	size_t len = strlen(text);
	if (len > max)
		return latch_error_set(err, LATCH_ELIMIT, "template %s: %zu bytes is more than the limit of %zu", name, len, max);
	struct parser ps = {
		.name = name, .text = text, .len = len, .err = err,
		.left = opts && opts->left_delim && *opts->left_delim ? opts->left_delim : "{{",
		.right = opts && opts->right_delim && *opts->right_delim ? opts->right_delim : "}}",
	};
	ps.left_len = strlen(ps.left);
	ps.right_len = strlen(ps.right);
	struct latch_template *t = calloc(1, sizeof(*t));
	struct builder b = { 0 };
	if (!t || !(t->name = strdup(name)) || !(b.root = t->root = calloc(1, sizeof(*t->root)))) {
		latch_template_free(t);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	ps.t = t;
	int r = parse_all(&ps, &b);
	if (r == 0 && b.depth > 0) {
		struct node *open = b.stack[b.depth - 1].node;
		r = perr(&ps, open->line, open->column, "%s", "block is never closed: missing {{ end }}");
	}
	if (r < 0) {
		latch_template_free(t);
		return r;
	}
	*ret = t;
	return 0;
}

size_t latch_template_n_secrets(const struct latch_template *t)
{
	return t->n_secrets;
}

struct latch_template_secret latch_template_secret(const struct latch_template *t, size_t i)
{
	return (struct latch_template_secret){ t->secrets[i].path, t->secrets[i].params };
}

/* ---- values and printing ---- */

int latch_template_print_value(const json_t *v, struct latch_buf *out)
{
	int r = 0;
	switch (json_typeof(v)) {
	case JSON_STRING: return latch_buf_append(out, json_string_value(v), json_string_length(v));
	case JSON_INTEGER: return latch_buf_printf(out, "%" JSON_INTEGER_FORMAT, json_integer_value(v));
	case JSON_REAL: {
		/* The shortest form that reads back, as Go prints the json.Number Vault sent. */
		char buf[64];
		for (int precision = 15; precision <= 17; precision++) {
			snprintf(buf, sizeof(buf), "%.*g", precision, json_real_value(v));
			if (strtod(buf, NULL) == json_real_value(v))
				break;
		}
		return latch_buf_append_str(out, buf);
	}
	case JSON_TRUE: return latch_buf_append_str(out, "true");
	case JSON_FALSE: return latch_buf_append_str(out, "false");
	case JSON_NULL: return latch_buf_append_str(out, "<nil>");
	case JSON_ARRAY: {
		r = latch_buf_putc(out, '[');
		for (size_t i = 0; r == 0 && i < json_array_size(v); i++) {
			if (i)
				r = latch_buf_putc(out, ' ');
			if (r == 0)
				r = latch_template_print_value(json_array_get(v, i), out);
		}
		return r ? r : latch_buf_putc(out, ']');
	}
	case JSON_OBJECT: {
		size_t n;
		const char **keys = latch_json_sorted_keys(v, &n);
		if (!keys)
			return LATCH_ENOMEM;
		r = latch_buf_append_str(out, "map[");
		for (size_t i = 0; r == 0 && i < n; i++) {
			r = latch_buf_printf(out, "%s%s:", i ? " " : "", keys[i]);
			if (r == 0)
				r = latch_template_print_value(json_object_get(v, keys[i]), out);
		}
		free(keys);
		return r ? r : latch_buf_putc(out, ']');
	}
	}
	return r;
}

/* Go's json.Marshal escapes <, > and & (and U+2028/U+2029) inside strings; they only occur
 * inside strings in JSON text, so escaping every occurrence is exact. */
static int append_go_json(const char *s, struct latch_buf *out)
{
	int r = 0;
	for (const char *p = s; *p && r == 0; p++) {
		if (*p == '<')
			r = latch_buf_append_str(out, "\\u003c");
		else if (*p == '>')
			r = latch_buf_append_str(out, "\\u003e");
		else if (*p == '&')
			r = latch_buf_append_str(out, "\\u0026");
		else if ((unsigned char)p[0] == 0xe2 && (unsigned char)p[1] == 0x80 &&
			 ((unsigned char)p[2] == 0xa8 || (unsigned char)p[2] == 0xa9)) {
			r = latch_buf_append_str(out, (unsigned char)p[2] == 0xa8 ? "\\u2028" : "\\u2029");
			p += 2;
		} else
			r = latch_buf_putc(out, *p);
	}
	return r;
}

int latch_template_to_json(const json_t *v, bool pretty, struct latch_buf *out)
{
	size_t flags = JSON_SORT_KEYS | JSON_ENCODE_ANY | JSON_REAL_PRECISION(17) | (pretty ? JSON_INDENT(2) : JSON_COMPACT);
	char *s = json_dumps(v ? v : json_null(), flags);
	if (!s)
		return LATCH_ENOMEM;
	int r = append_go_json(s, out);
	latch_secret_free(s);
	return r;
}

/* ---- evaluation ---- */

struct val {
	json_t *j;     /* owned reference; NULL is nil */
	bool missing;  /* a map key that is not there: prints <no value> */
	bool secret;   /* a `secret` result: fields are Data, LeaseID, ... */
};

#define MAX_VARS 256

struct eval {
	const struct latch_template *t;
	latch_template_lookup_fn lookup;
	void *userdata;
	bool strict;
	struct latch_buf *out;
	struct latch_error *err;
	struct {
		const char *name;
		struct val v;
	} vars[MAX_VARS];
	size_t n_vars;
	size_t iterations;
};

static void val_done(struct val *v)
{
	json_decref(v->j);
	*v = (struct val){ 0 };
}

static struct val val_ref(json_t *j)
{
	return (struct val){ .j = json_incref(j) };
}

static struct val val_copy(const struct val *v)
{
	struct val c = *v;
	json_incref(c.j);
	return c;
}

static int eerr(struct eval *e, size_t line, size_t column, const char *fmt, ...) _printf_(4, 5);
static int eerr(struct eval *e, size_t line, size_t column, const char *fmt, ...)
{
	struct latch_buf prefix = LATCH_BUF_INIT(4096);
	latch_buf_printf(&prefix, "template %s:%zu:%zu: ", e->t->name, line, column);
	va_list ap;
	va_start(ap, fmt);
	int r = latch_error_setv_prefixed(e->err, LATCH_EINVAL, latch_buf_str(&prefix), fmt, ap);
	va_end(ap);
	latch_buf_done(&prefix);
	return r;
}

static const char *type_name(const struct val *v)
{
	if (v->missing || !v->j)
		return "nil";
	if (v->secret)
		return "secret";
	switch (json_typeof(v->j)) {
	case JSON_OBJECT: return "map";
	case JSON_ARRAY: return "list";
	case JSON_STRING: return "string";
	case JSON_INTEGER: return "int";
	case JSON_REAL: return "float";
	case JSON_TRUE:
	case JSON_FALSE: return "bool";
	default: return "nil";
	}
}

static bool truthy(const struct val *v)
{
	if (v->missing || !v->j)
		return false;
	if (v->secret)
		return true;
	switch (json_typeof(v->j)) {
	case JSON_OBJECT: return json_object_size(v->j) > 0;
	case JSON_ARRAY: return json_array_size(v->j) > 0;
	case JSON_STRING: return json_string_length(v->j) > 0;
	case JSON_INTEGER: return json_integer_value(v->j) != 0;
	case JSON_REAL: return json_real_value(v->j) != 0.0;
	case JSON_TRUE: return true;
	default: return false;
	}
}

/* The fields a consul-template secret has, and where Vault's response keeps them. */
static const char *secret_field_key(const char *field)
{
	static const char *const map[][2] = { { "Data", "data" },         { "LeaseID", "lease_id" },
					      { "LeaseDuration", "lease_duration" }, { "Renewable", "renewable" },
					      { "Warnings", "warnings" },   { "RequestID", "request_id" },
					      { "Auth", "auth" },           { "WrapInfo", "wrap_info" } };
	for (size_t i = 0; i < ELEMENTSOF(map); i++)
		if (strcmp(map[i][0], field) == 0)
			return map[i][1];
	return NULL;
}

static int field_of(struct eval *e, const struct arg *a, struct val *v, const char *field)
{
	if (v->missing || !v->j)
		return eerr(e, a->line, a->column, "nil value has no field '%s'", field);
	json_t *next;
	if (v->secret) {
		const char *key = secret_field_key(field);
		if (!key)
			return eerr(e, a->line, a->column, "a secret has no field '%s' (it has Data, LeaseID, LeaseDuration, Renewable, Warnings)", field);
		next = json_object_get(v->j, key);
		if (next && json_is_null(next))
			next = NULL;
		struct val n = val_ref(next);
		val_done(v);
		*v = n;
		return 0;
	}
	if (!json_is_object(v->j)) {
		struct latch_buf msg = LATCH_BUF_INIT(1024);
		latch_buf_printf(&msg, "can't take field '%s' of a %s", field, type_name(v));
		int r = eerr(e, a->line, a->column, "%s", latch_buf_str(&msg));
		latch_buf_done(&msg);
		return r;
	}
	next = json_object_get(v->j, field);
	if (!next) {
		if (e->strict)
			return eerr(e, a->line, a->column, "map has no entry for key \"%s\" (error-on-missing-key is set)", field);
		val_done(v);
		v->missing = true;
		return 0;
	}
	struct val n = val_ref(json_is_null(next) ? NULL : next);
	val_done(v);
	*v = n;
	return 0;
}

static int apply_fields(struct eval *e, const struct arg *a, struct val *v)
{
	for (size_t i = 0; i < a->n_fields; i++) {
		int r = field_of(e, a, v, a->fields[i]);
		if (r < 0)
			return r;
	}
	return 0;
}

static const struct val *find_var(struct eval *e, const char *name)
{
	for (size_t i = e->n_vars; i-- > 0;)
		if (strcmp(e->vars[i].name, name) == 0)
			return &e->vars[i].v;
	return NULL;
}

static int declare_var(struct eval *e, const char *name, struct val v, size_t line, size_t column)
{
	if (e->n_vars >= MAX_VARS) {
		val_done(&v);
		return eerr(e, line, column, "%s", "too many variables");
	}
	e->vars[e->n_vars].name = name;
	e->vars[e->n_vars].v = v;
	e->n_vars++;
	return 0;
}

static void pop_vars(struct eval *e, size_t to)
{
	while (e->n_vars > to)
		val_done(&e->vars[--e->n_vars].v);
}

static int eval_pipe(struct eval *e, const struct pipe *p, const struct val *dot, struct val *ret);

static int eval_arg(struct eval *e, const struct arg *a, const struct val *dot, struct val *ret)
{
	struct val v = { 0 };
	int r = 0;
	switch (a->kind) {
	case A_DOT:
		v = val_copy(dot);
		break;
	case A_FIELD:
		v = val_copy(dot);
		r = apply_fields(e, a, &v);
		break;
	case A_VAR: {
		const struct val *var = find_var(e, a->name);
		if (!var)
			return eerr(e, a->line, a->column, "undefined variable $%s", a->name);
		v = val_copy(var);
		r = apply_fields(e, a, &v);
		break;
	}
	case A_STRING:
	case A_NUMBER:
	case A_BOOL:
		v = val_ref(a->literal);
		break;
	case A_NIL:
		break;
	case A_PIPE:
		r = eval_pipe(e, a->sub, dot, &v);
		if (r == 0)
			r = apply_fields(e, a, &v);
		break;
	case A_FUNC:
		return eerr(e, a->line, a->column, "%s needs to be called, not used as a value", functions[a->func].name);
	}
	if (r < 0) {
		val_done(&v);
		return r;
	}
	*ret = v;
	return 0;
}

static int need_string(struct eval *e, const struct arg *at, const struct val *v, const char *fn)
{
	if (v->j && json_is_string(v->j) && !v->missing)
		return 0;
	return eerr(e, at->line, at->column, "%s needs a string argument", fn);
}

static int fn_index(struct eval *e, const struct arg *at, struct val *args, size_t n, struct val *ret)
{
	struct val cur = val_copy(&args[0]);
	for (size_t i = 1; i < n; i++) {
		if (cur.missing || !cur.j) {
			val_done(&cur);
			return eerr(e, at->line, at->column, "%s", "index of a nil value");
		}
		json_t *next = NULL;
		if (json_is_object(cur.j) && args[i].j && json_is_string(args[i].j)) {
			next = json_object_get(cur.j, json_string_value(args[i].j));
			if (!next) {
				val_done(&cur);
				cur.missing = true;
				continue;
			}
		} else if (json_is_array(cur.j) && args[i].j && json_is_integer(args[i].j)) {
			json_int_t k = json_integer_value(args[i].j);
			if (k < 0 || (size_t)k >= json_array_size(cur.j)) {
				val_done(&cur);
				return eerr(e, at->line, at->column, "%s", "index out of range");
			}
			next = json_array_get(cur.j, (size_t)k);
		} else {
			val_done(&cur);
			return eerr(e, at->line, at->column, "%s", "index needs a map and a string key, or a list and a number");
		}
		struct val n2 = val_ref(json_is_null(next) ? NULL : next);
		val_done(&cur);
		cur = n2;
	}
	*ret = cur;
	return 0;
}

/* What an action prints: Go prints both a missing key and a nil value as <no value> (a nil
 * inside a map or list prints <nil>, as fmt does). */
static int print_val(const struct val *v, struct latch_buf *out)
{
	if (v->missing || !v->j)
		return latch_buf_append_str(out, "<no value>");
	return latch_template_print_value(v->j, out);
}

/* strconv.Quote: Go's %q of a string. Unlike JSON, it does not escape <, > or &. */
static int quote_go(const char *s, size_t len, struct latch_buf *out)
{
	int r = latch_buf_putc(out, '"');
	for (size_t i = 0; r == 0 && i < len; i++) {
		unsigned char c = (unsigned char)s[i];
		const char *esc = c == '"' ? "\\\"" : c == '\\' ? "\\\\" : c == '\n' ? "\\n" : c == '\t' ? "\\t" : c == '\r' ? "\\r"
				: c == '\a' ? "\\a" : c == '\b' ? "\\b" : c == '\f' ? "\\f" : c == '\v' ? "\\v" : NULL;
		if (esc)
			r = latch_buf_append_str(out, esc);
		else if (c < 0x20 || c == 0x7f)
			r = latch_buf_printf(out, "\\x%02x", c);
		else
			r = latch_buf_putc(out, (char)c);
	}
	return r ? r : latch_buf_putc(out, '"');
}

static size_t rune_count(const char *s, size_t len)
{
	size_t n = 0;
	for (size_t i = 0; i < len; i++)
		n += ((unsigned char)s[i] & 0xC0) != 0x80;
	return n;
}

/* Bytes that hold the first `runes` runes of s. */
static size_t rune_prefix(const char *s, size_t len, size_t runes)
{
	size_t i = 0;
	for (size_t seen = 0; i < len; i++) {
		if (((unsigned char)s[i] & 0xC0) != 0x80 && seen++ == runes)
			break;
	}
	return i;
}

struct verb_spec {
	bool minus, zero, plus, space, hash;
	long width, precision; /* -1: none */
	char verb;
};

/* A text verb (s, v, q, or x/X on a string): precision and width count runes, as in Go. */
static int format_text(const struct verb_spec *vs, const struct val *a, struct latch_buf *out)
{
	struct latch_buf text = LATCH_SECRET_BUF_INIT(TEMPLATE_MAX_DEFAULT);
	const char *str = a->j && json_is_string(a->j) ? json_string_value(a->j) : NULL;
	size_t len = str ? json_string_length(a->j) : 0;
	int r = 0;
	if (vs->verb == 'q' && str)
		r = quote_go(str, vs->precision >= 0 ? rune_prefix(str, len, (size_t)vs->precision) : len, &text);
	else if ((vs->verb == 'x' || vs->verb == 'X') && str)
		for (size_t i = 0; r == 0 && i < len; i++)
			r = latch_buf_printf(&text, vs->verb == 'x' ? "%02x" : "%02X", (unsigned char)str[i]);
	else {
		r = print_val(a, &text);
		if (r == 0 && vs->precision >= 0)
			text.len = rune_prefix(text.ptr ? text.ptr : "", text.len, (size_t)vs->precision);
	}
	size_t runes = rune_count(text.ptr ? text.ptr : "", text.len);
	for (long pad = vs->width - (long)runes; r == 0 && !vs->minus && pad > 0; pad--)
		r = latch_buf_putc(out, ' ');
	if (r == 0)
		r = latch_buf_append(out, text.ptr ? text.ptr : "", text.len);
	for (long pad = vs->width - (long)runes; r == 0 && vs->minus && pad > 0; pad--)
		r = latch_buf_putc(out, ' ');
	latch_buf_done(&text);
	return r;
}

/* The C format below is assembled only from Go's flag, width and precision characters and
 * one checked verb, so it is not input-controlled. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static int format_number(const char *spec, size_t flen, char verb, const struct val *a, struct latch_buf *out)
{
	char cspec[32];
	if (verb == 'f') {
		snprintf(cspec, sizeof(cspec), "%.*sf", (int)flen, spec);
		return latch_buf_printf(out, cspec, json_number_value(a->j));
	}
	snprintf(cspec, sizeof(cspec), "%.*sll%c", (int)flen, spec, verb);
	return latch_buf_printf(out, cspec, (long long)json_integer_value(a->j));
}
#pragma GCC diagnostic pop

/* "%-8.3s": flags, width and precision; p is past the '%'. Returns the verb's position. */
static const char *parse_verb(const char *p, struct verb_spec *vs)
{
	*vs = (struct verb_spec){ .width = -1, .precision = -1 };
	for (; *p && strchr("-+# 0", *p); p++) {
		vs->minus |= *p == '-';
		vs->plus |= *p == '+';
		vs->space |= *p == ' ';
		vs->hash |= *p == '#';
		vs->zero |= *p == '0';
	}
	if (isdigit((unsigned char)*p))
		vs->width = strtol(p, (char **)&p, 10);
	if (*p == '.') {
		p++;
		vs->precision = isdigit((unsigned char)*p) ? strtol(p, (char **)&p, 10) : 0;
	}
	vs->verb = *p;
	return p;
}

/* printf: the Go verbs templates use (%s %v %d %q %x %X %f %t %%), with flags, width and
 * precision. */
static int fn_printf(struct eval *e, const struct arg *at, struct val *args, size_t n, struct val *ret)
{
	if (need_string(e, at, &args[0], "printf") < 0)
		return LATCH_EINVAL;
	const char *f = json_string_value(args[0].j);
	struct latch_buf out = LATCH_SECRET_BUF_INIT(TEMPLATE_MAX_DEFAULT);
	size_t next = 1;
	int r = 0;
	for (const char *p = f; *p && r == 0; p++) {
		if (*p != '%') {
			r = latch_buf_putc(&out, *p);
			continue;
		}
		const char *spec = p;
		struct verb_spec vs;
		p = parse_verb(p + 1, &vs);
		if (!*p)
			break;
		if (vs.verb == '%') {
			r = latch_buf_putc(&out, '%');
			continue;
		}
		size_t flen = (size_t)(p - spec);
		if (flen > 20 || vs.width > 4096 || vs.precision > 4096 || !strchr("svdqxXft", vs.verb)) {
			r = latch_buf_printf(&out, "%%!%c(BADVERB)", vs.verb);
			continue;
		}
		if (next >= n) {
			r = latch_buf_printf(&out, "%%!%c(MISSING)", vs.verb);
			continue;
		}
		struct val *a = &args[next++];
		bool integer = a->j && json_is_integer(a->j);
		if ((vs.verb == 'd' || vs.verb == 'x' || vs.verb == 'X') && integer)
			r = format_number(spec, flen, vs.verb, a, &out);
		else if (vs.verb == 'f' && a->j && json_is_number(a->j))
			r = format_number(spec, flen, 'f', a, &out);
		else
			r = format_text(&vs, a, &out);
	}
	if (r == 0) {
		*ret = (struct val){ .j = json_stringn(out.ptr ? out.ptr : "", out.len) };
		r = ret->j ? 0 : LATCH_ENOMEM;
	}
	latch_buf_done(&out);
	if (r == LATCH_ENOMEM && !ret->j)
		return latch_error_set(e->err, r, "template %s: printf made text that is not valid UTF-8, or ran out of memory", e->t->name);
	return r < 0 ? latch_error_set(e->err, r, "template %s: printf output larger than its limit", e->t->name) : 0;
}

static int fn_base64(struct eval *e, const struct arg *at, const struct val *arg, bool encode, struct val *ret)
{
	if (need_string(e, at, arg, encode ? "base64Encode" : "base64Decode") < 0)
		return LATCH_EINVAL;
	struct latch_view in = latch_view_make(json_string_value(arg->j), json_string_length(arg->j));
	struct latch_buf out = LATCH_SECRET_BUF_INIT(16u << 20);
	int r = encode ? latch_base64_encode(in, false, &out) : latch_base64_decode(in, false, &out);
	if (r == LATCH_EINVAL)
		r = eerr(e, at->line, at->column, "%s", "base64Decode: the input is not valid base64");
	else if (r == 0 && !(ret->j = json_stringn(out.ptr ? out.ptr : "", out.len)))
		r = latch_error_set(e->err, LATCH_ENOMEM, "out of memory");
	latch_buf_done(&out);
	return r;
}

static int call_function(struct eval *e, const struct arg *f, struct val *args, size_t n, struct val *ret)
{
	switch (f->func) {
	case F_SECRET: {
		const char *path = json_string_value(args[0].j);
		const json_t *env = e->lookup ? e->lookup(path, f->secret_params, e->userdata) : NULL;
		if (!env)
			return eerr(e, f->line, f->column, "secret '%s' was not fetched", path);
		*ret = (struct val){ .j = json_incref((json_t *)env), .secret = true };
		return 0;
	}
	case F_INDEX: return fn_index(e, f, args, n, ret);
	case F_PRINTF: return fn_printf(e, f, args, n, ret);
	case F_TOJSON:
	case F_TOJSONPRETTY: {
		struct latch_buf out = LATCH_SECRET_BUF_INIT(16u << 20);
		int r = latch_template_to_json(args[0].missing ? NULL : args[0].j, f->func == F_TOJSONPRETTY, &out);
		if (r == 0 && !(ret->j = json_stringn(out.ptr ? out.ptr : "", out.len)))
			r = LATCH_ENOMEM;
		latch_buf_done(&out);
		return r < 0 ? latch_error_set(e->err, r, "template %s: toJSON failed", e->t->name) : 0;
	}
	case F_B64ENC: return fn_base64(e, f, &args[0], true, ret);
	case F_B64DEC: return fn_base64(e, f, &args[0], false, ret);
	}
	return LATCH_EINVAL;
}

static int eval_command(struct eval *e, const struct command *c, const struct val *dot, struct val *piped,
			struct val *ret)
{
	const struct arg *first = c->args[0];
	if (first->kind != A_FUNC)
		return eval_arg(e, first, dot, ret);
	size_t n = c->n_args - 1 + (piped ? 1 : 0);
	struct val *args = calloc(n ? n : 1, sizeof(*args));
	if (!args)
		return latch_error_set(e->err, LATCH_ENOMEM, "out of memory");
	int r = 0;
	size_t i = 0;
	for (; i + 1 < c->n_args && r == 0; i++)
		r = eval_arg(e, c->args[i + 1], dot, &args[i]);
	if (r == 0 && piped)
		args[i++] = val_copy(piped);
	if (r == 0)
		r = call_function(e, first, args, n, ret);
	for (size_t k = 0; k < n; k++)
		val_done(&args[k]);
	free(args);
	return r;
}

static int eval_pipe(struct eval *e, const struct pipe *p, const struct val *dot, struct val *ret)
{
	struct val cur = { 0 };
	for (size_t i = 0; i < p->n_cmds; i++) {
		struct val next = { 0 };
		int r = eval_command(e, p->cmds[i], dot, i ? &cur : NULL, &next);
		val_done(&cur);
		if (r < 0)
			return r;
		cur = next;
	}
	*ret = cur;
	return 0;
}

static int exec_list(struct eval *e, const struct node_list *l, const struct val *dot);

/* A pipeline whose result is stored in a variable, or the value of an if/with. */
static int eval_declared(struct eval *e, const struct node *n, const struct val *dot, struct val *ret)
{
	int r = eval_pipe(e, n->pipe, dot, ret);
	if (r < 0 || n->pipe->n_decl == 0)
		return r;
	struct val copy = val_copy(ret);
	if (n->pipe->assign) {
		struct val *var = (struct val *)find_var(e, n->pipe->decl[0]);
		if (!var) {
			val_done(&copy);
			return eerr(e, n->line, n->column, "undefined variable $%s", n->pipe->decl[0]);
		}
		val_done(var);
		*var = copy;
		return 0;
	}
	return declare_var(e, n->pipe->decl[0], copy, n->line, n->column);
}

static int exec_action(struct eval *e, const struct node *n, const struct val *dot)
{
	struct val v = { 0 };
	int r = eval_declared(e, n, dot, &v);
	if (r == 0 && n->pipe->n_decl == 0 && print_val(&v, e->out) < 0)
		r = latch_error_set(e->err, LATCH_ELIMIT, "template %s: output larger than its limit", e->t->name);
	val_done(&v);
	return r;
}

static int exec_if_with(struct eval *e, const struct node *n, const struct val *dot)
{
	size_t mark = e->n_vars;
	struct val v = { 0 };
	int r = eval_declared(e, n, dot, &v);
	if (r == 0) {
		bool yes = truthy(&v);
		const struct val *inner = n->kind == N_WITH && yes ? &v : dot;
		r = exec_list(e, yes ? n->body : n->else_body, inner);
	}
	val_done(&v);
	pop_vars(e, mark);
	return r;
}

static int range_step(struct eval *e, const struct node *n, struct val key, struct val item)
{
	size_t mark = e->n_vars;
	int r = 0;
	if (++e->iterations > MAX_RANGE_ITEMS)
		r = eerr(e, n->line, n->column, "%s", "range: more iterations than the limit allows");
	if (r == 0 && n->pipe->n_decl == 1)
		r = declare_var(e, n->pipe->decl[0], val_copy(&item), n->line, n->column);
	if (r == 0 && n->pipe->n_decl == 2) {
		r = declare_var(e, n->pipe->decl[0], val_copy(&key), n->line, n->column);
		if (r == 0)
			r = declare_var(e, n->pipe->decl[1], val_copy(&item), n->line, n->column);
	}
	if (r == 0)
		r = exec_list(e, n->body, &item);
	pop_vars(e, mark);
	val_done(&key);
	val_done(&item);
	return r;
}

static int exec_range(struct eval *e, const struct node *n, const struct val *dot)
{
	struct val v = { 0 };
	int r = eval_pipe(e, n->pipe, dot, &v);
	if (r < 0)
		return r;
	if (!truthy(&v)) {
		if (!v.missing && v.j && !json_is_object(v.j) && !json_is_array(v.j))
			r = eerr(e, n->line, n->column, "range can't iterate over a %s", type_name(&v));
		else
			r = exec_list(e, n->else_body, dot);
	} else if (json_is_object(v.j) && !v.secret) {
		size_t count;
		const char **keys = latch_json_sorted_keys(v.j, &count);
		if (!keys)
			r = latch_error_set(e->err, LATCH_ENOMEM, "out of memory");
		for (size_t i = 0; keys && i < count && r == 0; i++) {
			json_t *item = json_object_get(v.j, keys[i]);
			r = range_step(e, n, (struct val){ .j = json_string(keys[i]) }, val_ref(json_is_null(item) ? NULL : item));
		}
		free(keys);
	} else if (json_is_array(v.j)) {
		for (size_t i = 0; i < json_array_size(v.j) && r == 0; i++) {
			json_t *item = json_array_get(v.j, i);
			r = range_step(e, n, (struct val){ .j = json_integer((json_int_t)i) }, val_ref(json_is_null(item) ? NULL : item));
		}
	} else {
		r = eerr(e, n->line, n->column, "range can't iterate over a %s", type_name(&v));
	}
	val_done(&v);
	return r;
}

static int exec_list(struct eval *e, const struct node_list *l, const struct val *dot)
{
	int r = 0;
	for (size_t i = 0; i < l->n && r == 0; i++) {
		const struct node *n = l->items[i];
		switch (n->kind) {
		case N_TEXT:
			if (latch_buf_append(e->out, n->text, n->len) < 0)
				r = latch_error_set(e->err, LATCH_ELIMIT, "template %s: output larger than its limit", e->t->name);
			break;
		case N_ACTION: r = exec_action(e, n, dot); break;
		case N_IF:
		case N_WITH: r = exec_if_with(e, n, dot); break;
		case N_RANGE: r = exec_range(e, n, dot); break;
		}
	}
	return r;
}

int latch_template_render(const struct latch_template *t, latch_template_lookup_fn lookup, void *userdata,
			  bool error_on_missing_key, struct latch_buf *out, struct latch_error *err)
{
	struct eval *e = calloc(1, sizeof(*e));
	if (!e)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	*e = (struct eval){ .t = t, .lookup = lookup, .userdata = userdata, .strict = error_on_missing_key, .out = out, .err = err };
	struct val root = { 0 };
	int r = declare_var(e, "", root, 1, 1); /* $ is the top-level dot */
	if (r == 0)
		r = exec_list(e, t->root, &root);
	pop_vars(e, 0);
	free(e);
	return r;
}
