#include "latch/config.h"

#include <signal.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include "latch/file.h"

#define CONFIG_MAX_BYTES (1u << 20)
#define DEFAULT_MODE 0640
#define TEMPLATE_FILE_MAX (1u << 20) /* as an inline template */

static const char *const format_names[] = {
	[LATCH_FORMAT_MAP] = "map",       [LATCH_FORMAT_JSON] = "json", [LATCH_FORMAT_ENV] = "env",
	[LATCH_FORMAT_DOTENV] = "dotenv", [LATCH_FORMAT_RAW] = "raw",   [LATCH_FORMAT_PEM] = "pem",
	[LATCH_FORMAT_TEMPLATE] = "template",
};

const char *latch_format_name(enum latch_format f)
{
	return format_names[f];
}

int latch_format_parse(const char *name, enum latch_format *ret)
{
	for (size_t i = 0; i < ELEMENTSOF(format_names); i++)
		if (strcmp(name, format_names[i]) == 0) {
			*ret = (enum latch_format)i;
			return 0;
		}
	return LATCH_EINVAL;
}

/* The signals an app may ask for on a change: those daemons reload or reopen on. */
static const struct {
	const char *name;
	int number;
} signal_names[] = {
	{ "HUP", SIGHUP }, { "USR1", SIGUSR1 }, { "USR2", SIGUSR2 }, { "TERM", SIGTERM },
	{ "INT", SIGINT }, { "QUIT", SIGQUIT }, { "WINCH", SIGWINCH },
};

int latch_signal_parse(const char *name, int *ret)
{
	if (strncasecmp(name, "SIG", 3) == 0)
		name += 3;
	for (size_t i = 0; i < ELEMENTSOF(signal_names); i++)
		if (strcasecmp(name, signal_names[i].name) == 0) {
			*ret = signal_names[i].number;
			return 0;
		}
	return LATCH_EINVAL;
}

const char *latch_signal_name(int number)
{
	for (size_t i = 0; i < ELEMENTSOF(signal_names); i++)
		if (signal_names[i].number == number)
			return signal_names[i].name;
	return "?";
}

/* Where in the config a value sits, for messages: "secrets[2].mode". */
struct where {
	const char *source;
	struct latch_error *err;
};

static int bad(const struct where *w, const char *field, const char *fmt, ...) _printf_(3, 4);
static int bad(const struct where *w, const char *field, const char *fmt, ...)
{
	struct latch_buf msg = LATCH_BUF_INIT(4096);
	latch_buf_printf(&msg, "%s: %s: ", w->source, field);
	va_list ap;
	va_start(ap, fmt);
	int r = latch_error_setv_prefixed(w->err, LATCH_EINVAL, latch_buf_str(&msg), fmt, ap);
	va_end(ap);
	latch_buf_done(&msg);
	return r;
}

/* Every key of obj must be one of allowed. */
static int check_keys(const struct where *w, const char *at, const json_t *obj, const char *const *allowed)
{
	const char *key;
	json_t *v;
	json_object_foreach((json_t *)obj, key, v) {
		bool known = false;
		for (const char *const *a = allowed; *a && !known; a++)
			known = strcmp(*a, key) == 0;
		if (!known) {
			struct latch_buf field = LATCH_BUF_INIT(1024);
			latch_buf_printf(&field, "%s%s%s", at, *at ? "." : "", key);
			int r = bad(w, latch_buf_str(&field), "%s", "unknown field");
			latch_buf_done(&field);
			return r;
		}
	}
	return 0;
}

static int get_string(const struct where *w, const json_t *obj, const char *key, const char *field, bool required,
		      char **ret)
{
	json_t *v = json_object_get(obj, key);
	if (!v || json_is_null(v)) {
		if (required)
			return bad(w, field, "%s", "is required");
		return 0;
	}
	if (!json_is_string(v))
		return bad(w, field, "%s", "must be a string");
	if (required && json_string_length(v) == 0)
		return bad(w, field, "%s", "must not be empty");
	if (json_string_length(v) == 0)
		return 0;
	*ret = strdup(json_string_value(v));
	return *ret ? 0 : latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
}

