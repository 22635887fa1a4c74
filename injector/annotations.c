#include "annotations.h"

#include <ctype.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latch/config.h"

#define VAULT_PREFIX "vault.hashicorp.com/"
#define BAO_PREFIX "openbao.openbao.org/"
#define LATCH_PREFIX "latch.dev/"

struct ann {
	char *key;       /* without the prefix; latch.dev/ keys keep "latch.dev/" */
	const char *full;
	const char *value;
	const struct latch_yaml_node *node;
};

struct ann_set {
	struct ann *items;
	size_t n;
};

/* Names the Vault Agent Injector has and latch supports. */
static const char *const exact_keys[] = {
	"agent-inject", "agent-inject-status", "agent-inject-default-template", "preserve-secret-case",
	"secret-volume-path", "agent-pre-populate-only", "agent-pre-populate", "agent-init-first",
	"agent-inject-containers", "role", "auth-path", "auth-type", "namespace", "service", "ca-cert", "tls-secret",
	"tls-server-name", "tls-skip-verify", "client-cert", "client-key", "agent-image", "agent-requests-cpu",
	"agent-requests-mem", "agent-limits-cpu", "agent-limits-mem", "agent-run-as-user", "agent-run-as-group",
	"agent-run-as-same-user", "agent-set-security-context", "agent-service-account-token-volume-name",
	"agent-inject-token", "agent-revoke-on-shutdown",
	LATCH_PREFIX "token-audience", LATCH_PREFIX "deadline-seconds", NULL,
};

/* Per-secret names: <prefix><secret name>. Longest first where one is a prefix of another. */
static const char *const secret_prefixes[] = {
	"agent-inject-secret-", "agent-inject-template-", "agent-inject-file-", "agent-inject-perms-",
	"agent-template-left-delim-", "agent-template-right-delim-", "error-on-missing-key-", "preserve-secret-case-",
	LATCH_PREFIX "format-", LATCH_PREFIX "key-", LATCH_PREFIX "params-", NULL,
};

/* Injector features latch does not have; named so the error says "not supported". */
static const char *const unsupported_prefixes[] = { "agent-inject-template-file-", "agent-inject-command-", NULL };

