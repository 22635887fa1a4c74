#include "latch/yaml.h"

#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "latch/macro.h"

/* ---- nodes ---- */

static struct latch_yaml_node *node_new(enum latch_yaml_kind kind)
{
	struct latch_yaml_node *n = calloc(1, sizeof(*n));
	if (n)
		n->kind = kind;
	return n;
}

struct latch_yaml_node *latch_yaml_collection_new(enum latch_yaml_kind kind)
{
	return kind == LATCH_YAML_SCALAR ? NULL : node_new(kind);
}

static struct latch_yaml_node *scalar_from(const char *value, size_t len, enum latch_yaml_style style)
{
	struct latch_yaml_node *n = node_new(LATCH_YAML_SCALAR);
	if (!n)
		return NULL;
	n->value = malloc(len + 1);
	if (!n->value) {
		free(n);
		return NULL;
	}
	memcpy(n->value, value, len);
	n->value[len] = '\0';
	n->len = len;
	n->style = style;
	return n;
}

struct latch_yaml_node *latch_yaml_scalar_new(const char *value, enum latch_yaml_style style)
{
	return scalar_from(value, strlen(value), style);
}

void latch_yaml_node_free(struct latch_yaml_node *node)
{
	if (!node)
		return;
	for (size_t i = 0; i < node->n_items; i++)
		latch_yaml_node_free(node->items[i]);
	for (size_t i = 0; i < node->n_pairs; i++) {
		latch_yaml_node_free(node->pairs[i].key);
		latch_yaml_node_free(node->pairs[i].value);
	}
	free(node->items);
	free(node->pairs);
	free(node->value);
	free(node->tag);
	free(node);
}

DEFINE_FREE_FUNC(struct latch_yaml_node, latch_yaml_node_free)

static int grow(struct latch_yaml_node *n)
{
	size_t used = n->kind == LATCH_YAML_SEQUENCE ? n->n_items : n->n_pairs;
	if (used < n->cap)
		return 0;
	size_t cap = n->cap ? n->cap * 2 : 4;
	if (n->kind == LATCH_YAML_SEQUENCE) {
		void *p = realloc(n->items, cap * sizeof(*n->items));
		if (!p)
			return LATCH_ENOMEM;
		n->items = p;
	} else {
		void *p = realloc(n->pairs, cap * sizeof(*n->pairs));
		if (!p)
			return LATCH_ENOMEM;
		n->pairs = p;
	}
	n->cap = cap;
	return 0;
}

int latch_yaml_seq_append(struct latch_yaml_node *seq, struct latch_yaml_node *item)
{
	if (seq->kind != LATCH_YAML_SEQUENCE || !item)
		return LATCH_EINVAL;
	if (grow(seq) < 0)
		return LATCH_ENOMEM;
	seq->items[seq->n_items++] = item;
	return 0;
}

static int map_append(struct latch_yaml_node *map, struct latch_yaml_node *key, struct latch_yaml_node *value)
{
	if (grow(map) < 0)
		return LATCH_ENOMEM;
	map->pairs[map->n_pairs++] = (struct latch_yaml_pair){ key, value };
	return 0;
}

bool latch_yaml_is_scalar(const struct latch_yaml_node *node, const char *value)
{
	return node && node->kind == LATCH_YAML_SCALAR && strcmp(node->value, value) == 0;
}

static struct latch_yaml_pair *map_find(const struct latch_yaml_node *map, const char *key)
{
	if (!map || map->kind != LATCH_YAML_MAPPING)
		return NULL;
	for (size_t i = 0; i < map->n_pairs; i++)
		if (latch_yaml_is_scalar(map->pairs[i].key, key))
			return &map->pairs[i];
	return NULL;
}

struct latch_yaml_node *latch_yaml_map_get(const struct latch_yaml_node *map, const char *key)
{
	struct latch_yaml_pair *p = map_find(map, key);
	return p ? p->value : NULL;
}

const char *latch_yaml_map_get_str(const struct latch_yaml_node *map, const char *key)
{
	struct latch_yaml_node *v = latch_yaml_map_get(map, key);
	return v && v->kind == LATCH_YAML_SCALAR ? v->value : NULL;
}

