/* The SyncConfig file: YAML, every unknown key and bad value an error naming file:line:column
 * and the key. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latch/file.h"
#include "latch/yaml.h"
#include "sync.h"

#define CONFIG_MAX (1u << 20)

struct ctx {
	const char *file;
	struct latch_error *err;
};

static bool climbs_out(const char *path)
{
	for (const char *p = path; *p;) {
		const char *end = strchrnul(p, '/');
		if (end - p == 2 && p[0] == '.' && p[1] == '.')
			return true;
		p = *end ? end + 1 : end;
	}
	return false;
}

bool sync_repo_path_normalize(char *path)
{
	if (climbs_out(path))
		return false;
	char *out = path;
	for (const char *p = path; *p;) {
		while (*p == '/')
			p++;
		const char *end = strchrnul(p, '/');
		size_t n = (size_t)(end - p);
		if (n && !(n == 1 && p[0] == '.')) {
			if (out != path)
				*out++ = '/';
			memmove(out, p, n);
			out += n;
		}
		p = end;
	}
	*out = '\0';
	return true;
}

static int bad(const struct ctx *c, const struct latch_yaml_node *at, const char *key, const char *fmt, ...) _printf_(4, 5);
static int bad(const struct ctx *c, const struct latch_yaml_node *at, const char *key, const char *fmt, ...)
{
	struct latch_buf msg = LATCH_BUF_INIT(4096);
	latch_buf_printf(&msg, "%s:%zu:%zu: %s: ", c->file, at ? at->line : 0, at ? at->column : 0, key);
	va_list ap;
	va_start(ap, fmt);
	int r = latch_error_setv_prefixed(c->err, LATCH_EINVAL, latch_buf_str(&msg), fmt, ap);
	va_end(ap);
	latch_buf_done(&msg);
	return r;
}

static int check_keys(const struct ctx *c, const struct latch_yaml_node *map, const char *where, const char *const *allowed)
{
	if (!map || map->kind != LATCH_YAML_MAPPING)
		return bad(c, map, where, "must be a mapping");
	for (size_t i = 0; i < map->n_pairs; i++) {
		const struct latch_yaml_node *k = map->pairs[i].key;
		bool known = false;
		for (const char *const *a = allowed; *a && !known; a++)
			known = latch_yaml_is_scalar(k, *a);
		if (!known) {
			struct latch_buf key = LATCH_BUF_INIT(1024);
			latch_buf_printf(&key, "%s.%s", where, k && k->kind == LATCH_YAML_SCALAR ? k->value : "?");
			int r = bad(c, k, latch_buf_str(&key), "unknown key");
			latch_buf_done(&key);
			return r;
		}
	}
	return 0;
}

static int get_str(const struct ctx *c, const struct latch_yaml_node *map, const char *key, const char *where, bool required,
		   char **ret)
{
	const struct latch_yaml_node *v = latch_yaml_map_get(map, key);
	if (!v || (v->kind == LATCH_YAML_SCALAR && v->len == 0)) {
		if (required)
			return bad(c, map, where, "'%s' is required", key);
		return 0;
	}
	if (v->kind != LATCH_YAML_SCALAR)
		return bad(c, v, where, "'%s' must be a string", key);
	*ret = strdup(v->value);
	return *ret ? 0 : latch_error_set(c->err, LATCH_ENOMEM, "out of memory");
}

/* "" is a value here: the API server's own audience instead of latch's default. */
static int get_token_audience(const struct ctx *c, const struct latch_yaml_node *inject, char **ret)
{
	if (latch_yaml_is_scalar(latch_yaml_map_get(inject, "tokenAudience"), "")) {
		*ret = strdup("");
		return *ret ? 0 : latch_error_set(c->err, LATCH_ENOMEM, "out of memory");
	}
	return get_str(c, inject, "tokenAudience", "inject", false, ret);
}

/* Config and source names go into object names (inventories, Leases) and label values: DNS
 * labels, so "a" + "b-c" and "a-b" + "c" stay apart. */
static int check_dns_label(const struct ctx *c, const struct latch_yaml_node *map, const char *where,
			   const char *name)
{
	size_t n = name ? strlen(name) : 0;
	bool ok = n > 0 && n <= 63 && name[0] != '-' && name[n - 1] != '-';
	for (size_t i = 0; ok && i < n; i++)
		ok = (name[i] >= 'a' && name[i] <= 'z') || (name[i] >= '0' && name[i] <= '9') || name[i] == '-';
	return ok ? 0 : bad(c, latch_yaml_map_get(map, "name"), where, "name '%s' is not a DNS label (lowercase "
								     "letters, digits and '-', at most 63)", name ? name : "");
}