static int get_bool(const struct where *w, const json_t *obj, const char *key, const char *field, bool *ret)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_boolean(v))
		return bad(w, field, "%s", "must be true or false");
	*ret = json_is_true(v);
	return 0;
}

static int get_uint(const struct where *w, const json_t *obj, const char *key, const char *field, long long max,
		    bool *ret_present, long long *ret)
{
	json_t *v = json_object_get(obj, key);
	if (!v)
		return 0;
	if (!json_is_integer(v) || json_integer_value(v) < 0 || json_integer_value(v) > max)
		return bad(w, field, "%s", "must be a whole number in range");
	*ret = json_integer_value(v);
	if (ret_present)
		*ret_present = true;
	return 0;
}

/* A mode as "0640"/"640" (octal text, as in agent-inject-perms) or a number. */
static int get_mode(const struct where *w, const json_t *obj, const char *field, mode_t *ret)
{
	json_t *v = json_object_get(obj, "mode");
	*ret = DEFAULT_MODE;
	if (!v)
		return 0;
	long long m = -1;
	if (json_is_string(v)) {
		const char *s = json_string_value(v);
		char *end = NULL;
		m = *s && strlen(s) <= 4 ? strtoll(s, &end, 8) : -1;
		if (!end || *end)
			m = -1;
	} else if (json_is_integer(v)) {
		m = json_integer_value(v);
	}
	if (m < 0 || m > 0777)
		return bad(w, field, "%s", "must be an octal file mode such as \"0640\"");
	if (m & (S_IWGRP | S_IWOTH))
		return bad(w, field, "%s", "must not be group- or world-writable");
	*ret = (mode_t)m;
	return 0;
}

/* A file name inside output_dir: relative, no "..", no empty parts. */
static int check_relative(const struct where *w, const char *field, const char *path)
{
	if (path[0] == '/')
		return bad(w, field, "'%s' must be relative to output_dir", path);
	const char *p = path;
	while (*p) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);
		if (n == 0 || (n == 2 && p[0] == '.' && p[1] == '.') || (n == 1 && p[0] == '.'))
			return bad(w, field, "'%s' must stay inside output_dir", path);
		p += n + (slash ? 1 : 0);
	}
	return 0;
}

static int parse_vault(const struct where *w, const json_t *v, struct latch_config *c)
{
	static const char *const keys[] = { "address", "namespace", "ca_file", "ca_pem", "server_name",
					    "client_cert_file", "client_key_file", "tls_skip_verify", NULL };
	if (!json_is_object(v))
		return bad(w, "vault", "%s", "must be an object");
	int r = check_keys(w, "vault", v, keys);
	if (r == 0)
		r = get_string(w, v, "address", "vault.address", true, &c->vault.address);
	/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): get_string() set a required field */
	if (r == 0 && strncmp(c->vault.address, "https://", 8) != 0 && strncmp(c->vault.address, "http://", 7) != 0)
		r = bad(w, "vault.address", "'%s' must start with https:// or http://", c->vault.address);
	if (r == 0)
		r = get_string(w, v, "namespace", "vault.namespace", false, &c->vault.namespace);
	if (r == 0)
		r = get_string(w, v, "ca_file", "vault.ca_file", false, &c->vault.ca_file);
	if (r == 0)
		r = get_string(w, v, "ca_pem", "vault.ca_pem", false, &c->vault.ca_pem);
	if (r == 0)
		r = get_string(w, v, "server_name", "vault.server_name", false, &c->vault.server_name);
	if (r == 0)
		r = get_string(w, v, "client_cert_file", "vault.client_cert_file", false, &c->vault.client_cert_file);
	if (r == 0)
		r = get_string(w, v, "client_key_file", "vault.client_key_file", false, &c->vault.client_key_file);
	if (r == 0)
		r = get_bool(w, v, "tls_skip_verify", "vault.tls_skip_verify", &c->vault.tls_skip_verify);
	if (r == 0 && !!c->vault.client_cert_file != !!c->vault.client_key_file)
		r = bad(w, "vault.client_cert_file", "%s", "and vault.client_key_file must be given together");
	return r;
}