int latch_yaml_map_set(struct latch_yaml_node *map, const char *key, struct latch_yaml_node *value)
{
	if (!map || map->kind != LATCH_YAML_MAPPING || !value)
		return LATCH_EINVAL;
	struct latch_yaml_pair *p = map_find(map, key);
	if (p) {
		latch_yaml_node_free(p->value);
		p->value = value;
		return 0;
	}
	struct latch_yaml_node *k = latch_yaml_scalar_new(key, LATCH_YAML_STYLE_ANY);
	if (!k || map_append(map, k, value) < 0) {
		latch_yaml_node_free(k);
		return LATCH_ENOMEM;
	}
	return 0;
}

bool latch_yaml_map_remove(struct latch_yaml_node *map, const char *key)
{
	struct latch_yaml_pair *p = map_find(map, key);
	if (!p)
		return false;
	latch_yaml_node_free(p->key);
	latch_yaml_node_free(p->value);
	size_t i = (size_t)(p - map->pairs);
	memmove(&map->pairs[i], &map->pairs[i + 1], (map->n_pairs - i - 1) * sizeof(*map->pairs));
	map->n_pairs--;
	return true;
}

/* Copies of node's items and pairs appended to c; -1 when out of memory. */
static int clone_children(struct latch_yaml_node *c, const struct latch_yaml_node *node)
{
	for (size_t i = 0; i < node->n_items; i++) {
		_cleanup_(latch_yaml_node_freep) struct latch_yaml_node *item = latch_yaml_node_clone(node->items[i]);
		if (!item || latch_yaml_seq_append(c, item) < 0)
			return -1;
		item = NULL; /* c holds it now */
	}
	for (size_t i = 0; i < node->n_pairs; i++) {
		_cleanup_(latch_yaml_node_freep) struct latch_yaml_node *k = latch_yaml_node_clone(node->pairs[i].key);
		_cleanup_(latch_yaml_node_freep) struct latch_yaml_node *v = latch_yaml_node_clone(node->pairs[i].value);
		if (!k || !v || map_append(c, k, v) < 0)
			return -1;
		k = v = NULL; /* c holds them now */
	}
	return 0;
}

struct latch_yaml_node *latch_yaml_node_clone(const struct latch_yaml_node *node)
{
	if (!node)
		return NULL;
	struct latch_yaml_node *c = node->kind == LATCH_YAML_SCALAR ? scalar_from(node->value, node->len, node->style)
								    : node_new(node->kind);
	if (!c)
		return NULL;
	c->style = node->style;
	c->line = node->line;
	c->column = node->column;
	if ((node->tag && !(c->tag = strdup(node->tag))) || clone_children(c, node) < 0) {
		latch_yaml_node_free(c);
		return NULL;
	}
	return c;
}

void latch_yaml_stream_done(struct latch_yaml_stream *stream)
{
	for (size_t i = 0; i < stream->n_docs; i++)
		latch_yaml_node_free(stream->docs[i].root);
	free(stream->docs);
	*stream = (struct latch_yaml_stream){ 0 };
}

/* ---- parsing ---- */

struct builder {
	const char *name;
	struct latch_view text;
	const struct latch_yaml_limits *limits;
	struct latch_error *err;
	struct latch_yaml_node **stack; /* open collections, innermost last */
	size_t depth;
	size_t nodes;
	struct latch_yaml_node *root;
	size_t doc_line;
	size_t n_docs;
	struct latch_yaml_doc ready; /* a finished document, until the reader hands it out */
	bool have_ready;
};

static enum latch_yaml_style scalar_style(yaml_scalar_style_t s)
{
	switch (s) {
	case YAML_PLAIN_SCALAR_STYLE: return LATCH_YAML_STYLE_PLAIN;
	case YAML_SINGLE_QUOTED_SCALAR_STYLE: return LATCH_YAML_STYLE_SINGLE;
	case YAML_DOUBLE_QUOTED_SCALAR_STYLE: return LATCH_YAML_STYLE_DOUBLE;
	case YAML_LITERAL_SCALAR_STYLE: return LATCH_YAML_STYLE_LITERAL;
	case YAML_FOLDED_SCALAR_STYLE: return LATCH_YAML_STYLE_FOLDED;
	default: return LATCH_YAML_STYLE_ANY;
	}
}

