#include "latch/vault.h"

#include "latch/base64.h"

#include <stdlib.h>
#include <string.h>

#define VAULT_BODY_MAX (4u << 20)

struct latch_vault {
	struct latch_http_client *http;
	char *address;
	char *namespace;
	char *token;
};

int latch_vault_new(const struct latch_vault_options *opts, struct latch_vault **ret, struct latch_error *err)
{
	if (!opts->address || !*opts->address)
		return latch_error_set(err, LATCH_EINVAL, "no Vault address configured");
	struct latch_vault *v = calloc(1, sizeof(*v));
	if (!v)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	v->address = latch_view_dup(latch_view_trim_end(latch_view_str(opts->address), "/"));
	v->namespace = opts->namespace && *opts->namespace ? strdup(opts->namespace) : NULL;
	if (!v->address || (opts->namespace && *opts->namespace && !v->namespace)) {
		latch_vault_free(v);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	int r = latch_http_client_new(&opts->http, &v->http, err);
	if (r < 0) {
		latch_vault_free(v);
		return r;
	}
	*ret = v;
	return 0;
}

void latch_vault_free(struct latch_vault *v)
{
	if (!v)
		return;
	latch_http_client_free(v->http);
	free(v->address);
	free(v->namespace);
	latch_secret_free(v->token);
	free(v);
}

void latch_vault_freep(struct latch_vault **v)
{
	latch_vault_free(*v);
	*v = NULL;
}

void latch_vault_set_deadline(struct latch_vault *v, unsigned deadline_ms)
{
	latch_http_client_set_deadline(v->http, deadline_ms);
}

bool latch_vault_has_token(const struct latch_vault *v)
{
	return v->token != NULL;
}

const char *latch_vault_token(const struct latch_vault *v)
{
	return v->token;
}

int latch_vault_set_token(struct latch_vault *v, const char *token, struct latch_error *err)
{
	size_t n = strlen(token);
	while (n > 0 && (token[n - 1] == '\n' || token[n - 1] == '\r' || token[n - 1] == ' '))
		n--;
	if (n == 0)
		return latch_error_set(err, LATCH_EINVAL, "the Vault token is empty");
	char *copy = strndup(token, n);
	if (!copy)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	latch_secret_free(v->token);
	v->token = copy;
	return 0;
}

/* Vault's retry rule: 412 (consistency), 429 (standby, quota) and 5xx except 501 (not initialised). */
static bool vault_retryable(long status, void *userdata)
{
	return status == 412 || status == 429 || (status >= 500 && status != 501);
}

void latch_vault_errors_text(struct latch_view body, struct latch_buf *out)
{
	struct latch_json_limits lim = { VAULT_BODY_MAX, 32 };
	json_t *doc = NULL;
	json_t *errors = NULL;
	if (latch_json_parse(body, "response", &lim, &doc, NULL) == 0)
		errors = json_object_get(doc, "errors");
	size_t i;
	json_t *e;
	json_array_foreach(errors, i, e) {
		if (!json_is_string(e))
			continue;
		if (out->len)
			latch_buf_append_str(out, "; ");
		latch_buf_append_str(out, json_string_value(e));
	}
	json_decref(doc);
	if (out->len == 0)
		latch_buf_append_str(out, "no error text in the response");
}

static const char *status_hint(long status)
{
	switch (status) {
	case 403: return " (permission denied: check the token's policies for this path)";
	case 404: return " (no such path, or the policy does not allow it)";
	case 503: return " (Vault is sealed or unavailable)";
	case 501: return " (Vault is not initialised)";
	default: return "";
	}
}

struct call {
	const char *method;
	const char *path;
	const char *body;    /* NULL for none; may hold secrets (JWT), it is not copied */
	bool with_token;
};

static int do_call(struct latch_vault *v, const struct call *c, json_t **ret, long *ret_status, struct latch_error *err)
{
	struct latch_buf url = LATCH_BUF_INIT(8192);
	struct latch_buf token_header = LATCH_SECRET_BUF_INIT(16384);
	struct latch_buf ns_header = LATCH_BUF_INIT(4096);
	const char *headers[4];
	size_t n = 0;
	int r = latch_buf_printf(&url, "%s/v1/%s", v->address, c->path[0] == '/' ? c->path + 1 : c->path);
	headers[n++] = "Content-Type: application/json";
	if (r == 0 && c->with_token && v->token) {
		r = latch_buf_printf(&token_header, "X-Vault-Token: %s", v->token);
		headers[n++] = latch_buf_str(&token_header);
	}
	if (r == 0 && v->namespace) {
		r = latch_buf_printf(&ns_header, "X-Vault-Namespace: %s", v->namespace);
		headers[n++] = latch_buf_str(&ns_header);
	}
	if (r < 0) {
		r = latch_error_set(err, LATCH_ELIMIT, "Vault path '%s' is too long", c->path);
		goto done;
	}
	struct latch_http_request req = { .method = c->method, .url = latch_buf_str(&url), .headers = headers,
					  .n_headers = n, .retry_status = vault_retryable };
	if (c->body)
		req.body = latch_view_str(c->body);
	struct latch_http_response resp = { 0 };
	r = latch_http_do(v->http, &req, &resp, err);
	if (r < 0)
		goto done;
	*ret_status = resp.status;
	if (resp.status < 200 || (resp.status >= 300 && resp.status < 400)) {
		/* A standby without request forwarding, or a proxy, redirects: an empty body here
		 * must not pass for an empty secret. */
		r = latch_error_set(err, LATCH_EHTTP, "%s %s: Vault answered %ld, not a success; point vault.address at the "
						       "active node (a redirect is not followed)", c->method, c->path, resp.status);
		if (err)
			err->http_status = resp.status;
	} else if (resp.status >= 400) {
		struct latch_buf text = LATCH_BUF_INIT(8192);
		latch_vault_errors_text(latch_buf_view(&resp.body), &text);
		r = latch_error_set(err, latch_http_status_code(resp.status), "%s %s: Vault answered %ld%s: %s", c->method,
				    c->path, resp.status, status_hint(resp.status), latch_buf_str(&text));
		if (err)
			err->http_status = resp.status;
		latch_buf_done(&text);
	} else if (resp.body.len > 0 && ret) {
		struct latch_json_limits lim = { VAULT_BODY_MAX, 64 };
		r = latch_json_parse(latch_buf_view(&resp.body), c->path, &lim, ret, err);
	} else if (ret) {
		*ret = json_object();
	}
	latch_http_response_done(&resp);
done:
	latch_buf_done(&url);
	latch_buf_done(&token_header);
	latch_buf_done(&ns_header);
	return r;
}

static int call_json(struct latch_vault *v, const char *method, const char *path, const json_t *body, bool with_token,
		     json_t **ret, struct latch_error *err)
{
	char *text = NULL;
	if (body) {
		text = json_dumps(body, JSON_COMPACT);
		if (!text)
			return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	long status = 0;
	struct call c = { method, path, text, with_token };
	int r = do_call(v, &c, ret, &status, err);
	latch_secret_free(text);
	return r;
}

static char *audience_of(const json_t *claims)
{
	const json_t *aud = json_object_get(claims, "aud");
	if (json_is_string(aud))
		return strdup(json_string_value(aud));
	struct latch_buf all = LATCH_BUF_INIT(4096);
	size_t i;
	const json_t *one;
	json_array_foreach(aud, i, one) {
		if (json_is_string(one) && latch_buf_printf(&all, "%s%s", all.len ? "," : "", json_string_value(one)) < 0) {
			latch_buf_done(&all);
			return NULL;
		}
	}
	return all.len ? latch_buf_take(&all) : NULL;
}

int latch_jwt_identity_parse(const char *jwt, struct latch_jwt_identity *ret)
{
	*ret = (struct latch_jwt_identity){ 0 };
	const char *dot1 = strchr(jwt, '.');
	const char *dot2 = dot1 ? strchr(dot1 + 1, '.') : NULL;
	if (!dot2)
		return LATCH_EINVAL;
	struct latch_buf payload = LATCH_BUF_INIT(1u << 20);
	json_t *claims = NULL;
	struct latch_json_limits lim = { 1u << 20, 16 };
	int r = latch_base64_decode(latch_view_make(dot1 + 1, (size_t)(dot2 - dot1 - 1)), true, &payload);
	if (r == 0)
		r = latch_json_parse(latch_buf_view(&payload), "jwt", &lim, &claims, NULL);
	latch_buf_done(&payload);
	if (r < 0)
		return LATCH_EINVAL;
	json_t *k8s = json_object_get(claims, "kubernetes.io");
	const char *ns = latch_json_get_str(k8s, "namespace");
	const char *name = json_string_value(latch_json_path(k8s, "serviceaccount.name"));
	if (!ns)
		ns = latch_json_get_str(claims, "kubernetes.io/serviceaccount/namespace");
	if (!name)
		name = latch_json_get_str(claims, "kubernetes.io/serviceaccount/service-account.name");
	const json_t *aud = json_object_get(claims, "aud");
	bool has_audience = json_is_string(aud) || json_array_size(aud) > 0;
	ret->namespace = ns ? strdup(ns) : NULL;
	ret->name = name ? strdup(name) : NULL;
	ret->audience = audience_of(claims);
	json_decref(claims);
	if ((ns && !ret->namespace) || (name && !ret->name) || (has_audience && !ret->audience)) {
		latch_jwt_identity_done(ret);
		return LATCH_ENOMEM;
	}
	return 0;
}

void latch_jwt_identity_done(struct latch_jwt_identity *id)
{
	free(id->namespace);
	free(id->name);
	free(id->audience);
	*id = (struct latch_jwt_identity){ 0 };
}

/* The usual causes, with what the token says: a role made for the webhook has no audience
 * while latch's tokens carry one (LATCH_INJECT_DEFAULT_TOKEN_AUDIENCE). */
static void login_hint(const char *auth_path, const char *role, const char *jwt, struct latch_error *err)
{
	struct latch_jwt_identity id;
	latch_jwt_identity_parse(jwt, &id);
	latch_error_prefix(err,
			   "login to '%s' with role '%s' as ServiceAccount '%s/%s' with a token for audience '%s' "
				"was refused; check the role's bound_service_account_names, "
				"bound_service_account_namespaces and audience (it must be '%s')",
			   auth_path, role, id.namespace ? id.namespace : "?", id.name ? id.name : "?",
			   id.audience ? id.audience : "?", id.audience ? id.audience : "the token's audience");
	latch_jwt_identity_done(&id);
}

const char *latch_vault_auth_parse(const json_t *resp, struct latch_vault_auth *ret)
{
	const json_t *auth = json_object_get(resp, "auth");
	const char *token = latch_json_get_str(auth, "client_token");
	if (token && ret) {
		ret->lease_duration = (long)json_integer_value(json_object_get(auth, "lease_duration"));
		ret->renewable = json_is_true(json_object_get(auth, "renewable"));
	}
	return token;
}

static int take_auth(struct latch_vault *v, const json_t *resp, const char *what,
		     struct latch_vault_auth *ret, struct latch_error *err)
{
	const char *token = latch_vault_auth_parse(resp, ret);
	if (!token)
		return latch_error_set(err, LATCH_EPARSE, "%s: the response holds no auth.client_token", what);
	return latch_vault_set_token(v, token, err);
}

int latch_vault_login_jwt(struct latch_vault *v, const char *auth_path, const char *role, const char *jwt,
			  struct latch_vault_auth *ret, struct latch_error *err)
{
	struct latch_buf path = LATCH_BUF_INIT(4096);
	if (latch_buf_printf(&path, "%s/login", auth_path) < 0) {
		latch_buf_done(&path);
		return latch_error_set(err, LATCH_ELIMIT, "auth path '%s' is too long", auth_path);
	}
	json_t *body = json_pack("{s:s,s:s}", "role", role, "jwt", jwt);
	json_t *resp = NULL;
	int r = body ? call_json(v, "POST", latch_buf_str(&path), body, false, &resp, err)
		     : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == LATCH_EFORBIDDEN || r == LATCH_EINVAL)
		login_hint(auth_path, role, jwt, err);
	if (r == 0)
		r = take_auth(v, resp, latch_buf_str(&path), ret, err);
	json_decref(body);
	json_decref(resp);
	latch_buf_done(&path);
	return r;
}

int latch_vault_read(struct latch_vault *v, const char *path, json_t **ret, struct latch_error *err)
{
	return call_json(v, "GET", path, NULL, true, ret, err);
}

int latch_vault_write(struct latch_vault *v, const char *path, const json_t *params, json_t **ret,
		      struct latch_error *err)
{
	json_t *empty = params ? NULL : json_object();
	int r = call_json(v, "PUT", path, params ? params : empty, true, ret, err);
	json_decref(empty);
	return r;
}

int latch_vault_renew_self(struct latch_vault *v, long increment_s, struct latch_vault_auth *ret,
			   struct latch_error *err)
{
	json_t *body = increment_s > 0 ? json_pack("{s:I}", "increment", (json_int_t)increment_s) : json_object();
	json_t *resp = NULL;
	int r = call_json(v, "PUT", "auth/token/renew-self", body, true, &resp, err);
	if (r == 0)
		r = take_auth(v, resp, "auth/token/renew-self", ret, err);
	json_decref(body);
	json_decref(resp);
	return r;
}

int latch_vault_lease_renew(struct latch_vault *v, const char *lease_id, long increment_s, long *ret_duration,
			    struct latch_error *err)
{
	json_t *body = json_pack("{s:s,s:I}", "lease_id", lease_id, "increment", (json_int_t)increment_s);
	json_t *resp = NULL;
	int r = call_json(v, "PUT", "sys/leases/renew", body, true, &resp, err);
	if (r == 0)
		*ret_duration = (long)json_integer_value(json_object_get(resp, "lease_duration"));
	json_decref(body);
	json_decref(resp);
	return r;
}

int latch_vault_revoke_self(struct latch_vault *v, struct latch_error *err)
{
	return call_json(v, "PUT", "auth/token/revoke-self", NULL, true, NULL, err);
}