static int parse_auth(const struct where *w, const json_t *v, struct latch_config *c)
{
	static const char *const keys[] = { "method", "path", "role", "token_file", NULL };
	if (!json_is_object(v))
		return bad(w, "auth", "%s", "must be an object");
	int r = check_keys(w, "auth", v, keys);
	_cleanup_free_ char *method = NULL;
	if (r == 0)
		r = get_string(w, v, "method", "auth.method", false, &method);
	if (r < 0)
		return r;
	if (!method || strcmp(method, "kubernetes") == 0)
		c->auth.method = LATCH_AUTH_KUBERNETES;
	else if (strcmp(method, "jwt") == 0)
		c->auth.method = LATCH_AUTH_JWT;
	else if (strcmp(method, "token") == 0)
		c->auth.method = LATCH_AUTH_TOKEN;
	else
		return bad(w, "auth.method", "'%s' is not kubernetes, jwt or token", method);
	r = get_string(w, v, "path", "auth.path", false, &c->auth.path);
	if (r == 0)
		r = get_string(w, v, "role", "auth.role", c->auth.method != LATCH_AUTH_TOKEN, &c->auth.role);
	if (r == 0)
		r = get_string(w, v, "token_file", "auth.token_file", false, &c->auth.token_file);
	if (r < 0)
		return r;
	const char *default_path = c->auth.method == LATCH_AUTH_JWT ? "auth/jwt" : "auth/kubernetes";
	if (!c->auth.path && !(c->auth.path = strdup(default_path)))
		return latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
	/* A bare mount name ("kubernetes") means auth/<name>, as Vault Agent's mount_path does. */
	if (strncmp(c->auth.path, "auth/", 5) != 0) {
		struct latch_buf b = LATCH_BUF_INIT(4096);
		if (latch_buf_printf(&b, "auth/%s", c->auth.path) < 0) {
			latch_buf_done(&b);
			return bad(w, "auth.path", "%s", "is longer than 4 KiB");
		}
		free(c->auth.path);
		c->auth.path = latch_buf_take(&b);
	}
	if (!c->auth.token_file &&
	    !(c->auth.token_file = strdup(c->auth.method == LATCH_AUTH_TOKEN ? "/home/latch/.vault-token"
									     : "/var/run/secrets/latch/token")))
		return latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
	return 0;
}

static int parse_format(const struct where *w, const json_t *s, const char *field, struct latch_secret_config *sc)
{
	json_t *f = json_object_get(s, "format");
	bool templated = json_object_get(s, "template") || json_object_get(s, "template_file");
	sc->format = templated ? LATCH_FORMAT_TEMPLATE : LATCH_FORMAT_MAP;
	if (!f)
		return 0;
	if (!json_is_string(f) || latch_format_parse(json_string_value(f), &sc->format) < 0)
		return bad(w, field, "'%s' is not a format (map, json, env, dotenv, raw, pem, template)",
			   json_is_string(f) ? json_string_value(f) : "?");
	return 0;
}

