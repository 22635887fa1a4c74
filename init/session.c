/* The sidecar's session in state_dir: the Vault token and the last response of each request,
 * with wall-clock due times. state_dir is a memory volume latch-inject mounts into latch-init
 * alone, never into the app; the file is 0600 and its buffers are zeroed.
 *
 * A sidecar that the kubelet restarts in the same pod (a crash, an OOM kill, a node restart)
 * resumes from it: same token, same leases, same files; nothing new is issued. */
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "init.h"
#include "latch/clock.h"
#include "latch/file.h"
#include "latch/log.h"
#include "latch/macro.h"

#define SESSION_FILE "session.json"
#define SESSION_VERSION 1
#define SESSION_MAX (16u << 20)

static char *session_path(const struct latch_config *c)
{
	struct latch_buf b = LATCH_BUF_INIT(4096);
	if (latch_buf_printf(&b, "%s/%s", c->state_dir, SESSION_FILE) < 0) {
		latch_buf_done(&b);
		return NULL;
	}
	return latch_buf_take(&b);
}

/* A monotonic due time as seconds since the epoch, and back. */
static json_int_t wall_due(double due)
{
	return due > 0 ? (json_int_t)time(NULL) + (json_int_t)(due - latch_monotonic_s()) : 0;
}

static double monotonic_due(json_int_t wall)
{
	return wall > 0 ? latch_monotonic_s() + (double)(wall - (json_int_t)time(NULL)) : 0;
}

static json_t *session_json(const struct init_state *s)
{
	json_t *requests = json_array();
	json_t *root = json_pack("{s:i,s:s,s:I,s:b,s:I,s:o}", "version", SESSION_VERSION,
				 "token", latch_vault_token(s->vault) ?: "",
				 "token_ttl", (json_int_t)s->token_ttl, "token_renewable", s->token_renewable,
				 "token_due", wall_due(s->token_due), "requests", requests);
	for (size_t i = 0; root && i < s->n_requests; i++) {
		const struct init_request *q = &s->requests[i];
		json_t *entry = json_pack("{s:s,s:O?,s:O?,s:I,s:I,s:I}", "path", q->path, "params", q->params,
					  "envelope", q->envelope,
					  "original_duration", (json_int_t)q->original_duration,
					  "due", wall_due(q->due), "expires", wall_due(q->expires));
		if (!entry || json_array_append_new(requests, entry) < 0) {
			json_decref(root);
			return NULL;
		}
	}
	return root;
}

int init_session_save(const struct init_state *s, struct latch_error *err)
{
	if (!s->config->state_dir)
		return 0;
	_cleanup_free_ char *path = session_path(s->config);
	json_t *root = path ? session_json(s) : NULL;
	if (!root)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	struct latch_buf text = LATCH_SECRET_BUF_INIT(SESSION_MAX);
	int r = latch_json_dump(root, &text, err);
	json_decref(root);
	struct latch_file_opts fo = { .mode = 0600 };
	if (r == 0)
		r = latch_file_write_atomic(path, latch_buf_view(&text), &fo, err);
	latch_buf_done(&text);
	return r < 0 ? latch_error_prefix(err, "saving the session in state_dir") : 0;
}

/* The saved requests are the configured ones, in the same order, with the same parameters. */
static bool same_requests(const struct init_state *s, const json_t *saved)
{
	if (json_array_size(saved) != s->n_requests)
		return false;
	for (size_t i = 0; i < s->n_requests; i++) {
		const json_t *e = json_array_get(saved, i);
		const json_t *params = json_object_get(e, "params");
		const char *path = latch_json_get_str(e, "path");
		if (!path || strcmp(path, s->requests[i].path) != 0
		    || !json_is_object(json_object_get(e, "envelope")))
			return false;
		if ((params && !json_is_null(params)) != (s->requests[i].params != NULL) ||
		    (s->requests[i].params && !json_equal(params, s->requests[i].params)))
			return false;
	}
	return true;
}

