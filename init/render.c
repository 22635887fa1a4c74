/* The distinct Vault requests a config's secrets need, and turning their responses into file
 * contents, per output format. */
#include <stdlib.h>
#include <string.h>

#include "init.h"

void init_outputs_done(struct init_output *out, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		free(out[i].relpath);
		latch_buf_done(&out[i].content);
	}
}

static bool same_request(const struct init_request *r, const char *path, const json_t *params)
{
	if (strcmp(r->path, path) != 0)
		return false;
	return (!r->params && !params) || (r->params && params && json_equal((json_t *)r->params, (json_t *)params));
}

static int add_request(struct init_state *s, const char *path, const json_t *params)
{
	for (size_t i = 0; i < s->n_requests; i++)
		if (same_request(&s->requests[i], path, params))
			return 0;
	void *p = realloc(s->requests, (s->n_requests + 1) * sizeof(*s->requests));
	if (!p)
		return LATCH_ENOMEM;
	s->requests = p;
	s->requests[s->n_requests++] = (struct init_request){ .path = path, .params = params };
	return 0;
}

/* The distinct requests of all secrets: a path read by several secrets or templates is one
 * request, so they all see the same credentials. */
int init_collect_requests(struct init_state *s)
{
	for (size_t i = 0; i < s->config->n_secrets; i++) {
		const struct latch_secret_config *sc = &s->config->secrets[i];
		if (sc->format != LATCH_FORMAT_TEMPLATE) {
			if (add_request(s, sc->path, sc->params) < 0)
				return LATCH_ENOMEM;
			continue;
		}
		for (size_t k = 0; k < latch_template_n_secrets(sc->template); k++) {
			struct latch_template_secret ts = latch_template_secret(sc->template, k);
			if (add_request(s, ts.path, ts.params) < 0)
				return LATCH_ENOMEM;
		}
	}
	return 0;
}

int init_request_take(struct init_request *r, json_t *envelope)
{
	const char *lease = latch_json_get_str(envelope, "lease_id");
	char *lease_copy = strdup(lease ? lease : "");
	if (!lease_copy) {
		json_decref(envelope);
		return LATCH_ENOMEM;
	}
	json_decref(r->envelope);
	free(r->lease_id);
	r->envelope = envelope;
	r->lease_id = lease_copy;
	r->lease_duration = (long)json_integer_value(json_object_get(envelope, "lease_duration"));
	r->renewable = json_is_true(json_object_get(envelope, "renewable")) && *lease_copy;
	return 0;
}

static const json_t *lookup_envelope(const char *path, const json_t *params, void *userdata)
{
	const struct init_state *s = userdata;
	for (size_t i = 0; i < s->n_requests; i++)
		if (same_request(&s->requests[i], path, params))
			return s->requests[i].envelope;
	return NULL;
}

/* KV v2 wraps the values in data.data next to data.metadata; env, dotenv and raw want the
 * values themselves. */
static const json_t *values_of(const json_t *envelope)
{
	const json_t *data = json_object_get(envelope, "data");
	const json_t *inner = json_object_get(data, "data");
	if (json_is_object(inner) && json_is_object(json_object_get(data, "metadata")))
		return inner;
	return data;
}