static int parse_template(const struct where *w, const json_t *s, const char *at, struct latch_secret_config *sc)
{
	_cleanup_free_ char *text = NULL;
	struct latch_buf field = LATCH_BUF_INIT(1024), file_field = LATCH_BUF_INIT(1024);
	struct latch_buf left_field = LATCH_BUF_INIT(1024), right_field = LATCH_BUF_INIT(1024);
	latch_buf_printf(&field, "%s.template", at);
	latch_buf_printf(&file_field, "%s.template_file", at);
	latch_buf_printf(&left_field, "%s.left_delim", at);
	latch_buf_printf(&right_field, "%s.right_delim", at);
	int r = get_string(w, s, "template_file", latch_buf_str(&file_field), false, &sc->template_file);
	if (r == 0 && sc->template_file && json_object_get(s, "template"))
		r = bad(w, latch_buf_str(&file_field), "%s", "cannot be set together with template");
	if (r == 0 && sc->template_file && sc->template_file[0] != '/')
		r = bad(w, latch_buf_str(&file_field), "'%s' must be an absolute path", sc->template_file);
	if (r == 0 && !sc->template_file)
		r = get_string(w, s, "template", latch_buf_str(&field), true, &text);
	if (r == 0)
		r = get_string(w, s, "left_delim", latch_buf_str(&left_field), false, &sc->left_delim);
	if (r == 0)
		r = get_string(w, s, "right_delim", latch_buf_str(&right_field), false, &sc->right_delim);
	latch_buf_done(&file_field);
	latch_buf_done(&left_field);
	latch_buf_done(&right_field);
	/* A template file is read in the pod, by latch_config_load_template_files(). */
	if (r == 0 && !sc->template_file) {
		struct latch_template_options o = { .left_delim = sc->left_delim, .right_delim = sc->right_delim };
		r = latch_template_parse(text, sc->name, &o, &sc->template, w->err);
		if (r < 0)
			latch_error_prefix(w->err, "%s: %s", w->source, latch_buf_str(&field));
	}
	latch_buf_done(&field);
	return r;
}

/* "reload": {"signal": "HUP", "process": "nginx"}: after the secret's files change, the
 * sidecar signals that process of the pod. */
static int parse_reload(const struct where *w, const json_t *v, const char *field, struct latch_reload *ret)
{
	static const char *const keys[] = { "signal", "process", NULL };
	if (!v)
		return 0;
	if (!json_is_object(v))
		return bad(w, field, "%s", "must be an object");
	int r = check_keys(w, field, v, keys);
	_cleanup_free_ char *signal_name = NULL;
	if (r == 0)
		r = get_string(w, v, "signal", field, true, &signal_name);
	if (r == 0 && latch_signal_parse(signal_name, &ret->signal) < 0)
		r = bad(w, field, "signal '%s' is not one of HUP, USR1, USR2, TERM, INT, QUIT, WINCH", signal_name);
	if (r == 0)
		r = get_string(w, v, "process", field, true, &ret->process);
	if (r == 0 && (strchr(ret->process, '/') || strlen(ret->process) > LATCH_PROCESS_NAME_MAX))
		r = bad(w, field, "process '%s' must be a program name (no '/', at most %d characters), as ps shows it",
			ret->process, LATCH_PROCESS_NAME_MAX);
	return r;
}

static int secret_field(struct latch_buf *b, size_t i, const char *name)
{
	latch_buf_reset(b);
	return latch_buf_printf(b, "secrets[%zu].%s", i, name);
}

