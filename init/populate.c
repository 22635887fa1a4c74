/* Log in, fetch each distinct request once, render, write atomically. */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "init.h"
#include "latch/clock.h"
#include "latch/file.h"
#include "latch/log.h"

#define TOKEN_FILE_MAX (64u * 1024)
#define STATE_DIR ".latch"

int init_state_setup(struct init_state *s, struct latch_config *c, struct latch_error *err)
{
	*s = (struct init_state){ .config = c };
	struct latch_vault_options *o = &s->vault_options;
	*o = (struct latch_vault_options){
		.address = c->vault.address,
		.namespace = c->vault.namespace,
		.http = LATCH_HTTP_OPTIONS_DEFAULT,
	};
	o->http.tls = (struct latch_tls_options){
		.ca_file = c->vault.ca_file,
		.ca_pem = c->vault.ca_pem,
		.server_name = c->vault.server_name,
		.client_cert_file = c->vault.client_cert_file,
		.client_key_file = c->vault.client_key_file,
		.insecure_skip_verify = c->vault.tls_skip_verify,
	};
	o->http.retry = (struct latch_retry_policy){ 1000, 250, 5000, c->deadline_seconds * 1000u };
	o->http.request_timeout_ms = 30000;
	if (c->vault.tls_skip_verify)
		LATCH_LOG(LATCH_LOG_WARN, "TLS verification of Vault is turned off (vault.tls_skip_verify)",
			  { "address", c->vault.address });
	int r = latch_vault_new(o, &s->vault, err);
	if (r == 0 && init_collect_requests(s) < 0)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	return r;
}

void init_state_done(struct init_state *s)
{
	for (size_t i = 0; i < s->n_requests; i++) {
		json_decref(s->requests[i].envelope);
		free(s->requests[i].lease_id);
	}
	free(s->requests);
	latch_vault_free(s->vault);
	*s = (struct init_state){ 0 };
}

/* Calls made from now on may take until the phase's deadline. */
static void apply_deadline(const struct init_state *s, struct latch_vault *vault)
{
	double left = s->deadline - latch_monotonic_s();
	latch_vault_set_deadline(vault, left > 0.001 ? (unsigned)(left * 1000) : 1);
}

void init_token_granted(struct init_state *s, long lease_duration)
{
	double now = latch_monotonic_s();
	s->token_due = lease_duration > 0 ? now + (double)lease_duration * 2.0 / 3.0 : 0;
	s->token_expires = lease_duration > 0 ? now + (double)lease_duration : 0;
}

int init_login(struct init_state *s, struct latch_error *err)
{
	const struct latch_config *c = s->config;
	struct latch_buf token = LATCH_SECRET_BUF_INIT(TOKEN_FILE_MAX);
	int r = latch_file_read_line(c->auth.token_file, TOKEN_FILE_MAX, &token, err);
	if (r < 0) {
		latch_buf_done(&token);
		return latch_error_prefix(err, "reading the %s token", c->auth.method == LATCH_AUTH_TOKEN ? "Vault" : "service-account");
	}
	apply_deadline(s, s->vault);
	struct latch_vault_auth auth = { 0 };
	if (c->auth.method == LATCH_AUTH_TOKEN) {
		r = latch_vault_set_token(s->vault, latch_buf_str(&token), err);
		auth = (struct latch_vault_auth){ 0, false };
	} else {
		r = latch_vault_login_jwt(s->vault, c->auth.path, c->auth.role, latch_buf_str(&token), &auth, err);
	}
	latch_buf_done(&token);
	if (r < 0)
		return r;
	s->token_ttl = auth.lease_duration;
	s->token_renewable = auth.renewable;
	init_token_granted(s, auth.lease_duration);
	LATCH_LOG(LATCH_LOG_INFO, "logged in to Vault", { "auth_path", c->auth.method == LATCH_AUTH_TOKEN ? "token file" : c->auth.path },
		  { "role", c->auth.role ? c->auth.role : "" });
	return 0;
}

/* When to act on a request: a renewable lease at 2/3 of its duration (renew), a lease that
 * cannot be renewed at 85% (fetch again), a certificate without a lease (pki/issue) at 85%
 * of its validity, anything else without a lease every 5 minutes. */