static int fail_at(const struct inject_context *ctx, const struct ann *a, const char *fmt, ...) _printf_(3, 4);
static int fail_at(const struct inject_context *ctx, const struct ann *a, const char *fmt, ...)
{
	struct latch_buf msg = LATCH_BUF_INIT(8192);
	if (a && a->node)
		latch_buf_printf(&msg, "%s:%zu:%zu: ", ctx->name, a->node->line, a->node->column);
	else
		latch_buf_printf(&msg, "%s: ", ctx->name);
	latch_buf_printf(&msg, "%s: ", ctx->object);
	if (a)
		latch_buf_printf(&msg, "annotation '%s': ", a->full);
	va_list ap;
	va_start(ap, fmt);
	int r = latch_error_setv_prefixed(ctx->err, LATCH_EINVAL, latch_buf_str(&msg), fmt, ap);
	va_end(ap);
	latch_buf_done(&msg);
	return r;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

static const char *short_key(const char *full)
{
	if (starts_with(full, VAULT_PREFIX))
		return full + strlen(VAULT_PREFIX);
	if (starts_with(full, BAO_PREFIX))
		return full + strlen(BAO_PREFIX);
	if (starts_with(full, LATCH_PREFIX))
		return full; /* kept whole: latch.dev/ names are their own namespace */
	return NULL;
}

static struct ann *find(const struct ann_set *set, const char *key)
{
	for (size_t i = 0; i < set->n; i++)
		if (strcmp(set->items[i].key, key) == 0)
			return &set->items[i];
	return NULL;
}

static const char *get(const struct ann_set *set, const char *key)
{
	struct ann *a = find(set, key);
	return a ? a->value : NULL;
}

/* Add one object's annotations; a later level (the pod template) overrides an earlier one. */
static int add_level(const struct inject_context *ctx, struct ann_set *set, const struct latch_yaml_node *annotations)
{
	if (!annotations || annotations->kind != LATCH_YAML_MAPPING)
		return 0;
	size_t level_start = set->n;
	for (size_t i = 0; i < annotations->n_pairs; i++) {
		const struct latch_yaml_node *k = annotations->pairs[i].key, *v = annotations->pairs[i].value;
		if (!k || k->kind != LATCH_YAML_SCALAR)
			continue;
		const char *key = short_key(k->value);
		if (!key)
			continue;
		struct ann a = { .key = NULL, .full = k->value, .value = v && v->kind == LATCH_YAML_SCALAR ? v->value : "",
				 .node = v ? v : k };
		if (!v || v->kind != LATCH_YAML_SCALAR)
			return fail_at(ctx, &a, "the value must be a string");
		struct ann *old = find(set, key);
		if (old && (size_t)(old - set->items) >= level_start) {
			if (strcmp(old->value, a.value) != 0)
				return fail_at(ctx, &a, "conflicts with '%s' on the same object", old->full);
			continue;
		}
		if (old) { /* the pod template's value wins over the workload's */
			old->full = a.full;
			old->value = a.value;
			old->node = a.node;
			continue;
		}
		a.key = strdup(key);
		void *p = realloc(set->items, (set->n + 1) * sizeof(*set->items));
		if (!a.key || !p) {
			free(a.key);
			return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
		}
		set->items = p;
		set->items[set->n++] = a;
	}
	return 0;
}

static void ann_set_done(struct ann_set *set)
{
	for (size_t i = 0; i < set->n; i++)
		free(set->items[i].key);
	free(set->items);
}

/* Go's strconv.ParseBool, which the Vault Agent Injector uses. */
static int parse_bool(const struct inject_context *ctx, const struct ann_set *set, const char *key, bool dflt, bool *ret)
{
	struct ann *a = find(set, key);
	*ret = dflt;
	if (!a)
		return 0;
	static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True", NULL };
	static const char *const no[] = { "0", "f", "F", "false", "FALSE", "False", NULL };
	for (const char *const *w = yes; *w; w++)
		if (strcmp(a->value, *w) == 0)
			return (*ret = true), 0;
	for (const char *const *w = no; *w; w++)
		if (strcmp(a->value, *w) == 0)
			return (*ret = false), 0;
	return fail_at(ctx, a, "'%s' is not true or false", a->value);
}

/* A Kubernetes resource quantity: 250m, 64Mi, 0.5, 1e3. */
static bool is_quantity(const char *s)
{
	const char *p = s;
	if (*p == '+' || *p == '-')
		p++;
	bool digits = false;
	while (isdigit((unsigned char)*p))
		p++, digits = true;
	if (*p == '.') {
		p++;
		while (isdigit((unsigned char)*p))
			p++, digits = true;
	}
	if (!digits)
		return false;
	static const char *const suffixes[] = { "", "m", "k", "M", "G", "T", "P", "E", "Ki", "Mi", "Gi", "Ti", "Pi", "Ei", NULL };
	for (const char *const *sfx = suffixes; *sfx; sfx++)
		if (strcmp(p, *sfx) == 0)
			return true;
	if (*p == 'e' || *p == 'E') {
		p++;
		if (*p == '+' || *p == '-')
			p++;
		if (!isdigit((unsigned char)*p))
			return false;
		while (isdigit((unsigned char)*p))
			p++;
		return *p == '\0';
	}
	return false;
}

static int take_string(const struct ann_set *set, const char *key, char **ret)
{
	const char *v = get(set, key);
	if (!v || !*v)
		return 0;
	*ret = strdup(v);
	return *ret ? 0 : LATCH_ENOMEM;
}

static int read_quantity(const struct inject_context *ctx, const struct ann_set *set, const char *key, char **ret)
{
	struct ann *a = find(set, key);
	if (a && !is_quantity(a->value))
		return fail_at(ctx, a, "'%s' is not a resource quantity (such as 250m or 64Mi)", a->value);
	return take_string(set, key, ret) < 0 ? latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory") : 0;
}

static int read_id(const struct inject_context *ctx, const struct ann_set *set, const char *key, long dflt, long *ret)
{
	struct ann *a = find(set, key);
	*ret = dflt;
	if (!a)
		return 0;
	char *end;
	long v = strtol(a->value, &end, 10);
	if (!*a->value || *end || v < 0 || v > 2147483647)
		return fail_at(ctx, a, "'%s' is not a user or group id", a->value);
	*ret = v;
	return 0;
}

/* Reject annotation names under our prefixes that latch does not know. */
static int check_names(const struct inject_context *ctx, const struct ann_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		const struct ann *a = &set->items[i];
		bool known = false, unsupported = false;
		for (const char *const *u = unsupported_prefixes; *u && !unsupported; u++)
			unsupported = starts_with(a->key, *u);
		for (const char *const *k = exact_keys; *k && !known && !unsupported; k++)
			known = strcmp(a->key, *k) == 0;
		for (const char *const *p = secret_prefixes; *p && !known && !unsupported; p++)
			known = starts_with(a->key, *p) && a->key[strlen(*p)] != '\0';
		if (known)
			continue;
		if (!ctx->opts->allow_unsupported)
			return fail_at(ctx, a, "is not supported by latch (--allow-unsupported turns this into a warning)");
		latch_buf_printf(ctx->warnings, "%s: %s: annotation '%s' is not supported by latch and was ignored\n", ctx->name,
				 ctx->object, a->full);
	}
	return 0;
}