static int parse_secret(const struct where *w, const json_t *s, size_t i, struct latch_secret_config *sc)
{
	static const char *const keys[] = { "name", "path", "params", "file", "format", "key", "template",
					    "template_file", "left_delim", "right_delim", "error_on_missing_key",
					    "mode", "uid", "gid", "reload", NULL };
	struct latch_buf at = LATCH_BUF_INIT(256), f = LATCH_BUF_INIT(256);
	latch_buf_printf(&at, "secrets[%zu]", i);
	int r = json_is_object(s) ? check_keys(w, latch_buf_str(&at), s, keys)
				  : bad(w, latch_buf_str(&at), "%s", "must be an object");
	if (r == 0 && (r = secret_field(&f, i, "name")) == 0)
		r = get_string(w, s, "name", latch_buf_str(&f), true, &sc->name);
	if (r == 0 && (r = secret_field(&f, i, "format")) == 0)
		r = parse_format(w, s, latch_buf_str(&f), sc);
	if (r == 0 && (r = secret_field(&f, i, "path")) == 0)
		r = get_string(w, s, "path", latch_buf_str(&f), sc->format != LATCH_FORMAT_TEMPLATE, &sc->path);
	if (r == 0 && sc->format == LATCH_FORMAT_TEMPLATE)
		r = parse_template(w, s, latch_buf_str(&at), sc);
	if (r == 0 && sc->format != LATCH_FORMAT_TEMPLATE && (json_object_get(s, "template") ||
							       json_object_get(s, "template_file")))
		r = bad(w, latch_buf_str(&at), "%s", "has a template but its format is not template");
	if (r == 0 && (r = secret_field(&f, i, "params")) == 0) {
		json_t *p = json_object_get(s, "params");
		if (p && !json_is_object(p))
			r = bad(w, latch_buf_str(&f), "%s", "must be an object");
		sc->params = json_incref(p);
	}
	if (r == 0 && (r = secret_field(&f, i, "key")) == 0)
		r = get_string(w, s, "key", latch_buf_str(&f), sc->format == LATCH_FORMAT_RAW, &sc->key);
	if (r == 0 && (r = secret_field(&f, i, "file")) == 0)
		r = get_string(w, s, "file", latch_buf_str(&f), false, &sc->file);
	if (r == 0 && !sc->file && !(sc->file = strdup(sc->name)))
		r = latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = check_relative(w, latch_buf_str(&f), sc->file);
	if (r == 0 && (r = secret_field(&f, i, "error_on_missing_key")) == 0)
		r = get_bool(w, s, "error_on_missing_key", latch_buf_str(&f), &sc->error_on_missing_key);
	if (r == 0 && (r = secret_field(&f, i, "mode")) == 0)
		r = get_mode(w, s, latch_buf_str(&f), &sc->mode);
	long long id = 0;
	bool have_uid = false, have_gid = false;
	if (r == 0 && (r = secret_field(&f, i, "uid")) == 0 && (r = get_uint(w, s, "uid", latch_buf_str(&f), 0x7fffffff, &have_uid, &id)) == 0)
		sc->uid = (uid_t)id;
	if (r == 0 && (r = secret_field(&f, i, "gid")) == 0 && (r = get_uint(w, s, "gid", latch_buf_str(&f), 0x7fffffff, &have_gid, &id)) == 0)
		sc->gid = (gid_t)id;
	if (r == 0 && have_uid != have_gid)
		r = bad(w, latch_buf_str(&at), "%s", "needs both uid and gid, or neither");
	sc->set_owner = have_uid && have_gid;
	if (r == 0 && (r = secret_field(&f, i, "reload")) == 0)
		r = parse_reload(w, json_object_get(s, "reload"), latch_buf_str(&f), &sc->reload);
	latch_buf_done(&at);
	latch_buf_done(&f);
	return r;
}

static bool clashes_with_reserved(const struct latch_config *c, char *const *names, size_t n)
{
	for (size_t k = 0; k < n; k++)
		if ((c->token_file_name && strcmp(names[k], c->token_file_name) == 0) || strcmp(names[k], ".latch") == 0 ||
		    strncmp(names[k], ".latch/", 7) == 0)
			return true;
	return false;
}

/* Two secrets may not write the same file: the second would silently replace the first. Nor
 * may one write the token file or into .latch/. */
static int check_unique(const struct where *w, const struct latch_config *c)
{
	for (size_t i = 0; i < c->n_secrets; i++) {
		char *a[3] = { 0 };
		size_t na = 0;
		if (latch_secret_files(&c->secrets[i], a, &na) < 0)
			return latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
		if (clashes_with_reserved(c, a, na)) {
			int r = bad(w, "secrets", "'%s' would write over the token file or .latch/", c->secrets[i].name);
			for (size_t k = 0; k < na; k++)
				free(a[k]);
			return r;
		}
		for (size_t j = 0; j < i; j++) {
			if (strcmp(c->secrets[i].name, c->secrets[j].name) == 0) {
				for (size_t k = 0; k < na; k++)
					free(a[k]);
				return bad(w, "secrets", "two secrets are named '%s'", c->secrets[i].name);
			}
			char *b[3] = { 0 };
			size_t nb = 0;
			bool clash = false;
			if (latch_secret_files(&c->secrets[j], b, &nb) < 0) {
				for (size_t k = 0; k < na; k++)
					free(a[k]);
				return latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
			}
			for (size_t x = 0; x < na; x++)
				for (size_t y = 0; y < nb; y++)
					clash = clash || strcmp(a[x], b[y]) == 0;
			for (size_t y = 0; y < nb; y++)
				free(b[y]);
			if (clash) {
				for (size_t k = 0; k < na; k++)
					free(a[k]);
				return bad(w, "secrets", "two secrets write the file '%s'", c->secrets[i].file);
			}
		}
		for (size_t k = 0; k < na; k++)
			free(a[k]);
	}
	return 0;
}

