/* The template engine: the subset of Go text/template + consul-template functions that
 * Vault Agent Injector users write in agent-inject-template-* annotations.
 *
 *   {{ with secret "database/creds/app" }}{{ .Data.username }}{{ end }}
 *   {{ with secret "pki/issue/demo" "common_name=a.demo.svc" }}{{ .Data.certificate }}{{ end }}
 *   {{ range $k, $v := .Data.data }}{{ $k }}={{ $v }}{{ end }}
 *   if / else / else if / end, with / else, range / else, $x := pipeline, ( ... ), pipes,
 *   functions: secret, index, printf, toJSON, toJSONPretty, base64Encode, base64Decode,
 *   trim markers {{- -}}, comments, custom delimiters.
 *
 * Everything else is refused when the template is parsed, with line:column, so a template
 * that is accepted by latch-inject never fails to parse in the pod. The paths and
 * parameters given to `secret` must be string literals: they are known after parsing
 * (latch_template_secret) and fetched once, before rendering.
 *
 * Lifecycle: latch_template_parse() -> render any number of times -> latch_template_free(). */
#pragma once

#include <stdbool.h>

#include "latch/buf.h"
#include "latch/error.h"
#include "latch/json.h"

struct latch_template;

/* A `secret "path" "k=v"...` call: params is NULL for a read, an object for a write. */
struct latch_template_secret {
	const char *path;
	const json_t *params;
};

/* The fetched response envelope for a secret call, or NULL if it was not fetched. */
typedef const json_t *(*latch_template_lookup_fn)(const char *path, const json_t *params, void *userdata);

struct latch_template_options {
	const char *left_delim;   /* NULL: "{{" */
	const char *right_delim;  /* NULL: "}}" */
	size_t max_bytes;         /* 0: 1 MiB */
};

int latch_template_parse(const char *text, const char *name, const struct latch_template_options *opts,
			 struct latch_template **ret, struct latch_error *err);
size_t latch_template_n_secrets(const struct latch_template *t);
struct latch_template_secret latch_template_secret(const struct latch_template *t, size_t i);

/* Render into out (a secret buffer is advisable). A missing map key prints "<no value>",
 * or fails when error_on_missing_key is set. */
int latch_template_render(const struct latch_template *t, latch_template_lookup_fn lookup, void *userdata,
			  bool error_on_missing_key, struct latch_buf *out, struct latch_error *err);

void latch_template_free(struct latch_template *t);
void latch_template_freep(struct latch_template **t);

/* Print a JSON value the way Go's fmt %v prints what Vault Agent decoded: strings raw,
 * numbers as written, null as <nil>, arrays [a b], objects map[k:v ...] with sorted keys. */
int latch_template_print_value(const json_t *v, struct latch_buf *out);
/* JSON as Go's json.Marshal writes it (sorted keys, <>& escaped); pretty = MarshalIndent "  ". */
int latch_template_to_json(const json_t *v, bool pretty, struct latch_buf *out);