/* Where the YAML reader failed: it reports a byte offset, not a line. */
static void offset_to_line_column(struct latch_view text, size_t offset, size_t *line, size_t *column)
{
	*line = 1;
	*column = 1;
	for (size_t i = 0; i < offset && i < text.len; i++) {
		if (text.ptr[i] == '\n') {
			(*line)++;
			*column = 1;
		} else if (((unsigned char)text.ptr[i] & 0xC0) != 0x80) {
			(*column)++;
		}
	}
}

static int parser_error(struct builder *b, const yaml_parser_t *p)
{
	size_t line, column;
	if (p->error == YAML_READER_ERROR) {
		offset_to_line_column(b->text, p->problem_offset, &line, &column);
		return latch_error_set(b->err, LATCH_EPARSE, "%s:%zu:%zu: %s", b->name, line, column,
				       p->problem ? p->problem : "invalid input");
	}
	if (p->error == YAML_MEMORY_ERROR)
		return latch_error_set(b->err, LATCH_ENOMEM, "%s: out of memory", b->name);
	line = p->problem_mark.line + 1;
	column = p->problem_mark.column + 1;
	if (p->context)
		return latch_error_set(b->err, LATCH_EPARSE, "%s:%zu:%zu: %s %s (line %zu)", b->name, line, column,
				       p->problem ? p->problem : "syntax error", p->context, p->context_mark.line + 1);
	return latch_error_set(b->err, LATCH_EPARSE, "%s:%zu:%zu: %s", b->name, line, column,
			       p->problem ? p->problem : "syntax error");
}

static int at(struct builder *b, const yaml_event_t *ev, int code, const char *what)
{
	return latch_error_set(b->err, code, "%s:%zu:%zu: %s", b->name, ev->start_mark.line + 1,
			       ev->start_mark.column + 1, what);
}

static void place_node(struct latch_yaml_node *n, const yaml_event_t *ev)
{
	n->line = ev->start_mark.line + 1;
	n->column = ev->start_mark.column + 1;
}

/* libyaml reports a tag only when the input wrote one; keep it so it is emitted again. */
static int set_tag(struct latch_yaml_node *n, const yaml_char_t *tag)
{
	if (!tag)
		return 0;
	n->tag = strdup((const char *)tag);
	return n->tag ? 0 : LATCH_ENOMEM;
}

/* Attach a finished node to the innermost open collection, or make it the document root. */
static int attach(struct builder *b, struct latch_yaml_node *n)
{
	if (b->depth == 0) {
		b->root = n;
		return 0;
	}
	struct latch_yaml_node *parent = b->stack[b->depth - 1];
	if (parent->kind == LATCH_YAML_SEQUENCE)
		return latch_yaml_seq_append(parent, n);
	if (parent->n_pairs > 0 && parent->pairs[parent->n_pairs - 1].value == NULL) {
		parent->pairs[parent->n_pairs - 1].value = n;
		return 0;
	}
	return map_append(parent, n, NULL);
}

static int count_node(struct builder *b, const yaml_event_t *ev)
{
	if (++b->nodes > b->limits->max_nodes)
		return at(b, ev, LATCH_ELIMIT, "more YAML nodes than the limit allows");
	return 0;
}

/* A scalar about to become a key of the innermost open mapping that already has that key:
 * the pair found first, else NULL. */
static const struct latch_yaml_pair *duplicate_key(const struct builder *b, const yaml_event_t *ev)
{
	const struct latch_yaml_node *parent = b->depth > 0 ? b->stack[b->depth - 1] : NULL;
	if (!parent || parent->kind != LATCH_YAML_MAPPING)
		return NULL;
	if (parent->n_pairs > 0 && parent->pairs[parent->n_pairs - 1].value == NULL)
		return NULL; /* this scalar is a value */
	for (size_t i = 0; i < parent->n_pairs; i++) {
		const struct latch_yaml_node *k = parent->pairs[i].key;
		if (k && k->kind == LATCH_YAML_SCALAR && k->len == ev->data.scalar.length &&
		    memcmp(k->value, ev->data.scalar.value, k->len) == 0)
			return &parent->pairs[i];
	}
	return NULL;
}