static bool preserve_case(const struct ann_set *set, const char *raw_name)
{
	struct latch_buf key = LATCH_BUF_INIT(1024);
	latch_buf_printf(&key, "preserve-secret-case-%s", raw_name);
	const char *v = get(set, latch_buf_str(&key));
	latch_buf_done(&key);
	if (!v)
		v = get(set, "preserve-secret-case");
	return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0 || strcmp(v, "True") == 0 || strcmp(v, "TRUE") == 0 ||
		     strcmp(v, "t") == 0 || strcmp(v, "T") == 0);
}

/* The value of <prefix><name>, matching the name the way the injector does (case folded
 * unless preserve-secret-case). */
static struct ann *per_secret(const struct ann_set *set, const char *prefix, const char *name, bool keep_case)
{
	size_t n = strlen(prefix);
	for (size_t i = 0; i < set->n; i++) {
		const char *k = set->items[i].key;
		if (strncmp(k, prefix, n) != 0)
			continue;
		if (keep_case ? strcmp(k + n, name) == 0 : strcasecmp(k + n, name) == 0)
			return &set->items[i];
	}
	return NULL;
}

static int parse_params(const struct inject_context *ctx, const struct ann *a, json_t **ret)
{
	json_t *params = json_object();
	_cleanup_free_ char *copy = strdup(a->value);
	if (!params || !copy) {
		json_decref(params);
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	}
	char *save = NULL;
	for (char *kv = strtok_r(copy, ",", &save); kv; kv = strtok_r(NULL, ",", &save)) {
		char *eq = strchr(kv, '=');
		if (!eq || eq == kv) {
			json_decref(params);
			return fail_at(ctx, a, "'%s' is not key=value", kv);
		}
		*eq = '\0';
		json_object_set_new(params, kv, json_string(eq + 1));
	}
	*ret = params;
	return 0;
}

static int perms_to_mode(const struct inject_context *ctx, const struct ann *a, json_t *secret)
{
	char *end;
	long m = strtol(a->value, &end, 8);
	if (!*a->value || *end || strlen(a->value) > 4 || m < 0 || m > 0777)
		return fail_at(ctx, a, "'%s' is not an octal file mode such as 0640", a->value);
	if (m & 022)
		return fail_at(ctx, a, "'%s' would make the file group- or world-writable", a->value);
	char mode[8];
	snprintf(mode, sizeof(mode), "%04lo", m);
	json_object_set_new(secret, "mode", json_string(mode));
	return 0;
}