static int get_bool(const struct ctx *c, const struct latch_yaml_node *map, const char *key, const char *where, bool dflt,
		    bool *ret)
{
	const struct latch_yaml_node *v = latch_yaml_map_get(map, key);
	*ret = dflt;
	if (!v)
		return 0;
	if (latch_yaml_is_scalar(v, "true") || latch_yaml_is_scalar(v, "false")) {
		*ret = latch_yaml_is_scalar(v, "true");
		return 0;
	}
	return bad(c, v, where, "'%s' must be true or false", key);
}

/* "30s", "5m", "1h" */
static int get_duration(const struct ctx *c, const struct latch_yaml_node *map, const char *key, const char *where,
			long dflt, long *ret)
{
	const struct latch_yaml_node *v = latch_yaml_map_get(map, key);
	*ret = dflt;
	if (!v)
		return 0;
	char *end = NULL;
	long n = v->kind == LATCH_YAML_SCALAR ? strtol(v->value, &end, 10) : -1;
	long unit = end && strcmp(end, "s") == 0 ? 1 : end && strcmp(end, "m") == 0 ? 60 : end && strcmp(end, "h") == 0 ? 3600 : 0;
	if (n <= 0 || unit == 0)
		return bad(c, v, where, "'%s' must be a duration such as 30s, 5m or 1h", key);
	*ret = n * unit;
	return 0;
}

static int parse_verify_mode(const struct ctx *c, const struct latch_yaml_node *verify, struct sync_source *s)
{
	const struct latch_yaml_node *mode = latch_yaml_map_get(verify, "mode");
	s->verify_mode = !mode || latch_yaml_is_scalar(mode, "HEAD") ? SYNC_VERIFY_HEAD
			 : latch_yaml_is_scalar(mode, "Tag")          ? SYNC_VERIFY_TAG
			 : latch_yaml_is_scalar(mode, "TagAndHEAD")   ? SYNC_VERIFY_TAG | SYNC_VERIFY_HEAD
								      : 0;
	if (!s->verify_mode)
		return bad(c, mode, "verify", "mode must be HEAD, Tag or TagAndHEAD");
	if ((s->verify_mode & SYNC_VERIFY_TAG) && !s->tag)
		return bad(c, mode, "verify", "mode %s needs ref: {tag: ...}", mode->value);
	return 0;
}

/* verify: OpenPGP keys, SSH allowed signers, or both; a signature is checked against the
 * kind it is. */
static int parse_verify(const struct ctx *c, const struct latch_yaml_node *verify, struct sync_source *s)
{
	static const char *const verify_keys[] = { "keyringFile", "allowedSignersFile", "mode", "everyCommit",
						   NULL };
	int r = check_keys(c, verify, "verify", verify_keys);
	if (r == 0)
		r = get_str(c, verify, "keyringFile", "verify", false, &s->verify_keyring_file);
	if (r == 0)
		r = get_str(c, verify, "allowedSignersFile", "verify", false, &s->verify_allowed_signers_file);
	if (r == 0 && !s->verify_keyring_file && !s->verify_allowed_signers_file)
		r = bad(c, verify, "verify", "name keyringFile (OpenPGP), allowedSignersFile (SSH), or both");
	if (r == 0)
		r = parse_verify_mode(c, verify, s);
	if (r == 0)
		r = get_bool(c, verify, "everyCommit", "verify", false, &s->verify_every_commit);
	return r;
}

static int bad_path(const struct ctx *c, const struct latch_yaml_node *at, const char *where,
		    const char *path)
{
	char key[96];
	snprintf(key, sizeof(key), "%s.path", where);
	return bad(c, at, key, "'%s' climbs out of the repository with '..'", path);
}