static void schedule(struct init_request *r, double now)
{
	json_int_t expiration = json_integer_value(latch_json_path(r->envelope, "data.expiration"));
	double valid_for = expiration > 0 ? (double)(expiration - (json_int_t)time(NULL)) : 0;
	if (r->lease_duration <= 0 && valid_for > 0)
		r->due = now + (valid_for * 0.85 > 1.0 ? valid_for * 0.85 : 1.0);
	else if (r->lease_duration <= 0)
		r->due = now + 300.0;
	else if (r->renewable)
		r->due = now + (double)r->lease_duration * 2.0 / 3.0;
	else
		r->due = now + (double)r->lease_duration * 0.85;
}

static int fetch_with(const struct init_state *s, struct latch_vault *vault, struct init_request *r, struct latch_error *err)
{
	apply_deadline(s, vault);
	json_t *env = NULL;
	int rc = r->params ? latch_vault_write(vault, r->path, r->params, &env, err) : latch_vault_read(vault, r->path, &env, err);
	if (rc < 0)
		return rc;
	if (init_request_take(r, env) < 0)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	r->original_duration = r->lease_duration;
	schedule(r, latch_monotonic_s());
	r->expires = *r->lease_id && r->lease_duration > 0 ? latch_monotonic_s() + (double)r->lease_duration : 0;
	LATCH_LOG(LATCH_LOG_INFO, "fetched secret", { "path", r->path }, { "lease", *r->lease_id ? "yes" : "no" });
	return 0;
}

int init_fetch(struct init_state *s, struct init_request *r, struct latch_error *err)
{
	return fetch_with(s, s->vault, r, err);
}

#define MAX_FETCH_WORKERS 8

/* Each worker fetches every stride-th request with its own connection; the token is shared. */
struct fetch_worker {
	const struct init_state *s;
	struct latch_vault *vault;
	size_t first, stride;
	size_t failed_at;  /* index of the request that failed, SIZE_MAX when none */
	int result;
	struct latch_error err;
	pthread_t thread;
};

static void *fetch_worker_run(void *arg)
{
	struct fetch_worker *w = arg;
	for (size_t i = w->first; i < w->s->n_requests && w->result == 0; i += w->stride) {
		w->result = fetch_with(w->s, w->vault, &w->s->requests[i], &w->err);
		if (w->result < 0)
			w->failed_at = i;
	}
	return NULL;
}

static int open_worker(struct init_state *s, struct fetch_worker *w, size_t index, size_t n, struct latch_error *err)
{
	*w = (struct fetch_worker){ .s = s, .first = index, .stride = n, .failed_at = SIZE_MAX, .err = LATCH_ERROR_INIT };
	if (index == 0) {
		w->vault = s->vault;
		return 0;
	}
	int r = latch_vault_new(&s->vault_options, &w->vault, err);
	if (r == 0)
		r = latch_vault_set_token(w->vault, latch_vault_token(s->vault), err);
	return r;
}

/* Vault Agent fetches its templates' secrets concurrently; so does latch, up to
 * MAX_FETCH_WORKERS at a time. The first failure in request order is the one reported. */
int init_fetch_all(struct init_state *s, struct latch_error *err)
{
	size_t n = s->n_requests < MAX_FETCH_WORKERS ? s->n_requests : MAX_FETCH_WORKERS;
	if (n <= 1) {
		for (size_t i = 0; i < s->n_requests; i++) {
			int r = init_fetch(s, &s->requests[i], err);
			if (r < 0)
				return r;
		}
		return 0;
	}
	struct fetch_worker workers[MAX_FETCH_WORKERS];
	size_t opened = 0;
	int r = 0;
	for (; opened < n && r == 0; opened++)
		r = open_worker(s, &workers[opened], opened, n, err);
	size_t started = 0;
	for (; r == 0 && started < n; started++)
		if (pthread_create(&workers[started].thread, NULL, fetch_worker_run, &workers[started]) != 0)
			break;
	for (size_t i = 0; i < started; i++)
		/* cppcheck-suppress uninitvar ; pthread_create() set the first `started` threads */
		pthread_join(workers[i].thread, NULL);
	if (r == 0 && started < n) {
		/* Could not start every thread: the rest run here. */
		for (size_t i = started; i < n; i++)
			fetch_worker_run(&workers[i]);
	}
	const struct fetch_worker *first_failure = NULL;
	for (size_t i = 0; r == 0 && i < n; i++)
		if (workers[i].result < 0 && (!first_failure || workers[i].failed_at < first_failure->failed_at))
			first_failure = &workers[i];
	if (first_failure)
		r = latch_error_set(err, first_failure->result, "%s", latch_error_message(&first_failure->err));
	for (size_t i = 0; i < opened; i++) {
		if (i > 0)
			latch_vault_free(workers[i].vault);
		latch_error_done(&workers[i].err);
	}
	return r;
}

