#include "annotations.h"

#include <ctype.h>
#include <stddef.h>
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
	"agent-requests-mem", "agent-limits-cpu", "agent-limits-mem", "agent-requests-ephemeral",
	"agent-limits-ephemeral", "agent-run-as-user", "agent-run-as-group", "agent-run-as-same-user",
	"agent-set-security-context", "agent-service-account-token-volume-name", "agent-inject-token",
	"agent-revoke-on-shutdown", "agent-revoke-grace", "agent-share-process-namespace",
	"agent-copy-volume-mounts",
	"agent-extra-secret", "proxy-address", "log-level", "log-format", "agent-request-namespace",
	"auth-min-backoff", "auth-max-backoff", "agent-auto-auth-exit-on-err",
	"template-config-exit-on-retry-failure",
	/* NOLINTNEXTLINE(bugprone-suspicious-missing-comma): LATCH_PREFIX "x" is one name */
	LATCH_PREFIX "token-audience", LATCH_PREFIX "deadline-seconds", LATCH_PREFIX "exec-env",
	LATCH_PREFIX "exec-containers", LATCH_PREFIX "exec-on-change", LATCH_PREFIX "exec-grace-seconds", NULL,
};

/* The annotations that name a secret, in the injector's order of precedence. */
static const char *const secret_naming_prefixes[] = {
	"agent-inject-secret-", "agent-inject-template-file-", "agent-inject-template-", NULL,
};

/* The settings of a secret named by one of those: <prefix><secret name>. */
static const char *const secret_option_prefixes[] = {
	"agent-inject-file-", "agent-inject-perms-", "agent-inject-command-", "agent-template-left-delim-",
	"agent-template-right-delim-", "error-on-missing-key-", "preserve-secret-case-", "secret-volume-path-",
	LATCH_PREFIX "format-", LATCH_PREFIX "key-", LATCH_PREFIX "params-", LATCH_PREFIX "reload-", NULL,
};

/* Annotations that configure Vault Agent's own internals: latch-init has no such part. Each
 * is refused with the reason, unless its value asks for what latch does anyway. */
static const struct agent_internal {
	const char *key;      /* a prefix when it ends in '-' */
	const char *harmless; /* the value that asks for nothing latch lacks, or NULL */
	const char *why;
} agent_internals[] = {
	{ "agent-cache-enable", "false",
	  "latch-init has no cache or listener: the app reads files, not a local agent" },
	{ "agent-cache-use-auto-auth-token", "true",  "latch-init has no cache or listener" },
	{ "agent-cache-listener-port", "8200",  "latch-init has no cache or listener" },
	{ "agent-cache-exit-on-err", "false", "latch-init has no cache" },
	{ "agent-enable-quit", "false", "latch-init has no listener; it stops on SIGTERM" },
	{ "agent-configmap", NULL, "it holds Vault Agent HCL; latch-init is configured by annotations only "
				   "(see README: migrating from the injector)" },
	{ "agent-json-patch", "null|[]",
	  "it patches the Vault Agent container; set the latch-init container's settings "
				    "with the agent-* annotations" },
	{ "agent-init-json-patch", "null|[]",
	  "it patches the Vault Agent container; set the latch-init container's settings "
					 "with the agent-* annotations" },
	{ "agent-telemetry-", NULL, "latch-init has no telemetry stanza; it logs one line per event" },
	{ "go-max-procs", NULL, "latch-init is not a Go program" },
	{ "client-max-retries", NULL, "latch-init retries within latch.dev/deadline-seconds" },
	{ "client-timeout", NULL, "latch-init's calls share one deadline: latch.dev/deadline-seconds" },
	{ "template-max-connections-per-host", "0",  "latch-init fetches at most 8 secrets at a time" },
	{ "template-lease-renewal-threshold", NULL, "latch-init renews at 2/3 of a lease and re-fetches at 85%" },
	{ "template-static-secret-render-interval", NULL, "latch-init re-reads KV secrets on its own schedule" },
	{ "agent-disable-idle-connections", NULL, "a Vault Agent transport setting" },
	{ "agent-disable-keep-alives", NULL, "a Vault Agent transport setting" },
	{ "ca-key", NULL, "a CA directory is not supported; give a PEM bundle with ca-cert" },
};

/* The forms of agent-inject-command-NAME that are a signal to a process, and nothing else. */
static const struct command_form {
	const char *before, *after; /* the process name sits between them */
	const char *signal;
} command_forms[] = {
	{ "kill -HUP $(pidof ", ")", "HUP" },   { "kill -s HUP $(pidof ", ")", "HUP" },
	{ "kill -SIGHUP $(pidof ", ")", "HUP" }, { "kill -USR1 $(pidof ", ")", "USR1" },
	{ "pkill -HUP ", "", "HUP" },           { "pkill -SIGHUP ", "", "HUP" },
	{ "pkill -HUP -x ", "", "HUP" },        { "pkill -USR1 ", "", "USR1" },
	{ "killall -HUP ", "", "HUP" },         { "", " -s reload", "HUP" },
	{ "", " -s reopen", "USR1" },
};

static int fail_atv(const struct inject_context *ctx, const struct latch_yaml_node *at,
		    const char *annotation, const char *fmt, va_list ap)
{
	struct latch_buf msg = LATCH_BUF_INIT(8192);
	if (at && at->line)
		latch_buf_printf(&msg, "%s:%zu:%zu: ", ctx->name, at->line, at->column);
	else
		latch_buf_printf(&msg, "%s: ", ctx->name);
	latch_buf_printf(&msg, "%s: ", ctx->object);
	if (annotation)
		latch_buf_printf(&msg, "annotation '%s': ", annotation);
	int r = latch_error_setv_prefixed(ctx->err, LATCH_EINVAL, latch_buf_str(&msg), fmt, ap);
	latch_buf_done(&msg);
	return r;
}