static int on_scalar(struct builder *b, const yaml_event_t *ev)
{
	int r = count_node(b, ev);
	if (r < 0)
		return r;
	/* Readers disagree on which of two equal keys wins (a policy might check one and the API
	 * server get the other), so neither does: like kubectl, refuse them. */
	const struct latch_yaml_pair *dup = duplicate_key(b, ev);
	if (dup)
		return latch_error_set(b->err, LATCH_EPARSE,
				       "%s:%zu:%zu: duplicate key '%s' (first at line %zu, column %zu)", b->name,
				       ev->start_mark.line + 1, ev->start_mark.column + 1, dup->key->value, dup->key->line,
				       dup->key->column);
	struct latch_yaml_node *n = scalar_from((const char *)ev->data.scalar.value, ev->data.scalar.length,
						scalar_style(ev->data.scalar.style));
	if (!n)
		return latch_error_set(b->err, LATCH_ENOMEM, "out of memory");
	place_node(n, ev);
	if (set_tag(n, ev->data.scalar.tag) < 0 || attach(b, n) < 0) {
		latch_yaml_node_free(n);
		return latch_error_set(b->err, LATCH_ENOMEM, "out of memory");
	}
	return 0;
}

static int on_collection_start(struct builder *b, const yaml_event_t *ev, enum latch_yaml_kind kind)
{
	int r = count_node(b, ev);
	if (r < 0)
		return r;
	if (b->depth >= b->limits->max_depth)
		return at(b, ev, LATCH_ELIMIT, "nesting deeper than the limit allows");
	struct latch_yaml_node *n = node_new(kind);
	if (!n)
		return latch_error_set(b->err, LATCH_ENOMEM, "out of memory");
	place_node(n, ev);
	const yaml_char_t *tag = kind == LATCH_YAML_MAPPING ? ev->data.mapping_start.tag : ev->data.sequence_start.tag;
	int style = kind == LATCH_YAML_MAPPING ? (int)ev->data.mapping_start.style : (int)ev->data.sequence_start.style;
	n->style = style == YAML_FLOW_MAPPING_STYLE || style == YAML_FLOW_SEQUENCE_STYLE ? LATCH_YAML_STYLE_FLOW
											 : LATCH_YAML_STYLE_BLOCK;
	if (set_tag(n, tag) < 0 || attach(b, n) < 0) {
		latch_yaml_node_free(n);
		return latch_error_set(b->err, LATCH_ENOMEM, "out of memory");
	}
	b->stack[b->depth++] = n;
	return 0;
}

static int on_document_end(struct builder *b, const yaml_event_t *ev)
{
	struct latch_yaml_node *root = TAKE_PTR(b->root);
	bool empty = !root || (root->kind == LATCH_YAML_SCALAR && root->len == 0 && root->style == LATCH_YAML_STYLE_PLAIN &&
			       !root->tag);
	if (empty) {
		latch_yaml_node_free(root);
		return 0;
	}
	if (b->n_docs >= b->limits->max_documents) {
		latch_yaml_node_free(root);
		return at(b, ev, LATCH_ELIMIT, "more documents than the limit allows");
	}
	b->n_docs++;
	b->ready = (struct latch_yaml_doc){ root, b->doc_line };
	b->have_ready = true;
	return 0;
}

static int on_event(struct builder *b, const yaml_event_t *ev)
{
	switch (ev->type) {
	case YAML_DOCUMENT_START_EVENT:
		b->doc_line = ev->start_mark.line + 1;
		return 0;
	case YAML_DOCUMENT_END_EVENT:
		return on_document_end(b, ev);
	case YAML_SCALAR_EVENT:
		return on_scalar(b, ev);
	case YAML_SEQUENCE_START_EVENT:
		return on_collection_start(b, ev, LATCH_YAML_SEQUENCE);
	case YAML_MAPPING_START_EVENT:
		return on_collection_start(b, ev, LATCH_YAML_MAPPING);
	case YAML_SEQUENCE_END_EVENT:
	case YAML_MAPPING_END_EVENT:
		b->depth--;
		return 0;
	case YAML_ALIAS_EVENT:
		return at(b, ev, LATCH_EUNSUPPORTED, "YAML aliases (*name) are not supported; write the value out");
	default:
		return 0;
	}
}

struct latch_yaml_reader {
	struct builder b;
	yaml_parser_t parser;
	bool done;
};

