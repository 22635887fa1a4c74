#include "latch/k8s.h"

#include <ctype.h>
#include <stdatomic.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "latch/base64.h"
#include "latch/buf.h"
#include "latch/clock.h"
#include "latch/file.h"
#include "latch/http.h"
#include "latch/yaml.h"

/* Each request, retries included, unless latch_k8s_set_deadline says otherwise. */
#define DEADLINE_MS 60000

#define KUBECONFIG_MAX (1u << 20)
#define BODY_MAX (64u << 20)
#define SA_DIR "/var/run/secrets/kubernetes.io/serviceaccount"
/* The kubelet rotates a projected token about hourly; client-go reads its file again each
 * minute, and so does this client. */
#define TOKEN_REREAD_S 60.0
/* Aggregated discovery (Kubernetes 1.30 and later): every group's resources in one answer; a
 * server without it answers with the legacy document. */
#define DISCOVERY_V2 "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json"
/* A list of PartialObjectMetadata: each item's metadata, without spec or status. */
#define METADATA_ONLY "application/json;as=PartialObjectMetadataList;g=meta.k8s.io;v=v1"

struct resource {
	char *group_version; /* "v1", "apps/v1" */
	char *kind;
	char *plural;
	bool namespaced;
};

struct latch_k8s {
	struct latch_http_client *http;
	char *server;
	char *auth_header; /* "Authorization: Bearer ..." or NULL */
	char *token_file;  /* where auth_header's token is read from again, or NULL */
	double token_read_at;
	struct resource *resources;
	size_t n_resources;
	bool discovered;
	bool insecure; /* the kubeconfig turned TLS verification off */
	double (*write_time_left)(void *arg);
	void *write_guard_arg;
	unsigned deadline_ms; /* of each request, retries included */
	/* Clones given back, their connections still open: the next borrow takes one instead of
	 * opening a connection (a TLS handshake for client and server each time). */
	struct latch_k8s *spares[LATCH_K8S_SPARES_MAX];
	size_t n_spares;
};

static void forget_resources(struct latch_k8s *k);

bool latch_k8s_tls_unverified(const struct latch_k8s *k)
{
	return k->insecure;
}

void latch_k8s_free(struct latch_k8s *k)
{
	if (!k)
		return;
	for (size_t i = 0; i < k->n_spares; i++)
		latch_k8s_free(k->spares[i]);
	latch_http_client_free(k->http);
	free(k->server);
	latch_secret_free(k->auth_header);
	free(k->token_file);
	forget_resources(k);
	free(k);
}

void latch_k8s_freep(struct latch_k8s **k)
{
	latch_k8s_free(*k);
	*k = NULL;
}

const char *latch_k8s_server(const struct latch_k8s *k)
{
	return k->server;
}

static int copy_resources(const struct latch_k8s *from, struct latch_k8s *to)
{
	if (!from->n_resources)
		return 0;
	to->resources = calloc(from->n_resources, sizeof(*to->resources));
	if (!to->resources)
		return LATCH_ENOMEM;
	for (size_t i = 0; i < from->n_resources; i++) {
		const struct resource *f = &from->resources[i];
		to->resources[to->n_resources++] = (struct resource){ strdup(f->group_version), strdup(f->kind), strdup(f->plural), f->namespaced };
		if (!to->resources[i].group_version || !to->resources[i].kind || !to->resources[i].plural)
			return LATCH_ENOMEM;
	}
	return 0;
}

/* The state a clone follows besides discovery. */
static void take_state(const struct latch_k8s *k, struct latch_k8s *c)
{
	c->discovered = k->discovered;
	c->write_time_left = k->write_time_left;
	c->write_guard_arg = k->write_guard_arg;
	c->deadline_ms = k->deadline_ms;
}