static int parse_secrets(const struct where *w, const json_t *list, struct latch_config *c)
{
	if (!json_is_array(list))
		return bad(w, "secrets", "%s", "must be a list");
	c->secrets = calloc(json_array_size(list) ? json_array_size(list) : 1, sizeof(*c->secrets));
	if (!c->secrets)
		return latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
	for (size_t i = 0; i < json_array_size(list); i++) {
		c->n_secrets = i + 1;
		int r = parse_secret(w, json_array_get(list, i), i, &c->secrets[i]);
		if (r < 0)
			return r;
	}
	return check_unique(w, c);
}

static int parse_root(const struct where *w, const json_t *root, struct latch_config *c)
{
	static const char *const keys[] = { "version", "vault", "auth", "output_dir", "deadline_seconds",
					    "revoke_on_shutdown", "token_file_name", "state_dir", "secrets",
					    "copy_self_to", NULL };
	if (!json_is_object(root))
		return bad(w, "(top level)", "%s", "must be a JSON object");
	int r = check_keys(w, "", root, keys);
	if (r < 0)
		return r;
	json_t *version = json_object_get(root, "version");
	if (!json_is_integer(version) || json_integer_value(version) != LATCH_CONFIG_VERSION)
		return bad(w, "version", "%s", "must be 1 (this latch-init reads config version 1)");
	c->version = LATCH_CONFIG_VERSION;
	if (!json_object_get(root, "vault"))
		return bad(w, "vault", "%s", "is required");
	if ((r = parse_vault(w, json_object_get(root, "vault"), c)) < 0)
		return r;
	if (!json_object_get(root, "auth"))
		return bad(w, "auth", "%s", "is required");
	if ((r = parse_auth(w, json_object_get(root, "auth"), c)) < 0)
		return r;
	if ((r = get_string(w, root, "output_dir", "output_dir", false, &c->output_dir)) < 0)
		return r;
	if (!c->output_dir && !(c->output_dir = strdup("/vault/secrets")))
		return latch_error_set(w->err, LATCH_ENOMEM, "out of memory");
	long long deadline = 120;
	if ((r = get_uint(w, root, "deadline_seconds", "deadline_seconds", 86400, NULL, &deadline)) < 0)
		return r;
	if (deadline == 0)
		return bad(w, "deadline_seconds", "%s", "must be at least 1");
	c->deadline_seconds = (unsigned)deadline;
	if ((r = get_bool(w, root, "revoke_on_shutdown", "revoke_on_shutdown", &c->revoke_on_shutdown)) < 0)
		return r;
	if ((r = get_string(w, root, "token_file_name", "token_file_name", false, &c->token_file_name)) < 0)
		return r;
	if (c->token_file_name && (r = check_relative(w, "token_file_name", c->token_file_name)) < 0)
		return r;
	if ((r = get_string(w, root, "state_dir", "state_dir", false, &c->state_dir)) < 0)
		return r;
	if (c->state_dir && c->state_dir[0] != '/')
		return bad(w, "state_dir", "'%s' must be an absolute path", c->state_dir);
	/* It holds the Vault token: never where the app reads its files. */
	size_t out_len = strlen(c->output_dir);
	if (c->state_dir && strncmp(c->state_dir, c->output_dir, out_len) == 0 &&
	    (c->state_dir[out_len] == '\0' || c->state_dir[out_len] == '/'))
		return bad(w, "state_dir", "'%s' must not be inside output_dir", c->state_dir);
	if ((r = get_string(w, root, "copy_self_to", "copy_self_to", false, &c->copy_self_to)) < 0)
		return r;
	if (c->copy_self_to && c->copy_self_to[0] != '/')
		return bad(w, "copy_self_to", "'%s' must be an absolute path", c->copy_self_to);
	/* No secrets is a login only: the token file, or a check that the role works. */
	json_t *secrets = json_object_get(root, "secrets");
	return secrets ? parse_secrets(w, secrets, c) : 0;
}