int latch_yaml_reader_new(struct latch_view text, const char *name, const struct latch_yaml_limits *limits,
			  struct latch_yaml_reader **ret, struct latch_error *err)
{
	if (text.len > limits->max_bytes)
		return latch_error_set(err, LATCH_ELIMIT, "%s: %zu bytes is more than the limit of %zu", name, text.len,
				       limits->max_bytes);
	struct latch_yaml_reader *r = calloc(1, sizeof(*r));
	if (!r)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	r->b = (struct builder){ .name = name, .text = text, .limits = limits };
	r->b.stack = calloc(limits->max_depth + 1, sizeof(*r->b.stack));
	if (!r->b.stack || !yaml_parser_initialize(&r->parser)) {
		free(r->b.stack);
		free(r);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	yaml_parser_set_input_string(&r->parser, (const unsigned char *)text.ptr, text.len);
	yaml_parser_set_encoding(&r->parser, YAML_UTF8_ENCODING);
	*ret = r;
	return 0;
}

size_t latch_yaml_reader_offset(const struct latch_yaml_reader *r)
{
	return (size_t)(r->parser.input.string.current - r->parser.input.string.start);
}

int latch_yaml_reader_next(struct latch_yaml_reader *r, struct latch_yaml_doc *ret, struct latch_error *err)
{
	r->b.err = err;
	int rc = 0;
	while (rc == 0 && !r->done && !r->b.have_ready) {
		yaml_event_t ev;
		if (!yaml_parser_parse(&r->parser, &ev)) {
			rc = parser_error(&r->b, &r->parser);
			break;
		}
		r->done = ev.type == YAML_STREAM_END_EVENT;
		rc = on_event(&r->b, &ev);
		yaml_event_delete(&ev);
	}
	if (rc < 0) {
		r->done = true; /* libyaml cannot go on after an error */
		return rc;
	}
	if (!r->b.have_ready)
		return 1;
	*ret = r->b.ready;
	r->b.have_ready = false;
	return 0;
}

void latch_yaml_reader_free(struct latch_yaml_reader *r)
{
	if (!r)
		return;
	yaml_parser_delete(&r->parser);
	/* An unfinished document is only reachable from its root. */
	latch_yaml_node_free(r->b.root);
	if (r->b.have_ready)
		latch_yaml_node_free(r->b.ready.root);
	free(r->b.stack);
	free(r);
}

int latch_yaml_parse(struct latch_view text, const char *name, const struct latch_yaml_limits *limits,
		     struct latch_yaml_stream *ret, struct latch_error *err)
{
	struct latch_yaml_reader *reader;
	int r = latch_yaml_reader_new(text, name, limits, &reader, err);
	if (r < 0)
		return r;
	struct latch_yaml_stream out = { 0 };
	struct latch_yaml_doc doc;
	while ((r = latch_yaml_reader_next(reader, &doc, err)) == 0) {
		void *p = realloc(out.docs, (out.n_docs + 1) * sizeof(*out.docs));
		if (!p) {
			latch_yaml_node_free(doc.root);
			r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
			break;
		}
		out.docs = p;
		out.docs[out.n_docs++] = doc;
	}
	latch_yaml_reader_free(reader);
	if (r < 0) {
		latch_yaml_stream_done(&out);
		return r;
	}
	*ret = out;
	return 0;
}

/* ---- emitting ---- */

static int write_handler(void *data, unsigned char *buffer, size_t size)
{
	return latch_buf_append(data, buffer, size) == 0;
}

static yaml_scalar_style_t to_scalar_style(enum latch_yaml_style s)
{
	switch (s) {
	case LATCH_YAML_STYLE_PLAIN: return YAML_PLAIN_SCALAR_STYLE;
	case LATCH_YAML_STYLE_SINGLE: return YAML_SINGLE_QUOTED_SCALAR_STYLE;
	case LATCH_YAML_STYLE_DOUBLE: return YAML_DOUBLE_QUOTED_SCALAR_STYLE;
	case LATCH_YAML_STYLE_LITERAL: return YAML_LITERAL_SCALAR_STYLE;
	case LATCH_YAML_STYLE_FOLDED: return YAML_FOLDED_SCALAR_STYLE;
	default: return YAML_ANY_SCALAR_STYLE;
	}
}

static int emit_node(yaml_emitter_t *e, const struct latch_yaml_node *n);

static int emit(yaml_emitter_t *e, yaml_event_t *ev, int ok)
{
	if (!ok)
		return LATCH_ENOMEM;
	return yaml_emitter_emit(e, ev) ? 0 : LATCH_EINVAL;
}

static int emit_scalar(yaml_emitter_t *e, const struct latch_yaml_node *n)
{
	yaml_event_t ev;
	int implicit = n->tag == NULL;
	return emit(e, &ev,
		    yaml_scalar_event_initialize(&ev, NULL, (yaml_char_t *)n->tag, (yaml_char_t *)n->value, (int)n->len,
						 implicit, implicit, to_scalar_style(n->style)));
}

static int emit_collection(yaml_emitter_t *e, const struct latch_yaml_node *n)
{
	yaml_event_t ev;
	bool flow = n->style == LATCH_YAML_STYLE_FLOW;
	int implicit = n->tag == NULL;
	int r = n->kind == LATCH_YAML_SEQUENCE
			? emit(e, &ev, yaml_sequence_start_event_initialize(&ev, NULL, (yaml_char_t *)n->tag, implicit,
								      flow ? YAML_FLOW_SEQUENCE_STYLE : YAML_BLOCK_SEQUENCE_STYLE))
			: emit(e, &ev, yaml_mapping_start_event_initialize(&ev, NULL, (yaml_char_t *)n->tag, implicit,
								     flow ? YAML_FLOW_MAPPING_STYLE : YAML_BLOCK_MAPPING_STYLE));
	for (size_t i = 0; r == 0 && i < n->n_items; i++)
		r = emit_node(e, n->items[i]);
	for (size_t i = 0; r == 0 && i < n->n_pairs; i++) {
		r = emit_node(e, n->pairs[i].key);
		if (r == 0)
			r = emit_node(e, n->pairs[i].value);
	}
	if (r == 0)
		r = n->kind == LATCH_YAML_SEQUENCE ? emit(e, &ev, yaml_sequence_end_event_initialize(&ev))
						   : emit(e, &ev, yaml_mapping_end_event_initialize(&ev));
	return r;
}

static int emit_node(yaml_emitter_t *e, const struct latch_yaml_node *n)
{
	if (!n) {
		struct latch_yaml_node null_node = { .kind = LATCH_YAML_SCALAR, .value = (char *)"", .style = LATCH_YAML_STYLE_PLAIN };
		return emit_scalar(e, &null_node);
	}
	return n->kind == LATCH_YAML_SCALAR ? emit_scalar(e, n) : emit_collection(e, n);
}

struct latch_yaml_writer {
	yaml_emitter_t emitter;
	size_t n_docs;
	bool broken; /* an emit failed: the emitter cannot go on */
};

static int emit_failed(struct latch_yaml_writer *w, int r, struct latch_error *err)
{
	const char *problem = w->emitter.problem ? w->emitter.problem : "output larger than its limit";
	w->broken = true;
	return latch_error_set(err, w->emitter.error == YAML_WRITER_ERROR || r == LATCH_ELIMIT ? LATCH_ELIMIT : r,
			       "emitting YAML: %s", problem);
}

int latch_yaml_writer_new(struct latch_buf *out, struct latch_yaml_writer **ret, struct latch_error *err)
{
	struct latch_yaml_writer *w = calloc(1, sizeof(*w));
	if (!w || !yaml_emitter_initialize(&w->emitter)) {
		free(w);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	yaml_emitter_set_output(&w->emitter, write_handler, out);
	yaml_emitter_set_unicode(&w->emitter, 1);
	yaml_emitter_set_width(&w->emitter, -1);
	yaml_emitter_set_indent(&w->emitter, 2);
	yaml_event_t ev;
	int r = emit(&w->emitter, &ev, yaml_stream_start_event_initialize(&ev, YAML_UTF8_ENCODING));
	if (r < 0) {
		r = emit_failed(w, r, err);
		latch_yaml_writer_free(w);
		return r;
	}
	*ret = w;
	return 0;
}

int latch_yaml_writer_add(struct latch_yaml_writer *w, const struct latch_yaml_node *root,
			  struct latch_error *err)
{
	if (w->broken)
		return latch_error_set(err, LATCH_EINVAL, "emitting YAML: an earlier document failed");
	yaml_event_t ev;
	int r = emit(&w->emitter, &ev, yaml_document_start_event_initialize(&ev, NULL, NULL, NULL, w->n_docs == 0));
	if (r == 0)
		r = emit_node(&w->emitter, root);
	if (r == 0)
		r = emit(&w->emitter, &ev, yaml_document_end_event_initialize(&ev, 1));
	w->n_docs++;
	return r < 0 ? emit_failed(w, r, err) : 0;
}

int latch_yaml_writer_finish(struct latch_yaml_writer *w, struct latch_error *err)
{
	if (w->broken)
		return latch_error_set(err, LATCH_EINVAL, "emitting YAML: an earlier document failed");
	yaml_event_t ev;
	int r = emit(&w->emitter, &ev, yaml_stream_end_event_initialize(&ev));
	if (r == 0 && !yaml_emitter_flush(&w->emitter))
		r = LATCH_ELIMIT;
	return r < 0 ? emit_failed(w, r, err) : 0;
}

void latch_yaml_writer_free(struct latch_yaml_writer *w)
{
	if (!w)
		return;
	yaml_emitter_delete(&w->emitter);
	free(w);
}

int latch_yaml_emit(const struct latch_yaml_stream *stream, struct latch_buf *out, struct latch_error *err)
{
	struct latch_yaml_writer *w = NULL;
	int r = latch_yaml_writer_new(out, &w, err);
	for (size_t i = 0; r == 0 && i < stream->n_docs; i++)
		r = latch_yaml_writer_add(w, stream->docs[i].root, err);
	if (r == 0)
		r = latch_yaml_writer_finish(w, err);
	latch_yaml_writer_free(w);
	return r;
}

/* ---- scalar resolution and JSON ---- */

/* No word the lists below hold is longer: a longer scalar is none of them. */
#define RESOLVED_WORD_MAX 5

static bool one_of(const char *s, const char *const *words)
{
	if (strnlen(s, RESOLVED_WORD_MAX + 1) > RESOLVED_WORD_MAX)
		return false;
	for (; *words; words++)
		if (strcmp(s, *words) == 0)
			return true;
	return false;
}

static const char *const yaml_true[] = { "true", "True", "TRUE", "yes", "Yes", "YES", "on", "On", "ON", "y", "Y", NULL };
static const char *const yaml_false[] = { "false", "False", "FALSE", "no", "No", "NO", "off", "Off", "OFF", "n", "N", NULL };
static const char *const yaml_null[] = { "", "~", "null", "Null", "NULL", NULL };

static bool looks_like_int(const char *s, long long *ret)
{
	const char *p = s;
	if (*p == '+' || *p == '-')
		p++;
	if (!*p)
		return false;
	int base = 10;
	if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
		base = 16;
	else if (p[0] == '0' && (p[1] == 'o'))
		base = 8;
	const char *digits = base == 10 ? p : p + 2;
	if (!*digits)
		return false;
	for (const char *q = digits; *q; q++)
		if (!(base == 16 ? isxdigit((unsigned char)*q) : (*q >= '0' && *q <= (base == 8 ? '7' : '9'))))
			return false;
	/* YAML 1.1 reads 0640 as octal; Kubernetes fields holding such values are strings. */
	if (base == 10 && digits[0] == '0' && digits[1])
		base = 8;
	errno = 0;
	long long v = strtoll(digits, NULL, base);
	if (errno)
		return false;
	*ret = *s == '-' ? -v : v;
	return true;
}

static bool looks_like_float(const char *s, double *ret)
{
	if (one_of(s, (const char *const[]){ ".inf", ".Inf", ".INF", "+.inf", "-.inf", ".nan", ".NaN", ".NAN", NULL }))
		return false; /* JSON has no infinity or NaN */
	bool digit = false, dot_or_exp = false;
	for (const char *p = s; *p; p++) {
		if (isdigit((unsigned char)*p))
			digit = true;
		else if (*p == '.' || *p == 'e' || *p == 'E')
			dot_or_exp = true;
		else if (!(*p == '+' || *p == '-'))
			return false;
	}
	if (!digit || !dot_or_exp)
		return false;
	char *end;
	errno = 0;
	double d = strtod(s, &end);
	if (*end || errno)
		return false;
	*ret = d;
	return true;
}

static bool is_str_tag(const char *tag)
{
	return tag && strcmp(tag, "tag:yaml.org,2002:str") == 0;
}

json_t *latch_yaml_scalar_to_json(const struct latch_yaml_node *n)
{
	if (n->style != LATCH_YAML_STYLE_PLAIN || is_str_tag(n->tag) || memchr(n->value, '\0', n->len))
		return json_stringn(n->value, n->len);
	long long i;
	double d;
	if (one_of(n->value, yaml_null))
		return json_null();
	if (one_of(n->value, yaml_true))
		return json_true();
	if (one_of(n->value, yaml_false))
		return json_false();
	if (looks_like_int(n->value, &i))
		return json_integer(i);
	if (looks_like_float(n->value, &d))
		return json_real(d);
	return json_stringn(n->value, n->len);
}

/* Whether a plain scalar reads back as this string, as latch_yaml_scalar_to_json reads it;
 * without building the value (this runs for every string latch-inject writes). */
static bool plain_reads_as_string(const char *value)
{
	long long i;
	double d;
	return !one_of(value, yaml_null) && !one_of(value, yaml_true) && !one_of(value, yaml_false) &&
	       !looks_like_int(value, &i) && !looks_like_float(value, &d);
}

struct latch_yaml_node *latch_yaml_string_new(const char *value)
{
	enum latch_yaml_style style = plain_reads_as_string(value) ? LATCH_YAML_STYLE_ANY : LATCH_YAML_STYLE_DOUBLE;
	return latch_yaml_scalar_new(value, style);
}

json_t *latch_yaml_to_json(const struct latch_yaml_node *n)
{
	if (!n)
		return json_null();
	if (n->kind == LATCH_YAML_SCALAR)
		return latch_yaml_scalar_to_json(n);
	json_t *out = n->kind == LATCH_YAML_SEQUENCE ? json_array() : json_object();
	for (size_t i = 0; out && i < n->n_items; i++)
		if (json_array_append_new(out, latch_yaml_to_json(n->items[i])) < 0) {
			json_decref(out);
			return NULL;
		}
	for (size_t i = 0; out && i < n->n_pairs; i++) {
		const struct latch_yaml_node *k = n->pairs[i].key;
		if (!k || k->kind != LATCH_YAML_SCALAR || json_object_setn_new(out, k->value, k->len, latch_yaml_to_json(n->pairs[i].value)) < 0) {
			json_decref(out);
			return NULL;
		}
	}
	return out;
}

struct latch_yaml_node *latch_yaml_from_json(const json_t *v)
{
	struct latch_yaml_node *n = NULL;
	switch (json_typeof(v)) {
	case JSON_OBJECT: {
		n = latch_yaml_collection_new(LATCH_YAML_MAPPING);
		const char *k;
		json_t *item;
		json_object_foreach((json_t *)v, k, item) {
			struct latch_yaml_node *child = latch_yaml_from_json(item);
			if (!n || !child || latch_yaml_map_set(n, k, child) < 0) {
				latch_yaml_node_free(child);
				latch_yaml_node_free(n);
				return NULL;
			}
		}
		return n;
	}
	case JSON_ARRAY: {
		n = latch_yaml_collection_new(LATCH_YAML_SEQUENCE);
		size_t i;
		json_t *item;
		json_array_foreach(v, i, item) {
			struct latch_yaml_node *child = latch_yaml_from_json(item);
			if (!n || !child || latch_yaml_seq_append(n, child) < 0) {
				latch_yaml_node_free(child);
				latch_yaml_node_free(n);
				return NULL;
			}
		}
		return n;
	}
	case JSON_STRING: return latch_yaml_string_new(json_string_value(v));
	case JSON_INTEGER: {
		char buf[32];
		snprintf(buf, sizeof(buf), "%" JSON_INTEGER_FORMAT, json_integer_value(v));
		return latch_yaml_scalar_new(buf, LATCH_YAML_STYLE_PLAIN);
	}
	case JSON_REAL: {
		char buf[64];
		snprintf(buf, sizeof(buf), "%.17g", json_real_value(v));
		return latch_yaml_scalar_new(buf, LATCH_YAML_STYLE_PLAIN);
	}
	case JSON_TRUE: return latch_yaml_scalar_new("true", LATCH_YAML_STYLE_PLAIN);
	case JSON_FALSE: return latch_yaml_scalar_new("false", LATCH_YAML_STYLE_PLAIN);
	default: return latch_yaml_scalar_new("null", LATCH_YAML_STYLE_PLAIN);
	}
}