int latch_k8s_clone(const struct latch_k8s *k, struct latch_k8s **ret, struct latch_error *err)
{
	struct latch_k8s *c = calloc(1, sizeof(*c));
	if (!c || !(c->server = strdup(k->server)) || (k->auth_header && !(c->auth_header = strdup(k->auth_header)))
	    || (k->token_file && !(c->token_file = strdup(k->token_file))) || copy_resources(k, c) < 0) {
		latch_k8s_free(c);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	c->token_read_at = k->token_read_at;
	take_state(k, c);
	int r = latch_http_client_clone(k->http, &c->http, err);
	if (r < 0) {
		latch_k8s_free(c);
		return r;
	}
	*ret = c;
	return 0;
}

int latch_k8s_borrow(struct latch_k8s *k, struct latch_k8s **ret, struct latch_error *err)
{
	if (!k->n_spares)
		return latch_k8s_clone(k, ret, err);
	struct latch_k8s *c = k->spares[--k->n_spares];
	/* What discovery found and the write guard may have changed since it was given back. */
	forget_resources(c);
	if (copy_resources(k, c) < 0) {
		latch_k8s_free(c);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	take_state(k, c);
	*ret = c;
	return 0;
}

void latch_k8s_give_back(struct latch_k8s *k, struct latch_k8s *clone)
{
	if (k->n_spares < LATCH_K8S_SPARES_MAX)
		k->spares[k->n_spares++] = clone;
	else
		latch_k8s_free(clone);
}

void latch_k8s_forget_discovery(struct latch_k8s *k)
{
	k->discovered = false;
}

/* ---- connection ---- */

struct connection {
	const char *server;
	struct latch_tls_options tls;
	char *token; /* secret */
	char *token_file; /* where token was read, to be read again */
	/* storage for what tls points to */
	char *ca_pem, *cert_pem, *key_pem, *ca_file, *cert_file, *key_file;
};

static void connection_done(struct connection *c)
{
	free(c->ca_pem);
	free(c->cert_pem);
	latch_secret_free(c->key_pem);
	latch_secret_free(c->token);
	free(c->token_file);
	free(c->ca_file);
	free(c->cert_file);
	free(c->key_file);
}

static char *bearer_header(const char *token)
{
	struct latch_buf h = LATCH_SECRET_BUF_INIT(65536);
	latch_buf_printf(&h, "Authorization: Bearer %s", token);
	char *header = latch_buf_take(&h);
	latch_buf_done(&h);
	return header;
}

static int open_client(const struct connection *c, struct latch_k8s **ret, struct latch_error *err)
{
	struct latch_k8s *k = calloc(1, sizeof(*k));
	if (!k || !(k->server = latch_view_dup(latch_view_trim_end(latch_view_str(c->server), "/")))) {
		free(k);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	k->insecure = c->tls.insecure_skip_verify;
	if ((c->token && !(k->auth_header = bearer_header(c->token))) ||
	    (c->token_file && !(k->token_file = strdup(c->token_file)))) {
		latch_k8s_free(k);
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	k->token_read_at = latch_monotonic_s();
	struct latch_http_options o = LATCH_HTTP_OPTIONS_DEFAULT;
	o.tls = c->tls;
	o.max_body = BODY_MAX;
	o.retry = (struct latch_retry_policy){ 4, 200, 2000, DEADLINE_MS };
	k->deadline_ms = DEADLINE_MS;
	int r = latch_http_client_new(&o, &k->http, err);
	if (r < 0) {
		latch_k8s_free(k);
		return r;
	}
	*ret = k;
	return 0;
}

/* A kubeconfig path relative to the kubeconfig's own directory. */
static char *relative_to(const char *kubeconfig, const char *path)
{
	if (path[0] == '/')
		return strdup(path);
	const char *slash = strrchr(kubeconfig, '/');
	struct latch_buf b = LATCH_BUF_INIT(8192);
	latch_buf_printf(&b, "%.*s%s", slash ? (int)(slash - kubeconfig + 1) : 0, kubeconfig, path);
	return latch_buf_take(&b);
}

static json_t *named_entry(const json_t *list, const char *name, const char *field)
{
	size_t i;
	json_t *e;
	json_array_foreach(list, i, e) if (name && latch_json_get_str(e, "name") && strcmp(latch_json_get_str(e, "name"), name) == 0) return json_object_get(e, field);
	return NULL;
}

static int decode_pem(const char *b64, char **ret, const char *what, struct latch_error *err)
{
	struct latch_buf b = LATCH_SECRET_BUF_INIT(1u << 20);
	if (latch_base64_decode(latch_view_str(b64), false, &b) < 0) {
		latch_buf_done(&b);
		return latch_error_set(err, LATCH_EINVAL, "kubeconfig: %s is not base64", what);
	}
	*ret = latch_buf_take(&b);
	latch_buf_done(&b);
	return 0;
}

static int read_token_file(const char *path, char **ret, struct latch_error *err)
{
	struct latch_buf b = LATCH_SECRET_BUF_INIT(65536);
	int r = latch_file_read_line(path, 65536, &b, err);
	if (r == 0)
		*ret = latch_buf_take(&b);
	latch_buf_done(&b);
	return r;
}

static int user_credentials(const char *path, const json_t *user, struct connection *c, struct latch_error *err)
{
	const char *v;
	int r = 0;
	if ((v = latch_json_get_str(user, "client-certificate-data")))
		r = decode_pem(v, &c->cert_pem, "client-certificate-data", err);
	if (r == 0 && (v = latch_json_get_str(user, "client-key-data")))
		r = decode_pem(v, &c->key_pem, "client-key-data", err);
	if (r == 0 && (v = latch_json_get_str(user, "client-certificate")))
		c->cert_file = relative_to(path, v);
	if (r == 0 && (v = latch_json_get_str(user, "client-key")))
		c->key_file = relative_to(path, v);
	if (r == 0 && (v = latch_json_get_str(user, "token")))
		c->token = strdup(v);
	else if (r == 0 && (v = latch_json_get_str(user, "tokenFile"))) {
		c->token_file = relative_to(path, v); /* as kubectl resolves it */
		r = c->token_file ? read_token_file(c->token_file, &c->token, err) :
				    latch_error_set(err, LATCH_ENOMEM, "out of memory");
	}
	c->tls.client_cert_pem = c->cert_pem;
	c->tls.client_key_pem = c->key_pem;
	c->tls.client_cert_file = c->cert_file;
	c->tls.client_key_file = c->key_file;
	return r;
}

static int kubeconfig_connection(const char *path, const json_t *cfg, struct connection *c, struct latch_error *err)
{
	const char *current = latch_json_get_str(cfg, "current-context");
	const json_t *ctx = named_entry(json_object_get(cfg, "contexts"), current, "context");
	if (!ctx)
		return latch_error_set(err, LATCH_EINVAL, "kubeconfig '%s': no context '%s' (current-context)", path,
				       current ? current : "");
	const char *cluster_name = latch_json_get_str(ctx, "cluster");
	const json_t *cluster = named_entry(json_object_get(cfg, "clusters"), cluster_name, "cluster");
	const json_t *user = named_entry(json_object_get(cfg, "users"), latch_json_get_str(ctx, "user"), "user");
	c->server = latch_json_get_str(cluster, "server");
	if (!c->server)
		return latch_error_set(err, LATCH_EINVAL, "kubeconfig '%s': cluster '%s' has no server", path,
				       cluster_name ? cluster_name : "");
	const char *v;
	int r = 0;
	if ((v = latch_json_get_str(cluster, "certificate-authority-data")))
		r = decode_pem(v, &c->ca_pem, "certificate-authority-data", err);
	if (r == 0 && (v = latch_json_get_str(cluster, "certificate-authority")))
		c->ca_file = relative_to(path, v);
	c->tls.ca_pem = c->ca_pem;
	c->tls.ca_file = c->ca_file;
	c->tls.server_name = latch_json_get_str(cluster, "tls-server-name");
	c->tls.insecure_skip_verify = json_is_true(json_object_get(cluster, "insecure-skip-tls-verify"));
	return r == 0 && user ? user_credentials(path, user, c, err) : r;
}

int latch_k8s_from_kubeconfig_text(struct latch_view text, const char *path, struct latch_k8s **ret,
				   struct latch_error *err)
{
	struct latch_yaml_stream s = { 0 };
	struct latch_yaml_limits lim = { KUBECONFIG_MAX, 32, 1, 100000 };
	int r = latch_yaml_parse(text, path, &lim, &s, err);
	json_t *cfg = r == 0 && s.n_docs == 1 ? latch_yaml_to_json(s.docs[0].root) : NULL;
	if (r == 0 && !json_is_object(cfg))
		r = latch_error_set(err, LATCH_EINVAL, "kubeconfig '%s' is not a YAML mapping", path);
	struct connection c = { 0 };
	if (r == 0)
		r = kubeconfig_connection(path, cfg, &c, err);
	if (r == 0)
		r = open_client(&c, ret, err);
	connection_done(&c);
	json_decref(cfg);
	latch_yaml_stream_done(&s);
	return r;
}

int latch_k8s_from_kubeconfig(const char *path, struct latch_k8s **ret, struct latch_error *err)
{
	_cleanup_free_ char *fallback = NULL;
	if (!path || !*path)
		path = getenv("KUBECONFIG");
	if (!path || !*path) {
		const char *home = getenv("HOME");
		struct latch_buf b = LATCH_BUF_INIT(4096);
		latch_buf_printf(&b, "%s/.kube/config", home ? home : "");
		path = fallback = latch_buf_take(&b);
	}
	struct latch_buf text = LATCH_SECRET_BUF_INIT(KUBECONFIG_MAX);
	int r = latch_file_read(path, KUBECONFIG_MAX, &text, err);
	if (r == 0)
		r = latch_k8s_from_kubeconfig_text(latch_buf_view(&text), path, ret, err);
	latch_buf_done(&text);
	return r;
}

int latch_k8s_in_cluster(struct latch_k8s **ret, struct latch_error *err)
{
	const char *host = getenv("KUBERNETES_SERVICE_HOST"), *port = getenv("KUBERNETES_SERVICE_PORT");
	if (!host || !port)
		return latch_error_set(err, LATCH_EINVAL, "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set");
	struct latch_buf server = LATCH_BUF_INIT(1024);
	latch_buf_printf(&server, strchr(host, ':') ? "https://[%s]:%s" : "https://%s:%s", host, port);
	struct connection c = { .server = latch_buf_str(&server), .token_file = strdup(SA_DIR "/token") };
	c.tls.ca_file = SA_DIR "/ca.crt";
	int r = c.token_file ? read_token_file(c.token_file, &c.token, err) :
			       latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = open_client(&c, ret, err);
	connection_done(&c);
	latch_buf_done(&server);
	return r;
}

/* ---- requests ---- */

static bool retry_status(long status, void *userdata)
{
	return status == 429 || status == 502 || status == 503 || status == 504;
}

/* Requests by method and status (0: no answer), for every client of the process. */
static const char *const counted_methods[LATCH_K8S_METHODS] = { "GET", "POST", "PUT", "PATCH", "DELETE" };
static atomic_ulong answered[LATCH_K8S_METHODS][LATCH_K8S_STATUS_MAX];

static void count_request(const char *method, long status)
{
	for (size_t m = 0; m < LATCH_K8S_METHODS; m++)
		if (strcmp(method, counted_methods[m]) == 0 && status >= 0 && status < LATCH_K8S_STATUS_MAX)
			atomic_fetch_add(&answered[m][status], 1);
}

unsigned long latch_k8s_requests(size_t method, long status, const char **ret_method)
{
	*ret_method = counted_methods[method];
	return atomic_load(&answered[method][status]);
}

void latch_k8s_set_deadline(struct latch_k8s *k, unsigned deadline_ms)
{
	k->deadline_ms = deadline_ms;
	latch_http_client_set_deadline(k->http, deadline_ms);
}

void latch_k8s_set_write_guard(struct latch_k8s *k, double (*time_left)(void *arg), void *arg)
{
	k->write_time_left = time_left;
	k->write_guard_arg = arg;
}

/* A guarded write is refused once the guard's time is up, and is given no more than what is
 * left of it, retries included. */
static int guard_write(struct latch_k8s *k, const char *method, const char *path, struct latch_error *err)
{
	if (!k->write_time_left || strcmp(method, "GET") == 0) {
		latch_http_client_set_deadline(k->http, k->deadline_ms);
		return 0;
	}
	double left = k->write_time_left(k->write_guard_arg);
	if (left <= 0)
		return latch_error_set(err, LATCH_EFORBIDDEN, "%s %s: not sent: this replica no longer holds the source's "
				       "Lease", method, path);
	unsigned left_ms = left * 1000 < (double)k->deadline_ms ? (unsigned)(left * 1000) + 1 : k->deadline_ms;
	latch_http_client_set_deadline(k->http, left_ms);
	return 0;
}

/* Reads the token file again; true when it holds another token than the one sent. A file that
 * cannot be read keeps the token in use: the API server says whether it still holds. */
static bool token_rotated(struct latch_k8s *k)
{
	k->token_read_at = latch_monotonic_s();
	_cleanup_secret_ char *token = NULL, *header = NULL;
	if (read_token_file(k->token_file, &token, NULL) < 0 || !*token || !(header = bearer_header(token)))
		return false;
	if (k->auth_header && strcmp(header, k->auth_header) == 0)
		return false;
	latch_secret_free(k->auth_header);
	k->auth_header = header;
	header = NULL;
	return true;
}

/* The request, its answer's body left as text in ret_body (to latch_http_response_done), or
 * given to sink as it arrives when it is a 2xx one (see latch_http_request). */
static int request_raw(struct latch_k8s *k, const char *method, const char *path, const char *content_type,
		       const char *accept, const char *body, bool (*sink)(const char *, size_t, void *), void *sink_arg,
		       struct latch_http_response *ret, struct latch_error *err)
{
	if (guard_write(k, method, path, err) < 0)
		return LATCH_EFORBIDDEN;
	if (k->token_file && latch_monotonic_s() - k->token_read_at >= TOKEN_REREAD_S)
		token_rotated(k);
	struct latch_buf url = LATCH_BUF_INIT(16384), ct = LATCH_BUF_INIT(512), ac = LATCH_BUF_INIT(512);
	latch_buf_printf(&url, "%s%s", k->server, path);
	latch_buf_printf(&ct, "Content-Type: %s", content_type ? content_type : "application/json");
	latch_buf_printf(&ac, "Accept: %s", accept ? accept : "application/json");
	const char *headers[3] = { latch_buf_str(&ct), latch_buf_str(&ac), k->auth_header };
	struct latch_http_request req = { .method = method, .url = latch_buf_str(&url), .headers = headers,
					  .n_headers = k->auth_header ? 3 : 2, .retry_status = retry_status,
					  .sink = sink, .sink_arg = sink_arg };
	if (body)
		req.body = latch_view_str(body);
	int r = latch_buf_check(&url, "request URL", err);
	if (r == 0)
		r = latch_buf_check(&ct, "Content-Type", err);
	if (r == 0)
		r = latch_buf_check(&ac, "Accept", err);
	if (r == 0)
		r = latch_http_do(k->http, &req, ret, err);
	/* A token rotated within the minute may already be revoked: the new one is tried at once. */
	if (r == 0 && ret->status == 401 && k->token_file && token_rotated(k)) {
		latch_http_response_done(ret);
		headers[2] = k->auth_header;
		r = latch_http_do(k->http, &req, ret, err);
	}
	count_request(method, r == 0 ? ret->status : 0);
	latch_buf_done(&url);
	latch_buf_done(&ct);
	latch_buf_done(&ac);
	return r;
}

static int parse_body(const struct latch_buf *body, const char *method, const char *path, long status,
		      json_t **ret, struct latch_error *err)
{
	*ret = NULL;
	struct latch_json_limits lim = { BODY_MAX, 128 };
	if (body->len && latch_json_parse(latch_buf_view(body), path, &lim, ret, err) < 0)
		return latch_error_prefix(err, "%s %s answered %ld with a body that is not JSON", method, path, status);
	return 0;
}

static int request(struct latch_k8s *k, const char *method, const char *path, const char *content_type,
		   const char *accept,
		   const char *body, long *ret_status, json_t **ret, struct latch_error *err)
{
	struct latch_http_response resp = { 0 };
	int r = request_raw(k, method, path, content_type, accept, body, NULL, NULL, &resp, err);
	if (r == 0) {
		*ret_status = resp.status;
		r = parse_body(&resp.body, method, path, resp.status, ret, err);
	}
	latch_http_response_done(&resp);
	return r;
}

int latch_k8s_request(struct latch_k8s *k, const char *method, const char *path, const char *content_type,
		      const char *body, long *ret_status, json_t **ret, struct latch_error *err)
{
	return request(k, method, path, content_type, NULL, body, ret_status, ret, err);
}

static int status_error(long status, const json_t *body, const char *what, struct latch_error *err)
{
	const char *msg = latch_json_get_str(body, "message");
	int r = latch_error_set(err, latch_http_status_code(status), "%s: the API server answered %ld: %s", what,
				status, msg ? msg : "(no message)");
	if (err)
		err->http_status = status;
	return r;
}

/* ---- discovery ---- */

/* What the API server accepts as one segment of a path: not "." or "..", no '/' or '%'.
 * '?' and '#' would end the path, so they are refused too, with spaces and control bytes. */
static bool path_segment(const char *s)
{
	if (!s || !*s || strcmp(s, ".") == 0 || strcmp(s, "..") == 0)
		return false;
	for (; *s; s++)
		if ((unsigned char)*s <= ' ' || *s == 0x7f || strchr("/%?#", *s))
			return false;
	return true;
}

/* "v1" or "apps/v1": one or two path segments. */
static bool group_version_ok(const char *gv)
{
	const char *slash = gv ? strchr(gv, '/') : NULL;
	if (!slash)
		return path_segment(gv);
	_cleanup_free_ char *group = strndup(gv, (size_t)(slash - gv));
	return group && path_segment(group) && path_segment(slash + 1);
}

static void forget_group_version(struct latch_k8s *k, const char *group_version)
{
	size_t kept = 0;
	for (size_t i = 0; i < k->n_resources; i++) {
		struct resource *r = &k->resources[i];
		if (r->group_version && strcmp(r->group_version, group_version) == 0) {
			free(r->group_version);
			free(r->kind);
			free(r->plural);
		} else {
			k->resources[kept++] = *r;
		}
	}
	k->n_resources = kept;
}

int latch_k8s_learn_resources(struct latch_k8s *k, const char *group_version, const json_t *list)
{
	if (!group_version_ok(group_version))
		return LATCH_EINVAL;
	forget_group_version(k, group_version);
	k->discovered = true;
	size_t i;
	json_t *res;
	json_array_foreach(json_object_get(list, "resources"), i, res) {
		const char *name = latch_json_get_str(res, "name"), *kind = latch_json_get_str(res, "kind");
		if (!path_segment(name) || !kind || !*kind)
			continue; /* subresources (deployments/status) have a '/' */
		void *p = realloc(k->resources, (k->n_resources + 1) * sizeof(*k->resources));
		if (!p)
			return LATCH_ENOMEM;
		k->resources = p;
		struct resource *r = &k->resources[k->n_resources++];
		*r = (struct resource){ strdup(group_version), strdup(kind), strdup(name), json_is_true(json_object_get(res, "namespaced")) };
		if (!r->group_version || !r->kind || !r->plural)
			return LATCH_ENOMEM;
	}
	return 0;
}

static int discover_group_version(struct latch_k8s *k, const char *prefix, const char *group_version, struct latch_error *err)
{
	struct latch_buf path = LATCH_BUF_INIT(4096);
	latch_buf_printf(&path, "%s/%s", prefix, group_version);
	struct latch_http_response resp = { 0 };
	json_t *list = NULL;
	int r = latch_buf_check(&path, "discovery path", err);
	if (r == 0)
		r = request_raw(k, "GET", latch_buf_str(&path), NULL, NULL, NULL, NULL, NULL, &resp, err);
	/* A group version that is not served (or vanished since /apis listed it) is not an error:
	 * the API server's 404 for it is not even JSON. */
	if (r == 0 && resp.status == 200)
		r = parse_body(&resp.body, "GET", latch_buf_str(&path), resp.status, &list, err);
	if (r == 0 && list && latch_k8s_learn_resources(k, group_version, list) == LATCH_ENOMEM)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	json_decref(list);
	latch_http_response_done(&resp);
	latch_buf_done(&path);
	return r;
}

static void forget_resources(struct latch_k8s *k)
{
	for (size_t i = 0; i < k->n_resources; i++) {
		free(k->resources[i].group_version);
		free(k->resources[i].kind);
		free(k->resources[i].plural);
	}
	free(k->resources);
	k->resources = NULL;
	k->n_resources = 0;
}

/* One version of an aggregated discovery item as the APIResourceList latch_k8s_learn_resources
 * reads (subresources are listed apart in this format, so none are kept). */
static json_t *resource_list_of(const json_t *version)
{
	json_t *resources = json_array(), *res;
	size_t i;
	json_array_foreach(json_object_get(version, "resources"), i, res) {
		const char *scope = latch_json_get_str(res, "scope");
		json_t *entry = json_pack("{s:s?,s:s?,s:b}", "name", latch_json_get_str(res, "resource"), "kind",
					  latch_json_get_str(json_object_get(res, "responseKind"), "kind"), "namespaced",
					  scope && strcmp(scope, "Namespaced") == 0);
		if (!entry || json_array_append_new(resources, entry) < 0) {
			json_decref(resources);
			return NULL;
		}
	}
	return resources ? json_pack("{s:o}", "resources", resources) : NULL;
}

int latch_k8s_learn_aggregated(struct latch_k8s *k, const json_t *doc)
{
	const char *kind = latch_json_get_str(doc, "kind");
	if (!kind || strcmp(kind, "APIGroupDiscoveryList") != 0 || !json_is_array(json_object_get(doc, "items")))
		return 1;
	size_t i, j;
	json_t *group, *version;
	json_array_foreach(json_object_get(doc, "items"), i, group) {
		const char *name = latch_json_get_str(json_object_get(group, "metadata"), "name");
		json_array_foreach(json_object_get(group, "versions"), j, version) {
			const char *v = latch_json_get_str(version, "version");
			struct latch_buf gv = LATCH_BUF_INIT(1024);
			latch_buf_printf(&gv, "%s%s%s", name && *name ? name : "", name && *name ? "/" : "", v ? v : "");
			json_t *list = resource_list_of(version);
			/* A name too long for a path is skipped, as learn_resources skips what cannot be one. */
			int r = !list ? LATCH_ENOMEM : latch_buf_error(&gv) ? latch_buf_error(&gv)
									    : latch_k8s_learn_resources(k, latch_buf_str(&gv), list);
			json_decref(list);
			latch_buf_done(&gv);
			if (r == LATCH_ENOMEM)
				return r;
		}
	}
	return 0;
}

/* 0 when path answered with an aggregated document (learned), 1 with a legacy one. */
static int discover_aggregated(struct latch_k8s *k, const char *path, struct latch_error *err)
{
	long status = 0;
	json_t *doc = NULL;
	int r = request(k, "GET", path, NULL, DISCOVERY_V2, NULL, &status, &doc, err);
	if (r == 0 && status != 200)
		r = status_error(status, doc, path, err);
	if (r == 0 && (r = latch_k8s_learn_aggregated(k, doc)) == LATCH_ENOMEM)
		r = latch_error_set(err, r, "out of memory");
	json_decref(doc);
	return r;
}

/* One request for each group version. */
static int discover_legacy(struct latch_k8s *k, struct latch_error *err)
{
	int r = discover_group_version(k, "/api", "v1", err);
	long status = 0;
	json_t *groups = NULL;
	if (r == 0)
		r = latch_k8s_request(k, "GET", "/apis", NULL, NULL, &status, &groups, err);
	if (r == 0 && status != 200)
		r = status_error(status, groups, "discovery (GET /apis)", err);
	size_t i;
	json_t *g;
	json_array_foreach(json_object_get(groups, "groups"), i, g) {
		size_t j;
		json_t *v;
		json_array_foreach(json_object_get(g, "versions"), j, v) {
			const char *gv = latch_json_get_str(v, "groupVersion");
			if (r == 0 && group_version_ok(gv)) /* anything else cannot name a path */
				r = discover_group_version(k, "/apis", gv, err);
		}
	}
	json_decref(groups);
	return r;
}

static int discover(struct latch_k8s *k, struct latch_error *err)
{
	if (k->discovered)
		return 0;
	forget_resources(k);
	int r = discover_aggregated(k, "/api", err);
	if (r == 0)
		r = discover_aggregated(k, "/apis", err);
	if (r == 1) {
		forget_resources(k);
		r = discover_legacy(k, err);
	}
	k->discovered = r == 0;
	return r;
}

int latch_k8s_discover(struct latch_k8s *k, struct latch_error *err)
{
	return discover(k, err);
}

static const struct resource *find_resource(const struct latch_k8s *k, const char *api_version, const char *kind)
{
	for (size_t i = 0; i < k->n_resources; i++)
		if (strcmp(k->resources[i].group_version, api_version) == 0 && strcmp(k->resources[i].kind, kind) == 0)
			return &k->resources[i];
	return NULL;
}

bool latch_k8s_serves(const struct latch_k8s *k, const char *api_version, const char *kind)
{
	return api_version && kind && find_resource(k, api_version, kind);
}

bool latch_k8s_namespaced(const struct latch_k8s *k, const char *api_version, const char *kind)
{
	const struct resource *res = api_version && kind ? find_resource(k, api_version, kind) : NULL;
	return res && res->namespaced;
}

int latch_k8s_object_path(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns,
			  const char *name, const char *default_namespace, char **ret_path, bool *ret_namespaced,
			  struct latch_error *err)
{
	if (!api_version || !kind)
		return latch_error_set(err, LATCH_EINVAL, "an object without apiVersion or kind");
	if ((ns && *ns && !path_segment(ns)) || (name && !path_segment(name)))
		return latch_error_set(err, LATCH_EINVAL, "%s '%s%s%s' cannot be a name in the API: it is empty, '.' or "
				       "'..', or holds '/', '%%', '?', '#', a space or a control character", kind,
				       ns && *ns ? ns : "", ns && *ns ? "/" : "", name ? name : "");
	const struct resource *res = NULL;
	int r = discover(k, err);
	if (r == 0 && !(res = find_resource(k, api_version, kind))) {
		/* A CRD applied a moment ago: discovery is refreshed once, and its group version asked
		 * for alone (the aggregated document may not have caught up with it yet). */
		k->discovered = false;
		r = discover(k, err);
		if (r == 0 && !(res = find_resource(k, api_version, kind)) && group_version_ok(api_version))
			r = discover_group_version(k, strchr(api_version, '/') ? "/apis" : "/api", api_version, err);
		if (r == 0 && !res && !(res = find_resource(k, api_version, kind)))
			return latch_error_set(err, LATCH_ENOTFOUND, "the API server serves no kind %s in %s", kind, api_version);
	}
	if (r < 0)
		return r;
	/* NOLINTNEXTLINE(clang-analyzer-core.NullDereference): r == 0 here means find_resource() found res */
	if (res->namespaced && !(ns && *ns))
		ns = default_namespace && *default_namespace ? default_namespace : "default";
	struct latch_buf b = LATCH_BUF_INIT(8192);
	latch_buf_printf(&b, "%s/%s", strchr(api_version, '/') ? "/apis" : "/api", api_version);
	if (res->namespaced)
		latch_buf_printf(&b, "/namespaces/%s", ns);
	latch_buf_printf(&b, "/%s", res->plural);
	if (name)
		latch_buf_printf(&b, "/%s", name);
	*ret_path = latch_buf_take(&b);
	if (ret_namespaced)
		*ret_namespaced = res->namespaced;
	return *ret_path ? 0 : latch_error_set(err, LATCH_ENOMEM, "out of memory");
}

static void describe(const json_t *obj, struct latch_buf *out)
{
	const json_t *meta = json_object_get(obj, "metadata");
	const char *ns = latch_json_get_str(meta, "namespace");
	latch_buf_printf(out, "%s '%s%s%s'", latch_json_get_str(obj, "kind") ? latch_json_get_str(obj, "kind") : "object",
			 ns ? ns : "", ns ? "/" : "", latch_json_get_str(meta, "name") ? latch_json_get_str(meta, "name") : "?");
}

int latch_k8s_apply(struct latch_k8s *k, const json_t *obj, const struct latch_k8s_apply_options *o, json_t **ret,
		    struct latch_error *err)
{
	char *body = json_dumps(obj, JSON_COMPACT);
	int r = body ? latch_k8s_apply_text(k, obj, body, o, ret, err)
		     : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	latch_secret_free(body); /* it may be a Secret */
	return r;
}

int latch_k8s_apply_text(struct latch_k8s *k, const json_t *obj, const char *body,
			 const struct latch_k8s_apply_options *o, json_t **ret, struct latch_error *err)
{
	const json_t *meta = json_object_get(obj, "metadata");
	struct latch_buf what = LATCH_BUF_INIT(4096);
	describe(obj, &what);
	_cleanup_free_ char *path = NULL;
	int r = latch_k8s_object_path(k, latch_json_get_str(obj, "apiVersion"), latch_json_get_str(obj, "kind"),
				      latch_json_get_str(meta, "namespace"), latch_json_get_str(meta, "name"), o->default_namespace,
				      &path, NULL, err);
	if (r < 0) {
		latch_error_prefix(err, "applying %s", latch_buf_str(&what));
		latch_buf_done(&what);
		return r;
	}
	struct latch_buf url = LATCH_BUF_INIT(16384);
	latch_buf_printf(&url, "%s?fieldManager=%s%s%s", path, o->field_manager, o->force ? "&force=true" : "",
			 o->dry_run ? "&dryRun=All" : "");
	long status = 0;
	json_t *resp = NULL;
	r = latch_buf_check(&url, "apply URL", err);
	if (r == 0)
		r = latch_k8s_request(k, "PATCH", latch_buf_str(&url), "application/apply-patch+yaml", body, &status, &resp,
				      err);
	if (r == 0 && status >= 300) {
		latch_buf_printf(&what, "%s", o->dry_run ? " (dry run)" : "");
		r = status_error(status, resp, latch_buf_str(&what), err);
	}
	if (r == 0 && ret)
		*ret = json_incref(resp);
	json_decref(resp);
	latch_buf_done(&url);
	latch_buf_done(&what);
	return r;
}

int latch_k8s_get(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns, const char *name,
		  json_t **ret, struct latch_error *err)
{
	_cleanup_free_ char *path = NULL;
	int r = latch_k8s_object_path(k, api_version, kind, ns, name, NULL, &path, NULL, err);
	long status = 0;
	json_t *resp = NULL;
	if (r == 0)
		r = latch_k8s_request(k, "GET", path, NULL, NULL, &status, &resp, err);
	if (r == 0 && status != 200) {
		struct latch_buf what = LATCH_BUF_INIT(1024);
		latch_buf_printf(&what, "getting %s '%s'", kind, name);
		r = status_error(status, resp, latch_buf_str(&what), err);
		latch_buf_done(&what);
	}
	if (r == 0)
		*ret = json_incref(resp);
	json_decref(resp);
	return r;
}

int latch_k8s_delete(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns, const char *name,
		     struct latch_error *err)
{
	return latch_k8s_delete_uid(k, api_version, kind, ns, name, NULL, err);
}

int latch_k8s_delete_uid(struct latch_k8s *k, const char *api_version, const char *kind, const char *ns, const char *name, const char *uid,
			 struct latch_error *err)
{
	_cleanup_free_ char *path = NULL;
	int r = latch_k8s_object_path(k, api_version, kind, ns, name, NULL, &path, NULL, err);
	long status = 0;
	json_t *resp = NULL;
	json_t *options = json_pack("{s:s}", "propagationPolicy", "Background");
	if (uid)
		json_object_set_new(options, "preconditions", json_pack("{s:s}", "uid", uid));
	char *body = options ? json_dumps(options, JSON_COMPACT) : NULL;
	json_decref(options);
	if (r == 0 && !body)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r == 0)
		r = latch_k8s_request(k, "DELETE", path, NULL, body, &status, &resp, err);
	free(body);
	if (r == 0 && status != 200 && status != 202 && status != 404) {
		struct latch_buf what = LATCH_BUF_INIT(1024);
		latch_buf_printf(&what, "deleting %s '%s%s%s'", kind, ns ? ns : "", ns ? "/" : "", name);
		r = status_error(status, resp, latch_buf_str(&what), err);
		latch_buf_done(&what);
	}
	json_decref(resp);
	return r;
}

static void append_query_escaped(struct latch_buf *b, const char *s)
{
	for (; *s; s++) {
		unsigned char ch = (unsigned char)*s;
		if (isalnum(ch) || strchr("-._~", ch))
			latch_buf_putc(b, (char)ch);
		else
			latch_buf_printf(b, "%%%02X", ch);
	}
}

/* A list body read as it arrives: each element of its items array is parsed alone when its
 * last byte is in and handed to fn, so a list of 10,000 objects is never held whole, as text
 * or as a tree. The bytes around the items (kind, metadata with the continue token) are kept
 * and parsed at the end, with the items array left empty. */
enum items_expect { ITEMS_FIRST, ITEMS_ELEMENT, ITEMS_COMMA };

struct list_stream {
	int (*fn)(json_t *item, void *arg);
	void *arg;
	int result;     /* the first failure: LATCH_EPARSE or what fn returned */
	int depth;      /* of open objects and arrays */
	bool in_string, escaped;
	bool top_is_object, expect_key, reading_key;
	char key[8];    /* the top-level key being read; only "items" matters */
	size_t key_len;
	bool key_is_items, in_items;
	enum items_expect expect;
	struct latch_buf outer, item;
};

static void list_stream_init(struct list_stream *ls, int (*fn)(json_t *item, void *arg), void *arg)
{
	*ls = (struct list_stream){ .fn = fn, .arg = arg };
	/* Whole lists may hold Secrets. */
	latch_buf_init(&ls->outer, BODY_MAX, true);
	latch_buf_init(&ls->item, BODY_MAX, true);
}

static void list_stream_done(struct list_stream *ls)
{
	latch_buf_done(&ls->outer);
	latch_buf_done(&ls->item);
}

static void item_complete(struct list_stream *ls)
{
	json_error_t e;
	int overflow = latch_buf_error(&ls->item);
	json_t *item = overflow ? NULL : json_loadb(ls->item.ptr, ls->item.len, 0, &e);
	ls->result = item ? ls->fn(item, ls->arg) : overflow ? overflow : LATCH_EPARSE;
	if (ls->result > 0)
		ls->result = 0;
	json_decref(item);
	latch_buf_reset(&ls->item);
	ls->expect = ITEMS_COMMA;
}

/* A byte between the elements of items: only ',', ']', whitespace and an element's '{'. */
static bool between_items(struct list_stream *ls, char ch)
{
	if (strchr(" \t\r\n", ch))
		return true;
	if (ch == ',' && ls->expect == ITEMS_COMMA) {
		ls->expect = ITEMS_ELEMENT;
		return true;
	}
	if (ch == ']' && ls->expect != ITEMS_ELEMENT) {
		ls->in_items = false;
		ls->depth--;
		latch_buf_putc(&ls->outer, ch);
		return true;
	}
	if (ch == '{' && ls->expect != ITEMS_COMMA) {
		ls->depth++;
		latch_buf_putc(&ls->item, ch);
		return true;
	}
	return false;
}

/* A byte inside a string: only an unescaped quote ends it. */
static inline void string_step(struct list_stream *ls, char ch)
{
	if (ls->escaped)
		ls->escaped = false;
	else if (ch == '\\')
		ls->escaped = true;
	else if (ch == '"')
		ls->in_string = false;
}

static void string_byte(struct list_stream *ls, char ch)
{
	string_step(ls, ch);
	if (ls->reading_key && ls->in_string && ls->key_len < sizeof(ls->key))
		ls->key[ls->key_len++] = ch;
	else if (ls->reading_key && !ls->in_string) {
		ls->reading_key = false;
		ls->key_is_items = ls->key_len == 5 && memcmp(ls->key, "items", 5) == 0;
	}
}

/* Outside strings: nesting, and at the top level where keys start. */
static void structure_byte(struct list_stream *ls, char ch)
{
	if (ch == '"') {
		ls->in_string = true;
		if (ls->depth == 1 && ls->top_is_object && ls->expect_key) {
			ls->reading_key = true;
			ls->key_len = 0;
		}
	} else if (ch == '{' || ch == '[') {
		if (++ls->depth == 1)
			ls->top_is_object = ch == '{';
		if (ls->depth == 1 && ch == '{')
			ls->expect_key = true;
		if (ls->depth == 2 && ch == '[' && ls->top_is_object && ls->key_is_items) {
			ls->in_items = true;
			ls->expect = ITEMS_FIRST;
		}
	} else if (ch == '}' || ch == ']') {
		if (--ls->depth < 0)
			ls->result = LATCH_EPARSE;
	} else if (ch == ',' && ls->depth == 1) {
		ls->expect_key = true;
		ls->key_is_items = false;
	} else if (ch == ':' && ls->depth == 1) {
		ls->expect_key = false;
	}
}

/* The outer bytes and those between items, one at a time (there are few of them). */
static void list_stream_byte(struct list_stream *ls, char ch)
{
	if (ls->in_items && ls->depth == 2) {
		if (!between_items(ls, ch))
			ls->result = LATCH_EPARSE;
		return;
	}
	latch_buf_putc(&ls->outer, ch);
	if (ls->in_string)
		string_byte(ls, ch);
	else
		structure_byte(ls, ch);
}

/* Inside an item: only where it ends matters. Returns the index past its last byte, or len. */
static size_t scan_item(struct list_stream *ls, const char *data, size_t at, size_t len)
{
	for (; at < len; at++) {
		char ch = data[at];
		if (ls->in_string) {
			string_step(ls, ch);
		} else if (ch == '"') {
			ls->in_string = true;
		} else if (ch == '{' || ch == '[') {
			ls->depth++;
		} else if ((ch == '}' || ch == ']') && --ls->depth == 2) {
			return at + 1;
		}
	}
	return len;
}

static bool list_stream_feed(const char *data, size_t len, void *arg)
{
	struct list_stream *ls = arg;
	for (size_t at = 0; at < len && ls->result == 0;) {
		if (!(ls->in_items && ls->depth >= 3)) {
			list_stream_byte(ls, data[at++]);
			continue;
		}
		size_t end = scan_item(ls, data, at, len);
		latch_buf_append(&ls->item, data + at, end - at);
		at = end;
		if (ls->depth == 2)
			item_complete(ls);
	}
	if (ls->result == 0 && latch_buf_error(&ls->outer))
		ls->result = latch_buf_error(&ls->outer);
	return ls->result == 0;
}

/* The bytes around the items, parsed: a JSON object whose items, if any, were an array. */
static int list_stream_finish(struct list_stream *ls, json_t **ret_meta)
{
	*ret_meta = NULL;
	if (ls->result < 0)
		return ls->result;
	json_error_t e;
	json_t *outer = ls->depth == 0 && !ls->in_string ? json_loadb(ls->outer.ptr, ls->outer.len, 0, &e) : NULL;
	const json_t *items = json_object_get(outer, "items");
	int r = json_is_object(outer) && (!items || json_is_array(items)) ? 0 : LATCH_EPARSE;
	if (r == 0)
		*ret_meta = json_incref(json_object_get(outer, "metadata"));
	json_decref(outer);
	return r;
}

int latch_k8s_list_body_each(struct latch_view body, int (*fn)(json_t *item, void *arg), void *arg,
			     json_t **ret_meta)
{
	struct list_stream ls;
	list_stream_init(&ls, fn, arg);
	list_stream_feed(body.ptr ? body.ptr : "", body.len, &ls);
	int r = list_stream_finish(&ls, ret_meta);
	list_stream_done(&ls);
	return r;
}

struct list_walk {
	const char *path;
	const struct latch_k8s_list_options *o;
	int (*fn)(json_t *item, void *arg);
	void *arg;
};

/* One page of a cluster-wide list; *cont gets the continue token (NULL on the last page). */
static int list_page(struct latch_k8s *k, const struct list_walk *w, char **cont, struct latch_error *err)
{
	struct latch_buf url = LATCH_BUF_INIT(16384);
	latch_buf_printf(&url, "%s?limit=500%s", w->path, w->o->cached ? "&resourceVersion=0" : "");
	if (w->o->label_selector)
		latch_buf_printf(&url, "&labelSelector=%s", w->o->label_selector);
	if (*cont) {
		latch_buf_append_str(&url, "&continue=");
		append_query_escaped(&url, *cont);
	}
	free(*cont);
	*cont = NULL;
	struct latch_http_response resp = { 0 };
	struct list_stream ls;
	list_stream_init(&ls, w->fn, w->arg);
	json_t *meta = NULL, *answer = NULL;
	int r = latch_buf_check(&url, "list URL", err);
	if (r == 0)
		r = request_raw(k, "GET", latch_buf_str(&url), NULL, w->o->metadata_only ? METADATA_ONLY : NULL, NULL,
				list_stream_feed, &ls, &resp, err);
	if (r == 0 && resp.status != 200 && parse_body(&resp.body, "GET", w->path, resp.status, &answer, err) == 0)
		r = status_error(resp.status, answer, w->path, err);
	else if (r == 0 && resp.status != 200)
		r = latch_error_prefix(err, "%s: the API server answered %ld", w->path, resp.status);
	if (r == 0 || ls.result < 0)
		r = list_stream_finish(&ls, &meta);
	if (r == LATCH_EPARSE)
		r = latch_error_set(err, r, "GET %s answered with a list that is not JSON", w->path);
	else if (r < 0 && ls.result == r)
		r = latch_error_set(err, r, "GET %s: %s", w->path, latch_code_name(r));
	const char *next = latch_json_get_str(meta, "continue");
	if (r == 0 && next && *next && !(*cont = strdup(next)))
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	json_decref(meta);
	json_decref(answer);
	list_stream_done(&ls);
	latch_http_response_done(&resp);
	latch_buf_done(&url);
	return r;
}

int latch_k8s_list_each(struct latch_k8s *k, const char *api_version, const char *kind,
			const struct latch_k8s_list_options *o, int (*fn)(json_t *item, void *arg), void *arg,
			struct latch_error *err)
{
	_cleanup_free_ char *path = NULL;
	bool namespaced = false;
	int r = latch_k8s_object_path(k, api_version, kind, NULL, NULL, NULL, &path, &namespaced, err);
	if (r < 0)
		return r;
	if (namespaced) { /* across namespaces: drop "/namespaces/default" */
		char *ns = strstr(path, "/namespaces/");
		char *rest = ns ? strchr(ns + strlen("/namespaces/"), '/') : NULL;
		if (rest)
			memmove(ns, rest, strlen(rest) + 1);
	}
	static const struct latch_k8s_list_options every_object = { 0 };
	struct list_walk w = { path, o ? o : &every_object, fn, arg };
	char *cont = NULL;
	do
		r = list_page(k, &w, &cont, err);
	while (r == 0 && cont);
	free(cont);
	return r < 0 ? latch_error_prefix(err, "listing %s", kind) : 0;
}

static int append_item(json_t *item, void *arg)
{
	return json_array_append(arg, item) < 0 ? LATCH_ENOMEM : 0;
}

int latch_k8s_list(struct latch_k8s *k, const char *api_version, const char *kind,
		   const struct latch_k8s_list_options *o, json_t **ret, struct latch_error *err)
{
	json_t *items = json_array();
	int r = items ? latch_k8s_list_each(k, api_version, kind, o, append_item, items, err)
		      : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (r < 0) {
		json_decref(items);
		return r;
	}
	*ret = items;
	return 0;
}