static int secret_entry(const struct inject_context *ctx, const struct ann_set *set, const struct ann *secret_ann,
			const char *default_template, json_t *secrets)
{
	const char *raw = secret_ann->key + strlen("agent-inject-secret-");
	bool keep = preserve_case(set, raw);
	_cleanup_free_ char *name = strdup(raw);
	if (!name)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	if (!keep)
		for (char *p = name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	json_t *s = json_pack("{s:s}", "name", name);
	json_array_append_new(secrets, s);
	struct ann *tmpl = per_secret(set, "agent-inject-template-", raw, keep);
	struct ann *format = per_secret(set, LATCH_PREFIX "format-", raw, keep);
	if (tmpl && format && strcmp(format->value, "template") != 0)
		return fail_at(ctx, format, "conflicts with agent-inject-template-%s", raw);
	if (tmpl) {
		json_object_set_new(s, "format", json_string("template"));
		json_object_set_new(s, "template", json_string(tmpl->value));
	} else {
		json_object_set_new(s, "path", json_string(secret_ann->value));
		const char *f = format ? format->value : default_template;
		enum latch_format parsed;
		if (latch_format_parse(f, &parsed) < 0 || parsed == LATCH_FORMAT_TEMPLATE)
			return fail_at(ctx, format ? format : find(set, "agent-inject-default-template"),
				       "'%s' is not map, json, env, dotenv, raw or pem", f);
		json_object_set_new(s, "format", json_string(f));
	}
	struct ann *a;
	if ((a = per_secret(set, "agent-inject-file-", raw, keep))) {
		const char *file = a->value[0] == '/' ? a->value + 1 : a->value;
		json_object_set_new(s, "file", json_string(file));
	}
	if ((a = per_secret(set, "agent-inject-perms-", raw, keep)) && perms_to_mode(ctx, a, s) < 0)
		return LATCH_EINVAL;
	if (!per_secret(set, "agent-inject-perms-", raw, keep))
		json_object_set_new(s, "mode", json_string("0644")); /* as Vault Agent: readable by the app's user */
	if ((a = per_secret(set, "agent-template-left-delim-", raw, keep)))
		json_object_set_new(s, "left_delim", json_string(a->value));
	if ((a = per_secret(set, "agent-template-right-delim-", raw, keep)))
		json_object_set_new(s, "right_delim", json_string(a->value));
	if ((a = per_secret(set, "error-on-missing-key-", raw, keep)))
		json_object_set_new(s, "error_on_missing_key", json_boolean(strcmp(a->value, "true") == 0));
	if ((a = per_secret(set, LATCH_PREFIX "key-", raw, keep)))
		json_object_set_new(s, "key", json_string(a->value));
	if ((a = per_secret(set, LATCH_PREFIX "params-", raw, keep))) {
		json_t *params = NULL;
		if (parse_params(ctx, a, &params) < 0)
			return LATCH_EINVAL;
		json_object_set_new(s, "params", params);
	}
	return 0;
}

/* Per-secret annotations must belong to a secret. */
static int check_orphans(const struct inject_context *ctx, const struct ann_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		const struct ann *a = &set->items[i];
		for (const char *const *p = secret_prefixes + 1; *p; p++) {
			if (!starts_with(a->key, *p) || (strcmp(*p, "preserve-secret-case-") == 0))
				continue;
			const char *raw = a->key + strlen(*p);
			bool keep = preserve_case(set, raw);
			if (!per_secret(set, "agent-inject-secret-", raw, keep))
				return fail_at(ctx, a, "there is no agent-inject-secret-%s for it", raw);
		}
	}
	return 0;
}

/* The address latch-init logs in to with the pod's ServiceAccount token. A manifest's
 * `service` annotation may send that token elsewhere than the operator chose: said in a
 * warning, or refused when the operator pinned the address; http:// only when allowed. */
static int vault_address(const struct inject_context *ctx, const struct ann_set *set, const char **ret)
{
	const struct ann *service = find(set, "service");
	const char *pinned = ctx->opts->vault_address;
	*ret = service ? service->value : pinned;
	if (!*ret)
		return fail_at(ctx, NULL, "no Vault address: set the vault.hashicorp.com/service annotation or --vault-addr");
	if (service && pinned && strcmp(service->value, pinned) != 0) {
		if (ctx->opts->pin_vault_address)
			return fail_at(ctx, service, "names '%s', but the Vault address is pinned to '%s'", service->value,
				       pinned);
		latch_buf_printf(ctx->warnings, "%s: %s: vault.hashicorp.com/service sends the pod's token to '%s', not to "
				 "'%s'\n", ctx->name, ctx->object, service->value, pinned);
	}
	if (strncmp(*ret, "http://", 7) == 0 && !ctx->opts->allow_http_vault)
		return fail_at(ctx, service, "Vault address '%s' is http://: the pod's ServiceAccount token would travel "
			       "in clear; use https, or allow http explicitly (--allow-http-vault)", *ret);
	return 0;
}

