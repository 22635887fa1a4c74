/* The YAML adapter: the only file that speaks libyaml's conventions. Parses a multi-document
 * stream into a tree that keeps key order, scalar style, tags and the line:column of every
 * node, and emits a tree back to YAML. Every input-controlled dimension has a limit: bytes,
 * nesting depth, documents, nodes. Aliases (*name) are refused: Kubernetes manifests do not
 * need them and they are the billion-laughs vector.
 *
 * Lifecycle: a stream owns its documents, a document its root, a node its children.
 * latch_yaml_stream_done() frees everything; latch_yaml_node_free() one subtree. */
#pragma once

#include <stdbool.h>
#include <stddef.h>

#include "latch/buf.h"
#include "latch/error.h"
#include "latch/json.h"

enum latch_yaml_kind {
	LATCH_YAML_SCALAR,
	LATCH_YAML_SEQUENCE,
	LATCH_YAML_MAPPING,
};

enum latch_yaml_style {
	LATCH_YAML_STYLE_ANY,    /* let the emitter choose (new nodes) */
	LATCH_YAML_STYLE_PLAIN,
	LATCH_YAML_STYLE_SINGLE,
	LATCH_YAML_STYLE_DOUBLE,
	LATCH_YAML_STYLE_LITERAL,
	LATCH_YAML_STYLE_FOLDED,
	LATCH_YAML_STYLE_BLOCK, /* collections */
	LATCH_YAML_STYLE_FLOW,  /* collections */
};

struct latch_yaml_pair;

struct latch_yaml_node {
	enum latch_yaml_kind kind;
	enum latch_yaml_style style;
	char *tag;     /* explicit tag (e.g. "!!str"), NULL when implicit */
	size_t line;   /* 1-based position in the input; 0 for nodes made in code */
	size_t column;
	/* scalar */
	char *value;
	size_t len;
	/* sequence */
	struct latch_yaml_node **items;
	size_t n_items;
	/* mapping, in input order */
	struct latch_yaml_pair *pairs;
	size_t n_pairs;
	size_t cap;
};

struct latch_yaml_pair {
	struct latch_yaml_node *key;
	struct latch_yaml_node *value;
};

struct latch_yaml_doc {
	struct latch_yaml_node *root;
	size_t line; /* where the document starts */
};

struct latch_yaml_stream {
	struct latch_yaml_doc *docs;
	size_t n_docs;
};

struct latch_yaml_limits {
	size_t max_bytes;
	unsigned max_depth;
	size_t max_documents;
	size_t max_nodes; /* over the whole stream */
};

#define LATCH_YAML_LIMITS_DEFAULT ((struct latch_yaml_limits){ 64u << 20, 64, 100000, 10000000 })

/* Parse a stream. name labels the input in errors: "<name>:<line>:<column>: <reason>".
 * Documents that are empty (only comments, or "---" alone) are skipped. */
int latch_yaml_parse(struct latch_view text, const char *name, const struct latch_yaml_limits *limits,
		     struct latch_yaml_stream *ret, struct latch_error *err);
/* The same, one document at a time, so a long stream need not be held whole:
 * latch_yaml_reader_next() gives the next non-empty document (the caller owns its root) and
 * returns 0, 1 at the end of the stream, or a negative code. text must outlive the reader. */
struct latch_yaml_reader;
int latch_yaml_reader_new(struct latch_view text, const char *name, const struct latch_yaml_limits *limits,
			  struct latch_yaml_reader **ret, struct latch_error *err);
int latch_yaml_reader_next(struct latch_yaml_reader *reader, struct latch_yaml_doc *ret, struct latch_error *err);
void latch_yaml_reader_free(struct latch_yaml_reader *reader);
/* How many bytes of text the reader has taken in: it will not look at those before again
 * except to place an error. */
size_t latch_yaml_reader_offset(const struct latch_yaml_reader *reader);

/* Emit every document, "---"-separated, appending to out. */
int latch_yaml_emit(const struct latch_yaml_stream *stream, struct latch_buf *out, struct latch_error *err);
/* The same a document at a time, with one emitter for the stream: new, add each root, finish
 * (the end of the stream, flushed to out), free. After a failure only free is of use. */
struct latch_yaml_writer;
int latch_yaml_writer_new(struct latch_buf *out, struct latch_yaml_writer **ret, struct latch_error *err);
int latch_yaml_writer_add(struct latch_yaml_writer *w, const struct latch_yaml_node *root,
			  struct latch_error *err);
int latch_yaml_writer_finish(struct latch_yaml_writer *w, struct latch_error *err);
void latch_yaml_writer_free(struct latch_yaml_writer *w);
void latch_yaml_stream_done(struct latch_yaml_stream *stream);

struct latch_yaml_node *latch_yaml_scalar_new(const char *value, enum latch_yaml_style style);
struct latch_yaml_node *latch_yaml_collection_new(enum latch_yaml_kind kind);
struct latch_yaml_node *latch_yaml_node_clone(const struct latch_yaml_node *node);
void latch_yaml_node_free(struct latch_yaml_node *node);

/* The value under a scalar key of a mapping, or NULL. */
struct latch_yaml_node *latch_yaml_map_get(const struct latch_yaml_node *map, const char *key);
/* The scalar value under key, or NULL when missing or not a scalar. */
const char *latch_yaml_map_get_str(const struct latch_yaml_node *map, const char *key);
/* Set key to value (taking ownership of value), replacing an existing value in place so
 * key order is kept, or appending. */
int latch_yaml_map_set(struct latch_yaml_node *map, const char *key, struct latch_yaml_node *value);
/* Remove key; returns true if it was there. */
bool latch_yaml_map_remove(struct latch_yaml_node *map, const char *key);
/* Append an item to a sequence, taking ownership. */
int latch_yaml_seq_append(struct latch_yaml_node *seq, struct latch_yaml_node *item);
bool latch_yaml_is_scalar(const struct latch_yaml_node *node, const char *value);

/* A string scalar that reads back as a string: plain when that is unambiguous, double-quoted
 * when a plain scalar would resolve to a bool, null or number ("true", "0640", "1.5"). */
struct latch_yaml_node *latch_yaml_string_new(const char *value);
/* What a scalar means the way Kubernetes reads YAML (YAML 1.1 plain scalars): a JSON value
 * of the right type. Quoted and block scalars, and tagged !!str, are strings. */
json_t *latch_yaml_scalar_to_json(const struct latch_yaml_node *scalar);
/* A whole node as JSON (mapping keys must be scalars). NULL when out of memory or for a
 * mapping with a non-scalar key. */
json_t *latch_yaml_to_json(const struct latch_yaml_node *node);
/* A JSON value as a YAML tree (new nodes, emitter-chosen styles; strings kept strings). */
struct latch_yaml_node *latch_yaml_from_json(const json_t *value);