static bool is_shell_name(const char *k)
{
	if (!*k || (!(k[0] == '_' || (k[0] >= 'A' && k[0] <= 'Z') || (k[0] >= 'a' && k[0] <= 'z'))))
		return false;
	for (const char *p = k; *p; p++)
		if (!(*p == '_' || (*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9')))
			return false;
	return true;
}

/* A value as text: strings as they are, anything else as JSON. */
static int value_text(const json_t *v, struct latch_buf *out)
{
	if (json_is_string(v))
		return latch_buf_append(out, json_string_value(v), json_string_length(v));
	return latch_template_to_json(v, false, out);
}

static int append_single_quoted(struct latch_buf *out, const struct latch_buf *value)
{
	int r = latch_buf_putc(out, '\'');
	for (size_t i = 0; r == 0 && i < value->len; i++)
		/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference): len > 0: ptr is set */
		r = value->ptr[i] == '\'' ? latch_buf_append_str(out, "'\\''") : latch_buf_putc(out, value->ptr[i]);
	return r ? r : latch_buf_putc(out, '\'');
}

/* dotenv: single quotes are literal in every dotenv dialect; values holding a quote or a
 * newline are double-quoted with \\ \" \n escapes instead. */
static int append_dotenv_value(struct latch_buf *out, const struct latch_buf *value)
{
	if (!memchr(value->ptr ? value->ptr : "", '\'', value->len) && !memchr(value->ptr ? value->ptr : "", '\n', value->len))
		return append_single_quoted(out, value);
	int r = latch_buf_putc(out, '"');
	for (size_t i = 0; r == 0 && i < value->len; i++) {
		/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference): len > 0: ptr is set */
		char c = value->ptr[i];
		r = c == '"' ? latch_buf_append_str(out, "\\\"")
		    : c == '\\' ? latch_buf_append_str(out, "\\\\")
		    : c == '\n' ? latch_buf_append_str(out, "\\n")
		    : latch_buf_putc(out, c);
	}
	return r ? r : latch_buf_putc(out, '"');
}

static int render_env(const struct latch_secret_config *sc, const json_t *values, bool export_prefix,
		      struct latch_buf *out, struct latch_error *err)
{
	if (!json_is_object(values))
		return latch_error_set(err, LATCH_EINVAL, "secret '%s': '%s' holds no key/value data for format %s", sc->name,
				       sc->path, latch_format_name(sc->format));
	size_t n;
	const char **keys = latch_json_sorted_keys(values, &n);
	if (!keys)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		if (!is_shell_name(keys[i])) {
			r = latch_error_set(err, LATCH_EINVAL, "secret '%s': key '%s' of '%s' is not a valid variable name for format %s",
					    sc->name, keys[i], sc->path, latch_format_name(sc->format));
			break;
		}
		struct latch_buf value = LATCH_SECRET_BUF_INIT(out->max);
		r = value_text(json_object_get(values, keys[i]), &value);
		if (r == 0)
			r = latch_buf_printf(out, "%s%s=", export_prefix ? "export " : "", keys[i]);
		if (r == 0)
			r = export_prefix ? append_single_quoted(out, &value) : append_dotenv_value(out, &value);
		if (r == 0)
			r = latch_buf_putc(out, '\n');
		latch_buf_done(&value);
	}
	free(keys);
	return r;
}

/* The Vault Agent Injector's default "map" template:
 * {{ range $k, $v := .Data }}{{ $k }}: {{ $v }}\n{{ end }} */
static int render_map(const json_t *data, struct latch_buf *out)
{
	if (!json_is_object(data))
		return 0;
	size_t n;
	const char **keys = latch_json_sorted_keys(data, &n);
	if (!keys)
		return LATCH_ENOMEM;
	int r = 0;
	for (size_t i = 0; i < n && r == 0; i++) {
		json_t *v = json_object_get(data, keys[i]);
		r = latch_buf_printf(out, "%s: ", keys[i]);
		if (r == 0)
			r = json_is_null(v) ? latch_buf_append_str(out, "<no value>") : latch_template_print_value(v, out);
		if (r == 0)
			r = latch_buf_putc(out, '\n');
	}
	free(keys);
	return r;
}

static int render_raw(const struct latch_secret_config *sc, const json_t *values, struct latch_buf *out,
		      struct latch_error *err)
{
	const json_t *v = json_object_get(values, sc->key);
	if (!v)
		return latch_error_set(err, LATCH_ENOTFOUND, "secret '%s': '%s' has no key '%s'", sc->name, sc->path, sc->key);
	return value_text(v, out);
}