static int build_config(const struct inject_context *ctx, const struct ann_set *set,
			struct inject_settings *s)
{
	const char *address;
	int r = vault_address(ctx, set, &address);
	if (r < 0)
		return r;
	json_t *vault = json_pack("{s:s}", "address", address);
	const char *v;
	if ((v = get(set, "namespace")))
		json_object_set_new(vault, "namespace", json_string(v));
	if ((v = get(set, "ca-cert")))
		json_object_set_new(vault, "ca_file", json_string(v));
	if ((v = get(set, "tls-server-name")))
		json_object_set_new(vault, "server_name", json_string(v));
	if ((v = get(set, "client-cert")))
		json_object_set_new(vault, "client_cert_file", json_string(v));
	if ((v = get(set, "client-key")))
		json_object_set_new(vault, "client_key_file", json_string(v));
	bool skip = false, revoke = false, token_sink = false;
	r = parse_bool(ctx, set, "tls-skip-verify", false, &skip);
	if (r == 0)
		r = parse_bool(ctx, set, "agent-revoke-on-shutdown", false, &revoke);
	if (r == 0)
		r = parse_bool(ctx, set, "agent-inject-token", false, &token_sink);
	if (skip)
		json_object_set_new(vault, "tls_skip_verify", json_true());
	json_t *auth = json_pack("{s:s}", "token_file", "/var/run/secrets/latch/token");
	json_t *config = json_pack("{s:i,s:o,s:o,s:s}", "version", 1, "vault", vault, "auth", auth, "output_dir",
				   s->secret_volume_path);
	s->config = config;
	if (r < 0)
		return r;
	if ((v = get(set, "auth-type")))
		json_object_set_new(auth, "method", json_string(v));
	if ((v = get(set, "auth-path")))
		json_object_set_new(auth, "path", json_string(v));
	if ((v = get(set, "role")))
		json_object_set_new(auth, "role", json_string(v));
	if (revoke)
		json_object_set_new(config, "revoke_on_shutdown", json_true());
	if (token_sink)
		json_object_set_new(config, "token_file_name", json_string("token"));
	if (!s->pre_populate_only)
		json_object_set_new(config, "state_dir", json_string(INJECT_STATE_DIR));
	struct ann *deadline = find(set, LATCH_PREFIX "deadline-seconds");
	if (deadline) {
		char *end;
		long d = strtol(deadline->value, &end, 10);
		if (!*deadline->value || *end || d < 1 || d > 86400)
			return fail_at(ctx, deadline, "'%s' is not a number of seconds (1-86400)", deadline->value);
		json_object_set_new(config, "deadline_seconds", json_integer(d));
	}
	const char *default_template = get(set, "agent-inject-default-template");
	if (!default_template)
		default_template = "map";
	if (strcmp(default_template, "map") != 0 && strcmp(default_template, "json") != 0)
		return fail_at(ctx, find(set, "agent-inject-default-template"), "'%s' is not map or json", default_template);
	json_t *secrets = json_array();
	json_object_set_new(config, "secrets", secrets);
	for (size_t i = 0; i < set->n; i++)
		if (starts_with(set->items[i].key, "agent-inject-secret-") &&
		    (r = secret_entry(ctx, set, &set->items[i], default_template, secrets)) < 0)
			return r;
	if (json_array_size(secrets) == 0 && !token_sink)
		return fail_at(ctx, find(set, "agent-inject"), "no agent-inject-secret-* annotation names a secret to inject");
	return 0;
}

/* The generated configuration goes through latch-init's own parser: a template or value
 * latch-init would refuse in the pod is refused here, with the annotation named. */
static int validate_config(const struct inject_context *ctx, const struct ann_set *set, const json_t *config)
{
	char *text = json_dumps(config, JSON_COMPACT);
	struct latch_config parsed;
	struct latch_error inner = LATCH_ERROR_INIT;
	int r = text ? latch_config_parse(latch_view_str(text), "LATCH_CONFIG", &parsed, &inner) : LATCH_ENOMEM;
	free(text);
	if (r == 0) {
		latch_config_done(&parsed);
		return 0;
	}
	/* Point at the template annotation when the template is what failed. */
	const char *msg = latch_error_message(&inner);
	const struct ann *at = NULL;
	const char *t = strstr(msg, "template ");
	for (size_t i = 0; t && i < set->n && !at; i++)
		if (starts_with(set->items[i].key, "agent-inject-template-")) {
			const char *name = set->items[i].key + strlen("agent-inject-template-");
			char needle[512];
			snprintf(needle, sizeof(needle), "template %s:", name);
			if (strcasestr(msg, needle))
				at = &set->items[i];
		}
	/* Said of the annotation, the position inside the generated config means nothing. */
	r = fail_at(ctx, at, "%s", at ? t : msg);
	latch_error_done(&inner);
	return r;
}

