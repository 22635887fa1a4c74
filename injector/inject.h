/* latch-inject as a library: adds the latch-init container to annotated workloads in a
 * parsed YAML stream. latch-inject (the CLI and the KRM function) and latch-sync both call
 * it in-process.
 *
 * An object is injected when its pod template (or its own metadata) carries
 * vault.hashicorp.com/agent-inject: "true" (or the openbao.openbao.org/ twin). The result is
 * idempotent: injecting an injected object again replaces latch's parts and changes no byte.
 * Errors name the input, line:column, the object and the annotation. */
#pragma once

#include <stdbool.h>

#include "latch/buf.h"
#include "latch/error.h"
#include "latch/yaml.h"

#define LATCH_INJECT_DEFAULT_IMAGE "ghcr.io/latch-dev/latch-init:0.1.0"
/* The audience of the ServiceAccount token latch-init logs in with: not the API server's, so a
 * token that reaches Vault (or an address a manifest chose) cannot be replayed against the
 * cluster. The Vault role says `audience=vault` to match. */
#define LATCH_INJECT_DEFAULT_TOKEN_AUDIENCE "vault"

enum latch_inject_policy {
	LATCH_INJECT_POLICY_LATCH_IMAGE, /* image rules apply to the latch container */
	LATCH_INJECT_POLICY_ALL_IMAGES,  /* ...and to every container of an injected pod */
};

struct latch_inject_options {
	const char *image;          /* NULL: LATCH_INJECT_DEFAULT_IMAGE */
	const char *vault_address;  /* used when no `service` annotation names one */
	bool pin_vault_address;     /* refuse a `service` annotation that names another address */
	bool allow_http_vault;      /* accept http:// (the ServiceAccount token would travel in clear) */
	const char *token_audience; /* NULL: LATCH_INJECT_DEFAULT_TOKEN_AUDIENCE; "": the API server's */
	bool allow_unsupported;     /* unknown annotations under our prefixes warn instead of failing */
	bool require_image_digest;
	const char *const *allowed_registries;
	size_t n_allowed_registries;
	enum latch_inject_policy policy;
	struct latch_inject_memo *memo; /* NULL, or what a stream's earlier objects taught (below) */
};

/* What injecting a stream's objects learns that its next objects can reuse: the last
 * configuration latch-init's parser accepted (most workloads of a stream share one). One per
 * stream and thread; latch_inject_memo_done() frees it. */
struct latch_inject_memo {
	char *valid_config;
};
void latch_inject_memo_done(struct latch_inject_memo *memo);

struct latch_inject_stats {
	size_t objects;
	size_t injected;
};

/* Inject every object of every document (List and ResourceList items included). name labels
 * the input in errors; warnings collects one line per warning. On error the stream may be
 * partly changed: the caller emits nothing (output is all or nothing). */
int latch_inject_stream(struct latch_yaml_stream *stream, const char *name, const struct latch_inject_options *opts,
			struct latch_buf *warnings, struct latch_inject_stats *stats, struct latch_error *err);

/* One object (a mapping). Returns 1 when it was injected, 0 when it was left alone. */
int latch_inject_object(struct latch_yaml_node *obj, const char *name, const struct latch_inject_options *opts,
			struct latch_buf *warnings, struct latch_error *err);