static int join_path(const char *dir, const char *rel, char **ret)
{
	struct latch_buf b = LATCH_BUF_INIT(8192);
	int r = latch_buf_printf(&b, "%s/%s", dir, rel);
	*ret = r == 0 ? latch_buf_take(&b) : NULL;
	latch_buf_done(&b);
	return *ret ? 0 : LATCH_ENOMEM;
}

/* Whether the file already holds exactly these bytes: the sidecar rewrites only what changed. */
static bool unchanged(const char *path, const struct latch_buf *content)
{
	struct latch_buf old = LATCH_SECRET_BUF_INIT(content->len + 1);
	bool same = latch_file_read(path, content->len + 1, &old, NULL) == 0 && old.len == content->len &&
		    (content->len == 0 || memcmp(old.ptr, content->ptr, content->len) == 0);
	latch_buf_done(&old);
	return same;
}

static int write_output(const struct latch_config *c, const struct latch_secret_config *sc, const struct init_output *o,
			bool first, bool *ret_written, struct latch_error *err)
{
	_cleanup_free_ char *path = NULL;
	if (join_path(c->output_dir, o->relpath, &path) < 0)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	*ret_written = false;
	if (!first && unchanged(path, &o->content))
		return 0;
	/* The file's directory, beneath output_dir, through no symlink. */
	_cleanup_free_ char *reldir = strdup(o->relpath);
	if (!reldir)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	char *slash = strrchr(reldir, '/');
	const char *base = slash ? o->relpath + (slash - reldir) + 1 : o->relpath;
	if (slash)
		*slash = '\0';
	else
		*reldir = '\0';
	int dirfd = -1;
	int r = latch_file_open_dir_beneath(c->output_dir, reldir, 0755, &dirfd, err);
	struct latch_file_opts fo = { .mode = sc->mode, .set_owner = sc->set_owner, .uid = sc->uid, .gid = sc->gid };
	if (r == 0)
		r = latch_file_write_atomic_at(dirfd, base, path, latch_buf_view(&o->content), &fo, err);
	if (dirfd >= 0)
		close(dirfd);
	if (r < 0)
		return latch_error_prefix(err, "secret '%s'", sc->name);
	*ret_written = true;
	return 0;
}

/* Lease metadata for people and probes: ids and times, never values. */
static int write_state(const struct init_state *s, struct latch_error *err)
{
	_cleanup_free_ char *dir = NULL, *leases = NULL, *ready = NULL;
	if (join_path(s->config->output_dir, STATE_DIR, &dir) < 0 || join_path(dir, "leases.json", &leases) < 0 ||
	    join_path(dir, "ready", &ready) < 0)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	int r = latch_file_mkdir_p(dir, 0755, err);
	if (r < 0)
		return r;
	json_t *list = json_array();
	time_t now = time(NULL);
	for (size_t i = 0; list && i < s->n_requests; i++) {
		const struct init_request *q = &s->requests[i];
		json_array_append_new(list, json_pack("{s:s,s:s,s:I,s:b,s:I}", "path", q->path, "lease_id", q->lease_id ? q->lease_id : "",
						      "lease_duration", (json_int_t)q->lease_duration, "renewable", q->renewable,
						      "written_at", (json_int_t)now));
	}
	struct latch_buf text = LATCH_BUF_INIT(4u << 20);
	r = list ? latch_json_dump(list, &text, err) : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	json_decref(list);
	struct latch_file_opts fo = { .mode = 0644 };
	if (r == 0)
		r = latch_file_write_atomic(leases, latch_buf_view(&text), &fo, err);
	if (r == 0)
		r = latch_file_write_atomic(ready, latch_view_str("ready\n"), &fo, err);
	latch_buf_done(&text);
	return r;
}