static int adopt_request(struct init_request *q, const json_t *e)
{
	json_t *envelope = json_object_get(e, "envelope");
	if (init_request_take(q, json_incref(envelope)) < 0)
		return LATCH_ENOMEM;
	q->original_duration = (long)json_integer_value(json_object_get(e, "original_duration"));
	q->due = monotonic_due(json_integer_value(json_object_get(e, "due")));
	q->expires = monotonic_due(json_integer_value(json_object_get(e, "expires")));
	return 0;
}

/* The token still works: renewed (or, if it cannot be renewed, still within its time). */
static int revive_token(struct init_state *s, const json_t *root, struct latch_error *err)
{
	int r = latch_vault_set_token(s->vault, latch_json_get_str(root, "token") ?: "", err);
	if (r < 0)
		return r;
	s->token_ttl = (long)json_integer_value(json_object_get(root, "token_ttl"));
	s->token_renewable = json_is_true(json_object_get(root, "token_renewable"));
	s->token_due = monotonic_due(json_integer_value(json_object_get(root, "token_due")));
	if (!s->token_renewable)
		return s->token_due > latch_monotonic_s() ? 0 : latch_error_set(err, LATCH_ENOTFOUND,
					       "the saved token has expired");
	struct latch_vault_auth auth = { 0 };
	r = latch_vault_renew_self(s->vault, s->token_ttl, &auth, err);
	if (r == 0)
		init_token_granted(s, auth.lease_duration);
	return r;
}

/* Renew every renewable lease now: a lease revoked meanwhile makes the session unusable. */
static int revive_leases(struct init_state *s, struct latch_error *err)
{
	for (size_t i = 0; i < s->n_requests; i++) {
		struct init_request *q = &s->requests[i];
		if (!q->renewable)
			continue;
		long granted = 0;
		int r = latch_vault_lease_renew(s->vault, q->lease_id, q->original_duration, &granted, err);
		if (r < 0)
			return latch_error_prefix(err, "renewing the saved lease of '%s'", q->path);
		q->lease_duration = granted;
		q->due = latch_monotonic_s() + (double)granted * 2.0 / 3.0;
		q->expires = latch_monotonic_s() + (double)granted;
	}
	return 0;
}

static int resume_from(struct init_state *s, const json_t *root, struct latch_error *err)
{
	if (json_integer_value(json_object_get(root, "version")) != SESSION_VERSION ||
	    !same_requests(s, json_object_get(root, "requests")))
		return latch_error_set(err, LATCH_ENOTFOUND,
				       "the saved session is for another configuration");
	if (!init_files_ready(s->config))
		return latch_error_set(err, LATCH_ENOTFOUND, "the secret files are not in place");
	for (size_t i = 0; i < s->n_requests; i++)
		if (adopt_request(&s->requests[i], json_array_get(json_object_get(root, "requests"), i)) < 0)
			return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	int r = revive_token(s, root, err);
	if (r == 0)
		r = revive_leases(s, err);
	if (r == 0)
		r = init_write_all(s, false, err);
	return r;
}

int init_session_resume(struct init_state *s, struct latch_error *err)
{
	_cleanup_free_ char *path = s->config->state_dir ? session_path(s->config) : NULL;
	if (s->config->state_dir && !path)
		return latch_error_set(err, LATCH_ENOMEM, "out of memory");
	if (!path || access(path, F_OK) != 0)
		return 1;
	struct latch_buf text = LATCH_SECRET_BUF_INIT(SESSION_MAX);
	int r = latch_file_read(path, SESSION_MAX, &text, err);
	json_t *root = NULL;
	struct latch_json_limits limits = LATCH_JSON_LIMITS_DEFAULT;
	if (r == 0)
		r = latch_json_parse(latch_buf_view(&text), path, &limits, &root, err);
	latch_buf_done(&text);
	s->deadline = latch_monotonic_s() + s->config->deadline_seconds;
	latch_vault_set_deadline(s->vault, s->config->deadline_seconds * 1000u);
	if (r == 0)
		r = resume_from(s, root, err);
	json_decref(root);
	if (r == 0)
		LATCH_LOG(LATCH_LOG_INFO,
			  "resumed the saved session: same token and leases, nothing new issued",
			  { "dir", s->config->state_dir });
	return r;
}