static int read_settings(const struct inject_context *ctx, const struct ann_set *set, struct inject_settings *s)
{
	int r = parse_bool(ctx, set, "agent-pre-populate-only", false, &s->pre_populate_only);
	if (r == 0)
		r = parse_bool(ctx, set, "agent-pre-populate", true, &s->pre_populate);
	if (r == 0)
		r = parse_bool(ctx, set, "agent-init-first", false, &s->init_first);
	if (r == 0)
		r = parse_bool(ctx, set, "agent-set-security-context", true, &s->set_security_context);
	if (r == 0)
		r = parse_bool(ctx, set, "agent-run-as-same-user", false, &s->run_as_same_user);
	if (r == 0)
		r = read_quantity(ctx, set, "agent-requests-cpu", &s->requests_cpu);
	if (r == 0)
		r = read_quantity(ctx, set, "agent-requests-mem", &s->requests_mem);
	if (r == 0)
		r = read_quantity(ctx, set, "agent-limits-cpu", &s->limits_cpu);
	if (r == 0)
		r = read_quantity(ctx, set, "agent-limits-mem", &s->limits_mem);
	if (r == 0)
		r = read_id(ctx, set, "agent-run-as-user", 100, &s->run_as_user);
	if (r == 0)
		r = read_id(ctx, set, "agent-run-as-group", 1000, &s->run_as_group);
	if (r < 0)
		return r;
	const char *path = get(set, "secret-volume-path");
	if (path && path[0] != '/')
		return fail_at(ctx, find(set, "secret-volume-path"), "'%s' must be an absolute path", path);
	s->secret_volume_path = strdup(path ? path : "/vault/secrets");
	if (!s->secret_volume_path || take_string(set, "agent-inject-containers", &s->containers) < 0 ||
	    take_string(set, "agent-image", &s->image) < 0 || take_string(set, "tls-secret", &s->tls_secret) < 0 ||
	    take_string(set, "agent-service-account-token-volume-name", &s->token_volume_name) < 0 ||
	    take_string(set, LATCH_PREFIX "token-audience", &s->token_audience) < 0)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	return 0;
}

int inject_read_annotations(const struct inject_context *ctx, const struct latch_yaml_node *workload_annotations,
			    const struct latch_yaml_node *pod_annotations, struct inject_settings *ret)
{
	struct ann_set set = { 0 };
	struct inject_settings s = { 0 };
	int r = add_level(ctx, &set, workload_annotations);
	if (r == 0)
		r = add_level(ctx, &set, pod_annotations);
	if (r == 0)
		r = parse_bool(ctx, &set, "agent-inject", false, &s.inject);
	if (r == 0 && s.inject) {
		const char *status = get(&set, "agent-inject-status");
		s.already_injected = status && strcmp(status, "injected") == 0;
		r = check_names(ctx, &set);
		if (r == 0)
			r = check_orphans(ctx, &set);
		if (r == 0)
			r = read_settings(ctx, &set, &s);
		if (r == 0)
			r = build_config(ctx, &set, &s);
		if (r == 0)
			r = validate_config(ctx, &set, s.config);
	}
	ann_set_done(&set);
	if (r < 0) {
		inject_settings_done(&s);
		return r;
	}
	*ret = s;
	return 0;
}

void inject_settings_done(struct inject_settings *s)
{
	free(s->containers);
	free(s->image);
	free(s->requests_cpu);
	free(s->requests_mem);
	free(s->limits_cpu);
	free(s->limits_mem);
	free(s->secret_volume_path);
	free(s->tls_secret);
	free(s->token_volume_name);
	free(s->token_audience);
	json_decref(s->config);
	*s = (struct inject_settings){ 0 };
}