static int parse_source(const struct ctx *c, const struct latch_yaml_node *n, size_t i, struct sync_source *s)
{
	static const char *const keys[] = { "name", "url", "ref", "path", "render", "interval", "timeout", "prune", "allowEmpty",
					    "targetNamespace", "inject", "healthCheck", "kustomizePath", "credentials", "caFile", "verify",
					    "webhook", NULL };
	char where[64];
	snprintf(where, sizeof(where), "spec.sources[%zu]", i);
	int r = check_keys(c, n, where, keys);
	if (r == 0)
		r = get_str(c, n, "name", where, true, &s->name);
	if (r == 0)
		r = check_dns_label(c, n, where, s->name);
	if (r == 0)
		r = get_str(c, n, "url", where, true, &s->url);
	if (r == 0)
		r = get_str(c, n, "path", where, false, &s->path);
	if (r == 0 && s->path && !sync_repo_path_normalize(s->path))
		r = bad_path(c, latch_yaml_map_get(n, "path"), where, s->path);
	if (r == 0)
		r = get_str(c, n, "targetNamespace", where, false, &s->target_namespace);
	if (r == 0)
		r = get_bool(c, n, "prune", where, true, &s->prune);
	if (r == 0)
		r = get_bool(c, n, "allowEmpty", where, false, &s->allow_empty);
	if (r == 0)
		r = get_duration(c, n, "interval", where, 60, &s->interval_s);
	if (r == 0)
		r = get_duration(c, n, "timeout", where, 300, &s->timeout_s);
	if (r == 0)
		r = get_bool(c, n, "healthCheck", where, true, &s->health_check);
	const struct latch_yaml_node *render = latch_yaml_map_get(n, "render");
	if (r == 0 && render && !latch_yaml_is_scalar(render, "plain") && !latch_yaml_is_scalar(render, "kustomize"))
		r = bad(c, render, where, "render '%s' is not plain or kustomize", render->kind == LATCH_YAML_SCALAR ? render->value : "?");
	s->kustomize = latch_yaml_is_scalar(render, "kustomize");
	if (r == 0)
		r = get_str(c, n, "kustomizePath", where, false, &s->kustomize_path);
	if (r == 0 && !s->kustomize_path && !(s->kustomize_path = strdup("kustomize")))
		r = latch_error_set(c->err, LATCH_ENOMEM, "out of memory");
	const struct latch_yaml_node *ref = latch_yaml_map_get(n, "ref");
	if (r == 0 && ref) {
		static const char *const ref_keys[] = { "branch", "tag", "commit", NULL };
		r = check_keys(c, ref, "ref", ref_keys);
		if (r == 0)
			r = get_str(c, ref, "branch", "ref", false, &s->branch);
		if (r == 0)
			r = get_str(c, ref, "tag", "ref", false, &s->tag);
		if (r == 0)
			r = get_str(c, ref, "commit", "ref", false, &s->commit);
		if (r == 0 && !!s->branch + !!s->tag + !!s->commit != 1)
			r = bad(c, ref, "ref", "name exactly one of branch, tag or commit");
	}
	if (r == 0)
		r = get_str(c, n, "caFile", where, false, &s->ca_file);
	const struct latch_yaml_node *verify = latch_yaml_map_get(n, "verify");
	if (r == 0 && verify)
		r = parse_verify(c, verify, s);
	const struct latch_yaml_node *webhook = latch_yaml_map_get(n, "webhook");
	if (r == 0 && webhook) {
		static const char *const webhook_keys[] = { "secretFile", NULL };
		r = check_keys(c, webhook, "webhook", webhook_keys);
		if (r == 0)
			r = get_str(c, webhook, "secretFile", "webhook", true, &s->webhook_secret_file);
	}
	const struct latch_yaml_node *cred = latch_yaml_map_get(n, "credentials");
	if (r == 0 && cred) {
		static const char *const cred_keys[] = { "usernameFile", "passwordFile", "sshKeyFile", "knownHostsFile", NULL };
		r = check_keys(c, cred, "credentials", cred_keys);
		if (r == 0)
			r = get_str(c, cred, "usernameFile", "credentials", false, &s->username_file);
		if (r == 0)
			r = get_str(c, cred, "passwordFile", "credentials", false, &s->password_file);
		if (r == 0)
			r = get_str(c, cred, "sshKeyFile", "credentials", false, &s->ssh_key_file);
		if (r == 0)
			r = get_str(c, cred, "knownHostsFile", "credentials", false, &s->known_hosts_file);
		if (r == 0 && !!s->username_file != !!s->password_file)
			r = bad(c, cred, "credentials", "usernameFile and passwordFile go together");
		if (r == 0 && s->ssh_key_file && !s->known_hosts_file)
			r = bad(c, cred, "credentials", "sshKeyFile needs a knownHostsFile: ssh host keys are always checked");
	}
	const struct latch_yaml_node *inject = latch_yaml_map_get(n, "inject");
	if (r == 0 && inject) {
		static const char *const inject_keys[] = { "image", "vaultAddress", "pinVaultAddress", "allowHttpVault",
							   "tokenAudience", NULL };
		r = check_keys(c, inject, "inject", inject_keys);
		if (r == 0)
			r = get_str(c, inject, "image", "inject", false, &s->inject_image);
		if (r == 0)
			r = get_str(c, inject, "vaultAddress", "inject", false, &s->inject_vault_address);
		if (r == 0)
			r = get_bool(c, inject, "pinVaultAddress", "inject", false, &s->inject_pin_vault_address);
		if (r == 0)
			r = get_bool(c, inject, "allowHttpVault", "inject", false, &s->inject_allow_http_vault);
		if (r == 0)
			r = get_token_audience(c, inject, &s->inject_token_audience);
	}
	return r;
}