/* agent-inject-token: the Vault token as a file, for apps that call Vault themselves. */
int init_write_token_file(const struct init_state *s, struct latch_error *err)
{
	if (!s->config->token_file_name)
		return 0;
	const char *token = latch_vault_token(s->vault);
	_cleanup_free_ char *path = NULL;
	if (join_path(s->config->output_dir, s->config->token_file_name, &path) < 0)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	struct latch_file_opts fo = { .mode = 0640 };
	return latch_file_write_atomic(path, latch_view_str(token), &fo, err);
}

/* Render everything first, then write: a render error leaves every file as it was. */
int init_write_all(struct init_state *s, bool first, struct latch_error *err)
{
	const struct latch_config *c = s->config;
	struct init_output *outs = calloc(c->n_secrets ? c->n_secrets * 3 : 1, sizeof(*outs));
	size_t *counts = calloc(c->n_secrets ? c->n_secrets : 1, sizeof(*counts));
	int r = outs && counts ? 0 : latch_error_set(err, LATCH_ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < c->n_secrets; i++)
		r = init_render_secret(s, &c->secrets[i], &outs[i * 3], &counts[i], err);
	if (r == 0 && first)
		r = latch_file_mkdir_p(c->output_dir, 0755, err);
	size_t written = 0;
	bool *changed = calloc(c->n_secrets ? c->n_secrets : 1, sizeof(*changed));
	if (r == 0 && !changed)
		r = latch_error_set(err, LATCH_ENOMEM, "out of memory");
	for (size_t i = 0; r == 0 && i < c->n_secrets; i++)
		for (size_t k = 0; r == 0 && k < counts[i]; k++) {
			bool w = false;
			r = write_output(c, &c->secrets[i], &outs[i * 3 + k], first, &w, err);
			written += w;
			changed[i] |= w;
		}
	/* Only once every file is in place: a certificate and its key may be two secrets. */
	if (r == 0 && !first)
		init_reload_changed(c, changed);
	free(changed);
	for (size_t i = 0; outs && counts && i < c->n_secrets; i++)
		init_outputs_done(&outs[i * 3], counts[i]);
	free(outs);
	free(counts);
	if (r == 0 && written > 0 && !first)
		LATCH_LOG(LATCH_LOG_INFO, "updated secret files", { "count", written == 1 ? "1" : "several" });
	if (r == 0 && (first || written > 0))
		r = write_state(s, err);
	return r;
}

int init_populate(struct init_state *s, struct latch_error *err)
{
	s->deadline = latch_monotonic_s() + s->config->deadline_seconds;
	int r = init_login(s, err);
	if (r == 0)
		r = init_fetch_all(s, err);
	if (r == 0)
		r = init_write_all(s, true, err);
	if (r == 0)
		r = init_write_token_file(s, err);
	return r;
}

bool init_files_ready(const struct latch_config *c)
{
	_cleanup_free_ char *ready = NULL;
	struct latch_buf b = LATCH_BUF_INIT(8192);
	latch_buf_printf(&b, "%s/%s/ready", c->output_dir, STATE_DIR);
	ready = latch_buf_take(&b);
	if (!ready || access(ready, F_OK) != 0)
		return false;
	for (size_t i = 0; i < c->n_secrets; i++) {
		char *names[3] = { 0 };
		size_t n = 0;
		bool ok = latch_secret_files(&c->secrets[i], names, &n) == 0;
		for (size_t k = 0; k < n; k++) {
			_cleanup_free_ char *path = NULL;
			ok = ok && join_path(c->output_dir, names[k], &path) == 0 && access(path, R_OK) == 0;
			free(names[k]);
		}
		if (!ok)
			return false;
	}
	return true;
}