int latch_config_parse(struct latch_view text, const char *source, struct latch_config *ret, struct latch_error *err)
{
	struct latch_json_limits lim = { CONFIG_MAX_BYTES, 32 };
	json_t *root = NULL;
	int r = latch_json_parse(text, source, &lim, &root, err);
	if (r < 0)
		return r;
	struct latch_config c = { 0 };
	struct where w = { source, err };
	r = parse_root(&w, root, &c);
	json_decref(root);
	if (r < 0) {
		latch_config_done(&c);
		return r;
	}
	*ret = c;
	return 0;
}

static void secret_done(struct latch_secret_config *s)
{
	free(s->name);
	free(s->path);
	json_decref(s->params);
	free(s->file);
	free(s->key);
	free(s->template_file);
	free(s->left_delim);
	free(s->right_delim);
	free(s->reload.process);
	latch_template_free(s->template);
}

void latch_config_done(struct latch_config *c)
{
	free(c->vault.address);
	free(c->vault.namespace);
	free(c->vault.ca_file);
	free(c->vault.ca_pem);
	free(c->vault.server_name);
	free(c->vault.client_cert_file);
	free(c->vault.client_key_file);
	free(c->auth.path);
	free(c->auth.role);
	free(c->auth.token_file);
	free(c->output_dir);
	free(c->token_file_name);
	free(c->state_dir);
	free(c->copy_self_to);
	for (size_t i = 0; i < c->n_secrets; i++)
		secret_done(&c->secrets[i]);
	free(c->secrets);
	*c = (struct latch_config){ 0 };
}

static char *with_suffix(const char *file, const char *suffix)
{
	struct latch_buf b = LATCH_BUF_INIT(8192);
	latch_buf_printf(&b, "%s%s", file, suffix);
	return latch_buf_take(&b);
}

int latch_secret_files(const struct latch_secret_config *s, char *names[3], size_t *ret_n)
{
	size_t n = s->format == LATCH_FORMAT_PEM ? 3 : 1;
	if (s->format != LATCH_FORMAT_PEM) {
		/* NOLINTNEXTLINE(clang-analyzer-core.NonNullParamChecker): the parser always sets file */
		names[0] = strdup(s->file);
	} else {
		names[0] = with_suffix(s->file, ".crt");
		names[1] = with_suffix(s->file, ".key");
		names[2] = with_suffix(s->file, "-ca.crt");
	}
	bool all = true;
	for (size_t i = 0; i < n; i++)
		all = all && names[i];
	if (!all) {
		for (size_t i = 0; i < n; i++) {
			free(names[i]);
			names[i] = NULL;
		}
		return LATCH_ENOMEM;
	}
	*ret_n = n;
	return 0;
}

int latch_config_load_template_files(struct latch_config *c, struct latch_error *err)
{
	for (size_t i = 0; i < c->n_secrets; i++) {
		struct latch_secret_config *sc = &c->secrets[i];
		if (!sc->template_file || sc->template)
			continue;
		struct latch_buf text = LATCH_BUF_INIT(TEMPLATE_FILE_MAX + 1);
		int r = latch_file_read(sc->template_file, TEMPLATE_FILE_MAX, &text, err);
		if (r == 0) {
			struct latch_template_options o = { .left_delim = sc->left_delim, .right_delim = sc->right_delim };
			r = latch_template_parse(latch_buf_str(&text), sc->name, &o, &sc->template, err);
			if (r < 0)
				latch_error_prefix(err, "%s (secret '%s', template_file)", sc->template_file, sc->name);
		}
		latch_buf_done(&text);
		if (r < 0)
			return r;
	}
	return 0;
}