static int parse_root(const struct ctx *c, const struct latch_yaml_node *root, struct sync_config *cfg)
{
	static const char *const keys[] = { "apiVersion", "kind", "metadata", "spec", NULL };
	static const char *const spec_keys[] = { "namespace", "cacheDir", "sources", NULL };
	int r = check_keys(c, root, "(top level)", keys);
	if (r == 0 && !latch_yaml_is_scalar(latch_yaml_map_get(root, "kind"), "SyncConfig"))
		r = bad(c, latch_yaml_map_get(root, "kind"), "kind", "must be SyncConfig");
	if (r == 0 && !latch_yaml_is_scalar(latch_yaml_map_get(root, "apiVersion"), "latch.dev/v1alpha1"))
		r = bad(c, latch_yaml_map_get(root, "apiVersion"), "apiVersion", "must be latch.dev/v1alpha1");
	if (r == 0)
		r = get_str(c, latch_yaml_map_get(root, "metadata"), "name", "metadata", true, &cfg->name);
	if (r == 0)
		r = check_dns_label(c, latch_yaml_map_get(root, "metadata"), "metadata", cfg->name);
	const struct latch_yaml_node *spec = latch_yaml_map_get(root, "spec");
	if (r == 0)
		r = check_keys(c, spec, "spec", spec_keys);
	if (r == 0)
		r = get_str(c, spec, "namespace", "spec", true, &cfg->namespace);
	if (r == 0)
		r = get_str(c, spec, "cacheDir", "spec", false, &cfg->cache_dir);
	const struct latch_yaml_node *sources = latch_yaml_map_get(spec, "sources");
	if (r == 0 && (!sources || sources->kind != LATCH_YAML_SEQUENCE || sources->n_items == 0))
		r = bad(c, sources ? sources : spec, "spec.sources", "must list at least one source");
	/* NOLINTNEXTLINE(clang-analyzer-*): bad() failed unless sources has items */
	if (r == 0 && !(cfg->sources = calloc(sources->n_items, sizeof(*cfg->sources))))
		r = latch_error_set(c->err, LATCH_ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < sources->n_items; i++) {
		cfg->n_sources = i + 1;
		r = parse_source(c, sources->items[i], i, &cfg->sources[i]);
	}
	return r;
}

int sync_config_load(const char *path, struct sync_config *ret, struct latch_error *err)
{
	struct latch_buf text = LATCH_BUF_INIT(CONFIG_MAX);
	int r = latch_file_read(path, CONFIG_MAX, &text, err);
	if (r == 0)
		r = sync_config_parse(latch_buf_view(&text), path, ret, err);
	latch_buf_done(&text);
	return r;
}

int sync_config_parse(struct latch_view text, const char *path, struct sync_config *ret,
		      struct latch_error *err)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_yaml_limits lim = { CONFIG_MAX, 32, 1, 100000 };
	struct sync_config cfg = { 0 };
	struct ctx c = { path, err };
	int r = latch_yaml_parse(text, path, &lim, &s, err);
	if (r == 0 && s.n_docs != 1)
		r = latch_error_set(err, LATCH_EINVAL, "%s: holds %zu documents, a SyncConfig is one", path, s.n_docs);
	if (r == 0)
		r = parse_root(&c, s.docs[0].root, &cfg);
	if (r == 0 && !cfg.cache_dir) {
		const char *home = getenv("XDG_CACHE_HOME");
		struct latch_buf b = LATCH_BUF_INIT(4096);
		latch_buf_printf(&b, home ? "%s/latch-sync" : "%s/.cache/latch-sync", home ? home : getenv("HOME") ? getenv("HOME") : "/tmp");
		cfg.cache_dir = latch_buf_take(&b);
	}
	latch_yaml_stream_done(&s);
	if (r < 0) {
		sync_config_done(&cfg);
		return r;
	}
	*ret = cfg;
	return 0;
}

void sync_config_done(struct sync_config *c)
{
	for (size_t i = 0; i < c->n_sources; i++) {
		struct sync_source *s = &c->sources[i];
		free(s->name);
		free(s->url);
		free(s->branch);
		free(s->tag);
		free(s->commit);
		free(s->path);
		free(s->target_namespace);
		free(s->inject_image);
		free(s->inject_vault_address);
		free(s->inject_token_audience);
		free(s->kustomize_path);
		free(s->username_file);
		free(s->password_file);
		free(s->ssh_key_file);
		free(s->known_hosts_file);
		free(s->ca_file);
		free(s->verify_keyring_file);
		free(s->verify_allowed_signers_file);
		free(s->webhook_secret_file);
	}
	free(c->sources);
	free(c->name);
	free(c->namespace);
	free(c->cache_dir);
	*c = (struct sync_config){ 0 };
}