/* pem: the certificate, the private key, and the CA chain, as three files. */
static int render_pem(const struct latch_secret_config *sc, const json_t *data, struct init_output out[3],
		      struct latch_error *err)
{
	const char *cert = latch_json_get_str(data, "certificate");
	const char *key = latch_json_get_str(data, "private_key");
	if (!cert || !key)
		return latch_error_set(err, LATCH_EINVAL, "secret '%s': '%s' returned no certificate and private_key for format pem",
				       sc->name, sc->path);
	int r = latch_buf_printf(&out[0].content, "%s\n", cert);
	if (r == 0)
		r = latch_buf_printf(&out[1].content, "%s\n", key);
	const json_t *chain = json_object_get(data, "ca_chain");
	if (r == 0 && json_array_size(chain) > 0) {
		size_t i;
		json_t *c;
		json_array_foreach(chain, i, c) {
			if (r == 0 && json_is_string(c))
				r = latch_buf_printf(&out[2].content, "%s\n", json_string_value(c));
		}
	} else if (r == 0 && latch_json_get_str(data, "issuing_ca")) {
		r = latch_buf_printf(&out[2].content, "%s\n", latch_json_get_str(data, "issuing_ca"));
	}
	return r;
}

static const json_t *envelope_for(const struct init_state *s, const struct latch_secret_config *sc)
{
	return lookup_envelope(sc->path, sc->params, (void *)s);
}

static int render_one(const struct init_state *s, const struct latch_secret_config *sc, struct init_output out[3],
		      struct latch_error *err)
{
	if (sc->format == LATCH_FORMAT_TEMPLATE)
		return latch_template_render(sc->template, lookup_envelope, (void *)s, sc->error_on_missing_key, &out[0].content, err);
	const json_t *env = envelope_for(s, sc);
	if (!env)
		return latch_error_set(err, LATCH_ENOTFOUND, "secret '%s': '%s' was not fetched", sc->name, sc->path);
	const json_t *data = json_object_get(env, "data");
	switch (sc->format) {
	case LATCH_FORMAT_MAP: return render_map(data, &out[0].content);
	case LATCH_FORMAT_JSON: {
		int r = latch_template_to_json(json_is_null(data) ? NULL : data, false, &out[0].content);
		return r ? r : latch_buf_putc(&out[0].content, '\n');
	}
	case LATCH_FORMAT_ENV: return render_env(sc, values_of(env), true, &out[0].content, err);
	case LATCH_FORMAT_DOTENV: return render_env(sc, values_of(env), false, &out[0].content, err);
	case LATCH_FORMAT_RAW: return render_raw(sc, values_of(env), &out[0].content, err);
	case LATCH_FORMAT_PEM: return render_pem(sc, data, out, err);
	case LATCH_FORMAT_TEMPLATE: break;
	}
	return LATCH_EINVAL;
}

#define OUTPUT_MAX (16u << 20)

int init_render_secret(const struct init_state *s, const struct latch_secret_config *sc, struct init_output out[3],
		       size_t *ret_n, struct latch_error *err)
{
	char *names[3] = { 0 };
	size_t n = 0;
	int r = latch_secret_files(sc, names, &n) < 0 ? latch_error_set(err, LATCH_ENOMEM, "out of memory") : 0;
	for (size_t i = 0; i < n; i++) {
		out[i].relpath = names[i];
		latch_buf_init(&out[i].content, OUTPUT_MAX, true);
	}
	if (r == 0) {
		r = render_one(s, sc, out, err);
		if (r == LATCH_ELIMIT || r == LATCH_ENOMEM)
			r = latch_error_set(err, r, "secret '%s': rendered output is larger than %u bytes", sc->name, OUTPUT_MAX);
	}
	if (r < 0) {
		init_outputs_done(out, n);
		return r;
	}
	*ret_n = n;
	return 0;
}