int inject_fail_at(const struct inject_context *ctx, const struct latch_yaml_node *at, const char *annotation,
		   const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = fail_atv(ctx, at, annotation, fmt, ap);
	va_end(ap);
	return r;
}

static int fail_at(const struct inject_context *ctx, const struct ann *a, const char *fmt, ...)
	_printf_(3, 4);
static int fail_at(const struct inject_context *ctx, const struct ann *a, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	int r = fail_atv(ctx, a ? a->node : NULL, a ? a->full : NULL, fmt, ap);
	va_end(ap);
	return r;
}

static bool starts_with(const char *s, const char *prefix)
{
	return strncmp(s, prefix, strlen(prefix)) == 0;
}

/* The longest naming prefix decides: "agent-inject-template-file-" names no secret, it does
 * not name "file-" by "agent-inject-template-" (per_secret would never find that one). */
static const char *naming_prefix_of(const char *key)
{
	for (const char *const *p = secret_naming_prefixes; *p; p++)
		if (starts_with(key, *p))
			return *p;
	return NULL;
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
		if (p)
			set->items = p; /* moved even when strdup failed: the old block is gone */
		if (!a.key || !p) {
			free(a.key);
			return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
		}
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

/* The injector's booleans (parseutil.ParseBool): strconv.ParseBool's words, and "" is false. */
static bool go_bool(const char *v, bool *ret)
{
	static const char *const yes[] = { "1", "t", "T", "true", "TRUE", "True", NULL };
	static const char *const no[] = { "", "0", "f", "F", "false", "FALSE", "False", NULL };
	for (const char *const *w = yes; *w; w++)
		if (strcmp(v, *w) == 0)
			return (*ret = true);
	for (const char *const *w = no; *w; w++)
		if (strcmp(v, *w) == 0)
			return !(*ret = false);
	return false;
}

static int parse_bool_ann(const struct inject_context *ctx, const struct ann *a, bool *ret)
{
	if (!go_bool(a->value, ret))
		return fail_at(ctx, a, "'%s' is not true or false (1, t, T, TRUE, true, True, 0, f, F, FALSE, false, "
			       "False, or empty for false)", a->value);
	return 0;
}

/* Absent: dflt. */
static int parse_bool(const struct inject_context *ctx, const struct ann_set *set, const char *key,
		      bool dflt, bool *ret)
{
	struct ann *a = find(set, key);
	*ret = dflt;
	return a ? parse_bool_ann(ctx, a, ret) : 0;
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

/* The same, but an empty value counts: "" is the API server's own token audience. */
static int take_present_string(const struct ann_set *set, const char *key, char **ret)
{
	const char *v = get(set, key);
	if (!v)
		return 0;
	*ret = strdup(v);
	return *ret ? 0 : LATCH_ENOMEM;
}

static int read_quantity(const struct inject_context *ctx, const struct ann_set *set, const char *key,
			 struct inject_quantity *ret)
{
	struct ann *a = find(set, key);
	if (!a)
		return 0;
	if (*a->value && !is_quantity(a->value))
		return fail_at(ctx, a, "'%s' is not a resource quantity (such as 250m or 64Mi)", a->value);
	ret->set = true;
	if (*a->value && !(ret->value = strdup(a->value)))
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	return 0;
}

static int read_id(const struct inject_context *ctx, const struct ann_set *set, const char *key, long dflt, long *ret)
{
	struct ann *a = find(set, key);
	*ret = dflt;
	if (!a || !*a->value) /* the injector reads "" as 0, root; latch keeps its default */
		return 0;
	char *end;
	long v = strtol(a->value, &end, 10);
	if (!*a->value || *end || v < 0 || v > 2147483647)
		return fail_at(ctx, a, "'%s' is not a user or group id", a->value);
	*ret = v;
	return 0;
}

static bool is_blank(const char *s)
{
	while (*s == ' ' || *s == '\t' || *s == '\n' || *s == '\r')
		s++;
	return *s == '\0';
}

static const struct agent_internal *agent_internal_of(const char *key)
{
	for (size_t i = 0; i < ELEMENTSOF(agent_internals); i++) {
		const char *k = agent_internals[i].key;
		bool prefix = k[strlen(k) - 1] == '-';
		if (prefix ? starts_with(key, k) : strcmp(key, k) == 0)
			return &agent_internals[i];
	}
	return NULL;
}

/* A Vault Agent setting asks for nothing when it is empty, or its value (one of the '|'
 * separated harmless ones, booleans compared as booleans) means what latch does anyway. */
static bool harmless(const struct agent_internal *internal, const char *value)
{
	if (is_blank(value))
		return true;
	for (const char *h = internal->harmless; h && *h;) {
		size_t n = strcspn(h, "|");
		char word[16];
		bool want, is;
		snprintf(word, sizeof(word), "%.*s", (int)n, h);
		if (strcmp(word, value) == 0 || (go_bool(word, &want) && go_bool(value, &is) && want == is))
			return true;
		h += n + (h[n] == '|');
	}
	return false;
}

static int refuse_or_warn(const struct inject_context *ctx, const struct ann *a, const char *why)
{
	if (!ctx->opts->allow_unsupported)
		return fail_at(ctx, a, "%s (--allow-unsupported turns this into a warning)", why);
	latch_buf_printf(ctx->warnings, "%s: %s: annotation '%s' was ignored: %s\n", ctx->name, ctx->object, a->full,
			 why);
	return 0;
}

/* Every annotation under our prefixes is one latch knows, or one it says it cannot apply. */
static int check_names(const struct inject_context *ctx, const struct ann_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		const struct ann *a = &set->items[i];
		const struct agent_internal *internal = agent_internal_of(a->key);
		if (internal) {
			if (harmless(internal, a->value))
				continue;
			struct latch_buf why = LATCH_BUF_INIT(1024);
			latch_buf_printf(&why, "configures Vault Agent itself, which latch-init replaces: %s", internal->why);
			int r = refuse_or_warn(ctx, a, latch_buf_str(&why));
			latch_buf_done(&why);
			if (r < 0)
				return r;
			continue;
		}
		bool known = starts_with(a->key, "auth-config-");
		for (const char *const *k = exact_keys; *k && !known; k++)
			known = strcmp(a->key, *k) == 0;
		const char *naming = naming_prefix_of(a->key);
		known = known || (naming && a->key[strlen(naming)] != '\0');
		for (const char *const *p = secret_option_prefixes; *p && !known; p++)
			known = starts_with(a->key, *p) && a->key[strlen(*p)] != '\0';
		/* The injector reads the bare key as the template of a secret named "file". */
		known = known || strcmp(a->key, "agent-inject-template-file") == 0;
		for (const char *const *p = secret_naming_prefixes; *p && !known; p++)
			if (strcmp(a->key, *p) == 0) { /* no name: the injector ignores it */
				latch_buf_printf(ctx->warnings, "%s: %s: annotation '%s' was ignored: it names no "
						 "secret\n", ctx->name, ctx->object, a->full);
				known = true;
			}
		if (!known) {
			int r = refuse_or_warn(ctx, a, "is not an annotation latch knows");
			if (r < 0)
				return r;
		}
	}
	return 0;
}

/* preserve-secret-case-NAME, else preserve-secret-case; a bad value is false, as in the
 * injector. */
static bool preserve_case(const struct ann_set *set, const char *raw_name)
{
	struct latch_buf key = LATCH_BUF_INIT(1024);
	latch_buf_printf(&key, "preserve-secret-case-%s", raw_name);
	const char *v = get(set, latch_buf_str(&key));
	latch_buf_done(&key);
	if (!v)
		v = get(set, "preserve-secret-case");
	bool keep = false;
	return v && go_bool(v, &keep) && keep;
}

/* The value of <prefix><name>. Names match regardless of case unless preserve-secret-case:
 * the injector matches the raw name exactly, so an annotation it would silently ignore for a
 * difference of case applies in latch. */
static struct ann *per_secret(const struct ann_set *set, const char *prefix, const char *name, bool keep_case)
{
	size_t n = strlen(prefix);
	bool template_prefix = strcmp(prefix, "agent-inject-template-") == 0;
	for (size_t i = 0; i < set->n; i++) {
		const char *k = set->items[i].key;
		if (strncmp(k, prefix, n) != 0 || (template_prefix && starts_with(k, "agent-inject-template-file-")))
			continue;
		if (keep_case ? strcmp(k + n, name) == 0 : strcasecmp(k + n, name) == 0)
			return &set->items[i];
	}
	return NULL;
}

static int parse_params(const struct inject_context *ctx, const struct ann *a, json_t **ret)
{
	json_t *params = json_object();
	if (!params)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	for (const char *p = a->value; *p;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		const char *eq = memchr(p, '=', n);
		if (!eq || eq == p) {
			json_decref(params);
			return fail_at(ctx, a, "'%.*s' is not key=value", (int)n, p);
		}
		_cleanup_free_ char *key = strndup(p, (size_t)(eq - p));
		json_t *value = json_stringn(eq + 1, n - (size_t)(eq - p) - 1);
		if (!key || !value || json_object_set_new(params, key, value) < 0) {
			json_decref(params);
			return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
		}
		p += n + (end ? 1 : 0);
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

/* A signal to a process and its name: "HUP nginx" (latch.dev/reload-NAME). */
static int reload_from_spec(const struct inject_context *ctx, const struct ann *a, json_t *secret)
{
	const char *blank = strchr(a->value, ' ');
	_cleanup_free_ char *signal_name = blank ? strndup(a->value, (size_t)(blank - a->value)) : NULL;
	const char *process = blank ? blank + 1 : NULL;
	int number;
	if (!signal_name || latch_signal_parse(signal_name, &number) < 0 || !*process || strchr(process, ' ') ||
	    strchr(process, '/') || strlen(process) > LATCH_PROCESS_NAME_MAX)
		return fail_at(ctx, a, "'%s' is not '<signal> <process>', such as 'HUP nginx' (signals: HUP, USR1, "
			       "USR2, TERM, INT, QUIT, WINCH; the process as ps shows it)", a->value);
	json_object_set_new(secret, "reload", json_pack("{s:s,s:s}", "signal", latch_signal_name(number), "process",
							 process));
	return 0;
}

/* The process name of a command form: a program name, its directory dropped. */
static bool command_process(const char *start, size_t n, char *ret, size_t size)
{
	const char *slash = memrchr(start, '/', n);
	if (slash) {
		n -= (size_t)(slash + 1 - start);
		start = slash + 1;
	}
	if (n == 0 || n >= size || n > LATCH_PROCESS_NAME_MAX)
		return false;
	for (size_t i = 0; i < n; i++)
		if (!isalnum((unsigned char)start[i]) && !strchr("._-", start[i]))
			return false;
	memcpy(ret, start, n);
	ret[n] = '\0';
	return true;
}

/* agent-inject-command-NAME runs a shell command in Vault Agent's container; latch-init has
 * no shell. The forms that only signal a process of the pod become that signal. */
static int reload_from_command(const struct inject_context *ctx, const struct ann *a, json_t *secret)
{
	const char *v = a->value;
	while (*v == ' ')
		v++;
	size_t len = strlen(v);
	while (len > 0 && v[len - 1] == ' ')
		len--;
	for (size_t i = 0; i < ELEMENTSOF(command_forms); i++) {
		const struct command_form *f = &command_forms[i];
		size_t b = strlen(f->before), e = strlen(f->after);
		char process[LATCH_PROCESS_NAME_MAX + 1];
		if (len <= b + e || strncmp(v, f->before, b) != 0 || strncmp(v + len - e, f->after, e) != 0 ||
		    !command_process(v + b, len - b - e, process, sizeof(process)))
			continue;
		if (!*f->before && strcmp(process, "nginx") != 0)
			continue; /* "-s reload" is nginx's own */
		json_object_set_new(secret, "reload", json_pack("{s:s,s:s}", "signal", f->signal, "process", process));
		return 0;
	}
	return fail_at(ctx, a, "latch-init runs no shell commands; it can signal a process of the pod when the "
		       "secret changes: 'kill -HUP $(pidof P)', 'pkill -HUP P' and 'nginx -s reload' are understood, "
		       "or use latch.dev/reload-NAME: \"HUP P\"");
}

struct secret_ctx {
	const char *default_template;
	const char *const *exec_env; /* latch.dev/exec-env names, NULL-terminated */
	char ***extra_mount_paths;
	const char *volume_path;
};

static bool in_list(const char *const *list, const char *name)
{
	for (; list && *list; list++)
		if (strcasecmp(*list, name) == 0) /* secret names are lower-cased unless preserve-secret-case */
			return true;
	return false;
}

static int add_mount_path(char ***paths, const char *path)
{
	size_t n = 0;
	for (; *paths && (*paths)[n]; n++)
		if (strcmp((*paths)[n], path) == 0)
			return 0;
	char **grown = realloc(*paths, (n + 2) * sizeof(*grown));
	if (!grown)
		return LATCH_ENOMEM;
	*paths = grown;
	grown[n] = strdup(path);
	grown[n + 1] = NULL;
	return grown[n] ? 0 : LATCH_ENOMEM;
}

/* How the secret is rendered: its template, a template file read in the pod, or a format. */
static int secret_content(const struct inject_context *ctx, const struct ann_set *set,
			  const char *raw, bool keep, const struct secret_ctx *sx, const char *name, json_t *s)
{
	struct ann *path = per_secret(set, "agent-inject-secret-", raw, keep);
	struct ann *tmpl = per_secret(set, "agent-inject-template-", raw, keep);
	struct ann *tmpl_file = per_secret(set, "agent-inject-template-file-", raw, keep);
	struct ann *format = per_secret(set, LATCH_PREFIX "format-", raw, keep);
	if (tmpl && !*tmpl->value)
		tmpl = NULL; /* an empty template means the default one */
	if (tmpl_file && (!*tmpl_file->value || tmpl))
		tmpl_file = NULL; /* an inline template wins */
	if ((tmpl || tmpl_file) && format && strcmp(format->value, "template") != 0)
		return fail_at(ctx, format, "conflicts with the template of secret '%s'", raw);
	if (!path && !tmpl && !tmpl_file) /* named by an annotation that gives it nothing to render */
		return fail_at(ctx, NULL, "secret '%s' has no Vault path (agent-inject-secret-%s) and no template", name,
			       raw);
	if (tmpl || tmpl_file) {
		json_object_set_new(s, "format", json_string("template"));
		if (tmpl)
			return json_object_set_new(s, "template", json_string(tmpl->value));
		if (tmpl_file->value[0] != '/')
			return fail_at(ctx, tmpl_file, "'%s' must be an absolute path in latch-init's container (mount it "
				       "there with agent-copy-volume-mounts)", tmpl_file->value);
		return json_object_set_new(s, "template_file", json_string(tmpl_file->value));
	}
	json_object_set_new(s, "path", json_string(path->value));
	bool for_exec = in_list(sx->exec_env, name);
	const char *f = format ? format->value : for_exec ? "dotenv" : sx->default_template;
	enum latch_format parsed;
	if (latch_format_parse(f, &parsed) < 0 || parsed == LATCH_FORMAT_TEMPLATE)
		return fail_at(ctx, format ? format : find(set, "agent-inject-default-template"),
			       "'%s' is not map, json, env, dotenv, raw or pem", f);
	if (for_exec && parsed != LATCH_FORMAT_ENV && parsed != LATCH_FORMAT_DOTENV)
		return fail_at(ctx, format, "secret '%s' is named by latch.dev/exec-env, so its format must be env or "
			       "dotenv, not %s", name, f);
	return json_object_set_new(s, "format", json_string(f));
}

static int secret_options(const struct inject_context *ctx, const struct ann_set *set,
			  const char *raw, bool keep, const struct secret_ctx *sx, json_t *s)
{
	struct ann *a;
	if ((a = per_secret(set, "agent-inject-file-", raw, keep)) && *a->value) {
		const char *file = a->value[0] == '/' ? a->value + 1 : a->value;
		json_object_set_new(s, "file", json_string(file));
	}
	if ((a = per_secret(set, "agent-inject-perms-", raw, keep)) && perms_to_mode(ctx, a, s) < 0)
		return LATCH_EINVAL;
	if (!a)
		json_object_set_new(s, "mode", json_string(ctx->file_mode));
	if ((a = per_secret(set, "agent-template-left-delim-", raw, keep)) && *a->value)
		json_object_set_new(s, "left_delim", json_string(a->value));
	if ((a = per_secret(set, "agent-template-right-delim-", raw, keep)) && *a->value)
		json_object_set_new(s, "right_delim", json_string(a->value));
	bool missing_key_fails = false;
	a = per_secret(set, "error-on-missing-key-", raw, keep);
	if (a && parse_bool_ann(ctx, a, &missing_key_fails) < 0)
		return LATCH_EINVAL;
	if (missing_key_fails)
		json_object_set_new(s, "error_on_missing_key", json_true());
	if ((a = per_secret(set, LATCH_PREFIX "key-", raw, keep)))
		json_object_set_new(s, "key", json_string(a->value));
	if ((a = per_secret(set, LATCH_PREFIX "params-", raw, keep))) {
		json_t *params = NULL;
		if (parse_params(ctx, a, &params) < 0)
			return LATCH_EINVAL;
		json_object_set_new(s, "params", params);
	}
	struct ann *command = per_secret(set, "agent-inject-command-", raw, keep);
	struct ann *reload = per_secret(set, LATCH_PREFIX "reload-", raw, keep);
	if (command && reload)
		return fail_at(ctx, reload, "conflicts with agent-inject-command-%s", raw);
	if (reload && reload_from_spec(ctx, reload, s) < 0)
		return LATCH_EINVAL;
	if (command && *command->value && reload_from_command(ctx, command, s) < 0)
		return LATCH_EINVAL;
	/* The same memory volume is mounted there too, so the file is at <path>/<file>. */
	if ((a = per_secret(set, "secret-volume-path-", raw, keep)) && strcmp(a->value, sx->volume_path) != 0) {
		if (a->value[0] != '/')
			return fail_at(ctx, a, "'%s' must be an absolute path", a->value);
		if (add_mount_path(sx->extra_mount_paths, a->value) < 0)
			return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	}
	return 0;
}

/* The secret named by the annotation `naming`; `secrets` already holds the earlier ones. */
static int secret_entry(const struct inject_context *ctx, const struct ann_set *set, const struct ann *naming,
			const char *prefix, const struct secret_ctx *sx, json_t *secrets)
{
	const char *raw = naming->key + strlen(prefix);
	bool keep = preserve_case(set, raw);
	_cleanup_free_ char *name = strdup(raw);
	if (!name)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	if (!keep)
		for (char *p = name; *p; p++)
			*p = (char)tolower((unsigned char)*p);
	size_t i;
	json_t *seen;
	json_array_foreach(secrets, i, seen)
		if (strcmp(json_string_value(json_object_get(seen, "name")), name) == 0)
			return 0; /* named twice (agent-inject-secret-X and agent-inject-template-X) */
	json_t *s = json_pack("{s:s}", "name", name);
	if (!s || json_array_append_new(secrets, s) < 0)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	int r = secret_content(ctx, set, raw, keep, sx, name, s);
	return r < 0 ? r : secret_options(ctx, set, raw, keep, sx, s);
}

/* A per-secret annotation for a name no secret has: ignored, as by the injector, but said. */
static void warn_orphans(const struct inject_context *ctx, const struct ann_set *set)
{
	for (size_t i = 0; i < set->n; i++) {
		const struct ann *a = &set->items[i];
		for (const char *const *p = secret_option_prefixes; *p; p++) {
			if (!starts_with(a->key, *p) || strcmp(*p, "preserve-secret-case-") == 0)
				continue;
			const char *raw = a->key + strlen(*p);
			bool keep = preserve_case(set, raw), named = false;
			for (const char *const *n = secret_naming_prefixes; *n && !named; n++) {
				struct ann *x = per_secret(set, *n, raw, keep);
				named = x && !is_blank(x->value);
			}
			if (!named)
				latch_buf_printf(ctx->warnings, "%s: %s: annotation '%s' was ignored: no secret is named "
						 "'%s'\n", ctx->name, ctx->object, a->full, raw);
			break;
		}
	}
}

/* The address latch-init logs in to with the pod's ServiceAccount token. A manifest's
 * `service` annotation may send that token elsewhere than the operator chose: said in a
 * warning, or refused when the operator pinned the address; http:// only when allowed. */
static int vault_address(const struct inject_context *ctx, const struct ann_set *set, const char **ret)
{
	const struct ann *service = find(set, "service");
	if (service && !*service->value)
		service = NULL;
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

/* auth-config-KEY (dashes read as underscores, as the injector does) onto latch-init's login:
 * role, and the file the JWT is read from. */
static int auth_from_annotations(const struct inject_context *ctx, const struct ann_set *set, json_t *auth)
{
	const char *method = get(set, "auth-type");
	if (!method || !*method)
		method = "kubernetes";
	json_object_set_new(auth, "method", json_string(method));
	const char *v;
	if ((v = get(set, "auth-path")) && *v)
		json_object_set_new(auth, "path", json_string(v));
	for (size_t i = 0; i < set->n; i++) {
		const struct ann *a = &set->items[i];
		if (!starts_with(a->key, "auth-config-"))
			continue;
		_cleanup_free_ char *key = strdup(a->key + strlen("auth-config-"));
		if (!key)
			return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
		for (char *p = key; *p; p++)
			if (*p == '-')
				*p = '_';
		if (strcmp(key, "role") == 0)
			json_object_set_new(auth, "role", json_string(a->value));
		else if (strcmp(key, "token_path") == 0 || (strcmp(method, "jwt") == 0 && strcmp(key, "path") == 0))
			json_object_set_new(auth, "token_file", json_string(a->value));
		else
			return fail_at(ctx, a, "latch-init's %s login takes role and token_path only; '%s' has no "
				       "equivalent", method, key);
	}
	if ((v = get(set, "role")) && *v) /* role wins over auth-config-role */
		json_object_set_new(auth, "role", json_string(v));
	if (strcmp(method, "token") != 0 && !json_object_get(auth, "role"))
		return fail_at(ctx, find(set, "agent-inject"), "no Vault role: set vault.hashicorp.com/role");
	return 0;
}

static int vault_from_annotations(const struct inject_context *ctx, const struct ann_set *set, json_t **ret)
{
	const char *address;
	int r = vault_address(ctx, set, &address);
	if (r < 0)
		return r;
	json_t *vault = json_pack("{s:s}", "address", address);
	if (!vault)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	static const char *const strings[][2] = {
		{ "namespace", "namespace" },       { "ca-cert", "ca_file" },        { "tls-server-name", "server_name" },
		{ "client-cert", "client_cert_file" }, { "client-key", "client_key_file" },
	};
	for (size_t i = 0; i < ELEMENTSOF(strings); i++) {
		const char *v = get(set, strings[i][0]);
		if (v && *v)
			json_object_set_new(vault, strings[i][1], json_string(v));
	}
	bool skip = false;
	r = parse_bool(ctx, set, "tls-skip-verify", false, &skip);
	if (skip)
		json_object_set_new(vault, "tls_skip_verify", json_true());
	*ret = vault;
	return r;
}

static int default_template_of(const struct inject_context *ctx, const struct ann_set *set, const char **ret)
{
	struct ann *a = find(set, "agent-inject-default-template");
	*ret = "map";
	if (!a)
		return 0;
	if (strcasecmp(a->value, "map") != 0 && strcasecmp(a->value, "json") != 0)
		return fail_at(ctx, a, "'%s' is not map or json", a->value);
	*ret = strcasecmp(a->value, "map") == 0 ? "map" : "json";
	return 0;
}

/* The raw secret name an annotation gives, or NULL when it names no secret. */
static const char *naming_raw_name(const struct ann *a, const char **ret_prefix)
{
	const char *prefix = naming_prefix_of(a->key);
	if (prefix && a->key[strlen(prefix)] && !is_blank(a->value)) {
		*ret_prefix = prefix;
		return a->key + strlen(prefix);
	}
	if (strcmp(a->key, "agent-inject-template-file") == 0 && !is_blank(a->value)) {
		*ret_prefix = "agent-inject-template-";
		return "file";
	}
	return NULL;
}

/* Two names that differ only in case name one secret: the injector writes both to the same
 * file, one silently over the other; latch refuses. */
static int check_distinct_names(const struct inject_context *ctx, const struct ann_set *set, size_t upto,
				const char *raw)
{
	for (size_t j = 0; j < upto; j++) {
		const char *prefix, *other = naming_raw_name(&set->items[j], &prefix);
		bool keep = preserve_case(set, raw) || preserve_case(set, other ? other : "");
		if (other && strcmp(other, raw) != 0 && !keep && strcasecmp(other, raw) == 0)
			return fail_at(ctx, &set->items[upto], "two secrets are named '%s' (also by '%s'): names are "
				       "lower-cased, as by the injector", raw, set->items[j].full);
	}
	return 0;
}

static int collect_secrets(const struct inject_context *ctx, const struct ann_set *set,
			   const struct secret_ctx *sx, json_t *secrets)
{
	for (size_t i = 0; i < set->n; i++) {
		const char *prefix, *raw = naming_raw_name(&set->items[i], &prefix);
		if (!raw)
			continue;
		int r = check_distinct_names(ctx, set, i, raw);
		if (r == 0)
			r = secret_entry(ctx, set, &set->items[i], prefix, sx, secrets);
		if (r < 0)
			return r;
	}
	return 0;
}

/* The env files of latch.dev/exec-env, as the app's container sees them. */
static int exec_env_files(const struct inject_context *ctx, const struct ann_set *set, const json_t *secrets,
			  const char *const *names, struct inject_settings *s)
{
	size_t n = 0;
	while (names[n])
		n++;
	s->exec.env_files = calloc(n + 1, sizeof(char *));
	if (!s->exec.env_files)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	for (size_t k = 0; k < n; k++) {
		const json_t *found = NULL, *item;
		size_t i;
		json_array_foreach(secrets, i, item)
			if (strcasecmp(json_string_value(json_object_get(item, "name")), names[k]) == 0)
				found = item;
		if (!found)
			return fail_at(ctx, find(set, LATCH_PREFIX "exec-env"), "no secret is named '%s'", names[k]);
		const char *file = json_string_value(json_object_get(found, "file"));
		if (!file)
			file = json_string_value(json_object_get(found, "name"));
		struct latch_buf path = LATCH_BUF_INIT(4096);
		latch_buf_printf(&path, "%s/%s", s->secret_volume_path, file);
		if (!(s->exec.env_files[k] = latch_buf_take(&path)))
			return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	}
	return 0;
}

/* "a, b" -> {"a", "b", NULL}; one allocation. */
static char **split_names(const char *list)
{
	size_t n = 1;
	for (const char *p = list; *p; p++)
		n += *p == ',';
	size_t len = strlen(list);
	char **v = calloc(1, (n + 1) * sizeof(char *) + len + 1);
	if (!v)
		return NULL;
	char *text = memcpy((char *)(v + n + 1), list, len + 1);
	size_t k = 0;
	for (char *p = text, *end; p; p = end ? end + 1 : NULL) {
		end = strchr(p, ',');
		if (end)
			*end = '\0';
		while (*p == ' ')
			p++;
		for (char *t = p + strlen(p); t > p && t[-1] == ' ';)
			*--t = '\0';
		if (*p)
			v[k++] = p;
	}
	return v;
}

/* A comma list annotation as names (one allocation); absent or empty leaves *ret NULL. */
static int take_names(const struct ann_set *set, const char *key, char ***ret)
{
	const char *v = get(set, key);
	if (!v || !*v)
		return 0;
	*ret = split_names(v);
	return *ret ? 0 : LATCH_ENOMEM;
}

static int read_exec(const struct inject_context *ctx, const struct ann_set *set, struct inject_settings *s,
		     char ***ret_names)
{
	struct ann *env = find(set, LATCH_PREFIX "exec-env");
	struct ann *on_change = find(set, LATCH_PREFIX "exec-on-change");
	struct ann *grace = find(set, LATCH_PREFIX "exec-grace-seconds");
	s->exec.grace_seconds = 10;
	if (!env)
		return 0;
	if (!(*ret_names = split_names(env->value)))
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	if (!**ret_names)
		return fail_at(ctx, env, "names no secret");
	if (on_change && strcmp(on_change->value, "restart") != 0 && strcmp(on_change->value, "ignore") != 0)
		return fail_at(ctx, on_change, "'%s' is not restart or ignore", on_change->value);
	s->exec.restart = on_change && strcmp(on_change->value, "restart") == 0;
	if (grace) {
		char *end;
		s->exec.grace_seconds = strtol(grace->value, &end, 10);
		if (!*grace->value || *end || s->exec.grace_seconds < 0 || s->exec.grace_seconds > 3600)
			return fail_at(ctx, grace, "'%s' is not a number of seconds (0-3600)", grace->value);
	}
	return take_names(set, LATCH_PREFIX "exec-containers", &s->exec.containers) < 0
		       ? latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory")
		       : 0;
}

static int build_config(const struct inject_context *ctx, const struct ann_set *set,
			struct inject_settings *s)
{
	json_t *vault = NULL;
	int r = vault_from_annotations(ctx, set, &vault);
	json_t *auth = json_pack("{s:s}", "token_file", "/var/run/secrets/latch/token");
	json_t *secrets = json_array();
	s->config = json_pack("{s:i,s:o,s:o,s:s,s:o}", "version", 1, "vault", vault ? vault : json_object(),
			      "auth", auth, "output_dir", s->secret_volume_path, "secrets", secrets);
	if (!s->config)
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = auth_from_annotations(ctx, set, auth);
	bool revoke = false, token_sink = false;
	if (r == 0)
		r = parse_bool(ctx, set, "agent-revoke-on-shutdown", false, &revoke);
	if (r == 0)
		r = parse_bool(ctx, set, "agent-inject-token", false, &token_sink);
	if (r < 0)
		return r;
	if (revoke)
		json_object_set_new(s->config, "revoke_on_shutdown", json_true());
	if (token_sink)
		json_object_set_new(s->config, "token_file_name", json_string("token"));
	if (!s->pre_populate_only)
		json_object_set_new(s->config, "state_dir", json_string(INJECT_STATE_DIR));
	struct ann *deadline = find(set, LATCH_PREFIX "deadline-seconds");
	if (deadline) {
		char *end;
		long d = strtol(deadline->value, &end, 10);
		if (!*deadline->value || *end || d < 1 || d > 86400)
			return fail_at(ctx, deadline, "'%s' is not a number of seconds (1-86400)", deadline->value);
		json_object_set_new(s->config, "deadline_seconds", json_integer(d));
	}
	_cleanup_free_ char **exec_names = NULL;
	r = read_exec(ctx, set, s, &exec_names);
	struct secret_ctx sx = { .exec_env = (const char *const *)exec_names,
				 .extra_mount_paths = &s->extra_mount_paths,
				 .volume_path = s->secret_volume_path };
	if (r == 0)
		r = default_template_of(ctx, set, &sx.default_template);
	if (r == 0)
		r = collect_secrets(ctx, set, &sx, secrets);
	if (r == 0 && exec_names)
		r = exec_env_files(ctx, set, secrets, (const char *const *)exec_names, s);
	if (r == 0 && exec_names)
		json_object_set_new(s->config, "copy_self_to", json_string(INJECT_BIN_DIR));
	if (r == 0 && exec_names && !s->pre_populate && !s->pre_populate_only)
		latch_buf_printf(ctx->warnings, "%s: %s: latch.dev/exec-env with agent-pre-populate off: the app may start "
				 "before latch-init copied itself, and is restarted by the kubelet until then\n",
				 ctx->name, ctx->object);
	return r;
}

/* The generated configuration goes through latch-init's own parser: a template or value
 * latch-init would refuse in the pod is refused here, with the annotation named. */
static int validate_config(const struct inject_context *ctx, const struct ann_set *set, const char *text)
{
	struct latch_inject_memo *memo = ctx->opts->memo;
	if (memo && memo->valid_config && strcmp(memo->valid_config, text) == 0)
		return 0;
	struct latch_config parsed;
	struct latch_error inner = LATCH_ERROR_INIT;
	int r = latch_config_parse(latch_view_str(text), "LATCH_CONFIG", &parsed, &inner);
	if (r == 0) {
		latch_config_done(&parsed);
		if (memo) {
			free(memo->valid_config);
			memo->valid_config = strdup(text);
		}
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

/* A Go duration as time.ParseDuration reads it: "300ms", "1m30s", "0". */
static bool is_go_duration(const char *s)
{
	if (*s == '+' || *s == '-')
		s++;
	if (strcmp(s, "0") == 0)
		return true;
	static const char *const units[] = { "ns", "us", "\xc2\xb5s", "ms", "s", "m", "h", NULL };
	if (!*s)
		return false;
	while (*s) {
		const char *start = s;
		while (isdigit((unsigned char)*s) || *s == '.')
			s++;
		if (s == start)
			return false;
		const char *const *u = units;
		for (; *u; u++)
			if (strncmp(s, *u, strlen(*u)) == 0 && !(strcmp(*u, "m") == 0 && s[1] == 's'))
				break;
		if (!*u)
			return false;
		s += strlen(*u);
	}
	return true;
}

/* Injector settings latch-init meets in its own way: checked as the injector checks them,
 * with nothing to set. */
static int check_accepted(const struct inject_context *ctx, const struct ann_set *set)
{
	bool ignored;
	int r = parse_bool(ctx, set, "agent-auto-auth-exit-on-err", false, &ignored);
	if (r == 0)
		r = parse_bool(ctx, set, "template-config-exit-on-retry-failure", true, &ignored);
	struct ann *a;
	if (r == 0 && (a = find(set, "agent-revoke-grace"))) {
		char *end;
		unsigned long long v = strtoull(a->value, &end, 10);
		if (!*a->value || *end || a->value[0] == '-' || v > 86400)
			r = fail_at(ctx, a, "'%s' is not a number of seconds", a->value);
	}
	static const char *const durations[] = { "auth-min-backoff", "auth-max-backoff" };
	for (size_t i = 0; r == 0 && i < ELEMENTSOF(durations); i++)
		if ((a = find(set, durations[i])) && *a->value && !is_go_duration(a->value))
			r = fail_at(ctx, a, "'%s' is not a duration such as 1s or 1m30s", a->value);
	return r;
}

static int read_logging(const struct inject_context *ctx, const struct ann_set *set,
			struct inject_settings *s)
{
	struct ann *level = find(set, "log-level"), *format = find(set, "log-format");
	static const char *const levels[][2] = {
		{ "trace", "debug" }, { "debug", "debug" }, { "info", "info" },
		{ "warn", "warn" },   { "warning", "warn" }, { "err", "error" }, { "error", "error" },
	};
	for (size_t i = 0; level && *level->value && !s->log_level && i < ELEMENTSOF(levels); i++)
		if (strcasecmp(level->value, levels[i][0]) == 0 && !(s->log_level = strdup(levels[i][1])))
			return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	if (level && *level->value && !s->log_level)
		return fail_at(ctx, level, "'%s' is not trace, debug, info, warn or error", level->value);
	if (format && *format->value && strcmp(format->value, "standard") != 0 && strcmp(format->value, "json") != 0)
		return fail_at(ctx, format, "'%s' is not standard or json", format->value);
	if (format && strcmp(format->value, "json") == 0 && !(s->log_format = strdup("json")))
		return latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
	return 0;
}

static int read_resources(const struct inject_context *ctx, const struct ann_set *set,
			  struct inject_settings *s)
{
	static const struct {
		const char *key;
		size_t offset;
	} quantities[] = {
		{ "agent-requests-cpu", offsetof(struct inject_settings, requests_cpu) },
		{ "agent-requests-mem", offsetof(struct inject_settings, requests_mem) },
		{ "agent-limits-cpu", offsetof(struct inject_settings, limits_cpu) },
		{ "agent-limits-mem", offsetof(struct inject_settings, limits_mem) },
		{ "agent-requests-ephemeral", offsetof(struct inject_settings, requests_ephemeral) },
		{ "agent-limits-ephemeral", offsetof(struct inject_settings, limits_ephemeral) },
	};
	for (size_t i = 0; i < ELEMENTSOF(quantities); i++) {
		int r = read_quantity(ctx, set, quantities[i].key,
				      (struct inject_quantity *)((char *)s + quantities[i].offset));
		if (r < 0)
			return r;
	}
	return 0;
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
	bool share = false;
	s->share_process_namespace = -1;
	if (r == 0 && find(set, "agent-share-process-namespace") &&
	    (r = parse_bool(ctx, set, "agent-share-process-namespace", false, &share)) == 0)
		s->share_process_namespace = share;
	if (r == 0)
		r = read_resources(ctx, set, s);
	if (r == 0)
		r = read_id(ctx, set, "agent-run-as-user", 100, &s->run_as_user);
	if (r == 0)
		r = read_id(ctx, set, "agent-run-as-group", 1000, &s->run_as_group);
	if (r == 0)
		r = read_logging(ctx, set, s);
	if (r == 0)
		r = check_accepted(ctx, set);
	if (r < 0)
		return r;
	const char *path = get(set, "secret-volume-path");
	if (path && !*path)
		path = NULL;
	if (path && path[0] != '/')
		return fail_at(ctx, find(set, "secret-volume-path"), "'%s' must be an absolute path", path);
	s->secret_volume_path = strdup(path ? path : "/vault/secrets");
	if (!s->secret_volume_path || take_names(set, "agent-inject-containers", &s->containers) < 0 ||
	    take_string(set, "agent-image", &s->image) < 0 || take_string(set, "tls-secret", &s->tls_secret) < 0 ||
	    take_string(set, "agent-service-account-token-volume-name", &s->token_volume_name) < 0 ||
	    take_string(set, "agent-copy-volume-mounts", &s->copy_volume_mounts) < 0 ||
	    take_string(set, "agent-extra-secret", &s->extra_secret) < 0 ||
	    take_string(set, "proxy-address", &s->proxy_address) < 0 ||
	    take_present_string(set, LATCH_PREFIX "token-audience", &s->token_audience) < 0)
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
			warn_orphans(ctx, &set);
		if (r == 0)
			r = read_settings(ctx, &set, &s);
		if (r == 0)
			r = build_config(ctx, &set, &s);
		/* As the container carries it, and as latch-init's parser checks it. */
		if (r == 0 && !(s.config_text = json_dumps(s.config, JSON_COMPACT | JSON_SORT_KEYS)))
			r = latch_error_set(ctx->err, LATCH_ENOMEM, "out of memory");
		if (r == 0)
			r = validate_config(ctx, &set, s.config_text);
	}
	ann_set_done(&set);
	if (r < 0) {
		inject_settings_done(&s);
		return r;
	}
	*ret = s;
	return 0;
}

static void free_strv(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

void inject_settings_done(struct inject_settings *s)
{
	free(s->containers);
	free(s->image);
	struct inject_quantity *quantities[] = { &s->requests_cpu, &s->requests_mem, &s->limits_cpu, &s->limits_mem,
						 &s->requests_ephemeral, &s->limits_ephemeral };
	for (size_t i = 0; i < ELEMENTSOF(quantities); i++)
		free(quantities[i]->value);
	free(s->secret_volume_path);
	free_strv(s->extra_mount_paths);
	free(s->copy_volume_mounts);
	free(s->extra_secret);
	free(s->proxy_address);
	free(s->log_format);
	free(s->log_level);
	free_strv(s->exec.env_files);
	free(s->exec.containers);
	free(s->tls_secret);
	free(s->token_volume_name);
	free(s->token_audience);
	json_decref(s->config);
	free(s->config_text);
	*s = (struct inject_settings){ 0 };
}

void latch_inject_memo_done(struct latch_inject_memo *memo)
{
	free(memo->valid_config);
	memo->valid_config = NULL;
}
